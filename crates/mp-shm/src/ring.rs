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
//! Side `s` writes ring `s` and reads ring `1 - s`. Positions are byte counts that wrap at
//! 2^64; `pos % cap` is the offset. A frame is an 8-byte [`FrameHeader`] and its body,
//! copied with wrap-around.
//!
//! The peer can write anything anywhere in the segment. Every value read from it goes
//! through the pure checks of [`check`] before it is used: positions more than a ring apart,
//! a lock word that names no process (or this very thread), lengths beyond what is stored
//! are a [`corrupt`] error that breaks this channel only; arithmetic on positions wraps, so
//! no value can make it panic or index out of the ring. Every wait has a deadline or ends
//! when the peer is gone.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mp_ipc::deadline::Deadline;
use mp_ipc::frame::{next_capacity, prefix_bytes, FrameHeader, Prefix, HEADER_LEN};
use mp_ipc::handle::OwnedHandle;
use mp_ipc::spin::Pace;
use mp_ipc::IpcError;

use crate::model::{fence, AtomicU32, AtomicU64};

/// A split receive's request: where the prefix goes, and its length for a frame length
/// (see [`mp_ipc::Channel::recv_frame_split_until`]).
pub(crate) type Split<'a> = (&'a mut Prefix, fn(u64) -> usize);

pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"mpshmv01");
#[cfg(not(loom))]
pub(crate) const MIN_RING: usize = 4096;
/// Under loom, rings of a few bytes: wrap-around and streaming in a handful of steps.
#[cfg(loom)]
pub(crate) const MIN_RING: usize = 16;
pub(crate) const MAX_RING: usize = 1 << 30;
/// Where the data of ring 0 starts (one page of headers).
pub(crate) const DATA_AT: usize = 4096;
/// A streamed frame is published in pieces of at most `cap / STREAM_DIV` bytes, so that
/// writer and reader copy at the same time. Halves beat quarters (1 MiB messages over the
/// default 256 KiB ring, same run, alternating: 46 GB/s against 36 GB/s, against 45 GB/s
/// for two processes copying through two 1 MiB slots): fewer hand-overs, each still short.
const STREAM_DIV: usize = 2;
/// The longest single sleep: sleepers re-check everything this often (a safety net against
/// a doorbell lost to another holder of the same end).
pub(crate) const SLICE: Duration = Duration::from_millis(100);
/// How often a writer that is not blocked asks the kernel whether the peer is still there.
const LIVENESS_EVERY: Duration = Duration::from_millis(1);
/// How often a waiter for a side lock asks whether its holder is alive.
const HOLDER_LOOK: Duration = Duration::from_millis(5);
/// How often it asks whether a live holder has the segment mapped at all.
const PARTICIPANT_LOOK: Duration = Duration::from_millis(200);

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
    /// The holder's thread; [`PARKED`] while held across calls by a receive that timed
    /// out in the middle of a frame; 0 for an instant around taking the lock. A lock word
    /// naming this process with this field naming the very thread that wants the lock, a
    /// thread that no longer exists, or staying 0, was not written by a holder.
    pub(crate) tid: AtomicU32,
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

/// Writes fresh headers at the start of a segment of `base`: under loom, whose atomics
/// are objects of the model, not bytes that can start zeroed.
///
/// # Safety
/// `base` must be a fresh, page-aligned allocation of at least [`DATA_AT`] bytes.
#[cfg(loom)]
pub(crate) unsafe fn construct_headers(base: *mut u8) {
    let side = || Side {
        pos: AtomicU64::new(0),
        lock: AtomicU32::new(0),
        busy: AtomicU32::new(0),
        tid: AtomicU32::new(0),
    };
    let hdr = || RingHdr {
        w: Line(side()),
        r: Line(side()),
        f: Line(Flags {
            reader_armed: AtomicU32::new(0),
            writer_armed: AtomicU32::new(0),
            broken: AtomicU32::new(0),
        }),
    };
    // SAFETY: the caller's allocation holds Meta at 0 and both headers before DATA_AT
    // (asserted below), each aligned as its type wants (the base is page-aligned,
    // RING_HDRS_AT and RingHdr's size are multiples of 64).
    unsafe {
        base.cast::<Meta>().write(Meta {
            magic: AtomicU64::new(0),
            cap: AtomicU64::new(0),
            holder: [AtomicU32::new(0), AtomicU32::new(0)],
        });
        for i in 0..2 {
            base.add(RING_HDRS_AT + i * std::mem::size_of::<RingHdr>())
                .cast::<RingHdr>()
                .write(hdr());
        }
    }
}

/// [`Side::tid`] of a lock kept across calls (no thread id is 1 on any system mp runs on).
pub(crate) const PARKED: u32 = 1;

/// Where the two ring headers start, after [`Meta`]. Under loom (whose atomics are larger
/// and live only in the model) wherever `Meta` ends.
#[cfg(not(loom))]
pub(crate) const RING_HDRS_AT: usize = 64;
#[cfg(loom)]
pub(crate) const RING_HDRS_AT: usize = std::mem::size_of::<Meta>().next_multiple_of(64);
const _: () = assert!(std::mem::size_of::<Meta>() <= RING_HDRS_AT);
const _: () = assert!(RING_HDRS_AT + 2 * std::mem::size_of::<RingHdr>() <= DATA_AT);

/// Damage to the segment, found by a check: breaks this channel.
pub(crate) fn corrupt(what: impl Into<String>) -> IpcError {
    IpcError::Corrupt(format!("shared-memory segment: {}", what.into()))
}

/// The checks on values read from the shared segment, as pure functions (what a model
/// checker or a fuzzer drives directly). Each says what is wrong, for [`corrupt`].
pub(crate) mod check {
    use mp_ipc::frame::HEADER_LEN;

    /// Bytes stored in a ring of `cap` bytes whose reader is at `r` and writer at `w`
    /// (positions wrap at 2^64): at most `cap`, or the positions are damaged.
    pub(crate) fn used(r: u64, w: u64, cap: u64) -> Result<u64, String> {
        let used = w.wrapping_sub(r);
        if used > cap {
            return Err(format!(
                "positions {r}..{w} span more than the ring's {cap} bytes"
            ));
        }
        Ok(used)
    }

    /// Whether a frame of `len` body bytes is published whole (it fits the ring with its
    /// header) rather than streamed in pieces.
    pub(crate) fn whole(len: u64, cap: u64) -> bool {
        len.saturating_add(HEADER_LEN as u64) <= cap
    }

    /// A frame published whole must be stored whole: `used` bytes are readable.
    pub(crate) fn stored_whole(len: u64, used: u64) -> Result<(), String> {
        if used < len.saturating_add(HEADER_LEN as u64) {
            return Err(format!(
                "a frame of {len} bytes announced with only {} stored",
                used.saturating_sub(HEADER_LEN as u64)
            ));
        }
        Ok(())
    }

    /// What a side-lock word says.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Holder {
        /// 0: nobody holds it.
        Free,
        /// A number that can name a process.
        Pid(u32),
    }

    /// Reads a side-lock word; `plausible` says whether a number can name a process on this
    /// system. Anything else (negative as a pid, beyond the largest pid) was not written by
    /// a holder.
    pub(crate) fn holder(word: u32, plausible: impl Fn(u32) -> bool) -> Result<Holder, String> {
        match word {
            0 => Ok(Holder::Free),
            pid if plausible(pid) => Ok(Holder::Pid(pid)),
            bad => Err(format!("a lock word names {bad:#x}, which is no process")),
        }
    }

    /// A lock word naming this process: `tid` is what the holder recorded as its thread
    /// (`parked`: held across calls), `mine` the thread asking (0: thread ids unknown
    /// here), `alive` whether a thread of this process exists, `zero_before` whether `tid`
    /// was already 0 at the asker's previous look, a while ago. The asking thread cannot
    /// hold the lock (it is asking), a thread of this process that ended cannot either (a
    /// holder releases on every way out), and 0 is only ever there for an instant: all
    /// three mean damage.
    pub(crate) fn own_holder(
        tid: u32,
        parked: u32,
        mine: u32,
        alive: impl Fn(u32) -> bool,
        zero_before: bool,
    ) -> Result<(), String> {
        let bad = match tid {
            _ if mine == 0 => false,
            0 => zero_before,
            t if t == parked => false,
            t => t == mine || !alive(t),
        };
        if bad {
            return Err(format!(
                "a lock word names this process and thread {tid}, which does not hold it"
            ));
        }
        Ok(())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn positions_are_checked_with_wrapping_arithmetic() {
            assert_eq!(used(10, 20, 4096), Ok(10));
            assert_eq!(used(u64::MAX - 5, 4, 4096), Ok(10));
            assert!(used(20, 10, 4096).is_err()); // write position flipped backwards
            assert!(used(0, 4097, 4096).is_err());
            assert!(whole(4088, 4096) && !whole(4089, 4096) && !whole(u64::MAX, 4096));
            assert!(stored_whole(100, 50).is_err() && stored_whole(100, 108).is_ok());
            assert!(stored_whole(u64::MAX, 3).is_err());
        }

        #[test]
        fn lock_words_that_name_no_holder_are_refused() {
            let plausible = |p: u32| (p as i32) > 0 && p <= 4 << 20;
            assert_eq!(holder(0, plausible), Ok(Holder::Free));
            assert_eq!(holder(42, plausible), Ok(Holder::Pid(42)));
            for bad in [u32::MAX, 0x8000_0000, (4 << 20) + 1] {
                assert!(holder(bad, plausible).is_err(), "{bad:#x}");
            }
            assert!(own_holder(7, 1, 7, |_| true, false).is_err());
            assert!(own_holder(8, 1, 7, |_| false, false).is_err());
            assert!(own_holder(8, 1, 7, |_| true, false).is_ok());
            assert!(own_holder(1, 1, 7, |_| false, true).is_ok());
            assert!(own_holder(0, 1, 7, |_| false, false).is_ok());
            assert!(own_holder(0, 1, 7, |_| false, true).is_err());
            assert!(own_holder(7, 1, 0, |_| false, true).is_ok());
        }
    }
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

/// What a process receiving an end needs besides its handles: the side and the capacity
/// (the inverse of [`read_description`]).
pub(crate) fn description(side: u8, cap: usize) -> Vec<u8> {
    let mut v = vec![side];
    v.extend_from_slice(&(cap as u64).to_le_bytes());
    v
}

/// Reads a [`description`] received from another process: the side and a checked capacity,
/// or an `InvalidData` error.
pub(crate) fn read_description(desc: &[u8]) -> io::Result<(u8, usize)> {
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
    let [side @ (0 | 1), cap @ ..] = desc else {
        return Err(bad("bad shared-memory channel description"));
    };
    let cap: [u8; 8] = cap
        .try_into()
        .map_err(|_| bad("bad shared-memory channel description"))?;
    let cap =
        valid_cap(u64::from_le_bytes(cap)).ok_or_else(|| bad("bad shared-memory ring capacity"))?;
    Ok((*side, cap))
}

/// Holds one side's lock; released on drop.
pub(crate) struct SideGuard<'a>(&'a Side);

impl SideGuard<'_> {
    /// Keeps the lock held after the guard is gone (a receive that timed out in the middle
    /// of a frame): [`release_side`] ends it.
    fn keep(self) {
        self.0.tid.store(PARKED, Ordering::Relaxed);
        std::mem::forget(self);
    }
}

/// Releases a side lock.
fn release_side(side: &Side) {
    side.tid.store(0, Ordering::Relaxed);
    side.lock.store(0, Ordering::Release);
}

impl Drop for SideGuard<'_> {
    fn drop(&mut self) {
        release_side(self.0);
    }
}

/// A frame whose receive timed out in the middle of its streamed body: the rx side lock
/// stays held, and the next receive on this end continues it.
pub(crate) struct Partial {
    len: usize,
    has_handles: bool,
    body: Vec<u8>,
    handles: Vec<OwnedHandle>,
}

/// The per-end state the ring logic needs: where the mapping is, which side this end is,
/// and the bookkeeping of spinning and liveness.
pub(crate) struct Ring {
    base: *mut u8,
    pub(crate) cap: usize,
    pub(crate) side: u8,
    peer_gone: AtomicBool,
    /// Nanoseconds since `born` of the last liveness check by a writer.
    last_check: std::sync::atomic::AtomicU64,
    born: Instant,
    /// The current adaptive spin budget, in nanoseconds.
    spin_ns: std::sync::atomic::AtomicU64,
    partial: Mutex<Option<Box<Partial>>>,
    /// Whether `partial` holds a frame (read without the lock by readiness checks).
    pub(crate) in_part: AtomicBool,
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
            last_check: std::sync::atomic::AtomicU64::new(u64::MAX),
            born: Instant::now(),
            spin_ns: std::sync::atomic::AtomicU64::new(crate::spin_limit().as_nanos() as u64),
            partial: Mutex::new(None),
            in_part: AtomicBool::new(false),
        }
    }

    /// Takes the frame kept in part, if any.
    fn take_partial(&self) -> Option<Box<Partial>> {
        let p = self
            .partial
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        self.in_part.store(false, Ordering::Relaxed);
        p
    }

    fn keep_partial(&self, p: Box<Partial>) {
        *self.partial.lock().unwrap_or_else(|e| e.into_inner()) = Some(p);
        self.in_part.store(true, Ordering::Relaxed);
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
    /// Whether the segment's mapping was damaged: another process shrank the object and the
    /// platform put private zero pages in its place (`mp_ipc::memory::Mapping::damaged`).
    fn damaged(&self) -> bool;
    /// Whether process `pid` exists (for taking over a side lock from a dead holder).
    fn pid_alive(&self, pid: u32) -> bool;
    /// Whether `pid` can name a process on this system at all.
    fn pid_plausible(&self, pid: u32) -> bool;
    /// Whether live process `pid` has this segment mapped (`None`: cannot tell). A holder
    /// that does not is no holder: its pid was reused, or written by someone else.
    fn pid_participates(&self, _pid: u32) -> Option<bool> {
        None
    }
    /// The calling thread's id (0 if unknown).
    fn current_tid(&self) -> u32;
    /// Under loom: bytes `off..off + len` of ring `ring`'s data are being written or read,
    /// for the model's race detection (see `model`). Nothing elsewhere.
    #[cfg(loom)]
    fn touch(&self, _ring: u8, _off: usize, _len: usize, _write: bool) {}
    /// This process's id (cheap: cached where asking is a system call).
    fn current_pid(&self) -> u32 {
        std::process::id()
    }
    /// Whether `tid` is a live thread of this process (yes where that cannot be told).
    fn thread_alive(&self, tid: u32) -> bool;
    /// Whether `tid` is known to be a live thread of this process (no where that cannot
    /// be told).
    fn thread_alive_strict(&self, tid: u32) -> bool {
        self.current_tid() != 0 && self.thread_alive(tid)
    }
    /// Takes in whatever waits on the liveness/doorbell object without blocking, and marks
    /// the peer gone ([`Ring::set_gone`]) if it is.
    fn drain(&self) -> Result<(), IpcError>;
    /// Wakes the peer, which armed a flag.
    fn ring_bell(&self);
    /// Called before this end arms a flag and re-checks (an event to reset, for example).
    fn before_arm(&self) {}
    /// Sleeps until the doorbell rings, the peer may have gone, or `slice` has passed.
    fn sleep(&self, slice: Duration) -> Result<(), IpcError>;

    /// Marks a new segment as a channel of this ring's capacity (what
    /// [`check_segment`](RingEnd::check_segment) checks).
    fn init_segment(&self) {
        self.meta().magic.store(MAGIC, Ordering::Relaxed);
        self.meta()
            .cap
            .store(self.ring().cap as u64, Ordering::Release);
    }

    /// Checks that a segment received from another process is a channel of this ring's
    /// capacity (its magic and recorded capacity), or an `InvalidData` error.
    fn check_segment(&self) -> io::Result<()> {
        let meta = self.meta();
        if meta.magic.load(Ordering::Acquire) != MAGIC
            || meta.cap.load(Ordering::Acquire) != self.ring().cap as u64
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the segment is not a shared-memory channel of this size",
            ));
        }
        Ok(())
    }

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
        self.check_intact()?;
        let used = check::used(r, w, self.ring().cap as u64).map_err(corrupt)?;
        Ok((r, used))
    }

    /// Copies `src` into ring `ring` at position `pos`, wrapping around.
    fn copy_in(&self, ring: u8, pos: u64, src: &[u8]) {
        let cap = self.ring().cap;
        debug_assert!(src.len() <= cap);
        let off = (pos as usize) & (cap - 1);
        let first = src.len().min(cap - off);
        let rest = (src.len() - first).min(off);
        let base = self.data(ring);
        #[cfg(loom)]
        {
            self.touch(ring, off, first, true);
            self.touch(ring, 0, rest, true);
        }
        // SAFETY: off + first <= cap and rest <= off < cap; the region is not being read
        // (the reader only reads below the published write position).
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), base.add(off), first);
            std::ptr::copy_nonoverlapping(src.as_ptr().add(first), base, rest);
        }
    }

    /// Copies out of ring `ring` from `pos` into `dst`, wrapping around.
    fn copy_out(&self, ring: u8, pos: u64, dst: &mut [u8]) {
        let cap = self.ring().cap;
        debug_assert!(dst.len() <= cap);
        let off = (pos as usize) & (cap - 1);
        let first = dst.len().min(cap - off);
        let rest = (dst.len() - first).min(off);
        let base = self.data(ring);
        #[cfg(loom)]
        {
            self.touch(ring, off, first, false);
            self.touch(ring, 0, rest, false);
        }
        // SAFETY: as in copy_in; the writer does not touch published, unread bytes. Callers
        // never ask for more than a ring (`rest` only guards that).
        unsafe {
            std::ptr::copy_nonoverlapping(base.add(off), dst.as_mut_ptr(), first);
            std::ptr::copy_nonoverlapping(base, dst.as_mut_ptr().add(first), rest);
        }
    }

    /// Copies out into the spare capacity of `buf` (no zero-filling).
    fn copy_out_vec(&self, ring: u8, pos: u64, buf: &mut Vec<u8>, n: usize) {
        buf.reserve(n);
        let have = buf.len();
        // SAFETY: `n` bytes of spare capacity were reserved; copy_out initialises them all
        // (callers ask for at most a ring).
        unsafe {
            let spare = std::slice::from_raw_parts_mut(buf.as_mut_ptr().add(have), n);
            self.copy_out(ring, pos, spare);
            buf.set_len(have + n);
        }
    }

    /// Takes one side's lock until `deadline`, waiting for another holder of the same end;
    /// takes it over from a holder that died or does not have the segment mapped (marking
    /// the stream broken if it was in the middle of a frame). A lock word that no holder
    /// can have written is a [`corrupt`] error. Once the peer is gone, the wait ends even
    /// without a deadline: `BrokenPipe` for the tx side, `Eof` for the rx side when the
    /// word stays the same for a [`SLICE`].
    fn lock_side<'a>(
        &self,
        side: &'a Side,
        flags: &Flags,
        deadline: Deadline,
    ) -> Result<SideGuard<'a>, IpcError> {
        let me = self.current_pid();
        let tid = self.current_tid();
        // The common case, free: no clock read, no bookkeeping.
        if side
            .lock
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            side.tid.store(tid, Ordering::Relaxed);
            return Ok(SideGuard(side));
        }
        let mut rounds = 0u32;
        let start = Instant::now();
        let (mut last_look, mut last_participant, mut last_live) = (start, start, start);
        let sending = std::ptr::eq(side, &self.hdr(self.tx()).w.0);
        // The word and when this thread first saw it with the peer gone.
        let mut stale: Option<((u32, u32), Instant)> = None;
        // When this thread first saw the word name this process with no thread (normally
        // an instant), to look again a while later.
        let mut zero_seen: Option<Instant> = None;
        loop {
            let holder =
                match side
                    .lock
                    .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
                {
                    Ok(_) => {
                        side.tid.store(tid, Ordering::Relaxed);
                        return Ok(SideGuard(side));
                    }
                    Err(word) => word,
                };
            if let check::Holder::Pid(holder) =
                check::holder(holder, |p| self.pid_plausible(p)).map_err(corrupt)?
            {
                if holder == me {
                    let t = side.tid.load(Ordering::Relaxed);
                    // Only if the word still names this process: the holder may have
                    // released (and another thread taken it) between the two loads.
                    if side.lock.load(Ordering::Acquire) == me {
                        let zero_before =
                            t == 0 && zero_seen.is_some_and(|at| at.elapsed() >= HOLDER_LOOK);
                        if t == 0 {
                            zero_seen.get_or_insert_with(Instant::now);
                        } else {
                            zero_seen = None;
                        }
                        check::own_holder(t, PARKED, tid, |t| self.thread_alive(t), zero_before)
                            .map_err(corrupt)?;
                    }
                } else if last_look.elapsed() > HOLDER_LOOK {
                    last_look = Instant::now();
                    // Thread ids and pids share one numbering: a thread of this process
                    // is no other process.
                    if self.thread_alive_strict(holder) {
                        return Err(corrupt(format!(
                            "a lock word names {holder}, a thread of this process"
                        )));
                    }
                    let mut gone = !self.pid_alive(holder);
                    if !gone && last_participant.elapsed() > PARTICIPANT_LOOK {
                        last_participant = Instant::now();
                        gone = self.pid_participates(holder) == Some(false);
                    }
                    // The holder's thread id is cleared first: for an instant the word names
                    // this process, and the dead holder's thread is none of ours.
                    if gone {
                        side.tid.store(0, Ordering::Relaxed);
                    }
                    if gone
                        && side
                            .lock
                            .compare_exchange(holder, me, Ordering::Acquire, Ordering::Relaxed)
                            .is_ok()
                    {
                        side.tid.store(tid, Ordering::Relaxed);
                        if side.busy.swap(0, Ordering::AcqRel) != 0 {
                            flags.broken.store(1, Ordering::Release);
                        }
                        return Ok(SideGuard(side));
                    }
                }
            }
            // A peer that is gone can leave a word that no holder of this end will clear:
            // one it wrote itself before dying (naming this process, say), or a frame a
            // holder here keeps in part, which can never end. A sender fails at once (it
            // would with the lock); a receiver gets the end of the stream once the word
            // has not changed for a slice (a live holder here ends its frame sooner).
            if last_live.elapsed() > HOLDER_LOOK {
                last_live = Instant::now();
                self.drain()?;
            }
            if self.gone() {
                if sending {
                    return Err(IpcError::BrokenPipe);
                }
                let word = (
                    side.lock.load(Ordering::Relaxed),
                    side.tid.load(Ordering::Relaxed),
                );
                match stale {
                    Some((w, at)) if w == word => {
                        if at.elapsed() >= SLICE {
                            return Err(IpcError::Eof);
                        }
                    }
                    _ => stale = Some((word, Instant::now())),
                }
            }
            if deadline.expired() {
                return Err(IpcError::Timeout);
            }
            rounds += 1;
            if rounds < 100 {
                std::hint::spin_loop();
            } else {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }

    /// Fails once the segment's memory is gone (shrunk by another process): whatever was
    /// just read from it is zeros, whatever was written reached no one. Checked after
    /// reading values from the segment and before trusting them.
    fn check_intact(&self) -> Result<(), IpcError> {
        if self.damaged() {
            return Err(corrupt(
                "another process shrank the segment under this mapping; its memory is gone",
            ));
        }
        Ok(())
    }

    fn check_broken(&self, ring: u8) -> Result<(), IpcError> {
        self.check_intact()?;
        if self.hdr(ring).f.0.broken.load(Ordering::Acquire) != 0 {
            return Err(corrupt(
                "a process died in the middle of a message on this channel, or broke its rules",
            ));
        }
        Ok(())
    }

    /// Marks ring `ring` broken for every holder of either end.
    fn set_broken(&self, ring: u8) {
        self.hdr(ring).f.0.broken.store(1, Ordering::Release);
    }

    /// A writer's cheap liveness check: at most one look per millisecond.
    fn check_peer(&self) -> Result<(), IpcError> {
        let st = self.ring();
        let now = st.born.elapsed().as_nanos() as u64;
        let last = st.last_check.load(Ordering::Relaxed);
        // Under loom the clock is not part of the model: liveness is what a sleep finds.
        let due = last == u64::MAX || now.saturating_sub(last) > LIVENESS_EVERY.as_nanos() as u64;
        if due && !cfg!(loom) {
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
        deadline: Deadline,
    ) -> Result<bool, IpcError> {
        if ready()? {
            return Ok(true);
        }
        // Spin (through the one spin loop of mp, so a zero limit turns it off).
        let spin_ns = &self.ring().spin_ns;
        let budget = spin_ns.load(Ordering::Relaxed);
        let limit = crate::spin_limit().as_nanos().min(u128::from(u64::MAX)) as u64;
        if budget > 0 && !deadline.expired() {
            let window = Duration::from_nanos(budget.min(limit));
            let spun = mp_ipc::spin::spin(
                window,
                deadline,
                Pace::Busy {
                    rounds: u32::MAX,
                    hints: 1,
                },
                || ready().map(|r| r.then_some(())),
            )?;
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
            if deadline.expired() {
                flag.store(0, Ordering::Relaxed);
                return Ok(false);
            }
            self.sleep(deadline.remaining_capped(SLICE))?;
        }
    }

    /// Whether a frame (or its start, or the rest of a frame received in part) can be
    /// read from the rx ring now.
    fn readable(&self) -> Result<bool, IpcError> {
        let want = if self.ring().in_part.load(Ordering::Relaxed) {
            1
        } else {
            HEADER_LEN as u64
        };
        Ok(self.used(self.rx())?.1 >= want)
    }

    /// Writes one frame (header + parts) into the tx ring. The side lock is held.
    fn write_frame(&self, header: FrameHeader, parts: &[&[u8]]) -> Result<(), IpcError> {
        let ring = self.tx();
        let h = self.hdr(ring);
        self.check_broken(ring)?;
        let ring_cap = self.ring().cap;
        let cap = ring_cap as u64;
        let hbytes = header.encode();
        if check::whole(header.len, cap) {
            // Whole frame at once: the reader never sees part of it.
            let total = HEADER_LEN as u64 + header.len;
            let room = |me: &Self| Ok(cap - me.used(ring)?.1 >= total);
            if !room(self)? {
                self.wait_for(|| room(self), &h.f.0.writer_armed, Deadline::NEVER)?;
                if !room(self)? {
                    return Err(IpcError::BrokenPipe);
                }
            }
            let w = h.w.0.pos.load(Ordering::Relaxed);
            self.copy_in(ring, w, &hbytes);
            let mut at = w.wrapping_add(HEADER_LEN as u64);
            for p in parts {
                self.copy_in(ring, at, p);
                at = at.wrapping_add(p.len() as u64);
            }
            h.w.0.pos.store(at, Ordering::Release);
            self.notify(&h.f.0.reader_armed);
            // A frame written to pages that replaced a shrunk segment reached no one.
            return self.check_intact();
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
                    self.wait_for(
                        || Ok(self.used(ring)?.1 < cap),
                        &h.f.0.writer_armed,
                        Deadline::NEVER,
                    )?;
                    free = cap - self.used(ring)?.1;
                    if free == 0 {
                        return Err(IpcError::BrokenPipe);
                    }
                    self.check_broken(ring)?;
                }
                let n = (piece.len() - done).min(free.min(chunk_max) as usize);
                let w = h.w.0.pos.load(Ordering::Relaxed);
                self.copy_in(ring, w, &piece[done..done + n]);
                h.w.0.pos.store(w.wrapping_add(n as u64), Ordering::Release);
                self.notify(&h.f.0.reader_armed);
                done += n;
            }
        }
        h.w.0.busy.store(0, Ordering::Relaxed);
        self.check_intact()
    }

    /// Sends one frame made of `parts` (the header says whether handles travel with it),
    /// taking the tx side lock; `before` runs under the lock, before the frame is written,
    /// with the position its header will take (descriptors go ahead of the frame there).
    fn send_ring(
        &self,
        header: FrameHeader,
        parts: &[&[u8]],
        before: impl FnOnce(u64) -> Result<(), IpcError>,
    ) -> Result<(), IpcError> {
        let h = self.hdr(self.tx());
        let _g = self.lock_side(&h.w.0, &h.f.0, Deadline::NEVER)?;
        self.check_peer()?;
        before(h.w.0.pos.load(Ordering::Relaxed))?;
        self.write_frame(header, parts)
    }

    /// Waits until `deadline` for a frame header in the rx ring and returns it with its
    /// position (not consumed). The side lock is held.
    fn next_header(&self, deadline: Deadline) -> Result<(FrameHeader, u64), IpcError> {
        let ring = self.rx();
        let h = self.hdr(ring);
        self.check_broken(ring)?;
        let (_, used) = self.used(ring)?;
        if used < HEADER_LEN as u64 {
            if !self.wait_for(|| self.readable(), &h.f.0.reader_armed, deadline)? {
                return Err(IpcError::Timeout);
            }
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
        self.check_intact()?;
        Ok((FrameHeader::decode(hb), r))
    }

    /// Reads the body of a frame of `len` bytes published whole at position `r` with
    /// `copy(body position)`, then consumes it. The side lock is held.
    fn read_whole(&self, r: u64, len: usize, copy: impl FnOnce(u64)) -> Result<(), IpcError> {
        let ring = self.rx();
        let h = self.hdr(ring);
        check::stored_whole(len as u64, self.used(ring)?.1).map_err(corrupt)?;
        copy(r.wrapping_add(HEADER_LEN as u64));
        self.check_intact()?;
        h.r.0
            .pos
            .store(r.wrapping_add((HEADER_LEN + len) as u64), Ordering::Release);
        self.notify(&h.f.0.writer_armed);
        Ok(())
    }

    /// Reads more of a streamed body into `buf` (`len` bytes in all) until `deadline`.
    /// Ok(false): the deadline passed first. The side lock is held.
    fn stream_body(
        &self,
        len: usize,
        buf: &mut Vec<u8>,
        deadline: Deadline,
    ) -> Result<bool, IpcError> {
        let ring = self.rx();
        let have = self.stream(buf.len(), len, deadline, |at, n| {
            let have = buf.len();
            if buf.capacity() < have + n {
                let want = next_capacity(have, len).max(have + n);
                buf.reserve_exact(want - have);
            }
            self.copy_out_vec(ring, at, buf, n);
        })?;
        Ok(have == len)
    }

    /// Reads the bytes of a streamed body after the first `have` of `len` as they are
    /// published, until `deadline`, handing each run to `take(position, n)` to copy out
    /// before it is consumed. Returns how much of the body is there (`len` unless the
    /// deadline passed). The side lock is held.
    fn stream(
        &self,
        mut have: usize,
        len: usize,
        deadline: Deadline,
        mut take: impl FnMut(u64, usize),
    ) -> Result<usize, IpcError> {
        let ring = self.rx();
        let h = self.hdr(ring);
        while have < len {
            let mut used = self.used(ring)?.1;
            if used == 0 {
                if !self.wait_for(|| Ok(self.used(ring)?.1 > 0), &h.f.0.reader_armed, deadline)? {
                    return Ok(have);
                }
                used = self.used(ring)?.1;
                if used == 0 {
                    self.check_broken(ring)?;
                    self.set_broken(ring);
                    return Err(IpcError::Truncated {
                        got: have as u64,
                        expected: len as u64,
                    });
                }
            }
            let n = (used as usize).min(len - have);
            let at = h.r.0.pos.load(Ordering::Relaxed);
            take(at, n);
            self.check_intact()?;
            h.r.0
                .pos
                .store(at.wrapping_add(n as u64), Ordering::Release);
            self.notify(&h.f.0.writer_armed);
            have += n;
        }
        Ok(have)
    }

    /// Receives one frame into `buf` until `deadline`, returning whether its header
    /// announced handles and the handles `on_header` took for it. `on_header(position,
    /// has_handles)` runs once per frame, after its header is known and before its body
    /// is read. A frame announcing handles may be `extra` bytes over `max_len` (a
    /// platform's handle prefix in the body).
    ///
    /// A streamed frame whose body stalls past the deadline is kept with the rx side lock
    /// held: the next receive on this end continues it, so a timeout loses nothing.
    fn recv_ring(
        &self,
        buf: &mut Vec<u8>,
        max_len: u64,
        extra: u64,
        deadline: Deadline,
        on_header: impl FnOnce(u64, bool) -> Result<Vec<OwnedHandle>, IpcError>,
    ) -> Result<(bool, Vec<OwnedHandle>), IpcError> {
        self.recv_ring_split(buf, None, max_len, extra, deadline, on_header)
            .map(|(has_handles, handles, _)| (has_handles, handles))
    }

    /// [`recv_ring`](RingEnd::recv_ring), and for a new frame without handles when `split`
    /// is given, the split of [`mp_ipc::Channel::recv_frame_split_until`]: its first bytes
    /// into the prefix, the body into `buf` in place. The last value says how many bytes
    /// went into the prefix, `None` when the frame is all in `buf` (resumed, or carrying
    /// handles) and is the caller's to split.
    fn recv_ring_split(
        &self,
        buf: &mut Vec<u8>,
        mut split: Option<Split<'_>>,
        max_len: u64,
        extra: u64,
        deadline: Deadline,
        on_header: impl FnOnce(u64, bool) -> Result<Vec<OwnedHandle>, IpcError>,
    ) -> Result<(bool, Vec<OwnedHandle>, Option<usize>), IpcError> {
        let ring = self.rx();
        let h = self.hdr(ring);
        let resumed = self.ring().take_partial();
        let (len, has_handles, handles, mut prefix) = match resumed {
            Some(p) => {
                *buf = p.body;
                (p.len, p.has_handles, p.handles, None)
            }
            None => {
                let g = self.lock_side(&h.r.0, &h.f.0, deadline)?;
                let (header, r) = self.next_header(deadline)?;
                let limit = if header.has_handles {
                    max_len.saturating_add(extra)
                } else {
                    max_len
                };
                let len = header.check(limit)?;
                let handles = on_header(r, header.has_handles)?;
                let prefix = match split.take() {
                    Some((p, f)) if !header.has_handles => Some((p, prefix_bytes(len as u64, f))),
                    _ => None,
                };
                buf.clear();
                if check::whole(header.len, self.ring().cap as u64) {
                    let mut split_at = None;
                    self.read_whole(r, len, |at| {
                        let n = prefix.map_or(0, |(p, n)| {
                            self.copy_out(ring, at, &mut p[..n]);
                            split_at = Some(n);
                            n
                        });
                        self.copy_out_vec(ring, at.wrapping_add(n as u64), buf, len - n)
                    })?;
                    return Ok((header.has_handles, handles, split_at));
                }
                // Streamed: from here the frame is consumed as it is read.
                h.r.0.busy.store(1, Ordering::Relaxed);
                h.r.0
                    .pos
                    .store(r.wrapping_add(HEADER_LEN as u64), Ordering::Release);
                self.notify(&h.f.0.writer_armed);
                g.keep();
                (len, header.has_handles, handles, prefix)
            }
        };
        let streamed = match prefix.as_mut() {
            None => self.stream_body(len, buf, deadline),
            Some((p, n)) => {
                let mut head = Vec::with_capacity(*n);
                match self.stream_body(*n, &mut head, deadline) {
                    Ok(true) => {
                        p[..*n].copy_from_slice(&head);
                        let done = self.stream_body(len - *n, buf, deadline);
                        if let Ok(false) = done {
                            // Kept whole, as an unsplit frame is.
                            head.append(buf);
                            *buf = head;
                        }
                        done
                    }
                    Ok(false) => {
                        *buf = head;
                        Ok(false)
                    }
                    Err(e) => Err(e),
                }
            }
        };
        match streamed {
            Ok(true) => {
                h.r.0.busy.store(0, Ordering::Relaxed);
                release_side(&h.r.0);
                Ok((has_handles, handles, prefix.map(|(_, n)| n)))
            }
            Ok(false) => {
                self.ring().keep_partial(Box::new(Partial {
                    len,
                    has_handles,
                    body: std::mem::take(buf),
                    handles,
                }));
                Err(IpcError::Timeout)
            }
            Err(e) => {
                // The rest of the frame is lost: nobody can read this ring in step again.
                self.set_broken(ring);
                h.r.0.busy.store(0, Ordering::Relaxed);
                release_side(&h.r.0);
                Err(e)
            }
        }
    }

    /// [`mp_ipc::Channel::recv_frame_into`] for a frame without handles that fits `out`,
    /// read straight into it, whole or streamed; anything else (`Ok(None)`) goes through
    /// [`recv_ring`](RingEnd::recv_ring). `on_header` as there, for frames without handles.
    fn recv_ring_into(
        &self,
        out: &mut [u8],
        max_len: u64,
        on_header: impl FnOnce(u64, bool) -> Result<Vec<OwnedHandle>, IpcError>,
    ) -> Result<Option<usize>, IpcError> {
        if self.ring().in_part.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let ring = self.rx();
        let h = self.hdr(ring);
        let _g = self.lock_side(&h.r.0, &h.f.0, Deadline::NEVER)?;
        let (header, r) = self.next_header(Deadline::NEVER)?;
        let len = header.check(max_len)?;
        if header.has_handles || len > out.len() {
            return Ok(None);
        }
        on_header(r, false)?;
        if check::whole(header.len, self.ring().cap as u64) {
            self.read_whole(r, len, |at| self.copy_out(ring, at, &mut out[..len]))?;
            return Ok(Some(len));
        }
        // Streamed, with no deadline: the side lock stays with the guard throughout.
        h.r.0.busy.store(1, Ordering::Relaxed);
        h.r.0
            .pos
            .store(r.wrapping_add(HEADER_LEN as u64), Ordering::Release);
        self.notify(&h.f.0.writer_armed);
        let mut done = 0;
        let streamed = self
            .stream(0, len, Deadline::NEVER, |at, n| {
                self.copy_out(ring, at, &mut out[done..done + n]);
                done += n;
            })
            .and_then(|have| match have == len {
                true => Ok(()),
                false => Err(IpcError::Timeout),
            });
        if streamed.is_err() {
            // The rest of the frame is lost: nobody can read this ring in step again.
            self.set_broken(ring);
        }
        h.r.0.busy.store(0, Ordering::Relaxed);
        streamed.map(|()| Some(len))
    }

    /// Gives up a frame kept in part (the end is going away): the rest of it can never be
    /// read in step, so the ring is marked broken and the side lock released.
    fn abandon_partial(&self) {
        if self.ring().take_partial().is_some() {
            let h = self.hdr(self.rx());
            self.set_broken(self.rx());
            h.r.0.busy.store(0, Ordering::Relaxed);
            release_side(&h.r.0);
        }
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
        let deadline = Deadline::from_timeout(timeout);
        let h = self.hdr(self.rx());
        if self.readable()? {
            return Ok(true);
        }
        if deadline.expired() {
            self.drain()?;
            return Ok(self.gone() || self.readable()?);
        }
        let ok = self.wait_for(|| self.readable(), &h.f.0.reader_armed, deadline)?;
        Ok(ok && (self.gone() || self.readable()?) || self.readable()?)
    }
}
