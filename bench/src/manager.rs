//! Manager benchmarks: the latency of a proxy dict set+get, and the throughput of a manager
//! serving 8 client processes at once. Same JSON lines as the rest of mp-bench.

use std::time::Instant;

use mp_core::manager::{BarrierProxy, DictProxy, Manager};
use mp_core::Process;

fn emit(bench: &str, unit: &str, note: &str, samples: &[f64]) {
    crate::emit(bench, "mp", unit, note, samples);
}

const CLIENTS: usize = 8;
const OPS_PER_CLIENT: u64 = 2_000;

fn client(arg: (DictProxy<u64, u64>, BarrierProxy, u64)) {
    let (d, start, me) = arg;
    start.wait(None).unwrap();
    for i in 0..OPS_PER_CLIENT {
        let k = me * 1_000_000 + i;
        d.set(&k, &i).unwrap();
        assert_eq!(d.get(&k).unwrap(), Some(i));
    }
    start.wait(None).unwrap();
}

/// Runs the manager benchmarks with `reps` repetitions.
pub fn run(reps: usize) {
    let m = Manager::start().unwrap();
    let d: DictProxy<u64, u64> = m.dict().unwrap();
    for i in 0..500 {
        d.set(&i, &i).unwrap();
        d.get(&i).unwrap();
    }
    let batch = 2_000u64;
    let mut lat = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        for i in 0..batch {
            d.set(&(i % 100), &i).unwrap();
            d.get(&(i % 100)).unwrap();
        }
        lat.push(t.elapsed().as_secs_f64() / batch as f64);
    }
    emit(
        "mgr.dict_setget",
        "s",
        "d[k] = v then d[k] through a manager dict proxy (local socket)",
        &lat,
    );

    let mut rates = Vec::new();
    for _ in 0..reps {
        let d: DictProxy<u64, u64> = m.dict().unwrap();
        let start = m.barrier(CLIENTS + 1).unwrap();
        let kids: Vec<Process> = (0..CLIENTS as u64)
            .map(|me| {
                let mut p = Process::new(client, (d.clone(), start.clone(), me));
                p.start().unwrap();
                p
            })
            .collect();
        start.wait(None).unwrap();
        let t = Instant::now();
        start.wait(None).unwrap();
        let took = t.elapsed().as_secs_f64();
        for p in kids {
            p.join().unwrap();
        }
        rates.push((CLIENTS as u64 * OPS_PER_CLIENT * 2) as f64 / took);
    }
    emit(
        "mgr.clients8",
        "ops/s",
        "8 client processes each doing 2000 set+get pairs on one manager dict",
        &rates,
    );
}
