use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::mem::ManuallyDrop;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle, RawHandle};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mp_ipc::deadline::Deadline;
use mp_ipc::frame::{next_capacity, FrameHeader, HEADER_LEN};
use mp_ipc::{Channel, IpcError};
use windows_sys::Win32::Foundation::ERROR_TIMEOUT;
use windows_sys::Win32::Foundation::{
    ERROR_ACCESS_DENIED, ERROR_BROKEN_PIPE, ERROR_CONNECTION_ABORTED, ERROR_GRACEFUL_DISCONNECT,
    ERROR_HANDLE_EOF, ERROR_NETNAME_DELETED, ERROR_NO_DATA, ERROR_OPERATION_ABORTED,
    ERROR_PIPE_BUSY, ERROR_PIPE_CONNECTED, ERROR_PIPE_NOT_CONNECTED, GENERIC_READ, GENERIC_WRITE,
    HANDLE, INVALID_HANDLE_VALUE,
};
use windows_sys::Win32::Networking::WinSock::{WSAECONNABORTED, WSAECONNRESET, WSAESHUTDOWN};
use windows_sys::Win32::Storage::FileSystem::{
    CreateFileW, GetFileType, ReadFile, WriteFile, FILE_FLAG_FIRST_PIPE_INSTANCE,
    FILE_FLAG_OVERLAPPED, FILE_TYPE_PIPE, OPEN_EXISTING, PIPE_ACCESS_DUPLEX,
    SECURITY_IDENTIFICATION, SECURITY_SQOS_PRESENT,
};
use windows_sys::Win32::System::Pipes::{
    ConnectNamedPipe, CreateNamedPipeW, GetNamedPipeInfo, PeekNamedPipe, PIPE_READMODE_BYTE,
    PIPE_REJECT_REMOTE_CLIENTS, PIPE_TYPE_BYTE, PIPE_WAIT,
};
use windows_sys::Win32::System::IO::OVERLAPPED;

use crate::handle::{
    duplicate_local, handle_prefix, take_handle_prefix, unexport, HANDLE_PREFIX_MAX,
};
use crate::io::{overlapped, overlapped_timeout, overlapped_watched, win_error};
use crate::socket::{close_socket, duplicate_socket, socket_peer_gone, socket_ready};

/// Bytes the system reserves for each direction of a pipe (a quota, not a hard limit).
const PIPE_BUFFER: u32 = 64 * 1024;

/// Largest single `ReadFile`/`WriteFile` request.
const IO_CHUNK: usize = 16 << 20;

/// Frames up to this size are written with one `WriteFile` (header and body copied together).
const COALESCE: usize = 64 * 1024;

/// Source of pair ids and pipe-name counters within this process.
static NEXT_PAIR: AtomicU64 = AtomicU64::new(1);

/// One end of a connected named-pipe pair carrying length-prefixed frames; or, made with
/// [`from_handle`](Self::from_handle), a connected named pipe or stream socket (TCP) from
/// elsewhere (a listener), which carries frames the same way.
///
/// Both ends are opened for overlapped I/O: a thread blocked reading an end does not block
/// another thread writing to the same pipe through a duplicate of the handle (synchronous
/// handles serialise all I/O on their file object, which would deadlock a child whose
/// watchdog waits on the channel its target reports on). Every read and write still blocks
/// its caller until complete; the overlapped structure and a per-thread event only live
/// for the duration of one call.
///
/// ```
/// use mp_ipc::Channel;
/// let (a, b) = mp_windows::PipeChannel::pair().unwrap();
/// a.send_frame(&[b"hello"]).unwrap();
/// let mut buf = Vec::new();
/// b.recv_frame(&mut buf, 1024).unwrap();
/// assert_eq!(buf, b"hello");
/// ```
#[derive(Debug)]
pub struct PipeChannel {
    /// Closed by `Drop`: `CloseHandle` for a pipe, `closesocket` for a socket.
    handle: ManuallyDrop<OwnedHandle>,
    kind: Kind,
    /// Shared by the two ends made by one [`pair`](Self::pair) call (and their clones);
    /// zero for a channel made from a foreign handle.
    pair_id: u64,
    rx: Mutex<PipeRx>,
}

/// What a receive left for the next one: bytes handed back with `unread`, and a frame whose
/// receive timed out in the middle of its body.
#[derive(Debug, Default)]
struct PipeRx {
    pending: Vec<u8>,
    partial: Option<(FrameHeader, Vec<u8>)>,
    /// Set by a framing error: the stream position is lost.
    broken: Option<String>,
}

impl PipeRx {
    /// Whether a whole frame waits in `pending`.
    fn whole_frame(&self) -> bool {
        let Some(h) = self.pending.get(..HEADER_LEN) else {
            return false;
        };
        let h = FrameHeader::decode(h.try_into().expect("8 bytes"));
        self.partial.is_none() && (self.pending.len() - HEADER_LEN) as u64 >= h.len
    }
}

impl PipeChannel {
    /// A connected pair: the server and client ends of a fresh, uniquely named, byte-mode,
    /// duplex pipe (`\\.\pipe\mp-<pid>-<counter>-<random>`) that accepts exactly one local
    /// client. Both handles are non-inheritable.
    pub fn pair() -> io::Result<(Self, Self)> {
        let id = NEXT_PAIR.fetch_add(1, Ordering::Relaxed);
        let mut last = None;
        for attempt in 0..8u64 {
            let mut h = RandomState::new().build_hasher();
            h.write_u64(id);
            h.write_u64(attempt);
            let name = format!(
                r"\\.\pipe\mp-{}-{id}-{:016x}",
                std::process::id(),
                h.finish()
            );
            match Self::pair_named(&name, id) {
                Ok(p) => return Ok(p),
                // Somebody holds the name (or squats on it): try another one.
                Err(e)
                    if e.raw_os_error() == Some(ERROR_ACCESS_DENIED as i32)
                        || e.raw_os_error() == Some(ERROR_PIPE_BUSY as i32) =>
                {
                    last = Some(e)
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("cannot create a named pipe")))
    }

    fn pair_named(name: &str, id: u64) -> io::Result<(Self, Self)> {
        let wide: Vec<u16> = name.encode_utf16().chain(std::iter::once(0)).collect();
        // SAFETY: `wide` is a NUL-terminated UTF-16 string; null security attributes make a
        // non-inheritable handle with the default DACL.
        let server = unsafe {
            CreateNamedPipeW(
                wide.as_ptr(),
                PIPE_ACCESS_DUPLEX | FILE_FLAG_OVERLAPPED | FILE_FLAG_FIRST_PIPE_INSTANCE,
                PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT | PIPE_REJECT_REMOTE_CLIENTS,
                1,
                PIPE_BUFFER,
                PIPE_BUFFER,
                0,
                std::ptr::null(),
            )
        };
        if server == INVALID_HANDLE_VALUE {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh handle nobody else owns.
        let server = unsafe { OwnedHandle::from_raw_handle(server) };
        // SAFETY: as above; SQOS identification keeps the server end from impersonating us.
        let client = unsafe {
            CreateFileW(
                wide.as_ptr(),
                GENERIC_READ | GENERIC_WRITE,
                0,
                std::ptr::null(),
                OPEN_EXISTING,
                FILE_FLAG_OVERLAPPED | SECURITY_SQOS_PRESENT | SECURITY_IDENTIFICATION,
                std::ptr::null_mut(),
            )
        };
        if client == INVALID_HANDLE_VALUE {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh handle nobody else owns.
        let client = unsafe { OwnedHandle::from_raw_handle(client) };
        let sh = server.as_raw_handle();
        // SAFETY: `ov` is the live overlapped structure `overlapped` provides for this call.
        match overlapped(sh, |ov| unsafe { ConnectNamedPipe(sh, ov) }) {
            Ok(_) => {}
            Err(e) if e == ERROR_PIPE_CONNECTED => {}
            Err(e) => return Err(win_error(e)),
        }
        Ok((
            Self::new(server, Kind::Pipe, id),
            Self::new(client, Kind::Pipe, id),
        ))
    }

    fn new(handle: OwnedHandle, kind: Kind, pair_id: u64) -> Self {
        Self {
            handle: ManuallyDrop::new(handle),
            kind,
            pair_id,
            rx: Mutex::new(PipeRx::default()),
        }
    }

    fn rx(&self) -> MutexGuard<'_, PipeRx> {
        self.rx.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes `bytes` as they are, with no frame header: for protocols layered on the pipe
    /// (and tests that send malformed frames on purpose).
    pub fn write_raw(&self, bytes: &[u8]) -> io::Result<()> {
        self.write_all(bytes).map_err(|e| match e {
            IpcError::Io(e) => e,
            other => io::Error::new(io::ErrorKind::BrokenPipe, other.to_string()),
        })
    }

    /// Wraps an owned handle, which must be a pipe or a connected stream socket opened for
    /// overlapped I/O (as Rust's std opens them): anything else is refused here rather than
    /// failing later.
    pub fn from_handle(handle: OwnedHandle) -> io::Result<Self> {
        match Kind::of(handle.as_raw_handle()) {
            Some(kind) => Ok(Self::new(handle, kind, 0)),
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the handle is neither a pipe nor a socket",
            )),
        }
    }

    /// Gives up the channel, returning its handle.
    pub fn into_handle(self) -> OwnedHandle {
        let mut me = ManuallyDrop::new(self);
        // SAFETY: `me` is never used or dropped again, so the handle is moved out once.
        unsafe { ManuallyDrop::take(&mut me.handle) }
    }

    /// Whether this channel is a socket rather than a pipe.
    pub fn is_socket(&self) -> bool {
        self.kind == Kind::Socket
    }

    /// Takes ownership of a raw handle.
    ///
    /// # Safety
    /// `h` must be an open handle owned by nobody else.
    pub unsafe fn from_raw_handle(h: RawHandle) -> io::Result<Self> {
        // SAFETY: the caller promises an open handle nobody else owns.
        Self::from_handle(unsafe { OwnedHandle::from_raw_handle(h) })
    }

    /// A second handle for the same pipe end (same pair id).
    pub fn try_clone(&self) -> io::Result<Self> {
        let handle = match self.kind {
            Kind::Pipe => duplicate_local(self.raw())?,
            Kind::Socket => duplicate_socket(self.raw())?,
        };
        Ok(Self::new(handle, self.kind, self.pair_id))
    }

    /// The id shared by the two ends of one [`pair`](Self::pair) (and their clones), unique
    /// within this process; zero for a channel made from a handle. It lets a caller match
    /// one end of a pair with the other, e.g. a boot channel with the child it was given to.
    pub fn pair_id(&self) -> u64 {
        self.pair_id
    }

    fn raw(&self) -> HANDLE {
        self.handle.as_raw_handle()
    }

    /// Reads at most `len` bytes into `ptr` until `deadline` (`Timeout` then, nothing
    /// read); `Ok(0)` at end of stream.
    ///
    /// # Safety
    /// `ptr` must be valid for writes of `len` bytes.
    unsafe fn read_raw(
        &self,
        ptr: *mut u8,
        len: usize,
        deadline: Deadline,
    ) -> Result<usize, IpcError> {
        let h = self.raw();
        let len = len.min(IO_CHUNK) as u32;
        // SAFETY: the caller vouches for the buffer; `ov` lives until the read completes.
        match overlapped_timeout(h, deadline.remaining(), |ov| unsafe {
            ReadFile(h, ptr, len, std::ptr::null_mut(), ov)
        }) {
            Ok(n) => Ok(n as usize),
            Err(e) if is_end_of_stream(e) => Ok(0),
            Err(ERROR_TIMEOUT) => Err(IpcError::Timeout),
            Err(e) => Err(IpcError::Io(win_error(e))),
        }
    }

    /// Reads `buf.len()` bytes, first from `pending`, until `deadline`: how many came
    /// (fewer only at end of stream or on a timeout, `timed_out` says which).
    fn read_full(
        &self,
        rx: &mut PipeRx,
        buf: &mut [u8],
        deadline: Deadline,
    ) -> Result<(usize, bool), IpcError> {
        let mut got = rx.pending.len().min(buf.len());
        buf[..got].copy_from_slice(&rx.pending[..got]);
        rx.pending.drain(..got);
        while got < buf.len() {
            // SAFETY: the range lies inside `buf`.
            match unsafe { self.read_raw(buf.as_mut_ptr().add(got), buf.len() - got, deadline) } {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(IpcError::Timeout) => return Ok((got, true)),
                Err(e) => return Err(e),
            }
        }
        Ok((got, false))
    }

    /// Writes all of `data` (raw bytes, no frame header).
    pub(crate) fn write_all(&self, mut data: &[u8]) -> Result<(), IpcError> {
        let h = self.raw();
        while !data.is_empty() {
            let len = data.len().min(IO_CHUNK) as u32;
            let ptr = data.as_ptr();
            // SAFETY: `data` outlives the write; `ov` lives until it completes.
            let write = move |ov: *mut OVERLAPPED| unsafe {
                WriteFile(h, ptr, len, std::ptr::null_mut(), ov)
            };
            let done = match self.kind {
                Kind::Pipe => overlapped(h, write),
                // A socket's peer may stop reading and close (a server refusing an oversized
                // frame): the pending write must end then, whether or not the stack
                // completes it with the reset.
                Kind::Socket => {
                    overlapped_watched(h, Duration::from_millis(50), || socket_peer_gone(h), write)
                }
            };
            match done {
                Ok(0) => return Err(IpcError::Io(io::ErrorKind::WriteZero.into())),
                Err(ERROR_OPERATION_ABORTED) if self.kind == Kind::Socket => {
                    return Err(IpcError::BrokenPipe)
                }
                Ok(n) => data = &data[(n as usize).min(data.len())..],
                Err(e) if is_end_of_stream(e) || e == ERROR_NO_DATA => {
                    return Err(IpcError::BrokenPipe)
                }
                Err(e) => return Err(IpcError::Io(win_error(e))),
            }
        }
        Ok(())
    }
}

impl Drop for PipeChannel {
    fn drop(&mut self) {
        match self.kind {
            // SAFETY: dropped once, here; the handle is not used afterwards.
            Kind::Pipe => unsafe { ManuallyDrop::drop(&mut self.handle) },
            Kind::Socket => close_socket(self.raw()),
        }
    }
}

/// What a channel handle is: the I/O is the same, readiness and closing differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Pipe,
    Socket,
}

impl Kind {
    /// The kind of handle `h`; `None` for anything that is neither a pipe nor a socket
    /// (a process, an event, a file).
    pub(crate) fn of(h: HANDLE) -> Option<Self> {
        // SAFETY: GetFileType only inspects the handle. Sockets are FILE_TYPE_PIPE too.
        let ty = unsafe { GetFileType(h) };
        if ty != FILE_TYPE_PIPE {
            // A process, an event, a file (or not a handle: its wait reports that).
            return None;
        }
        let (mut a, mut b, mut c, mut d) = (0u32, 0u32, 0u32, 0u32);
        // SAFETY: GetNamedPipeInfo fills in four live integers. A pipe answers it (also
        // once its peer is gone), a socket does not. (Asking Winsock instead would not do:
        // Wine's does not know a socket handle duplicated into this process.)
        if unsafe { GetNamedPipeInfo(h, &mut a, &mut b, &mut c, &mut d) } != 0 {
            Some(Self::Pipe)
        } else {
            Some(Self::Socket)
        }
    }

    /// Whether a read on `h` (of this kind) would not block, end of stream included.
    pub(crate) fn ready(self, h: HANDLE) -> io::Result<bool> {
        match self {
            Self::Pipe => pipe_ready(h),
            Self::Socket => socket_ready(h, Some(Duration::ZERO)),
        }
    }
}

/// Errors that mean the peer closed its end (a pipe), or closed, reset or shut down the
/// connection (a socket).
pub(crate) fn is_end_of_stream(e: u32) -> bool {
    matches!(
        e,
        ERROR_BROKEN_PIPE
            | ERROR_PIPE_NOT_CONNECTED
            | ERROR_HANDLE_EOF
            | ERROR_NETNAME_DELETED
            | ERROR_CONNECTION_ABORTED
            | ERROR_GRACEFUL_DISCONNECT
    ) || matches!(e as i32, WSAECONNRESET | WSAECONNABORTED | WSAESHUTDOWN)
}

/// Whether a read on pipe handle `h` would not block: bytes are waiting, or the peer is gone
/// (end of stream counts as ready). Other failures are errors.
pub(crate) fn pipe_ready(h: HANDLE) -> io::Result<bool> {
    let mut avail = 0u32;
    // SAFETY: PeekNamedPipe writes the available count into a live integer and reads no data.
    let ok = unsafe {
        PeekNamedPipe(
            h,
            std::ptr::null_mut(),
            0,
            std::ptr::null_mut(),
            &mut avail,
            std::ptr::null_mut(),
        )
    };
    if ok != 0 {
        return Ok(avail > 0);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error().map(|c| c as u32) {
        Some(c) if is_end_of_stream(c) || c == ERROR_NO_DATA => Ok(true),
        _ => Err(err),
    }
}

/// The polling schedule: start at 100 µs, double each round, cap at 5 ms.
pub(crate) struct Backoff {
    nap: Duration,
}

impl Backoff {
    pub(crate) fn new() -> Self {
        Self {
            nap: Duration::from_micros(100),
        }
    }

    /// Sleeps one round, never past `deadline`; returns false once the deadline has passed.
    pub(crate) fn sleep(&mut self, deadline: Option<Instant>) -> bool {
        let nap = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return false;
                }
                left.min(self.nap)
            }
            None => self.nap,
        };
        std::thread::sleep(nap);
        self.nap = (self.nap * 2).min(Duration::from_millis(5));
        true
    }
}

impl AsRawHandle for PipeChannel {
    fn as_raw_handle(&self) -> RawHandle {
        self.handle.as_raw_handle()
    }
}

impl Channel for PipeChannel {
    fn send_frame(&self, parts: &[&[u8]]) -> Result<(), IpcError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let header = FrameHeader::new(len).encode();
        if len <= COALESCE {
            let mut all = Vec::with_capacity(HEADER_LEN + len);
            all.extend_from_slice(&header);
            for p in parts {
                all.extend_from_slice(p);
            }
            return self.write_all(&all);
        }
        self.write_all(&header)?;
        for p in parts {
            self.write_all(p)?;
        }
        Ok(())
    }

    /// A frame with handles: the header (handles flag set), then a body that starts with
    /// the [`handle_prefix`] (the sender's pid and the values to import from it). Only pipes
    /// carry handles: a socket may lead to another machine.
    fn send_frame_with_handles(
        &self,
        parts: &[&[u8]],
        handles: &[RawHandle],
    ) -> Result<(), IpcError> {
        if handles.is_empty() {
            return self.send_frame(parts);
        }
        if self.kind == Kind::Socket {
            return Err(IpcError::Io(io::Error::new(
                io::ErrorKind::Unsupported,
                "handles travel over pipes, not sockets",
            )));
        }
        let (prefix, values) = handle_prefix(handles)?;
        let len = prefix.len() + parts.iter().map(|p| p.len()).sum::<usize>();
        let mut frame = Vec::with_capacity(HEADER_LEN + len);
        frame.extend_from_slice(&FrameHeader::new(len).with_handles().encode());
        frame.extend_from_slice(&prefix);
        for p in parts {
            frame.extend_from_slice(p);
        }
        self.write_all(&frame).inspect_err(|_| unexport(&values))
    }

    fn recv_frame_until(
        &self,
        buf: &mut Vec<u8>,
        max_len: u64,
        deadline: Deadline,
    ) -> Result<Vec<OwnedHandle>, IpcError> {
        let mut rx = self.rx();
        if let Some(why) = &rx.broken {
            return Err(IpcError::Corrupt(why.clone()));
        }
        let header = match rx.partial.take() {
            Some((header, body)) => {
                *buf = body;
                header
            }
            None => {
                let mut hb = [0u8; HEADER_LEN];
                match self.read_full(&mut rx, &mut hb, deadline)? {
                    (0, true) => return Err(IpcError::Timeout),
                    (0, false) => return Err(IpcError::Eof),
                    (HEADER_LEN, _) => {}
                    (got, true) => {
                        // Part of a header: it waits for the rest.
                        rx.pending.splice(0..0, hb[..got].iter().copied());
                        return Err(IpcError::Timeout);
                    }
                    (got, false) => {
                        rx.broken = Some("the peer closed the connection inside a header".into());
                        return Err(IpcError::Truncated {
                            got: got as u64,
                            expected: HEADER_LEN as u64,
                        });
                    }
                }
                buf.clear();
                FrameHeader::decode(hb)
            }
        };
        let limit = if header.has_handles {
            max_len.saturating_add(HANDLE_PREFIX_MAX)
        } else {
            max_len
        };
        let want = match header.check(limit) {
            Ok(want) => want,
            Err(e) => {
                rx.broken = Some(format!("a message of {} bytes was refused", header.len));
                return Err(e);
            }
        };
        if !recv_body(self, &mut rx, buf, want, deadline)? {
            // Kept for the next receive, which continues where this one stopped.
            rx.partial = Some((header, std::mem::take(buf)));
            return Err(IpcError::Timeout);
        }
        drop(rx);
        if !header.has_handles {
            return Ok(Vec::new());
        }
        // The whole frame is read before the handles are taken, so the stream stays in
        // step whatever becomes of them; a bad prefix still breaks the connection (the
        // peer broke the protocol).
        let taken = if self.kind == Kind::Socket {
            Err(IpcError::Corrupt(
                "handles announced on a socket, where they cannot travel".into(),
            ))
        } else {
            take_handle_prefix(buf, max_len)
        };
        if let Err(IpcError::Corrupt(why)) = &taken {
            self.rx().broken = Some(why.clone());
        }
        taken
    }

    fn has_buffered(&self) -> bool {
        match self.rx.try_lock() {
            Ok(rx) => rx.whole_frame(),
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner().whole_frame(),
            Err(std::sync::TryLockError::WouldBlock) => false,
        }
    }

    fn buffered(&self) -> Vec<u8> {
        let rx = self.rx();
        let mut out = Vec::new();
        if let Some((header, body)) = &rx.partial {
            out.extend_from_slice(&header.encode());
            out.extend_from_slice(body);
        }
        out.extend_from_slice(&rx.pending);
        out
    }

    fn unread(&self, bytes: &[u8]) {
        let mut rx = self.rx();
        rx.pending.splice(0..0, bytes.iter().copied());
    }

    fn poll(&self, timeout: Option<Duration>) -> Result<bool, IpcError> {
        if self.has_buffered() {
            return Ok(true);
        }
        if self.kind == Kind::Socket {
            return Ok(socket_ready(self.raw(), timeout)?);
        }
        let deadline = mp_ipc::deadline::Deadline::from_timeout(timeout).instant();
        let mut backoff = Backoff::new();
        loop {
            if pipe_ready(self.raw())? {
                return Ok(true);
            }
            if !backoff.sleep(deadline) {
                return Ok(false);
            }
        }
    }
}

/// Reads the rest of a body of `want` bytes into `buf` (`buf.len()` are there), first from
/// `pending`, growing `buf` only as data arrives (read straight into the vector's spare
/// capacity, so a large body is not zero-filled first). `Ok(false)`: `deadline` passed.
fn recv_body(
    ch: &PipeChannel,
    rx: &mut PipeRx,
    buf: &mut Vec<u8>,
    want: usize,
    deadline: Deadline,
) -> Result<bool, IpcError> {
    let now = rx.pending.len().min(want - buf.len());
    buf.extend(rx.pending.drain(..now));
    while buf.len() < want {
        let have = buf.len();
        buf.reserve_exact(next_capacity(have, want) - have);
        let room = (buf.capacity() - have).min(want - have);
        // SAFETY: the read writes at most `room` bytes into the reserved spare capacity.
        let n = match unsafe { ch.read_raw(buf.as_mut_ptr().add(have), room, deadline) } {
            Ok(n) => n,
            Err(IpcError::Timeout) => return Ok(false),
            Err(e) => return Err(e),
        };
        if n == 0 {
            rx.broken = Some("the peer closed the connection inside a message".into());
            return Err(IpcError::Truncated {
                got: have as u64,
                expected: want as u64,
            });
        }
        // SAFETY: `n <= room` bytes past `have` were initialised by the read.
        unsafe { buf.set_len(have + n.min(room)) };
    }
    Ok(true)
}
