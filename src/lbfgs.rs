//! L-BFGS's vector state and passes (`fastoptim_core::lbfgs`), for the facade's `LBFGS` class,
//! which runs the control flow and calls the closure. The parameters' `data` or `grad` arrays
//! are read, checked (types, lengths, detached or shared memory) and borrowed in place for the
//! length of one call; the math is the core's.

// The exports are reached through the napi registration, which test builds leave out.
#![cfg_attr(test, allow(dead_code))]

use std::ffi::CStr;

use fastoptim_core::lbfgs::{Direction, GradStats, History, Lbfgs, ParamOp, GRAD_SLOTS};
use fastoptim_core::{Dtype, Float};
use napi::bindgen_prelude::*;
use napi::sys;
use napi_derive::napi;

use crate::disjoint::{find_overlap, Span};
use crate::js::{Fail, RawEnv, TypedView};

enum Core {
  F32(Lbfgs<f32>),
  F64(Lbfgs<f64>),
}

macro_rules! with_core {
  ($core:expr, $c:ident => $body:expr) => {
    match $core {
      Core::F32($c) => $body,
      Core::F64($c) => $body,
    }
  };
}

/// L-BFGS state over parameters of fixed lengths and one dtype, owned on the native side.
#[napi]
pub struct NativeLbfgs {
  core: Core,
  dtype: Dtype,
}

/// What gathering a gradient yields, each rounded to the parameters' dtype.
#[napi(object)]
pub struct LbfgsGradStats {
  pub abs_max: f64,
  pub abs_sum: f64,
  /// g·d with the current direction (0 before there is one).
  pub gtd: f64,
}

#[napi(object)]
pub struct LbfgsDirection {
  pub gtd: f64,
  pub d_abs_max: f64,
}

/// The vector state, as PyTorch's `state_dict` names it; `oldDirs` and `oldStps` hold their
/// pairs one after the other (`ro.length` of them, each as long as `d`).
#[napi(object)]
pub struct LbfgsHistory {
  pub d: Either<Float32Array, Float64Array>,
  pub prev_flat_grad: Either<Float32Array, Float64Array>,
  pub old_dirs: Either<Float32Array, Float64Array>,
  pub old_stps: Either<Float32Array, Float64Array>,
  pub ro: Either<Float32Array, Float64Array>,
  pub h_diag: f64,
  pub al: Option<Either<Float32Array, Float64Array>>,
}

impl From<GradStats> for LbfgsGradStats {
  fn from(s: GradStats) -> Self {
    LbfgsGradStats { abs_max: s.abs_max, abs_sum: s.abs_sum, gtd: s.gtd }
  }
}

impl From<Direction> for LbfgsDirection {
  fn from(d: Direction) -> Self {
    LbfgsDirection { gtd: d.gtd, d_abs_max: d.d_abs_max }
  }
}

/// A float vector of the dtype `T` as a typed array, and back.
trait Typed: Float {
  fn array(v: Vec<Self>) -> Either<Float32Array, Float64Array>;
  fn vec(a: &Either<Float32Array, Float64Array>) -> Option<Vec<Self>>;
}

impl Typed for f32 {
  fn array(v: Vec<f32>) -> Either<Float32Array, Float64Array> {
    Either::A(Float32Array::new(v))
  }
  fn vec(a: &Either<Float32Array, Float64Array>) -> Option<Vec<f32>> {
    match a {
      Either::A(a) => Some(a.to_vec()),
      Either::B(_) => None,
    }
  }
}

impl Typed for f64 {
  fn array(v: Vec<f64>) -> Either<Float32Array, Float64Array> {
    Either::B(Float64Array::new(v))
  }
  fn vec(a: &Either<Float32Array, Float64Array>) -> Option<Vec<f64>> {
    match a {
      Either::B(a) => Some(a.to_vec()),
      Either::A(_) => None,
    }
  }
}

fn export<T: Typed>(core: &Lbfgs<T>) -> Option<LbfgsHistory> {
  let h = core.export()?;
  Some(LbfgsHistory {
    d: T::array(h.d),
    prev_flat_grad: T::array(h.prev_flat_grad),
    old_dirs: T::array(h.old_dirs.concat()),
    old_stps: T::array(h.old_stps.concat()),
    ro: T::array(h.ro),
    h_diag: h.h_diag.to_f64(),
    al: h.al.map(T::array),
  })
}

fn import<T: Typed>(core: &mut Lbfgs<T>, history: Option<LbfgsHistory>, dtype: Dtype) -> std::result::Result<(), Fail> {
  let Some(h) = history else { return core.import(None).map_err(|e| Fail::value(e.0)) };
  let wrong = |name: &str| Fail::type_error(format!("{name} must be a {} like the parameters", type_name(dtype)));
  let vec = |a: &Either<Float32Array, Float64Array>, name: &str| T::vec(a).ok_or_else(|| wrong(name));
  let n = core.len();
  let ro = vec(&h.ro, "ro")?;
  let pairs = |flat: Vec<T>, name: &str| -> std::result::Result<Vec<Vec<T>>, Fail> {
    if flat.len() != ro.len() * n {
      return Err(Fail::range(format!(
        "{name} has {} elements, expected {} (ro.length {} times {n})",
        flat.len(),
        ro.len() * n,
        ro.len()
      )));
    }
    Ok(if n == 0 { vec![Vec::new(); ro.len()] } else { flat.chunks(n).map(<[T]>::to_vec).collect() })
  };
  let history = History {
    d: vec(&h.d, "d")?,
    prev_flat_grad: vec(&h.prev_flat_grad, "prevFlatGrad")?,
    old_dirs: pairs(vec(&h.old_dirs, "oldDirs")?, "oldDirs")?,
    old_stps: pairs(vec(&h.old_stps, "oldStps")?, "oldStps")?,
    ro,
    h_diag: T::from_f64(h.h_diag),
    al: h.al.as_ref().map(|al| vec(al, "al")).transpose()?,
  };
  core.import(Some(history)).map_err(|e| Fail::range(e.0))
}

fn type_name(dtype: Dtype) -> &'static str {
  match dtype {
    Dtype::Float32 => "Float32Array",
    Dtype::Float64 => "Float64Array",
  }
}

/// Reads `params[i][key]` for every parameter, checked against the lengths and dtype the state
/// was made for (`None` for a null or undefined `grad`).
fn read(
  env: RawEnv,
  params: sys::napi_value,
  key: &CStr,
  lens: &[usize],
  dtype: Dtype,
) -> std::result::Result<Vec<Option<TypedView>>, Fail> {
  let name = key.to_str().unwrap_or("?");
  let count = env.array_length(params)?;
  if count != lens.len() {
    return Err(Fail::value(format!("LBFGS has {} parameters, but {count} were given", lens.len())));
  }
  // First every property, where getters may run; then the arrays, where no JavaScript runs.
  let mut values = Vec::with_capacity(count);
  for index in 0..count {
    let param = env.element(params, index as u32)?;
    if !env.is_object(param)? {
      return Err(Fail::type_error(format!(
        "params[{index}] must be an object with data and grad, got {}",
        env.describe(param)?
      )));
    }
    values.push(env.property(param, key)?);
  }
  let mut views = Vec::with_capacity(count);
  for (index, (&value, &len)) in values.iter().zip(lens).enumerate() {
    if name == "grad" && env.is_nullish(value)? {
      views.push(None);
      continue;
    }
    let view = env.float_array(value)?.filter(|v| v.dtype == dtype).ok_or_else(|| {
      Fail::type_error(format!(
        "params[{index}].{name} must be a {}{}, got {}",
        type_name(dtype),
        if name == "grad" { " like its data, or null" } else { " like when it joined the optimizer" },
        env.describe(value).unwrap_or_default()
      ))
    })?;
    if view.detached {
      return Err(Fail::state(format!("params[{index}].{name} is detached (its ArrayBuffer was transferred)")));
    }
    if view.len != len {
      return Err(Fail::range(format!("params[{index}].{name} has length {}, expected {len}", view.len)));
    }
    views.push(Some(view));
  }
  Ok(views)
}

/// Fails if two parameters' data share memory: the passes write each once.
fn check_disjoint(views: &[Option<TypedView>]) -> std::result::Result<(), Fail> {
  let mut spans: Vec<Span> = views
    .iter()
    .enumerate()
    .filter_map(|(id, v)| {
      v.as_ref().map(|v| Span { start: v.address(), end: v.address() + v.byte_len(), writable: true, id })
    })
    .collect();
  match find_overlap(&mut spans) {
    Some((a, b)) => Err(Fail::value(format!(
      "params[{}].data and params[{}].data share memory; every parameter must have its own",
      a.min(b),
      a.max(b)
    ))),
    None => Ok(()),
  }
}

fn check_slot(slot: u32) -> std::result::Result<usize, Fail> {
  if (slot as usize) < GRAD_SLOTS {
    Ok(slot as usize)
  } else {
    Err(Fail::range(format!("gradient slot {slot} does not exist (expected 0 to {})", GRAD_SLOTS - 1)))
  }
}

#[napi]
impl NativeLbfgs {
  /// State for parameters of `lens` elements of `dtype` (`"float32"` or `"float64"`).
  #[napi(constructor)]
  pub fn new(env: Env, dtype: String, lens: Vec<u32>, history_size: u32) -> Result<Self> {
    let lens: Vec<usize> = lens.into_iter().map(|l| l as usize).collect();
    let (core, dtype) = match dtype.as_str() {
      "float32" => (Core::F32(Lbfgs::new(&lens, history_size as usize)), Dtype::Float32),
      "float64" => (Core::F64(Lbfgs::new(&lens, history_size as usize)), Dtype::Float64),
      _ => return Err(Fail::value(format!("dtype must be float32 or float64, got {dtype:?}")).throw(&env)),
    };
    Ok(NativeLbfgs { core, dtype })
  }

  fn lens(&self) -> Vec<usize> {
    with_core!(&self.core, c => c.lens().collect())
  }

  /// Gathers the gradients of `params` into gradient `slot` (negated with `maximize`).
  #[napi(catch_unwind)]
  pub fn gather(&mut self, env: Env, params: Unknown, slot: u32, maximize: bool) -> Result<LbfgsGradStats> {
    let raw = RawEnv(env.raw());
    let result = (|| {
      let slot = check_slot(slot)?;
      let views = read(raw, params.raw(), c"grad", &self.lens(), self.dtype)?;
      // SAFETY: each view was read in this call and is attached; the JS thread is blocked in
      // this call and the gradients are only read.
      Ok(with_core!(&mut self.core, c => {
        let grads: Vec<_> = views.iter().map(|v| v.as_ref().map(|v| unsafe { v.slice() })).collect();
        c.gather(slot, &grads, maximize).into()
      }))
    })();
    result.map_err(|fail: Fail| fail.throw(&env))
  }

  /// The first iteration's direction, d = −g, from gradient `slot`.
  #[napi(catch_unwind)]
  pub fn first_direction(&mut self, env: Env, slot: u32) -> Result<LbfgsDirection> {
    let slot = check_slot(slot).map_err(|f| f.throw(&env))?;
    Ok(with_core!(&mut self.core, c => c.first_direction(slot).into()))
  }

  /// A later iteration's direction from gradient `slot`, after a step of length `t`.
  #[napi(catch_unwind)]
  pub fn next_direction(&mut self, env: Env, slot: u32, t: f64) -> Result<LbfgsDirection> {
    let slot = check_slot(slot).map_err(|f| f.throw(&env))?;
    if !with_core!(&self.core, c => c.has_direction()) {
      return Err(Fail::state("there is no direction to update yet".into()).throw(&env));
    }
    Ok(with_core!(&mut self.core, c => c.next_direction(slot, t).into()))
  }

  /// Saves the parameters' data (where a line search starts).
  #[napi(catch_unwind)]
  pub fn save_params(&mut self, env: Env, params: Unknown) -> Result<()> {
    self.params(env, params, ParamOp::Save)
  }

  /// Sets the parameters' data back to what was saved.
  #[napi(catch_unwind)]
  pub fn restore_params(&mut self, env: Env, params: Unknown) -> Result<()> {
    self.params(env, params, ParamOp::Restore)
  }

  /// data ← data + t·d.
  #[napi(catch_unwind)]
  pub fn step_params(&mut self, env: Env, params: Unknown, t: f64) -> Result<()> {
    self.params(env, params, ParamOp::Step(t))
  }

  /// data ← saved + t·d.
  #[napi(catch_unwind)]
  pub fn trial_params(&mut self, env: Env, params: Unknown, t: f64) -> Result<()> {
    self.params(env, params, ParamOp::SavedPlus(t))
  }

  fn params(&mut self, env: Env, params: Unknown, op: ParamOp) -> Result<()> {
    let raw = RawEnv(env.raw());
    let result = (|| {
      let ready = with_core!(&self.core, c => c.has_direction());
      if !ready && !matches!(op, ParamOp::Save) {
        return Err(Fail::state("there is no direction to step along yet".into()));
      }
      let views = read(raw, params.raw(), c"data", &self.lens(), self.dtype)?;
      check_disjoint(&views)?;
      // SAFETY: each view was read in this call, is attached and overlaps no other (checked
      // above); the JS thread is blocked in this call, so nothing else touches the memory.
      with_core!(&mut self.core, c => {
        let mut data: Vec<_> = views.iter().flatten().map(|v| unsafe { v.slice_mut() }).collect();
        c.params(&mut data, op);
      });
      Ok(())
    })();
    result.map_err(|fail: Fail| fail.throw(&env))
  }

  /// The most pairs kept.
  #[napi]
  pub fn set_history_size(&mut self, history_size: u32) {
    with_core!(&mut self.core, c => c.set_history_size(history_size as usize))
  }

  /// For tests: runs every pass on a pool of its own of `threads` threads.
  #[napi(catch_unwind)]
  pub fn use_threads(&mut self, threads: u32) {
    with_core!(&mut self.core, c => c.use_threads(threads as usize))
  }

  /// A copy of the vector state, or null before the first iteration.
  #[napi(catch_unwind)]
  pub fn export_history(&self) -> Option<LbfgsHistory> {
    match &self.core {
      Core::F32(c) => export(c),
      Core::F64(c) => export(c),
    }
  }

  /// Replaces the vector state (null: none), all checked first.
  #[napi(catch_unwind)]
  pub fn import_history(&mut self, env: Env, history: Option<LbfgsHistory>) -> Result<()> {
    let dtype = self.dtype;
    let result = match &mut self.core {
      Core::F32(c) => import(c, history, dtype),
      Core::F64(c) => import(c, history, dtype),
    };
    result.map_err(|fail| fail.throw(&env))
  }
}
