//! fastoptim-core: deep-learning optimizers as fused, multithreaded kernels over borrowed
//! slices, with PyTorch's semantics, defaults and numbers.
//!
//! Layout: one file per optimizer (its options, their defaults and rules, its per-step scalars
//! and its fused kernel beside a plain reference), [`optimizer`] for the trait they share and
//! the engine that runs one step over many tensors, [`state`] for per-parameter state, and
//! [`config`] for option tables and their validation. Nothing here knows about JavaScript.

pub mod adam;
pub mod config;
pub mod float;
pub mod optimizer;
mod simd;
pub mod state;

pub use adam::{Adam, AdamW};
pub use config::{ConfigError, Field, Kind, Rule};
pub use float::{Dtype, Float};
pub use optimizer::{run, Job, Optimizer, MAX_BUFFERS};
pub use state::{Buffers, Element, ParamState, StateMismatch};
