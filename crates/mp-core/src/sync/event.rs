//! `Event`: Python's `multiprocessing.Event`, a process-shared flag that can be waited for.
//!
//! Differences from Python: [`Event::wait`] returns nothing (it can only end with the flag
//! set) and [`Event::wait_timeout`] takes a `Duration` and returns whether the flag was set.
//! Python builds its Event from a Condition and a Lock; this one is a single futex word, so
//! `set`, `clear` and `is_set` never block.

use super::model::{seqcst_point, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::futex;
use super::SyncError;
use crate::shared::Segment;

#[repr(C)]
pub(super) struct RawEvent {
    /// 0 clear, 1 set; the futex word.
    flag: AtomicU32,
    /// Threads sleeping (or about to) on `flag`, so that `set` skips the wake-up call when
    /// nobody waits.
    waiters: AtomicU32,
}

/// The protocol, on the shared words (so that the loom models run it on heap words).
impl RawEvent {
    /// A clear event on the heap, for the loom models.
    #[cfg(loom)]
    pub(super) fn model() -> Self {
        Self {
            flag: AtomicU32::new(0),
            waiters: AtomicU32::new(0),
        }
    }

    pub(super) fn is_set(&self) -> bool {
        self.flag.load(Ordering::Acquire) != 0
    }

    pub(super) fn set(&self) {
        let was = self.flag.swap(1, Ordering::SeqCst);
        seqcst_point();
        if was == 0 && self.waiters.load(Ordering::SeqCst) > 0 {
            futex::wake(&self.flag, u32::MAX);
        }
    }

    pub(super) fn clear(&self) {
        self.flag.store(0, Ordering::SeqCst);
    }

    pub(super) fn wait_until(&self, deadline: Option<Instant>) -> bool {
        loop {
            if self.is_set() {
                return true;
            }
            self.waiters.fetch_add(1, Ordering::SeqCst);
            let in_time = futex::wait_until(&self.flag, 0, deadline);
            self.waiters.fetch_sub(1, Ordering::SeqCst);
            if !in_time {
                return self.is_set();
            }
        }
    }
}

/// A flag shared between processes: Python's `multiprocessing.Event`.
///
/// ```
/// use mp_core::Event;
/// use std::time::Duration;
///
/// let ready = Event::new().unwrap();
/// assert!(!ready.wait_timeout(Duration::ZERO));
/// let setter = ready.clone();
/// std::thread::spawn(move || setter.set());
/// ready.wait();
/// assert!(ready.is_set());
/// ready.clear();
/// assert!(!ready.is_set());
/// ```
#[derive(Clone, Serialize, Deserialize)]
pub struct Event {
    segment: Arc<Segment>,
}

impl Event {
    /// A new event, not set.
    ///
    /// ```
    /// assert!(!mp_core::Event::new().unwrap().is_set());
    /// ```
    pub fn new() -> Result<Self, SyncError> {
        Ok(Self {
            segment: Arc::new(Segment::create(std::mem::size_of::<RawEvent>())?),
        })
    }

    fn raw(&self) -> &RawEvent {
        // SAFETY: the segment is at least one RawEvent long and page-aligned; all atomics.
        unsafe { self.segment.at(0) }
    }

    /// Whether the flag is set.
    ///
    /// ```
    /// let e = mp_core::Event::new().unwrap();
    /// e.set();
    /// assert!(e.is_set());
    /// ```
    pub fn is_set(&self) -> bool {
        self.raw().is_set()
    }

    /// Sets the flag and wakes every waiter, in every process.
    ///
    /// ```
    /// let e = mp_core::Event::new().unwrap();
    /// e.set();
    /// e.set(); // harmless
    /// assert!(e.is_set());
    /// ```
    pub fn set(&self) {
        self.raw().set()
    }

    /// Clears the flag.
    ///
    /// ```
    /// let e = mp_core::Event::new().unwrap();
    /// e.set();
    /// e.clear();
    /// assert!(!e.is_set());
    /// ```
    pub fn clear(&self) {
        self.raw().clear()
    }

    fn wait_until(&self, deadline: Option<Instant>) -> bool {
        self.raw().wait_until(deadline)
    }

    /// Blocks until the flag is set (at once if it is).
    ///
    /// ```
    /// let e = mp_core::Event::new().unwrap();
    /// e.set();
    /// e.wait();
    /// ```
    pub fn wait(&self) {
        self.wait_until(None);
    }

    /// Blocks until the flag is set or `timeout` has passed; returns whether it is set
    /// (Python's `wait(timeout)`).
    ///
    /// ```
    /// let e = mp_core::Event::new().unwrap();
    /// assert!(!e.wait_timeout(std::time::Duration::from_millis(10)));
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.wait_until(futex::deadline(Some(timeout)))
    }
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Event")
            .field("set", &self.is_set())
            .finish()
    }
}
