//! Shared memory and process-shared waiting on Unix: anonymous segments (`memfd_create` on
//! Linux, an immediately unlinked `shm_open` elsewhere), `mmap`, and futex wait/wake.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// A new anonymous shared-memory object of `len` bytes, zero-filled. The kernel frees it
/// when the last process holding it closes it or dies: nothing can leak.
pub(crate) fn shm_create(len: usize) -> io::Result<OwnedFd> {
    let fd = anonymous_object()?;
    // SAFETY: ftruncate on a descriptor we own.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn anonymous_object() -> io::Result<OwnedFd> {
    // SAFETY: memfd_create with a static name; returns a new descriptor or -1.
    let fd = unsafe { libc::memfd_create(c"mp-shared".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn anonymous_object() -> io::Result<OwnedFd> {
    let name = std::ffi::CString::new(format!(
        "/mp-anon-{}-{}",
        std::process::id(),
        super::os::unique()
    ))
    .expect("no interior NUL");
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

/// Maps `len` bytes of a shared-memory object, shared and writable.
pub(crate) fn shm_map(fd: &OwnedFd, len: usize) -> io::Result<NonNull<u8>> {
    // SAFETY: mapping a descriptor we hold; the kernel checks the length against the object.
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
    NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned null"))
}

/// The size of a shared-memory object.
pub(crate) fn shm_size(fd: &OwnedFd) -> io::Result<usize> {
    // SAFETY: fstat fills a zeroed stat structure.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.st_size as usize)
}

/// Unmaps what [`shm_map`] mapped.
///
/// # Safety
/// `ptr`/`len` must come from one `shm_map`, and nothing may use the mapping afterwards.
pub(crate) unsafe fn shm_unmap(ptr: NonNull<u8>, len: usize) {
    // SAFETY: per the contract.
    unsafe {
        libc::munmap(ptr.as_ptr().cast(), len.max(1));
    }
}

/// Sleeps while `*word == expected`, at most `timeout` (`None`: until woken). Spurious
/// wake-ups are possible; callers re-check their condition.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    imp::wait(word, expected, timeout)
}

/// Wakes up to `n` sleepers on `word`, in any process.
pub(crate) fn futex_wake(word: &AtomicU32, n: u32) {
    imp::wake(word, n)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
mod imp {
    use std::sync::atomic::AtomicU32;
    use std::time::Duration;

    pub(super) fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
        let ts = timeout.map(|t| libc::timespec {
            tv_sec: t.as_secs().min(i32::MAX as u64) as libc::time_t,
            tv_nsec: t.subsec_nanos() as libc::c_long,
        });
        let ts_ptr = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: a shared (not private) futex wait on a live word; the kernel only reads it.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT,
                expected,
                ts_ptr,
            );
        }
    }

    pub(super) fn wake(word: &AtomicU32, n: u32) {
        // SAFETY: waking sleepers of a live word.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAKE,
                n.min(i32::MAX as u32),
            );
        }
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
mod imp {
    //! No process-shared futex: sleep in short steps and re-check.
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    pub(super) fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
        let step = Duration::from_micros(200);
        if word.load(Ordering::Acquire) == expected {
            std::thread::sleep(timeout.map_or(step, |t| t.min(step)));
        }
    }

    pub(super) fn wake(_word: &AtomicU32, _n: u32) {}
}

/// Whether a process with this pid exists (a zombie counts as gone).
pub(crate) fn pid_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    if unsafe { libc::kill(pid as libc::pid_t, 0) } != 0 {
        return io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    }
    !super::os::is_zombie(pid)
}
