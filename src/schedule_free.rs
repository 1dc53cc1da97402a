//! The schedule-free optimizers' methods of their own (lib/schedule-free.ts): `train()` and
//! `eval()`, which move the parameters between the training point and the average. The group
//! state each step advances is written by the step itself, as every optimizer's
//! (`Optimizer::GROUP_STATE`). The math is the core's (`fastoptim_core::optimizers::schedule_free`).

// The exports are reached through the napi registration, which test builds leave out.
#![cfg_attr(test, allow(dead_code))]

use fastoptim_core::optimizers::schedule_free::{switch, switch_weight, ScheduleFree};
use fastoptim_core::{AdamWScheduleFree, Buffers, Dtype, Job, SgdScheduleFree};
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::disjoint::{find_overlap, Span};
use crate::js::{Fail, RawEnv, TypedView};
use crate::params::label;
use crate::{parse_configs, task, Algorithm, NativeOptimizer};

#[napi]
impl NativeOptimizer {
  /// `train()` (`train` true) or `eval()`: every parameter of a group whose `trainMode` in
  /// `packed` is not `train` and that has state moves toward its z, p ← p + w·(z − p), with
  /// w = 1 − β to the training point and 1 − 1/β to the average. `data[i]` is parameter i's
  /// data (by position over all groups), `groupOf[i]` its group. Everything is checked first;
  /// on error nothing changes. The facade then sets every group's `trainMode`.
  #[napi(catch_unwind)]
  pub fn switch_mode(
    &mut self,
    env: Env,
    data: Vec<Unknown>,
    group_of: &[u32],
    packed: &[f64],
    train: bool,
  ) -> Result<()> {
    let what = if train { "train()" } else { "eval()" };
    let raw = RawEnv(env.raw());
    let result = match self.algorithm {
      Algorithm::AdamWScheduleFree => self.switch_with::<AdamWScheduleFree>(raw, &data, group_of, packed, train, what),
      Algorithm::SgdScheduleFree => self.switch_with::<SgdScheduleFree>(raw, &data, group_of, packed, train, what),
      other => Err(Fail::value(format!("{what}: {} has no training and evaluation modes", other.name()))),
    };
    result.map_err(|fail| fail.throw(&env))
  }
}

impl NativeOptimizer {
  fn switch_with<O: ScheduleFree>(
    &mut self,
    env: RawEnv,
    data: &[Unknown],
    group_of: &[u32],
    packed: &[f64],
    train: bool,
    what: &str,
  ) -> std::result::Result<(), Fail> {
    crate::threads::check_configured()?;
    task::check_idle(self, what)?;
    let mut configs = Vec::new();
    parse_configs::<O>(packed, &mut configs)?;
    if group_of.len() != data.len() {
      return Err(Fail::value(format!("{what}: groupOf has {} entries for {} parameters", group_of.len(), data.len())));
    }
    if let Some(index) = group_of.iter().position(|&g| g as usize >= configs.len()) {
      return Err(Fail::value(format!(
        "{what}: groupOf[{index}] is {}, but there are {} groups",
        group_of[index],
        configs.len()
      )));
    }

    // Every array is read and checked before any is written.
    let mut moves: Vec<(usize, TypedView, f64)> = Vec::new();
    for (index, array) in data.iter().enumerate() {
      let config = &configs[group_of[index] as usize];
      let Some(state) = self.states.get(index) else { continue };
      if config.train_mode() == train || state.buffers.is_empty() {
        continue;
      }
      let label = label(group_of, index);
      let view = env.float_array(array.raw())?.ok_or_else(|| {
        Fail::type_error(format!(
          "{label}.data must be a Float32Array or Float64Array, got {}",
          env.describe(array.raw()).unwrap_or_default()
        ))
      })?;
      if view.detached {
        return Err(Fail::state(format!("{label}.data is detached (its ArrayBuffer was transferred)")));
      }
      let state_dtype = state.buffers.dtype().expect("state with buffers has a dtype");
      if view.dtype != state_dtype {
        return Err(Fail::type_error(format!(
          "{label}.data is a {}, but its optimizer state is {}",
          view.type_name(),
          state_dtype.name()
        )));
      }
      let len = state.buffers.lens().next().unwrap_or(0);
      if view.len != len {
        return Err(Fail::range(format!(
          "{label}.data has length {}, but its optimizer state has length {len}",
          view.len
        )));
      }
      moves.push((index, view, switch_weight(config.beta(), train)));
    }
    let mut spans: Vec<Span> = moves
      .iter()
      .map(|(index, view, _)| Span {
        start: view.address(),
        end: view.address() + view.byte_len(),
        writable: true,
        id: *index,
      })
      .collect();
    if let Some((a, b)) = find_overlap(&mut spans) {
      return Err(Fail::value(format!(
        "{}.data and {}.data share memory; a parameter's data must not overlap another's",
        label(group_of, a),
        label(group_of, b)
      )));
    }

    let (mut jobs32, mut jobs64) = (Vec::new(), Vec::new());
    for (index, view, weight) in &moves {
      // SAFETY: each array was read in this call, is attached, has `len` elements of the state's
      // dtype (checked), and overlaps no other array written here; z lives in Rust-owned state,
      // only read. No JavaScript runs until this call returns, so nothing else touches them.
      match (&self.states[*index].buffers, view.dtype) {
        (Buffers::F32(buffers), Dtype::Float32) => jobs32.push(Job::flat(
          *weight,
          unsafe { view.slice_mut::<f32>() },
          &buffers[0][..],
          [&mut [], &mut [], &mut []],
        )),
        (Buffers::F64(buffers), Dtype::Float64) => jobs64.push(Job::flat(
          *weight,
          unsafe { view.slice_mut::<f64>() },
          &buffers[0][..],
          [&mut [], &mut [], &mut []],
        )),
        _ => unreachable!("dtypes checked above"),
      }
    }
    switch(&mut jobs32);
    switch(&mut jobs64);
    Ok(())
  }
}
