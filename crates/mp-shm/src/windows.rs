//! The Windows implementation: the two rings of [`crate::ring`] in a pagefile-backed section
//! (`CreateFileMappingW`), two manual-reset event objects as doorbells, and a companion
//! named-pipe pair that carries nothing and only tells whether the peer end still exists.
//!
//! - **Doorbells.** Each side sleeps on its own event ([`ShmChannel::wait_handle`]). A
//!   sleeper resets its event, arms its flag in the ring header, re-checks the ring and
//!   waits; a writer (or a reader freeing room) that finds the flag armed sets the peer's
//!   event. The event is a waitable object, so `mp_core::wait` waits on it like on a
//!   process handle, and a sleeper wakes with no polling.
//! - **Liveness.** The system closes a dead process's handles, so once every holder of the
//!   peer end is gone the companion pipe reports a broken pipe (`PeekNamedPipe`): the
//!   reader gets `Eof` (`Truncated` inside a streamed frame), the writer `BrokenPipe`. A
//!   pipe is not a waitable object, so to wake a sleeper at once each side records in the
//!   segment the pid of the process that last took it up; the peer waits on that process
//!   too ([`ShmChannel::liveness_handle`]) and, when it ends, looks at the pipe. An end
//!   dropped normally sets the peer's event after closing its pipe handle. Anything the
//!   hint misses (an end held by several processes) is caught by the pipe check every
//!   sleeper makes at least every 100 ms.
//! - **Handles.** An end is four handles (section, own event, peer's event, companion
//!   pipe) that travel to a spawned child like any other. A frame carries handles as the
//!   named-pipe channels' do: its body starts with the sender's pid and the values of
//!   private duplicates, which the receiver takes over
//!   ([`mp_windows::handle::handle_prefix`]).

use std::io;
use std::mem::ManuallyDrop;
use std::os::windows::io::{AsRawHandle, OwnedHandle, RawHandle};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mp_ipc::deadline::Deadline;
use mp_ipc::frame::{split_off_prefix, FrameHeader, Prefix};
use mp_ipc::{Channel, IpcError};
use mp_windows::event::{self, Event};
use mp_windows::handle::{handle_prefix, take_handle_prefix, unexport, HANDLE_PREFIX_MAX};
use mp_windows::memory::Mapping;
use mp_windows::PipeChannel;

#[cfg(test)]
use crate::ring::MIN_RING;
use crate::ring::{read_description, round_cap, total_len, Ring, RingEnd};

/// How long a sleeper woken by the end of the peer's process waits for the system to close
/// that process's handles (and so break the companion pipe) before it concludes that the
/// peer end lives on elsewhere.
const EXIT_GRACE: Duration = Duration::from_millis(20);

/// A mapped view of a section (the one mapping type of `mp` on Windows).
struct View {
    section: OwnedHandle,
    map: Mapping,
}

impl View {
    fn map(section: OwnedHandle, len: usize) -> io::Result<Self> {
        let have = mp_windows::memory::size(&section)?;
        if have < len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "a shared-memory channel of {len} bytes was announced, the section has {have}"
                ),
            ));
        }
        let map = mp_windows::memory::map(&section, len)?;
        Ok(Self { section, map })
    }
}

/// The peer's process as last seen in the segment.
#[derive(Default)]
struct PeerWatch {
    /// The pid the handle below belongs to (0: none yet).
    pid: u32,
    /// Its process handle; `None` if it could not be opened, is this process, or ended
    /// without taking the peer end with it.
    proc: Option<Arc<OwnedHandle>>,
}

/// One end of a shared-memory channel (documented at the crate root).
pub struct ShmChannel {
    ring: Ring,
    view: View,
    /// This side's doorbell: what it sleeps on.
    mine: Event,
    /// The peer's doorbell: what this side sets when the peer armed a flag.
    theirs: Event,
    /// The companion pipe: never written, broken once the peer end is gone. Closed before
    /// the peer is woken on drop.
    link: ManuallyDrop<PipeChannel>,
    peer: Mutex<PeerWatch>,
}

impl ShmChannel {
    /// A connected pair whose rings hold `cap` bytes each (rounded up to a power of two,
    /// at least 4 KiB).
    pub fn pair(cap: usize) -> io::Result<(Self, Self)> {
        let cap = round_cap(cap);
        let section = mp_windows::memory::create(total_len(cap))?;
        let section2 = mp_windows::handle::duplicate_local(section.as_raw_handle())?;
        let (e0, e1) = (Event::new()?, Event::new()?);
        let (e0b, e1b) = (e0.try_clone()?, e1.try_clone()?);
        let (p0, p1) = PipeChannel::pair()?;
        let a = Self::wrap(View::map(section, total_len(cap))?, e0, e1, p0, 0, cap);
        a.init_segment();
        let b = Self::wrap(View::map(section2, total_len(cap))?, e1b, e0b, p1, 1, cap);
        a.register();
        b.register();
        Ok((a, b))
    }

    fn wrap(
        view: View,
        mine: Event,
        theirs: Event,
        link: PipeChannel,
        side: u8,
        cap: usize,
    ) -> Self {
        Self {
            // SAFETY: the view is total_len(cap) bytes and lives in `view` beside it.
            ring: unsafe { Ring::new(view.map.as_ptr(), side, cap) },
            view,
            mine,
            theirs,
            link: ManuallyDrop::new(link),
            peer: Mutex::new(PeerWatch::default()),
        }
    }

    /// Records this process as the holder of this side (the hint the peer watches).
    fn register(&self) {
        self.meta().holder[self.ring.side as usize].store(std::process::id(), Ordering::Release);
    }

    /// The handles that make up this end: the section, this side's event, the peer's
    /// event, the companion pipe.
    pub fn handles(&self) -> [RawHandle; 4] {
        [
            self.view.section.as_raw_handle(),
            self.mine.as_raw_handle(),
            self.theirs.as_raw_handle(),
            self.link.as_raw_handle(),
        ]
    }

    /// The event that is set when this end should look again (a doorbell after
    /// [`prepare_wait`](ShmChannel::prepare_wait), or the peer end dropped).
    pub fn wait_handle(&self) -> RawHandle {
        self.mine.as_raw_handle()
    }

    /// The process handle an outside wait should include besides
    /// [`wait_handle`](ShmChannel::wait_handle): the process that last took up the peer end,
    /// whose end may be the peer's (`None` when there is none to watch). Valid until the
    /// next call on this end.
    pub fn liveness_handle(&self) -> Option<RawHandle> {
        self.watch().map(|p| p.as_raw_handle())
    }

    /// Rebuilds an end from [`handles`](ShmChannel::handles) (owned copies, same order) and
    /// [`describe`](ShmChannel::describe). Anything inconsistent (wrong count, a capacity
    /// that is not a power of two, a section smaller than announced, a bad magic) is an
    /// `InvalidData` error, never a bad mapping.
    pub fn from_parts(handles: Vec<OwnedHandle>, desc: &[u8]) -> io::Result<Self> {
        let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
        let [section, mine, theirs, link]: [OwnedHandle; 4] = handles
            .try_into()
            .map_err(|_| bad("a shared-memory channel needs exactly four handles"))?;
        let (side, cap) = read_description(desc)?;
        let view = View::map(section, total_len(cap))?;
        let ch = Self::wrap(
            view,
            Event::from_handle(mine)?,
            Event::from_handle(theirs)?,
            PipeChannel::from_handle(link)?,
            side,
            cap,
        );
        ch.check_segment()?;
        ch.register();
        // A peer already asleep re-reads the hint and watches this process from now on.
        ch.theirs.set();
        Ok(ch)
    }

    /// A second handle on the same end (duplicated handles, its own view).
    pub fn try_clone(&self) -> io::Result<Self> {
        let cap = self.ring.cap;
        let section = mp_windows::handle::duplicate_local(self.view.section.as_raw_handle())?;
        Ok(Self::wrap(
            View::map(section, total_len(cap))?,
            self.mine.try_clone()?,
            self.theirs.try_clone()?,
            self.link.try_clone()?,
            self.ring.side,
            cap,
        ))
    }

    /// Sets this end up for an outside wait on [`wait_handle`](ShmChannel::wait_handle)
    /// (and [`liveness_handle`](ShmChannel::liveness_handle)): true if a frame (or end of
    /// stream) is already there; otherwise arms the doorbell so the next frame sets the
    /// event.
    pub fn prepare_wait(&self) -> bool {
        if self.arm_for_outside_wait() {
            return true;
        }
        // Settles the watch (a peer process that ended without the peer end going away
        // must not keep an outside wait spinning).
        let _ = self.watch();
        if self.gone() {
            self.hdr(self.rx())
                .f
                .0
                .reader_armed
                .store(0, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// The process to watch for the peer's end, brought up to date with the segment's hint.
    /// A watched process that has ended is checked against the companion pipe (with a grace
    /// for the system to close its handles) and then dropped if the peer end survived it.
    fn watch(&self) -> Option<Arc<OwnedHandle>> {
        let mut w = self.peer.lock().unwrap_or_else(|e| e.into_inner());
        let pid = self.meta().holder[self.rx() as usize].load(Ordering::Acquire);
        if pid != w.pid {
            w.pid = pid;
            w.proc = if pid == 0 || pid == std::process::id() {
                None
            } else {
                event::open_process(pid).ok().map(Arc::new)
            };
        }
        let ended = w
            .proc
            .as_ref()
            .is_some_and(|p| mp_windows::poll::is_signalled(p.as_raw_handle()).unwrap_or(true));
        if ended {
            drop(w);
            let until = Instant::now() + EXIT_GRACE;
            loop {
                let _ = self.drain();
                if self.gone() || Instant::now() >= until {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            let mut w = self.peer.lock().unwrap_or_else(|e| e.into_inner());
            if w.pid == pid {
                w.proc = None;
            }
            return None;
        }
        w.proc.clone()
    }
}

impl RingEnd for ShmChannel {
    fn ring(&self) -> &Ring {
        &self.ring
    }

    fn damaged(&self) -> bool {
        self.view.map.damaged()
    }

    fn pid_alive(&self, pid: u32) -> bool {
        event::pid_alive(pid)
    }

    fn pid_plausible(&self, pid: u32) -> bool {
        event::pid_plausible(pid)
    }

    fn current_tid(&self) -> u32 {
        event::current_tid()
    }

    fn thread_alive(&self, tid: u32) -> bool {
        event::thread_alive(tid)
    }

    /// The companion pipe carries nothing: if it is readable, the peer end is gone (or the
    /// peer broke the protocol, which ends the channel the same way).
    fn drain(&self) -> Result<(), IpcError> {
        if self.ring.is_gone() {
            return Ok(());
        }
        if self.link.poll(Some(Duration::ZERO)).unwrap_or(true) {
            self.ring.set_gone();
        }
        Ok(())
    }

    fn ring_bell(&self) {
        self.theirs.set();
    }

    fn before_arm(&self) {
        self.mine.reset();
    }

    fn sleep(&self, slice: Duration) -> Result<(), IpcError> {
        let proc = self.watch();
        let mut hs = vec![self.mine.as_raw_handle()];
        if let Some(p) = &proc {
            hs.push(p.as_raw_handle());
        }
        event::wait_any(&hs, slice)?;
        Ok(())
    }
}

impl ShmChannel {
    /// Sends a frame with handles: its body starts with the handle prefix (the sender's pid
    /// and the values of private duplicates, which the receiver takes over).
    pub(crate) fn send_with_handles(
        &self,
        parts: &[&[u8]],
        handles: &[RawHandle],
    ) -> Result<(), IpcError> {
        let (prefix, values) = handle_prefix(handles)?;
        let mut all = Vec::with_capacity(parts.len() + 1);
        all.push(&prefix[..]);
        all.extend_from_slice(parts);
        let len: usize = all.iter().map(|p| p.len()).sum();
        self.send_ring(FrameHeader::new(len).with_handles(), &all, |_| Ok(()))
            .inspect_err(|_| unexport(&values))
    }

    /// The receive of every [`Channel`] method: the ring's, then the handle prefix of a
    /// frame that announces handles taken off its body.
    pub(crate) fn recv_until(
        &self,
        buf: &mut Vec<u8>,
        max_len: u64,
        deadline: Deadline,
    ) -> Result<Vec<OwnedHandle>, IpcError> {
        let (has_handles, _) = self.recv_ring(
            buf,
            max_len,
            HANDLE_PREFIX_MAX,
            deadline,
            |at, has_handles| self.frame_handles(at, has_handles, deadline),
        )?;
        if !has_handles {
            return Ok(Vec::new());
        }
        take_handle_prefix(buf, max_len)
    }

    /// [`Channel::recv_frame_split_until`]: the ring's split for a frame without handles;
    /// one with handles loses its handle prefix first, then is split.
    pub(crate) fn recv_split_until(
        &self,
        prefix: &mut Prefix,
        prefix_len: fn(u64) -> usize,
        buf: &mut Vec<u8>,
        max_len: u64,
        deadline: Deadline,
    ) -> Result<(usize, Vec<OwnedHandle>), IpcError> {
        let (has_handles, _, split) = self.recv_ring_split(
            buf,
            Some((prefix, prefix_len)),
            max_len,
            HANDLE_PREFIX_MAX,
            deadline,
            |at, has_handles| self.frame_handles(at, has_handles, deadline),
        )?;
        let handles = if has_handles {
            take_handle_prefix(buf, max_len)?
        } else {
            Vec::new()
        };
        let n = split.unwrap_or_else(|| split_off_prefix(buf, prefix, prefix_len));
        Ok((n, handles))
    }

    /// The handles carried beside the frame at ring position `at`: none on Windows, where
    /// they travel in the frame's body.
    pub(crate) fn frame_handles(
        &self,
        _at: u64,
        _has_handles: bool,
        _deadline: Deadline,
    ) -> Result<Vec<OwnedHandle>, IpcError> {
        Ok(Vec::new())
    }
}

impl Drop for ShmChannel {
    fn drop(&mut self) {
        self.abandon_partial();
        // Close the companion pipe first, then wake the peer: if this was the last handle on
        // this end, the peer finds the pipe broken when it looks.
        // SAFETY: `link` is never used again.
        unsafe { ManuallyDrop::drop(&mut self.link) };
        self.theirs.set();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blocked_reader_wakes_when_the_writer_drops() {
        let (a, b) = ShmChannel::pair(MIN_RING).unwrap();
        let t = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let start = Instant::now();
            let r = b.recv_frame(&mut buf, 10);
            (r, start.elapsed())
        });
        std::thread::sleep(Duration::from_millis(50));
        drop(a);
        let (r, took) = t.join().unwrap();
        assert!(matches!(r, Err(IpcError::Eof)), "{r:?}");
        assert!(took < Duration::from_secs(5));
    }

    #[test]
    fn the_event_is_set_by_a_frame_after_prepare_wait() {
        let (a, b) = ShmChannel::pair(MIN_RING).unwrap();
        assert!(!b.prepare_wait());
        assert!(!mp_windows::poll::is_signalled(b.wait_handle()).unwrap());
        a.send_frame(&[b"x"]).unwrap();
        assert!(mp_windows::poll::is_signalled(b.wait_handle()).unwrap());
        assert!(b.prepare_wait());
    }

    #[test]
    fn a_clone_and_rebuilt_ends_work() {
        let (a, b) = ShmChannel::pair(MIN_RING).unwrap();
        let owned: Vec<OwnedHandle> = b
            .handles()
            .iter()
            .map(|&h| mp_windows::handle::duplicate_local(h).unwrap())
            .collect();
        let b2 = ShmChannel::from_parts(owned, &b.describe()).unwrap();
        drop(b);
        let a2 = a.try_clone().unwrap();
        a2.send_frame(&[b"via clone"]).unwrap();
        let mut buf = Vec::new();
        b2.recv_frame(&mut buf, 100).unwrap();
        assert_eq!(buf, b"via clone");
        assert!(ShmChannel::from_parts(Vec::new(), &b2.describe()).is_err());
        drop(a);
        drop(a2);
        assert!(matches!(b2.recv_frame(&mut buf, 10), Err(IpcError::Eof)));
    }

    #[test]
    fn scribbled_positions_are_an_error() {
        let (a, b) = ShmChannel::pair(MIN_RING).unwrap();
        a.send_frame(&[b"abc"]).unwrap();
        a.hdr(0).w.0.pos.store(1 << 40, Ordering::Relaxed);
        let mut buf = Vec::new();
        let e = b.recv_frame(&mut buf, 100).unwrap_err();
        assert!(matches!(e, IpcError::Corrupt(_)), "{e:?}");
    }
}
