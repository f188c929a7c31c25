//! How OS handles inside a process argument reach the child.
//!
//! While an argument is serialized for a child, a thread-local *outbox* is active: each
//! connection inside it records its raw handle there and serializes only its index. The
//! handles then travel beside the bytes (`SCM_RIGHTS` on Unix). In the child, the received
//! handles fill a thread-local *inbox*, and each connection being deserialized takes its
//! handle back by index. Outside of these two moments a connection cannot be serialized,
//! which is an error rather than a silently dangling handle.

use std::cell::RefCell;

use mp_ipc::handle::{OwnedHandle, RawHandle};
use serde::de::{DeserializeOwned, Error as _};
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

thread_local! {
    static OUTBOX: RefCell<Option<Vec<RawHandle>>> = const { RefCell::new(None) };
    static INBOX: RefCell<Option<Vec<Option<OwnedHandle>>>> = const { RefCell::new(None) };
}

/// Serializes `value`, collecting the raw handles of the connections inside it.
pub(crate) fn encode_with_handles<T: Serialize + ?Sized>(
    value: &T,
) -> Result<(Vec<u8>, Vec<RawHandle>), postcard::Error> {
    OUTBOX.with(|o| *o.borrow_mut() = Some(Vec::new()));
    let bytes = postcard::to_stdvec(value);
    let handles = OUTBOX.with(|o| o.borrow_mut().take()).unwrap_or_default();
    Ok((bytes?, handles))
}

/// Deserializes `bytes`, handing `handles` to the connections inside. Handles nobody took
/// are closed.
pub(crate) fn decode_with_handles<T: DeserializeOwned>(
    bytes: &[u8],
    handles: Vec<OwnedHandle>,
) -> Result<T, postcard::Error> {
    INBOX.with(|i| *i.borrow_mut() = Some(handles.into_iter().map(Some).collect()));
    let value = postcard::from_bytes(bytes);
    INBOX.with(|i| i.borrow_mut().take());
    value
}

/// The `Serialize` of a handle-owning object: its index in the outbox.
pub(crate) fn serialize_handle<S: Serializer>(handle: RawHandle, s: S) -> Result<S::Ok, S::Error> {
    let index = OUTBOX.with(|o| {
        o.borrow_mut().as_mut().map(|v| {
            v.push(handle);
            v.len() - 1
        })
    });
    match index {
        Some(i) => (i as u32).serialize(s),
        None => Err(S::Error::custom(
            "a connection can only be serialized as an argument of a process being started",
        )),
    }
}

/// The `Deserialize` of a handle-owning object: takes its handle out of the inbox.
pub(crate) fn deserialize_handle<'de, D: Deserializer<'de>>(d: D) -> Result<OwnedHandle, D::Error> {
    let index = u32::deserialize(d)? as usize;
    INBOX.with(|i| {
        let mut inbox = i.borrow_mut();
        let slot = inbox
            .as_mut()
            .ok_or_else(|| {
                D::Error::custom("a connection can only be deserialized by a child process")
            })?
            .get_mut(index)
            .ok_or_else(|| {
                D::Error::custom(format!("handle {index} was not passed to this process"))
            })?;
        slot.take()
            .ok_or_else(|| D::Error::custom(format!("handle {index} was claimed twice")))
    })
}
