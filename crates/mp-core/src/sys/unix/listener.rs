//! Unix: listening and connected sockets (TCP and Unix domain, abstract names on Linux).

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

use crate::listener::{Address, ListenerError, TimedStream};

/// A bound, listening socket.
pub(crate) enum SysListener {
    Tcp(TcpListener),
    /// The path to unlink when the listener is dropped (not for abstract names).
    Unix(UnixListener, Option<PathBuf>),
}

/// A connected stream socket, before it becomes a connection.
#[derive(Debug)]
pub(crate) enum SysStream {
    Tcp(TcpStream),
    Unix(UnixStream),
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
    pub(crate) fn bind(address: &Address) -> Result<(Self, Address), ListenerError> {
        match address {
            Address::Tcp(a) => {
                let l = TcpListener::bind(a)?;
                let actual = Address::Tcp(l.local_addr()?);
                Ok((Self::Tcp(l), actual))
            }
            Address::Unix(p) => {
                let l = UnixListener::bind(p)?;
                Ok((Self::Unix(l, Some(p.clone())), address.clone()))
            }
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Address::Abstract(name) => {
                let l = UnixListener::bind_addr(&abstract_addr(name)?)?;
                Ok((Self::Unix(l, None), address.clone()))
            }
            other => Err(ListenerError::InvalidFamily(other.to_string())),
        }
    }

    /// Accepts one stream, waiting at most `timeout`; `None` on timeout.
    pub(crate) fn accept(&self, timeout: Option<Duration>) -> io::Result<Option<SysStream>> {
        let fd = match self {
            Self::Tcp(l) => l.as_raw_fd(),
            Self::Unix(l, _) => l.as_raw_fd(),
        };
        if timeout.is_some() && mp_unix::poll::poll_many(&[fd], timeout)?.is_empty() {
            return Ok(None);
        }
        loop {
            let r = match self {
                Self::Tcp(l) => l.accept().map(|(s, _)| {
                    let _ = s.set_nodelay(true);
                    SysStream::Tcp(s)
                }),
                Self::Unix(l, _) => l.accept().map(|(s, _)| SysStream::Unix(s)),
            };
            match r {
                Ok(s) => return Ok(Some(s)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The peer gave up between the readiness and the accept.
                Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for SysListener {
    fn drop(&mut self) {
        if let Self::Unix(_, Some(path)) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl SysStream {
    /// The peer's address, if it has one a client could be told about.
    pub(crate) fn peer_address(&self) -> Option<Address> {
        match self {
            Self::Tcp(s) => s.peer_addr().ok().map(Address::Tcp),
            Self::Unix(s) => s
                .peer_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| Address::Unix(p.to_path_buf()))),
        }
    }

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
            Address::Unix(p) => Ok(Self::Unix(UnixStream::connect(p)?)),
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Address::Abstract(name) => {
                Ok(Self::Unix(UnixStream::connect_addr(&abstract_addr(name)?)?))
            }
            other => Err(ListenerError::InvalidFamily(other.to_string())),
        }
    }

    pub(crate) fn into_handle(self) -> OwnedFd {
        match self {
            Self::Tcp(s) => s.into(),
            Self::Unix(s) => s.into(),
        }
    }

    pub(crate) fn try_clone(&self) -> io::Result<Self> {
        Ok(match self {
            Self::Tcp(s) => Self::Tcp(s.try_clone()?),
            Self::Unix(s) => Self::Unix(s.try_clone()?),
        })
    }

    /// Shuts both directions down: the peer sees end of stream, our blocked reads return.
    pub(crate) fn shutdown(&self) {
        let _ = match self {
            Self::Tcp(s) => s.shutdown(Shutdown::Both),
            Self::Unix(s) => s.shutdown(Shutdown::Both),
        };
    }
}

impl Read for SysStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.read(buf),
            Self::Unix(s) => s.read(buf),
        }
    }
}

impl Write for SysStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.write(buf),
            Self::Unix(s) => s.write(buf),
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
            Self::Unix(s) => {
                s.set_read_timeout(t)?;
                s.set_write_timeout(t)
            }
        }
    }
}

/// A fresh local address named `name`: a Unix socket path in the temporary directory.
pub(crate) fn unique_local_address(name: &str) -> Address {
    Address::Unix(std::env::temp_dir().join(format!("{name}.sock")))
}
