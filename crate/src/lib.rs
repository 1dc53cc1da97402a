//! fastoptim-core: deep-learning optimizers as fused, multithreaded kernels over borrowed
//! slices, with PyTorch's semantics, defaults and numbers.
//!
//! Layout: one file per optimizer (its options, their defaults and rules, its per-step scalars
//! and its fused kernel beside a plain reference), [`optimizer`] for the trait they share and
//! the engine that runs one step over many tensors, [`state`] for per-parameter state, and
//! [`config`] for option tables and their validation. Nothing here knows about JavaScript.

pub mod adagrad;
pub mod adam;
pub mod adamax;
pub mod clip;
pub mod config;
pub mod divide;
pub mod finite;
pub mod float;
pub mod nadam;
pub mod optimizer;
pub mod radam;
pub mod rmsprop;
pub mod sgd;
mod simd;
pub mod state;
#[cfg(test)]
mod testing;
pub mod threads;
pub mod traffic;

pub use adagrad::Adagrad;
pub use adam::{Adam, AdamW};
pub use adamax::Adamax;
pub use config::{ConfigError, Field, Kind, Rule};
pub use finite::{all_finite, any_non_finite};
pub use float::{Dtype, Float};
pub use nadam::NAdam;
pub use optimizer::{run, Job, Optimizer, MAX_BUFFERS, MAX_SCALARS};
pub use radam::RAdam;
pub use rmsprop::RMSprop;
pub use sgd::Sgd;
pub use state::{Buffers, Element, ParamState, StateMismatch};
