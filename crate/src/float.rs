//! The element types a kernel runs over: `f32` and `f64`.

use std::fmt::Debug;
use std::ops::{Add, Div, Mul, Neg, Sub};

/// An IEEE float the kernels are generic over.
///
/// Every operation is a single correctly rounded IEEE operation (`mul_add` is a fused
/// multiply-add, `sqrt` the IEEE square root), so a kernel gives the same bits whether
/// the compiler vectorises it or not, and whatever the thread count.
pub trait Float:
  Copy
  + Send
  + Sync
  + Debug
  + PartialOrd
  + Add<Output = Self>
  + Sub<Output = Self>
  + Mul<Output = Self>
  + Div<Output = Self>
  + Neg<Output = Self>
  + crate::engine::state::Stored
  + 'static
{
  const ZERO: Self;
  const ONE: Self;
  /// The dtype name PyTorch uses for this type.
  const DTYPE: Dtype;

  /// Rounds an `f64` scalar to this type (exact for `f64`).
  fn from_f64(x: f64) -> Self;
  fn to_f64(self) -> f64;
  /// `self * a + b` with one rounding.
  fn mul_add(self, a: Self, b: Self) -> Self;
  fn sqrt(self) -> Self;
  fn abs(self) -> Self;
  /// The larger of the two; NaN if either is NaN, as PyTorch's `maximum`.
  fn max_nan(self, other: Self) -> Self;
  fn is_finite(self) -> bool;
  /// Signed integers of the type's width: the magnitude's bits are never negative, and AVX2
  /// compares 64-bit integers only as signed ones.
  type Bits: Copy + Ord + Default + std::fmt::Debug;
  /// [`Self::magnitude_bits`] of ∞.
  const INFINITY_BITS: Self::Bits;
  /// The bits of `|self|`: they order magnitudes, and NaN and ±∞ are those at or above
  /// [`Self::INFINITY_BITS`]. A loop that keeps their running maximum ([`NonFinite`]) vectorises
  /// into a mask and an integer maximum per vector, fewer instructions than ORing
  /// `!is_finite()` into a flag.
  fn magnitude_bits(self) -> Self::Bits;
  /// `c ← alpha·a·b + beta·c` for row-major matrices of the shapes `product` gives; `c` is not
  /// read when `beta` is 0. matrixmultiply's `sgemm` or `dgemm`, on the calling thread: the same
  /// inputs give the same bits on any thread.
  ///
  /// # Panics
  /// If a slice is shorter than its shape.
  fn gemm(product: Product, alpha: Self, a: &[Self], b: &[Self], beta: Self, c: &mut [Self]);
}

/// The shapes of a matrix product `a·b` of row-major matrices: `a` m×k, `b` k×n (held as its
/// transpose, n×k, when `b_transposed`), the result m×n.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Product {
  pub m: usize,
  pub k: usize,
  pub n: usize,
  pub b_transposed: bool,
}

/// PyTorch's vectorised `x.lerp_(y, w)`, with w rounded to the dtype: `fma(w, y − x, x)` for
/// |w| < ½, else `fma(w − 1, y − x, y)`.
#[derive(Clone, Copy, Debug)]
pub struct Lerp<T> {
  coeff: T,
  from_x: bool,
}

impl<T: Float> Lerp<T> {
  pub fn new(weight: f64) -> Self {
    let w = T::from_f64(weight);
    let from_x = w.abs() < T::from_f64(0.5);
    Lerp { coeff: if from_x { w } else { w - T::ONE }, from_x }
  }

  /// The multiplier of `y − x` in [`Self::apply`].
  #[inline(always)]
  pub fn coeff(&self) -> T {
    self.coeff
  }

  /// Whether [`Self::apply`] adds to `x` (else to `y`).
  #[inline(always)]
  pub fn from_x(&self) -> bool {
    self.from_x
  }

  #[inline(always)]
  pub fn apply(&self, x: T, y: T) -> T {
    self.coeff.mul_add(y - x, if self.from_x { x } else { y })
  }
}

/// Element type of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
  Float32,
  Float64,
}

impl Dtype {
  pub fn name(self) -> &'static str {
    match self {
      Dtype::Float32 => "float32",
      Dtype::Float64 => "float64",
    }
  }

  pub fn size(self) -> usize {
    match self {
      Dtype::Float32 => 4,
      Dtype::Float64 => 8,
    }
  }
}

/// A loop's check for NaN and ±∞ among the elements it reads: the running maximum of their
/// [`Float::magnitude_bits`], `see` per element, `found` once after the loop.
#[derive(Clone, Copy, Debug)]
pub struct NonFinite<T: Float>(T::Bits);

impl<T: Float> NonFinite<T> {
  #[inline(always)]
  pub fn new() -> Self {
    NonFinite(T::Bits::default())
  }

  #[inline(always)]
  pub fn see(&mut self, x: T) {
    self.0 = self.0.max(x.magnitude_bits());
  }

  /// Whether an element seen was NaN or ±∞.
  #[inline(always)]
  pub fn found(self) -> bool {
    self.0 >= T::INFINITY_BITS
  }
}

impl<T: Float> Default for NonFinite<T> {
  fn default() -> Self {
    Self::new()
  }
}

macro_rules! impl_float {
  ($t:ty, $bits:ty, $dtype:expr, $gemm:path) => {
    impl Float for $t {
      type Bits = $bits;
      const INFINITY_BITS: $bits = <$t>::INFINITY.to_bits() as $bits;
      const ZERO: Self = 0.0;
      const ONE: Self = 1.0;
      const DTYPE: Dtype = $dtype;

      #[inline(always)]
      fn from_f64(x: f64) -> Self {
        x as $t
      }
      #[inline(always)]
      fn to_f64(self) -> f64 {
        self as f64
      }
      #[inline(always)]
      fn mul_add(self, a: Self, b: Self) -> Self {
        <$t>::mul_add(self, a, b)
      }
      #[inline(always)]
      fn sqrt(self) -> Self {
        <$t>::sqrt(self)
      }
      #[inline(always)]
      fn abs(self) -> Self {
        <$t>::abs(self)
      }
      #[inline(always)]
      fn max_nan(self, other: Self) -> Self {
        if self.is_nan() || other.is_nan() {
          <$t>::NAN
        } else if self > other {
          self
        } else {
          other
        }
      }
      #[inline(always)]
      fn is_finite(self) -> bool {
        <$t>::is_finite(self)
      }
      #[inline(always)]
      fn magnitude_bits(self) -> $bits {
        (self.to_bits() as $bits) & <$bits>::MAX
      }
      fn gemm(product: Product, alpha: Self, a: &[Self], b: &[Self], beta: Self, c: &mut [Self]) {
        let Product { m, k, n, b_transposed } = product;
        assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n, "gemm: a slice is shorter than its shape");
        let (rsb, csb) = if b_transposed { (1, k as isize) } else { (n as isize, 1) };
        // SAFETY: every index the strides reach is within its slice (checked above); `c` is an
        // exclusive borrow that overlaps neither input.
        unsafe {
          $gemm(m, k, n, alpha, a.as_ptr(), k as isize, 1, b.as_ptr(), rsb, csb, beta, c.as_mut_ptr(), n as isize, 1)
        }
      }
    }
  };
}

impl_float!(f32, i32, Dtype::Float32, matrixmultiply::sgemm);
impl_float!(f64, i64, Dtype::Float64, matrixmultiply::dgemm);

#[cfg(test)]
mod tests {
  use super::*;

  fn found<T: Float>(values: &[T]) -> bool {
    let mut check = NonFinite::new();
    values.iter().for_each(|&x| check.see(x));
    check.found()
  }

  #[test]
  fn the_running_maximum_of_magnitude_bits_finds_nan_and_infinities_only() {
    let f32_nans = [f32::NAN, -f32::NAN, f32::from_bits(0x7f80_0001), f32::from_bits(0xffc0_1234)];
    for x in f32_nans.into_iter().chain([f32::INFINITY, f32::NEG_INFINITY]) {
      assert!(found::<f32>(&[0.0, x, -1.0]), "{x}");
      assert!(found::<f32>(&[x]), "{x}");
    }
    let f32_finite = [0.0, -0.0, f32::MAX, f32::MIN, f32::MIN_POSITIVE, -f32::from_bits(1), 1.0, -3.4e38];
    assert!(!found::<f32>(&f32_finite));
    assert!(!found::<f32>(&[]));
    let f64_nans = [f64::NAN, -f64::NAN, f64::from_bits(0x7ff0_0000_0000_0001), f64::from_bits(0xfff8_0000_0000_1234)];
    for x in f64_nans.into_iter().chain([f64::INFINITY, f64::NEG_INFINITY]) {
      assert!(found::<f64>(&[0.0, x, -1.0]), "{x}");
    }
    let f64_finite = [0.0, -0.0, f64::MAX, f64::MIN, f64::MIN_POSITIVE, -f64::from_bits(1), 1.0, -1.7e308];
    assert!(!found::<f64>(&f64_finite));
  }
}
