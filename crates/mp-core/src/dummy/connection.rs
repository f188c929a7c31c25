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

    fn poll(&self, timeout: Option<Duration>) -> bool {
        if self.ahead.borrow().is_some() {
            return true;
        }
        let Some(timeout) = timeout else {
            // Without limit: a message, or every sender gone.
            if let Ok(m) = self.rx.recv() {
                *self.ahead.borrow_mut() = Some(m);
            }
            return true;
        };
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
                Ok(self.rx()?.poll(Some(timeout)))
            }

            /// Waits without limit until a message (or end of stream) can be read (Python's
            /// `poll(None)`). Consumes nothing.
            pub fn poll_forever(&self) -> Result<(), ConnectionError> {
                self.rx()?.poll(None);
                Ok(())
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

// ------------------------------------------------------------------------------------------
// Listener and Client: Python's `multiprocessing.dummy.connection`.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Mutex;

use crate::listener::{Address, AuthenticationError, ListenerError};

/// Listeners of this process by address: their key and where new connections go.
type Registry = HashMap<Address, (Option<Vec<u8>>, Sender<Box<dyn Any + Send>>)>;
static LISTENERS: Mutex<Option<Registry>> = Mutex::new(None);

fn registry() -> std::sync::MutexGuard<'static, Option<Registry>> {
    LISTENERS.lock().unwrap_or_else(|e| e.into_inner())
}

/// A listener for [`Client`]s of this process (threads), under an [`Address`] used as a name:
/// Python's `multiprocessing.dummy.connection.Listener`, with the API of
/// [`crate::Listener`]. A client whose key differs from the listener's is refused at
/// `connect`, as a process client would be at the handshake.
///
/// ```
/// use mp_core::dummy::connection::{Client, Listener};
/// use mp_core::listener::Address;
///
/// let address = Address::unique_local();
/// let listener = Listener::bind(&address, Some(b"key")).unwrap();
/// let t = std::thread::spawn(move || {
///     let conn = Client::connect::<String>(&address, Some(b"key")).unwrap();
///     conn.send(&"hello".to_string()).unwrap();
/// });
/// let conn = listener.accept::<String>().unwrap();
/// assert_eq!(conn.recv().unwrap(), "hello");
/// t.join().unwrap();
/// ```
pub struct Listener {
    address: Address,
    rx: Option<Receiver<Box<dyn Any + Send>>>,
}

impl Listener {
    /// Listens under `address` (any form: it is a name here); `AddrInUse` if another
    /// listener of this process has it.
    pub fn bind(address: &Address, authkey: Option<&[u8]>) -> Result<Self, ListenerError> {
        let mut reg = registry();
        let reg = reg.get_or_insert_with(HashMap::new);
        if reg.contains_key(address) {
            return Err(ListenerError::Io(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{address} is in use by another listener of this process"),
            )));
        }
        let (tx, rx) = crossbeam_channel::unbounded();
        reg.insert(address.clone(), (authkey.map(<[u8]>::to_vec), tx));
        Ok(Self {
            address: address.clone(),
            rx: Some(rx),
        })
    }

    /// The address it listens under.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// Waits for a client; its connection carries `T` (a client that connected for another
    /// type is refused with an `InvalidData` error, and the next one is waited for).
    pub fn accept<T: Send + 'static>(&self) -> Result<Connection<T>, ListenerError> {
        self.accept_until(None)
    }

    /// Like [`accept`](Self::accept), failing with [`ListenerError::Timeout`] after `timeout`.
    pub fn accept_timeout<T: Send + 'static>(
        &self,
        timeout: Duration,
    ) -> Result<Connection<T>, ListenerError> {
        self.accept_until(Some(timeout))
    }

    fn accept_until<T: Send + 'static>(
        &self,
        timeout: Option<Duration>,
    ) -> Result<Connection<T>, ListenerError> {
        let rx = self.rx.as_ref().ok_or(ListenerError::Closed)?;
        let got = match timeout {
            None => rx.recv().map_err(|_| ListenerError::Closed)?,
            Some(t) => rx.recv_timeout(t).map_err(|e| match e {
                RecvTimeoutError::Timeout => ListenerError::Timeout,
                RecvTimeoutError::Disconnected => ListenerError::Closed,
            })?,
        };
        got.downcast::<Connection<T>>().map(|c| *c).map_err(|_| {
            ListenerError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "a client connected for another message type",
            ))
        })
    }

    /// Stops listening: the address is free again; clients get `ConnectionRefused`.
    pub fn close(&mut self) {
        if self.rx.take().is_some() {
            if let Some(reg) = registry().as_mut() {
                reg.remove(&self.address);
            }
        }
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.rx.is_none()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.close();
    }
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("address", &self.address)
            .finish()
    }
}

/// Connects to a [`Listener`] of this process: Python's
/// `multiprocessing.dummy.connection.Client`, with the API of [`crate::Client`].
#[derive(Debug)]
pub struct Client(());

impl Client {
    /// A connection to the listener at `address`: `ConnectionRefused` if there is none,
    /// [`AuthenticationError::Rejected`] if `authkey` is not the listener's.
    pub fn connect<T: Send + 'static>(
        address: &Address,
        authkey: Option<&[u8]>,
    ) -> Result<Connection<T>, ListenerError> {
        let tx = {
            let reg = registry();
            let Some((key, tx)) = reg.as_ref().and_then(|r| r.get(address)) else {
                return Err(ListenerError::Io(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    format!("no listener at {address} in this process"),
                )));
            };
            if key.as_deref() != authkey && key.is_some() {
                return Err(AuthenticationError::Rejected.into());
            }
            tx.clone()
        };
        let (here, there) = pipe::<T>()?;
        tx.send(Box::new(there)).map_err(|_| {
            ListenerError::Io(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "the listener closed",
            ))
        })?;
        Ok(here)
    }
}
