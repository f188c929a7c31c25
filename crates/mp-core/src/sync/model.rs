//! What the sync protocols are made of: atomics, the futex, the process id and the liveness of
//! other processes. Normally these are the real ones; built with `--cfg loom` (by
//! `cargo xtask loom`) they are loom's model of them, so the same protocol code runs under
//! the model checker (`sync/loom_models.rs`).
//!
//! The model of the futex is exact for what the protocols rely on: `futex_wait` checks the
//! word and queues the caller in one step with respect to `futex_wake`, which dequeues up to
//! `n` waiters of that word in order; a waiter sleeps until dequeued. It never times out
//! (loom has no clock): a protocol that needs the periodic wake-up to make progress shows up
//! as a deadlock, which is how a lost wake-up is found. Waits that rely on the periodic
//! wake-up by design (noticing a dead lock owner) are modelled by a thread that calls
//! [`tick`] after the death, as the 100 ms wake-up would.
//!
//! Each model thread is a "process": [`set_pid`] names it, [`kill`] marks a pid dead for
//! [`pid_alive`].

#[cfg(not(loom))]
pub(crate) use crate::process::my_pid;
#[cfg(not(loom))]
pub(crate) use crate::sys::{current_tid, futex_wait, futex_wake, pid_alive, thread_alive};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

#[cfg(loom)]
pub(crate) use self::model::*;

/// Marks a point between a `SeqCst` store and a `SeqCst` load of another word (a waker
/// publishing its state, then reading whether anybody sleeps). Real `SeqCst` operations are
/// totally ordered, so nothing is needed; loom models them as `AcqRel` (its README's
/// limitations), which would let both sides miss each other and report a lost wake-up that
/// cannot happen. Under loom this is the `SeqCst` fence that restores the real ordering.
#[inline(always)]
pub(crate) fn seqcst_point() {
    #[cfg(loom)]
    loom::sync::atomic::fence(Ordering::SeqCst);
}

#[cfg(loom)]
mod model {
    use std::cell::Cell;
    use std::time::Duration;

    pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
    use loom::sync::Mutex;

    struct Waiter {
        word: usize,
        woken: loom::sync::atomic::AtomicBool,
        thread: loom::thread::Thread,
    }

    loom::lazy_static! {
        static ref QUEUE: Mutex<Vec<std::sync::Arc<Waiter>>> = Mutex::new(Vec::new());
        static ref DEAD: Mutex<Vec<u32>> = Mutex::new(Vec::new());
    }

    loom::thread_local! {
        static PID: Cell<u32> = Cell::new(1);
    }

    /// This model thread's pid (1 unless [`set_pid`] said otherwise).
    pub(crate) fn my_pid() -> u32 {
        PID.with(Cell::get)
    }

    /// Names this model thread's "process".
    pub(crate) fn set_pid(pid: u32) {
        PID.with(|p| p.set(pid));
    }

    /// Marks `pid` as dead (its thread must have stopped).
    pub(crate) fn kill(pid: u32) {
        DEAD.lock().unwrap().push(pid);
    }

    pub(crate) fn pid_alive(pid: u32) -> bool {
        !DEAD.lock().unwrap().contains(&pid)
    }

    /// Thread ids are not modelled (loom's threads share one OS thread): 0, "unknown", as
    /// on systems without them, which turns off the checks of damage that name threads.
    pub(crate) fn current_tid() -> u32 {
        0
    }

    pub(crate) fn thread_alive(_tid: u32) -> bool {
        true
    }

    fn key(word: &AtomicU32) -> usize {
        word as *const AtomicU32 as usize
    }

    /// Sleeps while `*word == expected` until a [`futex_wake`] dequeues this thread.
    pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, _timeout: Option<Duration>) {
        let me = std::sync::Arc::new(Waiter {
            word: key(word),
            woken: loom::sync::atomic::AtomicBool::new(false),
            thread: loom::thread::current(),
        });
        {
            let mut q = QUEUE.lock().unwrap();
            // The kernel's futex_wait orders the caller's earlier accesses before its check of
            // the word with a full barrier (smp_mb); this is that barrier.
            loom::sync::atomic::fence(Ordering::SeqCst);
            if word.load(Ordering::SeqCst) != expected {
                return;
            }
            q.push(me.clone());
        }
        while !me.woken.load(Ordering::Acquire) {
            loom::thread::park();
        }
    }

    /// Wakes up to `n` waiters of `word`, oldest first.
    pub(crate) fn futex_wake(word: &AtomicU32, n: u32) {
        let mut q = QUEUE.lock().unwrap();
        let mut left = n;
        q.retain(|w| {
            if left > 0 && w.word == key(word) {
                left -= 1;
                w.woken.store(true, Ordering::Release);
                w.thread.unpark();
                false
            } else {
                true
            }
        });
    }

    /// The periodic wake-up of every waiter (`futex::CHECK_INTERVAL`), as one event.
    pub(crate) fn tick(word: &AtomicU32) {
        futex_wake(word, u32::MAX);
    }
}
