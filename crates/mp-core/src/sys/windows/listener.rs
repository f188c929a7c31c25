//! Windows: named pipes (`\\.\pipe\name`, the default family, like Python's `AF_PIPE`) and
//! TCP.
//!
//! A named-pipe listener is [`mp_windows::named_pipe::PipeListener`]; TCP uses std's
//! sockets. Either way the connected handle becomes the same channel as a pipe end
//! ([`mp_windows::PipeChannel`]), which reads and writes both with overlapped I/O and tells
//! them apart for readiness (`PeekNamedPipe` or `WSAPoll`) and closing.

use std::cell::Cell;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::net::{TcpListener, TcpStream};
use std::os::windows::io::{AsRawHandle, AsRawSocket, FromRawHandle, IntoRawSocket, RawHandle};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mp_ipc::deadline::Deadline;

use mp_ipc::handle::OwnedHandle;
use mp_windows::named_pipe::{self, PipeListener};

use crate::listener::{Address, ListenerError, SysStream};

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

/// The local stream of this platform: one end of a connected named-pipe instance.
#[derive(Debug)]
pub(crate) struct LocalStream {
    handle: OwnedHandle,
    /// The listener's end (which can disconnect the client), not the client's.
    listener_end: bool,
    /// The bound on each read and write (`None`: block).
    timeout: Cell<Option<Duration>>,
}

impl LocalStream {
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
                .map(|h| SysStream::Local(LocalStream::new(h, true)))),
            Socket::Tcp(l) => {
                let deadline = Deadline::from_timeout(timeout);
                let socket = l.as_raw_socket() as RawHandle;
                loop {
                    if !mp_windows::poll::wait_socket(socket, deadline.remaining())? {
                        return Ok(None);
                    }
                    match l.accept() {
                        Ok((s, _)) => return SysStream::accepted_tcp(s).map(Some),
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

impl LocalStream {
    pub(crate) fn connect(
        address: &Address,
        timeout: Option<Duration>,
    ) -> Result<Self, ListenerError> {
        match address {
            Address::Pipe(name) => {
                let h = named_pipe::connect(name, timeout).map_err(|e| match e.kind() {
                    io::ErrorKind::InvalidInput => pipe_error(e),
                    io::ErrorKind::TimedOut => ListenerError::Timeout,
                    _ => e.into(),
                })?;
                Ok(Self::new(h, false))
            }
            other => Err(ListenerError::InvalidFamily(other.to_string())),
        }
    }

    /// None: a named-pipe client has no address a client could be told about.
    pub(crate) fn peer_address(&self) -> Option<Address> {
        None
    }

    pub(crate) fn into_handle(self) -> OwnedHandle {
        self.handle
    }

    pub(crate) fn try_clone(&self) -> io::Result<Self> {
        Ok(Self {
            handle: mp_windows::handle::duplicate_local(self.handle.as_raw_handle())?,
            listener_end: self.listener_end,
            timeout: Cell::new(self.timeout.get()),
        })
    }

    /// The client sees end of stream when this is the listener's end; our reads in
    /// progress return.
    pub(crate) fn shutdown(&self) {
        named_pipe::shut_down(self.handle.as_raw_handle(), self.listener_end)
    }

    pub(crate) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        named_pipe::read_timeout(self.handle.as_raw_handle(), buf, self.timeout.get())
    }

    pub(crate) fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        named_pipe::write_timeout(self.handle.as_raw_handle(), buf, self.timeout.get())
    }

    pub(crate) fn set_io_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.timeout.set(t);
        Ok(())
    }
}

/// A TCP socket as an owned handle (the channel made from it knows it is a socket and closes
/// it with `closesocket`).
pub(crate) fn tcp_into_handle(s: TcpStream) -> OwnedHandle {
    // SAFETY: the socket's ownership moves into the handle.
    unsafe { OwnedHandle::from_raw_handle(s.into_raw_socket() as _) }
}

/// After `shutdown` of a TCP stream: cancels our reads in progress (overlapped I/O does not
/// return on `shutdown` alone).
pub(crate) fn tcp_shutdown(s: &TcpStream) {
    named_pipe::shut_down(s.as_raw_socket() as RawHandle, false);
}

/// A fresh local address named `name`: a named pipe `\\.\pipe\name`.
pub(crate) fn unique_local_address(name: &str) -> Address {
    Address::Pipe(format!(r"\\.\pipe\{name}"))
}
