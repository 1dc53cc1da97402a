//! State buffers placed apart in the L1 cache: [`Placed`].
//!
//! A step reads a parameter's element `i` and each of its state buffers' element `i` together, so
//! at any moment it holds one cache line of each array in L1. Large allocations come from the
//! system in whole pages placed one after another, so a parameter's buffers start at the same
//! offset within a page and their lines at one index fall in the same L1 set. At some sizes that
//! made a step much slower, Adam at 32M float32 elements and at 64M with bfloat16 state among them
//! (`cargo bench --bench placed` measures both ways; BENCHMARKS.md, "Design choices", has the
//! figures). The likely cause is the L1 way predictor of AMD's cores, which tells the lines of a
//! set apart by a hash of their address bits: two lines written in turn whose addresses hash alike
//! cannot both stay.
//!
//! A [`Placed`] buffer of at least [`PLACED_MIN_BYTES`] starts `(index % 3 + 1)` ×
//! [`STAGGER_BYTES`] into its allocation, where `index` is its place among the parameter's
//! buffers: the buffers then start 1, 2 and 3 KiB further into their pages than their allocations
//! do, so that their lines at one index lie in different L1 sets, whatever the distances between
//! the allocations.

use std::ops::{Deref, DerefMut};

use crate::engine::state::{advise_huge_pages, zeroed, ZeroBits};

/// Buffers smaller than this are not staggered: the slowdowns were measured with buffers of many
/// megabytes, and a stagger costs up to 3 KiB of memory for each buffer.
pub const PLACED_MIN_BYTES: usize = 64 << 10;

/// How much further into its page each buffer of a parameter starts than the one before it.
pub const STAGGER_BYTES: usize = 1024;

/// Buffers that start at different offsets within a 4 KiB page, besides their allocation's own.
const SLOTS: usize = 4096 / STAGGER_BYTES - 1;

/// A buffer of `len` elements that starts [`Placed::offset`] elements into its allocation; it
/// dereferences to those elements.
#[derive(Clone)]
pub struct Placed<T> {
  allocation: Vec<T>,
  start: usize,
}

impl<T: Copy + Send + Sync> Placed<T> {
  /// A buffer of `len` zeros ([`ZeroBits::ZEROED`]), the `index`th of its parameter's, its pages
  /// mapped by writes before any step reads them ([`crate::engine::state::zeroed`]).
  pub fn zeroed(len: usize, index: usize) -> Self
  where
    T: ZeroBits,
  {
    let start = Self::offset(len, index);
    // Mapping the allocation maps the buffer's pages and at most one more: the elements before
    // `start` take under 4 KiB.
    Placed { allocation: zeroed(start + len), start }
  }

  /// A buffer holding `values`, the `index`th of its parameter's.
  pub fn copied(values: &[T], index: usize) -> Self {
    Self::converted(values, index, |&x| x)
  }

  /// A buffer holding `convert` of each of `values`, the `index`th of its parameter's.
  pub fn converted<S>(values: &[S], index: usize, convert: impl Fn(&S) -> T) -> Self {
    let start = Self::offset(values.len(), index);
    let mut allocation: Vec<T> = Vec::with_capacity(start + values.len());
    // Before the pages are written, so that they come as huge pages.
    advise_huge_pages(allocation.as_ptr().cast(), allocation.capacity() * std::mem::size_of::<T>());
    if let Some(first) = values.first() {
      allocation.resize(start, convert(first));
    }
    allocation.extend(values.iter().map(convert));
    Placed { allocation, start }
  }

  /// Where the `index`th buffer of `len` elements starts in its allocation, in elements.
  pub fn offset(len: usize, index: usize) -> usize {
    let size = std::mem::size_of::<T>();
    if size == 0 || !STAGGER_BYTES.is_multiple_of(size) || len.saturating_mul(size) < PLACED_MIN_BYTES {
      return 0;
    }
    (index % SLOTS + 1) * STAGGER_BYTES / size
  }
}

impl<T> Deref for Placed<T> {
  type Target = [T];
  #[inline]
  fn deref(&self) -> &[T] {
    &self.allocation[self.start..]
  }
}

impl<T> DerefMut for Placed<T> {
  #[inline]
  fn deref_mut(&mut self) -> &mut [T] {
    &mut self.allocation[self.start..]
  }
}

/// Equal when the elements are (where each buffer starts in its allocation is not compared).
impl<T: PartialEq> PartialEq for Placed<T> {
  fn eq(&self, other: &Self) -> bool {
    **self == **other
  }
}

impl<T: PartialEq> PartialEq<Vec<T>> for Placed<T> {
  fn eq(&self, other: &Vec<T>) -> bool {
    **self == **other
  }
}

impl<'a, T> IntoIterator for &'a Placed<T> {
  type Item = &'a T;
  type IntoIter = std::slice::Iter<'a, T>;
  fn into_iter(self) -> Self::IntoIter {
    self.iter()
  }
}

impl<'a, T> IntoIterator for &'a mut Placed<T> {
  type Item = &'a mut T;
  type IntoIter = std::slice::IterMut<'a, T>;
  fn into_iter(self) -> Self::IntoIter {
    self.iter_mut()
  }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Placed<T> {
  fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    (**self).fmt(f)
  }
}

/// The first buffer of a parameter, holding `values`.
impl<T: Copy + Send + Sync> From<Vec<T>> for Placed<T> {
  fn from(values: Vec<T>) -> Self {
    if Self::offset(values.len(), 0) == 0 {
      return Placed { allocation: values, start: 0 };
    }
    Self::copied(&values, 0)
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  /// How far into its allocation `buffer` starts, in bytes.
  fn offset_bytes<T>(buffer: &Placed<T>) -> usize {
    buffer.as_ptr() as usize - buffer.allocation.as_ptr() as usize
  }

  #[test]
  fn buffers_of_one_parameter_start_a_kib_apart_in_their_allocations() {
    for len in [PLACED_MIN_BYTES / 4, 1 << 20, (32 << 20) / 4 + 5] {
      for index in 0..3 {
        let buffer = Placed::<f32>::zeroed(len, index);
        assert_eq!(offset_bytes(&buffer), (index + 1) * STAGGER_BYTES, "buffer {index} of {len}");
        assert!(buffer.len() == len && buffer.iter().all(|&x| x.to_bits() == 0), "buffer {index} of {len}");
      }
    }
  }

  #[test]
  fn small_buffers_and_odd_element_sizes_start_at_their_allocation() {
    assert_eq!(Placed::<f32>::offset(PLACED_MIN_BYTES / 4 - 1, 1), 0);
    assert_eq!(Placed::<[u8; 3]>::offset(1 << 20, 1), 0);
    assert_eq!(Placed::<u16>::offset(1 << 20, 0), STAGGER_BYTES / 2);
    assert_eq!(Placed::<f64>::offset(1 << 20, 2), 3 * STAGGER_BYTES / 8);
    assert_eq!(Placed::<f64>::offset(1 << 20, 3), STAGGER_BYTES / 8);
  }

  #[test]
  fn copies_and_conversions_keep_the_elements() {
    let values: Vec<f32> = (0..100_000).map(|i| i as f32 * 0.5).collect();
    for index in 0..4 {
      let placed = Placed::copied(&values, index);
      assert_eq!(&*placed, &values[..]);
      assert_eq!(placed.allocation.len(), values.len() + Placed::<f32>::offset(values.len(), index));
      assert_eq!(placed.clone(), placed);
    }
    let converted = Placed::from(values.clone());
    assert_eq!(&*converted, &values[..]);
    assert_eq!(offset_bytes(&converted), STAGGER_BYTES);
    let small = Placed::from(vec![1.0f32, 2.0]);
    assert_eq!(&*small, &[1.0, 2.0]);
    assert!(Placed::copied(&[] as &[f64], 1).is_empty());
  }
}
