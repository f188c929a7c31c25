//! Shared-memory backend benchmarks (needs mp-core's `shm` feature): pipe round-trip
//! latency with and without the adaptive spin, small-item queue throughput, and 1 MiB
//! one-way throughput beside an in-process `memcpy` of the same size measured in the same
//! run. Same JSON lines as the rest of mp-bench.

use std::time::{Duration, Instant};

use mp_core::connection::{pipe_oneway_with, pipe_with, Shm};
use mp_core::{Connection, Process, Writer};

fn emit_as(bench: &str, imp: &str, unit: &str, note: &str, samples: &[f64]) {
    crate::emit(bench, imp, unit, note, samples);
}

fn emit(bench: &str, unit: &str, note: &str, samples: &[f64]) {
    crate::emit(bench, "mp", unit, note, samples);
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn echo(conn: Connection<()>) {
    let mut buf = [0u8; 64];
    while let Ok(n) = conn.recv_bytes_into(&mut buf) {
        if conn.send_bytes(&buf[..n]).is_err() {
            return;
        }
    }
}

/// Median round trip of 8-byte messages, one sample per batch of `per_batch`.
fn rtt(reps: usize, spin: Option<Duration>) -> Vec<f64> {
    let old = mp_core::connection::shm_spin_limit();
    let old_socket = mp_core::connection::socket_spin_limit();
    if let Some(s) = spin {
        // The shm rings' spin, and the spin of the companion socket's poll under it.
        mp_core::connection::set_shm_spin_limit(s);
        mp_core::connection::set_socket_spin_limit(s);
        // The child reads its limits from the environment at its first wait.
        std::env::set_var("MP_SHM_SPIN_US", s.as_micros().to_string());
        std::env::set_var("MP_SPIN_US", s.as_micros().to_string());
    }
    let (here, there) = pipe_with::<(), Shm>().unwrap();
    let mut p = Process::new(echo, there);
    p.start().unwrap();
    let msg = [7u8; 8];
    let mut buf = [0u8; 64];
    for _ in 0..2_000 {
        here.send_bytes(&msg).unwrap();
        here.recv_bytes_into(&mut buf).unwrap();
    }
    let per_batch = 2_000;
    let mut samples = Vec::new();
    let mut one = Vec::with_capacity(per_batch);
    for _ in 0..reps {
        one.clear();
        for _ in 0..per_batch {
            let t = Instant::now();
            here.send_bytes(&msg).unwrap();
            here.recv_bytes_into(&mut buf).unwrap();
            one.push(t.elapsed().as_secs_f64());
        }
        samples.push(median(&mut one));
    }
    drop(here);
    p.join().unwrap();
    std::env::remove_var("MP_SHM_SPIN_US");
    std::env::remove_var("MP_SPIN_US");
    mp_core::connection::set_shm_spin_limit(old);
    mp_core::connection::set_socket_spin_limit(old_socket);
    samples
}

fn send_mib(arg: (Writer<()>, usize)) {
    let msg = vec![0x5Au8; 1 << 20];
    for _ in 0..arg.1 {
        arg.0.send_bytes(&msg).unwrap();
    }
}

/// Runs the shm benchmarks with `reps` repetitions.
pub fn run(reps: usize) {
    let reps = reps.max(1);
    emit(
        "shm.rtt8",
        "s",
        "8-byte send_bytes/recv_bytes_into round trip over an shm pipe, echo child; median of 2000 per sample",
        &rtt(reps, None),
    );
    emit(
        "shm.rtt8.nospin",
        "s",
        "as shm.rtt8 with every spin disabled (the rings' and the companion socket's): every wait sleeps",
        &rtt(reps, Some(Duration::ZERO)),
    );

    emit(
        "shm.queue.small",
        "items/s",
        "1M u64 items put by a child process into an shm Queue, got by the parent (child start included)",
        &crate::queues::producer_rates::<Shm>(1_000_000, reps),
    );

    let count = 500usize;
    let mib = 1usize << 20;
    let mut rates = Vec::new();
    let mut dst = vec![0u8; mib];
    for _ in 0..reps {
        let (rx, tx) = pipe_oneway_with::<(), Shm>().unwrap();
        let mut p = Process::new(send_mib, (tx, count + 20));
        p.start().unwrap();
        for _ in 0..20 {
            rx.recv_bytes_into(&mut dst).unwrap();
        }
        let t = Instant::now();
        for _ in 0..count {
            assert_eq!(rx.recv_bytes_into(&mut dst).unwrap(), mib);
        }
        rates.push((count * mib) as f64 / t.elapsed().as_secs_f64());
        p.join().unwrap();
    }
    emit(
        "shm.1mib",
        "B/s",
        "1 MiB messages one way from a child over an shm pipe, recv_bytes_into a reused buffer",
        &rates,
    );
    let src = vec![0x5Au8; mib];
    let mut rates = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        for i in 0..count {
            // The source goes through black_box: the compiler knows its bytes and would
            // otherwise turn the copy into a memset (measured: ~170 GB/s, not a copy).
            dst.copy_from_slice(std::hint::black_box(&src));
            std::hint::black_box(&mut dst);
            std::hint::black_box(i);
        }
        rates.push((count * mib) as f64 / t.elapsed().as_secs_f64());
    }
    emit_as(
        "shm.1mib",
        "memcpy",
        "B/s",
        "in-process memcpy of 1 MiB into a reused buffer, same run (reference)",
        &rates,
    );
}
