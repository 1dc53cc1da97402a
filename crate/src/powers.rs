//! βᵗ for the bias corrections, from a table of the next steps' powers.
//!
//! Adam and its relatives compute 1 − β₁ᵗ and 1 − β₂ᵗ at every step with `powf`, as PyTorch does
//! (its bits are the reference's). In a training loop the forward and backward passes between two
//! steps evict libm's `pow`, its code and its tables, and the two calls then cost about as much as
//! updating a few thousand parameters. So [`power`] computes the powers of a base for
//! [`AHEAD`] steps at once, while `pow` is in cache, and answers the following steps from that
//! table: the same `powf` calls, made earlier, hence the same bits.
//!
//! The table belongs to the calling thread (no lock, nothing shared) and holds [`BASES`] bases;
//! a new base takes the place of the one used longest ago.

use std::cell::RefCell;

/// How many consecutive steps' powers a base's row holds.
pub const AHEAD: usize = 64;

/// How many bases the table holds (Adam's β₁ and β₂ for a few optimizers with different betas).
pub const BASES: usize = 6;

/// The powers of up to [`BASES`] bases, each for [`AHEAD`] consecutive steps from `first`.
struct Table {
  /// Each row's base, as bits (an empty row: `u64::MAX`, a NaN's, and NaN never gets a row).
  bases: [u64; BASES],
  /// Each row's first step.
  first: [u64; BASES],
  /// When each row was last used ([`Table::clock`]), to choose the row a new base replaces.
  used: [u64; BASES],
  clock: u64,
  powers: [[f64; AHEAD]; BASES],
}

thread_local! {
  static TABLE: RefCell<Table> = const {
    RefCell::new(Table {
      bases: [u64::MAX; BASES],
      first: [0; BASES],
      used: [0; BASES],
      clock: 0,
      powers: [[0.0; AHEAD]; BASES],
    })
  };
}

/// `base.powf(step as f64)`, the same bits, from the calling thread's table of powers: on a miss,
/// the powers of `base` for `step` and the [`AHEAD`] − 1 steps after it are computed and kept.
pub fn power(base: f64, step: u64) -> f64 {
  if base.is_nan() {
    return base.powf(step as f64);
  }
  TABLE.with(|table| table.borrow_mut().power(base, step))
}

impl Table {
  fn power(&mut self, base: f64, step: u64) -> f64 {
    self.clock += 1;
    let bits = base.to_bits();
    let row = match self.bases.iter().position(|&b| b == bits) {
      Some(row) if step >= self.first[row] && step - self.first[row] < AHEAD as u64 => row,
      found => {
        // The row of this base, or the one used longest ago.
        let row = found.unwrap_or_else(|| (0..BASES).min_by_key(|&r| self.used[r]).unwrap_or(0));
        self.bases[row] = bits;
        self.first[row] = step;
        for (k, slot) in self.powers[row].iter_mut().enumerate() {
          *slot = base.powf(step.saturating_add(k as u64) as f64);
        }
        row
      }
    };
    self.used[row] = self.clock;
    self.powers[row][(step - self.first[row]) as usize]
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  /// Every answer has `powf`'s bits, for bases that share rows, evict each other and come back,
  /// for steps going forward, back, jumping, and at the ends of the range.
  #[test]
  fn same_bits_as_powf() {
    let bases =
      [0.9, 0.999, 0.5, 0.95, 0.99, 0.3, 0.7, 1.0, 0.0, -0.5, f64::NAN, f64::from_bits(u64::MAX), 0.999_999_9];
    let mut steps: Vec<u64> = (1..300).collect();
    steps.extend([1, 2, 63, 64, 65, 200, 128, 127, 1 << 20, (1 << 53) - 1, u64::MAX - 3, u64::MAX, 0]);
    for round in 0..3u64 {
      for &step in &steps {
        for (k, &base) in bases.iter().enumerate() {
          // Some bases only every few steps, so that rows are replaced and come back.
          if k >= 2 && !step.wrapping_add(round).is_multiple_of(k as u64 + 1) {
            continue;
          }
          let want = base.powf(step as f64);
          let got = power(base, step);
          assert_eq!(got.to_bits(), want.to_bits(), "{base}^{step}");
        }
      }
    }
  }

  /// A base whose row is full moves the row on: the steps after it come from one computation.
  #[test]
  fn rows_move_with_the_steps() {
    let base = 0.987_654_321;
    for step in 1..=(3 * AHEAD as u64) {
      assert_eq!(power(base, step).to_bits(), base.powf(step as f64).to_bits());
    }
    TABLE.with(|table| {
      let table = table.borrow();
      let row = table.bases.iter().position(|&b| b == f64::to_bits(base)).expect("a row of the base");
      assert_eq!(table.first[row], 2 * AHEAD as u64 + 1);
    });
  }
}
