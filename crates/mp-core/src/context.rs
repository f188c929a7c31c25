//! Start methods and contexts: Python's `get_context`, `set_start_method`,
//! `get_start_method` and `get_all_start_methods`.
//!
//! The default is [`StartMethod::Spawn`] on every platform: a child is a fresh run of the
//! executable, so it inherits no threads, locks or half-copied state from its parent. `Fork`
//! is faster but inherits a copy of a possibly multi-threaded parent (see
//! [`StartMethod::Fork`]); `ForkServer` forks from a clean single-threaded server.

use std::sync::atomic::{AtomicU8, Ordering};

use serde::{Deserialize, Serialize};

use crate::process::Process;
use crate::ContextError;

/// How a child process is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StartMethod {
    /// Re-execute the current binary; the child runs only its target. Every platform.
    Spawn,
    /// `fork()` the calling process (Unix only). The child is a copy of the parent, so a
    /// target may be any `FnOnce` closure, capturing what it likes.
    ///
    /// Hazards: only the forking thread exists in the child. A lock held by another thread at
    /// the moment of the fork stays locked for ever in the child (allocator, stdio and
    /// logging locks included), and unflushed user buffers are duplicated. Fork only from
    /// programs that are single-threaded at that point, or whose child does little before
    /// exiting. `mp` flushes stdout and stderr and holds its own locks across the fork, and
    /// a fork waits for panic hooks running in other threads (std holds its backtrace lock
    /// in them); a thread capturing a `Backtrace` outside a panic is not waited for.
    Fork,
    /// Ask a fork server to fork the child (Unix only). The server is spawned on first use,
    /// single-threaded, so children start fast without inheriting the parent's threads.
    /// Children run fn items and non-capturing closures, as under `Spawn`.
    ForkServer,
}

impl StartMethod {
    /// Python's name for the method: `"spawn"`, `"fork"` or `"forkserver"`.
    ///
    /// ```
    /// assert_eq!(mp_core::StartMethod::ForkServer.name(), "forkserver");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Self::Spawn => "spawn",
            Self::Fork => "fork",
            Self::ForkServer => "forkserver",
        }
    }

    /// Whether this platform offers the method.
    pub fn is_available(self) -> bool {
        crate::sys::AVAILABLE_START_METHODS.contains(&self)
    }

    fn code(self) -> u8 {
        match self {
            Self::Spawn => 1,
            Self::Fork => 2,
            Self::ForkServer => 3,
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        match c {
            1 => Some(Self::Spawn),
            2 => Some(Self::Fork),
            3 => Some(Self::ForkServer),
            _ => None,
        }
    }
}

/// 0 = not set yet (the default applies).
static DEFAULT_METHOD: AtomicU8 = AtomicU8::new(0);

/// The start methods of this platform, the default first.
///
/// ```
/// let all = mp_core::get_all_start_methods();
/// assert_eq!(all[0], mp_core::StartMethod::Spawn);
/// ```
pub fn get_all_start_methods() -> Vec<StartMethod> {
    crate::sys::AVAILABLE_START_METHODS.to_vec()
}

/// The start method that [`Process::start`] uses when no context says otherwise (Python's
/// `get_start_method()`; unlike Python's, asking does not fix it: see
/// [`set_start_method`]).
///
/// ```
/// assert!(mp_core::get_start_method().is_available());
/// ```
pub fn get_start_method() -> StartMethod {
    StartMethod::from_code(DEFAULT_METHOD.load(Ordering::Relaxed)).unwrap_or(StartMethod::Spawn)
}

/// The start method if one was set ([`set_start_method`], or inherited by a child from the
/// method that started it), `None` while the default applies: Python's
/// `get_start_method(allow_none=True)`.
///
/// ```
/// use mp_core::{get_start_method_if_set, set_start_method, StartMethod};
/// set_start_method(StartMethod::Spawn, true).unwrap();
/// assert_eq!(get_start_method_if_set(), Some(StartMethod::Spawn));
/// ```
pub fn get_start_method_if_set() -> Option<StartMethod> {
    StartMethod::from_code(DEFAULT_METHOD.load(Ordering::Relaxed))
}

/// Sets the default start method. Like Python, setting it a second time to a different
/// method is an error unless `force` is true. Unlike Python, [`get_start_method`] does not
/// fix the method: setting it after asking for it is allowed.
///
/// ```
/// use mp_core::{set_start_method, StartMethod};
/// set_start_method(StartMethod::Spawn, false).unwrap();
/// ```
pub fn set_start_method(method: StartMethod, force: bool) -> Result<(), ContextError> {
    if !method.is_available() {
        return Err(ContextError::Unavailable(method));
    }
    let previous = DEFAULT_METHOD.load(Ordering::Relaxed);
    if !force && previous != 0 && previous != method.code() {
        return Err(ContextError::AlreadySet(get_start_method()));
    }
    DEFAULT_METHOD.store(method.code(), Ordering::Relaxed);
    Ok(())
}

/// Makes the default of a child equal to the method that started it, as Python does.
pub(crate) fn inherit_start_method(method: StartMethod) {
    DEFAULT_METHOD.store(method.code(), Ordering::Relaxed);
}

/// A start method to create processes with, without touching the global default.
///
/// ```
/// use mp_core::{get_context, StartMethod};
///
/// fn work(x: u32) { assert_eq!(x, 7); }
///
/// let ctx = get_context(StartMethod::Spawn).unwrap();
/// let mut p = ctx.process(work, 7);
/// p.start().unwrap();
/// p.join().unwrap();
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    method: StartMethod,
}

/// A context for `method`, or an error if the platform lacks it.
pub fn get_context(method: StartMethod) -> Result<Context, ContextError> {
    if method.is_available() {
        Ok(Context { method })
    } else {
        Err(ContextError::Unavailable(method))
    }
}

impl Context {
    /// The context of the current default start method.
    pub fn default_context() -> Self {
        Self {
            method: get_start_method(),
        }
    }

    /// This context's start method.
    pub fn start_method(&self) -> StartMethod {
        self.method
    }

    /// A process that will start with this context's method; see [`Process::new`].
    pub fn process<F, A>(&self, target: F, args: A) -> Process
    where
        F: Fn(A) + Copy + Send + 'static,
        A: Serialize + serde::de::DeserializeOwned + Send + 'static,
    {
        Process::new(target, args).with_context(*self)
    }
}
