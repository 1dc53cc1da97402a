//! `decodeCheckpoint` and `encodeCheckpoint`: the core's safetensors codec
//! ([`fastoptim_core::checkpoint`]) for the facade's `decodeSafetensors` and `encodeSafetensors`.
//! Each checks its own arguments: bytes that are not a `Uint8Array` are refused with a coded
//! error, and so is a tensor whose bytes do not match its dtype and shape.

// The exports are reached through the napi registration, which test builds leave out.
#![cfg_attr(test, allow(dead_code))]

use std::collections::HashMap;

use fastoptim_core::checkpoint::{self, NamedTensor, StateTensor, TensorDtype};
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
  Fail::value(format!("not a valid optimizer checkpoint: {why}"))
}

fn elements<T: Copy, const N: usize>(bytes: &[u8], from: fn([u8; N]) -> T) -> Vec<T> {
  bytes.chunks_exact(N).map(|c| from(c.try_into().expect("N bytes"))).collect()
}

/// Typed as `decodeCheckpoint` and `decodeTensors` give tensor data.
type TypedData = Either6<Float32Array, Float64Array, Uint8Array, Uint16Array, Int32Array, BigInt64Array>;

fn to_js(tensor: StateTensor) -> std::result::Result<DecodedTensor, Fail> {
  let Parts { dtype, shape, data, scalar } = parts(&tensor.name(), tensor.dtype, &tensor.shape, &tensor.data)?;
  Ok(DecodedTensor { param: tensor.param, key: tensor.key, dtype, shape, data, scalar })
}

/// What both decoders give of a tensor besides its name.
struct Parts {
  dtype: String,
  shape: Vec<u32>,
  data: TypedData,
  scalar: Option<f64>,
}

fn parts(name: &str, dtype: TensorDtype, shape: &[usize], data: &[u8]) -> std::result::Result<Parts, Fail> {
  let scalar = if shape.is_empty() {
    let tensor = NamedTensor { name: name.into(), dtype, shape: vec![], data: data.to_vec() };
    Some(tensor.scalar().map_err(corrupt)?)
  } else {
    None
  };
  Ok(Parts { dtype: dtype.name().into(), shape: shape_to_js(name, shape)?, data: typed(dtype, data), scalar })
}

/// A tensor to write: its dtype parsed and its shape widened; `name` labels an error.
fn parse_tensor(
  name: &dyn std::fmt::Display,
  dtype: &str,
  shape: &[u32],
) -> std::result::Result<(TensorDtype, Vec<usize>), Fail> {
  let parsed = TensorDtype::parse(dtype).ok_or_else(|| Fail::value(format!("{name}: unknown dtype {dtype:?}")))?;
  Ok((parsed, shape.iter().map(|&d| d as usize).collect()))
}

/// Runs an encoder over the metadata, sorted, into the bytes JavaScript gets, or its error thrown.
fn encoded(
  env: &Env,
  metadata: HashMap<String, String>,
  encode: impl FnOnce(&[(String, String)]) -> std::result::Result<Vec<u8>, Fail>,
) -> Result<Uint8Array> {
  let mut metadata: Vec<(String, String)> = metadata.into_iter().collect();
  metadata.sort();
  encode(&metadata).map(Uint8Array::new).map_err(|fail| fail.throw(env))
}

fn shape_to_js(name: &str, shape: &[usize]) -> std::result::Result<Vec<u32>, Fail> {
  shape
    .iter()
    .map(|&d| u32::try_from(d).map_err(|_| corrupt(format!("{name} has a dimension of {d} (at most 2^32 - 1)"))))
    .collect()
}

/// The elements of `bytes` in the typed array of `dtype`.
fn typed(dtype: TensorDtype, bytes: &[u8]) -> TypedData {
  match dtype {
    TensorDtype::F32 => Either6::A(Float32Array::new(elements(bytes, f32::from_le_bytes))),
    TensorDtype::F16 => Either6::A(Float32Array::new(
      elements(bytes, u16::from_le_bytes).into_iter().map(checkpoint::f16_to_f32).collect(),
    )),
    TensorDtype::F64 => Either6::B(Float64Array::new(elements(bytes, f64::from_le_bytes))),
    TensorDtype::U8 => Either6::C(Uint8Array::new(bytes.to_vec())),
    TensorDtype::BF16 => Either6::D(Uint16Array::new(elements(bytes, u16::from_le_bytes))),
    TensorDtype::I32 => Either6::E(Int32Array::new(elements(bytes, i32::from_le_bytes))),
    TensorDtype::I64 => Either6::F(BigInt64Array::new(elements(bytes, i64::from_le_bytes))),
  }
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

/// Encodes state tensors and `metadata` (the header's `__metadata__`) as safetensors bytes.
#[napi(catch_unwind)]
pub fn encode_checkpoint(
  env: Env,
  metadata: HashMap<String, String>,
  tensors: Vec<TensorToEncode>,
) -> Result<Uint8Array> {
  encoded(&env, metadata, |metadata| {
    let tensors = tensors
      .iter()
      .map(|t| {
        let (dtype, shape) = parse_tensor(&format_args!("state.{}.{}", t.param, t.key), &t.dtype, &t.shape)?;
        Ok(StateTensor { param: t.param, key: t.key.clone(), dtype, shape, data: t.data.to_vec() })
      })
      .collect::<std::result::Result<Vec<_>, Fail>>()?;
    checkpoint::encode(metadata, &tensors).map_err(|e| Fail::value(e.0))
  })
}

/// A tensor of any name, as `decodeTensors` gives it.
#[napi(object)]
pub struct DecodedNamedTensor {
  pub name: String,
  /// The file's dtype, as `DecodedTensor.dtype`.
  pub dtype: String,
  pub shape: Vec<u32>,
  /// The elements, typed as `DecodedTensor.data`. (Spelled out, not aliased, as there.)
  pub data: Either6<Float32Array, Float64Array, Uint8Array, Uint16Array, Int32Array, BigInt64Array>,
  /// Of a tensor of shape `[]`: its value, exactly.
  pub scalar: Option<f64>,
}

/// A decoded safetensors file of tensors of any name: its `__metadata__` and its tensors in file order.
#[napi(object)]
pub struct DecodedTensors {
  pub metadata: HashMap<String, String>,
  pub tensors: Vec<DecodedNamedTensor>,
}

/// One tensor of any name to write, its `data` as `TensorToEncode.data`.
#[napi(object)]
pub struct NamedTensorToEncode {
  pub name: String,
  pub dtype: String,
  pub shape: Vec<u32>,
  pub data: Uint8Array,
}

/// Decodes safetensors bytes whose tensors may have any name (the sharded checkpoints'
/// `state.<fully qualified name>.<key>`), with `decodeCheckpoint`'s checks but for the names.
#[napi(catch_unwind)]
pub fn decode_tensors(env: Env, bytes: Unknown) -> Result<DecodedTensors> {
  decode_named(RawEnv(env.raw()), bytes.raw()).map_err(|fail| fail.throw(&env))
}

fn decode_named(env: RawEnv, value: sys::napi_value) -> std::result::Result<DecodedTensors, Fail> {
  // SAFETY: a value of this call; the bytes are copied before any JavaScript runs.
  let Some(bytes) = (unsafe { env.bytes(value)? }) else {
    return Err(Fail::type_error(format!("safetensors bytes must be a Uint8Array, got {}", env.describe(value)?)));
  };
  let decoded = checkpoint::decode_named(bytes).map_err(corrupt)?;
  let tensors = decoded
    .tensors
    .into_iter()
    .map(|tensor| {
      let Parts { dtype, shape, data, scalar } = parts(&tensor.name, tensor.dtype, &tensor.shape, &tensor.data)?;
      Ok(DecodedNamedTensor { name: tensor.name, dtype, shape, data, scalar })
    })
    .collect::<std::result::Result<_, Fail>>()?;
  Ok(DecodedTensors { metadata: decoded.metadata.into_iter().collect(), tensors })
}

/// Encodes tensors of any name (not empty, not `__metadata__`) and `metadata` as safetensors bytes.
#[napi(catch_unwind)]
pub fn encode_tensors(
  env: Env,
  metadata: HashMap<String, String>,
  tensors: Vec<NamedTensorToEncode>,
) -> Result<Uint8Array> {
  encoded(&env, metadata, |metadata| {
    let tensors = tensors
      .iter()
      .map(|t| {
        let (dtype, shape) = parse_tensor(&t.name, &t.dtype, &t.shape)?;
        Ok(NamedTensor { name: t.name.clone(), dtype, shape, data: t.data.to_vec() })
      })
      .collect::<std::result::Result<Vec<_>, Fail>>()?;
    checkpoint::encode_named(metadata, &tensors).map_err(|e| Fail::value(e.0))
  })
}
