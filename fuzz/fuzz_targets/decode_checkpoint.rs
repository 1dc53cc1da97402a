//! Checkpoint decoding on arbitrary bytes: it must return a checkpoint or an error, never panic,
//! and whatever it accepts must encode again and decode to the same checkpoint. The same bytes go
//! through both namings: optimizer checkpoints and weight averages.
#![no_main]

use fastoptim_core::checkpoint::{decode, decode_named, encode, encode_named, NamedTensor, Naming, StateTensor};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
  if let Ok(checkpoint) = decode(bytes) {
    for tensor in &checkpoint.tensors {
      if tensor.shape.is_empty() {
        let _ = tensor.scalar();
      }
    }
    let again = encode(&checkpoint.metadata, &checkpoint.tensors).expect("a decoded checkpoint encodes");
    let mut back = decode(&again).expect("an encoded checkpoint decodes");
    let mut want = checkpoint;
    let key = |t: &StateTensor| (t.param, t.key.clone());
    want.tensors.sort_by_key(key);
    back.tensors.sort_by_key(key);
    assert_eq!(back, want);
  }
  if let Ok(average) = decode_named(bytes, Naming::Averaged) {
    for tensor in &average.tensors {
      if tensor.shape.is_empty() {
        let _ = tensor.scalar();
      }
    }
    let again = encode_named(&average.metadata, &average.tensors, Naming::Averaged).expect("a decoded average encodes");
    let mut back = decode_named(&again, Naming::Averaged).expect("an encoded average decodes");
    let mut want = average;
    let key = |t: &NamedTensor| t.name.clone();
    want.tensors.sort_by_key(key);
    back.tensors.sort_by_key(key);
    assert_eq!(back, want);
  }
});
