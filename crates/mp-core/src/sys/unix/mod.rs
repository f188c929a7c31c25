//! Unix: Unix domain socket channels, descriptor passing, `fork`, `exec` and `waitpid`.

pub(super) mod forkserver;
pub(super) mod handoff;
pub(super) mod listener;
pub(super) mod memory;
pub(super) mod os;
pub(super) mod spool;
pub(super) mod start;

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use mp_ipc::{Channel, IpcError};

use crate::StartMethod;

/// The transport of pipes and boot channels.
pub(crate) type Chan = mp_unix::UnixChannel;

/// The socket transport of this platform.
pub(crate) type SocketTransport = mp_unix::UnixSocket;

/// Start methods of this platform, the default first.
pub(crate) const AVAILABLE_START_METHODS: &[StartMethod] = &[
    StartMethod::Spawn,
    StartMethod::Fork,
    StartMethod::ForkServer,
];

pub(crate) fn chan_pair() -> io::Result<(Chan, Chan)> {
    Chan::pair()
}

pub(crate) fn chan_from_handle(h: OwnedFd) -> io::Result<Chan> {
    Chan::from_fd(h)
}

pub(crate) fn chan_raw_handle(c: &Chan) -> RawFd {
    c.as_raw_fd()
}

pub(crate) fn chan_try_clone(c: &Chan) -> io::Result<Chan> {
    c.try_clone()
}

/// Boot messages up to this size are written to the boot channel before the child starts:
/// far below a socket pair's buffer (208 KiB on Linux), so the write cannot block.
pub(crate) const EARLY_BOOT_MAX: usize = 16 << 10;

/// Sends a boot message with the handles the child inherits.
pub(crate) fn send_with_handles(c: &Chan, bytes: &[u8], handles: &[RawFd]) -> Result<(), IpcError> {
    c.send_frame_with_handles(&[bytes], handles)
}

/// Receives a boot message and its handles.
pub(crate) fn recv_with_handles(
    c: &Chan,
    buf: &mut Vec<u8>,
    max: u64,
) -> Result<Vec<OwnedFd>, IpcError> {
    c.recv_frame_with_handles(buf, max)
}

/// How long socket receives and waits spin before they sleep (see `mp_unix::spin`).
pub(crate) fn socket_spin_limit() -> Duration {
    mp_unix::spin::limit()
}

/// Sets [`socket_spin_limit`] for this process.
pub(crate) fn set_socket_spin_limit(limit: Duration) {
    mp_unix::spin::set_limit(limit)
}

/// The handle [`wait`](crate::wait) watches for a socket: its descriptor.
pub(crate) fn socket_handle(s: &impl AsRawFd) -> RawFd {
    s.as_raw_fd()
}

/// Unix domain sockets are waitable like TCP ones (Python's `wait` takes any socket).
impl crate::Waitable for std::os::unix::net::UnixStream {
    fn wait_handle(&self) -> Option<RawFd> {
        Some(self.as_raw_fd())
    }
}

/// A listening Unix socket is ready when a client waits to be accepted.
impl crate::Waitable for std::os::unix::net::UnixListener {
    fn wait_handle(&self) -> Option<RawFd> {
        Some(self.as_raw_fd())
    }
}

/// Waits until any handle is readable; returns the ready indices.
pub(crate) fn wait_readable(
    handles: &[RawFd],
    timeout: Option<Duration>,
) -> io::Result<Vec<usize>> {
    mp_unix::poll::poll_many(handles, timeout)
}

/// The boot channel of a child, as the value of the boot environment variable.
pub(super) fn boot_env_value(kind: &str, chan: &Chan) -> String {
    format!("{kind}:{}", chan.as_raw_fd())
}

/// Takes the boot channel named by the boot environment variable.
pub(crate) fn boot_chan_from_env(value: &str) -> io::Result<Chan> {
    let fd: RawFd = value.parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad boot handle {value:?}"),
        )
    })?;
    // The parent cleared close-on-exec so the descriptor survived exec; set it again, or
    // every process this child starts would inherit its boot channel.
    // SAFETY: fcntl on a descriptor number; a bad number is EBADF, reported below.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the parent cleared close-on-exec on exactly this descriptor for us; nobody
    // else in this fresh process owns it.
    unsafe { Chan::from_raw_fd(fd) }
}

/// Registers the constructor that runs a child's target before `main`.
pub(crate) fn link_boot_constructor() {
    #[used]
    #[cfg_attr(
        any(
            target_os = "linux",
            target_os = "android",
            target_os = "freebsd",
            target_os = "netbsd",
            target_os = "openbsd"
        ),
        link_section = ".init_array"
    )]
    #[cfg_attr(target_vendor = "apple", link_section = "__DATA,__mod_init_func")]
    static BOOT_CONSTRUCTOR: extern "C" fn() = boot_constructor;
    extern "C" fn boot_constructor() {
        crate::process::child::boot_from_env();
    }
    std::hint::black_box(&BOOT_CONSTRUCTOR);
}

/// Runs `hook` when the process exits normally (libc `atexit`).
pub(crate) fn at_exit(hook: extern "C" fn()) {
    // SAFETY: registering a plain function pointer.
    unsafe {
        libc::atexit(hook);
    }
}

/// Ends a child the way `main` returning would: `exit` runs the `atexit` hooks.
pub(crate) fn exit_process(code: i32) -> ! {
    std::process::exit(code)
}

/// Ends a forked child at once (`_exit`): no `atexit` hooks, no stdio flush of C's buffers.
pub(crate) fn exit_forked_child(code: i32) -> ! {
    // SAFETY: _exit ends the process; it has no preconditions.
    unsafe { libc::_exit(code) }
}
