//! What the kit needs of the platform to hand an end to a child: inheritance of exactly the
//! given handles, handle copies, a temporary file, and one readiness wait.

#[cfg(unix)]
pub(crate) use unix::*;
#[cfg(windows)]
pub(crate) use windows::*;

#[cfg(unix)]
mod unix {
    use std::fs::File;
    use std::io;
    use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};
    use std::os::unix::process::CommandExt;
    use std::process::{Child, Command};
    use std::time::Duration;

    /// A handle's value as the child will see it.
    pub(crate) fn handle_value(h: RawFd) -> usize {
        h as usize
    }

    /// Takes ownership of an inherited descriptor.
    ///
    /// # Safety
    /// `raw` must be an open descriptor nobody else in this process owns.
    pub(crate) unsafe fn owned_from_inherited(raw: usize) -> OwnedFd {
        // SAFETY: as the caller promises.
        unsafe { OwnedFd::from_raw_fd(raw as RawFd) }
    }

    /// Spawns `cmd` with `fds` inherited: close-on-exec is cleared in the child only,
    /// between fork and exec, so no other process started meanwhile inherits them.
    pub(crate) fn spawn_inheriting(cmd: &mut Command, fds: &[RawFd]) -> io::Result<Child> {
        let fds = fds.to_vec();
        // SAFETY: the closure only calls fcntl, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                for &fd in &fds {
                    if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        cmd.spawn()
    }

    /// A second descriptor for the same object.
    pub(crate) fn duplicate(fd: RawFd) -> io::Result<OwnedFd> {
        // SAFETY: the caller's descriptor stays open for the duration of this call.
        unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned()
    }

    /// A temporary file, unlinked at once.
    pub(crate) fn temp_file() -> io::Result<File> {
        let path = crate::temp_path();
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        std::fs::remove_file(&path)?;
        Ok(file)
    }

    /// Whether `fd` becomes readable within `timeout`.
    pub(crate) fn wait_readable(fd: RawFd, timeout: Duration) -> bool {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut p, 1, ms) };
        rc > 0 && p.revents != 0
    }
}

#[cfg(windows)]
mod windows {
    use std::fs::File;
    use std::io;
    use std::os::windows::fs::OpenOptionsExt;
    use std::os::windows::io::{BorrowedHandle, FromRawHandle, OwnedHandle, RawHandle};
    use std::process::{Child, Command};
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use windows_sys::Win32::Foundation::{SetHandleInformation, HANDLE, HANDLE_FLAG_INHERIT};
    use windows_sys::Win32::Storage::FileSystem::FILE_FLAG_DELETE_ON_CLOSE;
    use windows_sys::Win32::System::Pipes::PeekNamedPipe;
    use windows_sys::Win32::System::Threading::WaitForSingleObject;

    /// Spawns serialized: a handle made inheritable for one child must not reach another.
    static SPAWN: Mutex<()> = Mutex::new(());

    /// A handle's value as the child will see it (inherited handles keep their values).
    pub(crate) fn handle_value(h: RawHandle) -> usize {
        h as usize
    }

    /// Takes ownership of an inherited handle.
    ///
    /// # Safety
    /// `raw` must be an open handle nobody else in this process owns.
    pub(crate) unsafe fn owned_from_inherited(raw: usize) -> OwnedHandle {
        // SAFETY: as the caller promises.
        unsafe { OwnedHandle::from_raw_handle(raw as RawHandle) }
    }

    fn set_inherit(h: RawHandle, on: bool) -> io::Result<()> {
        let flag = if on { HANDLE_FLAG_INHERIT } else { 0 };
        // SAFETY: a flag change on a handle the caller holds open.
        if unsafe { SetHandleInformation(h as HANDLE, HANDLE_FLAG_INHERIT, flag) } == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Spawns `cmd` with `handles` inheritable for the moment of the spawn (std's
    /// `CreateProcess` inherits every inheritable handle; spawns of the kit are serialized).
    pub(crate) fn spawn_inheriting(cmd: &mut Command, handles: &[RawHandle]) -> io::Result<Child> {
        let _one_at_a_time = SPAWN.lock().unwrap_or_else(|e| e.into_inner());
        for &h in handles {
            set_inherit(h, true)?;
        }
        let child = cmd.spawn();
        for &h in handles {
            let _ = set_inherit(h, false);
        }
        child
    }

    /// A second handle for the same object.
    pub(crate) fn duplicate(h: RawHandle) -> io::Result<OwnedHandle> {
        // SAFETY: the caller's handle stays open for the duration of this call.
        unsafe { BorrowedHandle::borrow_raw(h) }.try_clone_to_owned()
    }

    /// A temporary file, deleted when closed.
    pub(crate) fn temp_file() -> io::Result<File> {
        let path = crate::temp_path();
        File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .custom_flags(FILE_FLAG_DELETE_ON_CLOSE)
            .open(&path)
    }

    /// Whether `h` becomes ready within `timeout`: a pipe with bytes or at end of stream
    /// (`PeekNamedPipe`), or a signalled waitable object (an event).
    pub(crate) fn wait_readable(h: RawHandle, timeout: Duration) -> bool {
        let start = Instant::now();
        loop {
            let mut avail = 0u32;
            // SAFETY: a query on a handle the caller holds open; only `avail` is written.
            let peeked = unsafe {
                PeekNamedPipe(
                    h as HANDLE,
                    std::ptr::null_mut(),
                    0,
                    std::ptr::null_mut(),
                    &mut avail,
                    std::ptr::null_mut(),
                )
            };
            if peeked != 0 && avail > 0 {
                return true;
            }
            if peeked == 0 {
                // Not a pipe (an event), or a broken pipe (which a wait reports at once).
                // SAFETY: a wait on a handle the caller holds open.
                if unsafe { WaitForSingleObject(h as HANDLE, 10) } == 0 {
                    return true;
                }
            } else {
                std::thread::sleep(Duration::from_millis(1));
            }
            if start.elapsed() > timeout {
                return false;
            }
        }
    }
}
