//! The backend contract of `mp`.
//!
//! Every transport (Unix sockets, Windows named pipes, shared-memory rings, threads) moves
//! *frames*: whole byte messages whose boundaries survive the trip. This crate defines
//!
//! - [`Channel`]: one duplex, framed byte channel (sending and receiving frames, with OS
//!   handles where the transport can carry them; polling);
//! - [`Transport`] and [`Endpoint`] ([`transport`]): a backend as a type that makes connected
//!   pairs, and what its ends can do beyond frames (their OS handles, readiness and liveness
//!   for waiting, leaving for another process and being adopted there, cloning), with
//!   [`Capabilities`] and a name;
//! - [`dispatch`]: ends and transports type-erased, the one dispatch a user of several
//!   transports needs;
//! - [`frame`]: the length header every stream transport writes before a payload, and the
//!   limits that keep a corrupt header from allocating without bound;
//! - [`IpcError`]: the transport-level errors, which `mp-core` maps onto its public ones;
//! - [`handle`]: the OS handle type of the platform, the unit of inheritance between processes;
//! - [`handle_prefix`]: the bytes before a frame's payload that carry handle values where
//!   handles travel inside the body (Windows), written and checked in one place;
//! - [`memory`]: the one shared-memory mapping type, which the platform crates make;
//! - [`spin`]: the process-wide setting of how long a waiter spins before it sleeps;
//! - [`deadline`]: when a wait ends, saturating (a huge timeout means "for ever").
//!
//! Users depend on `mp-core`, not on this crate; backend crates depend on this crate only.
//! `docs/writing-a-backend.md` walks through writing one, and the crate
//! `mp-ipc-conformance` checks one.

pub mod deadline;
pub mod dispatch;
pub mod frame;
pub mod handle;
pub mod handle_prefix;
pub mod memory;
pub mod spin;
pub mod transport;

use std::time::Duration;

pub use frame::{FrameHeader, DEFAULT_MAX_FRAME, HEADER_LEN};
pub use transport::{Capabilities, Endpoint, Transport};

/// Errors a transport reports. `mp-core` turns them into its own typed errors.
#[derive(Debug, thiserror::Error)]
pub enum IpcError {
    /// The peer closed its end (or died) before a frame started: a clean end of stream.
    #[error("end of stream: the peer closed the connection")]
    Eof,
    /// The peer closed its end in the middle of a frame.
    #[error(
        "the peer closed the connection in the middle of a message ({got} of {expected} bytes)"
    )]
    Truncated {
        /// Bytes of the body received.
        got: u64,
        /// Bytes the header announced.
        expected: u64,
    },
    /// The peer is gone and a write could not be delivered (EPIPE / ERROR_NO_DATA).
    #[error("broken pipe: the peer closed the connection")]
    BrokenPipe,
    /// A header announced a frame longer than the receiver accepts; the body was not allocated.
    #[error("incoming message of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Announced length.
        len: u64,
        /// The receiver's limit.
        max: u64,
    },
    /// Nothing arrived within the timeout. A receive that timed out in the middle of a
    /// frame kept what it had: the next receive continues the frame.
    #[error("timed out")]
    Timeout,
    /// The peer broke the protocol (descriptors it did not announce, a malformed handle
    /// prefix) or the channel's shared state is damaged. The channel can no longer be read
    /// from; nothing else is affected.
    #[error("the channel is corrupt: {0}")]
    Corrupt(String),
    /// Any other operating-system error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// One end of a duplex, framed byte channel between two processes (or threads).
///
/// What every implementation guarantees (the conformance kit, crate `mp-ipc-conformance`,
/// checks each point):
/// - **Atomic frames.** A frame is delivered whole or not at all, in order: no merging, no
///   splitting, empty frames kept. (Several senders using clones of one end *at the same
///   time* are the caller's to serialize: a stream transport may interleave their large
///   frames, as Python's `Pipe` may.)
/// - **End of stream on peer death.** A peer that is gone (dropped, exited, killed while
///   holding its end) shows up as [`IpcError::Eof`] on receive (after the frames it sent;
///   [`IpcError::Truncated`] if it died in the middle of one) and [`IpcError::BrokenPipe`]
///   on send, never as a hang. [`poll`](Channel::poll) reports end of stream as ready.
/// - **No unbounded allocation on a lying header.** A frame announced longer than the
///   receiver's `max_len` is refused with [`IpcError::FrameTooLarge`] before its body is
///   allocated; a body is buffered only as fast as its bytes arrive
///   ([`frame::next_capacity`]).
/// - **Bad bytes are errors.** Anything read from the peer (headers, handle counts, shared
///   memory) is validated; damage is an error (`InvalidData`), never a panic.
/// - **Bounded waits.** Every wait honours its timeout (`None`: until a frame or end of
///   stream).
pub trait Channel: Send {
    /// Sends one frame made of the concatenation of `parts` (so a caller can send a header
    /// and a body without copying them together).
    fn send_frame(&self, parts: &[&[u8]]) -> Result<(), IpcError>;

    /// Receives one frame into `buf` (cleared first), and the handles that came with it
    /// (none for a plain frame), giving up at `deadline` with [`IpcError::Timeout`], also in
    /// the middle of a frame whose header arrived but whose body stalls. A stream transport
    /// keeps the part it received (and its handles) and the next receive continues it, so a
    /// timeout loses nothing.
    ///
    /// The one receive every transport writes: the other receives are this one. A frame
    /// longer than `max_len` is refused with [`IpcError::FrameTooLarge`] before its body is
    /// read; the channel is then unusable for reading, since its stream position is lost.
    fn recv_frame_until(
        &self,
        buf: &mut Vec<u8>,
        max_len: u64,
        deadline: deadline::Deadline,
    ) -> Result<Vec<handle::OwnedHandle>, IpcError>;

    /// Receives one frame into `buf`, waiting as long as it takes; handles that came with it
    /// are closed.
    fn recv_frame(&self, buf: &mut Vec<u8>, max_len: u64) -> Result<(), IpcError> {
        self.recv_frame_until(buf, max_len, deadline::Deadline::NEVER)
            .map(drop)
    }

    /// Waits until a frame (or end of stream) can be read without blocking, for at most
    /// `timeout` (`None`: forever; zero: just look). Polling consumes nothing.
    fn poll(&self, timeout: Option<Duration>) -> Result<bool, IpcError>;

    /// Sends one frame with OS handles attached; the receiver gets its own copies. A
    /// transport that cannot pass handles says so with an `Unsupported` I/O error.
    fn send_frame_with_handles(
        &self,
        parts: &[&[u8]],
        handles: &[handle::RawHandle],
    ) -> Result<(), IpcError> {
        if handles.is_empty() {
            return self.send_frame(parts);
        }
        Err(IpcError::Io(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "this transport cannot pass OS handles",
        )))
    }

    /// Whether bytes of a frame already wait in this end's own buffer, where polling the OS
    /// handle cannot see them.
    fn has_buffered(&self) -> bool {
        false
    }

    /// Takes out the bytes read ahead into this end's own buffer, to hand them over with the
    /// end when it moves to another process.
    fn buffered(&self) -> Vec<u8> {
        Vec::new()
    }

    /// Puts bytes taken with [`buffered`](Channel::buffered) back in front of the stream.
    /// Transports without a read-ahead buffer never have any to take.
    fn unread(&self, bytes: &[u8]) {
        debug_assert!(bytes.is_empty(), "this transport has no read-ahead buffer");
    }

    /// Receives one frame straight into `out`: `Ok(Ok(len))`, or `Ok(Err(frame))` with the
    /// whole frame when `out` is too short (nothing is lost).
    fn recv_frame_into(
        &self,
        out: &mut [u8],
        max_len: u64,
    ) -> Result<Result<usize, Vec<u8>>, IpcError> {
        let mut v = Vec::new();
        self.recv_frame(&mut v, max_len)?;
        Ok(frame::into_slice(v, out))
    }

    /// Receives one frame split in two, so that a caller can drop a small prefix of its own
    /// (a length) without moving the body: the first `prefix_len(frame length)` bytes (at
    /// most [`frame::PREFIX_MAX`], at most the frame) go into `prefix`, the rest into `body`
    /// (replaced, sized to the body). Returns how many bytes went into `prefix`, and the
    /// handles that came with the frame; timeouts, limits and errors as
    /// [`recv_frame_until`](Channel::recv_frame_until), which this is by default (followed
    /// by a move of the body); a transport overrides it to read the body into place.
    fn recv_frame_split_until(
        &self,
        prefix: &mut frame::Prefix,
        prefix_len: fn(u64) -> usize,
        body: &mut Vec<u8>,
        max_len: u64,
        deadline: deadline::Deadline,
    ) -> Result<(usize, Vec<handle::OwnedHandle>), IpcError> {
        let handles = self.recv_frame_until(body, max_len, deadline)?;
        Ok((frame::split_off_prefix(body, prefix, prefix_len), handles))
    }

    /// Receives one frame and the handles that came with it (none for a plain frame),
    /// waiting as long as it takes.
    fn recv_frame_with_handles(
        &self,
        buf: &mut Vec<u8>,
        max_len: u64,
    ) -> Result<Vec<handle::OwnedHandle>, IpcError> {
        self.recv_frame_until(buf, max_len, deadline::Deadline::NEVER)
    }
}
