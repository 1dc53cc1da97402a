//! `cargo bench --bench bf16`: a step of each optimizer that can keep bfloat16 state (Adam,
//! NAdam, RAdam, Adamax, SGD with momentum 0.9; default options) with float32 state and with
//! bfloat16 state, through the engine, same sizes, on one and two threads, in one process: the
//! two take turns, round after round, and each figure is the best of its rounds, so that a
//! neighbour's burst of activity does not count against one of them. On one thread the chunked
//! path ([`fastoptim_core::engine::bf16::update`], what an optimizer's bfloat16 state runs without
//! a fused kernel) takes its turn too, run over the engine's pieces as the engine would. Last,
//! bfloat16 state rounded stochastically (`stateRounding: 'stochastic'`, in the same fused kernels)
//! through the engine, on both thread counts.
//!
//! `cargo bench --bench bf16 -- [sizes...]` (default 4m 64m); `FASTOPTIM_BENCH_ONLY=Adam,SGD`
//! runs those optimizers only.

mod common;

use std::hint::black_box;

use common::{alternate, sizes};

use fastoptim_core::engine::bf16::update as chunked;
use fastoptim_core::engine::run::MAX_PIECE_ELEMENTS;
use fastoptim_core::threads::{num_threads, set_num_threads};
use fastoptim_core::{
  any_non_finite, run, run_bf16, Adam, Adamax, Bf16, Job, NAdam, Optimizer, ParamState, RAdam, Rounding, Sgd,
};

fn fill(n: usize, seed: f64, scale: f64) -> Vec<f32> {
  (0..n).map(|i| (((i as f64 + seed) * 0.618).sin() * scale) as f32).collect()
}

/// Steps before the first timed one: past RAdam's unrectified first steps, which skip its
/// square root and division.
const FIRST_STEP: u64 = 10;

/// How a step keeps and updates its state.
#[derive(Clone, Copy, PartialEq)]
enum Path {
  Fp32,
  Bf16,
  /// bfloat16 state by the chunked path, on this thread.
  Chunked,
  /// bfloat16 state rounded stochastically, through the engine.
  Stochastic,
}

/// `config`'s step over `n` elements, through the engine or (`Path::Chunked`) on this thread.
fn stepper<O: Optimizer>(config: O, n: usize, path: Path) -> Box<dyn FnMut()> {
  let mut param = fill(n, 1.0, 0.1);
  let grad = fill(n, 2.0, 0.01);
  let mut state = ParamState { step: FIRST_STEP, ..ParamState::default() };
  Box::new(move || {
    state.step += 1;
    let mut coeffs = config.coeffs(state.step);
    config.advance(&mut coeffs, &mut state);
    let lens = [n; 3];
    match path {
      Path::Fp32 => {
        let buffers = state.buffers_mut::<f32>(&lens, config.buffers_used());
        run::<O, f32>(black_box(&mut [Job::flat(coeffs, &mut param, &grad, buffers)]));
      }
      Path::Bf16 => {
        let buffers = state.buffers_mut::<Bf16>(&lens, config.buffers_used());
        run_bf16::<O>(black_box(&mut [Job::flat(coeffs, &mut param, &grad, buffers)]));
      }
      Path::Stochastic => {
        let rounding = Rounding::stochastic(0, state.step);
        let buffers = state.buffers_mut::<Bf16>(&lens, config.buffers_used());
        let job = Job { rounding, ..Job::flat(coeffs, &mut param, &grad, buffers) };
        run_bf16::<O>(black_box(&mut [job]));
      }
      Path::Chunked => {
        let mut buffers = state.buffers_mut::<Bf16>(&lens, config.buffers_used());
        for from in (0..n).step_by(MAX_PIECE_ELEMENTS) {
          let to = (from + MAX_PIECE_ELEMENTS).min(n);
          let piece = buffers.each_mut().map(|b| if b.is_empty() { &mut b[..] } else { &mut b[from..to] });
          chunked::<O>(&coeffs, black_box(&mut param[from..to]), &grad[from..to], piece, None);
          black_box(any_non_finite(&grad[from..to]));
        }
      }
    }
  })
}

/// Times `config` with float32 and bfloat16 state at every size and thread count, printing a line each.
fn compare<O: Optimizer>(name: &str, config: O, sizes: &[usize]) {
  if let Ok(only) = std::env::var("FASTOPTIM_BENCH_ONLY") {
    if !only.split(',').any(|o| o.eq_ignore_ascii_case(name)) {
      return;
    }
  }
  let threads = num_threads();
  for &n in sizes {
    let (rounds, batch) = if n > 16 << 20 { (10, 2) } else { (20, 5) };
    for t in [1, 2] {
      set_num_threads(t).expect("threads");
      let mut steps =
        vec![stepper(config, n, Path::Fp32), stepper(config, n, Path::Bf16), stepper(config, n, Path::Stochastic)];
      if t == 1 {
        steps.push(stepper(config, n, Path::Chunked));
      }
      let best = alternate(steps.iter_mut().map(|s| &mut **s as &mut dyn FnMut()), rounds, batch);
      let chunked =
        best.get(3).map_or(String::new(), |&c| format!(", chunked bf16 {:>8.0} us ({:.2}x)", c * 1e6, best[0] / c));
      println!(
        "{name:>7} {:>3}M {t} thread{}: fp32 state {:>8.0} us, bf16 state {:>8.0} us, fp32/bf16 {:.2}x, \
         stochastic bf16 {:>8.0} us ({:.2}x){chunked}",
        n >> 20,
        if t == 1 { " " } else { "s" },
        best[0] * 1e6,
        best[1] * 1e6,
        best[0] / best[1],
        best[2] * 1e6,
        best[0] / best[2]
      );
    }
  }
  set_num_threads(threads).expect("threads");
}

fn main() {
  let sizes = sizes(&[4 << 20, 64 << 20]);
  compare("Adam", Adam::default(), &sizes);
  compare("NAdam", NAdam::default(), &sizes);
  compare("RAdam", RAdam::default(), &sizes);
  compare("Adamax", Adamax::default(), &sizes);
  compare("SGD", Sgd { momentum: 0.9, ..Sgd::default() }, &sizes);
}
