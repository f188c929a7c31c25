//! A manager on one "host" and workers on another, as in the remote-manager example of
//! Python's `multiprocessing` documentation; here both hosts are processes on loopback.
//!
//! ```text
//! cargo run -p mp-core --example remote_manager                 # the whole demo
//! cargo run -p mp-core --example remote_manager -- server 127.0.0.1:50000 KEY
//! cargo run -p mp-core --example remote_manager -- worker 127.0.0.1:50000 KEY
//! ```
//!
//! The server publishes a job queue and a result queue under names; a worker that knows
//! only the address, the key and the names connects over TCP, takes jobs and puts results.
//! Over a real network, bind `0.0.0.0` and tunnel the traffic (it is authenticated, not
//! encrypted).

use std::process::Command;
use std::time::Duration;

use mp_core::listener::Address;
use mp_core::manager::{Builtins, Manager, QueueProxy, QueueProxyError};

type Job = Option<u64>;
type Answer = (u64, u64, u32);

fn worker(address: &Address, key: &[u8]) -> anyhow::Result<()> {
    let m = Manager::connect(address, key)?;
    let jobs: QueueProxy<Job> = m.lookup("jobs")?.expect("the server published its queues");
    let results: QueueProxy<Answer> = m.lookup("results")?.expect("published");
    let mut done = 0;
    while let Some(n) = jobs.get()? {
        results.put(&(n, n * n, std::process::id()))?;
        done += 1;
    }
    println!("worker {}: {done} jobs", std::process::id());
    Ok(())
}

fn main() -> anyhow::Result<()> {
    mp_core::main();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("worker") => {
            let address: Address = args[1].parse()?;
            return worker(&address, args[2].as_bytes());
        }
        Some("server") => {
            // A standalone server: serves until a client shuts it down.
            let address: Address = args[1].parse()?;
            let mut m = Manager::builder::<Builtins>()
                .address(address)
                .authkey(args[2].as_bytes())
                .start()?;
            publish_queues(&m)?;
            println!("serving on {}", m.address());
            m.process().expect("started here").join()?;
            m.shutdown()?;
            return Ok(());
        }
        _ => {}
    }

    // The demo: host A runs the manager, host B runs two workers that know only the
    // address and the key.
    let key = "a shared secret";
    let m = Manager::builder::<Builtins>()
        .address("127.0.0.1:0".parse()?)
        .authkey(key.as_bytes())
        .start()?;
    let (jobs, results) = publish_queues(&m)?;
    println!("manager on {}", m.address());
    let exe = std::env::current_exe()?;
    let workers: Vec<_> = (0..2)
        .map(|_| {
            Command::new(&exe)
                .args(["worker", &m.address().to_string(), key])
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    let n = 20;
    for i in 0..n {
        jobs.put(&Some(i))?;
    }
    for _ in &workers {
        jobs.put(&None)?;
    }
    let mut answers = Vec::new();
    for _ in 0..n {
        match results.get_timeout(Duration::from_secs(30)) {
            Ok(a) => answers.push(a),
            Err(QueueProxyError::Empty) => anyhow::bail!("workers stopped answering"),
            Err(e) => return Err(e.into()),
        }
    }
    for mut w in workers {
        anyhow::ensure!(w.wait()?.success(), "a worker failed");
    }
    answers.sort_unstable();
    for (n, sq, pid) in &answers {
        println!("{n}^2 = {sq} (worker {pid})");
    }
    assert!(answers.iter().all(|(n, sq, _)| n * n == *sq));
    Ok(())
}

fn publish_queues(m: &Manager) -> anyhow::Result<(QueueProxy<Job>, QueueProxy<Answer>)> {
    let jobs: QueueProxy<Job> = m.queue(0)?;
    let results: QueueProxy<Answer> = m.queue(0)?;
    m.publish("jobs", &jobs)?;
    m.publish("results", &results)?;
    Ok((jobs, results))
}
