//! A server process that owns shared objects and serves them to other processes through
//! typed proxies: Python's `multiprocessing.Manager()`, `SyncManager` and `BaseManager`.
//!
//! [`Manager::start`] starts the server as a child process listening on a fresh local
//! socket, authenticated with this process's [`authkey`](crate::ProcessInfo::authkey);
//! [`ManagerBuilder`] picks another address (TCP, to be reached from other hosts), key,
//! start method, user [`Services`] or an initializer. [`Manager::connect`] reaches a server
//! that already runs (Python's `BaseManager.connect`), and [`Server`] runs one in the current
//! process ([`Server::serve_forever`]).
//!
//! Built-in types: [`dict`](Manager::dict), [`list`](Manager::list), [`array`](Manager::array),
//! [`namespace`](Manager::namespace), [`value`](Manager::value), [`queue`](Manager::queue),
//! [`lock`](Manager::lock), [`rlock`](Manager::rlock), [`event`](Manager::event),
//! [`semaphore`](Manager::semaphore), [`bounded_semaphore`](Manager::bounded_semaphore),
//! [`condition`](Manager::condition), [`barrier`](Manager::barrier), and a
//! [`pool`](Manager::pool) of worker processes in the server ([`PoolProxy`], Python's
//! `manager.Pool()`). User types implement [`Service`] (a typed request/response interface
//! over serde) and are registered by a [`Services`] type; a service's response may hold
//! proxies to new objects made with [`Proxy::serve`] (Python's `method_to_typeid`).
//! [`SharedMemoryManager`] is Python's manager of shared-memory segments.
//!
//! How it differs from Python:
//! - values live in the server in their encoded form, so the server needs no knowledge of
//!   their types; keys and searched-for values compare by encoding, and a list's `sort` is
//!   done by the client;
//! - proxies are typed; a proxy can be passed to a child process, sent on a connection, or
//!   stored in another manager object, and every copy holds a reference: the server frees an
//!   object when the last reference goes (cycles, such as a list that contains itself, are
//!   never freed, as in Python);
//! - a serialized proxy carries the manager's authkey (so that its receiver can connect):
//!   keep serialized proxies out of files and logs;
//! - a proxy whose manager is gone fails with [`ManagerError::Connection`] (end of stream,
//!   broken pipe, refused connection), never hangs; a server thread waiting on behalf of a
//!   client that left (a blocked `get`, `acquire`, `wait`) gives up within 100 ms, so the
//!   item or the lock is not lost;
//! - the server serves each client on its own thread: a slow or blocked client holds up
//!   nobody else. Connections authenticate off the accept path, a bounded number at a time
//!   (the oldest pending handshake makes way for a new connection), within 5 s each; a
//!   request or reply may not exceed 256 MiB, and what the server holds for all clients
//!   together is bounded by [`ServerLimits::max_memory`] (a call that would pass it is a
//!   remote `MemoryError`, as Python's `MemoryError`, and changes nothing). A client that
//!   breaks these rules gets an error or is disconnected; the others are unaffected. See
//!   [`ServerLimits`] and `docs/security.md`;
//! - the authkey decides who may connect, not what an authenticated client may do: any
//!   client holding the key can call any method of any object it can name (but not crash
//!   the server or make it hang for the others; a panic while serving a call is an
//!   `InternalError` reply for that call);
//! - the server's objects never run client code, with one exception: a manager's pool runs
//!   the task functions its clients name, in its worker processes, and only for clients
//!   that run the server's own executable (checked by its SHA-256 on every request that
//!   names a function; another one is [`ManagerError::OtherExecutable`]). Python trusts an
//!   authenticated client that sends pickled callables the same way.
//!
//! ```
//! use mp_core::manager::{DictProxy, Manager};
//! use mp_core::Process;
//!
//! fn worker(d: DictProxy<String, i32>) {
//!     d.set(&"child".into(), &2).unwrap();
//! }
//!
//! let manager = Manager::start().unwrap();
//! let d = manager.dict::<String, i32>().unwrap();
//! d.set(&"parent".into(), &1).unwrap();
//! let mut p = Process::new(worker, d.clone());
//! p.start().unwrap();
//! p.join().unwrap();
//! assert_eq!(d.get(&"child".into()).unwrap(), Some(2));
//! assert_eq!(d.len().unwrap(), 2);
//! ```

mod builtins;
pub(crate) mod client;
pub(crate) mod pool;
pub(crate) mod protocol;
mod proxies;
pub(crate) mod server;
mod shared_memory;

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use self::client::{decode_reply, encode_for_server, Pool, ProxyCore};
pub use self::pool::PoolProxy;
use self::protocol::{Request, WireBlob};
pub use self::proxies::{
    ArrayProxy, BarrierProxy, DictProxy, EventProxy, ListProxy, LockProxy, LockProxyGuard,
    NamespaceProxy, Proxy, QueueProxy, QueueProxyError, SemaphoreProxy, ValueProxy,
};
pub use self::server::{Registry, Server, ServerLimits};
pub use self::shared_memory::{SharedMemoryManager, SharedMemoryManagerError};
use crate::listener::{Address, ListenerError};
use crate::{ConnectionError, Context, Process, ProcessError};

/// An error raised by the server while running a call, sent back to the caller (Python
/// re-raises the remote exception; `kind` names its type, such as `KeyError`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct RemoteError {
    /// The kind of error, by Python's names where one fits (`KeyError`, `IndexError`,
    /// `ValueError`, `RuntimeError`, `RemoteError` for an unknown method).
    pub kind: String,
    /// What went wrong.
    pub message: String,
}

impl RemoteError {
    /// An error of `kind` with `message`.
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            message: message.into(),
        }
    }
}

/// Errors of managers and proxies.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// The call ran in the server and failed there.
    #[error("remote error: {0}")]
    Remote(RemoteError),
    /// Could not connect or authenticate (a wrong key is
    /// `Connect(ListenerError::Authentication(_))`, Python's `AuthenticationError`).
    #[error("cannot connect to the manager: {0}")]
    Connect(ListenerError),
    /// The connection to the server failed: it is gone (`Eof`, `BrokenPipe`) or sent
    /// something unreadable.
    #[error("manager connection failed: {0}")]
    Connection(ConnectionError),
    /// A value could not be encoded; nothing was sent.
    #[error("cannot encode the value: {0}")]
    Encode(postcard::Error),
    /// A reply could not be decoded as the expected type.
    #[error("cannot decode the reply: {0}")]
    Decode(crate::DecodeError),
    /// The server process could not be started or stopped.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// The server did not start within its time.
    #[error("the manager server did not start: {0}")]
    Start(String),
    /// A barrier wait failed because the barrier is broken (Python: `BrokenBarrierError`).
    #[error("the barrier is broken")]
    BrokenBarrier,
    /// The manager's pool refused this process: it runs another executable than the
    /// manager's server (their [fingerprints] differ), so the functions it names would
    /// not be the server's. See [`Manager::pool`].
    ///
    /// [fingerprints]: Manager::pool
    #[error("the manager's pool refuses this client: {0}")]
    OtherExecutable(String),
}

impl ManagerError {
    /// Whether this is an authentication failure (a wrong authkey).
    pub fn is_authentication(&self) -> bool {
        matches!(
            self,
            ManagerError::Connect(ListenerError::Authentication(_))
        )
    }
}

/// A user type served by a manager (an object registered with Python's
/// `BaseManager.register`). Its methods are the variants of `Request`: exactly what the
/// enum names is exposed, nothing else.
///
/// ```
/// use mp_core::manager::{RemoteError, Service};
/// use serde::{Deserialize, Serialize};
///
/// struct Counter(i64);
///
/// #[derive(Serialize, Deserialize)]
/// enum CounterOp { Add(i64), Get }
///
/// impl Service for Counter {
///     const NAME: &'static str = "Counter";
///     type Init = i64;
///     type Request = CounterOp;
///     type Response = i64;
///     fn create(start: i64) -> Result<Self, RemoteError> { Ok(Counter(start)) }
///     fn call(&mut self, op: CounterOp) -> Result<i64, RemoteError> {
///         if let CounterOp::Add(n) = op { self.0 += n }
///         Ok(self.0)
///     }
/// }
/// ```
pub trait Service: Send + Sized + 'static {
    /// The name clients ask for (Python's `typeid`).
    const NAME: &'static str;
    /// The constructor's argument.
    type Init: Serialize + DeserializeOwned;
    /// A call: usually an enum with one variant per method.
    type Request: Serialize + DeserializeOwned;
    /// A call's result.
    type Response: Serialize + DeserializeOwned;
    /// Makes an object (runs in the server).
    fn create(init: Self::Init) -> Result<Self, RemoteError>;
    /// Runs one call (in the server; one call at a time per object).
    fn call(&mut self, request: Self::Request) -> Result<Self::Response, RemoteError>;
}

/// The user types a manager serves besides the built-ins: the counterpart of a
/// `BaseManager` subclass with its `register` calls. Implemented by a marker type, so that
/// a spawned server process finds the same registrations.
pub trait Services: 'static {
    /// Registers the types, with [`Registry::register`].
    fn register(registry: &mut Registry);
}

/// Only the built-in types (Python's `SyncManager`).
#[derive(Debug)]
pub enum Builtins {}

impl Services for Builtins {
    fn register(_: &mut Registry) {}
}

/// A handle on a manager server: started by this process (which then shuts it down when
/// the handle is dropped) or connected to.
pub struct Manager {
    pool: Arc<Pool>,
    process: Option<Process>,
    /// How long `shutdown` waits for the server process before terminating it.
    shutdown_timeout: Duration,
}

/// The default `shutdown_timeout` (Python's is 1 s; a loaded machine needs more for a clean
/// exit, and a server that answered the shutdown request exits by itself).
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// What the parent tells the server process.
#[derive(Serialize, Deserialize)]
struct ServerArgs<A> {
    address: Address,
    authkey: Vec<u8>,
    limits: ServerLimits,
    report: crate::Writer<Result<(Address, u64), String>>,
    init: A,
}

fn no_init(_: ()) {}

fn server_main<S, F, A>(args: ServerArgs<A>)
where
    S: Services,
    F: Fn(A) + Copy + Send + 'static,
{
    crate::sys::ignore_interrupts();
    let mut server = match Server::bind::<S>(&args.address, &args.authkey) {
        Ok(s) => s,
        Err(e) => {
            let _ = args.report.send(&Err(e.to_string()));
            std::process::exit(1);
        }
    };
    server.set_limits(args.limits);
    const { assert!(std::mem::size_of::<F>() == 0) };
    // SAFETY: F is zero-sized (checked at compile time): a fn item or capture-free closure,
    // whose one value has no bytes; this is how the process module re-creates targets too.
    let f: F = unsafe { std::mem::zeroed() };
    f(args.init);
    let _ = args
        .report
        .send(&Ok((server.address().clone(), server.nonce())));
    drop(args.report);
    let _ = server.serve_forever();
}

/// Configures a manager before [`start`](Self::start): address, key, start method and user
/// services `S`.
pub struct ManagerBuilder<S: Services = Builtins> {
    address: Option<Address>,
    authkey: Option<Vec<u8>>,
    context: Option<Context>,
    limits: Option<ServerLimits>,
    start_timeout: Duration,
    shutdown_timeout: Duration,
    _s: PhantomData<fn() -> S>,
}

impl<S: Services> ManagerBuilder<S> {
    /// A builder with the defaults: a fresh local socket, this process's authkey, the
    /// default start method.
    pub fn new() -> Self {
        Self {
            address: None,
            authkey: None,
            context: None,
            limits: None,
            start_timeout: Duration::from_secs(30),
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            _s: PhantomData,
        }
    }

    /// Listens on `address` (for instance `127.0.0.1:0` or `0.0.0.0:50000` for TCP).
    pub fn address(mut self, address: Address) -> Self {
        self.address = Some(address);
        self
    }

    /// Uses `authkey` instead of this process's key.
    pub fn authkey(mut self, authkey: &[u8]) -> Self {
        self.authkey = Some(authkey.to_vec());
        self
    }

    /// Starts the server with this context's start method.
    pub fn context(mut self, context: Context) -> Self {
        self.context = Some(context);
        self
    }

    /// What the server grants its clients (default: [`ServerLimits::default`]).
    ///
    /// ```
    /// use mp_core::manager::{Manager, ServerLimits};
    /// let limits = ServerLimits { max_memory: 1 << 20, ..ServerLimits::default() };
    /// let m = Manager::builder::<mp_core::manager::Builtins>().limits(limits).start().unwrap();
    /// let l = m.list::<String>(&[]).unwrap();
    /// let err = l.append(&"x".repeat(2 << 20)).unwrap_err();
    /// assert!(err.to_string().contains("MemoryError"));
    /// assert_eq!(l.len().unwrap(), 0); // the server goes on
    /// ```
    pub fn limits(mut self, limits: ServerLimits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// How long [`Manager::shutdown`] (and dropping the manager) waits for the server
    /// process to exit before it terminates it (Python's `shutdown_timeout`; the default is
    /// 5 s, Python's 1 s).
    ///
    /// ```
    /// use std::time::Duration;
    /// let mut m = mp_core::manager::Manager::builder::<mp_core::manager::Builtins>()
    ///     .shutdown_timeout(Duration::from_secs(5))
    ///     .start()
    ///     .unwrap();
    /// m.shutdown().unwrap();
    /// ```
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Starts the server process and connects to it.
    pub fn start(self) -> Result<Manager, ManagerError> {
        self.start_with_initializer(no_init, ())
    }

    /// Like [`start`](Self::start), running `initializer(args)` once in the server process
    /// before it serves (Python's `start(initializer, initargs)`). `initializer` must be a
    /// `fn` item or a closure that captures nothing (checked at compile time).
    pub fn start_with_initializer<F, A>(
        self,
        initializer: F,
        args: A,
    ) -> Result<Manager, ManagerError>
    where
        F: Fn(A) + Copy + Send + 'static,
        A: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = initializer;
        let authkey = self
            .authkey
            .unwrap_or_else(|| crate::current_process().authkey);
        let address = self.address.unwrap_or_else(Address::unique_local);
        let (rx, tx) = crate::pipe_oneway()?;
        let args = ServerArgs {
            address,
            authkey: authkey.clone(),
            limits: self.limits.unwrap_or_default(),
            report: tx,
            init: args,
        };
        let mut p = Process::new(server_main::<S, F, A>, args).with_name("SyncManager");
        if let Some(ctx) = self.context {
            p = p.with_context(ctx);
        }
        p.start()?;
        let reported: Result<(Address, u64), String> = match rx.recv_timeout(self.start_timeout) {
            Ok(r) => r,
            Err(e) => {
                let _ = p.kill();
                let _ = p.join_timeout(Duration::from_secs(5));
                return Err(ManagerError::Start(e.to_string()));
            }
        };
        let (address, _nonce) = match reported {
            Ok(a) => a,
            Err(e) => {
                let _ = p.join_timeout(Duration::from_secs(5));
                return Err(ManagerError::Start(e));
            }
        };
        let pool = Pool::connect(&address, &authkey, Some(client::CONNECT_TIMEOUT))?;
        Ok(Manager {
            pool,
            process: Some(p),
            shutdown_timeout: self.shutdown_timeout,
        })
    }
}

impl<S: Services> Default for ManagerBuilder<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl Manager {
    /// Starts a manager with the built-in types on a fresh local socket (Python's
    /// `multiprocessing.Manager()`).
    pub fn start() -> Result<Self, ManagerError> {
        ManagerBuilder::<Builtins>::new().start()
    }

    /// A builder, for an address, a key, a start method or user services.
    pub fn builder<S: Services>() -> ManagerBuilder<S> {
        ManagerBuilder::new()
    }

    /// Connects to a running server (Python's `BaseManager(address, authkey).connect()`).
    /// Dropping the handle does not stop that server; [`shutdown`](Self::shutdown) does.
    pub fn connect(address: &Address, authkey: &[u8]) -> Result<Self, ManagerError> {
        Self::connect_timeout(address, authkey, client::CONNECT_TIMEOUT)
    }

    /// Like [`connect`](Self::connect), bounding the connection, the handshake and the
    /// server's first answer by `timeout` (`connect` allows 20 s): a server that accepts
    /// but never answers is an error, not a hang.
    ///
    /// ```
    /// use std::time::Duration;
    /// use mp_core::manager::Manager;
    /// let m = Manager::start().unwrap();
    /// let key = mp_core::current_process().authkey;
    /// let again = Manager::connect_timeout(m.address(), &key, Duration::from_secs(5)).unwrap();
    /// assert_eq!(again.object_count().unwrap(), 0);
    /// ```
    pub fn connect_timeout(
        address: &Address,
        authkey: &[u8],
        timeout: Duration,
    ) -> Result<Self, ManagerError> {
        Ok(Self {
            pool: Pool::connect(address, authkey, Some(timeout))?,
            process: None,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
        })
    }

    /// Where the server listens.
    pub fn address(&self) -> &Address {
        &self.pool.address
    }

    /// The server process, when this handle started it.
    pub fn process(&self) -> Option<&Process> {
        self.process.as_ref()
    }

    /// How many objects the server holds (0 once every proxy is gone).
    pub fn object_count(&self) -> Result<usize, ManagerError> {
        decode_reply(&self.pool.request(&Request::Count)?)
    }

    /// Asks the server to stop, and waits for its process (if this handle started it; it is
    /// terminated if it has not exited within the
    /// [`shutdown_timeout`](ManagerBuilder::shutdown_timeout), then killed if it still has
    /// not after 5 s). Proxies then fail with
    /// [`ManagerError::Connection`] or [`ManagerError::Connect`].
    pub fn shutdown(&mut self) -> Result<(), ManagerError> {
        let r = self.pool.request(&Request::Shutdown).map(drop);
        if let Some(p) = self.process.take() {
            if p.join_timeout(self.shutdown_timeout).is_err() {
                let _ = p.terminate();
                if p.join_timeout(Duration::from_secs(5)).is_err() {
                    let _ = p.kill();
                    let _ = p.join_timeout(Duration::from_secs(5));
                }
            }
        }
        match r {
            Err(e) if client::is_gone(&e) => Ok(()),
            r => r,
        }
    }

    fn create_raw(&self, typeid: &str, init: WireBlob) -> Result<ProxyCore, ManagerError> {
        let id: u64 = decode_reply(&self.pool.request(&Request::Create {
            typeid: typeid.into(),
            init,
        })?)?;
        Ok(ProxyCore {
            pool: self.pool.clone(),
            id,
            typeid: typeid.into(),
            counted: true,
        })
    }

    fn create_plain<T: Serialize>(
        &self,
        typeid: &str,
        init: &T,
    ) -> Result<ProxyCore, ManagerError> {
        let w = encode_for_server(init, Some(self.pool.nonce)).map_err(ManagerError::Encode)?;
        self.create_raw(typeid, w)
    }

    /// Publishes `value` (typically a proxy) under `name` in the server, so that a client
    /// that knows only the address, the key and the name can [`lookup`](Self::lookup) it:
    /// the counterpart of Python's `register('get_queue', callable=lambda: queue)` in the
    /// remote-manager example. The server keeps the objects inside alive while published;
    /// publishing again under the name replaces the value.
    pub fn publish<T: Serialize>(&self, name: &str, value: &T) -> Result<(), ManagerError> {
        let value =
            encode_for_server(value, Some(self.pool.nonce)).map_err(ManagerError::Encode)?;
        self.pool
            .request(&Request::Publish {
                name: name.into(),
                value,
            })
            .map(drop)
    }

    /// The value published under `name`, if any.
    pub fn lookup<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, ManagerError> {
        let w: Option<WireBlob> =
            decode_reply(&self.pool.request(&Request::Lookup { name: name.into() })?)?;
        w.map(|w| client::decode_value(&w)).transpose()
    }

    /// Makes an object of a registered user type.
    pub fn create<S: Service>(&self, init: &S::Init) -> Result<Proxy<S>, ManagerError> {
        Ok(Proxy::from_core(self.create_plain(S::NAME, init)?))
    }

    /// An empty dict.
    pub fn dict<K, V>(&self) -> Result<DictProxy<K, V>, ManagerError> {
        Ok(DictProxy::from_core(self.create_plain("dict", &())?))
    }

    /// A dict holding `items` (Python's `m.dict(mapping)` or `m.dict(pairs)`).
    ///
    /// ```
    /// let m = mp_core::manager::Manager::start().unwrap();
    /// let d = m.dict_from([("a".to_string(), 1), ("b".to_string(), 2)]).unwrap();
    /// assert_eq!(d.get(&"b".to_string()).unwrap(), Some(2));
    /// ```
    pub fn dict_from<K, V, I>(&self, items: I) -> Result<DictProxy<K, V>, ManagerError>
    where
        K: Serialize + DeserializeOwned,
        V: Serialize + DeserializeOwned,
        I: IntoIterator<Item = (K, V)>,
    {
        let d = self.dict()?;
        let items: Vec<(K, V)> = items.into_iter().collect();
        d.update(items.iter().map(|(k, v)| (k, v)))?;
        Ok(d)
    }

    /// A list holding `items`.
    pub fn list<T: Serialize>(&self, items: &[T]) -> Result<ListProxy<T>, ManagerError> {
        let items = items
            .iter()
            .map(|v| encode_for_server(v, Some(self.pool.nonce)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ManagerError::Encode)?;
        let w = WireBlob {
            bytes: postcard::to_stdvec(&items).map_err(ManagerError::Encode)?,
            refs: Vec::new(),
        };
        Ok(ListProxy::from_core(self.create_raw("list", w)?))
    }

    /// A fixed-length array holding `items` (Python's `Manager().Array`).
    pub fn array<T: Serialize>(&self, items: &[T]) -> Result<ArrayProxy<T>, ManagerError> {
        Ok(ArrayProxy::from_list(self.list(items)?))
    }

    /// An empty namespace.
    pub fn namespace(&self) -> Result<NamespaceProxy, ManagerError> {
        Ok(NamespaceProxy::from_core(
            self.create_plain("namespace", &())?,
        ))
    }

    /// A value holding `v`.
    pub fn value<T: Serialize>(&self, v: &T) -> Result<ValueProxy<T>, ManagerError> {
        let inner = encode_for_server(v, Some(self.pool.nonce)).map_err(ManagerError::Encode)?;
        let w = WireBlob {
            bytes: postcard::to_stdvec(&inner).map_err(ManagerError::Encode)?,
            refs: Vec::new(),
        };
        Ok(ValueProxy::from_core(self.create_raw("value", w)?))
    }

    /// A FIFO queue holding at most `maxsize` items (0: unbounded).
    pub fn queue<T>(&self, maxsize: usize) -> Result<QueueProxy<T>, ManagerError> {
        Ok(QueueProxy::from_core(self.create_plain("queue", &maxsize)?))
    }

    /// A lock.
    pub fn lock(&self) -> Result<LockProxy, ManagerError> {
        Ok(LockProxy::from_core(self.create_plain("lock", &false)?))
    }

    /// A recursive lock (the owning thread may acquire it again).
    pub fn rlock(&self) -> Result<LockProxy, ManagerError> {
        Ok(LockProxy::from_core(self.create_plain("lock", &true)?))
    }

    /// A condition variable with its own recursive lock: `acquire`, then `wait`/`notify`.
    pub fn condition(&self) -> Result<LockProxy, ManagerError> {
        self.rlock()
    }

    /// A condition variable over `lock`, a lock of this manager (Python's
    /// `m.Condition(lock)`): acquiring the condition acquires `lock` itself, so holders of
    /// either contend for the one lock in the server. Its waiters are its own: notifying it
    /// wakes waiters of this condition only, not of another condition over the same lock.
    /// `lock` may be a [`lock`](Self::lock), an [`rlock`](Self::rlock) (a `wait` then
    /// releases every level and restores them, as Python's does) or a
    /// [`condition`](Self::condition)'s lock. A lock of another manager is a remote
    /// `ValueError`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let m = mp_core::manager::Manager::start().unwrap();
    /// let lock = m.lock().unwrap();
    /// let cond = m.condition_with(&lock).unwrap();
    /// cond.acquire().unwrap();
    /// assert!(lock.locked().unwrap(), "the condition holds the lock itself");
    /// assert!(!lock.try_acquire().unwrap());
    /// // Nobody notifies: the wait times out, with the lock released meanwhile and held again.
    /// assert!(!cond.wait(Some(Duration::from_millis(10))).unwrap());
    /// cond.release().unwrap();
    /// assert!(lock.try_acquire().unwrap());
    /// lock.release().unwrap();
    /// ```
    pub fn condition_with(&self, lock: &LockProxy) -> Result<LockProxy, ManagerError> {
        if lock.core().pool.nonce != self.pool.nonce {
            return Err(ManagerError::Remote(RemoteError::new(
                "ValueError",
                "the lock of a condition must belong to the same manager",
            )));
        }
        Ok(LockProxy::from_core(
            self.create_plain("condition_over", &lock.id())?,
        ))
    }

    /// An event, initially clear.
    pub fn event(&self) -> Result<EventProxy, ManagerError> {
        Ok(EventProxy::from_core(self.create_plain("event", &())?))
    }

    /// A semaphore with initial value `value`.
    pub fn semaphore(&self, value: usize) -> Result<SemaphoreProxy, ManagerError> {
        Ok(SemaphoreProxy::from_core(
            self.create_plain("semaphore", &(value, None::<usize>))?,
        ))
    }

    /// A semaphore that may not be released above `value`.
    pub fn bounded_semaphore(&self, value: usize) -> Result<SemaphoreProxy, ManagerError> {
        Ok(SemaphoreProxy::from_core(
            self.create_plain("semaphore", &(value, Some(value)))?,
        ))
    }

    /// A barrier for `parties` callers.
    pub fn barrier(&self, parties: usize) -> Result<BarrierProxy, ManagerError> {
        Ok(BarrierProxy::from_core(
            self.create_plain("barrier", &parties)?,
        ))
    }

    /// A barrier whose `wait(None)` gives up after `timeout` (Python's
    /// `m.Barrier(parties, timeout=t)`); a wait that times out breaks it, as in Python.
    ///
    /// ```
    /// use std::time::Duration;
    /// let m = mp_core::manager::Manager::start().unwrap();
    /// let b = m.barrier_with_timeout(2, Duration::from_millis(50)).unwrap();
    /// assert!(b.wait(None).is_err()); // nobody else came: timed out, broken
    /// assert!(b.broken().unwrap());
    /// ```
    pub fn barrier_with_timeout(
        &self,
        parties: usize,
        timeout: Duration,
    ) -> Result<BarrierProxy, ManagerError> {
        Ok(BarrierProxy::from_core(self.create_plain(
            "barrier_with_timeout",
            &(parties, timeout),
        )?))
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        if self.process.is_some() {
            let _ = self.shutdown();
        }
    }
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("address", &self.pool.address)
            .field("started_here", &self.process.is_some())
            .finish()
    }
}

impl From<ConnectionError> for ManagerError {
    fn from(e: ConnectionError) -> Self {
        ManagerError::Connection(e)
    }
}
