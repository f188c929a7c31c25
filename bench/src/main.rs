//! `mp-bench`: the Rust half of `cargo xtask bench`.
//!
//! Measures mp (process start + join, pipe round trips, one-way throughput) next to raw Unix
//! socket references written here, and prints one JSON object per line on stdout:
//!
//! ```text
//! {"bench":"rtt8.process","impl":"mp","unit":"s","note":"...","samples":[...]}
//! ```
//!
//! Every sample is one repetition (one start+join, the mean round trip of a batch, the
//! throughput of a batch); `xtask` turns the samples into median / p10 / p90. Progress goes to
//! stderr. `--quick` cuts the repetitions for a smoke run; `--only <group>` runs one group;
//! `--tag <suffix>` is appended to the benchmark names.
//!
//! Children are re-executions of this binary (spawn) or forks of it, so `mp_core::main()`
//! comes first in `main`.

#[cfg(unix)]
mod copy;
#[cfg(target_os = "linux")]
mod idle;
mod manager;
#[cfg(all(feature = "peers", unix))]
mod peers;
mod platform;
mod pool;
mod queues;
mod scaling;
mod shared;
#[cfg(feature = "shm")]
mod shm;
mod sync;
mod zerocopy;

/// Set in the environment of the bare re-exec measured beside spawn: the child exits first
/// thing, so what is measured is the cost of running this binary at all.
pub const BARE_EXIT: &str = "MP_BENCH_BARE_EXIT";

fn main() {
    if std::env::var_os(BARE_EXIT).is_some() {
        std::process::exit(0);
    }
    mp_core::main();
    if let Some(tag) = std::env::args().skip_while(|a| a != "--tag").nth(1) {
        TAG.set(tag).expect("set once");
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let reps = if quick { 3 } else { 7 };
    let only: Option<String> = std::env::args().skip_while(|a| a != "--only").nth(1);
    // The groups of the later areas, each in its own module.
    #[allow(unused_mut)] // pushed to only with the shm and peers features
    let mut areas: Vec<Area> = vec![
        ("queue", queues::run),
        ("sync", sync::run),
        ("shared", shared::run),
        ("pool", pool::run),
        ("manager", manager::run),
        ("zerocopy", zerocopy::run),
        ("scaling", scaling::run),
        #[cfg(target_os = "linux")]
        ("idle", idle::run),
        #[cfg(unix)]
        ("copy", copy::run),
        ("platform", platform::run),
    ];
    #[cfg(feature = "shm")]
    areas.push(("shm", shm::run));
    #[cfg(all(feature = "peers", unix))]
    areas.push(("peers", peers::run));
    match areas
        .iter()
        .find(|(name, _)| only.as_deref() == Some(*name))
    {
        Some((_, run)) => run(reps),
        None => {
            #[cfg(unix)]
            unix::run(only.is_none().then_some(&areas[..]));
            #[cfg(not(unix))]
            eprintln!(
                "mp-bench: the transport benchmarks use Unix sockets and fork; nothing to do here"
            );
        }
    }
}

/// A group of benchmarks of one area: its name and its runner (taking the repetitions).
pub type Area = (&'static str, fn(usize));

/// `--tag <suffix>`: appended to every benchmark name (e.g. `.cpu0` when xtask runs this
/// pinned to one CPU).
static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Prints one series as a JSON line (stdout) and a progress line (stderr).
pub fn emit(bench: &str, imp: &str, unit: &str, note: &str, samples: &[f64]) {
    let bench = format!("{bench}{}", TAG.get().map_or("", |t| t.as_str()));
    let list: Vec<String> = samples.iter().map(|s| format!("{s:e}")).collect();
    println!(
        "{{\"bench\":\"{bench}\",\"impl\":\"{imp}\",\"unit\":\"{unit}\",\"note\":\"{note}\",\"samples\":[{}]}}",
        list.join(",")
    );
    eprintln!("  {bench:<16} {imp:<8} {} samples", samples.len());
}

#[cfg(unix)]
mod unix {
    use std::io::{Read, Write};
    use std::net::Shutdown;
    use std::os::unix::net::UnixStream;
    use std::time::{Duration, Instant};

    use mp_core::connection::{pipe_with, Socket};
    use mp_core::{get_context, Connection, Process, StartMethod};

    use crate::emit;

    /// Repetition counts; `--quick` divides them.
    struct Plan {
        quick: bool,
    }

    impl Plan {
        fn n(&self, full: usize) -> usize {
            if self.quick {
                (full / 5).max(3)
            } else {
                full
            }
        }
    }

    /// Runs the transport groups (all of them, then the `areas` too, without `--only`).
    pub fn run(areas: Option<&[crate::Area]>) {
        let quick = std::env::args().any(|a| a == "--quick");
        let plan = Plan { quick };
        let only: Option<String> = std::env::args().skip_while(|a| a != "--only").nth(1);
        let want = |group: &str| only.as_deref().is_none_or(|o| group.starts_with(o));
        if want("start_join") {
            start_join(&plan);
        }
        if want("rtt") {
            rtt(&plan);
        }
        if want("tput") {
            throughput(&plan);
        }
        for (_, run) in areas.unwrap_or_default() {
            run(if quick { 3 } else { 7 });
        }
    }

    // ---------------------------------------------------------------- start + join

    fn noop(_: ()) {}

    fn start_join(plan: &Plan) {
        let exe = std::env::current_exe().expect("current_exe");
        for (method, full, name) in [
            (StartMethod::Spawn, 60, "spawn"),
            (StartMethod::Fork, 200, "fork"),
            (StartMethod::ForkServer, 100, "forkserver"),
        ] {
            let Ok(ctx) = get_context(method) else {
                eprintln!("  start method {name} unavailable, skipped");
                continue;
            };
            // Warm-up: page cache, and for the fork server its one-time launch.
            for _ in 0..3 {
                let mut p = Process::new(noop, ()).with_context(ctx);
                p.start().expect("start");
                p.join().expect("join");
            }
            // mp and the bare floor alternate, so that both see the same machine.
            let mut samples = Vec::new();
            let mut floor = Vec::new();
            for _ in 0..plan.n(full) {
                let t = Instant::now();
                let mut p = Process::new(noop, ()).with_context(ctx);
                p.start().expect("start");
                p.join().expect("join");
                samples.push(t.elapsed().as_secs_f64());
                let t = Instant::now();
                if method == StartMethod::Spawn {
                    bare_reexec(&exe);
                } else {
                    bare_fork();
                }
                floor.push(t.elapsed().as_secs_f64());
            }
            emit(
                &format!("start_join.{name}"),
                "mp",
                "s",
                "Process::new(noop, ()).start() + join()",
                &samples,
            );
            emit(
                &format!("start_join.{name}"),
                "raw",
                "s",
                if method == StartMethod::Spawn {
                    "bare re-exec of this binary (std Command spawn + wait; the child exits first thing in main), alternating with mp's"
                } else {
                    "bare fork() + _exit(0) in the child + waitpid(), alternating with mp's"
                },
                &floor,
            );
        }
    }

    /// The floor under fork's start + join: `fork`, `_exit` at once, `waitpid`.
    fn bare_fork() {
        // SAFETY: the child calls only _exit; the parent reaps it.
        unsafe {
            let pid = libc::fork();
            if pid == 0 {
                libc::_exit(0);
            }
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
        }
    }

    /// The floor under spawn's start + join: run this binary again, which exits at the top
    /// of `main` ([`crate::BARE_EXIT`]), and wait for it.
    fn bare_reexec(exe: &std::path::Path) {
        std::process::Command::new(exe)
            .env(crate::BARE_EXIT, "1")
            .spawn()
            .expect("spawn")
            .wait()
            .expect("wait");
    }

    // ---------------------------------------------------------------- round trip

    const RTT_MSG: usize = 8;

    fn mp_echo(conn: Connection<()>) {
        while let Ok(msg) = conn.recv_bytes() {
            if conn.send_bytes(&msg).is_err() {
                break;
            }
        }
    }

    fn raw_echo(mut s: UnixStream) {
        let mut buf = [0u8; RTT_MSG];
        while s.read_exact(&mut buf).is_ok() {
            if s.write_all(&buf).is_err() {
                break;
            }
        }
    }

    /// The raw reference with the receive strategy mp's Unix channel uses: try without
    /// blocking (yielding between tries) for up to 20 µs, then block. It shows how much of
    /// mp's round trip is the waiting strategy and how much is mp's own work.
    fn read_spinning(s: &mut UnixStream, buf: &mut [u8]) -> std::io::Result<()> {
        const SPIN: Duration = Duration::from_micros(20);
        let mut have = 0;
        while have < buf.len() {
            let start = Instant::now();
            loop {
                match s.read(&mut buf[have..]) {
                    Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                    Ok(n) => {
                        have += n;
                        break;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                if start.elapsed() >= SPIN {
                    s.set_nonblocking(false)?;
                    let n = s.read(&mut buf[have..]);
                    s.set_nonblocking(true)?;
                    match n? {
                        0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                        n => have += n,
                    }
                    break;
                }
                std::thread::yield_now();
            }
        }
        Ok(())
    }

    fn raw_echo_spinning(mut s: UnixStream) {
        let mut buf = [0u8; RTT_MSG];
        if s.set_nonblocking(true).is_err() {
            return;
        }
        while read_spinning(&mut s, &mut buf).is_ok() {
            if s.write_all(&buf).is_err() {
                break;
            }
        }
    }

    /// Mean round trip of each of `batches` batches of `per_batch` round trips.
    fn rtt_batches(
        batches: usize,
        per_batch: usize,
        mut round_trip: impl FnMut(&[u8; RTT_MSG]),
    ) -> Vec<f64> {
        let msg = *b"12345678";
        for _ in 0..per_batch {
            round_trip(&msg); // warm-up
        }
        (0..batches)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..per_batch {
                    round_trip(&msg);
                }
                t.elapsed().as_secs_f64() / per_batch as f64
            })
            .collect()
    }

    fn rtt(plan: &Plan) {
        let batches = plan.n(15);
        let per_batch = 2000;
        let fork = get_context(StartMethod::Fork).expect("fork context");
        let spawn = get_context(StartMethod::Spawn).expect("spawn context");

        // mp, echo in a child process (spawn: a fresh run of this binary).
        {
            let (here, there) = pipe_with::<(), Socket>().expect("pipe");
            let mut p = Process::new(mp_echo, there).with_context(spawn);
            p.start().expect("start");
            let s = rtt_batches(batches, per_batch, |m| {
                here.send_bytes(m).expect("send");
                let r = here.recv_bytes().expect("recv");
                debug_assert_eq!(r.len(), RTT_MSG);
            });
            drop(here);
            p.join().expect("join");
            emit(
                "rtt8.process",
                "mp",
                "s",
                "send_bytes/recv_bytes (a receive spins up to 20 µs before it blocks), echo child started by spawn",
                &s,
            );
        }
        // The same with the spin disabled on both sides: every receive sleeps in the kernel,
        // as the raw reference below does.
        {
            let old = mp_core::connection::socket_spin_limit();
            mp_core::connection::set_socket_spin_limit(Duration::ZERO);
            std::env::set_var("MP_SPIN_US", "0");
            let (here, there) = pipe_with::<(), Socket>().expect("pipe");
            let mut p = Process::new(mp_echo, there).with_context(spawn);
            p.start().expect("start");
            let s = rtt_batches(batches, per_batch, |m| {
                here.send_bytes(m).expect("send");
                here.recv_bytes().expect("recv");
            });
            drop(here);
            p.join().expect("join");
            std::env::remove_var("MP_SPIN_US");
            mp_core::connection::set_socket_spin_limit(old);
            emit(
                "rtt8.process",
                "mp_nospin",
                "s",
                "as mp with the spin disabled (MP_SPIN_US=0 in both processes)",
                &s,
            );
        }
        // Raw socketpair, echo in a forked child (the fd reaches it by fork).
        {
            let (mut here, there) = UnixStream::pair().expect("socketpair");
            let mut p = Process::from_closure(move || raw_echo(there)).with_context(fork);
            p.start().expect("start");
            let mut buf = [0u8; RTT_MSG];
            let s = rtt_batches(batches, per_batch, |m| {
                here.write_all(m).expect("write");
                here.read_exact(&mut buf).expect("read");
            });
            // The forked child holds a copy of `here` too, so dropping ours is no EOF for it.
            here.shutdown(Shutdown::Both).expect("shutdown");
            p.join().expect("join");
            emit(
                "rtt8.process",
                "raw",
                "s",
                "UnixStream::pair, write_all/read_exact, echo in a forked child",
                &s,
            );
        }
        // Raw socketpair again, both ends receiving as mp's channel does (spin, then block).
        {
            let (mut here, there) = UnixStream::pair().expect("socketpair");
            let mut p = Process::from_closure(move || raw_echo_spinning(there)).with_context(fork);
            p.start().expect("start");
            here.set_nonblocking(true).expect("nonblocking");
            let mut buf = [0u8; RTT_MSG];
            let s = rtt_batches(batches, per_batch, |m| {
                here.write_all(m).expect("write");
                read_spinning(&mut here, &mut buf).expect("read");
            });
            here.shutdown(Shutdown::Both).expect("shutdown");
            p.join().expect("join");
            emit(
                "rtt8.process",
                "raw_spin",
                "s",
                "UnixStream::pair, reads spin up to 20 µs (yielding) before blocking, as mp's do; echo in a forked child",
                &s,
            );
        }
        // Same two, echo in a thread.
        {
            let (here, there) = pipe_with::<(), Socket>().expect("pipe");
            let t = std::thread::spawn(move || mp_echo(there));
            let s = rtt_batches(batches, per_batch, |m| {
                here.send_bytes(m).expect("send");
                here.recv_bytes().expect("recv");
            });
            drop(here);
            t.join().expect("echo thread");
            emit(
                "rtt8.thread",
                "mp",
                "s",
                "send_bytes/recv_bytes, echo thread",
                &s,
            );
        }
        {
            let (mut here, there) = UnixStream::pair().expect("socketpair");
            let t = std::thread::spawn(move || raw_echo(there));
            let mut buf = [0u8; RTT_MSG];
            let s = rtt_batches(batches, per_batch, |m| {
                here.write_all(m).expect("write");
                here.read_exact(&mut buf).expect("read");
            });
            here.shutdown(Shutdown::Both).expect("shutdown");
            t.join().expect("echo thread");
            emit(
                "rtt8.thread",
                "raw",
                "s",
                "UnixStream::pair, echo thread",
                &s,
            );
        }
    }

    // ---------------------------------------------------------------- throughput

    /// Child side: for each 16-byte command (count, size), send `count` messages of `size`.
    fn mp_producer(conn: Connection<()>) {
        let mut cmd = [0u8; 16];
        while let Ok(16) = conn.recv_bytes_into(&mut cmd) {
            let (count, size) = decode_cmd(&cmd);
            let payload = vec![0xA5u8; size];
            for _ in 0..count {
                if conn.send_bytes(&payload).is_err() {
                    return;
                }
            }
        }
    }

    /// The typed twin of [`mp_producer`]: commands and payloads are `Vec<u8>` values.
    fn typed_producer(conn: Connection<Vec<u8>>) {
        while let Ok(cmd) = conn.recv() {
            let Ok(cmd) = <[u8; 16]>::try_from(cmd.as_slice()) else {
                return;
            };
            let (count, size) = decode_cmd(&cmd);
            let payload = vec![0xA5u8; size];
            for _ in 0..count {
                if conn.send(&payload).is_err() {
                    return;
                }
            }
        }
    }

    fn raw_producer(mut s: UnixStream) {
        let mut cmd = [0u8; 16];
        while s.read_exact(&mut cmd).is_ok() {
            let (count, size) = decode_cmd(&cmd);
            let payload = vec![0xA5u8; size];
            for _ in 0..count {
                if s.write_all(&payload).is_err() {
                    return;
                }
            }
        }
    }

    fn encode_cmd(count: usize, size: usize) -> [u8; 16] {
        let mut cmd = [0u8; 16];
        cmd[..8].copy_from_slice(&(count as u64).to_le_bytes());
        cmd[8..].copy_from_slice(&(size as u64).to_le_bytes());
        cmd
    }

    fn decode_cmd(cmd: &[u8; 16]) -> (usize, usize) {
        let count = u64::from_le_bytes(cmd[..8].try_into().unwrap()) as usize;
        let size = u64::from_le_bytes(cmd[8..].try_into().unwrap()) as usize;
        (count, size)
    }

    /// Bytes per second of each repetition: ask for `count` messages of `size`, time until the
    /// last has arrived. `warm` repetitions are run first and not recorded.
    fn tput_reps(
        reps: usize,
        warm: usize,
        count: usize,
        size: usize,
        mut batch: impl FnMut(&[u8; 16]),
    ) -> Vec<f64> {
        let cmd = encode_cmd(count, size);
        for _ in 0..warm {
            batch(&cmd);
        }
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                batch(&cmd);
                (count * size) as f64 / t.elapsed().as_secs_f64()
            })
            .collect()
    }

    fn throughput(plan: &Plan) {
        let fork = get_context(StartMethod::Fork).expect("fork context");
        let spawn = get_context(StartMethod::Spawn).expect("spawn context");
        let reps = plan.n(15);
        for (label, size, count) in [
            ("1KiB", 1 << 10, 20_000),
            ("64KiB", 64 << 10, 1_000),
            ("1MiB", 1 << 20, 64),
        ] {
            let bench = format!("tput.{label}");
            // mp, recv_bytes (a fresh Vec per message, as the API returns).
            {
                let (here, there) = pipe_with::<(), Socket>().expect("pipe");
                let mut p = Process::new(mp_producer, there).with_context(spawn);
                p.start().expect("start");
                let s = tput_reps(reps, 2, count, size, |cmd| {
                    here.send_bytes(cmd).expect("send");
                    for _ in 0..count {
                        let m = here.recv_bytes().expect("recv");
                        debug_assert_eq!(m.len(), size);
                    }
                });
                drop(here);
                p.join().expect("join");
                emit(
                    &bench,
                    "mp",
                    "B/s",
                    "child send_bytes -> parent recv_bytes (spawned child)",
                    &s,
                );
            }
            // mp, recv_bytes_into a reused buffer.
            {
                let (here, there) = pipe_with::<(), Socket>().expect("pipe");
                let mut p = Process::new(mp_producer, there).with_context(spawn);
                p.start().expect("start");
                let mut buf = vec![0u8; size];
                let s = tput_reps(reps, 2, count, size, |cmd| {
                    here.send_bytes(cmd).expect("send");
                    for _ in 0..count {
                        let n = here.recv_bytes_into(&mut buf).expect("recv");
                        debug_assert_eq!(n, size);
                    }
                });
                drop(here);
                p.join().expect("join");
                emit(
                    &bench,
                    "mp_into",
                    "B/s",
                    "child send_bytes -> parent recv_bytes_into(reused buffer)",
                    &s,
                );
            }
            // mp, typed: `Connection<Vec<u8>>::send` / `recv` (postcard encoding).
            {
                let (here, there) = pipe_with::<Vec<u8>, Socket>().expect("pipe");
                let mut p = Process::new(typed_producer, there).with_context(spawn);
                p.start().expect("start");
                let s = tput_reps(reps, 2, count, size, |cmd| {
                    here.send(&cmd.to_vec()).expect("send");
                    for _ in 0..count {
                        let m = here.recv().expect("recv");
                        debug_assert_eq!(m.len(), size);
                    }
                });
                drop(here);
                p.join().expect("join");
                emit(
                    &bench,
                    "mp_typed",
                    "B/s",
                    "typed: child Connection<Vec<u8>>::send -> parent recv() (a new Vec per message)",
                    &s,
                );
            }
            // Raw socketpair, framing-free: the reader knows the size.
            {
                let (mut here, there) = UnixStream::pair().expect("socketpair");
                let mut p = Process::from_closure(move || raw_producer(there)).with_context(fork);
                p.start().expect("start");
                let mut buf = vec![0u8; size];
                let s = tput_reps(reps, 2, count, size, |cmd| {
                    here.write_all(cmd).expect("write");
                    for _ in 0..count {
                        here.read_exact(&mut buf).expect("read");
                    }
                });
                here.shutdown(Shutdown::Both).expect("shutdown");
                p.join().expect("join");
                emit(
                    &bench,
                    "raw",
                    "B/s",
                    "UnixStream::pair, child write_all -> parent read_exact(reused buffer), forked child",
                    &s,
                );
            }
        }
        // Keep the machine quiet a moment before Python starts.
        std::thread::sleep(Duration::from_millis(50));
    }
}
