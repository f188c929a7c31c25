//! Handle duplication, and handles travelling with a frame.
//!
//! Windows has no `SCM_RIGHTS`: a handle reaches another process by `DuplicateHandle` into
//! or out of that process, which yields a handle *value* valid only in one process. The
//! values travel at the start of the frame's body, in the one format of
//! [`mp_ipc::handle_prefix`] (`count: u32 | pid: u32 | count x value: u64 | payload`),
//! parsed by the one parser there; what differs between the two uses below is only whose
//! handle table the values name, which is each channel's fixed convention:
//!
//! - A spawned child's boot channel: the parent knows the receiving process up front, so
//!   [`send_with_handles`] duplicates each handle *into* the child and sends the values
//!   with the child's pid; [`recv_with_handles`] adopts them as its own.
//! - A connection, whose ends move between processes, so that the receiver is not known:
//!   as Python's `DupHandle` without a pid does, the sender [`export`]s a private duplicate
//!   of each handle and sends its value with its own process id; the receiver [`import`]s
//!   each one, duplicating it out of the sender with `DUPLICATE_CLOSE_SOURCE`. The sender
//!   must still be running when the frame is read (a closed process has no handles left to
//!   take), and a frame never read leaves its duplicates open in the sender until it exits.
//!
//! The duplicates are non-inheritable, like every handle `mp` makes.
//!
//! The prefix comes from the peer and is checked, never trusted: a count beyond
//! [`MAX_HANDLES`] or the body, or values that cannot be taken, are
//! [`IpcError::Corrupt`]. A prefix naming the receiving process itself may only name
//! duplicates this process [`export`]ed: otherwise a hostile peer could make the receiver
//! take (and so close) any handle of its own.

use std::collections::HashSet;
use std::io;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle, RawHandle};
use std::sync::{Mutex, MutexGuard};

use mp_ipc::handle_prefix::HandlePrefix;
use mp_ipc::{Channel, IpcError};
use windows_sys::Win32::Foundation::{
    CloseHandle, DuplicateHandle, GetHandleInformation, DUPLICATE_CLOSE_SOURCE,
    DUPLICATE_SAME_ACCESS, HANDLE,
};
use windows_sys::Win32::Storage::FileSystem::{GetFileType, FILE_TYPE_PIPE};
use windows_sys::Win32::System::Threading::{
    GetCurrentProcess, GetCurrentProcessId, GetProcessId, OpenProcess, PROCESS_DUP_HANDLE,
};

use crate::PipeChannel;

pub use mp_ipc::handle_prefix::MAX_HANDLES;

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

/// The values of duplicates this process exported and no receiver in this process took:
/// the only handles of its own a frame may name. Values another process took are closed
/// here by that import; they are forgotten when found closed at the next export, and the
/// list keeps at most [`EXPORTED_MAX`] values (the oldest go first).
static EXPORTED: Mutex<Exported> = Mutex::new(Exported {
    set: None,
    order: std::collections::VecDeque::new(),
    since_prune: 0,
});

/// The most exported values remembered for imports into this very process.
const EXPORTED_MAX: usize = 1 << 16;

struct Exported {
    set: Option<HashSet<u64>>,
    order: std::collections::VecDeque<u64>,
    /// Values added since closed ones were last forgotten.
    since_prune: usize,
}

impl Exported {
    fn set(&mut self) -> &mut HashSet<u64> {
        self.set.get_or_insert_with(HashSet::new)
    }

    fn add(&mut self, values: &[u64]) {
        let set = self.set.get_or_insert_with(HashSet::new);
        // Now and then, forget the values some other process took (closed here).
        self.since_prune += values.len();
        let prune = self.since_prune >= 1024;
        if prune {
            self.since_prune = 0;
        }
        self.order.retain(|v| {
            if !prune {
                return true;
            }
            let mut flags = 0u32;
            // SAFETY: GetHandleInformation only inspects this process's handle table.
            let open = unsafe { GetHandleInformation(*v as usize as HANDLE, &mut flags) } != 0;
            if !open {
                set.remove(v);
            }
            open
        });
        for &v in values {
            if set.insert(v) {
                self.order.push_back(v);
            }
        }
        while self.order.len() > EXPORTED_MAX {
            if let Some(v) = self.order.pop_front() {
                set.remove(&v);
            }
        }
    }

    fn remove(&mut self, values: &[u64]) {
        let set = self.set();
        for v in values {
            set.remove(v);
        }
        let set = self.set.take().unwrap_or_default();
        self.order.retain(|v| set.contains(v));
        self.set = Some(set);
    }
}

fn exported() -> MutexGuard<'static, Exported> {
    EXPORTED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Makes a private duplicate of each handle for a receiver to [`import`] from this
/// process: returns this process's id and the duplicates' values. Their ownership passes
/// to the frame that carries them; [`unexport`] takes them back if it is never sent.
pub fn export(handles: &[RawHandle]) -> io::Result<(u32, Vec<u64>)> {
    let mut values = Vec::with_capacity(handles.len());
    for &h in handles {
        match duplicate_local(h) {
            Ok(dup) => values
                .push(std::os::windows::io::IntoRawHandle::into_raw_handle(dup) as usize as u64),
            Err(e) => {
                unexport(&values);
                return Err(e);
            }
        }
    }
    exported().add(&values);
    // SAFETY: no preconditions.
    Ok((unsafe { GetCurrentProcessId() }, values))
}

/// Waits, at most `grace`, until the receivers of this process's frames have taken (and so
/// closed here) the duplicates [`export`]ed for them. A process that sends a handle and then
/// exits at once would otherwise often be gone before its receiver reads the frame: a
/// handle cannot be taken out of a process that has ended (`DuplicateHandle` then fails with
/// `ERROR_ACCESS_DENIED`), and the frame arrives with its handles lost. Called on the way
/// out of a process. A value that is still open after `grace` (a frame nobody reads, or a
/// value reused by a later handle of this process) only costs that wait.
pub fn linger_for_exports(grace: std::time::Duration) {
    let deadline = std::time::Instant::now() + grace;
    loop {
        let pending = {
            let mut ex = exported();
            let Exported { set, order, .. } = &mut *ex;
            order.retain(|v| {
                let mut flags = 0u32;
                // SAFETY: GetHandleInformation only inspects this process's handle table.
                let open = unsafe { GetHandleInformation(*v as usize as HANDLE, &mut flags) } != 0;
                if !open {
                    if let Some(set) = set.as_mut() {
                        set.remove(v);
                    }
                }
                open
            });
            !order.is_empty()
        };
        if !pending || std::time::Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// Closes duplicates made by [`export`] whose frame was not sent.
pub fn unexport(values: &[u64]) {
    exported().remove(values);
    for &v in values {
        // SAFETY: each value is a handle of this process that `export` made and nobody owns.
        unsafe { CloseHandle(v as usize as HANDLE) };
    }
}

/// Takes the handles `values` that process `pid` [`export`]ed, closing them there: the
/// returned handles are this process's own (non-inheritable). Fails if the sender has
/// ended, or a value names no handle of it; the handles taken before the failure are closed.
pub fn import(pid: u32, values: &[u64]) -> io::Result<Vec<OwnedHandle>> {
    if values.is_empty() {
        return Ok(Vec::new());
    }
    // SAFETY: no preconditions.
    if pid == unsafe { GetCurrentProcessId() } {
        let mut ex = exported();
        if !values.iter().all(|v| ex.set().contains(v)) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a message names handles of the receiving process that were never exported",
            ));
        }
        ex.remove(values);
    }
    // SAFETY: OpenProcess has no memory preconditions; a failure returns null.
    let source = unsafe { OpenProcess(PROCESS_DUP_HANDLE, 0, pid) };
    if source.is_null() {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("cannot take handles from process {pid} (has it ended?): {e}"),
        ));
    }
    // SAFETY: a fresh process handle this function owns.
    let source = unsafe { OwnedHandle::from_raw_handle(source) };
    // SAFETY: the pseudo handle of the current process is always valid.
    let me = unsafe { GetCurrentProcess() };
    let mut out = Vec::with_capacity(values.len());
    for &v in values {
        let Ok(v) = usize::try_from(v) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "bad handle value",
            ));
        };
        let mut h: HANDLE = std::ptr::null_mut();
        // SAFETY: DuplicateHandle writes the new handle into `h`; the source value is only
        // interpreted in the source process's handle table.
        let ok = unsafe {
            DuplicateHandle(
                source.as_raw_handle(),
                v as HANDLE,
                me,
                &mut h,
                0,
                0,
                DUPLICATE_SAME_ACCESS | DUPLICATE_CLOSE_SOURCE,
            )
        };
        if ok == 0 {
            // A process that has ended can still be opened while a handle to it lives, but
            // its handle table is gone: the duplication is denied.
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("cannot take a handle from process {pid} (has it ended?): {e}"),
            ));
        }
        // SAFETY: a fresh handle nobody else owns.
        out.push(unsafe { OwnedHandle::from_raw_handle(h) });
    }
    Ok(out)
}

/// Room a frame body may take beyond its payload for the handle prefix.
pub const HANDLE_PREFIX_MAX: u64 = mp_ipc::handle_prefix::PREFIX_MAX;

/// The start of the body of a frame that carries `handles` on a connection:
/// `count: u32 | sender pid: u32 | count x value: u64`, all little-endian, the values
/// [`export`]ed for the receiver to [`import`]. Returns the prefix and the values (to
/// [`unexport`] if the frame is not sent).
pub fn handle_prefix(handles: &[RawHandle]) -> io::Result<(Vec<u8>, Vec<u64>)> {
    if handles.len() > MAX_HANDLES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("at most {MAX_HANDLES} handles can travel with one message"),
        ));
    }
    let (pid, values) = export(handles)?;
    let prefix = match mp_ipc::handle_prefix::encode(pid, &values) {
        Ok(prefix) => prefix,
        Err(e) => {
            unexport(&values);
            return Err(io::Error::new(io::ErrorKind::InvalidInput, e));
        }
    };
    Ok((prefix, values))
}

/// Strips the [`handle_prefix`] off a received body and imports its handles. A payload
/// over `max` is [`IpcError::FrameTooLarge`]; a malformed prefix, or handles that cannot be
/// taken, is [`IpcError::Corrupt`] (the peer broke the protocol).
pub fn take_handle_prefix(body: &mut Vec<u8>, max: u64) -> Result<Vec<OwnedHandle>, IpcError> {
    let HandlePrefix { pid, values } = mp_ipc::handle_prefix::take(body)?;
    // Taken even when the payload is refused, so the sender's duplicates are not left open.
    let handles = import(pid, &values).map_err(|e| IpcError::Corrupt(e.to_string()))?;
    if body.len() as u64 > max {
        return Err(IpcError::FrameTooLarge {
            len: body.len() as u64,
            max,
        });
    }
    Ok(handles)
}

/// Sends `payload` as one frame, with `handles` duplicated into the process `target`: the
/// [`mp_ipc::handle_prefix`] names that process and the duplicates' values there. With no
/// handles, `target` may be `None`.
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
    let mut values = Vec::with_capacity(handles.len());
    let mut pid = 0;
    if !handles.is_empty() {
        let target = target.ok_or_else(|| {
            IpcError::Io(io::Error::new(
                io::ErrorKind::Unsupported,
                "handles can only be sent on a channel whose receiving process is known",
            ))
        })?;
        // SAFETY: GetProcessId only queries the process handle (0 on failure).
        pid = unsafe { GetProcessId(target) };
        for &h in handles {
            values.push(duplicate_into(target, h)?);
        }
    }
    let prefix = mp_ipc::handle_prefix::encode(pid, &values)?;
    ch.send_frame(&[&prefix, payload])
}

/// Receives a frame sent by [`send_with_handles`]: the payload into `buf`, the handles
/// returned, owned. A frame whose prefix is malformed or names no open handle is an error.
/// The values are this process's own (the sender duplicated them into it): the prefix's
/// pid is not consulted.
pub fn recv_with_handles(
    ch: &PipeChannel,
    buf: &mut Vec<u8>,
    max: u64,
) -> Result<Vec<OwnedHandle>, IpcError> {
    ch.recv_frame(buf, max.saturating_add(HANDLE_PREFIX_MAX))?;
    let bad = |what: &str| IpcError::Corrupt(what.to_string());
    let HandlePrefix { values, .. } = mp_ipc::handle_prefix::take(buf)?;
    let mut handles = Vec::with_capacity(values.len());
    let mut invalid = false;
    for value in values {
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
