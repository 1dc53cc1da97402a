//! Node-API binding of fastoptim-core.
//!
//! It holds no math: it reads the caller's parameters (typed arrays borrowed in place, never
//! copied), checks what only it can see (array types, lengths, detached or overlapping memory),
//! and hands slices to the core. Everything is checked before anything is written, so a step
//! updates every parameter or none (except a `stepAsync` stopped by an array detached between its
//! slices, which keeps what the earlier slices wrote: see `task.rs`).

mod averaging;
mod bound;
mod checkpoint;
mod clip;
mod disjoint;
mod eightbit;
mod internal;
mod js;
mod lbfgs;
mod params;
mod schedule_free;
mod sparse;
mod state_io;
mod task;
mod threads;

use fastoptim_core::config::{Kind, Rule};
use fastoptim_core::engine::run::with_scratch;
use fastoptim_core::{
  all_finite, buffer_lens, run, run_bf16, run_sparse, write_group_state, Bf16, ConfigError, Dtype, Element, Job,
  Layout, Optimizer, Options, ParamState, Rounding, SparseJob, Stored,
};
use napi::bindgen_prelude::*;
use napi::sys;
use napi_derive::napi;

use js::{camel_case, Fail, RawEnv, TypedView};
use params::{ParamView, Reader};
use std::sync::atomic::AtomicPtr;
use std::sync::Arc;

/// Defines [`Algorithm`], one variant per optimizer of the core's registry, and `with_optimizer!`,
/// which runs an expression with a type alias bound to the core type of an [`Algorithm`].
macro_rules! define_algorithms {
  ($d:tt ; $($O:ident)*) => {
    /// The optimizers the binding can run: the core's registry.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) enum Algorithm {
      $($O,)*
    }

    impl Algorithm {
      pub(crate) const ALL: &[Algorithm] = &[$(Algorithm::$O,)*];
    }

    /// Runs `$body` with `$O` bound to the core type of `$algorithm`.
    macro_rules! with_optimizer {
      ($d algorithm:expr, $d T:ident => $d body:expr) => {
        match $d algorithm {
          $(crate::Algorithm::$O => {
            type $d T = ::fastoptim_core::$O;
            $d body
          })*
        }
      };
    }
  };
}
fastoptim_core::for_each_optimizer!(define_algorithms!($));
// Path-based, for the modules declared above the definition.
#[allow(clippy::single_component_path_imports)]
pub(crate) use with_optimizer;

impl Algorithm {
  pub(crate) fn name(self) -> &'static str {
    with_optimizer!(self, O => O::NAME)
  }

  /// Whether it takes row-sparse gradients ([`Optimizer::SPARSE`]).
  pub(crate) fn sparse(self) -> bool {
    with_optimizer!(self, O => O::SPARSE)
  }

  fn parse(name: &str) -> std::result::Result<Self, Fail> {
    Algorithm::ALL.iter().copied().find(|a| a.name() == name).ok_or_else(|| {
      let names: Vec<String> = Algorithm::ALL.iter().map(|a| format!("{:?}", a.name())).collect();
      Fail::value(format!("unknown optimizer {name:?} (expected one of {})", names.join(", ")))
    })
  }
}

/// One option of an optimizer, as the facade sees it.
#[napi(object)]
pub struct OptionField {
  /// camelCase, with tuple elements as `betas[0]`.
  pub name: String,
  /// `"number"`, `"boolean"`, `"number?"` (a number or null) or `"choice?"` (one of `choices`,
  /// or null).
  pub kind: String,
  /// The names a `"choice?"` may hold, packed as their index; empty for other kinds.
  pub choices: Vec<String>,
  /// Packed: a flag as 0 or 1, a choice as its index, null as NaN.
  pub default: f64,
  /// What a value must be, as error messages say it.
  pub expected: String,
  /// One line on what it does.
  pub doc: String,
}

/// One state buffer of an optimizer.
#[napi(object)]
pub struct StateBuffer {
  /// PyTorch's `state_dict` name in camelCase.
  pub name: String,
  /// Its shape: `"param"` (the parameter's), `"unfactored"` (the parameter's, for tensors of fewer
  /// than 2 dimensions only), `"rows"` or `"cols"` (the parameter's with its last or
  /// second-to-last dimension 1, for tensors of 2 or more dimensions only).
  pub layout: String,
}

/// An optimizer of the registry: everything the facade, its tests and its documentation need.
#[napi(object)]
pub struct AlgorithmInfo {
  /// PyTorch's class name, which the facade's class takes.
  pub name: String,
  pub summary: String,
  /// The implementation it follows: `torch.optim.Adam`, `lion_pytorch.Lion`, ...
  pub reference: String,
  /// In packed order.
  pub options: Vec<OptionField>,
  pub buffers: Vec<StateBuffer>,
  /// Per-parameter scalars besides `step`, camelCase.
  pub scalars: Vec<String>,
  /// Whether it takes row-sparse gradients `{ indices, values }`, and only those (SparseAdam).
  pub sparse: bool,
  /// Whether it takes matrices (parameters of shape `[rows, cols]`) only (Muon).
  pub matrices: bool,
  /// Whether float32 parameters may keep its state in bfloat16 (`stateDtype: 'bfloat16'`).
  pub bf16_state: bool,
  /// Options that are group state every step advances (Schedule-Free's `k`, `lrMax`, `weightSum`,
  /// `scheduledLr`), camelCase: a step writes their next values into its packed options, and the
  /// facade carries them to its groups.
  pub group_state: Vec<String>,
}

/// Every optimizer of the registry, in its order: the one list the facade builds its classes from.
#[napi]
pub fn algorithms() -> Vec<AlgorithmInfo> {
  Algorithm::ALL.iter().map(|&algorithm| with_optimizer!(algorithm, O => describe::<O>())).collect()
}

fn describe<O: Optimizer>() -> AlgorithmInfo {
  AlgorithmInfo {
    name: O::NAME.into(),
    summary: O::SUMMARY.into(),
    reference: if O::REFERENCE.is_empty() { format!("torch.optim.{}", O::NAME) } else { O::REFERENCE.into() },
    options: O::fields()
      .iter()
      .map(|f| OptionField {
        name: camel_case(f.name),
        kind: match f.kind {
          Kind::Number => "number".into(),
          Kind::Flag => "boolean".into(),
          Kind::OptionalNumber => "number?".into(),
          Kind::OptionalChoice => "choice?".into(),
        },
        choices: match f.rule {
          Rule::OneOf(names) => names.iter().map(|n| n.to_string()).collect(),
          _ => Vec::new(),
        },
        default: f.default,
        expected: f.expectation(&camel_case(f.name)),
        doc: f.doc.into(),
      })
      .collect(),
    buffers: O::BUFFERS
      .iter()
      .map(|b| StateBuffer {
        name: camel_case(b.name),
        layout: match b.layout {
          Layout::Param => "param",
          Layout::Unfactored => "unfactored",
          Layout::Rows => "rows",
          Layout::Cols => "cols",
        }
        .into(),
      })
      .collect(),
    scalars: O::SCALARS.iter().map(|s| camel_case(s)).collect(),
    sparse: O::SPARSE,
    matrices: O::MATRICES,
    bf16_state: O::BF16_STATE,
    group_state: O::GROUP_STATE.iter().map(|s| camel_case(s)).collect(),
  }
}

/// The names of the optimizers whose state may be bfloat16, for messages.
pub(crate) fn bf16_optimizers() -> Vec<&'static str> {
  Algorithm::ALL.iter().filter(|&&a| with_optimizer!(a, O => O::BF16_STATE)).map(|a| a.name()).collect()
}

/// The names of the optimizers that take sparse gradients, for messages.
pub(crate) fn sparse_optimizers() -> Vec<&'static str> {
  Algorithm::ALL.iter().filter(|a| a.sparse()).map(|a| a.name()).collect()
}

/// The largest step count: the largest integer a JavaScript number (and a checkpoint's F64)
/// holds exactly, so that every count a step reaches round-trips through `stateDict`.
pub(crate) const MAX_STEP: u64 = (1 << 53) - 1;

/// The per-parameter state of one optimizer, owned on the native side.
#[napi(custom_finalize)]
pub struct NativeOptimizer {
  pub(crate) algorithm: Algorithm,
  pub(crate) states: Vec<ParamState>,
  /// The step `stepAsync` has started and not finished.
  pub(crate) flight: Option<task::Flight>,
  reader: Reader,
  /// Each parameter's shape as the facade gave it (`None`: flat), by position over all groups.
  pub(crate) shapes: Vec<Option<Box<[usize]>>>,
  /// A `Scratch<O>` for this optimizer's algorithm, made on its first step.
  scratch: Option<AnyScratch>,
  /// Whether the last `stepAsync` to finish read a non-finite gradient element.
  pub(crate) last_non_finite: bool,
  /// Where the `stepAgain` functions bound to this optimizer ([`step_again_of`]) find it; null
  /// once it is finalized. Made by the first binding.
  bound: Option<bound::Cell<NativeOptimizer>>,
  /// The `stateDtype` it was made with, if any: `"float32"` or `"bfloat16"`, for float32
  /// parameters only.
  pub(crate) state_dtype: Option<&'static str>,
  /// Whether new bfloat16 state is rounded stochastically (`stateRounding: 'stochastic'`), not
  /// to nearest.
  pub(crate) stochastic: bool,
}

impl ObjectFinalize for NativeOptimizer {
  fn finalize(mut self, env: Env) -> Result<()> {
    bound::release(&self.bound);
    self.reader.forget(RawEnv(env.raw()));
    Ok(())
  }
}

/// What a step reports (`step`, `stepAgain`, `startStep`).
#[napi]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepReport {
  /// Every gradient element it read was finite.
  Finite,
  /// A gradient held NaN or ±∞; the update went ahead, as PyTorch's does.
  NonFinite,
  /// A gradient held NaN or ±∞ and the step was asked to skip such steps: nothing changed.
  Skipped,
}

#[napi]
impl NativeOptimizer {
  #[napi(constructor)]
  pub fn new(env: Env, algorithm: String) -> Result<Self> {
    let algorithm = Algorithm::parse(&algorithm).map_err(|fail| fail.throw(&env))?;
    Ok(NativeOptimizer {
      algorithm,
      states: Vec::new(),
      flight: None,
      reader: Reader::default(),
      shapes: Vec::new(),
      scratch: None,
      last_non_finite: false,
      bound: None,
      state_dtype: None,
      stochastic: false,
    })
  }

  /// Sets the dtype of the state (the constructor's `stateDtype`), before any state exists:
  /// `"float32"`, or `"bfloat16"` for an optimizer of [`Optimizer::BF16_STATE`]. Either makes a
  /// step refuse float64 parameters.
  #[napi(catch_unwind)]
  pub fn set_state_dtype(&mut self, env: Env, dtype: String) -> Result<()> {
    let name = self.algorithm.name();
    let supported = with_optimizer!(self.algorithm, O => O::BF16_STATE);
    let fail = match dtype.as_str() {
      _ if self.states.iter().any(|s| !s.buffers.is_empty()) => {
        Some(Fail::state(format!("stateDtype can only be set before the first step, got {dtype:?}")))
      }
      "float32" => None,
      "bfloat16" if supported => None,
      "bfloat16" => Some(Fail::value(format!(
        "invalid stateDtype: \"bfloat16\" ({name} keeps its state in the parameters' dtype; bfloat16 state is for \
         {})",
        bf16_optimizers().join(", ")
      ))),
      other => Some(Fail::value(format!("invalid stateDtype: {other:?} (expected \"float32\" or \"bfloat16\")"))),
    };
    if let Some(fail) = fail {
      return Err(fail.throw(&env));
    }
    self.state_dtype = Some(if dtype == "bfloat16" { "bfloat16" } else { "float32" });
    Ok(())
  }

  /// Sets how new bfloat16 state is rounded (the constructor's `stateRounding`), before any state
  /// exists: `"nearest"`, or `"stochastic"`, which needs `stateDtype: "bfloat16"` (set first).
  #[napi(catch_unwind)]
  pub fn set_state_rounding(&mut self, env: Env, rounding: String) -> Result<()> {
    let fail = match rounding.as_str() {
      _ if self.states.iter().any(|s| !s.buffers.is_empty()) => {
        Some(Fail::state(format!("stateRounding can only be set before the first step, got {rounding:?}")))
      }
      "nearest" => None,
      "stochastic" if self.bf16() => None,
      "stochastic" => Some(Fail::value(format!(
        "invalid stateRounding: \"stochastic\" rounds bfloat16 state, but the optimizer keeps its state in {} (expected \
         stateDtype: \"bfloat16\" with it, or stateRounding \"nearest\")",
        match self.state_dtype {
          Some(dtype) => format!("{dtype} (stateDtype {dtype:?})"),
          None => "the parameters' dtype (no stateDtype)".to_string(),
        }
      ))),
      other => Some(Fail::value(format!("invalid stateRounding: {other:?} (expected \"nearest\" or \"stochastic\")"))),
    };
    if let Some(fail) = fail {
      return Err(fail.throw(&env));
    }
    self.stochastic = rounding == "stochastic";
    Ok(())
  }

  /// Sets every parameter's shape, by position over all groups (null for a flat parameter). The
  /// facade has checked that each shape's product is its parameter's length; steps check it again.
  #[napi(catch_unwind)]
  pub fn set_shapes(&mut self, env: Env, shapes: Vec<Option<Vec<u32>>>) -> Result<()> {
    task::check_idle(self, "setShapes()").map_err(|fail| fail.throw(&env))?;
    self.reader.remembered = false;
    self.shapes = shapes.into_iter().map(|s| s.map(|s| s.into_iter().map(|d| d as usize).collect())).collect();
    Ok(())
  }

  /// Checks one group's packed options; throws a RangeError naming the field and `place`
  /// (`options`, `paramGroups[1]`) otherwise.
  #[napi(catch_unwind)]
  pub fn validate_options(&self, env: Env, place: String, packed: &[f64]) -> Result<()> {
    with_optimizer!(self.algorithm, O => O::from_packed(packed).map(drop))
      .map_err(|e| config_fail(&place, &e).throw(&env))
  }

  /// Updates every parameter of `params` whose `grad` is not null; `groupOf[i]` is the group of
  /// `params[i]` and `packed`, a Float64Array, holds each group's options in the order
  /// `algorithms()` lists them. Returns the step's report; a skipped step changed nothing (every
  /// gradient is checked before anything is written). A step that was not skipped writes the
  /// group state it advanced (`GROUP_STATE`: Schedule-Free's `k`, `lrMax`, `weightSum` and
  /// `scheduledLr`) into `packed`, for the facade to carry to its groups. With `seen`, an array,
  /// puts there the arrays the step read: `seen[2i]` is `params[i].data` and `seen[2i + 1]` its
  /// grad, for [`step_again`].
  #[napi(catch_unwind)]
  pub fn step(
    &mut self,
    env: Env,
    params: Unknown,
    group_of: &[u32],
    #[napi(ts_arg_type = "Float64Array")] packed: Unknown,
    seen: Option<Unknown>,
    skip_non_finite: Option<bool>,
  ) -> Result<StepReport> {
    let raw = RawEnv(env.raw());
    let params = params.raw();
    let skip = skip_non_finite.unwrap_or(false);
    let _stepping = bound::Stepping::new(self);
    let result = packed_options(raw, packed.raw(), "step").and_then(|packed| {
      // SAFETY: a Float64Array of this call, attached; no JavaScript runs during the call, and
      // the step reads it before it writes the group state there.
      let packed = unsafe { packed.slice_mut::<f64>() };
      with_optimizer!(self.algorithm, O => self.step_with::<O>(raw, params, group_of, packed, skip))
    });
    let updated = result.map_err(|fail| fail.throw(&env))?;
    if let Some(seen) = seen {
      self.reader.report(raw, seen.raw()).map_err(|fail| fail.throw(&env))?;
    }
    Ok(updated)
  }
}

/// `stepAgainOf(optimizer)`: a function `(packedBuffer, skipNonFinite?, grads?) => report |
/// undefined | null` that steps `optimizer` again over the arrays its last `step` read, without
/// reading the parameters, with the options in `packedBuffer` (the ArrayBuffer of `step`'s
/// `packed`, where it writes the group state as `step` does), and with `grads[i]` as parameter
/// `i`'s gradient where `grads` gives one (undefined where it is the last step's array; each new
/// one checked, [`params::Reader::take_new_grads`]), and reports as `step` does, except that
/// `StepReport.Finite`, a step's usual report, comes back as undefined (making a number is
/// another Node-API call). Whether the parameters still hold those arrays is the caller's business
/// (the facade checks it in JavaScript, where it costs a nanosecond per array instead of the
/// hundreds of nanoseconds of Node-API calls a read takes). Whether the arrays can still be
/// written is checked here, and trusts no caller: the step keeps weak references to the arrays it
/// read, and before writing, each must still be alive, attached, at the same address and of the
/// same length (two Node-API calls per array; no property is read and no JavaScript runs). The
/// function returns `step`'s report, or null, changing nothing, when there is no such step to
/// repeat: none yet, the last read other data arrays than the one before it, the state was loaded
/// or a `stepAsync` ran since, an array of the last step is no longer as it was read (transferred,
/// resized or collected), or a new gradient does not fit. The facade then reads the parameters
/// with `step`, whose errors name what is wrong.
///
/// The function is bound to the optimizer once ([`bound`]), so that a step neither checks the
/// optimizer object's class nor unwraps it (two private-property lookups, a tenth of a 1K step),
/// and allocates nothing.
unsafe extern "C" fn step_again_of_callback(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
  // SAFETY: this callback's own env and info.
  unsafe { bound::of(env, info, "stepAgainOf", step_again_of) }
}

fn step_again_of(env: RawEnv, object: sys::napi_value) -> std::result::Result<sys::napi_value, Fail> {
  // SAFETY: a value of this call, which runs no JavaScript.
  let optimizer = unsafe { unwrap_optimizer(env, object, "stepAgainOf")? };
  let address: *mut NativeOptimizer = optimizer;
  let algorithm = optimizer.algorithm;
  let cell = optimizer.bound.get_or_insert_with(|| Arc::new(AtomicPtr::new(address)));
  // One callback per algorithm, chosen here once: a step then neither reads the optimizer's
  // algorithm nor looks it up in a table, two loads that a training loop finds out of cache.
  with_optimizer!(algorithm, O => bound::bind(env, cell, c"stepAgain", step_again_callback::<O>))
}

/// The function [`step_again_of`] makes for an optimizer of algorithm `O`:
/// `(packedBuffer, skipNonFinite)`.
unsafe extern "C" fn step_again_callback<O: Optimizer>(
  env: sys::napi_env,
  info: sys::napi_callback_info,
) -> sys::napi_value {
  // SAFETY: this callback's env and info, of a function `bind` made for a `NativeOptimizer`.
  let result = match unsafe { bound::args::<NativeOptimizer, 3>(env, info) } {
    Some((argv, argc, optimizer)) if argc >= 1 => {
      // The facade passes the flag only when it is set: asking a value its type and reading it
      // takes several functions of Node's that a training loop finds out of cache.
      let skip = argc >= 2 && RawEnv(env).is_true(argv[1]).unwrap_or(false);
      // The new gradients are taken out of their array before the optimizer is: reading an
      // element may run JavaScript (a getter, a Proxy), which may call into the optimizer or
      // detach arrays; what it did is then checked with everything else, and none runs after.
      // A getter may step another optimizer meanwhile, which finds the vector in use.
      with_scratch(&GRADS, |grads| {
        if argc >= 3 {
          new_grads(RawEnv(env), argv[2], grads)?;
        }
        let grads = (argc >= 3).then_some(&grads[..]);
        bound::enter(optimizer, "stepAgain", |optimizer| step_again::<O>(RawEnv(env), optimizer, argv[0], skip, grads))
      })
    }
    _ => Err(Fail::type_error("stepAgain(packedBuffer, skipNonFinite, grads) takes one to three arguments".into())),
  };
  let mut value = std::ptr::null_mut();
  // SAFETY: creating a value or throwing in this callback's env.
  unsafe {
    match result {
      // Undefined for the common report, which makes no value.
      Ok(Some(StepReport::Finite)) => sys::Status::napi_ok,
      Ok(Some(report)) => sys::napi_create_uint32(env, report as u32, &mut value),
      Ok(None) => sys::napi_get_null(env, &mut value),
      Err(fail) => {
        let _ = fail.throw(&Env::from_raw(env));
        sys::Status::napi_ok
      }
    };
  }
  value
}

/// The `NativeOptimizer` a JavaScript object wraps ([`bound::unwrap`]).
///
/// # Safety
/// As [`bound::unwrap`].
pub(crate) unsafe fn unwrap_optimizer<'a>(
  env: RawEnv,
  object: sys::napi_value,
  what: &str,
) -> std::result::Result<&'a mut NativeOptimizer, Fail> {
  // SAFETY: the caller's guarantees.
  unsafe { bound::unwrap(env, object, what, "NativeOptimizer") }
}

thread_local! {
  /// `stepAgain`'s new gradients, taken out of their array, so that a step allocates nothing.
  static GRADS: std::cell::RefCell<Vec<sys::napi_value>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The elements of `stepAgain`'s `grads` array into `out`, or a TypeError unless it is an array.
fn new_grads(env: RawEnv, grads: sys::napi_value, out: &mut Vec<sys::napi_value>) -> std::result::Result<(), Fail> {
  let count = env
    .array_length(grads)
    .map_err(|_| Fail::type_error("stepAgain: grads must be an array with an entry per parameter".into()))?;
  for index in 0..count {
    out.push(env.element(grads, index as u32)?);
  }
  Ok(())
}

/// [`step_again_callback`]'s step of an optimizer of algorithm `O`, with the parameters' new
/// gradients where `grads` gives them ([`params::Reader::take_new_grads`]).
fn step_again<O: Optimizer>(
  env: RawEnv,
  optimizer: &mut NativeOptimizer,
  packed: sys::napi_value,
  skip_non_finite: bool,
  grads: Option<&[sys::napi_value]>,
) -> std::result::Result<Option<StepReport>, Fail> {
  debug_assert_eq!(O::NAME, optimizer.algorithm.name());
  let packed = packed_buffer(env, packed)?;
  if !optimizer.reader.remembered {
    return Ok(None);
  }
  // SAFETY: an ArrayBuffer of this call, attached, of `packed.1` whole f64s at an address aligned
  // for them (checked); no JavaScript runs during the call, and the step reads it before it writes
  // the group state there.
  let packed = unsafe { std::slice::from_raw_parts_mut(packed.0 as *mut f64, packed.1) };
  optimizer.configure::<O>(packed, "stepAgain()")?;
  // An array of the last step that is no longer as it was read, or a new gradient that does not
  // fit: the caller reads the parameters again (the facade's `step`), which says what is wrong.
  let fits = match grads {
    Some(grads) => optimizer.reader.take_new_grads(env, grads)?,
    None => optimizer.reader.check_remembered(env)?,
  };
  if !fits {
    return Ok(None);
  }
  optimizer.check_step_counts()?;
  let report = optimizer.apply::<O>(skip_non_finite)?;
  optimizer.write_group_state::<O>(report, packed);
  Ok(Some(report))
}

/// Whether two runs of options hold the same numbers, bit for bit (−0 is not 0: scalars computed
/// from them may keep the sign).
pub(crate) fn same_bits(a: &[f64], b: &[f64]) -> bool {
  a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// `stepAgain`'s packed options, given as the ArrayBuffer of the facade's Float64Array (asking a
/// buffer for its memory takes fewer of Node's functions than asking a typed array, which a
/// training loop finds out of cache): its address and how many f64s it holds, or a TypeError
/// unless it is an attached ArrayBuffer of whole, aligned f64s.
fn packed_buffer(env: RawEnv, packed: sys::napi_value) -> std::result::Result<(usize, usize), Fail> {
  match env.array_buffer(packed)? {
    Some((data, bytes))
      if data != 0 && bytes > 0 && bytes.is_multiple_of(8) && data.is_multiple_of(std::mem::align_of::<f64>()) =>
    {
      Ok((data, bytes / 8))
    }
    _ => Err(Fail::type_error(format!(
      "stepAgain: packed must be the ArrayBuffer of a Float64Array of the options, got {}",
      env.describe(packed).unwrap_or_default()
    ))),
  }
}

/// `packed`, a step's packed options: an attached Float64Array, or a TypeError naming `what`.
fn packed_options(env: RawEnv, packed: sys::napi_value, what: &str) -> std::result::Result<TypedView, Fail> {
  match env.float_array(packed)? {
    Some(view) if view.dtype == Dtype::Float64 && !view.detached => Ok(view),
    _ => Err(Fail::type_error(format!("{what}: packed must be a Float64Array"))),
  }
}

#[napi(module_exports)]
pub fn exports(mut exports: Object, env: Env) -> Result<()> {
  js::take_fill(RawEnv(env.raw())).map_err(|fail| fail.throw(&env))?;
  // Registered by hand: the functions they return are too ([`bound`]).
  let by_hand: [(&std::ffi::CStr, bound::Callback); 3] = [
    (c"stepAgainOf", step_again_of_callback),
    (c"eightBitStepOf", eightbit::step_of_callback),
    (c"eightBitStartOf", eightbit::start_of_callback),
  ];
  for (name, callback) in by_hand {
    let mut function = std::ptr::null_mut();
    // SAFETY: the module's env; the callback has the signature Node-API expects.
    check_status!(unsafe {
      sys::napi_create_function(
        env.raw(),
        name.as_ptr(),
        name.count_bytes() as isize,
        Some(callback),
        std::ptr::null_mut(),
        &mut function,
      )
    })?;
    // SAFETY: a function just created in this env.
    exports.set_named_property(&name.to_string_lossy(), unsafe { Unknown::from_raw_unchecked(env.raw(), function) })?;
  }
  Ok(())
}

impl NativeOptimizer {
  /// What every step (`step`, `stepAgain`, `stepAsync`) checks first, once: the thread count is
  /// settled, no `stepAsync` is in flight, and every group's options in `packed` are valid (kept
  /// parsed in the scratch for [`Self::apply`]).
  pub(crate) fn configure<O: Optimizer>(&mut self, packed: &[f64], what: &str) -> std::result::Result<(), Fail> {
    threads::check_configured()?;
    task::check_idle(self, what)?;
    let scratch = self.scratch.get_or_insert_with(AnyScratch::new::<O>);
    let scratch = scratch.get::<O>().expect("one algorithm per optimizer");
    // Options change rarely (a scheduler's lr once a step at most): the same bits as the last
    // parse that succeeded give the same configs, so they are not parsed and checked again.
    if !scratch.parsed.is_empty() && same_bits(packed, &scratch.parsed) {
      return Ok(());
    }
    scratch.parsed.clear();
    parse_configs(packed, &mut scratch.configs)?;
    scratch.parsed.extend_from_slice(packed);
    Ok(())
  }

  /// The options [`Self::configure`] parsed last.
  pub(crate) fn configs<O: Optimizer>(&mut self) -> &[O] {
    let scratch = self.scratch.as_mut().and_then(AnyScratch::get::<O>);
    scratch.map_or(&[], |s| &s.configs)
  }

  /// [`Self::configure`], then reads and checks every parameter of `params` into the reader's
  /// views: the preparation `step` and `stepAsync` share.
  pub(crate) fn prepare<O: Optimizer>(
    &mut self,
    env: RawEnv,
    params: sys::napi_value,
    group_of: &[u32],
    packed: &[f64],
    what: &str,
  ) -> std::result::Result<(), Fail> {
    self.configure::<O>(packed, what)?;
    self.reader.remembered = false;
    let count = env.array_length(params)?;
    if self.states.len() < count {
      self.states.resize_with(count, ParamState::default);
    }
    let groups = self.configs::<O>().len();
    let grads = sparse::Grads { optimizer: O::NAME, sparse: O::SPARSE, matrices: O::MATRICES };
    self.reader.read(env, params, group_of, groups, &self.states, &self.shapes, O::BUFFERS, grads)?;
    self.check_state_dtype(group_of)?;
    self.check_step_counts()
  }

  /// Fails if the optimizer was made with a `stateDtype` and a parameter of the step is float64,
  /// or if a parameter's state is not of the dtype its steps keep (which loading refuses).
  fn check_state_dtype(&self, group_of: &[u32]) -> std::result::Result<(), Fail> {
    for (index, (state, view)) in self.states.iter().zip(&self.reader.views).enumerate() {
      let Some(view) = view else { continue };
      let label = || params::label(group_of, index);
      if let (Some(dtype), Dtype::Float64) = (self.state_dtype, view.data.dtype) {
        return Err(Fail::type_error(format!(
          "{}.data is a Float64Array, but the optimizer was made with stateDtype {dtype:?}, which is for float32 \
           parameters only",
          label()
        )));
      }
      let keeps = if self.bf16() { "bfloat16" } else { view.data.dtype.name() };
      if let Some(held) = state.buffers.name().filter(|&held| held != keeps) {
        return Err(Fail::type_error(format!(
          "{}: its optimizer state is {held}, but its steps keep {keeps}",
          label()
        )));
      }
    }
    Ok(())
  }

  /// Whether float32 parameters keep bfloat16 state.
  pub(crate) fn bf16(&self) -> bool {
    self.state_dtype == Some("bfloat16")
  }

  /// Fails if a parameter the step would update has reached [`MAX_STEP`]: one more step would
  /// give a count that a number no longer holds exactly and that `loadStateDict` refuses.
  pub(crate) fn check_step_counts(&self) -> std::result::Result<(), Fail> {
    let full = self.states.iter().zip(&self.reader.views).position(|(s, v)| v.is_some() && s.step >= MAX_STEP);
    match full {
      Some(index) => Err(Fail::range(format!(
        "parameter {index} (counting over all groups) has taken 2^53 - 1 steps, the most a step count \
         holds exactly; it cannot step again"
      ))),
      None => Ok(()),
    }
  }

  fn step_with<O: Optimizer>(
    &mut self,
    env: RawEnv,
    params: sys::napi_value,
    group_of: &[u32],
    packed: &mut [f64],
    skip_non_finite: bool,
  ) -> std::result::Result<StepReport, Fail> {
    self.prepare::<O>(env, params, group_of, packed, "step()")?;
    // A sparse gradient is read again at every step (see `Reader::report`). The arrays are
    // remembered from the second step that reads the same data on, also where the gradients are
    // new arrays: a training loop that hands over new ones at every step (fastoptim/tfjs does)
    // steps again with them (`step_again`'s `grads`).
    let remember = self.reader.data_repeated && !self.reader.any_sparse();
    if remember {
      self.reader.remember(env)?;
    }
    let report = self.apply::<O>(skip_non_finite)?;
    self.reader.remembered = remember;
    self.write_group_state::<O>(report, packed);
    Ok(report)
  }

  /// After a step that went through, writes each group's advanced state into the packed options
  /// it stepped with ([`write_group_state`]); a skipped step advanced nothing.
  fn write_group_state<O: Optimizer>(&mut self, report: StepReport, packed: &mut [f64]) {
    if report != StepReport::Skipped {
      write_group_state(self.configs::<O>(), packed);
    }
  }

  /// Steps the parameters [`Reader::views`] holds with the options [`Self::configure`] parsed.
  fn apply<O: Optimizer>(&mut self, skip_non_finite: bool) -> std::result::Result<StepReport, Fail> {
    let bf16 = self.bf16();
    let scratch = self.scratch.as_mut().and_then(AnyScratch::get::<O>).expect("configured");
    if self.reader.views.iter().flatten().any(|view| view.group >= scratch.configs.len()) {
      return Err(Fail::value(format!(
        "packed options hold {} groups, fewer than the parameters use",
        scratch.configs.len()
      )));
    }
    if skip_non_finite && !grads_finite(&self.reader.views) {
      return Ok(StepReport::Skipped);
    }
    let (mut jobs32, mut jobs64) = (lend(&mut scratch.jobs32), lend(&mut scratch.jobs64));
    let mut jobs_bf16 = lend(&mut scratch.jobs_bf16);
    let (mut sparse32, mut sparse64) = (lend(&mut scratch.sparse32), lend(&mut scratch.sparse64));
    let mut memo: Option<(usize, u64, O::Coeffs)> = None;
    let stochastic = self.stochastic;
    for (index, (state, view)) in self.states.iter_mut().zip(&self.reader.views).enumerate() {
      let Some(view) = view else { continue };
      let config = scratch.configs[view.group];
      let coeffs = advance(&config, state, view.group, &mut memo);
      match (view.data.dtype, view.sparse.is_some()) {
        (Dtype::Float32, false) if bf16 => {
          let rounding = rounding_of(stochastic, index, state.step);
          jobs_bf16.push(Job { rounding, ..job::<O, f32, Bf16>(coeffs, state, view, config.buffers_used()) })
        }
        (Dtype::Float32, false) => jobs32.push(job::<O, f32, f32>(coeffs, state, view, config.buffers_used())),
        (Dtype::Float64, false) => jobs64.push(job::<O, f64, f64>(coeffs, state, view, config.buffers_used())),
        (Dtype::Float32, true) => sparse32.push(sparse_job::<O, f32>(coeffs, state, view, config.buffers_used())),
        (Dtype::Float64, true) => sparse64.push(sparse_job::<O, f64>(coeffs, state, view, config.buffers_used())),
      }
    }
    let non_finite = run::<O, f32>(&mut jobs32)
      | run::<O, f64>(&mut jobs64)
      | run_bf16::<O>(&mut jobs_bf16)
      | run_sparse::<O, f32>(&mut sparse32)
      | run_sparse::<O, f64>(&mut sparse64);
    give_back(&mut scratch.jobs32, jobs32);
    give_back(&mut scratch.jobs64, jobs64);
    give_back(&mut scratch.jobs_bf16, jobs_bf16);
    give_back(&mut scratch.sparse32, sparse32);
    give_back(&mut scratch.sparse64, sparse64);
    Ok(if non_finite { StepReport::NonFinite } else { StepReport::Finite })
  }
}

/// Whether every element of every gradient of `views` is finite: the check a step that skips
/// non-finite gradients makes before it writes anything (one more read of the gradients).
pub(crate) fn grads_finite(views: &[Option<ParamView>]) -> bool {
  views.iter().flatten().all(|view| {
    // SAFETY: read in this call (or checked again by `step_again`), attached, `len` elements of
    // the view's dtype; only read, and nothing writes it during the call. A sparse gradient's
    // coalesced values (its sums may overflow where its parts did not) are of this read too.
    unsafe {
      match (view.grad.dtype, &view.sparse) {
        (Dtype::Float32, None) => all_finite([view.grad.slice::<f32>()]),
        (Dtype::Float64, None) => all_finite([view.grad.slice::<f64>()]),
        (Dtype::Float32, Some(sparse)) => all_finite([sparse.parts::<f32>().1]),
        (Dtype::Float64, Some(sparse)) => all_finite([sparse.parts::<f64>().1]),
      }
    }
  })
}

/// Per-step buffers kept between steps, for the optimizer's algorithm `O`.
struct Scratch<O: Optimizer> {
  configs: Vec<O>,
  /// The packed options `configs` were parsed from (empty when they are not valid).
  parsed: Vec<f64>,
  jobs32: Vec<Job<'static, f32, O::Coeffs>>,
  jobs64: Vec<Job<'static, f64, O::Coeffs>>,
  jobs_bf16: Vec<Job<'static, f32, O::Coeffs, Bf16>>,
  sparse32: Vec<SparseJob<'static, f32, O::Coeffs>>,
  sparse64: Vec<SparseJob<'static, f64, O::Coeffs>>,
}

impl<O: Optimizer> Default for Scratch<O> {
  fn default() -> Self {
    Scratch {
      configs: Vec::new(),
      parsed: Vec::new(),
      jobs32: Vec::new(),
      jobs64: Vec::new(),
      jobs_bf16: Vec::new(),
      sparse32: Vec::new(),
      sparse64: Vec::new(),
    }
  }
}

/// The `Scratch<O>` of an algorithm chosen at run time, with its type's id kept beside it: finding
/// it compares two numbers, where `Box<dyn Any>::downcast_mut` asks the box through its vtable,
/// which a step in a training loop finds out of cache.
struct AnyScratch {
  id: std::any::TypeId,
  boxed: Box<dyn std::any::Any>,
}

impl AnyScratch {
  fn new<O: Optimizer>() -> Self {
    AnyScratch { id: std::any::TypeId::of::<Scratch<O>>(), boxed: Box::new(Scratch::<O>::default()) }
  }

  /// The scratch, if it is algorithm `O`'s.
  fn get<O: Optimizer>(&mut self) -> Option<&mut Scratch<O>> {
    if self.id != std::any::TypeId::of::<Scratch<O>>() {
      return None;
    }
    // SAFETY: `new` made `boxed` a `Scratch<O>` and `id` that type's id, and neither changes.
    Some(unsafe { &mut *(self.boxed.as_mut() as *mut dyn std::any::Any).cast::<Scratch<O>>() })
  }
}

/// Every group's options from `packed`, validated, into `configs`.
pub(crate) fn parse_configs<O: Optimizer>(packed: &[f64], configs: &mut Vec<O>) -> std::result::Result<(), Fail> {
  let width = O::fields().len();
  if width == 0 || !packed.len().is_multiple_of(width) {
    return Err(Fail::value(format!("packed options hold {} values, not a multiple of {width}", packed.len())));
  }
  configs.clear();
  for (group, values) in packed.chunks(width).enumerate() {
    configs.push(O::from_packed(values).map_err(|e| config_fail(&format!("paramGroups[{group}]"), &e))?);
  }
  Ok(())
}

/// Advances one parameter's step count and state and returns the scalars of its update;
/// `memo` saves recomputing them for the next parameter of the same group and step count.
pub(crate) fn advance<O: Optimizer>(
  config: &O,
  state: &mut ParamState,
  group: usize,
  memo: &mut Option<(usize, u64, O::Coeffs)>,
) -> O::Coeffs {
  state.step += 1;
  let mut coeffs = match *memo {
    Some((g, step, coeffs)) if g == group && step == state.step => coeffs,
    _ => {
      let coeffs = config.coeffs(state.step);
      *memo = Some((group, state.step, coeffs));
      coeffs
    }
  };
  config.advance(&mut coeffs, state);
  coeffs
}

/// A job of a step, dense or sparse, whatever it borrows for: what [`lend`] and [`give_back`] keep.
pub(crate) trait Lent<'a> {
  type At<'b>;
}

impl<'a, T: 'static, C: 'static, S: 'static> Lent<'a> for Job<'a, T, C, S> {
  type At<'b> = Job<'b, T, C, S>;
}

impl<'a, T: 'static, C: 'static> Lent<'a> for SparseJob<'a, T, C> {
  type At<'b> = SparseJob<'b, T, C>;
}

/// An empty vector of jobs that borrow for `'a`, in the allocation `storage` kept.
pub(crate) fn lend<'a, J: Lent<'static>>(storage: &mut Vec<J>) -> Vec<J::At<'a>> {
  let mut jobs = std::mem::ManuallyDrop::new(std::mem::take(storage));
  jobs.clear();
  // SAFETY: `J` and `J::At<'a>` are one job type that differs only in a lifetime, so they have the
  // same layout, and the vector is empty, so no element claims either lifetime.
  unsafe { Vec::from_raw_parts(jobs.as_mut_ptr().cast(), 0, jobs.capacity()) }
}

/// Keeps the allocation of `jobs`, emptied, in `storage` for the next step.
pub(crate) fn give_back<'a, J: Lent<'static>>(storage: &mut Vec<J>, jobs: Vec<J::At<'a>>) {
  let mut jobs = std::mem::ManuallyDrop::new(jobs);
  jobs.clear();
  // SAFETY: as in `lend`.
  *storage = unsafe { Vec::from_raw_parts(jobs.as_mut_ptr().cast(), 0, jobs.capacity()) };
}

fn job<'a, O: Optimizer, T: Element, S: Stored>(
  coeffs: O::Coeffs,
  state: &'a mut ParamState,
  view: &ParamView,
  buffers: usize,
) -> Job<'a, T, O::Coeffs, S> {
  // SAFETY: both arrays were read in this call (or, for `step_again`, checked again in it to be
  // the same arrays, attached, at the same address and of the same length), have `len` elements of
  // `T` (checked dtype), and the reader proved that no parameter's data overlaps any other array
  // of the step, so the mutable slices alias nothing. The JS thread is blocked in this call and no
  // JavaScript has run since the arrays were checked, so nothing else touches the memory.
  let (param, grad) = unsafe { (view.data.slice_mut::<T>(), view.grad.slice::<T>()) };
  let (buffers, partials) = state.step_parts::<S>(&buffer_lens::<O>(view.dims), buffers, O::partials_len(view.dims));
  Job::new(coeffs, param, grad, buffers, view.dims, partials)
}

/// How the new bfloat16 state of parameter `index` (over all groups) is rounded at its step
/// `step`: stochastically, with bits of that parameter and step ([`Rounding::stochastic`]), or to
/// nearest.
pub(crate) fn rounding_of(stochastic: bool, index: usize, step: u64) -> Rounding {
  if stochastic {
    Rounding::stochastic(index, step)
  } else {
    Rounding::Nearest
  }
}

fn sparse_job<'a, O: Optimizer, T: Element>(
  coeffs: O::Coeffs,
  state: &'a mut ParamState,
  view: &ParamView,
  buffers: usize,
) -> SparseJob<'a, T, O::Coeffs> {
  let sparse = view.sparse.as_ref().expect("a sparse gradient");
  // SAFETY: as in `job`; the rows and values are the reader's of this call (its scratch, or the
  // gradient's arrays, attached and overlapping no parameter's data).
  let (param, (rows, values)) = unsafe { (view.data.slice_mut::<T>(), sparse.parts::<T>()) };
  let buffers = state.buffers_mut::<T>(&buffer_lens::<O>(view.dims), buffers);
  SparseJob { coeffs, param, row_len: sparse.row_len, rows, values, buffers }
}

fn config_fail(place: &str, error: &ConfigError) -> Fail {
  let message = format!("{} in {place}", error.describe(camel_case));
  match error {
    ConfigError::OutOfRange { .. } => Fail::range(message),
    _ => Fail::value(message),
  }
}
