use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use mp_ipc::deadline::Deadline;
use mp_ipc::frame::{
    into_slice, next_capacity, prefix_bytes, split_off_prefix, FrameHeader, Prefix, HEADER_LEN,
};
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
///
/// What the peer sends is checked, never trusted: descriptors arrive only with the prefix
/// of a frame that announces exactly that many (anything else is closed at once and the
/// channel is broken: [`IpcError::Corrupt`]), a receive with a deadline gives up in the
/// middle of a stalled frame and keeps what came for the next receive, and after a framing
/// error every receive fails rather than read the rest of a frame as new frames.
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
    /// Stream offset of the first pending byte (bytes put back with `unread` come before
    /// offset 0).
    pos: i64,
    /// Descriptor batches in arrival order, each with the stream offset at which the
    /// receive that brought it ended: the kernel ends a receive right after the bytes the
    /// descriptors were sent with, which for a frame that announces them is its prefix.
    batches: VecDeque<Batch>,
    /// A frame whose receive timed out in the middle of its body, to be continued.
    partial: Option<Partial>,
    /// Set by a framing error: the stream position is lost, nothing more can be read.
    broken: Option<String>,
}

#[derive(Debug)]
struct Batch {
    end: i64,
    fds: Vec<OwnedFd>,
}

/// A frame received in part: its header, its descriptors and the body so far.
#[derive(Debug)]
struct Partial {
    /// Stream offset of the frame's end.
    end: i64,
    header: FrameHeader,
    fds: Vec<OwnedFd>,
    body: Vec<u8>,
}

/// A frame whose header (and descriptor count) has been taken off the stream.
struct Started {
    end: i64,
    header: FrameHeader,
    want: usize,
    fds: Vec<OwnedFd>,
}

/// Frames up to this size are copied into one buffer and sent with a single-segment write.
const SMALL_FRAME: usize = 512;

/// How much one receive asks the kernel for.
const READ_AHEAD: usize = 64 << 10;

/// The bytes after the header of a frame with descriptors: their count.
const COUNT_LEN: usize = 4;

impl ReadAhead {
    fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        self.pos += n as i64;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }

    /// Marks the stream unreadable, closes every descriptor held, and returns the error.
    fn break_with(&mut self, why: String) -> IpcError {
        self.batches.clear();
        self.partial = None;
        self.broken = Some(why.clone());
        IpcError::Corrupt(why)
    }

    /// Fails if a descriptor batch arrived with bytes before stream offset `at`: bytes that
    /// belong to frames already taken, none of which announced it.
    fn check_stray(&mut self, at: i64) -> Result<(), IpcError> {
        match self.batches.front() {
            Some(b) if b.end <= at => {
                let n = b.fds.len();
                Err(self.break_with(format!(
                    "{n} descriptors arrived with a message that did not announce them"
                )))
            }
            _ => Ok(()),
        }
    }

    /// Whether a whole frame waits in the buffer (a receive would not block).
    fn whole_frame(&self) -> bool {
        if self.partial.is_some() {
            return false;
        }
        let p = self.pending();
        let Some(h) = p.get(..HEADER_LEN) else {
            return false;
        };
        let h = FrameHeader::decode(h.try_into().expect("8 bytes"));
        let prefix = HEADER_LEN + if h.has_handles { COUNT_LEN } else { 0 };
        (p.len() as u64).saturating_sub(prefix as u64) >= h.len
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

    /// Bytes received ahead and not yet returned as frames (a frame received in part
    /// included, from its header on).
    pub fn buffered(&self) -> Vec<u8> {
        let rx = self.rx();
        let mut out = Vec::new();
        if let Some(p) = &rx.partial {
            out.extend_from_slice(&p.header.encode());
            if p.header.has_handles {
                out.extend_from_slice(&(p.fds.len() as u32).to_le_bytes());
            }
            out.extend_from_slice(&p.body);
        }
        out.extend_from_slice(rx.pending());
        out
    }

    /// Puts bytes back in front of what the kernel will deliver: the read-ahead of this end
    /// in the process it came from.
    pub fn unread(&self, bytes: &[u8]) {
        let mut rx = self.rx();
        let mut joined = bytes.to_vec();
        joined.extend_from_slice(rx.pending());
        rx.pos -= bytes.len() as i64;
        rx.buf = joined;
        rx.start = 0;
    }

    /// Whether a whole frame is buffered (readable without the kernel). A frame of which
    /// only a part is here is not: its receive would wait for the rest.
    pub fn has_buffered(&self) -> bool {
        // A receive in progress elsewhere holds the lock: then the kernel knows best.
        match self.rx.try_lock() {
            Ok(rx) => rx.whole_frame(),
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner().whole_frame(),
            Err(std::sync::TryLockError::WouldBlock) => false,
        }
    }

    /// Makes sure at least `n` bytes are buffered, reading from the kernel as needed, until
    /// `deadline`. Returns how many are buffered (fewer than `n` only at end of stream).
    fn fill(&self, rx: &mut ReadAhead, n: usize, deadline: Deadline) -> Result<usize, IpcError> {
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
            let got = match recv_until(self.as_raw_fd(), spare, &mut fds, deadline) {
                Ok(got) => got,
                Err(IpcError::Corrupt(why)) => return Err(rx.break_with(why)),
                Err(e) => return Err(e),
            };
            // SAFETY: `got` bytes past `have` were written by the kernel.
            unsafe { rx.buf.set_len(have + got) };
            if !fds.is_empty() {
                let end = rx.pos + rx.pending().len() as i64;
                rx.batches.push_back(Batch { end, fds });
            }
            if got == 0 {
                break;
            }
        }
        Ok(rx.pending().len())
    }

    /// Takes the next frame's header (and descriptor count, claiming its descriptors) off
    /// the stream, waiting until `deadline`. Nothing is consumed unless it succeeds.
    fn start_frame(
        &self,
        rx: &mut ReadAhead,
        max_len: u64,
        deadline: Deadline,
    ) -> Result<Started, IpcError> {
        if let Some(why) = &rx.broken {
            return Err(IpcError::Corrupt(why.clone()));
        }
        let got = self.fill(rx, HEADER_LEN, deadline)?;
        let at = rx.pos;
        rx.check_stray(at)?;
        match got {
            0 => return Err(IpcError::Eof),
            n if n < HEADER_LEN => {
                rx.broken = Some("the peer closed the connection inside a header".into());
                return Err(IpcError::Truncated {
                    got: n as u64,
                    expected: HEADER_LEN as u64,
                });
            }
            _ => {}
        }
        let header = FrameHeader::decode(rx.pending()[..HEADER_LEN].try_into().expect("8 bytes"));
        let want = match header.check(max_len) {
            Ok(want) => want,
            Err(e) => {
                rx.broken = Some(format!("a message of {} bytes was refused", header.len));
                return Err(e);
            }
        };
        let mut prefix = HEADER_LEN;
        let mut fds = Vec::new();
        if header.has_handles {
            prefix += COUNT_LEN;
            if self.fill(rx, prefix, deadline)? < prefix {
                rx.broken = Some("the peer closed the connection inside a header".into());
                return Err(IpcError::Truncated {
                    got: 0,
                    expected: want as u64,
                });
            }
            let announced = u32::from_le_bytes(
                rx.pending()[HEADER_LEN..prefix]
                    .try_into()
                    .expect("4 bytes"),
            ) as usize;
            // The descriptors came with this prefix, or they did not come at all.
            if rx
                .batches
                .front()
                .is_some_and(|b| b.end > at && b.end <= at + prefix as i64)
            {
                fds = rx.batches.pop_front().expect("checked").fds;
            }
            if fds.len() != announced {
                return Err(rx.break_with(format!(
                    "a message announced {announced} handles but carried {}",
                    fds.len()
                )));
            }
        }
        rx.consume(prefix);
        Ok(Started {
            end: at + (prefix + want) as i64,
            header,
            want,
            fds,
        })
    }

    /// Reads the rest of a started frame's body into `out[have..]` (`out` is the whole
    /// body), first from the buffer, then from the kernel until `deadline`. Returns how
    /// much of the body is there (all of it unless the deadline passed).
    fn body_into(
        &self,
        rx: &mut ReadAhead,
        out: &mut [u8],
        mut have: usize,
        deadline: Deadline,
    ) -> Result<usize, IpcError> {
        let want = out.len();
        let now = rx.pending().len().min(want - have);
        out[have..have + now].copy_from_slice(&rx.pending()[..now]);
        rx.consume(now);
        have += now;
        while have < want {
            match self.recv_direct(rx, &mut out[have..], deadline) {
                Ok(0) => return Err(truncated(rx, have, want)),
                Ok(n) => have += n,
                Err(IpcError::Timeout) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(have)
    }

    /// The same for a body growing in `buf` (`buf.len()` bytes are there; `want` in all):
    /// the vector grows only as bytes arrive.
    fn body_vec(
        &self,
        rx: &mut ReadAhead,
        buf: &mut Vec<u8>,
        want: usize,
        deadline: Deadline,
    ) -> Result<bool, IpcError> {
        let now = rx.pending().len().min(want - buf.len());
        buf.extend_from_slice(&rx.pending()[..now]);
        rx.consume(now);
        while buf.len() < want {
            let have = buf.len();
            buf.reserve_exact(next_capacity(have, want) - have);
            let room = (buf.capacity() - have).min(want - have);
            // SAFETY: the kernel writes at most `room` bytes into the reserved spare capacity.
            let spare = unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr().add(have), room) };
            match self.recv_direct(rx, spare, deadline) {
                Ok(0) => return Err(truncated(rx, have, want)),
                // SAFETY: `n` bytes past `have` were initialised by the kernel.
                Ok(n) => unsafe { buf.set_len(have + n) },
                Err(IpcError::Timeout) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// One receive of body bytes straight into `out` (the buffer is empty); 0 at end of
    /// stream. Descriptors here were announced by nobody.
    fn recv_direct(
        &self,
        rx: &mut ReadAhead,
        out: &mut [u8],
        deadline: Deadline,
    ) -> Result<usize, IpcError> {
        let mut fds = Vec::new();
        let n = match recv_until(self.as_raw_fd(), out, &mut fds, deadline) {
            Ok(n) => n,
            Err(IpcError::Corrupt(why)) => return Err(rx.break_with(why)),
            Err(e) => return Err(e),
        };
        rx.pos += n as i64;
        if !fds.is_empty() {
            let n = fds.len();
            drop(fds);
            return Err(rx.break_with(format!("{n} descriptors arrived inside a message body")));
        }
        Ok(n)
    }

    /// After a whole frame ending at stream offset `end`: no descriptors may have come
    /// with its bytes unless it claimed them.
    fn finish_frame(&self, rx: &mut ReadAhead, end: i64) -> Result<(), IpcError> {
        rx.check_stray(end)
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
        // SAFETY: the caller promises an open descriptor nobody else owns.
        Self::from_fd(unsafe { OwnedFd::from_raw_fd(fd) })
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

/// The peer closed its end after `got` of `want` body bytes: the stream is unreadable.
fn truncated(rx: &mut ReadAhead, got: usize, want: usize) -> IpcError {
    rx.broken = Some("the peer closed the connection inside a message".into());
    IpcError::Truncated {
        got: got as u64,
        expected: want as u64,
    }
}

/// One receive of up to `buf.len()` bytes and the descriptors that come with them, until
/// `deadline` ([`IpcError::Timeout`] then, nothing received). It first tries without
/// blocking for up to [`limit`](crate::spin::limit), then sleeps.
fn recv_until(
    fd: RawFd,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
    deadline: Deadline,
) -> Result<usize, IpcError> {
    let window = deadline
        .remaining()
        .map_or(crate::spin::limit(), |left| left.min(crate::spin::limit()));
    let quick = crate::spin::spin(window, || {
        match crate::fdpass::recv_with_rights(fd, buf, fds, libc::MSG_DONTWAIT) {
            Ok(n) => Ok(Some(Ok(n))),
            Err(IpcError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Ok(Some(Err(e))),
        }
    })
    .map_err(IpcError::Io)?;
    if let Some(done) = quick {
        return done;
    }
    loop {
        let Some(left) = deadline.remaining() else {
            return crate::fdpass::recv_with_rights(fd, buf, fds, 0);
        };
        if !crate::poll::poll_readable(fd, Some(left))? {
            return Err(IpcError::Timeout);
        }
        match crate::fdpass::recv_with_rights(fd, buf, fds, libc::MSG_DONTWAIT) {
            Err(IpcError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => continue,
            done => return done,
        }
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
        let mut prefix = [0u8; HEADER_LEN + COUNT_LEN];
        prefix[..HEADER_LEN].copy_from_slice(&FrameHeader::new(len).with_handles().encode());
        prefix[HEADER_LEN..].copy_from_slice(&(fds.len() as u32).to_le_bytes());
        let sent = crate::fdpass::send_with_rights(self.as_raw_fd(), &prefix, fds)?;
        let mut all = Vec::with_capacity(parts.len() + 1);
        all.push(&prefix[sent..]);
        all.extend_from_slice(parts);
        send_all(self.as_raw_fd(), &all)
    }

    fn recv_frame_until(
        &self,
        buf: &mut Vec<u8>,
        max_len: u64,
        deadline: Deadline,
    ) -> Result<Vec<OwnedFd>, IpcError> {
        let mut rx = self.rx();
        let (end, header, fds) = match rx.partial.take() {
            Some(p) => {
                if let Err(e) = p.header.check(max_len) {
                    rx.broken = Some(format!("a message of {} bytes was refused", p.header.len));
                    return Err(e);
                }
                *buf = p.body;
                (p.end, p.header, p.fds)
            }
            None => {
                let f = self.start_frame(&mut rx, max_len, deadline)?;
                buf.clear();
                (f.end, f.header, f.fds)
            }
        };
        if !self.body_vec(&mut rx, buf, header.len as usize, deadline)? {
            // Kept for the next receive, which continues where this one stopped.
            rx.partial = Some(Partial {
                end,
                header,
                fds,
                body: std::mem::take(buf),
            });
            return Err(IpcError::Timeout);
        }
        self.finish_frame(&mut rx, end)?;
        Ok(fds)
    }

    fn recv_frame_split_until(
        &self,
        prefix: &mut Prefix,
        prefix_len: fn(u64) -> usize,
        body: &mut Vec<u8>,
        max_len: u64,
        deadline: Deadline,
    ) -> Result<(usize, Vec<OwnedFd>), IpcError> {
        let mut rx = self.rx();
        if rx.partial.is_some() {
            // A frame begun by an earlier receive: finished whole, then split.
            drop(rx);
            let fds = self.recv_frame_until(body, max_len, deadline)?;
            return Ok((split_off_prefix(body, prefix, prefix_len), fds));
        }
        let f = self.start_frame(&mut rx, max_len, deadline)?;
        let n = prefix_bytes(f.want as u64, prefix_len);
        let have = self.body_into(&mut rx, &mut prefix[..n], 0, deadline)?;
        body.clear();
        if have < n || !self.body_vec(&mut rx, body, f.want - n, deadline)? {
            // Kept whole for the next receive, as `recv_frame_until` keeps it.
            let mut kept = prefix[..have].to_vec();
            kept.append(body);
            rx.partial = Some(Partial {
                end: f.end,
                header: f.header,
                fds: f.fds,
                body: kept,
            });
            return Err(IpcError::Timeout);
        }
        self.finish_frame(&mut rx, f.end)?;
        Ok((n, f.fds))
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
        let mut rx = self.rx();
        let peek = rx
            .pending()
            .get(..HEADER_LEN)
            .map(|h| FrameHeader::decode(h.try_into().expect("8 bytes")));
        // A frame in part, with handles, or too long for `out` goes through a vector.
        let direct = rx.partial.is_none()
            && rx.broken.is_none()
            && peek.is_none_or(|h| !h.has_handles && h.len <= out.len() as u64);
        if !direct {
            drop(rx);
            let mut v = Vec::new();
            self.recv_frame(&mut v, max_len)?;
            return Ok(into_slice(v, out));
        }
        let f = self.start_frame(&mut rx, max_len, Deadline::NEVER)?;
        if f.header.has_handles || f.want > out.len() {
            // The header came from the kernel just now: finish through a vector.
            let mut v = Vec::new();
            self.body_vec(&mut rx, &mut v, f.want, Deadline::NEVER)?;
            self.finish_frame(&mut rx, f.end)?;
            return Ok(into_slice(v, out));
        }
        self.body_into(&mut rx, &mut out[..f.want], 0, Deadline::NEVER)?;
        self.finish_frame(&mut rx, f.end)?;
        Ok(Ok(f.want))
    }
}
