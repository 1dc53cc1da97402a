//! The engine every optimizer runs on: the multi-tensor step ([`run`]), the process-wide pool
//! of threads ([`threads`]), per-parameter state ([`state`]), SIMD dispatch and streaming
//! ([`simd`]), the non-finite scan ([`finite`]) and the memory-traffic baseline ([`traffic`]).

pub mod finite;
pub mod run;
pub(crate) mod simd;
pub mod state;
pub mod threads;
pub mod traffic;
