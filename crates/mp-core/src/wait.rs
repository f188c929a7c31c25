//! Waiting on several connections and processes at once: Python's
//! `multiprocessing.connection.wait`.
//!
//! Objects are anything [`Waitable`]: the connection ends, process [`Sentinel`]s and
//! sockets (`TcpStream`, `TcpListener`; on Unix `UnixStream`, `UnixListener`). The
//! result is the indices of the ready objects rather than the objects, which keeps
//! borrowing simple. There is no limit on the number of objects (Python's Windows version
//! is limited to 63 per underlying call).

use std::time::Duration;

use mp_ipc::deadline::Deadline;
use mp_ipc::handle::RawHandle;

use crate::connection::{Connection, Reader, Writer};
use crate::WaitError;

/// Something [`wait`] can wait on.
pub trait Waitable {
    /// The OS handle that becomes ready, or `None` when the object is closed.
    fn wait_handle(&self) -> Option<RawHandle>;

    /// Whether the object is ready without the OS knowing (a message already read ahead
    /// into a connection's own buffer).
    fn ready_in_process(&self) -> bool {
        false
    }

    /// A second OS handle that makes the object ready (a shm connection on Windows: the
    /// process holding its peer end, which its doorbell cannot report the death of).
    /// Asked after [`ready_in_process`](Waitable::ready_in_process).
    fn liveness_handle(&self) -> Option<RawHandle> {
        None
    }

    /// After the OS reported the object ready: whether it really is, for objects whose
    /// handle can be signalled spuriously (`None`: trust the OS). Checking prepares the
    /// object for the next round of waiting.
    fn recheck(&self) -> Option<bool> {
        None
    }
}

impl<T> Waitable for Connection<T> {
    fn wait_handle(&self) -> Option<RawHandle> {
        self.raw().raw_handle()
    }

    fn ready_in_process(&self) -> bool {
        self.raw().has_buffered()
    }

    fn liveness_handle(&self) -> Option<RawHandle> {
        self.raw().liveness_handle()
    }

    fn recheck(&self) -> Option<bool> {
        self.raw().recheck()
    }
}

impl<T> Waitable for Reader<T> {
    fn wait_handle(&self) -> Option<RawHandle> {
        self.raw().raw_handle()
    }

    fn ready_in_process(&self) -> bool {
        self.raw().has_buffered()
    }

    fn liveness_handle(&self) -> Option<RawHandle> {
        self.raw().liveness_handle()
    }

    fn recheck(&self) -> Option<bool> {
        self.raw().recheck()
    }
}

impl<T> Waitable for Writer<T> {
    fn wait_handle(&self) -> Option<RawHandle> {
        self.raw().raw_handle()
    }
}

/// A TCP socket (Python's `wait` takes sockets too): ready when a read would not block,
/// end of stream included.
impl Waitable for std::net::TcpStream {
    fn wait_handle(&self) -> Option<RawHandle> {
        Some(crate::sys::socket_handle(self))
    }
}

/// A listening TCP socket: ready when a client waits to be accepted.
impl Waitable for std::net::TcpListener {
    fn wait_handle(&self) -> Option<RawHandle> {
        Some(crate::sys::socket_handle(self))
    }
}

/// A process's sentinel: ready once the child has exited (Python's `Process.sentinel`).
/// Obtained from [`Process::sentinel`](crate::Process::sentinel).
#[derive(Debug, Clone, Copy)]
pub struct Sentinel<'a> {
    pub(crate) handle: RawHandle,
    pub(crate) _process: std::marker::PhantomData<&'a ()>,
}

impl Sentinel<'_> {
    /// The raw OS handle (a descriptor on Unix).
    pub fn raw_handle(&self) -> RawHandle {
        self.handle
    }
}

impl Waitable for Sentinel<'_> {
    fn wait_handle(&self) -> Option<RawHandle> {
        Some(self.handle)
    }
}

/// Waits until at least one object is ready (a message or end of stream to read, a client
/// to accept, or a process that has exited), for at most `timeout` (`None`: without limit). Returns the
/// indices of the ready objects; empty on timeout.
///
/// ```
/// use std::time::{Duration, Instant};
/// let (a, b) = mp_core::pipe::<u8>().unwrap();
/// let (c, d) = mp_core::pipe::<u8>().unwrap();
/// d.send(&1).unwrap();
/// let ready = mp_core::wait(&[&a, &c], Some(Duration::from_secs(1))).unwrap();
/// assert_eq!(ready, vec![1]);
/// # drop(b);
/// ```
pub fn wait(objects: &[&dyn Waitable], timeout: Option<Duration>) -> Result<Vec<usize>, WaitError> {
    let mut handles = Vec::with_capacity(objects.len());
    for (i, o) in objects.iter().enumerate() {
        handles.push(o.wait_handle().ok_or(WaitError::Closed(i))?);
    }
    let deadline = Deadline::from_timeout(timeout);
    loop {
        let ready: Vec<usize> = (0..objects.len())
            .filter(|&i| objects[i].ready_in_process())
            .collect();
        if !ready.is_empty() {
            return Ok(ready);
        }
        // Which object each handle belongs to: the first `objects.len()` are one each.
        let mut all = handles.clone();
        let mut owner: Vec<usize> = (0..objects.len()).collect();
        for (i, o) in objects.iter().enumerate() {
            if let Some(h) = o.liveness_handle() {
                all.push(h);
                owner.push(i);
            }
        }
        let left = deadline.remaining();
        let reported = crate::sys::wait_readable(&all, left)?;
        let mut ready: Vec<usize> = reported
            .iter()
            .filter_map(|&k| owner.get(k).copied())
            .collect();
        ready.sort_unstable();
        ready.dedup();
        ready.retain(|&i| objects[i].recheck().unwrap_or(true));
        // Nothing reported: the time is up. Only spurious reports: wait again, if there is
        // time left.
        if !ready.is_empty() || reported.is_empty() || deadline.expired() {
            return Ok(ready);
        }
    }
}
