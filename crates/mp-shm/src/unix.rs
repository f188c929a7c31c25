//! The Unix implementation: a `memfd` (or unlinked POSIX shm) segment holding the two
//! rings of [`crate::ring`], plus a companion Unix socket pair for liveness, sleeping and
//! descriptor passing.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use mp_ipc::frame::FrameHeader;
use mp_ipc::memory::Mapping;
use mp_ipc::{Channel, IpcError};
use mp_unix::UnixChannel;

#[cfg(test)]
use crate::ring::MIN_RING;
use crate::ring::{corrupt, round_cap, total_len, valid_cap, Ring, RingEnd, MAGIC};

/// The body of the companion frame that carries a frame's descriptors.
const HANDLES_MARK: &[u8] = b"H";

/// A mapped segment: the object and the one mapping type of `mp` on Unix.
struct Mem {
    fd: OwnedFd,
    map: Mapping,
}

impl Mem {
    fn create(len: usize) -> io::Result<Self> {
        Self::map(mp_unix::memory::create(c"mp-shm-pipe", len)?, len)
    }

    /// Maps `len` bytes; an object smaller than announced is `InvalidData`.
    fn map(fd: OwnedFd, len: usize) -> io::Result<Self> {
        let map = mp_unix::memory::map(fd.as_fd(), len)?;
        Ok(Self { fd, map })
    }
}

fn pid_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

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
pub struct ShmChannel {
    /// Declared before `mem`: it points into the mapping.
    ring: Ring,
    mem: Mem,
    bell: UnixChannel,
    /// Descriptor batches taken off the companion ahead of the frames that announce them.
    fds: Mutex<VecDeque<Vec<OwnedFd>>>,
}

// SAFETY: the mapping is plain shared memory accessed through atomics and bounds-checked
// copies; every field is thread-safe.
unsafe impl Send for ShmChannel {}
// SAFETY: as above.
unsafe impl Sync for ShmChannel {}

impl std::fmt::Debug for ShmChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmChannel")
            .field("side", &self.ring.side)
            .field("cap", &self.ring.cap)
            .field("segment", &self.mem.fd.as_raw_fd())
            .field("companion", &self.bell.as_raw_fd())
            .finish()
    }
}

impl ShmChannel {
    /// A connected pair whose rings hold `cap` bytes each (rounded up to a power of two,
    /// at least 4 KiB).
    pub fn pair(cap: usize) -> io::Result<(Self, Self)> {
        let cap = round_cap(cap);
        let mem = Mem::create(total_len(cap))?;
        let fd2 = mem.fd.try_clone()?;
        let (s0, s1) = UnixChannel::pair()?;
        let a = Self::wrap(mem, s0, 0, cap);
        a.meta().magic.store(MAGIC, Ordering::Relaxed);
        a.meta().cap.store(cap as u64, Ordering::Release);
        let b = Self::wrap(Mem::map(fd2, total_len(cap))?, s1, 1, cap);
        Ok((a, b))
    }

    fn wrap(mem: Mem, bell: UnixChannel, side: u8, cap: usize) -> Self {
        Self {
            // SAFETY: the mapping is total_len(cap) bytes and lives in `mem` beside it.
            ring: unsafe { Ring::new(mem.map.as_ptr(), side, cap) },
            mem,
            bell,
            fds: Mutex::new(VecDeque::new()),
        }
    }

    /// The descriptors that make up this end: the segment, then the companion socket.
    pub fn handles(&self) -> [RawFd; 2] {
        [self.mem.fd.as_raw_fd(), self.bell.as_raw_fd()]
    }

    /// The descriptor that becomes readable when this end should look again (a doorbell
    /// after [`prepare_wait`](ShmChannel::prepare_wait), or the peer's end of life).
    pub fn wait_handle(&self) -> RawFd {
        self.bell.as_raw_fd()
    }

    /// A second handle an outside wait should include: none on Unix, where the companion
    /// socket signals the peer's end too.
    pub fn liveness_handle(&self) -> Option<RawFd> {
        None
    }

    /// What a receiving process needs besides the handles: the side and the capacity.
    pub fn describe(&self) -> Vec<u8> {
        let mut v = vec![self.ring.side];
        v.extend_from_slice(&(self.ring.cap as u64).to_le_bytes());
        v
    }

    /// Rebuilds an end from [`handles`](ShmChannel::handles) (owned copies, same order) and
    /// [`describe`](ShmChannel::describe). Anything inconsistent (wrong count, a capacity
    /// that is not a power of two, a segment smaller than announced, a bad magic) is an
    /// `InvalidData` error, never a bad mapping.
    pub fn from_parts(handles: Vec<OwnedFd>, desc: &[u8]) -> io::Result<Self> {
        let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
        let [mem_fd, sock]: [OwnedFd; 2] = handles
            .try_into()
            .map_err(|_| bad("a shared-memory channel needs exactly two handles"))?;
        let [side, c0, c1, c2, c3, c4, c5, c6, c7] = desc else {
            return Err(bad("bad shared-memory channel description"));
        };
        if *side > 1 {
            return Err(bad("bad shared-memory channel description"));
        }
        let cap = valid_cap(u64::from_le_bytes([*c0, *c1, *c2, *c3, *c4, *c5, *c6, *c7]))
            .ok_or_else(|| bad("bad shared-memory ring capacity"))?;
        let mem = Mem::map(mem_fd, total_len(cap))?;
        let ch = Self::wrap(mem, UnixChannel::from_fd(sock)?, *side, cap);
        if ch.meta().magic.load(Ordering::Acquire) != MAGIC
            || ch.meta().cap.load(Ordering::Acquire) != cap as u64
        {
            return Err(bad(
                "the segment is not a shared-memory channel of this size",
            ));
        }
        Ok(ch)
    }

    /// A second handle on the same end (duplicated descriptors, its own mapping).
    pub fn try_clone(&self) -> io::Result<Self> {
        let cap = self.ring.cap;
        let mem = Mem::map(self.mem.fd.try_clone()?, total_len(cap))?;
        Ok(Self::wrap(mem, self.bell.try_clone()?, self.ring.side, cap))
    }

    /// The ring capacity of each direction.
    pub fn capacity(&self) -> usize {
        self.ring.cap
    }

    /// The descriptors of a frame announced with handles: taken off the companion, where
    /// they were sent before the frame was published.
    fn take_fds(&self) -> Result<Vec<OwnedFd>, IpcError> {
        loop {
            if let Some(fds) = self
                .fds
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front()
            {
                return Ok(fds);
            }
            if !self.bell.poll(Some(Duration::from_secs(5)))? {
                return Err(corrupt("a frame announced handles that never came"));
            }
            let mut buf = Vec::new();
            match self.bell.recv_frame_with_handles(&mut buf, 64) {
                Ok(fds) if !fds.is_empty() || buf == HANDLES_MARK => return Ok(fds),
                Ok(_) => {}
                Err(IpcError::Eof) => {
                    self.ring.set_gone();
                    return Err(corrupt("a frame announced handles that never came"));
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn fds_guard(&self) -> MutexGuard<'_, VecDeque<Vec<OwnedFd>>> {
        self.fds.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets this end up for an outside `poll` of [`wait_handle`](ShmChannel::wait_handle):
    /// true if a frame (or end of stream) is already there; otherwise arms the doorbell so
    /// the next frame makes the handle readable.
    pub fn prepare_wait(&self) -> bool {
        self.arm_for_outside_wait()
    }
}

impl RingEnd for ShmChannel {
    fn ring(&self) -> &Ring {
        &self.ring
    }

    fn pid_alive(&self, pid: u32) -> bool {
        pid_alive(pid)
    }

    /// Reads whatever waits on the companion: doorbells are dropped, descriptor batches
    /// kept for their frames, end of stream noted. One `poll` when nothing waits.
    fn drain(&self) -> Result<(), IpcError> {
        if self.ring.is_gone() {
            return Ok(());
        }
        while self.bell.poll(Some(Duration::ZERO))? {
            let mut buf = Vec::new();
            match self.bell.recv_frame_with_handles(&mut buf, 64) {
                Ok(fds) => {
                    if !fds.is_empty() || buf == HANDLES_MARK {
                        self.fds
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push_back(fds);
                    }
                }
                Err(IpcError::Eof | IpcError::Truncated { .. } | IpcError::BrokenPipe) => {
                    self.ring.set_gone();
                    return Ok(());
                }
                Err(IpcError::Io(e)) if e.raw_os_error() == Some(libc::ECONNRESET) => {
                    self.ring.set_gone();
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn ring_bell(&self) {
        let _ = self.bell.send_frame(&[]);
    }

    fn sleep(&self, slice: Duration) -> Result<(), IpcError> {
        mp_unix::poll::poll_readable(self.bell.as_raw_fd(), Some(slice))?;
        Ok(())
    }
}

impl Channel for ShmChannel {
    fn send_frame(&self, parts: &[&[u8]]) -> Result<(), IpcError> {
        let h = self.hdr(self.tx());
        let _g = self.lock_side(&h.w.0, &h.f.0)?;
        self.check_peer()?;
        let len: usize = parts.iter().map(|p| p.len()).sum();
        self.write_frame(FrameHeader::new(len), parts)
    }

    fn recv_frame(&self, buf: &mut Vec<u8>, max_len: u64) -> Result<(), IpcError> {
        self.recv_frame_with_handles(buf, max_len).map(drop)
    }

    fn poll(&self, timeout: Option<Duration>) -> Result<bool, IpcError> {
        self.poll_rx(timeout)
    }

    fn send_frame_with_handles(&self, parts: &[&[u8]], fds: &[RawFd]) -> Result<(), IpcError> {
        if fds.is_empty() {
            return self.send_frame(parts);
        }
        let h = self.hdr(self.tx());
        let _g = self.lock_side(&h.w.0, &h.f.0)?;
        self.check_peer()?;
        // The descriptors go first, so they wait on the companion when the frame is read.
        self.bell.send_frame_with_handles(&[HANDLES_MARK], fds)?;
        let len: usize = parts.iter().map(|p| p.len()).sum();
        self.write_frame(FrameHeader::new(len).with_handles(), parts)
    }

    fn has_buffered(&self) -> bool {
        self.prepare_wait()
    }

    fn recv_frame_with_handles(
        &self,
        buf: &mut Vec<u8>,
        max_len: u64,
    ) -> Result<Vec<OwnedFd>, IpcError> {
        let h = self.hdr(self.rx());
        let _g = self.lock_side(&h.r.0, &h.f.0)?;
        let header = self.next_header()?;
        let len = header.check(max_len)?;
        let fds = if header.has_handles {
            self.take_fds()?
        } else {
            Vec::new()
        };
        self.read_body(len, buf)?;
        Ok(fds)
    }

    fn recv_frame_into(
        &self,
        out: &mut [u8],
        max_len: u64,
    ) -> Result<Result<usize, Vec<u8>>, IpcError> {
        let ring = self.rx();
        let h = self.hdr(ring);
        let _g = self.lock_side(&h.r.0, &h.f.0)?;
        let header = self.next_header()?;
        let len = header.check(max_len)?;
        if header.has_handles || len > out.len() {
            let fds = if header.has_handles {
                self.take_fds()?
            } else {
                Vec::new()
            };
            drop(fds);
            let mut v = Vec::new();
            self.read_body(len, &mut v)?;
            return Ok(Err(v));
        }
        self.read_body_into(len, out).map(Ok)
    }
}

impl Drop for ShmChannel {
    fn drop(&mut self) {
        // Descriptors received for frames nobody read are closed with the queue.
        self.fds_guard().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_frames_of_many_parts_arrive_whole() {
        // Parts of every size, empty ones too, straddling the piece boundaries of a small
        // ring (pieces of 1 KiB), read both into a vector and into a caller's buffer.
        let (a, b) = ShmChannel::pair(MIN_RING).unwrap();
        let sizes = [0usize, 1, 1023, 0, 1025, 4096, 7, 0, 10_000, 3];
        let body: Vec<u8> = (0..sizes.iter().sum::<usize>())
            .map(|i| (i % 253) as u8)
            .collect();
        let expect = body.clone();
        let t = std::thread::spawn(move || {
            for _ in 0..2 {
                let mut parts = Vec::new();
                let mut at = 0;
                for n in sizes {
                    parts.push(&body[at..at + n]);
                    at += n;
                }
                a.send_frame(&parts).unwrap();
            }
            a
        });
        let mut buf = Vec::new();
        b.recv_frame(&mut buf, u64::MAX).unwrap();
        assert!(buf == expect);
        let mut out = vec![0u8; expect.len() + 5];
        assert_eq!(
            b.recv_frame_into(&mut out, u64::MAX).unwrap().unwrap(),
            expect.len()
        );
        assert!(out[..expect.len()] == expect[..]);
        drop(t.join().unwrap());
    }

    #[test]
    fn scribbled_positions_are_an_error() {
        let (a, b) = ShmChannel::pair(MIN_RING).unwrap();
        a.send_frame(&[b"abc"]).unwrap();
        a.hdr(0).w.0.pos.store(1 << 40, Ordering::Relaxed);
        let mut buf = Vec::new();
        let e = b.recv_frame(&mut buf, 100).unwrap_err();
        assert!(matches!(e, IpcError::Io(ref e) if e.kind() == io::ErrorKind::InvalidData));
    }
}
