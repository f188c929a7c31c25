//! Windows: named-pipe channels, handle duplication into children, `CreateProcess` (through
//! `std::process::Command`), a kill-on-close job object, and process handles as sentinels.
//!
//! Only the spawn start method exists: there is no `fork` on Windows.

mod os;
mod start;

use std::io;
use std::time::Duration;

use mp_ipc::handle::{AsRawHandle, OwnedHandle, RawHandle};
use mp_ipc::IpcError;

pub(crate) use os::{current_pid, die_with_parent_now, prepare_child_runtime, send_signal};
pub(crate) use start::{
    close_inherited, fork_child, forkserver_pid, serve_forkserver, spawn_child,
    start_forkserver, Exit, Waiter,
};

use crate::StartMethod;

/// The transport of pipes and boot channels.
pub(crate) type Chan = mp_windows::PipeChannel;

/// Start methods of this platform, the default first.
pub(crate) const AVAILABLE_START_METHODS: &[StartMethod] = &[StartMethod::Spawn];

pub(crate) fn chan_pair() -> io::Result<(Chan, Chan)> {
    Chan::pair()
}

pub(crate) fn chan_from_handle(h: OwnedHandle) -> io::Result<Chan> {
    Chan::from_handle(h)
}

pub(crate) fn chan_raw_handle(c: &Chan) -> RawHandle {
    c.as_raw_handle()
}

pub(crate) fn chan_try_clone(c: &Chan) -> io::Result<Chan> {
    c.try_clone()
}

/// Sends a boot message with the handles the child inherits: each handle is duplicated into
/// the child, found through the boot channel's pair id, which [`spawn_child`] recorded.
pub(crate) fn send_with_handles(
    c: &Chan,
    bytes: &[u8],
    handles: &[RawHandle],
) -> Result<(), IpcError> {
    let target = start::take_boot_target(c.pair_id());
    mp_windows::handle::send_with_handles(
        c,
        target.as_ref().map(|t| t.as_raw_handle()),
        bytes,
        handles,
    )
}

/// Receives a boot message and its handles.
pub(crate) fn recv_with_handles(
    c: &Chan,
    buf: &mut Vec<u8>,
    max: u64,
) -> Result<Vec<OwnedHandle>, IpcError> {
    mp_windows::handle::recv_with_handles(c, buf, max)
}

/// Waits until any handle is ready (a pipe with bytes or at end of stream, a process that
/// has ended); returns the ready indices. Polls with backoff: see [`mp_windows::poll`].
pub(crate) fn wait_readable(
    handles: &[RawHandle],
    timeout: Option<Duration>,
) -> io::Result<Vec<usize>> {
    mp_windows::poll::poll_many(handles, timeout)
}

/// The boot channel of a child, as the value of the boot environment variable:
/// `kind:parent-pid:handle`, the handle being one the parent holds open for the child to
/// duplicate (Python's `parent_pid` / `pipe_handle` command-line arguments).
pub(crate) fn boot_env_value(kind: &str, chan: &Chan) -> String {
    format!(
        "{kind}:{}:{}",
        current_pid(),
        chan.as_raw_handle() as usize
    )
}

/// Takes the boot channel named by the boot environment variable (`parent-pid:handle`) by
/// duplicating it out of the parent.
pub(crate) fn boot_chan_from_env(value: &str) -> io::Result<Chan> {
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad boot handle {value:?}"),
        )
    };
    let (pid, handle) = value.split_once(':').ok_or_else(bad)?;
    let pid: u32 = pid.parse().map_err(|_| bad())?;
    let handle: u64 = handle.parse().map_err(|_| bad())?;
    Chan::from_handle(mp_windows::handle::duplicate_from(pid, handle)?)
}

/// Registers the constructor that runs a child's target before `main`: a pointer in the
/// CRT's C++ initializer table (`.CRT$XCU`), which the C runtime calls before `main`.
pub(crate) fn link_boot_constructor() {
    #[used]
    #[link_section = ".CRT$XCU"]
    static BOOT_CONSTRUCTOR: extern "C" fn() = boot_constructor;
    extern "C" fn boot_constructor() {
        crate::process::child::boot_from_env();
    }
    std::hint::black_box(&BOOT_CONSTRUCTOR);
}

extern "C" {
    /// The C runtime's exit-hook registration (msvcrt / ucrt).
    fn atexit(hook: extern "C" fn()) -> std::ffi::c_int;
}

/// Runs `hook` when the process exits normally (the C runtime's `atexit`).
pub(crate) fn at_exit(hook: extern "C" fn()) {
    // SAFETY: registering a plain function pointer.
    unsafe {
        atexit(hook);
    }
}
