//! [`Pool`] of worker threads: Python's `multiprocessing.dummy.Pool`
//! (`multiprocessing.pool.ThreadPool`), with the method names and result types of
//! [`crate::pool`].

use std::collections::BTreeMap;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use super::caught::{self, Report};
use crate::pool::{panic_message, PoolError, StarFn, TaskError};

/// A queued task: called with `true` to run it, `false` to fail it as terminated.
type Job = Box<dyn FnOnce(bool) + Send>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Running,
    Closed,
    Terminated,
}

struct Shared {
    /// `None` once closed or terminated: no new work.
    jobs: Mutex<(Status, Option<Sender<Job>>)>,
    queue: Receiver<Job>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, (Status, Option<Sender<Job>>)> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn submit(&self, job: Job) -> Result<(), PoolError> {
        let g = self.lock();
        match (&g.0, &g.1) {
            (Status::Running, Some(tx)) => {
                // The pool holds the receiver, so this cannot fail.
                let _ = tx.send(job);
                Ok(())
            }
            (Status::Terminated, _) => Err(PoolError::Terminated),
            _ => Err(PoolError::Closed),
        }
    }

    fn terminated(&self) -> bool {
        self.lock().0 == Status::Terminated
    }

    fn terminate(&self) {
        let mut g = self.lock();
        g.0 = Status::Terminated;
        g.1 = None;
        drop(g);
        while let Ok(job) = self.queue.try_recv() {
            job(false);
        }
    }
}

/// A result (until taken) and whether it succeeded (once known).
type SlotState<T> = (Option<Result<T, TaskError>>, Option<bool>);

/// One result to come.
struct Slot<T> {
    value: Mutex<SlotState<T>>,
    cv: Condvar,
}

impl<T> Slot<T> {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            value: Mutex::new((None, None)),
            cv: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, SlotState<T>> {
        self.value.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the outcome once; later calls are ignored.
    fn complete(&self, r: Result<T, TaskError>) {
        let mut g = self.lock();
        if g.1.is_none() {
            g.1 = Some(r.is_ok());
            g.0 = Some(r);
            drop(g);
            self.cv.notify_all();
        }
    }

    fn wait(&self, timeout: Option<Duration>) -> bool {
        let g = self.lock();
        match timeout {
            None => {
                let _g = self
                    .cv
                    .wait_while(g, |v| v.1.is_none())
                    .unwrap_or_else(|e| e.into_inner());
                true
            }
            Some(t) => self
                .cv
                .wait_timeout_while(g, t, |v| v.1.is_none())
                .unwrap_or_else(|e| e.into_inner())
                .0
                 .1
                .is_some(),
        }
    }
}

/// The result of `apply_async`, `map_async`, `starmap_async`: Python's `AsyncResult`, with
/// the methods of [`crate::AsyncResult`]: [`get`](Self::get) as often as asked (a copy),
/// [`into_result`](Self::into_result) to move the value out.
///
/// ```
/// let pool = mp_core::dummy::Pool::new(2).unwrap();
/// let r = pool.apply_async(|x: u64| x * 2, 21).unwrap();
/// r.wait();
/// assert!(r.ready());
/// assert_eq!(r.successful(), Some(true));
/// assert_eq!(r.get().unwrap(), 42);
/// assert_eq!(r.get().unwrap(), 42);
/// assert_eq!(r.into_result().unwrap(), 42);
/// ```
pub struct AsyncResult<T> {
    slot: Arc<Slot<T>>,
}

impl<T> AsyncResult<T> {
    /// Waits for the result and returns a copy of it.
    pub fn get(&self) -> Result<T, TaskError>
    where
        T: Clone,
    {
        self.slot.wait(None);
        self.slot.lock().0.clone().unwrap_or(Err(TaskError::Taken))
    }

    /// Waits at most `timeout`; [`TaskError::Timeout`] if the result is not ready by then.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, TaskError>
    where
        T: Clone,
    {
        if !self.slot.wait(Some(timeout)) {
            return Err(TaskError::Timeout);
        }
        self.slot.lock().0.clone().unwrap_or(Err(TaskError::Taken))
    }

    /// Waits for the result and moves it out.
    pub fn into_result(self) -> Result<T, TaskError> {
        self.slot.wait(None);
        self.slot.lock().0.take().unwrap_or(Err(TaskError::Taken))
    }

    /// Waits until the result is ready.
    pub fn wait(&self) {
        self.slot.wait(None);
    }

    /// Waits at most `timeout`; returns whether the result is ready.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.slot.wait(Some(timeout))
    }

    /// Whether the result is ready.
    pub fn ready(&self) -> bool {
        self.slot.lock().1.is_some()
    }

    /// Whether the call succeeded; `None` while it is not ready.
    pub fn successful(&self) -> Option<bool> {
        self.slot.lock().1
    }
}

impl<T> std::fmt::Debug for AsyncResult<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncResult")
            .field("ready", &self.ready())
            .finish()
    }
}

/// Runs `f(arg)` as a task: its panic becomes [`TaskError::Panicked`]; after a terminate,
/// its result is discarded.
fn run_task<A, R>(shared: &Shared, f: impl FnOnce(A) -> R, arg: A) -> Result<R, TaskError> {
    let r = caught::run(Report::Quiet, || f(arg)).map_err(TaskError::Panicked);
    if shared.terminated() {
        return Err(TaskError::Terminated);
    }
    r
}

/// Reads the whole input, turning a panic of the iterator into an error.
fn collect_input<I: IntoIterator>(iter: I) -> Result<Vec<I::Item>, PoolError> {
    panic::catch_unwind(AssertUnwindSafe(|| iter.into_iter().collect()))
        .map_err(|p| PoolError::Input(panic_message(&*p)))
}

/// The results of one `map` as they arrive; `finish` gets them all, in order.
struct Parts<R, D> {
    results: Vec<Option<Result<R, TaskError>>>,
    remaining: usize,
    finish: Option<D>,
}

/// Records item `i`'s outcome (once); the last one calls `finish`.
fn complete<R, D: FnOnce(Vec<Result<R, TaskError>>)>(
    parts: &Mutex<Parts<R, D>>,
    i: usize,
    r: Result<R, TaskError>,
) {
    let mut p = parts.lock().unwrap_or_else(|e| e.into_inner());
    if p.results[i].is_some() {
        return;
    }
    p.results[i] = Some(r);
    p.remaining -= 1;
    if p.remaining == 0 {
        let results = p.results.iter_mut().filter_map(Option::take).collect();
        let finish = p.finish.take();
        drop(p);
        if let Some(finish) = finish {
            finish(results);
        }
    }
}

/// Numbers pools, for their threads' names.
static POOLS: AtomicUsize = AtomicUsize::new(0);

/// A pool of worker threads: Python's `multiprocessing.dummy.Pool`, with the methods of
/// [`crate::Pool`] (`apply`, `apply_async`, `map`, `map_results`, `map_async`, `starmap`,
/// `starmap_async`, `imap`, `imap_unordered`, `close`, `terminate`, `join`).
///
/// Differences from the process pool: functions may be any `Clone` closure (they are
/// cloned per task) and arguments and results any `Send` type, nothing is serialized; one
/// item is one task (there is no chunk size); and [`terminate`](Self::terminate) cannot stop
/// a running task: queued tasks fail at once with [`TaskError::Terminated`], running ones
/// finish on their thread and their results are discarded as `Terminated`. Dropping the
/// pool terminates it without waiting for the threads.
///
/// ```
/// use mp_core::dummy::Pool;
///
/// fn cube(x: i64) -> i64 { x * x * x }
///
/// let pool = Pool::new(2).unwrap();
/// assert_eq!(pool.apply(cube, 3).unwrap(), 27);
/// let pending = pool.map_async(cube, vec![1, 2, 3]).unwrap();
/// assert_eq!(pending.get().unwrap(), [1, 8, 27]);
/// let lazy: Vec<i64> = pool.imap(cube, 1..=4).unwrap().map(Result::unwrap).collect();
/// assert_eq!(lazy, [1, 8, 27, 64]);
/// assert_eq!(pool.starmap(|a: i64, b: i64| a * b, [(2, 3), (4, 5)]).unwrap(), [6, 20]);
/// let offset = 10; // closures may capture
/// assert_eq!(pool.map(move |x: i64| x + offset, [1, 2]).unwrap(), [11, 12]);
/// pool.close();
/// pool.join().unwrap();
/// ```
pub struct Pool {
    shared: Arc<Shared>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    processes: usize,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("processes", &self.processes)
            .field("status", &self.shared.lock().0)
            .finish()
    }
}

impl Pool {
    /// A pool of `processes` worker threads (zero is [`PoolError::InvalidArgument`]).
    pub fn new(processes: usize) -> Result<Self, PoolError> {
        if processes == 0 {
            return Err(PoolError::InvalidArgument(
                "the number of processes must be at least 1".into(),
            ));
        }
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let shared = Arc::new(Shared {
            jobs: Mutex::new((Status::Running, Some(tx))),
            queue: rx,
        });
        let pool_no = POOLS.fetch_add(1, Ordering::Relaxed);
        let mut workers = Vec::with_capacity(processes);
        for n in 0..processes {
            let shared2 = shared.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("ThreadPool-{pool_no}-worker-{n}"))
                .spawn(move || {
                    while let Ok(job) = shared2.queue.recv() {
                        let run = !shared2.terminated();
                        job(run);
                    }
                });
            match spawned {
                Ok(h) => workers.push(h),
                Err(e) => {
                    shared.terminate();
                    return Err(PoolError::Start(crate::ProcessError::Io(e)));
                }
            }
        }
        Ok(Self {
            shared,
            workers: Mutex::new(workers),
            processes,
        })
    }

    /// A pool with one worker per CPU ([`cpu_count`](crate::cpu_count)).
    pub fn with_cpu_count() -> Result<Self, PoolError> {
        Self::new(crate::cpu_count())
    }

    /// The number of worker threads.
    pub fn processes(&self) -> usize {
        self.processes
    }

    /// Queues `f(arg)`, its result going to `slot`.
    fn submit<A, R>(
        &self,
        f: impl FnOnce(A) -> R + Send + 'static,
        arg: A,
        done: impl FnOnce(Result<R, TaskError>) + Send + 'static,
    ) -> Result<(), PoolError>
    where
        A: Send + 'static,
    {
        let shared = Arc::downgrade(&self.shared);
        self.shared.submit(Box::new(move |run| {
            let shared = shared.upgrade();
            match (run, shared) {
                (true, Some(s)) => done(run_task(&s, f, arg)),
                _ => done(Err(TaskError::Terminated)),
            }
        }))
    }

    /// Runs `f(arg)` on a worker and waits for the result.
    pub fn apply<F, A, R>(&self, f: F, arg: A) -> Result<R, TaskError>
    where
        F: FnOnce(A) -> R + Send + 'static,
        A: Send + 'static,
        R: Send + 'static,
    {
        self.apply_async(f, arg)?.into_result()
    }

    /// Starts `f(arg)` on a worker.
    pub fn apply_async<F, A, R>(&self, f: F, arg: A) -> Result<AsyncResult<R>, PoolError>
    where
        F: FnOnce(A) -> R + Send + 'static,
        A: Send + 'static,
        R: Send + 'static,
    {
        let slot = Slot::new();
        let s2 = slot.clone();
        self.submit(f, arg, move |r| s2.complete(r))?;
        Ok(AsyncResult { slot })
    }

    /// Starts `f` over every item; calls `finish` with every item's outcome, in order.
    fn map_with<F, A, R, I>(
        &self,
        f: F,
        iter: I,
        finish: impl FnOnce(Vec<Result<R, TaskError>>) + Send + 'static,
    ) -> Result<(), PoolError>
    where
        F: Fn(A) -> R + Clone + Send + 'static,
        I: IntoIterator<Item = A>,
        A: Send + 'static,
        R: Send + 'static,
    {
        let items = collect_input(iter)?;
        let n = items.len();
        let parts = Arc::new(Mutex::new(Parts {
            results: (0..n).map(|_| None).collect(),
            remaining: n,
            finish: Some(finish),
        }));
        if n == 0 {
            let finish = parts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .finish
                .take();
            if let Some(finish) = finish {
                finish(Vec::new());
            }
            return Ok(());
        }
        for (i, item) in items.into_iter().enumerate() {
            let parts2 = parts.clone();
            if let Err(e) = self.submit(f.clone(), item, move |r| complete(&parts2, i, r)) {
                // Fail what was not submitted, so the result resolves.
                let err = TaskError::from(e);
                for j in i..n {
                    complete(&parts, j, Err(err.clone()));
                }
                return Ok(());
            }
        }
        Ok(())
    }

    /// `f` over every item, results in input order; the first failure (in input order) is
    /// the error, after every task has finished.
    pub fn map<F, A, R, I>(&self, f: F, iter: I) -> Result<Vec<R>, TaskError>
    where
        F: Fn(A) -> R + Clone + Send + 'static,
        I: IntoIterator<Item = A>,
        A: Send + 'static,
        R: Send + 'static,
    {
        self.map_async(f, iter)?.into_result()
    }

    /// `f` over every item; each item's own outcome, in input order.
    pub fn map_results<F, A, R, I>(
        &self,
        f: F,
        iter: I,
    ) -> Result<Vec<Result<R, TaskError>>, PoolError>
    where
        F: Fn(A) -> R + Clone + Send + 'static,
        I: IntoIterator<Item = A>,
        A: Send + 'static,
        R: Send + 'static,
    {
        let slot = Slot::new();
        let s2 = slot.clone();
        self.map_with(f, iter, move |all| s2.complete(Ok(all)))?;
        AsyncResult { slot }
            .into_result()
            .map_err(|e| PoolError::Broken(e.to_string()))
    }

    /// Starts `f` over every item (the input is read now).
    pub fn map_async<F, A, R, I>(&self, f: F, iter: I) -> Result<AsyncResult<Vec<R>>, PoolError>
    where
        F: Fn(A) -> R + Clone + Send + 'static,
        I: IntoIterator<Item = A>,
        A: Send + 'static,
        R: Send + 'static,
    {
        let slot = Slot::new();
        let s2 = slot.clone();
        self.map_with(f, iter, move |all| {
            s2.complete(all.into_iter().collect::<Result<Vec<R>, TaskError>>())
        })?;
        Ok(AsyncResult { slot })
    }

    /// `f(a, b, ...)` for every tuple `(a, b, ...)`, results in input order.
    pub fn starmap<F, Args, R, I>(&self, f: F, iter: I) -> Result<Vec<R>, TaskError>
    where
        F: StarFn<Args, R>,
        I: IntoIterator<Item = Args>,
        Args: Send + 'static,
        R: Send + 'static,
    {
        self.starmap_async(f, iter)?.into_result()
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
        Args: Send + 'static,
        R: Send + 'static,
    {
        self.map_async(move |args: Args| f.call_star(args), iter)
    }

    /// Lazily maps `f` over `iter`, yielding results in input order; at most two tasks per
    /// worker are in flight, so an endless input works.
    pub fn imap<'a, F, A, R, I>(&self, f: F, iter: I) -> Result<IMap<'a, R>, PoolError>
    where
        F: Fn(A) -> R + Clone + Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'a,
        A: Send + 'static,
        R: Send + 'static,
    {
        self.imap_with(f, iter, true)
    }

    /// Like [`imap`](Self::imap), yielding results as they complete.
    pub fn imap_unordered<'a, F, A, R, I>(&self, f: F, iter: I) -> Result<IMap<'a, R>, PoolError>
    where
        F: Fn(A) -> R + Clone + Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'a,
        A: Send + 'static,
        R: Send + 'static,
    {
        self.imap_with(f, iter, false)
    }

    fn imap_with<'a, F, A, R, I>(
        &self,
        f: F,
        iter: I,
        ordered: bool,
    ) -> Result<IMap<'a, R>, PoolError>
    where
        F: Fn(A) -> R + Clone + Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'a,
        A: Send + 'static,
        R: Send + 'static,
    {
        match self.shared.lock().0 {
            Status::Running => {}
            Status::Closed => return Err(PoolError::Closed),
            Status::Terminated => return Err(PoolError::Terminated),
        }
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut input = iter.into_iter();
        let shared = self.shared.clone();
        let mut index = 0;
        let next = move || -> Option<Result<(), TaskError>> {
            let item = match panic::catch_unwind(AssertUnwindSafe(|| input.next())) {
                Ok(Some(item)) => item,
                Ok(None) => return None,
                Err(p) => return Some(Err(TaskError::Input(panic_message(&*p)))),
            };
            let i = index;
            index += 1;
            let tx = tx.clone();
            let f = f.clone();
            let weak = Arc::downgrade(&shared);
            let job: Job = Box::new(move |run| {
                let r = match (run, weak.upgrade()) {
                    (true, Some(s)) => run_task(&s, f, item),
                    _ => Err(TaskError::Terminated),
                };
                let _ = tx.send((i, r));
            });
            Some(shared.submit(job).map_err(TaskError::from))
        };
        Ok(IMap {
            next: Box::new(next),
            results: rx,
            ordered,
            buffered: BTreeMap::new(),
            submitted: 0,
            yielded: 0,
            input_done: false,
            input_error: None,
            max_in_flight: 2 * self.processes,
        })
    }

    /// No new work; the workers end once the queued work is done.
    pub fn close(&self) {
        let mut g = self.shared.lock();
        if g.0 == Status::Running {
            g.0 = Status::Closed;
        }
        g.1 = None;
    }

    /// No new work; queued tasks fail with [`TaskError::Terminated`] now; running tasks
    /// cannot be stopped and finish on their threads, their results discarded.
    pub fn terminate(&self) {
        self.shared.terminate();
    }

    /// Waits for the workers to end, after [`close`](Self::close) or
    /// [`terminate`](Self::terminate); [`PoolError::StillRunning`] otherwise.
    pub fn join(&self) -> Result<(), PoolError> {
        if self.shared.lock().0 == Status::Running {
            return Err(PoolError::StillRunning);
        }
        let workers = std::mem::take(&mut *self.workers.lock().unwrap_or_else(|e| e.into_inner()));
        let me = std::thread::current().id();
        for w in workers {
            if w.thread().id() != me {
                let _ = w.join();
            }
        }
        Ok(())
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.terminate();
    }
}

/// The lazy iterator of [`Pool::imap`] and [`Pool::imap_unordered`], as [`crate::pool::IMap`]:
/// one `Result` per item; a failure to read the input is yielded after the results before
/// it, and ends the iteration.
pub struct IMap<'a, R> {
    next: Box<dyn FnMut() -> Option<Result<(), TaskError>> + 'a>,
    results: Receiver<(usize, Result<R, TaskError>)>,
    ordered: bool,
    buffered: BTreeMap<usize, Result<R, TaskError>>,
    submitted: usize,
    yielded: usize,
    input_done: bool,
    input_error: Option<TaskError>,
    max_in_flight: usize,
}

impl<R> Iterator for IMap<'_, R> {
    type Item = Result<R, TaskError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            while !self.input_done && self.submitted - self.yielded < self.max_in_flight {
                match (self.next)() {
                    None => self.input_done = true,
                    Some(Ok(())) => self.submitted += 1,
                    Some(Err(e)) => {
                        self.input_done = true;
                        self.input_error = Some(e);
                    }
                }
            }
            let ready = if self.ordered {
                self.buffered.remove(&self.yielded)
            } else {
                self.buffered.pop_first().map(|(_, r)| r)
            };
            if let Some(r) = ready {
                self.yielded += 1;
                return Some(r);
            }
            if self.yielded == self.submitted {
                return self.input_error.take().map(Err);
            }
            // Every submitted task sends exactly once (run or terminated), and this
            // iterator's closure keeps a sender alive, so this cannot disconnect.
            let (i, r) = self.results.recv().ok()?;
            self.buffered.insert(i, r);
        }
    }
}

impl<R> std::fmt::Debug for IMap<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IMap")
            .field("ordered", &self.ordered)
            .field("submitted", &self.submitted)
            .field("yielded", &self.yielded)
            .finish()
    }
}
