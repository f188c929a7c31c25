//! `cargo xtask bench-mpi` (also the last group of `cargo xtask bench`): mp's MPI pool side
//! by side with mpi4py.futures' `MPIPoolExecutor`, in the same run, on one host and on the
//! three network-namespace hosts of `test-mpi`.
//!
//! Both sides run under the same `mpirun` settings with 2 worker ranks on one host (`-n 3`,
//! shared memory) and 3 worker ranks across the namespaces (`-n 4`, TCP only), and print
//! `RESULT <metric> <value>` lines (see `crates/mp-mpi/examples/mpi_bench.rs` and
//! `bench/python/bench_mpi4py.py`). Writes `docs/benchmarks-mpi.md` unless `--no-write`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::test_mpi::{ensure_installed, is_root, Hosts};
use crate::{cargo, json, root, run_cmd, show};

/// One side's results: metric → value.
type Results = BTreeMap<String, f64>;

pub fn run(args: &[String]) -> Result<()> {
    let quick = args.iter().any(|a| a == "--quick");
    let write = !args.iter().any(|a| a == "--no-write");
    let repeat: usize = match args.iter().position(|a| a == "--repeat") {
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .filter(|n| *n > 0)
            .context("--repeat takes a positive number")?,
        None if quick => 1,
        None => 5,
    };
    ensure_installed()?;
    if !Command::new(python())
        .args(["-c", "import mpi4py.futures"])
        .status()
        .is_ok_and(|s| s.success())
    {
        let mut pip = Command::new(python());
        pip.args(["-m", "pip", "install", "mpi4py"]);
        run_cmd(pip).context("installing mpi4py (it builds against the system's Open MPI)")?;
    }
    let bench = build()?;
    let script = root().join("bench/python/bench_mpi4py.py");
    let root_args: Vec<String> = if is_root() {
        vec!["--allow-run-as-root".into()]
    } else {
        Vec::new()
    };
    let quick_arg: &[&str] = if quick { &["--quick"] } else { &[] };
    let load_before = load_average();

    let mut rows: Vec<(&str, Runs, Runs)> = Vec::new();
    eprintln!(
        "\n==== scale-out, one host: mpirun -n 3 (2 worker ranks), {repeat} run(s) each ===="
    );
    let local = |program: &Path, args: &[&str]| {
        let mut c = Command::new("timeout");
        c.args(["--kill-after=20s", "900", "mpirun"])
            .args(&root_args)
            .args(["--oversubscribe", "-n", "3", "--mca", "btl", "self,vader"])
            .arg(program)
            .args(args);
        c
    };
    let mut mp_args = vec!["--local"];
    mp_args.extend(quick_arg);
    let mut py_args = vec!["-m", "mpi4py.futures", script.to_str().context("path")?];
    py_args.extend(quick_arg);
    // The two sides take turns, so that both see the same changes of load.
    let (mut mp, mut py) = (Runs::new(), Runs::new());
    for _ in 0..repeat {
        mp.push(collect(local(&bench, &mp_args))?);
        py.push(collect(local(Path::new(&python()), &py_args))?);
    }
    rows.push(("1 host", mp, py));

    if is_root() {
        eprintln!("\n==== scale-out, three hosts: network namespaces, TCP, mpirun -n 4 ====");
        let hosts = Hosts::create()?;
        let (mut mp, mut py) = (Runs::new(), Runs::new());
        for _ in 0..repeat {
            mp.push(collect(hosts.mpirun_cmd(&root_args, 4, &bench, quick_arg))?);
            py.push(collect(hosts.mpirun_cmd(
                &root_args,
                4,
                Path::new(&python()),
                &py_args,
            ))?);
        }
        drop(hosts);
        rows.push(("3 hosts", mp, py));
    } else {
        eprintln!("(three-host group skipped: making network namespaces needs root)");
    }
    let load_after = load_average();

    let table = table(&rows);
    println!("\n{table}");
    if write {
        let md = format!(
            "# Scale-out benchmark: mp's MPI pool vs mpi4py.futures\n\n\
             Written by `cargo xtask bench-mpi` (also run by `cargo xtask bench`){}. Both sides \
             run in the same run, under the same `mpirun` settings, taking turns ({repeat} \
             run(s) each; the figures are medians, with the lowest and highest in \
             brackets): one host with 2 worker ranks (`mpirun -n 3`, shared memory), and \
             three hosts made of network namespaces joined by veth links with one worker \
             rank each (`mpirun -n 4`, TCP only; see `cargo xtask test-mpi`). All \
             namespaces share this machine's CPUs, so the three-host speed-up is bounded by \
             the machine, not by the network.\n\n\
             - map: `map` of 100 000 trivial tasks with Python's default chunk size \
             (`ceil(n / (4 * workers))`), seconds (the median of 5 maps in each run, 3 \
             with `--quick`);\n\
             - chunk size 1: trivial tasks one per message (20 000 for mp, 5 000 for \
             mpi4py; 5 000 and 2 000 with `--quick`), tasks per second;\n\
             - round trip: `submit` then `result`, one at a time, microseconds;\n\
             - speed-up: CPU-bound tasks (a fixed number of arithmetic steps, calibrated \
             in the client to about 20 ms), 8 per worker, chunk size 1, against the time of \
             one task in the client times their number (the median of 5 maps in each run, \
             3 with `--quick`). The CPUs are the limit (2 here), and the machine's other \
             work takes its share of them, so the absolute figures move with the load; \
             the local row is mp's process pool with as many workers, in the same \
             process, the two pools taking turns map by map, and its last column is the \
             MPI pool's speed-up as a share of the local pool's (the median of the turns' \
             ratios in each run; between runs, median and range).\n\n\
             Machine: {} CPU(s), load average (1, 5, 15 min) {load_before} before and \
             {load_after} after; it is shared with other work, so the figures are \
             indicative.\n\n{table}\n",
            if quick { " with --quick" } else { "" },
            std::thread::available_parallelism().map_or(0, |n| n.get()),
        );
        let path = root().join("docs/benchmarks-mpi.md");
        std::fs::write(&path, md)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// `/proc/loadavg`'s first three fields.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(", "))
        .unwrap_or_else(|_| "unknown".into())
}

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Builds the mp side (release) and returns its path.
fn build() -> Result<PathBuf> {
    let mut cmd = cargo();
    cmd.args([
        "build",
        "--release",
        "-p",
        "mp-mpi",
        "--example",
        "mpi_bench",
        "--message-format=json-render-diagnostics",
    ]);
    eprintln!("$ {}", show(&cmd));
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("could not run {}", show(&cmd)))?;
    if !out.status.success() {
        bail!("{} failed", show(&cmd));
    }
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = json::parse(line) else { continue };
        if let Some(exe) = msg.get("executable").and_then(|e| e.as_str()) {
            return Ok(PathBuf::from(exe));
        }
    }
    bail!("cargo did not report the mpi_bench executable")
}

/// Runs a side and reads its `RESULT` lines.
fn collect(mut cmd: Command) -> Result<Results> {
    let line = show(&cmd);
    eprintln!("$ {line}");
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("could not run {line}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("{line} failed ({}):\n{text}", out.status);
    }
    let mut r = Results::new();
    for l in text.lines() {
        let mut f = l.split_whitespace();
        if let (Some("RESULT"), Some(k), Some(v)) = (f.next(), f.next(), f.next()) {
            if let Ok(v) = v.parse() {
                eprintln!("  {k} = {v}");
                r.insert(k.to_string(), v);
            }
        }
    }
    Ok(r)
}

/// The runs of one side.
type Runs = Vec<Results>;

/// The median of a metric over runs, with the lowest and highest value.
fn stats(runs: &Runs, key: &str) -> Option<(f64, f64, f64)> {
    let mut v: Vec<f64> = runs.iter().filter_map(|r| r.get(key).copied()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    let median = if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    };
    Some((median, v[0], v[v.len() - 1]))
}

fn table(rows: &[(&str, Runs, Runs)]) -> String {
    let mut t = String::from(
        "| hosts | measure | mp (MPI pool) | mpi4py.futures | mp vs mpi4py |\n|---|---|---:|---:|---:|\n",
    );
    let fmt = |key: &str, v: f64| {
        if key == "speedup" || key == "local_speedup" || key == "map_s" {
            format!("{v:.3}")
        } else {
            format!("{v:.0}")
        }
    };
    let cell = |runs: &Runs, key: &str| match stats(runs, key) {
        None => "–".to_string(),
        Some((m, _, _)) if runs.len() == 1 => fmt(key, m),
        Some((m, lo, hi)) => format!("**{}** ({}–{})", fmt(key, m), fmt(key, lo), fmt(key, hi)),
    };
    let median = |runs: &Runs, key: &str| stats(runs, key).map_or(f64::NAN, |s| s.0);
    for (hosts, mp, py) in rows {
        let w = median(mp, "workers");
        let lines: [(&str, &str, bool); 4] = [
            ("map 100k, s", "map_s", false),
            ("chunk size 1, tasks/s", "chunk1_per_s", true),
            ("round trip, µs", "roundtrip_us", false),
            ("speed-up (20 ms tasks)", "speedup", true),
        ];
        for (label, key, higher_better) in lines {
            let (a, b) = (median(mp, key), median(py, key));
            let ratio = if higher_better { a / b } else { b / a };
            t.push_str(&format!(
                "| {hosts} ({w} workers) | {label} | {} | {} | {ratio:.1}x {} |\n",
                cell(mp, key),
                cell(py, key),
                if higher_better { "higher" } else { "faster" }
            ));
        }
        if stats(mp, "local_speedup").is_some() {
            // Each run's median ratio of the MPI pool's speed-up to the local pool's, the
            // two taking turns within the run.
            let pct: Runs = mp
                .iter()
                .filter_map(|r| {
                    Some(Results::from([(
                        "pct".to_string(),
                        100.0 * r.get("speedup_vs_local")?,
                    )]))
                })
                .collect();
            t.push_str(&format!(
                "| {hosts} ({w} workers) | speed-up, mp's local process pool | {} | | MPI pool at {}% of it |\n",
                cell(mp, "local_speedup"),
                cell(&pct, "pct"),
            ));
        }
    }
    t
}
