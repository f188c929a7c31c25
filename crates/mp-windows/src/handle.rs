//! Handle duplication, and handles travelling with a frame.
//!
//! Windows has no `SCM_RIGHTS`: a handle reaches another process by `DuplicateHandle` into
//! that process, which yields a handle *value* valid only there. [`send_with_handles`]
//! duplicates each handle into the receiving process and sends the values inside the frame:
//!
//! ```text
//! count: u64 LE | count x value: u64 LE | payload
//! ```
//!
//! [`recv_with_handles`] strips that prefix and takes ownership of the values. The
//! duplicates are non-inheritable, like every handle `mp` makes.

use std::io;
use std::os::windows::io::{FromRawHandle, OwnedHandle, RawHandle};

use mp_ipc::{Channel, IpcError};
use windows_sys::Win32::Foundation::{
    DuplicateHandle, GetHandleInformation, DUPLICATE_SAME_ACCESS, HANDLE,
};
use windows_sys::Win32::Storage::FileSystem::{GetFileType, FILE_TYPE_PIPE};
use windows_sys::Win32::System::Threading::GetCurrentProcess;

use crate::PipeChannel;

/// Most handles one frame may carry.
pub const MAX_HANDLES: usize = 4096;

/// Whether `h` is an open pipe handle (named or anonymous).
pub fn is_pipe(h: RawHandle) -> bool {
    // SAFETY: GetFileType only inspects the handle.
    unsafe { GetFileType(h) == FILE_TYPE_PIPE }
}

/// Duplicates `h` within this process (non-inheritable, same access).
pub fn duplicate_local(h: RawHandle) -> io::Result<OwnedHandle> {
    // SAFETY: the pseudo handle of the current process is always valid.
    let me = unsafe { GetCurrentProcess() };
    let mut out: HANDLE = std::ptr::null_mut();
    // SAFETY: DuplicateHandle writes the new handle into `out`.
    if unsafe { DuplicateHandle(me, h, me, &mut out, 0, 0, DUPLICATE_SAME_ACCESS) } == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh handle nobody else owns.
    Ok(unsafe { OwnedHandle::from_raw_handle(out) })
}

/// Duplicates `h` into the process `target` (a handle with `PROCESS_DUP_HANDLE` access) and
/// returns the new handle's value, which is valid only in that process. The duplicate is
/// closed when that process closes it or ends.
pub fn duplicate_into(target: RawHandle, h: RawHandle) -> io::Result<u64> {
    // SAFETY: the pseudo handle of the current process is always valid.
    let me = unsafe { GetCurrentProcess() };
    let mut out: HANDLE = std::ptr::null_mut();
    // SAFETY: DuplicateHandle writes the new handle value into `out`; it is not used here.
    if unsafe { DuplicateHandle(me, h, target, &mut out, 0, 0, DUPLICATE_SAME_ACCESS) } == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(out as usize as u64)
}

/// Sends `payload` as one frame, with `handles` duplicated into the process `target`. With
/// no handles, `target` may be `None`.
pub fn send_with_handles(
    ch: &PipeChannel,
    target: Option<RawHandle>,
    payload: &[u8],
    handles: &[RawHandle],
) -> Result<(), IpcError> {
    if handles.len() > MAX_HANDLES {
        return Err(IpcError::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("at most {MAX_HANDLES} handles can travel with one message"),
        )));
    }
    let mut prefix = Vec::with_capacity(8 * (handles.len() + 1));
    prefix.extend_from_slice(&(handles.len() as u64).to_le_bytes());
    if !handles.is_empty() {
        let target = target.ok_or_else(|| {
            IpcError::Io(io::Error::new(
                io::ErrorKind::Unsupported,
                "handles can only be sent on a channel whose receiving process is known",
            ))
        })?;
        for &h in handles {
            prefix.extend_from_slice(&duplicate_into(target, h)?.to_le_bytes());
        }
    }
    ch.send_frame(&[&prefix, payload])
}

/// Receives a frame sent by [`send_with_handles`]: the payload into `buf`, the handles
/// returned, owned. A frame whose prefix is malformed or names no open handle is an error.
pub fn recv_with_handles(
    ch: &PipeChannel,
    buf: &mut Vec<u8>,
    max: u64,
) -> Result<Vec<OwnedHandle>, IpcError> {
    ch.recv_frame(buf, max.saturating_add(8 * (MAX_HANDLES as u64 + 1)))?;
    let bad =
        |what: &str| IpcError::Io(io::Error::new(io::ErrorKind::InvalidData, what.to_string()));
    let count = match buf.get(..8) {
        Some(b) => u64::from_le_bytes(b.try_into().map_err(|_| bad("short handle prefix"))?),
        None => return Err(bad("message without a handle count")),
    };
    if count > MAX_HANDLES as u64 || buf.len() < 8 + 8 * count as usize {
        return Err(bad("bad handle count"));
    }
    let count = count as usize;
    let mut handles = Vec::with_capacity(count);
    let mut invalid = false;
    for chunk in buf[8..8 + 8 * count].chunks_exact(8) {
        let value = u64::from_le_bytes(chunk.try_into().map_err(|_| bad("short handle value"))?);
        let Ok(value) = usize::try_from(value) else {
            invalid = true;
            continue;
        };
        let h = value as HANDLE;
        let mut flags = 0u32;
        // SAFETY: GetHandleInformation only inspects the handle table.
        if value == 0 || unsafe { GetHandleInformation(h, &mut flags) } == 0 {
            invalid = true;
            continue;
        }
        // SAFETY: the sender duplicated this handle into this process for us alone.
        handles.push(unsafe { OwnedHandle::from_raw_handle(h) });
    }
    buf.drain(..8 + 8 * count);
    if invalid {
        return Err(bad("a received handle is not open in this process"));
    }
    if buf.len() as u64 > max {
        return Err(IpcError::FrameTooLarge {
            len: buf.len() as u64,
            max,
        });
    }
    Ok(handles)
}
