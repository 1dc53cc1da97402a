//! The 8-bit kernels' vector code: the instruction set a kernel runs with, and the per-block
//! work every 8-bit optimizer shares (dequantizing codes, quantizing a block by its absmax).
//!
//! Dequantizing looks up the map's 256 entries (1 KB), times the block's absmax. Quantizing
//! divides each value by the block's absmax and looks the quotient up in the map's packed range
//! table ([`QuantMap::code`]): one lookup, one comparison and one selection. The two widths do
//! both their own way, each what measured faster on the processors that run it:
//!
//! - AVX-512 (Intel's cores): gathers; approximate quotients (one multiplication) with a redo in
//!   exact ones, a multiplication with exact corrections ([`BlockDivisor`], Markstein's sequence
//!   of [`crate::divide`]), for a block with a lane near a step boundary, so that the divide unit
//!   is left to the updates' own divisions and square roots.
//! - AVX2 (also AMD's Zen 3, whose gathers are slower than scalar loads): eight loads per
//!   vector, and the divide instruction; a block's quotients first, then its loads
//!   (`avx2::quantize`).
//! - NEON (every AArch64 processor): AVX2's scheme in 4 lanes, four loads per vector and the
//!   divide instruction (`neon::quantize`). The portable kernel compiles to scalar code there
//!   (its lookups keep the compiler from vectorising it), so this is the only 8-bit kernel on ARM
//!   whose square roots and divisions take four lanes an instruction.

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
use crate::quantize::{QuantMap, BLOCK};

/// The instruction set an 8-bit kernel runs with: the portable kernel, then each architecture's
/// levels in rising order ([`Level::runs_here`] says which this CPU has).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
  /// Plain Rust, vectorised by the compiler where it can (every target).
  Portable,
  /// AArch64 NEON: 4 lanes.
  Neon,
  /// x86-64 AVX2 and FMA: 8 lanes.
  Avx2,
  /// x86-64 AVX-512 (F, VL): 16 lanes.
  Avx512,
}

impl Level {
  /// The best level this CPU runs.
  pub fn detected() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
      if crate::engine::simd::has_avx512() {
        return Level::Avx512;
      }
      if crate::engine::simd::has_avx2_fma() {
        return Level::Avx2;
      }
    }
    if cfg!(target_arch = "aarch64") {
      return Level::Neon;
    }
    Level::Portable
  }

  /// Whether this CPU runs this level's kernels.
  pub fn runs_here(self) -> bool {
    match self {
      Level::Portable => true,
      Level::Neon => cfg!(target_arch = "aarch64"),
      Level::Avx2 | Level::Avx512 => cfg!(target_arch = "x86_64") && self <= Level::detected(),
    }
  }

  /// Every level this CPU runs, best first.
  pub fn available() -> Vec<Level> {
    [Level::Avx512, Level::Avx2, Level::Neon, Level::Portable].into_iter().filter(|l| l.runs_here()).collect()
  }
}

/// Division by a block's absmax `top`, as `/` rounds, without a divide instruction.
///
/// `x / top = (x·s) / (top·s)` for the power of two `s` that brings `top·s` into [0.5, 1)
/// (into [2⁻²³, 1) for a subnormal `top`), both products exact; the quotient by `top·s` is
/// [`crate::divide::ExactDivisor`]'s sequence, exact for dividends of magnitude 0 or in
/// [2⁻⁹⁰, 2⁹⁰]. Here every dividend is at most 1 in magnitude (`|x| ≤ top`). One whose `x·s` is
/// below 2⁻⁹⁰ (or rounded as a subnormal) gets a quotient that may be off, but of magnitude
/// below 2⁻⁶⁰ and of either sign, and every quotient of magnitude below 2⁻²⁵ has the same code
/// in both maps (no step starts there: tested), so the codes are those of `/`. −0 gives +0,
/// which has −0's code. NaN gives NaN.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, Debug)]
pub(crate) struct BlockDivisor {
  pub scale: f32,
  pub divisor: f32,
  pub reciprocal: f32,
  /// `scale · reciprocal` (exact), ≈ 1/`top`, for the approximate quotients `RN(x·r)` of
  /// [`crate::quantize::NEAR`]; 0 for a subnormal `top`, where it would overflow.
  pub approximate: f32,
}

#[cfg(target_arch = "x86_64")]
impl BlockDivisor {
  /// For `top` in (0, 2¹²⁶); `None` otherwise (a block of zeros, of NaN, with an infinity, or
  /// of huge values), where the caller divides.
  #[inline(always)]
  pub fn new(top: f32) -> Option<BlockDivisor> {
    if !(top > 0.0 && top < f32::from_bits(0x7c80_0000)) {
      return None;
    }
    // top < 2^126: its biased exponent is at most 252, so s = 2^(126 − e) is a normal float.
    let exponent = top.to_bits() >> 23;
    let scale = f32::from_bits((253 - exponent) << 23);
    let divisor = top * scale;
    let reciprocal = 1.0 / divisor;
    // A normal top has exponent ≥ 1: scale ≤ 2^125 and reciprocal ≤ 2, so their product is normal.
    let approximate = if exponent >= 1 { scale * reciprocal } else { 0.0 };
    Some(BlockDivisor { scale, divisor, reciprocal, approximate })
  }

  /// `x / top`'s code-equivalent quotient (see the type), for one value.
  #[cfg(test)]
  pub fn divide(&self, x: f32) -> f32 {
    let (d, y) = (self.divisor, self.reciprocal);
    let x = x * self.scale;
    let q0 = x * y;
    let q1 = (-q0).mul_add(d, x).mul_add(y, q0);
    (-q1).mul_add(d, x).mul_add(y, q1)
  }
}

/// Blocks past the one being updated whose arrays a kernel asks for while its thread is
/// streaming ([`crate::engine::simd::streaming`]): 2 KB of each `f32` array, 512 bytes of each
/// code array. Of 2, 4, 8 and 16, 2 streamed Lion8bit fastest from memory (BENCHMARKS.md, "Design
/// choices").
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) const AHEAD_BLOCKS: usize = 2;

/// How many elements past the start of the block being updated a streaming kernel asks for the
/// arrays: `None` when its thread is not streaming. Read once per kernel call.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
pub(crate) fn ahead() -> Option<usize> {
  crate::engine::simd::is_streaming().then_some(AHEAD_BLOCKS * BLOCK)
}

/// Asks for the cache lines of the block of `BLOCK` elements of `T` at `at`: a hint, which never
/// faults, so `at` may lie past the end of its array (it is formed with `wrapping_add`).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
pub(crate) fn prefetch_block<T>(at: *const T) {
  let at = at.cast::<i8>();
  for offset in (0..BLOCK * std::mem::size_of::<T>()).step_by(64) {
    crate::engine::simd::prefetch_line(at.wrapping_add(offset));
  }
}

/// A block's values, aligned for vector loads.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[repr(C, align(64))]
pub(crate) struct Block(pub [f32; BLOCK]);

/// A block's ranges or keys' low bits, aligned for vector loads: what a two-pass quantizer
/// (`avx2::quantize`, `neon::quantize`) keeps between its passes.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[repr(C, align(32))]
pub(crate) struct Keys([i32; BLOCK]);

/// One vector width's instructions, so that an optimizer's block pass is written once for every
/// width (`avx512::Lanes16`, `avx2::Lanes8`, `neon::Lanes4`). A value of the type is the proof
/// that this CPU runs them: it is made only by an `unsafe` constructor whose caller checked, and
/// its methods are `#[inline(always)]`, compiled into the `#[target_feature]` function that calls
/// them (NEON needs no such function: every AArch64 processor has it).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) trait Lanes: Copy {
  /// Lanes per vector.
  const N: usize;
  type V: Copy;
  fn splat(self, x: f32) -> Self::V;
  fn add(self, a: Self::V, b: Self::V) -> Self::V;
  fn mul(self, a: Self::V, b: Self::V) -> Self::V;
  fn div(self, a: Self::V, b: Self::V) -> Self::V;
  /// a·b + c, rounded once.
  fn fmadd(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
  /// c − a·b, rounded once.
  fn fnmadd(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
  fn sqrt(self, a: Self::V) -> Self::V;
  /// The larger of each lane, `b`'s where either is NaN (`maxps`).
  fn max(self, a: Self::V, b: Self::V) -> Self::V;
  fn abs(self, a: Self::V) -> Self::V;
  /// The lanes of `seen` or of `a`'s magnitudes, whichever has the larger bits: a running
  /// maximum, from `splat(0.0)`, that a NaN or ±∞ seen leaves at or above ∞'s bits
  /// ([`Lanes::any_non_finite`]). Two instructions a vector, for the gradient check of a step.
  fn see_magnitude(self, seen: Self::V, a: Self::V) -> Self::V;
  /// Whether a lane of `seen` ([`Lanes::see_magnitude`]) saw NaN or ±∞.
  fn any_non_finite(self, seen: Self::V) -> bool;
  /// 1, −1, or +0 for ±0 and NaN, by the sign of each lane.
  fn sign(self, a: Self::V) -> Self::V;
  /// `then`'s lanes where `x` is finite, `otherwise`'s where it is ±∞ or NaN.
  fn where_finite(self, x: Self::V, then: Self::V, otherwise: Self::V) -> Self::V;
  /// # Safety
  /// `at` readable for [`Self::N`] floats.
  unsafe fn load(self, at: *const f32) -> Self::V;
  /// # Safety
  /// `at` writable for [`Self::N`] floats.
  unsafe fn store(self, at: *mut f32, a: Self::V);
  /// Stores vector `k` of `block` (`k < BLOCK / N`: checked).
  fn store_in(self, block: &mut Block, k: usize, a: Self::V);
  /// The map entries of [`Self::N`] codes at `codes`, times `scale`.
  ///
  /// # Safety
  /// `codes` readable for [`Self::N`] bytes.
  unsafe fn dequantize(self, codes: *const u8, values: &[f32; 256], scale: Self::V) -> Self::V;
  /// Quantizes a whole block whose largest magnitudes are the lanes of `top` (running maxima
  /// from −`f32::MAX`, NaN passed over): writes its 256 codes at `codes`, returns its absmax.
  ///
  /// # Safety
  /// `codes` writable for 256 bytes.
  unsafe fn quantize(self, map: &QuantMap, values: &Block, top: Self::V, codes: *mut u8) -> f32;
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
  use std::arch::x86_64::*;

  use super::{Block, BlockDivisor, Lanes, BLOCK};
  use crate::quantize::{QuantMap, NAN_ENTRY, NEAR, RANGE_LIMIT, RANGE_SHIFT};

  /// AVX-512 (F, VL) with AVX2 and FMA: 16 lanes ([`Lanes`]).
  #[derive(Clone, Copy)]
  pub struct Lanes16(());

  impl Lanes16 {
    /// # Safety
    /// This CPU has AVX-512F/VL, AVX2 and FMA.
    #[inline(always)]
    pub unsafe fn new() -> Self {
      Lanes16(())
    }
  }

  // SAFETY (every method): `self` exists, so this CPU has the instructions (`Lanes16::new`);
  // the pointers are valid for what each method reads or writes (its callers').
  impl Lanes for Lanes16 {
    const N: usize = 16;
    type V = __m512;
    #[inline(always)]
    fn splat(self, x: f32) -> __m512 {
      unsafe { _mm512_set1_ps(x) }
    }
    #[inline(always)]
    fn add(self, a: __m512, b: __m512) -> __m512 {
      unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    fn mul(self, a: __m512, b: __m512) -> __m512 {
      unsafe { _mm512_mul_ps(a, b) }
    }
    #[inline(always)]
    fn div(self, a: __m512, b: __m512) -> __m512 {
      unsafe { _mm512_div_ps(a, b) }
    }
    #[inline(always)]
    fn fmadd(self, a: __m512, b: __m512, c: __m512) -> __m512 {
      unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    fn fnmadd(self, a: __m512, b: __m512, c: __m512) -> __m512 {
      unsafe { _mm512_fnmadd_ps(a, b, c) }
    }
    #[inline(always)]
    fn sqrt(self, a: __m512) -> __m512 {
      unsafe { _mm512_sqrt_ps(a) }
    }
    #[inline(always)]
    fn max(self, a: __m512, b: __m512) -> __m512 {
      unsafe { _mm512_max_ps(a, b) }
    }
    #[inline(always)]
    fn abs(self, a: __m512) -> __m512 {
      unsafe { _mm512_abs_ps(a) }
    }
    #[inline(always)]
    fn see_magnitude(self, seen: __m512, a: __m512) -> __m512 {
      unsafe { _mm512_castsi512_ps(_mm512_max_epu32(_mm512_castps_si512(seen), _mm512_castps_si512(_mm512_abs_ps(a)))) }
    }
    #[inline(always)]
    fn any_non_finite(self, seen: __m512) -> bool {
      let infinity = f32::INFINITY.to_bits() as i32;
      unsafe { _mm512_cmpge_epu32_mask(_mm512_castps_si512(seen), _mm512_set1_epi32(infinity)) != 0 }
    }
    #[inline(always)]
    fn sign(self, a: __m512) -> __m512 {
      unsafe {
        let zero = _mm512_setzero_ps();
        let positive = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(a, zero);
        let negative = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, zero);
        _mm512_mask_blend_ps(negative, _mm512_maskz_mov_ps(positive, _mm512_set1_ps(1.0)), _mm512_set1_ps(-1.0))
      }
    }
    #[inline(always)]
    fn where_finite(self, x: __m512, then: __m512, otherwise: __m512) -> __m512 {
      unsafe {
        let finite = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(_mm512_sub_ps(x, x), _mm512_setzero_ps());
        _mm512_mask_blend_ps(finite, otherwise, then)
      }
    }
    #[inline(always)]
    unsafe fn load(self, at: *const f32) -> __m512 {
      unsafe { _mm512_loadu_ps(at) }
    }
    #[inline(always)]
    unsafe fn store(self, at: *mut f32, a: __m512) {
      unsafe { _mm512_storeu_ps(at, a) }
    }
    #[inline(always)]
    fn store_in(self, block: &mut Block, k: usize, a: __m512) {
      assert!(k < BLOCK / 16);
      unsafe { _mm512_store_ps(block.0.as_mut_ptr().add(16 * k), a) }
    }
    #[inline(always)]
    unsafe fn dequantize(self, codes: *const u8, values: &[f32; 256], scale: __m512) -> __m512 {
      unsafe { dequantize(codes, values, scale) }
    }
    #[inline(always)]
    unsafe fn quantize(self, map: &QuantMap, values: &Block, top: __m512, codes: *mut u8) -> f32 {
      unsafe { quantize(map, values, top, codes) }
    }
  }

  /// The map entries of 16 codes at `codes`, times `scale`.
  ///
  /// # Safety
  /// AVX-512F; `codes` readable for 16 bytes.
  #[inline(always)]
  pub unsafe fn dequantize(codes: *const u8, values: &[f32; 256], scale: __m512) -> __m512 {
    // SAFETY: 16 bytes at `codes` (caller); every index is a u8, within the 256 entries.
    unsafe {
      let index = _mm512_cvtepu8_epi32(_mm_loadu_si128(codes.cast()));
      _mm512_mul_ps(_mm512_i32gather_ps::<4>(index, values.as_ptr()), scale)
    }
  }

  /// The codes of 16 quotients in [−1, 1] (or NaN), as [`QuantMap::code`] gives them, and the
  /// lanes whose key is within [`NEAR`] of a step boundary (see there).
  ///
  /// # Safety
  /// AVX-512F; `table` is `map.packed()`'s entry of range 0 (`RANGE_LIMIT + 1` from its start).
  #[inline(always)]
  pub unsafe fn lookup(q: __m512, table: *const i32) -> (__m128i, __mmask16) {
    let bits = _mm512_castps_si512(q);
    // The ordered key: negative values' bits but the sign flipped, so that keys rise with values
    // (bits ^ (sign-filled & 0x7fffffff), one ternary logic).
    let key = _mm512_ternarylogic_epi32::<0x78>(bits, _mm512_srai_epi32::<31>(bits), _mm512_set1_epi32(0x7fff_ffff));
    let range = _mm512_srai_epi32::<{ RANGE_SHIFT }>(key);
    // NaN lanes are not gathered (their keys are outside the table) and take the NaN entry; every
    // other lane is a quotient within 3 keys of [−1, 1], whose range is in the table.
    let number = _mm512_cmp_ps_mask::<_CMP_ORD_Q>(q, q);
    // SAFETY: the ranges of quotients in [−1, 1] and 3 keys beyond, relative to the table's
    // range-0 entry (caller).
    let entry = unsafe { _mm512_mask_i32gather_epi32::<4>(_mm512_set1_epi32(NAN_ENTRY as i32), number, range, table) };
    let low = _mm512_and_si512(key, _mm512_set1_epi32(0xffff));
    let boundary = _mm512_srli_epi32::<16>(entry);
    let above = _mm512_cmpge_epu32_mask(low, boundary);
    // |low − boundary| ≤ NEAR, as one unsigned comparison.
    let distance = _mm512_add_epi32(_mm512_sub_epi32(low, boundary), _mm512_set1_epi32(NEAR));
    let near = _mm512_cmple_epu32_mask(distance, _mm512_set1_epi32(2 * NEAR));
    (_mm512_cvtepi32_epi8(_mm512_mask_srli_epi32::<8>(entry, above, entry)), near)
  }

  /// Quantizes a whole block whose largest magnitudes are the lanes of `top` (running maxima from
  /// −`f32::MAX`, NaN passed over): writes its 256 codes at `codes`, returns its absmax.
  ///
  /// For a normal absmax the codes come first from approximate quotients (one multiplication by
  /// the absmax's reciprocal); only if a lane's key is near a step boundary ([`NEAR`]) is the block
  /// done again with exact ones ([`BlockDivisor`]), which is rare.
  ///
  /// # Safety
  /// AVX-512F and FMA; `codes` writable for 256 bytes.
  #[inline(always)]
  pub unsafe fn quantize(map: &QuantMap, values: &Block, top: __m512, codes: *mut u8) -> f32 {
    let top = _mm512_reduce_max_ps(top);
    // SAFETY: the range-0 entry of the packed table, in its middle.
    let table = unsafe { map.packed().as_ptr().add(RANGE_LIMIT as usize + 1) }.cast::<i32>();
    let x = |k: usize| -> __m512 {
      // SAFETY: 16 values within the aligned block (k < 16).
      unsafe { _mm512_load_ps(values.0.as_ptr().add(16 * k)) }
    };
    // SAFETY (stores): 16 codes at k·16 within the block's 256 (caller).
    let store = |k: usize, code: __m128i| unsafe { _mm_storeu_si128(codes.add(16 * k).cast(), code) };
    if let Some(d) = BlockDivisor::new(top) {
      if d.approximate != 0.0 {
        let r = _mm512_set1_ps(d.approximate);
        let mut near = 0;
        for k in 0..16 {
          // SAFETY: as `lookup` asks (`table` above).
          let (code, close) = unsafe { lookup(_mm512_mul_ps(x(k), r), table) };
          store(k, code);
          near |= close;
        }
        if near == 0 {
          return top;
        }
      }
      let (s, dd, y) = (_mm512_set1_ps(d.scale), _mm512_set1_ps(d.divisor), _mm512_set1_ps(d.reciprocal));
      for k in 0..16 {
        let xs = _mm512_mul_ps(x(k), s);
        let q0 = _mm512_mul_ps(xs, y);
        let q1 = _mm512_fmadd_ps(_mm512_fnmadd_ps(q0, dd, xs), y, q0);
        let q = _mm512_fmadd_ps(_mm512_fnmadd_ps(q1, dd, xs), y, q1);
        // SAFETY: as `lookup` asks.
        store(k, unsafe { lookup(q, table) }.0);
      }
    } else {
      let t = _mm512_set1_ps(top);
      for k in 0..16 {
        // SAFETY: as `lookup` asks.
        store(k, unsafe { lookup(_mm512_div_ps(x(k), t), table) }.0);
      }
    }
    top
  }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
  use std::arch::x86_64::*;
  use std::mem::MaybeUninit;

  use super::{Block, Keys, Lanes, BLOCK};
  use crate::quantize::{QuantMap, RANGE_LIMIT, RANGE_SHIFT};

  /// AVX2 with FMA: 8 lanes ([`Lanes`]).
  #[derive(Clone, Copy)]
  pub struct Lanes8(());

  impl Lanes8 {
    /// # Safety
    /// This CPU has AVX2 and FMA.
    #[inline(always)]
    pub unsafe fn new() -> Self {
      Lanes8(())
    }
  }

  // SAFETY (every method): `self` exists, so this CPU has the instructions (`Lanes8::new`);
  // the pointers are valid for what each method reads or writes (its callers').
  impl Lanes for Lanes8 {
    const N: usize = 8;
    type V = __m256;
    #[inline(always)]
    fn splat(self, x: f32) -> __m256 {
      unsafe { _mm256_set1_ps(x) }
    }
    #[inline(always)]
    fn add(self, a: __m256, b: __m256) -> __m256 {
      unsafe { _mm256_add_ps(a, b) }
    }
    #[inline(always)]
    fn mul(self, a: __m256, b: __m256) -> __m256 {
      unsafe { _mm256_mul_ps(a, b) }
    }
    #[inline(always)]
    fn div(self, a: __m256, b: __m256) -> __m256 {
      unsafe { _mm256_div_ps(a, b) }
    }
    #[inline(always)]
    fn fmadd(self, a: __m256, b: __m256, c: __m256) -> __m256 {
      unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    fn fnmadd(self, a: __m256, b: __m256, c: __m256) -> __m256 {
      unsafe { _mm256_fnmadd_ps(a, b, c) }
    }
    #[inline(always)]
    fn sqrt(self, a: __m256) -> __m256 {
      unsafe { _mm256_sqrt_ps(a) }
    }
    #[inline(always)]
    fn max(self, a: __m256, b: __m256) -> __m256 {
      unsafe { _mm256_max_ps(a, b) }
    }
    #[inline(always)]
    fn abs(self, a: __m256) -> __m256 {
      abs(a)
    }
    #[inline(always)]
    fn see_magnitude(self, seen: __m256, a: __m256) -> __m256 {
      unsafe { _mm256_castsi256_ps(_mm256_max_epu32(_mm256_castps_si256(seen), _mm256_castps_si256(abs(a)))) }
    }
    #[inline(always)]
    fn any_non_finite(self, seen: __m256) -> bool {
      // Magnitudes' bits are below 2^31, so the signed comparison orders them.
      let finite_max = f32::MAX.to_bits() as i32;
      unsafe { _mm256_movemask_epi8(_mm256_cmpgt_epi32(_mm256_castps_si256(seen), _mm256_set1_epi32(finite_max))) != 0 }
    }
    #[inline(always)]
    fn sign(self, a: __m256) -> __m256 {
      unsafe {
        let zero = _mm256_setzero_ps();
        let positive = _mm256_and_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(a, zero), _mm256_set1_ps(1.0));
        let negative = _mm256_and_ps(_mm256_cmp_ps::<_CMP_LT_OQ>(a, zero), _mm256_set1_ps(-1.0));
        _mm256_or_ps(positive, negative)
      }
    }
    #[inline(always)]
    fn where_finite(self, x: __m256, then: __m256, otherwise: __m256) -> __m256 {
      unsafe {
        let finite = _mm256_cmp_ps::<_CMP_EQ_OQ>(_mm256_sub_ps(x, x), _mm256_setzero_ps());
        _mm256_blendv_ps(otherwise, then, finite)
      }
    }
    #[inline(always)]
    unsafe fn load(self, at: *const f32) -> __m256 {
      unsafe { _mm256_loadu_ps(at) }
    }
    #[inline(always)]
    unsafe fn store(self, at: *mut f32, a: __m256) {
      unsafe { _mm256_storeu_ps(at, a) }
    }
    #[inline(always)]
    fn store_in(self, block: &mut Block, k: usize, a: __m256) {
      assert!(k < BLOCK / 8);
      unsafe { _mm256_store_ps(block.0.as_mut_ptr().add(8 * k), a) }
    }
    #[inline(always)]
    unsafe fn dequantize(self, codes: *const u8, values: &[f32; 256], scale: __m256) -> __m256 {
      unsafe { dequantize(codes, values, scale) }
    }
    #[inline(always)]
    unsafe fn quantize(self, map: &QuantMap, values: &Block, top: __m256, codes: *mut u8) -> f32 {
      unsafe { quantize(map, values, top, codes) }
    }
  }

  /// The map entries of 8 codes at `codes`, times `scale`: eight loads, not a gather. AMD's Zen 3
  /// cores run an AVX2 gather slower than the eight loads it stands for (docs/eightbit.md).
  ///
  /// # Safety
  /// AVX2; `codes` readable for 8 bytes.
  #[inline(always)]
  pub unsafe fn dequantize(codes: *const u8, values: &[f32; 256], scale: __m256) -> __m256 {
    // SAFETY: 8 bytes at `codes` (caller); every index is a u8, within the 256 entries.
    unsafe {
      let at = |i: usize| *values.get_unchecked(*codes.add(i) as usize);
      _mm256_mul_ps(_mm256_setr_ps(at(0), at(1), at(2), at(3), at(4), at(5), at(6), at(7)), scale)
    }
  }

  /// |x| for every lane.
  #[inline(always)]
  pub fn abs(x: __m256) -> __m256 {
    // SAFETY: register arithmetic only; AVX is enabled wherever this is inlined.
    unsafe { _mm256_andnot_ps(_mm256_set1_ps(-0.0), x) }
  }

  /// Quantizes a whole block whose largest magnitudes are the lanes of `top`: writes its 256
  /// codes at `codes`, returns its absmax. The quotients are the divide instruction's: on Zen 3
  /// it was faster than [`BlockDivisor`]'s multiply-adds and than AVX-512's approximate quotients
  /// with their near-boundary marks, the kernel being bound by instructions there, not by the
  /// divide unit (docs/eightbit.md).
  ///
  /// In two passes. The first divides every value and keeps its range (its [`ordered`] key's
  /// index into the packed table, clamped to the table's: NaN's keys fall outside) and its key's
  /// low 16 bits. The second loads each vector's 8 entries (eight loads indexed from the stored
  /// ranges; no gather, as [`dequantize`]) and picks each code with one comparison and one
  /// selection ([`QuantMap::code`]). One pass that carried each quotient from its division
  /// through moves out of the vector registers to its loads, a long dependent chain per vector,
  /// made the whole 8-bit step 15-20% slower (docs/eightbit.md).
  ///
  /// [`BlockDivisor`]: super::BlockDivisor
  /// [`ordered`]: crate::quantize::ordered
  ///
  /// # Safety
  /// AVX2 and FMA; `codes` writable for 256 bytes.
  #[inline(always)]
  pub unsafe fn quantize(map: &QuantMap, values: &Block, top: __m256, codes: *mut u8) -> f32 {
    let mut lanes = [0.0f32; 8];
    // Every element written by the first pass before the second reads it.
    let (mut ranges, mut lows) = (MaybeUninit::<Keys>::uninit(), MaybeUninit::<Keys>::uninit());
    let (ranges, lows) = (ranges.as_mut_ptr().cast::<i32>(), lows.as_mut_ptr().cast::<i32>());
    // SAFETY (all below): 8 floats into `lanes`; vector k (k < 32) of the aligned block, of the
    // aligned keys and of the block's 256 codes (caller); table entries at ranges clamped to the
    // table's, from its range-0 entry, in its middle.
    unsafe {
      _mm256_storeu_ps(lanes.as_mut_ptr(), top);
      let top = lanes.iter().fold(-f32::MAX, |a, &x| a.max(x));
      let t = _mm256_set1_ps(top);
      let table = map.packed().as_ptr().add(RANGE_LIMIT as usize + 1).cast::<i32>();
      for k in 0..BLOCK / 8 {
        let bits = _mm256_castps_si256(_mm256_div_ps(_mm256_load_ps(values.0.as_ptr().add(8 * k)), t));
        let key = _mm256_xor_si256(bits, _mm256_srli_epi32::<1>(_mm256_srai_epi32::<31>(bits)));
        let range = _mm256_srai_epi32::<{ RANGE_SHIFT as i32 }>(key);
        let range = _mm256_min_epi32(
          _mm256_max_epi32(range, _mm256_set1_epi32(-RANGE_LIMIT - 1)),
          _mm256_set1_epi32(RANGE_LIMIT),
        );
        _mm256_store_si256(ranges.add(8 * k).cast(), range);
        _mm256_store_si256(lows.add(8 * k).cast(), _mm256_and_si256(key, _mm256_set1_epi32(0xffff)));
      }
      for k in 0..BLOCK / 8 {
        let range = ranges.add(8 * k);
        let at = |i: usize| *table.offset(*range.add(i) as isize);
        let entry = _mm256_setr_epi32(at(0), at(1), at(2), at(3), at(4), at(5), at(6), at(7));
        let low = _mm256_load_si256(lows.add(8 * k).cast());
        // Both sides are below 2^16: a signed comparison is the unsigned one.
        let below = _mm256_cmpgt_epi32(_mm256_srli_epi32::<16>(entry), low);
        let code = _mm256_blendv_epi8(_mm256_srli_epi32::<8>(entry), entry, below);
        // The low byte of each lane, then the two 128-bit halves' four bytes side by side.
        let bytes = _mm256_shuffle_epi8(
          code,
          _mm256_setr_epi8(
            0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1,
            -1, -1, -1, -1,
          ),
        );
        let packed = _mm_unpacklo_epi32(_mm256_castsi256_si128(bytes), _mm256_extracti128_si256::<1>(bytes));
        _mm_storel_epi64(codes.add(8 * k).cast(), packed);
      }
      top
    }
  }
}

#[cfg(target_arch = "aarch64")]
pub(crate) mod neon {
  use std::arch::aarch64::*;
  use std::mem::MaybeUninit;

  use super::{Block, Keys, Lanes, BLOCK};
  use crate::quantize::{QuantMap, RANGE_LIMIT, RANGE_SHIFT};

  /// NEON, which every AArch64 processor has: 4 lanes ([`Lanes`]).
  #[derive(Clone, Copy)]
  pub struct Lanes4(());

  impl Lanes4 {
    /// # Safety
    /// This CPU has NEON (every AArch64 one does; `unsafe` as the other widths' constructors).
    #[inline(always)]
    pub unsafe fn new() -> Self {
      Lanes4(())
    }
  }

  // SAFETY (every method): NEON is part of the target; the pointers are valid for what each
  // method reads or writes (its callers').
  impl Lanes for Lanes4 {
    const N: usize = 4;
    type V = float32x4_t;
    #[inline(always)]
    fn splat(self, x: f32) -> float32x4_t {
      unsafe { vdupq_n_f32(x) }
    }
    #[inline(always)]
    fn add(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
      unsafe { vaddq_f32(a, b) }
    }
    #[inline(always)]
    fn mul(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
      unsafe { vmulq_f32(a, b) }
    }
    #[inline(always)]
    fn div(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
      unsafe { vdivq_f32(a, b) }
    }
    #[inline(always)]
    fn fmadd(self, a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
      unsafe { vfmaq_f32(c, a, b) }
    }
    #[inline(always)]
    fn fnmadd(self, a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
      unsafe { vfmsq_f32(c, a, b) }
    }
    #[inline(always)]
    fn sqrt(self, a: float32x4_t) -> float32x4_t {
      unsafe { vsqrtq_f32(a) }
    }
    #[inline(always)]
    fn max(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
      // `fmax` would give NaN for a NaN lane; the trait asks for `maxps`: `b` unless a > b.
      unsafe { vbslq_f32(vcgtq_f32(a, b), a, b) }
    }
    #[inline(always)]
    fn abs(self, a: float32x4_t) -> float32x4_t {
      unsafe { vabsq_f32(a) }
    }
    #[inline(always)]
    fn see_magnitude(self, seen: float32x4_t, a: float32x4_t) -> float32x4_t {
      unsafe { vreinterpretq_f32_u32(vmaxq_u32(vreinterpretq_u32_f32(seen), vreinterpretq_u32_f32(vabsq_f32(a)))) }
    }
    #[inline(always)]
    fn any_non_finite(self, seen: float32x4_t) -> bool {
      unsafe { vmaxvq_u32(vreinterpretq_u32_f32(seen)) >= f32::INFINITY.to_bits() }
    }
    #[inline(always)]
    fn sign(self, a: float32x4_t) -> float32x4_t {
      unsafe {
        let zero = vdupq_n_f32(0.0);
        let positive = vandq_u32(vcgtq_f32(a, zero), vreinterpretq_u32_f32(vdupq_n_f32(1.0)));
        vbslq_f32(vcltq_f32(a, zero), vdupq_n_f32(-1.0), vreinterpretq_f32_u32(positive))
      }
    }
    #[inline(always)]
    fn where_finite(self, x: float32x4_t, then: float32x4_t, otherwise: float32x4_t) -> float32x4_t {
      unsafe { vbslq_f32(vceqq_f32(vsubq_f32(x, x), vdupq_n_f32(0.0)), then, otherwise) }
    }
    #[inline(always)]
    unsafe fn load(self, at: *const f32) -> float32x4_t {
      unsafe { vld1q_f32(at) }
    }
    #[inline(always)]
    unsafe fn store(self, at: *mut f32, a: float32x4_t) {
      unsafe { vst1q_f32(at, a) }
    }
    #[inline(always)]
    fn store_in(self, block: &mut Block, k: usize, a: float32x4_t) {
      assert!(k < BLOCK / 4);
      unsafe { vst1q_f32(block.0.as_mut_ptr().add(4 * k), a) }
    }
    #[inline(always)]
    unsafe fn dequantize(self, codes: *const u8, values: &[f32; 256], scale: float32x4_t) -> float32x4_t {
      unsafe { dequantize(codes, values, scale) }
    }
    #[inline(always)]
    unsafe fn quantize(self, map: &QuantMap, values: &Block, top: float32x4_t, codes: *mut u8) -> f32 {
      unsafe { quantize(map, values, top, codes) }
    }
  }

  /// The map entries of 4 codes at `codes`, times `scale`: four loads (NEON has no gather).
  ///
  /// # Safety
  /// `codes` readable for 4 bytes.
  #[inline(always)]
  pub unsafe fn dequantize(codes: *const u8, values: &[f32; 256], scale: float32x4_t) -> float32x4_t {
    // SAFETY: 4 bytes at `codes` (caller); every index is a u8, within the 256 entries.
    unsafe {
      let at = |i: usize| *values.get_unchecked(*codes.add(i) as usize);
      let entries = [at(0), at(1), at(2), at(3)];
      vmulq_f32(vld1q_f32(entries.as_ptr()), scale)
    }
  }

  /// Quantizes a whole block whose largest magnitudes are the lanes of `top`: writes its 256
  /// codes at `codes`, returns its absmax. As `avx2::quantize` does it, in two passes: the
  /// quotients by the divide instruction, each one's range in the packed table (clamped to the
  /// table's: NaN's keys fall outside) and its key's low 16 bits; then each vector's four entries
  /// loaded from the stored ranges, and each code picked by one comparison and one selection
  /// ([`QuantMap::code`]), sixteen codes narrowed into one store.
  ///
  /// # Safety
  /// `codes` writable for 256 bytes.
  #[inline(always)]
  pub unsafe fn quantize(map: &QuantMap, values: &Block, top: float32x4_t, codes: *mut u8) -> f32 {
    let mut lanes = [0.0f32; 4];
    // Every element written by the first pass before the second reads it.
    let (mut ranges, mut lows) = (MaybeUninit::<Keys>::uninit(), MaybeUninit::<Keys>::uninit());
    let (ranges, lows) = (ranges.as_mut_ptr().cast::<i32>(), lows.as_mut_ptr().cast::<i32>());
    // SAFETY (all below): 4 floats into `lanes`; vector k (k < 64) of the block and of the
    // keys, 16 codes at a time of the block's 256 (caller); table entries at ranges clamped to
    // the table's, from its range-0 entry, in its middle.
    unsafe {
      vst1q_f32(lanes.as_mut_ptr(), top);
      let top = lanes.iter().fold(-f32::MAX, |a, &x| a.max(x));
      let t = vdupq_n_f32(top);
      let table = map.packed().as_ptr().add(RANGE_LIMIT as usize + 1).cast::<i32>();
      let (least, most) = (vdupq_n_s32(-RANGE_LIMIT - 1), vdupq_n_s32(RANGE_LIMIT));
      for k in 0..BLOCK / 4 {
        let bits = vreinterpretq_s32_f32(vdivq_f32(vld1q_f32(values.0.as_ptr().add(4 * k)), t));
        // The ordered key: a negative value's bits with all but the sign flipped.
        let flip = vreinterpretq_s32_u32(vshrq_n_u32::<1>(vreinterpretq_u32_s32(vshrq_n_s32::<31>(bits))));
        let key = veorq_s32(bits, flip);
        let range = vminq_s32(vmaxq_s32(vshrq_n_s32::<{ RANGE_SHIFT as i32 }>(key), least), most);
        vst1q_s32(ranges.add(4 * k), range);
        vst1q_s32(lows.add(4 * k), vandq_s32(key, vdupq_n_s32(0xffff)));
      }
      let code = |k: usize| -> uint16x4_t {
        let range = ranges.add(4 * k);
        let at = |i: usize| *table.offset(*range.add(i) as isize);
        let entries = [at(0), at(1), at(2), at(3)];
        let entry = vreinterpretq_u32_s32(vld1q_s32(entries.as_ptr()));
        let low = vreinterpretq_u32_s32(vld1q_s32(lows.add(4 * k)));
        let below = vcgtq_u32(vshrq_n_u32::<16>(entry), low);
        // The code is each lane's low byte; narrowing keeps it.
        vmovn_u32(vbslq_u32(below, entry, vshrq_n_u32::<8>(entry)))
      };
      for k in (0..BLOCK / 4).step_by(4) {
        let low = vmovn_u16(vcombine_u16(code(k), code(k + 1)));
        let high = vmovn_u16(vcombine_u16(code(k + 2), code(k + 3)));
        vst1q_u8(codes.add(4 * k), vcombine_u8(low, high));
      }
      top
    }
  }
}

#[cfg(test)]
mod tests {
  #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
  use super::*;
  use crate::quantize::{code_reference, signed, unsigned};

  #[test]
  fn tiny_quotients_of_either_sign_share_one_code() {
    for map in [signed(), unsigned()] {
      let zero = code_reference(map, 0.0);
      // Every 997th f32 from the least subnormal to 2⁻²⁵, either sign.
      for bits in (1..0x3300_0000u32).step_by(997) {
        let x = f32::from_bits(bits);
        assert_eq!(code_reference(map, x), zero, "{x:e}");
        assert_eq!(code_reference(map, -x), zero, "{:e}", -x);
      }
      assert_eq!(code_reference(map, f32::from_bits(0x3300_0000 - 1)), zero);
      assert_eq!(code_reference(map, -f32::from_bits(0x3300_0000 - 1)), zero);
      assert_eq!(code_reference(map, -0.0), zero);
    }
  }

  /// Blocks whose quotients fall at, and a few ulps either side of, every step boundary of both
  /// maps (where the approximate quotients' codes are in doubt), for absmax at many scales: the
  /// AVX-512 quantizer's codes are those of `/`.
  #[cfg(target_arch = "x86_64")]
  #[test]
  fn avx512_codes_at_every_boundary_are_those_of_slash() {
    if !crate::engine::simd::has_avx512() {
      return;
    }
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let mut tops = vec![1.0f32, 0.75, f32::MIN_POSITIVE, 1.5 * f32::MIN_POSITIVE, 3.0e-8, 1e30, 0.1];
    for _ in 0..40 {
      s ^= s << 13;
      s ^= s >> 7;
      s ^= s << 17;
      tops.push(f32::from_bits(0x0080_0000 + (s as u32) % (0x7c00_0000 - 0x0080_0000)));
    }
    for map in [signed(), unsigned()] {
      for &top in &tops {
        let xs = near_boundaries(map, top);
        // The premise, lane by lane: an approximate quotient not marked near a boundary has the
        // code of `/`'s quotient (here on quotients up to 6 ulps from every boundary).
        let r = BlockDivisor::new(top).unwrap().approximate;
        for &x in &xs {
          let q0 = x * r;
          if !map.near(crate::quantize::ordered(q0)) {
            assert_eq!(map.code(q0), code_reference(map, x / top), "{x:e} / {top:e}");
          }
        }
        // SAFETY: checked above that this CPU has AVX-512.
        assert_blocks_quantize_as_reference(map, top, &xs, |block, codes| unsafe {
          quantize_avx512(map, block, codes)
        });
      }
    }
  }

  /// Quotients at and 6 ulps either side of every step boundary of `map`, times `top`.
  #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
  fn near_boundaries(map: &crate::quantize::QuantMap, top: f32) -> Vec<f32> {
    let mut xs = Vec::new();
    for b in map.boundaries() {
      let x = b * top;
      for d in -6i32..=6 {
        let y = f32::from_bits((x.to_bits() as i32 + d) as u32);
        if y.abs() <= top {
          xs.push(y);
        }
      }
    }
    xs
  }

  /// `xs` quantized in blocks whose absmax is `top` by `quantize` (codes, then absmax) give the
  /// reference's codes and absmax.
  #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
  fn assert_blocks_quantize_as_reference(
    map: &crate::quantize::QuantMap,
    top: f32,
    xs: &[f32],
    quantize: impl Fn(&Block, &mut [u8; BLOCK]) -> f32,
  ) {
    for chunk in xs.chunks(BLOCK - 1) {
      let mut block = Block([0.0; BLOCK]);
      block.0[0] = top;
      block.0[1..=chunk.len()].copy_from_slice(chunk);
      let (mut fast, mut plain) = ([0u8; BLOCK], [0u8; BLOCK]);
      let got = quantize(&block, &mut fast);
      let want = crate::quantize::quantize_block_reference(map, &block.0, &mut plain);
      assert_eq!(got.to_bits(), want.to_bits());
      for i in 0..BLOCK {
        assert_eq!(fast[i], plain[i], "{:e} / {top:e}", block.0[i]);
      }
    }
  }

  /// Blocks whose quotients fall at, and a few ulps either side of, every step boundary of both
  /// maps, of either sign (every range the 16-bit packing carries), with NaN and zeros, for absmax
  /// at many scales: the AVX2 quantizer's codes are those of `/`.
  #[cfg(target_arch = "x86_64")]
  #[test]
  fn avx2_codes_at_every_boundary_are_those_of_slash() {
    if !crate::engine::simd::has_avx2_fma() {
      return;
    }
    // SAFETY: checked above that this CPU has AVX2 and FMA.
    assert_codes_at_every_boundary(|map, block, codes| unsafe { quantize_avx2(map, block, codes) });
  }

  /// `quantize` (a map, a block, its codes; returns the absmax) gives the reference's codes and
  /// absmax for blocks whose quotients fall at and 6 ulps either side of every step boundary of
  /// both maps, of either sign, with NaN and zeros, for absmax at 7 scales.
  #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
  fn assert_codes_at_every_boundary(quantize: impl Fn(&crate::quantize::QuantMap, &Block, &mut [u8; BLOCK]) -> f32) {
    let tops = [1.0f32, 0.75, f32::MIN_POSITIVE, 3.0e-8, 1e30, 0.1, 7.5e-3];
    for map in [signed(), unsigned()] {
      for &top in &tops {
        let xs = [&[f32::NAN, -f32::NAN, 0.0, -0.0][..], &near_boundaries(map, top)].concat();
        assert_blocks_quantize_as_reference(map, top, &xs, |block, codes| quantize(map, block, codes));
      }
    }
  }

  /// Blocks whose quotients fall at, and a few ulps either side of, every step boundary of both
  /// maps, of either sign, with NaN and zeros, for absmax at many scales: the NEON quantizer's
  /// codes are those of `/`.
  #[cfg(target_arch = "aarch64")]
  #[test]
  fn neon_codes_at_every_boundary_are_those_of_slash() {
    assert_codes_at_every_boundary(|map, block, codes| {
      // SAFETY: every AArch64 processor has NEON; 256 codes.
      unsafe {
        let top = std::arch::aarch64::vdupq_n_f32(crate::quantize::absmax(&block.0));
        neon::quantize(map, block, top, codes.as_mut_ptr())
      }
    });
  }

  /// [`avx2::quantize`] of a whole block.
  ///
  /// # Safety
  /// AVX2 and FMA.
  #[cfg(target_arch = "x86_64")]
  #[target_feature(enable = "avx2,fma")]
  unsafe fn quantize_avx2(map: &crate::quantize::QuantMap, block: &Block, codes: &mut [u8; BLOCK]) -> f32 {
    use std::arch::x86_64::*;
    let top = _mm256_set1_ps(crate::quantize::absmax(&block.0));
    // SAFETY: 256 codes; AVX2 and FMA (caller).
    unsafe { avx2::quantize(map, block, top, codes.as_mut_ptr()) }
  }

  /// [`avx512::quantize`] of a whole block.
  ///
  /// # Safety
  /// AVX-512F and FMA.
  #[cfg(target_arch = "x86_64")]
  #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
  unsafe fn quantize_avx512(map: &crate::quantize::QuantMap, block: &Block, codes: &mut [u8; BLOCK]) -> f32 {
    use std::arch::x86_64::*;
    let top = _mm512_set1_ps(crate::quantize::absmax(&block.0));
    // SAFETY: 256 codes; AVX-512 (caller).
    unsafe { avx512::quantize(map, block, top, codes.as_mut_ptr()) }
  }

  #[cfg(target_arch = "x86_64")]
  #[test]
  fn block_divisor_gives_the_codes_of_slash() {
    let mut s = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
      s ^= s << 13;
      s ^= s >> 7;
      s ^= s << 17;
      s
    };
    let mut tops = vec![1.0f32, 0.5, f32::MIN_POSITIVE, f32::from_bits(1), f32::from_bits(0x7c7f_ffff), 3.0e-8];
    for _ in 0..300 {
      tops.push(f32::from_bits((next() as u32) & 0x7c7f_ffff).max(f32::from_bits(1)));
    }
    for top in tops {
      let d = BlockDivisor::new(top).expect("in range");
      for _ in 0..3000 {
        let r = next();
        // Dividends at every scale below top, some exact fractions of it, and ±0, ±top.
        let x = match r % 5 {
          0 => top * f32::from_bits(0x3f80_0000 | (r >> 41) as u32) / 2.0,
          1 => top / f32::from_bits(((r >> 32) as u32 % 254 + 1) << 23).max(1.0),
          2 => f32::from_bits((r >> 33) as u32).min(top),
          3 => [0.0, -0.0, top, -top][(r >> 40) as usize % 4],
          _ => top * ((r >> 40) as f32 / (1u64 << 24) as f32),
        };
        let x = if r & (1 << 20) != 0 { -x } else { x };
        let (fast, slow) = (d.divide(x), x / top);
        if fast.to_bits() != slow.to_bits() {
          assert!(
            slow.abs() < 2f32.powi(-60) && fast.abs() < 2f32.powi(-60),
            "{x:e} / {top:e}: {fast:e}, `/` {slow:e}"
          );
        }
        for map in [signed(), unsigned()] {
          assert_eq!(map.code(fast), code_reference(map, slow), "{x:e} / {top:e}");
        }
      }
    }
    for top in [0.0, -1.0, f32::INFINITY, f32::NAN, -f32::MAX, 2f32.powi(126), f32::MAX] {
      assert!(BlockDivisor::new(top).is_none(), "{top}");
    }
  }
}
