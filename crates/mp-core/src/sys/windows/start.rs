//! Starting children (`CreateProcess` of the current executable) and waiting for them.
//!
//! How the boot channel reaches the child: the parent makes an inheritable copy of the
//! child's end and starts the child with exactly that handle (and the standard handles)
//! inherited, through a handle list ([`mp_windows::spawn`]); an inherited handle keeps its
//! value, which the boot environment variable carries. The child owns it from the start, so
//! it boots even if the parent dies right after starting it. Handles inside the boot message
//! travel the other way: the parent duplicates them into the child, whose process handle
//! [`spawn_child`] records under the boot channel's pair id for
//! [`send_with_handles`](super::send_with_handles).
//!
//! Dying with the parent: every child that does not outlive its parent goes into one job
//! object per parent process, created on first use with `JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE`.
//! The child is created suspended, put in the job, then resumed, so nothing it starts can
//! escape the job. The job handle is not inheritable, so when the parent ends, however it
//! ends, the system closes the job and kills the children. A child that may outlive its
//! parent is created with `CREATE_BREAKAWAY_FROM_JOB` (the job allows it), or without it
//! when the parent sits in a foreign job that forbids breaking away.

use std::ffi::OsStr;
use std::io;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle, RawHandle};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use mp_windows::handle::duplicate_local;
use mp_windows::spawn::{create_process, inheritable_copy};
use windows_sys::Win32::Foundation::{
    ERROR_ACCESS_DENIED, WAIT_FAILED, WAIT_OBJECT_0, WAIT_TIMEOUT,
};
use windows_sys::Win32::System::JobObjects::{
    AssignProcessToJobObject, CreateJobObjectW, JobObjectExtendedLimitInformation,
    SetInformationJobObject, JOBOBJECT_EXTENDED_LIMIT_INFORMATION, JOB_OBJECT_LIMIT_BREAKAWAY_OK,
    JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
};
use windows_sys::Win32::System::Threading::{
    GetExitCodeProcess, ResumeThread, TerminateProcess, WaitForSingleObject,
    CREATE_BREAKAWAY_FROM_JOB, CREATE_SUSPENDED, INFINITE,
};

use super::os::exit_code;
use super::Chan;
use crate::process::boot::ENV_BOOT;

/// Children's process handles by boot-channel pair id, from spawn until the boot message
/// is sent (or the child's waiter is dropped).
static BOOT_TARGETS: Mutex<Vec<(u64, OwnedHandle)>> = Mutex::new(Vec::new());

/// The process handle of the child whose boot channel has pair id `pair_id`, if any.
pub(super) fn take_boot_target(pair_id: u64) -> Option<OwnedHandle> {
    if pair_id == 0 {
        return None;
    }
    let mut targets = BOOT_TARGETS.lock().unwrap_or_else(|e| e.into_inner());
    let i = targets.iter().position(|(id, _)| *id == pair_id)?;
    Some(targets.swap_remove(i).1)
}

/// The job that kills this process's children when it ends (`None` if it cannot be made).
fn kill_on_close_job() -> Option<RawHandle> {
    static JOB: OnceLock<Option<OwnedHandle>> = OnceLock::new();
    JOB.get_or_init(|| {
        // SAFETY: an unnamed job with a non-inheritable handle.
        let h = unsafe { CreateJobObjectW(std::ptr::null(), std::ptr::null()) };
        if h.is_null() {
            return None;
        }
        // SAFETY: a fresh handle nobody else owns.
        let job = unsafe { OwnedHandle::from_raw_handle(h) };
        // SAFETY: the struct is plain data; zeroed means "no other limits".
        let mut info: JOBOBJECT_EXTENDED_LIMIT_INFORMATION = unsafe { std::mem::zeroed() };
        info.BasicLimitInformation.LimitFlags =
            JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE | JOB_OBJECT_LIMIT_BREAKAWAY_OK;
        // SAFETY: passes a live struct of the size announced.
        let ok = unsafe {
            SetInformationJobObject(
                job.as_raw_handle(),
                JobObjectExtendedLimitInformation,
                (&info as *const JOBOBJECT_EXTENDED_LIMIT_INFORMATION).cast(),
                std::mem::size_of::<JOBOBJECT_EXTENDED_LIMIT_INFORMATION>() as u32,
            )
        };
        (ok != 0).then_some(job)
    })
    .as_ref()
    .map(|j| j.as_raw_handle())
}

/// Runs the current executable as a child of `kind` ("spawn") whose boot channel is `boot`.
/// The child inherits `boot` and the standard handles, nothing else.
pub(crate) fn spawn_child(
    kind: &str,
    boot: &Chan,
    die_with_parent: bool,
) -> io::Result<(u32, Waiter)> {
    let exe = std::env::current_exe()?;
    // An inheritable copy; ours is closed once the child exists (it has its own).
    let child_end = Chan::from_handle(inheritable_copy(boot.as_raw_handle())?)?;
    let value = super::boot_env_value(kind, &child_end);
    let env = [(OsStr::new(ENV_BOOT), OsStr::new(&value))];
    let inherit = [child_end.as_raw_handle()];
    let child = if die_with_parent {
        create_process(&exe, &env, &inherit, CREATE_SUSPENDED)?
    } else {
        match create_process(
            &exe,
            &env,
            &inherit,
            CREATE_SUSPENDED | CREATE_BREAKAWAY_FROM_JOB,
        ) {
            Ok(c) => c,
            // In a foreign job that forbids breaking away: the child stays in it.
            Err(e) if e.raw_os_error() == Some(ERROR_ACCESS_DENIED as i32) => {
                create_process(&exe, &env, &inherit, CREATE_SUSPENDED)?
            }
            Err(e) => return Err(e),
        }
    };
    drop(child_end);
    if die_with_parent {
        if let Some(job) = kill_on_close_job() {
            // Failure (a system without nested jobs) leaves the child's watchdog, which
            // ends it when the boot channel closes.
            // SAFETY: both handles are live.
            unsafe {
                AssignProcessToJobObject(job, child.process.as_raw_handle());
            }
        }
    }
    // SAFETY: resuming the suspended main thread of our new child.
    if unsafe { ResumeThread(child.thread.as_raw_handle()) } == u32::MAX {
        let e = io::Error::last_os_error();
        // SAFETY: ending the child we could not start.
        unsafe {
            TerminateProcess(child.process.as_raw_handle(), 1);
        }
        return Err(e);
    }
    if boot.pair_id() != 0 {
        if let Ok(target) = duplicate_local(child.process.as_raw_handle()) {
            BOOT_TARGETS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((boot.pair_id(), target));
        }
    }
    Ok((
        child.pid,
        Waiter::new(child.pid, child.process, boot.pair_id()),
    ))
}

pub(super) fn unsupported(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!("{what} is not available on Windows"),
    )
}

/// Fork does not exist on Windows.
pub(crate) fn fork_child(
    _die_with_parent: bool,
    _body: impl FnOnce(),
) -> io::Result<(u32, Waiter)> {
    Err(unsupported("the fork start method"))
}

/// Only meaningful after fork; nothing to do on Windows.
pub(crate) fn close_inherited(_h: RawHandle) {}

/// What ended a child, as far as the waiting side knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Python's exit code: the status, or `-15` after `terminate()`/`kill()`.
    Code(i32),
    /// The child has ended but its status is unknown (never on Windows: a process handle
    /// always yields the exit code).
    #[allow(dead_code)]
    Unknown,
}

/// Waits for one child through its process handle, which is also its sentinel.
#[derive(Debug)]
pub(crate) struct Waiter {
    pid: u32,
    process: OwnedHandle,
    pair_id: u64,
}

impl Waiter {
    fn new(pid: u32, process: OwnedHandle, pair_id: u64) -> Self {
        Self {
            pid,
            process,
            pair_id,
        }
    }

    /// Waits for the process behind `process` (a handle with `SYNCHRONIZE` and
    /// `PROCESS_QUERY_LIMITED_INFORMATION` access).
    #[allow(dead_code)]
    pub(crate) fn direct(pid: u32, process: OwnedHandle) -> Self {
        Self::new(pid, process, 0)
    }

    /// The process handle: waitable, signalled once the child has ended.
    pub(crate) fn sentinel(&self) -> Option<RawHandle> {
        Some(self.process.as_raw_handle())
    }

    /// The exit status if the child has ended, without blocking.
    pub(crate) fn try_wait(&self) -> io::Result<Option<Exit>> {
        // SAFETY: a zero-timeout wait on a live process handle only looks.
        match unsafe { WaitForSingleObject(self.process.as_raw_handle(), 0) } {
            WAIT_OBJECT_0 => self.ended().map(Some),
            WAIT_TIMEOUT => Ok(None),
            WAIT_FAILED => Err(io::Error::last_os_error()),
            other => Err(io::Error::other(format!(
                "unexpected wait result {other:#x} for process {}",
                self.pid
            ))),
        }
    }

    fn ended(&self) -> io::Result<Exit> {
        let mut status = 0u32;
        // SAFETY: writes the exit status into a live integer.
        if unsafe { GetExitCodeProcess(self.process.as_raw_handle(), &mut status) } == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Exit::Code(exit_code(status)))
    }

    /// Waits up to `timeout` (`None`: without limit) for the child to end.
    pub(crate) fn wait(&self, timeout: Option<Duration>) -> io::Result<Option<Exit>> {
        let deadline = mp_ipc::deadline::Deadline::from_timeout(timeout).instant();
        loop {
            let ms = match deadline {
                None => INFINITE,
                Some(d) => mp_windows::poll::millis_until(d),
            };
            // SAFETY: waiting on a live process handle.
            match unsafe { WaitForSingleObject(self.process.as_raw_handle(), ms) } {
                WAIT_OBJECT_0 => return self.ended().map(Some),
                WAIT_TIMEOUT => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Ok(None);
                    }
                }
                WAIT_FAILED => return Err(io::Error::last_os_error()),
                other => {
                    return Err(io::Error::other(format!(
                        "unexpected wait result {other:#x} for process {}",
                        self.pid
                    )))
                }
            }
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        // A child whose boot message was never sent: forget its process handle.
        drop(take_boot_target(self.pair_id));
    }
}
