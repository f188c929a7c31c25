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

mod ring;
#[cfg(test)]
mod tests;
#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub use unix::ShmChannel;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub use windows::ShmChannel;

use std::time::Duration;

/// The name under which this backend reports itself.
///
/// ```
/// assert_eq!(mp_shm::BACKEND_NAME, "shm");
/// ```
pub const BACKEND_NAME: &str = "shm";

/// The capacity of each direction's ring, in bytes (a power of two).
pub const DEFAULT_RING: usize = 256 << 10;

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
    SPIN.get()
}

/// Sets [`spin_limit`] for this process (zero: sleep at once).
pub fn set_spin_limit(limit: Duration) {
    SPIN.set(limit)
}
