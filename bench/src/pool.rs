//! Pool benchmarks: start-up, map throughput (default chunking and chunksize 1), the
//! apply_async round trip, and the speed-up of a CPU-bound map on 2 workers over a serial
//! loop. Same JSON lines as the rest of mp-bench; the Python twin is `python/bench_pool.py`.

use std::num::NonZeroUsize;
use std::time::Instant;

use mp_core::Pool;

fn emit(bench: &str, unit: &str, note: &str, samples: &[f64]) {
    crate::emit(bench, "mp", unit, note, samples);
}

fn square(x: u64) -> u64 {
    x * x
}

/// A CPU-bound task: the same integer loop as the Python twin.
fn spin(n: u64) -> u64 {
    let mut acc = 0u64;
    for i in 0..n {
        acc = std::hint::black_box((acc * 31 + i) % 1_000_003);
    }
    acc
}

/// Runs the pool benchmarks with `reps` repetitions.
pub fn run(reps: usize) {
    let workers = 2;
    let mut starts = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        let pool = Pool::new(workers).unwrap();
        pool.apply(square, 1).unwrap();
        starts.push(t.elapsed().as_secs_f64());
    }
    emit(
        "pool.start",
        "s",
        "Pool(2) created and first apply answered",
        &starts,
    );

    let pool = Pool::new(workers).unwrap();
    pool.map(square, 0..1000).unwrap();
    let mut rates = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        let v = pool.map(square, 0..100_000).unwrap();
        rates.push(v.len() as f64 / t.elapsed().as_secs_f64());
    }
    emit(
        "pool.map100k",
        "items/s",
        "map of x*x over 100k ints, default chunking, 2 workers",
        &rates,
    );

    let one = NonZeroUsize::new(1).unwrap();
    let mut rates = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        let v = pool.chunksize(one).map(square, 0..20_000).unwrap();
        rates.push(v.len() as f64 / t.elapsed().as_secs_f64());
    }
    emit(
        "pool.map20k.chunk1",
        "items/s",
        "map of x*x over 20k ints, chunksize 1, 2 workers",
        &rates,
    );

    let batch = 1000;
    let mut rtts = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        for i in 0..batch {
            pool.apply_async(square, i).unwrap().get().unwrap();
        }
        rtts.push(t.elapsed().as_secs_f64() / batch as f64);
    }
    emit(
        "pool.apply_async",
        "s",
        "apply_async(x*x).get() round trip, mean of 1000",
        &rtts,
    );

    // Python's loop runs 2M iterations in ~0.2 s; Rust's is far faster, so each task does
    // more iterations to keep a comparable duration (the ratio is what is compared).
    let tasks = vec![200_000_000u64; 8];
    let mut ratios = Vec::new();
    for _ in 0..reps.div_ceil(2) {
        let t = Instant::now();
        let serial: Vec<u64> = tasks.iter().map(|n| spin(*n)).collect();
        let ts = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let par = pool.chunksize(one).map(spin, tasks.clone()).unwrap();
        let tp = t.elapsed().as_secs_f64();
        assert_eq!(par, serial);
        ratios.push(ts / tp);
    }
    emit(
        "pool.cpu_speedup",
        "ratio",
        "serial time / pool.map time, 8 CPU-bound tasks on 2 workers",
        &ratios,
    );
}
