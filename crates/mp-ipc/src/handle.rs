//! The platform's owned OS handle: the unit a process hands to a child.
//!
//! On Unix it is a file descriptor ([`std::os::fd::OwnedFd`]), on Windows a kernel handle
//! ([`std::os::windows::io::OwnedHandle`]). Every handle `mp` creates is close-on-exec /
//! non-inheritable; one reaches a child only when it is passed explicitly (as a process
//! argument), never by accident.

#[cfg(unix)]
pub use std::os::fd::{AsRawFd as AsRawHandle, OwnedFd as OwnedHandle, RawFd as RawHandle};
#[cfg(windows)]
pub use std::os::windows::io::{AsRawHandle, OwnedHandle, RawHandle};

/// The raw value of an owned handle, under one name on every platform.
#[cfg(unix)]
pub fn raw_of(h: &OwnedHandle) -> RawHandle {
    h.as_raw_fd()
}

/// The raw value of an owned handle, under one name on every platform.
#[cfg(windows)]
pub fn raw_of(h: &OwnedHandle) -> RawHandle {
    h.as_raw_handle()
}
