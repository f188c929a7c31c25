//! One program, two flavors: traits over processes and threads.
//!
//! Python code switches between `multiprocessing` and `multiprocessing.dummy` by changing
//! an import. Here a function generic over [`Flavor`] runs on either
//! [`Processes`] (this crate's [`Process`](crate::Process), [`Queue`](crate::Queue),
//! [`pipe`](crate::pipe), [`Pool`](crate::Pool)) or, with the `threads` feature, `Threads`
//! (the twins in `mp_core::dummy`). The synchronisation primitives ([`Lock`](crate::Lock) and
//! friends) are the same types on both backends and need no trait.
//!
//! The bounds are the process backend's, so that code written once is portable: a target is a
//! `fn` item or a closure that captures nothing (`Fn(A) + Copy + Send + 'static`, zero-sized),
//! and every argument, item, message and result is [`Portable`] (`serde` both ways, `Send`,
//! `'static`). The threads backend needs less and its own inherent methods ask for less.
//!
//! ```
//! use mp_core::api::{Flavor, ProcessApi, QueueApi, Processes};
//!
//! fn produce<B: Flavor>(q: B::Queue<u32>) {
//!     for i in 0..3 {
//!         q.put(i).unwrap();
//!     }
//! }
//!
//! fn work<B: Flavor>() -> Vec<u32> {
//!     let q = B::queue::<u32>().unwrap();
//!     let mut p = B::process(produce::<B>, q.clone());
//!     p.start().unwrap();
//!     p.join().unwrap();
//!     (0..3).map(|_| q.get().unwrap()).collect()
//! }
//!
//! assert_eq!(work::<Processes>(), [0, 1, 2]);
//! # #[cfg(feature = "threads")]
//! assert_eq!(work::<mp_core::api::Threads>(), [0, 1, 2]);
//! ```

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::pool::{PoolError, StarFn, TaskError};
use crate::queue::{GetError, PutError, QueueError};
use crate::{ConnectionError, ProcessError};

/// What may cross between workers on every backend: process arguments, queue items,
/// messages, task arguments and results.
pub trait Portable: Serialize + DeserializeOwned + Send + 'static {}
impl<T: Serialize + DeserializeOwned + Send + 'static> Portable for T {}

/// What [`Flavor::pipe`] and [`Flavor::pipe_oneway`] return: two ends, or why not.
pub type PipeResult<A, B> = Result<(A, B), ConnectionError>;

/// A worker: [`crate::Process`] or `mp_core::dummy::Process`.
pub trait ProcessApi: Send {
    /// Starts it.
    fn start(&mut self) -> Result<(), ProcessError>;
    /// Waits for it to end; [`ProcessError::Panicked`] if its target panicked.
    fn join(&self) -> Result<(), ProcessError>;
    /// Waits at most `timeout`; [`ProcessError::Timeout`] while it still runs.
    fn join_timeout(&self, timeout: Duration) -> Result<(), ProcessError>;
    /// Whether it was started and has not ended.
    fn is_alive(&self) -> bool;
    /// Its exit code once ended (0, or 1 after a panic, ...).
    fn exitcode(&self) -> Option<i32>;
    /// Its name, once given or assigned at start (`Process-N`, `Thread-N`).
    fn name(&self) -> Option<&str>;
    /// Its daemon flag.
    fn daemon(&self) -> bool;
    /// Its OS process id once started (this process's, for a thread).
    fn pid(&self) -> Option<u32>;
}

/// A queue: the shared methods of `Queue`, `SimpleQueue` and `JoinableQueue` of both
/// backends, with the errors of [`crate::queue`].
pub trait QueueApi<T>: Clone + Send {
    /// Puts an item, waiting for room.
    fn put(&self, item: T) -> Result<(), PutError<T>>;
    /// Puts an item, waiting at most `timeout` ([`PutError::Full`] after).
    fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), PutError<T>>;
    /// Puts an item only if there is room now.
    fn put_nowait(&self, item: T) -> Result<(), PutError<T>>;
    /// Takes the oldest item, waiting for one.
    fn get(&self) -> Result<T, GetError>;
    /// Takes the oldest item, waiting at most `timeout` ([`GetError::Empty`] after).
    fn get_timeout(&self, timeout: Duration) -> Result<T, GetError>;
    /// Takes the oldest item if there is one now.
    fn get_nowait(&self) -> Result<T, GetError>;
    /// The number of items queued.
    fn qsize(&self) -> usize;
    /// Whether no item is queued.
    fn empty(&self) -> bool;
    /// Whether a bounded queue is at its limit.
    fn full(&self) -> bool;
    /// Closes this handle.
    fn close(&mut self);
    /// Whether this handle was closed.
    fn is_closed(&self) -> bool;
}

/// A `JoinableQueue` of either backend.
pub trait JoinableQueueApi<T>: QueueApi<T> {
    /// Marks one item done.
    fn task_done(&self) -> Result<(), QueueError>;
    /// Waits until every item put is marked done.
    fn join(&self) -> Result<(), QueueError>;
    /// Like `join`, giving up after `timeout` ([`QueueError::Timeout`]).
    fn join_timeout(&self, timeout: Duration) -> Result<(), QueueError>;
    /// Items put and not yet marked done.
    fn unfinished_tasks(&self) -> u32;
}

/// The receiving side of a pipe end ([`Connection`](crate::Connection),
/// [`Reader`](crate::Reader) and their twins).
pub trait RecvApi<T>: Send {
    /// Waits for a value; [`ConnectionError::Eof`] once the peer is gone.
    fn recv(&self) -> Result<T, ConnectionError>;
    /// Like `recv`, [`ConnectionError::Timeout`] after `timeout`.
    fn recv_timeout(&self, timeout: Duration) -> Result<T, ConnectionError>;
    /// Whether a message or end of file is ready, waiting up to `timeout`.
    fn poll(&self, timeout: Duration) -> Result<bool, ConnectionError>;
    /// Receives one raw message.
    fn recv_bytes(&self) -> Result<Vec<u8>, ConnectionError>;
    /// Closes this end.
    fn close(&mut self);
}

/// The sending side of a pipe end ([`Connection`](crate::Connection),
/// [`Writer`](crate::Writer) and their twins).
pub trait SendApi<T>: Send {
    /// Sends a value; [`ConnectionError::BrokenPipe`] if the peer is gone.
    fn send(&self, value: &T) -> Result<(), ConnectionError>;
    /// Sends raw bytes as one message.
    fn send_bytes(&self, bytes: &[u8]) -> Result<(), ConnectionError>;
}

/// A pending result: [`crate::AsyncResult`] or `mp_core::dummy::AsyncResult`.
pub trait AsyncResultApi<T> {
    /// Waits for the result and returns a copy (as often as asked).
    fn get(&self) -> Result<T, TaskError>
    where
        T: Clone;
    /// Waits at most `timeout` ([`TaskError::Timeout`] after).
    fn get_timeout(&self, timeout: Duration) -> Result<T, TaskError>
    where
        T: Clone;
    /// Waits for the result and moves it out.
    fn into_result(self) -> Result<T, TaskError>
    where
        Self: Sized;
    /// Waits until ready.
    fn wait(&self);
    /// Whether it is ready.
    fn ready(&self) -> bool;
    /// Whether it succeeded; `None` while not ready.
    fn successful(&self) -> Option<bool>;
}

/// A worker pool: [`crate::Pool`], a manager's [`PoolProxy`](crate::manager::PoolProxy)
/// (whose `close` and `terminate` then ignore a manager that is gone) or
/// `mp_core::dummy::Pool`.
pub trait PoolApi {
    /// What `apply_async` and `map_async` return.
    type AsyncResult<R: Portable>: AsyncResultApi<R>;
    /// What `imap` and `imap_unordered` return.
    type IMap<'a, R: Portable>: Iterator<Item = Result<R, TaskError>>;

    /// The number of workers.
    fn processes(&self) -> usize;
    /// Runs `f(arg)` on a worker and waits for it.
    fn apply<F, A, R>(&self, f: F, arg: A) -> Result<R, TaskError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        A: Portable,
        R: Portable;
    /// Starts `f(arg)` on a worker.
    fn apply_async<F, A, R>(&self, f: F, arg: A) -> Result<Self::AsyncResult<R>, PoolError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        A: Portable,
        R: Portable;
    /// `f` over every item, results in input order; the first failure is the error.
    fn map<F, A, R, I>(&self, f: F, iter: I) -> Result<Vec<R>, TaskError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        I: IntoIterator<Item = A>,
        A: Portable,
        R: Portable;
    /// `f` over every item; each item's own outcome.
    fn map_results<F, A, R, I>(
        &self,
        f: F,
        iter: I,
    ) -> Result<Vec<Result<R, TaskError>>, PoolError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        I: IntoIterator<Item = A>,
        A: Portable,
        R: Portable;
    /// Starts `map`.
    fn map_async<F, A, R, I>(&self, f: F, iter: I) -> Result<Self::AsyncResult<Vec<R>>, PoolError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        I: IntoIterator<Item = A>,
        A: Portable,
        R: Portable;
    /// `f(a, b, ...)` for every tuple, results in input order.
    fn starmap<F, Args, R, I>(&self, f: F, iter: I) -> Result<Vec<R>, TaskError>
    where
        F: StarFn<Args, R>,
        I: IntoIterator<Item = Args>,
        Args: Portable,
        R: Portable;
    /// Lazy `map`, results in input order.
    fn imap<'a, F, A, R, I>(&self, f: F, iter: I) -> Result<Self::IMap<'a, R>, PoolError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'a,
        A: Portable,
        R: Portable;
    /// Lazy `map`, results as they complete.
    fn imap_unordered<'a, F, A, R, I>(&self, f: F, iter: I) -> Result<Self::IMap<'a, R>, PoolError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'a,
        A: Portable,
        R: Portable;
    /// No new work.
    fn close(&self);
    /// Stops: outstanding work fails with [`TaskError::Terminated`].
    fn terminate(&self);
    /// Waits for the workers after `close` or `terminate`.
    fn join(&self) -> Result<(), PoolError>;
}

/// A backend: the types and constructors that one generic function uses, so that it runs on
/// processes ([`Processes`]) or threads (`Threads`, feature `threads`).
pub trait Flavor: 'static {
    /// `"processes"` or `"threads"`.
    const NAME: &'static str;
    /// Its `Process`.
    type Process: ProcessApi;
    /// Its `Queue`.
    type Queue<T: Portable>: QueueApi<T> + Portable;
    /// Its `SimpleQueue`.
    type SimpleQueue<T: Portable>: QueueApi<T> + Portable;
    /// Its `JoinableQueue`.
    type JoinableQueue<T: Portable>: JoinableQueueApi<T> + Portable;
    /// Its duplex pipe end.
    type Connection<T: Portable>: SendApi<T> + RecvApi<T> + Portable;
    /// Its one-way pipe's reading end.
    type Reader<T: Portable>: RecvApi<T> + Portable;
    /// Its one-way pipe's writing end.
    type Writer<T: Portable>: SendApi<T> + Portable;
    /// Its `Pool`.
    type Pool: PoolApi;

    /// A worker that will run `target(args)`.
    fn process<F, A>(target: F, args: A) -> Self::Process
    where
        F: Fn(A) + Copy + Send + 'static,
        A: Portable;
    /// An unbounded queue.
    fn queue<T: Portable>() -> std::io::Result<Self::Queue<T>>;
    /// A queue of at most `maxsize` items (0: unbounded).
    fn bounded_queue<T: Portable>(maxsize: u32) -> std::io::Result<Self::Queue<T>>;
    /// A `SimpleQueue`.
    fn simple_queue<T: Portable>() -> std::io::Result<Self::SimpleQueue<T>>;
    /// An unbounded `JoinableQueue`.
    fn joinable_queue<T: Portable>() -> std::io::Result<Self::JoinableQueue<T>>;
    /// A duplex pipe.
    fn pipe<T: Portable>() -> PipeResult<Self::Connection<T>, Self::Connection<T>>;
    /// A one-way pipe, `(reader, writer)`.
    fn pipe_oneway<T: Portable>() -> PipeResult<Self::Reader<T>, Self::Writer<T>>;
    /// A pool of `n` workers.
    fn pool(n: usize) -> Result<Self::Pool, PoolError>;
}

/// The process backend: this crate's own types.
#[derive(Debug, Clone, Copy, Default)]
pub struct Processes;

/// The threads backend: the types of [`crate::dummy`] (feature `threads`).
#[cfg(feature = "threads")]
#[cfg_attr(docsrs, doc(cfg(feature = "threads")))]
#[derive(Debug, Clone, Copy, Default)]
pub struct Threads;

// ---- the process backend -------------------------------------------------------------

impl ProcessApi for crate::Process {
    fn start(&mut self) -> Result<(), ProcessError> {
        crate::Process::start(self)
    }
    fn join(&self) -> Result<(), ProcessError> {
        crate::Process::join(self)
    }
    fn join_timeout(&self, timeout: Duration) -> Result<(), ProcessError> {
        crate::Process::join_timeout(self, timeout)
    }
    fn is_alive(&self) -> bool {
        crate::Process::is_alive(self)
    }
    fn exitcode(&self) -> Option<i32> {
        crate::Process::exitcode(self)
    }
    fn name(&self) -> Option<&str> {
        crate::Process::name(self)
    }
    fn daemon(&self) -> bool {
        crate::Process::daemon(self)
    }
    fn pid(&self) -> Option<u32> {
        crate::Process::pid(self)
    }
}

/// `QueueApi` for the queue types of both backends, forwarding to the inherent methods.
macro_rules! queue_api {
    ($($ty:ty),+) => {$(
        impl<T: Portable> QueueApi<T> for $ty {
            fn put(&self, item: T) -> Result<(), PutError<T>> {
                <$ty>::put(self, item)
            }
            fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), PutError<T>> {
                <$ty>::put_timeout(self, item, timeout)
            }
            fn put_nowait(&self, item: T) -> Result<(), PutError<T>> {
                <$ty>::put_nowait(self, item)
            }
            fn get(&self) -> Result<T, GetError> {
                <$ty>::get(self)
            }
            fn get_timeout(&self, timeout: Duration) -> Result<T, GetError> {
                <$ty>::get_timeout(self, timeout)
            }
            fn get_nowait(&self) -> Result<T, GetError> {
                <$ty>::get_nowait(self)
            }
            fn qsize(&self) -> usize {
                <$ty>::qsize(self)
            }
            fn empty(&self) -> bool {
                <$ty>::empty(self)
            }
            fn full(&self) -> bool {
                <$ty>::full(self)
            }
            fn close(&mut self) {
                <$ty>::close(self)
            }
            fn is_closed(&self) -> bool {
                <$ty>::is_closed(self)
            }
        }
    )+};
}

macro_rules! joinable_api {
    ($($ty:ty),+) => {$(
        impl<T: Portable> JoinableQueueApi<T> for $ty {
            fn task_done(&self) -> Result<(), QueueError> {
                <$ty>::task_done(self)
            }
            fn join(&self) -> Result<(), QueueError> {
                <$ty>::join(self)
            }
            fn join_timeout(&self, timeout: Duration) -> Result<(), QueueError> {
                <$ty>::join_timeout(self, timeout)
            }
            fn unfinished_tasks(&self) -> u32 {
                <$ty>::unfinished_tasks(self)
            }
        }
    )+};
}

queue_api!(
    crate::Queue<T>,
    crate::SimpleQueue<T>,
    crate::JoinableQueue<T>
);
joinable_api!(crate::JoinableQueue<T>);

/// `RecvApi` for receiving ends, forwarding to the inherent methods.
macro_rules! recv_api {
    ($($ty:ty),+) => {$(
        impl<T: Portable> RecvApi<T> for $ty {
            fn recv(&self) -> Result<T, ConnectionError> {
                <$ty>::recv(self)
            }
            fn recv_timeout(&self, timeout: Duration) -> Result<T, ConnectionError> {
                <$ty>::recv_timeout(self, timeout)
            }
            fn poll(&self, timeout: Duration) -> Result<bool, ConnectionError> {
                <$ty>::poll(self, timeout)
            }
            fn recv_bytes(&self) -> Result<Vec<u8>, ConnectionError> {
                <$ty>::recv_bytes(self)
            }
            fn close(&mut self) {
                <$ty>::close(self)
            }
        }
    )+};
}

recv_api!(crate::Connection<T>, crate::Reader<T>);

impl<T: Portable> SendApi<T> for crate::Connection<T> {
    fn send(&self, value: &T) -> Result<(), ConnectionError> {
        crate::Connection::send(self, value)
    }
    fn send_bytes(&self, bytes: &[u8]) -> Result<(), ConnectionError> {
        crate::Connection::send_bytes(self, bytes)
    }
}

impl<T: Portable> SendApi<T> for crate::Writer<T> {
    fn send(&self, value: &T) -> Result<(), ConnectionError> {
        crate::Writer::send(self, value)
    }
    fn send_bytes(&self, bytes: &[u8]) -> Result<(), ConnectionError> {
        crate::Writer::send_bytes(self, bytes)
    }
}

/// `AsyncResultApi` for both backends' results.
macro_rules! async_result_api {
    ($($ty:ty),+) => {$(
        impl<T> AsyncResultApi<T> for $ty {
            fn get(&self) -> Result<T, TaskError>
            where
                T: Clone,
            {
                <$ty>::get(self)
            }
            fn get_timeout(&self, timeout: Duration) -> Result<T, TaskError>
            where
                T: Clone,
            {
                <$ty>::get_timeout(self, timeout)
            }
            fn into_result(self) -> Result<T, TaskError> {
                <$ty>::into_result(self)
            }
            fn wait(&self) {
                <$ty>::wait(self)
            }
            fn ready(&self) -> bool {
                <$ty>::ready(self)
            }
            fn successful(&self) -> Option<bool> {
                <$ty>::successful(self)
            }
        }
    )+};
}

async_result_api!(crate::AsyncResult<T>);

/// `PoolApi` for both backends' pools: the trait's bounds imply the inherent methods'.
macro_rules! pool_api {
    ($ty:ty, $ar:ident, $imap:ident) => {
        impl PoolApi for $ty {
            type AsyncResult<R: Portable> = $ar<R>;
            type IMap<'a, R: Portable> = $imap<'a, R>;

            fn processes(&self) -> usize {
                <$ty>::processes(self)
            }
            fn apply<F, A, R>(&self, f: F, arg: A) -> Result<R, TaskError>
            where
                F: Fn(A) -> R + Copy + Send + 'static,
                A: Portable,
                R: Portable,
            {
                <$ty>::apply(self, f, arg)
            }
            fn apply_async<F, A, R>(&self, f: F, arg: A) -> Result<$ar<R>, PoolError>
            where
                F: Fn(A) -> R + Copy + Send + 'static,
                A: Portable,
                R: Portable,
            {
                <$ty>::apply_async(self, f, arg)
            }
            fn map<F, A, R, I>(&self, f: F, iter: I) -> Result<Vec<R>, TaskError>
            where
                F: Fn(A) -> R + Copy + Send + 'static,
                I: IntoIterator<Item = A>,
                A: Portable,
                R: Portable,
            {
                <$ty>::map(self, f, iter)
            }
            fn map_results<F, A, R, I>(
                &self,
                f: F,
                iter: I,
            ) -> Result<Vec<Result<R, TaskError>>, PoolError>
            where
                F: Fn(A) -> R + Copy + Send + 'static,
                I: IntoIterator<Item = A>,
                A: Portable,
                R: Portable,
            {
                <$ty>::map_results(self, f, iter)
            }
            fn map_async<F, A, R, I>(&self, f: F, iter: I) -> Result<$ar<Vec<R>>, PoolError>
            where
                F: Fn(A) -> R + Copy + Send + 'static,
                I: IntoIterator<Item = A>,
                A: Portable,
                R: Portable,
            {
                <$ty>::map_async(self, f, iter)
            }
            fn starmap<F, Args, R, I>(&self, f: F, iter: I) -> Result<Vec<R>, TaskError>
            where
                F: StarFn<Args, R>,
                I: IntoIterator<Item = Args>,
                Args: Portable,
                R: Portable,
            {
                <$ty>::starmap(self, f, iter)
            }
            fn imap<'a, F, A, R, I>(&self, f: F, iter: I) -> Result<$imap<'a, R>, PoolError>
            where
                F: Fn(A) -> R + Copy + Send + 'static,
                I: IntoIterator<Item = A>,
                I::IntoIter: 'a,
                A: Portable,
                R: Portable,
            {
                <$ty>::imap(self, f, iter)
            }
            fn imap_unordered<'a, F, A, R, I>(
                &self,
                f: F,
                iter: I,
            ) -> Result<$imap<'a, R>, PoolError>
            where
                F: Fn(A) -> R + Copy + Send + 'static,
                I: IntoIterator<Item = A>,
                I::IntoIter: 'a,
                A: Portable,
                R: Portable,
            {
                <$ty>::imap_unordered(self, f, iter)
            }
            fn close(&self) {
                <$ty>::close(self).ended()
            }
            fn terminate(&self) {
                <$ty>::terminate(self).ended()
            }
            fn join(&self) -> Result<(), PoolError> {
                <$ty>::join(self)
            }
        }
    };
}

/// What a pool's `close` and `terminate` return, as [`PoolApi`] drops it: nothing, or for a
/// manager's pool whether the manager could be told (when it cannot, it is gone, and its
/// pool with it).
trait Ended {
    fn ended(self);
}

impl Ended for () {
    fn ended(self) {}
}

impl Ended for Result<(), PoolError> {
    fn ended(self) {}
}

use crate::pool::{AsyncResult as ProcAsyncResult, IMap as ProcIMap};
pool_api!(crate::Pool, ProcAsyncResult, ProcIMap);
pool_api!(crate::manager::PoolProxy, ProcAsyncResult, ProcIMap);

impl Flavor for Processes {
    const NAME: &'static str = "processes";
    type Process = crate::Process;
    type Queue<T: Portable> = crate::Queue<T>;
    type SimpleQueue<T: Portable> = crate::SimpleQueue<T>;
    type JoinableQueue<T: Portable> = crate::JoinableQueue<T>;
    type Connection<T: Portable> = crate::Connection<T>;
    type Reader<T: Portable> = crate::Reader<T>;
    type Writer<T: Portable> = crate::Writer<T>;
    type Pool = crate::Pool;

    fn process<F, A>(target: F, args: A) -> crate::Process
    where
        F: Fn(A) + Copy + Send + 'static,
        A: Portable,
    {
        crate::Process::new(target, args)
    }
    fn queue<T: Portable>() -> std::io::Result<crate::Queue<T>> {
        crate::Queue::new()
    }
    fn bounded_queue<T: Portable>(maxsize: u32) -> std::io::Result<crate::Queue<T>> {
        crate::Queue::bounded(maxsize)
    }
    fn simple_queue<T: Portable>() -> std::io::Result<crate::SimpleQueue<T>> {
        crate::SimpleQueue::new()
    }
    fn joinable_queue<T: Portable>() -> std::io::Result<crate::JoinableQueue<T>> {
        crate::JoinableQueue::new()
    }
    fn pipe<T: Portable>() -> Result<(crate::Connection<T>, crate::Connection<T>), ConnectionError>
    {
        crate::pipe()
    }
    fn pipe_oneway<T: Portable>() -> Result<(crate::Reader<T>, crate::Writer<T>), ConnectionError> {
        crate::pipe_oneway()
    }
    fn pool(n: usize) -> Result<crate::Pool, PoolError> {
        crate::Pool::new(n)
    }
}

// ---- the threads backend -------------------------------------------------------------

#[cfg(feature = "threads")]
mod threads {
    use super::*;
    use crate::dummy;

    impl ProcessApi for dummy::Process {
        fn start(&mut self) -> Result<(), ProcessError> {
            dummy::Process::start(self)
        }
        fn join(&self) -> Result<(), ProcessError> {
            dummy::Process::join(self)
        }
        fn join_timeout(&self, timeout: Duration) -> Result<(), ProcessError> {
            dummy::Process::join_timeout(self, timeout)
        }
        fn is_alive(&self) -> bool {
            dummy::Process::is_alive(self)
        }
        fn exitcode(&self) -> Option<i32> {
            dummy::Process::exitcode(self)
        }
        fn name(&self) -> Option<&str> {
            dummy::Process::name(self)
        }
        fn daemon(&self) -> bool {
            dummy::Process::daemon(self)
        }
        fn pid(&self) -> Option<u32> {
            dummy::Process::pid(self)
        }
    }

    queue_api!(
        dummy::Queue<T>,
        dummy::SimpleQueue<T>,
        dummy::JoinableQueue<T>
    );
    joinable_api!(dummy::JoinableQueue<T>);
    recv_api!(dummy::Connection<T>, dummy::Reader<T>);
    async_result_api!(dummy::AsyncResult<T>);

    /// A value behind a reference, owned: the trait's `send(&T)` cannot ask for `Clone`, so
    /// the threads backend copies through `postcard` (its inherent `send` clones instead).
    fn owned<T: Portable>(value: &T) -> Result<T, ConnectionError> {
        let bytes = postcard::to_stdvec(value).map_err(ConnectionError::Encode)?;
        crate::codec::decode(&bytes).map_err(ConnectionError::Decode)
    }

    impl<T: Portable> SendApi<T> for dummy::Connection<T> {
        fn send(&self, value: &T) -> Result<(), ConnectionError> {
            self.send_owned(owned(value)?)
        }
        fn send_bytes(&self, bytes: &[u8]) -> Result<(), ConnectionError> {
            dummy::Connection::send_bytes(self, bytes)
        }
    }

    impl<T: Portable> SendApi<T> for dummy::Writer<T> {
        fn send(&self, value: &T) -> Result<(), ConnectionError> {
            self.send_owned(owned(value)?)
        }
        fn send_bytes(&self, bytes: &[u8]) -> Result<(), ConnectionError> {
            dummy::Writer::send_bytes(self, bytes)
        }
    }

    use dummy::{AsyncResult as ThrAsyncResult, IMap as ThrIMap};
    pool_api!(dummy::Pool, ThrAsyncResult, ThrIMap);

    impl Flavor for Threads {
        const NAME: &'static str = "threads";
        type Process = dummy::Process;
        type Queue<T: Portable> = dummy::Queue<T>;
        type SimpleQueue<T: Portable> = dummy::SimpleQueue<T>;
        type JoinableQueue<T: Portable> = dummy::JoinableQueue<T>;
        type Connection<T: Portable> = dummy::Connection<T>;
        type Reader<T: Portable> = dummy::Reader<T>;
        type Writer<T: Portable> = dummy::Writer<T>;
        type Pool = dummy::Pool;

        fn process<F, A>(target: F, args: A) -> dummy::Process
        where
            F: Fn(A) + Copy + Send + 'static,
            A: Portable,
        {
            // The same compile-time check as the process backend, so code stays portable.
            const {
                assert!(
                    std::mem::size_of::<F>() == 0,
                    "a process target must be a fn item or a closure that captures nothing"
                )
            };
            dummy::Process::new(target, args)
        }
        fn queue<T: Portable>() -> std::io::Result<dummy::Queue<T>> {
            dummy::Queue::new()
        }
        fn bounded_queue<T: Portable>(maxsize: u32) -> std::io::Result<dummy::Queue<T>> {
            dummy::Queue::bounded(maxsize)
        }
        fn simple_queue<T: Portable>() -> std::io::Result<dummy::SimpleQueue<T>> {
            dummy::SimpleQueue::new()
        }
        fn joinable_queue<T: Portable>() -> std::io::Result<dummy::JoinableQueue<T>> {
            dummy::JoinableQueue::new()
        }
        fn pipe<T: Portable>(
        ) -> Result<(dummy::Connection<T>, dummy::Connection<T>), ConnectionError> {
            dummy::pipe()
        }
        fn pipe_oneway<T: Portable>(
        ) -> Result<(dummy::Reader<T>, dummy::Writer<T>), ConnectionError> {
            dummy::pipe_oneway()
        }
        fn pool(n: usize) -> Result<dummy::Pool, PoolError> {
            dummy::Pool::new(n)
        }
    }
}
