use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use mp_ipc::frame::{next_capacity, FrameHeader, HEADER_LEN};
use mp_ipc::{Channel, IpcError};

/// One end of a Unix domain socket pair carrying length-prefixed frames.
///
/// ```
/// use mp_ipc::Channel;
/// let (a, b) = mp_unix::UnixChannel::pair().unwrap();
/// a.send_frame(&[b"hello"]).unwrap();
/// let mut buf = Vec::new();
/// b.recv_frame(&mut buf, 1024).unwrap();
/// assert_eq!(buf, b"hello");
/// ```
#[derive(Debug)]
pub struct UnixChannel {
    stream: UnixStream,
}

impl UnixChannel {
    /// A connected pair; both ends are close-on-exec.
    pub fn pair() -> io::Result<(Self, Self)> {
        let (a, b) = UnixStream::pair()?;
        Ok((Self { stream: a }, Self { stream: b }))
    }

    /// Wraps a descriptor that must be a connected stream socket. Fails with `EBADF` or
    /// `ENOTSOCK` for anything else, so an invalid handle is an error here, not later.
    pub fn from_fd(fd: OwnedFd) -> io::Result<Self> {
        let mut ty: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `ty`.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_TYPE,
                (&mut ty as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        if ty != libc::SOCK_STREAM {
            return Err(io::Error::from_raw_os_error(libc::ENOTSOCK));
        }
        Ok(Self {
            stream: UnixStream::from(fd),
        })
    }

    /// Takes ownership of a raw descriptor.
    ///
    /// # Safety
    /// `fd` must be an open descriptor owned by nobody else.
    pub unsafe fn from_raw_fd(fd: RawFd) -> io::Result<Self> {
        Self::from_fd(OwnedFd::from_raw_fd(fd))
    }

    /// Gives up the channel, returning its descriptor.
    pub fn into_fd(self) -> OwnedFd {
        // SAFETY: the stream owned this descriptor.
        unsafe { OwnedFd::from_raw_fd(self.stream.into_raw_fd()) }
    }

    /// A second descriptor for the same socket.
    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(Self {
            stream: self.stream.try_clone()?,
        })
    }

    /// Reads exactly `buf.len()` bytes; `Ok(n < len)` only at end of stream.
    fn read_full(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut got = 0;
        while got < buf.len() {
            match (&self.stream).read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(got)
    }
}

impl AsFd for UnixChannel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

impl AsRawFd for UnixChannel {
    fn as_raw_fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }
}

/// Writes all of `parts` with `sendmsg(MSG_NOSIGNAL)`, resuming after partial writes and
/// signal interruptions.
pub(crate) fn send_all(fd: RawFd, parts: &[&[u8]]) -> Result<(), IpcError> {
    let mut slices: Vec<&[u8]> = parts.iter().copied().filter(|p| !p.is_empty()).collect();
    let mut first = 0;
    while first < slices.len() {
        let iov: Vec<libc::iovec> = slices[first..]
            .iter()
            .take(64)
            .map(|s| libc::iovec {
                iov_base: s.as_ptr() as *mut libc::c_void,
                iov_len: s.len(),
            })
            .collect();
        // SAFETY: msghdr is plain data; zeroed is a valid empty header.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = iov.len() as _;
        // SAFETY: msg points at live iovecs describing borrowed slices.
        let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) };
        if n < 0 {
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EPIPE) | Some(libc::ECONNRESET) => return Err(IpcError::BrokenPipe),
                _ => return Err(IpcError::Io(err)),
            }
        }
        let mut n = n as usize;
        while n > 0 && first < slices.len() {
            let len = slices[first].len();
            if n >= len {
                n -= len;
                first += 1;
            } else {
                slices[first] = &slices[first][n..];
                n = 0;
            }
        }
    }
    Ok(())
}

impl Channel for UnixChannel {
    fn send_frame(&self, parts: &[&[u8]]) -> Result<(), IpcError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let header = FrameHeader::new(len).encode();
        let mut all = Vec::with_capacity(parts.len() + 1);
        all.push(&header[..]);
        all.extend_from_slice(parts);
        send_all(self.stream.as_raw_fd(), &all)
    }

    fn recv_frame(&self, buf: &mut Vec<u8>, max_len: u64) -> Result<(), IpcError> {
        let mut header = [0u8; HEADER_LEN];
        match self.read_full(&mut header)? {
            0 => return Err(IpcError::Eof),
            HEADER_LEN => {}
            got => {
                return Err(IpcError::Truncated {
                    got: got as u64,
                    expected: HEADER_LEN as u64,
                })
            }
        }
        let want = FrameHeader::decode(header).check(max_len)?;
        recv_body(self, buf, want)
    }

    fn poll(&self, timeout: Option<Duration>) -> Result<bool, IpcError> {
        Ok(crate::poll::poll_readable(self.as_raw_fd(), timeout)?)
    }
}

/// Reads a body of `want` bytes, growing `buf` only as data arrives. Bytes are read straight
/// into the vector's spare capacity, so a large body is not zero-filled first.
pub(crate) fn recv_body(ch: &UnixChannel, buf: &mut Vec<u8>, want: usize) -> Result<(), IpcError> {
    buf.clear();
    while buf.len() < want {
        let have = buf.len();
        buf.reserve_exact(next_capacity(have, want) - have);
        let room = (buf.capacity() - have).min(want - have);
        // SAFETY: the kernel writes at most `room` bytes into the reserved spare capacity.
        let n = unsafe { libc::recv(ch.as_raw_fd(), buf.as_mut_ptr().add(have).cast(), room, 0) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(IpcError::Io(err));
        }
        if n == 0 {
            return Err(IpcError::Truncated {
                got: have as u64,
                expected: want as u64,
            });
        }
        // SAFETY: `n` bytes past `have` were initialised by recv.
        unsafe { buf.set_len(have + n as usize) };
    }
    Ok(())
}
