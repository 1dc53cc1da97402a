//! bfloat16 optimizer state for float32 parameters (`stateDtype: 'bfloat16'`).
//!
//! A state buffer of 2 bytes per element instead of 4: Adam keeps 4 bytes of state per parameter
//! instead of 8, and a step moves 20 bytes per parameter instead of 28. The semantics are plain:
//! each step widens the state to float32 (exactly: a bfloat16 is the top half of a float32),
//! runs the optimizer's float32 update unchanged (the same kernel, so the same bits as with float32
//! state holding those widened values), and rounds the new state to bfloat16 to nearest, ties to
//! even, as PyTorch's `tensor.to(torch.bfloat16)` does (NaN becomes PyTorch's quiet NaN 0x7FC0).
//!
//! An optimizer runs it through [`Optimizer::update_bf16`]. Adam, AdamW, NAdam, RAdam, Adamax and
//! SGD fuse the conversions into their kernel's loop: each kernel is written once over a
//! [`Storage`] (float32 state is its identity case) and compiled for bfloat16 state by the engine's
//! `multiversion!`, with AVX-512 BW for the conversions; there they overlap with the loop's memory
//! traffic. The default, [`update`], runs any elementwise kernel unchanged, at the cost of
//! conversion loops of their own: a piece of a step is run in chunks of [`CHUNK`] elements,
//! each chunk's state widened into a small buffer on the stack (in L1), updated there by the float32
//! kernel along with the chunk's parameter and gradient, and narrowed back. Neither makes an extra
//! pass over memory or allocates; the update is elementwise, so where chunks fall changes nothing.
//! The fused kernels give the chunked path's bits (tested at every instruction level).
//!
//! A step may instead round stochastically ([`Rounding::Stochastic`], `stateRounding:
//! 'stochastic'`): up with probability equal to the fraction of the way from the bfloat16 below to
//! the one above, so that a change smaller than half a bfloat16 ulp survives in expectation instead
//! of being lost every step. The random bits come from a counter-based hash of the tensor, the step
//! count, the buffer and the element's index ([`noise`]), so the result is the same on any number
//! of threads, in any slicing of a step (`stepAsync`), and from run to run. The fused kernels store
//! with those bits ([`Storage::store_random`], [`Noise`]); the chunked path narrows with them
//! ([`update`]), the same bits (tested).
//!
//! The narrowing is integer arithmetic (add the rounding bias, keep the top 16 bits), which the
//! compiler vectorises for AVX-512, AVX2 and NEON. AVX-512 BF16's `vcvtne2ps2bf16` is not used: it
//! treats float32 subnormals as zero, where PyTorch's rounding keeps them, and it keeps a NaN's
//! sign and payload, so its results are not PyTorch's bits for every input.

use std::mem::MaybeUninit;

use crate::engine::run::MAX_BUFFERS;
use crate::engine::simd::multiversion;
use crate::float::Float;
use crate::optimizers::{Bf16Buffers, Optimizer};

/// A bfloat16 number, as its raw bits: the sign, the 8 exponent bits and the top 7 mantissa bits
/// of a float32.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct Bf16(pub u16);

/// PyTorch's bfloat16 NaN (`c10::BFloat16`'s `round_to_nearest_even` of any NaN).
pub const NAN_BITS: u16 = 0x7FC0;

/// How a step rounds the new bfloat16 state of one tensor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Rounding {
  /// To nearest, ties to even, as PyTorch's `tensor.to(torch.bfloat16)` ([`Bf16::from_f32`]).
  #[default]
  Nearest,
  /// Stochastically ([`Bf16::from_f32_stochastic`]) with the bits [`noise`] gives: `key` names the
  /// tensor and its step count ([`Rounding::stochastic`]); `origin` is the tensor's index of the
  /// first element of the slice being updated, so that an element's bits depend on its place in
  /// the tensor, not on how the step was cut.
  Stochastic { key: u64, origin: u64 },
}

impl Rounding {
  /// Stochastic rounding for the tensor of index `tensor` (its place among the optimizer's
  /// parameters) at step count `step` (the step being taken, from 1).
  pub fn stochastic(tensor: usize, step: u64) -> Rounding {
    let key = mix64(mix64(tensor as u64 ^ 0x6A09_E667_F3BC_C908).wrapping_add(step));
    Rounding::Stochastic { key, origin: 0 }
  }

  /// The bits a stochastic rounding draws from ([`Noise`]); `None` to nearest.
  #[inline(always)]
  pub fn noise(self) -> Option<Noise> {
    match self {
      Rounding::Nearest => None,
      Rounding::Stochastic { key, origin } => Some(Noise::new(key, origin)),
    }
  }

  /// The same rounding for the slice that starts `offset` elements further into the tensor.
  #[inline(always)]
  pub fn at(self, offset: usize) -> Rounding {
    match self {
      Rounding::Nearest => Rounding::Nearest,
      Rounding::Stochastic { key, origin } => Rounding::Stochastic { key, origin: origin + offset as u64 },
    }
  }
}

/// SplitMix64's finaliser: a bijection of 64-bit values whose every output bit depends on every
/// input bit.
fn mix64(mut x: u64) -> u64 {
  x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
  x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
  x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
  x ^ (x >> 31)
}

/// The 32-bit key of buffer `buffer` of a tensor whose step has the 64-bit key `key`.
fn buffer_key(key: u64, buffer: usize) -> u32 {
  let mixed = mix64(key ^ (buffer as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
  (mixed ^ (mixed >> 32)) as u32
}

/// The golden ratio in 32 bits: the step of the Weyl sequence [`noise`] mixes.
const WEYL: u32 = 0x9E37_79B1;

/// The random bits for element `index` of a buffer whose key is `key`: the index spread by the
/// golden ratio (a Weyl sequence, which a loop over a slice advances by one addition an element)
/// plus the key, then one xorshift and one multiplication to mix the high bits down; the top 16
/// bits are what [`Bf16::from_f32_stochastic`] uses. For one element the key, a hash of the
/// tensor, its step count and the buffer, makes them uniform and independent from step to step.
/// (The index is taken modulo 2³², so a tensor of more than 2³² elements repeats its pattern every
/// 2³² elements.)
#[inline(always)]
pub fn noise(key: u32, index: u32) -> u32 {
  mix(index.wrapping_mul(WEYL).wrapping_add(key))
}

/// [`noise`] of the Weyl sequence's value `x`.
#[inline(always)]
fn mix(x: u32) -> u32 {
  ((x ^ (x >> 16)).wrapping_mul(0x85EB_CA6B)) >> 16
}

impl Bf16 {
  /// `x` rounded to one of the two bfloat16s around it: up with probability equal to its
  /// fraction of the way between them, where `random`'s low 16 bits are uniform (they are added
  /// to the bits below bfloat16's and the sum cut; [`noise`] gives 16 bits). A bfloat16 value
  /// stays itself; ±0 and ±∞ stay; every NaN becomes [`NAN_BITS`]; a finite value beyond the
  /// largest finite bfloat16 may round up to ∞ (with probability its fraction of the way to where
  /// ∞'s bits would be).
  #[inline(always)]
  pub fn from_f32_stochastic(x: f32, random: u32) -> Self {
    let bits = if x.is_nan() { u32::from(NAN_BITS) << 16 } else { x.to_bits().wrapping_add(random & 0xFFFF) };
    Bf16((bits >> 16) as u16)
  }

  /// `x` rounded to the nearest bfloat16, ties to even; every NaN to [`NAN_BITS`].
  #[inline(always)]
  pub fn from_f32(x: f32) -> Self {
    // A NaN is replaced before rounding, by the float32 whose rounding is NAN_BITS: selected on
    // the float32 lanes, the vectorised loop neither packs a mask nor blends packed halves.
    let bits = if x.is_nan() { u32::from(NAN_BITS) << 16 } else { x.to_bits() };
    // Adding 0x7FFF plus the lowest kept bit rounds to nearest, ties to even; a finite value that
    // rounds past the largest bfloat16 carries into the exponent and becomes ∞, as it should.
    Bf16((bits.wrapping_add(0x7FFF + ((bits >> 16) & 1)) >> 16) as u16)
  }

  /// The float32 of the same value (exact).
  #[inline(always)]
  pub fn to_f32(self) -> f32 {
    f32::from_bits(u32::from(self.0) << 16)
  }
}

/// How a kernel reads and writes a state element of type `Self` for a parameter of `T`: `T`
/// itself, unchanged, or [`Bf16`] for `f32`, widened and rounded.
pub trait Storage<T>: Copy {
  /// Whether loads and stores convert (`false` where `Self` is `T`).
  const CONVERTS: bool;
  fn load(self) -> T;
  fn store(value: T) -> Self;
  /// `value` stored rounded stochastically with the 16 random bits `random`, where storing
  /// rounds ([`Bf16::from_f32_stochastic`]); as [`Storage::store`] where it does not.
  #[inline(always)]
  fn store_random(value: T, _random: u32) -> Self {
    Self::store(value)
  }
}

impl<T: Float> Storage<T> for T {
  const CONVERTS: bool = false;
  #[inline(always)]
  fn load(self) -> T {
    self
  }
  #[inline(always)]
  fn store(value: T) -> T {
    value
  }
}

impl Storage<f32> for Bf16 {
  const CONVERTS: bool = true;
  #[inline(always)]
  fn load(self) -> f32 {
    self.to_f32()
  }
  #[inline(always)]
  fn store(value: f32) -> Bf16 {
    Bf16::from_f32(value)
  }
  #[inline(always)]
  fn store_random(value: f32, random: u32) -> Bf16 {
    Bf16::from_f32_stochastic(value, random)
  }
}

/// Elements per chunk: three widened buffers of this many float32s take 12 KiB of the stack, and
/// the chunk's parameter and gradient 8 KiB more, so that the whole chunk stays in a 32 KiB L1.
pub const CHUNK: usize = 1024;

/// One piece of an elementwise step of `O` over float32 parameters with bfloat16 state: the same
/// bits as widening `buffers` to float32, running [`Optimizer::update`] over the whole piece, and
/// rounding the buffers back, to nearest ([`Bf16::from_f32`]) or, given `noise`, stochastically
/// with its bits for each element's index ([`Bf16::from_f32_stochastic`]); returns what
/// [`Optimizer::update`] reports.
pub fn update<O: Optimizer>(
  coeffs: &O::Coeffs,
  param: &mut [f32],
  grad: &[f32],
  buffers: Bf16Buffers,
  noise: Option<Noise>,
) -> bool {
  match noise {
    None => chunked::<O>(coeffs, param, grad, buffers, |wide, state, _, _| narrow_best::<f32>(wide, state)),
    Some(noise) => chunked::<O>(coeffs, param, grad, buffers, |wide, state, buffer, from| {
      narrow_stochastic_best::<f32>(wide, state, noise.shifted(from), &buffer)
    }),
  }
}

/// The chunked path: each chunk's state widened into buffers on the stack, `O`'s float32 update
/// run over the chunk, and each buffer narrowed back by `narrow(wide, state, buffer, from)` (its
/// index among the buffers, and the chunk's first element in the piece).
fn chunked<O: Optimizer>(
  coeffs: &O::Coeffs,
  param: &mut [f32],
  grad: &[f32],
  mut buffers: [&mut [Bf16]; MAX_BUFFERS],
  narrow: impl Fn(&[f32], &mut [Bf16], usize, usize),
) -> bool {
  let n = param.len();
  let mut non_finite = false;
  let mut wide = [[MaybeUninit::<f32>::uninit(); CHUNK]; MAX_BUFFERS];
  let mut from = 0;
  // A chunk's widened state is in L1: the kernels run their in-cache loops over it (the parameter
  // and gradient stream in behind the hardware's prefetchers), not the prefetching ones of a step
  // from memory.
  crate::engine::simd::streaming(false, || {
    while from < n {
      let to = (from + CHUNK).min(n);
      let len = to - from;
      let mut parts = wide.each_mut().map(|w| &mut w[..len]);
      let mut chunks: [&mut [f32]; MAX_BUFFERS] = std::array::from_fn(|_| &mut [][..]);
      for ((chunk, part), state) in chunks.iter_mut().zip(parts.iter_mut()).zip(buffers.iter()) {
        if !state.is_empty() {
          *chunk = widen_best::<f32>(&state[from..to], std::mem::take(part));
        }
      }
      non_finite |= O::update(coeffs, &mut param[from..to], &grad[from..to], chunks.each_mut().map(|c| &mut **c));
      for (buffer, (chunk, state)) in chunks.iter().zip(buffers.iter_mut()).enumerate() {
        if !state.is_empty() {
          narrow(chunk, &mut state[from..to], buffer, from);
        }
      }
      from = to;
    }
  });
  non_finite
}

/// `state` widened into `out`, which it returns initialised.
fn widen_best<'a, T: Float>(state: &[Bf16], out: &'a mut [MaybeUninit<f32>]) -> &'a mut [f32] {
  assert_eq!(state.len(), out.len());
  widen_into::<T>(state, &mut *out);
  // SAFETY: `widen_into` wrote every element of `out` (the lengths are equal).
  unsafe { &mut *(out as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

multiversion!(fn widen_into<T: Float>(state: &[Bf16], out: &mut [MaybeUninit<f32>]) => widen);
multiversion!(fn narrow_best<T: Float>(wide: &[f32], state: &mut [Bf16]) => narrow);
multiversion!(fn narrow_stochastic_best<T: Float>(wide: &[f32], state: &mut [Bf16], noise: Noise, buffer: &usize) => narrow_stochastic);

/// The random bits of a fused kernel's stochastic stores ([`Storage::store_random`]): each
/// buffer's key and the tensor's index of the slice's first element. Cut into blocks
/// ([`multiversion!`]), a block's bits start further on.
#[derive(Clone, Copy, Debug)]
pub struct Noise {
  keys: [u32; MAX_BUFFERS],
  first: u32,
}

impl Noise {
  /// The bits of the tensor whose step has the key `key`, for the slice starting at its element
  /// `origin` ([`Rounding::Stochastic`]).
  pub fn new(key: u64, origin: u64) -> Noise {
    Noise { keys: std::array::from_fn(|b| buffer_key(key, b)), first: origin as u32 }
  }

  /// For a kernel that stores nothing stochastically (the bits are never used).
  pub const NONE: Noise = Noise { keys: [0; MAX_BUFFERS], first: 0 };

  /// The same bits for the slice that starts `by` elements further on.
  #[inline(always)]
  fn shifted(self, by: usize) -> Noise {
    Noise { keys: self.keys, first: self.first.wrapping_add(by as u32) }
  }

  /// [`noise`] of buffer `buffer` at the slice's element `i`.
  #[inline(always)]
  pub fn at(&self, buffer: usize, i: usize) -> u32 {
    noise(self.keys[buffer], self.first.wrapping_add(i as u32))
  }
}

impl crate::engine::simd::KernelArg for Noise {
  type Part<'b> = Noise;
  #[inline(always)]
  fn part(&mut self, from: usize, _to: usize) -> Noise {
    self.shifted(from)
  }
}

/// `out[i] ← state[i]` as float32, for every `i`; `T` only names the kernel's copy.
#[inline(always)]
#[allow(clippy::extra_unused_type_parameters)]
fn widen<T: Float>(state: &[Bf16], out: &mut [MaybeUninit<f32>]) {
  let out = &mut out[..state.len()];
  for (o, s) in out.iter_mut().zip(state) {
    o.write(s.to_f32());
  }
}

/// `state[i] ← wide[i]` rounded to bfloat16, for every `i`; `T` only names the kernel's copy.
#[inline(always)]
#[allow(clippy::extra_unused_type_parameters)]
fn narrow<T: Float>(wide: &[f32], state: &mut [Bf16]) {
  let wide = &wide[..state.len()];
  for (s, &w) in state.iter_mut().zip(wide) {
    *s = Bf16::from_f32(w);
  }
}

/// `state[i] ← wide[i]` rounded stochastically with the bits of `noise` for buffer `buffer` at
/// element `i` ([`Noise::at`]); `T` only names the kernel's copy.
#[inline(always)]
#[allow(clippy::extra_unused_type_parameters)]
fn narrow_stochastic<T: Float>(wide: &[f32], state: &mut [Bf16], noise: Noise, buffer: &usize) {
  let wide = &wide[..state.len()];
  // `noise.at(buffer, i)`, its Weyl sequence advanced by an addition.
  let mut x = noise.first.wrapping_mul(WEYL).wrapping_add(noise.keys[*buffer]);
  for (s, &w) in state.iter_mut().zip(wide) {
    *s = Bf16::from_f32_stochastic(w, mix(x));
    x = x.wrapping_add(WEYL);
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::engine::run::{run_bf16, Job, PARALLEL_MIN_ELEMENTS, PIECE_ELEMENTS};
  use crate::engine::simd::{capped, levels};
  use crate::engine::state::{Buffers, ParamState};
  use crate::engine::threads::{num_threads, set_num_threads};
  use crate::optimizers::adam::{Adam, AdamW};
  use crate::optimizers::adamax::Adamax;
  use crate::optimizers::nadam::NAdam;
  use crate::optimizers::radam::RAdam;
  use crate::optimizers::sgd::Sgd;
  use crate::testing::{same_bits, values, LENGTHS};

  #[test]
  fn rounds_to_nearest_even_as_pytorch_does() {
    // 1 + 2⁻⁸ lies halfway between bfloat16's 1 and 1 + 2⁻⁷: ties go to the even one, 1.
    assert_eq!(Bf16::from_f32(1.0 + 2f32.powi(-8)).0, 0x3F80);
    // 1 + 3·2⁻⁸ lies halfway between 1 + 2⁻⁷ (odd) and 1 + 2⁻⁶: to the even one, up.
    assert_eq!(Bf16::from_f32(1.0 + 3.0 * 2f32.powi(-8)).0, 0x3F82);
    // Just above the halfway point rounds up.
    assert_eq!(Bf16::from_f32(1.0 + 2f32.powi(-8) + 2f32.powi(-20)).0, 0x3F81);
    assert_eq!(Bf16::from_f32(-2.0).0, 0xC000);
    assert_eq!(Bf16::from_f32(f32::INFINITY).0, 0x7F80);
    assert_eq!(Bf16::from_f32(f32::NEG_INFINITY).0, 0xFF80);
    // The largest float32 rounds past bfloat16's largest finite value (0x7F7F) to ∞.
    assert_eq!(Bf16::from_f32(f32::MAX).0, 0x7F80);
    for nan in [f32::NAN, -f32::NAN, f32::from_bits(0x7F80_0001), f32::from_bits(0xFFFF_FFFF)] {
      assert_eq!(Bf16::from_f32(nan).0, NAN_BITS);
    }
    // Subnormals are kept, not flushed: the smallest float32 subnormal rounds to 0, 2⁻¹³³ stays.
    assert_eq!(Bf16::from_f32(f32::from_bits(1)).0, 0);
    assert_eq!(Bf16::from_f32(2f32.powi(-133)).0, 0x0001);
    assert_eq!(Bf16::from_f32(-0.0).0, 0x8000);
    // Widening is exact, and narrowing a widened value gives it back.
    for bits in (0..=u16::MAX).filter(|b| b & 0x7FFF <= 0x7F80) {
      assert_eq!(Bf16::from_f32(Bf16(bits).to_f32()).0, bits);
    }
  }

  #[test]
  fn narrowing_agrees_with_rounding_through_f64() {
    // Round to nearest, ties to even, checked against rounding the exact value by hand.
    for x in values::<f32>(20_000, 3).into_iter().filter(|x| x.is_finite() && x.abs() > 1e-30 && x.abs() < 1e30) {
      let lo = f32::from_bits(x.to_bits() & 0xFFFF_0000);
      let hi = f32::from_bits((x.to_bits() & 0xFFFF_0000) + 0x1_0000);
      let (dlo, dhi) = ((x as f64 - lo as f64).abs(), (hi as f64 - x as f64).abs());
      let even = if (lo.to_bits() >> 16) & 1 == 0 { lo } else { hi };
      let expected = if dlo < dhi {
        lo
      } else if dhi < dlo {
        hi
      } else {
        even
      };
      assert_eq!(Bf16::from_f32(x).to_f32().to_bits(), expected.to_bits(), "{x}");
    }
  }

  /// Widens `state` by hand, runs `O`'s float32 kernel over the whole tensor, narrows back: to
  /// nearest, or stochastically with the noise of each element's index in the tensor.
  fn by_hand<O: Optimizer>(
    c: &O::Coeffs,
    param: &mut [f32],
    grad: &[f32],
    state: &mut [Vec<Bf16>],
    rounding: Rounding,
  ) {
    let mut wide: Vec<Vec<f32>> = state.iter().map(|b| b.iter().map(|x| x.to_f32()).collect()).collect();
    let mut slices = wide.iter_mut().map(Vec::as_mut_slice);
    let buffers = std::array::from_fn(|_| slices.next().unwrap_or(&mut []));
    O::update(c, param, grad, buffers);
    for (b, (state, w)) in state.iter_mut().zip(&wide).enumerate() {
      *state = match rounding {
        Rounding::Nearest => w.iter().map(|&x| Bf16::from_f32(x)).collect(),
        Rounding::Stochastic { key, origin } => {
          let key = buffer_key(key, b);
          let at = |i: usize| noise(key, origin.wrapping_add(i as u64) as u32);
          w.iter().enumerate().map(|(i, &x)| Bf16::from_f32_stochastic(x, at(i))).collect()
        }
      };
    }
  }

  /// `state` as the slices a kernel takes (empty past its buffers).
  fn slices(state: &mut [Vec<Bf16>]) -> [&mut [Bf16]; MAX_BUFFERS] {
    let mut slices = state.iter_mut().map(Vec::as_mut_slice);
    std::array::from_fn(|_| slices.next().unwrap_or(&mut []))
  }

  /// bfloat16 state of `len` elements: ordinary values, with NaNs (PyTorch's and others), ±∞,
  /// subnormals, ±0 and the largest finite values mixed in.
  fn special_state(len: usize, seed: u64) -> Vec<Bf16> {
    const SPECIAL: [u16; 12] =
      [0x7FC0, 0xFFC1, 0x7F81, 0x7F80, 0xFF80, 0x0001, 0x8001, 0x007F, 0x0000, 0x8000, 0x7F7F, 0xFF7F];
    let ordinary = values::<f32>(len, seed);
    (0..len)
      .map(|i| if i % 7 == 2 { Bf16(SPECIAL[(i / 7) % SPECIAL.len()]) } else { Bf16::from_f32(ordinary[i]) })
      .collect()
  }

  /// The same bits, or NaN in both: which NaN an operation on NaNs gives (its sign and payload)
  /// depends on the order of its operands in the compiled code, which the compiler may swap.
  /// Rounded to bfloat16, every NaN is the same ([`NAN_BITS`]).
  fn same_or_nan(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()))
  }

  /// Lengths either side of every chunk and vector width up to 300, around 4 chunks, and
  /// many chunks with a ragged tail.
  fn kernel_lengths() -> impl Iterator<Item = usize> {
    (0..=300).chain([4095, 4096, 4097, 65536 + 300])
  }

  /// `O`'s fused bfloat16 kernel ([`Optimizer::update_bf16`]), the chunked path ([`update`]) and
  /// widening, the float32 kernel and rounding by hand give the same bits, parameters and state,
  /// over `steps` steps from state with NaN, ∞ and subnormals in it, at every instruction level
  /// this CPU runs: rounding to nearest, or (`rounding`) stochastically, its key drawn anew each
  /// step and its bits from its origin on.
  fn assert_fused_matches_chunked<O: Optimizer + std::fmt::Debug>(config: O, steps: u64, rounding: Option<Rounding>) {
    for level in levels() {
      capped(level, || {
        for len in kernel_lengths() {
          let used = config.buffers_used();
          let mut params = [values::<f32>(len, 1), values::<f32>(len, 1), values::<f32>(len, 1)];
          let start: Vec<Vec<Bf16>> = (0..used).map(|b| special_state(len, 10 + b as u64)).collect();
          let [mut fused, mut chunked, mut hand] = [start.clone(), start.clone(), start];
          // A state that has buffers, so that `advance` takes every step for a later one.
          let mut scalars = ParamState::default();
          let _ = scalars.buffers_mut::<Bf16>(&[1; MAX_BUFFERS], used);
          for step in 1..=steps {
            let mut grad = values::<f32>(len, step + 1);
            if let Some(g) = grad.get_mut(5) {
              *g = if step % 2 == 0 { f32::NAN } else { f32::INFINITY };
            }
            scalars.step += 1;
            let mut c = config.coeffs(scalars.step);
            config.advance(&mut c, &mut scalars);
            let noise = rounding.map(|r| match r {
              Rounding::Stochastic { key, origin } => Rounding::Stochastic { key: key ^ step, origin },
              Rounding::Nearest => r,
            });
            let [p_fused, p_chunked, p_hand] = &mut params;
            O::update_bf16(&c, p_fused, &grad, slices(&mut fused), noise.and_then(Rounding::noise));
            update::<O>(&c, p_chunked, &grad, slices(&mut chunked), noise.and_then(Rounding::noise));
            by_hand::<O>(&c, p_hand, &grad, &mut hand, noise.unwrap_or_default());
          }
          let what = format!("{config:?} at {level:?}, length {len}, {rounding:?}");
          assert!(same_or_nan(&params[0], &params[2]), "fused parameters, {what}");
          assert!(same_or_nan(&params[1], &params[2]), "chunked parameters, {what}");
          assert_eq!(fused, hand, "fused state, {what}");
          assert_eq!(chunked, hand, "chunked state, {what}");
        }
      })
    }
  }

  #[test]
  fn fused_kernels_match_the_chunked_path_and_widening_by_hand() {
    let (adam, nadam, radam, adamax) = (Adam::default(), NAdam::default(), RAdam::default(), Adamax::default());
    assert_fused_matches_chunked(adam, 3, None);
    assert_fused_matches_chunked(Adam { amsgrad: true, weight_decay: 0.01, ..adam }, 3, None);
    assert_fused_matches_chunked(Adam { maximize: true, betas: (0.3, 0.9), eps: 1e-3, ..adam }, 3, None);
    assert_fused_matches_chunked(AdamW { amsgrad: true, ..AdamW::default() }.as_adam(), 3, None);
    assert_fused_matches_chunked(nadam, 3, None);
    assert_fused_matches_chunked(NAdam { weight_decay: 0.1, maximize: true, ..nadam }, 3, None);
    assert_fused_matches_chunked(
      NAdam { decoupled_weight_decay: true, weight_decay: 0.05, betas: (0.3, 0.9), ..nadam },
      3,
      None,
    );
    // RAdam is rectified from step 6 on, except with β₂ = 0.5 (never).
    assert_fused_matches_chunked(radam, 7, None);
    assert_fused_matches_chunked(RAdam { weight_decay: 0.1, maximize: true, ..radam }, 7, None);
    assert_fused_matches_chunked(
      RAdam { decoupled_weight_decay: true, weight_decay: 0.05, betas: (0.3, 0.5), ..radam },
      7,
      None,
    );
    assert_fused_matches_chunked(adamax, 3, None);
    assert_fused_matches_chunked(Adamax { weight_decay: 0.1, maximize: true, betas: (0.3, 0.9), ..adamax }, 3, None);
    // SGD without momentum keeps no state; with it, heavy-ball or Nesterov, dampened or not.
    let sgd = Sgd { lr: 0.1, ..Sgd::default() };
    assert_fused_matches_chunked(sgd, 3, None);
    assert_fused_matches_chunked(Sgd { weight_decay: 0.1, maximize: true, ..sgd }, 3, None);
    assert_fused_matches_chunked(Sgd { momentum: 0.9, ..sgd }, 3, None);
    assert_fused_matches_chunked(
      Sgd { momentum: 0.9, dampening: 0.3, weight_decay: 1e-2, maximize: true, ..sgd },
      3,
      None,
    );
    assert_fused_matches_chunked(Sgd { momentum: 0.8, nesterov: true, ..sgd }, 3, None);
    assert_fused_matches_chunked(Sgd { momentum: 0.5, nesterov: true, weight_decay: 0.05, ..sgd }, 3, None);
  }

  #[test]
  fn the_first_momentum_step_copies_the_gradient_into_the_buffer() {
    // SGD's buffer starts as the gradient (`advance` on a state with no buffers), rounded.
    let config = Sgd { momentum: 0.9, ..Sgd::default() };
    let grad = values::<f32>(300, 4);
    let mut state = ParamState::default();
    state.step += 1;
    let mut c = config.coeffs(1);
    config.advance(&mut c, &mut state);
    let mut param = values::<f32>(300, 1);
    let buffers = state.buffers_mut::<Bf16>(&[300; MAX_BUFFERS], 1);
    Sgd::update_bf16(&c, &mut param, &grad, buffers, None);
    let Buffers::Bf16(got) = &state.buffers else { panic!("bf16 state") };
    assert!(got[0].iter().zip(&grad).all(|(b, &g)| *b == Bf16::from_f32(g)));
  }

  /// Steps `O` `steps` times over one tensor of each length, through the engine with bfloat16
  /// state and by hand; both must give the same bits.
  fn assert_engine_matches_by_hand<O: Optimizer>(config: O, steps: u64) {
    let lengths = LENGTHS.iter().copied().chain([CHUNK - 1, CHUNK + 1, 5 * CHUNK + 3, 65536 + 300]);
    for len in lengths {
      let mut param = values::<f32>(len, 1);
      let mut expected = param.clone();
      let mut state = ParamState::default();
      let mut hand: Vec<Vec<Bf16>> = vec![vec![Bf16(0); len]; config.buffers_used()];
      for step in 1..=steps {
        let grad = values::<f32>(len, step + 1);
        state.step += 1;
        let mut coeffs = config.coeffs(state.step);
        config.advance(&mut coeffs, &mut state);
        let buffers = state.buffers_mut::<Bf16>(&[len; MAX_BUFFERS], config.buffers_used());
        run_bf16::<O>(&mut [Job::flat(coeffs, &mut param, &grad, buffers)]);
        by_hand::<O>(&coeffs, &mut expected, &grad, &mut hand, Rounding::Nearest);
      }
      assert!(same_bits(&param, &expected), "{} parameters, length {len}", O::NAME);
      let Buffers::Bf16(got) = &state.buffers else { panic!("bf16 state") };
      assert_eq!(got, &hand, "{} state, length {len}", O::NAME);
    }
  }

  #[test]
  fn engine_steps_match_widen_kernel_narrow_by_hand() {
    assert_engine_matches_by_hand(Adam { amsgrad: true, weight_decay: 0.01, ..Adam::default() }, 4);
    assert_engine_matches_by_hand(Adam::default(), 3);
    assert_engine_matches_by_hand(NAdam { weight_decay: 0.01, ..NAdam::default() }, 3);
    assert_engine_matches_by_hand(RAdam::default(), 7);
    assert_engine_matches_by_hand(Adamax::default(), 3);
    assert_engine_matches_by_hand(Sgd { momentum: 0.9, nesterov: true, ..Sgd::default() }, 3);
    assert_engine_matches_by_hand(Sgd { momentum: 0.9, dampening: 0.5, ..Sgd::default() }, 3);
  }

  /// With bfloat16 state, through the engine's fused kernels and through the chunked path
  /// ([`update`]), a step reports a gradient's NaN, +∞ or −∞ at its first, middle or last element,
  /// and nothing for the largest finite values there.
  fn assert_reports_non_finite<O: Optimizer>(config: O) {
    for len in [1, 17, CHUNK + 1, PARALLEL_MIN_ELEMENTS + 77] {
      for at in [0, len / 2, len - 1] {
        for value in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f32::MAX, -f32::MAX] {
          let mut grad = values::<f32>(len, 2);
          grad[at] = value;
          for chunked in [false, true] {
            let mut param = values::<f32>(len, 1);
            let mut state = ParamState { step: 1, ..ParamState::default() };
            let mut coeffs = config.coeffs(1);
            config.advance(&mut coeffs, &mut state);
            let buffers = state.buffers_mut::<Bf16>(&[len; MAX_BUFFERS], config.buffers_used());
            let reported = if chunked {
              update::<O>(&coeffs, &mut param, &grad, buffers, None)
            } else {
              run_bf16::<O>(&mut [Job::flat(coeffs, &mut param, &grad, buffers)])
            };
            assert_eq!(reported, !value.is_finite(), "{} length {len}, {value} at {at}, chunked {chunked}", O::NAME);
          }
        }
      }
    }
  }

  #[test]
  fn non_finite_gradients_are_reported() {
    assert_reports_non_finite(Adam { amsgrad: true, ..Adam::default() });
    assert_reports_non_finite(NAdam::default());
    assert_reports_non_finite(RAdam::default());
    assert_reports_non_finite(Adamax::default());
    assert_reports_non_finite(Sgd { momentum: 0.9, ..Sgd::default() });
  }

  /// `O`'s parameters and bfloat16 state after 3 steps of tensors that span pieces and the
  /// parallel threshold are the same on 1, 2 and 3 threads.
  fn assert_thread_count_does_not_matter<O: Optimizer>(config: O, stochastic: bool) {
    let lengths = [3, PIECE_ELEMENTS + 9, 0, PARALLEL_MIN_ELEMENTS + 77, 5 * CHUNK + 1];
    let trajectory = |threads: usize| {
      set_num_threads(threads).expect("a thread count");
      let mut params: Vec<Vec<f32>> = lengths.iter().map(|&n| values(n, n as u64)).collect();
      let mut states = vec![ParamState::default(); lengths.len()];
      for _ in 1..=3u64 {
        let mut jobs = Vec::new();
        for (k, ((p, &n), s)) in params.iter_mut().zip(&lengths).zip(&mut states).enumerate() {
          s.step += 1;
          let mut coeffs = config.coeffs(s.step);
          config.advance(&mut coeffs, s);
          let grad = values(n, n as u64 + s.step).leak();
          let rounding = if stochastic { Rounding::stochastic(k, s.step) } else { Rounding::Nearest };
          let mut job = Job::flat(coeffs, &mut p[..], &grad[..], s.buffers_mut::<Bf16>(&[n; 3], config.buffers_used()));
          job.rounding = rounding;
          jobs.push(job);
        }
        run_bf16::<O>(&mut jobs);
      }
      (params, states)
    };
    let before = num_threads();
    let (one, one_states) = trajectory(1);
    for threads in [2, 3] {
      let (many, many_states) = trajectory(threads);
      assert!(one.iter().zip(&many).all(|(a, b)| same_bits(a, b)), "{} on {threads} threads", O::NAME);
      assert_eq!(one_states, many_states, "{} on {threads} threads", O::NAME);
    }
    set_num_threads(before).expect("a thread count");
  }

  #[test]
  fn results_do_not_depend_on_the_thread_count() {
    for stochastic in [false, true] {
      assert_thread_count_does_not_matter(Adam::default(), stochastic);
      assert_thread_count_does_not_matter(NAdam::default(), stochastic);
      assert_thread_count_does_not_matter(RAdam::default(), stochastic);
      assert_thread_count_does_not_matter(Adamax::default(), stochastic);
      assert_thread_count_does_not_matter(Sgd { momentum: 0.9, ..Sgd::default() }, stochastic);
    }
  }

  #[test]
  fn stochastic_rounding_is_unbiased_between_the_two_neighbours() {
    // Over all 2¹⁶ values of the random bits, x rounds to the bfloat16 below or the one above,
    // up exactly as often as its fraction of the way between them: the mean is x itself.
    let mut xs = values::<f32>(300, 21);
    xs.extend([1.0 + 2f32.powi(-8), -3.0e-39, 1.0e-40, 6.5e37, -1.0e-20, 0.1, f32::from_bits(0x3F80_FFFF)]);
    for x in xs.into_iter().filter(|x| x.is_finite() && x.abs() < 3.0e38) {
      let (lo, hi) = (x.to_bits() & 0xFFFF_0000, (x.to_bits() & 0xFFFF_0000) + 0x1_0000);
      let mut sum = 0.0f64;
      for random in 0..=u16::MAX as u32 {
        let got = Bf16::from_f32_stochastic(x, random | 0xABCD_0000);
        let bits = u32::from(got.0) << 16;
        assert!(bits == lo || bits == hi, "{x}: {bits:#x} is neither {lo:#x} nor {hi:#x}");
        sum += f64::from(got.to_f32());
      }
      assert_eq!(sum / 65536.0, f64::from(x), "{x}");
    }
  }

  #[test]
  fn stochastic_rounding_keeps_bfloat16_values_zeros_infinities_and_nan() {
    for random in [0, 1, 0x7FFF, 0x8000, 0xFFFF, 0xFFFF_FFFF, 0x1234_5678] {
      for bits in (0..=u16::MAX).filter(|b| b & 0x7FFF <= 0x7F80) {
        // Every bfloat16 value, ±0 and ±∞ among them, is itself.
        assert_eq!(Bf16::from_f32_stochastic(Bf16(bits).to_f32(), random).0, bits);
      }
      for nan in [f32::NAN, -f32::NAN, f32::from_bits(0x7F80_0001), f32::from_bits(0xFFFF_FFFF)] {
        assert_eq!(Bf16::from_f32_stochastic(nan, random).0, NAN_BITS);
      }
    }
    // Past the largest finite bfloat16, a value rounds up to ∞ or down to that largest.
    assert_eq!(Bf16::from_f32_stochastic(f32::MAX, 0).0, 0x7F7F);
    assert_eq!(Bf16::from_f32_stochastic(f32::MAX, 1).0, 0x7F80);
  }

  #[test]
  fn noise_bits_are_close_to_uniform() {
    // The low 16 bits of consecutive indices under one key, in 64 buckets: each within 10% of
    // the 1024 it should hold, and no two neighbouring indices alike more often than by chance.
    for key in [0u32, 1, 0xDEAD_BEEF] {
      let mut buckets = [0u32; 64];
      let mut equal = 0;
      for i in 0..65536u32 {
        let r = noise(key, i) & 0xFFFF;
        buckets[(r >> 10) as usize] += 1;
        equal += u32::from(r == noise(key, i + 1) & 0xFFFF);
      }
      assert!(buckets.iter().all(|&b| (922..=1126).contains(&b)), "key {key}: {buckets:?}");
      assert!(equal < 8, "key {key}: {equal} equal neighbours");
    }
    // Different tensors, steps and buffers get different keys.
    let keys: std::collections::HashSet<u32> = (0..50usize)
      .flat_map(|t| (1..20u64).map(move |s| (t, s)))
      .flat_map(|(t, s)| {
        let Rounding::Stochastic { key, .. } = Rounding::stochastic(t, s) else { unreachable!() };
        (0..MAX_BUFFERS).map(move |b| buffer_key(key, b))
      })
      .collect();
    assert_eq!(keys.len(), 50 * 19 * MAX_BUFFERS);
  }

  /// Steps `O` with stochastic rounding through the engine, whole and cut into slices at odd
  /// places (as `stepAsync` cuts a step), and by hand: all three give the same bits, and the state
  /// differs from rounding to nearest.
  fn assert_stochastic_engine_matches_by_hand<O: Optimizer>(config: O, steps: u64) {
    for len in [1, 17, CHUNK + 1, PIECE_ELEMENTS + 9, PARALLEL_MIN_ELEMENTS + 77, 65536 + 300] {
      let used = config.buffers_used();
      let mut params = [values::<f32>(len, 1), values::<f32>(len, 1), values::<f32>(len, 1)];
      let mut states = [ParamState::default(), ParamState::default()];
      let mut hand: Vec<Vec<Bf16>> = vec![vec![Bf16(0); len]; used];
      let mut nearest: Vec<Vec<Bf16>> = vec![vec![Bf16(0); len]; used];
      let mut nearest_param = values::<f32>(len, 1);
      let cuts = [0, len / 3, len / 3 + 1, len - len / 5, len];
      for step in 1..=steps {
        let grad = values::<f32>(len, step + 1);
        // Both states take the same step, so their scalars are the same.
        let advance = |state: &mut ParamState| {
          state.step += 1;
          let mut coeffs = config.coeffs(state.step);
          config.advance(&mut coeffs, state);
          coeffs
        };
        let coeffs = advance(&mut states[0]);
        advance(&mut states[1]);
        let rounding = Rounding::stochastic(7, step);
        let [whole, sliced, expected] = &mut params;
        let buffers = states[0].buffers_mut::<Bf16>(&[len; MAX_BUFFERS], used);
        run_bf16::<O>(&mut [Job { rounding, ..Job::flat(coeffs, &mut whole[..], &grad, buffers) }]);
        let mut buffers = states[1].buffers_mut::<Bf16>(&[len; MAX_BUFFERS], used);
        for window in cuts.windows(2) {
          let (lo, hi) = (window[0], window[1]);
          let part = buffers.each_mut().map(|b| if b.is_empty() { &mut b[..] } else { &mut b[lo..hi] });
          let job = Job { rounding: rounding.at(lo), ..Job::flat(coeffs, &mut sliced[lo..hi], &grad[lo..hi], part) };
          run_bf16::<O>(&mut [job]);
        }
        by_hand::<O>(&coeffs, expected, &grad, &mut hand, rounding);
        by_hand::<O>(&coeffs, &mut nearest_param, &grad, &mut nearest, Rounding::Nearest);
      }
      let [whole, sliced, expected] = &params;
      assert!(same_bits(whole, expected), "{} parameters, length {len}", O::NAME);
      assert!(same_bits(sliced, expected), "{} parameters in slices, length {len}", O::NAME);
      for (state, what) in states.iter().zip(["whole", "in slices"]) {
        let Buffers::Bf16(got) = &state.buffers else { panic!("bf16 state") };
        assert_eq!(got, &hand, "{} state {what}, length {len}", O::NAME);
      }
      if len > 1000 {
        let differ = hand.iter().zip(&nearest).flat_map(|(a, b)| a.iter().zip(b)).filter(|(a, b)| a != b).count();
        assert!(differ > len / 100, "{} length {len}: only {differ} elements differ from rounding to nearest", O::NAME);
      }
    }
  }

  #[test]
  fn fused_stochastic_kernels_match_the_chunked_path_and_rounding_by_hand() {
    let adam = Adam::default();
    let stochastic = Some(Rounding::stochastic(3, 1).at(1000));
    assert_fused_matches_chunked(adam, 3, stochastic);
    assert_fused_matches_chunked(Adam { amsgrad: true, weight_decay: 0.01, ..adam }, 3, stochastic);
    assert_fused_matches_chunked(Adam { maximize: true, betas: (0.3, 0.9), eps: 1e-3, ..adam }, 3, stochastic);
    assert_fused_matches_chunked(AdamW { amsgrad: true, ..AdamW::default() }.as_adam(), 3, stochastic);
    let nadam = NAdam::default();
    assert_fused_matches_chunked(nadam, 3, stochastic);
    assert_fused_matches_chunked(NAdam { decoupled_weight_decay: true, weight_decay: 0.05, ..nadam }, 3, stochastic);
    // RAdam is rectified from step 6 on with the default β₂; with β₂ = 0.3 from step 2.
    assert_fused_matches_chunked(RAdam::default(), 7, stochastic);
    assert_fused_matches_chunked(RAdam { betas: (0.9, 0.3), weight_decay: 0.1, ..RAdam::default() }, 3, stochastic);
    assert_fused_matches_chunked(Adamax::default(), 3, stochastic);
    assert_fused_matches_chunked(Adamax { weight_decay: 0.1, maximize: true, ..Adamax::default() }, 3, stochastic);
    assert_fused_matches_chunked(Sgd { momentum: 0.9, lr: 0.1, ..Sgd::default() }, 3, stochastic);
    assert_fused_matches_chunked(Sgd { momentum: 0.8, nesterov: true, lr: 0.1, ..Sgd::default() }, 3, stochastic);
  }

  #[test]
  fn stochastic_steps_match_widen_kernel_narrow_by_hand_however_cut() {
    assert_stochastic_engine_matches_by_hand(Adam { amsgrad: true, weight_decay: 0.01, ..Adam::default() }, 3);
    assert_stochastic_engine_matches_by_hand(NAdam::default(), 3);
    assert_stochastic_engine_matches_by_hand(RAdam::default(), 7);
    assert_stochastic_engine_matches_by_hand(Adamax::default(), 3);
    assert_stochastic_engine_matches_by_hand(Sgd { momentum: 0.9, nesterov: true, ..Sgd::default() }, 3);
  }
}
