//! MPI collectives over Float32Array/Float64Array for `fastoptim/distributed`, through rsmpi.
//!
//! Every call blocks the calling thread until the collective completes, as MPI's blocking
//! collectives do; all calls come from the JS thread that called `init`. MPI's default error
//! handler (`MPI_ERRORS_ARE_FATAL`) stays: a failed collective aborts the job, and `mpirun`
//! ends every rank when one dies, so no rank waits forever on a dead peer.
#![deny(clippy::all)]

use std::cell::RefCell;

use mpi::collective::{CommunicatorCollectives, Root, SystemOperation};
use mpi::datatype::Equivalence;
use mpi::environment::Universe;
use mpi::topology::{Communicator, SimpleCommunicator};
use napi::bindgen_prelude::{Either, Float32Array, Float64Array};
use napi::{Error, Result, Status};
use napi_derive::napi;

thread_local! {
  /// The MPI environment, from `init` to `finalize` (dropping it calls `MPI_Finalize`).
  static UNIVERSE: RefCell<Option<Universe>> = const { RefCell::new(None) };
}

fn invalid_state(message: String) -> Error {
  Error::new(Status::GenericFailure, message)
}

/// The world communicator, or an error naming the call made before `init` or after `finalize`.
fn world(call: &str) -> Result<SimpleCommunicator> {
  UNIVERSE.with(|u| {
    u.borrow()
      .as_ref()
      .map(|universe| universe.world())
      .ok_or_else(|| invalid_state(format!("{call}: MPI is not initialized (call init() first, once)")))
  })
}

/// Rank and size of the world communicator.
#[napi(object)]
pub struct World {
  pub rank: u32,
  pub size: u32,
  /// The MPI library, as `MPI_Get_library_version` reports it.
  pub library: String,
}

/// Initializes MPI (once per process) and returns this process's rank in the world.
#[napi]
pub fn init() -> Result<World> {
  UNIVERSE.with(|u| {
    let mut slot = u.borrow_mut();
    if slot.is_some() {
      return Err(invalid_state("init: MPI is already initialized in this process".into()));
    }
    let universe = mpi::initialize()
      .ok_or_else(|| invalid_state("init: MPI was initialized before, and cannot be again in this process".into()))?;
    let world = universe.world();
    let info = World {
      rank: world.rank() as u32,
      size: world.size() as u32,
      library: mpi::environment::library_version()
        .map_err(|e| invalid_state(format!("init: MPI's library version is not UTF-8: {e}")))?,
    };
    *slot = Some(universe);
    Ok(info)
  })
}

/// Finalizes MPI; later calls fail. Safe to call more than once.
#[napi]
pub fn finalize() {
  UNIVERSE.with(|u| drop(u.borrow_mut().take()));
}

/// Ends every rank of the job with `code` (`MPI_Abort`), for a rank that cannot go on.
#[napi]
pub fn abort(code: i32) -> Result<()> {
  world("abort")?.abort(code)
}

#[napi]
pub fn barrier() -> Result<()> {
  world("barrier")?.barrier();
  Ok(())
}

/// The element types the collectives take, with the division `mean` needs.
trait Element: Equivalence + Copy + std::ops::DivAssign + From<u16> {}
impl Element for f32 {}
impl Element for f64 {}

fn divide<T: Element>(values: &mut [T], size: i32) {
  let n = T::from(size as u16);
  values.iter_mut().for_each(|v| *v /= n);
}

fn all_reduce_of<T: Element>(world: &SimpleCommunicator, buffer: &mut [T], mean: bool) {
  // MPI_IN_PLACE is not in rsmpi's safe API: the contribution is copied out first.
  let send = buffer.to_vec();
  world.all_reduce_into(&send[..], buffer, SystemOperation::sum());
  if mean {
    divide(buffer, world.size());
  }
}

/// Sums (or averages, with `mean`) `buffer` over all ranks, in place.
#[napi]
pub fn all_reduce(mut buffer: Either<Float32Array, Float64Array>, mean: bool) -> Result<()> {
  let world = world("allReduce")?;
  match &mut buffer {
    // SAFETY (each `as_mut` of this file): the array is attached and borrowed for this call only;
    // no JavaScript runs until it returns, so nothing else reads or writes it meanwhile.
    Either::A(a) => all_reduce_of(&world, unsafe { a.as_mut() }, mean),
    Either::B(b) => all_reduce_of(&world, unsafe { b.as_mut() }, mean),
  }
  Ok(())
}

/// `recv`, if it shares no memory with `send` (a collective must not read what it writes).
fn disjoint<'a, T>(send: &[T], recv: &'a mut [T]) -> Result<&'a mut [T]> {
  let (s, r) = (send.as_ptr_range(), recv.as_ptr_range());
  if s.start < r.end && r.start < s.end && !send.is_empty() && !recv.is_empty() {
    return Err(Error::new(Status::InvalidArg, "reduceScatter: send and recv share memory"));
  }
  Ok(recv)
}

fn reduce_scatter_of<T: Element>(world: &SimpleCommunicator, send: &[T], recv: &mut [T], mean: bool) -> Result<()> {
  let size = world.size() as usize;
  if send.len() != recv.len() * size {
    return Err(Error::new(
      Status::InvalidArg,
      format!("reduceScatter: send has length {}, expected recv.length × size = {}", send.len(), recv.len() * size),
    ));
  }
  world.reduce_scatter_block_into(send, recv, SystemOperation::sum());
  if mean {
    divide(recv, world.size());
  }
  Ok(())
}

/// Sums (or averages) `send` over all ranks and leaves block `rank` of the result in `recv`
/// (`send.length = recv.length × size`; the two must not share memory, which the caller checks).
#[napi]
pub fn reduce_scatter(
  send: Either<Float32Array, Float64Array>,
  mut recv: Either<Float32Array, Float64Array>,
  mean: bool,
) -> Result<()> {
  let world = world("reduceScatter")?;
  match (&send, &mut recv) {
    (Either::A(s), Either::A(r)) => reduce_scatter_of(&world, s, disjoint(s, unsafe { r.as_mut() })?, mean),
    (Either::B(s), Either::B(r)) => reduce_scatter_of(&world, s, disjoint(s, unsafe { r.as_mut() })?, mean),
    _ => Err(Error::new(Status::InvalidArg, "reduceScatter: send and recv must be of the same type")),
  }
}

fn all_gather_of<T: Element>(world: &SimpleCommunicator, buffer: &mut [T]) {
  let block = buffer.len() / world.size() as usize;
  let rank = world.rank() as usize;
  let send = buffer[rank * block..(rank + 1) * block].to_vec();
  world.all_gather_into(&send[..], buffer);
}

/// Fills every block of `buffer` (of `buffer.length / size` elements) with that rank's block.
#[napi]
pub fn all_gather(mut buffer: Either<Float32Array, Float64Array>) -> Result<()> {
  let world = world("allGather")?;
  let size = world.size() as usize;
  let len = match &buffer {
    Either::A(a) => a.len(),
    Either::B(b) => b.len(),
  };
  if len % size != 0 {
    return Err(Error::new(
      Status::InvalidArg,
      format!("allGather: buffer has length {len}, expected a multiple of the size {size}"),
    ));
  }
  match &mut buffer {
    Either::A(a) => all_gather_of(&world, unsafe { a.as_mut() }),
    Either::B(b) => all_gather_of(&world, unsafe { b.as_mut() }),
  }
  Ok(())
}

/// Copies `buffer` of rank `root` into `buffer` of every rank.
#[napi]
pub fn broadcast(mut buffer: Either<Float32Array, Float64Array>, root: u32) -> Result<()> {
  let world = world("broadcast")?;
  if root as i32 >= world.size() {
    return Err(Error::new(
      Status::InvalidArg,
      format!("broadcast: root {root} is not a rank (size {})", world.size()),
    ));
  }
  let process = world.process_at_rank(root as i32);
  match &mut buffer {
    Either::A(a) => process.broadcast_into(unsafe { a.as_mut() }),
    Either::B(b) => process.broadcast_into(unsafe { b.as_mut() }),
  }
  Ok(())
}
