//! Queue benchmarks (the socket backend's spool queue, whatever the default backend): small-item throughput from a producer process, and round trips through
//! two queues between two processes. Same JSON lines as the rest of mp-bench.

use std::time::Instant;

use mp_core::connection::{Socket, Transport};
use mp_core::{Process, Queue};

fn emit(bench: &str, unit: &str, note: &str, samples: &[f64]) {
    crate::emit(bench, "mp", unit, note, samples);
}

fn producer(arg: (Queue<u64>, u64)) {
    for i in 0..arg.1 {
        arg.0.put(i).unwrap();
    }
}

fn echo(arg: (Queue<u64>, Queue<u64>)) {
    while let Ok(v) = arg.0.get() {
        if v == u64::MAX {
            return;
        }
        arg.1.put(v).unwrap();
    }
}

/// Items per second of `n` items put by a child process into a queue over transport `T` and
/// got by the parent (child start included), once per repetition.
pub(crate) fn producer_rates<T: Transport>(n: u64, reps: usize) -> Vec<f64> {
    let mut rates = Vec::new();
    for _ in 0..reps {
        let q = Queue::<u64>::with_transport::<T>(0).unwrap();
        let t = Instant::now();
        let mut p = Process::new(producer, (q.clone(), n));
        p.start().unwrap();
        for _ in 0..n {
            q.get().unwrap();
        }
        rates.push(n as f64 / t.elapsed().as_secs_f64());
        p.join().unwrap();
    }
    rates
}

/// Runs the queue benchmarks with `reps` repetitions.
pub fn run(reps: usize) {
    emit(
        "queue.small",
        "items/s",
        "100k u64 items put by a child process, got by the parent",
        &producer_rates::<Socket>(100_000, reps),
    );

    let rtts = round_trips(reps);
    emit(
        "queue.rtt",
        "s",
        "put on one queue, echoed back on another by a child process",
        &rtts,
    );
}

/// Round trips through two spool queues between this process and a child: the mean time
/// of one put + echoed get, per repetition.
pub(crate) fn round_trips(reps: usize) -> Vec<f64> {
    let (there, back) = (
        Queue::<u64>::with_transport::<Socket>(0).unwrap(),
        Queue::<u64>::with_transport::<Socket>(0).unwrap(),
    );
    let mut p = Process::new(echo, (there.clone(), back.clone()));
    p.start().unwrap();
    let batch = 2_000;
    for i in 0..200 {
        there.put(i).unwrap();
        back.get().unwrap();
    }
    let mut rtts = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        for i in 0..batch {
            there.put(i).unwrap();
            back.get().unwrap();
        }
        rtts.push(t.elapsed().as_secs_f64() / batch as f64);
    }
    there.put(u64::MAX).unwrap();
    p.join().unwrap();
    rtts
}
