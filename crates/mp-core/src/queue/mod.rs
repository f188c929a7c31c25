//! Queues between processes: Python's `multiprocessing.Queue`, `SimpleQueue` and
//! `JoinableQueue`.
//!
//! Any number of processes and threads may put and get. Items are encoded inside `put` (an
//! encoding error reaches the caller and leaves the queue untouched) and written straight
//! into an anonymous spool file held by the kernel, indexed by a header in shared memory.
//! There is no feeder thread:
//! - an item is in the queue when `put` returns, so a producer that exits right after
//!   putting loses nothing, and joining a producer before reading its items cannot deadlock
//!   (both are classic Python pitfalls);
//! - `put` on an unbounded queue never waits for a reader, whatever the item's size;
//! - `qsize()` is exact on every platform.
//!
//! Consumed spool memory is given back as the reader advances (Linux) or when the queue
//! empties (elsewhere). A queue passed to a child (as an argument or inside a message) is
//! the same queue there. If a process dies in the middle of `put`, its item is simply not
//! there; if it dies holding the queue's lock, the next user repairs the index and goes on.

pub(crate) mod engine;

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use self::engine::{with_frame, Core};
use crate::connection::{DefaultTransport, Transport};
use crate::handles::Probe;

/// Why a `put` failed; the item comes back where it was not queued.
#[derive(Debug, thiserror::Error)]
pub enum PutError<T> {
    /// The bounded queue stayed full (Python: `queue.Full`).
    #[error("the queue is full")]
    Full(T),
    /// This handle was closed.
    #[error("the queue is closed")]
    Closed(T),
    /// The queue was shut down (Python: `queue.ShutDown`).
    #[error("the queue was shut down")]
    ShutDown(T),
    /// The item could not be serialized; nothing was queued.
    #[error("could not serialize the item: {1}")]
    Encode(T, postcard::Error),
    /// The spool could not be written.
    #[error("queue I/O error: {1}")]
    Io(T, std::io::Error),
    /// The queue's shared state is damaged (someone wrote over it); nothing was queued.
    #[error("the queue is corrupt: {1}")]
    Corrupt(T, String),
}

impl<T> PutError<T> {
    /// The item that was not queued.
    pub fn into_inner(self) -> T {
        match self {
            Self::Full(t)
            | Self::Closed(t)
            | Self::ShutDown(t)
            | Self::Encode(t, _)
            | Self::Io(t, _)
            | Self::Corrupt(t, _) => t,
        }
    }
}

/// Why a `get` returned no item.
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    /// Nothing arrived in time (Python: `queue.Empty`).
    #[error("the queue is empty")]
    Empty,
    /// This handle was closed.
    #[error("the queue is closed")]
    Closed,
    /// The queue was shut down and is empty (Python: `queue.ShutDown`).
    #[error("the queue was shut down")]
    ShutDown,
    /// An item was taken but is not a valid `T`; it is consumed, the queue goes on.
    #[error("could not decode the item: {0}")]
    Decode(crate::DecodeError),
    /// An item was taken, but the handles of the shareable objects inside it (a
    /// connection, a lock, ...) could not be fetched from the process that put it: it has
    /// ended, for one. The item is consumed, the queue goes on.
    #[error("could not take the handles of the item: {0}")]
    Handles(String),
    /// The queue's shared state is damaged (someone wrote over it).
    #[error("the queue is corrupt: {0}")]
    Corrupt(String),
    /// The spool could not be read.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Errors of the queue engine and of `task_done` / `join`.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// A bounded queue stayed full.
    #[error("the queue is full")]
    Full,
    /// `task_done` was called more times than items were put (Python: `ValueError`).
    #[error("task_done() called too many times")]
    TaskDoneTooManyTimes,
    /// This handle was closed.
    #[error("the queue is closed")]
    Closed,
    /// `join` timed out.
    #[error("timed out")]
    Timeout,
    /// The queue was shut down.
    #[error("the queue was shut down")]
    ShutDown,
    /// The queue's shared state is damaged (someone wrote over it).
    #[error("the queue is corrupt: {0}")]
    Corrupt(String),
    /// I/O error on the queue's storage.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The deadline of a `timeout` (`None`: for ever, also for a timeout too far away to
/// represent, such as `Duration::MAX`).
fn deadline(timeout: Duration) -> Option<Instant> {
    mp_ipc::deadline::Deadline::after(timeout).instant()
}

/// The handle every queue type wraps: the shared core plus this handle's closed flag.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
struct Handle<T> {
    core: Option<Arc<Core>>,
    #[serde(skip)]
    _t: PhantomData<fn(T) -> T>,
}

impl<T> Clone for Handle<T> {
    fn clone(&self) -> Self {
        Self {
            core: self.core.clone(),
            _t: PhantomData,
        }
    }
}

impl<T: Serialize + DeserializeOwned> Handle<T> {
    fn new(maxsize: u32) -> std::io::Result<Self> {
        Self::with_transport::<DefaultTransport>(maxsize)
    }

    fn with_transport<B: Transport>(maxsize: u32) -> std::io::Result<Self> {
        let ring = B::CAPABILITIES.queue_ring;
        Ok(Self {
            core: Some(Core::new(maxsize, ring)?),
            _t: PhantomData,
        })
    }

    fn put(&self, item: T, deadline: Option<Instant>, joinable: bool) -> Result<(), PutError<T>> {
        let Some(core) = &self.core else {
            return Err(PutError::Closed(item));
        };
        // Handles inside the item are handed off: exported for the taker to fetch.
        let (put, handoff) = crate::handles::encode_handoff(|| {
            with_frame(&item, |frame| core.put(frame, deadline, joinable))
        });
        let put = match put {
            Ok(r) => r,
            Err(e) => {
                handoff.withdraw();
                return Err(PutError::Encode(item, e));
            }
        };
        if put.is_err() {
            handoff.withdraw();
        }
        match put {
            Ok(()) => Ok(()),
            Err(QueueError::Io(e)) => Err(PutError::Io(item, e)),
            Err(QueueError::Corrupt(why)) => Err(PutError::Corrupt(item, why)),
            Err(QueueError::ShutDown) => Err(PutError::ShutDown(item)),
            Err(_) => Err(PutError::Full(item)),
        }
    }

    fn get(&self, deadline: Option<Instant>) -> Result<T, GetError> {
        let core = self.core.as_ref().ok_or(GetError::Closed)?;
        // An item holding handles is copied out under the lock and decoded after it, since
        // fetching its handles talks to the process that put it.
        match core.get(deadline, crate::handles::decode_probe::<T>)? {
            Probe::Done(value) => value.map_err(GetError::Decode),
            Probe::Handles(bytes) => {
                crate::handles::decode_handoff(&bytes).map_err(
                    |e| match crate::handles::take_note() {
                        Some(why) => GetError::Handles(why),
                        None => GetError::Decode(e),
                    },
                )
            }
        }
    }
}

impl<T> Handle<T> {
    fn core(&self) -> Option<&Core> {
        self.core.as_deref()
    }
}

/// Methods every queue type shares, written once.
macro_rules! queue_methods {
    ($ty:ident, $joinable:expr) => {
        impl<T: Serialize + DeserializeOwned> $ty<T> {
            /// Puts an item, waiting for room if the queue is bounded and full.
            pub fn put(&self, item: T) -> Result<(), PutError<T>> {
                self.handle.put(item, None, $joinable)
            }

            /// Puts an item, waiting at most `timeout` for room ([`PutError::Full`] after).
            pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), PutError<T>> {
                self.handle.put(item, deadline(timeout), $joinable)
            }

            /// Puts an item only if there is room now.
            pub fn put_nowait(&self, item: T) -> Result<(), PutError<T>> {
                self.handle.put(item, Some(Instant::now()), $joinable)
            }

            /// Takes the oldest item, waiting for one.
            pub fn get(&self) -> Result<T, GetError> {
                self.handle.get(None)
            }

            /// Takes the oldest item, waiting at most `timeout` ([`GetError::Empty`] after).
            pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetError> {
                self.handle.get(deadline(timeout))
            }

            /// Takes the oldest item if there is one now.
            pub fn get_nowait(&self) -> Result<T, GetError> {
                self.handle.get(Some(Instant::now()))
            }

            /// The number of items in the queue (exact at the moment it is read).
            pub fn qsize(&self) -> usize {
                self.handle.core().map_or(0, Core::qsize)
            }

            /// Whether the queue holds no item.
            pub fn empty(&self) -> bool {
                self.qsize() == 0
            }

            /// Whether a bounded queue is at its limit.
            pub fn full(&self) -> bool {
                self.handle
                    .core()
                    .is_some_and(|c| c.maxsize() != 0 && c.qsize() >= c.maxsize() as usize)
            }

            /// Closes this handle: later calls on it fail with `Closed`. Other handles, here
            /// and in other processes, keep working; items already put stay queued.
            pub fn close(&mut self) {
                self.handle.core = None;
            }

            /// Whether [`close`](Self::close) was called on this handle.
            pub fn is_closed(&self) -> bool {
                self.handle.core.is_none()
            }

            /// Shuts the queue down for every handle, in every process (Python 3.13's
            /// `shutdown(immediate)`): `put` then fails with `ShutDown`, and `get` too once
            /// the queue is empty; blocked callers wake. `immediate` discards what is queued
            /// (a joinable queue counts each discarded item done). Returns how many items
            /// were discarded.
            ///
            /// ```
            /// use mp_core::{GetError, PutError};
            #[doc = concat!("let q = mp_core::", stringify!($ty), "::<u8>::new().unwrap();")]
            /// q.put(1).unwrap();
            /// q.shutdown(false).unwrap();
            /// assert!(matches!(q.put(2), Err(PutError::ShutDown(2))));
            /// assert_eq!(q.get().unwrap(), 1); // what was queued can still be taken
            /// assert!(matches!(q.get(), Err(GetError::ShutDown)));
            /// ```
            pub fn shutdown(&self, immediate: bool) -> Result<usize, QueueError> {
                let core = self.handle.core().ok_or(QueueError::Closed)?;
                Ok(core.shutdown(immediate, $joinable))
            }

            /// Whether the queue was shut down (by any handle, in any process).
            pub fn is_shut_down(&self) -> bool {
                self.handle.core().is_some_and(Core::is_shut_down)
            }
        }

        impl<T> Clone for $ty<T> {
            fn clone(&self) -> Self {
                Self {
                    handle: self.handle.clone(),
                }
            }
        }

        impl<T> std::fmt::Debug for $ty<T> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($ty))
                    .field("qsize", &self.handle.core().map(Core::qsize))
                    .finish()
            }
        }
    };
}

/// A multi-producer, multi-consumer queue between processes: Python's
/// `multiprocessing.Queue`.
///
/// ```
/// use mp_core::Queue;
/// let q = Queue::<String>::bounded(2).unwrap();
/// q.put("a".into()).unwrap();
/// q.put("b".into()).unwrap();
/// assert!(q.full());
/// assert!(q.put_nowait("c".into()).is_err());
/// assert_eq!(q.get().unwrap(), "a");
/// assert_eq!(q.qsize(), 1);
/// ```
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Queue<T> {
    handle: Handle<T>,
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// An unbounded queue.
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            handle: Handle::new(0)?,
        })
    }

    /// A queue holding at most `maxsize` items (0: unbounded).
    pub fn bounded(maxsize: u32) -> std::io::Result<Self> {
        Ok(Self {
            handle: Handle::new(maxsize)?,
        })
    }

    /// A queue of at most `maxsize` items (0: unbounded) over transport `B`, whatever the
    /// default backend is.
    ///
    /// ```
    /// use mp_core::{connection::Socket, Queue};
    /// let q = Queue::<u8>::with_transport::<Socket>(0).unwrap();
    /// q.put(1).unwrap();
    /// assert_eq!(q.get().unwrap(), 1);
    /// ```
    pub fn with_transport<B: Transport>(maxsize: u32) -> std::io::Result<Self> {
        Ok(Self {
            handle: Handle::with_transport::<B>(maxsize)?,
        })
    }
}

queue_methods!(Queue, false);

/// The simplest queue: unbounded, put and get: Python's `multiprocessing.SimpleQueue`.
///
/// ```
/// let q = mp_core::SimpleQueue::<u32>::new().unwrap();
/// assert!(q.empty());
/// q.put(7).unwrap();
/// assert_eq!(q.get().unwrap(), 7);
/// ```
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct SimpleQueue<T> {
    handle: Handle<T>,
}

impl<T: Serialize + DeserializeOwned> SimpleQueue<T> {
    /// A new, empty queue.
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            handle: Handle::new(0)?,
        })
    }

    /// A new, empty queue over transport `B`.
    pub fn with_transport<B: Transport>() -> std::io::Result<Self> {
        Ok(Self {
            handle: Handle::with_transport::<B>(0)?,
        })
    }
}

queue_methods!(SimpleQueue, false);

/// A queue whose consumers mark items done, so a producer can wait for all of them:
/// Python's `multiprocessing.JoinableQueue`.
///
/// ```
/// use std::time::Duration;
/// let q = mp_core::JoinableQueue::<u32>::new().unwrap();
/// q.put(1).unwrap();
/// assert!(q.join_timeout(Duration::ZERO).is_err());
/// q.get().unwrap();
/// q.task_done().unwrap();
/// q.join().unwrap();
/// assert!(q.task_done().is_err());
/// ```
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct JoinableQueue<T> {
    handle: Handle<T>,
}

impl<T: Serialize + DeserializeOwned> JoinableQueue<T> {
    /// An unbounded joinable queue.
    pub fn new() -> std::io::Result<Self> {
        Self::bounded(0)
    }

    /// A joinable queue holding at most `maxsize` items (0: unbounded).
    pub fn bounded(maxsize: u32) -> std::io::Result<Self> {
        Ok(Self {
            handle: Handle::new(maxsize)?,
        })
    }

    /// A joinable queue of at most `maxsize` items (0: unbounded) over transport `B`.
    pub fn with_transport<B: Transport>(maxsize: u32) -> std::io::Result<Self> {
        Ok(Self {
            handle: Handle::with_transport::<B>(maxsize)?,
        })
    }

    /// Marks one item taken from the queue as done. Calling it more times than items were
    /// put is [`QueueError::TaskDoneTooManyTimes`].
    pub fn task_done(&self) -> Result<(), QueueError> {
        self.handle.core().ok_or(QueueError::Closed)?.task_done()
    }

    /// Waits until every item put has been marked done.
    pub fn join(&self) -> Result<(), QueueError> {
        self.handle.core().ok_or(QueueError::Closed)?.join(None);
        Ok(())
    }

    /// Like [`join`](Self::join), giving up after `timeout` with [`QueueError::Timeout`].
    pub fn join_timeout(&self, timeout: Duration) -> Result<(), QueueError> {
        match self
            .handle
            .core()
            .ok_or(QueueError::Closed)?
            .join(deadline(timeout))
        {
            true => Ok(()),
            false => Err(QueueError::Timeout),
        }
    }

    /// Items put and not yet marked done.
    pub fn unfinished_tasks(&self) -> u32 {
        self.handle.core().map_or(0, Core::unfinished)
    }
}

queue_methods!(JoinableQueue, true);
