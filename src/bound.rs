//! Functions bound to one native object, registered by hand rather than with `#[napi]`, for the
//! calls a training loop makes every step (`stepAgain`, the 8-bit optimizers' step): napi-rs's
//! glue allocates a borrow scope for every call with arguments, and a step allocates nothing.
//!
//! A bound function holds its object's address in a [`Cell`] that the object's finalizer clears,
//! after which the function refuses with `ERR_INVALID_STATE`; so a call neither checks the
//! object's class nor unwraps it. What napi-rs's borrow scope would refuse, a call re-entering an
//! object that a call below it on the stack is using (a getter the step runs may call back), is
//! refused here by [`in_step`] and [`Stepping`].

use std::cell::RefCell;
use std::ffi::{c_void, CStr};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Arc;

use napi::bindgen_prelude::{validate_type_tag, TypeTag};
use napi::{sys, Env};

use crate::js::{Fail, RawEnv};

/// Where the functions bound to a native object find it: its address, or null once it is
/// finalized. The object keeps one and clears it in its finalizer; each function holds a clone.
pub(crate) type Cell<T> = Arc<AtomicPtr<T>>;

/// The C signature of a Node-API callback.
pub(crate) type Callback = unsafe extern "C" fn(sys::napi_env, sys::napi_callback_info) -> sys::napi_value;

/// A new JavaScript function `name` that runs `callback` with `cell` as its data ([`args`]).
pub(crate) fn bind<T>(
  env: RawEnv,
  cell: &Cell<T>,
  name: &CStr,
  callback: Callback,
) -> std::result::Result<sys::napi_value, Fail> {
  let data = Arc::into_raw(Arc::clone(cell)) as *mut c_void;
  let mut function = std::ptr::null_mut();
  // SAFETY: this call's env; the callback has the signature Node-API expects; `data` is an `Arc`
  // that the finalizer below takes back.
  let made = unsafe {
    sys::napi_create_function(env.0, name.as_ptr(), name.count_bytes() as isize, Some(callback), data, &mut function)
  };
  // SAFETY: as above; the finalizer runs once, when the function is collected.
  if made != sys::Status::napi_ok
    || unsafe {
      sys::napi_add_finalizer(env.0, function, data, Some(drop_cell::<T>), std::ptr::null_mut(), std::ptr::null_mut())
    } != sys::Status::napi_ok
  {
    // SAFETY: the `Arc` made above, not handed to a finalizer.
    drop(unsafe { Arc::from_raw(data as *const AtomicPtr<T>) });
    return Err(Fail::state(format!("could not make the function {}", name.to_string_lossy())));
  }
  Ok(function)
}

unsafe extern "C" fn drop_cell<T>(_env: sys::napi_env, data: *mut c_void, _hint: *mut c_void) {
  // SAFETY: `data` is the `Arc` `bind` made for this function, taken back once.
  drop(unsafe { Arc::from_raw(data as *const AtomicPtr<T>) });
}

/// The callback of a function `what(object)` that returns a new function bound to `object`:
/// `make` checks the object and binds ([`bind`]); its error, or a panic, is thrown.
///
/// # Safety
/// `env` and `info` are a callback's own.
pub(crate) unsafe fn of(
  env: sys::napi_env,
  info: sys::napi_callback_info,
  what: &str,
  make: fn(RawEnv, sys::napi_value) -> std::result::Result<sys::napi_value, Fail>,
) -> sys::napi_value {
  let mut argc = 1;
  let mut argv = [std::ptr::null_mut(); 1];
  // SAFETY: the callback's own env and info; room for one argument.
  let status = unsafe {
    sys::napi_get_cb_info(env, info, &mut argc, argv.as_mut_ptr(), std::ptr::null_mut(), std::ptr::null_mut())
  };
  let result = if status != sys::Status::napi_ok || argc < 1 {
    Err(Fail::type_error(format!("{what}(optimizer) takes one argument")))
  } else {
    std::panic::catch_unwind(|| make(RawEnv(env), argv[0]))
      .unwrap_or_else(|_| Err(Fail::state(format!("{what} panicked"))))
  };
  match result {
    Ok(function) => function,
    Err(fail) => {
      let _ = fail.throw(&Env::from_raw(env));
      std::ptr::null_mut()
    }
  }
}

/// A call of a function [`bind`] made: its first `N` arguments (null past those given), how many
/// were given, and the object's address (null once it was finalized); `None` if Node-API could
/// not say.
///
/// # Safety
/// `env` and `info` are a callback's own; the function was made by [`bind`] for a `T`.
pub(crate) unsafe fn args<T, const N: usize>(
  env: sys::napi_env,
  info: sys::napi_callback_info,
) -> Option<([sys::napi_value; N], usize, *mut T)> {
  let mut argc = N;
  let mut argv = [std::ptr::null_mut(); N];
  let mut data = std::ptr::null_mut();
  // SAFETY: the callback's own env and info; room for `N` arguments.
  let status =
    unsafe { sys::napi_get_cb_info(env, info, &mut argc, argv.as_mut_ptr(), std::ptr::null_mut(), &mut data) };
  if status != sys::Status::napi_ok || data.is_null() {
    return None;
  }
  // SAFETY: the function's data is the `Arc` its finalizer drops, alive while it can be called.
  let cell = unsafe { &*(data as *const AtomicPtr<T>) };
  Some((argv, argc, cell.load(Ordering::Acquire)))
}

/// Runs `f` on the object of a call of a bound function `what` ([`args`]' address), refusing
/// with `ERR_INVALID_STATE` when the object was finalized or a step of it is running below on the
/// stack ([`in_step`]); a panic becomes an error. `f` must run no JavaScript (so it is not marked
/// as in a step: nothing can call back into the object while it runs).
pub(crate) fn enter<T, R>(
  object: *mut T,
  what: &str,
  f: impl FnOnce(&mut T) -> std::result::Result<R, Fail>,
) -> std::result::Result<R, Fail> {
  if object.is_null() {
    return Err(Fail::state(format!("{what}: its optimizer was collected")));
  }
  if in_step(object) {
    return Err(Fail::state(format!("{what} was called from JavaScript run by a step of the same optimizer")));
  }
  std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
    // SAFETY: the object is alive (its finalizer clears the address a bound function holds) and
    // owned by its JavaScript object, which does not move it; no other call on it is running
    // (`in_step`), and none can start while `f` runs no JavaScript.
    f(unsafe { &mut *object })
  }))
  .unwrap_or_else(|_| Err(Fail::state(format!("{what} panicked"))))
}

/// Clears `cell`, when there is one: what the finalizer of an object with bound functions does.
pub(crate) fn release<T>(cell: &Option<Cell<T>>) {
  if let Some(cell) = cell {
    cell.store(std::ptr::null_mut(), Ordering::Release);
  }
}

/// The `T` that a JavaScript object wraps, checked as napi-rs's method glue checks a receiver,
/// for functions that must not go through that glue (it allocates, and for a returned `AsyncTask`
/// it keeps the object borrowed until the task settles). `class` names `T` in the error.
///
/// # Safety
/// `object` must be a value of `env`'s current call. The reference must not outlive the call,
/// and the call must not run JavaScript while it lives.
pub(crate) unsafe fn unwrap<'a, T: TypeTag>(
  env: RawEnv,
  object: sys::napi_value,
  what: &str,
  class: &str,
) -> std::result::Result<&'a mut T, Fail> {
  let wrong_class = || Fail::type_error(format!("{what}: optimizer must be a {class}"));
  // SAFETY: a value of this call's scope.
  unsafe { validate_type_tag(env.0, object, &T::type_tag(), class) }.map_err(|_| wrong_class())?;
  let mut wrapped = std::ptr::null_mut();
  // SAFETY: as above; the tag proves the object wraps a `T`.
  if unsafe { sys::napi_unwrap(env.0, object, &mut wrapped) } != sys::Status::napi_ok {
    return Err(wrong_class());
  }
  let wrapped = wrapped.cast::<T>();
  if in_step(wrapped) {
    return Err(Fail::state(format!("{what} was called from JavaScript run by a step of the same optimizer")));
  }
  // SAFETY: the object owns this `T` and cannot be collected during the call; no other call on
  // it is running (`in_step`), and none can start while no JavaScript runs.
  Ok(unsafe { &mut *wrapped })
}

thread_local! {
  /// The native objects whose step is running on this thread (a getter it runs may call into
  /// them): their addresses.
  static IN_STEP: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// Whether a step of `object` is running on this thread.
pub(crate) fn in_step<T>(object: *const T) -> bool {
  IN_STEP.with(|active| active.borrow().contains(&(object as usize)))
}

/// Marks `object` as in a step until dropped.
pub(crate) struct Stepping(usize);

impl Stepping {
  pub(crate) fn new<T>(object: *const T) -> Self {
    IN_STEP.with(|active| active.borrow_mut().push(object as usize));
    Stepping(object as usize)
  }
}

impl Drop for Stepping {
  fn drop(&mut self) {
    IN_STEP.with(|active| {
      let mut active = active.borrow_mut();
      if let Some(i) = active.iter().rposition(|&a| a == self.0) {
        active.remove(i);
      }
    });
  }
}
