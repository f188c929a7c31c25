//! The engine under [`Pool`](super::Pool) and [`ProcessPoolExecutor`](super::ProcessPoolExecutor):
//! a dispatcher thread that owns the worker processes.
//!
//! Each worker has its own duplex connection, so the dispatcher knows exactly which chunks a
//! worker holds (`inflight`, in the order sent; a worker runs them in that order and answers
//! in that order). The dispatcher waits on every connection, every worker's sentinel and a
//! wake-up pipe; it sends pending chunks to workers with room, hands results to the chunk's
//! [`Sink`], and when a worker's sentinel fires it reads what the worker still sent, fails
//! the chunk that was running (the oldest unanswered one) with the worker's exit code,
//! puts the chunks it had not started back at the head of the queue, and starts a
//! replacement.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::entry::{Task, WireError};
use super::launch::{Launcher, Link, Processes, Ready, Setup, Stop};
use super::worker::{
    self, InitArg, FRAME_INIT_FAILED, FRAME_RESULTS, FRAME_TASKS, OUTCOME_FAILED, OUTCOME_OK,
};
use super::{PoolError, TaskError};
use crate::fn_id::FnId;
use crate::{pipe, Connection, Context, ProcessError};

/// One unit of work sent to a worker: `len` items of one job.
pub(crate) struct Chunk {
    pub(crate) sink: Arc<dyn Sink>,
    pub(crate) index: usize,
    pub(crate) len: usize,
    /// `[FRAME_TASKS][u32 len][chunk record]`, ready to send alone.
    pub(crate) frame: Vec<u8>,
    /// The handles of the shareable objects in the chunk's arguments (our own duplicates),
    /// sent beside the frame; a chunk with handles travels alone.
    pub(crate) handles: Vec<mp_ipc::handle::OwnedHandle>,
}

/// Where the outcome of a chunk goes.
pub(crate) trait Sink: Send + Sync {
    /// The chunk is about to be sent; `false` if it was cancelled (it is then dropped).
    fn begin(&self, _index: usize) -> bool {
        true
    }
    /// The chunk's outcome: its encoded results, or one error for all its items.
    fn finish(&self, index: usize, len: usize, outcome: Outcome<'_>);
    /// The chunk was taken off the queue before it ran (`cancel_futures`).
    fn cancel(&self, index: usize, len: usize) {
        self.finish(index, len, Outcome::Failed(TaskError::Cancelled));
    }
}

/// Where a pool's calls queue their chunks: the dispatcher of a pool in this process
/// ([`Shared`]), or a pool in a manager's server, reached through its proxy.
pub(crate) trait ChunkQueue: Send + Sync {
    /// Queues chunks (all or none); refused unless the pool is running.
    fn submit(&self, chunks: Vec<Chunk>) -> Result<(), PoolError>;
    /// Whether new work would be accepted (as far as can be known without asking).
    fn check_running(&self) -> Result<(), PoolError>;
}

impl ChunkQueue for Shared {
    fn submit(&self, chunks: Vec<Chunk>) -> Result<(), PoolError> {
        Shared::submit(self, chunks)
    }

    fn check_running(&self) -> Result<(), PoolError> {
        Shared::check_running(self)
    }
}

/// What became of a chunk.
pub(crate) enum Outcome<'a> {
    /// `len` postcard-encoded `Result<R, WireError>`.
    Encoded(&'a [u8]),
    /// Every item of the chunk failed with this error.
    Failed(TaskError),
}

/// Builds the frame of a chunk: `head` is the encoded [`FnId`] of its function,
/// `items` the concatenated encoded arguments.
pub(crate) fn chunk_frame(head: &[u8], count: usize, items_len: usize) -> Vec<u8> {
    let mut frame = Vec::with_capacity(1 + 4 + 4 + head.len() + items_len);
    frame.push(FRAME_TASKS);
    frame.extend_from_slice(&[0; 4]);
    frame.extend_from_slice(&(count as u32).to_le_bytes());
    frame.extend_from_slice(head);
    frame
}

/// Fills in the record length of a frame made by [`chunk_frame`].
pub(crate) fn seal_frame(frame: &mut [u8]) {
    let len = (frame.len() - 5) as u32;
    frame[1..5].copy_from_slice(&len.to_le_bytes());
}

/// The encoded head of a chunk of task function `task`.
pub(crate) fn chunk_head(task: &FnId<Task>) -> Vec<u8> {
    postcard::to_stdvec(task).unwrap_or_default()
}

/// What a worker that dies while running a task does to the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnWorkerDeath {
    /// Fail only the task it was running, replace the worker, keep going (the default).
    #[default]
    FailTask,
    /// Fail that task, then every other outstanding task, and refuse new work
    /// (`concurrent.futures`' `BrokenProcessPool`).
    BreakPool,
}

/// How the pool is configured.
pub(crate) struct Config {
    pub(crate) processes: usize,
    pub(crate) context: Context,
    pub(crate) init: Option<InitArg>,
    pub(crate) max_tasks: Option<u64>,
    /// Start workers only when there is work for them (the executor), not all up front.
    pub(crate) lazy: bool,
    pub(crate) on_death: OnWorkerDeath,
    pub(crate) name: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Status {
    Running,
    Closed,
    /// Stopping now: the workers get `SIGTERM` (or `SIGKILL` if `kill`).
    Terminating {
        kill: bool,
    },
    Broken(String),
}

pub(crate) struct State {
    pub(crate) pending: VecDeque<Chunk>,
    /// Submissions so far (a counter the dispatcher compares with the one it last planned
    /// workers for: a submission in between must not be slept through).
    submitted: u64,
    pub(crate) status: Status,
    asleep: bool,
    /// The dispatcher has ended.
    pub(crate) stopped: bool,
    pub(crate) pids: Vec<u32>,
    pub(crate) started_total: usize,
}

/// What the pool's handles and the dispatcher share.
pub(crate) struct Shared {
    state: Mutex<State>,
    stopped_cv: Condvar,
    wake_tx: Mutex<Connection<()>>,
    /// Whether the workers can receive OS handles beside a chunk (the shareable objects in
    /// task arguments): not an MPI pool's ranks.
    handles_travel: bool,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wake_if_asleep(&self, st: &mut State) {
        if st.asleep {
            st.asleep = false;
            let _ = self
                .wake_tx
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .send_bytes(&[]);
        }
    }

    fn refusal(status: &Status) -> Option<PoolError> {
        match status {
            Status::Running => None,
            Status::Closed => Some(PoolError::Closed),
            Status::Terminating { .. } => Some(PoolError::Terminated),
            Status::Broken(m) => Some(PoolError::Broken(m.clone())),
        }
    }

    /// Queues chunks; refused unless the pool is running.
    /// Chunks holding handles are refused, all of them, by a pool whose workers cannot
    /// receive handles.
    pub(crate) fn submit(&self, chunks: impl IntoIterator<Item = Chunk>) -> Result<(), PoolError> {
        let chunks: Vec<Chunk> = chunks.into_iter().collect();
        if !self.handles_travel && chunks.iter().any(|c| !c.handles.is_empty()) {
            return Err(PoolError::HandlesUnsupported("a task argument"));
        }
        let mut st = self.lock();
        if let Some(e) = Self::refusal(&st.status) {
            return Err(e);
        }
        st.pending.extend(chunks);
        st.submitted += 1;
        self.wake_if_asleep(&mut st);
        Ok(())
    }

    /// Whether new work would be accepted.
    pub(crate) fn check_running(&self) -> Result<(), PoolError> {
        match Self::refusal(&self.lock().status) {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    /// No new work; the workers end once the queued work is done.
    pub(crate) fn close(&self) {
        crate::logging::mp_log!(Debug, "closing pool");
        let mut st = self.lock();
        if st.status == Status::Running {
            st.status = Status::Closed;
        }
        self.wake_if_asleep(&mut st);
    }

    /// Stop now: workers are terminated, outstanding work fails.
    pub(crate) fn terminate(&self) {
        self.stop_now(false);
    }

    /// Like [`terminate`](Self::terminate), with `SIGKILL` if `kill` (`TerminateProcess`
    /// either way on Windows).
    pub(crate) fn stop_now(&self, kill: bool) {
        crate::logging::mp_log!(Debug, "terminating pool");
        let mut st = self.lock();
        if matches!(st.status, Status::Running | Status::Closed) {
            st.status = Status::Terminating { kill };
        }
        self.wake_if_asleep(&mut st);
    }

    /// Waits for the dispatcher to end, at most `timeout`.
    pub(crate) fn wait_stopped(&self, timeout: Option<Duration>) -> bool {
        let st = self.lock();
        match timeout {
            None => {
                let _st = self
                    .stopped_cv
                    .wait_while(st, |s| !s.stopped)
                    .unwrap_or_else(|e| e.into_inner());
                true
            }
            Some(t) => {
                let (st, _) = self
                    .stopped_cv
                    .wait_timeout_while(st, t, |s| !s.stopped)
                    .unwrap_or_else(|e| e.into_inner());
                st.stopped
            }
        }
    }

    /// Removes and returns the queued chunks (executor's `cancel_futures`).
    pub(crate) fn take_pending(&self) -> VecDeque<Chunk> {
        std::mem::take(&mut self.lock().pending)
    }
}

struct Worker<K> {
    link: K,
    inflight: VecDeque<Chunk>,
    sent: u64,
    /// Chunks whose results arrived.
    answered: u64,
}

struct Dispatcher<L: Launcher> {
    shared: Arc<Shared>,
    cfg: Config,
    launcher: L,
    workers: Vec<Worker<L::Link>>,
    wake_rx: Connection<()>,
    /// Moving average of a chunk's run time in the worker, in nanoseconds.
    chunk_nanos: f64,
    counter: usize,
    /// `State::submitted` when [`top_up`](Self::top_up) last planned the workers.
    planned_for: u64,
}

/// Starts the dispatcher over worker processes started with `cfg.context`.
pub(crate) fn start(cfg: Config) -> Result<(Arc<Shared>, std::thread::JoinHandle<()>), PoolError> {
    let launcher = Processes {
        context: cfg.context,
    };
    start_with(cfg, launcher)
}

/// Starts the dispatcher over workers from `launcher`; with `cfg.lazy == false` all workers
/// are started first, and a failure to start one stops the others and is returned.
pub(crate) fn start_with<L: Launcher>(
    cfg: Config,
    launcher: L,
) -> Result<(Arc<Shared>, std::thread::JoinHandle<()>), PoolError> {
    let (wake_tx, wake_rx) = pipe::<()>()
        .map_err(|e| PoolError::Start(ProcessError::Io(std::io::Error::other(e.to_string()))))?;
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            pending: VecDeque::new(),
            submitted: 0,
            status: Status::Running,
            asleep: false,
            stopped: false,
            pids: Vec::new(),
            started_total: 0,
        }),
        stopped_cv: Condvar::new(),
        wake_tx: Mutex::new(wake_tx),
        handles_travel: L::CARRIES_HANDLES,
    });
    let mut d = Dispatcher {
        shared: shared.clone(),
        cfg,
        launcher,
        workers: Vec::new(),
        wake_rx,
        chunk_nanos: f64::INFINITY,
        planned_for: 0,
        counter: 0,
    };
    if !d.cfg.lazy {
        for _ in 0..d.cfg.processes {
            if let Err(e) = d.start_worker() {
                d.stop_workers(Stop::Terminate);
                return Err(PoolError::Start(e));
            }
        }
    }
    let handle = std::thread::Builder::new()
        .name(format!("mp-{}-dispatcher", d.cfg.name))
        .spawn(move || d.run())
        .map_err(|e| PoolError::Start(ProcessError::Io(e)))?;
    Ok((shared, handle))
}

/// Longest chunk frame sent to a worker that is still busy (bigger ones wait until the
/// worker is idle and reading, so a send never blocks on a busy worker).
const PREFETCH_MAX_BYTES: usize = 64 * 1024;

/// Chunks are prefetched only while their average run time is below this.
const PREFETCH_MAX_NANOS: f64 = 200_000.0;

/// Below this average run time, up to [`BATCH_DEPTH`] chunks are queued in a worker, sent
/// several to a message (the worker answers them together too).
const BATCH_MAX_NANOS: f64 = 20_000.0;
const BATCH_DEPTH: usize = 64;

impl<L: Launcher> Dispatcher<L> {
    fn start_worker(&mut self) -> Result<(), ProcessError> {
        self.counter += 1;
        let setup = Setup {
            init: self.cfg.init.clone(),
            max_tasks: self.cfg.max_tasks,
        };
        let name = format!("{}Worker-{}", self.cfg.name, self.counter);
        let link = self.launcher.start(&setup, name.clone())?;
        crate::logging::mp_log!(Debug, "added worker {name} (pid {})", link.id());
        let mut st = self.shared.lock();
        st.pids.push(link.id());
        st.started_total += 1;
        drop(st);
        self.workers.push(Worker {
            link,
            inflight: VecDeque::new(),
            sent: 0,
            answered: 0,
        });
        Ok(())
    }

    /// Chunks a worker may still be given: its prefetch depth, within its task quota.
    fn room(&self, w: &Worker<L::Link>) -> usize {
        if !w.link.is_open() {
            return 0;
        }
        // Prefetch (a second chunk queued behind the running one) only for chunks known to
        // be short: it hides the round trip, and a short chunk delays nothing much.
        // Tiny chunks travel in batches, with a bounded backlog per worker.
        let depth: usize = if self.chunk_nanos < BATCH_MAX_NANOS {
            BATCH_DEPTH
        } else if self.chunk_nanos < PREFETCH_MAX_NANOS {
            2
        } else {
            1
        };
        let mut room = depth.saturating_sub(w.inflight.len());
        if let Some(max) = self.cfg.max_tasks {
            room = room.min(max.saturating_sub(w.sent) as usize);
        }
        room
    }

    fn run(mut self) {
        loop {
            let status = self.shared.lock().status.clone();
            match status {
                Status::Terminating { kill } => {
                    self.fail_all(TaskError::Terminated);
                    self.stop_workers(if kill { Stop::Kill } else { Stop::Terminate });
                    break;
                }
                Status::Broken(msg) => {
                    self.fail_all(TaskError::Broken(msg));
                    self.stop_workers(Stop::Terminate);
                    break;
                }
                _ => {}
            }
            self.dispatch();
            self.top_up();
            self.dispatch();
            let idle = self.workers.iter().all(|w| w.inflight.is_empty());
            if status == Status::Closed && idle && self.shared.lock().pending.is_empty() {
                self.stop_workers(Stop::Close);
                break;
            }
            let ready = match self.wait_ready(&status) {
                Some(r) => r,
                None => continue,
            };
            self.handle(ready);
        }
        let leftover = std::mem::take(&mut self.shared.lock().pending);
        for c in leftover {
            c.sink
                .finish(c.index, c.len, Outcome::Failed(TaskError::Terminated));
        }
        let mut st = self.shared.lock();
        st.stopped = true;
        st.pids.clear();
        self.shared.stopped_cv.notify_all();
    }

    /// Sends queued chunks to workers with room: idle workers first, then prefetch.
    fn dispatch(&mut self) {
        for pass in 0..2 {
            for i in 0..self.workers.len() {
                let w = &self.workers[i];
                if pass == 0 && !w.inflight.is_empty() {
                    continue;
                }
                let room = self.room(w);
                if room == 0 {
                    continue;
                }
                let prefetch = !w.inflight.is_empty();
                let mut batch = Vec::new();
                let mut bytes = 0;
                // Lazily started pools share among the workers they may have, so that
                // queued work is left for the workers `top_up` will start.
                let workers = if self.cfg.lazy {
                    self.cfg.processes
                } else {
                    self.workers.len().max(1)
                };
                let held: usize = self.workers.iter().map(|w| w.inflight.len()).sum();
                let mine = w.inflight.len();
                {
                    let mut st = self.shared.lock();
                    // A fair share of the outstanding work at most, so that a stale estimate
                    // of chunk time cannot pile long chunks onto one worker.
                    let share = (st.pending.len() + held)
                        .div_ceil(workers)
                        .saturating_sub(mine)
                        .max(1);
                    let room = room.min(share);
                    while batch.len() < room {
                        let Some(front) = st.pending.front() else {
                            break;
                        };
                        let size = front.frame.len();
                        if (prefetch || !batch.is_empty()) && bytes + size > PREFETCH_MAX_BYTES {
                            break;
                        }
                        // Handles travel beside one chunk's frame: such a chunk goes alone.
                        let alone = !front.handles.is_empty();
                        if alone && !batch.is_empty() {
                            break;
                        }
                        let c = st.pending.pop_front().unwrap();
                        if c.sink.begin(c.index) {
                            bytes += size;
                            batch.push(c);
                            if alone {
                                break;
                            }
                        }
                    }
                }
                if batch.is_empty() {
                    return;
                }
                let w = &mut self.workers[i];
                // If the worker is gone or going, its sentinel will tell; the chunks are
                // accounted for in `inflight` until then. A chunk with handles went alone.
                if batch.len() == 1 {
                    let raw: Vec<_> = batch[0]
                        .handles
                        .iter()
                        .map(mp_ipc::handle::raw_of)
                        .collect();
                    w.link.send(&batch[0].frame, &raw);
                } else {
                    let mut frame = Vec::with_capacity(bytes);
                    frame.push(FRAME_TASKS);
                    for c in &batch {
                        frame.extend_from_slice(&c.frame[1..]);
                    }
                    w.link.send(&frame, &[]);
                }
                w.sent += batch.len() as u64;
                w.inflight.extend(batch);
            }
        }
    }

    /// Starts workers so that queued work has somewhere to go.
    fn top_up(&mut self) {
        let (status, pending) = {
            let st = self.shared.lock();
            self.planned_for = st.submitted;
            (st.status.clone(), st.pending.len())
        };
        let want = match status {
            Status::Running if !self.cfg.lazy => self.cfg.processes,
            Status::Running | Status::Closed => {
                let idle = self
                    .workers
                    .iter()
                    .filter(|w| w.link.is_open() && w.inflight.is_empty())
                    .count();
                (self.workers.len() + pending.saturating_sub(idle)).min(self.cfg.processes)
            }
            _ => 0,
        };
        while self.workers.len() < want {
            if let Err(e) = self.start_worker() {
                if self.workers.is_empty() {
                    self.break_pool(format!("a worker could not be started: {e}"));
                }
                return;
            }
        }
    }

    fn break_pool(&mut self, msg: String) {
        let mut st = self.shared.lock();
        if !matches!(st.status, Status::Terminating { .. } | Status::Broken(_)) {
            st.status = Status::Broken(msg);
        }
    }

    /// Waits for something to happen; `None` when there is something to do at once.
    fn wait_ready(&mut self, status: &Status) -> Option<Vec<Ready>> {
        let can_dispatch = self.workers.iter().any(|w| self.room(w) > 0);
        {
            let mut st = self.shared.lock();
            // Work submitted after `top_up` planned the workers (a lazy pool may have none
            // yet) is looked at before sleeping: its submitter saw this thread awake and
            // rang no bell.
            if &st.status != status
                || (can_dispatch && !st.pending.is_empty())
                || st.submitted != self.planned_for
            {
                return None;
            }
            st.asleep = true;
        }
        let links: Vec<&L::Link> = self.workers.iter().map(|w| &w.link).collect();
        let ready = self.launcher.wait(&self.wake_rx, &links);
        self.shared.lock().asleep = false;
        match ready {
            Ok(r) => Some(r),
            Err(e) => {
                self.break_pool(format!("the pool's dispatcher cannot wait: {e}"));
                Some(Vec::new())
            }
        }
    }

    fn handle(&mut self, ready: Vec<Ready>) {
        let mut dead = Vec::new();
        for r in ready {
            match r {
                Ready::Wake => {
                    while matches!(self.wake_rx.poll(Duration::ZERO), Ok(true)) {
                        if self.wake_rx.recv_bytes().is_err() {
                            break;
                        }
                    }
                }
                Ready::Conn(i) => self.read_worker(i, false),
                Ready::Sentinel(i) => dead.push(i),
            }
        }
        // Highest index first, so removals do not shift the others.
        dead.sort_unstable();
        for i in dead.into_iter().rev() {
            self.reap_worker(i);
        }
    }

    /// Reads the frames a worker sent: one at least (it is readable), then whatever else
    /// is already there. `drain` reads until nothing is left (the worker has exited).
    fn read_worker(&mut self, i: usize, drain: bool) {
        let _ = drain;
        loop {
            match self.workers[i].link.try_recv() {
                Some(Ok(frame)) => self.on_frame(i, &frame),
                // Nothing more now; or end of stream (the worker is exiting) or a broken
                // stream: stop reading, the sentinel settles the rest.
                None | Some(Err(())) => return,
            }
        }
    }

    fn on_frame(&mut self, i: usize, frame: &[u8]) {
        match frame.first() {
            Some(&FRAME_RESULTS) => {
                for record in worker::records(&frame[1..]) {
                    let Some(chunk) = self.workers[i].inflight.pop_front() else {
                        self.corrupt(i);
                        return;
                    };
                    self.workers[i].answered += 1;
                    let Ok(record) = record else {
                        self.workers[i].answered -= 1;
                        self.workers[i].inflight.push_front(chunk);
                        self.corrupt(i);
                        return;
                    };
                    self.on_outcome(chunk, record);
                }
            }
            Some(&FRAME_INIT_FAILED) => {
                let msg = match crate::codec::decode::<WireError>(&frame[1..]) {
                    Ok(e) => TaskError::from(e).to_string(),
                    Err(e) => format!("undecodable error: {e}"),
                };
                self.break_pool(format!("the initializer failed: {msg}"));
            }
            _ => self.corrupt(i),
        }
    }

    fn on_outcome(&mut self, chunk: Chunk, record: &[u8]) {
        let outcome = match record.first() {
            Some(&OUTCOME_OK) if record.len() >= 9 => {
                let nanos = u64::from_le_bytes(record[1..9].try_into().unwrap()) as f64;
                // Up at once (a long chunk must stop batching now), down slowly.
                self.chunk_nanos = if self.chunk_nanos.is_infinite() || nanos > self.chunk_nanos {
                    nanos
                } else {
                    0.8 * self.chunk_nanos + 0.2 * nanos
                };
                Outcome::Encoded(&record[9..])
            }
            Some(&OUTCOME_FAILED) => match crate::codec::decode::<WireError>(&record[1..]) {
                Ok(e) => Outcome::Failed(e.into()),
                Err(e) => Outcome::Failed(TaskError::Decode(format!(
                    "undecodable error from the worker: {e}"
                ))),
            },
            _ => Outcome::Failed(TaskError::Decode("corrupt result frame".into())),
        };
        chunk.sink.finish(chunk.index, chunk.len, outcome);
    }

    /// A worker sent something that makes no sense: stop trusting it.
    fn corrupt(&mut self, i: usize) {
        let w = &mut self.workers[i];
        w.link.close();
        w.link.stop(Stop::Kill);
    }

    /// A worker's sentinel fired: settle its chunks and replace it.
    fn reap_worker(&mut self, i: usize) {
        self.read_worker(i, true);
        // Bound first: a guard in the `if let` scrutinee would live through the block,
        // whose own `lock()` would then deadlock.
        let status = self.shared.lock().status.clone();
        if let Status::Broken(msg) = status {
            // Its initializer failed (or the pool broke otherwise): that is the story.
            let mut w = self.workers.remove(i);
            for c in w.inflight.drain(..) {
                c.sink.finish(
                    c.index,
                    c.len,
                    Outcome::Failed(TaskError::Broken(msg.clone())),
                );
            }
            w.link.join(Duration::from_secs(5));
            w.link.release();
            let id = w.link.id();
            self.shared.lock().pids.retain(|p| *p != id);
            return;
        }
        let mut w = self.workers.remove(i);
        w.link.join(Duration::from_secs(5));
        let err = w.link.death();
        w.link.release();
        let id = w.link.id();
        self.shared.lock().pids.retain(|p| *p != id);
        // Chunks answered+1 ..= sent are unanswered, in `inflight` order; the worker had
        // started `progress` chunks, so the one it was running (if any) is known exactly.
        // Where that cannot be known (an MPI rank), the oldest unanswered chunk is blamed.
        let running_at = match w.link.started() {
            Some(started) => started
                .checked_sub(w.answered + 1)
                .map(|k| k as usize)
                .filter(|k| *k < w.inflight.len()),
            None => (!w.inflight.is_empty()).then_some(0),
        };
        let Some(at) = running_at else {
            // It died between chunks: nothing it held had started.
            let mut st = self.shared.lock();
            for c in w.inflight.drain(..).rev() {
                st.pending.push_front(c);
            }
            return;
        };
        let running = w.inflight.remove(at).expect("index checked");
        running
            .sink
            .finish(running.index, running.len, Outcome::Failed(err.clone()));
        if self.cfg.on_death == OnWorkerDeath::BreakPool {
            for c in w.inflight.drain(..) {
                c.sink.finish(c.index, c.len, Outcome::Failed(err.clone()));
            }
            self.break_pool(format!("a worker died: {err}"));
            return;
        }
        // The others go back to the head of the queue, in order: those after the running
        // one never started; those before it finished, but their results (batched, short
        // chunks only) were lost with the worker, so they run again.
        let mut st = self.shared.lock();
        for c in w.inflight.drain(..).rev() {
            st.pending.push_front(c);
        }
    }

    fn fail_all(&mut self, err: TaskError) {
        for w in &mut self.workers {
            for c in w.inflight.drain(..) {
                c.sink.finish(c.index, c.len, Outcome::Failed(err.clone()));
            }
        }
        let pending = std::mem::take(&mut self.shared.lock().pending);
        for c in pending {
            c.sink.finish(c.index, c.len, Outcome::Failed(err.clone()));
        }
    }

    /// Ends every worker: their connection is closed, so they exit on their own when their
    /// work is done (`Stop::Close`), or they are sent `SIGTERM` or `SIGKILL`; one still
    /// alive after a grace period is killed.
    fn stop_workers(&mut self, how: Stop) {
        for w in &mut self.workers {
            w.link.close();
            w.link.stop(how);
        }
        for mut w in self.workers.drain(..) {
            let grace = if how == Stop::Close { 10 } else { 2 };
            if !w.link.join(Duration::from_secs(grace)) {
                w.link.stop(Stop::Kill);
                w.link.join(Duration::from_secs(5));
            }
            w.link.release();
        }
        self.shared.lock().pids.clear();
    }
}
