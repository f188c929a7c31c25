//! A tour of mp: start processes under each start method, talk to them over typed pipes,
//! wait on several at once, and see how failures come back. Prints what it does.
//!
//! Run with `cargo run --release --example tour`.

use std::time::{Duration, Instant};

use mp_core::{
    active_children, cpu_count, current_process, get_all_start_methods, get_context,
    parent_process, pipe, pipe_oneway, wait, Connection, Process, ProcessError, Writer,
};
use serde::{Deserialize, Serialize};

/// What a worker sends back.
#[derive(Debug, Serialize, Deserialize)]
struct Greeting {
    from: String,
    pid: u32,
    parent: u32,
    text: String,
}

/// Answers each name it receives with a greeting, until the parent hangs up.
fn greeter(conn: Connection<Greeting>) {
    let me = current_process();
    let parent = parent_process().expect("a child has a parent").pid;
    while let Ok(question) = conn.recv() {
        let text = format!("hello, {}", question.text);
        conn.send(&Greeting {
            from: me.name.clone(),
            pid: me.pid,
            parent,
            text,
        })
        .unwrap();
    }
}

/// Sums the squares of a range and reports the total.
fn sum_squares(arg: (u64, u64, Writer<u64>)) {
    let (from, to, out) = arg;
    out.send(&(from..to).map(|x| x * x).sum()).unwrap();
}

/// Fails on purpose.
fn doomed(reason: String) {
    panic!("{reason}");
}

fn sleeper(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

fn main() -> anyhow::Result<()> {
    mp_core::main();
    let me = current_process();
    println!(
        "mp tour: {} (pid {}), {} CPUs, start methods {:?}",
        me.name,
        me.pid,
        cpu_count(),
        get_all_start_methods()
    );

    println!("\n1. A conversation with a child, under each start method");
    for method in get_all_start_methods() {
        let ctx = get_context(method)?;
        let started = Instant::now();
        let (here, there) = pipe::<Greeting>()?;
        let mut child = ctx.process(greeter, there);
        child.start()?;
        for name in ["ada", "grace"] {
            here.send(&Greeting {
                from: me.name.clone(),
                pid: me.pid,
                parent: 0,
                text: name.into(),
            })?;
            let g = here.recv_timeout(Duration::from_secs(10))?;
            println!(
                "   [{:>10}] {} (pid {}, parent {}) says {:?}",
                method.name(),
                g.from,
                g.pid,
                g.parent,
                g.text
            );
        }
        drop(here); // the child sees end-of-file and returns
        child.join()?;
        println!(
            "   [{:>10}] exit code {:?}, whole conversation {:?}",
            method.name(),
            child.exitcode(),
            started.elapsed()
        );
    }

    println!("\n2. Fan out work and wait for whichever answers first");
    let n = 4u64;
    let chunk = 1_000_000 / n;
    let mut readers = Vec::new();
    let mut workers = Vec::new();
    for i in 0..n {
        let (rx, tx) = pipe_oneway::<u64>()?;
        let mut p = Process::new(sum_squares, (i * chunk, (i + 1) * chunk, tx));
        p.start()?;
        readers.push(rx);
        workers.push(p);
    }
    let running = active_children();
    println!(
        "   {} workers still running: {:?}",
        running.len(),
        running.iter().map(|c| &c.name).collect::<Vec<_>>()
    );
    let mut total = 0u64;
    let mut pending: Vec<usize> = (0..readers.len()).collect();
    while !pending.is_empty() {
        let objects: Vec<&dyn mp_core::Waitable> = pending
            .iter()
            .map(|&i| &readers[i] as &dyn mp_core::Waitable)
            .collect();
        let ready = wait(&objects, Some(Duration::from_secs(10)))?;
        for &k in ready.iter().rev() {
            let i = pending.remove(k);
            let part = readers[i].recv()?;
            println!("   worker {i} answered {part}");
            total += part;
        }
    }
    for w in &workers {
        w.join()?;
    }
    println!(
        "   sum of squares below 1e6 = {total} (expected {})",
        (0..1_000_000u64).map(|x| x * x).sum::<u64>()
    );

    println!("\n3. Failures come back as errors");
    let mut p = Process::new(doomed, "the answer was not 42".to_string());
    p.start()?;
    match p.join() {
        Err(ProcessError::Panicked { panic, exitcode }) => {
            let frames = panic
                .backtrace
                .lines()
                .filter(|l| l.contains("doomed"))
                .count();
            println!("   child panicked at {}: {:?} (exit code {exitcode}, backtrace has {frames} frame(s) in `doomed`)", panic.location, panic.message);
        }
        other => println!("   unexpected: {other:?}"),
    }
    let mut p = Process::new(sleeper, 60_000);
    p.start()?;
    let s = p.sentinel()?;
    println!(
        "   sentinel ready before terminate: {}",
        !wait(&[&s], Some(Duration::ZERO))?.is_empty()
    );
    p.terminate()?;
    let r = p.join_timeout(Duration::from_secs(5));
    println!(
        "   after terminate: join -> {r:?}, exitcode {:?}",
        p.exitcode()
    );
    println!(
        "\nDone: {} children still running.",
        active_children().len()
    );
    Ok(())
}
