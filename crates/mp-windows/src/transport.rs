//! The socket transport on Windows as an [`mp_ipc::Transport`]: its ends are
//! [`PipeChannel`]s over named-pipe pairs.

use std::io;
use std::os::windows::io::{AsRawHandle, OwnedHandle, RawHandle};

use mp_ipc::transport::single_handle;
use mp_ipc::{Capabilities, Endpoint, Transport};

use crate::PipeChannel;

/// The named-pipe transport: ends are the two sides of a fresh, uniquely named, byte-mode
/// named pipe (Windows' counterpart of a Unix socket pair). Handles travel with frames (the
/// receiver duplicates them out of the sender); an end travels to another process as its
/// one handle. An end made from a connected TCP socket is of this transport too, but carries
/// no handles.
///
/// ```
/// use mp_ipc::{Channel, Transport};
/// let (a, b) = mp_windows::NamedPipe::pair().unwrap();
/// a.send_frame(&[b"hi"]).unwrap();
/// let mut buf = Vec::new();
/// b.recv_frame(&mut buf, 16).unwrap();
/// assert_eq!(buf, b"hi");
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct NamedPipe;

impl Transport for NamedPipe {
    const NAME: &'static str = "socket";
    const CAPABILITIES: Capabilities = Capabilities::OS_STREAM;
    type End = PipeChannel;

    fn pair() -> io::Result<(PipeChannel, PipeChannel)> {
        PipeChannel::pair()
    }
}

impl Endpoint for PipeChannel {
    type Transport = NamedPipe;

    fn handles(&self) -> Vec<RawHandle> {
        vec![self.as_raw_handle()]
    }

    fn wait_handle(&self) -> Option<RawHandle> {
        Some(self.as_raw_handle())
    }

    /// Nothing: a pipe end reads nothing ahead.
    fn export(&self) -> Vec<u8> {
        Vec::new()
    }

    /// The handle; a pipe end carries no state, so any is refused.
    fn adopt(handles: Vec<OwnedHandle>, state: &[u8]) -> io::Result<Self> {
        if !state.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a pipe end carries no state",
            ));
        }
        PipeChannel::from_handle(single_handle(handles)?)
    }

    fn try_clone(&self) -> io::Result<Self> {
        PipeChannel::try_clone(self)
    }
}
