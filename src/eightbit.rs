//! 8-bit optimizer state (lib/eightbit.ts): bitsandbytes' `Adam8bit`, `AdamW8bit` and
//! `Lion8bit`. The moments live here, in Rust-owned memory; the parameters and gradients are the
//! caller's Float32Arrays, borrowed for one step. The math is the core's
//! (`fastoptim_core::eightbit`). Every call checks everything before it writes anything.

// The exports are reached through the napi registration, which test builds leave out.
#![cfg_attr(test, allow(dead_code))]

use fastoptim_core::eightbit::{self, Adam8bit, EightBit, Hyper, Job, Lion8bit, Moments};
use fastoptim_core::engine::placed::Placed;
use fastoptim_core::quantize;
use fastoptim_core::{all_finite, Dtype};
use napi::bindgen_prelude::*;
use napi::sys;
use napi_derive::napi;
use std::sync::atomic::AtomicPtr;
use std::sync::Arc;

use crate::bound;
use crate::disjoint::{step_message, Passed, Span};
use crate::js::{Fail, RawEnv, TypedView};
use crate::task::Flight;
use crate::{give_back, lend, Lent, StepReport, MAX_STEP};

mod task;

pub(crate) use task::start_of_callback;

/// The numbers per parameter of a step's `hyper`: lr, beta1, beta2, eps, weightDecay.
const HYPER: usize = 5;

/// Parameter `i`'s options in a step's `hyper`.
fn hyper_of(hyper: &[f64], i: usize) -> Hyper {
  let h = &hyper[HYPER * i..HYPER * (i + 1)];
  Hyper { lr: h[0], beta1: h[1], beta2: h[2], eps: h[3], weight_decay: h[4] }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
  Adam,
  Lion,
}

/// One parameter's state: its step count and moments.
pub(crate) struct State {
  step: u64,
  moments: Moments,
}

/// The state of every parameter of one 8-bit optimizer.
#[napi(custom_finalize)]
pub struct NativeEightBit {
  kind: Kind,
  min_8bit_size: usize,
  states: Vec<Option<State>>,
  /// Each parameter's name in errors (`paramGroups[g].params[i]`).
  labels: Vec<String>,
  /// A step's scratch, kept so that a step allocates nothing: its arguments, its parameters'
  /// arrays as read, the spans of its overlap check and (empty between steps) its jobs.
  args: Vec<sys::napi_value>,
  views: Vec<Option<(TypedView, TypedView)>>,
  spans: Vec<Span>,
  /// The last step's spans, if they overlapped nothing.
  passed: Passed,
  adam_jobs: Vec<Job<'static, <Adam8bit as EightBit>::Coeffs>>,
  lion_jobs: Vec<Job<'static, <Lion8bit as EightBit>::Coeffs>>,
  /// Where the step functions bound to this optimizer ([`step_of`]) find it; null once it is
  /// finalized. Made by the first binding.
  bound: Option<bound::Cell<NativeEightBit>>,
  /// The `stepAsync` in flight, which holds `states` until it finishes ([`task`]).
  flight: Option<Flight<Vec<Option<State>>>>,
  /// Whether the last `stepAsync` to finish read a non-finite gradient element.
  last_non_finite: bool,
}

impl ObjectFinalize for NativeEightBit {
  fn finalize(self, _env: Env) -> Result<()> {
    bound::release(&self.bound);
    Ok(())
  }
}

impl<'a, C: 'static> Lent<'a> for Job<'a, C> {
  type At<'b> = Job<'b, C>;
}

/// One parameter's state as the facade sees it: `state1`/`state2` are codes (Uint8Array) with
/// `absmax1`/`absmax2` for an 8-bit tensor, or Float32Arrays for a small one. Lion has no second.
#[napi(object)]
pub struct EightBitEntry {
  pub index: u32,
  pub step: f64,
  pub state1: Either<Uint8Array, Float32Array>,
  pub state2: Option<Either<Uint8Array, Float32Array>>,
  pub absmax1: Option<Float32Array>,
  pub absmax2: Option<Float32Array>,
}

/// The quantization maps, as state holds them.
#[napi(object)]
pub struct EightBitMaps {
  pub signed: Float32Array,
  pub unsigned: Float32Array,
}

/// bitsandbytes' dynamic maps, for `qmap1`/`qmap2` in state dicts and their checks.
#[napi]
pub fn eight_bit_maps() -> EightBitMaps {
  let (s, u) = (quantize::signed(), quantize::unsigned());
  EightBitMaps { signed: Float32Array::new(s.values.to_vec()), unsigned: Float32Array::new(u.values.to_vec()) }
}

impl NativeEightBit {
  fn moments(&self) -> usize {
    match self.kind {
      Kind::Adam => Adam8bit::MOMENTS,
      Kind::Lion => Lion8bit::MOMENTS,
    }
  }

  /// A copy of parameter `index`'s state, or `None` before its first step.
  fn entry(&self, index: u32) -> Option<EightBitEntry> {
    let state = self.states.get(index as usize)?.as_ref()?;
    let second = self.moments() == 2;
    Some(match &state.moments {
      Moments::Quantized { state1, absmax1, state2, absmax2 } => EightBitEntry {
        index,
        step: state.step as f64,
        state1: Either::A(Uint8Array::new(state1.to_vec())),
        state2: second.then(|| Either::A(Uint8Array::new(state2.to_vec()))),
        absmax1: Some(Float32Array::new(absmax1.clone())),
        absmax2: second.then(|| Float32Array::new(absmax2.clone())),
      },
      Moments::Full { state1, state2 } => EightBitEntry {
        index,
        step: state.step as f64,
        state1: Either::B(Float32Array::new(state1.to_vec())),
        state2: second.then(|| Either::B(Float32Array::new(state2.to_vec()))),
        absmax1: None,
        absmax2: None,
      },
    })
  }

  /// One step over the arguments of a call of a bound step function ([`step_of`]):
  /// `(hyper, data0, grad0, data1, grad1, ..., skipNonFinite?)`, parameter `i` being `data_i`,
  /// updated by `grad_i` (null: not stepped) with the options `hyper[5i..5i + 5]`. All checked
  /// first; then every parameter is updated, or none. With `skipNonFinite` true, a gradient
  /// holding NaN or ±∞ skips the whole step (every gradient is read once more first). The arrays
  /// are arguments, not elements of an array, so that reading them runs no JavaScript; `hyper` is
  /// borrowed, so a step copies nothing out of JavaScript.
  fn step(&mut self, raw: RawEnv, info: sys::napi_callback_info, argc: usize) -> std::result::Result<StepReport, Fail> {
    task::check_idle(self, "step()")?;
    let mut args = std::mem::take(&mut self.args);
    args.resize(argc, std::ptr::null_mut());
    // SAFETY: this callback's own env and info; room for `argc` arguments.
    let read = unsafe {
      sys::napi_get_cb_info(raw.0, info, &mut { argc }, args.as_mut_ptr(), std::ptr::null_mut(), std::ptr::null_mut())
    };
    let result = if read == sys::Status::napi_ok {
      self
        .with_args(raw, &args, "step", |optimizer, hyper, views| {
          let non_finite = match optimizer.kind {
            Kind::Adam => step_all::<Adam8bit>(&mut optimizer.states, views, hyper, &mut optimizer.adam_jobs),
            Kind::Lion => step_all::<Lion8bit>(&mut optimizer.states, views, hyper, &mut optimizer.lion_jobs),
          };
          Ok(if non_finite { StepReport::NonFinite } else { StepReport::Finite })
        })
        .map(|report| report.unwrap_or(StepReport::Skipped))
    } else {
      Err(Fail::state("step: could not read its arguments".into()))
    };
    self.args = args;
    result
  }

  /// Checks a step's arguments, `(hyper, data0, grad0, ..., skipNonFinite?)`, as [`Self::step`]
  /// describes them, and unless the step is skipped (then nothing changes and this returns
  /// `None`), advances the stepped parameters' step counts, making the state of a first step,
  /// and hands `update` the options and the arrays read: the step from here on. `what` names the
  /// call in errors.
  fn with_args<R>(
    &mut self,
    raw: RawEnv,
    args: &[sys::napi_value],
    what: &str,
    update: impl FnOnce(&mut Self, &[f64], &[Option<(TypedView, TypedView)>]) -> std::result::Result<R, Fail>,
  ) -> std::result::Result<Option<R>, Fail> {
    crate::threads::check_configured()?;
    let (argc, count) = (args.len(), self.states.len());
    if argc != 1 + 2 * count && argc != 2 + 2 * count {
      return Err(Fail::value(format!(
        "{what}: expected {} arguments (hyper, then data and grad for each of {count} parameters, then \
         optionally skipNonFinite), got {argc}",
        1 + 2 * count
      )));
    }
    let skip = match args.get(1 + 2 * count) {
      Some(&flag) => raw.is_true(flag)?,
      None => false,
    };
    let mut views = std::mem::take(&mut self.views);
    let result = match self.check_step(raw, &args[..1 + 2 * count], &mut views, skip, what) {
      Ok(Some(hyper)) => update(self, hyper, &views).map(Some),
      Ok(None) => Ok(None),
      Err(fail) => Err(fail),
    };
    self.views = views;
    result
  }

  /// [`Self::with_args`]' checks, over its arguments without the flag: the options, borrowed, or
  /// `None` for a skipped step.
  fn check_step<'h>(
    &mut self,
    raw: RawEnv,
    args: &[sys::napi_value],
    views: &mut Vec<Option<(TypedView, TypedView)>>,
    skip_non_finite: bool,
    what: &str,
  ) -> std::result::Result<Option<&'h [f64]>, Fail> {
    let hyper = match raw.float_array(args[0])? {
      Some(view) if view.dtype == Dtype::Float64 && !view.detached => view,
      _ => {
        return Err(Fail::type_error(format!("{what}: hyper must be a Float64Array, got {}", raw.kind_of(args[0])?)))
      }
    };
    // SAFETY: a Float64Array of this call, attached, only read; no JavaScript runs during the call
    // (the caller reads the options before it returns).
    let hyper = unsafe { hyper.slice::<f64>() };
    let count = self.states.len();
    if hyper.len() != HYPER * count {
      return Err(Fail::value(format!("{what}: expected {} options, got {}", HYPER * count, hyper.len())));
    }
    let moments = self.moments();
    views.clear();
    let spans = &mut self.spans;
    spans.clear();
    for (i, pair) in args[1..].chunks(2).enumerate() {
      let (data, grad) = (pair[0], pair[1]);
      if raw.is_nullish(grad)? {
        views.push(None);
        continue;
      }
      let label = &self.labels[i];
      let param = float32(raw, data, label, "data")?;
      let grad = float32(raw, grad, label, "grad")?;
      if grad.len != param.len {
        return Err(Fail::range(format!("{label}.grad has length {}, expected {} like its data", grad.len, param.len)));
      }
      if let Some(state) = &self.states[i] {
        if state.step >= MAX_STEP {
          return Err(Fail::state(format!("{label} has taken 2^53 - 1 steps, the most counted exactly")));
        }
        if !state.moments.fits(param.len, moments) {
          return Err(Fail::range(format!(
            "{label}.data has length {}, but its state was made for another length",
            param.len
          )));
        }
      }
      spans.push(Span { start: param.address(), end: param.address() + param.byte_len(), writable: true, id: 2 * i });
      spans.push(Span { start: grad.address(), end: grad.address() + grad.byte_len(), writable: false, id: 2 * i + 1 });
      views.push(Some((param, grad)));
    }
    if let Some((a, b)) = self.passed.find_overlap(spans) {
      let name = |id: usize| format!("{}.{}", self.labels[id / 2], if id.is_multiple_of(2) { "data" } else { "grad" });
      return Err(Fail::value(step_message(&name(a), &name(b))));
    }
    for (i, h) in hyper.chunks(HYPER).enumerate() {
      if views[i].is_none() {
        continue;
      }
      let unit = |x: f64| (0.0..1.0).contains(&x);
      if !(h[0].is_finite() && h[0] >= 0.0 && unit(h[1]) && unit(h[2]) && h[3] >= 0.0 && h[4] >= 0.0) {
        return Err(Fail::range(format!(
          "{}: invalid options lr {}, betas ({}, {}), eps {}, weightDecay {} (expected lr >= 0, betas in [0, 1), \
           eps >= 0, weightDecay >= 0)",
          self.labels[i], h[0], h[1], h[2], h[3], h[4]
        )));
      }
    }
    // SAFETY: attached Float32Arrays read in this call, only read; no JavaScript runs during it.
    if skip_non_finite && !all_finite(views.iter().flatten().map(|(_, grad)| unsafe { grad.slice::<f32>() })) {
      return Ok(None);
    }
    let min = self.min_8bit_size;
    for (state, view) in self.states.iter_mut().zip(views.iter()) {
      if let Some((param, _)) = view {
        let state = state.get_or_insert_with(|| State { step: 0, moments: Moments::new(param.len, min, moments) });
        state.step += 1;
      }
    }
    Ok(Some(hyper))
  }
}

#[napi]
impl NativeEightBit {
  /// `algorithm`: `"adam"` or `"lion"`; parameters of fewer than `min8bitSize` elements keep
  /// `f32` moments.
  #[napi(constructor)]
  pub fn new(env: Env, algorithm: String, min_8bit_size: f64) -> Result<Self> {
    let kind = match algorithm.as_str() {
      "adam" => Kind::Adam,
      "lion" => Kind::Lion,
      other => return Err(Fail::value(format!("unknown 8-bit algorithm {other:?}")).throw(&env)),
    };
    if !(min_8bit_size.is_finite() && min_8bit_size >= 0.0 && min_8bit_size.fract() == 0.0) {
      return Err(
        Fail::range(format!("invalid minEightBitSize: {min_8bit_size} (expected a whole number >= 0)")).throw(&env),
      );
    }
    Ok(NativeEightBit {
      kind,
      min_8bit_size: min_8bit_size as usize,
      states: Vec::new(),
      labels: Vec::new(),
      args: Vec::new(),
      views: Vec::new(),
      spans: Vec::new(),
      passed: Passed::default(),
      adam_jobs: Vec::new(),
      lion_jobs: Vec::new(),
      bound: None,
      flight: None,
      last_non_finite: false,
    })
  }

  /// The parameters' names in errors, one per parameter: makes room for as many (groups only
  /// ever add).
  #[napi]
  pub fn set_labels(&mut self, env: Env, labels: Vec<String>) -> Result<()> {
    task::check_idle(self, "addParamGroup()").map_err(|fail| fail.throw(&env))?;
    self.states.resize_with(labels.len(), || None);
    self.labels = labels;
    Ok(())
  }

  /// A copy of parameter `index`'s state, or null before its first step.
  #[napi]
  pub fn export_state(&self, env: Env, index: u32) -> Result<Option<EightBitEntry>> {
    task::check_idle(self, "getState()/stateDict()").map_err(|fail| fail.throw(&env))?;
    Ok(self.entry(index))
  }

  /// Replaces every parameter's state: those in `entries` get theirs (parameter `i` having
  /// `lengths[i]` elements), the others start afresh. Nothing changes unless all are valid.
  #[napi(catch_unwind)]
  pub fn import_states(&mut self, env: Env, lengths: Vec<u32>, entries: Vec<EightBitEntry>) -> Result<()> {
    let result = (|| {
      task::check_idle(self, "loadStateDict()")?;
      let count = self.states.len();
      if lengths.len() != count {
        return Err(Fail::value(format!("importStates: expected {count} lengths, got {}", lengths.len())));
      }
      let mut states: Vec<Option<State>> = (0..count).map(|_| None).collect();
      for entry in &entries {
        let i = entry.index as usize;
        let at = format!("state[{i}]");
        if i >= count {
          return Err(Fail::range(format!("{at}: the optimizer has {count} parameters")));
        }
        if states[i].is_some() {
          return Err(Fail::value(format!("{at} is given twice")));
        }
        if !(entry.step.is_finite() && entry.step >= 0.0 && entry.step.fract() == 0.0 && entry.step <= MAX_STEP as f64)
        {
          return Err(Fail::range(format!(
            "invalid {at}.step: {} (expected a whole number from 0 to 2^53 - 1)",
            entry.step
          )));
        }
        let moments = entry_moments(entry).ok_or_else(|| {
          Fail::type_error(format!("{at}: codes and absmax, or Float32Arrays, one kind for every moment"))
        })?;
        if !moments.fits(lengths[i] as usize, self.moments()) {
          return Err(Fail::range(format!("{at}: state sizes do not fit a parameter of {} elements", lengths[i])));
        }
        states[i] = Some(State { step: entry.step as u64, moments });
      }
      self.states = states;
      Ok(())
    })();
    result.map_err(|fail: Fail| fail.throw(&env))
  }

  /// Bytes of state of parameter `index` (0 before its first step).
  #[napi]
  pub fn state_bytes(&self, env: Env, index: u32) -> Result<f64> {
    task::check_idle(self, "stateBytes()").map_err(|fail| fail.throw(&env))?;
    Ok(self.states.get(index as usize).and_then(Option::as_ref).map_or(0.0, |s| s.moments.bytes() as f64))
  }
}

/// The moments an entry holds, or `None` if it mixes kinds.
fn entry_moments(entry: &EightBitEntry) -> Option<Moments> {
  match (&entry.state1, &entry.state2, &entry.absmax1, &entry.absmax2) {
    (Either::A(s1), s2, Some(a1), a2) => {
      let (state2, absmax2) = match (s2, a2) {
        (None, None) => (Vec::new().into(), Vec::new()),
        (Some(Either::A(s2)), Some(a2)) => (Placed::copied(s2, 1), a2.to_vec()),
        _ => return None,
      };
      Some(Moments::Quantized { state1: Placed::copied(s1, 0), absmax1: a1.to_vec(), state2, absmax2 })
    }
    (Either::B(s1), s2, None, None) => {
      let state2 = match s2 {
        None => Vec::new().into(),
        Some(Either::B(s2)) => Placed::copied(s2, 1),
        Some(Either::A(_)) => return None,
      };
      Some(Moments::Full { state1: Placed::copied(s1, 0), state2 })
    }
    _ => None,
  }
}

/// A Float32Array, attached; named `{label}.{field}` in errors (the name is made only for one).
fn float32(
  raw: RawEnv,
  value: napi::sys::napi_value,
  label: &str,
  field: &str,
) -> std::result::Result<TypedView, Fail> {
  let what = format_args!("{label}.{field}");
  let view = raw.float_array(value)?.ok_or_else(|| {
    Fail::type_error(format!("{what} must be a Float32Array, got {}", raw.kind_of(value).unwrap_or_default()))
  })?;
  if view.dtype != Dtype::Float32 {
    return Err(Fail::type_error(format!(
      "{what} is a {}: 8-bit optimizers take Float32Array parameters only",
      view.type_name()
    )));
  }
  if view.detached {
    return Err(Fail::state(format!("{what} is detached (its ArrayBuffer was transferred)")));
  }
  Ok(view)
}

/// Steps every parameter with a gradient, in one parallel run; its jobs go in the allocation that
/// `storage` keeps between steps. Returns whether a gradient held NaN or ±∞.
fn step_all<O: EightBit<Coeffs: 'static>>(
  states: &mut [Option<State>],
  views: &[Option<(TypedView, TypedView)>],
  hyper: &[f64],
  storage: &mut Vec<Job<'static, O::Coeffs>>,
) -> bool {
  let mut jobs = lend(storage);
  // The scalars of the last parameter, kept for the next of the same options and step count (a
  // group's parameters, stepped together): they take two powers to compute.
  let mut last: Option<(&[f64], u64, O::Coeffs)> = None;
  for (i, (state, view)) in states.iter_mut().zip(views).enumerate() {
    let (Some(state), Some((param, grad))) = (state, view) else { continue };
    let options = &hyper[HYPER * i..HYPER * (i + 1)];
    let coeffs = match last {
      Some((before, step, coeffs)) if step == state.step && crate::same_bits(before, options) => coeffs,
      _ => O::coeffs(&hyper_of(hyper, i), state.step),
    };
    last = Some((options, state.step, coeffs));
    // SAFETY: both views were read in this call, are attached Float32Arrays of one length
    // (checked), and the parameters overlap nothing (checked); no JavaScript runs before the step ends.
    let (param, grad) = unsafe { (param.slice_mut::<f32>(), grad.slice::<f32>()) };
    let job = Job::new::<O>(coeffs, param, grad, &mut state.moments);
    jobs.push(job.expect("lengths checked"));
  }
  let non_finite = eightbit::run::<O>(&mut jobs);
  give_back(storage, jobs);
  non_finite
}

/// `eightBitStepOf(optimizer)`: a function `(hyper, data0, grad0, data1, grad1, ...)` that steps
/// `optimizer` ([`NativeEightBit::step`]), bound to it once ([`bound`]) so that a step neither
/// checks the object's class nor unwraps it, and allocates nothing.
pub(crate) unsafe extern "C" fn step_of_callback(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
  // SAFETY: this callback's own env and info.
  unsafe { bound::of(env, info, "eightBitStepOf", step_of) }
}

fn step_of(env: RawEnv, object: sys::napi_value) -> std::result::Result<sys::napi_value, Fail> {
  // SAFETY: a value of this call, which runs no JavaScript.
  let optimizer = unsafe { bound::unwrap::<NativeEightBit>(env, object, "eightBitStepOf", "NativeEightBit")? };
  let cell = cell_of(optimizer);
  bound::bind(env, &cell, c"step", step_callback)
}

/// Where the functions bound to `optimizer` find it, made by the first binding.
fn cell_of(optimizer: &mut NativeEightBit) -> bound::Cell<NativeEightBit> {
  let address: *mut NativeEightBit = optimizer;
  Arc::clone(optimizer.bound.get_or_insert_with(|| Arc::new(AtomicPtr::new(address))))
}

/// The function [`step_of`] makes; it returns the step's [`StepReport`].
unsafe extern "C" fn step_callback(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
  // SAFETY: this callback's env and info, of a function `bind` made for a `NativeEightBit`.
  unsafe { bound_call(env, info, "step", |optimizer, argc| optimizer.step(RawEnv(env), info, argc).map(|r| r as u32)) }
}

/// The body of a function bound to a `NativeEightBit` ([`step_of`], [`task::start_of_callback`]):
/// runs `f` on the optimizer as the call `what` ([`bound::enter`]) with the number of arguments,
/// and returns the number it gives, or throws its error.
///
/// # Safety
/// `env` and `info` are a callback's own, of a function `bind` made for a `NativeEightBit`.
unsafe fn bound_call(
  env: sys::napi_env,
  info: sys::napi_callback_info,
  what: &str,
  f: impl FnOnce(&mut NativeEightBit, usize) -> std::result::Result<u32, Fail>,
) -> sys::napi_value {
  // SAFETY: the caller's guarantees.
  let result = match unsafe { bound::args::<NativeEightBit, 0>(env, info) } {
    None => Err(Fail::type_error(format!("{what}: could not read its arguments"))),
    Some((_, argc, optimizer)) => bound::enter(optimizer, what, |optimizer| f(optimizer, argc)),
  };
  let mut value = std::ptr::null_mut();
  match result {
    // SAFETY: creating a value in this callback's env.
    Ok(number) => unsafe {
      sys::napi_create_uint32(env, number, &mut value);
    },
    Err(fail) => {
      let _ = fail.throw(&Env::from_raw(env));
    }
  }
  value
}
