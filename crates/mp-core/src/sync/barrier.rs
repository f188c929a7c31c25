//! `Barrier`: Python's `multiprocessing.Barrier`, a process-shared barrier for a fixed number
//! of parties.
//!
//! The algorithm is Python's `threading.Barrier` (filling, draining, resetting and broken
//! states), with its state in shared memory. Differences from Python:
//! - timeouts are `Duration`s; the default timeout is fixed at creation
//!   ([`Barrier::with_timeout`]); as in Python, a timeout breaks the barrier for every party;
//! - a timeout also applies while a party waits for the previous round to drain;
//! - the action is a `fn` item or a closure that captures nothing
//!   ([`Barrier::with_action`]), so the barrier stays serializable: whichever process
//!   arrives last runs it, in its own copy of the program (the function travels with the
//!   barrier as a checked [`FnId`], as process targets do). It must be a function of this
//!   executable, not of a dynamically loaded library. An action that panics breaks the
//!   barrier, and the panic continues in the party that ran it;
//! - a party that dies while waiting is not detected: the others wait until their timeout
//!   (use one); a party that dies inside the barrier's short internal critical section breaks
//!   the barrier.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::futex;
use super::lock::Acquired;
use super::model::{AtomicU32, AtomicU64, Ordering};
use super::{RawLock, SyncError};
use crate::fn_id::{check_type, fn_kind, FnId};
use crate::shared::Segment;

const FILLING: u32 = 0;
const DRAINING: u32 = 1;
const RESETTING: u32 = 2;
const BROKEN: u32 = 3;

const NO_TIMEOUT: u64 = u64::MAX;

#[repr(C)]
pub(super) struct RawBarrier {
    /// Guards every field below.
    lock: RawLock,
    /// Bumped on every change others may wait for; the futex word.
    seq: AtomicU32,
    state: AtomicU32,
    /// Parties inside `wait` (arrived, or still leaving the last round).
    count: AtomicU32,
    parties: AtomicU32,
    /// Default timeout in nanoseconds, [`NO_TIMEOUT`] for none.
    timeout_ns: AtomicU64,
}

impl RawBarrier {
    /// The shared words of a barrier for `parties`, no timeout, on the heap, for the loom
    /// models (the action travels with the handle, not here).
    #[cfg(loom)]
    pub(super) fn model(parties: u32) -> Self {
        Self {
            lock: RawLock::model(),
            seq: AtomicU32::new(0),
            state: AtomicU32::new(FILLING),
            count: AtomicU32::new(0),
            parties: AtomicU32::new(parties),
            timeout_ns: AtomicU64::new(NO_TIMEOUT),
        }
    }
}

/// Runs this handle's action (resolving its [`FnId`]); what the protocol calls in the last
/// party to arrive. An `Err` is a refused action (wrong kind or type name): it breaks the
/// barrier as a panicking action does.
type ActionRunner<'a> = dyn Fn() -> Result<(), String> + 'a;

/// Runs a barrier action: checks the type name, conjures the function, calls it.
type ActionFn = fn(&str) -> Result<(), String>;

fn_kind!(
    /// Barrier actions.
    Action,
    crate::fn_id::TAG_ACTION,
    ActionFn
);

fn action_trampoline<F: Fn() + Copy + Send + 'static>(type_name: &str) -> Result<(), String> {
    check_type(type_name, std::any::type_name::<F>())?;
    const {
        assert!(
            std::mem::size_of::<F>() == 0,
            "a barrier action must be a fn item or a closure that captures nothing"
        )
    };
    // SAFETY: F is zero-sized (checked at compile time): it has exactly one value and no
    // bytes, so conjuring it re-creates the caller's fn item or capture-free closure.
    let f: F = unsafe { std::mem::zeroed() };
    f();
    Ok(())
}

/// The barrier was broken (by [`Barrier::abort`], a timeout, a [`Barrier::reset`] while
/// waiting, or a panicking action): Python's `threading.BrokenBarrierError`.
///
/// ```
/// let barrier = mp_core::Barrier::new(2).unwrap();
/// barrier.abort();
/// let err: mp_core::BrokenBarrierError = barrier.wait().unwrap_err();
/// assert_eq!(err.to_string(), "the barrier is broken");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the barrier is broken")]
pub struct BrokenBarrierError;

/// A barrier for `parties` threads or processes: Python's `multiprocessing.Barrier`.
///
/// Each party calls [`wait`](Self::wait); all are released together when the last arrives,
/// and the barrier is ready for the next round.
///
/// ```
/// use mp_core::Barrier;
///
/// let barrier = Barrier::new(2).unwrap();
/// let other = barrier.clone();
/// let t = std::thread::spawn(move || other.wait().unwrap());
/// let mine = barrier.wait().unwrap();
/// let theirs = t.join().unwrap();
/// assert_eq!(mine + theirs, 1); // indices 0 and 1
/// assert_eq!(barrier.n_waiting(), 0);
/// ```
#[derive(Clone, Serialize, Deserialize)]
pub struct Barrier {
    segment: Arc<Segment>,
    /// Travels with the handle (not in shared memory, where any holder could change it).
    action: Option<FnId<Action>>,
}

/// Holds the barrier's internal lock; releases it when dropped (also on panic).
struct Inner<'a> {
    raw: &'a RawBarrier,
}

impl Drop for Inner<'_> {
    fn drop(&mut self) {
        let _ = self.raw.lock.unlock();
    }
}

impl<'a> Inner<'a> {
    fn lock(raw: &'a RawBarrier) -> Self {
        if raw.lock.lock(None) == Acquired::OwnerDied {
            // A party died in the middle of an update: the state cannot be trusted.
            raw.state.store(BROKEN, Ordering::Relaxed);
            Self::notify_all_raw(raw);
        }
        Self { raw }
    }

    fn state(&self) -> u32 {
        self.raw.state.load(Ordering::Relaxed)
    }

    fn set_state(&self, s: u32) {
        self.raw.state.store(s, Ordering::Relaxed);
    }

    fn count(&self) -> u32 {
        self.raw.count.load(Ordering::Relaxed)
    }

    fn notify_all_raw(raw: &RawBarrier) {
        raw.seq.fetch_add(1, Ordering::SeqCst);
        futex::wake(&raw.seq, u32::MAX);
    }

    fn notify_all(&self) {
        Self::notify_all_raw(self.raw);
    }

    fn break_(&self) {
        self.set_state(BROKEN);
        self.notify_all();
    }

    /// Releases the lock, sleeps until a change or the deadline, re-locks. False once the
    /// deadline has passed.
    fn wait_change(self, deadline: Option<Instant>) -> (Self, bool) {
        let raw = self.raw;
        let seen = raw.seq.load(Ordering::SeqCst);
        drop(self);
        let in_time = futex::wait_until(&raw.seq, seen, deadline);
        (Self::lock(raw), in_time)
    }
}

impl Barrier {
    /// A barrier for `parties` parties (at least 1), without action or default timeout.
    ///
    /// ```
    /// assert_eq!(mp_core::Barrier::new(3).unwrap().parties(), 3);
    /// assert!(mp_core::Barrier::new(0).is_err());
    /// ```
    pub fn new(parties: u32) -> Result<Self, SyncError> {
        Self::create(parties, None, None)
    }

    /// A barrier whose [`wait`](Self::wait) gives up after `timeout` (Python's
    /// `Barrier(parties, timeout=...)`); giving up breaks the barrier.
    ///
    /// ```
    /// let b = mp_core::Barrier::with_timeout(2, std::time::Duration::from_millis(10)).unwrap();
    /// assert!(b.wait().is_err()); // nobody else came
    /// assert!(b.broken());
    /// ```
    pub fn with_timeout(parties: u32, timeout: Duration) -> Result<Self, SyncError> {
        Self::create(parties, None, Some(timeout))
    }

    /// A barrier that runs `action` once per round, in the last party to arrive, before any
    /// party is released (Python's `Barrier(parties, action)`). The action is a `fn` item or
    /// a closure that captures nothing (checked at compile time).
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// static TRIPS: AtomicU32 = AtomicU32::new(0);
    /// fn count_trip() { TRIPS.fetch_add(1, Ordering::SeqCst); }
    ///
    /// let b = mp_core::Barrier::with_action(1, count_trip).unwrap();
    /// b.wait().unwrap();
    /// b.wait().unwrap();
    /// assert_eq!(TRIPS.load(Ordering::SeqCst), 2);
    /// ```
    pub fn with_action<F>(parties: u32, action: F) -> Result<Self, SyncError>
    where
        F: Fn() + Copy + Send + 'static,
    {
        Self::with_options(parties, Some(action), None)
    }

    /// A barrier with an optional action and an optional default timeout. `F` must be a `fn`
    /// item or a capture-free closure even when `action` is `None`; without an action,
    /// [`new`](Self::new) and [`with_timeout`](Self::with_timeout) say it more simply.
    ///
    /// ```
    /// fn noop() {}
    /// let b = mp_core::Barrier::with_options(1, Some(noop), Some(std::time::Duration::from_secs(1)));
    /// assert_eq!(b.unwrap().wait().unwrap(), 0);
    /// ```
    pub fn with_options<F>(
        parties: u32,
        action: Option<F>,
        timeout: Option<Duration>,
    ) -> Result<Self, SyncError>
    where
        F: Fn() + Copy + Send + 'static,
    {
        let _ = action;
        let id =
            action.map(|_| FnId::<Action>::new(action_trampoline::<F>, std::any::type_name::<F>()));
        Self::create(parties, id, timeout)
    }

    fn create(
        parties: u32,
        action: Option<FnId<Action>>,
        timeout: Option<Duration>,
    ) -> Result<Self, SyncError> {
        if parties == 0 {
            return Err(SyncError::InvalidArgument(
                "a barrier needs at least one party",
            ));
        }
        let barrier = Self {
            segment: Arc::new(Segment::create(std::mem::size_of::<RawBarrier>())?),
            action,
        };
        let raw = barrier.raw();
        raw.parties.store(parties, Ordering::Relaxed);
        raw.timeout_ns.store(
            timeout.map_or(NO_TIMEOUT, |t| {
                u64::try_from(t.as_nanos()).unwrap_or(NO_TIMEOUT - 1)
            }),
            Ordering::Relaxed,
        );
        Ok(barrier)
    }

    fn raw(&self) -> &RawBarrier {
        // SAFETY: the segment is at least one RawBarrier long and page-aligned; all atomics
        // and a RawLock (atomics).
        unsafe { self.segment.at(0) }
    }

    /// Runs the action, if there is one.
    fn run_action(&self) -> Result<(), String> {
        let Some(id) = &self.action else {
            return Ok(());
        };
        // SAFETY: the id was made by `with_options` in a process running this executable
        // (the barrier reached this process from one it was started from, or one of its
        // ancestors); the kind is checked here, the type name by the trampoline.
        let f = unsafe { id.resolve() }.map_err(|e| e.to_string())?;
        f(id.type_name())
    }

    /// The default timeout, if any.
    fn default_timeout(&self) -> Option<Duration> {
        match self.raw().timeout_ns.load(Ordering::Relaxed) {
            NO_TIMEOUT => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    /// Waits until all parties have called `wait` (or the default timeout, if one was set,
    /// has passed); returns this party's arrival index, `0..parties`, different for each.
    /// Fails with [`BrokenBarrierError`] if the barrier is or gets broken.
    ///
    /// ```
    /// let b = mp_core::Barrier::new(1).unwrap();
    /// assert_eq!(b.wait(), Ok(0));
    /// ```
    pub fn wait(&self) -> Result<u32, BrokenBarrierError> {
        self.wait_until(futex::deadline(self.default_timeout()))
    }

    /// Like [`wait`](Self::wait), giving up after `timeout` (instead of the default one);
    /// giving up breaks the barrier for every party.
    ///
    /// ```
    /// let b = mp_core::Barrier::new(2).unwrap();
    /// assert!(b.wait_timeout(std::time::Duration::from_millis(10)).is_err());
    /// assert!(b.broken());
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Result<u32, BrokenBarrierError> {
        self.wait_until(futex::deadline(Some(timeout)))
    }

    fn wait_until(&self, deadline: Option<Instant>) -> Result<u32, BrokenBarrierError> {
        let run = || self.run_action();
        let action = self.action.as_ref().map(|_| &run as &ActionRunner<'_>);
        Self::wait_raw(self.raw(), action, deadline)
    }

    /// The protocol, on the shared words (so that the loom models run it on heap words).
    pub(super) fn wait_raw(
        raw: &RawBarrier,
        action: Option<&ActionRunner<'_>>,
        deadline: Option<Instant>,
    ) -> Result<u32, BrokenBarrierError> {
        let mut inner = Inner::lock(raw);
        // Enter: wait while the previous round drains or a reset completes.
        while matches!(inner.state(), DRAINING | RESETTING) {
            let (again, in_time) = inner.wait_change(deadline);
            inner = again;
            if !in_time && matches!(inner.state(), DRAINING | RESETTING) {
                inner.break_();
                return Err(BrokenBarrierError);
            }
        }
        if inner.state() == BROKEN {
            return Err(BrokenBarrierError);
        }
        let index = inner.count();
        raw.count.store(index + 1, Ordering::Relaxed);
        let parties = raw.parties.load(Ordering::Relaxed);
        let outcome = if index + 1 == parties {
            Self::release(action, &inner)
        } else {
            Self::wait_release(&mut inner, deadline)
        };
        // Exit.
        raw.count.store(inner.count() - 1, Ordering::Relaxed);
        if inner.count() == 0 && matches!(inner.state(), DRAINING | RESETTING) {
            inner.set_state(FILLING);
            inner.notify_all();
        }
        drop(inner);
        match outcome {
            Outcome::Passed => Ok(index),
            Outcome::Broken => Err(BrokenBarrierError),
            Outcome::ActionPanicked(p) => std::panic::resume_unwind(p),
        }
    }

    /// The last party: run the action, then release everybody.
    fn release(action: Option<&ActionRunner<'_>>, inner: &Inner<'_>) -> Outcome {
        if let Some(action) = action {
            let failed: Option<Box<dyn std::any::Any + Send>> =
                match std::panic::catch_unwind(AssertUnwindSafe(action)) {
                    Ok(Ok(())) => None,
                    Ok(Err(msg)) => Some(Box::new(format!("barrier action: {msg}"))),
                    Err(panic) => Some(panic),
                };
            if let Some(panic) = failed {
                inner.break_();
                return Outcome::ActionPanicked(panic);
            }
        }
        inner.set_state(DRAINING);
        inner.notify_all();
        Outcome::Passed
    }

    fn wait_release(inner: &mut Inner<'_>, deadline: Option<Instant>) -> Outcome {
        let raw = inner.raw;
        loop {
            match inner.state() {
                FILLING => {}
                DRAINING => return Outcome::Passed,
                _ => return Outcome::Broken,
            }
            // Swap the guard out to sleep; `Inner` has no cheap placeholder, so re-lock.
            let seen = raw.seq.load(Ordering::SeqCst);
            let _ = raw.lock.unlock();
            let in_time = futex::wait_until(&raw.seq, seen, deadline);
            if raw.lock.lock(None) == Acquired::OwnerDied {
                inner.break_();
            }
            if !in_time && inner.state() == FILLING {
                inner.break_();
                return Outcome::Broken;
            }
        }
    }

    /// Puts the barrier back to its initial state; parties waiting now get
    /// [`BrokenBarrierError`] (Python's `reset()`).
    ///
    /// ```
    /// let b = mp_core::Barrier::new(2).unwrap();
    /// b.abort();
    /// assert!(b.broken());
    /// b.reset();
    /// assert!(!b.broken());
    /// ```
    pub fn reset(&self) {
        let inner = Inner::lock(self.raw());
        if inner.count() > 0 {
            if matches!(inner.state(), FILLING | BROKEN) {
                inner.set_state(RESETTING);
            }
        } else {
            inner.set_state(FILLING);
        }
        inner.notify_all();
    }

    /// Breaks the barrier: waiting and future parties get [`BrokenBarrierError`] until
    /// [`reset`](Self::reset) (Python's `abort()`).
    ///
    /// ```
    /// let b = mp_core::Barrier::new(2).unwrap();
    /// b.abort();
    /// assert!(b.wait().is_err());
    /// ```
    pub fn abort(&self) {
        Inner::lock(self.raw()).break_();
    }

    /// The number of parties the barrier waits for.
    ///
    /// ```
    /// assert_eq!(mp_core::Barrier::new(5).unwrap().parties(), 5);
    /// ```
    pub fn parties(&self) -> u32 {
        self.raw().parties.load(Ordering::Relaxed)
    }

    /// How many parties wait in the current round.
    ///
    /// ```
    /// assert_eq!(mp_core::Barrier::new(5).unwrap().n_waiting(), 0);
    /// ```
    pub fn n_waiting(&self) -> u32 {
        let inner = Inner::lock(self.raw());
        if inner.state() == FILLING {
            inner.count()
        } else {
            0
        }
    }

    /// Whether the barrier is broken.
    ///
    /// ```
    /// assert!(!mp_core::Barrier::new(5).unwrap().broken());
    /// ```
    pub fn broken(&self) -> bool {
        Inner::lock(self.raw()).state() == BROKEN
    }
}

enum Outcome {
    Passed,
    Broken,
    ActionPanicked(Box<dyn std::any::Any + Send>),
}

impl std::fmt::Debug for Barrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Barrier")
            .field("parties", &self.parties())
            .field("n_waiting", &self.n_waiting())
            .field("broken", &self.broken())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trip() {}

    #[test]
    fn an_action_reached_under_another_name_is_refused() {
        let mut b = Barrier::with_action(1, trip).unwrap();
        assert_eq!(b.wait(), Ok(0));
        // The same trampoline, asked for under another type's name: the trampoline refuses
        // to run, the barrier breaks, and the party that ran it is told why.
        fn renamed<F: Fn() + Copy + Send + 'static>(_: F) -> FnId<Action> {
            FnId::<Action>::new(action_trampoline::<F>, "not the action's type")
        }
        b.action = Some(renamed(trip));
        let panic = std::panic::catch_unwind(AssertUnwindSafe(|| b.wait())).unwrap_err();
        let msg = crate::pool::panic_message(&*panic);
        assert!(msg.contains("function mismatch"), "{msg}");
        assert!(b.broken());
    }
}
