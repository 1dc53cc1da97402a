//! `cargo bench --bench eightbit`: a step of 8-bit Adam and Lion (bitsandbytes' `Adam8bit`,
//! `Lion8bit`) against fp32 Adam through the engine, same sizes, same threads, same run.
//!
//! `cargo bench --bench eightbit -- [sizes...]` (default 4m 64m); each figure is the best of a
//! few timed steps after a warm-up, so that a neighbour's burst of activity does not count.

use std::hint::black_box;
use std::time::Instant;

use fastoptim_core::eightbit::{self, Adam8bit, EightBit, Hyper, Lion8bit, Moments, MIN_8BIT_SIZE};
use fastoptim_core::threads::num_threads;
use fastoptim_core::{run, Adam, Dims, Job, Optimizer, ParamState};

fn fill(n: usize, seed: f64, scale: f64) -> Vec<f32> {
  (0..n).map(|i| (((i as f64 + seed) * 0.618).sin() * scale) as f32).collect()
}

/// Seconds of the best of `reps` steps, after two untimed.
fn best(reps: usize, mut step: impl FnMut()) -> f64 {
  step();
  step();
  (0..reps)
    .map(|_| {
      let t = Instant::now();
      step();
      t.elapsed().as_secs_f64()
    })
    .fold(f64::INFINITY, f64::min)
}

fn eight_bit<O: EightBit>(n: usize, reps: usize, hyper: Hyper) -> f64 {
  let mut param = fill(n, 1.0, 0.1);
  let grad = fill(n, 2.0, 0.01);
  let mut moments = Moments::new(n, MIN_8BIT_SIZE, O::MOMENTS);
  let mut t = 0;
  best(reps, || {
    t += 1;
    let job = eightbit::Job::new::<O>(O::coeffs(&hyper, t), &mut param, &grad, &mut moments).expect("sizes");
    eightbit::run::<O>(black_box(&mut [job]));
  })
}

fn fp32_adam(n: usize, reps: usize) -> f64 {
  let mut param = fill(n, 1.0, 0.1);
  let grad = fill(n, 2.0, 0.01);
  let mut state = ParamState::default();
  let config = Adam::default();
  best(reps, || {
    state.step += 1;
    let coeffs = config.coeffs(state.step);
    let (buffers, partials) = state.step_parts::<f32>(&[n; 3], config.buffers_used(), 0);
    let mut jobs = [Job { coeffs, param: &mut param, grad: &grad, buffers, dims: Dims::flat(n), partials }];
    run::<Adam, f32>(black_box(&mut jobs));
  })
}

fn main() {
  let sizes: Vec<usize> = std::env::args()
    .skip(1)
    .filter_map(|a| {
      let a = a.to_ascii_lowercase();
      let (digits, scale) = if let Some(d) = a.strip_suffix('m') { (d.to_string(), 1 << 20) } else { (a.clone(), 1) };
      digits.parse::<usize>().ok().map(|n| n * scale)
    })
    .collect();
  let sizes = if sizes.is_empty() { vec![4 << 20, 64 << 20] } else { sizes };
  let adam = Hyper { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 };
  let lion = Hyper { lr: 1e-4, beta1: 0.9, beta2: 0.99, eps: 0.0, weight_decay: 0.0 };
  println!("threads: {}", num_threads());
  for n in sizes {
    let reps = if n > 16 << 20 { 5 } else { 20 };
    let fp32 = fp32_adam(n, reps);
    let a8 = eight_bit::<Adam8bit>(n, reps, adam);
    let l8 = eight_bit::<Lion8bit>(n, reps, lion);
    let g = |s: f64| n as f64 / s / 1e9;
    println!(
      "{:>4}M  fp32 Adam {:8.3} ms ({:.2} Gparam/s)  Adam8bit {:8.3} ms ({:.2} Gparam/s, {:.2}x fp32 Adam)  Lion8bit {:8.3} ms ({:.2} Gparam/s)",
      n >> 20,
      fp32 * 1e3,
      g(fp32),
      a8 * 1e3,
      g(a8),
      fp32 / a8,
      l8 * 1e3,
      g(l8)
    );
  }
}
