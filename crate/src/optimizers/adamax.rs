//! Adamax: Adam with the infinity norm in place of the second moment.
//!
//! Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015, section 7.1.
//!
//! With learning rate γ, betas β₁ β₂, weight decay λ and step t (1 on the first update), each
//! element of a parameter p with gradient g, first moment m and infinity norm u (both zero
//! before the first step) is updated as
//!
//! ```text
//! g ← −g                          if maximize
//! g ← g + λ·p                     (L2 penalty folded into the gradient)
//! m ← m + (1 − β₁)·(g − m)        = β₁·m + (1 − β₁)·g
//! u ← max(β₂·u, |g| + ε)
//! p ← p − γ/(1 − β₁ᵗ) · m / u
//! ```
//!
//! Conventions, all PyTorch's: ε goes inside the maximum, next to |g| (the paper has none), so
//! u > 0 from the first step on; only m is bias-corrected; the maximum is NaN if either side is.
//! γ/(1 − β₁ᵗ) is computed in `f64` once per step; the m update is the lerp Adam uses, and the
//! last line `p + (−γ/(1 − β₁ᵗ)·m)/u`, as PyTorch's `addcdiv_` computes it.

use crate::engine::bf16::{Noise, Storage};
use crate::engine::run::MAX_BUFFERS;
use crate::engine::simd::{dispatch, multiversion};
use crate::float::{Float, Lerp, NonFinite};
use crate::optimizers::{Bf16Buffers, Buffer, Gradient, Optimizer};
use crate::powers::power;

crate::options! {
  /// Adamax's options (PyTorch's `torch.optim.Adamax`).
  pub struct Adamax {
    /// Learning rate γ.
    lr: f64 = 2e-3, NonNegative;
    /// Decay rates (β₁, β₂) of the first moment and of the infinity norm.
    betas: (f64, f64) = (0.9, 0.999), UnitHalfOpen;
    /// ε, added to |g| inside the maximum.
    eps: f64 = 1e-8, NonNegative;
    /// Weight decay λ, an L2 penalty added to the gradient.
    weight_decay: f64 = 0.0, NonNegative;
    /// Maximize the objective: step along the gradient instead of against it.
    maximize: bool = false;
  }
}

/// The per-step scalars of an Adamax update, in `f64`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamaxCoeffs {
  /// −γ/(1 − β₁ᵗ)
  pub neg_clr: f64,
  /// 1 − β₁, the lerp weight of the first moment.
  pub lerp_weight: f64,
  pub beta2: f64,
  pub eps: f64,
  /// λ; 0 for none.
  pub l2: f64,
  pub maximize: bool,
}

impl Optimizer for Adamax {
  const NAME: &'static str = "Adamax";
  const BF16_STATE: bool = true;
  const SUMMARY: &'static str = "Adamax (Kingma & Ba, 2015): Adam with the infinity norm in place of the second moment";
  const BUFFERS: &'static [Buffer] = &[Buffer::like_param("exp_avg"), Buffer::like_param("exp_inf")];
  type Coeffs = AdamaxCoeffs;

  fn buffers_used(&self) -> usize {
    2
  }

  fn coeffs(&self, step: u64) -> AdamaxCoeffs {
    let (beta1, beta2) = self.betas;
    let bias_correction = 1.0 - power(beta1, step);
    AdamaxCoeffs {
      neg_clr: -(self.lr / bias_correction),
      lerp_weight: 1.0 - beta1,
      beta2,
      eps: self.eps,
      l2: self.weight_decay,
      maximize: self.maximize,
    }
  }

  fn update<T: Float>(c: &AdamaxCoeffs, param: &mut [T], grad: &[T], buffers: [&mut [T]; MAX_BUFFERS]) -> bool {
    update_stored(c, param, grad, buffers, None)
  }

  /// Fused: the state's conversions run inside the kernel's loop.
  fn update_bf16(
    c: &AdamaxCoeffs,
    param: &mut [f32],
    grad: &[f32],
    buffers: Bf16Buffers,
    noise: Option<Noise>,
  ) -> bool {
    update_stored(c, param, grad, buffers, noise)
  }

  fn update_reference<T: Float>(c: &AdamaxCoeffs, param: &mut [T], grad: &[T], buffers: [&mut [T]; MAX_BUFFERS]) {
    let [exp_avg, exp_inf, _] = buffers;
    let cast = T::from_f64;
    for i in 0..param.len() {
      let mut g = grad[i];
      if c.maximize {
        g = -g;
      }
      if c.l2 != 0.0 {
        g = cast(c.l2).mul_add(param[i], g);
      }
      let weight = cast(c.lerp_weight);
      let m = exp_avg[i];
      exp_avg[i] =
        if weight.abs() < cast(0.5) { weight.mul_add(g - m, m) } else { (weight - T::ONE).mul_add(g - m, g) };
      exp_inf[i] = (exp_inf[i] * cast(c.beta2)).max_nan(g.abs() + cast(c.eps));
      param[i] = param[i] + cast(c.neg_clr) * exp_avg[i] / exp_inf[i];
    }
  }
}

/// [`AdamaxCoeffs`] rounded to the element type, once per piece.
struct Scalars<T> {
  gradient: Gradient<T>,
  /// m toward g, by 1 − β₁.
  lerp: Lerp<T>,
  beta2: T,
  eps: T,
  neg_clr: T,
}

impl<T: Float> Scalars<T> {
  fn new(c: &AdamaxCoeffs) -> Self {
    Scalars {
      gradient: Gradient::new(c.maximize, c.l2),
      lerp: Lerp::new(c.lerp_weight),
      beta2: T::from_f64(c.beta2),
      eps: T::from_f64(c.eps),
      neg_clr: T::from_f64(c.neg_clr),
    }
  }
}

/// [`Optimizer::update`] with the state stored as `S`: `T` itself, or bfloat16 for `f32`.
fn update_stored<T: Float, S: Storage<T>>(
  c: &AdamaxCoeffs,
  param: &mut [T],
  grad: &[T],
  buffers: [&mut [S]; MAX_BUFFERS],
  noise: Option<Noise>,
) -> bool {
  let k = Scalars::new(c);
  let [exp_avg, exp_inf, _] = buffers;
  let mut non_finite = false;
  dispatch!(fused_best::<T, S>[L2: c.l2 != 0.0, STOCHASTIC: noise.is_some()](&k, param, grad, exp_avg, exp_inf, noise.unwrap_or(Noise::NONE), &mut non_finite));
  non_finite
}

multiversion!(fn fused_best<T: Float, S: Storage<T>, const L2: bool, const STOCHASTIC: bool>(k: &Scalars<T>, param: &mut [T], grad: &[T], exp_avg: &mut [S], exp_inf: &mut [S], noise: Noise, non_finite: &mut bool) => fused);

/// One pass over memory: reads p, g, m, u, writes p, m, u.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn fused<T: Float, S: Storage<T>, const L2: bool, const STOCHASTIC: bool>(
  k: &Scalars<T>,
  param: &mut [T],
  grad: &[T],
  exp_avg: &mut [S],
  exp_inf: &mut [S],
  noise: Noise,
  non_finite: &mut bool,
) {
  let n = param.len();
  let grad = &grad[..n];
  let exp_avg = &mut exp_avg[..n];
  let exp_inf = &mut exp_inf[..n];
  let mut check = NonFinite::new();
  for i in 0..n {
    check.see(grad[i]);
    let p = param[i];
    let g = k.gradient.at::<L2>(grad[i], p);
    let m = exp_avg[i].load();
    let m = k.lerp.apply(m, g);
    let u = (exp_inf[i].load() * k.beta2).max_nan(g.abs() + k.eps);
    exp_avg[i] = if STOCHASTIC { S::store_random(m, noise.at(0, i)) } else { S::store(m) };
    exp_inf[i] = if STOCHASTIC { S::store_random(u, noise.at(1, i)) } else { S::store(u) };
    param[i] = p + k.neg_clr * m / u;
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

  fn configs() -> Vec<Adamax> {
    let base = Adamax::default();
    vec![
      base,
      Adamax { weight_decay: 0.1, lr: 1e-2, ..base },
      Adamax { maximize: true, betas: (0.3, 0.9), eps: 1e-3, ..base },
    ]
  }

  #[test]
  fn fused_parallel_kernel_matches_reference_bit_for_bit() {
    assert_fused_matches_reference(&configs());
  }

  #[test]
  fn zero_learning_rate_leaves_parameters_unchanged() {
    let configs: Vec<Adamax> = configs().into_iter().map(|c| Adamax { lr: 0.0, ..c }).collect();
    assert_zero_lr_is_identity(&configs);
  }

  #[test]
  fn first_steps_derived_by_hand() {
    // t = 1: m = (1 − β₁)·g, u = |g| + ε, and the step is γ·g/(|g| + ε): γ·sign(g) up to ε.
    // t = 2 with g₂ = 0: m = β₁(1 − β₁)·g, u = max(β₂·u, ε), step γ/(1 − β₁²)·m/u.
    let config = Adamax { lr: 0.1, betas: (0.5, 0.75), eps: 1e-8, ..Adamax::default() };
    let mut state = ParamState::default();
    let mut param = vec![1.0f64, -2.0];
    step_once(config, &mut state, &mut param, &[0.25, -4.0], true);
    let p1 = [1.0 - 0.1 * 0.25 / (0.25 + 1e-8), -2.0 + 0.1 * 4.0 / (4.0 + 1e-8)];
    for (got, want) in param.iter().zip(p1) {
      assert!((got - want).abs() <= 1e-15, "{got} vs {want}");
    }
    step_once(config, &mut state, &mut param, &[0.0, 0.0], true);
    let m = [0.25 * 0.25, 0.25 * -4.0];
    let u = [0.75 * (0.25 + 1e-8), 0.75 * (4.0 + 1e-8)];
    assert_eq!(buffers_f64(&state)[0], m);
    for i in 0..2 {
      let want = p1[i] - 0.1 / 0.75 * m[i] / u[i];
      assert!((param[i] - want).abs() <= 1e-15 && (buffers_f64(&state)[1][i] - u[i]).abs() <= 1e-16);
    }
  }

  #[test]
  fn infinity_norm_is_positive_and_bounds_the_first_moment() {
    // m is a weighted average of past gradients (weights summing to 1 − β₁ᵗ) and u ≥ β₂^(t−s)·|gₛ|
    // for every past step s, so |m| ≤ u/β₂^(t−1); and u ≥ ε > 0 throughout.
    let (_, state) = trajectory::<Adamax, f64>(Adamax::default(), 1001, 6, true);
    let buffers = buffers_f64(&state);
    let slack = 0.999f64.powi(-5);
    assert!(buffers[1].iter().all(|&u| u >= 1e-8));
    assert!(buffers[0].iter().zip(&buffers[1]).all(|(m, u)| m.abs() <= u * slack * (1.0 + 1e-12)));
  }

  #[test]
  fn bad_options_are_rejected_with_field_and_value() {
    assert_rejects::<Adamax>(&[
      ("lr", -2e-3, "invalid lr: -0.002 (expected a finite lr >= 0)"),
      ("betas[0]", 1.0, "invalid betas[0]: 1 (expected 0 <= betas[0] < 1)"),
      ("betas[1]", -0.1, "invalid betas[1]: -0.1 (expected 0 <= betas[1] < 1)"),
      ("eps", -1.0, "invalid eps: -1 (expected a finite eps >= 0)"),
      ("weight_decay", f64::INFINITY, "invalid weight_decay: Infinity (expected a finite weight_decay >= 0)"),
      ("maximize", -1.0, "invalid maximize: -1 (expected true or false)"),
    ]);
  }
}
