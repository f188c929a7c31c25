//! A process-wide spin window: how long a waiter keeps looking before it sleeps, with a
//! default, an environment variable that overrides it (read once, so children started
//! with the variable set follow it), and a setter that overrides both.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
    /// A window of `default`, unless the environment variable `env` (microseconds) says
    /// otherwise.
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
        let d = std::env::var(self.env)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
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
