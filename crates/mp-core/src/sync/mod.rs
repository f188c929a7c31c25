//! Process-shared synchronisation: Python's `multiprocessing.Lock` and friends.
//!
//! | Python | here |
//! |---|---|
//! | `Lock()` | [`Lock`] |
//! | `RLock()` | [`RLock`] |
//! | `Semaphore(n)`, `BoundedSemaphore(n)` | [`Semaphore`], [`BoundedSemaphore`] |
//! | `Condition(lock=None)` | [`Condition`] (over an [`RLock`] by default, or any [`AnyLock`]) |
//! | `Event()` | [`Event`] |
//! | `Barrier(parties, action, timeout)`, `BrokenBarrierError` | [`Barrier`], [`BrokenBarrierError`] |
//!
//! Every primitive keeps its state in a small shared-memory segment (see
//! [`crate::shared`]) and blocks in the kernel on a process-shared word: a futex on Linux,
//! `os_sync_wait_on_address` (or `__ulock_wait`) on macOS, `_umtx_op` on FreeBSD, a short
//! sleep-and-check loop on other Unixes (and with the `posix-generic` feature). A primitive
//! passed to a child, as an argument or inside a message, is the same object there: both
//! processes see the same memory.
//!
//! Differences from Python:
//! - acquisition returns an RAII guard; dropping it releases;
//! - every blocking call has a `_timeout` form taking a `Duration`;
//! - a lock whose holder process died is handed to the next acquirer with
//!   [`LockError::OwnerDied`], which carries the guard: the new owner is told, and can check
//!   the state the lock protects (Python's process locks stay locked for ever).

mod anylock;
mod barrier;
mod condition;
mod event;
pub(crate) mod futex;
mod lock;
#[cfg(all(test, loom))]
pub(crate) mod loom_models;
pub(crate) mod model;
mod rlock;
mod semaphore;

pub use anylock::{AnyLock, AnyLockError, AnyLockGuard};
pub use barrier::{Barrier, BrokenBarrierError};
pub use condition::Condition;
pub use event::Event;
pub use lock::{Lock, LockError, LockGuard};
pub use rlock::{RLock, RLockError, RLockGuard};
pub use semaphore::{BoundedSemaphore, Semaphore, SemaphoreGuard};

pub(crate) use lock::{Acquired, RawLock};
pub(crate) use rlock::me as thread_owner_id;

/// Errors of the synchronisation primitives (Python: `ValueError`, `RuntimeError`,
/// `AssertionError` for misuse).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Released more often than acquired (Python: "released too many times").
    #[error("released too many times")]
    ReleasedTooManyTimes,
    /// Released by a thread or process that does not own it (RLock).
    #[error("cannot release an un-acquired or foreign-owned lock")]
    NotOwner,
    /// An argument out of range (Python: `ValueError`), e.g. a barrier for 0 parties.
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// The shared memory for the primitive could not be created.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
