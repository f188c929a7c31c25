//! The platform layer: how a process starts, how a handle reaches a child, how a process is
//! waited for and signalled. One module per platform family, chosen here and nowhere else.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as imp;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as imp;

// The platform interface, listed once: every platform module provides each of these names
// (the compiler checks it for the platform being built; `cargo xtask check-targets` for the
// others).
pub(crate) use imp::forkserver::{
    serve as serve_forkserver, server_pid as forkserver_pid, start as start_forkserver,
};
pub(crate) use imp::handoff::{
    duplicate_handle, handoff_lock_for_fork, Exporter, Importer, Ticket,
};
pub(crate) use imp::listener::{
    tcp_into_handle, tcp_shutdown, unique_local_address, LocalStream, SysListener,
};
pub(crate) use imp::memory::{
    current_tid, futex_wait, futex_wake, maps_segment, pid_alive, pid_plausible, shm_create,
    shm_create_named, shm_identity, shm_map, shm_open_named, shm_size, shm_track,
    shm_track_prepare, shm_unlink_named, shm_untrack, thread_alive,
};
pub(crate) use imp::os::{
    current_pid, die_with_parent_now, ignore_interrupts, parent_death_signal_armed,
    physical_memory, prepare_child_runtime, send_signal,
};
pub(crate) use imp::spool::{
    spool_create, spool_len, spool_read_at, spool_release, spool_truncate, spool_write_at,
};
pub(crate) use imp::start::{close_inherited, fork_child, spawn_child, Exit, Waiter};
pub(crate) use imp::{
    at_exit, boot_chan_from_env, chan_from_handle, chan_pair, chan_raw_handle, chan_try_clone,
    exit_forked_child, exit_process, link_boot_constructor, recv_with_handles, send_with_handles,
    set_socket_spin_limit, socket_handle, socket_spin_limit, wait_readable, Chan, SocketTransport,
    AVAILABLE_START_METHODS, EARLY_BOOT_MAX,
};

/// The signals (or their Windows equivalents) a parent sends a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// Python's `terminate()`: SIGTERM / TerminateProcess.
    Terminate,
    /// Python's `kill()`: SIGKILL / TerminateProcess.
    Kill,
    /// Python's `interrupt()`: SIGINT.
    Interrupt,
}

/// Reads up to `buf.len()` bytes at `offset` through `read_at` (one positional read of the
/// platform), going on after short and interrupted reads; returns how many bytes were read
/// (fewer only at the end of the object).
fn read_full_at(
    mut read_at: impl FnMut(&mut [u8], u64) -> std::io::Result<usize>,
    buf: &mut [u8],
    offset: u64,
) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}
