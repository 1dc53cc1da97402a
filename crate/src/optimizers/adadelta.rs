//! Adadelta.
//!
//! Zeiler, "ADADELTA: An Adaptive Learning Rate Method", arXiv:1212.5701, 2012.
//!
//! With learning rate γ, decay rate ρ, ε and weight decay λ, each element of a parameter p with
//! gradient g, square average v and accumulated update u (both zero before the first step) is
//! updated as
//!
//! ```text
//! g ← −g                          if maximize
//! g ← g + λ·p                     (L2 penalty folded into the gradient)
//! v ← ρ·v + (1 − ρ)·g²
//! Δ ← √(u + ε) / √(v + ε) · g
//! u ← ρ·u + (1 − ρ)·Δ²
//! p ← p − γ·Δ
//! ```
//!
//! Conventions, all PyTorch's: ε is added inside both square roots; u is updated with this step's
//! Δ after Δ is taken (Zeiler's Algorithm 1); γ (1 by default, as in the paper, which has none)
//! scales Δ only, not what u accumulates. Rounding follows PyTorch's CPU ops one by one: `ρ·v` is
//! rounded (`mul_`), then `fma((1 − ρ)·g, g, ρ·v)` (`addcmul_`), the same for u with Δ; each
//! `x + ε` is rounded before its root; Δ is `(√(u + ε) / √(v + ε))·g`, divided then multiplied;
//! `g + λ·p` is `fma(λ, p, g)` and `p − γ·Δ` is `fma(−γ, Δ, p)` (`add` with `alpha`).
//!
//! The square roots here are IEEE's, correctly rounded. PyTorch's tensor `sqrt` on x86-64 CPUs
//! is faithfully rounded only (1 ulp away from the correctly rounded root for a fraction of
//! inputs), so trajectories differ from PyTorch's in the last bits where one of its roots did;
//! with its roots, every other operation here gives PyTorch's bits.

use crate::engine::run::MAX_BUFFERS;
use crate::engine::simd::{dispatch, multiversion};
use crate::float::{Float, NonFinite};
use crate::optimizers::{Buffer, Gradient, Optimizer};

crate::options! {
  /// Adadelta's options (PyTorch's `torch.optim.Adadelta`).
  pub struct Adadelta {
    /// Learning rate γ, the factor the update Δ is scaled by before it is applied.
    lr: f64 = 1.0, NonNegative;
    /// Decay rate ρ of the running averages of g² and of Δ².
    rho: f64 = 0.9, UnitClosed;
    /// ε, added to both running averages inside their square roots.
    eps: f64 = 1e-6, NonNegative;
    /// Weight decay λ, an L2 penalty added to the gradient.
    weight_decay: f64 = 0.0, NonNegative;
    /// Maximize the objective: step along the gradient instead of against it.
    maximize: bool = false;
  }
}

/// The per-step scalars of an Adadelta update, in `f64`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdadeltaCoeffs {
  /// −γ
  pub neg_lr: f64,
  pub rho: f64,
  /// 1 − ρ: the weight of g² in v and of Δ² in u.
  pub grad_weight: f64,
  pub eps: f64,
  /// λ; 0 for none.
  pub l2: f64,
  pub maximize: bool,
}

impl Optimizer for Adadelta {
  const NAME: &'static str = "Adadelta";
  const SUMMARY: &'static str =
    "Adadelta (Zeiler, 2012): per-element steps from running averages of squared gradients and updates";
  const BUFFERS: &'static [Buffer] = &[Buffer::like_param("square_avg"), Buffer::like_param("acc_delta")];
  type Coeffs = AdadeltaCoeffs;

  fn buffers_used(&self) -> usize {
    2
  }

  fn coeffs(&self, _step: u64) -> AdadeltaCoeffs {
    AdadeltaCoeffs {
      neg_lr: -self.lr,
      rho: self.rho,
      grad_weight: 1.0 - self.rho,
      eps: self.eps,
      l2: self.weight_decay,
      maximize: self.maximize,
    }
  }

  fn update<T: Float>(c: &AdadeltaCoeffs, param: &mut [T], grad: &[T], buffers: [&mut [T]; MAX_BUFFERS]) -> bool {
    let mut non_finite = false;
    let k = Scalars::new(c);
    let [square_avg, acc_delta, _] = buffers;
    dispatch!(fused_best::<T>[L2: c.l2 != 0.0](&k, param, grad, square_avg, acc_delta, &mut non_finite));
    non_finite
  }

  fn update_reference<T: Float>(c: &AdadeltaCoeffs, param: &mut [T], grad: &[T], buffers: [&mut [T]; MAX_BUFFERS]) {
    let [square_avg, acc_delta, _] = buffers;
    let cast = T::from_f64;
    for i in 0..param.len() {
      let mut g = grad[i];
      if c.maximize {
        g = -g;
      }
      if c.l2 != 0.0 {
        g = cast(c.l2).mul_add(param[i], g);
      }
      square_avg[i] = square_avg[i] * cast(c.rho);
      square_avg[i] = (cast(c.grad_weight) * g).mul_add(g, square_avg[i]);
      let std = (square_avg[i] + cast(c.eps)).sqrt();
      let mut delta = (acc_delta[i] + cast(c.eps)).sqrt();
      delta = delta / std;
      delta = delta * g;
      acc_delta[i] = acc_delta[i] * cast(c.rho);
      acc_delta[i] = (cast(c.grad_weight) * delta).mul_add(delta, acc_delta[i]);
      param[i] = cast(c.neg_lr).mul_add(delta, param[i]);
    }
  }
}

/// [`AdadeltaCoeffs`] rounded to the element type, once per piece.
struct Scalars<T> {
  gradient: Gradient<T>,
  rho: T,
  grad_weight: T,
  eps: T,
  neg_lr: T,
}

impl<T: Float> Scalars<T> {
  fn new(c: &AdadeltaCoeffs) -> Self {
    Scalars {
      gradient: Gradient::new(c.maximize, c.l2),
      rho: T::from_f64(c.rho),
      grad_weight: T::from_f64(c.grad_weight),
      eps: T::from_f64(c.eps),
      neg_lr: T::from_f64(c.neg_lr),
    }
  }
}

multiversion!(fn fused_best<T: Float, const L2: bool>(k: &Scalars<T>, param: &mut [T], grad: &[T], square_avg: &mut [T], acc_delta: &mut [T], non_finite: &mut bool) => fused);

/// One pass over memory: reads p, g, v, u, writes p, v, u.
#[inline(always)]
fn fused<T: Float, const L2: bool>(
  k: &Scalars<T>,
  param: &mut [T],
  grad: &[T],
  square_avg: &mut [T],
  acc_delta: &mut [T],
  non_finite: &mut bool,
) {
  let n = param.len();
  let grad = &grad[..n];
  let square_avg = &mut square_avg[..n];
  let acc_delta = &mut acc_delta[..n];
  let mut check = NonFinite::new();
  for i in 0..n {
    check.see(grad[i]);
    let p = param[i];
    let g = k.gradient.at::<L2>(grad[i], p);
    let v = (k.grad_weight * g).mul_add(g, square_avg[i] * k.rho);
    square_avg[i] = v;
    let u = acc_delta[i];
    let delta = (u + k.eps).sqrt() / (v + k.eps).sqrt() * g;
    acc_delta[i] = (k.grad_weight * delta).mul_add(delta, u * k.rho);
    param[i] = k.neg_lr.mul_add(delta, p);
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

  fn configs() -> Vec<Adadelta> {
    let base = Adadelta::default();
    vec![
      base,
      Adadelta { weight_decay: 0.1, rho: 0.5, ..base },
      Adadelta { maximize: true, lr: 0.3, eps: 1e-3, ..base },
      // ρ = 1 freezes both averages at zero; ρ = 0 keeps only this step's.
      Adadelta { rho: 1.0, weight_decay: 1e-2, ..base },
      Adadelta { rho: 0.0, maximize: true, ..base },
    ]
  }

  #[test]
  fn fused_parallel_kernel_matches_reference_bit_for_bit() {
    assert_fused_matches_reference(&configs());
  }

  #[test]
  fn zero_learning_rate_leaves_parameters_unchanged() {
    let configs: Vec<Adadelta> = configs().into_iter().map(|c| Adadelta { lr: 0.0, ..c }).collect();
    assert_zero_lr_is_identity(&configs);
  }

  #[test]
  fn first_step_derived_by_hand() {
    // t = 1 with u = v = 0: v = (1 − ρ)·g², Δ = √ε/√((1 − ρ)·g² + ε)·g, u = (1 − ρ)·Δ², p − γΔ.
    // With ρ = 0.75, ε = 1e-6, γ = 0.5: g = 2 gives v = 1, Δ ≈ 2·1e-3/√(1 + 1e-6).
    let config = Adadelta { lr: 0.5, rho: 0.75, eps: 1e-6, ..Adadelta::default() };
    let mut state = ParamState::default();
    let mut param = vec![1.0f64, -2.0, 0.5];
    step_once(config, &mut state, &mut param, &[2.0, -4.0, 0.0], true);
    let delta = |g: f64| 1e-3 / (0.25 * g * g + 1e-6f64).sqrt() * g;
    let expected = [1.0 - 0.5 * delta(2.0), -2.0 - 0.5 * delta(-4.0), 0.5];
    for (got, want) in param.iter().zip(expected) {
      assert!((got - want).abs() <= 1e-15, "{got} vs {want}");
    }
    let buffers = buffers_f64(&state);
    assert_eq!(buffers[0], [1.0, 4.0, 0.0]);
    for (got, g) in buffers[1].iter().zip([2.0, -4.0, 0.0]) {
      assert!((got - 0.25 * delta(g) * delta(g)).abs() <= 1e-20, "{got}");
    }
  }

  #[test]
  fn averages_are_never_negative() {
    for config in configs() {
      let (_, state) = trajectory::<Adadelta, f32>(config, 1001, 6, true);
      let buffers = buffers_f64(&state);
      assert!(buffers.iter().all(|b| b.iter().all(|&x| x >= 0.0)), "{config:?}");
    }
  }

  #[test]
  fn bad_options_are_rejected_with_field_and_value() {
    assert_rejects::<Adadelta>(&[
      ("lr", -1.0, "invalid lr: -1 (expected a finite lr >= 0)"),
      ("rho", 1.5, "invalid rho: 1.5 (expected 0 <= rho <= 1)"),
      ("rho", -0.1, "invalid rho: -0.1 (expected 0 <= rho <= 1)"),
      ("eps", -1e-6, "invalid eps: -1e-6 (expected a finite eps >= 0)"),
      ("weight_decay", f64::NAN, "invalid weight_decay: NaN (expected a finite weight_decay >= 0)"),
      ("maximize", 2.0, "invalid maximize: 2 (expected true or false)"),
    ]);
  }
}
