//! Connected stream sockets (TCP) as channel handles.
//!
//! A socket made by Rust's std is opened for overlapped I/O, so the channel reads and writes
//! it with the same overlapped `ReadFile`/`WriteFile` as a pipe. What differs is readiness
//! (`WSAPoll` instead of `PeekNamedPipe`), duplication within the process
//! (`WSADuplicateSocketW`, through std) and closing (`closesocket`, not `CloseHandle`).
//! A process that only received a socket handle has not started Winsock yet: [`winsock`]
//! does, once.

use std::io;
use std::mem::ManuallyDrop;
use std::os::windows::io::{FromRawHandle, FromRawSocket, IntoRawSocket, OwnedHandle, RawSocket};
use std::sync::OnceLock;
use std::time::Duration;

use windows_sys::Win32::Foundation::{CloseHandle, ERROR_TIMEOUT, HANDLE};
use windows_sys::Win32::Networking::WinSock::{
    closesocket, WSAGetLastError, WSAPoll, WSAStartup, POLLERR, POLLHUP, POLLRDNORM, SOCKET,
    SOCKET_ERROR, WSADATA, WSAENOTSOCK, WSAPOLLFD,
};
use windows_sys::Win32::Storage::FileSystem::ReadFile;

use crate::channel::is_end_of_stream;
use crate::handle::duplicate_local;
use crate::io::{overlapped_timeout, win_error};

/// Starts Winsock in this process (once; later calls return the first outcome).
pub(crate) fn winsock() -> io::Result<()> {
    static STARTED: OnceLock<i32> = OnceLock::new();
    let code = *STARTED.get_or_init(|| {
        // SAFETY: WSADATA is plain data that WSAStartup fills in.
        let mut data: WSADATA = unsafe { std::mem::zeroed() };
        // SAFETY: asks for Winsock 2.2; the count of starts is never decremented, so
        // Winsock stays up for the life of the process.
        unsafe { WSAStartup(0x0202, &mut data) }
    });
    if code == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(code))
    }
}

fn sock(h: HANDLE) -> SOCKET {
    h as usize as SOCKET
}

/// Whether a read on socket `h` would not block (bytes wait, or the peer closed or reset the
/// connection), waiting at most `timeout` (`None`: until it is).
pub(crate) fn socket_ready(h: HANDLE, timeout: Option<Duration>) -> io::Result<bool> {
    winsock()?;
    let ms = match timeout {
        None => -1,
        // Longer than WSAPoll can express: for ever, not a short wait.
        Some(t) => i32::try_from(t.as_micros().div_ceil(1000)).unwrap_or(-1),
    };
    let mut fd = WSAPOLLFD {
        fd: sock(h),
        events: POLLRDNORM,
        revents: 0,
    };
    // SAFETY: one live WSAPOLLFD.
    let n = unsafe { WSAPoll(&mut fd, 1, ms) };
    if n == SOCKET_ERROR {
        // SAFETY: reads this thread's last Winsock error.
        let e = unsafe { WSAGetLastError() };
        if e == WSAENOTSOCK {
            return zero_read_ready(h, timeout);
        }
        return Err(io::Error::from_raw_os_error(e));
    }
    // Hang-up and errors count as ready: the read reports them.
    Ok(n > 0 && fd.revents != 0)
}

/// Whether the peer of socket `h` has reset or aborted the connection (`WSAPoll` reports an
/// error or a hang-up), without waiting. `false` when this process's Winsock does not know
/// the socket, or the question cannot be asked.
pub(crate) fn socket_peer_gone(h: HANDLE) -> bool {
    if winsock().is_err() {
        return false;
    }
    let mut fd = WSAPOLLFD {
        fd: sock(h),
        events: POLLRDNORM,
        revents: 0,
    };
    // SAFETY: one live WSAPOLLFD.
    let n = unsafe { WSAPoll(&mut fd, 1, 0) };
    n > 0 && fd.revents & (POLLERR | POLLHUP) != 0
}

/// Readiness without Winsock, for a socket this process's Winsock does not know (Wine's, for
/// a socket duplicated into it): a zero-byte read completes, consuming nothing, once bytes
/// wait or the connection ended.
fn zero_read_ready(h: HANDLE, timeout: Option<Duration>) -> io::Result<bool> {
    let mut byte = 0u8;
    let ptr: *mut u8 = &mut byte;
    // SAFETY: a zero-length read into a live byte, completed or cancelled before returning.
    match overlapped_timeout(h, timeout, |ov| unsafe {
        ReadFile(h, ptr, 0, std::ptr::null_mut(), ov)
    }) {
        Ok(_) => Ok(true),
        Err(e) if e == ERROR_TIMEOUT => Ok(false),
        Err(e) if is_end_of_stream(e) => Ok(true),
        Err(e) => Err(win_error(e)),
    }
}

/// Closes socket `h` the way Winsock wants (`closesocket`), or with `CloseHandle` when this
/// process's Winsock does not know the handle (Wine's, for a socket duplicated into it).
pub(crate) fn close_socket(h: HANDLE) {
    if winsock().is_ok() {
        // SAFETY: the caller owns `h` and gives it up here.
        if unsafe { closesocket(sock(h)) } == 0 {
            return;
        }
        // SAFETY: reads this thread's last Winsock error.
        if unsafe { WSAGetLastError() } != WSAENOTSOCK {
            return;
        }
    }
    // SAFETY: closesocket did not close it (or there is no Winsock); the caller owns it.
    unsafe { CloseHandle(h) };
}

/// A second socket for the same connection, within this process.
pub(crate) fn duplicate_socket(h: HANDLE) -> io::Result<OwnedHandle> {
    winsock()?;
    // SAFETY: borrowed for the duplication only; ManuallyDrop keeps std from closing it.
    let s = ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_socket(h as RawSocket) });
    let dup = match s.try_clone() {
        Ok(d) => d,
        // Not a socket to this process's Winsock (see `zero_read_ready`): a plain duplicate.
        Err(e) if e.raw_os_error() == Some(WSAENOTSOCK) => return duplicate_local(h),
        Err(e) => return Err(e),
    };
    // SAFETY: a fresh socket handle nobody else owns.
    Ok(unsafe { OwnedHandle::from_raw_handle(dup.into_raw_socket() as HANDLE) })
}
