//! `setNumThreads` / `getNumThreads`, and `FASTOPTIM_NUM_THREADS`.
//!
//! The pool is the core's, one per process: every optimizer and every worker thread of the
//! process share it (the addon is loaded once per process), so setting the count anywhere sets
//! it everywhere.

// The exports are reached through the napi registration, which test builds leave out.
#![cfg_attr(test, allow(dead_code))]

use std::sync::atomic::{AtomicBool, Ordering};

use fastoptim_core::threads::{self, parse_num_threads, ThreadsError, ENV_VAR, MAX_THREADS};
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::js::Fail;

/// Set once the environment variable has been found valid or absent, or a count has been set.
static CONFIGURED: AtomicBool = AtomicBool::new(false);

/// Fails while `FASTOPTIM_NUM_THREADS` holds something that is not a thread count and no
/// `setNumThreads` call has overridden it, so that a typo does not silently change the count.
pub(crate) fn check_configured() -> std::result::Result<(), Fail> {
  if CONFIGURED.load(Ordering::Acquire) {
    return Ok(());
  }
  if let Ok(text) = std::env::var(ENV_VAR) {
    parse_num_threads(&text)
      .map_err(|e| Fail::value(format!("{ENV_VAR} is {e}; fix or unset it, or call setNumThreads(n)")))?;
  }
  CONFIGURED.store(true, Ordering::Release);
  Ok(())
}

/// Sets how many threads a step may use, the calling thread included, for the whole process.
/// Steps already running finish with the count they started with. The previous pool's threads
/// have exited when this returns (if a step was still running on them, they exit when it ends).
#[napi(catch_unwind)]
pub fn set_num_threads(env: Env, n: Unknown) -> Result<()> {
  let value = n.raw();
  let count = {
    // SAFETY: a value of this call's scope.
    let number = unsafe { f64::from_napi_value(env.raw(), value) }.map_err(|_| {
      Fail::type_error(format!(
        "n must be a number, got {}",
        crate::js::RawEnv(env.raw()).describe(value).unwrap_or_default()
      ))
      .throw(&env)
    })?;
    if !(number.fract() == 0.0 && number >= 1.0 && number <= MAX_THREADS as f64) {
      let shown = fastoptim_core::config::format_number(number);
      return Err(
        Fail::range(format!("invalid n: {shown} (expected a whole number from 1 to {MAX_THREADS})")).throw(&env),
      );
    }
    number as usize
  };
  threads::set_num_threads(count).map_err(|e| {
    match e {
      ThreadsError::Invalid(_) => Fail::range(format!("invalid n: {e}")),
      ThreadsError::Spawn(_) => Fail::state(e.to_string()),
    }
    .throw(&env)
  })?;
  CONFIGURED.store(true, Ordering::Release);
  Ok(())
}

/// How many threads a step may use, the calling thread included.
#[napi(catch_unwind)]
pub fn get_num_threads(env: Env) -> Result<u32> {
  check_configured().map_err(|fail| fail.throw(&env))?;
  Ok(threads::num_threads() as u32)
}

/// Diagnostic, for fastoptim's own tests and benchmarks: how many threads took part in the last
/// parallel step this thread ran (itself and the workers that joined it before it closed); 0
/// before any. Steps too small to be cut, or on one thread, do not reach the pool and leave it.
#[napi(js_name = "__lastStepThreads")]
pub fn last_step_threads() -> u32 {
  threads::last_step_threads() as u32
}
