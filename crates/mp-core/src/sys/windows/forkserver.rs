//! The fork server does not exist on Windows (there is no `fork`): asking for one is an
//! `Unsupported` error.

use std::io;

use super::start::{unsupported, Waiter};
use super::Chan;

/// Refuses: there is no fork server on Windows.
pub(crate) fn start(_boot: &Chan) -> io::Result<(u32, Waiter)> {
    Err(unsupported("the forkserver start method"))
}

/// A process asked to be a fork server says it cannot be one and exits.
pub(crate) fn serve(_ctl: Chan) -> ! {
    eprintln!("mp: {}", unsupported("the forkserver start method"));
    std::process::exit(1)
}

/// There is never a fork server on Windows.
pub(crate) fn server_pid() -> Option<u32> {
    None
}
