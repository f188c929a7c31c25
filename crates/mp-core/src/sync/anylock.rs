//! [`AnyLock`]: the lock of a [`Condition`](super::Condition), a [`Value`](crate::Value) or an
//! [`Array`](crate::Array): recursive by default, as in Python (`Condition(lock=None)` and
//! `Value(..., lock=True)` make an `RLock`), or a plain [`Lock`] when asked for.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Lock, LockError, LockGuard, RLock, RLockError, RLockGuard, SyncError};

/// A [`Lock`] or an [`RLock`]: what a [`Condition`](super::Condition), a
/// [`Value`](crate::Value) or an [`Array`](crate::Array) sits on. Their constructors make an
/// `RLock` (Python's default); `with_lock` takes either (`Lock` and `RLock` convert into
/// this).
///
/// ```
/// use mp_core::sync::AnyLock;
/// let lock: AnyLock = mp_core::RLock::new().unwrap().into();
/// let outer = lock.acquire().unwrap();
/// let inner = lock.acquire().unwrap(); // recursive: no deadlock
/// drop((inner, outer));
/// assert!(!lock.is_locked());
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum AnyLock {
    /// A recursive lock (the default).
    Recursive(RLock),
    /// A plain lock: acquiring it again from the holder deadlocks, as in Python.
    Plain(Lock),
}

/// Holds one level of an [`AnyLock`]; releases it when dropped. Not `Send` (an `RLock` is
/// released by the thread that holds it).
#[must_use = "the lock is released as soon as the guard is dropped"]
#[derive(Debug)]
pub enum AnyLockGuard<'a> {
    /// A level of a recursive lock.
    Recursive(RLockGuard<'a>),
    /// A plain lock.
    Plain(LockGuard<'a>),
}

/// Why an [`AnyLock`] acquisition did not simply succeed.
#[derive(thiserror::Error)]
pub enum AnyLockError<'a> {
    /// Not acquired within the timeout.
    #[error("timed out waiting for the lock")]
    Timeout,
    /// Held by another thread or process (`try_acquire`).
    #[error("the lock is held")]
    WouldBlock,
    /// Acquired, but the previous holder process died holding it; the guard inside holds it.
    #[error("acquired a lock whose previous holder died while holding it")]
    OwnerDied(AnyLockGuard<'a>),
}

impl std::fmt::Debug for AnyLockError<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Timeout => f.write_str("Timeout"),
            Self::WouldBlock => f.write_str("WouldBlock"),
            Self::OwnerDied(_) => f.write_str("OwnerDied(..)"),
        }
    }
}

impl<'a> AnyLockError<'a> {
    /// The guard, when the lock was acquired after all (its owner had died).
    ///
    /// ```
    /// assert!(mp_core::sync::AnyLockError::Timeout.into_guard().is_none());
    /// ```
    pub fn into_guard(self) -> Option<AnyLockGuard<'a>> {
        match self {
            Self::OwnerDied(g) => Some(g),
            _ => None,
        }
    }
}

impl<'a> From<LockError<'a>> for AnyLockError<'a> {
    fn from(e: LockError<'a>) -> Self {
        match e {
            LockError::Timeout => Self::Timeout,
            LockError::WouldBlock => Self::WouldBlock,
            LockError::OwnerDied(g) => Self::OwnerDied(AnyLockGuard::Plain(g)),
        }
    }
}

impl<'a> From<RLockError<'a>> for AnyLockError<'a> {
    fn from(e: RLockError<'a>) -> Self {
        match e {
            RLockError::Timeout => Self::Timeout,
            RLockError::WouldBlock => Self::WouldBlock,
            RLockError::OwnerDied(g) => Self::OwnerDied(AnyLockGuard::Recursive(g)),
        }
    }
}

impl From<Lock> for AnyLock {
    fn from(l: Lock) -> Self {
        Self::Plain(l)
    }
}

impl From<RLock> for AnyLock {
    fn from(l: RLock) -> Self {
        Self::Recursive(l)
    }
}

impl AnyLock {
    /// A new recursive lock (Python's default for a `Condition`, `Value` or `Array`).
    ///
    /// ```
    /// assert!(mp_core::sync::AnyLock::new().unwrap().is_recursive());
    /// ```
    pub fn new() -> Result<Self, SyncError> {
        Ok(Self::Recursive(RLock::new()?))
    }

    /// Blocks until acquired (at once if this thread holds a recursive one).
    ///
    /// ```
    /// let lock = mp_core::sync::AnyLock::from(mp_core::Lock::new().unwrap());
    /// let _g = lock.acquire().unwrap();
    /// assert!(lock.is_locked());
    /// ```
    pub fn acquire(&self) -> Result<AnyLockGuard<'_>, AnyLockError<'_>> {
        match self {
            Self::Recursive(l) => Ok(AnyLockGuard::Recursive(l.acquire()?)),
            Self::Plain(l) => Ok(AnyLockGuard::Plain(l.acquire()?)),
        }
    }

    /// Like [`acquire`](Self::acquire), failing with [`AnyLockError::Timeout`] after
    /// `timeout`.
    ///
    /// ```
    /// let lock = mp_core::sync::AnyLock::new().unwrap();
    /// let _g = lock.acquire_timeout(std::time::Duration::from_secs(1)).unwrap();
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<AnyLockGuard<'_>, AnyLockError<'_>> {
        match self {
            Self::Recursive(l) => Ok(AnyLockGuard::Recursive(l.acquire_timeout(timeout)?)),
            Self::Plain(l) => Ok(AnyLockGuard::Plain(l.acquire_timeout(timeout)?)),
        }
    }

    /// Acquires only if that needs no waiting ([`AnyLockError::WouldBlock`] otherwise).
    ///
    /// ```
    /// let lock = mp_core::sync::AnyLock::from(mp_core::Lock::new().unwrap());
    /// let g = lock.try_acquire().unwrap();
    /// assert!(lock.try_acquire().is_err());
    /// # drop(g);
    /// ```
    pub fn try_acquire(&self) -> Result<AnyLockGuard<'_>, AnyLockError<'_>> {
        match self {
            Self::Recursive(l) => Ok(AnyLockGuard::Recursive(l.try_acquire()?)),
            Self::Plain(l) => Ok(AnyLockGuard::Plain(l.try_acquire()?)),
        }
    }

    /// Releases one level without a guard (pairs with [`AnyLockGuard::leak`]).
    ///
    /// ```
    /// let lock = mp_core::sync::AnyLock::new().unwrap();
    /// lock.acquire().unwrap().leak();
    /// lock.release().unwrap();
    /// assert!(!lock.is_locked());
    /// ```
    pub fn release(&self) -> Result<(), SyncError> {
        match self {
            Self::Recursive(l) => l.release(),
            Self::Plain(l) => l.release(),
        }
    }

    /// Whether some thread of some process holds it.
    ///
    /// ```
    /// assert!(!mp_core::sync::AnyLock::new().unwrap().is_locked());
    /// ```
    pub fn is_locked(&self) -> bool {
        match self {
            Self::Recursive(l) => l.is_locked(),
            Self::Plain(l) => l.is_locked(),
        }
    }

    /// Whether it is an [`RLock`].
    ///
    /// ```
    /// assert!(!mp_core::sync::AnyLock::from(mp_core::Lock::new().unwrap()).is_recursive());
    /// ```
    pub fn is_recursive(&self) -> bool {
        matches!(self, Self::Recursive(_))
    }

    /// The [`RLock`], if it is one.
    ///
    /// ```
    /// assert!(mp_core::sync::AnyLock::new().unwrap().as_rlock().is_some());
    /// ```
    pub fn as_rlock(&self) -> Option<&RLock> {
        match self {
            Self::Recursive(l) => Some(l),
            Self::Plain(_) => None,
        }
    }

    /// The [`Lock`], if it is a plain one.
    ///
    /// ```
    /// assert!(mp_core::sync::AnyLock::new().unwrap().as_lock().is_none());
    /// ```
    pub fn as_lock(&self) -> Option<&Lock> {
        match self {
            Self::Recursive(_) => None,
            Self::Plain(l) => Some(l),
        }
    }

    /// Acquires, ignoring a dead previous holder (the caller does not protect state that a
    /// holder could leave half-updated, or reports it otherwise).
    pub(crate) fn acquire_anyway(&self) -> AnyLockGuard<'_> {
        match self.acquire() {
            Ok(g) => g,
            Err(e) => e
                .into_guard()
                .expect("an acquisition without deadline ends holding the lock"),
        }
    }
}

impl AnyLockGuard<'_> {
    /// Keeps this level held after the guard is gone, for an [`AnyLock::release`] later
    /// (by the same thread, for a recursive lock).
    ///
    /// ```
    /// let lock = mp_core::sync::AnyLock::new().unwrap();
    /// lock.acquire().unwrap().leak();
    /// assert!(lock.is_locked());
    /// lock.release().unwrap();
    /// ```
    pub fn leak(self) {
        match self {
            Self::Recursive(g) => g.leak(),
            Self::Plain(g) => g.leak(),
        }
    }
}
