//! Windows: not implemented yet. Named-pipe and TCP listeners need a channel type that
//! wraps a socket (the Windows channel wraps pipe handles only); until then every
//! operation fails with [`ListenerError::Unsupported`], and the types are uninhabited.

use std::io::{self, Read, Write};
use std::time::Duration;

use mp_ipc::handle::OwnedHandle;

use super::auth::TimedStream;
use super::{Address, ListenerError};

const UNSUPPORTED: &str = "Listener and Client are not implemented on Windows yet";

pub(crate) enum SysListener {}

#[derive(Debug)]
pub(crate) enum SysStream {}

impl SysListener {
    pub(crate) fn bind(address: &Address) -> Result<(Self, Address), ListenerError> {
        match address {
            Address::Pipe(_) | Address::Tcp(_) => Err(ListenerError::Unsupported(UNSUPPORTED)),
            other => Err(ListenerError::InvalidFamily(other.to_string())),
        }
    }

    pub(crate) fn accept(&self, _timeout: Option<Duration>) -> io::Result<Option<SysStream>> {
        match *self {}
    }
}

impl SysStream {
    pub(crate) fn connect(
        address: &Address,
        _timeout: Option<Duration>,
    ) -> Result<Self, ListenerError> {
        match address {
            Address::Pipe(_) | Address::Tcp(_) => Err(ListenerError::Unsupported(UNSUPPORTED)),
            other => Err(ListenerError::InvalidFamily(other.to_string())),
        }
    }

    pub(crate) fn into_handle(self) -> OwnedHandle {
        match self {}
    }

    pub(crate) fn try_clone(&self) -> io::Result<Self> {
        match *self {}
    }

    pub(crate) fn shutdown(&self) {
        match *self {}
    }
}

impl Read for SysStream {
    fn read(&mut self, _buf: &mut [u8]) -> io::Result<usize> {
        match *self {}
    }
}

impl Write for SysStream {
    fn write(&mut self, _buf: &[u8]) -> io::Result<usize> {
        match *self {}
    }

    fn flush(&mut self) -> io::Result<()> {
        match *self {}
    }
}

impl TimedStream for SysStream {
    fn set_io_timeout(&self, _t: Option<Duration>) -> io::Result<()> {
        match *self {}
    }
}
