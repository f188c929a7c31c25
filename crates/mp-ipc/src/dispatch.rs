//! The dispatch between transports, written once: an end of any transport as one type
//! ([`AnyEnd`]), and a transport as a table entry ([`TransportEntry`]) that makes pairs and
//! adopts ends arriving from another process by name.
//!
//! Like crossbeam-channel's flavors behind one `Sender`, a caller holds a [`BoxedEnd`] and
//! never matches on the transport; the compiler writes the per-transport code from the
//! [`Transport`]/[`Endpoint`] impls.
//!
//! ```
//! use mp_ipc::dispatch::{find, TransportEntry};
//! # use mp_ipc::{Capabilities, Channel, Endpoint, IpcError, Transport};
//! # use std::time::Duration;
//! # use mp_ipc::handle::{OwnedHandle, RawHandle};
//! # #[derive(Debug)] struct Null;
//! # impl Channel for Null {
//! #     fn send_frame(&self, _: &[&[u8]]) -> Result<(), IpcError> { Ok(()) }
//! #     fn recv_frame_until(&self, _: &mut Vec<u8>, _: u64, _: mp_ipc::deadline::Deadline) -> Result<Vec<OwnedHandle>, IpcError> { Err(IpcError::Eof) }
//! #     fn poll(&self, _: Option<Duration>) -> Result<bool, IpcError> { Ok(true) }
//! # }
//! # impl Endpoint for Null {
//! #     type Transport = NullTransport;
//! #     fn handles(&self) -> Vec<RawHandle> { Vec::new() }
//! #     fn wait_handle(&self) -> Option<RawHandle> { None }
//! #     fn export(&self) -> Vec<u8> { Vec::new() }
//! #     fn adopt(_: Vec<OwnedHandle>, _: &[u8]) -> std::io::Result<Self> { Ok(Null) }
//! #     fn try_clone(&self) -> std::io::Result<Self> { Ok(Null) }
//! # }
//! # struct NullTransport;
//! # impl Transport for NullTransport {
//! #     const NAME: &'static str = "null";
//! #     const CAPABILITIES: Capabilities = Capabilities::IN_PROCESS;
//! #     type End = Null;
//! #     fn pair() -> std::io::Result<(Null, Null)> { Ok((Null, Null)) }
//! # }
//! const ALL: &[TransportEntry] = &[TransportEntry::of::<NullTransport>()];
//! let (a, _b) = (find(ALL, "null").unwrap().pair)().unwrap();
//! assert_eq!(a.transport(), "null");
//! a.send_frame(&[b"x"]).unwrap();
//! ```

use std::fmt::Debug;
use std::io;

use crate::handle::{OwnedHandle, RawHandle};
use crate::{Capabilities, Channel, Endpoint, Transport};

/// An end of any transport: [`Endpoint`] without its type, so that ends of different
/// transports are one type. Implemented for every [`Endpoint`].
pub trait AnyEnd: Channel + Debug {
    /// [`Transport::NAME`] of the end's transport.
    fn transport(&self) -> &'static str;
    /// [`Transport::CAPABILITIES`] of the end's transport.
    fn capabilities(&self) -> Capabilities;
    /// See [`Endpoint::handles`].
    fn handles(&self) -> Vec<RawHandle>;
    /// See [`Endpoint::wait_handle`].
    fn wait_handle(&self) -> Option<RawHandle>;
    /// See [`Endpoint::liveness_handle`].
    fn liveness_handle(&self) -> Option<RawHandle>;
    /// See [`Endpoint::confirm_ready`].
    fn confirm_ready(&self) -> Option<bool>;
    /// See [`Endpoint::export`].
    fn export(&self) -> Vec<u8>;
    /// See [`Endpoint::try_clone`].
    fn try_clone_any(&self) -> io::Result<BoxedEnd>;
}

/// An owned end of any transport.
pub type BoxedEnd = Box<dyn AnyEnd>;

impl<E: Endpoint> AnyEnd for E {
    fn transport(&self) -> &'static str {
        E::Transport::NAME
    }
    fn capabilities(&self) -> Capabilities {
        E::Transport::CAPABILITIES
    }
    fn handles(&self) -> Vec<RawHandle> {
        Endpoint::handles(self)
    }
    fn wait_handle(&self) -> Option<RawHandle> {
        Endpoint::wait_handle(self)
    }
    fn liveness_handle(&self) -> Option<RawHandle> {
        Endpoint::liveness_handle(self)
    }
    fn confirm_ready(&self) -> Option<bool> {
        Endpoint::confirm_ready(self)
    }
    fn export(&self) -> Vec<u8> {
        Endpoint::export(self)
    }
    fn try_clone_any(&self) -> io::Result<BoxedEnd> {
        Ok(Box::new(Endpoint::try_clone(self)?))
    }
}

/// A connected pair of ends of any transport.
pub fn pair<T: Transport>() -> io::Result<(BoxedEnd, BoxedEnd)> {
    let (a, b) = T::pair()?;
    Ok((Box::new(a), Box::new(b)))
}

/// Adopts an end of transport `T` from another process (see [`Endpoint::adopt`]).
pub fn adopt<T: Transport>(handles: Vec<OwnedHandle>, state: &[u8]) -> io::Result<BoxedEnd> {
    Ok(Box::new(T::End::adopt(handles, state)?))
}

/// A transport as a table entry: what a program that receives ends by name needs.
#[derive(Clone, Copy)]
pub struct TransportEntry {
    /// [`Transport::NAME`].
    pub name: &'static str,
    /// [`Transport::CAPABILITIES`].
    pub capabilities: Capabilities,
    /// [`Transport::pair`], boxed.
    pub pair: fn() -> io::Result<(BoxedEnd, BoxedEnd)>,
    /// [`Endpoint::adopt`], boxed.
    pub adopt: fn(Vec<OwnedHandle>, &[u8]) -> io::Result<BoxedEnd>,
}

impl TransportEntry {
    /// The entry of transport `T`.
    pub const fn of<T: Transport>() -> Self {
        Self {
            name: T::NAME,
            capabilities: T::CAPABILITIES,
            pair: pair::<T>,
            adopt: adopt::<T>,
        }
    }
}

impl Debug for TransportEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransportEntry")
            .field("name", &self.name)
            .field("capabilities", &self.capabilities)
            .finish()
    }
}

/// The entry named `name` in `table`.
pub fn find<'a>(table: &'a [TransportEntry], name: &str) -> Option<&'a TransportEntry> {
    table.iter().find(|e| e.name == name)
}
