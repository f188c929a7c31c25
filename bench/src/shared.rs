//! Shared-state benchmarks: 64 MiB shared-memory write and read bandwidth next to an
//! in-process memcpy of the same size in the same run, and two processes incrementing one
//! locked `Value<u64>` (the final count is checked). Same JSON lines as the rest of mp-bench.

use std::time::Instant;

use mp_core::{Process, SharedMemory, Value};

use crate::emit;

const SIZE: usize = 64 << 20;
const INCREMENTS: u64 = 500_000;

fn gbps(rounds: usize, mut f: impl FnMut()) -> Vec<f64> {
    f(); // warm-up: fault the pages in
    (0..rounds)
        .map(|_| {
            let t = Instant::now();
            f();
            SIZE as f64 / t.elapsed().as_secs_f64()
        })
        .collect()
}

/// Waits for `go`, then increments `v` under its lock.
fn increment(arg: (Value<u64>, Value<u64>)) {
    let (v, go) = arg;
    while go.get() == 0 {
        std::hint::spin_loop();
    }
    for _ in 0..INCREMENTS {
        *v.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    }
}

/// Runs the shared-state benchmarks with `reps` repetitions.
pub fn run(reps: usize) {
    let src = vec![0x5au8; SIZE];
    let mut dst = vec![0u8; SIZE];
    let memcpy = gbps(reps, || {
        let d = std::hint::black_box(dst.as_mut_ptr());
        // SAFETY: two distinct buffers of SIZE bytes.
        // Both pointers through black_box, so that the copy stays a copy (a source whose
        // bytes the compiler knows could become a memset).
        unsafe { std::ptr::copy_nonoverlapping(std::hint::black_box(src.as_ptr()), d, SIZE) };
    });
    emit(
        "shm.write64MiB",
        "memcpy",
        "B/s",
        "in-process copy between two 64 MiB buffers",
        &memcpy,
    );
    emit(
        "shm.read64MiB",
        "memcpy",
        "B/s",
        "in-process copy between two 64 MiB buffers",
        &memcpy,
    );

    let shm = SharedMemory::create(SIZE).unwrap();
    let write = gbps(reps, || {
        // SAFETY: nobody else uses the segment during the benchmark.
        unsafe { shm.as_mut_slice() }.copy_from_slice(std::hint::black_box(&src));
    });
    emit(
        "shm.write64MiB",
        "mp",
        "B/s",
        "copy 64 MiB into a SharedMemory segment",
        &write,
    );
    let read = gbps(reps, || {
        // SAFETY: as above.
        dst.copy_from_slice(unsafe { shm.as_slice() });
        std::hint::black_box(&dst);
    });
    emit(
        "shm.read64MiB",
        "mp",
        "B/s",
        "copy 64 MiB out of a SharedMemory segment",
        &read,
    );
    shm.unlink().unwrap();

    let mut rates = Vec::new();
    for _ in 0..reps.min(5) {
        let (v, go) = (Value::new(0u64).unwrap(), Value::new(0u64).unwrap());
        let mut ps: Vec<_> = (0..2)
            .map(|_| Process::new(increment, (v.clone(), go.clone())))
            .collect();
        for p in &mut ps {
            p.start().unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        let t = Instant::now();
        go.set(1);
        for p in &ps {
            p.join().unwrap();
        }
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(v.get(), 2 * INCREMENTS, "lost increments");
        rates.push((2 * INCREMENTS) as f64 / secs);
    }
    emit(
        "value.locked_incr",
        "mp",
        "ops/s",
        "two processes incrementing one locked Value<u64> at once (count checked)",
        &rates,
    );
}
