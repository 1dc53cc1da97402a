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

macro_rules! impl_float {
  ($t:ty, $dtype:expr, $gemm:path) => {
    impl Float for $t {
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

impl_float!(f32, Dtype::Float32, matrixmultiply::sgemm);
impl_float!(f64, Dtype::Float64, matrixmultiply::dgemm);
