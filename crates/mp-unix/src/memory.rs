//! Shared memory on Unix, written once for every crate of `mp`: anonymous objects
//! ([`anonymous_object`], [`create`], its size sealed where the system can), their size, and [`map`], which makes the one mapping
//! type of `mp` ([`Mapping`]) that `mp-core`'s segments and `mp-shm`'s rings both hold.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

pub use mp_ipc::memory::Mapping;

/// A new [`anonymous_object`] of `len` bytes (zero-filled) whose size is final: on Linux it is
/// sealed (`F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`), so no process holding it, however
/// hostile, can shrink it under another's mapping (which would kill that process with
/// `SIGBUS` at its next access) or grow it. Elsewhere the size is not protected; see
/// [`size_is_sealed`].
///
/// ```
/// use std::os::fd::AsRawFd;
/// let fd = mp_unix::memory::create(c"doc", 4096).unwrap();
/// if cfg!(target_os = "linux") {
///     assert!(mp_unix::memory::size_is_sealed(&fd));
///     // SAFETY: ftruncate on a descriptor we own; the seal refuses it.
///     assert_ne!(unsafe { libc::ftruncate(fd.as_raw_fd(), 0) }, 0);
/// }
/// ```
pub fn create(label: &std::ffi::CStr, len: usize) -> io::Result<OwnedFd> {
    let fd = anonymous_object(label)?;
    let len = libc::off_t::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "segment too large"))?;
    // SAFETY: ftruncate on a descriptor we own.
    if unsafe { libc::ftruncate(std::os::fd::AsRawFd::as_raw_fd(&fd), len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    imp::seal_size(&fd)?;
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

/// Maps the first `len` bytes of `fd`, shared and writable, unmapped when the [`Mapping`]
/// drops (the descriptor may be closed before). An object smaller than `len` is an
/// `InvalidData` error: touching a mapping beyond the object would fault.
///
/// ```
/// use std::os::fd::AsFd;
/// let fd = mp_unix::memory::create(c"doc", 64).unwrap();
/// let map = mp_unix::memory::map(fd.as_fd(), 64).unwrap();
/// // SAFETY: inside the mapping, and nothing else uses it.
/// unsafe { map.as_ptr().write(7) };
/// assert_eq!(map.len(), 64);
/// assert!(mp_unix::memory::map(fd.as_fd(), 1 << 20).is_err());
/// ```
pub fn map(fd: BorrowedFd<'_>, len: usize) -> io::Result<Mapping> {
    let have = size(fd)?;
    if have < len {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a mapping of {len} bytes was asked of an object of {have}"),
        ));
    }
    // SAFETY: mapping a descriptor the caller holds, no larger than the object (at least one
    // byte: the kernel refuses empty mappings).
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
    // SAFETY: a fresh mapping of `len` (at least one) bytes, released only by `unmap`.
    Ok(unsafe { Mapping::from_raw(ptr, len, unmap) })
}

/// Releases what [`map`] mapped.
///
/// # Safety
/// `ptr` and `len` must be those of one mapping made by [`map`], used no more.
unsafe fn unmap(ptr: NonNull<u8>, len: usize) {
    // SAFETY: per the contract.
    unsafe {
        libc::munmap(ptr.as_ptr().cast(), len.max(1));
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

/// Whether the size of the object behind `fd` can no longer change (sealed on Linux; an
/// object received from another process may not be). Never true on other systems.
pub fn size_is_sealed(fd: &OwnedFd) -> bool {
    imp::size_is_sealed(fd)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
mod imp {
    use super::*;

    pub(super) fn anonymous_object(label: &std::ffi::CStr) -> io::Result<OwnedFd> {
        // SAFETY: memfd_create with a valid C string; returns a new descriptor or -1.
        let fd = unsafe {
            libc::memfd_create(label.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor we own.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    const SIZE_SEALS: libc::c_int = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;

    pub(super) fn seal_size(fd: &OwnedFd) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        // SAFETY: adding seals to a memfd we own.
        let rc = unsafe {
            libc::fcntl(
                fd.as_raw_fd(),
                libc::F_ADD_SEALS,
                SIZE_SEALS | libc::F_SEAL_SEAL,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub(super) fn size_is_sealed(fd: &OwnedFd) -> bool {
        use std::os::fd::AsRawFd;
        // SAFETY: reading the seals of a descriptor we hold.
        let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
        seals >= 0 && seals & SIZE_SEALS == SIZE_SEALS
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

    /// No seals: the size stays changeable by any holder.
    pub(super) fn seal_size(_fd: &OwnedFd) -> io::Result<()> {
        Ok(())
    }

    pub(super) fn size_is_sealed(_fd: &OwnedFd) -> bool {
        false
    }
}
