//! The platform layer: how a process starts, how a handle reaches a child, how a process is
//! waited for and signalled. One module per platform family, chosen here and nowhere else.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub(crate) use unix::*;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub(crate) use windows::*;

/// The signals (or their Windows equivalents) a parent sends a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// Python's `terminate()`: SIGTERM / TerminateProcess.
    Terminate,
    /// Python's `kill()`: SIGKILL / TerminateProcess.
    Kill,
    /// Python's `interrupt()`: SIGINT.
    Interrupt,
}
