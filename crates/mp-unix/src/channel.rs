use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, MutexGuard};
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
///
/// Receiving reads ahead: one `recvmsg` takes whatever the kernel has (up to 64 KiB), so a
/// small frame costs one system call, and the rest waits in this end's buffer for the next
/// receive. [`buffered`](UnixChannel::buffered) hands those bytes over when the end moves to
/// another process.
#[derive(Debug)]
pub struct UnixChannel {
    stream: UnixStream,
    rx: Mutex<ReadAhead>,
}

/// Bytes (and descriptors) received from the kernel but not yet returned as frames.
#[derive(Debug, Default)]
struct ReadAhead {
    buf: Vec<u8>,
    start: usize,
    /// Descriptors in arrival order; each frame with handles takes its count from the front.
    fds: VecDeque<OwnedFd>,
}

/// Frames up to this size are copied into one buffer and sent with a single-segment write.
const SMALL_FRAME: usize = 512;

/// How much one receive asks the kernel for.
const READ_AHEAD: usize = 64 << 10;

impl ReadAhead {
    fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }
}

impl UnixChannel {
    /// A connected pair; both ends are close-on-exec (atomically where the OS can; under
    /// the [fork lock](crate::cloexec) on macOS).
    pub fn pair() -> io::Result<(Self, Self)> {
        let (a, b) = {
            let _g = crate::cloexec::creating();
            UnixStream::pair()?
        };
        Ok((Self::wrap(a), Self::wrap(b)))
    }

    fn wrap(stream: UnixStream) -> Self {
        Self {
            stream,
            rx: Mutex::new(ReadAhead::default()),
        }
    }

    fn rx(&self) -> MutexGuard<'_, ReadAhead> {
        self.rx.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes received ahead and not yet returned as frames.
    pub fn buffered(&self) -> Vec<u8> {
        self.rx().pending().to_vec()
    }

    /// Puts bytes back in front of what the kernel will deliver: the read-ahead of this end
    /// in the process it came from.
    pub fn unread(&self, bytes: &[u8]) {
        let mut rx = self.rx();
        let mut joined = bytes.to_vec();
        joined.extend_from_slice(rx.pending());
        rx.buf = joined;
        rx.start = 0;
    }

    /// Whether a frame is at least partly buffered (readable without the kernel).
    pub fn has_buffered(&self) -> bool {
        !self.rx().pending().is_empty()
    }

    /// Makes sure at least `n` bytes are buffered, reading from the kernel as needed.
    /// Returns how many are buffered (fewer than `n` only at end of stream).
    fn fill(&self, rx: &mut ReadAhead, n: usize) -> Result<usize, IpcError> {
        while rx.pending().len() < n {
            if rx.start > 0 {
                let start = rx.start;
                rx.buf.drain(..start);
                rx.start = 0;
            }
            let have = rx.buf.len();
            rx.buf.reserve(READ_AHEAD);
            let room = rx.buf.capacity() - have;
            // SAFETY: the spare capacity is `room` bytes; recvmsg writes at most that much.
            let spare =
                unsafe { std::slice::from_raw_parts_mut(rx.buf.as_mut_ptr().add(have), room) };
            let mut fds = Vec::new();
            let got = recv_spinning(self.as_raw_fd(), spare, &mut fds)?;
            rx.fds.extend(fds);
            if got == 0 {
                break;
            }
            // SAFETY: `got` bytes past `have` were written by the kernel.
            unsafe { rx.buf.set_len(have + got) };
        }
        Ok(rx.pending().len())
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
        Ok(Self::wrap(UnixStream::from(fd)))
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

    /// A second descriptor for the same socket. The clone reads from the kernel: bytes this
    /// end has already read ahead stay with this end.
    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(Self::wrap(self.stream.try_clone()?))
    }
}

/// One read-ahead receive: tries without blocking for up to [`limit`](crate::spin::limit),
/// then blocks.
fn recv_spinning(fd: RawFd, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> Result<usize, IpcError> {
    let quick = crate::spin::spin(
        crate::spin::limit(),
        || match crate::fdpass::recv_with_rights(fd, buf, fds, libc::MSG_DONTWAIT) {
            Ok(n) => Ok(Some(Ok(n))),
            Err(IpcError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Ok(Some(Err(e))),
        },
    )
    .map_err(IpcError::Io)?;
    match quick {
        Some(done) => done,
        None => crate::fdpass::recv_with_rights(fd, buf, fds, 0),
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
    const MAX_IOV: usize = 8;
    let (mut idx, mut offset) = (0, 0); // first part not fully sent, and how much of it went
    loop {
        while idx < parts.len() && offset == parts[idx].len() {
            idx += 1;
            offset = 0;
        }
        if idx == parts.len() {
            return Ok(());
        }
        let mut iov = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; MAX_IOV];
        let window = &parts[idx..parts.len().min(idx + MAX_IOV)];
        for (k, part) in window.iter().enumerate() {
            let part = if k == 0 { &part[offset..] } else { part };
            iov[k] = libc::iovec {
                iov_base: part.as_ptr() as *mut libc::c_void,
                iov_len: part.len(),
            };
        }
        // SAFETY: msghdr is plain data; zeroed is a valid empty header.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = window.len() as _;
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
        while n > 0 {
            let left = parts[idx].len() - offset;
            if n >= left {
                n -= left;
                idx += 1;
                offset = 0;
            } else {
                offset += n;
                n = 0;
            }
        }
    }
}

/// Sends a small buffer with one `send(MSG_NOSIGNAL)` (cheaper in the kernel than
/// `sendmsg`), finishing with [`send_all`] in the rare case of a partial write.
fn send_small(fd: RawFd, bytes: &[u8]) -> Result<(), IpcError> {
    loop {
        // SAFETY: sending from a live buffer.
        let n = unsafe { libc::send(fd, bytes.as_ptr().cast(), bytes.len(), libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return send_all(fd, &[&bytes[n as usize..]]);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EPIPE) | Some(libc::ECONNRESET) => return Err(IpcError::BrokenPipe),
            _ => return Err(IpcError::Io(err)),
        }
    }
}

impl Channel for UnixChannel {
    fn send_frame(&self, parts: &[&[u8]]) -> Result<(), IpcError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let header = FrameHeader::new(len).encode();
        match parts {
            [] => send_all(self.as_raw_fd(), &[&header]),
            // A small frame goes out as one contiguous write: cheaper than gathering two.
            [one] if one.len() <= SMALL_FRAME => {
                let mut frame = [0u8; HEADER_LEN + SMALL_FRAME];
                frame[..HEADER_LEN].copy_from_slice(&header);
                frame[HEADER_LEN..HEADER_LEN + one.len()].copy_from_slice(one);
                send_small(self.as_raw_fd(), &frame[..HEADER_LEN + one.len()])
            }
            [one] => send_all(self.as_raw_fd(), &[&header, one]),
            _ => {
                let mut all = Vec::with_capacity(parts.len() + 1);
                all.push(&header[..]);
                all.extend_from_slice(parts);
                send_all(self.as_raw_fd(), &all)
            }
        }
    }

    fn recv_frame(&self, buf: &mut Vec<u8>, max_len: u64) -> Result<(), IpcError> {
        // Handles nobody asked for are closed here.
        self.recv_frame_with_handles(buf, max_len).map(drop)
    }

    fn poll(&self, timeout: Option<Duration>) -> Result<bool, IpcError> {
        if self.has_buffered() {
            return Ok(true);
        }
        Ok(crate::poll::poll_readable(self.as_raw_fd(), timeout)?)
    }

    fn send_frame_with_handles(&self, parts: &[&[u8]], fds: &[RawFd]) -> Result<(), IpcError> {
        if fds.is_empty() {
            return self.send_frame(parts);
        }
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let mut prefix = [0u8; HEADER_LEN + 4];
        prefix[..HEADER_LEN].copy_from_slice(&FrameHeader::new(len).with_handles().encode());
        prefix[HEADER_LEN..].copy_from_slice(&(fds.len() as u32).to_le_bytes());
        let sent = crate::fdpass::send_with_rights(self.as_raw_fd(), &prefix, fds)?;
        let mut all = Vec::with_capacity(parts.len() + 1);
        all.push(&prefix[sent..]);
        all.extend_from_slice(parts);
        send_all(self.as_raw_fd(), &all)
    }

    fn recv_frame_with_handles(
        &self,
        buf: &mut Vec<u8>,
        max_len: u64,
    ) -> Result<Vec<OwnedFd>, IpcError> {
        let mut rx = self.rx();
        match self.fill(&mut rx, HEADER_LEN)? {
            0 => return Err(IpcError::Eof),
            n if n < HEADER_LEN => {
                return Err(IpcError::Truncated {
                    got: n as u64,
                    expected: HEADER_LEN as u64,
                })
            }
            _ => {}
        }
        let header = FrameHeader::decode(rx.pending()[..HEADER_LEN].try_into().expect("8 bytes"));
        let want = header.check(max_len)?;
        let mut prefix = HEADER_LEN;
        let mut announced = 0;
        if header.has_handles {
            prefix += 4;
            if self.fill(&mut rx, prefix)? < prefix {
                return Err(IpcError::Truncated {
                    got: 0,
                    expected: want as u64,
                });
            }
            announced = u32::from_le_bytes(
                rx.pending()[HEADER_LEN..prefix]
                    .try_into()
                    .expect("4 bytes"),
            ) as usize;
            if announced > rx.fds.len() {
                rx.consume(prefix);
                return Err(IpcError::Io(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "a message announced {announced} handles but carried {}",
                        rx.fds.len()
                    ),
                )));
            }
        }
        rx.consume(prefix);
        let fds: Vec<OwnedFd> = rx.fds.drain(..announced).collect();
        // The part of the body already buffered, then the rest straight from the kernel.
        buf.clear();
        let now = rx.pending().len().min(want);
        buf.extend_from_slice(&rx.pending()[..now]);
        rx.consume(now);
        drop(rx);
        if now < want {
            recv_body(self, buf, want)?;
        }
        Ok(fds)
    }

    fn has_buffered(&self) -> bool {
        UnixChannel::has_buffered(self)
    }

    fn buffered(&self) -> Vec<u8> {
        UnixChannel::buffered(self)
    }

    fn unread(&self, bytes: &[u8]) {
        UnixChannel::unread(self, bytes)
    }

    fn recv_frame_into(
        &self,
        out: &mut [u8],
        max_len: u64,
    ) -> Result<Result<usize, Vec<u8>>, IpcError> {
        let want = {
            let mut rx = self.rx();
            match self.fill(&mut rx, HEADER_LEN)? {
                0 => return Err(IpcError::Eof),
                n if n < HEADER_LEN => {
                    return Err(IpcError::Truncated {
                        got: n as u64,
                        expected: HEADER_LEN as u64,
                    })
                }
                _ => {}
            }
            let header =
                FrameHeader::decode(rx.pending()[..HEADER_LEN].try_into().expect("8 bytes"));
            let want = header.check(max_len)?;
            if header.has_handles || want > out.len() {
                drop(rx);
                let mut v = Vec::new();
                self.recv_frame(&mut v, max_len)?;
                return Ok(Err(v));
            }
            rx.consume(HEADER_LEN);
            let now = rx.pending().len().min(want);
            out[..now].copy_from_slice(&rx.pending()[..now]);
            rx.consume(now);
            if now == want {
                return Ok(Ok(want));
            }
            (now, want)
        };
        let (mut have, want) = want;
        while have < want {
            // SAFETY: reading into the caller's buffer, within bounds.
            let n = unsafe {
                libc::recv(
                    self.as_raw_fd(),
                    out.as_mut_ptr().add(have).cast(),
                    want - have,
                    0,
                )
            };
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
            have += n as usize;
        }
        Ok(Ok(want))
    }
}

/// Reads the rest of a body of `want` bytes (after the `buf.len()` already there), growing
/// `buf` only as data arrives. Bytes are read straight
/// into the vector's spare capacity, so a large body is not zero-filled first.
pub(crate) fn recv_body(ch: &UnixChannel, buf: &mut Vec<u8>, want: usize) -> Result<(), IpcError> {
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
