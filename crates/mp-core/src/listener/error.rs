//! Errors of listeners, clients and the authentication handshake.

use std::io;

use crate::ConnectionError;

/// The handshake failed: Python's `multiprocessing.AuthenticationError`.
///
/// Both sides of a failed handshake get one: the client whose answer was turned down gets
/// [`Rejected`](Self::Rejected), the listener that turned it down gets
/// [`BadResponse`](Self::BadResponse).
#[derive(Debug, thiserror::Error)]
pub enum AuthenticationError {
    /// The peer turned down our answer to its challenge (we do not share its key).
    #[error("authentication failed: the peer rejected our response (wrong authkey?)")]
    Rejected,
    /// The peer's answer to our challenge was not the HMAC of it under our key.
    #[error("authentication failed: the peer's response does not match (wrong authkey?)")]
    BadResponse,
    /// A handshake message was malformed or longer than the handshake allows.
    #[error("authentication failed: bad handshake message: {0}")]
    Protocol(String),
    /// The peer did not complete the handshake in time.
    #[error("authentication failed: the peer did not complete the handshake in time")]
    Timeout,
    /// The peer closed the connection during the handshake.
    #[error("authentication failed: the peer closed the connection during the handshake")]
    Closed,
    /// An operating-system error during the handshake.
    #[error("authentication failed: {0}")]
    Io(io::Error),
}

/// Errors of [`Listener`](super::Listener) and [`Client`](super::Client). Python raises
/// `OSError`, `ValueError` and `AuthenticationError` for these.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    /// The authentication handshake failed (Python: `AuthenticationError`).
    #[error(transparent)]
    Authentication(#[from] AuthenticationError),
    /// The address names a family this platform does not have, such as a named pipe on
    /// POSIX or a Unix socket path on Windows (Python: `ValueError`).
    #[error("address {0} is not valid on this platform")]
    InvalidFamily(String),
    /// The address could not be parsed.
    #[error("invalid address: {0}")]
    InvalidAddress(String),
    /// `accept_timeout` or `connect_timeout` elapsed.
    #[error("timed out")]
    Timeout,
    /// The listener was closed (Python: `OSError` from `accept` after `close`).
    #[error("the listener is closed")]
    Closed,
    /// The transport is not available on this platform yet.
    #[error("{0}")]
    Unsupported(&'static str),
    /// An error of the connection made from the accepted stream.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    /// An operating-system error (`AddrInUse`, `ConnectionRefused`, `NotFound`, ...).
    #[error(transparent)]
    Io(#[from] io::Error),
}
