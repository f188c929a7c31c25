//! The one shared-memory mapping type of `mp`: a mapped region that unmaps itself when
//! dropped. The platform crates make them (`mp_unix::memory::map`, `mp_windows::memory::map`);
//! `mp-core`'s segments and `mp-shm`'s rings hold them.
//!
//! A mapping may be *watched*: where another process can shrink the object under it (POSIX
//! shared memory whose size the system cannot seal), the platform replaces the mapping's
//! pages with private zero pages when an access faults beyond the object's end, instead of
//! letting the process die of `SIGBUS`, and sets the mapping's damage flag
//! ([`Mapping::damaged`]). Users check it after reading values from the mapping and before
//! trusting them, and turn damage into a typed error.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};

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
    /// Set by the platform when the memory behind the mapping vanished; `None`: it cannot.
    damage: Option<&'static AtomicBool>,
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
        Self {
            ptr,
            len,
            unmap,
            damage: None,
        }
    }

    /// Takes charge of a mapped region whose platform reports damage through `damage`: the
    /// platform sets the flag (and keeps the region mapped, now private zero pages) when the
    /// shared memory behind it is gone, for instance shrunk by another process.
    ///
    /// ```
    /// use std::ptr::NonNull;
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use mp_ipc::memory::Mapping;
    /// unsafe fn free(ptr: NonNull<u8>, len: usize) {
    ///     // SAFETY: `ptr` came from the boxed slice of `len` bytes leaked below.
    ///     drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr.as_ptr(), len)) });
    /// }
    /// static DAMAGE: AtomicBool = AtomicBool::new(false);
    /// let region = Box::leak(vec![0u8; 16].into_boxed_slice());
    /// let ptr = NonNull::new(region.as_mut_ptr()).unwrap();
    /// // SAFETY: the region is live, 16 bytes long, and released only by `free`.
    /// let map = unsafe { Mapping::from_raw_watched(ptr, 16, free, &DAMAGE) };
    /// assert!(!map.damaged());
    /// DAMAGE.store(true, Ordering::Release);
    /// assert!(map.damaged());
    /// ```
    ///
    /// # Safety
    /// As [`from_raw`](Self::from_raw); besides, while the mapping lives, `damage` is this
    /// mapping's flag alone, cleared when the mapping was made.
    pub unsafe fn from_raw_watched(
        ptr: NonNull<u8>,
        len: usize,
        unmap: Unmap,
        damage: &'static AtomicBool,
    ) -> Self {
        Self {
            ptr,
            len,
            unmap,
            damage: Some(damage),
        }
    }

    /// Whether the shared memory behind the mapping vanished (another process shrank the
    /// object) and the platform replaced it with private zero pages: what is read from it
    /// since is zeros and what is written reaches no one. One atomic load; always false
    /// where objects cannot shrink (sealed memfds on Linux, Windows sections).
    pub fn damaged(&self) -> bool {
        self.damage.is_some_and(|d| d.load(Ordering::Acquire))
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
