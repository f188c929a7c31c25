//! mp's panic hooks, and their turns with forks.
//!
//! While a panic hook captures a backtrace or prints a panic message, std holds a lock of
//! its own (the one that keeps backtraces and messages of several threads from mixing). A
//! fork made while another thread holds it copies it locked, and the child then waits for
//! it for ever at its first panic: found by `cargo xtask sanitize`, a forked pool worker
//! hung in `Backtrace::create` while another test thread of its parent was panicking. So
//! every hook of mp is installed through [`chain_panic_hook`], whose hooks run in turns
//! with forks: a fork ([`lock_for_fork`]) waits until no hook runs, and a panic during the
//! fork waits until the fork is made.

use std::cell::Cell;
use std::panic::{self, PanicHookInfo};
use std::sync::{RwLock, RwLockWriteGuard, TryLockError};
use std::time::{Duration, Instant};

/// Shared by running hooks, exclusive across a fork.
static TURN: RwLock<()> = RwLock::new(());

/// How long a hook waits for a fork to be made before it runs anyway. A fork takes well
/// under a millisecond; a longer wait means the forking thread waits for something the
/// panicking thread holds (the standard error lock, say, if it panicked while printing).
const TURN_WAIT: Duration = Duration::from_secs(1);

thread_local! {
    /// Set while this thread runs a hook: hooks chained under it share its turn.
    static IN_HOOK: Cell<bool> = const { Cell::new(false) };
}

/// The hook below one that [`chain_panic_hook`] installs.
pub(crate) type NextHook = dyn Fn(&PanicHookInfo<'_>) + Send + Sync;

/// Installs `hook` in front of the current panic hook, which `hook` receives to call or
/// not. The hook runs in its turn with forks (see the module's documentation).
pub(crate) fn chain_panic_hook(
    hook: impl Fn(&PanicHookInfo<'_>, &NextHook) + Send + Sync + 'static,
) {
    let next = panic::take_hook();
    panic::set_hook(Box::new(move |info| in_turn(|| hook(info, &*next))));
}

fn in_turn(body: impl FnOnce()) {
    if IN_HOOK.with(Cell::get) {
        return body();
    }
    let started = Instant::now();
    let _turn = loop {
        match TURN.try_read() {
            Ok(g) => break Some(g),
            Err(TryLockError::Poisoned(p)) => break Some(p.into_inner()),
            Err(TryLockError::WouldBlock) if started.elapsed() < TURN_WAIT => {
                std::thread::sleep(Duration::from_micros(100));
            }
            Err(TryLockError::WouldBlock) => break None,
        }
    };
    IN_HOOK.with(|h| h.set(true));
    body();
    IN_HOOK.with(|h| h.set(false));
}

/// Held across a fork, taken before any other lock of the fork: no hook of mp runs in
/// this process meanwhile. Each process drops its copy after the fork.
pub(crate) fn lock_for_fork() -> RwLockWriteGuard<'static, ()> {
    TURN.write().unwrap_or_else(|e| e.into_inner())
}
