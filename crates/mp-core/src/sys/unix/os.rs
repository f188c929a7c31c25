//! Small OS calls: signals, the child's runtime set-up, exit codes. The calls that differ
//! between Unix flavours live in `mp_unix` (`process`, `futex`, `memory`, `cloexec`).

use std::io;

use crate::sys::Signal;

/// This process's id, cached per thread and fork (see `mp_unix::process::current_pid`).
pub(crate) fn current_pid() -> u32 {
    mp_unix::process::current_pid()
}

/// Whether this process gets `SIGKILL` when its parent dies (Linux: a parent-death signal
/// was armed before it started, see `mp_unix::process::arm_parent_death_signal`; it survives `exec`).
pub(crate) fn parent_death_signal_armed() -> bool {
    #[cfg(target_os = "linux")]
    {
        let mut sig: libc::c_int = 0;
        // SAFETY: PR_GET_PDEATHSIG writes one int through the pointer.
        let rc = unsafe { libc::prctl(libc::PR_GET_PDEATHSIG, &mut sig as *mut libc::c_int) };
        rc == 0 && sig == libc::SIGKILL
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

pub(crate) fn send_signal(pid: u32, signal: Signal) -> io::Result<()> {
    let sig = match signal {
        Signal::Terminate => libc::SIGTERM,
        Signal::Kill => libc::SIGKILL,
        Signal::Interrupt => libc::SIGINT,
    };
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(pid as libc::pid_t, sig) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ESRCH) {
            return Err(e);
        }
    }
    Ok(())
}

/// A child whose parent died: go, the way the parent-death signal would have sent us.
pub(crate) fn die_with_parent_now() -> ! {
    // SAFETY: raising SIGKILL on ourselves; _exit is the fallback if it somehow returns.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
        libc::_exit(1)
    }
}

/// A child booted before `main` did not get the runtime set-up `main` gets: ignore `SIGPIPE`
/// as Rust programs do, so a write to a vanished peer is an error, not death.
pub(crate) fn prepare_child_runtime() {
    // SAFETY: setting a signal disposition to SIG_IGN is always sound.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// A server process (a manager) ignores Ctrl-C, which the terminal sends to the whole
/// process group: its owner decides when it stops, as in Python.
pub(crate) fn ignore_interrupts() {
    // SAFETY: setting a signal disposition to SIG_IGN is always sound.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
    }
}

/// Converts a `waitpid` status into Python's exit code: the code, or minus the signal.
pub(crate) fn exit_code(status: libc::c_int) -> i32 {
    if libc::WIFSIGNALED(status) {
        -libc::WTERMSIG(status)
    } else {
        libc::WEXITSTATUS(status)
    }
}

/// The machine's physical memory in bytes, if the system says.
pub(crate) fn physical_memory() -> Option<u64> {
    // SAFETY: sysconf only reads system configuration.
    let (pages, size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let (pages, size) = (u64::try_from(pages).ok()?, u64::try_from(size).ok()?);
    pages.checked_mul(size).filter(|&b| b > 0)
}
