//! Windows: named pipes (`\\.\pipe\name`, the default family, like Python's `AF_PIPE`) and
//! TCP.
//!
//! A named-pipe listener is [`mp_windows::named_pipe::PipeListener`]; TCP uses std's
//! sockets. Either way the connected handle becomes the same channel as a pipe end
//! ([`mp_windows::PipeChannel`]), which reads and writes both with overlapped I/O and tells
//! them apart for readiness (`PeekNamedPipe` or `WSAPoll`) and closing.

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::windows::io::{AsRawHandle, AsRawSocket, FromRawHandle, IntoRawSocket, RawHandle};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mp_ipc::deadline::Deadline;

use mp_ipc::handle::OwnedHandle;
use mp_windows::named_pipe::{self, PipeListener};

use crate::listener::{Address, ListenerError, TimedStream};

/// A bound, listening socket or named pipe, and the address a connection that wakes its
/// accept thread goes to.
pub(crate) struct SysListener {
    socket: Socket,
    wake_to: Address,
    woken: AtomicBool,
}

enum Socket {
    /// Non-blocking, so an accept after a readiness wait never blocks.
    Tcp(TcpListener),
    Pipe(PipeListener),
}

/// A connected stream, before it becomes a connection.
#[derive(Debug)]
pub(crate) enum SysStream {
    Tcp(TcpStream),
    Pipe(PipeStream),
}

/// One end of a connected named-pipe instance.
#[derive(Debug)]
pub(crate) struct PipeStream {
    handle: OwnedHandle,
    /// The listener's end (which can disconnect the client), not the client's.
    listener_end: bool,
    /// The bound on each read and write (`None`: block).
    timeout: Cell<Option<Duration>>,
}

impl PipeStream {
    fn new(handle: OwnedHandle, listener_end: bool) -> Self {
        Self {
            handle,
            listener_end,
            timeout: Cell::new(None),
        }
    }
}

/// A malformed pipe name is a bad address, anything else an I/O error.
fn pipe_error(e: io::Error) -> ListenerError {
    if e.kind() == io::ErrorKind::InvalidInput {
        ListenerError::InvalidAddress(e.to_string())
    } else {
        e.into()
    }
}

fn timeout_error(e: io::Error) -> ListenerError {
    if e.kind() == io::ErrorKind::TimedOut {
        ListenerError::Timeout
    } else {
        e.into()
    }
}

impl SysListener {
    /// How long one [`accept`](Self::accept) of the accept thread waits: a connection to
    /// the listener itself ([`wake`](Self::wake)) interrupts it, and this bounds the wait in
    /// case that connection cannot be made.
    pub(crate) const ACCEPT_SLICE: Option<Duration> = Some(Duration::from_secs(1));

    /// Binds `address`. `backlog` is not applied on Windows: a named-pipe listener keeps
    /// one instance waiting (a client finding it taken waits in `WaitNamedPipe`, within its
    /// connect timeout, until the next one is created), and Winsock ignores a second
    /// `listen` on a listening socket, so a TCP listener keeps std's backlog (`SOMAXCONN`).
    pub(crate) fn bind(
        address: &Address,
        _backlog: Option<u32>,
    ) -> Result<(Self, Address), ListenerError> {
        let (socket, actual, wake_to) = match address {
            Address::Tcp(a) => {
                let l = TcpListener::bind(a)?;
                l.set_nonblocking(true)?;
                let local = l.local_addr()?;
                // A listener on every interface is reached on the loopback one.
                let mut to = local;
                if to.ip().is_unspecified() {
                    to.set_ip(match to {
                        std::net::SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
                        std::net::SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
                    });
                }
                (Socket::Tcp(l), Address::Tcp(local), Address::Tcp(to))
            }
            Address::Pipe(name) => {
                let l = PipeListener::bind(name).map_err(pipe_error)?;
                (Socket::Pipe(l), address.clone(), address.clone())
            }
            other => return Err(ListenerError::InvalidFamily(other.to_string())),
        };
        Ok((
            Self {
                socket,
                wake_to,
                woken: AtomicBool::new(false),
            },
            actual,
        ))
    }

    /// Accepts one stream, waiting at most `timeout`; `None` on timeout and once
    /// [`wake`](Self::wake) was called. `take` is not asked: without fork, no other process
    /// shares the listener, so a connection taken here is stolen from nobody.
    pub(crate) fn accept(
        &self,
        timeout: Option<Duration>,
        _take: &dyn Fn() -> bool,
    ) -> io::Result<Option<SysStream>> {
        if self.woken.load(Ordering::SeqCst) {
            return Ok(None);
        }
        let r = self.accept_inner(timeout);
        if self.woken.load(Ordering::SeqCst) {
            return Ok(None);
        }
        r
    }

    fn accept_inner(&self, timeout: Option<Duration>) -> io::Result<Option<SysStream>> {
        match &self.socket {
            Socket::Pipe(l) => Ok(l
                .accept(timeout)?
                .map(|h| SysStream::Pipe(PipeStream::new(h, true)))),
            Socket::Tcp(l) => {
                let deadline = Deadline::from_timeout(timeout);
                let socket = l.as_raw_socket() as RawHandle;
                loop {
                    if !mp_windows::poll::wait_socket(socket, deadline.remaining())? {
                        return Ok(None);
                    }
                    match l.accept() {
                        Ok((s, _)) => {
                            // An accepted socket inherits the listener's non-blocking mode.
                            s.set_nonblocking(false)?;
                            let _ = s.set_nodelay(true);
                            return Ok(Some(SysStream::Tcp(s)));
                        }
                        // Taken by another accept, or the client gave up meanwhile.
                        Err(e)
                            if matches!(
                                e.kind(),
                                io::ErrorKind::WouldBlock
                                    | io::ErrorKind::Interrupted
                                    | io::ErrorKind::ConnectionReset
                                    | io::ErrorKind::ConnectionAborted
                            ) =>
                        {
                            if deadline.expired() {
                                return Ok(None);
                            }
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }

    /// Nothing to do: Windows has no fork, so no process shares another's waker.
    pub(crate) fn renew_waker(&self) -> io::Result<()> {
        Ok(())
    }

    /// Makes a waiting [`accept`](Self::accept), and every later one, return `None`: by
    /// connecting to the listener (the connection is dropped at once).
    pub(crate) fn wake(&self) {
        self.woken.store(true, Ordering::SeqCst);
        let _ = SysStream::connect(&self.wake_to, Some(Duration::from_secs(1)));
    }
}

impl SysStream {
    /// The peer's address, if it has one a client could be told about (TCP only: a
    /// named-pipe client has none).
    pub(crate) fn peer_address(&self) -> Option<Address> {
        match self {
            Self::Tcp(s) => s.peer_addr().ok().map(Address::Tcp),
            Self::Pipe(_) => None,
        }
    }

    pub(crate) fn connect(
        address: &Address,
        timeout: Option<Duration>,
    ) -> Result<Self, ListenerError> {
        match address {
            Address::Tcp(a) => {
                let s = match timeout {
                    Some(t) => TcpStream::connect_timeout(a, t).map_err(timeout_error)?,
                    None => TcpStream::connect(a)?,
                };
                let _ = s.set_nodelay(true);
                Ok(Self::Tcp(s))
            }
            Address::Pipe(name) => {
                let h = named_pipe::connect(name, timeout).map_err(|e| match e.kind() {
                    io::ErrorKind::InvalidInput => pipe_error(e),
                    _ => timeout_error(e),
                })?;
                Ok(Self::Pipe(PipeStream::new(h, false)))
            }
            other => Err(ListenerError::InvalidFamily(other.to_string())),
        }
    }

    pub(crate) fn into_handle(self) -> OwnedHandle {
        match self {
            // SAFETY: the socket's ownership moves into the handle; the channel made from it
            // knows it is a socket and closes it with `closesocket`.
            Self::Tcp(s) => unsafe { OwnedHandle::from_raw_handle(s.into_raw_socket() as _) },
            Self::Pipe(p) => p.handle,
        }
    }

    pub(crate) fn try_clone(&self) -> io::Result<Self> {
        Ok(match self {
            Self::Tcp(s) => Self::Tcp(s.try_clone()?),
            Self::Pipe(p) => Self::Pipe(PipeStream {
                handle: mp_windows::handle::duplicate_local(p.handle.as_raw_handle())?,
                listener_end: p.listener_end,
                timeout: Cell::new(p.timeout.get()),
            }),
        })
    }

    /// Ends the connection: the peer sees end of stream (a TCP peer at once, a pipe client
    /// when this is the listener's end), and our reads in progress return.
    pub(crate) fn shutdown(&self) {
        match self {
            Self::Tcp(s) => {
                let _ = s.shutdown(Shutdown::Both);
                named_pipe::shut_down(s.as_raw_socket() as RawHandle, false);
            }
            Self::Pipe(p) => named_pipe::shut_down(p.handle.as_raw_handle(), p.listener_end),
        }
    }
}

impl Read for SysStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.read(buf),
            Self::Pipe(p) => {
                named_pipe::read_timeout(p.handle.as_raw_handle(), buf, p.timeout.get())
            }
        }
    }
}

impl Write for SysStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.write(buf),
            Self::Pipe(p) => {
                named_pipe::write_timeout(p.handle.as_raw_handle(), buf, p.timeout.get())
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl TimedStream for SysStream {
    fn set_io_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Self::Tcp(s) => {
                s.set_read_timeout(t)?;
                s.set_write_timeout(t)
            }
            Self::Pipe(p) => {
                p.timeout.set(t);
                Ok(())
            }
        }
    }
}

/// A fresh local address named `name`: a named pipe `\\.\pipe\name`.
pub(crate) fn unique_local_address(name: &str) -> Address {
    Address::Pipe(format!(r"\\.\pipe\{name}"))
}
