//! Accepting off the caller's thread: no client, silent or slow, holds up another.
//!
//! Each listener has one *accept thread*, started at bind, that takes connections from the
//! OS while an `accept` of its process waits (see [`State::wants`]), as they come. With an
//! authkey, each connection's handshake then runs on a short-lived
//! thread of its own, against its deadline. Handshakes in progress (*pending*) are bounded in
//! total and per peer address (an IPv4 address, an IPv6 /64 prefix; all local clients count
//! as one peer). When a bound is reached, the oldest pending handshake of that peer (or, for
//! the total bound, of the peer with the most pending) is evicted: its connection is closed
//! and nothing is reported. So a flood of silent connections holds at most the bound, each of
//! them only until newer ones push it out or its deadline passes, while a real client, whose
//! handshake takes one round trip, gets through in between (a client of this crate pushed
//! out retries). A client that has proven it holds the key is no longer pending: only the
//! listener's proof is left, and it is never evicted.
//!
//! Finished handshakes, successes and failures, wait in a queue for `accept`. Successes are
//! bounded: when [`MAX_READY`] wait, the accept thread stops taking connections (the kernel's
//! backlog holds the next ones) until `accept` takes some. Failures are reported (Python's
//! `accept` raises `AuthenticationError`) but only the latest [`MAX_READY_ERRORS`] are kept.
//! The threads of evicted handshakes are counted until they end (at once on a closed
//! connection): at most twice the total bound of handshake threads exist, beyond which the
//! accept thread waits too.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use mp_ipc::deadline::Deadline;

use super::auth::{self, TimedStream};
use super::{Address, ListenerError, SysListener, SysStream};

/// The default bound on the handshakes in progress at once, from all peers.
pub const DEFAULT_MAX_PENDING_HANDSHAKES: usize = 64;
/// The default bound on the handshakes in progress at once from one peer address.
pub const DEFAULT_MAX_PENDING_PER_PEER: usize = 16;
/// Authenticated connections waiting for `accept` before the listener stops taking more.
pub const MAX_READY: usize = 64;
/// Failed handshakes kept for `accept` to report (older ones are dropped).
pub const MAX_READY_ERRORS: usize = 16;

/// A handshake thread needs little stack: a few small buffers and an HMAC.
const HANDSHAKE_STACK: usize = 128 << 10;

/// How a listener admits new connections.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) timeout: Duration,
    pub(crate) max_pending: usize,
    pub(crate) max_per_peer: usize,
}

/// Who a connection comes from, for the per-peer bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    /// A Unix socket or named-pipe client (the same machine).
    Local,
    V4(Ipv4Addr),
    /// The /64 prefix: one host commonly holds a whole /64.
    V6([u16; 4]),
}

impl Peer {
    fn of(address: Option<&Address>) -> Self {
        match address {
            Some(Address::Tcp(a)) => match a.ip() {
                IpAddr::V4(ip) => Peer::V4(ip),
                IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
                    Some(v4) => Peer::V4(v4),
                    None => {
                        let s = ip.segments();
                        Peer::V6([s[0], s[1], s[2], s[3]])
                    }
                },
            },
            _ => Peer::Local,
        }
    }
}

struct Pending {
    id: u64,
    peer: Peer,
    /// A second handle on the connection, to close it from outside its thread.
    stop: SysStream,
}

/// A finished handshake: the authenticated stream or why it failed, and the peer.
pub(crate) struct Outcome {
    pub(crate) result: Result<SysStream, ListenerError>,
    pub(crate) peer: Option<Address>,
}

struct State {
    limits: Limits,
    /// Handshakes of clients that have not proven they hold the key: these may be evicted.
    pending: VecDeque<Pending>,
    /// Handshakes of clients that have (only the listener's proof is left): never evicted.
    verified: Vec<u64>,
    /// Handshake threads alive, pending or evicted.
    workers: usize,
    next_id: u64,
    ready: VecDeque<Outcome>,
    ready_ok: usize,
    closed: bool,
    /// `accept` calls of this process waiting in [`Shared::next`].
    waiting: usize,
    /// The process the threads run in (a forked child has none of them).
    pid: u32,
}

impl State {
    /// Evicts what must go for a new connection from `peer` to be admitted.
    fn make_room(&mut self, peer: Peer) {
        let per_peer = self.limits.max_per_peer.max(1);
        let total = self.limits.max_pending.max(1);
        let from_peer = self.pending.iter().filter(|p| p.peer == peer).count();
        let victim = if from_peer >= per_peer {
            Some(peer)
        } else if self.pending.len() >= total {
            // The peer with the most pending handshakes gives one up.
            self.pending
                .iter()
                .map(|p| p.peer)
                .max_by_key(|k| self.pending.iter().filter(|p| p.peer == *k).count())
        } else {
            None
        };
        if let Some(victim) = victim {
            if let Some(i) = self.pending.iter().position(|p| p.peer == victim) {
                if let Some(p) = self.pending.remove(i) {
                    p.stop.shutdown();
                }
            }
        }
    }

    fn push(&mut self, outcome: Outcome) {
        if outcome.result.is_ok() {
            self.ready_ok += 1;
        } else if self.ready.len() - self.ready_ok >= MAX_READY_ERRORS {
            if let Some(i) = self.ready.iter().position(|o| o.result.is_err()) {
                self.ready.remove(i);
            }
        }
        self.ready.push_back(outcome);
    }

    fn has_room(&self) -> bool {
        self.ready_ok < MAX_READY && self.workers < 2 * self.limits.max_pending.max(1)
    }

    /// Whether this process wants a connection now: some `accept` waits that what is ready
    /// will not satisfy. The listening socket may be shared with forked children (or a
    /// parent) that accept on it too; a connection taken by a process where nobody asked
    /// for one would be stolen from the process that did, whose `accept` would then wait
    /// in vain. So, as Python's `accept`, a process takes connections only when asked;
    /// until then the kernel's backlog holds them for whichever process asks first.
    /// Handshakes still pending do not count: they may never finish.
    fn wants(&self) -> bool {
        self.waiting > self.ready.len()
    }

    /// Ends everything in progress (closing, or a forked child inheriting stale state).
    fn clear(&mut self, shut_down: bool) {
        for p in self.pending.drain(..) {
            if shut_down {
                p.stop.shutdown();
            }
        }
        self.verified.clear();
        self.ready.clear();
        self.ready_ok = 0;
    }
}

/// What the accept thread, the handshake threads and `accept` share.
pub(crate) struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    authkey: Option<Arc<[u8]>>,
}

impl Shared {
    pub(crate) fn new(authkey: Option<&[u8]>, limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                limits,
                pending: VecDeque::new(),
                verified: Vec::new(),
                workers: 0,
                next_id: 0,
                ready: VecDeque::new(),
                ready_ok: 0,
                closed: false,
                waiting: 0,
                pid: std::process::id(),
            }),
            changed: Condvar::new(),
            authkey: authkey.map(Arc::from),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set_limits(&self, f: impl FnOnce(&mut Limits)) {
        f(&mut self.lock().limits);
    }

    /// Stops accepting: `next` fails with `Closed`, handshakes in progress are cut short.
    pub(crate) fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        // In a forked child that never accepted, the connections are the parent's: they
        // are only dropped here, not shut down.
        let ours = st.pid == std::process::id();
        st.clear(ours);
        self.changed.notify_all();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Whether the threads serving this state run in another process (this is a forked
    /// child); if so, forgets their state, to be served anew by this process's threads.
    pub(crate) fn adopt_after_fork(&self) -> bool {
        let mut st = self.lock();
        if st.pid == std::process::id() {
            return false;
        }
        // The parent's threads do not exist here; their connections are the parent's too,
        // and so are the `accept`s that were waiting at the fork.
        st.clear(false);
        st.workers = 0;
        st.waiting = 0;
        st.pid = std::process::id();
        true
    }

    /// The next finished handshake, waiting until `deadline`.
    pub(crate) fn next(&self, deadline: Deadline) -> Result<Outcome, ListenerError> {
        let mut st = self.lock();
        // Counted while waiting: the accept thread takes connections only then.
        st.waiting += 1;
        self.changed.notify_all();
        let outcome = loop {
            if let Some(o) = st.ready.pop_front() {
                if o.result.is_ok() {
                    st.ready_ok -= 1;
                }
                break Ok(o);
            }
            if st.closed {
                break Err(ListenerError::Closed);
            }
            st = match deadline.remaining() {
                None => self.changed.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(left) if left.is_zero() => break Err(ListenerError::Timeout),
                Some(left) => {
                    self.changed
                        .wait_timeout(st, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        };
        st.waiting -= 1;
        self.changed.notify_all();
        outcome
    }

    /// Marks handshake `id` as one of a client that holds the key: no longer evictable
    /// (unless it was evicted already).
    fn verified(&self, id: u64) {
        let mut st = self.lock();
        if let Some(i) = st.pending.iter().position(|p| p.id == id) {
            drop(st.pending.remove(i));
            st.verified.push(id);
        }
    }

    /// Records a finished handshake (`id`: of a handshake thread; `None`: no handshake).
    /// The outcome of an evicted handshake, or of one that ends after closing, is dropped.
    fn finish(&self, id: Option<u64>, outcome: Outcome) {
        let mut st = self.lock();
        if let Some(id) = id {
            st.workers = st.workers.saturating_sub(1);
            self.changed.notify_all();
            if let Some(i) = st.pending.iter().position(|p| p.id == id) {
                drop(st.pending.remove(i));
            } else if let Some(i) = st.verified.iter().position(|&v| v == id) {
                st.verified.swap_remove(i);
            } else {
                return;
            }
        }
        if !st.closed {
            st.push(outcome);
            self.changed.notify_all();
        }
    }
}

/// The accept thread: takes connections while this process wants them and there is room,
/// until the listener closes.
pub(crate) fn run(listener: Arc<SysListener>, shared: Arc<Shared>) {
    // Asked again once a connection is waiting, just before it is taken: the `accept` that
    // wanted it may have been satisfied or given up while this thread waited for one.
    let wanted = || {
        let st = shared.lock();
        !st.closed && st.wants()
    };
    loop {
        {
            let mut st = shared.lock();
            // Waits until closed, or until a connection is both wanted and room is left.
            while !(st.closed || (st.has_room() && st.wants())) {
                st = shared.changed.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            if st.closed {
                return;
            }
        }
        match listener.accept(SysListener::ACCEPT_SLICE, &wanted) {
            Ok(Some(stream)) => admit(&shared, stream),
            Ok(None) => {}
            Err(e) => {
                if shared.is_closed() {
                    return;
                }
                // Out of descriptors and the like: reported, and a pause rather than a spin.
                shared.finish(
                    None,
                    Outcome {
                        result: Err(e.into()),
                        peer: None,
                    },
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Starts the handshake of a new connection (or, without a key, makes it ready at once).
fn admit(shared: &Arc<Shared>, stream: SysStream) {
    let peer = stream.peer_address();
    let Some(key) = shared.authkey.clone() else {
        let result = stream
            .set_io_timeout(None)
            .map(|()| stream)
            .map_err(ListenerError::from);
        shared.finish(None, Outcome { result, peer });
        return;
    };
    let stop = match stream.try_clone() {
        Ok(s) => s,
        Err(e) => {
            shared.finish(
                None,
                Outcome {
                    result: Err(e.into()),
                    peer,
                },
            );
            return;
        }
    };
    let (id, timeout) = {
        let mut st = shared.lock();
        if st.closed {
            return;
        }
        let id = st.next_id;
        st.next_id += 1;
        let who = Peer::of(peer.as_ref());
        st.make_room(who);
        st.pending.push_back(Pending {
            id,
            peer: who,
            stop,
        });
        st.workers += 1;
        (id, st.limits.timeout)
    };
    let sh = shared.clone();
    let spawned = std::thread::Builder::new()
        .name("mp-listener-handshake".into())
        .stack_size(HANDSHAKE_STACK)
        .spawn(move || {
            let result = handshake(stream, &key, timeout, || sh.verified(id));
            sh.finish(Some(id), Outcome { result, peer });
        });
    if spawned.is_err() {
        // No thread: the connection (moved into the closure) is closed already.
        let mut st = shared.lock();
        st.workers = st.workers.saturating_sub(1);
        if let Some(i) = st.pending.iter().position(|p| p.id == id) {
            st.pending.remove(i);
        }
    }
}

fn handshake(
    mut stream: SysStream,
    key: &[u8],
    timeout: Duration,
    verified: impl FnOnce(),
) -> Result<SysStream, ListenerError> {
    auth::serve(&mut stream, key, Deadline::after(timeout), verified)?;
    stream.set_io_timeout(None)?;
    Ok(stream)
}
