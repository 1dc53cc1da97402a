//! Muon: momentum orthogonalised by a Newton–Schulz iteration, for matrices.
//!
//! Keller Jordan et al., "Muon: An optimizer for hidden layers in neural networks" (2024,
//! kellerjordan.github.io/posts/muon), in PyTorch's version (`torch.optim.Muon`), with the
//! learning-rate adjustments of Liu et al., "Muon is Scalable for LLM Training" (arXiv:2502.16982)
//! and Bernstein, "Deriving Muon".
//!
//! With learning rate γ, weight decay λ, momentum μ, coefficients (a, b, c), ε and k steps, a
//! parameter P of A rows and B columns with gradient G and momentum buffer M (zero before the
//! first step) is updated as
//!
//! ```text
//! M ← lerp(M, G, 1 − μ)                     = μ·M + (1 − μ)·G
//! U ← lerp(G, M, μ)  if nesterov, else M    = (1 − μ)·G + μ·M
//! X ← U, transposed if A > B                (so that X is s × l with s ≤ l)
//! X ← X / max(‖X‖_F, ε)
//! k times:  S ← X·Xᵀ;  X ← a·X + (b·S + c·S²)·X
//! O ← X, transposed back if A > B
//! P ← P·(1 − γ·λ)                           decoupled decay, with the unadjusted γ
//! P ← P − γ'·O
//! ```
//!
//! where γ' is γ·√max(1, A/B) (`adjust_lr_fn` null or `"original"`), γ·0.2·√max(A, B)
//! (`"match_rms_adamw"`) or γ·√(A/B) (`"spectral_unclamped"`).
//!
//! Conventions, all PyTorch's: the momentum buffer is an average (lerp), not PyTorch SGD's sum
//! μ·M + G, so the update's scale does not depend on μ; Nesterov's look-ahead is a lerp too;
//! parameters must be matrices (the binding refuses any other shape); there is no step count in
//! PyTorch's state (the engine keeps one, as for every optimizer). The lerps round as PyTorch's
//! vectorised `lerp` ([`Lerp`]), the decay as `p.mul_(1 − γλ)` and the last line as one FMA, as
//! PyTorch's `add_(…, alpha=−γ')`.
//!
//! Precision: PyTorch runs the Newton–Schulz iteration in bfloat16 (8 significant bits) for
//! float32 and float64 parameters alike. Here it runs in the parameter's own dtype, with
//! matrixmultiply's `sgemm` (float32, accumulating in float32) or `dgemm` (float64); ‖X‖_F is
//! summed in `f64` and rounded to the dtype. The orthogonalised update O is therefore closer to
//! the iteration's exact result than PyTorch's, and differs from PyTorch's by what bfloat16
//! rounding makes of it: up to about 0.06 per element of O in one step on a 13 × 11 matrix
//! (O's elements are at most about 1; the iteration amplifies rounding where singular values are
//! small), so `__test__/muon.spec.ts` allows a parameter element 0.15·γ' from PyTorch's per step,
//! summed over the steps. Against PyTorch's own iteration run in float32 or float64 the results
//! agree within 2e-6 and 1e-14 relative. The momentum buffer does not go through the iteration
//! and matches PyTorch's to the bit.
//!
//! The step is one stage whose unit is a whole matrix ([`Optimizer::STAGES`]), and each of the
//! iteration's matrix products large enough to share is cut into blocks of rows of its output,
//! one per free thread ([`block_rows`]), each one GEMM call, which run on the engine's pool
//! ([`threads::for_each_piece`]). A step of one matrix thus runs its products on every thread; a
//! step of several runs its matrices concurrently, one per thread, each product whole on its
//! thread (the pool is busy then: [`threads::free_threads`] is 1), so that the last matrices of
//! a step may leave threads idle. The cuts fall on multiples of 64 rows, which every
//! matrixmultiply kernel's row tile divides: each element of the output is then computed in the
//! same kernel tile, summing over k in the same order, as by one call for the whole product, so
//! the result does not depend on the thread count or on the cuts (tested bit for bit against
//! one call, and on 1, 2 and 3 threads). Cutting has a price: each block packs the whole of the
//! product's right-hand matrix again, as matrixmultiply packs it per call. The iteration's four
//! matrices (two s × l, two s × s) live in a workspace per thread, which grows to the largest
//! matrix a thread has seen and is reused.
//!
//! Allocation: matrixmultiply takes a packing buffer from the heap in every call (up to 1,088 KiB
//! for `sgemm`, less for small products) and frees it before returning; its API offers no way to
//! pass one in. A Muon step therefore allocates once per block of each product, 3·k times per
//! matrix for k Newton–Schulz steps when its products are whole, and nothing else once the
//! workspace has grown. Measured with the binding's counting allocator (k = 5, float32): 15
//! allocations a step for a 64 × 48 matrix on 1 or 2 threads (315 KiB in all); 15 for 300 × 257,
//! 1024 × 1024 and 4096 × 1024 on one thread (16 MiB for the large ones) and 30 on two (32 MiB),
//! whose products are cut in two.

use std::cell::RefCell;

use crate::engine::disjoint::DisjointMut;
use crate::engine::finite::any_non_finite;
use crate::engine::run::{with_thread_vec, Dims, Job, Tensor};
use crate::engine::threads;
use crate::float::{Float, Lerp, Product};
use crate::optimizers::{Buffer, Optimizer};

crate::choice! {
  /// How Muon scales the learning rate by the shape A × B of a matrix (PyTorch's `adjust_lr_fn`).
  pub enum AdjustLrFn {
    /// γ·√max(1, A/B), Keller Jordan's original; what null means too.
    Original = "original",
    /// γ·0.2·√max(A, B), Moonshot's, so that updates have the RMS of AdamW's.
    MatchRmsAdamw = "match_rms_adamw",
    /// γ·√(A/B), Bernstein's, not clamped at 1.
    SpectralUnclamped = "spectral_unclamped",
  }
}

crate::options! {
  /// Muon's options (PyTorch's `torch.optim.Muon`).
  pub struct Muon {
    /// Learning rate γ, scaled by the matrix's shape as adjustLrFn says; the weight decay uses it unscaled.
    lr: f64 = 1e-3, NonNegative;
    /// Decoupled weight decay λ: each step first scales the weights by 1 − γλ.
    weight_decay: f64 = 0.1, NonNegative;
    /// Momentum μ: the buffer is the running average μ·M + (1 − μ)·G.
    momentum: f64 = 0.95, NonNegative;
    /// Nesterov momentum: orthogonalise (1 − μ)·G + μ·M instead of M.
    nesterov: bool = true;
    /// Coefficients (a, b, c) of the quintic Newton–Schulz step X ← a·X + (b·S + c·S²)·X, S = X·Xᵀ.
    ns_coefficients: (f64, f64, f64) = (3.4445, -4.775, 2.0315), Finite;
    /// ε, the least Frobenius norm the update is divided by before the iteration.
    eps: f64 = 1e-7, NonNegative;
    /// Newton–Schulz steps k, fewer than 100 as in PyTorch.
    ns_steps: usize = 5, CountBelow(100);
    /// The learning-rate scaling by shape A × B: "original" √max(1, A/B), "match_rms_adamw" 0.2·√max(A, B), "spectral_unclamped" √(A/B); null is "original".
    adjust_lr_fn: Option<AdjustLrFn> = None;
  }
}

/// The per-step scalars of a Muon update, in `f64`; the shape's learning rate is per matrix
/// ([`MuonCoeffs::adjusted_lr`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MuonCoeffs {
  pub lr: f64,
  /// 1 − γ·λ; exactly 1 when λ = 0.
  pub decay_factor: f64,
  pub momentum: f64,
  pub nesterov: bool,
  pub ns_coefficients: (f64, f64, f64),
  pub eps: f64,
  pub ns_steps: usize,
  pub adjust_lr_fn: Option<AdjustLrFn>,
}

impl MuonCoeffs {
  /// γ' for a matrix of `rows` × `cols`, as PyTorch's `_adjust_lr` computes it in Python floats.
  pub fn adjusted_lr(&self, rows: usize, cols: usize) -> f64 {
    let (a, b) = (rows as f64, cols as f64);
    let ratio = match self.adjust_lr_fn {
      None | Some(AdjustLrFn::Original) => (if a / b > 1.0 { a / b } else { 1.0 }).sqrt(),
      Some(AdjustLrFn::MatchRmsAdamw) => 0.2 * a.max(b).sqrt(),
      Some(AdjustLrFn::SpectralUnclamped) => (a / b).sqrt(),
    };
    self.lr * ratio
  }
}

impl Optimizer for Muon {
  const NAME: &'static str = "Muon";
  const SUMMARY: &'static str = "Muon (Jordan et al., 2024), for matrices (2-D parameters) only: momentum \
                                 orthogonalised by a Newton–Schulz iteration, whose matrix products run in blocks of \
                                 rows on the thread pool. Unlike the other optimizers' steps, a step allocates: \
                                 matrixmultiply takes a packing buffer from the heap in each of its products and frees \
                                 it: 15 a step per matrix with 5 Newton–Schulz steps, times the threads for a large \
                                 matrix stepped alone, up to about 1.1 MB each in float32";
  const BUFFERS: &'static [Buffer] = &[Buffer::like_param("momentum_buffer")];
  const MATRICES: bool = true;
  type Coeffs = MuonCoeffs;

  fn coeffs(&self, _step: u64) -> MuonCoeffs {
    MuonCoeffs {
      lr: self.lr,
      decay_factor: 1.0 - self.lr * self.weight_decay,
      momentum: self.momentum,
      nesterov: self.nesterov,
      ns_coefficients: self.ns_coefficients,
      eps: self.eps,
      ns_steps: self.ns_steps,
      adjust_lr_fn: self.adjust_lr_fn,
    }
  }

  const STAGES: usize = 1;

  fn units(_stage: usize, _dims: Dims) -> usize {
    1
  }

  unsafe fn unit<T: Float>(_stage: usize, _unit: usize, tensor: &Tensor<'_, T, MuonCoeffs>) -> bool {
    let matrix = Matrix::of(tensor.dims.batches * tensor.dims.rows, tensor.dims.cols);
    let grad = tensor.grad();
    // SAFETY: a tensor is one unit, which owns its parameter and its momentum buffer.
    let (param, momentum) = unsafe { (tensor.param(0..matrix.len()), tensor.buffer(0, 0..matrix.len())) };
    with_workspace::<T, _>(matrix.workspace_len(), |work| {
      matrix.step(&tensor.coeffs, param, grad, momentum, work, Multiply::Gemm)
    });
    any_non_finite(grad)
  }

  fn step_reference<T: Float>(job: &mut Job<'_, T, MuonCoeffs>) {
    let matrix = Matrix::of(job.dims.batches * job.dims.rows, job.dims.cols);
    let mut work = vec![T::ZERO; matrix.workspace_len()];
    matrix.step(&job.coeffs, job.param, job.grad, job.buffers[0], &mut work, Multiply::Plain);
  }
}

/// How a step multiplies matrices: with the GEMM of [`Float::gemm`], or with plain loops (the
/// reference, to test it against).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Multiply {
  Gemm,
  Plain,
}

impl Multiply {
  /// `c ← alpha·a·b + beta·c`, as [`Float::gemm`]; with the GEMM, in blocks of rows of `c`
  /// ([`block_rows`]) on the engine's pool.
  fn gemm<T: Float>(self, product: Product, alpha: T, a: &[T], b: &[T], beta: T, c: &mut [T]) {
    if self == Multiply::Gemm {
      return blocked_gemm(product, alpha, a, b, beta, c);
    }
    let Product { m, k, n, b_transposed } = product;
    for i in 0..m {
      for j in 0..n {
        let mut sum = T::ZERO;
        for p in 0..k {
          let b = if b_transposed { b[j * k + p] } else { b[p * n + j] };
          sum = sum + a[i * k + p] * b;
        }
        let scaled = alpha * sum;
        c[i * n + j] = if beta == T::ZERO { scaled } else { scaled + beta * c[i * n + j] };
      }
    }
  }
}

/// Where blocks of rows may start: a multiple of every matrixmultiply kernel's row tile (4, 8 or
/// 16 rows), so that a block's tiles are the whole product's tiles and each element of the output
/// is computed by the same kernel call, summing over k in the same order, wherever the cuts fall.
const BLOCK_ALIGN: usize = 64;
/// The least multiply-adds of a block, about 0.1 ms of one core: below it, handing a block to
/// another thread costs more than it saves.
const MIN_BLOCK_WORK: usize = 1 << 22;

/// How many rows of the m × n output of an m × k by k × n product each block computes on
/// `threads` threads (the last block takes what is left): one block per thread, aligned to
/// [`BLOCK_ALIGN`], or the whole product when it is too small to share. A block packs the
/// whole of `b` again (matrixmultiply packs per call), about one multiply-add's time for every
/// 30 of the block's per element of `b`, so blocks are not made smaller than the threads need.
fn block_rows(m: usize, k: usize, n: usize, threads: usize) -> usize {
  let by_work = (m * k * n / MIN_BLOCK_WORK).max(1);
  let blocks = threads.min(by_work).max(1);
  m.div_ceil(blocks).next_multiple_of(BLOCK_ALIGN)
}

/// [`Float::gemm`] in blocks of [`block_rows`] rows of `c` for the threads free now, each one
/// GEMM call, run on the engine's pool; one call when there is one block. The cuts fall on
/// multiples of [`BLOCK_ALIGN`] rows, so the result is that of one call, bit for bit, on any
/// number of threads.
fn blocked_gemm<T: Float>(product: Product, alpha: T, a: &[T], b: &[T], beta: T, c: &mut [T]) {
  let Product { m, k, n, .. } = product;
  gemm_in_blocks(product, block_rows(m, k, n, threads::free_threads()), alpha, a, b, beta, c)
}

/// [`Float::gemm`] in blocks of `rows` rows of `c` (a multiple of [`BLOCK_ALIGN`]), on the pool.
fn gemm_in_blocks<T: Float>(product: Product, rows: usize, alpha: T, a: &[T], b: &[T], beta: T, c: &mut [T]) {
  let Product { m, k, n, .. } = product;
  debug_assert!(rows > 0 && rows.is_multiple_of(BLOCK_ALIGN));
  let blocks = m.div_ceil(rows);
  if blocks <= 1 {
    return T::gemm(product, alpha, a, b, beta, c);
  }
  assert!(a.len() >= m * k && c.len() >= m * n, "gemm: a slice is shorter than its shape");
  let out = DisjointMut::of(c);
  threads::for_each_piece(blocks, &|block| {
    let first = block * rows;
    let count = rows.min(m - first);
    // SAFETY: rows `first..first + count` of `c` are in bounds (checked above) and written by this
    // block only; `c` is borrowed exclusively until `for_each_piece` returns.
    let c = unsafe { out.part(first * n..(first + count) * n) };
    T::gemm(Product { m: count, ..product }, alpha, &a[first * k..(first + count) * k], b, beta, c);
  });
}

/// A parameter of `rows` × `cols` and the shape of its iteration: X is `short` × `long`, the
/// transpose of the parameter's shape when it has more rows than columns.
#[derive(Clone, Copy, Debug)]
struct Matrix {
  rows: usize,
  cols: usize,
  transposed: bool,
  short: usize,
  long: usize,
}

impl Matrix {
  fn of(rows: usize, cols: usize) -> Self {
    let transposed = rows > cols;
    let (short, long) = if transposed { (cols, rows) } else { (rows, cols) };
    Matrix { rows, cols, transposed, short, long }
  }

  fn len(&self) -> usize {
    self.rows * self.cols
  }

  /// X and its next value (s × l each), S and b·S + c·S² (s × s each).
  fn workspace_len(&self) -> usize {
    2 * self.short * (self.long + self.short)
  }

  /// Where element `(i, j)` of the parameter sits in X.
  #[inline(always)]
  fn at(&self, i: usize, j: usize) -> usize {
    if self.transposed {
      j * self.long + i
    } else {
      i * self.cols + j
    }
  }

  /// One Muon step of the parameter, with `work` ([`Self::workspace_len`] elements) for the
  /// iteration's matrices.
  fn step<T: Float>(
    &self,
    c: &MuonCoeffs,
    param: &mut [T],
    grad: &[T],
    momentum: &mut [T],
    work: &mut [T],
    multiply: Multiply,
  ) {
    let (s, l) = (self.short, self.long);
    let (x, rest) = work.split_at_mut(s * l);
    let (next, rest) = rest.split_at_mut(s * l);
    let (gram, poly) = rest.split_at_mut(s * s);
    let (average, look_ahead) = (Lerp::new(1.0 - c.momentum), Lerp::new(c.momentum));
    let grad = &grad[..self.len()];
    let momentum = &mut momentum[..self.len()];
    let mut squares = 0.0;
    for i in 0..self.rows {
      for j in 0..self.cols {
        let k = i * self.cols + j;
        let m = average.apply(momentum[k], grad[k]);
        momentum[k] = m;
        let u = if c.nesterov { look_ahead.apply(grad[k], m) } else { m };
        squares += u.to_f64() * u.to_f64();
        x[self.at(i, j)] = u;
      }
    }
    let (norm, eps) = (T::from_f64(squares.sqrt()), T::from_f64(c.eps));
    // PyTorch's `clamp(min=eps)`: a NaN norm stays NaN.
    let norm = if norm < eps { eps } else { norm };
    x.iter_mut().for_each(|v| *v = *v / norm);
    let (a, b, c5) =
      (T::from_f64(c.ns_coefficients.0), T::from_f64(c.ns_coefficients.1), T::from_f64(c.ns_coefficients.2));
    // S = X·Xᵀ; b·S + c·S², in place of a copy of S; a·X + (b·S + c·S²)·X, in place of a copy of X.
    let gram_shape = Product { m: s, k: l, n: s, b_transposed: true };
    let square_shape = Product { m: s, k: s, n: s, b_transposed: false };
    let update_shape = Product { m: s, k: s, n: l, b_transposed: false };
    let (mut x, mut next) = (x, next);
    for _ in 0..c.ns_steps {
      multiply.gemm(gram_shape, T::ONE, x, x, T::ZERO, gram);
      poly.copy_from_slice(gram);
      multiply.gemm(square_shape, c5, gram, gram, b, poly);
      next.copy_from_slice(x);
      multiply.gemm(update_shape, T::ONE, poly, x, a, next);
      std::mem::swap(&mut x, &mut next);
    }
    let decay = T::from_f64(c.decay_factor);
    let step = T::from_f64(-c.adjusted_lr(self.rows, self.cols));
    for i in 0..self.rows {
      for j in 0..self.cols {
        let k = i * self.cols + j;
        param[k] = x[self.at(i, j)].mul_add(step, param[k] * decay);
      }
    }
  }
}

thread_local! {
  /// Each thread's workspace for the iteration, as `f64`s whatever the element type, so that one
  /// serves both; it keeps the size of the largest matrix the thread has stepped.
  static WORKSPACE: RefCell<Vec<f64>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with `len` elements of `T` of this thread's workspace (of unspecified values).
fn with_workspace<T: Float, R>(len: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
  const { assert!(std::mem::size_of::<T>() <= 8 && std::mem::align_of::<T>() <= std::mem::align_of::<f64>()) };
  with_thread_vec(&WORKSPACE, |words| {
    let needed = (len * std::mem::size_of::<T>()).div_ceil(8);
    if words.len() < needed {
      words.resize(needed, 0.0);
    }
    // SAFETY: `T` is `f32` or `f64` (the only `Float`s), for which every bit pattern is a value;
    // the allocation holds at least `len` of them and is aligned for `f64`, hence for `T`; the
    // slice borrows `words` exclusively for the call.
    let work = unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<T>(), len) };
    f(work)
  })
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::config::Options;
  use crate::engine::run::run;
  use crate::engine::state::{Element, ParamState};
  use crate::engine::threads::{num_threads, set_num_threads};
  use crate::optimizers::buffer_lens;
  use crate::testing::{assert_rejects, buffers_f64, packed_with, same_bits, values};

  /// Wide, tall and square; a row, a column and a single element; odd sizes; two over the
  /// engine's parallel threshold together.
  const SHAPES: &[[usize; 2]] =
    &[[1, 1], [1, 9], [9, 1], [3, 5], [5, 3], [8, 8], [17, 9], [31, 33], [130, 70], [64, 300]];

  fn configs() -> Vec<Muon> {
    let base = Muon::default();
    vec![
      base,
      Muon { nesterov: false, adjust_lr_fn: Some(AdjustLrFn::MatchRmsAdamw), lr: 0.02, ..base },
      Muon { momentum: 0.5, weight_decay: 0.0, ns_steps: 2, adjust_lr_fn: Some(AdjustLrFn::SpectralUnclamped), ..base },
      Muon {
        ns_coefficients: (1.5, -0.5, 0.0),
        eps: 1e-3,
        ns_steps: 9,
        adjust_lr_fn: Some(AdjustLrFn::Original),
        ..base
      },
    ]
  }

  /// Parameters of `shapes` stepped `steps` times with gradients `values`: all in one engine
  /// run per step, or one by one through the reference.
  fn trajectory<T: Element>(
    config: Muon,
    shapes: &[[usize; 2]],
    steps: u64,
    engine: bool,
  ) -> Vec<(Vec<T>, ParamState)> {
    let mut tensors: Vec<(Vec<T>, ParamState)> = (0..shapes.len())
      .map(|i| (values::<T>(shapes[i][0] * shapes[i][1], i as u64 + 1), ParamState::default()))
      .collect();
    for step in 1..=steps {
      let grads: Vec<Vec<T>> =
        (0..shapes.len()).map(|i| values::<T>(shapes[i][0] * shapes[i][1], 1000 * step + i as u64)).collect();
      let mut jobs = Vec::new();
      for ((shape, (param, state)), grad) in shapes.iter().zip(&mut tensors).zip(&grads) {
        state.step += 1;
        let coeffs = config.coeffs(state.step);
        let dims = Dims::of(shape);
        let (buffers, partials) = state.step_parts::<T>(&buffer_lens::<Muon>(dims), 1, Muon::partials_len(dims));
        jobs.push(Job::new(coeffs, param, grad, buffers, dims, partials));
      }
      if engine {
        run::<Muon, T>(&mut jobs);
      } else {
        jobs.iter_mut().for_each(Muon::step_reference);
      }
    }
    tensors
  }

  fn assert_engine_is_thread_independent_and_near_reference<T: Element>(tolerance: f64) {
    let threads = num_threads();
    for config in configs() {
      set_num_threads(1).unwrap();
      let single = trajectory::<T>(config, SHAPES, 3, true);
      let reference = trajectory::<T>(config, SHAPES, 3, false);
      for ((shape, (param, state)), (want, want_state)) in SHAPES.iter().zip(&single).zip(&reference) {
        // The momentum buffer takes no products: the same operations, the same bits.
        assert!(same_bits(&buffers_f64(state)[0], &buffers_f64(want_state)[0]), "{shape:?} {config:?}");
        let worst = param.iter().zip(want).map(|(a, b)| (a.to_f64() - b.to_f64()).abs()).fold(0.0, f64::max);
        assert!(worst <= tolerance, "{:?} {shape:?}: {worst:e} from the reference, {config:?}", T::DTYPE);
      }
      for n in [2, 5] {
        set_num_threads(n).unwrap();
        let many = trajectory::<T>(config, SHAPES, 3, true);
        for ((shape, (param, _)), (want, _)) in SHAPES.iter().zip(&many).zip(&single) {
          assert!(same_bits(param, want), "{:?} {shape:?} on {n} threads, {config:?}", T::DTYPE);
        }
      }
    }
    set_num_threads(threads).unwrap();
  }

  #[test]
  fn engine_is_thread_independent_and_agrees_with_the_plain_reference() {
    // The GEMM and the plain loops add in different orders; three steps of γ' ≤ 0.02·√(300/0.2)
    // move a parameter by at most about 2.5, so float32's differences stay near its epsilon.
    assert_engine_is_thread_independent_and_near_reference::<f32>(2e-5);
    assert_engine_is_thread_independent_and_near_reference::<f64>(1e-13);
  }

  #[test]
  fn products_are_cut_into_one_aligned_block_per_thread_when_large_enough() {
    assert_eq!(block_rows(1024, 1024, 1024, 1), 1024);
    assert_eq!(block_rows(1024, 1024, 1024, 2), 512);
    // 342 rows a thread, aligned: blocks of 384, 384 and 256.
    assert_eq!(block_rows(1024, 1024, 1024, 3), 384);
    // Too small to share: one block whatever the threads.
    assert_eq!(block_rows(130, 70, 70, 8), 192);
    // About 4.7 blocks' work: no more blocks than that, nor than threads; the last of 65 or 1 rows.
    assert_eq!(block_rows(257, 300, 257, 2), 192);
    assert_eq!(block_rows(257, 300, 257, 3), 128);
    assert_eq!(block_rows(257, 300, 257, 64), 128);
    assert_eq!(block_rows(0, 5, 5, 4), 0);
  }

  /// Odd shapes whose products are cut into blocks on 2 and 3 threads, the last of a few rows: X
  /// is 257 × 300, 193 × 450 (a tall parameter), 321 × 321.
  const BLOCKED: &[[usize; 2]] = &[[257, 300], [450, 193], [321, 321]];

  fn assert_blocks_are_one_call<T: Element>() {
    let threads = num_threads();
    for &[m, k] in &[[257usize, 300usize], [193, 450], [321, 321], [65, 4096], [1, 700]] {
      let n = m + 3;
      let (a, b, start) = (values::<T>(m * k, 1), values::<T>(k * n, 2), values::<T>(m * n, 3));
      for b_transposed in [false, true] {
        let product = Product { m, k, n, b_transposed };
        let (alpha, beta) = (T::from_f64(0.5), T::from_f64(-1.5));
        let mut whole = start.clone();
        T::gemm(product, alpha, &a, &b, beta, &mut whole);
        for rows in [64, 128, 192] {
          let mut blocked = start.clone();
          gemm_in_blocks(product, rows, alpha, &a, &b, beta, &mut blocked);
          assert!(same_bits(&blocked, &whole), "{m} x {k} x {n} in blocks of {rows} rows");
        }
        for t in [1, 2, 3] {
          set_num_threads(t).unwrap();
          let mut blocked = start.clone();
          blocked_gemm(product, alpha, &a, &b, beta, &mut blocked);
          assert!(same_bits(&blocked, &whole), "{m} x {k} x {n} on {t} threads");
        }
      }
    }
    set_num_threads(threads).unwrap();
  }

  #[test]
  fn products_in_blocks_of_aligned_rows_give_the_bits_of_one_call_on_any_thread_count() {
    assert_blocks_are_one_call::<f32>();
    assert_blocks_are_one_call::<f64>();
  }

  #[test]
  fn steps_of_blocked_matrices_are_thread_independent_alone_and_together() {
    // One matrix a step runs its blocks on every thread; several run concurrently, one per
    // thread. Either way, and on 1, 2 or 3 threads, the same bits.
    let threads = num_threads();
    let config = Muon { lr: 0.02, ..Muon::default() };
    set_num_threads(1).unwrap();
    let together = trajectory::<f32>(config, BLOCKED, 2, true);
    let alone: Vec<_> = BLOCKED.iter().map(|&shape| trajectory::<f32>(config, &[shape], 2, true)).collect();
    for t in [2, 3] {
      set_num_threads(t).unwrap();
      let many = trajectory::<f32>(config, BLOCKED, 2, true);
      for (i, shape) in BLOCKED.iter().enumerate() {
        let single = trajectory::<f32>(config, &[*shape], 2, true);
        assert!(same_bits(&single[0].0, &alone[i][0].0), "{shape:?} alone on {t} threads");
        assert!(same_bits(&many[i].0, &together[i].0), "{shape:?} together on {t} threads");
      }
    }
    set_num_threads(threads).unwrap();
  }

  fn step_f64(config: Muon, shape: [usize; 2], param: &mut [f64], grad: &[f64]) -> ParamState {
    let mut state = ParamState { step: 1, ..ParamState::default() };
    let dims = Dims::of(&shape);
    let (buffers, partials) = state.step_parts::<f64>(&buffer_lens::<Muon>(dims), 1, 0);
    run::<Muon, f64>(&mut [Job::new(config.coeffs(1), param, grad, buffers, dims, partials)]);
    state
  }

  #[test]
  fn first_step_derived_by_hand() {
    // 1 × 1, one Newton–Schulz step: M = 0.05·2 = 0.1; Nesterov's U = 0.05·2 + 0.95·0.1 = 0.195;
    // X = U/|U| = 1, then a + b + c = 3.4445 − 4.775 + 2.0315 = 0.701; p = 1·(1 − 1e-3·0.1) −
    // 1e-3·0.701 (γ' = γ·√max(1, 1/1)).
    let config = Muon { ns_steps: 1, ..Muon::default() };
    let mut param = [1.0];
    let state = step_f64(config, [1, 1], &mut param, &[2.0]);
    assert!((buffers_f64(&state)[0][0] - 0.1).abs() < 1e-16);
    assert!((param[0] - (0.9999 - 0.000701)).abs() < 1e-15, "{param:?}");

    // The cubic Newton–Schulz step (1.5, −0.5, 0) on diag(3, 4) without momentum (μ = 0):
    // ‖G‖_F = 5, X = diag(0.6, 0.8), and each singular value x goes to 1.5x − 0.5x³: 0.792 and
    // 0.944. No decay; γ = 1 so the parameter (zero) becomes −O.
    let config = Muon {
      ns_coefficients: (1.5, -0.5, 0.0),
      ns_steps: 1,
      momentum: 0.0,
      weight_decay: 0.0,
      lr: 1.0,
      ..Muon::default()
    };
    let mut param = [0.0; 4];
    step_f64(config, [2, 2], &mut param, &[3.0, 0.0, 0.0, 4.0]);
    let expected = [-0.792, 0.0, 0.0, -0.944];
    assert!(param.iter().zip(expected).all(|(p, e)| (p - e).abs() < 1e-15), "{param:?}");

    // A zero gradient: the norm is clamped at ε, X stays 0, and only the decay moves p.
    let mut param = [2.0, -4.0];
    step_f64(Muon::default(), [1, 2], &mut param, &[0.0, 0.0]);
    assert_eq!(param, [2.0 * 0.9999, -4.0 * 0.9999]);
  }

  #[test]
  fn tall_matrices_are_orthogonalised_as_the_transpose_of_wide_ones() {
    let (rows, cols) = (7, 3);
    let grad = values::<f64>(rows * cols, 5);
    let transpose = |m: &[f64], rows: usize, cols: usize| -> Vec<f64> {
      (0..rows * cols).map(|k| m[(k % rows) * cols + k / rows]).collect()
    };
    // "match_rms_adamw" is symmetric in A and B: both get the same γ'.
    let config = Muon { adjust_lr_fn: Some(AdjustLrFn::MatchRmsAdamw), lr: 0.1, ..Muon::default() };
    let mut tall = values::<f64>(rows * cols, 6);
    let mut wide = transpose(&tall, rows, cols);
    step_f64(config, [rows, cols], &mut tall, &grad);
    step_f64(config, [cols, rows], &mut wide, &transpose(&grad, rows, cols));
    assert!(same_bits(&transpose(&tall, rows, cols), &wide));
  }

  #[test]
  fn learning_rate_adjustments_follow_pytorch() {
    let c = |adjust_lr_fn| MuonCoeffs { adjust_lr_fn, ..Muon { lr: 0.5, ..Muon::default() }.coeffs(1) };
    assert_eq!(c(None).adjusted_lr(8, 2), 0.5 * 2.0);
    assert_eq!(c(None).adjusted_lr(2, 8), 0.5);
    assert_eq!(c(Some(AdjustLrFn::Original)).adjusted_lr(9, 4), 0.5 * 1.5);
    assert_eq!(c(Some(AdjustLrFn::MatchRmsAdamw)).adjusted_lr(3, 100), 0.5 * (0.2 * 10.0));
    assert_eq!(c(Some(AdjustLrFn::SpectralUnclamped)).adjusted_lr(1, 4), 0.5 * 0.5);
  }

  #[test]
  fn zero_learning_rate_leaves_parameters_unchanged() {
    let config = Muon { lr: 0.0, weight_decay: 0.5, ..Muon::default() };
    for (i, (param, _)) in trajectory::<f32>(config, SHAPES, 2, true).iter().enumerate() {
      assert!(same_bits(param, &values::<f32>(param.len(), i as u64 + 1)), "{:?}", SHAPES[i]);
    }
  }

  #[test]
  fn non_finite_gradients_are_reported() {
    let mut param = vec![1.0f32; 12];
    let mut grad = vec![0.5f32; 12];
    grad[7] = f32::INFINITY;
    let mut state = ParamState { step: 1, ..ParamState::default() };
    let dims = Dims::of(&[3, 4]);
    let (buffers, partials) = state.step_parts::<f32>(&buffer_lens::<Muon>(dims), 1, 0);
    let job = Job::new(Muon::default().coeffs(1), &mut param, &grad, buffers, dims, partials);
    assert!(run::<Muon, f32>(&mut [job]));
  }

  #[test]
  fn options_read_back_and_bad_ones_are_rejected() {
    assert_rejects::<Muon>(&[
      ("lr", -1.0, "invalid lr: -1 (expected a finite lr >= 0)"),
      ("momentum", -0.5, "invalid momentum: -0.5 (expected a finite momentum >= 0)"),
      ("ns_coefficients[1]", f64::NAN, "invalid ns_coefficients[1]: NaN (expected a finite ns_coefficients[1])"),
      ("ns_steps", 100.0, "invalid ns_steps: 100 (expected a whole number 0 <= ns_steps < 100)"),
      ("ns_steps", 2.5, "invalid ns_steps: 2.5 (expected a whole number 0 <= ns_steps < 100)"),
      (
        "adjust_lr_fn",
        3.0,
        "invalid adjust_lr_fn: 3 (expected null or one of \"original\", \"match_rms_adamw\", \"spectral_unclamped\")",
      ),
    ]);
    let fields = Muon::fields();
    let names: Vec<&str> = fields.iter().map(|f| f.name).collect();
    assert_eq!(
      names,
      [
        "lr",
        "weight_decay",
        "momentum",
        "nesterov",
        "ns_coefficients[0]",
        "ns_coefficients[1]",
        "ns_coefficients[2]",
        "eps",
        "ns_steps",
        "adjust_lr_fn"
      ]
    );
    let packed = packed_with(fields, &[("adjust_lr_fn", 1.0), ("ns_steps", 0.0), ("ns_coefficients[2]", 1.0)]);
    let muon = Muon::from_packed(&packed).unwrap();
    assert_eq!(muon.adjust_lr_fn, Some(AdjustLrFn::MatchRmsAdamw));
    assert_eq!((muon.ns_steps, muon.ns_coefficients), (0, (3.4445, -4.775, 1.0)));
    assert_eq!(Muon::from_packed(&packed_with(fields, &[])).unwrap(), Muon::default());
  }
}
