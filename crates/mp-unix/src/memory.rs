//! Anonymous shared-memory objects: the one place `mp` creates them on Unix.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

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
