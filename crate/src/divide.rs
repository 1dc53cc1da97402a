//! Division by a number fixed for a whole loop, with the bits of `/` but without a divide
//! instruction.
//!
//! A fused kernel that rounds as PyTorch does must divide where PyTorch divides, and divisions
//! and square roots share one unit that, on x86 cores, finishes a vector of them only every 10 or
//! so cycles: Adam's loop does two divisions and a square root per element and is bound by that
//! unit, not by memory, whenever its arrays are in cache. When the divisor `d` is the same for the
//! whole loop, `x / d` can be computed exactly as `/` rounds it with one multiplication and four
//! fused multiply-adds, which the two FMA units take in a couple of cycles:
//!
//! ```text
//! y  = RN(1/d)                      once, outside the loop
//! q₀ = RN(x·y)                      within 1.5 ulp of x/d
//! q₁ = RN(q₀ + RN(x − q₀·d)·y)      within 1 ulp (x − q₀·d is exact with an FMA)
//! q  = RN(q₁ + RN(x − q₁·d)·y)      = RN(x/d)
//! ```
//!
//! The last step is Markstein's theorem (P. Markstein, "Computation of elementary functions on
//! the IBM RISC System/6000 processor", IBM J. Res. Dev. 34(1), 1990; formally verified in
//! Cornea-Hasegan, Golliver & Markstein, "Correctness proofs outline for Newton-Raphson based
//! floating-point divide and square root algorithms", ARITH 14, 1999): if `y` is within half an
//! ulp of `1/d` and `q₁` within one ulp of `x/d`, then `q₁ + (x − q₁·d)·y` rounded to nearest is
//! `x/d` rounded to nearest, provided nothing overflows or underflows. The first correction is
//! there because `RN(x·y)` alone can be 1.5 ulp away, outside the theorem. The conditions on the
//! range are the caller's (see [`ExactDivisor::new`]); zero, infinite and NaN dividends take
//! `q₀`, which is already what `/` gives for them.

use crate::float::Float;

/// Dividing by `d`, as `/` rounds, for dividends in the range [`ExactDivisor::new`] states.
#[derive(Clone, Copy, Debug)]
pub struct ExactDivisor<T> {
  divisor: T,
  reciprocal: T,
}

impl<T: Float> ExactDivisor<T> {
  /// For a divisor in [2⁻³⁰, 1] (checked), and dividends whose magnitude is 0, infinite, NaN or
  /// within [2⁻⁹⁰, 2⁹⁰] in `f32`, [2⁻⁹⁰⁰, 2⁹⁰⁰] in `f64` (the caller's to guarantee; this keeps
  /// every intermediate normal and finite). Returns `None` for a divisor outside its range.
  pub fn new(divisor: T) -> Option<Self> {
    let d = divisor.to_f64();
    if !(d >= 2f64.powi(-30) && d <= 1.0) {
      return None;
    }
    Some(ExactDivisor { divisor, reciprocal: T::ONE / divisor })
  }

  /// The divisor `d`.
  #[inline(always)]
  pub fn divisor(&self) -> T {
    self.divisor
  }

  /// `RN(1/d)`.
  #[inline(always)]
  pub fn reciprocal(&self) -> T {
    self.reciprocal
  }

  /// `x / d`, bit for bit.
  #[inline(always)]
  pub fn divide(&self, x: T) -> T {
    let (d, y) = (self.divisor, self.reciprocal);
    let q0 = x * y;
    let q1 = (-q0).mul_add(d, x).mul_add(y, q0);
    let q = (-q1).mul_add(d, x).mul_add(y, q1);
    // For ±∞ the corrections would give NaN, and for −0 they would lose the sign.
    if x.is_finite() && x != T::ZERO {
      q
    } else {
      q0
    }
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  /// Divisors Adam meets: √(1 − β₂ᵗ) in f32 and f64 for common β₂ and many steps, and spread ones.
  fn divisors() -> Vec<f64> {
    let mut out = vec![1.0, 0.5, 2f64.powi(-30), 0.75, 1.0 - 2f64.powi(-24), 1.0 - 2f64.powi(-53), 0.999_999_9];
    for beta2 in [0.999, 0.99, 0.9, 0.95, 0.9999, 0.5, 0.0, 1.0 - 1e-12] {
      for t in [1, 2, 3, 5, 10, 100, 1000, 10_000, 100_000] {
        out.push((1.0 - f64::powf(beta2, t as f64)).sqrt());
      }
    }
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..12 {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      out.push(2f64.powf(-30.0 * (x >> 11) as f64 / (1u64 << 53) as f64));
    }
    out.into_iter().filter(|&d| d > 0.0).collect()
  }

  /// Every 2^23 significand, for every divisor, at the bottom, middle and top of the dividends'
  /// range: 2.5·10⁹ divisions, a minute in release (`cargo test --release -- --ignored`). The
  /// default run takes every 61st significand.
  #[test]
  #[ignore]
  fn every_f32_significand_of_a_binade_divides_as_slash_does() {
    f32_significands(1);
  }

  #[test]
  fn f32_significands_divide_as_slash_does() {
    f32_significands(61);
  }

  fn f32_significands(stride: usize) {
    for d in divisors() {
      let d = d as f32;
      let Some(divisor) = ExactDivisor::new(d) else { continue };
      for scale in [2f32.powi(-90), 2f32.powi(-75), 1.0, 3.0f32.sqrt(), 2f32.powi(63), 2f32.powi(89)] {
        for bits in (0..1u32 << 23).step_by(stride) {
          let x = f32::from_bits(0x3f80_0000 | bits) * scale;
          let (fast, slow) = (divisor.divide(x), x / d);
          assert!(fast.to_bits() == slow.to_bits(), "{x:e} / {d:e}: {fast:e}, `/` gives {slow:e}");
        }
      }
    }
  }

  #[test]
  fn f64_dividends_divide_as_slash_does() {
    let mut s = 0x2545_F491_4F6C_DD1Du64;
    for d in divisors() {
      let divisor = ExactDivisor::new(d).expect("in range");
      for _ in 0..400_000 {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        // Random significand, exponent across [-900, 900].
        let x = f64::from_bits(0x3ff0_0000_0000_0000 | (s >> 12)) * 2f64.powi((s % 1801) as i32 - 900);
        assert_eq!(divisor.divide(x).to_bits(), (x / d).to_bits(), "{x:e} / {d:e}");
      }
    }
  }

  #[test]
  fn zero_infinity_and_nan_divide_as_slash_does() {
    for d in [1.0f32, 0.031_622_775, 2f32.powi(-30)] {
      let divisor = ExactDivisor::new(d).unwrap();
      for x in [0.0f32, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, -f32::NAN] {
        assert_eq!(divisor.divide(x).to_bits(), (x / d).to_bits(), "{x} / {d}");
      }
    }
    assert!(ExactDivisor::new(0.0f32).is_none() && ExactDivisor::new(1.5f64).is_none());
    assert!(ExactDivisor::new(f64::NAN).is_none() && ExactDivisor::new(2f64.powi(-31)).is_none());
  }
}
