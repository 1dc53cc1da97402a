//! Schedule-Free AdamW and SGD.
//!
//! Defazio, Yang, Mehta, Mishchenko, Khaled & Cutkosky, "The Road Less Scheduled", NeurIPS 2024
//! (the winner of AlgoPerf's self-tuning track). The semantics are those of the `schedulefree`
//! package's `AdamWScheduleFree` and `SGDScheduleFree` (schedulefree/adamw_schedulefree.py and
//! sgd_schedulefree.py, version 1.4.1), not of its `*Closure`, `*Paper` or `*Reference` classes.
//!
//! Schedule-free training replaces a learning-rate schedule by averaging. Three sequences move
//! together: z, the base optimizer's iterates; x, a weighted average of the z's (the point to
//! evaluate); and y = (1 − β)·z + β·x, where gradients are taken. The parameters hold y while
//! training and x while evaluating; z is state. With learning rate γ, warmup W, power r,
//! weight power q, and the group's step counter k (0 before its first step), each step is
//!
//! ```text
//! γₖ = γ·(k + 1)/W  if k < W, else γ          (linear warmup; the package's `scheduled_lr`)
//! γmax ← max(γmax, γₖ)                         (γmax starts at −1)
//! wₖ = (k + 1)^r · γmax^q,  Σw ← Σw + wₖ
//! c = wₖ/Σw                                    (0 while Σw = 0)
//! ```
//!
//! and each element of a parameter y with gradient g, its z (a copy of y at the parameter's first
//! step) and, for AdamW, second moment v (zero before its first step) is updated as
//!
//! ```text
//! ĝ = g/(√(v/(1 − β₂ᵏ⁺¹)) + ε)    AdamW, after v ← β₂·v + (1 − β₂)·g²
//! ĝ = g                           SGD
//! ĝ ← ĝ + λ·y                     (weight decay at y)
//! y ← y + c·(z − y)               (x moves toward z by c; y follows)
//! y ← y + γₖ·(β·(1 − c) − 1)·ĝ
//! z ← z − γₖ·ĝ
//! ```
//!
//! with β = β₁ for AdamW and the momentum for SGD; then k ← k + 1. In terms of the three
//! sequences this is z ← z − γₖĝ, x ← (1 − c)·x + c·z, y ← (1 − β)·z + β·x, computed on y alone.
//! Switching to evaluation moves each parameter to x = y + (1 − 1/β)·(z − y), and back to training
//! to y = x + (1 − β)·(z − x) ([`switch_weight`], [`switch`]).
//!
//! Conventions, all the package's: k, γmax, Σw and the mode are per parameter group, not per
//! parameter: every step advances them for every group, whichever of its parameters have
//! gradients; they travel with the group's options ([`ScheduleFree::schedule`] gives the next
//! ones), as the package keeps them in its `param_groups`. A parameter's z starts as a copy of
//! it on its first step with a gradient. ε is added after the root of the bias-corrected second
//! moment; there is no first moment (y's interpolation is the momentum). Rounding follows
//! PyTorch's vectorised CPU kernels: `x + a·y` (`add_`, `sub_` with `alpha`) and `addcmul_` are
//! one fused multiply-add, `lerp_` is `fma(c, z − y, y)` for |c| < ½ and `fma(c − 1, z − y, z)`
//! otherwise, divisions are true divisions, and every scalar is computed in `f64` and rounded to
//! the element type. So results are bit-identical to the package's except where PyTorch's CPU
//! `sqrt_` is not correctly rounded (about one float32 square root in six in the torch 2.15 build
//! the fixtures come from) and this one is: an ulp there, in about 3% of float32 elements over a
//! run. Unlike the package, the gradient is read only, not overwritten by ĝ.

use crate::config::{ConfigError, Rule};
use crate::engine::run::{run, Job, MAX_BUFFERS};
use crate::engine::simd::{dispatch, multiversion};
use crate::engine::state::ParamState;
use crate::float::{Float, Lerp, NonFinite};
use crate::optimizers::{Buffer, Optimizer};

crate::options! {
  /// Schedule-Free AdamW's options (the `schedulefree` package's `AdamWScheduleFree`), then the group state the package keeps beside them.
  pub struct AdamWScheduleFree {
    /// Learning rate γ, reached after warmup.
    lr: f64 = 0.0025, NonNegative;
    /// (β₁, β₂): β₁ places y between z and the average x (y = (1 − β₁)·z + β₁·x; above 0), β₂ is the decay of the second moment.
    betas: (f64, f64) = (0.9, 0.999), UnitHalfOpen;
    /// ε, added to the root of the bias-corrected second moment.
    eps: f64 = 1e-8, NonNegative;
    /// Weight decay λ: λ·y added to the normalized gradient.
    weight_decay: f64 = 0.0, NonNegative;
    /// Steps of linear warmup: the group's step k (from 0) uses γ·(k + 1)/warmupSteps while k < warmupSteps.
    warmup_steps: f64 = 0.0, NonNegative;
    /// Power r of the polynomial weighting of the average: step k weighs (k + 1)^r.
    r: f64 = 0.0, Finite;
    /// Power of the largest learning rate so far in each step's weight in the average, so that warmup steps weigh less.
    weight_lr_power: f64 = 2.0, Finite;
    /// Group state that every step advances (the package's `k`): the steps this group has taken.
    k: f64 = 0.0, NonNegative;
    /// Group state (`train_mode`): whether the parameters hold the training point y or the average x; set by train() and eval().
    train_mode: bool = false;
    /// Group state that every step advances (`weight_sum`): the sum of the averaging weights so far.
    weight_sum: f64 = 0.0, NonNegative;
    /// Group state that every step advances (`lr_max`): the largest warmed-up learning rate so far, −1 before the first step.
    lr_max: f64 = -1.0, Finite;
    /// Group state that every step writes (`scheduled_lr`), for logging: the last step's warmed-up learning rate.
    scheduled_lr: f64 = 0.0, NonNegative;
  }
  check = AdamWScheduleFree::check;
}

crate::options! {
  /// Schedule-Free SGD's options (the `schedulefree` package's `SGDScheduleFree`), then the group state the package keeps beside them.
  pub struct SgdScheduleFree {
    /// Learning rate γ, reached after warmup.
    lr: f64 = 1.0, NonNegative;
    /// Momentum β, between 0 and 1 exclusive: y = (1 − β)·z + β·x.
    momentum: f64 = 0.9, UnitHalfOpen;
    /// Weight decay λ, an L2 penalty: λ·y added to the gradient.
    weight_decay: f64 = 0.0, NonNegative;
    /// Steps of linear warmup: the group's step k (from 0) uses γ·(k + 1)/warmupSteps while k < warmupSteps.
    warmup_steps: f64 = 0.0, NonNegative;
    /// Power r of the polynomial weighting of the average: step k weighs (k + 1)^r.
    r: f64 = 0.0, Finite;
    /// Power of the largest learning rate so far in each step's weight in the average, so that warmup steps weigh less.
    weight_lr_power: f64 = 2.0, Finite;
    /// Group state that every step advances (the package's `k`): the steps this group has taken.
    k: f64 = 0.0, NonNegative;
    /// Group state (`train_mode`): whether the parameters hold the training point y or the average x; set by train() and eval().
    train_mode: bool = false;
    /// Group state that every step advances (`weight_sum`): the sum of the averaging weights so far.
    weight_sum: f64 = 0.0, NonNegative;
    /// Group state that every step advances (`lr_max`): the largest warmed-up learning rate so far, −1 before the first step.
    lr_max: f64 = -1.0, Finite;
    /// Group state that every step writes (`scheduled_lr`), for logging: the last step's warmed-up learning rate.
    scheduled_lr: f64 = 0.0, NonNegative;
  }
  check = SgdScheduleFree::check;
}

/// β must be above 0: leaving training divides by it. The package refuses SGD's momentum 0 when
/// it is made, and AdamW's β₁ = 0 when `eval()` divides by it; both are refused here when made.
fn positive(field: &'static str, value: f64) -> Result<(), ConfigError> {
  if value > 0.0 {
    return Ok(());
  }
  Err(ConfigError::OutOfRange { field, value, rule: Rule::Positive, optional: false })
}

impl AdamWScheduleFree {
  fn check(&self) -> Result<(), ConfigError> {
    positive("betas[0]", self.betas.0)
  }
}

impl SgdScheduleFree {
  fn check(&self) -> Result<(), ConfigError> {
    positive("momentum", self.momentum)
  }
}

/// One step of a group's schedule: what the step uses, and the group state after it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
  /// γₖ, the step's learning rate after warmup (the package's `scheduled_lr`).
  pub lr: f64,
  /// c = wₖ/Σw, how far x moves toward z (the package's `ckp1`).
  pub ckp1: f64,
  /// k + 1
  pub k: f64,
  /// γmax after the step.
  pub lr_max: f64,
  /// Σw after the step.
  pub weight_sum: f64,
}

impl Schedule {
  /// The schedule of a group whose step counter is `k`, as the package computes it.
  #[allow(clippy::too_many_arguments)]
  pub fn new(lr: f64, warmup_steps: f64, r: f64, weight_lr_power: f64, k: f64, lr_max: f64, weight_sum: f64) -> Self {
    let sched = if k < warmup_steps { (k + 1.0) / warmup_steps } else { 1.0 };
    let lr = lr * sched;
    // Python's max(lr, lr_max): the first unless the second is larger.
    let lr_max = if lr_max > lr { lr_max } else { lr };
    let weight = (k + 1.0).powf(r) * lr_max.powf(weight_lr_power);
    let weight_sum = weight_sum + weight;
    // The package catches the ZeroDivisionError of 0/0 (γmax = 0 with q > 0) and takes 0.
    let ckp1 = if weight_sum == 0.0 { 0.0 } else { weight / weight_sum };
    Schedule { lr, ckp1, k: k + 1.0, lr_max, weight_sum }
  }

  /// The group state this schedule leaves, in [`GROUP_STATE`] order: k + 1, γmax, Σw and γₖ.
  pub fn write(&self, out: &mut [f64]) {
    out.copy_from_slice(&[self.k, self.lr_max, self.weight_sum, self.lr]);
  }
}

/// The group state a step advances, in the order [`Schedule::write`] gives it: the options of both
/// optimizers that the package keeps in its param groups and updates every step.
const GROUP_STATE: &[&str] = &["k", "lr_max", "weight_sum", "scheduled_lr"];

/// What train(), eval() and a group's bookkeeping need of a schedule-free optimizer.
pub trait ScheduleFree: Optimizer {
  /// β of y = (1 − β)·z + β·x: AdamW's β₁, SGD's momentum.
  fn beta(&self) -> f64;
  /// Whether the group's parameters hold y (training) rather than x.
  fn train_mode(&self) -> bool;
  /// The group's next step: what it uses, and the group state it leaves.
  fn schedule(&self) -> Schedule;
}

impl ScheduleFree for AdamWScheduleFree {
  fn beta(&self) -> f64 {
    self.betas.0
  }
  fn train_mode(&self) -> bool {
    self.train_mode
  }
  fn schedule(&self) -> Schedule {
    Schedule::new(self.lr, self.warmup_steps, self.r, self.weight_lr_power, self.k, self.lr_max, self.weight_sum)
  }
}

impl ScheduleFree for SgdScheduleFree {
  fn beta(&self) -> f64 {
    self.momentum
  }
  fn train_mode(&self) -> bool {
    self.train_mode
  }
  fn schedule(&self) -> Schedule {
    Schedule::new(self.lr, self.warmup_steps, self.r, self.weight_lr_power, self.k, self.lr_max, self.weight_sum)
  }
}

/// The per-step scalars of a schedule-free update, in `f64`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScheduleFreeCoeffs {
  /// −γₖ: z's step along ĝ.
  pub neg_lr: f64,
  /// c, the lerp weight of y toward z.
  pub ckp1: f64,
  /// γₖ·(β·(1 − c) − 1): y's step along ĝ.
  pub y_step: f64,
  /// λ; 0 for none.
  pub weight_decay: f64,
  /// AdamW's β₂ (unused by SGD).
  pub beta2: f64,
  /// 1 − β₂
  pub grad_sq_weight: f64,
  /// 1 − β₂ᵏ⁺¹
  pub bias_correction2: f64,
  pub eps: f64,
  /// The parameter's first step: z starts as a copy of y. Set by [`Optimizer::advance`].
  pub init_z: bool,
}

impl ScheduleFreeCoeffs {
  fn new(schedule: Schedule, beta: f64, weight_decay: f64) -> Self {
    let Schedule { lr, ckp1, .. } = schedule;
    ScheduleFreeCoeffs {
      neg_lr: -lr,
      ckp1,
      y_step: lr * (beta * (1.0 - ckp1) - 1.0),
      weight_decay,
      beta2: 0.0,
      grad_sq_weight: 0.0,
      bias_correction2: 1.0,
      eps: 0.0,
      init_z: false,
    }
  }
}

impl Optimizer for AdamWScheduleFree {
  const NAME: &'static str = "AdamWScheduleFree";
  const SUMMARY: &'static str =
    "Schedule-Free AdamW (Defazio et al., 2024): Adam's normalized steps, averaged instead of scheduled; train() and eval() switch the parameters between the training point and the average";
  const REFERENCE: &'static str = "schedulefree.AdamWScheduleFree";
  const BUFFERS: &'static [Buffer] = &[Buffer::like_param("z"), Buffer::like_param("exp_avg_sq")];
  const GROUP_STATE: &'static [&'static str] = GROUP_STATE;
  type Coeffs = ScheduleFreeCoeffs;

  fn group_state_after_step(&self, out: &mut [f64]) {
    self.schedule().write(out);
  }

  /// The group's schedule, from the group state among the options: the parameter's own step
  /// count plays no part.
  fn coeffs(&self, _step: u64) -> ScheduleFreeCoeffs {
    let (beta1, beta2) = self.betas;
    ScheduleFreeCoeffs {
      beta2,
      grad_sq_weight: 1.0 - beta2,
      bias_correction2: 1.0 - beta2.powf(self.k + 1.0),
      eps: self.eps,
      ..ScheduleFreeCoeffs::new(self.schedule(), beta1, self.weight_decay)
    }
  }

  fn advance(&self, coeffs: &mut ScheduleFreeCoeffs, state: &mut ParamState) {
    coeffs.init_z = state.buffers.is_empty();
  }

  fn update<T: Float>(c: &ScheduleFreeCoeffs, param: &mut [T], grad: &[T], buffers: [&mut [T]; MAX_BUFFERS]) -> bool {
    let k = Scalars::new(c);
    let [z, exp_avg_sq, _] = buffers;
    let mut non_finite = false;
    dispatch!(adamw_best::<T>[DECAY: c.weight_decay != 0.0, INIT: c.init_z](&k, param, grad, z, exp_avg_sq, &mut non_finite));
    non_finite
  }

  fn update_reference<T: Float>(c: &ScheduleFreeCoeffs, param: &mut [T], grad: &[T], buffers: [&mut [T]; MAX_BUFFERS]) {
    let [z, exp_avg_sq, _] = buffers;
    let cast = T::from_f64;
    for i in 0..param.len() {
      let y = param[i];
      if c.init_z {
        z[i] = y;
      }
      let g = grad[i];
      exp_avg_sq[i] = (cast(c.grad_sq_weight) * g).mul_add(g, exp_avg_sq[i] * cast(c.beta2));
      let denom = (exp_avg_sq[i] / cast(c.bias_correction2)).sqrt() + cast(c.eps);
      let mut normalized = g / denom;
      if c.weight_decay != 0.0 {
        normalized = y.mul_add(cast(c.weight_decay), normalized);
      }
      let y = lerp(y, z[i], cast(c.ckp1));
      param[i] = normalized.mul_add(cast(c.y_step), y);
      z[i] = normalized.mul_add(cast(c.neg_lr), z[i]);
    }
  }
}

impl Optimizer for SgdScheduleFree {
  const NAME: &'static str = "SGDScheduleFree";
  const SUMMARY: &'static str =
    "Schedule-Free SGD (Defazio et al., 2024): SGD averaged instead of scheduled; train() and eval() switch the parameters between the training point and the average";
  const REFERENCE: &'static str = "schedulefree.SGDScheduleFree";
  const BUFFERS: &'static [Buffer] = &[Buffer::like_param("z")];
  const GROUP_STATE: &'static [&'static str] = GROUP_STATE;
  type Coeffs = ScheduleFreeCoeffs;

  fn group_state_after_step(&self, out: &mut [f64]) {
    self.schedule().write(out);
  }

  /// The group's schedule, from the group state among the options: the parameter's own step
  /// count plays no part.
  fn coeffs(&self, _step: u64) -> ScheduleFreeCoeffs {
    ScheduleFreeCoeffs::new(self.schedule(), self.momentum, self.weight_decay)
  }

  fn advance(&self, coeffs: &mut ScheduleFreeCoeffs, state: &mut ParamState) {
    coeffs.init_z = state.buffers.is_empty();
  }

  fn update<T: Float>(c: &ScheduleFreeCoeffs, param: &mut [T], grad: &[T], buffers: [&mut [T]; MAX_BUFFERS]) -> bool {
    let k = Scalars::new(c);
    let [z, _, _] = buffers;
    let mut non_finite = false;
    dispatch!(sgd_best::<T>[DECAY: c.weight_decay != 0.0, INIT: c.init_z](&k, param, grad, z, &mut non_finite));
    non_finite
  }

  fn update_reference<T: Float>(c: &ScheduleFreeCoeffs, param: &mut [T], grad: &[T], buffers: [&mut [T]; MAX_BUFFERS]) {
    let [z, _, _] = buffers;
    let cast = T::from_f64;
    for i in 0..param.len() {
      let y = param[i];
      if c.init_z {
        z[i] = y;
      }
      let mut g = grad[i];
      if c.weight_decay != 0.0 {
        g = y.mul_add(cast(c.weight_decay), g);
      }
      let y = lerp(y, z[i], cast(c.ckp1));
      param[i] = g.mul_add(cast(c.y_step), y);
      z[i] = g.mul_add(cast(c.neg_lr), z[i]);
    }
  }
}

/// PyTorch's `lerp` as its vectorised CPU kernel computes it: from the nearer end.
#[inline(always)]
fn lerp<T: Float>(from: T, to: T, weight: T) -> T {
  if weight.abs() < T::from_f64(0.5) {
    weight.mul_add(to - from, from)
  } else {
    (weight - T::ONE).mul_add(to - from, to)
  }
}

/// [`ScheduleFreeCoeffs`] rounded to the element type, once per piece.
struct Scalars<T> {
  /// y toward z, by c.
  lerp: Lerp<T>,
  y_step: T,
  neg_lr: T,
  weight_decay: T,
  beta2: T,
  grad_sq_weight: T,
  bias_correction2: T,
  eps: T,
}

impl<T: Float> Scalars<T> {
  fn new(c: &ScheduleFreeCoeffs) -> Self {
    Scalars {
      lerp: Lerp::new(c.ckp1),
      y_step: T::from_f64(c.y_step),
      neg_lr: T::from_f64(c.neg_lr),
      weight_decay: T::from_f64(c.weight_decay),
      beta2: T::from_f64(c.beta2),
      grad_sq_weight: T::from_f64(c.grad_sq_weight),
      bias_correction2: T::from_f64(c.bias_correction2),
      eps: T::from_f64(c.eps),
    }
  }
}

multiversion!(fn adamw_best<T: Float, const DECAY: bool, const INIT: bool>(k: &Scalars<T>, param: &mut [T], grad: &[T], z: &mut [T], exp_avg_sq: &mut [T], non_finite: &mut bool) => adamw);

/// One pass over memory: reads y, g, z (not on the first step), v; writes y, z, v.
#[inline(always)]
fn adamw<T: Float, const DECAY: bool, const INIT: bool>(
  k: &Scalars<T>,
  param: &mut [T],
  grad: &[T],
  z: &mut [T],
  exp_avg_sq: &mut [T],
  non_finite: &mut bool,
) {
  let n = param.len();
  let (grad, z, exp_avg_sq) = (&grad[..n], &mut z[..n], &mut exp_avg_sq[..n]);
  let mut check = NonFinite::new();
  for i in 0..n {
    check.see(grad[i]);
    let y = param[i];
    let zi = if INIT { y } else { z[i] };
    let g = grad[i];
    let v = (k.grad_sq_weight * g).mul_add(g, exp_avg_sq[i] * k.beta2);
    exp_avg_sq[i] = v;
    let mut normalized = g / ((v / k.bias_correction2).sqrt() + k.eps);
    if DECAY {
      normalized = y.mul_add(k.weight_decay, normalized);
    }
    let y = k.lerp.apply(y, zi);
    param[i] = normalized.mul_add(k.y_step, y);
    z[i] = normalized.mul_add(k.neg_lr, zi);
  }
  *non_finite |= check.found();
}

multiversion!(fn sgd_best<T: Float, const DECAY: bool, const INIT: bool>(k: &Scalars<T>, param: &mut [T], grad: &[T], z: &mut [T], non_finite: &mut bool) => sgd);

/// One pass over memory: reads y, g, z (not on the first step); writes y, z.
#[inline(always)]
fn sgd<T: Float, const DECAY: bool, const INIT: bool>(
  k: &Scalars<T>,
  param: &mut [T],
  grad: &[T],
  z: &mut [T],
  non_finite: &mut bool,
) {
  let n = param.len();
  let (grad, z) = (&grad[..n], &mut z[..n]);
  let mut check = NonFinite::new();
  for i in 0..n {
    check.see(grad[i]);
    let y = param[i];
    let zi = if INIT { y } else { z[i] };
    let mut g = grad[i];
    if DECAY {
      g = y.mul_add(k.weight_decay, g);
    }
    let y = k.lerp.apply(y, zi);
    param[i] = g.mul_add(k.y_step, y);
    z[i] = g.mul_add(k.neg_lr, zi);
  }
  *non_finite |= check.found();
}

/// The weight that moves a parameter toward its z when its group changes mode, p ← p + w·(z − p):
/// 1 − β from x to y (`train()`), 1 − 1/β from y to x (`eval()`).
pub fn switch_weight(beta: f64, to_train: bool) -> f64 {
  if to_train {
    1.0 - beta
  } else {
    1.0 - 1.0 / beta
  }
}

/// Moves every parameter of `jobs` toward its z (each job's `grad`, read only) by its weight (the
/// job's coefficient, from [`switch_weight`]): `train()` and `eval()`, as PyTorch's `lerp_`
/// computes them, one fused pass over each parameter and its z, on the step's thread pool. Each
/// job's `buffers` are unused.
pub fn switch<T: Float>(jobs: &mut [Job<'_, T, f64>]) {
  run::<Switch, T>(jobs);
}

crate::options! {
  /// The mode switch, run by the engine as an "optimizer" whose gradient is z; not in the
  /// registry (use [`switch`]).
  pub struct Switch {}
}

impl Optimizer for Switch {
  const NAME: &'static str = "ScheduleFreeSwitch";
  const SUMMARY: &'static str = "p ← lerp(p, z, w): a schedule-free optimizer's train() or eval()";
  const BUFFERS: &'static [Buffer] = &[];
  type Coeffs = f64;

  fn coeffs(&self, _step: u64) -> f64 {
    0.0
  }

  /// Its second array is z, not a gradient: it reports nothing.
  fn update<T: Float>(weight: &f64, param: &mut [T], z: &[T], _: [&mut [T]; MAX_BUFFERS]) -> bool {
    switch_best::<T>(&T::from_f64(*weight), param, z);
    false
  }

  fn update_reference<T: Float>(weight: &f64, param: &mut [T], z: &[T], _: [&mut [T]; MAX_BUFFERS]) {
    for i in 0..param.len() {
      param[i] = lerp(param[i], z[i], T::from_f64(*weight));
    }
  }
}

multiversion!(fn switch_best<T: Float>(weight: &T, param: &mut [T], z: &[T]) => switch_kernel);

#[inline(always)]
fn switch_kernel<T: Float>(weight: &T, param: &mut [T], z: &[T]) {
  let (weight, n) = (*weight, param.len());
  let z = &z[..n];
  let from_param = weight.abs() < T::from_f64(0.5);
  let coeff = if from_param { weight } else { weight - T::ONE };
  for i in 0..n {
    let (p, zi) = (param[i], z[i]);
    param[i] = coeff.mul_add(zi - p, if from_param { p } else { zi });
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::engine::state::Buffers;
  use crate::testing::{
    assert_fused_matches_reference, assert_rejects, assert_zero_lr_is_identity, buffers_f64, same_bits, step_once,
    values, LENGTHS,
  };

  /// Group states that put c on both sides of ½ (k = 0: c = 1), with and without decay and warmup.
  fn adamw_configs() -> Vec<AdamWScheduleFree> {
    let base = AdamWScheduleFree { train_mode: true, ..AdamWScheduleFree::default() };
    vec![
      base,
      AdamWScheduleFree { k: 3.0, lr_max: 0.0025, weight_sum: 3.0 * 0.0025f64.powi(2), weight_decay: 0.1, ..base },
      AdamWScheduleFree { k: 1.0, lr_max: 1e-3, weight_sum: 1e-6, betas: (0.5, 0.9), eps: 1e-3, ..base },
      AdamWScheduleFree { k: 7.0, warmup_steps: 10.0, r: 1.5, lr_max: 2e-3, weight_sum: 4e-5, lr: 1e-2, ..base },
    ]
  }

  fn sgd_configs() -> Vec<SgdScheduleFree> {
    let base = SgdScheduleFree { train_mode: true, lr: 0.1, ..SgdScheduleFree::default() };
    vec![
      base,
      SgdScheduleFree { k: 3.0, lr_max: 0.1, weight_sum: 0.03, weight_decay: 0.1, ..base },
      SgdScheduleFree { k: 1.0, lr_max: 0.1, weight_sum: 0.01, momentum: 0.4, ..base },
      SgdScheduleFree {
        k: 5.0,
        warmup_steps: 8.0,
        r: 1.0,
        weight_lr_power: 0.0,
        lr_max: 0.05,
        weight_sum: 15.0,
        ..base
      },
    ]
  }

  #[test]
  fn fused_parallel_kernels_match_references_bit_for_bit() {
    assert_fused_matches_reference(&adamw_configs());
    assert_fused_matches_reference(&sgd_configs());
  }

  #[test]
  fn the_switch_matches_its_reference_bit_for_bit_on_every_length() {
    for len in LENGTHS {
      for weight in [1.0 - 0.9, 1.0 - 1.0 / 0.9, 0.7, -1.0] {
        let (mut fast, z) = (values::<f32>(len, 3), values::<f32>(len, 4));
        let mut slow = fast.clone();
        switch(&mut [Job::flat(weight, &mut fast[..], &z[..], [&mut [], &mut [], &mut []])]);
        Switch::update_reference(&weight, &mut slow, &z, [&mut [], &mut [], &mut []]);
        assert!(same_bits(&fast, &slow), "len {len} weight {weight}");
      }
    }
  }

  #[test]
  fn the_schedule_warms_up_weights_by_the_largest_rate_and_starts_with_c_one() {
    // k = 0, γmax = −1, Σw = 0: γ₀ = γ, w₀ = γ², c = 1 (x becomes z).
    let first = Schedule::new(0.1, 0.0, 0.0, 2.0, 0.0, -1.0, 0.0);
    assert_eq!(first, Schedule { lr: 0.1, ckp1: 1.0, k: 1.0, lr_max: 0.1, weight_sum: 0.1 * 0.1 });
    // Warmup over 4 steps at k = 1: γ₁ = γ·2/4; γmax takes it; w₁ = 2^r·γmax^q.
    let warm = Schedule::new(0.2, 4.0, 1.0, 2.0, 1.0, 0.05, 0.0025);
    assert_eq!(warm.lr, 0.1);
    assert_eq!(warm.lr_max, 0.1);
    let weight = 2.0 * 0.1f64.powi(2);
    assert_eq!((warm.weight_sum, warm.ckp1), (0.0025 + weight, weight / (0.0025 + weight)));
    // γmax never falls: a smaller rate later still weighs by the largest.
    let later = Schedule::new(0.01, 0.0, 0.0, 2.0, 5.0, 0.1, 0.05);
    assert_eq!((later.lr, later.lr_max, later.weight_sum), (0.01, 0.1, 0.05 + 0.01));
    // lr = 0 from the start: 0/0, which the package turns into c = 0.
    assert_eq!(Schedule::new(0.0, 0.0, 0.0, 2.0, 0.0, -1.0, 0.0).ckp1, 0.0);
  }

  #[test]
  fn a_step_writes_each_groups_next_schedule_into_its_packed_options_and_nothing_else() {
    use crate::config::Options;
    use crate::optimizers::write_group_state;
    use crate::testing::{field_index, packed_with};
    use crate::Adam;
    let fields = AdamWScheduleFree::fields();
    let groups = [
      packed_with(fields, &[("lr", 0.2), ("warmup_steps", 4.0), ("r", 1.0), ("k", 1.0), ("lr_max", 0.05)]),
      packed_with(fields, &[("lr", 0.01), ("k", 5.0), ("lr_max", 0.1), ("weight_sum", 0.05), ("train_mode", 1.0)]),
    ];
    let mut packed = groups.concat();
    let configs: Vec<AdamWScheduleFree> = groups.iter().map(|g| AdamWScheduleFree::from_packed(g).unwrap()).collect();
    write_group_state(&configs, &mut packed);
    for (group, (before, after)) in groups.iter().zip(packed.chunks(fields.len())).enumerate() {
      let next = configs[group].schedule();
      let changed =
        [("k", next.k), ("lr_max", next.lr_max), ("weight_sum", next.weight_sum), ("scheduled_lr", next.lr)];
      for (slot, field) in fields.iter().enumerate() {
        let expected = changed.iter().find(|(name, _)| *name == field.name).map_or(before[slot], |&(_, v)| v);
        assert_eq!(after[slot].to_bits(), expected.to_bits(), "group {group}, {}", field.name);
      }
    }
    assert_eq!(packed[field_index(fields, "k")], 2.0);
    assert_eq!(packed[fields.len() + field_index(fields, "scheduled_lr")], 0.01);
    // An optimizer without group state leaves its options as they were.
    let adam = packed_with(Adam::fields(), &[("lr", 0.5)]);
    let mut written = adam.clone();
    write_group_state(&[Adam::from_packed(&adam).unwrap()], &mut written);
    assert_eq!(written, adam);
  }

  #[test]
  fn first_step_starts_z_at_the_parameter_and_moves_y_and_z_together() {
    // k = 0: c = 1, so y ← z = y₀, then y and z both take −γ·ĝ with ĝ = g/(|g| + ε) (v̂ = g²).
    let config = AdamWScheduleFree { lr: 0.01, train_mode: true, ..AdamWScheduleFree::default() };
    let mut param = vec![1.0f64, -2.0, 0.5, 3.0];
    let grad = [0.25, -4.0, 0.0, 1e-3];
    let mut state = ParamState::default();
    step_once(config, &mut state, &mut param, &grad, true);
    let expected: Vec<f64> =
      [1.0f64, -2.0, 0.5, 3.0].iter().zip(grad).map(|(p, g)| p - 0.01 * g / (g.abs() + 1e-8)).collect();
    let z = &buffers_f64(&state)[0];
    for i in 0..4 {
      assert!((param[i] - expected[i]).abs() <= 1e-15, "{} vs {}", param[i], expected[i]);
      assert_eq!(param[i].to_bits(), z[i].to_bits(), "y = z after the first step");
    }
  }

  /// The three sequences of the paper, x, z and y = (1 − β)z + βx, in `f64`, with the schedule
  /// of (γ, warmup, r); returns y and x at the end.
  fn three_sequences(
    beta: f64,
    adam: Option<(f64, f64)>,
    (lr, warmup, r): (f64, f64, f64),
    weight_decay: f64,
    grads: &[Vec<f64>],
    y0: &[f64],
  ) -> (Vec<f64>, Vec<f64>) {
    let n = y0.len();
    let (mut x, mut z, mut y, mut v) = (y0.to_vec(), y0.to_vec(), y0.to_vec(), vec![0.0; n]);
    let (mut lr_max, mut weight_sum) = (-1.0, 0.0);
    for (k, g) in grads.iter().enumerate() {
      let s = Schedule::new(lr, warmup, r, 2.0, k as f64, lr_max, weight_sum);
      (lr_max, weight_sum) = (s.lr_max, s.weight_sum);
      for i in 0..n {
        let mut d = g[i];
        if let Some((beta2, eps)) = adam {
          v[i] = beta2 * v[i] + (1.0 - beta2) * g[i] * g[i];
          d = g[i] / ((v[i] / (1.0 - beta2.powi(k as i32 + 1))).sqrt() + eps);
        }
        z[i] -= s.lr * (d + weight_decay * y[i]);
        x[i] = (1.0 - s.ckp1) * x[i] + s.ckp1 * z[i];
        y[i] = (1.0 - beta) * z[i] + beta * x[i];
      }
    }
    (y, x)
  }

  /// Steps `O` over `grads` as the binding and facade do (the group state advanced after each
  /// step), then switches to eval; returns y and x.
  fn stepped<O: ScheduleFree + Copy>(
    mut config: O,
    set: impl Fn(&mut O, Schedule),
    grads: &[Vec<f64>],
    y0: &[f64],
  ) -> (Vec<f64>, Vec<f64>) {
    let mut param = y0.to_vec();
    let mut state = ParamState::default();
    for g in grads {
      let next = config.schedule();
      step_once(config, &mut state, &mut param, g, true);
      set(&mut config, next);
    }
    let y = param.clone();
    let Buffers::F64(buffers) = &state.buffers else { panic!("f64 state") };
    let weight = switch_weight(config.beta(), false);
    switch(&mut [Job::flat(weight, &mut param[..], &buffers[0][..], [&mut [], &mut [], &mut []])]);
    (y, param)
  }

  #[test]
  fn follows_the_three_sequences_of_the_paper_in_f64() {
    let y0 = values::<f64>(13, 3);
    let grads: Vec<Vec<f64>> = (0..25).map(|t| values::<f64>(13, 100 + t)).collect();
    let close = |got: &[f64], want: &[f64]| {
      for (a, b) in got.iter().zip(want) {
        assert!((a - b).abs() <= 1e-11 * b.abs().max(1.0), "{a} vs {b}");
      }
    };

    let adamw = AdamWScheduleFree {
      lr: 2e-2,
      betas: (0.8, 0.99),
      eps: 1e-6,
      weight_decay: 0.05,
      warmup_steps: 5.0,
      r: 0.5,
      train_mode: true,
      ..AdamWScheduleFree::default()
    };
    let set = |c: &mut AdamWScheduleFree, s: Schedule| {
      (c.k, c.lr_max, c.weight_sum, c.scheduled_lr) = (s.k, s.lr_max, s.weight_sum, s.lr)
    };
    let (y, x) = stepped(adamw, set, &grads, &y0);
    let (want_y, want_x) = three_sequences(0.8, Some((0.99, 1e-6)), (2e-2, 5.0, 0.5), 0.05, &grads, &y0);
    close(&y, &want_y);
    close(&x, &want_x);

    let sgd = SgdScheduleFree {
      lr: 0.1,
      momentum: 0.7,
      weight_decay: 0.01,
      warmup_steps: 3.0,
      train_mode: true,
      ..SgdScheduleFree::default()
    };
    let set = |c: &mut SgdScheduleFree, s: Schedule| {
      (c.k, c.lr_max, c.weight_sum, c.scheduled_lr) = (s.k, s.lr_max, s.weight_sum, s.lr)
    };
    let (y, x) = stepped(sgd, set, &grads, &y0);
    let (want_y, want_x) = three_sequences(0.7, None, (0.1, 3.0, 0.0), 0.01, &grads, &y0);
    close(&y, &want_y);
    close(&x, &want_x);
  }

  #[test]
  fn eval_then_train_returns_to_the_training_point() {
    let (y, z) = (values::<f64>(1001, 5), values::<f64>(1001, 6));
    for beta in [0.9, 0.5, 0.2] {
      let mut p = y.clone();
      switch(&mut [Job::flat(switch_weight(beta, false), &mut p[..], &z[..], [&mut [], &mut [], &mut []])]);
      for i in 0..p.len() {
        // x = (y − (1 − β)z)/β
        let x = (y[i] - (1.0 - beta) * z[i]) / beta;
        assert!((p[i] - x).abs() <= 1e-12 * x.abs().max(1.0), "x: {} vs {x}", p[i]);
      }
      switch(&mut [Job::flat(switch_weight(beta, true), &mut p[..], &z[..], [&mut [], &mut [], &mut []])]);
      for i in 0..p.len() {
        assert!((p[i] - y[i]).abs() <= 1e-12 * y[i].abs().max(1.0), "y: {} vs {}", p[i], y[i]);
      }
    }
  }

  #[test]
  fn zero_learning_rate_leaves_parameters_unchanged() {
    assert_zero_lr_is_identity(&[AdamWScheduleFree { lr: 0.0, ..AdamWScheduleFree::default() }]);
    assert_zero_lr_is_identity(&[SgdScheduleFree { lr: 0.0, weight_decay: 0.1, ..SgdScheduleFree::default() }]);
  }

  #[test]
  fn bad_options_are_rejected_with_field_and_value() {
    assert_rejects::<AdamWScheduleFree>(&[
      ("lr", -1.0, "invalid lr: -1 (expected a finite lr >= 0)"),
      ("betas[0]", 0.0, "invalid betas[0]: 0 (expected a finite betas[0] > 0)"),
      ("betas[1]", 1.0, "invalid betas[1]: 1 (expected 0 <= betas[1] < 1)"),
      ("warmup_steps", -1.0, "invalid warmup_steps: -1 (expected a finite warmup_steps >= 0)"),
      ("r", f64::INFINITY, "invalid r: Infinity (expected a finite r)"),
      ("k", f64::NAN, "invalid k: NaN (expected a finite k >= 0)"),
      ("train_mode", 0.5, "invalid train_mode: 0.5 (expected true or false)"),
    ]);
    assert_rejects::<SgdScheduleFree>(&[
      ("momentum", 0.0, "invalid momentum: 0 (expected a finite momentum > 0)"),
      ("momentum", 1.0, "invalid momentum: 1 (expected 0 <= momentum < 1)"),
      ("weight_decay", -0.1, "invalid weight_decay: -0.1 (expected a finite weight_decay >= 0)"),
      ("lr_max", f64::NEG_INFINITY, "invalid lr_max: -Infinity (expected a finite lr_max)"),
    ]);
  }
}
