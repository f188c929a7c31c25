//! `concurrent.futures.wait` and `concurrent.futures.as_completed` over [`TaskFuture`]s.
//!
//! Both look at the futures without taking their values: call
//! [`TaskFuture::result`] afterwards. A future listed twice counts once. Differences from
//! Python: the futures are borrowed, so the answer is made of references in the order the
//! futures were given (Python returns sets); `as_completed` yields `Err(WaitTimeout)` once
//! instead of raising `TimeoutError`.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::executor::TaskFuture;
use super::result::Phase;

/// When [`wait`] returns: Python's `FIRST_COMPLETED`, `FIRST_EXCEPTION`, `ALL_COMPLETED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnWhen {
    /// As soon as one future is done (finished, failed or cancelled).
    FirstCompleted,
    /// As soon as one future fails; like `AllCompleted` if none does.
    FirstException,
    /// When every future is done.
    AllCompleted,
}

/// The answer of [`wait`]: Python's `DoneAndNotDoneFutures`, each list in input order.
#[derive(Debug)]
pub struct DoneAndNotDone<'a, R> {
    /// Futures that were done when `wait` returned.
    pub done: Vec<&'a TaskFuture<R>>,
    /// The others.
    pub not_done: Vec<&'a TaskFuture<R>>,
}

/// [`as_completed`] ran out of time: Python's `TimeoutError`, with the count it reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{unfinished} (of {total}) futures unfinished")]
pub struct WaitTimeout {
    /// Futures not done when the time ran out.
    pub unfinished: usize,
    /// Distinct futures given.
    pub total: usize,
}

/// Tells a waiter which futures completed, in completion order.
#[derive(Default)]
struct Notifier {
    completed: Mutex<VecDeque<usize>>,
    cv: Condvar,
}

impl Notifier {
    /// Asks `fs[i]` to report here when done (at once if it already is).
    fn watch<R>(self: &Arc<Self>, i: usize, f: &TaskFuture<R>) {
        let me = self.clone();
        f.slot.add_done_hook(Box::new(move || {
            me.completed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_back(i);
            me.cv.notify_all();
        }));
    }

    /// The next completed index; `None` when `deadline` passes first.
    fn next(&self, deadline: Option<Instant>) -> Option<usize> {
        let mut q = self.completed.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(i) = q.pop_front() {
                return Some(i);
            }
            q = match deadline {
                None => self.cv.wait(q).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let left = d.checked_duration_since(Instant::now())?;
                    self.cv
                        .wait_timeout(q, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }
}

/// The distinct futures of `fs` (by identity), in first-seen order.
fn distinct<'a, R>(fs: impl IntoIterator<Item = &'a TaskFuture<R>>) -> Vec<&'a TaskFuture<R>> {
    let mut out: Vec<&TaskFuture<R>> = Vec::new();
    for f in fs {
        if !out.iter().any(|g| Arc::ptr_eq(&g.slot, &f.slot)) {
            out.push(f);
        }
    }
    out
}

/// Whether `f` ended with an error (not by being cancelled).
fn failed<R>(f: &TaskFuture<R>) -> bool {
    let s = f.slot.lock();
    s.phase == Phase::Done && s.success == Some(false)
}

/// Waits until `when` is met or `timeout` passes (`None`: no limit), then says which
/// futures are done: Python's `concurrent.futures.wait`.
///
/// ```
/// use mp_core::pool::{wait, ProcessPoolExecutor, ReturnWhen};
///
/// let ex = ProcessPoolExecutor::new(2).unwrap();
/// let fs: Vec<_> = (1..=3u64).map(|x| ex.submit(|x: u64| x * 10, x).unwrap()).collect();
/// let answer = wait(&fs, ReturnWhen::AllCompleted, None);
/// assert_eq!((answer.done.len(), answer.not_done.len()), (3, 0));
/// assert_eq!(fs[2].result().unwrap(), 30);
/// ```
pub fn wait<'a, R>(
    fs: impl IntoIterator<Item = &'a TaskFuture<R>>,
    when: ReturnWhen,
    timeout: Option<Duration>,
) -> DoneAndNotDone<'a, R> {
    let fs = distinct(fs);
    let deadline = mp_ipc::deadline::Deadline::from_timeout(timeout).instant();
    let met = |fs: &[&TaskFuture<R>]| match when {
        ReturnWhen::FirstCompleted => fs.iter().any(|f| f.done()),
        ReturnWhen::FirstException => fs.iter().any(|f| failed(f)) || fs.iter().all(|f| f.done()),
        ReturnWhen::AllCompleted => fs.iter().all(|f| f.done()),
    };
    if !met(&fs) {
        let notifier = Arc::new(Notifier::default());
        for (i, f) in fs.iter().enumerate() {
            if !f.done() {
                notifier.watch(i, f);
            }
        }
        while !met(&fs) && notifier.next(deadline).is_some() {}
    }
    let (done, not_done) = fs.into_iter().partition(|f| f.done());
    DoneAndNotDone { done, not_done }
}

/// Yields each distinct future of `fs` once, as it completes (those already done first,
/// in input order): Python's `concurrent.futures.as_completed`. When `timeout` (counted
/// from this call) passes first, yields one `Err(WaitTimeout)` and ends.
///
/// ```
/// use mp_core::pool::{as_completed, ProcessPoolExecutor};
///
/// let ex = ProcessPoolExecutor::new(2).unwrap();
/// let fs: Vec<_> = (0..4u64).map(|x| ex.submit(|x: u64| x + 1, x).unwrap()).collect();
/// let mut total = 0;
/// for f in as_completed(&fs, None) {
///     total += f.unwrap().result().unwrap();
/// }
/// assert_eq!(total, 10);
/// ```
pub fn as_completed<'a, R>(
    fs: impl IntoIterator<Item = &'a TaskFuture<R>>,
    timeout: Option<Duration>,
) -> AsCompleted<'a, R> {
    let fs = distinct(fs);
    let deadline = mp_ipc::deadline::Deadline::from_timeout(timeout).instant();
    let notifier = Arc::new(Notifier::default());
    let mut ready = VecDeque::new();
    for (i, f) in fs.iter().enumerate() {
        if f.done() {
            ready.push_back(i);
        }
    }
    for (i, f) in fs.iter().enumerate() {
        if !ready.contains(&i) {
            notifier.watch(i, f);
        }
    }
    AsCompleted {
        yielded: vec![false; fs.len()],
        fs,
        ready,
        notifier,
        deadline,
        timed_out: false,
    }
}

/// The iterator of [`as_completed`].
pub struct AsCompleted<'a, R> {
    fs: Vec<&'a TaskFuture<R>>,
    yielded: Vec<bool>,
    ready: VecDeque<usize>,
    notifier: Arc<Notifier>,
    deadline: Option<Instant>,
    timed_out: bool,
}

impl<'a, R> Iterator for AsCompleted<'a, R> {
    type Item = Result<&'a TaskFuture<R>, WaitTimeout>;

    fn next(&mut self) -> Option<Self::Item> {
        let remaining = self.yielded.iter().filter(|y| !**y).count();
        if remaining == 0 || self.timed_out {
            return None;
        }
        let next = match self.ready.pop_front() {
            Some(i) => Some(i),
            None => self.notifier.next(self.deadline),
        };
        match next {
            Some(i) => {
                self.yielded[i] = true;
                Some(Ok(self.fs[i]))
            }
            None => {
                self.timed_out = true;
                Some(Err(WaitTimeout {
                    unfinished: remaining,
                    total: self.fs.len(),
                }))
            }
        }
    }
}
