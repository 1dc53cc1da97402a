//! Optimizers with 8-bit state: bitsandbytes' `Adam8bit`, `AdamW8bit` and `Lion8bit`.
//!
//! Each moment of a parameter of at least `min_8bit_size` elements is kept as one byte per
//! element and one `f32` per block of 256 ([`crate::quantize`]); smaller parameters keep `f32`
//! moments, as bitsandbytes does (its `min_8bit_size`, 4096 by default). A step of an 8-bit
//! tensor is one pass per block: read the codes and absmax, dequantize, update the parameter
//! and the moments in `f32`, take the block's new absmax, write the new codes. bitsandbytes'
//! CPU backend makes three passes over the whole tensor (dequantize, update, quantize); the
//! operations on each element are the same, so are the bits.
//!
//! A step cuts every tensor into units of [`UNIT_BLOCKS`] blocks and runs all units of all
//! tensors on the step pool ([`crate::engine::threads`]). A block is never split, and each
//! element sees the same operations wherever the cuts fall, so the results do not depend on
//! the thread count. Nothing is allocated during a step.
//!
//! The fused kernels are written for AVX-512 and for AVX2+FMA ([`simd`]), chosen at run time,
//! with the portable kernel (the compiler's vectorisation) as the fallback elsewhere and for a
//! partial last block; every level gives the same bits ([`EightBit::quantized_at`] runs each).

pub mod adam8bit;
pub mod lion8bit;
pub mod simd;

use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::engine::placed::Placed;
use crate::engine::run::{stays_cached, with_scratch, with_streaming, Streaming, PARALLEL_MIN_ELEMENTS};
use crate::engine::state::zeroed;
use crate::engine::threads;
use crate::finite::any_non_finite;
use crate::quantize::{blocks, BLOCK};

pub use adam8bit::Adam8bit;
pub use lion8bit::Lion8bit;
pub use simd::Level;

/// Blocks per unit of parallel work: 4096 elements.
pub const UNIT_BLOCKS: usize = 16;

/// Elements per unit of parallel work.
pub const UNIT_ELEMENTS: usize = UNIT_BLOCKS * BLOCK;

/// bitsandbytes' `min_8bit_size`: parameters with fewer elements keep `f32` state.
pub const MIN_8BIT_SIZE: usize = 4096;

/// A parameter group's options for one step, in `f64` as bitsandbytes' Python has them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hyper {
  pub lr: f64,
  pub beta1: f64,
  pub beta2: f64,
  pub eps: f64,
  pub weight_decay: f64,
}

/// One parameter's moments.
#[derive(Clone, Debug, PartialEq)]
pub enum Moments {
  /// Block-wise 8-bit: codes (one per element) and absmax (one per block) of each moment; the
  /// second moment's are empty for an optimizer of one moment (Lion).
  Quantized { state1: Placed<u8>, absmax1: Vec<f32>, state2: Placed<u8>, absmax2: Vec<f32> },
  /// `f32` moments, for parameters under `min_8bit_size`; `state2` empty for Lion.
  Full { state1: Placed<f32>, state2: Placed<f32> },
}

impl Moments {
  /// Zeroed moments for a parameter of `len` elements, as bitsandbytes' `init_state` makes them:
  /// codes 0 and absmax 0 (which dequantize to zero), or `f32` zeros; mapped by writes before the
  /// first step reads them ([`zeroed`]).
  pub fn new(len: usize, min_8bit_size: usize, moments: usize) -> Moments {
    let second = |n: usize| if moments == 2 { n } else { 0 };
    if len < min_8bit_size {
      Moments::Full { state1: Placed::zeroed(len, 0), state2: Placed::zeroed(second(len), 1) }
    } else {
      Moments::Quantized {
        state1: Placed::zeroed(len, 0),
        absmax1: zeroed(blocks(len)),
        state2: Placed::zeroed(second(len), 1),
        absmax2: zeroed(second(blocks(len))),
      }
    }
  }

  /// Whether these moments fit a parameter of `len` elements of an optimizer of `moments` moments.
  pub fn fits(&self, len: usize, moments: usize) -> bool {
    let second = |n: usize| if moments == 2 { n } else { 0 };
    match self {
      Moments::Quantized { state1, absmax1, state2, absmax2 } => {
        state1.len() == len
          && absmax1.len() == blocks(len)
          && state2.len() == second(len)
          && absmax2.len() == second(blocks(len))
      }
      Moments::Full { state1, state2 } => state1.len() == len && state2.len() == second(len),
    }
  }

  /// Bytes of state per element (codes and absmax, or `f32`s).
  pub fn bytes(&self) -> usize {
    match self {
      Moments::Quantized { state1, absmax1, state2, absmax2 } => {
        state1.len() + state2.len() + 4 * (absmax1.len() + absmax2.len())
      }
      Moments::Full { state1, state2 } => 4 * (state1.len() + state2.len()),
    }
  }
}

/// Slices of one unit of 8-bit moments: whole blocks, the second moment's empty for Lion.
pub struct Quantized<'a> {
  pub state1: &'a mut [u8],
  pub absmax1: &'a mut [f32],
  pub state2: &'a mut [u8],
  pub absmax2: &'a mut [f32],
}

/// An optimizer of 8-bit state (`'static`: its steps' prefetch trials are its own, by type).
pub trait EightBit: 'static {
  /// bitsandbytes' class name.
  const NAME: &'static str;
  /// Moments kept: 2 (Adam) or 1 (Lion).
  const MOMENTS: usize;
  /// The per-step scalars, rounded to `f32` once per step.
  type Coeffs: Copy + Send + Sync;
  /// The scalars of step `step` (counted from 1).
  fn coeffs(hyper: &Hyper, step: u64) -> Self::Coeffs;
  /// The fused kernel over whole blocks of one tensor (the last may be partial), with the
  /// instructions of `level` (one this CPU runs, [`Level::available`]); the same bits at every level.
  /// Returns whether a gradient element was NaN or ±∞ (the update went ahead regardless), checked
  /// as the loop reads the gradient.
  fn quantized_at(level: Level, c: &Self::Coeffs, param: &mut [f32], grad: &[f32], moments: Quantized<'_>) -> bool;
  /// [`Self::quantized_at`] at the level that runs fastest on this processor ([`Self::level`]).
  fn quantized(c: &Self::Coeffs, param: &mut [f32], grad: &[f32], moments: Quantized<'_>) -> bool {
    Self::quantized_at(Self::level(), c, param, grad, moments)
  }
  /// The level this optimizer's steps run at: [`fastest_level`], timed once per process.
  fn level() -> Level;
  /// bitsandbytes' order, plainly: dequantize everything, update, quantize every block.
  fn quantized_reference(c: &Self::Coeffs, param: &mut [f32], grad: &[f32], moments: Quantized<'_>);
  /// The update of a parameter with `f32` moments (bitsandbytes' 32-bit kernel); whether a
  /// gradient element was NaN or ±∞, as [`Self::quantized_at`].
  fn full(c: &Self::Coeffs, param: &mut [f32], grad: &[f32], state1: &mut [f32], state2: &mut [f32]) -> bool;
}

/// The instruction level at which `O`'s fused kernel runs fastest on this processor: every level
/// it runs ([`Level::available`]) timed in turns over 2048 elements (eight blocks, in cache), the
/// best of 8 rounds each ([`crate::engine::simd::fastest`]), with the scalars of step 10 of
/// `hyper`. All give the same bits. The widest is not always the fastest: which wins depends on
/// the core (how fast its gathers and its divide unit are), and the compiler's code for the
/// portable kernel has beaten an explicit block pass before (BENCHMARKS.md, "Design choices", and
/// docs/eightbit.md have the measurements).
pub fn fastest_level<O: EightBit>(hyper: &Hyper) -> Level {
  let levels = Level::available();
  if levels.len() == 1 {
    return levels[0];
  }
  const N: usize = 8 * BLOCK;
  let grad: Vec<f32> = (0..N).map(|i| ((i as f32) * 0.37).sin() * 1e-2).collect();
  let mut param: Vec<f32> = (0..N).map(|i| ((i as f32) * 0.11).cos()).collect();
  let mut moments = Moments::new(N, 0, O::MOMENTS);
  let coeffs = O::coeffs(hyper, 10);
  let fastest = crate::engine::simd::fastest(levels.len(), 8, 2, |i| {
    let Moments::Quantized { state1, absmax1, state2, absmax2 } = &mut moments else {
      unreachable!("a minimum size of 0 quantizes")
    };
    O::quantized_at(levels[i], &coeffs, &mut param, &grad, Quantized { state1, absmax1, state2, absmax2 });
  });
  levels[fastest]
}

/// One parameter's update in a step, its slices held as pointers so that units of it can be
/// handed to several threads.
pub struct Job<'a, C> {
  coeffs: C,
  len: usize,
  param: *mut f32,
  grad: *const f32,
  quantized: bool,
  state1: *mut u8,
  absmax1: *mut f32,
  state2: *mut u8,
  absmax2: *mut f32,
  full1: *mut f32,
  full2: *mut f32,
  second: bool,
  _borrows: PhantomData<(&'a mut [f32], &'a [f32], &'a mut Moments)>,
}

// SAFETY: a job's pointers come from slices borrowed for 'a; units of a job cover disjoint
// ranges of them, and `run` hands each unit to one thread only.
unsafe impl<C: Send> Send for Job<'_, C> {}
// SAFETY: as above: shared across the step's threads, each unit is used by one of them.
unsafe impl<C: Sync> Sync for Job<'_, C> {}

/// Why a parameter cannot be stepped with the moments given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobError {
  /// The gradient's length differs from the parameter's.
  GradLength { param: usize, grad: usize },
  /// The moments were made for another length or another optimizer.
  Moments,
}

impl<'a, C> Job<'a, C> {
  /// The update of `param` by `grad`, with `moments` made for it by `O` (see [`Moments::fits`]).
  pub fn new<O: EightBit<Coeffs = C>>(
    coeffs: C,
    param: &'a mut [f32],
    grad: &'a [f32],
    moments: &'a mut Moments,
  ) -> Result<Self, JobError> {
    let len = param.len();
    if grad.len() != len {
      return Err(JobError::GradLength { param: len, grad: grad.len() });
    }
    if !moments.fits(len, O::MOMENTS) {
      return Err(JobError::Moments);
    }
    let mut job = Job {
      coeffs,
      len,
      param: param.as_mut_ptr(),
      grad: grad.as_ptr(),
      quantized: false,
      state1: std::ptr::null_mut(),
      absmax1: std::ptr::null_mut(),
      state2: std::ptr::null_mut(),
      absmax2: std::ptr::null_mut(),
      full1: std::ptr::null_mut(),
      full2: std::ptr::null_mut(),
      second: O::MOMENTS == 2,
      _borrows: PhantomData,
    };
    match moments {
      Moments::Quantized { state1, absmax1, state2, absmax2 } => {
        job.quantized = true;
        job.state1 = state1.as_mut_ptr();
        job.absmax1 = absmax1.as_mut_ptr();
        job.state2 = state2.as_mut_ptr();
        job.absmax2 = absmax2.as_mut_ptr();
      }
      Moments::Full { state1, state2 } => {
        job.full1 = state1.as_mut_ptr();
        job.full2 = state2.as_mut_ptr();
      }
    }
    Ok(job)
  }

  /// Units of work in this job: runs of [`UNIT_BLOCKS`] blocks (of `f32` moments, as many
  /// elements), the last one possibly shorter.
  pub fn units(&self) -> usize {
    self.len.div_ceil(UNIT_ELEMENTS)
  }

  /// The elements of unit `unit`.
  pub fn unit_elements(&self, unit: usize) -> std::ops::Range<usize> {
    let start = unit * UNIT_ELEMENTS;
    start.min(self.len)..(start + UNIT_ELEMENTS).min(self.len)
  }

  /// Runs unit `unit` of this job.
  ///
  /// Returns whether the unit's gradient held NaN or ±∞ (the update went ahead regardless).
  ///
  /// # Safety
  /// The slices the job was made from are alive and not otherwise accessed, and no other thread
  /// runs the same unit of the same job at the same time.
  unsafe fn run_unit<O: EightBit<Coeffs = C>>(&self, unit: usize) -> bool {
    let std::ops::Range { start, end } = self.unit_elements(unit);
    let n = end - start;
    // SAFETY (all slices below): within the job's slices (start..end < len, its blocks within
    // blocks(len)), and disjoint from every other unit's (caller's contract).
    let param = unsafe { std::slice::from_raw_parts_mut(self.param.add(start), n) };
    let grad = unsafe { std::slice::from_raw_parts(self.grad.add(start), n) };
    if !self.quantized {
      // bitsandbytes' 32-bit update is elementwise: cut anywhere, the same bits.
      let state1 = unsafe { std::slice::from_raw_parts_mut(self.full1.add(start), n) };
      let state2 =
        if self.second { unsafe { std::slice::from_raw_parts_mut(self.full2.add(start), n) } } else { &mut [][..] };
      return O::full(&self.coeffs, param, grad, state1, state2);
    }
    let (first_block, block_count) = (start / BLOCK, blocks(n));
    let moments = Quantized {
      state1: unsafe { std::slice::from_raw_parts_mut(self.state1.add(start), n) },
      absmax1: unsafe { std::slice::from_raw_parts_mut(self.absmax1.add(first_block), block_count) },
      state2: if self.second { unsafe { std::slice::from_raw_parts_mut(self.state2.add(start), n) } } else { &mut [] },
      absmax2: if self.second {
        unsafe { std::slice::from_raw_parts_mut(self.absmax2.add(first_block), block_count) }
      } else {
        &mut []
      },
    };
    O::quantized(&self.coeffs, param, grad, moments)
  }
}

thread_local! {
  /// Where each job's units start, for [`run_units`]: kept per thread, so that a step allocates
  /// nothing once its thread has run one of as many tensors.
  static UNIT_STARTS: std::cell::RefCell<Vec<usize>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// One step of every job, all units on the step pool (on the caller alone when the step is small).
/// Returns whether a gradient held NaN or ±∞; the update went ahead regardless, as the registry's
/// optimizers' and PyTorch's do (each kernel checks the gradient as its loop reads it).
///
/// A step from memory prefetches its arrays ahead as the prefetch trial of its kind of step
/// chooses ([`crate::engine::run::PrefetchTrial`]), each 8-bit optimizer tried on its own: a
/// light loop (Lion8bit's) streams faster with it, one bound by its own instructions (Adam8bit's)
/// slower. A step that stays in the last-level cache never prefetches: both ran slower with it
/// there (BENCHMARKS.md, "Design choices").
pub fn run<O: EightBit>(jobs: &mut [Job<'_, O::Coeffs>]) -> bool {
  let units = units(jobs);
  let bytes = step_bytes::<O>(jobs.iter().map(|job| job.len).sum());
  if stays_cached(bytes) {
    return run_units::<O>(jobs, 0..units, Streaming::Cached);
  }
  with_streaming::<O, _>(bytes, |streaming| run_units::<O>(jobs, 0..units, streaming))
}

/// How the arrays of a step of `O` over `elements` in all reach the cores, as [`run`] decides
/// when it is not timing a trial: for a step run in slices (`stepAsync`), decided once for the
/// whole step.
pub fn streams<O: EightBit>(elements: usize) -> Streaming {
  let bytes = step_bytes::<O>(elements);
  if stays_cached(bytes) {
    Streaming::Cached
  } else {
    crate::engine::run::streams::<O>(bytes)
  }
}

/// The bytes of the arrays of a step of `O` over `elements`: the parameters, the gradients and a
/// code per moment (the absmax, one `f32` a block, are left out; so is the larger `f32` state of
/// tensors under [`MIN_8BIT_SIZE`], which are small).
fn step_bytes<O: EightBit>(elements: usize) -> usize {
  elements * (8 + O::MOMENTS)
}

/// The units of a step: each job's [`Job::units`], numbered in turn.
pub fn units<C>(jobs: &[Job<'_, C>]) -> usize {
  jobs.iter().map(Job::units).sum()
}

/// Units `range` of the step (numbered as [`units`] counts them), on the step pool unless they
/// are few: a part of [`run`], for a step run in slices (`stepAsync`), the kernels prefetching
/// ahead if `streaming` says so (as [`streams`] decides it for the whole step).
/// Each unit is whole blocks, so running a step's units in any number of parts, prefetching or
/// not, gives the bits of running them at once. Returns whether a gradient element of those
/// units was NaN or ±∞.
pub fn run_units<O: EightBit>(
  jobs: &mut [Job<'_, O::Coeffs>],
  range: std::ops::Range<usize>,
  streaming: Streaming,
) -> bool {
  let jobs: &[Job<'_, O::Coeffs>] = jobs;
  with_scratch(&UNIT_STARTS, |starts| {
    let first = range.start;
    let count = range.len();
    // The elements of those units, and where each job's units start in the numbering (for the
    // jobs up to the range's end), so that a unit finds its job by a binary search.
    let (mut elements, mut at) = (0, 0);
    for job in jobs {
      if at >= range.end {
        break;
      }
      let units = job.units();
      let (from, to) = (range.start.max(at), range.end.min(at + units));
      if from < to {
        elements += job.unit_elements(to - at - 1).end - job.unit_elements(from - at).start;
      }
      starts.push(at);
      at += units;
    }
    assert!(range.end <= at, "units {range:?} of a step of {at}");
    let non_finite = AtomicBool::new(false);
    let starts: &[usize] = starts;
    let body = |unit: usize| {
      let unit = first + unit;
      // The last job starting at or before the unit: jobs of no units before it start there too.
      let index = starts.partition_point(|&start| start <= unit) - 1;
      // SAFETY: `for_each_piece` runs each index once, and each index is one unit of one job
      // (`unit - starts[index]` is below that job's units: the next job starts after it); the
      // jobs' slices are borrowed for as long as `jobs` is.
      if crate::engine::simd::streaming(streaming.prefetch(), || unsafe {
        jobs[index].run_unit::<O>(unit - starts[index])
      }) {
        non_finite.store(true, Ordering::Relaxed);
      }
    };
    if elements < PARALLEL_MIN_ELEMENTS || count <= 1 {
      (0..count).for_each(body);
    } else {
      threads::for_each_piece(count, &body);
    }
    non_finite.into_inner()
  })
}

/// [`run`] as bitsandbytes orders it: each tensor whole, in turn, with the plain kernels.
pub fn run_reference<O: EightBit>(jobs: &mut [Job<'_, O::Coeffs>]) -> bool {
  let mut non_finite = false;
  for job in jobs.iter() {
    if job.len == 0 {
      continue;
    }
    // SAFETY: as in `run`, on this thread alone.
    non_finite |= unsafe { job.run_whole::<O>() };
  }
  non_finite
}

impl<C: Copy> Job<'_, C> {
  /// The whole job as one call of the reference kernel.
  ///
  /// Returns whether the gradient held NaN or ±∞.
  ///
  /// # Safety
  /// As [`Job::run_unit`], with no other thread running any unit of this job.
  unsafe fn run_whole<O: EightBit<Coeffs = C>>(&self) -> bool {
    let n = self.len;
    // SAFETY: the job's own slices, whole.
    let param = unsafe { std::slice::from_raw_parts_mut(self.param, n) };
    let grad = unsafe { std::slice::from_raw_parts(self.grad, n) };
    if !self.quantized {
      let state1 = unsafe { std::slice::from_raw_parts_mut(self.full1, n) };
      let state2 = if self.second { unsafe { std::slice::from_raw_parts_mut(self.full2, n) } } else { &mut [][..] };
      return O::full(&self.coeffs, param, grad, state1, state2);
    }
    let count = blocks(n);
    let moments = Quantized {
      state1: unsafe { std::slice::from_raw_parts_mut(self.state1, n) },
      absmax1: unsafe { std::slice::from_raw_parts_mut(self.absmax1, count) },
      state2: if self.second { unsafe { std::slice::from_raw_parts_mut(self.state2, n) } } else { &mut [] },
      absmax2: if self.second { unsafe { std::slice::from_raw_parts_mut(self.absmax2, count) } } else { &mut [] },
    };
    O::quantized_reference(&self.coeffs, param, grad, moments);
    any_non_finite(grad)
  }
}

/// `multiversion!(fn name(args...) => kernel);` defines `name`, which calls the
/// `#[inline(always)]` function `kernel` compiled with AVX-512 or AVX2+FMA where this CPU has
/// them (the engine's dispatch, [`crate::engine::simd`], for kernels that are not generic over
/// the element type). Every copy does the same IEEE operations, so gives the same bits.
macro_rules! multiversion {
  (fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty => $kernel:ident) => {
    #[allow(clippy::too_many_arguments)]
    fn $name($($arg: $ty),*) -> $ret {
      #[cfg(target_arch = "x86_64")]
      {
        #[allow(clippy::too_many_arguments)]
        #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
        unsafe fn avx512($($arg: $ty),*) -> $ret {
          $kernel($($arg),*)
        }
        #[allow(clippy::too_many_arguments)]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2($($arg: $ty),*) -> $ret {
          $kernel($($arg),*)
        }
        if $crate::engine::simd::has_avx512() {
          // SAFETY: the CPU supports every feature `avx512` is compiled with.
          return unsafe { avx512($($arg),*) };
        }
        if $crate::engine::simd::has_avx2_fma() {
          // SAFETY: the CPU supports every feature `avx2` is compiled with.
          return unsafe { avx2($($arg),*) };
        }
      }
      $kernel($($arg),*)
    }
  };
}
pub(crate) use multiversion;

#[cfg(test)]
pub(crate) mod tests {
  use super::*;

  /// The tests every 8-bit optimizer runs, for optimizer `$o` over the step sequences `$hypers`
  /// (a `Vec<Vec<Hyper>>`, the second used for the thread counts): the engine equals the
  /// reference, the thread count does not matter, and every level equals the reference.
  macro_rules! shared_tests {
    ($o:ty, $hypers:expr) => {
      #[test]
      fn fused_parallel_step_matches_reference_bit_for_bit() {
        for h in $hypers {
          super::super::tests::assert_engine_matches_reference::<$o>(&h);
        }
      }

      #[test]
      fn thread_count_does_not_change_the_bits() {
        super::super::tests::assert_thread_count_does_not_matter::<$o>(&$hypers[1]);
      }

      #[test]
      fn every_level_matches_reference_bit_for_bit() {
        for h in $hypers {
          super::super::tests::assert_levels_match_reference::<$o>(&h[..3]);
        }
      }

      #[test]
      fn every_level_and_the_f32_kernel_report_a_non_finite_gradient_anywhere() {
        super::super::tests::assert_non_finite_reported::<$o>(&$hypers[0][0]);
      }

      #[test]
      fn a_step_run_in_parts_gives_the_bits_of_one_run() {
        super::super::tests::assert_parts_match_whole::<$o>(&$hypers[1]);
      }
    };
  }
  pub(crate) use shared_tests;

  /// Deterministic values in (−1, 1) scaled by `scale`, with exact zeros mixed in.
  pub fn values(len: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut next = crate::testing::xorshift(seed);
    (0..len)
      .map(|i| {
        let u = ((next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale;
        if i % 97 == 5 {
          0.0
        } else {
          u
        }
      })
      .collect()
  }

  /// Lengths around blocks and units: empty, one, a block either side, odd sizes, and units.
  pub const LENGTHS: [usize; 13] =
    [0, 1, 7, 255, 256, 257, 1001, 4095, 4096, 4097, 3 * 4096 + 5, 16 * 4096 + 300, 40_000];

  /// `steps` steps of one parameter of `len` elements with the engine (parallel, fused) or the
  /// reference, from the same start; returns the parameter and its moments.
  pub fn trajectory<O: EightBit>(
    hyper: &[Hyper],
    len: usize,
    min_8bit_size: usize,
    engine: bool,
  ) -> (Vec<f32>, Moments) {
    let mut param = values(len, 1, 1.0);
    let mut moments = Moments::new(len, min_8bit_size, O::MOMENTS);
    for (t, h) in hyper.iter().enumerate() {
      let grad = values(len, t as u64 + 2, 0.1);
      let coeffs = O::coeffs(h, t as u64 + 1);
      let mut jobs = [Job::new::<O>(coeffs, &mut param, &grad, &mut moments).unwrap()];
      if engine {
        run::<O>(&mut jobs);
      } else {
        run_reference::<O>(&mut jobs);
      }
    }
    (param, moments)
  }

  pub fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
  }

  pub fn same_moments(a: &Moments, b: &Moments) -> bool {
    match (a, b) {
      (
        Moments::Quantized { state1: s1, absmax1: a1, state2: s2, absmax2: a2 },
        Moments::Quantized { state1: t1, absmax1: b1, state2: t2, absmax2: b2 },
      ) => s1 == t1 && s2 == t2 && same_bits(a1, b1) && same_bits(a2, b2),
      (Moments::Full { state1: s1, state2: s2 }, Moments::Full { state1: t1, state2: t2 }) => {
        same_bits(s1, t1) && same_bits(s2, t2)
      }
      _ => false,
    }
  }

  /// The fused, parallel step equals the reference bit for bit on every length, 8-bit and `f32`.
  pub fn assert_engine_matches_reference<O: EightBit>(hyper: &[Hyper]) {
    for len in LENGTHS {
      for min in [MIN_8BIT_SIZE, 0] {
        let (p, m) = trajectory::<O>(hyper, len, min, true);
        let (q, n) = trajectory::<O>(hyper, len, min, false);
        assert!(same_bits(&p, &q), "{} len {len} min {min}: parameters differ", O::NAME);
        assert!(same_moments(&m, &n), "{} len {len} min {min}: moments differ", O::NAME);
      }
    }
  }

  /// Steps of several parameters (8-bit, and `f32` moments of more than one unit) run as
  /// [`run_units`] over parts of every size, cut anywhere, prefetching in every other part, give
  /// the bits of [`run`], and the parts' reports add up to its report.
  pub fn assert_parts_match_whole<O: EightBit>(hyper: &[Hyper]) {
    // (length, minimum size for 8-bit state): 8-bit, f32 of several units, empty, f32 of one;
    // empty ones first, last and side by side, which share their unit numbers with a neighbour.
    let shapes = [
      (0, 0),
      (16 * 4096 + 300, MIN_8BIT_SIZE),
      (3 * 4096 + 5, usize::MAX),
      (0, 0),
      (0, 0),
      (1001, 0),
      (4097, 8192),
      (0, 0),
    ];
    let start = || -> Vec<(Vec<f32>, Moments)> {
      shapes.iter().map(|&(len, min)| (values(len, len as u64, 1.0), Moments::new(len, min, O::MOMENTS))).collect()
    };
    let mut whole = start();
    let mut reference = start();
    for part in [1, 2, 3, 7, 100] {
      let mut parted = start();
      for (t, h) in hyper.iter().enumerate() {
        let coeffs = O::coeffs(h, t as u64 + 1);
        let mut grads: Vec<Vec<f32>> = shapes.iter().map(|&(len, _)| values(len, t as u64 + 2, 0.1)).collect();
        if t == 1 {
          grads[1][4096 + 17] = f32::NAN;
        }
        let mut expected = None;
        if part == 1 {
          let mut jobs: Vec<_> =
            whole.iter_mut().zip(&grads).map(|((p, m), g)| Job::new::<O>(coeffs, p, g, m).unwrap()).collect();
          expected = Some(run::<O>(&mut jobs));
          let mut jobs: Vec<_> =
            reference.iter_mut().zip(&grads).map(|((p, m), g)| Job::new::<O>(coeffs, p, g, m).unwrap()).collect();
          run_reference::<O>(&mut jobs);
        }
        let mut jobs: Vec<_> =
          parted.iter_mut().zip(&grads).map(|((p, m), g)| Job::new::<O>(coeffs, p, g, m).unwrap()).collect();
        let total = units(&jobs);
        // Units per shape: 258 blocks in 17, 12293 elements in 4, none, one, 4097 elements in 2.
        assert_eq!(total, 24, "{}", O::NAME);
        let mut reported = false;
        let mut at = 0;
        while at < total {
          let to = (at + part).min(total);
          // Parts in turn with and without prefetching, which changes no bits.
          let streaming = if (at / part) % 2 == 0 { Streaming::Prefetched } else { Streaming::Cached };
          reported |= run_units::<O>(&mut jobs, at..to, streaming);
          at = to;
        }
        assert_eq!(reported, t == 1, "{} parts of {part}: the report", O::NAME);
        if let Some(expected) = expected {
          assert_eq!(reported, expected, "{}", O::NAME);
        }
      }
      for ((p, m), (q, n)) in whole.iter().zip(&parted) {
        assert!(same_bits_or_nan(p, q) && same_moments(m, n), "{} parts of {part}: results differ", O::NAME);
      }
    }
    // Every unit ran as its own job's, as the plain reference runs each job.
    for ((p, m), (q, n)) in whole.iter().zip(&reference) {
      assert!(same_bits_or_nan(p, q) && same_moments(m, n), "{}: the engine differs from the reference", O::NAME);
    }
  }

  /// The same bits on 1, 2 and 3 threads.
  pub fn assert_thread_count_does_not_matter<O: EightBit>(hyper: &[Hyper]) {
    let before = threads::num_threads();
    let mut results = Vec::new();
    for n in [1, 2, 3] {
      threads::set_num_threads(n).unwrap();
      results.push(trajectory::<O>(hyper, 16 * 4096 + 300, MIN_8BIT_SIZE, true));
    }
    threads::set_num_threads(before).unwrap();
    for r in &results[1..] {
      assert!(same_bits(&r.0, &results[0].0) && same_moments(&r.1, &results[0].1), "{}", O::NAME);
    }
  }

  /// [`values`] with one kind of hard block in turn: zeros, a NaN, ±∞, all equal, subnormal
  /// values, and one large value among tiny ones (subnormal quotients); the rest ordinary.
  pub fn hard_values(len: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut x = values(len, seed, scale);
    for (b, block) in x.chunks_mut(BLOCK).enumerate() {
      let mid = block.len() / 2;
      match (b + seed as usize) % 9 {
        0 => block.fill(0.0),
        1 => block[mid] = f32::NAN,
        2 => block[0] = f32::INFINITY,
        3 => block[mid] = f32::NEG_INFINITY,
        4 => block.fill(0.375 * scale),
        5 => block.iter_mut().for_each(|v| *v *= 1e-39),
        6 => {
          block.iter_mut().for_each(|v| *v *= 1e-33);
          block[mid] = scale;
        }
        _ => {}
      }
    }
    x
  }

  /// Every level's kernel, the `f32` kernel and a step through [`run`] report NaN, +∞ and −∞ at
  /// the first, a middle and the last element, at lengths that end within a block, on one and
  /// across units, and report nothing for the largest finite magnitudes there.
  pub fn assert_non_finite_reported<O: EightBit>(hyper: &Hyper) {
    let coeffs = O::coeffs(hyper, 1);
    for len in [1, 255, 256, 257, 4096, 3 * 4096 + 300] {
      for at in [0, len / 2, len - 1] {
        for (bad, expected) in
          [(f32::NAN, true), (f32::INFINITY, true), (f32::NEG_INFINITY, true), (f32::MAX, false), (-f32::MAX, false)]
        {
          let mut grad = values(len, 2, 0.1);
          grad[at] = bad;
          let what = format!("{} len {len}, {bad} at {at}", O::NAME);
          for level in Level::available() {
            let (mut p, mut m) = (values(len, 1, 1.0), Moments::new(len, 0, O::MOMENTS));
            assert_eq!(O::quantized_at(level, &coeffs, &mut p, &grad, parts(&mut m)), expected, "{what}, {level:?}");
          }
          let (mut p, mut m1, mut m2) = (values(len, 1, 1.0), vec![0.0; len], vec![0.0; len]);
          let second = if O::MOMENTS == 2 { &mut m2[..] } else { &mut [][..] };
          assert_eq!(O::full(&coeffs, &mut p, &grad, &mut m1, second), expected, "{what}, f32 state");
          for min_8bit_size in [0, MIN_8BIT_SIZE] {
            let (mut p, mut m) = (values(len, 1, 1.0), Moments::new(len, min_8bit_size, O::MOMENTS));
            let mut jobs = [Job::new::<O>(coeffs, &mut p, &grad, &mut m).unwrap()];
            assert_eq!(run::<O>(&mut jobs), expected, "{what}, run, min_8bit_size {min_8bit_size}");
          }
        }
      }
    }
  }

  /// The slices of 8-bit moments.
  pub fn parts(m: &mut Moments) -> Quantized<'_> {
    let Moments::Quantized { state1, absmax1, state2, absmax2 } = m else { panic!("8-bit moments") };
    Quantized { state1, absmax1, state2, absmax2 }
  }

  /// Equal bits, or both NaN (a NaN's sign and payload may depend on which of two NaN operands an
  /// instruction passes on, which the compiler may swap).
  pub fn same_bits_or_nan(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()))
  }

  /// The fused kernel at every level this CPU runs equals the reference bit for bit: lengths 0 to
  /// 600 and around units, ordinary and [`hard_values`] parameters and gradients, over `hyper`'s steps.
  pub fn assert_levels_match_reference<O: EightBit>(hyper: &[Hyper]) {
    let lengths = (0..=600).chain([4095, 4096, 4097, 65536 + 300]);
    for len in lengths {
      for level in Level::available() {
        for hard in [false, true] {
          let make =
            |seed: u64, scale: f32| if hard { hard_values(len, seed, scale) } else { values(len, seed, scale) };
          let mut p = make(1, 1.0);
          let mut q = p.clone();
          let mut a = Moments::new(len, 0, O::MOMENTS);
          let mut b = a.clone();
          for (t, h) in hyper.iter().enumerate() {
            let grad = make(t as u64 + 2, 0.1);
            let coeffs = O::coeffs(h, t as u64 + 1);
            let reported = O::quantized_at(level, &coeffs, &mut p, &grad, parts(&mut a));
            O::quantized_reference(&coeffs, &mut q, &grad, parts(&mut b));
            assert_eq!(reported, any_non_finite(&grad), "{} {level:?} len {len} hard {hard} step {t}", O::NAME);
          }
          let what = format!("{} {level:?} len {len} hard {hard}", O::NAME);
          assert!(same_bits_or_nan(&p, &q), "{what}: parameters differ");
          let (
            Moments::Quantized { state1: s1, absmax1: a1, state2: s2, absmax2: a2 },
            Moments::Quantized { state1: t1, absmax1: b1, state2: t2, absmax2: b2 },
          ) = (&a, &b)
          else {
            unreachable!()
          };
          assert!(s1 == t1 && s2 == t2, "{what}: codes differ");
          assert!(same_bits_or_nan(a1, b1) && same_bits_or_nan(a2, b2), "{what}: absmax differ");
        }
      }
    }
  }

  #[test]
  fn levels_run_by_this_cpu() {
    let levels = Level::available();
    assert_eq!(levels[0], Level::detected());
    assert_eq!(*levels.last().unwrap(), Level::Portable);
    // The levels steps run at are timed among these.
    assert!(levels.contains(&Adam8bit::level()) && levels.contains(&Lion8bit::level()));
  }

  #[test]
  fn moments_are_sized_as_bitsandbytes_sizes_them() {
    let m = Moments::new(4095, MIN_8BIT_SIZE, 2);
    assert!(matches!(&m, Moments::Full { state1, state2 } if state1.len() == 4095 && state2.len() == 4095));
    let m = Moments::new(4097, MIN_8BIT_SIZE, 2);
    assert!(matches!(&m, Moments::Quantized { absmax1, .. } if absmax1.len() == 17));
    let m = Moments::new(4097, MIN_8BIT_SIZE, 1);
    assert!(matches!(&m, Moments::Quantized { state2, absmax2, .. } if state2.is_empty() && absmax2.is_empty()));
    // 2 bytes per element and 8 per block of 256: 2.03 bytes per parameter.
    let big = Moments::new(1 << 20, MIN_8BIT_SIZE, 2);
    assert!(big.bytes() as f64 / (1 << 20) as f64 <= 2.1);
  }
}
