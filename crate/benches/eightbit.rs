//! `cargo bench --bench eightbit`: a step of 8-bit Adam, AdamW and Lion (bitsandbytes'
//! `Adam8bit`, `AdamW8bit`, `Lion8bit`) against fp32 Adam through the engine, same sizes, on one
//! and two threads, in one process: the variants take turns, round after round, and each figure
//! is the best of its rounds, so that a neighbour's burst of activity does not count against one
//! of them. Then the 8-bit kernels alone on one thread at each instruction level this CPU runs
//! (the same bits at every level), also taking turns.
//!
//! `cargo bench --bench eightbit -- [sizes...]` (default 4m 64m).

mod common;

use std::hint::black_box;

use common::{alternate, sizes};

use fastoptim_core::eightbit::{self, Adam8bit, EightBit, Hyper, Level, Lion8bit, Moments, Quantized, MIN_8BIT_SIZE};
use fastoptim_core::threads::{num_threads, set_num_threads};
use fastoptim_core::{run, Adam, Dims, Job, Optimizer, ParamState};

fn fill(n: usize, seed: f64, scale: f64) -> Vec<f32> {
  (0..n).map(|i| (((i as f64 + seed) * 0.618).sin() * scale) as f32).collect()
}

/// A named step, timed in turns with others.
type Variant = (String, Box<dyn FnMut()>);

/// An 8-bit optimizer's step over `n` elements through the engine.
fn eight_bit<O: EightBit>(n: usize, hyper: Hyper) -> Box<dyn FnMut()> {
  let mut param = fill(n, 1.0, 0.1);
  let grad = fill(n, 2.0, 0.01);
  let mut moments = Moments::new(n, MIN_8BIT_SIZE, O::MOMENTS);
  let mut t = 0;
  Box::new(move || {
    t += 1;
    let job = eightbit::Job::new::<O>(O::coeffs(&hyper, t), &mut param, &grad, &mut moments).expect("sizes");
    eightbit::run::<O>(black_box(&mut [job]));
  })
}

/// An 8-bit optimizer's fused kernel over `n` elements on this thread at `level`.
fn kernel<O: EightBit>(n: usize, hyper: Hyper, level: Level) -> Box<dyn FnMut()> {
  let mut param = fill(n, 1.0, 0.1);
  let grad = fill(n, 2.0, 0.01);
  let mut moments = Moments::new(n, 0, O::MOMENTS);
  let mut t = 0;
  Box::new(move || {
    t += 1;
    let Moments::Quantized { state1, absmax1, state2, absmax2 } = &mut moments else { unreachable!() };
    let parts = Quantized { state1, absmax1, state2, absmax2 };
    O::quantized_at(level, &O::coeffs(&hyper, t), black_box(&mut param), &grad, parts);
  })
}

/// fp32 Adam's step over `n` elements through the engine.
fn fp32_adam(n: usize) -> Box<dyn FnMut()> {
  let mut param = fill(n, 1.0, 0.1);
  let grad = fill(n, 2.0, 0.01);
  let mut state = ParamState::default();
  let config = Adam::default();
  Box::new(move || {
    state.step += 1;
    let coeffs = config.coeffs(state.step);
    let (buffers, partials) = state.step_parts::<f32>(&[n; 3], config.buffers_used(), 0);
    let mut jobs = [Job::new(coeffs, &mut param, &grad, buffers, Dims::flat(n), partials)];
    run::<Adam, f32>(black_box(&mut jobs));
  })
}

fn main() {
  let sizes = sizes(&[4 << 20, 64 << 20]);
  let adam = Hyper { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 };
  let adamw = Hyper { weight_decay: 0.01, ..adam };
  let lion = Hyper { lr: 1e-4, beta1: 0.9, beta2: 0.99, eps: 0.0, weight_decay: 0.0 };
  let threads = num_threads();
  for n in sizes {
    let (rounds, batch) = if n > 16 << 20 { (6, 2) } else { (10, 5) };
    let g = |s: f64| n as f64 / s / 1e9;
    for t in [1, 2] {
      set_num_threads(t).expect("threads");
      let mut variants: Vec<Variant> = vec![
        ("fp32 Adam".into(), fp32_adam(n)),
        ("Adam8bit".into(), eight_bit::<Adam8bit>(n, adam)),
        ("AdamW8bit".into(), eight_bit::<Adam8bit>(n, adamw)),
        ("Lion8bit".into(), eight_bit::<Lion8bit>(n, lion)),
      ];
      let best = alternate(variants.iter_mut().map(|(_, s)| &mut **s as &mut dyn FnMut()), rounds, batch);
      let line: Vec<String> = variants
        .iter()
        .zip(&best)
        .map(|((name, _), &s)| format!("{name} {:.2} ms ({:.2} Gparam/s, {:.2}x)", s * 1e3, g(s), best[0] / s))
        .collect();
      println!("{:>4}M {t} thread{}: {}", n >> 20, if t == 1 { " " } else { "s" }, line.join("  "));
    }
    set_num_threads(threads).expect("threads");
    let mut variants: Vec<Variant> = Vec::new();
    for level in Level::available() {
      variants.push((format!("Adam8bit {level:?}"), kernel::<Adam8bit>(n, adam, level)));
      variants.push((format!("Lion8bit {level:?}"), kernel::<Lion8bit>(n, lion, level)));
    }
    let best = alternate(variants.iter_mut().map(|(_, s)| &mut **s as &mut dyn FnMut()), rounds, batch);
    let line: Vec<String> = variants
      .iter()
      .zip(&best)
      .map(|((name, _), &s)| format!("{name} {:.2} ms ({:.2} Gparam/s)", s * 1e3, g(s)))
      .collect();
    println!("{:>4}M kernel, 1 thread: {}", n >> 20, line.join("  "));
  }
}
