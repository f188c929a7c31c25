//! The Windows named-pipe backend of `mp`.
//!
//! [`NamedPipe`] is the transport (`mp_ipc::Transport`) whose ends are [`PipeChannel`]s.
//! A duplex [`PipeChannel`] is one end of a pair of connected, uniquely named, byte-mode named
//! pipe handles: the Windows counterpart of the Unix socket pair, and the object Python's
//! `multiprocessing.Pipe()` uses on Windows. Frames are length-prefixed ([`mp_ipc::frame`]).
//! [`handle`] moves handles into another process (`DuplicateHandle`) and sends them with a
//! frame; [`poll`] waits for any of several pipes and process handles; [`spawn`] starts a
//! process that inherits exactly the handles it is given; [`memory`] makes and maps anonymous
//! shared memory; [`event`] wraps the event objects and process handles the shared-memory
//! backend sleeps on; [`named_pipe`] listens on and connects to named pipes (`\\.\pipe\name`),
//! whose connected handles, like those of connected TCP sockets, become channels through
//! [`PipeChannel::from_handle`].
//!
//! The crate uses `windows-sys` directly rather than `interprocess`: it needs the raw pipe
//! handles for `DuplicateHandle`, `PeekNamedPipe` and overlapped I/O on duplicated handles,
//! which `interprocess`'s stream types do not expose.
//!
//! On non-Windows targets the crate is empty.
#![cfg(windows)]
// Handles are passed as `RawHandle` (`*mut c_void`), the way `mp-unix` passes `RawFd`: an
// opaque kernel handle value that is never dereferenced, only handed to the kernel, which
// rejects an invalid one with an error.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

mod channel;
pub mod event;
pub mod handle;
mod io;
pub mod memory;
pub mod named_pipe;
pub mod poll;
mod socket;
pub mod spawn;
mod transport;

pub use channel::PipeChannel;
pub use transport::NamedPipe;

#[cfg(test)]
mod tests;
