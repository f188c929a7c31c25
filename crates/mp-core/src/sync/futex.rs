//! Waiting on a shared 32-bit word until a deadline, across processes.

use std::time::{Duration, Instant};

use super::model::{self as sys, AtomicU32, Ordering};

/// The longest single sleep: waiters wake this often to check whether a lock's owner died.
pub(crate) const CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Sleeps while `*word == expected`, until woken, `deadline`, or [`CHECK_INTERVAL`],
/// whichever comes first. Returns false once the deadline has passed.
pub(crate) fn wait_until(word: &AtomicU32, expected: u32, deadline: Option<Instant>) -> bool {
    let slice = match deadline {
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            left.min(CHECK_INTERVAL)
        }
        None => CHECK_INTERVAL,
    };
    if word.load(Ordering::Acquire) == expected {
        sys::futex_wait(word, expected, Some(slice));
    }
    true
}

/// Wakes up to `n` sleepers on `word`.
pub(crate) fn wake(word: &AtomicU32, n: u32) {
    sys::futex_wake(word, n);
}

/// The deadline `timeout` from now (`None`: no deadline, also for a timeout too far away to
/// represent, such as `Duration::MAX`).
pub(crate) fn deadline(timeout: Option<Duration>) -> Option<Instant> {
    mp_ipc::deadline::Deadline::from_timeout(timeout).instant()
}
