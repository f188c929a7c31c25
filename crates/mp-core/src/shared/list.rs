//! `ShareableList`: Python's `multiprocessing.shared_memory.ShareableList`, typed.

use std::marker::PhantomData;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{SharedData, SharedError, SharedMemory};

const MAGIC: u32 = u32::from_le_bytes(*b"MPSL");

/// A fixed-length list of `T` in a named [`SharedMemory`] segment, which other processes open
/// by name (or receive as an argument): Python's `ShareableList`, with one element type.
///
/// Each element has fixed storage (`size_of::<T>()` bytes); for text use [`ShortStr<N>`],
/// which refuses a value longer than its `N` bytes instead of spilling into the next element.
/// Python's list may mix types per slot; here the element type is fixed and checked when a
/// list is opened (by size; the name says which list it is).
///
/// Like Python's, it has no lock: reads and writes are single volatile copies of an element,
/// so a reader may see an element half-written by a concurrent writer. Use a
/// [`Lock`](crate::Lock) to order them.
///
/// ```
/// use mp_core::{ShareableList, ShortStr};
/// type S = ShortStr<8>;
/// let l = ShareableList::create(&[S::new("howdy")?, S::new("HoWdY")?])?;
/// let other = ShareableList::<S>::open(l.shm().name())?;
/// other.set(1, S::new("hello")?)?;
/// assert_eq!(l.get(1)?.as_str(), Some("hello"));
/// assert!(l.set(0, S::new("12345678")?).is_ok());
/// assert!(S::new("123456789").is_err());
/// assert_eq!(l.index(&S::new("hello")?), Some(1));
/// l.shm().unlink()?;
/// # Ok::<(), mp_core::SharedError>(())
/// ```
///
/// [`ShortStr<N>`]: crate::ShortStr
pub struct ShareableList<T> {
    shm: SharedMemory,
    len: usize,
    _t: PhantomData<fn() -> T>,
}

impl<T: SharedData> ShareableList<T> {
    /// Where the elements start: after the 16-byte header, aligned for `T`.
    fn data_offset() -> usize {
        16usize.next_multiple_of(std::mem::align_of::<T>())
    }

    fn header(&self) -> (u32, u32, u64) {
        let mut h = [0u8; 16];
        self.shm.read_at(0, &mut h);
        (
            u32::from_le_bytes(h[0..4].try_into().expect("4 bytes")),
            u32::from_le_bytes(h[4..8].try_into().expect("4 bytes")),
            u64::from_le_bytes(h[8..16].try_into().expect("8 bytes")),
        )
    }

    /// A new list holding `items`, under a generated name.
    pub fn create(items: &[T]) -> Result<Self, SharedError> {
        Self::init(SharedMemory::create(Self::bytes_for(items.len())?)?, items)
    }

    /// A new list holding `items`, named `name`.
    pub fn create_named(name: &str, items: &[T]) -> Result<Self, SharedError> {
        Self::init(
            SharedMemory::create_named(name, Self::bytes_for(items.len())?)?,
            items,
        )
    }

    fn bytes_for(len: usize) -> Result<usize, SharedError> {
        len.checked_mul(std::mem::size_of::<T>())
            .and_then(|n| n.checked_add(Self::data_offset()))
            .ok_or(SharedError::InvalidSize)
    }

    fn init(shm: SharedMemory, items: &[T]) -> Result<Self, SharedError> {
        let list = Self {
            shm,
            len: items.len(),
            _t: PhantomData,
        };
        for (i, v) in items.iter().enumerate() {
            list.write(i, *v);
        }
        let mut h = [0u8; 16];
        h[4..8].copy_from_slice(&(std::mem::size_of::<T>() as u32).to_le_bytes());
        h[8..16].copy_from_slice(&(items.len() as u64).to_le_bytes());
        list.shm.write_at(0, &h);
        // The magic last: a list is complete once it carries it.
        list.shm.write_at(0, &MAGIC.to_le_bytes());
        Ok(list)
    }

    /// Opens the list `name`, checking that it is a list of elements of `T`'s size.
    pub fn open(name: &str) -> Result<Self, SharedError> {
        Self::from_shm(SharedMemory::open(name)?)
    }

    fn from_shm(shm: SharedMemory) -> Result<Self, SharedError> {
        let name = shm.name().to_string();
        if shm.size() < 16 {
            return Err(SharedError::Mismatch(format!("{name:?} is too small")));
        }
        let mut list = Self {
            shm,
            len: 0,
            _t: PhantomData,
        };
        let (magic, size, len) = list.header();
        if magic != MAGIC {
            return Err(SharedError::Mismatch(format!(
                "{name:?} is not a shareable list"
            )));
        }
        if size as usize != std::mem::size_of::<T>() {
            return Err(SharedError::Mismatch(format!(
                "{name:?} holds elements of {size} bytes, not {}",
                std::mem::size_of::<T>()
            )));
        }
        let len = usize::try_from(len).map_err(|_| SharedError::InvalidSize)?;
        if !matches!(Self::bytes_for(len), Ok(n) if n <= list.shm.size()) {
            return Err(SharedError::Mismatch(format!(
                "{name:?} is shorter than its header says"
            )));
        }
        list.len = len;
        Ok(list)
    }

    fn ptr(&self, i: usize) -> *mut T {
        debug_assert!(i < self.len);
        // SAFETY: within the segment (checked at creation/opening), aligned for T (the
        // segment is page-aligned and the offset a multiple of T's alignment).
        unsafe {
            self.shm
                .as_mut_ptr()
                .add(Self::data_offset())
                .cast::<T>()
                .add(i)
        }
    }

    fn write(&self, i: usize, v: T) {
        // SAFETY: see `ptr`; a volatile write of plain data.
        unsafe { self.ptr(i).write_volatile(v) }
    }

    fn check(&self, i: usize) -> Result<(), SharedError> {
        if i < self.len {
            Ok(())
        } else {
            Err(SharedError::IndexOutOfRange {
                index: i,
                len: self.len,
            })
        }
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Element `i`; [`SharedError::IndexOutOfRange`] past the end.
    pub fn get(&self, i: usize) -> Result<T, SharedError> {
        self.check(i)?;
        // SAFETY: see `ptr`; a volatile read of plain data (any bits are a T).
        Ok(unsafe { self.ptr(i).read_volatile() })
    }

    /// Writes element `i`; [`SharedError::IndexOutOfRange`] past the end.
    pub fn set(&self, i: usize, v: T) -> Result<(), SharedError> {
        self.check(i)?;
        self.write(i, v);
        Ok(())
    }

    /// A copy of all elements.
    pub fn to_vec(&self) -> Vec<T> {
        self.iter().collect()
    }

    /// The elements, each read when reached.
    pub fn iter(&self) -> impl Iterator<Item = T> + '_ {
        // SAFETY: i < len; see `get`.
        (0..self.len).map(move |i| unsafe { self.ptr(i).read_volatile() })
    }

    /// The position of the first element equal to `v` (Python's `index`, `None` for its
    /// `ValueError`).
    pub fn index(&self, v: &T) -> Option<usize>
    where
        T: PartialEq,
    {
        self.iter().position(|x| x == *v)
    }

    /// How many elements equal `v`.
    pub fn count(&self, v: &T) -> usize
    where
        T: PartialEq,
    {
        self.iter().filter(|x| x == v).count()
    }

    /// The segment (its name, `unlink`, `untrack`).
    pub fn shm(&self) -> &SharedMemory {
        &self.shm
    }
}

impl<T: SharedData + std::fmt::Debug> std::fmt::Debug for ShareableList<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ShareableList({:?}, name={:?})",
            self.to_vec(),
            self.shm.name()
        )
    }
}

impl<T> Serialize for ShareableList<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.shm.serialize(s)
    }
}

impl<'de, T: SharedData> Deserialize<'de> for ShareableList<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::from_shm(SharedMemory::deserialize(d)?).map_err(D::Error::custom)
    }
}
