//! The optimizers, one file each, and the [`Optimizer`] trait they implement.
//!
//! A file declares everything about its optimizer once: its options ([`crate::options!`]), its
//! state ([`Optimizer::BUFFERS`], [`Optimizer::SCALARS`]), its per-step scalars
//! ([`Optimizer::coeffs`]), its fused kernel and its plain reference. [`for_each_optimizer!`] is
//! the list every binding, table and test iterates: adding an optimizer is its file plus one
//! entry there.

pub mod adadelta;
pub mod adafactor;
pub mod adagrad;
pub mod adam;
pub mod adamax;
pub mod asgd;
pub mod lion;
pub mod muon;
pub mod nadam;
pub mod radam;
pub mod rmsprop;
pub mod rprop;
pub mod schedule_free;
pub mod sgd;
pub mod sparse_adam;

use crate::config::Options;
use crate::engine::bf16::Noise;
use crate::engine::run::{Dims, Job, Tensor, MAX_BUFFERS};
use crate::engine::state::ParamState;
use crate::float::Float;

/// Calls `$callback!` with `$($args)*`, a `;`, then every optimizer's type (exported at the crate
/// root), in the order the facade lists them. The registry: nothing else names them all.
///
/// ```ignore
/// macro_rules! names { (; $($O:ident)*) => { [$(<fastoptim_core::$O as Optimizer>::NAME),*] } }
/// let names = fastoptim_core::for_each_optimizer!(names!());
/// ```
#[macro_export]
macro_rules! for_each_optimizer {
  ($callback:ident ! ( $($args:tt)* )) => {
    $callback! { $($args)* ; Sgd Adam AdamW RMSprop Adagrad Adamax NAdam RAdam Adafactor Lion Adadelta Asgd Rprop AdamWScheduleFree SgdScheduleFree SparseAdam Muon }
  };
}

/// The gradient a kernel steps with, from the one it is given: negated to maximize, then with an
/// L2 penalty λ·p added where the kernel's `L2` says so (a step without one pays nothing for it).
/// Rounded to the element type once per piece.
#[derive(Clone, Copy)]
pub(crate) struct Gradient<T> {
  sign: T,
  l2: T,
}

impl<T: Float> Gradient<T> {
  pub fn new(maximize: bool, l2: f64) -> Self {
    Gradient { sign: if maximize { -T::ONE } else { T::ONE }, l2: T::from_f64(l2) }
  }

  /// The sign `g` is multiplied by: −1 to maximize, else 1.
  #[cfg(target_arch = "x86_64")]
  #[inline(always)]
  pub fn sign(&self) -> T {
    self.sign
  }

  /// λ of the L2 penalty.
  #[cfg(target_arch = "x86_64")]
  #[inline(always)]
  pub fn l2(&self) -> T {
    self.l2
  }

  /// ±`g` + λ·`p`, in one fused multiply-add; `g·sign` is exact.
  #[inline(always)]
  pub fn at<const L2: bool>(&self, g: T, p: T) -> T {
    let g = g * self.sign;
    if L2 {
      self.l2.mul_add(p, g)
    } else {
      g
    }
  }
}

/// The shape of one state buffer, in terms of the parameter's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
  /// The parameter's shape.
  Param,
  /// The parameter's shape for a tensor of fewer than 2 dimensions; absent for larger ones.
  Unfactored,
  /// Per row of a tensor of 2 or more dimensions: its shape with the last dimension 1; absent
  /// for smaller ones.
  Rows,
  /// Per column of a tensor of 2 or more dimensions: its shape with the second-to-last
  /// dimension 1; absent for smaller ones.
  Cols,
}

impl Layout {
  /// The buffer's shape for a parameter of `shape`, or `None` where it has none.
  pub fn shape(self, shape: &[usize]) -> Option<Vec<usize>> {
    let factored = shape.len() >= 2;
    let mut shape = shape.to_vec();
    match self {
      Layout::Param => Some(shape),
      Layout::Unfactored => (!factored).then_some(shape),
      Layout::Rows | Layout::Cols if !factored => None,
      Layout::Rows => {
        *shape.last_mut().expect("2 or more dimensions") = 1;
        Some(shape)
      }
      Layout::Cols => {
        let at = shape.len() - 2;
        shape[at] = 1;
        Some(shape)
      }
    }
  }

  /// How many elements the buffer has for a parameter of `dims`; 0 where it has none.
  pub fn len(self, dims: Dims) -> usize {
    let factored = dims.ndim >= 2;
    match self {
      Layout::Param => dims.len(),
      Layout::Unfactored if !factored => dims.len(),
      Layout::Rows if factored => dims.batches * dims.rows,
      Layout::Cols if factored => dims.batches * dims.cols,
      _ => 0,
    }
  }
}

/// One state buffer: PyTorch's `state_dict` name and its layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buffer {
  pub name: &'static str,
  pub layout: Layout,
}

impl Buffer {
  /// A buffer shaped like the parameter.
  pub const fn like_param(name: &'static str) -> Self {
    Buffer { name, layout: Layout::Param }
  }
}

/// An optimizer: its options, its per-parameter state, and its update.
///
/// Most optimizers are one elementwise pass ([`Self::update`]), which the engine cuts into pieces
/// over all tensors of a step together. One that needs reductions over a tensor first (a norm,
/// row and column sums) declares [`Self::STAGES`]: each stage runs its units ([`Self::unit`]) for
/// every tensor of the step together, then [`Self::end_stage`] for each tensor, in order; the last
/// stage is the update.
/// A bfloat16 step's state buffers (unused ones empty).
pub type Bf16Buffers<'a> = [&'a mut [crate::engine::bf16::Bf16]; MAX_BUFFERS];

pub trait Optimizer: Options + 'static {
  /// The name bindings use: PyTorch's class name.
  const NAME: &'static str;
  /// One line: what it is and where it comes from.
  const SUMMARY: &'static str;
  /// The implementation its semantics, option names and fixtures follow, as its users name it;
  /// empty for `torch.optim.<NAME>`.
  const REFERENCE: &'static str = "";
  /// The per-parameter state buffers, in the order the kernel takes them.
  const BUFFERS: &'static [Buffer];
  /// PyTorch's `state_dict` names of the per-parameter scalars carried from step to step besides
  /// the step count (NAdam's `mu_product`), kept in [`ParamState::scalars`] in this order.
  const SCALARS: &'static [&'static str] = &[];
  /// Whether it takes row-sparse gradients, and only those (PyTorch's `SparseAdam`): the binding
  /// then coalesces each gradient (rows sorted, duplicates summed) and steps with
  /// [`crate::engine::run::run_sparse`], which applies [`Self::update`] to the rows named and to
  /// nothing else. Such an optimizer is elementwise, with buffers like the parameter.
  const SPARSE: bool = false;
  /// Whether it takes matrices (2-D parameters) only, as PyTorch's `Muon`: the binding refuses
  /// a parameter of any other shape, or of none, naming it and its shape.
  const MATRICES: bool = false;
  /// Whether float32 parameters may keep its state in bfloat16 (`stateDtype: 'bfloat16'`,
  /// [`crate::engine::bf16`]): an elementwise optimizer whose buffers are like the parameter.
  const BF16_STATE: bool = false;
  /// Options that are group state a step advances, as the reference keeps it in its param groups
  /// (Schedule-Free's `k`, `lr_max`, `weight_sum` and `scheduled_lr`): every step writes their next
  /// values into the packed options it was given ([`write_group_state`]), so that the caller
  /// carries them to the group without asking again. Empty for optimizers without group state;
  /// at most [`MAX_GROUP_STATE`].
  const GROUP_STATE: &'static [&'static str] = &[];
  /// Per-step scalars derived from the options and the step count, computed once per step.
  type Coeffs: Copy + Send + Sync + 'static;

  /// The values of [`Self::GROUP_STATE`] after one step of a group with these options, in that
  /// order, into `out` (as long as [`Self::GROUP_STATE`]).
  fn group_state_after_step(&self, out: &mut [f64]) {
    debug_assert!(out.is_empty(), "{} declares group state without computing it", Self::NAME);
  }
  /// How many of [`Self::BUFFERS`] this configuration uses (the first ones).
  fn buffers_used(&self) -> usize {
    Self::BUFFERS.len()
  }
  /// The scalars for the update that makes the parameter's step count `step` (1-based).
  fn coeffs(&self, step: u64) -> Self::Coeffs;
  /// Completes `coeffs` (from [`Self::coeffs`] for `state.step`) for one parameter from the
  /// state only it has, and advances that state: its [`ParamState::scalars`], or whether a
  /// buffer exists yet. Called once per parameter and step, after the step count is advanced
  /// and before the step's buffers are taken, so `state.buffers` holds what earlier steps made.
  fn advance(&self, _coeffs: &mut Self::Coeffs, _state: &mut ParamState) {}
  /// Which of [`Self::BUFFERS`] a step with these scalars only writes, one bit per buffer (bit `i`
  /// for buffer `i`), when its arrays stream from memory: the engine asks for no line of those
  /// ahead of the kernel, which stores them around the caches ([`crate::engine::nontemporal`]),
  /// and a line asked for would be read only to be replaced. None by default.
  fn written_only(_coeffs: &Self::Coeffs) -> u8 {
    0
  }

  /// The fused update of one contiguous piece of an elementwise optimizer; every slice has the
  /// same length (unused buffers are empty). Returns whether an element of `grad` was NaN or
  /// infinite: the kernel checks each as its loop reads it, so that the report costs no second
  /// pass over the gradient ([`crate::engine::finite`]).
  fn update<T: Float>(
    _coeffs: &Self::Coeffs,
    _param: &mut [T],
    _grad: &[T],
    _buffers: [&mut [T]; MAX_BUFFERS],
  ) -> bool {
    unreachable!("{} runs in stages", Self::NAME)
  }
  /// [`Self::update`] of float32 parameters with bfloat16 state ([`Self::BF16_STATE`]): the same
  /// bits as widening the state, [`Self::update`] and rounding it back, to nearest or, given
  /// `noise`, stochastically with its bits ([`crate::engine::bf16::Rounding`]), which is what the
  /// default does, in chunks ([`crate::engine::bf16::update`]), and the same report. An optimizer
  /// may fuse the conversions into its kernel instead.
  fn update_bf16(
    coeffs: &Self::Coeffs,
    param: &mut [f32],
    grad: &[f32],
    buffers: Bf16Buffers,
    noise: Option<Noise>,
  ) -> bool {
    crate::engine::bf16::update::<Self>(coeffs, param, grad, buffers, noise)
  }
  /// [`Self::update`] written as plainly as possible, to test it against.
  fn update_reference<T: Float>(
    _coeffs: &Self::Coeffs,
    _param: &mut [T],
    _grad: &[T],
    _buffers: [&mut [T]; MAX_BUFFERS],
  ) {
    unreachable!("{} runs in stages", Self::NAME)
  }

  /// How many stages a step runs; 0 for an elementwise optimizer.
  const STAGES: usize = 0;
  /// How many `f64` partial results a tensor of `dims` needs between stages (kept in its state).
  fn partials_len(_dims: Dims) -> usize {
    0
  }
  /// How many independent units stage `stage` of a tensor of `dims` splits into. They must not
  /// depend on the thread count, so that results do not either.
  fn units(_stage: usize, _dims: Dims) -> usize {
    0
  }
  /// Runs unit `unit` of stage `stage` of one tensor; returns whether it read a non-finite
  /// gradient element (only the stage that reads each element once needs to say).
  ///
  /// # Safety
  /// A unit may write only what it owns: the elements, rows or columns, and partial slots that
  /// no other unit of the stage touches. The engine runs the units of a stage concurrently.
  unsafe fn unit<T: Float>(_stage: usize, _unit: usize, _tensor: &Tensor<'_, T, Self::Coeffs>) -> bool {
    false
  }
  /// After every unit of `stage` has run: folds the tensor's partials in a fixed order and
  /// updates its scalars for the next stage.
  fn end_stage<T: Float>(_stage: usize, _job: &mut Job<'_, T, Self::Coeffs>) {}
  /// A staged optimizer's whole step of one tensor written as plainly as possible, to test the
  /// stages against.
  fn step_reference<T: Float>(_job: &mut Job<'_, T, Self::Coeffs>) {
    unreachable!("{} is elementwise", Self::NAME)
  }
}

/// The length of each of `O`'s buffers for a parameter of `dims` (0 past its last buffer and
/// where a layout gives none).
pub fn buffer_lens<O: Optimizer>(dims: Dims) -> [usize; MAX_BUFFERS] {
  std::array::from_fn(|i| O::BUFFERS.get(i).map_or(0, |buffer| buffer.layout.len(dims)))
}

/// The most options an optimizer may declare as group state ([`Optimizer::GROUP_STATE`]).
pub const MAX_GROUP_STATE: usize = 8;

/// Writes every group's state after a step ([`Optimizer::GROUP_STATE`]) into `packed`, the groups'
/// options packed one group after another in [`Options::fields`] order, as `configs` were parsed
/// from. Nothing to write for an optimizer without group state.
pub fn write_group_state<O: Optimizer>(configs: &[O], packed: &mut [f64]) {
  // An optimizer that declares more fails to compile wherever its steps are, not at run time.
  const { assert!(O::GROUP_STATE.len() <= MAX_GROUP_STATE, "more group state than MAX_GROUP_STATE") };
  if O::GROUP_STATE.is_empty() {
    return;
  }
  let fields = O::fields();
  let mut next = [0.0; MAX_GROUP_STATE];
  let next = &mut next[..O::GROUP_STATE.len()];
  for (config, values) in configs.iter().zip(packed.chunks_exact_mut(fields.len())) {
    config.group_state_after_step(next);
    for (&name, &value) in O::GROUP_STATE.iter().zip(next.iter()) {
      let slot = fields.iter().position(|field| field.name == name);
      values[slot.expect("GROUP_STATE names options")] = value;
    }
  }
}
