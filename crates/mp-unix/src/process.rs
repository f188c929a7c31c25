//! Questions about processes and threads named by a number read from shared memory, where
//! another process may have written anything: is it a process at all, is it alive, does it
//! have a given segment mapped, is it one of this process's threads.
//!
//! Never call `kill` on such a number unchecked: `kill(0, 0)` asks about the caller's whole
//! process group and `kill(-1, 0)` about every process it may signal, and both "succeed".
//! [`pid_plausible`] is the check; every function here applies it first.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// The largest pid the kernel hands out (Linux's `PID_MAX_LIMIT`; other systems use less).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub const PID_MAX: u32 = 4 << 20;
/// The largest pid the kernel hands out (Linux's `PID_MAX_LIMIT`; other systems use less).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub const PID_MAX: u32 = i32::MAX as u32;

/// Whether `pid` can name a process: positive as a `pid_t` and at most [`PID_MAX`].
///
/// ```
/// assert!(mp_unix::process::pid_plausible(std::process::id()));
/// assert!(!mp_unix::process::pid_plausible(0));
/// assert!(!mp_unix::process::pid_plausible(u32::MAX)); // kill(-1, ...) if used unchecked
/// ```
pub fn pid_plausible(pid: u32) -> bool {
    (pid as i32) > 0 && pid <= PID_MAX
}

/// Whether process `pid` exists and has not ended (a zombie, ended but not yet reaped,
/// counts as gone). An implausible pid is not alive.
///
/// ```
/// assert!(mp_unix::process::pid_alive(std::process::id()));
/// assert!(!mp_unix::process::pid_alive(u32::MAX));
/// ```
pub fn pid_alive(pid: u32) -> bool {
    if !pid_plausible(pid) {
        return false;
    }
    // SAFETY: signal 0 only checks for existence; the pid is a single positive process id.
    if unsafe { libc::kill(pid as libc::pid_t, 0) } != 0 {
        return io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    }
    !is_zombie(pid)
}

/// Whether `pid` is a zombie: ended, not yet reaped (Linux: `/proc/<pid>/stat`; elsewhere
/// never).
pub fn is_zombie(pid: u32) -> bool {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(false)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = pid;
        false
    }
}

/// The calling thread's system-wide id (Linux `gettid`); 0 where there is none to ask.
///
/// ```
/// let t = mp_unix::process::current_tid();
/// assert!(t == 0 || mp_unix::process::thread_alive(t));
/// ```
pub fn current_tid() -> u32 {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        // SAFETY: gettid has no preconditions.
        unsafe { libc::gettid() as u32 }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        0
    }
}

/// Whether `tid` (from [`current_tid`]) is a live thread of this process. Where thread ids
/// are not known (0, other systems), the answer is yes.
pub fn thread_alive(tid: u32) -> bool {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        if tid == 0 {
            return true;
        }
        if !pid_plausible(tid) {
            return false;
        }
        // SAFETY: signal 0 to a thread of this process only checks that it exists.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_tgkill,
                libc::getpid(),
                tid as libc::pid_t,
                0 as libc::c_int,
            )
        };
        rc == 0
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = tid;
        true
    }
}

/// Whether process `pid` has the object of descriptor `fd` mapped (Linux: its
/// `/proc/<pid>/maps` lists the object's device and inode). `None` when that cannot be
/// told: another system, or a process whose maps this one may not read.
pub fn maps_object(pid: u32, fd: BorrowedFd<'_>) -> Option<bool> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        if !pid_plausible(pid) {
            return Some(false);
        }
        // SAFETY: an all-zero stat is a valid value of this plain C structure.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat fills that structure for a descriptor the caller holds open.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
            return None;
        }
        let (major, minor) = (libc::major(st.st_dev), libc::minor(st.st_dev));
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
        // address perms offset dev inode [path]; dev is "major:minor" in hex.
        Some(maps.lines().any(|line| {
            let mut f = line.split_ascii_whitespace().skip(3);
            let (Some(dev), Some(ino)) = (f.next(), f.next()) else {
                return false;
            };
            let Some((ma, mi)) = dev.split_once(':') else {
                return false;
            };
            ino.parse::<u64>().ok() == Some(st.st_ino)
                && u32::from_str_radix(ma, 16).ok() == Some(major)
                && u32::from_str_radix(mi, 16).ok() == Some(minor)
        }))
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = (pid, fd);
        None
    }
}

/// Whether process `pid` can be a holder of a lock in the shared object of `fd`: it must
/// have the object mapped ([`maps_object`]). A process whose maps this one may not read is
/// more privileged than it (another user, or capabilities it lacks); that could be a
/// holder in a program that drops privileges for its children, so the answer is `None`
/// (cannot tell), except for pid 1: an init more privileged than this process that shares
/// a lock with it is not a case mp supports, and a damaged lock word often names it.
pub fn holds_object(pid: u32, fd: BorrowedFd<'_>) -> Option<bool> {
    maps_object(pid, fd).or_else(|| (pid == 1 && std::process::id() != 1).then_some(false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn numbers_that_name_no_process_are_refused() {
        for bad in [0u32, u32::MAX, 0x8000_0000, PID_MAX + 1] {
            assert!(!pid_plausible(bad), "{bad:#x}");
            assert!(!pid_alive(bad), "{bad:#x}");
        }
        assert!(pid_alive(std::process::id()));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_mapped_segment_is_seen_in_the_maps_of_its_holder_only() {
        let fd = crate::memory::create(c"maps-test", 4096).unwrap();
        assert_eq!(maps_object(std::process::id(), fd.as_fd()), Some(false));
        // SAFETY: mapping the fresh object read-only, unmapped below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        assert_eq!(maps_object(std::process::id(), fd.as_fd()), Some(true));
        // pid 1 never maps a segment this test just made.
        assert_ne!(maps_object(1, fd.as_fd()), Some(true));
        assert_eq!(holds_object(1, fd.as_fd()), Some(false));
        // SAFETY: unmapping what was mapped above.
        unsafe { libc::munmap(p, 4096) };
        assert!(thread_alive(current_tid()));
        assert!(!thread_alive(u32::MAX));
    }
}
