//! `SharedMemory`: Python's `multiprocessing.shared_memory.SharedMemory`.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use mp_ipc::handle::OwnedHandle;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::SharedError;
use crate::sys;

/// The longest name, in bytes (POSIX allows 255 with the leading `/`; the resource tracker
/// keeps 250).
pub(crate) const MAX_NAME_LEN: usize = 250;

/// A named block of shared memory that any process can open by name: Python's
/// `multiprocessing.shared_memory.SharedMemory`.
///
/// Backed by POSIX `shm_open` on Unix (the segment appears as `/dev/shm/<name>` on Linux) and
/// by a named file mapping (`Local\<name>`) on Windows.
///
/// **Who removes it.** The creating process owns the name: [`unlink`](Self::unlink) removes
/// it (once; a second unlink is [`SharedError::NotFound`]); mappings already open keep working
/// until dropped. If the creator ends without unlinking, however it ends (a panic, `exit`,
/// SIGKILL), a small resource-tracker process it started on its first `create` unlinks the
/// names it still owned, within a fraction of a second (Python's tracker misses SIGKILL).
/// [`untrack`](Self::untrack) opts a segment out, to let it outlive its creator. Processes
/// that [`open`](Self::open) a segment never unlink it unless they call `unlink`. On Windows
/// there is no unlink: a segment lives while some process has it open, so nothing can leak.
///
/// **Passing it on.** Serialized (as a process argument or in a message, or with any serde
/// format) it is its name; deserializing opens the segment by name, and fails with
/// [`SharedError::NotFound`] if it is gone. The receiver does not own the name.
///
/// **Access and aliasing.** The memory is shared with other processes, which may write it at
/// any time, so safe access is by copy: [`read_at`](Self::read_at) and
/// [`write_at`](Self::write_at) copy with volatile accesses and never hand out references into
/// the segment. Concurrent writes to the same bytes give unspecified (but valid) bytes; order
/// them with a [`Lock`](crate::Lock). For full speed (`memcpy`, in-place parsing),
/// [`as_slice`](Self::as_slice) / [`as_mut_slice`](Self::as_mut_slice) give references whose
/// safety rests on the caller (no one else writes the bytes meanwhile), and
/// [`as_mut_ptr`](Self::as_mut_ptr) gives the address.
///
/// **A segment shrunk by someone else.** On Unix any process that can open the name can
/// also `ftruncate` the segment, and an access past the new end would kill this process with
/// `SIGBUS`. It does not: the first such access replaces this mapping with private zero pages
/// and completes, and [`damaged`](Self::damaged) turns true. From then on reads give zeros
/// and writes reach no other process; `read_at` and `write_at` cannot fail, so check
/// `damaged` after reading where a peer may be hostile. (Windows sections cannot shrink.)
///
/// ```
/// use mp_core::SharedMemory;
/// let shm = SharedMemory::create(512).unwrap();
/// assert!(shm.size() >= 512);
/// shm.write_at(0, &[42]);
/// let other = SharedMemory::open(shm.name()).unwrap();
/// let mut b = [0u8];
/// other.read_at(0, &mut b);
/// assert_eq!(b, [42]);
/// shm.unlink().unwrap();
/// #[cfg(unix)] // a no-op on Windows, where a segment ends with its last handle
/// assert!(shm.unlink().is_err());
/// ```
pub struct SharedMemory {
    name: String,
    _handle: OwnedHandle,
    map: mp_ipc::memory::Mapping,
    size: usize,
    /// Whether this handle created the name and still tracks it.
    tracked: AtomicBool,
}

// Send and Sync come from the mapping: the safe accessors copy with volatile accesses and
// the unsafe ones put the burden on the caller.

fn check_name(name: &str) -> Result<(), SharedError> {
    let bad = |why| Err(SharedError::InvalidName(name.to_string(), why));
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("longer than 250 bytes");
    }
    if name.contains(['\0', '/', '\\', '\n']) {
        return bad("contains a NUL byte, '/', '\\' or a newline");
    }
    Ok(())
}

fn os_error(name: &str, e: io::Error) -> SharedError {
    match e.kind() {
        io::ErrorKind::NotFound => SharedError::NotFound(name.to_string()),
        io::ErrorKind::AlreadyExists => SharedError::AlreadyExists(name.to_string()),
        _ => SharedError::Io(e),
    }
}

/// A fresh random name: `mp_` and 16 hex digits.
fn generated_name() -> String {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("the OS random source failed");
    format!("mp_{:016x}", u64::from_le_bytes(b))
}

impl SharedMemory {
    /// Creates a segment of `size` bytes (zero-filled) under a generated name, retrying with
    /// another if one happens to be taken.
    pub fn create(size: usize) -> Result<Self, SharedError> {
        loop {
            match Self::create_named(&generated_name(), size) {
                Err(SharedError::AlreadyExists(_)) => continue,
                other => return other,
            }
        }
    }

    /// Creates a segment of `size` bytes named `name`; [`SharedError::AlreadyExists`] if the
    /// name is taken, [`SharedError::InvalidSize`] for size 0.
    pub fn create_named(name: &str, size: usize) -> Result<Self, SharedError> {
        check_name(name)?;
        if size == 0 {
            return Err(SharedError::InvalidSize);
        }
        // The tracker first: between creating the name and registering it there is then
        // nothing but a pipe write, no fork, for a kill to fall into.
        sys::shm_track_prepare()?;
        let handle = sys::shm_create_named(name, size).map_err(|e| os_error(name, e))?;
        if let Err(e) = sys::shm_track(name) {
            let _ = sys::shm_unlink_named(name);
            return Err(e.into());
        }
        match sys::shm_map(&handle, size) {
            Ok(map) => Ok(Self {
                name: name.to_string(),
                _handle: handle,
                map,
                size,
                tracked: AtomicBool::new(true),
            }),
            Err(e) => {
                sys::shm_untrack(name);
                let _ = sys::shm_unlink_named(name);
                Err(e.into())
            }
        }
    }

    /// Opens the existing segment `name`; [`SharedError::NotFound`] if there is none. Its size
    /// is the segment's real size (on Windows, rounded up to whole pages).
    pub fn open(name: &str) -> Result<Self, SharedError> {
        check_name(name)?;
        let handle = sys::shm_open_named(name).map_err(|e| os_error(name, e))?;
        let size = sys::shm_size(&handle)?;
        if size == 0 {
            // Created but not yet sized by its creator, or not ours.
            return Err(SharedError::Mismatch(format!("segment {name:?} is empty")));
        }
        let map = sys::shm_map(&handle, size)?;
        Ok(Self {
            name: name.to_string(),
            _handle: handle,
            map,
            size,
            tracked: AtomicBool::new(false),
        })
    }

    /// The name (without the leading `/` of POSIX).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Removes the name, so that no one can open it any more; the memory lives on while it is
    /// mapped. A second unlink fails with [`SharedError::NotFound`]. Does nothing on Windows.
    pub fn unlink(&self) -> Result<(), SharedError> {
        let r = sys::shm_unlink_named(&self.name).map_err(|e| os_error(&self.name, e));
        if self.tracked.swap(false, Ordering::AcqRel) {
            sys::shm_untrack(&self.name);
        }
        r
    }

    /// Lets the segment outlive its creator: the resource tracker forgets it, so someone must
    /// [`unlink`](Self::unlink) it eventually (or it lasts until reboot on Unix).
    pub fn untrack(&self) {
        if self.tracked.swap(false, Ordering::AcqRel) {
            sys::shm_untrack(&self.name);
        }
    }

    /// Unmaps the memory (Python's `close()`); the same as dropping it.
    pub fn close(self) {}

    /// Copies `buf.len()` bytes from `offset` into `buf`.
    ///
    /// # Panics
    /// If the range is not inside the segment.
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) {
        self.check_range(offset, buf.len());
        // SAFETY: in bounds (checked); volatile reads of plain bytes.
        unsafe { volatile_copy(self.map.as_ptr().add(offset), buf.as_mut_ptr(), buf.len()) }
    }

    /// Copies `data` into the segment at `offset`.
    ///
    /// # Panics
    /// If the range is not inside the segment.
    pub fn write_at(&self, offset: usize, data: &[u8]) {
        self.check_range(offset, data.len());
        // SAFETY: in bounds (checked); volatile writes of plain bytes.
        unsafe { volatile_copy(data.as_ptr(), self.map.as_ptr().add(offset), data.len()) }
    }

    fn check_range(&self, offset: usize, len: usize) {
        assert!(
            offset.checked_add(len).is_some_and(|end| end <= self.size),
            "range {offset}..{offset}+{len} outside a segment of {} bytes",
            self.size
        );
    }

    /// Whether another process shrank the segment under this mapping, which then became
    /// private zero pages (see the type's documentation): what was read since may be zeros
    /// instead of the data, and what was written reached no one. Never true on Windows.
    ///
    /// ```
    /// let shm = mp_core::SharedMemory::create(64).unwrap();
    /// assert!(!shm.damaged());
    /// shm.unlink().unwrap();
    /// ```
    pub fn damaged(&self) -> bool {
        self.map.damaged()
    }

    /// The address of the first byte, in this process.
    pub fn as_mut_ptr(&self) -> *mut u8 {
        self.map.as_ptr()
    }

    /// The whole segment as a slice.
    ///
    /// # Safety
    /// While the slice lives, nothing may write the segment: no `&mut` from
    /// [`as_mut_slice`](Self::as_mut_slice), no `write_at`, no other process.
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: per the contract; the mapping is `size` bytes long.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr(), self.size) }
    }

    /// The whole segment as a mutable slice.
    ///
    /// # Safety
    /// While the slice lives, nothing else may read or write the segment (no other slice,
    /// no `read_at`/`write_at`, no other process), for instance because a lock is held.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn as_mut_slice(&self) -> &mut [u8] {
        // SAFETY: per the contract.
        unsafe { std::slice::from_raw_parts_mut(self.map.as_ptr(), self.size) }
    }
}

/// Copies `len` bytes with volatile accesses, eight at a time where both sides allow.
///
/// # Safety
/// Both ranges valid and not overlapping.
unsafe fn volatile_copy(src: *const u8, dst: *mut u8, len: usize) {
    let mut i = 0;
    // SAFETY: every access below is within the ranges of the contract.
    unsafe {
        if (src as usize) & 7 == (dst as usize) & 7 {
            while i < len && (src as usize + i) & 7 != 0 {
                dst.add(i).write_volatile(src.add(i).read_volatile());
                i += 1;
            }
            while i + 8 <= len {
                let w = src.add(i).cast::<u64>().read_volatile();
                dst.add(i).cast::<u64>().write_volatile(w);
                i += 8;
            }
        }
        while i < len {
            dst.add(i).write_volatile(src.add(i).read_volatile());
            i += 1;
        }
    }
}

impl std::fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SharedMemory({:?}, size={})", self.name, self.size)
    }
}

impl std::fmt::Display for SharedMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

impl Serialize for SharedMemory {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.name.serialize(s)
    }
}

impl<'de> Deserialize<'de> for SharedMemory {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Self::open(&name).map_err(D::Error::custom)
    }
}
