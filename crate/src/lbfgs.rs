//! L-BFGS: the vector half of PyTorch's `torch.optim.LBFGS` (the limited-memory BFGS of
//! Nocedal & Wright, *Numerical Optimization*, 2nd ed., §7.2, Algorithm 7.4 and 7.5).
//!
//! All parameters are treated as one flat vector x of n elements, and their gradients as one
//! flat g. Each iteration k keeps the m most recent pairs
//!
//! ```text
//! yₖ = gₖ₊₁ − gₖ      sₖ = xₖ₊₁ − xₖ = tₖ·dₖ      ρₖ = 1 / (yₖ·sₖ)
//! ```
//!
//! (a pair is kept only when yₖ·sₖ > 10⁻¹⁰, so that the approximation stays positive definite;
//! the oldest is dropped when m are kept) and computes the direction d = −H·g with the two-loop
//! recursion, starting from H₀ = γ·I with γ = (y·s)/(y·y) of the newest pair:
//!
//! ```text
//! q ← −g
//! for i = newest … oldest:  αᵢ = ρᵢ·(sᵢ·q);  q ← q − αᵢ·yᵢ
//! r ← γ·q
//! for i = oldest … newest:  βᵢ = ρᵢ·(yᵢ·r);  r ← r + (αᵢ − βᵢ)·sᵢ
//! d ← r
//! ```
//!
//! The first iteration ever takes d = −g and γ = 1. The control flow (evaluating the loss,
//! the step length t, the strong-Wolfe line search, the stopping tests) is the caller's; this
//! module gives it the numbers it needs in one pass each: the gradient's largest magnitude and
//! sum of magnitudes as it is gathered, g·d (the directional derivative), and max |d|.
//!
//! Conventions, PyTorch's: every reduction (a dot product, a sum, a maximum) is rounded to the
//! parameters' dtype, as PyTorch's 0-d tensors are, and so are ρ, γ and αᵢ, βᵢ, αᵢ − βᵢ; a NaN
//! anywhere in the gradient makes its largest magnitude NaN. `maximize` negates the gradient as
//! it is gathered.
//!
//! Determinism: the flat vector is cut into chunks of [`REDUCE_CHUNK`] elements; a chunk is reduced
//! sequentially into eight `f64` lanes combined in a fixed order, and chunk results are summed in
//! chunk order. Threads only decide which chunk is worked on where, so every result has the same
//! bits on any number of threads.
//!
//! Memory: the history (2·m vectors of n), the direction, the previous gradient, up to
//! [`GRAD_SLOTS`] gathered gradients (one without a line search) and, with a line search, the
//! parameters where it started. Each is allocated once, when first needed; a step allocates
//! nothing else.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use crate::clip::REDUCE_CHUNK;
use crate::engine::disjoint::DisjointMut;
use crate::engine::run::PARALLEL_MIN_ELEMENTS;
use crate::engine::threads::{self, Pool};
use crate::float::Float;

/// How many gradients a step may hold at once: the strong-Wolfe search keeps the gradient where
/// it started, the previous and the newest trial's, and its bracket's two ends, and needs a free
/// one to gather into.
pub const GRAD_SLOTS: usize = 5;

/// A pair (y, s) is kept only when y·s is above this, as in PyTorch.
pub const CURVATURE_MIN: f64 = 1e-10;

const LANES: usize = 8;

/// Eight `f64` partial sums, added in a fixed order.
#[derive(Clone, Copy, Default)]
struct Lanes([f64; LANES]);

impl Lanes {
  #[inline(always)]
  fn add(&mut self, i: usize, x: f64) {
    self.0[i % LANES] += x;
  }

  fn total(self) -> f64 {
    let l = self.0;
    ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]))
  }
}

/// What one chunk of a pass reduces: up to two sums and a maximum.
#[derive(Clone, Copy, Default)]
struct Partial {
  sums: [f64; 2],
  max: f64,
}

/// The scalars gathering a gradient yields, each rounded to the dtype.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GradStats {
  /// max |gᵢ| (NaN if any element is NaN; 0 for no elements).
  pub abs_max: f64,
  /// Σ |gᵢ|.
  pub abs_sum: f64,
  /// g·d with the current direction (0 before there is one).
  pub gtd: f64,
}

/// The direction just computed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Direction {
  /// g·d, the directional derivative.
  pub gtd: f64,
  /// max |dᵢ|, for the line search's and the stopping test's step sizes.
  pub d_abs_max: f64,
}

/// L-BFGS state that is vectors, in the dtype of the parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct History<T> {
  /// The last direction.
  pub d: Vec<T>,
  /// The gradient the last direction was computed from.
  pub prev_flat_grad: Vec<T>,
  /// yᵢ, oldest first.
  pub old_dirs: Vec<Vec<T>>,
  /// sᵢ, oldest first.
  pub old_stps: Vec<Vec<T>>,
  /// ρᵢ, oldest first.
  pub ro: Vec<T>,
  /// γ, the scale of the initial inverse Hessian.
  pub h_diag: T,
  /// αᵢ of the last direction, as many as there were pairs; `None` before the second iteration.
  pub al: Option<Vec<T>>,
}

/// A problem with state given to [`Lbfgs::import`].
#[derive(Clone, Debug, PartialEq)]
pub struct ImportError(pub String);

impl std::fmt::Display for ImportError {
  fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    f.write_str(&self.0)
  }
}

impl std::error::Error for ImportError {}

/// The L-BFGS state over parameters of fixed lengths, and the passes over it.
pub struct Lbfgs<T> {
  /// Where each parameter starts in the flat vector, and n at the end.
  offsets: Vec<usize>,
  history_size: usize,
  /// Gathered gradients, allocated when first gathered into.
  grads: [Vec<T>; GRAD_SLOTS],
  /// The direction and the gradient it came from; `None` before the first iteration.
  direction: Option<(Vec<T>, Vec<T>)>,
  old_dirs: VecDeque<Vec<T>>,
  old_stps: VecDeque<Vec<T>>,
  ro: VecDeque<T>,
  h_diag: T,
  al: Option<Vec<T>>,
  /// Where the next candidate pair is written: a dropped pair's vectors once the history is full.
  spare: (Vec<T>, Vec<T>),
  /// Parameters saved by [`Lbfgs::save_params`].
  saved: Vec<T>,
  /// The parameters of the current call, reused so that a call allocates nothing.
  targets: Vec<DisjointMut<T>>,
  partials: Vec<Partial>,
  /// A pool of its own, for tests of thread-count independence.
  pool: Option<Arc<Pool>>,
}

/// Runs `body` on every chunk of a flat vector of `n` elements, across `pool` when it pays, and
/// returns the chunks' sums added in chunk order and their maximum (NaN-propagating).
fn pass(pool: &Pool, partials: &mut [Partial], n: usize, body: impl Fn(Range<usize>) -> Partial + Sync) -> Partial {
  let chunk = |i: usize| i * REDUCE_CHUNK..((i + 1) * REDUCE_CHUNK).min(n);
  if n >= PARALLEL_MIN_ELEMENTS && pool.threads() > 1 {
    let slots = DisjointMut::of(partials);
    // SAFETY: piece i writes partial i only.
    pool.for_each_piece(slots.len(), &|i| unsafe { slots.part(i..i + 1)[0] = body(chunk(i)) });
  } else {
    for (i, partial) in partials.iter_mut().enumerate() {
      *partial = body(chunk(i));
    }
  }
  partials.iter().fold(Partial::default(), |a, b| Partial {
    sums: [a.sums[0] + b.sums[0], a.sums[1] + b.sums[1]],
    max: a.max.max_nan(b.max),
  })
}

/// Calls `body(parameter, range in it, range in the flat vector)` for each parameter that meets
/// the flat `range`; `offsets` are where the parameters start, and n.
fn segments(offsets: &[usize], range: Range<usize>, mut body: impl FnMut(usize, Range<usize>, Range<usize>)) {
  let first = offsets.partition_point(|&o| o <= range.start).saturating_sub(1);
  for p in first..offsets.len().saturating_sub(1) {
    if offsets[p] >= range.end {
      break;
    }
    let (start, end) = (offsets[p].max(range.start), offsets[p + 1].min(range.end));
    if start < end {
      body(p, start - offsets[p]..end - offsets[p], start..end);
    }
  }
}

/// Σ aᵢ·bᵢ of one chunk, in lanes.
#[inline(always)]
fn dot<T: Float>(a: &[T], b: &[T]) -> f64 {
  let mut acc = Lanes::default();
  for (i, (&a, &b)) in a.iter().zip(b).enumerate() {
    acc.add(i, a.to_f64() * b.to_f64());
  }
  acc.total()
}

impl<T: Float> Lbfgs<T> {
  /// State for parameters of `lens` elements each, keeping at most `history_size` pairs.
  pub fn new(lens: &[usize], history_size: usize) -> Self {
    let mut offsets = Vec::with_capacity(lens.len() + 1);
    offsets.push(0);
    for &len in lens {
      offsets.push(offsets[offsets.len() - 1] + len);
    }
    let n = offsets[lens.len()];
    Lbfgs {
      offsets,
      history_size,
      grads: Default::default(),
      direction: None,
      old_dirs: VecDeque::new(),
      old_stps: VecDeque::new(),
      ro: VecDeque::new(),
      h_diag: T::ONE,
      al: None,
      spare: (Vec::new(), Vec::new()),
      saved: Vec::new(),
      targets: Vec::with_capacity(lens.len()),
      partials: vec![Partial::default(); n.div_ceil(REDUCE_CHUNK)],
      pool: None,
    }
  }

  /// Runs every pass on a pool of `threads` threads of its own (tests: the bits do not change).
  /// Panics if the pool cannot be built.
  pub fn use_threads(&mut self, threads: usize) {
    self.pool = Some(Arc::new(Pool::new(threads.clamp(1, threads::MAX_THREADS)).expect("a thread pool")));
  }

  fn pool(&self) -> Arc<Pool> {
    self.pool.clone().unwrap_or_else(threads::current)
  }

  /// The flat length n.
  pub fn len(&self) -> usize {
    self.offsets[self.offsets.len() - 1]
  }

  pub fn is_empty(&self) -> bool {
    self.len() == 0
  }

  /// Each parameter's length.
  pub fn lens(&self) -> impl Iterator<Item = usize> + '_ {
    self.offsets.windows(2).map(|w| w[1] - w[0])
  }

  /// The most pairs kept; lowering it drops the oldest pairs at the next update.
  pub fn set_history_size(&mut self, history_size: usize) {
    self.history_size = history_size;
  }

  /// Whether there is a direction (an iteration has run).
  pub fn has_direction(&self) -> bool {
    self.direction.is_some()
  }

  fn round(x: f64) -> f64 {
    T::from_f64(x).to_f64()
  }

  /// Copies the gradients (`None`: zeros, as PyTorch's for a parameter without one; negated
  /// with `negate`, for `maximize`) into gradient `slot`, and returns their statistics and their
  /// dot product with the current direction. Panics unless there is one gradient per parameter,
  /// of its length, and `slot < GRAD_SLOTS`.
  pub fn gather(&mut self, slot: usize, grads: &[Option<&[T]>], negate: bool) -> GradStats {
    assert!(grads.len() + 1 == self.offsets.len(), "one gradient per parameter");
    assert!(grads.iter().zip(self.lens()).all(|(g, len)| g.is_none_or(|g| g.len() == len)), "gradient lengths");
    let (n, pool) = (self.len(), self.pool());
    let mut out = std::mem::take(&mut self.grads[slot]);
    out.resize(n, T::ZERO);
    let d = self.direction.as_ref().map(|(d, _)| d.as_slice());
    let (shared, offsets) = (DisjointMut::of(&mut out), &self.offsets[..]);
    let total = pass(&pool, &mut self.partials, n, |range| {
      // SAFETY: each chunk writes its own range.
      let flat = unsafe { shared.part(range.clone()) };
      let base = range.start;
      segments(offsets, range.clone(), |p, local, at| {
        let out = &mut flat[at.start - base..at.end - base];
        match grads[p] {
          Some(g) if negate => out.iter_mut().zip(&g[local]).for_each(|(o, &x)| *o = -x),
          Some(g) => out.copy_from_slice(&g[local]),
          None => out.fill(T::ZERO),
        }
      });
      let mut sum = Lanes::default();
      let mut max = 0.0f64;
      for (i, &x) in flat.iter().enumerate() {
        sum.add(i, x.to_f64().abs());
        max = max.max_nan(x.to_f64().abs());
      }
      Partial { sums: [sum.total(), d.map_or(0.0, |d| dot(flat, &d[range]))], max }
    });
    self.grads[slot] = out;
    GradStats { abs_max: Self::round(total.max), abs_sum: Self::round(total.sums[0]), gtd: Self::round(total.sums[1]) }
  }

  /// The first iteration's direction: d = −g (g is gradient `slot`), an empty history, γ = 1.
  pub fn first_direction(&mut self, slot: usize) -> Direction {
    let (n, pool) = (self.len(), self.pool());
    let (mut d, mut prev) = self.direction.take().unwrap_or_default();
    d.resize(n, T::ZERO);
    prev.resize(n, T::ZERO);
    self.old_dirs.clear();
    self.old_stps.clear();
    self.ro.clear();
    self.h_diag = T::ONE;
    let g = &self.grads[slot];
    let (ds, ps) = (DisjointMut::of(&mut d), DisjointMut::of(&mut prev));
    let total = pass(&pool, &mut self.partials, n, |range| {
      // SAFETY: each chunk writes its own range.
      let (d, prev) = unsafe { (ds.part(range.clone()), ps.part(range.clone())) };
      let mut max = 0.0f64;
      for ((d, p), &g) in d.iter_mut().zip(prev.iter_mut()).zip(&g[range.clone()]) {
        *d = -g;
        *p = g;
        max = max.max_nan(g.to_f64().abs());
      }
      Partial { sums: [dot(&g[range], d), 0.0], max }
    });
    self.direction = Some((d, prev));
    Direction { gtd: Self::round(total.sums[0]), d_abs_max: Self::round(total.max) }
  }

  /// A later iteration's direction, from gradient `slot` after a step of length `t` along the
  /// last direction: forms y = g − g_prev and s = t·d, keeps the pair if y·s > 10⁻¹⁰ (dropping the
  /// oldest past the history size) with ρ = 1/(y·s) and γ = (y·s)/(y·y), and runs the two loops.
  /// Panics if there is no direction yet ([`Lbfgs::first_direction`] makes the first).
  pub fn next_direction(&mut self, slot: usize, t: f64) -> Direction {
    let (n, pool) = (self.len(), self.pool());
    let (mut d, mut prev) = self.direction.take().expect("a direction to update");
    let (mut y, mut s) = std::mem::take(&mut self.spare);
    y.resize(n, T::ZERO);
    s.resize(n, T::ZERO);
    let t = T::from_f64(t);
    let g = &self.grads[slot];
    // y = g − g_prev, s = t·d, then g_prev = g and q = −g (in d), with y·s and y·y.
    let shared =
      [DisjointMut::of(&mut d), DisjointMut::of(&mut prev), DisjointMut::of(&mut y), DisjointMut::of(&mut s)];
    let total = pass(&pool, &mut self.partials, n, |range| {
      // SAFETY: each chunk writes its own range.
      let [d, prev, y, s] = shared.map(|v| unsafe { v.part(range.clone()) });
      for (i, &g) in g[range.clone()].iter().enumerate() {
        y[i] = g - prev[i];
        s[i] = d[i] * t;
        prev[i] = g;
        d[i] = -g;
      }
      Partial { sums: [dot(y, s), dot(y, y)], max: 0.0 }
    });
    let (ys, yy) = (T::from_f64(total.sums[0]), T::from_f64(total.sums[1]));
    if ys.to_f64() > CURVATURE_MIN {
      while self.old_dirs.len() >= self.history_size.max(1) {
        if let (Some(old_y), Some(old_s)) = (self.old_dirs.pop_front(), self.old_stps.pop_front()) {
          self.spare = (old_y, old_s);
        }
        self.ro.pop_front();
      }
      self.old_dirs.push_back(y);
      self.old_stps.push_back(s);
      self.ro.push_back(T::ONE / ys);
      self.h_diag = ys / yy;
    } else {
      self.spare = (y, s);
    }
    let direction = self.two_loops(&mut d, slot);
    self.direction = Some((d, prev));
    direction
  }

  /// The two-loop recursion on q = −g (in `d`): each pass applies one pair's update and takes
  /// the dot product the next one needs; the last also takes g·d and max |d|.
  fn two_loops(&mut self, d: &mut [T], slot: usize) -> Direction {
    let (n, pool, k, h_diag) = (self.len(), self.pool(), self.old_dirs.len(), self.h_diag);
    let mut al = self.al.take().unwrap_or_default();
    al.resize(k, T::ZERO);
    let (ys, ss, ro) = (&self.old_dirs, &self.old_stps, &self.ro);
    let (g, partials) = (&self.grads[slot][..], &mut self.partials[..]);
    let ds = DisjointMut::of(d);
    let max_abs = |d: &[T]| d.iter().fold(0.0f64, |m, x| m.max_nan(x.to_f64().abs()));
    // SAFETY (in every closure below): each chunk reads and writes its own range of d.
    let mut next_dot = match k {
      0 => 0.0,
      _ => {
        pass(&pool, partials, n, |r| Partial {
          sums: [dot(unsafe { ds.part(r.clone()) }, &ss[k - 1][r]), 0.0],
          max: 0.0,
        })
        .sums[0]
      }
    };
    // αᵢ = ρᵢ·(sᵢ·q), q ← q − αᵢ·yᵢ, newest first; after the oldest, r = γ·q and y₀·r.
    for i in (0..k).rev() {
      al[i] = T::from_f64(next_dot) * ro[i];
      let (a, y, next) = (al[i], &ys[i], if i > 0 { &ss[i - 1] } else { &ys[0] });
      next_dot = pass(&pool, partials, n, |r| {
        let q = unsafe { ds.part(r.clone()) };
        q.iter_mut().zip(&y[r.clone()]).for_each(|(q, &y)| *q = *q - a * y);
        if i == 0 {
          q.iter_mut().for_each(|q| *q = *q * h_diag);
        }
        Partial { sums: [dot(q, &next[r]), 0.0], max: 0.0 }
      })
      .sums[0];
    }
    let mut last = Partial::default();
    if k == 0 {
      last = pass(&pool, partials, n, |r| {
        let d = unsafe { ds.part(r.clone()) };
        d.iter_mut().for_each(|d| *d = *d * h_diag);
        Partial { sums: [dot(d, &g[r]), 0.0], max: max_abs(d) }
      });
    }
    // βᵢ = ρᵢ·(yᵢ·r), r ← r + (αᵢ − βᵢ)·sᵢ, oldest first.
    for i in 0..k {
      let c = al[i] - T::from_f64(next_dot) * ro[i];
      let (s, newest) = (&ss[i], i + 1 == k);
      let next = if newest { g } else { &ys[i + 1][..] };
      last = pass(&pool, partials, n, |r| {
        let d = unsafe { ds.part(r.clone()) };
        d.iter_mut().zip(&s[r.clone()]).for_each(|(d, &s)| *d = *d + c * s);
        Partial { sums: [dot(d, &next[r]), 0.0], max: if newest { max_abs(d) } else { 0.0 } }
      });
      next_dot = last.sums[0];
    }
    self.al = Some(al);
    Direction { gtd: Self::round(last.sums[0]), d_abs_max: Self::round(last.max) }
  }

  /// Runs `op` over the parameters (one per parameter, of its length, else this panics).
  pub fn params(&mut self, params: &mut [&mut [T]], op: ParamOp) {
    assert!(params.len() + 1 == self.offsets.len(), "one array per parameter");
    assert!(params.iter().zip(self.lens()).all(|(p, len)| p.len() == len), "parameter lengths");
    let (n, pool) = (self.len(), self.pool());
    if matches!(op, ParamOp::Save) {
      self.saved.resize(n, T::ZERO);
    }
    let needs_d = matches!(op, ParamOp::Step(_) | ParamOp::SavedPlus(_));
    let d = match &self.direction {
      Some((d, _)) => &d[..],
      None if needs_d => panic!("a direction to step along"),
      None => &[],
    };
    assert!(!matches!(op, ParamOp::Restore | ParamOp::SavedPlus(_)) || self.saved.len() == n, "saved parameters");
    self.targets.clear();
    self.targets.extend(params.iter_mut().map(|p| DisjointMut::of(p)));
    let (targets, offsets, saved) = (&self.targets[..], &self.offsets[..], DisjointMut::of(&mut self.saved));
    pass(&pool, &mut self.partials, n, |range| {
      segments(offsets, range, |p, local, at| {
        // SAFETY: each chunk touches its own range of the flat vector, so of each parameter and
        // of the saved copy; the caller's parameters do not overlap (they are distinct `&mut`).
        let (p, saved) =
          unsafe { (targets[p].part(local), saved.part(if saved.len() == 0 { 0..0 } else { at.clone() })) };
        match op {
          ParamOp::Save => saved.copy_from_slice(p),
          ParamOp::Restore => p.copy_from_slice(saved),
          ParamOp::Step(t) => {
            let t = T::from_f64(t);
            p.iter_mut().zip(&d[at]).for_each(|(p, &d)| *p = *p + t * d);
          }
          ParamOp::SavedPlus(t) => {
            let t = T::from_f64(t);
            p.iter_mut().zip(saved.iter().zip(&d[at])).for_each(|(p, (&x, &d))| *p = x + t * d);
          }
        }
      });
      Partial::default()
    });
    self.targets.clear();
  }

  /// A copy of the vector state, or `None` before the first iteration.
  pub fn export(&self) -> Option<History<T>> {
    let (d, prev) = self.direction.as_ref()?;
    Some(History {
      d: d.clone(),
      prev_flat_grad: prev.clone(),
      old_dirs: self.old_dirs.iter().cloned().collect(),
      old_stps: self.old_stps.iter().cloned().collect(),
      ro: self.ro.iter().copied().collect(),
      h_diag: self.h_diag,
      al: self.al.clone(),
    })
  }

  /// Replaces the vector state (`None`: as before the first iteration), after checking every
  /// length against n and the history size; on error nothing changes.
  pub fn import(&mut self, history: Option<History<T>>) -> Result<(), ImportError> {
    let Some(h) = history else {
      self.direction = None;
      self.old_dirs.clear();
      self.old_stps.clear();
      self.ro.clear();
      self.h_diag = T::ONE;
      self.al = None;
      return Ok(());
    };
    let n = self.len();
    let k = h.old_dirs.len();
    let fail = |what: String| Err(ImportError(what));
    if h.d.len() != n || h.prev_flat_grad.len() != n {
      return fail(format!(
        "d and prev_flat_grad must have {n} elements (the parameters' total), got {} and {}",
        h.d.len(),
        h.prev_flat_grad.len()
      ));
    }
    if h.old_stps.len() != k || h.ro.len() != k {
      return fail(format!(
        "old_dirs, old_stps and ro must hold as many pairs, got {k}, {} and {}",
        h.old_stps.len(),
        h.ro.len()
      ));
    }
    if k > self.history_size {
      return fail(format!("{k} pairs are more than history_size {}", self.history_size));
    }
    if let Some(v) = h.old_dirs.iter().chain(&h.old_stps).find(|v| v.len() != n) {
      return fail(format!("every pair's vectors must have {n} elements, got one of {}", v.len()));
    }
    if h.al.as_ref().is_some_and(|al| al.len() > self.history_size) {
      return fail(format!("al must have at most history_size {} elements", self.history_size));
    }
    self.direction = Some((h.d, h.prev_flat_grad));
    self.old_dirs = h.old_dirs.into();
    self.old_stps = h.old_stps.into();
    self.ro = h.ro.into();
    self.h_diag = h.h_diag;
    self.al = h.al;
    Ok(())
  }
}

/// What [`Lbfgs::params`] does to the parameters p, with x the saved copy and d the direction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ParamOp {
  /// x ← p (where a line search starts).
  Save,
  /// p ← x.
  Restore,
  /// p ← p + t·d.
  Step(f64),
  /// p ← x + t·d (a line-search trial; the same bits as `Restore` then `Step(t)`).
  SavedPlus(f64),
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::testing::{values, LENGTHS};

  /// The plain definitions, in `f64`: gather, y, s, the pair test and the two loops.
  struct Reference {
    prev: Vec<f64>,
    d: Vec<f64>,
    pairs: Vec<(Vec<f64>, Vec<f64>, f64)>,
    h_diag: f64,
    history_size: usize,
  }

  fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(a, b)| a * b).sum()
  }

  impl Reference {
    fn first(g: &[f64], history_size: usize) -> Self {
      Reference { prev: g.to_vec(), d: g.iter().map(|x| -x).collect(), pairs: Vec::new(), h_diag: 1.0, history_size }
    }

    fn next(&mut self, g: &[f64], t: f64) {
      let y: Vec<f64> = g.iter().zip(&self.prev).map(|(g, p)| g - p).collect();
      let s: Vec<f64> = self.d.iter().map(|d| d * t).collect();
      let ys = dot(&y, &s);
      if ys > CURVATURE_MIN {
        if self.pairs.len() == self.history_size {
          self.pairs.remove(0);
        }
        self.h_diag = ys / dot(&y, &y);
        self.pairs.push((y, s, 1.0 / ys));
      }
      let mut q: Vec<f64> = g.iter().map(|x| -x).collect();
      let mut al = vec![0.0; self.pairs.len()];
      for (i, (y, s, ro)) in self.pairs.iter().enumerate().rev() {
        al[i] = dot(s, &q) * ro;
        q.iter_mut().zip(y).for_each(|(q, y)| *q -= al[i] * y);
      }
      q.iter_mut().for_each(|q| *q *= self.h_diag);
      for (i, (y, s, ro)) in self.pairs.iter().enumerate() {
        let be = dot(y, &q) * ro;
        q.iter_mut().zip(s).for_each(|(q, s)| *q += (al[i] - be) * s);
      }
      self.d = q;
      self.prev = g.to_vec();
    }
  }

  fn close(a: &[f64], b: &[f64], tolerance: f64) -> bool {
    let scale = b.iter().fold(1e-300f64, |m, x| m.max(x.abs()));
    a.len() == b.len() && a.iter().zip(b).all(|(a, b)| (a - b).abs() <= tolerance * scale)
  }

  /// Step length of iteration `k`.
  fn t_of(k: u64) -> f64 {
    0.5 + k as f64 / 8.0
  }

  /// Runs `iterations` iterations on f(x) = ½ Σ aᵢ xᵢ² (aᵢ in [1, 2], so every pair has positive
  /// curvature) over parameters of `lens`, stepping x by t·d; returns the gradients it saw.
  fn run(
    lens: &[usize],
    history_size: usize,
    iterations: u64,
    threads: Option<usize>,
  ) -> (Lbfgs<f64>, Vec<Direction>, Vec<Vec<f64>>) {
    let mut core = Lbfgs::<f64>::new(lens, history_size);
    if let Some(threads) = threads {
      core.use_threads(threads);
    }
    let mut x: Vec<Vec<f64>> = lens.iter().enumerate().map(|(i, &len)| values(len, i as u64 + 1)).collect();
    let a = |j: usize| 1.0 + (j % 7) as f64 / 7.0;
    let (mut out, mut seen) = (Vec::new(), Vec::new());
    for k in 0..iterations {
      let g: Vec<Vec<f64>> = x.iter().map(|x| x.iter().enumerate().map(|(j, x)| a(j) * x).collect()).collect();
      let views: Vec<Option<&[f64]>> = g.iter().map(|g| Some(&g[..])).collect();
      core.gather(0, &views, false);
      out.push(if k == 0 { core.first_direction(0) } else { core.next_direction(0, t_of(k - 1)) });
      seen.push(g.concat());
      let mut params: Vec<&mut [f64]> = x.iter_mut().map(|x| &mut x[..]).collect();
      core.params(&mut params, ParamOp::Step(t_of(k)));
    }
    (core, out, seen)
  }

  #[test]
  fn directions_match_the_plain_two_loop_recursion() {
    for &(len, history_size) in &[(LENGTHS[3], 2usize), (LENGTHS[7], 3), (LENGTHS[12], 4), (LENGTHS[13], 100)] {
      let lens = [len / 3, 0, len - len / 3];
      let (core, directions, seen) = run(&lens, history_size, 7, None);
      let mut reference = Reference::first(&seen[0], history_size);
      for (k, g) in seen.iter().enumerate().skip(1) {
        reference.next(g, t_of(k as u64 - 1));
      }
      let h = core.export().unwrap();
      assert!(close(&h.d, &reference.d, 1e-11), "len {len}");
      assert_eq!(h.ro.len(), reference.pairs.len());
      assert!((h.h_diag - reference.h_diag).abs() <= 1e-12 * reference.h_diag.abs());
      let gtd = dot(&seen[6], &reference.d);
      let last = directions.last().unwrap();
      assert!((last.gtd - gtd).abs() <= 1e-11 * gtd.abs().max(1.0), "{} vs {gtd}", last.gtd);
      let d_abs_max = reference.d.iter().fold(0.0f64, |m, x| m.max(x.abs()));
      assert!((last.d_abs_max - d_abs_max).abs() <= 1e-11 * d_abs_max, "{} vs {d_abs_max}", last.d_abs_max);
      assert_eq!(last.d_abs_max, h.d.iter().fold(0.0f64, |m, x| m.max(x.abs())), "max |d| of the d it returns");
    }
  }

  #[test]
  fn every_thread_count_gives_the_same_bits() {
    let lens = [PARALLEL_MIN_ELEMENTS + 5, 3, 2 * REDUCE_CHUNK + 17];
    let (one, first, _) = run(&lens, 3, 6, Some(1));
    for threads in [2, 3, 8] {
      let (many, directions, _) = run(&lens, 3, 6, Some(threads));
      assert_eq!(many.export(), one.export(), "{threads} threads");
      let bits = |d: &[Direction]| d.iter().map(|d| (d.gtd.to_bits(), d.d_abs_max.to_bits())).collect::<Vec<_>>();
      assert_eq!(bits(&directions), bits(&first), "{threads} threads");
    }
  }

  #[test]
  fn gathering_fills_missing_gradients_with_zeros_and_negates_for_maximize() {
    let mut core = Lbfgs::<f32>::new(&[2, 3, 1], 4);
    let a = [1.5f32, -2.0];
    let c = [f32::NAN];
    let stats = core.gather(1, &[Some(&a), None, Some(&c)], true);
    assert!(stats.abs_max.is_nan());
    let stats = core.gather(1, &[Some(&a), None, None], true);
    assert_eq!((stats.abs_max, stats.abs_sum, stats.gtd), (2.0, 3.5, 0.0));
    let direction = core.first_direction(1);
    // d = −g with g = −a: d = a, g·d = −|a|².
    assert_eq!(direction, Direction { gtd: -6.25, d_abs_max: 2.0 });
    assert_eq!(core.export().unwrap().d, [1.5, -2.0, 0.0, 0.0, 0.0, 0.0]);
  }

  #[test]
  fn the_history_keeps_the_newest_pairs_and_skips_flat_curvature() {
    let lens = [5];
    let (core, _, _) = run(&lens, 2, 6, None);
    let h = core.export().unwrap();
    assert_eq!((h.old_dirs.len(), h.old_stps.len(), h.ro.len(), h.al.as_ref().map(Vec::len)), (2, 2, 2, Some(2)));
    // The same gradient twice: y = 0, so y·s = 0 and the pair is not kept.
    let mut core = Lbfgs::<f64>::new(&lens, 2);
    let g = values::<f64>(5, 3);
    core.gather(0, &[Some(&g)], false);
    core.first_direction(0);
    core.gather(0, &[Some(&g)], false);
    core.next_direction(0, 1.0);
    let h = core.export().unwrap();
    assert!(h.old_dirs.is_empty() && h.h_diag == 1.0);
    assert_eq!(h.d, g.iter().map(|x| -x).collect::<Vec<_>>());
  }

  #[test]
  fn parameter_passes_step_along_d_and_restore() {
    let mut core = Lbfgs::<f64>::new(&[2, 1], 3);
    let (g0, g1) = ([1.0, -2.0], [4.0]);
    core.gather(0, &[Some(&g0), Some(&g1)], false);
    core.first_direction(0);
    let (mut a, mut b) = ([10.0, 20.0], [30.0]);
    core.params(&mut [&mut a, &mut b], ParamOp::Save);
    core.params(&mut [&mut a, &mut b], ParamOp::Step(0.5));
    assert_eq!((a, b), ([9.5, 21.0], [28.0]));
    core.params(&mut [&mut a, &mut b], ParamOp::SavedPlus(2.0));
    assert_eq!((a, b), ([8.0, 24.0], [22.0]));
    core.params(&mut [&mut a, &mut b], ParamOp::Restore);
    assert_eq!((a, b), ([10.0, 20.0], [30.0]));
  }

  #[test]
  fn import_checks_every_length_and_round_trips() {
    let lens = [4, 3];
    let (core, _, _) = run(&lens, 3, 5, None);
    let saved = core.export().unwrap();
    let mut other = Lbfgs::<f64>::new(&lens, 3);
    let mut bad = saved.clone();
    bad.old_stps[1].pop();
    assert!(other.import(Some(bad)).is_err());
    let mut bad = saved.clone();
    bad.ro.pop();
    assert!(other.import(Some(bad)).is_err());
    assert!(other.import(Some(History { d: vec![0.0; 6], ..saved.clone() })).is_err());
    assert_eq!(other.export(), None, "a refused import changes nothing");
    other.import(Some(saved.clone())).unwrap();
    assert_eq!(other.export(), Some(saved));
  }
}
