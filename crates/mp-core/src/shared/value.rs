//! `Value`, `Array`, `RawValue`, `RawArray`: Python's `multiprocessing.sharedctypes`.
//!
//! Data races: the raw forms have no lock. Their reads and writes are `read_volatile` /
//! `write_volatile` of whole elements through raw pointers; no `&` or `&mut` into the shared
//! memory is ever created by them, so the compiler neither caches nor elides them. They are
//! not atomic, though: an element written by one process while another reads it may be seen
//! half-written (torn), and read-modify-write sequences (`x = x + 1`) lose updates. Keeping
//! several processes from doing that is the user's job, exactly as with Python's `RawValue`:
//! use the locked forms, or a [`Lock`] of your own. The locked forms give out `&mut T` /
//! `&mut [T]` only while their lock is held; that is sound as long as nobody touches the same
//! memory without the lock (for instance through [`Value::get_obj`]).
//!
//! Locks: as in Python, a `Value` or `Array` made without a lock gets a recursive one
//! ([`RLock`](crate::RLock)), so `get`/`set` work while the same thread holds
//! [`get_lock`](Value::get_lock) (Python's `with v.get_lock(): v.value += 1`); `with_lock`
//! takes a plain [`Lock`] instead (then, as in Python, taking it twice deadlocks). The guard
//! of [`Value::lock`] / [`Array::lock`] hands out `&mut` access, so while it lives the same
//! thread may not read or write the value another way: `get`, `set` or a second `lock` on it
//! then panic (as `RefCell` does), rather than alias the guard's `&mut`.

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Segment, SharedData, SharedError};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::sync::{thread_owner_id, AnyLock, AnyLockError, AnyLockGuard};

/// `len` elements of `T` in a segment of their own.
struct Cells<T> {
    segment: Arc<Segment>,
    len: usize,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for Cells<T> {
    fn clone(&self) -> Self {
        Self {
            segment: self.segment.clone(),
            len: self.len,
            _t: PhantomData,
        }
    }
}

/// Where the guard mark of `len` elements of `T` lives: the first 8-byte boundary after them.
fn mark_offset<T>(len: usize) -> Option<usize> {
    len.checked_mul(std::mem::size_of::<T>())?
        .checked_add(7)
        .map(|e| e & !7)
}

impl<T> Cells<T> {
    /// The thread (`sync::thread_owner_id`) holding a [`ValueGuard`] or [`ArrayGuard`] on
    /// these elements, 0 if none: written only under the lock, by its holder.
    fn mark(&self) -> &AtomicU64 {
        let at = mark_offset::<T>(self.len).expect("checked when the cells were made");
        // SAFETY: `Cells` are always made with room for the mark at this 8-aligned offset
        // (page-aligned base); an AtomicU64 is valid for any bits.
        unsafe { self.segment.at(at) }
    }
}

impl<T: SharedData> Cells<T> {
    fn zeroed(len: usize) -> Result<Self, SharedError> {
        assert!(std::mem::align_of::<T>() <= 4096, "alignment above a page");
        let bytes = mark_offset::<T>(len)
            .and_then(|at| at.checked_add(8))
            .ok_or(SharedError::InvalidSize)?;
        Ok(Self {
            segment: Arc::new(Segment::create(bytes)?),
            len,
            _t: PhantomData,
        })
    }

    fn from_slice(items: &[T]) -> Result<Self, SharedError> {
        let cells = Self::zeroed(items.len())?;
        for (i, v) in items.iter().enumerate() {
            cells.write(i, *v);
        }
        Ok(cells)
    }

    fn ptr(&self) -> *mut T {
        self.segment.as_ptr().cast()
    }

    fn read(&self, i: usize) -> T {
        assert!(i < self.len);
        // SAFETY: in bounds of the segment, aligned (page-aligned base), T valid for any bits.
        unsafe { self.ptr().add(i).read_volatile() }
    }

    fn write(&self, i: usize, v: T) {
        assert!(i < self.len);
        // SAFETY: as in `read`.
        unsafe { self.ptr().add(i).write_volatile(v) }
    }
}

impl<T> Serialize for Cells<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (&*self.segment, self.len as u64).serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for Cells<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (segment, len) = <(Segment, u64)>::deserialize(d)?;
        let len = usize::try_from(len).map_err(D::Error::custom)?;
        let need = mark_offset::<T>(len).and_then(|at| at.checked_add(8));
        if !matches!(need, Some(n) if n <= segment.len()) {
            return Err(D::Error::custom(
                "shared array longer than its segment (wrong element type?)",
            ));
        }
        Ok(Self {
            segment: Arc::new(segment),
            len,
            _t: PhantomData,
        })
    }
}

/// The lock's holder died while holding it: the data it protects may be half-updated. The
/// guard inside holds the lock; check the data, then use it (like `std::sync::PoisonError`).
#[derive(thiserror::Error)]
#[error("the previous holder of the lock died while holding it")]
pub struct OwnerDied<G>(G);

impl<G> OwnerDied<G> {
    /// The guard (the lock is held).
    pub fn into_inner(self) -> G {
        self.0
    }
}

impl<G> std::fmt::Debug for OwnerDied<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OwnerDied(..)")
    }
}

/// One level of a value's or array's lock, taken by [`Value::get`] and friends: panics if
/// this thread holds a data guard on the same elements (its `&mut` must not be aliased).
fn level<'a, T>(lock: &'a AnyLock, cells: &Cells<T>, what: &str) -> AnyLockGuard<'a> {
    let g = lock.acquire_anyway();
    if cells.mark().load(Ordering::Relaxed) == thread_owner_id() {
        drop(g);
        panic!(
            "this thread holds the {what}'s guard (from `lock()`): read and write through it, \
             or drop it first"
        );
    }
    g
}

/// Takes a data guard: marks the elements as borrowed by this thread, turning a dead holder
/// into [`OwnerDied`] around the guard `make` builds.
fn lock_with<'a, T, G>(
    lock: &'a AnyLock,
    cells: &'a Cells<T>,
    what: &str,
    make: impl FnOnce(DataLock<'a>) -> G,
) -> Result<G, OwnerDied<G>> {
    let (g, died) = match lock.acquire() {
        Ok(g) => (g, false),
        Err(AnyLockError::OwnerDied(g)) => (g, true),
        Err(e) => unreachable!("an acquisition without timeout cannot fail with {e}"),
    };
    let mark = cells.mark();
    let me = thread_owner_id();
    if mark.load(Ordering::Relaxed) == me {
        drop(g);
        panic!("this thread already holds the {what}'s guard (from `lock()`): use that one");
    }
    mark.store(me, Ordering::Relaxed);
    let data = DataLock { _level: g, mark };
    if died {
        Err(OwnerDied(make(data)))
    } else {
        Ok(make(data))
    }
}

/// A level of the lock plus the elements' borrow mark, cleared (before the level is
/// released) when dropped.
struct DataLock<'a> {
    _level: AnyLockGuard<'a>,
    mark: &'a AtomicU64,
}

impl Drop for DataLock<'_> {
    fn drop(&mut self) {
        self.mark.store(0, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------------------------

/// A single `T` in shared memory, without a lock: Python's `RawValue`.
///
/// Reads and writes are single volatile copies (see the [module docs](self) on data races).
///
/// ```
/// let v = mp_core::RawValue::new(4343i32).unwrap();
/// v.set(24234);
/// assert_eq!(v.get(), 24234);
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct RawValue<T> {
    cells: Cells<T>,
}

impl<T: SharedData> RawValue<T> {
    /// A new shared value.
    pub fn new(v: T) -> Result<Self, SharedError> {
        Ok(Self {
            cells: Cells::from_slice(&[v])?,
        })
    }

    /// Reads the value.
    pub fn get(&self) -> T {
        self.cells.read(0)
    }

    /// Writes the value.
    pub fn set(&self, v: T) {
        self.cells.write(0, v)
    }

    /// The address of the value in this process (for atomics or FFI; see the module docs).
    pub fn as_ptr(&self) -> *mut T {
        self.cells.ptr()
    }
}

impl<T: SharedData + std::fmt::Debug> std::fmt::Debug for RawValue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RawValue").field(&self.get()).finish()
    }
}

/// A single `T` in shared memory with a process-shared lock: Python's `Value`.
///
/// [`get`](Self::get) and [`set`](Self::set) take the lock for one read or write (as
/// Python's `.value` does); [`lock`](Self::lock) holds it for a read-modify-write.
///
/// ```
/// use mp_core::{Process, Value};
///
/// fn add_one(v: Value<u64>) {
///     *v.lock().unwrap() += 1;
/// }
///
/// let v = Value::new(41u64).unwrap();
/// let mut p = Process::new(add_one, v.clone());
/// p.start().unwrap();
/// p.join().unwrap();
/// assert_eq!(v.get(), 42);
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Value<T> {
    cells: Cells<T>,
    lock: AnyLock,
}

/// Holds a [`Value`]'s lock and gives access to the value; releases the lock when dropped.
pub struct ValueGuard<'a, T> {
    _lock: DataLock<'a>,
    ptr: *mut T,
    _t: PhantomData<&'a mut T>,
}

impl<T: SharedData> Value<T> {
    /// A new shared value with a new recursive lock (Python's `Value(t, v)`).
    ///
    /// ```
    /// let v = mp_core::Value::new(1i32).unwrap();
    /// let _held = v.get_lock().acquire().unwrap();
    /// v.set(v.get() + 1); // the lock is recursive: no deadlock
    /// assert_eq!(v.get(), 2);
    /// ```
    pub fn new(v: T) -> Result<Self, SharedError> {
        Self::with_lock(v, AnyLock::new()?)
    }

    /// A new shared value guarded by `lock`: a [`Lock`](crate::Lock) (Python's
    /// `Value(t, v, lock=Lock())`) or an [`RLock`](crate::RLock) shared with other values.
    ///
    /// ```
    /// let v = mp_core::Value::with_lock(1u8, mp_core::Lock::new().unwrap()).unwrap();
    /// assert!(!v.get_lock().is_recursive());
    /// ```
    pub fn with_lock(v: T, lock: impl Into<AnyLock>) -> Result<Self, SharedError> {
        Ok(Self {
            cells: Cells::from_slice(&[v])?,
            lock: lock.into(),
        })
    }

    /// Reads the value under the lock. A dead previous holder is ignored (use
    /// [`lock`](Self::lock) to be told).
    ///
    /// # Panics
    /// If this thread holds the value's [`ValueGuard`] (read through it instead).
    pub fn get(&self) -> T {
        let _level = level(&self.lock, &self.cells, "value");
        self.cells.read(0)
    }

    /// Writes the value under the lock.
    ///
    /// # Panics
    /// If this thread holds the value's [`ValueGuard`] (write through it instead).
    pub fn set(&self, v: T) {
        let _level = level(&self.lock, &self.cells, "value");
        self.cells.write(0, v)
    }

    /// Takes the lock; the guard derefs to the value.
    ///
    /// # Panics
    /// If this thread already holds a guard of this value (possible with the default
    /// recursive lock; a plain lock would deadlock instead).
    pub fn lock(&self) -> Result<ValueGuard<'_, T>, OwnerDied<ValueGuard<'_, T>>> {
        lock_with(&self.lock, &self.cells, "value", |g| ValueGuard {
            _lock: g,
            ptr: self.cells.ptr(),
            _t: PhantomData,
        })
    }

    /// The lock (Python's `get_lock()`).
    pub fn get_lock(&self) -> &AnyLock {
        &self.lock
    }

    /// The same memory without the lock (Python's `get_obj()`).
    pub fn get_obj(&self) -> RawValue<T> {
        RawValue {
            cells: self.cells.clone(),
        }
    }
}

impl<T: SharedData + std::fmt::Debug> std::fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Value").field(&self.get()).finish()
    }
}

impl<T> Deref for ValueGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the lock is held, so no holder of the lock accesses the value meanwhile;
        // the pointer is valid and aligned while the guard borrows the Value.
        unsafe { &*self.ptr }
    }
}

impl<T> DerefMut for ValueGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes this the only reference.
        unsafe { &mut *self.ptr }
    }
}

// ---------------------------------------------------------------------------------------------

/// A fixed-length array of `T` in shared memory, without a lock: Python's `RawArray`.
///
/// ```
/// let a = mp_core::RawArray::from_slice(&[1i32, 2, 3]).unwrap();
/// a.set(1, 20);
/// assert_eq!(a.to_vec(), [1, 20, 3]);
/// assert_eq!(a.get(3), None);
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct RawArray<T> {
    cells: Cells<T>,
}

impl<T: SharedData> RawArray<T> {
    /// `len` zero elements (all-zero bytes; fresh memory, whatever was used before).
    pub fn zeroed(len: usize) -> Result<Self, SharedError> {
        Ok(Self {
            cells: Cells::zeroed(len)?,
        })
    }

    /// A copy of `items`.
    pub fn from_slice(items: &[T]) -> Result<Self, SharedError> {
        Ok(Self {
            cells: Cells::from_slice(items)?,
        })
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.cells.len
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.cells.len == 0
    }

    /// Element `i`, or `None` past the end.
    pub fn get(&self, i: usize) -> Option<T> {
        (i < self.len()).then(|| self.cells.read(i))
    }

    /// Writes element `i`.
    ///
    /// # Panics
    /// If `i` is out of range, like slice indexing.
    pub fn set(&self, i: usize, v: T) {
        assert!(
            i < self.len(),
            "index {i} out of range for length {}",
            self.len()
        );
        self.cells.write(i, v)
    }

    /// Writes `items` from element `start` on.
    ///
    /// # Panics
    /// If they do not fit.
    pub fn write_at(&self, start: usize, items: &[T]) {
        assert!(start
            .checked_add(items.len())
            .is_some_and(|e| e <= self.len()));
        for (k, v) in items.iter().enumerate() {
            self.cells.write(start + k, *v);
        }
    }

    /// A copy of all elements.
    pub fn to_vec(&self) -> Vec<T> {
        (0..self.len()).map(|i| self.cells.read(i)).collect()
    }

    /// The address of the first element in this process (see the module docs).
    pub fn as_ptr(&self) -> *mut T {
        self.cells.ptr()
    }
}

impl<T: SharedData + std::fmt::Debug> std::fmt::Debug for RawArray<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RawArray").field(&self.to_vec()).finish()
    }
}

/// A fixed-length array of `T` in shared memory with a process-shared lock: Python's `Array`.
///
/// [`lock`](Self::lock) gives a guard that derefs to `[T]`: index, slice, iterate, assign
/// slices, all under the lock.
///
/// ```
/// let a = mp_core::Array::<i32>::zeroed(10).unwrap();
/// {
///     let mut s = a.lock().unwrap();
///     for (i, x) in s.iter_mut().enumerate() { *x = i as i32; }
///     s[4..8].copy_from_slice(&[0, 0, 0, 0]);
/// }
/// assert_eq!(&a.lock().unwrap()[2..7], &[2, 3, 0, 0, 0]);
/// assert_eq!(a.len(), 10);
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Array<T> {
    cells: Cells<T>,
    lock: AnyLock,
}

/// Holds an [`Array`]'s lock and gives access to its elements as a slice.
pub struct ArrayGuard<'a, T> {
    _lock: DataLock<'a>,
    ptr: *mut T,
    len: usize,
    _t: PhantomData<&'a mut [T]>,
}

impl<T: SharedData> Array<T> {
    /// `len` zero elements with a new recursive lock.
    pub fn zeroed(len: usize) -> Result<Self, SharedError> {
        Ok(Self {
            cells: Cells::zeroed(len)?,
            lock: AnyLock::new()?,
        })
    }

    /// A copy of `items` with a new recursive lock.
    pub fn from_slice(items: &[T]) -> Result<Self, SharedError> {
        Self::from_slice_with_lock(items, AnyLock::new()?)
    }

    /// A copy of `items` guarded by `lock`, a [`Lock`](crate::Lock) or an
    /// [`RLock`](crate::RLock) (Python's `Array(t, seq, lock=...)`).
    ///
    /// ```
    /// let a = mp_core::Array::from_slice_with_lock(&[1u8, 2], mp_core::Lock::new().unwrap()).unwrap();
    /// assert_eq!(a.to_vec(), [1, 2]);
    /// ```
    pub fn from_slice_with_lock(
        items: &[T],
        lock: impl Into<AnyLock>,
    ) -> Result<Self, SharedError> {
        Ok(Self {
            cells: Cells::from_slice(items)?,
            lock: lock.into(),
        })
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.cells.len
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.cells.len == 0
    }

    /// Element `i` read under the lock, or `None` past the end.
    ///
    /// # Panics
    /// If this thread holds the array's [`ArrayGuard`].
    pub fn get(&self, i: usize) -> Option<T> {
        let _level = level(&self.lock, &self.cells, "array");
        (i < self.len()).then(|| self.cells.read(i))
    }

    /// Writes element `i` under the lock.
    ///
    /// # Panics
    /// If `i` is out of range, or this thread holds the array's [`ArrayGuard`].
    pub fn set(&self, i: usize, v: T) {
        assert!(
            i < self.len(),
            "index {i} out of range for length {}",
            self.len()
        );
        let _level = level(&self.lock, &self.cells, "array");
        self.cells.write(i, v)
    }

    /// A copy of all elements, taken under the lock.
    ///
    /// # Panics
    /// If this thread holds the array's [`ArrayGuard`].
    pub fn to_vec(&self) -> Vec<T> {
        let _level = level(&self.lock, &self.cells, "array");
        (0..self.len()).map(|i| self.cells.read(i)).collect()
    }

    /// Takes the lock; the guard derefs to `[T]`.
    ///
    /// # Panics
    /// If this thread already holds a guard of this array (possible with the default
    /// recursive lock; a plain lock would deadlock instead).
    pub fn lock(&self) -> Result<ArrayGuard<'_, T>, OwnerDied<ArrayGuard<'_, T>>> {
        lock_with(&self.lock, &self.cells, "array", |g| ArrayGuard {
            _lock: g,
            ptr: self.cells.ptr(),
            len: self.cells.len,
            _t: PhantomData,
        })
    }

    /// The lock (Python's `get_lock()`).
    pub fn get_lock(&self) -> &AnyLock {
        &self.lock
    }

    /// The same memory without the lock (Python's `get_obj()`).
    pub fn get_obj(&self) -> RawArray<T> {
        RawArray {
            cells: self.cells.clone(),
        }
    }
}

impl<T: SharedData + std::fmt::Debug> std::fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Array").field(&self.to_vec()).finish()
    }
}

impl<T> Deref for ArrayGuard<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: the lock is held; `len` elements are in bounds of the segment and aligned.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl<T> DerefMut for ArrayGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        if self.len == 0 {
            return &mut [];
        }
        // SAFETY: as in `deref`; `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}
