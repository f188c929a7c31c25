//! The server side of the built-in types.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::protocol::*;
use super::server::{
    decode_op, encode, too_big, wait_until, Blob, CallCtx, Object, Registry, Waited, KEY_COST,
};
use super::RemoteError;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn err(kind: &str, msg: impl Into<String>) -> RemoteError {
    RemoteError::new(kind, msg)
}

fn init<T: serde::de::DeserializeOwned>(w: &WireBlob) -> Result<T, RemoteError> {
    decode_op(&w.bytes)
}

/// Room for `n` more items in a vector, or a `MemoryError` (nothing allocated).
fn reserve<T>(v: &mut Vec<T>, n: usize) -> Result<(), RemoteError> {
    v.try_reserve(n).map_err(|_| too_big("growing a list"))
}

/// Values received in one call, stored: each charged to the budget, all or none.
fn store_all(ws: Vec<WireBlob>, ctx: &CallCtx<'_>) -> Result<Vec<Blob>, RemoteError> {
    let mut out = Vec::new();
    reserve(&mut out, ws.len())?;
    for w in ws {
        out.push(Blob::from_wire(w, ctx)?);
    }
    Ok(out)
}

/// Encodes the wire form of `blobs` for a reply, once its size is known to be allowed.
fn reply_all<'a>(
    blobs: impl Iterator<Item = &'a Blob> + Clone,
    ctx: &CallCtx<'_>,
) -> Result<Vec<u8>, RemoteError> {
    let size = blobs
        .clone()
        .fold(0u64, |n, b| n.saturating_add(b.bytes.len() as u64 + 16));
    ctx.check_reply(size)?;
    encode(&blobs.map(Blob::to_wire).collect::<Vec<_>>())
}

/// `a + b`, or a remote `OverflowError`.
fn add(a: usize, b: usize, what: &str) -> Result<usize, RemoteError> {
    a.checked_add(b)
        .ok_or_else(|| err("OverflowError", format!("{what} would overflow")))
}

pub(crate) fn register(r: &mut Registry) {
    r.add("dict", |_, _| Ok(Arc::new(Dict::default())));
    r.add("list", |w, ctx| {
        let items: Vec<WireBlob> = init(&w)?;
        Ok(Arc::new(List(Mutex::new(store_all(items, ctx)?))))
    });
    r.add("namespace", |_, _| Ok(Arc::new(Namespace::default())));
    r.add("value", |w, ctx| {
        let v: WireBlob = init(&w)?;
        Ok(Arc::new(Value(Mutex::new(Blob::from_wire(v, ctx)?))))
    });
    r.add("queue", |w, _| {
        let maxsize: usize = init(&w)?;
        Ok(Arc::new(Queue {
            maxsize,
            state: Mutex::new(QState::default()),
            cv: Condvar::new(),
        }))
    });
    r.add("lock", |w, _| {
        let recursive: bool = init(&w)?;
        Ok(Arc::new(LockObj {
            core: Arc::new(LockCore {
                recursive,
                state: Mutex::new(LState::default()),
                cv: Condvar::new(),
            }),
            key: 0,
        }))
    });
    // A condition over the lock of another object (Python's `m.Condition(lock)`): it shares
    // that object's lock, with waiters of its own.
    r.add("condition_over", |w, ctx| {
        let id: u64 = init(&w)?;
        let core = ctx
            .table
            .get(id)?
            .lock_core()
            .ok_or_else(|| err("TypeError", format!("object {id} is not a lock")))?;
        let key = {
            let mut g = lock(&core.state);
            g.next_cond = g.next_cond.wrapping_add(1).max(1);
            g.next_cond
        };
        Ok(Arc::new(LockObj { core, key }))
    });
    r.add("event", |_, _| {
        Ok(Arc::new(Event(Mutex::new(false), Condvar::new())))
    });
    r.add("semaphore", |w, _| {
        let (value, bound): (usize, Option<usize>) = init(&w)?;
        Ok(Arc::new(Semaphore {
            bound,
            value: Mutex::new(value),
            cv: Condvar::new(),
        }))
    });
    r.add("barrier", |w, _| {
        let parties: usize = init(&w)?;
        if parties == 0 {
            return Err(err("ValueError", "a barrier needs at least one party"));
        }
        Ok(Arc::new(Barrier {
            parties,
            default_timeout: None,
            state: Mutex::new(BState::default()),
            cv: Condvar::new(),
        }))
    });
    r.add("barrier_with_timeout", |w, _| {
        let (parties, timeout): (usize, std::time::Duration) = init(&w)?;
        if parties == 0 {
            return Err(err("ValueError", "a barrier needs at least one party"));
        }
        Ok(Arc::new(Barrier {
            parties,
            default_timeout: Some(timeout),
            state: Mutex::new(BState::default()),
            cv: Condvar::new(),
        }))
    });
}

/// Python's negative indices; `None` when out of range.
fn index(len: usize, i: i64) -> Option<usize> {
    let i = if i < 0 { i + len as i64 } else { i };
    (0..len as i64).contains(&i).then_some(i as usize)
}

/// Python's slice clamping.
fn clamp(len: usize, i: i64) -> usize {
    let i = if i < 0 { i + len as i64 } else { i };
    i.clamp(0, len as i64) as usize
}

#[derive(Default)]
struct DictState {
    map: HashMap<Vec<u8>, (u64, Blob)>,
    order: BTreeMap<u64, Vec<u8>>,
    next: u64,
}

impl DictState {
    /// Stores `v` under `k`; the key (kept twice) is charged to the value.
    fn set(&mut self, k: Vec<u8>, mut v: Blob) -> Result<(), RemoteError> {
        v.charge_more(KEY_COST.saturating_add(2 * k.len() as u64))?;
        if let Some(slot) = self.map.get_mut(&k) {
            slot.1 = v;
            return Ok(());
        }
        self.map
            .try_reserve(1)
            .map_err(|_| too_big("growing a dict"))?;
        let seq = self.next;
        self.next = seq
            .checked_add(1)
            .ok_or_else(|| err("OverflowError", "too many insertions"))?;
        self.order.insert(seq, k.clone());
        self.map.insert(k, (seq, v));
        Ok(())
    }

    fn remove(&mut self, k: &[u8]) -> Option<Blob> {
        let (seq, v) = self.map.remove(k)?;
        self.order.remove(&seq);
        Some(v)
    }
}

#[derive(Default)]
struct Dict(Mutex<DictState>);

impl Object for Dict {
    fn call(&self, op: &[u8], ctx: &CallCtx<'_>) -> Result<Vec<u8>, RemoteError> {
        let op: DictOp = decode_op(op)?;
        let mut d = lock(&self.0);
        match op {
            DictOp::Len => encode(&d.map.len()),
            DictOp::Get(k) => {
                let v = d.map.get(&k).map(|v| &v.1);
                ctx.check_reply(v.map_or(0, |b| b.bytes.len() as u64))?;
                encode(&v.map(Blob::to_wire))
            }
            DictOp::Set(k, v) => {
                let v = Blob::from_wire(v, ctx)?;
                d.set(k, v)?;
                encode(&())
            }
            DictOp::Del(k) => {
                let old = d.remove(&k);
                drop(d);
                encode(&old.is_some())
            }
            DictOp::Contains(k) => encode(&d.map.contains_key(&k)),
            DictOp::Pop(k) => {
                let old = d.remove(&k);
                drop(d);
                encode(&old.map(Blob::into_wire))
            }
            DictOp::PopItem => {
                let last = d.order.iter().next_back().map(|(_, k)| k.clone());
                let item = last.and_then(|k| d.remove(&k).map(|v| (k, v.into_wire())));
                drop(d);
                encode(&item)
            }
            DictOp::SetDefault(k, v) => {
                if !d.map.contains_key(&k) {
                    let v = Blob::from_wire(v, ctx)?;
                    d.set(k.clone(), v)?;
                }
                let v = &d
                    .map
                    .get(&k)
                    .ok_or_else(|| err("KeyError", "the key vanished"))?
                    .1;
                ctx.check_reply(v.bytes.len() as u64)?;
                encode(&v.to_wire())
            }
            DictOp::Update(items) => {
                for (k, v) in items {
                    let v = Blob::from_wire(v, ctx)?;
                    d.set(k, v)?;
                }
                encode(&())
            }
            DictOp::Keys => {
                let size = d
                    .order
                    .values()
                    .fold(0u64, |n, k| n.saturating_add(k.len() as u64 + 8));
                ctx.check_reply(size)?;
                encode(&d.order.values().collect::<Vec<_>>())
            }
            DictOp::Values => reply_all(
                d.order.values().filter_map(|k| d.map.get(k)).map(|v| &v.1),
                ctx,
            ),
            DictOp::Items => {
                let size = d.order.values().fold(0u64, |n, k| {
                    let v = d.map.get(k).map_or(0, |v| v.1.bytes.len());
                    n.saturating_add((k.len() + v) as u64 + 24)
                });
                ctx.check_reply(size)?;
                encode(
                    &d.order
                        .values()
                        .filter_map(|k| d.map.get(k).map(|v| (k, v.1.to_wire())))
                        .collect::<Vec<_>>(),
                )
            }
            DictOp::Clear => {
                let old = std::mem::take(&mut *d);
                drop(d);
                drop(old);
                encode(&())
            }
        }
    }
}

struct List(Mutex<Vec<Blob>>);

impl Object for List {
    fn call(&self, op: &[u8], ctx: &CallCtx<'_>) -> Result<Vec<u8>, RemoteError> {
        let op: ListOp = decode_op(op)?;
        let mut l = lock(&self.0);
        let out_of_range = || err("IndexError", "list index out of range");
        match op {
            ListOp::Len => encode(&l.len()),
            ListOp::Get(i) => {
                let i = index(l.len(), i).ok_or_else(out_of_range)?;
                ctx.check_reply(l[i].bytes.len() as u64)?;
                encode(&l[i].to_wire())
            }
            ListOp::Set(i, v) => {
                let i = index(l.len(), i).ok_or_else(out_of_range)?;
                let old = std::mem::replace(&mut l[i], Blob::from_wire(v, ctx)?);
                drop(l);
                drop(old);
                encode(&())
            }
            ListOp::Append(v) => {
                let v = Blob::from_wire(v, ctx)?;
                reserve(&mut l, 1)?;
                l.push(v);
                encode(&())
            }
            ListOp::Extend(vs) => {
                let mut vs = store_all(vs, ctx)?;
                reserve(&mut l, vs.len())?;
                l.append(&mut vs);
                encode(&())
            }
            ListOp::Insert(i, v) => {
                let i = clamp(l.len(), i);
                let v = Blob::from_wire(v, ctx)?;
                reserve(&mut l, 1)?;
                l.insert(i, v);
                encode(&())
            }
            ListOp::Pop(i) => {
                if l.is_empty() {
                    return Err(err("IndexError", "pop from empty list"));
                }
                let i = index(l.len(), i.unwrap_or(-1)).ok_or_else(out_of_range)?;
                let v = l.remove(i);
                drop(l);
                encode(&v.into_wire())
            }
            ListOp::Remove(x) => {
                let i = l
                    .iter()
                    .position(|b| b.bytes == x)
                    .ok_or_else(|| err("ValueError", "list.remove(x): x not in list"))?;
                let v = l.remove(i);
                drop(l);
                drop(v);
                encode(&())
            }
            ListOp::Index(x) => encode(
                &l.iter()
                    .position(|b| b.bytes == x)
                    .ok_or_else(|| err("ValueError", "value is not in list"))?,
            ),
            ListOp::Count(x) => encode(&l.iter().filter(|b| b.bytes == x).count()),
            ListOp::Slice(a, b) => {
                let (a, b) = (clamp(l.len(), a), clamp(l.len(), b));
                reply_all(l[a..b.max(a)].iter(), ctx)
            }
            ListOp::All => reply_all(l.iter(), ctx),
            ListOp::Clear => {
                let old = std::mem::take(&mut *l);
                drop(l);
                drop(old);
                encode(&())
            }
            ListOp::Reverse => {
                l.reverse();
                encode(&())
            }
            ListOp::Repeat(n) => {
                let n0 = l.len();
                if n == 0 {
                    let old = std::mem::take(&mut *l);
                    drop(l);
                    drop(old);
                } else if n > 1 && n0 > 0 {
                    // Sized and charged before anything is allocated: a huge factor is a
                    // MemoryError, as in Python, not the end of the server.
                    let more = n0
                        .checked_mul(n - 1)
                        .ok_or_else(|| too_big("repeating a list"))?;
                    let per_copy = l.iter().fold(0u64, |s, b| s.saturating_add(b.charged()));
                    ctx.table
                        .budget
                        .check(per_copy.saturating_mul((n - 1) as u64))?;
                    reserve(&mut l, more)?;
                    for _ in 1..n {
                        for i in 0..n0 {
                            match l[i].duplicate(ctx) {
                                Ok(c) => l.push(c),
                                Err(e) => {
                                    // Another client took the room meanwhile: all or nothing.
                                    let added = l.split_off(n0);
                                    drop(l);
                                    drop(added);
                                    return Err(e);
                                }
                            }
                        }
                    }
                }
                encode(&())
            }
            ListOp::Replace(vs) => {
                let new = store_all(vs, ctx)?;
                let old = std::mem::replace(&mut *l, new);
                drop(l);
                drop(old);
                encode(&())
            }
            ListOp::SetSlice(a, b, vs) => {
                let (a, b) = (clamp(l.len(), a), clamp(l.len(), b));
                let new = vs
                    .into_iter()
                    .map(|v| Blob::from_wire(v, ctx))
                    .collect::<Result<Vec<_>, _>>()?;
                let old: Vec<Blob> = l.splice(a..b.max(a), new).collect();
                drop(l);
                drop(old);
                encode(&())
            }
            ListOp::ReplaceIf(expected, vs) => {
                let same = l.len() == expected.len()
                    && l.iter().zip(&expected).all(|(b, e)| b.bytes == *e);
                if !same {
                    return encode(&false);
                }
                let new = vs
                    .into_iter()
                    .map(|v| Blob::from_wire(v, ctx))
                    .collect::<Result<Vec<_>, _>>()?;
                let old = std::mem::replace(&mut *l, new);
                drop(l);
                drop(old);
                encode(&true)
            }
        }
    }
}

#[derive(Default)]
struct Namespace(Mutex<BTreeMap<String, Blob>>);

impl Object for Namespace {
    fn call(&self, op: &[u8], ctx: &CallCtx<'_>) -> Result<Vec<u8>, RemoteError> {
        let op: NsOp = decode_op(op)?;
        let mut ns = lock(&self.0);
        match op {
            NsOp::Get(name) => {
                let v = ns.get(&name);
                ctx.check_reply(v.map_or(0, |b| b.bytes.len() as u64))?;
                encode(&v.map(Blob::to_wire))
            }
            NsOp::Set(name, v) => {
                let mut v = Blob::from_wire(v, ctx)?;
                v.charge_more(KEY_COST.saturating_add(name.len() as u64))?;
                let old = ns.insert(name, v);
                drop(ns);
                drop(old);
                encode(&())
            }
            NsOp::Del(name) => {
                let old = ns.remove(&name);
                drop(ns);
                encode(&old.is_some())
            }
            NsOp::Names => {
                let size = ns
                    .keys()
                    .fold(0u64, |n, k| n.saturating_add(k.len() as u64 + 8));
                ctx.check_reply(size)?;
                encode(&ns.keys().collect::<Vec<_>>())
            }
        }
    }
}

struct Value(Mutex<Blob>);

impl Object for Value {
    fn call(&self, op: &[u8], ctx: &CallCtx<'_>) -> Result<Vec<u8>, RemoteError> {
        let op: ValueOp = decode_op(op)?;
        let mut v = lock(&self.0);
        match op {
            ValueOp::Get => {
                ctx.check_reply(v.bytes.len() as u64)?;
                encode(&v.to_wire())
            }
            ValueOp::Set(new) => {
                let old = std::mem::replace(&mut *v, Blob::from_wire(new, ctx)?);
                drop(v);
                drop(old);
                encode(&())
            }
            ValueOp::Swap(new) => {
                let old = std::mem::replace(&mut *v, Blob::from_wire(new, ctx)?);
                drop(v);
                encode(&old.into_wire())
            }
        }
    }
}

#[derive(Default)]
struct QState {
    items: VecDeque<Blob>,
    unfinished: usize,
}

struct Queue {
    maxsize: usize,
    state: Mutex<QState>,
    cv: Condvar,
}

/// The outcome of a queue operation, as the proxy decodes it.
pub(crate) type QueueReply = Result<Option<WireBlob>, QueueFail>;

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) enum QueueFail {
    Empty,
    Full,
    ClientGone,
}

impl Object for Queue {
    fn call(&self, op: &[u8], ctx: &CallCtx<'_>) -> Result<Vec<u8>, RemoteError> {
        let op: QueueOp = decode_op(op)?;
        let g = lock(&self.state);
        let full = |q: &mut QState| self.maxsize > 0 && q.items.len() >= self.maxsize;
        let r: QueueReply = match op {
            QueueOp::Put(v, block, timeout) => {
                let v = Blob::from_wire(v, ctx)?;
                let (mut g, w) = if block {
                    wait_until(&self.cv, g, timeout, ctx, |q| !full(q))
                } else {
                    let mut g = g;
                    let w = if full(&mut g) {
                        Waited::TimedOut
                    } else {
                        Waited::Ready
                    };
                    (g, w)
                };
                match w {
                    Waited::Ready => {
                        g.items
                            .try_reserve(1)
                            .map_err(|_| too_big("growing a queue"))?;
                        g.unfinished = add(g.unfinished, 1, "the count of unfinished tasks")?;
                        g.items.push_back(v);
                        self.cv.notify_all();
                        Ok(None)
                    }
                    Waited::TimedOut => Err(QueueFail::Full),
                    Waited::ClientGone => Err(QueueFail::ClientGone),
                }
            }
            QueueOp::Get(block, timeout) => {
                let timeout = if block {
                    timeout
                } else {
                    Some(Default::default())
                };
                let (mut g, w) = wait_until(&self.cv, g, timeout, ctx, |q| !q.items.is_empty());
                match w {
                    Waited::Ready => match g.items.pop_front() {
                        Some(v) => {
                            self.cv.notify_all();
                            Ok(Some(v.into_wire()))
                        }
                        None => Err(QueueFail::Empty),
                    },
                    Waited::TimedOut => Err(QueueFail::Empty),
                    Waited::ClientGone => Err(QueueFail::ClientGone),
                }
            }
            QueueOp::Len => return encode(&g.items.len()),
            QueueOp::Full => {
                let mut g = g;
                return encode(&full(&mut g));
            }
            QueueOp::TaskDone => {
                let mut g = g;
                if g.unfinished == 0 {
                    return Err(err("ValueError", "task_done() called too many times"));
                }
                g.unfinished -= 1;
                self.cv.notify_all();
                Ok(None)
            }
            QueueOp::Join(timeout) => {
                match wait_until(&self.cv, g, timeout, ctx, |q| q.unfinished == 0).1 {
                    Waited::Ready => Ok(None),
                    Waited::TimedOut => Err(QueueFail::Full),
                    Waited::ClientGone => Err(QueueFail::ClientGone),
                }
            }
        };
        encode(&r)
    }
}

#[derive(Default)]
struct LState {
    owner: Option<u64>,
    count: usize,
    /// Condition: tickets of waiters (with the key of the condition each waits on: 0 for
    /// the lock object itself, another for each condition made over it), and the tickets
    /// notified.
    next_ticket: u64,
    waiting: VecDeque<(u64, u64)>,
    woken: Vec<u64>,
    /// The key of the last condition made over this lock.
    next_cond: u64,
}

/// The lock itself, shared by the lock object and the conditions made over it.
pub(crate) struct LockCore {
    recursive: bool,
    state: Mutex<LState>,
    cv: Condvar,
}

/// Lock, RLock and Condition (a lock with wait/notify): a view of a [`LockCore`] whose
/// `wait`/`notify` concern the waiters of `key`.
struct LockObj {
    core: Arc<LockCore>,
    key: u64,
}

impl LockCore {
    fn acquire<'g>(
        &'g self,
        g: MutexGuard<'g, LState>,
        block: bool,
        timeout: Wait,
        ctx: &CallCtx<'_>,
    ) -> (bool, MutexGuard<'g, LState>) {
        let me = ctx.caller;
        let mut g = g;
        if self.recursive && g.owner == Some(me) {
            // (A count past usize::MAX cannot be reached by real calls; it is refused.)
            return match g.count.checked_add(1) {
                Some(c) => {
                    g.count = c;
                    (true, g)
                }
                None => (false, g),
            };
        }
        let timeout = if block {
            timeout
        } else {
            Some(Default::default())
        };
        let (mut g, w) = wait_until(&self.cv, g, timeout, ctx, |s| s.owner.is_none());
        if w == Waited::Ready {
            g.owner = Some(me);
            g.count = 1;
            (true, g)
        } else {
            (false, g)
        }
    }
}

impl Object for LockObj {
    fn lock_core(&self) -> Option<Arc<LockCore>> {
        Some(self.core.clone())
    }

    fn call(&self, op: &[u8], ctx: &CallCtx<'_>) -> Result<Vec<u8>, RemoteError> {
        let op: LockOp = decode_op(op)?;
        let core = &*self.core;
        let g = lock(&core.state);
        match op {
            LockOp::Acquire(block, timeout) => encode(&core.acquire(g, block, timeout, ctx).0),
            LockOp::Release => {
                let mut g = g;
                match g.owner {
                    None => return Err(err("RuntimeError", "release of an unlocked lock")),
                    Some(o) if core.recursive && o != ctx.caller => {
                        return Err(err("RuntimeError", "cannot release un-acquired lock"))
                    }
                    _ => {}
                }
                g.count = g.count.saturating_sub(1);
                if g.count == 0 {
                    g.owner = None;
                    core.cv.notify_all();
                }
                encode(&())
            }
            LockOp::Locked => encode(&g.owner.is_some()),
            LockOp::Wait(timeout) => {
                let mut g = g;
                if g.owner != Some(ctx.caller) {
                    return Err(err("RuntimeError", "cannot wait on un-acquired lock"));
                }
                let saved = g.count;
                let ticket = g.next_ticket;
                g.next_ticket = g.next_ticket.wrapping_add(1);
                g.waiting.push_back((self.key, ticket));
                g.owner = None;
                g.count = 0;
                core.cv.notify_all();
                let (mut g, w) =
                    wait_until(&core.cv, g, timeout, ctx, |s| s.woken.contains(&ticket));
                g.waiting.retain(|(_, t)| *t != ticket);
                let notified = if let Some(i) = g.woken.iter().position(|t| *t == ticket) {
                    g.woken.swap_remove(i);
                    true
                } else {
                    false
                };
                if w == Waited::ClientGone {
                    return encode(&false);
                }
                // Take the lock back, whatever happened.
                let (_, mut g) = core.acquire(g, true, None, ctx);
                g.count = saved;
                encode(&notified)
            }
            LockOp::Notify(_) | LockOp::NotifyAll => {
                let mut g = g;
                if g.owner != Some(ctx.caller) {
                    return Err(err("RuntimeError", "cannot notify on un-acquired lock"));
                }
                let mut n = if let LockOp::Notify(n) = op {
                    n
                } else {
                    usize::MAX
                };
                // Wakes the first `n` waiters of this condition, in order.
                let LState { waiting, woken, .. } = &mut *g;
                waiting.retain(|&(key, t)| {
                    if n > 0 && key == self.key {
                        n -= 1;
                        woken.push(t);
                        false
                    } else {
                        true
                    }
                });
                core.cv.notify_all();
                encode(&())
            }
        }
    }
}

struct Event(Mutex<bool>, Condvar);

impl Object for Event {
    fn call(&self, op: &[u8], ctx: &CallCtx<'_>) -> Result<Vec<u8>, RemoteError> {
        let op: EventOp = decode_op(op)?;
        let mut g = lock(&self.0);
        match op {
            EventOp::Set => {
                *g = true;
                self.1.notify_all();
                encode(&())
            }
            EventOp::Clear => {
                *g = false;
                encode(&())
            }
            EventOp::IsSet => encode(&*g),
            EventOp::Wait(t) => {
                let (g, _) = wait_until(&self.1, g, t, ctx, |s| *s);
                encode(&*g)
            }
        }
    }
}

struct Semaphore {
    bound: Option<usize>,
    value: Mutex<usize>,
    cv: Condvar,
}

impl Object for Semaphore {
    fn call(&self, op: &[u8], ctx: &CallCtx<'_>) -> Result<Vec<u8>, RemoteError> {
        let op: SemOp = decode_op(op)?;
        let g = lock(&self.value);
        match op {
            SemOp::Acquire(block, timeout) => {
                let timeout = if block {
                    timeout
                } else {
                    Some(Default::default())
                };
                let (mut g, w) = wait_until(&self.cv, g, timeout, ctx, |v| *v > 0);
                if w == Waited::Ready {
                    *g -= 1;
                }
                encode(&(w == Waited::Ready))
            }
            SemOp::Release(n) => {
                let mut g = g;
                let value = g.checked_add(n);
                if let Some(b) = self.bound {
                    match value {
                        Some(v) if v <= b => {}
                        _ => return Err(err("ValueError", "Semaphore released too many times")),
                    }
                }
                *g = value
                    .ok_or_else(|| err("OverflowError", "the semaphore's value would overflow"))?;
                self.cv.notify_all();
                encode(&())
            }
            SemOp::Value => encode(&*g),
        }
    }
}

#[derive(Default)]
struct BState {
    waiting: usize,
    generation: u64,
    broken: bool,
    /// A generation ended by `reset`: its waiters get "broken".
    reset_generation: Option<u64>,
}

struct Barrier {
    parties: usize,
    /// Python's `Barrier(parties, timeout=...)`: the timeout of a `wait` given none.
    default_timeout: Option<std::time::Duration>,
    state: Mutex<BState>,
    cv: Condvar,
}

/// A barrier wait's outcome: the arrival index, or broken.
pub(crate) type BarrierReply = Result<usize, ()>;

impl Object for Barrier {
    fn call(&self, op: &[u8], ctx: &CallCtx<'_>) -> Result<Vec<u8>, RemoteError> {
        let op: BarrierOp = decode_op(op)?;
        let mut g = lock(&self.state);
        match op {
            BarrierOp::Wait(timeout) => {
                let timeout = timeout.or(self.default_timeout);
                if g.broken {
                    return encode(&BarrierReply::Err(()));
                }
                let index = g.waiting;
                g.waiting += 1;
                if g.waiting >= self.parties {
                    g.waiting = 0;
                    g.generation = g.generation.wrapping_add(1);
                    self.cv.notify_all();
                    return encode(&BarrierReply::Ok(index));
                }
                let gen = g.generation;
                let (mut g, w) = wait_until(&self.cv, g, timeout, ctx, |s| {
                    s.generation != gen || s.broken
                });
                if w == Waited::Ready && g.generation != gen {
                    if g.reset_generation == Some(gen) {
                        return encode(&BarrierReply::Err(()));
                    }
                    return encode(&BarrierReply::Ok(index));
                }
                // Timed out, aborted or the caller left: the barrier breaks for everyone.
                if !g.broken {
                    g.broken = true;
                    g.waiting = 0;
                    self.cv.notify_all();
                }
                encode(&BarrierReply::Err(()))
            }
            BarrierOp::Abort => {
                g.broken = true;
                g.waiting = 0;
                self.cv.notify_all();
                encode(&())
            }
            BarrierOp::Reset => {
                if g.waiting > 0 {
                    g.reset_generation = Some(g.generation);
                    self.cv.notify_all();
                }
                g.broken = false;
                g.waiting = 0;
                g.generation = g.generation.wrapping_add(1);
                encode(&())
            }
            BarrierOp::Parties => encode(&self.parties),
            BarrierOp::NWaiting => encode(&g.waiting),
            BarrierOp::Broken => encode(&g.broken),
        }
    }
}
