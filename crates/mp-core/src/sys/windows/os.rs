//! Small OS calls: process identity, termination, the child's runtime set-up.

use std::io;

use windows_sys::Win32::Foundation::{CloseHandle, ERROR_INVALID_PARAMETER, STILL_ACTIVE};
use windows_sys::Win32::System::Threading::{
    GetCurrentProcess, GetExitCodeProcess, OpenProcess, TerminateProcess,
    PROCESS_QUERY_LIMITED_INFORMATION, PROCESS_TERMINATE,
};

use crate::sys::Signal;

/// The exit code `terminate()` and `kill()` give a child (Python's `_winapi` `TERMINATE`);
/// it reads back as `-15`, minus SIGTERM, as in Python on Windows.
pub(crate) const TERMINATE_CODE: u32 = 0x10000;

/// Python's exit code from a Windows exit status: `-15` for a terminated process, otherwise
/// the status (NTSTATUS crash codes such as `0xC0000005` read as negative numbers).
pub(crate) fn exit_code(status: u32) -> i32 {
    if status == TERMINATE_CODE {
        -15
    } else {
        status as i32
    }
}

pub(crate) fn current_pid() -> u32 {
    std::process::id()
}

/// Terminates `pid` with [`TERMINATE_CODE`] (`Terminate` and `Kill` alike, as Python does on
/// Windows). `Interrupt` has no Windows equivalent for a single process.
pub(crate) fn send_signal(pid: u32, signal: Signal) -> io::Result<()> {
    if signal == Signal::Interrupt {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "interrupting a process (SIGINT) is not supported on Windows",
        ));
    }
    // SAFETY: OpenProcess returns a new handle or null.
    let h = unsafe {
        OpenProcess(
            PROCESS_TERMINATE | PROCESS_QUERY_LIMITED_INFORMATION,
            0,
            pid,
        )
    };
    if h.is_null() {
        let e = io::Error::last_os_error();
        // No such process: it has ended and been forgotten.
        if e.raw_os_error() == Some(ERROR_INVALID_PARAMETER as i32) {
            return Ok(());
        }
        return Err(e);
    }
    // SAFETY: `h` is a process handle we own; it is closed below.
    let result = unsafe {
        if TerminateProcess(h, TERMINATE_CODE) != 0 {
            Ok(())
        } else {
            let e = io::Error::last_os_error();
            let mut code = 0u32;
            // Already ended (TerminateProcess then fails with access denied): not an error.
            if GetExitCodeProcess(h, &mut code) != 0 && code != STILL_ACTIVE as u32 {
                Ok(())
            } else {
                Err(e)
            }
        }
    };
    // SAFETY: closing the handle opened above.
    unsafe {
        CloseHandle(h);
    }
    result
}

/// A child whose parent died: go at once, without exit hooks.
pub(crate) fn die_with_parent_now() -> ! {
    // SAFETY: terminating the current process; it does not return.
    unsafe {
        TerminateProcess(GetCurrentProcess(), TERMINATE_CODE);
    }
    std::process::abort()
}

/// Windows has no parent-death signal: the boot-channel watchdog is what ends a child whose
/// parent died.
pub(crate) fn parent_death_signal_armed() -> bool {
    false
}

/// A child booted before `main`: nothing to set up on Windows (no `SIGPIPE`; a write to a
/// vanished peer is already an error).
pub(crate) fn prepare_child_runtime() {}

/// See the Unix twin: a console Ctrl-C does not stop a manager server either, which is left
/// to its owner (nothing to set here: the server is started without a console of its own
/// process group, and Rust installs no Ctrl-C handler).
pub(crate) fn ignore_interrupts() {}

/// The machine's physical memory in bytes, if the system says.
pub(crate) fn physical_memory() -> Option<u64> {
    use windows_sys::Win32::System::SystemInformation::{GlobalMemoryStatusEx, MEMORYSTATUSEX};
    // SAFETY: MEMORYSTATUSEX is plain data; its length field is set as the call requires.
    unsafe {
        let mut status: MEMORYSTATUSEX = std::mem::zeroed();
        status.dwLength = std::mem::size_of::<MEMORYSTATUSEX>() as u32;
        (GlobalMemoryStatusEx(&mut status) != 0 && status.ullTotalPhys > 0)
            .then_some(status.ullTotalPhys)
    }
}
