//! What every optimizer provides, and the engine that runs one step over many tensors.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::config::{ConfigError, Field};
use crate::engine::finite::any_non_finite;
use crate::engine::simd;
use crate::engine::state::ParamState;
use crate::engine::threads;
use crate::float::Float;

/// The most state buffers any optimizer keeps per parameter (Adam with AMSGrad: three).
pub const MAX_BUFFERS: usize = 3;

/// The most scalars besides the step count any optimizer carries per parameter (NAdam: one).
pub const MAX_SCALARS: usize = 2;

/// Below this many elements in a whole step, threads cost more than they give.
pub const PARALLEL_MIN_ELEMENTS: usize = 1 << 14;

/// The fewest elements one piece of a step updates; a multiple of every vector width and of a
/// cache line. Pieces grow with the step ([`piece_elements`]) up to [`MAX_CHUNK_ELEMENTS`].
pub const CHUNK_ELEMENTS: usize = 1 << 12;

/// The most elements one piece updates: each piece is a kernel call, and its setup (tens of
/// nanoseconds) is 1% of a piece of 16K elements in cache; measured, 4M elements in pieces of
/// 4K ran about 4% slower than in pieces of 16K or more, and 16K in pieces of 16K (one piece, one
/// thread) 40% slower than in pieces of 4K.
pub const MAX_CHUNK_ELEMENTS: usize = 1 << 16;

/// Elements per piece for a step of `total` elements on `threads` threads: about 32 pieces per
/// thread (so that a thread that falls behind is helped), within [`CHUNK_ELEMENTS`] and
/// [`MAX_CHUNK_ELEMENTS`].
fn piece_elements(total: usize, threads: usize) -> usize {
  let per = total / (threads.max(1) * 32);
  (per / CHUNK_ELEMENTS * CHUNK_ELEMENTS).clamp(CHUNK_ELEMENTS, MAX_CHUNK_ELEMENTS)
}

/// An optimizer: its options, its per-parameter state, and its fused update.
pub trait Optimizer: Copy + Send + Sync + Sized + 'static {
  /// The options in packed order, with their defaults and rules.
  const FIELDS: &'static [Field];
  /// PyTorch's `state_dict` names of the per-parameter buffers, in the order the kernel takes them.
  const BUFFERS: &'static [&'static str];
  /// PyTorch's `state_dict` names of the per-parameter scalars carried from step to step besides
  /// the step count (NAdam's `mu_product`), kept in [`ParamState::scalars`] in this order.
  const SCALARS: &'static [&'static str] = &[];
  /// Per-step scalars derived from the options and the step count, computed once per step.
  type Coeffs: Copy + Send + Sync + 'static;

  /// Builds a validated configuration from values packed in [`Self::FIELDS`] order.
  fn from_packed(values: &[f64]) -> Result<Self, ConfigError>;
  /// How many of [`Self::BUFFERS`] this configuration uses.
  fn buffers_used(&self) -> usize;
  /// The scalars for the update that makes the parameter's step count `step` (1-based).
  fn coeffs(&self, step: u64) -> Self::Coeffs;
  /// Completes `coeffs` (from [`Self::coeffs`] for `state.step`) for one parameter from the
  /// state only it has, and advances that state: its [`ParamState::scalars`], or whether a
  /// buffer exists yet. Called once per parameter and step, after the step count is advanced
  /// and before the step's buffers are taken, so `state.buffers` holds what earlier steps made.
  fn advance(&self, _coeffs: &mut Self::Coeffs, _state: &mut ParamState) {}
  /// The fused update of one contiguous chunk; every slice has the same length.
  fn update<T: Float>(coeffs: &Self::Coeffs, param: &mut [T], grad: &[T], buffers: [&mut [T]; MAX_BUFFERS]);
  /// The same update written as plainly as possible, to test [`Self::update`] against.
  fn update_reference<T: Float>(coeffs: &Self::Coeffs, param: &mut [T], grad: &[T], buffers: [&mut [T]; MAX_BUFFERS]);
}

/// One tensor's share of a step: the parameter, its gradient, its state buffers (unused ones
/// empty) and the scalars for its step count.
pub struct Job<'a, T, C> {
  pub coeffs: C,
  pub param: &'a mut [T],
  pub grad: &'a [T],
  pub buffers: [&'a mut [T]; MAX_BUFFERS],
}

/// Updates every tensor of `jobs`.
///
/// A step of fewer than [`PARALLEL_MIN_ELEMENTS`] elements runs on the calling thread. A larger
/// one is cut into pieces ([`piece_elements`]) over all its tensors together, as if they were one
/// array (so hundreds of small tensors cost what one tensor of their total size costs), and the
/// pieces run on the process-wide pool ([`crate::engine::threads`]). Each element sees the same
/// operations wherever the cuts fall, so the result does not depend on the thread count.
/// Nothing is allocated once a thread has run a step with as many tensors before.
///
/// Returns whether any gradient element was NaN or infinite (the update went ahead regardless, as
/// PyTorch's does). Each chunk of a gradient is scanned right after its update read it, while it
/// is in cache, so the report adds no memory traffic ([`crate::engine::finite`]).
pub fn run<O: Optimizer, T: Float>(jobs: &mut [Job<'_, T, O::Coeffs>]) -> bool {
  let streaming = streams_from_memory(jobs);
  run_streaming::<O, T>(jobs, streaming)
}

/// [`run`], told whether the step streams from memory ([`streams`]), for a caller that runs a
/// step in parts: a part is small, but its arrays come from memory if the whole step's do.
pub fn run_streaming<O: Optimizer, T: Float>(jobs: &mut [Job<'_, T, O::Coeffs>], streaming: bool) -> bool {
  let total: usize = jobs.iter().map(|job| job.param.len()).sum();
  let pool = if total >= PARALLEL_MIN_ELEMENTS { Some(threads::current()) } else { None };
  let Some(pool) = pool.filter(|pool| pool.threads() > 1) else {
    // Kernels prefetch ahead while this thread is streaming ([`simd::streaming`]).
    return simd::streaming(streaming, || {
      let mut non_finite = false;
      for job in jobs.iter_mut() {
        let len = job.param.len();
        for from in (0..len).step_by(MAX_CHUNK_ELEMENTS) {
          let to = (from + MAX_CHUNK_ELEMENTS).min(len);
          let buffers = job.buffers.each_mut().map(|b| if b.is_empty() { &mut b[..] } else { &mut b[from..to] });
          let grad = &job.grad[from..to];
          O::update(&job.coeffs, &mut job.param[from..to], grad, buffers);
          non_finite |= any_non_finite(grad);
        }
      }
      non_finite
    });
  };
  SPANS.with(|cell| {
    let mut owned = Vec::new();
    let mut borrowed = cell.try_borrow_mut();
    let spans = match borrowed.as_deref_mut() {
      Ok(spans) => spans,
      Err(_) => &mut owned,
    };
    spans.clear();
    let mut start = 0;
    for (index, job) in jobs.iter_mut().enumerate() {
      let len = job.param.len();
      if len == 0 {
        continue;
      }
      debug_assert!(job.grad.len() == len && job.buffers.iter().all(|b| b.is_empty() || b.len() == len));
      spans.push(Span {
        start,
        end: start + len,
        job: index,
        param: job.param.as_mut_ptr().cast(),
        grad: job.grad.as_ptr().cast(),
        buffers: job
          .buffers
          .each_mut()
          .map(|b| if b.is_empty() { std::ptr::null_mut() } else { b.as_mut_ptr().cast() }),
      });
      start += len;
    }
    let chunk = piece_elements(total, pool.threads());
    let pieces = total.div_ceil(chunk);
    let shared = Pieces { spans, jobs: jobs.as_ptr(), streaming };
    let non_finite = AtomicBool::new(false);
    pool.for_each_piece(pieces, &|piece| {
      let from = piece * chunk;
      let to = (from + chunk).min(total);
      // SAFETY: pieces are disjoint element ranges, so each element of every array is touched by
      // one piece only; the pointers come from the exclusive borrow of `jobs`, which lasts until
      // every piece has returned.
      if simd::streaming(shared.streaming, || unsafe { shared.update::<O>(from, to) }) {
        non_finite.store(true, Ordering::Relaxed);
      }
    });
    non_finite.into_inner()
  })
}

/// The pieces of one step, as raw parts that every thread may use at once.
struct Pieces<'s, 'j, T, C> {
  spans: &'s [Span],
  jobs: *const Job<'j, T, C>,
  /// Whether the step is too large to stay in cache ([`streams_from_memory`]).
  streaming: bool,
}

// SAFETY: the threads only read `spans` and each job's `coeffs` (`Copy + Sync`), and write
// through the pointers of disjoint element ranges (see `run`).
unsafe impl<T, C: Sync> Sync for Pieces<'_, '_, T, C> {}

/// Where one non-empty tensor lies in the step's element range, with its arrays as raw pointers
/// (null for a buffer this step does not use).
struct Span {
  start: usize,
  end: usize,
  job: usize,
  param: *mut u8,
  grad: *const u8,
  buffers: [*mut u8; MAX_BUFFERS],
}

thread_local! {
  /// Per calling thread, so that steps allocate nothing once it has seen as many tensors.
  static SPANS: std::cell::RefCell<Vec<Span>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl<T: Float, C: Copy> Pieces<'_, '_, T, C> {
  /// Updates the elements `from..to` of the step; returns whether a gradient element among them
  /// was non-finite.
  ///
  /// # Safety
  /// No other thread may touch those elements meanwhile.
  unsafe fn update<O: Optimizer<Coeffs = C>>(&self, from: usize, to: usize) -> bool {
    let mut non_finite = false;
    let first = self.spans.partition_point(|s| s.end <= from);
    for span in &self.spans[first..] {
      if span.start >= to {
        break;
      }
      let lo = from.max(span.start) - span.start;
      let len = to.min(span.end) - span.start - lo;
      // SAFETY: `job` indexes the jobs `run` borrows; `coeffs` is read, never written.
      let coeffs = unsafe { std::ptr::addr_of!((*self.jobs.add(span.job)).coeffs).read() };
      // SAFETY: `lo + len` is within the tensor; the caller guarantees exclusive access.
      unsafe {
        let param = std::slice::from_raw_parts_mut(span.param.cast::<T>().add(lo), len);
        let grad = std::slice::from_raw_parts(span.grad.cast::<T>().add(lo), len);
        let buffers = span.buffers.map(|b| {
          if b.is_null() {
            &mut [][..]
          } else {
            std::slice::from_raw_parts_mut(b.cast::<T>().add(lo), len)
          }
        });
        O::update(&coeffs, param, grad, buffers);
        non_finite |= any_non_finite(grad);
      }
    }
    non_finite
  }
}

/// Whether a step's arrays are too large to stay in cache between steps, so that its kernels are
/// better off prefetching ([`simd::streaming`]): when they take more than half the last-level
/// cache (which other processes share). Measured on this project's machine (260 MB of L3): Adam
/// over 1M and 4M elements, which fit, ran 5-10% slower with prefetching; over 16M and 64M, which
/// do not, 7-15% faster.
fn streams_from_memory<T, C>(jobs: &[Job<'_, T, C>]) -> bool {
  let arrays = |job: &Job<'_, T, C>| 2 + job.buffers.iter().filter(|b| !b.is_empty()).count();
  streams(jobs.iter().map(|job| job.param.len() * arrays(job)).sum::<usize>() * std::mem::size_of::<T>())
}

/// Whether a step whose arrays take `bytes` in all streams from memory (see [`run`]).
pub fn streams(bytes: usize) -> bool {
  bytes > last_level_cache_bytes() / 2
}

/// The size of the largest cache of CPU 0 (Linux's sysfs), or 32 MiB where it cannot be read.
fn last_level_cache_bytes() -> usize {
  static BYTES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
  *BYTES.get_or_init(|| {
    let read = |index: u32, file: &str| {
      std::fs::read_to_string(format!("/sys/devices/system/cpu/cpu0/cache/index{index}/{file}")).ok()
    };
    let size = |text: String| {
      let text = text.trim();
      let (digits, scale) = match text.as_bytes().last() {
        Some(b'K') => (&text[..text.len() - 1], 1 << 10),
        Some(b'M') => (&text[..text.len() - 1], 1 << 20),
        Some(b'G') => (&text[..text.len() - 1], 1 << 30),
        _ => (text, 1),
      };
      digits.parse::<usize>().ok().map(|n| n * scale)
    };
    (0..16)
      .filter_map(|index| Some((read(index, "level")?.trim().parse::<u32>().ok()?, size(read(index, "size")?)?)))
      .max()
      .map_or(32 << 20, |(_, bytes)| bytes)
  })
}
