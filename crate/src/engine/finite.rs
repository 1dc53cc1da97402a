//! Non-finite gradients: finding NaN and ±∞ in a gradient.
//!
//! The policy, as PyTorch's: a step proceeds whatever its gradients hold, so NaN and ∞ flow into
//! the parameters and the state. [`crate::run`] reports whether any gradient element it read was
//! non-finite, at no cost in memory traffic: each elementwise kernel checks the gradient elements
//! in its own loop as it reads them (`Optimizer::update`); the staged optimizers scan each part of
//! a gradient right after the stage that read it, while it is still in cache ([`any_non_finite`]).
//! A caller
//! that would rather skip such a step checks every gradient first with [`all_finite`] (one more
//! read of the gradients) and runs nothing if one fails, so a step stays all-or-none.

use crate::engine::simd::multiversion;
use crate::float::{Float, NonFinite};

multiversion!(fn scan_best<T: Float>(values: &[T], found: &mut bool) => scan);

/// Sets `found` if any element of `values` is NaN or infinite. Branch-free, so that it
/// vectorises into a running maximum of the magnitudes' bits ([`NonFinite`]).
#[inline(always)]
fn scan<T: Float>(values: &[T], found: &mut bool) {
  let mut check = NonFinite::new();
  for &x in values {
    check.see(x);
  }
  *found |= check.found();
}

/// Whether any element of `values` is NaN or infinite.
pub fn any_non_finite<T: Float>(values: &[T]) -> bool {
  let mut found = false;
  scan_best::<T>(values, &mut found);
  found
}

/// Whether every element of every array of `arrays` is finite.
pub fn all_finite<'a, T: Float>(arrays: impl IntoIterator<Item = &'a [T]>) -> bool {
  arrays.into_iter().all(|values| !any_non_finite(values))
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn finds_nan_and_both_infinities_anywhere_and_nothing_else() {
    for len in [0usize, 1, 7, 8, 9, 16, 17, 63, 64, 65, 1000] {
      let clean: Vec<f32> = (0..len).map(|i| (i as f32 - 3.5) * 1e35).collect();
      assert!(!any_non_finite(&clean), "len {len}");
      let clean64: Vec<f64> =
        (0..len).map(|i| f64::MAX / (i as f64 + 1.0) * if i % 2 == 0 { 1.0 } else { -1.0 }).collect();
      assert!(!any_non_finite(&clean64), "len {len}");
      for at in [0, len / 2, len.saturating_sub(1)] {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
          let mut values = clean.clone();
          if len > 0 {
            values[at] = bad;
            assert!(any_non_finite(&values), "len {len}, {bad} at {at}");
          }
        }
        if len > 0 {
          let mut values = clean64.clone();
          values[at] = f64::NAN;
          assert!(any_non_finite(&values));
        }
      }
    }
    let subnormal = [f32::MIN_POSITIVE / 4.0, -0.0, f32::MAX, f32::MIN];
    assert!(!any_non_finite(&subnormal));
    assert!(all_finite([&subnormal[..], &[1.0][..]]));
    assert!(!all_finite([&subnormal[..], &[f32::NAN][..]]));
  }
}
