//! What the benchmarks that time variants in turns share.

use std::time::Instant;

/// The sizes named on the command line (`4m` is 4·2²⁰ elements, `1000` is 1000), or `default`.
pub fn sizes(default: &[usize]) -> Vec<usize> {
  let sizes: Vec<usize> = std::env::args()
    .skip(1)
    .filter_map(|a| {
      let a = a.to_ascii_lowercase();
      let (digits, scale) = if let Some(d) = a.strip_suffix('m') { (d.to_string(), 1 << 20) } else { (a.clone(), 1) };
      digits.parse::<usize>().ok().map(|n| n * scale)
    })
    .collect();
  if sizes.is_empty() {
    default.to_vec()
  } else {
    sizes
  }
}

/// The best seconds per call of each of `steps` over `rounds` rounds in which each takes
/// `batch` calls in turn (after two untimed calls each), so that a neighbour's burst of activity
/// does not count against one of them.
pub fn alternate<'a>(steps: impl IntoIterator<Item = &'a mut dyn FnMut()>, rounds: usize, batch: usize) -> Vec<f64> {
  let mut steps: Vec<&mut dyn FnMut()> = steps.into_iter().collect();
  for step in steps.iter_mut() {
    step();
    step();
  }
  let mut best = vec![f64::INFINITY; steps.len()];
  for _ in 0..rounds {
    for (b, step) in best.iter_mut().zip(steps.iter_mut()) {
      for _ in 0..batch {
        let t = Instant::now();
        step();
        *b = b.min(t.elapsed().as_secs_f64());
      }
    }
  }
  best
}
