//! The `SIGBUS` guard of mp's shrinkable mappings: where the size of a shared-memory object
//! cannot be sealed (POSIX `shm_open` objects, named or not, on every Unix; every object on
//! systems without memfd seals), a process holding the object can shrink it with
//! `ftruncate`, and the next access of another process to its mapping past the new end
//! kills that process with `SIGBUS`. Here that access completes instead, and the mapping is
//! marked damaged, for its users to turn into a typed error.
//!
//! * [`register`] notes a mapping's address range in a process-wide registry that a signal
//!   handler can read: chunks of slots, each slot a few atomics (state, start, length,
//!   damage flag), chained by an atomic pointer; chunks are added (never freed) when every
//!   slot is taken, so the registry has no fixed limit. [`unregister`] frees the slot before
//!   the mapping is unmapped, so an address range reused by another mapping is never taken
//!   for ours.
//! * The first registration installs a `SIGBUS` handler (`SA_SIGINFO | SA_ONSTACK`, so that
//!   it also runs on the alternate signal stack where one is set up). For a fault
//!   (`si_code > 0`) whose address (`si_addr`) lies inside a registered mapping, it maps
//!   private anonymous zero pages over the whole mapping at the same address
//!   (`mmap(MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS)`), sets the slot's damage flag and
//!   returns: the faulting access runs again and completes on the zero pages. Everything
//!   else goes to the handler that was installed before (Rust's own, which reports stack
//!   overflows, or a program's); with none, the default action is restored and the process
//!   dies of `SIGBUS` as it would have without mp.
//!
//! The handler reads atomics and calls `mmap`, `sigaction` and `raise`: nothing that
//! allocates or locks. The whole mapping is replaced, not only the faulting page: once the
//! peer has cut the object, nothing in the mapping is worth sharing any more, and one
//! replacement means no later fault.

use std::ptr::null_mut;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Slots per chunk.
const CHUNK: usize = 64;

/// Slot states.
const FREE: u8 = 0;
const CLAIMED: u8 = 1;
const LIVE: u8 = 2;

struct Slot {
    state: AtomicU8,
    /// The first byte of the mapping.
    start: AtomicUsize,
    /// The mapped length, rounded up to whole pages.
    len: AtomicUsize,
    /// Set once the handler replaced the mapping with zero pages.
    damaged: AtomicBool,
}

impl Slot {
    const fn new() -> Self {
        Self {
            state: AtomicU8::new(FREE),
            start: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            damaged: AtomicBool::new(false),
        }
    }
}

struct Chunk {
    slots: [Slot; CHUNK],
    next: AtomicPtr<Chunk>,
}

impl Chunk {
    const fn new() -> Self {
        Self {
            slots: [const { Slot::new() }; CHUNK],
            next: AtomicPtr::new(null_mut()),
        }
    }
}

static FIRST: Chunk = Chunk::new();

/// Every chunk, the first one first. Chunks are never freed, so the references are static.
fn chunks() -> impl Iterator<Item = &'static Chunk> {
    std::iter::successors(Some(&FIRST), |c| {
        let next = c.next.load(Ordering::Acquire);
        // SAFETY: a published chunk is leaked, never freed.
        (!next.is_null()).then(|| unsafe { &*next })
    })
}

/// Notes the mapping of `len` bytes at `start`; returns its damage flag (cleared), or `None`
/// if the handler could not be installed (the mapping is then unguarded, as before).
pub(super) fn register(start: usize, len: usize) -> Option<&'static AtomicBool> {
    if !install() {
        return None;
    }
    let page = page_size();
    let len = len.max(1).div_ceil(page) * page;
    loop {
        let mut last = &FIRST;
        for chunk in chunks() {
            for slot in &chunk.slots {
                if slot
                    .state
                    .compare_exchange(FREE, CLAIMED, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    slot.start.store(start, Ordering::Relaxed);
                    slot.len.store(len, Ordering::Relaxed);
                    slot.damaged.store(false, Ordering::Relaxed);
                    slot.state.store(LIVE, Ordering::Release);
                    return Some(&slot.damaged);
                }
            }
            last = chunk;
        }
        // Every slot taken: chain a new chunk (or find the one another thread chained).
        let fresh = Box::into_raw(Box::new(Chunk::new()));
        if last
            .next
            .compare_exchange(null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // SAFETY: not published; ours to free.
            drop(unsafe { Box::from_raw(fresh) });
        }
    }
}

/// Forgets the mapping that starts at `start`, before it is unmapped.
pub(super) fn unregister(start: usize) {
    for chunk in chunks() {
        for slot in &chunk.slots {
            if slot.state.load(Ordering::Acquire) == LIVE
                && slot.start.load(Ordering::Relaxed) == start
            {
                slot.state.store(FREE, Ordering::Release);
                return;
            }
        }
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(p).ok().filter(|&p| p > 0).unwrap_or(4096)
}

/// The `SIGBUS` disposition found when the handler was installed.
struct Previous(libc::sigaction);
// SAFETY: plain data (a handler address, a signal mask, flags), written once before the
// handler can run and only read afterwards.
unsafe impl Sync for Previous {}
// SAFETY: as above.
unsafe impl Send for Previous {}

static PREVIOUS: OnceLock<Previous> = OnceLock::new();
static INSTALLED: OnceLock<bool> = OnceLock::new();

/// Installs the handler once per process; whether it is installed.
fn install() -> bool {
    *INSTALLED.get_or_init(|| {
        // SAFETY: sigaction with zeroed structures (a valid empty disposition) that we fill
        // in; the handler is an `extern "C"` function of the right signature.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut old) != 0 {
                return false;
            }
            let _ = PREVIOUS.set(Previous(old));
            let mut new: libc::sigaction = std::mem::zeroed();
            new.sa_sigaction = on_sigbus as *const () as libc::sighandler_t;
            new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut new.sa_mask);
            libc::sigaction(libc::SIGBUS, &new, std::ptr::null_mut()) == 0
        }
    })
}

/// The handler. Only async-signal-safe work: atomic loads and stores, `mmap`, `sigaction`,
/// `raise`, and the previous handler.
extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t to an SA_SIGINFO handler; si_addr is
    // meaningful for the faults (si_code > 0) it generates, and only those are looked at.
    let fault = (!info.is_null() && unsafe { (*info).si_code } > 0)
        .then(|| unsafe { (*info).si_addr() } as usize);
    if let Some(addr) = fault {
        if let Some(slot) = find(addr) {
            // One thread replaces the mapping; another one faulting on it meanwhile
            // returns and retries its access, which completes once the zero pages are in.
            if slot.damaged.swap(true, Ordering::AcqRel) || replace(slot) {
                return;
            }
        }
    }
    // SAFETY: chaining is done with async-signal-safe calls only.
    unsafe { chain(sig, info, ctx) }
}

/// The live slot whose mapping holds `addr`.
fn find(addr: usize) -> Option<&'static Slot> {
    chunks().flat_map(|c| c.slots.iter()).find(|s| {
        s.state.load(Ordering::Acquire) == LIVE && {
            let start = s.start.load(Ordering::Relaxed);
            addr >= start && addr - start < s.len.load(Ordering::Relaxed)
        }
    })
}

/// Maps private zero pages over the slot's mapping; whether that worked.
fn replace(slot: &Slot) -> bool {
    let start = slot.start.load(Ordering::Relaxed);
    // SAFETY: the range is exactly one live mapping of ours (registered until just before
    // it is unmapped, and it cannot be unmapped while an access to it is under way); the
    // new pages take its place whole, at the same address.
    let p = unsafe {
        libc::mmap(
            start as *mut libc::c_void,
            slot.len.load(Ordering::Relaxed),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_FIXED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    p as usize == start
}

/// Hands the signal to the previous handler, or dies of it as by default.
///
/// # Safety
/// Called from the handler with the arguments it got.
unsafe fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    if let Some(Previous(prev)) = PREVIOUS.get() {
        // An address from outside Rust: made a pointer by an `as` cast (exposed provenance,
        // what such an address needs), never transmuted from the integer (a pointer without
        // provenance, which must not be called).
        let h = prev.sa_sigaction;
        if h != libc::SIG_DFL && h != libc::SIG_IGN {
            if prev.sa_flags & libc::SA_SIGINFO != 0 {
                // SAFETY: an SA_SIGINFO handler has this signature.
                let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    unsafe { std::mem::transmute(h as *const ()) };
                f(sig, info, ctx);
            } else {
                // SAFETY: a plain handler has this signature.
                let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(h as *const ()) };
                f(sig);
            }
            return;
        }
    }
    // The default action: a fault runs again on return and kills the process; a signal
    // sent by someone (si_code <= 0) is raised again, delivered once this handler returns.
    // SAFETY: sigaction and raise are async-signal-safe; the structure is zeroed (SIG_DFL).
    unsafe {
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        libc::sigemptyset(&mut dfl.sa_mask);
        libc::sigaction(libc::SIGBUS, &dfl, std::ptr::null_mut());
        if info.is_null() || (*info).si_code <= 0 {
            libc::raise(libc::SIGBUS);
        }
    }
}
