//! The engine that runs one step of an optimizer over many tensors at once.

use std::sync::atomic::{AtomicBool, Ordering};

use std::any::TypeId;

use crate::engine::bf16::{Bf16, Rounding};
use crate::engine::nontemporal;
use crate::engine::simd;
use crate::engine::state::Stored;
use crate::engine::threads;
use crate::float::Float;
use crate::optimizers::Optimizer;

/// The most state buffers any optimizer keeps per parameter (Adam with AMSGrad: three).
pub const MAX_BUFFERS: usize = 3;

/// The most scalars besides the step count any optimizer carries per parameter (NAdam: one).
pub const MAX_SCALARS: usize = 2;

/// Below this many elements in a whole step, threads cost more than they give.
pub const PARALLEL_MIN_ELEMENTS: usize = 1 << 14;

/// Below this many elements a step does not wake pool workers that sleep (it is joined by those
/// still watching for steps, as back-to-back steps are): a woken worker arrives after tens of
/// microseconds, about what such a step takes on one thread, so waking it would cost the caller a
/// system call and the worker a spin for nothing (BENCHMARKS.md, "Design choices").
pub const WAKE_MIN_ELEMENTS: usize = 1 << 16;

/// The fewest elements one piece of a step updates; a multiple of every vector width and of a
/// cache line. Pieces grow with the step ([`piece_elements`]) up to [`MAX_PIECE_ELEMENTS`].
pub const PIECE_ELEMENTS: usize = 1 << 12;

/// The most elements one piece updates: each piece has a fixed cost to claim and set up, so large
/// steps are better off in fewer, larger pieces (BENCHMARKS.md has the measurements); a step in
/// pieces this size still splits into many per thread.
pub const MAX_PIECE_ELEMENTS: usize = 1 << 16;

/// The most elements one kernel call updates: a piece is updated in calls of this many elements
/// (16 KB of each float32 array). The size once bounded a second pass over each call's gradient,
/// which had to find it in cache; kernels now check the gradient in their own loop
/// ([`Optimizer::update`]), and between two calls of a step streaming from memory the engine asks
/// for the next call's first lines ([`CALL_AHEAD_LINES`]). BENCHMARKS.md, "Design choices", has
/// the measurements.
pub const CALL_ELEMENTS: usize = 1 << 12;

/// The kernel calls that update elements `from..to` of a tensor whose parameter starts at address
/// `param`: after a first call up to the first element that starts a cache line (64 bytes), calls
/// of [`CALL_ELEMENTS`], so that every call after the first starts on a line boundary; one call
/// for a range shorter than that.
///
/// A kernel's vector loop starts at its slice's first element, so a slice that starts inside a
/// line splits every vector load and store of the parameter across two lines. Large arrays (the
/// system maps them whole, from about a megabyte up) all start 16 bytes into a line, a
/// Float32Array's data, its gradient's and the state buffers alike, so a call that starts the
/// parameter on a line starts them on one too; smaller ones start anywhere in a line
/// (BENCHMARKS.md, "Kernel calls start on cache lines", has what this bought). Elementwise
/// kernels give the same bits wherever the calls are cut.
pub(crate) fn calls<T>(param: usize, from: usize, to: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
  const LINE: usize = 64;
  let size = std::mem::size_of::<T>();
  let into_line = param.wrapping_add(from.wrapping_mul(size)) % LINE;
  // A range of fewer than CALL_ELEMENTS runs in one call: for a step that small the extra call
  // cost more than the split lines (measured at 1K: BENCHMARKS.md, "Kernel calls start on cache
  // lines"). A parameter not aligned to its element size (never, from a typed array) is left as
  // it is.
  let head = if to - from < CALL_ELEMENTS || into_line == 0 || !into_line.is_multiple_of(size) {
    0
  } else {
    (LINE - into_line) / size
  };
  let aligned = (from + head).min(to);
  std::iter::once(from..aligned)
    .filter(|first| !first.is_empty())
    .chain((aligned..to).step_by(CALL_ELEMENTS).map(move |lo| lo..(lo + CALL_ELEMENTS).min(to)))
}

/// Cache lines of each array past a kernel call that a step streaming from memory asks for before
/// the next call (BENCHMARKS.md, "Design choices"); none of a state buffer the step only writes
/// ([`Optimizer::written_only`]).
const CALL_AHEAD_LINES: usize = 16;

/// Asks for the [`CALL_AHEAD_LINES`] cache lines from `at` on. A prefetch is a hint that never
/// faults, so `at` may lie past the end of its array.
#[inline(always)]
fn prefetch_lines<E>(at: *const E) {
  let at = at.cast::<i8>();
  for line in 0..CALL_AHEAD_LINES {
    // SAFETY: a prefetch never faults, whatever the address.
    #[cfg(target_arch = "x86_64")]
    unsafe {
      std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(at.wrapping_add(line * 64))
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at.wrapping_add(line * 64);
  }
}

/// Elements per piece for a step of `total` elements on `threads` threads: about 32 pieces per
/// thread (so that a thread that falls behind is helped), within [`PIECE_ELEMENTS`] and
/// [`MAX_PIECE_ELEMENTS`].
fn piece_elements(total: usize, threads: usize) -> usize {
  let per = total / (threads.max(1) * 32);
  (per / PIECE_ELEMENTS * PIECE_ELEMENTS).clamp(PIECE_ELEMENTS, MAX_PIECE_ELEMENTS)
}

/// A tensor's shape as optimizers see it: `ndim` dimensions, viewed as `batches` matrices of
/// `rows` by `cols` (the last two dimensions; a tensor of fewer than 2 dimensions is one row).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
  pub ndim: usize,
  pub batches: usize,
  pub rows: usize,
  pub cols: usize,
}

impl Dims {
  /// A flat tensor of `len` elements.
  pub fn flat(len: usize) -> Self {
    Dims { ndim: 1, batches: 1, rows: 1, cols: len }
  }

  /// The dimensions of `shape`.
  pub fn of(shape: &[usize]) -> Self {
    match shape {
      [] => Dims { ndim: 0, batches: 1, rows: 1, cols: 1 },
      [len] => Dims::flat(*len),
      [batch @ .., rows, cols] => Dims { ndim: shape.len(), batches: batch.iter().product(), rows: *rows, cols: *cols },
    }
  }

  /// Elements in all.
  pub fn len(self) -> usize {
    self.batches * self.rows * self.cols
  }

  pub fn is_empty(self) -> bool {
    self.len() == 0
  }
}

/// One tensor's share of a step: the parameter, its gradient, its state buffers (unused ones
/// empty; of the parameter's type `T`, or of bfloat16 for a float32 parameter, [`StateOf`]) and
/// the scalars for its step count; for a staged optimizer, also its dimensions and the partial
/// results its stages pass on.
pub struct Job<'a, T, C, S = T> {
  pub coeffs: C,
  pub param: &'a mut [T],
  pub grad: &'a [T],
  pub buffers: [&'a mut [S]; MAX_BUFFERS],
  pub dims: Dims,
  pub partials: &'a mut [f64],
  /// How new bfloat16 state is rounded (bfloat16 state only; float state ignores it).
  pub rounding: Rounding,
}

impl<'a, T, C, S> Job<'a, T, C, S> {
  /// The job of a flat tensor (one row, no partial results): all an elementwise optimizer needs.
  pub fn flat(coeffs: C, param: &'a mut [T], grad: &'a [T], buffers: [&'a mut [S]; MAX_BUFFERS]) -> Self {
    let dims = Dims::flat(param.len());
    Job::new(coeffs, param, grad, buffers, dims, &mut [])
  }

  /// The job of a tensor of `dims`, with room for a staged optimizer's `partials`; its bfloat16
  /// state (if any) rounded to nearest.
  pub fn new(
    coeffs: C,
    param: &'a mut [T],
    grad: &'a [T],
    buffers: [&'a mut [S]; MAX_BUFFERS],
    dims: Dims,
    partials: &'a mut [f64],
  ) -> Self {
    Job { coeffs, param, grad, buffers, dims, partials, rounding: Rounding::Nearest }
  }
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
/// PyTorch's does): each kernel checks the gradient elements as its loop reads them
/// ([`Optimizer::update`]), so the report adds no memory traffic ([`crate::engine::finite`]).
pub fn run<O: Optimizer, T: Float>(jobs: &mut [Job<'_, T, O::Coeffs>]) -> bool {
  let bytes = step_bytes(jobs);
  with_streaming::<O, _>(bytes, |streaming| run_streaming::<O, T, T>(jobs, streaming))
}

/// [`run`] for float32 parameters with bfloat16 state ([`crate::engine::bf16`]): each piece runs
/// in chunks whose state is widened, updated by `O`'s float32 kernel and rounded back.
///
/// # Panics
/// If `O` runs in stages ([`Optimizer::STAGES`]) and there are jobs.
pub fn run_bf16<O: Optimizer>(jobs: &mut [Job<'_, f32, O::Coeffs, Bf16>]) -> bool {
  let bytes = step_bytes(jobs);
  with_streaming::<O, _>(bytes, |streaming| run_streaming::<O, f32, Bf16>(jobs, streaming))
}

/// The element type of the state of a parameter of `T`: `T` itself, or [`Bf16`] for `f32`.
pub trait StateOf<T: Float>: Stored {
  /// `O`'s update of one contiguous piece, its new state rounded as `rounding` says (for the
  /// piece: [`Rounding::at`] its offset in the tensor); whether a gradient element was NaN or
  /// infinite.
  fn update<O: Optimizer>(
    coeffs: &O::Coeffs,
    param: &mut [T],
    grad: &[T],
    buffers: [&mut [Self]; MAX_BUFFERS],
    rounding: Rounding,
  ) -> bool;
}

impl<T: Float> StateOf<T> for T {
  #[inline]
  fn update<O: Optimizer>(
    coeffs: &O::Coeffs,
    param: &mut [T],
    grad: &[T],
    buffers: [&mut [T]; MAX_BUFFERS],
    _rounding: Rounding,
  ) -> bool {
    O::update(coeffs, param, grad, buffers)
  }
}

impl StateOf<f32> for Bf16 {
  #[inline]
  fn update<O: Optimizer>(
    coeffs: &O::Coeffs,
    param: &mut [f32],
    grad: &[f32],
    buffers: [&mut [Bf16]; MAX_BUFFERS],
    rounding: Rounding,
  ) -> bool {
    // The chunked path runs the float32 kernel over state widened into a chunk on the stack,
    // read back right after: no stores around the caches there.
    nontemporal::with(false, || O::update_bf16(coeffs, param, grad, buffers, rounding.noise()))
  }
}

/// [`run`] or [`run_bf16`], told how the step's arrays reach the cores ([`streams`]), for a caller
/// that runs a step in parts: a part is small, but its arrays come from memory if the whole step's
/// do.
///
/// # Panics
/// If `O` runs in stages and `S` is not `T` (stages take state in the parameter's dtype), unless
/// there are no jobs.
pub fn run_streaming<O: Optimizer, T: Float, S: StateOf<T>>(
  jobs: &mut [Job<'_, T, O::Coeffs, S>],
  streaming: Streaming,
) -> bool {
  let (from_memory, prefetch) = (streaming.from_memory(), streaming.prefetch());
  let total: usize = jobs.iter().map(|job| job.param.len()).sum();
  let pool = if total >= PARALLEL_MIN_ELEMENTS { Some(threads::current()) } else { None };
  if O::STAGES > 0 {
    if jobs.is_empty() {
      return false;
    }
    assert!(
      TypeId::of::<S>() == TypeId::of::<T>(),
      "{} runs in stages, which keep state in the parameter's dtype",
      O::NAME
    );
    // SAFETY: `S` is `T` (checked above), so both slices have one type.
    let jobs = unsafe { &mut *(jobs as *mut [Job<'_, T, O::Coeffs, S>] as *mut [Job<'_, T, O::Coeffs>]) };
    return run_stages::<O, T>(jobs, pool.filter(|pool| pool.threads() > 1).as_deref());
  }
  let Some(pool) = pool.filter(|pool| pool.threads() > 1) else {
    // Kernels prefetch ahead while this thread is streaming ([`simd::streaming`]), and store
    // arrays they only write around the caches ([`nontemporal`]).
    return simd::streaming(prefetch, || {
      nontemporal::with(from_memory, || {
        let mut non_finite = false;
        for job in jobs.iter_mut() {
          let len = job.param.len();
          for std::ops::Range { start: from, end: to } in calls::<T>(job.param.as_ptr() as usize, 0, len) {
            let buffers = job.buffers.each_mut().map(|b| if b.is_empty() { &mut b[..] } else { &mut b[from..to] });
            let grad = &job.grad[from..to];
            non_finite |= S::update::<O>(&job.coeffs, &mut job.param[from..to], grad, buffers, job.rounding.at(from));
            if from_memory {
              prefetch_lines(job.param.as_ptr().wrapping_add(to));
              prefetch_lines(job.grad.as_ptr().wrapping_add(to));
              let written_only = O::written_only(&job.coeffs);
              for (i, b) in job.buffers.iter().enumerate() {
                if !b.is_empty() && written_only & (1 << i) == 0 {
                  prefetch_lines(b.as_ptr().wrapping_add(to));
                }
              }
            }
          }
        }
        non_finite
      })
    });
  };
  with_scratch(&SPANS, |spans| {
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
        grad: job.grad.as_ptr().cast(),
        arrays: Arrays::of(job.param, &mut job.buffers),
      });
      start += len;
    }
    let piece_len = piece_elements(total, pool.threads());
    let pieces = total.div_ceil(piece_len);
    let shared = Pieces { spans, jobs: jobs.as_ptr(), streaming };
    let non_finite = AtomicBool::new(false);
    pool.for_each_piece_waking(pieces, total >= WAKE_MIN_ELEMENTS, &|piece| {
      let from = piece * piece_len;
      let to = (from + piece_len).min(total);
      // SAFETY: pieces are disjoint element ranges, so each element of every array is touched by
      // one piece only; the pointers come from the exclusive borrow of `jobs`, which lasts until
      // every piece has returned.
      let update = || nontemporal::with(shared.streaming.from_memory(), || unsafe { shared.update::<O>(from, to) });
      if simd::streaming(shared.streaming.prefetch(), update) {
        non_finite.store(true, Ordering::Relaxed);
      }
    });
    non_finite.into_inner()
  })
}

/// The pieces of one step, as raw parts that every thread may use at once.
struct Pieces<'s, 'j, T, C, S> {
  spans: &'s [Span],
  jobs: *const Job<'j, T, C, S>,
  /// How the step's arrays reach the cores ([`streams`]).
  streaming: Streaming,
}

// SAFETY: the threads only read `spans` and each job's `coeffs` (`Copy + Sync`), and write
// through the pointers of disjoint element ranges (see `run`).
unsafe impl<T, C: Sync, S> Sync for Pieces<'_, '_, T, C, S> {}

/// Runs `f` with this thread's vector `key`, emptied, so that steps allocate nothing once the
/// thread has seen as many tensors ([`with_thread_vec`]).
pub fn with_scratch<E: 'static, R>(
  key: &'static std::thread::LocalKey<std::cell::RefCell<Vec<E>>>,
  f: impl FnOnce(&mut Vec<E>) -> R,
) -> R {
  with_thread_vec(key, |spans| {
    spans.clear();
    f(spans)
  })
}

/// Runs `f` with this thread's vector `key` as it was left, or with a new, empty one where it is
/// in use already (a step run from within a step).
pub fn with_thread_vec<E: 'static, R>(
  key: &'static std::thread::LocalKey<std::cell::RefCell<Vec<E>>>,
  f: impl FnOnce(&mut Vec<E>) -> R,
) -> R {
  key.with(|cell| {
    let mut owned = Vec::new();
    let mut borrowed = cell.try_borrow_mut();
    match borrowed.as_deref_mut() {
      Ok(vec) => f(vec),
      Err(_) => f(&mut owned),
    }
  })
}

/// Where one non-empty tensor lies in the step's element range, with its arrays as raw pointers.
struct Span {
  start: usize,
  end: usize,
  job: usize,
  grad: *const u8,
  arrays: Arrays,
}

/// The parameter and state buffers of one tensor of a step, as raw pointers (null for a buffer
/// the step does not use), through which the threads of the step each update their own elements.
#[derive(Clone, Copy)]
struct Arrays {
  param: *mut u8,
  buffers: [*mut u8; MAX_BUFFERS],
}

impl Arrays {
  fn of<T, S>(param: &mut [T], buffers: &mut [&mut [S]; MAX_BUFFERS]) -> Self {
    Arrays {
      param: param.as_mut_ptr().cast(),
      buffers: buffers.each_mut().map(|b| if b.is_empty() { std::ptr::null_mut() } else { b.as_mut_ptr().cast() }),
    }
  }

  /// The elements `at..at + len` of the parameter, of `T`, and of each buffer, of `S` (empty for
  /// a buffer the step does not use).
  ///
  /// # Safety
  /// The arrays are those [`Arrays::of`] was given, of `T` and `S`, still borrowed for `'a`;
  /// `at + len` is within them; nothing else touches those elements during `'a`.
  #[inline(always)]
  unsafe fn at<'a, T, S>(self, at: usize, len: usize) -> (&'a mut [T], [&'a mut [S]; MAX_BUFFERS]) {
    // SAFETY: in bounds of arrays borrowed for `'a`, and exclusive (caller).
    unsafe {
      let param = std::slice::from_raw_parts_mut(self.param.cast::<T>().add(at), len);
      let buffers = self.buffers.map(|b| {
        if b.is_null() {
          &mut [][..]
        } else {
          std::slice::from_raw_parts_mut(b.cast::<S>().add(at), len)
        }
      });
      (param, buffers)
    }
  }
}

thread_local! {
  /// Per calling thread, so that steps allocate nothing once it has seen as many tensors.
  static SPANS: std::cell::RefCell<Vec<Span>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl<T: Float, C: Copy, S: StateOf<T>> Pieces<'_, '_, T, C, S> {
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
      let first = from.max(span.start) - span.start;
      let end = to.min(span.end) - span.start;
      // SAFETY: `job` indexes the jobs `run` borrows; `coeffs` is read, never written.
      let coeffs = unsafe { std::ptr::addr_of!((*self.jobs.add(span.job)).coeffs).read() };
      // SAFETY: as `coeffs`.
      let rounding = unsafe { std::ptr::addr_of!((*self.jobs.add(span.job)).rounding).read() };
      for std::ops::Range { start: lo, end: hi } in calls::<T>(span.arrays.param as usize, first, end) {
        let len = hi - lo;
        // SAFETY: `lo + len` is within the tensor; the caller guarantees exclusive access.
        unsafe {
          let (param, buffers) = span.arrays.at::<T, S>(lo, len);
          let grad = std::slice::from_raw_parts(span.grad.cast::<T>().add(lo), len);
          non_finite |= S::update::<O>(&coeffs, param, grad, buffers, rounding.at(lo));
          if self.streaming.from_memory() {
            let (next, arrays) = (lo + len, span.arrays);
            prefetch_lines(arrays.param.cast::<T>().wrapping_add(next));
            prefetch_lines(span.grad.cast::<T>().wrapping_add(next));
            let written_only = O::written_only(&coeffs);
            for (i, b) in arrays.buffers.iter().enumerate() {
              if !b.is_null() && written_only & (1 << i) == 0 {
                prefetch_lines(b.cast::<S>().wrapping_add(next));
              }
            }
          }
        }
      }
    }
    non_finite
  }
}

/// One tensor of a staged step, as its units see it ([`Optimizer::unit`]): its scalars and
/// dimensions, and access to the parts of its arrays a unit owns.
pub struct Tensor<'s, T, C> {
  pub coeffs: C,
  pub dims: Dims,
  span: &'s StagedSpan,
  _element: std::marker::PhantomData<T>,
}

impl<T: Float, C> Tensor<'_, T, C> {
  /// The gradient, whole. Read only: no array of a step that a unit writes overlaps a gradient.
  pub fn grad(&self) -> &[T] {
    // SAFETY: `len` elements of `T` borrowed for the step; nothing writes them (see above).
    unsafe { std::slice::from_raw_parts(self.span.grad.cast::<T>(), self.span.len) }
  }

  /// The elements `range` of the parameter.
  ///
  /// # Safety
  /// No other unit of the stage may touch them, and the caller holds no other slice of them.
  #[allow(clippy::mut_from_ref)]
  pub unsafe fn param(&self, range: std::ops::Range<usize>) -> &mut [T] {
    assert!(range.start <= range.end && range.end <= self.span.len);
    // SAFETY: in bounds; the caller guarantees exclusive access.
    unsafe { std::slice::from_raw_parts_mut(self.span.param.cast::<T>().add(range.start), range.len()) }
  }

  /// The elements `range` of state buffer `index`.
  ///
  /// # Safety
  /// As [`Self::param`].
  #[allow(clippy::mut_from_ref)]
  pub unsafe fn buffer(&self, index: usize, range: std::ops::Range<usize>) -> &mut [T] {
    let (pointer, len) = self.span.buffers[index];
    assert!(range.start <= range.end && range.end <= len);
    // SAFETY: in bounds; the caller guarantees exclusive access.
    unsafe { std::slice::from_raw_parts_mut(pointer.cast::<T>().add(range.start), range.len()) }
  }

  /// State buffer `index`, whole, to read.
  ///
  /// # Safety
  /// No unit of the stage may write it.
  pub unsafe fn buffer_ref(&self, index: usize) -> &[T] {
    let (pointer, len) = self.span.buffers[index];
    // SAFETY: `len` elements borrowed for the step; the caller guarantees no one writes them.
    unsafe { std::slice::from_raw_parts(pointer.cast::<T>(), len) }
  }

  /// Partial result `slot` of the tensor.
  ///
  /// # Safety
  /// As [`Self::param`].
  #[allow(clippy::mut_from_ref)]
  pub unsafe fn partial(&self, slot: usize) -> &mut f64 {
    assert!(slot < self.span.partials.1);
    // SAFETY: in bounds; the caller guarantees exclusive access.
    unsafe { &mut *self.span.partials.0.add(slot) }
  }
}

/// Where one tensor of a staged step lies among the stage's units, with its arrays as raw parts.
struct StagedSpan {
  first_unit: usize,
  job: usize,
  len: usize,
  param: *mut u8,
  grad: *const u8,
  buffers: [(*mut u8, usize); MAX_BUFFERS],
  partials: (*mut f64, usize),
}

thread_local! {
  /// Per calling thread, so that staged steps allocate nothing once it has seen as many tensors.
  static STAGED_SPANS: std::cell::RefCell<Vec<StagedSpan>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The units of one stage, as raw parts that every thread may use at once.
struct Units<'s, 'j, T, C> {
  spans: &'s [StagedSpan],
  jobs: *const Job<'j, T, C>,
}

// SAFETY: the threads only read `spans` and each job's `coeffs` (`Copy + Sync`), and write through
// the raw parts only what their unit owns ([`Optimizer::unit`]'s contract).
unsafe impl<T, C: Sync> Sync for Units<'_, '_, T, C> {}

impl<T: Float, C: Copy> Units<'_, '_, T, C> {
  /// Runs unit `unit` (counted over every tensor) of stage `stage`.
  ///
  /// # Safety
  /// Every unit of the stage runs once; the raw parts come from the exclusive borrow of the jobs,
  /// which outlives every unit.
  unsafe fn run<O: Optimizer<Coeffs = C>>(&self, stage: usize, unit: usize) -> bool {
    let span = &self.spans[self.spans.partition_point(|s| s.first_unit <= unit) - 1];
    // SAFETY: `job` indexes the borrowed jobs; `coeffs` and `dims` are read, never written.
    let (coeffs, dims) = unsafe {
      let job = self.jobs.add(span.job);
      (std::ptr::addr_of!((*job).coeffs).read(), std::ptr::addr_of!((*job).dims).read())
    };
    let tensor = Tensor { coeffs, dims, span, _element: std::marker::PhantomData };
    // SAFETY: as this function's.
    unsafe { O::unit::<T>(stage, unit - span.first_unit, &tensor) }
  }
}

/// A staged optimizer's step ([`Optimizer::STAGES`]): each stage runs the units of every tensor
/// together, on `pool` when there is one, then ends the stage for each tensor in order. Units do
/// not depend on the thread count, and each stage's partial results are folded in a fixed order,
/// so neither do the results.
fn run_stages<O: Optimizer, T: Float>(jobs: &mut [Job<'_, T, O::Coeffs>], pool: Option<&threads::Pool>) -> bool {
  with_scratch(&STAGED_SPANS, |spans| {
    let non_finite = AtomicBool::new(false);
    for stage in 0..O::STAGES {
      spans.clear();
      let mut units = 0;
      for (index, job) in jobs.iter_mut().enumerate() {
        let count = if job.param.is_empty() { 0 } else { O::units(stage, job.dims) };
        if count == 0 {
          continue;
        }
        debug_assert_eq!(job.dims.len(), job.param.len());
        spans.push(StagedSpan {
          first_unit: units,
          job: index,
          len: job.param.len(),
          param: job.param.as_mut_ptr().cast(),
          grad: job.grad.as_ptr().cast(),
          buffers: job.buffers.each_mut().map(|b| (b.as_mut_ptr().cast(), b.len())),
          partials: (job.partials.as_mut_ptr(), job.partials.len()),
        });
        units += count;
      }
      let shared = Units { spans, jobs: jobs.as_ptr() };
      let body = |unit: usize| {
        // SAFETY: each unit runs once, and units write only what they own (the trait's contract).
        if unsafe { shared.run::<O>(stage, unit) } {
          non_finite.store(true, Ordering::Relaxed);
        }
      };
      match pool {
        Some(pool) => pool.for_each_piece(units, &body),
        None => (0..units).for_each(body),
      }
      for job in jobs.iter_mut().filter(|job| !job.param.is_empty()) {
        O::end_stage(stage, job);
      }
    }
    non_finite.into_inner()
  })
}

/// One tensor's share of a sparse step ([`run_sparse`]): the rows of a parameter its gradient
/// names, with their gradient values, and its state buffers (like the parameter; unused ones
/// empty). A parameter of shape `[rows, ...]` has rows of `row_len` elements (the product of its
/// other dimensions; 1 for a flat or 0-D one).
pub struct SparseJob<'a, T, C> {
  pub coeffs: C,
  pub param: &'a mut [T],
  pub row_len: usize,
  /// The rows to update, strictly increasing, each below `param.len() / row_len`: a gradient
  /// coalesced as PyTorch's `coalesce()` leaves it (sorted, duplicates summed).
  pub rows: &'a [u32],
  /// `rows.len() * row_len` values: the gradient of row `rows[k]` starts at `k * row_len`.
  pub values: &'a [T],
  pub buffers: [&'a mut [T]; MAX_BUFFERS],
}

impl<T, C> SparseJob<'_, T, C> {
  /// Checks what [`run_sparse`] relies on to update rows concurrently; panics otherwise.
  fn check(&self) {
    let rows = self.param.len().checked_div(self.row_len).unwrap_or(0);
    assert!(self.row_len == 0 || rows * self.row_len == self.param.len(), "the parameter is not whole rows");
    assert_eq!(self.values.len(), self.rows.len() * self.row_len, "one row of values per row");
    assert!(self.buffers.iter().all(|b| b.is_empty() || b.len() == self.param.len()), "buffers like the parameter");
    assert!(self.rows.windows(2).all(|w| w[0] < w[1]), "rows strictly increasing");
    assert!(
      self.row_len == 0 || self.rows.last().is_none_or(|&last| (last as usize) < rows),
      "rows within the parameter"
    );
  }
}

/// Updates the rows each job names, and nothing else, for an optimizer that takes row-sparse
/// gradients ([`Optimizer::SPARSE`]): its [`Optimizer::update`] over each named row of the
/// parameter and its buffers, with that row's gradient values. A step costs what its rows cost,
/// whatever the size of the tables they are rows of.
///
/// A step of fewer than [`PARALLEL_MIN_ELEMENTS`] gradient values runs on the calling thread. A
/// larger one is cut into runs of whole rows of about a piece each ([`piece_elements`]), over all
/// its tensors together, which run on the process-wide pool; the rows of a job are distinct, so
/// every element is written by one run only, and sees the same operations wherever the cuts fall:
/// the result does not depend on the thread count. Nothing is allocated once a thread has run a
/// sparse step with as many tensors before.
///
/// Returns whether any gradient value was NaN or infinite (the update went ahead regardless).
///
/// # Panics
/// If `O` runs in stages, or a job's rows are not strictly increasing and within its parameter, or
/// its arrays' lengths disagree with its rows.
pub fn run_sparse<O: Optimizer, T: Float>(jobs: &mut [SparseJob<'_, T, O::Coeffs>]) -> bool {
  assert!(jobs.is_empty() || O::STAGES == 0, "{} runs in stages, which take whole tensors", O::NAME);
  jobs.iter().for_each(SparseJob::check);
  let total: usize = jobs.iter().map(|job| job.values.len()).sum();
  let pool = if total >= PARALLEL_MIN_ELEMENTS { Some(threads::current()) } else { None };
  let Some(pool) = pool.filter(|pool| pool.threads() > 1) else {
    let mut non_finite = false;
    for job in jobs.iter_mut() {
      let n = job.row_len;
      for (k, &row) in job.rows.iter().enumerate() {
        let at = row as usize * n;
        let values = &job.values[k * n..(k + 1) * n];
        let buffers = job.buffers.each_mut().map(|b| if b.is_empty() { &mut b[..] } else { &mut b[at..at + n] });
        non_finite |= O::update(&job.coeffs, &mut job.param[at..at + n], values, buffers);
      }
    }
    return non_finite;
  };
  with_scratch(&SPARSE_SPANS, |spans| {
    let piece_len = piece_elements(total, pool.threads());
    let mut units = 0;
    for (index, job) in jobs.iter_mut().enumerate() {
      if job.values.is_empty() {
        continue;
      }
      let run_rows = (piece_len / job.row_len).max(1);
      spans.push(SparseSpan {
        first_unit: units,
        job: index,
        run_rows,
        row_len: job.row_len,
        rows: job.rows.as_ptr(),
        count: job.rows.len(),
        values: job.values.as_ptr().cast(),
        arrays: Arrays::of(job.param, &mut job.buffers),
      });
      units += job.rows.len().div_ceil(run_rows);
    }
    let shared = SparseRuns { spans, jobs: jobs.as_ptr() };
    let non_finite = AtomicBool::new(false);
    pool.for_each_piece(units, &|unit| {
      // SAFETY: each unit runs once, and units update distinct rows (see `SparseRuns::update`).
      if unsafe { shared.update::<O>(unit) } {
        non_finite.store(true, Ordering::Relaxed);
      }
    });
    non_finite.into_inner()
  })
}

/// Where one job of a sparse step lies among the step's runs of rows, with its arrays as raw parts.
struct SparseSpan {
  first_unit: usize,
  job: usize,
  /// Rows per run (the last run of the job may have fewer).
  run_rows: usize,
  row_len: usize,
  rows: *const u32,
  /// How many rows the job names.
  count: usize,
  values: *const u8,
  arrays: Arrays,
}

thread_local! {
  /// Per calling thread, so that sparse steps allocate nothing once it has seen as many tensors.
  static SPARSE_SPANS: std::cell::RefCell<Vec<SparseSpan>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The runs of rows of one sparse step, as raw parts that every thread may use at once.
struct SparseRuns<'s, 'j, T, C> {
  spans: &'s [SparseSpan],
  jobs: *const SparseJob<'j, T, C>,
}

// SAFETY: the threads only read `spans`, the rows, the values and each job's `coeffs`
// (`Copy + Sync`), and write through the pointers the rows of one run each (see `update`).
unsafe impl<T, C: Sync> Sync for SparseRuns<'_, '_, T, C> {}

impl<T: Float, C: Copy> SparseRuns<'_, '_, T, C> {
  /// Updates the rows of run `unit` (counted over every job); returns whether a gradient value
  /// among them was non-finite.
  ///
  /// # Safety
  /// Each unit runs once. The raw parts come from the exclusive borrow of the jobs, which
  /// outlives every unit, and each job's rows are distinct and within its parameter (checked by
  /// [`run_sparse`]), so that no two units touch the same element.
  unsafe fn update<O: Optimizer<Coeffs = C>>(&self, unit: usize) -> bool {
    let span = &self.spans[self.spans.partition_point(|s| s.first_unit <= unit) - 1];
    // SAFETY: `job` indexes the borrowed jobs; `coeffs` is read, never written.
    let coeffs = unsafe { std::ptr::addr_of!((*self.jobs.add(span.job)).coeffs).read() };
    let n = span.row_len;
    let first = (unit - span.first_unit) * span.run_rows;
    let last = (first + span.run_rows).min(span.count);
    let mut non_finite = false;
    for k in first..last {
      // SAFETY: `k` is below the job's row count; nothing writes the rows.
      let at = unsafe { *span.rows.add(k) } as usize * n;
      // SAFETY: row `rows[k]` is within the parameter and its buffers, and no other unit touches
      // it; its values are within `values`, which nothing writes.
      unsafe {
        let values = std::slice::from_raw_parts(span.values.cast::<T>().add(k * n), n);
        let (param, buffers) = span.arrays.at::<T, T>(at, n);
        non_finite |= O::update(&coeffs, param, values, buffers);
      }
    }
    non_finite
  }
}

/// The bytes of a step's arrays: parameters, gradients and the state buffers it uses.
fn step_bytes<T, C, S>(jobs: &[Job<'_, T, C, S>]) -> usize {
  let bytes = |job: &Job<'_, T, C, S>| {
    let buffers = job.buffers.iter().filter(|b| !b.is_empty()).count();
    job.param.len() * (2 * std::mem::size_of::<T>() + buffers * std::mem::size_of::<S>())
  };
  jobs.iter().map(bytes).sum()
}

/// Runs a step of kernel `K` whose arrays take `bytes` as [`streams`] says, and times it for the
/// prefetch trial of its kind of step while that trial is open ([`PrefetchTrial`]).
pub(crate) fn with_streaming<K: 'static, R>(bytes: usize, step: impl FnOnce(Streaming) -> R) -> R {
  let (streaming, open_trial) = streaming_of::<K>(bytes);
  let Some(key) = open_trial else { return step(streaming) };
  let start = std::time::Instant::now();
  let result = step(streaming);
  let seconds = start.elapsed().as_secs_f64();
  with_trial(key, |trial| trial.record(streaming.prefetch(), seconds / bytes as f64));
  result
}

/// Whether prefetching every array ahead speeds up steps too large for the pool's caches, tried on
/// this process's own first steps of one kernel and size class ([`TrialKey`]).
///
/// It is not the same on every machine, nor on every host of one machine type: it has sped Adam
/// up on one AMD EPYC host and slowed it down on another of the same type, and gone both ways on
/// Intel's Xeon depending on the size and on the kernel: a loop busy with divisions and square roots
/// (Adam's) gains where a light one (the memory-traffic kernel's) loses (BENCHMARKS.md, "Design
/// choices", has the measurements). So the first [`TRIES`] steps of each kind run without it and
/// the next with it, in turns, and the rest of that kind's steps keep the faster by its best
/// seconds per byte. Both ways give the same bits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PrefetchTrial {
  /// The best seconds per byte without and with prefetching.
  best: [f64; 2],
  /// Steps timed without and with.
  runs: [u32; 2],
  /// Whether to prefetch, once both have run [`TRIES`] times.
  choice: Option<bool>,
}

/// Steps of one kind timed each way before its [`PrefetchTrial`] chooses.
pub const TRIES: u32 = 4;

impl PrefetchTrial {
  /// A trial that has timed nothing.
  pub const NEW: PrefetchTrial = PrefetchTrial { best: [f64::INFINITY; 2], runs: [0; 2], choice: None };

  /// Whether the next step prefetches: the choice once made; until then, the way timed fewer
  /// times (without first).
  pub fn prefetch_next(&self) -> bool {
    self.choice.unwrap_or(self.runs[1] < self.runs[0])
  }

  /// Counts a step that took `seconds_per_byte` with or without prefetching; chooses once each
  /// way has [`TRIES`] steps.
  pub fn record(&mut self, prefetched: bool, seconds_per_byte: f64) {
    if self.choice.is_some() {
      return;
    }
    let way = usize::from(prefetched);
    self.best[way] = self.best[way].min(seconds_per_byte);
    self.runs[way] += 1;
    if self.runs.iter().all(|&r| r >= TRIES) {
      self.choice = Some(self.best[1] < self.best[0]);
    }
  }

  /// The choice, once made.
  pub fn choice(&self) -> Option<bool> {
    self.choice
  }
}

/// The kind of step a [`PrefetchTrial`] is for: one kernel (an optimizer), one factor of 4 in size
/// (steps of 16-64 MB share one, 64-256 MB the next), one pool size (1, 2, 3, 4 or more threads)
/// and one way the arrays come (from the last-level cache or from memory).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TrialKey {
  kernel: TypeId,
  class: u8,
  pool: u8,
  cached: bool,
}

impl TrialKey {
  /// The kind of a step of kernel `K` whose arrays take `bytes` on a pool of `threads`, where the
  /// processor can prefetch (x86-64); `None` elsewhere, where steps do not prefetch.
  fn of<K: 'static>(bytes: usize, threads: usize, cached: bool) -> Option<TrialKey> {
    if !cfg!(target_arch = "x86_64") {
      return None;
    }
    let class = (usize::BITS - 1 - bytes.max(1).leading_zeros()) / 2;
    Some(TrialKey { kernel: TypeId::of::<K>(), class: class as u8, pool: threads.clamp(1, 4) as u8, cached })
  }
}

/// Kinds of step tried at most in one process; steps of further kinds are not prefetched.
const TRIAL_SLOTS: usize = 128;

/// The trials of the kinds of step this process has run, in the order it first ran them.
static TRIALS: std::sync::Mutex<[(Option<TrialKey>, PrefetchTrial); TRIAL_SLOTS]> =
  std::sync::Mutex::new([(None, PrefetchTrial::NEW); TRIAL_SLOTS]);

/// Runs `f` on the trial of `key`, begun if there is none yet; `None` if every slot is taken (or a
/// panic while the trials were held poisoned them, which their code cannot raise).
fn with_trial<R>(key: TrialKey, f: impl FnOnce(&mut PrefetchTrial) -> R) -> Option<R> {
  let mut trials = TRIALS.lock().ok()?;
  let slot = trials.iter().position(|(k, _)| k.is_none_or(|k| k == key))?;
  let (k, trial) = &mut trials[slot];
  *k = Some(key);
  Some(f(trial))
}

/// How the arrays of a step reach the cores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Streaming {
  /// They stay in the last-level cache between steps: ordinary loads and stores.
  Cached,
  /// As [`Streaming::Cached`], and the kernels also prefetch every array ahead
  /// ([`simd::streaming`]): for steps in the last-level cache but several times larger than the
  /// pool's own caches, where that was found faster for the kind of step ([`PrefetchTrial`]).
  CachedPrefetched,
  /// They stream from memory: arrays a kernel only writes are stored around the caches
  /// ([`nontemporal`]), and after each kernel call the next call's first lines are asked for.
  Memory,
  /// As [`Streaming::Memory`], and the kernels also prefetch every array ahead
  /// ([`simd::streaming`]), where that was found faster for the kind of step ([`PrefetchTrial`]).
  Prefetched,
}

impl Streaming {
  /// Whether the arrays stream from memory.
  pub fn from_memory(self) -> bool {
    matches!(self, Streaming::Memory | Streaming::Prefetched)
  }

  /// Whether the kernels prefetch ahead.
  pub fn prefetch(self) -> bool {
    matches!(self, Streaming::CachedPrefetched | Streaming::Prefetched)
  }
}

/// How the arrays of a step of kernel `K` that take `bytes` in all reach the cores: from memory
/// when they take more than half the last-level cache (which other processes share), so that they
/// do not stay in cache between steps. Steps that fit in the caches of the pool's cores (up to
/// [`OWN_CACHES`] times their second-level caches) run slower with prefetching; larger steps
/// prefetch as the trial of their kind says ([`PrefetchTrial`]).
pub fn streams<K: 'static>(bytes: usize) -> Streaming {
  streaming_of::<K>(bytes).0
}

/// Steps of up to this many times the second-level caches of the pool's cores do not prefetch:
/// their arrays stay largely in those caches between steps, and a piece's prefetches run into the
/// next piece, which another core updates (BENCHMARKS.md, "Design choices").
pub const OWN_CACHES: usize = 2;

/// [`streams`], and the kind of the step while its trial is still open.
fn streaming_of<K: 'static>(bytes: usize) -> (Streaming, Option<TrialKey>) {
  streaming_on::<K>(bytes, threads::num_threads)
}

/// [`streaming_of`] on a pool of `threads()` threads, asked only for a step larger than one core's
/// caches: the pool's size costs a lock, which small steps need not take.
fn streaming_on<K: 'static>(bytes: usize, threads: impl FnOnce() -> usize) -> (Streaming, Option<TrialKey>) {
  let cached = stays_cached(bytes);
  let plain = if cached { Streaming::Cached } else { Streaming::Memory };
  let own = OWN_CACHES * second_level_cache_bytes();
  if cached && bytes <= own {
    return (plain, None);
  }
  let threads = threads();
  if cached && bytes <= own * threads {
    return (plain, None);
  }
  let Some(key) = TrialKey::of::<K>(bytes, threads, cached) else { return (plain, None) };
  let Some((prefetch, open)) = with_trial(key, |t| (t.prefetch_next(), t.choice().is_none())) else {
    return (plain, None);
  };
  let streaming = match (cached, prefetch) {
    (_, false) => plain,
    (true, true) => Streaming::CachedPrefetched,
    (false, true) => Streaming::Prefetched,
  };
  (streaming, open.then_some(key))
}

/// Whether a step whose arrays take `bytes` stays in the last-level cache between steps: it takes
/// at most half of it (other processes share it).
pub fn stays_cached(bytes: usize) -> bool {
  bytes <= last_level_cache_bytes() / 2
}

/// The size of the largest cache of CPU 0 (Linux's sysfs), or 32 MiB where it cannot be read.
fn last_level_cache_bytes() -> usize {
  static BYTES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
  *BYTES.get_or_init(|| caches().into_iter().max().map_or(32 << 20, |(_, bytes)| bytes))
}

/// The size of CPU 0's second-level cache (Linux's sysfs), or 1 MiB where it cannot be read.
fn second_level_cache_bytes() -> usize {
  static BYTES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
  *BYTES.get_or_init(|| caches().into_iter().find(|&(level, _)| level == 2).map_or(1 << 20, |(_, bytes)| bytes))
}

/// CPU 0's caches as Linux's sysfs lists them: (level, bytes).
fn caches() -> Vec<(u32, usize)> {
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
    .collect()
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::engine::state::{Element, ParamState};
  use crate::testing::{same_bits, values};
  use crate::{Adagrad, Adam};

  #[test]
  fn prefetch_trial_alternates_then_keeps_the_faster() {
    for prefetch_faster in [true, false] {
      let mut trial = PrefetchTrial::NEW;
      let mut ways = Vec::new();
      for k in 0..2 * TRIES {
        let way = trial.prefetch_next();
        ways.push(way);
        // The faster way's steps take 1 ns per byte, the other's a little over 2.
        let seconds = if way == prefetch_faster { 1e-9 } else { 2e-9 + f64::from(k) * 1e-12 };
        assert_eq!(trial.choice(), None);
        trial.record(way, seconds);
      }
      assert_eq!(ways, (0..2 * TRIES).map(|k| k % 2 == 1).collect::<Vec<_>>(), "without first, in turns");
      assert_eq!(trial.choice(), Some(prefetch_faster));
      // Chosen for good: later steps take the choice whatever they record.
      trial.record(!prefetch_faster, 1e-15);
      assert_eq!(trial.choice(), Some(prefetch_faster));
      assert_eq!(trial.prefetch_next(), prefetch_faster);
    }
  }

  /// The calls cover a range once, in order, none longer than CALL_ELEMENTS; for a range of at
  /// least CALL_ELEMENTS every call after the first starts on a 64-byte line, and the first is
  /// shorter than a line; a shorter range, or a parameter not aligned to its element size, is cut
  /// as before: from its start, every CALL_ELEMENTS.
  #[test]
  fn calls_start_on_cache_lines_after_the_first() {
    fn check<T>(size: usize) {
      let base = 1 << 20;
      for offset in (0..64).step_by(size) {
        for (from, to) in [(0, 10_000), (5, 4096 + 5), (3, 3 + 4095), (100, 100), (7, 20_000), (0, 1)] {
          let param = base + offset;
          let cut: Vec<_> = calls::<T>(param, from, to).collect();
          let mut next = from;
          for c in &cut {
            assert!(c.start == next && c.end > c.start && c.end - c.start <= CALL_ELEMENTS, "{cut:?}");
            next = c.end;
          }
          assert_eq!(next, to, "{cut:?} covers {from}..{to}");
          let line = |i: usize| (param + i * size).is_multiple_of(64);
          if to - from >= CALL_ELEMENTS {
            let first = cut[0].end - cut[0].start;
            assert!(cut[1..].iter().all(|c| line(c.start)), "size {size} offset {offset}: {cut:?}");
            assert!(line(from) || first * size < 64, "{cut:?}");
          } else {
            assert!(cut.len() <= 1, "{cut:?}");
          }
        }
      }
      // A parameter that is not aligned to its element size is cut as before.
      let cut: Vec<_> = calls::<T>(base + 1, 0, 10_000).collect();
      assert_eq!(cut, vec![0..4096, 4096..8192, 8192..10_000]);
    }
    check::<f32>(4);
    check::<f64>(8);
  }

  /// Steps through the engine give the reference's bits wherever the parameter starts within a
  /// cache line (the calls are cut on line boundaries, [`calls`]), on one thread's path and the
  /// pool's, in both precisions.
  fn same_bits_at_every_offset<O: Optimizer + Default, T: Element>() {
    for len in [CALL_ELEMENTS + 21, PARALLEL_MIN_ELEMENTS * 2 + 37] {
      for offset in 0..64 / std::mem::size_of::<T>() {
        let mut backing = values::<T>(len + offset, 3);
        let (mut engine_state, mut reference_state) = (ParamState::default(), ParamState::default());
        let mut reference = backing[offset..].to_vec();
        for step in 0..3 {
          let grad = values::<T>(len, step + 4);
          crate::testing::step_once(O::default(), &mut engine_state, &mut backing[offset..], &grad, true);
          crate::testing::step_once(O::default(), &mut reference_state, &mut reference, &grad, false);
        }
        assert!(same_bits(&backing[offset..], &reference), "{} len {len} offset {offset}", O::NAME);
      }
    }
  }

  #[test]
  fn steps_give_the_same_bits_wherever_the_parameter_starts_in_a_line() {
    same_bits_at_every_offset::<Adam, f32>();
    same_bits_at_every_offset::<Adam, f64>();
    same_bits_at_every_offset::<crate::Lion, f32>();
    same_bits_at_every_offset::<Adagrad, f64>();
  }

  #[test]
  fn size_classes_are_factors_of_four() {
    if !cfg!(target_arch = "x86_64") {
      assert!(TrialKey::of::<Adam>(1 << 30, 2, false).is_none());
      return;
    }
    for cached in [false, true] {
      let same = |a: usize, b: usize| TrialKey::of::<Adam>(a, 2, cached) == TrialKey::of::<Adam>(b, 2, cached);
      assert!(same(16 << 20, (64 << 20) - 1));
      assert!(!same((64 << 20) - 1, 64 << 20));
      assert!(same(64 << 20, (256 << 20) - 1));
      assert!(same(usize::MAX, usize::MAX / 2));
    }
    // Steps from cache and from memory of one size class, steps of two kernels and steps on two
    // pool sizes are tried apart; pools of 4 threads and more share trials.
    let key = |cached: bool, threads: usize| TrialKey::of::<Adam>(64 << 20, threads, cached);
    assert_ne!(key(true, 2), key(false, 2));
    assert_ne!(key(false, 2), TrialKey::of::<Adagrad>(64 << 20, 2, false));
    assert_ne!(key(false, 1), key(false, 2));
    assert_eq!(key(false, 4), key(false, 64));
  }

  /// Each kernel keeps the way that is faster for it: two kinds of step tried side by side, the
  /// one faster with prefetching and the other without, choose apart. The pool's size is given,
  /// not read: other tests change the pool meanwhile.
  #[test]
  fn trials_are_kept_per_kernel() {
    if !cfg!(target_arch = "x86_64") {
      return;
    }
    struct Light;
    struct Heavy;
    let (bytes, threads) = (1 << 40, 7);
    let light = TrialKey::of::<Light>(bytes, threads, false).unwrap();
    let heavy = TrialKey::of::<Heavy>(bytes, threads, false).unwrap();
    for _ in 0..2 * TRIES {
      for (key, faster_prefetched) in [(light, false), (heavy, true)] {
        let way = with_trial(key, |t| t.prefetch_next()).unwrap();
        let seconds = if way == faster_prefetched { 1e-9 } else { 2e-9 };
        with_trial(key, |t| t.record(way, seconds)).unwrap();
      }
    }
    assert_eq!(with_trial(light, |t| t.choice()).unwrap(), Some(false));
    assert_eq!(with_trial(heavy, |t| t.choice()).unwrap(), Some(true));
    assert_eq!(streaming_on::<Light>(bytes, || threads), (Streaming::Memory, None));
    assert_eq!(streaming_on::<Heavy>(bytes, || threads), (Streaming::Prefetched, None));
  }

  /// Steps that fit in the pool's own caches never prefetch and never ask the pool's size when one
  /// core's caches hold them; steps in the last-level cache but larger go through the trial of
  /// their kind (where the processor can prefetch), as steps from memory do, each keeping its way
  /// of reaching the cores.
  #[test]
  fn only_steps_beyond_the_pools_caches_are_tried() {
    struct Kernel;
    let threads = 2;
    let core = OWN_CACHES * second_level_cache_bytes();
    let cached = last_level_cache_bytes() / 2;
    for bytes in [1, 4096, core.min(cached)] {
      let asked = || panic!("{bytes} bytes: the pool's size was asked");
      assert_eq!(streaming_on::<Kernel>(bytes, asked), (Streaming::Cached, None), "{bytes} bytes");
    }
    for bytes in [core + 1, core * threads] {
      if bytes <= cached {
        assert_eq!(streaming_on::<Kernel>(bytes, || threads), (Streaming::Cached, None), "{bytes} bytes");
      }
    }
    let tried = |bytes: usize| {
      let (streaming, open) = streaming_on::<Kernel>(bytes, || threads);
      let key = TrialKey::of::<Kernel>(bytes, threads, bytes <= cached);
      assert_eq!(open, key, "{bytes} bytes: a trial that has chosen nothing is open");
      (streaming, key.and_then(|key| with_trial(key, |t| t.prefetch_next())))
    };
    if core * threads < cached {
      let (streaming, prefetch) = tried(cached);
      assert!(!streaming.from_memory(), "{streaming:?}");
      assert_eq!(streaming.prefetch(), prefetch.unwrap_or(false), "{streaming:?}");
    }
    let (streaming, prefetch) = tried(cached + 1);
    assert!(streaming.from_memory(), "{streaming:?}");
    assert_eq!(streaming.prefetch(), prefetch.unwrap_or(false), "{streaming:?}");
  }

  /// Steps give the same bits prefetching or not, from cache or from memory.
  fn same_bits_every_way<O: Optimizer + Default>() {
    let n = PIECE_ELEMENTS * 3 + 17;
    let config = O::default();
    let mut results = Vec::new();
    for streaming in [Streaming::Cached, Streaming::CachedPrefetched, Streaming::Memory, Streaming::Prefetched] {
      let mut param = values::<f32>(n, 1);
      let mut state = ParamState::default();
      for t in 1..=5 {
        let grad = values::<f32>(n, t + 1);
        state.step += 1;
        let coeffs = config.coeffs(state.step);
        let buffers = state.buffers_mut::<f32>(&[n; MAX_BUFFERS], config.buffers_used());
        run_streaming::<O, f32, f32>(&mut [Job::flat(coeffs, &mut param, &grad, buffers)], streaming);
      }
      results.push(param);
    }
    assert!(results.iter().all(|r| same_bits(&results[0], r)), "{}", O::NAME);
  }

  #[test]
  fn streaming_ways_give_the_same_bits() {
    same_bits_every_way::<Adam>();
    same_bits_every_way::<Adagrad>();
  }
}
