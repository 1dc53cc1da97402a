//! RMSprop, plain or centered, with optional momentum.
//!
//! Tieleman & Hinton, "Lecture 6.5 — RMSprop", COURSERA: Neural Networks for Machine Learning,
//! 2012. Centered variant and momentum: Graves, "Generating Sequences With Recurrent Neural
//! Networks", arXiv:1308.0850, 2013.
//!
//! With learning rate γ, smoothing constant α, momentum μ and weight decay λ, each element of a
//! parameter p with gradient g, square average v, gradient average a (centered) and momentum
//! buffer b (all zero before the first step) is updated as
//!
//! ```text
//! g ← −g                        if maximize
//! g ← g + λ·p                   (L2 penalty folded into the gradient)
//! v ← α·v + (1 − α)·g²
//! a ← a + (1 − α)·(g − a)       centered: the variance v − a² replaces v below
//! d ← √v + ε                    or √(v − a²) + ε when centered
//! b ← μ·b + g/d,  p ← p − γ·b   if μ > 0
//! p ← p − γ·g/d                 otherwise
//! ```
//!
//! Conventions, all PyTorch's: ε is added after the square root; the averages start at zero and
//! are not bias-corrected; γ stays outside the momentum buffer. Rounding follows PyTorch's
//! vectorised CPU ops: `α·v + (1 − α)·g²` is `fma((1 − α)·g, g, α·v)` (`addcmul_`), `v − a²` is
//! `fma(−a, a, v)`, `p − γ·b` is `fma(−γ, b, p)`, the average a is the lerp Adam uses, and
//! `p − γ·g/d` is `p + (−γ·g)/d` (`addcdiv_`).
//!
//! Buffers are created the first time a step needs them, in PyTorch's order: `square_avg`,
//! `momentum_buffer`, `grad_avg`. Centered RMSprop without momentum therefore also holds an
//! unused (zero) `momentum_buffer`: state buffers are taken by count, not by set.

use crate::engine::run::MAX_BUFFERS;
use crate::engine::simd::{dispatch, multiversion};
use crate::float::{Float, Lerp, NonFinite};
use crate::optimizers::{Buffer, Gradient, Optimizer};

crate::options! {
  /// RMSprop's options (PyTorch's `torch.optim.RMSprop`).
  pub struct RMSprop {
    /// Learning rate γ.
    lr: f64 = 1e-2, NonNegative;
    /// Smoothing constant α of the square average (PyTorch only requires α ≥ 0).
    alpha: f64 = 0.99, NonNegative;
    /// ε, added to the square root of the (centered) square average.
    eps: f64 = 1e-8, NonNegative;
    /// Weight decay λ, an L2 penalty added to the gradient.
    weight_decay: f64 = 0.0, NonNegative;
    /// Momentum μ of the buffer that accumulates the scaled gradients; 0 for none.
    momentum: f64 = 0.0, NonNegative;
    /// Divide by an estimate of the variance, v − a², with a the average gradient, instead of by v.
    centered: bool = false;
    /// Maximize the objective: step along the gradient instead of against it.
    maximize: bool = false;
  }
}

/// The per-step scalars of an RMSprop update, in `f64`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RMSpropCoeffs {
  /// −γ
  pub neg_lr: f64,
  pub alpha: f64,
  /// 1 − α: the weight of g² in v and the lerp weight of a.
  pub grad_weight: f64,
  pub eps: f64,
  /// λ; 0 for none.
  pub l2: f64,
  /// μ; 0 for none.
  pub momentum: f64,
  pub centered: bool,
  pub maximize: bool,
}

impl Optimizer for RMSprop {
  const NAME: &'static str = "RMSprop";
  const SUMMARY: &'static str = "RMSprop (Hinton, 2012), with momentum and the centered variant";
  const BUFFERS: &'static [Buffer] =
    &[Buffer::like_param("square_avg"), Buffer::like_param("momentum_buffer"), Buffer::like_param("grad_avg")];
  type Coeffs = RMSpropCoeffs;

  fn buffers_used(&self) -> usize {
    if self.centered {
      3
    } else if self.momentum > 0.0 {
      2
    } else {
      1
    }
  }

  fn coeffs(&self, _step: u64) -> RMSpropCoeffs {
    RMSpropCoeffs {
      neg_lr: -self.lr,
      alpha: self.alpha,
      grad_weight: 1.0 - self.alpha,
      eps: self.eps,
      l2: self.weight_decay,
      momentum: self.momentum,
      centered: self.centered,
      maximize: self.maximize,
    }
  }

  fn update<T: Float>(c: &RMSpropCoeffs, param: &mut [T], grad: &[T], buffers: [&mut [T]; MAX_BUFFERS]) -> bool {
    let mut non_finite = false;
    let k = Scalars::new(c);
    dispatch!(fused_best::<T>[L2: c.l2 != 0.0, CENTERED: c.centered, MOMENTUM: c.momentum > 0.0](
      &k, param, grad, buffers, &mut non_finite
    ));
    non_finite
  }

  fn update_reference<T: Float>(c: &RMSpropCoeffs, param: &mut [T], grad: &[T], buffers: [&mut [T]; MAX_BUFFERS]) {
    let [square_avg, momentum_buffer, grad_avg] = buffers;
    let cast = T::from_f64;
    for i in 0..param.len() {
      let mut g = grad[i];
      if c.maximize {
        g = -g;
      }
      if c.l2 != 0.0 {
        g = cast(c.l2).mul_add(param[i], g);
      }
      square_avg[i] = (cast(c.grad_weight) * g).mul_add(g, square_avg[i] * cast(c.alpha));
      let mut variance = square_avg[i];
      if c.centered {
        grad_avg[i] = lerp(grad_avg[i], g, cast(c.grad_weight));
        variance = (-grad_avg[i]).mul_add(grad_avg[i], variance);
      }
      let denom = variance.sqrt() + cast(c.eps);
      if c.momentum > 0.0 {
        momentum_buffer[i] = momentum_buffer[i] * cast(c.momentum) + g / denom;
        param[i] = cast(c.neg_lr).mul_add(momentum_buffer[i], param[i]);
      } else {
        param[i] = param[i] + cast(c.neg_lr) * g / denom;
      }
    }
  }
}

/// `a + w·(g − a)` as PyTorch's CPU `lerp` computes it: one fused multiply-add, from the nearer end.
#[inline(always)]
fn lerp<T: Float>(a: T, g: T, weight: T) -> T {
  if weight.abs() < T::from_f64(0.5) {
    weight.mul_add(g - a, a)
  } else {
    (weight - T::ONE).mul_add(g - a, g)
  }
}

/// [`RMSpropCoeffs`] rounded to the element type, once per piece.
struct Scalars<T> {
  gradient: Gradient<T>,
  alpha: T,
  grad_weight: T,
  /// a toward g, by 1 − α.
  lerp: Lerp<T>,
  eps: T,
  momentum: T,
  neg_lr: T,
}

impl<T: Float> Scalars<T> {
  fn new(c: &RMSpropCoeffs) -> Self {
    Scalars {
      gradient: Gradient::new(c.maximize, c.l2),
      alpha: T::from_f64(c.alpha),
      grad_weight: T::from_f64(c.grad_weight),
      lerp: Lerp::new(c.grad_weight),
      eps: T::from_f64(c.eps),
      momentum: T::from_f64(c.momentum),
      neg_lr: T::from_f64(c.neg_lr),
    }
  }
}

multiversion!(fn fused_best<T: Float, const L2: bool, const CENTERED: bool, const MOMENTUM: bool>(k: &Scalars<T>, param: &mut [T], grad: &[T], buffers: [&mut [T]; MAX_BUFFERS], non_finite: &mut bool) => fused);

/// One pass over memory: reads p, g, v (a, b), writes p, v (a, b).
#[inline(always)]
fn fused<T: Float, const L2: bool, const CENTERED: bool, const MOMENTUM: bool>(
  k: &Scalars<T>,
  param: &mut [T],
  grad: &[T],
  buffers: [&mut [T]; MAX_BUFFERS],
  non_finite: &mut bool,
) {
  let [square_avg, momentum_buffer, grad_avg] = buffers;
  let n = param.len();
  let grad = &grad[..n];
  let square_avg = &mut square_avg[..n];
  let momentum_buffer = if MOMENTUM { &mut momentum_buffer[..n] } else { &mut [][..] };
  let grad_avg = if CENTERED { &mut grad_avg[..n] } else { &mut [][..] };
  let mut check = NonFinite::new();
  for i in 0..n {
    check.see(grad[i]);
    let p = param[i];
    let g = k.gradient.at::<L2>(grad[i], p);
    let v = (k.grad_weight * g).mul_add(g, square_avg[i] * k.alpha);
    square_avg[i] = v;
    let variance = if CENTERED {
      let a = grad_avg[i];
      let a = k.lerp.apply(a, g);
      grad_avg[i] = a;
      (-a).mul_add(a, v)
    } else {
      v
    };
    let denom = variance.sqrt() + k.eps;
    param[i] = if MOMENTUM {
      let b = momentum_buffer[i] * k.momentum + g / denom;
      momentum_buffer[i] = b;
      k.neg_lr.mul_add(b, p)
    } else {
      p + k.neg_lr * g / denom
    };
  }
  *non_finite |= check.found();
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::engine::state::{Buffers, ParamState};
  use crate::testing::{
    assert_fused_matches_reference, assert_rejects, assert_zero_lr_is_identity, step_once, trajectory,
  };

  fn configs() -> Vec<RMSprop> {
    let base = RMSprop::default();
    vec![
      base,
      RMSprop { weight_decay: 0.1, alpha: 0.9, ..base },
      RMSprop { centered: true, ..base },
      RMSprop { momentum: 0.9, maximize: true, ..base },
      RMSprop { centered: true, momentum: 0.5, weight_decay: 1e-2, eps: 1e-3, ..base },
      // 1 − α ≥ 0.5: the lerp of a runs from the other end.
      RMSprop { centered: true, alpha: 0.3, ..base },
    ]
  }

  #[test]
  fn fused_parallel_kernel_matches_reference_bit_for_bit() {
    assert_fused_matches_reference(&configs());
  }

  #[test]
  fn zero_learning_rate_leaves_parameters_unchanged() {
    let configs: Vec<RMSprop> = configs().into_iter().map(|c| RMSprop { lr: 0.0, ..c }).collect();
    assert_zero_lr_is_identity(&configs);
  }

  #[test]
  fn first_step_derived_by_hand() {
    // t = 1: v = (1 − α)·g², so the step is γ·g/(√(1 − α)·|g| + ε); centered, a = (1 − α)·g
    // and v − a² = α(1 − α)·g².
    let mut param = vec![1.0f64, -2.0, 0.5];
    let grad = [0.25, -4.0, 0.0];
    let config = RMSprop { lr: 0.1, alpha: 0.75, eps: 1e-8, ..RMSprop::default() };
    step_once(config, &mut ParamState::default(), &mut param, &grad, true);
    let expected = [1.0 - 0.1 * 0.25 / (0.5 * 0.25 + 1e-8), -2.0 + 0.1 * 4.0 / (0.5 * 4.0 + 1e-8), 0.5];
    for (got, want) in param.iter().zip(expected) {
      assert!((got - want).abs() <= 1e-15, "{got} vs {want}");
    }
    let mut param = vec![1.0f64];
    step_once(RMSprop { centered: true, ..config }, &mut ParamState::default(), &mut param, &[2.0], false);
    let sd = (0.75f64 * 0.25 * 4.0).sqrt();
    assert!((param[0] - (1.0 - 0.1 * 2.0 / (sd + 1e-8))).abs() <= 1e-15);
  }

  #[test]
  fn square_average_is_never_negative_and_buffers_follow_the_options() {
    for config in configs() {
      let (_, state) = trajectory::<RMSprop, f64>(config, 1001, 6, true);
      let Buffers::F64(buffers) = &state.buffers else { panic!("f64 state") };
      assert_eq!(buffers.len(), config.buffers_used());
      assert!(buffers[0].iter().all(|&v| v >= 0.0), "{config:?}");
      if config.centered {
        // v − a² ≥ 0 up to rounding: a is an average of g, v of g² with the same weights.
        assert!(buffers[0].iter().zip(&buffers[2]).all(|(v, a)| v - a * a >= -1e-12 * v), "{config:?}");
      }
    }
  }

  #[test]
  fn bad_options_are_rejected_with_field_and_value() {
    assert_rejects::<RMSprop>(&[
      ("lr", -0.01, "invalid lr: -0.01 (expected a finite lr >= 0)"),
      ("alpha", -0.5, "invalid alpha: -0.5 (expected a finite alpha >= 0)"),
      ("eps", f64::INFINITY, "invalid eps: Infinity (expected a finite eps >= 0)"),
      ("weight_decay", -1.0, "invalid weight_decay: -1 (expected a finite weight_decay >= 0)"),
      ("momentum", -0.9, "invalid momentum: -0.9 (expected a finite momentum >= 0)"),
      ("centered", 3.0, "invalid centered: 3 (expected true or false)"),
    ]);
  }
}
