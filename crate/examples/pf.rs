use fastoptim_core::engine::run::{run_streaming, Streaming};
use fastoptim_core::threads::set_num_threads;
use fastoptim_core::{Adagrad, Adam, Dims, Job, Optimizer, ParamState};
use std::time::Instant;

fn bench<O: Optimizer + Default>(n: usize, t: usize) {
  set_num_threads(t).unwrap();
  let mut param: Vec<f32> = (0..n).map(|i| (i as f32 * 0.1).sin()).collect();
  let grad: Vec<f32> = (0..n).map(|i| (i as f32 * 0.3).cos() * 1e-2).collect();
  let mut state = ParamState::default();
  let config = O::default();
  let mut best = [f64::MAX; 3];
  let modes = [Streaming::Cached, Streaming::Memory, Streaming::Prefetched];
  for round in 0..8 {
    for (k, &mode) in modes.iter().enumerate() {
      let reps = if n > 1 << 24 { 2 } else { 10 };
      let s = Instant::now();
      for _ in 0..reps {
        state.step += 1;
        let coeffs = config.coeffs(state.step);
        let (buffers, partials) = state.step_parts::<f32>(&[n; 3], config.buffers_used(), 0);
        let mut jobs = [Job::new(coeffs, &mut param, &grad, buffers, Dims::flat(n), partials)];
        run_streaming::<O, f32, f32>(&mut jobs, mode);
      }
      let dt = s.elapsed().as_secs_f64() / reps as f64;
      if round > 0 {
        best[k] = best[k].min(dt);
      }
    }
  }
  println!(
    "{} n={}M t={}: cached {:.2} ms, memory {:.2} ms, prefetched {:.2} ms",
    std::any::type_name::<O>().rsplit("::").next().unwrap(),
    n >> 20,
    t,
    best[0] * 1e3,
    best[1] * 1e3,
    best[2] * 1e3
  );
}

fn main() {
  for n in [4usize << 20, 16 << 20, 64 << 20] {
    for t in [1, 2] {
      bench::<Adam>(n, t);
      bench::<Adagrad>(n, t);
    }
  }
}
