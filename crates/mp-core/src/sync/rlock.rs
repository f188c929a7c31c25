//! `RLock`: Python's `multiprocessing.RLock`, a process-shared recursive lock owned by one
//! thread of one process, which tells the next owner when its holder process died.
//!
//! Differences from Python: acquisition returns an RAII [`RLockGuard`] (one per level of
//! recursion); releasing without owning it is [`SyncError::NotOwner`] and releasing an unheld
//! one is [`SyncError::ReleasedTooManyTimes`] (Python raises `AssertionError` for both); when
//! the holding process dies, the next acquirer gets [`RLockError::OwnerDied`] instead of
//! waiting for ever. A thread that ends while holding the lock, in a process that lives on, is
//! not detected (as in Python).

use super::model::{AtomicU32, AtomicU64, Ordering};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::futex;
use super::lock::Acquired;
use super::{RawLock, SyncError};
use crate::process::my_pid;
use crate::shared::Segment;

/// A number for the calling thread, unique within its process.
pub(crate) fn my_thread_id() -> u32 {
    // A process-local counter, never shared: the real atomic even under loom.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    thread_local! {
        static ID: u32 = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    ID.with(|id| *id)
}

/// `(pid, thread)` of the calling thread as one word, so that it is read in one load.
pub(crate) fn me() -> u64 {
    (u64::from(my_pid()) << 32) | u64::from(my_thread_id())
}

#[repr(C)]
struct RawRLock {
    lock: RawLock,
    /// `me()` of the holder, 0 while free. Only the holder writes its own id here.
    owner: AtomicU64,
    /// Recursion depth; touched only by the holder.
    count: AtomicU32,
}

/// A recursive lock shared between processes: Python's `multiprocessing.RLock`.
///
/// The thread that holds it may acquire it again; it is free once every acquisition has been
/// released. Cloning, or passing it to a child, gives another handle on the same lock.
///
/// ```
/// let rlock = mp_core::RLock::new().unwrap();
/// let outer = rlock.acquire().unwrap();
/// let inner = rlock.acquire().unwrap(); // same thread: no deadlock
/// assert_eq!(rlock.count(), 2);
/// drop(inner);
/// assert!(rlock.is_locked());
/// drop(outer);
/// assert!(!rlock.is_locked());
/// assert!(rlock.release().is_err()); // released too many times
/// ```
#[derive(Clone, Serialize, Deserialize)]
pub struct RLock {
    segment: Arc<Segment>,
}

/// One level of ownership of an [`RLock`]; releases that level when dropped.
///
/// Not `Send`: an `RLock` is released by the thread that holds it.
///
/// ```
/// let rlock = mp_core::RLock::new().unwrap();
/// let guard = rlock.acquire().unwrap();
/// assert_eq!(rlock.count(), 1);
/// drop(guard);
/// assert_eq!(rlock.count(), 0);
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct RLockGuard<'a> {
    rlock: &'a RLock,
    _not_send: PhantomData<*const ()>,
}

/// Why an [`RLock`] acquisition did not simply succeed.
///
/// ```
/// use mp_core::{RLock, RLockError};
/// let rlock = RLock::new().unwrap();
/// let held = rlock.clone();
/// let t = std::thread::spawn(move || {
///     let _g = held.acquire().unwrap();
///     std::thread::sleep(std::time::Duration::from_millis(200));
/// });
/// std::thread::sleep(std::time::Duration::from_millis(50));
/// assert!(matches!(rlock.try_acquire(), Err(RLockError::WouldBlock)));
/// t.join().unwrap();
/// ```
#[derive(thiserror::Error)]
pub enum RLockError<'a> {
    /// Not acquired within the timeout.
    #[error("timed out waiting for the lock")]
    Timeout,
    /// Held by another thread or process (`try_acquire`).
    #[error("the lock is held by another thread or process")]
    WouldBlock,
    /// Acquired, but the previous holder process died holding it; the guard inside holds it.
    #[error("acquired a lock whose previous holder died while holding it")]
    OwnerDied(RLockGuard<'a>),
}

impl std::fmt::Debug for RLockError<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Timeout => f.write_str("Timeout"),
            Self::WouldBlock => f.write_str("WouldBlock"),
            Self::OwnerDied(_) => f.write_str("OwnerDied(..)"),
        }
    }
}

impl<'a> RLockError<'a> {
    /// The guard, when the lock was acquired after all (its owner had died).
    ///
    /// ```
    /// let e: mp_core::RLockError<'_> = mp_core::RLockError::Timeout;
    /// assert!(e.into_guard().is_none());
    /// ```
    pub fn into_guard(self) -> Option<RLockGuard<'a>> {
        match self {
            Self::OwnerDied(g) => Some(g),
            _ => None,
        }
    }
}

impl RLock {
    /// A new, unlocked recursive lock.
    ///
    /// ```
    /// assert!(!mp_core::RLock::new().unwrap().is_locked());
    /// ```
    pub fn new() -> Result<Self, SyncError> {
        Ok(Self {
            segment: Arc::new(Segment::create(std::mem::size_of::<RawRLock>())?),
        })
    }

    fn raw(&self) -> &RawRLock {
        // SAFETY: the segment is at least one RawRLock long and page-aligned; all atomics.
        unsafe { self.segment.at(0) }
    }

    fn guard(&self) -> RLockGuard<'_> {
        RLockGuard {
            rlock: self,
            _not_send: PhantomData,
        }
    }

    fn acquire_until(&self, deadline: Option<Instant>) -> Result<RLockGuard<'_>, RLockError<'_>> {
        let raw = self.raw();
        let me = me();
        if raw.owner.load(Ordering::Acquire) == me {
            raw.count.fetch_add(1, Ordering::Relaxed);
            return Ok(self.guard());
        }
        let how = raw.lock.lock(deadline);
        if how == Acquired::TimedOut {
            return Err(RLockError::Timeout);
        }
        raw.owner.store(me, Ordering::Release);
        raw.count.store(1, Ordering::Relaxed);
        match how {
            Acquired::OwnerDied => Err(RLockError::OwnerDied(self.guard())),
            _ => Ok(self.guard()),
        }
    }

    /// Blocks until this thread holds the lock (at once if it already does).
    ///
    /// ```
    /// let rlock = mp_core::RLock::new().unwrap();
    /// let _a = rlock.acquire().unwrap();
    /// let _b = rlock.acquire().unwrap();
    /// ```
    pub fn acquire(&self) -> Result<RLockGuard<'_>, RLockError<'_>> {
        self.acquire_until(None)
    }

    /// Like [`acquire`](Self::acquire), failing with [`RLockError::Timeout`] after `timeout`.
    ///
    /// ```
    /// let rlock = mp_core::RLock::new().unwrap();
    /// let _g = rlock.acquire_timeout(std::time::Duration::from_millis(10)).unwrap();
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<RLockGuard<'_>, RLockError<'_>> {
        self.acquire_until(futex::deadline(Some(timeout)))
    }

    /// Acquires only if that needs no waiting ([`RLockError::WouldBlock`] otherwise).
    ///
    /// ```
    /// let rlock = mp_core::RLock::new().unwrap();
    /// let _a = rlock.try_acquire().unwrap();
    /// let _b = rlock.try_acquire().unwrap(); // the owner may always re-enter
    /// ```
    pub fn try_acquire(&self) -> Result<RLockGuard<'_>, RLockError<'_>> {
        match self.acquire_until(Some(Instant::now())) {
            Err(RLockError::Timeout) => Err(RLockError::WouldBlock),
            other => other,
        }
    }

    /// Releases one level without a guard (Python's `release()`, pairing with
    /// [`RLockGuard::leak`]). Only the owning thread may release:
    /// [`SyncError::NotOwner`] otherwise, [`SyncError::ReleasedTooManyTimes`] when unheld.
    ///
    /// ```
    /// let rlock = mp_core::RLock::new().unwrap();
    /// rlock.acquire().unwrap().leak();
    /// rlock.release().unwrap();
    /// assert!(matches!(rlock.release(), Err(mp_core::SyncError::ReleasedTooManyTimes)));
    /// ```
    pub fn release(&self) -> Result<(), SyncError> {
        let raw = self.raw();
        if raw.owner.load(Ordering::Acquire) != me() {
            return Err(if raw.lock.is_locked() {
                SyncError::NotOwner
            } else {
                SyncError::ReleasedTooManyTimes
            });
        }
        if raw.count.fetch_sub(1, Ordering::Relaxed) == 1 {
            raw.owner.store(0, Ordering::Release);
            raw.lock.unlock()?;
        }
        Ok(())
    }

    /// Releases every level the calling thread holds, for a condition wait; returns how many
    /// (to give to [`acquire_restore`](Self::acquire_restore)). Python's `_release_save`.
    pub(crate) fn release_all(&self) -> Result<u32, SyncError> {
        let raw = self.raw();
        if raw.owner.load(Ordering::Acquire) != me() {
            return Err(SyncError::NotOwner);
        }
        let levels = raw.count.swap(0, Ordering::Relaxed);
        raw.owner.store(0, Ordering::Release);
        raw.lock.unlock()?;
        Ok(levels)
    }

    /// Acquires the lock again with `levels` levels, after [`release_all`](Self::release_all);
    /// the guard returned stands for one of them (the caller's others were leaked). A dead
    /// previous holder is ignored (the waiter did not hold the lock meanwhile).
    pub(crate) fn acquire_restore(&self, levels: u32) -> RLockGuard<'_> {
        let raw = self.raw();
        let _ = raw.lock.lock(None);
        raw.owner.store(me(), Ordering::Release);
        raw.count.store(levels.max(1), Ordering::Relaxed);
        self.guard()
    }

    /// Whether some thread of some process holds the lock.
    ///
    /// ```
    /// let rlock = mp_core::RLock::new().unwrap();
    /// let g = rlock.acquire().unwrap();
    /// assert!(rlock.is_locked());
    /// # drop(g);
    /// ```
    pub fn is_locked(&self) -> bool {
        self.raw().lock.is_locked()
    }

    /// How many times the calling thread holds the lock (0 if it does not hold it).
    ///
    /// ```
    /// let rlock = mp_core::RLock::new().unwrap();
    /// assert_eq!(rlock.count(), 0);
    /// ```
    pub fn count(&self) -> u32 {
        let raw = self.raw();
        if raw.owner.load(Ordering::Acquire) == me() {
            raw.count.load(Ordering::Relaxed)
        } else {
            0
        }
    }
}

impl RLockGuard<'_> {
    /// Keeps this level held after the guard is gone, for an [`RLock::release`] later by the
    /// same thread.
    ///
    /// ```
    /// let rlock = mp_core::RLock::new().unwrap();
    /// rlock.acquire().unwrap().leak();
    /// assert!(rlock.is_locked());
    /// rlock.release().unwrap();
    /// ```
    pub fn leak(self) {
        std::mem::forget(self);
    }
}

impl Drop for RLockGuard<'_> {
    fn drop(&mut self) {
        let _ = self.rlock.release();
    }
}

impl std::fmt::Debug for RLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let raw = self.raw();
        let owner = raw.owner.load(Ordering::Acquire);
        let (pid, tid) = ((owner >> 32) as u32, owner as u32);
        let mut d = f.debug_struct("RLock");
        if !self.is_locked() {
            d.field("held_by", &"nobody");
        } else if owner == me() {
            d.field("held_by", &format!("this thread (pid {pid}, thread {tid})"))
                .field("count", &raw.count.load(Ordering::Relaxed));
        } else if owner == 0 {
            d.field("held_by", &"unknown").field("count", &"nonzero");
        } else if pid == my_pid() {
            d.field(
                "held_by",
                &format!("another thread (pid {pid}, thread {tid})"),
            )
            .field("count", &"nonzero");
        } else {
            d.field("held_by", &format!("process {pid} (thread {tid})"))
                .field("count", &"nonzero");
        }
        d.finish()
    }
}

impl std::fmt::Debug for RLockGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RLockGuard")
            .field("rlock", self.rlock)
            .finish()
    }
}
