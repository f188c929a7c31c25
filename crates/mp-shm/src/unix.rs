//! The Unix implementation: a `memfd` (or unlinked POSIX shm) segment holding the two
//! rings of [`crate::ring`], plus a companion Unix socket pair for liveness, sleeping and
//! descriptor passing.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use mp_ipc::deadline::Deadline;
use mp_ipc::frame::{split_off_prefix, FrameHeader, Prefix};
use mp_ipc::memory::Mapping;
use mp_ipc::{Channel, IpcError};
use mp_unix::UnixChannel;

#[cfg(test)]
use crate::ring::MIN_RING;
use crate::ring::{corrupt, read_description, round_cap, total_len, Ring, RingEnd};

/// The start of the body of the companion frame that carries a frame's descriptors; the
/// ring position of that frame's header follows (8 bytes, little-endian).
const HANDLES_MARK: &[u8] = b"H";

/// The most descriptors the companion may hold for frames not yet read. A peer that sends
/// more (or sends them for no frame) breaks the channel: it cannot make this process run
/// out of descriptors.
pub const MAX_PENDING_FDS: usize = 1024;

/// Descriptors taken off the companion for the frame whose header is at ring position `at`.
struct Batch {
    at: u64,
    fds: Vec<OwnedFd>,
}

/// A mapped segment: the object and the one mapping type of `mp` on Unix.
struct Mem {
    fd: OwnedFd,
    map: Mapping,
}

impl Mem {
    /// A new segment, its size sealed where the system can: no holder can shrink it under
    /// the other's mapping.
    fn create(len: usize) -> io::Result<Self> {
        Self::map(mp_unix::memory::create(c"mp-shm-pipe", len)?, len)
    }

    /// Maps `len` bytes; an object smaller than announced is `InvalidData`.
    fn map(fd: OwnedFd, len: usize) -> io::Result<Self> {
        let map = mp_unix::memory::map(fd.as_fd(), len)?;
        Ok(Self { fd, map })
    }
}

/// One end of a shared-memory channel (documented at the crate root).
pub struct ShmChannel {
    /// Declared before `mem`: it points into the mapping.
    ring: Ring,
    mem: Mem,
    bell: UnixChannel,
    /// Descriptor batches taken off the companion ahead of the frames that announce them.
    fds: Mutex<Batches>,
}

/// The descriptor batches waiting for their frames.
#[derive(Default)]
struct Batches {
    queue: VecDeque<Batch>,
    /// Descriptors in `queue`.
    count: usize,
    /// Set when the peer broke the rules: every receive fails from then on.
    broken: Option<String>,
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
        a.init_segment();
        let b = Self::wrap(Mem::map(fd2, total_len(cap))?, s1, 1, cap);
        Ok((a, b))
    }

    fn wrap(mem: Mem, bell: UnixChannel, side: u8, cap: usize) -> Self {
        Self {
            // SAFETY: the mapping is total_len(cap) bytes and lives in `mem` beside it.
            ring: unsafe { Ring::new(mem.map.as_ptr(), side, cap) },
            mem,
            bell,
            fds: Mutex::new(Batches::default()),
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

    /// Rebuilds an end from [`handles`](ShmChannel::handles) (owned copies, same order) and
    /// [`describe`](ShmChannel::describe). Anything inconsistent (wrong count, a capacity
    /// that is not a power of two, a segment smaller than announced, a bad magic) is an
    /// `InvalidData` error, never a bad mapping.
    pub fn from_parts(handles: Vec<OwnedFd>, desc: &[u8]) -> io::Result<Self> {
        let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
        let [mem_fd, sock]: [OwnedFd; 2] = handles
            .try_into()
            .map_err(|_| bad("a shared-memory channel needs exactly two handles"))?;
        let (side, cap) = read_description(desc)?;
        let mem = Mem::map(mem_fd, total_len(cap))?;
        let ch = Self::wrap(mem, UnixChannel::from_fd(sock)?, side, cap);
        ch.check_segment()?;
        Ok(ch)
    }

    /// A second handle on the same end (duplicated descriptors, its own mapping).
    pub fn try_clone(&self) -> io::Result<Self> {
        let cap = self.ring.cap;
        let mem = Mem::map(self.mem.fd.try_clone()?, total_len(cap))?;
        Ok(Self::wrap(mem, self.bell.try_clone()?, self.ring.side, cap))
    }

    fn fds_guard(&self) -> MutexGuard<'_, Batches> {
        self.fds.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Breaks the channel for a peer that broke the rules of descriptor passing: every
    /// descriptor held is closed, the rx ring marked broken.
    fn stray(&self, b: &mut Batches, why: String) -> IpcError {
        b.queue.clear();
        b.count = 0;
        b.broken = Some(why.clone());
        self.hdr(self.rx()).f.0.broken.store(1, Ordering::Release);
        IpcError::Corrupt(why)
    }

    /// Checks a batch that just came off the companion, tagged with ring position `at`, and
    /// queues it. Its frame cannot have been read yet (a reader waits for the batch first)
    /// and is published at `at` by a sender holding the tx lock: `at` lies between the
    /// ring's read and write positions, after the last batch's.
    fn queue_batch(&self, at: u64, fds: Vec<OwnedFd>) -> Result<(), IpcError> {
        let mut b = self.fds_guard();
        if b.broken.is_some() {
            return Ok(()); // closed at once
        }
        let h = self.hdr(self.rx());
        let r = h.r.0.pos.load(Ordering::Acquire);
        let w = h.w.0.pos.load(Ordering::Acquire);
        let after_last = b
            .queue
            .back()
            .is_none_or(|last| at.wrapping_sub(last.at).wrapping_sub(1) < w.wrapping_sub(last.at));
        if at.wrapping_sub(r) > w.wrapping_sub(r) || !after_last {
            return Err(self.stray(
                &mut b,
                format!("{} descriptors came for no message", fds.len()),
            ));
        }
        if b.count + fds.len() > MAX_PENDING_FDS {
            return Err(self.stray(
                &mut b,
                format!("more than {MAX_PENDING_FDS} descriptors waiting for their messages"),
            ));
        }
        b.count += fds.len();
        b.queue.push_back(Batch { at, fds });
        Ok(())
    }

    /// What the frame at ring position `at` needs from the companion: its descriptors if
    /// `has_handles` (sent before the frame was published: waited for up to 5 s or
    /// `deadline`), else nothing, and no batch may be tagged at or before it.
    pub(crate) fn frame_handles(
        &self,
        at: u64,
        has_handles: bool,
        deadline: Deadline,
    ) -> Result<Vec<OwnedFd>, IpcError> {
        let stop = Deadline::after(Duration::from_secs(5)).min(deadline);
        loop {
            {
                let mut b = self.fds_guard();
                if let Some(why) = &b.broken {
                    return Err(IpcError::Corrupt(why.clone()));
                }
                // Tags are positions that wrap: compare through the distance from the
                // frame, which is never more than a ring when the tag is genuine.
                let cap = self.ring.cap as u64;
                match b.queue.front().map(|f| f.at.wrapping_sub(at)) {
                    Some(0) if has_handles => {
                        let batch = b.queue.pop_front().expect("checked");
                        b.count -= batch.fds.len();
                        return Ok(batch.fds);
                    }
                    Some(d) if d == 0 || d > cap => {
                        let n = b.queue.front().map_or(0, |f| f.fds.len());
                        return Err(self.stray(
                            &mut b,
                            format!(
                                "{n} descriptors came with a message that did not announce them"
                            ),
                        ));
                    }
                    Some(_) if has_handles => {
                        return Err(self
                            .stray(&mut b, "a message announced handles that never came".into()));
                    }
                    _ if !has_handles => return Ok(Vec::new()),
                    _ => {}
                }
            }
            // Announced, not here yet: they are on the companion.
            self.drain()?;
            if !self.fds_guard().queue.is_empty() {
                continue;
            }
            if self.ring.is_gone() {
                return Err(corrupt("a frame announced handles that never came"));
            }
            match stop.remaining() {
                Some(left) if left.is_zero() => {
                    return Err(if deadline.expired() {
                        IpcError::Timeout
                    } else {
                        corrupt("a frame announced handles that never came")
                    })
                }
                left => {
                    mp_unix::poll::poll_readable(
                        self.bell.as_raw_fd(),
                        Some(left.unwrap_or(crate::ring::SLICE).min(crate::ring::SLICE)),
                    )?;
                }
            }
        }
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

    fn damaged(&self) -> bool {
        self.mem.map.damaged()
    }

    fn pid_alive(&self, pid: u32) -> bool {
        mp_unix::process::pid_alive(pid)
    }

    fn pid_plausible(&self, pid: u32) -> bool {
        mp_unix::process::pid_plausible(pid)
    }

    fn pid_participates(&self, pid: u32) -> Option<bool> {
        mp_unix::process::holds_object(pid, self.mem.fd.as_fd())
    }

    fn current_tid(&self) -> u32 {
        mp_unix::process::current_tid()
    }

    fn current_pid(&self) -> u32 {
        mp_unix::process::current_pid()
    }

    fn thread_alive(&self, tid: u32) -> bool {
        mp_unix::process::thread_alive(tid)
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
                // A doorbell.
                Ok(fds) if buf.is_empty() && fds.is_empty() => {}
                Ok(fds) => match buf.strip_prefix(HANDLES_MARK) {
                    Some(tag) if tag.len() == 8 => {
                        let at = u64::from_le_bytes(tag.try_into().expect("8 bytes"));
                        self.queue_batch(at, fds)?;
                    }
                    _ => {
                        let mut b = self.fds_guard();
                        return Err(self.stray(
                            &mut b,
                            "the peer sent something other than a doorbell or descriptors".into(),
                        ));
                    }
                },
                Err(IpcError::Corrupt(why)) => {
                    let mut b = self.fds_guard();
                    return Err(self.stray(&mut b, why));
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

impl ShmChannel {
    /// Sends a frame with descriptors: they go first on the companion, tagged with the
    /// frame's ring position, so they wait there when the frame is read.
    pub(crate) fn send_with_handles(&self, parts: &[&[u8]], fds: &[RawFd]) -> Result<(), IpcError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        self.send_ring(FrameHeader::new(len).with_handles(), parts, |at| {
            self.bell
                .send_frame_with_handles(&[HANDLES_MARK, &at.to_le_bytes()], fds)
        })
    }

    /// The receive of every [`Channel`] method: the ring's, with the descriptors of frames
    /// that announce some (and no others) from the companion.
    pub(crate) fn recv_until(
        &self,
        buf: &mut Vec<u8>,
        max_len: u64,
        deadline: Deadline,
    ) -> Result<Vec<OwnedFd>, IpcError> {
        self.recv_ring(buf, max_len, 0, deadline, |at, has_handles| {
            self.frame_handles(at, has_handles, deadline)
        })
        .map(|(_, fds)| fds)
    }

    /// [`Channel::recv_frame_split_until`]: the ring's split (the descriptors travel
    /// beside the body).
    pub(crate) fn recv_split_until(
        &self,
        prefix: &mut Prefix,
        prefix_len: fn(u64) -> usize,
        buf: &mut Vec<u8>,
        max_len: u64,
        deadline: Deadline,
    ) -> Result<(usize, Vec<OwnedFd>), IpcError> {
        let (_, fds, split) = self.recv_ring_split(
            buf,
            Some((prefix, prefix_len)),
            max_len,
            0,
            deadline,
            |at, has_handles| self.frame_handles(at, has_handles, deadline),
        )?;
        let n = split.unwrap_or_else(|| split_off_prefix(buf, prefix, prefix_len));
        Ok((n, fds))
    }
}

impl Drop for ShmChannel {
    fn drop(&mut self) {
        self.abandon_partial();
        // Descriptors received for frames nobody read are closed with the queue.
        self.fds_guard().queue.clear();
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
        assert!(matches!(e, IpcError::Corrupt(_)), "{e:?}");
    }
}
