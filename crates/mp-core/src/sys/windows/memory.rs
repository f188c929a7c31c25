//! Shared memory and process-shared waiting on Windows: pagefile-backed file mappings
//! (`CreateFileMappingW` on `INVALID_HANDLE_VALUE`), `MapViewOfFile`, and a sleep-and-check
//! wait.
//!
//! A mapping lives as long as some process holds a handle to it or a view of it, so an
//! anonymous segment can never leak, and a named one (`Local\<name>`) disappears with its last
//! handle: there is nothing to unlink and nothing for a crash to leave behind.

use std::io;
use std::os::windows::io::{FromRawHandle, OwnedHandle};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use windows_sys::Win32::System::Memory::{OpenFileMappingW, FILE_MAP_ALL_ACCESS};

use mp_ipc::memory::Mapping;

/// A new anonymous shared-memory object of `len` bytes, zero-filled. It is freed when the
/// last handle and view of it close, in whatever way the processes holding them end.
pub(crate) fn shm_create(len: usize) -> io::Result<OwnedHandle> {
    mp_windows::memory::create(len)
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
    mp_windows::memory::create_named(len, Some(&kernel_name(name)))
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

/// See [`shm_track`]: nothing to prepare.
pub(crate) fn shm_track_prepare() -> io::Result<()> {
    Ok(())
}

/// Maps `len` bytes of a mapping, shared and writable. Windows refuses a view larger than
/// the mapping.
pub(crate) fn shm_map(handle: &OwnedHandle, len: usize) -> io::Result<Mapping> {
    mp_windows::memory::map(handle, len)
}

/// What identifies a section whatever handle names it: not cheaply known on Windows, so a
/// process maps a section it receives again anew.
pub(crate) fn shm_identity(_handle: &OwnedHandle) -> Option<(u64, u64)> {
    None
}

/// The size of a mapping: the size of a view of all of it, which is the mapping's size
/// rounded up to whole pages (the memory in that last page exists and may be mapped, so this
/// bound is sound for checking a length against).
pub(crate) fn shm_size(handle: &OwnedHandle) -> io::Result<usize> {
    mp_windows::memory::size(handle)
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
    let deadline = mp_ipc::deadline::Deadline::from_timeout(timeout).instant();
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

pub(crate) use mp_windows::event::{current_tid, pid_alive, pid_plausible, thread_alive};

/// Whether live process `pid` has the section `h` mapped: not known on Windows.
pub(crate) fn maps_segment(_pid: u32, _h: &OwnedHandle) -> Option<bool> {
    None
}
