//! The waiting toolkit: how long a waiter keeps looking before it sleeps ([`SpinLimit`]),
//! and the one loop that does the looking ([`spin`]). Every spin of mp (socket receives and
//! polls, shm rings, queue getters, the manager's calls) goes through both, so one
//! variable governs them all: `MP_SPIN_US=0` turns every spin off.
//!
//! A window's value is, in order of precedence: what [`SpinLimit::set`] set; the window's
//! own environment variable, if it has one (`MP_SHM_SPIN_US`); [`GLOBAL_ENV`]
//! (`MP_SPIN_US`); the window's default. Variables are read once, so children started with
//! a variable set follow it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::deadline::Deadline;

/// The variable (microseconds) that sets every spin window of mp at once.
pub const GLOBAL_ENV: &str = "MP_SPIN_US";

/// One spin window setting; declare it as a `static`.
///
/// ```
/// use std::time::Duration;
/// static SPIN: mp_ipc::spin::SpinLimit =
///     mp_ipc::spin::SpinLimit::new("MP_DOCTEST_SPIN_US", Duration::from_micros(20));
/// assert_eq!(SPIN.get(), Duration::from_micros(20)); // the variable is not set
/// SPIN.set(Duration::ZERO);
/// assert_eq!(SPIN.get(), Duration::ZERO);
/// ```
#[derive(Debug)]
pub struct SpinLimit {
    /// Nanoseconds once known; `u64::MAX` until first read or set.
    ns: AtomicU64,
    env: &'static str,
    default: Duration,
    off_on_one_cpu: bool,
}

impl SpinLimit {
    /// A window of `default`, unless the environment variable `env` (microseconds), or else
    /// [`GLOBAL_ENV`], says otherwise. Pass [`GLOBAL_ENV`] as `env` for a window with no
    /// variable of its own.
    pub const fn new(env: &'static str, default: Duration) -> Self {
        Self {
            ns: AtomicU64::new(u64::MAX),
            env,
            default,
            off_on_one_cpu: false,
        }
    }

    /// The same setting, but zero (unless set) on a machine with one CPU, where a spinning
    /// waiter can only delay the peer it waits for.
    pub const fn off_on_one_cpu(self) -> Self {
        Self {
            off_on_one_cpu: true,
            ..self
        }
    }

    /// The window: what [`set`](Self::set) set, else the environment's, else the default.
    pub fn get(&self) -> Duration {
        let ns = self.ns.load(Ordering::Relaxed);
        if ns != u64::MAX {
            return Duration::from_nanos(ns);
        }
        let micros = |var: &str| std::env::var(var).ok()?.parse::<u64>().ok();
        let d = micros(self.env)
            .or_else(|| micros(GLOBAL_ENV))
            .map_or(self.default, Duration::from_micros);
        let one_cpu = || std::thread::available_parallelism().map_or(1, |n| n.get()) <= 1;
        let d = if self.off_on_one_cpu && one_cpu() {
            Duration::ZERO
        } else {
            d
        };
        self.set(d);
        d
    }

    /// Sets the window for this process (zero: sleep at once).
    pub fn set(&self, limit: Duration) {
        let ns = limit.as_nanos().min(u128::from(u64::MAX - 1)) as u64;
        self.ns.store(ns, Ordering::Relaxed);
    }
}

/// How [`spin`] spends the time between two attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// Gives the CPU away between attempts (`yield_now`): for attempts that are system calls,
    /// and so that a peer sharing the CPU runs and answers at once.
    Yield,
    /// `hints` CPU spin-loop hints between attempts for the first `rounds` attempts, then
    /// yields: for attempts that only read shared memory. A hint is tens of cycles on x86:
    /// one between attempts sees a change within a fraction of a microsecond (the shm
    /// rings, where that is the latency); more look less often at memory a peer is writing
    /// (a queue's header, which its producers and consumers all write).
    Busy {
        /// Attempts paced by spin-loop hints before yielding starts.
        rounds: u32,
        /// Spin-loop hints between two attempts.
        hints: u32,
    },
}

/// How many busy rounds of [`spin`] pass between two reads of the clock.
const CLOCK_EVERY: u32 = 16;

/// Calls `attempt` until it returns `Some`, for at most `window` and never past `deadline`.
/// `Ok(None)` means the time passed without success: the caller sleeps next. A zero window
/// makes no attempt at all, so a window set to zero turns the spin off entirely.
///
/// ```
/// use std::time::Duration;
/// use mp_ipc::{deadline::Deadline, spin::{spin, Pace}};
/// let mut calls = 0;
/// let got: Result<_, ()> = spin(Duration::from_secs(5), Deadline::NEVER, Pace::Yield, || {
///     calls += 1;
///     Ok((calls == 3).then_some(calls))
/// });
/// assert_eq!(got, Ok(Some(3)));
/// let off: Result<Option<()>, ()> = spin(Duration::ZERO, Deadline::NEVER, Pace::Yield, || {
///     unreachable!("a zero window makes no attempt")
/// });
/// assert_eq!(off, Ok(None));
/// ```
pub fn spin<T, E>(
    window: Duration,
    deadline: Deadline,
    pace: Pace,
    mut attempt: impl FnMut() -> Result<Option<T>, E>,
) -> Result<Option<T>, E> {
    if window.is_zero() {
        return Ok(None);
    }
    // The first try before reading the clock: what is already there costs nothing more.
    if let Some(done) = attempt()? {
        return Ok(Some(done));
    }
    let stop = Deadline::after(window).min(deadline);
    let mut round = 0u32;
    loop {
        let hints = match pace {
            Pace::Busy { rounds, hints } if round < rounds => Some(hints),
            _ => None,
        };
        let busy = hints.is_some();
        if let Some(hints) = hints {
            for _ in 0..hints.max(1) {
                std::hint::spin_loop();
            }
        } else {
            std::thread::yield_now();
        }
        round = round.saturating_add(1);
        if let Some(done) = attempt()? {
            return Ok(Some(done));
        }
        // A busy round takes nanoseconds: the clock is read every CLOCK_EVERY of them.
        if (!busy || round.is_multiple_of(CLOCK_EVERY)) && stop.expired() {
            return Ok(None);
        }
    }
}

/// [`spin`] for a condition: true once `ready()` is, false when the window or the deadline
/// passed first.
///
/// ```
/// use std::time::Duration;
/// use mp_ipc::{deadline::Deadline, spin::{spin_until, Pace}};
/// assert!(spin_until(Duration::from_micros(50), Deadline::NEVER, Pace::Yield, || true));
/// assert!(!spin_until(Duration::ZERO, Deadline::NEVER, Pace::Yield, || true));
/// ```
pub fn spin_until(
    window: Duration,
    deadline: Deadline,
    pace: Pace,
    mut ready: impl FnMut() -> bool,
) -> bool {
    let r: Result<Option<()>, std::convert::Infallible> =
        spin(window, deadline, pace, || Ok(ready().then_some(())));
    matches!(r, Ok(Some(())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn spin_stops_at_success_or_after_the_window_or_the_deadline() {
        let t = Instant::now();
        let none: Result<Option<()>, ()> = spin(
            Duration::from_micros(200),
            Deadline::NEVER,
            Pace::Busy {
                rounds: 8,
                hints: 1,
            },
            || Ok(None),
        );
        assert_eq!(none, Ok(None));
        assert!(t.elapsed() >= Duration::from_micros(200));
        let past = Deadline::after(Duration::ZERO);
        let mut calls = 0;
        let r: Result<Option<()>, ()> = spin(Duration::from_secs(60), past, Pace::Yield, || {
            calls += 1;
            Ok(None)
        });
        assert_eq!(
            (r, calls),
            (Ok(None), 2),
            "one try, one more after the first pause"
        );
        let e: Result<Option<()>, &str> =
            spin(Duration::from_secs(1), Deadline::NEVER, Pace::Yield, || {
                Err("boom")
            });
        assert_eq!(e, Err("boom"));
    }

    #[test]
    fn the_global_variable_sets_every_window_unless_its_own_says_otherwise() {
        // The only test of this binary that reads a SpinLimit from the environment.
        static PLAIN: SpinLimit = SpinLimit::new(GLOBAL_ENV, Duration::from_micros(20));
        static OTHER: SpinLimit =
            SpinLimit::new("MP_IPC_TEST_UNSET_SPIN_US", Duration::from_micros(50));
        static OWN: SpinLimit =
            SpinLimit::new("MP_IPC_TEST_OWN_SPIN_US", Duration::from_micros(50));
        std::env::set_var(GLOBAL_ENV, "0");
        std::env::set_var("MP_IPC_TEST_OWN_SPIN_US", "9");
        assert_eq!(PLAIN.get(), Duration::ZERO);
        assert_eq!(
            OTHER.get(),
            Duration::ZERO,
            "MP_SPIN_US=0 turns every spin off"
        );
        assert_eq!(
            OWN.get(),
            Duration::from_micros(9),
            "a window's own variable wins"
        );
        OWN.set(Duration::from_micros(1));
        assert_eq!(OWN.get(), Duration::from_micros(1), "set wins over both");
    }
}
