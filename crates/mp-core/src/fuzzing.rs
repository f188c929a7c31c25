//! Entry points for the fuzz targets of `fuzz/` (feature `fuzzing`; not an API). Each runs
//! one decoder of bytes that come from another process or the network on arbitrary input,
//! exactly as the library runs it, and reports what it concluded.

use std::io::{self, Read, Write};
use std::time::Duration;

use mp_ipc::deadline::Deadline;

use crate::listener::auth::{self, TimedStream};
use crate::manager::protocol::{
    BarrierOp, DictOp, EventOp, ListOp, LockOp, NsOp, QueueOp, Reply, Request, SemOp, ValueOp,
    WireBlob,
};
use crate::manager::server::decode_op;

/// The handshake's deadline (never reached: a scripted peer never makes it wait).
const TIMEOUT: Duration = Duration::from_secs(10);

/// A peer that sends `input` and then closes; what is written to it is kept.
struct Scripted<'a> {
    input: &'a [u8],
    written: Vec<u8>,
}

impl Read for Scripted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Scripted<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl TimedStream for Scripted<'_> {
    fn set_io_timeout(&self, _: Option<Duration>) -> io::Result<()> {
        Ok(())
    }
}

/// The outcome of one side of the handshake against a scripted peer.
#[derive(Debug)]
pub struct Handshake {
    /// Whether the peer was accepted as knowing the key.
    pub accepted: bool,
    /// The error, if it was not.
    pub error: Option<String>,
    /// Bytes this side wrote to the peer.
    pub written: usize,
}

fn handshake(
    input: &[u8],
    side: impl FnOnce(&mut Scripted<'_>) -> Result<(), crate::AuthenticationError>,
) -> Handshake {
    let mut s = Scripted {
        input,
        written: Vec::new(),
    };
    let r = side(&mut s);
    Handshake {
        accepted: r.is_ok(),
        error: r.err().map(|e| e.to_string()),
        written: s.written.len(),
    }
}

/// The listener's side of the handshake, with `input` as everything the client sends.
pub fn handshake_listener(input: &[u8], key: &[u8]) -> Handshake {
    handshake(input, |s| {
        auth::serve(s, key, Deadline::after(TIMEOUT), || {})
    })
}

/// The client's side of the handshake, with `input` as everything the listener sends.
pub fn handshake_client(input: &[u8], key: &[u8]) -> Handshake {
    handshake(input, |s| auth::answer(s, key, Deadline::after(TIMEOUT)))
}

/// Decodes `bytes` as a manager server decodes a request frame, then (for a call) its
/// operation as every built-in type's; returns whether the request decoded.
pub fn manager_request(bytes: &[u8]) -> bool {
    let Ok(req) = crate::codec::decode::<Request>(bytes) else {
        return false;
    };
    if let Request::Call { op, .. } = &req {
        let _ = decode_op::<DictOp>(op);
        let _ = decode_op::<ListOp>(op);
        let _ = decode_op::<NsOp>(op);
        let _ = decode_op::<ValueOp>(op);
        let _ = decode_op::<QueueOp>(op);
        let _ = decode_op::<LockOp>(op);
        let _ = decode_op::<EventOp>(op);
        let _ = decode_op::<SemOp>(op);
        let _ = decode_op::<BarrierOp>(op);
        let _ = decode_op::<crate::manager::pool::PoolOp>(op);
    }
    true
}

/// Decodes `bytes` as a manager client decodes a reply frame, then its payload as the
/// shapes replies take; returns whether the reply decoded.
pub fn manager_reply(bytes: &[u8]) -> bool {
    match crate::codec::decode::<Reply>(bytes) {
        Ok(Reply::Ok(v)) => {
            let _ = crate::manager::client::decode_reply::<WireBlob>(&v);
            let _ = crate::manager::client::decode_reply::<Vec<WireBlob>>(&v);
            let _ = crate::manager::client::decode_reply::<Option<WireBlob>>(&v);
            let _ = crate::manager::client::decode_reply::<Vec<(Vec<u8>, WireBlob)>>(&v);
            let _ = crate::manager::client::decode_reply::<(u64, String)>(&v);
            true
        }
        Ok(Reply::Err(_)) => true,
        Err(_) => false,
    }
}

/// What [`queue_repair`] saw.
#[derive(Debug, Default)]
pub struct QueueRepair {
    /// Items put.
    pub put: usize,
    /// Items taken that were intact items put, each once, in order.
    pub intact: usize,
    /// Frames taken that were not (only after damage).
    pub garbled: usize,
    /// Operations that ended in a typed error.
    pub errors: usize,
    /// Whether the input damaged the shared state (then only the absence of panics, hangs
    /// and bad memory accesses is checked).
    pub damaged: bool,
}

/// The queue engine over damage: a real queue (shared-memory header, ring, staging area
/// and spool file) runs the operations `input` picks: puts of items of every size (ring,
/// staging area, straight to the spool), gets, `qsize`, `task_done`, the repair the next
/// put-lock holder runs after a holder died, and writes of chosen values over chosen words
/// of the header, ring or staging area and chosen bytes of the spool, as a broken or hostile
/// process sharing the queue could (lock words excepted). Every wait has an immediate
/// deadline.
///
/// Panics (the fuzz target's failure) if, with no damage, a get returns anything but the
/// oldest item not yet taken, intact, or `qsize` is not the number of items left, or the
/// repair changes anything; with damage, any outcome is acceptable but a panic, a hang or
/// a bad memory access (or an allocation the spool does not back, which the fuzzer's
/// memory limit catches).
pub fn queue_repair(input: &[u8]) -> QueueRepair {
    use crate::queue::engine::{with_frame, Core};
    use std::collections::VecDeque;
    use std::time::Instant;

    let mut report = QueueRepair::default();
    let Some((&config, mut ops)) = input.split_first() else {
        return report;
    };
    let ring_cap = [0usize, 4096, 1 << 16, 1024][usize::from(config & 3)];
    let maxsize = u32::from(config >> 2 & 7) * 4;
    let Ok(core) = Core::new(maxsize, ring_cap) else {
        return report;
    };
    // Items not yet taken, oldest first: (id, length).
    let mut queued: VecDeque<(u32, usize)> = VecDeque::new();
    let mut next_id = 0u32;
    let item = |id: u32, len: usize| -> Vec<u8> {
        let mut v = id.to_le_bytes().to_vec();
        v.resize(len.max(4), (id as u8).wrapping_mul(37) ^ 0x5a);
        v
    };
    let take = |n: usize, ops: &mut &[u8]| -> Option<Vec<u8>> {
        let (a, b) = ops.split_at_checked(n)?;
        *ops = b;
        Some(a.to_vec())
    };
    let mut steps = 0;
    while let Some(op) = take(1, &mut ops) {
        steps += 1;
        if steps > 64 {
            break;
        }
        let now = Some(Instant::now());
        match op[0] % 8 {
            // A put: small (ring), medium (ring or staging area), large (past the staging
            // area, straight to the spool).
            0 | 1 => {
                let Some(sz) = take(2, &mut ops) else { break };
                let sz = usize::from(u16::from_le_bytes([sz[0], sz[1]]));
                let len = match op[0] >> 6 {
                    0 => sz % 64,
                    1 => sz % 3000,
                    2 => sz % 20_000,
                    _ => 64 << 10 | sz,
                };
                let id = next_id;
                next_id += 1;
                let joinable = op[0] % 8 == 1;
                let r = with_frame(&item(id, len), |f| core.put(f, now, joinable));
                match r {
                    Ok(Ok(())) => {
                        report.put += 1;
                        queued.push_back((id, len.max(4)));
                    }
                    _ => report.errors += 1,
                }
            }
            2 => {
                let got = core.get(now, |b| postcard::from_bytes::<Vec<u8>>(b).ok());
                match got {
                    Ok(Some(v)) => {
                        let front = queued.front().copied();
                        let ok = front.is_some_and(|(id, len)| v == item(id, len));
                        if ok {
                            queued.pop_front();
                            report.intact += 1;
                        } else {
                            assert!(
                                report.damaged,
                                "a get returned {} bytes that are not the oldest item {front:?}",
                                v.len()
                            );
                            report.garbled += 1;
                        }
                    }
                    Ok(None) => {
                        assert!(
                            report.damaged,
                            "a get returned a frame that does not decode"
                        );
                        report.garbled += 1;
                    }
                    Err(e) => {
                        assert!(
                            report.damaged || queued.is_empty(),
                            "a get failed with {} items queued: {e}",
                            queued.len()
                        );
                        report.errors += 1;
                    }
                }
            }
            3 => {
                let n = core.qsize();
                assert!(
                    report.damaged || n == queued.len(),
                    "qsize {n}, {} queued",
                    queued.len()
                );
            }
            4 => {
                if core.task_done().is_err() {
                    report.errors += 1;
                }
            }
            5 => {
                let before = core.qsize();
                match core.repair_as_after_death(now) {
                    Ok(true) => assert!(
                        report.damaged || core.qsize() == before,
                        "the repair of an intact queue changed its size"
                    ),
                    Ok(false) => assert!(report.damaged, "the put lock of an idle queue was held"),
                    Err(_) => {
                        assert!(report.damaged, "the repair of an intact queue failed");
                        report.errors += 1;
                    }
                }
            }
            // A word of the header segment.
            6 => {
                let Some(b) = take(10, &mut ops) else { break };
                let at = usize::from(u16::from_le_bytes([b[0], b[1]])) * 8 % core.segment_len();
                if Core::is_lock_word(at & !7) {
                    continue;
                }
                let value = u64::from_le_bytes(b[2..10].try_into().expect("8 bytes"));
                core.scribble_segment(at, value);
                report.damaged = true;
            }
            // Bytes of the spool, near or past its tail.
            _ => {
                let Some(b) = take(3, &mut ops) else { break };
                let tail = core.spool_tail().min(1 << 24);
                let at = u64::from(u16::from_le_bytes([b[0], b[1]])) % (tail + 256);
                let n = usize::from(b[2] % 16);
                let Some(bytes) = take(n, &mut ops) else {
                    break;
                };
                if core.scribble_spool(at, &bytes).is_ok() {
                    report.damaged = true;
                }
            }
        }
    }
    // What is left comes out intact, oldest first (or, after damage, whatever it is, in a
    // bounded number of steps).
    for _ in 0..queued.len() + 4 {
        let got = core.get(Some(Instant::now()), |b| {
            postcard::from_bytes::<Vec<u8>>(b).ok()
        });
        match got {
            Ok(v) if !report.damaged => {
                let (id, len) = queued.pop_front().expect("a get found more than was put");
                assert_eq!(v, Some(item(id, len)), "not the oldest item");
                report.intact += 1;
            }
            Ok(_) => report.garbled += 1,
            Err(e) => {
                assert!(report.damaged || queued.is_empty(), "{e} with items left");
                break;
            }
        }
    }
    assert!(report.damaged || (queued.is_empty() && core.qsize() == 0));
    report
}
