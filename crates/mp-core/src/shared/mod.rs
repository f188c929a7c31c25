//! Shared state between processes: Python's `Value`, `Array`, `RawValue`, `RawArray`
//! (`multiprocessing.sharedctypes`), `shared_memory.SharedMemory` and `ShareableList`.
//!
//! - [`Value`] / [`Array`]: plain data in an anonymous shared-memory segment, with a
//!   process-shared [`Lock`](crate::Lock); pass them to a child as an argument or in a
//!   message and both processes see the same memory.
//! - [`RawValue`] / [`RawArray`]: the same without a lock.
//! - [`SharedMemory`]: a named segment any process can open by name.
//! - [`ShareableList`]: a fixed-length list of plain data in a named segment.
//! - [`SharedVec`] / [`SharedBytes`]: a buffer that is sent to other processes without
//!   being copied (Python: pickle protocol 5 out-of-band buffers over `shared_memory`).
//!
//! What can live in shared memory is said by the [`SharedData`] marker trait.
//!
//! **A segment shrunk by another process.** Where a segment's size cannot be sealed (named
//! segments on every Unix; anonymous ones outside Linux or under `posix-generic`), a process
//! holding it can `ftruncate` it. This process then does not die of `SIGBUS`: its first
//! access past the new end replaces its mapping with private zero pages and marks it damaged
//! (`mp_unix::memory`). Accessors that return no `Result` (`Value::get`/`set`, `Array`
//! indexing, `SharedMemory::read_at`/`write_at`) then read zeros and write nowhere;
//! [`SharedMemory::damaged`] tells. The queues and shm pipes return their `Corrupt` errors.

mod data;
mod list;
mod memory;
pub(crate) mod segment;
mod value;
mod vec;

pub use data::{SharedData, ShortStr};
pub use list::ShareableList;
pub use memory::SharedMemory;
pub(crate) use segment::Segment;
pub use value::{Array, ArrayGuard, OwnerDied, RawArray, RawValue, Value, ValueGuard};
pub(crate) use vec::{
    collect_given as collect_given_buffers, encode_unsent, lock_for_fork as lock_buffers_for_fork,
};
pub use vec::{SharedBytes, SharedVec};

/// Errors of shared memory and shared values. Each names the Python exception it stands for.
#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    /// No segment has this name (Python: `FileNotFoundError`).
    #[error("no shared-memory segment named {0:?}")]
    NotFound(String),
    /// A segment with this name exists already (Python: `FileExistsError`).
    #[error("a shared-memory segment named {0:?} exists already")]
    AlreadyExists(String),
    /// The name is empty, too long, or contains a NUL byte, `/`, `\` or a newline
    /// (Python: `ValueError`).
    #[error("invalid shared-memory name {0:?}: {1}")]
    InvalidName(String, &'static str),
    /// A segment must have a positive size (Python: `ValueError`).
    #[error("a shared-memory segment must have a positive size")]
    InvalidSize,
    /// An index past the end (Python: `IndexError`).
    #[error("index {index} out of range for length {len}")]
    IndexOutOfRange {
        /// The index asked for.
        index: usize,
        /// The length.
        len: usize,
    },
    /// A value too long for its fixed-size slot (Python: `ValueError`).
    #[error("a value of {len} bytes does not fit in a slot of {max}")]
    TooLong {
        /// The value's length in bytes.
        len: usize,
        /// The slot's capacity in bytes.
        max: usize,
    },
    /// The segment does not hold what the caller expects (wrong element type or not a
    /// shareable list).
    #[error("the segment does not hold this kind of data: {0}")]
    Mismatch(String),
    /// A [`SharedVec`] is written only by its only holder, and another process (or another
    /// handle here, or a message on its way) holds this one.
    #[error("the shared buffer has other holders: it is read-only until they let go")]
    NotUnique,
    /// Any other OS error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl From<crate::SyncError> for SharedError {
    fn from(e: crate::SyncError) -> Self {
        match e {
            crate::SyncError::Io(e) => Self::Io(e),
            e => Self::Io(std::io::Error::other(e.to_string())),
        }
    }
}
