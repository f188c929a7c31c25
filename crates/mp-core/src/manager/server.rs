//! The manager's server: an object table, reference counts, and a thread per client.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::protocol::{Reply, Request, WireBlob};
use super::{ManagerError, RemoteError, Service};
use crate::connection::RawConnection;
use crate::listener::{Address, Interrupter, Listener, ListenerError, SysStream};
use mp_ipc::deadline::Deadline;

/// What a manager server grants its clients: Python's managers have no such bounds; these
/// keep one client (authenticated or not) from taking the server down for the others.
/// [`Default`] gives the documented defaults; change fields as needed:
///
/// ```
/// use mp_core::manager::ServerLimits;
/// let limits = ServerLimits {
///     max_memory: 64 << 20,
///     ..ServerLimits::default()
/// };
/// assert_eq!(limits.max_message, 256 << 20);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerLimits {
    /// The longest request the server reads and the longest reply it builds, in bytes
    /// (default 256 MiB). A longer request ends its connection; a longer reply is a
    /// `MemoryError` reply instead.
    pub max_message: u64,
    /// The bytes the server may hold for all clients together: stored values, keys, names,
    /// queued items, and a fixed amount per object (default: half the machine's physical
    /// memory, at least 256 MiB; 4 GiB if unknown). A call that would pass it fails with a
    /// remote `MemoryError`, before anything is allocated, and changes nothing.
    pub max_memory: u64,
    /// Authenticated connections served at once (default 256; each is a thread and two
    /// descriptors). A connection beyond it gets a `ConnectionLimit` error reply and is
    /// closed.
    pub max_connections: usize,
    /// Handshakes in progress at once, from all peers (default 64) and from one peer
    /// address (default 16); see [`Listener::set_max_pending_handshakes`].
    pub max_pending_handshakes: usize,
    /// See [`max_pending_handshakes`](Self::max_pending_handshakes).
    pub max_pending_per_peer: usize,
    /// How long a connection may take to authenticate (default 5 s).
    pub handshake_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_message: 256 << 20,
            max_memory: crate::sys::physical_memory().map_or(4 << 30, |m| (m / 2).max(256 << 20)),
            max_connections: 256,
            max_pending_handshakes: crate::listener::DEFAULT_MAX_PENDING_HANDSHAKES,
            max_pending_per_peer: crate::listener::DEFAULT_MAX_PENDING_PER_PEER,
            handshake_timeout: crate::listener::DEFAULT_LISTENER_HANDSHAKE_TIMEOUT,
        }
    }
}

/// The bytes charged for an object in the table, besides what it stores.
const OBJECT_COST: u64 = 512;
/// The bytes charged for a stored value, besides its encoding.
const BLOB_COST: u64 = std::mem::size_of::<Blob>() as u64 + 32;
/// The bytes charged for each key of a dict or name of a namespace, besides its length.
pub(crate) const KEY_COST: u64 = 96;

/// The memory the server holds for its clients, against [`ServerLimits::max_memory`].
pub(crate) struct Budget {
    used: AtomicU64,
    limit: AtomicU64,
}

impl Budget {
    fn new(limit: u64) -> Arc<Self> {
        Arc::new(Self {
            used: AtomicU64::new(0),
            limit: AtomicU64::new(limit),
        })
    }

    /// Takes `n` bytes, or fails with a `MemoryError` if that would pass the limit.
    pub(crate) fn charge(self: &Arc<Self>, n: u64) -> Result<Charge, RemoteError> {
        self.take(n)?;
        Ok(Charge {
            budget: self.clone(),
            n,
        })
    }

    /// Gives back `n` bytes taken with [`take`](Self::take).
    pub(crate) fn give_back(&self, n: u64) {
        self.used.fetch_sub(n, Ordering::SeqCst);
    }

    /// Takes `n` bytes without a [`Charge`] (give them back with [`give_back`](Self::give_back)).
    pub(crate) fn take(&self, n: u64) -> Result<(), RemoteError> {
        let limit = self.limit.load(Ordering::Relaxed);
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| {
                u.checked_add(n).filter(|&t| t <= limit)
            })
            .map(drop)
            .map_err(|used| memory_error(n, used, limit))
    }

    /// Fails with a `MemoryError` unless `n` more bytes fit now (nothing is taken).
    pub(crate) fn check(&self, n: u64) -> Result<(), RemoteError> {
        let (used, limit) = (
            self.used.load(Ordering::SeqCst),
            self.limit.load(Ordering::Relaxed),
        );
        match used.checked_add(n) {
            Some(t) if t <= limit => Ok(()),
            _ => Err(memory_error(n, used, limit)),
        }
    }
}

fn memory_error(n: u64, used: u64, limit: u64) -> RemoteError {
    RemoteError::new(
        "MemoryError",
        format!(
            "the manager's memory limit of {limit} bytes would be passed: {n} bytes more \
             asked, {used} in use"
        ),
    )
}

/// A `MemoryError` for a size that cannot even be computed.
pub(crate) fn too_big(what: &str) -> RemoteError {
    RemoteError::new("MemoryError", format!("{what}: the size overflows"))
}

/// Bytes taken from the [`Budget`], given back when dropped.
pub(crate) struct Charge {
    budget: Arc<Budget>,
    n: u64,
}

impl Charge {
    /// Takes `n` more bytes into this charge.
    pub(crate) fn add(&mut self, n: u64) -> Result<(), RemoteError> {
        self.budget.take(n)?;
        self.n += n;
        Ok(())
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.give_back(self.n);
    }
}

/// One object of the table.
struct Entry {
    obj: Arc<dyn Object>,
    refs: usize,
    _charge: Charge,
}

/// All objects of a server, by id, and the memory budget of what they hold.
pub(crate) struct Table {
    objects: Mutex<HashMap<u64, Entry>>,
    next: AtomicU64,
    pub(crate) budget: Arc<Budget>,
}

impl Table {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Entry>> {
        self.objects.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn insert(&self, obj: Arc<dyn Object>, charge: Charge) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(
            id,
            Entry {
                obj,
                refs: 1,
                _charge: charge,
            },
        );
        id
    }

    pub(crate) fn get(&self, id: u64) -> Result<Arc<dyn Object>, RemoteError> {
        self.lock()
            .get(&id)
            .map(|e| e.obj.clone())
            .ok_or_else(|| RemoteError::new("KeyError", format!("no object with id {id}")))
    }

    pub(crate) fn incref(&self, id: u64) -> Result<(), RemoteError> {
        match self.lock().get_mut(&id) {
            Some(e) => {
                e.refs = e
                    .refs
                    .checked_add(1)
                    .ok_or_else(|| RemoteError::new("OverflowError", "too many references"))?;
                Ok(())
            }
            None => Err(RemoteError::new(
                "KeyError",
                format!("no object with id {id}"),
            )),
        }
    }

    pub(crate) fn decref(&self, id: u64) {
        let dropped = {
            let mut t = self.lock();
            match t.get_mut(&id) {
                Some(e) if e.refs > 1 => {
                    e.refs -= 1;
                    None
                }
                Some(_) => t.remove(&id),
                None => None,
            }
        };
        // Dropped outside the table's lock: the object may release nested objects.
        drop(dropped);
    }

    fn count(&self) -> usize {
        self.lock().len()
    }
}

/// A reference held by the server itself (a proxy stored inside a container).
pub(crate) struct Ref {
    table: Arc<Table>,
    id: u64,
}

impl Drop for Ref {
    fn drop(&mut self) {
        self.table.decref(self.id);
    }
}

/// A stored value: its bytes and the references it holds.
pub(crate) struct Blob {
    pub(crate) bytes: Vec<u8>,
    refs: Vec<Ref>,
    charge: Charge,
}

impl Blob {
    /// What holding a value of these sizes costs against the budget.
    fn cost(bytes: usize, refs: usize) -> u64 {
        BLOB_COST
            .saturating_add(bytes as u64)
            .saturating_add((refs as u64).saturating_mul(std::mem::size_of::<Ref>() as u64))
    }

    /// What this value costs against the budget (a copy costs the same).
    pub(crate) fn charged(&self) -> u64 {
        self.charge.n
    }

    /// Charges `n` more bytes to this value (a key stored with it, say).
    pub(crate) fn charge_more(&mut self, n: u64) -> Result<(), RemoteError> {
        self.charge.add(n)
    }

    /// Takes over the references a client sent with a value, charging it to the budget.
    pub(crate) fn from_wire(w: WireBlob, ctx: &CallCtx<'_>) -> Result<Self, RemoteError> {
        let charge = ctx
            .table
            .budget
            .charge(Self::cost(w.bytes.capacity(), w.refs.len()))?;
        let mut refs = Vec::with_capacity(w.refs.len());
        for id in w.refs {
            ctx.table.incref(id)?;
            refs.push(Ref {
                table: ctx.table.clone(),
                id,
            });
        }
        Ok(Self {
            bytes: w.bytes,
            refs,
            charge,
        })
    }

    /// A copy for a client, with one new reference per proxy inside, which the client's
    /// decoded proxies take over.
    pub(crate) fn to_wire(&self) -> WireBlob {
        for r in &self.refs {
            let _ = r.table.incref(r.id);
        }
        WireBlob {
            bytes: self.bytes.clone(),
            refs: self.refs.iter().map(|r| r.id).collect(),
        }
    }

    /// A second stored copy, with its own references (and charge).
    pub(crate) fn duplicate(&self, ctx: &CallCtx<'_>) -> Result<Self, RemoteError> {
        let extra = self
            .charge
            .n
            .saturating_sub(Self::cost(self.bytes.capacity(), self.refs.len()));
        let mut copy = Self::from_wire(
            WireBlob {
                bytes: self.bytes.clone(),
                refs: self.refs.iter().map(|r| r.id).collect(),
            },
            ctx,
        )?;
        copy.charge_more(extra)?;
        Ok(copy)
    }

    /// Hands the value to a client without copying: its references become the client's.
    pub(crate) fn into_wire(self) -> WireBlob {
        let Blob { bytes, refs, .. } = self;
        let refs = refs
            .into_iter()
            .map(|r| {
                let id = r.id;
                std::mem::forget(r);
                id
            })
            .collect();
        WireBlob { bytes, refs }
    }
}

/// What a call can ask of the server: the table, who calls, whether the caller is still
/// there.
pub(crate) struct CallCtx<'a> {
    pub(crate) table: &'a Arc<Table>,
    /// The server's state, for objects a call makes (see [`serve_new`]).
    shared: &'a Arc<Shared>,
    pub(crate) caller: u64,
    conn: &'a RawConnection,
    max_message: u64,
}

impl CallCtx<'_> {
    /// Fails with a `MemoryError` unless a reply of about `bytes` bytes may be built (checked
    /// before building it).
    pub(crate) fn check_reply(&self, bytes: u64) -> Result<(), RemoteError> {
        if bytes > self.max_message {
            return Err(RemoteError::new(
                "MemoryError",
                format!(
                    "a reply of {bytes} bytes would exceed the manager's message limit of {}",
                    self.max_message
                ),
            ));
        }
        Ok(())
    }

    /// Whether the client that made this call has gone (its connection shows end of stream
    /// while it should be waiting for our reply).
    pub(crate) fn client_gone(&self) -> bool {
        self.conn.poll(Some(Duration::ZERO)).unwrap_or(true)
    }
}

/// How a bounded wait ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Waited {
    Ready,
    TimedOut,
    ClientGone,
}

/// Waits on `cv` until `ready` holds, the deadline passes, or the caller disappears (checked
/// every 100 ms), so a server thread never waits for a client that is no longer there.
pub(crate) fn wait_until<'a, T>(
    cv: &Condvar,
    mut g: MutexGuard<'a, T>,
    timeout: Option<Duration>,
    ctx: &CallCtx<'_>,
    mut ready: impl FnMut(&mut T) -> bool,
) -> (MutexGuard<'a, T>, Waited) {
    let deadline = Deadline::from_timeout(timeout);
    loop {
        if ready(&mut g) {
            return (g, Waited::Ready);
        }
        let step = deadline.remaining_capped(Duration::from_millis(100));
        if step.is_zero() {
            return (g, Waited::TimedOut);
        }
        g = cv
            .wait_timeout(g, step)
            .unwrap_or_else(|e| e.into_inner())
            .0;
        if ctx.client_gone() && !ready(&mut g) {
            return (g, Waited::ClientGone);
        }
    }
}

/// An object served by a manager.
pub(crate) trait Object: Send + Sync {
    /// Runs one encoded operation, returning the encoded result.
    fn call(&self, op: &[u8], ctx: &CallCtx<'_>) -> Result<Vec<u8>, RemoteError>;

    /// The lock of a lock object (Lock, RLock, Condition), which a condition made over it
    /// shares; `None` for other objects.
    fn lock_core(&self) -> Option<Arc<super::builtins::LockCore>> {
        None
    }
}

/// Decodes an operation; in a server thread, the values in it are charged to the memory
/// budget while they are decoded, and running out of it is a `MemoryError`.
pub(crate) fn decode_op<T: serde::de::DeserializeOwned>(op: &[u8]) -> Result<T, RemoteError> {
    let r = crate::codec::decode(op);
    if let Some(e) = super::protocol::decoded() {
        return Err(e);
    }
    r.map_err(|e| {
        RemoteError::new(
            "RemoteError",
            format!("unknown method or bad arguments: {e}"),
        )
    })
}

pub(crate) fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, RemoteError> {
    postcard::to_stdvec(v).map_err(|e| RemoteError::new("EncodeError", e.to_string()))
}

type Factory =
    Box<dyn Fn(WireBlob, &CallCtx<'_>) -> Result<Arc<dyn Object>, RemoteError> + Send + Sync>;

/// The types a manager server can create, by name (Python's `BaseManager.register`).
pub struct Registry {
    factories: HashMap<String, Factory>,
}

impl Registry {
    pub(crate) fn new() -> Self {
        let mut r = Self {
            factories: HashMap::new(),
        };
        super::builtins::register(&mut r);
        super::pool::register(&mut r);
        r.register::<super::shared_memory::SegmentKeeper>();
        r
    }

    pub(crate) fn add(
        &mut self,
        name: &str,
        f: impl Fn(WireBlob, &CallCtx<'_>) -> Result<Arc<dyn Object>, RemoteError>
            + Send
            + Sync
            + 'static,
    ) {
        self.factories.insert(name.to_string(), Box::new(f));
    }

    /// Registers a user type under [`Service::NAME`]. Clients then make objects of it with
    /// [`Manager::create`](super::Manager::create) and call it through a
    /// [`Proxy`](super::Proxy).
    pub fn register<S: Service>(&mut self) -> &mut Self {
        self.add(S::NAME, |init, ctx| {
            let init: S::Init = super::client::decode_adopting(init, ctx)?;
            Ok(Arc::new(ServiceObject(Mutex::new(S::create(init)?))))
        });
        self
    }
}

/// A user service: one call at a time.
struct ServiceObject<S>(Mutex<S>);

impl<S: Service> Object for ServiceObject<S> {
    fn call(&self, op: &[u8], ctx: &CallCtx<'_>) -> Result<Vec<u8>, RemoteError> {
        let w: WireBlob = decode_op(op)?;
        let request: S::Request = super::client::decode_adopting(w, ctx).map_err(|e| {
            RemoteError::new(
                "RemoteError",
                format!("unknown method or bad arguments: {}", e.message),
            )
        })?;
        let response = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .call(request)?;
        // The new objects inside the response (`Proxy::serve`) join the table as it is
        // encoded; if encoding fails, they go again.
        let (w, made, failed) = serving(ctx.shared, || {
            super::client::encode_for_server(&response, None)
        });
        drop(response);
        let w = match (w, failed) {
            (Ok(w), None) => w,
            (w, failed) => {
                for id in made {
                    ctx.table.decref(id);
                }
                return Err(failed.unwrap_or_else(|| {
                    RemoteError::new(
                        "EncodeError",
                        w.err().map(|e| e.to_string()).unwrap_or_default(),
                    )
                }));
            }
        };
        // The proxies inside the response are handed to the client: one reference each.
        for id in &w.refs {
            ctx.table.incref(*id)?;
        }
        encode(&w)
    }
}

/// While a service's response is encoded: the server, the new objects made so far, and the
/// error that stopped one.
struct Serving {
    shared: Arc<Shared>,
    made: Vec<u64>,
    failed: Option<RemoteError>,
}

thread_local! {
    static SERVING: std::cell::RefCell<Option<Serving>> = const { std::cell::RefCell::new(None) };
}

/// Runs `encode` (of a service's response) with [`serve_new`] enabled; returns its result,
/// the ids of the objects made (each with the one reference the caller takes over), and
/// the error that stopped the making of one.
fn serving<R>(
    shared: &Arc<Shared>,
    encode: impl FnOnce() -> R,
) -> (R, Vec<u64>, Option<RemoteError>) {
    let saved = SERVING.with(|s| {
        s.borrow_mut().replace(Serving {
            shared: shared.clone(),
            made: Vec::new(),
            failed: None,
        })
    });
    let r = encode();
    let done = SERVING.with(|s| std::mem::replace(&mut *s.borrow_mut(), saved));
    let done = done.expect("set above");
    (r, done.made, done.failed)
}

/// Where a new object lives: what its proxy's wire form names.
pub(crate) struct NewObject {
    pub(crate) id: u64,
    pub(crate) address: Address,
    pub(crate) authkey: Vec<u8>,
    pub(crate) nonce: u64,
}

/// Makes `value` an object of the server whose service call is encoding its response
/// (Python's `method_to_typeid`): its type must be registered with the server, as Python
/// requires of a typeid. Outside of that encoding (a proxy made with `Proxy::serve` and sent
/// anywhere else) it is an error.
pub(crate) fn serve_new<S: Service>(value: S) -> Result<NewObject, String> {
    SERVING.with(|s| {
        let mut s = s.borrow_mut();
        let Some(sv) = s.as_mut() else {
            return Err(
                "a proxy made with Proxy::serve can only be sent as part of a \
                        service's response, by the manager's server"
                    .to_string(),
            );
        };
        let made = (|| {
            if !sv.shared.registry.factories.contains_key(S::NAME) {
                return Err(RemoteError::new(
                    "KeyError",
                    format!(
                        "no type registered as {:?}: a service's response can hold new \
                         objects of registered types only",
                        S::NAME
                    ),
                ));
            }
            let charge = sv.shared.table.budget.charge(OBJECT_COST)?;
            let obj = Arc::new(ServiceObject(Mutex::new(value)));
            Ok(sv.shared.table.insert(obj, charge))
        })();
        match made {
            Ok(id) => {
                sv.made.push(id);
                Ok(NewObject {
                    id,
                    address: sv.shared.address.clone(),
                    authkey: sv.shared.authkey.clone(),
                    nonce: sv.shared.nonce,
                })
            }
            Err(e) => {
                let text = e.to_string();
                sv.failed.get_or_insert(e);
                Err(text)
            }
        }
    })
}

/// The state shared by the server's threads.
pub(crate) struct Shared {
    table: Arc<Table>,
    registry: Registry,
    nonce: u64,
    /// Where clients reach the server and the key they use (named in the proxies of the
    /// objects a service call makes).
    address: Address,
    authkey: Vec<u8>,
    limits: ServerLimits,
    stopping: AtomicBool,
    /// A second handle on each client's connection, to end it at shutdown.
    clients: Mutex<HashMap<u64, SysStream>>,
    next_client: AtomicU64,
    names: Mutex<HashMap<String, Blob>>,
    interrupter: Interrupter,
}

impl Shared {
    fn clients(&self) -> MutexGuard<'_, HashMap<u64, SysStream>> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A bound manager server, not yet serving. [`serve_forever`](Self::serve_forever) serves
/// until a client asks for shutdown.
pub struct Server {
    listener: Listener,
    registry: Registry,
    nonce: u64,
    authkey: Vec<u8>,
    limits: ServerLimits,
}

impl Server {
    /// Binds `address` with `authkey` and the built-in types plus those of `S`, with the
    /// default [`ServerLimits`].
    pub fn bind<S: super::Services>(
        address: &Address,
        authkey: &[u8],
    ) -> Result<Self, ManagerError> {
        let mut registry = Registry::new();
        S::register(&mut registry);
        let listener = Listener::bind(address, Some(authkey)).map_err(ManagerError::Connect)?;
        let mut n = [0u8; 8];
        let _ = getrandom::fill(&mut n);
        let mut server = Self {
            listener,
            registry,
            nonce: u64::from_le_bytes(n),
            authkey: authkey.to_vec(),
            limits: ServerLimits::default(),
        };
        server.set_limits(ServerLimits::default());
        Ok(server)
    }

    /// Replaces the server's [`ServerLimits`] (before it serves).
    ///
    /// ```
    /// use mp_core::manager::{Builtins, Server, ServerLimits};
    /// let mut server = Server::bind::<Builtins>(&"127.0.0.1:0".parse().unwrap(), b"key").unwrap();
    /// server.set_limits(ServerLimits { max_connections: 16, ..ServerLimits::default() });
    /// ```
    pub fn set_limits(&mut self, limits: ServerLimits) {
        self.limits = limits;
        self.listener
            .set_handshake_timeout(limits.handshake_timeout);
        self.listener
            .set_max_pending_handshakes(limits.max_pending_handshakes, limits.max_pending_per_peer);
    }

    /// The limits the server will apply.
    pub fn limits(&self) -> &ServerLimits {
        &self.limits
    }

    /// The address clients connect to.
    pub fn address(&self) -> &Address {
        self.listener.address()
    }

    pub(crate) fn nonce(&self) -> u64 {
        self.nonce
    }

    /// Serves clients, a thread each, until one sends a shutdown. Then stops listening
    /// (removing a Unix socket file), disconnects every client and returns.
    ///
    /// Connections authenticate off this thread (see [`Listener`]): silent or slow ones
    /// hold up nobody. Each authenticated connection is served on its own thread, at most
    /// [`ServerLimits::max_connections`] at once.
    pub fn serve_forever(self) -> Result<(), ManagerError> {
        let Server {
            listener,
            registry,
            nonce,
            authkey,
            limits,
        } = self;
        let shared = Arc::new(Shared {
            table: Arc::new(Table {
                objects: Mutex::new(HashMap::new()),
                next: AtomicU64::new(1),
                budget: Budget::new(limits.max_memory),
            }),
            registry,
            nonce,
            address: listener.address().clone(),
            authkey,
            limits,
            stopping: AtomicBool::new(false),
            clients: Mutex::new(HashMap::new()),
            next_client: AtomicU64::new(0),
            names: Mutex::new(HashMap::new()),
            interrupter: listener.interrupter(),
        });
        while !shared.stopping.load(Ordering::SeqCst) {
            let stream = match listener.accept_stream(Deadline::NEVER) {
                Ok(s) => s,
                Err(ListenerError::Closed) => break,
                // A client that failed its handshake: its business.
                Err(ListenerError::Authentication(_)) | Err(ListenerError::Timeout) => continue,
                Err(e) => {
                    if shared.stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    // Out of descriptors and the like (the listener pauses after these).
                    eprintln!("mp manager: accept failed: {e}");
                    continue;
                }
            };
            start_client(&shared, stream);
        }
        drop(listener);
        shared
            .names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        for (_, s) in shared.clients().drain() {
            s.shutdown();
        }
        Ok(())
    }
}

/// Registers an authenticated connection and starts its thread; beyond
/// [`ServerLimits::max_connections`], answers its first request with an error instead.
fn start_client(shared: &Arc<Shared>, stream: SysStream) {
    let me = shared.next_client.fetch_add(1, Ordering::Relaxed);
    let over = {
        let mut clients = shared.clients();
        if clients.len() >= shared.limits.max_connections {
            true
        } else {
            match stream.try_clone() {
                Ok(keep) => {
                    clients.insert(me, keep);
                    false
                }
                Err(_) => true,
            }
        }
    };
    let Ok(conn) = RawConnection::from_handle(stream.into_handle()) else {
        shared.clients().remove(&me);
        return;
    };
    let spawned = if over {
        let max = shared.limits.max_connections;
        std::thread::Builder::new()
            .name("mp-manager-refuse".into())
            .stack_size(128 << 10)
            .spawn(move || refuse_client(conn, max))
    } else {
        let sh = shared.clone();
        std::thread::Builder::new()
            .name("mp-manager-client".into())
            .spawn(move || serve_client(sh, me, conn))
    };
    if spawned.is_err() {
        // No thread for it: its connection was dropped with the closure; close ours.
        shared.clients().remove(&me);
    }
}

/// Answers the first request of a connection past the limit with an error, then closes it.
/// (Reading the request first keeps the reply from being lost: a socket closed with unread
/// bytes is reset, and the peer may never see what was sent.)
fn refuse_client(mut conn: RawConnection, max: usize) {
    conn.set_max_len(1 << 16);
    if conn.recv_bytes(Some(Duration::from_secs(5)), None).is_err() {
        return;
    }
    let reply = Reply::Err(RemoteError::new(
        "ConnectionLimit",
        format!("the manager serves at most {max} connections at once"),
    ));
    let _ = conn.send_bytes(&encode(&reply).unwrap_or_default());
}

/// Forgets a client when its thread ends, however it ends (its second handle is closed).
struct Registered<'a> {
    shared: &'a Shared,
    me: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        let keep = self.shared.clients().remove(&self.me);
        drop(keep);
    }
}

fn serve_client(shared: Arc<Shared>, me: u64, mut conn: RawConnection) {
    let _registered = Registered {
        shared: &shared,
        me,
    };
    conn.set_max_len(shared.limits.max_message);
    // Any failure to read (end of stream, a truncated or oversized frame) ends this client
    // only.
    while let Ok(bytes) = {
        super::client::spin_until_readable(&conn);
        conn.recv_bytes(None, None)
    } {
        let reply = match super::protocol::decoding_with(&shared.table.budget, || {
            let r = crate::codec::decode::<Request>(&bytes);
            match super::protocol::decoded() {
                Some(e) => Err(e),
                None => r.map_err(|e| {
                    RemoteError::new("ProtocolError", format!("undecodable request: {e}"))
                }),
            }
        }) {
            Ok(Request::Shutdown) => {
                let _ = conn.send_bytes(&encode(&Reply::Ok(Vec::new())).unwrap_or_default());
                // This client is not disconnected with the others: on Windows that
                // (DisconnectNamedPipe) would discard the reply before the client reads it.
                shared.clients().remove(&me);
                shared.stopping.store(true, Ordering::SeqCst);
                shared.interrupter.interrupt();
                break;
            }
            Ok(req) => {
                drop(bytes);
                // A panic (a bug, or a user service's) fails this call only: the client
                // gets an error reply, the other clients and objects go on.
                std::panic::catch_unwind(AssertUnwindSafe(|| {
                    super::protocol::decoding_with(&shared.table.budget, || {
                        handle(&shared, req, &conn)
                    })
                }))
                .unwrap_or_else(|p| {
                    Reply::Err(RemoteError::new(
                        "InternalError",
                        format!("the call failed in the server: {}", panic_message(&*p)),
                    ))
                })
            }
            Err(e) => Reply::Err(e),
        };
        let out = match postcard::to_stdvec(&reply) {
            Ok(out) if out.len() as u64 <= shared.limits.max_message => out,
            Ok(out) => reply_too_large(out.len(), &shared.limits),
            Err(e) => encode(&Reply::Err(RemoteError::new("EncodeError", e.to_string())))
                .unwrap_or_default(),
        };
        drop(reply);
        if conn.send_bytes(&out).is_err() {
            break;
        }
    }
}

fn reply_too_large(len: usize, limits: &ServerLimits) -> Vec<u8> {
    encode(&Reply::Err(RemoteError::new(
        "MemoryError",
        format!(
            "a reply of {len} bytes exceeds the manager's message limit of {}",
            limits.max_message
        ),
    )))
    .unwrap_or_default()
}

/// The text of a panic's payload.
fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

fn handle(shared: &Arc<Shared>, req: Request, conn: &RawConnection) -> Reply {
    let table = &shared.table;
    let ctx = |caller| CallCtx {
        table,
        shared,
        caller,
        conn,
        max_message: shared.limits.max_message,
    };
    let result = (|| -> Result<Vec<u8>, RemoteError> {
        match req {
            Request::Hello => encode(&shared.nonce),
            Request::Create { typeid, init } => {
                let f = shared.registry.factories.get(&typeid).ok_or_else(|| {
                    RemoteError::new("KeyError", format!("no type registered as {typeid:?}"))
                })?;
                let charge = table.budget.charge(OBJECT_COST)?;
                let obj = f(init, &ctx(0))?;
                encode(&table.insert(obj, charge))
            }
            Request::Call { id, caller, op } => {
                let obj = table.get(id)?;
                obj.call(&op, &ctx(caller))
            }
            Request::IncRef(id) => {
                table.incref(id)?;
                Ok(Vec::new())
            }
            Request::DecRef(id) => {
                table.decref(id);
                Ok(Vec::new())
            }
            Request::Count => encode(&table.count()),
            Request::Publish { name, value } => {
                let mut blob = Blob::from_wire(value, &ctx(0))?;
                blob.charge_more(KEY_COST.saturating_add(name.len() as u64))?;
                let mut names = shared.names.lock().unwrap_or_else(|e| e.into_inner());
                names
                    .try_reserve(1)
                    .map_err(|_| too_big("publishing a name"))?;
                let old = names.insert(name, blob);
                drop(names);
                drop(old);
                Ok(Vec::new())
            }
            Request::Lookup { name } => {
                let names = shared.names.lock().unwrap_or_else(|e| e.into_inner());
                let found = names.get(&name);
                if let Some(b) = found {
                    ctx(0).check_reply(b.bytes.len() as u64)?;
                }
                encode(&found.map(Blob::to_wire))
            }
            Request::Shutdown => Err(RemoteError::new(
                "ProtocolError",
                "shutdown is handled by the connection",
            )),
        }
    })();
    match result {
        Ok(v) => Reply::Ok(v),
        Err(e) => Reply::Err(e),
    }
}
