//! Process-shared synchronisation: Python's `multiprocessing.Lock` and friends.
//!
//! Every primitive keeps its state in a small shared-memory segment (see
//! [`crate::shared`]) and blocks with a process-shared futex on Linux (a short sleep-and-check
//! loop elsewhere, for now). A primitive passed to a child, as an argument or inside a message,
//! is the same object there: both processes see the same memory.
//!
//! Differences from Python:
//! - acquisition returns an RAII guard; dropping it releases;
//! - every blocking call has a `_timeout` form taking a `Duration`;
//! - a lock whose holder process died is handed to the next acquirer with
//!   [`LockError::OwnerDied`], which carries the guard: the new owner is told, and can check
//!   the state the lock protects (Python's process locks stay locked for ever).

pub(crate) mod futex;
mod lock;

pub use lock::{Lock, LockError, LockGuard};

pub(crate) use lock::{Acquired, RawLock};

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
    /// The shared memory for the primitive could not be created.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
