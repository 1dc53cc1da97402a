//! Gradient clipping over the `grad` arrays of a list of parameters, borrowed in place.
//!
//! As for a step: every parameter is read and checked (array types, detached or shared memory)
//! before any gradient is written, and the math is the core's.

// The exports are reached through the napi registration, which test builds leave out.
#![cfg_attr(test, allow(dead_code))]

use fastoptim_core::clip::{self, ClipError, Grad, NormType};
use fastoptim_core::Dtype;
use napi::bindgen_prelude::*;
use napi::sys;
use napi_derive::napi;

use crate::disjoint::{find_overlap, Span};
use crate::js::{camel_case, Fail, RawEnv, TypedView};

/// Scales `grads` (each parameter's `grad`, in order; null for none) so that their total
/// `normType`-norm is at most `maxNorm`, and returns the norm before scaling (PyTorch's
/// `clip_grad_norm_`).
#[napi(catch_unwind)]
pub fn clip_grad_norm(
  env: Env,
  grads: Unknown,
  max_norm: f64,
  norm_type: f64,
  error_if_nonfinite: bool,
) -> Result<f64> {
  let raw = RawEnv(env.raw());
  with_grads(raw, grads.raw(), "clipGradNorm", |grads| {
    clip::clip_grad_norm(grads, max_norm, norm_type, error_if_nonfinite)
  })
  .map(|total| total.value)
  .map_err(|fail| fail.throw(&env))
}

/// Clamps every element of `grads` (as [`clip_grad_norm`] takes them) to [−clipValue, clipValue]
/// (PyTorch's `clip_grad_value_`).
#[napi(catch_unwind)]
pub fn clip_grad_value(env: Env, grads: Unknown, clip_value: f64) -> Result<()> {
  let raw = RawEnv(env.raw());
  with_grads(raw, grads.raw(), "clipGradValue", |grads| clip::clip_grad_value(grads, clip_value))
    .map_err(|fail| fail.throw(&env))
}

/// For tests: the total norm of `grads` (as [`clip_grad_norm`] takes them), reduced on a pool of
/// its own with `threads` threads, to show that the thread count does not change a bit of it.
#[napi(catch_unwind)]
pub fn grad_norm_on_threads(env: Env, grads: Unknown, norm_type: f64, threads: u32) -> Result<f64> {
  let raw = RawEnv(env.raw());
  if threads == 0 || threads > 1024 {
    return Err(Fail::range(format!("gradNormOnThreads: invalid threads: {threads} (expected 1 to 1024)")).throw(&env));
  }
  let result = with_grads(raw, grads.raw(), "gradNormOnThreads", |grads| {
    Ok(clip::total_norm_on_threads(grads, NormType::new(norm_type)?, threads as usize).value)
  });
  result.map_err(|fail| fail.throw(&env))
}

/// Reads and checks `grads`, each parameter's `grad` in order (the facade reads them), then hands
/// the non-null ones to `body`.
fn with_grads<R>(
  env: RawEnv,
  grads: sys::napi_value,
  name: &str,
  body: impl FnOnce(&mut [Grad<'_>]) -> std::result::Result<R, ClipError>,
) -> std::result::Result<R, Fail> {
  let count = env.array_length(grads).map_err(|_| Fail::type_error(format!("{name}: grads must be an array")))?;
  let mut views: Vec<(usize, sys::napi_value, TypedView)> = Vec::with_capacity(count);
  for index in 0..count {
    let value = env.element(grads, index as u32)?;
    if env.is_nullish(value)? {
      continue;
    }
    let grad = env.float_array(value)?.ok_or_else(|| {
      Fail::type_error(format!(
        "{name}: params[{index}].grad must be a Float32Array or Float64Array, or null, got {}",
        env.describe(value).unwrap_or_default()
      ))
    })?;
    if grad.detached {
      return Err(Fail::state(format!("{name}: params[{index}].grad is detached (its ArrayBuffer was transferred)")));
    }
    views.push((index, value, grad));
  }
  // A getter run by a later read (of a list not the facade's) may have transferred an array read
  // earlier; no JavaScript runs after this check until the call returns.
  for (index, value, before) in &views {
    let now = env.float_array(*value)?;
    if !now.is_some_and(|now| !now.detached && now.address() == before.address() && now.len == before.len) {
      return Err(Fail::state(format!(
        "{name}: params[{index}].grad was detached or replaced while the gradients were being read"
      )));
    }
  }
  check_disjoint(&views, name)?;

  let mut grads: Vec<Grad<'_>> = views
    .iter()
    .map(|(_, _, view)| {
      // SAFETY: each view was read in this call, is attached, holds `len` elements of its dtype,
      // and overlaps no other (checked above); the JS thread is blocked in this call, so nothing
      // else touches the memory until it returns.
      unsafe {
        match view.dtype {
          Dtype::Float32 => Grad::F32(view.slice_mut::<f32>()),
          Dtype::Float64 => Grad::F64(view.slice_mut::<f64>()),
        }
      }
    })
    .collect();
  body(&mut grads).map_err(|error| Fail::range(format!("{name}: {}", error.describe(camel_case))))
}

/// Fails if two gradients share memory: clipping writes them all, so each must be written once.
fn check_disjoint(views: &[(usize, sys::napi_value, TypedView)], name: &str) -> std::result::Result<(), Fail> {
  let mut spans: Vec<Span> = views
    .iter()
    .map(|(index, _, view)| Span {
      start: view.address(),
      end: view.address() + view.byte_len(),
      writable: true,
      id: *index,
    })
    .collect();
  match find_overlap(&mut spans) {
    Some((a, b)) => Err(Fail::value(format!(
      "{name}: params[{}].grad and params[{}].grad share memory; every gradient must have its own",
      a.min(b),
      a.max(b)
    ))),
    None => Ok(()),
  }
}
