//! The rest of the contract: what a transport is ([`Transport`]) and what one of its ends
//! can do beyond moving frames ([`Endpoint`]): say which OS handles it owns, be waited on,
//! leave this process and be adopted in another, be cloned.
//!
//! `mp-core` uses nothing else of a backend: a backend crate implements these two traits
//! (and [`Channel`](crate::Channel)) and `mp-core` builds pipes, waits, and hands ends to
//! children through them, type-erased by [`dispatch`](crate::dispatch).

use std::fmt::Debug;
use std::io;

use crate::handle::{OwnedHandle, RawHandle};
use crate::Channel;

/// What a transport can do, so that callers (and the conformance kit) know what to expect.
///
/// ```
/// use mp_ipc::Capabilities;
/// const C: Capabilities = Capabilities::IN_PROCESS;
/// assert!(!C.crosses_processes && !C.passes_handles);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Whether an end can be handed to another process ([`Endpoint::handles`],
    /// [`Endpoint::export`], [`Endpoint::adopt`]). An in-process transport says `false`.
    pub crosses_processes: bool,
    /// Whether frames can carry OS handles ([`Channel::send_frame_with_handles`]); `false`
    /// means that call fails with an `Unsupported` I/O error whenever handles are given.
    pub passes_handles: bool,
    /// Whether [`Endpoint::wait_handle`] gives an OS handle that becomes ready with the end,
    /// so that `mp_core::wait` can wait on it beside other handles.
    pub os_waitable: bool,
    /// The bytes of shared-memory ring a queue over this transport keeps in front of its
    /// spool file (0: none; items go straight to the spool). A hint for `mp-core`'s queues:
    /// rings are worth it only where the transport itself avoids system calls.
    pub queue_ring: usize,
}

impl Capabilities {
    /// A transport over one OS stream object per end (a socket, a pipe): ends cross
    /// processes, frames carry handles, the OS can wait on an end, no ring for queues.
    pub const OS_STREAM: Capabilities = Capabilities {
        crosses_processes: true,
        passes_handles: true,
        os_waitable: true,
        queue_ring: 0,
    };

    /// An in-process transport: no handles, nothing crosses a process boundary.
    pub const IN_PROCESS: Capabilities = Capabilities {
        crosses_processes: false,
        passes_handles: false,
        os_waitable: false,
        queue_ring: 0,
    };
}

/// A transport: a way of making connected pairs of ends (one per backend crate).
///
/// Implementations are zero-sized marker types; the ends are [`Transport::End`]. A transport
/// is selected by type (`mp_core::connection::pipe_with::<T, MyTransport>()`) and recognised
/// by [`Transport::NAME`] when an end arrives from another process.
///
/// ```
/// use mp_ipc::{Capabilities, Channel, Endpoint, IpcError, Transport};
/// # use std::time::Duration;
/// # use mp_ipc::handle::{OwnedHandle, RawHandle};
/// #[derive(Debug)]
/// struct Null;
/// impl Channel for Null {
///     fn send_frame(&self, _: &[&[u8]]) -> Result<(), IpcError> { Err(IpcError::BrokenPipe) }
///     fn recv_frame_until(&self, _: &mut Vec<u8>, _: u64, _: mp_ipc::deadline::Deadline) -> Result<Vec<OwnedHandle>, IpcError> { Err(IpcError::Eof) }
///     fn poll(&self, _: Option<Duration>) -> Result<bool, IpcError> { Ok(true) }
/// }
/// impl Endpoint for Null {
///     type Transport = NullTransport;
///     fn handles(&self) -> Vec<RawHandle> { Vec::new() }
///     fn wait_handle(&self) -> Option<RawHandle> { None }
///     fn export(&self) -> Vec<u8> { Vec::new() }
///     fn adopt(_: Vec<OwnedHandle>, _: &[u8]) -> std::io::Result<Self> { Ok(Null) }
///     fn try_clone(&self) -> std::io::Result<Self> { Ok(Null) }
/// }
/// struct NullTransport;
/// impl Transport for NullTransport {
///     const NAME: &'static str = "null";
///     const CAPABILITIES: Capabilities = Capabilities::IN_PROCESS;
///     type End = Null;
///     fn pair() -> std::io::Result<(Null, Null)> { Ok((Null, Null)) }
/// }
/// let (a, _b) = NullTransport::pair().unwrap();
/// assert!(matches!(a.recv_frame(&mut Vec::new(), 10), Err(IpcError::Eof)));
/// ```
pub trait Transport: Sized + 'static {
    /// The name an end of this transport travels under (`"socket"`, `"shm"`, ...): unique
    /// among the transports of one build, stable across the processes of one program.
    const NAME: &'static str;
    /// What the transport can do.
    const CAPABILITIES: Capabilities;
    /// One end.
    type End: Endpoint<Transport = Self>;
    /// A connected pair of ends: what one sends, the other receives, both ways.
    fn pair() -> io::Result<(Self::End, Self::End)>;
}

/// One end of a transport, beyond moving frames.
///
/// Guarantees an implementation gives (the conformance kit checks them):
/// - everything [`Channel`] promises (whole frames, end of stream on peer death, bounded
///   allocation on a lying header, polling consumes nothing);
/// - an end handed to another process ([`handles`](Self::handles) plus
///   [`export`](Self::export), rebuilt there by [`adopt`](Self::adopt)) behaves exactly as
///   the original: no frame lost or duplicated, bytes already read ahead included;
/// - the peer sees end of stream only once *every* copy of an end is gone (clones made by
///   [`try_clone`](Self::try_clone), copies adopted in other processes, handles inherited
///   by a crashed process included);
/// - [`adopt`](Self::adopt) treats its input as hostile: wrong handle counts or kinds, a
///   damaged state description are an `InvalidData` error, never a panic or undefined
///   behaviour.
pub trait Endpoint: Channel + Debug + Sized + 'static {
    /// The transport this is an end of.
    type Transport: Transport<End = Self>;

    /// Every OS handle this end owns. All of them travel when the end moves to another
    /// process; a forked child closes the ones its target was not given. Empty for an
    /// in-process transport.
    fn handles(&self) -> Vec<RawHandle>;

    /// The OS handle that becomes ready (readable) when a frame or end of stream is there,
    /// for waiting on many ends at once; `None` if the transport has none (then
    /// `mp_core::wait` cannot take the end). It may become ready spuriously if
    /// [`confirm_ready`](Self::confirm_ready) says so.
    fn wait_handle(&self) -> Option<RawHandle>;

    /// A second handle that becomes ready when the peer may have gone, for transports whose
    /// wait handle cannot report that (shm on Windows: the peer's process handle).
    fn liveness_handle(&self) -> Option<RawHandle> {
        None
    }

    /// After the OS reported [`wait_handle`](Self::wait_handle) ready: whether the end
    /// really is (`None`: the OS is right). Checking prepares the next wait (re-arms a
    /// doorbell).
    fn confirm_ready(&self) -> Option<bool> {
        None
    }

    /// The state that travels beside [`handles`](Self::handles) when the end moves to
    /// another process (bytes already read ahead, a ring description). Called once, just
    /// before the end is sent away: it may take state out of this end, which is then only
    /// dropped.
    fn export(&self) -> Vec<u8>;

    /// Rebuilds an end from the handles and the state another process exported, in that
    /// order. Hostile input is an error, not a panic.
    fn adopt(handles: Vec<OwnedHandle>, state: &[u8]) -> io::Result<Self>;

    /// A second end on the same side (the OS handles duplicated): frames read through one
    /// are not seen by the other; the peer sees end of stream once both are gone.
    fn try_clone(&self) -> io::Result<Self>;
}

/// The one handle of an end made of a single OS object, out of what [`Endpoint::adopt`] was
/// given; any other count is an `InvalidData` error.
///
/// ```
/// assert!(mp_ipc::transport::single_handle(Vec::new()).is_err());
/// ```
pub fn single_handle(handles: Vec<OwnedHandle>) -> io::Result<OwnedHandle> {
    let count = handles.len();
    <[OwnedHandle; 1]>::try_from(handles)
        .map(|[h]| h)
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("an end of this transport carries exactly one handle, not {count}"),
            )
        })
}
