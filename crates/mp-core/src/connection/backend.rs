//! Transport backends, chosen per object: marker types for [`pipe_with`](super::pipe_with)
//! and the queues' `with_backend`, and the channel type that dispatches between them.

use std::time::Duration;

use mp_ipc::handle::{OwnedHandle, RawHandle};
use mp_ipc::{Channel, IpcError};

use crate::sys::Chan;

/// Which transport an object uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// Unix domain sockets (Unix) or named pipes (Windows); the kernel moves every byte.
    Socket,
    /// Ring buffers in shared memory (feature `shm`): no system call on the fast path.
    #[cfg(feature = "shm")]
    Shm,
}

mod sealed {
    pub trait Sealed {}
}

/// A transport backend, as a type: [`Socket`], or [`Shm`] with the `shm` feature.
/// [`DefaultBackend`] is what [`pipe`](crate::pipe) and the queues use.
pub trait Backend: sealed::Sealed {
    /// The backend this type stands for.
    const KIND: BackendKind;
}

/// The socket backend (Unix domain sockets, Windows named pipes).
#[derive(Debug, Clone, Copy, Default)]
pub struct Socket;
impl sealed::Sealed for Socket {}
impl Backend for Socket {
    const KIND: BackendKind = BackendKind::Socket;
}

/// The shared-memory backend (crate `mp-shm`): pipes are two single-producer
/// single-consumer byte rings plus a companion socket for liveness and sleeping; queues are
/// a multi-producer multi-consumer frame ring that overflows into the spool file. On
/// Windows the companion is a named pipe and the doorbells are event objects (see
/// `mp-shm`).
#[cfg(feature = "shm")]
#[cfg_attr(docsrs, doc(cfg(feature = "shm")))]
#[derive(Debug, Clone, Copy, Default)]
pub struct Shm;
#[cfg(feature = "shm")]
impl sealed::Sealed for Shm {}
#[cfg(feature = "shm")]
impl Backend for Shm {
    const KIND: BackendKind = BackendKind::Shm;
}

/// The backend of [`pipe`](crate::pipe), [`Queue::new`](crate::Queue::new) and friends:
/// [`Shm`] when the `shm` feature is on, else [`Socket`].
#[cfg(feature = "shm")]
pub type DefaultBackend = Shm;
/// The backend of [`pipe`](crate::pipe), [`Queue::new`](crate::Queue::new) and friends:
/// [`Shm`] when the `shm` feature is on, else [`Socket`].
#[cfg(not(feature = "shm"))]
pub type DefaultBackend = Socket;

/// A channel of any backend.
#[derive(Debug)]
pub(crate) enum AnyChan {
    Socket(Chan),
    #[cfg(feature = "shm")]
    Shm(mp_shm::ShmChannel),
}

/// The ring capacity of shm pipes (each direction).
#[cfg(feature = "shm")]
const SHM_RING: usize = mp_shm::DEFAULT_RING;

impl AnyChan {
    pub(crate) fn pair(kind: BackendKind) -> std::io::Result<(Self, Self)> {
        match kind {
            BackendKind::Socket => {
                let (a, b) = crate::sys::chan_pair()?;
                Ok((Self::Socket(a), Self::Socket(b)))
            }
            #[cfg(feature = "shm")]
            BackendKind::Shm => {
                let (a, b) = mp_shm::ShmChannel::pair(SHM_RING)?;
                Ok((Self::Shm(a), Self::Shm(b)))
            }
        }
    }

    pub(crate) fn kind(&self) -> BackendKind {
        match self {
            Self::Socket(_) => BackendKind::Socket,
            #[cfg(feature = "shm")]
            Self::Shm(_) => BackendKind::Shm,
        }
    }

    /// Every OS handle this end owns.
    pub(crate) fn handles(&self) -> Vec<RawHandle> {
        match self {
            Self::Socket(c) => vec![crate::sys::chan_raw_handle(c)],
            #[cfg(feature = "shm")]
            Self::Shm(c) => c.handles().to_vec(),
        }
    }

    /// The handle that `wait` polls.
    pub(crate) fn wait_handle(&self) -> RawHandle {
        match self {
            Self::Socket(c) => crate::sys::chan_raw_handle(c),
            #[cfg(feature = "shm")]
            Self::Shm(c) => c.wait_handle(),
        }
    }

    /// After the OS reported this end ready: whether it really is (`None`: the OS knows).
    /// An shm end's doorbell may ring for other reasons (a frame already taken by another
    /// holder, a peer process coming or going); checking re-arms it.
    pub(crate) fn recheck(&self) -> Option<bool> {
        match self {
            Self::Socket(_) => None,
            #[cfg(feature = "shm")]
            Self::Shm(c) => Some(c.prepare_wait()),
        }
    }

    /// A second handle `wait` includes, which becomes ready when the peer may have gone
    /// (shm on Windows: the peer's process; its doorbell event cannot tell).
    pub(crate) fn liveness_handle(&self) -> Option<RawHandle> {
        match self {
            Self::Socket(_) => None,
            #[cfg(feature = "shm")]
            Self::Shm(c) => c.liveness_handle(),
        }
    }

    /// What travels with the handles to another process: read-ahead bytes (socket) or the
    /// ring description (shm).
    pub(crate) fn extra(&self) -> Vec<u8> {
        match self {
            Self::Socket(c) => c.buffered(),
            #[cfg(feature = "shm")]
            Self::Shm(c) => c.describe(),
        }
    }

    /// Rebuilds an end received from another process.
    pub(crate) fn from_parts(
        kind: u8,
        mut handles: Vec<OwnedHandle>,
        extra: &[u8],
    ) -> std::io::Result<Self> {
        let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
        match kind {
            0 => {
                if handles.len() != 1 {
                    return Err(bad("a socket connection carries exactly one handle"));
                }
                let c = crate::sys::chan_from_handle(handles.remove(0))?;
                c.unread(extra);
                Ok(Self::Socket(c))
            }
            #[cfg(feature = "shm")]
            1 => Ok(Self::Shm(mp_shm::ShmChannel::from_parts(handles, extra)?)),
            _ => Err(bad("a connection of a backend this build does not have")),
        }
    }

    pub(crate) fn kind_tag(&self) -> u8 {
        match self {
            Self::Socket(_) => 0,
            #[cfg(feature = "shm")]
            Self::Shm(_) => 1,
        }
    }

    pub(crate) fn try_clone(&self) -> std::io::Result<Self> {
        Ok(match self {
            Self::Socket(c) => Self::Socket(crate::sys::chan_try_clone(c)?),
            #[cfg(feature = "shm")]
            Self::Shm(c) => Self::Shm(c.try_clone()?),
        })
    }
}

macro_rules! dispatch {
    ($self:ident, $c:ident => $e:expr) => {
        match $self {
            AnyChan::Socket($c) => $e,
            #[cfg(feature = "shm")]
            AnyChan::Shm($c) => $e,
        }
    };
}

impl Channel for AnyChan {
    fn send_frame(&self, parts: &[&[u8]]) -> Result<(), IpcError> {
        dispatch!(self, c => c.send_frame(parts))
    }

    fn recv_frame(&self, buf: &mut Vec<u8>, max_len: u64) -> Result<(), IpcError> {
        dispatch!(self, c => c.recv_frame(buf, max_len))
    }

    fn poll(&self, timeout: Option<Duration>) -> Result<bool, IpcError> {
        dispatch!(self, c => c.poll(timeout))
    }

    fn send_frame_with_handles(
        &self,
        parts: &[&[u8]],
        handles: &[RawHandle],
    ) -> Result<(), IpcError> {
        dispatch!(self, c => c.send_frame_with_handles(parts, handles))
    }

    fn has_buffered(&self) -> bool {
        dispatch!(self, c => c.has_buffered())
    }

    fn buffered(&self) -> Vec<u8> {
        dispatch!(self, c => c.buffered())
    }

    fn unread(&self, bytes: &[u8]) {
        dispatch!(self, c => c.unread(bytes))
    }

    fn recv_frame_into(
        &self,
        out: &mut [u8],
        max_len: u64,
    ) -> Result<Result<usize, Vec<u8>>, IpcError> {
        dispatch!(self, c => c.recv_frame_into(out, max_len))
    }

    fn recv_frame_with_handles(
        &self,
        buf: &mut Vec<u8>,
        max_len: u64,
    ) -> Result<Vec<OwnedHandle>, IpcError> {
        dispatch!(self, c => c.recv_frame_with_handles(buf, max_len))
    }

    fn recv_frame_until(
        &self,
        buf: &mut Vec<u8>,
        max_len: u64,
        deadline: mp_ipc::deadline::Deadline,
    ) -> Result<Vec<OwnedHandle>, IpcError> {
        dispatch!(self, c => c.recv_frame_until(buf, max_len, deadline))
    }
}

/// The longest a socket-backend receive or [`wait`](crate::wait) keeps asking without
/// blocking before it sleeps (process-wide; 20 µs unless `MP_SPIN_US` says otherwise).
/// Windows channels do not spin: zero there.
///
/// ```
/// use std::time::Duration;
/// mp_core::connection::set_socket_spin_limit(Duration::ZERO); // sleep at once
/// assert_eq!(mp_core::connection::socket_spin_limit(), Duration::ZERO);
/// ```
pub fn socket_spin_limit() -> Duration {
    crate::sys::socket_spin_limit()
}

/// Sets [`socket_spin_limit`] for this process (zero: sleep at once; no effect on
/// Windows). Children read `MP_SPIN_US` from their environment instead.
pub fn set_socket_spin_limit(limit: Duration) {
    crate::sys::set_socket_spin_limit(limit)
}

/// The longest an shm waiter spins before it sleeps (process-wide; see `mp_shm`).
#[cfg(feature = "shm")]
pub fn shm_spin_limit() -> Duration {
    mp_shm::spin_limit()
}

/// Sets [`shm_spin_limit`] for this process (zero: sleep at once). Children read
/// `MP_SHM_SPIN_US` from their environment instead.
#[cfg(feature = "shm")]
pub fn set_shm_spin_limit(limit: Duration) {
    mp_shm::set_spin_limit(limit)
}
