//! The client side: a pool of authenticated connections per server, and the reference
//! counting of proxies.

use std::cell::RefCell;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use mp_ipc::deadline::Deadline;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::protocol::{Reply, Request, WireBlob};
use super::server::CallCtx;
use super::{ManagerError, RemoteError};
use crate::connection::RawConnection;
use crate::listener::{connect_raw, Address};
use crate::ConnectionError;

/// How long connecting to a server (and its handshake) may take, and how long a proxy's
/// release waits for a server that does not answer.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// Connections to one server instance. A call takes an idle connection (or opens one), so
/// threads that block in a call (a queue `get`, a lock) do not hold up each other.
pub(crate) struct Pool {
    pub(crate) address: Address,
    pub(crate) authkey: Vec<u8>,
    pub(crate) nonce: u64,
    /// Idle connections, and the process that opened them.
    idle: Mutex<(u32, Vec<RawConnection>)>,
}

/// Pools by server instance, so every proxy of one server in this process shares one.
static POOLS: Mutex<Vec<(u64, Weak<Pool>)>> = Mutex::new(Vec::new());

impl Pool {
    /// Connects to a server and learns its instance id.
    pub(crate) fn connect(
        address: &Address,
        authkey: &[u8],
        timeout: Option<Duration>,
    ) -> Result<Arc<Self>, ManagerError> {
        let deadline = Deadline::from_timeout(timeout);
        let conn = connect_raw(address, Some(authkey), timeout).map_err(ManagerError::Connect)?;
        let mut pool = Pool {
            address: address.clone(),
            authkey: authkey.to_vec(),
            nonce: 0,
            idle: Mutex::new((std::process::id(), vec![conn])),
        };
        // A server that accepted us but never answers is a timeout, not a hang.
        pool.nonce = decode_reply(&pool.request_within(&Request::Hello, deadline)?)?;
        Ok(Self::register(pool))
    }

    fn register(pool: Pool) -> Arc<Self> {
        let mut pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
        pools.retain(|(_, w)| w.strong_count() > 0);
        if let Some(p) = pools
            .iter()
            .find(|(n, _)| *n == pool.nonce)
            .and_then(|(_, w)| w.upgrade())
        {
            return p;
        }
        let p = Arc::new(pool);
        pools.push((p.nonce, Arc::downgrade(&p)));
        p
    }

    /// The pool of a server known by its instance id, made lazily (for a proxy received from
    /// elsewhere).
    fn find_or_make(address: &Address, authkey: &[u8], nonce: u64) -> Arc<Self> {
        Self::register(Pool {
            address: address.clone(),
            authkey: authkey.to_vec(),
            nonce,
            idle: Mutex::new((std::process::id(), Vec::new())),
        })
    }

    fn take(&self) -> Result<RawConnection, ManagerError> {
        {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.0 != std::process::id() {
                // A forked child: these are the parent's connections (already closed in
                // this process by the fork, or still shared with the parent). Never use or
                // close them here.
                for c in idle.1.drain(..) {
                    std::mem::forget(c);
                }
                idle.0 = std::process::id();
            }
            if let Some(c) = idle.1.pop() {
                return Ok(c);
            }
        }
        connect_raw(&self.address, Some(&self.authkey), Some(CONNECT_TIMEOUT))
            .map_err(ManagerError::Connect)
    }

    /// Sends a request and waits for its reply.
    pub(crate) fn request(&self, req: &Request) -> Result<Vec<u8>, ManagerError> {
        self.request_within(req, Deadline::NEVER)
    }

    /// Sends a request and waits for its reply until `deadline`. A connection whose reply
    /// did not come in time is closed (its reply would come later, out of turn).
    pub(crate) fn request_within(
        &self,
        req: &Request,
        deadline: Deadline,
    ) -> Result<Vec<u8>, ManagerError> {
        let bytes = postcard::to_stdvec(req).map_err(ManagerError::Encode)?;
        let conn = self.take()?;
        conn.send_bytes(&bytes).map_err(ManagerError::Connection)?;
        spin_until_readable(&conn);
        let reply = match deadline.remaining() {
            None => conn.recv_bytes(None, None),
            // A zero wait would not even look: give a reply already there its chance.
            Some(left) => conn.recv_bytes(Some(left.max(Duration::from_millis(1))), None),
        }
        .map_err(ManagerError::Connection)?;
        let reply = crate::codec::decode::<Reply>(&reply).map_err(ManagerError::Decode)?;
        // A connection the server refused (past its connection limit) is closed by it after
        // this reply: it must not be used again.
        let refused = matches!(&reply, Reply::Err(e) if e.kind == "ConnectionLimit");
        if !refused {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.0 == std::process::id() {
                idle.1.push(conn);
            }
        }
        match reply {
            Reply::Ok(v) => Ok(v),
            Reply::Err(e) => Err(ManagerError::Remote(e)),
        }
    }

    /// Runs an operation on object `id`.
    pub(crate) fn call<Op: Serialize>(&self, id: u64, op: &Op) -> Result<Vec<u8>, ManagerError> {
        let op = postcard::to_stdvec(op).map_err(ManagerError::Encode)?;
        self.request(&Request::Call {
            id,
            caller: caller_id(),
            op,
        })
    }
}

/// How long a waiting side polls before it sleeps in the kernel: 50 µs, or `MP_SPIN_US`.
/// A manager call is a round trip of a few microseconds; sleeping and being woken costs more
/// than that, so both the client (waiting for a reply) and the server (waiting for the next
/// request) look briefly first. Never past a reply that is there: it only delays going to
/// sleep.
static SPIN: mp_ipc::spin::SpinLimit =
    mp_ipc::spin::SpinLimit::new(mp_ipc::spin::GLOBAL_ENV, Duration::from_micros(50));

/// Polls `conn` without blocking for up to [`SPIN`]; returns early once it is readable.
/// Yields rather than burns: under load (more waiting threads than CPUs) the peer that must
/// answer gets the CPU.
pub(crate) fn spin_until_readable(conn: &RawConnection) {
    mp_ipc::spin::spin_until(
        SPIN.get(),
        mp_ipc::deadline::Deadline::NEVER,
        mp_ipc::spin::Pace::Yield,
        || conn.poll(Some(Duration::ZERO)).unwrap_or(true),
    );
}

pub(crate) fn decode_reply<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ManagerError> {
    crate::codec::decode(bytes).map_err(ManagerError::Decode)
}

thread_local! {
    static CALLER: u64 = {
        let mut b = [0u8; 8];
        let _ = getrandom::fill(&mut b);
        u64::from_le_bytes(b) | 1
    };
    /// While a value is encoded for a server: that server's instance id, and the ids of its
    /// proxies found inside the value.
    static OUTBOX: RefCell<Option<(Option<u64>, Vec<u64>)>> = const { RefCell::new(None) };
}

/// Names the calling thread (of this process) to the server, for lock ownership.
pub(crate) fn caller_id() -> u64 {
    CALLER.with(|c| *c) ^ (std::process::id() as u64).rotate_left(32)
}

/// Encodes `value` for the server with instance id `nonce`: its proxies of that server are
/// listed (the server takes a reference for each); proxies of other servers take a
/// reference on their own server first.
pub(crate) fn encode_for_server<T: Serialize + ?Sized>(
    value: &T,
    nonce: Option<u64>,
) -> Result<WireBlob, postcard::Error> {
    let saved = OUTBOX.with(|o| o.borrow_mut().replace((nonce, Vec::new())));
    let bytes = postcard::to_stdvec(value);
    let refs = OUTBOX.with(|o| std::mem::replace(&mut *o.borrow_mut(), saved));
    Ok(WireBlob {
        bytes: bytes?,
        refs: refs.map(|r| r.1).unwrap_or_default(),
    })
}

/// Decodes a value whose proxies each carry a reference this process takes over.
pub(crate) fn decode_value<T: DeserializeOwned>(w: &WireBlob) -> Result<T, ManagerError> {
    crate::codec::decode(&w.bytes).map_err(ManagerError::Decode)
}

/// In the server: takes a reference for each proxy listed, then decodes (the decoded
/// proxies own those references).
pub(crate) fn decode_adopting<T: DeserializeOwned>(
    w: WireBlob,
    ctx: &CallCtx<'_>,
) -> Result<T, RemoteError> {
    for (i, id) in w.refs.iter().enumerate() {
        if let Err(e) = ctx.table.incref(*id) {
            for taken in &w.refs[..i] {
                ctx.table.decref(*taken);
            }
            return Err(e);
        }
    }
    // (On a decoding error, the proxies decoded so far release their references when
    // dropped; the others stay taken: a leak, never an object freed while in use.)
    crate::codec::decode(&w.bytes).map_err(|e| RemoteError::new("DecodeError", e.to_string()))
}

/// A counted reference to one object of a manager. Dropping it releases the reference.
pub(crate) struct ProxyCore {
    pub(crate) pool: Arc<Pool>,
    pub(crate) id: u64,
    pub(crate) typeid: String,
    /// Whether this proxy holds a reference on the server (a [`detached`](Self::detached)
    /// copy, made when the manager is gone, does not).
    pub(crate) counted: bool,
}

/// The serialized form of a proxy. It carries the server's authkey, so that the receiver
/// can connect: do not store it anywhere an attacker could read it.
#[derive(Serialize, Deserialize)]
struct ProxyWire {
    address: Address,
    authkey: Vec<u8>,
    nonce: u64,
    id: u64,
    typeid: String,
}

impl ProxyCore {
    pub(crate) fn call<Op: Serialize>(&self, op: &Op) -> Result<Vec<u8>, ManagerError> {
        self.pool.call(self.id, op)
    }

    /// A second reference to the same object.
    pub(crate) fn try_clone(&self) -> Result<Self, ManagerError> {
        self.pool.request(&Request::IncRef(self.id))?;
        Ok(Self {
            pool: self.pool.clone(),
            id: self.id,
            typeid: self.typeid.clone(),
            counted: true,
        })
    }

    /// A copy that holds no reference (for `Clone` when the server cannot be asked for one:
    /// its calls fail as the original's do, and dropping it releases nothing).
    pub(crate) fn detached(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            id: self.id,
            typeid: self.typeid.clone(),
            counted: false,
        }
    }
}

impl Drop for ProxyCore {
    fn drop(&mut self) {
        // A server that is gone needs no release: the error is ignored, and never waited
        // for long (a dead server's connections show end of stream at once; one that hangs
        // is given up on after CONNECT_TIMEOUT).
        if self.counted {
            let _ = self
                .pool
                .request_within(&Request::DecRef(self.id), Deadline::after(CONNECT_TIMEOUT));
        }
    }
}

impl Serialize for ProxyCore {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Every serialized proxy carries one reference, which its receiver takes over.
        // (Process::start serializes a forked child's argument too, to learn its handles:
        // that reference is the one the child's moved copy of the proxy then owns.)
        let listed = OUTBOX.with(|o| match &mut *o.borrow_mut() {
            Some((Some(n), ids)) if *n == self.pool.nonce => {
                ids.push(self.id);
                true
            }
            _ => false,
        });
        if !listed {
            self.pool
                .request(&Request::IncRef(self.id))
                .map_err(serde::ser::Error::custom)?;
        }
        ProxyWire {
            address: self.pool.address.clone(),
            authkey: self.pool.authkey.clone(),
            nonce: self.pool.nonce,
            id: self.id,
            typeid: self.typeid.clone(),
        }
        .serialize(s)
    }
}

/// Writes the wire form of a proxy to `made`, a new object of type `typeid` (the reference
/// it carries is the one the object was made with).
pub(crate) fn serialize_new<S: Serializer>(
    made: &super::server::NewObject,
    typeid: &str,
    s: S,
) -> Result<S::Ok, S::Error> {
    ProxyWire {
        address: made.address.clone(),
        authkey: made.authkey.clone(),
        nonce: made.nonce,
        id: made.id,
        typeid: typeid.to_string(),
    }
    .serialize(s)
}

impl<'de> Deserialize<'de> for ProxyCore {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = ProxyWire::deserialize(d)?;
        Ok(Self {
            pool: Pool::find_or_make(&w.address, &w.authkey, w.nonce),
            id: w.id,
            typeid: w.typeid,
            counted: true,
        })
    }
}

impl std::fmt::Debug for ProxyCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "<{} proxy {} at {}>",
            self.typeid, self.id, self.pool.address
        )
    }
}

pub(crate) fn is_gone(e: &ManagerError) -> bool {
    matches!(
        e,
        ManagerError::Connection(ConnectionError::Eof | ConnectionError::BrokenPipe)
    )
}
