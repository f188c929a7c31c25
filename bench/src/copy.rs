//! Honest references for large copies (Unix): a memcpy between buffers that are not in the
//! cache, and a copy made by another process on another CPU, measured in the same run as the
//! shm pipe's 1 MiB one-way throughput. A memcpy into a reused, cache-resident buffer (the
//! old reference) is kept for context: no cross-process copy can reach it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use mp_core::{Process, SharedMemory};

use crate::emit;

const MIB: usize = 1 << 20;
/// Messages per sample.
const COUNT: usize = 256;
/// Buffers the cold memcpy rotates through: 2 × 96 MiB, far beyond any last-level cache.
const COLD_BUFFERS: usize = 96;

fn rate(bytes: usize, t: Instant) -> f64 {
    bytes as f64 / t.elapsed().as_secs_f64()
}

/// Two 1 MiB slots after a page of two flags (`FULL` slot i when set).
struct Slots<'a> {
    flags: [&'a AtomicU64; 2],
    data: *mut u8,
}

fn slots(shm: &SharedMemory) -> Slots<'_> {
    // SAFETY: only a pointer is taken; accesses below follow the flags' protocol.
    let base = unsafe { shm.as_mut_slice() }.as_mut_ptr();
    // SAFETY: the segment has a page of flags then 2 MiB; AtomicU64 is valid for any bytes
    // and the page start is aligned.
    unsafe {
        Slots {
            flags: [
                &*(base as *const AtomicU64),
                &*(base.add(64) as *const AtomicU64),
            ],
            data: base.add(4096),
        }
    }
}

/// Child: copies a private 1 MiB message into each free slot in turn, `n` times.
fn producer(arg: (String, u64)) {
    let (name, n) = arg;
    let shm = SharedMemory::open(&name).unwrap();
    let s = slots(&shm);
    let msg = vec![0x5au8; MIB];
    for i in 0..n as usize {
        let k = i % 2;
        while s.flags[k].load(Ordering::Acquire) != 0 {
            std::thread::yield_now();
        }
        // SAFETY: the slot is ours until we publish it (its flag is clear).
        unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr(), s.data.add(k * MIB), MIB) };
        s.flags[k].store(1, Ordering::Release);
    }
}

/// Runs the copy references with `reps` repetitions.
pub fn run(reps: usize) {
    let src = vec![0x5au8; MIB];
    let mut dst = vec![0u8; MIB];
    let mut hot = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        for _ in 0..COUNT {
            dst.copy_from_slice(std::hint::black_box(&src));
            std::hint::black_box(&mut dst);
        }
        hot.push(rate(COUNT * MIB, t));
    }
    emit(
        "copy.1MiB",
        "memcpy_hot",
        "B/s",
        "in-process memcpy of 1 MiB into a reused buffer: both in the cache (not reachable across processes)",
        &hot,
    );

    let srcs: Vec<Vec<u8>> = (0..COLD_BUFFERS).map(|i| vec![i as u8; MIB]).collect();
    let mut dsts: Vec<Vec<u8>> = (0..COLD_BUFFERS).map(|_| vec![1u8; MIB]).collect();
    // The three alternate, one sample each per repetition, so all see the same machine.
    let (mut cold, mut xproc, mut shm_pipe) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..reps {
        let t = Instant::now();
        for i in 0..COUNT {
            let k = (i * 37) % COLD_BUFFERS;
            dsts[k].copy_from_slice(std::hint::black_box(&srcs[k]));
            std::hint::black_box(&mut dsts[k]);
        }
        cold.push(rate(COUNT * MIB, t));
        xproc.push(cross_process(&mut dst));
        if let Some(r) = shm_pipe_rate(&mut dst) {
            shm_pipe.push(r);
        }
    }
    emit(
        "copy.1MiB",
        "memcpy_cold",
        "B/s",
        "in-process memcpy of 1 MiB between buffers not in the cache (rotating over 2 x 96 MiB)",
        &cold,
    );

    emit(
        "copy.1MiB",
        "xproc",
        "B/s",
        "a child copies each 1 MiB message into one of two shared slots, the parent copies it out (two processes, two CPUs, two copies pipelined, no framing): the ideal shm pipe",
        &xproc,
    );
    if !shm_pipe.is_empty() {
        emit(
            "copy.1MiB",
            "mp_shm",
            "B/s",
            "mp's shm pipe: a child send_bytes 1 MiB messages, the parent recv_bytes_into a reused buffer",
            &shm_pipe,
        );
    }
}

/// One sample of the cross-process reference.
fn cross_process(dst: &mut [u8]) -> f64 {
    let shm = SharedMemory::create(4096 + 2 * MIB).unwrap();
    let mut p = Process::new(producer, (shm.name().to_string(), COUNT as u64 + 8));
    p.start().unwrap();
    let s = slots(&shm);
    let mut take = |i: usize| {
        let k = i % 2;
        while s.flags[k].load(Ordering::Acquire) == 0 {
            std::thread::yield_now();
        }
        // SAFETY: the producer published the slot and does not touch it until cleared.
        unsafe { std::ptr::copy_nonoverlapping(s.data.add(k * MIB), dst.as_mut_ptr(), MIB) };
        s.flags[k].store(0, Ordering::Release);
    };
    for i in 0..8 {
        take(i);
    }
    let t = Instant::now();
    for i in 8..COUNT + 8 {
        take(i);
    }
    let r = rate(COUNT * MIB, t);
    p.join().unwrap();
    let _ = shm.unlink();
    r
}

#[cfg(feature = "shm")]
fn send_mib(arg: (mp_core::Writer<()>, usize)) {
    let msg = vec![0x5au8; MIB];
    for _ in 0..arg.1 {
        if arg.0.send_bytes(&msg).is_err() {
            return;
        }
    }
}

/// One sample of mp's shm pipe, 1 MiB messages one way (with the `shm` feature).
fn shm_pipe_rate(dst: &mut [u8]) -> Option<f64> {
    #[cfg(feature = "shm")]
    {
        use mp_core::connection::{pipe_oneway_with, Shm};
        let (rx, tx) = pipe_oneway_with::<(), Shm>().unwrap();
        let mut p = Process::new(send_mib, (tx, COUNT + 8));
        p.start().unwrap();
        for _ in 0..8 {
            rx.recv_bytes_into(dst).unwrap();
        }
        let t = Instant::now();
        for _ in 0..COUNT {
            rx.recv_bytes_into(dst).unwrap();
        }
        let r = rate(COUNT * MIB, t);
        p.join().unwrap();
        Some(r)
    }
    #[cfg(not(feature = "shm"))]
    {
        let _ = dst;
        None
    }
}
