//! Runtime selection of the instruction set a kernel is compiled for.
//!
//! The published binary targets baseline x86-64, so a kernel body written once (an
//! `#[inline(always)]` loop over slices) is compiled again inside functions that enable
//! AVX-512 or AVX2+FMA, and the best one this CPU supports is picked at run time. All
//! variants perform the same IEEE operations per element, so they give the same bits.

/// Calls `f` from a function compiled with the widest vector instructions available.
#[inline(always)]
pub fn with_best_isa<R>(f: impl FnOnce() -> R) -> R {
  #[cfg(target_arch = "x86_64")]
  {
    #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
    unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
      f()
    }
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
      f()
    }
    if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512vl") {
      // SAFETY: the CPU supports every feature the function is compiled with.
      return unsafe { avx512(f) };
    }
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
      // SAFETY: as above.
      return unsafe { avx2(f) };
    }
  }
  f()
}
