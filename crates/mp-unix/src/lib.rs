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
//! The crate also holds mp's other Unix OS primitives, one implementation per Unix flavour
//! (Linux, macOS, FreeBSD, and the portable POSIX `generic` one that the `posix-generic`
//! feature forces everywhere), chosen once in `build.rs` ([`FLAVOUR`]):
//! process-shared wait/wake on a word ([`futex`]), anonymous shared memory and spool files
//! ([`memory`]), child exit watches and liveness ([`process`]), and close-on-exec without
//! races ([`cloexec`]).
//!
//! On non-Unix targets the crate is empty.
#![cfg(unix)]

mod channel;
pub mod cloexec;
pub mod fdpass;
pub mod futex;
pub mod memory;
pub mod poll;
pub mod process;
pub mod spin;
mod transport;

/// The Unix flavour this build uses: `"linux"`, `"apple"`, `"freebsd"` or `"generic"`
/// (any other Unix, or any Unix with the `posix-generic` feature).
///
/// ```
/// assert!(["linux", "apple", "freebsd", "generic"].contains(&mp_unix::FLAVOUR));
/// ```
pub const FLAVOUR: &str = if cfg!(mp_os = "linux") {
    "linux"
} else if cfg!(mp_os = "apple") {
    "apple"
} else if cfg!(mp_os = "freebsd") {
    "freebsd"
} else {
    "generic"
};

pub use channel::UnixChannel;
pub use transport::UnixSocket;
