//! The worker process: runs the initializer, then chunks of tasks received on its own
//! connection, and sends each chunk's outcome back, until the parent closes the connection
//! or the worker has done its `maxtasksperchild`.
//!
//! Frames, parent to worker: `[FRAME_TASKS]` then one or more `[u32 len][chunk]`, a chunk
//! being `[u32 count][postcard FnId (tag, offset, type_name)][count postcard arguments]`.
//! Worker to parent: `[FRAME_RESULTS]` then one or more `[u32 len][outcome]`, an outcome
//! being `[0][u64 nanoseconds][count postcard Result<R, WireError>]` or
//! `[1][postcard WireError]` (the whole chunk failed); or `[FRAME_INIT_FAILED][postcard
//! WireError]`.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::entry::{self, Init, Task, WireError};
use crate::fn_id::{FnId, FnRef};
use crate::handles::{self, SharedHandles};
use crate::Connection;
use mp_ipc::handle::OwnedHandle;

pub(crate) const FRAME_TASKS: u8 = 1;
pub(crate) const FRAME_RESULTS: u8 = 2;
pub(crate) const FRAME_INIT_FAILED: u8 = 3;

pub(crate) const OUTCOME_OK: u8 = 0;
pub(crate) const OUTCOME_FAILED: u8 = 1;

/// A pool's initializer and its argument, encoded once and given to every worker it starts;
/// the handles of the shareable objects inside the argument travel beside it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct InitArg {
    pub(crate) entry: FnId<Init>,
    pub(crate) bytes: Vec<u8>,
    pub(crate) handles: SharedHandles,
}

/// What a worker process is started with.
#[derive(Serialize, Deserialize)]
pub(crate) struct WorkerArgs {
    pub(crate) conn: Connection<()>,
    pub(crate) init: Option<InitArg>,
    /// Chunks to run before exiting (`maxtasksperchild`).
    pub(crate) max_tasks: Option<u64>,
    /// How many chunks this worker has started: written before each chunk runs, read by
    /// the parent when the worker dies, so it knows which chunk was running even when
    /// results of short chunks travel in batches.
    pub(crate) progress: crate::RawValue<u64>,
}

/// Results of a batch are sent at once after a chunk that ran longer than this (and at the
/// end of the batch); shorter chunks' results are gathered into one message.
const FLUSH_AFTER: std::time::Duration = std::time::Duration::from_micros(200);
/// ... or once this many bytes of results are waiting.
const FLUSH_BYTES: usize = 256 * 1024;

/// Splits `[u32 len][bytes]` records.
pub(crate) fn records(mut bytes: &[u8]) -> impl Iterator<Item = Result<&[u8], ()>> {
    std::iter::from_fn(move || {
        if bytes.is_empty() {
            return None;
        }
        if bytes.len() < 4 {
            bytes = &[];
            return Some(Err(()));
        }
        let len = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
        if bytes.len() - 4 < len {
            bytes = &[];
            return Some(Err(()));
        }
        let (record, rest) = bytes[4..].split_at(len);
        bytes = rest;
        Some(Ok(record))
    })
}

/// Appends a `[u32 len][...]` record whose body `write` produces.
pub(crate) fn push_record(out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    write(out);
    let len = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
}

/// A worker's end of its link to the dispatcher.
pub(crate) trait WorkerEnd {
    /// The next frame and the OS handles sent beside it (the handles of the shareable
    /// objects in a lone chunk's arguments; none from a transport that cannot carry them);
    /// `None` once the dispatcher has closed the link (or is gone).
    fn recv(&self) -> Option<(Vec<u8>, Vec<OwnedHandle>)>;
    /// Sends a frame; `false` if the dispatcher is gone.
    fn send(&self, frame: &[u8]) -> bool;
}

impl WorkerEnd for Connection<()> {
    fn recv(&self) -> Option<(Vec<u8>, Vec<OwnedHandle>)> {
        self.raw().recv_bytes_with_handles().ok()
    }

    fn send(&self, frame: &[u8]) -> bool {
        self.send_bytes(frame).is_ok()
    }
}

/// The worker loop: the target of every pool worker process.
pub(crate) fn worker_main(args: WorkerArgs) {
    serve(&args.conn, args.init, args.max_tasks, Some(&args.progress));
}

/// Runs the initializer, then chunks from `conn` until it closes or `max_tasks` chunks
/// have run. `progress`, if given, counts the chunks started.
pub(crate) fn serve(
    conn: &impl WorkerEnd,
    init: Option<InitArg>,
    max_tasks: Option<u64>,
    progress: Option<&crate::RawValue<u64>>,
) {
    entry::install_task_panic_hook();
    if let Some(init) = init {
        // SAFETY: the id was made by `init_id` in our parent, same executable.
        let outcome = match unsafe { init.entry.resolve() } {
            Ok(f) => match init.handles.into_owned() {
                Ok(h) => handles::with_inbox(h, || f(init.entry.type_name(), &init.bytes)),
                Err(e) => Err(WireError::Decode(format!(
                    "cannot take the handles of the initializer argument: {e}"
                ))),
            },
            Err(e) => Err(WireError::Decode(e.to_string())),
        };
        if let Err(e) = outcome {
            let mut frame = vec![FRAME_INIT_FAILED];
            let _ = entry::encode_into(&e, &mut frame);
            conn.send(&frame);
            return;
        }
    }
    let mut done: u64 = 0;
    let mut out = vec![FRAME_RESULTS];
    loop {
        let Some((frame, mut handles)) = conn.recv() else {
            // The pool closed our connection (or the parent is gone): we are done.
            return;
        };
        if frame.first() != Some(&FRAME_TASKS) {
            continue;
        }
        let mut chunks = records(&frame[1..]).peekable();
        while let Some(chunk) = chunks.next() {
            if let Some(p) = progress {
                p.set(done + 1);
            }
            let start = Instant::now();
            // A frame with handles holds one chunk: its arguments take them by index.
            let chunk_handles = std::mem::take(&mut handles);
            handles::with_inbox(chunk_handles, || {
                push_record(&mut out, |out| run_chunk(chunk, out))
            });
            done += 1;
            let quota_done = max_tasks.is_some_and(|m| done >= m);
            if chunks.peek().is_none()
                || quota_done
                || start.elapsed() >= FLUSH_AFTER
                || out.len() >= FLUSH_BYTES
            {
                if !conn.send(&out) {
                    return;
                }
                out.clear();
                out.push(FRAME_RESULTS);
            }
            if quota_done {
                return;
            }
        }
        if out.capacity() > 1 << 20 {
            out = vec![FRAME_RESULTS];
        }
    }
}

/// Runs one chunk record, appending its outcome to `out`.
fn run_chunk(chunk: Result<&[u8], ()>, out: &mut Vec<u8>) {
    let start = Instant::now();
    let at = out.len();
    out.push(OUTCOME_OK);
    out.extend_from_slice(&[0; 8]);
    let result = run_chunk_items(chunk, out);
    match result {
        Ok(()) => {
            let nanos = start.elapsed().as_nanos() as u64;
            out[at + 1..at + 9].copy_from_slice(&nanos.to_le_bytes());
        }
        Err(e) => {
            out.truncate(at);
            out.push(OUTCOME_FAILED);
            let _ = entry::encode_into(&e, out);
        }
    }
}

fn run_chunk_items(chunk: Result<&[u8], ()>, out: &mut Vec<u8>) -> Result<(), WireError> {
    let corrupt = || WireError::Decode("corrupt task frame".into());
    let chunk = chunk.map_err(|()| corrupt())?;
    if chunk.len() < 4 {
        return Err(corrupt());
    }
    let count = u32::from_le_bytes(chunk[..4].try_into().unwrap());
    let (head, items) = FnRef::<Task>::take_from(&chunk[4..]).map_err(|_| corrupt())?;
    // SAFETY: the id was made by `task_id` in our parent, same executable; the kind is
    // checked here and the trampoline checks the type name before it touches anything else.
    let f = unsafe { head.resolve() }.map_err(|e| WireError::Decode(e.to_string()))?;
    f(head.type_name(), items, count, out)
}
