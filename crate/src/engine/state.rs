//! Per-parameter optimizer state: the step count, a few carried scalars and the state buffers,
//! created on a parameter's first step (as PyTorch does) in that parameter's dtype, or in
//! bfloat16 for a float32 parameter of an optimizer made with `stateDtype: 'bfloat16'`
//! ([`crate::engine::bf16`]).

use crate::engine::bf16::Bf16;
use crate::engine::run::{MAX_BUFFERS, MAX_SCALARS};
use crate::float::{Dtype, Float};

/// The state of one parameter.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParamState {
  /// Updates applied so far; PyTorch's `state['step']`.
  pub step: u64,
  /// The optimizer's `SCALARS` (NAdam's `mu_product`), zero before the first step; unused ones stay zero.
  pub scalars: [f64; MAX_SCALARS],
  pub buffers: Buffers,
  /// Where a staged optimizer's stages pass partial results on; not state a checkpoint keeps.
  pub partials: Vec<f64>,
}

/// State buffers of one dtype, in the optimizer's `BUFFERS` order.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Buffers {
  /// Before the first step.
  #[default]
  Empty,
  F32(Vec<Vec<f32>>),
  F64(Vec<Vec<f64>>),
  /// bfloat16 state of a float32 parameter.
  Bf16(Vec<Vec<Bf16>>),
}

/// Why a parameter cannot be stepped with the state it has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateMismatch {
  /// The state is of dtype `state` ([`Buffers::name`]), which a parameter of `param` cannot use.
  Dtype { state: &'static str, param: Dtype },
  /// Buffer `buffer` holds `state` elements where the parameter needs `expected`.
  Length { buffer: usize, state: usize, expected: usize },
}

impl Buffers {
  /// The dtype of the parameters this state is for: float32 for bfloat16 state too.
  pub fn dtype(&self) -> Option<Dtype> {
    match self {
      Buffers::Empty => None,
      Buffers::F32(_) | Buffers::Bf16(_) => Some(Dtype::Float32),
      Buffers::F64(_) => Some(Dtype::Float64),
    }
  }

  /// The dtype the buffers hold, as PyTorch names it: `"float32"`, `"float64"` or `"bfloat16"`.
  pub fn name(&self) -> Option<&'static str> {
    match self {
      Buffers::Empty => None,
      Buffers::Bf16(_) => Some("bfloat16"),
      _ => self.dtype().map(Dtype::name),
    }
  }

  /// The length of each buffer that exists.
  pub fn lens(&self) -> impl Iterator<Item = usize> + '_ {
    let count = self.count();
    (0..count).map(move |i| match self {
      Buffers::Empty => 0,
      Buffers::F32(b) => b[i].len(),
      Buffers::F64(b) => b[i].len(),
      Buffers::Bf16(b) => b[i].len(),
    })
  }

  pub fn is_empty(&self) -> bool {
    matches!(self, Buffers::Empty)
  }

  /// How many buffers exist: the most any step has asked for so far.
  pub fn count(&self) -> usize {
    match self {
      Buffers::Empty => 0,
      Buffers::F32(b) => b.len(),
      Buffers::F64(b) => b.len(),
      Buffers::Bf16(b) => b.len(),
    }
  }
}

impl ParamState {
  /// Whether a parameter of `dtype` can be stepped with this state, whose buffers must have the
  /// lengths `expected` gives (one per buffer of the optimizer, for the parameter's shape).
  pub fn check(&self, dtype: Dtype, expected: &[usize]) -> Result<(), StateMismatch> {
    if let (Some(param), Some(state)) = (self.buffers.dtype(), self.buffers.name()) {
      if param != dtype {
        return Err(StateMismatch::Dtype { state, param: dtype });
      }
    }
    match self.buffers.lens().zip(expected).enumerate().find(|(_, (len, expected))| len != *expected) {
      Some((buffer, (state, &expected))) => Err(StateMismatch::Length { buffer, state, expected }),
      None => Ok(()),
    }
  }

  /// The first `count` buffers as slices, creating zeroed ones of the lengths `lens` gives that
  /// do not exist yet, plus empty slices up to [`MAX_BUFFERS`]. Call only after
  /// [`ParamState::check`] passed for `T` and these lengths.
  pub fn buffers_mut<T: Stored>(&mut self, lens: &[usize], count: usize) -> [&mut [T]; MAX_BUFFERS] {
    self.buffers.slices_mut(lens, count)
  }

  /// The buffers, as [`ParamState::buffers_mut`] gives them, and the partial results of a step,
  /// made `partials` long.
  pub fn step_parts<T: Stored>(
    &mut self,
    lens: &[usize],
    count: usize,
    partials: usize,
  ) -> ([&mut [T]; MAX_BUFFERS], &mut [f64]) {
    self.partials.resize(partials, 0.0);
    (self.buffers.slices_mut(lens, count), &mut self.partials)
  }
}

impl Buffers {
  fn slices_mut<T: Stored>(&mut self, lens: &[usize], count: usize) -> [&mut [T]; MAX_BUFFERS] {
    if self.is_empty() {
      *self = T::wrap(Vec::new());
    }
    let buffers = T::unwrap(self).expect("state dtype checked before the step");
    while buffers.len() < count {
      buffers.push(vec![T::INITIAL; lens[buffers.len()]]);
    }
    let mut slices = buffers.iter_mut().take(count).map(Vec::as_mut_slice);
    std::array::from_fn(|_| slices.next().unwrap_or(&mut []))
  }
}

/// What state buffers can hold: `f32`, `f64` or [`Bf16`].
pub trait Stored: Copy + Send + Sync + PartialEq + std::fmt::Debug + 'static {
  /// What a new buffer holds: zero.
  const INITIAL: Self;
  fn wrap(buffers: Vec<Vec<Self>>) -> Buffers;
  fn unwrap(buffers: &mut Buffers) -> Option<&mut Vec<Vec<Self>>>;
}

/// A [`Float`] (which state buffers can hold): a parameter's dtype.
pub trait Element: Float {}

impl<T: Float> Element for T {}

impl Stored for Bf16 {
  const INITIAL: Self = Bf16(0);
  fn wrap(buffers: Vec<Vec<Self>>) -> Buffers {
    Buffers::Bf16(buffers)
  }
  fn unwrap(buffers: &mut Buffers) -> Option<&mut Vec<Vec<Self>>> {
    match buffers {
      Buffers::Bf16(b) => Some(b),
      _ => None,
    }
  }
}

impl Stored for f32 {
  const INITIAL: Self = 0.0;
  fn wrap(buffers: Vec<Vec<Self>>) -> Buffers {
    Buffers::F32(buffers)
  }
  fn unwrap(buffers: &mut Buffers) -> Option<&mut Vec<Vec<Self>>> {
    match buffers {
      Buffers::F32(b) => Some(b),
      _ => None,
    }
  }
}

impl Stored for f64 {
  const INITIAL: Self = 0.0;
  fn wrap(buffers: Vec<Vec<Self>>) -> Buffers {
    Buffers::F64(buffers)
  }
  fn unwrap(buffers: &mut Buffers) -> Option<&mut Vec<Vec<Self>>> {
    match buffers {
      Buffers::F64(b) => Some(b),
      _ => None,
    }
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn buffers_appear_zeroed_on_first_use_and_keep_their_dtype() {
    let mut state = ParamState::default();
    assert_eq!(state.check(Dtype::Float32, &[5, 5, 5]), Ok(()));
    let [a, b, c] = state.buffers_mut::<f32>(&[5, 5, 5], 2);
    assert_eq!((a.len(), b.len(), c.len()), (5, 5, 0));
    a[0] = 1.0;
    assert_eq!(
      state.check(Dtype::Float64, &[5, 5, 5]),
      Err(StateMismatch::Dtype { state: "float32", param: Dtype::Float64 })
    );
    assert_eq!(
      state.check(Dtype::Float32, &[5, 4, 5]),
      Err(StateMismatch::Length { buffer: 1, state: 5, expected: 4 })
    );
    let [a, _, c] = state.buffers_mut::<f32>(&[5, 5, 5], 3);
    assert_eq!((a[0], c.len()), (1.0, 5));
    let mut factored = ParamState::default();
    let [row, col, _] = factored.buffers_mut::<f64>(&[3, 4], 2);
    assert_eq!((row.len(), col.len()), (3, 4));
  }
}
