//! Block-wise dynamic quantization: bitsandbytes' 8-bit code for optimizer state (Dettmers,
//! Lewis, Shleifer & Zettlemoyer, "8-bit Optimizers via Block-wise Quantization", ICLR 2022).
//!
//! A tensor is cut into blocks of [`BLOCK`] elements (the last one may be shorter); each block
//! keeps one `f32`, its largest magnitude (absmax), and one byte per element: an index into a
//! sorted 256-entry map. Dequantizing is `map[code] · absmax`.
//!
//! The maps are bitsandbytes' `create_dynamic_map(signed=True)` (first moments) and
//! `create_dynamic_map(signed=False)` (second moments), bit for bit.
//!
//! Quantizing follows bitsandbytes 0.50's CPU quantizer code for code: the absmax is the largest
//! |x| of the block (NaN passed over, as C's `fmax`), each element is divided by it (a true `f32`
//! division, so the quotient is in [−1, 1]; NaN, and 0/0 in a block of zeros, give code 0), and
//! the quotient is looked up. bitsandbytes looks it up with an approximate index over the map (a
//! BinSearch "Direct2" index, then the nearer of two neighbours), which is the nearest entry almost
//! everywhere but not near 0, where its index is coarse: there 0 quantizes to ±2.1e-5 in the signed
//! map and to 1.6e-5 in the unsigned one. Its code is a rising step function of the quotient,
//! measured on every `f32` in [−1, 1] (scripts/gen_fixtures_eightbit.py `--steps`, in
//! `quantize_steps.rs`: 249 and 246 steps). [`QuantMap::code`] finds the code of a quotient with
//! one lookup in a packed table of 2^16-key ranges of quotients (the codes either side of the one
//! step boundary a range may hold, and that boundary's low key bits) and one comparison; the tests
//! hold it equal to the steps on every `f32` in [−1, 1] and to a plain binary search of the steps
//! ([`code_reference`]) at every step, its neighbours and random quotients.

use std::sync::OnceLock;

/// Elements per block, bitsandbytes' `blocksize` for optimizer state.
pub const BLOCK: usize = 256;

/// The number of blocks of a tensor of `len` elements.
pub const fn blocks(len: usize) -> usize {
  len.div_ceil(BLOCK)
}

/// bitsandbytes' `create_dynamic_map(signed=True)` as `f32` bits.
const SIGNED_BITS: [u32; 256] = [
  0xbf7e3333, 0xbf7a999a, 0xbf770000, 0xbf736666, 0xbf6fcccd, 0xbf6c3333, 0xbf68999a, 0xbf650000, 0xbf616666,
  0xbf5dcccd, 0xbf5a3333, 0xbf56999a, 0xbf530000, 0xbf4f6666, 0xbf4bcccd, 0xbf483333, 0xbf44999a, 0xbf410000,
  0xbf3d6666, 0xbf39cccd, 0xbf363334, 0xbf32999a, 0xbf2f0000, 0xbf2b6666, 0xbf27cccd, 0xbf243334, 0xbf20999a,
  0xbf1d0000, 0xbf196666, 0xbf15cccd, 0xbf123334, 0xbf0e999a, 0xbf0b0000, 0xbf076666, 0xbf03cccc, 0xbf003333,
  0xbef93332, 0xbef20000, 0xbeeacccc, 0xbee3999a, 0xbedc6666, 0xbed53333, 0xbece0000, 0xbec6cccc, 0xbebf999a,
  0xbeb86666, 0xbeb13333, 0xbeaa0000, 0xbea2cccc, 0xbe9b999a, 0xbe946666, 0xbe8d3334, 0xbe860000, 0xbe7d9999,
  0xbe6f3333, 0xbe60cccd, 0xbe526666, 0xbe440000, 0xbe35999a, 0xbe273333, 0xbe18cccd, 0xbe0a6666, 0xbdf80000,
  0xbddb3334, 0xbdc9eb85, 0xbdc428f7, 0xbdbe6667, 0xbdb8a3d7, 0xbdb2e148, 0xbdad1eb8, 0xbda75c2a, 0xbda1999a,
  0xbd9bd70a, 0xbd96147b, 0xbd9051eb, 0xbd8a8f5d, 0xbd84cccd, 0xbd7e147b, 0xbd728f5d, 0xbd670a3d, 0xbd5b851f,
  0xbd500000, 0xbd447ae1, 0xbd38f5c3, 0xbd2d70a3, 0xbd21eb85, 0xbd166667, 0xbd0ae148, 0xbcfeb852, 0xbce7ae15,
  0xbcd0a3d7, 0xbcb9999a, 0xbca28f5d, 0xbc8b851f, 0xbc68f5c3, 0xbc3ae148, 0xbc1f3b64, 0xbc160418, 0xbc0ccccd,
  0xbc039581, 0xbbf4bc6a, 0xbbe24dd3, 0xbbcfdf3b, 0xbbbd70a4, 0xbbab020d, 0xbb989374, 0xbb8624dd, 0xbb676c8a,
  0xbb428f5c, 0xbb1db22d, 0xbaf1a9fc, 0xbaa7ef9d, 0xba7765ff, 0xba59e83e, 0xba3c6a80, 0xba1eecc1, 0xba016f01,
  0xb9c7e283, 0xb98ce705, 0xb923d70b, 0xb8ba1f4b, 0xb88aefb3, 0xb8378034, 0xb7b24206, 0xb70205ff, 0xb65a1a94,
  0xb513a3b7, 0x00000000, 0x3513a3b7, 0x365a1a94, 0x370205ff, 0x37b24206, 0x38378034, 0x388aefb3, 0x38ba1f4b,
  0x3923d70b, 0x398ce705, 0x39c7e283, 0x3a016f01, 0x3a1eecc1, 0x3a3c6a80, 0x3a59e83e, 0x3a7765ff, 0x3aa7ef9d,
  0x3af1a9fc, 0x3b1db22d, 0x3b428f5c, 0x3b676c8a, 0x3b8624dd, 0x3b989374, 0x3bab020d, 0x3bbd70a4, 0x3bcfdf3b,
  0x3be24dd3, 0x3bf4bc6a, 0x3c039581, 0x3c0ccccd, 0x3c160418, 0x3c1f3b64, 0x3c3ae148, 0x3c68f5c3, 0x3c8b851f,
  0x3ca28f5d, 0x3cb9999a, 0x3cd0a3d7, 0x3ce7ae15, 0x3cfeb852, 0x3d0ae148, 0x3d166667, 0x3d21eb85, 0x3d2d70a3,
  0x3d38f5c3, 0x3d447ae1, 0x3d500000, 0x3d5b851f, 0x3d670a3d, 0x3d728f5d, 0x3d7e147b, 0x3d84cccd, 0x3d8a8f5d,
  0x3d9051eb, 0x3d96147b, 0x3d9bd70a, 0x3da1999a, 0x3da75c2a, 0x3dad1eb8, 0x3db2e148, 0x3db8a3d7, 0x3dbe6667,
  0x3dc428f7, 0x3dc9eb85, 0x3ddb3334, 0x3df80000, 0x3e0a6666, 0x3e18cccd, 0x3e273333, 0x3e35999a, 0x3e440000,
  0x3e526666, 0x3e60cccd, 0x3e6f3333, 0x3e7d9999, 0x3e860000, 0x3e8d3334, 0x3e946666, 0x3e9b999a, 0x3ea2cccc,
  0x3eaa0000, 0x3eb13333, 0x3eb86666, 0x3ebf999a, 0x3ec6cccc, 0x3ece0000, 0x3ed53333, 0x3edc6666, 0x3ee3999a,
  0x3eeacccc, 0x3ef20000, 0x3ef93332, 0x3f003333, 0x3f03cccc, 0x3f076666, 0x3f0b0000, 0x3f0e999a, 0x3f123334,
  0x3f15cccd, 0x3f196666, 0x3f1d0000, 0x3f20999a, 0x3f243334, 0x3f27cccd, 0x3f2b6666, 0x3f2f0000, 0x3f32999a,
  0x3f363334, 0x3f39cccd, 0x3f3d6666, 0x3f410000, 0x3f44999a, 0x3f483333, 0x3f4bcccd, 0x3f4f6666, 0x3f530000,
  0x3f56999a, 0x3f5a3333, 0x3f5dcccd, 0x3f616666, 0x3f650000, 0x3f68999a, 0x3f6c3333, 0x3f6fcccd, 0x3f736666,
  0x3f770000, 0x3f7a999a, 0x3f7e3333, 0x3f800000,
];

/// bitsandbytes' `create_dynamic_map(signed=False)` as `f32` bits.
const UNSIGNED_BITS: [u32; 256] = [
  0x00000000, 0x34ae7baa, 0x35500998, 0x360e9b38, 0x3692ccf6, 0x36de4c51, 0x3714e5d5, 0x3783126e, 0x37e171a0,
  0x381fe868, 0x384f1800, 0x387e479a, 0x3896bb99, 0x38ae5364, 0x38c5eb31, 0x3906594b, 0x394154ca, 0x397c5049,
  0x399ba5e4, 0x39b923a2, 0x39d6a163, 0x39f41f22, 0x3a08ce71, 0x3a178d50, 0x3a264c30, 0x3a350b10, 0x3a43c9ef,
  0x3a5288d0, 0x3a6147af, 0x3a70068e, 0x3a7ec56e, 0x3a958106, 0x3aba5e35, 0x3adf3b64, 0x3b020c4a, 0x3b147ae1,
  0x3b26e978, 0x3b395810, 0x3b4bc6a7, 0x3b5e3540, 0x3b70a3d7, 0x3b818937, 0x3b8ac082, 0x3b93f7cf, 0x3b9d2f1a,
  0x3ba66666, 0x3baf9db2, 0x3bb8d4fd, 0x3bc20c4a, 0x3bcb4395, 0x3bd47ae1, 0x3bddb22e, 0x3be6e978, 0x3bf020c5,
  0x3bf9580f, 0x3c0147ae, 0x3c05e354, 0x3c0a7ef9, 0x3c0f1aa0, 0x3c13b645, 0x3c1851eb, 0x3c1ced92, 0x3c218937,
  0x3c2f5c2a, 0x3c466667, 0x3c5d70a3, 0x3c747ae2, 0x3c85c28f, 0x3c9147af, 0x3c9ccccd, 0x3ca851eb, 0x3cb3d70b,
  0x3cbf5c29, 0x3ccae147, 0x3cd66667, 0x3ce1eb87, 0x3ced70a3, 0x3cf8f5c3, 0x3d023d70, 0x3d080000, 0x3d0dc28f,
  0x3d13851f, 0x3d1947af, 0x3d1f0a3d, 0x3d24cccd, 0x3d2a8f5c, 0x3d3051eb, 0x3d36147b, 0x3d3bd70a, 0x3d41999a,
  0x3d475c28, 0x3d4d1eb8, 0x3d52e147, 0x3d58a3d7, 0x3d5e6667, 0x3d6428f7, 0x3d69eb87, 0x3d6fae15, 0x3d7570a3,
  0x3d7b3333, 0x3d807ae2, 0x3d835c2a, 0x3d863d71, 0x3d891eb8, 0x3d8c0000, 0x3d8ee148, 0x3d91c290, 0x3d94a3d7,
  0x3d97851f, 0x3d9a6667, 0x3d9d47af, 0x3da028f6, 0x3da30a3e, 0x3da5eb85, 0x3da8cccd, 0x3dabae15, 0x3dae8f5c,
  0x3db170a4, 0x3db451eb, 0x3db73333, 0x3dba147b, 0x3dbcf5c3, 0x3dbfd70b, 0x3dc2b852, 0x3dc5999a, 0x3dc87ae2,
  0x3dcb5c29, 0x3dd40000, 0x3de26666, 0x3df0cccd, 0x3dff3333, 0x3e06cccc, 0x3e0e0000, 0x3e153334, 0x3e1c6666,
  0x3e23999a, 0x3e2acccc, 0x3e320000, 0x3e393334, 0x3e406666, 0x3e47999a, 0x3e4ecccc, 0x3e560000, 0x3e5d3334,
  0x3e646666, 0x3e6b999a, 0x3e72cccc, 0x3e7a0000, 0x3e809999, 0x3e843333, 0x3e87cccd, 0x3e8b6666, 0x3e8f0000,
  0x3e92999a, 0x3e963333, 0x3e99cccc, 0x3e9d6666, 0x3ea10000, 0x3ea4999a, 0x3ea83333, 0x3eabcccc, 0x3eaf6666,
  0x3eb30000, 0x3eb6999a, 0x3eba3333, 0x3ebdcccc, 0x3ec16666, 0x3ec50000, 0x3ec8999a, 0x3ecc3333, 0x3ecfcccc,
  0x3ed36666, 0x3ed70000, 0x3eda999a, 0x3ede3333, 0x3ee1cccc, 0x3ee56666, 0x3ee90000, 0x3eec999a, 0x3ef03333,
  0x3ef3cccc, 0x3ef76666, 0x3efb0000, 0x3efe9999, 0x3f01199a, 0x3f02e666, 0x3f04b333, 0x3f068000, 0x3f084ccc,
  0x3f0a199a, 0x3f0be666, 0x3f0db334, 0x3f0f8000, 0x3f114ccd, 0x3f13199a, 0x3f14e666, 0x3f16b334, 0x3f188000,
  0x3f1a4ccd, 0x3f1c199a, 0x3f1de666, 0x3f1fb334, 0x3f218000, 0x3f234ccd, 0x3f25199a, 0x3f26e666, 0x3f28b334,
  0x3f2a8000, 0x3f2c4ccd, 0x3f2e199a, 0x3f2fe666, 0x3f31b334, 0x3f338000, 0x3f354ccd, 0x3f37199a, 0x3f38e666,
  0x3f3ab334, 0x3f3c8000, 0x3f3e4ccd, 0x3f40199a, 0x3f41e666, 0x3f43b334, 0x3f458000, 0x3f474ccc, 0x3f49199a,
  0x3f4ae666, 0x3f4cb334, 0x3f4e8000, 0x3f504ccc, 0x3f52199a, 0x3f53e666, 0x3f55b334, 0x3f578000, 0x3f594ccc,
  0x3f5b199a, 0x3f5ce666, 0x3f5eb334, 0x3f608000, 0x3f624ccc, 0x3f64199a, 0x3f65e666, 0x3f67b334, 0x3f698000,
  0x3f6b4ccc, 0x3f6d199a, 0x3f6ee666, 0x3f70b334, 0x3f728000, 0x3f744ccc, 0x3f76199a, 0x3f77e666, 0x3f79b334,
  0x3f7b8000, 0x3f7d4ccc, 0x3f7f199a, 0x3f800000,
];

include!("quantize_steps.rs");

/// A quotient's range is its [`ordered`] key shifted right by this many bits: 2^16 consecutive
/// `f32`s, fine enough that a range holds at most one step of either map (a binade [2^e, 2^(e+1))
/// is cut into 128 ranges).
pub(crate) const RANGE_SHIFT: u32 = 16;
/// The ranges of [−1, 1] run from `−RANGE_LIMIT` (that of −1) to `RANGE_LIMIT − 1` (that of 1);
/// NaN keys are clamped to one more range either side, whose entry gives code 0.
pub(crate) const RANGE_LIMIT: i32 = (0x3f80_0000 >> RANGE_SHIFT) + 1;
/// Entries of a packed table: ranges `−RANGE_LIMIT − 1 ..= RANGE_LIMIT`, the first at index 0.
pub(crate) const PACKED_LEN: usize = 2 * RANGE_LIMIT as usize + 2;
/// Most steps a map has, and room for the sentinel after the last.
const MAX_STEPS: usize = 256;
/// The packed entry of NaN's ranges: code 0 both sides, the boundary field away from NaN's keys'
/// usual low bits (0), so that NaN is not marked near a boundary.
pub(crate) const NAN_ENTRY: u32 = 0x8000 << 16;

/// How near (in [`ordered`] keys) to a step boundary a vector kernel's approximate quotient must
/// be for its code to be in doubt.
///
/// The approximate quotient of `x` by a block's absmax `top` (a normal `f32`, `|x| ≤ top`) is
/// `q₀ = RN(x·r)`, with `r = s·RN(1/(top·s))` for the power of two `s` that brings `top·s` into
/// [0.5, 1) (`r` exact and finite). The true quotient is `q = RN(x/top)`. With `y = 1/top`,
/// `r = y·(1 + ε)`, `|ε| ≤ 2⁻²⁴`, so the real `x·r` is within `|x/top|·2⁻²⁴` of `x/top`, which is
/// less than one ulp of `x/top`'s binade (`u`, with `|x/top| < 2u·2²³`). Two reals less than `u`
/// apart round to floats at most 1 key apart within one binade; when `x·r` falls into the binade
/// below (ulp `u/2`), `RN(x/top)` is at most 1 key above that binade's top and `RN(x·r)` at most 2
/// keys below it; into the binade above (ulp `2u`), at most 1 key below and 1 above its bottom;
/// among subnormals the spacing is even. So `|key(q₀) − key(q)| ≤ 3`, and their codes differ only
/// if a step boundary `b` (the first key of a step) lies between them, which needs
/// `−2 ≤ key(q₀) − b ≤ 3`. A key within `NEAR` = 4 of a boundary is marked and its vector
/// recomputed with the exact quotient; the tests hold the packed table to mark every key within
/// `NEAR` of every boundary ([`QuantMap::near`]), and the kernels' codes equal to `/`'s at and
/// next to every boundary.
pub(crate) const NEAR: i32 = 4;

/// A quantization map and what finds codes for it.
pub struct QuantMap {
  /// The 256 sorted entries, as bitsandbytes' `create_dynamic_map` returns them.
  pub values: [f32; 256],
  /// `starts[k]`: the least quotient of step k, as an [`ordered`] key; `i32::MAX` past the last.
  starts: [i32; MAX_STEPS + 1],
  /// `codes[k]`: the code of step k (`u32`, so that a vector loop can gather from it).
  codes: [u32; MAX_STEPS + 1],
  /// One entry per range of quotients ([`RANGE_SHIFT`]), at index `(key >> 16) + RANGE_LIMIT + 1`
  /// for the quotient's [`ordered`] key: the code at the range's start (bits 0-7), the code after
  /// the one step boundary that may fall inside the range (bits 8-15, the same code when none
  /// does) and the low 16 bits of that boundary's key (bits 16-31). A quotient's code is one
  /// lookup, one comparison of its key's low 16 bits and one selection ([`Self::code`]).
  ///
  /// Where no boundary falls inside, the 16 bits are free (both codes are equal) and mark where a
  /// key is near a boundary for the vector kernels' approximate quotients ([`NEAR`]): 0 when a
  /// boundary is at the range's first key or within [`NEAR`] keys below it, `0xffff` when one is
  /// within [`NEAR`] keys above its last, `0x8000` (away from both ends) otherwise.
  packed: Box<[u32; PACKED_LEN]>,
}

/// f32 → i32 in the order of the values, −0 just below +0 (for values that are not NaN).
#[inline(always)]
pub fn ordered(x: f32) -> i32 {
  let bits = x.to_bits() as i32;
  bits ^ ((bits >> 31) & 0x7fff_ffff)
}

impl QuantMap {
  fn new(bits: &[u32; 256], steps: &[(u32, u8)]) -> QuantMap {
    assert!(steps.len() <= MAX_STEPS);
    let mut starts = [i32::MAX; MAX_STEPS + 1];
    let mut codes = [0u32; MAX_STEPS + 1];
    for (k, &(z, code)) in steps.iter().enumerate() {
      starts[k] = ordered(f32::from_bits(z));
      codes[k] = code as u32;
    }
    let mut packed = Box::new([0u32; PACKED_LEN]);
    // Where the code changes: every step's start but the first's (−1, below which there is no
    // quotient).
    let changes = &starts[1..steps.len()];
    for (index, entry) in packed.iter_mut().enumerate() {
      let range = index as i32 - RANGE_LIMIT - 1;
      if !(-RANGE_LIMIT..RANGE_LIMIT).contains(&range) {
        *entry = NAN_ENTRY; // NaN: code 0, no boundary.
        continue;
      }
      let first = range << RANGE_SHIFT;
      let last = first | 0xffff;
      let (low, high) = (step_of_key(&starts, first), step_of_key(&starts, last));
      assert!(high - low <= 1, "range {range} holds more than one step boundary");
      // The changes within NEAR keys of the range: at most one, so that one entry can mark it.
      let mut near = changes.iter().filter(|&&c| c >= first.saturating_sub(NEAR) && c <= last.saturating_add(NEAR));
      let nearest = near.next();
      assert!(near.next().is_none(), "range {range} is near more than one step boundary");
      let boundary = match nearest {
        _ if high > low => starts[high] as u32 & 0xffff,
        Some(&c) if c <= first => 0,
        Some(_) => 0xffff,
        None => 0x8000,
      };
      *entry = codes[low] | (codes[high] << 8) | (boundary << 16);
    }
    QuantMap { values: bits.map(f32::from_bits), starts, codes, packed }
  }

  /// The packed range table, for the vector kernels (laid out as the field says).
  #[cfg(any(target_arch = "x86_64", target_arch = "aarch64", test))]
  pub(crate) fn packed(&self) -> &[u32; PACKED_LEN] {
    &self.packed
  }

  /// The step of quotient `x`, by binary search: the last whose start is at or below it.
  fn step_of(&self, x: f32) -> usize {
    step_of_key(&self.starts, ordered(x))
  }

  /// Whether a quotient of key `key` in [−1, 1] is marked near a step boundary, as the vector
  /// kernels mark it (the key's low bits within [`NEAR`] of its range's boundary field).
  #[cfg(test)]
  pub(crate) fn near(&self, key: i32) -> bool {
    let entry = self.packed[((key >> RANGE_SHIFT) + RANGE_LIMIT + 1) as usize];
    ((key & 0xffff) - (entry >> 16) as i32).abs() <= NEAR
  }

  /// The least quotient of each step but the first (where the code changes), ascending.
  #[cfg(all(test, any(target_arch = "x86_64", target_arch = "aarch64")))]
  pub(crate) fn boundaries(&self) -> impl Iterator<Item = f32> + '_ {
    let from_key = |k: i32| f32::from_bits(if k < 0 { (k ^ 0x7fff_ffff) as u32 } else { k as u32 });
    self.starts[1..].iter().take_while(|&&s| s != i32::MAX).map(move |&k| from_key(k))
  }

  /// bitsandbytes' code of quotient `x` ∈ [−1, 1]; 0 for NaN.
  #[inline(always)]
  pub fn code(&self, x: f32) -> u8 {
    let key = ordered(x);
    // NaN keys fall outside [−1, 1]'s ranges and are clamped to the entries of code 0.
    let range = (key >> RANGE_SHIFT).clamp(-RANGE_LIMIT - 1, RANGE_LIMIT);
    let entry = self.packed[(range + RANGE_LIMIT + 1) as usize];
    let above = (key as u32 & 0xffff) >= entry >> 16;
    (if above { entry >> 8 } else { entry }) as u8
  }
}

/// The last step whose start is at or below `key`.
fn step_of_key(starts: &[i32; MAX_STEPS + 1], key: i32) -> usize {
  starts.partition_point(|&start| start <= key).saturating_sub(1)
}

/// bitsandbytes' code of quotient `x`, plainly: a binary search of its steps (0 for NaN).
pub fn code_reference(map: &QuantMap, x: f32) -> u8 {
  if x.is_nan() {
    0
  } else {
    map.codes[map.step_of(x)] as u8
  }
}

/// The map of first moments (signed).
pub fn signed() -> &'static QuantMap {
  static MAP: OnceLock<QuantMap> = OnceLock::new();
  MAP.get_or_init(|| QuantMap::new(&SIGNED_BITS, &SIGNED_STEPS))
}

/// The map of second moments (unsigned).
pub fn unsigned() -> &'static QuantMap {
  static MAP: OnceLock<QuantMap> = OnceLock::new();
  MAP.get_or_init(|| QuantMap::new(&UNSIGNED_BITS, &UNSIGNED_STEPS))
}

/// The absmax of a block as bitsandbytes takes it: the largest |x|, starting from −`f32::MAX`
/// (NaN elements are passed over, as C's `fmax` does).
#[inline(always)]
pub fn absmax(values: &[f32]) -> f32 {
  // Sixteen running maxima, then their maximum: the same value as one running maximum (max
  // ignores NaN and no |x| is −0), in a loop that vectorises.
  let mut lanes = [-f32::MAX; 16];
  let mut chunks = values.chunks_exact(16);
  for chunk in &mut chunks {
    for (lane, &x) in lanes.iter_mut().zip(chunk) {
      *lane = lane.max(x.abs());
    }
  }
  let tail = chunks.remainder().iter().fold(-f32::MAX, |a, &x| a.max(x.abs()));
  lanes.iter().fold(tail, |a, &x| a.max(x))
}

/// Quantizes one block: writes its codes, returns its absmax. The plain form.
pub fn quantize_block_reference(map: &QuantMap, values: &[f32], codes: &mut [u8]) -> f32 {
  let top = values.iter().fold(-f32::MAX, |a, &x| a.max(x.abs()));
  for (code, &x) in codes.iter_mut().zip(values) {
    *code = code_reference(map, x / top);
  }
  top
}

#[cfg(test)]
mod tests {
  use super::*;

  fn maps() -> [&'static QuantMap; 2] {
    [signed(), unsigned()]
  }

  #[test]
  fn maps_are_bitsandbytes_dynamic_maps() {
    for map in maps() {
      assert!(map.values.windows(2).all(|w| w[0] <= w[1]));
      assert_eq!(map.values[255], 1.0);
    }
    assert_eq!(signed().values[0], f32::from_bits(0xbf7e3333));
    // The signed map holds one zero, in the middle; the unsigned map's zero is its first entry.
    assert_eq!(signed().values.iter().filter(|&&x| x == 0.0).count(), 1);
    assert_eq!(unsigned().values[0], 0.0);
    assert!(unsigned().values[1..].iter().all(|&x| x > 0.0));
  }

  #[test]
  fn steps_rise_and_start_at_minus_one() {
    for map in maps() {
      let n = map.starts.iter().position(|&s| s == i32::MAX).unwrap();
      assert_eq!(map.starts[0], ordered(-1.0));
      assert!(map.starts[..n].windows(2).all(|w| w[0] < w[1]));
      assert!(map.codes[..n].windows(2).all(|w| w[0] < w[1]));
      assert_eq!(map.codes[n - 1], 255);
    }
  }

  #[test]
  fn every_range_holds_at_most_one_step() {
    // Building the table asserts it; here the ranges are also seen to tile [−1, 1].
    for map in maps() {
      assert_eq!(ordered(-1.0) >> RANGE_SHIFT, -RANGE_LIMIT);
      assert_eq!(ordered(1.0) >> RANGE_SHIFT, RANGE_LIMIT - 1);
      assert_eq!(map.packed()[0], NAN_ENTRY);
      assert_eq!(map.packed()[PACKED_LEN - 1], NAN_ENTRY);
    }
  }

  /// Every key within [`NEAR`] of a step boundary is marked near it (the premise of the vector
  /// kernels' approximate quotients), and keys at the ends of ranges far from boundaries are not.
  #[test]
  fn keys_near_every_boundary_are_marked() {
    for map in maps() {
      let n = map.starts.iter().position(|&s| s == i32::MAX).unwrap();
      for &c in &map.starts[1..n] {
        for k in c - NEAR..=c + NEAR {
          assert!(map.near(k), "key {k:#x}, boundary {c:#x}");
        }
      }
      assert!(!map.near(ordered(1.0)) && !map.near(ordered(-1.0)) && !map.near(ordered(0.5)));
      // Elsewhere 9 keys of each range of 2^16 are marked: about 1 quotient in 7300.
      let keys = (ordered(-1.0)..=ordered(1.0)).step_by(7);
      let (count, marked) = keys.fold((0usize, 0usize), |(n, m), k| (n + 1, m + map.near(k) as usize));
      assert!(marked * 7000 < count, "{marked} keys of {count} marked");
    }
  }

  /// Every `f32` in [−1, 1] and every NaN, in key order, against the steps walked alongside: the
  /// packed table proven equal to the measured steps on all 2.1·10⁹ quotients (some seconds in
  /// release; a debug build takes every 4099th key).
  #[test]
  fn packed_table_is_the_measured_steps_on_every_quotient() {
    let stride = if cfg!(debug_assertions) { 4099 } else { 1 };
    for map in maps() {
      let (first, last) = (ordered(-1.0), ordered(1.0));
      let mut step = 0;
      let mut key = first;
      while key <= last {
        while map.starts[step + 1] <= key {
          step += 1;
        }
        let x = f32::from_bits(if key < 0 { (key ^ 0x7fff_ffff) as u32 } else { key as u32 });
        if map.code(x) != map.codes[step] as u8 {
          panic!("x = {x:e}: {} against {}", map.code(x), map.codes[step]);
        }
        key += stride;
      }
      for bits in [0x7fc0_0000u32, 0xffc0_0000, 0x7f80_0001, 0xff80_0001, 0x7fff_ffff, 0xffff_ffff] {
        assert_eq!(map.code(f32::from_bits(bits)), 0);
      }
    }
  }

  #[test]
  fn ordered_keys_follow_the_values() {
    let xs = [-1.0f32, -0.5, -1e-30, -0.0, 0.0, 1e-30, 0.5, 1.0];
    assert!(xs.windows(2).all(|w| ordered(w[0]) < ordered(w[1])));
  }

  /// Quotients at every step's start and a few ulps either side, around every map entry, and a
  /// sweep of random quotients at every scale.
  fn probes() -> Vec<f32> {
    let mut xs = vec![-1.0f32, -0.0, 0.0, 1.0, f32::MIN_POSITIVE, -f32::MIN_POSITIVE, 1e-30, -1e-30];
    for map in maps() {
      let starts = map
        .starts
        .iter()
        .filter(|&&s| s != i32::MAX)
        .map(|&s| f32::from_bits(if s < 0 { (s ^ 0x7fff_ffff) as u32 } else { s as u32 }));
      for c in starts.chain(map.values.iter().copied()).chain(map.values.iter().map(|v| -v)) {
        let key = ordered(c);
        for d in -4..=4 {
          let k = key.saturating_add(d);
          xs.push(f32::from_bits(if k < 0 { (k ^ 0x7fff_ffff) as u32 } else { k as u32 }));
        }
      }
    }
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..400_000 {
      state ^= state << 13;
      state ^= state >> 7;
      state ^= state << 17;
      let u = (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
      let scale = 10f32.powi(-(((state >> 8) % 9) as i32));
      xs.push(u);
      xs.push(u * scale);
    }
    xs.into_iter().filter(|x| (-1.0..=1.0).contains(x)).collect()
  }

  #[test]
  fn fast_code_is_the_measured_steps() {
    for map in maps() {
      for x in probes() {
        assert_eq!(map.code(x), code_reference(map, x), "x = {x:e}");
      }
      assert_eq!(map.code(f32::NAN), 0);
      assert_eq!(code_reference(map, f32::NAN), 0);
    }
  }

  #[test]
  fn codes_measured_from_bitsandbytes() {
    // The ends, and bitsandbytes' coarse index near 0: 0 is not the signed map's 0 entry (127)
    // but ±2.1e-5 (131 from above, 123 from below), and 1.6e-5 (7) in the unsigned map.
    for map in maps() {
      assert_eq!(map.code(-1.0), 0);
      assert_eq!(map.code(1.0), 255);
    }
    assert_eq!(signed().code(0.0), signed().code(-0.0));
    assert_eq!(unsigned().code(0.0), 7);
    assert_eq!(signed().code(3.2476297e-8), 131);
    assert_eq!(signed().code(-4.3080785e-8), 123);
    // Away from 0 it is the nearest entry: −0.33010966 → −0.33203125 (47).
    assert_eq!(signed().code(-0.330_109_66), 47);
  }

  #[test]
  fn quantizing_a_block_keeps_its_extreme_exactly() {
    let values: Vec<f32> = (0..BLOCK).map(|i| ((i as f32) * 0.37).sin() * 3.0).collect();
    let mut codes = vec![0u8; BLOCK];
    let top = quantize_block_reference(signed(), &values, &mut codes);
    assert_eq!(top, absmax(&values));
    let (at, _) = values.iter().enumerate().max_by(|a, b| a.1.abs().total_cmp(&b.1.abs())).unwrap();
    assert_eq!(top, values[at].abs());
    assert_eq!(codes[at], if values[at] > 0.0 { 255 } else { 0 });
  }
}
