//! Runtime selection of the instruction set a kernel is compiled for.
//!
//! The published binary targets baseline x86-64. A kernel body is written once, as an
//! `#[inline(always)]` loop over slices; [`multiversion!`] defines a function that calls it from
//! copies compiled with AVX-512 or with AVX2+FMA enabled (where the forced inlining makes the
//! loop vectorise with those instructions, and `mul_add` a single `vfmadd`) and picks the best
//! one this CPU supports at run time. Every variant performs the same IEEE operations per
//! element, so they give the same bits.

/// Whether this CPU runs the AVX-512 variants.
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn has_avx512() -> bool {
  #[cfg(test)]
  if !allowed(Level::Avx512) {
    return false;
  }
  std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512vl")
}

/// Whether this CPU runs the AVX-512 variants of kernels over a state type, which have AVX-512 BW
/// too ([`multiversion!`]).
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn has_avx512_bw() -> bool {
  has_avx512() && std::arch::is_x86_feature_detected!("avx512bw")
}

/// Whether this CPU runs the AVX2+FMA variants.
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn has_avx2_fma() -> bool {
  #[cfg(test)]
  if !allowed(Level::Avx2) {
    return false;
  }
  std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// The variants [`multiversion!`] chooses from, in rising order: the caps of [`capped`].
#[cfg(test)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
  /// Baseline code, vectorised by the compiler for the target's own instructions.
  Portable,
  /// x86-64 AVX2 and FMA.
  Avx2,
  /// x86-64 AVX-512.
  Avx512,
}

#[cfg(test)]
thread_local! {
  static CAP: std::cell::Cell<Level> = const { std::cell::Cell::new(Level::Avx512) };
}

/// Whether variants of `level` may run on this thread (all may, but under [`capped`]).
#[cfg(all(test, target_arch = "x86_64"))]
fn allowed(level: Level) -> bool {
  CAP.with(|cap| level <= cap.get())
}

/// Runs `f` with kernels called on this thread using no variant above `cap` (the others run on
/// this thread only; the pool's threads are not capped).
#[cfg(test)]
pub fn capped<R>(cap: Level, f: impl FnOnce() -> R) -> R {
  with_set(&CAP, cap, f)
}

/// Every level this CPU runs, best first: the caps a test runs its kernels under.
#[cfg(test)]
pub fn levels() -> Vec<Level> {
  let best = capped(Level::Avx512, || {
    #[cfg(target_arch = "x86_64")]
    {
      if has_avx512() {
        return Level::Avx512;
      }
      if has_avx2_fma() {
        return Level::Avx2;
      }
    }
    Level::Portable
  });
  [Level::Avx512, Level::Avx2, Level::Portable].into_iter().filter(|&l| l <= best).collect()
}

/// `multiversion!(fn name<T: Float, const A: bool, ...>(args...) => kernel);` defines `name`,
/// which calls the `#[inline(always)]` function `kernel` with the same generics and arguments,
/// compiled for the widest vector instructions this CPU has. While this thread is
/// [`streaming`], the call is cut into blocks of [`STREAM_BLOCK_BYTES`] per array, each array
/// prefetched [`PREFETCH_AHEAD_BYTES`] ahead of the block being updated (see [`KernelArg`]).
///
/// `multiversion!(fn name<T: Float, S: Storage<T>, const A: bool, ...>(args...) => kernel);` is
/// the same for a kernel whose state is stored as `S` ([`crate::engine::bf16::Storage`]). Where
/// `S` converts (bfloat16), its AVX-512 copy also has AVX-512 BW, whose byte and word operations
/// the conversions use, and runs where the CPU has that (elsewhere the AVX2 copy does); where `S`
/// is `T`, the copies and the choice are those of the first form.
macro_rules! multiversion {
  (fn $name:ident<T: Float $(, const $c:ident: bool)*>($($arg:ident: $ty:ty),* $(,)?) => $kernel:ident) => {
    $crate::engine::simd::multiversion!(@define $name [T: Float $(, const $c: bool)*] [T $(, $c)*] []
      ($($arg: $ty),*) => $kernel);
  };
  (fn $name:ident<T: Float, S: Storage<T> $(, const $c:ident: bool)*>($($arg:ident: $ty:ty),* $(,)?) => $kernel:ident) => {
    $crate::engine::simd::multiversion!(@define $name
      [T: Float, S: $crate::engine::bf16::Storage<T> $(, const $c: bool)*] [T, S $(, $c)*] [S]
      ($($arg: $ty),*) => $kernel);
  };
  (@define $name:ident [$($generics:tt)*] [$($names:tt)*] [$($storage:ident)?] ($($arg:ident: $ty:ty),*) => $kernel:ident) => {
    #[allow(clippy::too_many_arguments)]
    fn $name<$($generics)*>($($arg: $ty),*) {
      #[inline(always)]
      #[allow(unused_mut, clippy::too_many_arguments)]
      fn blocks<$($generics)*>($(mut $arg: $ty),*) {
        if !$crate::engine::simd::is_streaming() {
          return $kernel::<$($names)*>($($arg),*);
        }
        let n = 0 $(.max($crate::engine::simd::KernelArg::len(&$arg)))*;
        let block = $crate::engine::simd::STREAM_BLOCK_BYTES / std::mem::size_of::<T>();
        let mut from = 0;
        while from < n {
          let to = (from + block).min(n);
          $($crate::engine::simd::KernelArg::prefetch(&$arg, from, to);)*
          $kernel::<$($names)*>($($crate::engine::simd::KernelArg::part(&mut $arg, from, to)),*);
          from = to;
        }
      }
      #[cfg(target_arch = "x86_64")]
      {
        #[allow(clippy::too_many_arguments)]
        #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
        unsafe fn avx512<$($generics)*>($($arg: $ty),*) {
          blocks::<$($names)*>($($arg),*)
        }
        #[allow(clippy::too_many_arguments)]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2<$($generics)*>($($arg: $ty),*) {
          blocks::<$($names)*>($($arg),*)
        }
        $crate::engine::simd::multiversion!(@avx512bw [$($storage)?] [$($generics)*] [$($names)*] ($($arg: $ty),*));
        let converts = $crate::engine::simd::multiversion!(@converts [$($storage)?]);
        if !converts && $crate::engine::simd::has_avx512() {
          // SAFETY: the CPU supports every feature `avx512` is compiled with.
          return unsafe { avx512::<$($names)*>($($arg),*) };
        }
        if $crate::engine::simd::has_avx2_fma() {
          // SAFETY: the CPU supports every feature `avx2` is compiled with.
          return unsafe { avx2::<$($names)*>($($arg),*) };
        }
      }
      blocks::<$($names)*>($($arg),*)
    }
  };
  (@converts []) => { false };
  (@converts [$storage:ident]) => { <$storage as $crate::engine::bf16::Storage<T>>::CONVERTS };
  (@avx512bw [] $($rest:tt)*) => {};
  (@avx512bw [$storage:ident] [$($generics:tt)*] [$($names:tt)*] ($($arg:ident: $ty:ty),*)) => {
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx2,fma")]
    unsafe fn avx512bw<$($generics)*>($($arg: $ty),*) {
      blocks::<$($names)*>($($arg),*)
    }
    if <$storage as $crate::engine::bf16::Storage<T>>::CONVERTS && $crate::engine::simd::has_avx512_bw() {
      // SAFETY: the CPU supports every feature `avx512bw` is compiled with.
      return unsafe { avx512bw::<$($names)*>($($arg),*) };
    }
  };
}
pub(crate) use multiversion;

/// `dispatch!(kernel::<T, ...>[A: a, B: b, ...](args...))` calls `kernel::<T, ..., A, B, ...>(args...)`
/// with each runtime flag `a`, `b`, ... turned into the `bool` const parameter it is named after:
/// one call per combination, so that a kernel's loop tests none of them. The names say which
/// parameter each flag fills, in the kernel's order.
macro_rules! dispatch {
  ($kernel:ident::<$($T:ty),*>[$($flag:ident: $value:expr),+ $(,)?]($($arg:expr),* $(,)?)) => {
    $crate::engine::simd::dispatch!(@branch $kernel [$($T),*] [] [$($value),+] ($($arg),*))
  };
  (@branch $kernel:ident [$($T:ty),*] [$($known:tt)*] [] ($($arg:expr),*)) => {
    $kernel::<$($T,)* $($known),*>($($arg),*)
  };
  (@branch $kernel:ident [$($T:ty),*] [$($known:tt)*] [$value:expr $(, $rest:expr)*] $args:tt) => {
    if $value {
      $crate::engine::simd::dispatch!(@branch $kernel [$($T),*] [$($known)* true] [$($rest),*] $args)
    } else {
      $crate::engine::simd::dispatch!(@branch $kernel [$($T),*] [$($known)* false] [$($rest),*] $args)
    }
  };
}
pub(crate) use dispatch;

/// The index of the fastest of `variants` ways to do the same work (`run(i)` does it the `i`th
/// way): each runs `calls` times in a timed batch, in turns, over `rounds` rounds, and the best
/// batch counts; the first of equals wins. How the engine chooses, once per process, among ways
/// that give the same bits but whose speed depends on the processor.
pub fn fastest(variants: usize, rounds: usize, calls: usize, mut run: impl FnMut(usize)) -> usize {
  let mut best = vec![std::time::Duration::MAX; variants];
  for _ in 0..rounds {
    for (i, b) in best.iter_mut().enumerate() {
      let start = std::time::Instant::now();
      for _ in 0..calls {
        run(i);
      }
      *b = (*b).min(start.elapsed());
    }
  }
  best.iter().enumerate().min_by_key(|&(_, d)| *d).map_or(0, |(i, _)| i)
}

/// Elements of each array a kernel call updates while streaming: 64 `f32` (four cache lines).
pub const STREAM_BLOCK_BYTES: usize = 256;

/// How far ahead of the block being updated its arrays are prefetched while streaming.
pub const PREFETCH_AHEAD_BYTES: usize = 4096;

thread_local! {
  static STREAMING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with this thread's kernels streaming or not.
///
/// A loop busy with divisions and square roots keeps too few cache lines in flight for the
/// hardware prefetchers to stream memory at full speed, and prefetching every array a few KB ahead
/// closes most of the gap to a trivial loop over the same arrays (BENCHMARKS.md, "Design choices").
/// In cache the prefetches only cost, so the engine turns streaming on for large steps only.
pub fn streaming<R>(on: bool, f: impl FnOnce() -> R) -> R {
  with_set(&STREAMING, on, f)
}

/// Runs `f` with this thread's `key` set to `value`, then sets it back.
fn with_set<V: Copy + 'static, R>(
  key: &'static std::thread::LocalKey<std::cell::Cell<V>>,
  value: V,
  f: impl FnOnce() -> R,
) -> R {
  let before = key.with(|cell| cell.replace(value));
  let result = f();
  key.with(|cell| cell.set(before));
  result
}

/// Whether this thread's kernels are streaming.
#[inline(always)]
pub fn is_streaming() -> bool {
  STREAMING.with(|s| s.get())
}

/// An argument of a kernel, as [`multiversion!`] cuts calls into blocks: slices are cut to the
/// block and prefetched ahead of it, anything else is passed through.
pub trait KernelArg {
  type Part<'b>
  where
    Self: 'b;
  /// How many elements the argument holds; 0 if it is not a slice.
  fn len(&self) -> usize {
    0
  }
  /// The argument for elements `from..to` (an empty slice stays empty).
  fn part<'b>(&'b mut self, from: usize, to: usize) -> Self::Part<'b>;
  /// Asks for the cache lines [`PREFETCH_AHEAD_BYTES`] past elements `from..to`.
  fn prefetch(&self, _from: usize, _to: usize) {}
}

impl<T> KernelArg for &mut [T] {
  type Part<'b>
    = &'b mut [T]
  where
    Self: 'b;
  #[inline(always)]
  fn len(&self) -> usize {
    <[T]>::len(self)
  }
  #[inline(always)]
  fn part(&mut self, from: usize, to: usize) -> &mut [T] {
    if self.is_empty() {
      &mut []
    } else {
      &mut self[from..to]
    }
  }
  #[inline(always)]
  fn prefetch(&self, from: usize, to: usize) {
    if !self.is_empty() {
      prefetch(self.as_ptr(), from, to)
    }
  }
}

impl<'a, T> KernelArg for &'a [T] {
  type Part<'b>
    = &'a [T]
  where
    Self: 'b;
  #[inline(always)]
  fn len(&self) -> usize {
    <[T]>::len(self)
  }
  #[inline(always)]
  fn part<'b>(&'b mut self, from: usize, to: usize) -> &'a [T] {
    if self.is_empty() {
      &[]
    } else {
      &self[from..to]
    }
  }
  #[inline(always)]
  fn prefetch(&self, from: usize, to: usize) {
    if !self.is_empty() {
      prefetch(self.as_ptr(), from, to)
    }
  }
}

impl<T, const N: usize> KernelArg for [&mut [T]; N] {
  type Part<'b>
    = [&'b mut [T]; N]
  where
    Self: 'b;
  #[inline(always)]
  fn len(&self) -> usize {
    self.iter().map(|s| s.len()).max().unwrap_or(0)
  }
  #[inline(always)]
  fn part(&mut self, from: usize, to: usize) -> [&mut [T]; N] {
    self.each_mut().map(|s| if s.is_empty() { &mut [][..] } else { &mut s[from..to] })
  }
  #[inline(always)]
  fn prefetch(&self, from: usize, to: usize) {
    for s in self {
      if !s.is_empty() {
        prefetch(s.as_ptr(), from, to)
      }
    }
  }
}

/// A kernel's scalars (`&Scalars<T>`): the same for every block.
impl<'a, S: Sized> KernelArg for &'a S {
  type Part<'b>
    = &'a S
  where
    Self: 'b;
  #[inline(always)]
  fn part<'b>(&'b mut self, _from: usize, _to: usize) -> &'a S {
    self
  }
}

/// An output a kernel accumulates into (`&mut bool`): the same for every block.
impl<S: Sized> KernelArg for &mut S {
  type Part<'b>
    = &'b mut S
  where
    Self: 'b;
  #[inline(always)]
  fn part(&mut self, _from: usize, _to: usize) -> &mut S {
    self
  }
}

/// Asks for the cache lines [`PREFETCH_AHEAD_BYTES`] past elements `from..to` of `base`.
#[inline(always)]
fn prefetch<T>(base: *const T, from: usize, to: usize) {
  let start = base.wrapping_add(from).cast::<i8>().wrapping_add(PREFETCH_AHEAD_BYTES);
  for offset in (0..(to - from) * std::mem::size_of::<T>()).step_by(64) {
    prefetch_line(start.wrapping_add(offset));
  }
}

/// Asks for the cache line holding `line` into L1: a hint, which never faults, whatever the
/// address (x86-64 `prefetcht0`, AArch64 `prfm pldl1keep`; nothing elsewhere).
#[inline(always)]
pub(crate) fn prefetch_line(line: *const i8) {
  // SAFETY: a prefetch is a hint; it never faults, whatever the address.
  #[cfg(target_arch = "x86_64")]
  unsafe {
    std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(line)
  };
  // SAFETY: as above.
  #[cfg(target_arch = "aarch64")]
  unsafe {
    std::arch::asm!("prfm pldl1keep, [{0}]", in(reg) line, options(nostack, preserves_flags, readonly))
  };
  #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
  let _ = line;
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn a_cap_keeps_this_thread_below_it() {
    let levels = levels();
    assert_eq!(levels.last(), Some(&Level::Portable));
    #[cfg(target_arch = "x86_64")]
    {
      capped(Level::Portable, || assert!(!has_avx512() && !has_avx512_bw() && !has_avx2_fma()));
      capped(Level::Avx2, || {
        assert!(!has_avx512() && !has_avx512_bw());
        assert_eq!(has_avx2_fma(), levels.contains(&Level::Avx2));
      });
      assert_eq!(has_avx512(), levels.contains(&Level::Avx512));
    }
  }
}
