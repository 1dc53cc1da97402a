//! Reading a step's parameters from JavaScript, for `step` and `stepAsync` alike.
//!
//! Two passes. The first reads `.data` and `.grad` of every parameter; a getter or a proxy may
//! run JavaScript there, and that JavaScript may detach or shrink an array read before it. The
//! second takes each array's memory and checks it; nothing in it can run JavaScript, so what it
//! sees is final until the step returns (for `stepAsync`, see `task.rs`). A steady-state step
//! allocates nothing here: the buffers are kept between steps, and the overlap check is skipped
//! when every array is where it was at the last step that passed it.

use fastoptim_core::{Buffer, Dims, Layout, ParamState, StateMismatch, MAX_BUFFERS};
use napi::sys;

use crate::disjoint::{find_overlap, step_message, Span};
use crate::js::{Fail, RawEnv, TypedView};

/// One parameter as the second pass saw it.
pub(crate) struct ParamView {
  pub group: usize,
  pub data: TypedView,
  pub grad: TypedView,
  /// Its shape's dimensions (flat when it has none).
  pub dims: Dims,
  /// The JavaScript arrays, valid during the call that read them.
  pub values: [sys::napi_value; 2],
}

/// What reading a step needs between calls, so that steady-state steps allocate nothing.
#[derive(Default)]
pub(crate) struct Reader {
  values: Vec<[sys::napi_value; 2]>,
  /// `None` for a parameter whose `grad` is null or undefined.
  pub views: Vec<Option<ParamView>>,
  /// Address and byte length of every array of the last step whose arrays were proven disjoint,
  /// in parameter order (data, grad); a skipped parameter counts as `(0, 0)` twice.
  disjoint: Vec<(usize, usize)>,
  layout: Vec<(usize, usize)>,
  /// Whether [`Self::views`] are those of the last synchronous step, for `step_again`.
  pub remembered: bool,
}

impl Reader {
  /// Reads and checks every parameter of `params` (types, lengths, detached memory, agreement
  /// with its shape in `shapes` and with its state in `states`, whose buffers `buffers` lays out,
  /// no parameter's data sharing memory with another array) into [`Self::views`].
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
    for index in 0..count {
      let param = env.element(params, index as u32)?;
      if !env.is_object(param)? {
        return Err(Fail::type_error(format!(
          "{} must be an object with data and grad, got {}",
          label(index),
          env.describe(param)?
        )));
      }
      self.values.push([env.get(param, data_key)?, env.get(param, grad_key)?]);
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
      let Some(grad) = env.float_array(grad_value)? else {
        if env.is_nullish(grad_value)? {
          self.views.push(None);
          continue;
        }
        return Err(Fail::type_error(format!(
          "{}.grad must be a {} like its data, or null, got {}",
          label(index),
          data.type_name(),
          env.describe(grad_value).unwrap_or_default()
        )));
      };
      if grad.detached {
        return Err(Fail::state(format!("{}.grad is detached (its ArrayBuffer was transferred)", label(index))));
      }
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
      let dims = match shapes.get(index).and_then(Option::as_deref) {
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
            state.name()
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
      let group = group_of[index] as usize;
      self.views.push(Some(ParamView { group, data, grad, dims, values: [data_value, grad_value] }));
    }

    self.layout.clear();
    for view in &self.views {
      match view {
        Some(v) => self.layout.extend([(v.data.address(), v.data.byte_len()), (v.grad.address(), v.grad.byte_len())]),
        None => self.layout.extend([(0, 0), (0, 0)]),
      }
    }
    if self.layout != self.disjoint {
      check_disjoint(&self.views, group_of)?;
      std::mem::swap(&mut self.layout, &mut self.disjoint);
    }
    Ok(())
  }
}

impl Reader {
  /// Puts the arrays the last read took into the JavaScript array `seen`: `seen[2i]` is the data
  /// of parameter `i`, `seen[2i + 1]` its grad (null or undefined where the parameter was skipped).
  pub fn report(&self, env: RawEnv, seen: sys::napi_value) -> Result<(), Fail> {
    for (i, &[data, grad]) in self.values.iter().enumerate() {
      env.set_element(seen, 2 * i as u32, data)?;
      env.set_element(seen, 2 * i as u32 + 1, grad)?;
    }
    Ok(())
  }
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
      spans.push(Span { start, end: start + array.byte_len(), writable, id: 2 * param + usize::from(!writable) });
    }
  }
  let name = |id: usize| format!("{}.{}", label(group_of, id / 2), if id.is_multiple_of(2) { "data" } else { "grad" });
  match find_overlap(&mut spans) {
    Some((a, b)) => Err(Fail::value(step_message(&name(a), &name(b)))),
    None => Ok(()),
  }
}
