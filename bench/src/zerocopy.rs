//! Large arrays between processes: a 64 MiB buffer to a child and back through
//! [`SharedVec`] (a handle travels; the child reads in place), next to the copy path
//! (`send_bytes` / `recv_bytes_into` of the same 64 MiB) measured in the same run. The Python
//! twin (`python/bench_zerocopy.py`) measures Python's everyday path (the array pickled
//! through a `Pipe`), its hand-made path (a `SharedMemory` whose name is sent) and pickle
//! protocol 5 with out-of-band buffers over `shared_memory`.

use std::time::Instant;

use mp_core::connection::{pipe_with, Socket};
use mp_core::{Connection, Process, SharedVec};

use crate::emit;

const SIZE: usize = 64 << 20;

/// Receives buffers, reads their first and last byte in place, and sends each back.
fn echo_buffer(conn: Connection<SharedVec<u8>>) {
    while let Ok(v) = conn.recv() {
        let seen = std::hint::black_box(v.first().copied().unwrap_or(0))
            ^ std::hint::black_box(v.last().copied().unwrap_or(0));
        std::hint::black_box(seen);
        if conn.send(&v).is_err() {
            return;
        }
    }
}

/// Receives 64 MiB messages into one buffer and sends each back.
fn echo_bytes(conn: Connection<()>) {
    let mut buf = vec![0u8; SIZE];
    while let Ok(n) = conn.recv_bytes_into(&mut buf) {
        if conn.send_bytes(&buf[..n]).is_err() {
            return;
        }
    }
}

/// Runs the large-array benchmarks with `reps` repetitions.
pub fn run(reps: usize) {
    let per_sample = 20;
    // Zero-copy: the parent keeps its handle (and its mapping) across the round trips, as a
    // program handing the same array to a worker again and again would.
    {
        let mut v = SharedVec::<u8>::zeroed(SIZE).unwrap();
        v.get_mut().unwrap().fill(0x5a);
        let (here, there) = pipe_with::<SharedVec<u8>, Socket>().unwrap();
        let mut p = Process::new(echo_buffer, there);
        p.start().unwrap();
        for _ in 0..5 {
            here.send(&v).unwrap();
            drop(here.recv().unwrap());
        }
        let mut samples = Vec::new();
        for _ in 0..reps * 3 {
            let t = Instant::now();
            for _ in 0..per_sample {
                here.send(&v).unwrap();
                let back = here.recv().unwrap();
                debug_assert_eq!(back.len(), SIZE);
            }
            samples.push(t.elapsed().as_secs_f64() / per_sample as f64);
        }
        drop(here);
        p.join().unwrap();
        emit(
            "zc.64MiB",
            "mp",
            "s",
            "SharedVec<u8> of 64 MiB to a spawned child and back (the child reads its first and last byte in place); mean of 20 round trips",
            &samples,
        );
    }
    // The copy path: the same 64 MiB sent as bytes and echoed.
    {
        let src = vec![0x5au8; SIZE];
        let mut dst = vec![0u8; SIZE];
        let (here, there) = pipe_with::<(), Socket>().unwrap();
        let mut p = Process::new(echo_bytes, there);
        p.start().unwrap();
        here.send_bytes(&src).unwrap();
        here.recv_bytes_into(&mut dst).unwrap();
        let mut samples = Vec::new();
        for _ in 0..reps {
            let t = Instant::now();
            here.send_bytes(&src).unwrap();
            here.recv_bytes_into(&mut dst).unwrap();
            samples.push(t.elapsed().as_secs_f64());
        }
        drop(here);
        p.join().unwrap();
        emit(
            "zc.64MiB",
            "mp_copy",
            "s",
            "the copy path: 64 MiB send_bytes to a spawned child, echoed, recv_bytes_into a reused buffer (socket pipe)",
            &samples,
        );
    }
}
