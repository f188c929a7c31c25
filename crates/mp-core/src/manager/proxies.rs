//! The typed proxies of the built-in types and of user services.

use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::builtins::{BarrierReply, QueueFail, QueueReply};
use super::client::{decode_reply, decode_value, encode_for_server, ProxyCore};
use super::protocol::*;
use super::{ManagerError, Service};

macro_rules! proxy_type {
    ($(#[$doc:meta])* $name:ident < $($p:ident),* >) => {
        $(#[$doc])*
        ///
        /// Cloning takes a new reference on the server; the object lives while any proxy
        /// (here, in a child, or stored in a manager container) refers to it. A proxy can be
        /// passed to a child process or stored in another manager object.
        pub struct $name<$($p),*> {
            core: ProxyCore,
            _t: PhantomData<fn($($p),*) -> ($($p,)*)>,
        }

        impl<$($p),*> $name<$($p),*> {
            #[allow(dead_code)]
            pub(crate) fn from_core(core: ProxyCore) -> Self {
                Self { core, _t: PhantomData }
            }

            #[allow(dead_code)]
            pub(crate) fn core(&self) -> &ProxyCore {
                &self.core
            }

            /// A second proxy for the same object (Python's proxies are copied this way
            /// when pickled).
            pub fn try_clone(&self) -> Result<Self, ManagerError> {
                Ok(Self::from_core(self.core.try_clone()?))
            }

            /// The object's id in its manager.
            pub fn id(&self) -> u64 {
                self.core.id
            }
        }

        impl<$($p),*> Clone for $name<$($p),*> {
            /// Takes a new reference on the server. If the server cannot be reached (the
            /// manager is gone), the clone is a proxy that holds no reference and whose calls
            /// fail as this one's do; [`try_clone`](Self::try_clone) gives the error instead.
            fn clone(&self) -> Self {
                self.try_clone()
                    .unwrap_or_else(|_| Self::from_core(self.core.detached()))
            }
        }

        impl<$($p),*> Serialize for $name<$($p),*> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.core.serialize(s)
            }
        }

        impl<'de, $($p),*> Deserialize<'de> for $name<$($p),*> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Ok(Self::from_core(ProxyCore::deserialize(d)?))
            }
        }

        impl<$($p),*> std::fmt::Debug for $name<$($p),*> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.core.fmt(f)
            }
        }
    };
}

fn enc<T: Serialize + ?Sized>(core: &ProxyCore, v: &T) -> Result<WireBlob, ManagerError> {
    encode_for_server(v, Some(core.pool.nonce)).map_err(ManagerError::Encode)
}

/// The bytes a key or a searched-for value is compared by.
fn key<T: Serialize + ?Sized>(v: &T) -> Result<Vec<u8>, ManagerError> {
    postcard::to_stdvec(v).map_err(ManagerError::Encode)
}

fn call<R: DeserializeOwned, Op: Serialize>(core: &ProxyCore, op: &Op) -> Result<R, ManagerError> {
    decode_reply(&core.call(op)?)
}

proxy_type! {
    /// A dict in a manager (Python's `DictProxy`). Keys compare by their encoded form (equal
    /// values have equal encodings for the usual key types: integers, strings, tuples).
    /// Iteration order is insertion order; [`keys`](Self::keys), [`values`](Self::values) and
    /// [`items`](Self::items) are snapshots, so a concurrent change never makes them fail.
    DictProxy<K, V>
}

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> DictProxy<K, V> {
    /// Number of items.
    pub fn len(&self) -> Result<usize, ManagerError> {
        call(&self.core, &DictOp::Len)
    }
    /// Whether the dict is empty.
    pub fn is_empty(&self) -> Result<bool, ManagerError> {
        Ok(self.len()? == 0)
    }
    /// The value of `k`, if any (Python: `d.get(k)`).
    pub fn get(&self, k: &K) -> Result<Option<V>, ManagerError> {
        let v: Option<WireBlob> = call(&self.core, &DictOp::Get(key(k)?))?;
        v.map(|w| decode_value(&w)).transpose()
    }
    /// `d[k] = v`.
    pub fn set(&self, k: &K, v: &V) -> Result<(), ManagerError> {
        call(&self.core, &DictOp::Set(key(k)?, enc(&self.core, v)?))
    }
    /// `del d[k]`; whether it was there.
    pub fn remove(&self, k: &K) -> Result<bool, ManagerError> {
        call(&self.core, &DictOp::Del(key(k)?))
    }
    /// `k in d`.
    pub fn contains_key(&self, k: &K) -> Result<bool, ManagerError> {
        call(&self.core, &DictOp::Contains(key(k)?))
    }
    /// `d.pop(k, None)`.
    pub fn pop(&self, k: &K) -> Result<Option<V>, ManagerError> {
        let v: Option<WireBlob> = call(&self.core, &DictOp::Pop(key(k)?))?;
        v.map(|w| decode_value(&w)).transpose()
    }
    /// `d.popitem()`: the last inserted item, if any.
    pub fn popitem(&self) -> Result<Option<(K, V)>, ManagerError> {
        let v: Option<(Vec<u8>, WireBlob)> = call(&self.core, &DictOp::PopItem)?;
        v.map(|(k, w)| {
            Ok((
                crate::codec::decode(&k).map_err(ManagerError::Decode)?,
                decode_value(&w)?,
            ))
        })
        .transpose()
    }
    /// `d.setdefault(k, v)`: the value now stored under `k`.
    pub fn setdefault(&self, k: &K, v: &V) -> Result<V, ManagerError> {
        let w: WireBlob = call(
            &self.core,
            &DictOp::SetDefault(key(k)?, enc(&self.core, v)?),
        )?;
        decode_value(&w)
    }
    /// `d.update(items)`, in one call.
    pub fn update<'a>(
        &self,
        items: impl IntoIterator<Item = (&'a K, &'a V)>,
    ) -> Result<(), ManagerError>
    where
        K: 'a,
        V: 'a,
    {
        let items = items
            .into_iter()
            .map(|(k, v)| Ok((key(k)?, enc(&self.core, v)?)))
            .collect::<Result<Vec<_>, ManagerError>>()?;
        call(&self.core, &DictOp::Update(items))
    }
    /// The keys, in insertion order (a snapshot).
    pub fn keys(&self) -> Result<Vec<K>, ManagerError> {
        let ks: Vec<Vec<u8>> = call(&self.core, &DictOp::Keys)?;
        ks.iter()
            .map(|k| crate::codec::decode(k).map_err(ManagerError::Decode))
            .collect()
    }
    /// The values, in insertion order (a snapshot).
    pub fn values(&self) -> Result<Vec<V>, ManagerError> {
        let vs: Vec<WireBlob> = call(&self.core, &DictOp::Values)?;
        vs.iter().map(decode_value).collect()
    }
    /// The items, in insertion order (a snapshot; Python's `d.copy()` as a list).
    pub fn items(&self) -> Result<Vec<(K, V)>, ManagerError> {
        let vs: Vec<(Vec<u8>, WireBlob)> = call(&self.core, &DictOp::Items)?;
        vs.iter()
            .map(|(k, w)| {
                Ok((
                    crate::codec::decode(k).map_err(ManagerError::Decode)?,
                    decode_value(w)?,
                ))
            })
            .collect()
    }
    /// A plain copy (Python's `d.copy()`).
    pub fn copy(&self) -> Result<std::collections::HashMap<K, V>, ManagerError>
    where
        K: Eq + std::hash::Hash,
    {
        Ok(self.items()?.into_iter().collect())
    }
    /// Removes every item.
    pub fn clear(&self) -> Result<(), ManagerError> {
        call(&self.core, &DictOp::Clear)
    }
}

proxy_type! {
    /// A list in a manager (Python's `ListProxy`). Indices may be negative, as in Python.
    /// Searching (`index`, `count`, `remove`) compares encoded values.
    ListProxy<T>
}

impl<T: Serialize + DeserializeOwned> ListProxy<T> {
    /// `len(l)`.
    pub fn len(&self) -> Result<usize, ManagerError> {
        call(&self.core, &ListOp::Len)
    }
    /// Whether the list is empty.
    pub fn is_empty(&self) -> Result<bool, ManagerError> {
        Ok(self.len()? == 0)
    }
    /// `l[i]`; out of range is a remote `IndexError`.
    pub fn get(&self, i: i64) -> Result<T, ManagerError> {
        decode_value(&call::<WireBlob, _>(&self.core, &ListOp::Get(i))?)
    }
    /// `l[i] = v`.
    pub fn set(&self, i: i64, v: &T) -> Result<(), ManagerError> {
        call(&self.core, &ListOp::Set(i, enc(&self.core, v)?))
    }
    /// `l.append(v)`.
    pub fn append(&self, v: &T) -> Result<(), ManagerError> {
        call(&self.core, &ListOp::Append(enc(&self.core, v)?))
    }
    /// `l.extend(vs)`, in one call.
    pub fn extend<'a>(&self, vs: impl IntoIterator<Item = &'a T>) -> Result<(), ManagerError>
    where
        T: 'a,
    {
        let vs = vs
            .into_iter()
            .map(|v| enc(&self.core, v))
            .collect::<Result<Vec<_>, _>>()?;
        call(&self.core, &ListOp::Extend(vs))
    }
    /// `l.insert(i, v)`.
    pub fn insert(&self, i: i64, v: &T) -> Result<(), ManagerError> {
        call(&self.core, &ListOp::Insert(i, enc(&self.core, v)?))
    }
    /// `l.pop()` (`None`) or `l.pop(i)`.
    pub fn pop(&self, i: Option<i64>) -> Result<T, ManagerError> {
        decode_value(&call::<WireBlob, _>(&self.core, &ListOp::Pop(i))?)
    }
    /// `l.remove(v)`: the first equal element; absent is a remote `ValueError`.
    pub fn remove(&self, v: &T) -> Result<(), ManagerError> {
        call(&self.core, &ListOp::Remove(key(v)?))
    }
    /// `l.index(v)`.
    pub fn index(&self, v: &T) -> Result<usize, ManagerError> {
        call(&self.core, &ListOp::Index(key(v)?))
    }
    /// `l.count(v)`.
    pub fn count(&self, v: &T) -> Result<usize, ManagerError> {
        call(&self.core, &ListOp::Count(key(v)?))
    }
    /// `l[a:b]`, clamped like Python's slices, as a plain `Vec`.
    pub fn slice(&self, a: i64, b: i64) -> Result<Vec<T>, ManagerError> {
        let vs: Vec<WireBlob> = call(&self.core, &ListOp::Slice(a, b))?;
        vs.iter().map(decode_value).collect()
    }
    /// A plain copy (Python's `l[:]` / `list(l)`).
    pub fn to_vec(&self) -> Result<Vec<T>, ManagerError> {
        let vs: Vec<WireBlob> = call(&self.core, &ListOp::All)?;
        vs.iter().map(decode_value).collect()
    }
    /// `l.clear()`.
    pub fn clear(&self) -> Result<(), ManagerError> {
        call(&self.core, &ListOp::Clear)
    }
    /// `l.reverse()`.
    pub fn reverse(&self) -> Result<(), ManagerError> {
        call(&self.core, &ListOp::Reverse)
    }
    /// `l *= n`.
    pub fn repeat(&self, n: usize) -> Result<(), ManagerError> {
        call(&self.core, &ListOp::Repeat(n))
    }
    /// Replaces the whole content in one call.
    pub fn replace(&self, vs: &[T]) -> Result<(), ManagerError> {
        let vs = vs
            .iter()
            .map(|v| enc(&self.core, v))
            .collect::<Result<Vec<_>, _>>()?;
        call(&self.core, &ListOp::Replace(vs))
    }
    /// `l[a:b] = items`, in one call (indices clamped like Python's; `b < a` inserts at
    /// `a`).
    ///
    /// ```
    /// let m = mp_core::manager::Manager::start().unwrap();
    /// let l = m.list(&[0, 1, 2, 3]).unwrap();
    /// l.set_slice(1, 3, &[7, 8, 9]).unwrap();
    /// assert_eq!(l.to_vec().unwrap(), [0, 7, 8, 9, 3]);
    /// ```
    pub fn set_slice(&self, a: i64, b: i64, items: &[T]) -> Result<(), ManagerError> {
        let vs = items
            .iter()
            .map(|v| enc(&self.core, v))
            .collect::<Result<Vec<_>, _>>()?;
        call(&self.core, &ListOp::SetSlice(a, b, vs))
    }

    /// `l.sort()`, atomically: no other writer's change is lost or interleaved. The server
    /// holds values encoded and does not run client code, so the list is read, sorted here
    /// and written back only if it did not change meanwhile (otherwise the sort starts
    /// again).
    ///
    /// ```
    /// let m = mp_core::manager::Manager::start().unwrap();
    /// let l = m.list(&[3, 1, 2]).unwrap();
    /// l.sort().unwrap();
    /// assert_eq!(l.to_vec().unwrap(), [1, 2, 3]);
    /// ```
    pub fn sort(&self) -> Result<(), ManagerError>
    where
        T: Ord,
    {
        self.sort_by(|a, b| a.cmp(b))
    }

    /// [`sort`](Self::sort) with a comparison (Python's `l.sort(key=...)`).
    pub fn sort_by(
        &self,
        mut compare: impl FnMut(&T, &T) -> std::cmp::Ordering,
    ) -> Result<(), ManagerError> {
        loop {
            let snapshot: Vec<WireBlob> = call(&self.core, &ListOp::All)?;
            let mut values = snapshot
                .iter()
                .map(decode_value)
                .collect::<Result<Vec<T>, _>>()?;
            values.sort_by(&mut compare);
            let sorted = values
                .iter()
                .map(|v| enc(&self.core, v))
                .collect::<Result<Vec<_>, _>>()?;
            let expected = snapshot.into_iter().map(|w| w.bytes).collect();
            if call(&self.core, &ListOp::ReplaceIf(expected, sorted))? {
                return Ok(());
            }
        }
    }
    /// Iterates by index, one call per element, so changes made meanwhile are seen (as
    /// Python's list iterator over a proxy). Ends at the first index past the end.
    pub fn iter(&self) -> impl Iterator<Item = Result<T, ManagerError>> + '_ {
        let mut i = 0i64;
        std::iter::from_fn(move || {
            let n = match self.len() {
                Ok(n) => n as i64,
                Err(e) => return Some(Err(e)),
            };
            if i >= n {
                return None;
            }
            i += 1;
            Some(self.get(i - 1))
        })
    }
}

/// A fixed-length array in a manager (Python's `Manager().Array(typecode, seq)`): indexing
/// and assignment, no resizing. Indices may be negative, as in Python. Unlike Python's, the
/// element type is any serde type, not only a C number type. It is a list in the server,
/// seen through fewer methods; like every proxy it can be cloned and passed to a child.
///
/// ```
/// let m = mp_core::manager::Manager::start().unwrap();
/// let a = m.array(&[0i32, 1]).unwrap();
/// a.set(-1, &5).unwrap();
/// assert_eq!((a.len().unwrap(), a.to_vec().unwrap()), (2, vec![0, 5]));
/// ```
pub struct ArrayProxy<T>(ListProxy<T>);

impl<T> Clone for ArrayProxy<T> {
    /// As [`ListProxy`]'s clone: never panics.
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> Serialize for ArrayProxy<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for ArrayProxy<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        ListProxy::deserialize(d).map(Self)
    }
}

impl<T> ArrayProxy<T> {
    pub(crate) fn from_list(list: ListProxy<T>) -> Self {
        Self(list)
    }
    /// A second proxy for the same array.
    pub fn try_clone(&self) -> Result<Self, ManagerError> {
        self.0.try_clone().map(Self)
    }
    /// The object's id in its manager.
    pub fn id(&self) -> u64 {
        self.0.id()
    }
}

impl<T> std::fmt::Debug for ArrayProxy<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<T: Serialize + DeserializeOwned> ArrayProxy<T> {
    /// `len(a)`.
    pub fn len(&self) -> Result<usize, ManagerError> {
        self.0.len()
    }
    /// Whether the array has no elements.
    pub fn is_empty(&self) -> Result<bool, ManagerError> {
        self.0.is_empty()
    }
    /// `a[i]`; out of range is a remote `IndexError`.
    pub fn get(&self, i: i64) -> Result<T, ManagerError> {
        self.0.get(i)
    }
    /// `a[i] = v`; out of range is a remote `IndexError`.
    pub fn set(&self, i: i64, v: &T) -> Result<(), ManagerError> {
        self.0.set(i, v)
    }
    /// A plain copy (Python's `list(a)`), in one call.
    pub fn to_vec(&self) -> Result<Vec<T>, ManagerError> {
        self.0.to_vec()
    }
}

proxy_type! {
    /// A namespace in a manager (Python's `Namespace`): named attributes of any type.
    NamespaceProxy<>
}

impl NamespaceProxy {
    /// `ns.name`, if set.
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, ManagerError> {
        let v: Option<WireBlob> = call(&self.core, &NsOp::Get(name.into()))?;
        v.map(|w| decode_value(&w)).transpose()
    }
    /// `ns.name = v`.
    pub fn set<T: Serialize>(&self, name: &str, v: &T) -> Result<(), ManagerError> {
        call(&self.core, &NsOp::Set(name.into(), enc(&self.core, v)?))
    }
    /// `del ns.name`; whether it was set.
    pub fn remove(&self, name: &str) -> Result<bool, ManagerError> {
        call(&self.core, &NsOp::Del(name.into()))
    }
    /// The public attribute names (not starting with `_`), sorted: what Python's
    /// `repr(ns)` lists.
    pub fn names(&self) -> Result<Vec<String>, ManagerError> {
        let v: Vec<String> = call(&self.core, &NsOp::Names)?;
        Ok(v.into_iter().filter(|n| !n.starts_with('_')).collect())
    }
}

proxy_type! {
    /// A single value in a manager (Python's `Manager().Value`).
    ValueProxy<T>
}

impl<T: Serialize + DeserializeOwned> ValueProxy<T> {
    /// `v.value`.
    pub fn get(&self) -> Result<T, ManagerError> {
        decode_value(&call::<WireBlob, _>(&self.core, &ValueOp::Get)?)
    }
    /// `v.value = x`.
    pub fn set(&self, v: &T) -> Result<(), ManagerError> {
        call(&self.core, &ValueOp::Set(enc(&self.core, v)?))
    }
    /// Stores `v` and returns the old value, in one call.
    pub fn swap(&self, v: &T) -> Result<T, ManagerError> {
        decode_value(&call::<WireBlob, _>(
            &self.core,
            &ValueOp::Swap(enc(&self.core, v)?),
        )?)
    }
}

/// Errors of [`QueueProxy`] operations (Python: `queue.Empty`, `queue.Full`).
#[derive(Debug, thiserror::Error)]
pub enum QueueProxyError {
    /// Nothing to get within the timeout (Python: `queue.Empty`).
    #[error("the queue is empty")]
    Empty,
    /// No room within the timeout (Python: `queue.Full`).
    #[error("the queue is full")]
    Full,
    /// The manager failed or is gone.
    #[error(transparent)]
    Manager(#[from] ManagerError),
}

proxy_type! {
    /// A queue in a manager (Python's `Manager().Queue()`, a `queue.Queue`).
    QueueProxy<T>
}

impl<T: Serialize + DeserializeOwned> QueueProxy<T> {
    fn queue_call(&self, op: &QueueOp) -> Result<Option<WireBlob>, QueueProxyError> {
        match call::<QueueReply, _>(&self.core, op)? {
            Ok(v) => Ok(v),
            Err(QueueFail::Empty) => Err(QueueProxyError::Empty),
            Err(QueueFail::Full) => Err(QueueProxyError::Full),
            Err(QueueFail::ClientGone) => Err(QueueProxyError::Manager(ManagerError::Connection(
                crate::ConnectionError::Eof,
            ))),
        }
    }
    /// Puts `v`, waiting for room without limit.
    pub fn put(&self, v: &T) -> Result<(), QueueProxyError> {
        self.queue_call(&QueueOp::Put(enc(&self.core, v)?, true, None))
            .map(drop)
    }
    /// Puts `v`, waiting for room at most `timeout` ([`QueueProxyError::Full`]).
    pub fn put_timeout(&self, v: &T, timeout: Duration) -> Result<(), QueueProxyError> {
        self.queue_call(&QueueOp::Put(enc(&self.core, v)?, true, Some(timeout)))
            .map(drop)
    }
    /// Puts `v` if there is room now.
    pub fn put_nowait(&self, v: &T) -> Result<(), QueueProxyError> {
        self.queue_call(&QueueOp::Put(enc(&self.core, v)?, false, None))
            .map(drop)
    }
    /// Gets an item, waiting without limit.
    pub fn get(&self) -> Result<T, QueueProxyError> {
        self.get_op(QueueOp::Get(true, None))
    }
    /// Gets an item, waiting at most `timeout` ([`QueueProxyError::Empty`]).
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, QueueProxyError> {
        self.get_op(QueueOp::Get(true, Some(timeout)))
    }
    /// Gets an item if there is one now.
    pub fn get_nowait(&self) -> Result<T, QueueProxyError> {
        self.get_op(QueueOp::Get(false, None))
    }
    fn get_op(&self, op: QueueOp) -> Result<T, QueueProxyError> {
        let w = self.queue_call(&op)?.ok_or(QueueProxyError::Empty)?;
        Ok(decode_value(&w)?)
    }
    /// `q.qsize()`.
    pub fn qsize(&self) -> Result<usize, ManagerError> {
        call(&self.core, &QueueOp::Len)
    }
    /// `q.empty()`.
    pub fn empty(&self) -> Result<bool, ManagerError> {
        Ok(self.qsize()? == 0)
    }
    /// `q.full()`.
    pub fn full(&self) -> Result<bool, ManagerError> {
        call(&self.core, &QueueOp::Full)
    }
    /// `q.task_done()`.
    pub fn task_done(&self) -> Result<(), QueueProxyError> {
        self.queue_call(&QueueOp::TaskDone).map(drop)
    }
    /// `q.join()`: waits until every item put has been marked done.
    pub fn join(&self) -> Result<(), QueueProxyError> {
        self.queue_call(&QueueOp::Join(None)).map(drop)
    }
}

proxy_type! {
    /// A lock in a manager: `Manager().Lock()`, `RLock()`, or the lock of a `Condition()`
    /// (or of a `Condition(lock)`, made by [`Manager::condition_with`](super::Manager::condition_with)).
    /// The owner is the calling thread of the calling process. Release with
    /// [`release`](Self::release) (or use [`guard`](Self::guard)).
    LockProxy<>
}

impl LockProxy {
    /// Acquires, waiting without limit.
    pub fn acquire(&self) -> Result<(), ManagerError> {
        call::<bool, _>(&self.core, &LockOp::Acquire(true, None)).map(drop)
    }
    /// Acquires, waiting at most `timeout`; whether it was acquired.
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<bool, ManagerError> {
        call(&self.core, &LockOp::Acquire(true, Some(timeout)))
    }
    /// Acquires if free now.
    pub fn try_acquire(&self) -> Result<bool, ManagerError> {
        call(&self.core, &LockOp::Acquire(false, None))
    }
    /// Releases; releasing an unlocked lock is a remote `RuntimeError`.
    pub fn release(&self) -> Result<(), ManagerError> {
        call(&self.core, &LockOp::Release)
    }
    /// Whether some thread holds it.
    pub fn locked(&self) -> Result<bool, ManagerError> {
        call(&self.core, &LockOp::Locked)
    }
    /// Acquires and returns a guard that releases on drop.
    pub fn guard(&self) -> Result<LockProxyGuard<'_>, ManagerError> {
        self.acquire()?;
        Ok(LockProxyGuard(self))
    }
    /// Condition only: releases, waits for a notify (or `timeout`), reacquires. Whether it
    /// was notified.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<bool, ManagerError> {
        call(&self.core, &LockOp::Wait(timeout))
    }
    /// Condition only: wakes up to `n` waiters (the lock must be held).
    pub fn notify(&self, n: usize) -> Result<(), ManagerError> {
        call(&self.core, &LockOp::Notify(n))
    }
    /// Condition only: wakes every waiter.
    pub fn notify_all(&self) -> Result<(), ManagerError> {
        call(&self.core, &LockOp::NotifyAll)
    }
    /// Condition only: waits until `pred()` holds, re-checking after each notify.
    pub fn wait_for(
        &self,
        mut pred: impl FnMut() -> bool,
        timeout: Option<Duration>,
    ) -> Result<bool, ManagerError> {
        let deadline = mp_ipc::deadline::Deadline::from_timeout(timeout);
        loop {
            if pred() {
                return Ok(true);
            }
            let left = deadline.remaining();
            if left == Some(Duration::ZERO) {
                return Ok(false);
            }
            self.wait(left)?;
        }
    }
}

/// Releases a [`LockProxy`] when dropped.
#[derive(Debug)]
pub struct LockProxyGuard<'a>(&'a LockProxy);

impl Drop for LockProxyGuard<'_> {
    fn drop(&mut self) {
        let _ = self.0.release();
    }
}

proxy_type! {
    /// An event in a manager (`Manager().Event()`).
    EventProxy<>
}

impl EventProxy {
    /// Sets the flag and wakes every waiter.
    pub fn set(&self) -> Result<(), ManagerError> {
        call(&self.core, &EventOp::Set)
    }
    /// Clears the flag.
    pub fn clear(&self) -> Result<(), ManagerError> {
        call(&self.core, &EventOp::Clear)
    }
    /// Whether the flag is set.
    pub fn is_set(&self) -> Result<bool, ManagerError> {
        call(&self.core, &EventOp::IsSet)
    }
    /// Waits until set, at most `timeout`; the flag at the end.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<bool, ManagerError> {
        call(&self.core, &EventOp::Wait(timeout))
    }
}

proxy_type! {
    /// A semaphore in a manager (`Semaphore()`, `BoundedSemaphore()`).
    SemaphoreProxy<>
}

impl SemaphoreProxy {
    /// Acquires, waiting without limit.
    pub fn acquire(&self) -> Result<(), ManagerError> {
        call::<bool, _>(&self.core, &SemOp::Acquire(true, None)).map(drop)
    }
    /// Acquires, waiting at most `timeout`; whether it was acquired.
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<bool, ManagerError> {
        call(&self.core, &SemOp::Acquire(true, Some(timeout)))
    }
    /// Acquires if possible now.
    pub fn try_acquire(&self) -> Result<bool, ManagerError> {
        call(&self.core, &SemOp::Acquire(false, None))
    }
    /// Releases `n`; past the bound of a bounded semaphore is a remote `ValueError`.
    pub fn release(&self, n: usize) -> Result<(), ManagerError> {
        call(&self.core, &SemOp::Release(n))
    }
    /// The current value.
    pub fn value(&self) -> Result<usize, ManagerError> {
        call(&self.core, &SemOp::Value)
    }
}

proxy_type! {
    /// A barrier in a manager (`Manager().Barrier(n)`).
    BarrierProxy<>
}

impl BarrierProxy {
    /// Waits for all parties; returns this caller's arrival index, or
    /// [`BrokenBarrierError`](crate::BrokenBarrierError)-like [`ManagerError::BrokenBarrier`].
    pub fn wait(&self, timeout: Option<Duration>) -> Result<usize, ManagerError> {
        call::<BarrierReply, _>(&self.core, &BarrierOp::Wait(timeout))?
            .map_err(|()| ManagerError::BrokenBarrier)
    }
    /// Breaks the barrier: current and future waiters fail.
    pub fn abort(&self) -> Result<(), ManagerError> {
        call(&self.core, &BarrierOp::Abort)
    }
    /// Back to the initial state; current waiters fail.
    pub fn reset(&self) -> Result<(), ManagerError> {
        call(&self.core, &BarrierOp::Reset)
    }
    /// Number of parties.
    pub fn parties(&self) -> Result<usize, ManagerError> {
        call(&self.core, &BarrierOp::Parties)
    }
    /// Number of parties waiting now.
    pub fn n_waiting(&self) -> Result<usize, ManagerError> {
        call(&self.core, &BarrierOp::NWaiting)
    }
    /// Whether it is broken.
    pub fn broken(&self) -> Result<bool, ManagerError> {
        call(&self.core, &BarrierOp::Broken)
    }
}

/// A proxy for an object of a user-registered [`Service`] type.
///
/// A service's response may hold proxies to new objects, made in the server with
/// [`Proxy::serve`]: Python's `method_to_typeid`, a method that returns a new shared object.
/// The caller receives a proxy to it, and the object lives, like any other, while a proxy
/// refers to it.
pub struct Proxy<S> {
    inner: ProxyInner<S>,
}

enum ProxyInner<S> {
    /// A reference to an object of a manager.
    Remote(ProxyCore),
    /// In a service's call, a new object (see [`Proxy::serve`]), taken into the server's
    /// table when the response is encoded.
    New(std::sync::Mutex<Option<S>>),
}

fn not_served() -> ManagerError {
    ManagerError::Remote(super::RemoteError::new(
        "ValueError",
        "this proxy is for an object not served yet (made with Proxy::serve): only the \
         caller that receives it in a service's response can use it",
    ))
}

impl<S: Service> Proxy<S> {
    pub(crate) fn from_core(core: ProxyCore) -> Self {
        Self {
            inner: ProxyInner::Remote(core),
        }
    }

    /// In a service's [`call`](Service::call) (in the manager's server): `value` as a new
    /// object of the server, to be returned in the response, where the caller receives a
    /// proxy to it (Python's `method_to_typeid`). `S` must be registered with the server's
    /// [`Services`](super::Services), as Python requires of a typeid: otherwise the call
    /// fails with a remote `KeyError` and nothing is made. Sent anywhere else, or used
    /// before it is sent, the proxy is an error.
    ///
    /// ```
    /// use mp_core::manager::{Manager, Proxy, Registry, RemoteError, Service, Services};
    /// use serde::{Deserialize, Serialize};
    ///
    /// /// A counter, made by a `Counters` service.
    /// struct Counter(u64);
    /// impl Service for Counter {
    ///     const NAME: &'static str = "Counter";
    ///     type Init = u64;
    ///     type Request = ();
    ///     type Response = u64;
    ///     fn create(start: u64) -> Result<Self, RemoteError> { Ok(Counter(start)) }
    ///     fn call(&mut self, _: ()) -> Result<u64, RemoteError> { self.0 += 1; Ok(self.0) }
    /// }
    ///
    /// struct Counters;
    /// impl Service for Counters {
    ///     const NAME: &'static str = "Counters";
    ///     type Init = ();
    ///     type Request = u64; // a counter starting here
    ///     type Response = Proxy<Counter>;
    ///     fn create(_: ()) -> Result<Self, RemoteError> { Ok(Counters) }
    ///     fn call(&mut self, start: u64) -> Result<Proxy<Counter>, RemoteError> {
    ///         Ok(Proxy::serve(Counter(start)))
    ///     }
    /// }
    ///
    /// enum Mine {}
    /// impl Services for Mine {
    ///     fn register(r: &mut Registry) {
    ///         r.register::<Counters>().register::<Counter>();
    ///     }
    /// }
    ///
    /// let m = Manager::builder::<Mine>().start().unwrap();
    /// let factory = m.create::<Counters>(&()).unwrap();
    /// let counter = factory.call(&41).unwrap(); // a proxy to a new object
    /// assert_eq!(counter.call(&()).unwrap(), 42);
    /// assert_eq!(m.object_count().unwrap(), 2);
    /// drop(counter); // its last proxy: the server frees it
    /// assert_eq!(m.object_count().unwrap(), 1);
    /// ```
    pub fn serve(value: S) -> Self {
        Self {
            inner: ProxyInner::New(std::sync::Mutex::new(Some(value))),
        }
    }

    fn core(&self) -> Result<&ProxyCore, ManagerError> {
        match &self.inner {
            ProxyInner::Remote(core) => Ok(core),
            ProxyInner::New(_) => Err(not_served()),
        }
    }

    /// Calls the object: one request, one response. A request the server's type cannot
    /// decode (a method it does not expose) is a remote `RemoteError`; an error returned by
    /// the service comes back as [`ManagerError::Remote`] with its kind.
    pub fn call(&self, request: &S::Request) -> Result<S::Response, ManagerError> {
        let core = self.core()?;
        let w: WireBlob = call(core, &enc(core, request)?)?;
        decode_value(&w)
    }

    /// A second proxy for the same object.
    pub fn try_clone(&self) -> Result<Self, ManagerError> {
        Ok(Self::from_core(self.core()?.try_clone()?))
    }

    /// The object's id in its manager (0 for a proxy of [`serve`](Self::serve) not sent
    /// yet).
    pub fn id(&self) -> u64 {
        self.core().map_or(0, |c| c.id)
    }
}

impl<S: Service> Serialize for Proxy<S> {
    fn serialize<Se: Serializer>(&self, s: Se) -> Result<Se::Ok, Se::Error> {
        match &self.inner {
            ProxyInner::Remote(core) => core.serialize(s),
            ProxyInner::New(value) => {
                let value = value
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
                    .ok_or_else(|| serde::ser::Error::custom("a new object's proxy sent twice"))?;
                let made = super::server::serve_new(value).map_err(serde::ser::Error::custom)?;
                super::client::serialize_new(&made, S::NAME, s)
            }
        }
    }
}

impl<'de, S: Service> Deserialize<'de> for Proxy<S> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let core = ProxyCore::deserialize(d)?;
        if core.typeid != S::NAME {
            let why = format!(
                "a proxy to a {:?} object where a proxy to {:?} was expected",
                core.typeid,
                S::NAME
            );
            // The reference it carries is released here.
            drop(core);
            return Err(crate::codec::refuse(why));
        }
        Ok(Self::from_core(core))
    }
}

impl<S> std::fmt::Debug for Proxy<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            ProxyInner::Remote(core) => core.fmt(f),
            ProxyInner::New(_) => write!(f, "<new object, not served yet>"),
        }
    }
}
