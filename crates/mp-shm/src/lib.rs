//! The shared-memory ring-buffer backend of `mp`.
//!
//! A [`ShmChannel`] is one end of a duplex, framed channel whose bytes move through two
//! single-producer single-consumer byte rings (one per direction) in an anonymous
//! shared-memory segment, so a message between two processes is two `memcpy`s and no system
//! call on the fast path. The rings, the frame format and the robustness rules are the same
//! on every platform (module `ring`); a small platform module supplies the segment, the
//! doorbell a sleeper waits on, and the liveness signal:
//!
//! | | Unix (`unix.rs`) | Windows (`windows.rs`) |
//! |---|---|---|
//! | segment | `memfd_create` (Linux), unlinked `shm_open` | pagefile-backed section |
//! | doorbell | a frame on the companion socket | a manual-reset event per side |
//! | liveness | companion socket pair at EOF | companion named pipe broken; the peer's process handle wakes sleepers |
//! | handles in frames | `SCM_RIGHTS` on the companion | not supported (as with named pipes) |
//!
//! - **Liveness.** The system closes a dead process's handles, so a peer that exits or
//!   crashes shows up on the companion: a reader gets `Eof` (or `Truncated` in the middle
//!   of a streamed frame), a writer `BrokenPipe`, never a hang.
//! - **Sleeping.** A reader first spins (adaptively, for at most [`spin_limit`]); then it
//!   *arms* the ring, re-checks, and sleeps on its doorbell. A writer that finds the ring
//!   armed rings the doorbell. The doorbell handle is what `mp_core::wait` waits on (with
//!   the peer's process handle beside it on Windows), so waiting on many shm connections at
//!   once works like sockets. A sleep inside the channel lasts at most 100 ms, after which
//!   the sleeper re-checks the ring and the companion.
//! - **Handles.** On Unix, descriptors sent with a frame travel on the companion
//!   (`SCM_RIGHTS`) ahead of the frame that announces them.
//!
//! Frames of up to the ring capacity are published at once (the reader never sees half of
//! one); longer frames stream through the ring in chunks, so size is never a limit. The
//! segment is anonymous and travels to other processes as a handle: the system frees it
//! when the last holder exits, so a crash leaks nothing. Everything read from the shared
//! segment is validated (positions, lengths, magic); damage is an `InvalidData` error.

#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
#[cfg(any(test, feature = "fuzzing"))]
mod heap;
mod model;
mod ring;
#[cfg(test)]
mod tests;
#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as imp;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as imp;

/// One end of a shared-memory channel. `Send` and `Sync`; several handles on the same end
/// (see [`try_clone`](ShmChannel::try_clone)) take turns through a per-side lock.
///
/// ```
/// use mp_ipc::Channel;
/// let (a, b) = mp_shm::ShmChannel::pair(mp_shm::DEFAULT_RING).unwrap();
/// a.send_frame(&[b"hello"]).unwrap();
/// let mut buf = Vec::new();
/// b.recv_frame(&mut buf, 1024).unwrap();
/// assert_eq!(buf, b"hello");
/// drop(a);
/// assert!(matches!(b.recv_frame(&mut buf, 1024), Err(mp_ipc::IpcError::Eof)));
/// ```
pub use imp::ShmChannel;

use std::io;
use std::time::Duration;

use mp_ipc::deadline::Deadline;
use mp_ipc::frame::{FrameHeader, Prefix};
use mp_ipc::handle::{OwnedHandle, RawHandle};
use mp_ipc::{Capabilities, Channel, Endpoint, IpcError, Transport};

use ring::RingEnd;

/// The name under which this backend reports itself.
///
/// ```
/// assert_eq!(mp_shm::BACKEND_NAME, "shm");
/// ```
pub const BACKEND_NAME: &str = "shm";

/// The shared-memory ring transport (`mp_ipc::Transport`): ends are [`ShmChannel`]s whose
/// rings hold [`DEFAULT_RING`] bytes each way. An end travels to another process as its
/// handles (segment and companion; on Windows also both doorbell events) plus a short
/// description (side, capacity), checked on arrival.
///
/// ```
/// use mp_ipc::{Channel, Transport};
/// let (a, b) = mp_shm::Shm::pair().unwrap();
/// a.send_frame(&[b"hi"]).unwrap();
/// let mut buf = Vec::new();
/// b.recv_frame(&mut buf, 16).unwrap();
/// assert_eq!(buf, b"hi");
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Shm;

impl Transport for Shm {
    const NAME: &'static str = BACKEND_NAME;
    const CAPABILITIES: Capabilities = Capabilities {
        crosses_processes: true,
        passes_handles: true,
        os_waitable: true,
        queue_ring: QUEUE_RING,
    };
    type End = ShmChannel;

    fn pair() -> io::Result<(ShmChannel, ShmChannel)> {
        ShmChannel::pair(DEFAULT_RING)
    }
}

// SAFETY: the mapping is plain shared memory accessed through atomics and bounds-checked
// copies; every other field of either platform's end is thread-safe.
unsafe impl Send for ShmChannel {}
// SAFETY: as above.
unsafe impl Sync for ShmChannel {}

impl std::fmt::Debug for ShmChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmChannel")
            .field("side", &self.ring().side)
            .field("cap", &self.ring().cap)
            .field("handles", &self.handles())
            .finish()
    }
}

impl ShmChannel {
    /// What a receiving process needs besides the handles: the side and the capacity.
    pub fn describe(&self) -> Vec<u8> {
        ring::description(self.ring().side, self.ring().cap)
    }

    /// The ring capacity of each direction.
    pub fn capacity(&self) -> usize {
        self.ring().cap
    }
}

/// The same on both platforms: the ring protocol (`ring::RingEnd`), with the platform's
/// handle passing (`send_with_handles`, `recv_until`, `frame_handles`).
impl Channel for ShmChannel {
    fn send_frame(&self, parts: &[&[u8]]) -> Result<(), IpcError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        self.send_ring(FrameHeader::new(len), parts, |_| Ok(()))
    }

    fn send_frame_with_handles(
        &self,
        parts: &[&[u8]],
        handles: &[RawHandle],
    ) -> Result<(), IpcError> {
        if handles.is_empty() {
            return self.send_frame(parts);
        }
        self.send_with_handles(parts, handles)
    }

    fn recv_frame_until(
        &self,
        buf: &mut Vec<u8>,
        max_len: u64,
        deadline: Deadline,
    ) -> Result<Vec<OwnedHandle>, IpcError> {
        self.recv_until(buf, max_len, deadline)
    }

    fn recv_frame_split_until(
        &self,
        prefix: &mut Prefix,
        prefix_len: fn(u64) -> usize,
        body: &mut Vec<u8>,
        max_len: u64,
        deadline: Deadline,
    ) -> Result<(usize, Vec<OwnedHandle>), IpcError> {
        self.recv_split_until(prefix, prefix_len, body, max_len, deadline)
    }

    fn recv_frame_into(
        &self,
        out: &mut [u8],
        max_len: u64,
    ) -> Result<Result<usize, Vec<u8>>, IpcError> {
        // Straight into `out` when the frame fits and announces no handles; otherwise the
        // whole frame through `recv_until`.
        let direct = self.recv_ring_into(out, max_len, |at, _| {
            self.frame_handles(at, false, Deadline::NEVER)
        })?;
        if let Some(n) = direct {
            return Ok(Ok(n));
        }
        let mut v = Vec::new();
        drop(self.recv_until(&mut v, max_len, Deadline::NEVER)?);
        Ok(mp_ipc::frame::into_slice(v, out))
    }

    fn poll(&self, timeout: Option<Duration>) -> Result<bool, IpcError> {
        self.poll_rx(timeout)
    }

    fn has_buffered(&self) -> bool {
        self.prepare_wait()
    }
}

/// The same on both platforms: each platform module gives `ShmChannel` the inherent methods
/// these delegate to.
impl Endpoint for ShmChannel {
    type Transport = Shm;

    fn handles(&self) -> Vec<RawHandle> {
        ShmChannel::handles(self).to_vec()
    }

    fn wait_handle(&self) -> Option<RawHandle> {
        Some(ShmChannel::wait_handle(self))
    }

    fn liveness_handle(&self) -> Option<RawHandle> {
        ShmChannel::liveness_handle(self)
    }

    /// A doorbell may ring for other reasons (a frame already taken by another holder, a
    /// peer process coming or going); checking re-arms it.
    fn confirm_ready(&self) -> Option<bool> {
        Some(self.prepare_wait())
    }

    fn export(&self) -> Vec<u8> {
        self.describe()
    }

    fn adopt(handles: Vec<OwnedHandle>, state: &[u8]) -> io::Result<Self> {
        ShmChannel::from_parts(handles, state)
    }

    fn try_clone(&self) -> io::Result<Self> {
        ShmChannel::try_clone(self)
    }
}

/// The capacity of each direction's ring, in bytes (a power of two).
pub const DEFAULT_RING: usize = 256 << 10;

/// The ring a queue over this transport keeps in front of its spool
/// ([`Capabilities::queue_ring`]).
pub const QUEUE_RING: usize = 256 << 10;

/// Default for [`spin_limit`]: about twice what a cross-core wake-up costs on a small
/// machine (~20 us), the classic bound that keeps spinning within 2x of the best choice.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(50);

static SPIN: mp_ipc::spin::SpinLimit =
    mp_ipc::spin::SpinLimit::new("MP_SHM_SPIN_US", DEFAULT_SPIN).off_on_one_cpu();

/// The longest a waiter spins before it sleeps (process-wide). `MP_SHM_SPIN_US` in the
/// environment overrides the default; [`set_spin_limit`] overrides both. On a machine with
/// one CPU it is zero unless set.
///
/// ```
/// mp_shm::set_spin_limit(std::time::Duration::from_micros(10));
/// assert_eq!(mp_shm::spin_limit(), std::time::Duration::from_micros(10));
/// ```
pub fn spin_limit() -> Duration {
    // Under loom every wait sleeps: a spin is a loop the model would explore step by step.
    if cfg!(loom) {
        return Duration::ZERO;
    }
    SPIN.get()
}

/// Sets [`spin_limit`] for this process (zero: sleep at once).
pub fn set_spin_limit(limit: Duration) {
    SPIN.set(limit)
}
