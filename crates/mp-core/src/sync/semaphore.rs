//! `Semaphore` and `BoundedSemaphore`: Python's `multiprocessing.Semaphore` and
//! `multiprocessing.BoundedSemaphore`, process-shared counters.
//!
//! Differences from Python: acquisition returns an RAII [`SemaphoreGuard`] that gives the unit
//! back when dropped ([`SemaphoreGuard::forget`] keeps it taken, for a [`Semaphore::release`]
//! elsewhere); timeouts are `Duration`s and a non-blocking attempt is its own method
//! ([`Semaphore::try_acquire`]); [`Semaphore::get_value`] works on every platform; a
//! [`BoundedSemaphore`] refuses over-release with [`SyncError::ReleasedTooManyTimes`] on every
//! platform (Python cannot check it on macOS). As in Python, a semaphore has no owner: a unit
//! taken by a process that dies is not given back.

use super::model::{seqcst_point, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::futex;
use super::SyncError;
use crate::shared::Segment;

#[repr(C)]
pub(super) struct RawSemaphore {
    /// The count; also the futex word waiters sleep on while it is 0.
    value: AtomicU32,
    /// Threads sleeping (or about to) on `value`, so that `release` skips the wake-up call
    /// when nobody waits.
    waiters: AtomicU32,
    /// The largest value `release` may reach (`u32::MAX`: unbounded).
    max: AtomicU32,
}

/// The protocol, on the shared words (so that the loom models run it on heap words).
impl RawSemaphore {
    /// A semaphore of `value` (no maximum) on the heap, for the loom models.
    #[cfg(loom)]
    pub(super) fn model(value: u32) -> Self {
        Self {
            value: AtomicU32::new(value),
            waiters: AtomicU32::new(0),
            max: AtomicU32::new(u32::MAX),
        }
    }

    pub(super) fn try_take(&self) -> bool {
        let value = &self.value;
        let mut v = value.load(Ordering::Relaxed);
        while v > 0 {
            match value.compare_exchange_weak(v, v - 1, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => v = now,
            }
        }
        false
    }

    pub(super) fn take_until(&self, deadline: Option<Instant>) -> bool {
        if self.try_take() {
            return true;
        }
        let raw = self;
        loop {
            raw.waiters.fetch_add(1, Ordering::SeqCst);
            let in_time = futex::wait_until(&raw.value, 0, deadline);
            raw.waiters.fetch_sub(1, Ordering::SeqCst);
            if self.try_take() {
                return true;
            }
            if !in_time {
                return false;
            }
        }
    }

    pub(super) fn release(&self) -> Result<(), SyncError> {
        let raw = self;
        let max = raw.max.load(Ordering::Relaxed);
        let mut v = raw.value.load(Ordering::Relaxed);
        loop {
            if v >= max {
                return Err(SyncError::ReleasedTooManyTimes);
            }
            match raw
                .value
                .compare_exchange_weak(v, v + 1, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => v = now,
            }
        }
        seqcst_point();
        if raw.waiters.load(Ordering::SeqCst) > 0 {
            futex::wake(&raw.value, 1);
        }
        Ok(())
    }
}

/// A counter shared between processes: Python's `multiprocessing.Semaphore`.
///
/// [`acquire`](Self::acquire) waits until the value is positive and decrements it; the
/// returned guard increments it again when dropped. There is no upper bound (see
/// [`BoundedSemaphore`] for one).
///
/// ```
/// let sem = mp_core::Semaphore::new(2).unwrap();
/// let a = sem.acquire();
/// let b = sem.acquire();
/// assert_eq!(sem.get_value(), 0);
/// assert!(sem.try_acquire().is_none());
/// drop(a);
/// assert_eq!(sem.get_value(), 1);
/// b.forget(); // keep the unit taken
/// sem.release().unwrap();
/// sem.release().unwrap(); // no upper bound
/// assert_eq!(sem.get_value(), 3);
/// ```
#[derive(Clone, Serialize, Deserialize)]
pub struct Semaphore {
    segment: Arc<Segment>,
}

/// One unit taken from a [`Semaphore`] or [`BoundedSemaphore`]; given back when dropped.
///
/// ```
/// let sem = mp_core::Semaphore::new(1).unwrap();
/// {
///     let _unit = sem.acquire();
///     assert_eq!(sem.get_value(), 0);
/// }
/// assert_eq!(sem.get_value(), 1);
/// ```
#[must_use = "the unit is given back as soon as the guard is dropped"]
pub struct SemaphoreGuard<'a> {
    sem: &'a Semaphore,
}

impl Semaphore {
    /// A semaphore with initial `value`.
    ///
    /// ```
    /// assert_eq!(mp_core::Semaphore::new(5).unwrap().get_value(), 5);
    /// ```
    pub fn new(value: u32) -> Result<Self, SyncError> {
        Self::with_max(value, u32::MAX)
    }

    fn with_max(value: u32, max: u32) -> Result<Self, SyncError> {
        let sem = Self {
            segment: Arc::new(Segment::create(std::mem::size_of::<RawSemaphore>())?),
        };
        sem.raw().value.store(value, Ordering::Relaxed);
        sem.raw().max.store(max, Ordering::Relaxed);
        Ok(sem)
    }

    fn raw(&self) -> &RawSemaphore {
        // SAFETY: the segment is at least one RawSemaphore long and page-aligned; all atomics.
        unsafe { self.segment.at(0) }
    }

    fn try_take(&self) -> bool {
        self.raw().try_take()
    }

    fn take_until(&self, deadline: Option<Instant>) -> bool {
        self.raw().take_until(deadline)
    }

    /// Blocks until the value is positive, then takes one unit.
    ///
    /// ```
    /// let sem = mp_core::Semaphore::new(1).unwrap();
    /// let _unit = sem.acquire();
    /// ```
    pub fn acquire(&self) -> SemaphoreGuard<'_> {
        self.take_until(None);
        SemaphoreGuard { sem: self }
    }

    /// Like [`acquire`](Self::acquire), giving up (`None`) after `timeout`.
    ///
    /// ```
    /// let sem = mp_core::Semaphore::new(0).unwrap();
    /// assert!(sem.acquire_timeout(std::time::Duration::from_millis(10)).is_none());
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> Option<SemaphoreGuard<'_>> {
        self.take_until(futex::deadline(Some(timeout)))
            .then(|| SemaphoreGuard { sem: self })
    }

    /// Takes a unit only if one is available now (Python's `acquire(False)`).
    ///
    /// ```
    /// let sem = mp_core::Semaphore::new(0).unwrap();
    /// assert!(sem.try_acquire().is_none());
    /// ```
    pub fn try_acquire(&self) -> Option<SemaphoreGuard<'_>> {
        self.try_take().then(|| SemaphoreGuard { sem: self })
    }

    /// Adds one unit, waking one waiter. Fails with [`SyncError::ReleasedTooManyTimes`] if
    /// the value would pass the bound (a [`BoundedSemaphore`]'s initial value, `u32::MAX`
    /// otherwise).
    ///
    /// ```
    /// let sem = mp_core::Semaphore::new(0).unwrap();
    /// sem.release().unwrap();
    /// assert_eq!(sem.get_value(), 1);
    /// ```
    pub fn release(&self) -> Result<(), SyncError> {
        self.raw().release()
    }

    /// The current value (Python's `get_value()`, available on every platform here).
    ///
    /// ```
    /// assert_eq!(mp_core::Semaphore::new(3).unwrap().get_value(), 3);
    /// ```
    pub fn get_value(&self) -> u32 {
        self.raw().value.load(Ordering::Relaxed)
    }
}

impl SemaphoreGuard<'_> {
    /// Keeps the unit taken after the guard is gone (for a [`Semaphore::release`] later,
    /// possibly by another process).
    ///
    /// ```
    /// let sem = mp_core::Semaphore::new(1).unwrap();
    /// sem.acquire().forget();
    /// assert_eq!(sem.get_value(), 0);
    /// ```
    pub fn forget(self) {
        std::mem::forget(self);
    }
}

impl Drop for SemaphoreGuard<'_> {
    fn drop(&mut self) {
        let _ = self.sem.release();
    }
}

impl std::fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Semaphore");
        d.field("value", &self.get_value());
        let max = self.raw().max.load(Ordering::Relaxed);
        if max != u32::MAX {
            d.field("max", &max);
        }
        d.finish()
    }
}

impl std::fmt::Debug for SemaphoreGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SemaphoreGuard")
            .field("sem", self.sem)
            .finish()
    }
}

/// A semaphore that may not be released above its initial value: Python's
/// `multiprocessing.BoundedSemaphore`. Over-release is [`SyncError::ReleasedTooManyTimes`].
///
/// ```
/// let sem = mp_core::BoundedSemaphore::new(1).unwrap();
/// let unit = sem.acquire();
/// assert_eq!(sem.get_value(), 0);
/// drop(unit);
/// assert!(matches!(sem.release(), Err(mp_core::SyncError::ReleasedTooManyTimes)));
/// ```
#[derive(Clone, Serialize, Deserialize)]
pub struct BoundedSemaphore {
    inner: Semaphore,
}

impl BoundedSemaphore {
    /// A bounded semaphore with initial (and largest) value `value`.
    ///
    /// ```
    /// assert_eq!(mp_core::BoundedSemaphore::new(2).unwrap().get_value(), 2);
    /// ```
    pub fn new(value: u32) -> Result<Self, SyncError> {
        Ok(Self {
            inner: Semaphore::with_max(value, value)?,
        })
    }

    /// See [`Semaphore::acquire`].
    ///
    /// ```
    /// let sem = mp_core::BoundedSemaphore::new(1).unwrap();
    /// let _unit = sem.acquire();
    /// ```
    pub fn acquire(&self) -> SemaphoreGuard<'_> {
        self.inner.acquire()
    }

    /// See [`Semaphore::acquire_timeout`].
    ///
    /// ```
    /// let sem = mp_core::BoundedSemaphore::new(0).unwrap();
    /// assert!(sem.acquire_timeout(std::time::Duration::from_millis(1)).is_none());
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> Option<SemaphoreGuard<'_>> {
        self.inner.acquire_timeout(timeout)
    }

    /// See [`Semaphore::try_acquire`].
    ///
    /// ```
    /// let sem = mp_core::BoundedSemaphore::new(1).unwrap();
    /// assert!(sem.try_acquire().is_some());
    /// ```
    pub fn try_acquire(&self) -> Option<SemaphoreGuard<'_>> {
        self.inner.try_acquire()
    }

    /// See [`Semaphore::release`]; above the initial value it fails with
    /// [`SyncError::ReleasedTooManyTimes`].
    ///
    /// ```
    /// let sem = mp_core::BoundedSemaphore::new(1).unwrap();
    /// sem.acquire().forget();
    /// sem.release().unwrap();
    /// assert!(sem.release().is_err());
    /// ```
    pub fn release(&self) -> Result<(), SyncError> {
        self.inner.release()
    }

    /// See [`Semaphore::get_value`].
    ///
    /// ```
    /// assert_eq!(mp_core::BoundedSemaphore::new(4).unwrap().get_value(), 4);
    /// ```
    pub fn get_value(&self) -> u32 {
        self.inner.get_value()
    }
}

impl std::fmt::Debug for BoundedSemaphore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundedSemaphore")
            .field("value", &self.get_value())
            .field("max", &self.inner.raw().max.load(Ordering::Relaxed))
            .finish()
    }
}
