//! An in-process [`RingEnd`] over a heap buffer: both ends of a channel in one process, so
//! that Miri and the fuzzer run the ring protocol of [`crate::ring`] (the very code the
//! platform ends run) without a shared-memory object, a socket or any other system call.
//!
//! The platform's parts are modelled with `std` only: the segment is an aligned, zeroed
//! allocation of [`total_len`]`(cap)` bytes; each side's doorbell is a flag under a mutex
//! with a condition variable; liveness is a flag per side, cleared when an end is dropped
//! or [`killed`](HeapEnd::kill); thread ids come from a counter (outside the range of
//! process ids) with a registry of live threads, so the lock checks that name threads
//! (`check::own_holder`) see what they would on Linux. Process ids other than this one
//! name dead processes. A test can also hold one side at its next sleep ([`Gate`]), which
//! stops a writer at a known point in the middle of a frame.

use std::alloc::Layout;
use std::collections::BTreeSet;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use mp_ipc::deadline::Deadline;
use mp_ipc::frame::{split_off_prefix, FrameHeader, Prefix};
use mp_ipc::handle::OwnedHandle;
use mp_ipc::IpcError;

use crate::model;
use crate::model::AtomicBool;
use crate::ring::{corrupt, round_cap, total_len, Ring, RingEnd};

/// The largest number that can name a process here (Linux's `PID_MAX_LIMIT`).
const PID_MAX: u32 = 1 << 22;

/// The first thread id handed out: above every process id, as no pid is a thread of ours.
const FIRST_TID: u32 = 1 << 30;

static NEXT_TID: AtomicU32 = AtomicU32::new(FIRST_TID);
static LIVE_TIDS: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

/// This thread's id, registered as live until the thread ends.
struct Tid(u32);

impl Tid {
    fn new() -> Self {
        let id = NEXT_TID.fetch_add(1, Ordering::Relaxed);
        lock(&LIVE_TIDS).insert(id);
        Self(id)
    }
}

impl Drop for Tid {
    fn drop(&mut self) {
        lock(&LIVE_TIDS).remove(&self.0);
    }
}

thread_local! {
    static TID: Tid = Tid::new();
}

/// The calling thread's id (0 while the thread is ending: unknown).
pub(crate) fn current_tid() -> u32 {
    TID.try_with(|t| t.0).unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The segment: a zeroed allocation of [`total_len`]`(cap)` bytes, page-aligned as a
/// mapping is.
struct Segment {
    ptr: NonNull<u8>,
    layout: Layout,
}

impl Segment {
    fn new(cap: usize) -> Self {
        let layout = Layout::from_size_align(total_len(cap), 4096).expect("a valid layout");
        // SAFETY: the layout's size is not zero.
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            std::alloc::handle_alloc_error(layout)
        };
        Self { ptr, layout }
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// One side's doorbell: rung by the peer, taken in by [`RingEnd::drain`] (loom's under
/// `--cfg loom`, see `model`).
#[derive(Default)]
struct Bell {
    rung: model::Mutex<bool>,
    cv: model::Condvar,
}

impl Bell {
    fn rung(&self) -> impl std::ops::DerefMut<Target = bool> + '_ {
        self.rung.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ring(&self) {
        *self.rung() = true;
        self.cv.notify_all();
    }

    /// Waits until rung or `peer` (alive) goes false, at most `slice` (under loom, without
    /// limit: a wake-up that never comes is a deadlock the model reports).
    fn wait(&self, slice: Duration, peer: &AtomicBool) {
        let g = self.rung.lock().unwrap_or_else(|e| e.into_inner());
        let waiting = |rung: &mut bool| !*rung && peer.load(Ordering::Acquire);
        #[cfg(not(loom))]
        drop(
            self.cv
                .wait_timeout_while(g, slice, waiting)
                .unwrap_or_else(|e| e.into_inner()),
        );
        #[cfg(loom)]
        {
            let _ = slice;
            let mut g = g;
            while waiting(&mut g) {
                g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
            }
        }
    }
}

/// Where a side stands with respect to its [`Gate`].
#[derive(Default)]
struct GateState {
    /// Set by [`Gate::hold`]: the side stops at its next look at liveness.
    held: bool,
    /// Whether the side is stopped there now.
    waiting: bool,
}

/// A test's hold on one side: while held, that side's next sleep on its doorbell (after it
/// armed its flag and found nothing) waits for the release, doorbell or not. Used to stop a
/// writer that found the ring full in the middle of a frame, deterministically.
#[derive(Default)]
pub(crate) struct Gate {
    state: Mutex<GateState>,
    cv: Condvar,
}

impl Gate {
    /// From now on, the side stops at its next sleep.
    #[cfg(test)]
    pub(crate) fn hold(&self) {
        lock(&self.state).held = true;
    }

    /// Waits (at most `limit`) until the side is stopped; whether it is.
    #[cfg(test)]
    pub(crate) fn wait_stopped(&self, limit: Duration) -> bool {
        let g = lock(&self.state);
        let (g, _) = self
            .cv
            .wait_timeout_while(g, limit, |s| !s.waiting)
            .unwrap_or_else(|e| e.into_inner());
        g.waiting
    }

    /// Lets the side go on.
    #[cfg(test)]
    pub(crate) fn release(&self) {
        lock(&self.state).held = false;
        self.cv.notify_all();
    }

    /// Stops here while held (a test's hold is bounded by the test: every test releases).
    #[cfg(not(loom))]
    fn pass(&self) {
        let mut g = lock(&self.state);
        if !g.held {
            return;
        }
        g.waiting = true;
        self.cv.notify_all();
        while g.held {
            g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        g.waiting = false;
    }
}

/// What both ends share: the segment and the platform's signals, per side.
struct Shared {
    seg: Segment,
    bells: [Bell; 2],
    alive: [AtomicBool; 2],
    damaged: AtomicBool,
    gates: [Gate; 2],
    /// Under loom, a cell per data byte of both rings, touched by every copy (see `model`).
    #[cfg(loom)]
    cells: Vec<loom::cell::UnsafeCell<()>>,
}

// SAFETY: the segment is plain memory accessed through atomics and bounds-checked copies
// (the same rules as a shared mapping); every other field is thread-safe.
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

/// One end of an in-process channel over a heap buffer (see the module doc).
pub(crate) struct HeapEnd {
    /// Declared before `shared`: it points into the segment.
    ring: Ring,
    shared: Arc<Shared>,
}

// SAFETY: as for `ShmChannel`: the segment is accessed through atomics and bounds-checked
// copies; the rest is thread-safe.
unsafe impl Send for HeapEnd {}
// SAFETY: as above.
unsafe impl Sync for HeapEnd {}

impl HeapEnd {
    /// A connected pair whose rings hold `cap` bytes each (rounded as `ShmChannel::pair`
    /// rounds it).
    pub(crate) fn pair(cap: usize) -> (Self, Self) {
        let cap = round_cap(cap);
        let seg = Segment::new(cap);
        // SAFETY: a fresh, page-aligned allocation of total_len(cap) >= DATA_AT bytes.
        #[cfg(loom)]
        unsafe {
            crate::ring::construct_headers(seg.ptr.as_ptr())
        };
        let shared = Arc::new(Shared {
            seg,
            bells: Default::default(),
            alive: [AtomicBool::new(true), AtomicBool::new(true)],
            damaged: AtomicBool::new(false),
            gates: Default::default(),
            #[cfg(loom)]
            cells: (0..2 * cap)
                .map(|_| loom::cell::UnsafeCell::new(()))
                .collect(),
        });
        let end = |side| Self {
            // SAFETY: the segment is total_len(cap) bytes, page-aligned, and lives in
            // `shared` beside the ring; cap is a power of two.
            ring: unsafe { Ring::new(shared.seg.ptr.as_ptr(), side, cap) },
            shared: shared.clone(),
        };
        let (a, b) = (end(0), end(1));
        a.init_segment();
        (a, b)
    }

    /// The segment's first byte (its length is [`total_len`] of the capacity): what the
    /// peer could scribble on. Writes through it must not race with a call on either end.
    pub(crate) fn segment(&self) -> *mut u8 {
        self.shared.seg.ptr.as_ptr()
    }

    /// The side this end writes.
    pub(crate) fn side(&self) -> u8 {
        self.ring.side
    }

    /// Models this end's process dying: the peer sees it gone (and is woken).
    pub(crate) fn kill(&self) {
        self.shared.alive[self.ring.side as usize].store(false, Ordering::Release);
        self.ring_peer();
    }

    /// Models the segment's memory going away under the mapping (another process shrank it).
    pub(crate) fn set_damaged(&self) {
        self.shared.damaged.store(true, Ordering::Release);
    }

    /// The gate of side `side` (see [`Gate`]).
    pub(crate) fn gate(&self, side: u8) -> &Gate {
        &self.shared.gates[side as usize & 1]
    }

    /// Sends one frame made of `parts` (waits for room while the peer lives).
    pub(crate) fn send(&self, parts: &[&[u8]]) -> Result<(), IpcError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        self.send_ring(FrameHeader::new(len), parts, |_| Ok(()))
    }

    /// Receives one frame of at most `max_len` bytes into `buf` until `deadline`. A frame
    /// that announces handles is damage: this end passes none.
    pub(crate) fn recv(
        &self,
        buf: &mut Vec<u8>,
        max_len: u64,
        deadline: Deadline,
    ) -> Result<(), IpcError> {
        self.recv_ring(buf, max_len, 0, deadline, no_handles)
            .map(drop)
    }

    /// `Channel::recv_frame_split_until`: the first bytes of a frame into `prefix`, the
    /// rest into `buf`; returns the prefix length.
    pub(crate) fn recv_split(
        &self,
        prefix: &mut Prefix,
        prefix_len: fn(u64) -> usize,
        buf: &mut Vec<u8>,
        max_len: u64,
        deadline: Deadline,
    ) -> Result<usize, IpcError> {
        let (_, _, split) = self.recv_ring_split(
            buf,
            Some((prefix, prefix_len)),
            max_len,
            0,
            deadline,
            no_handles,
        )?;
        Ok(split.unwrap_or_else(|| split_off_prefix(buf, prefix, prefix_len)))
    }

    /// `Channel::recv_frame_into`'s fast path: a frame published whole that fits `out`,
    /// straight into it (`Ok(None)`: anything else, which [`recv`](HeapEnd::recv) takes).
    pub(crate) fn recv_into(
        &self,
        out: &mut [u8],
        max_len: u64,
    ) -> Result<Option<usize>, IpcError> {
        self.recv_ring_into(out, max_len, |_, _| Ok(Vec::new()))
    }

    /// Whether a frame can be read now, waiting at most `timeout`.
    pub(crate) fn poll(&self, timeout: Option<Duration>) -> Result<bool, IpcError> {
        self.poll_rx(timeout)
    }

    fn peer(&self) -> usize {
        1 - self.ring.side as usize
    }

    fn ring_peer(&self) {
        self.shared.bells[self.peer()].ring();
    }
}

/// The header check of a heap end's receives: a frame announcing handles is damage, as
/// this end passes none.
fn no_handles(_at: u64, has_handles: bool) -> Result<Vec<OwnedHandle>, IpcError> {
    if has_handles {
        return Err(corrupt("a frame announced handles over a channel of none"));
    }
    Ok(Vec::new())
}

impl RingEnd for HeapEnd {
    fn ring(&self) -> &Ring {
        &self.ring
    }

    fn damaged(&self) -> bool {
        self.shared.damaged.load(Ordering::Acquire)
    }

    /// Only this process is alive: any other pid names a dead holder.
    fn pid_alive(&self, pid: u32) -> bool {
        pid == std::process::id()
    }

    fn pid_plausible(&self, pid: u32) -> bool {
        (pid as i32) > 0 && pid <= PID_MAX
    }

    fn current_tid(&self) -> u32 {
        current_tid()
    }

    fn thread_alive(&self, tid: u32) -> bool {
        tid == 0 || lock(&LIVE_TIDS).contains(&tid)
    }

    /// Takes in a rung doorbell and notes a peer that is gone.
    fn drain(&self) -> Result<(), IpcError> {
        *self.shared.bells[self.ring.side as usize].rung() = false;
        if !self.shared.alive[self.peer()].load(Ordering::Acquire) {
            self.ring.set_gone();
        }
        Ok(())
    }

    fn ring_bell(&self) {
        self.ring_peer();
    }

    /// Waits for the doorbell or the peer's end, at most `slice` (after the gate, if held).
    fn sleep(&self, slice: Duration) -> Result<(), IpcError> {
        #[cfg(not(loom))]
        self.gate(self.ring.side).pass();
        // The bell stays rung: `drain` takes it in, as a platform's does.
        self.shared.bells[self.ring.side as usize].wait(slice, &self.shared.alive[self.peer()]);
        Ok(())
    }

    #[cfg(loom)]
    fn touch(&self, ring: u8, off: usize, len: usize, write: bool) {
        let at = ring as usize * self.ring.cap + off;
        for cell in &self.shared.cells[at..at + len] {
            if write {
                cell.with_mut(|_| ());
            } else {
                cell.with(|_| ());
            }
        }
    }
}

impl Drop for HeapEnd {
    fn drop(&mut self) {
        self.abandon_partial();
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    //! The ring protocol over a heap buffer, in one process: what `cargo xtask miri` runs
    //! (filter `heap::`). Sizes are small under Miri.

    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};

    use mp_ipc::deadline::Deadline;
    use mp_ipc::frame::{FrameHeader, HEADER_LEN};
    use mp_ipc::IpcError;

    use super::HeapEnd;
    use crate::ring::{RingEnd, DATA_AT, MIN_RING, PARKED};

    const CAP: usize = MIN_RING;

    fn pattern(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8 ^ seed).collect()
    }

    fn soon() -> Deadline {
        Deadline::after(Duration::from_secs(30))
    }

    fn recv(end: &HeapEnd, max: u64) -> Result<Vec<u8>, IpcError> {
        let mut buf = Vec::new();
        end.recv(&mut buf, max, soon()).map(|()| buf)
    }

    fn is_corrupt<T: std::fmt::Debug>(r: Result<T, IpcError>) -> bool {
        matches!(r, Err(IpcError::Corrupt(_)))
    }

    /// Writes `bytes` into ring `ring`'s data at offset `off` (no call is running).
    fn scribble(end: &HeapEnd, ring: u8, off: usize, bytes: &[u8]) {
        assert!(off + bytes.len() <= CAP);
        // SAFETY: inside the data area of `ring`; nothing else touches the segment now.
        unsafe {
            let at = end.segment().add(DATA_AT + ring as usize * CAP + off);
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), at, bytes.len());
        }
    }

    #[test]
    fn small_frames_cross_both_ways() {
        let (a, b) = HeapEnd::pair(CAP);
        for n in [0usize, 1, 7, 8, 100, CAP - HEADER_LEN] {
            a.send(&[&pattern(n, 1)[..n / 2], &pattern(n, 1)[n / 2..]])
                .unwrap();
            b.send(&[&pattern(n, 2)]).unwrap();
            assert_eq!(recv(&b, u64::MAX).unwrap(), pattern(n, 1));
            assert_eq!(recv(&a, u64::MAX).unwrap(), pattern(n, 2));
        }
        // Straight into a caller's buffer, and what does not fit goes the long way.
        a.send(&[b"hello"]).unwrap();
        let mut out = [0u8; 8];
        assert_eq!(b.recv_into(&mut out, 100).unwrap(), Some(5));
        assert_eq!(&out[..5], b"hello");
        a.send(&[&[7u8; 9]]).unwrap();
        assert_eq!(b.recv_into(&mut out, 100).unwrap(), None);
        assert_eq!(recv(&b, 100).unwrap(), [7u8; 9]);
        // Nothing more: a receive times out, a poll says no; the peer's end is seen.
        let mut buf = Vec::new();
        let e = b.recv(&mut buf, 100, Deadline::after(Duration::from_millis(1)));
        assert!(matches!(e, Err(IpcError::Timeout)), "{e:?}");
        assert!(!b.poll(Some(Duration::ZERO)).unwrap());
        a.send(&[b"last"]).unwrap();
        drop(a);
        assert!(b.poll(Some(Duration::ZERO)).unwrap());
        assert_eq!(recv(&b, 100).unwrap(), b"last");
        assert!(matches!(recv(&b, 100), Err(IpcError::Eof)));
        assert!(matches!(b.send(&[b"x"]), Err(IpcError::BrokenPipe)));
    }

    #[test]
    fn frames_wrap_at_the_ring_end_and_at_two_to_the_64() {
        let (a, b) = HeapEnd::pair(CAP);
        // Odd sizes: the headers and bodies land across the ring's end in every way.
        for (i, n) in [1000usize, 3000, 2500, 8, 4088, 1, 4000, 777]
            .iter()
            .enumerate()
        {
            let v = pattern(*n, i as u8);
            a.send(&[&v]).unwrap();
            assert_eq!(recv(&b, u64::MAX).unwrap(), v);
        }
        // Positions just short of 2^64: they wrap with the data.
        let h = a.hdr(0);
        for p in [&h.w.0.pos, &h.r.0.pos] {
            p.store(u64::MAX - 3, Ordering::Relaxed);
        }
        for n in [10usize, 5000, 300] {
            let v = pattern(n, 9);
            let t = std::thread::scope(|s| {
                let t = s.spawn(|| a.send(&[&v]));
                assert_eq!(recv(&b, u64::MAX).unwrap(), v);
                t.join().unwrap()
            });
            t.unwrap();
        }
        assert!(h.w.0.pos.load(Ordering::Relaxed) < 1 << 20);
    }

    #[test]
    fn a_frame_several_times_the_ring_streams_between_threads() {
        let n = if cfg!(miri) { 4 * CAP + 123 } else { 1 << 20 };
        let (a, b) = HeapEnd::pair(CAP);
        let v = pattern(n, 3);
        std::thread::scope(|s| {
            s.spawn(|| {
                a.send(&[&v[..10], &[], &v[10..n / 2], &v[n / 2..]])
                    .unwrap();
                a.send(&[b"after"]).unwrap();
            });
            let got = recv(&b, u64::MAX).unwrap();
            assert!(got == v);
            assert_eq!(recv(&b, u64::MAX).unwrap(), b"after");
        });
        // Over the receiver's limit: refused before any body is read; the writer, stuck
        // with a full ring, is freed by the reader's end going.
        std::thread::scope(|s| {
            let t = s.spawn(|| a.send(&[&v[..2 * CAP]]));
            let e = recv(&b, CAP as u64);
            assert!(matches!(e, Err(IpcError::FrameTooLarge { .. })), "{e:?}");
            drop(b);
            assert!(matches!(t.join().unwrap(), Err(IpcError::BrokenPipe)));
        });
    }

    #[test]
    fn a_receive_that_times_out_mid_frame_completes_later() {
        // Plain receives, then split ones (prefix of 3 bytes): the part received is kept
        // whole either way, and the frame comes out whole.
        for split in [false, true] {
            let receive = |b: &HeapEnd, wait: Duration| -> Result<Vec<u8>, IpcError> {
                let mut buf = Vec::new();
                let deadline = Deadline::after(wait);
                if !split {
                    return b.recv(&mut buf, u64::MAX, deadline).map(|()| buf);
                }
                let mut prefix: mp_ipc::frame::Prefix = [0; mp_ipc::frame::PREFIX_MAX];
                let n = b.recv_split(&mut prefix, |_| 3, &mut buf, u64::MAX, deadline)?;
                Ok([&prefix[..n], &buf[..]].concat())
            };
            let n = 3 * CAP + 5;
            let (a, b) = HeapEnd::pair(CAP);
            let v = pattern(n, 4);
            // The writer fills the ring and stops at its first sleep.
            a.gate(a.side()).hold();
            std::thread::scope(|s| {
                let t = s.spawn(|| a.send(&[&v]));
                assert!(a.gate(a.side()).wait_stopped(Duration::from_secs(60)));
                let e = receive(&b, Duration::from_millis(20));
                assert!(matches!(e, Err(IpcError::Timeout)), "{e:?}");
                assert!(b.ring().in_part.load(Ordering::Relaxed));
                assert!(b.poll(Some(Duration::ZERO)).is_ok());
                // Again, with nothing new: still kept.
                let e = receive(&b, Duration::ZERO);
                assert!(matches!(e, Err(IpcError::Timeout)), "{e:?}");
                a.gate(a.side()).release();
                let got = receive(&b, Duration::from_secs(60)).unwrap();
                assert!(got == v, "split: {split}");
                t.join().unwrap().unwrap();
            });
            assert!(!b.ring().in_part.load(Ordering::Relaxed));
            a.send(&[b"next"]).unwrap();
            assert_eq!(receive(&b, Duration::from_secs(60)).unwrap(), b"next");
        }
    }

    #[test]
    fn a_frame_kept_in_part_breaks_the_ring_when_its_end_goes() {
        let (a, b) = HeapEnd::pair(CAP);
        let v = pattern(2 * CAP, 5);
        a.gate(a.side()).hold();
        std::thread::scope(|s| {
            let t = s.spawn(|| a.send(&[&v]));
            assert!(a.gate(a.side()).wait_stopped(Duration::from_secs(60)));
            let mut buf = Vec::new();
            let e = b.recv(&mut buf, u64::MAX, Deadline::after(Duration::ZERO));
            assert!(matches!(e, Err(IpcError::Timeout)), "{e:?}");
            drop(b);
            a.gate(a.side()).release();
            assert!(t.join().unwrap().is_err());
        });
        assert_ne!(a.hdr(0).f.0.broken.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn scribbled_positions_are_corrupt() {
        let (a, b) = HeapEnd::pair(CAP);
        a.send(&[b"abc"]).unwrap();
        a.hdr(0).w.0.pos.store(1 << 40, Ordering::Relaxed);
        assert!(is_corrupt(recv(&b, 100)));
        assert!(is_corrupt(a.send(&[b"x"])));
        assert!(is_corrupt(b.poll(Some(Duration::ZERO))));

        // The read position past the write position.
        let (a, b) = HeapEnd::pair(CAP);
        a.send(&[b"abc"]).unwrap();
        a.hdr(0).r.0.pos.store(12, Ordering::Relaxed);
        assert!(is_corrupt(recv(&b, 100)));
    }

    #[test]
    fn lengths_beyond_what_is_stored_are_corrupt() {
        // Announced whole, half stored.
        let (a, b) = HeapEnd::pair(CAP);
        scribble(&a, 0, 0, &FrameHeader::new(100).encode());
        a.hdr(0).w.0.pos.store(8 + 50, Ordering::Release);
        assert!(is_corrupt(recv(&b, 1000)));
        let (a, b) = HeapEnd::pair(CAP);
        scribble(&a, 0, 0, &FrameHeader::new(100).encode());
        a.hdr(0).w.0.pos.store(8 + 50, Ordering::Release);
        assert!(is_corrupt(b.recv_into(&mut [0; 200], 1000)));

        // Handles announced on a channel that passes none.
        let (a, b) = HeapEnd::pair(CAP);
        scribble(&a, 0, 0, &FrameHeader::new(0).with_handles().encode());
        a.hdr(0).w.0.pos.store(8, Ordering::Release);
        assert!(is_corrupt(recv(&b, 1000)));

        // Over the limit, every bit set: refused.
        let (a, b) = HeapEnd::pair(CAP);
        scribble(&a, 0, 0, &[0xff; 8]);
        a.hdr(0).w.0.pos.store(8, Ordering::Release);
        assert!(matches!(
            recv(&b, u64::MAX >> 2),
            Err(IpcError::FrameTooLarge { .. })
        ));

        // Streamed, and the writer is gone after part of it: truncated, and the ring is
        // broken for good.
        let (a, b) = HeapEnd::pair(CAP);
        scribble(&a, 0, 0, &FrameHeader::new(10 * CAP).encode());
        a.hdr(0).w.0.pos.store(8 + 100, Ordering::Release);
        a.kill();
        let e = recv(&b, u64::MAX);
        assert!(
            matches!(e, Err(IpcError::Truncated { got: 100, .. })),
            "{e:?}"
        );
        assert!(is_corrupt(recv(&b, u64::MAX)));
    }

    #[test]
    fn lock_words_no_holder_wrote_are_corrupt() {
        let me = std::process::id();
        let ended = std::thread::spawn(super::current_tid).join().unwrap();
        let mine = super::current_tid();
        for (word, tid) in [
            (u32::MAX, 0),
            (0x8000_0000, 0),
            (me, mine),
            (me, ended),
            (me, 0),
        ] {
            let (a, b) = HeapEnd::pair(CAP);
            a.send(&[b"abc"]).unwrap();
            let lock = &a.hdr(0).r.0;
            lock.lock.store(word, Ordering::Relaxed);
            lock.tid.store(tid, Ordering::Relaxed);
            let e = recv(&b, 100);
            assert!(is_corrupt(e), "{word:#x}/{tid}");
            // The same on the writer's side.
            let lock = &a.hdr(0).w.0;
            lock.lock.store(word, Ordering::Relaxed);
            lock.tid.store(tid, Ordering::Relaxed);
            assert!(is_corrupt(a.send(&[b"x"])), "{word:#x}/{tid}");
        }
        // A live thread of this process may hold it: a receive waits, until its deadline.
        let (a, b) = HeapEnd::pair(CAP);
        a.send(&[b"abc"]).unwrap();
        std::thread::scope(|s| {
            let (tx, rx) = std::sync::mpsc::channel();
            let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
            s.spawn(move || {
                tx.send(super::current_tid()).unwrap();
                let _ = done_rx.recv();
            });
            let other = rx.recv().unwrap();
            let lock = &a.hdr(0).r.0;
            lock.lock.store(me, Ordering::Relaxed);
            lock.tid.store(other, Ordering::Relaxed);
            let start = Instant::now();
            let mut buf = Vec::new();
            let e = b.recv(&mut buf, 100, Deadline::after(Duration::from_millis(30)));
            assert!(matches!(e, Err(IpcError::Timeout)), "{e:?}");
            assert!(start.elapsed() >= Duration::from_millis(30));
            done_tx.send(()).unwrap();
        });
    }

    #[test]
    fn a_dead_holder_is_taken_over_and_one_mid_frame_breaks_the_ring() {
        let dead = if std::process::id() == 4242 {
            4243
        } else {
            4242
        };
        // Dead between frames: taken over, nothing lost.
        let (a, b) = HeapEnd::pair(CAP);
        a.send(&[b"one"]).unwrap();
        a.hdr(0).r.0.lock.store(dead, Ordering::Relaxed);
        a.hdr(0).w.0.lock.store(dead, Ordering::Relaxed);
        a.send(&[b"two"]).unwrap();
        assert_eq!(recv(&b, 100).unwrap(), b"one");
        assert_eq!(recv(&b, 100).unwrap(), b"two");
        // Dead in the middle of a frame: the stream is out of step.
        a.send(&[b"three"]).unwrap();
        a.hdr(0).r.0.lock.store(dead, Ordering::Relaxed);
        a.hdr(0).r.0.busy.store(1, Ordering::Relaxed);
        assert!(is_corrupt(recv(&b, 100)));
    }

    #[test]
    fn a_damaged_segment_is_corrupt() {
        let (a, b) = HeapEnd::pair(CAP);
        a.send(&[b"abc"]).unwrap();
        a.set_damaged();
        assert!(is_corrupt(recv(&b, 100)));
        assert!(is_corrupt(a.send(&[b"x"])));
    }

    /// Regression: the peer wrote this process and a parked holder (or a live thread of
    /// this process) into a lock word, then died. A send (which has no deadline) waited for
    /// that holder for ever; a receive without a deadline too.
    #[test]
    fn a_lock_word_left_by_a_dead_peer_hangs_nobody() {
        let me = std::process::id();
        let live = super::current_tid();
        std::thread::scope(|s| {
            s.spawn(|| {
                for tid in [PARKED, live] {
                    let (a, b) = HeapEnd::pair(CAP);
                    b.send(&[b"x"]).unwrap();
                    for lock in [&a.hdr(0).w.0, &a.hdr(1).r.0] {
                        lock.lock.store(me, Ordering::Relaxed);
                        lock.tid.store(tid, Ordering::Relaxed);
                    }
                    b.kill();
                    assert!(matches!(a.send(&[b"x"]), Err(IpcError::BrokenPipe)));
                    let mut buf = Vec::new();
                    let e = a.recv(&mut buf, 100, Deadline::NEVER);
                    assert!(matches!(e, Err(IpcError::Eof)), "{e:?}");
                    let e = a.recv_into(&mut [0; 8], 100);
                    assert!(matches!(e, Err(IpcError::Eof)), "{e:?}");
                }
            });
        });
    }
}

#[cfg(all(test, loom))]
mod loom_models {
    //! The ring protocol under the model checker (`cargo xtask loom`): the very code of
    //! `ring.rs` over the heap ring, with loom's atomics in the headers, loom's mutex and
    //! condition variable as doorbells, and a loom cell beside every data byte (see
    //! `model`). Rings of 16 bytes and no spinning, so that a few frames wrap around,
    //! fill the ring (the writer sleeps on its flag) and stream (a frame longer than the
    //! ring), and every wait is a sleep on the doorbell. Each model checks that every
    //! interleaving (up to the preemption bound) delivers each frame once, whole and in
    //! order (a lost wake-up is a deadlock loom reports, a read of unpublished bytes a race
    //! it reports), and ends with end of stream once the writer is gone.
    //!
    //! The bound is 2: at 3 and 4 loom reports both ends asleep, an outcome the two `SeqCst`
    //! fences of the arm/notify protocol forbid, which loom 0.7.3 also allows in a
    //! four-line program without mp (docs/architecture.md, "Loom"): a false alarm.

    use mp_ipc::deadline::Deadline;
    use mp_ipc::IpcError;

    use super::HeapEnd;
    use crate::ring::MIN_RING;

    /// Runs a model with at most `bound` preemptions per execution (LOOM_MAX_PREEMPTIONS
    /// overrides it).
    fn model(bound: usize, f: impl Fn() + Sync + Send + 'static) {
        let mut b = loom::model::Builder::new();
        if b.preemption_bound.is_none() {
            b.preemption_bound = Some(bound);
        }
        b.check(f);
    }

    fn recv(end: &HeapEnd) -> Result<Vec<u8>, IpcError> {
        let mut buf = Vec::new();
        end.recv(&mut buf, u64::MAX, Deadline::NEVER).map(|()| buf)
    }

    /// Sends `frames` from a second thread (which then drops its end) and receives them
    /// here, then end of stream.
    fn exchange(frames: &'static [&'static [u8]]) {
        let (a, b) = HeapEnd::pair(MIN_RING);
        let t = loom::thread::spawn(move || {
            for f in frames {
                a.send(&[f]).unwrap();
            }
        });
        for f in frames {
            assert_eq!(recv(&b).unwrap(), *f);
        }
        assert!(matches!(recv(&b), Err(IpcError::Eof)));
        t.join().unwrap();
    }

    /// Three frames of 4 bytes (12 with their headers) through a 16-byte ring: the second
    /// waits for room and wraps around the ring's end; the reader and the writer each
    /// sleep on their flag and are woken.
    #[test]
    fn frames_wrap_and_wait_for_room() {
        model(2, || exchange(&[b"abcd", b"efgh", b"ijkl"]));
    }

    /// A frame longer than the ring streams through it in pieces, then a small one follows.
    #[test]
    fn a_frame_longer_than_the_ring_streams_whole() {
        model(2, || exchange(&[b"0123456789abcdefghij", b"end"]));
    }
}
