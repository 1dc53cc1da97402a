//! The process-wide pool of threads that every parallel step runs on.
//!
//! There is one pool per process, shared by every optimizer (and, in Node, by every worker
//! thread, since they share the process), so that several optimizers stepping at once never run
//! more threads than the pool has. Its size counts the calling thread: with `n` threads a step
//! runs on the thread that asked for it plus the pool's `n − 1` worker threads.
//!
//! A parallel step is cut into pieces. Each thread starts on a fixed share of them (the same
//! share every step, so that the part of a model that stays in one core's cache is updated by
//! that core again), then takes pieces others have not started. The caller never waits for a
//! worker to wake up: it publishes the step, wakes the workers that sleep, and starts on its own
//! share at once; a worker that arrives after the step closed waits for the next one. The caller
//! waits only for workers that joined. Taking the next piece is one atomic increment.
//!
//! After a step a worker spins for [`LINGER`], watching for the next one, then sleeps
//! (`thread::park`) until a step wakes it. So back-to-back steps (a benchmark) neither wait for
//! a thread to wake nor make a system call. Steps that come at a steady pace with other work
//! between them (a training loop: forward pass, backward pass, step) would otherwise each find
//! the workers asleep and start alone, the woken worker arriving tens to hundreds of
//! microseconds later; so the pool keeps the time between the last two steps, and a worker with
//! nothing to do sleeps only until shortly before the next step is due at that pace, then
//! watches for it over a window around that moment ([`Pace`]). A step that comes late finds it
//! dozing, and it looks again every quarter interval, so the steps after a late one find it up
//! again; it sleeps until woken only when no step has come for [`PACE_MAX`]. Small steps, which
//! wake no one before they run, wake such a worker once they are done, so that it keeps the
//! pace of a small model's training loop too. Nothing is allocated per step.
//!
//! The workers are the threads of a `rayon::ThreadPool` of their own, each running one loop (a
//! broadcast task started with the pool) for the pool's whole life, never a task handed to a
//! queue per step, so a worker cannot be started twice or run on after its pool: replacing the
//! pool ([`set_num_threads`]) stops the old pool's loops, drops its rayon pool and waits for its
//! threads to exit (their handles come from rayon's spawn handler) before it starts the new one's. No thread of an earlier pool takes a processor from the steps after it, nor is
//! one still spinning when the scheduler places the new workers.
//!
//! One step uses the workers at a time. A step that finds them busy with another caller's step
//! runs on its own thread alone instead of waiting for them, so no caller is ever blocked by
//! another's step; the cost is that two concurrent steps may use one thread more than the pool
//! size (the second caller's own).

use std::cell::{Cell, UnsafeCell};
use std::fmt;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::thread;
use std::time::{Duration, Instant};

/// The most threads a pool may have.
pub const MAX_THREADS: usize = 256;

/// How long a worker spins, watching for the next step, before it sleeps.
const LINGER: Duration = Duration::from_micros(100);

/// How many steps in a row must each open within [`LINGER`] of the one before for small steps to
/// count as back to back ([`Pace::back_to_back`]): more than a training loop opens in one
/// iteration when it steps a few optimizers one after the other, each of which would otherwise
/// wake a sleeping worker that arrives after the steps are done (BENCHMARKS.md, "Design choices").
const BACK_TO_BACK_RUN: u64 = 8;

/// Steps further apart than this are not waited for: a worker sleeps until one wakes it.
const PACE_MAX: Duration = Duration::from_millis(50);

/// The least a worker watches before and after the moment the next step is due: about what
/// waking a sleeping thread takes on a virtual machine, so the worker is up when the step comes.
const PACE_MARGIN: Duration = Duration::from_micros(200);

/// How much of the interval expected between two steps a worker watches at most, before and
/// after the moment the next is due each, however irregular the steps ([`Pace::plan`]).
const PACE_WATCH_MAX: u64 = 4;

/// A worker whose next step is late looks for it this many times per interval expected, dozing
/// in between, until [`PACE_MAX`] has passed since the last step ([`Pace::plan`]).
const LATE_LOOKS: u64 = 4;

/// How long a thread of a [`politely`] step computes before it gives the processor up.
const YIELD_EVERY: Duration = Duration::from_micros(500);

thread_local! {
  static POLITE: Cell<bool> = const { Cell::new(false) };
  static LAST_STEP_THREADS: Cell<usize> = const { Cell::new(0) };
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

/// Diagnostic, for tests and benchmarks: how many threads took part in the last parallel step
/// (or reduction) this thread ran on a pool: itself plus the workers that joined before the step
/// closed, so 1 when it ran alone (too few pieces, or the workers busy with another thread's
/// step), and 0 before any. Steps that never reach a pool (too small to cut, or with one thread)
/// leave it as it was.
pub fn last_step_threads() -> usize {
  LAST_STEP_THREADS.with(Cell::get)
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

/// Replaces the pool with one of `n` threads. The old pool's threads exit before the new pool's
/// start, unless a step is still running on them: then they exit when it ends. If the new
/// threads cannot be started, the pool keeps its size.
pub fn set_num_threads(n: usize) -> Result<(), ThreadsError> {
  if !(1..=MAX_THREADS).contains(&n) {
    return Err(ThreadsError::Invalid(n.to_string()));
  }
  let mut slot = POOL.write().unwrap_or_else(|poisoned| poisoned.into_inner());
  if slot.as_ref().is_some_and(|pool| pool.threads == n) {
    return Ok(());
  }
  // Dropping the last handle stops the old workers and waits for them to exit (see `Pool`'s
  // `Drop`) before the new ones start, so that none of them is still spinning when the scheduler
  // places the new threads. Steps that call `current()` meanwhile wait for the lock.
  let old = slot.take();
  let before = old.as_ref().map(|pool| pool.threads);
  drop(old);
  match Pool::new(n) {
    Ok(pool) => {
      *slot = Some(Arc::new(pool));
      Ok(())
    }
    Err(e) => {
      let size = before.unwrap_or_else(default_num_threads);
      *slot = Some(Arc::new(Pool::new(size).unwrap_or_else(|_| Pool::new(1).expect("one thread needs no worker"))));
      Err(e)
    }
  }
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

/// How many threads a [`for_each_piece`] called now would run on: the pool's, or 1 while a step
/// holds its workers (a call from a step's piece, which then runs on its caller). Only a hint for
/// cutting work: the pool may be taken or freed by another caller at any moment.
pub fn free_threads() -> usize {
  let pool = current();
  if pool.busy.load(Ordering::Relaxed) {
    1
  } else {
    pool.threads
  }
}

/// The work of one parallel step: `body` over pieces, each thread starting on its own share.
pub(crate) struct Pool {
  threads: usize,
  shared: Arc<Shared>,
  /// The `threads − 1` workers' threads, by index; none for a pool of one thread.
  workers: Vec<thread::JoinHandle<()>>,
  /// The rayon pool those threads belong to, running one worker loop on each.
  rayon: Option<rayon::ThreadPool>,
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

/// Whether a worker sleeps (or is about to), so that a step must wake it: [`AWAKE`], [`DOZING`]
/// (to a deadline, [`Idle::Doze`]) or [`ASLEEP`] (until woken, [`Idle::Sleep`]). On its own cache
/// line: the caller reads it every step, the worker writes it only when it goes to sleep.
#[repr(align(128))]
#[derive(Default)]
struct Sleeper {
  sleeping: AtomicU8,
}

const AWAKE: u8 = 0;
const DOZING: u8 = 1;
const ASLEEP: u8 = 2;

/// `state` packs the step's generation (high 32 bits), whether workers may still join (bit 31)
/// and how many are working on it (the low 31 bits).
const OPEN: u64 = 1 << 31;
const ACTIVE: u64 = OPEN - 1;

type Body = *const (dyn Fn(usize) + Sync + 'static);

/// When parallel steps start, so that idle workers can be up when the next one is due.
///
/// The pace is kept between bursts: a step that opens within [`LINGER`] of the one before
/// belongs to the same burst as it. A training loop that steps two optimizers one right after the
/// other (a generator and a discriminator) opens a burst of two steps per iteration, and the
/// worker is to be up for the first (it lingers for the second); intervals alternating between
/// microseconds and milliseconds would average to a moment when no step comes.
///
/// Only the thread that opens a step writes these (the pool runs one step at a time); workers
/// read them without order, and a plan made from values of two different steps is only a worse
/// guess.
struct Pace {
  /// What the times below count from.
  epoch: Instant,
  /// When the last step opened, in nanoseconds from `epoch` (0: none yet).
  opened: AtomicU64,
  /// When the last burst's first step opened, likewise.
  burst: AtomicU64,
  /// How many steps in a row, up to the last, opened within [`LINGER`] of the step before.
  run: AtomicU64,
  /// The interval expected between the last burst and the next: a moving average of the last
  /// ones, each weighing a quarter (0: no pace, after fewer than two bursts or a pause longer
  /// than [`PACE_MAX`]).
  expected: AtomicU64,
  /// How far intervals fall from `expected`: a moving average of that distance, weighed alike.
  spread: AtomicU64,
}

/// What an idle worker does next, from [`Pace::plan`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Idle {
  /// Watch for a step: one is due about now.
  Watch,
  /// Sleep for this long (unless a step wakes it first), then plan again.
  Doze(Duration),
  /// Sleep until a step wakes it: none is due.
  Sleep,
}

impl Pace {
  fn new() -> Self {
    Pace {
      epoch: Instant::now(),
      opened: AtomicU64::new(0),
      burst: AtomicU64::new(0),
      run: AtomicU64::new(0),
      expected: AtomicU64::new(0),
      spread: AtomicU64::new(0),
    }
  }

  fn nanos(&self) -> u64 {
    // At least 1, so that 0 can mean "none"; u64 nanoseconds last 584 years.
    (self.epoch.elapsed().as_nanos() as u64).max(1)
  }

  /// Notes that a step opens now.
  fn open(&self) {
    self.open_at(self.nanos());
  }

  /// Notes that a step opens at `now` (nanoseconds from `epoch`).
  fn open_at(&self, now: u64) {
    let before = self.opened.swap(now, Ordering::Relaxed);
    let interval = if before == 0 { 0 } else { now.saturating_sub(before) };
    let close = interval != 0 && interval <= LINGER.as_nanos() as u64;
    self.run.store(if close { self.run.load(Ordering::Relaxed).saturating_add(1) } else { 0 }, Ordering::Relaxed);
    if close {
      return;
    }
    // A new burst: the interval counts from the last one's first step.
    let before = self.burst.swap(now, Ordering::Relaxed);
    let interval = if before == 0 { 0 } else { now.saturating_sub(before) };
    let expected = self.expected.load(Ordering::Relaxed);
    let (expected, spread) = if interval == 0 || interval > PACE_MAX.as_nanos() as u64 {
      (0, 0)
    } else if expected == 0 {
      (interval, 0)
    } else {
      let spread = self.spread.load(Ordering::Relaxed);
      (expected - expected / 4 + interval / 4, spread - spread / 4 + interval.abs_diff(expected) / 4)
    };
    self.expected.store(expected, Ordering::Relaxed);
    self.spread.store(spread, Ordering::Relaxed);
  }

  /// Whether steps come at a pace a worker can wait for: the interval expected next is known and
  /// at most [`PACE_MAX`].
  fn steady(&self) -> bool {
    self.expected.load(Ordering::Relaxed) != 0
  }

  /// Whether the last [`BACK_TO_BACK_RUN`] steps each opened within [`LINGER`] of the one before:
  /// steps back to back, which a worker that is up joins one after another without sleeping in
  /// between. Two or three steps in quick succession after a pause (a training loop stepping
  /// several optimizers) are not: a worker woken for them would arrive after they are done.
  fn back_to_back(&self) -> bool {
    self.run.load(Ordering::Relaxed) >= BACK_TO_BACK_RUN
  }

  /// What a worker with nothing to do does at `now` (nanoseconds from `epoch`): if steps come at
  /// a pace of at most [`PACE_MAX`], it watches from a margin before the next burst is due to the
  /// same margin after and dozes until then before; otherwise it sleeps. The margin is an eighth
  /// of the interval expected, at least [`PACE_MARGIN`], and twice the intervals' spread where
  /// they vary more, up to a [`PACE_WATCH_MAX`]th of the interval: steps after work whose time
  /// varies (a training step's forward and backward pass) still find the worker up, and the
  /// worker spins through at most about half the time between them.
  ///
  /// Past the watch the step is late. Steps too small to wake a worker (below
  /// [`super::run::WAKE_MIN_ELEMENTS`]) would then never bring it back, so until [`PACE_MAX`]
  /// after the last step opened the worker dozes a [`LATE_LOOKS`]th of the interval at a time,
  /// and on waking plans from the latest step: a late step and the ones after it find it up
  /// again without a wake-up from the caller. After that it sleeps until woken.
  fn plan(&self, now: u64) -> Idle {
    let (burst, expected) = (self.burst.load(Ordering::Relaxed), self.expected.load(Ordering::Relaxed));
    let opened = self.opened.load(Ordering::Relaxed);
    if burst == 0 || expected == 0 || expected > PACE_MAX.as_nanos() as u64 {
      return Idle::Sleep;
    }
    let spread = self.spread.load(Ordering::Relaxed);
    let due = burst.saturating_add(expected);
    let margin = (expected / 8).max(PACE_MARGIN.as_nanos() as u64).max((2 * spread).min(expected / PACE_WATCH_MAX));
    if now.saturating_add(margin) < due {
      Idle::Doze(Duration::from_nanos(due - margin - now))
    } else if now <= due.saturating_add(margin) {
      Idle::Watch
    } else if now < opened.saturating_add(PACE_MAX.as_nanos() as u64) {
      Idle::Doze(Duration::from_nanos((expected / LATE_LOOKS).max(LINGER.as_nanos() as u64)))
    } else {
      Idle::Sleep
    }
  }
}

struct Shared {
  state: AtomicU64,
  pace: Pace,
  /// The step's body; written by the caller only while no worker can join or is working.
  body: UnsafeCell<Option<Body>>,
  shares: Box<[Share]>,
  /// One per thread (index 0, the caller's, is unused).
  sleepers: Box<[Sleeper]>,
  /// How many workers joined the current step.
  joined: AtomicUsize,
  /// How many workers have started, so that a new pool is ready before its first step.
  started: AtomicUsize,
  panicked: AtomicBool,
  shutdown: AtomicBool,
  /// Whether the step's threads give the processor up now and then ([`politely`]).
  polite: AtomicBool,
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
      pace: Pace::new(),
      body: UnsafeCell::new(None),
      shares: (0..threads).map(|_| Share::default()).collect(),
      sleepers: (0..threads).map(|_| Sleeper::default()).collect(),
      joined: AtomicUsize::new(0),
      started: AtomicUsize::new(0),
      panicked: AtomicBool::new(false),
      shutdown: AtomicBool::new(false),
      polite: AtomicBool::new(false),
    });
    let mut pool = Pool {
      threads,
      shared,
      workers: Vec::with_capacity(threads.saturating_sub(1)),
      rayon: None,
      busy: AtomicBool::new(false),
    };
    if threads > 1 {
      let mut spawned: Vec<(usize, thread::JoinHandle<()>)> = Vec::with_capacity(threads - 1);
      let built = rayon::ThreadPoolBuilder::new()
        .num_threads(threads - 1)
        .spawn_handler(|builder| {
          let me = builder.index() + 1;
          spawned.push((me, thread::Builder::new().name(format!("fastoptim-{me}")).spawn(move || builder.run())?));
          Ok(())
        })
        .build();
      spawned.sort_unstable_by_key(|&(me, _)| me);
      pool.workers = spawned.into_iter().map(|(_, handle)| handle).collect();
      // On failure, dropping `pool` joins the threads started so far (rayon ends them with the pool).
      let rayon = built.map_err(|e| ThreadsError::Spawn(e.to_string()))?;
      let shared = Arc::clone(&pool.shared);
      rayon.spawn_broadcast(move |context| worker(&shared, context.index() + 1));
      pool.rayon = Some(rayon);
    }
    // So that the first step finds every worker there, as later steps do.
    while pool.shared.started.load(Ordering::Acquire) < pool.workers.len() {
      thread::yield_now();
    }
    Ok(pool)
  }

  pub(crate) fn threads(&self) -> usize {
    self.threads
  }

  pub(crate) fn for_each_piece(&self, count: usize, body: &(dyn Fn(usize) + Sync)) {
    self.for_each_piece_waking(count, true, body)
  }

  /// [`Self::for_each_piece`], waking the workers that sleep only if `wake`, or if steps come back
  /// to back ([`Pace::back_to_back`]): a step too short to outlast a worker's wake-up is joined by
  /// the workers still watching for steps and left to the caller otherwise, which then makes no
  /// system call, and no worker woken too late spins on afterwards for nothing. Steps back to
  /// back wake a sleeping worker once, and it stays up while they keep coming.
  pub(crate) fn for_each_piece_waking(&self, count: usize, wake: bool, body: &(dyn Fn(usize) + Sync)) {
    if self.workers.is_empty() || count < 2 || self.busy.swap(true, Ordering::Acquire) {
      LAST_STEP_THREADS.with(|c| c.set(1));
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
    shared.joined.store(0, Ordering::Relaxed);
    let generation = (shared.state.load(Ordering::Relaxed) >> 32).wrapping_add(1) & 0xFFFF_FFFF;
    // Sequentially consistent with the reads of `sleeping` below and the worker's write of it and
    // read of `state` before it sleeps: either the worker sees this step or we see it asleep.
    shared.state.store(generation << 32 | OPEN, Ordering::SeqCst);
    shared.pace.open();
    // A small step wakes no sleeping worker: it would come when the step is nearly done. Steps
    // back to back are the exception: woken once, a worker stays up for the ones that follow.
    let wake = wake || shared.pace.back_to_back();
    for (sleeper, worker) in shared.sleepers[1..].iter().zip(&self.workers) {
      if wake
        && sleeper.sleeping.load(Ordering::SeqCst) != AWAKE
        && sleeper.sleeping.swap(AWAKE, Ordering::SeqCst) != AWAKE
      {
        worker.thread().unpark();
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
    if !wake && shared.pace.steady() {
      // Steps come at a pace (the first ones, or the first after a pause longer than PACE_MAX),
      // but a worker sleeps until woken, and steps too small to wake it (a training loop's small
      // model) would leave it asleep for good: wake it now that this step is done, to plan for
      // the next (a doze, then a watch around the moment the next is due, `Pace::plan`). A
      // worker that keeps the pace dozes instead, so this costs the caller a wake-up once after
      // each such pause.
      for (sleeper, worker) in shared.sleepers[1..].iter().zip(&self.workers) {
        if sleeper.sleeping.compare_exchange(ASLEEP, AWAKE, Ordering::SeqCst, Ordering::Relaxed).is_ok() {
          worker.thread().unpark();
        }
      }
    }
    // The workers that joined counted themselves before they stopped working, which `Close` saw.
    LAST_STEP_THREADS.with(|c| c.set(1 + shared.joined.load(Ordering::Relaxed)));
    if shared.panicked.swap(false, Ordering::AcqRel) {
      resume_unwind(Box::new("a fastoptim worker thread panicked"));
    }
  }
}

impl Drop for Pool {
  fn drop(&mut self) {
    self.shared.shutdown.store(true, Ordering::SeqCst);
    for worker in &self.workers {
      worker.thread().unpark();
    }
    // The loops return on `shutdown`; then rayon ends its threads, which the joins below wait for.
    drop(self.rayon.take());
    let me = thread::current().id();
    for worker in self.workers.drain(..) {
      // A step's caller holds a handle until every worker has left the step, so a worker never
      // drops the last one; if one ever did, waiting for itself would hang, while skipping the
      // wait only lets it exit when its piece returns.
      if worker.thread().id() != me {
        // A worker's loop catches the panics of the pieces it runs, so it has none to report.
        let _ = worker.join();
      }
    }
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

/// Worker `me`'s thread: take part in every step it sees open, until the pool shuts down.
fn worker(shared: &Shared, me: usize) {
  shared.started.fetch_add(1, Ordering::Release);
  // The generation of the last step this worker joined or found closed (0: none yet; the first
  // step is 1), so that it waits for a newer one.
  let mut seen = 0;
  while let Some(generation) = next_step(shared, me, seen) {
    join(shared, me, generation);
    seen = generation;
  }
}

/// Waits for an open step other than `seen`: spins for [`LINGER`], then, as the pace of steps
/// says ([`Pace::plan`]), watches, dozes or sleeps until a step wakes this worker. Returns the
/// step's generation, or `None` once the pool shuts down.
fn next_step(shared: &Shared, me: usize, seen: u64) -> Option<u64> {
  let open = |state: u64| (state >> 32 != seen && state & OPEN != 0).then_some(state >> 32);
  let since = Instant::now();
  loop {
    if let Some(generation) = open(shared.state.load(Ordering::Acquire)) {
      return Some(generation);
    }
    if shared.shutdown.load(Ordering::Acquire) {
      return None;
    }
    let idle = if since.elapsed() < LINGER { Idle::Watch } else { shared.pace.plan(shared.pace.nanos()) };
    if idle == Idle::Watch {
      for _ in 0..32 {
        std::hint::spin_loop();
      }
      continue;
    }
    // Announce the sleep, then look once more: a step published before the announcement is seen
    // here, one published after it finds the flag and wakes us (see `for_each_piece`).
    let sleeper = &shared.sleepers[me].sleeping;
    sleeper.store(if idle == Idle::Sleep { ASLEEP } else { DOZING }, Ordering::SeqCst);
    if open(shared.state.load(Ordering::SeqCst)).is_some() || shared.shutdown.load(Ordering::SeqCst) {
      sleeper.store(AWAKE, Ordering::Relaxed);
      continue;
    }
    // Wakes for a step, for shutdown, at the end of a doze, or spuriously; each is checked
    // above. A step that closed before this worker woke is passed over, and the worker sleeps
    // again.
    match idle {
      Idle::Doze(time) => thread::park_timeout(time),
      _ => thread::park(),
    }
    // Awake: a step need not wake it (after a doze the flag may still be set; a step that
    // cleared it has unparked it, which at worst makes a later park return at once).
    sleeper.store(AWAKE, Ordering::Relaxed);
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
  shared.joined.fetch_add(1, Ordering::Relaxed);
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

  /// A piece that holds its thread until `threads` pieces have started (or 20 s have passed),
  /// so a step of such pieces stays open until `threads` different threads hold one each,
  /// however late a woken worker is scheduled on a loaded machine. A worker that never joins
  /// leaves the step open for the 20 s, then the count of threads shows it.
  fn rendezvous(threads: usize) -> impl Fn(usize) + Sync {
    rendezvous_within(threads, Duration::from_secs(20))
  }

  /// [`rendezvous`], each piece waiting at most `wait`.
  fn rendezvous_within(threads: usize, wait: Duration) -> impl Fn(usize) + Sync {
    let started = AtomicUsize::new(0);
    move |_| {
      started.fetch_add(1, Ordering::SeqCst);
      let deadline = Instant::now() + wait;
      while started.load(Ordering::SeqCst) < threads && Instant::now() < deadline {
        thread::sleep(Duration::from_micros(200));
      }
    }
  }

  #[test]
  fn every_step_is_joined_by_every_worker() {
    for threads in [2, 3, 4, 2] {
      let pool = Pool::new(threads).unwrap();
      for step in 0..10 {
        pool.for_each_piece(8 * threads, &rendezvous(threads));
        assert_eq!(last_step_threads(), threads, "{threads} threads, step {step}");
        if step % 3 == 2 {
          // Long enough for the workers to fall asleep.
          std::thread::sleep(LINGER * 5);
        }
      }
    }
  }

  #[test]
  fn a_step_that_does_not_wake_runs_on_the_workers_awake_and_every_piece_once() {
    let pool = Pool::new(2).unwrap();
    // Long enough for the worker to fall asleep: the caller runs the step alone.
    std::thread::sleep(LINGER * 5);
    let runs: Vec<AtomicUsize> = (0..64).map(|_| AtomicUsize::new(0)).collect();
    pool.for_each_piece_waking(runs.len(), false, &|i| {
      runs[i].fetch_add(1, Ordering::Relaxed);
    });
    assert!(runs.iter().all(|r| r.load(Ordering::Relaxed) == 1));
    assert_eq!(last_step_threads(), 1);
    // A step that wakes it is joined again.
    pool.for_each_piece_waking(16, true, &rendezvous(2));
    assert_eq!(last_step_threads(), 2);
  }

  #[test]
  fn an_idle_worker_watches_around_the_moment_the_next_step_is_due() {
    let pace = Pace::new();
    let ms = |x: u64| x * 1_000_000;
    assert_eq!(pace.plan(ms(1)), Idle::Sleep, "no step yet");
    pace.open_at(ms(6));
    assert_eq!(pace.plan(ms(7)), Idle::Sleep, "one step: no pace yet");
    // Steps 4 ms apart, the last at 10 ms: due at 14 ms, watched from 13.5 to 14.5 ms.
    pace.open_at(ms(10));
    assert_eq!(pace.plan(ms(11)), Idle::Doze(Duration::from_micros(2_500)));
    assert_eq!(pace.plan(ms(13) + 500_000), Idle::Watch);
    assert_eq!(pace.plan(ms(14) + 500_000), Idle::Watch);
    // The step did not come: look for it every quarter of the interval, until PACE_MAX after
    // the last step, then sleep until woken.
    assert_eq!(pace.plan(ms(14) + 500_001), Idle::Doze(Duration::from_millis(1)), "the step is late");
    let last_look = ms(10) + PACE_MAX.as_nanos() as u64 - 1;
    assert_eq!(pace.plan(last_look), Idle::Doze(Duration::from_millis(1)));
    assert_eq!(pace.plan(last_look + 1), Idle::Sleep, "no step for PACE_MAX");
    // 1 ms apart: the margin is PACE_MARGIN, not an eighth.
    let pace = Pace::new();
    pace.open_at(ms(9));
    pace.open_at(ms(10));
    assert_eq!(pace.plan(ms(10) + 700_000), Idle::Doze(Duration::from_micros(100)));
    assert_eq!(pace.plan(ms(11) + 200_000), Idle::Watch);
    assert_eq!(pace.plan(ms(11) + 200_001), Idle::Doze(Duration::from_micros(250)));
    // Further apart than PACE_MAX: not waited for, and the pace starts over.
    pace.open_at(ms(10) + PACE_MAX.as_nanos() as u64 + 1);
    assert_eq!(pace.plan(ms(11) + PACE_MAX.as_nanos() as u64), Idle::Sleep);
    assert_eq!(pace.expected.load(Ordering::Relaxed), 0);
  }

  #[test]
  fn the_pace_follows_the_intervals_and_watches_longer_when_they_vary() {
    let pace = Pace::new();
    let us = |x: u64| x * 1_000;
    // Steps 2 ms apart: the interval expected is 2 ms, with no spread.
    for k in 0..4 {
      pace.open_at(us(2_000) * (k + 1));
    }
    assert_eq!(pace.expected.load(Ordering::Relaxed), us(2_000));
    assert_eq!(pace.spread.load(Ordering::Relaxed), 0);
    // One of 2.4 ms: each moving average takes a quarter of the new value.
    pace.open_at(us(8_000) + us(2_400));
    assert_eq!(pace.expected.load(Ordering::Relaxed), us(2_100));
    assert_eq!(pace.spread.load(Ordering::Relaxed), us(100));
    // Due at 10.4 + 2.1 = 12.5 ms; the margin is an eighth of 2.1 ms, more than twice the spread.
    let opened = us(10_400);
    let eighth = us(2_100) / 8;
    assert_eq!(pace.plan(opened + us(2_100) - eighth - 1), Idle::Doze(Duration::from_nanos(1)));
    assert_eq!(pace.plan(opened + us(2_100) + eighth), Idle::Watch);
    assert_eq!(pace.plan(opened + us(2_100) + eighth + 1), Idle::Doze(Duration::from_micros(525)));
    // A spread of 200 µs: a margin of 400 µs, within a quarter of the interval.
    pace.spread.store(us(200), Ordering::Relaxed);
    assert_eq!(pace.plan(opened + us(2_100) - us(400)), Idle::Watch);
    assert_eq!(pace.plan(opened + us(2_100) + us(400)), Idle::Watch);
    assert_eq!(pace.plan(opened + us(2_100) + us(400) + 1), Idle::Doze(Duration::from_micros(525)));
    // A spread as large as the interval: the margin stops at a quarter of it (525 µs).
    pace.spread.store(us(2_100), Ordering::Relaxed);
    assert_eq!(pace.plan(opened + us(2_100) - us(525) - 1), Idle::Doze(Duration::from_nanos(1)));
    assert_eq!(pace.plan(opened + us(2_100) + us(525)), Idle::Watch);
    assert_eq!(pace.plan(opened + us(2_100) + us(525) + 1), Idle::Doze(Duration::from_micros(525)));
  }

  #[test]
  fn the_pace_is_kept_between_bursts_of_steps() {
    // A training loop stepping two optimizers one right after the other (20 µs apart), an
    // iteration every 2 ms: the interval expected is 2 ms with no spread, and the worker watches
    // around the moment the next pair's first step is due.
    let pace = Pace::new();
    let us = |x: u64| x * 1_000;
    for k in 1..=6 {
      pace.open_at(us(2_000) * k);
      pace.open_at(us(2_000) * k + us(20));
    }
    assert_eq!(pace.expected.load(Ordering::Relaxed), us(2_000));
    assert_eq!(pace.spread.load(Ordering::Relaxed), 0);
    let due = us(14_000);
    assert_eq!(pace.plan(us(12_100)), Idle::Doze(Duration::from_nanos(due - us(250) - us(12_100))));
    assert_eq!(pace.plan(due - us(250)), Idle::Watch);
    assert_eq!(pace.plan(due + us(250)), Idle::Watch);
  }

  #[test]
  fn a_run_of_steps_within_linger_of_each_other_is_back_to_back() {
    let pace = Pace::new();
    assert!(!pace.back_to_back(), "no step yet");
    let linger = LINGER.as_nanos() as u64;
    let mut now = 1_000_000;
    pace.open_at(now);
    // Each step within LINGER of the one before (LINGER itself included), BACK_TO_BACK_RUN of
    // them after the first: back to back from the last of them on.
    for k in 1..=BACK_TO_BACK_RUN {
      now += if k % 2 == 0 { linger } else { 1 };
      pace.open_at(now);
      assert_eq!(pace.back_to_back(), k == BACK_TO_BACK_RUN, "step {k} of the run");
    }
    now += 50_000;
    pace.open_at(now);
    assert!(pace.back_to_back(), "the run goes on");
    // One interval longer than LINGER ends the run; a new one starts from nothing.
    now += linger + 1;
    pace.open_at(now);
    assert!(!pace.back_to_back());
    now += 1;
    pace.open_at(now);
    assert!(!pace.back_to_back());
  }

  #[test]
  fn a_few_steps_in_quick_succession_after_each_pause_are_not_back_to_back() {
    // A training loop stepping four optimizers one after the other, 2 ms of other work between
    // iterations: never back to back, so none of its small steps wakes a sleeping worker.
    let pace = Pace::new();
    let mut now = 1_000_000;
    for _ in 0..100 {
      for _ in 0..4 {
        now += 10_000;
        pace.open_at(now);
        assert!(!pace.back_to_back());
      }
      now += 2_000_000;
    }
  }

  #[test]
  fn small_steps_back_to_back_wake_a_sleeping_worker() {
    let pool = Pool::new(2).unwrap();
    // Each attempt lets the worker fall asleep, then opens BACK_TO_BACK_RUN steps that do not
    // wake workers one right after the other, and one more. If every one opened within LINGER of
    // the one before (a preempted caller may miss that), the last wakes the worker, and its
    // pieces wait for a second thread (up to 5 s): the worker joins. Without the wake it would
    // sleep on.
    let mut back_to_back = 0;
    for _ in 0..10 {
      thread::sleep(LINGER * 5);
      for _ in 0..BACK_TO_BACK_RUN {
        pool.for_each_piece_waking(2, false, &|_| ());
      }
      pool.for_each_piece_waking(16, false, &rendezvous_within(2, Duration::from_secs(5)));
      if pool.shared.pace.back_to_back() {
        back_to_back += 1;
        assert_eq!(last_step_threads(), 2);
        if back_to_back == 3 {
          break;
        }
      }
    }
    assert!(back_to_back > 0, "no run of steps opened within LINGER of each other in 10 attempts");
  }

  #[test]
  fn two_small_steps_after_a_pause_leave_a_sleeping_worker_asleep() {
    let pool = Pool::new(2).unwrap();
    // Two steps one right after the other after a pause longer than PACE_MAX, so that the worker
    // sleeps until woken: the second, within LINGER of the first, still wakes no one, so the
    // worker never joins it (its pieces would wait for a second thread up to 50 ms).
    for _ in 0..3 {
      thread::sleep(PACE_MAX + Duration::from_millis(10));
      pool.for_each_piece_waking(2, false, &|_| ());
      pool.for_each_piece_waking(16, false, &rendezvous_within(2, Duration::from_millis(50)));
      assert_eq!(last_step_threads(), 1);
    }
  }

  #[test]
  fn steps_at_a_steady_pace_find_the_worker_up_without_waking_it() {
    let pool = Pool::new(2).unwrap();
    // Steps 20 ms apart: each finds the worker asleep long since its LINGER, so only the pace
    // brings it back. The last step does not wake it; its pieces wait for a second thread (up to
    // 20 s), so a worker that dozes until the step is due joins however late it is scheduled,
    // and one that slept until woken never does. The last step comes 5 ms early, while the
    // worker still dozes (it is up from 17.5 ms). A loaded machine may oversleep: by up to 30 ms
    // the steps stay within PACE_MAX of each other, and the pace holds.
    for _ in 0..4 {
      pool.for_each_piece(2, &|_| ());
      thread::sleep(Duration::from_millis(20));
    }
    pool.for_each_piece(2, &|_| ());
    thread::sleep(Duration::from_millis(15));
    pool.for_each_piece_waking(16, false, &rendezvous(2));
    assert_eq!(last_step_threads(), 2);
  }

  #[test]
  fn small_steps_at_a_steady_pace_find_the_worker_up_though_none_wakes_it() {
    let pool = Pool::new(2).unwrap();
    // As above, but no step wakes the worker before it opens (steps of a small model in a
    // training loop): the first of them finds it asleep until woken, and only the wake such a
    // step gives once it is done lets the worker learn the pace. Steps 20 ms apart, so that a
    // sleep overshooting by up to 30 ms on a loaded machine still keeps them within PACE_MAX;
    // the last comes 5 ms early, while the worker still dozes (it is up from 17.5 ms), and its
    // pieces wait for a second thread up to 5 s: a worker that sleeps until woken never comes.
    for _ in 0..4 {
      pool.for_each_piece_waking(2, false, &|_| ());
      thread::sleep(Duration::from_millis(20));
    }
    pool.for_each_piece_waking(2, false, &|_| ());
    thread::sleep(Duration::from_millis(15));
    pool.for_each_piece_waking(16, false, &rendezvous_within(2, Duration::from_secs(5)));
    assert_eq!(last_step_threads(), 2);
  }

  #[test]
  fn a_dropped_pool_leaves_no_thread_behind() {
    for threads in [2, 3, 8] {
      let pool = Pool::new(threads).unwrap();
      for _ in 0..10 {
        pool.for_each_piece(64, &|_| std::hint::black_box(()));
      }
      let shared = Arc::clone(&pool.shared);
      drop(pool);
      // Each worker holds the shared state until its thread ends, and dropping joined them.
      assert_eq!(Arc::strong_count(&shared), 1, "{threads} threads");
    }
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
