//! The error types, one per area, each naming the Python exception it stands for.

use std::fmt;
use std::io;

use crate::StartMethod;

/// A panic in a child process, as reported to its parent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChildPanic {
    /// The panic message (the payload when it is a string).
    pub message: String,
    /// Where the panic happened, `file:line:column`.
    pub location: String,
    /// The child's backtrace at the panic, captured whatever `RUST_BACKTRACE` says.
    pub backtrace: String,
}

impl fmt::Display for ChildPanic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "child panicked at {}: {}", self.location, self.message)
    }
}

/// Errors of [`Process`](crate::Process). Python raises `ValueError`/`AssertionError` for the
/// state errors; a child's failure is only visible in Python through `exitcode`.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The process has not been started (Python: `AssertionError` / `ValueError`).
    #[error("the process has not been started")]
    NotStarted,
    /// `start` was called twice.
    #[error("the process has already been started")]
    AlreadyStarted,
    /// The process handle was closed with `close`.
    #[error("the process handle is closed")]
    Closed,
    /// `close` was called while the child still runs.
    #[error("cannot close a process that is still running")]
    StillRunning,
    /// A timed join elapsed while the child still runs.
    #[error("timed out waiting for the process")]
    Timeout,
    /// The child panicked; it exited with code 1 (or died of `SIGABRT` under `panic = "abort"`).
    #[error("{panic}")]
    Panicked {
        /// Message, location and backtrace of the panic.
        panic: ChildPanic,
        /// The child's exit code.
        exitcode: i32,
    },
    /// The child ended with a non-zero exit code, or was killed by signal `-exitcode`.
    #[error("the process failed with exit code {exitcode}")]
    Failed {
        /// Exit code; negative for death by a signal, as in Python.
        exitcode: i32,
    },
    /// The child could not start its target (it received something it could not decode).
    #[error("the child could not start its target: {0}")]
    Boot(String),
    /// The argument could not be serialized for the child.
    #[error("the process argument could not be serialized: {0}")]
    Encode(String),
    /// The start method cannot run this target (a capturing closure needs `Fork`).
    #[error("a closure target needs StartMethod::Fork, not {0:?}: spawned children can only run fn items and non-capturing closures")]
    NeedsFork(StartMethod),
    /// The start method does not exist on this platform.
    #[error("start method {0:?} is not available on this platform")]
    Unsupported(StartMethod),
    /// This process is a child whose bootstrap never ran (Python: the "bootstrapping phase"
    /// `RuntimeError`).
    #[error("this process was started by mp as a child, but its bootstrap never ran: call mp_core::main() as the first line of main (a child must not start processes before it has run its own target)")]
    BootstrapMissing,
    /// A daemon process may not start children (Python: `AssertionError: daemonic processes
    /// are not allowed to have children`): they would be left behind when it is terminated
    /// at its parent's exit. Pool workers are daemons.
    #[error("daemonic processes are not allowed to have children")]
    DaemonCannotHaveChildren,
    /// An operating-system error.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Errors of connections and pipes. Python raises `EOFError`, `OSError`, `BufferTooShort`.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The peer closed its end, or died (Python: `EOFError`).
    #[error("end of file: the peer closed the connection")]
    Eof,
    /// Sending failed because the peer is gone (Python: `BrokenPipeError`).
    #[error("broken pipe: the peer closed the connection")]
    BrokenPipe,
    /// This end was closed with `close` (Python: `OSError: handle is closed`).
    #[error("the connection is closed")]
    Closed,
    /// Nothing arrived within the timeout.
    #[error("timed out")]
    Timeout,
    /// The receive buffer is too small; the error owns the whole message, so nothing is lost
    /// (Python: `BufferTooShort`). The size needed is `message.len()`.
    #[error("buffer of {capacity} bytes is too short for a message of {} bytes", message.len())]
    BufferTooShort {
        /// The complete message.
        message: Vec<u8>,
        /// The size of the buffer that was offered.
        capacity: usize,
    },
    /// An incoming message announced more bytes than this end accepts. Its body was not
    /// read or allocated, and the connection can no longer be read from.
    #[error("incoming message of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Announced length.
        len: u64,
        /// This end's limit.
        max: u64,
    },
    /// The peer vanished in the middle of a message; the partial message is dropped.
    #[error(
        "the peer closed the connection in the middle of a message ({got} of {expected} bytes)"
    )]
    Truncated {
        /// Bytes received.
        got: u64,
        /// Bytes announced.
        expected: u64,
    },
    /// The peer broke the protocol (descriptors it did not announce, a malformed handle
    /// prefix) or the connection's shared memory is damaged. Whatever came with the bad
    /// message was closed; the connection can no longer be read from ([`Broken`] from now
    /// on), and nothing else is affected.
    ///
    /// [`Broken`]: ConnectionError::Broken
    #[error("the connection is corrupt: {0}")]
    Corrupt(String),
    /// An earlier framing error (`TooLarge`, `Truncated`, `Corrupt`) left the stream
    /// unreadable.
    #[error("the connection's stream is out of sync after an earlier framing error")]
    Broken,
    /// The value could not be serialized; nothing was sent.
    #[error("could not serialize the message: {0}")]
    Encode(postcard::Error),
    /// A whole message arrived but is not a valid `T` (or breaks a decoding limit); it was
    /// consumed, the connection stays usable.
    #[error("could not decode the message: {0}")]
    Decode(DecodeError),
    /// An operating-system error.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl From<mp_ipc::IpcError> for ConnectionError {
    fn from(e: mp_ipc::IpcError) -> Self {
        use mp_ipc::IpcError as E;
        match e {
            E::Eof => Self::Eof,
            E::Truncated { got, expected } => Self::Truncated { got, expected },
            E::BrokenPipe => Self::BrokenPipe,
            E::FrameTooLarge { len, max } => Self::TooLarge { len, max },
            E::Timeout => Self::Timeout,
            E::Corrupt(why) => Self::Corrupt(why),
            E::Io(e) => Self::Io(e),
        }
    }
}

/// Why bytes from another process did not decode as the type expected. Decoding is
/// postcard's, bounded so that no message can exhaust the receiver's stack or CPU: see
/// [`MAX_DECODE_DEPTH`](crate::codec::MAX_DECODE_DEPTH). Nothing was allocated beyond what
/// the message itself holds.
///
/// ```
/// use mp_core::{pipe, ConnectionError, DecodeError};
/// #[derive(serde::Serialize, serde::Deserialize)]
/// enum Tree { Leaf, Node(Box<Tree>) }
///
/// let (a, b) = pipe::<Tree>().unwrap();
/// // Ten thousand levels: refused with a typed error, the receiver's stack untouched.
/// a.send_bytes(&vec![1u8; 10_000]).unwrap();
/// assert!(matches!(
///     b.recv(),
///     Err(ConnectionError::Decode(DecodeError::TooDeep { .. }))
/// ));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The bytes are not a valid encoding of the type (postcard's reason).
    #[error("{0}")]
    Invalid(postcard::Error),
    /// Compound values nest deeper than `limit` levels.
    #[error("the message nests deeper than {limit} levels")]
    TooDeep {
        /// The limit, [`MAX_DECODE_DEPTH`](crate::codec::MAX_DECODE_DEPTH).
        limit: usize,
    },
    /// The bytes are well formed, but name something the expected type cannot be: a proxy
    /// to an object of another type than the proxy type decoded (a manager's service
    /// answering with a proxy of another type than its client expects).
    #[error("{0}")]
    Refused(String),
    /// The sequences and maps of the message announce more elements than its bytes can hold
    /// (beyond [`MAX_EMPTY_ELEMENTS`](crate::codec::MAX_EMPTY_ELEMENTS) zero-sized ones).
    #[error("the message announces more than {limit} elements")]
    TooManyElements {
        /// The most elements a message of this size may hold.
        limit: usize,
    },
}

/// Errors of start-method selection (Python: `ValueError`, `RuntimeError`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ContextError {
    /// The method does not exist on this platform.
    #[error("start method {0:?} is not available on this platform")]
    Unavailable(StartMethod),
    /// The default was already set to another method; use `force`.
    #[error("the start method has already been set to {0:?}")]
    AlreadySet(StartMethod),
}

/// Errors of [`wait`](crate::wait).
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// One of the objects has no handle any more (a closed connection).
    #[error("object {0} is closed")]
    Closed(usize),
    /// An operating-system error.
    #[error(transparent)]
    Io(#[from] io::Error),
}
