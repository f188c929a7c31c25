//! A pool of worker processes in the manager's server (Python's `manager.Pool()`), used
//! through a [`PoolProxy`].
//!
//! The client encodes tasks exactly as a local [`Pool`] does (a chunk frame naming the task
//! function by its [`FnId`](crate::fn_id) and holding the encoded arguments), and the server
//! queues those frames, unread, on a [`Pool`] of its own; the server's workers resolve the
//! function and decode the arguments, and the encoded results travel back unread to the
//! client, which decodes them with the same code as a local pool's results. So the server
//! runs a function its client names. That is sound only if both run the same executable, so
//! every request that names functions carries the client's executable
//! [fingerprint](crate::fn_id::fingerprint), and the server refuses another one with
//! [`ManagerError::OtherExecutable`]. An authenticated client running the same executable is
//! trusted to name any task function of it, as Python trusts an authenticated client that
//! sends pickled callables.
//!
//! Results come back through one collector thread per proxy and process, which asks the
//! server for the finished chunks of its session (a long poll) while any are outstanding;
//! callbacks run on it.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::Duration;

use mp_ipc::deadline::Deadline;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::client::{decode_reply, ProxyCore};
use super::protocol::Wait;
use super::server::{decode_op, encode, wait_until, CallCtx, Charge, Object, Registry, Waited};
use super::{ManagerError, RemoteError};
use crate::pool::{
    apply_on, foreign_chunk, AsyncResult, Callbacks, ChunkQueue, Chunked, IMap, Outcome, Pool,
    PoolBuilder, PoolError, QueuedChunk, RemoteSpec, Sink, StarFn, TaskError,
};

/// The error kind of a refused fingerprint, turned back into
/// [`ManagerError::OtherExecutable`] by the client.
const OTHER_EXECUTABLE: &str = "OtherExecutable";

/// The most bytes of task frames one submit request carries (a map is sent in as many
/// requests as it needs).
const SUBMIT_BYTES: usize = 16 << 20;

/// How long one collect call waits in the server for a finished chunk.
const COLLECT_WAIT: Duration = Duration::from_secs(1);

/// What a pool object is made with.
#[derive(Serialize, Deserialize)]
pub(crate) struct PoolInit {
    fingerprint: [u8; 32],
    spec: RemoteSpec,
}

/// One chunk frame of a client, as [`encode_chunk`](crate::pool) made it.
#[derive(Serialize, Deserialize)]
pub(crate) struct RemoteChunk {
    /// The client's name for it (unique in its session).
    job: u64,
    len: u32,
    frame: Vec<u8>,
}

/// A chunk's outcome, back to the client: its encoded results, or one error for all.
#[derive(Serialize, Deserialize)]
pub(crate) struct Finished {
    job: u64,
    outcome: Result<Vec<u8>, TaskError>,
}

/// Why the server's pool refused work.
#[derive(Serialize, Deserialize)]
enum Refusal {
    Closed,
    Terminated,
    Broken(String),
    StillRunning,
    Other(String),
}

impl From<PoolError> for Refusal {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Closed => Self::Closed,
            PoolError::Terminated => Self::Terminated,
            PoolError::Broken(m) => Self::Broken(m),
            PoolError::StillRunning => Self::StillRunning,
            e => Self::Other(e.to_string()),
        }
    }
}

impl From<Refusal> for PoolError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Closed => Self::Closed,
            Refusal::Terminated => Self::Terminated,
            Refusal::Broken(m) => Self::Broken(m),
            Refusal::StillRunning => Self::StillRunning,
            Refusal::Other(m) => Self::InvalidArgument(m),
        }
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) enum PoolOp {
    /// Queue chunks for `session`; `fingerprint` is the client's executable's. Answers
    /// `Result<(), Refusal>`.
    Submit {
        fingerprint: [u8; 32],
        session: u64,
        chunks: Vec<RemoteChunk>,
    },
    /// The finished chunks of `session` (waiting up to `wait` for one): `Vec<Finished>`.
    Collect {
        session: u64,
        wait: Duration,
    },
    Close,
    Terminate,
    /// Waits for the workers to end: `Result<bool, Refusal>` (whether they have).
    Join(Wait),
}

// -------------------------------------------------------------------------------------------
// The server side.

/// Checks a client's fingerprint against the server's executable.
fn check_fingerprint(theirs: &[u8; 32]) -> Result<(), RemoteError> {
    match crate::fn_id::fingerprint() {
        Ok(ours) if ours == *theirs => Ok(()),
        Ok(_) => Err(RemoteError::new(
            OTHER_EXECUTABLE,
            format!(
                "the client runs another executable than the manager's server ({}); a \
                 manager's pool runs only the functions of the server's own executable",
                std::env::current_exe().unwrap_or_default().display()
            ),
        )),
        Err(e) => Err(RemoteError::new(
            OTHER_EXECUTABLE,
            format!("the server cannot read its own executable: {e}"),
        )),
    }
}

/// Finished chunks by session, each with its share of the memory budget.
type Sessions = HashMap<u64, VecDeque<(Finished, Option<Charge>)>>;

/// Finished chunks waiting for their session's collector.
#[derive(Default)]
struct Finishing {
    sessions: Mutex<Sessions>,
    cv: Condvar,
}

impl Finishing {
    fn lock(&self) -> MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Where the server's pool puts the outcome of a client's chunk.
struct RelaySink {
    finishing: Arc<Finishing>,
    budget: Arc<super::server::Budget>,
    session: u64,
    job: u64,
    /// The queued frame's share of the memory budget.
    _frame: Charge,
}

impl Sink for RelaySink {
    fn finish(&self, _index: usize, _len: usize, outcome: Outcome<'_>) {
        let (outcome, size) = match outcome {
            Outcome::Encoded(bytes) => (Ok(bytes.to_vec()), bytes.len()),
            Outcome::Failed(e) => (Err(e), 64),
        };
        // Held for the client until collected; past the budget it is an error instead.
        let (outcome, charge) = match self.budget.charge(size as u64 + 64) {
            Ok(c) => (outcome, Some(c)),
            Err(e) => (Err(TaskError::Manager(e.to_string())), None),
        };
        let finished = Finished {
            job: self.job,
            outcome,
        };
        self.finishing
            .lock()
            .entry(self.session)
            .or_default()
            .push_back((finished, charge));
        self.finishing.cv.notify_all();
    }
}

/// A pool in the server.
struct PoolObject {
    pool: Pool,
    finishing: Arc<Finishing>,
}

pub(crate) fn register(r: &mut Registry) {
    r.add("pool", |w, _| {
        let init: PoolInit = crate::codec::decode(&w.bytes)
            .map_err(|e| RemoteError::new("TypeError", format!("bad pool arguments: {e}")))?;
        check_fingerprint(&init.fingerprint)?;
        let pool = PoolBuilder::from_remote_spec(init.spec)
            .build()
            .map_err(|e| match e {
                PoolError::InvalidArgument(m) => RemoteError::new("ValueError", m),
                e => RemoteError::new("RuntimeError", e.to_string()),
            })?;
        Ok(Arc::new(PoolObject {
            pool,
            finishing: Arc::default(),
        }))
    });
}

impl Object for PoolObject {
    fn call(&self, op: &[u8], ctx: &CallCtx<'_>) -> Result<Vec<u8>, RemoteError> {
        match decode_op::<PoolOp>(op)? {
            PoolOp::Submit {
                fingerprint,
                session,
                chunks,
            } => {
                check_fingerprint(&fingerprint)?;
                let mut queued = Vec::with_capacity(chunks.len());
                for c in chunks {
                    let sink = Arc::new(RelaySink {
                        finishing: self.finishing.clone(),
                        budget: ctx.table.budget.clone(),
                        session,
                        job: c.job,
                        _frame: ctx.table.budget.charge(c.frame.len() as u64 + 256)?,
                    });
                    queued.push(
                        foreign_chunk(c.frame, c.len, sink).ok_or_else(|| {
                            RemoteError::new("ValueError", "a malformed task frame")
                        })?,
                    );
                }
                let r: Result<(), Refusal> = self.pool.submit_chunks(queued).map_err(Refusal::from);
                encode(&r)
            }
            PoolOp::Collect { session, wait } => {
                let g = self.finishing.lock();
                let (mut g, waited) = wait_until(&self.finishing.cv, g, Some(wait), ctx, |s| {
                    s.get(&session).is_some_and(|q| !q.is_empty())
                });
                let mut out = Vec::new();
                if waited == Waited::Ready {
                    let queue = g.get_mut(&session).expect("ready");
                    // As much as one reply may hold (always at least one).
                    let mut bytes = 0u64;
                    while let Some((f, _)) = queue.front() {
                        let size = f.outcome.as_ref().map_or(64, |b| b.len() as u64 + 16);
                        if !out.is_empty() && ctx.check_reply(bytes + size).is_err() {
                            break;
                        }
                        let (mut f, _charge) = queue.pop_front().expect("front");
                        if let Err(e) = ctx.check_reply(size) {
                            // Too large for any reply: the task fails, not the collector.
                            f.outcome = Err(TaskError::Manager(e.to_string()));
                            bytes += 64;
                        } else {
                            bytes += size;
                        }
                        out.push(f);
                    }
                    if queue.is_empty() {
                        g.remove(&session);
                    }
                }
                drop(g);
                encode(&out)
            }
            PoolOp::Close => {
                self.pool.close();
                encode(&())
            }
            PoolOp::Terminate => {
                self.pool.terminate();
                encode(&())
            }
            PoolOp::Join(wait) => {
                let deadline = Deadline::from_timeout(wait);
                let r = loop {
                    let step = deadline.remaining_capped(Duration::from_millis(100));
                    match self.pool.join_timeout(step) {
                        Ok(false) if !step.is_zero() && !ctx.client_gone() => continue,
                        r => break r.map_err(Refusal::from),
                    }
                };
                encode(&r)
            }
        }
    }
}

// -------------------------------------------------------------------------------------------
// The client side.

/// Turns the server's refusal of this executable into its typed error.
fn typed(e: ManagerError) -> ManagerError {
    match e {
        ManagerError::Remote(r) if r.kind == OTHER_EXECUTABLE => {
            ManagerError::OtherExecutable(r.message)
        }
        e => e,
    }
}

/// This process's executable fingerprint, or the error a manager's pool cannot be used
/// without it.
fn our_fingerprint() -> Result<[u8; 32], ManagerError> {
    crate::fn_id::fingerprint().map_err(|e| {
        ManagerError::OtherExecutable(format!("cannot read this process's executable: {e}"))
    })
}

/// A chunk sent and not yet back: where its outcome goes.
struct Pending {
    sink: Arc<dyn Sink>,
    index: usize,
    len: usize,
}

struct RemoteState {
    /// The process this state belongs to: a forked child starts afresh (the parent's
    /// chunks, session and collector are not its own).
    pid: u32,
    /// This process's name for itself in the server.
    session: u64,
    jobs: HashMap<u64, Pending>,
    collecting: bool,
}

impl RemoteState {
    fn new() -> Self {
        let mut b = [0u8; 8];
        let _ = getrandom::fill(&mut b);
        Self {
            pid: std::process::id(),
            session: u64::from_le_bytes(b),
            jobs: HashMap::new(),
            collecting: false,
        }
    }
}

/// This process's side of a pool in a manager: the queue its calls submit to.
struct Remote {
    core: ProxyCore,
    me: Weak<Remote>,
    next_job: AtomicU64,
    state: Mutex<RemoteState>,
}

impl Remote {
    fn new(core: ProxyCore) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            core,
            me: me.clone(),
            next_job: AtomicU64::new(1),
            state: Mutex::new(RemoteState::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, RemoteState> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.pid != std::process::id() {
            // A forked child's copy: the parent's outstanding chunks, session and collector
            // are the parent's.
            *st = RemoteState::new();
        }
        st
    }

    fn request<R: DeserializeOwned>(&self, op: &PoolOp) -> Result<R, ManagerError> {
        decode_reply(&self.core.call(op).map_err(typed)?)
    }

    /// Fetches finished chunks while any are outstanding, then ends (a later submission
    /// starts it again). If the manager fails, every outstanding chunk fails with it.
    fn collect(self: Arc<Self>) {
        loop {
            let session = {
                let mut st = self.lock();
                if st.jobs.is_empty() {
                    st.collecting = false;
                    return;
                }
                st.session
            };
            let op = PoolOp::Collect {
                session,
                wait: COLLECT_WAIT,
            };
            match self.request::<Vec<Finished>>(&op) {
                Ok(done) => {
                    for f in done {
                        let Some(p) = self.lock().jobs.remove(&f.job) else {
                            continue;
                        };
                        let outcome = match &f.outcome {
                            Ok(bytes) => Outcome::Encoded(bytes),
                            Err(e) => Outcome::Failed(e.clone()),
                        };
                        p.sink.finish(p.index, p.len, outcome);
                    }
                }
                Err(e) => {
                    let failed: Vec<Pending> = {
                        let mut st = self.lock();
                        st.collecting = false;
                        st.jobs.drain().map(|(_, p)| p).collect()
                    };
                    let e = TaskError::Manager(e.to_string());
                    for p in failed {
                        p.sink.finish(p.index, p.len, Outcome::Failed(e.clone()));
                    }
                    return;
                }
            }
        }
    }
}

impl ChunkQueue for Remote {
    fn submit(&self, chunks: Vec<QueuedChunk>) -> Result<(), PoolError> {
        if chunks.iter().any(|c| !c.handles.is_empty()) {
            return Err(PoolError::HandlesUnsupported("a task argument"));
        }
        let fingerprint = our_fingerprint().map_err(PoolError::Manager)?;
        let mut chunks = chunks.into_iter().peekable();
        let mut r = Ok(());
        while chunks.peek().is_some() {
            // One request holds at most SUBMIT_BYTES of frames (and at least one chunk), so
            // a long map stays far below the server's message limit.
            let mut wire = Vec::new();
            let mut jobs = Vec::new();
            let mut bytes = 0;
            while let Some(c) =
                chunks.next_if(|c| wire.is_empty() || bytes + c.frame.len() <= SUBMIT_BYTES)
            {
                let job = self.next_job.fetch_add(1, Ordering::Relaxed);
                bytes += c.frame.len();
                wire.push(RemoteChunk {
                    job,
                    len: c.len as u32,
                    frame: c.frame,
                });
                jobs.push((
                    job,
                    Pending {
                        sink: c.sink,
                        index: c.index,
                        len: c.len,
                    },
                ));
            }
            let ids: Vec<u64> = jobs.iter().map(|(j, _)| *j).collect();
            // Known before they are sent: the collector may see them finish before the reply.
            let session = {
                let mut st = self.lock();
                st.jobs.extend(jobs);
                st.session
            };
            let sent = self.request::<Result<(), Refusal>>(&PoolOp::Submit {
                fingerprint,
                session,
                chunks: wire,
            });
            r = match sent {
                Ok(Ok(())) => Ok(()),
                Ok(Err(refusal)) => Err(refusal.into()),
                Err(e) => Err(PoolError::Manager(e)),
            };
            if r.is_err() {
                // The call fails; chunks queued by earlier requests finish unseen.
                let mut st = self.lock();
                for id in ids {
                    st.jobs.remove(&id);
                }
                break;
            }
        }
        let mut st = self.lock();
        if !st.collecting && !st.jobs.is_empty() {
            if let Some(me) = self.me.upgrade() {
                let spawned = std::thread::Builder::new()
                    .name("mp-manager-pool-results".into())
                    .spawn(move || me.collect());
                st.collecting = spawned.is_ok();
            }
        }
        r
    }

    fn check_running(&self) -> Result<(), PoolError> {
        // The server says so when work is submitted.
        Ok(())
    }
}

/// A pool of worker processes living in a manager's server (Python's `manager.Pool()`),
/// made by [`Manager::pool`](super::Manager::pool). It has the everyday calls of [`Pool`]
/// with the same types (results as [`AsyncResult`] and [`IMap`], a task's panic as
/// [`TaskError::Panicked`] with its message), implements [`PoolApi`](crate::api::PoolApi),
/// and can be passed to other processes like any proxy: every holder submits to the one pool
/// in the server.
///
/// A manager that fails (it is gone, or the connection breaks) fails the outstanding tasks
/// with [`TaskError::Manager`] and later submissions with [`PoolError::Manager`]; nothing
/// waits for it. The server's pool is terminated when the last proxy is dropped and the
/// results asked for through it are in.
///
/// ```
/// let m = mp_core::manager::Manager::start().unwrap();
/// let pool = m.pool(2).unwrap();
/// assert_eq!(pool.map(|x: u64| x * x, 0..5).unwrap(), [0, 1, 4, 9, 16]);
/// let r = pool.apply_async(|s: String| s.len(), "four".to_string()).unwrap();
/// assert_eq!(r.get().unwrap(), 4);
/// pool.close().unwrap();
/// pool.join().unwrap();
/// ```
pub struct PoolProxy {
    remote: Arc<Remote>,
    queue: Arc<dyn ChunkQueue>,
    processes: usize,
}

impl PoolProxy {
    fn from_core(core: ProxyCore, processes: usize) -> Self {
        let remote = Remote::new(core);
        Self {
            queue: remote.clone(),
            remote,
            processes,
        }
    }

    /// The number of workers, as asked for (the server's CPU count when not given).
    pub fn processes(&self) -> usize {
        self.processes
    }

    /// The mapping calls with `chunksize` items per task sent to a worker (see
    /// [`Pool::chunksize`]; they include `map_results` and the `*_with` forms).
    pub fn chunksize(&self, chunksize: NonZeroUsize) -> Chunked<'_> {
        Chunked::over(&self.queue, self.processes, Some(chunksize.get()))
    }

    fn chunked(&self) -> Chunked<'_> {
        Chunked::over(&self.queue, self.processes, None)
    }

    /// Runs `f(arg)` in a worker of the server's pool and waits for the result.
    pub fn apply<F, A, R>(&self, f: F, arg: A) -> Result<R, TaskError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.apply_async(f, arg)?.into_result()
    }

    /// Starts `f(arg)` in a worker of the server's pool.
    pub fn apply_async<F, A, R>(&self, f: F, arg: A) -> Result<AsyncResult<R>, PoolError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.apply_async_with(f, arg, Callbacks::new())
    }

    /// Starts `f(arg)`; `callbacks` run in this process when it is done.
    pub fn apply_async_with<F, A, R>(
        &self,
        f: F,
        arg: A,
        callbacks: Callbacks<R>,
    ) -> Result<AsyncResult<R>, PoolError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        apply_on(&*self.queue, f, arg, callbacks)
    }

    /// `f` over every item, results in input order (see [`Pool::map`]).
    pub fn map<F, A, R, I>(&self, f: F, iter: I) -> Result<Vec<R>, TaskError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.chunked().map(f, iter)
    }

    /// `f` over every item; each item's own outcome, in input order.
    pub fn map_results<F, A, R, I>(
        &self,
        f: F,
        iter: I,
    ) -> Result<Vec<Result<R, TaskError>>, PoolError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.chunked().map_results(f, iter)
    }

    /// Starts `f` over every item (the input is read now).
    pub fn map_async<F, A, R, I>(&self, f: F, iter: I) -> Result<AsyncResult<Vec<R>>, PoolError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.chunked().map_async(f, iter)
    }

    /// `f(a, b, ...)` for every tuple `(a, b, ...)`, results in input order.
    pub fn starmap<F, Args, R, I>(&self, f: F, iter: I) -> Result<Vec<R>, TaskError>
    where
        F: StarFn<Args, R>,
        I: IntoIterator<Item = Args>,
        Args: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.chunked().starmap(f, iter)
    }

    /// Starts [`starmap`](Self::starmap).
    pub fn starmap_async<F, Args, R, I>(
        &self,
        f: F,
        iter: I,
    ) -> Result<AsyncResult<Vec<R>>, PoolError>
    where
        F: StarFn<Args, R>,
        I: IntoIterator<Item = Args>,
        Args: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.chunked().starmap_async(f, iter)
    }

    /// Lazily maps `f` over `iter`, results in input order (see [`Pool::imap`]).
    pub fn imap<'a, F, A, R, I>(&self, f: F, iter: I) -> Result<IMap<'a, R>, PoolError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'a,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.chunked().imap(f, iter)
    }

    /// Like [`imap`](Self::imap), yielding results as they complete.
    pub fn imap_unordered<'a, F, A, R, I>(&self, f: F, iter: I) -> Result<IMap<'a, R>, PoolError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'a,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.chunked().imap_unordered(f, iter)
    }

    /// No new work; the server's workers exit once the queued work is done.
    pub fn close(&self) -> Result<(), PoolError> {
        self.remote
            .request::<()>(&PoolOp::Close)
            .map_err(PoolError::Manager)
    }

    /// Stops the server's workers now; outstanding results fail with
    /// [`TaskError::Terminated`].
    pub fn terminate(&self) -> Result<(), PoolError> {
        self.remote
            .request::<()>(&PoolOp::Terminate)
            .map_err(PoolError::Manager)
    }

    /// Waits for the server's workers to end, after [`close`](Self::close) or
    /// [`terminate`](Self::terminate); [`PoolError::StillRunning`] otherwise.
    pub fn join(&self) -> Result<(), PoolError> {
        self.join_within(None).map(drop)
    }

    /// [`join`](Self::join), giving up after `timeout`: whether the workers have ended.
    pub fn join_timeout(&self, timeout: Duration) -> Result<bool, PoolError> {
        self.join_within(Some(timeout))
    }

    fn join_within(&self, timeout: Wait) -> Result<bool, PoolError> {
        self.remote
            .request::<Result<bool, Refusal>>(&PoolOp::Join(timeout))
            .map_err(PoolError::Manager)?
            .map_err(PoolError::from)
    }

    /// A second proxy for the same pool.
    pub fn try_clone(&self) -> Result<Self, ManagerError> {
        Ok(Self::from_core(
            self.remote.core.try_clone()?,
            self.processes,
        ))
    }

    /// The pool's id in its manager.
    pub fn id(&self) -> u64 {
        self.remote.core.id
    }
}

impl super::Manager {
    /// A pool of `processes` worker processes in the manager's server (Python's
    /// `manager.Pool(processes)`), used through the returned proxy. The server runs the task
    /// functions this process names, so it must run the same executable: the server
    /// compares the SHA-256 of both executables and refuses another one with
    /// [`ManagerError::OtherExecutable`] (here, and on each submission through a proxy
    /// passed to another process). Zero processes is a remote `ValueError`.
    ///
    /// ```
    /// let m = mp_core::manager::Manager::start().unwrap();
    /// let pool = m.pool(2).unwrap();
    /// let err = pool.apply(|x: u32| if x > 1 { panic!("too big: {x}") } else { x }, 7);
    /// assert_eq!(err.unwrap_err().panic().unwrap().message, "too big: 7");
    /// ```
    pub fn pool(&self, processes: usize) -> Result<PoolProxy, ManagerError> {
        self.pool_with(Pool::builder().processes(processes))
    }

    /// Like [`pool`](Self::pool), with the settings of `builder` that a manager's pool
    /// takes: the number of processes, the initializer (whose argument may not hold
    /// shareable objects: their handles cannot pass through the manager's connection; a
    /// proxy is fine) and `max_tasks_per_child`. The workers start with the server's default
    /// start method; an MPI pool is refused.
    ///
    /// ```
    /// use mp_core::Pool;
    /// fn hello(who: String) { assert_eq!(who, "workers"); }
    /// let m = mp_core::manager::Manager::start().unwrap();
    /// let builder = Pool::builder().processes(1).initializer(hello, "workers".to_string());
    /// let pool = m.pool_with(builder).unwrap();
    /// assert_eq!(pool.apply(|x: i32| -x, 5).unwrap(), -5);
    /// ```
    pub fn pool_with(&self, builder: PoolBuilder) -> Result<PoolProxy, ManagerError> {
        let processes = builder.processes_asked();
        let spec = builder
            .remote_spec()
            .map_err(|e| ManagerError::Remote(RemoteError::new("ValueError", e.to_string())))?;
        let init = PoolInit {
            fingerprint: our_fingerprint()?,
            spec,
        };
        let core = self.create_plain("pool", &init).map_err(typed)?;
        Ok(PoolProxy::from_core(
            core,
            processes.unwrap_or_else(crate::cpu_count),
        ))
    }
}

/// The serialized form of a [`PoolProxy`].
#[derive(Serialize, Deserialize)]
struct PoolWire<C> {
    core: C,
    processes: usize,
}

impl Serialize for PoolProxy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        PoolWire {
            core: &self.remote.core,
            processes: self.processes,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for PoolProxy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = PoolWire::<ProxyCore>::deserialize(d)?;
        Ok(Self::from_core(w.core, w.processes))
    }
}

impl Clone for PoolProxy {
    /// Takes a new reference on the server; see the other proxies' `Clone`.
    fn clone(&self) -> Self {
        self.try_clone()
            .unwrap_or_else(|_| Self::from_core(self.remote.core.detached(), self.processes))
    }
}

impl std::fmt::Debug for PoolProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.remote.core.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nowhere;
    impl Sink for Nowhere {
        fn finish(&self, _: usize, _: usize, _: Outcome<'_>) {}
    }

    /// A frame as a client makes it: `[FRAME_TASKS][u32 record length][u32 count][...]`.
    fn frame(count: u32, body: &[u8]) -> Vec<u8> {
        let mut f = vec![1u8];
        f.extend_from_slice(&((4 + body.len()) as u32).to_le_bytes());
        f.extend_from_slice(&count.to_le_bytes());
        f.extend_from_slice(body);
        f
    }

    #[test]
    fn only_one_whole_chunk_record_is_queued() {
        let sink = || -> Arc<dyn Sink> { Arc::new(Nowhere) };
        assert!(foreign_chunk(frame(2, b"items"), 2, sink()).is_some());
        // The count the client claims must be the frame's.
        assert!(foreign_chunk(frame(2, b"items"), 3, sink()).is_none());
        assert!(foreign_chunk(frame(0, b""), 0, sink()).is_none());
        // A second record hidden after the first, a short frame, another frame kind.
        let mut two = frame(1, b"a");
        two.extend_from_slice(&frame(1, b"b")[1..]);
        assert!(foreign_chunk(two, 1, sink()).is_none());
        assert!(foreign_chunk(vec![1, 9, 0], 1, sink()).is_none());
        assert!(foreign_chunk(Vec::new(), 1, sink()).is_none());
        let mut other = frame(1, b"a");
        other[0] = 2;
        assert!(foreign_chunk(other, 1, sink()).is_none());
    }
}
