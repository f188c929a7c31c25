//! Shared memory on Unix, written once for every crate of `mp`: anonymous objects
//! ([`anonymous_object`], [`create`]), their size, and the one mapping type ([`Mapping`])
//! that `mp-core`'s segments and `mp-shm`'s rings both use.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

/// A new anonymous shared-memory object of `len` bytes, zero-filled (see
/// [`anonymous_object`]).
///
/// ```
/// let fd = mp_unix::memory::create(c"doc", 4096).unwrap();
/// assert_eq!(mp_unix::memory::size(std::os::fd::AsFd::as_fd(&fd)).unwrap(), 4096);
/// ```
pub fn create(label: &std::ffi::CStr, len: usize) -> io::Result<OwnedFd> {
    let fd = anonymous_object(label)?;
    let len =
        libc::off_t::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: ftruncate on a descriptor we own.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// The size of a shared-memory object, in bytes.
pub fn size(fd: BorrowedFd<'_>) -> io::Result<usize> {
    // SAFETY: fstat fills a zeroed stat structure; the descriptor is borrowed, so open.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    usize::try_from(st.st_size).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
}

/// A shared, writable mapping of the first bytes of a shared-memory object, unmapped when
/// dropped. The object may be closed while the mapping lives.
///
/// ```
/// let fd = mp_unix::memory::create(c"doc", 64).unwrap();
/// let map = mp_unix::memory::Mapping::new(std::os::fd::AsFd::as_fd(&fd), 64).unwrap();
/// // SAFETY: inside the mapping, and nothing else uses it.
/// unsafe { map.as_ptr().write(7) };
/// assert_eq!(map.len(), 64);
/// // Longer than the object: refused, not mapped (touching it would fault).
/// assert!(mp_unix::memory::Mapping::new(std::os::fd::AsFd::as_fd(&fd), 1 << 20).is_err());
/// ```
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a mapping is plain memory, valid until drop; what is stored in it is synchronised
// by its users (atomics, locks in the memory).
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps the first `len` bytes of `fd`; an object smaller than `len` is an `InvalidData`
    /// error (touching a mapping beyond the object would fault).
    pub fn new(fd: BorrowedFd<'_>, len: usize) -> io::Result<Self> {
        let have = size(fd)?;
        if have < len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a mapping of {len} bytes was asked of an object of {have}"),
            ));
        }
        // SAFETY: mapping a descriptor the caller holds, no larger than the object (at
        // least one byte: the kernel refuses empty mappings).
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len.max(1),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Self { ptr, len })
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
        // SAFETY: the mapping came from mmap with this length and dies with self.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len.max(1));
        }
    }
}

/// A new, empty, close-on-exec shared-memory object that no name refers to, so the kernel
/// frees it when the last process holding it closes it or dies. `label` shows in
/// `/proc/<pid>/fd` on Linux (`memfd_create`); elsewhere the object is made with `shm_open`
/// under a unique name that is unlinked at once.
///
/// ```
/// let fd = mp_unix::memory::anonymous_object(c"doc").unwrap();
/// drop(fd);
/// ```
pub fn anonymous_object(label: &std::ffi::CStr) -> io::Result<OwnedFd> {
    imp::anonymous_object(label)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
mod imp {
    use super::*;

    pub(super) fn anonymous_object(label: &std::ffi::CStr) -> io::Result<OwnedFd> {
        // SAFETY: memfd_create with a valid C string; returns a new descriptor or -1.
        let fd = unsafe { libc::memfd_create(label.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor we own.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
mod imp {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    pub(super) fn anonymous_object(label: &std::ffi::CStr) -> io::Result<OwnedFd> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = std::ffi::CString::new(format!(
            "/mp-{}-{}-{}",
            label.to_string_lossy(),
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ))
        .map_err(io::Error::other)?;
        // SAFETY: shm_open/shm_unlink with a valid C string.
        unsafe {
            let fd = libc::shm_open(
                name.as_ptr(),
                libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
                0o600,
            );
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            libc::shm_unlink(name.as_ptr());
            let _ = libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            Ok(OwnedFd::from_raw_fd(fd))
        }
    }
}
