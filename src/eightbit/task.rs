//! `stepAsync` of the 8-bit optimizers: the registry's protocol (src/task.rs, whose module
//! documentation says why it is safe) over their own state. A step starts on the JavaScript
//! thread, checking everything and advancing every step count as `step` does; its update then
//! runs on a libuv worker thread when every array is on a SharedArrayBuffer, and otherwise in
//! slices of about half a millisecond with the event loop running between them, each slice
//! checking first that the arrays it touches are still the memory the step started with.
//!
//! A slice runs whole units of the step ([`eightbit::run_units`]): runs of 16 blocks, or of as
//! many elements for `f32` moments. A block is never split, so a step run in slices gives the
//! bits of one run at once. The moments move into the step and back when it finishes; until
//! then every other call on the optimizer is refused ([`check_idle`]).

use std::ops::Range;
use std::time::Duration;

use fastoptim_core::eightbit::{self, Adam8bit, EightBit, Job, Lion8bit, Moments, UNIT_ELEMENTS};
use fastoptim_core::engine::run::Streaming;
use fastoptim_core::quantize::BLOCK;
use fastoptim_core::state::{lazily, map_pages};
use napi::bindgen_prelude::*;
use napi::sys;
use napi_derive::napi;

use super::{hyper_of, Kind, NativeEightBit, State, HYPER};
use crate::bound;
use crate::js::{Fail, RawEnv, TypedView};
use crate::task::{self as flight, stopped_part_way, Flight, OffThread, Pending, Ref, StartedStep};

/// Every parameter's state, as the optimizer holds it and a step in flight takes it.
type States = Vec<Option<State>>;

/// Refuses `what` while a `stepAsync` is in flight.
pub(super) fn check_idle(optimizer: &NativeEightBit, what: &str) -> std::result::Result<(), Fail> {
  flight::idle(&optimizer.flight, what)
}

/// One parameter of the step (one of at least one element).
struct Tensor<C> {
  index: usize,
  /// Where its elements start in the step's element range, and where its units start in the
  /// step's units.
  start: usize,
  first_unit: usize,
  len: usize,
  data: *mut f32,
  grad: *const f32,
  coeffs: C,
  /// Whether its moments were made by this step, their pages not yet mapped: each slice maps
  /// the pages of its part before it updates it ([`map_part`]).
  fresh: bool,
}

struct Step<O: EightBit> {
  states: States,
  tensors: Vec<Tensor<O::Coeffs>>,
  /// Two per tensor: data, grad.
  refs: Vec<Ref>,
  /// The parameters' names in errors.
  labels: Vec<String>,
  total: usize,
  done: usize,
  non_finite: bool,
  /// Whether the slices' kernels prefetch, decided for the whole step as a step on the JavaScript
  /// thread would be ([`eightbit::streams`]).
  streaming: Streaming,
}

// SAFETY: the raw pointers are to arrays that the references keep alive and that no JavaScript
// can free while the step uses them (src/task.rs): on a worker thread only when all are on
// SharedArrayBuffers, otherwise only while the JavaScript thread waits in a slice after `check`.
// The references themselves are touched only on the JavaScript thread.
unsafe impl<O: EightBit> Send for Step<O> {}

impl<O: EightBit> Step<O> {
  /// The tensor element `at` of the step falls in (the one after it, at a tensor's end), by
  /// position; `tensors.len()` at the step's end.
  fn tensor_at(&self, at: usize) -> usize {
    self.tensors.partition_point(|t| t.start + t.len <= at)
  }

  /// The unit that starts at element `at`, a unit boundary ([`Pending::boundary`]).
  fn unit_at(&self, at: usize) -> usize {
    match self.tensors.get(self.tensor_at(at)) {
      Some(t) => t.first_unit + (at - t.start) / UNIT_ELEMENTS,
      None => self.tensors.last().map_or(0, |t| t.first_unit + t.len.div_ceil(UNIT_ELEMENTS)),
    }
  }

  /// The tensors elements `done..to` touch, with their positions.
  fn window(&self, to: usize) -> impl Iterator<Item = (usize, &Tensor<O::Coeffs>)> {
    let first = self.tensor_at(self.done);
    self.tensors.iter().enumerate().skip(first).take_while(move |(_, t)| t.start < to)
  }
}

impl<O: EightBit> Pending<States> for Step<O> {
  fn total(&self) -> usize {
    self.total
  }

  fn done(&self) -> usize {
    self.done
  }

  /// The end of the unit `to` falls in: a slice holds whole units.
  fn boundary(&self, to: usize) -> usize {
    match self.tensors.get(self.tensor_at(to)) {
      Some(t) if to > t.start => t.start + (to - t.start).next_multiple_of(UNIT_ELEMENTS).min(t.len),
      _ => to,
    }
  }

  fn check(&self, env: RawEnv, to: usize) -> std::result::Result<(), Fail> {
    for (position, tensor) in self.window(to) {
      for (which, field, address) in [(0, "data", tensor.data as usize), (1, "grad", tensor.grad as usize)] {
        if !self.refs[2 * position + which].still(env, address, tensor.len)? {
          return Err(stopped_part_way(&format!("{}.{field}", self.labels[tensor.index])));
        }
      }
    }
    Ok(())
  }

  fn run(&mut self, to: usize) {
    let from = self.done;
    // Only the tensors the slice touches, so that a slice costs what they cost, not what the
    // step's other tensors do; the units are numbered from the first one's.
    let first = self.tensor_at(from);
    let base = self.tensors.get(first).map_or(0, |t| t.first_unit);
    let units = self.unit_at(from) - base..self.unit_at(to) - base;
    let window = &self.tensors[first..first + self.tensors[first..].partition_point(|t| t.start < to)];
    let mut jobs = Vec::with_capacity(window.len());
    let mut states = self.states.iter_mut().enumerate().skip(window.first().map_or(0, |t| t.index));
    for tensor in window {
      let state = states.find(|(i, _)| *i == tensor.index).and_then(|(_, s)| s.as_mut());
      let moments = &mut state.expect("a stepped parameter has state").moments;
      let part = from.max(tensor.start).min(tensor.start + tensor.len) - tensor.start
        ..to.clamp(tensor.start, tensor.start + tensor.len) - tensor.start;
      if tensor.fresh && !part.is_empty() {
        map_part(moments, part);
      }
      // SAFETY: the arrays hold `len` elements, are alive and attached (see `Send`), and the step
      // checked that no parameter's data overlaps another array of it.
      let (param, grad) = unsafe {
        (std::slice::from_raw_parts_mut(tensor.data, tensor.len), std::slice::from_raw_parts(tensor.grad, tensor.len))
      };
      jobs.push(Job::new::<O>(tensor.coeffs, param, grad, moments).expect("lengths checked when the step started"));
    }
    self.non_finite |= eightbit::run_units::<O>(&mut jobs, units, self.streaming);
    self.done = to;
  }

  fn non_finite(&self) -> bool {
    self.non_finite
  }

  fn finish(&mut self, env: RawEnv) -> States {
    Ref::delete_all(env, &mut self.refs);
    std::mem::take(&mut self.states)
  }
}

/// Maps the pages of elements `part` of new moments ([`map_pages`]); `part` starts on a block.
fn map_part(moments: &mut Moments, part: Range<usize>) {
  let blocks = part.start / BLOCK..part.end.div_ceil(BLOCK);
  match moments {
    Moments::Quantized { state1, absmax1, state2, absmax2 } => {
      map_pages(&mut state1[part.clone()], 0);
      map_pages(&mut absmax1[blocks.clone()], 0.0);
      if !state2.is_empty() {
        map_pages(&mut state2[part], 0);
        map_pages(&mut absmax2[blocks], 0.0);
      }
    }
    Moments::Full { state1, state2 } => {
      map_pages(&mut state1[part.clone()], 0.0);
      if !state2.is_empty() {
        map_pages(&mut state2[part], 0.0);
      }
    }
  }
}

#[napi]
impl NativeEightBit {
  /// Runs slices of the started step for about `budgetMicros` microseconds, the JavaScript thread
  /// waiting; returns true once the step is complete. Throws `ERR_INVALID_STATE` (and ends the
  /// step) if an array was detached or resized since the step started.
  #[napi(catch_unwind)]
  pub fn step_slice(&mut self, env: Env, budget_micros: f64) -> Result<bool> {
    let raw = RawEnv(env.raw());
    let budget = Duration::from_secs_f64(budget_micros.clamp(0.0, 1e9) / 1e6);
    let outcome = flight::run_slices(raw, &self.flight, budget).map_err(|fail| fail.throw(&env))?;
    if !matches!(outcome, Ok(false)) {
      self.finish(raw);
    }
    outcome.map_err(|fail| fail.throw(&env))
  }

  /// Ends the started step, complete or not, and gives the optimizer its state back. Returns
  /// whether the step (the last one to finish, if none is in flight) read a non-finite gradient
  /// element.
  #[napi(catch_unwind)]
  pub fn finish_step(&mut self, env: Env) -> bool {
    self.finish(RawEnv(env.raw()));
    self.last_non_finite
  }
}

/// Runs the rest of the step `optimizer` started on a libuv worker thread; only when
/// `startStep` said so. A function, as the registry's `stepOffThread` (src/task.rs).
#[napi(catch_unwind, ts_args_type = "optimizer: NativeEightBit", ts_return_type = "Promise<void>")]
pub fn eight_bit_step_off_thread(env: Env, optimizer: Unknown) -> Result<AsyncTask<OffThread<States>>> {
  // SAFETY: a value of this call, which runs no JavaScript.
  let optimizer = unsafe {
    crate::bound::unwrap::<NativeEightBit>(
      RawEnv(env.raw()),
      optimizer.raw(),
      "eightBitStepOffThread",
      "NativeEightBit",
    )
  }
  .map_err(|fail| fail.throw(&env))?;
  flight::off_thread(&mut optimizer.flight).map_err(|fail| fail.throw(&env))
}

impl NativeEightBit {
  /// Starts a `stepAsync` over the arguments of a call of the bound start function
  /// ([`start_of_callback`]), the arguments a bound step takes: checks everything as `step` does
  /// (on error nothing changes) and advances every step count, but updates nothing yet. Returns
  /// where the update runs, or that it was skipped (then nothing changed and no step is in flight).
  fn start(
    &mut self,
    env: RawEnv,
    info: sys::napi_callback_info,
    argc: usize,
  ) -> std::result::Result<StartedStep, Fail> {
    check_idle(self, "stepAsync()")?;
    let mut args = std::mem::take(&mut self.args);
    args.resize(argc, std::ptr::null_mut());
    // SAFETY: this callback's own env and info; room for `argc` arguments.
    let read = unsafe {
      sys::napi_get_cb_info(env.0, info, &mut { argc }, args.as_mut_ptr(), std::ptr::null_mut(), std::ptr::null_mut())
    };
    // Which parameters the step makes state for: their moments' pages are mapped by the slices.
    let fresh: Vec<bool> = self.states.iter().map(Option::is_none).collect();
    let result = if read == sys::Status::napi_ok {
      // New moments are made unmapped (`lazily`), so that the JavaScript thread is not held
      // while a large parameter's are written.
      lazily(|| {
        self.with_args(env, &args, "stepAsync", |optimizer, hyper, views| match optimizer.kind {
          Kind::Adam => optimizer.fly::<Adam8bit>(env, &args, hyper, views, &fresh),
          Kind::Lion => optimizer.fly::<Lion8bit>(env, &args, hyper, views, &fresh),
        })
      })
    } else {
      Err(Fail::state("stepAsync: could not read its arguments".into()))
    };
    self.args = args;
    Ok(result?.unwrap_or(StartedStep::Skipped))
  }

  /// Puts the step checked and begun by [`Self::with_args`] in flight.
  fn fly<O: EightBit<Coeffs: 'static> + 'static>(
    &mut self,
    env: RawEnv,
    args: &[sys::napi_value],
    hyper: &[f64],
    views: &[Option<(TypedView, TypedView)>],
    fresh: &[bool],
  ) -> std::result::Result<StartedStep, Fail> {
    let (mut tensors, mut refs) = (Vec::new(), Vec::new());
    let (mut total, mut units, mut shared) = (0, 0, true);
    for (index, view) in views.iter().enumerate() {
      let Some((param, grad)) = view.as_ref().filter(|(param, _)| param.len > 0) else { continue };
      let step = self.states[index].as_ref().expect("a stepped parameter has state").step;
      for value in [args[1 + 2 * index], args[2 + 2 * index]] {
        // Only a failing Node-API call can stop the step here: it is not undone.
        shared &= env.on_shared_memory(value)?;
        refs.push(Ref::to(env, value)?);
      }
      tensors.push(Tensor {
        index,
        start: total,
        first_unit: units,
        len: param.len,
        data: param.address() as *mut f32,
        grad: grad.address() as *const f32,
        coeffs: O::coeffs(&hyper_of(hyper, index), step),
        fresh: fresh.get(index).copied().unwrap_or(true),
      });
      total += param.len;
      units += param.len.div_ceil(UNIT_ELEMENTS);
    }
    debug_assert_eq!(hyper.len(), HYPER * views.len());
    let step = Step::<O> {
      states: std::mem::take(&mut self.states),
      tensors,
      refs,
      labels: self.labels.clone(),
      total,
      done: 0,
      non_finite: false,
      streaming: eightbit::streams::<O>(total),
    };
    let flight = self.flight.insert(Flight::new(step, shared));
    Ok(flight.started())
  }

  fn finish(&mut self, env: RawEnv) {
    if let Some(mut states) = flight::finish(env, &mut self.flight, &mut self.last_non_finite) {
      // Parameters added meanwhile (none can be: adding is refused) start afresh.
      if states.len() < self.labels.len() {
        states.resize_with(self.labels.len(), || None);
      }
      self.states = states;
    }
  }
}

/// `eightBitStartOf(optimizer)`: a function `(hyper, data0, grad0, ..., skipNonFinite?)` that
/// starts a `stepAsync` of `optimizer` ([`NativeEightBit::start`]) and returns its
/// [`StartedStep`], bound to it as the step is ([`super::step_of`]), so that reading the arrays
/// runs no JavaScript.
pub(crate) unsafe extern "C" fn start_of_callback(
  env: sys::napi_env,
  info: sys::napi_callback_info,
) -> sys::napi_value {
  // SAFETY: this callback's own env and info.
  unsafe { bound::of(env, info, "eightBitStartOf", start_of) }
}

fn start_of(env: RawEnv, object: sys::napi_value) -> std::result::Result<sys::napi_value, Fail> {
  // SAFETY: a value of this call, which runs no JavaScript.
  let optimizer = unsafe { bound::unwrap::<NativeEightBit>(env, object, "eightBitStartOf", "NativeEightBit")? };
  let cell = super::cell_of(optimizer);
  bound::bind(env, &cell, c"startStep", start_callback)
}

/// The function [`start_of`] makes; it returns the [`StartedStep`].
unsafe extern "C" fn start_callback(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
  // SAFETY: this callback's env and info, of a function `bind` made for a `NativeEightBit`.
  unsafe {
    super::bound_call(env, info, "stepAsync", |optimizer, argc| {
      optimizer.start(RawEnv(env), info, argc).map(|started| started as u32)
    })
  }
}
