//! Entry points for the fuzz targets of `fuzz/` (feature `fuzzing`; not an API). They run
//! the ring protocol exactly as a [`ShmChannel`](crate::ShmChannel) runs it, over an
//! in-process segment on the heap whose bytes the fuzzer chooses.

use std::sync::atomic::Ordering;
use std::time::Duration;

use mp_ipc::deadline::Deadline;
use mp_ipc::frame::{Prefix, PREFIX_MAX};
use mp_ipc::IpcError;

use crate::heap::HeapEnd;
use crate::ring::{total_len, RingEnd, MIN_RING};

/// How long each receive may wait: every outcome comes well within it.
const RECV_WAIT: Duration = Duration::from_millis(2);

/// What [`shm_ring`] saw.
#[derive(Debug)]
pub struct RingOutcome {
    /// The receiver's limit on a frame's length.
    pub max_len: u64,
    /// Each receive's result: the frame's length, or the error.
    pub received: Vec<Result<usize, IpcError>>,
    /// A poll after the receives.
    pub polled: Result<bool, IpcError>,
    /// The concurrent send's result, if there was one.
    pub sent: Option<Result<(), IpcError>>,
}

impl RingOutcome {
    /// What breaks the rules, if anything: a frame over the limit, or an I/O error where no
    /// system call is made.
    pub fn problem(&self) -> Option<String> {
        for r in &self.received {
            match r {
                Ok(n) if *n as u64 > self.max_len => {
                    return Some(format!(
                        "a frame of {n} bytes over the limit {}",
                        self.max_len
                    ))
                }
                Err(IpcError::Io(e)) => return Some(format!("an I/O error without I/O: {e}")),
                _ => {}
            }
        }
        if let Err(IpcError::Io(e)) = &self.polled {
            return Some(format!("a poll's I/O error without I/O: {e}"));
        }
        if let Some(Err(IpcError::Io(e))) = &self.sent {
            return Some(format!("a send's I/O error without I/O: {e}"));
        }
        None
    }
}

/// Sets up a segment from `data`, then receives from it (and, if asked, sends into it)
/// with short deadlines. The input:
///
/// - byte 0, flags: bit 0, the reader is side 1 (else side 0); bit 1, the first receive
///   takes `recv_frame_into`'s fast path (only with bit 3: it has no deadline); bit 2, the
///   writer sends one more frame from a thread while the reader receives; bit 3, the
///   writer is dead before the reader looks; bits 4-5, receives after the first (0 to 3;
///   the second and fourth are split receives, with a prefix of 3 bytes);
///   bit 6, the segment's memory is gone (as when a peer shrinks it); bit 7, both locks
///   of the ring read name this process (before the patches).
/// - bytes 1-2: the reader's limit (little-endian).
/// - bytes 3-4: lengths of up to two valid frames the writer publishes first (in 16-byte
///   units; 0, or too long for the room left: none); byte 5, the length of the concurrent
///   frame (in 64-byte units).
/// - the rest, patches over the segment: offset (2 bytes, little-endian, modulo the
///   segment's length), count (1 byte), then that many bytes written there.
pub fn shm_ring(data: &[u8]) -> RingOutcome {
    let get = |i: usize| data.get(i).copied().unwrap_or(0);
    let flags = get(0);
    let max_len = u64::from(u16::from_le_bytes([get(1), get(2)]));
    let (a, b) = HeapEnd::pair(MIN_RING);
    let (reader, writer) = if flags & 1 != 0 { (b, a) } else { (a, b) };
    // Valid frames first, written by the real writer while they fit (never waits).
    let mut room = MIN_RING;
    for (i, units) in [get(3), get(4)].into_iter().enumerate() {
        let len = usize::from(units) * 16;
        if units == 0 || len + 8 > room {
            continue;
        }
        room -= len + 8;
        let body: Vec<u8> = (0..len).map(|j| (j + i) as u8).collect();
        if writer.send(&[&body]).is_err() {
            break;
        }
    }
    // A lock word naming this process is what a fuzzer cannot guess: on request, both
    // locks of the ring read name it (the patches may change them and their threads).
    if flags & 0x80 != 0 {
        let h = writer.hdr(1 - reader.side());
        for side in [&h.w.0, &h.r.0] {
            side.lock.store(std::process::id(), Ordering::Relaxed);
        }
    }
    // Then the peer's damage.
    let seg = writer.segment();
    let total = total_len(MIN_RING);
    let mut rest = data.get(6..).unwrap_or(&[]);
    while let [lo, hi, n, tail @ ..] = rest {
        let off = usize::from(u16::from_le_bytes([*lo, *hi])) % total;
        let n = usize::from(*n).min(tail.len()).min(total - off);
        // SAFETY: off + n <= total, the segment's length; no call is running on either end.
        unsafe { std::ptr::copy_nonoverlapping(tail.as_ptr(), seg.add(off), n) };
        rest = &tail[n..];
    }
    if flags & 8 != 0 {
        writer.kill();
    }
    if flags & 0x40 != 0 {
        writer.set_damaged();
    }
    let receives = 1 + usize::from((flags >> 4) & 3);
    let late = usize::from(get(5)) * 64;
    let mut received = Vec::new();
    let (sent, polled) = std::thread::scope(|s| {
        let sender = (flags & 4 != 0).then(|| {
            s.spawn(|| {
                let body = vec![0x5a; late];
                writer.send(&[&body])
            })
        });
        for i in 0..receives {
            let mut buf = Vec::new();
            // The fast path waits without a deadline: only once the writer is dead.
            let r = if i == 0 && flags & 2 != 0 && flags & 8 != 0 {
                let mut out = [0u8; 256];
                match reader.recv_into(&mut out, max_len) {
                    Ok(Some(n)) => Ok(n),
                    Ok(None) => reader
                        .recv(&mut buf, max_len, Deadline::after(RECV_WAIT))
                        .map(|()| buf.len()),
                    Err(e) => Err(e),
                }
            } else if i % 2 == 1 {
                let mut prefix: Prefix = [0; PREFIX_MAX];
                reader
                    .recv_split(
                        &mut prefix,
                        |_| 3,
                        &mut buf,
                        max_len,
                        Deadline::after(RECV_WAIT),
                    )
                    .map(|n| n + buf.len())
            } else {
                reader
                    .recv(&mut buf, max_len, Deadline::after(RECV_WAIT))
                    .map(|()| buf.len())
            };
            received.push(r);
        }
        let polled = reader.poll(Some(Duration::ZERO));
        // The reader goes: a sender still waiting for room sees it and stops.
        drop(reader);
        let sent = sender.map(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        (sent, polled)
    });
    RingOutcome {
        max_len,
        received,
        polled,
        sent,
    }
}

#[cfg(test)]
mod tests {
    //! The committed seeds of the fuzz target `shm_ring` (`fuzz/seeds/shm_ring`), run here
    //! too, so that `cargo xtask miri` runs them (filter `fuzzing::`).

    use mp_ipc::IpcError;

    use super::shm_ring;

    #[test]
    fn the_fuzz_seeds_run_clean() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/seeds/shm_ring");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let out = shm_ring(&std::fs::read(&path).unwrap());
            assert_eq!(out.problem(), None, "{name}");
            let first = &out.received[0];
            let ok = match name.as_str() {
                "two_frames" => matches!(out.received[..], [Ok(48), Ok(160)]),
                "streamed_while_sending" => matches!(first, Ok(12800) | Err(IpcError::Timeout)),
                "fast_path_writer_dead" => {
                    matches!(out.received[..], [Ok(32), Ok(64), Err(IpcError::Eof), _])
                }
                "write_pos_far_ahead"
                | "length_beyond_stored"
                | "lock_word_no_pid"
                | "broken_flag" => matches!(first, Err(IpcError::Corrupt(_))),
                "streamed_header_writer_dead" => {
                    matches!(first, Err(IpcError::Truncated { got: 64, .. }))
                }
                "lock_names_this_process_tx_parked" => {
                    matches!(out.sent, Some(Err(IpcError::BrokenPipe)))
                }
                "lock_names_this_process_rx_parked" => matches!(first, Err(IpcError::Eof)),
                _ => true,
            };
            assert!(ok, "{name}: {out:?}");
            seen += 1;
        }
        assert!(seen >= 10);
    }
}
