//! The one shared-memory mapping type of `mp`: a mapped region that unmaps itself when
//! dropped. The platform crates make them (`mp_unix::memory::map`, `mp_windows::memory::map`);
//! `mp-core`'s segments and `mp-shm`'s rings hold them.

use std::ptr::NonNull;

/// How a platform releases a mapping: called once, with the pointer and length the mapping
/// was made with.
pub type Unmap = unsafe fn(NonNull<u8>, usize);

/// A mapped region of shared memory, released when dropped.
///
/// ```
/// use std::ptr::NonNull;
/// use mp_ipc::memory::Mapping;
/// // A stand-in for an OS mapping: leaked heap memory, "unmapped" by freeing it.
/// unsafe fn free(ptr: NonNull<u8>, len: usize) {
///     // SAFETY: `ptr` came from the boxed slice of `len` bytes leaked below.
///     drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr.as_ptr(), len)) });
/// }
/// let region = Box::leak(vec![0u8; 16].into_boxed_slice());
/// let ptr = NonNull::new(region.as_mut_ptr()).unwrap();
/// // SAFETY: the region is live, 16 bytes long, and released only by `free`.
/// let map = unsafe { Mapping::from_raw(ptr, 16, free) };
/// assert_eq!(map.len(), 16);
/// ```
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    unmap: Unmap,
}

// SAFETY: a mapping is plain memory, valid until drop; what is stored in it is synchronised
// by its users (atomics, locks in the memory).
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Takes charge of a mapped region.
    ///
    /// # Safety
    /// `ptr` must start a live mapping of at least `len` bytes, readable and writable, that
    /// `unmap(ptr, len)` releases and that nothing else releases.
    pub unsafe fn from_raw(ptr: NonNull<u8>, len: usize, unmap: Unmap) -> Self {
        Self { ptr, len, unmap }
    }

    /// The first byte.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The mapped length, in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping covers no byte.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `from_raw`'s contract: this releases exactly this mapping, once.
        unsafe { (self.unmap)(self.ptr, self.len) }
    }
}
