//! Adagrad.
//!
//! Duchi, Hazan & Singer, "Adaptive Subgradient Methods for Online Learning and Stochastic
//! Optimization", JMLR 12, 2011.
//!
//! With learning rate γ, learning-rate decay η, weight decay λ, initial accumulator value s₀ and
//! step t (1 on the first update), each element of a parameter p with gradient g and
//! accumulator s is updated as
//!
//! ```text
//! g ← −g                          if maximize
//! g ← g + λ·p                     (L2 penalty folded into the gradient)
//! s ← s + g²                      s = s₀ before the first step
//! p ← p − γ/(1 + (t − 1)·η) · g / (√s + ε)
//! ```
//!
//! Conventions, all PyTorch's: ε is added after the square root; the decayed rate
//! γ/(1 + (t − 1)·η) is computed in `f64` once per step. `s + g²` is `fma(g, g, s)` and the last
//! line `p + (−γₜ·g)/(√s + ε)`, as PyTorch's vectorised CPU `addcmul_` and `addcdiv_` compute them.
//!
//! PyTorch fills the accumulator with s₀ when the optimizer is built; here state is created on a
//! parameter's first step, so the step that creates the accumulator adds s₀ to it (a new buffer is
//! zero): the same numbers. s₀ is taken from the parameter's group at that step, where PyTorch
//! always uses the constructor's value and ignores a group's own (the one place the two differ).
//! A loaded accumulator (PyTorch's, even before any step) is used as it is.

use crate::engine::run::MAX_BUFFERS;
use crate::engine::simd::{dispatch, multiversion};
use crate::engine::state::ParamState;
use crate::float::{Float, NonFinite};
use crate::optimizers::{Buffer, Gradient, Optimizer};

crate::options! {
  /// Adagrad's options (PyTorch's `torch.optim.Adagrad`).
  pub struct Adagrad {
    /// Learning rate γ.
    lr: f64 = 1e-2, NonNegative;
    /// Learning-rate decay η: step t uses γ / (1 + (t − 1)η).
    lr_decay: f64 = 0.0, NonNegative;
    /// Weight decay λ, an L2 penalty added to the gradient.
    weight_decay: f64 = 0.0, NonNegative;
    /// What the accumulator of squared gradients holds before a parameter's first step; a group's own value is honoured (PyTorch uses the constructor's for every group).
    initial_accumulator_value: f64 = 0.0, NonNegative;
    /// ε, added to the square root of the accumulator.
    eps: f64 = 1e-10, NonNegative;
    /// Maximize the objective: step along the gradient instead of against it.
    maximize: bool = false;
  }
}

/// The per-step scalars of an Adagrad update, in `f64`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdagradCoeffs {
  /// −γ/(1 + (t − 1)·η)
  pub neg_clr: f64,
  /// s₀ on the step that creates the accumulator, 0 on the others; set by [`Optimizer::advance`].
  pub initial: f64,
  pub eps: f64,
  /// λ; 0 for none.
  pub l2: f64,
  pub maximize: bool,
}

impl Optimizer for Adagrad {
  const NAME: &'static str = "Adagrad";
  const SUMMARY: &'static str =
    "Adagrad (Duchi, Hazan & Singer, 2011): per-element rates from the sum of squared gradients";
  const BUFFERS: &'static [Buffer] = &[Buffer::like_param("sum")];
  type Coeffs = AdagradCoeffs;

  fn buffers_used(&self) -> usize {
    1
  }

  fn coeffs(&self, step: u64) -> AdagradCoeffs {
    let clr = self.lr / (1.0 + (step as f64 - 1.0) * self.lr_decay);
    AdagradCoeffs { neg_clr: -clr, initial: 0.0, eps: self.eps, l2: self.weight_decay, maximize: self.maximize }
  }

  fn advance(&self, coeffs: &mut AdagradCoeffs, state: &mut ParamState) {
    if state.buffers.count() == 0 {
      coeffs.initial = self.initial_accumulator_value;
    }
  }

  fn update<T: Float>(c: &AdagradCoeffs, param: &mut [T], grad: &[T], buffers: [&mut [T]; MAX_BUFFERS]) -> bool {
    let mut non_finite = false;
    let k = Scalars::new(c);
    let [sum, _, _] = buffers;
    dispatch!(fused_best::<T>[L2: c.l2 != 0.0](&k, param, grad, sum, &mut non_finite));
    non_finite
  }

  fn update_reference<T: Float>(c: &AdagradCoeffs, param: &mut [T], grad: &[T], buffers: [&mut [T]; MAX_BUFFERS]) {
    let [sum, _, _] = buffers;
    let cast = T::from_f64;
    for i in 0..param.len() {
      let mut g = grad[i];
      if c.maximize {
        g = -g;
      }
      if c.l2 != 0.0 {
        g = cast(c.l2).mul_add(param[i], g);
      }
      sum[i] = g.mul_add(g, sum[i] + cast(c.initial));
      let std = sum[i].sqrt() + cast(c.eps);
      param[i] = param[i] + cast(c.neg_clr) * g / std;
    }
  }
}

/// [`AdagradCoeffs`] rounded to the element type, once per piece.
struct Scalars<T> {
  gradient: Gradient<T>,
  initial: T,
  eps: T,
  neg_clr: T,
}

impl<T: Float> Scalars<T> {
  fn new(c: &AdagradCoeffs) -> Self {
    Scalars {
      gradient: Gradient::new(c.maximize, c.l2),
      initial: T::from_f64(c.initial),
      eps: T::from_f64(c.eps),
      neg_clr: T::from_f64(c.neg_clr),
    }
  }
}

multiversion!(fn fused_best<T: Float, const L2: bool>(k: &Scalars<T>, param: &mut [T], grad: &[T], sum: &mut [T], non_finite: &mut bool) => fused);

/// One pass over memory: reads p, g, s, writes p, s. Adding `initial` is exact: it is 0 but on
/// the step that creates s, and then s is zero.
#[inline(always)]
fn fused<T: Float, const L2: bool>(k: &Scalars<T>, param: &mut [T], grad: &[T], sum: &mut [T], non_finite: &mut bool) {
  let n = param.len();
  let grad = &grad[..n];
  let sum = &mut sum[..n];
  let mut check = NonFinite::new();
  for i in 0..n {
    check.see(grad[i]);
    let p = param[i];
    let g = k.gradient.at::<L2>(grad[i], p);
    let s = g.mul_add(g, sum[i] + k.initial);
    sum[i] = s;
    param[i] = p + k.neg_clr * g / (s.sqrt() + k.eps);
  }
  *non_finite |= check.found();
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::engine::state::{Buffers, ParamState};
  use crate::testing::{
    assert_fused_matches_reference, assert_rejects, assert_zero_lr_is_identity, buffers_f64, step_once, trajectory,
    values,
  };

  fn configs() -> Vec<Adagrad> {
    let base = Adagrad::default();
    vec![
      base,
      Adagrad { lr_decay: 0.1, weight_decay: 0.05, ..base },
      Adagrad { initial_accumulator_value: 0.5, maximize: true, ..base },
      Adagrad { eps: 1e-3, lr: 0.1, weight_decay: 1e-3, initial_accumulator_value: 1e-2, ..base },
    ]
  }

  #[test]
  fn fused_parallel_kernel_matches_reference_bit_for_bit() {
    assert_fused_matches_reference(&configs());
  }

  #[test]
  fn zero_learning_rate_leaves_parameters_unchanged() {
    let configs: Vec<Adagrad> = configs().into_iter().map(|c| Adagrad { lr: 0.0, ..c }).collect();
    assert_zero_lr_is_identity(&configs);
  }

  #[test]
  fn first_steps_derived_by_hand() {
    // s₀ = 1, γ = 0.5, η = 1. Step 1: s = 1 + g², p −= 0.5·g/√s.
    // Step 2: s += g², and the rate is 0.5/(1 + 1·1) = 0.25.
    let config = Adagrad { lr: 0.5, lr_decay: 1.0, initial_accumulator_value: 1.0, eps: 0.0, ..Adagrad::default() };
    let mut state = ParamState::default();
    let mut param = vec![1.0f64, 0.0];
    step_once(config, &mut state, &mut param, &[3.0, 0.0], true);
    assert_eq!(buffers_f64(&state), [vec![10.0, 1.0]]);
    assert_eq!(param, [1.0 - 0.5 * 3.0 / 10f64.sqrt(), 0.0]);
    step_once(config, &mut state, &mut param, &[4.0, 0.0], true);
    assert_eq!(buffers_f64(&state), [vec![26.0, 1.0]]);
    assert_eq!(param[0], 1.0 - 0.5 * 3.0 / 10f64.sqrt() - 0.25 * 4.0 / 26f64.sqrt());
  }

  #[test]
  fn accumulator_never_shrinks_and_starts_at_the_initial_value() {
    for config in configs() {
      let mut state = ParamState::default();
      let mut param = values::<f32>(1001, 1);
      let mut previous = vec![config.initial_accumulator_value as f32; 1001];
      for step in 1..=8 {
        step_once(config, &mut state, &mut param, &values::<f32>(1001, step + 1), true);
        let Buffers::F32(buffers) = &state.buffers else { panic!("f32 state") };
        assert!(buffers[0].iter().zip(&previous).all(|(now, before)| now >= before), "{config:?} step {step}");
        previous.copy_from_slice(&buffers[0]);
      }
    }
    let (_, state) =
      trajectory::<Adagrad, f64>(Adagrad { initial_accumulator_value: 0.5, ..Adagrad::default() }, 11, 1, true);
    // Element 3 of `values` is a zero gradient: its accumulator holds s₀ alone.
    assert_eq!(buffers_f64(&state)[0][3], 0.5);
  }

  #[test]
  fn a_loaded_accumulator_is_used_as_it_is() {
    // PyTorch's state before any step is step 0 with s = s₀: loading it must not add s₀ again.
    let config = Adagrad { initial_accumulator_value: 0.5, ..Adagrad::default() };
    let mut state = ParamState { buffers: Buffers::F64(vec![vec![0.5].into()]), ..ParamState::default() };
    step_once(config, &mut state, &mut [1.0f64], &[2.0], true);
    assert_eq!(buffers_f64(&state), [vec![4.5]]);
  }

  #[test]
  fn bad_options_are_rejected_with_field_and_value() {
    assert_rejects::<Adagrad>(&[
      ("lr", -1.0, "invalid lr: -1 (expected a finite lr >= 0)"),
      ("lr_decay", -0.5, "invalid lr_decay: -0.5 (expected a finite lr_decay >= 0)"),
      ("weight_decay", f64::NAN, "invalid weight_decay: NaN (expected a finite weight_decay >= 0)"),
      (
        "initial_accumulator_value",
        -0.1,
        "invalid initial_accumulator_value: -0.1 (expected a finite initial_accumulator_value >= 0)",
      ),
      ("eps", -1e-10, "invalid eps: -1e-10 (expected a finite eps >= 0)"),
    ]);
  }
}
