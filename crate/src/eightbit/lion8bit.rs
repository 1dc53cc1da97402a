//! Lion with 8-bit state: bitsandbytes' `Lion8bit`.
//!
//! Chen et al., "Symbolic Discovery of Optimization Algorithms" (NeurIPS 2023), with the
//! momentum kept block-wise in 8 bits (Dettmers et al., ICLR 2022). With learning rate γ,
//! betas β₁ β₂, decay λ, gradient g and momentum m dequantized from its codes, each element is
//! updated as bitsandbytes' CPU backend does:
//!
//! ```text
//! p ← p·(1 − γλ)                 only when λ > 0
//! p ← p − γ·sign(β₁·m + (1 − β₁)·g)
//! m ← β₂·m + (1 − β₂)·g
//! ```
//!
//! then m is quantized again with its block's new absmax. Parameters under `min_8bit_size` keep
//! an `f32` momentum (bitsandbytes' 32-bit Lion, the same equations).
//!
//! Rounding, PyTorch's CPU kernels as bitsandbytes calls them, scalars rounded to `f32` once: the
//! 8-bit update's direction is `m.mul(β₁) + g.mul(1 − β₁)`, two products and a sum, while the
//! 32-bit update's is `m.mul(β₁).add(g, alpha=1 − β₁)`, a fused multiply-add; the momentum is
//! `fma(g, 1 − β₂, m·β₂)` in both; sign(0) = sign(NaN) = 0, as PyTorch's `sign`.

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
use super::simd::Lanes;
use super::simd::Level;
use super::{multiversion, EightBit, Hyper, Quantized};
use crate::float::NonFinite;
use crate::quantize::{self, absmax, blocks, QuantMap, BLOCK};

/// bitsandbytes' `Lion8bit`.
pub struct Lion8bit;

/// A Lion step's scalars, in `f32`.
#[derive(Clone, Copy, Debug)]
pub struct LionCoeffs {
  neg_lr: f32,
  beta1: f32,
  direction_weight: f32,
  beta2: f32,
  momentum_weight: f32,
  /// 1 − γλ when λ > 0, else 1.
  decay_factor: f32,
}

/// 1, −1, or 0 for ±0 and NaN, as PyTorch's `sign`.
#[inline(always)]
fn sign(x: f32) -> f32 {
  (x > 0.0) as u8 as f32 - (x < 0.0) as u8 as f32
}

impl EightBit for Lion8bit {
  const NAME: &'static str = "Lion8bit";
  const MOMENTS: usize = 1;
  type Coeffs = LionCoeffs;

  fn coeffs(h: &Hyper, _step: u64) -> LionCoeffs {
    LionCoeffs {
      neg_lr: -h.lr as f32,
      beta1: h.beta1 as f32,
      direction_weight: (1.0 - h.beta1) as f32,
      beta2: h.beta2 as f32,
      momentum_weight: (1.0 - h.beta2) as f32,
      decay_factor: if h.weight_decay > 0.0 { (1.0 - h.lr * h.weight_decay) as f32 } else { 1.0 },
    }
  }

  fn quantized_at(level: Level, c: &LionCoeffs, param: &mut [f32], grad: &[f32], moments: Quantized<'_>) -> bool {
    fused_at(level, c, param, grad, moments)
  }

  fn level() -> Level {
    static LEVEL: std::sync::OnceLock<Level> = std::sync::OnceLock::new();
    let hyper = Hyper { lr: 1e-4, beta1: 0.9, beta2: 0.99, eps: 0.0, weight_decay: 0.0 };
    *LEVEL.get_or_init(|| super::fastest_level::<Self>(&hyper))
  }

  fn quantized_reference(c: &LionCoeffs, param: &mut [f32], grad: &[f32], moments: Quantized<'_>) {
    let Quantized { state1, absmax1, .. } = moments;
    let signed = quantize::signed();
    let n = param.len();
    let mut m: Vec<f32> = (0..n).map(|i| signed.values[state1[i] as usize] * absmax1[i / BLOCK]).collect();
    for i in 0..n {
      let g = grad[i];
      let p = param[i] * c.decay_factor;
      let direction = m[i] * c.beta1 + g * c.direction_weight;
      param[i] = p + c.neg_lr * sign(direction);
      m[i] = g.mul_add(c.momentum_weight, m[i] * c.beta2);
    }
    for (b, start) in (0..n).step_by(BLOCK).enumerate() {
      let end = (start + BLOCK).min(n);
      absmax1[b] = quantize::quantize_block_reference(signed, &m[start..end], &mut state1[start..end]);
    }
  }

  fn full(c: &LionCoeffs, param: &mut [f32], grad: &[f32], state1: &mut [f32], _state2: &mut [f32]) -> bool {
    full_best(c, param, grad, state1)
  }
}

/// The fused kernel with the instructions of `level` (one this CPU runs: checked): whole blocks
/// in vector code, a partial last block (and everything, at [`Level::Portable`]) in the portable
/// kernel. The same bits at every level.
pub fn fused_at(level: Level, c: &LionCoeffs, param: &mut [f32], grad: &[f32], moments: Quantized<'_>) -> bool {
  let Quantized { state1, absmax1, .. } = moments;
  let signed = quantize::signed();
  let n = param.len();
  assert!(grad.len() == n && state1.len() == n && absmax1.len() == blocks(n), "Lion8bit: slices of {n} elements");
  assert!(level.runs_here(), "{level:?} is not supported by this CPU");
  // The vector kernel for the whole blocks, where `level` has one.
  type Kernel = unsafe fn(&LionCoeffs, &mut [f32], &[f32], &mut [u8], &mut [f32]) -> bool;
  let kernel: Option<Kernel> = match level {
    #[cfg(target_arch = "x86_64")]
    Level::Avx512 => Some(avx512),
    #[cfg(target_arch = "x86_64")]
    Level::Avx2 => Some(avx2),
    #[cfg(target_arch = "aarch64")]
    Level::Neon => Some(neon),
    _ => None,
  };
  let (done, whole_non_finite) = match kernel {
    None => (0, false),
    Some(kernel) => {
      let whole = n / BLOCK;
      let (p, g) = (&mut param[..whole * BLOCK], &grad[..whole * BLOCK]);
      let (s1, a1) = (&mut state1[..whole * BLOCK], &mut absmax1[..whole]);
      // SAFETY: this CPU has the level's features (asserted above); the slices are whole blocks
      // of one length (asserted above, cut to `whole` blocks).
      (whole, unsafe { kernel(c, p, g, s1, a1) })
    }
  };
  let rest = done * BLOCK;
  whole_non_finite | fused_best(c, signed, &mut param[rest..], &grad[rest..], &mut state1[rest..], &mut absmax1[done..])
}

/// The fused kernel in AVX-512 over whole blocks ([`whole_blocks`]): 16 vectors of 16 elements per
/// block.
///
/// # Safety
/// AVX-512F/VL and FMA; `param.len()` a multiple of [`BLOCK`], the codes as long, one absmax per block.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
unsafe fn avx512(c: &LionCoeffs, param: &mut [f32], grad: &[f32], state1: &mut [u8], absmax1: &mut [f32]) -> bool {
  // SAFETY: this function's features are those `Lanes16` stands for; the slices as it asks.
  unsafe { whole_blocks(super::simd::avx512::Lanes16::new(), c, param, grad, state1, absmax1) }
}

/// [`avx512`] with AVX2: 32 vectors of 8 elements per block.
///
/// # Safety
/// AVX2 and FMA; as [`avx512`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2(c: &LionCoeffs, param: &mut [f32], grad: &[f32], state1: &mut [u8], absmax1: &mut [f32]) -> bool {
  // SAFETY: this function's features are those `Lanes8` stands for; the slices as it asks.
  unsafe { whole_blocks(super::simd::avx2::Lanes8::new(), c, param, grad, state1, absmax1) }
}

/// `avx512` in NEON: 64 vectors of 4 elements per block.
///
/// # Safety
/// As `avx512`, but for the features: NEON is part of every AArch64 processor.
#[cfg(target_arch = "aarch64")]
unsafe fn neon(c: &LionCoeffs, param: &mut [f32], grad: &[f32], state1: &mut [u8], absmax1: &mut [f32]) -> bool {
  // SAFETY: NEON is part of the target; the slices as `whole_blocks` asks.
  unsafe { whole_blocks(super::simd::neon::Lanes4::new(), c, param, grad, state1, absmax1) }
}

/// The fused kernel in vectors of `L` over whole blocks: each block's vectors dequantized,
/// updated, kept in an aligned stack block with their running absmax, requantized; while the
/// thread is streaming, each block first asks for the arrays of the block
/// [`super::simd::AHEAD_BLOCKS`] on.
///
/// # Safety
/// `param.len()` a multiple of [`BLOCK`], the codes as long, one absmax per block.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
unsafe fn whole_blocks<L: Lanes>(
  l: L,
  c: &LionCoeffs,
  param: &mut [f32],
  grad: &[f32],
  state1: &mut [u8],
  absmax1: &mut [f32],
) -> bool {
  use super::simd::Block;
  let signed = quantize::signed();
  let (beta1, dw) = (l.splat(c.beta1), l.splat(c.direction_weight));
  let (beta2, mw) = (l.splat(c.beta2), l.splat(c.momentum_weight));
  let (decay, nlr) = (l.splat(c.decay_factor), l.splat(c.neg_lr));
  let mut m = Block([0.0; BLOCK]);
  let mut seen = l.splat(0.0);
  let ahead = super::simd::ahead();
  for (b, absmax) in absmax1.iter_mut().enumerate() {
    if let Some(ahead) = ahead {
      let at = b * BLOCK + ahead;
      super::simd::prefetch_block(param.as_ptr().wrapping_add(at));
      super::simd::prefetch_block(grad.as_ptr().wrapping_add(at));
      super::simd::prefetch_block(state1.as_ptr().wrapping_add(at));
    }
    let scale = l.splat(*absmax);
    let mut top = l.splat(-f32::MAX);
    for k in 0..BLOCK / L::N {
      let i = b * BLOCK + L::N * k;
      // SAFETY: i + N ≤ len for every slice (caller).
      let (g, m0, p) = unsafe {
        let g = l.load(grad.as_ptr().add(i));
        (g, l.dequantize(state1.as_ptr().add(i), &signed.values, scale), l.load(param.as_ptr().add(i)))
      };
      seen = l.see_magnitude(seen, g);
      let direction = l.add(l.mul(m0, beta1), l.mul(g, dw));
      // SAFETY: as the loads'.
      unsafe { l.store(param.as_mut_ptr().add(i), l.add(l.mul(p, decay), l.mul(nlr, l.sign(direction)))) };
      let mi = l.fmadd(g, mw, l.mul(m0, beta2));
      l.store_in(&mut m, k, mi);
      top = l.max(l.abs(mi), top);
    }
    // SAFETY: the block's 256 codes (caller).
    *absmax = unsafe { l.quantize(signed, &m, top, state1.as_mut_ptr().add(b * BLOCK)) };
  }
  l.any_non_finite(seen)
}

multiversion!(fn fused_best(
  c: &LionCoeffs,
  signed: &QuantMap,
  param: &mut [f32],
  grad: &[f32],
  state1: &mut [u8],
  absmax1: &mut [f32],
) -> bool => fused);

/// One pass per block: dequantize m, update, requantize.
#[inline(always)]
fn fused(
  c: &LionCoeffs,
  signed: &QuantMap,
  param: &mut [f32],
  grad: &[f32],
  state1: &mut [u8],
  absmax1: &mut [f32],
) -> bool {
  let n = param.len();
  let (grad, state1) = (&grad[..n], &mut state1[..n]);
  let mut m = [0.0f32; BLOCK];
  let mut check = NonFinite::new();
  for (b, start) in (0..n).step_by(BLOCK).enumerate() {
    let len = BLOCK.min(n - start);
    let (p, g, codes) = (&mut param[start..start + len], &grad[start..start + len], &mut state1[start..start + len]);
    let m = &mut m[..len];
    let scale = absmax1[b];
    for i in 0..len {
      let gi = g[i];
      check.see(gi);
      let mi = signed.values[codes[i] as usize] * scale;
      let direction = mi * c.beta1 + gi * c.direction_weight;
      p[i] = p[i] * c.decay_factor + c.neg_lr * sign(direction);
      m[i] = gi.mul_add(c.momentum_weight, mi * c.beta2);
    }
    let top = absmax(m);
    absmax1[b] = top;
    for i in 0..len {
      codes[i] = signed.code(m[i] / top);
    }
  }
  check.found()
}

multiversion!(fn full_best(c: &LionCoeffs, param: &mut [f32], grad: &[f32], m: &mut [f32]) -> bool => full);

/// bitsandbytes' 32-bit Lion, for parameters under `min_8bit_size`.
#[inline(always)]
fn full(c: &LionCoeffs, param: &mut [f32], grad: &[f32], m: &mut [f32]) -> bool {
  let n = param.len();
  let (grad, m) = (&grad[..n], &mut m[..n]);
  let mut check = NonFinite::new();
  for i in 0..n {
    let g = grad[i];
    check.see(g);
    let direction = g.mul_add(c.direction_weight, m[i] * c.beta1);
    param[i] = param[i] * c.decay_factor + c.neg_lr * sign(direction);
    m[i] = g.mul_add(c.momentum_weight, m[i] * c.beta2);
  }
  check.found()
}

#[cfg(test)]
mod tests {
  use super::super::tests::trajectory;
  use super::super::{Moments, MIN_8BIT_SIZE};
  use super::*;

  fn hypers() -> Vec<Vec<Hyper>> {
    let lion = Hyper { lr: 1e-4, beta1: 0.9, beta2: 0.99, eps: 0.0, weight_decay: 0.0 };
    let decayed = Hyper { lr: 3e-3, beta1: 0.95, beta2: 0.98, eps: 0.0, weight_decay: 0.1 };
    vec![vec![lion; 6], vec![decayed; 6]]
  }

  super::super::tests::shared_tests!(Lion8bit, hypers());

  #[test]
  fn first_step_moves_every_element_by_lr_derived_by_hand() {
    // From m = 0 the direction is 0.1·g: every element with g ≠ 0 moves by exactly γ against
    // its gradient's sign (after the decay 1 − 0.1·0.5 = 0.95), and m = 0.01·g.
    let h = Hyper { lr: 0.1, beta1: 0.9, beta2: 0.99, eps: 0.0, weight_decay: 0.5 };
    let (p, moments) = trajectory::<Lion8bit>(&[h], 5000, MIN_8BIT_SIZE, true);
    let start = super::super::tests::values(5000, 1, 1.0);
    let grad = super::super::tests::values(5000, 2, 0.1);
    for i in 0..5000 {
      let expected = start[i] * 0.95f32 - 0.1 * sign(grad[i]);
      assert_eq!(p[i], expected, "element {i}");
    }
    let Moments::Quantized { absmax1, state2, .. } = &moments else { panic!("8-bit") };
    assert!(state2.is_empty());
    let top = grad[..256].iter().fold(0.0f32, |a, g| a.max(g.abs()));
    assert_eq!(absmax1[0], top * 0.01f32);
  }
}
