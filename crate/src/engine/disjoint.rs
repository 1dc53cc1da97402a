//! A mutable slice that the pieces of one parallel pass share, each reading and writing only
//! elements that no other piece touches meanwhile.

use std::ops::Range;

/// A mutable slice handed to every piece of a pass on the engine's pool ([`super::threads`]), for
/// passes whose pieces split one output by ranges the borrow checker cannot see: blocks of rows
/// of a product (Muon), chunks of L-BFGS's flat vectors, the pages a new state buffer maps, the
/// pieces of two arrays the weight averages swap.
///
/// It holds no lifetime, so that a pass can keep them in a reused vector; whoever makes one from a
/// `&mut [T]` keeps that borrow for the whole pass.
#[derive(Clone, Copy)]
pub(crate) struct DisjointMut<T> {
  start: *mut T,
  len: usize,
}

// SAFETY: each element is reached by one piece at a time ([`DisjointMut::part`]'s contract), and
// the slice outlives the pass that shares it (its maker's borrow).
unsafe impl<T: Send> Send for DisjointMut<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for DisjointMut<T> {}

impl<T> DisjointMut<T> {
  /// Shares `slice` for one pass; the caller keeps it borrowed until the pass is over.
  pub fn of(slice: &mut [T]) -> Self {
    DisjointMut { start: slice.as_mut_ptr(), len: slice.len() }
  }

  /// The length of the shared slice.
  pub fn len(self) -> usize {
    self.len
  }

  /// The elements `range` of the shared slice (panics if it is not within it).
  ///
  /// # Safety
  /// No other live reference overlaps `range` while the result is used (each piece of a pass takes
  /// ranges of its own), and the slice is still borrowed by the maker of `self`.
  #[allow(clippy::mut_from_ref)]
  pub unsafe fn part<'a>(self, range: Range<usize>) -> &'a mut [T] {
    assert!(range.start <= range.end && range.end <= self.len, "{range:?} is outside a slice of {}", self.len);
    // SAFETY: in bounds (checked above); exclusive and alive by the caller's contract.
    unsafe { std::slice::from_raw_parts_mut(self.start.add(range.start), range.end - range.start) }
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn pieces_write_their_own_parts() {
    let mut values = vec![0u32; 1000];
    let shared = DisjointMut::of(&mut values);
    crate::threads::for_each_piece(10, &|piece| {
      // SAFETY: each piece takes its own hundred elements; `values` is borrowed until the pass ends.
      let part = unsafe { shared.part(piece * 100..(piece + 1) * 100) };
      part.iter_mut().for_each(|x| *x = piece as u32 + 1);
    });
    assert!(values.iter().enumerate().all(|(i, &x)| x == (i / 100) as u32 + 1));
  }

  #[test]
  #[should_panic(expected = "outside a slice of 4")]
  fn a_part_past_the_end_panics() {
    let mut values = [0u8; 4];
    let shared = DisjointMut::of(&mut values);
    // SAFETY: the only part taken; it panics before making a slice.
    let _ = unsafe { shared.part(2..5) };
  }
}
