//! The threads backend: Python's `multiprocessing.dummy`, the same API on threads of this
//! process (feature `threads`).
//!
//! Python's `multiprocessing.dummy` replicates the `multiprocessing` API on top of
//! `threading`; this module does the same for `mp_core`. Code written against
//! `mp_core::{Process, Queue, pipe, Pool, ...}` keeps working when those names come from
//! here, and the [`api`](crate::api) traits let one function run on either backend.
//!
//! | Python (`multiprocessing.dummy`) | here | stands for |
//! |---|---|---|
//! | `Process` (a `threading.Thread`) | [`Process`] | [`crate::Process`] on a named thread `Thread-N` |
//! | `Queue`, `JoinableQueue` (`queue.Queue`) | [`Queue`], [`SimpleQueue`], [`JoinableQueue`] | [`crate::Queue`] and friends, over crossbeam channels |
//! | `Pipe()`, `Pipe(duplex=False)`, `Connection` | [`pipe`], [`pipe_oneway`], [`Connection`], [`Reader`], [`Writer`] | [`crate::pipe`], over crossbeam channels |
//! | `Lock`, `RLock`, `Event`, ... (`threading`'s) | the same types as [`crate::sync`], re-exported | process-shared primitives work between threads too |
//! | `Pool` (`multiprocessing.pool.ThreadPool`) | [`Pool`], [`AsyncResult`], [`IMap`] | [`crate::Pool`] on worker threads |
//! | `current_process()`, `active_children()`, `cpu_count()` | [`current_process`], [`active_children`], [`cpu_count`] | |
//! | `Value`, `Array` | [`Value`], [`Array`] (and the raw forms), re-exported | shared memory works between threads too |
//! | `Manager()`, `Namespace` | [`Manager`] (the manager server on a thread, the same proxies), [`Namespace`] | [`crate::manager::Manager`], [`crate::manager::NamespaceProxy`] |
//! | `multiprocessing.dummy.connection` (`Listener`, `Client`, `Pipe`) | [`connection`]: [`connection::Listener`], [`connection::Client`], [`pipe`] | [`crate::listener`], in this process |
//!
//! What differs from the process backend, and why:
//! - nothing is serialized: arguments, queue items, messages and results are *moved* between
//!   threads, so their types need only be `Send` (the [`api::Flavor`](crate::api::Flavor)
//!   trait keeps the process backend's `serde` bounds, so portable code stays portable), and
//!   the `Encode`/`Decode` error variants never occur for values;
//! - a target may be any `FnOnce` closure, capturing anything ([`Process::new`] and
//!   [`Process::from_closure`]);
//! - a thread cannot be stopped from outside: [`Process::terminate`] and [`Process::kill`]
//!   return [`Unsupported`], and [`Pool::terminate`] cancels the queued tasks at once but lets
//!   running ones finish (their results are discarded);
//! - `pid` is this process's id, as every thread shares it; a panic in a target is reported
//!   as [`ProcessError::Panicked`] with exit code 1, exactly as
//!   a child process's panic is;
//! - threads still running when `main` returns are not waited for (Rust ends the process);
//!   join them. The daemon flag is recorded, for parity, but changes nothing.
//! - pipes and queues are unbounded in memory unless given a `maxsize`: a send never blocks.
//!
//! ```
//! use mp_core::dummy::{pipe, Pool, Process, Queue};
//!
//! let q = Queue::<String>::new().unwrap();
//! let q2 = q.clone();
//! // Threads: the target may capture, and nothing needs to be serializable.
//! let mut p = Process::from_closure(move || q2.put("from a thread".to_string()).unwrap());
//! p.start().unwrap();
//! p.join().unwrap();
//! assert_eq!(q.get().unwrap(), "from a thread");
//! assert!(p.name().unwrap().starts_with("Thread-"));
//!
//! let (a, b) = pipe::<u32>().unwrap();
//! a.send(&7).unwrap();
//! assert_eq!(b.recv().unwrap(), 7);
//!
//! let pool = Pool::new(2).unwrap();
//! assert_eq!(pool.map(|x: u32| x * 2, 0..4).unwrap(), [0, 2, 4, 6]);
//! ```

pub mod connection;
mod manager;
mod passage;
mod pool;
mod process;
mod queue;

pub use connection::{pipe, pipe_oneway, Connection, Reader, Writer};
pub use manager::{Manager, Namespace, DEFAULT_SHUTDOWN_TIMEOUT};
pub use pool::{AsyncResult, IMap, Pool};
pub use process::{active_children, current_process, Process, Unsupported};
pub use queue::{JoinableQueue, Queue, SimpleQueue};

/// The synchronisation primitives, the very types of [`crate::sync`]: they are process-shared,
/// so they work between threads too (Python's `multiprocessing.dummy` re-exports
/// `threading`'s).
///
/// ```
/// use mp_core::dummy::{Lock, Process};
/// let lock = Lock::new().unwrap();
/// let held = lock.acquire().unwrap();
/// let l2 = lock.clone();
/// let mut p = Process::from_closure(move || assert!(l2.try_acquire().is_err()));
/// p.start().unwrap();
/// p.join().unwrap();
/// drop(held);
/// ```
pub use crate::sync::*;

/// The shared values and arrays, the very types of [`crate::shared`]: shared memory with a
/// process-shared lock works between threads too (Python's `multiprocessing.dummy.Value`
/// and `Array` are plain objects).
///
/// ```
/// use mp_core::dummy::{Process, Value};
/// let v = Value::new(1u32).unwrap();
/// let v2 = v.clone();
/// let mut p = Process::from_closure(move || *v2.lock().unwrap() += 1);
/// p.start().unwrap();
/// p.join().unwrap();
/// assert_eq!(v.get(), 2);
/// ```
pub use crate::shared::{Array, ArrayGuard, RawArray, RawValue, Value, ValueGuard};

pub use crate::pool::{PoolError, StarFn, TaskError};
pub use crate::queue::{GetError, PutError, QueueError};
pub use crate::{cpu_count, ChildPanic, ConnectionError, ProcessError};

/// Panics of targets and tasks on this backend's threads: recorded with message, location and
/// backtrace by a panic hook, as the process backend's children do.
pub(crate) mod caught {
    use std::cell::{Cell, RefCell};
    use std::panic::{self, AssertUnwindSafe};

    use crate::ChildPanic;

    /// What the hook does with a panic of a thread running under [`run`].
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Report {
        /// Record it and let the previous hook print it (a `Process` target, like a child).
        Print,
        /// Only record it (a pool task, whose error carries it).
        Quiet,
    }

    thread_local! {
        static MODE: Cell<Option<Report>> = const { Cell::new(None) };
        static LAST: RefCell<Option<ChildPanic>> = const { RefCell::new(None) };
    }

    fn install_hook() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            crate::process::panics::chain_panic_hook(|info, next| {
                let Some(mode) = MODE.with(Cell::get) else {
                    return next(info);
                };
                let message = crate::pool::panic_message(info.payload());
                let location = info.location().map(|l| l.to_string()).unwrap_or_default();
                let backtrace = std::backtrace::Backtrace::force_capture().to_string();
                LAST.with(|l| {
                    *l.borrow_mut() = Some(ChildPanic {
                        message,
                        location,
                        backtrace,
                    })
                });
                if mode == Report::Print {
                    next(info);
                }
            });
        });
    }

    /// Runs `f`, turning a panic into its recorded [`ChildPanic`].
    pub(crate) fn run<T>(mode: Report, f: impl FnOnce() -> T) -> Result<T, ChildPanic> {
        install_hook();
        let before = MODE.with(|m| m.replace(Some(mode)));
        let r = panic::catch_unwind(AssertUnwindSafe(f));
        MODE.with(|m| m.set(before));
        r.map_err(|payload| {
            LAST.with(|l| l.borrow_mut().take())
                .unwrap_or_else(|| ChildPanic {
                    message: crate::pool::panic_message(&*payload),
                    location: String::new(),
                    backtrace: String::new(),
                })
        })
    }
}
