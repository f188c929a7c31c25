//! Logging: Python's `multiprocessing.get_logger()` and `log_to_stderr()`, over the
//! [`log`] facade.
//!
//! mp's own records (a process started, a pool closing, a manager serving, ...) and the
//! records written through [`Logger`] go to whatever logger the program installed with the
//! `log` facade (`env_logger`, `tracing`'s bridge, ...), with the name and pid of the process
//! that wrote them as the key-values `process_name` and `pid` of each record. Their targets
//! are mp's module paths (`mp_core::process`, `mp_core::pool`, ...), so `RUST_LOG=mp_core=debug`
//! selects them.
//!
//! | Python | here |
//! |---|---|
//! | `multiprocessing.get_logger()` | [`get_logger`] → [`Logger`] |
//! | `logger.setLevel(lvl)` | [`Logger::set_level`] (a cap on mp's records, before the facade's own filter) |
//! | `logger.info(msg)`, `debug`, `warning`, `error` | [`Logger::info`], ... (or `log::info!` for the program's own records) |
//! | `multiprocessing.log_to_stderr(level)` | [`log_to_stderr`]: mp's records go to standard error as `[INFO/Process-1] message`, and no longer to the facade (as Python's multiprocessing logger does not propagate) |
//! | a spawned child inheriting `log_to_stderr` | the same: spawned and fork-server children inherit the setting and the level |
//! | `QueueHandler` / `QueueListener` to gather children's records | [`forward_child_logs`]: the records of children started afterwards (mp's, [`Logger`]'s, and a spawned child's own `log::info!`) are sent to this process and re-emitted here, with the child's `process_name` |
//!
//! Differences from Python: the `log` facade has one global logger per process, installed by
//! the program's `main`, which a spawned child never runs (its target runs before `main`). A
//! spawned child therefore has no logger of its own: its records go nowhere unless the parent
//! asked for [`log_to_stderr`] (inherited) or [`forward_child_logs`]. A forked child keeps
//! the logger it inherited (the facade cannot replace one that is set): it writes where the
//! parent's logger writes, and forwarding applies to mp's records and [`Logger`]'s only.

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

pub use log::{Level, LevelFilter};
use serde::{Deserialize, Serialize};

use crate::Connection;

/// The cap on mp's records (a `LevelFilter` as a number); `Trace` lets the facade decide.
static LEVEL: AtomicUsize = AtomicUsize::new(LevelFilter::Trace as usize);
/// [`log_to_stderr`] was called (here or in an ancestor that passed it on).
static TO_STDERR: AtomicBool = AtomicBool::new(false);

/// mp's logger: Python's `multiprocessing` logger. Get it with [`get_logger`] or
/// [`log_to_stderr`].
///
/// ```
/// use mp_core::logging::{get_logger, LevelFilter};
/// let logger = get_logger();
/// logger.set_level(LevelFilter::Info);
/// logger.info("ready"); // to the program's `log` logger, with this process's name
/// assert_eq!(logger.level(), LevelFilter::Info);
/// # logger.set_level(LevelFilter::Trace);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Logger(());

/// mp's logger (Python's `multiprocessing.get_logger()`).
///
/// ```
/// mp_core::logging::get_logger().debug("hello");
/// ```
pub fn get_logger() -> Logger {
    Logger(())
}

/// Sends mp's records to standard error, formatted `[LEVEL/ProcessName] message`, from this
/// process and from the children it starts afterwards; `level` (if given) becomes the
/// logger's level (Python's `log_to_stderr(level)`).
///
/// ```
/// use mp_core::logging::{log_to_stderr, LevelFilter};
/// let logger = log_to_stderr(Some(LevelFilter::Warn));
/// logger.warning("printed on stderr as [WARN/MainProcess] ...");
/// logger.info("below the level: not printed");
/// # mp_core::logging::get_logger().set_level(LevelFilter::Trace);
/// ```
pub fn log_to_stderr(level: Option<LevelFilter>) -> Logger {
    TO_STDERR.store(true, Ordering::SeqCst);
    if let Some(l) = level {
        get_logger().set_level(l);
    }
    get_logger()
}

impl Logger {
    /// The cap on mp's records (`Trace`, the default, lets the facade's filter decide).
    pub fn level(&self) -> LevelFilter {
        level()
    }

    /// Sets the cap on mp's records (Python's `logger.setLevel`); inherited by the
    /// children started afterwards.
    pub fn set_level(&self, level: LevelFilter) {
        LEVEL.store(level as usize, Ordering::SeqCst);
    }

    /// Whether [`log_to_stderr`] is in force.
    pub fn logs_to_stderr(&self) -> bool {
        TO_STDERR.load(Ordering::SeqCst)
    }

    /// Writes a record at `level`, as mp's own records are.
    pub fn log(&self, level: Level, message: impl fmt::Display) {
        emit(level, "mp_core", format_args!("{message}"));
    }

    /// Writes a debug record.
    pub fn debug(&self, message: impl fmt::Display) {
        self.log(Level::Debug, message)
    }

    /// Writes an info record.
    pub fn info(&self, message: impl fmt::Display) {
        self.log(Level::Info, message)
    }

    /// Writes a warning record.
    pub fn warning(&self, message: impl fmt::Display) {
        self.log(Level::Warn, message)
    }

    /// Writes an error record.
    pub fn error(&self, message: impl fmt::Display) {
        self.log(Level::Error, message)
    }
}

fn level() -> LevelFilter {
    match LEVEL.load(Ordering::Relaxed) {
        0 => LevelFilter::Off,
        1 => LevelFilter::Error,
        2 => LevelFilter::Warn,
        3 => LevelFilter::Info,
        4 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    }
}

fn level_from(n: u8) -> LevelFilter {
    match n {
        0 => LevelFilter::Off,
        1 => LevelFilter::Error,
        2 => LevelFilter::Warn,
        3 => LevelFilter::Info,
        4 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    }
}

fn level_of(n: u8) -> Level {
    match n {
        1 => Level::Error,
        2 => Level::Warn,
        3 => Level::Info,
        4 => Level::Debug,
        _ => Level::Trace,
    }
}

/// Writes one of mp's records (see the macros `mp_debug!` and friends).
pub(crate) fn emit(level: Level, target: &'static str, args: fmt::Arguments<'_>) {
    if level > self::level() {
        return;
    }
    let to_stderr = TO_STDERR.load(Ordering::Relaxed);
    let forwarding = forwarder().is_some();
    if !to_stderr && !forwarding && !log::logger().enabled(&meta(level, target)) {
        return;
    }
    let me = crate::process::registry::identity();
    let pid = crate::process::my_pid();
    if let Some(f) = forwarder() {
        f.send(&Wire {
            level: level as u8,
            target: target.to_string(),
            message: args.to_string(),
            module_path: None,
            file: None,
            line: None,
            process_name: me.name,
            pid,
        });
        return;
    }
    deliver(level, target, args, &me.name, pid, None);
}

fn meta(level: Level, target: &str) -> log::Metadata<'_> {
    log::Metadata::builder().level(level).target(target).build()
}

/// Hands a record to standard error ([`log_to_stderr`]) or to the facade's logger.
fn deliver(
    level: Level,
    target: &str,
    args: fmt::Arguments<'_>,
    process_name: &str,
    pid: u32,
    origin: Option<(&str, &str, u32)>,
) {
    if TO_STDERR.load(Ordering::Relaxed) {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "[{level}/{process_name}] {args}");
        return;
    }
    let kvs: [(&str, log::kv::Value<'_>); 2] = [
        ("process_name", log::kv::Value::from(process_name)),
        ("pid", log::kv::Value::from(pid)),
    ];
    let mut b = log::Record::builder();
    b.level(level).target(target).args(args).key_values(&kvs);
    if let Some((module, file, line)) = origin {
        b.module_path(Some(module))
            .file(Some(file))
            .line(Some(line));
    }
    log::logger().log(&b.build());
}

/// Writes one of mp's records at a level: `mp_log!(Debug, "started {}", name)`.
macro_rules! mp_log {
    ($lvl:ident, $($arg:tt)+) => {
        $crate::logging::emit(::log::Level::$lvl, module_path!(), format_args!($($arg)+))
    };
}
pub(crate) use mp_log;

// ------------------------------------------------------------------------------------------
// Children: what they inherit, and forwarding their records.

/// [`forward_child_logs`] was called (here, or in an ancestor that passed it on).
static FORWARD: AtomicBool = AtomicBool::new(false);

/// The logging settings a child inherits (part of a spawned child's boot message).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct LogBoot {
    level: u8,
    to_stderr: bool,
    /// The last handle of the boot message is the child's end of its log pipe.
    forward: bool,
}

/// A child's log pipe, made when its parent gathers records: the child's end travels with
/// the child's boot message (or stays in a forked child), the parent's end is read by a
/// thread of the parent.
pub(crate) struct ChildLog {
    child_end: Connection<Wire>,
    parent_end: Connection<Wire>,
}

impl ChildLog {
    /// A pipe for the next child, if records are gathered.
    pub(crate) fn for_next_child() -> Option<Self> {
        if !FORWARD.load(Ordering::SeqCst) {
            return None;
        }
        let (child_end, parent_end) =
            crate::connection::pipe_with::<Wire, crate::connection::Socket>().ok()?;
        Some(Self {
            child_end,
            parent_end,
        })
    }

    /// The handle of the child's end, to send with the boot message.
    pub(crate) fn child_handle(&self) -> Option<mp_ipc::handle::RawHandle> {
        self.child_end.raw().raw_handle()
    }

    /// The child `pid` has its end: our copy is closed (so that the child's exit ends the
    /// stream) and a thread re-emits what comes.
    pub(crate) fn started(self, pid: u32) {
        let (child, parent) = self.split();
        drop(child);
        parent.started(pid);
    }

    /// The two ends apart, for a fork (the child keeps one, the parent the other).
    pub(crate) fn split(self) -> (ChildLogEnd, ParentLogEnd) {
        (ChildLogEnd(self.child_end), ParentLogEnd(self.parent_end))
    }
}

/// The child's end of a [`ChildLog`].
pub(crate) struct ChildLogEnd(Connection<Wire>);

impl ChildLogEnd {
    /// In a forked child: forward over this end.
    pub(crate) fn install_in_forked_child(self) {
        FORWARD.store(true, Ordering::SeqCst);
        install_forwarder(Forwarder::new(self.0));
    }
}

/// The parent's end of a [`ChildLog`].
pub(crate) struct ParentLogEnd(Connection<Wire>);

impl ParentLogEnd {
    /// Child `pid` has the other end: a thread re-emits what comes.
    pub(crate) fn started(self, pid: u32) {
        lock(&READERS).push(pid);
        let conn = self.0;
        let spawned = std::thread::Builder::new()
            .name("mp-log-reader".into())
            .spawn(move || {
                while let Ok(w) = conn.recv() {
                    reemit(w);
                }
                let mut readers = lock(&READERS);
                if let Some(i) = readers.iter().position(|p| *p == pid) {
                    readers.swap_remove(i);
                }
                drop(readers);
                READERS_CV.notify_all();
            });
        if spawned.is_err() {
            lock(&READERS).retain(|p| *p != pid);
        }
    }
}

/// Children whose log pipe is still being read.
static READERS: Mutex<Vec<u32>> = Mutex::new(Vec::new());
static READERS_CV: std::sync::Condvar = std::sync::Condvar::new();

fn lock<T>(m: &'static Mutex<T>) -> std::sync::MutexGuard<'static, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// After child `pid` ended: waits (a few seconds at most) until its last records have been
/// re-emitted, so that they are in when `join` returns.
pub(crate) fn settle_child(pid: u32) {
    let readers = lock(&READERS);
    if !readers.contains(&pid) {
        return;
    }
    let _ = READERS_CV
        .wait_timeout_while(readers, Duration::from_secs(5), |r| r.contains(&pid))
        .unwrap_or_else(|e| e.into_inner());
}

impl LogBoot {
    /// This process's settings, to pass on; `forward` if a log pipe goes with them.
    pub(crate) fn current(forward: bool) -> Self {
        Self {
            level: level() as u8,
            to_stderr: TO_STDERR.load(Ordering::SeqCst),
            forward,
        }
    }

    /// Whether the child's log pipe is the boot message's last handle.
    pub(crate) fn forwards(&self) -> bool {
        self.forward
    }

    /// Takes the settings on in a spawned child, before its target runs; `pipe` is its log
    /// pipe when the parent gathers records.
    pub(crate) fn install(self, pipe: Option<mp_ipc::handle::OwnedHandle>) {
        LEVEL.store(self.level as usize, Ordering::SeqCst);
        TO_STDERR.store(self.to_stderr, Ordering::SeqCst);
        let lvl = level_from(self.level);
        let conn = pipe.and_then(|h| Connection::<Wire>::from_handle(h).ok());
        if let Some(conn) = conn {
            // Our own children send theirs to us, and we pass them on.
            FORWARD.store(true, Ordering::SeqCst);
            install_forwarder(Forwarder::new(conn));
            // The child's own `log::info!` records go to the parent too.
            if log::set_boxed_logger(Box::new(ForwardLogger)).is_ok() {
                log::set_max_level(lvl);
            }
        } else if self.to_stderr && log::set_boxed_logger(Box::new(StderrLogger)).is_ok() {
            log::set_max_level(lvl);
        }
    }
}

/// A record on its way from a child to its parent.
#[derive(Debug, Serialize, Deserialize)]
struct Wire {
    level: u8,
    target: String,
    message: String,
    module_path: Option<String>,
    file: Option<String>,
    line: Option<u32>,
    process_name: String,
    pid: u32,
}

/// Sends this process's records to its parent over its log pipe.
struct Forwarder {
    /// The process it belongs to: a process forked from this one without a pipe of its own
    /// must not write into it.
    pid: u32,
    conn: Mutex<Option<Connection<Wire>>>,
}

static FORWARDER: AtomicPtr<Forwarder> = AtomicPtr::new(std::ptr::null_mut());

fn install_forwarder(f: Forwarder) {
    // The previous one (a forked parent's) is leaked: its lock may be held for ever here.
    FORWARDER.store(Box::into_raw(Box::new(f)), Ordering::SeqCst);
}

/// This process's forwarder, if its records go to its parent.
fn forwarder() -> Option<&'static Forwarder> {
    // SAFETY: null or a leaked Box that is never freed.
    let f = unsafe { FORWARDER.load(Ordering::Acquire).as_ref() }?;
    (f.pid == crate::process::my_pid()).then_some(f)
}

impl Forwarder {
    fn new(conn: Connection<Wire>) -> Self {
        Self {
            pid: crate::process::my_pid(),
            conn: Mutex::new(Some(conn)),
        }
    }

    fn send(&self, record: &Wire) {
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = conn.as_ref() {
            if c.send(record).is_err() {
                // The parent is gone: nobody to tell.
                *conn = None;
            }
        }
    }
}

/// The facade logger of a spawned child whose records are forwarded.
struct ForwardLogger;

impl log::Log for ForwardLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let Some(f) = forwarder() else { return };
        f.send(&Wire {
            level: record.level() as u8,
            target: record.target().to_string(),
            message: record.args().to_string(),
            module_path: record.module_path().map(str::to_string),
            file: record.file().map(str::to_string),
            line: record.line(),
            process_name: crate::process::registry::identity().name,
            pid: crate::process::my_pid(),
        });
    }

    fn flush(&self) {}
}

/// The facade logger of a spawned child that inherited [`log_to_stderr`].
struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let name = crate::process::registry::identity().name;
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "[{}/{name}] {}", record.level(), record.args());
    }

    fn flush(&self) {}
}

/// Gathers the records of the children started from now on (and of their children, through
/// them): mp's records, [`Logger`]'s, and, in spawned and fork-server children, the child's
/// own `log::info!` and friends. Each is re-emitted here, to [`log_to_stderr`]'s output if
/// that is in force, else to the program's `log` logger, with the child's `process_name`
/// and `pid` as key-values and its own target. `level` (if given) becomes the logger's
/// level, which the children inherit.
///
/// Each child gets a private pipe; a thread of this process reads it. Records arrive as the
/// child writes them, and `join` returns only once the child's last records are in.
///
/// ```
/// use mp_core::logging::{forward_child_logs, LevelFilter};
/// forward_child_logs(Some(LevelFilter::Info));
/// // children started from here on send their records to this process
/// # mp_core::logging::get_logger().set_level(LevelFilter::Trace);
/// ```
pub fn forward_child_logs(level: Option<LevelFilter>) {
    if let Some(l) = level {
        get_logger().set_level(l);
    }
    FORWARD.store(true, Ordering::SeqCst);
}

/// A record from a child: passed on to our own parent if we forward too, else delivered.
fn reemit(w: Wire) {
    let level = level_of(w.level);
    if let Some(f) = forwarder() {
        f.send(&w);
        return;
    }
    if level > self::level() {
        return;
    }
    let origin = match (&w.module_path, &w.file, w.line) {
        (Some(m), Some(f), Some(l)) => Some((m.as_str(), f.as_str(), l)),
        _ => None,
    };
    deliver(
        level,
        &w.target,
        format_args!("{}", w.message),
        &w.process_name,
        w.pid,
        origin,
    );
}
