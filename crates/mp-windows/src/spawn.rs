//! Starting a process that inherits exactly the handles it is given.
//!
//! `CreateProcessW` with `bInheritHandles` would hand a child *every* inheritable handle of
//! the parent. [`create_process`] narrows that to an explicit list
//! (`PROC_THREAD_ATTRIBUTE_HANDLE_LIST`): the handles named by the caller plus inheritable
//! copies of the standard handles. An inherited handle has the same value in the child as in
//! the parent, so the caller can tell the child the values (in an environment variable)
//! before the child exists, and the child owns its handles from its first instruction:
//! nothing depends on the parent staying alive.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::windows::ffi::OsStrExt;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle, RawHandle};
use std::path::Path;

use windows_sys::Win32::Foundation::{
    DuplicateHandle, SetHandleInformation, DUPLICATE_SAME_ACCESS, ERROR_INTERNAL_ERROR, HANDLE,
    HANDLE_FLAG_INHERIT, INVALID_HANDLE_VALUE,
};
use windows_sys::Win32::System::Threading::{
    CreateProcessW, DeleteProcThreadAttributeList, GetCurrentProcess,
    InitializeProcThreadAttributeList, UpdateProcThreadAttribute, CREATE_UNICODE_ENVIRONMENT,
    EXTENDED_STARTUPINFO_PRESENT, PROCESS_INFORMATION, PROC_THREAD_ATTRIBUTE_HANDLE_LIST,
    STARTF_USESTDHANDLES, STARTUPINFOEXW,
};

/// A process made by [`create_process`]: its id, process handle and main-thread handle.
#[derive(Debug)]
pub struct ChildProcess {
    /// The process id.
    pub pid: u32,
    /// The process handle (all access): waitable, gives the exit code, can be terminated.
    pub process: OwnedHandle,
    /// The main thread (to resume a child created suspended).
    pub thread: OwnedHandle,
}

/// An inheritable duplicate of `h`, for [`create_process`]'s list. Its value is the value
/// the child will see.
pub fn inheritable_copy(h: RawHandle) -> io::Result<OwnedHandle> {
    // SAFETY: the pseudo handle of the current process is always valid.
    let me = unsafe { GetCurrentProcess() };
    let mut out: HANDLE = std::ptr::null_mut();
    // SAFETY: DuplicateHandle writes the new handle into `out`.
    if unsafe { DuplicateHandle(me, h, me, &mut out, 0, 1, DUPLICATE_SAME_ACCESS) } == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh handle nobody else owns.
    Ok(unsafe { OwnedHandle::from_raw_handle(out) })
}

/// Makes `h` non-inheritable (a child calls it on the handles it inherited, so that they do
/// not leak further into processes it starts with `std::process::Command`).
pub fn set_non_inheritable(h: RawHandle) -> io::Result<()> {
    // SAFETY: only changes the handle's flags.
    if unsafe { SetHandleInformation(h, HANDLE_FLAG_INHERIT, 0) } == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The environment block of a child: this process's variables with `extra` set (replacing
/// variables of the same name, compared case-insensitively as Windows does), sorted.
fn environment_block(extra: &[(&OsStr, &OsStr)]) -> Vec<u16> {
    let upper = |k: &OsStr| k.to_string_lossy().to_uppercase();
    let mut vars: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| extra.iter().all(|(e, _)| upper(e) != upper(k)))
        .collect();
    vars.extend(
        extra
            .iter()
            .map(|(k, v)| (k.to_os_string(), v.to_os_string())),
    );
    vars.sort_by_cached_key(|(k, _)| upper(k));
    let mut block = Vec::new();
    for (k, v) in vars {
        block.extend(k.encode_wide());
        block.push(u16::from(b'='));
        block.extend(v.encode_wide());
        block.push(0);
    }
    if block.is_empty() {
        block.push(0);
    }
    block.push(0);
    block
}

/// The standard handles to give the child: inheritable copies of ours (absent ones stay null).
fn std_handles() -> [Option<OwnedHandle>; 3] {
    let raw = [
        std::io::stdin().as_raw_handle(),
        std::io::stdout().as_raw_handle(),
        std::io::stderr().as_raw_handle(),
    ];
    raw.map(|h| {
        if h.is_null() || h == INVALID_HANDLE_VALUE {
            None
        } else {
            inheritable_copy(h).ok()
        }
    })
}

/// Starts `exe` without arguments, with this process's environment plus `env`, the current
/// directory and standard handles of this process, and exactly the handles `inherit`, which
/// must be inheritable (see [`inheritable_copy`]). `flags` are extra creation flags (such as
/// `CREATE_SUSPENDED` or `CREATE_BREAKAWAY_FROM_JOB`).
pub fn create_process(
    exe: &Path,
    env: &[(&OsStr, &OsStr)],
    inherit: &[RawHandle],
    flags: u32,
) -> io::Result<ChildProcess> {
    let app: Vec<u16> = exe.as_os_str().encode_wide().chain(Some(0)).collect();
    if app[..app.len() - 1].contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "executable path contains a NUL",
        ));
    }
    // The command line: the quoted program name (a path cannot contain quotes).
    let mut cmdline: Vec<u16> = Some(u16::from(b'"'))
        .into_iter()
        .chain(exe.as_os_str().encode_wide())
        .chain([u16::from(b'"'), 0])
        .collect();
    let mut envblock = environment_block(env);
    let stdio = std_handles();
    let mut list: Vec<HANDLE> = inherit.to_vec();
    for h in stdio.iter().flatten() {
        list.push(h.as_raw_handle());
    }
    list.sort_unstable();
    list.dedup();

    // SAFETY: STARTUPINFOEXW is plain data; zeroed plus its size is a valid empty one.
    let mut si: STARTUPINFOEXW = unsafe { std::mem::zeroed() };
    si.StartupInfo.cb = std::mem::size_of::<STARTUPINFOEXW>() as u32;
    si.StartupInfo.dwFlags = STARTF_USESTDHANDLES;
    let raw_std = |h: &Option<OwnedHandle>| {
        h.as_ref()
            .map_or(std::ptr::null_mut(), |h| h.as_raw_handle())
    };
    si.StartupInfo.hStdInput = raw_std(&stdio[0]);
    si.StartupInfo.hStdOutput = raw_std(&stdio[1]);
    si.StartupInfo.hStdError = raw_std(&stdio[2]);

    // The attribute list lives in a usize-aligned buffer of the size the system asks for.
    let mut size = 0usize;
    // SAFETY: asks for the size of a one-attribute list; fails by design with the size set.
    unsafe { InitializeProcThreadAttributeList(std::ptr::null_mut(), 1, 0, &mut size) };
    let mut attr_buf = vec![0usize; size.div_ceil(std::mem::size_of::<usize>()).max(1)];
    let attrs = attr_buf.as_mut_ptr().cast::<core::ffi::c_void>();
    // SAFETY: `attrs` points at `size` writable bytes.
    if unsafe { InitializeProcThreadAttributeList(attrs, 1, 0, &mut size) } == 0 {
        return Err(io::Error::last_os_error());
    }
    struct ListGuard(*mut core::ffi::c_void);
    impl Drop for ListGuard {
        fn drop(&mut self) {
            // SAFETY: the list was initialised and is deleted once.
            unsafe { DeleteProcThreadAttributeList(self.0) }
        }
    }
    let _guard = ListGuard(attrs);
    if !list.is_empty() {
        // SAFETY: `list` outlives CreateProcessW below; the size is that of the array.
        let ok = unsafe {
            UpdateProcThreadAttribute(
                attrs,
                0,
                PROC_THREAD_ATTRIBUTE_HANDLE_LIST as usize,
                list.as_ptr().cast(),
                std::mem::size_of_val(list.as_slice()),
                std::ptr::null_mut(),
                std::ptr::null(),
            )
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
    }
    si.lpAttributeList = attrs;

    // SAFETY: PROCESS_INFORMATION is plain data, filled in by CreateProcessW.
    let mut pi: PROCESS_INFORMATION = unsafe { std::mem::zeroed() };
    // Wine (without its preloader, as Debian ships it) now and then fails to start a process
    // whose randomised address space already uses the fixed address of the shared user data
    // ("failed to map the shared user data"); the new process dies before running any of its
    // code and CreateProcessW reports ERROR_INTERNAL_ERROR. Nothing of the child ran, so
    // trying again is safe; Windows itself does not report this error here.
    let mut attempts_left = 3;
    loop {
        // SAFETY: every pointer refers to a live, NUL-terminated buffer or structure above;
        // the command line buffer is mutable as CreateProcessW requires.
        let ok = unsafe {
            CreateProcessW(
                app.as_ptr(),
                cmdline.as_mut_ptr(),
                std::ptr::null(),
                std::ptr::null(),
                i32::from(!list.is_empty()),
                flags | EXTENDED_STARTUPINFO_PRESENT | CREATE_UNICODE_ENVIRONMENT,
                envblock.as_mut_ptr().cast(),
                std::ptr::null(),
                &si.StartupInfo,
                &mut pi,
            )
        };
        if ok != 0 {
            break;
        }
        let e = io::Error::last_os_error();
        attempts_left -= 1;

        if attempts_left == 0 || e.raw_os_error() != Some(ERROR_INTERNAL_ERROR as i32) {
            return Err(e);
        }
    }
    // SAFETY: fresh handles from CreateProcessW that nobody else owns.
    unsafe {
        Ok(ChildProcess {
            pid: pi.dwProcessId,
            process: OwnedHandle::from_raw_handle(pi.hProcess),
            thread: OwnedHandle::from_raw_handle(pi.hThread),
        })
    }
}
