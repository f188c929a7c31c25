//! The scale-out benchmark's mp side (run by `cargo xtask bench-mpi`, and so by
//! `cargo xtask bench`): the pool and the executor on MPI world ranks, under
//! `mpirun -n N`, measured the same way as `bench/python/bench_mpi4py.py` measures
//! mpi4py's `MPIPoolExecutor`.
//!
//! Prints one `RESULT <metric> <value>` line per measurement:
//! - `map_s`: `map` of 100 000 trivial tasks, Python's default chunk size (seconds);
//! - `chunk1_per_s`: trivial tasks one per message (chunk size 1), tasks per second;
//! - `roundtrip_us`: `submit` then `result`, one at a time (microseconds);
//! - `speedup`: CPU-bound tasks (a fixed amount of arithmetic, about 20 ms of one CPU) over
//!   the workers, against the time of one such task here times their number;
//!   `local_speedup`: the same with a local process pool of as many workers (`--local`),
//!   the two pools taking turns; `speedup_vs_local`: the median of the ratios of each turn.
//!
//! `map_s` and the speed-ups are medians of several runs within the process (the machine
//! may be shared).

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use mp_core::pool::{MpiWorkers, Pool, ProcessPoolExecutor};

fn trivial(x: u64) -> u64 {
    x
}

/// A fixed amount of arithmetic: `n` steps of a linear congruential generator (the
/// optimizer cannot shorten it).
fn work(n: u64) -> u64 {
    let mut x = 0u64;
    for i in 0..n {
        x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i));
    }
    x
}

/// How long one task of the CPU-bound group should keep a CPU busy.
const TASK: Duration = Duration::from_millis(20);

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// The number of steps of [`work`] that takes about [`TASK`] here, and the time one task
/// of that size takes (the median of five, run one after the other).
fn calibrate() -> (u64, f64) {
    let mut n = 100_000u64;
    loop {
        let t = Instant::now();
        work(n);
        let e = t.elapsed();
        if e >= Duration::from_millis(2) {
            n = (n as f64 * TASK.as_secs_f64() / e.as_secs_f64()) as u64;
            break;
        }
        n *= 4;
    }
    let one = median(
        (0..5)
            .map(|_| {
                let t = Instant::now();
                work(n);
                t.elapsed().as_secs_f64()
            })
            .collect(),
    );
    (n, one)
}

/// The speed-up of 8 tasks per worker on `pool` against running them one after the other
/// (`one` seconds each), once.
fn speedup(pool: &Pool, workers: usize, (n, one): (u64, f64)) -> f64 {
    let tasks = 8 * workers;
    let t = Instant::now();
    let done = pool
        .chunksize(NonZeroUsize::MIN)
        .map(work, vec![n; tasks])
        .unwrap();
    assert_eq!(done.len(), tasks);
    tasks as f64 * one / t.elapsed().as_secs_f64()
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let local = std::env::args().any(|a| a == "--local");
    let pool = Pool::builder().mpi(MpiWorkers::World).build().unwrap();
    let workers = pool.processes();
    println!("RESULT workers {workers}");
    pool.map(trivial, 0..1000u64).unwrap();
    // The same CPU-bound work on a local pool of as many worker processes, run by run in
    // turn with the MPI pool, so that both see the same load.
    let local_pool = local.then(|| {
        let p = Pool::new(workers).unwrap();
        p.map(trivial, 0..100u64).unwrap();
        p
    });

    let runs = if quick { 3 } else { 5 };
    let n = 100_000u64;
    let chunk = (n as usize).div_ceil(4 * workers);
    let map_s = median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                let v = pool
                    .chunksize(NonZeroUsize::new(chunk).unwrap())
                    .map(trivial, 0..n)
                    .unwrap();
                assert_eq!(v.len() as u64, n);
                t.elapsed().as_secs_f64()
            })
            .collect(),
    );
    println!("RESULT map_s {map_s:.4}");

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

    let cal = calibrate();
    println!("RESULT task_ms {:.2}", cal.1 * 1e3);
    let (mut mpi, mut loc, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let s = speedup(&pool, workers, cal);
        mpi.push(s);
        if let Some(lp) = &local_pool {
            let l = speedup(lp, workers, cal);
            loc.push(l);
            ratio.push(s / l);
        }
    }
    println!("RESULT speedup {:.3}", median(mpi));
    if local_pool.is_some() {
        println!("RESULT local_speedup {:.3}", median(loc));
        println!("RESULT speedup_vs_local {:.3}", median(ratio));
    }
    drop(local_pool);
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
}
