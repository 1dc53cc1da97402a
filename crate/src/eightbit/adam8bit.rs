//! Adam and AdamW with 8-bit state: bitsandbytes' `Adam8bit` and `AdamW8bit`.
//!
//! Kingma & Ba, "Adam: A Method for Stochastic Optimization" (ICLR 2015), with decoupled weight
//! decay (Loshchilov & Hutter, ICLR 2019) and the moments kept block-wise in 8 bits (Dettmers
//! et al., ICLR 2022). bitsandbytes' two classes run the same update and differ only in the
//! default weight decay (0 and 0.01): both decay decoupled, `p ← p·(1 − γλ)`, before the step.
//!
//! With learning rate γ, betas β₁ β₂, ε, decay λ, step t, gradient g, and the moments m, v
//! dequantized from their codes (`map[code]·absmax`), each element is updated as bitsandbytes'
//! CPU backend does (`_optimizer_update_8bit_blockwise_cpu`):
//!
//! ```text
//! m ← β₁·m + (1 − β₁)·g
//! v ← β₂·v + (1 − β₂)·g²
//! p ← p·(1 − γλ)                          only when λ > 0
//! p ← p − (γ/c₁)·m / (√v/c₂ + ε)          c₁ = 1 − β₁ᵗ, c₂ = √(1 − β₂ᵗ)
//! ```
//!
//! then m and v are quantized again, each block with its new absmax. Parameters under
//! `min_8bit_size` keep `f32` moments and take bitsandbytes' 32-bit update, in which ε enters
//! scaled: `p ← p − (γ·c₂/c₁)·m / (√v + ε·c₂)`.
//!
//! Rounding follows PyTorch's CPU kernels that bitsandbytes calls, each scalar computed in `f64`
//! (β powers with `pow`, as Python's `**`) and rounded to `f32` once: `m.mul_(β₁).add_(g,
//! alpha=1 − β₁)` is `fma(g, 1 − β₁, m·β₁)`; `v.mul_(β₂).addcmul_(g, g, value=1 − β₂)` is
//! `fma((1 − β₂)·g, g, v·β₂)`; `(v.sqrt() / c₂).add_(ε)` divides; `p.addcdiv_(m,
//! d, value=−γ/c₁)` is `p + ((−γ/c₁)·m)/d`; the 32-bit update's `p.add_(u, alpha=−γc₂/c₁)` is one
//! fused multiply-add.

use super::simd::Level;
use super::{multiversion, EightBit, Hyper, Quantized};
use crate::divide::ExactDivisor;
use crate::quantize::{self, absmax, blocks, QuantMap, BLOCK};

/// bitsandbytes' `Adam8bit` (and `AdamW8bit`: the same update).
pub struct Adam8bit;

/// An 8-bit Adam step's scalars, in `f32`.
#[derive(Clone, Copy, Debug)]
pub struct AdamCoeffs {
  beta1: f32,
  gradient_weight1: f32,
  beta2: f32,
  gradient_weight2: f32,
  /// 1 − γλ when λ > 0, else 1 (multiplying by 1 changes no bits).
  decay_factor: f32,
  /// c₂ = √(1 − β₂ᵗ), the divisor of √v in the 8-bit update.
  correction2: f32,
  eps: f32,
  /// −γ/c₁.
  neg_lr_over_c1: f32,
  /// ε·c₂, in the 32-bit update's denominator.
  eps_c2: f32,
  /// −γ·c₂/c₁, the 32-bit update's step size.
  step_size: f32,
}

impl EightBit for Adam8bit {
  const NAME: &'static str = "Adam8bit";
  const MOMENTS: usize = 2;
  type Coeffs = AdamCoeffs;

  fn coeffs(h: &Hyper, step: u64) -> AdamCoeffs {
    let t = step as f64;
    let correction1 = 1.0 - h.beta1.powf(t);
    let correction2 = (1.0 - h.beta2.powf(t)).sqrt();
    AdamCoeffs {
      beta1: h.beta1 as f32,
      gradient_weight1: (1.0 - h.beta1) as f32,
      beta2: h.beta2 as f32,
      gradient_weight2: (1.0 - h.beta2) as f32,
      decay_factor: if h.weight_decay > 0.0 { (1.0 - h.lr * h.weight_decay) as f32 } else { 1.0 },
      correction2: correction2 as f32,
      eps: h.eps as f32,
      neg_lr_over_c1: (-h.lr / correction1) as f32,
      eps_c2: (h.eps * correction2) as f32,
      step_size: (-h.lr * correction2 / correction1) as f32,
    }
  }

  fn quantized_at(level: Level, c: &AdamCoeffs, param: &mut [f32], grad: &[f32], moments: Quantized<'_>) {
    fused_at(level, c, param, grad, moments)
  }

  fn quantized_reference(c: &AdamCoeffs, param: &mut [f32], grad: &[f32], moments: Quantized<'_>) {
    let Quantized { state1, absmax1, state2, absmax2 } = moments;
    let (signed, unsigned) = (quantize::signed(), quantize::unsigned());
    let n = param.len();
    let mut m: Vec<f32> = (0..n).map(|i| signed.values[state1[i] as usize] * absmax1[i / BLOCK]).collect();
    let mut v: Vec<f32> = (0..n).map(|i| unsigned.values[state2[i] as usize] * absmax2[i / BLOCK]).collect();
    for i in 0..n {
      let g = grad[i];
      m[i] = g.mul_add(c.gradient_weight1, m[i] * c.beta1);
      v[i] = (c.gradient_weight2 * g).mul_add(g, v[i] * c.beta2);
      let denom = v[i].sqrt() / c.correction2 + c.eps;
      let p = param[i] * c.decay_factor;
      param[i] = p + (c.neg_lr_over_c1 * m[i]) / denom;
    }
    for (b, start) in (0..n).step_by(BLOCK).enumerate() {
      let end = (start + BLOCK).min(n);
      absmax1[b] = quantize::quantize_block_reference(signed, &m[start..end], &mut state1[start..end]);
      absmax2[b] = quantize::quantize_block_reference(unsigned, &v[start..end], &mut state2[start..end]);
    }
  }

  fn full(c: &AdamCoeffs, param: &mut [f32], grad: &[f32], state1: &mut [f32], state2: &mut [f32]) {
    full_best(c, param, grad, state1, state2)
  }
}

/// The fused kernel with the instructions of `level` (one this CPU runs: checked): whole blocks
/// in vector code, a partial last block (and everything, at [`Level::Portable`]) in the portable
/// kernel. The same bits at every level.
pub fn fused_at(level: Level, c: &AdamCoeffs, param: &mut [f32], grad: &[f32], moments: Quantized<'_>) {
  let Quantized { state1, absmax1, state2, absmax2 } = moments;
  let (signed, unsigned) = (quantize::signed(), quantize::unsigned());
  let n = param.len();
  assert!(grad.len() == n && state1.len() == n && state2.len() == n, "Adam8bit: slices of {n} elements");
  assert!(absmax1.len() == blocks(n) && absmax2.len() == blocks(n), "Adam8bit: {} blocks", blocks(n));
  assert!(level <= Level::detected(), "{level:?} is not supported by this CPU");
  let whole = n / BLOCK;
  let done = match level {
    Level::Portable => 0,
    #[cfg(target_arch = "x86_64")]
    Level::Avx512 | Level::Avx2 => {
      let exact = ExactDivisor::new(c.correction2).is_some();
      let (p, g) = (&mut param[..whole * BLOCK], &grad[..whole * BLOCK]);
      let (s1, s2) = (&mut state1[..whole * BLOCK], &mut state2[..whole * BLOCK]);
      let (a1, a2) = (&mut absmax1[..whole], &mut absmax2[..whole]);
      // SAFETY: this CPU has the level's features (asserted above); the slices are whole blocks
      // of one length (asserted above, cut to `whole` blocks).
      unsafe {
        match (level, exact) {
          (Level::Avx512, true) => avx512::<true>(c, signed, unsigned, p, g, s1, a1, s2, a2),
          (Level::Avx512, false) => avx512::<false>(c, signed, unsigned, p, g, s1, a1, s2, a2),
          (_, true) => avx2::<true>(c, signed, unsigned, p, g, s1, a1, s2, a2),
          (_, false) => avx2::<false>(c, signed, unsigned, p, g, s1, a1, s2, a2),
        }
      }
      whole
    }
    #[cfg(not(target_arch = "x86_64"))]
    _ => 0,
  };
  let rest = done * BLOCK;
  fused_best(
    c,
    signed,
    unsigned,
    &mut param[rest..],
    &grad[rest..],
    &mut state1[rest..],
    &mut absmax1[done..],
    &mut state2[rest..],
    &mut absmax2[done..],
  )
}

/// The fused kernel in AVX-512 over whole blocks: for each block, 16 vectors of 16 elements
/// dequantized (gathers from the maps), updated, their m and v kept in two aligned stack blocks
/// (L1) with running absmax, then requantized ([`super::simd::avx512::quantize`]). With `EXACT`,
/// the division by c₂ is a multiplication with exact corrections ([`ExactDivisor`]'s sequence).
///
/// # Safety
/// AVX-512F/VL and FMA; `param.len()` a multiple of [`BLOCK`], every slice of that many
/// elements (codes) or blocks (absmax).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn avx512<const EXACT: bool>(
  c: &AdamCoeffs,
  signed: &QuantMap,
  unsigned: &QuantMap,
  param: &mut [f32],
  grad: &[f32],
  state1: &mut [u8],
  absmax1: &mut [f32],
  state2: &mut [u8],
  absmax2: &mut [f32],
) {
  use super::simd::{avx512 as x86, Block};
  use std::arch::x86_64::*;
  let (beta1, gw1) = (_mm512_set1_ps(c.beta1), _mm512_set1_ps(c.gradient_weight1));
  let (beta2, gw2) = (_mm512_set1_ps(c.beta2), _mm512_set1_ps(c.gradient_weight2));
  let (c2, c2_inverse) = (_mm512_set1_ps(c.correction2), _mm512_set1_ps(1.0 / c.correction2));
  let (eps, decay, nlr) = (_mm512_set1_ps(c.eps), _mm512_set1_ps(c.decay_factor), _mm512_set1_ps(c.neg_lr_over_c1));
  let mut m = Block([0.0; BLOCK]);
  let mut v = Block([0.0; BLOCK]);
  for b in 0..param.len() / BLOCK {
    let (scale1, scale2) = (_mm512_set1_ps(absmax1[b]), _mm512_set1_ps(absmax2[b]));
    let (mut top1, mut top2) = (_mm512_set1_ps(-f32::MAX), _mm512_set1_ps(-f32::MAX));
    // Four vectors at a time, their eight gathers first, so that their loads overlap.
    for quarter in 0..4 {
      let at = b * BLOCK + 64 * quarter;
      // SAFETY: at + 64 ≤ len for the codes (caller).
      let (m0s, v0s): ([__m512; 4], [__m512; 4]) = unsafe {
        (
          std::array::from_fn(|j| x86::dequantize(state1.as_ptr().add(at + 16 * j), &signed.values, scale1)),
          std::array::from_fn(|j| x86::dequantize(state2.as_ptr().add(at + 16 * j), &unsigned.values, scale2)),
        )
      };
      for j in 0..4 {
        let (k, i, m0, v0) = (4 * quarter + j, at + 16 * j, m0s[j], v0s[j]);
        // SAFETY: i + 16 ≤ len for every slice (caller), and within the stack blocks (k < 16).
        unsafe {
          let g = _mm512_loadu_ps(grad.as_ptr().add(i));
          let mi = _mm512_fmadd_ps(g, gw1, _mm512_mul_ps(m0, beta1));
          let vi = _mm512_fmadd_ps(_mm512_mul_ps(gw2, g), g, _mm512_mul_ps(v0, beta2));
          let root = _mm512_sqrt_ps(vi);
          let scaled = if EXACT {
            // √v / c₂ as `/` rounds it; ∞ and NaN take the first product, as `/` gives them.
            let q0 = _mm512_mul_ps(root, c2_inverse);
            let q1 = _mm512_fmadd_ps(_mm512_fnmadd_ps(q0, c2, root), c2_inverse, q0);
            let q = _mm512_fmadd_ps(_mm512_fnmadd_ps(q1, c2, root), c2_inverse, q1);
            let finite = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(_mm512_sub_ps(root, root), _mm512_setzero_ps());
            _mm512_mask_blend_ps(finite, q0, q)
          } else {
            _mm512_div_ps(root, c2)
          };
          let denom = _mm512_add_ps(scaled, eps);
          let p = _mm512_loadu_ps(param.as_ptr().add(i));
          let update = _mm512_div_ps(_mm512_mul_ps(nlr, mi), denom);
          _mm512_storeu_ps(param.as_mut_ptr().add(i), _mm512_add_ps(_mm512_mul_ps(p, decay), update));
          _mm512_store_ps(m.0.as_mut_ptr().add(16 * k), mi);
          _mm512_store_ps(v.0.as_mut_ptr().add(16 * k), vi);
          top1 = _mm512_max_ps(_mm512_abs_ps(mi), top1);
          top2 = _mm512_max_ps(_mm512_abs_ps(vi), top2);
        }
      }
    }
    // SAFETY: the block's 256 codes (caller).
    unsafe {
      absmax1[b] = x86::quantize(signed, &m, top1, state1.as_mut_ptr().add(b * BLOCK));
      absmax2[b] = x86::quantize(unsigned, &v, top2, state2.as_mut_ptr().add(b * BLOCK));
    }
  }
}

/// [`avx512`] with AVX2: 32 vectors of 8 elements per block.
///
/// # Safety
/// AVX2 and FMA; as [`avx512`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn avx2<const EXACT: bool>(
  c: &AdamCoeffs,
  signed: &QuantMap,
  unsigned: &QuantMap,
  param: &mut [f32],
  grad: &[f32],
  state1: &mut [u8],
  absmax1: &mut [f32],
  state2: &mut [u8],
  absmax2: &mut [f32],
) {
  use super::simd::{avx2 as x86, Block};
  use std::arch::x86_64::*;
  let (beta1, gw1) = (_mm256_set1_ps(c.beta1), _mm256_set1_ps(c.gradient_weight1));
  let (beta2, gw2) = (_mm256_set1_ps(c.beta2), _mm256_set1_ps(c.gradient_weight2));
  let (c2, c2_inverse) = (_mm256_set1_ps(c.correction2), _mm256_set1_ps(1.0 / c.correction2));
  let (eps, decay, nlr) = (_mm256_set1_ps(c.eps), _mm256_set1_ps(c.decay_factor), _mm256_set1_ps(c.neg_lr_over_c1));
  let mut m = Block([0.0; BLOCK]);
  let mut v = Block([0.0; BLOCK]);
  for b in 0..param.len() / BLOCK {
    let (scale1, scale2) = (_mm256_set1_ps(absmax1[b]), _mm256_set1_ps(absmax2[b]));
    let (mut top1, mut top2) = (_mm256_set1_ps(-f32::MAX), _mm256_set1_ps(-f32::MAX));
    for k in 0..32 {
      let i = b * BLOCK + 8 * k;
      // SAFETY: i + 8 ≤ len for every slice (caller), and within the stack blocks (k < 32).
      unsafe {
        let g = _mm256_loadu_ps(grad.as_ptr().add(i));
        let m0 = x86::dequantize(state1.as_ptr().add(i), &signed.values, scale1);
        let v0 = x86::dequantize(state2.as_ptr().add(i), &unsigned.values, scale2);
        let mi = _mm256_fmadd_ps(g, gw1, _mm256_mul_ps(m0, beta1));
        let vi = _mm256_fmadd_ps(_mm256_mul_ps(gw2, g), g, _mm256_mul_ps(v0, beta2));
        let root = _mm256_sqrt_ps(vi);
        let scaled = if EXACT {
          let q0 = _mm256_mul_ps(root, c2_inverse);
          let q1 = _mm256_fmadd_ps(_mm256_fnmadd_ps(q0, c2, root), c2_inverse, q0);
          let q = _mm256_fmadd_ps(_mm256_fnmadd_ps(q1, c2, root), c2_inverse, q1);
          let finite = _mm256_cmp_ps::<_CMP_EQ_OQ>(_mm256_sub_ps(root, root), _mm256_setzero_ps());
          _mm256_blendv_ps(q0, q, finite)
        } else {
          _mm256_div_ps(root, c2)
        };
        let denom = _mm256_add_ps(scaled, eps);
        let p = _mm256_loadu_ps(param.as_ptr().add(i));
        let update = _mm256_div_ps(_mm256_mul_ps(nlr, mi), denom);
        _mm256_storeu_ps(param.as_mut_ptr().add(i), _mm256_add_ps(_mm256_mul_ps(p, decay), update));
        _mm256_store_ps(m.0.as_mut_ptr().add(8 * k), mi);
        _mm256_store_ps(v.0.as_mut_ptr().add(8 * k), vi);
        top1 = _mm256_max_ps(x86::abs(mi), top1);
        top2 = _mm256_max_ps(x86::abs(vi), top2);
      }
    }
    // SAFETY: the block's 256 codes (caller).
    unsafe {
      absmax1[b] = x86::quantize(signed, &m, top1, state1.as_mut_ptr().add(b * BLOCK));
      absmax2[b] = x86::quantize(unsigned, &v, top2, state2.as_mut_ptr().add(b * BLOCK));
    }
  }
}

multiversion!(fn fused_best(
  c: &AdamCoeffs,
  signed: &QuantMap,
  unsigned: &QuantMap,
  param: &mut [f32],
  grad: &[f32],
  state1: &mut [u8],
  absmax1: &mut [f32],
  state2: &mut [u8],
  absmax2: &mut [f32],
) => fused);

/// One pass per block: dequantize m and v into registers' worth of stack, update, requantize.
/// Reads 4 + 4 + 1 + 1 bytes and writes 4 + 1 + 1 per element (16 moved, against fp32 Adam's 28).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn fused(
  c: &AdamCoeffs,
  signed: &QuantMap,
  unsigned: &QuantMap,
  param: &mut [f32],
  grad: &[f32],
  state1: &mut [u8],
  absmax1: &mut [f32],
  state2: &mut [u8],
  absmax2: &mut [f32],
) {
  let n = param.len();
  let (grad, state1, state2) = (&grad[..n], &mut state1[..n], &mut state2[..n]);
  let mut m = [0.0f32; BLOCK];
  let mut v = [0.0f32; BLOCK];
  for (b, start) in (0..n).step_by(BLOCK).enumerate() {
    let len = BLOCK.min(n - start);
    let (p, g) = (&mut param[start..start + len], &grad[start..start + len]);
    let (codes1, codes2) = (&mut state1[start..start + len], &mut state2[start..start + len]);
    let (m, v) = (&mut m[..len], &mut v[..len]);
    let (scale1, scale2) = (absmax1[b], absmax2[b]);
    for i in 0..len {
      let gi = g[i];
      let mi = signed.values[codes1[i] as usize] * scale1;
      let vi = unsigned.values[codes2[i] as usize] * scale2;
      let mi = gi.mul_add(c.gradient_weight1, mi * c.beta1);
      let vi = (c.gradient_weight2 * gi).mul_add(gi, vi * c.beta2);
      let denom = vi.sqrt() / c.correction2 + c.eps;
      p[i] = p[i] * c.decay_factor + (c.neg_lr_over_c1 * mi) / denom;
      m[i] = mi;
      v[i] = vi;
    }
    let (top1, top2) = (absmax(m), absmax(v));
    absmax1[b] = top1;
    absmax2[b] = top2;
    for i in 0..len {
      codes1[i] = signed.code(m[i] / top1);
      codes2[i] = unsigned.code(v[i] / top2);
    }
  }
}

multiversion!(fn full_best(c: &AdamCoeffs, param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32]) => full);

/// bitsandbytes' 32-bit Adam (`_optimizer_update_32bit_cpu`), for parameters under `min_8bit_size`.
#[inline(always)]
fn full(c: &AdamCoeffs, param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32]) {
  let n = param.len();
  let (grad, m, v) = (&grad[..n], &mut m[..n], &mut v[..n]);
  for i in 0..n {
    let g = grad[i];
    let mi = g.mul_add(c.gradient_weight1, m[i] * c.beta1);
    let vi = (c.gradient_weight2 * g).mul_add(g, v[i] * c.beta2);
    let update = mi / (vi.sqrt() + c.eps_c2);
    param[i] = update.mul_add(c.step_size, param[i] * c.decay_factor);
    m[i] = mi;
    v[i] = vi;
  }
}

#[cfg(test)]
mod tests {
  use super::super::{run, Job, Moments, MIN_8BIT_SIZE};
  use super::*;

  fn hypers() -> Vec<Vec<Hyper>> {
    let adam = Hyper { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 };
    let adamw = Hyper { lr: 3e-3, beta1: 0.8, beta2: 0.99, eps: 1e-6, weight_decay: 0.01 };
    vec![vec![adam; 6], vec![adamw; 6], (0..6).map(|t| Hyper { lr: 1e-2 / (t + 1) as f64, ..adamw }).collect()]
  }

  super::super::tests::shared_tests!(Adam8bit, hypers());

  #[test]
  fn levels_match_reference_when_c2_is_zero() {
    // β₂ = 1: c₂ = 0 is outside the exact sequence's range, the division by c₂ stays a division
    // (every c₂ of a β₂ < 1 in f64 is above 2⁻³⁰).
    let tiny_c2 = Hyper { lr: 1e-3, beta1: 0.9, beta2: 1.0, eps: 1e-8, weight_decay: 0.0 };
    super::super::tests::assert_levels_match_reference::<Adam8bit>(&[tiny_c2; 2]);
  }

  #[test]
  fn first_step_derived_by_hand() {
    // Step 1 from zero moments, one block: m = 0.1·g, v = 0.001·g², c₁ = 0.1, c₂ = √0.001, so
    // √v/c₂ = |g| and p moves by −γ·(0.1·g/0.1)/(|g| + ε) ≈ −γ·sign(g). The moments' absmax are
    // 0.1·max|g| and 0.001·max g², and the element of largest |g| quantizes to ±1 exactly.
    let h = Hyper { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 };
    let mut param = vec![1.0f32; MIN_8BIT_SIZE];
    let grad: Vec<f32> = (0..MIN_8BIT_SIZE).map(|i| if i % 2 == 0 { 0.5 } else { -0.25 }).collect();
    let mut moments = Moments::new(param.len(), MIN_8BIT_SIZE, 2);
    run::<Adam8bit>(&mut [Job::new::<Adam8bit>(Adam8bit::coeffs(&h, 1), &mut param, &grad, &mut moments).unwrap()]);
    assert!((param[0] - 0.99).abs() < 1e-6 && (param[1] - 1.01).abs() < 1e-6, "{} {}", param[0], param[1]);
    let Moments::Quantized { state1, absmax1, state2, absmax2 } = &moments else { panic!("8-bit") };
    assert_eq!(absmax1[0], 0.1f32 * 0.5);
    assert!((absmax2[0] - 0.001 * 0.25).abs() < 1e-9);
    assert_eq!(state1[0], 255);
    assert_eq!(state2[0], 255);
    // −0.25 is half the absmax: the signed map's entry nearest −0.5.
    assert!((quantize::signed().values[state1[1] as usize] + 0.5).abs() < 0.01);
  }

  #[test]
  fn zero_lr_leaves_parameters_alone() {
    let h = Hyper { lr: 0.0, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.1 };
    for len in [1, 300, 5000] {
      let (p, _) = super::super::tests::trajectory::<Adam8bit>(&[h; 3], len, MIN_8BIT_SIZE, true);
      assert!(super::super::tests::same_bits(&p, &super::super::tests::values(len, 1, 1.0)));
    }
  }
}
