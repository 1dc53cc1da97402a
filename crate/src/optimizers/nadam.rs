//! NAdam: Adam with Nesterov momentum.
//!
//! Dozat, "Incorporating Nesterov Momentum into Adam", ICLR 2016 workshop. Decoupled weight decay
//! (NAdamW): Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.
//!
//! With learning rate γ, betas β₁ β₂, momentum decay ψ, weight decay λ and step t (1 on the
//! first update), the momentum schedule is μₜ = β₁·(1 − ½·0.96^(t·ψ)), and each parameter carries
//! the product Πₜ = μ₁·…·μₜ. Each element of a parameter p with gradient g, first moment m and
//! second moment v (both zero before the first step) is updated as
//!
//! ```text
//! g ← −g                          if maximize
//! g ← g + λ·p                     (L2 penalty folded into the gradient)
//! p ← p·(1 − γ·λ)                 with decoupled weight decay instead
//! m ← m + (1 − β₁)·(g − m)        = β₁·m + (1 − β₁)·g
//! v ← β₂·v + (1 − β₂)·g²
//! d ← √(v/(1 − β₂ᵗ)) + ε
//! p ← p − γ(1 − μₜ)/(1 − Πₜ) · g/d
//! p ← p − γ·μₜ₊₁/(1 − Πₜ·μₜ₊₁) · m/d
//! ```
//!
//! Conventions, all PyTorch's: ε is added after the square root of the bias-corrected second
//! moment; the gradient and the moment enter as two separate `addcdiv_`s, `p + (c·g)/d` then
//! `p + (c′·m)/d`. Πₜ lives in a float32 tensor in PyTorch (its default scalar dtype) whatever
//! the parameter's dtype, and is multiplied there, so it is kept rounded to `f32` here too, in
//! [`ParamState::scalars`]; Πₜ·μₜ₊₁ and both step sizes are `f64`. Because Πₜ is per-parameter
//! state, not a function of t, changing β₁ or ψ mid-run affects each parameter from where it is.
//! The m update is the lerp Adam uses and `β₂·v + (1 − β₂)·g²` is `fma((1 − β₂)·g, g, β₂·v)`, as
//! PyTorch's vectorised CPU `lerp_` and `addcmul_` compute them.

use crate::engine::bf16::{Noise, Storage};
use crate::engine::run::MAX_BUFFERS;
use crate::engine::simd::{dispatch, multiversion};
use crate::engine::state::ParamState;
use crate::float::{Float, Lerp, NonFinite};
use crate::optimizers::{Bf16Buffers, Buffer, Gradient, Optimizer};
use crate::powers::power;

crate::options! {
  /// NAdam's options (PyTorch's `torch.optim.NAdam`).
  pub struct NAdam {
    /// Learning rate γ.
    lr: f64 = 2e-3, NonNegative;
    /// Decay rates (β₁, β₂) of the first- and second-moment averages.
    betas: (f64, f64) = (0.9, 0.999), UnitHalfOpen;
    /// ε, added to the root of the bias-corrected second moment.
    eps: f64 = 1e-8, NonNegative;
    /// Weight decay λ: an L2 penalty added to the gradient, or a decay of the weights by 1 − γλ with `decoupled_weight_decay`.
    weight_decay: f64 = 0.0, NonNegative;
    /// ψ in the momentum schedule μₜ = β₁(1 − ½·0.96^(tψ)).
    momentum_decay: f64 = 4e-3, NonNegative;
    /// Decay the weights directly (NAdamW) instead of adding λ·p to the gradient.
    decoupled_weight_decay: bool = false;
    /// Maximize the objective: step along the gradient instead of against it.
    maximize: bool = false;
  }
}

/// The per-step scalars of a NAdam update, in `f64`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NAdamCoeffs {
  pub lr: f64,
  /// μₜ
  pub mu: f64,
  /// μₜ₊₁
  pub mu_next: f64,
  /// −γ(1 − μₜ)/(1 − Πₜ): per parameter, set by [`Optimizer::advance`] (NaN until then).
  pub grad_step: f64,
  /// −γ·μₜ₊₁/(1 − Πₜ·μₜ₊₁): per parameter, set by [`Optimizer::advance`] (NaN until then).
  pub moment_step: f64,
  /// 1 − β₁, the lerp weight of the first moment.
  pub lerp_weight: f64,
  pub beta2: f64,
  /// 1 − β₂
  pub grad_sq_weight: f64,
  /// 1 − β₂ᵗ
  pub bias_correction2: f64,
  pub eps: f64,
  /// λ of the L2 penalty; 0 when decay is decoupled.
  pub l2: f64,
  /// 1 − γ·λ for decoupled decay; exactly 1 otherwise.
  pub decay_factor: f64,
  pub maximize: bool,
}

impl Optimizer for NAdam {
  const NAME: &'static str = "NAdam";
  const BF16_STATE: bool = true;
  const SUMMARY: &'static str = "NAdam (Dozat, 2016): Adam with Nesterov momentum and a momentum schedule";
  const BUFFERS: &'static [Buffer] = &[Buffer::like_param("exp_avg"), Buffer::like_param("exp_avg_sq")];
  const SCALARS: &'static [&'static str] = &["mu_product"];
  type Coeffs = NAdamCoeffs;

  fn buffers_used(&self) -> usize {
    2
  }

  fn coeffs(&self, step: u64) -> NAdamCoeffs {
    let (beta1, beta2) = self.betas;
    let t = step as f64;
    let momentum = |t: f64| beta1 * (1.0 - 0.5 * 0.96f64.powf(t * self.momentum_decay));
    let decoupled = self.decoupled_weight_decay && self.weight_decay != 0.0;
    NAdamCoeffs {
      lr: self.lr,
      mu: momentum(t),
      mu_next: momentum(t + 1.0),
      grad_step: f64::NAN,
      moment_step: f64::NAN,
      lerp_weight: 1.0 - beta1,
      beta2,
      grad_sq_weight: 1.0 - beta2,
      bias_correction2: 1.0 - power(beta2, step),
      eps: self.eps,
      l2: if self.decoupled_weight_decay { 0.0 } else { self.weight_decay },
      decay_factor: if decoupled { 1.0 - self.lr * self.weight_decay } else { 1.0 },
      maximize: self.maximize,
    }
  }

  /// Πₜ = Πₜ₋₁·μₜ, rounded to `f32` as PyTorch's float32 `mu_product` is; Π₀ = 1 for a
  /// parameter with no state yet.
  fn advance(&self, c: &mut NAdamCoeffs, state: &mut ParamState) {
    let before = if state.buffers.is_empty() { 1.0 } else { state.scalars[0] };
    let product = f64::from(before as f32 * c.mu as f32);
    state.scalars[0] = product;
    let product_next = product * c.mu_next;
    c.grad_step = -c.lr * (1.0 - c.mu) / (1.0 - product);
    c.moment_step = -c.lr * c.mu_next / (1.0 - product_next);
  }

  fn update<T: Float>(c: &NAdamCoeffs, param: &mut [T], grad: &[T], buffers: [&mut [T]; MAX_BUFFERS]) -> bool {
    update_stored(c, param, grad, buffers, None)
  }

  /// Fused: the state's conversions run inside the kernel's loop.
  fn update_bf16(c: &NAdamCoeffs, param: &mut [f32], grad: &[f32], buffers: Bf16Buffers, noise: Option<Noise>) -> bool {
    update_stored(c, param, grad, buffers, noise)
  }

  fn update_reference<T: Float>(c: &NAdamCoeffs, param: &mut [T], grad: &[T], buffers: [&mut [T]; MAX_BUFFERS]) {
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
      let denom = (exp_avg_sq[i] / cast(c.bias_correction2)).sqrt() + cast(c.eps);
      p = p + cast(c.grad_step) * g / denom;
      param[i] = p + cast(c.moment_step) * exp_avg[i] / denom;
    }
  }
}

/// [`NAdamCoeffs`] rounded to the element type, once per piece.
struct Scalars<T> {
  gradient: Gradient<T>,
  decay_factor: T,
  /// m toward g, by 1 − β₁.
  lerp: Lerp<T>,
  beta2: T,
  grad_sq_weight: T,
  bias_correction2: T,
  eps: T,
  grad_step: T,
  moment_step: T,
}

impl<T: Float> Scalars<T> {
  fn new(c: &NAdamCoeffs) -> Self {
    Scalars {
      gradient: Gradient::new(c.maximize, c.l2),
      decay_factor: T::from_f64(c.decay_factor),
      lerp: Lerp::new(c.lerp_weight),
      beta2: T::from_f64(c.beta2),
      grad_sq_weight: T::from_f64(c.grad_sq_weight),
      bias_correction2: T::from_f64(c.bias_correction2),
      eps: T::from_f64(c.eps),
      grad_step: T::from_f64(c.grad_step),
      moment_step: T::from_f64(c.moment_step),
    }
  }
}

/// [`Optimizer::update`] with the state stored as `S`: `T` itself, or bfloat16 for `f32`.
fn update_stored<T: Float, S: Storage<T>>(
  c: &NAdamCoeffs,
  param: &mut [T],
  grad: &[T],
  buffers: [&mut [S]; MAX_BUFFERS],
  noise: Option<Noise>,
) -> bool {
  let k = Scalars::new(c);
  let [exp_avg, exp_avg_sq, _] = buffers;
  let mut non_finite = false;
  dispatch!(fused_best::<T, S>[L2: c.l2 != 0.0, STOCHASTIC: noise.is_some()](&k, param, grad, exp_avg, exp_avg_sq, noise.unwrap_or(Noise::NONE), &mut non_finite));
  non_finite
}

multiversion!(fn fused_best<T: Float, S: Storage<T>, const L2: bool, const STOCHASTIC: bool>(k: &Scalars<T>, param: &mut [T], grad: &[T], exp_avg: &mut [S], exp_avg_sq: &mut [S], noise: Noise, non_finite: &mut bool) => fused);

/// One pass over memory: reads p, g, m, v, writes p, m, v. `p·decay_factor` is exact when the
/// factor is 1.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn fused<T: Float, S: Storage<T>, const L2: bool, const STOCHASTIC: bool>(
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
    let denom = (v / k.bias_correction2).sqrt() + k.eps;
    p = p + k.grad_step * g / denom;
    param[i] = p + k.moment_step * m / denom;
  }
  *non_finite |= check.found();
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::testing::{
    assert_fused_matches_reference, assert_rejects, assert_zero_lr_is_identity, buffers_f64, step_once, trajectory,
    values,
  };

  fn configs() -> Vec<NAdam> {
    let base = NAdam::default();
    vec![
      base,
      NAdam { weight_decay: 0.1, lr: 1e-2, ..base },
      NAdam { decoupled_weight_decay: true, weight_decay: 0.05, momentum_decay: 0.0, ..base },
      NAdam { maximize: true, betas: (0.3, 0.9), eps: 1e-3, ..base },
    ]
  }

  #[test]
  fn fused_parallel_kernel_matches_reference_bit_for_bit() {
    assert_fused_matches_reference(&configs());
  }

  #[test]
  fn zero_learning_rate_leaves_parameters_unchanged() {
    let configs: Vec<NAdam> = configs().into_iter().map(|c| NAdam { lr: 0.0, ..c }).collect();
    assert_zero_lr_is_identity(&configs);
  }

  #[test]
  fn first_step_derived_by_hand() {
    // t = 1: Π₁ = μ₁ (rounded to f32), m = (1 − β₁)g, v = (1 − β₂)g², so d = |g| + ε and the
    // step is γ·[(1 − μ₁)/(1 − Π₁) + μ₂(1 − β₁)/(1 − Π₁μ₂)]·g/(|g| + ε): about γ·1.1·sign(g).
    let config = NAdam { lr: 0.1, ..NAdam::default() };
    let mu = |t: f64| 0.9 * (1.0 - 0.5 * 0.96f64.powf(t * 4e-3));
    let mut state = ParamState::default();
    let mut param = vec![1.0f64, -2.0, 0.5];
    step_once(config, &mut state, &mut param, &[0.25, -4.0, 0.0], true);
    let mu1 = f64::from(mu(1.0) as f32);
    assert_eq!(state.scalars[0], mu1);
    let scale = (1.0 - mu(1.0)) / (1.0 - mu1) + mu(2.0) * 0.1 / (1.0 - mu1 * mu(2.0));
    let expected = [1.0 - 0.1 * scale * 0.25 / (0.25 + 1e-8), -2.0 + 0.1 * scale * 4.0 / (4.0 + 1e-8), 0.5];
    for (got, want) in param.iter().zip(expected) {
      assert!((got - want).abs() <= 1e-14, "{got} vs {want}");
    }
  }

  #[test]
  fn mu_product_is_a_float32_running_product_per_parameter() {
    let config = NAdam::default();
    let (_, state) = trajectory::<NAdam, f64>(config, 5, 30, true);
    let mut product = 1.0f32;
    for t in 1..=30 {
      product *= config.coeffs(t).mu as f32;
    }
    assert_eq!(state.scalars[0], f64::from(product));
    // A parameter that joins later starts its own product at 1.
    let mut late = ParamState::default();
    step_once(config, &mut late, &mut values::<f64>(5, 1), &values::<f64>(5, 2), true);
    assert_eq!(late.scalars[0], f64::from(config.coeffs(1).mu as f32));
  }

  #[test]
  fn second_moment_is_never_negative() {
    for config in configs() {
      let (_, state) = trajectory::<NAdam, f32>(config, 1001, 6, true);
      assert!(buffers_f64(&state)[1].iter().all(|&v| v >= 0.0), "{config:?}");
    }
  }

  #[test]
  fn bad_options_are_rejected_with_field_and_value() {
    assert_rejects::<NAdam>(&[
      ("lr", -1.0, "invalid lr: -1 (expected a finite lr >= 0)"),
      ("betas[0]", 1.5, "invalid betas[0]: 1.5 (expected 0 <= betas[0] < 1)"),
      ("betas[1]", 1.0, "invalid betas[1]: 1 (expected 0 <= betas[1] < 1)"),
      ("eps", -1e-8, "invalid eps: -1e-8 (expected a finite eps >= 0)"),
      ("weight_decay", -0.5, "invalid weight_decay: -0.5 (expected a finite weight_decay >= 0)"),
      ("momentum_decay", -4e-3, "invalid momentum_decay: -0.004 (expected a finite momentum_decay >= 0)"),
      ("decoupled_weight_decay", 0.5, "invalid decoupled_weight_decay: 0.5 (expected true or false)"),
    ]);
  }
}
