//! `concurrent.futures.ProcessPoolExecutor` over the pool engine: futures that can be
//! waited on, polled, cancelled, and awaited from async code (they implement
//! [`std::future::Future`]; no runtime is needed by this crate).

use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

use mp_ipc::deadline::Deadline;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::dispatcher::Shared;
use super::entry::Plain;
use super::result::{IMap, Phase, Slot};
use super::{OnWorkerDeath, PoolBuilder, PoolError, TaskError};
use crate::Context;

/// Settings of a [`ProcessPoolExecutor`]; made by [`ProcessPoolExecutor::builder`].
#[derive(Debug, Default)]
pub struct ExecutorBuilder {
    pub(super) inner: PoolBuilder,
}

impl ExecutorBuilder {
    /// The most workers to run (default [`cpu_count`](crate::cpu_count)); they start when
    /// there is work for them. Zero is refused.
    pub fn max_workers(mut self, n: usize) -> Self {
        self.inner = self.inner.processes(n);
        self
    }

    /// Each worker exits after this many tasks and is replaced.
    pub fn max_tasks_per_child(mut self, n: usize) -> Self {
        self.inner = self.inner.max_tasks_per_child(n);
        self
    }

    /// The start method's context.
    pub fn context(mut self, context: Context) -> Self {
        self.inner = self.inner.context(context);
        self
    }

    /// A function run once in each worker before its first task. If it panics, the
    /// executor is broken (Python's `BrokenProcessPool`).
    pub fn initializer<F, A>(mut self, f: F, arg: A) -> Self
    where
        F: Fn(A) + Copy + Send + 'static,
        A: Serialize + DeserializeOwned + 'static,
    {
        self.inner = self.inner.initializer(f, arg);
        self
    }

    /// What a worker dying mid-task does (default: fail only that task).
    pub fn on_worker_death(mut self, policy: OnWorkerDeath) -> Self {
        self.inner = self.inner.on_worker_death(policy);
        self
    }

    /// Makes the executor; no worker starts before the first task.
    pub fn build(self) -> Result<ProcessPoolExecutor, PoolError> {
        let (shared, thread, max_workers) =
            super::launch::start_pool(self.inner, true, "Executor")?;
        Ok(ProcessPoolExecutor {
            shared,
            thread: Mutex::new(Some(thread)),
            max_workers,
        })
    }
}

/// Python's `concurrent.futures.ProcessPoolExecutor`.
///
/// Dropping the executor waits for the submitted work, like `shutdown(wait=True)`.
///
/// ```
/// use mp_core::pool::ProcessPoolExecutor;
///
/// let ex = ProcessPoolExecutor::new(2).unwrap();
/// let f = ex.submit(|(b, e): (u64, u32)| b.pow(e), (2, 8)).unwrap();
/// assert_eq!(f.result().unwrap(), 256);
/// let squares: Vec<u64> = ex.map(|x: u64| x * x, 0..5).unwrap().map(Result::unwrap).collect();
/// assert_eq!(squares, [0, 1, 4, 9, 16]);
/// ex.shutdown(true, false);
/// ```
pub struct ProcessPoolExecutor {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    max_workers: usize,
}

impl std::fmt::Debug for ProcessPoolExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessPoolExecutor")
            .field("max_workers", &self.max_workers)
            .finish()
    }
}

impl ProcessPoolExecutor {
    /// An executor of at most `max_workers` workers (zero is refused).
    pub fn new(max_workers: usize) -> Result<Self, PoolError> {
        Self::builder().max_workers(max_workers).build()
    }

    /// An executor with settings.
    pub fn builder() -> ExecutorBuilder {
        ExecutorBuilder::default()
    }

    /// The pids of the workers alive now.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.shared.lock().pids.clone()
    }

    /// How many worker processes were started so far (replacements included).
    pub fn workers_started(&self) -> usize {
        self.shared.lock().started_total
    }

    /// Schedules `f(arg)`. After [`shutdown`](Self::shutdown) this is refused (Python:
    /// `RuntimeError`).
    pub fn submit<F, A, R>(&self, f: F, arg: A) -> Result<TaskFuture<R>, PoolError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = f;
        let slot = super::submit_one::<Plain<F>, A, R>(&*self.shared, arg, None)?;
        Ok(TaskFuture { slot })
    }

    /// Submits `f` over every item (one task each) and returns an iterator over the
    /// results in input order. As Python's `map` without `buffersize`, the whole input is
    /// read and submitted now (a panic of the input iterator is the iteration's last item);
    /// [`map_with`](Self::map_with) with [`MapOptions::buffersize`] reads it lazily.
    pub fn map<'a, F, A, R, I>(&self, f: F, iter: I) -> Result<ExecutorMap<'a, R>, PoolError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'a,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.map_with(f, iter, MapOptions::new())
    }

    /// Like [`map`](Self::map), `chunksize` items per task (zero is refused).
    pub fn map_chunked<'a, F, A, R, I>(
        &self,
        f: F,
        iter: I,
        chunksize: usize,
    ) -> Result<ExecutorMap<'a, R>, PoolError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'a,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let chunksize = NonZeroUsize::new(chunksize)
            .ok_or_else(|| PoolError::InvalidArgument("chunksize must be at least 1".into()))?;
        self.map_with(f, iter, MapOptions::new().chunksize(chunksize))
    }

    /// Python 3.14's `map(fn, iterable, timeout, chunksize, buffersize)`: with a
    /// `buffersize`, the input is read lazily and at most that many tasks (chunks) are
    /// submitted ahead of the results consumed, so an endless iterator works.
    ///
    /// ```
    /// use std::num::NonZeroUsize;
    /// use mp_core::pool::{MapOptions, ProcessPoolExecutor};
    /// let ex = ProcessPoolExecutor::new(2).unwrap();
    /// let opts = MapOptions::new().buffersize(NonZeroUsize::new(4).unwrap());
    /// let first: Vec<u64> = ex
    ///     .map_with(|x: u64| x * 3, 0.., opts) // endless input
    ///     .unwrap()
    ///     .take(5)
    ///     .map(Result::unwrap)
    ///     .collect();
    /// assert_eq!(first, [0, 3, 6, 9, 12]);
    /// ```
    pub fn map_with<'a, F, A, R, I>(
        &self,
        f: F,
        iter: I,
        options: MapOptions,
    ) -> Result<ExecutorMap<'a, R>, PoolError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'a,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = f;
        self.shared.check_running()?;
        let deadline = options.timeout.map(Deadline::after);
        let chunksize = options.chunksize.map_or(1, NonZeroUsize::get);
        let bound = options.buffersize.map_or(usize::MAX, NonZeroUsize::get);
        let queue: Arc<dyn super::dispatcher::ChunkQueue> = self.shared.clone();
        let mut inner = super::imap_job::<Plain<F>, A, R, I>(&queue, iter, true, chunksize, bound);
        if options.buffersize.is_none() {
            // Python's eager map: everything is submitted before `map` returns.
            inner.fill();
        }
        Ok(ExecutorMap {
            inner,
            deadline,
            ended: false,
        })
    }

    /// Stops accepting work. With `cancel_futures`, queued tasks that have not started are
    /// cancelled. With `wait`, returns once every started task is done and the workers
    /// have exited; otherwise at once (the work still completes).
    pub fn shutdown(&self, wait: bool, cancel_futures: bool) {
        self.shared.close();
        if cancel_futures {
            for c in self.shared.take_pending() {
                c.sink.cancel(c.index, c.len);
            }
        }
        if wait {
            self.shared.wait_stopped(None);
            if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
                let _ = t.join();
            }
        }
    }

    /// Terminates every worker now (SIGTERM); outstanding futures fail with
    /// [`TaskError::Terminated`] and `submit` is refused afterwards.
    pub fn terminate_workers(&self) {
        self.shared.terminate();
        self.shared.wait_stopped(Some(Duration::from_secs(15)));
    }

    /// Like [`terminate_workers`](Self::terminate_workers) with `SIGKILL`, which a worker
    /// cannot catch or ignore (Python 3.14's `kill_workers`; on Windows both end the
    /// process at once).
    ///
    /// ```
    /// use mp_core::pool::TaskError;
    /// let ex = mp_core::pool::ProcessPoolExecutor::new(1).unwrap();
    /// let f = ex.submit(|ms: u64| std::thread::sleep(std::time::Duration::from_millis(ms)), 60_000).unwrap();
    /// ex.kill_workers();
    /// assert_eq!(f.result(), Err(TaskError::Terminated));
    /// assert!(ex.submit(|x: u8| x, 1).is_err());
    /// ```
    pub fn kill_workers(&self) {
        self.shared.stop_now(true);
        self.shared.wait_stopped(Some(Duration::from_secs(15)));
    }
}

impl Drop for ProcessPoolExecutor {
    fn drop(&mut self) {
        self.shutdown(true, false);
    }
}

/// The result of [`ProcessPoolExecutor::submit`]: Python's `Future`. Wait with
/// [`result`](Self::result), or `.await` it from any async runtime.
///
/// ```
/// use std::future::Future;
/// use std::pin::pin;
/// use std::sync::Arc;
/// use std::task::{Context, Poll, Wake, Waker};
///
/// struct Unpark(std::thread::Thread);
/// impl Wake for Unpark {
///     fn wake(self: Arc<Self>) { self.0.unpark() }
/// }
///
/// let ex = mp_core::pool::ProcessPoolExecutor::new(1).unwrap();
/// let mut fut = pin!(ex.submit(|x: u32| x + 1, 41).unwrap());
/// let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
/// let value = loop {
///     match fut.as_mut().poll(&mut Context::from_waker(&waker)) {
///         Poll::Ready(v) => break v,
///         Poll::Pending => std::thread::park(),
///     }
/// };
/// assert_eq!(value.unwrap(), 42);
/// ```
pub struct TaskFuture<R> {
    pub(super) slot: Arc<Slot<R>>,
}

impl<R> std::fmt::Debug for TaskFuture<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskFuture")
            .field("done", &self.done())
            .finish()
    }
}

impl<R> TaskFuture<R> {
    /// Waits for the result and returns a copy of it (Python's `result()`; again and
    /// again: it needs `R: Clone`, see [`into_result`](Self::into_result) otherwise).
    pub fn result(&self) -> Result<R, TaskError>
    where
        R: Clone,
    {
        self.slot.wait(None);
        self.slot.cloned().unwrap_or(Err(TaskError::Taken))
    }

    /// Waits at most `timeout` ([`TaskError::Timeout`] if not done by then; zero just looks).
    pub fn result_timeout(&self, timeout: Duration) -> Result<R, TaskError>
    where
        R: Clone,
    {
        if !self.slot.wait(Some(timeout)) {
            return Err(TaskError::Timeout);
        }
        self.slot.cloned().unwrap_or(Err(TaskError::Timeout))
    }

    /// Waits for the result and moves it out (no `Clone` needed; the future is consumed).
    ///
    /// ```
    /// let ex = mp_core::pool::ProcessPoolExecutor::new(1).unwrap();
    /// let f = ex.submit(|n: usize| vec![0u8; n], 3).unwrap();
    /// assert_eq!(f.into_result().unwrap().len(), 3);
    /// ```
    pub fn into_result(self) -> Result<R, TaskError> {
        self.slot.wait(None);
        self.slot.take().unwrap_or(Err(TaskError::Taken))
    }

    /// Waits until done and returns the task's error, `None` if it succeeded (Python's
    /// `exception()`; a cancelled future gives `Some(TaskError::Cancelled)` where Python
    /// raises `CancelledError`).
    ///
    /// ```
    /// let ex = mp_core::pool::ProcessPoolExecutor::new(1).unwrap();
    /// assert!(ex.submit(|x: u8| x, 1).unwrap().exception().is_none());
    /// let bad = ex.submit(|_: ()| -> u8 { panic!("no") }, ()).unwrap();
    /// assert!(bad.exception().unwrap().panic().is_some());
    /// ```
    pub fn exception(&self) -> Option<TaskError> {
        self.slot.wait(None);
        self.slot.error().flatten()
    }

    /// Like [`exception`](Self::exception), waiting at most `timeout`:
    /// `Err(TaskError::Timeout)` if not done by then.
    pub fn exception_timeout(&self, timeout: Duration) -> Result<Option<TaskError>, TaskError> {
        if !self.slot.wait(Some(timeout)) {
            return Err(TaskError::Timeout);
        }
        Ok(self.slot.error().flatten())
    }

    /// Waits at most `timeout` for completion; returns whether it is done.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.slot.wait(Some(timeout))
    }

    /// Done: finished, failed or cancelled.
    pub fn done(&self) -> bool {
        self.slot.lock().success.is_some()
    }

    /// Sent to a worker and not done yet.
    pub fn running(&self) -> bool {
        self.slot.lock().phase == Phase::Running
    }

    /// Cancelled before it ran.
    pub fn cancelled(&self) -> bool {
        self.slot.lock().phase == Phase::Cancelled
    }

    /// Cancels the task if it has not been sent to a worker; returns whether it is
    /// cancelled (true again for an already cancelled one, false once running or done).
    pub fn cancel(&self) -> bool {
        self.slot.cancel()
    }

    /// Runs `f` with the future when it is done (at once, on this thread, if it already is;
    /// on the dispatcher thread otherwise), as Python's `add_done_callback(fn)` calls
    /// `fn(future)`. Keep it short and do not wait on the executor from it.
    ///
    /// ```
    /// let ex = mp_core::pool::ProcessPoolExecutor::new(1).unwrap();
    /// let f = ex.submit(|x: u32| x * 2, 21).unwrap();
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// f.add_done_callback(move |done| tx.send(done.result()).unwrap());
    /// assert_eq!(rx.recv().unwrap().unwrap(), 42);
    /// ```
    pub fn add_done_callback(&self, f: impl FnOnce(&TaskFuture<R>) + Send + 'static)
    where
        R: Send + 'static,
    {
        let slot = self.slot.clone();
        self.slot
            .add_done_hook(Box::new(move || f(&TaskFuture { slot })));
    }
}

impl<R> std::future::Future for TaskFuture<R> {
    type Output = Result<R, TaskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let mut s = self.slot.lock();
        if s.success.is_some() {
            drop(s);
            return Poll::Ready(self.slot.take().unwrap_or(Err(TaskError::Taken)));
        }
        s.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// The settings of [`ProcessPoolExecutor::map_with`]: Python's `chunksize`, `buffersize`
/// and `timeout` arguments of `Executor.map`.
///
/// ```
/// use std::num::NonZeroUsize;
/// let opts = mp_core::pool::MapOptions::new()
///     .chunksize(NonZeroUsize::new(8).unwrap())
///     .buffersize(NonZeroUsize::new(2).unwrap())
///     .timeout(std::time::Duration::from_secs(60));
/// # drop(opts);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct MapOptions {
    chunksize: Option<NonZeroUsize>,
    buffersize: Option<NonZeroUsize>,
    timeout: Option<Duration>,
}

impl MapOptions {
    /// One item per task, the whole input submitted at once, no timeout.
    pub fn new() -> Self {
        Self::default()
    }

    /// Items per task (Python's `chunksize`).
    pub fn chunksize(mut self, n: NonZeroUsize) -> Self {
        self.chunksize = Some(n);
        self
    }

    /// Read the input lazily, with at most `n` tasks submitted and not yet yielded
    /// (Python 3.14's `buffersize`).
    pub fn buffersize(mut self, n: NonZeroUsize) -> Self {
        self.buffersize = Some(n);
        self
    }

    /// Give up `timeout` after `map_with` is called: a result not ready by then is yielded
    /// as [`TaskError::Timeout`] and the iteration ends (Python's `timeout`).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// The iterator of [`ProcessPoolExecutor::map`]: results in input order.
pub struct ExecutorMap<'a, R> {
    inner: IMap<'a, R>,
    deadline: Option<Deadline>,
    ended: bool,
}

impl<R> ExecutorMap<'_, R> {
    /// Gives up `timeout` from now: a result not ready by then is yielded as
    /// [`TaskError::Timeout`], and the iteration ends.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.deadline = Some(Deadline::after(timeout));
        self
    }
}

impl<R: DeserializeOwned + Send + 'static> Iterator for ExecutorMap<'_, R> {
    type Item = Result<R, TaskError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.ended {
            return None;
        }
        let next = self
            .inner
            .next_timeout(self.deadline.and_then(Deadline::instant));
        if matches!(next, Some(Err(TaskError::Timeout)) | None) {
            self.ended = true;
        }
        next
    }
}

impl<R> std::fmt::Debug for ExecutorMap<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecutorMap")
            .field("ended", &self.ended)
            .finish()
    }
}
