//! The engine under every queue: items as length-prefixed frames in a ring in shared memory
//! (shm backend) or in a spool file, indexed by a header in shared memory.
//!
//! With the shm backend the header segment also holds a ring of `ring_cap` bytes and a
//! staging area of `STAGE` bytes. A `put` whose frame fits (at most a quarter of the ring)
//! goes into the ring, with no system call, as long as the spool and the staging area hold
//! nothing; otherwise it overflows, so an unbounded queue's `put` never waits for a reader
//! whatever the item's size. Overflowing frames are appended to the staging area (shared
//! memory, published with one store), which moves to the spool's end in one write when it
//! is full: a burst that overflows the ring (a consumer descheduled for a few milliseconds)
//! costs a system call per 64 KiB instead of one per item. Order of age: ring, then spool,
//! then staging area; a put uses the ring only when the other two are empty and `get` takes
//! in that order, so FIFO holds across all three. A consumer that finds the ring empty
//! refills it with a batch of the oldest overflow frames (from the spool's read-ahead copy,
//! or the whole staging area once the spool is empty, then with no system call), so the gets
//! that follow run at ring speed without the producers' lock, and the producers return to
//! the ring as soon as the overflow is empty. The socket backend's queues have neither ring
//! nor staging area (`ring_cap == 0`) and use the spool only.
//!
//! ```text
//! header (shared memory)                       spool (anonymous file, by offset)
//! line 0: get lock | ring head | spool head    ... [len][item] [len][item] ...
//! line 1: put lock | ring tail | spool tail         ^head               ^tail
//!         | stage word | flush_to
//! line 2: maxsize | unfinished | done_seq
//! ring:   ... [len][item] [len][item] ...
//! stage:  [len][item] [len][item] ...   (bytes and frames per the stage word)
//! ```
//!
//! Producers serialise on the put lock, consumers on the get lock, so a producer and a
//! consumer work at the same time. Each ring end is one 64-bit word: the byte position (low
//! 40 bits) and the number of frames that passed it (high 24 bits). A `put` writes its frame
//! past the tail and then publishes the new tail word with one store, a `get` reads the frame
//! at the head and publishes the new head word: a process that dies in between leaves
//! nothing half-visible, and the number of ring items is the difference of the two counters,
//! so `qsize` is exact with no shared counter to repair. The spool is the slow path: a
//! producer appends under the put lock; a consumer takes from it holding both locks (always
//! get lock first), so whoever takes the put lock after a dead holder can recount it. The
//! staging area changes under the put lock only; a flush writes the staged bytes past the
//! spool's tail, then records the new tail in `flush_to`, then publishes tail, count and an
//! empty stage, then clears `flush_to`, so a holder dying anywhere leaves either the stage
//! untouched or a `flush_to` from which the repair finishes the move. A refill of the ring
//! writes the frames past the ring's tail, records the tail word that will publish them and
//! where they came from (`move_ring`, `move_head`), publishes the tail, then drops the frames
//! from the spool or staging area: the repair compares the ring's tail with `move_ring` to
//! tell whether the move was published.
//!
//! Sleepers wait on sequence words (futexes) that are bumped only when someone sleeps.

use crate::sync::model::{fence, AtomicU32, AtomicU64, Ordering};
use std::cell::RefCell;
use std::io;
use std::sync::Arc;
use std::time::Instant;

use mp_ipc::deadline::Deadline;
use mp_ipc::handle::OwnedHandle;
use mp_ipc::spin::Pace;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{GetError, QueueError};
use crate::shared::Segment;
use crate::sync::futex;
use crate::sync::{Acquired, RawLock};
use crate::sys;

/// Frame header: the body length.
const LEN: usize = 8;
/// Consumed spool space is given back in steps of this size.
const RELEASE_STEP: u64 = 1 << 20;

/// Ring words: the position in the low bits, the frame counter in the high bits.
const POS_BITS: u32 = 40;
const POS_MASK: u64 = (1 << POS_BITS) - 1;
const CNT_MASK: u64 = (1 << (64 - POS_BITS)) - 1;

fn word_pos(w: u64) -> u64 {
    w & POS_MASK
}

fn word_cnt(w: u64) -> u64 {
    w >> POS_BITS
}

/// The word after one more frame of `len` bytes (whatever `w` holds: it may have been
/// scribbled over, and this must not overflow).
fn word_after(w: u64, len: u64) -> u64 {
    (((word_cnt(w) + 1) & CNT_MASK) << POS_BITS) | (w.wrapping_add(len) & POS_MASK)
}

/// How much of the spool the repair reads at once.
const REPAIR_CHUNK: usize = 64 << 10;

/// The repair's walk over the frames stored at offsets `head..tail` (read by `read_at`,
/// which returns fewer bytes than asked only at the store's end): where the last whole
/// frame ends and how many there are. A torn frame at the end is left out; more than
/// `bound` frames (or more than a queue counts) is an `InvalidData` error.
fn walk_frames(
    head: u64,
    tail: u64,
    bound: u64,
    mut read_at: impl FnMut(&mut [u8], u64) -> io::Result<usize>,
) -> io::Result<(u64, u32)> {
    let bound = bound.min(u64::from(u32::MAX));
    let mut buf = Vec::new();
    // The bytes of `buf` hold the store from offset `from`.
    let mut from = head;
    let (mut at, mut count) = (head, 0u32);
    while at < tail {
        if u64::from(count) >= bound {
            return Err(damaged(format!(
                "spool offsets {head}..{tail} hold more frames than the {bound} counted"
            )));
        }
        let held = from + buf.len() as u64;
        if at < from || at.saturating_add(LEN as u64) > held {
            let want = (tail - at).min(REPAIR_CHUNK as u64) as usize;
            buf.resize(want.max(LEN), 0);
            let got = read_at(&mut buf, at)?;
            buf.truncate(got);
            from = at;
            if got < LEN {
                break;
            }
        }
        let i = (at - from) as usize;
        let mut len = [0u8; LEN];
        len.copy_from_slice(&buf[i..i + LEN]);
        // Saturating: a damaged length near 2^64 must neither overflow nor wrap backwards.
        let next = at
            .saturating_add(LEN as u64)
            .saturating_add(u64::from_le_bytes(len));
        if next > tail {
            break;
        }
        // A body that ends past the bytes read must still be stored to its last byte (else
        // the frame is torn): one read per frame longer than a chunk.
        if next > from + buf.len() as u64 && next > at + LEN as u64 {
            let mut last = [0u8; 1];
            if read_at(&mut last, next - 1)? == 0 {
                break;
            }
        }
        at = next;
        count += 1;
    }
    Ok((at, count))
}

/// Damage found in the queue's shared state, as the I/O error the storage paths return
/// (mapped to [`GetError::Corrupt`] / [`QueueError::Corrupt`] by [`corrupt_get`] and
/// [`corrupt_put`]).
fn damaged(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// Fails once the queue's header segment is gone: another process shrank it, and its pages
/// are private zeros now (`Segment::damaged`). Checked after values were read from the
/// segment, before they are trusted, and before a sleep that only the segment could end.
fn intact(header: &Segment) -> io::Result<()> {
    if header.damaged() {
        return Err(damaged(
            "another process shrank the queue's shared segment; its memory is gone".into(),
        ));
    }
    Ok(())
}

/// An error of the storage paths, for a getter.
fn corrupt_get(e: io::Error) -> GetError {
    match e.kind() {
        io::ErrorKind::InvalidData => GetError::Corrupt(e.to_string()),
        _ => GetError::Io(e),
    }
}

/// An error of the storage paths, for a putter.
fn corrupt_put(e: io::Error) -> QueueError {
    match e.kind() {
        io::ErrorKind::InvalidData => QueueError::Corrupt(e.to_string()),
        _ => QueueError::Io(e),
    }
}

/// What consumers write.
#[repr(C, align(64))]
struct GetSide {
    lock: RawLock,
    ring_head: AtomicU64,
    /// Spool read offset (changed holding both locks).
    head: AtomicU64,
    /// Spool bytes below this offset have been given back.
    released: AtomicU64,
    /// Bumped whenever the spool's offsets restart from 0, so that bytes a consumer read
    /// ahead (see `SpoolCache`) are known to be stale.
    spool_gen: AtomicU64,
    /// Bumped by a get that saw a putter waiting (bounded putters sleep on it).
    get_seq: AtomicU32,
    putters_waiting: AtomicU32,
}

/// What producers write.
#[repr(C, align(64))]
struct PutSide {
    lock: RawLock,
    ring_tail: AtomicU64,
    /// Spool write offset.
    tail: AtomicU64,
    /// Items stored in the spool.
    spool_count: AtomicU32,
    /// The staging area's word (shm queues): bytes staged (low 40 bits) and frames staged
    /// (high 24 bits), published with one store.
    stage: AtomicU64,
    /// Nonzero while the staging area is moved into the spool: the spool tail once it is
    /// (its bytes are already written), so a put-lock holder that takes over can finish.
    flush_to: AtomicU64,
    /// Nonzero while a consumer moves spool frames into the empty ring: the spool head once
    /// they are moved; `move_ring` is the ring tail word that publishes them (see
    /// `repair_spool`).
    move_head: AtomicU64,
    move_ring: AtomicU64,
    /// Bumped by a put that saw a getter waiting (getters sleep on it).
    put_seq: AtomicU32,
    getters_waiting: AtomicU32,
}

#[repr(C, align(64))]
struct Common {
    /// 0 = unbounded.
    maxsize: AtomicU32,
    /// Items put and not yet marked done (JoinableQueue).
    unfinished: AtomicU32,
    /// Bumped when `unfinished` reaches zero (joiners sleep on it).
    done_seq: AtomicU32,
    /// Non-zero once `shutdown` was called, by any process.
    shut: AtomicU32,
}

#[repr(C)]
struct Header {
    get: GetSide,
    put: PutSide,
    common: Common,
}

impl Header {
    /// A header in its initial state as a value: under loom, whose atomics are objects of
    /// the model rather than bytes that can start zeroed.
    #[cfg(loom)]
    fn model() -> Self {
        let (u32z, u64z) = (|| AtomicU32::new(0), || AtomicU64::new(0));
        Self {
            get: GetSide {
                lock: RawLock::model(),
                ring_head: u64z(),
                head: u64z(),
                released: u64z(),
                spool_gen: u64z(),
                get_seq: u32z(),
                putters_waiting: u32z(),
            },
            put: PutSide {
                lock: RawLock::model(),
                ring_tail: u64z(),
                tail: u64z(),
                spool_count: u32z(),
                stage: u64z(),
                flush_to: u64z(),
                move_head: u64z(),
                move_ring: u64z(),
                put_seq: u32z(),
                getters_waiting: u32z(),
            },
            common: Common {
                maxsize: u32z(),
                unfinished: u32z(),
                done_seq: u32z(),
                shut: u32z(),
            },
        }
    }
}

/// Where the ring starts in the header segment.
const RING_AT: usize = (std::mem::size_of::<Header>() + 63) & !63;
/// The staging area of shm queues, after the ring: items that overflow the ring gather
/// here and reach the spool in one write per area, not one system call per item.
const STAGE: usize = 64 << 10;
/// `move_head` while the staging area (not the spool) moves into the ring.
const MOVED_STAGE: u64 = u64::MAX;

/// The shared state of one queue, held by every handle in every process.
pub(crate) struct Core {
    header: Segment,
    spool: OwnedHandle,
    /// The ring's size, derived from the segment's length (never read from shared memory).
    ring_cap: usize,
    /// Spool bytes this process read ahead of the head (published frames never change until
    /// the offsets restart, which `spool_gen` tells).
    cache: std::sync::Mutex<SpoolCache>,
    /// A length the spool had when this process last looked (see [`Core::check_tail`]).
    spool_seen: std::sync::atomic::AtomicU64,
}

/// A copy of the spool from `start`, valid while the spool's generation is `gen`.
#[derive(Default)]
struct SpoolCache {
    gen: u64,
    start: u64,
    bytes: Vec<u8>,
}

/// How much a consumer reads ahead of the spool's head at once.
const SPOOL_READ_AHEAD: usize = 64 << 10;

thread_local! {
    /// The encoding buffer `put` reuses.
    static ENCODE_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Encodes `item` as a frame (length prefix included) into a reused buffer and hands it to
/// `f`; nothing is shared until `f` does it.
pub(crate) fn with_frame<T: Serialize, R>(
    item: &T,
    f: impl FnOnce(&[u8]) -> R,
) -> Result<R, postcard::Error> {
    let mut buf = ENCODE_BUF.with(|b| b.take());
    buf.clear();
    buf.extend_from_slice(&[0u8; LEN]);
    let mut buf = postcard::to_extend(item, buf)?;
    let body = (buf.len() - LEN) as u64;
    buf[..LEN].copy_from_slice(&body.to_le_bytes());
    let r = f(&buf);
    if buf.capacity() <= 64 << 10 {
        ENCODE_BUF.with(|b| *b.borrow_mut() = buf);
    }
    Ok(r)
}

/// How long a getter looks for a new item (and a putter for room in the ring) before it
/// sleeps: 50 µs, `MP_SPIN_US` if set, zero on a single CPU (where spinning only delays the
/// producer).
static SPIN: mp_ipc::spin::SpinLimit = mp_ipc::spin::SpinLimit::new(
    mp_ipc::spin::GLOBAL_ENV,
    std::time::Duration::from_micros(50),
)
.off_on_one_cpu();

/// Spins while `ready()` is false, for at most [`SPIN`] and never past `deadline`; true if
/// it became ready.
fn spin_until(ready: impl Fn() -> bool, deadline: Option<Instant>) -> bool {
    // Under loom one look: a spin is a loop the model would explore step by step.
    if cfg!(loom) {
        return ready();
    }
    let deadline = deadline.map_or(Deadline::NEVER, Deadline::at);
    mp_ipc::spin::spin_until(
        SPIN.get(),
        deadline,
        Pace::Busy {
            rounds: 4,
            hints: 16,
        },
        ready,
    )
}

/// A held lock, released when dropped (also if decoding panics).
struct Held<'a>(&'a RawLock);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

impl Core {
    /// A new queue; `ring_cap` (0, or a power of two) bytes of ring in shared memory.
    pub(crate) fn new(maxsize: u32, ring_cap: usize) -> io::Result<Arc<Self>> {
        debug_assert!(ring_cap == 0 || ring_cap.is_power_of_two());
        let header = Segment::create(Self::segment_len_for(ring_cap))?;
        Ok(Self::with_storage(
            header,
            sys::spool_create()?,
            maxsize,
            ring_cap,
        ))
    }

    /// The length of the header segment of a queue with `ring_cap` bytes of ring.
    fn segment_len_for(ring_cap: usize) -> usize {
        if ring_cap == 0 {
            std::mem::size_of::<Header>()
        } else {
            RING_AT + ring_cap + STAGE
        }
    }

    /// A new queue over a fresh zero-filled `header` of [`Self::segment_len_for`]`(ring_cap)`
    /// bytes and an empty `spool`.
    fn with_storage(
        header: Segment,
        spool: OwnedHandle,
        maxsize: u32,
        ring_cap: usize,
    ) -> Arc<Self> {
        debug_assert!(header.len() >= Self::segment_len_for(ring_cap));
        let core = Self {
            header,
            spool,
            ring_cap,
            cache: Default::default(),
            spool_seen: Default::default(),
        };
        core.h().common.maxsize.store(maxsize, Ordering::Relaxed);
        Arc::new(core)
    }

    /// A new queue whose header segment (header, ring, staging area) is heap memory and
    /// whose spool is a temporary file: the engine as Miri can run it (it has no memfd,
    /// mmap of shared memory or process-shared futexes), for the tests of the frame
    /// arithmetic.
    #[cfg(test)]
    pub(crate) fn in_heap(maxsize: u32, ring_cap: usize) -> io::Result<Arc<Self>> {
        debug_assert!(ring_cap == 0 || ring_cap.is_power_of_two());
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("mp-engine-test-{}-{n}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        std::fs::remove_file(&path)?;
        let header = Segment::heap(Self::segment_len_for(ring_cap), file.try_clone()?.into());
        // SAFETY: the fresh segment starts page-aligned and holds a Header.
        #[cfg(loom)]
        unsafe {
            header.as_ptr().cast::<Header>().write(Header::model())
        };
        Ok(Self::with_storage(header, file.into(), maxsize, ring_cap))
    }

    fn h(&self) -> &Header {
        // SAFETY: the segment is at least one Header long, page-aligned, and Header is all
        // atomics.
        unsafe { self.header.at(0) }
    }

    pub(crate) fn maxsize(&self) -> u32 {
        self.h().common.maxsize.load(Ordering::Relaxed)
    }

    /// Items in the ring per its two words (garbage if they are damaged).
    fn ring_items(&self) -> u64 {
        let h = self.h();
        let head = h.get.ring_head.load(Ordering::Acquire);
        let tail = h.put.ring_tail.load(Ordering::Acquire);
        word_cnt(tail).wrapping_sub(word_cnt(head)) & CNT_MASK
    }

    fn count(&self) -> u64 {
        let h = self.h();
        self.ring_items()
            + u64::from(h.put.spool_count.load(Ordering::Acquire))
            + word_cnt(h.put.stage.load(Ordering::Acquire))
    }

    pub(crate) fn qsize(&self) -> usize {
        self.count() as usize
    }

    pub(crate) fn unfinished(&self) -> u32 {
        self.h().common.unfinished.load(Ordering::Acquire)
    }

    /// Whether a get would find something (or find the header damaged). The ring words
    /// count only where there is a ring: a get would never look at them otherwise.
    fn has_items(&self) -> bool {
        let h = self.h();
        (self.ring_cap != 0
            && h.get.ring_head.load(Ordering::Relaxed) != h.put.ring_tail.load(Ordering::Relaxed))
            || h.put.spool_count.load(Ordering::Relaxed) != 0
            || h.put.stage.load(Ordering::Relaxed) != 0
    }

    /// Whether the spool and the staging area are empty: only then may a put use the ring
    /// (everything in the ring is older than everything in the spool, which is older than
    /// everything staged).
    fn overflow_empty(&self) -> bool {
        let h = self.h();
        h.put.spool_count.load(Ordering::Relaxed) == 0 && h.put.stage.load(Ordering::Relaxed) == 0
    }

    /// Takes the put lock; if its holder died, first recounts the spool. A lock word no
    /// holder wrote is an `InvalidData` error (see [`damaged`]).
    fn lock_put(&self, deadline: Option<Instant>) -> io::Result<Option<Held<'_>>> {
        let lock = &self.h().put.lock;
        match lock.lock_strict(deadline, &self.header) {
            Acquired::Clean => Ok(Some(Held(lock))),
            Acquired::OwnerDied => {
                let held = Held(lock);
                self.repair_spool()?;
                Ok(Some(held))
            }
            Acquired::TimedOut => Ok(None),
            Acquired::Corrupt(why) => Err(damaged(why)),
        }
    }

    /// Takes the get lock. A consumer that died holding it left nothing to repair: its
    /// ring take is published by one store, and its spool take (under the put lock too) is
    /// repaired by the next put-lock holder.
    fn lock_get(&self, deadline: Option<Instant>) -> Result<Option<Held<'_>>, GetError> {
        let lock = &self.h().get.lock;
        match lock.lock_strict(deadline, &self.header) {
            Acquired::Clean | Acquired::OwnerDied => Ok(Some(Held(lock))),
            Acquired::TimedOut => Ok(None),
            Acquired::Corrupt(why) => Err(GetError::Corrupt(why)),
        }
    }

    /// After a put-lock holder died: recount the spool frames between head and tail,
    /// dropping a torn tail. The spool cannot change meanwhile (taking from it needs the put
    /// lock).
    ///
    /// The walk reads the spool in [`REPAIR_CHUNK`] pieces (not one read per frame), and
    /// finds at most one frame more than the spool and the staging area count: a dead holder
    /// leaves at most one appended frame uncounted (or a flushed staging area whose frames
    /// the stage word still counts). More is damage to the offsets or the counts, an error,
    /// rather than a walk as long as a scribbled tail makes it (over a hole that a put at
    /// that tail made, one frame of zero length every 8 bytes).
    fn repair_spool(&self) -> io::Result<()> {
        let h = self.h();
        let bound = u64::from(h.put.spool_count.load(Ordering::Relaxed))
            + word_cnt(h.put.stage.load(Ordering::Relaxed))
            + 1;
        // A flush that wrote the staged bytes to the spool may have died before it published
        // them: finish it (the recount below counts them).
        let flushed = h.put.flush_to.load(Ordering::Relaxed);
        if flushed != 0 {
            h.put.tail.store(flushed, Ordering::Relaxed);
            h.put.stage.store(0, Ordering::Relaxed);
            h.put.flush_to.store(0, Ordering::Relaxed);
        }
        // A move of spool frames into the ring: if its ring tail was published (nobody
        // changed the ring tail since, that needs this lock), the frames left the spool.
        let moved = h.put.move_head.load(Ordering::Relaxed);
        if moved != 0 {
            if h.put.ring_tail.load(Ordering::Relaxed) == h.put.move_ring.load(Ordering::Relaxed) {
                if moved == MOVED_STAGE {
                    h.put.stage.store(0, Ordering::Relaxed);
                } else {
                    h.get.head.store(moved, Ordering::Relaxed);
                }
            }
            h.put.move_head.store(0, Ordering::Relaxed);
        }
        let (head, tail) = (
            h.get.head.load(Ordering::Relaxed),
            h.put.tail.load(Ordering::Relaxed),
        );
        let (end, count) = walk_frames(head, tail, bound, |buf, at| {
            sys::spool_read_at(&self.spool, buf, at)
        })?;
        h.put.tail.store(end, Ordering::Relaxed);
        h.put.spool_count.store(count, Ordering::Release);
        Ok(())
    }

    fn ring_ptr(&self) -> *mut u8 {
        // SAFETY: the segment is RING_AT + ring_cap long when ring_cap > 0.
        unsafe { self.header.as_ptr().add(RING_AT) }
    }

    /// Copies `src` into the ring at position `pos`, wrapping around. Put lock held, the
    /// bytes are past the tail.
    fn ring_write(&self, pos: u64, src: &[u8]) {
        let cap = self.ring_cap;
        let off = pos as usize & (cap - 1);
        let first = src.len().min(cap - off);
        // SAFETY: off + first <= cap, src.len() - first <= cap; no one reads past the tail.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.ring_ptr().add(off), first);
            std::ptr::copy_nonoverlapping(
                src.as_ptr().add(first),
                self.ring_ptr(),
                src.len() - first,
            );
        }
    }

    /// Copies out of the ring from position `pos`, wrapping around. Get lock held, the
    /// bytes are between head and tail.
    fn ring_read(&self, pos: u64, dst: &mut [u8]) {
        let cap = self.ring_cap;
        let off = pos as usize & (cap - 1);
        let first = dst.len().min(cap - off);
        // SAFETY: as in ring_write; no one writes between head and tail.
        unsafe {
            std::ptr::copy_nonoverlapping(self.ring_ptr().add(off), dst.as_mut_ptr(), first);
            std::ptr::copy_nonoverlapping(
                self.ring_ptr(),
                dst.as_mut_ptr().add(first),
                dst.len() - first,
            );
        }
    }

    /// Whether `frame` may go into the ring (ring present, spool empty, size at most a
    /// quarter of the ring). Put lock held.
    fn ring_fits(&self, frame: &[u8]) -> bool {
        let cap = self.ring_cap as u64;
        cap != 0 && frame.len() as u64 <= cap / 4 && self.overflow_empty()
    }

    /// Whether the ring has room for `frame` (or its words are damaged).
    fn ring_room(&self, frame: &[u8]) -> bool {
        let h = self.h();
        let head = h.get.ring_head.load(Ordering::Relaxed);
        let tail = h.put.ring_tail.load(Ordering::Relaxed);
        let used = word_pos(tail).wrapping_sub(word_pos(head)) & POS_MASK;
        used > self.ring_cap as u64 || self.ring_cap as u64 - used >= frame.len() as u64
    }

    /// Puts `frame` into the ring if it belongs there (ring present, spool empty, room).
    /// Put lock held. Returns whether it did.
    fn ring_put(&self, frame: &[u8]) -> bool {
        let h = self.h();
        let cap = self.ring_cap as u64;
        if cap == 0 || frame.len() as u64 > cap / 4 || !self.overflow_empty() {
            return false;
        }
        let head = h.get.ring_head.load(Ordering::Acquire);
        let tail = h.put.ring_tail.load(Ordering::Relaxed);
        let used = word_pos(tail).wrapping_sub(word_pos(head)) & POS_MASK;
        if used > cap || cap - used < frame.len() as u64 {
            return false;
        }
        self.ring_write(word_pos(tail), frame);
        h.put
            .ring_tail
            .store(word_after(tail, frame.len() as u64), Ordering::Release);
        true
    }

    fn stage_ptr(&self) -> *mut u8 {
        // SAFETY: the segment is RING_AT + ring_cap + STAGE long when ring_cap > 0.
        unsafe { self.header.as_ptr().add(RING_AT + self.ring_cap) }
    }

    /// Fails if the spool's tail (read from shared memory) lies past the spool's end: bytes
    /// are only ever appended at the end, so a tail beyond it is damage, and a write there
    /// would leave a hole that later reads take for frames (zero lengths every 8 bytes, or
    /// a body of any size that the spool seems to hold). The length is asked of the system
    /// only when the tail is past the largest one this process has seen; a spool another
    /// process truncated since can therefore grow a hole no larger than it once was.
    fn check_tail(&self, tail: u64) -> io::Result<()> {
        use std::sync::atomic::Ordering as O;
        if tail <= self.spool_seen.load(O::Relaxed) {
            return Ok(());
        }
        let len = sys::spool_len(&self.spool)?;
        self.spool_seen.fetch_max(len, O::Relaxed);
        if tail > len {
            return Err(damaged(format!(
                "a spool tail of {tail}, past the spool's end at {len}"
            )));
        }
        Ok(())
    }

    /// Appends `frame` to the spool's end, past anything already there. Put lock held.
    fn spool_append(&self, frame: &[u8]) -> io::Result<()> {
        let h = self.h();
        let tail = h.put.tail.load(Ordering::Relaxed);
        let end = tail
            .checked_add(frame.len() as u64)
            .ok_or_else(|| damaged(format!("a spool tail of {tail}")))?;
        self.check_tail(tail)?;
        sys::spool_write_at(&self.spool, frame, tail)?;
        self.spool_seen
            .fetch_max(end, std::sync::atomic::Ordering::Relaxed);
        h.put.tail.store(end, Ordering::Relaxed);
        h.put.spool_count.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Stores a frame that does not go into the ring: behind whatever overflowed before it.
    /// Shm queues gather such frames in the staging area (shared memory, published with one
    /// store) and move the area into the spool with one write when it is full, so a burst
    /// that overflows the ring costs a system call per 64 KiB rather than per item. Put
    /// lock held.
    fn overflow_put(&self, frame: &[u8]) -> io::Result<()> {
        if self.ring_cap == 0 {
            return self.spool_append(frame);
        }
        let stage = &self.h().put.stage;
        let mut w = stage.load(Ordering::Relaxed);
        if word_pos(w) as usize + frame.len() > STAGE {
            self.stage_flush()?;
            w = 0;
        }
        if frame.len() > STAGE {
            return self.spool_append(frame);
        }
        let at = word_pos(w) as usize;
        // SAFETY: at + frame.len() <= STAGE (checked above, and w is 0 or was checked); the
        // bytes past the published word are read by no one.
        unsafe {
            std::ptr::copy_nonoverlapping(frame.as_ptr(), self.stage_ptr().add(at), frame.len());
        }
        stage.store(word_after(w, frame.len() as u64), Ordering::Release);
        Ok(())
    }

    /// Moves the staging area's frames to the end of the spool. Put lock held (by a
    /// producer whose frame does not fit, or by a consumer that found nothing older).
    ///
    /// The bytes are written first; `flush_to` then says they are there, so a holder dying
    /// anywhere after it leaves the repair (see `repair_spool`) a consistent state to finish.
    fn stage_flush(&self) -> io::Result<()> {
        let h = self.h();
        let w = h.put.stage.load(Ordering::Acquire);
        let (n, k) = (word_pos(w), word_cnt(w));
        if w == 0 {
            return Ok(());
        }
        if n as usize > STAGE || k == 0 || k.saturating_mul(LEN as u64) > n {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a staging word {w:#x} for {STAGE} bytes"),
            ));
        }
        let tail = h.put.tail.load(Ordering::Relaxed);
        let end = tail
            .checked_add(n)
            .ok_or_else(|| damaged(format!("a spool tail of {tail}")))?;
        // SAFETY: n <= STAGE bytes of the staging area, which only the put-lock holder
        // (us) changes.
        let bytes = unsafe { std::slice::from_raw_parts(self.stage_ptr(), n as usize) };
        self.check_tail(tail)?;
        sys::spool_write_at(&self.spool, bytes, tail)?;
        self.spool_seen
            .fetch_max(end, std::sync::atomic::Ordering::Relaxed);
        h.put.flush_to.store(end, Ordering::Relaxed);
        h.put.tail.store(end, Ordering::Relaxed);
        // Counted in the spool before the stage empties: a lock-free look (`has_items`)
        // never sees the items missing.
        let total = u64::from(h.put.spool_count.load(Ordering::Relaxed)) + k;
        let total = u32::try_from(total).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "more than 2^32 items in the spool",
            )
        })?;
        h.put.spool_count.store(total, Ordering::Release);
        h.put.stage.store(0, Ordering::Release);
        h.put.flush_to.store(0, Ordering::Release);
        Ok(())
    }

    /// Appends `frame` (length prefix included), waiting for room in a bounded queue until
    /// `deadline`.
    pub(crate) fn put(
        &self,
        frame: &[u8],
        deadline: Option<Instant>,
        joinable: bool,
    ) -> Result<(), QueueError> {
        let h = self.h();
        let held = loop {
            if self.is_shut_down() {
                return Err(QueueError::ShutDown);
            }
            let Some(held) = self.lock_put(deadline).map_err(corrupt_put)? else {
                return Err(QueueError::Full);
            };
            intact(&self.header).map_err(corrupt_put)?;
            if self.is_shut_down() {
                return Err(QueueError::ShutDown);
            }
            let max = u64::from(h.common.maxsize.load(Ordering::Relaxed));
            if max == 0 || self.count() < max {
                break held;
            }
            drop(held);
            h.get.putters_waiting.fetch_add(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            let seq = h.get.get_seq.load(Ordering::Acquire);
            intact(&self.header).map_err(corrupt_put)?;
            let in_time = self.count() < max
                || self.is_shut_down()
                || futex::wait_until(&h.get.get_seq, seq, deadline);
            h.get.putters_waiting.fetch_sub(1, Ordering::Relaxed);
            if !in_time {
                return Err(QueueError::Full);
            }
        };
        // A full ring whose reader is busy frees room within microseconds: wait that long
        // rather than switch to the spool, where every item costs system calls until it
        // drains (never past the spin limit, so `put` still does not wait for a reader).
        let in_ring = self.ring_put(frame)
            || (self.ring_fits(frame)
                && spin_until(|| self.ring_room(frame), deadline)
                && self.ring_put(frame));
        if !in_ring {
            self.overflow_put(frame).map_err(corrupt_put)?;
        }
        // An item written to pages that replaced a shrunk segment reached no one.
        intact(&self.header).map_err(corrupt_put)?;
        if joinable {
            h.common.unfinished.fetch_add(1, Ordering::Relaxed);
        }
        drop(held);
        // The item is published; a getter that registered before that store is woken, one
        // that registers after it sees the item when it looks again.
        fence(Ordering::SeqCst);
        if h.put.getters_waiting.load(Ordering::Relaxed) > 0 {
            h.put.put_seq.fetch_add(1, Ordering::Release);
            futex::wake(&h.put.put_seq, 1);
        }
        Ok(())
    }

    /// Takes the oldest item and hands its bytes to `decode`, waiting for one until
    /// `deadline`.
    ///
    /// A waiting getter registers in `getters_waiting`, then reads `put_seq`, then looks for
    /// an item again before it sleeps, so a put that lands in between is never missed.
    pub(crate) fn get<R>(
        &self,
        deadline: Option<Instant>,
        decode: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, GetError> {
        let h = self.h();
        let mut decode = decode;
        let result = loop {
            let ready = self.has_items();
            intact(&self.header).map_err(corrupt_get)?;
            if ready {
                let Some(held) = self.lock_get(deadline)? else {
                    return Err(GetError::Empty);
                };
                let taken = self.take_locked(decode, deadline);
                drop(held);
                match taken? {
                    Ok(r) => break r,
                    // Another consumer was first: look again (not past the deadline).
                    Err(d) => decode = d,
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(GetError::Empty);
                }
                continue;
            }
            // After a shutdown, what is queued can still be taken; then nothing more comes.
            if self.is_shut_down() {
                return Err(GetError::ShutDown);
            }
            // A producer that is busy putting usually delivers within microseconds: look
            // for a while before paying for a sleep and a wake-up.
            if spin_until(|| self.has_items() || self.is_shut_down(), deadline) {
                continue;
            }
            h.put.getters_waiting.fetch_add(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            let seq = h.put.put_seq.load(Ordering::Acquire);
            intact(&self.header).map_err(corrupt_get)?;
            let in_time = self.has_items()
                || self.is_shut_down()
                || futex::wait_until(&h.put.put_seq, seq, deadline);
            h.put.getters_waiting.fetch_sub(1, Ordering::Relaxed);
            if !in_time {
                return Err(GetError::Empty);
            }
        };
        fence(Ordering::SeqCst);
        if h.get.putters_waiting.load(Ordering::Relaxed) > 0 {
            h.get.get_seq.fetch_add(1, Ordering::Release);
            futex::wake(&h.get.get_seq, 1);
        }
        Ok(result)
    }

    /// Takes the oldest item if there is one (`Err(decode)` back if not). Get lock held.
    #[allow(clippy::type_complexity)]
    fn take_locked<R, F: FnOnce(&[u8]) -> R>(
        &self,
        decode: F,
        deadline: Option<Instant>,
    ) -> Result<Result<R, F>, GetError> {
        let h = self.h();
        let head = h.get.ring_head.load(Ordering::Relaxed);
        if self.ring_cap != 0 {
            let tail = h.put.ring_tail.load(Ordering::Acquire);
            if head != tail {
                return self.ring_take(head, tail, decode).map(Ok);
            }
        }
        if h.put.spool_count.load(Ordering::Acquire) == 0
            && h.put.stage.load(Ordering::Acquire) == 0
        {
            return Ok(Err(decode));
        }
        // The spool: under the put lock too, so its offsets and count hold still.
        let Some(held) = self.lock_put(deadline).map_err(corrupt_get)? else {
            return Err(GetError::Empty);
        };
        if self.ring_cap != 0 {
            let tail = h.put.ring_tail.load(Ordering::Acquire);
            if head != tail {
                drop(held);
                return self.ring_take(head, tail, decode).map(Ok);
            }
        }
        if h.put.spool_count.load(Ordering::Acquire) == 0 {
            // Nothing older than the staged frames: move them into the empty ring (no
            // system call; the producers then find the overflow empty and use the ring
            // again), or to the spool if the ring is too small for them (one write).
            if h.put.stage.load(Ordering::Acquire) == 0 {
                return Ok(Err(decode));
            }
            if self.ring_cap != 0 && self.stage_to_ring()? {
                drop(held);
                let tail = h.put.ring_tail.load(Ordering::Acquire);
                return self.ring_take(head, tail, decode).map(Ok);
            }
            self.stage_flush().map_err(corrupt_get)?;
        }
        // The ring is empty and holds still (both locks held): move a batch of the oldest
        // frames into it, so the gets that follow take them at ring speed, without the put
        // lock the producers want.
        if self.ring_cap != 0 && self.spool_to_ring()? {
            drop(held);
            let tail = h.put.ring_tail.load(Ordering::Acquire);
            return self.ring_take(head, tail, decode).map(Ok);
        }
        let buf = self.spool_take()?;
        drop(held);
        Ok(Ok(decode(&buf)))
    }

    /// Takes the frame at the ring's head (the ring words differ). Get lock held.
    fn ring_take<R>(
        &self,
        head: u64,
        tail: u64,
        decode: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, GetError> {
        let cap = self.ring_cap;
        let used = word_pos(tail).wrapping_sub(word_pos(head)) & POS_MASK;
        let items = word_cnt(tail).wrapping_sub(word_cnt(head)) & CNT_MASK;
        if used > cap as u64 || items == 0 || items.saturating_mul(LEN as u64) > used {
            return Err(GetError::Corrupt(format!(
                "ring words {head:#x}..{tail:#x} do not fit a ring of {cap} bytes"
            )));
        }
        let mut len = [0u8; LEN];
        self.ring_read(word_pos(head), &mut len);
        intact(&self.header).map_err(corrupt_get)?;
        let len = u64::from_le_bytes(len);
        if len > used - LEN as u64 {
            return Err(GetError::Corrupt(format!(
                "a frame of {len} bytes announced with only {} stored",
                used - LEN as u64
            )));
        }
        let at = word_pos(head) + LEN as u64;
        let off = at as usize & (cap - 1);
        let n = len as usize;
        let r = if off + n <= cap {
            // SAFETY: off + n <= cap; the bytes are between head and tail, which no
            // producer writes and no other consumer reads while we hold the get lock.
            decode(unsafe { std::slice::from_raw_parts(self.ring_ptr().add(off), n) })
        } else {
            let mut buf = vec![0u8; n];
            self.ring_read(at, &mut buf);
            decode(&buf)
        };
        // Shrunk while decoding: what was decoded may be partly zeros.
        intact(&self.header).map_err(corrupt_get)?;
        self.h()
            .get
            .ring_head
            .store(word_after(head, LEN as u64 + len), Ordering::Release);
        Ok(r)
    }

    /// The read-ahead copy of the spool, holding at least a frame header at `head` (`avail`
    /// bytes are stored from there). Both locks held.
    fn spool_cache(
        &self,
        head: u64,
        avail: u64,
    ) -> Result<std::sync::MutexGuard<'_, SpoolCache>, GetError> {
        let gen = self.h().get.spool_gen.load(Ordering::Acquire);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let cached = cache.gen == gen
            && head >= cache.start
            && head - cache.start + LEN as u64 <= cache.bytes.len() as u64;
        if !cached {
            // Read ahead: the frames after this one usually come in the same read.
            let want = (avail as usize).min(SPOOL_READ_AHEAD);
            cache.bytes.resize(want, 0);
            let got = sys::spool_read_at(&self.spool, &mut cache.bytes, head)?;
            cache.bytes.truncate(got);
            cache.start = head;
            cache.gen = gen;
            if got < LEN {
                return Err(GetError::Corrupt(format!(
                    "{got} bytes where a frame header was due"
                )));
            }
        }
        Ok(cache)
    }

    /// The spool's head offset and the bytes it holds from there, checked: offsets that
    /// hold no whole frame header (damaged by a peer) are `Corrupt`.
    fn spool_span(&self) -> Result<(u64, u64), GetError> {
        let h = self.h();
        let (head, tail) = (
            h.get.head.load(Ordering::Relaxed),
            h.put.tail.load(Ordering::Relaxed),
        );
        match tail.checked_sub(head).filter(|a| *a >= LEN as u64) {
            Some(avail) => Ok((head, avail)),
            None => Err(GetError::Corrupt(format!(
                "spool offsets {head}..{tail} hold no frame"
            ))),
        }
    }

    /// Moves the whole frames at the spool's head that are in the read-ahead copy (up to a
    /// ring's worth, none larger than a ring item may be) into the empty ring. Both locks
    /// held, the ring empty, the spool holding an item. Returns whether it moved any.
    ///
    /// The frames are copied past the ring's tail (invisible), `move_head`/`move_ring` say
    /// what the move will publish, the ring tail word publishes them, then the spool's head
    /// and count drop them and the mark is cleared: a holder dying before the ring store
    /// leaves the spool as it was, after it the repair drops the moved frames from the spool.
    fn spool_to_ring(&self) -> Result<bool, GetError> {
        let h = self.h();
        let (head, avail) = self.spool_span()?;
        let cache = self.spool_cache(head, avail)?;
        let start = (head - cache.start) as usize;
        let end = cache.bytes.len().min(start + avail as usize);
        let (cap, max_item) = (self.ring_cap, self.ring_cap / 4);
        let (mut at, mut frames) = (start, 0u64);
        while at + LEN <= end && at - start < cap {
            let len = u64::from_le_bytes(cache.bytes[at..at + LEN].try_into().expect("8 bytes"));
            let next = (at + LEN).saturating_add(usize::try_from(len).unwrap_or(usize::MAX));
            if (LEN as u64).saturating_add(len) > max_item as u64
                || next > end
                || next - start > cap
            {
                break;
            }
            at = next;
            frames += 1;
        }
        if frames == 0 {
            return Ok(false);
        }
        let bytes = (at - start) as u64;
        let ring_tail = h.put.ring_tail.load(Ordering::Relaxed);
        self.ring_write(word_pos(ring_tail), &cache.bytes[start..at]);
        drop(cache);
        let new_tail = (((word_cnt(ring_tail) + frames) & CNT_MASK) << POS_BITS)
            | (ring_tail.wrapping_add(bytes) & POS_MASK);
        let new_head = head + bytes;
        h.put.move_ring.store(new_tail, Ordering::Relaxed);
        h.put.move_head.store(new_head, Ordering::Relaxed);
        h.put.ring_tail.store(new_tail, Ordering::Release);
        h.get.head.store(new_head, Ordering::Relaxed);
        let count = u64::from(h.put.spool_count.load(Ordering::Relaxed));
        h.put
            .spool_count
            .store(count.saturating_sub(frames) as u32, Ordering::Release);
        self.reclaim(new_head, head + avail)?;
        h.put.move_head.store(0, Ordering::Release);
        Ok(true)
    }

    /// Moves the staged frames into the empty ring if they fit. Both locks held, the ring
    /// and the spool empty, the staging area not. Returns whether it moved them. Published
    /// like `spool_to_ring`, with `move_head` = `MOVED_STAGE`.
    fn stage_to_ring(&self) -> Result<bool, GetError> {
        let h = self.h();
        let w = h.put.stage.load(Ordering::Acquire);
        let (n, k) = (word_pos(w), word_cnt(w));
        if n as usize > STAGE || k == 0 || k.saturating_mul(LEN as u64) > n {
            return Err(GetError::Corrupt(format!(
                "a staging word {w:#x} for {STAGE} bytes"
            )));
        }
        if n as usize > self.ring_cap {
            return Ok(false);
        }
        // SAFETY: n <= STAGE bytes of the staging area, which changes only under the put
        // lock (held).
        let bytes = unsafe { std::slice::from_raw_parts(self.stage_ptr(), n as usize) };
        let ring_tail = h.put.ring_tail.load(Ordering::Relaxed);
        self.ring_write(word_pos(ring_tail), bytes);
        let new_tail = (((word_cnt(ring_tail) + k) & CNT_MASK) << POS_BITS)
            | (ring_tail.wrapping_add(n) & POS_MASK);
        h.put.move_ring.store(new_tail, Ordering::Relaxed);
        h.put.move_head.store(MOVED_STAGE, Ordering::Relaxed);
        h.put.ring_tail.store(new_tail, Ordering::Release);
        h.put.stage.store(0, Ordering::Release);
        h.put.move_head.store(0, Ordering::Release);
        Ok(true)
    }

    /// Reads and removes the frame at the spool's head. Both locks held, the spool holds
    /// an item.
    fn spool_take(&self) -> Result<Vec<u8>, GetError> {
        let h = self.h();
        let (head, avail) = self.spool_span()?;
        let cache = self.spool_cache(head, avail)?;
        let at = (head - cache.start) as usize;
        let len = u64::from_le_bytes(cache.bytes[at..at + LEN].try_into().expect("8 bytes"));
        if len > avail - LEN as u64 {
            return Err(GetError::Corrupt(format!(
                "a frame of {len} bytes announced with only {} stored",
                avail - LEN as u64
            )));
        }
        let len = usize::try_from(len).map_err(|_| {
            GetError::Corrupt(format!("a frame of {len} bytes announced in the spool"))
        })?;
        let body = at + LEN;
        let have = cache.bytes.len().saturating_sub(body).min(len);
        let mut buf = Vec::with_capacity(have);
        buf.extend_from_slice(&cache.bytes[body..body + have]);
        drop(cache);
        // The rest is read as it turns out to be there: the length and the offsets come
        // from shared memory, and a damaged one must not make this process allocate what
        // the spool does not hold.
        while buf.len() < len {
            let got = buf.len();
            buf.resize(mp_ipc::frame::next_capacity(got, len), 0);
            let more = sys::spool_read_at(&self.spool, &mut buf[got..], head + (LEN + got) as u64)?;
            if got + more < buf.len() {
                return Err(GetError::Corrupt("the spool ended inside a frame".into()));
            }
        }
        let new_head = head + (LEN + len) as u64;
        h.get.head.store(new_head, Ordering::Relaxed);
        h.put.spool_count.fetch_sub(1, Ordering::Release);
        self.reclaim(new_head, head + avail)?;
        Ok(buf)
    }

    /// Gives consumed spool memory back: all of it when the spool empties, else whole
    /// steps. Both locks held.
    fn reclaim(&self, head: u64, tail: u64) -> io::Result<()> {
        let h = self.h();
        if head == tail {
            // Tail first: a holder dying in between leaves head > tail, which the repair
            // reads as an empty spool.
            h.put.tail.store(0, Ordering::Relaxed);
            h.get.head.store(0, Ordering::Relaxed);
            h.get.spool_gen.fetch_add(1, Ordering::Release);
            if tail > RELEASE_STEP {
                sys::spool_truncate(&self.spool, 0)?;
                self.spool_seen
                    .store(0, std::sync::atomic::Ordering::Relaxed);
            }
            h.get.released.store(0, Ordering::Relaxed);
            return Ok(());
        }
        let released = h.get.released.load(Ordering::Relaxed);
        let upto = head - head % RELEASE_STEP;
        if upto > released {
            sys::spool_release(&self.spool, released, upto - released);
            h.get.released.store(upto, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Marks one item done; an error if more were marked than were put.
    pub(crate) fn task_done(&self) -> Result<(), QueueError> {
        let h = &self.h().common;
        let mut n = h.unfinished.load(Ordering::Acquire);
        loop {
            if n == 0 {
                return Err(QueueError::TaskDoneTooManyTimes);
            }
            match h
                .unfinished
                .compare_exchange(n, n - 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(now) => n = now,
            }
        }
        if n == 1 {
            h.done_seq.fetch_add(1, Ordering::Release);
            futex::wake(&h.done_seq, u32::MAX);
        }
        Ok(())
    }

    /// Whether [`shutdown`](Self::shutdown) was called, here or in another process.
    pub(crate) fn is_shut_down(&self) -> bool {
        self.h().common.shut.load(Ordering::Acquire) != 0
    }

    /// Python's `Queue.shutdown(immediate)`: from now on `put` fails with `ShutDown`, and
    /// `get` too once the queue is empty; every waiter wakes. `immediate` also discards
    /// what is queued, marking each discarded item done if `joinable` (so joiners wait only
    /// for items already taken). Returns how many items were discarded.
    pub(crate) fn shutdown(&self, immediate: bool, joinable: bool) -> usize {
        let h = self.h();
        h.common.shut.store(1, Ordering::SeqCst);
        let mut discarded = 0;
        if immediate {
            // Items taken by other consumers meanwhile are theirs; what is left goes.
            while self.get(Some(Instant::now()), |_: &[u8]| ()).is_ok() {
                discarded += 1;
                if joinable {
                    let _ = self.task_done();
                }
            }
        }
        fence(Ordering::SeqCst);
        h.put.put_seq.fetch_add(1, Ordering::Release);
        futex::wake(&h.put.put_seq, u32::MAX);
        h.get.get_seq.fetch_add(1, Ordering::Release);
        futex::wake(&h.get.get_seq, u32::MAX);
        discarded
    }

    /// Waits until every item put has been marked done, until `deadline`.
    pub(crate) fn join(&self, deadline: Option<Instant>) -> bool {
        let h = &self.h().common;
        loop {
            let seq = h.done_seq.load(Ordering::Acquire);
            if h.unfinished.load(Ordering::Acquire) == 0 {
                return true;
            }
            if !futex::wait_until(&h.done_seq, seq, deadline) {
                return h.unfinished.load(Ordering::Acquire) == 0;
            }
        }
    }
}

impl Serialize for Core {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(&self.header)?;
        t.serialize_element(&SpoolHandle(&self.spool))?;
        t.end()
    }
}

struct SpoolHandle<'a>(&'a OwnedHandle);

impl Serialize for SpoolHandle<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::handles::serialize_handle(mp_ipc::handle::raw_of(self.0), s)
    }
}

impl<'de> Deserialize<'de> for Core {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (header, spool) = <(Segment, crate::OsHandle)>::deserialize(d)?;
        if header.len() < std::mem::size_of::<Header>() {
            return Err(D::Error::custom("a queue header segment is too small"));
        }
        let ring_cap = if header.len() <= RING_AT {
            0
        } else {
            header.len().saturating_sub(RING_AT + STAGE)
        };
        if header.len() > RING_AT && ring_cap == 0 {
            return Err(D::Error::custom("a queue header segment of a bad size"));
        }
        if ring_cap != 0 && !ring_cap.is_power_of_two() {
            return Err(D::Error::custom(
                "a queue ring of a size that is not a power of two",
            ));
        }
        Ok(Self {
            header,
            spool: spool.into_inner(),
            ring_cap,
            cache: Default::default(),
            spool_seen: Default::default(),
        })
    }
}

/// Hooks for the `queue_repair` fuzz target and the tests: what a broken or hostile process
/// sharing the queue can do to its shared state, and the repair that the next put-lock
/// holder runs after a holder died.
#[cfg(any(test, feature = "fuzzing"))]
#[cfg_attr(not(feature = "fuzzing"), allow(dead_code))]
impl Core {
    /// Bytes of the header segment (header words, ring, staging area).
    pub(crate) fn segment_len(&self) -> usize {
        self.header.len()
    }

    /// Whether the 8-byte word at `offset` of the segment holds part of a lock (the locks'
    /// damage is the lock's tests' business: a scribbled owner word can make a wait last
    /// until its deadline).
    pub(crate) fn is_lock_word(offset: usize) -> bool {
        let put = std::mem::offset_of!(Header, put);
        let lock = std::mem::size_of::<RawLock>();
        offset < lock || (put..put + lock).contains(&offset)
    }

    /// Overwrites the aligned 8-byte word at `offset` of the segment with `value`.
    pub(crate) fn scribble_segment(&self, offset: usize, value: u64) {
        let offset = offset & !7;
        if offset + 8 > self.header.len() {
            return;
        }
        // SAFETY: in bounds and 8-aligned (the segment is page-aligned); AtomicU64 is valid
        // for every bit pattern, and everything in the segment is read through atomics or
        // copied as bytes.
        let word: &AtomicU64 = unsafe { self.header.at(offset) };
        word.store(value, Ordering::Relaxed);
    }

    /// Overwrites spool bytes at `offset`.
    pub(crate) fn scribble_spool(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        sys::spool_write_at(&self.spool, bytes, offset)
    }

    /// The spool's tail offset (as the header says).
    pub(crate) fn spool_tail(&self) -> u64 {
        self.h().put.tail.load(Ordering::Relaxed)
    }

    /// What the next put-lock holder does after the holder died: takes the lock and runs
    /// the repair. `Ok(false)` if the lock could not be had before `deadline`.
    pub(crate) fn repair_as_after_death(&self, deadline: Option<Instant>) -> io::Result<bool> {
        let Some(held) = self.lock_put(deadline)? else {
            return Ok(false);
        };
        self.repair_spool()?;
        drop(held);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn put<T: Serialize>(c: &Core, v: &T) {
        with_frame(v, |f| c.put(f, None, false)).unwrap().unwrap();
    }

    fn get<T: serde::de::DeserializeOwned>(c: &Core) -> T {
        let soon = Some(Instant::now() + Duration::from_secs(1));
        c.get(soon, |b| postcard::from_bytes::<T>(b).unwrap())
            .unwrap()
    }

    fn overflow_empty_and_idle(c: &Core) -> bool {
        let h = c.h();
        c.overflow_empty() && h.put.flush_to.load(Ordering::Relaxed) == 0
    }

    #[test]
    fn an_overflowing_burst_keeps_fifo_through_ring_stage_and_spool() {
        // A small ring: the burst goes ring -> staging area -> spool, many flushes.
        let c = Core::new(0, 4096).unwrap();
        let n = 60_000u32;
        let mut next = 0u32;
        for i in 0..n {
            put(&c, &i);
            if i % 7 == 0 {
                assert_eq!(get::<u32>(&c), next);
                next += 1;
            }
        }
        assert_eq!(c.qsize() as u32, n - next);
        while next < n {
            assert_eq!(get::<u32>(&c), next);
            next += 1;
        }
        assert_eq!(c.qsize(), 0);
        assert!(overflow_empty_and_idle(&c));
        // Drained: the next item goes into the ring again.
        put(&c, &5u32);
        assert!(c.overflow_empty() && c.ring_items() == 1);
        assert_eq!(get::<u32>(&c), 5);
    }

    #[test]
    fn items_larger_than_the_staging_area_keep_their_place() {
        let c = Core::new(0, 4096).unwrap();
        let sizes = [10usize, 3000, 70_000, 5, 200_000, 900, 1, 65_536, 65_520, 2];
        for round in 0..3u8 {
            for (i, &n) in sizes.iter().enumerate() {
                put(&c, &vec![round.wrapping_mul(31).wrapping_add(i as u8); n]);
            }
        }
        for round in 0..3u8 {
            for (i, &n) in sizes.iter().enumerate() {
                let v: Vec<u8> = get(&c);
                assert_eq!(v.len(), n);
                assert!(v
                    .iter()
                    .all(|&b| b == round.wrapping_mul(31).wrapping_add(i as u8)));
            }
        }
        assert_eq!(c.qsize(), 0);
    }

    /// Stages `n` items behind a full ring; returns the staged byte count.
    fn stage_some(c: &Core, n: u32) -> u64 {
        for i in 0..n {
            put(c, &i);
        }
        let w = c.h().put.stage.load(Ordering::Relaxed);
        assert!(w != 0 && c.h().put.spool_count.load(Ordering::Relaxed) == 0);
        word_pos(w)
    }

    #[test]
    fn a_flush_cut_short_after_its_write_is_finished_by_the_repair() {
        let c = Core::new(0, 4096).unwrap();
        let staged = stage_some(&c, 2000);
        // A holder that wrote the staged bytes to the spool, marked it, published the tail
        // and died before the count and the staging word.
        let h = c.h();
        let tail = h.put.tail.load(Ordering::Relaxed);
        // SAFETY: the staged bytes are inside the staging area.
        let bytes = unsafe { std::slice::from_raw_parts(c.stage_ptr(), staged as usize) };
        sys::spool_write_at(&c.spool, bytes, tail).unwrap();
        h.put.flush_to.store(tail + staged, Ordering::Relaxed);
        h.put.tail.store(tail + staged, Ordering::Relaxed);
        c.repair_spool().unwrap();
        assert_eq!(c.qsize(), 2000);
        for i in 0..2000u32 {
            assert_eq!(get::<u32>(&c), i);
        }
        assert_eq!(c.qsize(), 0);
        assert!(overflow_empty_and_idle(&c));
    }

    #[test]
    fn a_flush_cut_short_before_its_mark_leaves_the_items_staged() {
        let c = Core::new(0, 4096).unwrap();
        stage_some(&c, 2000);
        // A holder died in the middle of the write: junk past the spool's tail.
        let tail = c.h().put.tail.load(Ordering::Relaxed);
        sys::spool_write_at(&c.spool, &[0xee; 300], tail).unwrap();
        c.repair_spool().unwrap();
        assert_eq!(c.qsize(), 2000);
        for i in 0..2000u32 {
            assert_eq!(get::<u32>(&c), i);
        }
        assert_eq!(c.qsize(), 0);
    }

    /// Puts `n` items behind a full ring, drains the ring and moves the staged items to the
    /// spool; returns how many items were taken.
    fn spool_some(c: &Core, n: u32) -> u32 {
        stage_some(c, n);
        let mut next = 0u32;
        while c.ring_items() > 0 {
            assert_eq!(get::<u32>(c), next);
            next += 1;
        }
        c.stage_flush().unwrap();
        assert!(c.h().put.spool_count.load(Ordering::Relaxed) > 0);
        next
    }

    #[test]
    fn a_move_to_the_ring_cut_short_after_its_publication_is_finished_by_the_repair() {
        let c = Core::new(0, 4096).unwrap();
        let next = spool_some(&c, 2000);
        let h = c.h();
        let (head, count) = (
            h.get.head.load(Ordering::Relaxed),
            h.put.spool_count.load(Ordering::Relaxed),
        );
        assert!(c.spool_to_ring().unwrap());
        // Undo what came after the ring's publication: as if the mover died right there.
        let moved_to = h.get.head.load(Ordering::Relaxed);
        h.put
            .move_ring
            .store(h.put.ring_tail.load(Ordering::Relaxed), Ordering::Relaxed);
        h.put.move_head.store(moved_to, Ordering::Relaxed);
        h.get.head.store(head, Ordering::Relaxed);
        h.put.tail.store(
            h.put.tail.load(Ordering::Relaxed).max(head),
            Ordering::Relaxed,
        );
        h.put.spool_count.store(count, Ordering::Relaxed);
        c.repair_spool().unwrap();
        assert_eq!(c.qsize() as u32, 2000 - next);
        for i in next..2000 {
            assert_eq!(get::<u32>(&c), i);
        }
        assert_eq!(c.qsize(), 0);
    }

    #[test]
    fn a_move_to_the_ring_cut_short_before_its_publication_leaves_the_spool() {
        let c = Core::new(0, 4096).unwrap();
        let next = spool_some(&c, 2000);
        let h = c.h();
        // A mover that marked its move and died before publishing the ring tail.
        let ring_tail = h.put.ring_tail.load(Ordering::Relaxed);
        h.put
            .move_ring
            .store(word_after(ring_tail, 40), Ordering::Relaxed);
        h.put
            .move_head
            .store(h.get.head.load(Ordering::Relaxed) + 40, Ordering::Relaxed);
        c.repair_spool().unwrap();
        assert_eq!(c.qsize() as u32, 2000 - next);
        for i in next..2000 {
            assert_eq!(get::<u32>(&c), i);
        }
        assert_eq!(c.qsize(), 0);
        assert!(overflow_empty_and_idle(&c));
    }

    /// A queue whose ring holds the staging area: `n` items staged behind a full ring, the
    /// ring then drained. Returns how many items were taken.
    fn staged_behind_an_empty_ring(c: &Core, n: u32) -> u32 {
        let mut next = 0u32;
        for i in 0..n {
            put(c, &i);
        }
        assert!(c.h().put.stage.load(Ordering::Relaxed) != 0);
        while c.ring_items() > 0 {
            assert_eq!(get::<u32>(c), next);
            next += 1;
        }
        next
    }

    #[test]
    fn a_stage_move_cut_short_after_its_publication_is_finished_by_the_repair() {
        let c = Core::new(0, 64 << 10).unwrap();
        let next = staged_behind_an_empty_ring(&c, 8000);
        let h = c.h();
        let stage = h.put.stage.load(Ordering::Relaxed);
        assert!(c.stage_to_ring().unwrap());
        // As if the mover died right after publishing the ring tail.
        h.put
            .move_ring
            .store(h.put.ring_tail.load(Ordering::Relaxed), Ordering::Relaxed);
        h.put.move_head.store(MOVED_STAGE, Ordering::Relaxed);
        h.put.stage.store(stage, Ordering::Relaxed);
        c.repair_spool().unwrap();
        assert_eq!(c.qsize() as u32, 8000 - next);
        for i in next..8000 {
            assert_eq!(get::<u32>(&c), i);
        }
        assert_eq!(c.qsize(), 0);
        assert!(overflow_empty_and_idle(&c));
    }

    #[test]
    fn a_stage_move_cut_short_before_its_publication_leaves_the_stage() {
        let c = Core::new(0, 64 << 10).unwrap();
        let next = staged_behind_an_empty_ring(&c, 8000);
        let h = c.h();
        let ring_tail = h.put.ring_tail.load(Ordering::Relaxed);
        h.put
            .move_ring
            .store(word_after(ring_tail, 40), Ordering::Relaxed);
        h.put.move_head.store(MOVED_STAGE, Ordering::Relaxed);
        c.repair_spool().unwrap();
        assert_eq!(c.qsize() as u32, 8000 - next);
        for i in next..8000 {
            assert_eq!(get::<u32>(&c), i);
        }
        assert_eq!(c.qsize(), 0);
        assert!(overflow_empty_and_idle(&c));
    }

    #[test]
    fn a_damaged_staging_word_is_an_error_not_a_panic() {
        let c = Core::new(0, 4096).unwrap();
        stage_some(&c, 2000);
        // Drain the ring, then scribble the staging word.
        while c.ring_items() > 0 {
            let _: u32 = get(&c);
        }
        c.h().put.stage.store(u64::MAX, Ordering::Relaxed);
        let soon = Some(Instant::now() + Duration::from_millis(100));
        assert!(matches!(c.get(soon, |_| ()), Err(GetError::Corrupt(_))));
        assert!(with_frame(&1u32, |f| c.put(f, None, false))
            .unwrap()
            .is_err());
    }

    #[test]
    fn a_put_refuses_a_tail_past_the_spools_end() {
        // Found by the queue_repair fuzz target: a put wrote at whatever tail the shared
        // header said, leaving a hole the size of a scribbled offset, which later reads took
        // for frames (a walk of zero-length frames, a body of gigabytes of zeros).
        for ring_cap in [0, 4096] {
            let c = Core::new(0, ring_cap).unwrap();
            put(&c, &vec![1u8; 100_000]);
            let len = sys::spool_len(&c.spool).unwrap();
            let at = std::mem::offset_of!(Header, put) + std::mem::offset_of!(PutSide, tail);
            c.scribble_segment(at, 1 << 40);
            let r = with_frame(&vec![2u8; 100_000], |f| c.put(f, None, false)).unwrap();
            assert!(matches!(r, Err(QueueError::Corrupt(_))), "{r:?}");
            assert_eq!(sys::spool_len(&c.spool).unwrap(), len, "no hole was made");
        }
    }

    #[test]
    fn a_damaged_spool_length_is_an_error_not_an_allocation() {
        // Found by the queue_repair fuzz target: the spool's tail word and a frame's
        // length, both writable by any process sharing the queue, made a get allocate what
        // they announced (an abort on a failed allocation) before reading a byte.
        let c = Core::new(0, 0).unwrap();
        put(&c, &vec![7u8; 100]);
        let tail = c.spool_tail();
        let at = std::mem::offset_of!(Header, put) + std::mem::offset_of!(PutSide, tail);
        c.scribble_segment(at, 1 << 62);
        c.scribble_spool(0, &(1u64 << 61).to_le_bytes()).unwrap();
        assert_eq!(c.spool_tail(), 1 << 62);
        let soon = Some(Instant::now() + Duration::from_secs(1));
        assert!(matches!(
            c.get(soon, |b| b.len()),
            Err(GetError::Corrupt(_))
        ));
        // The repair after a dead holder puts the tail back where the frames end.
        c.scribble_spool(0, &101u64.to_le_bytes()).unwrap();
        assert!(c.repair_as_after_death(soon).unwrap());
        assert_eq!(c.spool_tail(), tail);
    }

    /// The engine over a heap buffer ([`Core::in_heap`]): the frame arithmetic, the ring's
    /// wrap-around, the staging area and the spool's offsets, as Miri runs them
    /// (`cargo xtask miri`). Small, so that Miri finishes them quickly.
    mod heap {
        use super::*;

        fn put_bytes(c: &Core, v: &[u8]) {
            with_frame(&v, |f| c.put(f, Some(Instant::now()), false))
                .unwrap()
                .unwrap();
        }

        fn get_bytes(c: &Core) -> Result<Vec<u8>, GetError> {
            c.get(Some(Instant::now()), |b| {
                postcard::from_bytes::<Vec<u8>>(b).unwrap()
            })
        }

        fn item(i: usize) -> Vec<u8> {
            // Sizes that do not divide the ring: frames straddle its end in every way.
            vec![i as u8; (i * 37) % 200]
        }

        /// A store of frames in memory, as `walk_frames` reads it.
        fn frames(lens: &[u64]) -> Vec<u8> {
            let mut v = Vec::new();
            for &n in lens {
                v.extend_from_slice(&n.to_le_bytes());
                v.resize(v.len() + n as usize, 0xab);
            }
            v
        }

        fn reader(store: &[u8]) -> impl FnMut(&mut [u8], u64) -> io::Result<usize> + '_ {
            |buf, at| {
                let from = (at as usize).min(store.len());
                let n = buf.len().min(store.len() - from);
                buf[..n].copy_from_slice(&store[from..from + n]);
                Ok(n)
            }
        }

        #[test]
        fn the_repair_walk_counts_whole_frames_across_its_chunks() {
            // Frames that straddle the walk's chunks, zero-length ones included.
            let lens: Vec<u64> = (0..20).map(|i| [0, 3, 40_000, 9][i % 4]).collect();
            let store = frames(&lens);
            let end = store.len() as u64;
            assert!(end > 2 * REPAIR_CHUNK as u64);
            assert_eq!(walk_frames(0, end, 41, reader(&store)).unwrap(), (end, 20));
            // A torn frame at the end is left out; so is one announced past the tail.
            assert_eq!(
                walk_frames(0, end - 1, 41, reader(&store)).unwrap(),
                (end - 9 - 8, 19)
            );
            assert_eq!(
                walk_frames(0, end + 100, 41, reader(&store)).unwrap(),
                (end, 20)
            );
            // Starting at a later frame.
            let second = 8;
            assert_eq!(
                walk_frames(second, end, 41, reader(&store)).unwrap(),
                (end, 19)
            );
        }

        #[test]
        fn the_repair_walk_is_bounded_by_the_count_and_survives_any_length() {
            let store = vec![0u8; 8 * 1000];
            // A thousand zero-length frames where at most ten are counted: damage.
            let r = walk_frames(0, 8000, 10, reader(&store));
            assert_eq!(r.unwrap_err().kind(), io::ErrorKind::InvalidData);
            // A length near 2^64 ends the walk (no overflow, no wrapping backwards).
            let mut store = frames(&[2]);
            store.extend_from_slice(&(u64::MAX - 3).to_le_bytes());
            let end = store.len() as u64;
            assert_eq!(
                walk_frames(0, u64::MAX, 5, reader(&store)).unwrap(),
                (10, 1)
            );
            assert_eq!(walk_frames(0, end, 5, reader(&store)).unwrap(), (10, 1));
            // Offsets that hold nothing.
            assert_eq!(walk_frames(50, 40, 5, reader(&store)).unwrap(), (50, 0));
            assert_eq!(
                walk_frames(1 << 40, u64::MAX, 5, reader(&store)).unwrap(),
                (1 << 40, 0)
            );
        }

        #[test]
        fn ring_words_pack_position_and_count() {
            let w = word_after(0, 10);
            assert_eq!((word_pos(w), word_cnt(w)), (10, 1));
            // Both halves wrap without overflowing into each other.
            let top = (CNT_MASK << POS_BITS) | (POS_MASK - 3);
            let w = word_after(top, 10);
            assert_eq!((word_pos(w), word_cnt(w)), (6, 0));
            assert_eq!(word_after(u64::MAX, u64::MAX), (POS_MASK - 1));
        }

        #[test]
        fn frames_wrap_around_the_ring_in_order() {
            let c = Core::in_heap(0, 1024).unwrap();
            let mut next = 0;
            for i in 0..120 {
                put_bytes(&c, &item(i));
                // Keep a few in the ring so that the head and the tail both wrap.
                while c.ring_items() > 3 {
                    assert_eq!(get_bytes(&c).unwrap(), item(next));
                    next += 1;
                }
                assert!(c.overflow_empty(), "item {i} left the ring");
            }
            assert_eq!(c.qsize(), 120 - next);
            while next < 120 {
                assert_eq!(get_bytes(&c).unwrap(), item(next));
                next += 1;
            }
            assert!(matches!(get_bytes(&c), Err(GetError::Empty)));
            let h = c.h();
            let (head, tail) = (
                h.get.ring_head.load(Ordering::Relaxed),
                h.put.ring_tail.load(Ordering::Relaxed),
            );
            assert_eq!(head, tail);
            assert_eq!(word_cnt(tail), 120);
            assert!(word_pos(tail) > 4 * 1024, "the ring wrapped several times");
        }

        #[test]
        fn overflow_goes_through_the_staging_area_and_back_into_the_ring() {
            let c = Core::in_heap(0, 1024).unwrap();
            // 256 bytes is the largest ring item: these overflow into the staging area once
            // the ring is full, and a get moves them back into the emptied ring.
            for i in 0..12 {
                put_bytes(&c, &[i as u8; 200]);
            }
            assert!(c.h().put.stage.load(Ordering::Relaxed) != 0);
            assert_eq!(c.qsize(), 12);
            for i in 0..12 {
                assert_eq!(get_bytes(&c).unwrap(), vec![i as u8; 200]);
            }
            assert!(c.overflow_empty() && c.qsize() == 0);
        }

        #[test]
        fn items_larger_than_a_ring_item_go_through_the_spool() {
            let c = Core::in_heap(0, 1024).unwrap();
            put_bytes(&c, &[1u8; 10]);
            put_bytes(&c, &[2u8; 700]);
            put_bytes(&c, &[3u8; 700]);
            put_bytes(&c, &[4u8; 5]);
            assert_eq!(get_bytes(&c).unwrap(), [1u8; 10]);
            // The staged frames do not fit the ring: they are flushed to the spool file, and
            // taken from there (too large to move into the ring).
            assert_eq!(get_bytes(&c).unwrap(), [2u8; 700]);
            assert!(c.h().put.stage.load(Ordering::Relaxed) == 0);
            assert_eq!(c.h().put.spool_count.load(Ordering::Relaxed), 2);
            assert_eq!(get_bytes(&c).unwrap(), [3u8; 700]);
            assert_eq!(get_bytes(&c).unwrap(), [4u8; 5]);
            assert_eq!(c.qsize(), 0);
            // A spool-only queue (the socket backend's).
            let c = Core::in_heap(0, 0).unwrap();
            for i in 0..5 {
                put_bytes(&c, &item(i));
            }
            assert!(c.repair_as_after_death(None).unwrap());
            assert_eq!(c.qsize(), 5);
            for i in 0..5 {
                assert_eq!(get_bytes(&c).unwrap(), item(i));
            }
        }

        #[test]
        fn damaged_ring_words_are_errors_not_reads_out_of_bounds() {
            let c = Core::in_heap(0, 1024).unwrap();
            put_bytes(&c, &[9u8; 50]);
            let h = c.h();
            let head = h.get.ring_head.load(Ordering::Relaxed);
            let tail = h.put.ring_tail.load(Ordering::Relaxed);
            // A tail beyond a ring's worth of bytes, a count with no bytes, a length prefix
            // longer than what is stored.
            for bad in [word_after(tail, 4096), word_after(head, 0)] {
                h.put.ring_tail.store(bad, Ordering::Relaxed);
                assert!(
                    matches!(get_bytes(&c), Err(GetError::Corrupt(_))),
                    "{bad:#x}"
                );
            }
            h.put.ring_tail.store(tail, Ordering::Relaxed);
            c.ring_write(word_pos(head), &u64::MAX.to_le_bytes());
            assert!(matches!(get_bytes(&c), Err(GetError::Corrupt(_))));
        }

        #[test]
        fn damaged_spool_offsets_are_errors() {
            let c = Core::in_heap(0, 0).unwrap();
            put_bytes(&c, &[4u8; 30]);
            let h = c.h();
            let tail = h.put.tail.load(Ordering::Relaxed);
            h.get.head.store(tail + 1, Ordering::Relaxed);
            assert!(matches!(c.spool_span(), Err(GetError::Corrupt(_))));
            assert!(matches!(get_bytes(&c), Err(GetError::Corrupt(_))));
            h.get.head.store(tail - 4, Ordering::Relaxed);
            assert!(matches!(c.spool_span(), Err(GetError::Corrupt(_))));
            h.get.head.store(0, Ordering::Relaxed);
            assert_eq!(c.spool_span().unwrap(), (0, tail));
            assert_eq!(get_bytes(&c).unwrap(), [4u8; 30]);
        }
    }
}

#[cfg(all(test, loom))]
mod loom_models {
    //! The queue engine under the model checker (`cargo xtask loom`): the very code above
    //! over a heap header whose atomics, locks and futexes are loom's (`sync/model.rs`), a
    //! ring of 64 bytes and the spool in a temporary file. A producer and a consumer run
    //! side by side; every interleaving (up to the preemption bound) must deliver each item
    //! once, whole and in order, through the ring and past it (the staging area and the
    //! spool), and a consumer asleep on an empty queue or a producer asleep on a full one
    //! must be woken (a lost wake-up is a deadlock loom reports).

    use super::*;
    use crate::sync::loom_models::model_bounded as model;

    fn item(i: u8) -> Vec<u8> {
        vec![i; 20]
    }

    /// A producer puts three items into a queue of `maxsize` while the consumer gets them.
    fn exchange(maxsize: u32) {
        let core = Core::in_heap(maxsize, 64).unwrap();
        let producer = core.clone();
        let t = loom::thread::spawn(move || {
            for i in 0..3 {
                with_frame(&item(i), |f| producer.put(f, None, false))
                    .unwrap()
                    .unwrap();
            }
        });
        for i in 0..3 {
            let got = core.get(None, |b| postcard::from_bytes::<Vec<u8>>(b).unwrap());
            assert_eq!(got.unwrap(), item(i));
        }
        t.join().unwrap();
        assert_eq!(
            core.count(),
            0,
            "nothing left over, nothing delivered twice"
        );
    }

    /// Three items of 29 bytes framed, unbounded: two fill the 64-byte ring, the third goes
    /// past it; the getter that finds the queue empty sleeps and is woken.
    #[test]
    fn items_cross_once_in_order_and_wake_the_getter() {
        model(2, || exchange(0));
    }

    /// The same through a queue of one item: the putter that finds it full sleeps and is
    /// woken by the get that makes room.
    #[test]
    fn a_full_queue_wakes_its_putter() {
        model(2, || exchange(1));
    }
}
