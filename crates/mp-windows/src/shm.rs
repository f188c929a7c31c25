//! Anonymous shared memory: a pagefile-backed section (`CreateFileMappingW` without a file),
//! mapped with `MapViewOfFile`. The system frees the section when the last handle to it and
//! the last view of it are gone, so a crash leaks nothing. The handle moves into another
//! process like any other ([`crate::handle`]).

use std::io;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};
use std::ptr::NonNull;

use windows_sys::Win32::Foundation::INVALID_HANDLE_VALUE;
use windows_sys::Win32::System::Memory::{
    CreateFileMappingW, MapViewOfFile, UnmapViewOfFile, VirtualQuery, FILE_MAP_READ,
    FILE_MAP_WRITE, MEMORY_BASIC_INFORMATION, MEMORY_MAPPED_VIEW_ADDRESS, PAGE_READWRITE,
};

/// A new zero-filled section of `len` bytes (at least one: the system refuses empty ones).
pub fn create(len: usize) -> io::Result<OwnedHandle> {
    let size = len.max(1) as u64;
    // SAFETY: a pagefile-backed, unnamed section with default security; returns a new handle
    // or null.
    let h = unsafe {
        CreateFileMappingW(
            INVALID_HANDLE_VALUE,
            std::ptr::null(),
            PAGE_READWRITE,
            (size >> 32) as u32,
            size as u32,
            std::ptr::null(),
        )
    };
    if h.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh handle nobody else owns.
    Ok(unsafe { OwnedHandle::from_raw_handle(h) })
}

/// Maps the first `len` bytes of the section, readable and writable. The system refuses a
/// length beyond the section.
pub fn map(section: &OwnedHandle, len: usize) -> io::Result<NonNull<u8>> {
    // SAFETY: mapping a section handle we hold.
    let view = unsafe {
        MapViewOfFile(
            section.as_raw_handle(),
            FILE_MAP_READ | FILE_MAP_WRITE,
            0,
            0,
            len.max(1),
        )
    };
    NonNull::new(view.Value.cast::<u8>()).ok_or_else(io::Error::last_os_error)
}

/// Unmaps a view made by [`map`].
///
/// # Safety
/// `ptr` must be the start of a view from [`map`], and nothing may use it afterwards.
pub unsafe fn unmap(ptr: NonNull<u8>) {
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
    unsafe { unmap(ptr) };
    result
}
