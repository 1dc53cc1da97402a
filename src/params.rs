//! Reading a step's parameters from JavaScript, for `step` and `stepAsync` alike.
//!
//! Two passes. The first reads `.data` and `.grad` of every parameter; a getter or a proxy may
//! run JavaScript there, and that JavaScript may detach or shrink an array read before it. The
//! first pass also takes a first look at each array (its length; for an empty one, whether it is
//! out of bounds, which only a call into the engine can tell). The second takes each array's
//! memory and checks it; nothing in it can run JavaScript, so what it sees is final until the step
//! returns (for `stepAsync`, see `task.rs`). An array that reads as empty there is refused if the
//! first look found it out of bounds, or with elements (it shrank while the first pass ran), or if
//! it now starts past its buffer's end. A steady-state step
//! allocates nothing here: the buffers are kept between steps, and the overlap check is skipped
//! when every array is where it was at the last step that passed it.

use fastoptim_core::{Buffer, Dims, Layout, ParamState, StateMismatch, MAX_BUFFERS};
use napi::sys;

use crate::disjoint::{find_overlap, step_message, Span};
use crate::js::{Fail, RawEnv, TypedView};
use crate::sparse::{Coalescer, Grads, SparseView};

/// One parameter as the second pass saw it.
pub(crate) struct ParamView {
  pub group: usize,
  pub data: TypedView,
  /// The gradient; for a sparse one, its `values` as given.
  pub grad: TypedView,
  /// A sparse gradient, checked and coalesced ([`crate::sparse`]).
  pub sparse: Option<SparseView>,
  /// Its shape's dimensions (flat when it has none).
  pub dims: Dims,
  /// The JavaScript arrays, valid during the call that read them.
  pub values: [sys::napi_value; 2],
}

/// What reading a step needs between calls, so that steady-state steps allocate nothing.
#[derive(Default)]
pub(crate) struct Reader {
  values: Vec<[sys::napi_value; 2]>,
  /// `grad.indices` and `grad.values` of each parameter whose grad may be sparse (an object that
  /// is not a typed array, for an optimizer of sparse gradients).
  fields: Vec<Option<[sys::napi_value; 2]>>,
  /// Per parameter, where its sparse gradient is coalesced.
  coalescers: Vec<Coalescer>,
  /// `None` for a parameter whose `grad` is null or undefined.
  pub views: Vec<Option<ParamView>>,
  /// Address and byte length of every array of the last step whose arrays were proven disjoint,
  /// in parameter order (data, grad, a sparse grad's indices); `(0, 0)` where there is none.
  disjoint: Vec<(usize, usize)>,
  layout: Vec<(usize, usize)>,
  /// The first pass's look at each parameter's data and grad.
  looks: Vec<[Look; 2]>,
  /// Whether [`Self::views`] are those of the last synchronous step, for `step_again`.
  pub remembered: bool,
  /// Weak references to the arrays of [`Self::views`] (data and grad of each parameter; null
  /// where it has none), made by [`Self::remember`], by which `step_again` checks that they are
  /// still the arrays read, attached, where they were.
  refs: Vec<sys::napi_ref>,
  /// The ArrayBuffer of each array of `refs` as [`Self::remember`] saw it, for the quick check.
  held: Vec<Held>,
  /// The `groupOf` of the last read, to name parameters.
  group_of: Vec<u32>,
  /// Whether the last read found every parameter's data where the read before it did: a step
  /// whose arrays are worth remembering, also where its gradients are new at every step (as
  /// fastoptim/tfjs hands them over): later steps then take only those ([`Self::take_new_grads`]).
  pub data_repeated: bool,
  /// The remembered data arrays' byte ranges, sorted by address (they are disjoint), against which
  /// [`Self::take_new_grads`] checks each new gradient.
  data_spans: Vec<(usize, usize)>,
  /// The gradients [`Self::take_new_grads`] has checked, before it takes them.
  new_grads: Vec<(usize, TypedView, sys::napi_value)>,
}

/// An array's ArrayBuffer as [`Reader::remember`] saw it: a weak reference to it (null where it
/// is not an ordinary ArrayBuffer, or the array has none), its data address and byte length.
/// A view never changes its buffer, offset or type, and a view that tracks its buffer's length
/// keeps it while the buffer keeps its own; detaching a buffer makes it empty, and resizing one
/// changes its length. So while the buffer is alive with the same data address and byte length,
/// the array is attached, where it was and of its length, which one Node-API call on the buffer
/// tells, where the array itself takes a longer one.
#[derive(Clone, Copy)]
struct Held {
  reference: sys::napi_ref,
  data: usize,
  byte_len: usize,
}

impl Held {
  const NONE: Held = Held { reference: std::ptr::null_mut(), data: 0, byte_len: 0 };
}

/// What the first pass saw of an array.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Look {
  /// Not a Float32Array or Float64Array, or detached: the second pass says what is wrong.
  Other,
  /// Attached, with this many elements.
  Len(usize),
  /// Attached, reading as empty, but out of bounds: its resizable buffer shrank below it.
  OutOfBounds,
}

fn look(env: RawEnv, value: sys::napi_value) -> Result<Look, Fail> {
  Ok(match env.float_array(value)? {
    Some(view) if view.detached => Look::Other,
    Some(view) if view.len == 0 && env.out_of_bounds(value)? => Look::OutOfBounds,
    Some(view) => Look::Len(view.len),
    None => Look::Other,
  })
}

/// Fails for an attached array that the second pass sees as empty but that is not one: out of
/// bounds at the first look, shrunk from elements since, or now starting past its buffer's end.
fn check_in_bounds(
  env: RawEnv,
  value: sys::napi_value,
  now: &TypedView,
  first: Look,
  what: impl Fn() -> String,
) -> Result<(), Fail> {
  if now.len > 0 {
    return Ok(());
  }
  let shrunk = match first {
    Look::OutOfBounds => true,
    Look::Len(n) => n > 0 || env.beyond_buffer(value)?,
    Look::Other => env.beyond_buffer(value)?,
  };
  if shrunk {
    return Err(Fail::state(format!("{} is out of bounds (its resizable ArrayBuffer shrank below it)", what())));
  }
  Ok(())
}

impl Reader {
  /// Reads and checks every parameter of `params` (types, lengths, detached memory, agreement
  /// with its shape in `shapes` and with its state in `states`, whose buffers `buffers` lays out,
  /// no parameter's data sharing memory with another array, gradients of the kind `grads` says,
  /// sparse ones checked and coalesced) into [`Self::views`].
  #[allow(clippy::too_many_arguments)]
  pub fn read(
    &mut self,
    env: RawEnv,
    params: sys::napi_value,
    group_of: &[u32],
    groups: usize,
    states: &[ParamState],
    shapes: &[Option<Box<[usize]>>],
    buffers: &[Buffer],
    grads: Grads,
  ) -> Result<(), Fail> {
    let count = env.array_length(params)?;
    if group_of.len() != count {
      return Err(Fail::value(format!("groupOf has {} entries for {count} parameters", group_of.len())));
    }
    if let Some(index) = group_of.iter().position(|&g| g as usize >= groups) {
      return Err(Fail::value(format!("groupOf[{index}] is {}, but there are {groups} groups", group_of[index])));
    }
    let label = |index: usize| label(group_of, index);

    // First pass: JavaScript may run.
    let (data_key, grad_key) = (env.string(c"data")?, env.string(c"grad")?);
    self.values.clear();
    self.fields.clear();
    self.looks.clear();
    self.group_of.clear();
    self.group_of.extend_from_slice(group_of);
    let mut sparse_keys = None;
    for index in 0..count {
      let param = env.element(params, index as u32)?;
      if !env.is_object(param)? {
        return Err(Fail::type_error(format!(
          "{} must be an object with data and grad, got {}",
          label(index),
          env.describe(param)?
        )));
      }
      let grad = env.get(param, grad_key)?;
      let data = env.get(param, data_key)?;
      self.values.push([data, grad]);
      self.looks.push([look(env, data)?, look(env, grad)?]);
      // An optimizer of sparse gradients reads `indices` and `values` here, where getters may run.
      let fields = if grads.sparse && env.is_object(grad)? && env.float_array(grad)?.is_none() {
        let [indices_key, values_key] = match sparse_keys {
          Some(keys) => keys,
          None => *sparse_keys.insert([env.string(c"indices")?, env.string(c"values")?]),
        };
        Some([env.get(grad, indices_key)?, env.get(grad, values_key)?])
      } else {
        None
      };
      self.fields.push(fields);
    }
    if self.coalescers.len() < count {
      self.coalescers.resize_with(count, Coalescer::default);
    }

    // Second pass: no JavaScript runs from here until the step returns.
    self.views.clear();
    for (index, &[data_value, grad_value]) in self.values.iter().enumerate() {
      let data = env.float_array(data_value)?.ok_or_else(|| {
        Fail::type_error(format!(
          "{}.data must be a Float32Array or Float64Array, got {}",
          label(index),
          env.describe(data_value).unwrap_or_default()
        ))
      })?;
      if data.detached {
        return Err(Fail::state(format!("{}.data is detached (its ArrayBuffer was transferred)", label(index))));
      }
      let [data_look, grad_look] = self.looks[index];
      check_in_bounds(env, data_value, &data, data_look, || format!("{}.data", label(index)))?;
      let given = match self.fields[index] {
        Some(fields) => Given::Sparse(fields),
        None => {
          let Some(grad) = env.float_array(grad_value)? else {
            if env.is_nullish(grad_value)? {
              self.views.push(None);
              continue;
            }
            return Err(not_a_grad(env, &label(index), grad_value, &data, grads));
          };
          if grads.sparse {
            return Err(crate::sparse::wrong_kind(&label(index), grads, grad.type_name(), &data, &[]));
          }
          if grad.detached {
            return Err(Fail::state(format!("{}.grad is detached (its ArrayBuffer was transferred)", label(index))));
          }
          check_in_bounds(env, grad_value, &grad, grad_look, || format!("{}.grad", label(index)))?;
          if grad.dtype != data.dtype {
            return Err(Fail::type_error(format!(
              "{}.grad must be a {} like its data, got {}",
              label(index),
              data.type_name(),
              grad.type_name()
            )));
          }
          if grad.len != data.len {
            return Err(Fail::range(format!(
              "{}.grad has length {}, expected {} like its data",
              label(index),
              grad.len,
              data.len
            )));
          }
          Given::Dense(grad)
        }
      };
      let shape = shapes.get(index).and_then(Option::as_deref);
      if grads.matrices && shape.is_none_or(|shape| shape.len() != 2) {
        return Err(Fail::value(crate::js::not_a_matrix(&label(index), grads.optimizer, shape, data.len)));
      }
      let dims = match shape {
        None => Dims::flat(data.len),
        Some(shape) => {
          let dims = Dims::of(shape);
          if dims.len() != data.len {
            return Err(Fail::range(format!(
              "{}.data has length {}, but its shape {shape:?} holds {} elements",
              label(index),
              data.len,
              dims.len()
            )));
          }
          dims
        }
      };
      let lens: [usize; MAX_BUFFERS] =
        std::array::from_fn(|i| buffers.get(i).map_or(0, |buffer| buffer.layout.len(dims)));
      match states.get(index).map_or(Ok(()), |state| state.check(data.dtype, &lens[..buffers.len()])) {
        Ok(()) => {}
        Err(StateMismatch::Dtype { state, .. }) => {
          return Err(Fail::type_error(format!(
            "{}.data is a {}, but its optimizer state is {}",
            label(index),
            data.type_name(),
            state
          )));
        }
        Err(StateMismatch::Length { buffer, state, expected }) => {
          return Err(Fail::range(match buffers[buffer].layout {
            Layout::Param | Layout::Unfactored => {
              format!("{}.data has length {}, but its optimizer state has length {state}", label(index), data.len)
            }
            Layout::Rows | Layout::Cols => format!(
              "{}: its optimizer state {} has {state} elements, but its shape needs {expected}",
              label(index),
              crate::js::camel_case(buffers[buffer].name)
            ),
          }));
        }
      }
      let (grad, sparse) = match given {
        Given::Dense(grad) => (grad, None),
        Given::Sparse(fields) => {
          let rows = crate::sparse::rows_of(data.len, shapes.get(index).and_then(Option::as_deref));
          let (values, sparse) =
            crate::sparse::check(env, || label(index), &data, rows, fields, &mut self.coalescers[index])?;
          (values, Some(sparse))
        }
      };
      let group = group_of[index] as usize;
      self.views.push(Some(ParamView { group, data, grad, sparse, dims, values: [data_value, grad_value] }));
    }

    self.layout.clear();
    for view in &self.views {
      match view {
        Some(v) => self.layout.extend([
          (v.data.address(), v.data.byte_len()),
          (v.grad.address(), v.grad.byte_len()),
          v.sparse.map_or((0, 0), |s| (s.indices.address(), s.indices.byte_len())),
        ]),
        None => self.layout.extend([(0, 0), (0, 0), (0, 0)]),
      }
    }
    let repeated = self.layout == self.disjoint;
    self.data_repeated = self.layout.len() == self.disjoint.len()
      && self.layout.iter().step_by(3).zip(self.disjoint.iter().step_by(3)).all(|(a, b)| a == b);
    if !repeated {
      check_disjoint(&self.views, group_of)?;
      std::mem::swap(&mut self.layout, &mut self.disjoint);
    }
    Ok(())
  }
}

impl Reader {
  /// Puts the arrays the last read took into the JavaScript array `seen`: `seen[2i]` is the data
  /// of parameter `i`, `seen[2i + 1]` its grad (null or undefined where the parameter was skipped).
  /// A sparse grad is reported as undefined: its indices must be checked and coalesced again at
  /// every step, so no later step may take it for one already read.
  pub fn report(&self, env: RawEnv, seen: sys::napi_value) -> Result<(), Fail> {
    let mut undefined = std::ptr::null_mut();
    // SAFETY: this call's env.
    unsafe { sys::napi_get_undefined(env.0, &mut undefined) };
    for (i, &[data, grad]) in self.values.iter().enumerate() {
      let sparse = self.views.get(i).is_some_and(|view| view.as_ref().is_some_and(|v| v.sparse.is_some()));
      env.set_element(seen, 2 * i as u32, data)?;
      env.set_element(seen, 2 * i as u32 + 1, if sparse { undefined } else { grad })?;
    }
    Ok(())
  }

  /// Makes weak references to every array of [`Self::views`] (deleting those of the read before),
  /// for [`Self::check_remembered`] and [`Self::take_new_grads`]. Allocates nothing once the
  /// reader has held as many.
  pub fn remember(&mut self, env: RawEnv) -> Result<(), Fail> {
    self.forget(env);
    self.data_spans.clear();
    for view in &self.views {
      match view {
        Some(view) => {
          // Empty arrays overlap nothing (and may lie inside another's range).
          if view.data.len > 0 {
            self.data_spans.push((view.data.address(), view.data.address() + view.data.byte_len()));
          }
          for value in view.values {
            let reference = env.weak_reference(value)?;
            self.refs.push(reference);
            // Pushed before anything can fail, so that `forget` deletes every reference made.
            self.held.push(Held::NONE);
            let (buffer, _) = env.buffer_of(value)?;
            if let Some((data, byte_len)) = env.array_buffer(buffer)? {
              let reference = env.weak_reference(buffer)?;
              *self.held.last_mut().expect("pushed above") = Held { reference, data, byte_len };
            }
          }
        }
        None => {
          self.refs.extend([std::ptr::null_mut(); 2]);
          self.held.extend([Held::NONE; 2]);
        }
      }
    }
    self.data_spans.sort_unstable();
    Ok(())
  }

  /// Deletes the references [`Self::remember`] made.
  pub fn forget(&mut self, env: RawEnv) {
    let buffers = self.held.drain(..).map(|held| held.reference);
    for reference in self.refs.drain(..).chain(buffers).filter(|r| !r.is_null()) {
      // SAFETY: made in this env by `remember`, and dropped from `refs` or `held` here.
      unsafe { env.delete_reference(reference) };
    }
  }

  /// Whether the ArrayBuffer of the `k`-th remembered array is alive with the data address and
  /// byte length it had (see [`Held`]): then so is the array. False says nothing.
  fn buffer_unchanged(&self, env: RawEnv, k: usize) -> Result<bool, Fail> {
    let held = self.held.get(k).copied().unwrap_or(Held::NONE);
    if held.reference.is_null() {
      return Ok(false);
    }
    let Some(buffer) = env.reference_value(held.reference)? else { return Ok(false) };
    Ok(env.array_buffer(buffer)? == Some((held.data, held.byte_len)))
  }

  /// For `step_again`, which writes the arrays of [`Self::views`] without reading the parameters:
  /// whether each is still alive, attached, at the address and of the length the read saw (and for
  /// an empty one, not past its buffer's end). Two Node-API calls per array when its ArrayBuffer is
  /// as it was (see [`Held`]), two more otherwise; no property read, no JavaScript. False as soon
  /// as one is not (or was not remembered): the caller then reads the parameters again, which
  /// reports what changed.
  pub fn check_remembered(&self, env: RawEnv) -> Result<bool, Fail> {
    for (index, view) in self.views.iter().enumerate() {
      let Some(view) = view else { continue };
      if !self.unchanged(env, 2 * index, &view.data)? || !self.unchanged(env, 2 * index + 1, &view.grad)? {
        return Ok(false);
      }
    }
    Ok(true)
  }

  /// Whether the `k`-th remembered array (`array` as the read saw it) is still alive, attached,
  /// where it was and of its length ([`Self::check_remembered`]).
  fn unchanged(&self, env: RawEnv, k: usize, array: &TypedView) -> Result<bool, Fail> {
    if self.buffer_unchanged(env, k)? {
      return Ok(true);
    }
    let reference = self.refs.get(k).copied().unwrap_or(std::ptr::null_mut());
    let Some(value) = (if reference.is_null() { None } else { env.reference_value(reference)? }) else {
      return Ok(false);
    };
    Ok(match env.float_array(value)? {
      Some(now) => {
        !now.detached
          && now.dtype == array.dtype
          && now.address() == array.address()
          && now.len == array.len
          && (now.len > 0 || !env.beyond_buffer(value)?)
      }
      None => false,
    })
  }

  /// For `step_again` given new gradients: `grads[i]` is parameter `i`'s new gradient, or
  /// undefined where it is the array the last step took. Takes them into [`Self::views`] if every
  /// remembered data array and unchanged gradient is as [`Self::check_remembered`] requires, and
  /// each new gradient is an attached typed array of its data's type and length that overlaps no
  /// parameter's data (gradients may share memory with each other: they are only read). Returns
  /// false, changing nothing, otherwise, and where a parameter skipped by the last step (no
  /// gradient then) has one now: the caller then reads the parameters, which says what is wrong.
  /// The gradients' weak references are dropped: a later step over the same arrays reads them.
  /// Runs no JavaScript; one Node-API call per new gradient beside the data's check.
  pub fn take_new_grads(&mut self, env: RawEnv, grads: &[sys::napi_value]) -> Result<bool, Fail> {
    if grads.len() != self.views.len() {
      return Err(Fail::type_error(format!(
        "stepAgain: grads has {} entries, but the last step read {} parameters",
        grads.len(),
        self.views.len()
      )));
    }
    let mut staged = std::mem::take(&mut self.new_grads);
    staged.clear();
    let taken = self.check_new_grads(env, grads, &mut staged);
    if matches!(taken, Ok(true)) {
      for &(index, grad, value) in &staged {
        let view = self.views[index].as_mut().expect("checked to have a view");
        view.grad = grad;
        view.values[1] = value;
        let k = 2 * index + 1;
        let array = self.refs.get_mut(k).map_or(std::ptr::null_mut(), |r| std::mem::replace(r, std::ptr::null_mut()));
        let buffer = self.held.get_mut(k).map_or(std::ptr::null_mut(), |h| std::mem::replace(h, Held::NONE).reference);
        for reference in [array, buffer].into_iter().filter(|r| !r.is_null()) {
          // SAFETY: made in this env by `remember`, and dropped from `refs` and `held` here.
          unsafe { env.delete_reference(reference) };
        }
      }
    }
    self.new_grads = staged;
    taken
  }

  /// [`Self::take_new_grads`]' checks, the new gradients put into `staged`.
  fn check_new_grads(
    &self,
    env: RawEnv,
    grads: &[sys::napi_value],
    staged: &mut Vec<(usize, TypedView, sys::napi_value)>,
  ) -> Result<bool, Fail> {
    for (index, (view, &value)) in self.views.iter().zip(grads).enumerate() {
      let new = env.float_array(value)?;
      let Some(view) = view else {
        // Skipped by the last step: it stays skipped only with no new gradient.
        if new.is_some() || !env.is_undefined(value)? {
          return Ok(false);
        }
        continue;
      };
      if !self.unchanged(env, 2 * index, &view.data)? {
        return Ok(false);
      }
      let Some(grad) = new else {
        if !env.is_undefined(value)? || !self.unchanged(env, 2 * index + 1, &view.grad)? {
          return Ok(false);
        }
        continue;
      };
      if grad.detached
        || grad.dtype != view.data.dtype
        || grad.len != view.data.len
        || (grad.len == 0 && (env.out_of_bounds(value)? || env.beyond_buffer(value)?))
        || self.overlaps_data(&grad)
      {
        return Ok(false);
      }
      staged.push((index, grad, value));
    }
    Ok(true)
  }

  /// Whether `array` shares memory with a remembered parameter's data.
  fn overlaps_data(&self, array: &TypedView) -> bool {
    let (start, end) = (array.address(), array.address() + array.byte_len());
    if start == end {
      return false;
    }
    // The first data range that ends after `start`: the ranges are non-empty, sorted and disjoint,
    // so their ends are sorted too.
    let first = self.data_spans.partition_point(|&(_, data_end)| data_end <= start);
    self.data_spans.get(first).is_some_and(|&(data_start, _)| data_start < end)
  }

  /// Whether a gradient of the last read was sparse.
  pub fn any_sparse(&self) -> bool {
    self.views.iter().flatten().any(|view| view.sparse.is_some())
  }
}

/// A parameter's gradient as the second pass first sees it.
enum Given {
  Dense(TypedView),
  /// `grad.indices` and `grad.values`, read in the first pass.
  Sparse([sys::napi_value; 2]),
}

/// The error for a grad that is neither an array of the data's type, nor null, nor (for an
/// optimizer of sparse gradients) an object; it names a sparse gradient given to an optimizer of
/// dense ones as such.
fn not_a_grad(env: RawEnv, label: &str, grad: sys::napi_value, data: &TypedView, grads: Grads) -> Fail {
  let got = env.describe(grad).unwrap_or_default();
  if grads.sparse {
    return Fail::type_error(format!(
      "{label}.grad must be a row-sparse gradient {{ indices, values }}, or null, got {got}"
    ));
  }
  // Nothing is written after an error, so the look may run a getter.
  let has = |name| env.property(grad, name).and_then(|value| env.is_nullish(value)).is_ok_and(|nullish| !nullish);
  if env.is_object(grad).unwrap_or(false) && has(c"indices") && has(c"values") {
    return crate::sparse::wrong_kind(label, grads, "", data, &crate::sparse_optimizers());
  }
  Fail::type_error(format!("{label}.grad must be a {} like its data, or null, got {got}", data.type_name()))
}

/// `paramGroups[g].params[i]`: where parameter `index` (over all groups) sits in its group.
pub(crate) fn label(group_of: &[u32], index: usize) -> String {
  let group = group_of[index];
  let first = group_of.iter().position(|&g| g == group).unwrap_or(index);
  format!("paramGroups[{group}].params[{}]", index - first)
}

/// Fails if any parameter's data shares memory with another parameter's data or with any grad.
/// Grads may share memory with each other: they are only read.
fn check_disjoint(views: &[Option<ParamView>], group_of: &[u32]) -> Result<(), Fail> {
  let mut spans: Vec<Span> = Vec::with_capacity(views.len() * 2);
  for (param, view) in views.iter().enumerate() {
    let Some(view) = view else { continue };
    for (array, writable) in [(&view.data, true), (&view.grad, false)] {
      let start = array.address();
      spans.push(Span { start, end: start + array.byte_len(), writable, id: 3 * param + usize::from(!writable) });
    }
    if let Some(sparse) = &view.sparse {
      let start = sparse.indices.address();
      spans.push(Span { start, end: start + sparse.indices.byte_len(), writable: false, id: 3 * param + 2 });
    }
  }
  let sparse = |id: usize| views[id / 3].as_ref().is_some_and(|view| view.sparse.is_some());
  let name = |id: usize| {
    let array = match (id % 3, sparse(id)) {
      (0, _) => "data",
      (1, false) => "grad",
      (1, true) => "grad.values",
      _ => "grad.indices",
    };
    format!("{}.{array}", label(group_of, id / 3))
  };
  match find_overlap(&mut spans) {
    Some((a, b)) => Err(Fail::value(step_message(&name(a), &name(b)))),
    None => Ok(()),
  }
}
