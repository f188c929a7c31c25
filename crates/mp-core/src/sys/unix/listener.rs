//! Unix: listening and connected sockets (TCP and Unix domain, abstract names on Linux).

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use mp_ipc::deadline::Deadline;

use crate::listener::{Address, ListenerError, SysStream};

/// A bound, listening socket (non-blocking, so an accept after a readiness wait never
/// blocks), and a socket pair that wakes a thread waiting in [`accept`](Self::accept).
pub(crate) struct SysListener {
    socket: Socket,
    /// The waker of this process's accept thread (read end, write end).
    waker: Mutex<(UnixStream, UnixStream)>,
    /// The process that bound it (a forked child leaves the socket file alone).
    pid: u32,
}

enum Socket {
    Tcp(TcpListener),
    /// The path to unlink when the listener is dropped (not for abstract names).
    Unix(UnixListener, Option<PathBuf>),
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_addr(name: &[u8]) -> io::Result<std::os::unix::net::SocketAddr> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    std::os::unix::net::SocketAddr::from_abstract_name(name)
}

impl SysListener {
    /// How long one [`accept`](Self::accept) of the accept thread waits: for ever, since
    /// [`wake`](Self::wake) interrupts it.
    pub(crate) const ACCEPT_SLICE: Option<Duration> = None;

    /// Binds `address`; with `Some(backlog)`, sets the listen backlog to it (std listens
    /// with 128; calling `listen` again on the listening socket changes the queue length on
    /// Linux and the BSDs, and the kernel caps it at its own maximum, `somaxconn`).
    pub(crate) fn bind(
        address: &Address,
        backlog: Option<u32>,
    ) -> Result<(Self, Address), ListenerError> {
        let waker = Self::new_waker()?;
        let (socket, actual) = match address {
            Address::Tcp(a) => {
                let l = TcpListener::bind(a)?;
                l.set_nonblocking(true)?;
                let actual = Address::Tcp(l.local_addr()?);
                (Socket::Tcp(l), actual)
            }
            Address::Unix(p) => {
                let l = UnixListener::bind(p)?;
                if let Err(e) = l.set_nonblocking(true) {
                    let _ = std::fs::remove_file(p);
                    return Err(e.into());
                }
                (Socket::Unix(l, Some(p.clone())), address.clone())
            }
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Address::Abstract(name) => {
                let l = UnixListener::bind_addr(&abstract_addr(name)?)?;
                l.set_nonblocking(true)?;
                (Socket::Unix(l, None), address.clone())
            }
            other => return Err(ListenerError::InvalidFamily(other.to_string())),
        };
        let listener = Self {
            socket,
            waker: Mutex::new(waker),
            pid: std::process::id(),
        };
        if let Some(backlog) = backlog {
            // Dropping `listener` on failure removes a socket file it created.
            listener.set_backlog(backlog)?;
        }
        Ok((listener, actual))
    }

    /// Calls `listen` again with `backlog` (clamped to `c_int`).
    fn set_backlog(&self, backlog: u32) -> io::Result<()> {
        let fd = match &self.socket {
            Socket::Tcp(l) => l.as_raw_fd(),
            Socket::Unix(l, _) => l.as_raw_fd(),
        };
        let backlog = libc::c_int::try_from(backlog).unwrap_or(libc::c_int::MAX);
        // SAFETY: `fd` is the listening socket this value owns; `listen` only reads it.
        if unsafe { libc::listen(fd, backlog) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Accepts one stream, waiting at most `timeout`; `None` on timeout, once
    /// [`wake`](Self::wake) was called, and when a client waits but `take` says this process
    /// no longer wants it (it stays in the backlog, for another process sharing the socket).
    pub(crate) fn accept(
        &self,
        timeout: Option<Duration>,
        take: &dyn Fn() -> bool,
    ) -> io::Result<Option<SysStream>> {
        let fd = match &self.socket {
            Socket::Tcp(l) => l.as_raw_fd(),
            Socket::Unix(l, _) => l.as_raw_fd(),
        };
        let deadline = Deadline::from_timeout(timeout);
        let wake_fd = self
            .waker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .as_raw_fd();
        loop {
            let ready = mp_unix::poll::poll_many(&[fd, wake_fd], deadline.remaining())?;
            if ready.is_empty() || ready.contains(&1) || !take() {
                return Ok(None);
            }
            let r = match &self.socket {
                Socket::Tcp(l) => l.accept().and_then(|(s, _)| SysStream::accepted_tcp(s)),
                Socket::Unix(l, _) => l.accept().and_then(|(s, _)| {
                    // Some systems pass the listener's non-blocking mode on.
                    s.set_nonblocking(false)?;
                    Ok(SysStream::Local(LocalStream(s)))
                }),
            };
            match r {
                Ok(s) => return Ok(Some(s)),
                // The peer gave up between the readiness and the accept, or a signal came.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::Interrupted
                            | io::ErrorKind::ConnectionAborted
                    ) || e.raw_os_error() == Some(libc::ECONNABORTED) =>
                {
                    if deadline.expired() {
                        return Ok(None);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Makes a waiting [`accept`](Self::accept) of this process, and every later one, return
    /// `None` at once.
    pub(crate) fn wake(&self) {
        let _ = (&self.waker.lock().unwrap_or_else(|e| e.into_inner()).1).write(&[1]);
    }

    /// Gives this process a waker of its own (a forked child, whose copy of the parent's
    /// would wake the parent's accept thread too).
    pub(crate) fn renew_waker(&self) -> io::Result<()> {
        let fresh = Self::new_waker()?;
        *self.waker.lock().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    fn new_waker() -> io::Result<(UnixStream, UnixStream)> {
        let (rx, tx) = UnixStream::pair()?;
        tx.set_nonblocking(true)?;
        Ok((rx, tx))
    }
}

impl Drop for SysListener {
    fn drop(&mut self) {
        if let (Socket::Unix(_, Some(path)), true) = (&self.socket, self.pid == std::process::id())
        {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The local stream of this platform: a Unix domain socket (a path, or an abstract name on
/// Linux).
#[derive(Debug)]
pub(crate) struct LocalStream(UnixStream);

impl LocalStream {
    pub(crate) fn connect(
        address: &Address,
        _timeout: Option<Duration>,
    ) -> Result<Self, ListenerError> {
        match address {
            Address::Unix(p) => Ok(Self(UnixStream::connect(p)?)),
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Address::Abstract(name) => Ok(Self(UnixStream::connect_addr(&abstract_addr(name)?)?)),
            other => Err(ListenerError::InvalidFamily(other.to_string())),
        }
    }

    pub(crate) fn peer_address(&self) -> Option<Address> {
        let a = self.0.peer_addr().ok()?;
        a.as_pathname().map(|p| Address::Unix(p.to_path_buf()))
    }

    pub(crate) fn into_handle(self) -> OwnedFd {
        self.0.into()
    }

    pub(crate) fn try_clone(&self) -> io::Result<Self> {
        self.0.try_clone().map(Self)
    }

    pub(crate) fn shutdown(&self) {
        let _ = self.0.shutdown(Shutdown::Both);
    }

    pub(crate) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }

    pub(crate) fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    pub(crate) fn set_io_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.0.set_read_timeout(t)?;
        self.0.set_write_timeout(t)
    }
}

/// A TCP stream's descriptor, owned.
pub(crate) fn tcp_into_handle(s: TcpStream) -> OwnedFd {
    s.into()
}

/// Nothing more to do on Unix after `shutdown` of a TCP stream.
pub(crate) fn tcp_shutdown(_s: &TcpStream) {}

/// A fresh local address named `name`: a Unix socket path in the temporary directory.
pub(crate) fn unique_local_address(name: &str) -> Address {
    Address::Unix(std::env::temp_dir().join(format!("{name}.sock")))
}
