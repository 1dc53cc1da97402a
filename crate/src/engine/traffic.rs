//! For benchmarks only: the memory-traffic baseline a step is measured against.
//!
//! Adam over `n` elements reads four arrays (p, g, m, v) and writes three (p, m, v). From a few
//! million elements up it is limited by how fast memory moves, not by arithmetic, so the honest
//! yardstick is a kernel that moves exactly the same bytes with trivial arithmetic, run through
//! the same engine on the same threads: [`MemoryTraffic`], an "optimizer" whose update is
//! `m ← m + g; v ← v + g; p ← p + g`. A step at that speed is at the limit.

use crate::engine::run::MAX_BUFFERS;
use crate::engine::simd::multiversion;
use crate::float::{Float, NonFinite};
use crate::optimizers::{Buffer, Optimizer};

crate::options! {
  /// Reads four arrays and writes three, as Adam does, with one addition each.
  pub struct MemoryTraffic {}
}

impl Optimizer for MemoryTraffic {
  const NAME: &'static str = "MemoryTraffic";
  const SUMMARY: &'static str = "Adam's memory traffic with one addition per array: the yardstick of a step";
  const BUFFERS: &'static [Buffer] = &[Buffer::like_param("m"), Buffer::like_param("v")];
  type Coeffs = ();

  fn coeffs(&self, _step: u64) {}

  #[inline]
  fn update<T: Float>(_: &(), param: &mut [T], grad: &[T], buffers: [&mut [T]; MAX_BUFFERS]) -> bool {
    let [m, v, _] = buffers;
    let mut non_finite = false;
    add_best::<T>(param, grad, m, v, &mut non_finite);
    non_finite
  }

  fn update_reference<T: Float>(_: &(), param: &mut [T], grad: &[T], buffers: [&mut [T]; MAX_BUFFERS]) {
    let [m, v, _] = buffers;
    for i in 0..param.len() {
      m[i] = m[i] + grad[i];
      v[i] = v[i] + grad[i];
      param[i] = param[i] + grad[i];
    }
  }
}

multiversion!(fn add_best<T: Float>(param: &mut [T], grad: &[T], m: &mut [T], v: &mut [T], non_finite: &mut bool) => add);

#[inline(always)]
fn add<T: Float>(param: &mut [T], grad: &[T], m: &mut [T], v: &mut [T], non_finite: &mut bool) {
  let n = param.len();
  let (grad, m, v) = (&grad[..n], &mut m[..n], &mut v[..n]);
  let mut check = NonFinite::new();
  for i in 0..n {
    check.see(grad[i]);
    let g = grad[i];
    m[i] = m[i] + g;
    v[i] = v[i] + g;
    param[i] = param[i] + g;
  }
  *non_finite |= check.found();
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::testing::assert_fused_matches_reference;

  #[test]
  fn engine_and_reference_agree() {
    assert_fused_matches_reference(&[MemoryTraffic {}]);
  }
}
