//! Spin-then-block: a wait first asks without blocking for a short while, yielding the CPU
//! between tries, and sleeps in the kernel only if nothing came.
//!
//! A message between processes on different CPUs costs a sleep and a wake-up when the
//! receiver blocks: tens of microseconds on a VM, most of a round trip. A peer that answers
//! within the spin window is seen without that cost. Yielding between tries lets a peer on
//! the same CPU run and answer at once. A longer wait costs at most [`limit`] of CPU time.

use std::io;
use std::time::Duration;

/// The default of [`limit`].
pub const DEFAULT_SPIN: Duration = Duration::from_micros(20);

static LIMIT: mp_ipc::spin::SpinLimit =
    mp_ipc::spin::SpinLimit::new(mp_ipc::spin::GLOBAL_ENV, DEFAULT_SPIN);

/// How long a wait keeps trying without blocking before it sleeps (process-wide):
/// [`DEFAULT_SPIN`], or `MP_SPIN_US` (microseconds) from the environment, or what
/// [`set_limit`] set. Zero: sleep at once.
///
/// ```
/// mp_unix::spin::set_limit(std::time::Duration::from_micros(5));
/// assert_eq!(mp_unix::spin::limit(), std::time::Duration::from_micros(5));
/// ```
pub fn limit() -> Duration {
    LIMIT.get()
}

/// Sets [`limit`] for this process (children read `MP_SPIN_US` instead).
pub fn set_limit(limit: Duration) {
    LIMIT.set(limit)
}

/// Calls `attempt` until it returns `Some`, for at most `limit`, yielding the CPU between
/// calls ([`mp_ipc::spin::spin`] paced by yields: each attempt is a system call). `None`
/// means the window passed without success: the caller blocks next. A zero `limit` makes
/// no attempt.
pub(crate) fn spin<T>(
    limit: Duration,
    attempt: impl FnMut() -> io::Result<Option<T>>,
) -> io::Result<Option<T>> {
    mp_ipc::spin::spin(
        limit,
        mp_ipc::deadline::Deadline::NEVER,
        mp_ipc::spin::Pace::Yield,
        attempt,
    )
}
