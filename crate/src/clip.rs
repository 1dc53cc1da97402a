//! Gradient clipping: PyTorch's `torch.nn.utils.clip_grad_norm_` and `clip_grad_value_`.
//!
//! Norm clipping treats the gradients g₁ … gₙ of all parameters as one vector. With p the norm
//! type, PyTorch first takes each tensor's norm in the tensor's own dtype, then the norm of
//! those norms, and scales every gradient by a coefficient clamped at 1:
//!
//! ```text
//! nᵢ = ‖gᵢ‖ₚ = (Σⱼ |gᵢⱼ|ᵖ)^(1/p)       max_j |gᵢⱼ| for p = ∞; rounded to gᵢ's dtype
//! N  = ‖(n₁, …, nₙ)‖ₚ                  in float32 if every gradient is, else float64
//! c  = min(1, (1 / (N + 10⁻⁶)) · max_norm)     in N's dtype, each operation rounded
//! gᵢ ← gᵢ · c                            c rounded to gᵢ's dtype
//! ```
//!
//! Conventions, all PyTorch's (`foreach=False` and `foreach=True` give the same here): the
//! coefficient is the reciprocal of N + 10⁻⁶ times `max_norm` (PyTorch's `max_norm / tensor` is
//! `tensor.reciprocal() * max_norm`), so it is rounded twice; it is applied even when it is 1
//! (a no-op, skipped here); a NaN norm gives a NaN coefficient and NaN gradients; with
//! `error_if_nonfinite` a NaN or infinite N is an error and nothing is scaled. Value clipping
//! clamps each element to [−v, v], NaN staying NaN.
//!
//! Where this differs from PyTorch: N is summed in `f64` throughout, so a float32 N is within an
//! ulp of the exact one, while PyTorch, summing float32 tensors in float32, strays from it (by
//! 1e-6 relative on a tensor of 49k elements); a zero-size gradient has norm 0 for p = ∞ too
//! (PyTorch refuses the ∞-norm of an empty tensor); only p > 0 is accepted (PyTorch also takes
//! p ≤ 0, which are not norms), and `max_norm` and `clip_value` must not be negative (PyTorch
//! would flip the gradients' signs, or set them all to the negative value).
//!
//! Determinism: each tensor is cut into chunks of [`REDUCE_CHUNK`] elements; a chunk is reduced
//! sequentially into eight `f64` lanes combined in a fixed order, and a tensor's chunk results
//! are combined in chunk order. Threads only decide which chunk is reduced where, never how
//! the results are added, so N has the same bits for any thread count and instruction set.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::config::format_number;
use crate::engine::run::PARALLEL_MIN_ELEMENTS;
use crate::engine::threads::{self, Pool};
use crate::float::{Dtype, Float};

/// Elements one task reduces or scales. Fixed, so that the reduction does not depend on how
/// the step pool splits the work; a multiple of the eight lanes.
pub const REDUCE_CHUNK: usize = 1 << 14;

/// The ε PyTorch adds to the total norm before dividing by it.
pub const NORM_EPS: f64 = 1e-6;

const LANES: usize = 8;

/// Which p-norm to take.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NormType {
  /// Σ|x|.
  One,
  /// √(Σx²), the default.
  Two,
  /// max |x|.
  Inf,
  /// (Σ|x|ᵖ)^(1/p) for any other finite p > 0.
  P(f64),
}

impl NormType {
  /// The norm for `p`: any finite `p > 0`, or `+∞`.
  pub fn new(p: f64) -> Result<Self, ClipError> {
    if p == 1.0 {
      Ok(NormType::One)
    } else if p == 2.0 {
      Ok(NormType::Two)
    } else if p == f64::INFINITY {
      Ok(NormType::Inf)
    } else if p > 0.0 && p.is_finite() {
      Ok(NormType::P(p))
    } else {
      Err(ClipError::OutOfRange { field: "norm_type", value: p, expected: "a number > 0, or Infinity" })
    }
  }

  pub fn p(self) -> f64 {
    match self {
      NormType::One => 1.0,
      NormType::Two => 2.0,
      NormType::Inf => f64::INFINITY,
      NormType::P(p) => p,
    }
  }

  /// What one element adds to the sum (for ∞: what the maximum is taken over).
  #[inline(always)]
  fn term(self, x: f64) -> f64 {
    match self {
      NormType::One | NormType::Inf => x.abs(),
      NormType::Two => x * x,
      NormType::P(p) => x.abs().powf(p),
    }
  }

  /// Combines two partial results: a sum, or for ∞ a maximum that keeps NaN.
  #[inline(always)]
  fn combine(self, a: f64, b: f64) -> f64 {
    match self {
      NormType::Inf => a.max_nan(b),
      _ => a + b,
    }
  }

  /// The norm from a complete sum.
  fn root(self, sum: f64) -> f64 {
    match self {
      NormType::One | NormType::Inf => sum,
      NormType::Two => sum.sqrt(),
      NormType::P(p) => sum.powf(1.0 / p),
    }
  }
}

/// A bad argument, or gradients whose norm cannot be clipped.
#[derive(Clone, Debug, PartialEq)]
pub enum ClipError {
  OutOfRange {
    field: &'static str,
    value: f64,
    expected: &'static str,
  },
  /// The total norm is NaN or infinite and `error_if_nonfinite` was set.
  NonFinite {
    norm_type: f64,
    total: f64,
  },
}

impl ClipError {
  /// The message, with field names passed through `rename` (`norm_type` → `normType`).
  pub fn describe(&self, rename: impl Fn(&str) -> String) -> String {
    match self {
      ClipError::OutOfRange { field, value, expected } => {
        format!("invalid {}: {} (expected {expected})", rename(field), format_number(*value))
      }
      ClipError::NonFinite { norm_type, total } => format!(
        "the total norm of order {} of the gradients is {}, so it cannot be clipped; to scale the gradients \
         by the non-finite norm anyway, set {} to false",
        format_number(*norm_type),
        format_number(*total),
        rename("error_if_nonfinite")
      ),
    }
  }
}

impl fmt::Display for ClipError {
  fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    f.write_str(&self.describe(|name| name.to_string()))
  }
}

impl std::error::Error for ClipError {}

/// One gradient, in either element type.
pub enum Grad<'a> {
  F32(&'a mut [f32]),
  F64(&'a mut [f64]),
}

impl Grad<'_> {
  pub fn len(&self) -> usize {
    match self {
      Grad::F32(x) => x.len(),
      Grad::F64(x) => x.len(),
    }
  }

  pub fn is_empty(&self) -> bool {
    self.len() == 0
  }

  pub fn dtype(&self) -> Dtype {
    match self {
      Grad::F32(_) => Dtype::Float32,
      Grad::F64(_) => Dtype::Float64,
    }
  }
}

/// A total norm and the dtype PyTorch would hold it in (its value is exact in that dtype).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TotalNorm {
  pub value: f64,
  pub dtype: Dtype,
}

/// One task: a chunk of one gradient.
#[derive(Clone, Copy)]
struct Task {
  grad: usize,
  start: usize,
  end: usize,
}

fn tasks(grads: &[Grad<'_>]) -> Vec<Task> {
  let mut out = Vec::with_capacity(grads.iter().map(|g| g.len().div_ceil(REDUCE_CHUNK)).sum());
  for (grad, g) in grads.iter().enumerate() {
    for start in (0..g.len()).step_by(REDUCE_CHUNK) {
      out.push(Task { grad, start, end: (start + REDUCE_CHUNK).min(g.len()) });
    }
  }
  out
}

fn parallel(pool: &Pool, grads: &[Grad<'_>]) -> bool {
  grads.iter().map(Grad::len).sum::<usize>() >= PARALLEL_MIN_ELEMENTS && pool.threads() > 1
}

/// A norm type known when compiling ([`Fixed`]) or only when running ([`NormType`]): each
/// common norm gets a loop of its own, which vectorises.
trait Reduction: Copy + Send + Sync {
  fn norm(self) -> NormType;
}

impl Reduction for NormType {
  #[inline(always)]
  fn norm(self) -> NormType {
    self
  }
}

/// p = 1, 2, or ∞ (`P = 0`) as a type.
#[derive(Clone, Copy)]
struct Fixed<const P: u8>;

impl<const P: u8> Reduction for Fixed<P> {
  #[inline(always)]
  fn norm(self) -> NormType {
    match P {
      1 => NormType::One,
      2 => NormType::Two,
      _ => NormType::Inf,
    }
  }
}

/// The reduction of one chunk, in eight lanes combined pairwise in a fixed order.
#[inline(always)]
fn reduce_chunk<T: Float, R: Reduction>(reduction: R, xs: &[T]) -> f64 {
  let norm = reduction.norm();
  let mut lanes = [0.0f64; LANES];
  let mut blocks = xs.chunks_exact(LANES);
  for block in &mut blocks {
    for (lane, &x) in lanes.iter_mut().zip(block) {
      *lane = norm.combine(*lane, norm.term(x.to_f64()));
    }
  }
  for (lane, &x) in lanes.iter_mut().zip(blocks.remainder()) {
    *lane = norm.combine(*lane, norm.term(x.to_f64()));
  }
  let c = |a, b| norm.combine(a, b);
  c(c(c(lanes[0], lanes[1]), c(lanes[2], lanes[3])), c(c(lanes[4], lanes[5]), c(lanes[6], lanes[7])))
}

/// [`reduce_chunk`] compiled for the widest vector instructions this CPU has. Every variant
/// performs the same operations in the same order, so they give the same bits.
fn reduce_fast<T: Float, R: Reduction>(reduction: R, xs: &[T]) -> f64 {
  #[cfg(target_arch = "x86_64")]
  {
    #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
    unsafe fn avx512<T: Float, R: Reduction>(reduction: R, xs: &[T]) -> f64 {
      reduce_chunk(reduction, xs)
    }
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2<T: Float, R: Reduction>(reduction: R, xs: &[T]) -> f64 {
      reduce_chunk(reduction, xs)
    }
    if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512vl") {
      // SAFETY: the CPU supports every feature `avx512` is compiled with.
      return unsafe { avx512(reduction, xs) };
    }
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
      // SAFETY: the CPU supports every feature `avx2` is compiled with.
      return unsafe { avx2(reduction, xs) };
    }
  }
  reduce_chunk(reduction, xs)
}

fn reduce<T: Float>(norm: NormType, xs: &[T]) -> f64 {
  match norm {
    NormType::One => reduce_fast(Fixed::<1>, xs),
    NormType::Two => reduce_fast(Fixed::<2>, xs),
    NormType::Inf => reduce_fast(Fixed::<0>, xs),
    NormType::P(_) => reduce_fast(norm, xs),
  }
}

fn reduce_task(norm: NormType, grads: &[Grad<'_>], task: Task) -> f64 {
  match &grads[task.grad] {
    Grad::F32(x) => reduce(norm, &x[task.start..task.end]),
    Grad::F64(x) => reduce(norm, &x[task.start..task.end]),
  }
}

/// Each gradient's norm, rounded to its dtype, as PyTorch's per-tensor `vector_norm`.
pub fn grad_norms(grads: &[Grad<'_>], norm: NormType) -> Vec<f64> {
  grad_norms_on(&threads::current(), grads, norm)
}

fn grad_norms_on(pool: &Pool, grads: &[Grad<'_>], norm: NormType) -> Vec<f64> {
  let tasks = tasks(grads);
  let partials: Vec<f64> = if parallel(pool, grads) {
    // Each task writes its own slot, so the sum below runs in task order on any thread count.
    let slots: Vec<AtomicU64> = tasks.iter().map(|_| AtomicU64::new(0)).collect();
    pool.for_each_piece(tasks.len(), &|i| {
      slots[i].store(reduce_task(norm, grads, tasks[i]).to_bits(), Ordering::Relaxed);
    });
    slots.into_iter().map(|slot| f64::from_bits(slot.into_inner())).collect()
  } else {
    tasks.iter().map(|&task| reduce_task(norm, grads, task)).collect()
  };
  let mut sums = vec![0.0f64; grads.len()];
  for (task, partial) in tasks.iter().zip(partials) {
    sums[task.grad] = norm.combine(sums[task.grad], partial);
  }
  sums
    .into_iter()
    .zip(grads)
    .map(|(sum, grad)| match grad.dtype() {
      Dtype::Float32 => norm.root(sum) as f32 as f64,
      Dtype::Float64 => norm.root(sum),
    })
    .collect()
}

/// The norm of all gradients together: the norm of their norms, as PyTorch's `get_total_norm`.
/// No gradients give 0.
pub fn total_norm(grads: &[Grad<'_>], norm: NormType) -> TotalNorm {
  total_norm_on(&threads::current(), grads, norm)
}

fn total_norm_on(pool: &Pool, grads: &[Grad<'_>], norm: NormType) -> TotalNorm {
  let dtype = if grads.iter().all(|g| g.dtype() == Dtype::Float32) { Dtype::Float32 } else { Dtype::Float64 };
  let sum = grad_norms_on(pool, grads, norm).into_iter().fold(0.0, |sum, n| norm.combine(sum, norm.term(n)));
  let value = norm.root(sum);
  TotalNorm { value: if dtype == Dtype::Float32 { value as f32 as f64 } else { value }, dtype }
}

/// [`total_norm`] on a thread pool of its own with `threads` threads (at least one), for tests
/// that the result does not depend on the thread count. Panics if the pool cannot be built.
pub fn total_norm_on_threads(grads: &[Grad<'_>], norm: NormType, threads: usize) -> TotalNorm {
  let pool = Pool::new(threads.clamp(1, threads::MAX_THREADS)).expect("a thread pool");
  total_norm_on(&pool, grads, norm)
}

/// min(1, (1/(N + 10⁻⁶))·max_norm), each operation rounded in N's dtype; NaN if N is NaN.
pub fn clip_coefficient(max_norm: f64, total: TotalNorm) -> f64 {
  fn coefficient<T: Float>(max_norm: f64, total: f64) -> f64 {
    let c = T::ONE / (T::from_f64(total) + T::from_f64(NORM_EPS)) * T::from_f64(max_norm);
    // PyTorch's clamp(max=1) keeps NaN.
    if c > T::ONE {
      1.0
    } else {
      c.to_f64()
    }
  }
  match total.dtype {
    Dtype::Float32 => coefficient::<f32>(max_norm, total.value),
    Dtype::Float64 => coefficient::<f64>(max_norm, total.value),
  }
}

/// Runs `body` on every chunk of every gradient, across the step pool for large totals.
fn for_each_chunk(grads: &mut [Grad<'_>], body: impl Fn(&mut Grad<'_>) + Sync + Send) {
  let pool = threads::current();
  if !parallel(&pool, grads) {
    grads.iter_mut().for_each(&body);
    return;
  }
  let mut chunks: Vec<Mutex<Grad<'_>>> = Vec::new();
  for grad in grads.iter_mut() {
    match grad {
      Grad::F32(x) => chunks.extend(x.chunks_mut(REDUCE_CHUNK).map(|c| Mutex::new(Grad::F32(c)))),
      Grad::F64(x) => chunks.extend(x.chunks_mut(REDUCE_CHUNK).map(|c| Mutex::new(Grad::F64(c)))),
    }
  }
  // Each chunk is taken by one piece only; the lock is never contended.
  pool.for_each_piece(chunks.len(), &|i| body(&mut chunks[i].lock().unwrap_or_else(|e| e.into_inner())));
}

/// Multiplies every gradient by `coefficient`, rounded to its dtype first.
pub fn scale(grads: &mut [Grad<'_>], coefficient: f64) {
  fn on<T: Float>(xs: &mut [T], c: f64) {
    // Memory-bound: baseline vector instructions keep up with memory.
    let c = T::from_f64(c);
    xs.iter_mut().for_each(|x| *x = *x * c);
  }
  if coefficient == 1.0 {
    return;
  }
  for_each_chunk(grads, |grad| match grad {
    Grad::F32(x) => on(x, coefficient),
    Grad::F64(x) => on(x, coefficient),
  });
}

/// Clips every gradient in place to a total norm of at most `max_norm` and returns the total
/// norm before clipping, as `torch.nn.utils.clip_grad_norm_`. Checks its arguments, and with
/// `error_if_nonfinite` the norm, before writing anything.
pub fn clip_grad_norm(
  grads: &mut [Grad<'_>],
  max_norm: f64,
  norm_type: f64,
  error_if_nonfinite: bool,
) -> Result<TotalNorm, ClipError> {
  let norm = NormType::new(norm_type)?;
  check_limit("max_norm", max_norm)?;
  let total = total_norm(grads, norm);
  if error_if_nonfinite && !total.value.is_finite() {
    return Err(ClipError::NonFinite { norm_type, total: total.value });
  }
  if !grads.is_empty() {
    scale(grads, clip_coefficient(max_norm, total));
  }
  Ok(total)
}

/// Clamps every gradient element to [−clip_value, clip_value] (NaN stays NaN), as
/// `torch.nn.utils.clip_grad_value_`, with `clip_value` rounded to each gradient's dtype.
pub fn clip_grad_value(grads: &mut [Grad<'_>], clip_value: f64) -> Result<(), ClipError> {
  fn on<T: Float>(xs: &mut [T], v: f64) {
    let (high, low) = (T::from_f64(v), -T::from_f64(v));
    xs.iter_mut().for_each(|x| {
      *x = if *x < low {
        low
      } else if *x > high {
        high
      } else {
        *x
      }
    });
  }
  check_limit("clip_value", clip_value)?;
  for_each_chunk(grads, |grad| match grad {
    Grad::F32(x) => on(x, clip_value),
    Grad::F64(x) => on(x, clip_value),
  });
  Ok(())
}

/// `max_norm` and `clip_value` must be ≥ 0 (PyTorch takes negative ones too, which flip or
/// flatten every gradient); +∞ means no clipping.
fn check_limit(field: &'static str, value: f64) -> Result<(), ClipError> {
  if value >= 0.0 {
    Ok(())
  } else {
    Err(ClipError::OutOfRange { field, value, expected: "a number >= 0, or Infinity" })
  }
}

/// The plain definitions, to test the chunked, threaded ones against.
#[cfg(test)]
fn reference_norm<T: Float>(xs: &[T], p: f64) -> f64 {
  if p == f64::INFINITY {
    xs.iter().map(|x| x.to_f64().abs()).fold(0.0, f64::max)
  } else {
    xs.iter().map(|x| x.to_f64().abs().powf(p)).sum::<f64>().powf(1.0 / p)
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::testing::{values, LENGTHS};

  const NORM_TYPES: [f64; 5] = [1.0, 2.0, 3.0, 0.5, f64::INFINITY];

  fn grads_of<'a>(f32s: &'a mut [Vec<f32>], f64s: &'a mut [Vec<f64>]) -> Vec<Grad<'a>> {
    let mut out: Vec<Grad<'a>> = f32s.iter_mut().map(|x| Grad::F32(x)).collect();
    out.extend(f64s.iter_mut().map(|x| Grad::F64(x)));
    out
  }

  fn relative(a: f64, b: f64) -> f64 {
    if a == b {
      0.0
    } else {
      (a - b).abs() / a.abs().max(b.abs())
    }
  }

  #[test]
  fn norms_match_the_plain_definition_on_every_length() {
    for p in NORM_TYPES {
      let norm = NormType::new(p).unwrap();
      for (i, &len) in LENGTHS.iter().enumerate() {
        let mut f64s = vec![values::<f64>(len, i as u64 + 1)];
        let want = reference_norm(&f64s[0], p);
        let got = grad_norms(&grads_of(&mut [], &mut f64s), norm)[0];
        assert!(relative(got, want) <= 1e-13, "p {p}, len {len}: {got} vs {want}");

        let mut f32s = vec![values::<f32>(len, i as u64 + 1)];
        let want = reference_norm(&f32s[0], p) as f32 as f64;
        let got = grad_norms(&grads_of(&mut f32s, &mut []), norm)[0];
        assert!(relative(got, want) <= 2.0 * f32::EPSILON as f64, "f32 p {p}, len {len}: {got} vs {want}");
      }
    }
  }

  #[test]
  fn total_norm_is_the_norm_of_the_norms() {
    for p in NORM_TYPES {
      let norm = NormType::new(p).unwrap();
      let mut f64s: Vec<Vec<f64>> = LENGTHS.iter().enumerate().map(|(i, &len)| values(len, i as u64 + 7)).collect();
      let norms: Vec<f64> = f64s.iter().map(|g| reference_norm(g, p)).collect();
      let want = reference_norm(&norms, p);
      let total = total_norm(&grads_of(&mut [], &mut f64s), norm);
      assert_eq!(total.dtype, Dtype::Float64);
      assert!(relative(total.value, want) <= 1e-13, "p {p}: {} vs {want}", total.value);
    }
  }

  #[test]
  fn the_total_norm_has_the_same_bits_on_any_number_of_threads() {
    let mut f32s: Vec<Vec<f32>> = LENGTHS.iter().enumerate().map(|(i, &len)| values(len, i as u64 + 3)).collect();
    let mut f64s: Vec<Vec<f64>> = LENGTHS.iter().enumerate().map(|(i, &len)| values(len * 3, i as u64 + 5)).collect();
    for p in NORM_TYPES {
      let norm = NormType::new(p).unwrap();
      let on = |threads: usize, f32s: &mut [Vec<f32>], f64s: &mut [Vec<f64>]| {
        let pool = Pool::new(threads).unwrap();
        let grads = grads_of(f32s, f64s);
        (grad_norms_on(&pool, &grads, norm), total_norm_on(&pool, &grads, norm))
      };
      let (norms_1, total_1) = on(1, &mut f32s, &mut f64s);
      for threads in [2, 3, 8] {
        let (norms_n, total_n) = on(threads, &mut f32s, &mut f64s);
        assert_eq!(total_n.value.to_bits(), total_1.value.to_bits(), "p {p}, {threads} threads");
        assert!(norms_n.iter().zip(&norms_1).all(|(a, b)| a.to_bits() == b.to_bits()), "p {p}, {threads} threads");
      }
    }
  }

  #[test]
  fn clipping_scales_by_the_rounded_coefficient_or_not_at_all() {
    let original: Vec<Vec<f32>> = [5, PARALLEL_MIN_ELEMENTS + 3, 0, 17].iter().map(|&n| values(n, n as u64)).collect();
    let total = total_norm(&grads_of(&mut original.clone(), &mut []), NormType::Two);
    for max_norm in [total.value * 0.25, total.value * 2.0, f64::INFINITY, 0.0] {
      let mut clipped = original.clone();
      let got = clip_grad_norm(&mut grads_of(&mut clipped, &mut []), max_norm, 2.0, false).unwrap();
      assert_eq!(got, total);
      let c = (1.0f32 / (total.value as f32 + 1e-6f32)) * max_norm as f32;
      for (a, b) in clipped.iter().flatten().zip(original.iter().flatten()) {
        let want = if c >= 1.0 { *b } else { *b * c };
        assert_eq!(a.to_bits(), want.to_bits(), "max_norm {max_norm}");
      }
    }
  }

  #[test]
  fn mixed_dtypes_give_a_float64_norm_and_scale_each_gradient_in_its_own_dtype() {
    let mut f32s = vec![vec![3.0f32, 0.0]];
    let mut f64s = vec![vec![4.0f64]];
    let total = clip_grad_norm(&mut grads_of(&mut f32s, &mut f64s), 1.0, 2.0, false).unwrap();
    assert_eq!(total, TotalNorm { value: 5.0, dtype: Dtype::Float64 });
    let c = 1.0 / (5.0 + 1e-6);
    assert_eq!(f32s[0], [3.0 * c as f32, 0.0]);
    assert_eq!(f64s[0], [4.0 * c]);
  }

  #[test]
  fn a_non_finite_norm_scales_to_nan_or_fails_without_writing() {
    let original = vec![vec![1.0f64, f64::NAN, 2.0], vec![-3.0]];
    let mut grads = original.clone();
    let error = clip_grad_norm(&mut grads_of(&mut [], &mut grads), 1.0, 2.0, true).unwrap_err();
    assert!(matches!(error, ClipError::NonFinite { total, .. } if total.is_nan()));
    assert!(grads.iter().flatten().zip(original.iter().flatten()).all(|(a, b)| a.to_bits() == b.to_bits()));

    let total = clip_grad_norm(&mut grads_of(&mut [], &mut grads), 1.0, 2.0, false).unwrap();
    assert!(total.value.is_nan());
    assert!(grads.iter().flatten().all(|x| x.is_nan()));

    // The squares overflow: the norm is ∞, the coefficient 0, and an infinite element becomes ∞·0 = NaN.
    let mut huge = vec![vec![f64::MAX, f64::INFINITY, 1.0]];
    let total = clip_grad_norm(&mut grads_of(&mut [], &mut huge), 1.0, 2.0, false).unwrap();
    assert_eq!(total.value, f64::INFINITY);
    assert!(huge[0][0] == 0.0 && huge[0][1].is_nan() && huge[0][2] == 0.0, "{:?}", huge[0]);
  }

  #[test]
  fn inf_norm_keeps_nan_and_counts_empty_gradients_as_zero() {
    let mut f64s = vec![vec![], vec![-7.0, 2.0], vec![]];
    assert_eq!(total_norm(&grads_of(&mut [], &mut f64s), NormType::Inf).value, 7.0);
    let mut f64s = vec![vec![1.0, f64::NAN, 9.0]];
    assert!(total_norm(&grads_of(&mut [], &mut f64s), NormType::Inf).value.is_nan());
  }

  #[test]
  fn no_gradients_have_norm_zero() {
    assert_eq!(clip_grad_norm(&mut [], 1.0, 2.0, true), Ok(TotalNorm { value: 0.0, dtype: Dtype::Float32 }));
  }

  #[test]
  fn value_clipping_clamps_and_keeps_nan() {
    let mut f32s = vec![vec![-2.0f32, -0.5, 0.25, 3.0, f32::NAN, f32::NEG_INFINITY]];
    let mut f64s = vec![values::<f64>(PARALLEL_MIN_ELEMENTS + 9, 4)];
    let original = f64s[0].clone();
    clip_grad_value(&mut grads_of(&mut f32s, &mut f64s), 0.3).unwrap();
    assert_eq!(f32s[0][..4], [-0.3f32, -0.3, 0.25, 0.3]);
    assert!(f32s[0][4].is_nan());
    assert_eq!(f32s[0][5], -0.3);
    assert!(f64s[0].iter().zip(&original).all(|(&a, &b)| a == b.clamp(-0.3, 0.3)));
  }

  #[test]
  fn bad_arguments_are_refused_before_anything_is_written() {
    let mut grads = vec![vec![5.0f64]];
    for p in [0.0, -1.0, f64::NEG_INFINITY, f64::NAN] {
      let error = clip_grad_norm(&mut grads_of(&mut [], &mut grads), 1.0, p, false).unwrap_err();
      assert!(matches!(error, ClipError::OutOfRange { field: "norm_type", .. }), "{p}");
    }
    for max_norm in [-1.0, f64::NAN] {
      let error = clip_grad_norm(&mut grads_of(&mut [], &mut grads), max_norm, 2.0, false).unwrap_err();
      assert_eq!(error.to_string(), format!("invalid max_norm: {max_norm} (expected a number >= 0, or Infinity)"));
    }
    let error = clip_grad_value(&mut grads_of(&mut [], &mut grads), -0.1).unwrap_err();
    assert!(matches!(error, ClipError::OutOfRange { field: "clip_value", .. }));
    assert_eq!(grads, [[5.0]]);
  }
}
