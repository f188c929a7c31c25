//! Scaling curves: how costs grow with N = 1, 4, 16, 64, 256 on this machine: start + join
//! of N processes, `wait` over N connections with one ready, a queue fed by N producer
//! processes, and a pool of N workers mapping short tasks (with N = 2 too, the pool's
//! reference for oversubscription). Series are named `scale.<what>.<N>`; the Python twin is
//! `python/bench_scaling.py`.

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use mp_core::connection::{pipe_with, Socket};
use mp_core::{get_context, wait, Pool, Process, Queue, StartMethod, Waitable};

use crate::emit;

/// The N of the curves (`--quick`: the first three).
pub fn sizes() -> &'static [usize] {
    if std::env::args().any(|a| a == "--quick") {
        &[1, 4, 16]
    } else {
        &[1, 4, 16, 64, 256]
    }
}

fn noop(_: ()) {}

fn square(x: u64) -> u64 {
    x * x
}

fn produce(arg: (Queue<u64>, u64)) {
    for i in 0..arg.1 {
        arg.0.put(i).unwrap();
    }
}

/// Items of the queue and pool curves, whatever N.
const ITEMS: u64 = 20_000;

/// Runs the scaling curves with `reps` repetitions per point.
pub fn run(reps: usize) {
    let reps = reps.clamp(1, 5);
    for &n in sizes() {
        for (method, label) in [(StartMethod::Spawn, "mp"), (StartMethod::Fork, "mp_fork")] {
            let Ok(ctx) = get_context(method) else {
                continue;
            };
            let mut samples = Vec::new();
            for _ in 0..reps {
                let t = Instant::now();
                let mut ps: Vec<Process> = (0..n)
                    .map(|_| Process::new(noop, ()).with_context(ctx))
                    .collect();
                for p in &mut ps {
                    p.start().unwrap();
                }
                for p in &ps {
                    p.join().unwrap();
                }
                samples.push(t.elapsed().as_secs_f64());
            }
            emit(
                &format!("scale.start_join.{n}"),
                label,
                "s",
                &format!("start {n} processes ({method:?}), then join them all: total time"),
                &samples,
            );
        }

        // wait() over n connections, one of them ready.
        {
            let pairs: Vec<_> = (0..n).map(|_| pipe_with::<(), Socket>().unwrap()).collect();
            let ends: Vec<&dyn Waitable> = pairs.iter().map(|(_, b)| b as &dyn Waitable).collect();
            let rounds = 300;
            let mut samples = Vec::new();
            for _ in 0..reps {
                let t = Instant::now();
                for i in 0..rounds {
                    let k = (i * 7919) % n;
                    pairs[k].0.send_bytes(b"x").unwrap();
                    let ready = wait(&ends, Some(Duration::from_secs(10))).unwrap();
                    assert_eq!(ready, vec![k]);
                    pairs[k].1.recv_bytes().unwrap();
                }
                samples.push(t.elapsed().as_secs_f64() / rounds as f64);
            }
            emit(
                &format!("scale.wait.{n}"),
                "mp",
                "s",
                &format!(
                    "send on one of {n} pipes, wait() over all {n} receiving ends, recv: per round"
                ),
                &samples,
            );
        }

        // A queue fed by n producer processes (start included).
        {
            let mut samples = Vec::new();
            for _ in 0..reps {
                let q = Queue::<u64>::new().unwrap();
                let each = ITEMS / n as u64;
                let t = Instant::now();
                let mut ps: Vec<Process> = (0..n)
                    .map(|_| Process::new(produce, (q.clone(), each)))
                    .collect();
                for p in &mut ps {
                    p.start().unwrap();
                }
                for _ in 0..each * n as u64 {
                    q.get().unwrap();
                }
                samples.push((each * n as u64) as f64 / t.elapsed().as_secs_f64());
                for p in &ps {
                    p.join().unwrap();
                }
            }
            emit(
                &format!("scale.queue.{n}"),
                "mp",
                "items/s",
                &format!("{ITEMS} u64 items put by {n} producer processes, got by the parent (starts included)"),
                &samples,
            );
        }
    }

    // Pools of n workers, n = 2 included (the oversubscription reference).
    let one = NonZeroUsize::new(1).unwrap();
    let mut pool_sizes: Vec<usize> = sizes().to_vec();
    pool_sizes.insert(1, 2);
    for n in pool_sizes {
        let pool = Pool::new(n).unwrap();
        pool.map(square, 0..(2 * n as u64)).unwrap();
        let mut samples = Vec::new();
        for _ in 0..reps {
            let t = Instant::now();
            let v = pool.chunksize(one).map(square, 0..ITEMS).unwrap();
            samples.push(v.len() as f64 / t.elapsed().as_secs_f64());
        }
        drop(pool);
        emit(
            &format!("scale.pool.{n}"),
            "mp",
            "items/s",
            &format!("Pool({n}).map(x*x) over {ITEMS} items, chunksize 1, on this machine's CPUs"),
            &samples,
        );
    }
}
