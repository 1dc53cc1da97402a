//! Thin, checked wrappers over the raw Node-API calls the step needs, and the errors it throws.

use std::ffi::CStr;
use std::ptr;

use fastoptim_core::Dtype;
use napi::bindgen_prelude::*;
use napi::sys;

/// An error to throw, with the JavaScript class and the Node-style `code` it gets.
#[derive(Debug)]
pub struct Fail {
  class: Class,
  code: &'static str,
  message: String,
}

#[derive(Debug, Clone, Copy)]
enum Class {
  Error,
  TypeError,
  RangeError,
}

impl Fail {
  /// A value of the wrong type: `TypeError`, `ERR_INVALID_ARG_TYPE`.
  pub fn type_error(message: String) -> Self {
    Fail { class: Class::TypeError, code: "ERR_INVALID_ARG_TYPE", message }
  }
  /// A number outside its range or a length that does not fit: `RangeError`, `ERR_OUT_OF_RANGE`.
  pub fn range(message: String) -> Self {
    Fail { class: Class::RangeError, code: "ERR_OUT_OF_RANGE", message }
  }
  /// A value of the right type that is not acceptable: `TypeError`, `ERR_INVALID_ARG_VALUE`.
  pub fn value(message: String) -> Self {
    Fail { class: Class::TypeError, code: "ERR_INVALID_ARG_VALUE", message }
  }
  /// Memory that can no longer be used (a detached buffer): `Error`, `ERR_INVALID_STATE`.
  pub fn state(message: String) -> Self {
    Fail { class: Class::Error, code: "ERR_INVALID_STATE", message }
  }

  /// Throws this as a JavaScript exception and returns the marker napi-rs expects after a throw.
  pub fn throw(self, env: &Env) -> Error {
    let code = Some(self.code);
    let thrown = match self.class {
      Class::Error => env.throw_error(&self.message, code),
      Class::TypeError => env.throw_type_error(&self.message, code),
      Class::RangeError => env.throw_range_error(&self.message, code),
    };
    match thrown {
      Ok(()) => Error::from_status(Status::PendingException),
      Err(error) => error,
    }
  }
}

impl From<Error> for Fail {
  fn from(error: Error) -> Self {
    Fail { class: Class::Error, code: "ERR_INTERNAL_ASSERTION", message: error.reason }
  }
}

/// Why a parameter of `shape` (none: flat, `len` elements) cannot join an optimizer that takes
/// matrices only; in the facade's words (lib/optimizer.ts, `notAMatrix`).
pub fn not_a_matrix(label: &str, optimizer: &str, shape: Option<&[usize]>, len: usize) -> String {
  let shape = match shape {
    Some(shape) => {
      let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
      format!("shape [{}]", dims.join(","))
    }
    None => format!("no shape (flat, {len} elements)"),
  };
  format!(
    "{label} has {shape}, but {optimizer} takes matrices only (a shape [rows, cols]): optimize it with another optimizer, such as AdamW"
  )
}

/// `weight_decay` → `weightDecay`; `betas[0]` stays as it is.
pub fn camel_case(name: &str) -> String {
  let mut out = String::with_capacity(name.len());
  let mut upper = false;
  for c in name.chars() {
    if c == '_' {
      upper = true;
    } else if upper {
      out.extend(c.to_uppercase());
      upper = false;
    } else {
      out.push(c);
    }
  }
  out
}

/// A Float32Array or Float64Array as seen at one moment of a call.
#[derive(Debug, Clone, Copy)]
pub struct TypedView {
  pub dtype: Dtype,
  pub len: usize,
  pub detached: bool,
  data: *mut u8,
}

impl TypedView {
  pub fn type_name(&self) -> &'static str {
    match self.dtype {
      Dtype::Float32 => "Float32Array",
      Dtype::Float64 => "Float64Array",
    }
  }

  pub fn address(&self) -> usize {
    self.data as usize
  }

  pub fn byte_len(&self) -> usize {
    self.len * self.dtype.size()
  }

  /// # Safety
  /// `T` must be the view's element type, the memory must still be attached, and nothing else
  /// may access it while the slice lives.
  pub unsafe fn slice_mut<'a, T>(&self) -> &'a mut [T] {
    if self.len == 0 {
      &mut []
    } else {
      unsafe { std::slice::from_raw_parts_mut(self.data.cast::<T>(), self.len) }
    }
  }

  /// # Safety
  /// As [`TypedView::slice_mut`], except that others may read the memory too.
  pub unsafe fn slice<'a, T>(&self) -> &'a [T] {
    if self.len == 0 {
      &[]
    } else {
      unsafe { std::slice::from_raw_parts(self.data.cast::<T>(), self.len) }
    }
  }
}

/// The raw environment of the current call.
#[derive(Clone, Copy)]
pub struct RawEnv(pub sys::napi_env);

macro_rules! call {
  ($what:literal, $e:expr) => {{
    // SAFETY: every call below passes this call's env and values of its scope.
    let status = unsafe { $e };
    if status != sys::Status::napi_ok {
      return Err(Fail::from(Error::new(Status::GenericFailure, format!("{} failed (napi status {status})", $what))));
    }
  }};
}

impl RawEnv {
  fn type_of(self, value: sys::napi_value) -> std::result::Result<sys::napi_valuetype, Fail> {
    let mut kind = 0;
    call!("napi_typeof", sys::napi_typeof(self.0, value, &mut kind));
    Ok(kind)
  }

  pub fn is_object(self, value: sys::napi_value) -> std::result::Result<bool, Fail> {
    Ok(self.type_of(value)? == sys::ValueType::napi_object)
  }

  pub fn is_nullish(self, value: sys::napi_value) -> std::result::Result<bool, Fail> {
    let kind = self.type_of(value)?;
    Ok(kind == sys::ValueType::napi_null || kind == sys::ValueType::napi_undefined)
  }

  /// Whether `value` is `undefined`.
  pub fn is_undefined(self, value: sys::napi_value) -> std::result::Result<bool, Fail> {
    Ok(self.type_of(value)? == sys::ValueType::napi_undefined)
  }

  /// Whether `value` is the boolean `true` (anything else, a truthy number included, is not).
  pub fn is_true(self, value: sys::napi_value) -> std::result::Result<bool, Fail> {
    if self.type_of(value)? != sys::ValueType::napi_boolean {
      return Ok(false);
    }
    let mut result = false;
    call!("napi_get_value_bool", sys::napi_get_value_bool(self.0, value, &mut result));
    Ok(result)
  }

  pub fn array_length(self, array: sys::napi_value) -> std::result::Result<usize, Fail> {
    let mut is_array = false;
    call!("napi_is_array", sys::napi_is_array(self.0, array, &mut is_array));
    if !is_array {
      return Err(Fail::type_error("params must be an array".into()));
    }
    let mut len = 0;
    call!("napi_get_array_length", sys::napi_get_array_length(self.0, array, &mut len));
    Ok(len as usize)
  }

  pub fn element(self, array: sys::napi_value, index: u32) -> std::result::Result<sys::napi_value, Fail> {
    let mut value = ptr::null_mut();
    call!("napi_get_element", sys::napi_get_element(self.0, array, index, &mut value));
    Ok(value)
  }

  pub fn property(self, object: sys::napi_value, name: &CStr) -> std::result::Result<sys::napi_value, Fail> {
    let mut value = ptr::null_mut();
    call!("napi_get_named_property", sys::napi_get_named_property(self.0, object, name.as_ptr(), &mut value));
    Ok(value)
  }

  /// The value as a Float32Array/Float64Array view, or `None` if it is anything else.
  ///
  /// One Node-API call in the common case: `napi_get_typedarray_info` refuses what is not a typed
  /// array, and a detached array reports length 0, so only an empty array needs a second look.
  pub fn float_array(self, value: sys::napi_value) -> std::result::Result<Option<TypedView>, Fail> {
    let (mut kind, mut len, mut data) = (0, 0, ptr::null_mut());
    // SAFETY: a value of this call's scope; unused outputs may be null.
    let status = unsafe {
      sys::napi_get_typedarray_info(self.0, value, &mut kind, &mut len, &mut data, ptr::null_mut(), ptr::null_mut())
    };
    if status == sys::Status::napi_invalid_arg {
      return Ok(None);
    }
    if status != sys::Status::napi_ok {
      return Err(Fail::from(Error::new(
        Status::GenericFailure,
        format!("napi_get_typedarray_info failed (napi status {status})"),
      )));
    }
    let dtype = match kind {
      sys::TypedarrayType::float32_array => Dtype::Float32,
      sys::TypedarrayType::float64_array => Dtype::Float64,
      _ => return Ok(None),
    };
    let mut detached = false;
    if len == 0 {
      let (buffer, _) = self.buffer_of(value)?;
      call!("napi_is_detached_arraybuffer", sys::napi_is_detached_arraybuffer(self.0, buffer, &mut detached));
    }
    Ok(Some(TypedView { dtype, len, detached, data: data.cast() }))
  }

  /// The bytes of a `Uint8Array` (a Node `Buffer` included; empty once detached), or `None` if
  /// `value` is anything else.
  ///
  /// # Safety
  /// `value` must be of this call, and the slice must not be used after JavaScript runs.
  #[cfg_attr(test, allow(dead_code))]
  pub unsafe fn bytes<'a>(self, value: sys::napi_value) -> std::result::Result<Option<&'a [u8]>, Fail> {
    let (mut kind, mut len, mut data) = (0, 0, ptr::null_mut());
    // SAFETY: a value of this call's scope; unused outputs may be null.
    let status = unsafe {
      sys::napi_get_typedarray_info(self.0, value, &mut kind, &mut len, &mut data, ptr::null_mut(), ptr::null_mut())
    };
    if status == sys::Status::napi_invalid_arg
      || (status == sys::Status::napi_ok && kind != sys::TypedarrayType::uint8_array)
    {
      return Ok(None);
    }
    if status != sys::Status::napi_ok {
      return Err(Fail::from(Error::new(
        Status::GenericFailure,
        format!("napi_get_typedarray_info failed (napi status {status})"),
      )));
    }
    // SAFETY: `len` bytes at `data`, attached (a detached array reports length 0).
    Ok(Some(if len == 0 { &[] } else { unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) } }))
  }

  /// A typed array's class ("Int32Array", ...), "an Array" for an array, or `None` for any other
  /// object; no JavaScript runs.
  fn typed_array_class(self, value: sys::napi_value) -> std::result::Result<Option<&'static str>, Fail> {
    let mut kind = 0;
    // SAFETY: a value of this call's scope; unused outputs may be null.
    let status = unsafe {
      sys::napi_get_typedarray_info(
        self.0,
        value,
        &mut kind,
        ptr::null_mut(),
        ptr::null_mut(),
        ptr::null_mut(),
        ptr::null_mut(),
      )
    };
    if status != sys::Status::napi_ok {
      let mut is_array = false;
      call!("napi_is_array", sys::napi_is_array(self.0, value, &mut is_array));
      return Ok(is_array.then_some("an Array"));
    }
    use sys::TypedarrayType as T;
    Ok(Some(match kind {
      T::int8_array => "Int8Array",
      T::uint8_array => "Uint8Array",
      T::uint8_clamped_array => "Uint8ClampedArray",
      T::int16_array => "Int16Array",
      T::uint16_array => "Uint16Array",
      T::int32_array => "Int32Array",
      T::uint32_array => "Uint32Array",
      T::float32_array => "Float32Array",
      T::float64_array => "Float64Array",
      T::bigint64_array => "BigInt64Array",
      T::biguint64_array => "BigUint64Array",
      _ => "a typed array",
    }))
  }

  /// A typed array's buffer and its byte offset in it.
  pub fn buffer_of(self, typed_array: sys::napi_value) -> std::result::Result<(sys::napi_value, usize), Fail> {
    let (mut buffer, mut offset) = (ptr::null_mut(), 0);
    call!(
      "napi_get_typedarray_info",
      sys::napi_get_typedarray_info(
        self.0,
        typed_array,
        ptr::null_mut(),
        ptr::null_mut(),
        ptr::null_mut(),
        &mut buffer,
        &mut offset
      )
    );
    Ok((buffer, offset))
  }

  /// Whether a typed array's memory is a SharedArrayBuffer's, which cannot be detached.
  pub fn on_shared_memory(self, typed_array: sys::napi_value) -> std::result::Result<bool, Fail> {
    let (buffer, _) = self.buffer_of(typed_array)?;
    let mut plain = false;
    call!("napi_is_arraybuffer", sys::napi_is_arraybuffer(self.0, buffer, &mut plain));
    Ok(!plain)
  }

  pub fn set_element(
    self,
    array: sys::napi_value,
    index: u32,
    value: sys::napi_value,
  ) -> std::result::Result<(), Fail> {
    call!("napi_set_element", sys::napi_set_element(self.0, array, index, value));
    Ok(())
  }

  /// A strong reference to `value`, which keeps it alive until deleted.
  pub fn reference(self, value: sys::napi_value) -> std::result::Result<sys::napi_ref, Fail> {
    let mut reference = ptr::null_mut();
    call!("napi_create_reference", sys::napi_create_reference(self.0, value, 1, &mut reference));
    Ok(reference)
  }

  /// A weak reference to `value` (an object): it does not keep `value` alive, and reads as
  /// `None` once `value` is collected. Delete it with [`RawEnv::delete_reference`].
  pub fn weak_reference(self, value: sys::napi_value) -> std::result::Result<sys::napi_ref, Fail> {
    let mut reference = ptr::null_mut();
    call!("napi_create_reference", sys::napi_create_reference(self.0, value, 0, &mut reference));
    Ok(reference)
  }

  /// The value a reference of this env holds, or `None` if it was weak and its value is gone.
  pub fn reference_value(self, reference: sys::napi_ref) -> std::result::Result<Option<sys::napi_value>, Fail> {
    let mut value = ptr::null_mut();
    call!("napi_get_reference_value", sys::napi_get_reference_value(self.0, reference, &mut value));
    Ok((!value.is_null()).then_some(value))
  }

  /// Deletes a reference of this env made by [`RawEnv::reference`] or [`RawEnv::weak_reference`].
  ///
  /// # Safety
  /// `reference` must be live, and not be used again.
  pub unsafe fn delete_reference(self, reference: sys::napi_ref) {
    // SAFETY: a live reference of this env (the caller's promise); allowed in finalizers too.
    unsafe { sys::napi_delete_reference(self.0, reference) };
  }

  /// The data address and byte length of an ordinary ArrayBuffer (null and 0 once detached), or
  /// `None` for any other value (a SharedArrayBuffer included).
  pub fn array_buffer(self, value: sys::napi_value) -> std::result::Result<Option<(usize, usize)>, Fail> {
    let (mut data, mut byte_len) = (ptr::null_mut(), 0);
    // SAFETY: a value of this call's scope.
    let status = unsafe { sys::napi_get_arraybuffer_info(self.0, value, &mut data, &mut byte_len) };
    match status {
      sys::Status::napi_ok => Ok(Some((data as usize, byte_len))),
      sys::Status::napi_invalid_arg => Ok(None),
      _ => Err(Fail::from(Error::new(
        Status::GenericFailure,
        format!("napi_get_arraybuffer_info failed (napi status {status})"),
      ))),
    }
  }

  /// Whether a typed array that reads as empty (attached) lies beyond the end of its buffer: a
  /// resizable ArrayBuffer shrunk below its start. Only that can make an empty array out of
  /// bounds. An array on a SharedArrayBuffer never is (such a buffer cannot shrink).
  pub fn beyond_buffer(self, typed_array: sys::napi_value) -> std::result::Result<bool, Fail> {
    let (buffer, offset) = self.buffer_of(typed_array)?;
    Ok(matches!(self.array_buffer(buffer), Ok(Some((_, byte_len))) if offset > byte_len))
  }

  /// Whether an attached typed array that reads as empty is out of bounds (its resizable
  /// ArrayBuffer shrank below it), which Node-API reports as it does a true empty array. It asks
  /// the engine: `%TypedArray%.prototype.fill` (taken when the module loaded) throws for exactly
  /// such an array, and changes nothing in an empty one. It calls a function, so only where
  /// JavaScript may run.
  pub fn out_of_bounds(self, typed_array: sys::napi_value) -> std::result::Result<bool, Fail> {
    let Some(fill) = FILL.with(std::cell::Cell::get).map(|fill| self.reference_value(fill)).transpose()?.flatten()
    else {
      return self.beyond_buffer(typed_array);
    };
    let mut result = ptr::null_mut();
    // SAFETY: values of this call's scope; no arguments.
    let status = unsafe { sys::napi_call_function(self.0, typed_array, fill, 0, ptr::null(), &mut result) };
    if status == sys::Status::napi_ok {
      return Ok(false);
    }
    let mut exception = ptr::null_mut();
    call!("napi_get_and_clear_last_exception", sys::napi_get_and_clear_last_exception(self.0, &mut exception));
    Ok(true)
  }

  /// An internalized string, to look properties up by without converting the name each time.
  pub fn string(self, name: &CStr) -> std::result::Result<sys::napi_value, Fail> {
    let mut value = ptr::null_mut();
    call!(
      "napi_create_string_latin1",
      sys::napi_create_string_latin1(self.0, name.as_ptr(), name.to_bytes().len() as isize, &mut value)
    );
    Ok(value)
  }

  /// `object[key]`; may run a getter.
  pub fn get(self, object: sys::napi_value, key: sys::napi_value) -> std::result::Result<sys::napi_value, Fail> {
    let mut value = ptr::null_mut();
    call!("napi_get_property", sys::napi_get_property(self.0, object, key, &mut value));
    Ok(value)
  }

  /// A short description of a value for error messages: its constructor name or its type.
  pub fn describe(self, value: sys::napi_value) -> std::result::Result<String, Fail> {
    if self.type_of(value)? != sys::ValueType::napi_object {
      return self.kind_of(value);
    }
    let constructor = self.property(value, c"constructor")?;
    if self.type_of(constructor)? != sys::ValueType::napi_function {
      return Ok("an object".into());
    }
    let name = self.property(constructor, c"name")?;
    // SAFETY: a value of this scope.
    let name = unsafe { String::from_napi_value(self.0, name) }.unwrap_or_default();
    Ok(if name.is_empty() { "an object".into() } else { name })
  }

  /// What `value` is, for an error, named without running JavaScript: its type, or for an object
  /// "an Array", a typed array's class or "an object" ([`Self::describe`] reads the class's name,
  /// which may run a getter).
  pub fn kind_of(self, value: sys::napi_value) -> std::result::Result<String, Fail> {
    Ok(match self.type_of(value)? {
      sys::ValueType::napi_undefined => "undefined".into(),
      sys::ValueType::napi_null => "null".into(),
      sys::ValueType::napi_boolean => "a boolean".into(),
      sys::ValueType::napi_number => "a number".into(),
      sys::ValueType::napi_string => "a string".into(),
      sys::ValueType::napi_function => "a function".into(),
      sys::ValueType::napi_bigint => "a bigint".into(),
      sys::ValueType::napi_symbol => "a symbol".into(),
      _ => match self.typed_array_class(value)? {
        Some(class) => class.into(),
        None => "an object".into(),
      },
    })
  }
}

thread_local! {
  /// `%TypedArray%.prototype.fill`, taken when the module loaded in this thread's env
  /// ([`take_fill`]), for [`RawEnv::out_of_bounds`].
  static FILL: std::cell::Cell<Option<sys::napi_ref>> = const { std::cell::Cell::new(None) };
}

/// Keeps `%TypedArray%.prototype.fill` for [`RawEnv::out_of_bounds`], read from the global
/// `Float32Array` as the module loads (before the caller's code can reach the module).
pub fn take_fill(env: RawEnv) -> std::result::Result<(), Fail> {
  let mut global = ptr::null_mut();
  call!("napi_get_global", sys::napi_get_global(env.0, &mut global));
  let prototype = env.property(env.property(global, c"Float32Array")?, c"prototype")?;
  let mut typed_array_prototype = ptr::null_mut();
  call!("napi_get_prototype", sys::napi_get_prototype(env.0, prototype, &mut typed_array_prototype));
  let fill = env.property(typed_array_prototype, c"fill")?;
  if env.type_of(fill)? == sys::ValueType::napi_function {
    let fill = env.reference(fill)?;
    FILL.with(|cell| cell.set(Some(fill)));
  }
  Ok(())
}
