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
//! messages are read with a 256-byte limit and a deadline (5 s by default on the listener's
//! side, 20 s on the client's), so garbage, a huge length or silence cost a bounded amount of
//! memory and time. Handshakes run in the background, several at once and a bounded number
//! per peer address (the oldest pending one makes way for a new connection), so a silent or
//! slow client delays nobody else: `accept` returns clients in the order their handshakes
//! finish (Python's `accept` authenticates inline: one silent client stops it). As with
//! Python, connections are taken from the OS only while an `accept` waits, so a listener
//! inherited by a forked child serves whichever process asks, and neither takes the other's
//! clients. See `docs/security.md`.
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

mod accept;
pub(crate) mod auth;
mod error;
mod stream;
pub(crate) use crate::sys::SysListener;
pub(crate) use auth::TimedStream;
pub(crate) use stream::SysStream;
pub mod python;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mp_ipc::deadline::Deadline;

use serde::{Deserialize, Serialize};

pub use accept::{
    DEFAULT_MAX_PENDING_HANDSHAKES, DEFAULT_MAX_PENDING_PER_PEER, MAX_READY, MAX_READY_ERRORS,
};
pub use auth::MAX_HANDSHAKE_MESSAGE;
pub use error::{AuthenticationError, ListenerError};

use crate::connection::RawConnection;
use crate::Connection;

/// The default bound on a client's handshake ([`Client::connect`]; `connect_timeout` sets
/// its own), retries included.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

/// The default bound on the handshake of each client a [`Listener`] accepts.
pub const DEFAULT_LISTENER_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

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
        crate::sys::unique_local_address(&name)
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
/// While an [`accept`](Self::accept) waits, connections are accepted and authenticated in
/// the background as they arrive (see the [module documentation](self)), and `accept`
/// returns the next one done; meanwhile, clients wait in the kernel's backlog. A
/// client that stays silent, is slow, or sends garbage delays nobody: its handshake runs on
/// its own, bounded in time ([`set_handshake_timeout`](Self::set_handshake_timeout)) and in
/// number ([`set_max_pending_handshakes`](Self::set_max_pending_handshakes)).
///
/// Closing (or dropping) it stops listening and removes a Unix socket file it created.
pub struct Listener {
    /// The listening socket and its accept thread; `None` once closed.
    running: Mutex<Option<Running>>,
    shared: Arc<accept::Shared>,
    address: Address,
    last_accepted: Mutex<Option<Address>>,
}

struct Running {
    socket: Arc<SysListener>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The process the thread runs in.
    pid: u32,
}

impl Running {
    fn start(socket: Arc<SysListener>, shared: &Arc<accept::Shared>) -> std::io::Result<Self> {
        let (s, sh) = (socket.clone(), shared.clone());
        let thread = std::thread::Builder::new()
            .name("mp-listener-accept".into())
            .spawn(move || accept::run(s, sh))?;
        Ok(Self {
            socket,
            thread: Some(thread),
            pid: std::process::id(),
        })
    }
}

impl Listener {
    /// Binds `address`. With `Some(key)`, each accepted client must prove it knows `key`
    /// (and is shown that the listener does). A live listener on the same address makes this
    /// fail with an `AddrInUse` I/O error; an address of a family this platform lacks is
    /// [`ListenerError::InvalidFamily`].
    pub fn bind(address: &Address, authkey: Option<&[u8]>) -> Result<Self, ListenerError> {
        Self::bind_inner(address, authkey, None)
    }

    /// Like [`bind`](Self::bind), with the length of the queue of connections the OS holds
    /// until they are taken (Python's `Listener(address, backlog=...)`; [`bind`](Self::bind)
    /// keeps std's default, 128 on Unix). Connections are taken from the queue only while an
    /// [`accept`](Self::accept) waits, so between accepts the queue is what holds clients:
    /// when it is full, further clients wait in their connect (a Unix socket client blocks,
    /// a TCP client's SYN is retried by its OS) until an accept drains it, or fail with
    /// their connect timeout.
    ///
    /// Platforms: on Unix the socket's `listen` is called again with `backlog` (the kernel
    /// caps it at its maximum, `somaxconn`; zero is the smallest queue the kernel allows).
    /// On Windows the value is accepted and not applied: a named-pipe listener keeps one
    /// pipe instance ready (a client that finds it taken waits, within its connect timeout,
    /// for the next), and Winsock ignores a second `listen`, so TCP keeps its default
    /// backlog.
    ///
    /// ```
    /// use mp_core::listener::{Address, Client, Listener};
    ///
    /// let listener =
    ///     Listener::bind_with_backlog(&"127.0.0.1:0".parse().unwrap(), Some(b"key"), 2).unwrap();
    /// let address = listener.address().clone();
    /// let clients = std::thread::spawn(move || {
    ///     for i in 0..4u32 {
    ///         let conn = Client::connect::<u32>(&address, Some(b"key")).unwrap();
    ///         conn.send(&i).unwrap();
    ///     }
    /// });
    /// // Handshakes finish concurrently: clients may come back in any order.
    /// let mut got: Vec<u32> = (0..4).map(|_| listener.accept::<u32>().unwrap().recv().unwrap()).collect();
    /// got.sort_unstable();
    /// assert_eq!(got, [0, 1, 2, 3]);
    /// clients.join().unwrap();
    /// ```
    pub fn bind_with_backlog(
        address: &Address,
        authkey: Option<&[u8]>,
        backlog: u32,
    ) -> Result<Self, ListenerError> {
        Self::bind_inner(address, authkey, Some(backlog))
    }

    fn bind_inner(
        address: &Address,
        authkey: Option<&[u8]>,
        backlog: Option<u32>,
    ) -> Result<Self, ListenerError> {
        let (socket, address) = SysListener::bind(address, backlog)?;
        let shared = accept::Shared::new(
            authkey,
            accept::Limits {
                timeout: DEFAULT_LISTENER_HANDSHAKE_TIMEOUT,
                max_pending: DEFAULT_MAX_PENDING_HANDSHAKES,
                max_per_peer: DEFAULT_MAX_PENDING_PER_PEER,
            },
        );
        let running = Running::start(Arc::new(socket), &shared)?;
        Ok(Self {
            running: Mutex::new(Some(running)),
            shared,
            address,
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

    /// Bounds how long an accepted client may take to complete the handshake, counted from
    /// the moment its connection is taken (default
    /// [`DEFAULT_LISTENER_HANDSHAKE_TIMEOUT`]; `Duration::MAX`: no bound). Applies to
    /// connections taken after the call.
    pub fn set_handshake_timeout(&mut self, timeout: Duration) {
        self.shared.set_limits(|l| l.timeout = timeout);
    }

    /// Bounds the handshakes in progress at once: `total` from all peers, `per_peer` from one
    /// peer address (an IPv4 address or IPv6 /64 prefix; every local client counts as one
    /// peer). When a bound is reached, a new connection pushes out the oldest pending
    /// handshake of its peer (or, for the total, of the peer with the most), whose
    /// connection is closed: a flood of silent connections cannot lock a real client out.
    /// Defaults: [`DEFAULT_MAX_PENDING_HANDSHAKES`], [`DEFAULT_MAX_PENDING_PER_PEER`]; zero
    /// counts as one. [`Client`]s of this crate retry a handshake cut short this way.
    ///
    /// ```
    /// use mp_core::listener::Listener;
    /// let mut l = Listener::bind(&"127.0.0.1:0".parse().unwrap(), Some(b"key")).unwrap();
    /// l.set_max_pending_handshakes(16, 4);
    /// ```
    pub fn set_max_pending_handshakes(&mut self, total: usize, per_peer: usize) {
        self.shared.set_limits(|l| {
            l.max_pending = total;
            l.max_per_peer = per_peer;
        });
    }

    /// Waits for a client and authenticates it. A client that failed the handshake (a wrong
    /// key, garbage, or silence until its deadline) is reported as
    /// [`ListenerError::Authentication`]; the listener stays usable, and the next call
    /// returns the next client. Handshakes run concurrently, so clients come back in the
    /// order they finish, not the order they connected.
    pub fn accept<T>(&self) -> Result<Connection<T>, ListenerError> {
        self.accept_inner(Deadline::NEVER)
    }

    /// Like [`accept`](Self::accept), failing with [`ListenerError::Timeout`] when no client
    /// has finished its handshake within `timeout` (`Duration::MAX`: no bound).
    pub fn accept_timeout<T>(&self, timeout: Duration) -> Result<Connection<T>, ListenerError> {
        self.accept_inner(Deadline::after(timeout))
    }

    fn accept_inner<T>(&self, deadline: Deadline) -> Result<Connection<T>, ListenerError> {
        let stream = self.accept_stream(deadline)?;
        Ok(Connection::from_raw(RawConnection::from_handle(
            stream.into_handle(),
        )?))
    }

    /// The next authenticated stream, waiting until `deadline`.
    pub(crate) fn accept_stream(&self, deadline: Deadline) -> Result<SysStream, ListenerError> {
        if self.shared.adopt_after_fork() {
            // A forked child: this process has no accept thread yet.
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(r) = running.as_mut() {
                // The parent's thread does not exist here: forget it, never join it.
                std::mem::forget(r.thread.take());
                r.socket.renew_waker()?;
                *r = Running::start(r.socket.clone(), &self.shared)?;
            }
        }
        let outcome = self.shared.next(deadline)?;
        *self.last_accepted.lock().unwrap_or_else(|e| e.into_inner()) = outcome.peer;
        outcome.result
    }

    /// A handle that makes this listener's `accept`s fail with [`ListenerError::Closed`]
    /// from another thread (the manager's shutdown); dropping the listener then closes it.
    pub(crate) fn interrupter(&self) -> Interrupter {
        Interrupter(self.shared.clone())
    }

    /// Stops listening: the socket is closed (a Unix socket file removed), handshakes in
    /// progress are cut short, and clients accepted but not yet returned are closed. Later
    /// `accept`s fail with [`ListenerError::Closed`].
    pub fn close(&mut self) {
        self.shared.close();
        let running = self
            .running
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(mut r) = running {
            if r.pid == std::process::id() {
                r.socket.wake();
                if let Some(t) = r.thread.take() {
                    let _ = t.join();
                }
            } else {
                // A forked child that never accepted: the thread is the parent's (waking it
                // would stop the parent's listener); this process only drops its handles.
                std::mem::forget(r.thread.take());
            }
        }
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.close();
    }
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("address", &self.address)
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// Interrupts a [`Listener`]'s `accept`s from another thread.
pub(crate) struct Interrupter(Arc<accept::Shared>);

impl Interrupter {
    pub(crate) fn interrupt(&self) {
        self.0.close();
    }
}

/// The client's half: connect, handshake, then the connection. A handshake that the
/// listener cut short (it closed the connection before its verdict, as a listener of this
/// crate does to its oldest pending handshakes under a flood) is tried again, after a short
/// pause, while the deadline allows.
pub(crate) fn connect_raw(
    address: &Address,
    authkey: Option<&[u8]>,
    timeout: Option<Duration>,
) -> Result<RawConnection, ListenerError> {
    use auth::TimedStream;
    let deadline = Deadline::after(timeout.unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT));
    let mut pause = Duration::from_millis(5);
    loop {
        // Without a timeout, the connection itself is bounded only by the OS, as before.
        let connect_within = timeout.map(|_| deadline.remaining().unwrap_or(Duration::MAX));
        let mut stream = SysStream::connect(address, connect_within)?;
        let r = match authkey {
            Some(key) => auth::answer(&mut stream, key, deadline),
            None => Ok(()),
        };
        match r {
            Ok(()) => {
                stream.set_io_timeout(None)?;
                return Ok(RawConnection::from_handle(stream.into_handle())?);
            }
            Err(AuthenticationError::Closed) if deadline.remaining_capped(pause) >= pause => {
                drop(stream);
                std::thread::sleep(jitter(pause));
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Between `d / 2` and `d`, so that clients pushed out together do not come back together.
fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    let _ = getrandom::fill(&mut b);
    let f = u32::from(u16::from_le_bytes(b));
    d / 2 + (d / 2) * f / 65536
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
        Ok(Connection::from_raw(connect_raw(address, authkey, None)?))
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
        Ok(Connection::from_raw(connect_raw(
            address,
            authkey,
            Some(timeout),
        )?))
    }
}
