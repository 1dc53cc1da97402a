//! ASGD: averaged stochastic gradient descent.
//!
//! Polyak & Juditsky, "Acceleration of Stochastic Approximation by Averaging", SIAM Journal on
//! Control and Optimization 30(4), 1992. The step-size schedule: Xu, "Towards Optimal One Pass
//! Large Scale Learning with Averaged Stochastic Gradient Descent", arXiv:1107.2490, 2011.
//!
//! With learning rate γ, decay term λ (`lambd`), power α, averaging start t₀, weight decay w and
//! step t (1 on the first update), each parameter carries a step size η and an averaging weight
//! μ (η = γ and μ = 1 before its first step), and each element of a parameter p with gradient g
//! and average ā is updated as
//!
//! ```text
//! g ← −g                          if maximize
//! g ← g + w·p                     (L2 penalty folded into the gradient)
//! p ← p·(1 − λ·η)
//! p ← p − η·g
//! ā ← p                           if μ = 1
//! ā ← ā + μ·(p − ā)               otherwise
//! η ← γ / (1 + λ·γ·t)^α,  μ ← 1 / max(1, t − t₀)      for the next step
//! ```
//!
//! so step t uses η = γ/(1 + λγ(t − 1))^α and μ = 1/max(1, t − 1 − t₀): ā is a copy of p until
//! step t₀ + 2, then the running mean of the iterates since. ā is the averaged parameter the
//! method is named for; it is state (`ax`), and the parameter itself stays the SGD iterate.
//!
//! Conventions, all PyTorch's: η and μ are per-parameter state, computed in `f64` at the end of
//! a step from that step's γ and stored in float32 tensors (its default scalar dtype) whatever
//! the parameter's dtype, so they are kept rounded to `f32` here, in [`ParamState::scalars`]; a
//! change of γ therefore reaches the update one step later, and a parameter's first step uses
//! the γ of that step. `1 − λη` is `f64`. Rounding follows PyTorch's CPU ops one by one: `p·(1 −
//! λη)` is rounded (`mul_`), `p − η·g` and `g + w·p` are fused multiply-adds (`add` with
//! `alpha`), and `ā + μ·(p − ā)` rounds the difference, the product and the sum in turn.

use crate::engine::nontemporal;
use crate::engine::run::MAX_BUFFERS;
use crate::engine::simd::{dispatch, multiversion};
use crate::engine::state::ParamState;
use crate::float::{Float, NonFinite};
use crate::optimizers::{Buffer, Gradient, Optimizer};

crate::options! {
  /// ASGD's options (PyTorch's `torch.optim.ASGD`).
  pub struct Asgd {
    /// Learning rate γ: the step size η starts at γ and decays as γ/(1 + λγt)^α.
    lr: f64 = 1e-2, NonNegative;
    /// Decay term λ: of the step size's schedule, and of the weights by 1 − λη each step.
    lambd: f64 = 1e-4, NonNegative;
    /// Power α of the step size's decay.
    alpha: f64 = 0.75, NonNegative;
    /// The step t₀ after which the average starts: until then it is a copy of the parameter.
    t0: f64 = 1e6, Finite;
    /// Weight decay w, an L2 penalty added to the gradient.
    weight_decay: f64 = 0.0, NonNegative;
    /// Maximize the objective: step along the gradient instead of against it.
    maximize: bool = false;
  }
}

/// The per-step scalars of an ASGD update, in `f64`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AsgdCoeffs {
  /// γ
  pub lr: f64,
  pub lambd: f64,
  /// The η the next step uses: γ/(1 + λγt)^α, rounded to `f32`.
  pub next_eta: f64,
  /// The μ the next step uses: 1/max(1, t − t₀), rounded to `f32`.
  pub next_mu: f64,
  /// −η: per parameter, set by [`Optimizer::advance`] (NaN until then).
  pub neg_eta: f64,
  /// 1 − λη: per parameter, set by [`Optimizer::advance`] (NaN until then).
  pub decay: f64,
  /// μ: per parameter, set by [`Optimizer::advance`] (NaN until then); 1 copies p into ā.
  pub mu: f64,
  /// w; 0 for none.
  pub l2: f64,
  pub maximize: bool,
}

impl Optimizer for Asgd {
  const NAME: &'static str = "ASGD";
  const SUMMARY: &'static str =
    "ASGD (Polyak & Juditsky, 1992): SGD with a decaying step size and a running average of the iterates";
  const BUFFERS: &'static [Buffer] = &[Buffer::like_param("ax")];
  const SCALARS: &'static [&'static str] = &["eta", "mu"];
  type Coeffs = AsgdCoeffs;

  fn buffers_used(&self) -> usize {
    1
  }

  fn coeffs(&self, step: u64) -> AsgdCoeffs {
    let t = step as f64;
    let since = t - self.t0;
    AsgdCoeffs {
      lr: self.lr,
      lambd: self.lambd,
      next_eta: f64::from((self.lr / (1.0 + self.lambd * self.lr * t).powf(self.alpha)) as f32),
      next_mu: f64::from((1.0 / if since > 1.0 { since } else { 1.0 }) as f32),
      neg_eta: f64::NAN,
      decay: f64::NAN,
      mu: f64::NAN,
      l2: self.weight_decay,
      maximize: self.maximize,
    }
  }

  /// Takes η and μ from the state (γ rounded to `f32` and 1 for a parameter with no state yet)
  /// and leaves there those of the next step.
  fn advance(&self, c: &mut AsgdCoeffs, state: &mut ParamState) {
    let (eta, mu) =
      if state.buffers.count() == 0 { (f64::from(c.lr as f32), 1.0) } else { (state.scalars[0], state.scalars[1]) };
    c.neg_eta = -eta;
    c.decay = 1.0 - c.lambd * eta;
    c.mu = mu;
    state.scalars[0] = c.next_eta;
    state.scalars[1] = c.next_mu;
  }

  /// Before averaging starts, ā is a copy of p, stored around the caches when streaming.
  fn written_only(c: &AsgdCoeffs) -> u8 {
    u8::from(c.mu == 1.0)
  }

  fn update<T: Float>(c: &AsgdCoeffs, param: &mut [T], grad: &[T], buffers: [&mut [T]; MAX_BUFFERS]) -> bool {
    let k = Scalars::new(c);
    let [ax, _, _] = buffers;
    let (l2, average) = (c.l2 != 0.0, c.mu != 1.0);
    let mut non_finite = false;
    if !average && nontemporal::is_on() {
      copy_around_cache::<T>(&k, l2, param, grad, ax, &mut non_finite)
    } else {
      dispatch!(fused_best::<T>[L2: l2, AVERAGE: average](&k, param, grad, ax, &mut non_finite))
    }
    non_finite
  }

  fn update_reference<T: Float>(c: &AsgdCoeffs, param: &mut [T], grad: &[T], buffers: [&mut [T]; MAX_BUFFERS]) {
    let [ax, _, _] = buffers;
    let cast = T::from_f64;
    for i in 0..param.len() {
      let mut g = grad[i];
      if c.maximize {
        g = -g;
      }
      if c.l2 != 0.0 {
        g = cast(c.l2).mul_add(param[i], g);
      }
      param[i] = param[i] * cast(c.decay);
      param[i] = cast(c.neg_eta).mul_add(g, param[i]);
      if c.mu != 1.0 {
        let step = (param[i] - ax[i]) * cast(c.mu);
        ax[i] = ax[i] + step;
      } else {
        ax[i] = param[i];
      }
    }
  }
}

/// [`AsgdCoeffs`] rounded to the element type, once per piece.
struct Scalars<T> {
  gradient: Gradient<T>,
  decay: T,
  neg_eta: T,
  mu: T,
}

impl<T: Float> Scalars<T> {
  fn new(c: &AsgdCoeffs) -> Self {
    Scalars {
      gradient: Gradient::new(c.maximize, c.l2),
      decay: T::from_f64(c.decay),
      neg_eta: T::from_f64(c.neg_eta),
      mu: T::from_f64(c.mu),
    }
  }
}

multiversion!(fn fused_best<T: Float, const L2: bool, const AVERAGE: bool>(k: &Scalars<T>, param: &mut [T], grad: &[T], ax: &mut [T], non_finite: &mut bool) => fused);
multiversion!(fn descend_best<T: Float, const L2: bool>(k: &Scalars<T>, param: &mut [T], grad: &[T], non_finite: &mut bool) => descend);

/// Elements [`copy_around_cache`]'s two passes update, then copy, at a time: its arrays' chunks
/// stay in the first-level cache between the two.
const CHUNK: usize = 2048;

/// Before averaging starts (μ = 1), in a step that streams from memory: updates p and writes it
/// into ā with non-temporal stores ([`nontemporal`]). ā is only written, so the step moves 16
/// bytes per float32 parameter, where the fused pass's ordinary stores into ā read each of its
/// lines first (20 bytes, and store misses). float32 with AVX-512 in one pass
/// ([`descend_streaming_avx512`]); otherwise in two per chunk: update p, then copy it.
fn copy_around_cache<T: Float>(
  k: &Scalars<T>,
  l2: bool,
  param: &mut [T],
  grad: &[T],
  ax: &mut [T],
  non_finite: &mut bool,
) {
  let n = param.len();
  #[cfg(target_arch = "x86_64")]
  if std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>() && crate::engine::simd::has_avx512() {
    // SAFETY: `T` is `f32` (checked above), so the casts change no type; this CPU has AVX-512.
    unsafe {
      let k = &*(k as *const Scalars<T>).cast::<Scalars<f32>>();
      let (param, grad, ax) = (
        std::slice::from_raw_parts_mut(param.as_mut_ptr().cast::<f32>(), n),
        std::slice::from_raw_parts(grad.as_ptr().cast::<f32>(), n),
        std::slice::from_raw_parts_mut(ax.as_mut_ptr().cast::<f32>(), n),
      );
      match l2 {
        true => descend_streaming_avx512::<true>(k, param, grad, ax, non_finite),
        false => descend_streaming_avx512::<false>(k, param, grad, ax, non_finite),
      }
    }
    return;
  }
  for ((param, grad), ax) in param.chunks_mut(CHUNK).zip(grad[..n].chunks(CHUNK)).zip(ax[..n].chunks_mut(CHUNK)) {
    dispatch!(descend_best::<T>[L2: l2](k, param, grad, non_finite));
    nontemporal::copy(ax, param);
  }
}

/// [`copy_around_cache`] for float32 in one pass with AVX-512: each vector of p, once updated, is
/// stored back and streamed into ā from the same register. Two passes over each chunk (update p,
/// then copy it) ran about 12% slower from memory than one (BENCHMARKS.md, "Design choices").
/// Ordinary stores up to ā's first 64-byte boundary and after its last whole vector; the bits of
/// [`descended`] everywhere. Runs only while [`nontemporal::is_on`], so the fence that
/// [`nontemporal::with`] makes on its way out orders the streaming stores before the step ends.
///
/// # Safety
/// AVX-512 (F, VL) with AVX2 and FMA; the slices of one length.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
unsafe fn descend_streaming_avx512<const L2: bool>(
  k: &Scalars<f32>,
  param: &mut [f32],
  grad: &[f32],
  ax: &mut [f32],
  non_finite: &mut bool,
) {
  use crate::eightbit::simd::{avx512::Lanes16, Lanes};
  let n = param.len();
  let (grad, ax) = (&grad[..n], &mut ax[..n]);
  let head = ax.as_ptr().align_offset(64).min(n);
  let body = head + (n - head) / 16 * 16;
  let mut check = NonFinite::new();
  for i in (0..head).chain(body..n) {
    check.see(grad[i]);
    let p = descended::<f32, L2>(k, param[i], grad[i]);
    param[i] = p;
    ax[i] = p;
  }
  // SAFETY: this CPU has what `Lanes16` stands for (the caller's); vectors `i..i + 16` for `i` in
  // `head..body` step 16 lie in the slices, and `ax`'s start at `head` is 64-byte aligned, as the
  // streaming store needs.
  unsafe {
    let v = Lanes16::new();
    let (sign, l2) = (v.splat(k.gradient.sign), v.splat(k.gradient.l2));
    let (neg_eta, decay) = (v.splat(k.neg_eta), v.splat(k.decay));
    let mut seen = v.splat(0.0);
    for i in (head..body).step_by(16) {
      let g = v.load(grad.as_ptr().add(i));
      seen = v.see_magnitude(seen, g);
      let p = v.load(param.as_ptr().add(i));
      let g = v.mul(g, sign);
      let g = if L2 { v.fmadd(l2, p, g) } else { g };
      let p = v.fmadd(neg_eta, g, v.mul(p, decay));
      v.store(param.as_mut_ptr().add(i), p);
      std::arch::x86_64::_mm512_stream_ps(ax.as_mut_ptr().add(i), p);
    }
    *non_finite |= v.any_non_finite(seen);
  }
  *non_finite |= check.found();
}

/// p's update: `p(1 − λη) − η·g`, with the L2 penalty folded into g.
#[inline(always)]
fn descended<T: Float, const L2: bool>(k: &Scalars<T>, p: T, g: T) -> T {
  let g = k.gradient.at::<L2>(g, p);
  k.neg_eta.mul_add(g, p * k.decay)
}

/// Reads p and g, writes p.
#[inline(always)]
fn descend<T: Float, const L2: bool>(k: &Scalars<T>, param: &mut [T], grad: &[T], non_finite: &mut bool) {
  let n = param.len();
  let grad = &grad[..n];
  let mut check = NonFinite::new();
  for i in 0..n {
    check.see(grad[i]);
    param[i] = descended::<T, L2>(k, param[i], grad[i]);
  }
  *non_finite |= check.found();
}

/// One pass over memory: reads p, g (and ā once averaging has begun), writes p, ā.
#[inline(always)]
fn fused<T: Float, const L2: bool, const AVERAGE: bool>(
  k: &Scalars<T>,
  param: &mut [T],
  grad: &[T],
  ax: &mut [T],
  non_finite: &mut bool,
) {
  let n = param.len();
  let grad = &grad[..n];
  let ax = &mut ax[..n];
  let mut check = NonFinite::new();
  for i in 0..n {
    check.see(grad[i]);
    let p = descended::<T, L2>(k, param[i], grad[i]);
    param[i] = p;
    ax[i] = if AVERAGE {
      let a = ax[i];
      a + (p - a) * k.mu
    } else {
      p
    };
  }
  *non_finite |= check.found();
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::testing::{
    assert_fused_matches_reference, assert_rejects, assert_zero_lr_is_identity, buffers_f64, same_bits, step_once,
    trajectory, values, STEPS,
  };

  fn configs() -> Vec<Asgd> {
    let base = Asgd::default();
    vec![
      base,
      Asgd { weight_decay: 0.1, lambd: 0.5, alpha: 1.0, ..base },
      // Averaging from the third step on (μ = 1/2, 1/3, …), then from the first.
      Asgd { t0: 1.0, maximize: true, lr: 0.3, ..base },
      Asgd { t0: -2.5, weight_decay: 1e-2, lambd: 0.0, ..base },
    ]
  }

  #[test]
  fn fused_parallel_kernel_matches_reference_bit_for_bit() {
    assert_fused_matches_reference(&configs());
  }

  #[test]
  fn zero_learning_rate_leaves_parameters_unchanged() {
    let configs: Vec<Asgd> = configs().into_iter().map(|c| Asgd { lr: 0.0, ..c }).collect();
    assert_zero_lr_is_identity(&configs);
  }

  #[test]
  fn first_steps_derived_by_hand() {
    // t = 1: η = γ (in f32), μ = 1, so p ← p(1 − λγ) − γg and ā = p. With γ = 0.5, λ = 0.25,
    // α = 1, t₀ = 0: afterwards η = 0.5/(1 + 0.125) = 4/9 and μ = 1/max(1, 1 − 0) = 1.
    let config = Asgd { lr: 0.5, lambd: 0.25, alpha: 1.0, t0: 0.0, ..Asgd::default() };
    let mut state = ParamState::default();
    let mut param = vec![1.0f64, -2.0, 0.5];
    step_once(config, &mut state, &mut param, &[2.0, -4.0, 0.0], true);
    let expected = [1.0 * 0.875 - 0.5 * 2.0, -2.0 * 0.875 + 0.5 * 4.0, 0.5 * 0.875];
    assert_eq!(param, expected);
    assert_eq!(buffers_f64(&state)[0], expected);
    assert_eq!(state.scalars, [f64::from((0.5f64 / 1.125) as f32), 1.0]);
    // t = 2 with g = 0: p ← p(1 − λη), and μ = 1 still copies p into ā; then η = 0.5/1.25 = 0.4
    // and μ = 1/max(1, 2 − 0) = 1/2.
    let eta = f64::from((0.5f64 / 1.125) as f32);
    step_once(config, &mut state, &mut param, &[0.0; 3], true);
    let expected: Vec<f64> = expected.iter().map(|p| p * (1.0 - 0.25 * eta)).collect();
    assert_eq!(param, expected);
    assert_eq!(buffers_f64(&state)[0], expected);
    assert_eq!(state.scalars, [f64::from(0.4f32), 0.5]);
    // t = 3 with g = 0: ā ← ā + (p − ā)/2, the mean of the iterates of steps 2 and 3.
    let before = param.clone();
    step_once(config, &mut state, &mut param, &[0.0; 3], true);
    for ((a, p), q) in buffers_f64(&state)[0].iter().zip(&param).zip(&before) {
      assert!((a - (p + q) / 2.0).abs() <= 1e-16, "{a} vs the mean of {p} and {q}");
    }
  }

  #[test]
  fn eta_and_mu_are_float32_state_per_parameter() {
    let config = Asgd { t0: 3.0, ..Asgd::default() };
    let (_, state) = trajectory::<Asgd, f64>(config, 5, STEPS, true);
    let t = STEPS as f64;
    assert_eq!(state.scalars[0], f64::from((1e-2 / (1.0 + 1e-4 * 1e-2 * t).powf(0.75)) as f32));
    assert_eq!(state.scalars[1], f64::from((1.0 / (t - 3.0)) as f32));
    // A parameter that joins later starts from η = γ and μ = 1: its first update is
    // p(1 − λγ) − γg, whatever step the others are at.
    let mut late = ParamState::default();
    let mut param = values::<f32>(5, 1);
    let grad = values::<f32>(5, 2);
    step_once(config, &mut late, &mut param, &grad, true);
    let eta = f64::from(1e-2f32);
    let decay = (1.0 - 1e-4 * eta) as f32;
    let expected: Vec<f32> =
      values::<f32>(5, 1).iter().zip(&grad).map(|(p, g)| (-eta as f32).mul_add(*g, p * decay)).collect();
    assert!(same_bits(&param, &expected));
  }

  #[test]
  fn copy_around_cache_matches_reference_bit_for_bit() {
    // Before averaging starts, in a step that streams from memory, ā is stored around the caches
    // chunk by chunk ([`copy_around_cache`]): across chunk ends and unaligned starts, with and
    // without the L2 penalty, it must give the reference's bits.
    for config in [Asgd::default(), Asgd { weight_decay: 0.1, lambd: 0.5, maximize: true, ..Asgd::default() }] {
      let mut coeffs = config.coeffs(1);
      config.advance(&mut coeffs, &mut ParamState::default());
      assert_eq!(coeffs.mu, 1.0);
      for (start, len) in [(0, 5), (1, CHUNK - 1), (3, CHUNK), (5, CHUNK + 17), (0, 3 * CHUNK + 9)] {
        let grad = values::<f32>(start + len, 2);
        let mut fast = values::<f32>(start + len, 1);
        let mut ax = values::<f32>(start + len, 3);
        let mut slow = fast.clone();
        let mut slow_ax = ax.clone();
        nontemporal::with(true, || {
          Asgd::update(&coeffs, &mut fast[start..], &grad[start..], [&mut ax[start..], &mut [], &mut []])
        });
        Asgd::update_reference(&coeffs, &mut slow[start..], &grad[start..], [&mut slow_ax[start..], &mut [], &mut []]);
        assert!(same_bits(&fast, &slow) && same_bits(&ax, &slow_ax), "{config:?} from {start}, {len} elements");
      }
      // A NaN or ±∞ gradient element is reported wherever it falls: first, in the middle, last.
      for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        for at in [0, CHUNK + 7, 3 * CHUNK + 8] {
          let mut grad = values::<f32>(3 * CHUNK + 9, 2);
          let (mut param, mut ax) = (values::<f32>(3 * CHUNK + 9, 1), values::<f32>(3 * CHUNK + 9, 3));
          let clean = nontemporal::with(true, || Asgd::update(&coeffs, &mut param, &grad, [&mut ax, &mut [], &mut []]));
          grad[at] = bad;
          let found = nontemporal::with(true, || Asgd::update(&coeffs, &mut param, &grad, [&mut ax, &mut [], &mut []]));
          assert!(!clean && found, "{bad} at {at}");
        }
      }
    }
  }

  #[test]
  fn the_average_is_only_written_until_averaging_starts() {
    // Until averaging starts ā is a copy of p, which a step streaming from memory stores around
    // the caches: the engine must not ask for its lines ahead. From then on the step reads ā too.
    let config = Asgd { t0: 1.0, ..Asgd::default() };
    let (mut state, mut param, grad) = (ParamState::default(), values::<f32>(8, 1), values::<f32>(8, 2));
    let mut seen = Vec::new();
    for _ in 0..5 {
      // The scalars the next step will take, from a copy of the state as the engine makes them.
      let mut next = state.clone();
      next.step += 1;
      let mut coeffs = config.coeffs(next.step);
      config.advance(&mut coeffs, &mut next);
      assert_eq!(Asgd::written_only(&coeffs), u8::from(coeffs.mu == 1.0), "step {}", next.step);
      seen.push(Asgd::written_only(&coeffs));
      step_once(config, &mut state, &mut param, &grad, true);
    }
    assert_eq!((seen[0], seen[4]), (1, 0), "{seen:?}");
  }

  #[test]
  fn bad_options_are_rejected_with_field_and_value() {
    assert_rejects::<Asgd>(&[
      ("lr", -1.0, "invalid lr: -1 (expected a finite lr >= 0)"),
      ("lambd", -1e-4, "invalid lambd: -0.0001 (expected a finite lambd >= 0)"),
      ("alpha", f64::INFINITY, "invalid alpha: Infinity (expected a finite alpha >= 0)"),
      ("t0", f64::NAN, "invalid t0: NaN (expected a finite t0)"),
      ("weight_decay", -0.5, "invalid weight_decay: -0.5 (expected a finite weight_decay >= 0)"),
      ("maximize", 0.5, "invalid maximize: 0.5 (expected true or false)"),
    ]);
  }
}
