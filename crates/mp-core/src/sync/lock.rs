//! `Lock`: Python's `multiprocessing.Lock`, a process-shared binary lock that tells the next
//! owner when its holder died.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::futex;
use super::model::{current_tid, my_pid, pid_alive, thread_alive, AtomicU32, Ordering};
use super::SyncError;
use crate::shared::Segment;

const UNLOCKED: u32 = 0;
const LOCKED: u32 = 1;
const CONTENDED: u32 = 2;

/// The lock word and its holder, in shared memory, where another process may have written
/// anything: every value is checked before it is believed (see [`RawLock::lock`]).
#[repr(C)]
pub(crate) struct RawLock {
    state: AtomicU32,
    /// Pid of the holding process, 0 while free (or for an instant after acquisition).
    owner: AtomicU32,
    /// The holding thread, for locks held only inside one call ([`RawLock::lock_strict`]);
    /// 0 otherwise.
    tid: AtomicU32,
}

/// How an acquisition went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Acquired {
    /// The lock was free or released normally.
    Clean,
    /// The previous holder died holding it (or was no holder at all); we hold it now.
    OwnerDied,
    /// Not acquired within the deadline.
    TimedOut,
    /// The lock's words were written by no holder ([`RawLock::lock_strict`] only).
    Corrupt(String),
}

/// How often a waiter asks whether a live owner has the lock's segment mapped at all.
const PARTICIPANT_LOOK: Duration = Duration::from_millis(500);

impl RawLock {
    /// A free lock on the heap, for the loom models.
    #[cfg(loom)]
    pub(crate) fn model() -> Self {
        Self {
            state: AtomicU32::new(UNLOCKED),
            owner: AtomicU32::new(0),
            tid: AtomicU32::new(0),
        }
    }

    pub(crate) fn try_lock(&self) -> bool {
        if self
            .state
            .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            self.owner.store(my_pid(), Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Acquires before `deadline` (`None`: without limit), Python's way: a holder that
    /// died, or an owner word that names no live process at all (damage), is taken over
    /// and reported as [`Acquired::OwnerDied`].
    pub(crate) fn lock(&self, deadline: Option<Instant>) -> Acquired {
        self.acquire(deadline, None)
    }

    /// Acquires before `deadline` a lock that is only ever held inside one call (the
    /// queues' locks), in segment `seg`: an owner word that no holder can have written
    /// (no process, this very thread, a thread of this process that has ended) is
    /// [`Acquired::Corrupt`]; an owner that has died or does not have `seg` mapped is taken
    /// over.
    pub(crate) fn lock_strict(&self, deadline: Option<Instant>, seg: &Segment) -> Acquired {
        self.acquire(deadline, Some(seg))
    }

    fn acquire(&self, deadline: Option<Instant>, strict: Option<&Segment>) -> Acquired {
        let tid = if strict.is_some() { current_tid() } else { 0 };
        if self.try_lock() {
            self.tid.store(tid, Ordering::Relaxed);
            return Acquired::Clean;
        }
        // A holder that died between taking `state` and writing `owner` (or between
        // clearing `owner` and releasing `state`) leaves the lock held by nobody: if it stays
        // so for several check intervals, the waiter takes over.
        let mut ownerless_since: Option<Instant> = None;
        let mut last_participant = Instant::now();
        // Since when this process's own pid is the owner with no thread recorded: only ever
        // an instant for a lock of `lock_strict`.
        let mut threadless_since: Option<Instant> = None;
        loop {
            if self.state.swap(CONTENDED, Ordering::Acquire) == UNLOCKED {
                self.owner.store(my_pid(), Ordering::Relaxed);
                self.tid.store(tid, Ordering::Relaxed);
                return Acquired::Clean;
            }
            let owner = self.owner.load(Ordering::Relaxed);
            if owner == 0 {
                let since = *ownerless_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= 3 * futex::CHECK_INTERVAL && self.take_over(0, tid) {
                    return Acquired::OwnerDied;
                }
            } else {
                ownerless_since = None;
                if !crate::sys::pid_plausible(owner) {
                    if strict.is_some() {
                        return Acquired::Corrupt(format!(
                            "a lock's owner word is {owner:#x}, which names no process"
                        ));
                    }
                    if self.take_over(owner, tid) {
                        return Acquired::OwnerDied;
                    }
                } else if owner == my_pid() {
                    let t = self.tid.load(Ordering::Relaxed);
                    if strict.is_some() && tid != 0 && self.owner.load(Ordering::Acquire) == owner {
                        let bad = if t == 0 {
                            let since = *threadless_since.get_or_insert_with(Instant::now);
                            since.elapsed() >= futex::CHECK_INTERVAL
                        } else {
                            threadless_since = None;
                            t == tid || !thread_alive(t)
                        };
                        if bad {
                            return Acquired::Corrupt(format!(
                                "a lock's owner words name this process and thread {t}, \
                                 which does not hold it"
                            ));
                        }
                    }
                } else if current_tid() != 0 && thread_alive(owner) {
                    // Thread ids and pids share one numbering: a thread of this process is
                    // no other process.
                    if strict.is_some() {
                        return Acquired::Corrupt(format!(
                            "a lock's owner word names {owner}, a thread of this process"
                        ));
                    }
                    if self.take_over(owner, tid) {
                        return Acquired::OwnerDied;
                    }
                } else {
                    let mut gone = !pid_alive(owner);
                    if let Some(seg) = strict.filter(|_| !gone) {
                        if last_participant.elapsed() >= PARTICIPANT_LOOK {
                            last_participant = Instant::now();
                            gone = crate::sys::maps_segment(owner, seg.handle()) == Some(false);
                        }
                    }
                    if gone && self.take_over(owner, tid) {
                        return Acquired::OwnerDied;
                    }
                }
            }
            if !futex::wait_until(&self.state, CONTENDED, deadline) {
                return Acquired::TimedOut;
            }
        }
    }

    /// Becomes the holder in place of `owner` (dead, or no holder at all).
    fn take_over(&self, owner: u32, tid: u32) -> bool {
        // The old thread id goes first: for an instant the word names this process, and the
        // old holder's thread is none of ours.
        self.tid.store(0, Ordering::Relaxed);
        let won = self
            .owner
            .compare_exchange(owner, my_pid(), Ordering::AcqRel, Ordering::Relaxed)
            .is_ok();
        if won {
            self.tid.store(tid, Ordering::Relaxed);
        }
        won
    }

    /// Releases; an error if the lock is not held.
    pub(crate) fn unlock(&self) -> Result<(), SyncError> {
        if self.state.load(Ordering::Relaxed) == UNLOCKED {
            return Err(SyncError::ReleasedTooManyTimes);
        }
        self.tid.store(0, Ordering::Relaxed);
        self.owner.store(0, Ordering::Relaxed);
        if self.state.swap(UNLOCKED, Ordering::Release) == CONTENDED {
            futex::wake(&self.state, 1);
        }
        Ok(())
    }

    pub(crate) fn is_locked(&self) -> bool {
        self.state.load(Ordering::Relaxed) != UNLOCKED
    }

    pub(crate) fn owner(&self) -> u32 {
        self.owner.load(Ordering::Relaxed)
    }

    /// The word waiters sleep on (the loom models wake it as the periodic check would).
    #[cfg(loom)]
    pub(crate) fn state_word(&self) -> &AtomicU32 {
        &self.state
    }
}

/// A lock shared between processes (and threads): Python's `multiprocessing.Lock`.
///
/// Cloning gives another handle on the same lock; passing it to a child (as an argument or in
/// a message) does too. Like Python's, it is not owner-checked: [`release`](Lock::release)
/// may come from any thread or process.
///
/// ```
/// let lock = mp_core::Lock::new().unwrap();
/// {
///     let _guard = lock.acquire().unwrap();
///     assert!(lock.is_locked());
///     assert!(lock.try_acquire().is_err());
/// }
/// assert!(!lock.is_locked());
/// ```
#[derive(Clone, Serialize, Deserialize)]
pub struct Lock {
    segment: Arc<Segment>,
}

/// Holds a [`Lock`]; releases it when dropped.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard<'a> {
    lock: &'a Lock,
}

/// Why an acquisition did not simply succeed.
#[derive(thiserror::Error)]
pub enum LockError<'a> {
    /// Not acquired within the timeout.
    #[error("timed out waiting for the lock")]
    Timeout,
    /// Not acquired without blocking (`try_acquire`).
    #[error("the lock is held")]
    WouldBlock,
    /// Acquired, but its previous holder died while holding it: the state it protects may be
    /// half-updated. The guard inside holds the lock; check the state, then use it.
    #[error("acquired a lock whose previous holder died while holding it")]
    OwnerDied(LockGuard<'a>),
}

impl std::fmt::Debug for LockError<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Timeout => f.write_str("Timeout"),
            Self::WouldBlock => f.write_str("WouldBlock"),
            Self::OwnerDied(_) => f.write_str("OwnerDied(..)"),
        }
    }
}

impl<'a> LockError<'a> {
    /// The guard, when the lock was acquired after all (its owner had died).
    pub fn into_guard(self) -> Option<LockGuard<'a>> {
        match self {
            Self::OwnerDied(g) => Some(g),
            _ => None,
        }
    }
}

impl Lock {
    /// A new, unlocked lock.
    pub fn new() -> Result<Self, SyncError> {
        Ok(Self {
            segment: Arc::new(Segment::create(std::mem::size_of::<RawLock>())?),
        })
    }

    fn raw(&self) -> &RawLock {
        // SAFETY: the segment is at least one RawLock long and page-aligned; RawLock is atomics.
        unsafe { self.segment.at(0) }
    }

    fn finish(&self, how: Acquired) -> Result<LockGuard<'_>, LockError<'_>> {
        let guard = LockGuard { lock: self };
        match how {
            Acquired::Clean => Ok(guard),
            Acquired::OwnerDied => Err(LockError::OwnerDied(guard)),
            Acquired::TimedOut | Acquired::Corrupt(_) => {
                std::mem::forget(guard);
                Err(LockError::Timeout)
            }
        }
    }

    /// Blocks until the lock is acquired.
    pub fn acquire(&self) -> Result<LockGuard<'_>, LockError<'_>> {
        self.finish(self.raw().lock(None))
    }

    /// Like [`acquire`](Self::acquire), failing with [`LockError::Timeout`] after `timeout`.
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<LockGuard<'_>, LockError<'_>> {
        self.finish(self.raw().lock(futex::deadline(Some(timeout))))
    }

    /// Acquires only if that needs no waiting ([`LockError::WouldBlock`] otherwise).
    pub fn try_acquire(&self) -> Result<LockGuard<'_>, LockError<'_>> {
        if self.raw().try_lock() {
            return Ok(LockGuard { lock: self });
        }
        match self.raw().lock(Some(Instant::now())) {
            Acquired::TimedOut => Err(LockError::WouldBlock),
            how => self.finish(how),
        }
    }

    /// Whether some thread or process holds the lock (Python's `locked()`).
    pub fn is_locked(&self) -> bool {
        self.raw().is_locked()
    }

    /// Releases the lock without a guard, from any thread or process (Python's `release()`,
    /// pairing with [`LockGuard::leak`]). Releasing an unlocked lock is an error.
    pub fn release(&self) -> Result<(), SyncError> {
        self.raw().unlock()
    }

    pub(crate) fn raw_lock(&self) -> &RawLock {
        self.raw()
    }
}

impl LockGuard<'_> {
    /// Keeps the lock held after the guard is gone, for a [`Lock::release`] elsewhere.
    pub fn leak(self) {
        std::mem::forget(self);
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        let _ = self.lock.raw().unlock();
    }
}

impl std::fmt::Debug for Lock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let owner = self.raw().owner();
        let holder = match (self.is_locked(), owner) {
            (false, _) => "nobody".to_string(),
            (true, 0) => "unknown".to_string(),
            (true, pid) if pid == my_pid() => format!("this process ({pid})"),
            (true, pid) => format!("process {pid}"),
        };
        f.debug_struct("Lock").field("held_by", &holder).finish()
    }
}

impl std::fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("lock", self.lock)
            .finish()
    }
}
