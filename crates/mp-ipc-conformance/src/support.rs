//! Helpers of the `mp-core`-level suites (and of `mp-core`'s own integration tests, which
//! re-export them): the start methods to run each behaviour under, and an outer bound so
//! that a hang fails the test instead of stalling the run.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use mp_core::{get_all_start_methods, get_context, Context};

/// Every start method of this platform.
pub fn contexts() -> Vec<Context> {
    get_all_start_methods()
        .into_iter()
        .map(|m| get_context(m).unwrap())
        .collect()
}

/// The factor the hang bounds of [`bounded`] are multiplied by: `MP_TEST_HANG_SCALE` (a whole
/// number, 1 when unset or unreadable). `cargo xtask sanitize` sets it: under ThreadSanitizer
/// on a loaded 2-CPU machine a test that takes 10 s alone took over a minute among the others,
/// and a bound meant to catch a hang must not catch the sanitizer's slowness.
pub fn hang_scale() -> u64 {
    std::env::var("MP_TEST_HANG_SCALE")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|&n| n >= 1)
        .unwrap_or(1)
}

/// Runs `f` on its own thread and fails if it takes longer than `secs` seconds (times
/// [`hang_scale`]).
pub fn bounded<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let secs = secs.saturating_mul(hang_scale());
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(v) => v,
        Err(mpsc::RecvTimeoutError::Disconnected) => match worker.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the worker always sends before ending"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("test did not finish within {secs} s (hang)")
        }
    }
}

/// Runs `f` once per context, each run bounded.
pub fn for_each_context(secs: u64, f: fn(Context)) {
    for ctx in contexts() {
        eprintln!("-- start method {:?}", ctx.start_method());
        bounded(secs, move || f(ctx));
    }
}

/// A timeout far longer than any test waits: given to a call that must return without using
/// it (data is already there, the event is already set), so that a wrongly waiting call is told
/// apart from a right one by [`prompt`] without measuring anything small.
pub const LONG: Duration = Duration::from_secs(120);

/// How long a call that must not wait may take on a loaded machine before [`prompt`] fails:
/// far above what a ready answer takes and far below [`LONG`].
pub const PROMPT: Duration = Duration::from_secs(10);

/// Runs `f`, a call that must answer without waiting out a timeout (a non-blocking call, or a
/// call given [`LONG`] whose answer is already there), and returns its result.
///
/// What is asserted is what happened: the caller checks the result; this only catches a call
/// that waited, with a bound ([`PROMPT`]) far from both the expected time (none) and the
/// time a wrong call would take (its timeout, or for ever). It never asserts that something
/// was fast: timing belongs to `cargo xtask bench`.
pub fn prompt<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let v = f();
    assert!(
        t.elapsed() < PROMPT,
        "{what} took {:?}: it waited instead of answering at once",
        t.elapsed()
    );
    v
}

/// Runs `f`, a call that must wait out its timeout `expected`, and returns its result.
///
/// It must not return before the timeout (less 20 ms for clock granularity), and it must
/// return at all: the upper bound, `expected` + [`PROMPT`], is far from the expected time, so
/// a loaded machine does not fail it; it only catches a timeout that was not honoured.
pub fn about<T>(what: &str, expected: Duration, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let v = f();
    let took = t.elapsed();
    assert!(
        took + Duration::from_millis(20) >= expected,
        "{what} returned after {took:?}, before its timeout of {expected:?}"
    );
    assert!(
        took <= expected + PROMPT,
        "{what} took {took:?}, its timeout of {expected:?} was not honoured"
    );
    v
}
