//! Typed pipes between processes: Python's `multiprocessing.Pipe` and `Connection`.
//!
//! [`pipe`] gives two duplex [`Connection`]s; [`pipe_oneway`] gives a [`Reader`] and a
//! [`Writer`] (Python's `Pipe(duplex=False)`), so that sending on a reader does not compile.
//! Values are any `serde` type, encoded with `postcard` and length-framed; the `*_bytes`
//! methods move raw bytes. On Unix the transport is a Unix domain socket pair, on Windows a
//! pair of named pipe handles.
//!
//! Differences from Python:
//! - connections are typed: a `Connection<T>` sends and receives `T`;
//! - end of stream, a vanished peer, a closed handle and a timeout are distinct
//!   [`ConnectionError`] variants, never a hang;
//! - an incoming message longer than the receiver's limit (4 GiB by default, see
//!   [`Connection::set_max_message_size`]) is refused before it is allocated, and the
//!   connection is then no longer readable ([`ConnectionError::Broken`]);
//! - a connection is `Send` but not `Sync`: one thread at a time uses an end, as in Python.
//!
//! A connection passed inside a process argument is handed to the child whatever the start
//! method; the parent's copy is closed when the `Process` drops its argument after `start`.
//! A connection (or an [`OsHandle`](crate::OsHandle)) sent inside a message reaches the
//! receiver as its own copy, as Python's pickled connections do. On Windows the receiver
//! takes the handle out of the sending process, as Python's `DupHandle` does, so the sender
//! must still be running when the message is read; a TCP connection (a socket channel)
//! carries no handles there (`Unsupported`).

mod raw;
mod transport;

use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ConnectionError;
pub(crate) use raw::{close_inherited_connections_except, lock_live_handles, RawConnection};
#[cfg(feature = "shm")]
pub use transport::{set_shm_spin_limit, shm_spin_limit, Shm};
pub use transport::{set_socket_spin_limit, socket_spin_limit};
pub use transport::{DefaultTransport, Socket, Transport};

/// Creates a duplex pipe: what one end sends, the other receives, both ways.
///
/// ```
/// let (a, b) = mp_core::pipe::<(i32, String)>().unwrap();
/// a.send(&(1, "one".into())).unwrap();
/// assert_eq!(b.recv().unwrap(), (1, "one".to_string()));
/// b.send(&(2, "two".into())).unwrap();
/// assert_eq!(a.recv().unwrap().0, 2);
/// ```
pub fn pipe<T>() -> Result<(Connection<T>, Connection<T>), ConnectionError> {
    pipe_with::<T, DefaultTransport>()
}

/// Creates a duplex pipe over transport `B` ([`Socket`], or [`Shm`] with the `shm` feature),
/// whatever the default is. The ends are the same `Connection` type as [`pipe`]'s.
///
/// ```
/// use mp_core::connection::{pipe_with, Socket};
/// let (a, b) = pipe_with::<u32, Socket>().unwrap();
/// a.send(&7).unwrap();
/// assert_eq!(b.recv().unwrap(), 7);
/// assert_eq!(a.transport(), Some("socket"));
/// ```
pub fn pipe_with<T, B: Transport>() -> Result<(Connection<T>, Connection<T>), ConnectionError> {
    let (a, b) = RawConnection::pair::<B>()?;
    Ok((Connection::from_raw(a), Connection::from_raw(b)))
}

/// [`pipe_oneway`] over transport `B`.
///
/// ```
/// use mp_core::connection::{pipe_oneway_with, Socket};
/// let (rx, tx) = pipe_oneway_with::<u8, Socket>().unwrap();
/// tx.send(&1).unwrap();
/// assert_eq!(rx.recv().unwrap(), 1);
/// ```
pub fn pipe_oneway_with<T, B: Transport>() -> Result<(Reader<T>, Writer<T>), ConnectionError> {
    let (a, b) = RawConnection::pair::<B>()?;
    Ok((
        Reader {
            raw: a,
            _t: PhantomData,
        },
        Writer {
            raw: b,
            _t: PhantomData,
        },
    ))
}

/// Creates a one-way pipe, returning `(reader, writer)` in Python's order.
///
/// ```
/// let (rx, tx) = mp_core::pipe_oneway::<u64>().unwrap();
/// tx.send(&42).unwrap();
/// assert_eq!(rx.recv().unwrap(), 42);
/// ```
pub fn pipe_oneway<T>() -> Result<(Reader<T>, Writer<T>), ConnectionError> {
    pipe_oneway_with::<T, DefaultTransport>()
}

/// One end of a duplex pipe carrying values of type `T`.
pub struct Connection<T> {
    raw: RawConnection,
    _t: PhantomData<fn(T) -> T>,
}

/// The receiving end of a one-way pipe.
pub struct Reader<T> {
    raw: RawConnection,
    _t: PhantomData<fn() -> T>,
}

/// The sending end of a one-way pipe.
pub struct Writer<T> {
    raw: RawConnection,
    _t: PhantomData<fn(T)>,
}

impl<T> Connection<T> {
    pub(crate) fn from_raw(raw: RawConnection) -> Self {
        Self {
            raw,
            _t: PhantomData,
        }
    }
}

/// The methods shared by every end, written once.
macro_rules! common_methods {
    ($ty:ident) => {
        impl<T> $ty<T> {
            /// Closes this end. Later calls fail with [`ConnectionError::Closed`]; closing twice
            /// is harmless. Dropping the end closes it too.
            pub fn close(&mut self) {
                self.raw.close();
            }

            /// Whether [`close`](Self::close) was called.
            pub fn is_closed(&self) -> bool {
                self.raw.is_closed()
            }

            /// Wraps an OS handle that must be one end of a connected channel of this
            /// platform's transport (a stream socket on Unix). Anything else is an error now,
            /// not at the first use.
            pub fn from_handle(
                handle: mp_ipc::handle::OwnedHandle,
            ) -> Result<Self, ConnectionError> {
                Ok(Self {
                    raw: RawConnection::from_handle(handle)?,
                    _t: PhantomData,
                })
            }

            /// A second handle on the same end (a duplicated OS handle), for instance to
            /// give the end to several children in turn.
            pub fn try_clone(&self) -> Result<Self, ConnectionError> {
                Ok(Self {
                    raw: self.raw.try_clone()?,
                    _t: PhantomData,
                })
            }

            /// The name of the transport this end uses ([`mp_ipc::Transport::NAME`]:
            /// `"socket"`, `"shm"`, ...; `None` once closed).
            pub fn transport(&self) -> Option<&'static str> {
                self.raw.kind()
            }

            pub(crate) fn raw(&self) -> &RawConnection {
                &self.raw
            }
        }

        impl<T> Serialize for $ty<T> {
            /// The backend, the handles, plus any bytes this end has read ahead (so nothing
            /// is lost when the end moves to another process) or the shm ring description.
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                raw::serialize_end(&self.raw, s)
            }
        }

        impl<'de, T> Deserialize<'de> for $ty<T> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Ok(Self {
                    raw: raw::deserialize_end(d)?,
                    _t: PhantomData,
                })
            }
        }

        impl<T> std::fmt::Debug for $ty<T> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($ty))
                    .field("handle", &self.raw.raw_handle())
                    .finish()
            }
        }
    };
}

/// The receiving methods, shared by [`Connection`] and [`Reader`].
macro_rules! recv_methods {
    ($ty:ident) => {
        impl<T: DeserializeOwned> $ty<T> {
            /// Blocks until a value arrives. A closed or dead peer gives [`ConnectionError::Eof`].
            pub fn recv(&self) -> Result<T, ConnectionError> {
                self.raw.recv_typed(None)
            }

            /// Like [`recv`](Self::recv), failing with [`ConnectionError::Timeout`] after `timeout`,
            /// also when a message stalls half-way: the part received is kept and the next
            /// receive continues it.
            pub fn recv_timeout(&self, timeout: Duration) -> Result<T, ConnectionError> {
                self.raw.recv_typed(Some(timeout))
            }
        }

        impl<T> $ty<T> {
            /// Whether a message (or end of stream) can be read without blocking, waiting up to
            /// `timeout` for one (zero: just look). Consumes nothing.
            pub fn poll(&self, timeout: Duration) -> Result<bool, ConnectionError> {
                self.raw.poll(Some(timeout))
            }

            /// Waits without limit until a message (or end of stream) can be read (Python's
            /// `poll(None)`). Consumes nothing.
            pub fn poll_forever(&self) -> Result<(), ConnectionError> {
                self.raw.poll(None).map(drop)
            }

            /// Receives one raw message.
            pub fn recv_bytes(&self) -> Result<Vec<u8>, ConnectionError> {
                self.raw.recv_bytes(None, None)
            }

            /// Receives one raw message, waiting at most `timeout` (a message that stalls
            /// half-way is kept for the next receive, as with
            /// [`recv_timeout`](Self::recv_timeout)).
            pub fn recv_bytes_timeout(
                &self,
                timeout: Duration,
            ) -> Result<Vec<u8>, ConnectionError> {
                self.raw.recv_bytes(Some(timeout), None)
            }

            /// Receives one raw message of at most `max_len` bytes (Python's
            /// `recv_bytes(maxlength)`); a longer one is [`ConnectionError::TooLarge`].
            pub fn recv_bytes_max(&self, max_len: u64) -> Result<Vec<u8>, ConnectionError> {
                self.raw.recv_bytes(None, Some(max_len))
            }

            /// Receives one raw message into the start of `buf`, returning its length. If `buf`
            /// is too short, [`ConnectionError::BufferTooShort`] hands back the whole message.
            pub fn recv_bytes_into(&self, buf: &mut [u8]) -> Result<usize, ConnectionError> {
                self.raw.recv_bytes_into(buf)
            }

            /// Sets the longest message this end accepts (default 4 GiB).
            pub fn set_max_message_size(&mut self, max_len: u64) {
                self.raw.set_max_len(max_len);
            }
        }
    };
}

/// The sending methods, shared by [`Connection`] and [`Writer`].
macro_rules! send_methods {
    ($ty:ident) => {
        impl<T: Serialize> $ty<T> {
            /// Sends a value. Encoding errors reach the caller and send nothing; a closed peer is
            /// [`ConnectionError::BrokenPipe`].
            pub fn send(&self, value: &T) -> Result<(), ConnectionError> {
                self.raw.send_typed(value)
            }
        }

        impl<T> $ty<T> {
            /// Sends raw bytes as one message (possibly empty).
            pub fn send_bytes(&self, bytes: &[u8]) -> Result<(), ConnectionError> {
                self.raw.send_bytes(bytes)
            }
        }
    };
}

common_methods!(Connection);
common_methods!(Reader);
common_methods!(Writer);
recv_methods!(Connection);
recv_methods!(Reader);
send_methods!(Connection);
send_methods!(Writer);
