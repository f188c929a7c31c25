//! Shared memory on Unix, written once for every crate of `mp`: anonymous objects
//! ([`anonymous_object`]; [`create`], sized once, its size sealed where the system can),
//! growable spool files ([`growable_object`]), their size, and [`map`], which makes the one
//! mapping type of `mp` ([`Mapping`]) that `mp-core`'s segments and `mp-shm`'s rings hold.
//!
//! | flavour   | [`anonymous_object`] (sized once, mapped) | [`growable_object`] (`pread`/`pwrite`, grows, shrinks) |
//! |-----------|--------------------------------------------|---------------------------------------------------------|
//! | `linux`   | `memfd_create`                             | `memfd_create`                                          |
//! | `freebsd` | `shm_open(SHM_ANON)`                       | `memfd_create` (FreeBSD 13+; grows on write)            |
//! | `apple`   | `shm_open` of a unique name, unlinked at once | a temporary file, unlinked at once                   |
//! | `generic` | as `apple`                                 | as `apple`                                              |
//!
//! Every object is close-on-exec from its creation and is freed by the kernel when the last
//! process holding it closes it or dies. A POSIX shared-memory object on macOS cannot be
//! read or written with `pread`/`pwrite`, nor resized after its first `ftruncate`, hence the
//! temporary file for growable objects there (it lives in the page cache like any file and
//! is written to disk only under memory pressure or never).
//!
//! **Shrunk objects.** Where the size of an object is not sealed ([`size_is_sealed`]:
//! `shm_open` objects, named or anonymous, on every Unix, and every object outside Linux),
//! another process holding it can shrink it under our mapping; the next access past the new
//! end would kill this process with `SIGBUS`. [`map`] registers such mappings with a
//! `SIGBUS` handler that replaces the mapping with private zero pages instead and marks it
//! damaged ([`Mapping::damaged`]); a `SIGBUS` anywhere else is handed on as before (see
//! `watch.rs`).

mod watch;

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
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
/// if mp_unix::FLAVOUR == "linux" {
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
    if unsafe { libc::ftruncate(fd.as_raw_fd(), len) } != 0 {
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
/// If the object's size is not sealed, the mapping is watched: should another process shrink
/// the object, an access that faults past its end completes on private zero pages that
/// replace the whole mapping, and [`Mapping::damaged`] turns true, instead of this process
/// dying of `SIGBUS`.
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
    if !size_is_sealed(fd) {
        if let Some(damage) = watch::register(p as usize, len) {
            // SAFETY: a fresh mapping of `len` (at least one) bytes, released only by
            // `unmap_watched`; the flag is its registry slot's, cleared, until then.
            return Ok(unsafe { Mapping::from_raw_watched(ptr, len, unmap_watched, damage) });
        }
    }
    // SAFETY: a fresh mapping of `len` (at least one) bytes, released only by `unmap`.
    Ok(unsafe { Mapping::from_raw(ptr, len, unmap) })
}

/// Releases what [`map`] mapped and registered with the `SIGBUS` guard: forgotten by the
/// guard first, so that the address range, once reused, is not taken for ours.
///
/// # Safety
/// As [`unmap`].
unsafe fn unmap_watched(ptr: NonNull<u8>, len: usize) {
    watch::unregister(ptr.as_ptr() as usize);
    // SAFETY: per the contract.
    unsafe { unmap(ptr, len) }
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
/// frees it when the last process holding it closes it or dies. Give it a size with
/// `ftruncate` once, then map it. `label` shows in `/proc/<pid>/fd` on Linux
/// (`memfd_create`); with `shm_open` the object has a unique short name for the instant
/// between its creation and its unlinking.
///
/// ```
/// let fd = mp_unix::memory::anonymous_object(c"doc").unwrap();
/// drop(fd);
/// ```
pub fn anonymous_object(label: &std::ffi::CStr) -> io::Result<OwnedFd> {
    imp::anonymous_object(label)
}

/// A new, empty, close-on-exec object that several processes read and write by offset
/// (`pread`/`pwrite`), that grows when written past its end and shrinks with `ftruncate`,
/// and that the kernel frees with its last holder: a `memfd` where the OS has one, an
/// unlinked temporary file elsewhere.
///
/// ```
/// use std::os::unix::fs::FileExt;
/// let f = std::fs::File::from(mp_unix::memory::growable_object(c"doc").unwrap());
/// f.write_all_at(b"abc", 4096).unwrap();
/// let mut b = [0u8; 3];
/// f.read_exact_at(&mut b, 4096).unwrap();
/// assert_eq!(&b, b"abc");
/// ```
pub fn growable_object(label: &std::ffi::CStr) -> io::Result<OwnedFd> {
    imp::growable_object(label)
}

/// Frees the memory of `[offset, offset + len)` of a [`growable_object`], keeping its size
/// and offsets (Linux: a hole punched with `fallocate`). Elsewhere nothing is freed until the
/// object is truncated.
pub fn release_range(fd: &OwnedFd, offset: u64, len: u64) {
    #[cfg(mp_os = "linux")]
    // SAFETY: fallocate on a descriptor we hold; failure only means nothing is freed.
    unsafe {
        use std::os::fd::AsRawFd;
        libc::fallocate(
            fd.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset as libc::off_t,
            len as libc::off_t,
        );
    }
    #[cfg(not(mp_os = "linux"))]
    let _ = (fd, offset, len);
}

/// Whether the size of the object behind `fd` can no longer change (sealed on Linux; an
/// object received from another process may not be). Never true on other systems.
pub fn size_is_sealed(fd: impl AsFd) -> bool {
    imp::size_is_sealed(fd.as_fd())
}

/// `memfd_create` with `flags` besides close-on-exec.
#[cfg(any(mp_os = "linux", mp_os = "freebsd"))]
fn memfd(label: &std::ffi::CStr, flags: libc::c_uint) -> io::Result<OwnedFd> {
    // SAFETY: memfd_create with a valid C string; returns a new descriptor or -1.
    let fd = unsafe { libc::memfd_create(label.as_ptr(), libc::MFD_CLOEXEC | flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(mp_os = "linux")]
mod imp {
    use super::*;

    pub(super) fn anonymous_object(label: &std::ffi::CStr) -> io::Result<OwnedFd> {
        memfd(label, libc::MFD_ALLOW_SEALING)
    }

    pub(super) fn growable_object(label: &std::ffi::CStr) -> io::Result<OwnedFd> {
        memfd(label, 0)
    }

    const SIZE_SEALS: libc::c_int = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;

    pub(super) fn seal_size(fd: &OwnedFd) -> io::Result<()> {
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

    pub(super) fn size_is_sealed(fd: BorrowedFd<'_>) -> bool {
        // SAFETY: reading the seals of a descriptor we hold.
        let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
        seals >= 0 && seals & SIZE_SEALS == SIZE_SEALS
    }
}

/// Where sizes are not sealed: nothing to do, never sealed.
#[cfg(not(mp_os = "linux"))]
mod unsealed {
    use super::*;

    pub(super) fn seal_size(_fd: &OwnedFd) -> io::Result<()> {
        Ok(())
    }

    pub(super) fn size_is_sealed(_fd: BorrowedFd<'_>) -> bool {
        false
    }
}

#[cfg(mp_os = "freebsd")]
mod imp {
    pub(super) use super::unsealed::{seal_size, size_is_sealed};
    use super::*;

    pub(super) fn anonymous_object(_label: &std::ffi::CStr) -> io::Result<OwnedFd> {
        // SAFETY: shm_open with SHM_ANON creates an object no name refers to; libc adds
        // O_CLOEXEC as well.
        let fd = unsafe { libc::shm_open(libc::SHM_ANON, libc::O_RDWR | libc::O_CLOEXEC, 0o600) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor we own.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    pub(super) fn growable_object(label: &std::ffi::CStr) -> io::Result<OwnedFd> {
        // An SHM_ANON object does not grow on write; a memfd (same kind of object, with
        // SHM_GROW_ON_WRITE) does.
        memfd(label, 0)
    }
}

#[cfg(any(mp_os = "apple", mp_os = "generic"))]
mod imp {
    use std::ffi::CString;
    use std::sync::atomic::{AtomicU64, Ordering};

    pub(super) use super::unsealed::{seal_size, size_is_sealed};
    use super::*;

    /// `prefix` followed by a part no other creation of this process uses and another
    /// process is unlikely to guess (pid, a counter and the clock), cut to `max` bytes.
    fn unique(prefix: &str, max: usize) -> String {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mix = nanos ^ N.fetch_add(1, Ordering::Relaxed).rotate_left(40);
        let mut name = format!("{prefix}{:x}.{mix:016x}", std::process::id());
        name.truncate(max);
        name
    }

    /// Calls `create` with fresh names until one is not taken (`EEXIST`), a few times.
    fn create_unique(
        prefix: &str,
        max: usize,
        create: impl Fn(&CString) -> io::Result<OwnedFd>,
    ) -> io::Result<OwnedFd> {
        let mut last = None;
        for _ in 0..16 {
            let name = CString::new(unique(prefix, max)).map_err(io::Error::other)?;
            match create(&name) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
                r => return r,
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no free name")))
    }

    /// The longest POSIX shared-memory name macOS takes, the leading `/` included.
    const SHM_NAME_MAX: usize = 31;

    pub(super) fn anonymous_object(label: &std::ffi::CStr) -> io::Result<OwnedFd> {
        // The label (at most 12 bytes of it) shows in the name, and so in `/proc/<pid>/fd`
        // on Linux; at least 8 hex digits of the unique part remain.
        let label: String = label.to_string_lossy().chars().take(12).collect();
        create_unique(&format!("/{label}."), SHM_NAME_MAX, |name| {
            // SAFETY: shm_open/shm_unlink with a valid C string. POSIX makes the new
            // descriptor close-on-exec (macOS does so whatever the flags say).
            unsafe {
                let fd = libc::shm_open(
                    name.as_ptr(),
                    libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
                    0o600 as libc::c_uint,
                );
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                let fd = OwnedFd::from_raw_fd(fd);
                libc::shm_unlink(name.as_ptr());
                Ok(fd)
            }
        })
    }

    pub(super) fn growable_object(label: &std::ffi::CStr) -> io::Result<OwnedFd> {
        let dir = std::env::temp_dir();
        let prefix = format!(
            "{}/.{}-",
            dir.to_string_lossy().trim_end_matches('/'),
            label.to_string_lossy()
        );
        create_unique(&prefix, usize::MAX, |path| {
            // SAFETY: open/unlink with a valid C string; O_CLOEXEC is atomic everywhere.
            unsafe {
                let fd = libc::open(
                    path.as_ptr(),
                    libc::O_RDWR
                        | libc::O_CREAT
                        | libc::O_EXCL
                        | libc::O_NOFOLLOW
                        | libc::O_CLOEXEC,
                    0o600 as libc::c_uint,
                );
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                let fd = OwnedFd::from_raw_fd(fd);
                libc::unlink(path.as_ptr());
                Ok(fd)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use super::*;

    fn cloexec(fd: &OwnedFd) -> bool {
        // SAFETY: F_GETFD on a live descriptor.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) & libc::FD_CLOEXEC != 0 }
    }

    #[test]
    fn an_anonymous_object_is_sized_once_and_shared_by_its_mappings() {
        let fd = anonymous_object(c"test").unwrap();
        assert!(cloexec(&fd));
        // SAFETY: ftruncate and two mappings of a descriptor we own, unmapped below.
        unsafe {
            assert_eq!(libc::ftruncate(fd.as_raw_fd(), 4096), 0);
            let map = || {
                libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd.as_raw_fd(),
                    0,
                )
            };
            let (a, b) = (map(), map());
            assert!(a != libc::MAP_FAILED && b != libc::MAP_FAILED);
            *a.cast::<u8>().add(100) = 42;
            assert_eq!(*b.cast::<u8>().add(100), 42);
            libc::munmap(a, 4096);
            libc::munmap(b, 4096);
        }
    }

    #[test]
    fn a_shrunk_object_damages_its_mapping_instead_of_killing() {
        // Not sealed, so watched, on every flavour.
        let fd = anonymous_object(c"mp-test").unwrap();
        // SAFETY: ftruncate on a descriptor we own.
        assert_eq!(unsafe { libc::ftruncate(fd.as_raw_fd(), 3 * 4096) }, 0);
        assert!(!size_is_sealed(&fd));
        let map = map(fd.as_fd(), 3 * 4096).unwrap();
        let p = map.as_ptr();
        // SAFETY: inside the mapping.
        unsafe { p.add(5000).write_volatile(9) };
        assert!(!map.damaged());
        // What a hostile peer holding the object does.
        // SAFETY: as above.
        assert_eq!(unsafe { libc::ftruncate(fd.as_raw_fd(), 0) }, 0);
        // SAFETY: inside the mapping; the access faults, and completes on zero pages.
        let v = unsafe { p.add(5000).read_volatile() };
        assert_eq!(v, 0);
        assert!(map.damaged());
        // Writes go to private pages now, and no longer fault.
        // SAFETY: inside the mapping.
        unsafe {
            p.add(3 * 4096 - 1).write_volatile(1);
            assert_eq!(p.add(3 * 4096 - 1).read_volatile(), 1);
        }
        // A sealed object's mapping is not watched (and never damaged).
        let sealed = create(c"mp-test", 4096).unwrap();
        let m2 = super::map(sealed.as_fd(), 4096).unwrap();
        assert!(!m2.damaged());
        drop(map);
        drop(m2);
    }

    /// The test binary runs itself with this variable set to run one test's child part.
    const CHILD: &str = "MP_UNIX_SIGBUS_CHILD";

    #[test]
    fn a_sigbus_elsewhere_still_kills() {
        use std::os::unix::process::ExitStatusExt;
        if std::env::var_os(CHILD).is_some() {
            // The guard is installed (a watched mapping exists) ...
            let guarded = anonymous_object(c"mp-test").unwrap();
            // SAFETY: ftruncate on a descriptor we own.
            assert_eq!(unsafe { libc::ftruncate(guarded.as_raw_fd(), 4096) }, 0);
            let _m = map(guarded.as_fd(), 4096).unwrap();
            // ... and a mapping of a file it does not know, shrunk, faults.
            let f = growable_object(c"mp-test").unwrap();
            // SAFETY: ftruncate, mmap of a descriptor we own, and an access past the end
            // of the file that must kill this process.
            unsafe {
                assert_eq!(libc::ftruncate(f.as_raw_fd(), 4096), 0);
                let p = libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    f.as_raw_fd(),
                    0,
                );
                assert_ne!(p, libc::MAP_FAILED);
                assert_eq!(libc::ftruncate(f.as_raw_fd(), 0), 0);
                std::ptr::read_volatile(p.cast::<u8>());
            }
            std::process::exit(0); // not reached
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "memory::tests::a_sigbus_elsewhere_still_kills",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGBUS),
            "{:?}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn a_growable_object_grows_on_write_and_shrinks() {
        let fd = growable_object(c"mp-test").unwrap();
        assert!(cloexec(&fd));
        let f = std::fs::File::from(fd);
        f.write_all_at(b"hello", 10_000).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 10_005);
        let mut b = [1u8; 5];
        f.read_exact_at(&mut b, 0).unwrap();
        assert_eq!(b, [0; 5]);
        f.set_len(0).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 0);
        f.write_all_at(b"x", 3).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 4);
    }
}
