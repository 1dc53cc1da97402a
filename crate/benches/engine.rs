//! `cargo bench`: the core's kernels through the engine, without Node in the way.
//!
//! For every optimizer (default options, SGD with momentum 0.9), every size and 1 and all
//! threads: time per step, parameters per second, bytes moved per second, and the ratio to the
//! memory-traffic baseline (`MemoryTraffic`: the same reads and writes as Adam, trivial
//! arithmetic) measured in the same run on the same threads. Also a model of 200 tensors of 1K
//! against one tensor of 200K. Fixtures are built before timing; each figure is the best of
//! several timed batches, so that a neighbour's burst of activity does not count.
//!
//! An optimizer of matrices only (Muon) steps each size as the squarest matrix of that many
//! elements (2^k: 2^⌊k/2⌋ rows); its step is matrix products, whose cost grows as n^1.5, so its
//! rows stop at [`MATRIX_MAX`] elements, and the memory baseline says little about it.
//!
//! `cargo bench -- [sizes...]`, e.g. `cargo bench -- 1k 4m`; `FASTOPTIM_BENCH_QUICK=1` times less;
//! `FASTOPTIM_BENCH_ONLY=Adam,SGD` runs those rows only.

use std::hint::black_box;
use std::time::{Duration, Instant};

use fastoptim_core::config::defaults;
use fastoptim_core::threads::{num_threads, set_num_threads};
use fastoptim_core::traffic::MemoryTraffic;
use fastoptim_core::{buffer_lens, run, Adam, Dims, Element, Job, Optimizer, ParamState};

struct Fixture<T> {
  params: Vec<Vec<T>>,
  grads: Vec<Vec<T>>,
  states: Vec<ParamState>,
}

impl<T: Element> Fixture<T> {
  fn new(sizes: &[usize]) -> Self {
    let fill = |n: usize, seed: f64| (0..n).map(|i| T::from_f64(((i as f64 + seed) * 0.618).sin() * 0.1)).collect();
    Fixture {
      params: sizes.iter().map(|&n| fill(n, 1.0)).collect(),
      grads: sizes.iter().map(|&n| fill(n, 2.0)).collect(),
      states: vec![ParamState::default(); sizes.len()],
    }
  }

  fn step<O: Optimizer>(&mut self, config: O) {
    let mut jobs: Vec<Job<'_, T, O::Coeffs>> = Vec::with_capacity(self.params.len());
    // The scalars of a step count, computed once for the tensors that share it, as the binding
    // computes them once per group (src/lib.rs, advance).
    let mut memo: Option<(u64, O::Coeffs)> = None;
    for ((param, grad), state) in self.params.iter_mut().zip(&self.grads).zip(&mut self.states) {
      state.step += 1;
      let mut coeffs = match memo {
        Some((step, coeffs)) if step == state.step => coeffs,
        _ => memo.insert((state.step, config.coeffs(state.step))).1,
      };
      config.advance(&mut coeffs, state);
      let dims = if O::MATRICES { squarest(param.len()) } else { Dims::flat(param.len()) };
      let (buffers, partials) =
        state.step_parts::<T>(&buffer_lens::<O>(dims), config.buffers_used(), O::partials_len(dims));
      jobs.push(Job::new(coeffs, param, grad, buffers, dims, partials));
    }
    run::<O, T>(black_box(&mut jobs));
  }
}

/// Seconds per step: the best batch, after a warm-up.
/// The squarest matrix of `n` elements with a power-of-two row count.
fn squarest(n: usize) -> Dims {
  let mut rows = 1;
  while (rows * 2) * (rows * 2) <= n && n.is_multiple_of(rows * 2) {
    rows *= 2;
  }
  Dims::of(&[rows, n / rows])
}

/// The most elements an optimizer of matrices only is timed at (a 256 × 256 matrix).
const MATRIX_MAX: usize = 1 << 16;

fn time_step(mut step: impl FnMut(), elements: usize) -> f64 {
  let quick = std::env::var_os("FASTOPTIM_BENCH_QUICK").is_some();
  let batch = (4_000_000 / elements.max(1)).clamp(1, 10_000);
  let budget = Duration::from_millis(if quick { 150 } else { 600 });
  for _ in 0..batch.min(50) {
    step();
  }
  let started = Instant::now();
  let mut best = f64::INFINITY;
  let mut batches = 0;
  while batches < 3 || started.elapsed() < budget {
    let t = Instant::now();
    for _ in 0..batch {
      step();
    }
    best = best.min(t.elapsed().as_secs_f64() / batch as f64);
    batches += 1;
  }
  best
}

fn measure<O: Optimizer>(config: O, sizes: &[usize]) -> f64 {
  let mut fixture = Fixture::<f32>::new(sizes);
  let elements = sizes.iter().sum();
  time_step(|| fixture.step(config), elements)
}

fn parse_size(text: &str) -> Option<usize> {
  let text = text.to_ascii_lowercase();
  let (digits, scale) = match text.chars().last()? {
    'k' => (&text[..text.len() - 1], 1 << 10),
    'm' => (&text[..text.len() - 1], 1 << 20),
    _ => (&text[..], 1),
  };
  digits.parse::<usize>().ok().map(|n| n * scale)
}

fn label(n: usize) -> String {
  if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
    format!("{}M", n >> 20)
  } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
    format!("{}K", n >> 10)
  } else {
    n.to_string()
  }
}

/// Options that differ from the defaults in the benchmark, by optimizer: plain SGD keeps no
/// state, and the benchmark times SGD as it is mostly used, with momentum.
const OVERRIDES: &[(&str, &str, f64)] = &[("SGD", "momentum", 0.9)];

fn config<O: Optimizer>() -> O {
  let mut packed = defaults(O::fields());
  for &(_, name, value) in OVERRIDES.iter().filter(|(optimizer, _, _)| *optimizer == O::NAME) {
    let index = O::fields().iter().position(|f| f.name == name).expect("a field of the optimizer");
    packed[index] = value;
  }
  O::from_packed(&packed).expect("valid options")
}

/// A row for every optimizer of the registry.
macro_rules! rows {
  ($sizes:expr, $baseline:expr ; $($O:ident)*) => {
    $( row(<fastoptim_core::$O as Optimizer>::NAME, config::<fastoptim_core::$O>(), $sizes, $baseline); )*
  };
}

/// One row: an optimizer at one size and thread count, against the baseline on the same threads.
fn row<O: Optimizer>(name: &str, config: O, sizes: &[usize], baseline: f64) {
  if let Ok(only) = std::env::var("FASTOPTIM_BENCH_ONLY") {
    if !only.split(',').any(|n| n.eq_ignore_ascii_case(name)) {
      return;
    }
  }
  if O::MATRICES && sizes.iter().any(|&n| n > MATRIX_MAX) {
    return;
  }
  let seconds = measure(config, sizes);
  let elements: usize = sizes.iter().sum();
  let buffers = config.buffers_used();
  let bytes = (2 + buffers + 1 + buffers) * 4 * elements;
  println!(
    "{name:<14} {:>9} {:>3} thr {:>11.2} us {:>8.3} Gparam/s {:>7.1} GB/s {:>6.2}x baseline",
    if O::MATRICES {
      let dims = squarest(elements);
      format!("{}x{}", dims.rows, dims.cols)
    } else if sizes.len() == 1 {
      label(elements)
    } else {
      format!("{}x{}", sizes.len(), label(sizes[0]))
    },
    num_threads(),
    seconds * 1e6,
    elements as f64 / seconds / 1e9,
    bytes as f64 / seconds / 1e9,
    baseline / seconds,
  );
}

fn main() {
  let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
  let mut sizes: Vec<usize> = args.iter().filter_map(|a| parse_size(a)).collect();
  if sizes.is_empty() {
    sizes = vec![1 << 10, 1 << 14, 1 << 18, 1 << 22, 1 << 26];
  }
  let all = std::thread::available_parallelism().map_or(1, |n| n.get());
  let thread_counts: Vec<usize> = if all > 1 { vec![1, all] } else { vec![1] };
  println!("fp32, default options (SGD: momentum 0.9); baseline = MemoryTraffic (reads 4 arrays, writes 3)");
  for &threads in &thread_counts {
    set_num_threads(threads).expect("a thread count");
    for &n in &sizes {
      let baseline = measure(MemoryTraffic {}, &[n]);
      row("MemoryTraffic", MemoryTraffic {}, &[n], baseline);
      fastoptim_core::for_each_optimizer!(rows!(&[n], baseline));
    }
    let one = [200 << 10];
    let many = [1 << 10; 200];
    let baseline = measure(MemoryTraffic {}, &one);
    row("Adam", config::<Adam>(), &one, baseline);
    row("Adam", config::<Adam>(), &many, baseline);
  }
}
