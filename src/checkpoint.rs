//! `decodeCheckpoint` and `encodeCheckpoint`: the core's safetensors codec
//! ([`fastoptim_core::checkpoint`]) for the facade's `decodeSafetensors` and `encodeSafetensors`;
//! `decodeTensors` and `encodeTensors`: the same codec for files of other names (weight averages,
//! lib/averaging.ts). Each checks its own arguments: bytes that are not a `Uint8Array` are refused
//! with a coded error, and so is a tensor whose bytes do not match its dtype and shape.

// The exports are reached through the napi registration, which test builds leave out.
#![cfg_attr(test, allow(dead_code))]

use std::collections::HashMap;

use fastoptim_core::checkpoint::{self, NamedTensor, Naming, StateTensor, TensorDtype};
use napi::bindgen_prelude::*;
use napi::sys;
use napi_derive::napi;

use crate::js::{Fail, RawEnv};

/// One state tensor of a checkpoint, as `decodeCheckpoint` gives it.
#[napi(object)]
pub struct DecodedTensor {
  /// The parameter's position over all groups.
  pub param: u32,
  /// PyTorch's name, snake_case.
  pub key: String,
  /// The file's dtype: `"F32"`, `"F64"`, `"U8"`, `"BF16"`, `"F16"`, `"I32"` or `"I64"`.
  pub dtype: String,
  pub shape: Vec<u32>,
  /// The elements, in the typed array of the dtype: F32 a Float32Array, F64 a Float64Array, F16
  /// (widened, exactly) a Float32Array, U8 a Uint8Array, BF16 a Uint16Array of raw bit patterns,
  /// I32 an Int32Array, I64 a BigInt64Array. (Spelled out, not aliased: the generated declarations
  /// would name an alias they do not define.)
  pub data: Either6<Float32Array, Float64Array, Uint8Array, Uint16Array, Int32Array, BigInt64Array>,
  /// Of a tensor of shape `[]`: its value, exactly.
  pub scalar: Option<f64>,
}

/// A decoded checkpoint: the header's `__metadata__` and the state tensors.
#[napi(object)]
pub struct DecodedCheckpoint {
  pub metadata: HashMap<String, String>,
  pub tensors: Vec<DecodedTensor>,
}

/// One tensor of a file as `decodeTensors` gives it, under its own name; otherwise as
/// [`DecodedTensor`].
#[napi(object)]
pub struct DecodedNamedTensor {
  pub name: String,
  pub dtype: String,
  pub shape: Vec<u32>,
  pub data: Either6<Float32Array, Float64Array, Uint8Array, Uint16Array, Int32Array, BigInt64Array>,
  pub scalar: Option<f64>,
}

/// A file decoded by `decodeTensors`: the header's `__metadata__` and the tensors, in file order.
#[napi(object)]
pub struct DecodedTensors {
  pub metadata: HashMap<String, String>,
  pub tensors: Vec<DecodedNamedTensor>,
}

/// One tensor for `encodeTensors` to write, as [`TensorToEncode`] under its own name.
#[napi(object)]
pub struct NamedTensorToEncode {
  pub name: String,
  pub dtype: String,
  pub shape: Vec<u32>,
  pub data: Uint8Array,
}

/// One tensor to write: `data` holds its little-endian elements, `shape`'s product times the
/// dtype's size in bytes.
#[napi(object)]
pub struct TensorToEncode {
  pub param: u32,
  pub key: String,
  pub dtype: String,
  pub shape: Vec<u32>,
  pub data: Uint8Array,
}

fn corrupt(why: impl std::fmt::Display) -> Fail {
  corrupt_as(Naming::State, why)
}

fn corrupt_as(naming: Naming, why: impl std::fmt::Display) -> Fail {
  Fail::value(format!("not a valid {}: {why}", naming.what()))
}

/// What JavaScript gets of a decoded tensor: its shape, and its elements in the typed array of
/// its dtype.
type JsData = Either6<Float32Array, Float64Array, Uint8Array, Uint16Array, Int32Array, BigInt64Array>;

fn elements<T: Copy, const N: usize>(bytes: &[u8], from: fn([u8; N]) -> T) -> Vec<T> {
  bytes.chunks_exact(N).map(|c| from(c.try_into().expect("N bytes"))).collect()
}

fn to_js(tensor: StateTensor) -> std::result::Result<DecodedTensor, Fail> {
  let scalar = if tensor.shape.is_empty() { Some(tensor.scalar().map_err(corrupt)?) } else { None };
  let (shape, data) = js_parts(&tensor.name(), tensor.dtype, &tensor.shape, &tensor.data, Naming::State)?;
  Ok(DecodedTensor { param: tensor.param, key: tensor.key, dtype: tensor.dtype.name().into(), shape, data, scalar })
}

fn named_to_js(tensor: NamedTensor, naming: Naming) -> std::result::Result<DecodedNamedTensor, Fail> {
  let scalar = if tensor.shape.is_empty() { Some(tensor.scalar().map_err(|e| corrupt_as(naming, e))?) } else { None };
  let (shape, data) = js_parts(&tensor.name, tensor.dtype, &tensor.shape, &tensor.data, naming)?;
  Ok(DecodedNamedTensor { name: tensor.name, dtype: tensor.dtype.name().into(), shape, data, scalar })
}

fn js_parts(
  name: &str,
  dtype: TensorDtype,
  shape: &[usize],
  bytes: &[u8],
  naming: Naming,
) -> std::result::Result<(Vec<u32>, JsData), Fail> {
  let shape = shape
    .iter()
    .map(|&d| {
      u32::try_from(d).map_err(|_| corrupt_as(naming, format!("{name} has a dimension of {d} (at most 2^32 - 1)")))
    })
    .collect::<std::result::Result<Vec<u32>, Fail>>()?;
  let data = match dtype {
    TensorDtype::F32 => Either6::A(Float32Array::new(elements(bytes, f32::from_le_bytes))),
    TensorDtype::F16 => Either6::A(Float32Array::new(
      elements(bytes, u16::from_le_bytes).into_iter().map(checkpoint::f16_to_f32).collect(),
    )),
    TensorDtype::F64 => Either6::B(Float64Array::new(elements(bytes, f64::from_le_bytes))),
    TensorDtype::U8 => Either6::C(Uint8Array::new(bytes.to_vec())),
    TensorDtype::BF16 => Either6::D(Uint16Array::new(elements(bytes, u16::from_le_bytes))),
    TensorDtype::I32 => Either6::E(Int32Array::new(elements(bytes, i32::from_le_bytes))),
    TensorDtype::I64 => Either6::F(BigInt64Array::new(elements(bytes, i64::from_le_bytes))),
  };
  Ok((shape, data))
}

/// Decodes safetensors bytes into a checkpoint's metadata and state tensors; refuses anything
/// malformed with `ERR_INVALID_ARG_VALUE` (and what is not a `Uint8Array` with
/// `ERR_INVALID_ARG_TYPE`).
#[napi(catch_unwind)]
pub fn decode_checkpoint(env: Env, bytes: Unknown) -> Result<DecodedCheckpoint> {
  decode(RawEnv(env.raw()), bytes.raw()).map_err(|fail| fail.throw(&env))
}

fn decode(env: RawEnv, value: sys::napi_value) -> std::result::Result<DecodedCheckpoint, Fail> {
  // SAFETY: a value of this call; the bytes are copied before any JavaScript runs.
  let Some(bytes) = (unsafe { env.bytes(value)? }) else {
    return Err(Fail::type_error(format!("checkpoint bytes must be a Uint8Array, got {}", env.describe(value)?)));
  };
  let decoded = checkpoint::decode(bytes).map_err(corrupt)?;
  Ok(DecodedCheckpoint {
    metadata: decoded.metadata.into_iter().collect(),
    tensors: decoded.tensors.into_iter().map(to_js).collect::<std::result::Result<_, _>>()?,
  })
}

/// `"state"`, `"averaged"` or `"any"` as a [`Naming`]; refused coded otherwise.
fn naming_of(name: &str) -> std::result::Result<Naming, Fail> {
  Naming::parse(name)
    .ok_or_else(|| Fail::value(format!("naming must be \"state\", \"averaged\" or \"any\", got {name:?}")))
}

/// Decodes safetensors bytes whose tensors are named as `naming` (`"state"`, `"averaged"`:
/// `n_averaged` and `module.<n>`, or `"any"`: a shard of a sharded checkpoint) says, checked as `decodeCheckpoint` checks a checkpoint;
/// refuses anything malformed with `ERR_INVALID_ARG_VALUE` (and what is not a `Uint8Array` with
/// `ERR_INVALID_ARG_TYPE`).
#[napi(catch_unwind)]
pub fn decode_tensors(env: Env, bytes: Unknown, naming: String) -> Result<DecodedTensors> {
  let decode = || -> std::result::Result<DecodedTensors, Fail> {
    let naming = naming_of(&naming)?;
    let raw = RawEnv(env.raw());
    // SAFETY: a value of this call; the bytes are copied before any JavaScript runs.
    let Some(bytes) = (unsafe { raw.bytes(bytes.raw())? }) else {
      return Err(Fail::type_error(format!(
        "{} bytes must be a Uint8Array, got {}",
        naming.what(),
        raw.describe(bytes.raw())?
      )));
    };
    let decoded = checkpoint::decode_named(bytes, naming).map_err(|e| corrupt_as(naming, e))?;
    Ok(DecodedTensors {
      metadata: decoded.metadata.into_iter().collect(),
      tensors: decoded.tensors.into_iter().map(|t| named_to_js(t, naming)).collect::<std::result::Result<_, _>>()?,
    })
  };
  decode().map_err(|fail| fail.throw(&env))
}

/// Encodes tensors named as `naming` says, and `metadata`, as safetensors bytes (as
/// `encodeCheckpoint`).
#[napi(catch_unwind)]
pub fn encode_tensors(
  env: Env,
  naming: String,
  metadata: HashMap<String, String>,
  tensors: Vec<NamedTensorToEncode>,
) -> Result<Uint8Array> {
  let encode = || -> std::result::Result<Uint8Array, Fail> {
    let naming = naming_of(&naming)?;
    let tensors = tensors
      .iter()
      .map(|t| {
        let dtype = dtype_of(&t.name, &t.dtype)?;
        let shape = t.shape.iter().map(|&d| d as usize).collect();
        Ok(NamedTensor { name: t.name.clone(), dtype, shape, data: t.data.to_vec() })
      })
      .collect::<std::result::Result<Vec<_>, Fail>>()?;
    let bytes = checkpoint::encode_named(&sorted(metadata), &tensors, naming).map_err(|e| Fail::value(e.0))?;
    Ok(Uint8Array::new(bytes))
  };
  encode().map_err(|fail| fail.throw(&env))
}

fn dtype_of(name: &str, dtype: &str) -> std::result::Result<TensorDtype, Fail> {
  TensorDtype::parse(dtype).ok_or_else(|| Fail::value(format!("{name}: unknown dtype {dtype:?}")))
}

fn sorted(metadata: HashMap<String, String>) -> Vec<(String, String)> {
  let mut metadata: Vec<(String, String)> = metadata.into_iter().collect();
  metadata.sort();
  metadata
}

/// Encodes state tensors and `metadata` (the header's `__metadata__`) as safetensors bytes.
#[napi(catch_unwind)]
pub fn encode_checkpoint(
  env: Env,
  metadata: HashMap<String, String>,
  tensors: Vec<TensorToEncode>,
) -> Result<Uint8Array> {
  let encode = || -> std::result::Result<Uint8Array, Fail> {
    let tensors = tensors
      .iter()
      .map(|t| {
        let dtype = dtype_of(&format!("state.{}.{}", t.param, t.key), &t.dtype)?;
        let shape = t.shape.iter().map(|&d| d as usize).collect();
        Ok(StateTensor { param: t.param, key: t.key.clone(), dtype, shape, data: t.data.to_vec() })
      })
      .collect::<std::result::Result<Vec<_>, Fail>>()?;
    let bytes = checkpoint::encode(&sorted(metadata), &tensors).map_err(|e| Fail::value(e.0))?;
    Ok(Uint8Array::new(bytes))
  };
  encode().map_err(|fail| fail.throw(&env))
}
