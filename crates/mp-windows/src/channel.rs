use std::io;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle, RawHandle};
use std::time::Duration;

use mp_ipc::{Channel, IpcError};

/// One end of a connected named-pipe pair carrying length-prefixed frames.
#[derive(Debug)]
pub struct PipeChannel {
    handle: OwnedHandle,
}

impl PipeChannel {
    /// A connected pair (not yet implemented on this platform).
    pub fn pair() -> io::Result<(Self, Self)> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "named-pipe pairs are not implemented yet",
        ))
    }

    /// Wraps an owned pipe handle.
    pub fn from_handle(handle: OwnedHandle) -> io::Result<Self> {
        Ok(Self { handle })
    }

    /// Gives up the channel, returning its handle.
    pub fn into_handle(self) -> OwnedHandle {
        self.handle
    }

    /// Takes ownership of a raw handle.
    ///
    /// # Safety
    /// `h` must be an open handle owned by nobody else.
    pub unsafe fn from_raw_handle(h: RawHandle) -> io::Result<Self> {
        Self::from_handle(OwnedHandle::from_raw_handle(h))
    }
}

impl AsRawHandle for PipeChannel {
    fn as_raw_handle(&self) -> RawHandle {
        self.handle.as_raw_handle()
    }
}

impl Channel for PipeChannel {
    fn send_frame(&self, _parts: &[&[u8]]) -> Result<(), IpcError> {
        Err(IpcError::Io(io::Error::from(io::ErrorKind::Unsupported)))
    }
    fn recv_frame(&self, _buf: &mut Vec<u8>, _max_len: u64) -> Result<(), IpcError> {
        Err(IpcError::Io(io::Error::from(io::ErrorKind::Unsupported)))
    }
    fn poll(&self, _timeout: Option<Duration>) -> Result<bool, IpcError> {
        Err(IpcError::Io(io::Error::from(io::ErrorKind::Unsupported)))
    }
}
