//! [`Queue`], [`SimpleQueue`], [`JoinableQueue`] over crossbeam channels: Python's
//! `multiprocessing.dummy.Queue` (`queue.Queue`) with the API of [`crate::queue`].

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Select, Sender, TrySendError};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::queue::{GetError, PutError, QueueError};

struct Core<T> {
    tx: Sender<T>,
    rx: Receiver<T>,
    maxsize: u32,
    /// Items put on a joinable queue and not yet marked done.
    unfinished: Mutex<u32>,
    all_done: Condvar,
    /// Dropped by `shutdown`: `stopped` then reports disconnection, which wakes every
    /// blocked `put` and `get` (they wait on it beside the items channel).
    stop: Mutex<Option<Sender<()>>>,
    stopped: Receiver<()>,
}

impl<T> Core<T> {
    fn new(maxsize: u32) -> Arc<Self> {
        let (tx, rx) = if maxsize == 0 {
            crossbeam_channel::unbounded()
        } else {
            crossbeam_channel::bounded(maxsize as usize)
        };
        let (stop, stopped) = crossbeam_channel::bounded(0);
        Arc::new(Self {
            tx,
            rx,
            maxsize,
            unfinished: Mutex::new(0),
            all_done: Condvar::new(),
            stop: Mutex::new(Some(stop)),
            stopped,
        })
    }

    fn unfinished(&self) -> std::sync::MutexGuard<'_, u32> {
        self.unfinished.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_shut_down(&self) -> bool {
        self.stop
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
    }

    /// See [`crate::Queue::shutdown`]; returns how many items were discarded.
    fn shutdown(&self, immediate: bool, joinable: bool) -> usize {
        self.stop.lock().unwrap_or_else(|e| e.into_inner()).take();
        let mut discarded = 0;
        while immediate && self.rx.try_recv().is_ok() {
            discarded += 1;
            if joinable {
                let _ = self.task_done();
            }
        }
        discarded
    }

    /// `None`: wait for room; `Some(d)`: until `d` (a past `d`: only if there is room now).
    fn put(&self, item: T, deadline: Option<Instant>, joinable: bool) -> Result<(), PutError<T>> {
        if self.is_shut_down() {
            return Err(PutError::ShutDown(item));
        }
        if joinable {
            // Counted before it is visible, so a quick consumer's task_done finds it.
            *self.unfinished() += 1;
        }
        let r = match deadline {
            Some(d) if d <= Instant::now() => self.tx.try_send(item).map_err(|e| match e {
                TrySendError::Full(t) => PutError::Full(t),
                TrySendError::Disconnected(t) => PutError::Closed(t),
            }),
            _ => {
                let mut sel = Select::new();
                let send = sel.send(&self.tx);
                let stop = sel.recv(&self.stopped);
                let op = match deadline {
                    None => Ok(sel.select()),
                    Some(d) => sel.select_deadline(d),
                };
                match op {
                    Err(_) => Err(PutError::Full(item)),
                    Ok(op) if op.index() == send => op
                        .send(&self.tx, item)
                        .map_err(|e| PutError::Closed(e.into_inner())),
                    Ok(op) => {
                        debug_assert_eq!(op.index(), stop);
                        let _ = op.recv(&self.stopped);
                        Err(PutError::ShutDown(item))
                    }
                }
            }
        };
        if r.is_err() && joinable {
            self.task_done().ok();
        }
        r
    }

    fn get(&self, deadline: Option<Instant>) -> Result<T, GetError> {
        // The core holds a sender itself, so the items channel never disconnects; after a
        // shutdown, what is queued can still be taken.
        if let Ok(item) = self.rx.try_recv() {
            return Ok(item);
        }
        if self.is_shut_down() {
            return Err(GetError::ShutDown);
        }
        if deadline.is_some_and(|d| d <= Instant::now()) {
            return Err(GetError::Empty);
        }
        let mut sel = Select::new();
        let items = sel.recv(&self.rx);
        sel.recv(&self.stopped);
        let op = match deadline {
            None => Ok(sel.select()),
            Some(d) => sel.select_deadline(d),
        };
        match op {
            Err(_) => Err(GetError::Empty),
            Ok(op) if op.index() == items => op.recv(&self.rx).map_err(|_| GetError::Closed),
            Ok(op) => {
                let _ = op.recv(&self.stopped);
                self.rx.try_recv().map_err(|_| GetError::ShutDown)
            }
        }
    }

    fn task_done(&self) -> Result<(), QueueError> {
        let mut n = self.unfinished();
        if *n == 0 {
            return Err(QueueError::TaskDoneTooManyTimes);
        }
        *n -= 1;
        if *n == 0 {
            self.all_done.notify_all();
        }
        Ok(())
    }

    fn join(&self, timeout: Option<Duration>) -> bool {
        let n = self.unfinished();
        match timeout {
            None => {
                let _n = self
                    .all_done
                    .wait_while(n, |n| *n > 0)
                    .unwrap_or_else(|e| e.into_inner());
                true
            }
            Some(t) => {
                let (n, _) = self
                    .all_done
                    .wait_timeout_while(n, t, |n| *n > 0)
                    .unwrap_or_else(|e| e.into_inner());
                *n == 0
            }
        }
    }
}

/// The deadline of a `timeout` (`None`: for ever, also for a timeout too far away to
/// represent, such as `Duration::MAX`).
fn deadline(timeout: Duration) -> Option<Instant> {
    mp_ipc::deadline::Deadline::after(timeout).instant()
}

/// Methods every queue type shares, written once (as in [`crate::queue`]).
macro_rules! queue_methods {
    ($ty:ident, $joinable:expr) => {
        impl<T> $ty<T> {
            fn core(&self) -> Option<&Core<T>> {
                self.core.as_deref()
            }

            fn put_until(&self, item: T, deadline: Option<Instant>) -> Result<(), PutError<T>> {
                match self.core() {
                    Some(c) => c.put(item, deadline, $joinable),
                    None => Err(PutError::Closed(item)),
                }
            }

            fn get_until(&self, deadline: Option<Instant>) -> Result<T, GetError> {
                self.core().ok_or(GetError::Closed)?.get(deadline)
            }

            /// Puts an item, waiting for room if the queue is bounded and full.
            pub fn put(&self, item: T) -> Result<(), PutError<T>> {
                self.put_until(item, None)
            }

            /// Puts an item, waiting at most `timeout` for room ([`PutError::Full`] after).
            pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), PutError<T>> {
                self.put_until(item, deadline(timeout))
            }

            /// Puts an item only if there is room now.
            pub fn put_nowait(&self, item: T) -> Result<(), PutError<T>> {
                self.put_until(item, Some(Instant::now()))
            }

            /// Takes the oldest item, waiting for one.
            pub fn get(&self) -> Result<T, GetError> {
                self.get_until(None)
            }

            /// Takes the oldest item, waiting at most `timeout` ([`GetError::Empty`] after).
            pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetError> {
                self.get_until(deadline(timeout))
            }

            /// Takes the oldest item if there is one now.
            pub fn get_nowait(&self) -> Result<T, GetError> {
                self.get_until(Some(Instant::now()))
            }

            /// The number of items in the queue.
            pub fn qsize(&self) -> usize {
                self.core().map_or(0, |c| c.rx.len())
            }

            /// Whether the queue holds no item.
            pub fn empty(&self) -> bool {
                self.qsize() == 0
            }

            /// Whether a bounded queue is at its limit.
            pub fn full(&self) -> bool {
                self.core()
                    .is_some_and(|c| c.maxsize != 0 && c.rx.len() >= c.maxsize as usize)
            }

            /// Closes this handle: later calls on it fail with `Closed`. Other handles keep
            /// working; items already put stay queued.
            pub fn close(&mut self) {
                self.core = None;
            }

            /// Whether [`close`](Self::close) was called on this handle.
            pub fn is_closed(&self) -> bool {
                self.core.is_none()
            }

            /// Shuts the queue down for every handle (as [`crate::Queue::shutdown`]):
            /// `put` then fails with `ShutDown`, and `get` too once the queue is empty;
            /// blocked callers wake; `immediate` discards what is queued. Returns how many
            /// items were discarded.
            ///
            /// ```
            #[doc = concat!("let q = mp_core::dummy::", stringify!($ty), "::<u8>::new().unwrap();")]
            /// q.put(1).unwrap();
            /// assert_eq!(q.shutdown(true).unwrap(), 1);
            /// assert!(q.get().is_err() && q.put(2).is_err());
            /// ```
            pub fn shutdown(&self, immediate: bool) -> Result<usize, QueueError> {
                let core = self.core().ok_or(QueueError::Closed)?;
                Ok(core.shutdown(immediate, $joinable))
            }

            /// Whether the queue was shut down (by any handle).
            pub fn is_shut_down(&self) -> bool {
                self.core().is_some_and(Core::is_shut_down)
            }
        }

        impl<T> Clone for $ty<T> {
            fn clone(&self) -> Self {
                Self {
                    core: self.core.clone(),
                }
            }
        }

        impl<T> std::fmt::Debug for $ty<T> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($ty))
                    .field("qsize", &self.core().map(|c| c.rx.len()))
                    .finish()
            }
        }

        /// Serializes a ticket for this handle, valid once and only in this process (so the
        /// type meets the process backend's bounds; see [`crate::api::Flavor`]).
        impl<T: Send + 'static> Serialize for $ty<T> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                super::passage::serialize(self.core.clone(), s)
            }
        }

        impl<'de, T: Send + 'static> Deserialize<'de> for $ty<T> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Ok(Self {
                    core: super::passage::deserialize(d, stringify!($ty))?,
                })
            }
        }
    };
}

/// A multi-producer, multi-consumer queue between threads: Python's
/// `multiprocessing.dummy.Queue`, with the methods and errors of [`crate::Queue`]. Items
/// are moved, not serialized. Clone the handle to share it.
///
/// ```
/// use mp_core::dummy::Queue;
/// use std::time::Duration;
/// let q = Queue::<String>::bounded(2).unwrap();
/// q.put("a".into()).unwrap();
/// q.put("b".into()).unwrap();
/// assert!(q.full());
/// assert!(q.put_timeout("c".into(), Duration::from_millis(10)).is_err());
/// assert_eq!(q.get().unwrap(), "a");
/// assert_eq!(q.qsize(), 1);
/// ```
pub struct Queue<T> {
    core: Option<Arc<Core<T>>>,
}

impl<T> Queue<T> {
    /// An unbounded queue. (Never fails; the `Result` matches [`crate::Queue::new`].)
    pub fn new() -> std::io::Result<Self> {
        Self::bounded(0)
    }

    /// A queue holding at most `maxsize` items (0: unbounded).
    pub fn bounded(maxsize: u32) -> std::io::Result<Self> {
        Ok(Self {
            core: Some(Core::new(maxsize)),
        })
    }
}

queue_methods!(Queue, false);

/// The simplest queue, unbounded: Python's `SimpleQueue`, as [`crate::SimpleQueue`].
///
/// ```
/// let q = mp_core::dummy::SimpleQueue::<u32>::new().unwrap();
/// assert!(q.empty());
/// q.put(7).unwrap();
/// assert_eq!(q.get().unwrap(), 7);
/// ```
pub struct SimpleQueue<T> {
    core: Option<Arc<Core<T>>>,
}

impl<T> SimpleQueue<T> {
    /// A new, empty queue.
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            core: Some(Core::new(0)),
        })
    }
}

queue_methods!(SimpleQueue, false);

/// A queue whose consumers mark items done: Python's `multiprocessing.dummy.JoinableQueue`,
/// as [`crate::JoinableQueue`].
///
/// ```
/// use std::time::Duration;
/// let q = mp_core::dummy::JoinableQueue::<u32>::new().unwrap();
/// q.put(1).unwrap();
/// assert!(q.join_timeout(Duration::ZERO).is_err());
/// q.get().unwrap();
/// q.task_done().unwrap();
/// q.join().unwrap();
/// assert!(q.task_done().is_err());
/// ```
pub struct JoinableQueue<T> {
    core: Option<Arc<Core<T>>>,
}

impl<T> JoinableQueue<T> {
    /// An unbounded joinable queue.
    pub fn new() -> std::io::Result<Self> {
        Self::bounded(0)
    }

    /// A joinable queue holding at most `maxsize` items (0: unbounded).
    pub fn bounded(maxsize: u32) -> std::io::Result<Self> {
        Ok(Self {
            core: Some(Core::new(maxsize)),
        })
    }

    /// Marks one item taken from the queue as done; more calls than items put is
    /// [`QueueError::TaskDoneTooManyTimes`].
    pub fn task_done(&self) -> Result<(), QueueError> {
        self.core().ok_or(QueueError::Closed)?.task_done()
    }

    /// Waits until every item put has been marked done.
    pub fn join(&self) -> Result<(), QueueError> {
        self.core().ok_or(QueueError::Closed)?.join(None);
        Ok(())
    }

    /// Like [`join`](Self::join), giving up after `timeout` with [`QueueError::Timeout`].
    pub fn join_timeout(&self, timeout: Duration) -> Result<(), QueueError> {
        match self.core().ok_or(QueueError::Closed)?.join(Some(timeout)) {
            true => Ok(()),
            false => Err(QueueError::Timeout),
        }
    }

    /// Items put and not yet marked done.
    pub fn unfinished_tasks(&self) -> u32 {
        self.core().map_or(0, |c| *c.unfinished())
    }
}

queue_methods!(JoinableQueue, true);
