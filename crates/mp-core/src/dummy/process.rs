//! [`Process`] on a thread: Python's `multiprocessing.dummy.Process` (a `threading.Thread`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::caught::{self, Report};
use crate::{ChildPanic, ProcessError, ProcessInfo};

/// An operation the threads backend cannot do: a thread cannot be stopped or signalled from
/// outside (Python's `threading` has no `terminate` either).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0} is not supported on the threads backend: a thread cannot be stopped from outside")]
pub struct Unsupported(pub &'static str);

/// Numbers the `Thread-N` names, from 1 as Python does.
static COUNTER: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    /// The daemon flag of the thread running a [`Process`] target (for `current_process`).
    static DAEMON: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Threads started by [`Process::start`] and not yet seen ended: who started them, their
/// name and daemon flag, and their completion.
type Started = (std::thread::ThreadId, String, bool, std::sync::Weak<Done>);
static STARTED: Mutex<Vec<Started>> = Mutex::new(Vec::new());

/// The threads the calling thread started with [`Process`] that are still running (Python's
/// `multiprocessing.dummy.active_children()`); ended ones are forgotten, as Python's are.
///
/// ```
/// use mp_core::dummy::{active_children, Event, Process};
/// let go = Event::new().unwrap();
/// let g2 = go.clone();
/// let mut p = Process::from_closure(move || assert!(g2.wait_timeout(std::time::Duration::from_secs(30))))
///     .with_name("waiter");
/// p.start().unwrap();
/// assert_eq!(active_children().iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["waiter"]);
/// go.set();
/// p.join().unwrap();
/// assert!(active_children().is_empty());
/// ```
pub fn active_children() -> Vec<ProcessInfo> {
    let me = std::thread::current().id();
    let mut started = STARTED.lock().unwrap_or_else(|e| e.into_inner());
    started.retain(|(_, _, _, done)| done.upgrade().is_some_and(|d| d.lock().is_none()));
    let authkey = crate::current_process().authkey;
    started
        .iter()
        .filter(|(by, ..)| *by == me)
        .map(|(_, name, daemon, _)| ProcessInfo {
            name: name.clone(),
            pid: std::process::id(),
            daemon: *daemon,
            authkey: authkey.clone(),
        })
        .collect()
}

/// How the target ended: `Ok` or its panic.
type Outcome = Result<(), ChildPanic>;

struct Done {
    outcome: Mutex<Option<Outcome>>,
    cv: Condvar,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Done {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Outcome>> {
        self.outcome.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits up to `timeout` (for ever with `None`); the outcome if the target has ended.
    fn wait(&self, timeout: Option<Duration>) -> Option<Outcome> {
        let g = self.lock();
        let g = match timeout {
            None => self
                .cv
                .wait_while(g, |o| o.is_none())
                .unwrap_or_else(|e| e.into_inner()),
            Some(t) => {
                self.cv
                    .wait_timeout_while(g, t, |o| o.is_none())
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
        };
        let out = g.clone();
        drop(g);
        if out.is_some() {
            // The target has returned; the thread only has its locals to drop. Joining it
            // makes "joined" mean "the thread is gone", as in Python.
            let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(h) = handle {
                let _ = h.join();
            }
        }
        out
    }
}

enum State {
    Ready(Box<dyn FnOnce() + Send>),
    Started(Arc<Done>),
    Closed,
}

/// A target running on its own thread, with the API of [`crate::Process`]: Python's
/// `multiprocessing.dummy.Process`.
///
/// The thread is named `Thread-N` (or the name given), [`pid`](Self::pid) is this process's
/// id, and [`exitcode`](Self::exitcode) is 0, or 1 after a panic, which
/// [`join`](Self::join) reports as [`ProcessError::Panicked`] with the panic's message,
/// location and backtrace, exactly as for a child process.
///
/// ```
/// use mp_core::dummy::Process;
/// use mp_core::ProcessError;
///
/// fn add(pair: (u32, u32)) {
///     assert_eq!(pair.0 + pair.1, 5);
/// }
///
/// let mut p = Process::new(add, (2, 3)).with_name("adder");
/// p.start().unwrap();
/// p.join().unwrap();
/// assert_eq!(p.exitcode(), Some(0));
/// assert_eq!(p.pid(), Some(std::process::id()));
///
/// let mut bad = Process::new(|n: u32| assert_eq!(n, 0, "not zero"), 1);
/// bad.start().unwrap();
/// match bad.join() {
///     Err(ProcessError::Panicked { panic, exitcode: 1 }) => assert!(panic.message.contains("not zero")),
///     other => panic!("{other:?}"),
/// }
/// assert_eq!(bad.exitcode(), Some(1));
/// assert!(bad.terminate().is_err());
/// ```
pub struct Process {
    name: Option<String>,
    daemon: Option<bool>,
    state: State,
}

impl Process {
    /// A thread that will run `target(args)`. Unlike the process backend, `target` may be
    /// any closure, and `args` need not be serializable: both are moved to the thread.
    pub fn new<F, A>(target: F, args: A) -> Self
    where
        F: FnOnce(A) + Send + 'static,
        A: Send + 'static,
    {
        Self::from_closure(move || target(args))
    }

    /// A thread that will run `target()`. (On the process backend, only the fork start
    /// method can run a closure; here every closure works.)
    pub fn from_closure<C: FnOnce() + Send + 'static>(target: C) -> Self {
        Self {
            name: None,
            daemon: None,
            state: State::Ready(Box::new(target)),
        }
    }

    /// Sets the name (default `Thread-N`, assigned at start).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets the daemon flag (default: the creating thread's). Recorded only: Rust does not
    /// wait for any thread when `main` returns.
    pub fn with_daemon(mut self, daemon: bool) -> Self {
        self.daemon = Some(daemon);
        self
    }

    /// Changes the name; an error once started.
    pub fn set_name(&mut self, name: impl Into<String>) -> Result<(), ProcessError> {
        self.ensure_ready()?;
        self.name = Some(name.into());
        Ok(())
    }

    /// Changes the daemon flag; an error once started.
    pub fn set_daemon(&mut self, daemon: bool) -> Result<(), ProcessError> {
        self.ensure_ready()?;
        self.daemon = Some(daemon);
        Ok(())
    }

    fn ensure_ready(&self) -> Result<(), ProcessError> {
        match self.state {
            State::Ready(_) => Ok(()),
            State::Closed => Err(ProcessError::Closed),
            State::Started(_) => Err(ProcessError::AlreadyStarted),
        }
    }

    fn done(&self) -> Result<&Arc<Done>, ProcessError> {
        match &self.state {
            State::Started(d) => Ok(d),
            State::Closed => Err(ProcessError::Closed),
            State::Ready(_) => Err(ProcessError::NotStarted),
        }
    }

    /// The name, once set or assigned at start.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The daemon flag that applies (given, or the creating thread's).
    pub fn daemon(&self) -> bool {
        self.daemon.unwrap_or_else(|| DAEMON.with(|d| d.get()))
    }

    /// Starts the thread. Fails with [`ProcessError::Io`] if the OS refuses a thread.
    pub fn start(&mut self) -> Result<(), ProcessError> {
        self.ensure_ready()?;
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| format!("Thread-{}", COUNTER.fetch_add(1, Ordering::Relaxed)));
        let daemon = self.daemon();
        let done = Arc::new(Done {
            outcome: Mutex::new(None),
            cv: Condvar::new(),
            thread: Mutex::new(None),
        });
        let State::Ready(target) = std::mem::replace(&mut self.state, State::Started(done.clone()))
        else {
            unreachable!("checked by ensure_ready")
        };
        // The target waits in a shared cell, so that it comes back if the thread fails to start.
        let cell = Arc::new(Mutex::new(Some(target)));
        let for_thread = cell.clone();
        let report = done.clone();
        let spawned = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                DAEMON.with(|d| d.set(daemon));
                let target = for_thread.lock().unwrap_or_else(|e| e.into_inner()).take();
                let outcome = match target {
                    Some(t) => caught::run(Report::Print, t),
                    None => Ok(()),
                };
                *report.lock() = Some(outcome);
                report.cv.notify_all();
            });
        match spawned {
            Ok(handle) => {
                *done.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
                STARTED.lock().unwrap_or_else(|e| e.into_inner()).push((
                    std::thread::current().id(),
                    name.clone(),
                    daemon,
                    Arc::downgrade(&done),
                ));
                self.name = Some(name);
                self.daemon = Some(daemon);
                Ok(())
            }
            Err(e) => {
                let target = cell.lock().unwrap_or_else(|e| e.into_inner()).take();
                self.state = State::Ready(target.unwrap_or_else(|| Box::new(|| ())));
                Err(ProcessError::Io(e))
            }
        }
    }

    /// Waits for the target to return. `Ok` if it returned, [`ProcessError::Panicked`] (exit
    /// code 1) if it panicked. Joining again is harmless.
    pub fn join(&self) -> Result<(), ProcessError> {
        self.finish(None)
    }

    /// Like [`join`](Self::join), giving up after `timeout` with [`ProcessError::Timeout`]
    /// while the target still runs. A zero timeout just looks.
    pub fn join_timeout(&self, timeout: Duration) -> Result<(), ProcessError> {
        self.finish(Some(timeout))
    }

    fn finish(&self, timeout: Option<Duration>) -> Result<(), ProcessError> {
        match self.done()?.wait(timeout) {
            None => Err(ProcessError::Timeout),
            Some(Ok(())) => Ok(()),
            Some(Err(panic)) => Err(ProcessError::Panicked { panic, exitcode: 1 }),
        }
    }

    fn outcome(&self) -> Option<Outcome> {
        self.done().ok().and_then(|d| d.lock().clone())
    }

    /// Whether the thread has been started and its target has not returned.
    pub fn is_alive(&self) -> bool {
        self.done().is_ok() && self.outcome().is_none()
    }

    /// This process's id (every thread shares it), once started.
    pub fn pid(&self) -> Option<u32> {
        self.done().ok().map(|_| std::process::id())
    }

    /// 0 once the target has returned, 1 if it panicked; `None` before.
    pub fn exitcode(&self) -> Option<i32> {
        self.outcome().map(|o| i32::from(o.is_err()))
    }

    /// The target's panic, if it panicked.
    pub fn panic(&self) -> Option<ChildPanic> {
        self.outcome().and_then(Result::err)
    }

    /// Always [`Unsupported`]: a thread cannot be stopped from outside.
    pub fn terminate(&self) -> Result<(), Unsupported> {
        Err(Unsupported("terminate"))
    }

    /// Always [`Unsupported`]: a thread cannot be killed.
    pub fn kill(&self) -> Result<(), Unsupported> {
        Err(Unsupported("kill"))
    }

    /// Always [`Unsupported`]: a thread cannot be interrupted.
    pub fn interrupt(&self) -> Result<(), Unsupported> {
        Err(Unsupported("interrupt"))
    }

    /// Releases the handle. Refused with [`ProcessError::StillRunning`] while the target
    /// runs; afterwards every call but `close` fails with [`ProcessError::Closed`].
    pub fn close(&mut self) -> Result<(), ProcessError> {
        if let State::Started(d) = &self.state {
            if d.lock().is_none() {
                return Err(ProcessError::StillRunning);
            }
            d.wait(Some(Duration::ZERO));
        }
        self.state = State::Closed;
        Ok(())
    }
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("name", &self.name)
            .field("alive", &self.is_alive())
            .field("exitcode", &self.exitcode())
            .finish()
    }
}

/// The calling thread as a [`ProcessInfo`]: its name (`MainThread` for the main thread,
/// `Thread-N` in a [`Process`]), this process's pid, its daemon flag and this process's
/// authentication key. Python's `multiprocessing.dummy.current_process` (which is
/// `threading.current_thread`).
///
/// ```
/// use mp_core::dummy::{current_process, Process};
/// let mut p = Process::from_closure(|| assert_eq!(current_process().name, "worker"))
///     .with_name("worker");
/// p.start().unwrap();
/// p.join().unwrap();
/// assert_eq!(current_process().pid, std::process::id());
/// ```
pub fn current_process() -> ProcessInfo {
    let me = std::thread::current();
    let name = match me.name() {
        Some("main") => "MainThread".to_string(),
        Some(n) => n.to_string(),
        None => format!("{:?}", me.id()),
    };
    ProcessInfo {
        name,
        pid: std::process::id(),
        daemon: DAEMON.with(|d| d.get()),
        authkey: crate::current_process().authkey,
    }
}
