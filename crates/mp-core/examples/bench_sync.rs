//! Micro-benchmarks of the synchronisation primitives, printed as JSON lines
//! `{"name", "unit", "median", "p10", "p90"}` (the Python twin is `bench/python/bench_sync.py`).
//!
//! Run with `cargo run --release -p mp-core --example bench_sync`.

use std::time::{Duration, Instant};

use mp_core::{Barrier, Event, Lock, Process};

const SAMPLES: usize = 21;

fn emit(name: &str, unit: &str, mut samples: Vec<f64>) {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    println!(
        "{{\"name\": \"{name}\", \"unit\": \"{unit}\", \"median\": {:.3}, \"p10\": {:.3}, \"p90\": {:.3}}}",
        at(0.5),
        at(0.1),
        at(0.9)
    );
}

fn lock_uncontended() -> Vec<f64> {
    let lock = Lock::new().unwrap();
    let n = 1_000_000;
    (0..SAMPLES)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..n {
                drop(std::hint::black_box(lock.acquire().unwrap()));
            }
            t.elapsed().as_nanos() as f64 / n as f64
        })
        .collect()
}

const ROUNDS: u32 = 2000;

fn ponger(arg: (Event, Event, u32)) {
    let (ping, pong, rounds) = arg;
    for _ in 0..rounds {
        ping.wait();
        ping.clear();
        pong.set();
    }
}

fn event_ping_pong() -> Vec<f64> {
    (0..SAMPLES)
        .map(|_| {
            let (ping, pong) = (Event::new().unwrap(), Event::new().unwrap());
            let mut p = Process::new(ponger, (ping.clone(), pong.clone(), ROUNDS));
            p.start().unwrap();
            // One warm-up round so that process start-up is not measured.
            ping.set();
            pong.wait();
            pong.clear();
            let t = Instant::now();
            for _ in 1..ROUNDS {
                ping.set();
                pong.wait();
                pong.clear();
            }
            let us = t.elapsed().as_secs_f64() * 1e6 / f64::from(ROUNDS - 1);
            p.join_timeout(Duration::from_secs(30)).unwrap();
            us
        })
        .collect()
}

fn barrier_party(arg: (Barrier, u32)) {
    for _ in 0..arg.1 {
        arg.0.wait().unwrap();
    }
}

fn barrier_wait() -> Vec<f64> {
    (0..SAMPLES)
        .map(|_| {
            let barrier = Barrier::new(2).unwrap();
            let mut p = Process::new(barrier_party, (barrier.clone(), ROUNDS));
            p.start().unwrap();
            barrier.wait().unwrap();
            let t = Instant::now();
            for _ in 1..ROUNDS {
                barrier.wait().unwrap();
            }
            let us = t.elapsed().as_secs_f64() * 1e6 / f64::from(ROUNDS - 1);
            p.join_timeout(Duration::from_secs(30)).unwrap();
            us
        })
        .collect()
}

fn main() {
    mp_core::main();
    emit("lock_uncontended", "ns/op", lock_uncontended());
    emit("event_ping_pong", "us/roundtrip", event_ping_pong());
    emit("barrier2_wait", "us/wait", barrier_wait());
}
