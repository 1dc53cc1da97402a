//! The one check that no array a call writes shares memory with another array of the call, used
//! by steps (`params.rs`), clipping (`clip.rs`) and, through [`check_disjoint`], by the facade when
//! parameters join an optimizer, so that all three refuse the same arrays with the same words.

// `check_disjoint` is reached through the napi registration, which test builds leave out.
#![cfg_attr(test, allow(dead_code))]

use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::js::{Fail, RawEnv};

/// One array's bytes; `id` is the caller's name for it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Span {
  pub start: usize,
  pub end: usize,
  /// Written by the call: it must not overlap any other array. Arrays only read may overlap each other.
  pub writable: bool,
  pub id: usize,
}

/// The first two arrays, in address order, that break the rule: a writable one overlapping any other.
/// Empty arrays overlap nothing.
pub(crate) fn find_overlap(spans: &mut Vec<Span>) -> Option<(usize, usize)> {
  spans.retain(|span| span.end > span.start);
  spans.sort_unstable_by_key(|span| span.start);
  let (mut any, mut writable): (Option<&Span>, Option<&Span>) = (None, None);
  for span in spans.iter() {
    let clash = match (writable, any) {
      (Some(w), _) if span.start < w.end => Some(w),
      (_, Some(a)) if span.writable && span.start < a.end => Some(a),
      _ => None,
    };
    if let Some(other) = clash {
      return Some((other.id, span.id));
    }
    if any.is_none_or(|a| span.end > a.end) {
      any = Some(span);
    }
    if span.writable && writable.is_none_or(|w| span.end > w.end) {
      writable = Some(span);
    }
  }
  None
}

/// The spans of the last call that overlapped nothing, as the call gave them (unsorted), so that a
/// call over the same arrays as the one before it (every step of a training loop) passes without
/// sorting them again.
#[derive(Default)]
pub(crate) struct Passed(Vec<Span>);

impl Passed {
  /// [`find_overlap`] for `spans`, which it may sort, unless they are the last call's that passed.
  pub fn find_overlap(&mut self, spans: &mut Vec<Span>) -> Option<(usize, usize)> {
    if *spans == self.0 {
      return None;
    }
    self.0.clone_from(spans);
    let found = find_overlap(spans);
    if found.is_some() {
      self.0.clear();
    }
    found
  }
}

/// The message for two arrays of a step that share memory.
pub(crate) fn step_message(a: &str, b: &str) -> String {
  format!("{a} and {b} share memory; a parameter's data must not overlap any other array of the step")
}

/// Checks `arrays` (typed arrays; null or undefined entries are skipped) as a step would: an array
/// with `writable[i]` must share no memory with any other. Throws `ERR_INVALID_ARG_VALUE` naming
/// the two by `labels`, with the words a step uses.
#[napi(catch_unwind)]
pub fn check_disjoint(env: Env, arrays: Vec<Unknown>, writable: Vec<bool>, labels: Vec<String>) -> Result<()> {
  let raw = RawEnv(env.raw());
  let result = (|| {
    if writable.len() != arrays.len() || labels.len() != arrays.len() {
      return Err(Fail::value("checkDisjoint: arrays, writable and labels must have one entry each".into()));
    }
    let mut spans = Vec::with_capacity(arrays.len());
    for (id, array) in arrays.iter().enumerate() {
      if let Some(view) = raw.float_array(array.raw())?.filter(|view| !view.detached) {
        spans.push(Span { start: view.address(), end: view.address() + view.byte_len(), writable: writable[id], id });
      }
    }
    match find_overlap(&mut spans) {
      Some((a, b)) => Err(Fail::value(step_message(&labels[a], &labels[b]))),
      None => Ok(()),
    }
  })();
  result.map_err(|fail| fail.throw(&env))
}
