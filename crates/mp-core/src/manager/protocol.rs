//! What travels between a manager's clients and its server.
//!
//! Every request and reply is one postcard-encoded frame. Values stored in the server are
//! opaque encoded bytes ([`WireBlob`]) plus the ids of the manager objects the value refers
//! to (proxies inside it): the server keeps those objects alive as long as it keeps the
//! value, which is how nested proxies (a list of lists) stay shared.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::server::Budget;
use super::RemoteError;

/// An encoded value and the ids of the proxies (of the receiving server) inside it. Each id
/// listed is one reference the receiver takes over.
///
/// Decoded in a server thread, each one is charged to the server's memory budget while the
/// request is decoded (see [`decoding_with`]): a request of many small values takes far more
/// memory decoded than on the wire, and may not take more than the budget allows.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct WireBlob {
    pub(crate) bytes: Vec<u8>,
    pub(crate) refs: Vec<u64>,
}

/// The wire form of [`WireBlob`] (the same fields, decoded without a charge).
#[derive(Deserialize)]
#[serde(rename = "WireBlob")]
struct WireBlobFields {
    bytes: Vec<u8>,
    refs: Vec<u64>,
}

impl<'de> Deserialize<'de> for WireBlob {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let WireBlobFields { bytes, refs } = WireBlobFields::deserialize(d)?;
        let cost = (std::mem::size_of::<WireBlob>() + 16 + bytes.capacity())
            .saturating_add(refs.capacity().saturating_mul(8));
        charge_decoded(cost as u64).map_err(serde::de::Error::custom)?;
        Ok(Self { bytes, refs })
    }
}

/// While a server thread decodes a request: the budget, what decoding took from it so far,
/// and the error that stopped it.
struct Decoding {
    budget: Arc<Budget>,
    taken: u64,
    failed: Option<RemoteError>,
}

thread_local! {
    static DECODING: RefCell<Option<Decoding>> = const { RefCell::new(None) };
}

/// Runs `f` (a server thread's handling of one request) with decoded values charged to
/// `budget` while they are decoded.
pub(crate) fn decoding_with<R>(budget: &Arc<Budget>, f: impl FnOnce() -> R) -> R {
    struct Reset(Option<Decoding>);
    impl Drop for Reset {
        fn drop(&mut self) {
            let _ = decoded();
            DECODING.with(|d| *d.borrow_mut() = self.0.take());
        }
    }
    let saved = DECODING.with(|d| {
        d.borrow_mut().replace(Decoding {
            budget: budget.clone(),
            taken: 0,
            failed: None,
        })
    });
    let _reset = Reset(saved);
    f()
}

fn charge_decoded(n: u64) -> Result<(), String> {
    DECODING.with(|d| {
        let mut d = d.borrow_mut();
        let Some(dec) = d.as_mut() else {
            return Ok(());
        };
        match dec.budget.take(n) {
            Ok(()) => {
                dec.taken += n;
                Ok(())
            }
            Err(e) => {
                let text = e.to_string();
                dec.failed = Some(e);
                Err(text)
            }
        }
    })
}

/// Ends one decoding: gives back what it took (the values decoded are charged again when
/// stored), and returns the error if the budget ran out during it.
pub(crate) fn decoded() -> Option<RemoteError> {
    DECODING.with(|d| {
        let mut d = d.borrow_mut();
        let dec = d.as_mut()?;
        dec.budget.give_back(std::mem::take(&mut dec.taken));
        dec.failed.take()
    })
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request {
    /// Which server is this (its random instance id).
    Hello,
    /// Make an object of a registered type.
    Create {
        typeid: String,
        init: WireBlob,
    },
    /// Run an operation on an object. `caller` names the calling thread (lock ownership).
    Call {
        id: u64,
        caller: u64,
        op: Vec<u8>,
    },
    IncRef(u64),
    DecRef(u64),
    /// How many objects the server holds.
    Count,
    /// Stores a value (usually a proxy) under a name, for clients that only know the name.
    Publish {
        name: String,
        value: WireBlob,
    },
    /// The value published under a name, if any.
    Lookup {
        name: String,
    },
    Shutdown,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Reply {
    Ok(Vec<u8>),
    Err(RemoteError),
}

/// Python's `block` and `timeout` arguments: `None` waits without limit.
pub(crate) type Wait = Option<Duration>;

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum DictOp {
    Len,
    Get(Vec<u8>),
    Set(Vec<u8>, WireBlob),
    Del(Vec<u8>),
    Contains(Vec<u8>),
    Pop(Vec<u8>),
    PopItem,
    SetDefault(Vec<u8>, WireBlob),
    Update(Vec<(Vec<u8>, WireBlob)>),
    Keys,
    Values,
    Items,
    Clear,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ListOp {
    Len,
    Get(i64),
    Set(i64, WireBlob),
    Append(WireBlob),
    Extend(Vec<WireBlob>),
    Insert(i64, WireBlob),
    Pop(Option<i64>),
    Remove(Vec<u8>),
    Index(Vec<u8>),
    Count(Vec<u8>),
    Slice(i64, i64),
    All,
    Clear,
    Reverse,
    Repeat(usize),
    Replace(Vec<WireBlob>),
    /// `l[a:b] = items` (clamped like Python's slices).
    SetSlice(i64, i64, Vec<WireBlob>),
    /// Replaces the content only if it is still `expected` (element encodings): the write
    /// half of a read-modify-write done by the client (an atomic `sort`). Answers whether
    /// it replaced.
    ReplaceIf(Vec<Vec<u8>>, Vec<WireBlob>),
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum NsOp {
    Get(String),
    Set(String, WireBlob),
    Del(String),
    Names,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ValueOp {
    Get,
    Set(WireBlob),
    Swap(WireBlob),
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum QueueOp {
    /// Non-blocking when `block` is false.
    Put(WireBlob, bool, Wait),
    Get(bool, Wait),
    Len,
    TaskDone,
    Join(Wait),
    Full,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum LockOp {
    Acquire(bool, Wait),
    Release,
    Locked,
    /// Condition only.
    Wait(Wait),
    Notify(usize),
    NotifyAll,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum EventOp {
    Set,
    Clear,
    IsSet,
    Wait(Wait),
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum SemOp {
    Acquire(bool, Wait),
    Release(usize),
    Value,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum BarrierOp {
    Wait(Wait),
    Abort,
    Reset,
    Parties,
    NWaiting,
    Broken,
}
