//! Stores that go around the caches, for arrays a step writes without reading.
//!
//! A store to a cache line that is not in cache first reads the line from memory (a read for
//! ownership), so an array a kernel only writes costs a read and a write per element, and the
//! read is a store miss, which the hardware prefetchers serve worse than a load miss: ASGD's
//! average, a copy of the parameter until averaging starts, took its step at 0.4-0.65x the speed
//! of memory for that (BENCHMARKS.md, "Design choices"). A non-temporal store writes whole lines
//! to memory without reading them. It also leaves them out of cache, which is right only when the
//! step's arrays do not stay in cache between steps anyway, so the engine turns these stores on
//! ([`with`]) for steps whose arrays outgrow the last-level cache ([`crate::engine::run::streams`]).

thread_local! {
  static ON: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with this thread's [`copy`] (and any kernel that asks [`is_on`], as ASGD's one-pass
/// AVX-512 step does) storing around the caches or not, and makes the stores it left in flight
/// visible to every thread before it returns (a non-temporal store is weakly ordered: without the
/// fence another thread could see the step done before the values).
pub fn with<R>(on: bool, f: impl FnOnce() -> R) -> R {
  let before = ON.with(|s| s.replace(on));
  let result = f();
  ON.with(|s| s.set(before));
  if on {
    fence();
  }
  result
}

/// Whether this thread's [`copy`] stores around the caches.
#[inline(always)]
pub fn is_on() -> bool {
  ON.with(|s| s.get())
}

#[inline(always)]
fn fence() {
  // SAFETY: SSE2 is part of x86-64; a fence has no operands.
  #[cfg(target_arch = "x86_64")]
  unsafe {
    std::arch::x86_64::_mm_sfence()
  };
}

/// Copies `src` into `dst` (of one length): with non-temporal stores while this thread is
/// [`with`] them on, with ordinary ones otherwise. The bits are those of `copy_from_slice`.
#[inline]
pub fn copy<T: Copy>(dst: &mut [T], src: &[T]) {
  assert_eq!(dst.len(), src.len());
  #[cfg(target_arch = "x86_64")]
  {
    let size = std::mem::size_of::<T>();
    if is_on() && size != 0 && 64 % size == 0 {
      // Ordinary stores up to the first 64-byte boundary of `dst`, then whole lines, then the rest.
      let offset = dst.as_ptr().cast::<u8>().align_offset(64);
      if offset % size == 0 {
        let head = (offset / size).min(dst.len());
        let lines = (dst.len() - head) * size / 64;
        let body = head + lines * 64 / size;
        dst[..head].copy_from_slice(&src[..head]);
        // SAFETY: `dst[head..]` starts on a 64-byte boundary, and it and `src[head..]` hold at
        // least `lines` whole lines.
        unsafe { copy_lines(dst[head..].as_mut_ptr().cast(), src[head..].as_ptr().cast(), lines) };
        dst[body..].copy_from_slice(&src[body..]);
        return;
      }
    }
  }
  dst.copy_from_slice(src);
}

/// Copies `lines` 64-byte lines from `src` to `dst` with non-temporal stores.
///
/// # Safety
/// `dst` is 64-byte aligned; both hold `lines * 64` bytes.
#[cfg(target_arch = "x86_64")]
#[inline]
unsafe fn copy_lines(dst: *mut u8, src: *const u8, lines: usize) {
  use std::arch::x86_64::*;
  #[target_feature(enable = "avx512f")]
  unsafe fn avx512(dst: *mut u8, src: *const u8, lines: usize) {
    for line in 0..lines {
      // SAFETY: within both arrays (the caller's contract); `dst` is aligned as the store needs.
      unsafe { _mm512_stream_si512(dst.add(line * 64).cast(), _mm512_loadu_si512(src.add(line * 64).cast())) };
    }
  }
  unsafe fn sse2(dst: *mut u8, src: *const u8, lines: usize) {
    for at in (0..lines * 64).step_by(16) {
      // SAFETY: as above.
      unsafe { _mm_stream_si128(dst.add(at).cast(), _mm_loadu_si128(src.add(at).cast())) };
    }
  }
  if crate::engine::simd::has_avx512() {
    // SAFETY: the CPU has AVX-512F; the caller's contract.
    unsafe { avx512(dst, src, lines) }
  } else {
    // SAFETY: the caller's contract (SSE2 is part of x86-64).
    unsafe { sse2(dst, src, lines) }
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  fn copies_exactly<T: Copy + PartialEq + std::fmt::Debug>(make: impl Fn(usize) -> T) {
    let src: Vec<T> = (0..300).map(&make).collect();
    let mut dst: Vec<T> = (0..300).map(|i| make(i + 1000)).collect();
    for on in [false, true] {
      // Every start of the destination against a cache line, and lengths around whole lines.
      for start in 0..17 {
        for len in [0, 1, 7, 15, 16, 17, 31, 32, 33, 64, 100, 255, 283 - start] {
          dst.iter_mut().enumerate().for_each(|(i, d)| *d = make(i + 1000));
          with(on, || copy(&mut dst[start..start + len], &src[3..3 + len]));
          assert_eq!(dst[start..start + len], src[3..3 + len], "on {on}, start {start}, len {len}");
          assert!(dst[..start].iter().enumerate().all(|(i, d)| *d == make(i + 1000)), "before the copy");
          let after = start + len;
          assert!(dst[after..].iter().enumerate().all(|(i, d)| *d == make(after + i + 1000)), "after the copy");
        }
      }
    }
  }

  #[test]
  fn copy_writes_the_source_and_nothing_else() {
    copies_exactly(|i| (i as f32).sin());
    copies_exactly(|i| (i as f64).cos());
    copies_exactly(|i| [i as u8, 0, 1]);
  }

  #[test]
  fn with_restores_the_setting() {
    assert!(!is_on());
    with(true, || {
      assert!(is_on());
      with(false, || assert!(!is_on()));
      assert!(is_on());
    });
    assert!(!is_on());
  }
}
