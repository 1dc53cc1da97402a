//! Lion: the sign of an interpolated momentum.
//!
//! Chen, Liang, Huang, Real, Wang, Pham, Dong, Luong, Hsieh, Lu & Le, "Symbolic Discovery of
//! Optimization Algorithms", NeurIPS 2023 (arXiv:2302.06675), Algorithm 2. The reference is
//! lion-pytorch's `Lion` (`lion_pytorch/lion_pytorch.py`); PyTorch itself has none.
//!
//! With learning rate γ, betas β₁ β₂ and weight decay λ, each element of a parameter p with
//! gradient g and momentum m (zero before the first step) is updated as
//!
//! ```text
//! p ← p·(1 − γ·λ)                 decoupled decay, as AdamW's
//! c ← β₁·m + (1 − β₁)·g           the direction: an interpolation of m and g ...
//! p ← p − γ·sign(c)               ... of which only the sign is used
//! m ← β₂·m + (1 − β₂)·g           the momentum, with its own rate
//! ```
//!
//! Conventions, all lion-pytorch's: every element moves by exactly γ (or not at all), so γ is
//! typically 3 to 10 times smaller than Adam's and λ as much larger; m starts at zero and is not
//! bias-corrected, so no step count enters the update (lion-pytorch keeps none; the engine keeps
//! one as for every optimizer); sign(0) = 0, and sign(NaN) = 0 as PyTorch's `sgn_` gives it, so a
//! NaN gradient leaves its element where the decay puts it and makes its momentum NaN.
//!
//! `decoupled_weight_decay`: lion-pytorch divides λ by the lr the optimizer was constructed with,
//! γ₀ (`self._init_lr`: one per optimizer, whatever lr a group sets or a scheduler writes later),
//! so that the decay is p·(1 − γ·(λ/γ₀)): λ per step at the initial rate, following the schedule
//! from there. The core sees each group's options and no constructor, so γ₀ is an option,
//! `init_lr`, which bindings fill with their constructor's lr (the Node.js facade does); null
//! (`None`) takes the group's current lr for it, so that the decay is λ per step whatever the lr.
//! The division and the product are computed in `f64` as lion-pytorch computes them, which gives
//! its bits. At γ = 0 nothing moves, as in lion-pytorch; γ₀ must be positive, as lion-pytorch
//! asserts its constructor's lr is.
//!
//! Rounding follows lion-pytorch's tensor operations on CPU, each scalar rounded to the element
//! type once: `p.mul_(1 − γλ)` rounds on its own; `m.clone().mul_(β₁).add(g, alpha=1 − β₁)` is
//! `fma(1 − β₁, g, m·β₁)` with m·β₁ rounded first, as PyTorch's vectorised CPU `add(x, y, alpha=a)`
//! is one fused multiply-add (its tail too); `p.add_(sign(c), alpha=−γ)` is p − γ·sign(c), rounded
//! once since γ·sign(c) is exact; `m.mul_(β₂).add_(g, alpha=1 − β₂)` is `fma(1 − β₂, g, m·β₂)`.
//! Results are bit-identical to lion-pytorch's, which matters more than usual here: a sign taken
//! of a rounding difference moves an element by 2γ.

use crate::engine::run::MAX_BUFFERS;
use crate::engine::simd::multiversion;
use crate::float::{Float, NonFinite};
use crate::optimizers::{Buffer, Optimizer};

crate::options! {
  /// Lion's options (lion-pytorch's `Lion`).
  pub struct Lion {
    /// Learning rate γ: each step moves every element by γ, against the sign of its interpolated momentum.
    lr: f64 = 1e-4, NonNegative;
    /// Weights (β₁, β₂) of the momentum: in the interpolation whose sign is the step, and in its own running average.
    betas: (f64, f64) = (0.9, 0.99), UnitClosed;
    /// Decoupled weight decay λ: each step first scales the weights by 1 − γλ.
    weight_decay: f64 = 0.0, NonNegative;
    /// Divide λ by initLr, so that each step scales the weights by 1 − γ·λ/initLr: 1 − λ per step at the initial lr, following a scheduler's lr from there (lion-pytorch's decoupled_weight_decay).
    decoupled_weight_decay: bool = false;
    /// The lr λ is divided by with decoupledWeightDecay: lion-pytorch's constructor lr (its `_init_lr`), which the constructor fills in; null divides by the group's current lr, for a decay of λ per step whatever the lr.
    init_lr: Option<f64> = None, Positive;
  }
}

/// The per-step scalars of a Lion update, in `f64`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LionCoeffs {
  /// −γ
  pub neg_lr: f64,
  pub beta1: f64,
  /// 1 − β₁, the gradient's weight in the direction.
  pub direction_weight: f64,
  pub beta2: f64,
  /// 1 − β₂, the gradient's weight in the momentum.
  pub momentum_weight: f64,
  /// 1 − γλ, or 1 − γ·(λ/γ₀) with `decoupled_weight_decay` (γ₀ = `init_lr`, or γ if that is
  /// null); exactly 1 without decay or at γ = 0.
  pub decay_factor: f64,
}

impl Optimizer for Lion {
  const NAME: &'static str = "Lion";
  const SUMMARY: &'static str =
    "Lion (Chen et al., 2023): steps of size lr along the sign of an interpolated momentum, with one state buffer";
  const REFERENCE: &'static str = "lion_pytorch.Lion";
  const BUFFERS: &'static [Buffer] = &[Buffer::like_param("exp_avg")];
  type Coeffs = LionCoeffs;

  fn coeffs(&self, _step: u64) -> LionCoeffs {
    let (beta1, beta2) = self.betas;
    let (lr, weight_decay) = (self.lr, self.weight_decay);
    // lion-pytorch: `wd /= init_lr`, then `p.mul_(1 - lr * wd)`; init_lr is positive, or null
    // for the group's lr, which at 0 moves nothing.
    let init_lr = self.init_lr.unwrap_or(lr);
    let decay = if self.decoupled_weight_decay && init_lr != 0.0 { weight_decay / init_lr } else { weight_decay };
    LionCoeffs {
      neg_lr: -lr,
      beta1,
      direction_weight: 1.0 - beta1,
      beta2,
      momentum_weight: 1.0 - beta2,
      decay_factor: 1.0 - lr * decay,
    }
  }

  fn update<T: Float>(c: &LionCoeffs, param: &mut [T], grad: &[T], buffers: [&mut [T]; MAX_BUFFERS]) -> bool {
    let mut non_finite = false;
    let [exp_avg, _, _] = buffers;
    fused_best::<T>(&Scalars::new(c), param, grad, exp_avg, &mut non_finite);
    non_finite
  }

  fn update_reference<T: Float>(c: &LionCoeffs, param: &mut [T], grad: &[T], buffers: [&mut [T]; MAX_BUFFERS]) {
    let [exp_avg, _, _] = buffers;
    let cast = T::from_f64;
    let lr = -cast(c.neg_lr);
    for i in 0..param.len() {
      let g = grad[i];
      let m = exp_avg[i];
      let p = param[i] * cast(c.decay_factor);
      let direction = cast(c.direction_weight).mul_add(g, m * cast(c.beta1));
      param[i] = p - lr * sign(direction);
      exp_avg[i] = cast(c.momentum_weight).mul_add(g, m * cast(c.beta2));
    }
  }
}

/// 1, −1, or 0 for ±0 and NaN, as PyTorch's `sign` on floats: `(0 < x) − (x < 0)`.
#[inline(always)]
fn sign<T: Float>(x: T) -> T {
  let positive = if x > T::ZERO { T::ONE } else { T::ZERO };
  let negative = if x < T::ZERO { T::ONE } else { T::ZERO };
  positive - negative
}

/// [`LionCoeffs`] rounded to the element type, once per piece.
struct Scalars<T> {
  neg_lr: T,
  beta1: T,
  direction_weight: T,
  beta2: T,
  momentum_weight: T,
  decay_factor: T,
}

impl<T: Float> Scalars<T> {
  fn new(c: &LionCoeffs) -> Self {
    Scalars {
      neg_lr: T::from_f64(c.neg_lr),
      beta1: T::from_f64(c.beta1),
      direction_weight: T::from_f64(c.direction_weight),
      beta2: T::from_f64(c.beta2),
      momentum_weight: T::from_f64(c.momentum_weight),
      decay_factor: T::from_f64(c.decay_factor),
    }
  }
}

multiversion!(fn fused_best<T: Float>(k: &Scalars<T>, param: &mut [T], grad: &[T], exp_avg: &mut [T], non_finite: &mut bool) => fused);

/// One pass over memory: reads p, g, m, writes p, m (20 bytes per `f32` element, Adam's 28).
/// Branch-free so that it vectorises (the sign is two compares and a subtraction);
/// `p·decay_factor` is exact when the factor is 1.
#[inline(always)]
fn fused<T: Float>(k: &Scalars<T>, param: &mut [T], grad: &[T], exp_avg: &mut [T], non_finite: &mut bool) {
  let n = param.len();
  let grad = &grad[..n];
  let exp_avg = &mut exp_avg[..n];
  let mut check = NonFinite::new();
  for i in 0..n {
    check.see(grad[i]);
    let g = grad[i];
    let m = exp_avg[i];
    let p = param[i] * k.decay_factor;
    let direction = k.direction_weight.mul_add(g, m * k.beta1);
    param[i] = k.neg_lr.mul_add(sign(direction), p);
    exp_avg[i] = k.momentum_weight.mul_add(g, m * k.beta2);
  }
  *non_finite |= check.found();
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::engine::state::{Buffers, ParamState};
  use crate::testing::{
    assert_fused_matches_reference, assert_rejects, assert_zero_lr_is_identity, buffers_f64, trajectory, values,
  };

  fn configs() -> Vec<Lion> {
    let base = Lion::default();
    vec![
      base,
      Lion { lr: 1e-2, weight_decay: 0.1, ..base },
      Lion { lr: 3e-3, betas: (0.5, 0.9), weight_decay: 1e-2, decoupled_weight_decay: true, init_lr: None },
      // A scheduler has taken lr from its initial 1e-2 to 3e-3.
      Lion { lr: 3e-3, weight_decay: 1e-2, decoupled_weight_decay: true, init_lr: Some(1e-2), ..base },
      // The ends of the closed range: the direction is the gradient and the momentum never moves,
      // then the direction is the momentum alone.
      Lion { lr: 1e-3, betas: (0.0, 1.0), ..base },
      Lion { lr: 1e-3, betas: (1.0, 0.0), ..base },
    ]
  }

  #[test]
  fn fused_parallel_kernel_matches_reference_bit_for_bit() {
    assert_fused_matches_reference(&configs());
  }

  #[test]
  fn first_steps_move_each_element_by_lr_along_the_sign_derived_by_hand() {
    // γ = 0.1, λ = 0.5, β = (0.9, 0.99): the decay factor is 1 − 0.05 = 0.95.
    // Step 1, m = 0: c = 0.1·g, so p ← 0.95·p − 0.1·sign(g): 1 → 0.85, −2 → −1.8, and the element
    // with g = 0 is only decayed: 0.5 → 0.475; 3 → 2.75 however small g is. m = 0.01·g.
    let config = Lion { lr: 0.1, weight_decay: 0.5, ..Lion::default() };
    let mut param = vec![1.0f64, -2.0, 0.5, 3.0];
    let mut state = ParamState::default();
    Lion::update(&config.coeffs(1), &mut param, &[0.25, -4.0, 0.0, 1e-3], state.buffers_mut(&[4; 3], 1));
    let close = |got: &[f64], want: &[f64]| got.iter().zip(want).all(|(a, b)| (a - b).abs() <= 1e-15);
    assert!(close(&param, &[0.85, -1.8, 0.475, 2.75]), "{param:?}");
    assert!(close(&buffers_f64(&state)[0], &[0.0025, -0.04, 0.0, 1e-5]));
    // Step 2, against the gradient's sign on element 0: g = −0.01 gives c = 0.9·0.0025 − 0.001
    // = 0.00125 > 0, so the momentum keeps it moving down: 0.95·0.85 − 0.1 = 0.7075, and
    // m = 0.99·0.0025 − 0.0001 = 0.002375. Element 1, g = 1 after m = −0.04: c = −0.036 + 0.1
    // = 0.064 > 0, so it turns: 0.95·(−1.8) − 0.1 = −1.81, and m = −0.0396 + 0.01 = −0.0296.
    Lion::update(&config.coeffs(2), &mut param, &[-0.01, 1.0, 0.0, 0.0], state.buffers_mut(&[4; 3], 1));
    assert!(close(&param[..2], &[0.7075, -1.81]), "{param:?}");
    assert!(close(&buffers_f64(&state)[0][..2], &[0.002375, -0.0296]));
  }

  #[test]
  fn zero_and_nan_directions_have_sign_zero_as_in_pytorch() {
    // sign(±0) = sign(NaN) = 0: the element is only decayed (here not at all), and a NaN
    // gradient poisons the momentum but not the parameter. ±∞ have signs.
    let config = Lion { lr: 0.5, ..Lion::default() };
    for fused in [false, true] {
      let mut param = vec![1.0f32, -0.0, 2.0, 2.0, 2.0];
      let grad = [0.0f32, 0.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY];
      let mut state = ParamState::default();
      let (coeffs, buffers) = (config.coeffs(1), state.buffers_mut(&[5; 3], 1));
      if fused {
        Lion::update(&coeffs, &mut param, &grad, buffers);
      } else {
        Lion::update_reference(&coeffs, &mut param, &grad, buffers)
      }
      let bits: Vec<u32> = param.iter().map(|x| x.to_bits()).collect();
      assert_eq!(bits, [1.0f32, -0.0, 2.0, 1.5, 2.5].map(f32::to_bits), "fused {fused}");
      let Buffers::F32(buffers) = &state.buffers else { panic!("f32 state") };
      assert!(buffers[0][2].is_nan() && buffers[0][3] == f32::INFINITY);
    }
  }

  #[test]
  fn follows_the_papers_algorithm_in_f64() {
    // Algorithm 2 as written: θ ← θ − η·(sign(β₁m + (1 − β₁)g) + λθ), m ← β₂m + (1 − β₂)g.
    let (lr, b1, b2, wd) = (1e-2, 0.8, 0.95, 0.3);
    let config = Lion { lr, betas: (b1, b2), weight_decay: wd, ..Lion::default() };
    let mut param = values::<f64>(9, 3);
    let mut expected = param.clone();
    let mut m = [0.0; 9];
    let mut state = ParamState::default();
    for t in 1..=30u64 {
      let grad = values::<f64>(9, 100 + t);
      Lion::update(&config.coeffs(t), &mut param, &grad, state.buffers_mut(&[9; 3], 1));
      for i in 0..9 {
        let c = b1 * m[i] + (1.0 - b1) * grad[i];
        expected[i] -= lr * (if c == 0.0 { 0.0 } else { c.signum() } + wd * expected[i]);
        m[i] = b2 * m[i] + (1.0 - b2) * grad[i];
      }
    }
    for (got, want) in param.iter().zip(&expected) {
      assert!((got - want).abs() <= 1e-12 * want.abs().max(1.0), "{got} vs {want}");
    }
  }

  #[test]
  fn decoupled_decay_divides_by_the_initial_lr_as_lion_pytorch_and_none_at_zero_lr() {
    let config =
      Lion { lr: 3e-4, weight_decay: 0.01, decoupled_weight_decay: true, init_lr: Some(1e-3), ..Lion::default() };
    // lion-pytorch: wd /= init_lr; p.mul_(1 - lr * wd), with init_lr its constructor's lr.
    assert_eq!(config.coeffs(1).decay_factor, 1.0 - 3e-4 * (0.01 / 1e-3));
    // Without an initial lr, the group's: λ per step.
    assert_eq!(Lion { init_lr: None, ..config }.coeffs(1).decay_factor, 1.0 - 3e-4 * (0.01 / 3e-4));
    // The initial lr only matters to decoupled decay.
    assert_eq!(Lion { decoupled_weight_decay: false, ..config }.coeffs(1).decay_factor, 1.0 - 3e-4 * 0.01);
    assert_eq!(Lion { lr: 0.0, ..config }.coeffs(1).decay_factor, 1.0);
    assert_eq!(Lion { lr: 0.0, init_lr: None, ..config }.coeffs(1).decay_factor, 1.0);
    assert_eq!(Lion::default().coeffs(1).decay_factor, 1.0);
  }

  #[test]
  fn zero_learning_rate_leaves_parameters_unchanged() {
    let configs: Vec<Lion> = configs().into_iter().map(|c| Lion { lr: 0.0, ..c }).collect();
    assert_zero_lr_is_identity(&configs);
    // The momentum still moves, as lion-pytorch's does.
    let (_, state) = trajectory::<Lion, f64>(configs[0], 40, 3, true);
    assert!(buffers_f64(&state)[0].iter().any(|&m| m != 0.0));
  }

  #[test]
  fn bad_options_are_rejected_with_field_and_value() {
    assert_rejects::<Lion>(&[
      ("lr", -1e-4, "invalid lr: -0.0001 (expected a finite lr >= 0)"),
      ("lr", f64::INFINITY, "invalid lr: Infinity (expected a finite lr >= 0)"),
      ("betas[0]", 1.5, "invalid betas[0]: 1.5 (expected 0 <= betas[0] <= 1)"),
      ("betas[1]", -0.1, "invalid betas[1]: -0.1 (expected 0 <= betas[1] <= 1)"),
      ("betas[1]", f64::NAN, "invalid betas[1]: NaN (expected 0 <= betas[1] <= 1)"),
      ("weight_decay", -0.1, "invalid weight_decay: -0.1 (expected a finite weight_decay >= 0)"),
      ("decoupled_weight_decay", 0.5, "invalid decoupled_weight_decay: 0.5 (expected true or false)"),
      ("init_lr", 0.0, "invalid init_lr: 0 (expected null or a finite init_lr > 0)"),
      ("init_lr", f64::INFINITY, "invalid init_lr: Infinity (expected null or a finite init_lr > 0)"),
    ]);
  }
}
