//! The child's side: boot from the environment, run the target, report, exit.
//!
//! A spawned child is recognised by the boot environment variable before `main` runs (see
//! [`crate::main`]). It receives its [`Boot`] message and handles, takes on its identity,
//! starts a watchdog on the boot channel (the parent's death closes it), installs a panic
//! hook that reports panics of the target's thread to the parent, runs the target, and
//! exits with 0, or 1 after a panic (Python's code for an uncaught exception).
//!
//! Threads the target started and did not join end with the process when the target
//! returns, as threads do when a Rust `main` returns (Python would wait for its non-daemon
//! threads).

use std::cell::Cell;
use std::io::Write;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Once;
use std::thread;

use mp_ipc::Channel;

use super::boot::{Boot, Report, ENV_BOOT};
use super::registry;
use crate::sys::{self, Chan};
use crate::StartMethod;

/// Where this child reports to, and which thread runs its target.
/// Set once per child (never freed: a process has one), read by the panic hook. An atomic
/// pointer rather than a lock, so that a fork can never copy it in a locked state.
static REPORT_TO: AtomicPtr<Reporter> = AtomicPtr::new(std::ptr::null_mut());

struct Reporter {
    chan: Chan,
}

thread_local! {
    /// Set on the thread that runs this child's target, whose panics are reported. A plain
    /// flag rather than a `ThreadId`: taking the current thread's id creates its handle
    /// (an allocation and a TLS key) in every forked child, for a one-time check.
    static TARGET_THREAD: Cell<bool> = const { Cell::new(false) };
}

fn reporter() -> Option<&'static Reporter> {
    // SAFETY: the pointer is null or a leaked Box that is never freed.
    unsafe { REPORT_TO.load(Ordering::Acquire).as_ref() }
}

/// Runs the child's work if the boot variable is set; returns otherwise.
pub(crate) fn boot_from_env() {
    let Some(value) = std::env::var_os(ENV_BOOT) else {
        // Not a child of mp: perhaps a rank of an MPI job, which may serve as a worker.
        #[cfg(feature = "mpi")]
        crate::pool::mpi_boot_from_env();
        return;
    };
    // Grandchildren get their own variable; ours must not leak to them.
    std::env::remove_var(ENV_BOOT);
    let value = value.to_string_lossy().into_owned();
    let (kind, handle) = value.split_once(':').unwrap_or(("", ""));
    let chan = match sys::boot_chan_from_env(handle) {
        Ok(c) => c,
        Err(e) => fail_boot(&format!("cannot open the boot channel {value:?}: {e}")),
    };
    match kind {
        "spawn" => run_spawned(chan, StartMethod::Spawn),
        "forkserver" => sys::serve_forkserver(chan),
        _ => fail_boot(&format!("unknown boot kind in {value:?}")),
    }
}

fn fail_boot(msg: &str) -> ! {
    eprintln!("mp: {msg}");
    std::process::exit(1)
}

/// Receives the target over `chan` and runs it; never returns.
pub(crate) fn run_spawned(chan: Chan, method: StartMethod) -> ! {
    sys::prepare_child_runtime();
    let mut buf = Vec::new();
    let handles = match sys::recv_with_handles(&chan, &mut buf, 1 << 34) {
        Ok(h) => h,
        // The parent went away before it sent the work: nothing to do.
        Err(mp_ipc::IpcError::Eof) => std::process::exit(1),
        Err(e) => fail_boot(&format!("cannot receive the child's work: {e}")),
    };
    let boot: Boot = match crate::codec::decode(&buf) {
        Ok(b) => b,
        Err(e) => {
            let msg = format!("cannot decode the child's work: {e}");
            let _ = send_report(&chan, &Report::BootFailed(msg.clone()));
            fail_boot(&msg)
        }
    };
    drop(buf);
    registry::become_child(boot.identity, boot.parent_pid, boot.parent_name);
    crate::context::inherit_start_method(method);
    let mut handles = handles;
    let log_pipe = if boot.log.forwards() {
        handles.pop()
    } else {
        None
    };
    boot.log.install(log_pipe);
    let Boot { entry, args, .. } = boot;
    // A fork server's child is a fork: it leaves as one (see `exit_child`).
    let forked = method == StartMethod::ForkServer;
    run_child(chan, boot.outlive_parent, forked, move || {
        // SAFETY: the entry id was made by our parent, which runs this same executable.
        let trampoline = unsafe { entry.resolve() }.map_err(|e| e.to_string())?;
        trampoline(entry.type_name(), &args, handles)
    })
}

/// Runs a child's body with reporting and the parent watchdog, then exits. `forked`: the
/// process is a fork of another program's process (the fork start method, or a fork
/// server's child), which decides how it exits (see [`exit_child`]).
pub(crate) fn run_child(
    chan: Chan,
    outlive_parent: bool,
    forked: bool,
    body: impl FnOnce() -> Result<(), String>,
) -> ! {
    start_watchdog(&chan, outlive_parent);
    install_panic_hook();
    let reporter = Box::new(Reporter { chan });
    TARGET_THREAD.with(|t| t.set(true));
    // A forked grandchild replaces the reporter it inherited (its parent's, towards the
    // grandparent) and closes its copy of that channel. This runs before the target starts,
    // while nothing else in this process reads the pointer.
    let old = REPORT_TO.swap(Box::into_raw(reporter), Ordering::AcqRel);
    if !old.is_null() {
        // SAFETY: a leaked Box of the process we were forked from; nobody else holds it here.
        drop(unsafe { Box::from_raw(old) });
    }
    crate::logging::mp_log!(Info, "child process calling its target");
    let code = match panic::catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => 0,
        Ok(Err(msg)) => {
            report(&Report::BootFailed(msg.clone()));
            eprintln!("mp: {msg}");
            1
        }
        Err(_) => 1,
    };
    exit_child(code, forked)
}

/// Flushes, tells the parent the code, and exits.
///
/// A spawned child exits through the platform's exit path, so exit hooks run (mp's joins
/// this child's own children). A forked child joins its children itself and then leaves
/// without running the exit hooks it inherited from the program it was forked from, as
/// Python's forked children do (`os._exit`): they belong to that program (its C libraries'
/// clean-up, say), and running them costs the child about as much as the `fork` did.
fn exit_child(code: i32, forked: bool) -> ! {
    if forked {
        registry::finish_children();
    }
    crate::logging::mp_log!(Info, "process exiting with exitcode {code}");
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    report(&Report::Exiting(code));
    if forked {
        sys::exit_forked_child(code)
    }
    sys::exit_process(code)
}

fn send_report(chan: &Chan, report: &Report) -> Result<(), mp_ipc::IpcError> {
    let bytes = postcard::to_stdvec(report).unwrap_or_default();
    chan.send_frame(&[&bytes])
}

fn report(r: &Report) {
    if let Some(rep) = reporter() {
        let _ = send_report(&rep.chan, r);
    }
}

/// Reports panics of the target's thread to the parent, then lets the default hook print.
pub(crate) fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        super::panics::chain_panic_hook(|info, next| {
            let on_target_thread = reporter().is_some() && TARGET_THREAD.with(|t| t.get());
            if on_target_thread {
                let (message, location, backtrace) = describe_panic(info);
                report(&Report::Panicked {
                    message,
                    location,
                    backtrace,
                });
            }
            next(info);
        });
    });
}

/// Watches the boot channel: the parent never writes after the boot message, so the read
/// returns only when the parent's end closes, that is, when the parent is gone.
///
/// Not started when the kernel already kills this child with its parent (a parent-death
/// signal armed at start, Linux) and the child is not meant to outlive it: a thread costs
/// about as much as the `fork` itself (its stack, its creation, and tearing it down at
/// exit), and it would only ever see its own process die. `ParentProcess::is_alive` stays
/// true there, which is what it is for as long as this child can run.
fn start_watchdog(chan: &Chan, outlive_parent: bool) {
    if !outlive_parent && sys::parent_death_signal_armed() {
        return;
    }
    let Ok(watch) = sys::chan_try_clone(chan) else {
        return;
    };
    let _ = thread::Builder::new()
        .name("mp-parent-watchdog".into())
        .spawn(move || {
            let mut buf = Vec::new();
            while watch.recv_frame(&mut buf, 1 << 20).is_ok() {}
            registry::mark_parent_gone();
            if !outlive_parent {
                sys::die_with_parent_now();
            }
        });
}

/// A panic's message (its payload when that is text), location and a backtrace captured
/// whatever `RUST_BACKTRACE` says: what a parent is told about a child's panic.
pub(crate) fn describe_panic(info: &panic::PanicHookInfo<'_>) -> (String, String, String) {
    let message = if let Some(s) = info.payload().downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = info.payload().downcast_ref::<String>() {
        s.clone()
    } else {
        "Box<dyn Any>".to_string()
    };
    let location = info.location().map(|l| l.to_string()).unwrap_or_default();
    let backtrace = std::backtrace::Backtrace::force_capture().to_string();
    (message, location, backtrace)
}
