//! Shared-memory benchmarks, one JSON line per measurement:
//! `{"name":..., "unit":..., "median":..., "p10":..., "p90":...}`.
//!
//! - write and read bandwidth of a 64 MiB `SharedMemory` segment against an in-process
//!   `memcpy` of the same size, in the same run;
//! - two processes incrementing a locked `Value<u64>` (the final count is checked).
//!
//! Run: `cargo run --release -p mp-core --example bench_shared`.

use std::time::Instant;

use mp_core::{Process, SharedMemory, Value};

const SIZE: usize = 64 << 20;
const ROUNDS: usize = 15;
const INCREMENTS: u64 = 1_000_000;

fn report(name: &str, unit: &str, mut samples: Vec<f64>) {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    println!(
        "{{\"name\":\"{name}\",\"unit\":\"{unit}\",\"median\":{:.3},\"p10\":{:.3},\"p90\":{:.3}}}",
        at(0.5),
        at(0.1),
        at(0.9)
    );
}

fn gbps(mut f: impl FnMut()) -> Vec<f64> {
    f(); // warm-up: fault the pages in
    (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            f();
            SIZE as f64 / t.elapsed().as_secs_f64() / 1e9
        })
        .collect()
}

fn increment(v: Value<u64>) {
    for _ in 0..INCREMENTS {
        *v.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    }
}

fn main() {
    mp_core::main();
    let src = vec![0x5au8; SIZE];
    let mut dst = vec![0u8; SIZE];
    let memcpy = gbps(|| {
        let d = std::hint::black_box(dst.as_mut_ptr());
        // SAFETY: two distinct buffers of SIZE bytes.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), d, SIZE) };
    });
    report("memcpy_64MiB", "GB/s", memcpy);

    let shm = SharedMemory::create(SIZE).unwrap();
    let write = gbps(|| {
        // SAFETY: nobody else uses the segment during the benchmark.
        unsafe { shm.as_mut_slice() }.copy_from_slice(std::hint::black_box(&src));
    });
    report("shm_write_64MiB", "GB/s", write);
    let read = gbps(|| {
        // SAFETY: as above.
        dst.copy_from_slice(unsafe { shm.as_slice() });
        std::hint::black_box(&dst);
    });
    report("shm_read_64MiB", "GB/s", read);
    shm.unlink().unwrap();

    let mut rates = Vec::new();
    for _ in 0..3 {
        let v = Value::new(0u64).unwrap();
        let t = Instant::now();
        let mut ps: Vec<_> = (0..2).map(|_| Process::new(increment, v.clone())).collect();
        for p in &mut ps {
            p.start().unwrap();
        }
        for p in &ps {
            p.join().unwrap();
        }
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(v.get(), 2 * INCREMENTS, "lost increments");
        rates.push((2 * INCREMENTS) as f64 / secs);
    }
    report("value_lock_increment_2proc", "ops/s", rates);
}
