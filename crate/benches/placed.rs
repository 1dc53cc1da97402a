//! `cargo bench --bench placed`: an Adam step whose state buffers start where the allocator puts
//! them, against one whose buffers are [`Placed`] (each a KiB further into its page than the one
//! before), one and two threads, at 24M, 32M and 64M elements: where the slowdown was found (24M
//! and 32M with float32 state, 64M with bfloat16 state) and where it was not (64M with float32
//! state, 24M with bfloat16 state). Each way allocates its parameter, gradient and state one after
//! the other, as a program does, and the two take turns, round after round; each figure is the
//! best of its rounds.
//!
//! `cargo bench --bench placed -- [sizes...]` (in elements, `m` for 2^20) times those sizes only.

mod common;

use std::hint::black_box;

use common::{alternate, sizes};

use fastoptim_core::engine::placed::Placed;
use fastoptim_core::engine::state::zeroed;
use fastoptim_core::threads::{num_threads, set_num_threads};
use fastoptim_core::{run, run_bf16, Adam, Bf16, Job, Optimizer};

/// Steps before the first timed one.
const FIRST_STEP: u64 = 10;

/// One parameter's arrays: the state plain (`placed` false) or placed, `S` its element type.
struct Arrays<S> {
  param: Vec<f32>,
  grad: Vec<f32>,
  state: [Box<dyn std::ops::DerefMut<Target = [S]>>; 2],
  step: u64,
}

impl<S: fastoptim_core::state::ZeroBits + 'static> Arrays<S> {
  fn new(n: usize, placed: bool) -> Self {
    let param: Vec<f32> = (0..n).map(|i| ((i as f64 * 0.618).sin() * 0.1) as f32).collect();
    let grad: Vec<f32> = (0..n).map(|i| ((i as f64 * 0.382).sin() * 0.01) as f32).collect();
    let buffer = |index| -> Box<dyn std::ops::DerefMut<Target = [S]>> {
      if placed {
        Box::new(Placed::zeroed(n, index))
      } else {
        Box::new(zeroed(n))
      }
    };
    let state = [buffer(0), buffer(1)];
    Arrays { param, grad, state, step: FIRST_STEP }
  }

  /// Bytes from the start of each array's page to its first element, in array order.
  fn page_offsets(&self) -> [usize; 4] {
    let at = |p: usize| p % 4096;
    [
      at(self.param.as_ptr() as usize),
      at(self.grad.as_ptr() as usize),
      at(self.state[0].as_ptr() as usize),
      at(self.state[1].as_ptr() as usize),
    ]
  }
}

fn step_f32(a: &mut Arrays<f32>) {
  a.step += 1;
  let coeffs = Adam::default().coeffs(a.step);
  let [m, v] = &mut a.state;
  run::<Adam, f32>(black_box(&mut [Job::flat(coeffs, &mut a.param, &a.grad, [&mut **m, &mut **v, &mut []])]));
}

fn step_bf16(a: &mut Arrays<Bf16>) {
  a.step += 1;
  let coeffs = Adam::default().coeffs(a.step);
  let [m, v] = &mut a.state;
  run_bf16::<Adam>(black_box(&mut [Job::flat(coeffs, &mut a.param, &a.grad, [&mut **m, &mut **v, &mut []])]));
}

/// Times `n` elements both ways with state of `S`, printing a line per thread count.
fn compare<S: fastoptim_core::state::ZeroBits + 'static>(what: &str, n: usize, step: fn(&mut Arrays<S>)) {
  let mut plain = Arrays::new(n, false);
  let mut placed = Arrays::new(n, true);
  let offsets = |a: &Arrays<S>| format!("{:?}", a.page_offsets());
  println!("{what} {n}: page offsets of p, g, m, v: plain {}, placed {}", offsets(&plain), offsets(&placed));
  for threads in [1, 2] {
    set_num_threads(threads).expect("threads");
    let (mut a, mut b) = (|| step(&mut plain), || step(&mut placed));
    let best = alternate([&mut a as &mut dyn FnMut(), &mut b], 8, 2);
    println!(
      "  {threads} thread{}: plain {:>7.1} ms, placed {:>7.1} ms, plain/placed {:.2}x",
      if threads == 1 { " " } else { "s" },
      best[0] * 1e3,
      best[1] * 1e3,
      best[0] / best[1]
    );
  }
}

fn main() {
  let threads = num_threads();
  for n in sizes(&[24 << 20, 32 << 20, 64 << 20]) {
    compare("Adam, float32 state,", n, step_f32);
    compare("Adam, bfloat16 state,", n, step_bf16);
  }
  set_num_threads(threads).expect("threads");
}
