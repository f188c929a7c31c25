//! A connected stream before it becomes a connection: TCP, the same on every platform, or
//! the platform's local stream ([`LocalStream`]: a Unix domain socket, a named-pipe
//! instance on Windows).

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use mp_ipc::handle::OwnedHandle;

use super::{Address, ListenerError, TimedStream};
use crate::sys::{tcp_into_handle, tcp_shutdown, LocalStream};

/// A connected stream, accepted or connected, before it becomes a connection.
#[derive(Debug)]
pub(crate) enum SysStream {
    Tcp(TcpStream),
    Local(LocalStream),
}

impl SysStream {
    /// A stream a listener accepted: blocking (an accepted socket may inherit the listener's
    /// non-blocking mode) and, for TCP, without Nagle's delay.
    pub(crate) fn accepted_tcp(s: TcpStream) -> io::Result<Self> {
        s.set_nonblocking(false)?;
        let _ = s.set_nodelay(true);
        Ok(Self::Tcp(s))
    }

    /// Connects to `address`, within `timeout` if given (a timeout is
    /// [`ListenerError::Timeout`]).
    pub(crate) fn connect(
        address: &Address,
        timeout: Option<Duration>,
    ) -> Result<Self, ListenerError> {
        match address {
            Address::Tcp(a) => {
                let s = match timeout {
                    Some(t) => TcpStream::connect_timeout(a, t).map_err(|e| {
                        if e.kind() == io::ErrorKind::TimedOut {
                            ListenerError::Timeout
                        } else {
                            e.into()
                        }
                    })?,
                    None => TcpStream::connect(a)?,
                };
                let _ = s.set_nodelay(true);
                Ok(Self::Tcp(s))
            }
            local => LocalStream::connect(local, timeout).map(Self::Local),
        }
    }

    /// The peer's address, if it has one a client could be told about.
    pub(crate) fn peer_address(&self) -> Option<Address> {
        match self {
            Self::Tcp(s) => s.peer_addr().ok().map(Address::Tcp),
            Self::Local(l) => l.peer_address(),
        }
    }

    /// The OS handle, owned, for the connection made from it.
    pub(crate) fn into_handle(self) -> OwnedHandle {
        match self {
            Self::Tcp(s) => tcp_into_handle(s),
            Self::Local(l) => l.into_handle(),
        }
    }

    pub(crate) fn try_clone(&self) -> io::Result<Self> {
        Ok(match self {
            Self::Tcp(s) => Self::Tcp(s.try_clone()?),
            Self::Local(l) => Self::Local(l.try_clone()?),
        })
    }

    /// Ends the connection: the peer sees end of stream, and our reads in progress return.
    pub(crate) fn shutdown(&self) {
        match self {
            Self::Tcp(s) => {
                let _ = s.shutdown(Shutdown::Both);
                tcp_shutdown(s);
            }
            Self::Local(l) => l.shutdown(),
        }
    }
}

impl Read for SysStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.read(buf),
            Self::Local(l) => l.read(buf),
        }
    }
}

impl Write for SysStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.write(buf),
            Self::Local(l) => l.write(buf),
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
            Self::Local(l) => l.set_io_timeout(t),
        }
    }
}
