//! Process-wide state: who this process is, who its parent is, and which children it has
//! started and not yet reaped. At exit, as in Python, daemon children are terminated and
//! the others are joined.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use super::boot::Identity;
use super::running::Running;
use super::ProcessInfo;
use crate::sys::{self, Signal};

static CHILDREN: Mutex<Vec<Arc<Running>>> = Mutex::new(Vec::new());
static NEXT_CHILD: AtomicU32 = AtomicU32::new(1);
static IDENTITY: RwLock<Option<Identity>> = RwLock::new(None);
static PARENT: Mutex<Option<(u32, String)>> = Mutex::new(None);
static PARENT_GONE: (Mutex<bool>, Condvar) = (Mutex::new(false), Condvar::new());
static AT_EXIT_REGISTERED: AtomicBool = AtomicBool::new(false);

/// This process's pid, without a system call after the first (the cache follows forks).
pub(crate) fn my_pid() -> u32 {
    sys::current_pid()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn main_identity() -> Identity {
    let mut authkey = vec![0u8; 32];
    getrandom::fill(&mut authkey).expect("the OS random source failed");
    Identity {
        name: "MainProcess".into(),
        path: Vec::new(),
        daemon: false,
        authkey,
    }
}

/// This process's identity (the main process's is made on first use).
pub(crate) fn identity() -> Identity {
    if let Some(id) = IDENTITY.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
        return id.clone();
    }
    let mut slot = IDENTITY.write().unwrap_or_else(|e| e.into_inner());
    slot.get_or_insert_with(main_identity).clone()
}

/// Installs the identity of a child and its parent, resetting the child counter.
pub(crate) fn become_child(identity: Identity, parent_pid: u32, parent_name: String) {
    *IDENTITY.write().unwrap_or_else(|e| e.into_inner()) = Some(identity);
    *lock(&PARENT) = Some((parent_pid, parent_name));
    NEXT_CHILD.store(1, Ordering::Relaxed);
}

pub(crate) fn parent() -> Option<(u32, String)> {
    lock(&PARENT).clone()
}

/// Called by the child's watchdog when the parent's end of the boot channel closes.
pub(crate) fn mark_parent_gone() {
    *lock(&PARENT_GONE.0) = true;
    PARENT_GONE.1.notify_all();
}

/// Waits up to `timeout` for the parent to be gone; returns whether it is.
pub(crate) fn wait_parent_gone(timeout: Duration) -> bool {
    let gone = lock(&PARENT_GONE.0);
    let (gone, _) = PARENT_GONE
        .1
        .wait_timeout_while(gone, timeout, |g| !*g)
        .unwrap_or_else(|e| e.into_inner());
    *gone
}

/// The identity of the next child: `Process-N`, or `Process-P:N` below the main process.
pub(crate) fn next_child_identity(name: Option<String>, daemon: Option<bool>) -> Identity {
    let me = identity();
    let mut path = me.path.clone();
    path.push(NEXT_CHILD.fetch_add(1, Ordering::Relaxed));
    let default_name = format!(
        "Process-{}",
        path.iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(":")
    );
    Identity {
        name: name.unwrap_or(default_name),
        path,
        daemon: daemon.unwrap_or(me.daemon),
        authkey: me.authkey,
    }
}

pub(crate) fn register(child: Arc<Running>) {
    if !AT_EXIT_REGISTERED.swap(true, Ordering::SeqCst) {
        sys::at_exit(finish_children_at_exit);
    }
    lock(&CHILDREN).push(child);
}

/// Drops a child that is known to have finished, releasing its handles once its `Process`
/// goes too (Python prunes finished children in `start` and `join` likewise).
pub(crate) fn forget(child: &Arc<Running>) {
    lock(&CHILDREN).retain(|c| !Arc::ptr_eq(c, child));
}

/// Drops finished children from the registry; returns the live ones.
pub(crate) fn reap() -> Vec<ProcessInfo> {
    let authkey = identity().authkey;
    let mut children = lock(&CHILDREN);
    children.retain(|c| matches!(c.poll(), Ok(None)));
    children
        .iter()
        .map(|c| ProcessInfo {
            name: c.name.clone(),
            pid: c.pid,
            daemon: c.daemon,
            authkey: authkey.clone(),
        })
        .collect()
}

/// Every registry lock, held across a fork (what an atfork "prepare" handler does): a lock
/// held by another thread at that instant would stay locked for ever in the child.
pub(crate) struct ForkGuard {
    children: MutexGuard<'static, Vec<Arc<Running>>>,
    identity: std::sync::RwLockWriteGuard<'static, Option<Identity>>,
    parent: MutexGuard<'static, Option<(u32, String)>>,
    parent_gone: MutexGuard<'static, bool>,
}

/// Takes every registry lock, in one fixed order, before a fork.
pub(crate) fn lock_for_fork() -> ForkGuard {
    identity(); // the main identity exists before its lock is taken for writing
    ForkGuard {
        children: lock(&CHILDREN),
        identity: IDENTITY.write().unwrap_or_else(|e| e.into_inner()),
        parent: lock(&PARENT),
        parent_gone: lock(&PARENT_GONE.0),
    }
}

/// In a forked child, through the locks held across the fork: the parent's children are not
/// ours (their channels are closed), and the child takes on its identity and parent.
pub(crate) fn become_forked_child(
    mut guard: ForkGuard,
    identity: Identity,
    parent_pid: u32,
    parent_name: String,
) {
    NEXT_CHILD.store(1, Ordering::Relaxed);
    guard.children.clear();
    *guard.identity = Some(identity);
    *guard.parent = Some((parent_pid, parent_name));
    *guard.parent_gone = false;
}

extern "C" fn finish_children_at_exit() {
    finish_children();
}

/// What a process does with its children as it exits, as Python's exit hook does: terminate
/// the daemons, then wait for all of them.
pub(crate) fn finish_children() {
    let children: Vec<Arc<Running>> = std::mem::take(&mut *lock(&CHILDREN));
    if !children.is_empty() {
        crate::logging::mp_log!(Info, "process shutting down");
    }
    for c in children.iter().filter(|c| c.daemon) {
        crate::logging::mp_log!(Info, "calling terminate() for daemon {}", c.name);
        let _ = c.signal(Signal::Terminate);
    }
    for c in &children {
        crate::logging::mp_log!(Info, "calling join() for process {}", c.name);
        let _ = c.wait(None);
    }
}
