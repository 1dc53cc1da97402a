//! Weight averaging: an exponential moving average (EMA) or the running mean of stochastic weight
//! averaging (SWA) of a list of parameters, as PyTorch's `torch.optim.swa_utils.AveragedModel`
//! keeps them.
//!
//! SWA is Izmailov, Podoprikhin, Garipov, Vetrov & Wilson, "Averaging Weights Leads to Wider
//! Optima and Better Generalization" (UAI 2018); the EMA is Polyak averaging with exponential
//! weights. With `n` the number of updates averaged so far (PyTorch's `n_averaged`, 0 at first),
//! each update of an average a by the parameter p is
//!
//! ```text
//! a ← p                          when n = 0 (the first update copies, whatever a held)
//! a ← lerp(a, p, 1 − decay)      EMA (`get_ema_multi_avg_fn(decay)`): decay·a + (1 − decay)·p
//! a ← a + (p − a)/(n + 1)        SWA (`AveragedModel`'s default on the CPU, `get_swa_avg_fn`)
//! ```
//!
//! then n ← n + 1. Conventions, all PyTorch's on the CPU: `lerp` is its vectorised kernel's (from
//! the nearer end: `fma(w, p − a, a)` for |w| < ½, else `fma(w − 1, p − a, p)`), with the weight
//! 1 − decay computed in `f64` and rounded to the element type; SWA's mean is three roundings, a
//! subtraction, a true division by n + 1 in the element type, and an addition, with no fused
//! multiply-add (PyTorch's foreach `lerp` by 1/(n + 1), used on other devices, rounds differently).
//! An average starts as a copy of its parameter (`AveragedModel` deep-copies the model).
//!
//! Every update is one pass over each average and its parameter, all tensors cut into pieces
//! together and run on the step pool ([`crate::engine::run`]); every element sees the same
//! operations wherever the cuts fall, so the bits do not depend on the thread count.

use crate::config::{ConfigError, Rule};
use crate::engine::disjoint::DisjointMut;
use crate::engine::run::{run, Job, MAX_BUFFERS};
use crate::engine::simd::multiversion;
use crate::engine::threads;
use crate::float::{Dtype, Float};
use crate::optimizers::schedule_free::switch as lerp_all;
use crate::optimizers::{Buffer, Optimizer};

/// How the average moves toward the parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Strategy {
  /// a ← decay·a + (1 − decay)·p.
  Ema { decay: f64 },
  /// The running mean of every parameter value averaged.
  Swa,
}

impl Strategy {
  /// An EMA with `decay` in [0, 1] (PyTorch's default, 0.999, is the facade's).
  pub fn ema(decay: f64) -> Result<Self, ConfigError> {
    if !Rule::UnitClosed.holds(decay) {
      return Err(ConfigError::OutOfRange { field: "decay", value: decay, rule: Rule::UnitClosed, optional: false });
    }
    Ok(Strategy::Ema { decay })
  }
}

/// One parameter's average, in the parameter's dtype.
#[derive(Clone, Debug, PartialEq)]
pub enum Average {
  F32(Vec<f32>),
  F64(Vec<f64>),
}

impl Average {
  pub fn dtype(&self) -> Dtype {
    match self {
      Average::F32(_) => Dtype::Float32,
      Average::F64(_) => Dtype::Float64,
    }
  }

  pub fn len(&self) -> usize {
    match self {
      Average::F32(v) => v.len(),
      Average::F64(v) => v.len(),
    }
  }

  pub fn is_empty(&self) -> bool {
    self.len() == 0
  }
}

/// Moves every average of `jobs` (each job's `param`) toward its parameter (the job's `grad`, read
/// only) as update number `n_averaged + 1` of `strategy` does. Each job's `coeffs` and `buffers`
/// are set here and unused. The caller then counts the update (n ← n + 1).
pub fn update<T: Float>(strategy: Strategy, n_averaged: u64, jobs: &mut [Job<'_, T, f64>]) {
  let coeff = match (n_averaged, strategy) {
    (0, _) => 0.0,
    (_, Strategy::Ema { decay }) => 1.0 - decay,
    (n, Strategy::Swa) => n as f64 + 1.0,
  };
  for job in jobs.iter_mut() {
    job.coeffs = coeff;
  }
  match (n_averaged, strategy) {
    (0, _) => assign(jobs),
    (_, Strategy::Ema { .. }) => lerp_all(jobs),
    (_, Strategy::Swa) => {
      run::<SwaMean, T>(jobs);
    }
  }
}

/// [`update`] of one average, written plainly, to test the engine's pieces against.
pub fn update_reference<T: Float>(strategy: Strategy, n_averaged: u64, average: &mut [T], param: &[T]) {
  for (a, &p) in average.iter_mut().zip(param) {
    *a = match (n_averaged, strategy) {
      (0, _) => p,
      (_, Strategy::Ema { decay }) => {
        let w = T::from_f64(1.0 - decay);
        if w.abs() < T::from_f64(0.5) {
          w.mul_add(p - *a, *a)
        } else {
          (w - T::ONE).mul_add(p - *a, p)
        }
      }
      (n, Strategy::Swa) => *a + (p - *a) / T::from_f64(n as f64 + 1.0),
    };
  }
}

/// Copies each job's `grad` into its `param`, on the step pool: an average into a parameter
/// (`copyTo`), or a parameter into its average (an update's first).
pub fn assign<T: Float>(jobs: &mut [Job<'_, T, f64>]) {
  run::<Assign, T>(jobs);
}

/// Exchanges the contents of each pair's slices (of equal lengths), on the step pool: the
/// parameters take their averages and the averages the parameters, with nothing allocated.
pub fn swap<T: Float>(pairs: &mut [(&mut [T], &mut [T])]) {
  /// Elements one piece exchanges.
  const PIECE: usize = 1 << 14;
  let mut pieces = Vec::new();
  for (a, b) in pairs.iter_mut() {
    assert_eq!(a.len(), b.len(), "swap: slices of different lengths");
    let (a, b) = (DisjointMut::of(a), DisjointMut::of(b));
    pieces.extend((0..a.len()).step_by(PIECE).map(|from| (a, b, from..(from + PIECE).min(a.len()))));
  }
  let pieces = &pieces;
  threads::for_each_piece(pieces.len(), &|i| {
    let (a, b, ref range) = pieces[i];
    // SAFETY: the pieces are disjoint ranges of slices borrowed mutably (and exclusively, being
    // `&mut`) for this whole call, which returns only once every piece has run.
    unsafe { a.part(range.clone()).swap_with_slice(b.part(range.clone())) };
  });
}

crate::options! {
  /// SWA's running mean, run by the engine as an "optimizer" whose gradient is the parameter and
  /// whose parameter is the average; not in the registry (use [`update`]).
  pub struct SwaMean {}
}

impl Optimizer for SwaMean {
  const NAME: &'static str = "SwaMean";
  const SUMMARY: &'static str = "a ← a + (p − a)/(n + 1): stochastic weight averaging's running mean";
  const BUFFERS: &'static [Buffer] = &[];
  type Coeffs = f64;

  fn coeffs(&self, _step: u64) -> f64 {
    1.0
  }

  /// Its second array is a parameter, not a gradient: it reports nothing.
  fn update<T: Float>(count: &f64, average: &mut [T], param: &[T], _: [&mut [T]; MAX_BUFFERS]) -> bool {
    mean_best::<T>(&T::from_f64(*count), average, param);
    false
  }

  fn update_reference<T: Float>(count: &f64, average: &mut [T], param: &[T], _: [&mut [T]; MAX_BUFFERS]) {
    for (a, &p) in average.iter_mut().zip(param) {
      *a = *a + (p - *a) / T::from_f64(*count);
    }
  }
}

multiversion!(fn mean_best<T: Float>(count: &T, average: &mut [T], param: &[T]) => mean_kernel);

#[inline(always)]
fn mean_kernel<T: Float>(count: &T, average: &mut [T], param: &[T]) {
  let (count, n) = (*count, average.len());
  let param = &param[..n];
  for i in 0..n {
    let a = average[i];
    average[i] = a + (param[i] - a) / count;
  }
}

crate::options! {
  /// A copy, run by the engine as an "optimizer": the parameter takes the gradient's values; not
  /// in the registry (use [`assign`]).
  pub struct Assign {}
}

impl Optimizer for Assign {
  const NAME: &'static str = "Assign";
  const SUMMARY: &'static str = "x ← y: a copy on the step pool";
  const BUFFERS: &'static [Buffer] = &[];
  type Coeffs = f64;

  fn coeffs(&self, _step: u64) -> f64 {
    0.0
  }

  /// Its second array is a copy's source, not a gradient: it reports nothing.
  fn update<T: Float>(_: &f64, target: &mut [T], source: &[T], _: [&mut [T]; MAX_BUFFERS]) -> bool {
    target.copy_from_slice(source);
    false
  }

  fn update_reference<T: Float>(_: &f64, target: &mut [T], source: &[T], _: [&mut [T]; MAX_BUFFERS]) {
    for (t, &s) in target.iter_mut().zip(source) {
      *t = s;
    }
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::testing::{same_bits, values, LENGTHS};

  fn strategies() -> Vec<Strategy> {
    vec![Strategy::ema(0.999).unwrap(), Strategy::ema(0.3).unwrap(), Strategy::ema(0.0).unwrap(), Strategy::Swa]
  }

  /// Several updates of tensors of every length in `LENGTHS` at once, through the engine, against
  /// the plain reference, bit for bit, for both dtypes.
  fn engine_matches_reference<T: Float>() {
    for strategy in strategies() {
      let params: Vec<Vec<Vec<T>>> =
        (0..4u64).map(|k| LENGTHS.iter().map(|&len| values::<T>(len, 10 * k + len as u64)).collect()).collect();
      let mut fast: Vec<Vec<T>> = LENGTHS.iter().map(|&len| values::<T>(len, 999)).collect();
      let mut slow = fast.clone();
      for (n, step) in params.iter().enumerate() {
        let mut jobs: Vec<Job<'_, T, f64>> = fast
          .iter_mut()
          .zip(step)
          .map(|(a, p)| Job::flat(0.0, &mut a[..], &p[..], [&mut [], &mut [], &mut []]))
          .collect();
        update(strategy, n as u64, &mut jobs);
        for (a, p) in slow.iter_mut().zip(step) {
          update_reference(strategy, n as u64, a, p);
        }
        for (len, (f, s)) in LENGTHS.iter().zip(fast.iter().zip(&slow)) {
          assert!(same_bits(f, s), "{strategy:?}, update {n}, length {len}");
        }
      }
    }
  }

  #[test]
  fn engine_matches_reference_f32() {
    engine_matches_reference::<f32>();
  }

  #[test]
  fn engine_matches_reference_f64() {
    engine_matches_reference::<f64>();
  }

  #[test]
  fn first_update_copies_then_averages_by_hand() {
    // SWA over p = 1, 4, 7: the first update copies 1 (whatever the average held), the second
    // gives 1 + (4 − 1)/2 = 2.5, the third 2.5 + (7 − 2.5)/3 = 4, the mean of the three.
    let mut average = [100.0f64];
    for (n, p) in [1.0, 4.0, 7.0].into_iter().enumerate() {
      let param = [p];
      update(Strategy::Swa, n as u64, &mut [Job::flat(0.0, &mut average[..], &param[..], [&mut [], &mut [], &mut []])]);
    }
    assert_eq!(average, [4.0]);
    // EMA with decay 0.75 (weight ¼, so fma(¼, p − a, a)): a = 8 after the copy, then
    // 8 + ¼·(0 − 8) = 6, then 6 + ¼·(2 − 6) = 5.
    let mut average = [0.0f32];
    for (n, p) in [8.0, 0.0, 2.0].into_iter().enumerate() {
      let param = [p];
      let ema = Strategy::ema(0.75).unwrap();
      update(ema, n as u64, &mut [Job::flat(0.0, &mut average[..], &param[..], [&mut [], &mut [], &mut []])]);
    }
    assert_eq!(average, [5.0]);
  }

  #[test]
  fn swap_exchanges_every_element() {
    for &len in &LENGTHS {
      let (a0, b0) = (values::<f32>(len, 1), values::<f32>(len, 2));
      let (mut a, mut b) = (a0.clone(), b0.clone());
      swap(&mut [(&mut a[..], &mut b[..])]);
      assert!(same_bits(&a, &b0) && same_bits(&b, &a0), "length {len}");
    }
  }

  #[test]
  fn decay_outside_the_unit_interval_is_refused() {
    for decay in [-0.1, 1.5, f64::NAN, f64::INFINITY] {
      let error = Strategy::ema(decay).unwrap_err();
      assert!(error.to_string().contains("decay"), "{error}");
    }
    assert_eq!(Strategy::ema(1.0), Ok(Strategy::Ema { decay: 1.0 }));
  }
}
