//! [`SharedVec`]: a buffer in shared memory that travels between processes without being
//! copied, the way Python's pickle protocol 5 hands out-of-band buffers over
//! `shared_memory`, or iceoryx2 loans samples.
//!
//! The elements live in an anonymous shared-memory segment of their own (a `memfd` on Linux,
//! a pagefile-backed section on Windows). Sending a `SharedVec` in a message or a process
//! argument sends the segment's handle and its length, a few bytes whatever the size; the
//! receiver maps the same memory and reads it in place. On Unix a process maps a segment
//! once: a buffer that comes back to a process that still holds it reuses that mapping. On
//! Windows a section has no cheap identity to look it up by, so a buffer that comes back is
//! mapped again (the same memory at another address; the holder count stays right).
//!
//! # Who may write
//!
//! Like an `Arc<[T]>` shared between processes: everyone reads, and a holder writes only
//! while it is the only one ([`SharedVec::get_mut`], [`SharedVec::make_mut`], `push`, ...).
//! The segment's header records who holds it: the processes that map it (by pid, each once),
//! and the messages carrying it that have been sent but not yet received. A holder that died
//! without letting go no longer counts, so a crashed reader does not pin a buffer for ever.
//! A message that is never received (its receiver died, or the send failed after encoding)
//! does: the buffer then stays read-only for its other holders, which is safe.
//!
//! A child started by the fork method holds the buffers inside its target's argument (all
//! the buffers of its parent, for a closure target, which may capture any) until it exits:
//! it also inherited copies of its parent's handles, which never drop, and cannot tell them
//! from its own. Buffers made after the fork, or sent to the child later, are not affected.
//! A process forked with `libc::fork` rather than by mp is not counted at all: do not write
//! to a buffer such a child reads.
//!
//! # Lifetime
//!
//! The memory is the kernel's: it is freed when the last process holding the segment's
//! handle or mapping lets go or dies, whatever the reason, so nothing leaks even if every
//! holder crashes. Within a process, clones share one mapping; the last one unmaps it.
//!
//! Differences from Python: Python's `SharedMemory` is named and must be unlinked by
//! someone; its buffer can be written by anyone at any time. Here there is no name to leak,
//! and writes are exclusive by construction.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use mp_ipc::handle::OwnedHandle;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Segment, SharedData, SharedError};
use crate::sys;

/// The elements start here: the first page is the header.
const DATA_OFFSET: usize = 4096;
/// "mpSVEC01", little-endian.
const MAGIC: u64 = u64::from_le_bytes(*b"mpSVEC01");
/// Holder slots in the header page after the fixed fields.
const SLOTS: usize = (DATA_OFFSET - 64) / 8;

/// The first page of a segment. Every field is atomic: other processes read and write it.
#[repr(C)]
struct Header {
    magic: AtomicU64,
    /// Elements in use.
    len: AtomicU64,
    elem_size: AtomicU64,
    elem_align: AtomicU64,
    /// A hash of the element type's name, to refuse a buffer of another type.
    type_hash: AtomicU64,
    /// Messages carrying this buffer that were encoded and not yet decoded.
    in_flight: AtomicU64,
    /// Holders that found no free slot (never considered gone).
    overflow: AtomicU64,
    _reserved: AtomicU64,
    /// `pid << 32 | mappings` of each holding process; zero is free.
    slots: [AtomicU64; SLOTS],
}

const _: () = assert!(std::mem::size_of::<Header>() <= DATA_OFFSET);

/// FNV-1a of the type's name: the same in every process running this binary.
fn type_hash<T>() -> u64 {
    std::any::type_name::<T>()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
}

/// One process's mapping of a segment, shared by all its `SharedVec`s of that segment.
struct Mapping {
    segment: Segment,
    /// Element capacity, from the size this process mapped (never from the header).
    capacity: usize,
    /// The process that counted itself as a holder through this mapping.
    owner: AtomicU64,
    key: Option<(u64, u64)>,
}

impl Mapping {
    fn header(&self) -> &Header {
        // SAFETY: every segment has at least DATA_OFFSET bytes (checked when mapped), the
        // mapping is page-aligned, and Header is made of atomics, valid for any bytes.
        unsafe { self.segment.at::<Header>(0) }
    }

    /// The length, clamped to what this process mapped (another process could write any
    /// number there).
    fn len(&self) -> usize {
        (self.header().len.load(Ordering::Acquire) as usize).min(self.capacity)
    }

    fn data(&self) -> *mut u8 {
        // SAFETY: DATA_OFFSET is within the segment (checked when mapped).
        unsafe { self.segment.as_ptr().add(DATA_OFFSET) }
    }

    /// Records `pid` as holding the segment once more.
    fn hold(&self, pid: u32) {
        let h = self.header();
        let me = u64::from(pid) << 32;
        // Our own slot first (another mapping of this process may hold one).
        for slot in &h.slots {
            let mut v = slot.load(Ordering::Acquire);
            while v & !0xffff_ffff == me && v != 0 {
                match slot.compare_exchange(v, v + 1, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => return,
                    Err(now) => v = now,
                }
            }
        }
        for slot in &h.slots {
            if slot
                .compare_exchange(0, me | 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return;
            }
        }
        h.overflow.fetch_add(1, Ordering::AcqRel);
    }

    /// Undoes one [`hold`](Self::hold) of `pid`.
    fn release(&self, pid: u32) {
        let h = self.header();
        let me = u64::from(pid) << 32;
        for slot in &h.slots {
            let mut v = slot.load(Ordering::Acquire);
            while v != 0 && v & !0xffff_ffff == me {
                let next = if v & 0xffff_ffff <= 1 { 0 } else { v - 1 };
                match slot.compare_exchange(v, next, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => return,
                    Err(now) => v = now,
                }
            }
        }
        let _ = h
            .overflow
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// Whether this mapping is the only holder anywhere: no other live process holds the
    /// segment, this process maps it once, and no message carrying it is on its way.
    /// Slots of processes that are gone are cleared on the way.
    fn sole_holder(&self) -> bool {
        let h = self.header();
        if h.in_flight.load(Ordering::Acquire) != 0 || h.overflow.load(Ordering::Acquire) != 0 {
            return false;
        }
        let me = u64::from(sys::current_pid());
        let mut mine = 0;
        for slot in &h.slots {
            let v = slot.load(Ordering::Acquire);
            if v == 0 {
                continue;
            }
            if v >> 32 == me {
                mine += v & 0xffff_ffff;
            } else if sys::pid_alive((v >> 32) as u32) {
                return false;
            } else {
                // A holder that died without letting go.
                let _ = slot.compare_exchange(v, 0, Ordering::AcqRel, Ordering::Acquire);
            }
        }
        mine == 1
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        let owner = self.owner.load(Ordering::Acquire);
        if owner == u64::from(sys::current_pid()) {
            self.release(owner as u32);
        }
        if let Some(key) = self.key {
            let mut reg = registry();
            if reg.get(&key).is_some_and(|w| w.strong_count() == 0) {
                reg.remove(&key);
            }
        }
    }
}

type Registry = HashMap<(u64, u64), Weak<Mapping>>;

/// This process's mappings, by segment identity, so a segment is mapped once.
static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

/// The registry's lock. Held across `fork` by the fork start method (see [`ForkBuffers`]).
pub(crate) struct RegistryGuard(MutexGuard<'static, Option<Registry>>);

fn registry() -> RegistryGuard {
    RegistryGuard(REGISTRY.lock().unwrap_or_else(|e| e.into_inner()))
}

impl RegistryGuard {
    fn get(&self, key: &(u64, u64)) -> Option<&Weak<Mapping>> {
        self.0.as_ref().and_then(|r| r.get(key))
    }

    fn remove(&mut self, key: &(u64, u64)) {
        if let Some(r) = self.0.as_mut() {
            r.remove(key);
        }
    }

    fn insert(&mut self, key: (u64, u64), m: &Arc<Mapping>) {
        let r = self.0.get_or_insert_with(HashMap::new);
        r.retain(|_, w| w.strong_count() > 0);
        r.insert(key, Arc::downgrade(m));
    }
}

/// The buffers a forked child holds, with the registry's lock held across the fork (so the
/// child finds the lock free). Each counts one more message in flight until the parent knows
/// the child's pid ([`ForkedBuffers::forked`]), so no holder can think itself alone meanwhile.
pub(crate) struct ForkBuffers {
    // Field order: the lock is released before the mappings drop (a drop takes the lock).
    guard: RegistryGuard,
    held: Vec<Arc<Mapping>>,
}

/// The parent's side of [`ForkBuffers`].
pub(crate) struct ForkedBuffers(Vec<Arc<Mapping>>);

/// The buffers found by [`collect_given`].
pub(crate) struct GivenBuffers(Vec<Arc<Mapping>>);

/// Takes the registry's lock before a fork. The child holds the buffers it was `given`
/// (those inside a target's argument), or, if that is not known (a closure, which may
/// capture anything), every buffer this process holds.
pub(crate) fn lock_for_fork(given: Option<GivenBuffers>) -> (ForkBuffers, ForkedBuffers) {
    let guard = registry();
    let mut held: Vec<Arc<Mapping>> = match given {
        Some(GivenBuffers(g)) => g,
        None => guard
            .0
            .iter()
            .flat_map(|r| r.values())
            .filter_map(Weak::upgrade)
            .collect(),
    };
    let mut seen = Vec::with_capacity(held.len());
    held.retain(|m| {
        let new = !seen.contains(&Arc::as_ptr(m));
        seen.push(Arc::as_ptr(m));
        new
    });
    for m in &held {
        m.header().in_flight.fetch_add(1, Ordering::AcqRel);
    }
    let parent = ForkedBuffers(held.clone());
    (ForkBuffers { guard, held }, parent)
}

impl ForkBuffers {
    /// In the forked child. It inherited every mapping, and copies of its parent's handles
    /// that never drop (the parent's own variables). It counts as a holder of the buffers
    /// it holds (its parent counted it), and lets go of them only when it exits: it cannot
    /// tell its own handles from those copies. The mappings it does not hold are forgotten,
    /// so that such a buffer sent to it later is mapped and counted anew.
    pub(crate) fn in_child(mut self) {
        let pid = u64::from(sys::current_pid());
        for m in &self.held {
            m.owner.store(pid, Ordering::Release);
        }
        let held = &self.held;
        if let Some(r) = self.guard.0.as_mut() {
            r.retain(|_, w| {
                w.upgrade()
                    .is_some_and(|m| held.iter().any(|h| Arc::ptr_eq(h, &m)))
            });
        }
    }
}

impl ForkedBuffers {
    /// In the parent, once the fork is done: the child (if there is one) holds the buffers;
    /// the fork's message-in-flight counts go.
    pub(crate) fn forked(self, child: Option<u32>) {
        for m in &self.0 {
            if let Some(pid) = child {
                m.hold(pid);
            }
            let _ = m
                .header()
                .in_flight
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        }
    }
}

thread_local! {
    /// `Some` while an argument is encoded only to learn what it holds: the buffers it
    /// encodes are listed there instead of being counted as messages in flight.
    static UNSENT: std::cell::RefCell<Option<Vec<Arc<Mapping>>>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `f` (an encoding that is not sent anywhere) without counting the buffers it
/// encodes as messages in flight.
pub(crate) fn encode_unsent<R>(f: impl FnOnce() -> R) -> R {
    let outer = UNSENT.with(|u| u.borrow().is_some());
    if outer {
        return f();
    }
    UNSENT.with(|u| *u.borrow_mut() = Some(Vec::new()));
    let r = f();
    UNSENT.with(|u| u.borrow_mut().take());
    r
}

/// Runs `f`, which encodes something with [`encode_unsent`], and returns the buffers it
/// encoded.
pub(crate) fn collect_given<R>(f: impl FnOnce() -> R) -> (R, GivenBuffers) {
    UNSENT.with(|u| *u.borrow_mut() = Some(Vec::new()));
    let r = f();
    let given = UNSENT.with(|u| u.borrow_mut().take()).unwrap_or_default();
    (r, GivenBuffers(given))
}

/// A growable array of plain data in shared memory that is sent to other processes without
/// being copied (see the [module documentation](self)): Python's pickle protocol 5
/// out-of-band buffers over `shared_memory`, as one type. [`SharedBytes`] is the bytes form.
///
/// ```
/// use mp_core::{pipe, SharedVec};
///
/// let mut v = SharedVec::<f64>::zeroed(1 << 20).unwrap();
/// v.get_mut().unwrap()[7] = 1.5; // written in place: no other holder yet
/// let (a, b) = pipe::<SharedVec<f64>>().unwrap();
/// a.send(&v).unwrap(); // sends a handle, not 8 MiB
/// let w = b.recv().unwrap(); // the same memory, read in place
/// assert_eq!(w[7], 1.5);
/// assert!(!w.is_unique()); // `v` holds it too
/// drop(v);
/// let mut w = w;
/// w.get_mut().unwrap()[0] = 2.0; // the only holder now
/// assert_eq!(w[0], 2.0);
/// ```
pub struct SharedVec<T: SharedData> {
    map: Arc<Mapping>,
    _t: PhantomData<T>,
}

/// A [`SharedVec`] of bytes.
///
/// ```
/// use std::io::Write;
/// let mut b = mp_core::SharedBytes::with_capacity(16).unwrap();
/// b.write_all(b"in shared memory").unwrap();
/// assert_eq!(&b[..], b"in shared memory");
/// ```
pub type SharedBytes = SharedVec<u8>;

impl<T: SharedData> SharedVec<T> {
    const CHECK: () = {
        assert!(
            std::mem::size_of::<T>() > 0,
            "SharedVec needs elements of non-zero size"
        );
        assert!(
            std::mem::align_of::<T>() <= DATA_OFFSET,
            "alignment above a page"
        );
    };

    /// An empty buffer with room for `capacity` elements.
    pub fn with_capacity(capacity: usize) -> Result<Self, SharedError> {
        #[allow(clippy::let_unit_value)]
        let () = Self::CHECK;
        let bytes = capacity
            .checked_mul(std::mem::size_of::<T>())
            .and_then(|b| b.checked_add(DATA_OFFSET))
            .ok_or(SharedError::InvalidSize)?;
        let segment = Segment::create(bytes)?;
        let key = sys::shm_identity(segment.handle());
        let map = Arc::new(Mapping {
            segment,
            capacity,
            owner: AtomicU64::new(u64::from(sys::current_pid())),
            key,
        });
        let h = map.header();
        h.magic.store(MAGIC, Ordering::Relaxed);
        h.elem_size
            .store(std::mem::size_of::<T>() as u64, Ordering::Relaxed);
        h.elem_align
            .store(std::mem::align_of::<T>() as u64, Ordering::Relaxed);
        h.type_hash.store(type_hash::<T>(), Ordering::Relaxed);
        map.hold(sys::current_pid());
        if let Some(key) = key {
            registry().insert(key, &map);
        }
        Ok(Self {
            map,
            _t: PhantomData,
        })
    }

    /// `len` elements, all zero (every [`SharedData`] type has the all-zero value).
    ///
    /// ```
    /// let v = mp_core::SharedVec::<u32>::zeroed(3).unwrap();
    /// assert_eq!(&v[..], &[0, 0, 0]);
    /// ```
    pub fn zeroed(len: usize) -> Result<Self, SharedError> {
        let v = Self::with_capacity(len)?;
        // The segment is created zero-filled.
        v.map.header().len.store(len as u64, Ordering::Release);
        Ok(v)
    }

    /// A copy of `items` in a new buffer.
    ///
    /// ```
    /// let v = mp_core::SharedVec::from_slice(&[1u16, 2, 3]).unwrap();
    /// assert_eq!(v.iter().sum::<u16>(), 6);
    /// ```
    pub fn from_slice(items: &[T]) -> Result<Self, SharedError> {
        let mut v = Self::with_capacity(items.len())?;
        v.extend_from_slice(items)?;
        Ok(v)
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many elements fit without moving to a bigger segment.
    pub fn capacity(&self) -> usize {
        self.map.capacity
    }

    /// The elements, read in place.
    pub fn as_slice(&self) -> &[T] {
        // SAFETY: `len()` is clamped to the mapped capacity; the data area is aligned for T
        // (page-aligned mapping + DATA_OFFSET, and align_of::<T>() <= DATA_OFFSET); T is
        // valid for every bit pattern; nobody writes while the buffer has several holders
        // (writes need `&mut self` and `sole_holder`), and it stays mapped while `self` lives.
        unsafe { std::slice::from_raw_parts(self.map.data().cast::<T>(), self.len()) }
    }

    /// Whether this is the only holder of the buffer in any process (see the
    /// [module documentation](self)): the condition for writing.
    ///
    /// ```
    /// let v = mp_core::SharedVec::<u8>::zeroed(4).unwrap();
    /// assert!(v.is_unique());
    /// let w = v.clone();
    /// assert!(!v.is_unique() && !w.is_unique());
    /// ```
    pub fn is_unique(&self) -> bool {
        Arc::strong_count(&self.map) == 1 && self.map.sole_holder()
    }

    /// The elements, writable, if this is the only holder (like `Arc::get_mut`).
    pub fn get_mut(&mut self) -> Option<&mut [T]> {
        if !self.is_unique() {
            return None;
        }
        let len = self.len();
        // SAFETY: as in `as_slice`, and nobody else can read or write: this is the only
        // holder in any process, and `&mut self` keeps it so while the borrow lives.
        Some(unsafe { std::slice::from_raw_parts_mut(self.map.data().cast::<T>(), len) })
    }

    /// The elements, writable: in place if this is the only holder, otherwise after copying
    /// them into a buffer of this handle's own (like `Arc::make_mut`).
    ///
    /// ```
    /// let mut v = mp_core::SharedVec::from_slice(&[1u8, 2]).unwrap();
    /// let keep = v.clone();
    /// v.make_mut().unwrap()[0] = 9; // copied: `keep` still holds the original
    /// assert_eq!((&v[..], &keep[..]), (&[9u8, 2][..], &[1u8, 2][..]));
    /// ```
    pub fn make_mut(&mut self) -> Result<&mut [T], SharedError> {
        if !self.is_unique() {
            *self = self.copy_with_capacity(self.capacity())?;
        }
        self.get_mut().ok_or(SharedError::NotUnique)
    }

    fn copy_with_capacity(&self, capacity: usize) -> Result<Self, SharedError> {
        let mut v = Self::with_capacity(capacity)?;
        v.extend_from_slice(self.as_slice())?;
        Ok(v)
    }

    /// Makes room for `additional` more elements (only holder only), moving to a bigger
    /// segment if needed.
    fn reserve(&mut self, additional: usize) -> Result<(), SharedError> {
        if !self.is_unique() {
            return Err(SharedError::NotUnique);
        }
        let need = self
            .len()
            .checked_add(additional)
            .ok_or(SharedError::InvalidSize)?;
        if need > self.capacity() {
            let cap = need.max(self.capacity().saturating_mul(2)).max(8);
            *self = self.copy_with_capacity(cap)?;
        }
        Ok(())
    }

    /// Appends an element, if this is the only holder ([`SharedError::NotUnique`]
    /// otherwise). Grows like a `Vec`.
    ///
    /// ```
    /// let mut v = mp_core::SharedVec::<u64>::with_capacity(1).unwrap();
    /// v.push(1).unwrap();
    /// v.push(2).unwrap(); // moved to a bigger segment
    /// assert_eq!(&v[..], &[1, 2]);
    /// ```
    pub fn push(&mut self, value: T) -> Result<(), SharedError> {
        self.extend_from_slice(std::slice::from_ref(&value))
    }

    /// Appends `items`, if this is the only holder.
    pub fn extend_from_slice(&mut self, items: &[T]) -> Result<(), SharedError> {
        self.reserve(items.len())?;
        let len = self.len();
        // SAFETY: reserve made room for items.len() more within the mapped capacity, and
        // this is the only holder (checked by reserve; `&mut self` keeps it so).
        unsafe {
            std::ptr::copy_nonoverlapping(
                items.as_ptr(),
                self.map.data().cast::<T>().add(len),
                items.len(),
            );
        }
        self.map
            .header()
            .len
            .store((len + items.len()) as u64, Ordering::Release);
        Ok(())
    }

    /// Shortens to `len` elements (nothing happens if it is not shorter), if this is the
    /// only holder.
    pub fn truncate(&mut self, len: usize) -> Result<(), SharedError> {
        if !self.is_unique() {
            return Err(SharedError::NotUnique);
        }
        if len < self.len() {
            self.map.header().len.store(len as u64, Ordering::Release);
        }
        Ok(())
    }

    /// How many holders the buffer has: processes mapping it (each once) plus messages on
    /// their way. For diagnostics; it may change at any moment.
    pub fn holders(&self) -> u64 {
        let h = self.map.header();
        let procs = h
            .slots
            .iter()
            .filter(|s| s.load(Ordering::Acquire) != 0)
            .count() as u64;
        procs + h.overflow.load(Ordering::Acquire) + h.in_flight.load(Ordering::Acquire)
    }

    /// Rebuilds a buffer that arrived in a message: reuses this process's mapping of the
    /// segment if it has one, otherwise maps it and checks that it holds `T`s.
    fn receive(handle: OwnedHandle, bytes: usize) -> Result<Self, String> {
        let key = sys::shm_identity(&handle);
        let me = sys::current_pid();
        let known = key.and_then(|k| registry().get(&k).and_then(Weak::upgrade));
        if let Some(map) = known {
            // Already held here: the message's count goes, this process's stays.
            let _ = map
                .header()
                .in_flight
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
            return Ok(Self {
                map,
                _t: PhantomData,
            });
        }
        if bytes < DATA_OFFSET {
            return Err(format!("a shared buffer of {bytes} bytes has no header"));
        }
        let segment = Segment::open(handle, bytes).map_err(|e| e.to_string())?;
        let mut map = Mapping {
            capacity: (bytes - DATA_OFFSET) / std::mem::size_of::<T>(),
            segment,
            // Not counted as a holder (nor registered) until it is checked.
            owner: AtomicU64::new(0),
            key: None,
        };
        let h = map.header();
        if h.magic.load(Ordering::Acquire) != MAGIC {
            return Err("the segment is not a shared buffer".into());
        }
        let found = (
            h.elem_size.load(Ordering::Acquire),
            h.elem_align.load(Ordering::Acquire),
            h.type_hash.load(Ordering::Acquire),
        );
        let want = (
            std::mem::size_of::<T>() as u64,
            std::mem::align_of::<T>() as u64,
            type_hash::<T>(),
        );
        if found != want {
            return Err(format!(
                "the shared buffer does not hold elements of type {}",
                std::any::type_name::<T>()
            ));
        }
        map.hold(me);
        map.owner.store(u64::from(me), Ordering::Release);
        let _ = h
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        map.key = key;
        let map = Arc::new(map);
        if let Some(key) = key {
            // Another thread may have mapped it meanwhile: both mappings count, either is
            // found; the registry keeps the newer.
            registry().insert(key, &map);
        }
        Ok(Self {
            map,
            _t: PhantomData,
        })
    }
}

impl<T: SharedData> Clone for SharedVec<T> {
    /// Another handle on the same memory (no copy); neither can write while both live.
    fn clone(&self) -> Self {
        Self {
            map: self.map.clone(),
            _t: PhantomData,
        }
    }
}

impl<T: SharedData> Deref for SharedVec<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        self.as_slice()
    }
}

impl<T: SharedData> AsRef<[T]> for SharedVec<T> {
    fn as_ref(&self) -> &[T] {
        self.as_slice()
    }
}

impl<T: SharedData + std::fmt::Debug> std::fmt::Debug for SharedVec<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<T: SharedData + PartialEq> PartialEq for SharedVec<T> {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

/// Appends, as a `Vec<u8>` does, while this is the only holder (an error otherwise).
impl std::io::Write for SharedVec<u8> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.extend_from_slice(buf)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<T: SharedData> Serialize for SharedVec<T> {
    /// The segment's handle (through the handle outbox: only inside a message or a process
    /// argument) and its mapped size. Counts the message as a holder until it is received.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // The wire form of a segment: its handle and its mapped size.
        let done = self.map.segment.serialize(s)?;
        let listed = UNSENT.with(|u| match u.borrow_mut().as_mut() {
            Some(list) => {
                list.push(self.map.clone());
                true
            }
            None => false,
        });
        if !listed {
            self.map.header().in_flight.fetch_add(1, Ordering::AcqRel);
        }
        Ok(done)
    }
}

impl<'de, T: SharedData> Deserialize<'de> for SharedVec<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (handle, bytes) = <(crate::OsHandle, u64)>::deserialize(d)?;
        let bytes = usize::try_from(bytes).map_err(D::Error::custom)?;
        Self::receive(handle.into_inner(), bytes).map_err(D::Error::custom)
    }
}
