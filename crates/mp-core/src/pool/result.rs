//! Where results land: [`AsyncResult`] slots, the collectors of `map`, and the lazy
//! iterators of `imap` and `imap_unordered`.

use std::collections::{BTreeMap, VecDeque};
use std::marker::PhantomData;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::Waker;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use super::dispatcher::{ChunkQueue, Outcome, Sink};
use super::entry::WireError;
use super::TaskError;

/// Functions called when a result is ready, before [`AsyncResult::wait`] returns (Python's
/// `callback` and `error_callback`). They run on the pool's dispatcher thread: keep them
/// short, and do not wait on the pool from them.
///
/// ```
/// use mp_core::pool::Callbacks;
/// let cb = Callbacks::new()
///     .on_success(|v: &Vec<u64>| println!("got {} results", v.len()))
///     .on_error(|e| eprintln!("failed: {e}"));
/// # drop(cb);
/// ```
pub struct Callbacks<T> {
    success: Option<OnSuccess<T>>,
    error: Option<OnError>,
}

type OnSuccess<T> = Box<dyn FnOnce(&T) + Send>;
type OnError = Box<dyn FnOnce(&TaskError) + Send>;

impl<T> Default for Callbacks<T> {
    fn default() -> Self {
        Self {
            success: None,
            error: None,
        }
    }
}

impl<T> Callbacks<T> {
    /// No callbacks.
    pub fn new() -> Self {
        Self::default()
    }

    /// Called with the value when the task succeeds.
    pub fn on_success(mut self, f: impl FnOnce(&T) + Send + 'static) -> Self {
        self.success = Some(Box::new(f));
        self
    }

    /// Called with the error when the task fails.
    pub fn on_error(mut self, f: impl FnOnce(&TaskError) + Send + 'static) -> Self {
        self.error = Some(Box::new(f));
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Pending,
    Running,
    Done,
    Cancelled,
}

pub(crate) struct SlotInner<T> {
    pub(crate) phase: Phase,
    value: Option<Result<T, TaskError>>,
    /// `Some(success)` once done, whether or not the value was taken.
    pub(crate) success: Option<bool>,
    callbacks: Option<Callbacks<T>>,
    pub(crate) waker: Option<Waker>,
    done_hooks: Vec<Box<dyn FnOnce() + Send>>,
}

/// One result to come, with its waiters.
pub(crate) struct Slot<T> {
    inner: Mutex<SlotInner<T>>,
    cv: Condvar,
}

impl<T> Slot<T> {
    pub(crate) fn new(callbacks: Option<Callbacks<T>>) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(SlotInner {
                phase: Phase::Pending,
                value: None,
                success: None,
                callbacks,
                waker: None,
                done_hooks: Vec::new(),
            }),
            cv: Condvar::new(),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, SlotInner<T>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Pending -> Running; false if cancelled.
    pub(crate) fn begin(&self) -> bool {
        let mut s = self.lock();
        match s.phase {
            Phase::Pending => {
                s.phase = Phase::Running;
                true
            }
            Phase::Running => true,
            _ => false,
        }
    }

    /// Pending -> Cancelled; true if it was pending (or already cancelled).
    pub(crate) fn cancel(&self) -> bool {
        let mut s = self.lock();
        match s.phase {
            Phase::Pending => {
                s.phase = Phase::Cancelled;
                s.success = Some(false);
                s.value = Some(Err(TaskError::Cancelled));
                let waker = s.waker.take();
                let hooks = std::mem::take(&mut s.done_hooks);
                drop(s);
                self.cv.notify_all();
                if let Some(w) = waker {
                    w.wake();
                }
                for h in hooks {
                    let _ = panic::catch_unwind(AssertUnwindSafe(h));
                }
                true
            }
            Phase::Cancelled => true,
            _ => false,
        }
    }

    /// Sets the outcome (once; later calls are ignored), after running the callbacks.
    pub(crate) fn complete(&self, value: Result<T, TaskError>) {
        let callbacks = {
            let mut s = self.lock();
            if matches!(s.phase, Phase::Done | Phase::Cancelled) {
                return;
            }
            s.callbacks.take()
        };
        if let Some(cb) = callbacks {
            let _ = panic::catch_unwind(AssertUnwindSafe(|| match &value {
                Ok(v) => {
                    if let Some(f) = cb.success {
                        f(v)
                    }
                }
                Err(e) => {
                    if let Some(f) = cb.error {
                        f(e)
                    }
                }
            }));
        }
        let mut s = self.lock();
        s.phase = Phase::Done;
        s.success = Some(value.is_ok());
        s.value = Some(value);
        let waker = s.waker.take();
        let hooks = std::mem::take(&mut s.done_hooks);
        drop(s);
        self.cv.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
        for h in hooks {
            let _ = panic::catch_unwind(AssertUnwindSafe(h));
        }
    }

    pub(crate) fn add_done_hook(&self, hook: Box<dyn FnOnce() + Send>) {
        let mut s = self.lock();
        if s.success.is_some() {
            drop(s);
            let _ = panic::catch_unwind(AssertUnwindSafe(hook));
        } else {
            s.done_hooks.push(hook);
        }
    }

    /// Waits until done; false on timeout.
    pub(crate) fn wait(&self, timeout: Option<Duration>) -> bool {
        let s = self.lock();
        match timeout {
            None => {
                let _s = self
                    .cv
                    .wait_while(s, |s| s.success.is_none())
                    .unwrap_or_else(|e| e.into_inner());
                true
            }
            Some(t) => {
                let (s, _) = self
                    .cv
                    .wait_timeout_while(s, t, |s| s.success.is_none())
                    .unwrap_or_else(|e| e.into_inner());
                s.success.is_some()
            }
        }
    }

    /// A copy of the outcome if it is there (`Taken` if it was moved out).
    pub(crate) fn cloned(&self) -> Option<Result<T, TaskError>>
    where
        T: Clone,
    {
        let s = self.lock();
        s.success?;
        Some(s.value.clone().unwrap_or(Err(TaskError::Taken)))
    }

    /// The error of a failed outcome, if it is there (`None` for a success).
    pub(crate) fn error(&self) -> Option<Option<TaskError>> {
        let s = self.lock();
        s.success?;
        Some(match &s.value {
            Some(Err(e)) => Some(e.clone()),
            _ => None,
        })
    }

    /// Takes the outcome if it is there.
    pub(crate) fn take(&self) -> Option<Result<T, TaskError>> {
        let mut s = self.lock();
        s.success?;
        Some(s.value.take().unwrap_or(Err(TaskError::Taken)))
    }
}

/// The result of an asynchronous call (`apply_async`, `map_async`, `starmap_async`):
/// Python's `AsyncResult`.
///
/// As in Python, [`get`](Self::get) can be asked any number of times (each gives a copy:
/// it needs `T: Clone`); [`into_result`](Self::into_result) moves the value out, for any
/// `T`, and consumes the handle, so it cannot be asked twice.
///
/// ```
/// let pool = mp_core::Pool::new(2).unwrap();
/// let r = pool.apply_async(|x: u64| x * 2, 21).unwrap();
/// r.wait();
/// assert!(r.ready());
/// assert_eq!(r.successful(), Some(true));
/// assert_eq!(r.get().unwrap(), 42);
/// assert_eq!(r.get().unwrap(), 42); // again
/// assert_eq!(r.into_result().unwrap(), 42);
/// ```
pub struct AsyncResult<T> {
    pub(crate) slot: Arc<Slot<T>>,
}

impl<T> AsyncResult<T> {
    /// Waits for the result and returns a copy of it (Python's `get()`; again and again).
    pub fn get(&self) -> Result<T, TaskError>
    where
        T: Clone,
    {
        self.slot.wait(None);
        self.slot.cloned().unwrap_or(Err(TaskError::Taken))
    }

    /// Waits at most `timeout`; [`TaskError::Timeout`] if the result is not ready by then
    /// (it can still be asked for later).
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, TaskError>
    where
        T: Clone,
    {
        if !self.slot.wait(Some(timeout)) {
            return Err(TaskError::Timeout);
        }
        self.slot.cloned().unwrap_or(Err(TaskError::Timeout))
    }

    /// Waits for the result and moves it out (no `Clone` needed).
    ///
    /// ```
    /// let pool = mp_core::Pool::new(1).unwrap();
    /// let r = pool.apply_async(|x: u8| vec![x; 3], 7).unwrap();
    /// assert_eq!(r.into_result().unwrap(), [7, 7, 7]);
    /// ```
    pub fn into_result(self) -> Result<T, TaskError> {
        self.slot.wait(None);
        self.slot.take().unwrap_or(Err(TaskError::Taken))
    }

    /// Waits until the result is ready (its callbacks have run by then).
    pub fn wait(&self) {
        self.slot.wait(None);
    }

    /// Waits at most `timeout`; returns whether the result is ready.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.slot.wait(Some(timeout))
    }

    /// Whether the result is ready.
    pub fn ready(&self) -> bool {
        self.slot.lock().success.is_some()
    }

    /// Whether the call succeeded; `None` while it is not ready (Python raises
    /// `ValueError` then).
    pub fn successful(&self) -> Option<bool> {
        self.slot.lock().success
    }
}

impl<T> std::fmt::Debug for AsyncResult<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncResult")
            .field("ready", &self.ready())
            .finish()
    }
}

/// Decodes `len` results of a chunk.
pub(crate) fn decode_items<R: DeserializeOwned>(
    len: usize,
    outcome: Outcome<'_>,
    mut push: impl FnMut(Result<R, TaskError>),
) {
    match outcome {
        Outcome::Failed(e) => {
            for _ in 0..len {
                push(Err(e.clone()));
            }
        }
        Outcome::Encoded(mut bytes) => {
            for n in 0..len {
                match crate::codec::take::<Result<R, WireError>>(bytes) {
                    Ok((r, rest)) => {
                        bytes = rest;
                        push(r.map_err(TaskError::from));
                    }
                    Err(e) => {
                        let err = TaskError::Decode(format!(
                            "cannot decode a result of type {}: {e}",
                            std::any::type_name::<R>()
                        ));
                        for _ in n..len {
                            push(Err(err.clone()));
                        }
                        return;
                    }
                }
            }
        }
    }
}

/// The sink of one `apply_async` (or executor `submit`).
pub(crate) struct ApplySink<R> {
    pub(crate) slot: Arc<Slot<R>>,
}

impl<R: DeserializeOwned + Send> Sink for ApplySink<R> {
    fn begin(&self, _index: usize) -> bool {
        self.slot.begin()
    }

    fn cancel(&self, _index: usize, _len: usize) {
        self.slot.cancel();
    }

    fn finish(&self, _index: usize, len: usize, outcome: Outcome<'_>) {
        let mut value = None;
        decode_items::<R>(len, outcome, |r| {
            if value.is_none() {
                value = Some(r)
            }
        });
        self.slot
            .complete(value.unwrap_or(Err(TaskError::Decode("no result".into()))));
    }
}

/// Where a map's results go: the values with the first error (in input order) winning, or
/// every item's own outcome.
pub(crate) enum MapSlot<R> {
    Values(Arc<Slot<Vec<R>>>),
    Each(Arc<Slot<Vec<Result<R, TaskError>>>>),
}

struct MapParts<R> {
    values: Vec<Option<Vec<R>>>,
    each: Vec<Option<Vec<Result<R, TaskError>>>>,
    /// The first failed item, as (chunk, position in chunk).
    first_error: Option<((usize, usize), TaskError)>,
    remaining: usize,
}

/// The sink of a `map`: collects chunk results, completes the slot with the last one.
pub(crate) struct MapSink<R> {
    parts: Mutex<MapParts<R>>,
    slot: MapSlot<R>,
}

impl<R> MapSink<R> {
    pub(crate) fn new(chunks: usize, slot: MapSlot<R>) -> Self {
        let each = matches!(slot, MapSlot::Each(_));
        Self {
            parts: Mutex::new(MapParts {
                values: if each {
                    Vec::new()
                } else {
                    (0..chunks).map(|_| None).collect()
                },
                each: if each {
                    (0..chunks).map(|_| None).collect()
                } else {
                    Vec::new()
                },
                first_error: None,
                remaining: chunks,
            }),
            slot,
        }
    }
}

impl<R: DeserializeOwned + Send> Sink for MapSink<R> {
    fn finish(&self, index: usize, len: usize, outcome: Outcome<'_>) {
        match &self.slot {
            MapSlot::Values(slot) => {
                let mut values = Vec::with_capacity(len);
                let mut error = None;
                let mut pos = 0;
                decode_items::<R>(len, outcome, |r| {
                    match r {
                        Ok(v) => values.push(v),
                        Err(e) => {
                            if error.is_none() {
                                error = Some(((index, pos), e));
                            }
                        }
                    }
                    pos += 1;
                });
                let mut parts = self.parts.lock().unwrap_or_else(|e| e.into_inner());
                if parts.values[index].is_some() {
                    return;
                }
                parts.values[index] = Some(values);
                if let Some((at, e)) = error {
                    if parts.first_error.as_ref().is_none_or(|(old, _)| at < *old) {
                        parts.first_error = Some((at, e));
                    }
                }
                parts.remaining -= 1;
                if parts.remaining > 0 {
                    return;
                }
                let result = match parts.first_error.take() {
                    Some((_, e)) => Err(e),
                    None => {
                        let chunks = std::mem::take(&mut parts.values);
                        let total = chunks.iter().flatten().map(Vec::len).sum();
                        let mut all = Vec::with_capacity(total);
                        for c in chunks.into_iter().flatten() {
                            all.extend(c);
                        }
                        Ok(all)
                    }
                };
                drop(parts);
                slot.complete(result);
            }
            MapSlot::Each(slot) => {
                let mut items = Vec::with_capacity(len);
                decode_items::<R>(len, outcome, |r| items.push(r));
                let mut parts = self.parts.lock().unwrap_or_else(|e| e.into_inner());
                if parts.each[index].is_some() {
                    return;
                }
                parts.each[index] = Some(items);
                parts.remaining -= 1;
                if parts.remaining > 0 {
                    return;
                }
                let all = std::mem::take(&mut parts.each)
                    .into_iter()
                    .flat_map(|p| p.unwrap_or_default())
                    .collect();
                drop(parts);
                slot.complete(Ok(all));
            }
        }
    }
}

/// Results of `imap` chunks as they come.
pub(crate) struct ImapState<R> {
    /// Ordered: by chunk index; unordered: index 0 only, a queue.
    done: BTreeMap<usize, VecDeque<Result<R, TaskError>>>,
    /// Chunks sent and not yet finished.
    outstanding: usize,
}

pub(crate) struct ImapSink<R> {
    state: Mutex<ImapState<R>>,
    cv: Condvar,
    ordered: bool,
}

impl<R: DeserializeOwned + Send> Sink for ImapSink<R> {
    fn finish(&self, index: usize, len: usize, outcome: Outcome<'_>) {
        let mut items = VecDeque::with_capacity(len);
        decode_items::<R>(len, outcome, |r| items.push_back(r));
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.outstanding -= 1;
        if self.ordered {
            st.done.insert(index, items);
        } else {
            st.done.entry(0).or_default().extend(items);
        }
        drop(st);
        self.cv.notify_all();
    }
}

/// Encodes the next chunk of an input iterator: `Ok(None)` at its end.
pub(crate) type NextChunk<'a> = Box<
    dyn FnMut(&Arc<dyn Sink>, usize) -> Result<Option<super::dispatcher::Chunk>, TaskError> + 'a,
>;

/// The lazy iterator of [`Pool::imap`](super::Pool::imap) and
/// [`Pool::imap_unordered`](super::Pool::imap_unordered): it reads the input only as far as
/// needed to keep a bounded number of chunks in flight, and yields one `Result` per item.
/// A failure to read or encode the input is yielded after the results before it, and ends
/// the iteration.
pub struct IMap<'a, R> {
    shared: Arc<dyn ChunkQueue>,
    sink: Arc<ImapSink<R>>,
    sink_dyn: Arc<dyn super::dispatcher::Sink>,
    next_chunk: NextChunk<'a>,
    input_done: bool,
    input_error: Option<TaskError>,
    /// Next chunk index to hand out (ordered) / chunks submitted.
    submitted: usize,
    next_index: usize,
    max_in_flight: usize,
    current: VecDeque<Result<R, TaskError>>,
    _r: PhantomData<R>,
}

impl<'a, R: DeserializeOwned + Send + 'static> IMap<'a, R> {
    pub(crate) fn new(
        shared: Arc<dyn ChunkQueue>,
        ordered: bool,
        max_in_flight: usize,
        next_chunk: NextChunk<'a>,
    ) -> Self {
        let sink = Arc::new(ImapSink {
            state: Mutex::new(ImapState {
                done: BTreeMap::new(),
                outstanding: 0,
            }),
            cv: Condvar::new(),
            ordered,
        });
        Self {
            shared,
            sink_dyn: sink.clone(),
            sink,
            next_chunk,
            input_done: false,
            input_error: None,
            submitted: 0,
            next_index: 0,
            max_in_flight: max_in_flight.max(1),
            current: VecDeque::new(),
            _r: PhantomData,
        }
    }

    /// Chunks submitted and not yet yielded (outstanding or buffered).
    fn unconsumed(&self) -> usize {
        let st = self.sink.state.lock().unwrap_or_else(|e| e.into_inner());
        if self.sink.ordered {
            self.submitted - self.next_index
        } else {
            st.outstanding + usize::from(st.done.get(&0).is_some_and(|q| !q.is_empty()))
        }
    }

    /// Reads input and submits chunks up to the in-flight bound.
    pub(crate) fn fill(&mut self) {
        while !self.input_done && self.unconsumed() < self.max_in_flight {
            match (self.next_chunk)(&self.sink_dyn, self.submitted) {
                Ok(Some(chunk)) => {
                    self.sink
                        .state
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .outstanding += 1;
                    if let Err(e) = self.shared.submit(vec![chunk]) {
                        self.sink
                            .state
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .outstanding -= 1;
                        self.input_done = true;
                        self.input_error = Some(e.into());
                        return;
                    }
                    self.submitted += 1;
                }
                Ok(None) => self.input_done = true,
                Err(e) => {
                    self.input_done = true;
                    self.input_error = Some(e);
                }
            }
        }
    }

    pub(crate) fn next_timeout(
        &mut self,
        deadline: Option<Instant>,
    ) -> Option<Result<R, TaskError>> {
        loop {
            if let Some(r) = self.current.pop_front() {
                return Some(r);
            }
            self.fill();
            let mut st = self.sink.state.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                let key = if self.sink.ordered {
                    self.next_index
                } else {
                    0
                };
                if let Some(items) = st.done.remove(&key) {
                    if self.sink.ordered {
                        self.next_index += 1;
                    }
                    self.current = items;
                    break;
                }
                if st.outstanding == 0 {
                    drop(st);
                    if self.input_done {
                        return self.input_error.take().map(Err);
                    }
                    break;
                }
                st = match deadline {
                    None => self.sink.cv.wait(st).unwrap_or_else(|e| e.into_inner()),
                    Some(d) => {
                        let now = Instant::now();
                        if now >= d {
                            return Some(Err(TaskError::Timeout));
                        }
                        self.sink
                            .cv
                            .wait_timeout(st, d - now)
                            .unwrap_or_else(|e| e.into_inner())
                            .0
                    }
                };
            }
        }
    }

    /// The next result, waiting at most `timeout`: `Some(Err(TaskError::Timeout))` if none
    /// came in time (the iteration can go on).
    pub fn next_timeout_for(&mut self, timeout: Duration) -> Option<Result<R, TaskError>> {
        self.next_timeout(mp_ipc::deadline::Deadline::after(timeout).instant())
    }
}

impl<R: DeserializeOwned + Send + 'static> Iterator for IMap<'_, R> {
    type Item = Result<R, TaskError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_timeout(None)
    }
}
