//! The Windows named-pipe backend of `mp`.
//!
//! A duplex [`PipeChannel`] is one end of a pair of connected, uniquely named, byte-mode named
//! pipe handles: the Windows counterpart of the Unix socket pair, and the object Python's
//! `multiprocessing.Pipe()` uses on Windows. Frames are length-prefixed ([`mp_ipc::frame`]).
//!
//! On non-Windows targets the crate is empty.
#![cfg(windows)]

mod channel;

pub use channel::PipeChannel;
