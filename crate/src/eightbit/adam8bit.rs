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

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
use super::simd::Lanes;
use super::simd::Level;
use super::{multiversion, EightBit, Hyper, Quantized};
#[cfg(target_arch = "x86_64")]
use crate::divide::ExactDivisor;
use crate::float::NonFinite;
use crate::powers::power;
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
    let correction1 = 1.0 - power(h.beta1, step);
    let correction2 = (1.0 - power(h.beta2, step)).sqrt();
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

  fn quantized_at(level: Level, c: &AdamCoeffs, param: &mut [f32], grad: &[f32], moments: Quantized<'_>) -> bool {
    fused_at(level, c, param, grad, moments)
  }

  fn level() -> Level {
    static LEVEL: std::sync::OnceLock<Level> = std::sync::OnceLock::new();
    let hyper = Hyper { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 };
    *LEVEL.get_or_init(|| super::fastest_level::<Self>(&hyper))
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

  fn full(c: &AdamCoeffs, param: &mut [f32], grad: &[f32], state1: &mut [f32], state2: &mut [f32]) -> bool {
    full_best(c, param, grad, state1, state2)
  }
}

/// The fused kernel with the instructions of `level` (one this CPU runs: checked): whole blocks
/// in vector code, a partial last block (and everything, at [`Level::Portable`]) in the portable
/// kernel. The same bits at every level. Returns whether a gradient element was NaN or ±∞.
pub fn fused_at(level: Level, c: &AdamCoeffs, param: &mut [f32], grad: &[f32], moments: Quantized<'_>) -> bool {
  let Quantized { state1, absmax1, state2, absmax2 } = moments;
  let (signed, unsigned) = (quantize::signed(), quantize::unsigned());
  let n = param.len();
  assert!(grad.len() == n && state1.len() == n && state2.len() == n, "Adam8bit: slices of {n} elements");
  assert!(absmax1.len() == blocks(n) && absmax2.len() == blocks(n), "Adam8bit: {} blocks", blocks(n));
  assert!(level.runs_here(), "{level:?} is not supported by this CPU");
  // The vector kernel for the whole blocks, where `level` has one. The division by c₂: the exact
  // multiply-adds where the divide unit bounds the loop (AVX-512 on Intel's cores); the
  // instruction in the AVX2 kernel, which on AMD's Zen 3 is bound by instructions, not by the
  // divide unit (docs/eightbit.md), and in the NEON one. The same bits either way.
  type Kernel = unsafe fn(&AdamCoeffs, &mut [f32], &[f32], Quantized<'_>) -> bool;
  let kernel: Option<Kernel> = match level {
    #[cfg(target_arch = "x86_64")]
    Level::Avx512 if ExactDivisor::new(c.correction2).is_some() => Some(avx512::<true>),
    #[cfg(target_arch = "x86_64")]
    Level::Avx512 => Some(avx512::<false>),
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
      let (state1, absmax1) = (&mut state1[..whole * BLOCK], &mut absmax1[..whole]);
      let (state2, absmax2) = (&mut state2[..whole * BLOCK], &mut absmax2[..whole]);
      // SAFETY: this CPU has the level's features (asserted above); the slices are whole blocks
      // of one length (asserted above, cut to `whole` blocks).
      (whole, unsafe { kernel(c, p, g, Quantized { state1, absmax1, state2, absmax2 }) })
    }
  };
  let rest = done * BLOCK;
  whole_non_finite
    | fused_best(
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

/// The fused kernel in AVX-512 over whole blocks ([`whole_blocks`]), four vectors of 16 elements at a
/// time.
///
/// # Safety
/// AVX-512F/VL and FMA; `param.len()` a multiple of [`BLOCK`], every slice of that many
/// elements (codes) or blocks (absmax).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
unsafe fn avx512<const EXACT: bool>(c: &AdamCoeffs, param: &mut [f32], grad: &[f32], moments: Quantized<'_>) -> bool {
  // SAFETY: this function's features are those `Lanes16` stands for; the slices as it asks.
  unsafe {
    let lanes = super::simd::avx512::Lanes16::new();
    whole_blocks::<_, EXACT, 4>(lanes, c, param, grad, moments)
  }
}

/// [`avx512`] with AVX2: vectors of 8 elements, one at a time, dividing by c₂ with the divide
/// instruction.
///
/// # Safety
/// AVX2 and FMA; as [`avx512`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2(c: &AdamCoeffs, param: &mut [f32], grad: &[f32], moments: Quantized<'_>) -> bool {
  // SAFETY: this function's features are those `Lanes8` stands for; the slices as it asks.
  unsafe {
    let lanes = super::simd::avx2::Lanes8::new();
    whole_blocks::<_, false, 1>(lanes, c, param, grad, moments)
  }
}

/// `avx512` in NEON: vectors of 4 elements, four at a time, dividing by c₂ with the divide
/// instruction.
///
/// # Safety
/// As `avx512`, but for the features: NEON is part of every AArch64 processor.
#[cfg(target_arch = "aarch64")]
unsafe fn neon(c: &AdamCoeffs, param: &mut [f32], grad: &[f32], moments: Quantized<'_>) -> bool {
  // SAFETY: NEON is part of the target; the slices as `whole_blocks` asks.
  unsafe { whole_blocks::<_, false, 4>(super::simd::neon::Lanes4::new(), c, param, grad, moments) }
}

/// The fused kernel in vectors of `L` over whole blocks: for each block, its vectors
/// dequantized (map lookups, [`Lanes::dequantize`]), `GROUP` vectors at a time with their
/// lookups first so that their loads overlap, updated, their m and v kept in two aligned stack
/// blocks (L1) with running absmax, then requantized ([`Lanes::quantize`]). With `EXACT`, the
/// division by c₂ is a multiplication with exact corrections ([`ExactDivisor`]'s sequence).
/// While the thread is streaming, each block first asks for the arrays of the block
/// [`super::simd::AHEAD_BLOCKS`] on. Returns whether a gradient element was NaN or ±∞.
///
/// # Safety
/// `param.len()` a multiple of [`BLOCK`], every slice of that many elements (codes) or blocks
/// (absmax).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
unsafe fn whole_blocks<L: Lanes, const EXACT: bool, const GROUP: usize>(
  l: L,
  c: &AdamCoeffs,
  param: &mut [f32],
  grad: &[f32],
  moments: Quantized<'_>,
) -> bool {
  use super::simd::Block;
  let Quantized { state1, absmax1, state2, absmax2 } = moments;
  let (signed, unsigned) = (quantize::signed(), quantize::unsigned());
  let (beta1, gw1) = (l.splat(c.beta1), l.splat(c.gradient_weight1));
  let (beta2, gw2) = (l.splat(c.beta2), l.splat(c.gradient_weight2));
  let (c2, c2_inverse) = (l.splat(c.correction2), l.splat(1.0 / c.correction2));
  let (eps, decay, nlr) = (l.splat(c.eps), l.splat(c.decay_factor), l.splat(c.neg_lr_over_c1));
  let mut m = Block([0.0; BLOCK]);
  let mut v = Block([0.0; BLOCK]);
  let mut seen = l.splat(0.0);
  let ahead = super::simd::ahead();
  for b in 0..param.len() / BLOCK {
    if let Some(ahead) = ahead {
      let at = b * BLOCK + ahead;
      super::simd::prefetch_block(param.as_ptr().wrapping_add(at));
      super::simd::prefetch_block(grad.as_ptr().wrapping_add(at));
      super::simd::prefetch_block(state1.as_ptr().wrapping_add(at));
      super::simd::prefetch_block(state2.as_ptr().wrapping_add(at));
    }
    let (scale1, scale2) = (l.splat(absmax1[b]), l.splat(absmax2[b]));
    let (mut top1, mut top2) = (l.splat(-f32::MAX), l.splat(-f32::MAX));
    for group in 0..BLOCK / (L::N * GROUP) {
      let at = b * BLOCK + L::N * GROUP * group;
      // SAFETY: at + N·GROUP ≤ len for the codes (caller).
      let (m0s, v0s): ([L::V; GROUP], [L::V; GROUP]) = unsafe {
        (
          std::array::from_fn(|j| l.dequantize(state1.as_ptr().add(at + L::N * j), &signed.values, scale1)),
          std::array::from_fn(|j| l.dequantize(state2.as_ptr().add(at + L::N * j), &unsigned.values, scale2)),
        )
      };
      for j in 0..GROUP {
        let (k, i, m0, v0) = (GROUP * group + j, at + L::N * j, m0s[j], v0s[j]);
        // SAFETY: i + N ≤ len for every slice (caller).
        let (g, p) = unsafe { (l.load(grad.as_ptr().add(i)), l.load(param.as_ptr().add(i))) };
        seen = l.see_magnitude(seen, g);
        let mi = l.fmadd(g, gw1, l.mul(m0, beta1));
        let vi = l.fmadd(l.mul(gw2, g), g, l.mul(v0, beta2));
        let root = l.sqrt(vi);
        let scaled = if EXACT {
          // √v / c₂ as `/` rounds it; ∞ and NaN take the first product, as `/` gives them.
          let q0 = l.mul(root, c2_inverse);
          let q1 = l.fmadd(l.fnmadd(q0, c2, root), c2_inverse, q0);
          let q = l.fmadd(l.fnmadd(q1, c2, root), c2_inverse, q1);
          l.where_finite(root, q, q0)
        } else {
          l.div(root, c2)
        };
        let denom = l.add(scaled, eps);
        let update = l.div(l.mul(nlr, mi), denom);
        // SAFETY: as the loads'.
        unsafe { l.store(param.as_mut_ptr().add(i), l.add(l.mul(p, decay), update)) };
        l.store_in(&mut m, k, mi);
        l.store_in(&mut v, k, vi);
        top1 = l.max(l.abs(mi), top1);
        top2 = l.max(l.abs(vi), top2);
      }
    }
    // SAFETY: the block's 256 codes (caller).
    unsafe {
      absmax1[b] = l.quantize(signed, &m, top1, state1.as_mut_ptr().add(b * BLOCK));
      absmax2[b] = l.quantize(unsigned, &v, top2, state2.as_mut_ptr().add(b * BLOCK));
    }
  }
  l.any_non_finite(seen)
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
) -> bool => fused);

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
) -> bool {
  let n = param.len();
  let (grad, state1, state2) = (&grad[..n], &mut state1[..n], &mut state2[..n]);
  let mut m = [0.0f32; BLOCK];
  let mut v = [0.0f32; BLOCK];
  let mut check = NonFinite::new();
  for (b, start) in (0..n).step_by(BLOCK).enumerate() {
    let len = BLOCK.min(n - start);
    let (p, g) = (&mut param[start..start + len], &grad[start..start + len]);
    let (codes1, codes2) = (&mut state1[start..start + len], &mut state2[start..start + len]);
    let (m, v) = (&mut m[..len], &mut v[..len]);
    let (scale1, scale2) = (absmax1[b], absmax2[b]);
    for i in 0..len {
      let gi = g[i];
      check.see(gi);
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
  check.found()
}

multiversion!(fn full_best(c: &AdamCoeffs, param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32]) -> bool => full);

/// bitsandbytes' 32-bit Adam (`_optimizer_update_32bit_cpu`), for parameters under `min_8bit_size`.
#[inline(always)]
fn full(c: &AdamCoeffs, param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32]) -> bool {
  let n = param.len();
  let (grad, m, v) = (&grad[..n], &mut m[..n], &mut v[..n]);
  let mut check = NonFinite::new();
  for i in 0..n {
    let g = grad[i];
    check.see(g);
    let mi = g.mul_add(c.gradient_weight1, m[i] * c.beta1);
    let vi = (c.gradient_weight2 * g).mul_add(g, v[i] * c.beta2);
    let update = mi / (vi.sqrt() + c.eps_c2);
    param[i] = update.mul_add(c.step_size, param[i] * c.decay_factor);
    m[i] = mi;
    v[i] = vi;
  }
  check.found()
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
