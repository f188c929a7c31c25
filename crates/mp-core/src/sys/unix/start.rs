//! Starting children (`exec` of the current binary, or `fork`) and waiting for them.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use mp_ipc::Channel;

use mp_unix::process::{arm_parent_death_signal, exit_watch, is_main_thread};

use super::os::exit_code;
use super::Chan;
use crate::process::boot::ENV_BOOT;

/// Runs the current executable as a child of `kind` ("spawn" or "forkserver") whose boot
/// channel is `boot`. Only `boot` is inherited; every other descriptor is close-on-exec.
pub(crate) fn spawn_child(
    kind: &str,
    boot: &Chan,
    die_with_parent: bool,
) -> io::Result<(u32, Waiter)> {
    let exe = std::env::current_exe()?;
    let fd = boot.as_raw_fd();
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    let arm = die_with_parent && is_main_thread();
    let mut cmd = Command::new(exe);
    cmd.env(ENV_BOOT, super::boot_env_value(kind, boot));
    // SAFETY: the closure only makes async-signal-safe calls (fcntl, prctl, getppid, _exit).
    unsafe {
        cmd.pre_exec(move || {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(io::Error::last_os_error());
            }
            if arm {
                arm_parent_death_signal(parent);
            }
            Ok(())
        });
    }
    // On macOS a descriptor another thread is making may not be close-on-exec yet: the
    // fork lock keeps the spawn out of that window (nothing where the OS is atomic).
    let child = {
        let _fork = mp_unix::cloexec::forking();
        cmd.spawn()?
    };
    let pid = child.id();
    // std's Child neither waits nor kills on drop; the Waiter reaps the child.
    drop(child);
    Ok((pid, Waiter::direct(pid)))
}

/// Exit code of a forked child that panicked while setting itself up.
pub(crate) const FORK_SETUP_FAILED: i32 = 70;

/// Forks; the child runs `body` and must not return (it is made to `_exit` if it does).
pub(crate) fn fork_child(die_with_parent: bool, body: impl FnOnce()) -> io::Result<(u32, Waiter)> {
    use std::io::Write;
    // Hold the standard stream locks across the fork, as an atfork handler would, so that
    // no other thread owns them at that instant and the child can print.
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    let _ = out.flush();
    let _ = err.flush();
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    let arm = die_with_parent && is_main_thread();
    // The fork lock, so that the child starts with it free: a thread holding its shared
    // side at the instant of the fork would not exist in the child, which would then wait
    // for ever to spawn (macOS; nothing elsewhere). Both processes drop it at once.
    let fork_lock = mp_unix::cloexec::forking();
    // SAFETY: fork itself is sound; the hazards for the child are documented on
    // StartMethod::Fork, and mp's own locks are held across it by the caller.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            drop((out, err, fork_lock));
            if arm {
                arm_parent_death_signal(parent);
            }
            // The child must never unwind into the parent's stack frames it inherited (it
            // would go on running the parent's program): a panic outside the target's own
            // guard ends the child with a distinct code instead.
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
            // SAFETY: leaving a forked child without running the parent's exit hooks.
            unsafe {
                libc::_exit(if outcome.is_ok() {
                    0
                } else {
                    FORK_SETUP_FAILED
                })
            }
        }
        pid => {
            // Before the exit watch: making it may take the shared side of the lock.
            drop(fork_lock);
            Ok((pid as u32, Waiter::direct(pid as u32)))
        }
    }
}

/// Closes a descriptor inherited by a forked child that belongs to its parent.
pub(crate) fn close_inherited(fd: RawFd) {
    // SAFETY: called in a fresh fork child on a descriptor nothing in it uses.
    unsafe {
        libc::close(fd);
    }
}

/// What ended a child, as far as the waiting side knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Python's exit code: the status, or minus the signal.
    Code(i32),
    /// The child has ended but its status is unknown (its fork server died first).
    Unknown,
}

/// Waits for one child: a direct child by `waitpid`, woken by its exit watch (a pidfd on
/// Linux, a kqueue on macOS and FreeBSD: `mp_unix::process::exit_watch`), a fork-server
/// child by the status the server sends when it reaps it.
#[derive(Debug)]
pub(crate) struct Waiter {
    pid: u32,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Direct { watch: Option<OwnedFd> },
    Server { status: Chan },
}

impl Waiter {
    pub(crate) fn direct(pid: u32) -> Self {
        Self {
            pid,
            kind: Kind::Direct {
                watch: exit_watch(pid),
            },
        }
    }

    pub(crate) fn server(pid: u32, status: Chan) -> Self {
        Self {
            pid,
            kind: Kind::Server { status },
        }
    }

    /// A descriptor that becomes readable when the child has ended, if there is one.
    pub(crate) fn sentinel(&self) -> Option<RawFd> {
        match &self.kind {
            Kind::Direct { watch } => watch.as_ref().map(|f| f.as_raw_fd()),
            Kind::Server { status } => Some(status.as_raw_fd()),
        }
    }

    /// The exit status if the child has ended, without blocking.
    pub(crate) fn try_wait(&self) -> io::Result<Option<Exit>> {
        match &self.kind {
            Kind::Direct { .. } => {
                let mut status = 0;
                // SAFETY: waitpid writes the status into a live integer.
                let rc =
                    unsafe { libc::waitpid(self.pid as libc::pid_t, &mut status, libc::WNOHANG) };
                match rc {
                    0 => Ok(None),
                    r if r > 0 => Ok(Some(Exit::Code(exit_code(status)))),
                    _ => {
                        let e = io::Error::last_os_error();
                        if e.raw_os_error() == Some(libc::ECHILD) {
                            // Reaped behind our back (SIGCHLD ignored by the program).
                            Ok(Some(Exit::Unknown))
                        } else {
                            Err(e)
                        }
                    }
                }
            }
            Kind::Server { status } => {
                if !mp_unix::poll::poll_readable(status.as_raw_fd(), Some(Duration::ZERO))? {
                    return Ok(None);
                }
                let mut buf = Vec::new();
                match status.recv_frame(&mut buf, 16) {
                    Ok(()) if buf.len() == 4 => {
                        // The status frame was what made the sentinel (this channel) ready,
                        // and it is consumed: until the server closes its end, which it does
                        // soon but not at once, the sentinel would read as not ready, though
                        // the child has ended and been joined. Shutting down our reading side
                        // makes it ready for good (end of stream) from now on.
                        // SAFETY: shutdown of a socket this waiter owns; nothing is read from
                        // it after the status.
                        unsafe { libc::shutdown(status.as_raw_fd(), libc::SHUT_RD) };
                        Ok(Some(Exit::Code(i32::from_le_bytes([
                            buf[0], buf[1], buf[2], buf[3],
                        ]))))
                    }
                    // The server is gone: the child is orphaned; ask the kernel if it lives.
                    _ => Ok(if pid_exists(self.pid) {
                        None
                    } else {
                        Some(Exit::Unknown)
                    }),
                }
            }
        }
    }

    /// Waits up to `timeout` (`None`: without limit) for the child to end.
    pub(crate) fn wait(&self, timeout: Option<Duration>) -> io::Result<Option<Exit>> {
        let deadline = mp_ipc::deadline::Deadline::from_timeout(timeout);
        let mut nap = Duration::from_micros(200);
        loop {
            if let Some(exit) = self.try_wait()? {
                return Ok(Some(exit));
            }
            let left = deadline.remaining();
            if left == Some(Duration::ZERO) {
                return Ok(None);
            }
            match self.sentinel() {
                Some(fd) if !self.orphaned() => {
                    mp_unix::poll::poll_readable(fd, left)?;
                }
                _ => {
                    // No exit watch (old kernel, generic flavour) or an orphan: poll with
                    // backoff.
                    std::thread::sleep(left.map_or(nap, |l| l.min(nap)));
                    nap = (nap * 2).min(Duration::from_millis(20));
                }
            }
        }
    }

    fn orphaned(&self) -> bool {
        match &self.kind {
            Kind::Server { status } => {
                // A status channel at end of stream stays readable; do not spin on it.
                let mut probe = [0u8; 1];
                // SAFETY: recv into a one-byte buffer, without blocking or consuming.
                let n = unsafe {
                    libc::recv(
                        status.as_raw_fd(),
                        probe.as_mut_ptr().cast(),
                        1,
                        libc::MSG_PEEK | libc::MSG_DONTWAIT,
                    )
                };
                n == 0
            }
            Kind::Direct { .. } => false,
        }
    }
}

fn pid_exists(pid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fork-server child's sentinel stays ready once its status has been read, even while
    /// the server still holds its end of the status channel (seen as a failed
    /// `wait([sentinel], 0)` right after `join` in `wait_over_connections_and_sentinels`,
    /// under ThreadSanitizer's slowness).
    #[test]
    fn a_server_childs_sentinel_stays_ready_after_its_status_is_read() {
        let (ours, server) = Chan::pair().unwrap();
        let waiter = Waiter::server(std::process::id(), ours);
        let fd = waiter.sentinel().unwrap();
        assert!(!mp_unix::poll::poll_readable(fd, Some(Duration::ZERO)).unwrap());
        assert_eq!(waiter.try_wait().unwrap(), None);
        server.send_frame(&[&7i32.to_le_bytes()]).unwrap();
        assert_eq!(waiter.try_wait().unwrap(), Some(Exit::Code(7)));
        // The server's end is still open: the sentinel is ready all the same.
        assert!(mp_unix::poll::poll_readable(fd, Some(Duration::ZERO)).unwrap());
        assert!(mp_unix::poll::poll_readable(fd, Some(Duration::ZERO)).unwrap());
        drop(server);
    }
}
