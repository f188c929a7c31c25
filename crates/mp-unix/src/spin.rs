//! Spin-then-block: a wait first asks without blocking for a short while, yielding the CPU
//! between tries, and sleeps in the kernel only if nothing came.
//!
//! A message between processes on different CPUs costs a sleep and a wake-up when the
//! receiver blocks: tens of microseconds on a VM, most of a round trip. A peer that answers
//! within the spin window is seen without that cost. Yielding between tries lets a peer on
//! the same CPU run and answer at once. A longer wait costs at most [`SPIN`] of CPU time.

use std::io;
use std::time::{Duration, Instant};

/// How long a wait keeps trying without blocking before it sleeps.
pub const SPIN: Duration = Duration::from_micros(20);

/// Calls `attempt` until it returns `Some`, for at most `limit` (yielding the CPU between
/// calls). `None` means the window passed without success: the caller blocks next.
pub(crate) fn spin<T>(
    limit: Duration,
    mut attempt: impl FnMut() -> io::Result<Option<T>>,
) -> io::Result<Option<T>> {
    let start = Instant::now();
    loop {
        if let Some(done) = attempt()? {
            return Ok(Some(done));
        }
        if start.elapsed() >= limit {
            return Ok(None);
        }
        std::thread::yield_now();
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
