//! Windows: not implemented with rings yet. [`ShmChannel`] is a named-pipe channel with the
//! same API as the Unix one, so the `shm` backend builds and behaves the same (at socket
//! speed). A ring version needs a pollable doorbell (an event object that `mp_core::wait`
//! can wait on) and is planned.

use std::io;
use std::os::windows::io::{AsRawHandle, OwnedHandle, RawHandle};
use std::time::Duration;

use mp_ipc::{Channel, IpcError};
use mp_windows::PipeChannel;

/// One end of a channel of the `shm` backend (on Windows: a named-pipe pair).
#[derive(Debug)]
pub struct ShmChannel {
    pipe: PipeChannel,
}

impl ShmChannel {
    /// A connected pair; `cap` is ignored on Windows.
    pub fn pair(_cap: usize) -> io::Result<(Self, Self)> {
        let (a, b) = PipeChannel::pair()?;
        Ok((Self { pipe: a }, Self { pipe: b }))
    }

    /// The handles that make up this end.
    pub fn handles(&self) -> [RawHandle; 1] {
        [self.pipe.as_raw_handle()]
    }

    /// The handle an outside wait polls.
    pub fn wait_handle(&self) -> RawHandle {
        self.pipe.as_raw_handle()
    }

    /// Nothing beyond the handle is needed on Windows.
    pub fn describe(&self) -> Vec<u8> {
        Vec::new()
    }

    /// Rebuilds an end from its handle.
    pub fn from_parts(handles: Vec<OwnedHandle>, _desc: &[u8]) -> io::Result<Self> {
        let [h]: [OwnedHandle; 1] = handles.try_into().map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidData, "expected exactly one handle")
        })?;
        Ok(Self {
            pipe: PipeChannel::from_handle(h)?,
        })
    }

    /// A second handle on the same end.
    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(Self {
            pipe: self.pipe.try_clone()?,
        })
    }

    /// Whether a message waits (the pipe's own state).
    pub fn prepare_wait(&self) -> bool {
        self.pipe.has_buffered()
    }
}

impl Channel for ShmChannel {
    fn send_frame(&self, parts: &[&[u8]]) -> Result<(), IpcError> {
        self.pipe.send_frame(parts)
    }

    fn recv_frame(&self, buf: &mut Vec<u8>, max_len: u64) -> Result<(), IpcError> {
        self.pipe.recv_frame(buf, max_len)
    }

    fn poll(&self, timeout: Option<Duration>) -> Result<bool, IpcError> {
        self.pipe.poll(timeout)
    }

    fn has_buffered(&self) -> bool {
        self.pipe.has_buffered()
    }

    fn buffered(&self) -> Vec<u8> {
        self.pipe.buffered()
    }

    fn unread(&self, bytes: &[u8]) {
        self.pipe.unread(bytes)
    }
}
