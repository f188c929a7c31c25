//! `Condition`: Python's `multiprocessing.Condition`, a process-shared condition variable.
//!
//! Differences from Python:
//! - as in Python it sits on an [`RLock`](crate::RLock) unless given a lock
//!   ([`Condition::with_lock`] takes a [`Lock`](crate::Lock) or an `RLock`); waiting releases
//!   every level the waiting thread holds and takes them all back, as Python's does;
//! - waiting takes the lock's guard by value and gives it back (`cond.wait(guard) -> guard`),
//!   so it cannot be called without holding the lock; [`Condition::wait_timeout`] returns the
//!   guard with a `timed_out` flag (Python returns "notified", the opposite);
//! - `notify(n)` wakes exactly `min(n, waiting)` waiters, counted in shared memory (COND-03),
//!   and may be called with or without the lock held;
//! - as in Python, `notify` returns once the woken waiters have taken their notifications, so
//!   a thread that notifies and then waits does not consume its own notification (it gives up
//!   on that after 100 ms, in case a waiting process died); which of the waiters is woken is
//!   not specified (Python's process Condition makes no order promise either);
//! - if the lock's holder dies while a waiter is asleep, the waiter still gets the lock back
//!   when it wakes; the "owner died" indication is not passed on by `wait` (use
//!   [`AnyLock::acquire`] directly where it matters).

use super::model::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::futex;
use super::{AnyLock, AnyLockError, AnyLockGuard, SyncError};
use crate::process::my_pid;
use crate::shared::Segment;

#[repr(C)]
struct RawCondition {
    /// Bumped by every notification that hands out tokens; the futex word.
    seq: AtomicU32,
    /// Bumped by every waiter that takes a notification; a notifier waits on it until its
    /// notifications are taken.
    taken: AtomicU32,
    /// High 32 bits: waiters not yet notified; low 32 bits: notifications not yet taken.
    counts: AtomicU64,
}

const ONE_WAITER: u64 = 1 << 32;

/// How long `notify` waits at most for the woken waiters to take their notifications.
const NOTIFY_ACK_LIMIT: Duration = Duration::from_millis(100);

fn split(c: u64) -> (u32, u32) {
    ((c >> 32) as u32, c as u32)
}

/// A condition variable shared between processes: Python's `multiprocessing.Condition`.
///
/// ```
/// use mp_core::{Condition, Semaphore};
///
/// let cond = Condition::new().unwrap();
/// let state = Semaphore::new(0).unwrap(); // a shared counter for the example
/// let (c2, s2) = (cond.clone(), state.clone());
/// let t = std::thread::spawn(move || {
///     let _g = c2.acquire().unwrap();
///     s2.release().unwrap();
///     c2.notify_all();
/// });
/// let guard = cond.acquire().unwrap();
/// let guard = cond.wait_for(guard, || state.get_value() == 1);
/// drop(guard);
/// t.join().unwrap();
/// ```
#[derive(Clone, Serialize, Deserialize)]
pub struct Condition {
    lock: AnyLock,
    segment: Arc<Segment>,
}

impl Condition {
    /// A condition with a new recursive lock of its own (Python's `Condition()`).
    ///
    /// ```
    /// let cond = mp_core::Condition::new().unwrap();
    /// let outer = cond.acquire().unwrap();
    /// let inner = cond.acquire().unwrap(); // an RLock, as in Python
    /// # drop((inner, outer));
    /// ```
    pub fn new() -> Result<Self, SyncError> {
        Self::with_lock(AnyLock::new()?)
    }

    /// A condition over an existing lock, a [`Lock`](crate::Lock) or an
    /// [`RLock`](crate::RLock) (Python's `Condition(lock)`).
    ///
    /// ```
    /// let lock = mp_core::Lock::new().unwrap();
    /// let cond = mp_core::Condition::with_lock(lock.clone()).unwrap();
    /// let _g = cond.acquire().unwrap();
    /// assert!(lock.is_locked());
    /// ```
    pub fn with_lock(lock: impl Into<AnyLock>) -> Result<Self, SyncError> {
        Ok(Self {
            lock: lock.into(),
            segment: Arc::new(Segment::create(std::mem::size_of::<RawCondition>())?),
        })
    }

    fn raw(&self) -> &RawCondition {
        // SAFETY: the segment is at least one RawCondition long and page-aligned; atomics.
        unsafe { self.segment.at(0) }
    }

    /// The lock this condition is associated with.
    ///
    /// ```
    /// let cond = mp_core::Condition::new().unwrap();
    /// assert!(!cond.lock().is_locked());
    /// ```
    pub fn lock(&self) -> &AnyLock {
        &self.lock
    }

    /// Acquires the associated lock (see [`AnyLock::acquire`]).
    ///
    /// ```
    /// let cond = mp_core::Condition::new().unwrap();
    /// let _guard = cond.acquire().unwrap();
    /// ```
    pub fn acquire(&self) -> Result<AnyLockGuard<'_>, AnyLockError<'_>> {
        self.lock.acquire()
    }

    /// Acquires the associated lock within `timeout` (see [`AnyLock::acquire_timeout`]).
    ///
    /// ```
    /// let cond = mp_core::Condition::new().unwrap();
    /// let _guard = cond.acquire_timeout(std::time::Duration::from_secs(1)).unwrap();
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<AnyLockGuard<'_>, AnyLockError<'_>> {
        self.lock.acquire_timeout(timeout)
    }

    /// Takes a notification if one is outstanding.
    fn take_token(&self) -> bool {
        let counts = &self.raw().counts;
        let mut c = counts.load(Ordering::SeqCst);
        loop {
            if split(c).1 == 0 {
                return false;
            }
            match counts.compare_exchange_weak(c, c - 1, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => {
                    self.ack();
                    return true;
                }
                Err(now) => c = now,
            }
        }
    }

    /// Tells a notifier that a notification was taken.
    fn ack(&self) {
        let raw = self.raw();
        raw.taken.fetch_add(1, Ordering::SeqCst);
        futex::wake(&raw.taken, 1);
    }

    /// Stops waiting at the deadline: takes a notification if one is outstanding (and then
    /// counts as notified), or else removes itself from the waiters. Returns "notified".
    fn leave(&self) -> bool {
        let counts = &self.raw().counts;
        let mut c = counts.load(Ordering::SeqCst);
        loop {
            let (waiting, tokens) = split(c);
            let (new, notified) = if tokens > 0 {
                (c - 1, true)
            } else {
                debug_assert!(waiting > 0);
                (c - ONE_WAITER, false)
            };
            match counts.compare_exchange_weak(c, new, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => {
                    if notified {
                        self.ack();
                    }
                    return notified;
                }
                Err(now) => c = now,
            }
        }
    }

    /// Releases the lock (every level this thread holds, for an `RLock`), waits for a
    /// notification or the deadline, re-acquires the lock (as many levels).
    fn wait_until<'a>(
        &'a self,
        guard: AnyLockGuard<'a>,
        deadline: Option<Instant>,
    ) -> (AnyLockGuard<'a>, bool) {
        let held = match &self.lock {
            AnyLock::Plain(l) => {
                let raw = l.raw_lock();
                raw.is_locked() && raw.owner() == my_pid()
            }
            AnyLock::Recursive(r) => r.count() > 0,
        };
        assert!(
            held,
            "Condition::wait needs the guard of the condition's own lock"
        );
        let raw = self.raw();
        raw.counts.fetch_add(ONE_WAITER, Ordering::SeqCst);
        guard.leak();
        let levels = match &self.lock {
            AnyLock::Plain(l) => {
                let _ = l.release();
                1
            }
            AnyLock::Recursive(r) => r.release_all().unwrap_or(1),
        };
        let notified = loop {
            let seen = raw.seq.load(Ordering::SeqCst);
            if self.take_token() {
                break true;
            }
            if !futex::wait_until(&raw.seq, seen, deadline) {
                break self.leave();
            }
        };
        let guard = match &self.lock {
            AnyLock::Plain(_) => self.lock.acquire_anyway(),
            AnyLock::Recursive(r) => AnyLockGuard::Recursive(r.acquire_restore(levels)),
        };
        (guard, !notified)
    }

    /// Releases the lock, sleeps until notified, and re-acquires the lock before returning
    /// its guard. Spurious returns do not happen, but another thread may have changed the
    /// state in between: check it in a loop, or use [`wait_for`](Self::wait_for).
    ///
    /// # Panics
    /// If `guard` is not a guard of this condition's lock held in this process.
    ///
    /// ```
    /// let cond = mp_core::Condition::new().unwrap();
    /// let c2 = cond.clone();
    /// let guard = cond.acquire().unwrap();
    /// let t = std::thread::spawn(move || {
    ///     let _g = c2.acquire().unwrap(); // gets the lock once the waiter sleeps
    ///     c2.notify(1);
    /// });
    /// let guard = cond.wait(guard);
    /// drop(guard);
    /// t.join().unwrap();
    /// ```
    pub fn wait<'a>(&'a self, guard: AnyLockGuard<'a>) -> AnyLockGuard<'a> {
        self.wait_until(guard, None).0
    }

    /// Like [`wait`](Self::wait), for at most `timeout`; the flag is true when it timed out
    /// without a notification.
    ///
    /// ```
    /// let cond = mp_core::Condition::new().unwrap();
    /// let guard = cond.acquire().unwrap();
    /// let (guard, timed_out) = cond.wait_timeout(guard, std::time::Duration::from_millis(10));
    /// assert!(timed_out);
    /// # drop(guard);
    /// ```
    pub fn wait_timeout<'a>(
        &'a self,
        guard: AnyLockGuard<'a>,
        timeout: Duration,
    ) -> (AnyLockGuard<'a>, bool) {
        self.wait_until(guard, futex::deadline(Some(timeout)))
    }

    /// Waits until `pred` holds, checking it first and after every wake-up, with the lock
    /// held (Python's `wait_for(pred)`).
    ///
    /// ```
    /// let cond = mp_core::Condition::new().unwrap();
    /// let guard = cond.wait_for(cond.acquire().unwrap(), || true); // already true: no wait
    /// # drop(guard);
    /// ```
    pub fn wait_for<'a>(
        &'a self,
        mut guard: AnyLockGuard<'a>,
        mut pred: impl FnMut() -> bool,
    ) -> AnyLockGuard<'a> {
        while !pred() {
            guard = self.wait(guard);
        }
        guard
    }

    /// Like [`wait_for`](Self::wait_for), for at most `timeout` in all; returns the guard and
    /// the predicate's last value (false: it did not come true in time).
    ///
    /// ```
    /// let cond = mp_core::Condition::new().unwrap();
    /// let guard = cond.acquire().unwrap();
    /// let (guard, ok) = cond.wait_for_timeout(guard, std::time::Duration::from_millis(10), || false);
    /// assert!(!ok);
    /// # drop(guard);
    /// ```
    pub fn wait_for_timeout<'a>(
        &'a self,
        mut guard: AnyLockGuard<'a>,
        timeout: Duration,
        mut pred: impl FnMut() -> bool,
    ) -> (AnyLockGuard<'a>, bool) {
        let deadline = mp_ipc::deadline::Deadline::after(timeout);
        loop {
            if pred() {
                return (guard, true);
            }
            if deadline.expired() {
                return (guard, false);
            }
            guard = self.wait_until(guard, deadline.instant()).0;
        }
    }

    /// Wakes `n` of the threads waiting on this condition, in any process (fewer if fewer
    /// wait; with nobody waiting it does nothing). Returns how many were woken.
    ///
    /// ```
    /// let cond = mp_core::Condition::new().unwrap();
    /// assert_eq!(cond.notify(1), 0); // nobody waits
    /// ```
    pub fn notify(&self, n: u32) -> u32 {
        let raw = self.raw();
        let mut c = raw.counts.load(Ordering::SeqCst);
        let woken = loop {
            let (waiting, tokens) = split(c);
            let k = n.min(waiting);
            if k == 0 {
                return 0;
            }
            let new = (u64::from(waiting - k) << 32) | u64::from(tokens + k);
            match raw
                .counts
                .compare_exchange_weak(c, new, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => break k,
                Err(now) => c = now,
            }
        };
        raw.seq.fetch_add(1, Ordering::SeqCst);
        futex::wake(&raw.seq, woken);
        // Like Python, wait until the woken waiters have taken their notifications: a thread
        // that notifies and then waits itself (or a new waiter, while the lock is held) must
        // not take them. Bounded, for a waiter process that died.
        let limit = Instant::now() + NOTIFY_ACK_LIMIT;
        loop {
            let seen = raw.taken.load(Ordering::SeqCst);
            if split(raw.counts.load(Ordering::SeqCst)).1 == 0 {
                break;
            }
            if !futex::wait_until(&raw.taken, seen, Some(limit)) {
                break;
            }
        }
        woken
    }

    /// Wakes every thread waiting on this condition. Returns how many were woken.
    ///
    /// ```
    /// let cond = mp_core::Condition::new().unwrap();
    /// assert_eq!(cond.notify_all(), 0);
    /// ```
    pub fn notify_all(&self) -> u32 {
        self.notify(u32::MAX)
    }

    /// How many threads wait and have not been notified yet.
    ///
    /// ```
    /// assert_eq!(mp_core::Condition::new().unwrap().waiting(), 0);
    /// ```
    pub fn waiting(&self) -> u32 {
        split(self.raw().counts.load(Ordering::SeqCst)).0
    }
}

impl std::fmt::Debug for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (waiting, pending) = split(self.raw().counts.load(Ordering::SeqCst));
        f.debug_struct("Condition")
            .field("lock", &self.lock)
            .field("waiting", &waiting)
            .field("notified_not_yet_woken", &pending)
            .finish()
    }
}
