//! Adam's `f32` loop in AVX-512, with half of its square roots off the divide unit.
//!
//! Every element of an Adam step takes a square root and a division, and on x86 cores both go to
//! one divide unit, which finishes a 16-lane vector of either only every 10-12 cycles. With the
//! division by √(1 − β₂ᵗ) already made multiply-adds ([`crate::divide`]), that unit alone bounds
//! the step whenever its arrays are in cache. Here the loop goes in rounds of two vectors: the
//! first takes its square roots by [`crate::root`]'s multiply-adds, which the two FMA ports run
//! beside the rest of the loop, the second by the instruction, so that the divide unit and the
//! ports are about equally busy. Each round's first half (the moments and the roots) runs beside
//! the second half (the divisions and p) of the round before it, so that their long chains
//! overlap. Where the multiply-add ports, not the divide unit, bound the loop (AMD's Zen 4, whose
//! 512-bit operations each take a 256-bit port twice, while the step divides by √(1 − β₂ᵗ)),
//! every square root by the instruction is faster: which share runs is timed once per process
//! ([`super::roots_by_instruction`]). The bits are those of [`super::fused_in`] either way
//! (tested).
//!
//! The multiply-adds give `sqrt`'s bits for second moments in [`LOW`](crate::root::LOW) to
//! [`HIGH`](crate::root::HIGH). A round whose second moments are all in that range (nearly every
//! round: a moment is below it only where every gradient so far was 0 or under about 10⁻¹⁵) runs
//! the quick way; any other round runs as the plain loop does, with the instruction and the checks
//! for roots that are 0, ∞ or NaN. A second moment in range is finite, and so is the gradient it
//! came from (a NaN or ±∞ gradient makes it NaN or +∞), so only the plain rounds look at the
//! gradients for the step's report of non-finite ones.

use std::arch::x86_64::*;

use super::Scalars;
use crate::engine::simd::dispatch;
use crate::root::avx512::{all_in_range, sqrt};

/// Vectors per round.
const VECTORS: usize = 2;
/// Which vectors of a quick round take their square roots by the instruction, unless all do. Of
/// the shares tried on Intel's Xeon, one in two was the fastest (BENCHMARKS.md, "Design choices").
const BY_INSTRUCTION: [bool; VECTORS] = [false, true];
/// Elements per round.
pub const ROUND: usize = 16 * VECTORS;

/// The arrays of a step: the parameter, its gradient, the moments, and AMSGrad's maximum (null
/// without AMSGrad).
#[derive(Clone, Copy)]
pub struct Arrays {
  pub p: *mut f32,
  pub g: *const f32,
  pub m: *mut f32,
  pub v: *mut f32,
  pub u: *mut f32,
}

/// Runs whole rounds of Adam over the first `len / ROUND * ROUND` elements and returns how many it
/// did, with whether a gradient among them was NaN or ±∞. With `all_roots`, a quick round takes
/// every square root by the instruction, else those [`BY_INSTRUCTION`] says: the same bits.
///
/// # Safety
/// The CPU has AVX-512F/VL and FMA; each array (`u` when not null) is valid for `len` elements,
/// and the written ones (`p`, `m`, `v`, `u`) alias no other.
pub unsafe fn rounds(k: &Scalars<f32>, l2: bool, len: usize, arrays: Arrays, all_roots: bool) -> (usize, bool) {
  // Multiplying by 1 changes no bits, so the usual case (neither maximize nor decoupled decay)
  // skips both multiplications, and each form of the lerp gets its own loop: a choice the loop
  // made per vector cost as much as the multiplications.
  let plain = k.gradient.sign() == 1.0 && k.decay_factor == 1.0;
  let from_m = k.lerp.from_x();
  let amsgrad = !arrays.u.is_null();
  // SAFETY: the caller's guarantees.
  unsafe {
    dispatch!(run::<>[PLAIN: plain, FROM_M: from_m, L2: l2, AMSGRAD: amsgrad, ALL_ROOTS: all_roots](k, len, arrays))
  }
}

/// Half a round in flight: m's new values, p (times the decay factor), and the roots.
#[derive(Clone, Copy)]
struct Half {
  first: [__m512; VECTORS],
  kept: [__m512; VECTORS],
  roots: [__m512; VECTORS],
  quick: bool,
}

/// [`rounds`] for one set of options: `PLAIN` without the gradient's sign and the decay factor,
/// `FROM_M` the lerp's form, `L2` with the penalty folded into the gradient, `AMSGRAD` with `u`,
/// `ALL_ROOTS` every square root of a quick round by the instruction.
///
/// # Safety
/// As [`rounds`].
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
unsafe fn run<const PLAIN: bool, const FROM_M: bool, const L2: bool, const AMSGRAD: bool, const ALL_ROOTS: bool>(
  k: &Scalars<f32>,
  len: usize,
  arrays: Arrays,
) -> (usize, bool) {
  let Arrays { p, g, m, v, u } = arrays;
  let splat = _mm512_set1_ps;
  let (sign, l2, decay) = (splat(k.gradient.sign()), splat(k.gradient.l2()), splat(k.decay_factor));
  let lerp = splat(k.lerp.coeff());
  let (beta2, gsw, eps, nss) = (splat(k.beta2), splat(k.grad_sq_weight), splat(k.eps), splat(k.neg_step_size));
  let (c2, c2_inverse) = (splat(k.bias_correction2_sqrt.divisor()), splat(k.bias_correction2_sqrt.reciprocal()));
  // √(1 − β₂ᵗ) rounds to 1 once β₂ᵗ < 2⁻²⁴ (after about 17,000 steps with β₂ = 0.999, 330 with
  // 0.95), and a finite root divided by 1 is itself.
  let unit = k.bias_correction2_sqrt.divisor() == 1.0;
  let magnitude = _mm512_set1_epi32(0x7fff_ffff);
  let mut seen = _mm512_setzero_si512();
  let end = len / ROUND * ROUND;
  if end == 0 {
    return (0, false);
  }
  // The first half of a round: the moments, and the square roots (or, in a plain round, the roots
  // already divided by √(1 − β₂ᵗ)).
  let mut front = |r: usize| -> Half {
    // SAFETY: r + ROUND ≤ len for every pointer (the caller's guarantees).
    unsafe {
      let at = |j: usize| r + 16 * j;
      let mut half = Half {
        first: [_mm512_setzero_ps(); VECTORS],
        kept: [_mm512_setzero_ps(); VECTORS],
        roots: [_mm512_setzero_ps(); VECTORS],
        quick: false,
      };
      let mut second = [_mm512_setzero_ps(); VECTORS];
      let mut grads = [_mm512_setzero_ps(); VECTORS];
      for j in 0..VECTORS {
        let g0 = _mm512_loadu_ps(g.add(at(j)));
        grads[j] = g0;
        let p0 = _mm512_loadu_ps(p.add(at(j)));
        let mut gi = if PLAIN { g0 } else { _mm512_mul_ps(g0, sign) };
        if L2 {
          gi = _mm512_fmadd_ps(l2, p0, gi);
        }
        half.kept[j] = if PLAIN { p0 } else { _mm512_mul_ps(p0, decay) };
        let m0 = _mm512_loadu_ps(m.add(at(j)));
        half.first[j] = _mm512_fmadd_ps(lerp, _mm512_sub_ps(gi, m0), if FROM_M { m0 } else { gi });
        let vi = _mm512_fmadd_ps(_mm512_mul_ps(gsw, gi), gi, _mm512_mul_ps(_mm512_loadu_ps(v.add(at(j))), beta2));
        _mm512_storeu_ps(m.add(at(j)), half.first[j]);
        _mm512_storeu_ps(v.add(at(j)), vi);
        second[j] = if AMSGRAD {
          // max_nan: NaN (the default one) if either is, else the larger, v on a tie.
          let u0 = _mm512_loadu_ps(u.add(at(j)));
          let larger = _mm512_max_ps(u0, vi);
          let either_nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(u0, vi);
          let ui = _mm512_mask_mov_ps(larger, either_nan, splat(f32::NAN));
          _mm512_storeu_ps(u.add(at(j)), ui);
          ui
        } else {
          vi
        };
      }
      half.quick = all_in_range(second);
      half.roots = if half.quick {
        let by_instruction = |j: usize| ALL_ROOTS || BY_INSTRUCTION[j];
        std::array::from_fn(|j| if by_instruction(j) { _mm512_sqrt_ps(second[j]) } else { sqrt(second[j]) })
      } else {
        for g0 in grads {
          seen = _mm512_max_epu32(seen, _mm512_and_si512(_mm512_castps_si512(g0), magnitude));
        }
        // The instruction rounds as `/` does for every root, 0, ∞ and NaN included.
        second.map(|x| _mm512_div_ps(_mm512_sqrt_ps(x), c2))
      };
      half
    }
  };
  // The second half: the division by √(1 − β₂ᵗ) of a quick round, and the update of p.
  let back = |r: usize, half: Half| {
    // SAFETY: as `front`.
    unsafe {
      let scaled = if half.quick && !unit {
        // Every root is finite and positive, where ExactDivisor's multiply-adds need no checks.
        half.roots.map(|x| {
          let q0 = _mm512_mul_ps(x, c2_inverse);
          let q1 = _mm512_fmadd_ps(_mm512_fnmadd_ps(q0, c2, x), c2_inverse, q0);
          _mm512_fmadd_ps(_mm512_fnmadd_ps(q1, c2, x), c2_inverse, q1)
        })
      } else {
        half.roots
      };
      for (j, scaled) in scaled.into_iter().enumerate() {
        let denom = _mm512_add_ps(scaled, eps);
        let step = _mm512_div_ps(_mm512_mul_ps(nss, half.first[j]), denom);
        _mm512_storeu_ps(p.add(r + 16 * j), _mm512_add_ps(half.kept[j], step));
      }
    }
  };
  // Each round's first half runs beside the second half of the round before it, so that the
  // long chains of the two overlap.
  let mut last = front(0);
  for r in (ROUND..end).step_by(ROUND) {
    let next = front(r);
    back(r - ROUND, last);
    last = next;
  }
  back(end - ROUND, last);
  let non_finite = _mm512_cmpge_epu32_mask(seen, _mm512_set1_epi32(f32::INFINITY.to_bits() as i32)) != 0;
  (end, non_finite)
}
