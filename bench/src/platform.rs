//! The price of the portable POSIX code paths: the same three waits between two processes
//! in a build with mp-core's `posix-generic` feature (polling wait, shm_open segments,
//! temporary-file spool) and in a normal one (futex, memfd). The implementation name is
//! `posix-generic` or `native` accordingly; `cargo xtask bench-platform` runs both builds and
//! puts them side by side.
//!
//! - `platform.lock_handoff`: two `Lock`s used as binary semaphores (Python's `Lock` may be
//!   released by anyone): the parent releases one, the child acquires it and releases the
//!   other, which the parent acquires. Lock waits do not spin, so every hand-off is a sleep
//!   and a wake-up in the kernel (or a poll). Per hand-off, half a round trip.
//! - `platform.event_pingpong`: `sync.event_pingpong` (set, wait, clear, both ways).
//! - `platform.queue_rtt`: `queue.rtt` (put, echoed back on another queue, spool queues).

use std::time::{Duration, Instant};

use mp_core::{Lock, Process};

const ROUNDS: u32 = 2000;

/// The implementation this build measures.
fn flavour() -> &'static str {
    if cfg!(feature = "posix-generic") {
        "posix-generic"
    } else {
        "native"
    }
}

fn lock_partner(arg: (Lock, Lock, u32)) {
    let (go, back, rounds) = arg;
    for _ in 0..rounds {
        go.acquire().unwrap().leak();
        back.release().unwrap();
    }
}

fn lock_handoff(reps: usize) -> Vec<f64> {
    (0..reps)
        .map(|_| {
            let (go, back) = (Lock::new().unwrap(), Lock::new().unwrap());
            go.acquire().unwrap().leak();
            back.acquire().unwrap().leak();
            let mut p = Process::new(lock_partner, (go.clone(), back.clone(), ROUNDS));
            p.start().unwrap();
            // The first round includes the child's start.
            go.release().unwrap();
            back.acquire().unwrap().leak();
            let t = Instant::now();
            for _ in 1..ROUNDS {
                go.release().unwrap();
                back.acquire().unwrap().leak();
            }
            let per = t.elapsed().as_secs_f64() / f64::from(2 * (ROUNDS - 1));
            p.join_timeout(Duration::from_secs(60)).unwrap();
            per
        })
        .collect()
}

/// Runs the platform benchmarks with `reps` repetitions.
pub fn run(reps: usize) {
    let imp = flavour();
    crate::emit(
        "platform.lock_handoff",
        imp,
        "s",
        "Lock released by one process, acquired by the other, per hand-off",
        &lock_handoff(reps),
    );
    crate::emit(
        "platform.event_pingpong",
        imp,
        "s",
        "two Events, set/wait/clear round trip with a child process",
        &crate::sync::event_ping_pong(reps),
    );
    crate::emit(
        "platform.queue_rtt",
        imp,
        "s",
        "put on one queue, echoed back on another by a child process (spool queues)",
        &crate::queues::round_trips(reps),
    );
}
