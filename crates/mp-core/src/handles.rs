//! How OS handles inside a process argument or a message reach the other process.
//!
//! While a value is serialized by mp (a process argument, or a message sent on a
//! connection), a thread-local *outbox* is active: each connection or [`OsHandle`] inside it
//! records its raw handle there and serializes only its index. The handles then travel beside
//! the bytes (`SCM_RIGHTS` on Unix; on Windows duplicated into a spawned child, or taken out
//! of the sender by the receiver of a message). On the receiving
//! side, the handles fill a thread-local *inbox*, and each object being deserialized takes its
//! handle back by index. Serialized any other way (say, to a file), a handle-owning object
//! refuses, rather than writing a number that means nothing elsewhere.

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
) -> Result<T, crate::DecodeError> {
    INBOX.with(|i| *i.borrow_mut() = Some(handles.into_iter().map(Some).collect()));
    let value = crate::codec::decode(bytes);
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
            "an OS handle can only be serialized by mp, as a process argument or inside a message",
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

/// An OS handle (a file descriptor on Unix) that can travel inside a process argument or a
/// message: the receiver gets its own copy. Python's `reduction.send_handle` /
/// `recv_handle`, as a value.
///
/// ```
/// use mp_core::{pipe, OsHandle};
/// let (a, b) = pipe::<OsHandle>().unwrap();
/// let file = std::fs::File::open("Cargo.toml").unwrap();
/// a.send(&OsHandle::from(file)).unwrap();
/// let copy = std::fs::File::from(b.recv().unwrap());
/// assert!(copy.metadata().unwrap().len() > 0);
/// ```
#[derive(Debug)]
pub struct OsHandle(OwnedHandle);

impl OsHandle {
    /// The owned handle.
    pub fn into_inner(self) -> OwnedHandle {
        self.0
    }
}

impl From<OwnedHandle> for OsHandle {
    fn from(h: OwnedHandle) -> Self {
        Self(h)
    }
}

impl From<std::fs::File> for OsHandle {
    fn from(f: std::fs::File) -> Self {
        Self(f.into())
    }
}

impl From<OsHandle> for std::fs::File {
    fn from(h: OsHandle) -> Self {
        h.0.into()
    }
}

impl Serialize for OsHandle {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_handle(mp_ipc::handle::raw_of(&self.0), s)
    }
}

impl<'de> Deserialize<'de> for OsHandle {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_handle(d).map(Self)
    }
}
