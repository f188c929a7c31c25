//! `concurrent.futures.ProcessPoolExecutor` over the pool engine: futures that can be
//! waited on, polled, cancelled, and awaited from async code (they implement
//! [`std::future::Future`]; no runtime is needed by this crate).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::core::Shared;
use super::entry::Plain;
use super::result::{MapSlot, Phase, Slot};
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
        let slot = super::submit_one::<Plain<F>, A, R>(&self.shared, arg, None)?;
        Ok(TaskFuture { slot })
    }

    /// Submits `f` over every item (one task each) and returns an iterator over the
    /// results in input order.
    pub fn map<F, A, R, I>(&self, f: F, iter: I) -> Result<ExecutorMap<R>, PoolError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.map_chunked(f, iter, 1)
    }

    /// Like [`map`](Self::map), `chunksize` items per task (zero is refused).
    pub fn map_chunked<F, A, R, I>(
        &self,
        f: F,
        iter: I,
        chunksize: usize,
    ) -> Result<ExecutorMap<R>, PoolError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = f;
        if chunksize == 0 {
            return Err(PoolError::InvalidArgument(
                "chunksize must be at least 1".into(),
            ));
        }
        self.shared.check_running()?;
        let items = super::collect_input(iter)?;
        let mut chunks = VecDeque::new();
        let mut items = items.into_iter().peekable();
        while items.peek().is_some() {
            let part: Vec<A> = items.by_ref().take(chunksize).collect();
            let slot = Slot::new(None);
            super::submit_map::<Plain<F>, A, R>(
                &self.shared,
                part,
                chunksize,
                MapSlot::Each(slot.clone()),
            )?;
            chunks.push_back(slot);
        }
        Ok(ExecutorMap {
            chunks,
            current: VecDeque::new(),
            deadline: None,
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
    /// Waits for the result and takes it.
    pub fn result(&self) -> Result<R, TaskError> {
        self.slot.wait(None);
        self.slot.take().unwrap_or(Err(TaskError::Taken))
    }

    /// Waits at most `timeout` ([`TaskError::Timeout`] if not done by then; zero just looks).
    pub fn result_timeout(&self, timeout: Duration) -> Result<R, TaskError> {
        if !self.slot.wait(Some(timeout)) {
            return Err(TaskError::Timeout);
        }
        self.slot.take().unwrap_or(Err(TaskError::Timeout))
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

    /// Runs `f` when the future is done (at once if it already is); on the dispatcher
    /// thread otherwise.
    pub fn add_done_callback(&self, f: impl FnOnce() + Send + 'static) {
        self.slot.add_done_hook(Box::new(f));
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

type ChunkSlot<R> = Arc<Slot<Vec<Result<R, TaskError>>>>;

/// The iterator of [`ProcessPoolExecutor::map`]: results in input order.
pub struct ExecutorMap<R> {
    chunks: VecDeque<ChunkSlot<R>>,
    current: VecDeque<Result<R, TaskError>>,
    deadline: Option<Instant>,
}

impl<R> ExecutorMap<R> {
    /// Gives up `timeout` from now: a result not ready by then is yielded as
    /// [`TaskError::Timeout`], and the iteration ends.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.deadline = Some(Instant::now() + timeout);
        self
    }
}

impl<R> Iterator for ExecutorMap<R> {
    type Item = Result<R, TaskError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(r) = self.current.pop_front() {
                return Some(r);
            }
            let slot = self.chunks.front()?;
            let timeout = self
                .deadline
                .map(|d| d.saturating_duration_since(Instant::now()));
            if !slot.wait(timeout) {
                self.chunks.clear();
                return Some(Err(TaskError::Timeout));
            }
            let slot = self.chunks.pop_front()?;
            match slot.take() {
                Some(Ok(items)) => self.current = items.into(),
                Some(Err(e)) => return Some(Err(e)),
                None => return Some(Err(TaskError::Taken)),
            }
        }
    }
}
