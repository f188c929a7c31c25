//! Shared helpers of the integration tests: the start methods to run each behaviour under,
//! and an outer bound so that a hang fails the test instead of stalling the run.
#![allow(dead_code)]

use std::sync::mpsc;
use std::time::{Duration, Instant};

use mp_core::{get_all_start_methods, get_context, Context, Writer};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Every start method of this platform.
pub fn contexts() -> Vec<Context> {
    get_all_start_methods()
        .into_iter()
        .map(|m| get_context(m).unwrap())
        .collect()
}

/// The methods that re-execute or fork from a clean server (not plain fork).
pub fn exec_contexts() -> Vec<Context> {
    contexts()
        .into_iter()
        .filter(|c| c.start_method() != mp_core::StartMethod::Fork)
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

/// Polls `cond` every 10 ms for up to `secs` seconds.
pub fn eventually(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

/// A target that sleeps for the given number of milliseconds.
pub fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// A target that sleeps for a minute (to be terminated).
pub fn sleep_forever(_: ()) {
    std::thread::sleep(Duration::from_secs(60));
}

/// A target that sends its value back.
pub fn echo_back<T: Serialize + DeserializeOwned>(arg: (T, Writer<T>)) {
    arg.1.send(&arg.0).unwrap();
}

/// Whether a process with this pid exists (a reaped child does not).
#[cfg(unix)]
pub fn pid_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only probes.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

/// Whether a process with this pid still runs.
#[cfg(windows)]
pub fn pid_alive(pid: u32) -> bool {
    use windows_sys::Win32::Foundation::{CloseHandle, WAIT_TIMEOUT};
    use windows_sys::Win32::System::Threading::{
        OpenProcess, WaitForSingleObject, PROCESS_SYNCHRONIZE,
    };
    // SAFETY: a process handle opened, waited on with a zero timeout and closed here.
    unsafe {
        let h = OpenProcess(PROCESS_SYNCHRONIZE, 0, pid);
        if h.is_null() {
            return false;
        }
        let alive = WaitForSingleObject(h, 0) == WAIT_TIMEOUT;
        CloseHandle(h);
        alive
    }
}

/// Kills a process by pid (test clean-up after a hang).
#[cfg(unix)]
pub fn kill_pid(pid: u32) {
    // SAFETY: signalling a child of ours.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
}

/// Kills a process by pid (test clean-up after a hang).
#[cfg(windows)]
pub fn kill_pid(pid: u32) {
    let _ = std::process::Command::new("taskkill")
        .args(["/F", "/PID", &pid.to_string()])
        .output();
}

/// CONN-17's parent side: sends the handle of a fresh file to a child running `child`,
/// which must write "foo" through it and answer "done"; then checks the file.
pub fn file_handle_round_trip<F>(ctx: Context, child: F, tag: &str)
where
    F: Fn(mp_core::Connection<mp_core::OsHandle>) + Copy + Send + 'static,
{
    let path = std::env::temp_dir().join(format!(
        "mp-conn17-{tag}-{}-{:?}",
        std::process::id(),
        ctx.start_method()
    ));
    let file = std::fs::File::create(&path).unwrap();
    let (a, b) = mp_core::pipe::<mp_core::OsHandle>().unwrap();
    let mut p = ctx.process(child, b);
    p.start().unwrap();
    a.send(&mp_core::OsHandle::from(file)).unwrap();
    assert_eq!(
        a.recv_bytes_timeout(Duration::from_secs(10)).unwrap(),
        b"done"
    );
    p.join().unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "foo");
    std::fs::remove_file(path).unwrap();
}
