//! Windows: named-pipe channels, handle duplication into children, `CreateProcess` (through
//! `std::process::Command`), a kill-on-close job object, and process handles as sentinels.
//!
//! Only the spawn start method exists: there is no `fork` on Windows.

pub(super) mod forkserver;
pub(super) mod handoff;
pub(super) mod listener;
pub(super) mod memory;
pub(super) mod os;
pub(super) mod spool;
pub(super) mod start;

use std::io;
use std::time::Duration;

use mp_ipc::handle::{AsRawHandle, OwnedHandle, RawHandle};
use mp_ipc::IpcError;

use crate::StartMethod;

/// The transport of pipes and boot channels.
pub(crate) type Chan = mp_windows::PipeChannel;

/// The socket transport of this platform.
pub(crate) type SocketTransport = mp_windows::NamedPipe;

/// Start methods of this platform, the default first.
pub(crate) const AVAILABLE_START_METHODS: &[StartMethod] = &[StartMethod::Spawn];

pub(crate) fn chan_pair() -> io::Result<(Chan, Chan)> {
    Chan::pair()
}

pub(crate) fn chan_from_handle(h: OwnedHandle) -> io::Result<Chan> {
    Chan::from_handle(h)
}

pub(crate) fn chan_raw_handle(c: &Chan) -> RawHandle {
    c.as_raw_handle()
}

pub(crate) fn chan_try_clone(c: &Chan) -> io::Result<Chan> {
    c.try_clone()
}

/// Boot messages are never written before the child starts: their handles are duplicated
/// into the child's process, which must exist by then.
pub(crate) const EARLY_BOOT_MAX: usize = 0;

/// Sends a boot message with the handles the child inherits: each handle is duplicated into
/// the child, found through the boot channel's pair id, which [`spawn_child`] recorded.
pub(crate) fn send_with_handles(
    c: &Chan,
    bytes: &[u8],
    handles: &[RawHandle],
) -> Result<(), IpcError> {
    let target = start::take_boot_target(c.pair_id());
    mp_windows::handle::send_with_handles(
        c,
        target.as_ref().map(|t| t.as_raw_handle()),
        bytes,
        handles,
    )
}

/// Receives a boot message and its handles.
pub(crate) fn recv_with_handles(
    c: &Chan,
    buf: &mut Vec<u8>,
    max: u64,
) -> Result<Vec<OwnedHandle>, IpcError> {
    mp_windows::handle::recv_with_handles(c, buf, max)
}

/// Windows channels do not spin before they sleep.
pub(crate) fn socket_spin_limit() -> Duration {
    Duration::ZERO
}

/// Nothing to set: Windows channels do not spin.
pub(crate) fn set_socket_spin_limit(_limit: Duration) {}

/// The handle [`wait`](crate::wait) watches for a socket: the `SOCKET`, which the Windows
/// wait recognises and polls with `WSAPoll`.
pub(crate) fn socket_handle(s: &impl std::os::windows::io::AsRawSocket) -> RawHandle {
    s.as_raw_socket() as usize as RawHandle
}

/// Waits until any handle is ready (a pipe with bytes or at end of stream, a process that
/// has ended); returns the ready indices. Polls with backoff: see [`mp_windows::poll`].
pub(crate) fn wait_readable(
    handles: &[RawHandle],
    timeout: Option<Duration>,
) -> io::Result<Vec<usize>> {
    mp_windows::poll::poll_many(handles, timeout)
}

/// The boot channel of a child, as the value of the boot environment variable: `kind:handle`,
/// where `handle` is the value of an inheritable handle the child inherits (same value there).
pub(super) fn boot_env_value(kind: &str, chan: &Chan) -> String {
    format!("{kind}:{}", chan.as_raw_handle() as usize)
}

/// Takes the boot channel named by the boot environment variable: a pipe handle inherited
/// from the parent. Anything that is not an open pipe handle is refused without being
/// closed (it may belong to someone else).
pub(crate) fn boot_chan_from_env(value: &str) -> io::Result<Chan> {
    let handle: usize = value.parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad boot handle {value:?}"),
        )
    })?;
    let h = handle as RawHandle;
    if handle == 0 || !mp_windows::handle::is_pipe(h) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("boot handle {value:?} is not an inherited pipe"),
        ));
    }
    // Keep it out of the processes this child starts itself.
    mp_windows::spawn::set_non_inheritable(h)?;
    // SAFETY: the parent made exactly this handle inheritable for us; nobody else in this
    // fresh process owns it.
    unsafe { Chan::from_raw_handle(h) }
}

/// Registers the constructor that runs a child's target before `main`: a pointer in the
/// CRT's C++ initializer table (`.CRT$XCU`), which the C runtime calls before `main`.
pub(crate) fn link_boot_constructor() {
    #[used]
    #[link_section = ".CRT$XCU"]
    static BOOT_CONSTRUCTOR: extern "C" fn() = boot_constructor;
    extern "C" fn boot_constructor() {
        crate::process::child::boot_from_env();
    }
    std::hint::black_box(&BOOT_CONSTRUCTOR);
}

extern "C" {
    /// The C runtime's exit-hook registration (msvcrt / ucrt).
    fn atexit(hook: extern "C" fn()) -> std::ffi::c_int;
}

/// The hooks [`at_exit`] registered (at most a few: mp registers one).
static EXIT_HOOKS: std::sync::Mutex<Vec<extern "C" fn()>> = std::sync::Mutex::new(Vec::new());

/// Runs the registered hooks, once, whichever exit path gets here first.
extern "C" fn run_exit_hooks() {
    use std::sync::atomic::{AtomicBool, Ordering};
    static RAN: AtomicBool = AtomicBool::new(false);
    if RAN.swap(true, Ordering::SeqCst) {
        return;
    }
    // try_lock: on the ExitProcess path other threads are gone, possibly holding the lock.
    let hooks = match EXIT_HOOKS.try_lock() {
        Ok(h) => h.clone(),
        Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner().clone(),
        Err(std::sync::TryLockError::WouldBlock) => return,
    };
    for hook in hooks {
        hook();
    }
}

/// Runs `hook` when the process exits normally: when `main` returns (the C runtime's
/// `atexit`) and on `std::process::exit`, which on Windows is `ExitProcess` and skips the C
/// runtime's hooks (there, a TLS callback sees the process detach; by then the other threads
/// have ended). Not on `TerminateProcess`, as on Unix not on `SIGKILL`.
pub(crate) fn at_exit(hook: extern "C" fn()) {
    /// A TLS callback of the executable: the loader calls it with `DLL_PROCESS_DETACH` when
    /// the process exits through `ExitProcess`. Placed before std's own callback (`XLB`),
    /// so the hooks run while this thread's thread-locals still exist.
    #[used]
    #[link_section = ".CRT$XLAB"]
    static EXIT_CALLBACK: unsafe extern "system" fn(
        *mut std::ffi::c_void,
        u32,
        *mut std::ffi::c_void,
    ) = on_tls_event;
    unsafe extern "system" fn on_tls_event(
        _module: *mut std::ffi::c_void,
        reason: u32,
        _reserved: *mut std::ffi::c_void,
    ) {
        const DLL_PROCESS_DETACH: u32 = 0;
        if reason == DLL_PROCESS_DETACH && REGISTERED.load(std::sync::atomic::Ordering::SeqCst) {
            run_exit_hooks();
        }
    }
    static REGISTERED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    std::hint::black_box(&EXIT_CALLBACK);
    EXIT_HOOKS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(hook);
    if !REGISTERED.swap(true, std::sync::atomic::Ordering::SeqCst) {
        // SAFETY: registering a plain function pointer.
        unsafe {
            atexit(run_exit_hooks);
        }
    }
}

/// How long a child that exits waits for the receivers of the handles it sent to take them
/// (see `mp_windows::handle::linger_for_exports`).
const EXPORT_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Ends a child the way `main` returning would: exit hooks first (which `ExitProcess`
/// skips), then the exit itself.
pub(crate) fn exit_process(code: i32) -> ! {
    // Handles this process just sent (a `SharedVec`, a connection) are taken out of it by
    // their receiver, which cannot once it has ended: give the receivers a moment.
    mp_windows::handle::linger_for_exports(EXPORT_GRACE);
    run_exit_hooks();
    std::process::exit(code)
}

/// Windows has no forked children; exits as [`exit_process`] does.
pub(crate) fn exit_forked_child(code: i32) -> ! {
    exit_process(code)
}
