//! Spool files on Windows: a temporary file opened with `FILE_FLAG_DELETE_ON_CLOSE`, read and
//! written by offset. The system deletes it when the last handle closes, in any process, so a
//! crash leaks nothing. Consumed space is given back when the queue empties.

use std::io;
use std::os::windows::fs::{FileExt, OpenOptionsExt};
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};

const FILE_FLAG_DELETE_ON_CLOSE: u32 = 0x0400_0000;
const FILE_ATTRIBUTE_TEMPORARY: u32 = 0x0000_0100;
const FILE_SHARE_ALL: u32 = 0x1 | 0x2 | 0x4;

/// A new empty spool.
pub(crate) fn spool_create() -> io::Result<OwnedHandle> {
    let mut name = [0u8; 16];
    getrandom::fill(&mut name).map_err(|e| io::Error::other(e.to_string()))?;
    let hex: String = name.iter().map(|b| format!("{b:02x}")).collect();
    let path = std::env::temp_dir().join(format!("mp-spool-{hex}"));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .share_mode(FILE_SHARE_ALL)
        .attributes(FILE_ATTRIBUTE_TEMPORARY)
        .custom_flags(FILE_FLAG_DELETE_ON_CLOSE)
        .open(path)?;
    Ok(OwnedHandle::from(file))
}

fn as_file(h: &OwnedHandle) -> std::mem::ManuallyDrop<std::fs::File> {
    // SAFETY: a borrowed view of a handle we keep owning; ManuallyDrop never closes it.
    std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_handle(h.as_raw_handle()) })
}

/// Writes all of `buf` at `offset`, growing the spool as needed.
pub(crate) fn spool_write_at(h: &OwnedHandle, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
    let file = as_file(h);
    while !buf.is_empty() {
        match file.seek_write(buf, offset) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => {
                buf = &buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads up to `buf.len()` bytes at `offset`; returns how many (fewer only at the end).
pub(crate) fn spool_read_at(h: &OwnedHandle, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let file = as_file(h);
    crate::sys::read_full_at(|b, at| file.seek_read(b, at), buf, offset)
}

/// Sets the spool's length (shrinking frees its space).
pub(crate) fn spool_truncate(h: &OwnedHandle, len: u64) -> io::Result<()> {
    as_file(h).set_len(len)
}

/// No hole punching here: space is given back when the spool next empties.
pub(crate) fn spool_release(_h: &OwnedHandle, _offset: u64, _len: u64) {}

/// The spool's length in bytes.
pub(crate) fn spool_len(h: &OwnedHandle) -> io::Result<u64> {
    Ok(as_file(h).metadata()?.len())
}
