//! RAdam: Adam with the variance of its adaptive rate rectified.
//!
//! Liu, Jiang, He, Chen, Liu, Gao & Han, "On the Variance of the Adaptive Learning Rate and
//! Beyond", ICLR 2020. Decoupled weight decay: Loshchilov & Hutter, "Decoupled Weight Decay
//! Regularization", ICLR 2019.
//!
//! With learning rate γ, betas β₁ β₂, weight decay λ and step t (1 on the first update), let
//! ρ∞ = 2/(1 − β₂) − 1, ρₜ = ρ∞ − 2t·β₂ᵗ/(1 − β₂ᵗ) and, when ρₜ > 5,
//! rₜ = √((ρₜ − 4)(ρₜ − 2)ρ∞ / ((ρ∞ − 4)(ρ∞ − 2)ρₜ)). Each element of a parameter p with gradient
//! g, first moment m and second moment v (both zero before the first step) is updated as
//!
//! ```text
//! g ← −g                          if maximize
//! g ← g + λ·p                     (L2 penalty folded into the gradient)
//! p ← p·(1 − γ·λ)                 with decoupled weight decay instead
//! m ← m + (1 − β₁)·(g − m)        = β₁·m + (1 − β₁)·g
//! v ← β₂·v + (1 − β₂)·g²
//! m̂ ← m/(1 − β₁ᵗ)
//! p ← p − γ·m̂ · √(1 − β₂ᵗ)/(√v + ε) · rₜ     if ρₜ > 5
//! p ← p − γ·m̂                                otherwise: SGD with momentum, no adaptive rate
//! ```
//!
//! Conventions, all PyTorch's: the switch is ρₜ > 5 (the paper's first version used 4); ε is
//! added to √v before the bias correction √(1 − β₂ᵗ) multiplies in. ρₜ, rₜ and the corrections
//! are `f64`, once per step, with `x ** 0.5` as `powf(0.5)`. Per element the products are rounded
//! in PyTorch's order, `((m̂·γ)·(1/(√v + ε))·√(1 − β₂ᵗ))·rₜ` (`scalar / tensor` is a reciprocal
//! times the scalar in PyTorch); the m update is the lerp Adam uses and the v update
//! `fma((1 − β₂)·g, g, β₂·v)`, as PyTorch's vectorised CPU `lerp_` and `addcmul_` compute them.

use crate::engine::bf16::{Noise, Storage};
use crate::engine::run::MAX_BUFFERS;
use crate::engine::simd::{dispatch, multiversion};
use crate::float::{Float, Lerp, NonFinite};
use crate::optimizers::{Bf16Buffers, Buffer, Gradient, Optimizer};
use crate::powers::power;

crate::options! {
  /// RAdam's options (PyTorch's `torch.optim.RAdam`).
  pub struct RAdam {
    /// Learning rate γ.
    lr: f64 = 1e-3, NonNegative;
    /// Decay rates (β₁, β₂) of the first- and second-moment averages.
    betas: (f64, f64) = (0.9, 0.999), UnitHalfOpen;
    /// ε, added to the root of the second moment.
    eps: f64 = 1e-8, NonNegative;
    /// Weight decay λ: an L2 penalty added to the gradient, or a decay of the weights by 1 − γλ with `decoupled_weight_decay`.
    weight_decay: f64 = 0.0, NonNegative;
    /// Decay the weights directly, as AdamW does, instead of adding λ·p to the gradient.
    decoupled_weight_decay: bool = false;
    /// Maximize the objective: step along the gradient instead of against it.
    maximize: bool = false;
  }
}

/// The per-step scalars of a RAdam update, in `f64`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RAdamCoeffs {
  pub lr: f64,
  /// 1 − β₁ᵗ
  pub bias_correction1: f64,
  /// √(1 − β₂ᵗ)
  pub bias_correction2_sqrt: f64,
  /// ρₜ > 5: use the adaptive rate, scaled by `rect`.
  pub rectified: bool,
  /// rₜ when `rectified`; NaN otherwise, when it may not exist.
  pub rect: f64,
  /// 1 − β₁, the lerp weight of the first moment.
  pub lerp_weight: f64,
  pub beta2: f64,
  /// 1 − β₂
  pub grad_sq_weight: f64,
  pub eps: f64,
  /// λ of the L2 penalty; 0 when decay is decoupled.
  pub l2: f64,
  /// 1 − γ·λ for decoupled decay; exactly 1 otherwise.
  pub decay_factor: f64,
  pub maximize: bool,
}

impl Optimizer for RAdam {
  const NAME: &'static str = "RAdam";
  const BF16_STATE: bool = true;
  const SUMMARY: &'static str =
    "RAdam (Liu et al., 2020): Adam whose adaptive rate is rectified while the variance estimate is poor";
  const BUFFERS: &'static [Buffer] = &[Buffer::like_param("exp_avg"), Buffer::like_param("exp_avg_sq")];
  type Coeffs = RAdamCoeffs;

  fn buffers_used(&self) -> usize {
    2
  }

  fn coeffs(&self, step: u64) -> RAdamCoeffs {
    let (beta1, beta2) = self.betas;
    let t = step as f64;
    let beta2_t = power(beta2, step);
    let bias_correction1 = 1.0 - power(beta1, step);
    let bias_correction2 = 1.0 - beta2_t;
    let rho_inf = 2.0 / (1.0 - beta2) - 1.0;
    let rho_t = rho_inf - 2.0 * t * beta2_t / bias_correction2;
    let rectified = rho_t > 5.0;
    let rect = if rectified {
      ((rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t)).powf(0.5)
    } else {
      f64::NAN
    };
    let decoupled = self.decoupled_weight_decay && self.weight_decay != 0.0;
    RAdamCoeffs {
      lr: self.lr,
      bias_correction1,
      bias_correction2_sqrt: bias_correction2.powf(0.5),
      rectified,
      rect,
      lerp_weight: 1.0 - beta1,
      beta2,
      grad_sq_weight: 1.0 - beta2,
      eps: self.eps,
      l2: if self.decoupled_weight_decay { 0.0 } else { self.weight_decay },
      decay_factor: if decoupled { 1.0 - self.lr * self.weight_decay } else { 1.0 },
      maximize: self.maximize,
    }
  }

  fn update<T: Float>(c: &RAdamCoeffs, param: &mut [T], grad: &[T], buffers: [&mut [T]; MAX_BUFFERS]) -> bool {
    update_stored(c, param, grad, buffers, None)
  }

  /// Fused: the state's conversions run inside the kernel's loop.
  fn update_bf16(c: &RAdamCoeffs, param: &mut [f32], grad: &[f32], buffers: Bf16Buffers, noise: Option<Noise>) -> bool {
    update_stored(c, param, grad, buffers, noise)
  }

  fn update_reference<T: Float>(c: &RAdamCoeffs, param: &mut [T], grad: &[T], buffers: [&mut [T]; MAX_BUFFERS]) {
    let [exp_avg, exp_avg_sq, _] = buffers;
    let cast = T::from_f64;
    for i in 0..param.len() {
      let mut g = grad[i];
      let mut p = param[i];
      if c.maximize {
        g = -g;
      }
      if c.l2 != 0.0 {
        g = cast(c.l2).mul_add(p, g);
      }
      p = p * cast(c.decay_factor);
      let weight = cast(c.lerp_weight);
      let m = exp_avg[i];
      exp_avg[i] =
        if weight.abs() < cast(0.5) { weight.mul_add(g - m, m) } else { (weight - T::ONE).mul_add(g - m, g) };
      exp_avg_sq[i] = (cast(c.grad_sq_weight) * g).mul_add(g, exp_avg_sq[i] * cast(c.beta2));
      let momentum_step = exp_avg[i] / cast(c.bias_correction1) * cast(c.lr);
      param[i] = if c.rectified {
        let adaptive = T::ONE / (exp_avg_sq[i].sqrt() + cast(c.eps)) * cast(c.bias_correction2_sqrt);
        p - momentum_step * adaptive * cast(c.rect)
      } else {
        p - momentum_step
      };
    }
  }
}

/// [`RAdamCoeffs`] rounded to the element type, once per piece.
struct Scalars<T> {
  gradient: Gradient<T>,
  decay_factor: T,
  /// m toward g, by 1 − β₁.
  lerp: Lerp<T>,
  beta2: T,
  grad_sq_weight: T,
  bias_correction1: T,
  lr: T,
  eps: T,
  bias_correction2_sqrt: T,
  rect: T,
}

impl<T: Float> Scalars<T> {
  fn new(c: &RAdamCoeffs) -> Self {
    Scalars {
      gradient: Gradient::new(c.maximize, c.l2),
      decay_factor: T::from_f64(c.decay_factor),
      lerp: Lerp::new(c.lerp_weight),
      beta2: T::from_f64(c.beta2),
      grad_sq_weight: T::from_f64(c.grad_sq_weight),
      bias_correction1: T::from_f64(c.bias_correction1),
      lr: T::from_f64(c.lr),
      eps: T::from_f64(c.eps),
      bias_correction2_sqrt: T::from_f64(c.bias_correction2_sqrt),
      rect: T::from_f64(c.rect),
    }
  }
}

/// [`Optimizer::update`] with the state stored as `S`: `T` itself, or bfloat16 for `f32`.
fn update_stored<T: Float, S: Storage<T>>(
  c: &RAdamCoeffs,
  param: &mut [T],
  grad: &[T],
  buffers: [&mut [S]; MAX_BUFFERS],
  noise: Option<Noise>,
) -> bool {
  let k = Scalars::new(c);
  let [exp_avg, exp_avg_sq, _] = buffers;
  let mut non_finite = false;
  dispatch!(fused_best::<T, S>[L2: c.l2 != 0.0, RECTIFIED: c.rectified, STOCHASTIC: noise.is_some()](&k, param, grad, exp_avg, exp_avg_sq, noise.unwrap_or(Noise::NONE), &mut non_finite));
  non_finite
}

multiversion!(fn fused_best<T: Float, S: Storage<T>, const L2: bool, const RECTIFIED: bool, const STOCHASTIC: bool>(k: &Scalars<T>, param: &mut [T], grad: &[T], exp_avg: &mut [S], exp_avg_sq: &mut [S], noise: Noise, non_finite: &mut bool) => fused);

/// One pass over memory: reads p, g, m, v, writes p, m, v. Before rectification starts v is
/// still updated but not read.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn fused<T: Float, S: Storage<T>, const L2: bool, const RECTIFIED: bool, const STOCHASTIC: bool>(
  k: &Scalars<T>,
  param: &mut [T],
  grad: &[T],
  exp_avg: &mut [S],
  exp_avg_sq: &mut [S],
  noise: Noise,
  non_finite: &mut bool,
) {
  let n = param.len();
  let grad = &grad[..n];
  let exp_avg = &mut exp_avg[..n];
  let exp_avg_sq = &mut exp_avg_sq[..n];
  let mut check = NonFinite::new();
  for i in 0..n {
    check.see(grad[i]);
    let mut p = param[i];
    let g = k.gradient.at::<L2>(grad[i], p);
    p = p * k.decay_factor;
    let m = exp_avg[i].load();
    let m = k.lerp.apply(m, g);
    let v = (k.grad_sq_weight * g).mul_add(g, exp_avg_sq[i].load() * k.beta2);
    exp_avg[i] = if STOCHASTIC { S::store_random(m, noise.at(0, i)) } else { S::store(m) };
    exp_avg_sq[i] = if STOCHASTIC { S::store_random(v, noise.at(1, i)) } else { S::store(v) };
    let momentum_step = m / k.bias_correction1 * k.lr;
    param[i] = if RECTIFIED {
      let adaptive = T::ONE / (v.sqrt() + k.eps) * k.bias_correction2_sqrt;
      p - momentum_step * adaptive * k.rect
    } else {
      p - momentum_step
    };
  }
  *non_finite |= check.found();
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::engine::state::ParamState;
  use crate::testing::{
    assert_fused_matches_reference, assert_rejects, assert_zero_lr_is_identity, buffers_f64, step_once, trajectory,
  };

  fn configs() -> Vec<RAdam> {
    let base = RAdam::default();
    vec![
      base,
      RAdam { weight_decay: 0.1, lr: 1e-2, ..base },
      RAdam { decoupled_weight_decay: true, weight_decay: 0.05, ..base },
      // β₂ = 0.5: ρ∞ = 3, never rectified. The others are rectified from step 6 on.
      RAdam { maximize: true, betas: (0.3, 0.5), eps: 1e-3, ..base },
      RAdam { betas: (0.8, 0.9), ..base },
    ]
  }

  #[test]
  fn fused_parallel_kernel_matches_reference_bit_for_bit() {
    assert_fused_matches_reference(&configs());
  }

  #[test]
  fn zero_learning_rate_leaves_parameters_unchanged() {
    let configs: Vec<RAdam> = configs().into_iter().map(|c| RAdam { lr: 0.0, ..c }).collect();
    assert_zero_lr_is_identity(&configs);
  }

  #[test]
  fn rectification_starts_when_rho_exceeds_five() {
    // β₂ = 0.999: ρ∞ = 1999 and ρₜ ≈ ρ∞ − 2t·β₂ᵗ/(1 − β₂ᵗ): ρ₅ ≈ 4.99, ρ₆ ≈ 5.99 (ρₜ ≈ t − 1 early on).
    let config = RAdam::default();
    let first = (1..100).find(|&t| config.coeffs(t).rectified).unwrap();
    assert_eq!(first, 6);
    let c = config.coeffs(6);
    let rho_inf = 1999.0f64;
    let rho = rho_inf - 12.0 * 0.999f64.powi(6) / (1.0 - 0.999f64.powi(6));
    let rect = ((rho - 4.0) * (rho - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho)).sqrt();
    assert!((c.rect - rect).abs() <= 1e-12 * rect, "{} vs {rect}", c.rect);
    // β₂ = 0.5 gives ρ∞ = 3: never rectified.
    let short = RAdam { betas: (0.9, 0.5), ..config };
    assert!((1..10_000).all(|t| !short.coeffs(t).rectified));
  }

  #[test]
  fn unrectified_steps_are_sgd_with_bias_corrected_momentum() {
    // t = 1: m̂ = g, so p ← p − γ·g, whatever v.
    let config = RAdam { lr: 0.5, ..RAdam::default() };
    let mut state = ParamState::default();
    let mut param = vec![1.0f64, -2.0, 0.5];
    step_once(config, &mut state, &mut param, &[0.25, -4.0, 0.0], true);
    let expected = [1.0 - 0.5 * 0.25, -2.0 + 0.5 * 4.0, 0.5];
    for (got, want) in param.iter().zip(expected) {
      assert!((got - want).abs() <= 1e-15, "{got} vs {want}");
    }
    // t = 2 with g₂ = 0: m = β₁(1 − β₁)g₁ and m̂ = m/(1 − β₁²) = β₁g₁/(1 + β₁).
    step_once(config, &mut state, &mut param, &[0.0, 0.0, 0.0], false);
    let want = 1.0 - 0.5 * 0.25 - 0.5 * 0.9 * 0.25 / 1.9;
    assert!((param[0] - want).abs() <= 1e-15, "{} vs {want}", param[0]);
  }

  #[test]
  fn second_moment_is_never_negative() {
    for config in configs() {
      let (_, state) = trajectory::<RAdam, f32>(config, 1001, 8, true);
      assert!(buffers_f64(&state)[1].iter().all(|&v| v >= 0.0), "{config:?}");
    }
  }

  #[test]
  fn bad_options_are_rejected_with_field_and_value() {
    assert_rejects::<RAdam>(&[
      ("lr", -1e-3, "invalid lr: -0.001 (expected a finite lr >= 0)"),
      ("betas[0]", -0.9, "invalid betas[0]: -0.9 (expected 0 <= betas[0] < 1)"),
      ("betas[1]", 1.0, "invalid betas[1]: 1 (expected 0 <= betas[1] < 1)"),
      ("eps", f64::NAN, "invalid eps: NaN (expected a finite eps >= 0)"),
      ("weight_decay", -0.01, "invalid weight_decay: -0.01 (expected a finite weight_decay >= 0)"),
      ("maximize", 2.0, "invalid maximize: 2 (expected true or false)"),
    ]);
  }
}
