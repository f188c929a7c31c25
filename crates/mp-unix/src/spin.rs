//! Spin-then-block: a wait first asks without blocking for a short while, yielding the CPU
//! between tries, and sleeps in the kernel only if nothing came.
//!
//! A message between processes on different CPUs costs a sleep and a wake-up when the
//! receiver blocks: tens of microseconds on a VM, most of a round trip. A peer that answers
//! within the spin window is seen without that cost. Yielding between tries lets a peer on
//! the same CPU run and answer at once. A longer wait costs at most [`limit`] of CPU time.

use std::io;
use std::time::{Duration, Instant};

/// The default of [`limit`].
pub const DEFAULT_SPIN: Duration = Duration::from_micros(20);

static LIMIT: mp_ipc::spin::SpinLimit = mp_ipc::spin::SpinLimit::new("MP_SPIN_US", DEFAULT_SPIN);

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

/// Calls `attempt` until it returns `Some`, for at most `limit` (yielding the CPU between
/// calls). `None` means the window passed without success: the caller blocks next. A zero
/// `limit` makes no attempt.
pub(crate) fn spin<T>(
    limit: Duration,
    mut attempt: impl FnMut() -> io::Result<Option<T>>,
) -> io::Result<Option<T>> {
    if limit.is_zero() {
        return Ok(None);
    }
    // The first try before reading the clock: a message already there costs nothing more.
    if let Some(done) = attempt()? {
        return Ok(Some(done));
    }
    let start = Instant::now();
    loop {
        std::thread::yield_now();
        if let Some(done) = attempt()? {
            return Ok(Some(done));
        }
        if start.elapsed() >= limit {
            return Ok(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spin_stops_at_success_or_after_the_window() {
        let mut calls = 0;
        let got = spin(Duration::from_secs(5), || {
            calls += 1;
            Ok((calls == 3).then_some(calls))
        });
        assert_eq!(got.unwrap(), Some(3));
        let t = Instant::now();
        let none: Option<()> = spin(Duration::from_micros(200), || Ok(None)).unwrap();
        assert!(none.is_none() && t.elapsed() >= Duration::from_micros(200));
    }
}
