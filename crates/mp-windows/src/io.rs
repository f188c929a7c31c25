//! Blocking calls on overlapped handles: one `OVERLAPPED` and a per-thread event per call.

use std::cell::OnceCell;
use std::io;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};

use std::time::Duration;

use windows_sys::Win32::Foundation::{
    GetLastError, ERROR_INVALID_PARAMETER, ERROR_IO_PENDING, ERROR_OPERATION_ABORTED,
    ERROR_TIMEOUT, HANDLE, WAIT_FAILED, WAIT_TIMEOUT,
};
use windows_sys::Win32::System::Threading::{CreateEventW, WaitForSingleObject};
use windows_sys::Win32::System::IO::{CancelIoEx, GetOverlappedResult, OVERLAPPED};

// The event this thread's overlapped calls complete on; one call at a time per thread.
thread_local! {
    static IO_EVENT: OnceCell<OwnedHandle> = const { OnceCell::new() };
}

fn new_event() -> Result<OwnedHandle, u32> {
    // SAFETY: an unnamed, manual-reset, non-inheritable event.
    let h = unsafe { CreateEventW(std::ptr::null(), 1, 0, std::ptr::null()) };
    if h.is_null() {
        // SAFETY: reads the calling thread's last error.
        return Err(unsafe { GetLastError() });
    }
    // SAFETY: a fresh handle nobody else owns.
    Ok(unsafe { OwnedHandle::from_raw_handle(h) })
}

/// Runs `start` (a `ReadFile`, `WriteFile` or `ConnectNamedPipe` on `h` given the overlapped
/// structure) and waits for it to complete. Returns the bytes transferred, or the Win32 error.
pub(crate) fn overlapped<F: FnOnce(*mut OVERLAPPED) -> i32>(
    h: HANDLE,
    start: F,
) -> Result<u32, u32> {
    overlapped_timeout(h, None, start)
}

/// Like [`overlapped`], giving up after `timeout` (`None`: never): the operation is then
/// cancelled and, unless it completed meanwhile (its result is returned then), the error is
/// `ERROR_TIMEOUT` (an `io::ErrorKind::TimedOut`).
pub(crate) fn overlapped_timeout<F: FnOnce(*mut OVERLAPPED) -> i32>(
    h: HANDLE,
    timeout: Option<Duration>,
    start: F,
) -> Result<u32, u32> {
    let mut start = Some(start);
    let cached = IO_EVENT.try_with(|cell| {
        if cell.get().is_none() {
            let _ = cell.set(new_event().ok()?);
        }
        let event = cell.get()?.as_raw_handle();
        Some(run(h, event, timeout, start.take()?))
    });
    match (cached, start.take()) {
        (Ok(Some(r)), _) => r,
        // No thread-local event (thread exiting, or creation failed): use a fresh one.
        (_, Some(start)) => {
            let event = new_event()?;
            run(h, event.as_raw_handle(), timeout, start)
        }
        (_, None) => Err(ERROR_INVALID_PARAMETER),
    }
}

fn run<F: FnOnce(*mut OVERLAPPED) -> i32>(
    h: HANDLE,
    event: HANDLE,
    timeout: Option<Duration>,
    start: F,
) -> Result<u32, u32> {
    // SAFETY: OVERLAPPED is plain data; all zeroes is its initial state.
    let mut ov: OVERLAPPED = unsafe { std::mem::zeroed() };
    ov.hEvent = event;
    if start(&mut ov) == 0 {
        // SAFETY: reads the calling thread's last error.
        let err = unsafe { GetLastError() };
        if err != ERROR_IO_PENDING {
            return Err(err);
        }
    }
    let mut timed_out = false;
    if let Some(t) = timeout {
        let ms = crate::poll::wait_millis(Some(t));
        // SAFETY: waits on this call's event, which the operation signals when it completes.
        match unsafe { WaitForSingleObject(event, ms) } {
            WAIT_TIMEOUT => {
                timed_out = true;
                // SAFETY: cancels only this operation; completion is still awaited below.
                unsafe { CancelIoEx(h, &ov) };
            }
            // SAFETY: reads the calling thread's last error. The operation still runs:
            // cancel it, and wait for it below so `ov` outlives it.
            WAIT_FAILED => unsafe {
                let e = GetLastError();
                CancelIoEx(h, &ov);
                let mut n = 0u32;
                GetOverlappedResult(h, &ov, &mut n, 1);
                return Err(e);
            },
            _ => {}
        }
    }
    let mut n = 0u32;
    // SAFETY: `ov` is the structure the operation was started with; waiting for completion
    // (bWait) keeps it and the caller's buffer alive for the whole operation.
    if unsafe { GetOverlappedResult(h, &ov, &mut n, 1) } == 0 {
        // SAFETY: reads the calling thread's last error.
        let e = unsafe { GetLastError() };
        return Err(if timed_out && e == ERROR_OPERATION_ABORTED {
            ERROR_TIMEOUT
        } else {
            e
        });
    }
    // Completed before the cancellation took effect: the result stands.
    Ok(n)
}

/// Like [`overlapped`], but while the operation is pending, `gone()` is asked every
/// `every`: once it says the other side has gone, the operation is cancelled and (unless it
/// completed meanwhile: its result is returned then) the error is `ERROR_OPERATION_ABORTED`.
/// For a write to a socket whose peer stopped reading and closed: the write would otherwise
/// wait on a stack that may never report the reset (Wine does not, for a pending send).
pub(crate) fn overlapped_watched<F: FnOnce(*mut OVERLAPPED) -> i32>(
    h: HANDLE,
    every: Duration,
    mut gone: impl FnMut() -> bool,
    start: F,
) -> Result<u32, u32> {
    let event = new_event()?;
    let event = event.as_raw_handle();
    // SAFETY: OVERLAPPED is plain data; all zeroes is its initial state.
    let mut ov: OVERLAPPED = unsafe { std::mem::zeroed() };
    ov.hEvent = event;
    if start(&mut ov) == 0 {
        // SAFETY: reads the calling thread's last error.
        let err = unsafe { GetLastError() };
        if err != ERROR_IO_PENDING {
            return Err(err);
        }
    }
    let ms = crate::poll::wait_millis(Some(every));
    loop {
        // SAFETY: waits on this call's event, which the operation signals when it completes.
        match unsafe { WaitForSingleObject(event, ms) } {
            WAIT_TIMEOUT if !gone() => continue,
            WAIT_TIMEOUT | WAIT_FAILED => {
                // SAFETY: cancels only this operation; completion is still awaited below.
                unsafe { CancelIoEx(h, &ov) };
                break;
            }
            _ => break,
        }
    }
    let mut n = 0u32;
    // SAFETY: `ov` is the structure the operation was started with; waiting for completion
    // (bWait) keeps it and the caller's buffer alive for the whole operation.
    if unsafe { GetOverlappedResult(h, &ov, &mut n, 1) } == 0 {
        // SAFETY: reads the calling thread's last error.
        return Err(unsafe { GetLastError() });
    }
    Ok(n)
}

/// A Win32 error code as an `io::Error`.
pub(crate) fn win_error(code: u32) -> io::Error {
    io::Error::from_raw_os_error(code as i32)
}
