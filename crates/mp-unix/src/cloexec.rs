//! Close-on-exec without races, and the fork lock where the OS cannot give that.
//!
//! A descriptor mp creates must not leak into a program that another thread `exec`s. Linux
//! and FreeBSD create every descriptor mp makes close-on-exec in the same call
//! (`SOCK_CLOEXEC`, `pipe2`, `MSG_CMSG_CLOEXEC`, `memfd_create`, `shm_open`). macOS has no
//! such flag for pipes, socket pairs and descriptors received with `SCM_RIGHTS` (nor does
//! the portable POSIX flavour, `posix-generic`): the flag is set by a second call, and a
//! `fork` by another thread between the two calls would hand the descriptor to the program
//! the child `exec`s.
//!
//! The *fork lock* closes that window for the children mp starts: making such a descriptor
//! holds the lock shared ([`creating`]), from before the descriptor exists until it is
//! close-on-exec, and mp's own `fork` and spawn hold it exclusively ([`forking`]). Holders of
//! the shared side never block while holding it (a receive that must wait does so before
//! taking it). What the lock cannot cover: a `fork` made outside mp (`std::process::Command`
//! or `libc::fork` called by the program itself) does not take it, so on macOS a descriptor
//! mp is receiving at that instant can still reach that program. Where [`ATOMIC`] is true
//! the lock is never taken and costs nothing.

use std::cell::Cell;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Whether this platform makes descriptors close-on-exec atomically (Linux, FreeBSD): then
/// the fork lock is not needed and never taken.
pub const ATOMIC: bool = cfg!(any(mp_os = "linux", mp_os = "freebsd"));

static FORK_LOCK: RwLock<()> = RwLock::new(());

thread_local! {
    /// Whether this thread holds the exclusive side: then nobody else can fork, and
    /// [`creating`] needs (and must take) nothing.
    static FORKING: Cell<bool> = const { Cell::new(false) };
}

/// Held while a descriptor is made and marked close-on-exec in two steps; see [`creating`].
#[must_use = "the window is only covered while the guard lives"]
pub struct CreateGuard {
    _guard: Option<RwLockReadGuard<'static, ()>>,
}

/// Held across mp's `fork` and spawn; see [`forking`].
#[must_use = "the fork is only covered while the guard lives"]
pub struct ForkGuard {
    guard: Option<RwLockWriteGuard<'static, ()>>,
}

impl Drop for ForkGuard {
    fn drop(&mut self) {
        if self.guard.take().is_some() {
            FORKING.with(|f| f.set(false));
        }
    }
}

/// Takes the shared side of the fork lock (nothing where [`ATOMIC`], or in the thread that
/// holds [`forking`]): hold it from before a descriptor is created until it is
/// close-on-exec, without blocking in between.
///
/// ```
/// let _g = mp_unix::cloexec::creating();
/// // create a descriptor, then mp_unix::cloexec::set(fd)
/// ```
pub fn creating() -> CreateGuard {
    let needed = !ATOMIC && !FORKING.with(Cell::get);
    CreateGuard {
        _guard: needed.then(|| FORK_LOCK.read().unwrap_or_else(|e| e.into_inner())),
    }
}

/// Takes the exclusive side of the fork lock (nothing where [`ATOMIC`]; nothing more if this
/// thread holds it already): hold it across a `fork` (both processes drop it afterwards) or
/// a spawn, so that no descriptor is between its creation and its close-on-exec flag at that
/// instant, and a forked child starts with the lock free.
///
/// ```
/// let g = mp_unix::cloexec::forking();
/// drop(g); // fork or spawn while it is held
/// ```
pub fn forking() -> ForkGuard {
    if ATOMIC || FORKING.with(Cell::get) {
        return ForkGuard { guard: None };
    }
    let guard = FORK_LOCK.write().unwrap_or_else(|e| e.into_inner());
    FORKING.with(|f| f.set(true));
    ForkGuard { guard: Some(guard) }
}

/// Marks `fd` close-on-exec.
///
/// ```
/// use std::os::fd::AsRawFd;
/// let f = std::fs::File::open("/").unwrap();
/// mp_unix::cloexec::set(f.as_raw_fd()).unwrap();
/// ```
pub fn set(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor number; a bad one is EBADF, reported below.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A pipe, both ends close-on-exec (and non-blocking if asked): `(read end, write end)`.
/// Atomic where the OS has `pipe2`; under the fork lock elsewhere.
///
/// ```
/// let (r, w) = mp_unix::cloexec::pipe(true).unwrap();
/// drop((r, w));
/// ```
pub fn pipe(nonblocking: bool) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    #[cfg(any(mp_os = "linux", mp_os = "freebsd"))]
    {
        let flags = libc::O_CLOEXEC | if nonblocking { libc::O_NONBLOCK } else { 0 };
        // SAFETY: pipe2 writes two descriptors into the array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), flags) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: two fresh descriptors we own.
        Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
    }
    #[cfg(not(any(mp_os = "linux", mp_os = "freebsd")))]
    {
        let _g = creating();
        // SAFETY: pipe writes two descriptors into the array.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: two fresh descriptors we own.
        let ends = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        for fd in fds {
            set(fd)?;
            if nonblocking {
                // SAFETY: fcntl on a descriptor we own.
                unsafe {
                    let fl = libc::fcntl(fd, libc::F_GETFL);
                    if fl < 0 || libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
            }
        }
        Ok(ends)
    }
}

/// What a `recvmsg` that may bring descriptors adds to its flags: `MSG_CMSG_CLOEXEC` where
/// the OS has it.
#[cfg(any(mp_os = "linux", mp_os = "freebsd"))]
const RECV_CLOEXEC: libc::c_int = libc::MSG_CMSG_CLOEXEC;

/// Runs one receive that may bring descriptors: `recv(flags)` makes one `recvmsg` with
/// `flags` added to its own and takes the descriptors it brought, passing each to
/// [`received`]. Signal interruptions are retried. With `blocking` the receive waits for
/// data; otherwise it fails with `WouldBlock`.
///
/// Where the OS has `MSG_CMSG_CLOEXEC` that flag is added and nothing else happens. Elsewhere
/// the wait happens first (a `poll` without the lock), then the receive runs without waiting
/// under the shared fork lock, so every descriptor it brings is close-on-exec before a fork
/// of mp can happen.
pub(crate) fn receive<T>(
    fd: RawFd,
    blocking: bool,
    mut recv: impl FnMut(libc::c_int) -> io::Result<T>,
) -> io::Result<T> {
    loop {
        #[cfg(any(mp_os = "linux", mp_os = "freebsd"))]
        let r = {
            let _ = (fd, blocking);
            recv(RECV_CLOEXEC)
        };
        #[cfg(not(any(mp_os = "linux", mp_os = "freebsd")))]
        let r = {
            if blocking {
                crate::poll::poll_readable(fd, None)?;
            }
            let _g = creating();
            match recv(libc::MSG_DONTWAIT) {
                // Another reader took what woke us: wait again.
                Err(e) if blocking && e.kind() == io::ErrorKind::WouldBlock => continue,
                r => r,
            }
        };
        match r {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// Takes ownership of a descriptor a [`receive`] brought, making it close-on-exec where the
/// receive could not (it runs under the fork lock there).
///
/// # Safety
/// `fd` must be a fresh descriptor nobody else owns.
pub(crate) unsafe fn received(fd: RawFd) -> OwnedFd {
    // SAFETY: per the contract.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    if !ATOMIC {
        // Failure means a bad descriptor, which the caller's use of it reports.
        let _ = set(fd);
    }
    owned
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;

    fn is_cloexec(fd: &OwnedFd) -> bool {
        // SAFETY: F_GETFD on a live descriptor.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) & libc::FD_CLOEXEC != 0 }
    }

    #[test]
    fn pipes_are_close_on_exec_and_non_blocking_when_asked() {
        let (r, w) = pipe(true).unwrap();
        assert!(is_cloexec(&r) && is_cloexec(&w));
        let mut b = [0u8; 1];
        // SAFETY: a read into a live buffer.
        let n = unsafe { libc::read(r.as_raw_fd(), b.as_mut_ptr().cast(), 1) };
        assert_eq!(n, -1);
        assert_eq!(io::Error::last_os_error().kind(), io::ErrorKind::WouldBlock);
        let (r, _w) = pipe(false).unwrap();
        // SAFETY: F_GETFL on a live descriptor.
        let flags = unsafe { libc::fcntl(r.as_raw_fd(), libc::F_GETFL) };
        assert_eq!(flags & libc::O_NONBLOCK, 0);
    }

    #[test]
    fn the_forking_thread_may_still_make_descriptors() {
        let f = forking();
        let (r, w) = pipe(false).unwrap();
        let nested = forking();
        drop((nested, creating()));
        drop(f);
        drop((r, w, creating()));
    }

    #[test]
    fn a_fork_waits_for_a_descriptor_being_made() {
        let g = creating();
        let t = std::thread::spawn(|| drop(forking()));
        if !ATOMIC {
            // The shared side keeps `forking` out until it is let go.
            std::thread::sleep(std::time::Duration::from_millis(50));
            assert!(!t.is_finished());
        }
        drop(g);
        t.join().unwrap();
    }
}
