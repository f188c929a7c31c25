//! The messages between a parent and a child over the child's *boot channel*.
//!
//! The boot channel is a private socket pair (a named-pipe pair on Windows) made for each
//! child. The parent sends one [`Boot`] on it, with the handles of the argument; the child
//! answers with [`Report`]s. The channel also tells each side that the other is gone: the
//! child's watchdog reads end-of-stream when the parent dies.

use serde::{Deserialize, Serialize};

use super::target::EntryId;
use crate::StartMethod;

/// Environment variable that marks a process as a child of `mp`, and says which kind.
pub(crate) const ENV_BOOT: &str = "MP_CORE_BOOT";

/// Who a process is: what `current_process()` reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Identity {
    pub(crate) name: String,
    /// Python's `_identity`: the path of child numbers from the main process.
    pub(crate) path: Vec<u32>,
    pub(crate) daemon: bool,
    pub(crate) authkey: Vec<u8>,
}

/// Everything a spawned or fork-server child needs to run its target.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Boot {
    pub(crate) entry: EntryId,
    pub(crate) args: Vec<u8>,
    pub(crate) identity: Identity,
    pub(crate) parent_pid: u32,
    pub(crate) parent_name: String,
    pub(crate) start_method: StartMethod,
    pub(crate) outlive_parent: bool,
    /// The logging settings the child inherits.
    pub(crate) log: crate::logging::LogBoot,
}

/// What a child tells its parent.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Report {
    /// The target panicked.
    Panicked {
        message: String,
        location: String,
        backtrace: String,
    },
    /// The child could not start its target.
    BootFailed(String),
    /// The child is about to exit with this code.
    Exiting(i32),
}
