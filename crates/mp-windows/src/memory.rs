//! Anonymous shared memory: a pagefile-backed section (`CreateFileMappingW` without a file),
//! mapped with `MapViewOfFile`. The system frees the section when the last handle to it and
//! the last view of it are gone, so a crash leaks nothing. The handle moves into another
//! process like any other ([`crate::handle`]).

use std::io;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};
use std::ptr::NonNull;

pub use mp_ipc::memory::Mapping;

use windows_sys::Win32::Foundation::{GetLastError, ERROR_ALREADY_EXISTS, INVALID_HANDLE_VALUE};
use windows_sys::Win32::System::Memory::{
    CreateFileMappingW, MapViewOfFile, UnmapViewOfFile, VirtualQuery, FILE_MAP_READ,
    FILE_MAP_WRITE, MEMORY_BASIC_INFORMATION, MEMORY_MAPPED_VIEW_ADDRESS, PAGE_READWRITE,
};

/// A new zero-filled section of `len` bytes (at least one: the system refuses empty ones).
pub fn create(len: usize) -> io::Result<OwnedHandle> {
    create_named(len, None)
}

/// A new zero-filled section of `len` bytes (at least one), not inheritable; `name`, if
/// given (NUL-terminated UTF-16, such as `Local\name`), is its name in the object namespace,
/// and an existing section of that name is an `AlreadyExists` error.
pub fn create_named(len: usize, name: Option<&[u16]>) -> io::Result<OwnedHandle> {
    let size = len.max(1) as u64;
    let name_ptr = name.map_or(std::ptr::null(), |n| n.as_ptr());
    // SAFETY: a pagefile-backed section with default (non-inheritable) security; `name_ptr`
    // is null or a NUL-terminated UTF-16 string that outlives the call. Returns a new handle
    // or null.
    let h = unsafe {
        CreateFileMappingW(
            INVALID_HANDLE_VALUE,
            std::ptr::null(),
            PAGE_READWRITE,
            (size >> 32) as u32,
            size as u32,
            name_ptr,
        )
    };
    if h.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: read right after the call that set it.
    let existed = name.is_some() && unsafe { GetLastError() } == ERROR_ALREADY_EXISTS;
    // SAFETY: a fresh handle nobody else owns.
    let owned = unsafe { OwnedHandle::from_raw_handle(h) };
    if existed {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "a shared-memory section with this name exists",
        ));
    }
    Ok(owned)
}

/// Maps the first `len` bytes of `section`, readable and writable, unmapped when the
/// [`Mapping`] drops (the section handle may be closed before): the one mapping type of
/// `mp`, held by `mp-core`'s segments and `mp-shm`'s rings. The system refuses a length
/// beyond the section.
///
/// ```
/// let section = mp_windows::memory::create(64).unwrap();
/// let view = mp_windows::memory::map(&section, 64).unwrap();
/// // SAFETY: inside the view, and nothing else uses it.
/// unsafe { view.as_ptr().write(7) };
/// assert_eq!(view.len(), 64);
/// ```
pub fn map(section: &OwnedHandle, len: usize) -> io::Result<Mapping> {
    // SAFETY: mapping a section handle the caller holds.
    let view = unsafe {
        MapViewOfFile(
            section.as_raw_handle(),
            FILE_MAP_READ | FILE_MAP_WRITE,
            0,
            0,
            len.max(1),
        )
    };
    let ptr = NonNull::new(view.Value.cast::<u8>()).ok_or_else(io::Error::last_os_error)?;
    // SAFETY: a fresh view of `len` bytes, released only by `unmap`.
    Ok(unsafe { Mapping::from_raw(ptr, len, unmap) })
}

/// Unmaps a view (the length is the system's to know).
///
/// # Safety
/// `ptr` must be the start of a view, and nothing may use it afterwards.
unsafe fn unmap(ptr: NonNull<u8>, _len: usize) {
    // SAFETY: per the contract.
    unsafe {
        UnmapViewOfFile(MEMORY_MAPPED_VIEW_ADDRESS {
            Value: ptr.as_ptr().cast(),
        });
    }
}

/// The usable size of a section: its size rounded up to whole pages (what a view of the
/// whole section covers; Win32 has no documented call for the exact size).
pub fn size(section: &OwnedHandle) -> io::Result<usize> {
    // SAFETY: a read-only view of the whole section (length 0), unmapped below.
    let view = unsafe { MapViewOfFile(section.as_raw_handle(), FILE_MAP_READ, 0, 0, 0) };
    let Some(ptr) = NonNull::new(view.Value.cast::<u8>()) else {
        return Err(io::Error::last_os_error());
    };
    // SAFETY: MEMORY_BASIC_INFORMATION is plain data, filled in by VirtualQuery.
    let mut info: MEMORY_BASIC_INFORMATION = unsafe { std::mem::zeroed() };
    // SAFETY: queries the view just made into a live structure of the size given.
    let n = unsafe {
        VirtualQuery(
            ptr.as_ptr().cast(),
            &mut info,
            std::mem::size_of::<MEMORY_BASIC_INFORMATION>(),
        )
    };
    let result = if n == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(info.RegionSize)
    };
    // SAFETY: the view made above, no longer used.
    unsafe { unmap(ptr, 0) };
    result
}
