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

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Segment, SharedData, SharedError};
use crate::sync::{Lock, LockError, LockGuard};

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

impl<T: SharedData> Cells<T> {
    fn zeroed(len: usize) -> Result<Self, SharedError> {
        assert!(std::mem::align_of::<T>() <= 4096, "alignment above a page");
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
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
        let need = len.checked_mul(std::mem::size_of::<T>());
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

/// Locks, turning a dead holder into [`OwnerDied`] around the guard `make` builds.
fn lock_with<'a, G>(
    lock: &'a Lock,
    make: impl FnOnce(LockGuard<'a>) -> G,
) -> Result<G, OwnerDied<G>> {
    match lock.acquire() {
        Ok(g) => Ok(make(g)),
        Err(LockError::OwnerDied(g)) => Err(OwnerDied(make(g))),
        Err(e) => unreachable!("an acquisition without timeout cannot fail with {e}"),
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
    lock: Lock,
}

/// Holds a [`Value`]'s lock and gives access to the value; releases the lock when dropped.
pub struct ValueGuard<'a, T> {
    _lock: LockGuard<'a>,
    ptr: *mut T,
    _t: PhantomData<&'a mut T>,
}

impl<T: SharedData> Value<T> {
    /// A new shared value with a new lock.
    pub fn new(v: T) -> Result<Self, SharedError> {
        Self::with_lock(v, Lock::new()?)
    }

    /// A new shared value guarded by `lock` (shared with other values, say).
    pub fn with_lock(v: T, lock: Lock) -> Result<Self, SharedError> {
        Ok(Self {
            cells: Cells::from_slice(&[v])?,
            lock,
        })
    }

    /// Reads the value under the lock. A dead previous holder is ignored (use
    /// [`lock`](Self::lock) to be told).
    pub fn get(&self) -> T {
        *self.lock().unwrap_or_else(OwnerDied::into_inner)
    }

    /// Writes the value under the lock.
    pub fn set(&self, v: T) {
        *self.lock().unwrap_or_else(OwnerDied::into_inner) = v;
    }

    /// Takes the lock; the guard derefs to the value.
    pub fn lock(&self) -> Result<ValueGuard<'_, T>, OwnerDied<ValueGuard<'_, T>>> {
        lock_with(&self.lock, |g| ValueGuard {
            _lock: g,
            ptr: self.cells.ptr(),
            _t: PhantomData,
        })
    }

    /// The lock (Python's `get_lock()`).
    pub fn get_lock(&self) -> &Lock {
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
    lock: Lock,
}

/// Holds an [`Array`]'s lock and gives access to its elements as a slice.
pub struct ArrayGuard<'a, T> {
    _lock: LockGuard<'a>,
    ptr: *mut T,
    len: usize,
    _t: PhantomData<&'a mut [T]>,
}

impl<T: SharedData> Array<T> {
    /// `len` zero elements with a new lock.
    pub fn zeroed(len: usize) -> Result<Self, SharedError> {
        Ok(Self {
            cells: Cells::zeroed(len)?,
            lock: Lock::new()?,
        })
    }

    /// A copy of `items` with a new lock.
    pub fn from_slice(items: &[T]) -> Result<Self, SharedError> {
        Self::from_slice_with_lock(items, Lock::new()?)
    }

    /// A copy of `items` guarded by `lock`.
    pub fn from_slice_with_lock(items: &[T], lock: Lock) -> Result<Self, SharedError> {
        Ok(Self {
            cells: Cells::from_slice(items)?,
            lock,
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
    pub fn get(&self, i: usize) -> Option<T> {
        self.lock()
            .unwrap_or_else(OwnerDied::into_inner)
            .get(i)
            .copied()
    }

    /// Writes element `i` under the lock.
    ///
    /// # Panics
    /// If `i` is out of range.
    pub fn set(&self, i: usize, v: T) {
        self.lock().unwrap_or_else(OwnerDied::into_inner)[i] = v;
    }

    /// A copy of all elements, taken under the lock.
    pub fn to_vec(&self) -> Vec<T> {
        self.lock().unwrap_or_else(OwnerDied::into_inner).to_vec()
    }

    /// Takes the lock; the guard derefs to `[T]`.
    pub fn lock(&self) -> Result<ArrayGuard<'_, T>, OwnerDied<ArrayGuard<'_, T>>> {
        lock_with(&self.lock, |g| ArrayGuard {
            _lock: g,
            ptr: self.cells.ptr(),
            len: self.cells.len,
            _t: PhantomData,
        })
    }

    /// The lock (Python's `get_lock()`).
    pub fn get_lock(&self) -> &Lock {
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
