//! Handles inside queue items (Windows): the sender keeps a private duplicate of each handle
//! and the taker of the item takes it out of the sender with `DuplicateHandle`
//! (`DUPLICATE_CLOSE_SOURCE`), as Python's `DupHandle` does; see
//! `mp_windows::handle::export`.
//!
//! Limits: the process that put the item must still be running when the item is taken; an
//! item never taken keeps its duplicates open in that process until it exits.

use std::io;
use std::os::windows::io::{OwnedHandle, RawHandle};

use serde::{Deserialize, Serialize};

/// What a handle in a queue item serializes to: the exporting process and the value of its
/// private duplicate there.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Ticket {
    pid: u32,
    value: u64,
}

/// Nothing to hold across a fork on Windows (there is no fork).
pub(crate) struct ForkGuard;

/// See [`ForkGuard`].
pub(crate) fn handoff_lock_for_fork() -> ForkGuard {
    ForkGuard
}

/// A duplicate of `raw`, owned by the caller (non-inheritable).
pub(crate) fn duplicate_handle(raw: RawHandle) -> io::Result<OwnedHandle> {
    mp_windows::handle::duplicate_local(raw)
}

/// The handles one item exports while it is encoded.
pub(crate) struct Exporter {
    values: Vec<u64>,
}

impl Exporter {
    pub(crate) fn new() -> Self {
        Self { values: Vec::new() }
    }

    /// Keeps a private duplicate of `raw` for the taker of the item; returns its ticket.
    pub(crate) fn export(&mut self, raw: RawHandle) -> io::Result<Ticket> {
        let (pid, values) = mp_windows::handle::export(&[raw])?;
        let value = values[0];
        self.values.push(value);
        Ok(Ticket { pid, value })
    }

    /// The item was not queued: its duplicates are closed.
    pub(crate) fn withdraw(self) {
        mp_windows::handle::unexport(&self.values);
    }
}

/// The handles of one item being decoded.
pub(crate) struct Importer;

impl Importer {
    pub(crate) fn new() -> Self {
        Self
    }

    /// The handle `ticket` stands for, taken out of its exporter.
    pub(crate) fn import(&mut self, ticket: &Ticket) -> io::Result<OwnedHandle> {
        mp_windows::handle::import(ticket.pid, &[ticket.value])?
            .pop()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no handle came back"))
    }
}
