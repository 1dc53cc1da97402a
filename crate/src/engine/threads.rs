//! The process-wide pool of threads that every parallel step runs on.
//!
//! There is one pool per process, shared by every optimizer (and, in Node, by every worker
//! thread, since they share the process), so that several optimizers stepping at once never run
//! more threads than the pool has. Its size counts the calling thread: with `n` threads a step
//! runs on the thread that asked for it plus the `n − 1` worker threads of a rayon pool.
//!
//! A parallel step is cut into pieces. Each thread starts on a fixed share of them (the same
//! share every step, so that the part of a model that stays in one core's cache is updated by
//! that core again), then takes pieces others have not started. The caller never waits for a
//! worker to wake up: it publishes the step, hands one small rayon task per worker to the pool,
//! and starts on its own share at once; a task that a worker picks up late finds the step closed
//! and returns without touching it. The caller waits only for workers that joined. Taking the next
//! piece is one atomic increment.
//!
//! A worker's task does not return to rayon as soon as its step is done: it lingers for
//! [`LINGER`], watching for the next step, and a caller that finds it lingering claims it instead
//! of spawning a task for it. So back-to-back steps (a training loop, a benchmark) neither wait
//! for a thread to wake nor allocate anything; only a step that comes after the workers went back
//! to rayon pays for a rayon task (a small box) per worker.
//!
//! One step uses the workers at a time. A step that finds them busy with another caller's step
//! runs on its own thread alone instead of waiting for them, so no caller is ever blocked by
//! another's step; the cost is that two concurrent steps may use one thread more than the pool
//! size (the second caller's own).

use std::cell::UnsafeCell;
use std::fmt;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::thread;
use std::time::{Duration, Instant};

/// The most threads a pool may have.
pub const MAX_THREADS: usize = 256;

/// How long a worker's task waits for the next step before it returns to rayon.
const LINGER: Duration = Duration::from_micros(100);

/// How long a thread of a [`politely`] step computes before it gives the processor up.
const YIELD_EVERY: Duration = Duration::from_micros(500);

thread_local! {
  static POLITE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, in which every parallel step this thread starts gives the processor up
/// (`sched_yield`) every [`YIELD_EVERY`] on each of its threads. For steps that run beside an
/// event loop (Node's `stepAsync` on a worker thread): on a machine with no core to spare, a
/// thread of the loop that wakes for a timer or a request then waits for a core at most that
/// long, instead of a scheduler time slice. It costs a system call per half millisecond.
pub fn politely<R>(f: impl FnOnce() -> R) -> R {
  let before = POLITE.with(|p| p.replace(true));
  let result = f();
  POLITE.with(|p| p.set(before));
  result
}

/// The environment variable that sets the pool size before the first step.
pub const ENV_VAR: &str = "FASTOPTIM_NUM_THREADS";

/// A thread count that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ThreadsError {
  /// Not a whole number from 1 to [`MAX_THREADS`]; the text as given.
  Invalid(String),
  /// The operating system refused to start a thread.
  Spawn(String),
}

impl fmt::Display for ThreadsError {
  fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match self {
      ThreadsError::Invalid(given) => write!(f, "{given} (expected a whole number from 1 to {MAX_THREADS})"),
      ThreadsError::Spawn(reason) => write!(f, "could not start a thread: {reason}"),
    }
  }
}

impl std::error::Error for ThreadsError {}

/// Parses a thread count as [`ENV_VAR`] gives it: a whole number from 1 to [`MAX_THREADS`],
/// surrounding spaces allowed.
pub fn parse_num_threads(text: &str) -> Result<usize, ThreadsError> {
  match text.trim().parse::<usize>() {
    Ok(n) if (1..=MAX_THREADS).contains(&n) => Ok(n),
    _ => Err(ThreadsError::Invalid(format!("{text:?}"))),
  }
}

/// The pool size used when nothing sets one: [`ENV_VAR`] if it holds a valid count, otherwise
/// the number of CPUs this process may run on (which respects CPU affinity and cgroup quotas).
pub fn default_num_threads() -> usize {
  if let Some(Ok(n)) = std::env::var(ENV_VAR).ok().map(|text| parse_num_threads(&text)) {
    return n;
  }
  thread::available_parallelism().map_or(1, |n| n.get().min(MAX_THREADS))
}

static POOL: RwLock<Option<Arc<Pool>>> = RwLock::new(None);

/// The pool size: the calling thread plus the workers.
pub fn num_threads() -> usize {
  current().threads
}

/// Replaces the pool with one of `n` threads. Steps already running finish on the old pool,
/// whose workers then exit.
pub fn set_num_threads(n: usize) -> Result<(), ThreadsError> {
  if !(1..=MAX_THREADS).contains(&n) {
    return Err(ThreadsError::Invalid(n.to_string()));
  }
  let mut slot = POOL.write().unwrap_or_else(|poisoned| poisoned.into_inner());
  if slot.as_ref().is_some_and(|pool| pool.threads == n) {
    return Ok(());
  }
  *slot = Some(Arc::new(Pool::new(n)?));
  Ok(())
}

/// The current pool, made with [`default_num_threads`] on first use.
pub(crate) fn current() -> Arc<Pool> {
  if let Some(pool) = POOL.read().unwrap_or_else(|poisoned| poisoned.into_inner()).as_ref() {
    return Arc::clone(pool);
  }
  let mut slot = POOL.write().unwrap_or_else(|poisoned| poisoned.into_inner());
  let pool = slot.get_or_insert_with(|| {
    // A default pool that cannot start its workers runs everything on the caller.
    Arc::new(Pool::new(default_num_threads()).unwrap_or_else(|_| Pool::new(1).expect("one thread needs no worker")))
  });
  Arc::clone(pool)
}

/// Runs `body(i)` for every `i` in `0..count`, each exactly once, on the current pool (see the
/// module documentation), and returns when all have returned. A panic in `body` is re-raised
/// here once every thread has stopped using it.
pub fn for_each_piece(count: usize, body: &(dyn Fn(usize) + Sync)) {
  current().for_each_piece(count, body);
}

/// The work of one parallel step: `body` over pieces, each thread starting on its own share.
pub(crate) struct Pool {
  threads: usize,
  shared: Arc<Shared>,
  /// The `threads − 1` workers; none for a pool of one thread.
  workers: Option<rayon::ThreadPool>,
  /// Held by the step that uses the workers.
  busy: AtomicBool,
}

/// A thread's share of the pieces: `next` is the next one not yet taken, `end` one past its last.
/// On its own cache line, so that threads taking their own pieces do not disturb each other.
#[repr(align(128))]
#[derive(Default)]
struct Share {
  next: AtomicUsize,
  end: AtomicUsize,
}

/// `state` packs the step's generation (high 32 bits), whether workers may still join (bit 31)
/// and how many are working on it (the low 31 bits).
const OPEN: u64 = 1 << 31;
const ACTIVE: u64 = OPEN - 1;

type Body = *const (dyn Fn(usize) + Sync + 'static);

struct Shared {
  state: AtomicU64,
  /// The step's body; written by the caller only while no worker can join or is working.
  body: UnsafeCell<Option<Body>>,
  shares: Box<[Share]>,
  /// What each worker is doing (index 0, the caller's, is unused): see [`Linger`].
  slots: Box<[AtomicU64]>,
  panicked: AtomicBool,
  shutdown: AtomicBool,
  /// Whether the step's threads give the processor up now and then ([`politely`]).
  polite: AtomicBool,
}

/// A worker's slot: a tag in the low 2 bits, a generation above them.
struct Linger;

impl Linger {
  /// No task of this worker is running: a step must spawn one.
  const IDLE: u64 = 0;
  /// Its task is taking part in the generation.
  const RUNNING: u64 = 1;
  /// Its task has finished the generation and waits for a newer one.
  const WAITING: u64 = 2;
  /// A caller has claimed the waiting task for the generation, which it has published.
  const CLAIMED: u64 = 3;

  fn pack(tag: u64, generation: u64) -> u64 {
    generation << 2 | tag
  }
}

// SAFETY: `body` is written only by the caller holding `busy` while `state` says that no worker
// may join and none is working, and read only by workers that joined (an acquire of `state`
// after the caller's release); `Body` itself is only called, and is `Sync`.
unsafe impl Sync for Shared {}
// SAFETY: as above; the pointer in `body` is only dereferenced while the step that set it runs.
unsafe impl Send for Shared {}

impl Pool {
  pub(crate) fn new(threads: usize) -> Result<Pool, ThreadsError> {
    let shared = Arc::new(Shared {
      state: AtomicU64::new(0),
      body: UnsafeCell::new(None),
      shares: (0..threads).map(|_| Share::default()).collect(),
      slots: (0..threads).map(|_| AtomicU64::new(Linger::IDLE)).collect(),
      panicked: AtomicBool::new(false),
      shutdown: AtomicBool::new(false),
      polite: AtomicBool::new(false),
    });
    let workers = if threads > 1 {
      let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads - 1)
        .thread_name(|index| format!("fastoptim-{}", index + 1))
        .build()
        .map_err(|e| ThreadsError::Spawn(e.to_string()))?;
      Some(pool)
    } else {
      None
    };
    Ok(Pool { threads, shared, workers, busy: AtomicBool::new(false) })
  }

  pub(crate) fn threads(&self) -> usize {
    self.threads
  }

  pub(crate) fn for_each_piece(&self, count: usize, body: &(dyn Fn(usize) + Sync)) {
    let Some(workers) = self.workers.as_ref().filter(|_| count >= 2) else {
      (0..count).for_each(body);
      return;
    };
    if self.busy.swap(true, Ordering::Acquire) {
      (0..count).for_each(body);
      return;
    }
    let shared = &*self.shared;
    let n = self.threads;
    for (t, share) in shared.shares.iter().enumerate() {
      share.next.store(count * t / n, Ordering::Relaxed);
      share.end.store(count * (t + 1) / n, Ordering::Relaxed);
    }
    // SAFETY: only the lifetime is erased. The pointer is dereferenced only by workers that
    // joined this step, and `Close` below returns only once none can join and none is working.
    let erased: Body = unsafe { std::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), Body>(body) };
    // SAFETY: the previous step ended with no worker working and none able to join (see `Close`).
    unsafe { *shared.body.get() = Some(erased) };
    shared.polite.store(POLITE.with(|p| p.get()), Ordering::Relaxed);
    let generation = (shared.state.load(Ordering::Relaxed) >> 32).wrapping_add(1) & 0xFFFF_FFFF;
    shared.state.store(generation << 32 | OPEN, Ordering::Release);
    for me in 1..n {
      let slot = &shared.slots[me];
      let now = slot.load(Ordering::Acquire);
      let claimed = match now & 3 {
        Linger::WAITING if now >> 2 != generation => slot
          .compare_exchange(now, Linger::pack(Linger::CLAIMED, generation), Ordering::AcqRel, Ordering::Acquire)
          .is_ok(),
        Linger::IDLE => false,
        // Running or waiting after this very step, or already claimed: it is there.
        _ => true,
      };
      // A slot that turned idle under the compare-exchange gets a task like any idle one.
      if !claimed && slot.load(Ordering::Acquire) & 3 != Linger::RUNNING {
        let shared = Arc::clone(&self.shared);
        workers.spawn(move || worker(&shared, me, generation));
      }
    }

    /// Closes the step and waits for the workers that joined it, also when `body` panics here.
    struct Close<'a>(&'a Pool);
    impl Drop for Close<'_> {
      fn drop(&mut self) {
        let shared = &*self.0.shared;
        shared.state.fetch_and(!OPEN, Ordering::AcqRel);
        let mut spins = 0u32;
        while shared.state.load(Ordering::Acquire) & ACTIVE != 0 {
          if spins < 1 << 12 {
            spins += 1;
            std::hint::spin_loop();
          } else {
            thread::yield_now();
          }
        }
        // SAFETY: no worker is working and none can join.
        unsafe { *shared.body.get() = None };
        self.0.busy.store(false, Ordering::Release);
      }
    }
    let close = Close(self);
    work(body, shared, 0);
    drop(close);
    if shared.panicked.swap(false, Ordering::AcqRel) {
      resume_unwind(Box::new("a fastoptim worker thread panicked"));
    }
  }
}

impl Drop for Pool {
  fn drop(&mut self) {
    // Lingering tasks return, so that dropping the rayon pool (after this) does not wait long.
    self.shared.shutdown.store(true, Ordering::Release);
  }
}

/// Takes pieces from thread `me`'s own share, then from the others' in turn.
fn work(body: &(dyn Fn(usize) + Sync), shared: &Shared, me: usize) {
  let shares = &shared.shares;
  let n = shares.len();
  let polite = shared.polite.load(Ordering::Relaxed);
  let mut yielded = polite.then(Instant::now);
  for k in 0..n {
    let share = &shares[(me + k) % n];
    loop {
      let piece = share.next.fetch_add(1, Ordering::Relaxed);
      if piece >= share.end.load(Ordering::Relaxed) {
        break;
      }
      body(piece);
      if let Some(since) = yielded.as_mut().filter(|since| since.elapsed() >= YIELD_EVERY) {
        thread::yield_now();
        *since = Instant::now();
      }
    }
  }
}

/// A worker's task, from step `generation` on: take part in it, then wait up to [`LINGER`] for
/// the next step (taking it, or being claimed for it), and return to rayon when none comes.
fn worker(shared: &Shared, me: usize, mut generation: u64) {
  let slot = &shared.slots[me];
  loop {
    slot.store(Linger::pack(Linger::RUNNING, generation), Ordering::Release);
    join(shared, me, generation);
    let waiting = Linger::pack(Linger::WAITING, generation);
    slot.store(waiting, Ordering::Release);
    let since = Instant::now();
    generation = loop {
      let now = slot.load(Ordering::Acquire);
      if now & 3 == Linger::CLAIMED {
        break now >> 2;
      }
      let state = shared.state.load(Ordering::Acquire);
      if state >> 32 != generation && state & OPEN != 0 {
        // A new step: take it, unless a caller claims this slot at the same moment (then the
        // next iteration sees the claim).
        let running = Linger::pack(Linger::RUNNING, state >> 32);
        if slot.compare_exchange(waiting, running, Ordering::AcqRel, Ordering::Acquire).is_ok() {
          break state >> 32;
        }
        continue;
      }
      if shared.shutdown.load(Ordering::Acquire) || since.elapsed() > LINGER {
        if slot.compare_exchange(waiting, Linger::IDLE, Ordering::AcqRel, Ordering::Acquire).is_ok() {
          return;
        }
        continue;
      }
      for _ in 0..32 {
        std::hint::spin_loop();
      }
    };
  }
}

/// A worker's part in step `generation`: join it if it is still open, take pieces, leave.
fn join(shared: &Shared, me: usize, generation: u64) {
  let joined = shared
    .state
    .fetch_update(Ordering::Acquire, Ordering::Relaxed, |s| (s >> 32 == generation && s & OPEN != 0).then_some(s + 1))
    .is_ok();
  if !joined {
    return;
  }
  // SAFETY: joined, so the caller set `body` for this step and waits for us before clearing it.
  let body = unsafe { (*shared.body.get()).map(|b| &*b) };
  if let Some(body) = body {
    if catch_unwind(AssertUnwindSafe(|| work(body, shared, me))).is_err() {
      shared.panicked.store(true, Ordering::Release);
    }
  }
  shared.state.fetch_sub(1, Ordering::Release);
}

#[cfg(test)]
mod tests {
  use super::*;
  use std::sync::atomic::AtomicU32;

  #[test]
  fn every_piece_runs_exactly_once_on_any_pool_size() {
    for threads in [1, 2, 3, 8] {
      let pool = Pool::new(threads).unwrap();
      for count in [0, 1, 2, 3, 7, 64, 1000] {
        for _ in 0..20 {
          let hits: Vec<AtomicU32> = (0..count).map(|_| AtomicU32::new(0)).collect();
          pool.for_each_piece(count, &|i| {
            hits[i].fetch_add(1, Ordering::Relaxed);
          });
          assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "{threads} threads, {count} pieces");
        }
      }
    }
  }

  #[test]
  fn workers_share_the_work() {
    let pool = Pool::new(2).unwrap();
    let names = std::sync::Mutex::new(std::collections::BTreeSet::new());
    for _ in 0..50 {
      pool.for_each_piece(64, &|_| {
        std::thread::sleep(std::time::Duration::from_micros(50));
        names.lock().unwrap().insert(thread::current().name().map(str::to_owned));
      });
    }
    assert_eq!(names.into_inner().unwrap().len(), 2, "the caller and the worker both took pieces");
  }

  #[test]
  fn a_panic_in_a_piece_reaches_the_caller_and_the_pool_still_works() {
    let pool = Pool::new(2).unwrap();
    let result = catch_unwind(AssertUnwindSafe(|| pool.for_each_piece(100, &|i| assert!(i != 57, "piece 57"))));
    assert!(result.is_err());
    let hits = AtomicU32::new(0);
    pool.for_each_piece(100, &|_| {
      hits.fetch_add(1, Ordering::Relaxed);
    });
    assert_eq!(hits.load(Ordering::Relaxed), 100);
  }

  #[test]
  fn a_nested_or_concurrent_call_runs_on_its_own_thread() {
    let pool = Pool::new(2).unwrap();
    let hits = AtomicU32::new(0);
    pool.for_each_piece(4, &|_| {
      pool.for_each_piece(10, &|_| {
        hits.fetch_add(1, Ordering::Relaxed);
      });
    });
    assert_eq!(hits.load(Ordering::Relaxed), 40);
  }

  #[test]
  fn thread_counts_parse_as_the_environment_variable_gives_them() {
    assert_eq!(parse_num_threads("4"), Ok(4));
    assert_eq!(parse_num_threads(" 1 "), Ok(1));
    for bad in ["0", "-1", "1.5", "", "two", "257"] {
      assert_eq!(
        parse_num_threads(bad).unwrap_err().to_string(),
        format!("{bad:?} (expected a whole number from 1 to 256)")
      );
    }
  }
}
