//! Child processes: a descriptor that becomes readable when one exits, the parent-death
//! signal, and whether a process still lives.
//!
//! | flavour   | exit watch                         | parent-death signal | zombie check          |
//! |-----------|------------------------------------|---------------------|-----------------------|
//! | `linux`   | pidfd (`pidfd_open`, Linux 5.3+)   | `PR_SET_PDEATHSIG`  | `/proc/<pid>/stat`    |
//! | `apple`   | kqueue, `EVFILT_PROC`/`NOTE_EXIT`  | none                | `proc_pidinfo`        |
//! | `freebsd` | kqueue, `EVFILT_PROC`/`NOTE_EXIT`  | none (see below)    | `sysctl(KERN_PROC_PID)` |
//! | `generic` | none: callers poll `waitpid`       | none                | none: `kill(pid, 0)`  |
//!
//! Without the parent-death signal a child dies with its parent through mp's watchdog
//! thread, which reads the boot channel until the parent's end closes. (FreeBSD has
//! `procctl(PROC_PDEATHSIG_CTL)`; the watchdog covers it, so mp does not use it.)

//!
//! Numbers read from shared memory, where another process may have written anything, are
//! checked before any system call: is it a process at all, is it alive, does it have a
//! given segment mapped, is it one of this process's threads. Never call `kill` on such a
//! number unchecked: `kill(0, 0)` asks about the caller's whole process group and
//! `kill(-1, 0)` about every process it may signal, and both "succeed".
//! [`pid_plausible`] is the check; every function here applies it first.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};

/// Whether [`arm_parent_death_signal`] does anything here (Linux).
pub const PARENT_DEATH_SIGNAL: bool = cfg!(mp_os = "linux");

/// A descriptor that becomes readable once the child `pid` has exited, without reaping it:
/// a pidfd on Linux, a kqueue watching `EVFILT_PROC`/`NOTE_EXIT` on macOS and FreeBSD
/// (readable at once if the child is already gone). `None` where there is no such thing (the
/// generic flavour, old kernels): then callers poll `waitpid`.
///
/// ```
/// let child = std::process::Command::new("true").spawn().unwrap();
/// if let Some(fd) = mp_unix::process::exit_watch(child.id()) {
///     use std::os::fd::AsRawFd;
///     assert!(mp_unix::poll::poll_readable(fd.as_raw_fd(), None).unwrap());
/// }
/// # let mut child = child; child.wait().unwrap();
/// ```
pub fn exit_watch(pid: u32) -> Option<OwnedFd> {
    imp::exit_watch(pid)
}

/// In a freshly forked child: asks for `SIGKILL` when the parent dies (Linux), and exits at
/// once if `parent` is already gone. Does nothing where there is no parent-death signal.
/// Async-signal-safe.
pub fn arm_parent_death_signal(parent: libc::pid_t) {
    #[cfg(mp_os = "linux")]
    // SAFETY: prctl, getppid and _exit are async-signal-safe.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != parent {
            libc::_exit(1);
        }
    }
    #[cfg(not(mp_os = "linux"))]
    let _ = parent;
}

/// Whether the calling thread is the process's main thread, where that matters: Linux sends
/// the parent-death signal when the *thread* that forked exits, so it is only worth arming
/// from the main thread. False where there is no parent-death signal.
pub fn is_main_thread() -> bool {
    #[cfg(mp_os = "linux")]
    // SAFETY: gettid and getpid have no preconditions.
    unsafe {
        libc::gettid() == libc::getpid()
    }
    #[cfg(not(mp_os = "linux"))]
    false
}

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

/// Whether `pid` has ended but is not reaped yet. Always false in the generic flavour.
pub fn is_zombie(pid: u32) -> bool {
    imp::is_zombie(pid)
}

/// The calling thread's system-wide id (Linux `gettid`, asked once per thread); 0 where
/// there is none to ask.
///
/// ```
/// let t = mp_unix::process::current_tid();
/// assert!(t == 0 || mp_unix::process::thread_alive(t));
/// ```
pub fn current_tid() -> u32 {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        // SAFETY: gettid has no preconditions.
        fork_cache::get(&fork_cache::TID, || unsafe { libc::gettid() } as u32)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        0
    }
}

/// This process's id, as `std::process::id()`, but asked of the kernel once per thread
/// and fork (`getpid` is a system call, and every lock of a ring or queue records its
/// holder's pid).
///
/// ```
/// assert_eq!(mp_unix::process::current_pid(), std::process::id());
/// ```
pub fn current_pid() -> u32 {
    fork_cache::get(&fork_cache::PID, std::process::id)
}

/// Per-thread caches of ids that a fork changes: every lock of a queue records its
/// holder's pid and thread, and a `gettid` system call per acquire cost a queue a third of
/// its time. A fork invalidates the caches (the child's one thread has new ids): an atfork
/// handler counts forks in the child, and a cached id is used only while the count is the
/// one it was taken under. (A process made by a raw `clone` system call, which runs no
/// atfork handlers, is not one mp or std makes for running Rust code.)
mod fork_cache {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Once;
    use std::thread::LocalKey;

    /// Forks this process has come out of as the child.
    static FORKS: AtomicU64 = AtomicU64::new(0);
    static HOOK: Once = Once::new();

    /// One cached id: `(FORKS when taken, id)`; `u64::MAX`: not taken yet.
    pub(super) type Cached = Cell<(u64, u32)>;

    thread_local! {
        pub(super) static TID: Cached = const { Cell::new((u64::MAX, 0)) };
        pub(super) static PID: Cached = const { Cell::new((u64::MAX, 0)) };
    }

    extern "C" fn in_forked_child() {
        FORKS.fetch_add(1, Ordering::Relaxed);
    }

    /// The id in `cache` if it was taken since the last fork, else `ask()` (cached).
    pub(super) fn get(cache: &'static LocalKey<Cached>, ask: impl FnOnce() -> u32) -> u32 {
        HOOK.call_once(|| {
            // SAFETY: registers a handler that only increments an atomic (async-signal-safe,
            // as a forked child's first steps must be). A failure (ENOMEM) leaves the count
            // still, so the cache would survive a fork: then never cache.
            if unsafe { libc::pthread_atfork(None, None, Some(in_forked_child)) } != 0 {
                FORKS.store(u64::MAX, Ordering::Relaxed);
            }
        });
        let forks = FORKS.load(Ordering::Relaxed);
        cache.with(|c| {
            let (taken_at, id) = c.get();
            if taken_at == forks && forks != u64::MAX {
                return id;
            }
            let id = ask();
            if forks != u64::MAX {
                c.set((forks, id));
            }
            id
        })
    }

    #[cfg(test)]
    mod tests {
        use super::super::{current_pid, current_tid};

        #[test]
        fn a_forked_child_sees_its_own_ids() {
            let (pid, tid) = (current_pid(), current_tid());
            assert_eq!(pid, std::process::id());
            #[cfg(any(target_os = "linux", target_os = "android"))]
            // SAFETY: gettid has no preconditions.
            assert_eq!(tid, unsafe { libc::gettid() } as u32);
            // SAFETY: the child only calls async-signal-safe functions and the caches (an
            // atomic load, a thread-local read, getpid and gettid), then `_exit`s.
            let child = unsafe { libc::fork() };
            assert!(child >= 0);
            if child == 0 {
                // SAFETY: getpid has no preconditions.
                let me = unsafe { libc::getpid() } as u32;
                let ok = current_pid() == me && (tid == 0 || current_tid() == me);
                // SAFETY: _exit has no preconditions.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) };
            }
            let mut status = 0;
            // SAFETY: waiting for the child just forked.
            assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
            assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
            assert_eq!((current_pid(), current_tid()), (pid, tid));
            let other = std::thread::spawn(current_tid).join().unwrap();
            assert!(tid == 0 || other != tid);
        }
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
        use std::os::fd::AsRawFd;
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

#[cfg(mp_os = "linux")]
mod imp {
    use std::os::fd::{FromRawFd, OwnedFd};

    pub(super) fn exit_watch(pid: u32) -> Option<OwnedFd> {
        // SAFETY: the syscall returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        // SAFETY: a fresh descriptor we own; pidfds are close-on-exec.
        (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    pub(super) fn is_zombie(pid: u32) -> bool {
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
}

#[cfg(any(mp_os = "apple", mp_os = "freebsd"))]
mod imp {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    /// One kevent change.
    fn change(ident: usize, filter: i16, flags: u16, fflags: u32) -> libc::kevent {
        // SAFETY: kevent is plain data (its layout differs between the BSDs: extra fields
        // stay zero).
        let mut k: libc::kevent = unsafe { std::mem::zeroed() };
        k.ident = ident as _;
        k.filter = filter as _;
        k.flags = flags as _;
        k.fflags = fflags as _;
        k
    }

    fn apply(kq: &OwnedFd, changes: &[libc::kevent]) -> bool {
        // SAFETY: registering changes on our kqueue; no events are read back.
        unsafe {
            libc::kevent(
                kq.as_raw_fd(),
                changes.as_ptr(),
                changes.len() as _,
                std::ptr::null_mut(),
                0,
                std::ptr::null(),
            ) == 0
        }
    }

    /// Whether our child `pid` has exited (not reaping it).
    fn exited(pid: u32) -> bool {
        // SAFETY: waitid fills a zeroed siginfo_t; WNOWAIT leaves the child to be reaped.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            ) == 0
                && info.si_pid() != 0
        }
    }

    pub(super) fn exit_watch(pid: u32) -> Option<OwnedFd> {
        let kq = {
            // kqueues are not inherited by fork; the flag covers a spawn all the same.
            let _g = crate::cloexec::creating();
            // SAFETY: kqueue returns a new descriptor or -1.
            let fd = unsafe { libc::kqueue() };
            if fd < 0 {
                return None;
            }
            // SAFETY: a fresh descriptor we own.
            let kq = unsafe { OwnedFd::from_raw_fd(fd) };
            crate::cloexec::set(fd).ok()?;
            kq
        };
        let watched = apply(
            &kq,
            &[change(
                pid as usize,
                libc::EVFILT_PROC,
                libc::EV_ADD,
                libc::NOTE_EXIT,
            )],
        );
        let gone = if watched {
            // The child may have exited before the watch began (macOS then reports nothing).
            exited(pid)
        } else {
            // ESRCH: it has exited already (macOS refuses to watch a zombie).
            std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
        };
        if gone {
            // Make the queue readable for good: a user event, triggered, never collected.
            let user = |flags, fflags| change(1, libc::EVFILT_USER, flags, fflags);
            if !apply(&kq, &[user(libc::EV_ADD, 0), user(0, libc::NOTE_TRIGGER)]) {
                return None;
            }
        } else if !watched {
            return None;
        }
        Some(kq)
    }

    #[cfg(mp_os = "apple")]
    pub(super) fn is_zombie(pid: u32) -> bool {
        // SAFETY: proc_pidinfo fills at most `size` bytes of a zeroed structure; the
        // argument 1 asks it to report zombies too.
        unsafe {
            let mut info: libc::proc_bsdshortinfo = std::mem::zeroed();
            let size = std::mem::size_of::<libc::proc_bsdshortinfo>() as libc::c_int;
            libc::proc_pidinfo(
                pid as libc::c_int,
                libc::PROC_PIDT_SHORTBSDINFO,
                1,
                (&mut info as *mut libc::proc_bsdshortinfo).cast(),
                size,
            ) == size
                && info.pbsi_status == libc::SZOMB
        }
    }

    #[cfg(mp_os = "freebsd")]
    pub(super) fn is_zombie(pid: u32) -> bool {
        let mib = [
            libc::CTL_KERN,
            libc::KERN_PROC,
            libc::KERN_PROC_PID,
            pid as libc::c_int,
        ];
        // SAFETY: sysctl fills at most `len` bytes of a zeroed kinfo_proc (whose size the
        // kernel keeps fixed across releases).
        unsafe {
            let mut info: libc::kinfo_proc = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::kinfo_proc>();
            libc::sysctl(
                mib.as_ptr(),
                mib.len() as libc::c_uint,
                (&mut info as *mut libc::kinfo_proc).cast(),
                &mut len,
                std::ptr::null(),
                0,
            ) == 0
                && len == std::mem::size_of::<libc::kinfo_proc>()
                && info.ki_stat == libc::SZOMB
        }
    }
}

#[cfg(mp_os = "generic")]
mod imp {
    use std::os::fd::OwnedFd;

    pub(super) fn exit_watch(_pid: u32) -> Option<OwnedFd> {
        None
    }

    pub(super) fn is_zombie(_pid: u32) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_exit_watch_fires_when_the_child_ends_and_not_before() {
        let mut child = std::process::Command::new("sleep")
            .arg("0.3")
            .spawn()
            .unwrap();
        let watch = exit_watch(child.id());
        if let Some(fd) = &watch {
            assert!(!crate::poll::poll_readable(fd.as_raw_fd(), Some(Duration::ZERO)).unwrap());
            assert!(
                crate::poll::poll_readable(fd.as_raw_fd(), Some(Duration::from_secs(30))).unwrap()
            );
            // Not reaped by the watch: the status is still there for waitpid.
            assert!(is_zombie(child.id()) && !pid_alive(child.id()));
        } else {
            // Only the generic flavour, and Linux before 5.3, have no watch.
            assert!(["generic", "linux"].contains(&crate::FLAVOUR));
        }
        assert!(child.wait().unwrap().success());
        assert!(!pid_alive(child.id()));
    }

    #[test]
    fn a_watch_on_a_child_that_already_ended_is_ready() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        // Let it end, unreaped (the generic flavour cannot tell; it has no watch either).
        while !cfg!(mp_os = "generic") && !is_zombie(child.id()) {
            std::thread::sleep(Duration::from_millis(5));
        }
        if let Some(fd) = exit_watch(child.id()) {
            assert!(
                crate::poll::poll_readable(fd.as_raw_fd(), Some(Duration::from_secs(30))).unwrap()
            );
        }
        child.wait().unwrap();
    }

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
        use std::os::fd::AsFd;
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
