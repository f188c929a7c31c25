//! Pools of worker processes: Python's `multiprocessing.Pool` and
//! `concurrent.futures.ProcessPoolExecutor`.
//!
//! | Python | here |
//! |---|---|
//! | `Pool(n, initializer, initargs, maxtasksperchild)` | [`Pool::new`]`(n)`, [`Pool::builder`] |
//! | `apply`, `apply_async` | [`Pool::apply`], [`Pool::apply_async`] ([`AsyncResult`]) |
//! | `map`, `map_async`, `starmap`, `starmap_async` | same names; [`Pool::map_results`] keeps every item's outcome |
//! | `imap`, `imap_unordered` | same names, lazy over their input ([`IMap`]) |
//! | `chunksize=` | [`Pool::chunksize`]`(n).map(...)` |
//! | `callback=`, `error_callback=` | [`Callbacks`], with the `*_with` methods |
//! | `close`, `terminate`, `join`, `with Pool() as p:` | same names; dropping a pool terminates it |
//! | `ProcessPoolExecutor`, `Future` | [`ProcessPoolExecutor`], [`TaskFuture`] (also a `std::future::Future`) |
//! | `manager.Pool(n)` | [`Manager::pool`](crate::manager::Manager::pool): the same calls on a pool in a manager's server |
//!
//! Task functions are `fn` items or closures that capture nothing (checked at compile time),
//! like [`Process::new`](crate::Process::new) targets; arguments and results are `serde`
//! values. Every result is a `Result<_, TaskError>`: a panic in a task comes back with its
//! message, location and the worker's backtrace, and the other tasks are unaffected.
//!
//! Where this pool does better than Python's:
//! - a worker that dies in the middle of a task (killed, aborted, out of memory, segfault)
//!   fails only that task, with [`TaskError::WorkerDied`] naming the exit code or signal; the
//!   worker is replaced and the pool goes on (Python's `Pool` hangs for ever, its executor
//!   breaks). [`OnWorkerDeath::BreakPool`] gives the executor's behaviour instead;
//! - `imap` and `imap_unordered` read their input lazily with a bounded number of chunks in
//!   flight, so an endless iterator works;
//! - closing, terminating and dropping the pool resolve every outstanding result.
//!
//! ```
//! let pool = mp_core::Pool::new(2).unwrap();
//! let squares = pool.map(|x: u64| x * x, 0..10).unwrap();
//! assert_eq!(squares, [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]);
//! ```
//!
//! How it works: each worker is a [`Process`](crate::Process) running a worker loop, joined
//! to the parent by its own duplex pipe. A dispatcher thread in the parent owns the workers,
//! sends them chunks of tasks, collects the results, and watches the workers' sentinels; since
//! each worker has its own pipe, the dispatcher always knows which task a dead worker was
//! running.

mod dispatcher;
mod entry;
pub(crate) use entry::install_task_panic_hook;
mod executor;
mod futures;
mod launch;
#[cfg(feature = "mpi")]
#[cfg_attr(docsrs, doc(cfg(feature = "mpi")))]
mod mpi;
mod result;
mod worker;

use std::num::NonZeroUsize;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use self::dispatcher::{Chunk, Config, Shared};
use self::entry::{Plain, Star, TaskFn};
use self::result::{ApplySink, MapSink, MapSlot, Slot};
use self::worker::InitArg;
use crate::handles::{self, SharedHandles};
use crate::{ChildPanic, Context, ProcessError};
use mp_ipc::handle::{OwnedHandle, RawHandle};

pub use self::dispatcher::OnWorkerDeath;
pub(crate) use self::dispatcher::{Chunk as QueuedChunk, ChunkQueue, Outcome, Sink};
pub use self::entry::StarFn;
pub use self::executor::{
    ExecutorBuilder, ExecutorMap, MapOptions, ProcessPoolExecutor, TaskFuture,
};
pub use self::futures::{as_completed, wait, AsCompleted, DoneAndNotDone, ReturnWhen, WaitTimeout};
#[cfg(feature = "mpi")]
pub(crate) use self::mpi::boot_from_env as mpi_boot_from_env;
#[cfg(feature = "mpi")]
pub use self::mpi::MpiWorkers;
pub use self::result::{AsyncResult, Callbacks, IMap};

/// Why a task has no result. Python raises the task's own exception (chained to a remote
/// traceback), `TimeoutError`, `CancelledError`, or `BrokenProcessPool`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, serde::Deserialize)]
pub enum TaskError {
    /// The task panicked in a worker: message, location, and the worker's backtrace.
    #[error("task panicked in a worker at {}: {}", .0.location, .0.message)]
    Panicked(ChildPanic),
    /// The worker process running the task died (killed, aborted, crashed, exited).
    #[error("the worker running the task died ({})", describe_exit(*exitcode))]
    WorkerDied {
        /// Its exit code, or minus the signal that killed it (`-9` for `SIGKILL`).
        exitcode: i32,
    },
    /// An argument or the result could not be serialized.
    #[error("could not encode: {0}")]
    Encode(String),
    /// An argument (in the worker) or the result (in the parent) could not be decoded.
    #[error("could not decode: {0}")]
    Decode(String),
    /// Reading the input iterator failed (it panicked), in the parent, not in a worker.
    #[error("reading the input failed: {0}")]
    Input(String),
    /// The task was cancelled before it started.
    #[error("the task was cancelled")]
    Cancelled,
    /// The pool was terminated (or dropped) before the task finished.
    #[error("the pool was terminated before the task finished")]
    Terminated,
    /// The worker running the task is gone and its exit status cannot be known (an MPI rank
    /// that died): which worker, and what is known of it.
    #[error("the worker running the task was lost: {0}")]
    WorkerLost(String),
    /// The pool no longer accepts work (Python: `ValueError: Pool not running`).
    #[error("the pool is not running")]
    Closed,
    /// The pool is broken: its initializer failed, no worker could be started, or a worker
    /// died under [`OnWorkerDeath::BreakPool`] (Python: `BrokenProcessPool`).
    #[error("the pool is broken: {0}")]
    Broken(String),
    /// The result was not ready within the timeout (Python: `TimeoutError`).
    #[error("timed out waiting for the result")]
    Timeout,
    /// The result was already taken by an earlier `get`.
    #[error("the result was already taken")]
    Taken,
    /// The task ran, or was to run, in a manager's pool
    /// ([`Manager::pool`](crate::manager::Manager::pool)) and the manager failed: it is
    /// gone (and its pool with it), refused the call, or the connection to it broke. Where a
    /// [`PoolError`] is returned instead, [`PoolError::Manager`] holds the typed error.
    #[error("the manager serving the pool failed: {0}")]
    Manager(String),
}

impl TaskError {
    /// The panic, if the task panicked.
    pub fn panic(&self) -> Option<&ChildPanic> {
        match self {
            Self::Panicked(p) => Some(p),
            _ => None,
        }
    }
}

/// "exit code 3", "killed by signal 9 (SIGKILL)".
pub fn describe_exit(exitcode: i32) -> String {
    if exitcode >= 0 {
        return format!("exit code {exitcode}");
    }
    let name = match -exitcode {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        _ => "",
    };
    if name.is_empty() {
        format!("killed by signal {}", -exitcode)
    } else {
        format!("killed by signal {} ({name})", -exitcode)
    }
}

/// Errors of pool operations (Python: `ValueError`, `RuntimeError`).
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// A parameter is out of range (Python: `ValueError`).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The pool was closed: no new work (Python: `ValueError: Pool not running`).
    #[error("the pool is not running (closed)")]
    Closed,
    /// The pool was terminated.
    #[error("the pool is not running (terminated)")]
    Terminated,
    /// The pool is broken (see [`TaskError::Broken`]).
    #[error("the pool is broken: {0}")]
    Broken(String),
    /// A worker could not be started; the workers already started were stopped.
    #[error("a worker could not be started: {0}")]
    Start(#[source] ProcessError),
    /// An argument could not be serialized; nothing was submitted.
    #[error("could not encode a task argument: {0}")]
    Encode(String),
    /// The input iterator panicked; nothing was submitted.
    #[error("reading the input failed: {0}")]
    Input(String),
    /// `join` on a pool that is neither closed nor terminated (Python: `ValueError`).
    #[error("join needs a closed or terminated pool")]
    StillRunning,
    /// The argument named holds shareable objects (locks, queues, connections, OS handles)
    /// and this pool's workers cannot receive them: the ranks of an MPI pool may run on
    /// other hosts, where handles mean nothing. Nothing was submitted (or, for the
    /// initializer, started).
    #[error(
        "{0} holds shared objects (locks, queues, connections, OS handles), which cannot \
         reach this pool's workers (MPI ranks: handles do not cross hosts; a manager's \
         pool: they would have to pass through the manager's connection)"
    )]
    HandlesUnsupported(&'static str),
    /// A manager's pool ([`Manager::pool`](crate::manager::Manager::pool)) could not be
    /// reached or refused the call: the manager is gone, or this process runs another
    /// executable than the manager's server ([`ManagerError::OtherExecutable`]).
    ///
    /// [`ManagerError::OtherExecutable`]: crate::manager::ManagerError::OtherExecutable
    #[error("the manager serving the pool failed: {0}")]
    Manager(#[source] crate::manager::ManagerError),
}

impl From<PoolError> for TaskError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Closed => Self::Closed,
            PoolError::Terminated => Self::Terminated,
            PoolError::Broken(m) => Self::Broken(m),
            PoolError::Encode(m) => Self::Encode(m),
            PoolError::Input(m) => Self::Input(m),
            e @ PoolError::HandlesUnsupported(_) => Self::Encode(e.to_string()),
            PoolError::Manager(e) => Self::Manager(e.to_string()),
            e => Self::Broken(e.to_string()),
        }
    }
}

pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "Box<dyn Any>".to_string()
    }
}

/// Reads the whole input, turning a panic of the iterator into an error.
fn collect_input<I: IntoIterator>(iter: I) -> Result<Vec<I::Item>, PoolError> {
    panic::catch_unwind(AssertUnwindSafe(|| iter.into_iter().collect()))
        .map_err(|p| PoolError::Input(panic_message(&*p)))
}

/// Encodes one chunk of arguments; the handles of the shareable objects inside them are
/// duplicated, to travel beside the frame.
fn encode_chunk<A: Serialize>(
    head: &[u8],
    items: &[A],
) -> Result<(Vec<u8>, Vec<OwnedHandle>), String> {
    let (frame, raw) = handles::with_outbox(|| {
        let mut frame = dispatcher::chunk_frame(head, items.len(), items.len() * 8);
        for a in items {
            entry::encode_into(a, &mut frame)?;
        }
        dispatcher::seal_frame(&mut frame);
        Ok::<_, String>(frame)
    });
    Ok((frame?, duplicate_task_handles(&raw)?))
}

/// Our own copies of the handles a task argument holds (the argument may be dropped before
/// the task is sent, or sent again to another worker).
fn duplicate_task_handles(raw: &[RawHandle]) -> Result<Vec<OwnedHandle>, String> {
    handles::duplicate_all(raw)
        .map_err(|e| format!("cannot duplicate a handle inside a task argument: {e}"))
}

/// Python's default `map` chunk size: the input split into about four chunks per worker.
fn default_chunksize(len: usize, processes: usize) -> usize {
    len.div_ceil(processes * 4).max(1)
}

/// Settings of a [`Pool`]; made by [`Pool::builder`].
///
/// ```
/// use mp_core::{get_context, Pool, StartMethod};
///
/// fn setup(greeting: String) { assert_eq!(greeting, "hi"); }
///
/// let pool = Pool::builder()
///     .processes(2)
///     .initializer(setup, "hi".to_string())
///     .max_tasks_per_child(100)
///     .context(get_context(StartMethod::Spawn).unwrap())
///     .build()
///     .unwrap();
/// assert_eq!(pool.apply(|x: i32| x + 1, 1).unwrap(), 2);
/// ```
#[derive(Debug, Default)]
pub struct PoolBuilder {
    processes: Option<usize>,
    context: Option<Context>,
    init: Option<Result<InitArg, String>>,
    max_tasks: Option<usize>,
    on_death: OnWorkerDeath,
    launch: launch::Launch,
}

impl PoolBuilder {
    /// The number of workers (default [`cpu_count`](crate::cpu_count)); zero is refused at
    /// [`build`](Self::build).
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = Some(n);
        self
    }

    /// A function each worker runs once, before any task (Python's `initializer` and
    /// `initargs`). If it panics, the pool is broken: outstanding and later tasks fail with
    /// [`TaskError::Broken`].
    pub fn initializer<F, A>(mut self, f: F, arg: A) -> Self
    where
        F: Fn(A) + Copy + Send + 'static,
        A: Serialize + DeserializeOwned + 'static,
    {
        const {
            assert!(
                std::mem::size_of::<F>() == 0,
                "an initializer must be a fn item or a closure that captures nothing"
            )
        };
        let _ = f;
        // The shareable objects inside (a lock, a queue, ...) keep their handles beside the
        // bytes; each worker started gets its own copies.
        let (bytes, raw) = handles::with_outbox(|| postcard::to_stdvec(&arg));
        self.init = Some(bytes.map_err(|e| handles::explain(&e)).and_then(|bytes| {
            let handles = handles::duplicate_all(&raw).map_err(|e| {
                format!("cannot duplicate a handle of the initializer argument: {e}")
            })?;
            Ok(InitArg {
                entry: entry::init_id::<F, A>(),
                bytes,
                handles: SharedHandles::new(handles),
            })
        }));
        self
    }

    /// Each worker exits after this many chunks and is replaced (Python's
    /// `maxtasksperchild`); zero is refused at [`build`](Self::build).
    pub fn max_tasks_per_child(mut self, n: usize) -> Self {
        self.max_tasks = Some(n);
        self
    }

    /// Starts workers with this context's start method (default: the global default).
    pub fn context(mut self, context: Context) -> Self {
        self.context = Some(context);
        self
    }

    /// What a worker dying in the middle of a task does (default
    /// [`OnWorkerDeath::FailTask`]).
    pub fn on_worker_death(mut self, policy: OnWorkerDeath) -> Self {
        self.on_death = policy;
        self
    }

    fn config(self, lazy: bool, name: &'static str) -> Result<Config, PoolError> {
        let processes = self.processes.unwrap_or_else(crate::cpu_count);
        if processes == 0 {
            return Err(PoolError::InvalidArgument(
                "the number of processes must be at least 1".into(),
            ));
        }
        if self.max_tasks == Some(0) {
            return Err(PoolError::InvalidArgument(
                "max_tasks_per_child must be at least 1".into(),
            ));
        }
        let init = match self.init {
            None => None,
            Some(Ok(i)) => Some(i),
            Some(Err(e)) => return Err(PoolError::Encode(e)),
        };
        Ok(Config {
            processes,
            context: self.context.unwrap_or_else(Context::default_context),
            init,
            max_tasks: self.max_tasks.map(|n| n as u64),
            lazy,
            on_death: self.on_death,
            name,
        })
    }

    /// Starts the workers. If one cannot be started, those already started are stopped and
    /// the error is returned.
    pub fn build(self) -> Result<Pool, PoolError> {
        let (shared, thread, processes) = launch::start_pool(self, false, "Pool")?;
        Ok(Pool {
            queue: shared.clone(),
            shared,
            thread: Mutex::new(Some(thread)),
            processes,
        })
    }
}

/// A pool of worker processes: Python's `multiprocessing.Pool`.
///
/// Dropping a pool terminates it (as leaving Python's `with Pool() as p:` block does): the
/// workers are stopped and outstanding results fail with [`TaskError::Terminated`]. To let
/// queued work finish, call [`close`](Self::close) and [`join`](Self::join) first.
///
/// ```
/// use mp_core::Pool;
///
/// fn cube(x: i64) -> i64 { x * x * x }
///
/// let pool = Pool::new(2).unwrap();
/// assert_eq!(pool.apply(cube, 3).unwrap(), 27);
/// let pending = pool.map_async(cube, vec![1, 2, 3]).unwrap();
/// assert_eq!(pending.get().unwrap(), [1, 8, 27]);
/// let lazy: Vec<i64> = pool.imap(cube, 1..=4).unwrap().map(Result::unwrap).collect();
/// assert_eq!(lazy, [1, 8, 27, 64]);
/// assert_eq!(pool.starmap(|a: i64, b: i64| a * b, [(2, 3), (4, 5)]).unwrap(), [6, 20]);
/// pool.close();
/// pool.join().unwrap();
/// ```
pub struct Pool {
    shared: Arc<Shared>,
    /// The same, as the queue the mapping calls submit to.
    queue: Arc<dyn ChunkQueue>,
    thread: Mutex<Option<JoinHandle<()>>>,
    processes: usize,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("processes", &self.processes)
            .finish()
    }
}

/// The mapping calls of a pool with an explicit chunk size; made by [`Pool::chunksize`]
/// (and by [`PoolProxy::chunksize`](crate::manager::PoolProxy::chunksize) for a manager's
/// pool).
#[derive(Clone, Copy)]
pub struct Chunked<'p> {
    queue: &'p Arc<dyn ChunkQueue>,
    /// The pool's size, for the default chunk size.
    processes: usize,
    chunksize: Option<usize>,
}

impl std::fmt::Debug for Chunked<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunked")
            .field("processes", &self.processes)
            .field("chunksize", &self.chunksize)
            .finish()
    }
}

impl<'p> Chunked<'p> {
    /// The mapping calls over `queue`, a pool of `processes` workers.
    pub(crate) fn over(
        queue: &'p Arc<dyn ChunkQueue>,
        processes: usize,
        chunksize: Option<usize>,
    ) -> Self {
        Self {
            queue,
            processes,
            chunksize,
        }
    }
}

impl Pool {
    /// A pool of `processes` workers (zero is refused), with the default start method.
    pub fn new(processes: usize) -> Result<Self, PoolError> {
        Self::builder().processes(processes).build()
    }

    /// A pool with settings.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// The number of workers.
    pub fn processes(&self) -> usize {
        self.processes
    }

    /// The pids of the workers alive now.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.shared.lock().pids.clone()
    }

    /// The mapping calls with `chunksize` items per task sent to a worker.
    ///
    /// ```
    /// let pool = mp_core::Pool::new(2).unwrap();
    /// let v = pool.chunksize(NonZero::new(20).unwrap()).map(|x: u32| x + 1, 0..100).unwrap();
    /// # use std::num::NonZero;
    /// assert_eq!(v.len(), 100);
    /// ```
    pub fn chunksize(&self, chunksize: NonZeroUsize) -> Chunked<'_> {
        Chunked::over(&self.queue, self.processes, Some(chunksize.get()))
    }

    fn chunked(&self) -> Chunked<'_> {
        Chunked::over(&self.queue, self.processes, None)
    }

    /// Runs `f(arg)` in a worker and waits for the result.
    pub fn apply<F, A, R>(&self, f: F, arg: A) -> Result<R, TaskError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.apply_async(f, arg)?.into_result()
    }

    /// Starts `f(arg)` in a worker.
    pub fn apply_async<F, A, R>(&self, f: F, arg: A) -> Result<AsyncResult<R>, PoolError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.apply_async_with(f, arg, Callbacks::new())
    }

    /// Starts `f(arg)` in a worker; `callbacks` run when it is done.
    pub fn apply_async_with<F, A, R>(
        &self,
        f: F,
        arg: A,
        callbacks: Callbacks<R>,
    ) -> Result<AsyncResult<R>, PoolError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        apply_on(&*self.queue, f, arg, callbacks)
    }

    /// `f` over every item, results in input order; the first failure (in input order) is
    /// the error, after every task has finished. See [`map_results`](Self::map_results) for
    /// every item's outcome.
    pub fn map<F, A, R, I>(&self, f: F, iter: I) -> Result<Vec<R>, TaskError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.chunked().map(f, iter)
    }

    /// `f` over every item; each item's own outcome, in input order.
    pub fn map_results<F, A, R, I>(
        &self,
        f: F,
        iter: I,
    ) -> Result<Vec<Result<R, TaskError>>, PoolError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.chunked().map_results(f, iter)
    }

    /// Starts `f` over every item (the input is read now).
    pub fn map_async<F, A, R, I>(&self, f: F, iter: I) -> Result<AsyncResult<Vec<R>>, PoolError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.chunked().map_async(f, iter)
    }

    /// [`map_async`](Self::map_async) with callbacks (given the whole result list, or the
    /// first error).
    pub fn map_async_with<F, A, R, I>(
        &self,
        f: F,
        iter: I,
        callbacks: Callbacks<Vec<R>>,
    ) -> Result<AsyncResult<Vec<R>>, PoolError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.chunked().map_async_with(f, iter, callbacks)
    }

    /// `f(a, b, ...)` for every tuple `(a, b, ...)`, results in input order.
    pub fn starmap<F, Args, R, I>(&self, f: F, iter: I) -> Result<Vec<R>, TaskError>
    where
        F: StarFn<Args, R>,
        I: IntoIterator<Item = Args>,
        Args: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.chunked().starmap(f, iter)
    }

    /// Starts [`starmap`](Self::starmap).
    pub fn starmap_async<F, Args, R, I>(
        &self,
        f: F,
        iter: I,
    ) -> Result<AsyncResult<Vec<R>>, PoolError>
    where
        F: StarFn<Args, R>,
        I: IntoIterator<Item = Args>,
        Args: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.chunked().starmap_async(f, iter)
    }

    /// [`starmap_async`](Self::starmap_async) with callbacks (given the whole result list,
    /// or the first error), as Python's `starmap_async(..., callback, error_callback)`.
    ///
    /// ```
    /// use mp_core::pool::Callbacks;
    /// let pool = mp_core::Pool::new(2).unwrap();
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// let r = pool
    ///     .starmap_async_with(
    ///         |a: u32, b: u32| a + b,
    ///         [(1, 2), (3, 4)],
    ///         Callbacks::new().on_success(move |v: &Vec<u32>| tx.send(v.clone()).unwrap()),
    ///     )
    ///     .unwrap();
    /// assert_eq!(r.get().unwrap(), [3, 7]);
    /// assert_eq!(rx.recv().unwrap(), [3, 7]);
    /// ```
    pub fn starmap_async_with<F, Args, R, I>(
        &self,
        f: F,
        iter: I,
        callbacks: Callbacks<Vec<R>>,
    ) -> Result<AsyncResult<Vec<R>>, PoolError>
    where
        F: StarFn<Args, R>,
        I: IntoIterator<Item = Args>,
        Args: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.chunked().starmap_async_with(f, iter, callbacks)
    }

    /// Lazily maps `f` over `iter`, yielding results in input order (chunk size 1 unless
    /// set with [`chunksize`](Self::chunksize)).
    pub fn imap<'a, F, A, R, I>(&self, f: F, iter: I) -> Result<IMap<'a, R>, PoolError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'a,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.chunked().imap(f, iter)
    }

    /// Like [`imap`](Self::imap), yielding results as they complete.
    pub fn imap_unordered<'a, F, A, R, I>(&self, f: F, iter: I) -> Result<IMap<'a, R>, PoolError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'a,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.chunked().imap_unordered(f, iter)
    }

    /// No new work; the workers exit once the queued work is done (Python's `close`).
    pub fn close(&self) {
        self.shared.close();
    }

    /// Stops the workers now; outstanding results fail with [`TaskError::Terminated`].
    pub fn terminate(&self) {
        self.shared.terminate();
    }

    /// Waits for the workers to end, after [`close`](Self::close) or
    /// [`terminate`](Self::terminate); [`PoolError::StillRunning`] otherwise.
    pub fn join(&self) -> Result<(), PoolError> {
        if self.shared.lock().status == dispatcher::Status::Running {
            return Err(PoolError::StillRunning);
        }
        self.shared.wait_stopped(None);
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
        Ok(())
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.terminate();
        // The dispatcher terminates the workers, kills those that linger, and fails what is
        // outstanding; it is bounded, but never wait for ever here.
        if self.shared.wait_stopped(Some(Duration::from_secs(15))) {
            if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
                let _ = t.join();
            }
        }
    }
}

/// `apply_async_with` over any queue (this process's pool, or a manager's).
pub(crate) fn apply_on<F, A, R>(
    queue: &dyn ChunkQueue,
    f: F,
    arg: A,
    callbacks: Callbacks<R>,
) -> Result<AsyncResult<R>, PoolError>
where
    F: Fn(A) -> R + Copy + Send + 'static,
    A: Serialize + DeserializeOwned + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    let _ = f;
    let slot = submit_one::<Plain<F>, A, R>(queue, arg, Some(callbacks))?;
    Ok(AsyncResult { slot })
}

/// Submits one single-item chunk whose result goes to a new slot.
pub(crate) fn submit_one<T, A, R>(
    shared: &dyn ChunkQueue,
    arg: A,
    callbacks: Option<Callbacks<R>>,
) -> Result<Arc<Slot<R>>, PoolError>
where
    T: TaskFn<A, R>,
    A: Serialize + DeserializeOwned + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    shared.check_running()?;
    let head = dispatcher::chunk_head(&entry::task_id::<T, A, R>());
    let (frame, handles) =
        encode_chunk(&head, std::slice::from_ref(&arg)).map_err(PoolError::Encode)?;
    let slot = Slot::new(callbacks);
    let sink: Arc<dyn Sink> = Arc::new(ApplySink { slot: slot.clone() });
    shared.submit(vec![Chunk {
        sink,
        index: 0,
        len: 1,
        frame,
        handles,
    }])?;
    Ok(slot)
}

/// Submits a whole input as chunks whose results are gathered into one slot.
pub(crate) fn submit_map<T, A, R>(
    shared: &dyn ChunkQueue,
    items: Vec<A>,
    chunksize: usize,
    slot: MapSlot<R>,
) -> Result<(), PoolError>
where
    T: TaskFn<A, R>,
    A: Serialize + DeserializeOwned + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    shared.check_running()?;
    if items.is_empty() {
        match slot {
            MapSlot::Values(s) => s.complete(Ok(Vec::new())),
            MapSlot::Each(s) => s.complete(Ok(Vec::new())),
        }
        return Ok(());
    }
    let head = dispatcher::chunk_head(&entry::task_id::<T, A, R>());
    let chunks = items.len().div_ceil(chunksize);
    let sink: Arc<dyn Sink> = Arc::new(MapSink::<R>::new(chunks, slot));
    let mut out = Vec::with_capacity(chunks);
    for (index, part) in items.chunks(chunksize).enumerate() {
        let (frame, handles) = encode_chunk(&head, part).map_err(PoolError::Encode)?;
        out.push(Chunk {
            sink: sink.clone(),
            index,
            len: part.len(),
            frame,
            handles,
        });
    }
    shared.submit(out)
}

impl<'p> Chunked<'p> {
    fn size(&self, len: usize) -> usize {
        self.chunksize
            .unwrap_or_else(|| default_chunksize(len, self.processes))
    }

    fn map_job<T, A, R, I>(&self, iter: I, slot: MapSlot<R>) -> Result<(), PoolError>
    where
        T: TaskFn<A, R>,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.queue.check_running()?;
        let items = collect_input(iter)?;
        let size = self.size(items.len());
        submit_map::<T, A, R>(&**self.queue, items, size, slot)
    }

    /// See [`Pool::map`].
    pub fn map<F, A, R, I>(&self, f: F, iter: I) -> Result<Vec<R>, TaskError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.map_async(f, iter)?.into_result()
    }

    /// See [`Pool::map_results`].
    pub fn map_results<F, A, R, I>(
        &self,
        f: F,
        iter: I,
    ) -> Result<Vec<Result<R, TaskError>>, PoolError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = f;
        let slot = Slot::new(None);
        self.map_job::<Plain<F>, A, R, I>(iter, MapSlot::Each(slot.clone()))?;
        Ok(AsyncResult { slot }
            .into_result()
            .unwrap_or_else(|e| vec![Err(e)]))
    }

    /// See [`Pool::map_async`].
    pub fn map_async<F, A, R, I>(&self, f: F, iter: I) -> Result<AsyncResult<Vec<R>>, PoolError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.map_async_with(f, iter, Callbacks::new())
    }

    /// See [`Pool::map_async_with`].
    pub fn map_async_with<F, A, R, I>(
        &self,
        f: F,
        iter: I,
        callbacks: Callbacks<Vec<R>>,
    ) -> Result<AsyncResult<Vec<R>>, PoolError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = f;
        let slot = Slot::new(Some(callbacks));
        self.map_job::<Plain<F>, A, R, I>(iter, MapSlot::Values(slot.clone()))?;
        Ok(AsyncResult { slot })
    }

    /// See [`Pool::starmap`].
    pub fn starmap<F, Args, R, I>(&self, f: F, iter: I) -> Result<Vec<R>, TaskError>
    where
        F: StarFn<Args, R>,
        I: IntoIterator<Item = Args>,
        Args: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.starmap_async(f, iter)?.into_result()
    }

    /// See [`Pool::starmap_async`].
    pub fn starmap_async<F, Args, R, I>(
        &self,
        f: F,
        iter: I,
    ) -> Result<AsyncResult<Vec<R>>, PoolError>
    where
        F: StarFn<Args, R>,
        I: IntoIterator<Item = Args>,
        Args: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.starmap_async_with(f, iter, Callbacks::new())
    }

    /// See [`Pool::starmap_async_with`].
    pub fn starmap_async_with<F, Args, R, I>(
        &self,
        f: F,
        iter: I,
        callbacks: Callbacks<Vec<R>>,
    ) -> Result<AsyncResult<Vec<R>>, PoolError>
    where
        F: StarFn<Args, R>,
        I: IntoIterator<Item = Args>,
        Args: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = f;
        let slot = Slot::new(Some(callbacks));
        self.map_job::<Star<F>, Args, R, I>(iter, MapSlot::Values(slot.clone()))?;
        Ok(AsyncResult { slot })
    }

    /// See [`Pool::imap`].
    pub fn imap<'a, F, A, R, I>(&self, f: F, iter: I) -> Result<IMap<'a, R>, PoolError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'a,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = f;
        self.imap_job::<Plain<F>, A, R, I>(iter, true)
    }

    /// See [`Pool::imap_unordered`].
    pub fn imap_unordered<'a, F, A, R, I>(&self, f: F, iter: I) -> Result<IMap<'a, R>, PoolError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'a,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = f;
        self.imap_job::<Plain<F>, A, R, I>(iter, false)
    }

    fn imap_job<'a, T, A, R, I>(&self, iter: I, ordered: bool) -> Result<IMap<'a, R>, PoolError>
    where
        T: TaskFn<A, R>,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'a,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.queue.check_running()?;
        Ok(imap_job::<T, A, R, I>(
            self.queue,
            iter,
            ordered,
            self.chunksize.unwrap_or(1),
            self.processes * 2,
        ))
    }
}

/// A lazy map over `iter`: chunks of `chunksize` items encoded and submitted as the results
/// are consumed, at most `max_in_flight` chunks submitted and not yet yielded.
pub(crate) fn imap_job<'a, T, A, R, I>(
    shared: &Arc<dyn ChunkQueue>,
    iter: I,
    ordered: bool,
    chunksize: usize,
    max_in_flight: usize,
) -> IMap<'a, R>
where
    T: TaskFn<A, R>,
    I: IntoIterator<Item = A>,
    I::IntoIter: 'a,
    A: Serialize + DeserializeOwned + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    let head = dispatcher::chunk_head(&entry::task_id::<T, A, R>());
    let mut it = iter.into_iter();
    let next_chunk: result::NextChunk<'a> = Box::new(move |sink, index| {
        let mut frame: Option<Vec<u8>> = None;
        let mut n = 0usize;
        let (read, raw) = handles::with_outbox(|| {
            while n < chunksize {
                let item = panic::catch_unwind(AssertUnwindSafe(|| it.next()))
                    .map_err(|p| TaskError::Input(panic_message(&*p)))?;
                let Some(a) = item else { break };
                let f = frame.get_or_insert_with(|| dispatcher::chunk_frame(&head, 0, 0));
                entry::encode_into(&a, f).map_err(TaskError::Encode)?;
                n += 1;
            }
            Ok::<(), TaskError>(())
        });
        read?;
        let handles = duplicate_task_handles(&raw).map_err(TaskError::Encode)?;
        Ok(frame.map(|mut f| {
            f[5..9].copy_from_slice(&(n as u32).to_le_bytes());
            dispatcher::seal_frame(&mut f);
            Chunk {
                sink: sink.clone(),
                index,
                len: n,
                frame: f,
                handles,
            }
        }))
    });
    IMap::new(shared.clone(), ordered, max_in_flight, next_chunk)
}

/// What a manager's server needs to build a pool a client described with a [`PoolBuilder`]
/// (see `manager::pool`): no context (the server's default), no handles.
#[derive(Debug, Serialize, serde::Deserialize)]
pub(crate) struct RemoteSpec {
    processes: Option<usize>,
    max_tasks: Option<usize>,
    init: Option<(crate::fn_id::FnId<entry::Init>, Vec<u8>)>,
}

impl PoolBuilder {
    /// The number of processes asked for, if any.
    pub(crate) fn processes_asked(&self) -> Option<usize> {
        self.processes
    }

    /// This builder as a [`RemoteSpec`]: an initializer argument holding shareable objects
    /// is refused (its handles cannot pass through a manager's connection), as is an MPI
    /// pool.
    pub(crate) fn remote_spec(self) -> Result<RemoteSpec, PoolError> {
        if !matches!(self.launch, launch::Launch::Processes) {
            return Err(PoolError::InvalidArgument(
                "a manager's pool runs worker processes of the server".into(),
            ));
        }
        let init = match self.init {
            None => None,
            Some(Err(e)) => return Err(PoolError::Encode(e)),
            Some(Ok(i)) if !i.handles.is_empty() => {
                return Err(PoolError::HandlesUnsupported("the initializer argument"))
            }
            Some(Ok(i)) => Some((i.entry, i.bytes)),
        };
        Ok(RemoteSpec {
            processes: self.processes,
            max_tasks: self.max_tasks,
            init,
        })
    }

    /// The builder a [`RemoteSpec`] describes.
    pub(crate) fn from_remote_spec(spec: RemoteSpec) -> Self {
        Self {
            processes: spec.processes,
            max_tasks: spec.max_tasks,
            init: spec.init.map(|(entry, bytes)| {
                Ok(InitArg {
                    entry,
                    bytes,
                    handles: SharedHandles::default(),
                })
            }),
            ..Self::default()
        }
    }
}

/// A chunk whose frame another process encoded (a manager's client, see `manager::pool`),
/// checked to be exactly one chunk record of `len` items, the form [`encode_chunk`] makes,
/// before a dispatcher batches it with others. What the record holds is the worker's to
/// check (function id and arguments, as for any chunk).
pub(crate) fn foreign_chunk(frame: Vec<u8>, len: u32, sink: Arc<dyn Sink>) -> Option<Chunk> {
    let field = |at: usize| {
        frame
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let whole = frame.first() == Some(&worker::FRAME_TASKS)
        && field(1) == Some(frame.len().saturating_sub(5))
        && field(5) == Some(len as usize)
        && len > 0;
    whole.then(|| Chunk {
        sink,
        index: 0,
        len: len as usize,
        frame,
        handles: Vec::new(),
    })
}

impl Pool {
    /// Queues chunks made by [`foreign_chunk`].
    pub(crate) fn submit_chunks(&self, chunks: Vec<Chunk>) -> Result<(), PoolError> {
        self.shared.submit(chunks)
    }

    /// [`join`](Self::join), giving up after `timeout`: whether the workers have ended.
    pub(crate) fn join_timeout(&self, timeout: Duration) -> Result<bool, PoolError> {
        if self.shared.lock().status == dispatcher::Status::Running {
            return Err(PoolError::StillRunning);
        }
        if !self.shared.wait_stopped(Some(timeout)) {
            return Ok(false);
        }
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
        Ok(true)
    }
}
