//! One file per optimizer: its options, their defaults and rules, its state, its per-step
//! scalars and its fused kernel beside a plain reference.

pub mod adagrad;
pub mod adam;
pub mod adamax;
pub mod nadam;
pub mod radam;
pub mod rmsprop;
pub mod sgd;
