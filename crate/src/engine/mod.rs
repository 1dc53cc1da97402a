//! The engine every optimizer runs on: the multi-tensor step ([`run`]), the process-wide pool
//! of threads ([`threads`]), per-parameter state ([`state`], its large buffers placed apart in L1
//! by [`placed`]), SIMD dispatch and streaming ([`simd`]), the non-finite scan ([`finite`]), the
//! memory-traffic baseline ([`traffic`]) and bfloat16 state ([`bf16`]).

pub mod bf16;
pub(crate) mod disjoint;
pub mod finite;
pub mod nontemporal;
pub mod placed;
pub mod run;
pub(crate) mod simd;
pub mod state;
pub mod threads;
pub mod traffic;
