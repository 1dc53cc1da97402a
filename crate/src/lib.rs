//! fastoptim-core: deep-learning optimizers as fused, multithreaded kernels over borrowed
//! slices, with PyTorch's semantics, defaults and numbers.
//!
//! Layout: one file per optimizer (its options, their defaults and rules, its per-step scalars
//! and its fused kernel beside a plain reference), [`optimizer`] for the trait they share and
//! the engine that runs one step over many tensors, [`state`] for per-parameter state, and
//! [`config`] for option tables and their validation. Nothing here knows about JavaScript.

pub mod averaging;
pub mod checkpoint;
pub mod clip;
pub mod config;
pub mod divide;
pub mod eightbit;
pub mod engine;
pub mod float;
pub mod lbfgs;
pub mod optimizers;
pub mod powers;
pub mod quantize;
pub mod root;
#[cfg(test)]
mod testing;

pub use config::{Choice, ConfigError, Field, Kind, Options, Rule};
pub use engine::bf16::{Bf16, Rounding};
pub use engine::finite::{all_finite, any_non_finite};
pub use engine::run::{run, run_bf16, run_sparse, Dims, Job, SparseJob, StateOf, Tensor, MAX_BUFFERS, MAX_SCALARS};
pub use engine::state::{Buffers, Element, ParamState, StateMismatch, Stored};
pub use engine::{finite, state, threads, traffic};
pub use float::{Dtype, Float};
pub use optimizers::adadelta::Adadelta;
pub use optimizers::adafactor::Adafactor;
pub use optimizers::adagrad::Adagrad;
pub use optimizers::adam::{Adam, AdamW};
pub use optimizers::adamax::Adamax;
pub use optimizers::asgd::Asgd;
pub use optimizers::lion::Lion;
pub use optimizers::muon::{AdjustLrFn, Muon};
pub use optimizers::nadam::NAdam;
pub use optimizers::radam::RAdam;
pub use optimizers::rmsprop::RMSprop;
pub use optimizers::rprop::Rprop;
pub use optimizers::schedule_free::{AdamWScheduleFree, SgdScheduleFree};
pub use optimizers::sgd::Sgd;
pub use optimizers::sparse_adam::SparseAdam;
pub use optimizers::{buffer_lens, write_group_state, Buffer, Layout, Optimizer};
