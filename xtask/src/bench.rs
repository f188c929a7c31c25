//! `cargo xtask bench`: runs the Rust benchmark binary (`bench/`, release build) and the
//! Python script (`bench/python/bench_mp.py`, stdlib `multiprocessing` only) in the same run,
//! group by group so that both see the same machine state, then writes a table and an SVG
//! chart to `docs/`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::json::{self, Json};
use crate::{cargo, metadata, root, run_cmd, show};

#[path = "bench_perf.rs"]
mod perf;

/// Benchmark groups, each run for Rust then for Python before the next group starts. A
/// pinned group runs under `taskset -c 0` (parent and child on one CPU) with the benchmark
/// names tagged `.cpu0`: on small VMs a round trip between two CPUs is dominated by the
/// cross-CPU wake-up and flips between two modes, which hides the cost of the IPC itself.
/// The later areas run `bench/python/bench_<group>.py <reps>` on the Python side; the
/// transport groups run `bench_mp.py --only <group>`.
const GROUPS: &[(&str, bool)] = &[
    ("start_join", false),
    ("rtt", false),
    ("rtt", true),
    ("tput", false),
    ("queue", false),
    ("sync", false),
    ("shared", false),
    ("pool", false),
    ("manager", false),
    ("shm", false),
];

/// Groups whose Python side is `bench_mp.py --only <group>`.
const TRANSPORT_GROUPS: &[&str] = &["start_join", "rtt", "tput"];

/// One benchmark series: the samples of one implementation of one benchmark.
pub(crate) struct Series {
    unit: String,
    pub(crate) note: String,
    samples: Vec<f64>,
}

impl Series {
    fn absorb(&mut self, unit: String, note: String, samples: Vec<f64>) {
        self.unit = unit;
        self.note = note;
        self.samples.extend(samples);
    }

    fn sorted(&self) -> Vec<f64> {
        let mut s = self.samples.clone();
        s.sort_by(|a, b| a.total_cmp(b));
        s
    }

    /// Linear-interpolated quantile, `q` in 0..=1.
    pub(crate) fn quantile(&self, q: f64) -> f64 {
        let s = self.sorted();
        if s.is_empty() {
            return f64::NAN;
        }
        let pos = q * (s.len() - 1) as f64;
        let lo = pos.floor() as usize;
        let hi = pos.ceil() as usize;
        s[lo] + (s[hi] - s[lo]) * (pos - lo as f64)
    }

    pub(crate) fn median(&self) -> f64 {
        self.quantile(0.5)
    }

    fn higher_is_better(&self) -> bool {
        self.unit.ends_with("/s") || self.unit == "x" || self.unit == "ratio"
    }
}

/// `(bench, impl)` → series.
pub(crate) type Results = BTreeMap<(String, String), Series>;

/// The options every bench command takes: `--quick` (one short round), `--no-write` (print
/// only), `--rounds <n>`.
pub(crate) struct BenchOptions {
    pub(crate) quick: bool,
    pub(crate) write: bool,
    pub(crate) rounds: usize,
}

impl BenchOptions {
    /// Parses `args`; `rounds` is the default number of rounds (1 with `--quick`).
    pub(crate) fn parse(args: &[String], rounds: usize) -> Result<Self> {
        let mut o = Self {
            quick: false,
            write: true,
            rounds,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--quick" => o.quick = true,
                "--no-write" => o.write = false,
                "--rounds" => {
                    o.rounds = it
                        .next()
                        .and_then(|n| n.parse().ok())
                        .filter(|&n| n > 0)
                        .context("--rounds needs a positive number")?
                }
                other => {
                    bail!("unknown bench option {other:?} (have --quick, --no-write, --rounds <n>)")
                }
            }
        }
        if o.quick {
            o.rounds = 1;
        }
        Ok(o)
    }
}

pub fn run(args: &[String]) -> Result<()> {
    // `--no-mpi` skips the scale-out group; the other options are every bench command's.
    let mpi = !args.iter().any(|a| a == "--no-mpi");
    let rest: Vec<String> = args.iter().filter(|a| *a != "--no-mpi").cloned().collect();
    let BenchOptions {
        quick,
        write,
        rounds,
    } = BenchOptions::parse(&rest, 5)?;
    let started = Instant::now();
    let mut build = cargo();
    // The shm group and the Rust peers' group (iceoryx2 and ipc-channel: dependencies of the
    // bench alone, behind its feature `peers`).
    build.args([
        "build",
        "--release",
        "-p",
        "mp-bench",
        "--features",
        "shm,peers",
    ]);
    run_cmd(build)?;
    let target_dir = metadata()?
        .get("target_directory")
        .and_then(Json::as_str)
        .context("cargo metadata has no target_directory")?
        .to_owned();
    let bin = std::path::Path::new(&target_dir).join("release/mp-bench");
    let script = root().join("bench/python/bench_mp.py");

    let machine = machine();
    eprintln!(
        "machine:\n{}",
        machine
            .lines()
            .map(|l| format!("  {l}\n"))
            .collect::<String>()
    );

    // Rounds: every group, Rust then Python, `rounds` times over, so that a change in the
    // machine's load during the run hits both sides alike. Samples of all rounds are pooled.
    let mut results = Results::new();
    let taskset = Command::new("taskset")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let groups: Vec<(&str, bool)> = GROUPS.iter().chain(perf::GROUPS).copied().collect();
    for (round, &(group, pinned)) in (1..=rounds).flat_map(|r| groups.iter().map(move |g| (r, g))) {
        if pinned && !taskset {
            eprintln!("-- no taskset: skipping the pinned {group} group");
            continue;
        }
        eprintln!(
            "-- round {round}/{rounds}: {group}{}",
            if pinned { " (pinned to CPU 0)" } else { "" }
        );
        let program = |p: &std::path::Path| {
            if pinned {
                let mut c = Command::new("taskset");
                c.args(["-c", "0"]).arg(p);
                c
            } else {
                Command::new(p)
            }
        };
        let mut rust = program(&bin);
        rust.args(["--only", group]);
        let mut py = program(std::path::Path::new(&python()));
        if TRANSPORT_GROUPS.contains(&group) {
            py.arg(&script).args(["--only", group]);
        } else {
            let own = root().join(format!("bench/python/bench_{group}.py"));
            if !own.exists() {
                eprintln!("-- no {} : Python side of {group} skipped", own.display());
                collect(rust, &mut results)?;
                continue;
            }
            py.arg(own).arg(if quick { "3" } else { "7" });
        }
        if pinned {
            rust.args(["--tag", ".cpu0"]);
            py.args(["--tag", ".cpu0"]);
        }
        if quick {
            rust.arg("--quick");
            py.arg("--quick");
        }
        collect(rust, &mut results)?;
        // A failing Python side costs its rows, not the run.
        if let Err(e) = collect(py, &mut results) {
            eprintln!("-- the Python side of {group} failed, its rows are missing: {e:#}");
        }
    }
    let load_after = loadavg();

    let report = Report {
        results: &results,
        quick,
        rounds,
    };
    let table = report.table();
    let targets = report.targets();
    println!("\n{table}\n{targets}");
    if write {
        let docs = root().join("docs");
        std::fs::create_dir_all(&docs)?;
        let md = report.markdown(&machine, &load_after, &table, &targets);
        std::fs::write(docs.join("benchmarks.md"), md)?;
        std::fs::write(docs.join("benchmarks.svg"), report.svg())?;
        std::fs::write(docs.join("scaling.svg"), report.scaling_svg())?;
        eprintln!("wrote docs/benchmarks.md and docs/benchmarks.svg");
    }
    if mpi {
        // The scale-out group: mp's MPI pool beside mpi4py.futures (docs/benchmarks-mpi.md).
        let mut mpi_args: Vec<String> = Vec::new();
        if quick {
            mpi_args.push("--quick".into());
        }
        if !write {
            mpi_args.push("--no-write".into());
        }
        crate::bench_mpi::run(&mpi_args).context("the scale-out (MPI) group")?;
    }
    eprintln!("bench took {:.0?}", started.elapsed());
    Ok(())
}

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

/// How long one benchmark program (one group, one side) may run.
const PROGRAM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(900);

/// Runs a benchmark program and adds the JSON lines of its stdout to `results`; a program
/// still running after [`PROGRAM_TIMEOUT`] is killed and is an error.
pub(crate) fn collect(mut cmd: Command, results: &mut Results) -> Result<()> {
    let line = show(&cmd);
    eprintln!("$ {line}");
    let mut child = cmd
        .stderr(Stdio::inherit())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not run {line}"))?;
    // Read stdout beside the wait, so a full pipe cannot stall the program.
    let mut stdout = child.stdout.take().context("no stdout")?;
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut buf);
        buf
    });
    // No benchmark program may hang the run: past the bound it is killed and reported.
    let deadline = Instant::now() + PROGRAM_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{line}: still running after {PROGRAM_TIMEOUT:?}, killed");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let stdout = reader.join().unwrap_or_default();
    if !status.success() {
        bail!("{line}: {status}");
    }
    for l in String::from_utf8_lossy(&stdout).lines() {
        let l = l.trim();
        if !l.starts_with('{') {
            continue;
        }
        let v = json::parse(l).with_context(|| format!("bad benchmark line {l:?}"))?;
        let field = |k: &str| -> Result<String> {
            Ok(v.get(k)
                .and_then(Json::as_str)
                .with_context(|| format!("no {k} in {l:?}"))?
                .to_owned())
        };
        let samples: Vec<f64> = v
            .get("samples")
            .and_then(Json::as_array)
            .context("no samples")?
            .iter()
            .filter_map(Json::as_f64)
            .collect();
        // Later rounds add to the samples of earlier ones.
        results
            .entry((field("bench")?, field("impl")?))
            .or_insert_with(|| Series {
                unit: String::new(),
                note: String::new(),
                samples: Vec::new(),
            })
            .absorb(field("unit")?, field("note")?, samples);
    }
    Ok(())
}

pub(crate) fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "?".into())
}

pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "?".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines().next().and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
        })
        .map(|kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0))
        .unwrap_or_else(|| "?".into());
    let py_version = sh(&python(), &["--version"]);
    format!(
        "date: {}\nnproc: {}\nCPU: {cpu}\nmemory: {mem}\nuname: {}\nrustc: {}\npython: {py_version} ({})\nload average at start: {}",
        sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        sh("nproc", &[]),
        sh("uname", &["-srmv"]),
        sh("rustc", &["--version"]),
        sh(&python(), &["-c", "import sys; print(sys.executable)"]),
        loadavg(),
    )
}

// ------------------------------------------------------------------ report

/// Goals stated as "at least N× Python" (time: N× faster; rate: N× more).
const VS_PYTHON: &[(&str, f64, &str)] = &[
    (
        "queue.small",
        3.0,
        "queue throughput, small items, at least 3× Python's Queue",
    ),
    (
        "sync.event_pingpong",
        1.0,
        "event ping-pong faster than Python's",
    ),
    ("sync.barrier2", 1.0, "barrier wait faster than Python's"),
    (
        "sync.lock_uncontended",
        1.0,
        "uncontended lock at least as fast as Python's",
    ),
    (
        "value.locked_incr",
        1.0,
        "locked shared value increments faster than Python's",
    ),
    (
        "pool.map100k",
        3.0,
        "pool map, 100k items, at least 3× Python's tasks/s",
    ),
    (
        "pool.map20k.chunk1",
        10.0,
        "pool map, chunksize 1, at least 10× Python's tasks/s",
    ),
    (
        "pool.apply_async",
        2.0,
        "apply_async round trip at least 2× faster than Python's",
    ),
    (
        "mgr.dict_setget",
        5.0,
        "manager dict set + get at least 5× faster than Python's",
    ),
    (
        "shm.rtt8",
        8.0,
        "shm pipe round trip at least 8× faster than Python's Pipe",
    ),
    (
        "shm.queue.small",
        15.0,
        "shm queue small items at least 15× Python's Queue",
    ),
];

/// Goals stated as "at least this fraction of a Rust reference measured in the same run".
const VS_REFERENCE: &[(&str, &str, f64, &str)] = &[
    (
        "shm.write64MiB",
        "memcpy",
        0.8,
        "shared-memory write at least 80% of memcpy",
    ),
    (
        "shm.read64MiB",
        "memcpy",
        0.8,
        "shared-memory read at least 80% of memcpy",
    ),
    (
        "shm.1mib",
        "memcpy",
        0.6,
        "shm pipe 1 MiB one way at least 60% of memcpy",
    ),
];

/// Goals stated as absolute bounds (an upper bound for times, a lower bound for rates).
const ABSOLUTE: &[(&str, f64, &str)] = &[
    (
        "pool.cpu_speedup",
        1.9,
        "CPU-bound map on 2 workers at least 1.9× serial",
    ),
    ("shm.rtt8", 5e-6, "shm pipe round trip at most 5 µs"),
    (
        "shm.queue.small",
        5e6,
        "shm queue at least 5 million messages/s",
    ),
];

/// A table row: a benchmark and which implementation stands in each column.
struct Row {
    title: &'static str,
    bench: &'static str,
    mp: &'static str,
    raw: Option<&'static str>,
    python: Option<(&'static str, &'static str)>,
}

/// A row comparing mp with Python under the same benchmark name, and optionally with a
/// Rust reference implementation of that name.
const fn row(title: &'static str, bench: &'static str, raw: Option<&'static str>) -> Row {
    Row {
        title,
        bench,
        mp: "mp",
        raw,
        python: Some((bench, "python")),
    }
}

const ROWS: &[Row] = &[
    Row {
        title: "start + join, spawn (reference: bare re-exec of the binary)",
        bench: "start_join.spawn",
        mp: "mp",
        raw: Some("raw"),
        python: Some(("start_join.spawn", "python")),
    },
    Row {
        title: "start + join, fork (reference: bare fork + waitpid)",
        bench: "start_join.fork",
        mp: "mp",
        raw: Some("raw"),
        python: Some(("start_join.fork", "python")),
    },
    Row {
        title: "start + join, forkserver (reference: bare fork + waitpid)",
        bench: "start_join.forkserver",
        mp: "mp",
        raw: Some("raw"),
        python: Some(("start_join.forkserver", "python")),
    },
    Row {
        title: "round trip 8 B, echo child process",
        bench: "rtt8.process",
        mp: "mp",
        raw: Some("raw"),
        python: Some(("rtt8.process", "python")),
    },
    Row {
        title: "round trip 8 B, echo child process, mp's spin disabled (vs blocking raw)",
        bench: "rtt8.process",
        mp: "mp_nospin",
        raw: Some("raw"),
        python: Some(("rtt8.process", "python")),
    },
    Row {
        title: "round trip 8 B, echo child process, vs a raw socket that spins as mp does",
        bench: "rtt8.process",
        mp: "mp",
        raw: Some("raw_spin"),
        python: Some(("rtt8.process", "python")),
    },
    Row {
        title: "round trip 8 B, echo thread",
        bench: "rtt8.thread",
        mp: "mp",
        raw: Some("raw"),
        python: Some(("rtt8.thread", "python")),
    },
    Row {
        title: "round trip 8 B, echo child process, one CPU",
        bench: "rtt8.process.cpu0",
        mp: "mp",
        raw: Some("raw"),
        python: Some(("rtt8.process.cpu0", "python")),
    },
    Row {
        title: "round trip 8 B, echo child process, one CPU, mp's spin disabled",
        bench: "rtt8.process.cpu0",
        mp: "mp_nospin",
        raw: Some("raw"),
        python: Some(("rtt8.process.cpu0", "python")),
    },
    Row {
        title: "round trip 8 B, echo child process, one CPU, vs a spinning raw socket",
        bench: "rtt8.process.cpu0",
        mp: "mp",
        raw: Some("raw_spin"),
        python: Some(("rtt8.process.cpu0", "python")),
    },
    Row {
        title: "round trip 8 B, echo thread, one CPU",
        bench: "rtt8.thread.cpu0",
        mp: "mp",
        raw: Some("raw"),
        python: Some(("rtt8.thread.cpu0", "python")),
    },
    Row {
        title: "throughput 1 KiB messages",
        bench: "tput.1KiB",
        mp: "mp",
        raw: Some("raw"),
        python: Some(("tput.1KiB", "python")),
    },
    Row {
        title: "throughput 64 KiB messages",
        bench: "tput.64KiB",
        mp: "mp",
        raw: Some("raw"),
        python: Some(("tput.64KiB", "python")),
    },
    Row {
        title: "throughput 1 MiB messages (Python warm)",
        bench: "tput.1MiB",
        mp: "mp",
        raw: Some("raw"),
        python: Some(("tput.1MiB", "python")),
    },
    Row {
        title: "throughput 1 MiB messages (Python cold)",
        bench: "tput.1MiB",
        mp: "mp",
        raw: Some("raw"),
        python: Some(("tput.1MiB.cold", "python")),
    },
    Row {
        title: "throughput 1 KiB, `recv_bytes_into`",
        bench: "tput.1KiB",
        mp: "mp_into",
        raw: Some("raw"),
        python: Some(("tput.1KiB", "python")),
    },
    Row {
        title: "throughput 64 KiB, `recv_bytes_into`",
        bench: "tput.64KiB",
        mp: "mp_into",
        raw: Some("raw"),
        python: Some(("tput.64KiB", "python")),
    },
    Row {
        title: "throughput 1 MiB, `recv_bytes_into` (Python warm)",
        bench: "tput.1MiB",
        mp: "mp_into",
        raw: Some("raw"),
        python: Some(("tput.1MiB", "python")),
    },
    row(
        "queue: small items, child puts, parent gets",
        "queue.small",
        None,
    ),
    row("queue: round trip through two queues", "queue.rtt", None),
    row(
        "lock: uncontended acquire + release",
        "sync.lock_uncontended",
        None,
    ),
    row(
        "event ping-pong between two processes",
        "sync.event_pingpong",
        None,
    ),
    row(
        "barrier(2) wait across two processes",
        "sync.barrier2",
        None,
    ),
    row(
        "shared memory write, 64 MiB (vs memcpy)",
        "shm.write64MiB",
        Some("memcpy"),
    ),
    row(
        "shared memory read, 64 MiB (vs memcpy)",
        "shm.read64MiB",
        Some("memcpy"),
    ),
    row(
        "locked Value: 2 processes incrementing",
        "value.locked_incr",
        None,
    ),
    row("pool start-up", "pool.start", None),
    row("pool map, 100k items, default chunks", "pool.map100k", None),
    row(
        "pool map, 20k items, chunksize 1",
        "pool.map20k.chunk1",
        None,
    ),
    row("pool apply_async round trip", "pool.apply_async", None),
    row(
        "pool CPU-bound map speed-up, 2 workers",
        "pool.cpu_speedup",
        None,
    ),
    row("manager dict set + get", "mgr.dict_setget", None),
    row("manager serving 8 clients", "mgr.clients8", None),
    row("shm pipe round trip 8 B", "shm.rtt8", None),
    Row {
        title: "shm pipe round trip 8 B, spin disabled (what the spin buys)",
        bench: "shm.rtt8.nospin",
        mp: "mp",
        raw: None,
        python: Some(("shm.rtt8", "python")),
    },
    row("shm queue, small items", "shm.queue.small", None),
    row(
        "shm pipe 1 MiB one way (vs memcpy)",
        "shm.1mib",
        Some("memcpy"),
    ),
];

fn fmt_value(v: f64, unit: &str) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    match unit {
        "s" if v >= 1.0 => format!("{v:.2} s"),
        "s" if v >= 1e-3 => format!("{:.2} ms", v * 1e3),
        "s" if v >= 1e-6 => format!("{:.1} µs", v * 1e6),
        "s" => format!("{:.1} ns", v * 1e9),
        "B/s" if v >= 1e9 => format!("{:.2} GB/s", v / 1e9),
        "B/s" => format!("{:.0} MB/s", v / 1e6),
        "x" | "ratio" => format!("{v:.2}×"),
        "cpu" => format!("{:.2} % CPU", v * 100.0),
        "MiB" => format!("{v:.1} MiB"),
        _ if unit.ends_with("/s") && v >= 1e6 => format!("{:.2} M {unit}", v / 1e6),
        _ if unit.ends_with("/s") && v >= 1e3 => format!("{:.0} k {unit}", v / 1e3),
        _ if (1e-6..1e6).contains(&v) && unit.is_empty() => format!("{v:.3}"),
        _ => format!("{v:.3} {unit}"),
    }
}

fn cell(s: Option<&Series>) -> String {
    match s {
        None => "–".into(),
        Some(s) => format!(
            "**{}** ({}–{})",
            fmt_value(s.median(), &s.unit),
            fmt_value(s.quantile(0.1), &s.unit),
            fmt_value(s.quantile(0.9), &s.unit)
        ),
    }
}

/// How many times better `ours` is than `theirs` (> 1: ours is faster / moves more).
fn speedup(ours: &Series, theirs: &Series) -> f64 {
    if ours.higher_is_better() {
        ours.median() / theirs.median()
    } else {
        theirs.median() / ours.median()
    }
}

fn fmt_ratio(r: Option<f64>) -> String {
    match r {
        Some(r) if r.is_finite() && r >= 10.0 => format!("{r:.0}×"),
        Some(r) if r.is_finite() => format!("{r:.2}×"),
        _ => "–".into(),
    }
}

struct Report<'a> {
    results: &'a Results,
    quick: bool,
    rounds: usize,
}

impl Report<'_> {
    fn get(&self, bench: &str, imp: &str) -> Option<&Series> {
        self.results.get(&(bench.to_owned(), imp.to_owned()))
    }

    /// `(title, mp, raw, python, mp vs python, mp vs raw)` for every row with data.
    #[allow(clippy::type_complexity)]
    fn rows(
        &self,
    ) -> Vec<(
        &'static str,
        &Series,
        Option<&Series>,
        Option<&Series>,
        Option<f64>,
        Option<f64>,
    )> {
        ROWS.iter()
            .chain(perf::ROWS)
            .filter_map(|r| {
                let mp = self.get(r.bench, r.mp)?;
                let raw = r.raw.and_then(|i| self.get(r.bench, i));
                let py = r.python.and_then(|(b, i)| self.get(b, i));
                let vs_py = py.map(|p| speedup(mp, p));
                let vs_raw = raw.map(|x| speedup(mp, x));
                Some((r.title, mp, raw, py, vs_py, vs_raw))
            })
            .collect()
    }

    fn table(&self) -> String {
        let mut t = String::from(
            "| benchmark | mp (Rust) | Rust reference (raw socket / memcpy / Rust peer) | Python 3 multiprocessing | mp vs Python | mp vs reference |\n\
             |---|---|---|---|---|---|\n",
        );
        for (title, mp, raw, py, vs_py, vs_raw) in self.rows() {
            let _ = writeln!(
                t,
                "| {title} | {} | {} | {} | {} | {} |",
                cell(Some(mp)),
                cell(raw),
                cell(py),
                fmt_ratio(vs_py),
                fmt_ratio(vs_raw)
            );
        }
        t
    }

    /// The goals of the benchmark issue, each checked against this run.
    fn targets(&self) -> String {
        let mut out = String::from("Targets:\n\n");
        let mut line = |ok: Option<bool>, text: String| {
            let mark = match ok {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "not measured",
            };
            let _ = writeln!(out, "- **{mark}**: {text}");
        };
        // 1. spawn start+join at least 20x faster than Python's spawn.
        match (
            self.get("start_join.spawn", "mp"),
            self.get("start_join.spawn", "python"),
        ) {
            (Some(m), Some(p)) => {
                let r = speedup(m, p);
                line(
                    Some(r >= 20.0),
                    format!("spawn start + join at least 20× faster than Python's spawn: {r:.0}×"),
                )
            }
            _ => line(None, "spawn start + join vs Python".into()),
        }
        // 2. pipe round trip no slower than a raw socket round trip.
        for (bench, what) in [
            ("rtt8.process", "child process"),
            ("rtt8.thread", "thread"),
            ("rtt8.process.cpu0", "child process, one CPU"),
            ("rtt8.thread.cpu0", "thread, one CPU"),
        ] {
            match (self.get(bench, "mp"), self.get(bench, "raw")) {
                (Some(m), Some(r)) => {
                    let (mm, rm) = (m.median(), r.median());
                    let overlap = m.quantile(0.1) <= r.quantile(0.9);
                    let extra = if mm <= rm {
                        String::new()
                    } else if overlap {
                        format!(
                            "; {:.0}% slower, within the p10–p90 spread",
                            (mm / rm - 1.0) * 100.0
                        )
                    } else {
                        format!("; {:.0}% slower", (mm / rm - 1.0) * 100.0)
                    };
                    line(
                        Some(mm <= rm),
                        format!(
                            "pipe round trip ({what}) no slower than a raw Unix socket: mp {} vs raw {}{extra}",
                            fmt_value(mm, "s"),
                            fmt_value(rm, "s")
                        ),
                    )
                }
                _ => line(None, format!("pipe round trip ({what})")),
            }
        }
        // 3. 1 MiB throughput >= 80% of raw and not below Python's.
        match (
            self.get("tput.1MiB", "mp"),
            self.get("tput.1MiB", "raw"),
            self.get("tput.1MiB", "python"),
        ) {
            (Some(m), Some(r), Some(p)) => {
                let of_raw = m.median() / r.median();
                line(
                    Some(of_raw >= 0.8),
                    format!(
                        "1 MiB throughput at least 80% of a raw Unix socket: {:.0}% ({} vs {})",
                        of_raw * 100.0,
                        fmt_value(m.median(), "B/s"),
                        fmt_value(r.median(), "B/s")
                    ),
                );
                let cold = self.get("tput.1MiB.cold", "python");
                let vs_py = m.median() / p.median();
                line(
                    Some(vs_py >= 1.0 && cold.is_none_or(|c| m.median() >= c.median())),
                    format!(
                        "1 MiB throughput not below Python's: {:.2}× Python warm ({}){}",
                        vs_py,
                        fmt_value(p.median(), "B/s"),
                        cold.map(|c| format!(
                            ", {:.2}× Python cold ({})",
                            m.median() / c.median(),
                            fmt_value(c.median(), "B/s")
                        ))
                        .unwrap_or_default()
                    ),
                );
            }
            _ => line(None, "1 MiB throughput".into()),
        }
        // The later issues' goals: ratios to Python, fractions of a reference, absolutes.
        for &(bench, min, text) in VS_PYTHON {
            match (self.get(bench, "mp"), self.get(bench, "python")) {
                (Some(m), Some(p)) => {
                    let r = speedup(m, p);
                    line(Some(r >= min), format!("{text}: {}", fmt_ratio(Some(r))))
                }
                _ => line(None, text.into()),
            }
        }
        for &(bench, reference, min, text) in VS_REFERENCE {
            match (self.get(bench, "mp"), self.get(bench, reference)) {
                (Some(m), Some(r)) => {
                    let f = speedup(m, r);
                    line(Some(f >= min), format!("{text}: {:.0}%", f * 100.0))
                }
                _ => line(None, text.into()),
            }
        }
        for &(bench, bound, text) in ABSOLUTE {
            match self.get(bench, "mp") {
                Some(m) => {
                    let v = m.median();
                    let ok = if m.higher_is_better() {
                        v >= bound
                    } else {
                        v <= bound
                    };
                    line(Some(ok), format!("{text}: {}", fmt_value(v, &m.unit)))
                }
                None => line(None, text.into()),
            }
        }
        self.perf_targets(&mut line);
        // Not a goal: how much of the round trip is the waiting strategy.
        for bench in ["rtt8.process", "rtt8.process.cpu0"] {
            if let (Some(m), Some(r), Some(s), Some(n)) = (
                self.get(bench, "mp"),
                self.get(bench, "raw"),
                self.get(bench, "raw_spin"),
                self.get(bench, "mp_nospin"),
            ) {
                let _ = writeln!(
                    out,
                    "- *context* ({bench}): mp's receives spin up to 20 µs (yielding the CPU) \
                     before they block; the raw reference blocks at once. Both spinning: mp {} \
                     vs raw {}. Both blocking: mp {} vs raw {}.",
                    fmt_value(m.median(), "s"),
                    fmt_value(s.median(), "s"),
                    fmt_value(n.median(), "s"),
                    fmt_value(r.median(), "s"),
                );
            }
        }
        out
    }

    fn markdown(&self, machine: &str, load_after: &str, table: &str, targets: &str) -> String {
        let mut md = String::new();
        md.push_str("# Benchmarks\n\n");
        md.push_str(
            "Generated by `cargo xtask bench` (do not edit by hand). mp (`bench/`, release build) and \
             Python's `multiprocessing` (`bench/python/bench_mp.py`, standard library only) run in the \
             same invocation on the same machine, group by group (start + join, round trips, \
             throughput), Rust first then Python, so both see the same conditions.\n\n",
        );
        let _ = writeln!(
            md,
            "This run made {} round(s) of all groups; the samples of all rounds are pooled.\n",
            self.rounds
        );
        if self.quick {
            md.push_str("**This is a `--quick` run: few repetitions, figures are rough.**\n\n");
        }
        md.push_str("## Machine\n\n```text\n");
        md.push_str(machine);
        let _ = writeln!(md, "\nload average at end: {load_after}\n```\n");
        md.push_str("## Results\n\n");
        md.push_str(
            "Each cell is the **median** of the repetitions, with the 10th–90th percentile range \
             in parentheses. Times: lower is better; throughputs (decimal GB/s, payload bytes only): \
             higher is better. The ratio columns say how many times better mp is \
             (> 1× = mp faster; for throughput, mp's rate over the other's). The reference \
             column holds a raw socket or a memcpy, or, in the rows marked *vs iceoryx2* or \
             *vs ipc-channel*, that Rust peer measured the same way in the same run.\n\n",
        );
        md.push_str(table);
        md.push_str("\n![mp relative to Python and to a raw Unix socket](benchmarks.svg)\n\n");
        md.push_str(targets);
        md.push('\n');
        md.push_str(&self.scaling_markdown());
        md.push_str("\n## What is measured\n\n");
        md.push_str(
            "- **start + join**: wall time of `Process::new(noop, ()).with_context(ctx).start()` + \
             `join()` per process, for each start method, after 3 warm-up processes (which also \
             launch the fork server). Python: `get_context(m).Process(target=noop).start()` + \
             `join()`, after 2 warm-ups.\n\
             - **round trip 8 B**: mean time of one 8-byte send + echoed reply, per batch of 2000 \
             round trips (each repetition is one batch, after one warm-up batch). mp: \
             `send_bytes`/`recv_bytes` on both sides, echo in a child started by spawn or in a \
             thread. Raw: `UnixStream::pair()`, `write_all`/`read_exact`, no framing, echo in a \
             forked child (the fd reaches it by fork) or a thread. Python: `Pipe()` \
             `send_bytes`/`recv_bytes`, echo in a fork child or a thread. The *one CPU* rows \
             run the same programs under `taskset -c 0`, so both ends share a CPU: on a small VM \
             a wake-up across CPUs costs tens of µs and flips between modes from run to run, \
             which swamps the IPC cost; pinned, what remains is the syscalls and copies.\n\
             - **throughput**: payload bytes per second of one batch, one way, child to parent: \
             the parent sends a 16-byte request and times until the last of N messages has \
             arrived (1 KiB × 20000, 64 KiB × 1000, 1 MiB × 64), after 2 warm-up batches. \
             mp: child `send_bytes`, parent `recv_bytes` (a new `Vec` per message) or \
             `recv_bytes_into` (one reused buffer). Raw: child `write_all`, parent `read_exact` \
             into one reused buffer, no framing. Python: `send_bytes`/`recv_bytes`; *warm* is \
             after the warm-up in a long-lived process, *cold* is the first batch \
             (16 × 1 MiB) of a fresh interpreter with a fresh child, each sample a new \
             interpreter. Python's large-message rate depends a lot on the allocator's state \
             (fresh `bytes` of 1 MiB per message), hence both.\n",
        );
        md.push_str(perf::METHOD);
        md.push('\n');
        md.push_str("Series notes as reported by the programs:\n\n");
        for ((bench, imp), s) in self.results {
            let _ = writeln!(
                md,
                "- `{bench}` / `{imp}` ({} samples): {}",
                s.samples.len(),
                s.note
            );
        }
        md
    }

    /// A horizontal bar chart, log scale, of mp's speed relative to Python and to a raw socket.
    fn svg(&self) -> String {
        let rows = self.rows();
        let (lo, hi) = (0.1f64, {
            let max = rows
                .iter()
                .flat_map(|r| [r.4, r.5])
                .flatten()
                .filter(|v| v.is_finite())
                .fold(10.0f64, f64::max);
            10f64.powf(max.log10().ceil())
        });
        let (left, width, top, row_h) = (350.0, 420.0, 50.0, 34.0);
        let height = top + row_h * rows.len() as f64 + 50.0;
        let x = |v: f64| {
            let v = v.clamp(lo, hi);
            left + (v.log10() - lo.log10()) / (hi.log10() - lo.log10()) * width
        };
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" viewBox="0 0 {w} {height}" font-family="sans-serif" font-size="12">"#,
            w = left + width + 60.0
        );
        let _ = writeln!(
            s,
            r#"<rect width="100%" height="100%" fill="white"/><text x="10" y="20" font-size="13" font-weight="bold">mp vs Python multiprocessing and vs a Rust reference (medians; log scale; &gt;1× = mp better)</text>"#
        );
        let _ = writeln!(
            s,
            r##"<rect x="{left}" y="30" width="10" height="10" fill="#3b6fb6"/><text x="{}" y="39">vs Python</text><rect x="{}" y="30" width="10" height="10" fill="#e08a2e"/><text x="{}" y="39">vs Rust reference (raw socket, memcpy, Rust peer)</text>"##,
            left + 14.0,
            left + 90.0,
            left + 104.0
        );
        // Grid: powers of ten.
        let mut g = lo;
        while g <= hi * 1.0001 {
            let gx = x(g);
            let label = if g < 1.0 {
                format!("{g}×")
            } else {
                format!("{g:.0}×")
            };
            let stroke = if (g - 1.0).abs() < 1e-9 {
                "#000"
            } else {
                "#ddd"
            };
            let _ = writeln!(
                s,
                r##"<line x1="{gx:.1}" y1="{top}" x2="{gx:.1}" y2="{:.1}" stroke="{stroke}"/><text x="{gx:.1}" y="{:.1}" text-anchor="middle" fill="#555">{label}</text>"##,
                height - 35.0,
                height - 20.0
            );
            g *= 10.0;
        }
        for (i, (title, _, _, _, vs_py, vs_raw)) in rows.iter().enumerate() {
            let y = top + row_h * i as f64;
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                left - 8.0,
                y + row_h / 2.0 + 4.0,
                title.replace('`', "").replace('&', "&amp;")
            );
            for (j, (v, color)) in [(vs_py, "#3b6fb6"), (vs_raw, "#e08a2e")]
                .into_iter()
                .enumerate()
            {
                let Some(v) = v.filter(|v| v.is_finite() && *v > 0.0) else {
                    continue;
                };
                let (x0, x1) = (x(1.0), x(v));
                let (bx, bw) = if x1 >= x0 {
                    (x0, x1 - x0)
                } else {
                    (x1, x0 - x1)
                };
                let by = y + 4.0 + j as f64 * 13.0;
                let tx = if x1 >= x0 { x1 + 3.0 } else { x1 - 3.0 };
                let anchor = if x1 >= x0 { "start" } else { "end" };
                let _ = writeln!(
                    s,
                    r#"<rect x="{bx:.1}" y="{by:.1}" width="{:.1}" height="12" fill="{color}"/><text x="{tx:.1}" y="{:.1}" text-anchor="{anchor}" font-size="10">{}</text>"#,
                    bw.max(1.0),
                    by + 10.0,
                    fmt_ratio(Some(v))
                );
            }
        }
        s.push_str("</svg>\n");
        s
    }
}
