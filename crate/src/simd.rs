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
  std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512vl")
}

/// Whether this CPU runs the AVX2+FMA variants.
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn has_avx2_fma() -> bool {
  std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// `multiversion!(fn name<T: Float, const A: bool, ...>(args...) => kernel);` defines `name`,
/// which calls the `#[inline(always)]` function `kernel` with the same generics and arguments,
/// compiled for the widest vector instructions this CPU has.
macro_rules! multiversion {
  (fn $name:ident<T: Float $(, const $c:ident: bool)*>($($arg:ident: $ty:ty),* $(,)?) => $kernel:ident) => {
    fn $name<T: Float $(, const $c: bool)*>($($arg: $ty),*) {
      #[cfg(target_arch = "x86_64")]
      {
        #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
        unsafe fn avx512<T: Float $(, const $c: bool)*>($($arg: $ty),*) {
          $kernel::<T $(, $c)*>($($arg),*)
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2<T: Float $(, const $c: bool)*>($($arg: $ty),*) {
          $kernel::<T $(, $c)*>($($arg),*)
        }
        if $crate::simd::has_avx512() {
          // SAFETY: the CPU supports every feature `avx512` is compiled with.
          return unsafe { avx512::<T $(, $c)*>($($arg),*) };
        }
        if $crate::simd::has_avx2_fma() {
          // SAFETY: the CPU supports every feature `avx2` is compiled with.
          return unsafe { avx2::<T $(, $c)*>($($arg),*) };
        }
      }
      $kernel::<T $(, $c)*>($($arg),*)
    }
  };
}
pub(crate) use multiversion;
