//! Node-API binding of fastoptim-core.
//!
//! It holds no math: it reads the caller's parameters (typed arrays borrowed in place, never
//! copied), checks what only it can see (array types, lengths, detached or overlapping memory),
//! and hands slices to the core. Everything is checked before anything is written, so a step
//! updates every parameter or none.

mod clip;
mod js;
mod state_io;

use fastoptim_core::config::{Field, Kind};
use fastoptim_core::{run, ConfigError, Dtype, Element, Job, Optimizer, ParamState, StateMismatch};
use napi::bindgen_prelude::*;
use napi::sys;
use napi_derive::napi;

use js::{camel_case, Fail, RawEnv, TypedView};

/// The optimizers the binding can run, by their facade names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Algorithm {
  Adam,
  AdamW,
  Sgd,
  RMSprop,
  Adagrad,
  Adamax,
  NAdam,
  RAdam,
}

impl Algorithm {
  fn parse(name: &str) -> std::result::Result<Self, Fail> {
    match name {
      "Adam" => Ok(Algorithm::Adam),
      "AdamW" => Ok(Algorithm::AdamW),
      "SGD" => Ok(Algorithm::Sgd),
      "RMSprop" => Ok(Algorithm::RMSprop),
      "Adagrad" => Ok(Algorithm::Adagrad),
      "Adamax" => Ok(Algorithm::Adamax),
      "NAdam" => Ok(Algorithm::NAdam),
      "RAdam" => Ok(Algorithm::RAdam),
      other => Err(Fail::value(format!(
        "unknown optimizer {other:?} (expected one of \"Adam\", \"AdamW\", \"SGD\", \"RMSprop\", \"Adagrad\", \"Adamax\", \"NAdam\", \"RAdam\")"
      ))),
    }
  }
}

/// Runs `$body` with `$O` bound to the core type of `$algorithm`.
macro_rules! with_optimizer {
  ($algorithm:expr, $O:ident => $body:expr) => {
    match $algorithm {
      Algorithm::Adam => {
        type $O = ::fastoptim_core::Adam;
        $body
      }
      Algorithm::AdamW => {
        type $O = ::fastoptim_core::AdamW;
        $body
      }
      Algorithm::Sgd => {
        type $O = ::fastoptim_core::Sgd;
        $body
      }
      Algorithm::RMSprop => {
        type $O = ::fastoptim_core::RMSprop;
        $body
      }
      Algorithm::Adagrad => {
        type $O = ::fastoptim_core::Adagrad;
        $body
      }
      Algorithm::Adamax => {
        type $O = ::fastoptim_core::Adamax;
        $body
      }
      Algorithm::NAdam => {
        type $O = ::fastoptim_core::NAdam;
        $body
      }
      Algorithm::RAdam => {
        type $O = ::fastoptim_core::RAdam;
        $body
      }
    }
  };
}
pub(crate) use with_optimizer;

/// One option of an optimizer, as the facade sees it.
#[napi(object)]
pub struct OptionField {
  /// camelCase, with tuple elements as `betas[0]`.
  pub name: String,
  /// `"number"` or `"boolean"`.
  pub kind: String,
  pub default: f64,
}

/// The options of `algorithm` in packed order, with PyTorch's defaults: the one place defaults live.
#[napi]
pub fn option_fields(algorithm: String) -> Result<Vec<OptionField>> {
  let algorithm = Algorithm::parse(&algorithm).map_err(Fail::into_plain)?;
  let fields: &[Field] = with_optimizer!(algorithm, O => O::FIELDS);
  Ok(
    fields
      .iter()
      .map(|f| OptionField {
        name: camel_case(f.name),
        kind: match f.kind {
          Kind::Number => "number".into(),
          Kind::Flag => "boolean".into(),
        },
        default: f.default,
      })
      .collect(),
  )
}

/// The per-parameter state of one optimizer, owned on the native side.
#[napi]
pub struct NativeOptimizer {
  pub(crate) algorithm: Algorithm,
  pub(crate) states: Vec<ParamState>,
}

#[napi]
impl NativeOptimizer {
  #[napi(constructor)]
  pub fn new(env: Env, algorithm: String) -> Result<Self> {
    let algorithm = Algorithm::parse(&algorithm).map_err(|fail| fail.throw(&env))?;
    Ok(NativeOptimizer { algorithm, states: Vec::new() })
  }

  /// Checks one group's packed options; throws a RangeError naming the field and `place`
  /// (`options`, `paramGroups[1]`) otherwise.
  #[napi(catch_unwind)]
  pub fn validate_options(&self, env: Env, place: String, packed: &[f64]) -> Result<()> {
    with_optimizer!(self.algorithm, O => O::from_packed(packed).map(drop))
      .map_err(|e| config_fail(&place, &e).throw(&env))
  }

  /// Updates every parameter of `params` whose `grad` is not null; `groupOf[i]` is the group of
  /// `params[i]` and `packed` holds each group's options in `optionFields` order. Returns how
  /// many parameters were updated.
  #[napi(catch_unwind)]
  pub fn step(&mut self, env: Env, params: Unknown, group_of: &[u32], packed: &[f64]) -> Result<u32> {
    let raw = RawEnv(env.raw());
    let params = params.raw();
    let result = with_optimizer!(self.algorithm, O => self.step_with::<O>(raw, params, group_of, packed));
    result.map_err(|fail| fail.throw(&env))
  }
}

/// A parameter as read at step time, before anything is written.
struct ParamView {
  group: usize,
  data: TypedView,
  grad: TypedView,
  values: [sys::napi_value; 2],
}

impl NativeOptimizer {
  fn step_with<O: Optimizer>(
    &mut self,
    env: RawEnv,
    params: sys::napi_value,
    group_of: &[u32],
    packed: &[f64],
  ) -> std::result::Result<u32, Fail> {
    let width = O::FIELDS.len();
    if !packed.len().is_multiple_of(width) {
      return Err(Fail::value(format!("packed options hold {} values, not a multiple of {width}", packed.len())));
    }
    let configs = packed
      .chunks(width)
      .enumerate()
      .map(|(group, values)| O::from_packed(values).map_err(|e| config_fail(&format!("paramGroups[{group}]"), &e)))
      .collect::<std::result::Result<Vec<O>, Fail>>()?;

    let count = env.array_length(params)?;
    if group_of.len() != count {
      return Err(Fail::value(format!("groupOf has {} entries for {count} parameters", group_of.len())));
    }
    if self.states.len() < count {
      self.states.resize_with(count, ParamState::default);
    }
    let views = self.read_params(env, params, group_of, configs.len())?;
    recheck(env, &views)?;
    check_disjoint(&views, group_of)?;

    let mut jobs32: Vec<Job<'_, f32, O::Coeffs>> = Vec::new();
    let mut jobs64: Vec<Job<'_, f64, O::Coeffs>> = Vec::new();
    let mut memo: Option<(usize, u64, O::Coeffs)> = None;
    let mut updated = 0;
    for (state, view) in self.states.iter_mut().zip(views) {
      let Some(view) = view else { continue };
      let config = configs[view.group];
      state.step += 1;
      let mut coeffs = match memo {
        Some((group, step, coeffs)) if group == view.group && step == state.step => coeffs,
        _ => {
          let coeffs = config.coeffs(state.step);
          memo = Some((view.group, state.step, coeffs));
          coeffs
        }
      };
      config.advance(&mut coeffs, state);
      updated += 1;
      match view.data.dtype {
        Dtype::Float32 => jobs32.push(job(coeffs, state, &view, config.buffers_used())),
        Dtype::Float64 => jobs64.push(job(coeffs, state, &view, config.buffers_used())),
      }
    }
    run::<O, f32>(&mut jobs32);
    run::<O, f64>(&mut jobs64);
    Ok(updated)
  }

  /// Reads `.data` and `.grad` of every parameter and checks them against each other and against
  /// the state; `None` for a parameter whose grad is null or undefined.
  fn read_params(
    &self,
    env: RawEnv,
    params: sys::napi_value,
    group_of: &[u32],
    groups: usize,
  ) -> std::result::Result<Vec<Option<ParamView>>, Fail> {
    let mut first_of_group = vec![usize::MAX; groups];
    let mut views = Vec::with_capacity(group_of.len());
    for (index, &group) in group_of.iter().enumerate() {
      let group = group as usize;
      if group >= groups {
        return Err(Fail::value(format!("groupOf[{index}] is {group}, but there are {groups} groups")));
      }
      if first_of_group[group] == usize::MAX {
        first_of_group[group] = index;
      }
      let label = format!("paramGroups[{group}].params[{}]", index - first_of_group[group]);
      let param = env.element(params, index as u32)?;
      if !env.is_object(param)? {
        return Err(Fail::type_error(format!(
          "{label} must be an object with data and grad, got {}",
          env.describe(param)?
        )));
      }
      let data_value = env.property(param, c"data")?;
      let data = env.float_array(data_value)?.ok_or_else(|| {
        Fail::type_error(format!(
          "{label}.data must be a Float32Array or Float64Array, got {}",
          env.describe(data_value).unwrap_or_default()
        ))
      })?;
      if data.detached {
        return Err(Fail::state(format!("{label}.data is detached (its ArrayBuffer was transferred)")));
      }
      let grad_value = env.property(param, c"grad")?;
      if env.is_nullish(grad_value)? {
        views.push(None);
        continue;
      }
      let grad = env.float_array(grad_value)?.ok_or_else(|| {
        Fail::type_error(format!(
          "{label}.grad must be a {} like its data, or null, got {}",
          data.type_name(),
          env.describe(grad_value).unwrap_or_default()
        ))
      })?;
      if grad.detached {
        return Err(Fail::state(format!("{label}.grad is detached (its ArrayBuffer was transferred)")));
      }
      if grad.dtype != data.dtype {
        return Err(Fail::type_error(format!(
          "{label}.grad must be a {} like its data, got {}",
          data.type_name(),
          grad.type_name()
        )));
      }
      if grad.len != data.len {
        return Err(Fail::range(format!("{label}.grad has length {}, expected {} like its data", grad.len, data.len)));
      }
      match self.states[index].check(data.dtype, data.len) {
        Ok(()) => {}
        Err(StateMismatch::Dtype { state, .. }) => {
          return Err(Fail::type_error(format!(
            "{label}.data is a {}, but its optimizer state is {}",
            data.type_name(),
            state.name()
          )));
        }
        Err(StateMismatch::Length { state, param }) => {
          return Err(Fail::range(format!(
            "{label}.data has length {param}, but its optimizer state has length {state}"
          )));
        }
      }
      views.push(Some(ParamView { group, data, grad, values: [data_value, grad_value] }));
    }
    Ok(views)
  }
}

/// Reading `.data` or `.grad` may run a getter, and a getter may transfer an array read before
/// it. Once all reads are done no JavaScript runs until the step returns, so checking every array
/// again here makes the views final.
fn recheck(env: RawEnv, views: &[Option<ParamView>]) -> std::result::Result<(), Fail> {
  for view in views.iter().flatten() {
    for (value, before) in view.values.iter().zip([&view.data, &view.grad]) {
      let now = env.float_array(*value)?;
      let same = now.is_some_and(|now| !now.detached && now.address() == before.address() && now.len == before.len);
      if !same {
        return Err(Fail::state(
          "a parameter's array was detached or replaced while the step read its parameters".into(),
        ));
      }
    }
  }
  Ok(())
}

fn job<'a, T: Element, C>(coeffs: C, state: &'a mut ParamState, view: &ParamView, buffers: usize) -> Job<'a, T, C> {
  // SAFETY: both arrays were read in this call, are not detached, have `len` elements of `T`
  // (checked dtype), and `check_disjoint` proved that no parameter's data overlaps any other
  // array of the step, so the mutable slices alias nothing. The JS thread is blocked in this
  // call, so nothing else can touch the memory until it returns.
  let (param, grad) = unsafe { (view.data.slice_mut::<T>(), view.grad.slice::<T>()) };
  Job { coeffs, param, grad, buffers: state.buffers_mut::<T>(view.data.len, buffers) }
}

/// Fails if any parameter's data shares memory with another parameter's data or with any grad.
/// Grads may share memory with each other: they are only read.
fn check_disjoint(views: &[Option<ParamView>], group_of: &[u32]) -> std::result::Result<(), Fail> {
  struct Span {
    start: usize,
    end: usize,
    writable: bool,
    param: usize,
  }
  let mut spans: Vec<Span> = Vec::with_capacity(views.len() * 2);
  for (param, view) in views.iter().enumerate() {
    let Some(view) = view else { continue };
    for (array, writable) in [(&view.data, true), (&view.grad, false)] {
      if array.byte_len() > 0 {
        spans.push(Span { start: array.address(), end: array.address() + array.byte_len(), writable, param });
      }
    }
  }
  spans.sort_unstable_by_key(|s| s.start);
  let label = |span: &Span| {
    let field = if span.writable { "data" } else { "grad" };
    let group = group_of[span.param] as usize;
    let local = span.param - group_of.iter().position(|&g| g as usize == group).unwrap_or(0);
    format!("paramGroups[{group}].params[{local}].{field}")
  };
  let (mut any, mut writable): (Option<&Span>, Option<&Span>) = (None, None);
  for span in &spans {
    let clash = match (writable, any) {
      (Some(w), _) if span.start < w.end => Some(w),
      (_, Some(a)) if span.writable && span.start < a.end => Some(a),
      _ => None,
    };
    if let Some(other) = clash {
      return Err(Fail::value(format!(
        "{} and {} share memory; a parameter's data must not overlap any other array of the step",
        label(other),
        label(span)
      )));
    }
    if any.is_none_or(|a| span.end > a.end) {
      any = Some(span);
    }
    if span.writable && writable.is_none_or(|w| span.end > w.end) {
      writable = Some(span);
    }
  }
  Ok(())
}

fn config_fail(place: &str, error: &ConfigError) -> Fail {
  let message = format!("{} in {place}", error.describe(camel_case));
  match error {
    ConfigError::OutOfRange { .. } => Fail::range(message),
    _ => Fail::value(message),
  }
}
