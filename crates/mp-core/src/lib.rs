//! # mp: Python's `multiprocessing`, in Rust
//!
//! Start processes with a `threading`-like API, talk to them through typed pipes, and wait on
//! several of them at once.
//!
//! | Python | here |
//! |---|---|
//! | `Process(target=f, args=(x,))` | [`Process::new`]`(f, x)` |
//! | `get_context("spawn")` | [`get_context`]`(`[`StartMethod::Spawn`]`)` |
//! | `current_process()`, `parent_process()`, `active_children()`, `cpu_count()` | [`current_process`], [`parent_process`], [`active_children`], [`cpu_count`] |
//! | `Pipe()`, `Pipe(duplex=False)` | [`pipe`], [`pipe_oneway`] |
//! | `multiprocessing.connection.wait` | [`wait`] |
//! | `if __name__ == "__main__":` | nothing, or [`main`] as the first line of `main` |
//!
//! ```
//! use mp_core::{pipe, Connection, Process};
//!
//! fn greet(conn: Connection<String>) {
//!     let name = conn.recv().unwrap();
//!     conn.send(&format!("hello, {name}")).unwrap();
//! }
//!
//! let (here, there) = pipe::<String>().unwrap();
//! let mut child = Process::new(greet, there);
//! child.start().unwrap();
//! here.send(&"bob".to_string()).unwrap();
//! assert_eq!(here.recv().unwrap(), "hello, bob");
//! child.join().unwrap();
//! assert_eq!(child.exitcode(), Some(0));
//! ```
//!
//! ## How a child finds its work
//!
//! Under the default start method, [`StartMethod::Spawn`], a child is a fresh run of the
//! current executable. Before `main` runs, a constructor that this crate installs notices that
//! the process is a child, receives its target (identified by its offset from a fixed function
//! in the same binary) and its serialized argument, runs it and exits, so the user's `main`
//! never runs in a child. This works the same in binaries, examples, `cargo test` and
//! doctests. [`main`] does the same job explicitly, for platforms or link setups where the
//! constructor does not run.
//!
//! ## Feature flags
//!
//! - `socket` (default): pipes over Unix domain sockets (Unix) or named pipes (Windows).
//! - `shm`: the shared-memory backend (crate `mp-shm`): `connection::Shm`, selectable per
//!   object (`pipe_with::<T, Shm>()`, `Queue::with_transport::<Shm>()`), and the default of
//!   `pipe()` and the queues when the feature is on.
//! - `threads`: `dummy`, Python's `multiprocessing.dummy`: the same API on threads, with
//!   crossbeam channels. [`api`] has the traits that let one function run on processes or
//!   threads.
// Under `--cfg loom` (cargo xtask loom) the sync protocols use loom's model instead of the
// real futex and atomics, which leaves some platform items unused.
#![cfg_attr(loom, allow(unused_imports, dead_code))]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

pub mod api;
pub mod codec;
pub mod connection;
mod context;
#[cfg(feature = "threads")]
#[cfg_attr(docsrs, doc(cfg(feature = "threads")))]
pub mod dummy;
mod error;
mod fn_id;
mod handles;
pub mod listener;
pub mod logging;
pub mod manager;
pub mod pool;
pub mod process;
pub mod queue;
pub mod shared;
pub mod sync;
mod sys;
mod wait;

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;

pub use connection::{pipe, pipe_oneway, Connection, Reader, Writer};
pub use context::{
    get_all_start_methods, get_context, get_start_method, get_start_method_if_set,
    set_start_method, Context, StartMethod,
};
pub use error::{ChildPanic, ConnectionError, ContextError, DecodeError, ProcessError, WaitError};
pub use handles::OsHandle;
pub use listener::{Address, AuthenticationError, Client, Listener, ListenerError};
pub use pool::{AsyncResult, Pool, PoolError, TaskError};
pub use process::{
    active_children, cpu_count, current_process, parent_process, ParentProcess, Process,
    ProcessInfo,
};
pub use queue::{GetError, JoinableQueue, PutError, Queue, QueueError, SimpleQueue};
pub use shared::{
    Array, ArrayGuard, OwnerDied, RawArray, RawValue, ShareableList, SharedBytes, SharedData,
    SharedError, SharedMemory, SharedVec, ShortStr, Value, ValueGuard,
};
pub use sync::{
    Barrier, BoundedSemaphore, BrokenBarrierError, Condition, Event, Lock, LockError, LockGuard,
    RLock, RLockError, RLockGuard, Semaphore, SemaphoreGuard, SyncError,
};
pub use wait::{wait, Sentinel, Waitable};

/// Runs the child's work if this process was started by `mp`; returns at once otherwise.
///
/// The counterpart of Python's `if __name__ == "__main__":` guard. On Linux, macOS, FreeBSD
/// and Windows a constructor does this before `main` runs, so the call is optional there; putting it first
/// in `main` makes the program correct on every platform and says what happens. In a child it
/// never returns. If a child reaches a [`Process::start`] without having run this, `start`
/// fails with [`ProcessError::BootstrapMissing`] instead of starting processes recursively.
///
/// ```
/// mp_core::main();
/// // ... the parent's program: in a child, this line is never reached ...
/// assert!(mp_core::parent_process().is_none());
/// ```
pub fn main() {
    process::child::boot_from_env();
}

/// The guides' code blocks run as doctests, so that the guides cannot rot.
#[cfg(doctest)]
mod guides {
    #[doc = include_str!("../../../docs/guide/processes.md")]
    struct Processes;
    #[doc = include_str!("../../../docs/guide/pipes-and-queues.md")]
    struct PipesAndQueues;
    #[doc = include_str!("../../../docs/guide/synchronisation.md")]
    struct Synchronisation;
    #[doc = include_str!("../../../docs/guide/shared-state.md")]
    struct SharedState;
    #[doc = include_str!("../../../docs/guide/pools.md")]
    struct Pools;
    #[doc = include_str!("../../../docs/guide/managers-and-remote.md")]
    struct ManagersAndRemote;
}
