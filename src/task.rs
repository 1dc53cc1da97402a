//! `stepAsync`: a step that lets the event loop run while it updates.
//!
//! The hazard is memory JavaScript can free while the step writes it. The step holds a reference
//! to every array it updates or reads, so garbage collection cannot take them, and replacing
//! `p.data` only means the step writes the array that was there when it started. But an ordinary
//! ArrayBuffer can be detached while the step runs — transferred with `postMessage` or
//! `structuredClone`, or shrunk if it is resizable — and its memory then belongs to someone else
//! and may be freed at any moment, by a garbage collection in another thread or at once. No
//! Node-API call can stop that or tell when it happens. So:
//!
//! * If every array of the step lives on a SharedArrayBuffer (which cannot be detached, and can
//!   only grow), the whole update runs on a libuv worker thread (napi-rs `AsyncTask`), in place,
//!   and the JavaScript thread is free throughout. Its threads give the processor up every half
//!   millisecond (`fastoptim_core::threads::politely`), so that on a machine with no core to spare
//!   the event loop is not kept waiting for a scheduler time slice.
//! * Otherwise it runs in slices of about half a millisecond. Each slice runs on the pool, the
//!   JavaScript thread taking part as any caller does; between slices the event loop runs, and
//!   before each slice every array the slice touches is checked again on the JavaScript thread
//!   (still attached, same memory, same length). JavaScript never runs while the step touches memory it could free,
//!   nothing is copied, and no memory is added. An array that was detached between slices stops
//!   the step with `ERR_INVALID_STATE`; the slices before it have been applied (every step count
//!   advanced when the step started). Undoing them would need a copy of everything they wrote,
//!   so this is the one case where a step is not all-or-none, and the facade's JSDoc, the README
//!   and docs/robustness.md say so.
//!
//! While the step is in flight the optimizer refuses every other call that reads or changes its
//! state (see [`check_idle`]); its per-parameter state is moved into the step and back.
//!
//! A step of row-sparse gradients (SparseAdam's) costs what its rows cost, and runs whole when it
//! starts, on the JavaScript thread; its promise then settles as any other's.

// The exports are reached through the napi registration, which test builds leave out.
#![cfg_attr(test, allow(dead_code))]

use std::any::TypeId;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use fastoptim_core::engine::run::{run_streaming, streams, Streaming};
use fastoptim_core::state::{lazily, map_pages};
use fastoptim_core::{
  buffer_lens, write_group_state, Bf16, Dims, Dtype, Element, Job, Optimizer, ParamState, Rounding, StateOf,
};
use napi::bindgen_prelude::*;
use napi::sys;
use napi_derive::napi;

use crate::js::{Fail, RawEnv};
use crate::{advance, grads_finite, with_optimizer, NativeOptimizer};

/// The first slice's size in elements, before there is a measured rate to size slices by.
const FIRST_SLICE_ELEMENTS: usize = 1 << 17;

/// A `stepAsync` in flight: its state, shared with the worker thread while it runs there. `S` is
/// the state it gives back when it finishes: the registry's per-parameter state by default, the
/// 8-bit optimizers' own (src/eightbit/task.rs).
pub(crate) struct Flight<S = Vec<ParamState>> {
  pending: Arc<Mutex<Box<dyn Pending<S>>>>,
  /// Whether every array of the step is on a SharedArrayBuffer, so that it may run on a worker
  /// thread ([`StartedStep::OffThread`]).
  shared: bool,
  /// Whether the rest of the step has been handed to a worker thread.
  off_thread: bool,
}

impl<S> Flight<S> {
  /// A step in flight; `shared`: every array of it is on a SharedArrayBuffer.
  pub(crate) fn new(pending: impl Pending<S> + 'static, shared: bool) -> Self {
    Flight { pending: Arc::new(Mutex::new(Box::new(pending))), shared, off_thread: false }
  }

  /// Where its update runs, as `startStep` answers.
  pub(crate) fn started(&self) -> StartedStep {
    if self.shared {
      StartedStep::OffThread
    } else {
      StartedStep::InSlices
    }
  }
}

/// Refuses `what` while a `stepAsync` is in flight.
pub(crate) fn check_idle(optimizer: &NativeOptimizer, what: &str) -> std::result::Result<(), Fail> {
  idle(&optimizer.flight, what)
}

/// Refuses `what` while `flight` holds a step, whatever optimizer it belongs to.
pub(crate) fn idle<S>(flight: &Option<Flight<S>>, what: &str) -> std::result::Result<(), Fail> {
  match flight {
    Some(_) => Err(busy(what)),
    None => Ok(()),
  }
}

pub(crate) fn busy(what: &str) -> Fail {
  Fail::state(format!("{what} was called while stepAsync() is in flight; await the promise stepAsync() returned first"))
}

/// A step's work, type-erased over the algorithm; it gives back state `S` when it finishes.
pub(crate) trait Pending<S>: Send {
  fn total(&self) -> usize;
  fn done(&self) -> usize;
  /// Where a slice that should end at `to` may end: `to`, or for a staged optimizer, whose
  /// stages need whole tensors, the end of the tensor `to` falls in.
  fn boundary(&self, to: usize) -> usize;
  /// On the JavaScript thread: fails if an array that elements `done..to` touch is no longer the
  /// memory the step started with.
  fn check(&self, env: RawEnv, to: usize) -> std::result::Result<(), Fail>;
  /// Updates elements `done..to` and moves `done` to `to`.
  fn run(&mut self, to: usize);
  /// Whether a gradient element updated so far was NaN or infinite.
  fn non_finite(&self) -> bool;
  /// On the JavaScript thread: drops the references and gives the state back.
  fn finish(&mut self, env: RawEnv) -> S;
}

/// A reference that keeps one array alive; created and deleted on the JavaScript thread only.
pub(crate) struct Ref(sys::napi_ref);

impl Ref {
  /// A reference to `value`, an array of the step.
  pub(crate) fn to(env: RawEnv, value: sys::napi_value) -> std::result::Result<Ref, Fail> {
    Ok(Ref(env.reference(value)?))
  }

  /// Whether the array it holds is still `len` elements at `address`, attached.
  pub(crate) fn still(&self, env: RawEnv, address: usize, len: usize) -> std::result::Result<bool, Fail> {
    let now = env.float_array(reference_value(env, self)?)?;
    Ok(now.is_some_and(|a| !a.detached && a.address() == address && a.len == len))
  }

  /// Deletes every reference of `refs`, on the JavaScript thread.
  pub(crate) fn delete_all(env: RawEnv, refs: &mut Vec<Ref>) {
    for reference in refs.drain(..) {
      // SAFETY: created in this env by `Ref::to`; deleted once (drained).
      unsafe { sys::napi_delete_reference(env.0, reference.0) };
    }
  }
}

/// One parameter of the step.
struct Tensor<C> {
  index: usize,
  /// Where its elements start in the step's element range.
  start: usize,
  len: usize,
  dtype: Dtype,
  data: *mut u8,
  grad: *const u8,
  coeffs: C,
  buffers: usize,
  /// Whether its state is bfloat16.
  bf16: bool,
  /// How its new bfloat16 state is rounded, from its first element on.
  rounding: Rounding,
  dims: Dims,
  /// Its buffers from this one on were made by this step, their pages not yet mapped: each slice
  /// maps the pages of its part before it updates it ([`map_pages`]).
  fresh_from: usize,
}

struct Step<O: Optimizer> {
  states: Vec<ParamState>,
  tensors: Vec<Tensor<O::Coeffs>>,
  /// Two per tensor: data, grad.
  refs: Vec<Ref>,
  group_of: Vec<u32>,
  total: usize,
  done: usize,
  non_finite: bool,
  /// How the whole step's arrays reach the cores, which its slices, each small, do not show.
  streaming: Streaming,
}

// SAFETY: the raw pointers are to arrays that the references keep alive and that no JavaScript
// can free while the step uses them (see the module documentation): on a worker thread only
// when all are on SharedArrayBuffers, otherwise only while the JavaScript thread waits in a slice
// after `check`. The references themselves are touched only on the JavaScript thread.
unsafe impl<O: Optimizer> Send for Step<O> {}

impl<O: Optimizer> Step<O> {
  fn window(&self, to: usize) -> impl Iterator<Item = &Tensor<O::Coeffs>> {
    let from = self.done;
    let first = self.tensors.partition_point(|t| t.start + t.len <= from);
    self.tensors[first..].iter().take_while(move |t| t.start < to)
  }

  /// Runs the step's tensors of dtype `T` whose state is of `S` over elements `done..to`.
  fn run_dtype<T: Element, S: StateOf<T>>(&mut self, to: usize) {
    let from = self.done;
    let first = self.tensors.partition_point(|t| t.start + t.len <= from);
    let mut jobs: Vec<Job<'_, T, O::Coeffs, S>> = Vec::new();
    // From the first tensor of the slice on (tensors are in parameter order), so that a slice
    // costs what its own tensors cost, not what the tensors before it do.
    let skip = self.tensors.get(first).map_or(0, |t| t.index);
    let mut states = self.states.iter_mut().enumerate().skip(skip);
    for tensor in self.tensors[first..].iter().take_while(|t| t.start < to) {
      if tensor.dtype != T::DTYPE || tensor.bf16 != (TypeId::of::<S>() == TypeId::of::<Bf16>()) {
        continue;
      }
      let lo = from.max(tensor.start) - tensor.start;
      let hi = to.min(tensor.start + tensor.len) - tensor.start;
      let state = states.find(|(i, _)| *i == tensor.index).map(|(_, s)| s).expect("tensors in parameter order");
      let lens = buffer_lens::<O>(tensor.dims);
      let (buffers, partials) = state.step_parts::<S>(&lens, tensor.buffers, O::partials_len(tensor.dims));
      // A staged optimizer's slices hold whole tensors (see `slice`); an elementwise one's buffers
      // are like the parameter, and cut with it.
      let mut buffers = buffers.map(|b| if b.is_empty() || O::STAGES > 0 { b } else { &mut b[lo..hi] });
      // New buffers are still zero here, where no slice has updated them yet.
      for buffer in buffers.iter_mut().take(tensor.buffers).skip(tensor.fresh_from) {
        map_pages(buffer, S::ZEROED);
      }
      // SAFETY: the arrays hold `len` elements of `T`, are alive and attached (see `Send`), and
      // the reader proved that no parameter's data overlaps another array of the step.
      let (param, grad) = unsafe {
        (
          std::slice::from_raw_parts_mut(tensor.data.cast::<T>().add(lo), hi - lo),
          std::slice::from_raw_parts(tensor.grad.cast::<T>().add(lo), hi - lo),
        )
      };
      let dims = if O::STAGES > 0 { tensor.dims } else { Dims::flat(hi - lo) };
      let rounding = tensor.rounding.at(lo);
      jobs.push(Job { rounding, ..Job::new(tensor.coeffs, param, grad, buffers, dims, partials) });
    }
    self.non_finite |= run_streaming::<O, T, S>(&mut jobs, self.streaming);
  }
}

impl<O: Optimizer> Pending<Vec<ParamState>> for Step<O> {
  fn total(&self) -> usize {
    self.total
  }

  fn done(&self) -> usize {
    self.done
  }

  fn boundary(&self, to: usize) -> usize {
    if O::STAGES == 0 {
      return to;
    }
    let tensor = self.tensors.partition_point(|t| t.start + t.len < to);
    self.tensors.get(tensor).map_or(to, |t| t.start + t.len)
  }

  fn check(&self, env: RawEnv, to: usize) -> std::result::Result<(), Fail> {
    for (k, tensor) in self.window(to).enumerate() {
      let position = self.tensors.partition_point(|t| t.start + t.len <= self.done) + k;
      for (which, field, address) in [(0, "data", tensor.data as usize), (1, "grad", tensor.grad as usize)] {
        if !self.refs[2 * position + which].still(env, address, tensor.len)? {
          let label = crate::params::label(&self.group_of, tensor.index);
          return Err(stopped_part_way(&format!("{label}.{field}")));
        }
      }
    }
    Ok(())
  }

  fn run(&mut self, to: usize) {
    self.run_dtype::<f32, f32>(to);
    self.run_dtype::<f32, Bf16>(to);
    self.run_dtype::<f64, f64>(to);
    self.done = to;
  }

  fn non_finite(&self) -> bool {
    self.non_finite
  }

  fn finish(&mut self, env: RawEnv) -> Vec<ParamState> {
    Ref::delete_all(env, &mut self.refs);
    std::mem::take(&mut self.states)
  }
}

/// The error of a slice that found `array` (`paramGroups[g].params[i].data`, or `.grad`) no
/// longer the memory its step started with.
pub(crate) fn stopped_part_way(array: &str) -> Fail {
  Fail::state(format!(
    "{array} was detached or resized while stepAsync() was running; the step stopped part way \
     (elements before this parameter's were updated, and every parameter's step count advanced)"
  ))
}

fn reference_value(env: RawEnv, reference: &Ref) -> std::result::Result<sys::napi_value, Fail> {
  env.reference_value(reference.0).ok().flatten().ok_or_else(|| Fail::state("an array of the step is gone".into()))
}

/// How a `stepAsync` started (`startStep`).
#[napi]
#[derive(Debug, PartialEq, Eq)]
pub enum StartedStep {
  /// Its arrays are not all on SharedArrayBuffers: the update runs in slices (`stepSlice`).
  InSlices,
  /// Every array is on a SharedArrayBuffer: the update may run on a worker thread (`stepOffThread`).
  OffThread,
  /// A gradient is not finite and the step was asked to skip such steps: nothing changed.
  Skipped,
}

fn lock<S>(pending: &Mutex<Box<dyn Pending<S>>>) -> MutexGuard<'_, Box<dyn Pending<S>>> {
  pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[napi]
impl NativeOptimizer {
  /// Whether a `stepAsync` is in flight.
  #[napi(getter)]
  pub fn busy(&self) -> bool {
    self.flight.is_some()
  }

  /// Starts a `stepAsync`: reads and checks everything as `step` does (on error nothing changes)
  /// and advances every step count, but updates nothing yet. Returns where the update runs, or
  /// that it was skipped (a gradient is not finite and `skipNonFinite` asked to skip such a
  /// step: then nothing changed and no step is in flight). A step that will run writes the group
  /// state it advances into `packed`, as `step` does, for the facade to take once it is done.
  #[napi(catch_unwind)]
  pub fn start_step(
    &mut self,
    env: Env,
    params: Unknown,
    group_of: &[u32],
    #[napi(ts_arg_type = "Float64Array")] packed: Unknown,
    skip_non_finite: Option<bool>,
  ) -> Result<StartedStep> {
    let raw = RawEnv(env.raw());
    let skip = skip_non_finite.unwrap_or(false);
    let result = crate::packed_options(raw, packed.raw(), "startStep").and_then(|packed| {
      // SAFETY: a Float64Array of this call, attached; no JavaScript runs during the call, and
      // the step reads it before it writes the group state there.
      let packed = unsafe { packed.slice_mut::<f64>() };
      with_optimizer!(self.algorithm, O => self.start_with::<O>(raw, params.raw(), group_of, packed, skip))
    });
    result.map_err(|fail| fail.throw(&env))
  }

  /// Runs slices of the started step for about `budgetMicros` microseconds, the JavaScript thread
  /// waiting; returns true once the step is complete. Throws `ERR_INVALID_STATE` (and ends the
  /// step) if an array was detached or resized since the step started.
  #[napi(catch_unwind)]
  pub fn step_slice(&mut self, env: Env, budget_micros: f64) -> Result<bool> {
    let raw = RawEnv(env.raw());
    self.slice(raw, Duration::from_secs_f64(budget_micros.clamp(0.0, 1e9) / 1e6)).map_err(|fail| fail.throw(&env))
  }

  /// Ends the started step, complete or not, and gives the optimizer its state back. Returns
  /// whether the step (the last one to finish, if none is in flight) read a non-finite gradient
  /// element.
  #[napi(catch_unwind)]
  pub fn finish_step(&mut self, env: Env) -> Result<bool> {
    self.finish(RawEnv(env.raw()));
    Ok(self.last_non_finite)
  }
}

/// Runs the rest of the step `optimizer` started on a libuv worker thread; only when
/// `startStep` said so. A function rather than a method: napi-rs would keep a method's receiver
/// borrowed until the returned task settles, and then refuse every other call with its own error
/// instead of ours.
#[napi(catch_unwind, ts_args_type = "optimizer: NativeOptimizer", ts_return_type = "Promise<void>")]
pub fn step_off_thread(env: Env, optimizer: Unknown) -> Result<AsyncTask<OffThread<Vec<ParamState>>>> {
  // SAFETY: a value of this call, which runs no JavaScript.
  let optimizer = unsafe { crate::unwrap_optimizer(RawEnv(env.raw()), optimizer.raw(), "stepOffThread") }
    .map_err(|fail| fail.throw(&env))?;
  off_thread(&mut optimizer.flight).map_err(|fail| fail.throw(&env))
}

/// Hands the rest of the step in `flight` to a libuv worker thread, if one is waiting to run and
/// all its arrays are on SharedArrayBuffers (an ordinary one could be detached and freed while
/// the worker writes it).
pub(crate) fn off_thread<S: 'static>(
  flight: &mut Option<Flight<S>>,
) -> std::result::Result<AsyncTask<OffThread<S>>, Fail> {
  let Some(flight) = flight.as_mut().filter(|f| !f.off_thread) else {
    return Err(Fail::state("stepOffThread: no step is waiting to run".into()));
  };
  if !flight.shared {
    return Err(Fail::state(
      "stepOffThread: the step's arrays are not all on SharedArrayBuffers, so it runs in slices (stepSlice)".into(),
    ));
  }
  flight.off_thread = true;
  Ok(AsyncTask::new(OffThread { pending: Arc::clone(&flight.pending) }))
}

impl NativeOptimizer {
  fn start_with<O: Optimizer>(
    &mut self,
    env: RawEnv,
    params: sys::napi_value,
    group_of: &[u32],
    packed: &mut [f64],
    skip_non_finite: bool,
  ) -> std::result::Result<StartedStep, Fail> {
    self.prepare::<O>(env, params, group_of, packed, "stepAsync()")?;
    let configs = self.configs::<O>().to_vec();
    if skip_non_finite && !grads_finite(&self.reader.views) {
      self.last_non_finite = true;
      return Ok(StartedStep::Skipped);
    }
    if self.reader.any_sparse() {
      let started = self.sparse_now::<O>()?;
      write_group_state(&configs, packed);
      return Ok(started);
    }

    // Everything is checked: from here the step happens.
    let mut states = std::mem::take(&mut self.states);
    let mut tensors = Vec::new();
    let mut refs = Vec::new();
    let mut memo = None;
    let mut shared = true;
    let mut total = 0;
    let mut bytes = 0;
    for (index, (state, view)) in states.iter_mut().zip(&self.reader.views).enumerate() {
      let Some(view) = view else { continue };
      let config = configs[view.group];
      let coeffs = advance(&config, state, view.group, &mut memo);
      let buffers = config.buffers_used();
      // Buffers a first step creates are made here, on the JavaScript thread, not in a slice;
      // their pages are mapped by the slices (or the worker thread), each its part, not here.
      let lens = buffer_lens::<O>(view.dims);
      let bf16 = self.bf16() && view.data.dtype == Dtype::Float32;
      let fresh_from = state.buffers.lens().count();
      lazily(|| match view.data.dtype {
        Dtype::Float32 if bf16 => drop(state.step_parts::<Bf16>(&lens, buffers, O::partials_len(view.dims))),
        Dtype::Float32 => drop(state.step_parts::<f32>(&lens, buffers, O::partials_len(view.dims))),
        Dtype::Float64 => drop(state.step_parts::<f64>(&lens, buffers, O::partials_len(view.dims))),
      });
      for value in view.values {
        shared &= env.on_shared_memory(value)?;
        refs.push(Ref::to(env, value)?);
      }
      let (data, grad) = (view.data.address() as *mut u8, view.grad.address() as *const u8);
      tensors.push(Tensor {
        index,
        start: total,
        len: view.data.len,
        dtype: view.data.dtype,
        data,
        grad,
        coeffs,
        buffers,
        bf16,
        rounding: crate::rounding_of(self.stochastic, index, state.step),
        dims: view.dims,
        fresh_from,
      });
      total += view.data.len;
      bytes += view.data.len * (2 * view.data.dtype.size() + buffers * if bf16 { 2 } else { view.data.dtype.size() });
    }
    let streaming = streams::<O>(bytes);
    write_group_state(&configs, packed);
    let step =
      Step::<O> { states, tensors, refs, group_of: group_of.to_vec(), total, done: 0, non_finite: false, streaming };
    let flight = self.flight.insert(Flight::new(step, shared));
    Ok(flight.started())
  }

  /// A step of sparse gradients costs what their rows cost, not what the tables cost: it runs
  /// whole here, on the JavaScript thread, reading the gradients the reader coalesced in this call
  /// (no JavaScript has run since). The flight it leaves has nothing left to run, so that
  /// `stepAsync` settles through the same calls as any other step.
  fn sparse_now<O: Optimizer>(&mut self) -> std::result::Result<StartedStep, Fail> {
    let non_finite = self.apply::<O>(false)? == crate::StepReport::NonFinite;
    let step = Step::<O> {
      states: std::mem::take(&mut self.states),
      tensors: Vec::new(),
      refs: Vec::new(),
      group_of: Vec::new(),
      total: 0,
      done: 0,
      non_finite,
      streaming: Streaming::Cached,
    };
    self.flight = Some(Flight::new(step, false));
    Ok(StartedStep::InSlices)
  }

  fn slice(&mut self, env: RawEnv, budget: Duration) -> std::result::Result<bool, Fail> {
    let outcome = run_slices(env, &self.flight, budget)?;
    if !matches!(outcome, Ok(false)) {
      self.finish(env);
    }
    outcome
  }

  fn finish(&mut self, env: RawEnv) {
    if let Some(mut states) = finish(env, &mut self.flight, &mut self.last_non_finite) {
      // States of parameters added meanwhile (none can be: adding is refused) start afresh.
      if states.len() < self.states.len() {
        states.resize_with(self.states.len(), ParamState::default);
      }
      self.states = states;
    }
  }
}

/// Runs slices of the step in `flight` for about `budget`, the JavaScript thread waiting. The
/// outer error: no step is waiting to run; the inner result: whether the step is complete, or
/// the error that stopped it part way. The caller finishes the step unless the result is
/// `Ok(false)`.
pub(crate) fn run_slices<S>(
  env: RawEnv,
  flight: &Option<Flight<S>>,
  budget: Duration,
) -> std::result::Result<std::result::Result<bool, Fail>, Fail> {
  let Some(flight) = flight.as_ref().filter(|f| !f.off_thread) else {
    return Err(Fail::state("stepSlice: no step is waiting to run".into()));
  };
  let pending = Arc::clone(&flight.pending);
  let started = Instant::now();
  let mut size = FIRST_SLICE_ELEMENTS;
  let outcome = loop {
    let mut step = lock(&pending);
    let (done, total) = (step.done(), step.total());
    if done == total {
      break Ok(true);
    }
    let to = step.boundary(total.min(done + size));
    if let Err(fail) = step.check(env, to) {
      break Err(fail);
    }
    let before = Instant::now();
    step.run(to);
    let took = before.elapsed();
    let left = budget.saturating_sub(started.elapsed());
    if to == total {
      break Ok(true);
    }
    if left.is_zero() {
      break Ok(false);
    }
    // Size the next slice to the time left, at the rate this one ran.
    let rate = (to - done) as f64 / took.as_secs_f64().max(1e-7);
    size = ((rate * left.as_secs_f64()) as usize).clamp(fastoptim_core::engine::run::PIECE_ELEMENTS, total);
  };
  Ok(outcome)
}

/// Ends the step in `flight`, complete or not, on the JavaScript thread: records in `non_finite`
/// whether it read a non-finite gradient element, and returns the state it gives back (none when
/// no step was in flight).
pub(crate) fn finish<S>(env: RawEnv, flight: &mut Option<Flight<S>>, non_finite: &mut bool) -> Option<S> {
  let flight = flight.take()?;
  let mut step = lock(&flight.pending);
  *non_finite = step.non_finite();
  Some(step.finish(env))
}

/// The rest of a step on shared memory, on a libuv worker thread.
pub struct OffThread<S> {
  pending: Arc<Mutex<Box<dyn Pending<S>>>>,
}

impl<S: 'static> Task for OffThread<S> {
  type Output = ();
  type JsValue = ();

  fn compute(&mut self) -> Result<()> {
    let pending = Arc::clone(&self.pending);
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
      let mut step = lock(&pending);
      let total = step.total();
      // Beside the event loop: give the processor up now and then (see `politely`).
      fastoptim_core::threads::politely(|| step.run(total));
    }))
    .map_err(|_| Error::new(Status::GenericFailure, "stepAsync: the update panicked".to_owned()))
  }

  fn resolve(&mut self, _env: Env, _output: ()) -> Result<()> {
    Ok(())
  }
}
