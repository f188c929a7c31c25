//! Waiting on a 32-bit word in shared memory until another process changes it: the
//! process-shared wait/wake that mp's locks, events, semaphores and queues sleep on.
//!
//! | flavour   | wait / wake                                                             |
//! |-----------|-------------------------------------------------------------------------|
//! | `linux`   | `futex(FUTEX_WAIT / FUTEX_WAKE)`, not the private variants              |
//! | `apple`   | `os_sync_wait_on_address` / `os_sync_wake_by_address_{any,all}` with the *shared* flags (macOS 14.4 and later); before that `__ulock_wait` / `__ulock_wake` with `UL_COMPARE_AND_WAIT_SHARED`, the call libc++ makes for `std::atomic::wait` |
//! | `freebsd` | `_umtx_op(UMTX_OP_WAIT_UINT / UMTX_OP_WAKE)`, not the `_PRIVATE` variants |
//! | `generic` | no such call in POSIX: sleep and re-check ([`NATIVE`] is false)         |
//!
//! On macOS both families are looked up at run time (`dlsym`), so a binary built with a
//! recent SDK still starts on macOS 11, and the private `__ulock_*` symbols are not linked
//! where the public ones exist. A waiter and a waker on one machine always pick the same
//! family.
//!
//! The generic fallback checks the word, then sleeps 25 µs, 50 µs, ... up to 2 ms between
//! checks: a change is seen within about 2 ms, and a long wait costs about 500 wake-ups a
//! second. [`wake`] does nothing there.

use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// Whether [`wait`] sleeps in the kernel until [`wake`] (true everywhere but the `generic`
/// flavour, which polls).
pub const NATIVE: bool = !cfg!(mp_os = "generic");

/// Sleeps while `*word == expected`, at most `timeout` (`None`: until woken). Returns early
/// on a wake-up, a signal, or spuriously: callers re-check their condition. `word` may be in
/// memory shared with other processes (a `MAP_SHARED` mapping).
///
/// ```
/// use std::sync::atomic::AtomicU32;
/// use std::time::Duration;
/// let word = AtomicU32::new(1);
/// mp_unix::futex::wait(&word, 0, Some(Duration::from_secs(1))); // not 0: returns at once
/// mp_unix::futex::wait(&word, 1, Some(Duration::from_millis(1))); // times out
/// mp_unix::futex::wake(&word, u32::MAX);
/// ```
pub fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    if timeout == Some(Duration::ZERO) {
        return;
    }
    imp::wait(word, expected, timeout)
}

/// Wakes up to `n` sleepers of [`wait`] on `word`, in any process (`u32::MAX`: all).
pub fn wake(word: &AtomicU32, n: u32) {
    imp::wake(word, n)
}

#[cfg(mp_os = "linux")]
mod imp {
    use std::sync::atomic::AtomicU32;
    use std::time::Duration;

    pub(super) fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
        let ts = timeout.map(|t| libc::timespec {
            tv_sec: t.as_secs().min(i32::MAX as u64) as libc::time_t,
            tv_nsec: t.subsec_nanos() as libc::c_long,
        });
        let ts_ptr = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: a shared (not private) futex wait on a live word; the kernel only reads it.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT,
                expected,
                ts_ptr,
            );
        }
    }

    pub(super) fn wake(word: &AtomicU32, n: u32) {
        // SAFETY: waking sleepers of a live word.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAKE,
                n.min(i32::MAX as u32),
            );
        }
    }
}

#[cfg(mp_os = "apple")]
mod imp {
    use std::ffi::{c_int, c_void, CStr};
    use std::sync::atomic::AtomicU32;
    use std::sync::OnceLock;
    use std::time::Duration;

    // <os/os_sync_wait_on_address.h> (macOS 14.4+).
    type OsSyncWait = unsafe extern "C" fn(*mut c_void, u64, usize, u32) -> c_int;
    type OsSyncWaitTimeout = unsafe extern "C" fn(*mut c_void, u64, usize, u32, u32, u64) -> c_int;
    type OsSyncWake = unsafe extern "C" fn(*mut c_void, usize, u32) -> c_int;
    // <sys/ulock.h> (private; macOS 10.12+): timeout in microseconds, 0 meaning none.
    type UlockWait = unsafe extern "C" fn(u32, *mut c_void, u64, u32) -> c_int;
    type UlockWake = unsafe extern "C" fn(u32, *mut c_void, u64) -> c_int;
    const UL_COMPARE_AND_WAIT_SHARED: u32 = 3;
    const ULF_WAKE_ALL: u32 = 0x100;

    enum Api {
        OsSync {
            wait: OsSyncWait,
            wait_timeout: OsSyncWaitTimeout,
            wake_any: OsSyncWake,
            wake_all: OsSyncWake,
        },
        Ulock {
            wait: UlockWait,
            wake: UlockWake,
        },
        /// Neither exists (never seen in practice): poll like the generic flavour.
        Missing,
    }

    fn symbol(name: &CStr) -> Option<*mut c_void> {
        // SAFETY: dlsym with RTLD_DEFAULT and a valid C string only looks a symbol up.
        let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
        (!p.is_null()).then_some(p)
    }

    fn api() -> &'static Api {
        static API: OnceLock<Api> = OnceLock::new();
        API.get_or_init(|| {
            // SAFETY: each symbol, when present, has the C signature of its header, which
            // the function pointer types above spell out.
            unsafe {
                if let (Some(w), Some(wt), Some(any), Some(all)) = (
                    symbol(c"os_sync_wait_on_address"),
                    symbol(c"os_sync_wait_on_address_with_timeout"),
                    symbol(c"os_sync_wake_by_address_any"),
                    symbol(c"os_sync_wake_by_address_all"),
                ) {
                    return Api::OsSync {
                        wait: std::mem::transmute::<*mut c_void, OsSyncWait>(w),
                        wait_timeout: std::mem::transmute::<*mut c_void, OsSyncWaitTimeout>(wt),
                        wake_any: std::mem::transmute::<*mut c_void, OsSyncWake>(any),
                        wake_all: std::mem::transmute::<*mut c_void, OsSyncWake>(all),
                    };
                }
                if let (Some(w), Some(k)) = (symbol(c"__ulock_wait"), symbol(c"__ulock_wake")) {
                    return Api::Ulock {
                        wait: std::mem::transmute::<*mut c_void, UlockWait>(w),
                        wake: std::mem::transmute::<*mut c_void, UlockWake>(k),
                    };
                }
                Api::Missing
            }
        })
    }

    pub(super) fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
        let addr = word.as_ptr().cast::<c_void>();
        // SAFETY: each call waits on a live, aligned 4-byte word and only reads it; errors
        // (a timeout, a signal, a changed value) all mean "look again", which callers do.
        unsafe {
            match api() {
                Api::OsSync {
                    wait, wait_timeout, ..
                } => match timeout {
                    None => {
                        wait(
                            addr,
                            expected.into(),
                            4,
                            libc::OS_SYNC_WAIT_ON_ADDRESS_SHARED,
                        );
                    }
                    Some(t) => {
                        let ns = u64::try_from(t.as_nanos()).unwrap_or(u64::MAX).max(1);
                        wait_timeout(
                            addr,
                            expected.into(),
                            4,
                            libc::OS_SYNC_WAIT_ON_ADDRESS_SHARED,
                            libc::OS_CLOCK_MACH_ABSOLUTE_TIME,
                            ns,
                        );
                    }
                },
                Api::Ulock { wait, .. } => {
                    // Zero means no timeout, so a positive timeout is at least 1 µs.
                    let us = timeout.map_or(0, |t| {
                        u32::try_from(t.as_micros()).unwrap_or(u32::MAX).max(1)
                    });
                    wait(UL_COMPARE_AND_WAIT_SHARED, addr, expected.into(), us);
                }
                Api::Missing => super::poll::wait(word, expected, timeout),
            }
        }
    }

    pub(super) fn wake(word: &AtomicU32, n: u32) {
        let addr = word.as_ptr().cast::<c_void>();
        // SAFETY: waking sleepers of a live word; "nobody was waiting" is not an error here.
        unsafe {
            match api() {
                Api::OsSync {
                    wake_any, wake_all, ..
                } => {
                    let wake = if n > 1 { wake_all } else { wake_any };
                    wake(addr, 4, libc::OS_SYNC_WAKE_BY_ADDRESS_SHARED);
                }
                Api::Ulock { wake, .. } => {
                    let all = if n > 1 { ULF_WAKE_ALL } else { 0 };
                    wake(UL_COMPARE_AND_WAIT_SHARED | all, addr, 0);
                }
                Api::Missing => {}
            }
        }
    }
}

#[cfg(mp_os = "freebsd")]
mod imp {
    use std::sync::atomic::AtomicU32;
    use std::time::Duration;

    pub(super) fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
        // A relative timeout on the monotonic clock; `uaddr` carries the structure's size,
        // which tells the kernel it is a `_umtx_time` rather than a bare `timespec`.
        let mut ut = timeout.map(|t| libc::_umtx_time {
            _timeout: libc::timespec {
                tv_sec: t.as_secs().min(i32::MAX as u64) as libc::time_t,
                tv_nsec: t.subsec_nanos() as libc::c_long,
            },
            _flags: 0,
            _clockid: libc::CLOCK_MONOTONIC as u32,
        });
        let (size, ptr) = match ut.as_mut() {
            Some(ut) => (
                std::mem::size_of::<libc::_umtx_time>() as *mut libc::c_void,
                (ut as *mut libc::_umtx_time).cast::<libc::c_void>(),
            ),
            None => (std::ptr::null_mut(), std::ptr::null_mut()),
        };
        // SAFETY: a shared (not _PRIVATE) wait on a live word; the kernel only reads it and
        // the timeout structure.
        unsafe {
            libc::_umtx_op(
                word.as_ptr().cast(),
                libc::UMTX_OP_WAIT_UINT,
                expected as libc::c_ulong,
                size,
                ptr,
            );
        }
    }

    pub(super) fn wake(word: &AtomicU32, n: u32) {
        // SAFETY: waking sleepers of a live word.
        unsafe {
            libc::_umtx_op(
                word.as_ptr().cast(),
                libc::UMTX_OP_WAKE,
                n.min(i32::MAX as u32) as libc::c_ulong,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            );
        }
    }
}

#[cfg(mp_os = "generic")]
mod imp {
    use std::sync::atomic::AtomicU32;
    use std::time::Duration;

    pub(super) fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
        super::poll::wait(word, expected, timeout)
    }

    pub(super) fn wake(_word: &AtomicU32, _n: u32) {}
}

/// The polling wait of the `generic` flavour (and of macOS should neither call exist).
#[cfg(any(mp_os = "generic", mp_os = "apple"))]
mod poll {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{Duration, Instant};

    const FIRST_NAP: Duration = Duration::from_micros(25);
    const LONGEST_NAP: Duration = Duration::from_millis(2);

    pub(super) fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
        let start = Instant::now();
        let mut nap = FIRST_NAP;
        while word.load(Ordering::Acquire) == expected {
            let left = timeout.map(|t| t.saturating_sub(start.elapsed()));
            if left == Some(Duration::ZERO) {
                return;
            }
            std::thread::sleep(left.map_or(nap, |l| l.min(nap)));
            nap = (nap * 2).min(LONGEST_NAP);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn a_wait_returns_when_the_word_changes_and_is_woken() {
        let word = Arc::new(AtomicU32::new(0));
        let w = word.clone();
        let t = std::thread::spawn(move || {
            let start = Instant::now();
            while w.load(Ordering::Acquire) == 0 {
                wait(&w, 0, Some(Duration::from_secs(30)));
            }
            start.elapsed()
        });
        std::thread::sleep(Duration::from_millis(20));
        word.store(1, Ordering::Release);
        wake(&word, 1);
        // Well before the 30 s a lost wake-up would cost.
        assert!(t.join().unwrap() < Duration::from_secs(10));
    }

    #[test]
    fn a_wait_on_a_stale_value_returns_and_a_timeout_ends_it() {
        let word = AtomicU32::new(7);
        wait(&word, 6, None); // returns at once: the word is not 6
        let start = Instant::now();
        wait(&word, 7, Some(Duration::from_millis(30)));
        assert!(start.elapsed() >= Duration::from_millis(25));
    }
}
