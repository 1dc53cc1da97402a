//! Weight averaging (lib/averaging.ts): the averages live here, in Rust-owned memory; the
//! parameters are the caller's typed arrays, read by `update` and written by `copyTo` and `swap`.
//! The math is the core's (`fastoptim_core::averaging`). Every call checks every array before it
//! touches one, so a call that fails changes nothing.

// The exports are reached through the napi registration, which test builds leave out.
#![cfg_attr(test, allow(dead_code))]

use fastoptim_core::averaging::{self, Average, Strategy};
use fastoptim_core::{Dtype, Job};
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::disjoint::{find_overlap, Span};
use crate::js::{Fail, RawEnv, TypedView};

/// The averages of a list of parameters, and how many updates they hold.
#[napi]
pub struct NativeAverager {
  strategy: Strategy,
  n_averaged: u64,
  averages: Vec<Average>,
}

/// Most updates counted exactly: a count must stay a safe integer in JavaScript.
const MAX_COUNT: f64 = 9_007_199_254_740_991.0;

#[napi]
impl NativeAverager {
  /// `decay` null: SWA; a number: an EMA with that decay. Each average starts as a copy of its
  /// parameter in `data` (Float32Array or Float64Array, one per parameter), as PyTorch's
  /// `AveragedModel` deep-copies the model.
  #[napi(constructor, catch_unwind)]
  pub fn new(env: Env, decay: Option<f64>, data: Vec<Unknown>) -> Result<Self> {
    let made = (|| {
      let strategy = match decay {
        None => Strategy::Swa,
        Some(decay) => Strategy::ema(decay).map_err(|error| Fail::range(format!("EMA: {error}")))?,
      };
      let views = read_arrays(RawEnv(env.raw()), &data, "new", None)?;
      // SAFETY: each view was read in this call and is attached (checked); it is only read, and no
      // JavaScript runs before this call returns.
      let averages = views
        .iter()
        .map(|view| match view.dtype {
          Dtype::Float32 => Average::F32(unsafe { view.slice::<f32>() }.to_vec()),
          Dtype::Float64 => Average::F64(unsafe { view.slice::<f64>() }.to_vec()),
        })
        .collect();
      Ok(NativeAverager { strategy, n_averaged: 0, averages })
    })();
    made.map_err(|fail: Fail| fail.throw(&env))
  }

  /// PyTorch's `n_averaged`: the updates averaged so far.
  #[napi(getter)]
  pub fn n_averaged(&self) -> f64 {
    self.n_averaged as f64
  }

  /// One update of every average by its parameter in `data`, all in one pass on the step pool.
  #[napi(catch_unwind)]
  pub fn update(&mut self, env: Env, data: Vec<Unknown>) -> Result<()> {
    let result = (|| {
      crate::threads::check_configured()?;
      if self.n_averaged as f64 >= MAX_COUNT {
        return Err(Fail::state(format!("update(): nAveraged is already {MAX_COUNT}, the most counted exactly")));
      }
      let views = read_arrays(RawEnv(env.raw()), &data, "update()", Some(&self.averages))?;
      let (mut jobs32, mut jobs64) = (Vec::new(), Vec::new());
      for (average, view) in self.averages.iter_mut().zip(&views) {
        // SAFETY: each view was read in this call, is attached and has the average's dtype and
        // length (checked); it is only read (parameters may share memory), the average is
        // Rust-owned, and no JavaScript runs before this call returns.
        match average {
          Average::F32(a) => {
            jobs32.push(Job::flat(0.0, &mut a[..], unsafe { view.slice::<f32>() }, [&mut [], &mut [], &mut []]))
          }
          Average::F64(a) => {
            jobs64.push(Job::flat(0.0, &mut a[..], unsafe { view.slice::<f64>() }, [&mut [], &mut [], &mut []]))
          }
        }
      }
      averaging::update(self.strategy, self.n_averaged, &mut jobs32);
      averaging::update(self.strategy, self.n_averaged, &mut jobs64);
      self.n_averaged += 1;
      Ok(())
    })();
    result.map_err(|fail: Fail| fail.throw(&env))
  }

  /// Copies every average into its array of `data`, which must not share memory with another.
  #[napi(catch_unwind)]
  pub fn copy_to(&self, env: Env, data: Vec<Unknown>) -> Result<()> {
    let result = (|| {
      let views = read_writable(RawEnv(env.raw()), &data, "copyTo()", &self.averages)?;
      let (mut jobs32, mut jobs64) = (Vec::new(), Vec::new());
      for (average, view) in self.averages.iter().zip(&views) {
        // SAFETY: as in `update`, and no array of `data` overlaps another (checked), so each
        // mutable slice is the only access to its memory.
        match average {
          Average::F32(a) => {
            jobs32.push(Job::flat(0.0, unsafe { view.slice_mut::<f32>() }, &a[..], [&mut [], &mut [], &mut []]))
          }
          Average::F64(a) => {
            jobs64.push(Job::flat(0.0, unsafe { view.slice_mut::<f64>() }, &a[..], [&mut [], &mut [], &mut []]))
          }
        }
      }
      averaging::assign(&mut jobs32);
      averaging::assign(&mut jobs64);
      Ok(())
    })();
    result.map_err(|fail: Fail| fail.throw(&env))
  }

  /// Exchanges every average with its array of `data`, which must not share memory with another.
  #[napi(catch_unwind)]
  pub fn swap(&mut self, env: Env, data: Vec<Unknown>) -> Result<()> {
    let result = (|| {
      let views = read_writable(RawEnv(env.raw()), &data, "swap()", &self.averages)?;
      let (mut pairs32, mut pairs64) = (Vec::new(), Vec::new());
      for (average, view) in self.averages.iter_mut().zip(&views) {
        // SAFETY: as in `copy_to`.
        match average {
          Average::F32(a) => pairs32.push((unsafe { view.slice_mut::<f32>() }, &mut a[..])),
          Average::F64(a) => pairs64.push((unsafe { view.slice_mut::<f64>() }, &mut a[..])),
        }
      }
      averaging::swap(&mut pairs32);
      averaging::swap(&mut pairs64);
      Ok(())
    })();
    result.map_err(|fail: Fail| fail.throw(&env))
  }

  /// A copy of average `index`.
  #[napi]
  pub fn average(&self, env: Env, index: u32) -> Result<Either<Float32Array, Float64Array>> {
    match self.averages.get(index as usize) {
      Some(Average::F32(a)) => Ok(Either::A(Float32Array::new(a.clone()))),
      Some(Average::F64(a)) => Ok(Either::B(Float64Array::new(a.clone()))),
      None => {
        Err(Fail::range(format!("average({index}): there are {} averaged parameters", self.averages.len())).throw(&env))
      }
    }
  }

  /// Replaces the count and every average (one per parameter, of its dtype and length), all
  /// checked first.
  #[napi(catch_unwind)]
  pub fn load(&mut self, env: Env, n_averaged: f64, averages: Vec<Either<Float32Array, Float64Array>>) -> Result<()> {
    let result = (|| {
      if !(n_averaged.is_finite() && n_averaged >= 0.0 && n_averaged.fract() == 0.0 && n_averaged <= MAX_COUNT) {
        return Err(Fail::range(format!("invalid nAveraged: {n_averaged} (expected a whole number >= 0)")));
      }
      if averages.len() != self.averages.len() {
        return Err(Fail::value(format!(
          "averaged has {} arrays, expected {}, one per parameter",
          averages.len(),
          self.averages.len()
        )));
      }
      let loaded = averages
        .iter()
        .zip(&self.averages)
        .enumerate()
        .map(|(i, (given, own))| {
          let (loaded, name, len) = match given {
            Either::A(a) => (Average::F32(a.to_vec()), "Float32Array", a.len()),
            Either::B(a) => (Average::F64(a.to_vec()), "Float64Array", a.len()),
          };
          if loaded.dtype() != own.dtype() {
            return Err(Fail::type_error(format!(
              "averaged[{i}] is a {name}, but parameter {i} is {}",
              own.dtype().name()
            )));
          }
          if len != own.len() {
            return Err(Fail::range(format!(
              "averaged[{i}] has length {len}, but parameter {i} has length {}",
              own.len()
            )));
          }
          Ok(loaded)
        })
        .collect::<std::result::Result<Vec<_>, Fail>>()?;
      self.averages = loaded;
      self.n_averaged = n_averaged as u64;
      Ok(())
    })();
    result.map_err(|fail: Fail| fail.throw(&env))
  }
}

/// Reads one float array per parameter from `data`: each a Float32Array or Float64Array, attached,
/// and, given `averages`, of its average's dtype and length, one for each.
fn read_arrays(
  env: RawEnv,
  data: &[Unknown],
  what: &str,
  averages: Option<&[Average]>,
) -> std::result::Result<Vec<TypedView>, Fail> {
  if let Some(averages) = averages {
    if data.len() != averages.len() {
      return Err(Fail::value(format!("{what}: got {} parameters, but {} are averaged", data.len(), averages.len())));
    }
  }
  let mut views = Vec::with_capacity(data.len());
  for (i, array) in data.iter().enumerate() {
    let view = env.float_array(array.raw())?.ok_or_else(|| {
      Fail::type_error(format!(
        "{what}: params[{i}] must be a Float32Array or Float64Array, got {}",
        env.describe(array.raw()).unwrap_or_default()
      ))
    })?;
    if view.detached {
      return Err(Fail::state(format!("{what}: params[{i}] is detached (its ArrayBuffer was transferred)")));
    }
    if let Some(average) = averages.map(|a| &a[i]) {
      if view.dtype != average.dtype() {
        return Err(Fail::type_error(format!(
          "{what}: params[{i}] is a {}, but its average is {}",
          view.type_name(),
          average.dtype().name()
        )));
      }
      if view.len != average.len() {
        return Err(Fail::range(format!(
          "{what}: params[{i}] has length {}, but its average has length {}",
          view.len,
          average.len()
        )));
      }
    }
    views.push(view);
  }
  Ok(views)
}

/// [`read_arrays`] for arrays the call writes: none may share memory with another.
fn read_writable(
  env: RawEnv,
  data: &[Unknown],
  what: &str,
  averages: &[Average],
) -> std::result::Result<Vec<TypedView>, Fail> {
  let views = read_arrays(env, data, what, Some(averages))?;
  let mut spans: Vec<Span> = views
    .iter()
    .enumerate()
    .map(|(id, view)| Span { start: view.address(), end: view.address() + view.byte_len(), writable: true, id })
    .collect();
  if let Some((a, b)) = find_overlap(&mut spans) {
    return Err(Fail::value(format!(
      "{what}: params[{a}] and params[{b}] share memory; arrays written with averages must not overlap"
    )));
  }
  Ok(views)
}
