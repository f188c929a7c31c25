//! Named-pipe listeners and clients (`\\.\pipe\name`): the Windows counterpart of a Unix
//! socket path, and the default family of `mp-core`'s listener and manager on Windows, as
//! `AF_PIPE` is for Python.
//!
//! A [`PipeListener`] keeps one instance of the pipe waiting for a client. The first
//! instance is created with `FILE_FLAG_FIRST_PIPE_INSTANCE`, so a second listener on a name
//! in use fails (`AddrInUse`) instead of sharing it. [`PipeListener::accept`] waits for a
//! client on the waiting instance with an overlapped `ConnectNamedPipe` (a client may have
//! connected before: `ERROR_PIPE_CONNECTED`; and may even have written and left already:
//! `ERROR_NO_DATA`, whose bytes are still there to read), then creates the next instance
//! before handing the connected one out, so the name never lapses. A client arriving while
//! no instance waits gets `ERROR_PIPE_BUSY` and [`connect`] waits (`WaitNamedPipeW`) and
//! retries, within its timeout.
//!
//! All handles are opened for overlapped I/O, like [`PipeChannel`](crate::PipeChannel)'s,
//! which is what a connected handle becomes; [`read_timeout`] and [`write_timeout`] serve the
//! short exchanges before that (an authentication handshake). Remote clients are refused
//! (`PIPE_REJECT_REMOTE_CLIENTS`): across machines, use TCP.

use std::io;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle, RawHandle};
use std::sync::Mutex;
use std::time::Duration;

use windows_sys::Win32::Foundation::{
    ERROR_ACCESS_DENIED, ERROR_NO_DATA, ERROR_PIPE_BUSY, ERROR_PIPE_CONNECTED, ERROR_SEM_TIMEOUT,
    ERROR_TIMEOUT, GENERIC_READ, GENERIC_WRITE, INVALID_HANDLE_VALUE,
};
use windows_sys::Win32::Storage::FileSystem::{
    CreateFileW, ReadFile, WriteFile, FILE_FLAG_FIRST_PIPE_INSTANCE, FILE_FLAG_OVERLAPPED,
    OPEN_EXISTING, PIPE_ACCESS_DUPLEX, SECURITY_IDENTIFICATION, SECURITY_SQOS_PRESENT,
};
use windows_sys::Win32::System::Pipes::{
    ConnectNamedPipe, CreateNamedPipeW, DisconnectNamedPipe, WaitNamedPipeW, PIPE_READMODE_BYTE,
    PIPE_REJECT_REMOTE_CLIENTS, PIPE_TYPE_BYTE, PIPE_UNLIMITED_INSTANCES, PIPE_WAIT,
};
use windows_sys::Win32::System::IO::CancelIoEx;

use mp_ipc::deadline::Deadline;

use crate::channel::is_end_of_stream;
use crate::io::{overlapped_timeout, win_error};

/// Bytes the system reserves for each direction of a listener's pipe instance.
const PIPE_BUFFER: u32 = 64 * 1024;

/// How long [`connect`] without a timeout waits for a busy pipe (as Python does).
pub const DEFAULT_BUSY_WAIT: Duration = Duration::from_secs(20);

/// The prefix every local pipe name starts with.
pub const PIPE_PREFIX: &str = r"\\.\pipe\";

fn wide(name: &str) -> io::Result<Vec<u16>> {
    let ok = name.len() > PIPE_PREFIX.len()
        && name.is_char_boundary(PIPE_PREFIX.len())
        && name[..PIPE_PREFIX.len()].eq_ignore_ascii_case(PIPE_PREFIX)
        && !name.contains('\0')
        && name.len() <= 256;
    if !ok {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(r"{name:?} is not a local pipe name (\\.\pipe\<name>, at most 256 characters)"),
        ));
    }
    Ok(name.encode_utf16().chain(std::iter::once(0)).collect())
}

fn create_instance(name: &[u16], first: bool) -> io::Result<OwnedHandle> {
    let first_flag = if first {
        FILE_FLAG_FIRST_PIPE_INSTANCE
    } else {
        0
    };
    // SAFETY: `name` is NUL-terminated UTF-16; null security attributes make a
    // non-inheritable handle with the default DACL.
    let h = unsafe {
        CreateNamedPipeW(
            name.as_ptr(),
            PIPE_ACCESS_DUPLEX | FILE_FLAG_OVERLAPPED | first_flag,
            PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT | PIPE_REJECT_REMOTE_CLIENTS,
            PIPE_UNLIMITED_INSTANCES,
            PIPE_BUFFER,
            PIPE_BUFFER,
            0,
            std::ptr::null(),
        )
    };
    if h == INVALID_HANDLE_VALUE {
        let e = io::Error::last_os_error();
        if first && e.raw_os_error() == Some(ERROR_ACCESS_DENIED as i32) {
            return Err(in_use());
        }
        return Err(e);
    }
    // SAFETY: a fresh handle nobody else owns.
    Ok(unsafe { OwnedHandle::from_raw_handle(h) })
}

fn in_use() -> io::Error {
    io::Error::new(
        io::ErrorKind::AddrInUse,
        "a listener already uses this pipe name",
    )
}

/// Whether some instance of pipe `name` exists (free or busy), without connecting to it.
fn name_in_use(name: &[u16]) -> bool {
    // SAFETY: `name` is NUL-terminated UTF-16; waits at most 1 ms.
    if unsafe { WaitNamedPipeW(name.as_ptr(), 1) } != 0 {
        return true;
    }
    let e = io::Error::last_os_error().raw_os_error();
    e == Some(ERROR_SEM_TIMEOUT as i32) || e == Some(ERROR_PIPE_BUSY as i32)
}

/// A listening named pipe: hands out the server ends of connected instances.
#[derive(Debug)]
pub struct PipeListener {
    name: Vec<u16>,
    /// The instance waiting for the next client (`None` only after creating one failed;
    /// the next accept tries again).
    waiting: Mutex<Option<OwnedHandle>>,
}

impl PipeListener {
    /// Creates the first instance of pipe `name` (`\\.\pipe\...`). A name another listener
    /// holds is an `AddrInUse` error; a malformed one `InvalidInput`.
    pub fn bind(name: &str) -> io::Result<Self> {
        let name = wide(name)?;
        // FILE_FLAG_FIRST_PIPE_INSTANCE refuses a name in use; not every implementation of
        // the API honours it (Wine does not), so look first as well.
        if name_in_use(&name) {
            return Err(in_use());
        }
        let first = create_instance(&name, true)?;
        Ok(Self {
            name,
            waiting: Mutex::new(Some(first)),
        })
    }

    /// Waits at most `timeout` (`None`: as long as it takes) for a client; `Ok(None)` on
    /// timeout. The handle returned is the server end of the connected instance.
    pub fn accept(&self, timeout: Option<Duration>) -> io::Result<Option<OwnedHandle>> {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        let h = match waiting.take() {
            Some(h) => h,
            None => create_instance(&self.name, false)?,
        };
        let raw = h.as_raw_handle();
        // SAFETY: `ov` is the live overlapped structure provided for this call.
        match overlapped_timeout(raw, timeout, |ov| unsafe { ConnectNamedPipe(raw, ov) }) {
            // Connected now, before (ERROR_PIPE_CONNECTED), or connected and already gone
            // with its bytes still readable (ERROR_NO_DATA).
            Ok(_) => {}
            Err(e) if e == ERROR_PIPE_CONNECTED || e == ERROR_NO_DATA => {}
            Err(e) if e == ERROR_TIMEOUT => {
                // The instance keeps waiting (a client may still connect to it).
                *waiting = Some(h);
                return Ok(None);
            }
            // This instance is unusable: drop it; the next accept makes a new one.
            Err(e) => return Err(win_error(e)),
        }
        // The next instance before this one is handed out: the name stays alive.
        *waiting = create_instance(&self.name, false).ok();
        Ok(Some(h))
    }
}

/// Connects to the listener at pipe `name`. A busy pipe (every instance taken) is waited for
/// and retried for at most `timeout` (`None`: [`DEFAULT_BUSY_WAIT`]), then a `TimedOut`
/// error; a name nobody listens on is a `NotFound` error at once.
pub fn connect(name: &str, timeout: Option<Duration>) -> io::Result<OwnedHandle> {
    let name = wide(name)?;
    let deadline = Deadline::after(timeout.unwrap_or(DEFAULT_BUSY_WAIT));
    loop {
        // SAFETY: `name` is NUL-terminated UTF-16; SQOS identification keeps the listener
        // from impersonating us.
        let h = unsafe {
            CreateFileW(
                name.as_ptr(),
                GENERIC_READ | GENERIC_WRITE,
                0,
                std::ptr::null(),
                OPEN_EXISTING,
                FILE_FLAG_OVERLAPPED | SECURITY_SQOS_PRESENT | SECURITY_IDENTIFICATION,
                std::ptr::null_mut(),
            )
        };
        if h != INVALID_HANDLE_VALUE {
            // SAFETY: a fresh handle nobody else owns.
            return Ok(unsafe { OwnedHandle::from_raw_handle(h) });
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(ERROR_PIPE_BUSY as i32) {
            return Err(e);
        }
        let left = deadline.remaining_capped(Duration::from_millis(100));
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "every instance of the pipe stayed busy",
            ));
        }
        // Short waits: an instance freed and taken by someone else meanwhile is retried.
        let ms = left.as_millis().max(1) as u32;
        // SAFETY: as above; the result does not matter, the retry decides.
        unsafe { WaitNamedPipeW(name.as_ptr(), ms) };
    }
}

/// Reads at most `buf.len()` bytes from overlapped handle `h` (a pipe or socket), waiting at
/// most `timeout`: `Ok(0)` at end of stream, a `TimedOut` error after the timeout.
pub fn read_timeout(h: RawHandle, buf: &mut [u8], timeout: Option<Duration>) -> io::Result<usize> {
    let len = buf.len().min(u32::MAX as usize) as u32;
    let ptr = buf.as_mut_ptr();
    // SAFETY: `buf` outlives the read, which completes or is cancelled before this returns.
    match overlapped_timeout(h, timeout, |ov| unsafe {
        ReadFile(h, ptr, len, std::ptr::null_mut(), ov)
    }) {
        Ok(n) => Ok(n as usize),
        Err(e) if is_end_of_stream(e) => Ok(0),
        Err(e) => Err(win_error(e)),
    }
}

/// Writes some of `buf` to overlapped handle `h`, waiting at most `timeout`. A peer that is
/// gone is a `BrokenPipe` error.
pub fn write_timeout(h: RawHandle, buf: &[u8], timeout: Option<Duration>) -> io::Result<usize> {
    let len = buf.len().min(u32::MAX as usize) as u32;
    let ptr = buf.as_ptr();
    // SAFETY: as in `read_timeout`.
    match overlapped_timeout(h, timeout, |ov| unsafe {
        WriteFile(h, ptr, len, std::ptr::null_mut(), ov)
    }) {
        Ok(n) => Ok(n as usize),
        Err(e) if is_end_of_stream(e) || e == ERROR_NO_DATA => Err(io::Error::new(
            io::ErrorKind::BrokenPipe,
            "the peer closed the pipe",
        )),
        Err(e) => Err(win_error(e)),
    }
}

/// Ends a connection from this side: on a listener's end, disconnects the client (which
/// then reads end of stream); on any handle (pipe or socket), cancels the reads and writes
/// in progress on it in this process, through any duplicate of it.
pub fn shut_down(h: RawHandle, listener_end: bool) {
    if listener_end {
        // SAFETY: only changes the pipe's state; fails harmlessly on anything else.
        unsafe { DisconnectNamedPipe(h) };
    }
    // SAFETY: cancels, never frees; the I/O's owners see ERROR_OPERATION_ABORTED.
    unsafe { CancelIoEx(h, std::ptr::null()) };
}
