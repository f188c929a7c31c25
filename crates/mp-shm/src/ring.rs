//! The platform-independent part of a shared-memory channel: the segment layout, the two
//! SPSC byte rings, publishing and reading frames, the per-side locks, the adaptive spin and
//! the arm/re-check/sleep protocol. A platform module supplies the segment, the doorbell and
//! the liveness signal through [`RingEnd`].
//!
//! ```text
//! segment:  meta (magic, cap, holders) | ring 0 header | ring 1 header | ... | data 0 | data 1
//! ring header:   [writer line: pos, lock, busy] [reader line: pos, lock, busy]
//!                [flags line: reader_armed, writer_armed, broken]
//! ```
//!
//! Side `s` writes ring `s` and reads ring `1 - s`. Positions are monotonic byte counts;
//! `pos % cap` is the offset. A frame is an 8-byte [`FrameHeader`] and its body, copied with
//! wrap-around.

use std::io;
use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mp_ipc::deadline::Deadline;
use mp_ipc::frame::{next_capacity, FrameHeader, HEADER_LEN};
use mp_ipc::spin::Pace;
use mp_ipc::IpcError;

pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"mpshmv01");
pub(crate) const MIN_RING: usize = 4096;
pub(crate) const MAX_RING: usize = 1 << 30;
/// Where the data of ring 0 starts (one page of headers).
pub(crate) const DATA_AT: usize = 4096;
/// A streamed frame is published in pieces of at most `cap / STREAM_DIV` bytes, so that
/// writer and reader copy at the same time.
const STREAM_DIV: usize = 4;
/// The longest single sleep: sleepers re-check everything this often (a safety net against
/// a doorbell lost to another holder of the same end).
pub(crate) const SLICE: Duration = Duration::from_millis(100);
/// How often a writer that is not blocked asks the kernel whether the peer is still there.
const LIVENESS_EVERY: Duration = Duration::from_millis(1);

#[repr(C, align(64))]
pub(crate) struct Line<T>(pub(crate) T);

#[repr(C)]
pub(crate) struct Meta {
    pub(crate) magic: AtomicU64,
    pub(crate) cap: AtomicU64,
    /// The process that last took up each side (Windows watches it for liveness; a hint,
    /// never trusted beyond "this pid may hold the end").
    pub(crate) holder: [AtomicU32; 2],
}

#[repr(C)]
pub(crate) struct Side {
    pub(crate) pos: AtomicU64,
    /// Pid of the holder of this side (0: free): several handles on one end take turns.
    pub(crate) lock: AtomicU32,
    /// Set while a holder is in the middle of a streamed frame.
    pub(crate) busy: AtomicU32,
}

#[repr(C)]
pub(crate) struct Flags {
    pub(crate) reader_armed: AtomicU32,
    pub(crate) writer_armed: AtomicU32,
    /// Set when a holder died in the middle of a frame: the stream is out of sync.
    pub(crate) broken: AtomicU32,
}

#[repr(C)]
pub(crate) struct RingHdr {
    pub(crate) w: Line<Side>,
    pub(crate) r: Line<Side>,
    pub(crate) f: Line<Flags>,
}

pub(crate) const RING_HDRS_AT: usize = 64;
const _: () = assert!(std::mem::size_of::<Meta>() <= RING_HDRS_AT);
const _: () = assert!(RING_HDRS_AT + 2 * std::mem::size_of::<RingHdr>() <= DATA_AT);

pub(crate) fn corrupt(what: impl Into<String>) -> IpcError {
    IpcError::Io(io::Error::new(
        io::ErrorKind::InvalidData,
        format!("shared-memory channel is corrupt: {}", what.into()),
    ))
}

pub(crate) fn total_len(cap: usize) -> usize {
    DATA_AT + 2 * cap
}

/// Checks a capacity received from another process.
pub(crate) fn valid_cap(cap: u64) -> Option<usize> {
    let cap = usize::try_from(cap).ok()?;
    (cap.is_power_of_two() && (MIN_RING..=MAX_RING).contains(&cap)).then_some(cap)
}

/// The capacity `pair` uses for a requested one.
pub(crate) fn round_cap(cap: usize) -> usize {
    cap.clamp(MIN_RING, MAX_RING).next_power_of_two()
}

/// Holds one side's lock; released on drop.
pub(crate) struct SideGuard<'a>(&'a AtomicU32);

impl Drop for SideGuard<'_> {
    fn drop(&mut self) {
        self.0.store(0, Ordering::Release);
    }
}

/// The per-end state the ring logic needs: where the mapping is, which side this end is,
/// and the bookkeeping of spinning and liveness.
pub(crate) struct Ring {
    base: *mut u8,
    pub(crate) cap: usize,
    pub(crate) side: u8,
    peer_gone: AtomicBool,
    /// Nanoseconds since `born` of the last liveness check by a writer.
    last_check: AtomicU64,
    born: Instant,
    /// The current adaptive spin budget, in nanoseconds.
    spin_ns: AtomicU64,
}

impl Ring {
    /// # Safety
    /// `base` must be a mapping of at least [`total_len`]`(cap)` bytes, page-aligned, that
    /// outlives the `Ring`, and `cap` a power of two.
    pub(crate) unsafe fn new(base: *mut u8, side: u8, cap: usize) -> Self {
        Self {
            base,
            cap,
            side,
            peer_gone: AtomicBool::new(false),
            last_check: AtomicU64::new(u64::MAX),
            born: Instant::now(),
            spin_ns: AtomicU64::new(crate::spin_limit().as_nanos() as u64),
        }
    }

    /// Notes that the peer is gone for good.
    pub(crate) fn set_gone(&self) {
        self.peer_gone.store(true, Ordering::Release);
    }

    pub(crate) fn is_gone(&self) -> bool {
        self.peer_gone.load(Ordering::Acquire)
    }
}

/// One end of a channel: the ring logic over a platform's segment, doorbell and liveness
/// signal. The provided methods are the whole protocol; the required ones are the platform.
pub(crate) trait RingEnd {
    fn ring(&self) -> &Ring;
    /// Whether process `pid` exists (for taking over a side lock from a dead holder).
    fn pid_alive(&self, pid: u32) -> bool;
    /// Takes in whatever waits on the liveness/doorbell object without blocking, and marks
    /// the peer gone ([`Ring::set_gone`]) if it is.
    fn drain(&self) -> Result<(), IpcError>;
    /// Wakes the peer, which armed a flag.
    fn ring_bell(&self);
    /// Called before this end arms a flag and re-checks (an event to reset, for example).
    fn before_arm(&self) {}
    /// Sleeps until the doorbell rings, the peer may have gone, or `slice` has passed.
    fn sleep(&self, slice: Duration) -> Result<(), IpcError>;

    fn meta(&self) -> &Meta {
        // SAFETY: offset 0 is inside the mapping, page-aligned, and Meta is all atomics.
        unsafe { &*self.ring().base.cast::<Meta>() }
    }

    fn hdr(&self, ring: u8) -> &RingHdr {
        // SAFETY: both headers lie inside the first page (checked at compile time), aligned
        // to 64, and are all atomics.
        unsafe {
            &*self
                .ring()
                .base
                .add(RING_HDRS_AT + ring as usize * std::mem::size_of::<RingHdr>())
                .cast::<RingHdr>()
        }
    }

    fn data(&self, ring: u8) -> *mut u8 {
        // SAFETY: DATA_AT + 2 * cap is the mapping's length.
        unsafe {
            self.ring()
                .base
                .add(DATA_AT + ring as usize * self.ring().cap)
        }
    }

    fn tx(&self) -> u8 {
        self.ring().side
    }

    fn rx(&self) -> u8 {
        1 - self.ring().side
    }

    fn gone(&self) -> bool {
        self.ring().is_gone()
    }

    /// Bytes readable in ring `ring`, validated against the capacity.
    fn used(&self, ring: u8) -> Result<(u64, u64), IpcError> {
        let h = self.hdr(ring);
        let r = h.r.0.pos.load(Ordering::Acquire);
        let w = h.w.0.pos.load(Ordering::Acquire);
        let used = w.wrapping_sub(r);
        if used > self.ring().cap as u64 {
            return Err(corrupt(format!(
                "positions {r}..{w} span more than the ring's {} bytes",
                self.ring().cap
            )));
        }
        Ok((r, used))
    }

    /// Copies `src` into ring `ring` at position `pos`, wrapping around.
    fn copy_in(&self, ring: u8, pos: u64, src: &[u8]) {
        let cap = self.ring().cap;
        let off = (pos as usize) & (cap - 1);
        let first = src.len().min(cap - off);
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
        let cap = self.ring().cap;
        let off = (pos as usize) & (cap - 1);
        let first = dst.len().min(cap - off);
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
        let me = std::process::id();
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
                        if !self.pid_alive(holder)
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

    /// A writer's cheap liveness check: at most one look per millisecond.
    fn check_peer(&self) -> Result<(), IpcError> {
        let st = self.ring();
        let now = st.born.elapsed().as_nanos() as u64;
        let last = st.last_check.load(Ordering::Relaxed);
        if last == u64::MAX || now.saturating_sub(last) > LIVENESS_EVERY.as_nanos() as u64 {
            st.last_check.store(now, Ordering::Relaxed);
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
            self.ring_bell();
        }
    }

    /// Waits until `ready()` or the peer is gone, until `deadline`: a short adaptive spin,
    /// then sleeps on the doorbell with `flag` armed. Ok(true): ready or peer gone.
    fn wait_for(
        &self,
        mut ready: impl FnMut() -> Result<bool, IpcError>,
        flag: &AtomicU32,
        deadline: Option<Instant>,
    ) -> Result<bool, IpcError> {
        if ready()? {
            return Ok(true);
        }
        // Spin (through the one spin loop of mp, so a zero limit turns it off).
        let spin_ns = &self.ring().spin_ns;
        let budget = spin_ns.load(Ordering::Relaxed);
        let limit = crate::spin_limit().as_nanos().min(u128::from(u64::MAX)) as u64;
        if budget > 0 {
            let deadline = deadline.map_or(Deadline::NEVER, Deadline::at);
            let window = Duration::from_nanos(budget.min(limit));
            let spun =
                mp_ipc::spin::spin(window, deadline, Pace::Busy { rounds: u32::MAX }, || {
                    ready().map(|r| r.then_some(()))
                })?;
            if spun.is_some() {
                // Worth it: spin as long as allowed next time.
                spin_ns.store(limit, Ordering::Relaxed);
                return Ok(true);
            }
            // Spun in vain: halve the budget (down to 1 us, never above the limit),
            // regrown by the next success.
            spin_ns.store((budget / 2).max(1_000).min(limit), Ordering::Relaxed);
        }
        // Sleep.
        loop {
            self.drain()?;
            if self.gone() {
                flag.store(0, Ordering::Relaxed);
                return Ok(true);
            }
            self.before_arm();
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
            self.sleep(slice)?;
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
        let ring_cap = self.ring().cap;
        let len = header.len as usize;
        let total = HEADER_LEN + len;
        let cap = ring_cap as u64;
        let hbytes = header.encode();
        if total <= ring_cap {
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
        let chunk_max = (ring_cap / STREAM_DIV) as u64;
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
        if total <= self.ring().cap {
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

    /// Reads the body of a frame whose header `len` was checked and fits `out`, straight
    /// into `out`. The side lock is held.
    fn read_body_into(&self, len: usize, out: &mut [u8]) -> Result<usize, IpcError> {
        let ring = self.rx();
        let h = self.hdr(ring);
        let total = HEADER_LEN + len;
        let r = h.r.0.pos.load(Ordering::Relaxed);
        if total <= self.ring().cap {
            let (_, used) = self.used(ring)?;
            if used < total as u64 {
                return Err(corrupt("a frame announced more bytes than are stored"));
            }
            self.copy_out(ring, r + HEADER_LEN as u64, &mut out[..len]);
            h.r.0.pos.store(r + total as u64, Ordering::Release);
            self.notify(&h.f.0.writer_armed);
            return Ok(len);
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
        Ok(len)
    }

    /// Sets this end up for an outside wait on its doorbell: true if a frame (or end of
    /// stream) is already there; otherwise arms the doorbell so the next frame rings it.
    fn arm_for_outside_wait(&self) -> bool {
        if self.readable().unwrap_or(true) {
            return true;
        }
        if self.drain().is_err() || self.gone() {
            return true;
        }
        let f = &self.hdr(self.rx()).f.0;
        self.before_arm();
        f.reader_armed.store(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if self.readable().unwrap_or(true) {
            f.reader_armed.store(0, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// [`mp_ipc::Channel::poll`] on the rx ring.
    fn poll_rx(&self, timeout: Option<Duration>) -> Result<bool, IpcError> {
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
}
