//! Processes: Python's `multiprocessing.Process` and the functions around it.
//!
//! A [`Process`] is made with a target and one argument, configured with builder methods,
//! then started, joined, signalled and closed as in Python. Differences:
//! - the target is a `fn` item or a non-capturing closure, and its argument one
//!   `serde` value (use a tuple or a struct for several); under [`StartMethod::Fork`] a
//!   capturing closure also works ([`Process::from_closure`]);
//! - [`join`](Process::join) returns an error when the child failed: a panic comes back with
//!   its message, location and the child's backtrace ([`ProcessError::Panicked`]);
//! - children die with their parent unless [`with_outlive_parent`](Process::with_outlive_parent)
//!   says otherwise (Linux: parent-death signal; everywhere, and alone on macOS and FreeBSD:
//!   a watchdog on the boot channel);
//! - at exit, like Python, the parent terminates its running daemon children and waits for
//!   the others.

pub(crate) mod boot;
pub(crate) mod child;
pub(crate) mod panics;
pub(crate) mod registry;

pub(crate) use registry::my_pid;
mod running;
mod target;

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use self::boot::{Boot, Identity, ENV_BOOT};
use self::running::{Finished, Running};
use self::target::{ClosureTask, FnTask, Task};
use crate::logging::{ChildLog, LogBoot};
use crate::sys::{self, Signal};
use crate::{ChildPanic, Context, ProcessError, Sentinel, StartMethod};

/// Facts about a process: what `current_process()` and `active_children()` report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    /// `MainProcess`, `Process-N`, or the name given.
    pub name: String,
    /// The OS process id.
    pub pid: u32,
    /// Whether the process is a daemon (terminated, not waited for, when its parent exits).
    pub daemon: bool,
    /// The process's authentication key, inherited from its parent (32 random bytes in the
    /// main process).
    pub authkey: Vec<u8>,
}

/// A child process, to be started with [`start`](Process::start).
///
/// ```
/// use mp_core::Process;
///
/// fn add(pair: (u32, u32)) {
///     assert_eq!(pair.0 + pair.1, 5);
/// }
///
/// let mut p = Process::new(add, (2, 3)).with_name("adder");
/// assert_eq!(p.name(), Some("adder"));
/// p.start().unwrap();
/// assert!(p.pid().is_some());
/// p.join().unwrap();
/// assert_eq!(p.exitcode(), Some(0));
/// assert!(!p.is_alive());
/// ```
pub struct Process {
    name: Option<String>,
    daemon: Option<bool>,
    outlive_parent: bool,
    context: Option<Context>,
    state: State,
}

enum State {
    Ready(Box<dyn Task>),
    Starting,
    Started(Arc<Running>),
    Closed,
}

impl Process {
    /// A process that will run `target(args)`. `target` is a `fn` item or a non-capturing
    /// closure; a closure that captures anything is refused at compile time.
    pub fn new<F, A>(target: F, args: A) -> Self
    where
        F: Fn(A) + Copy + Send + 'static,
        A: Serialize + DeserializeOwned + Send + 'static,
    {
        const {
            assert!(
                std::mem::size_of::<F>() == 0,
                "a process target must be a fn item or a closure that captures nothing"
            )
        };
        Self::with_task(Box::new(FnTask { f: target, args }))
    }

    /// A process that runs a closure, which may capture anything. The forked child holds
    /// copies of every handle of the parent, connections included: drop the ones it does
    /// not use, or a peer may never see end-of-file. (With [`Process::new`] under fork, the
    /// connections not passed in the argument are closed in the child, as under spawn.) Only
    /// [`StartMethod::Fork`] can start it; other methods fail at `start` with
    /// [`ProcessError::NeedsFork`].
    ///
    /// ```
    /// # #[cfg(unix)] {
    /// use mp_core::{get_context, Process, StartMethod};
    /// let message = String::from("captured");
    /// let mut p = Process::from_closure(move || assert_eq!(message, "captured"))
    ///     .with_context(get_context(StartMethod::Fork).unwrap());
    /// p.start().unwrap();
    /// p.join().unwrap();
    /// # }
    /// ```
    pub fn from_closure<C: FnOnce() + Send + 'static>(target: C) -> Self {
        Self::with_task(Box::new(ClosureTask(target)))
    }

    fn with_task(task: Box<dyn Task>) -> Self {
        Self {
            name: None,
            daemon: None,
            outlive_parent: false,
            context: None,
            state: State::Ready(task),
        }
    }

    /// Sets the name (default `Process-N`).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets the daemon flag (default: the creating process's flag).
    pub fn with_daemon(mut self, daemon: bool) -> Self {
        self.daemon = Some(daemon);
        self
    }

    /// Starts the process with the given context's method instead of the default one.
    pub fn with_context(mut self, context: Context) -> Self {
        self.context = Some(context);
        self
    }

    /// Lets the child outlive this process. By default a child dies when its parent does.
    pub fn with_outlive_parent(mut self, outlive: bool) -> Self {
        self.outlive_parent = outlive;
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
            _ => Err(ProcessError::AlreadyStarted),
        }
    }

    /// The name, once set or assigned at start.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The daemon flag that applies (given, or inherited).
    pub fn daemon(&self) -> bool {
        self.daemon.unwrap_or_else(|| registry::identity().daemon)
    }

    /// The start method this process uses.
    pub fn start_method(&self) -> StartMethod {
        self.context
            .unwrap_or_else(Context::default_context)
            .start_method()
    }

    fn running(&self) -> Result<&Arc<Running>, ProcessError> {
        match &self.state {
            State::Started(r) => Ok(r),
            State::Closed => Err(ProcessError::Closed),
            _ => Err(ProcessError::NotStarted),
        }
    }

    /// Starts the child. The argument is serialized (or, under fork, moved) into the child,
    /// and the connections inside it are handed over; this process's copies are closed.
    pub fn start(&mut self) -> Result<(), ProcessError> {
        self.ensure_ready()?;
        if std::env::var_os(ENV_BOOT).is_some() {
            return Err(ProcessError::BootstrapMissing);
        }
        if registry::identity().daemon {
            return Err(ProcessError::DaemonCannotHaveChildren);
        }
        sys::link_boot_constructor();
        let method = self.start_method();
        if !method.is_available() {
            return Err(ProcessError::Unsupported(method));
        }
        let State::Ready(task) = std::mem::replace(&mut self.state, State::Starting) else {
            unreachable!("checked by ensure_ready")
        };
        let identity = registry::next_child_identity(self.name.clone(), self.daemon);
        self.name = Some(identity.name.clone());
        self.daemon = Some(identity.daemon);
        let started = match method {
            StartMethod::Fork => self.start_fork(task, identity),
            _ => self.start_exec(method, &*task, identity),
        };
        match started {
            Ok(running) => {
                crate::logging::mp_log!(
                    Debug,
                    "started {} (pid {}, {})",
                    running.name,
                    running.pid,
                    method.name()
                );
                // Like Python, reap finished children here, so their handles do not pile up.
                registry::reap();
                let running = Arc::new(running);
                registry::register(running.clone());
                self.state = State::Started(running);
                Ok(())
            }
            Err((task, e)) => {
                self.state = State::Ready(task.unwrap_or_else(|| Box::new(ClosureTask(|| ()))));
                Err(e)
            }
        }
    }

    /// Spawn and fork server: send the serialized target to a fresh child.
    fn start_exec(
        &self,
        method: StartMethod,
        task: &dyn Task,
        identity: Identity,
    ) -> Result<Running, (Option<Box<dyn Task>>, ProcessError)> {
        let fail = |e: ProcessError| (None, e);
        let encoded = task.encode().map_err(|e| match e {
            ProcessError::NeedsFork(_) => fail(ProcessError::NeedsFork(method)),
            e => fail(e),
        })?;
        let me = registry::identity();
        // The child's log pipe, if this process gathers its children's records: its end
        // goes last among the boot message's handles.
        let child_log = ChildLog::for_next_child();
        let mut handles = encoded.handles;
        let log_handle = child_log.as_ref().and_then(ChildLog::child_handle);
        handles.extend(log_handle);
        let boot = Boot {
            entry: encoded.entry,
            args: encoded.bytes,
            identity: identity.clone(),
            parent_pid: sys::current_pid(),
            parent_name: me.name,
            start_method: method,
            outlive_parent: self.outlive_parent,
            log: LogBoot::current(log_handle.is_some()),
        };
        let bytes =
            postcard::to_stdvec(&boot).map_err(|e| fail(ProcessError::Encode(e.to_string())))?;
        let (boot_parent, boot_child) = sys::chan_pair().map_err(|e| fail(e.into()))?;
        // A boot message that fits in the channel's buffer is written before the child
        // exists, so the child finds it at once instead of waiting for the parent to be told
        // the child's pid (a fork server's answer costs a wake-up of each side). A larger one
        // could fill the buffer with nobody reading yet: it goes after the start.
        let early = bytes.len() <= sys::EARLY_BOOT_MAX;
        if early {
            // A failure here shows again below, or as the child's failure to boot.
            let _ = sys::send_with_handles(&boot_parent, &bytes, &handles);
        }
        let (pid, waiter) = match method {
            StartMethod::ForkServer => sys::start_forkserver(&boot_child),
            _ => sys::spawn_child("spawn", &boot_child, !self.outlive_parent),
        }
        .map_err(|e| fail(e.into()))?;
        drop(boot_child);
        let running = Running::new(pid, identity.name, identity.daemon, boot_parent, waiter);
        if !early {
            // If the child died before reading its work, the send fails; the child's exit
            // code tells the story, so the process still counts as started.
            let _ = sys::send_with_handles(running_boot(&running), &bytes, &handles);
        }
        if let Some(log) = child_log {
            log.started(pid);
        }
        Ok(running)
    }

    /// Fork: the child runs the task directly, no serialization.
    fn start_fork(
        &self,
        task: Box<dyn Task>,
        identity: Identity,
    ) -> Result<Running, (Option<Box<dyn Task>>, ProcessError)> {
        let (boot_parent, boot_child) = match sys::chan_pair() {
            Ok(p) => p,
            Err(e) => return Err((Some(task), e.into())),
        };
        let parent_end = sys::chan_raw_handle(&boot_parent);
        let parent_pid = sys::current_pid();
        let parent_name = registry::identity().name;
        let outlive = self.outlive_parent;
        let child_identity = identity.clone();
        let (mut keep, given) = crate::shared::collect_given_buffers(|| task.handles());
        let child_log = ChildLog::for_next_child();
        if let (Some(keep), Some(h)) = (
            keep.as_mut(),
            child_log.as_ref().and_then(ChildLog::child_handle),
        ) {
            keep.push(h);
        }
        let (child_log, parent_log) = match child_log.map(ChildLog::split) {
            Some((c, p)) => (Some(c), Some(p)),
            None => (None, None),
        };
        // The panic hooks are installed here, not in the child: installing one takes a lock
        // that a panicking thread of this process could hold at the moment of the fork, and
        // the child would wait for it for ever. That includes the pool's task hook, which a
        // forked worker would otherwise install first thing (found by `cargo xtask sanitize`:
        // a forked worker hung in `take_hook` while another test thread panicked).
        child::install_panic_hook();
        crate::pool::install_task_panic_hook();
        // First: a hook running now may take any of the locks below.
        let hooks = panics::lock_for_fork();
        let live = crate::connection::lock_live_handles();
        let guard = registry::lock_for_fork();
        let handoff = sys::handoff_lock_for_fork();
        let (buffers, parent_buffers) =
            crate::shared::lock_buffers_for_fork(keep.is_some().then_some(given));
        let forked = sys::fork_child(!outlive, move || {
            drop((hooks, handoff));
            registry::become_forked_child(guard, child_identity, parent_pid, parent_name);
            buffers.in_child();
            sys::close_inherited(parent_end);
            crate::connection::close_inherited_connections_except(live, keep.as_deref());
            crate::context::inherit_start_method(StartMethod::Fork);
            if let Some(log) = child_log {
                log.install_in_forked_child();
            }
            child::run_child(boot_child, outlive, true, move || {
                task.run();
                Ok(())
            })
        });
        parent_buffers.forked(forked.as_ref().ok().map(|(pid, _)| *pid));
        let (pid, waiter) = forked.map_err(|e| (None, e.into()))?;
        if let Some(log) = parent_log {
            log.started(pid);
        }
        Ok(Running::new(
            pid,
            identity.name,
            identity.daemon,
            boot_parent,
            waiter,
        ))
    }

    /// Waits for the child to end. `Ok` if it exited with code 0; otherwise the error says
    /// how it ended (panic with backtrace, exit code, signal). Joining again is harmless.
    pub fn join(&self) -> Result<(), ProcessError> {
        self.finish(None)
    }

    /// Like [`join`](Self::join), giving up after `timeout` with [`ProcessError::Timeout`]
    /// while the child still runs. A zero timeout just looks.
    pub fn join_timeout(&self, timeout: Duration) -> Result<(), ProcessError> {
        self.finish(Some(timeout))
    }

    fn finish(&self, timeout: Option<Duration>) -> Result<(), ProcessError> {
        let running = self.running()?;
        match running.wait(timeout)? {
            Some(finished) => {
                registry::forget(running);
                crate::logging::settle_child(running.pid);
                finished.result()
            }
            None => Err(ProcessError::Timeout),
        }
    }

    fn finished(&self) -> Option<Finished> {
        self.running().ok().and_then(|r| r.poll().ok().flatten())
    }

    /// Whether the child has been started and has not ended.
    pub fn is_alive(&self) -> bool {
        self.running().is_ok() && self.finished().is_none()
    }

    /// The OS process id, once started.
    pub fn pid(&self) -> Option<u32> {
        self.running().ok().map(|r| r.pid)
    }

    /// The exit code once the child has ended: its code, or minus the signal that killed it
    /// (`-15` after [`terminate`](Self::terminate), `-9` after [`kill`](Self::kill)).
    pub fn exitcode(&self) -> Option<i32> {
        self.finished().map(|f| f.exitcode)
    }

    /// The child's panic, if it panicked.
    pub fn panic(&self) -> Option<ChildPanic> {
        self.finished().and_then(|f| f.panic)
    }

    /// Asks the child to stop (SIGTERM; TerminateProcess on Windows). Harmless once it ended.
    pub fn terminate(&self) -> Result<(), ProcessError> {
        self.running()?.signal(Signal::Terminate)
    }

    /// Kills the child (SIGKILL; TerminateProcess on Windows).
    pub fn kill(&self) -> Result<(), ProcessError> {
        self.running()?.signal(Signal::Kill)
    }

    /// Interrupts the child (SIGINT; Unix only).
    pub fn interrupt(&self) -> Result<(), ProcessError> {
        self.running()?.signal(Signal::Interrupt)
    }

    /// A handle that [`wait`](crate::wait) reports ready once the child has ended.
    pub fn sentinel(&self) -> Result<Sentinel<'_>, ProcessError> {
        Ok(Sentinel {
            handle: self.running()?.sentinel(),
            _process: PhantomData,
        })
    }

    /// Releases the process's resources. Refused with [`ProcessError::StillRunning`] while
    /// the child runs; afterwards every call but `close` fails with [`ProcessError::Closed`].
    pub fn close(&mut self) -> Result<(), ProcessError> {
        match &self.state {
            State::Closed | State::Ready(_) => {}
            State::Starting => return Err(ProcessError::NotStarted),
            State::Started(r) => {
                if r.poll()?.is_none() {
                    return Err(ProcessError::StillRunning);
                }
                registry::reap();
            }
        }
        self.state = State::Closed;
        Ok(())
    }
}

fn running_boot(r: &Running) -> &sys::Chan {
    r.boot()
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("name", &self.name)
            .field("pid", &self.pid())
            .field("exitcode", &self.exitcode())
            .finish()
    }
}

/// This process's name, pid, daemon flag and authentication key.
///
/// ```
/// let me = mp_core::current_process();
/// assert_eq!(me.name, "MainProcess");
/// assert_eq!(me.pid, std::process::id());
/// assert_eq!(me.authkey.len(), 32);
/// ```
pub fn current_process() -> ProcessInfo {
    let id = registry::identity();
    ProcessInfo {
        name: id.name,
        pid: sys::current_pid(),
        daemon: id.daemon,
        authkey: id.authkey,
    }
}

/// The parent of this process, as seen from a child; `None` in the main process.
///
/// ```
/// assert!(mp_core::parent_process().is_none());
/// ```
pub fn parent_process() -> Option<ParentProcess> {
    registry::parent().map(|(pid, name)| ParentProcess { pid, name })
}

/// A child's view of its parent (Python's `parent_process()`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentProcess {
    /// The parent's process id.
    pub pid: u32,
    /// The parent's name.
    pub name: String,
}

impl ParentProcess {
    /// Whether the parent is still alive (its end of the boot channel is open).
    pub fn is_alive(&self) -> bool {
        !registry::wait_parent_gone(Duration::ZERO)
    }

    /// Waits up to `timeout` for the parent to end; returns whether it has. Only a child
    /// started [`with_outlive_parent`](Process::with_outlive_parent) lives to see it.
    pub fn join_timeout(&self, timeout: Duration) -> bool {
        registry::wait_parent_gone(timeout)
    }
}

/// The children started by this process that are still running; finished ones are reaped.
///
/// ```
/// assert!(mp_core::active_children().is_empty());
/// ```
pub fn active_children() -> Vec<ProcessInfo> {
    registry::reap()
}

/// The number of CPUs this process may use (at least 1).
///
/// ```
/// assert!(mp_core::cpu_count() >= 1);
/// ```
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The pid of the fork server, if this process has started one.
#[doc(hidden)]
pub fn forkserver_pid() -> Option<u32> {
    sys::forkserver_pid()
}
