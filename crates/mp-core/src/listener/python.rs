//! Talking to Python itself: a [`Listener`] and a [`Client`] that speak the wire protocol of
//! Python's `multiprocessing.connection`, for byte messages.
//!
//! A Python program can then do
//!
//! ```python
//! from multiprocessing.connection import Client
//! with Client(("127.0.0.1", 6000), authkey=b"secret") as conn:
//!     conn.send_bytes(b"hello")
//!     print(conn.recv_bytes())
//! ```
//!
//! against a Rust [`Listener`], and a Rust [`Client`] can talk to a Python
//! `multiprocessing.connection.Listener`. Only *byte* messages are exchanged
//! (`send_bytes`/`recv_bytes` on the Python side): Python's `send`/`recv` pickle objects,
//! which Rust cannot (and must not) unpickle; agree on an encoding (JSON, msgpack, ...) for
//! anything richer.
//!
//! The wire, as CPython writes it:
//! - each message is a 4-byte big-endian signed length, then the bytes; a message longer
//!   than `0x7fffffff` bytes has length `-1` (`0xFFFFFFFF`) followed by an 8-byte big-endian
//!   length;
//! - with an authkey, the listener runs `deliver_challenge` then `answer_challenge`, the
//!   client the other way round. `deliver_challenge` sends `#CHALLENGE#` followed by the
//!   message `{sha256}` + 40 random bytes and expects `{digest}` + HMAC-digest(key, message)
//!   back (Python 3.12+), or a bare 16-byte HMAC-MD5 of the message (Python 3.11 and
//!   older), and answers `#WELCOME#` or `#FAILURE#`. `answer_challenge` reads a challenge:
//!   a 20-byte one (Python 3.11 and older) gets a bare HMAC-MD5, a `{digest}`-prefixed one
//!   an HMAC with that digest, prefixed the same way (the MAC covers the prefix, so a
//!   digest cannot be downgraded). Handshake messages longer than 256 bytes are refused,
//!   as Python does. Digests spoken here: `md5`, `sha256`, `sha384` (Python also allows
//!   `sha3_256` and `sha3_384`, which it never picks itself: they are refused with an
//!   [`AuthenticationError::Protocol`]).
//!
//! Transports: TCP on every platform, Unix sockets on Unix. Python's named-pipe
//! connections on Windows (`AF_PIPE`) frame messages differently (message-mode pipes, no
//! length prefix) and are not spoken: use a TCP address there.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::time::Duration;

use mp_ipc::deadline::Deadline;

use hmac::{Hmac, Mac};

use super::auth::TimedStream;
use super::{Address, AuthenticationError, ListenerError, SysStream};
use crate::ConnectionError;

const CHALLENGE: &[u8] = b"#CHALLENGE#";
const WELCOME: &[u8] = b"#WELCOME#";
const FAILURE: &[u8] = b"#FAILURE#";
/// Random bytes in a challenge (Python 3.12+; 3.11 sends 20).
const MESSAGE_LENGTH: usize = 40;
/// The challenge length of Python 3.11 and older, which speak only HMAC-MD5.
const MD5_ONLY_MESSAGE_LENGTH: usize = 20;
const MD5_DIGEST_LEN: usize = 16;
/// Handshake messages longer than this are refused, as Python's `recv_bytes(256)` does.
const MAX_HANDSHAKE_MESSAGE: u64 = 256;
/// The digests Python allows in a `{digest}` prefix (the longest is 8 bytes).
const ALLOWED_DIGESTS: [&str; 5] = ["md5", "sha256", "sha384", "sha3_256", "sha3_384"];
const MAX_DIGEST_NAME: usize = 8;
/// How long a handshake may take by default.
const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);
/// How much one read asks the kernel for.
const READ_AHEAD: usize = 64 << 10;

// ------------------------------------------------------------------------------------------
// Framing.

/// A connection speaking Python's framing: byte messages only (Python's `Connection` with
/// `send_bytes`/`recv_bytes`). `Send` but not `Sync`, like [`crate::Connection`].
pub struct Connection {
    inner: RefCell<Option<Inner>>,
    max_len: u64,
}

struct Inner {
    stream: SysStream,
    /// Bytes read ahead of the current message.
    ahead: Vec<u8>,
    /// A framing error left the stream position unknown.
    broken: bool,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("python::Connection")
            .field("closed", &self.is_closed())
            .finish()
    }
}

fn conn_io(e: io::Error) -> ConnectionError {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => ConnectionError::Eof,
        io::ErrorKind::BrokenPipe
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted => ConnectionError::BrokenPipe,
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ConnectionError::Timeout,
        _ => ConnectionError::Io(e),
    }
}

/// Python's length prefix for a message of `len` bytes.
fn header(len: usize) -> Vec<u8> {
    if len > 0x7fff_ffff {
        let mut h = (-1i32).to_be_bytes().to_vec();
        h.extend_from_slice(&(len as u64).to_be_bytes());
        h
    } else {
        (len as u32).to_be_bytes().to_vec()
    }
}

/// Reads from a stream, each read bounded by what is left until a deadline; past it,
/// `TimedOut`. (A peer that drips bytes cannot stretch a bounded receive.)
struct Timed<'a>(&'a mut SysStream, Deadline);

impl Read for Timed<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.1 == Deadline::NEVER {
            return self.0.read(buf);
        }
        if self.1.expired() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        // A zero timeout is refused by the OS calls: at least a millisecond.
        let left = self.1.remaining_capped(Duration::MAX);
        self.0
            .set_io_timeout(Some(left.max(Duration::from_millis(1))))?;
        let got = self.0.read(buf);
        self.0.set_io_timeout(None)?;
        got
    }
}

impl Inner {
    /// Reads into the read-ahead buffer once, waiting at most `timeout`; the byte count
    /// (0: end of stream).
    fn fill_once(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        // A zero timeout is refused by the OS calls: look for a millisecond instead.
        let t = timeout.map(|t| t.max(Duration::from_millis(1)));
        self.stream.set_io_timeout(t)?;
        let mut chunk = vec![0u8; READ_AHEAD];
        let got = self.stream.read(&mut chunk);
        self.stream.set_io_timeout(None)?;
        let got = got?;
        self.ahead.extend_from_slice(&chunk[..got]);
        Ok(got)
    }

    fn read_exact(&mut self, out: &mut [u8], deadline: Deadline) -> io::Result<()> {
        let n = out.len().min(self.ahead.len());
        out[..n].copy_from_slice(&self.ahead[..n]);
        self.ahead.drain(..n);
        Timed(&mut self.stream, deadline).read_exact(&mut out[n..])
    }

    /// Receives a whole message, giving up at `deadline` (also in the middle of one, which
    /// breaks the connection: its position in the stream is lost).
    fn recv(&mut self, max_len: u64, deadline: Deadline) -> Result<Vec<u8>, ConnectionError> {
        if self.broken {
            return Err(ConnectionError::Broken);
        }
        let mut h = [0u8; 4];
        self.read_exact(&mut h, deadline).map_err(conn_io)?;
        let len = match i32::from_be_bytes(h) {
            -1 => {
                let mut l = [0u8; 8];
                self.read_exact(&mut l, deadline)
                    .map_err(|e| self.framing(e))?;
                u64::from_be_bytes(l)
            }
            n if n < 0 => {
                self.broken = true;
                return Err(ConnectionError::Io(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad message length {n}"),
                )));
            }
            n => n as u64,
        };
        if len > max_len {
            self.broken = true;
            return Err(ConnectionError::TooLarge { len, max: max_len });
        }
        // The body grows as it arrives: a lying length costs no more than what was sent.
        let mut body = Vec::new();
        let from_ahead = (len as usize).min(self.ahead.len());
        body.extend(self.ahead.drain(..from_ahead));
        let rest = len - from_ahead as u64;
        let got = Timed(&mut self.stream, deadline)
            .take(rest)
            .read_to_end(&mut body)
            .map_err(|e| self.framing(e))?;
        if (got as u64) < rest {
            self.broken = true;
            return Err(ConnectionError::Truncated {
                got: body.len() as u64,
                expected: len,
            });
        }
        Ok(body)
    }

    /// An error in the middle of a message: the stream position is lost.
    fn framing(&mut self, e: io::Error) -> ConnectionError {
        self.broken = true;
        conn_io(e)
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), ConnectionError> {
        let mut frame = header(bytes.len());
        if bytes.len() <= READ_AHEAD {
            frame.extend_from_slice(bytes);
            self.stream.write_all(&frame).map_err(conn_io)
        } else {
            self.stream.write_all(&frame).map_err(conn_io)?;
            self.stream.write_all(bytes).map_err(conn_io)
        }
    }
}

impl Connection {
    fn new(stream: SysStream) -> Self {
        Self {
            inner: RefCell::new(Some(Inner {
                stream,
                ahead: Vec::new(),
                broken: false,
            })),
            max_len: mp_ipc::DEFAULT_MAX_FRAME,
        }
    }

    fn with<R>(
        &self,
        f: impl FnOnce(&mut Inner) -> Result<R, ConnectionError>,
    ) -> Result<R, ConnectionError> {
        let mut inner = self.inner.borrow_mut();
        f(inner.as_mut().ok_or(ConnectionError::Closed)?)
    }

    /// Sends one message (Python's `send_bytes`).
    pub fn send_bytes(&self, bytes: &[u8]) -> Result<(), ConnectionError> {
        self.with(|i| i.send(bytes))
    }

    /// Receives one message (Python's `recv_bytes`); longer than the limit (4 GiB unless
    /// [`set_max_message_size`](Self::set_max_message_size) says otherwise) is
    /// [`ConnectionError::TooLarge`], and the connection is then unusable, as in Python.
    pub fn recv_bytes(&self) -> Result<Vec<u8>, ConnectionError> {
        let max = self.max_len;
        self.with(|i| i.recv(max, Deadline::NEVER))
    }

    /// Receives one message of at most `max` bytes (Python's `recv_bytes(maxlength)`).
    pub fn recv_bytes_max(&self, max: u64) -> Result<Vec<u8>, ConnectionError> {
        self.with(|i| i.recv(max.min(self.max_len), Deadline::NEVER))
    }

    /// Like [`recv_bytes`](Self::recv_bytes), [`ConnectionError::Timeout`] if no message
    /// starts within `timeout`.
    pub fn recv_bytes_timeout(&self, timeout: Duration) -> Result<Vec<u8>, ConnectionError> {
        if !self.poll(timeout)? {
            return Err(ConnectionError::Timeout);
        }
        self.recv_bytes()
    }

    /// Whether a message (or end of stream) can be read, waiting up to `timeout`.
    pub fn poll(&self, timeout: Duration) -> Result<bool, ConnectionError> {
        self.poll_until(Some(timeout))
    }

    /// Waits without limit until a message (or end of stream) can be read (Python's
    /// `poll(None)`).
    pub fn poll_forever(&self) -> Result<(), ConnectionError> {
        self.poll_until(None).map(drop)
    }

    fn poll_until(&self, timeout: Option<Duration>) -> Result<bool, ConnectionError> {
        self.with(|i| {
            if !i.ahead.is_empty() || i.broken {
                return Ok(true);
            }
            match i.fill_once(timeout) {
                Ok(_) => Ok(true),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    Ok(false)
                }
                // An error is readable: the next receive reports it.
                Err(_) => Ok(true),
            }
        })
    }

    /// Sets the longest message [`recv_bytes`](Self::recv_bytes) accepts.
    pub fn set_max_message_size(&mut self, max: u64) {
        self.max_len = max;
    }

    /// Closes the connection (Python's `close`); dropping it does too.
    pub fn close(&self) {
        if let Some(i) = self.inner.borrow_mut().take() {
            i.stream.shutdown();
        }
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.borrow().is_none()
    }
}

// ------------------------------------------------------------------------------------------
// The handshake.

/// The HMAC of `message` under `key` with Python's digest `name`.
fn hmac_of(name: &str, key: &[u8], message: &[u8]) -> Result<Vec<u8>, AuthenticationError> {
    fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], message: &[u8]) -> Vec<u8> {
        let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key)
            .expect("HMAC takes keys of any length");
        mac.update(message);
        mac.finalize().into_bytes().to_vec()
    }
    match name {
        "md5" => Ok(run::<Hmac<md5::Md5>>(key, message)),
        "sha256" => Ok(run::<Hmac<sha2::Sha256>>(key, message)),
        "sha384" => Ok(run::<Hmac<sha2::Sha384>>(key, message)),
        other => Err(AuthenticationError::Protocol(format!(
            "digest {other:?} is not supported here (md5, sha256 and sha384 are)"
        ))),
    }
}

/// Python's `_get_digest_name_and_payload`: `("", message)` for a legacy (unprefixed) 16- or
/// 20-byte message, or the digest of a `{digest}` prefix and what follows it.
fn digest_name_and_payload(message: &[u8]) -> Result<(&str, &[u8]), AuthenticationError> {
    if message.len() == MD5_ONLY_MESSAGE_LENGTH || message.len() == MD5_DIGEST_LEN {
        return Ok(("", message));
    }
    if message.first() == Some(&b'{') {
        let end = message.len().min(MAX_DIGEST_NAME + 2);
        if let Some(curly) = message[1..end].iter().position(|&b| b == b'}') {
            let name = &message[1..1 + curly];
            if let Some(d) = ALLOWED_DIGESTS.iter().find(|d| d.as_bytes() == name) {
                return Ok((d, &message[2 + curly..]));
            }
        }
    }
    Err(AuthenticationError::Protocol(
        "unsupported message length, missing digest prefix, or unsupported digest".into(),
    ))
}

/// Python's `_create_response`: a bare HMAC-MD5 for a legacy challenge, else the digest of
/// the challenge's prefix, prefixed the same way.
fn create_response(key: &[u8], message: &[u8]) -> Result<Vec<u8>, AuthenticationError> {
    let (name, _) = digest_name_and_payload(message)?;
    if name.is_empty() {
        return hmac_of("md5", key, message);
    }
    let mut out = format!("{{{name}}}").into_bytes();
    out.extend(hmac_of(name, key, message)?);
    Ok(out)
}

/// Python's `_verify_challenge`: `response` must be the HMAC of `message`, with the digest
/// its prefix names (MD5 when unprefixed), compared in constant time.
fn verify_response(key: &[u8], message: &[u8], response: &[u8]) -> Result<(), AuthenticationError> {
    let (name, mac) = digest_name_and_payload(response)?;
    let name = if name.is_empty() { "md5" } else { name };
    let expected = hmac_of(name, key, message)?;
    // Constant time: the same as `hmac.compare_digest`.
    let mut diff = (expected.len() ^ mac.len()) as u8;
    for (a, b) in expected.iter().zip(mac) {
        diff |= a ^ b;
    }
    if diff == 0 && expected.len() == mac.len() {
        Ok(())
    } else {
        Err(AuthenticationError::BadResponse)
    }
}

/// A handshake step's receive: bounded in size (256 bytes) and by the deadline.
fn handshake_recv(conn: &Connection, deadline: Deadline) -> Result<Vec<u8>, AuthenticationError> {
    conn.with(|i| i.recv(MAX_HANDSHAKE_MESSAGE, deadline))
        .map_err(handshake_error)
}

fn handshake_error(e: ConnectionError) -> AuthenticationError {
    match e {
        ConnectionError::Eof | ConnectionError::BrokenPipe | ConnectionError::Truncated { .. } => {
            AuthenticationError::Closed
        }
        ConnectionError::Timeout => AuthenticationError::Timeout,
        ConnectionError::TooLarge { len, .. } => {
            AuthenticationError::Protocol(format!("a handshake message of {len} bytes"))
        }
        ConnectionError::Io(e) => AuthenticationError::Io(e),
        other => AuthenticationError::Protocol(other.to_string()),
    }
}

/// Python's `deliver_challenge(connection, authkey)`: challenges the peer to prove it knows
/// `authkey` (a `{sha256}` challenge, which Python 3.12+ answers with HMAC-SHA256 and
/// Python 3.11 and older with a bare HMAC-MD5), then tells it `#WELCOME#` or `#FAILURE#`.
/// Pairs with the peer's `answer_challenge`.
pub fn deliver_challenge(conn: &Connection, authkey: &[u8]) -> Result<(), AuthenticationError> {
    deliver_challenge_until(conn, authkey, Deadline::after(DEFAULT_HANDSHAKE_TIMEOUT))
}

fn deliver_challenge_until(
    conn: &Connection,
    authkey: &[u8],
    deadline: Deadline,
) -> Result<(), AuthenticationError> {
    let mut random = [0u8; MESSAGE_LENGTH];
    getrandom::fill(&mut random)
        .map_err(|e| AuthenticationError::Io(io::Error::other(e.to_string())))?;
    let mut message = b"{sha256}".to_vec();
    message.extend_from_slice(&random);
    let mut challenge = CHALLENGE.to_vec();
    challenge.extend_from_slice(&message);
    conn.send_bytes(&challenge).map_err(handshake_error)?;
    let response = handshake_recv(conn, deadline)?;
    match verify_response(authkey, &message, &response) {
        Ok(()) => conn.send_bytes(WELCOME).map_err(handshake_error),
        Err(e) => {
            let _ = conn.send_bytes(FAILURE);
            Err(e)
        }
    }
}

/// Python's `answer_challenge(connection, authkey)`: answers the peer's challenge with the
/// HMAC it asks for (HMAC-MD5 for a Python 3.11-or-older peer), and expects `#WELCOME#`.
pub fn answer_challenge(conn: &Connection, authkey: &[u8]) -> Result<(), AuthenticationError> {
    answer_challenge_until(conn, authkey, Deadline::after(DEFAULT_HANDSHAKE_TIMEOUT))
}

fn answer_challenge_until(
    conn: &Connection,
    authkey: &[u8],
    deadline: Deadline,
) -> Result<(), AuthenticationError> {
    let message = handshake_recv(conn, deadline)?;
    let Some(message) = message.strip_prefix(CHALLENGE) else {
        return Err(AuthenticationError::Protocol("expected #CHALLENGE#".into()));
    };
    if message.len() < MD5_ONLY_MESSAGE_LENGTH {
        return Err(AuthenticationError::Protocol(format!(
            "challenge too short: {} bytes",
            message.len()
        )));
    }
    let response = create_response(authkey, message)?;
    conn.send_bytes(&response).map_err(handshake_error)?;
    if handshake_recv(conn, deadline)? == WELCOME {
        Ok(())
    } else {
        Err(AuthenticationError::Rejected)
    }
}

// ------------------------------------------------------------------------------------------
// Listener and client.

fn check_family(address: &Address) -> Result<(), ListenerError> {
    match address {
        Address::Pipe(p) => Err(ListenerError::InvalidFamily(format!(
            "{p}: Python's named-pipe connections use message-mode pipes without a length \
             prefix, which the Python wire mode does not speak; use a TCP address"
        ))),
        _ => Ok(()),
    }
}

/// A listener speaking Python's `multiprocessing.connection` protocol (Python's
/// `Listener(address, authkey=...)`): a Python `Client` can connect to it.
///
/// ```
/// use mp_core::listener::python::{Client, Listener};
///
/// let listener = Listener::bind(&"127.0.0.1:0".parse().unwrap(), Some(b"secret")).unwrap();
/// let address = listener.address().clone();
/// let t = std::thread::spawn(move || {
///     let conn = Client::connect(&address, Some(b"secret")).unwrap();
///     conn.send_bytes(b"ping").unwrap();
///     conn.recv_bytes().unwrap()
/// });
/// let conn = listener.accept().unwrap();
/// assert_eq!(conn.recv_bytes().unwrap(), b"ping");
/// conn.send_bytes(b"pong").unwrap();
/// assert_eq!(t.join().unwrap(), b"pong");
/// ```
#[derive(Debug)]
pub struct Listener {
    inner: super::Listener,
    authkey: Option<Vec<u8>>,
    handshake_timeout: Duration,
}

impl Listener {
    /// Binds `address` (TCP, or a Unix socket); with `Some(key)`, each client must pass
    /// Python's handshake (and is shown that the listener knows the key too).
    pub fn bind(address: &Address, authkey: Option<&[u8]>) -> Result<Self, ListenerError> {
        check_family(address)?;
        Ok(Self {
            inner: super::Listener::bind(address, None)?,
            authkey: authkey.map(<[u8]>::to_vec),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        })
    }

    /// Like [`bind`](Self::bind), with the length of the OS's queue of connections waiting
    /// for an accept (Python's `Listener(address, backlog=...)`); see
    /// [`Listener::bind_with_backlog`](super::Listener::bind_with_backlog) for what it does
    /// on each platform.
    ///
    /// ```
    /// use mp_core::listener::python::Listener;
    /// let l = Listener::bind_with_backlog(&"127.0.0.1:0".parse().unwrap(), None, 5).unwrap();
    /// assert!(matches!(l.address(), mp_core::listener::Address::Tcp(_)));
    /// ```
    pub fn bind_with_backlog(
        address: &Address,
        authkey: Option<&[u8]>,
        backlog: u32,
    ) -> Result<Self, ListenerError> {
        check_family(address)?;
        Ok(Self {
            inner: super::Listener::bind_with_backlog(address, None, backlog)?,
            authkey: authkey.map(<[u8]>::to_vec),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        })
    }

    /// The address clients connect to (with the real port when bound to port 0).
    pub fn address(&self) -> &Address {
        self.inner.address()
    }

    /// The address of the last client accepted (Python's `last_accepted`).
    pub fn last_accepted(&self) -> Option<Address> {
        self.inner.last_accepted()
    }

    /// Bounds how long an accepted client may take to complete the handshake.
    pub fn set_handshake_timeout(&mut self, timeout: Duration) {
        self.handshake_timeout = timeout;
    }

    /// Waits for a client and runs the handshake (`deliver_challenge`, then
    /// `answer_challenge`, as Python's `Listener.accept`). A client with the wrong key is
    /// [`ListenerError::Authentication`]; the listener stays usable.
    pub fn accept(&self) -> Result<Connection, ListenerError> {
        self.accept_inner(None)
    }

    /// Like [`accept`](Self::accept), [`ListenerError::Timeout`] when no client arrives within
    /// `timeout` (the handshake has its own bound).
    pub fn accept_timeout(&self, timeout: Duration) -> Result<Connection, ListenerError> {
        self.accept_inner(Some(timeout))
    }

    fn accept_inner(&self, timeout: Option<Duration>) -> Result<Connection, ListenerError> {
        let stream = self.inner.accept_stream(Deadline::from_timeout(timeout))?;
        let conn = Connection::new(stream);
        if let Some(key) = &self.authkey {
            let deadline = Deadline::after(self.handshake_timeout);
            deliver_challenge_until(&conn, key, deadline)?;
            answer_challenge_until(&conn, key, deadline)?;
        }
        Ok(conn)
    }

    /// Stops listening.
    pub fn close(&mut self) {
        self.inner.close();
    }
}

/// Connects to a Python `multiprocessing.connection.Listener` (or a [`Listener`]): Python's
/// `Client(address, authkey=...)`.
#[derive(Debug)]
pub struct Client(());

impl Client {
    /// Connects and runs the handshake (`answer_challenge`, then `deliver_challenge`, as
    /// Python's `Client`). A wrong key is [`ListenerError::Authentication`].
    pub fn connect(address: &Address, authkey: Option<&[u8]>) -> Result<Connection, ListenerError> {
        Self::connect_inner(address, authkey, None)
    }

    /// Like [`connect`](Self::connect), bounding the connection and the handshake by
    /// `timeout` each.
    pub fn connect_timeout(
        address: &Address,
        authkey: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Connection, ListenerError> {
        Self::connect_inner(address, authkey, Some(timeout))
    }

    fn connect_inner(
        address: &Address,
        authkey: Option<&[u8]>,
        timeout: Option<Duration>,
    ) -> Result<Connection, ListenerError> {
        check_family(address)?;
        let stream = SysStream::connect(address, timeout)?;
        let conn = Connection::new(stream);
        if let Some(key) = authkey {
            let deadline = Deadline::after(timeout.unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT));
            answer_challenge_until(&conn, key, deadline)?;
            deliver_challenge_until(&conn, key, deadline)?;
        }
        Ok(conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Python's framing, byte for byte: a 4-byte big-endian length, or -1 then 8 bytes.
    #[test]
    fn headers_are_pythons() {
        assert_eq!(header(5), [0, 0, 0, 5]);
        assert_eq!(header(0x7fff_ffff), [0x7f, 0xff, 0xff, 0xff]);
        assert_eq!(
            header(0x8000_0000),
            [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0x80, 0, 0, 0]
        );
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// A transcript of Python 3.12+'s `_create_response`/`_verify_challenge` on a fixed
    /// challenge, the MACs computed with CPython 3.11's `hmac` module:
    /// `hmac.new(b"secret", b"{sha256}" + bytes(range(40)), "sha256").hexdigest()` and the
    /// same with `"md5"` over a 20-byte legacy challenge `bytes(range(20))`.
    #[test]
    fn responses_match_a_python_transcript() {
        let mut modern = b"{sha256}".to_vec();
        modern.extend(0u8..40);
        let r = create_response(b"secret", &modern).unwrap();
        assert_eq!(&r[..8], b"{sha256}");
        assert_eq!(
            hex(&r[8..]),
            "fc57fbe650d6124b98215e7b5d197d5807ad69982d275a9735ea2d56f1fa6989"
        );
        verify_response(b"secret", &modern, &r).unwrap();
        assert!(matches!(
            verify_response(b"wrong", &modern, &r),
            Err(AuthenticationError::BadResponse)
        ));

        let legacy: Vec<u8> = (0u8..20).collect();
        let r = create_response(b"secret", &legacy).unwrap();
        assert_eq!(r.len(), 16, "a bare HMAC-MD5 for a Python 3.11 challenge");
        assert_eq!(hex(&r), "7defa9cc46abc3583325d17ccda75190");
        // A 3.11 client answers a modern challenge with a bare HMAC-MD5 of all of it.
        let md5_of_modern = hmac_of("md5", b"secret", &modern).unwrap();
        assert_eq!(hex(&md5_of_modern), "8e48d2bb349b4b72b9382999ed5b62eb");
        verify_response(b"secret", &modern, &md5_of_modern).unwrap();
    }

    /// Malformed or hostile handshake messages are typed errors.
    #[test]
    fn bad_prefixes_are_refused() {
        for bad in [
            &b"{sha1}0123456789012345678901234567"[..],
            b"no prefix at all, 33 bytes long..",
            b"{sha256",
            b"{sha3_256}0123456789012345678901234567890123",
        ] {
            assert!(create_response(b"k", bad).is_err(), "{bad:?}");
        }
    }
}
