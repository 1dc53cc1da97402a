//! Rprop: resilient backpropagation.
//!
//! Riedmiller & Braun, "A Direct Adaptive Method for Faster Backpropagation Learning: The RPROP
//! Algorithm", IEEE International Conference on Neural Networks, 1993. The variant without
//! weight-backtracking that PyTorch implements is Igel & Hüsken's iRprop⁻ ("Improving the Rprop
//! Learning Algorithm", NC 2000).
//!
//! With learning rate γ, factors η₋ < 1 < η₊ (`etas`) and bounds s_min, s_max (`step_sizes`),
//! each element of a parameter p with gradient g, previous gradient g′ (zero before the first
//! step) and step size s (γ before the first step) is updated as
//!
//! ```text
//! g ← −g                          if maximize
//! f ← η₊ if g·g′ > 0,  η₋ if g·g′ < 0,  1 otherwise
//! s ← clamp(s·f, s_min, s_max)
//! g ← 0                           where f = η₋: the sign changed, so no step now and f = 1 next
//! p ← p − sign(g)·s
//! g′ ← g
//! ```
//!
//! Only the gradient's sign moves the parameter; γ is only the step size a parameter starts
//! with, so a later change of γ has no effect on a parameter that has stepped (as in PyTorch).
//!
//! Conventions, all PyTorch's: the sign test is on the product g·g′ rounded in the element type
//! (a product that underflows to zero counts as no sign information), and the factors and bounds
//! are rounded to the element type; `sign` is +1, −1 or +0, and +0 for NaN, so a NaN in g′ holds
//! the step size where it is while p goes on moving by sign(g)·s; the clamp is `min(max(s·f,
//! s_min), s_max)`, so s_max wins when s_min > s_max (PyTorch does not check the bounds). The
//! factor is chosen as PyTorch assigns it, in turn: η₊ where the sign is positive, then η₋ where
//! it is negative, then 1 where it is zero, and g is zeroed where the factor equals η₋. The step
//! size starts as γ on a parameter's first step (its buffer holds γ from then on; a loaded one is
//! used as it is). `p − sign(g)·s` is `fma(−1·sign(g), s, p)` (`addcmul_` with value −1).

use crate::config::{format_number, ConfigError};
use crate::engine::run::MAX_BUFFERS;
use crate::engine::simd::{dispatch, multiversion};
use crate::engine::state::ParamState;
use crate::float::{Float, NonFinite};
use crate::optimizers::{Buffer, Optimizer};

crate::options! {
  /// Rprop's options (PyTorch's `torch.optim.Rprop`).
  pub struct Rprop {
    /// Learning rate γ: the step size every element starts with (later changes do not reach a parameter that has stepped).
    lr: f64 = 1e-2, NonNegative;
    /// Factors (η₋, η₊) the step size is multiplied by when the gradient changes sign or keeps it; 0 < η₋ < 1 < η₊.
    etas: (f64, f64) = (0.5, 1.2), Positive;
    /// Bounds (s_min, s_max) the step size is clamped to.
    step_sizes: (f64, f64) = (1e-6, 50.0), NonNegative;
    /// Maximize the objective: step along the gradient instead of against it.
    maximize: bool = false;
  }
  check = Rprop::check;
}

impl Rprop {
  /// PyTorch's rule: 0 < η₋ < 1 < η₊.
  fn check(&self) -> Result<(), ConfigError> {
    let (minus, plus) = self.etas;
    if !(minus < 1.0 && 1.0 < plus) {
      return Err(ConfigError::Conflict {
        fields: &["etas[0]", "etas[1]"],
        message: format!(
          "Rprop requires 0 < `etas[0]` < 1 < `etas[1]`, got `etas[0]` = {} and `etas[1]` = {}",
          format_number(minus),
          format_number(plus)
        ),
      });
    }
    Ok(())
  }
}

/// The per-step scalars of an Rprop update, in `f64`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RpropCoeffs {
  /// γ, the step size of a parameter's first step.
  pub lr: f64,
  /// η₋
  pub etaminus: f64,
  /// η₊
  pub etaplus: f64,
  pub step_size_min: f64,
  pub step_size_max: f64,
  /// Whether this is the parameter's first step, when its step size starts at γ; set by
  /// [`Optimizer::advance`].
  pub first: bool,
  pub maximize: bool,
}

impl Optimizer for Rprop {
  const NAME: &'static str = "Rprop";
  const SUMMARY: &'static str =
    "Rprop (Riedmiller & Braun, 1993): per-element step sizes grown or shrunk by the gradient's sign";
  const BUFFERS: &'static [Buffer] = &[Buffer::like_param("prev"), Buffer::like_param("step_size")];
  type Coeffs = RpropCoeffs;

  fn buffers_used(&self) -> usize {
    2
  }

  fn coeffs(&self, _step: u64) -> RpropCoeffs {
    RpropCoeffs {
      lr: self.lr,
      etaminus: self.etas.0,
      etaplus: self.etas.1,
      step_size_min: self.step_sizes.0,
      step_size_max: self.step_sizes.1,
      first: false,
      maximize: self.maximize,
    }
  }

  fn advance(&self, c: &mut RpropCoeffs, state: &mut ParamState) {
    c.first = state.buffers.count() == 0;
  }

  fn update<T: Float>(c: &RpropCoeffs, param: &mut [T], grad: &[T], buffers: [&mut [T]; MAX_BUFFERS]) -> bool {
    let mut non_finite = false;
    let k = Scalars::new(c);
    let [prev, step_size, _] = buffers;
    dispatch!(fused_best::<T>[FIRST: c.first](&k, param, grad, prev, step_size, &mut non_finite));
    non_finite
  }

  fn update_reference<T: Float>(c: &RpropCoeffs, param: &mut [T], grad: &[T], buffers: [&mut [T]; MAX_BUFFERS]) {
    let [prev, step_size, _] = buffers;
    let cast = T::from_f64;
    for i in 0..param.len() {
      if c.first {
        step_size[i] = cast(c.lr);
      }
      let mut g = grad[i];
      if c.maximize {
        g = -g;
      }
      let mut factor = sign(g * prev[i]);
      if factor > T::ZERO {
        factor = cast(c.etaplus);
      }
      if factor < T::ZERO {
        factor = cast(c.etaminus);
      }
      if factor == T::ZERO {
        factor = T::ONE;
      }
      let mut s = step_size[i] * factor;
      if s < cast(c.step_size_min) {
        s = cast(c.step_size_min);
      }
      if s > cast(c.step_size_max) {
        s = cast(c.step_size_max);
      }
      step_size[i] = s;
      if factor == cast(c.etaminus) {
        g = T::ZERO;
      }
      param[i] = (-T::ONE * sign(g)).mul_add(s, param[i]);
      prev[i] = g;
    }
  }
}

/// PyTorch's `sign`: 1 above zero, −1 below, +0 for ±0 and NaN.
#[inline(always)]
fn sign<T: Float>(x: T) -> T {
  if x > T::ZERO {
    T::ONE
  } else if x < T::ZERO {
    -T::ONE
  } else {
    T::ZERO
  }
}

/// [`RpropCoeffs`] rounded to the element type, once per piece.
struct Scalars<T> {
  sign: T,
  lr: T,
  etaminus: T,
  etaplus: T,
  step_size_min: T,
  step_size_max: T,
}

impl<T: Float> Scalars<T> {
  fn new(c: &RpropCoeffs) -> Self {
    Scalars {
      sign: if c.maximize { -T::ONE } else { T::ONE },
      lr: T::from_f64(c.lr),
      etaminus: T::from_f64(c.etaminus),
      etaplus: T::from_f64(c.etaplus),
      step_size_min: T::from_f64(c.step_size_min),
      step_size_max: T::from_f64(c.step_size_max),
    }
  }
}

multiversion!(fn fused_best<T: Float, const FIRST: bool>(k: &Scalars<T>, param: &mut [T], grad: &[T], prev: &mut [T], step_size: &mut [T], non_finite: &mut bool) => fused);

/// One pass over memory: reads p, g, g′ and s (not s on the first step), writes p, g′, s.
#[inline(always)]
fn fused<T: Float, const FIRST: bool>(
  k: &Scalars<T>,
  param: &mut [T],
  grad: &[T],
  prev: &mut [T],
  step_size: &mut [T],
  non_finite: &mut bool,
) {
  let n = param.len();
  let grad = &grad[..n];
  let prev = &mut prev[..n];
  let step_size = &mut step_size[..n];
  let mut check = NonFinite::new();
  for i in 0..n {
    check.see(grad[i]);
    let g = grad[i] * k.sign;
    let product = g * prev[i];
    // The factor PyTorch's three masked assignments leave, in the same order.
    let mut factor = sign(product);
    factor = if factor > T::ZERO { k.etaplus } else { factor };
    factor = if factor < T::ZERO { k.etaminus } else { factor };
    factor = if factor == T::ZERO { T::ONE } else { factor };
    let s = (if FIRST { k.lr } else { step_size[i] }) * factor;
    let s = if s < k.step_size_min { k.step_size_min } else { s };
    let s = if s > k.step_size_max { k.step_size_max } else { s };
    step_size[i] = s;
    let g = if factor == k.etaminus { T::ZERO } else { g };
    param[i] = (-sign(g)).mul_add(s, param[i]);
    prev[i] = g;
  }
  *non_finite |= check.found();
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::testing::{
    assert_fused_matches_reference, assert_rejects, assert_zero_lr_is_identity, buffers_f64, step_once, trajectory,
  };

  fn configs() -> Vec<Rprop> {
    let base = Rprop::default();
    vec![
      base,
      Rprop { etas: (0.3, 2.0), step_sizes: (1e-3, 0.05), ..base },
      Rprop { maximize: true, lr: 0.5, ..base },
      // γ above s_max: the first step is already clamped; s_min > s_max: s_max wins.
      Rprop { lr: 2.0, step_sizes: (0.0, 1.0), ..base },
      Rprop { step_sizes: (0.2, 0.1), ..base },
    ]
  }

  #[test]
  fn fused_parallel_kernel_matches_reference_bit_for_bit() {
    assert_fused_matches_reference(&configs());
  }

  #[test]
  fn zero_learning_rate_and_zero_bounds_leave_parameters_unchanged() {
    // γ only seeds the step size; with s_min = 0 it stays 0 whatever the factors.
    let configs: Vec<Rprop> =
      configs().into_iter().map(|c| Rprop { lr: 0.0, step_sizes: (0.0, c.step_sizes.1), ..c }).collect();
    assert_zero_lr_is_identity(&configs);
  }

  #[test]
  fn first_steps_derived_by_hand() {
    // t = 1: g′ = 0, so f = 1 and s = clamp(γ) = 0.1; p ← p − sign(g)·0.1 and g′ = g.
    let config = Rprop { lr: 0.1, ..Rprop::default() };
    let mut state = ParamState::default();
    let mut param = vec![1.0f64, -2.0, 0.5];
    step_once(config, &mut state, &mut param, &[0.25, -4.0, 0.0], true);
    let after_first = [1.0 - 0.1, -2.0 + 0.1, 0.5];
    assert_eq!(param, after_first);
    assert_eq!(buffers_f64(&state), [vec![0.25, -4.0, 0.0], vec![0.1, 0.1, 0.1]]);
    // t = 2: the first keeps its sign (s = 0.1·1.2 = 0.12), the second changes it (s = 0.05, no
    // step, g′ = 0), the third had none (s = 0.1, a step of 0.1 along −sign(g)).
    step_once(config, &mut state, &mut param, &[1.0, 3.0, -2.0], true);
    assert_eq!(param, [after_first[0] - 0.1 * 1.2, after_first[1], 0.5 + 0.1]);
    assert_eq!(buffers_f64(&state), [vec![1.0, 0.0, -2.0], vec![0.1 * 1.2, 0.1 * 0.5, 0.1]]);
    // t = 3: after the change of sign g′ = 0, so f = 1 and the second steps by 0.05.
    step_once(config, &mut state, &mut param, &[1.0, 3.0, -2.0], true);
    assert_eq!(param[1], after_first[1] - 0.1 * 0.5);
  }

  #[test]
  fn step_sizes_stay_within_their_bounds() {
    for config in configs() {
      let (_, state) = trajectory::<Rprop, f32>(config, 1001, 6, true);
      let (min, max) = config.step_sizes;
      let (min, max) = (f64::from(min.min(max) as f32), f64::from(max as f32));
      assert!(buffers_f64(&state)[1].iter().all(|&s| (min..=max).contains(&s)), "{config:?}");
    }
  }

  #[test]
  fn bad_options_are_rejected_with_field_and_value() {
    assert_rejects::<Rprop>(&[
      ("lr", -1.0, "invalid lr: -1 (expected a finite lr >= 0)"),
      ("etas[0]", 0.0, "invalid etas[0]: 0 (expected a finite etas[0] > 0)"),
      ("etas[1]", f64::INFINITY, "invalid etas[1]: Infinity (expected a finite etas[1] > 0)"),
      ("etas[0]", 1.0, "Rprop requires 0 < etas[0] < 1 < etas[1], got etas[0] = 1 and etas[1] = 1.2"),
      ("etas[1]", 0.9, "Rprop requires 0 < etas[0] < 1 < etas[1], got etas[0] = 0.5 and etas[1] = 0.9"),
      ("etas[1]", 1.0, "Rprop requires 0 < etas[0] < 1 < etas[1], got etas[0] = 0.5 and etas[1] = 1"),
      ("step_sizes[0]", -1e-6, "invalid step_sizes[0]: -1e-6 (expected a finite step_sizes[0] >= 0)"),
      ("step_sizes[1]", f64::NAN, "invalid step_sizes[1]: NaN (expected a finite step_sizes[1] >= 0)"),
      ("maximize", -1.0, "invalid maximize: -1 (expected true or false)"),
    ]);
  }
}
