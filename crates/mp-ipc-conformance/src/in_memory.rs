//! An in-memory transport: frames in a queue behind a mutex, between threads of one process.
//!
//! It is the smallest complete implementation of the contract, written for two purposes:
//! it shows the kit is backend-agnostic (the kit's own tests run the suite on it, and
//! `mp-core`'s tests build `Connection`s on it without `mp-core` knowing it exists), and it
//! is the walk-through of `docs/writing-a-backend.md`. It owns no OS handle, so its ends
//! cannot leave their process ([`Capabilities::IN_PROCESS`]).

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use mp_ipc::deadline::Deadline;
use mp_ipc::handle::{OwnedHandle, RawHandle};
use mp_ipc::{Capabilities, Channel, Endpoint, IpcError, Transport};

/// The in-memory transport.
///
/// ```
/// use mp_ipc::{Channel, Transport};
/// use mp_ipc_conformance::in_memory::InMemory;
/// let (a, b) = InMemory::pair().unwrap();
/// a.send_frame(&[b"he", b"llo"]).unwrap();
/// let mut buf = Vec::new();
/// b.recv_frame(&mut buf, 1024).unwrap();
/// assert_eq!(buf, b"hello");
/// drop(a);
/// assert!(matches!(b.recv_frame(&mut buf, 1024), Err(mp_ipc::IpcError::Eof)));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct InMemory;

impl Transport for InMemory {
    const NAME: &'static str = "in-memory";
    const CAPABILITIES: Capabilities = Capabilities::IN_PROCESS;
    type End = MemoryEnd;

    fn pair() -> io::Result<(MemoryEnd, MemoryEnd)> {
        let (ab, ba) = (
            Arc::new(Direction::default()),
            Arc::new(Direction::default()),
        );
        Ok((
            MemoryEnd::new(ab.clone(), ba.clone()),
            MemoryEnd::new(ba, ab),
        ))
    }
}

/// One direction: the frames in flight and who still holds each side.
#[derive(Debug, Default)]
struct Direction {
    state: Mutex<State>,
    /// Signalled on every change a reader may wait for.
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    frames: VecDeque<Vec<u8>>,
    writers: usize,
    readers: usize,
}

impl Direction {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until a frame is there or no writer is left; `false` on timeout.
    fn wait_readable(&self, deadline: Deadline) -> bool {
        let mut s = self.lock();
        loop {
            if !s.frames.is_empty() || s.writers == 0 {
                return true;
            }
            s = match deadline.remaining() {
                None => self.changed.wait(s).unwrap_or_else(|e| e.into_inner()),
                Some(left) if left.is_zero() => return false,
                Some(left) => {
                    self.changed
                        .wait_timeout(s, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }
}

/// One end of an [`InMemory`] pair: it writes to one [`Direction`] and reads the other.
#[derive(Debug)]
pub struct MemoryEnd {
    tx: Arc<Direction>,
    rx: Arc<Direction>,
}

impl MemoryEnd {
    fn new(tx: Arc<Direction>, rx: Arc<Direction>) -> Self {
        tx.lock().writers += 1;
        rx.lock().readers += 1;
        Self { tx, rx }
    }
}

impl Drop for MemoryEnd {
    fn drop(&mut self) {
        self.tx.lock().writers -= 1;
        self.tx.changed.notify_all();
        self.rx.lock().readers -= 1;
    }
}

impl Channel for MemoryEnd {
    fn send_frame(&self, parts: &[&[u8]]) -> Result<(), IpcError> {
        let mut s = self.tx.lock();
        if s.readers == 0 {
            return Err(IpcError::BrokenPipe);
        }
        // One push under the lock: the frame is seen whole or not at all.
        s.frames.push_back(parts.concat());
        drop(s);
        self.tx.changed.notify_all();
        Ok(())
    }

    fn recv_frame_until(
        &self,
        buf: &mut Vec<u8>,
        max_len: u64,
        deadline: Deadline,
    ) -> Result<Vec<OwnedHandle>, IpcError> {
        if !self.rx.wait_readable(deadline) {
            return Err(IpcError::Timeout);
        }
        let mut s = self.rx.lock();
        let Some(front) = s.frames.front() else {
            return Err(IpcError::Eof);
        };
        let len = front.len() as u64;
        if len > max_len {
            // The frame is dropped: as with a stream, the end is no longer usable for
            // reading after this error.
            s.frames.pop_front();
            return Err(IpcError::FrameTooLarge { len, max: max_len });
        }
        *buf = s.frames.pop_front().unwrap_or_default();
        Ok(Vec::new())
    }

    fn poll(&self, timeout: Option<Duration>) -> Result<bool, IpcError> {
        Ok(self.rx.wait_readable(Deadline::from_timeout(timeout)))
    }
}

impl Endpoint for MemoryEnd {
    type Transport = InMemory;

    fn handles(&self) -> Vec<RawHandle> {
        Vec::new()
    }

    fn wait_handle(&self) -> Option<RawHandle> {
        None
    }

    fn export(&self) -> Vec<u8> {
        Vec::new()
    }

    fn adopt(_handles: Vec<OwnedHandle>, _state: &[u8]) -> io::Result<Self> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "an in-memory end cannot leave its process",
        ))
    }

    fn try_clone(&self) -> io::Result<Self> {
        Ok(Self::new(self.tx.clone(), self.rx.clone()))
    }
}
