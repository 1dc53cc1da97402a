//! Copying optimizer state out of and into a `NativeOptimizer`, for `stateDict` and
//! `loadStateDict`. An import is checked whole before any state is replaced.
//!
//! bfloat16 state (`stateDtype: 'bfloat16'`) goes out as Uint16Arrays of raw bfloat16 bits. An
//! import converts as PyTorch's `load_state_dict` casts state to the parameter's dtype: float32
//! state into an optimizer of bfloat16 state is rounded to nearest even, bfloat16 state into one
//! of float32 state widened (exactly).

use fastoptim_core::engine::placed::Placed;
use fastoptim_core::{Bf16, Buffers, Dims, Dtype, Optimizer, ParamState, MAX_BUFFERS, MAX_SCALARS};
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::js::{camel_case, Fail};
use crate::{with_optimizer, NativeOptimizer, MAX_STEP};

/// The names of an optimizer's per-parameter state, camelCase, in the order entries hold them.
#[napi(object)]
pub struct StateNames {
  pub scalars: Vec<String>,
  pub buffers: Vec<String>,
}

/// One parameter's state. `buffers[i]` is null where the optimizer has not made that buffer.
#[napi(object)]
pub struct StateEntry {
  pub index: u32,
  pub step: f64,
  /// The parameter's dtype, `"float32"` or `"float64"`; on export, the state's: `"bfloat16"` for
  /// bfloat16 state.
  pub dtype: String,
  pub length: u32,
  pub scalars: Vec<f64>,
  /// A Uint16Array holds bfloat16 bits: for a float32 parameter only.
  pub buffers: Vec<Option<Either3<Float32Array, Float64Array, Uint16Array>>>,
}

/// A state buffer as JavaScript holds it.
type StateArray = Either3<Float32Array, Float64Array, Uint16Array>;

#[napi]
impl NativeOptimizer {
  #[napi]
  pub fn state_names(&self) -> StateNames {
    with_optimizer!(self.algorithm, O => StateNames {
      scalars: O::SCALARS.iter().map(|s| camel_case(s)).collect(),
      buffers: O::BUFFERS.iter().map(|b| camel_case(b.name)).collect(),
    })
  }

  /// A copy of parameter `index`'s state, or null before its first step.
  #[napi]
  pub fn export_state(&self, env: Env, index: u32) -> Result<Option<StateEntry>> {
    crate::task::check_idle(self, "getState()/stateDict()").map_err(|f| f.throw(&env))?;
    let (scalar_count, buffer_count) = with_optimizer!(self.algorithm, O => (O::SCALARS.len(), O::BUFFERS.len()));
    let Some(state) = self.states.get(index as usize) else { return Ok(None) };
    let Some(dtype) = state.buffers.name() else { return Ok(None) };
    let mut buffers: Vec<Option<StateArray>> = match &state.buffers {
      Buffers::Empty => return Ok(None),
      Buffers::F32(b) => b.iter().map(|v| Some(Either3::A(Float32Array::new(v.to_vec())))).collect(),
      Buffers::F64(b) => b.iter().map(|v| Some(Either3::B(Float64Array::new(v.to_vec())))).collect(),
      Buffers::Bf16(b) => {
        b.iter().map(|v| Some(Either3::C(Uint16Array::new(v.iter().map(|x| x.0).collect())))).collect()
      }
    };
    buffers.resize_with(buffer_count, || None);
    Ok(Some(StateEntry {
      index,
      step: state.step as f64,
      dtype: dtype.into(),
      length: self
        .shapes
        .get(index as usize)
        .and_then(Option::as_deref)
        .map_or_else(|| state.buffers.lens().max().unwrap_or(0), |shape| Dims::of(shape).len()) as u32,
      scalars: state.scalars[..scalar_count].to_vec(),
      buffers,
    }))
  }

  /// Replaces the state of every parameter: those in `entries` get theirs, the other `count - n`
  /// start afresh. Nothing is replaced unless every entry is valid.
  #[napi(catch_unwind)]
  pub fn import_states(&mut self, env: Env, count: u32, entries: Vec<StateEntry>) -> Result<()> {
    crate::task::check_idle(self, "loadStateDict()").map_err(|f| f.throw(&env))?;
    self.reader.remembered = false;
    let (scalar_count, buffer_count) = with_optimizer!(self.algorithm, O => (O::SCALARS.len(), O::BUFFERS.len()));
    let mut states = vec![ParamState::default(); count as usize];
    let mut seen = vec![false; count as usize];
    let bf16 = self.bf16();
    for entry in &entries {
      let shape = self.shapes.get(entry.index as usize).and_then(Option::as_deref);
      let dims = shape.map_or(Dims::flat(entry.length as usize), Dims::of);
      let lens = with_optimizer!(self.algorithm, O => fastoptim_core::buffer_lens::<O>(dims));
      let state =
        entry_to_state(entry, count, scalar_count, buffer_count, &lens, bf16, &mut seen).map_err(|f| f.throw(&env))?;
      states[entry.index as usize] = state;
    }
    self.states = states;
    Ok(())
  }
}

fn entry_to_state(
  entry: &StateEntry,
  count: u32,
  scalar_count: usize,
  buffer_count: usize,
  lens: &[usize; MAX_BUFFERS],
  bf16: bool,
  seen: &mut [bool],
) -> std::result::Result<ParamState, Fail> {
  let at = format!("state[{}]", entry.index);
  if entry.index >= count {
    return Err(Fail::range(format!("{at}: the optimizer has {count} parameters")));
  }
  if std::mem::replace(&mut seen[entry.index as usize], true) {
    return Err(Fail::value(format!("{at} is given twice")));
  }
  if !(entry.step.is_finite() && entry.step >= 0.0 && entry.step.fract() == 0.0 && entry.step <= MAX_STEP as f64) {
    return Err(Fail::range(format!("invalid {at}.step: {} (expected a whole number from 0 to 2^53 - 1)", entry.step)));
  }
  if entry.scalars.len() != scalar_count || entry.scalars.iter().any(|s| !s.is_finite()) {
    return Err(Fail::value(format!("{at}: expected {scalar_count} finite scalars, got {:?}", entry.scalars)));
  }
  if entry.buffers.len() > buffer_count {
    return Err(Fail::value(format!("{at}: expected at most {buffer_count} buffers, got {}", entry.buffers.len())));
  }
  let dtype = match entry.dtype.as_str() {
    "float32" => Dtype::Float32,
    "float64" => Dtype::Float64,
    other => return Err(Fail::value(format!("{at}.dtype is {other:?} (expected \"float32\" or \"float64\")"))),
  };
  let used = entry.buffers.iter().rposition(Option::is_some).map_or(0, |i| i + 1);
  let mismatch = |i: usize, what: String| Fail::type_error(format!("{at} buffer {i}: {what}"));
  let length = |i: usize, len: usize| match len == lens[i] {
    true => Ok(()),
    false => Err(mismatch(i, format!("length {len}, expected {}", lens[i]))),
  };
  let each = |convert: &dyn Fn(usize, &StateArray) -> std::result::Result<(), Fail>| {
    (0..used)
      .filter_map(|i| entry.buffers[i].as_ref().map(|b| convert(i, b)))
      .collect::<std::result::Result<Vec<()>, Fail>>()
  };
  let wrong = |i: usize, got: &str, expected: &str| Err(mismatch(i, format!("a {got}, expected {expected}")));
  let buffers = match (dtype, bf16) {
    (Dtype::Float32, _) => {
      each(&|i, b| match b {
        Either3::A(a) => length(i, a.len()),
        Either3::C(a) => length(i, a.len()),
        Either3::B(_) => wrong(i, "Float64Array", "a Float32Array or a Uint16Array of bfloat16 bits"),
      })?;
      let f32s = |i: usize| match &entry.buffers[i] {
        None => Placed::zeroed(lens[i], i),
        Some(Either3::A(a)) => Placed::copied(a, i),
        Some(Either3::C(a)) => Placed::converted(a, i, |&x| Bf16(x).to_f32()),
        Some(Either3::B(_)) => unreachable!("checked above"),
      };
      let bf16s = |i: usize| match &entry.buffers[i] {
        None => Placed::zeroed(lens[i], i),
        Some(Either3::A(a)) => Placed::converted(a, i, |&x| Bf16::from_f32(x)),
        Some(Either3::C(a)) => Placed::converted(a, i, |&x| Bf16(x)),
        Some(Either3::B(_)) => unreachable!("checked above"),
      };
      if bf16 {
        Buffers::Bf16((0..used).map(bf16s).collect())
      } else {
        Buffers::F32((0..used).map(f32s).collect())
      }
    }
    (Dtype::Float64, _) => {
      each(&|i, b| match b {
        Either3::B(a) => length(i, a.len()),
        Either3::A(_) => wrong(i, "Float32Array", "a Float64Array"),
        Either3::C(_) => wrong(i, "Uint16Array", "a Float64Array"),
      })?;
      Buffers::F64(
        (0..used)
          .map(|i| match &entry.buffers[i] {
            Some(Either3::B(a)) => Placed::copied(a, i),
            _ => Placed::zeroed(lens[i], i),
          })
          .collect(),
      )
    }
  };
  let mut scalars = [0.0; MAX_SCALARS];
  scalars[..scalar_count].copy_from_slice(&entry.scalars);
  Ok(ParamState { step: entry.step as u64, scalars, buffers, partials: Vec::new() })
}
