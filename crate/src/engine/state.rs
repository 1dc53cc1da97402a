//! Per-parameter optimizer state: the step count, a few carried scalars and the state buffers,
//! created on a parameter's first step (as PyTorch does) in that parameter's dtype.

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
}

/// State buffers of one dtype, in the optimizer's `BUFFERS` order.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Buffers {
  /// Before the first step.
  #[default]
  Empty,
  F32(Vec<Vec<f32>>),
  F64(Vec<Vec<f64>>),
}

/// Why a parameter cannot be stepped with the state it has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateMismatch {
  Dtype { state: Dtype, param: Dtype },
  Length { state: usize, param: usize },
}

impl Buffers {
  pub fn dtype(&self) -> Option<Dtype> {
    match self {
      Buffers::Empty => None,
      Buffers::F32(_) => Some(Dtype::Float32),
      Buffers::F64(_) => Some(Dtype::Float64),
    }
  }

  /// Length of each buffer; `None` before the first step.
  pub fn len(&self) -> Option<usize> {
    match self {
      Buffers::Empty => None,
      Buffers::F32(b) => b.first().map(Vec::len),
      Buffers::F64(b) => b.first().map(Vec::len),
    }
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
    }
  }
}

impl ParamState {
  /// Whether a parameter of `dtype` and `len` elements can be stepped with this state.
  pub fn check(&self, dtype: Dtype, len: usize) -> Result<(), StateMismatch> {
    if let Some(state) = self.buffers.dtype() {
      if state != dtype {
        return Err(StateMismatch::Dtype { state, param: dtype });
      }
    }
    match self.buffers.len() {
      Some(state) if state != len => Err(StateMismatch::Length { state, param: len }),
      _ => Ok(()),
    }
  }

  /// The first `count` buffers as slices, creating zeroed ones that do not exist yet, plus empty
  /// slices up to [`MAX_BUFFERS`]. Call only after [`ParamState::check`] passed for `T`.
  pub fn buffers_mut<T: Element>(&mut self, len: usize, count: usize) -> [&mut [T]; MAX_BUFFERS] {
    if self.buffers.is_empty() {
      self.buffers = T::wrap(Vec::new());
    }
    let buffers = T::unwrap(&mut self.buffers).expect("state dtype checked before the step");
    while buffers.len() < count {
      buffers.push(vec![T::ZERO; len]);
    }
    let mut slices = buffers.iter_mut().take(count).map(Vec::as_mut_slice);
    std::array::from_fn(|_| slices.next().unwrap_or(&mut []))
  }
}

/// A [`Float`] that state buffers can hold.
pub trait Element: Float {
  fn wrap(buffers: Vec<Vec<Self>>) -> Buffers;
  fn unwrap(buffers: &mut Buffers) -> Option<&mut Vec<Vec<Self>>>;
}

impl Element for f32 {
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

impl Element for f64 {
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
    assert_eq!(state.check(Dtype::Float32, 5), Ok(()));
    let [a, b, c] = state.buffers_mut::<f32>(5, 2);
    assert_eq!((a.len(), b.len(), c.len()), (5, 5, 0));
    a[0] = 1.0;
    assert_eq!(
      state.check(Dtype::Float64, 5),
      Err(StateMismatch::Dtype { state: Dtype::Float32, param: Dtype::Float64 })
    );
    assert_eq!(state.check(Dtype::Float32, 4), Err(StateMismatch::Length { state: 5, param: 4 }));
    let [a, _, c] = state.buffers_mut::<f32>(5, 3);
    assert_eq!((a[0], c.len()), (1.0, 5));
  }
}
