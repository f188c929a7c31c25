//! The engine under every queue: items as length-prefixed frames in a ring in shared memory
//! (shm backend) or in a spool file, indexed by a header in shared memory.
//!
//! With the shm backend the header segment also holds a ring of `ring_cap` bytes. A `put`
//! whose frame fits (at most a quarter of the ring) goes into the ring, with no system
//! call, as long as the spool holds nothing; otherwise it goes to the spool, so an unbounded
//! queue's `put` never waits for a reader whatever the item's size. Because the ring is only
//! used while the spool is empty, every ring item is older than every spool item and `get`
//! takes from the ring first: FIFO holds across both. The socket backend's queues have no
//! ring (`ring_cap == 0`) and use the spool only.
//!
//! ```text
//! header (shared memory)              spool (anonymous file, read/written by offset)
//! lock | head | tail | count | ...    ... [len][item] [len][item] [len][item] ...
//!                                          ^head                          ^tail
//! ```
//!
//! `put` appends a frame at `tail` and only then advances `tail` and `count`, under the lock;
//! `get` reads the frame at `head` and advances it. Because the frame is written before it is
//! published, a writer that dies mid-`put` leaves nothing visible. Sleepers wait on sequence
//! words (futexes) that every `put` / `get` / `task_done` bumps.

use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use mp_ipc::handle::OwnedHandle;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{GetError, QueueError};
use crate::shared::Segment;
use crate::sync::futex;
use crate::sync::{Acquired, RawLock};
use crate::sys;

/// Frame header: the body length.
const LEN: usize = 8;
/// A get reads this much at once, so a small item costs one read.
const READ_AHEAD: usize = 4096;
/// Consumed spool space is given back in steps of this size.
const RELEASE_STEP: u64 = 1 << 20;

#[repr(C)]
struct Header {
    lock: RawLock,
    /// 0 = unbounded.
    maxsize: AtomicU32,
    count: AtomicU32,
    /// Bumped by every put (getters sleep on it).
    put_seq: AtomicU32,
    /// Bumped by every get (bounded putters sleep on it).
    get_seq: AtomicU32,
    getters_waiting: AtomicU32,
    putters_waiting: AtomicU32,
    /// Items put and not yet marked done (JoinableQueue).
    unfinished: AtomicU32,
    /// Bumped when `unfinished` reaches zero (joiners sleep on it).
    done_seq: AtomicU32,
    head: AtomicU64,
    tail: AtomicU64,
    /// Spool bytes below this offset have been given back.
    released: AtomicU64,
    /// Ring positions (monotonic byte counts; `pos % ring_cap` is the offset).
    ring_head: AtomicU64,
    ring_tail: AtomicU64,
    /// Items stored in the spool (the rest of `count` is in the ring).
    spool_count: AtomicU32,
}

/// Where the ring starts in the header segment.
const RING_AT: usize = (std::mem::size_of::<Header>() + 63) & !63;
/// The ring of shm-backend queues.
#[cfg(feature = "shm")]
pub(crate) const SHM_RING: usize = 256 << 10;

/// The shared state of one queue, held by every handle in every process.
pub(crate) struct Core {
    header: Segment,
    spool: OwnedHandle,
    /// The ring's size, derived from the segment's length (never read from shared memory).
    ring_cap: usize,
}

/// What `put` needs from the frame: the encoded item.
pub(crate) struct Frame(Vec<u8>);

impl Frame {
    /// Encodes an item into a frame (length prefix included); nothing is shared yet.
    pub(crate) fn encode<T: Serialize>(item: &T) -> Result<Self, postcard::Error> {
        let buf = postcard::to_extend(item, vec![0u8; LEN])?;
        let mut frame = buf;
        let body = (frame.len() - LEN) as u64;
        frame[..LEN].copy_from_slice(&body.to_le_bytes());
        Ok(Self(frame))
    }
}

/// Spins while `ready()` is false, for at most [`SPIN_FOR`] and never past `deadline`; true
/// if it became ready. On a single CPU spinning only delays the producer, so it is skipped.
fn spin_until(ready: impl Fn() -> bool, deadline: Option<Instant>) -> bool {
    static MULTI_CPU: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if !*MULTI_CPU.get_or_init(|| crate::cpu_count() > 1) {
        return false;
    }
    let start = Instant::now();
    let stop = deadline.map_or(start + SPIN_FOR, |d| d.min(start + SPIN_FOR));
    let mut round = 0u32;
    while Instant::now() < stop {
        if ready() {
            return true;
        }
        if round < 64 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
        round += 1;
    }
    ready()
}

/// How long a getter looks for a new item before it sleeps.
const SPIN_FOR: std::time::Duration = std::time::Duration::from_micros(50);

impl Core {
    /// A new queue; `ring_cap` (0, or a power of two) bytes of ring in shared memory.
    pub(crate) fn new(maxsize: u32, ring_cap: usize) -> io::Result<Arc<Self>> {
        debug_assert!(ring_cap == 0 || ring_cap.is_power_of_two());
        let len = if ring_cap == 0 {
            std::mem::size_of::<Header>()
        } else {
            RING_AT + ring_cap
        };
        let header = Segment::create(len)?;
        let core = Self {
            header,
            spool: sys::spool_create()?,
            ring_cap,
        };
        core.h().maxsize.store(maxsize, Ordering::Relaxed);
        Ok(Arc::new(core))
    }

    fn h(&self) -> &Header {
        // SAFETY: the segment is one Header long, page-aligned, and Header is all atomics.
        unsafe { self.header.at(0) }
    }

    pub(crate) fn maxsize(&self) -> u32 {
        self.h().maxsize.load(Ordering::Relaxed)
    }

    pub(crate) fn qsize(&self) -> usize {
        self.h().count.load(Ordering::Acquire) as usize
    }

    pub(crate) fn unfinished(&self) -> u32 {
        self.h().unfinished.load(Ordering::Acquire)
    }

    /// Takes the lock; if its holder died, first repairs what it may have left half-done.
    fn lock(&self, deadline: Option<Instant>) -> Result<bool, io::Error> {
        match self.h().lock.lock(deadline) {
            Acquired::Clean => Ok(true),
            Acquired::OwnerDied => {
                self.repair()?;
                Ok(true)
            }
            Acquired::TimedOut => Ok(false),
        }
    }

    fn unlock(&self) {
        let _ = self.h().lock.unlock();
    }

    /// After a holder died: recount the frames between head and tail, dropping a torn tail.
    fn repair(&self) -> io::Result<()> {
        let h = self.h();
        let ring_items = self.repair_ring();
        let (mut at, tail) = (
            h.head.load(Ordering::Relaxed),
            h.tail.load(Ordering::Relaxed),
        );
        let mut count = 0u32;
        let mut len = [0u8; LEN];
        while at < tail {
            if sys::spool_read_at(&self.spool, &mut len, at)? < LEN {
                break;
            }
            let next = at + LEN as u64 + u64::from_le_bytes(len);
            if next > tail {
                break;
            }
            at = next;
            count += 1;
        }
        h.tail.store(at, Ordering::Relaxed);
        h.spool_count.store(count, Ordering::Relaxed);
        h.count.store(count + ring_items, Ordering::Release);
        Ok(())
    }

    /// Counts the whole frames in the ring, dropping a torn or damaged tail.
    fn repair_ring(&self) -> u32 {
        if self.ring_cap == 0 {
            return 0;
        }
        let h = self.h();
        let head = h.ring_head.load(Ordering::Relaxed);
        let tail = h.ring_tail.load(Ordering::Relaxed);
        if tail.wrapping_sub(head) > self.ring_cap as u64 {
            h.ring_tail.store(head, Ordering::Relaxed);
            return 0;
        }
        let (mut at, mut n) = (head, 0u32);
        while tail - at >= LEN as u64 {
            let mut len = [0u8; LEN];
            self.ring_read(at, &mut len);
            let next = (at + LEN as u64).saturating_add(u64::from_le_bytes(len));
            if next > tail {
                break;
            }
            at = next;
            n += 1;
        }
        h.ring_tail.store(at, Ordering::Relaxed);
        n
    }

    fn ring_ptr(&self) -> *mut u8 {
        // SAFETY: the segment is RING_AT + ring_cap long when ring_cap > 0.
        unsafe { self.header.as_ptr().add(RING_AT) }
    }

    /// Copies `src` into the ring at position `pos`, wrapping around. Lock held.
    fn ring_write(&self, pos: u64, src: &[u8]) {
        let cap = self.ring_cap;
        let off = pos as usize & (cap - 1);
        let first = src.len().min(cap - off);
        // SAFETY: off + first <= cap, src.len() - first <= cap; the lock serialises access.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.ring_ptr().add(off), first);
            std::ptr::copy_nonoverlapping(
                src.as_ptr().add(first),
                self.ring_ptr(),
                src.len() - first,
            );
        }
    }

    /// Copies out of the ring from position `pos`, wrapping around. Lock held.
    fn ring_read(&self, pos: u64, dst: &mut [u8]) {
        let cap = self.ring_cap;
        let off = pos as usize & (cap - 1);
        let first = dst.len().min(cap - off);
        // SAFETY: as in ring_write.
        unsafe {
            std::ptr::copy_nonoverlapping(self.ring_ptr().add(off), dst.as_mut_ptr(), first);
            std::ptr::copy_nonoverlapping(
                self.ring_ptr(),
                dst.as_mut_ptr().add(first),
                dst.len() - first,
            );
        }
    }

    /// Puts `frame` into the ring if it belongs there (ring present, spool empty, room).
    /// Lock held. Returns whether it did.
    fn ring_put(&self, frame: &[u8]) -> bool {
        let h = self.h();
        let cap = self.ring_cap as u64;
        if cap == 0 || frame.len() as u64 > cap / 4 || h.spool_count.load(Ordering::Relaxed) != 0 {
            return false;
        }
        let head = h.ring_head.load(Ordering::Relaxed);
        let tail = h.ring_tail.load(Ordering::Relaxed);
        let used = tail.wrapping_sub(head);
        if used > cap || cap - used < frame.len() as u64 {
            return false;
        }
        self.ring_write(tail, frame);
        h.ring_tail
            .store(tail + frame.len() as u64, Ordering::Release);
        true
    }

    /// Takes the frame at the ring's head, if the ring holds one. Lock held.
    fn ring_take(&self) -> Result<Option<Vec<u8>>, GetError> {
        if self.ring_cap == 0 {
            return Ok(None);
        }
        let h = self.h();
        let head = h.ring_head.load(Ordering::Relaxed);
        let tail = h.ring_tail.load(Ordering::Relaxed);
        let used = tail.wrapping_sub(head);
        if used == 0 {
            return Ok(None);
        }
        if used > self.ring_cap as u64 || used < LEN as u64 {
            return Err(GetError::Corrupt(format!(
                "ring positions {head}..{tail} do not fit a ring of {} bytes",
                self.ring_cap
            )));
        }
        let mut len = [0u8; LEN];
        self.ring_read(head, &mut len);
        let len = u64::from_le_bytes(len);
        if len > used - LEN as u64 {
            return Err(GetError::Corrupt(format!(
                "a frame of {len} bytes announced with only {} stored",
                used - LEN as u64
            )));
        }
        let mut buf = vec![0u8; len as usize];
        self.ring_read(head + LEN as u64, &mut buf);
        h.ring_head
            .store(head + LEN as u64 + len, Ordering::Release);
        h.count.fetch_sub(1, Ordering::Release);
        h.get_seq.fetch_add(1, Ordering::Release);
        Ok(Some(buf))
    }

    /// Appends `frame`, waiting for room in a bounded queue until `deadline`. On `Full`,
    /// the frame comes back untouched.
    pub(crate) fn put(
        &self,
        frame: &Frame,
        deadline: Option<Instant>,
        joinable: bool,
    ) -> Result<(), QueueError> {
        let h = self.h();
        loop {
            if !self.lock(deadline)? {
                return Err(QueueError::Full);
            }
            let max = h.maxsize.load(Ordering::Relaxed);
            if max == 0 || h.count.load(Ordering::Relaxed) < max {
                break;
            }
            let seq = h.get_seq.load(Ordering::Acquire);
            h.putters_waiting.fetch_add(1, Ordering::Relaxed);
            self.unlock();
            let in_time = futex::wait_until(&h.get_seq, seq, deadline);
            h.putters_waiting.fetch_sub(1, Ordering::Relaxed);
            if !in_time {
                return Err(QueueError::Full);
            }
        }
        if !self.ring_put(&frame.0) {
            let tail = h.tail.load(Ordering::Relaxed);
            if let Err(e) = sys::spool_write_at(&self.spool, &frame.0, tail) {
                self.unlock();
                return Err(e.into());
            }
            h.tail.store(tail + frame.0.len() as u64, Ordering::Relaxed);
            h.spool_count.fetch_add(1, Ordering::Relaxed);
        }
        if joinable {
            h.unfinished.fetch_add(1, Ordering::Relaxed);
        }
        h.count.fetch_add(1, Ordering::Release);
        h.put_seq.fetch_add(1, Ordering::SeqCst);
        let wake = h.getters_waiting.load(Ordering::SeqCst) > 0;
        self.unlock();
        if wake {
            futex::wake(&h.put_seq, 1);
        }
        Ok(())
    }

    /// Takes the oldest item's bytes, waiting for one until `deadline`.
    ///
    /// A waiting getter registers in `getters_waiting` only after its spin, and re-checks
    /// `put_seq` in the futex call itself, so a put that lands in between is never missed.
    pub(crate) fn get(&self, deadline: Option<Instant>) -> Result<Vec<u8>, GetError> {
        let h = self.h();
        loop {
            if !self.lock(deadline)? {
                return Err(GetError::Empty);
            }
            if h.count.load(Ordering::Relaxed) > 0 {
                break;
            }
            let seq = h.put_seq.load(Ordering::Acquire);
            self.unlock();
            // A producer that is busy putting usually delivers within microseconds: look
            // for a while before paying for a sleep and a wake-up.
            if spin_until(|| h.put_seq.load(Ordering::Relaxed) != seq, deadline) {
                continue;
            }
            h.getters_waiting.fetch_add(1, Ordering::SeqCst);
            let in_time = futex::wait_until(&h.put_seq, seq, deadline);
            h.getters_waiting.fetch_sub(1, Ordering::Relaxed);
            if !in_time {
                return Err(GetError::Empty);
            }
        }
        let result = self.take_locked();
        let wake = h.putters_waiting.load(Ordering::Relaxed) > 0;
        self.unlock();
        if wake {
            futex::wake(&h.get_seq, 1);
        }
        result
    }

    /// Reads and removes the frame at head. The lock is held and the queue is not empty.
    fn take_locked(&self) -> Result<Vec<u8>, GetError> {
        if let Some(item) = self.ring_take()? {
            return Ok(item);
        }
        let h = self.h();
        if h.spool_count.load(Ordering::Relaxed) == 0 {
            return Err(GetError::Corrupt(
                "the count says an item is there, but neither ring nor spool holds one".into(),
            ));
        }
        let (head, tail) = (
            h.head.load(Ordering::Relaxed),
            h.tail.load(Ordering::Relaxed),
        );
        let avail = tail - head;
        let mut buf = vec![0u8; (avail as usize).min(READ_AHEAD)];
        let got = sys::spool_read_at(&self.spool, &mut buf, head)?;
        if got < LEN {
            return Err(GetError::Corrupt(format!(
                "{got} bytes where a frame header was due"
            )));
        }
        let len = u64::from_le_bytes(buf[..LEN].try_into().expect("8 bytes"));
        if len > avail - LEN as u64 {
            return Err(GetError::Corrupt(format!(
                "a frame of {len} bytes announced with only {} stored",
                avail - LEN as u64
            )));
        }
        let len = len as usize;
        buf.truncate(got);
        buf.drain(..LEN);
        if buf.len() < len {
            let have = buf.len();
            buf.resize(len, 0);
            let more =
                sys::spool_read_at(&self.spool, &mut buf[have..], head + (LEN + have) as u64)?;
            if have + more < len {
                return Err(GetError::Corrupt("the spool ended inside a frame".into()));
            }
        } else {
            buf.truncate(len);
        }
        let new_head = head + (LEN + len) as u64;
        h.head.store(new_head, Ordering::Relaxed);
        h.spool_count.fetch_sub(1, Ordering::Relaxed);
        h.count.fetch_sub(1, Ordering::Release);
        h.get_seq.fetch_add(1, Ordering::Release);
        self.reclaim(new_head, tail)?;
        Ok(buf)
    }

    /// Gives consumed spool memory back: all of it when the queue is empty, else whole steps.
    fn reclaim(&self, head: u64, tail: u64) -> io::Result<()> {
        let h = self.h();
        if head == tail {
            h.head.store(0, Ordering::Relaxed);
            h.tail.store(0, Ordering::Relaxed);
            if tail > RELEASE_STEP {
                sys::spool_truncate(&self.spool, 0)?;
            }
            h.released.store(0, Ordering::Relaxed);
            return Ok(());
        }
        let released = h.released.load(Ordering::Relaxed);
        let upto = head - head % RELEASE_STEP;
        if upto > released {
            sys::spool_release(&self.spool, released, upto - released);
            h.released.store(upto, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Marks one item done; an error if more were marked than were put.
    pub(crate) fn task_done(&self) -> Result<(), QueueError> {
        let h = self.h();
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

    /// Waits until every item put has been marked done, until `deadline`.
    pub(crate) fn join(&self, deadline: Option<Instant>) -> bool {
        let h = self.h();
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
        let ring_cap = header.len().saturating_sub(RING_AT);
        let ring_cap = if header.len() <= RING_AT { 0 } else { ring_cap };
        if ring_cap != 0 && !ring_cap.is_power_of_two() {
            return Err(D::Error::custom(
                "a queue ring of a size that is not a power of two",
            ));
        }
        Ok(Self {
            header,
            spool: spool.into_inner(),
            ring_cap,
        })
    }
}
