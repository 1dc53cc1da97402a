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

use super::{multiversion, EightBit, Hyper, Quantized};
use crate::quantize::{self, absmax, QuantMap, BLOCK};

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

  fn quantized(c: &LionCoeffs, param: &mut [f32], grad: &[f32], moments: Quantized<'_>) {
    fused_best(c, quantize::signed(), param, grad, moments.state1, moments.absmax1)
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

  fn full(c: &LionCoeffs, param: &mut [f32], grad: &[f32], state1: &mut [f32], _state2: &mut [f32]) {
    full_best(c, param, grad, state1)
  }
}

multiversion!(fn fused_best(
  c: &LionCoeffs,
  signed: &QuantMap,
  param: &mut [f32],
  grad: &[f32],
  state1: &mut [u8],
  absmax1: &mut [f32],
) => fused);

/// One pass per block: dequantize m, update, requantize.
#[inline(always)]
fn fused(c: &LionCoeffs, signed: &QuantMap, param: &mut [f32], grad: &[f32], state1: &mut [u8], absmax1: &mut [f32]) {
  let n = param.len();
  let (grad, state1) = (&grad[..n], &mut state1[..n]);
  let mut m = [0.0f32; BLOCK];
  for (b, start) in (0..n).step_by(BLOCK).enumerate() {
    let len = BLOCK.min(n - start);
    let (p, g, codes) = (&mut param[start..start + len], &grad[start..start + len], &mut state1[start..start + len]);
    let m = &mut m[..len];
    let scale = absmax1[b];
    for i in 0..len {
      let gi = g[i];
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
}

multiversion!(fn full_best(c: &LionCoeffs, param: &mut [f32], grad: &[f32], m: &mut [f32]) => full);

/// bitsandbytes' 32-bit Lion, for parameters under `min_8bit_size`.
#[inline(always)]
fn full(c: &LionCoeffs, param: &mut [f32], grad: &[f32], m: &mut [f32]) {
  let n = param.len();
  let (grad, m) = (&grad[..n], &mut m[..n]);
  for i in 0..n {
    let g = grad[i];
    let direction = g.mul_add(c.direction_weight, m[i] * c.beta1);
    param[i] = param[i] * c.decay_factor + c.neg_lr * sign(direction);
    m[i] = g.mul_add(c.momentum_weight, m[i] * c.beta2);
  }
}

#[cfg(test)]
mod tests {
  use super::super::tests::{assert_engine_matches_reference, assert_thread_count_does_not_matter, trajectory};
  use super::super::{Moments, MIN_8BIT_SIZE};
  use super::*;

  fn hypers() -> Vec<Vec<Hyper>> {
    let lion = Hyper { lr: 1e-4, beta1: 0.9, beta2: 0.99, eps: 0.0, weight_decay: 0.0 };
    let decayed = Hyper { lr: 3e-3, beta1: 0.95, beta2: 0.98, eps: 0.0, weight_decay: 0.1 };
    vec![vec![lion; 6], vec![decayed; 6]]
  }

  #[test]
  fn fused_parallel_step_matches_reference_bit_for_bit() {
    for h in hypers() {
      assert_engine_matches_reference::<Lion8bit>(&h);
    }
  }

  #[test]
  fn thread_count_does_not_change_the_bits() {
    assert_thread_count_does_not_matter::<Lion8bit>(&hypers()[1]);
  }

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
