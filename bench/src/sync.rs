//! Synchronisation benchmarks: an uncontended `Lock` acquire + release in one process, an
//! `Event` ping-pong between two processes (one round trip per sample step), and a
//! `Barrier(2)` wait across two processes. Same JSON lines as the rest of mp-bench.

use std::time::{Duration, Instant};

use mp_core::{Barrier, Event, Lock, Process};

use crate::emit;

const ROUNDS: u32 = 2000;

fn lock_uncontended(reps: usize) -> Vec<f64> {
    let lock = Lock::new().unwrap();
    let n = 1_000_000;
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..n {
                drop(std::hint::black_box(lock.acquire().unwrap()));
            }
            t.elapsed().as_secs_f64() / n as f64
        })
        .collect()
}

fn ponger(arg: (Event, Event, u32)) {
    let (ping, pong, rounds) = arg;
    for _ in 0..rounds {
        ping.wait();
        ping.clear();
        pong.set();
    }
}

/// Event ping-pong with a child process: the mean round trip, per repetition.
pub(crate) fn event_ping_pong(reps: usize) -> Vec<f64> {
    (0..reps)
        .map(|_| {
            let (ping, pong) = (Event::new().unwrap(), Event::new().unwrap());
            let mut p = Process::new(ponger, (ping.clone(), pong.clone(), ROUNDS));
            p.start().unwrap();
            ping.set();
            pong.wait();
            pong.clear();
            let t = Instant::now();
            for _ in 1..ROUNDS {
                ping.set();
                pong.wait();
                pong.clear();
            }
            let per = t.elapsed().as_secs_f64() / f64::from(ROUNDS - 1);
            p.join_timeout(Duration::from_secs(30)).unwrap();
            per
        })
        .collect()
}

fn barrier_party(arg: (Barrier, u32)) {
    for _ in 0..arg.1 {
        arg.0.wait().unwrap();
    }
}

fn barrier_wait(reps: usize) -> Vec<f64> {
    (0..reps)
        .map(|_| {
            let barrier = Barrier::new(2).unwrap();
            let mut p = Process::new(barrier_party, (barrier.clone(), ROUNDS));
            p.start().unwrap();
            barrier.wait().unwrap();
            let t = Instant::now();
            for _ in 1..ROUNDS {
                barrier.wait().unwrap();
            }
            let per = t.elapsed().as_secs_f64() / f64::from(ROUNDS - 1);
            p.join_timeout(Duration::from_secs(30)).unwrap();
            per
        })
        .collect()
}

/// Runs the synchronisation benchmarks with `reps` repetitions.
pub fn run(reps: usize) {
    emit(
        "sync.lock_uncontended",
        "mp",
        "s",
        "Lock acquire + guard drop, one process, no contention",
        &lock_uncontended(reps),
    );
    emit(
        "sync.event_pingpong",
        "mp",
        "s",
        "two Events, set/wait/clear round trip with a child process",
        &event_ping_pong(reps),
    );
    emit(
        "sync.barrier2",
        "mp",
        "s",
        "Barrier(2).wait() with a child process, per wait",
        &barrier_wait(reps),
    );
}
