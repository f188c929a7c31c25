//! Connections between unrelated processes: Python's `multiprocessing.connection.Listener`,
//! `Client` and `AuthenticationError`.
//!
//! A [`Listener`] binds an [`Address`] (TCP, a Unix socket path, on Linux an abstract
//! Unix socket name, on Windows a named pipe) and accepts connections; [`Client::connect`] connects to one. Both give
//! the same typed [`Connection<T>`](crate::Connection) as [`pipe`](crate::pipe), so
//! everything a pipe end does (values, raw bytes, `poll`, [`wait`](crate::wait), passing it
//! to a child) works on it.
//!
//! With an authkey, each new connection first runs a mutual HMAC-SHA256 challenge-response
//! (see `auth.rs` for the messages): the listener checks that the client knows the key, then
//! the client checks the listener. A wrong key is an [`AuthenticationError`] on both sides,
//! and the listener keeps serving. The handshake happens before any message is decoded; its
//! messages are read with a 256-byte limit and a deadline (the handshake timeout, 20 s by
//! default), so garbage, a huge length or silence cost a bounded amount of memory and time.
//! An empty key is a key like any other (not "no authentication"); `None` skips the handshake
//! on both sides.
//!
//! **What the key protects.** The authkey decides *who may connect*, not *what a connected
//! peer may send*: an authenticated peer can still send any bytes. Messages are decoded with
//! `postcard` into the receiver's type, which cannot run code (unlike Python's pickle), and
//! bad frames are typed errors, but a peer holding the key is trusted with the data it sends.
//! The traffic itself is not encrypted: over a network, use a tunnel (SSH, TLS, WireGuard)
//! for confidentiality.
//!
//! Platforms: TCP and Unix sockets on Unix; TCP and named pipes (`\\.\pipe\name`) on
//! Windows, where a named pipe is the default local family ([`Address::unique_local`]), as
//! `AF_PIPE` is for Python. A pipe listener accepts local clients only, and a second
//! listener on a name in use fails with `AddrInUse`, as a socket address does. One
//! difference: a pipe name exists while any of its instances is open, so after a pipe
//! listener closes, a client finds the name busy (and waits for its timeout) rather than
//! absent as long as connections the listener accepted are still open.
//!
//! ```
//! use mp_core::listener::{Address, Client, Listener};
//!
//! let listener = Listener::bind(&"127.0.0.1:0".parse().unwrap(), Some(b"secret")).unwrap();
//! let address = listener.address().clone();
//! let client = std::thread::spawn(move || {
//!     let conn = Client::connect::<String>(&address, Some(b"secret")).unwrap();
//!     conn.send(&"hello".to_string()).unwrap();
//! });
//! let conn = listener.accept::<String>().unwrap();
//! assert_eq!(conn.recv().unwrap(), "hello");
//! client.join().unwrap();
//! ```

pub(crate) mod auth;
mod error;
#[cfg(unix)]
mod sys_unix;
#[cfg(unix)]
pub(crate) use sys_unix::{SysListener, SysStream};
#[cfg(windows)]
mod sys_windows;
#[cfg(windows)]
pub(crate) use sys_windows::{SysListener, SysStream};

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use auth::MAX_HANDSHAKE_MESSAGE;
pub use error::{AuthenticationError, ListenerError};

use crate::connection::RawConnection;
use crate::Connection;

/// The default bound on a handshake (accept side and connect side).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

/// Where a [`Listener`] listens. Parsed from text as Python infers the family:
/// `host:port` (an IP address) is TCP, `\\.\pipe\name` a Windows named pipe, a leading NUL
/// byte (or `@`) an abstract Unix socket name (Linux), anything else a Unix socket path.
///
/// ```
/// use mp_core::listener::Address;
/// assert!(matches!("127.0.0.1:0".parse::<Address>().unwrap(), Address::Tcp(_)));
/// assert!(matches!("/tmp/x.sock".parse::<Address>().unwrap(), Address::Unix(_)));
/// assert!(matches!(r"\\.\pipe\x".parse::<Address>().unwrap(), Address::Pipe(_)));
/// assert!(matches!("@name".parse::<Address>().unwrap(), Address::Abstract(_)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Address {
    /// A TCP address (port 0: any free port; [`Listener::address`] tells which).
    Tcp(SocketAddr),
    /// A Unix domain socket path (Unix only). The listener removes the file when closed.
    Unix(PathBuf),
    /// A name in Linux's abstract Unix socket namespace (no file; Linux only).
    Abstract(Vec<u8>),
    /// A Windows named pipe, `\\.\pipe\name` (Windows only).
    Pipe(String),
}

impl Address {
    /// A fresh local address unique to this call: a Unix socket path in the temporary
    /// directory (Unix), a named pipe `\\.\pipe\mp-...` (Windows).
    pub fn unique_local() -> Self {
        let mut r = [0u8; 8];
        let _ = getrandom::fill(&mut r);
        let name = format!("mp-{}-{:016x}", std::process::id(), u64::from_le_bytes(r));
        if cfg!(windows) {
            Address::Pipe(format!(r"\\.\pipe\{name}"))
        } else {
            Address::Unix(std::env::temp_dir().join(format!("{name}.sock")))
        }
    }
}

impl From<SocketAddr> for Address {
    fn from(a: SocketAddr) -> Self {
        Address::Tcp(a)
    }
}

impl FromStr for Address {
    type Err = ListenerError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(ListenerError::InvalidAddress("empty address".into()));
        }
        if s.starts_with(r"\\") {
            return Ok(Address::Pipe(s.to_string()));
        }
        if let Some(name) = s.strip_prefix('\0').or_else(|| s.strip_prefix('@')) {
            return Ok(Address::Abstract(name.as_bytes().to_vec()));
        }
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(Address::Tcp(a));
        }
        Ok(Address::Unix(PathBuf::from(s)))
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp(a) => write!(f, "{a}"),
            Address::Unix(p) => write!(f, "{}", p.display()),
            Address::Abstract(n) => write!(f, "@{}", String::from_utf8_lossy(n)),
            Address::Pipe(p) => write!(f, "{p}"),
        }
    }
}

/// A listening socket that hands out authenticated [`Connection`]s (Python's `Listener`).
///
/// Closing (or dropping) it stops listening and removes a Unix socket file it created.
pub struct Listener {
    inner: Option<SysListener>,
    address: Address,
    authkey: Option<Vec<u8>>,
    handshake_timeout: Duration,
    last_accepted: Mutex<Option<Address>>,
}

impl Listener {
    /// Binds `address`. With `Some(key)`, each accepted client must prove it knows `key`
    /// (and is shown that the listener does). A live listener on the same address makes this
    /// fail with an `AddrInUse` I/O error; an address of a family this platform lacks is
    /// [`ListenerError::InvalidFamily`].
    pub fn bind(address: &Address, authkey: Option<&[u8]>) -> Result<Self, ListenerError> {
        let (inner, address) = SysListener::bind(address)?;
        Ok(Self {
            inner: Some(inner),
            address,
            authkey: authkey.map(<[u8]>::to_vec),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            last_accepted: Mutex::new(None),
        })
    }

    /// The address clients connect to (with the real port when bound to port 0).
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// The address of the last client accepted (Python's `last_accepted`): the peer's
    /// address for TCP, its socket path for a Unix client bound to one; `None` before the
    /// first accept, for an unnamed Unix client and for a named-pipe client.
    ///
    /// ```
    /// use mp_core::listener::{Address, Client, Listener};
    /// let listener = Listener::bind(&"127.0.0.1:0".parse().unwrap(), None).unwrap();
    /// let address = listener.address().clone();
    /// assert_eq!(listener.last_accepted(), None);
    /// let t = std::thread::spawn(move || Client::connect::<u8>(&address, None).unwrap());
    /// let _conn = listener.accept::<u8>().unwrap();
    /// let Some(Address::Tcp(peer)) = listener.last_accepted() else { panic!() };
    /// assert!(peer.ip().is_loopback());
    /// t.join().unwrap();
    /// ```
    pub fn last_accepted(&self) -> Option<Address> {
        self.last_accepted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Bounds how long an accepted client may take to complete the handshake.
    pub fn set_handshake_timeout(&mut self, timeout: Duration) {
        self.handshake_timeout = timeout;
    }

    /// Waits for a client and authenticates it. A client with the wrong key is
    /// [`ListenerError::Authentication`]; the listener stays usable.
    pub fn accept<T>(&self) -> Result<Connection<T>, ListenerError> {
        self.accept_inner(None)
    }

    /// Like [`accept`](Self::accept), failing with [`ListenerError::Timeout`] when no client
    /// arrives within `timeout` (the handshake has its own bound).
    pub fn accept_timeout<T>(&self, timeout: Duration) -> Result<Connection<T>, ListenerError> {
        self.accept_inner(Some(timeout))
    }

    fn accept_inner<T>(&self, timeout: Option<Duration>) -> Result<Connection<T>, ListenerError> {
        let stream = self.accept_stream(timeout)?.ok_or(ListenerError::Timeout)?;
        let raw = authenticate_server(stream, self.authkey.as_deref(), self.handshake_timeout)?;
        Ok(Connection::from_raw(raw))
    }

    /// Accepts a stream without authenticating it yet (the manager authenticates on the
    /// client's own thread, so a slow client holds up nobody else).
    pub(crate) fn accept_stream(
        &self,
        timeout: Option<Duration>,
    ) -> Result<Option<SysStream>, ListenerError> {
        let inner = self.inner.as_ref().ok_or(ListenerError::Closed)?;
        let stream = inner.accept(timeout)?;
        if let Some(s) = &stream {
            *self.last_accepted.lock().unwrap_or_else(|e| e.into_inner()) = s.peer_address();
        }
        Ok(stream)
    }

    /// Stops listening. Later `accept`s fail with [`ListenerError::Closed`].
    pub fn close(&mut self) {
        self.inner = None;
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.is_none()
    }
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("address", &self.address)
            .field("closed", &self.inner.is_none())
            .finish()
    }
}

/// The listener's half of a new connection: handshake, then the connection.
pub(crate) fn authenticate_server(
    mut stream: SysStream,
    authkey: Option<&[u8]>,
    timeout: Duration,
) -> Result<RawConnection, ListenerError> {
    use auth::TimedStream;
    if let Some(key) = authkey {
        auth::serve(&mut stream, key, timeout)?;
    }
    stream.set_io_timeout(None)?;
    Ok(RawConnection::from_handle(stream.into_handle())?)
}

/// The client's half: connect, handshake, then the connection.
pub(crate) fn connect_raw(
    address: &Address,
    authkey: Option<&[u8]>,
    timeout: Option<Duration>,
) -> Result<(RawConnection, SysStream), ListenerError> {
    use auth::TimedStream;
    let mut stream = SysStream::connect(address, timeout)?;
    if let Some(key) = authkey {
        auth::answer(
            &mut stream,
            key,
            timeout.unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT),
        )?;
    }
    stream.set_io_timeout(None)?;
    let keep = stream.try_clone()?;
    Ok((RawConnection::from_handle(stream.into_handle())?, keep))
}

/// Connects to a [`Listener`] (Python's `multiprocessing.connection.Client`).
#[derive(Debug)]
pub struct Client(());

impl Client {
    /// Connects to `address` and authenticates with `authkey` (which must match the
    /// listener's: both `None`, or the same key). A wrong key is
    /// [`ListenerError::Authentication`].
    pub fn connect<T>(
        address: &Address,
        authkey: Option<&[u8]>,
    ) -> Result<Connection<T>, ListenerError> {
        let (raw, _) = connect_raw(address, authkey, None)?;
        Ok(Connection::from_raw(raw))
    }

    /// Like [`connect`](Self::connect), bounding the TCP connection and the handshake by
    /// `timeout` each (a Unix socket connects at once or fails at once; a named pipe whose
    /// instances are all busy is waited for within `timeout`, and within 20 s by
    /// [`connect`](Self::connect)).
    pub fn connect_timeout<T>(
        address: &Address,
        authkey: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Connection<T>, ListenerError> {
        let (raw, _) = connect_raw(address, authkey, Some(timeout))?;
        Ok(Connection::from_raw(raw))
    }
}
