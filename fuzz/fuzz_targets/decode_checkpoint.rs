//! Checkpoint decoding on arbitrary bytes: it must return a checkpoint or an error, never panic,
//! and whatever it accepts must encode again and decode to the same checkpoint.
#![no_main]

use fastoptim_core::checkpoint::{decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
  let Ok(checkpoint) = decode(bytes) else { return };
  for tensor in &checkpoint.tensors {
    if tensor.shape.is_empty() {
      let _ = tensor.scalar();
    }
  }
  let again = encode(&checkpoint.metadata, &checkpoint.tensors).expect("a decoded checkpoint encodes");
  let mut back = decode(&again).expect("an encoded checkpoint decodes");
  let mut want = checkpoint;
  let key = |t: &fastoptim_core::checkpoint::StateTensor| (t.param, t.key.clone());
  want.tensors.sort_by_key(key);
  back.tensors.sort_by_key(key);
  assert_eq!(back, want);
});
