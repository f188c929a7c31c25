//! The untyped connection under [`Connection`](super::Connection), [`Reader`](super::Reader)
//! and [`Writer`](super::Writer): a platform channel plus the per-end state.

use std::any::TypeId;
use std::cell::{Cell, RefCell};
use std::marker::PhantomData;
use std::sync::Mutex;
use std::time::Duration;

use mp_ipc::deadline::Deadline;
use mp_ipc::dispatch::{AnyEnd, BoxedEnd};
use mp_ipc::frame::{Prefix, PREFIX_MAX};
use mp_ipc::handle::{OwnedHandle, RawHandle};
use mp_ipc::DEFAULT_MAX_FRAME;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::transport::TRANSPORTS;
use crate::ConnectionError;

/// The handles of every open connection end in this process, so that a forked child can
/// close the ones its target was not given (as a spawned child never had them).
static LIVE_HANDLES: Mutex<Vec<LiveHandle>> = Mutex::new(Vec::new());

#[derive(Clone, Copy, PartialEq, Eq)]
struct LiveHandle(RawHandle);
// SAFETY: a raw handle is a plain number naming a kernel object; this list only compares
// and closes them.
unsafe impl Send for LiveHandle {}

/// The lock on the list of live handles, held across a fork.
pub(crate) struct LiveHandles(std::sync::MutexGuard<'static, Vec<LiveHandle>>);

/// Takes the live-handle list's lock, so that no other thread holds it at a fork.
pub(crate) fn lock_live_handles() -> LiveHandles {
    LiveHandles(live_handles())
}

fn live_handles() -> std::sync::MutexGuard<'static, Vec<LiveHandle>> {
    LIVE_HANDLES.lock().unwrap_or_else(|e| e.into_inner())
}

/// In a forked child: closes every connection handle inherited from the parent except
/// `keep`. The parent's connection objects are never dropped in the child (it does not
/// return from the fork), so nothing closes these handles twice.
pub(crate) fn close_inherited_connections_except(
    mut live: LiveHandles,
    keep: Option<&[RawHandle]>,
) {
    let Some(keep) = keep else { return };
    live.0.retain(|h| {
        if keep.contains(&h.0) {
            true
        } else {
            crate::sys::close_inherited(h.0);
            false
        }
    });
}

/// Receive buffers above this size are not kept between messages (a 1 MiB message, with
/// its few bytes of encoding, stays below it).
const SCRATCH_KEEP: usize = 4 << 20;

/// A framed channel end with its receive limit, its broken flag and a reusable buffer.
/// The `Cell`s make it `!Sync`: one thread uses an end at a time.
pub(crate) struct RawConnection {
    chan: Option<BoxedEnd>,
    max_len: u64,
    broken: Cell<bool>,
    scratch: RefCell<Vec<u8>>,
}

/// Dropping a connection forgets its handle too: a stale entry would make a later fork child
/// close whatever descriptor reuses the number.
impl Drop for RawConnection {
    fn drop(&mut self) {
        self.close();
    }
}

impl RawConnection {
    pub(crate) fn new(chan: BoxedEnd) -> Self {
        live_handles().extend(chan.handles().into_iter().map(LiveHandle));
        Self {
            chan: Some(chan),
            max_len: DEFAULT_MAX_FRAME,
            broken: Cell::new(false),
            scratch: RefCell::new(Vec::new()),
        }
    }

    pub(crate) fn pair<B: mp_ipc::Transport>() -> Result<(Self, Self), ConnectionError> {
        let (a, b) = mp_ipc::dispatch::pair::<B>()?;
        Ok((Self::new(a), Self::new(b)))
    }

    /// Wraps one end of a socket-backend channel.
    pub(crate) fn from_handle(h: OwnedHandle) -> std::io::Result<Self> {
        Ok(Self::new(Box::new(crate::sys::chan_from_handle(h)?)))
    }

    /// Rebuilds an end of transport `name` that came from another process (see
    /// [`mp_ipc::Endpoint::adopt`]).
    pub(crate) fn from_parts(
        name: &str,
        handles: Vec<OwnedHandle>,
        state: &[u8],
    ) -> std::io::Result<Self> {
        let Some(entry) = mp_ipc::dispatch::find(TRANSPORTS, name) else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("a connection of transport {name:?}, which this build does not have"),
            ));
        };
        Ok(Self::new((entry.adopt)(handles, state)?))
    }

    pub(crate) fn try_clone(&self) -> Result<Self, ConnectionError> {
        let mut clone = Self::new(self.chan()?.try_clone_any()?);
        clone.max_len = self.max_len;
        Ok(clone)
    }

    /// The handle `wait` polls.
    pub(crate) fn raw_handle(&self) -> Option<RawHandle> {
        self.chan.as_ref().and_then(|c| c.wait_handle())
    }

    /// See [`mp_ipc::Endpoint::confirm_ready`].
    pub(crate) fn recheck(&self) -> Option<bool> {
        self.chan.as_ref().and_then(|c| c.confirm_ready())
    }

    /// The second handle `wait` includes, if the backend has one (see
    /// [`mp_ipc::Endpoint::liveness_handle`]).
    pub(crate) fn liveness_handle(&self) -> Option<RawHandle> {
        self.chan.as_ref().and_then(|c| c.liveness_handle())
    }

    /// The name of this end's transport, if open.
    pub(crate) fn kind(&self) -> Option<&'static str> {
        self.chan.as_ref().map(|c| c.transport())
    }

    pub(crate) fn chan(&self) -> Result<&dyn AnyEnd, ConnectionError> {
        self.chan.as_deref().ok_or(ConnectionError::Closed)
    }

    pub(crate) fn close(&mut self) {
        if let Some(chan) = self.chan.take() {
            let mut live = live_handles();
            for h in chan.handles() {
                if let Some(i) = live.iter().position(|x| *x == LiveHandle(h)) {
                    live.swap_remove(i);
                }
            }
            drop(live);
            drop(chan);
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.chan.is_none()
    }

    pub(crate) fn set_max_len(&mut self, max_len: u64) {
        self.max_len = max_len;
    }

    pub(crate) fn send_bytes(&self, bytes: &[u8]) -> Result<(), ConnectionError> {
        Ok(self.chan()?.send_frame(&[bytes])?)
    }

    /// Sends bytes with OS handles beside them (the receiver gets copies): a pool's task
    /// frame whose arguments hold shareable objects.
    pub(crate) fn send_bytes_with_handles(
        &self,
        bytes: &[u8],
        handles: &[RawHandle],
    ) -> Result<(), ConnectionError> {
        Ok(self.chan()?.send_frame_with_handles(&[bytes], handles)?)
    }

    /// Receives bytes and the OS handles sent beside them (none for a frame without).
    pub(crate) fn recv_bytes_with_handles(
        &self,
    ) -> Result<(Vec<u8>, Vec<OwnedHandle>), ConnectionError> {
        let chan = self.chan()?;
        self.check_readable()?;
        let mut buf = Vec::new();
        let handles = chan
            .recv_frame_with_handles(&mut buf, self.max_len)
            .map_err(|e| self.note_framing_error(e.into()))?;
        Ok((buf, handles))
    }

    /// Sends a value; connections inside it travel as handles (the receiver gets copies).
    pub(crate) fn send_value<T: Serialize + ?Sized>(
        &self,
        value: &T,
    ) -> Result<(), ConnectionError> {
        let chan = self.chan()?;
        let (bytes, handles) =
            crate::handles::encode_with_handles(value).map_err(ConnectionError::Encode)?;
        Ok(chan.send_frame_with_handles(&[&bytes], &handles)?)
    }

    /// [`send_value`](Self::send_value) with a fast path for `Vec<u8>`: its encoding (a
    /// varint length, then the bytes, as postcard writes it) goes out as two parts of one
    /// frame, with no copy and no per-byte encoding. The receiver sees the same bytes either
    /// way.
    pub(crate) fn send_typed<T: Serialize>(&self, value: &T) -> Result<(), ConnectionError> {
        if !is_byte_vec::<T>() {
            return self.send_value(value);
        }
        // SAFETY: T is Vec<u8> (same type id; Vec<u8> has no lifetime that could differ).
        let bytes = unsafe { &*(value as *const T).cast::<Vec<u8>>() };
        let mut prefix = [0u8; 10];
        let k = encode_varint(bytes.len() as u64, &mut prefix);
        Ok(self.chan()?.send_frame(&[&prefix[..k], bytes])?)
    }

    /// [`recv_value`](Self::recv_value) with a fast path for `Vec<u8>`
    /// ([`recv_byte_vec`](Self::recv_byte_vec)) instead of a decode byte by byte into a
    /// growing vector.
    pub(crate) fn recv_typed<T: DeserializeOwned>(
        &self,
        timeout: Option<Duration>,
    ) -> Result<T, ConnectionError> {
        if !is_byte_vec::<T>() {
            return self.recv_value(timeout);
        }
        let bytes = std::mem::ManuallyDrop::new(self.recv_byte_vec(timeout)?);
        // SAFETY: T is Vec<u8> (checked above): this moves the vector out as a T, and the
        // original is not dropped.
        Ok(unsafe { std::mem::transmute_copy::<Vec<u8>, T>(&bytes) })
    }

    /// Receives a `Vec<u8>` as `send` writes it (postcard: a varint length, then the bytes)
    /// with the length split off by the transport, so that the bytes arrive in place in the
    /// vector returned: one copy, one allocation of the right size.
    fn recv_byte_vec(&self, timeout: Option<Duration>) -> Result<Vec<u8>, ConnectionError> {
        let chan = self.chan()?;
        self.check_readable()?;
        let mut prefix: Prefix = [0; PREFIX_MAX];
        let mut body = Vec::new();
        // Handles sent with a byte vector have nowhere to go: they are closed.
        let (n, _handles) = chan
            .recv_frame_split_until(
                &mut prefix,
                varint_prefix_len,
                &mut body,
                self.max_len,
                Deadline::from_timeout(timeout),
            )
            .map_err(|e| self.note_framing_error(e.into()))?;
        match decode_varint(&prefix[..n]) {
            Some((len, used)) if used == n && len <= body.len() as u64 => {
                // Trailing bytes are ignored, as postcard ignores them.
                body.truncate(len as usize);
                Ok(body)
            }
            // Not the layout `send` writes: decoded whole, as postcard would.
            _ => {
                let mut frame = prefix[..n].to_vec();
                frame.extend_from_slice(&body);
                decode_byte_vec(&frame)
            }
        }
    }

    pub(crate) fn poll(&self, timeout: Option<Duration>) -> Result<bool, ConnectionError> {
        Ok(self.chan()?.poll(timeout)?)
    }

    /// Fails if an earlier framing error left the stream unreadable.
    fn check_readable(&self) -> Result<(), ConnectionError> {
        if self.broken.get() {
            return Err(ConnectionError::Broken);
        }
        Ok(())
    }

    /// A frame that is too large, cut short or corrupt leaves the stream position unknown.
    fn note_framing_error(&self, e: ConnectionError) -> ConnectionError {
        if matches!(
            e,
            ConnectionError::TooLarge { .. }
                | ConnectionError::Truncated { .. }
                | ConnectionError::Corrupt(_)
        ) {
            self.broken.set(true);
        }
        e
    }

    /// Receives one frame and its handles into `buf`, giving up after `timeout` (also in
    /// the middle of a frame: the part received waits in the channel for the next receive).
    fn recv_frame(
        &self,
        buf: &mut Vec<u8>,
        timeout: Option<Duration>,
        max_len: Option<u64>,
    ) -> Result<Vec<OwnedHandle>, ConnectionError> {
        let chan = self.chan()?;
        self.check_readable()?;
        let max_len = max_len.unwrap_or(self.max_len);
        match timeout {
            None => chan.recv_frame_with_handles(buf, max_len),
            Some(t) => chan.recv_frame_until(buf, max_len, Deadline::after(t)),
        }
        .map_err(|e| self.note_framing_error(e.into()))
    }

    pub(crate) fn recv_bytes(
        &self,
        timeout: Option<Duration>,
        max_len: Option<u64>,
    ) -> Result<Vec<u8>, ConnectionError> {
        let mut buf = Vec::new();
        // Handles nobody asked for are closed here.
        self.recv_frame(&mut buf, timeout, max_len)?;
        Ok(buf)
    }

    pub(crate) fn recv_bytes_into(&self, out: &mut [u8]) -> Result<usize, ConnectionError> {
        let chan = self.chan()?;
        self.check_readable()?;
        match chan
            .recv_frame_into(out, self.max_len)
            .map_err(|e| self.note_framing_error(e.into()))?
        {
            Ok(n) => Ok(n),
            Err(message) => Err(ConnectionError::BufferTooShort {
                message,
                capacity: out.len(),
            }),
        }
    }

    /// Whether a message already waits in this end's own read-ahead buffer.
    pub(crate) fn has_buffered(&self) -> bool {
        self.chan.as_ref().is_some_and(|c| c.has_buffered())
    }

    pub(crate) fn recv_value<T: DeserializeOwned>(
        &self,
        timeout: Option<Duration>,
    ) -> Result<T, ConnectionError> {
        let mut buf = self.scratch.borrow_mut();
        let handles = self.recv_frame(&mut buf, timeout, None)?;
        let value =
            crate::handles::decode_with_handles(&buf, handles).map_err(ConnectionError::Decode);
        if buf.capacity() > SCRATCH_KEEP {
            *buf = Vec::new();
        }
        value
    }
}

/// Whether `T` is `Vec<u8>`, for any `T` (not only `'static` ones, which `TypeId::of`
/// needs): the type id is taken through a trait object whose lifetime bound is erased.
/// Lifetimes do not exist at run time and `Vec<u8>` has none, so equal ids mean `T` is
/// exactly `Vec<u8>`.
fn is_byte_vec<T: ?Sized>() -> bool {
    trait Id {
        fn id(&self) -> TypeId
        where
            Self: 'static;
    }
    impl<U: ?Sized> Id for PhantomData<U> {
        fn id(&self) -> TypeId
        where
            Self: 'static,
        {
            TypeId::of::<U>()
        }
    }
    let probe = PhantomData::<T>;
    let short: &dyn Id = &probe;
    // SAFETY: only the trait object's lifetime bound changes; `id` reads no data, and a
    // type id is the same whatever the lifetimes of the type it names.
    let long: &(dyn Id + 'static) = unsafe { std::mem::transmute(short) };
    long.id() == TypeId::of::<Vec<u8>>()
}

/// Writes `n` as postcard's varint (LEB128) into `out`; returns the length used.
fn encode_varint(mut n: u64, out: &mut [u8; 10]) -> usize {
    let mut i = 0;
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out[i] = byte;
            return i + 1;
        }
        out[i] = byte | 0x80;
        i += 1;
    }
}

/// Decodes a `Vec<u8>` as postcard encodes it (a varint length, then the bytes), as
/// `postcard::from_bytes` would: trailing bytes are ignored, a short or malformed frame is
/// an error.
fn decode_byte_vec(frame: &[u8]) -> Result<Vec<u8>, ConnectionError> {
    let invalid = |e| ConnectionError::Decode(crate::DecodeError::Invalid(e));
    let Some((len, used)) = decode_varint(frame) else {
        return Err(invalid(if frame.len() < 10 {
            postcard::Error::DeserializeUnexpectedEnd
        } else {
            postcard::Error::DeserializeBadVarint
        }));
    };
    let body = &frame[used..];
    match usize::try_from(len) {
        Ok(n) if n <= body.len() => Ok(body[..n].to_vec()),
        _ => Err(invalid(postcard::Error::DeserializeUnexpectedEnd)),
    }
}

/// Reads postcard's varint (LEB128, at most 10 bytes) at the start of `bytes`: its value
/// and the bytes it takes; `None` if it is cut short or too long.
fn decode_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value: u64 = 0;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// The bytes of postcard's varint for `n`.
fn varint_len(n: u64) -> usize {
    ((64 - n.leading_zeros()).max(1) as usize).div_ceil(7)
}

/// How long the varint at the start of a `Vec<u8>` frame of `frame_len` bytes is, if the
/// frame is one vector as `send` writes it (`k` with `varint_len(frame_len - k) == k`; 0
/// when there is none, which the decode then reports).
fn varint_prefix_len(frame_len: u64) -> usize {
    (1..=10)
        .find(|&k| frame_len >= k as u64 && varint_len(frame_len - k as u64) == k)
        .unwrap_or(0)
}

/// A raw handle serialized through the handle outbox.
pub(crate) struct HandleRef(pub(crate) RawHandle);

impl Serialize for HandleRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::handles::serialize_handle(self.0, s)
    }
}

/// The wire form of a connection end: its transport's name, its handles (through the
/// outbox) and the state that travels beside them ([`mp_ipc::Endpoint::export`]: read-ahead
/// bytes, or the ring description).
pub(crate) fn serialize_end<S: serde::Serializer>(
    raw: &RawConnection,
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeTuple;
    let Some(chan) = raw.chan.as_ref() else {
        return Err(serde::ser::Error::custom("cannot pass a closed connection"));
    };
    let name = chan.transport();
    if mp_ipc::dispatch::find(TRANSPORTS, name).is_none() || !chan.capabilities().crosses_processes
    {
        return Err(serde::ser::Error::custom(format!(
            "a connection of transport {name:?} cannot leave its process"
        )));
    }
    let handles: Vec<HandleRef> = chan.handles().into_iter().map(HandleRef).collect();
    let mut t = s.serialize_tuple(3)?;
    t.serialize_element(name)?;
    t.serialize_element(&handles)?;
    t.serialize_element(&chan.export())?;
    t.end()
}

/// The inverse of [`serialize_end`].
pub(crate) fn deserialize_end<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<RawConnection, D::Error> {
    use serde::Deserialize;
    let (name, handles, state) = <(String, Vec<crate::OsHandle>, Vec<u8>)>::deserialize(d)?;
    let handles = handles
        .into_iter()
        .map(crate::OsHandle::into_inner)
        .collect();
    RawConnection::from_parts(&name, handles, &state).map_err(serde::de::Error::custom)
}
