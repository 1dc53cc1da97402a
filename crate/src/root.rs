//! Square roots with the bits of `sqrt`, by multiply-adds instead of the divide unit.
//!
//! Adam's loop takes a square root and a division per element, and on x86 cores both go to one
//! divide unit that finishes a 16-lane vector of either only every 10-12 cycles: with the
//! division by √(1 − β₂ᵗ) already taken off it ([`crate::divide`]), that unit bounds the loop
//! whenever its arrays are in cache. The square root of a `f32` in [2⁻¹⁰⁰, 2¹²⁶) is had exactly
//! as `sqrt` rounds it from the 14-bit reciprocal square root estimate that AVX-512
//! provides, one Newton step and one correction, seven multiply-adds in all, which the two FMA
//! ports take beside the loop's other work:
//!
//! ```text
//! y = rsqrt14(v)                       ≈ 1/√v, relative error below 2⁻¹⁴
//! s = v·y,  h = y/2                    ≈ √v and 1/(2√v)
//! r = 1/2 − s·h                        (fused)
//! s = s + s·r,  h = h + h·r            errors now about 2⁻²⁸
//! s = s + (v − s·s)·h                  the remainder v − s·s exact (fused), one rounding
//! ```
//!
//! The last step rounds correctly because a square root of a `f32` is never closer than about
//! 2⁻²⁵ ulp to a midpoint between two `f32`s, far more than the error left. Rather than resting on
//! that argument, the tests compare the sequence with `sqrt` on every `f32` in the range. Outside
//! it (±0, where the estimate is ∞ and the sequence gives NaN; subnormals, small or huge values,
//! ∞, NaN, negatives) the caller takes the instruction. An Adam second moment is below the range
//! only where every gradient so far was 0 or smaller than about 10⁻¹⁵.

/// The least `f32` whose square root [`avx512::sqrt`] gives exactly: 2⁻¹⁰⁰.
pub const LOW: f32 = 7.888_609_e-31;
/// The `f32` from which on [`avx512::sqrt`] is not used: 2¹²⁶.
pub const HIGH: f32 = 8.507_059e37;

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
  use std::arch::x86_64::*;

  use super::{HIGH, LOW};

  /// Whether every lane of every vector of `vs` is in [[`LOW`], [`HIGH`]), where [`sqrt`] is
  /// exact: per vector one subtraction and one comparison (`bits − low` below the span as
  /// unsigned integers: low ≤ bits < high), and one test of the mask for them all.
  ///
  /// # Safety
  /// AVX-512F.
  #[inline(always)]
  pub unsafe fn all_in_range<const N: usize>(vs: [__m512; N]) -> bool {
    unsafe {
      let low = _mm512_set1_epi32(LOW.to_bits() as i32);
      let span = _mm512_set1_epi32((HIGH.to_bits() - LOW.to_bits()) as i32);
      let mut inside = 0xffff;
      for v in vs {
        inside = _mm512_mask_cmplt_epu32_mask(inside, _mm512_sub_epi32(_mm512_castps_si512(v), low), span);
      }
      inside == 0xffff
    }
  }

  /// `√v` for every lane, as `_mm512_sqrt_ps` rounds it, where [`all_in_range`] holds (the module's
  /// sequence).
  ///
  /// # Safety
  /// AVX-512F and FMA.
  #[inline(always)]
  pub unsafe fn sqrt(v: __m512) -> __m512 {
    unsafe {
      let half = _mm512_set1_ps(0.5);
      let y = _mm512_rsqrt14_ps(v);
      let s = _mm512_mul_ps(v, y);
      let h = _mm512_mul_ps(y, half);
      let r = _mm512_fnmadd_ps(s, h, half);
      let s = _mm512_fmadd_ps(s, r, s);
      let h = _mm512_fmadd_ps(h, r, h);
      _mm512_fmadd_ps(_mm512_fnmadd_ps(s, s, v), h, s)
    }
  }

  #[cfg(test)]
  mod tests {
    use super::*;

    #[target_feature(enable = "avx512f,avx512vl,fma")]
    unsafe fn mismatches(from: u32, to: u32, stride: u32) -> (u64, Option<u32>) {
      let (mut count, mut first) = (0, None);
      let mut bits = from;
      while bits < to {
        let lanes: [u32; 16] = std::array::from_fn(|j| (bits + j as u32 * stride).min(to - 1));
        let v = unsafe { _mm512_loadu_ps(lanes.as_ptr().cast()) };
        let (ours, theirs) = unsafe { (sqrt(v), _mm512_sqrt_ps(v)) };
        let differ = _mm512_cmpneq_epi32_mask(_mm512_castps_si512(ours), _mm512_castps_si512(theirs));
        if differ != 0 {
          count += u64::from(differ.count_ones());
          first = first.or(Some(lanes[differ.trailing_zeros() as usize]));
        }
        bits = bits.saturating_add(16 * stride);
      }
      (count, first)
    }

    #[test]
    fn the_sequence_gives_the_bits_of_sqrt_on_every_f32_in_the_range() {
      if !crate::engine::simd::has_avx512() {
        return;
      }
      // Every f32 in [2⁻¹⁰⁰, 2¹²⁶) in an optimised build (about a second); every 61st otherwise.
      let stride = if cfg!(debug_assertions) { 61 } else { 1 };
      // SAFETY: the CPU has AVX-512 (checked above).
      let (count, first) = unsafe { mismatches(LOW.to_bits(), HIGH.to_bits(), stride) };
      assert_eq!(count, 0, "first at {:#010x}", first.unwrap_or(0));
    }

    #[test]
    fn the_range_check_admits_exactly_the_range() {
      if !crate::engine::simd::has_avx512() {
        return;
      }
      let check = |x: f32| unsafe { all_in_range([_mm512_set1_ps(x)]) };
      for x in [LOW, 1e-20, 1.0, 3.0e37, f32::from_bits(HIGH.to_bits() - 1)] {
        assert!(check(x), "{x:e} is in range");
      }
      let below = f32::from_bits(LOW.to_bits() - 1);
      for x in [0.0, -0.0, below, 1e-40, f32::MIN_POSITIVE, HIGH, f32::MAX, f32::INFINITY, f32::NAN, -1.0, -LOW] {
        assert!(!check(x), "{x:e} is out of range");
      }
      // One lane of one vector out of range is enough.
      let mut lanes = [1.0f32; 16];
      lanes[9] = -0.0;
      let ones = unsafe { _mm512_set1_ps(1.0) };
      let odd = unsafe { _mm512_loadu_ps(lanes.as_ptr()) };
      assert!(unsafe { all_in_range([ones, ones, ones]) });
      for k in 0..3 {
        let mut vs = [ones; 3];
        vs[k] = odd;
        assert!(!unsafe { all_in_range(vs) }, "vector {k}");
      }
      // And the ends are as documented.
      assert_eq!(LOW, 2f32.powi(-100));
      assert_eq!(HIGH, 2f32.powi(126));
    }
  }
}
