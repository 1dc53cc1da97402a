//! Adam and AdamW.
//!
//! Adam: Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015.
//! AdamW: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.
//! AMSGrad: Reddi, Kale & Kumar, "On the Convergence of Adam and Beyond", ICLR 2018.
//!
//! With learning rate γ, betas β₁ β₂, weight decay λ and step t (1 on the first update), each
//! element of a parameter p with gradient g, first moment m and second moment v (both zero
//! before the first step) is updated as
//!
//! ```text
//! g ← −g                                  if maximize
//! g ← g + λ·p                             Adam (L2 penalty folded into the gradient)
//! p ← p·(1 − γ·λ)                         AdamW (decoupled decay)
//! m ← m + (1 − β₁)·(g − m)                = β₁·m + (1 − β₁)·g
//! v ← β₂·v + (1 − β₂)·g²
//! u ← max(u, v)                           AMSGrad; the denominator then uses u for v
//! p ← p − γ/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε)
//! ```
//!
//! Conventions, all PyTorch's: ε is added after the square root of the bias-corrected second
//! moment (TF1 adds it to the uncorrected one); the moments start at zero and are corrected
//! for that bias; the bias corrections and γ/(1 − β₁ᵗ) are computed once per step in `f64`
//! and rounded to the element type. Rounding follows the vector loop of PyTorch's fused CPU
//! kernel as compiled (its multiply-adds contracted to FMA), so results are bit-identical to it
//! outside its scalar tail (the last `len % 16` elements of a tensor, which it rounds slightly
//! differently): `g ← fma(p, λ, g)`; `m ← fma(1 − β₁, g − m, m)`, or `fma(−β₁, g − m, g)` when
//! 1 − β₁ ≥ 0.5 (a lerp); `v ← fma((1 − β₂)·g, g, β₂·v)`; the rest rounded one operation at a time.

use crate::divide::ExactDivisor;
use crate::engine::bf16::{Bf16, Noise, Storage};
use crate::engine::finite::any_non_finite;
use crate::engine::run::MAX_BUFFERS;
use crate::engine::simd::{self, dispatch, multiversion};
use crate::float::{Float, Lerp, NonFinite};
use crate::optimizers::{Bf16Buffers, Buffer, Gradient, Optimizer};
use crate::powers::power;

#[cfg(target_arch = "x86_64")]
mod avx512;

crate::options! {
  /// Adam's options (PyTorch's `torch.optim.Adam`).
  pub struct Adam {
    /// Learning rate γ.
    lr: f64 = 1e-3, NonNegative;
    /// Decay rates (β₁, β₂) of the first- and second-moment averages.
    betas: (f64, f64) = (0.9, 0.999), UnitHalfOpen;
    /// ε, added to the root of the bias-corrected second moment.
    eps: f64 = 1e-8, NonNegative;
    /// Weight decay λ: an L2 penalty added to the gradient, or AdamW's decay of the weights with `decoupled_weight_decay`.
    weight_decay: f64 = 0.0, NonNegative;
    /// Use the running maximum of the second moment (AMSGrad).
    amsgrad: bool = false;
    /// Maximize the objective: step along the gradient instead of against it.
    maximize: bool = false;
    /// Decay the weights directly, as AdamW does, instead of adding λ·p to the gradient.
    decoupled_weight_decay: bool = false;
  }
}

crate::options! {
  /// AdamW's options: Adam's, with decoupled weight decay always on (`torch.optim.AdamW`).
  pub struct AdamW {
    /// Learning rate γ.
    lr: f64 = 1e-3, NonNegative;
    /// Decay rates (β₁, β₂) of the first- and second-moment averages.
    betas: (f64, f64) = (0.9, 0.999), UnitHalfOpen;
    /// ε, added to the root of the bias-corrected second moment.
    eps: f64 = 1e-8, NonNegative;
    /// Decoupled weight decay λ: each step first scales the weights by 1 − γλ.
    weight_decay: f64 = 1e-2, NonNegative;
    /// Use the running maximum of the second moment (AMSGrad).
    amsgrad: bool = false;
    /// Maximize the objective: step along the gradient instead of against it.
    maximize: bool = false;
  }
}

impl AdamW {
  /// The same update as Adam's with decoupled decay.
  pub fn as_adam(&self) -> Adam {
    let AdamW { lr, betas, eps, weight_decay, amsgrad, maximize } = *self;
    Adam { lr, betas, eps, weight_decay, amsgrad, maximize, decoupled_weight_decay: true }
  }
}

const ADAM_BUFFERS: &[Buffer] =
  &[Buffer::like_param("exp_avg"), Buffer::like_param("exp_avg_sq"), Buffer::like_param("max_exp_avg_sq")];

/// The per-step scalars of an Adam update, in `f64`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamCoeffs {
  /// −γ/(1 − β₁ᵗ)
  pub neg_step_size: f64,
  /// 1 − β₁, the lerp weight of the first moment.
  pub lerp_weight: f64,
  pub beta2: f64,
  /// 1 − β₂
  pub grad_sq_weight: f64,
  /// √(1 − β₂ᵗ)
  pub bias_correction2_sqrt: f64,
  pub eps: f64,
  /// λ of the L2 penalty; 0 when decay is decoupled.
  pub l2: f64,
  /// 1 − γ·λ for decoupled decay; exactly 1 otherwise.
  pub decay_factor: f64,
  pub amsgrad: bool,
  pub maximize: bool,
}

impl Optimizer for Adam {
  const NAME: &'static str = "Adam";
  const BF16_STATE: bool = true;
  const SUMMARY: &'static str = "Adam (Kingma & Ba, 2015), with AMSGrad and AdamW's decoupled decay as options";
  const BUFFERS: &'static [Buffer] = ADAM_BUFFERS;
  type Coeffs = AdamCoeffs;

  fn buffers_used(&self) -> usize {
    if self.amsgrad {
      3
    } else {
      2
    }
  }

  fn coeffs(&self, step: u64) -> AdamCoeffs {
    let (beta1, beta2) = self.betas;
    let bias_correction1 = 1.0 - power(beta1, step);
    let bias_correction2 = 1.0 - power(beta2, step);
    let decoupled = self.decoupled_weight_decay && self.weight_decay != 0.0;
    AdamCoeffs {
      neg_step_size: -(self.lr / bias_correction1),
      lerp_weight: 1.0 - beta1,
      beta2,
      grad_sq_weight: 1.0 - beta2,
      bias_correction2_sqrt: bias_correction2.sqrt(),
      eps: self.eps,
      l2: if self.decoupled_weight_decay { 0.0 } else { self.weight_decay },
      decay_factor: if decoupled { 1.0 - self.lr * self.weight_decay } else { 1.0 },
      amsgrad: self.amsgrad,
      maximize: self.maximize,
    }
  }

  fn update<T: Float>(c: &AdamCoeffs, param: &mut [T], grad: &[T], buffers: [&mut [T]; MAX_BUFFERS]) -> bool {
    let Some(k) = Scalars::new(c) else {
      // √(1 − β₂ᵗ) lies in [2⁻²⁷, 1] for every β₂ in [0, 1) and t ≥ 1, so only hand-made
      // coefficients get here: the plain loop gives the same bits, more slowly.
      Self::update_reference(c, param, grad, buffers);
      return any_non_finite(grad);
    };
    let [exp_avg, exp_avg_sq, max_exp_avg_sq] = buffers;
    let (done, mut non_finite) = rounds(&k, c, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq);
    // Whole rounds leave nothing for the plain loop (a tensor of a multiple of 32 elements): its
    // dispatch, over nothing, cost 200 tensors of 1K about 3% of their step (72.4-73.0 against
    // 70.0-71.6 µs on one thread of an AMD Zen 4).
    if done == param.len() {
      return non_finite;
    }
    let max_exp_avg_sq = if c.amsgrad { &mut max_exp_avg_sq[done..] } else { max_exp_avg_sq };
    dispatch!(fused_best::<T>[L2: c.l2 != 0.0, AMSGRAD: c.amsgrad, EXACT: exact_division_helps()](
      &k, &mut param[done..], &grad[done..], &mut exp_avg[done..], &mut exp_avg_sq[done..], max_exp_avg_sq, &mut non_finite
    ));
    non_finite
  }

  /// Fused: the conversions (and stochastic rounding's bits) run inside the kernel's loop, so that
  /// they overlap with its memory traffic; the same bits as the chunked default (tested).
  fn update_bf16(c: &AdamCoeffs, param: &mut [f32], grad: &[f32], buffers: Bf16Buffers, noise: Option<Noise>) -> bool {
    let Some(k) = Scalars::new(c) else {
      return crate::engine::bf16::update::<Self>(c, param, grad, buffers, noise);
    };
    let [exp_avg, exp_avg_sq, max_exp_avg_sq] = buffers;
    let mut non_finite = false;
    dispatch!(fused_bf16::<f32, Bf16>[L2: c.l2 != 0.0, AMSGRAD: c.amsgrad, EXACT: exact_division_helps(), STOCHASTIC: noise.is_some()](
      &k, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, noise.unwrap_or(Noise::NONE), &mut non_finite
    ));
    non_finite
  }

  fn update_reference<T: Float>(c: &AdamCoeffs, param: &mut [T], grad: &[T], buffers: [&mut [T]; MAX_BUFFERS]) {
    let [exp_avg, exp_avg_sq, max_exp_avg_sq] = buffers;
    let cast = T::from_f64;
    for i in 0..param.len() {
      let mut g = grad[i];
      let mut p = param[i];
      if c.maximize {
        g = -g;
      }
      if c.l2 != 0.0 {
        g = p.mul_add(cast(c.l2), g);
      }
      p = p * cast(c.decay_factor);
      let weight = cast(c.lerp_weight);
      let m = exp_avg[i];
      exp_avg[i] =
        if weight.abs() < cast(0.5) { weight.mul_add(g - m, m) } else { (weight - T::ONE).mul_add(g - m, g) };
      exp_avg_sq[i] = (cast(c.grad_sq_weight) * g).mul_add(g, exp_avg_sq[i] * cast(c.beta2));
      let mut second = exp_avg_sq[i];
      if c.amsgrad {
        max_exp_avg_sq[i] = max_exp_avg_sq[i].max_nan(second);
        second = max_exp_avg_sq[i];
      }
      let denom = second.sqrt() / cast(c.bias_correction2_sqrt) + cast(c.eps);
      param[i] = p + cast(c.neg_step_size) * exp_avg[i] / denom;
    }
  }
}

impl Optimizer for AdamW {
  const NAME: &'static str = "AdamW";
  const BF16_STATE: bool = true;
  const SUMMARY: &'static str =
    "AdamW (Loshchilov & Hutter, 2019): Adam whose weight decay scales the weights by 1 − γλ";
  const BUFFERS: &'static [Buffer] = ADAM_BUFFERS;
  type Coeffs = AdamCoeffs;

  fn buffers_used(&self) -> usize {
    self.as_adam().buffers_used()
  }

  fn coeffs(&self, step: u64) -> AdamCoeffs {
    self.as_adam().coeffs(step)
  }

  fn update<T: Float>(c: &AdamCoeffs, param: &mut [T], grad: &[T], buffers: [&mut [T]; MAX_BUFFERS]) -> bool {
    Adam::update(c, param, grad, buffers)
  }

  fn update_bf16(c: &AdamCoeffs, param: &mut [f32], grad: &[f32], buffers: Bf16Buffers, noise: Option<Noise>) -> bool {
    Adam::update_bf16(c, param, grad, buffers, noise)
  }

  fn update_reference<T: Float>(c: &AdamCoeffs, param: &mut [T], grad: &[T], buffers: [&mut [T]; MAX_BUFFERS]) {
    Adam::update_reference(c, param, grad, buffers)
  }
}

/// [`AdamCoeffs`] rounded to the element type, once per piece.
struct Scalars<T> {
  gradient: Gradient<T>,
  decay_factor: T,
  /// m toward g, by 1 − β₁.
  lerp: Lerp<T>,
  beta2: T,
  grad_sq_weight: T,
  /// √(1 − β₂ᵗ), divided by without a divide instruction where that is faster
  /// ([`exact_division_helps`]); either way the kernel rounds as `/` does ([`crate::divide`]).
  bias_correction2_sqrt: ExactDivisor<T>,
  eps: T,
  neg_step_size: T,
}

impl<T: Float> Scalars<T> {
  /// `None` if √(1 − β₂ᵗ) is outside the range [`ExactDivisor`] is proven for.
  fn new(c: &AdamCoeffs) -> Option<Self> {
    Some(Scalars {
      gradient: Gradient::new(c.maximize, c.l2),
      decay_factor: T::from_f64(c.decay_factor),
      lerp: Lerp::new(c.lerp_weight),
      beta2: T::from_f64(c.beta2),
      grad_sq_weight: T::from_f64(c.grad_sq_weight),
      bias_correction2_sqrt: ExactDivisor::new(T::from_f64(c.bias_correction2_sqrt))?,
      eps: T::from_f64(c.eps),
      neg_step_size: T::from_f64(c.neg_step_size),
    })
  }
}

/// The arrays the kernel's choices are timed over, once per process: 2048 elements of a step in
/// progress, small enough to stay in cache ([`exact_division_helps`], [`roots_by_instruction`]).
struct TimedArrays {
  grad: Vec<f32>,
  param: Vec<f32>,
  m: Vec<f32>,
  v: Vec<f32>,
}

impl TimedArrays {
  fn new() -> Self {
    const N: usize = 2048;
    TimedArrays {
      grad: (0..N).map(|i| ((i as f32) * 0.37).sin() * 1e-2).collect(),
      param: vec![0.5; N],
      m: vec![1e-3; N],
      v: vec![1e-6; N],
    }
  }
}

/// Whether this processor runs Adam's loop faster dividing by √(1 − β₂ᵗ) with [`ExactDivisor`]'s
/// multiply-adds than with the divide instruction (the same bits either way). Which wins depends
/// on the core: where the divide unit bounds the loop (Intel's Xeon with AVX-512, and the first
/// AMD EPYC measured) the multiply-adds win, and on AMD's Zen 3 the instruction does
/// (BENCHMARKS.md, "Design choices", has the measurements). So it is timed once, on first use:
/// both loops, in turns, over arrays that stay in cache, the best of 8 rounds each
/// ([`simd::fastest`]).
fn exact_division_helps() -> bool {
  static FASTER: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
  *FASTER.get_or_init(|| {
    let c = Adam::default().coeffs(10);
    let k = Scalars::<f32>::new(&c).expect("√(1 − β₂¹⁰) is in range");
    let TimedArrays { grad, mut param, mut m, mut v } = TimedArrays::new();
    // The instruction first, so that it stays where the two tie.
    let fastest = simd::fastest(2, 8, 4, |way| {
      let mut non_finite = false;
      dispatch!(fused_best::<f32>[L2: false, AMSGRAD: false, EXACT: way == 1](
        &k, &mut param, &grad, &mut m, &mut v, &mut [], &mut non_finite
      ));
    });
    fastest == 1
  })
}

/// Whether this processor runs [`avx512::rounds`] faster taking every square root by the
/// instruction than half of them by [`crate::root`]'s multiply-adds (the same bits either way),
/// for steps that divide by √(1 − β₂ᵗ) or, with `unit`, for those where it rounds to 1 and the
/// rounds skip that division. Which wins depends on the core and on the case: where the divide
/// unit bounds the loop (Intel's Xeon, and AMD's Zen 4 once the division by √(1 − β₂ᵗ) is
/// skipped) half by multiply-adds does; where the multiply-add ports do (Zen 4, whose 512-bit
/// operations each take a 256-bit port twice, while it divides by √(1 − β₂ᵗ) with multiply-adds),
/// the instruction does (BENCHMARKS.md, "Design choices"). So each case is timed once, on first
/// use, as [`exact_division_helps`] is: both ways in turns over arrays that stay in cache, the
/// best of 8 rounds each. Only asked on a processor with AVX-512.
#[cfg(target_arch = "x86_64")]
fn roots_by_instruction(unit: bool) -> bool {
  #[cfg(test)]
  if let Some(forced) = tests::FORCED_ROOTS.with(std::cell::Cell::get) {
    return forced;
  }
  static FASTER: [std::sync::OnceLock<bool>; 2] = [const { std::sync::OnceLock::new() }; 2];
  *FASTER[usize::from(unit)].get_or_init(|| {
    // β₂ᵗ of step 100,000 is below 2⁻²⁴, where √(1 − β₂ᵗ) rounds to 1 in f32.
    let c = Adam::default().coeffs(if unit { 100_000 } else { 10 });
    let k = Scalars::<f32>::new(&c).expect("√(1 − β₂ᵗ) is in range");
    debug_assert_eq!(k.bias_correction2_sqrt.divisor() == 1.0, unit);
    let TimedArrays { grad, mut param, mut m, mut v } = TimedArrays::new();
    // Half by multiply-adds first, so that it stays where the two tie.
    let fastest = simd::fastest(2, 8, 4, |way| {
      let (p, g, u) = (param.as_mut_ptr(), grad.as_ptr(), std::ptr::null_mut());
      let arrays = avx512::Arrays { p, g, m: m.as_mut_ptr(), v: v.as_mut_ptr(), u };
      // SAFETY: only asked where the CPU has AVX-512 (`rounds` below); the four arrays hold
      // `param.len()` elements each and the written ones are distinct vectors.
      std::hint::black_box(unsafe { avx512::rounds(&k, false, param.len(), arrays, way == 1) });
    });
    fastest == 1
  })
}

/// Runs [`avx512::rounds`] over the whole rounds of `f32` slices on a processor with AVX-512;
/// returns how many elements it updated (0 otherwise) and whether a gradient among them was NaN
/// or ±∞. The caller updates the rest. A step that streams its arrays from memory with
/// prefetching ([`simd::streaming`]) is bound by memory, not by the divide unit, and keeps the
/// plain loop, which [`fused_best`] cuts into blocks and prefetches ahead of.
fn rounds<T: Float>(
  k: &Scalars<T>,
  c: &AdamCoeffs,
  param: &mut [T],
  grad: &[T],
  exp_avg: &mut [T],
  exp_avg_sq: &mut [T],
  max_exp_avg_sq: &mut [T],
) -> (usize, bool) {
  #[cfg(target_arch = "x86_64")]
  if T::DTYPE == crate::float::Dtype::Float32
    && param.len() >= avx512::ROUND
    && !simd::is_streaming()
    && simd::has_avx512()
  {
    let n = param.len();
    assert!(
      grad.len() >= n && exp_avg.len() >= n && exp_avg_sq.len() >= n && (!c.amsgrad || max_exp_avg_sq.len() >= n)
    );
    let f = |s: &mut [T]| s.as_mut_ptr().cast::<f32>();
    let u = if c.amsgrad { f(max_exp_avg_sq) } else { std::ptr::null_mut() };
    // SAFETY: T is f32 (its dtype), so `Scalars<T>` is `Scalars<f32>` and the slices hold f32;
    // every slice holds at least n elements (asserted), the written ones are distinct exclusive
    // borrows, and the CPU has AVX-512 (checked).
    return unsafe {
      let k = &*(k as *const Scalars<T>).cast::<Scalars<f32>>();
      let arrays = avx512::Arrays { p: f(param), g: grad.as_ptr().cast(), m: f(exp_avg), v: f(exp_avg_sq), u };
      let all_roots = roots_by_instruction(k.bias_correction2_sqrt.divisor() == 1.0);
      avx512::rounds(k, c.l2 != 0.0, n, arrays, all_roots)
    };
  }
  let _ = (k, c, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq);
  (0, false)
}

multiversion!(fn fused_best<T: Float, const L2: bool, const AMSGRAD: bool, const EXACT: bool>(k: &Scalars<T>, param: &mut [T], grad: &[T], exp_avg: &mut [T], exp_avg_sq: &mut [T], max_exp_avg_sq: &mut [T], non_finite: &mut bool) => fused);

/// One pass over memory: reads p, g, m, v (and u), writes p, m, v (and u), and sets `non_finite`
/// if a gradient element was NaN or infinite. Branch-free in the loop so that it vectorises;
/// `g·sign` and `p·decay_factor` are exact when sign and factor are 1. With `EXACT`, the division
/// by √(1 − β₂ᵗ) is [`ExactDivisor`]'s multiply-adds, else the divide instruction: the same bits.
#[inline(always)]
fn fused<T: Float, const L2: bool, const AMSGRAD: bool, const EXACT: bool>(
  k: &Scalars<T>,
  param: &mut [T],
  grad: &[T],
  exp_avg: &mut [T],
  exp_avg_sq: &mut [T],
  max_exp_avg_sq: &mut [T],
  non_finite: &mut bool,
) {
  fused_in::<T, T, L2, AMSGRAD, EXACT, false>(
    k,
    param,
    grad,
    exp_avg,
    exp_avg_sq,
    max_exp_avg_sq,
    Noise::NONE,
    non_finite,
  )
}

multiversion!(fn fused_bf16<T: Float, S: Storage<T>, const L2: bool, const AMSGRAD: bool, const EXACT: bool, const STOCHASTIC: bool>(k: &Scalars<T>, param: &mut [T], grad: &[T], exp_avg: &mut [S], exp_avg_sq: &mut [S], max_exp_avg_sq: &mut [S], noise: Noise, non_finite: &mut bool) => fused_in);

/// [`fused`] with state stored as `S` (loaded to `T` and stored back, [`Storage`]); with
/// `STOCHASTIC`, stored with `noise`'s bits ([`Storage::store_random`]).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn fused_in<T: Float, S: Storage<T>, const L2: bool, const AMSGRAD: bool, const EXACT: bool, const STOCHASTIC: bool>(
  k: &Scalars<T>,
  param: &mut [T],
  grad: &[T],
  exp_avg: &mut [S],
  exp_avg_sq: &mut [S],
  max_exp_avg_sq: &mut [S],
  noise: Noise,
  non_finite: &mut bool,
) {
  let store = |value: T, buffer: usize, i: usize| {
    if STOCHASTIC {
      S::store_random(value, noise.at(buffer, i))
    } else {
      S::store(value)
    }
  };
  let n = param.len();
  let grad = &grad[..n];
  let exp_avg = &mut exp_avg[..n];
  let exp_avg_sq = &mut exp_avg_sq[..n];
  let max_exp_avg_sq = if AMSGRAD { &mut max_exp_avg_sq[..n] } else { &mut [][..] };
  let mut check = NonFinite::new();
  for i in 0..n {
    let mut p = param[i];
    check.see(grad[i]);
    let g = k.gradient.at::<L2>(grad[i], p);
    p = p * k.decay_factor;
    let m = exp_avg[i].load();
    let m = k.lerp.apply(m, g);
    let v = (k.grad_sq_weight * g).mul_add(g, exp_avg_sq[i].load() * k.beta2);
    exp_avg[i] = store(m, 0, i);
    exp_avg_sq[i] = store(v, 1, i);
    let second = if AMSGRAD {
      let u = max_exp_avg_sq[i].load().max_nan(v);
      max_exp_avg_sq[i] = store(u, 2, i);
      u
    } else {
      v
    };
    // √v is 0, NaN, ∞ or within [2⁻⁷⁵, 2⁶⁴] in f32, [2⁻⁵³⁸, 2⁵¹²] in f64: `ExactDivisor`'s range.
    let root = second.sqrt();
    let scaled = if EXACT { k.bias_correction2_sqrt.divide(root) } else { root / k.bias_correction2_sqrt.divisor() };
    let denom = scaled + k.eps;
    param[i] = p + k.neg_step_size * m / denom;
  }
  *non_finite |= check.found();
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::engine::run::{run, Job, PARALLEL_MIN_ELEMENTS, PIECE_ELEMENTS};
  use crate::engine::simd::{capped, levels, Level};
  use crate::engine::state::{Buffers, ParamState};
  use crate::testing::{
    assert_fused_matches_reference, assert_rejects, assert_zero_lr_is_identity, same_bits, trajectory, values,
  };

  thread_local! {
    /// The square roots' share [`roots_by_instruction`] answers on this thread, where set.
    pub(super) static FORCED_ROOTS: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
  }

  /// Runs `f` with this thread's AVX-512 rounds taking every square root by the instruction
  /// (`all`) or half of them by multiply-adds, whatever the process chose.
  fn with_roots<R>(all: bool, f: impl FnOnce() -> R) -> R {
    let before = FORCED_ROOTS.with(|c| c.replace(Some(all)));
    let result = f();
    FORCED_ROOTS.with(|c| c.set(before));
    result
  }

  fn configs() -> Vec<Adam> {
    let base = Adam::default();
    vec![
      base,
      Adam { weight_decay: 0.1, lr: 1e-2, ..base },
      Adam { amsgrad: true, weight_decay: 0.01, ..base },
      Adam { maximize: true, betas: (0.3, 0.9), eps: 1e-3, ..base },
      Adam { decoupled_weight_decay: true, weight_decay: 0.05, amsgrad: true, ..base },
    ]
  }

  #[test]
  fn fused_parallel_kernel_matches_reference_bit_for_bit() {
    assert_fused_matches_reference(&configs());
  }

  /// The engine divides by √(1 − β₂ᵗ) the way that is faster on this processor
  /// ([`exact_division_helps`]): here both ways run, on every instruction level this CPU has, in
  /// both precisions, for ten steps of every config, and each gives the plain reference's bits
  /// (parameters and state).
  #[test]
  fn both_divisions_give_the_reference_bits_at_every_level() {
    fn check<T: Float>(config: Adam, level: Level, exact: bool) {
      let len = 1000 + 37;
      let (mut fast, mut slow) = (values::<T>(len, 1), values::<T>(len, 1));
      let mut fast_state = vec![vec![T::ZERO; len]; 3];
      let mut slow_state = fast_state.clone();
      for t in 1..=10 {
        let grad = values::<T>(len, t + 1);
        let c = config.coeffs(t);
        let k = Scalars::new(&c).expect("√(1 − β₂ᵗ) in range");
        let [m, v, u] = &mut fast_state[..] else { unreachable!() };
        let mut non_finite = false;
        capped(level, || {
          dispatch!(fused_best::<T>[L2: c.l2 != 0.0, AMSGRAD: c.amsgrad, EXACT: exact](
            &k, &mut fast, &grad, m, v, u, &mut non_finite
          ))
        });
        let [m, v, u] = &mut slow_state[..] else { unreachable!() };
        Adam::update_reference(&c, &mut slow, &grad, [m, v, u]);
        assert!(!non_finite);
        let state_same = fast_state.iter().zip(&slow_state).all(|(a, b)| same_bits(a, b));
        assert!(same_bits(&fast, &slow) && state_same, "{config:?} {level:?} exact {exact} step {t}");
      }
    }
    for level in levels() {
      for config in configs() {
        for exact in [true, false] {
          check::<f32>(config, level, exact);
          check::<f64>(config, level, exact);
        }
      }
    }
  }

  /// On a processor with AVX-512, `f32` steps go through [`avx512::rounds`], which takes half the
  /// square roots by multiply-adds (or, where that is slower, none: both shares run here) when a
  /// round's second moments are all in [`crate::root`]'s range and runs a round as the plain loop
  /// does otherwise. Uniform gradients (the quick rounds nearly everywhere) with NaN, ±∞, zero,
  /// tiny and huge values in some vectors, and moments loaded negative, −0 or NaN in others (the
  /// plain rounds there); every config, ten steps from the first and ten from the 100,001st (where
  /// √(1 − β₂ᵗ) rounds to 1, which the rounds do not divide by), every level, two lengths (whole
  /// rounds and not): the reference's bits, and the report of the non-finite gradients.
  #[test]
  fn steps_give_the_reference_bits_in_and_out_of_the_square_roots_range() {
    use crate::testing::xorshift;
    let mut results = Vec::new();
    for len in [6 * 48, 6 * 48 + 17] {
      let mut next = xorshift(7);
      let mut uniform = move || ((next() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32;
      let start: Vec<f32> = (0..len).map(|_| uniform()).collect();
      let grads: Vec<Vec<f32>> = (0..10)
        .map(|t| {
          let mut g: Vec<f32> = (0..len).map(|_| 0.1 * uniform()).collect();
          if t % 3 == 1 {
            g[3 * 16 + 1] = f32::NAN;
            g[3 * 16 + 4] = f32::INFINITY;
            g[3 * 16 + 5] = f32::NEG_INFINITY;
          }
          g[5 * 16 + 2] = 0.0;
          g[5 * 16 + 3] = -0.0;
          g[7 * 16 + 8] = 1e-30;
          g[9 * 16 + 15] = 1e30;
          g[11 * 16] = 1e-17;
          g
        })
        .collect();
      let mut state = vec![vec![0.0f32; len]; 3];
      state[1][13 * 16 + 6] = -1.0;
      state[1][14 * 16 + 7] = -0.0;
      state[0][15 * 16 + 9] = f32::NAN;
      state[2][16 * 16 + 1] = f32::NAN;
      for (level, all_roots) in levels().into_iter().flat_map(|level| [(level, false), (level, true)]) {
        for (config, first_step) in configs().into_iter().flat_map(|c| [(c, 1), (c, 100_001)]) {
          let (mut fast, mut slow) = (start.clone(), start.clone());
          let (mut fast_state, mut slow_state) = (state.clone(), state.clone());
          for (t, grad) in grads.iter().enumerate() {
            let step = first_step + t as u64;
            let c = config.coeffs(step);
            if first_step > 1 {
              assert_eq!(c.bias_correction2_sqrt as f32, 1.0, "{config:?}: √(1 − β₂ᵗ) rounds to 1");
            }
            let [m, v, u] = &mut fast_state[..] else { unreachable!() };
            let non_finite = with_roots(all_roots, || capped(level, || Adam::update(&c, &mut fast, grad, [m, v, u])));
            let [m, v, u] = &mut slow_state[..] else { unreachable!() };
            Adam::update_reference(&c, &mut slow, grad, [m, v, u]);
            assert_eq!(non_finite, t % 3 == 1, "{config:?} {level:?} all roots {all_roots} step {step}: the report");
            // The reference negates a NaN gradient to maximize, where the kernels multiply it
            // by −1, which keeps its sign: NaN stands for NaN here, and the levels are held to
            // each other's bits below.
            let same = |a: &[f32], b: &[f32]| {
              a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits() || x.is_nan() && y.is_nan())
            };
            let state_same = fast_state.iter().zip(&slow_state).all(|(a, b)| same(a, b));
            assert!(same(&fast, &slow) && state_same, "{config:?} {level:?} all roots {all_roots} {len} step {step}");
          }
          let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
          let key = (config, len, first_step);
          results.push((key, (level, all_roots), bits(&fast), fast_state.iter().map(|s| bits(s)).collect::<Vec<_>>()));
        }
      }
    }
    // Every level and share of the roots gives the bits of the others, NaN included.
    for (key, level, p, s) in &results {
      for (other_key, other_level, q, r) in &results {
        if key == other_key {
          assert!(p == q && s == r, "{key:?}: {level:?} and {other_level:?} differ");
        }
      }
    }
  }

  #[test]
  fn many_tensors_in_one_step_match_one_at_a_time() {
    let config = Adam { amsgrad: true, ..Adam::default() };
    let lengths = [3, 0, PIECE_ELEMENTS + 9, 1, PARALLEL_MIN_ELEMENTS, 77];
    let mut params: Vec<Vec<f32>> = lengths.iter().map(|&n| values(n, n as u64)).collect();
    let grads: Vec<Vec<f32>> = lengths.iter().map(|&n| values(n, n as u64 + 5)).collect();
    let mut states = vec![ParamState::default(); lengths.len()];
    let mut expected = params.clone();
    let mut expected_states = states.clone();
    let coeffs = config.coeffs(1);
    let mut jobs: Vec<_> = params
      .iter_mut()
      .zip(&grads)
      .zip(&mut states)
      .map(|((param, grad), state)| Job::flat(coeffs, param, grad, state.buffers_mut(&[grad.len(); 3], 3)))
      .collect();
    run::<Adam, f32>(&mut jobs);
    for ((param, grad), state) in expected.iter_mut().zip(&grads).zip(&mut expected_states) {
      Adam::update_reference(&coeffs, param, grad, state.buffers_mut(&[grad.len(); 3], 3));
    }
    assert!(params.iter().zip(&expected).all(|(a, b)| same_bits(a, b)));
  }

  #[test]
  fn first_step_moves_each_element_by_lr_against_its_gradient_sign() {
    // t = 1: m = (1 − β₁)g and v = (1 − β₂)g², so m̂ = g and v̂ = g², and the step is
    // γ·g/(|g| + ε): γ·sign(g) up to ε/|g|, and nothing where g = 0.
    let config = Adam::default();
    let mut param = vec![1.0f64, -2.0, 0.5, 3.0];
    let grad = [0.25, -4.0, 0.0, 1e-3];
    let mut state = ParamState::default();
    let coeffs = config.coeffs(1);
    Adam::update(&coeffs, &mut param, &grad, state.buffers_mut(&[4; 3], 2));
    let expected =
      [1.0 - 1e-3 * 0.25 / (0.25 + 1e-8), -2.0 + 1e-3 * 4.0 / (4.0 + 1e-8), 0.5, 3.0 - 1e-3 * 1e-3 / (1e-3 + 1e-8)];
    for (got, want) in param.iter().zip(expected) {
      assert!((got - want).abs() <= 1e-15, "{got} vs {want}");
    }
  }

  #[test]
  fn follows_the_textbook_equations_in_f64() {
    // The update as written in the paper, with ε after the bias-corrected root.
    let (lr, b1, b2, eps) = (1e-2, 0.8, 0.99, 1e-6);
    let config = Adam { lr, betas: (b1, b2), eps, ..Adam::default() };
    let mut param = values::<f64>(9, 3);
    let mut expected = param.clone();
    let (mut m, mut v) = (vec![0.0; 9], vec![0.0; 9]);
    let mut state = ParamState::default();
    for t in 1..=30u64 {
      let grad = values::<f64>(9, 100 + t);
      Adam::update(&config.coeffs(t), &mut param, &grad, state.buffers_mut(&[9; 3], 2));
      for i in 0..9 {
        m[i] = b1 * m[i] + (1.0 - b1) * grad[i];
        v[i] = b2 * v[i] + (1.0 - b2) * grad[i] * grad[i];
        let m_hat = m[i] / (1.0 - b1.powi(t as i32));
        let v_hat = v[i] / (1.0 - b2.powi(t as i32));
        expected[i] -= lr * m_hat / (v_hat.sqrt() + eps);
      }
    }
    for (got, want) in param.iter().zip(&expected) {
      assert!((got - want).abs() <= 1e-12 * want.abs().max(1.0), "{got} vs {want}");
    }
  }

  #[test]
  fn zero_learning_rate_leaves_parameters_unchanged_and_moments_stay_non_negative() {
    let configs: Vec<Adam> = configs().into_iter().map(|c| Adam { lr: 0.0, ..c }).collect();
    assert_zero_lr_is_identity(&configs);
    for config in configs {
      let (_, state) = trajectory::<Adam, f32>(config, 40, 5, true);
      let Buffers::F32(buffers) = &state.buffers else { panic!("f32 state") };
      assert!(buffers[1].iter().all(|&v| v >= 0.0), "second moments are never negative");
    }
  }

  #[test]
  fn adamw_is_adam_with_decoupled_decay_and_its_own_default() {
    let adamw = AdamW::default();
    assert_eq!(adamw.as_adam(), Adam { weight_decay: 1e-2, decoupled_weight_decay: true, ..Adam::default() });
    assert_eq!(Adam::default().weight_decay, 0.0);
    let coeffs = adamw.coeffs(1);
    assert_eq!((coeffs.l2, coeffs.decay_factor), (0.0, 1.0 - 1e-3 * 1e-2));
  }

  #[test]
  fn bad_options_are_rejected_with_field_and_value() {
    assert_rejects::<Adam>(&[
      ("lr", -1.0, "invalid lr: -1 (expected a finite lr >= 0)"),
      ("betas[0]", 1.2, "invalid betas[0]: 1.2 (expected 0 <= betas[0] < 1)"),
      ("betas[1]", 1.0, "invalid betas[1]: 1 (expected 0 <= betas[1] < 1)"),
      ("eps", f64::NAN, "invalid eps: NaN (expected a finite eps >= 0)"),
      ("weight_decay", -0.1, "invalid weight_decay: -0.1 (expected a finite weight_decay >= 0)"),
      ("amsgrad", 2.0, "invalid amsgrad: 2 (expected true or false)"),
    ]);
  }
}
