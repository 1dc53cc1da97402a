//! What the optimizers' tests share: deterministic inputs, bit-for-bit comparison, and one
//! parameter stepped the way the binding steps it, through the engine or the plain reference.

use std::fmt::Debug;

use crate::config::{defaults, Field};
use crate::engine::run::{run, Job, MAX_BUFFERS, PARALLEL_MIN_ELEMENTS, PIECE_ELEMENTS};
use crate::engine::state::{Buffers, Element, ParamState};
use crate::float::Float;
use crate::optimizers::Optimizer;

/// Lengths that exercise every edge of the engine: empty, tiny, odd, one element either side of
/// a piece and of the parallel threshold, and several pieces with a ragged tail.
pub const LENGTHS: [usize; 14] = [
  0,
  1,
  2,
  7,
  15,
  17,
  33,
  1001,
  PIECE_ELEMENTS - 1,
  PIECE_ELEMENTS + 1,
  PARALLEL_MIN_ELEMENTS - 1,
  PARALLEL_MIN_ELEMENTS,
  PARALLEL_MIN_ELEMENTS + 3,
  3 * PIECE_ELEMENTS + 5,
];

/// Steps per trajectory: enough for first-step special cases and for RAdam's rectification,
/// which starts at step 6.
pub const STEPS: u64 = 7;

/// A xorshift64 stream seeded by `seed` (any, zero included): the tests' deterministic inputs.
pub fn xorshift(seed: u64) -> impl FnMut() -> u64 {
  let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
  move || {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
  }
}

/// Deterministic values in (−1, 1) with zeros, tiny (1e-20) and large (1e4) magnitudes mixed in.
pub fn values<T: Float>(len: usize, seed: u64) -> Vec<T> {
  let mut next = xorshift(seed);
  (0..len)
    .map(|i| {
      let x = next();
      let u = (x >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
      T::from_f64(match i % 11 {
        3 => 0.0,
        7 => u * 1e-20,
        9 => u * 1e4,
        _ => u,
      })
    })
    .collect()
}

pub fn same_bits<T: Float>(a: &[T], b: &[T]) -> bool {
  a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_f64().to_bits() == y.to_f64().to_bits())
}

/// Steps one parameter of `len` elements (starting at `values(len, 1)`, gradient
/// `values(len, step + 1)`) `steps` times, as the binding does: step count, `coeffs`, `advance`,
/// buffers, then the engine or [`Optimizer::update_reference`].
pub fn trajectory<O: Optimizer, T: Element>(config: O, len: usize, steps: u64, engine: bool) -> (Vec<T>, ParamState) {
  let mut param = values::<T>(len, 1);
  let mut state = ParamState::default();
  for _ in 0..steps {
    let grad = values::<T>(len, state.step + 2);
    step_once(config, &mut state, &mut param, &grad, engine);
  }
  (param, state)
}

/// One step of one parameter, as the binding does it.
pub fn step_once<O: Optimizer, T: Element>(
  config: O,
  state: &mut ParamState,
  param: &mut [T],
  grad: &[T],
  engine: bool,
) {
  state.step += 1;
  let mut coeffs = config.coeffs(state.step);
  config.advance(&mut coeffs, state);
  let buffers = state.buffers_mut::<T>(&[param.len(); MAX_BUFFERS], config.buffers_used());
  if engine {
    let non_finite = run::<O, T>(&mut [Job::flat(coeffs, param, grad, buffers)]);
    assert_eq!(non_finite, !grad.iter().all(|g| g.is_finite()), "the engine reports non-finite gradients");
  } else {
    O::update_reference(&coeffs, param, grad, buffers);
  }
}

/// The fused, parallel kernel and the plain reference give the same bits, parameters and state,
/// over [`STEPS`] steps, for every config, on every length of [`LENGTHS`], in both precisions;
/// and the engine reports a gradient's NaN or ±∞ wherever it lies ([`assert_reports_non_finite`]).
pub fn assert_fused_matches_reference<O: Optimizer + Debug>(configs: &[O]) {
  for config in configs {
    for len in LENGTHS {
      let (fast, fast_state) = trajectory::<O, f32>(*config, len, STEPS, true);
      let (slow, slow_state) = trajectory::<O, f32>(*config, len, STEPS, false);
      assert!(same_bits(&fast, &slow) && same_state(&fast_state, &slow_state), "f32 {config:?} len {len}");
      let (fast, fast_state) = trajectory::<O, f64>(*config, len, STEPS, true);
      let (slow, slow_state) = trajectory::<O, f64>(*config, len, STEPS, false);
      assert!(same_bits(&fast, &slow) && same_state(&fast_state, &slow_state), "f64 {config:?} len {len}");
    }
    assert_reports_non_finite::<O, f32>(*config);
    assert_reports_non_finite::<O, f64>(*config);
  }
}

/// A step through the engine reports a gradient holding NaN, +∞ or −∞ at its first element, in
/// its middle, or at its last (a vector's tail), on every non-empty length of [`LENGTHS`], and
/// reports nothing for gradients whose largest finite values stand in the same places
/// ([`step_once`] compares the report with the gradient).
pub fn assert_reports_non_finite<O: Optimizer + Debug, T: Element>(config: O) {
  let largest = if std::mem::size_of::<T>() == 4 { f32::MAX as f64 } else { f64::MAX };
  for len in LENGTHS.into_iter().filter(|&len| len > 0) {
    for at in [0, len / 2, len - 1] {
      for value in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, largest, -largest] {
        let mut param = values::<T>(len, 1);
        let mut grad = values::<T>(len, 2);
        grad[at] = T::from_f64(value);
        step_once(config, &mut ParamState::default(), &mut param, &grad, true);
      }
    }
  }
}

/// Equal bits, so that NaN state compares equal to itself.
fn same_state(a: &ParamState, b: &ParamState) -> bool {
  let scalars = a.scalars.iter().zip(&b.scalars).all(|(x, y)| x.to_bits() == y.to_bits());
  let buffers = match (&a.buffers, &b.buffers) {
    (Buffers::Empty, Buffers::Empty) => true,
    (Buffers::F32(x), Buffers::F32(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_bits(x, y)),
    (Buffers::F64(x), Buffers::F64(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_bits(x, y)),
    _ => false,
  };
  a.step == b.step && scalars && buffers
}

/// With `lr` = 0 the parameters keep their bits over several steps.
pub fn assert_zero_lr_is_identity<O: Optimizer + Debug>(configs: &[O]) {
  for config in configs {
    for len in [0, 1, 40, 1001] {
      let (param, _) = trajectory::<O, f32>(*config, len, 5, true);
      assert!(same_bits(&param, &values::<f32>(len, 1)), "f32 {config:?} len {len}");
      let (param, _) = trajectory::<O, f64>(*config, len, 5, true);
      assert!(same_bits(&param, &values::<f64>(len, 1)), "f64 {config:?} len {len}");
    }
  }
}

/// The state buffers of `state`, as `f64`.
pub fn buffers_f64(state: &ParamState) -> Vec<Vec<f64>> {
  match &state.buffers {
    Buffers::Empty => Vec::new(),
    Buffers::F32(b) => b.iter().map(|v| v.iter().map(|&x| x as f64).collect()).collect(),
    Buffers::F64(b) => b.iter().map(|v| v.to_vec()).collect(),
    Buffers::Bf16(b) => b.iter().map(|v| v.iter().map(|x| x.to_f32() as f64).collect()).collect(),
  }
}

/// Each `(field, value, message)`: the defaults with `field` set to `value` are rejected with
/// exactly `message`.
pub fn assert_rejects<O: Optimizer + Debug>(cases: &[(&str, f64, &str)]) {
  for &(name, value, message) in cases {
    let mut packed = defaults(O::fields());
    packed[field_index(O::fields(), name)] = value;
    assert_eq!(O::from_packed(&packed).unwrap_err().to_string(), message, "{name} = {value}");
  }
}

pub fn field_index(fields: &[Field], name: &str) -> usize {
  fields.iter().position(|f| f.name == name).unwrap_or_else(|| panic!("no field {name}"))
}

/// The defaults with some fields overridden, packed.
pub fn packed_with(fields: &[Field], overrides: &[(&str, f64)]) -> Vec<f64> {
  let mut packed = defaults(fields);
  for &(name, value) in overrides {
    packed[field_index(fields, name)] = value;
  }
  packed
}
