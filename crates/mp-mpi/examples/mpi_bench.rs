//! The scale-out benchmark's mp side (run by `cargo xtask bench-mpi`, and so by
//! `cargo xtask bench`): the pool and the executor on MPI world ranks, under
//! `mpirun -n N`, measured the same way as `bench/python/bench_mpi4py.py` measures
//! mpi4py's `MPIPoolExecutor`.
//!
//! Prints one `RESULT <metric> <value>` line per measurement:
//! - `map_s`: `map` of 100 000 trivial tasks, Python's default chunk size (seconds);
//! - `chunk1_per_s`: trivial tasks one per message (chunk size 1), tasks per second;
//! - `roundtrip_us`: `submit` then `result`, one at a time (microseconds);
//! - `speedup`: CPU-bound tasks (each spins 20 ms) over the workers, against doing them one
//!   after the other; `local_speedup`: the same with a local process pool of as many
//!   workers (`--local`).

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use mp_core::pool::{MpiWorkers, Pool, ProcessPoolExecutor};

fn trivial(x: u64) -> u64 {
    x
}

/// Keeps a CPU busy for `ms` milliseconds.
fn spin(ms: u64) -> u64 {
    let end = Instant::now() + Duration::from_millis(ms);
    let mut n = 0u64;
    while Instant::now() < end {
        n = n.wrapping_add(1);
    }
    std::hint::black_box(n);
    ms
}

const SPIN_MS: u64 = 20;

fn speedup(pool: &Pool, workers: usize) -> f64 {
    let tasks = 8 * workers as u64;
    let t = Instant::now();
    let done = pool
        .chunksize(NonZeroUsize::MIN)
        .map(spin, vec![SPIN_MS; tasks as usize])
        .unwrap();
    assert_eq!(done.len() as u64, tasks);
    (tasks * SPIN_MS) as f64 / 1000.0 / t.elapsed().as_secs_f64()
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let local = std::env::args().any(|a| a == "--local");
    let pool = Pool::builder().mpi(MpiWorkers::World).build().unwrap();
    let workers = pool.processes();
    println!("RESULT workers {workers}");
    pool.map(trivial, 0..1000u64).unwrap();

    let n = 100_000u64;
    let chunk = (n as usize).div_ceil(4 * workers);
    let t = Instant::now();
    let v = pool
        .chunksize(NonZeroUsize::new(chunk).unwrap())
        .map(trivial, 0..n)
        .unwrap();
    assert_eq!(v.len() as u64, n);
    println!("RESULT map_s {:.4}", t.elapsed().as_secs_f64());

    let n1 = if quick { 5_000u64 } else { 20_000 };
    let t = Instant::now();
    let v = pool
        .chunksize(NonZeroUsize::MIN)
        .map(trivial, 0..n1)
        .unwrap();
    assert_eq!(v.len() as u64, n1);
    println!(
        "RESULT chunk1_per_s {:.0}",
        n1 as f64 / t.elapsed().as_secs_f64()
    );

    println!("RESULT speedup {:.3}", speedup(&pool, workers));
    drop(pool);

    let ex = ProcessPoolExecutor::builder()
        .mpi(MpiWorkers::World)
        .build()
        .unwrap();
    let trips = if quick { 300u32 } else { 2000 };
    for i in 0..50 {
        ex.submit(trivial, i).unwrap().result().unwrap();
    }
    let t = Instant::now();
    for i in 0..trips {
        ex.submit(trivial, u64::from(i)).unwrap().result().unwrap();
    }
    println!(
        "RESULT roundtrip_us {:.1}",
        t.elapsed().as_secs_f64() * 1e6 / f64::from(trips)
    );
    ex.shutdown(true, false);

    if local {
        // The same CPU-bound work on a local pool of as many worker processes.
        let pool = Pool::new(workers).unwrap();
        pool.map(trivial, 0..100u64).unwrap();
        println!("RESULT local_speedup {:.3}", speedup(&pool, workers));
    }
}
