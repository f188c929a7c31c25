//! How a pool's dispatcher starts its workers and talks to them: a [`Launcher`] makes
//! [`Link`]s and waits on them all. The default is [`Processes`]: worker processes started
//! with the pool's context, one pipe each, their sentinels waited on with [`crate::wait`].
//! With the feature `mpi`, `super::mpi` supplies ranks of an MPI job instead.
//!
//! The dispatcher (`dispatcher.rs`) holds everything else: the queue, batching, which chunks each
//! worker holds, what a death does to them.

use std::time::Duration;

use std::sync::Arc;
use std::thread::JoinHandle;

use super::dispatcher::{self, Shared};
use super::worker::{self, InitArg, WorkerArgs};
use super::{PoolBuilder, PoolError, TaskError};
use crate::{pipe, Connection, Context, Process, ProcessError, Waitable};
use mp_ipc::handle::RawHandle;

/// Where a pool's workers come from.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) enum Launch {
    /// Processes started with the pool's context.
    #[default]
    Processes,
    /// Ranks of an MPI job.
    #[cfg(feature = "mpi")]
    Mpi(super::mpi::MpiWorkers),
}

/// Starts the dispatcher of the pool `builder` describes; returns it with the pool's size.
pub(crate) fn start_pool(
    builder: PoolBuilder,
    lazy: bool,
    name: &'static str,
) -> Result<(Arc<Shared>, JoinHandle<()>, usize), PoolError> {
    match builder.launch {
        Launch::Processes => {
            let cfg = builder.config(lazy, name)?;
            let n = cfg.processes;
            let (shared, thread) = dispatcher::start(cfg)?;
            Ok((shared, thread, n))
        }
        #[cfg(feature = "mpi")]
        Launch::Mpi(workers) => {
            // Handles do not cross hosts: an initializer argument holding shareable objects
            // is refused here rather than reaching the ranks without them.
            if let Some(Ok(init)) = &builder.init {
                if !init.handles.is_empty() {
                    return Err(PoolError::HandlesUnsupported("the initializer argument"));
                }
            }
            let (launcher, n) =
                super::mpi::launcher(workers, builder.processes, builder.max_tasks)?;
            let cfg = builder.processes(n).config(lazy, name)?;
            let (shared, thread) = dispatcher::start_with(cfg, launcher)?;
            Ok((shared, thread, n))
        }
    }
}

/// What a worker is started with, whatever it runs on.
#[derive(Clone)]
pub(crate) struct Setup {
    pub(crate) init: Option<InitArg>,
    pub(crate) max_tasks: Option<u64>,
}

/// How the dispatcher ends a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Its connection is closed; it exits once its work is done.
    Close,
    /// `SIGTERM` (or what stands for it).
    Terminate,
    /// `SIGKILL` (or what stands for it).
    Kill,
}

/// What woke the dispatcher.
pub(crate) enum Ready {
    /// Its wake-up connection is readable.
    Wake,
    /// Worker `i` (an index into the links waited on) has something to read.
    Conn(usize),
    /// Worker `i` has died.
    Sentinel(usize),
}

/// Starts workers and waits on them.
pub(crate) trait Launcher: Send + 'static {
    /// One worker's end.
    type Link: Link;
    /// Whether [`Link::send`] can pass OS handles beside a frame (the shareable objects in
    /// task and initializer arguments). Where it cannot, the pool refuses such arguments
    /// with [`PoolError::HandlesUnsupported`].
    const CARRIES_HANDLES: bool;
    /// Starts a worker called `name`.
    fn start(&mut self, setup: &Setup, name: String) -> Result<Self::Link, ProcessError>;
    /// Blocks until `wake` is readable, a link has something to read, or a worker died.
    fn wait(&mut self, wake: &Connection<()>, links: &[&Self::Link]) -> Result<Vec<Ready>, String>;
}

/// The dispatcher's end of one worker.
pub(crate) trait Link: Send + 'static {
    /// Its process id (as the pool reports it in `worker_pids`).
    fn id(&self) -> u32;
    /// Whether frames can still be sent and received.
    fn is_open(&self) -> bool;
    /// Sends one frame, with `handles` beside it (the receiver gets copies; always empty
    /// unless [`Launcher::CARRIES_HANDLES`]); `false` if the worker is gone (the link is then
    /// closed).
    fn send(&mut self, frame: &[u8], handles: &[RawHandle]) -> bool;
    /// The next frame if one is there now; `Some(Err(()))` once the stream has ended (the
    /// link is then closed).
    fn try_recv(&mut self) -> Option<Result<Vec<u8>, ()>>;
    /// Closes the connection: the worker finishes what it holds and leaves.
    fn close(&mut self);
    /// How many chunks the worker has started, if that can be known after its death.
    fn started(&self) -> Option<u64>;
    /// Asks the worker to end ([`Stop::Close`] does nothing more than [`close`](Link::close)).
    fn stop(&mut self, how: Stop);
    /// Waits up to `grace` for the worker to end; whether it has.
    fn join(&mut self, grace: Duration) -> bool;
    /// Why the worker is gone, for the chunk it was running.
    fn death(&mut self) -> TaskError;
    /// Releases what the link holds of the worker once it has ended.
    fn release(&mut self);
}

/// Worker processes started with a context (every start method).
pub(crate) struct Processes {
    pub(crate) context: Context,
}

/// A worker process, its pipe, and its progress counter.
pub(crate) struct ProcessLink {
    process: Process,
    pid: u32,
    conn: Option<Connection<()>>,
    progress: crate::RawValue<u64>,
}

fn conn_err(e: crate::ConnectionError) -> ProcessError {
    match e {
        crate::ConnectionError::Io(e) => ProcessError::Io(e),
        e => ProcessError::Io(std::io::Error::other(e.to_string())),
    }
}

impl Launcher for Processes {
    type Link = ProcessLink;
    const CARRIES_HANDLES: bool = true;

    fn start(&mut self, setup: &Setup, name: String) -> Result<ProcessLink, ProcessError> {
        let (here, there) = pipe::<()>().map_err(conn_err)?;
        let progress = crate::RawValue::new(0u64)
            .map_err(|e| ProcessError::Io(std::io::Error::other(e.to_string())))?;
        let args = WorkerArgs {
            conn: there,
            init: setup.init.clone(),
            max_tasks: setup.max_tasks,
            progress: progress.clone(),
        };
        let mut process = Process::new(worker::worker_main, args)
            .with_context(self.context)
            .with_daemon(true)
            .with_name(name);
        process.start()?;
        let pid = process.pid().unwrap_or(0);
        Ok(ProcessLink {
            process,
            pid,
            conn: Some(here),
            progress,
        })
    }

    fn wait(
        &mut self,
        wake: &Connection<()>,
        links: &[&ProcessLink],
    ) -> Result<Vec<Ready>, String> {
        let mut kinds = vec![Ready::Wake];
        let mut objects: Vec<&dyn Waitable> = vec![wake];
        let sentinels: Vec<_> = links.iter().map(|l| l.process.sentinel().ok()).collect();
        for (i, l) in links.iter().enumerate() {
            if let Some(c) = &l.conn {
                objects.push(c);
                kinds.push(Ready::Conn(i));
            }
            if let Some(s) = &sentinels[i] {
                objects.push(s);
                kinds.push(Ready::Sentinel(i));
            }
        }
        let ready = crate::wait(&objects, None).map_err(|e| e.to_string())?;
        let mut kinds: Vec<Option<Ready>> = kinds.into_iter().map(Some).collect();
        Ok(ready.into_iter().filter_map(|i| kinds[i].take()).collect())
    }
}

impl Link for ProcessLink {
    fn id(&self) -> u32 {
        self.pid
    }

    fn is_open(&self) -> bool {
        self.conn.is_some()
    }

    fn send(&mut self, frame: &[u8], handles: &[RawHandle]) -> bool {
        let sent = self.conn.as_ref().is_some_and(|c| {
            if handles.is_empty() {
                c.send_bytes(frame).is_ok()
            } else {
                c.raw().send_bytes_with_handles(frame, handles).is_ok()
            }
        });
        if !sent {
            self.conn = None;
        }
        sent
    }

    fn try_recv(&mut self) -> Option<Result<Vec<u8>, ()>> {
        let conn = self.conn.as_ref()?;
        if !matches!(conn.poll(Duration::ZERO), Ok(true)) {
            return None;
        }
        match conn.recv_bytes() {
            Ok(frame) => Some(Ok(frame)),
            Err(_) => {
                self.conn = None;
                Some(Err(()))
            }
        }
    }

    fn close(&mut self) {
        self.conn = None;
    }

    fn started(&self) -> Option<u64> {
        Some(self.progress.get())
    }

    fn stop(&mut self, how: Stop) {
        let _ = match how {
            Stop::Close => Ok(()),
            Stop::Terminate => self.process.terminate(),
            Stop::Kill => self.process.kill(),
        };
    }

    fn join(&mut self, grace: Duration) -> bool {
        self.process.join_timeout(grace).is_ok() || !self.process.is_alive()
    }

    fn death(&mut self) -> TaskError {
        TaskError::WorkerDied {
            exitcode: self.process.exitcode().unwrap_or(-1),
        }
    }

    fn release(&mut self) {
        let _ = self.process.close();
    }
}
