//! Waiting for any of several handles: pipe ends and connected sockets (ready when bytes wait
//! or the peer is gone) and waitable objects such as process handles (ready when signalled).
//!
//! Windows has no single call that waits for "readable" on pipes, and
//! `WaitForMultipleObjects` stops at 64 handles. So this polls: each round checks every
//! handle without blocking (`PeekNamedPipe` for pipes, `WSAPoll` for sockets,
//! `WaitForSingleObject(h, 0)` for the rest), then sleeps, starting at 100 µs and doubling up
//! to 5 ms. With only waitable objects, at most 64, it blocks in `WaitForMultipleObjects`
//! instead.

use std::io;
use std::os::windows::io::RawHandle;
use std::time::{Duration, Instant};

use mp_ipc::deadline::Deadline;

use windows_sys::Win32::Foundation::{WAIT_FAILED, WAIT_OBJECT_0, WAIT_TIMEOUT};
use windows_sys::Win32::System::Threading::{
    WaitForMultipleObjects, WaitForSingleObject, INFINITE,
};

use crate::channel::{Backoff, Kind};

/// Whether the waitable object `h` is signalled, without waiting.
pub fn is_signalled(h: RawHandle) -> io::Result<bool> {
    // SAFETY: WaitForSingleObject with a zero timeout only looks.
    match unsafe { WaitForSingleObject(h, 0) } {
        WAIT_OBJECT_0 => Ok(true),
        WAIT_TIMEOUT => Ok(false),
        WAIT_FAILED => Err(io::Error::last_os_error()),
        // WAIT_ABANDONED (a mutex): signalled too.
        _ => Ok(true),
    }
}

/// Waits until any handle is ready; returns the ready indices (empty on timeout).
pub fn poll_many(handles: &[RawHandle], timeout: Option<Duration>) -> io::Result<Vec<usize>> {
    let deadline = Deadline::from_timeout(timeout).instant();
    let kinds: Vec<Option<Kind>> = handles.iter().map(|&h| Kind::of(h)).collect();
    let mut backoff = Backoff::new();
    loop {
        let mut ready = Vec::new();
        for (i, (&h, &kind)) in handles.iter().zip(&kinds).enumerate() {
            let r = match kind {
                Some(k) => k.ready(h)?,
                None => is_signalled(h)?,
            };
            if r {
                ready.push(i);
            }
        }
        if !ready.is_empty() {
            return Ok(ready);
        }
        if !handles.is_empty() && handles.len() <= 64 && kinds.iter().all(Option::is_none) {
            // Only waitable objects: let the kernel wait.
            let ms = match deadline {
                None => INFINITE,
                Some(d) => millis_until(d),
            };
            // SAFETY: the array holds `handles.len()` (<= 64) handles.
            let r =
                unsafe { WaitForMultipleObjects(handles.len() as u32, handles.as_ptr(), 0, ms) };
            if r == WAIT_FAILED {
                return Err(io::Error::last_os_error());
            }
            if r == WAIT_TIMEOUT && deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(Vec::new());
            }
            continue;
        }
        if !backoff.sleep(deadline) {
            return Ok(Vec::new());
        }
    }
}

/// A timeout as the milliseconds of one Win32 wait, rounded up: `INFINITE` for `None` and
/// for a timeout longer than a wait can express (about 49.7 days), which thus waits for ever
/// rather than wrapping to a short wait.
///
/// ```
/// # #[cfg(windows)] {
/// use std::time::Duration;
/// use mp_windows::poll::wait_millis;
/// assert_eq!(wait_millis(Some(Duration::from_micros(1500))), 2);
/// assert_eq!(wait_millis(Some(Duration::MAX)), u32::MAX); // INFINITE
/// assert_eq!(wait_millis(None), u32::MAX);
/// # }
/// ```
pub fn wait_millis(timeout: Option<Duration>) -> u32 {
    timeout
        .and_then(|t| u32::try_from(t.as_micros().div_ceil(1000)).ok())
        .filter(|&ms| ms < INFINITE)
        .unwrap_or(INFINITE)
}

/// Milliseconds until `deadline`, rounded up, below `INFINITE`.
pub fn millis_until(deadline: Instant) -> u32 {
    let left = deadline.saturating_duration_since(Instant::now());
    let ms = left.as_micros().div_ceil(1000);
    ms.min(u128::from(INFINITE - 1)) as u32
}

/// Waits at most `timeout` (`None`: as long as it takes) until socket `h` is readable: bytes
/// or end of stream on a connected socket, a pending connection on a listening one. Blocks
/// in `WSAPoll`, no polling rounds.
pub fn wait_socket(h: RawHandle, timeout: Option<Duration>) -> io::Result<bool> {
    crate::socket::socket_ready(h, timeout)
}
