//! Optimizer checkpoints as safetensors files, read and written with Hugging Face's `safetensors`
//! crate, whose header, offset and dtype checks every file passes through.
//!
//! A checkpoint holds one tensor per piece of per-parameter state, named as PyTorch's
//! `state_dict()` names it (`state.<parameter>.<key>`, `key` in snake_case), and its param groups
//! as JSON text in the header's `__metadata__` (under `param_groups`), so that
//! `safetensors.torch.load_file` and `safe_open(...).metadata()` give PyTorch its state dict back.
//! The codec is general over the dtypes optimizer state needs: F32 and F64 buffers and scalars,
//! U8 codes, BF16 and F16 (kept as their raw 16-bit patterns), I32 and I64 scalars, of any shape.
//! Nothing here knows what an optimizer's state means: the caller checks names and lengths.
//!
//! The same codec reads and writes weight averages (EMA, SWA) as PyTorch's
//! `AveragedModel.state_dict()` names them, `n_averaged` and `module.<n>`: [`decode_named`] and
//! [`encode_named`] take the [`Naming`] a file's tensors must follow.

use std::collections::HashMap;
use std::fmt;

use safetensors::tensor::{Dtype as FileDtype, SafeTensorError, TensorView};
use safetensors::SafeTensors;

/// The element types a checkpoint tensor may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorDtype {
  U8,
  I32,
  I64,
  BF16,
  F16,
  F32,
  F64,
}

impl TensorDtype {
  pub const ALL: [TensorDtype; 7] = [Self::U8, Self::I32, Self::I64, Self::BF16, Self::F16, Self::F32, Self::F64];

  /// The name safetensors gives it (`"F32"`).
  pub fn name(self) -> &'static str {
    match self {
      Self::U8 => "U8",
      Self::I32 => "I32",
      Self::I64 => "I64",
      Self::BF16 => "BF16",
      Self::F16 => "F16",
      Self::F32 => "F32",
      Self::F64 => "F64",
    }
  }

  pub fn parse(name: &str) -> Option<Self> {
    Self::ALL.into_iter().find(|d| d.name() == name)
  }

  /// Bytes per element.
  pub fn size(self) -> usize {
    match self {
      Self::U8 => 1,
      Self::BF16 | Self::F16 => 2,
      Self::I32 | Self::F32 => 4,
      Self::I64 | Self::F64 => 8,
    }
  }

  fn file(self) -> FileDtype {
    match self {
      Self::U8 => FileDtype::U8,
      Self::I32 => FileDtype::I32,
      Self::I64 => FileDtype::I64,
      Self::BF16 => FileDtype::BF16,
      Self::F16 => FileDtype::F16,
      Self::F32 => FileDtype::F32,
      Self::F64 => FileDtype::F64,
    }
  }

  fn of_file(dtype: FileDtype) -> Option<Self> {
    Self::ALL.into_iter().find(|d| d.file() == dtype)
  }
}

/// One tensor of per-parameter state.
#[derive(Clone, Debug, PartialEq)]
pub struct StateTensor {
  /// The parameter's position over all groups (`<n>` of `state.<n>.<key>`).
  pub param: u32,
  /// PyTorch's name, snake_case (`exp_avg`).
  pub key: String,
  pub dtype: TensorDtype,
  pub shape: Vec<usize>,
  /// The elements, little-endian, `shape`'s product times `dtype.size()` bytes.
  pub data: Vec<u8>,
}

impl StateTensor {
  /// `state.<param>.<key>`.
  pub fn name(&self) -> String {
    format!("state.{}.{}", self.param, self.key)
  }

  /// The value of a tensor of one element as a number, exactly (an I64 beyond 2^53 fails, a
  /// BF16 or F16 widens without rounding).
  pub fn scalar(&self) -> Result<f64, CheckpointError> {
    scalar(&self.name(), self.dtype, &self.data)
  }
}

/// A tensor of a file under its own name (see [`Naming`]).
#[derive(Clone, Debug, PartialEq)]
pub struct NamedTensor {
  pub name: String,
  pub dtype: TensorDtype,
  pub shape: Vec<usize>,
  /// The elements, little-endian, `shape`'s product times `dtype.size()` bytes.
  pub data: Vec<u8>,
}

impl NamedTensor {
  /// As [`StateTensor::scalar`].
  pub fn scalar(&self) -> Result<f64, CheckpointError> {
    scalar(&self.name, self.dtype, &self.data)
  }
}

/// The names the tensors of a kind of file have. Each name has one spelling (no leading zeros),
/// so that no two names decode to one tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Naming {
  /// An optimizer checkpoint: `state.<n>.<key>`, as `Optimizer.state_dict()` names its state.
  State,
  /// A weight average: `n_averaged` and `module.<n>`, as PyTorch's `AveragedModel.state_dict()`
  /// names them for a model whose parameters are a list.
  Averaged,
  /// Any name safetensors can hold (not empty, not `__metadata__`): a shard of a sharded
  /// checkpoint, whose state `torch.distributed.checkpoint` names by each parameter's fully
  /// qualified name (`state.fc1.weight.exp_avg`) rather than its position.
  Any,
}

impl Naming {
  /// `"state"` or `"averaged"`.
  pub fn parse(name: &str) -> Option<Self> {
    match name {
      "state" => Some(Self::State),
      "averaged" => Some(Self::Averaged),
      "any" => Some(Self::Any),
      _ => None,
    }
  }

  /// The names it allows, for messages.
  pub fn rule(self) -> &'static str {
    match self {
      Self::State => "state.<n>.<key>",
      Self::Averaged => "n_averaged or module.<n>",
      Self::Any => "anything but empty or __metadata__",
    }
  }

  /// What a file of these names is, for messages.
  pub fn what(self) -> &'static str {
    match self {
      Self::State => "optimizer checkpoint",
      Self::Averaged => "weight-average checkpoint",
      Self::Any => "checkpoint shard",
    }
  }

  pub fn accepts(self, name: &str) -> bool {
    match self {
      Self::State => parse_name(name).is_some(),
      Self::Averaged => name == "n_averaged" || name.strip_prefix("module.").and_then(position).is_some(),
      Self::Any => !name.is_empty() && name != "__metadata__",
    }
  }
}

/// The value of a tensor of one element, named `name` in errors (see [`StateTensor::scalar`]).
fn scalar(name: &str, dtype: TensorDtype, bytes: &[u8]) -> Result<f64, CheckpointError> {
  let fail = |why: &str| CheckpointError(format!("{name} {why}"));
  if bytes.len() != dtype.size() {
    return Err(fail(&format!("holds {} bytes, not one {} value", bytes.len(), dtype.name())));
  }
  let word = |n: usize| -> [u8; 8] {
    let mut w = [0; 8];
    w[..n].copy_from_slice(&bytes[..n]);
    w
  };
  Ok(match dtype {
    TensorDtype::U8 => f64::from(bytes[0]),
    TensorDtype::I32 => f64::from(i32::from_le_bytes(word(4)[..4].try_into().expect("4 bytes"))),
    TensorDtype::I64 => {
      let value = i64::from_le_bytes(word(8));
      if value.unsigned_abs() > 1 << 53 {
        return Err(fail(&format!("is {value}, beyond the integers a number holds exactly (2^53)")));
      }
      value as f64
    }
    TensorDtype::BF16 => f64::from(f32::from_bits(u32::from(u16::from_le_bytes([bytes[0], bytes[1]])) << 16)),
    TensorDtype::F16 => f64::from(f16_to_f32(u16::from_le_bytes([bytes[0], bytes[1]]))),
    TensorDtype::F32 => f64::from(f32::from_le_bytes(word(4)[..4].try_into().expect("4 bytes"))),
    TensorDtype::F64 => f64::from_le_bytes(word(8)),
  })
}

/// IEEE half precision (F16) to f32, exactly.
pub fn f16_to_f32(bits: u16) -> f32 {
  let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
  let exponent = i32::from((bits >> 10) & 0x1f);
  let fraction = f64::from(bits & 0x3ff);
  let value = sign
    * match exponent {
      0 => fraction * 2f64.powi(-24),
      31 if fraction == 0.0 => f64::INFINITY,
      31 => f64::NAN,
      _ => (1.0 + fraction / 1024.0) * 2f64.powi(exponent - 15),
    };
  // Every half-precision value is a float32 value.
  value as f32
}

/// A decoded checkpoint: its metadata and its tensors (state tensors by parameter, then in file
/// order; named ones in file order).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Checkpoint<T = StateTensor> {
  /// The header's `__metadata__`, by key.
  pub metadata: Vec<(String, String)>,
  pub tensors: Vec<T>,
}

/// Why bytes are not a checkpoint, or a checkpoint cannot be written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointError(pub String);

impl fmt::Display for CheckpointError {
  fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    f.write_str(&self.0)
  }
}

impl std::error::Error for CheckpointError {}

/// Headers longer than this are refused before they are parsed (safetensors' own limit).
pub const MAX_HEADER_BYTES: usize = 100_000_000;

/// A position written in decimal, in its one spelling (no leading zeros), below 2^32.
fn position(index: &str) -> Option<u32> {
  let canonical = index == "0" || !index.starts_with('0');
  if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) || !canonical {
    return None;
  }
  index.parse().ok()
}

/// `state.<n>.<key>`: the parameter's position and the key, or `None`.
fn parse_name(name: &str) -> Option<(u32, &str)> {
  let rest = name.strip_prefix("state.")?;
  let (index, key) = rest.split_once('.')?;
  let word = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
  if !word(key) {
    return None;
  }
  Some((position(index)?, key))
}

/// Decodes a checkpoint. Refuses anything safetensors refuses (a header length past the end, a
/// header that is not JSON, offsets that overlap, leave gaps, run backwards or past the data,
/// sizes that do not match shape and dtype), dtypes other than [`TensorDtype`]'s, and tensor
/// names other than `state.<n>.<key>`.
pub fn decode(bytes: &[u8]) -> Result<Checkpoint, CheckpointError> {
  let file = decode_named(bytes, Naming::State)?;
  let mut tensors: Vec<StateTensor> = file
    .tensors
    .into_iter()
    .map(|t| {
      let (param, key) = parse_name(&t.name).expect("a name `Naming::State` accepts");
      StateTensor { param, key: key.to_owned(), dtype: t.dtype, shape: t.shape, data: t.data }
    })
    .collect();
  tensors.sort_by_key(|t| t.param);
  Ok(Checkpoint { metadata: file.metadata, tensors })
}

/// Decodes a file whose tensors are named as `naming` says, checked as [`decode`] checks a
/// checkpoint; its tensors in file order.
pub fn decode_named(bytes: &[u8], naming: Naming) -> Result<Checkpoint<NamedTensor>, CheckpointError> {
  let corrupt = |why: String| CheckpointError(why);
  if bytes.len() < 8 {
    return Err(corrupt(format!("{} bytes, shorter than the 8-byte header length", bytes.len())));
  }
  let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
  if header_len > (bytes.len() - 8) as u64 {
    return Err(corrupt(format!("header length {header_len} exceeds the file of {} bytes", bytes.len())));
  }
  let data_len = bytes.len() - 8 - header_len as usize;
  let (header_len, header) = SafeTensors::read_metadata(bytes).map_err(|error| corrupt(describe(&error, data_len)))?;
  // `read_metadata` proved every tensor's offsets in bounds, in order and of its size.
  let data = &bytes[8 + header_len..];
  let mut metadata: Vec<(String, String)> =
    header.metadata().as_ref().map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default();
  metadata.sort();
  let mut tensors = Vec::new();
  for name in header.offset_keys() {
    let info = header.info(&name).expect("a name of the header");
    if !naming.accepts(&name) {
      return Err(corrupt(format!("tensor {name:?} is not named {}", naming.rule())));
    }
    let dtype = TensorDtype::of_file(info.dtype).ok_or_else(|| {
      let names: Vec<&str> = TensorDtype::ALL.iter().map(|d| d.name()).collect();
      corrupt(format!("{name} has dtype {:?} (expected one of {})", info.dtype, names.join(", ")))
    })?;
    let data = data[info.data_offsets.0..info.data_offsets.1].to_vec();
    tensors.push(NamedTensor { name, dtype, shape: info.shape.clone(), data });
  }
  Ok(Checkpoint { metadata, tensors })
}

/// What a safetensors error says, in the checkpoint's terms.
fn describe(error: &SafeTensorError, data_len: usize) -> String {
  match error {
    SafeTensorError::InvalidHeader(e) => format!("header is not UTF-8 ({e})"),
    SafeTensorError::InvalidHeaderDeserialization(e) | SafeTensorError::JsonError(e) => {
      format!("header is not JSON of tensors and __metadata__ ({e})")
    }
    SafeTensorError::HeaderTooLarge => format!("header longer than {MAX_HEADER_BYTES} bytes"),
    SafeTensorError::InvalidOffset(name) => {
      format!(
        "data_offsets of {name} do not fit: each must begin where the tensor before it ends, and end after it begins"
      )
    }
    SafeTensorError::TensorInvalidInfo | SafeTensorError::ValidationOverflow | SafeTensorError::MisalignedSlice => {
      format!("data_offsets of a tensor do not fit its shape and dtype ({error})")
    }
    SafeTensorError::MetadataIncompleteBuffer => {
      format!("data_offsets of the tensors do not fit the {data_len} data bytes: the last must end where the file does")
    }
    other => format!("{other}"),
  }
}

/// Encodes `tensors` and `metadata` (written as `__metadata__`). Fails if a tensor's bytes do
/// not match its shape and dtype, or two tensors have one name.
pub fn encode(metadata: &[(String, String)], tensors: &[StateTensor]) -> Result<Vec<u8>, CheckpointError> {
  let tensors = tensors.iter().map(|t| (t.name(), t.dtype, t.shape.as_slice(), t.data.as_slice()));
  serialize(metadata, tensors, Naming::State)
}

/// Encodes tensors named as `naming` says, as [`encode`] encodes a checkpoint.
pub fn encode_named(
  metadata: &[(String, String)],
  tensors: &[NamedTensor],
  naming: Naming,
) -> Result<Vec<u8>, CheckpointError> {
  let tensors = tensors.iter().map(|t| (t.name.clone(), t.dtype, t.shape.as_slice(), t.data.as_slice()));
  serialize(metadata, tensors, naming)
}

/// Writes `(name, dtype, shape, data)` tensors, checking each name against `naming`.
fn serialize<'a>(
  metadata: &[(String, String)],
  tensors: impl Iterator<Item = (String, TensorDtype, &'a [usize], &'a [u8])>,
  naming: Naming,
) -> Result<Vec<u8>, CheckpointError> {
  let mut views = Vec::new();
  let mut names = std::collections::HashSet::new();
  for (name, dtype, shape, data) in tensors {
    let count = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let expected = count.and_then(|n| n.checked_mul(dtype.size()));
    if expected != Some(data.len()) {
      return Err(CheckpointError(format!(
        "{name}: {} bytes do not hold a {} tensor of shape {shape:?}",
        data.len(),
        dtype.name()
      )));
    }
    if !naming.accepts(&name) {
      return Err(CheckpointError(format!("tensor {name:?} is not named {}", naming.rule())));
    }
    if !names.insert(name.clone()) {
      return Err(CheckpointError(format!("{name} is written twice")));
    }
    let view =
      TensorView::new(dtype.file(), shape.to_vec(), data).map_err(|e| CheckpointError(format!("{name}: {e}")))?;
    views.push((name, view));
  }
  let metadata: HashMap<String, String> = metadata.iter().cloned().collect();
  safetensors::serialize(views, Some(metadata)).map_err(|e| CheckpointError(format!("cannot write: {e}")))
}

#[cfg(test)]
mod tests {
  use super::*;

  fn tensor(param: u32, key: &str, dtype: TensorDtype, shape: &[usize]) -> StateTensor {
    let n: usize = shape.iter().product();
    let data = (0..n * dtype.size()).map(|i| (i * 37 % 251) as u8).collect();
    StateTensor { param, key: key.into(), dtype, shape: shape.to_vec(), data }
  }

  fn sample() -> (Vec<(String, String)>, Vec<StateTensor>) {
    let metadata = vec![("format".into(), "pt".into()), ("param_groups".into(), "[]".into())];
    let tensors = vec![
      tensor(0, "step", TensorDtype::F32, &[]),
      tensor(0, "exp_avg", TensorDtype::F32, &[3, 4]),
      tensor(1, "codes", TensorDtype::U8, &[5]),
      tensor(1, "absmax", TensorDtype::BF16, &[2, 1]),
      tensor(1, "step", TensorDtype::I64, &[]),
      tensor(2, "step", TensorDtype::I32, &[]),
      tensor(2, "half", TensorDtype::F16, &[3]),
      tensor(2, "momentum_buffer", TensorDtype::F64, &[0]),
    ];
    (metadata, tensors)
  }

  #[test]
  fn every_dtype_and_shape_round_trips() {
    let (metadata, tensors) = sample();
    let bytes = encode(&metadata, &tensors).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    assert_eq!((8 + header_len) % 8, 0, "data starts 8-byte aligned");
    let back = decode(&bytes).unwrap();
    assert_eq!(back.metadata, metadata);
    let key = |t: &StateTensor| (t.param, t.key.clone());
    let mut want = tensors.clone();
    want.sort_by_key(key);
    let mut got = back.tensors.clone();
    got.sort_by_key(key);
    assert_eq!(got, want);
  }

  #[test]
  fn scalars_read_exactly() {
    let scalar = |dtype, bytes: &[u8]| {
      StateTensor { param: 0, key: "step".into(), dtype, shape: vec![], data: bytes.to_vec() }.scalar()
    };
    assert_eq!(scalar(TensorDtype::F32, &7f32.to_le_bytes()), Ok(7.0));
    assert_eq!(scalar(TensorDtype::I64, &(1i64 << 53).to_le_bytes()), Ok(2f64.powi(53)));
    assert!(scalar(TensorDtype::I64, &((1i64 << 53) + 1).to_le_bytes()).is_err());
    assert_eq!(scalar(TensorDtype::I32, &(-3i32).to_le_bytes()), Ok(-3.0));
    assert_eq!(scalar(TensorDtype::BF16, &[0x80, 0x3f]), Ok(1.0));
    assert_eq!(scalar(TensorDtype::F16, &[0x00, 0x3c]), Ok(1.0));
    assert_eq!(scalar(TensorDtype::F16, &[0x01, 0x00]), Ok(2f64.powi(-24)));
    assert_eq!(scalar(TensorDtype::U8, &[200]), Ok(200.0));
    assert!(scalar(TensorDtype::F32, &[0, 0]).is_err());
  }

  #[test]
  fn malformed_files_are_refused_with_reasons() {
    let (metadata, tensors) = sample();
    let good = encode(&metadata, &tensors).unwrap();
    let err = |bytes: &[u8]| decode(bytes).unwrap_err().0;
    assert!(err(&good[..5]).contains("shorter than the 8-byte header length"));
    assert!(err(&good[..good.len() - 1]).contains("do not fit"));
    let mut long = good.clone();
    long[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert!(err(&long).contains("exceeds the file"));
    let mut not_json = good.clone();
    not_json[8] = b'|';
    assert!(err(&not_json).contains("header is not JSON"));
    let file = |header: &str, data: usize| {
      let mut out = (header.len() as u64).to_le_bytes().to_vec();
      out.extend(header.as_bytes());
      out.resize(out.len() + data, 0);
      out
    };
    let backwards = r#"{"state.0.a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}"#;
    assert!(err(&file(backwards, 4)).contains("do not fit"));
    let wrong_size = r#"{"state.0.a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#;
    assert!(err(&file(wrong_size, 4)).contains("do not fit"));
    let fractional = r#"{"state.0.a":{"dtype":"F32","shape":[0.5],"data_offsets":[0,4]}}"#;
    assert!(err(&file(fractional, 4)).contains("header is not JSON"));
    let null_entry = r#"{"state.0.a":null}"#;
    assert!(err(&file(null_entry, 0)).contains("header is not JSON"));
    let bad_name = r#"{"weights":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    assert!(err(&file(bad_name, 4)).contains("is not named state.<n>.<key>"));
    let bad_dtype = r#"{"state.0.a":{"dtype":"C64","shape":[1],"data_offsets":[0,8]}}"#;
    assert!(err(&file(bad_dtype, 8)).contains("has dtype C64"));
    let huge_index = r#"{"state.99999999999.a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#;
    assert!(err(&file(huge_index, 1)).contains("is not named"));
    let leading_zero = r#"{"state.07.a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#;
    assert!(err(&file(leading_zero, 1)).contains("is not named"));
  }

  /// A tensor named `name` of `dtype` and `shape`, with some values.
  fn named(name: &str, dtype: TensorDtype, shape: &[usize]) -> NamedTensor {
    let t = tensor(0, "x", dtype, shape);
    NamedTensor { name: name.into(), dtype, shape: t.shape, data: t.data }
  }

  /// Decodes `bytes` under `naming`, checks that they hold `metadata` and `tensors` (in any
  /// order), and returns the tensors sorted by name.
  fn assert_round_trip(
    bytes: &[u8],
    naming: Naming,
    metadata: &[(String, String)],
    tensors: &[NamedTensor],
  ) -> Vec<NamedTensor> {
    let back = decode_named(bytes, naming).unwrap();
    assert_eq!(back.metadata, metadata);
    let by_name = |mut list: Vec<NamedTensor>| {
      list.sort_by(|a, b| a.name.cmp(&b.name));
      list
    };
    let got = by_name(back.tensors);
    assert_eq!(got, by_name(tensors.to_vec()));
    got
  }

  #[test]
  fn weight_averages_round_trip_under_their_own_names_only() {
    let metadata = vec![("format".to_string(), "pt".to_string())];
    let count = NamedTensor { data: 5i64.to_le_bytes().to_vec(), ..named("n_averaged", TensorDtype::I64, &[]) };
    let tensors = vec![count, named("module.0", TensorDtype::F32, &[2, 3]), named("module.1", TensorDtype::F64, &[1])];
    let bytes = encode_named(&metadata, &tensors, Naming::Averaged).unwrap();
    let got = assert_round_trip(&bytes, Naming::Averaged, &metadata, &tensors);
    assert_eq!(got.iter().find(|t| t.name == "n_averaged").unwrap().scalar(), Ok(5.0));
    // Each kind of file refuses the other's names, and neither takes a second spelling.
    assert!(decode(&bytes).unwrap_err().0.contains("is not named state.<n>.<key>"));
    let (metadata, state) = sample();
    let err = decode_named(&encode(&metadata, &state).unwrap(), Naming::Averaged).unwrap_err().0;
    assert!(err.contains("is not named n_averaged or module.<n>"), "{err}");
    for name in ["module.01", "module.", "module.x", "module.4294967296", "n_averaged2", "state.0.a"] {
      let refused = encode_named(&[], &[named(name, TensorDtype::U8, &[1])], Naming::Averaged).unwrap_err().0;
      assert!(refused.contains("is not named n_averaged or module.<n>"), "{name}: {refused}");
    }
    assert_eq!(Naming::parse("averaged"), Some(Naming::Averaged));
    assert_eq!(Naming::parse("State"), None);
  }

  #[test]
  fn named_tensors_of_any_name_round_trip_in_file_order() {
    let metadata = vec![("DCP_SHARDING_INFO".into(), r#"{"state.fc.weight.exp_avg":{"saved_offsets":[2,0]}}"#.into())];
    let tensors = vec![
      named("state.fc.weight.exp_avg", TensorDtype::F32, &[3, 4]),
      named("state.fc.weight.step", TensorDtype::F32, &[]),
      named("state.0.exp_avg_sq", TensorDtype::F64, &[2]),
    ];
    let bytes = encode_named(&metadata, &tensors, Naming::Any).unwrap();
    assert_round_trip(&bytes, Naming::Any, &metadata, &tensors);
    // A file of names other than state.<n>.<key> is not an optimizer checkpoint of positions.
    assert!(decode(&bytes).unwrap_err().0.contains("is not named"));
    for name in ["", "__metadata__"] {
      let refused = encode_named(&[], &[named(name, TensorDtype::U8, &[1])], Naming::Any).unwrap_err().0;
      assert!(refused.contains("is not named anything but empty or __metadata__"), "{name}: {refused}");
    }
  }

  #[test]
  fn encode_refuses_bytes_that_do_not_match_their_shape() {
    let mut bad = tensor(0, "exp_avg", TensorDtype::F64, &[3]);
    bad.data.pop();
    assert!(encode(&[], &[bad]).unwrap_err().0.contains("do not hold a F64 tensor of shape [3]"));
    let twice = [tensor(0, "a", TensorDtype::U8, &[1]), tensor(0, "a", TensorDtype::U8, &[1])];
    assert!(encode(&[], &twice).unwrap_err().0.contains("written twice"));
  }
}
