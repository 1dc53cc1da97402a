//! Adafactor: second moments factored into row and column averages.
//!
//! Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost", ICML 2018,
//! in PyTorch's variant (`torch.optim.Adafactor`).
//!
//! With learning rate γ, decay exponent τ, epsilons ε₁ ε₂, clipping threshold d, weight decay λ
//! and step t (1 on the first update), a parameter p of n elements with gradient g is updated as
//!
//! ```text
//! g ← −g                                    if maximize
//! w ← t^τ                                   = 1 − β̂₂ₜ (1 on the first step)
//! ρ ← min(γ, 1/√t)
//! α ← max(ε₂, ‖p‖/√n)·ρ                     from p before the weight decay
//! p ← p·(1 − γ·λ)                           if λ ≠ 0
//! tensors of 2 or more dimensions, factored over the last two (m rows, k columns) per batch:
//!   R ← lerp(R, ‖g row‖²/k, w)              one per row
//!   C ← lerp(C, ‖g column‖²/m, w)           one per column
//!   V ← R·Cᵀ / max(mean of R over the batch's rows, ε₁)
//! tensors of 0 or 1 dimensions:
//!   V ← lerp(V, g², w)                      kept whole
//! U ← g / √max(V, ε₁²)
//! p ← p − α/max(1, ‖U‖/(√n·d)) · U
//! ```
//!
//! Conventions, all PyTorch's: the second moments average g² (row and column means), not its
//! sums, and ε₁ is never added to them: it floors the mean row factor and, squared, the
//! estimate V. ε₁ = null means the machine epsilon of the parameter's dtype. (PyTorch resolves it
//! once per group and step, from the first parameter with a gradient, so in a group that mixes
//! float32 and float64 parameters the later ones use the first one's epsilon; here each uses its
//! own.) γ caps the relative step size ρ and scales the weight decay, which is decoupled. The
//! norms, √n, α, the clipping denominator and w are `f64` scalars, rounded to the element type
//! where they meet a tensor; everything elementwise is rounded in the element type one
//! operation at a time, as PyTorch's tensor ops are: a row mean is `fl(fl(‖row‖)²)/k`, V is
//! `fl(fl(R·C)/μ)`, U is `fl(fl(1/fl(√V))·g)`, lerp is PyTorch's vectorised
//! `fma(w, y − x, x)` (or `fma(w − 1, y − x, y)` for w ≥ ½), and the last line is one FMA. Sums
//! of squares are accumulated in `f64` (PyTorch accumulates in the dtype), so float32 results
//! differ from PyTorch's by the rounding of its float32 sums; PyTorch's float32 `rsqrt` is also
//! an approximation within an ulp of `1/√V`.
//!
//! The step runs in three stages ([`Optimizer::STAGES`]), each cut into units that depend only
//! on the tensor's shape ([`Plan`]), and every sum is folded in a fixed order, so results do not
//! depend on the thread count:
//!
//! 0. the sum of squares of p (per block of elements); the row and column factors of a factored
//!    tensor (units of whole rows, and units of whole columns of one or more batches), or V of
//!    an unfactored one (per block); then α, and the clamped mean row factor of each batch.
//! 1. the sum of squares of U (per block); then the step scale −α/max(1, ‖U‖/(√n·d)).
//! 2. the update (per block), which computes U again rather than store a tensor-sized copy.

use std::ops::Range;

use crate::engine::finite::any_non_finite;
use crate::engine::run::{Dims, Job, Tensor, MAX_PIECE_ELEMENTS, PIECE_ELEMENTS};
use crate::engine::simd::{self, multiversion};
use crate::float::{Dtype, Float, Lerp};
use crate::optimizers::{Buffer, Layout, Optimizer};

crate::options! {
  /// Adafactor's options (PyTorch's `torch.optim.Adafactor`).
  pub struct Adafactor {
    /// Learning rate γ: the cap of the relative step size ρ = min(γ, 1/√t), and the scale of the weight decay.
    lr: f64 = 1e-2, NonNegative;
    /// Decay exponent τ (at most 0): the second moments take in g² with weight t^τ.
    beta2_decay: f64 = -0.8, NonPositive;
    /// (ε₁, ε₂): ε₁ floors the mean row factor, and squared the variance estimate (null: the dtype's machine epsilon); ε₂ floors RMS(p) in the step size.
    eps: (Option<f64>, f64) = (None, 1e-3), NonNegative;
    /// Clipping threshold d (at least 1): an update whose RMS exceeds d is scaled down to RMS d.
    d: f64 = 1.0, AtLeastOne;
    /// Decoupled weight decay λ: each step first scales the weights by 1 − γλ.
    weight_decay: f64 = 0.0, NonNegative;
    /// Maximize the objective: step along the gradient instead of against it.
    maximize: bool = false;
  }
}

/// The per-step scalars of an Adafactor update, in `f64`; the last two are per tensor, filled in
/// by the stages.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdafactorCoeffs {
  /// w = t^τ = 1 − β̂₂ₜ, the lerp weight of the second moments.
  pub grad_sq_weight: f64,
  /// ρ = min(γ, 1/√t)
  pub rho: f64,
  /// ε₁; `None` for the dtype's machine epsilon.
  pub eps1: Option<f64>,
  pub eps2: f64,
  pub d: f64,
  /// 1 − γ·λ; exactly 1 when λ = 0.
  pub decay_factor: f64,
  pub maximize: bool,
  /// α = max(ε₂, RMS(p))·ρ, set at the end of stage 0.
  pub alpha: f64,
  /// −α/max(1, RMS(U)/d), set at the end of stage 1.
  pub step_scale: f64,
}

impl AdafactorCoeffs {
  /// ε₁ for elements of `T`.
  fn eps1<T: Float>(&self) -> f64 {
    self.eps1.unwrap_or(match T::DTYPE {
      Dtype::Float32 => f64::from(f32::EPSILON),
      Dtype::Float64 => f64::EPSILON,
    })
  }

  /// α from ‖p‖ (already rounded to the dtype) of a tensor of `len` elements. Python's `max`
  /// keeps its first argument unless the second is larger, so a NaN norm gives ε₂·ρ.
  fn alpha_for(&self, norm: f64, len: usize) -> f64 {
    let rms = norm / (len as f64).powf(0.5);
    (if rms > self.eps2 { rms } else { self.eps2 }) * self.rho
  }

  /// −α/denom from ‖U‖ (rounded to the dtype); a NaN norm gives denom 1, as Python's `max`.
  fn step_scale_for(&self, norm: f64, len: usize) -> f64 {
    let ratio = norm / ((len as f64).powf(0.5) * self.d);
    -self.alpha / if ratio > 1.0 { ratio } else { 1.0 }
  }
}

impl Optimizer for Adafactor {
  const NAME: &'static str = "Adafactor";
  const SUMMARY: &'static str = "Adafactor (Shazeer & Stern, 2018): second moments factored into row and column \
                                 averages for tensors of 2 or more dimensions";
  const BUFFERS: &'static [Buffer] = &[
    Buffer { name: "row_var", layout: Layout::Rows },
    Buffer { name: "col_var", layout: Layout::Cols },
    Buffer { name: "variance", layout: Layout::Unfactored },
  ];
  type Coeffs = AdafactorCoeffs;

  /// `powf(0.5)` and the comparisons are Python's `t ** 0.5` and `min(lr, …)`, which PyTorch runs.
  fn coeffs(&self, step: u64) -> AdafactorCoeffs {
    let t = step as f64;
    let inverse_sqrt = 1.0 / t.powf(0.5);
    AdafactorCoeffs {
      grad_sq_weight: t.powf(self.beta2_decay),
      rho: if inverse_sqrt < self.lr { inverse_sqrt } else { self.lr },
      eps1: self.eps.0,
      eps2: self.eps.1,
      d: self.d,
      decay_factor: if self.weight_decay != 0.0 { 1.0 - self.lr * self.weight_decay } else { 1.0 },
      maximize: self.maximize,
      alpha: f64::NAN,
      step_scale: f64::NAN,
    }
  }

  const STAGES: usize = 3;

  fn partials_len(dims: Dims) -> usize {
    Plan::new(dims).partials()
  }

  fn units(stage: usize, dims: Dims) -> usize {
    let plan = Plan::new(dims);
    match stage {
      0 => plan.row_units + plan.col_units + plan.blocks,
      _ => plan.blocks,
    }
  }

  unsafe fn unit<T: Float>(stage: usize, unit: usize, tensor: &Tensor<'_, T, AdafactorCoeffs>) -> bool {
    let plan = Plan::new(tensor.dims);
    // Kernels get slices that are not parts of one another (a block of g, all of C), which
    // `multiversion!` would cut wrongly while streaming.
    simd::streaming(false, || {
      // SAFETY (all five): the units of a stage own disjoint parts, as the trait requires: each
      // row unit its rows of R, each column unit its columns of C, each block unit its elements
      // of p and V and its partial slots (`unit` and `plan.mean_slot(unit, ·)`); what a stage
      // only reads (R and C in stages 1 and 2) no unit of it writes.
      unsafe {
        match stage {
          0 if unit < plan.row_units => rows_unit(&plan, unit, tensor),
          0 if unit < plan.row_units + plan.col_units => columns_unit(&plan, unit - plan.row_units, tensor),
          0 => first_block_unit(&plan, unit - plan.row_units - plan.col_units, tensor),
          1 => update_block_unit(&plan, unit, tensor, false),
          _ => update_block_unit(&plan, unit, tensor, true),
        }
      }
    })
  }

  fn end_stage<T: Float>(stage: usize, job: &mut Job<'_, T, AdafactorCoeffs>) {
    let plan = Plan::new(job.dims);
    let norm = || T::from_f64(fold(&job.partials[..plan.blocks]).sqrt()).to_f64();
    match stage {
      0 => {
        job.coeffs.alpha = job.coeffs.alpha_for(norm(), plan.len);
        if plan.factored {
          let eps1 = T::from_f64(job.coeffs.eps1::<T>());
          let rows = T::from_f64(plan.rows as f64);
          let batch_len = plan.rows * plan.cols;
          let mut first_block = 0;
          for (batch, row_var) in job.buffers[0].chunks_exact(plan.rows).enumerate() {
            let mean = T::from_f64(row_var.iter().fold(0.0, |sum, &r| sum + r.to_f64())) / rows;
            let mean = if mean < eps1 { eps1 } else { mean };
            // Each block that holds elements of the batch gets a copy of its own.
            while (first_block + 1) * plan.block <= batch * batch_len {
              first_block += 1;
            }
            let mut block = first_block;
            while block * plan.block < (batch + 1) * batch_len {
              job.partials[plan.mean_slot(block, batch)] = mean.to_f64();
              block += 1;
            }
          }
        }
      }
      1 => job.coeffs.step_scale = job.coeffs.step_scale_for(norm(), plan.len),
      _ => {}
    }
  }

  fn step_reference<T: Float>(job: &mut Job<'_, T, AdafactorCoeffs>) {
    let c = job.coeffs;
    let n = job.dims.len();
    if n == 0 {
      return;
    }
    let plan = Plan::new(job.dims);
    let cast = T::from_f64;
    let w = cast(c.grad_sq_weight);
    let lerp = |x: T, y: T| if w.abs() < cast(0.5) { w.mul_add(y - x, x) } else { (w - T::ONE).mul_add(y - x, y) };
    let grad: Vec<T> = job.grad.iter().map(|&g| if c.maximize { -g } else { g }).collect();
    let param_norm = cast(sum_of_squares_by_block(job.param, plan.block).sqrt()).to_f64();
    let alpha = c.alpha_for(param_norm, n);
    for p in job.param.iter_mut() {
      *p = *p * cast(c.decay_factor);
    }
    let mut estimate = vec![T::ZERO; n];
    if plan.factored {
      let (batches, m, k) = (job.dims.batches, plan.rows, plan.cols);
      let [row_var, col_var, _] = &mut job.buffers;
      let mean_of_squares = |sum: f64, count: usize| {
        let norm = cast(sum.sqrt());
        norm * norm / cast(count as f64)
      };
      for row in 0..batches * m {
        let mut sum = SumSquares::default();
        grad[row * k..(row + 1) * k].iter().for_each(|&g| sum.push(g));
        row_var[row] = lerp(row_var[row], mean_of_squares(sum.total(), k));
      }
      for b in 0..batches {
        for j in 0..k {
          let sum = (0..m).map(|i| grad[(b * m + i) * k + j].to_f64()).fold(0.0, |s, g| s + g * g);
          col_var[b * k + j] = lerp(col_var[b * k + j], mean_of_squares(sum, m));
        }
        let mean = cast(row_var[b * m..(b + 1) * m].iter().fold(0.0, |s, &r| s + r.to_f64())) / cast(m as f64);
        let eps1 = cast(c.eps1::<T>());
        let mean = if mean < eps1 { eps1 } else { mean };
        for i in 0..m {
          for j in 0..k {
            estimate[(b * m + i) * k + j] = row_var[b * m + i] * col_var[b * k + j] / mean;
          }
        }
      }
    } else {
      let variance = &mut job.buffers[2];
      for i in 0..n {
        variance[i] = lerp(variance[i], grad[i] * grad[i]);
        estimate[i] = variance[i];
      }
    }
    let floor = cast(c.eps1::<T>() * c.eps1::<T>());
    let update: Vec<T> = estimate
      .iter()
      .zip(&grad)
      .map(|(&v, &g)| {
        let v = if v < floor { floor } else { v };
        (T::ONE / v.sqrt()) * g
      })
      .collect();
    let update_norm = cast(sum_of_squares_by_block(&update, plan.block).sqrt()).to_f64();
    let scale = cast(AdafactorCoeffs { alpha, ..c }.step_scale_for(update_norm, n));
    for (p, u) in job.param.iter_mut().zip(update) {
      *p = u.mul_add(scale, *p);
    }
  }
}

/// Fewest elements in a block; blocks grow with the tensor up to [`MAX_PIECE_ELEMENTS`], so that
/// a large tensor is a few hundred units per stage rather than tens of thousands.
const MIN_BLOCK: usize = PIECE_ELEMENTS;

/// Blocks a tensor is cut into before blocks grow past [`MIN_BLOCK`].
const BLOCKS_PER_TENSOR: usize = 256;

/// A column unit that covers part of a batch's width spans a multiple of this many columns: the
/// row pieces it reads, one a row, are then several whole cache lines, not one per page.
const COLUMN_ALIGN: usize = 64;

/// Columns a column unit sums at once, so that their `f64` sums stay on the stack.
const COLUMN_CHUNK: usize = 64;

/// Rows narrower than this are walked element by element (see [`Estimates`]).
const NARROW: usize = 16;

/// Batches whose mean row factors a block unit copies onto its stack at once.
const MEAN_CHUNK: usize = 64;

/// How a tensor's stages are cut into units: a function of its shape only.
///
/// Blocks are ranges of `block` elements in row-major order (the last may be shorter). Stages 1
/// and 2 run one unit per block; stage 0 one per block for p's sum of squares (and V of an
/// unfactored tensor), plus, for a factored tensor, row units of `row_block` whole rows (counted
/// over all batches) and column units of `col_width` columns of one batch, or of
/// `batch_group` whole batches where a batch is small.
///
/// Partial slots: one per block for its sum of squares; then, factored, the clamped mean row
/// factor of every batch a block touches, a copy for each such block ([`Plan::mean_slot`]).
#[derive(Clone, Copy, Debug)]
struct Plan {
  len: usize,
  factored: bool,
  batches: usize,
  rows: usize,
  cols: usize,
  block: usize,
  blocks: usize,
  row_block: usize,
  row_units: usize,
  col_width: usize,
  col_groups: usize,
  batch_group: usize,
  col_units: usize,
}

impl Plan {
  fn new(dims: Dims) -> Plan {
    let len = dims.len();
    let factored = dims.ndim >= 2 && len > 0;
    let (rows, cols) = (dims.rows.max(1), dims.cols.max(1));
    let block = (len / BLOCKS_PER_TENSOR / MIN_BLOCK * MIN_BLOCK).clamp(MIN_BLOCK, MAX_PIECE_ELEMENTS);
    let row_block = block.div_ceil(cols);
    let col_width = block.div_ceil(rows).next_multiple_of(COLUMN_ALIGN).min(cols);
    let col_groups = cols.div_ceil(col_width);
    let batch_group = if col_groups == 1 { (block / (rows * cols)).max(1) } else { 1 };
    Plan {
      len,
      factored,
      batches: dims.batches,
      rows,
      cols,
      block,
      blocks: len.div_ceil(block),
      row_block,
      row_units: if factored { (dims.batches * rows).div_ceil(row_block) } else { 0 },
      col_width,
      col_groups,
      batch_group,
      col_units: if factored { dims.batches.div_ceil(batch_group) * col_groups } else { 0 },
    }
  }

  /// Partial slots in all (see [`Plan`]).
  fn partials(&self) -> usize {
    match self.len {
      0 => 0,
      _ if self.factored => 2 * self.blocks + self.batches - 1,
      _ => self.blocks,
    }
  }

  /// Where block `block` finds the mean row factor of `batch`. A block's first batch is at least
  /// its predecessor's last, so `block + batch` grows from block to block: no two share a slot.
  fn mean_slot(&self, block: usize, batch: usize) -> usize {
    self.blocks + block + batch
  }

  fn block_range(&self, unit: usize) -> Range<usize> {
    unit * self.block..((unit + 1) * self.block).min(self.len)
  }

  /// The batches and columns of column unit `unit`: some whole batches, or some columns of one.
  fn columns_of(&self, unit: usize) -> (Range<usize>, Range<usize>) {
    let (group, part) = (unit / self.col_groups, unit % self.col_groups);
    let batches = group * self.batch_group..((group + 1) * self.batch_group).min(self.batches);
    let first = part * self.col_width;
    (batches, first..(first + self.col_width).min(self.cols))
  }
}

/// Row unit `unit` of stage 0: R ← lerp(R, ‖g row‖²/k, w) for its rows.
///
/// # Safety
/// No other unit of the stage may touch those rows of R.
unsafe fn rows_unit<T: Float>(plan: &Plan, unit: usize, tensor: &Tensor<'_, T, AdafactorCoeffs>) -> bool {
  let first = unit * plan.row_block;
  let rows = first..(first + plan.row_block).min(plan.batches * plan.rows);
  let grad = &tensor.grad()[rows.start * plan.cols..rows.end * plan.cols];
  let k = FactorScalars::new(tensor.coeffs.grad_sq_weight, plan, 0..plan.cols);
  // SAFETY: this unit owns these rows (the caller's guarantee).
  row_factors_best(&k, unsafe { tensor.buffer(0, rows) }, grad);
  false
}

/// Column unit `unit` of stage 0: C ← lerp(C, ‖g column‖²/m, w) for its columns, each summed
/// down its rows in order.
///
/// # Safety
/// No other unit of the stage may touch those columns of C.
unsafe fn columns_unit<T: Float>(plan: &Plan, unit: usize, tensor: &Tensor<'_, T, AdafactorCoeffs>) -> bool {
  let (batches, columns) = plan.columns_of(unit);
  let batch_len = plan.rows * plan.cols;
  let grad = &tensor.grad()[batches.start * batch_len..batches.end * batch_len];
  let owned = batches.start * plan.cols + columns.start..(batches.end - 1) * plan.cols + columns.end;
  let k = FactorScalars::new(tensor.coeffs.grad_sq_weight, plan, columns);
  // SAFETY: this unit owns these columns (the caller's guarantee).
  column_factors_best(&k, unsafe { tensor.buffer(1, owned) }, grad);
  false
}

/// Block unit `unit` of stage 0: the sum of squares of p over the block, and, unfactored,
/// V ← lerp(V, g², w) over it.
///
/// # Safety
/// No other unit of the stage may touch the block's elements of p and V or partial slot `unit`.
unsafe fn first_block_unit<T: Float>(plan: &Plan, unit: usize, tensor: &Tensor<'_, T, AdafactorCoeffs>) -> bool {
  let range = plan.block_range(unit);
  let mut sum = SumSquares::default();
  // SAFETY: this unit owns the block and its slot (the caller's guarantee); p is only read.
  unsafe {
    sum_squares_best(&mut sum, tensor.param(range.clone()));
    if !plan.factored {
      let lerp = Lerp::new(tensor.coeffs.grad_sq_weight);
      lerp_squares_best(&lerp, tensor.buffer(2, range.clone()), &tensor.grad()[range]);
    }
    *tensor.partial(unit) = sum.total();
  }
  false
}

/// Block unit `unit` of stage 1 (`write` false): the sum of squares of U over the block; it reads
/// each gradient element once, so it says whether one is not finite. Of stage 2 (`write` true):
/// p ← fma(U, −α/denom, p·(1 − γλ)) over the block, U computed again.
///
/// # Safety
/// No other unit of the stage may touch the block's elements of p or its partial slots, and none
/// may write R, C or V.
unsafe fn update_block_unit<T: Float>(
  plan: &Plan,
  unit: usize,
  tensor: &Tensor<'_, T, AdafactorCoeffs>,
  write: bool,
) -> bool {
  let range = plan.block_range(unit);
  let grad = tensor.grad();
  let k = UpdateScalars::<T>::new(&tensor.coeffs);
  let mut sum = SumSquares::default();
  // SAFETY: as this function's: the block of p and the slots belong to this unit, and nobody
  // writes the buffers read here.
  unsafe {
    if plan.factored {
      let (row_var, col_var) = (tensor.buffer_ref(0), tensor.buffer_ref(1));
      let batch_len = plan.rows * plan.cols;
      let mut at = range.start;
      while at < range.end {
        let first_batch = at / batch_len;
        let end = ((first_batch + MEAN_CHUNK) * batch_len).min(range.end);
        let batches = first_batch..(end - 1) / batch_len + 1;
        let mut means = [T::ZERO; MEAN_CHUNK];
        for (mean, batch) in means.iter_mut().zip(batches.clone()) {
          *mean = T::from_f64(*tensor.partial(plan.mean_slot(unit, batch)));
        }
        let segment = Segment { k, start: at, rows: plan.rows, cols: plan.cols, first_batch };
        let factors = Factors { row_var, col_var, means: &means[..batches.len()] };
        if write {
          factored_apply_best(&segment, &factors, tensor.param(at..end), &grad[at..end]);
        } else {
          factored_squares_best(&segment, &factors, &mut sum, &grad[at..end]);
        }
        at = end;
      }
    } else {
      let variance = &tensor.buffer_ref(2)[range.clone()];
      if write {
        unfactored_apply_best(&k, tensor.param(range.clone()), &grad[range.clone()], variance);
      } else {
        unfactored_squares_best(&k, &mut sum, &grad[range.clone()], variance);
      }
    }
    if !write {
      *tensor.partial(unit) = sum.total();
    }
  }
  !write && any_non_finite(&grad[range])
}

/// The sum of squares of `xs` in blocks of `block` elements, each summed as a unit sums it, the
/// blocks' sums added in order.
fn sum_of_squares_by_block<T: Float>(xs: &[T], block: usize) -> f64 {
  let sums: Vec<f64> = xs
    .chunks(block)
    .map(|chunk| {
      let mut sum = SumSquares::default();
      chunk.iter().for_each(|&x| sum.push(x));
      sum.total()
    })
    .collect();
  fold(&sums)
}

/// Partial sums added in order.
fn fold(sums: &[f64]) -> f64 {
  sums.iter().fold(0.0, |total, &x| total + x)
}

/// ‖x‖²/count from Σx², as PyTorch gets it: the norm rounded to the dtype, squared, divided.
#[inline(always)]
fn mean_of_squares<T: Float>(sum: f64, count: usize) -> T {
  let norm = T::from_f64(sum.sqrt());
  norm * norm / T::from_f64(count as f64)
}

/// A sum of squares in `f64` whose value depends only on the sequence of elements, not on how
/// it is cut into calls: element i goes to lane i mod [`LANES`], each lane adds in order, and the
/// lanes are added in a fixed order at the end. So a unit that meets its elements a row at a
/// time and the reference that meets them one by one agree to the bit, and the lanes let the
/// loop run as vectors.
#[derive(Clone, Copy, Debug, Default)]
struct SumSquares {
  lanes: [f64; LANES],
  count: usize,
}

const LANES: usize = 8;

impl SumSquares {
  #[inline(always)]
  fn push<T: Float>(&mut self, x: T) {
    let x = x.to_f64();
    self.lanes[self.count % LANES] += x * x;
    self.count += 1;
  }

  /// Pushes `f(a[i], b[i])` for each i. Whole chunks of [`LANES`] elements add into a copy of the
  /// lanes, so that they stay in registers and the chunk runs as vectors.
  #[inline(always)]
  fn extend<T: Float>(&mut self, a: &[T], b: &[T], f: impl Fn(T, T) -> T) {
    let b = &b[..a.len()];
    let head = ((LANES - self.count % LANES) % LANES).min(a.len());
    for (&x, &y) in a[..head].iter().zip(&b[..head]) {
      self.push(f(x, y));
    }
    let (a, b) = (a[head..].chunks_exact(LANES), b[head..].chunks_exact(LANES));
    let (a_rest, b_rest) = (a.remainder(), b.remainder());
    let mut lanes = self.lanes;
    let mut whole = 0;
    for (a, b) in a.zip(b) {
      for lane in 0..LANES {
        let v = f(a[lane], b[lane]).to_f64();
        lanes[lane] += v * v;
      }
      whole += LANES;
    }
    self.lanes = lanes;
    self.count += whole;
    for (&x, &y) in a_rest.iter().zip(b_rest) {
      self.push(f(x, y));
    }
  }

  fn total(&self) -> f64 {
    tree(self.lanes)
  }
}

/// The lanes of a [`SumSquares`] added in its fixed order.
#[inline(always)]
fn tree(l: [f64; LANES]) -> f64 {
  ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]))
}

/// What the factor kernels need: the lerp, the batch shape, and the columns a unit covers.
#[derive(Clone, Copy, Debug)]
struct FactorScalars<T> {
  lerp: Lerp<T>,
  rows: usize,
  cols: usize,
  first_col: usize,
  width: usize,
}

impl<T: Float> FactorScalars<T> {
  fn new(weight: f64, plan: &Plan, columns: Range<usize>) -> Self {
    FactorScalars {
      lerp: Lerp::new(weight),
      rows: plan.rows,
      cols: plan.cols,
      first_col: columns.start,
      width: columns.len(),
    }
  }
}

/// The scalars that turn a gradient element and its variance estimate into U, and U into the
/// update, rounded to the dtype.
#[derive(Clone, Copy, Debug)]
struct UpdateScalars<T> {
  /// −1 to maximize, else 1.
  sign: T,
  /// ε₁², squared in `f64`.
  floor: T,
  decay_factor: T,
  step_scale: T,
}

impl<T: Float> UpdateScalars<T> {
  fn new(c: &AdafactorCoeffs) -> Self {
    let eps1 = c.eps1::<T>();
    UpdateScalars {
      sign: if c.maximize { -T::ONE } else { T::ONE },
      floor: T::from_f64(eps1 * eps1),
      decay_factor: T::from_f64(c.decay_factor),
      step_scale: T::from_f64(c.step_scale),
    }
  }

  /// U of gradient element `g` with variance estimate `v`.
  #[inline(always)]
  fn update(&self, g: T, v: T) -> T {
    let v = if v < self.floor { self.floor } else { v };
    (T::ONE / v.sqrt()) * (g * self.sign)
  }

  /// The new value of `p`, whose update is `u`. `p·decay_factor` is exact when the factor is 1.
  #[inline(always)]
  fn apply(&self, p: T, u: T) -> T {
    u.mul_add(self.step_scale, p * self.decay_factor)
  }
}

/// Where a run of a factored block starts, and the shape it walks.
#[derive(Clone, Copy, Debug)]
struct Segment<T> {
  k: UpdateScalars<T>,
  /// Its first element's index in the tensor.
  start: usize,
  rows: usize,
  cols: usize,
  /// The batch of its first element; `Factors::means` starts there.
  first_batch: usize,
}

/// The factors a run of a factored block reads: all of R and C, and the clamped mean row
/// factors of the batches it touches.
#[derive(Clone, Copy, Debug)]
struct Factors<'a, T> {
  row_var: &'a [T],
  col_var: &'a [T],
  means: &'a [T],
}

/// Elements of a run of a factored block whose variance estimates are made at once.
const GATHER: usize = 64;

/// Walks a run of a factored block, making the variance estimates of [`GATHER`] elements at a
/// time ([`Estimates::next`]): from one row piece at a time, or, for rows narrower than
/// [`NARROW`], gathered element by element across rows. A cursor rather than a function taking
/// a closure, so that the kernels' loops stay in the kernels, compiled with their instruction
/// set.
struct Estimates<'s, 'f, T> {
  s: &'s Segment<T>,
  f: &'s Factors<'f, T>,
  /// Elements of the run.
  len: usize,
  /// Elements done.
  done: usize,
  row: usize,
  col: usize,
  /// Counted from `s.first_batch`.
  batch: usize,
  row_in_batch: usize,
  estimates: [T; GATHER],
  means: [T; GATHER],
}

impl<'s, 'f, T: Float> Estimates<'s, 'f, T> {
  #[inline(always)]
  fn new(s: &'s Segment<T>, f: &'s Factors<'f, T>, len: usize) -> Self {
    let (row, col) = (s.start / s.cols, s.start % s.cols);
    let (batch, row_in_batch) = (row / s.rows - s.first_batch, row % s.rows);
    Estimates {
      s,
      f,
      len,
      done: 0,
      row,
      col,
      batch,
      row_in_batch,
      estimates: [T::ZERO; GATHER],
      means: [T::ONE; GATHER],
    }
  }

  /// The next elements (indices into the run) and their variance estimates fl(R·C)/mean.
  #[inline(always)]
  fn next(&mut self) -> Option<(Range<usize>, &[T])> {
    let (s, f) = (self.s, self.f);
    let from = self.done;
    if from == self.len {
      return None;
    }
    let len;
    if s.cols < NARROW {
      len = GATHER.min(self.len - from);
      for j in 0..len {
        self.estimates[j] = f.row_var[self.row] * f.col_var[(s.first_batch + self.batch) * s.cols + self.col];
        self.means[j] = f.means[self.batch];
        self.col += 1;
        if self.col == s.cols {
          self.next_row();
        }
      }
      for (v, &m) in self.estimates[..len].iter_mut().zip(&self.means[..len]) {
        *v = *v / m;
      }
    } else {
      len = (s.cols - self.col).min(self.len - from).min(GATHER);
      let (row_var, mean) = (f.row_var[self.row], f.means[self.batch]);
      let at = (s.first_batch + self.batch) * s.cols + self.col;
      for (v, &c) in self.estimates[..len].iter_mut().zip(&f.col_var[at..at + len]) {
        *v = row_var * c / mean;
      }
      self.col += len;
      if self.col == s.cols {
        self.next_row();
      }
    }
    self.done += len;
    Some((from..from + len, &self.estimates[..len]))
  }

  #[inline(always)]
  fn next_row(&mut self) {
    self.col = 0;
    self.row += 1;
    self.row_in_batch += 1;
    if self.row_in_batch == self.s.rows {
      self.row_in_batch = 0;
      self.batch += 1;
    }
  }
}

multiversion!(fn sum_squares_best<T: Float>(sum: &mut SumSquares, xs: &[T]) => sum_squares);

#[inline(always)]
fn sum_squares<T: Float>(sum: &mut SumSquares, xs: &[T]) {
  sum.extend(xs, xs, |x, _| x);
}

multiversion!(fn row_factors_best<T: Float>(k: &FactorScalars<T>, row_var: &mut [T], grad: &[T]) => row_factors);

/// R ← lerp(R, ‖g row‖²/k, w) for the rows of `grad`.
#[inline(always)]
fn row_factors<T: Float>(k: &FactorScalars<T>, row_var: &mut [T], grad: &[T]) {
  match k.cols {
    1 => narrow_row_factors::<T, 1>(k, row_var, grad),
    2 => narrow_row_factors::<T, 2>(k, row_var, grad),
    3 => narrow_row_factors::<T, 3>(k, row_var, grad),
    4 => narrow_row_factors::<T, 4>(k, row_var, grad),
    5 => narrow_row_factors::<T, 5>(k, row_var, grad),
    6 => narrow_row_factors::<T, 6>(k, row_var, grad),
    7 => narrow_row_factors::<T, 7>(k, row_var, grad),
    _ => {
      for (r, row) in row_var.iter_mut().zip(grad.chunks_exact(k.cols)) {
        let mut sum = SumSquares::default();
        sum.extend(row, row, |x, _| x);
        *r = k.lerp.apply(*r, mean_of_squares(sum.total(), k.cols));
      }
    }
  }
}

/// [`row_factors`] for rows of `N` < [`LANES`] elements, each in a lane of its own: the same
/// sum, with the row's length known to the compiler.
#[inline(always)]
fn narrow_row_factors<T: Float, const N: usize>(k: &FactorScalars<T>, row_var: &mut [T], grad: &[T]) {
  for (r, row) in row_var.iter_mut().zip(grad.chunks_exact(N)) {
    let mut lanes = [0.0; LANES];
    for (lane, &g) in lanes.iter_mut().zip(row) {
      *lane = g.to_f64() * g.to_f64();
    }
    *r = k.lerp.apply(*r, mean_of_squares(tree(lanes), N));
  }
}

multiversion!(fn column_factors_best<T: Float>(k: &FactorScalars<T>, col_var: &mut [T], grad: &[T]) => column_factors);

/// C ← lerp(C, ‖g column‖²/m, w) for `k.width` columns from `k.first_col` of each whole batch
/// in `grad`, whose factors `col_var` holds one batch after another.
#[inline(always)]
fn column_factors<T: Float>(k: &FactorScalars<T>, col_var: &mut [T], grad: &[T]) {
  match k.width {
    1 if k.cols == 1 => return narrow_column_factors::<T, 1>(k, col_var, grad),
    2 if k.cols == 2 => return narrow_column_factors::<T, 2>(k, col_var, grad),
    3 if k.cols == 3 => return narrow_column_factors::<T, 3>(k, col_var, grad),
    4 if k.cols == 4 => return narrow_column_factors::<T, 4>(k, col_var, grad),
    5 if k.cols == 5 => return narrow_column_factors::<T, 5>(k, col_var, grad),
    6 if k.cols == 6 => return narrow_column_factors::<T, 6>(k, col_var, grad),
    7 if k.cols == 7 => return narrow_column_factors::<T, 7>(k, col_var, grad),
    _ => {}
  }
  let mut sums = [0.0f64; COLUMN_CHUNK];
  for (col_var, batch) in col_var.chunks_mut(k.width).zip(grad.chunks_exact(k.rows * k.cols)) {
    for (first, col_var) in (k.first_col..).step_by(COLUMN_CHUNK).zip(col_var.chunks_mut(COLUMN_CHUNK)) {
      let width = col_var.len();
      let sums = &mut sums[..width];
      sums.fill(0.0);
      for row in batch.chunks_exact(k.cols) {
        for (sum, &g) in sums.iter_mut().zip(&row[first..first + width]) {
          let g = g.to_f64();
          *sum += g * g;
        }
      }
      for (c, &sum) in col_var.iter_mut().zip(sums.iter()) {
        *c = k.lerp.apply(*c, mean_of_squares(sum, k.rows));
      }
    }
  }
}

/// [`column_factors`] for whole batches of `N` < [`LANES`] columns, whose sums then stay in
/// registers: the same sums, in the same order.
#[inline(always)]
fn narrow_column_factors<T: Float, const N: usize>(k: &FactorScalars<T>, col_var: &mut [T], grad: &[T]) {
  for (col_var, batch) in col_var.chunks_exact_mut(N).zip(grad.chunks_exact(k.rows * N)) {
    let mut sums = [0.0f64; N];
    for row in batch.chunks_exact(N) {
      for (sum, &g) in sums.iter_mut().zip(row) {
        *sum += g.to_f64() * g.to_f64();
      }
    }
    for (c, sum) in col_var.iter_mut().zip(sums) {
      *c = k.lerp.apply(*c, mean_of_squares(sum, k.rows));
    }
  }
}

multiversion!(fn lerp_squares_best<T: Float>(lerp: &Lerp<T>, variance: &mut [T], grad: &[T]) => lerp_squares);

/// V ← lerp(V, g², w); the sign of g does not matter.
#[inline(always)]
fn lerp_squares<T: Float>(lerp: &Lerp<T>, variance: &mut [T], grad: &[T]) {
  let grad = &grad[..variance.len()];
  for (v, &g) in variance.iter_mut().zip(grad) {
    *v = lerp.apply(*v, g * g);
  }
}

multiversion!(fn unfactored_squares_best<T: Float>(k: &UpdateScalars<T>, sum: &mut SumSquares, grad: &[T], variance: &[T]) => unfactored_squares);

#[inline(always)]
fn unfactored_squares<T: Float>(k: &UpdateScalars<T>, sum: &mut SumSquares, grad: &[T], variance: &[T]) {
  sum.extend(grad, variance, |g, v| k.update(g, v));
}

multiversion!(fn unfactored_apply_best<T: Float>(k: &UpdateScalars<T>, param: &mut [T], grad: &[T], variance: &[T]) => unfactored_apply);

#[inline(always)]
fn unfactored_apply<T: Float>(k: &UpdateScalars<T>, param: &mut [T], grad: &[T], variance: &[T]) {
  let (grad, variance) = (&grad[..param.len()], &variance[..param.len()]);
  for ((p, &g), &v) in param.iter_mut().zip(grad).zip(variance) {
    *p = k.apply(*p, k.update(g, v));
  }
}

multiversion!(fn factored_squares_best<T: Float>(s: &Segment<T>, f: &Factors<'_, T>, sum: &mut SumSquares, grad: &[T]) => factored_squares);

/// Adds the squares of U over a run of a factored block.
#[inline(always)]
fn factored_squares<T: Float>(s: &Segment<T>, f: &Factors<'_, T>, sum: &mut SumSquares, grad: &[T]) {
  let mut estimates = Estimates::new(s, f, grad.len());
  while let Some((range, estimates)) = estimates.next() {
    sum.extend(&grad[range], estimates, |g, v| s.k.update(g, v));
  }
}

multiversion!(fn factored_apply_best<T: Float>(s: &Segment<T>, f: &Factors<'_, T>, param: &mut [T], grad: &[T]) => factored_apply);

/// Updates a run of a factored block.
#[inline(always)]
fn factored_apply<T: Float>(s: &Segment<T>, f: &Factors<'_, T>, param: &mut [T], grad: &[T]) {
  let mut estimates = Estimates::new(s, f, grad.len());
  while let Some((range, estimates)) = estimates.next() {
    for ((p, &g), &v) in param[range.clone()].iter_mut().zip(&grad[range]).zip(estimates) {
      *p = s.k.apply(*p, s.k.update(g, v));
    }
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::config::Options;
  use crate::engine::run::run;
  use crate::engine::state::{Buffers, Element, ParamState};
  use crate::engine::threads::{num_threads, set_num_threads};
  use crate::optimizers::buffer_lens;
  use crate::testing::{assert_rejects, buffers_f64, packed_with, same_bits, values};

  /// 0-D to 4-D, factored and not: single and many blocks and units, narrow and wide rows, one
  /// row or column, batches smaller than a block (a 3×3 and a 1×1 convolution) and larger.
  const SHAPES: &[&[usize]] = &[
    &[],
    &[1],
    &[7],
    &[0],
    &[9000],
    &[1 << 20 | 5],
    &[1, 1],
    &[1, 9],
    &[9, 1],
    &[5, 3],
    &[0, 3],
    &[300, 700],
    &[1, 5000],
    &[5000, 1],
    &[20000, 3],
    &[2, 4, 6],
    &[3, 50, 70],
    &[2, 3000, 2],
    &[3, 1, 5000],
    &[64, 32, 3, 3],
    &[256, 64, 1, 1],
  ];

  fn configs() -> Vec<Adafactor> {
    let base = Adafactor::default();
    vec![
      base,
      Adafactor { lr: 0.05, weight_decay: 0.1, maximize: true, ..base },
      Adafactor { beta2_decay: -0.5, d: 2.0, ..base },
      // ε₁ = 0.5 floors the mean row factor and V; ε₂ = 0.1 floors RMS(p) for the 1e-20 values.
      Adafactor { eps: (Some(0.5), 0.1), lr: 0.4, ..base },
      Adafactor { beta2_decay: 0.0, eps: (Some(0.0), 0.0), ..base },
    ]
  }

  /// Parameters of `shapes` (`values`), stepped `steps` times with gradients `values`: every
  /// tensor in one engine run per step, or one by one through the reference.
  fn trajectory<T: Element>(
    config: Adafactor,
    shapes: &[&[usize]],
    steps: u64,
    engine: bool,
  ) -> Vec<(Vec<T>, ParamState)> {
    let mut tensors: Vec<(Vec<T>, ParamState)> = (0..shapes.len())
      .map(|i| (values::<T>(Dims::of(shapes[i]).len(), i as u64 + 1), ParamState::default()))
      .collect();
    for step in 1..=steps {
      let grads: Vec<Vec<T>> =
        (0..shapes.len()).map(|i| values::<T>(Dims::of(shapes[i]).len(), 1000 * step + i as u64)).collect();
      let mut jobs = Vec::new();
      for ((shape, (param, state)), grad) in shapes.iter().zip(&mut tensors).zip(&grads) {
        state.step += 1;
        let coeffs = config.coeffs(state.step);
        let dims = Dims::of(shape);
        let (buffers, partials) =
          state.step_parts::<T>(&buffer_lens::<Adafactor>(dims), 3, Adafactor::partials_len(dims));
        jobs.push(Job::new(coeffs, param, grad, buffers, dims, partials));
      }
      if engine {
        run::<Adafactor, T>(&mut jobs);
      } else {
        jobs.iter_mut().for_each(Adafactor::step_reference);
      }
    }
    tensors
  }

  fn same_state(a: &ParamState, b: &ParamState) -> bool {
    let (a, b) = (buffers_f64(a), buffers_f64(b));
    a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| same_bits(x, y))
  }

  fn assert_engine_matches_reference<T: Element>() {
    let threads = num_threads();
    for config in configs() {
      let expected = trajectory::<T>(config, SHAPES, 4, false);
      for n in [1, 2, 5] {
        set_num_threads(n).unwrap();
        let got = trajectory::<T>(config, SHAPES, 4, true);
        for ((shape, (param, state)), (want, want_state)) in SHAPES.iter().zip(&got).zip(&expected) {
          let what = format!("{:?} {shape:?} on {n} threads, {config:?}", T::DTYPE);
          assert!(same_bits(param, want), "parameter of {what}");
          assert!(same_state(state, want_state), "state of {what}");
        }
      }
    }
    set_num_threads(threads).unwrap();
  }

  #[test]
  fn staged_engine_matches_reference_bit_for_bit_on_any_thread_count() {
    assert_engine_matches_reference::<f32>();
    assert_engine_matches_reference::<f64>();
  }

  #[test]
  fn units_own_disjoint_parts_that_cover_the_tensor() {
    for shape in SHAPES.iter().copied().chain([&[7, 300, 5][..], &[100, 9, 4097], &[1, 1, 1], &[40000, 2, 2]]) {
      let dims = Dims::of(shape);
      let plan = Plan::new(dims);
      let mut elements = vec![0; plan.len];
      (0..plan.blocks).for_each(|u| plan.block_range(u).for_each(|i| elements[i] += 1));
      assert!(elements.iter().all(|&n| n == 1), "blocks of {shape:?}");
      if !plan.factored {
        assert_eq!((plan.row_units, plan.col_units, Adafactor::partials_len(dims)), (0, 0, plan.blocks));
        continue;
      }
      let mut rows = vec![0; dims.batches * dims.rows];
      for u in 0..plan.row_units {
        let first = u * plan.row_block;
        (first..(first + plan.row_block).min(rows.len())).for_each(|r| rows[r] += 1);
      }
      assert!(rows.iter().all(|&n| n == 1), "rows of {shape:?}");
      let mut columns = vec![0; dims.batches * dims.cols];
      for u in 0..plan.col_units {
        let (batches, cols) = plan.columns_of(u);
        assert!(!batches.is_empty() && !cols.is_empty());
        batches.for_each(|b| cols.clone().for_each(|c| columns[b * dims.cols + c] += 1));
      }
      assert!(columns.iter().all(|&n| n == 1), "columns of {shape:?}");
      // The blocks' own slots, then each (block, batch it touches) once.
      let mut slots = vec![0; Adafactor::partials_len(dims)];
      (0..plan.blocks).for_each(|u| slots[u] += 1);
      let batch_len = dims.rows * dims.cols;
      for u in 0..plan.blocks {
        let range = plan.block_range(u);
        (range.start / batch_len..=(range.end - 1) / batch_len).for_each(|b| slots[plan.mean_slot(u, b)] += 1);
      }
      assert!(slots.iter().all(|&n| n <= 1), "partial slots of {shape:?}");
    }
  }

  #[test]
  fn state_is_factored_for_two_or_more_dimensions() {
    let config = Adafactor::default();
    let states = trajectory::<f32>(config, &[&[], &[7], &[5, 3], &[2, 4, 6]], 1, true);
    let lens: Vec<Vec<usize>> = states.iter().map(|(_, s)| buffers_f64(s).iter().map(Vec::len).collect()).collect();
    assert_eq!(lens, [vec![0, 0, 1], vec![0, 0, 7], vec![5, 3, 0], vec![8, 12, 0]]);
    assert!(states.iter().all(|(_, s)| matches!(s.buffers, Buffers::F32(_))));
  }

  fn step_f64(config: Adafactor, shape: &[usize], param: &mut [f64], grad: &[f64]) -> ParamState {
    let mut state = ParamState { step: 1, ..ParamState::default() };
    let dims = Dims::of(shape);
    let (buffers, partials) =
      state.step_parts::<f64>(&buffer_lens::<Adafactor>(dims), 3, Adafactor::partials_len(dims));
    run::<Adafactor, f64>(&mut [Job::new(config.coeffs(1), param, grad, buffers, dims, partials)]);
    state
  }

  #[test]
  fn first_step_derived_by_hand() {
    let config = Adafactor::default();
    // t = 1: w = 1, so V = g² exactly, U = sign(g) and RMS(U) = 1 (no clipping); ρ = γ = 0.01 and
    // RMS(p) = √((9 + 16)/2) = √12.5, so each element moves by 0.01·√12.5 against its gradient.
    let mut param = [3.0, -4.0];
    let state = step_f64(config, &[2], &mut param, &[0.5, -2.0]);
    let step = 0.01 * 12.5f64.sqrt();
    assert_eq!(param, [3.0 - step, -4.0 + step]);
    assert_eq!(buffers_f64(&state)[2], [0.25, 4.0]);

    // g = a·bᵀ with a = (1, 2), b = (1, 3): g² has rank one, so the factored estimate is exact.
    // Row means of g² (1, 9; 4, 36): 5, 20; column means: 2.5, 22.5; mean row factor 12.5; and
    // V = R·Cᵀ/12.5 = g². So again U = sign(g) = 1, and p moves by −0.01·RMS(p) = −0.01·√7.5.
    let mut param = [1.0, -2.0, 3.0, 4.0];
    let state = step_f64(config, &[2, 2], &mut param, &[1.0, 3.0, 2.0, 6.0]);
    let step = 0.01 * 7.5f64.sqrt();
    let expected = [1.0 - step, -2.0 - step, 3.0 - step, 4.0 - step];
    assert!(param.iter().zip(expected).all(|(p, e)| (p - e).abs() <= 1e-15), "{param:?}");
    // The means are ‖row‖²/k with the norm rounded before it is squared, as PyTorch's
    // `vector_norm(...).square_()`: an ulp above the exact 5, 20, 2.5 and 22.5, as in PyTorch.
    let factors = [vec![5.000000000000001, 20.000000000000004], vec![2.5000000000000004, 22.500000000000004]];
    assert_eq!(buffers_f64(&state)[..2], factors);

    // A zero gradient element has V = 0, floored at ε₁²: its U is 0 and it does not move, but it
    // counts in RMS(U) = √(2/3) < 1. A parameter of zeros takes α from ε₂: 1e-3·0.01.
    let mut param = [0.0; 3];
    step_f64(config, &[3], &mut param, &[0.0, 1.0, -1.0]);
    assert_eq!(param, [0.0, -1e-5, 1e-5]);
  }

  #[test]
  fn clipping_scales_the_update_to_rms_d() {
    // Step 2 of a gradient that was 0 on step 1: V = w·g² with w = 2^−0.8, so U = g/√(w·g²)
    // = sign(g)/√w, RMS(U) = 1/√w > 1 = d, and the update is clipped back to sign(g).
    let config = Adafactor::default();
    let mut param = vec![1.0f64, -1.0];
    let mut state = ParamState::default();
    for (t, grad) in [(1, [0.0, 0.0]), (2, [2.0, -3.0])] {
      state.step = t;
      let dims = Dims::of(&[2]);
      let (buffers, partials) =
        state.step_parts::<f64>(&buffer_lens::<Adafactor>(dims), 3, Adafactor::partials_len(dims));
      let job = Job::new(config.coeffs(t), &mut param, &grad, buffers, dims, partials);
      run::<Adafactor, f64>(&mut [job]);
    }
    // Step 1 moved nothing (U = 0); step 2 moves by ρ·RMS(p) = 0.01·1 against the gradient.
    assert!((param[0] - 0.99).abs() < 1e-15 && (param[1] + 0.99).abs() < 1e-15, "{param:?}");
  }

  #[test]
  fn coefficients_follow_the_schedule() {
    let config = Adafactor { lr: 0.4, beta2_decay: -0.5, ..Adafactor::default() };
    let c = config.coeffs(9);
    assert_eq!((c.grad_sq_weight, c.rho), (9f64.powf(-0.5), 1.0 / 3.0));
    assert_eq!(config.coeffs(1).rho, 0.4);
    assert_eq!(Adafactor { weight_decay: 0.5, ..config }.coeffs(1).decay_factor, 0.8);
    assert_eq!(c.eps1::<f32>(), f64::from(f32::EPSILON));
    assert_eq!(c.eps1::<f64>(), f64::EPSILON);
  }

  #[test]
  fn zero_learning_rate_leaves_parameters_unchanged() {
    let config = Adafactor { lr: 0.0, weight_decay: 0.3, ..Adafactor::default() };
    for (i, (param, _)) in trajectory::<f32>(config, SHAPES, 3, true).iter().enumerate() {
      assert!(same_bits(param, &values::<f32>(param.len(), i as u64 + 1)), "{:?}", SHAPES[i]);
    }
  }

  #[test]
  fn non_finite_gradients_are_reported() {
    let mut param = vec![1.0f32; 40];
    let mut grad = vec![0.5f32; 40];
    grad[33] = f32::NAN;
    let mut state = ParamState { step: 1, ..ParamState::default() };
    let dims = Dims::of(&[4, 10]);
    let (buffers, partials) =
      state.step_parts::<f32>(&buffer_lens::<Adafactor>(dims), 3, Adafactor::partials_len(dims));
    let job = Job::new(Adafactor::default().coeffs(1), &mut param, &grad, buffers, dims, partials);
    assert!(run::<Adafactor, f32>(&mut [job]));
  }

  #[test]
  fn bad_options_are_rejected_with_field_and_value() {
    assert_rejects::<Adafactor>(&[
      ("lr", -1.0, "invalid lr: -1 (expected a finite lr >= 0)"),
      ("beta2_decay", 0.5, "invalid beta2_decay: 0.5 (expected a finite beta2_decay <= 0)"),
      ("beta2_decay", f64::NAN, "invalid beta2_decay: NaN (expected a finite beta2_decay <= 0)"),
      ("eps[0]", -1e-3, "invalid eps[0]: -0.001 (expected null or a finite eps[0] >= 0)"),
      ("eps[1]", f64::NAN, "invalid eps[1]: NaN (expected a finite eps[1] >= 0)"),
      ("d", 0.5, "invalid d: 0.5 (expected a finite d >= 1)"),
      ("weight_decay", -0.1, "invalid weight_decay: -0.1 (expected a finite weight_decay >= 0)"),
      ("maximize", 2.0, "invalid maximize: 2 (expected true or false)"),
    ]);
    let error = Adafactor::from_packed(&packed_with(Adafactor::fields(), &[("beta2_decay", 1.0)])).unwrap_err();
    assert_eq!(error.field(), Some("beta2_decay"));
    assert_eq!(
      error.describe(|name| name.replace("beta2_decay", "beta2Decay")),
      "invalid beta2Decay: 1 (expected a finite beta2Decay <= 0)"
    );
    let packed = packed_with(Adafactor::fields(), &[("eps[0]", f64::NAN), ("beta2_decay", 0.0), ("d", 1.0)]);
    assert_eq!(Adafactor::from_packed(&packed).unwrap(), Adafactor { beta2_decay: 0.0, ..Adafactor::default() });
    assert_eq!(
      Adafactor::from_packed(&packed_with(Adafactor::fields(), &[("eps[0]", 1e-30)])).unwrap().eps,
      (Some(1e-30), 1e-3)
    );
  }
}
