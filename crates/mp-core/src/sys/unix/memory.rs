//! Shared memory and process-shared waiting on Unix: anonymous segments
//! (`mp_unix::memory`: `memfd_create` on Linux, `SHM_ANON` on FreeBSD, an immediately
//! unlinked `shm_open` elsewhere), `mmap`, and wait/wake on a word (`mp_unix::futex`).

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use mp_ipc::memory::Mapping;

/// A new anonymous shared-memory object of `len` bytes, zero-filled, its size sealed where
/// the system can (see `mp_unix::memory::create`). The kernel frees it when the last
/// process holding it closes it or dies: nothing can leak.
pub(crate) fn shm_create(len: usize) -> io::Result<OwnedFd> {
    mp_unix::memory::create(c"mp-shared", len)
}

/// Maps `len` bytes of a shared-memory object, shared and writable (refused if the object
/// is smaller).
pub(crate) fn shm_map(fd: &OwnedFd, len: usize) -> io::Result<Mapping> {
    mp_unix::memory::map(fd.as_fd(), len)
}

/// The size of a shared-memory object.
pub(crate) fn shm_size(fd: &OwnedFd) -> io::Result<usize> {
    mp_unix::memory::size(fd.as_fd())
}

/// What identifies a shared-memory object whatever descriptor names it (device and inode),
/// so that a process can tell it already maps an object it receives again.
pub(crate) fn shm_identity(fd: &OwnedFd) -> Option<(u64, u64)> {
    // SAFETY: fstat fills a zeroed stat structure.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above, on a descriptor we hold.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return None;
    }
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    Some((st.st_dev as u64, st.st_ino as u64))
}

/// Sleeps while `*word == expected`, at most `timeout` (`None`: until woken). Spurious
/// wake-ups are possible; callers re-check their condition. The OS call is chosen in
/// `mp_unix::futex` (futex, `os_sync_wait_on_address`/`__ulock_wait`, `_umtx_op`, or a
/// polling fallback).
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    mp_unix::futex::wait(word, expected, timeout)
}

/// Wakes up to `n` sleepers on `word`, in any process.
pub(crate) fn futex_wake(word: &AtomicU32, n: u32) {
    mp_unix::futex::wake(word, n)
}

pub(crate) use mp_unix::process::{current_tid, pid_alive, pid_plausible, thread_alive};

/// Whether live process `pid` has the shared-memory object `fd` mapped (`None`: cannot
/// tell, on this system or for that process).
pub(crate) fn maps_segment(pid: u32, fd: &OwnedFd) -> Option<bool> {
    mp_unix::process::holds_object(pid, std::os::fd::AsFd::as_fd(fd))
}

// ---------------------------------------------------------------------------------------------
// Named segments (POSIX `shm_open`) and their crash reclamation.

/// The kernel name of a segment: `/<name>`, as a C string.
fn posix_name(name: &str) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(format!("/{name}"))
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in the name"))
}

/// A new named segment of `len` bytes, zero-filled; `AlreadyExists` if the name is taken.
pub(crate) fn shm_create_named(name: &str, len: usize) -> io::Result<OwnedFd> {
    let cname = posix_name(name)?;
    // SAFETY: shm_open with a valid C string; returns a new descriptor (close-on-exec) or -1.
    let fd = unsafe {
        libc::shm_open(
            cname.as_ptr(),
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
            0o600,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ftruncate on a descriptor we own.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } != 0 {
        let e = io::Error::last_os_error();
        // SAFETY: removing the name we just created.
        unsafe { libc::shm_unlink(cname.as_ptr()) };
        return Err(e);
    }
    Ok(fd)
}

/// Opens an existing named segment; `NotFound` if there is none.
pub(crate) fn shm_open_named(name: &str) -> io::Result<OwnedFd> {
    let cname = posix_name(name)?;
    // SAFETY: shm_open with a valid C string.
    let fd = unsafe { libc::shm_open(cname.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Removes a segment's name; `NotFound` if there is none. Mappings stay valid.
pub(crate) fn shm_unlink_named(name: &str) -> io::Result<()> {
    let cname = posix_name(name)?;
    // SAFETY: shm_unlink with a valid C string.
    if unsafe { libc::shm_unlink(cname.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Asks this process's tracker to unlink `name` once this process has ended, however it ends
/// (SIGKILL included). The tracker is started on first use; see [`tracker`].
pub(crate) fn shm_track(name: &str) -> io::Result<()> {
    tracker::send(b'R', name)
}

/// Starts this process's tracker if it is not running yet, before a named segment is made:
/// the start is a fork, and a process killed between creating a name and registering it
/// leaks the name, so that window must not hold a fork.
pub(crate) fn shm_track_prepare() -> io::Result<()> {
    tracker::ensure_started()
}

/// Takes `name` off the tracker's list (it was unlinked, or is meant to outlive us).
pub(crate) fn shm_untrack(name: &str) {
    let _ = tracker::send(b'U', name);
}

mod tracker {
    //! The resource tracker: a small process, forked from the first process that creates a
    //! named segment, that unlinks the segments that process created and did not unlink
    //! itself, as soon as that process is gone.
    //!
    //! The creator writes `R<name>\n` (register) and `U<name>\n` (unregister) on a pipe; each
    //! line is one `write` shorter than `PIPE_BUF`, hence atomic. The tracker notices the
    //! creator's end in two independent ways: the pipe reaches end of file (every copy of the
    //! write end is closed, which the kernel does for a killed process too), or its parent pid
    //! changes (the creator died and the tracker was re-parented, even if a forked child still
    //! holds a copy of the write end). It then unlinks every name still registered and exits.
    //!
    //! The tracker is forked, not spawned, so that it needs nothing from the executable, and
    //! after the fork it runs only async-signal-safe calls (`poll`, `read`, `getppid`,
    //! `shm_unlink`, `close`, `_exit`) on memory prepared before the fork: it is safe to fork
    //! it from a multi-threaded program. It ignores SIGINT, SIGTERM and SIGHUP (a Ctrl-C meant
    //! for the program must not kill it before the program's segments are cleaned up) and
    //! closes every descriptor but its pipe, so it never keeps another pipe of the program
    //! open. A forked child of the creator that creates segments starts its own tracker.

    use std::io;
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::sync::atomic::{AtomicPtr, Ordering};
    use std::sync::Mutex;

    /// The longest name the tracker takes (bytes, without the leading `/`). Longer names are
    /// refused when registered (POSIX names are at most 255 bytes anyway).
    const MAX_NAME: usize = 250;
    /// How many names one tracker holds at a time.
    const CAPACITY: usize = 4096;
    /// A slot: a length byte, then the name.
    const SLOT: usize = MAX_NAME + 2;

    struct Tracker {
        writer: OwnedFd,
        /// Names registered and not unregistered, to refuse more than the tracker holds.
        live: std::collections::HashSet<String>,
    }

    /// This process's tracker state, tagged with the pid it belongs to.
    type State = (u32, Mutex<Option<Tracker>>);
    static STATE: AtomicPtr<State> = AtomicPtr::new(std::ptr::null_mut());

    /// The tracker state of this process. A forked child sees its parent's state (whose
    /// mutex another thread may have held at the fork, for ever locked here) and replaces it
    /// with a fresh one; the parent's is leaked (its pipe copy stays open, which the parent's
    /// tracker tolerates: it also watches its parent pid).
    fn state() -> &'static Mutex<Option<Tracker>> {
        let me = std::process::id();
        loop {
            let p = STATE.load(Ordering::Acquire);
            // SAFETY: a published state is never freed.
            if !p.is_null() && unsafe { (*p).0 } == me {
                // SAFETY: as above.
                return unsafe { &(*p).1 };
            }
            let fresh = Box::into_raw(Box::new((me, Mutex::new(None))));
            match STATE.compare_exchange(p, fresh, Ordering::AcqRel, Ordering::Acquire) {
                // SAFETY: just published, never freed.
                Ok(_) => return unsafe { &(*fresh).1 },
                // SAFETY: not published; ours to free.
                Err(_) => drop(unsafe { Box::from_raw(fresh) }),
            }
        }
    }

    /// Starts the tracker if this process has none yet.
    pub(super) fn ensure_started() -> io::Result<()> {
        let mut guard = state().lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            *guard = Some(start()?);
        }
        Ok(())
    }

    pub(super) fn send(kind: u8, name: &str) -> io::Result<()> {
        if name.len() > MAX_NAME || name.contains('\n') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a tracked segment name has at most {MAX_NAME} bytes and no newline"),
            ));
        }
        let mut guard = state().lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            if kind == b'U' {
                return Ok(());
            }
            *guard = Some(start()?);
        }
        let t = guard.as_mut().expect("set above");
        if kind == b'R' {
            if t.live.len() >= CAPACITY {
                return Err(io::Error::other(format!(
                    "more than {CAPACITY} named segments are alive in this process"
                )));
            }
            t.live.insert(name.to_string());
        } else if !t.live.remove(name) {
            return Ok(());
        }
        let mut line = Vec::with_capacity(name.len() + 2);
        line.push(kind);
        line.extend_from_slice(name.as_bytes());
        line.push(b'\n');
        // SAFETY: writing a buffer we own to our pipe; one write below PIPE_BUF is atomic.
        let n = unsafe { libc::write(t.writer.as_raw_fd(), line.as_ptr().cast(), line.len()) };
        if n != line.len() as isize {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn start() -> io::Result<Tracker> {
        let (reader, writer) = mp_unix::cloexec::pipe(false)?;
        // Everything the tracker needs, allocated before the fork.
        let mut table = vec![0u8; CAPACITY * SLOT];
        let mut buf = vec![0u8; 8192];
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: fork; the child runs only `run`, which is async-signal-safe, and never
        // returns into Rust code of the parent.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: in the freshly forked child.
            unsafe { run(reader.as_raw_fd(), parent, &mut table, &mut buf) }
        }
        drop(reader);
        Ok(Tracker {
            writer,
            live: Default::default(),
        })
    }

    /// The tracker's life. Only async-signal-safe calls.
    unsafe fn run(fd: libc::c_int, parent: libc::pid_t, table: &mut [u8], buf: &mut [u8]) -> ! {
        // SAFETY: all calls below are async-signal-safe and act on this process only.
        unsafe {
            libc::signal(libc::SIGINT, libc::SIG_IGN);
            libc::signal(libc::SIGTERM, libc::SIG_IGN);
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
            // Keep only the pipe, as descriptor 3; stdio goes too, to keep no terminal or
            // captured output open.
            if fd != 3 {
                libc::dup2(fd, 3);
            }
            close_from(4);
            for i in 0..3 {
                libc::close(i);
            }
            let mut used = 0usize; // bytes of a partial line at the start of buf
                                   // Once the creator is gone, read what it wrote before dying, then clean up.
            let mut parent_gone = false;
            loop {
                let mut pfd = libc::pollfd {
                    fd: 3,
                    events: libc::POLLIN,
                    revents: 0,
                };
                let r = libc::poll(&mut pfd, 1, if parent_gone { 0 } else { 250 });
                if r == 0 {
                    if parent_gone {
                        break;
                    }
                    parent_gone = libc::getppid() != parent;
                    continue;
                }
                if r < 0 {
                    if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                        continue;
                    }
                    break;
                }
                parent_gone = parent_gone || libc::getppid() != parent;
                let n = libc::read(3, buf[used..].as_mut_ptr().cast(), buf.len() - used);
                if n == 0 {
                    break;
                }
                if n < 0 {
                    if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                        continue;
                    }
                    break;
                }
                used += n as usize;
                let mut start = 0;
                while let Some(nl) = buf[start..used].iter().position(|&b| b == b'\n') {
                    apply(table, &buf[start..start + nl]);
                    start += nl + 1;
                }
                buf.copy_within(start..used, 0);
                used -= start;
                if used == buf.len() {
                    used = 0; // a line longer than any valid one: drop it
                }
            }
            let mut path = [0u8; SLOT + 1];
            for slot in table.chunks(SLOT) {
                let len = slot[0] as usize;
                if len == 0 {
                    continue;
                }
                path[0] = b'/';
                path[1..=len].copy_from_slice(&slot[1..=len]);
                path[len + 1] = 0;
                libc::shm_unlink(path.as_ptr().cast());
            }
            libc::_exit(0)
        }
    }

    /// Registers (`R<name>`) or unregisters (`U<name>`) one name in the table.
    fn apply(table: &mut [u8], line: &[u8]) {
        let (Some(&kind), name) = (line.first(), line.get(1..).unwrap_or_default()) else {
            return;
        };
        if name.is_empty() || name.len() > MAX_NAME {
            return;
        }
        let found = table
            .chunks_mut(SLOT)
            .position(|s| s[0] as usize == name.len() && &s[1..=name.len()] == name);
        match (kind, found) {
            (b'R', None) => {
                if let Some(slot) = table.chunks_mut(SLOT).find(|s| s[0] == 0) {
                    slot[0] = name.len() as u8;
                    slot[1..=name.len()].copy_from_slice(name);
                }
            }
            (b'U', Some(i)) => table[i * SLOT] = 0,
            _ => {}
        }
    }

    /// Closes every descriptor from `first` up.
    unsafe fn close_from(first: libc::c_int) {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            // SAFETY: close_range on this process's own table.
            if unsafe {
                libc::syscall(
                    libc::SYS_close_range,
                    first as libc::c_uint,
                    libc::c_uint::MAX,
                    0,
                )
            } == 0
            {
                return;
            }
        }
        // SAFETY: getrlimit fills the structure; closing descriptors of this process.
        unsafe {
            let mut rl: libc::rlimit = std::mem::zeroed();
            let max = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 {
                rl.rlim_cur.min(65536) as libc::c_int
            } else {
                1024
            };
            for i in first..max {
                libc::close(i);
            }
        }
    }
}
