//! The engine under every queue: items as length-prefixed frames in a spool file, indexed by
//! a header in shared memory.
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
}

/// The shared state of one queue, held by every handle in every process.
pub(crate) struct Core {
    header: Segment,
    spool: OwnedHandle,
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
    pub(crate) fn new(maxsize: u32) -> io::Result<Arc<Self>> {
        let header = Segment::create(std::mem::size_of::<Header>())?;
        let core = Self {
            header,
            spool: sys::spool_create()?,
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
        h.count.store(count, Ordering::Release);
        Ok(())
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
        let tail = h.tail.load(Ordering::Relaxed);
        if let Err(e) = sys::spool_write_at(&self.spool, &frame.0, tail) {
            self.unlock();
            return Err(e.into());
        }
        h.tail.store(tail + frame.0.len() as u64, Ordering::Relaxed);
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
        let h = self.h();
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
        Ok(Self {
            header,
            spool: spool.into_inner(),
        })
    }
}
