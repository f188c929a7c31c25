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
