//! Spool files: anonymous, growable, kernel-held byte stores that several processes read and
//! write by offset (`pread`/`pwrite` on a `memfd` on Linux and FreeBSD, on an unlinked
//! temporary file on macOS and in the generic flavour: see `mp_unix::memory`). Queues keep
//! their items here, so a `put` never waits for a reader and nothing is lost when the writer
//! exits.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;

/// A new empty spool.
pub(crate) fn spool_create() -> io::Result<OwnedFd> {
    // Not sealed: the spool grows and shrinks. It is read and written by offset, never
    // mapped, so a peer that truncates it makes reads come up short (a corrupt queue),
    // not a signal.
    mp_unix::memory::growable_object(c"mp-spool")
}

fn as_file(fd: &OwnedFd) -> std::mem::ManuallyDrop<std::fs::File> {
    use std::os::fd::FromRawFd;
    // SAFETY: a borrowed view of a descriptor we keep owning; ManuallyDrop never closes it.
    std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd.as_raw_fd()) })
}

/// Writes all of `buf` at `offset`, growing the spool as needed.
pub(crate) fn spool_write_at(fd: &OwnedFd, buf: &[u8], offset: u64) -> io::Result<()> {
    as_file(fd).write_all_at(buf, offset)
}

/// Reads up to `buf.len()` bytes at `offset`; returns how many (fewer only at the end).
pub(crate) fn spool_read_at(fd: &OwnedFd, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let file = as_file(fd);
    crate::sys::read_full_at(|b, at| file.read_at(b, at), buf, offset)
}

/// Sets the spool's length (shrinking frees its memory).
pub(crate) fn spool_truncate(fd: &OwnedFd, len: u64) -> io::Result<()> {
    as_file(fd).set_len(len)
}

/// Frees the memory of `[offset, offset + len)` while keeping offsets valid (Linux: punch a
/// hole). Where the platform cannot, the memory is freed when the spool next empties.
pub(crate) fn spool_release(fd: &OwnedFd, offset: u64, len: u64) {
    mp_unix::memory::release_range(fd, offset, len)
}

/// The spool's length in bytes.
pub(crate) fn spool_len(fd: &OwnedFd) -> io::Result<u64> {
    Ok(as_file(fd).metadata()?.len())
}
