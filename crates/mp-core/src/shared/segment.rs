//! An anonymous shared-memory segment that travels to children as a handle.
//!
//! A segment is created zero-filled, mapped shared and writable, and freed by the kernel when
//! the last process holding it closes it or dies, so a crash leaks nothing. Serialized (as a
//! process argument or inside a message) it carries its handle and length; the receiver maps
//! the same memory. A length larger than the object it names is refused, so a bad message
//! cannot make the receiver map beyond the segment.

use std::io;

use mp_ipc::handle::OwnedHandle;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::sys;

/// A mapped shared-memory segment.
pub(crate) struct Segment {
    handle: OwnedHandle,
    map: mp_ipc::memory::Mapping,
    len: usize,
}

impl Segment {
    /// A new zero-filled segment of `len` bytes.
    pub(crate) fn create(len: usize) -> io::Result<Self> {
        let handle = sys::shm_create(len)?;
        Self::map(handle, len)
    }

    fn map(handle: OwnedHandle, len: usize) -> io::Result<Self> {
        let map = sys::shm_map(&handle, len)?;
        Ok(Self { handle, map, len })
    }

    /// A zero-filled segment of `len` bytes in this process's heap, standing for a shared
    /// one in tests that Miri runs (it cannot create or map shared memory); its handle is
    /// `handle`, which nothing maps.
    #[cfg(test)]
    pub(crate) fn heap(len: usize, handle: OwnedHandle) -> Self {
        const PAGE: usize = 4096;
        unsafe fn free(ptr: std::ptr::NonNull<u8>, len: usize) {
            let layout = std::alloc::Layout::from_size_align(len.max(1), PAGE).expect("layout");
            // SAFETY: allocated below with this very layout.
            unsafe { std::alloc::dealloc(ptr.as_ptr(), layout) }
        }
        let layout = std::alloc::Layout::from_size_align(len.max(1), PAGE).expect("layout");
        // SAFETY: a layout of nonzero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr =
            std::ptr::NonNull::new(ptr).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        // SAFETY: `free` releases exactly this allocation, once, when the mapping drops.
        let map = unsafe { mp_ipc::memory::Mapping::from_raw(ptr, len, free) };
        Self { handle, map, len }
    }

    /// Maps `len` bytes of a segment received from another process; a length beyond the
    /// object is refused, so a bad message cannot make this process map past its end.
    pub(crate) fn open(handle: OwnedHandle, len: usize) -> io::Result<Self> {
        let actual = sys::shm_size(&handle)?;
        if len > actual {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a segment of {len} bytes was announced, but the object has {actual}"),
            ));
        }
        Self::map(handle, len)
    }

    /// The segment's handle.
    pub(crate) fn handle(&self) -> &OwnedHandle {
        &self.handle
    }

    /// The first byte.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.map.as_ptr()
    }

    /// The length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether another process shrank the object under this mapping, whose pages are now
    /// private zeros (see `mp_ipc::memory::Mapping::damaged`; never on Windows, nor for a
    /// size-sealed memfd on Linux).
    pub(crate) fn damaged(&self) -> bool {
        self.map.damaged()
    }

    /// A shared reference to a `T` placed at `offset`.
    ///
    /// # Safety
    /// `T` must be valid for every bit pattern (atomics, plain integers), `offset` aligned for
    /// `T`, and `offset + size_of::<T>() <= len`.
    pub(crate) unsafe fn at<T>(&self, offset: usize) -> &T {
        debug_assert!(offset + std::mem::size_of::<T>() <= self.len);
        debug_assert_eq!(
            (self.as_ptr() as usize + offset) % std::mem::align_of::<T>(),
            0
        );
        // SAFETY: per the contract.
        unsafe { &*self.as_ptr().add(offset).cast::<T>() }
    }
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment").field("len", &self.len).finish()
    }
}

impl Serialize for Segment {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(&SegmentHandle(&self.handle))?;
        t.serialize_element(&(self.len as u64))?;
        t.end()
    }
}

struct SegmentHandle<'a>(&'a OwnedHandle);

impl Serialize for SegmentHandle<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::handles::serialize_handle(mp_ipc::handle::raw_of(self.0), s)
    }
}

impl<'de> Deserialize<'de> for Segment {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (handle, len) = <(crate::OsHandle, u64)>::deserialize(d)?;
        let len = usize::try_from(len).map_err(D::Error::custom)?;
        Self::open(handle.into_inner(), len).map_err(D::Error::custom)
    }
}
