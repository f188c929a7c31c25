//! Shared memory and process-shared waiting on Windows: pagefile-backed file mappings
//! (`CreateFileMappingW` on `INVALID_HANDLE_VALUE`), `MapViewOfFile`, and a sleep-and-check
//! wait.
//!
//! A mapping lives as long as some process holds a handle to it or a view of it, so an
//! anonymous segment can never leak, and a named one (`Local\<name>`) disappears with its last
//! handle: there is nothing to unlink and nothing for a crash to leave behind.

use std::io;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use windows_sys::Win32::Foundation::{
    CloseHandle, GetLastError, ERROR_ACCESS_DENIED, ERROR_ALREADY_EXISTS, INVALID_HANDLE_VALUE,
    STILL_ACTIVE,
};
use windows_sys::Win32::System::Memory::{
    CreateFileMappingW, MapViewOfFile, OpenFileMappingW, UnmapViewOfFile, VirtualQuery,
    FILE_MAP_ALL_ACCESS, MEMORY_BASIC_INFORMATION, MEMORY_MAPPED_VIEW_ADDRESS, PAGE_READWRITE,
};
use windows_sys::Win32::System::Threading::{
    GetExitCodeProcess, OpenProcess, PROCESS_QUERY_LIMITED_INFORMATION,
};

/// A new pagefile-backed mapping of `len` bytes (at least one), zero-filled, whose handle is
/// not inheritable; `name`, if given, is its name in the session namespace.
fn create_mapping(len: usize, name: Option<&[u16]>) -> io::Result<OwnedHandle> {
    let len = len.max(1) as u64;
    let name_ptr = name.map_or(std::ptr::null(), |n| n.as_ptr());
    // SAFETY: a pagefile-backed mapping with default (non-inheritable) security; `name_ptr`
    // is null or a NUL-terminated UTF-16 string that outlives the call.
    let h = unsafe {
        CreateFileMappingW(
            INVALID_HANDLE_VALUE,
            std::ptr::null(),
            PAGE_READWRITE,
            (len >> 32) as u32,
            len as u32,
            name_ptr,
        )
    };
    if h.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: read right after the call that set it.
    let existed = name.is_some() && unsafe { GetLastError() } == ERROR_ALREADY_EXISTS;
    // SAFETY: a fresh handle we own.
    let owned = unsafe { OwnedHandle::from_raw_handle(h) };
    if existed {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "a shared-memory segment with this name exists",
        ));
    }
    Ok(owned)
}

/// A new anonymous shared-memory object of `len` bytes, zero-filled. It is freed when the
/// last handle and view of it close, in whatever way the processes holding them end.
pub(crate) fn shm_create(len: usize) -> io::Result<OwnedHandle> {
    create_mapping(len, None)
}

/// The session-local kernel name of a segment: `Local\<name>`, NUL-terminated UTF-16.
fn kernel_name(name: &str) -> Vec<u16> {
    format!("Local\\{name}")
        .encode_utf16()
        .chain(std::iter::once(0))
        .collect()
}

/// A new named segment of `len` bytes; `AlreadyExists` if the name is taken.
pub(crate) fn shm_create_named(name: &str, len: usize) -> io::Result<OwnedHandle> {
    create_mapping(len, Some(&kernel_name(name)))
}

/// Opens an existing named segment; `NotFound` if no process holds one by that name.
pub(crate) fn shm_open_named(name: &str) -> io::Result<OwnedHandle> {
    let wide = kernel_name(name);
    // SAFETY: a NUL-terminated name; returns a new handle or null.
    let h = unsafe { OpenFileMappingW(FILE_MAP_ALL_ACCESS, 0, wide.as_ptr()) };
    if h.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh handle we own.
    Ok(unsafe { OwnedHandle::from_raw_handle(h) })
}

/// Windows has no unlink: a named mapping goes away with its last handle. Does nothing.
pub(crate) fn shm_unlink_named(_name: &str) -> io::Result<()> {
    Ok(())
}

/// Crash reclamation needs no tracker on Windows (see the module docs): does nothing.
pub(crate) fn shm_track(_name: &str) -> io::Result<()> {
    Ok(())
}

/// See [`shm_track`]: does nothing.
pub(crate) fn shm_untrack(_name: &str) {}

/// Maps `len` bytes of a mapping, shared and writable. Windows refuses a view larger than
/// the mapping.
pub(crate) fn shm_map(handle: &OwnedHandle, len: usize) -> io::Result<NonNull<u8>> {
    // SAFETY: mapping a section handle we hold.
    let view = unsafe {
        MapViewOfFile(
            handle.as_raw_handle() as _,
            FILE_MAP_ALL_ACCESS,
            0,
            0,
            len.max(1),
        )
    };
    NonNull::new(view.Value.cast()).ok_or_else(io::Error::last_os_error)
}

/// What identifies a section whatever handle names it: not cheaply known on Windows, so a
/// process maps a section it receives again anew.
pub(crate) fn shm_identity(_handle: &OwnedHandle) -> Option<(u64, u64)> {
    None
}

/// The size of a mapping: the size of a view of all of it, as `VirtualQuery` reports it,
/// which is the mapping's size rounded up to whole pages (the memory in that last page
/// exists and may be mapped, so this bound is sound for checking a length against).
pub(crate) fn shm_size(handle: &OwnedHandle) -> io::Result<usize> {
    // SAFETY: a view of the whole section (length 0), unmapped below.
    let view = unsafe { MapViewOfFile(handle.as_raw_handle() as _, FILE_MAP_ALL_ACCESS, 0, 0, 0) };
    if view.Value.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a zeroed out-structure of the right size.
    let mut info: MEMORY_BASIC_INFORMATION = unsafe { std::mem::zeroed() };
    // SAFETY: querying a view we just mapped.
    let got = unsafe {
        VirtualQuery(
            view.Value,
            &mut info,
            std::mem::size_of::<MEMORY_BASIC_INFORMATION>(),
        )
    };
    let result = if got == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(info.RegionSize)
    };
    // SAFETY: the view mapped above, used no further.
    unsafe {
        UnmapViewOfFile(view);
    }
    result
}

/// Unmaps what [`shm_map`] mapped.
///
/// # Safety
/// `ptr` must come from one `shm_map`, and nothing may use the mapping afterwards.
pub(crate) unsafe fn shm_unmap(ptr: NonNull<u8>, _len: usize) {
    // SAFETY: per the contract.
    unsafe {
        UnmapViewOfFile(MEMORY_MAPPED_VIEW_ADDRESS {
            Value: ptr.as_ptr().cast(),
        });
    }
}

/// The re-check step of [`futex_wait`].
const WAIT_STEP: Duration = Duration::from_micros(200);

/// Sleeps while `*word == expected`, at most `timeout` (`None`: until the word changes).
///
/// Windows has no wait-on-address across processes (`WaitOnAddress` works only within one
/// process), so this sleeps in steps of 200 µs and re-checks the word: a wake-up costs up to
/// one step (more if the system timer is coarse) and a waiter wakes several thousand times a
/// second while it waits. Callers re-check their condition, as after any wait.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let deadline = timeout.map(|t| Instant::now() + t);
    while word.load(Ordering::Acquire) == expected {
        let step = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return;
                }
                left.min(WAIT_STEP)
            }
            None => WAIT_STEP,
        };
        std::thread::sleep(step);
    }
}

/// Nothing to do: waiters re-check the word on their own (see [`futex_wait`]).
pub(crate) fn futex_wake(_word: &AtomicU32, _n: u32) {}

/// Whether a process with this pid is running (one that has exited counts as gone).
pub(crate) fn pid_alive(pid: u32) -> bool {
    // SAFETY: returns a new handle or null.
    let h = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) };
    if h.is_null() {
        // It exists but we may not look at it; otherwise it is gone.
        return io::Error::last_os_error().raw_os_error() == Some(ERROR_ACCESS_DENIED as i32);
    }
    let mut code = 0u32;
    // SAFETY: a process handle we own, closed below.
    let alive = unsafe { GetExitCodeProcess(h, &mut code) } != 0 && code == STILL_ACTIVE as u32;
    // SAFETY: closing the handle opened above.
    unsafe {
        CloseHandle(h);
    }
    alive
}
