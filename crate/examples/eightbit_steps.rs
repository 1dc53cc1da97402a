//! Steps an 8-bit optimizer over 16 blocks at one kernel level and prints a checksum of the
//! parameters: the program `scripts/count-aarch64.sh` counts executed instructions of under
//! emulation, level against level.
//!
//! `eightbit_steps <adam|lion> <portable|neon|avx2|avx512> <steps>`

use fastoptim_core::eightbit::{Adam8bit, EightBit, Hyper, Level, Lion8bit, Moments, Quantized};

fn run<O: EightBit>(level: Level, steps: u64) -> u32 {
  const N: usize = 16 * 256;
  let grad: Vec<f32> = (0..N).map(|i| ((i as f32) * 0.37).sin() * 1e-2).collect();
  let mut param: Vec<f32> = (0..N).map(|i| ((i as f32) * 0.11).cos()).collect();
  let mut moments = Moments::new(N, 0, O::MOMENTS);
  let hyper = Hyper { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 };
  for t in 1..=steps {
    let c = O::coeffs(&hyper, t);
    let Moments::Quantized { state1, absmax1, state2, absmax2 } = &mut moments else {
      unreachable!("a minimum size of 0 quantizes")
    };
    O::quantized_at(level, &c, &mut param, &grad, Quantized { state1, absmax1, state2, absmax2 });
  }
  param.iter().fold(0, |a, x| a ^ x.to_bits())
}

fn main() {
  let args: Vec<String> = std::env::args().skip(1).collect();
  let usage = "usage: eightbit_steps <adam|lion> <portable|neon|avx2|avx512> <steps>";
  let [optimizer, level, steps] = &args[..] else { panic!("{usage}") };
  let level = match level.as_str() {
    "portable" => Level::Portable,
    "neon" => Level::Neon,
    "avx2" => Level::Avx2,
    "avx512" => Level::Avx512,
    _ => panic!("{usage}"),
  };
  assert!(level.runs_here(), "{level:?} does not run on this processor");
  let steps = steps.parse().expect(usage);
  let checksum = match optimizer.as_str() {
    "adam" => run::<Adam8bit>(level, steps),
    "lion" => run::<Lion8bit>(level, steps),
    _ => panic!("{usage}"),
  };
  println!("{checksum:08x}");
}
