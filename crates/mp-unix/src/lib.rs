//! The Unix socket backend of `mp`.
//!
//! A duplex [`UnixChannel`] is one end of a `socketpair(AF_UNIX, SOCK_STREAM)`, the same
//! object Python's `multiprocessing.Pipe()` uses on Unix. Frames are length-prefixed
//! ([`mp_ipc::frame`]); writes use `MSG_NOSIGNAL`, so a vanished peer is an `EPIPE` error
//! and never a `SIGPIPE` that kills the writer. [`fdpass`] sends descriptors along with a
//! frame (`SCM_RIGHTS`), which is how handles reach spawned and fork-server children.
//!
//! [`UnixSocket`] is the transport (`mp_ipc::Transport`) whose ends are `UnixChannel`s.
//! Receives and polls spin briefly before they block ([`spin`]).
//!
//! On non-Unix targets the crate is empty.
#![cfg(unix)]

mod channel;
pub mod fdpass;
pub mod memory;
pub mod poll;
pub mod process;
pub mod spin;
mod transport;

pub use channel::UnixChannel;
pub use transport::UnixSocket;
