//! Event objects and process handles as wake-up and liveness signals: what the shared-memory
//! backend (`mp-shm`) sleeps on. An [`Event`] is a manual-reset event; its handle is a
//! waitable object, so [`crate::poll::poll_many`] (and `mp_core::wait`) can wait on it like on
//! a process handle.

use std::io;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle, RawHandle};
use std::time::Duration;

use windows_sys::Win32::Foundation::{
    CloseHandle, ERROR_ACCESS_DENIED, STILL_ACTIVE, WAIT_FAILED, WAIT_OBJECT_0, WAIT_TIMEOUT,
};
use windows_sys::Win32::System::Threading::{
    CreateEventW, GetCurrentProcessId, GetCurrentThreadId, GetExitCodeProcess, GetExitCodeThread,
    GetProcessIdOfThread, OpenProcess, OpenThread, ResetEvent, SetEvent, WaitForMultipleObjects,
    PROCESS_QUERY_LIMITED_INFORMATION, PROCESS_SYNCHRONIZE, THREAD_QUERY_LIMITED_INFORMATION,
};

/// A manual-reset event (unnamed, non-inheritable): stays signalled from [`set`](Self::set)
/// until [`reset`](Self::reset), waking every waiter meanwhile.
#[derive(Debug)]
pub struct Event {
    handle: OwnedHandle,
}

impl Event {
    /// A new event, not signalled.
    pub fn new() -> io::Result<Self> {
        // SAFETY: default security (non-inheritable), manual reset, initially clear, unnamed.
        let h = unsafe { CreateEventW(std::ptr::null(), 1, 0, std::ptr::null()) };
        if h.is_null() {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            // SAFETY: a fresh handle nobody else owns.
            handle: unsafe { OwnedHandle::from_raw_handle(h) },
        })
    }

    /// Wraps a handle received from another process. It is checked to be a waitable object
    /// (an event that is not one makes every call on it fail, never crash).
    pub fn from_handle(handle: OwnedHandle) -> io::Result<Self> {
        crate::poll::is_signalled(handle.as_raw_handle())?;
        Ok(Self { handle })
    }

    /// Signals the event (failures are ignored: the waiter re-checks on its own schedule).
    pub fn set(&self) {
        // SAFETY: SetEvent on a handle we own.
        unsafe { SetEvent(self.handle.as_raw_handle()) };
    }

    /// Clears the event.
    pub fn reset(&self) {
        // SAFETY: ResetEvent on a handle we own.
        unsafe { ResetEvent(self.handle.as_raw_handle()) };
    }

    /// A second handle on the same event.
    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(Self {
            handle: crate::handle::duplicate_local(self.handle.as_raw_handle())?,
        })
    }
}

impl AsRawHandle for Event {
    fn as_raw_handle(&self) -> RawHandle {
        self.handle.as_raw_handle()
    }
}

/// Opens process `pid` for waiting on its end (`SYNCHRONIZE`).
pub fn open_process(pid: u32) -> io::Result<OwnedHandle> {
    // SAFETY: returns a new handle or null.
    let h = unsafe {
        OpenProcess(
            PROCESS_SYNCHRONIZE | PROCESS_QUERY_LIMITED_INFORMATION,
            0,
            pid,
        )
    };
    if h.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh handle nobody else owns.
    Ok(unsafe { OwnedHandle::from_raw_handle(h) })
}

/// Whether `pid` can name a process: process (and thread) ids are nonzero multiples of 4,
/// far below 2^30. A number read from shared memory that is not is no holder of anything.
///
/// ```
/// assert!(mp_windows::event::pid_plausible(std::process::id()));
/// assert!(!mp_windows::event::pid_plausible(u32::MAX));
/// ```
pub fn pid_plausible(pid: u32) -> bool {
    pid != 0 && pid % 4 == 0 && pid < 1 << 30
}

/// The calling thread's id.
pub fn current_tid() -> u32 {
    // SAFETY: no preconditions.
    unsafe { GetCurrentThreadId() }
}

/// Whether `tid` is a running thread of this process.
pub fn thread_alive(tid: u32) -> bool {
    if !pid_plausible(tid) {
        return false;
    }
    // SAFETY: returns a new handle or null.
    let h = unsafe { OpenThread(THREAD_QUERY_LIMITED_INFORMATION, 0, tid) };
    if h.is_null() {
        return false;
    }
    let mut code = 0u32;
    // SAFETY: a thread handle we own, closed below.
    let alive = unsafe {
        GetProcessIdOfThread(h) == GetCurrentProcessId()
            && GetExitCodeThread(h, &mut code) != 0
            && code == STILL_ACTIVE as u32
    };
    // SAFETY: closing the handle opened above.
    unsafe { CloseHandle(h) };
    alive
}

/// Whether process `pid` exists and runs (one we may not look at counts as running; an
/// implausible number does not).
pub fn pid_alive(pid: u32) -> bool {
    if !pid_plausible(pid) {
        return false;
    }
    // SAFETY: returns a new handle or null.
    let h = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) };
    if h.is_null() {
        return io::Error::last_os_error().raw_os_error() == Some(ERROR_ACCESS_DENIED as i32);
    }
    let mut code = 0u32;
    // SAFETY: a process handle we own, closed below.
    let alive = unsafe { GetExitCodeProcess(h, &mut code) } != 0 && code == STILL_ACTIVE as u32;
    // SAFETY: closing the handle opened above.
    unsafe { CloseHandle(h) };
    alive
}

/// Blocks until one of `handles` (at most 64 waitable objects, at least one) is signalled
/// or `timeout` passes: the index of a signalled one, or `None` on timeout.
pub fn wait_any(handles: &[RawHandle], timeout: Duration) -> io::Result<Option<usize>> {
    if handles.is_empty() || handles.len() > 64 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "wait_any takes 1 to 64 handles",
        ));
    }
    let ms = crate::poll::wait_millis(Some(timeout));
    // SAFETY: the array holds `handles.len()` (<= 64) handles.
    let r = unsafe { WaitForMultipleObjects(handles.len() as u32, handles.as_ptr(), 0, ms) };
    match r {
        WAIT_TIMEOUT => Ok(None),
        WAIT_FAILED => Err(io::Error::last_os_error()),
        r if (r.wrapping_sub(WAIT_OBJECT_0) as usize) < handles.len() => {
            Ok(Some((r - WAIT_OBJECT_0) as usize))
        }
        // WAIT_ABANDONED_0 + i (a mutex): signalled too.
        r => Ok(Some((r as usize).wrapping_sub(0x80) % handles.len())),
    }
}
