//! SparseAdam: Adam on the rows a sparse gradient names, and nothing else.
//!
//! Adam: Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015. The masked
//! ("lazy") variant for row-sparse gradients is PyTorch's `torch.optim.SparseAdam`, meant for
//! embedding tables (`nn.Embedding(sparse=True)`), whose gradient names the rows a batch used.
//!
//! The gradient of a parameter of shape `[rows, ...]` names some rows and gives their values;
//! it is coalesced first, as PyTorch's `coalesce()` does (rows sorted, the values of a row named
//! more than once summed in the order given). With learning rate γ, betas β₁ β₂ and the
//! parameter's step t (1 on its first update; it counts every step the parameter had a
//! gradient, whichever rows that named), each element of a named row, with gradient g, first
//! moment m and second moment v (zero before the first step), is updated as
//!
//! ```text
//! g ← −g                                    if maximize
//! m ← m + (1 − β₁)·(g − m)
//! v ← v + (1 − β₂)·(g² − v)
//! p ← p − γ·√(1 − β₂ᵗ)/(1 − β₁ᵗ) · m / (√v + ε)
//! ```
//!
//! and elements of rows not named keep their parameter and moments, bit for bit. A gradient that
//! names no row still counts a step, as in PyTorch.
//!
//! Conventions, all PyTorch's (`torch/optim/_functional.py`, `sparse_adam`): ε is added to the
//! root of the uncorrected second moment, the bias corrections being folded into the step size
//! `γ·√(1 − β₂ᵗ)/(1 − β₁ᵗ)`, computed once per step in `f64` (as Python does, left to right) and
//! rounded to the element type, as are 1 − β₁, 1 − β₂ and ε. PyTorch computes the update with
//! dense operations on the gathered rows, each rounded on its own, and this kernel rounds the
//! same way, with no fused multiply-add: `dm = (g − m)·(1 − β₁)`, `dv = (g·g − v)·(1 − β₂)`,
//! `m ← m + dm`, `v ← v + dv`, then `p ← p + (−step_size)·((dm + m) / (√(dv + v) + ε))`.

use crate::engine::run::MAX_BUFFERS;
use crate::engine::simd::multiversion;
use crate::float::{Float, NonFinite};
use crate::optimizers::{Buffer, Optimizer};
use crate::powers::power;

crate::options! {
  /// SparseAdam's options (PyTorch's `torch.optim.SparseAdam`).
  pub struct SparseAdam {
    /// Learning rate γ (PyTorch refuses 0 when the optimizer is made, though not later; 0 here leaves the parameters as they are).
    lr: f64 = 1e-3, NonNegative;
    /// Decay rates (β₁, β₂) of the first- and second-moment averages.
    betas: (f64, f64) = (0.9, 0.999), UnitHalfOpen;
    /// ε, added to the root of the second moment; PyTorch requires it > 0.
    eps: f64 = 1e-8, Positive;
    /// Maximize the objective: step along the gradient instead of against it.
    maximize: bool = false;
  }
}

/// The per-step scalars of a SparseAdam update, in `f64`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SparseAdamCoeffs {
  /// 1 − β₁
  pub avg_weight: f64,
  /// 1 − β₂
  pub sq_weight: f64,
  pub eps: f64,
  /// −γ·√(1 − β₂ᵗ)/(1 − β₁ᵗ)
  pub neg_step_size: f64,
  pub maximize: bool,
}

impl Optimizer for SparseAdam {
  const NAME: &'static str = "SparseAdam";
  const SUMMARY: &'static str =
    "Adam (Kingma & Ba, 2015) on the rows a row-sparse gradient names (an embedding's), as PyTorch's masked variant";
  const BUFFERS: &'static [Buffer] = &[Buffer::like_param("exp_avg"), Buffer::like_param("exp_avg_sq")];
  const SPARSE: bool = true;
  type Coeffs = SparseAdamCoeffs;

  fn coeffs(&self, step: u64) -> SparseAdamCoeffs {
    let (beta1, beta2) = self.betas;
    let bias_correction1 = 1.0 - power(beta1, step);
    let bias_correction2 = 1.0 - power(beta2, step);
    SparseAdamCoeffs {
      avg_weight: 1.0 - beta1,
      sq_weight: 1.0 - beta2,
      eps: self.eps,
      neg_step_size: -(self.lr * bias_correction2.sqrt() / bias_correction1),
      maximize: self.maximize,
    }
  }

  /// The update of the elements of one row (or several whole rows), `grad` their coalesced
  /// gradient.
  fn update<T: Float>(c: &SparseAdamCoeffs, param: &mut [T], grad: &[T], buffers: [&mut [T]; MAX_BUFFERS]) -> bool {
    let [exp_avg, exp_avg_sq, _] = buffers;
    let mut non_finite = false;
    fused_best::<T>(&Scalars::new(c), param, grad, exp_avg, exp_avg_sq, &mut non_finite);
    non_finite
  }

  fn update_reference<T: Float>(c: &SparseAdamCoeffs, param: &mut [T], grad: &[T], buffers: [&mut [T]; MAX_BUFFERS]) {
    let [exp_avg, exp_avg_sq, _] = buffers;
    let cast = T::from_f64;
    for i in 0..param.len() {
      let g = if c.maximize { -grad[i] } else { grad[i] };
      let (m, v) = (exp_avg[i], exp_avg_sq[i]);
      let exp_avg_update = (g - m) * cast(c.avg_weight);
      let exp_avg_sq_update = (g * g - v) * cast(c.sq_weight);
      exp_avg[i] = m + exp_avg_update;
      exp_avg_sq[i] = v + exp_avg_sq_update;
      let numer = exp_avg_update + m;
      let denom = (exp_avg_sq_update + v).sqrt() + cast(c.eps);
      param[i] = param[i] + cast(c.neg_step_size) * (numer / denom);
    }
  }
}

/// [`SparseAdamCoeffs`] rounded to the element type.
struct Scalars<T> {
  sign: T,
  avg_weight: T,
  sq_weight: T,
  eps: T,
  neg_step_size: T,
}

impl<T: Float> Scalars<T> {
  fn new(c: &SparseAdamCoeffs) -> Self {
    Scalars {
      sign: if c.maximize { -T::ONE } else { T::ONE },
      avg_weight: T::from_f64(c.avg_weight),
      sq_weight: T::from_f64(c.sq_weight),
      eps: T::from_f64(c.eps),
      neg_step_size: T::from_f64(c.neg_step_size),
    }
  }
}

multiversion!(fn fused_best<T: Float>(k: &Scalars<T>, param: &mut [T], grad: &[T], exp_avg: &mut [T], exp_avg_sq: &mut [T], non_finite: &mut bool) => fused);

/// Reads p, g, m, v and writes p, m, v, and sets `non_finite` if an element of g was NaN or
/// infinite; branch-free so that it vectorises (`g·sign` is exact).
#[inline(always)]
fn fused<T: Float>(
  k: &Scalars<T>,
  param: &mut [T],
  grad: &[T],
  exp_avg: &mut [T],
  exp_avg_sq: &mut [T],
  non_finite: &mut bool,
) {
  let n = param.len();
  let grad = &grad[..n];
  let exp_avg = &mut exp_avg[..n];
  let exp_avg_sq = &mut exp_avg_sq[..n];
  let mut check = NonFinite::new();
  for i in 0..n {
    check.see(grad[i]);
    let g = grad[i] * k.sign;
    let (m, v) = (exp_avg[i], exp_avg_sq[i]);
    let dm = (g - m) * k.avg_weight;
    let dv = (g * g - v) * k.sq_weight;
    exp_avg[i] = m + dm;
    exp_avg_sq[i] = v + dv;
    let denom = (dv + v).sqrt() + k.eps;
    param[i] = param[i] + k.neg_step_size * ((dm + m) / denom);
  }
  *non_finite |= check.found();
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::engine::run::{run_sparse, SparseJob, PARALLEL_MIN_ELEMENTS};
  use crate::engine::state::ParamState;
  use crate::engine::threads::{num_threads, set_num_threads};
  use crate::testing::{assert_fused_matches_reference, assert_rejects, same_bits, values};

  fn configs() -> Vec<SparseAdam> {
    let base = SparseAdam::default();
    vec![
      base,
      SparseAdam { lr: 1e-2, betas: (0.5, 0.9), ..base },
      SparseAdam { maximize: true, eps: 1e-3, ..base },
      SparseAdam { betas: (0.0, 0.0), ..base },
    ]
  }

  #[test]
  fn fused_kernel_matches_reference_bit_for_bit() {
    assert_fused_matches_reference(&configs());
  }

  /// Steps `param` (of rows of `row_len`) with the sparse gradient `rows`/`values` (coalesced),
  /// through the engine or row by row through the reference.
  fn sparse_step<T: crate::engine::state::Element>(
    config: SparseAdam,
    state: &mut ParamState,
    param: &mut [T],
    row_len: usize,
    rows: &[u32],
    values: &[T],
    engine: bool,
  ) -> bool {
    state.step += 1;
    let coeffs = config.coeffs(state.step);
    let buffers = state.buffers_mut::<T>(&[param.len(); MAX_BUFFERS], 2);
    if engine {
      return run_sparse::<SparseAdam, T>(&mut [SparseJob { coeffs, param, row_len, rows, values, buffers }]);
    }
    let [m, v, _] = buffers;
    for (k, &row) in rows.iter().enumerate() {
      let at = row as usize * row_len..(row as usize + 1) * row_len;
      let buffers = [&mut m[at.clone()], &mut v[at.clone()], &mut [][..]];
      SparseAdam::update_reference(&coeffs, &mut param[at], &values[k * row_len..(k + 1) * row_len], buffers);
    }
    false
  }

  #[test]
  fn rows_not_named_keep_their_bits_and_named_rows_match_the_reference_on_any_thread_count() {
    // A [6000, 9] table, rows every third one, more than the parallel threshold of values in all.
    let (table_rows, row_len) = (6000, 9);
    let rows: Vec<u32> = (0..table_rows as u32).filter(|r| r % 3 == 1).collect();
    assert!(rows.len() * row_len >= PARALLEL_MIN_ELEMENTS);
    let start = values::<f32>(table_rows * row_len, 1);
    let config = SparseAdam { lr: 1e-2, ..SparseAdam::default() };
    let threads = num_threads();
    let run = |engine: bool, threads: usize| {
      set_num_threads(threads).expect("a thread count");
      let (mut param, mut state) = (start.clone(), ParamState::default());
      for step in 0..5 {
        let grad = values::<f32>(rows.len() * row_len, step + 2);
        sparse_step(config, &mut state, &mut param, row_len, &rows, &grad, engine);
      }
      (param, state)
    };
    let (reference, reference_state) = run(false, 1);
    for threads in [1, 2, 3] {
      let (param, state) = run(true, threads);
      assert!(same_bits(&param, &reference), "{threads} threads");
      assert_eq!(state, reference_state, "{threads} threads");
    }
    set_num_threads(threads).expect("a thread count");
    for row in (0..table_rows).filter(|r| r % 3 != 1) {
      let at = row * row_len..(row + 1) * row_len;
      assert!(same_bits(&reference[at.clone()], &start[at]), "row {row} moved");
    }
    let crate::engine::state::Buffers::F32(buffers) = &reference_state.buffers else { panic!("f32 state") };
    assert!(buffers.iter().all(|b| b[..row_len].iter().all(|&x| x == 0.0)), "row 0's moments stay zero");
  }

  #[test]
  fn first_step_moves_each_named_element_by_about_lr_against_its_gradient_sign() {
    // t = 1: m = (1 − β₁)g and v = (1 − β₂)g², and the step size γ·√(1 − β₂)/(1 − β₁) makes the
    // step γ·g/(|g| + ε/√(1 − β₂)): γ·sign(g) up to ε/(|g|·√(1 − β₂)), and nothing where g = 0.
    let config = SparseAdam::default();
    let mut param = vec![1.0f64, -2.0, 0.5, 3.0, 7.0, 8.0];
    let mut state = ParamState::default();
    // A [3, 2] table; row 1 is not named.
    let non_finite = sparse_step(config, &mut state, &mut param, 2, &[0, 2], &[0.25, -4.0, 0.0, 1e-3], true);
    assert!(!non_finite);
    let e = 1e-8 / 0.001f64.sqrt();
    let expected =
      [1.0 - 1e-3 * 0.25 / (0.25 + e), -2.0 + 1e-3 * 4.0 / (4.0 + e), 0.5, 3.0, 7.0, 8.0 - 1e-3 * 1e-3 / (1e-3 + e)];
    for (got, want) in param.iter().zip(expected) {
      assert!((got - want).abs() <= 1e-15, "{got} vs {want}");
    }
  }

  #[test]
  fn follows_the_equations_in_f64_on_the_rows_named() {
    let (lr, b1, b2, eps) = (1e-2, 0.8, 0.99, 1e-6);
    let config = SparseAdam { lr, betas: (b1, b2), eps, maximize: false };
    let mut param = values::<f64>(5, 3);
    let mut expected = param.clone();
    let (mut m, mut v) = (vec![0.0; 5], vec![0.0; 5]);
    let mut state = ParamState::default();
    for t in 1..=30u64 {
      // Flat: rows of one element; rows 1 and 3 on odd steps, 0, 3 and 4 on even ones.
      let rows: &[u32] = if t % 2 == 1 { &[1, 3] } else { &[0, 3, 4] };
      let grad = values::<f64>(rows.len(), 100 + t);
      sparse_step(config, &mut state, &mut param, 1, rows, &grad, true);
      for (k, &row) in rows.iter().enumerate() {
        let (i, g) = (row as usize, grad[k]);
        m[i] = b1 * m[i] + (1.0 - b1) * g;
        v[i] = b2 * v[i] + (1.0 - b2) * g * g;
        let step_size = lr * (1.0 - b2.powi(t as i32)).sqrt() / (1.0 - b1.powi(t as i32));
        expected[i] -= step_size * m[i] / (v[i].sqrt() + eps);
      }
    }
    assert_eq!(state.step, 30);
    for (got, want) in param.iter().zip(&expected) {
      assert!((got - want).abs() <= 1e-12 * want.abs().max(1.0), "{got} vs {want}");
    }
  }

  #[test]
  fn reports_non_finite_values_and_steps_with_no_rows() {
    let config = SparseAdam::default();
    let mut param = vec![1.0f32; 6];
    let mut state = ParamState::default();
    assert!(!sparse_step(config, &mut state, &mut param, 3, &[], &[], true));
    assert_eq!((state.step, &param[..]), (1, &[1.0f32; 6][..]));
    assert!(sparse_step(config, &mut state, &mut param, 3, &[1], &[0.5, f32::NAN, 1.0], true));
    assert!(param[..3].iter().all(|&p| p == 1.0) && param[4].is_nan());
  }

  #[test]
  #[should_panic(expected = "rows strictly increasing")]
  fn rows_named_twice_are_refused() {
    let mut state = ParamState::default();
    sparse_step(SparseAdam::default(), &mut state, &mut [0.0f32; 4], 2, &[1, 1], &[0.0; 4], true);
  }

  #[test]
  #[should_panic(expected = "rows within the parameter")]
  fn rows_past_the_parameter_are_refused() {
    let mut state = ParamState::default();
    sparse_step(SparseAdam::default(), &mut state, &mut [0.0f32; 4], 2, &[2], &[0.0; 2], true);
  }

  #[test]
  fn bad_options_are_rejected_with_field_and_value() {
    assert_rejects::<SparseAdam>(&[
      ("lr", -1.0, "invalid lr: -1 (expected a finite lr >= 0)"),
      ("betas[0]", 1.0, "invalid betas[0]: 1 (expected 0 <= betas[0] < 1)"),
      ("betas[1]", -0.5, "invalid betas[1]: -0.5 (expected 0 <= betas[1] < 1)"),
      ("eps", 0.0, "invalid eps: 0 (expected a finite eps > 0)"),
      ("maximize", 0.5, "invalid maximize: 0.5 (expected true or false)"),
    ]);
  }
}
