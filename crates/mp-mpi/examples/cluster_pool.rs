//! The same program on one machine and on many: a pool whose workers are MPI ranks.
//!
//! ```text
//! cargo run -p mp-mpi --example cluster_pool            # alone: spawns 3 worker ranks
//! mpirun -n 4 target/debug/examples/cluster_pool        # ranks 1..3 are the workers
//! ```
//!
//! Rank 0 runs `main`; every other rank serves as a worker before `main` would run.

use mp_core::pool::{MpiWorkers, Pool};

/// Counts the primes below `n`, the slow way: something worth sending to another host.
fn primes_below(n: u64) -> u64 {
    (2..n)
        .filter(|k| (2..*k).take_while(|d| d * d <= *k).all(|d| k % d != 0))
        .count() as u64
}

/// Where a task ran.
fn where_am_i(_: ()) -> String {
    format!(
        "pid {} on {}",
        std::process::id(),
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_default()
            .trim()
    )
}

fn main() {
    let workers = std::env::var("WORKERS").ok().and_then(|v| v.parse().ok());
    let mut builder = Pool::builder().mpi(MpiWorkers::Auto);
    if let Some(n) = workers {
        builder = builder.processes(n);
    } else if !mp_mpi::launched_by_mpi() {
        builder = builder.processes(3);
    }
    let pool = builder.build().expect("an MPI pool");
    println!("{} workers", pool.processes());

    let counts = pool.map(primes_below, (1..=8).map(|k| k * 20_000)).unwrap();
    println!("primes below 20k, 40k, ... 160k: {counts:?}");

    let places = pool
        .chunksize(std::num::NonZeroUsize::MIN)
        .map(where_am_i, vec![(); 8])
        .unwrap();
    for p in places {
        println!("  a task ran in {p}");
    }
    pool.close();
    pool.join().unwrap();
}
