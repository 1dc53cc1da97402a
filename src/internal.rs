//! Exports for fastoptim's own benchmarks and tests, not part of its API: their names start
//! with `__` and the facade does not re-export them.

// The exports are reached through the napi registration, which test builds leave out.
#![cfg_attr(test, allow(dead_code))]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use fastoptim_core::optimizers::Optimizer;
use fastoptim_core::traffic::MemoryTraffic;
use fastoptim_core::{buffer_lens, run, Adam, Dims, Dtype, Job, ParamState};
use napi::bindgen_prelude::*;
use napi_derive::napi;

use napi::sys;

use crate::js::{Fail, RawEnv};

/// The system allocator, counting what this addon's Rust code allocates, so that a test can
/// show that a steady-state step allocates nothing. One relaxed atomic add per allocation.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static ALLOCATED_BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is passed straight to the system allocator.
unsafe impl GlobalAlloc for Counting {
  unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    ALLOCATED_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
    unsafe { System.alloc(layout) }
  }
  unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    ALLOCATED_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
    unsafe { System.alloc_zeroed(layout) }
  }
  unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    ALLOCATED_BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
    unsafe { System.realloc(ptr, layout, new_size) }
  }
  unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
    unsafe { System.dealloc(ptr, layout) }
  }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by the addon's Rust code since it was loaded (reallocations count), and
/// their bytes.
#[napi(object, js_name = "AllocationCount")]
pub struct AllocationCount {
  pub count: f64,
  pub bytes: f64,
}

#[napi(js_name = "__allocations")]
pub fn allocations() -> AllocationCount {
  AllocationCount {
    count: ALLOCATIONS.load(Ordering::Relaxed) as f64,
    bytes: ALLOCATED_BYTES.load(Ordering::Relaxed) as f64,
  }
}

/// The floor of Adam's arithmetic, for the benchmarks: the seconds per element of the best of
/// `batches` batches of 64 calls of Adam's fused kernel (default options) over the same
/// `elements` elements, on the calling thread, so that its arrays stay in the core's caches (in
/// its first-level cache for a thousand elements). A step over more elements runs the same kernel
/// and adds the time to reach its arrays. The arrays are made here, outside the timed calls, each
/// starting on a 64-byte line as the engine's kernel calls do.
#[napi(js_name = "__adamInCache", catch_unwind)]
pub fn adam_in_cache(elements: u32, batches: u32) -> Result<f64> {
  if !(16..=1 << 16).contains(&elements) || batches == 0 {
    return Err(Error::new(
      Status::InvalidArg,
      format!("__adamInCache: elements {elements} (expected 16 to 65536), batches {batches} (expected at least 1)"),
    ));
  }
  let n = elements as usize;
  // Each array starts on a 64-byte line, as the engine's kernel calls do (BENCHMARKS.md, "Kernel
  // calls start on cache lines"): a vector that spans two lines costs the kernel more in cache.
  let mut storage: [Vec<f32>; 4] = std::array::from_fn(|_| vec![0.0f32; n + 16]);
  let [param, grad, m, v] = storage.each_mut().map(|a| {
    let skip = a.as_ptr().align_offset(64).min(16);
    &mut a[skip..skip + n]
  });
  for (i, (p, g)) in param.iter_mut().zip(grad.iter_mut()).enumerate() {
    (*p, *g) = (((i as f32) * 0.37).sin(), 0.01 * ((i as f32) * 0.71).cos());
  }
  let grad: &[f32] = grad;
  // The scalars of step 10: a step's scalars are computed once per step, outside the kernel.
  let coeffs = Adam::default().coeffs(10);
  const CALLS: u32 = 64;
  let mut batch = || {
    let start = std::time::Instant::now();
    for _ in 0..CALLS {
      std::hint::black_box(Adam::update::<f32>(&coeffs, param, grad, [&mut *m, &mut *v, &mut []]));
    }
    start.elapsed().as_secs_f64()
  };
  // The first calls settle the kernel's own choices (the division's way) and bring the arrays in.
  batch();
  let best = (0..batches).map(|_| batch()).fold(f64::INFINITY, f64::min);
  Ok(best / (f64::from(CALLS) * n as f64))
}

/// The training loop of the benchmarks without the call from JavaScript: the median µs of `steps`
/// Adam steps (default options) over a tensor of `params` elements, each after adding one to every
/// f64 in `evict_bytes` (`evictBytes` in JavaScript) of another buffer with ordinary loads and
/// stores (untimed), as `benchmark/references.ts` times a step made from JavaScript and the C
/// reference times its own.
/// Each step is what a step from JavaScript runs natively after its checks: the step count and
/// scalars advanced, the state buffers taken from a parameter's state (made on the first step, as
/// the binding makes them) and the engine run on the pool as configured. Three steps run before
/// the timed ones, as in the benchmark's loop. Its arrays are made here, outside the timed steps.
#[napi(js_name = "__adamTrainingLoop", catch_unwind)]
pub fn adam_training_loop(env: Env, params: f64, steps: f64, evict_bytes: f64) -> Result<f64> {
  training_loop(params, steps, evict_bytes).map_err(|f| f.throw(&env))
}

fn training_loop(params: f64, steps: f64, evict_bytes: f64) -> std::result::Result<f64, Fail> {
  let whole = |name: &str, value: f64, low: f64, high: f64| {
    if value.is_finite() && value.fract() == 0.0 && (low..=high).contains(&value) {
      Ok(value as usize)
    } else {
      // As JavaScript prints it.
      let shown = match value {
        v if v == f64::INFINITY => "Infinity".to_owned(),
        v if v == f64::NEG_INFINITY => "-Infinity".to_owned(),
        v => v.to_string(),
      };
      Err(Fail::range(format!("__adamTrainingLoop: {name} is {shown}; expected a whole number from {low} to {high}")))
    }
  };
  let n = whole("params", params, 1.0, (1u64 << 26) as f64)?;
  let steps = whole("steps", steps, 1.0, 100_000.0)?;
  let evict_bytes = whole("evictBytes", evict_bytes, 0.0, (1u64 << 30) as f64)?;
  crate::threads::check_configured()?;
  // Made with fallible allocations, so that a machine without the memory gets an error, not an abort.
  let filled = |len: usize, f: &dyn Fn(usize) -> f32| -> std::result::Result<Vec<f32>, Fail> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| Fail::range(format!("__adamTrainingLoop: no memory for {len} elements")))?;
    v.extend((0..len).map(f));
    Ok(v)
  };
  let mut param = filled(n, &|i| ((i as f32) * 0.37 + 1.0).sin() * 0.1)?;
  let grad = filled(n, &|i| ((i as f32) * 0.37 + 2.0).sin() * 0.1)?;
  let mut evict: Vec<f64> = Vec::new();
  let words = evict_bytes / std::mem::size_of::<f64>();
  evict
    .try_reserve_exact(words)
    .map_err(|_| Fail::range(format!("__adamTrainingLoop: no memory for {evict_bytes} bytes to write over")))?;
  evict.resize(words, 0.0);
  let config = Adam::default();
  let mut state = ParamState::default();
  let dims = Dims::flat(n);
  let lens = buffer_lens::<Adam>(dims);
  let mut memo = None;
  let mut step = |param: &mut [f32]| {
    let coeffs = crate::advance(&config, &mut state, 0, &mut memo);
    let (buffers, partials) = state.step_parts::<f32>(&lens, config.buffers_used(), Adam::partials_len(dims));
    run::<Adam, f32>(&mut [Job::new(coeffs, param, &grad, buffers, dims, partials)]);
  };
  const WARM_UP: u32 = 3;
  for _ in 0..WARM_UP {
    step(&mut param);
  }
  let mut times: Vec<f64> = Vec::with_capacity(steps);
  for _ in 0..steps {
    // Not `fill`: a large fill is a string store that the processor may keep out of the caches.
    for x in evict.iter_mut() {
      *x += 1.0;
    }
    std::hint::black_box(&mut evict);
    // As the benchmark's loop does: the first reading brings the clock's code back, the second counts.
    std::hint::black_box(std::time::Instant::now());
    let start = std::time::Instant::now();
    step(std::hint::black_box(&mut param));
    times.push(start.elapsed().as_secs_f64() * 1e6);
  }
  times.sort_by(f64::total_cmp);
  Ok(times[times.len() / 2])
}

/// The memory-traffic baseline of the benchmarks: reads `param`, `grad`, `m`, `v` and writes
/// `param`, `m`, `v` (one addition each), through the same engine and pool as a step.
#[napi(js_name = "__memoryTraffic", catch_unwind)]
pub fn memory_traffic(env: Env, param: Unknown, grad: Unknown, m: Unknown, v: Unknown) -> Result<()> {
  traffic(RawEnv(env.raw()), [param.raw(), grad.raw(), m.raw(), v.raw()]).map_err(|f| f.throw(&env))
}

fn traffic(env: RawEnv, values: [sys::napi_value; 4]) -> std::result::Result<(), Fail> {
  crate::threads::check_configured()?;
  let mut views = Vec::with_capacity(4);
  for value in values {
    match env.float_array(value)? {
      Some(view) if view.dtype == Dtype::Float32 && !view.detached => views.push(view),
      _ => return Err(Fail::type_error("__memoryTraffic takes four attached Float32Arrays".into())),
    }
  }
  let n = views[0].len;
  if views.iter().any(|v| v.len != n) {
    return Err(Fail::range("__memoryTraffic: the four arrays must have the same length".into()));
  }
  for (i, a) in views.iter().enumerate() {
    for b in &views[i + 1..] {
      if n > 0 && a.address() < b.address() + b.byte_len() && b.address() < a.address() + a.byte_len() {
        return Err(Fail::value("__memoryTraffic: the four arrays must not share memory".into()));
      }
    }
  }
  // SAFETY: four attached, disjoint Float32Arrays of `n` elements, read in this call; the JS
  // thread waits here, so nothing else touches them.
  let (param, grad, m, v) =
    unsafe { (views[0].slice_mut(), views[1].slice(), views[2].slice_mut(), views[3].slice_mut()) };
  run::<MemoryTraffic, f32>(&mut [Job::flat((), param, grad, [m, v, &mut []])]);
  Ok(())
}
