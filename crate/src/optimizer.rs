//! What every optimizer provides, and the engine that runs one step over many tensors.

use rayon::prelude::*;

use crate::config::{ConfigError, Field};
use crate::float::Float;
use crate::state::ParamState;

/// The most state buffers any optimizer keeps per parameter (Adam with AMSGrad: three).
pub const MAX_BUFFERS: usize = 3;

/// The most scalars besides the step count any optimizer carries per parameter (NAdam: one).
pub const MAX_SCALARS: usize = 2;

/// Below this many elements in a whole step, threads cost more than they give.
pub const PARALLEL_MIN_ELEMENTS: usize = 1 << 15;

/// Elements one task updates; a multiple of every vector width and of a cache line.
pub const CHUNK_ELEMENTS: usize = 1 << 14;

/// An optimizer: its options, its per-parameter state, and its fused update.
pub trait Optimizer: Copy + Send + Sync + Sized {
  /// The options in packed order, with their defaults and rules.
  const FIELDS: &'static [Field];
  /// PyTorch's `state_dict` names of the per-parameter buffers, in the order the kernel takes them.
  const BUFFERS: &'static [&'static str];
  /// PyTorch's `state_dict` names of the per-parameter scalars carried from step to step besides
  /// the step count (NAdam's `mu_product`), kept in [`ParamState::scalars`] in this order.
  const SCALARS: &'static [&'static str] = &[];
  /// Per-step scalars derived from the options and the step count, computed once per step.
  type Coeffs: Copy + Send + Sync;

  /// Builds a validated configuration from values packed in [`Self::FIELDS`] order.
  fn from_packed(values: &[f64]) -> Result<Self, ConfigError>;
  /// How many of [`Self::BUFFERS`] this configuration uses.
  fn buffers_used(&self) -> usize;
  /// The scalars for the update that makes the parameter's step count `step` (1-based).
  fn coeffs(&self, step: u64) -> Self::Coeffs;
  /// Completes `coeffs` (from [`Self::coeffs`] for `state.step`) for one parameter from the
  /// state only it has, and advances that state: its [`ParamState::scalars`], or whether a
  /// buffer exists yet. Called once per parameter and step, after the step count is advanced
  /// and before the step's buffers are taken, so `state.buffers` holds what earlier steps made.
  fn advance(&self, _coeffs: &mut Self::Coeffs, _state: &mut ParamState) {}
  /// The fused update of one contiguous chunk; every slice has the same length.
  fn update<T: Float>(coeffs: &Self::Coeffs, param: &mut [T], grad: &[T], buffers: [&mut [T]; MAX_BUFFERS]);
  /// The same update written as plainly as possible, to test [`Self::update`] against.
  fn update_reference<T: Float>(coeffs: &Self::Coeffs, param: &mut [T], grad: &[T], buffers: [&mut [T]; MAX_BUFFERS]);
}

/// One tensor's share of a step: the parameter, its gradient, its state buffers (unused ones
/// empty) and the scalars for its step count.
pub struct Job<'a, T, C> {
  pub coeffs: C,
  pub param: &'a mut [T],
  pub grad: &'a [T],
  pub buffers: [&'a mut [T]; MAX_BUFFERS],
}

/// Updates every tensor of `jobs`. Large steps are split into chunks across the rayon pool, over
/// all tensors together; each element sees the same operations whatever the split, so the
/// result does not depend on the thread count.
pub fn run<O: Optimizer, T: Float>(jobs: &mut [Job<'_, T, O::Coeffs>]) {
  let total: usize = jobs.iter().map(|job| job.param.len()).sum();
  if total < PARALLEL_MIN_ELEMENTS || rayon::current_num_threads() == 1 {
    for job in jobs.iter_mut() {
      O::update(&job.coeffs, job.param, job.grad, reborrow(&mut job.buffers));
    }
    return;
  }
  jobs.par_iter_mut().for_each(|job| {
    split::<O, T>(&job.coeffs, job.param, job.grad, reborrow(&mut job.buffers));
  });
}

fn reborrow<'b, T>(buffers: &'b mut [&mut [T]; MAX_BUFFERS]) -> [&'b mut [T]; MAX_BUFFERS] {
  buffers.each_mut().map(|b| &mut **b)
}

fn split<O: Optimizer, T: Float>(coeffs: &O::Coeffs, param: &mut [T], grad: &[T], buffers: [&mut [T]; MAX_BUFFERS]) {
  let len = param.len();
  if len <= CHUNK_ELEMENTS {
    O::update(coeffs, param, grad, buffers);
    return;
  }
  let mid = (len / 2).next_multiple_of(CHUNK_ELEMENTS).min(len);
  let (param_a, param_b) = param.split_at_mut(mid);
  let (grad_a, grad_b) = grad.split_at(mid);
  let [b0, b1, b2] = buffers;
  let (b0a, b0b) = split_buffer(b0, mid);
  let (b1a, b1b) = split_buffer(b1, mid);
  let (b2a, b2b) = split_buffer(b2, mid);
  rayon::join(
    || split::<O, T>(coeffs, param_a, grad_a, [b0a, b1a, b2a]),
    || split::<O, T>(coeffs, param_b, grad_b, [b0b, b1b, b2b]),
  );
}

fn split_buffer<T>(buffer: &mut [T], mid: usize) -> (&mut [T], &mut [T]) {
  if buffer.is_empty() {
    (&mut [], &mut [])
  } else {
    buffer.split_at_mut(mid)
  }
}
