//! The manager's server: an object table, reference counts, and a thread per client.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::protocol::{Reply, Request, WireBlob};
use super::{ManagerError, RemoteError, Service};
use crate::connection::RawConnection;
use crate::listener::{authenticate_server, Address, Listener, SysStream};

/// How many accepted connections may be in their handshake at once; more are closed at
/// once, so a flood of silent connections cannot exhaust the server's threads.
pub(crate) const MAX_PENDING_HANDSHAKES: usize = 64;
/// The longest request a server accepts.
pub(crate) const MAX_REQUEST: u64 = 256 << 20;

/// One object of the table.
struct Entry {
    obj: Arc<dyn Object>,
    refs: usize,
}

/// All objects of a server, by id.
pub(crate) struct Table {
    objects: Mutex<HashMap<u64, Entry>>,
    next: AtomicU64,
}

impl Table {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Entry>> {
        self.objects.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn insert(&self, obj: Arc<dyn Object>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, Entry { obj, refs: 1 });
        id
    }

    fn get(&self, id: u64) -> Result<Arc<dyn Object>, RemoteError> {
        self.lock()
            .get(&id)
            .map(|e| e.obj.clone())
            .ok_or_else(|| RemoteError::new("KeyError", format!("no object with id {id}")))
    }

    pub(crate) fn incref(&self, id: u64) -> Result<(), RemoteError> {
        match self.lock().get_mut(&id) {
            Some(e) => {
                e.refs += 1;
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
}

impl Blob {
    /// Takes over the references a client sent with a value.
    pub(crate) fn from_wire(w: WireBlob, ctx: &CallCtx<'_>) -> Result<Self, RemoteError> {
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

    /// A second stored copy, with its own references.
    pub(crate) fn duplicate(&self, ctx: &CallCtx<'_>) -> Result<Self, RemoteError> {
        Self::from_wire(
            WireBlob {
                bytes: self.bytes.clone(),
                refs: self.refs.iter().map(|r| r.id).collect(),
            },
            ctx,
        )
    }

    /// Hands the value to a client without copying: its references become the client's.
    pub(crate) fn into_wire(self) -> WireBlob {
        let refs = self
            .refs
            .into_iter()
            .map(|r| {
                let id = r.id;
                std::mem::forget(r);
                id
            })
            .collect();
        WireBlob {
            bytes: self.bytes,
            refs,
        }
    }
}

/// What a call can ask of the server: the table, who calls, whether the caller is still
/// there.
pub(crate) struct CallCtx<'a> {
    pub(crate) table: &'a Arc<Table>,
    pub(crate) caller: u64,
    conn: &'a RawConnection,
}

impl CallCtx<'_> {
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
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        if ready(&mut g) {
            return (g, Waited::Ready);
        }
        let slice = Duration::from_millis(100);
        let step = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return (g, Waited::TimedOut);
                }
                left.min(slice)
            }
            None => slice,
        };
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
}

pub(crate) fn decode_op<T: serde::de::DeserializeOwned>(op: &[u8]) -> Result<T, RemoteError> {
    postcard::from_bytes(op).map_err(|e| {
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
        let w = super::client::encode_for_server(&response, None)
            .map_err(|e| RemoteError::new("EncodeError", e.to_string()))?;
        // The proxies inside the response are handed to the client: one reference each.
        for id in &w.refs {
            ctx.table.incref(*id)?;
        }
        encode(&w)
    }
}

/// The state shared by the server's threads.
pub(crate) struct Shared {
    table: Arc<Table>,
    registry: Registry,
    authkey: Vec<u8>,
    nonce: u64,
    pending: AtomicUsize,
    stopping: AtomicBool,
    clients: Mutex<HashMap<u64, SysStream>>,
    next_client: AtomicU64,
    address: Address,
    names: Mutex<HashMap<String, Blob>>,
}

/// A bound manager server, not yet serving. [`serve_forever`](Self::serve_forever) serves
/// until a client asks for shutdown.
pub struct Server {
    listener: Listener,
    shared: Arc<Shared>,
}

impl Server {
    /// Binds `address` with `authkey` and the built-in types plus those of `S`.
    pub fn bind<S: super::Services>(
        address: &Address,
        authkey: &[u8],
    ) -> Result<Self, ManagerError> {
        let mut registry = Registry::new();
        S::register(&mut registry);
        let listener = Listener::bind(address, Some(authkey)).map_err(ManagerError::Connect)?;
        let mut n = [0u8; 8];
        let _ = getrandom::fill(&mut n);
        let shared = Arc::new(Shared {
            table: Arc::new(Table {
                objects: Mutex::new(HashMap::new()),
                next: AtomicU64::new(1),
            }),
            registry,
            authkey: authkey.to_vec(),
            nonce: u64::from_le_bytes(n),
            pending: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            clients: Mutex::new(HashMap::new()),
            next_client: AtomicU64::new(0),
            address: listener.address().clone(),
            names: Mutex::new(HashMap::new()),
        });
        Ok(Self { listener, shared })
    }

    /// The address clients connect to.
    pub fn address(&self) -> &Address {
        self.listener.address()
    }

    pub(crate) fn nonce(&self) -> u64 {
        self.shared.nonce
    }

    /// Serves clients, a thread each, until one sends a shutdown. Then stops listening
    /// (removing a Unix socket file), disconnects every client and returns.
    pub fn serve_forever(self) -> Result<(), ManagerError> {
        let Server { listener, shared } = self;
        while !shared.stopping.load(Ordering::SeqCst) {
            let stream = match listener.accept_stream(None) {
                Ok(Some(s)) => s,
                Ok(None) => continue,
                Err(e) => {
                    if shared.stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    // Out of descriptors and the like: wait a little rather than spin.
                    eprintln!("mp manager: accept failed: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            if shared.stopping.load(Ordering::SeqCst) {
                break;
            }
            if shared.pending.fetch_add(1, Ordering::SeqCst) >= MAX_PENDING_HANDSHAKES {
                shared.pending.fetch_sub(1, Ordering::SeqCst);
                drop(stream);
                continue;
            }
            let shared = shared.clone();
            let spawned = std::thread::Builder::new()
                .name("mp-manager-client".into())
                .spawn(move || serve_client(shared, stream));
            if spawned.is_err() {
                // No thread for it: the stream was dropped with the closure.
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        drop(listener);
        shared
            .names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        for (_, s) in shared
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
        {
            s.shutdown();
        }
        Ok(())
    }
}

fn serve_client(shared: Arc<Shared>, stream: SysStream) {
    let keep = stream.try_clone();
    let conn = authenticate_server(
        stream,
        Some(&shared.authkey),
        crate::listener::DEFAULT_HANDSHAKE_TIMEOUT.min(Duration::from_secs(5)),
    );
    shared.pending.fetch_sub(1, Ordering::SeqCst);
    let (mut conn, keep) = match (conn, keep) {
        (Ok(c), Ok(k)) => (c, k),
        _ => return,
    };
    conn.set_max_len(MAX_REQUEST);
    let me = shared.next_client.fetch_add(1, Ordering::Relaxed);
    shared
        .clients
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(me, keep);
    // Any failure to read (end of stream, a truncated or oversized frame) ends this client
    // only.
    while let Ok(bytes) = {
        super::client::spin_until_readable(&conn);
        conn.recv_bytes(None, None)
    } {
        let reply = match postcard::from_bytes::<Request>(&bytes) {
            Ok(Request::Shutdown) => {
                let _ = conn.send_bytes(&encode(&Reply::Ok(Vec::new())).unwrap_or_default());
                // This client is not disconnected with the others: on Windows that
                // (DisconnectNamedPipe) would discard the reply before the client reads it.
                shared
                    .clients
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&me);
                shared.stopping.store(true, Ordering::SeqCst);
                // Wake the accept loop.
                let _ = crate::listener::connect_raw(
                    &shared.address,
                    None,
                    Some(Duration::from_secs(1)),
                );
                break;
            }
            Ok(req) => handle(&shared, req, &conn),
            Err(e) => Reply::Err(RemoteError::new(
                "ProtocolError",
                format!("undecodable request: {e}"),
            )),
        };
        let Ok(out) = postcard::to_stdvec(&reply) else {
            break;
        };
        if conn.send_bytes(&out).is_err() {
            break;
        }
    }
    shared
        .clients
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&me);
}

fn handle(shared: &Shared, req: Request, conn: &RawConnection) -> Reply {
    let table = &shared.table;
    let result = (|| -> Result<Vec<u8>, RemoteError> {
        match req {
            Request::Hello => encode(&shared.nonce),
            Request::Create { typeid, init } => {
                let f = shared.registry.factories.get(&typeid).ok_or_else(|| {
                    RemoteError::new("KeyError", format!("no type registered as {typeid:?}"))
                })?;
                let ctx = CallCtx {
                    table,
                    caller: 0,
                    conn,
                };
                let obj = f(init, &ctx)?;
                encode(&table.insert(obj))
            }
            Request::Call { id, caller, op } => {
                let obj = table.get(id)?;
                let ctx = CallCtx {
                    table,
                    caller,
                    conn,
                };
                obj.call(&op, &ctx)
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
                let ctx = CallCtx {
                    table,
                    caller: 0,
                    conn,
                };
                let blob = Blob::from_wire(value, &ctx)?;
                let old = shared
                    .names
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(name, blob);
                drop(old);
                Ok(Vec::new())
            }
            Request::Lookup { name } => encode(
                &shared
                    .names
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&name)
                    .map(Blob::to_wire),
            ),
            Request::Shutdown => unreachable!("handled by the caller"),
        }
    })();
    match result {
        Ok(v) => Reply::Ok(v),
        Err(e) => Reply::Err(e),
    }
}
