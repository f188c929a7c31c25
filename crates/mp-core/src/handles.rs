//! How OS handles inside a process argument, a message, a pool task or a queue item reach the
//! other process.
//!
//! Every shareable object (a connection, a queue, a lock and the other primitives, a shared
//! value or array, an [`OsHandle`]) serializes its OS handles through
//! [`serialize_handle`] and takes them back through [`deserialize_handle`]. What a handle
//! becomes on the wire depends on where the value is going, chosen by the thread-local
//! *outbox* active while mp serializes it:
//!
//! - **beside the bytes** ([`encode_with_handles`], [`with_outbox`]): a process argument, a
//!   message on a connection, a pool's initializer argument and task arguments. Each handle
//!   records its raw value in the outbox and serializes only its index; the handles travel
//!   with the bytes (`SCM_RIGHTS` on Unix; on Windows duplicated into a spawned child, or
//!   taken out of the sender by the receiver of a message) and fill the receiver's *inbox*,
//!   where each object takes its handle back by index ([`decode_with_handles`],
//!   [`with_inbox`]).
//! - **handed off** ([`encode_handoff`]): a queue item, which is bytes in a spool file with
//!   no channel beside them. Each handle is *exported*: the sender keeps a private duplicate
//!   that the receiver fetches when it decodes the item, as Python's
//!   `multiprocessing.resource_sharer` does. On Unix the duplicates wait in a per-process
//!   handle server (a Unix socket that hands them over with `SCM_RIGHTS` to whoever presents
//!   the item's random 128-bit key, once); on Windows the receiver takes each one out of the
//!   sender with `DuplicateHandle` (as Python's `DupHandle`). Either way the sender must
//!   still be running when the item is read; an item never read keeps its duplicates open
//!   in the sender until it exits. The serialized form is a *ticket* ([`sys::Ticket`]).
//!
//! Serialized any other way (a pool task's result, a manager's value, any serializer of the
//! user's), a handle-owning object refuses, rather than writing a number that means nothing
//! elsewhere; [`take_note`] then says why, since postcard drops custom error messages.
//!
//! A new shareable type plugs in by serializing each of its OS handles with
//! [`serialize_handle`] (for example through a small `Serialize` wrapper around
//! `&OwnedHandle`) and deserializing it with [`deserialize_handle`] (or as an [`OsHandle`]):
//! it then travels in all the places above with no further code.

use std::cell::RefCell;
use std::thread::LocalKey;

use mp_ipc::handle::{OwnedHandle, RawHandle};
use serde::de::{DeserializeOwned, Error as _};
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::sys;

/// Where the handles of the value being serialized go.
enum Out {
    /// Beside the bytes: raw handles, in order.
    Beside(Vec<RawHandle>),
    /// Handed off: exported for the receiver to fetch.
    Handoff(sys::Exporter),
}

/// Where the handles of the value being deserialized come from.
enum In {
    /// Received beside the bytes, claimed by index.
    Beside(Vec<Option<OwnedHandle>>),
    /// Fetched from their exporter, by ticket.
    Handoff(sys::Importer),
    /// Only looking: the first handle stops the decoding (see [`decode_probe`]).
    Probe { hit: bool },
}

thread_local! {
    static OUTBOX: RefCell<Option<Out>> = const { RefCell::new(None) };
    static INBOX: RefCell<Option<In>> = const { RefCell::new(None) };
    /// Why the last handle failed to serialize or deserialize on this thread.
    static NOTE: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Restores a thread-local box to what it held before a scope, even if the scope panics.
struct Restore<T: 'static> {
    key: &'static LocalKey<RefCell<Option<T>>>,
    previous: Option<Option<T>>,
    mine: Option<T>,
}

impl<T: 'static> Restore<T> {
    fn install(key: &'static LocalKey<RefCell<Option<T>>>, value: T) -> Self {
        let previous = key.with(|k| k.replace(Some(value)));
        Self {
            key,
            previous: Some(previous),
            mine: None,
        }
    }

    /// Ends the scope: the box holds its previous value again; returns this scope's.
    fn finish(mut self) -> Option<T> {
        self.swap_back();
        self.mine.take()
    }

    fn swap_back(&mut self) {
        if let Some(previous) = self.previous.take() {
            self.mine = self.key.with(|k| k.replace(previous));
        }
    }
}

impl<T: 'static> Drop for Restore<T> {
    fn drop(&mut self) {
        self.swap_back();
    }
}

fn note(message: String) {
    NOTE.with(|n| *n.borrow_mut() = Some(message));
}

/// Why the last handle on this thread could not be serialized or deserialized, if one
/// could not (cleared by reading it).
pub(crate) fn take_note() -> Option<String> {
    NOTE.with(|n| n.borrow_mut().take())
}

/// `error`'s text, followed by the reason a handle failed if that is what happened.
pub(crate) fn explain(error: &dyn std::fmt::Display) -> String {
    match take_note() {
        Some(why) => format!("{error}: {why}"),
        None => error.to_string(),
    }
}

/// Runs `f` (which serializes) with an outbox for handles beside the bytes; returns its
/// result and the raw handles collected, indexed from zero in this scope.
pub(crate) fn with_outbox<R>(f: impl FnOnce() -> R) -> (R, Vec<RawHandle>) {
    let scope = Restore::install(&OUTBOX, Out::Beside(Vec::new()));
    let r = f();
    let handles = match scope.finish() {
        Some(Out::Beside(v)) => v,
        _ => Vec::new(),
    };
    (r, handles)
}

/// Runs `f` (which deserializes) with `handles` in the inbox; handles nobody took are closed.
pub(crate) fn with_inbox<R>(handles: Vec<OwnedHandle>, f: impl FnOnce() -> R) -> R {
    let scope = Restore::install(&INBOX, In::Beside(handles.into_iter().map(Some).collect()));
    let r = f();
    drop(scope.finish());
    r
}

/// Serializes `value`, collecting the raw handles of the shareable objects inside it.
pub(crate) fn encode_with_handles<T: Serialize + ?Sized>(
    value: &T,
) -> Result<(Vec<u8>, Vec<RawHandle>), postcard::Error> {
    let (bytes, handles) = with_outbox(|| postcard::to_stdvec(value));
    Ok((bytes?, handles))
}

/// Deserializes `bytes`, handing `handles` to the shareable objects inside. Handles nobody
/// took are closed.
pub(crate) fn decode_with_handles<T: DeserializeOwned>(
    bytes: &[u8],
    handles: Vec<OwnedHandle>,
) -> Result<T, crate::DecodeError> {
    with_inbox(handles, || crate::codec::decode(bytes))
}

/// Duplicates raw handles (collected by [`with_outbox`]) into handles of our own, so that
/// they outlive the objects they came from.
pub(crate) fn duplicate_all(handles: &[RawHandle]) -> std::io::Result<Vec<OwnedHandle>> {
    handles.iter().map(|&h| sys::duplicate_handle(h)).collect()
}

/// The handles an item exported while it was encoded for a queue: kept (the item was
/// queued) or withdrawn (it was not).
pub(crate) struct Handoff(Option<sys::Exporter>);

impl Handoff {
    /// The item was not queued: its exported duplicates are closed.
    pub(crate) fn withdraw(self) {
        if let Some(e) = self.0 {
            e.withdraw();
        }
    }
}

/// Runs `f` (which serializes a queue item) with handles handed off: each is exported and
/// serialized as a ticket. The returned [`Handoff`] must be withdrawn if the item is not
/// queued after all.
pub(crate) fn encode_handoff<R>(f: impl FnOnce() -> R) -> (R, Handoff) {
    let scope = Restore::install(&OUTBOX, Out::Handoff(sys::Exporter::new()));
    let r = f();
    let exporter = match scope.finish() {
        Some(Out::Handoff(e)) => Some(e),
        _ => None,
    };
    (r, Handoff(exporter))
}

/// What [`decode_probe`] found.
pub(crate) enum Probe<T> {
    /// The item holds no handle: here it is (or why it does not decode).
    Done(Result<T, crate::DecodeError>),
    /// The item holds handles: decode a copy with [`decode_handoff`], away from any lock.
    Handles(Vec<u8>),
}

/// Decodes a queue item that holds no handle, without fetching anything; an item with
/// handles is copied instead, since fetching them talks to another process and must not
/// happen under the queue's lock.
pub(crate) fn decode_probe<T: DeserializeOwned>(bytes: &[u8]) -> Probe<T> {
    let scope = Restore::install(&INBOX, In::Probe { hit: false });
    let value = crate::codec::decode(bytes);
    let hit = matches!(scope.finish(), Some(In::Probe { hit: true }));
    if hit {
        drop(value);
        take_note();
        Probe::Handles(bytes.to_vec())
    } else {
        Probe::Done(value)
    }
}

/// Decodes a queue item made by [`encode_handoff`], fetching its handles from the process
/// that put it. Fetched handles nobody took are closed.
pub(crate) fn decode_handoff<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, crate::DecodeError> {
    let scope = Restore::install(&INBOX, In::Handoff(sys::Importer::new()));
    let value = crate::codec::decode(bytes);
    drop(scope.finish());
    value
}

/// The text of the refusal to serialize a handle outside of mp's own carriers.
const NOWHERE: &str =
    "an object holding an OS handle (a Connection, Queue, Lock, RLock, Semaphore, \
     Event, Condition, Barrier, Value, Array or OsHandle) can travel only as a process \
     argument, inside a message on a connection, in a queue item, or in a pool's task or \
     initializer argument; this serializer cannot carry it (a pool task's result or a \
     manager's value, for example)";

/// The `Serialize` of a handle-owning object: its index in the outbox, or its ticket.
pub(crate) fn serialize_handle<S: Serializer>(handle: RawHandle, s: S) -> Result<S::Ok, S::Error> {
    enum Wire {
        Index(u32),
        Ticket(sys::Ticket),
        Failed(String),
        Nowhere,
    }
    let wire = OUTBOX.with(|o| match o.borrow_mut().as_mut() {
        None => Wire::Nowhere,
        Some(Out::Beside(v)) => {
            v.push(handle);
            Wire::Index((v.len() - 1) as u32)
        }
        Some(Out::Handoff(e)) => match e.export(handle) {
            Ok(t) => Wire::Ticket(t),
            Err(err) => Wire::Failed(format!("cannot export a handle for a queue item: {err}")),
        },
    });
    match wire {
        Wire::Index(i) => i.serialize(s),
        Wire::Ticket(t) => t.serialize(s),
        Wire::Failed(m) => {
            note(m.clone());
            Err(S::Error::custom(m))
        }
        Wire::Nowhere => {
            note(NOWHERE.to_string());
            Err(S::Error::custom(NOWHERE))
        }
    }
}

/// The `Deserialize` of a handle-owning object: takes its handle out of the inbox.
pub(crate) fn deserialize_handle<'de, D: Deserializer<'de>>(d: D) -> Result<OwnedHandle, D::Error> {
    let fail = |m: String| {
        note(m.clone());
        D::Error::custom(m)
    };
    let mode = INBOX.with(|i| match i.borrow().as_ref() {
        None => 0,
        Some(In::Beside(_)) => 1,
        Some(In::Handoff(_)) => 2,
        Some(In::Probe { .. }) => 3,
    });
    match mode {
        1 => {
            let index = u32::deserialize(d)? as usize;
            INBOX.with(|i| {
                let mut inbox = i.borrow_mut();
                let Some(In::Beside(slots)) = inbox.as_mut() else {
                    return Err(fail("the handle inbox changed while decoding".into()));
                };
                let slot = slots.get_mut(index).ok_or_else(|| {
                    fail(format!("handle {index} was not passed to this process"))
                })?;
                slot.take()
                    .ok_or_else(|| fail(format!("handle {index} was claimed twice")))
            })
        }
        2 => {
            let ticket = sys::Ticket::deserialize(d)?;
            INBOX.with(|i| {
                let mut inbox = i.borrow_mut();
                let Some(In::Handoff(importer)) = inbox.as_mut() else {
                    return Err(fail("the handle inbox changed while decoding".into()));
                };
                importer
                    .import(&ticket)
                    .map_err(|e| fail(format!("cannot take a handle of a queue item: {e}")))
            })
        }
        3 => {
            INBOX.with(|i| {
                if let Some(In::Probe { hit }) = i.borrow_mut().as_mut() {
                    *hit = true;
                }
            });
            Err(D::Error::custom("the item holds handles"))
        }
        _ => Err(fail(
            "an object holding an OS handle can only be deserialized by mp (in a child's \
             argument, a message, a queue item or a pool task)"
                .into(),
        )),
    }
}

/// An OS handle (a file descriptor on Unix) that can travel inside a process argument, a
/// message, a queue item or a pool task: the receiver gets its own copy. Python's
/// `reduction.send_handle` / `recv_handle`, as a value.
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

/// Handles owned once and passed to every process that needs them (a pool's initializer
/// argument, given to each worker it starts). Serialized beside the bytes; a receiver gets
/// its own copies.
#[derive(Debug, Clone, Default)]
pub(crate) struct SharedHandles(std::sync::Arc<Vec<OwnedHandle>>);

impl SharedHandles {
    pub(crate) fn new(handles: Vec<OwnedHandle>) -> Self {
        Self(std::sync::Arc::new(handles))
    }

    /// Whether there are none (an MPI pool and a manager's pool refuse an initializer
    /// argument holding any).
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Handles of our own: the ones received, or duplicates while others share them (a
    /// forked child shares its parent's copy).
    pub(crate) fn into_owned(self) -> std::io::Result<Vec<OwnedHandle>> {
        match std::sync::Arc::try_unwrap(self.0) {
            Ok(v) => Ok(v),
            Err(shared) => shared
                .iter()
                .map(|h| sys::duplicate_handle(mp_ipc::handle::raw_of(h)))
                .collect(),
        }
    }
}

impl Serialize for SharedHandles {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for h in self.0.iter() {
            seq.serialize_element(&RawRef(mp_ipc::handle::raw_of(h)))?;
        }
        seq.end()
    }
}

/// A raw handle serialized through [`serialize_handle`].
struct RawRef(RawHandle);

impl Serialize for RawRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_handle(self.0, s)
    }
}

impl<'de> Deserialize<'de> for SharedHandles {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Vec::<OsHandle>::deserialize(d)?;
        Ok(Self::new(v.into_iter().map(OsHandle::into_inner).collect()))
    }
}

/// The outbox and inbox bookkeeping, which Miri runs (`cargo xtask miri`): real handles
/// (an open file) only where a handle is taken back as owned.
#[cfg(test)]
mod tests {
    use super::*;

    fn a_handle() -> OwnedHandle {
        std::fs::File::open(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
            .unwrap()
            .into()
    }

    #[test]
    fn the_outbox_collects_raw_handles_and_serializes_their_indexes() {
        let (a, b) = (a_handle(), a_handle());
        let (ra, rb) = (mp_ipc::handle::raw_of(&a), mp_ipc::handle::raw_of(&b));
        let value = (7u8, RawRef(ra), RawRef(rb), RawRef(ra));
        let (bytes, raw) = encode_with_handles(&value).unwrap();
        assert_eq!(raw, vec![ra, rb, ra]);
        let wire: (u8, u32, u32, u32) = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(wire, (7, 0, 1, 2));
    }

    #[test]
    fn without_an_outbox_a_handle_refuses_and_says_why() {
        let a = a_handle();
        take_note();
        assert!(postcard::to_stdvec(&RawRef(mp_ipc::handle::raw_of(&a))).is_err());
        assert!(take_note().is_some_and(|n| n.contains("can travel only")));
        assert!(take_note().is_none(), "reading the note clears it");
        assert!(explain(&"x").starts_with('x'));
    }

    #[test]
    fn scopes_nest_and_are_restored_after_a_panic() {
        let a = a_handle();
        let ra = mp_ipc::handle::raw_of(&a);
        let ((inner, outer_bytes), outer) = with_outbox(|| {
            let inner = with_outbox(|| postcard::to_stdvec(&RawRef(ra)).unwrap());
            (
                inner,
                postcard::to_stdvec(&(RawRef(ra), RawRef(ra))).unwrap(),
            )
        });
        assert_eq!(inner.1.len(), 1, "the inner scope has its own outbox");
        assert_eq!(outer.len(), 2, "the outer scope's is intact after it");
        assert_eq!(
            postcard::from_bytes::<(u32, u32)>(&outer_bytes).unwrap(),
            (0, 1)
        );
        let r = std::panic::catch_unwind(|| {
            with_outbox(|| -> () { panic!("serializing failed") });
        });
        assert!(r.is_err());
        assert!(
            postcard::to_stdvec(&RawRef(ra)).is_err(),
            "the outbox of a scope that panicked is gone"
        );
        let r = std::panic::catch_unwind(|| {
            with_inbox(vec![a_handle()], || -> () { panic!("decoding failed") });
        });
        assert!(r.is_err());
        assert!(
            crate::codec::decode::<OsHandle>(&postcard::to_stdvec(&0u32).unwrap()).is_err(),
            "the inbox of a scope that panicked is gone"
        );
    }

    #[test]
    fn the_inbox_hands_each_handle_out_once_by_index() {
        let bytes = postcard::to_stdvec(&(1u32, 0u32)).unwrap();
        let (x, y) =
            decode_with_handles::<(OsHandle, OsHandle)>(&bytes, vec![a_handle(), a_handle()])
                .unwrap();
        assert_ne!(
            mp_ipc::handle::raw_of(&x.into_inner()),
            mp_ipc::handle::raw_of(&y.into_inner())
        );
        let twice = postcard::to_stdvec(&(0u32, 0u32)).unwrap();
        assert!(decode_with_handles::<(OsHandle, OsHandle)>(&twice, vec![a_handle()]).is_err());
        assert!(take_note().is_some_and(|n| n.contains("claimed twice")));
        let missing = postcard::to_stdvec(&5u32).unwrap();
        assert!(decode_with_handles::<OsHandle>(&missing, vec![a_handle()]).is_err());
        assert!(take_note().is_some_and(|n| n.contains("was not passed")));
        // Unclaimed handles are simply closed.
        let none = postcard::to_stdvec(&3u8).unwrap();
        assert_eq!(
            decode_with_handles::<u8>(&none, vec![a_handle(), a_handle()]).unwrap(),
            3
        );
    }

    #[test]
    fn a_probe_stops_at_the_first_handle() {
        let plain = postcard::to_stdvec(&(1u8, 2u16)).unwrap();
        assert!(matches!(
            decode_probe::<(u8, u16)>(&plain),
            Probe::Done(Ok((1, 2)))
        ));
        let with = postcard::to_stdvec(&0u32).unwrap();
        match decode_probe::<OsHandle>(&with) {
            Probe::Handles(b) => assert_eq!(b, with),
            Probe::Done(_) => panic!("a handle went unnoticed"),
        }
        assert!(take_note().is_none(), "a probe leaves no note");
    }

    #[test]
    fn shared_handles_serialize_beside_the_bytes() {
        let shared = SharedHandles::new(vec![a_handle(), a_handle()]);
        let (bytes, raw) = encode_with_handles(&shared).unwrap();
        assert_eq!(raw.len(), 2);
        let back: SharedHandles =
            decode_with_handles(&bytes, vec![a_handle(), a_handle()]).unwrap();
        assert_eq!(back.into_owned().unwrap().len(), 2);
        assert!(!shared.is_empty());
    }
}
