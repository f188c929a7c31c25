//! The socket transport on Unix as an [`mp_ipc::Transport`]: its ends are [`UnixChannel`]s.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use mp_ipc::transport::single_handle;
use mp_ipc::{Capabilities, Endpoint, Transport};

use crate::UnixChannel;

/// The Unix socket transport: ends are the two sides of a `socketpair(AF_UNIX,
/// SOCK_STREAM)`. Handles travel with frames (`SCM_RIGHTS`); an end travels to another
/// process as its one descriptor plus the bytes it had read ahead.
///
/// ```
/// use mp_ipc::{Channel, Transport};
/// let (a, b) = mp_unix::UnixSocket::pair().unwrap();
/// a.send_frame(&[b"hi"]).unwrap();
/// let mut buf = Vec::new();
/// b.recv_frame(&mut buf, 16).unwrap();
/// assert_eq!(buf, b"hi");
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct UnixSocket;

impl Transport for UnixSocket {
    const NAME: &'static str = "socket";
    const CAPABILITIES: Capabilities = Capabilities::OS_STREAM;
    type End = UnixChannel;

    fn pair() -> io::Result<(UnixChannel, UnixChannel)> {
        UnixChannel::pair()
    }
}

impl Endpoint for UnixChannel {
    type Transport = UnixSocket;

    fn handles(&self) -> Vec<RawFd> {
        vec![self.as_raw_fd()]
    }

    fn wait_handle(&self) -> Option<RawFd> {
        Some(self.as_raw_fd())
    }

    /// The bytes read ahead, which travel with the end.
    fn export(&self) -> Vec<u8> {
        self.buffered()
    }

    /// The descriptor, then the bytes it had read ahead put back in front.
    fn adopt(handles: Vec<OwnedFd>, state: &[u8]) -> io::Result<Self> {
        let end = UnixChannel::from_fd(single_handle(handles)?)?;
        end.unread(state);
        Ok(end)
    }

    fn try_clone(&self) -> io::Result<Self> {
        UnixChannel::try_clone(self)
    }
}
