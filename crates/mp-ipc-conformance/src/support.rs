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

/// Runs `f` on its own thread and fails if it takes longer than `secs` seconds.
pub fn bounded<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
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

/// Asserts that `f` returns in less than 50 ms, and returns its result.
pub fn immediate<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let v = f();
    assert!(
        t.elapsed() < Duration::from_millis(50),
        "{what} took {:?}, expected immediate",
        t.elapsed()
    );
    v
}

/// Asserts that `f` takes about `expected`: at least `expected - 20 ms`, at most `expected + 1 s`.
pub fn about<T>(what: &str, expected: Duration, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let v = f();
    let took = t.elapsed();
    assert!(
        took + Duration::from_millis(20) >= expected && took <= expected + Duration::from_secs(1),
        "{what} took {took:?}, expected about {expected:?}"
    );
    v
}
