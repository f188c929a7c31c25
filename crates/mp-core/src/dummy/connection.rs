//! Typed pipes between threads over crossbeam channels: Python's
//! `multiprocessing.dummy.Pipe` and its connections, with the API of [`crate::connection`].
//!
//! Values are moved, not encoded, so `T` need not be serializable. Raw byte messages
//! ([`Connection::send_bytes`]) travel on the same pipe, in order with the values; a value
//! read with `recv_bytes`, or bytes read with `recv`, is consumed and reported as
//! [`ConnectionError::Decode`] (this backend never encodes values). The pipe is unbounded:
//! `send` never blocks. Dropping or closing an end is seen by its peer as
//! [`ConnectionError::Eof`] (after the messages already sent) and
//! [`ConnectionError::BrokenPipe`] on send.

use std::cell::RefCell;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ConnectionError;

/// What travels: a value or a raw message.
enum Msg<T> {
    Value(T),
    Bytes(Vec<u8>),
}

/// A value where raw bytes were expected, or the reverse: consumed, and reported as a message
/// that does not decode.
fn mismatch() -> ConnectionError {
    ConnectionError::Decode(crate::DecodeError::Invalid(
        postcard::Error::DeserializeBadEncoding,
    ))
}

/// The receiving half of an end: the channel plus one message read ahead by `poll`.
struct Rx<T> {
    rx: Receiver<Msg<T>>,
    ahead: RefCell<Option<Msg<T>>>,
}

impl<T> Rx<T> {
    fn new(rx: Receiver<Msg<T>>) -> Self {
        Self {
            rx,
            ahead: RefCell::new(None),
        }
    }

    fn recv(&self, timeout: Option<Duration>) -> Result<Msg<T>, ConnectionError> {
        if let Some(m) = self.ahead.borrow_mut().take() {
            return Ok(m);
        }
        match timeout {
            None => self.rx.recv().map_err(|_| ConnectionError::Eof),
            Some(t) => self.rx.recv_timeout(t).map_err(|e| match e {
                RecvTimeoutError::Timeout => ConnectionError::Timeout,
                RecvTimeoutError::Disconnected => ConnectionError::Eof,
            }),
        }
    }

    fn poll(&self, timeout: Duration) -> bool {
        if self.ahead.borrow().is_some() {
            return true;
        }
        match self.rx.recv_timeout(timeout) {
            Ok(m) => {
                *self.ahead.borrow_mut() = Some(m);
                true
            }
            Err(RecvTimeoutError::Disconnected) => true,
            Err(RecvTimeoutError::Timeout) => false,
        }
    }

    fn value(&self, timeout: Option<Duration>) -> Result<T, ConnectionError> {
        match self.recv(timeout)? {
            Msg::Value(v) => Ok(v),
            Msg::Bytes(_) => Err(mismatch()),
        }
    }

    fn bytes(&self, timeout: Option<Duration>) -> Result<Vec<u8>, ConnectionError> {
        match self.recv(timeout)? {
            Msg::Bytes(b) => Ok(b),
            Msg::Value(_) => Err(mismatch()),
        }
    }

    /// A second receiver on the same channel; the read-ahead message, if any, moves to it.
    fn split_off(&self) -> Self {
        Self {
            rx: self.rx.clone(),
            ahead: RefCell::new(self.ahead.borrow_mut().take()),
        }
    }
}

fn send_msg<T>(tx: &Sender<Msg<T>>, m: Msg<T>) -> Result<(), ConnectionError> {
    tx.send(m).map_err(|_| ConnectionError::BrokenPipe)
}

/// Creates a duplex pipe between threads: Python's `multiprocessing.dummy.Pipe()`.
/// (Never fails; the `Result` matches [`crate::pipe`].)
///
/// ```
/// let (a, b) = mp_core::dummy::pipe::<(i32, String)>().unwrap();
/// a.send(&(1, "one".into())).unwrap();
/// assert_eq!(b.recv().unwrap(), (1, "one".to_string()));
/// drop(a);
/// assert!(matches!(b.recv(), Err(mp_core::ConnectionError::Eof)));
/// ```
pub fn pipe<T>() -> Result<(Connection<T>, Connection<T>), ConnectionError> {
    let (tx_ab, rx_ab) = crossbeam_channel::unbounded();
    let (tx_ba, rx_ba) = crossbeam_channel::unbounded();
    Ok((
        Connection {
            tx: Some(tx_ab),
            rx: Some(Rx::new(rx_ba)),
        },
        Connection {
            tx: Some(tx_ba),
            rx: Some(Rx::new(rx_ab)),
        },
    ))
}

/// Creates a one-way pipe, `(reader, writer)` in Python's order.
///
/// ```
/// let (rx, tx) = mp_core::dummy::pipe_oneway::<u64>().unwrap();
/// tx.send(&42).unwrap();
/// assert_eq!(rx.recv().unwrap(), 42);
/// ```
pub fn pipe_oneway<T>() -> Result<(Reader<T>, Writer<T>), ConnectionError> {
    let (tx, rx) = crossbeam_channel::unbounded();
    Ok((
        Reader {
            rx: Some(Rx::new(rx)),
        },
        Writer { tx: Some(tx) },
    ))
}

/// One end of a duplex pipe between threads, as [`crate::Connection`]. `Send`, not `Sync`.
///
/// ```
/// use std::time::Duration;
/// let (a, b) = mp_core::dummy::pipe::<u8>().unwrap();
/// assert!(!b.poll(Duration::ZERO).unwrap());
/// a.send_bytes(b"raw").unwrap();
/// assert!(b.poll(Duration::ZERO).unwrap());
/// assert_eq!(b.recv_bytes().unwrap(), b"raw");
/// ```
pub struct Connection<T> {
    tx: Option<Sender<Msg<T>>>,
    rx: Option<Rx<T>>,
}

/// The receiving end of a one-way pipe between threads, as [`crate::Reader`].
pub struct Reader<T> {
    rx: Option<Rx<T>>,
}

/// The sending end of a one-way pipe between threads, as [`crate::Writer`].
pub struct Writer<T> {
    tx: Option<Sender<Msg<T>>>,
}

macro_rules! recv_methods {
    ($ty:ident) => {
        impl<T> $ty<T> {
            fn rx(&self) -> Result<&Rx<T>, ConnectionError> {
                self.rx.as_ref().ok_or(ConnectionError::Closed)
            }

            /// Blocks until a value arrives; a closed or dropped peer gives
            /// [`ConnectionError::Eof`] once the values it sent are read.
            pub fn recv(&self) -> Result<T, ConnectionError> {
                self.rx()?.value(None)
            }

            /// Like [`recv`](Self::recv), failing with [`ConnectionError::Timeout`] after
            /// `timeout`.
            pub fn recv_timeout(&self, timeout: Duration) -> Result<T, ConnectionError> {
                self.rx()?.value(Some(timeout))
            }

            /// Whether a message (or end of stream) can be read without blocking, waiting up
            /// to `timeout` for one (zero: just look). Consumes nothing.
            pub fn poll(&self, timeout: Duration) -> Result<bool, ConnectionError> {
                Ok(self.rx()?.poll(timeout))
            }

            /// Receives one raw message.
            pub fn recv_bytes(&self) -> Result<Vec<u8>, ConnectionError> {
                self.rx()?.bytes(None)
            }

            /// Receives one raw message, waiting at most `timeout`.
            pub fn recv_bytes_timeout(
                &self,
                timeout: Duration,
            ) -> Result<Vec<u8>, ConnectionError> {
                self.rx()?.bytes(Some(timeout))
            }

            /// Receives one raw message into the start of `buf`, returning its length; if
            /// `buf` is too short, [`ConnectionError::BufferTooShort`] hands the message back.
            pub fn recv_bytes_into(&self, buf: &mut [u8]) -> Result<usize, ConnectionError> {
                let message = self.recv_bytes()?;
                if message.len() > buf.len() {
                    return Err(ConnectionError::BufferTooShort {
                        capacity: buf.len(),
                        message,
                    });
                }
                buf[..message.len()].copy_from_slice(&message);
                Ok(message.len())
            }
        }
    };
}

macro_rules! send_methods {
    ($ty:ident) => {
        impl<T> $ty<T> {
            fn tx(&self) -> Result<&Sender<Msg<T>>, ConnectionError> {
                self.tx.as_ref().ok_or(ConnectionError::Closed)
            }

            /// Sends (moves a copy of) a value; a closed or dropped peer is
            /// [`ConnectionError::BrokenPipe`].
            pub fn send(&self, value: &T) -> Result<(), ConnectionError>
            where
                T: Clone,
            {
                send_msg(self.tx()?, Msg::Value(value.clone()))
            }

            /// Sends a value by moving it (no copy; the process backend has no counterpart).
            pub fn send_owned(&self, value: T) -> Result<(), ConnectionError> {
                send_msg(self.tx()?, Msg::Value(value))
            }

            /// Sends raw bytes as one message (possibly empty).
            pub fn send_bytes(&self, bytes: &[u8]) -> Result<(), ConnectionError> {
                send_msg(self.tx()?, Msg::Bytes(bytes.to_vec()))
            }
        }
    };
}

macro_rules! common_methods {
    ($ty:ident, $($field:ident),+) => {
        impl<T> $ty<T> {
            /// Closes this end: later calls fail with [`ConnectionError::Closed`], the peer
            /// sees end of file. Closing twice is harmless; dropping closes too.
            pub fn close(&mut self) {
                $(self.$field = None;)+
            }

            /// Whether [`close`](Self::close) was called.
            pub fn is_closed(&self) -> bool {
                true $(&& self.$field.is_none())+
            }
        }

        impl<T> std::fmt::Debug for $ty<T> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($ty))
                    .field("closed", &self.is_closed())
                    .finish()
            }
        }

        /// Serializes a ticket for this end, valid once and only in this process (so the
        /// type meets the process backend's bounds; see [`crate::api::Flavor`]).
        impl<T: Send + 'static> Serialize for $ty<T> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if self.is_closed() {
                    return Err(serde::ser::Error::custom("cannot pass a closed connection"));
                }
                super::passage::serialize(self.split(), s)
            }
        }

        impl<'de, T: Send + 'static> Deserialize<'de> for $ty<T> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                super::passage::deserialize(d, stringify!($ty))
            }
        }
    };
}

impl<T> Connection<T> {
    /// A second handle on the same end (Python's connections cannot be cloned; the process
    /// backend duplicates the OS handle). Both handles must close for the peer to see EOF.
    pub fn try_clone(&self) -> Result<Self, ConnectionError> {
        if self.is_closed() {
            return Err(ConnectionError::Closed);
        }
        Ok(Self {
            tx: self.tx.clone(),
            rx: self.rx.as_ref().map(|r| Rx::new(r.rx.clone())),
        })
    }

    fn split(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            rx: self.rx.as_ref().map(Rx::split_off),
        }
    }
}

impl<T> Reader<T> {
    /// A second handle on the same end.
    pub fn try_clone(&self) -> Result<Self, ConnectionError> {
        Ok(Self {
            rx: Some(Rx::new(self.rx()?.rx.clone())),
        })
    }

    fn split(&self) -> Self {
        Self {
            rx: self.rx.as_ref().map(Rx::split_off),
        }
    }
}

impl<T> Writer<T> {
    /// A second handle on the same end.
    pub fn try_clone(&self) -> Result<Self, ConnectionError> {
        Ok(Self {
            tx: Some(self.tx()?.clone()),
        })
    }

    fn split(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

common_methods!(Connection, tx, rx);
common_methods!(Reader, rx);
common_methods!(Writer, tx);
recv_methods!(Connection);
recv_methods!(Reader);
send_methods!(Connection);
send_methods!(Writer);
