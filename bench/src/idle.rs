//! Idle costs (Linux, from `/proc`): the CPU used over a window by an idle pool (the parent's
//! threads and the workers), by a child blocked in `recv`, and by a manager with no clients,
//! all idle at the same time; and the memory (RSS) of a spawned child waiting in `recv`.
//! The Python twin is `python/bench_idle.py`.

use std::time::{Duration, Instant};

use mp_core::connection::{pipe_with, Socket};
use mp_core::manager::Manager;
use mp_core::{Connection, Pool, Process};

use crate::emit;

/// Clock ticks of user + system time of `pid` (all its threads), from `/proc/<pid>/stat`.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit(')').next()?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3, utime 14, stime 15 (1-based in proc(5)).
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).max(1) as f64
}

/// Resident memory of `pid` in MiB (`VmRSS`).
fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Blocks in `recv` until the parent closes its end.
fn wait_in_recv(conn: Connection<()>) {
    let _ = conn.recv_bytes();
}

/// The window: 10 s (`--quick`: 2 s).
fn window() -> Duration {
    if std::env::args().any(|a| a == "--quick") {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(10)
    }
}

/// Measures the three idle costs once (one sample each), and the RSS of the waiting child.
pub fn run(_reps: usize) {
    let pool = Pool::new(2).unwrap();
    pool.apply(|x: u64| x + 1, 1).unwrap();
    let (here, there) = pipe_with::<(), Socket>().unwrap();
    let mut child = Process::new(wait_in_recv, there);
    child.start().unwrap();
    let mut manager = Manager::start().unwrap();
    let server = manager.process().and_then(|p| p.pid());
    // Let start-up settle (the child reaches its recv, the workers their first wait).
    std::thread::sleep(Duration::from_millis(500));

    let me = std::process::id();
    let workers = pool.worker_pids();
    let child_pid = child.pid().unwrap();
    let pool_ticks = || -> Option<u64> {
        let mut t = cpu_ticks(me)?;
        for w in &workers {
            t += cpu_ticks(*w)?;
        }
        Some(t)
    };
    let before = (
        pool_ticks(),
        cpu_ticks(child_pid),
        server.and_then(cpu_ticks),
    );
    let t = Instant::now();
    std::thread::sleep(window());
    let secs = t.elapsed().as_secs_f64();
    let after = (
        pool_ticks(),
        cpu_ticks(child_pid),
        server.and_then(cpu_ticks),
    );
    let hz = ticks_per_second();
    let share = |a: Option<u64>, b: Option<u64>| -> Option<f64> {
        Some((b?.saturating_sub(a?)) as f64 / hz / secs)
    };
    let note = format!(
        "share of one CPU used over {:.0} s (user + system time from /proc; tick = {:.0} ms)",
        secs,
        1000.0 / hz
    );
    if let Some(s) = share(before.0, after.0) {
        emit(
            "idle.pool",
            "mp",
            "cpu",
            &format!("an idle Pool(2): the parent (all its threads) and both workers; {note}"),
            &[s],
        );
    }
    if let Some(s) = share(before.1, after.1) {
        emit(
            "idle.recv",
            "mp",
            "cpu",
            &format!("a spawned child blocked in recv; {note}"),
            &[s],
        );
    }
    if let Some(s) = share(before.2, after.2) {
        emit(
            "idle.manager",
            "mp",
            "cpu",
            &format!("a manager server with no clients; {note}"),
            &[s],
        );
    }
    if let Some(rss) = rss_mib(child_pid) {
        emit(
            "footprint.recv_child",
            "mp",
            "MiB",
            "resident memory (VmRSS) of a spawned child waiting in recv",
            &[rss],
        );
    }
    drop(here);
    child.join().unwrap();
    let _ = manager.shutdown();
    drop(pool);
}
