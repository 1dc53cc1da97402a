//! Row-sparse gradients: `grad: { indices, values }`, as PyTorch's sparse COO gradient of an
//! embedding table (`nn.Embedding(sparse=True)`).
//!
//! A parameter of shape `[rows, ...]` (flat: rows of one element; 0-D: one row of one element)
//! takes `indices`, an `Int32Array` or `Uint32Array` of row numbers, and `values`, an array like
//! its data holding `indices.length` rows of the row's size, in the order of `indices`. Rows may
//! be named in any order and more than once. The reader checks every index and coalesces the
//! gradient as PyTorch's `coalesce()` does, into scratch kept between steps: rows sorted, the
//! values of a row named more than once summed in the order given. Indices already strictly
//! increasing (a gradient coalesced before) are used where they are, without a copy.

use fastoptim_core::Dtype;
use napi::sys;

use crate::js::{Fail, RawEnv, TypedView};

/// What a step's optimizer takes: dense gradients, or (for [`fastoptim_core::Optimizer::SPARSE`])
/// row-sparse ones only.
#[derive(Clone, Copy)]
pub(crate) struct Grads {
  pub optimizer: &'static str,
  pub sparse: bool,
  /// Whether the optimizer takes matrices only ([`fastoptim_core::Optimizer::MATRICES`]).
  pub matrices: bool,
}

/// A sparse gradient as the reader checked and coalesced it: strictly increasing rows within the
/// parameter and one row of values for each, in the caller's arrays or in the reader's scratch.
#[derive(Clone, Copy)]
pub(crate) struct SparseView {
  /// Elements per row.
  pub row_len: usize,
  rows: *const u32,
  count: usize,
  values: *const u8,
  /// The `indices` array, which the step reads as long as `rows` may point into it.
  pub indices: IndexView,
}

impl SparseView {
  /// The rows and their values.
  ///
  /// # Safety
  /// `T` must be the parameter's element type, and the view must be of the current read (its
  /// scratch not overwritten by a later one, its arrays attached and where they were).
  pub unsafe fn parts<'a, T>(&self) -> (&'a [u32], &'a [T]) {
    if self.count == 0 {
      return (&[], &[]);
    }
    // SAFETY: as the caller guarantees; `count` rows and `count * row_len` values.
    unsafe {
      (
        std::slice::from_raw_parts(self.rows, self.count),
        std::slice::from_raw_parts(self.values.cast::<T>(), self.count * self.row_len),
      )
    }
  }
}

/// An `Int32Array` or `Uint32Array` as seen at one moment of a call.
#[derive(Clone, Copy)]
pub(crate) struct IndexView {
  pub signed: bool,
  pub len: usize,
  pub detached: bool,
  data: *const u8,
}

impl IndexView {
  pub fn address(&self) -> usize {
    self.data as usize
  }

  pub fn byte_len(&self) -> usize {
    self.len * 4
  }
}

/// The value as an `Int32Array`/`Uint32Array` view, or `None` if it is anything else.
pub(crate) fn index_array(env: RawEnv, value: sys::napi_value) -> Result<Option<IndexView>, Fail> {
  let (mut kind, mut len, mut data, mut buffer) = (0, 0, std::ptr::null_mut(), std::ptr::null_mut());
  // SAFETY: a value of this call's scope; the byte offset output may be null.
  let status = unsafe {
    sys::napi_get_typedarray_info(env.0, value, &mut kind, &mut len, &mut data, &mut buffer, std::ptr::null_mut())
  };
  if status != sys::Status::napi_ok {
    return Ok(None);
  }
  let signed = match kind {
    sys::TypedarrayType::int32_array => true,
    sys::TypedarrayType::uint32_array => false,
    _ => return Ok(None),
  };
  let mut detached = false;
  if len == 0 {
    // SAFETY: the array's own buffer, of this call's scope.
    if unsafe { sys::napi_is_detached_arraybuffer(env.0, buffer, &mut detached) } != sys::Status::napi_ok {
      detached = false;
    }
  }
  Ok(Some(IndexView { signed, len, detached, data: data.cast_const().cast() }))
}

/// A parameter's rows and their size: `[rows, ...]` has `rows` rows of the product of the other
/// dimensions; a flat parameter (no shape) has rows of one element, a 0-D one a single row.
pub(crate) fn rows_of(len: usize, shape: Option<&[usize]>) -> (usize, usize) {
  match shape {
    None => (len, 1),
    Some([]) => (1, 1),
    Some([rows, rest @ ..]) => (*rows, rest.iter().product()),
  }
}

/// Scratch for coalescing one parameter's gradient, kept between steps.
#[derive(Default)]
pub(crate) struct Coalescer {
  /// `row << 32 | position`, sorted: rows in order, positions in the order given within a row.
  order: Vec<u64>,
  rows: Vec<u32>,
  values32: Vec<f32>,
  values64: Vec<f64>,
}

/// Checks the sparse gradient `indices`/`values` of a parameter whose data is `data` (with
/// `rows` rows of `row_len` elements) and coalesces it into `scratch` unless its indices are
/// strictly increasing already. `label` names the parameter (made only for an error). Runs no
/// JavaScript.
pub(crate) fn check(
  env: RawEnv,
  label: impl Fn() -> String,
  data: &TypedView,
  (rows, row_len): (usize, usize),
  [indices_value, values_value]: [sys::napi_value; 2],
  scratch: &mut Coalescer,
) -> Result<(TypedView, SparseView), Fail> {
  let describe = |value| env.describe(value).unwrap_or_default();
  let indices = index_array(env, indices_value)?.ok_or_else(|| {
    Fail::type_error(format!(
      "{}.grad.indices must be an Int32Array or Uint32Array, got {}",
      label(),
      describe(indices_value)
    ))
  })?;
  if indices.detached {
    return Err(Fail::state(format!("{}.grad.indices is detached (its ArrayBuffer was transferred)", label())));
  }
  let values = match env.float_array(values_value)? {
    Some(values) if values.dtype == data.dtype => values,
    other => {
      let got = other.map_or_else(|| describe(values_value), |v| v.type_name().to_string());
      return Err(Fail::type_error(format!(
        "{}.grad.values must be a {} like its data, got {got}",
        label(),
        data.type_name()
      )));
    }
  };
  if values.detached {
    return Err(Fail::state(format!("{}.grad.values is detached (its ArrayBuffer was transferred)", label())));
  }
  let count = indices.len;
  if count > u32::MAX as usize {
    return Err(Fail::range(format!("{}.grad.indices has {count} entries, more than 2^32 - 1", label())));
  }
  if values.len != count * row_len {
    return Err(Fail::range(format!(
      "{}.grad.values has length {}, expected {} ({count} indices × {row_len} elements per row)",
      label(),
      values.len,
      count * row_len
    )));
  }
  // SAFETY: attached, `count` 4-byte elements, read in this call; nothing writes them during it.
  let raw: &[u32] = if count == 0 { &[] } else { unsafe { std::slice::from_raw_parts(indices.data.cast(), count) } };
  let (mut increasing, mut sorted) = (true, true);
  for (k, &index) in raw.iter().enumerate() {
    let value = if indices.signed { index as i32 as i64 } else { index as i64 };
    if value < 0 || value as usize >= rows {
      let expected = if rows == 0 { "it has no rows".to_string() } else { format!("expected 0 to {}", rows - 1) };
      return Err(Fail::range(format!(
        "{}.grad.indices[{k}] is {value}, not a row of the parameter, which has {rows} rows ({expected})",
        label()
      )));
    }
    increasing &= k == 0 || raw[k - 1] < index;
    sorted &= k == 0 || raw[k - 1] <= index;
  }
  let (rows_at, values_at, unique) = if increasing || row_len == 0 {
    (raw.as_ptr(), values.address() as *const u8, if row_len == 0 { 0 } else { count })
  } else {
    scratch.order.clear();
    scratch.order.extend(raw.iter().enumerate().map(|(k, &row)| (row as u64) << 32 | k as u64));
    if !sorted {
      scratch.order.sort_unstable();
    }
    // SAFETY: attached, `values.len` elements of the data's dtype, read in this call.
    let values_at = unsafe {
      match data.dtype {
        Dtype::Float32 => {
          gather(&scratch.order, values.slice::<f32>(), row_len, &mut scratch.rows, &mut scratch.values32)
        }
        Dtype::Float64 => {
          gather(&scratch.order, values.slice::<f64>(), row_len, &mut scratch.rows, &mut scratch.values64)
        }
      }
    };
    (scratch.rows.as_ptr(), values_at, scratch.rows.len())
  };
  Ok((values, SparseView { row_len, rows: rows_at, count: unique, values: values_at, indices }))
}

/// The rows of `order` once each, into `rows`, with their values summed in order into `out`;
/// returns where `out`'s values start.
fn gather<T: Copy + std::ops::AddAssign>(
  order: &[u64],
  values: &[T],
  row_len: usize,
  rows: &mut Vec<u32>,
  out: &mut Vec<T>,
) -> *const u8 {
  rows.clear();
  out.clear();
  for &key in order {
    let (row, at) = ((key >> 32) as u32, (key & 0xffff_ffff) as usize * row_len);
    let source = &values[at..at + row_len];
    if rows.last() == Some(&row) {
      let start = out.len() - row_len;
      for (sum, &value) in out[start..].iter_mut().zip(source) {
        *sum += value;
      }
    } else {
      rows.push(row);
      out.extend_from_slice(source);
    }
  }
  out.as_ptr().cast()
}

/// The message for a gradient an optimizer does not take: a dense one for an optimizer of sparse
/// gradients (PyTorch's words), a sparse one for any other. `sparse_names` lists the optimizers
/// that take sparse gradients.
pub(crate) fn wrong_kind(label: &str, grads: Grads, got: &str, data: &TypedView, sparse_names: &[&str]) -> Fail {
  if grads.sparse {
    Fail::type_error(format!(
      "{label}.grad is a {got}: {} does not support dense gradients, please consider Adam instead \
       (or give a row-sparse gradient {{ indices, values }})",
      grads.optimizer
    ))
  } else {
    Fail::type_error(format!(
      "{label}.grad is a sparse gradient {{ indices, values }}, which {} does not take (only {} {}): \
       give a {} like its data, or null",
      grads.optimizer,
      sparse_names.join(" and "),
      if sparse_names.len() == 1 { "does" } else { "do" },
      data.type_name()
    ))
  }
}
