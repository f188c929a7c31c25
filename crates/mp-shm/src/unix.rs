//! The Unix implementation: a `memfd` (or unlinked POSIX shm) segment with two SPSC byte
//! rings, plus a companion Unix socket pair for liveness, sleeping and descriptor passing.
//!
//! ```text
//! segment:  meta (magic, cap) | ring 0 header | ring 1 header | ... | data 0 | data 1
//! ring header:   [writer line: pos, lock, busy] [reader line: pos, lock, busy]
//!                [flags line: reader_armed, writer_armed, broken]
//! ```
//!
//! Side `s` writes ring `s` and reads ring `1 - s`. Positions are monotonic byte counts;
//! `pos % cap` is the offset. A frame is an 8-byte [`FrameHeader`] and its body, copied with
//! wrap-around.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mp_ipc::frame::{next_capacity, FrameHeader, HEADER_LEN};
use mp_ipc::{Channel, IpcError};
use mp_unix::UnixChannel;

const MAGIC: u64 = u64::from_le_bytes(*b"mpshmv01");
const MIN_RING: usize = 4096;
const MAX_RING: usize = 1 << 30;
/// Where the data of ring 0 starts (one page of headers).
const DATA_AT: usize = 4096;
/// A streamed frame is published in pieces of at most `cap / STREAM_DIV` bytes, so that
/// writer and reader copy at the same time.
const STREAM_DIV: usize = 4;
/// The longest single sleep: sleepers re-check everything this often (a safety net against
/// a doorbell lost to another holder of the same end).
const SLICE: Duration = Duration::from_millis(100);
/// How often a writer that is not blocked asks the kernel whether the peer is still there.
const LIVENESS_EVERY: Duration = Duration::from_millis(1);
/// The body of the companion frame that carries a frame's descriptors.
const HANDLES_MARK: &[u8] = b"H";

#[repr(C, align(64))]
struct Line<T>(T);

#[repr(C)]
struct Meta {
    magic: AtomicU64,
    cap: AtomicU64,
}

#[repr(C)]
struct Side {
    pos: AtomicU64,
    /// Pid of the holder of this side (0: free): several handles on one end take turns.
    lock: AtomicU32,
    /// Set while a holder is in the middle of a streamed frame.
    busy: AtomicU32,
}

#[repr(C)]
struct Flags {
    reader_armed: AtomicU32,
    writer_armed: AtomicU32,
    /// Set when a holder died in the middle of a frame: the stream is out of sync.
    broken: AtomicU32,
}

#[repr(C)]
struct RingHdr {
    w: Line<Side>,
    r: Line<Side>,
    f: Line<Flags>,
}

const RING_HDRS_AT: usize = 64;
const _: () = assert!(RING_HDRS_AT + 2 * std::mem::size_of::<RingHdr>() <= DATA_AT);

fn corrupt(what: impl Into<String>) -> IpcError {
    IpcError::Io(io::Error::new(
        io::ErrorKind::InvalidData,
        format!("shared-memory channel is corrupt: {}", what.into()),
    ))
}

/// A mapped segment.
struct Mem {
    fd: OwnedFd,
    ptr: NonNull<u8>,
    len: usize,
}

impl Mem {
    fn create(len: usize) -> io::Result<Self> {
        let fd = mp_unix::memory::anonymous_object(c"mp-shm-pipe")?;
        // SAFETY: ftruncate on a descriptor we own.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Self::map(fd, len)
    }

    fn map(fd: OwnedFd, len: usize) -> io::Result<Self> {
        // SAFETY: fstat fills a zeroed stat structure.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above, on a descriptor we own.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
            return Err(io::Error::last_os_error());
        }
        if (st.st_size as u64) < len as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "a shared-memory channel of {len} bytes was announced, the object has {}",
                    st.st_size
                ),
            ));
        }
        // SAFETY: mapping a descriptor we hold, no larger than the object.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Self { fd, ptr, len })
    }
}

impl Drop for Mem {
    fn drop(&mut self) {
        // SAFETY: the mapping came from mmap with this length and dies with self.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

fn pid_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn my_pid() -> u32 {
    std::process::id()
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
    mem: Mem,
    bell: UnixChannel,
    side: u8,
    cap: usize,
    peer_gone: AtomicBool,
    /// Nanoseconds since `born` of the last liveness check by a writer.
    last_check: AtomicU64,
    born: Instant,
    /// Descriptor batches taken off the companion ahead of the frames that announce them.
    fds: Mutex<VecDeque<Vec<OwnedFd>>>,
    /// The current adaptive spin budget, in nanoseconds.
    spin_ns: AtomicU64,
}

// SAFETY: the mapping is plain shared memory accessed through atomics and bounds-checked
// copies; every field is thread-safe.
unsafe impl Send for ShmChannel {}
// SAFETY: as above.
unsafe impl Sync for ShmChannel {}

impl std::fmt::Debug for ShmChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmChannel")
            .field("side", &self.side)
            .field("cap", &self.cap)
            .field("segment", &self.mem.fd.as_raw_fd())
            .field("companion", &self.bell.as_raw_fd())
            .finish()
    }
}

fn total_len(cap: usize) -> usize {
    DATA_AT + 2 * cap
}

/// Holds one side's lock; released on drop.
struct SideGuard<'a>(&'a AtomicU32);

impl Drop for SideGuard<'_> {
    fn drop(&mut self) {
        self.0.store(0, Ordering::Release);
    }
}

impl ShmChannel {
    /// A connected pair whose rings hold `cap` bytes each (rounded up to a power of two,
    /// at least 4 KiB).
    pub fn pair(cap: usize) -> io::Result<(Self, Self)> {
        let cap = cap.clamp(MIN_RING, MAX_RING).next_power_of_two();
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
            mem,
            bell,
            side,
            cap,
            peer_gone: AtomicBool::new(false),
            last_check: AtomicU64::new(u64::MAX),
            born: Instant::now(),
            fds: Mutex::new(VecDeque::new()),
            spin_ns: AtomicU64::new(crate::spin_limit().as_nanos() as u64),
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

    /// What a receiving process needs besides the handles: the side and the capacity.
    pub fn describe(&self) -> Vec<u8> {
        let mut v = vec![self.side];
        v.extend_from_slice(&(self.cap as u64).to_le_bytes());
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
        if desc.len() != 9 || desc[0] > 1 {
            return Err(bad("bad shared-memory channel description"));
        }
        let cap = u64::from_le_bytes(desc[1..9].try_into().expect("8 bytes"));
        let cap = usize::try_from(cap).map_err(|_| bad("ring too large"))?;
        if !cap.is_power_of_two() || !(MIN_RING..=MAX_RING).contains(&cap) {
            return Err(bad("bad shared-memory ring capacity"));
        }
        let mem = Mem::map(mem_fd, total_len(cap))?;
        let ch = Self::wrap(mem, UnixChannel::from_fd(sock)?, desc[0], cap);
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
        let mem = Mem::map(self.mem.fd.try_clone()?, total_len(self.cap))?;
        Ok(Self::wrap(mem, self.bell.try_clone()?, self.side, self.cap))
    }

    /// The ring capacity of each direction.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    fn meta(&self) -> &Meta {
        // SAFETY: offset 0 is inside the mapping, page-aligned, and Meta is all atomics.
        unsafe { &*self.mem.ptr.as_ptr().cast::<Meta>() }
    }

    fn hdr(&self, ring: u8) -> &RingHdr {
        // SAFETY: both headers lie inside the first page (checked at compile time), aligned
        // to 64, and are all atomics.
        unsafe {
            &*self
                .mem
                .ptr
                .as_ptr()
                .add(RING_HDRS_AT + ring as usize * std::mem::size_of::<RingHdr>())
                .cast::<RingHdr>()
        }
    }

    fn data(&self, ring: u8) -> *mut u8 {
        // SAFETY: DATA_AT + 2 * cap is the mapping's length.
        unsafe {
            self.mem
                .ptr
                .as_ptr()
                .add(DATA_AT + ring as usize * self.cap)
        }
    }

    fn tx(&self) -> u8 {
        self.side
    }

    fn rx(&self) -> u8 {
        1 - self.side
    }

    /// Bytes readable in ring `ring`, validated against the capacity.
    fn used(&self, ring: u8) -> Result<(u64, u64), IpcError> {
        let h = self.hdr(ring);
        let r = h.r.0.pos.load(Ordering::Acquire);
        let w = h.w.0.pos.load(Ordering::Acquire);
        let used = w.wrapping_sub(r);
        if used > self.cap as u64 {
            return Err(corrupt(format!(
                "positions {r}..{w} span more than the ring's {} bytes",
                self.cap
            )));
        }
        Ok((r, used))
    }

    /// Copies `src` into ring `ring` at position `pos`, wrapping around.
    fn copy_in(&self, ring: u8, pos: u64, src: &[u8]) {
        let off = (pos as usize) & (self.cap - 1);
        let first = src.len().min(self.cap - off);
        let base = self.data(ring);
        // SAFETY: off + first <= cap and src.len() - first <= cap; the region is not being
        // read (the reader only reads below the published write position).
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), base.add(off), first);
            std::ptr::copy_nonoverlapping(src.as_ptr().add(first), base, src.len() - first);
        }
    }

    /// Copies out of ring `ring` from `pos` into `dst`, wrapping around.
    fn copy_out(&self, ring: u8, pos: u64, dst: &mut [u8]) {
        let off = (pos as usize) & (self.cap - 1);
        let first = dst.len().min(self.cap - off);
        let base = self.data(ring);
        // SAFETY: as in copy_in; the writer does not touch published, unread bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(base.add(off), dst.as_mut_ptr(), first);
            std::ptr::copy_nonoverlapping(base, dst.as_mut_ptr().add(first), dst.len() - first);
        }
    }

    /// Copies out into the spare capacity of `buf` (no zero-filling).
    fn copy_out_vec(&self, ring: u8, pos: u64, buf: &mut Vec<u8>, n: usize) {
        buf.reserve(n);
        let have = buf.len();
        // SAFETY: `n` bytes of spare capacity were reserved; copy_out initialises them all.
        unsafe {
            let spare = std::slice::from_raw_parts_mut(buf.as_mut_ptr().add(have), n);
            self.copy_out(ring, pos, spare);
            buf.set_len(have + n);
        }
    }

    /// Takes one side's lock, waiting for another holder of the same end; steals it from a
    /// holder that died (marking the stream broken if it died in the middle of a frame).
    fn lock_side<'a>(&self, side: &'a Side, flags: &Flags) -> Result<SideGuard<'a>, IpcError> {
        let me = my_pid();
        let mut rounds = 0u32;
        let mut last_look = Instant::now();
        loop {
            match side
                .lock
                .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return Ok(SideGuard(&side.lock)),
                Err(holder) => {
                    rounds += 1;
                    if rounds < 100 {
                        std::hint::spin_loop();
                    } else {
                        std::thread::sleep(Duration::from_micros(50));
                    }
                    if holder != me && last_look.elapsed() > Duration::from_millis(5) {
                        last_look = Instant::now();
                        if !pid_alive(holder)
                            && side
                                .lock
                                .compare_exchange(holder, me, Ordering::Acquire, Ordering::Relaxed)
                                .is_ok()
                        {
                            if side.busy.swap(0, Ordering::AcqRel) != 0 {
                                flags.broken.store(1, Ordering::Release);
                            }
                            return Ok(SideGuard(&side.lock));
                        }
                    }
                }
            }
        }
    }

    fn check_broken(&self, ring: u8) -> Result<(), IpcError> {
        if self.hdr(ring).f.0.broken.load(Ordering::Acquire) != 0 {
            return Err(corrupt(
                "a process died in the middle of a message on this channel",
            ));
        }
        Ok(())
    }

    /// Reads whatever waits on the companion: doorbells are dropped, descriptor batches
    /// kept for their frames, end of stream noted. One `poll` when nothing waits.
    fn drain(&self) -> Result<(), IpcError> {
        if self.peer_gone.load(Ordering::Relaxed) {
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
                    self.peer_gone.store(true, Ordering::Release);
                    return Ok(());
                }
                Err(IpcError::Io(e)) if e.raw_os_error() == Some(libc::ECONNRESET) => {
                    self.peer_gone.store(true, Ordering::Release);
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn gone(&self) -> bool {
        self.peer_gone.load(Ordering::Acquire)
    }

    /// A writer's cheap liveness check: at most one `poll` per millisecond.
    fn check_peer(&self) -> Result<(), IpcError> {
        let now = self.born.elapsed().as_nanos() as u64;
        let last = self.last_check.load(Ordering::Relaxed);
        if last == u64::MAX || now.saturating_sub(last) > LIVENESS_EVERY.as_nanos() as u64 {
            self.last_check.store(now, Ordering::Relaxed);
            self.drain()?;
        }
        if self.gone() {
            return Err(IpcError::BrokenPipe);
        }
        Ok(())
    }

    /// Rings the doorbell if the other side armed `flag`.
    fn notify(&self, flag: &AtomicU32) {
        fence(Ordering::SeqCst);
        if flag.load(Ordering::Relaxed) != 0 && flag.swap(0, Ordering::AcqRel) != 0 {
            let _ = self.bell.send_frame(&[]);
        }
    }

    /// Waits until `ready()` or the peer is gone, until `deadline`: a short adaptive spin,
    /// then sleeps on the companion with `flag` armed. Ok(true): ready or peer gone.
    fn wait_for(
        &self,
        mut ready: impl FnMut() -> Result<bool, IpcError>,
        flag: &AtomicU32,
        deadline: Option<Instant>,
    ) -> Result<bool, IpcError> {
        if ready()? {
            return Ok(true);
        }
        // Spin.
        let budget = self.spin_ns.load(Ordering::Relaxed);
        if budget > 0 && !matches!(deadline, Some(d) if d <= Instant::now()) {
            let start = Instant::now();
            let mut stop = start + Duration::from_nanos(budget);
            if let Some(d) = deadline {
                stop = stop.min(d);
            }
            let mut i = 0u32;
            loop {
                for _ in 0..32 {
                    std::hint::spin_loop();
                }
                if ready()? {
                    // Worth it: spin as long as allowed next time.
                    let limit = crate::spin_limit().as_nanos() as u64;
                    self.spin_ns.store(limit, Ordering::Relaxed);
                    return Ok(true);
                }
                i += 1;
                if i & 15 == 0 && Instant::now() >= stop {
                    break;
                }
            }
            // Spun in vain: halve the budget (down to 1 us), regrown by the next success.
            self.spin_ns
                .store((budget / 2).max(1_000), Ordering::Relaxed);
        }
        // Sleep.
        loop {
            self.drain()?;
            if self.gone() {
                flag.store(0, Ordering::Relaxed);
                return Ok(true);
            }
            flag.store(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            if ready()? {
                flag.store(0, Ordering::Relaxed);
                return Ok(true);
            }
            let slice = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        flag.store(0, Ordering::Relaxed);
                        return Ok(false);
                    }
                    left.min(SLICE)
                }
                None => SLICE,
            };
            mp_unix::poll::poll_readable(self.bell.as_raw_fd(), Some(slice))?;
        }
    }

    /// Whether a frame (or its start) can be read from the rx ring now.
    fn readable(&self) -> Result<bool, IpcError> {
        Ok(self.used(self.rx())?.1 >= HEADER_LEN as u64)
    }

    /// Writes one frame (header + parts) into the tx ring. The side lock is held.
    fn write_frame(&self, header: FrameHeader, parts: &[&[u8]]) -> Result<(), IpcError> {
        let ring = self.tx();
        let h = self.hdr(ring);
        self.check_broken(ring)?;
        let len = header.len as usize;
        let total = HEADER_LEN + len;
        let cap = self.cap as u64;
        let hbytes = header.encode();
        if total <= self.cap {
            // Whole frame at once: the reader never sees part of it.
            let mut used = self.used(ring)?.1;
            if cap - used < total as u64 {
                self.wait_for(
                    || Ok(cap - self.used(ring)?.1 >= total as u64),
                    &h.f.0.writer_armed,
                    None,
                )?;
                used = self.used(ring)?.1;
                if cap - used < total as u64 {
                    return Err(IpcError::BrokenPipe);
                }
            }
            let w = h.w.0.pos.load(Ordering::Relaxed);
            self.copy_in(ring, w, &hbytes);
            let mut at = w + HEADER_LEN as u64;
            for p in parts {
                self.copy_in(ring, at, p);
                at += p.len() as u64;
            }
            h.w.0.pos.store(at, Ordering::Release);
            self.notify(&h.f.0.reader_armed);
            return Ok(());
        }
        // Stream: publish in pieces as room appears.
        h.w.0.busy.store(1, Ordering::Relaxed);
        let chunk_max = (self.cap / STREAM_DIV) as u64;
        let mut pieces: Vec<&[u8]> = Vec::with_capacity(parts.len() + 1);
        pieces.push(&hbytes);
        pieces.extend_from_slice(parts);
        for piece in pieces {
            let mut done = 0usize;
            while done < piece.len() {
                let mut free = cap - self.used(ring)?.1;
                if free == 0 {
                    self.wait_for(|| Ok(self.used(ring)?.1 < cap), &h.f.0.writer_armed, None)?;
                    free = cap - self.used(ring)?.1;
                    if free == 0 {
                        return Err(IpcError::BrokenPipe);
                    }
                    self.check_broken(ring)?;
                }
                let n = (piece.len() - done).min(free.min(chunk_max) as usize);
                let w = h.w.0.pos.load(Ordering::Relaxed);
                self.copy_in(ring, w, &piece[done..done + n]);
                h.w.0.pos.store(w + n as u64, Ordering::Release);
                self.notify(&h.f.0.reader_armed);
                done += n;
            }
        }
        h.w.0.busy.store(0, Ordering::Relaxed);
        Ok(())
    }

    /// Waits for a frame header in the rx ring and returns it (not consumed). The side
    /// lock is held.
    fn next_header(&self) -> Result<FrameHeader, IpcError> {
        let ring = self.rx();
        let h = self.hdr(ring);
        self.check_broken(ring)?;
        let (_, used) = self.used(ring)?;
        if used < HEADER_LEN as u64 {
            self.wait_for(|| self.readable(), &h.f.0.reader_armed, None)?;
            let (_, used) = self.used(ring)?;
            if used == 0 {
                self.check_broken(ring)?;
                return Err(IpcError::Eof);
            }
            if used < HEADER_LEN as u64 {
                return Err(IpcError::Truncated {
                    got: used,
                    expected: HEADER_LEN as u64,
                });
            }
        }
        let r = h.r.0.pos.load(Ordering::Relaxed);
        let mut hb = [0u8; HEADER_LEN];
        self.copy_out(ring, r, &mut hb);
        Ok(FrameHeader::decode(hb))
    }

    /// Reads the body of a frame whose header `len` was checked, into `buf` (cleared).
    fn read_body(&self, len: usize, buf: &mut Vec<u8>) -> Result<(), IpcError> {
        let ring = self.rx();
        let h = self.hdr(ring);
        let total = HEADER_LEN + len;
        let r = h.r.0.pos.load(Ordering::Relaxed);
        buf.clear();
        if total <= self.cap {
            // Published whole: it must all be there.
            let (_, used) = self.used(ring)?;
            if used < total as u64 {
                return Err(corrupt(format!(
                    "a frame of {len} bytes announced with only {} stored",
                    used - HEADER_LEN as u64
                )));
            }
            self.copy_out_vec(ring, r + HEADER_LEN as u64, buf, len);
            h.r.0.pos.store(r + total as u64, Ordering::Release);
            self.notify(&h.f.0.writer_armed);
            return Ok(());
        }
        h.r.0.busy.store(1, Ordering::Relaxed);
        let mut at = r + HEADER_LEN as u64;
        h.r.0.pos.store(at, Ordering::Release);
        while buf.len() < len {
            let mut used = self.used(ring)?.1;
            if used == 0 {
                self.wait_for(|| Ok(self.used(ring)?.1 > 0), &h.f.0.reader_armed, None)?;
                used = self.used(ring)?.1;
                if used == 0 {
                    self.check_broken(ring)?;
                    h.r.0.busy.store(0, Ordering::Relaxed);
                    h.f.0.broken.store(1, Ordering::Release);
                    return Err(IpcError::Truncated {
                        got: buf.len() as u64,
                        expected: len as u64,
                    });
                }
            }
            let have = buf.len();
            let n = (used as usize).min(len - have);
            if buf.capacity() < have + n {
                let want = next_capacity(have, len).max(have + n);
                buf.reserve_exact(want - have);
            }
            self.copy_out_vec(ring, at, buf, n);
            at += n as u64;
            h.r.0.pos.store(at, Ordering::Release);
            self.notify(&h.f.0.writer_armed);
        }
        h.r.0.busy.store(0, Ordering::Relaxed);
        Ok(())
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
                    self.peer_gone.store(true, Ordering::Release);
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
        if self.readable().unwrap_or(true) {
            return true;
        }
        if self.drain().is_err() || self.gone() {
            return true;
        }
        let f = &self.hdr(self.rx()).f.0;
        f.reader_armed.store(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if self.readable().unwrap_or(true) {
            f.reader_armed.store(0, Ordering::Relaxed);
            return true;
        }
        false
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
        let deadline = timeout.map(|t| Instant::now() + t);
        let h = self.hdr(self.rx());
        if self.readable()? {
            return Ok(true);
        }
        if deadline.is_some_and(|d| d <= Instant::now()) {
            self.drain()?;
            return Ok(self.gone() || self.readable()?);
        }
        let ok = self.wait_for(|| self.readable(), &h.f.0.reader_armed, deadline)?;
        Ok(ok && (self.gone() || self.readable()?) || self.readable()?)
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
        let total = HEADER_LEN + len;
        let r = h.r.0.pos.load(Ordering::Relaxed);
        if total <= self.cap {
            let (_, used) = self.used(ring)?;
            if used < total as u64 {
                return Err(corrupt("a frame announced more bytes than are stored"));
            }
            self.copy_out(ring, r + HEADER_LEN as u64, &mut out[..len]);
            h.r.0.pos.store(r + total as u64, Ordering::Release);
            self.notify(&h.f.0.writer_armed);
            return Ok(Ok(len));
        }
        // Streamed straight into the caller's buffer.
        h.r.0.busy.store(1, Ordering::Relaxed);
        let mut at = r + HEADER_LEN as u64;
        h.r.0.pos.store(at, Ordering::Release);
        let mut have = 0usize;
        while have < len {
            let mut used = self.used(ring)?.1;
            if used == 0 {
                self.wait_for(|| Ok(self.used(ring)?.1 > 0), &h.f.0.reader_armed, None)?;
                used = self.used(ring)?.1;
                if used == 0 {
                    h.r.0.busy.store(0, Ordering::Relaxed);
                    h.f.0.broken.store(1, Ordering::Release);
                    return Err(IpcError::Truncated {
                        got: have as u64,
                        expected: len as u64,
                    });
                }
            }
            let n = (used as usize).min(len - have);
            self.copy_out(ring, at, &mut out[have..have + n]);
            at += n as u64;
            have += n;
            h.r.0.pos.store(at, Ordering::Release);
            self.notify(&h.f.0.writer_armed);
        }
        h.r.0.busy.store(0, Ordering::Relaxed);
        Ok(Ok(len))
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
    fn frames_of_every_size_cross_the_ring() {
        let (a, b) = ShmChannel::pair(MIN_RING).unwrap();
        let t = std::thread::spawn(move || {
            for n in [0usize, 1, 7, 8, 100, 4088, 4089, 4096, 10_000, 1 << 20] {
                let v: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
                a.send_frame(&[&v[..n / 2], &v[n / 2..]]).unwrap();
            }
            a
        });
        for n in [0usize, 1, 7, 8, 100, 4088, 4089, 4096, 10_000, 1 << 20] {
            let mut buf = Vec::new();
            b.recv_frame(&mut buf, u64::MAX).unwrap();
            assert_eq!(buf.len(), n);
            assert!(buf.iter().enumerate().all(|(i, &x)| x == (i % 251) as u8));
        }
        let a = t.join().unwrap();
        assert!(!b.poll(Some(Duration::ZERO)).unwrap());
        drop(a);
        assert!(b.poll(Some(Duration::ZERO)).unwrap());
        let mut buf = Vec::new();
        assert!(matches!(b.recv_frame(&mut buf, 10), Err(IpcError::Eof)));
        assert!(matches!(b.send_frame(&[b"x"]), Err(IpcError::BrokenPipe)));
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
