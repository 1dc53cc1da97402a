//! Per-parameter optimizer state: the step count, a few carried scalars and the state buffers,
//! created on a parameter's first step (as PyTorch does) in that parameter's dtype, or in
//! bfloat16 for a float32 parameter of an optimizer made with `stateDtype: 'bfloat16'`
//! ([`crate::engine::bf16`]).

use crate::engine::bf16::Bf16;
use crate::engine::disjoint::DisjointMut;
use crate::engine::placed::Placed;
use crate::engine::run::{MAX_BUFFERS, MAX_SCALARS};
use crate::engine::threads;
use crate::float::{Dtype, Float};

/// The state of one parameter.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParamState {
  /// Updates applied so far; PyTorch's `state['step']`.
  pub step: u64,
  /// The optimizer's `SCALARS` (NAdam's `mu_product`), zero before the first step; unused ones stay zero.
  pub scalars: [f64; MAX_SCALARS],
  pub buffers: Buffers,
  /// Where a staged optimizer's stages pass partial results on; not state a checkpoint keeps.
  pub partials: Vec<f64>,
}

/// State buffers of one dtype, in the optimizer's `BUFFERS` order.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Buffers {
  /// Before the first step.
  #[default]
  Empty,
  F32(Vec<Placed<f32>>),
  F64(Vec<Placed<f64>>),
  /// bfloat16 state of a float32 parameter.
  Bf16(Vec<Placed<Bf16>>),
}

/// Why a parameter cannot be stepped with the state it has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateMismatch {
  /// The state is of dtype `state` ([`Buffers::name`]), which a parameter of `param` cannot use.
  Dtype { state: &'static str, param: Dtype },
  /// Buffer `buffer` holds `state` elements where the parameter needs `expected`.
  Length { buffer: usize, state: usize, expected: usize },
}

impl Buffers {
  /// The dtype of the parameters this state is for: float32 for bfloat16 state too.
  pub fn dtype(&self) -> Option<Dtype> {
    match self {
      Buffers::Empty => None,
      Buffers::F32(_) | Buffers::Bf16(_) => Some(Dtype::Float32),
      Buffers::F64(_) => Some(Dtype::Float64),
    }
  }

  /// The dtype the buffers hold, as PyTorch names it: `"float32"`, `"float64"` or `"bfloat16"`.
  pub fn name(&self) -> Option<&'static str> {
    match self {
      Buffers::Empty => None,
      Buffers::Bf16(_) => Some("bfloat16"),
      _ => self.dtype().map(Dtype::name),
    }
  }

  /// The length of each buffer that exists.
  pub fn lens(&self) -> impl Iterator<Item = usize> + '_ {
    let count = self.count();
    (0..count).map(move |i| match self {
      Buffers::Empty => 0,
      Buffers::F32(b) => b[i].len(),
      Buffers::F64(b) => b[i].len(),
      Buffers::Bf16(b) => b[i].len(),
    })
  }

  pub fn is_empty(&self) -> bool {
    matches!(self, Buffers::Empty)
  }

  /// How many buffers exist: the most any step has asked for so far.
  pub fn count(&self) -> usize {
    match self {
      Buffers::Empty => 0,
      Buffers::F32(b) => b.len(),
      Buffers::F64(b) => b.len(),
      Buffers::Bf16(b) => b.len(),
    }
  }
}

impl ParamState {
  /// Whether a parameter of `dtype` can be stepped with this state, whose buffers must have the
  /// lengths `expected` gives (one per buffer of the optimizer, for the parameter's shape).
  pub fn check(&self, dtype: Dtype, expected: &[usize]) -> Result<(), StateMismatch> {
    if let (Some(param), Some(state)) = (self.buffers.dtype(), self.buffers.name()) {
      if param != dtype {
        return Err(StateMismatch::Dtype { state, param: dtype });
      }
    }
    match self.buffers.lens().zip(expected).enumerate().find(|(_, (len, expected))| len != *expected) {
      Some((buffer, (state, &expected))) => Err(StateMismatch::Length { buffer, state, expected }),
      None => Ok(()),
    }
  }

  /// The first `count` buffers as slices, creating zeroed ones of the lengths `lens` gives that
  /// do not exist yet, plus empty slices up to [`MAX_BUFFERS`]. Call only after
  /// [`ParamState::check`] passed for `T` and these lengths.
  pub fn buffers_mut<T: Stored>(&mut self, lens: &[usize], count: usize) -> [&mut [T]; MAX_BUFFERS] {
    self.buffers.slices_mut(lens, count)
  }

  /// The buffers, as [`ParamState::buffers_mut`] gives them, and the partial results of a step,
  /// made `partials` long.
  pub fn step_parts<T: Stored>(
    &mut self,
    lens: &[usize],
    count: usize,
    partials: usize,
  ) -> ([&mut [T]; MAX_BUFFERS], &mut [f64]) {
    self.partials.resize(partials, 0.0);
    (self.buffers.slices_mut(lens, count), &mut self.partials)
  }
}

impl Buffers {
  fn slices_mut<T: Stored>(&mut self, lens: &[usize], count: usize) -> [&mut [T]; MAX_BUFFERS] {
    if self.is_empty() {
      *self = T::wrap(Vec::new());
    }
    let buffers = T::unwrap(self).expect("state dtype checked before the step");
    while buffers.len() < count {
      let index = buffers.len();
      buffers.push(Placed::zeroed(lens[index], index));
    }
    let mut slices = buffers.iter_mut().take(count).map(|b| &mut **b);
    std::array::from_fn(|_| slices.next().unwrap_or(&mut []))
  }
}

/// The size of a page: [`zeroed`] writes once into each.
const PAGE_BYTES: usize = 4096;

thread_local! {
  static LAZY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, in which [`zeroed`] leaves new buffers' pages unmapped, for a caller that must not
/// hold its thread while they are mapped: `stepAsync` makes a first step's buffers on the event
/// loop's thread, and each of its slices maps the pages of its part ([`map_pages`]).
pub fn lazily<R>(f: impl FnOnce() -> R) -> R {
  /// Puts the flag back, also when `f` panics (a caller may catch that and go on).
  struct Restore(bool);
  impl Drop for Restore {
    fn drop(&mut self) {
      LAZY.with(|lazy| lazy.set(self.0));
    }
  }
  let _restore = Restore(LAZY.with(|lazy| lazy.replace(true)));
  f()
}

/// Pages [`zeroed`] hands to a thread at a time (2 MB).
const PAGES_PER_PIECE: usize = 512;

/// Element types whose all-zero bits are their zero, so that a buffer of them can come from the
/// system's zeroed memory ([`zeroed`]).
///
/// # Safety
/// `ZEROED`'s bits must all be zero.
pub unsafe trait ZeroBits: Copy + Send + Sync {
  /// The value whose bits are all zero: what a new buffer holds.
  const ZEROED: Self;
}

// SAFETY: +0.0, +0.0, 0 and bfloat16's +0.0 have all-zero bits.
unsafe impl ZeroBits for f32 {
  const ZEROED: Self = 0.0;
}
unsafe impl ZeroBits for f64 {
  const ZEROED: Self = 0.0;
}
unsafe impl ZeroBits for u8 {
  const ZEROED: Self = 0;
}
unsafe impl ZeroBits for Bf16 {
  const ZEROED: Self = Bf16(0);
}

/// A new buffer of `len` zeros ([`ZeroBits::ZEROED`]), its memory mapped by writes before any step
/// reads it.
///
/// The memory comes zeroed from the system and untouched (`calloc`, whatever the element type:
/// `vec![zero; len]` does that only for primitive types, and wrote a bfloat16 buffer element by
/// element on the calling thread), so a state buffer's first step used to read each 4 KB page
/// before writing it: the read maps the shared zero page, and the write then copies it and must
/// flush the old mapping from every other core running a thread of the process, an interrupt per
/// page, which made a large first step many times slower than the next (BENCHMARKS.md, "Design
/// choices", has the measurements). Here each page is written once first, on the pool's threads
/// (each starting on its own share, as a step's threads do), which maps it once, after the buffer
/// is advised to take huge pages ([`advise_huge_pages`]).
pub fn zeroed<T: ZeroBits>(len: usize) -> Vec<T> {
  let mut buffer = zeroed_memory::<T>(len);
  advise_huge_pages(buffer.as_ptr().cast(), std::mem::size_of_val(buffer.as_slice()));
  if !LAZY.with(|lazy| lazy.get()) {
    map_pages(&mut buffer, T::ZEROED);
  }
  buffer
}

/// `len` elements of zeroed memory from the global allocator, not written.
fn zeroed_memory<T: ZeroBits>(len: usize) -> Vec<T> {
  if len == 0 || std::mem::size_of::<T>() == 0 {
    return Vec::new();
  }
  let layout = std::alloc::Layout::array::<T>(len).expect("a state buffer's size overflowed");
  // SAFETY: the layout's size is not zero (checked above).
  let memory = unsafe { std::alloc::alloc_zeroed(layout) };
  if memory.is_null() {
    std::alloc::handle_alloc_error(layout);
  }
  // SAFETY: allocated by the global allocator with the layout of `len` elements of `T`, which are
  // all initialised: all-zero bits are a valid `T` (`ZeroBits`).
  unsafe { Vec::from_raw_parts(memory.cast::<T>(), len, len) }
}

/// The huge pages [`advise_huge_pages`] asks for: 2 MiB, the size x86-64 and AArch64 (with 4 KiB
/// pages) map with one page-table entry.
pub const HUGE_PAGE_BYTES: usize = 2 << 20;

/// Asks the system to back the whole 2 MiB-aligned stretches of the `bytes` bytes from `start`
/// with huge pages (Linux's transparent huge pages, `madvise(MADV_HUGEPAGE)`), and says whether it
/// took the advice. Pages not yet written then come as huge pages where the system has them; ones
/// already written stay as they are until the system's background collapsing reaches them.
///
/// A step of a large parameter reads each 4 KiB page of each of its arrays, and each page costs a
/// walk of the page tables the first time the step meets it. In a training loop, the forward and
/// backward passes in between evict both the processor's translations and the page tables' own
/// cache lines, so every page costs a walk to memory; one 2 MiB page takes one walk for 512 of
/// them. The state buffers are fastoptim's own memory (the parameters and gradients are the
/// caller's, and stay as they are), and a new buffer's pages are written first when it is made
/// ([`zeroed`]), so they come as huge pages from the start. Linux's default policy (`madvise`)
/// gives huge pages only to memory advised this way; with `never` the advice changes nothing,
/// and other systems are not asked.
pub fn advise_huge_pages(start: *const u8, bytes: usize) -> bool {
  let first = (start as usize).next_multiple_of(HUGE_PAGE_BYTES);
  let end = (start as usize).saturating_add(bytes) / HUGE_PAGE_BYTES * HUGE_PAGE_BYTES;
  if end <= first {
    return false;
  }
  #[cfg(target_os = "linux")]
  {
    // SAFETY: the range lies within memory the caller owns (`bytes` from `start`); advice changes
    // how its pages are backed, never what they hold.
    unsafe { libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE) == 0 }
  }
  #[cfg(not(target_os = "linux"))]
  false
}

/// Writes `zero` into the first element of every page `elements` lies on, on the pool's threads:
/// what maps the pages of a new buffer ([`zeroed`]), or of the part of one a `stepAsync` slice
/// is about to update. Every element must hold `zero` already.
pub fn map_pages<T: Copy + Send + Sync>(elements: &mut [T], zero: T) {
  let size = std::mem::size_of::<T>();
  if size == 0 || !PAGE_BYTES.is_multiple_of(size) || elements.is_empty() {
    return;
  }
  let start = elements.as_ptr() as usize;
  // The element that starts each page after the first (elements are size-aligned, and a page is
  // a multiple of the size), counted from `start`'s page.
  let first_boundary = (start / PAGE_BYTES + 1) * PAGE_BYTES;
  let boundaries = (start + std::mem::size_of_val(elements)).saturating_sub(first_boundary).div_ceil(PAGE_BYTES);
  let skip = (first_boundary - start) / size;
  let per_page = PAGE_BYTES / size;
  let base = DisjointMut::of(elements);
  // SAFETY: the first element; no piece below writes it. Volatile, so that a store of the value
  // it already holds is not left out.
  unsafe { std::ptr::write_volatile(&raw mut base.part(0..1)[0], zero) };
  threads::for_each_piece(boundaries.div_ceil(PAGES_PER_PIECE), &|piece| {
    for page in piece * PAGES_PER_PIECE..((piece + 1) * PAGES_PER_PIECE).min(boundaries) {
      let at = skip + page * per_page;
      // SAFETY: the element starting page `page + 1` of the range (within `elements`: it starts
      // before their end), written by this piece only; `elements` is borrowed until the pass
      // ends. Volatile, as the first.
      unsafe { std::ptr::write_volatile(&raw mut base.part(at..at + 1)[0], zero) };
    }
  });
}

/// What state buffers can hold: `f32`, `f64` or [`Bf16`].
pub trait Stored: ZeroBits + PartialEq + std::fmt::Debug + 'static {
  fn wrap(buffers: Vec<Placed<Self>>) -> Buffers;
  fn unwrap(buffers: &mut Buffers) -> Option<&mut Vec<Placed<Self>>>;
}

/// A [`Float`] (which state buffers can hold): a parameter's dtype.
pub trait Element: Float {}

impl<T: Float> Element for T {}

impl Stored for Bf16 {
  fn wrap(buffers: Vec<Placed<Self>>) -> Buffers {
    Buffers::Bf16(buffers)
  }
  fn unwrap(buffers: &mut Buffers) -> Option<&mut Vec<Placed<Self>>> {
    match buffers {
      Buffers::Bf16(b) => Some(b),
      _ => None,
    }
  }
}

impl Stored for f32 {
  fn wrap(buffers: Vec<Placed<Self>>) -> Buffers {
    Buffers::F32(buffers)
  }
  fn unwrap(buffers: &mut Buffers) -> Option<&mut Vec<Placed<Self>>> {
    match buffers {
      Buffers::F32(b) => Some(b),
      _ => None,
    }
  }
}

impl Stored for f64 {
  fn wrap(buffers: Vec<Placed<Self>>) -> Buffers {
    Buffers::F64(buffers)
  }
  fn unwrap(buffers: &mut Buffers) -> Option<&mut Vec<Placed<Self>>> {
    match buffers {
      Buffers::F64(b) => Some(b),
      _ => None,
    }
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  /// How many of the pages `buffer` spans are resident: mapped, as a write maps them.
  #[cfg(target_os = "linux")]
  fn resident_pages<T>(buffer: &[T]) -> (usize, usize) {
    let start = buffer.as_ptr() as usize / PAGE_BYTES * PAGE_BYTES;
    let end = (buffer.as_ptr() as usize + std::mem::size_of_val(buffer)).next_multiple_of(PAGE_BYTES);
    let mut map = vec![0u8; (end - start) / PAGE_BYTES];
    // SAFETY: `map` has one byte per page of the range, which lies in this process's mappings.
    let status = unsafe { libc::mincore(start as *mut libc::c_void, end - start, map.as_mut_ptr()) };
    assert_eq!(status, 0, "mincore failed");
    (map.iter().filter(|&&page| page & 1 == 1).count(), map.len())
  }

  #[test]
  fn new_buffers_are_zero_at_every_length_on_any_pool_size() {
    let before = crate::threads::num_threads();
    for threads in [1, 2, 3] {
      crate::threads::set_num_threads(threads).unwrap();
      for len in [0, 1, 1023, 1024, 1025, 4097, (2 << 20) / 4 + 3, 3 << 20] {
        assert!(zeroed::<f32>(len).iter().all(|&x| x.to_bits() == 0), "f32, {len}, {threads} threads");
        assert!(zeroed::<f64>(len).iter().all(|&x| x.to_bits() == 0), "f64, {len}, {threads} threads");
        assert!(zeroed::<u8>(len).iter().all(|&x| x == 0), "u8, {len}, {threads} threads");
        assert!(zeroed::<Bf16>(len).iter().all(|&x| x == Bf16(0)), "bf16, {len}, {threads} threads");
        assert_eq!(zeroed::<f32>(len).len(), len);
      }
    }
    crate::threads::set_num_threads(before).unwrap();
  }

  #[test]
  fn a_parameters_large_buffers_start_in_different_cache_lines_of_their_pages() {
    for dtype_bytes in [4, 8, 2] {
      let mut state = ParamState::default();
      let lens = [(4 << 20) / dtype_bytes; MAX_BUFFERS];
      let addresses: Vec<usize> = match dtype_bytes {
        4 => state.buffers_mut::<f32>(&lens, 3).iter().map(|b| b.as_ptr() as usize).collect(),
        8 => state.buffers_mut::<f64>(&lens, 3).iter().map(|b| b.as_ptr() as usize).collect(),
        _ => state.buffers_mut::<Bf16>(&lens, 3).iter().map(|b| b.as_ptr() as usize).collect(),
      };
      let lines: Vec<usize> = addresses.iter().map(|address| address % PAGE_BYTES / 64).collect();
      assert!(lines[0] != lines[1] && lines[1] != lines[2] && lines[0] != lines[2], "{dtype_bytes} bytes: {lines:?}");
    }
  }

  #[test]
  fn pages_are_mapped_within_the_range_only() {
    for (lo, hi) in [(0, 1), (0, 1024), (1, 1025), (1000, 5000), (1023, 1024 * 9 + 1), (5, 6), (4096, 40960)] {
      let mut buffer = vec![7.0f32; 50_000];
      buffer[lo..hi].fill(0.0);
      map_pages(&mut buffer[lo..hi], 0.0);
      assert!(buffer[..lo].iter().chain(&buffer[hi..]).all(|&x| x == 7.0), "{lo}..{hi}");
      assert!(buffer[lo..hi].iter().all(|&x| x == 0.0), "{lo}..{hi}");
    }
  }

  #[cfg(target_os = "linux")]
  #[test]
  fn a_part_of_a_lazy_buffer_is_mapped_page_by_page() {
    // New memory from the system, as above.
    let len = 10 << 20;
    let mut lazy = lazily(|| zeroed::<f32>(len));
    let (lo, hi) = (3 << 20, (3 << 20) + 10_000);
    map_pages(&mut lazy[lo..hi], 0.0);
    let (mapped, pages) = resident_pages(&lazy[lo..hi]);
    assert_eq!(mapped, pages, "the range's pages");
    // 4 MB short of the range: a transparent huge page holding its start maps no page there.
    let (before, _) = resident_pages(&lazy[..lo - (1 << 20)]);
    assert!(before < 16, "{before} pages well before the range are mapped");
  }

  #[cfg(target_os = "linux")]
  #[test]
  fn a_new_buffer_is_mapped_before_any_step_reads_it_unless_made_lazily() {
    // 40 MB: above glibc's largest mmap threshold (32 MiB), so the allocation is new memory from
    // the system, never heap memory that an earlier allocation has touched.
    let len = 10 << 20;
    let untouched = vec![0.0f32; len];
    let (resident, pages) = resident_pages(&untouched);
    let mapped = zeroed::<f32>(len);
    let (written, all) = resident_pages(&mapped);
    assert_eq!(written, all, "every page of a new state buffer is mapped");
    // The check can fail: calloc's pages are not mapped until touched.
    assert!(resident < pages / 2, "{resident} of {pages} pages of an untouched allocation are mapped");
    let lazy = lazily(|| zeroed::<f32>(len));
    let (mapped, pages) = resident_pages(&lazy);
    assert!(mapped < pages / 2, "{mapped} of {pages} pages of a buffer made lazily are mapped");
    assert!(lazy.iter().all(|&x| x == 0.0));
    // bfloat16 too: its buffers come from zeroed memory, not written element by element.
    let lazy = lazily(|| zeroed::<Bf16>(2 * len));
    let (mapped, pages) = resident_pages(&lazy);
    assert!(mapped < pages / 2, "{mapped} of {pages} pages of a bfloat16 buffer made lazily are mapped");
    assert!(lazy.iter().all(|&x| x == Bf16(0)));
    // The flag is put back, also after a panic.
    assert!(std::panic::catch_unwind(|| lazily(|| panic!("in lazily"))).is_err());
    let (written, all) = resident_pages(&zeroed::<f32>(len));
    assert_eq!(written, all, "mapped again after lazily");
  }

  /// Whether the mapping that holds `address` is advised to take huge pages (`hg` among its
  /// `VmFlags` in /proc/self/smaps).
  #[cfg(target_os = "linux")]
  fn advised_huge(address: usize) -> bool {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("/proc/self/smaps");
    let mut inside = false;
    for line in smaps.lines() {
      let first = line.split_whitespace().next().unwrap_or("");
      if let Some((lo, hi)) = first.split_once('-').filter(|_| !first.ends_with(':')) {
        let (lo, hi) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16));
        inside = matches!((lo, hi), (Ok(lo), Ok(hi)) if lo <= address && address < hi);
      } else if inside && first == "VmFlags:" {
        return line.split_whitespace().any(|flag| flag == "hg");
      }
    }
    panic!("no mapping holds {address:#x}")
  }

  /// An address inside the first whole huge page of a buffer of at least 4 MiB from `start`.
  #[cfg(target_os = "linux")]
  fn interior_of(start: *const u8) -> usize {
    (start as usize).next_multiple_of(HUGE_PAGE_BYTES) + 4096
  }

  #[cfg(target_os = "linux")]
  #[test]
  fn large_buffers_are_advised_to_take_huge_pages() {
    // 12 MiB: whole 2 MiB stretches, wherever the allocation starts.
    let len = 3 << 20;
    let new = zeroed::<f32>(len);
    let values: Vec<f32> = (0..len).map(|i| i as f32).collect();
    let copied = Placed::copied(&values, 1);
    assert_eq!(&copied[..], &values[..]);
    // A kernel without transparent huge pages refuses the advice, and an emulator (qemu's user
    // mode, which runs the AArch64 tests) may take it without passing it on; the buffers work as
    // before either way. So the advice is first asked for memory of the test's own (not the
    // buffers under test), and looked for in /proc/self/smaps.
    let probe = vec![0u8; 6 << 20];
    if !advise_huge_pages(probe.as_ptr(), probe.len()) || !advised_huge(interior_of(probe.as_ptr())) {
      return;
    }
    assert!(advised_huge(interior_of(new.as_ptr().cast())), "a new buffer of {len} elements");
    assert!(advised_huge(interior_of(copied.as_ptr().cast())), "a copied buffer of {len} elements");
    let bf16 = zeroed::<Bf16>(2 * len);
    assert!(advised_huge(interior_of(bf16.as_ptr().cast())), "a bfloat16 buffer");
    // Nothing to advise in a buffer without a whole aligned stretch.
    let small = zeroed::<f32>(1000);
    assert!(!advise_huge_pages(small.as_ptr().cast(), std::mem::size_of_val(small.as_slice())));
    assert!(!advise_huge_pages(HUGE_PAGE_BYTES as *const u8, HUGE_PAGE_BYTES - 1));
  }

  #[test]
  fn buffers_appear_zeroed_on_first_use_and_keep_their_dtype() {
    let mut state = ParamState::default();
    assert_eq!(state.check(Dtype::Float32, &[5, 5, 5]), Ok(()));
    let [a, b, c] = state.buffers_mut::<f32>(&[5, 5, 5], 2);
    assert_eq!((a.len(), b.len(), c.len()), (5, 5, 0));
    a[0] = 1.0;
    assert_eq!(
      state.check(Dtype::Float64, &[5, 5, 5]),
      Err(StateMismatch::Dtype { state: "float32", param: Dtype::Float64 })
    );
    assert_eq!(
      state.check(Dtype::Float32, &[5, 4, 5]),
      Err(StateMismatch::Length { buffer: 1, state: 5, expected: 4 })
    );
    let [a, _, c] = state.buffers_mut::<f32>(&[5, 5, 5], 3);
    assert_eq!((a[0], c.len()), (1.0, 5));
    let mut factored = ParamState::default();
    let [row, col, _] = factored.buffers_mut::<f64>(&[3, 4], 2);
    assert_eq!((row.len(), col.len()), (3, 4));
  }
}
