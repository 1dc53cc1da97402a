//! Stochastic gradient descent, with heavy-ball or Nesterov momentum.
//!
//! Momentum: Polyak, "Some methods of speeding up the convergence of iteration methods", 1964.
//! Nesterov momentum in this form: Sutskever, Martens, Dahl & Hinton, "On the importance of
//! initialization and momentum in deep learning", ICML 2013.
//!
//! With learning rate γ, momentum μ, dampening τ and weight decay λ, each element of a parameter
//! p with gradient g and momentum buffer b is updated as
//!
//! ```text
//! g ← −g                      if maximize
//! g ← g + λ·p                 (L2 penalty folded into the gradient)
//! b ← g                       first step with μ ≠ 0: the buffer starts as the gradient
//! b ← μ·b + (1 − τ)·g         later steps with μ ≠ 0
//! g ← g + μ·b                 if nesterov
//! g ← b                       otherwise, if μ ≠ 0
//! p ← p − γ·g
//! ```
//!
//! Conventions, all PyTorch's: γ multiplies the whole velocity (Sutskever et al. fold it in:
//! v ← μv − γg), so changing γ mid-run rescales past momentum too; the buffer starts as a copy
//! of the first gradient, undampened, and exists only once μ ≠ 0; Nesterov needs μ > 0 and
//! τ = 0. Every `x + a·y` is one fused multiply-add, as PyTorch's vectorised CPU
//! `add(x, y, alpha=a)` computes it; `μ·b` is rounded on its own first (`mul_`).

use crate::config::ConfigError;
use crate::engine::bf16::{Noise, Storage};
use crate::engine::run::MAX_BUFFERS;
use crate::engine::simd::{dispatch, multiversion};
use crate::engine::state::ParamState;
use crate::float::{Float, NonFinite};
use crate::optimizers::{Bf16Buffers, Buffer, Gradient, Optimizer};

crate::options! {
  /// SGD's options (PyTorch's `torch.optim.SGD`).
  pub struct Sgd {
    /// Learning rate γ.
    lr: f64 = 1e-3, NonNegative;
    /// Momentum μ; 0 for plain SGD, which keeps no state buffer.
    momentum: f64 = 0.0, NonNegative;
    /// Dampening τ: the momentum buffer takes in (1 − τ)·g (not on its first step, when it is g); any finite value, as in PyTorch.
    dampening: f64 = 0.0, Finite;
    /// Weight decay λ, an L2 penalty added to the gradient.
    weight_decay: f64 = 0.0, NonNegative;
    /// Nesterov momentum: step along g + μ·b instead of b. Needs momentum > 0 and dampening 0.
    nesterov: bool = false;
    /// Maximize the objective: step along the gradient instead of against it.
    maximize: bool = false;
  }
  check = Sgd::check;
}

impl Sgd {
  fn check(&self) -> Result<(), ConfigError> {
    if self.nesterov && (self.momentum <= 0.0 || self.dampening != 0.0) {
      return Err(ConfigError::Conflict {
        fields: &["nesterov", "momentum", "dampening"],
        message: format!(
          "`nesterov` momentum requires `momentum` > 0 and `dampening` = 0, got `momentum` = {} and `dampening` = {}",
          crate::config::format_number(self.momentum),
          crate::config::format_number(self.dampening)
        ),
      });
    }
    Ok(())
  }
}

/// The per-step scalars of an SGD update, in `f64`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdCoeffs {
  /// −γ
  pub neg_lr: f64,
  /// λ; 0 for none.
  pub l2: f64,
  /// μ; 0 for plain SGD, which keeps no buffer.
  pub momentum: f64,
  /// What the buffer is multiplied by: μ, or 0 on its first step (when it is still zero).
  pub buffer_decay: f64,
  /// What the gradient enters the buffer with: 1 − τ, or 1 on the buffer's first step.
  pub buffer_weight: f64,
  pub nesterov: bool,
  pub maximize: bool,
}

impl Optimizer for Sgd {
  const NAME: &'static str = "SGD";
  const BF16_STATE: bool = true;
  const SUMMARY: &'static str = "Stochastic gradient descent, with heavy-ball or Nesterov momentum";
  const BUFFERS: &'static [Buffer] = &[Buffer::like_param("momentum_buffer")];
  type Coeffs = SgdCoeffs;

  fn buffers_used(&self) -> usize {
    usize::from(self.momentum != 0.0)
  }

  fn coeffs(&self, _step: u64) -> SgdCoeffs {
    SgdCoeffs {
      neg_lr: -self.lr,
      l2: self.weight_decay,
      momentum: self.momentum,
      buffer_decay: self.momentum,
      buffer_weight: 1.0 - self.dampening,
      nesterov: self.nesterov,
      maximize: self.maximize,
    }
  }

  /// PyTorch starts the buffer when a step with μ ≠ 0 finds none (not on step 1: μ may have been
  /// 0 until now). A new buffer is zero, so `0·b + 1·g` copies the gradient into it.
  fn advance(&self, coeffs: &mut SgdCoeffs, state: &mut ParamState) {
    if coeffs.momentum != 0.0 && state.buffers.count() == 0 {
      coeffs.buffer_decay = 0.0;
      coeffs.buffer_weight = 1.0;
    }
  }

  fn update<T: Float>(c: &SgdCoeffs, param: &mut [T], grad: &[T], buffers: [&mut [T]; MAX_BUFFERS]) -> bool {
    update_stored(c, param, grad, buffers, None)
  }

  /// Fused: the momentum buffer's conversions run inside the kernel's loop.
  fn update_bf16(c: &SgdCoeffs, param: &mut [f32], grad: &[f32], buffers: Bf16Buffers, noise: Option<Noise>) -> bool {
    update_stored(c, param, grad, buffers, noise)
  }

  fn update_reference<T: Float>(c: &SgdCoeffs, param: &mut [T], grad: &[T], buffers: [&mut [T]; MAX_BUFFERS]) {
    let [buffer, _, _] = buffers;
    let cast = T::from_f64;
    for i in 0..param.len() {
      let mut g = grad[i];
      let p = param[i];
      if c.maximize {
        g = -g;
      }
      if c.l2 != 0.0 {
        g = cast(c.l2).mul_add(p, g);
      }
      if c.momentum != 0.0 {
        buffer[i] = cast(c.buffer_weight).mul_add(g, buffer[i] * cast(c.buffer_decay));
        g = if c.nesterov { cast(c.momentum).mul_add(buffer[i], g) } else { buffer[i] };
      }
      param[i] = cast(c.neg_lr).mul_add(g, p);
    }
  }
}

/// [`SgdCoeffs`] rounded to the element type, once per piece.
struct Scalars<T> {
  gradient: Gradient<T>,
  momentum: T,
  buffer_decay: T,
  buffer_weight: T,
  neg_lr: T,
}

impl<T: Float> Scalars<T> {
  fn new(c: &SgdCoeffs) -> Self {
    Scalars {
      gradient: Gradient::new(c.maximize, c.l2),
      momentum: T::from_f64(c.momentum),
      buffer_decay: T::from_f64(c.buffer_decay),
      buffer_weight: T::from_f64(c.buffer_weight),
      neg_lr: T::from_f64(c.neg_lr),
    }
  }
}

/// [`Optimizer::update`] with the buffer stored as `S`: `T` itself, or bfloat16 for `f32`.
fn update_stored<T: Float, S: Storage<T>>(
  c: &SgdCoeffs,
  param: &mut [T],
  grad: &[T],
  buffers: [&mut [S]; MAX_BUFFERS],
  noise: Option<Noise>,
) -> bool {
  let k = Scalars::new(c);
  let [buffer, _, _] = buffers;
  let mut non_finite = false;
  // Without momentum the kernel reads no NESTEROV (nor do options pass validation with it).
  dispatch!(fused_best::<T, S>[L2: c.l2 != 0.0, MOMENTUM: c.momentum != 0.0, NESTEROV: c.nesterov, STOCHASTIC: noise.is_some()](
    &k, param, grad, buffer, noise.unwrap_or(Noise::NONE), &mut non_finite));
  non_finite
}

multiversion!(fn fused_best<T: Float, S: Storage<T>, const L2: bool, const MOMENTUM: bool, const NESTEROV: bool, const STOCHASTIC: bool>(k: &Scalars<T>, param: &mut [T], grad: &[T], buffer: &mut [S], noise: Noise, non_finite: &mut bool) => fused);

/// One pass over memory: reads p, g (and b), writes p (and b); b is stored as `S`, converted as
/// it is loaded and stored.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn fused<
  T: Float,
  S: Storage<T>,
  const L2: bool,
  const MOMENTUM: bool,
  const NESTEROV: bool,
  const STOCHASTIC: bool,
>(
  k: &Scalars<T>,
  param: &mut [T],
  grad: &[T],
  buffer: &mut [S],
  noise: Noise,
  non_finite: &mut bool,
) {
  let n = param.len();
  let grad = &grad[..n];
  let buffer = if MOMENTUM { &mut buffer[..n] } else { &mut [][..] };
  let mut check = NonFinite::new();
  for i in 0..n {
    check.see(grad[i]);
    let p = param[i];
    let mut g = k.gradient.at::<L2>(grad[i], p);
    if MOMENTUM {
      let b = k.buffer_weight.mul_add(g, buffer[i].load() * k.buffer_decay);
      buffer[i] = if STOCHASTIC { S::store_random(b, noise.at(0, i)) } else { S::store(b) };
      g = if NESTEROV { k.momentum.mul_add(b, g) } else { b };
    }
    param[i] = k.neg_lr.mul_add(g, p);
  }
  *non_finite |= check.found();
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::config::Options;
  use crate::testing::{
    assert_fused_matches_reference, assert_rejects, assert_zero_lr_is_identity, buffers_f64, packed_with, step_once,
  };

  fn configs() -> Vec<Sgd> {
    let base = Sgd::default();
    vec![
      base,
      Sgd { weight_decay: 0.1, lr: 1e-2, ..base },
      Sgd { momentum: 0.9, ..base },
      Sgd { momentum: 0.9, dampening: 0.3, weight_decay: 1e-2, maximize: true, ..base },
      Sgd { momentum: 0.8, nesterov: true, ..base },
      Sgd { momentum: 0.5, nesterov: true, weight_decay: 0.05, ..base },
      Sgd { momentum: 0.5, nesterov: true, weight_decay: 0.05, maximize: true, ..base },
      Sgd { momentum: 0.7, nesterov: true, maximize: true, ..base },
      Sgd { weight_decay: 0.1, maximize: true, ..base },
      Sgd { maximize: true, ..base },
    ]
  }

  #[test]
  fn fused_parallel_kernel_matches_reference_bit_for_bit() {
    assert_fused_matches_reference(&configs());
  }

  #[test]
  fn zero_learning_rate_leaves_parameters_unchanged() {
    let configs: Vec<Sgd> = configs().into_iter().map(|c| Sgd { lr: 0.0, ..c }).collect();
    assert_zero_lr_is_identity(&configs);
  }

  #[test]
  fn first_steps_derived_by_hand() {
    // γ = 0.1, μ = 0.9, τ = 0.5, λ = 0.
    // Step 1: b = g₁ (undampened copy), p = p₀ − γ·g₁.
    // Step 2: b = μ·g₁ + (1 − τ)·g₂, p = p₁ − γ·b.
    let config = Sgd { lr: 0.1, momentum: 0.9, dampening: 0.5, ..Sgd::default() };
    let mut state = ParamState::default();
    let mut param = vec![1.0f64, -2.0];
    step_once(config, &mut state, &mut param, &[0.5, 4.0], true);
    assert_eq!(param, [1.0 - 0.1 * 0.5, -2.0 - 0.1 * 4.0]);
    assert_eq!(buffers_f64(&state), [vec![0.5, 4.0]]);
    step_once(config, &mut state, &mut param, &[1.0, -2.0], true);
    let b = [0.9 * 0.5 + 0.5 * 1.0, 0.9 * 4.0 + 0.5 * -2.0];
    assert_eq!(buffers_f64(&state), [b.to_vec()]);
    let expected = [1.0 - 0.1 * 0.5 - 0.1 * b[0], -2.0 - 0.1 * 4.0 - 0.1 * b[1]];
    for (got, want) in param.iter().zip(expected) {
      assert!((got - want).abs() <= 1e-15, "{got} vs {want}");
    }
  }

  #[test]
  fn nesterov_looks_ahead_along_the_buffer() {
    // Step 1 with Nesterov: b = g, and the step uses g + μ·b = (1 + μ)·g.
    let config = Sgd { lr: 0.5, momentum: 0.5, nesterov: true, ..Sgd::default() };
    let mut state = ParamState::default();
    let mut param = vec![0.0f32, 2.0];
    step_once(config, &mut state, &mut param, &[1.0, -1.0], false);
    assert_eq!(param, [-0.75, 2.75]);
  }

  #[test]
  fn plain_sgd_keeps_no_buffer_and_a_late_momentum_starts_from_the_gradient() {
    let mut config = Sgd { lr: 0.1, ..Sgd::default() };
    let mut state = ParamState::default();
    let mut param = vec![1.0f64];
    step_once(config, &mut state, &mut param, &[2.0], true);
    assert_eq!((state.buffers.count(), param[0]), (0, 1.0 - 0.2));
    // PyTorch creates the buffer on the first step that finds μ ≠ 0, as a copy of the gradient.
    config.momentum = 0.9;
    config.dampening = 0.5;
    step_once(config, &mut state, &mut param, &[3.0], true);
    assert_eq!(buffers_f64(&state), [vec![3.0]]);
  }

  #[test]
  fn bad_options_are_rejected_with_field_and_value() {
    assert_rejects::<Sgd>(&[
      ("lr", -1.0, "invalid lr: -1 (expected a finite lr >= 0)"),
      ("momentum", -0.5, "invalid momentum: -0.5 (expected a finite momentum >= 0)"),
      ("dampening", f64::NAN, "invalid dampening: NaN (expected a finite dampening)"),
      ("weight_decay", -1e-4, "invalid weight_decay: -0.0001 (expected a finite weight_decay >= 0)"),
      ("nesterov", 0.5, "invalid nesterov: 0.5 (expected true or false)"),
      (
        "nesterov",
        1.0,
        "nesterov momentum requires momentum > 0 and dampening = 0, got momentum = 0 and dampening = 0",
      ),
    ]);
    let packed = packed_with(Sgd::fields(), &[("nesterov", 1.0), ("momentum", 0.9), ("dampening", 0.1)]);
    let error = Sgd::from_packed(&packed).unwrap_err();
    assert_eq!(error.field(), Some("nesterov"));
    assert_eq!(
      error.describe(|name| name.to_uppercase()),
      "NESTEROV momentum requires MOMENTUM > 0 and DAMPENING = 0, got MOMENTUM = 0.9 and DAMPENING = 0.1"
    );
    assert!(Sgd::from_packed(&packed_with(Sgd::fields(), &[("nesterov", 1.0), ("momentum", 0.9)])).is_ok());
  }
}
