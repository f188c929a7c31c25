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

    let mut rows: Vec<(&str, Results, Results)> = Vec::new();
    eprintln!("\n==== scale-out, one host: mpirun -n 3 (2 worker ranks) ====");
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
    let mp = collect(local(&bench, &mp_args))?;
    let mut py_args = vec!["-m", "mpi4py.futures", script.to_str().context("path")?];
    py_args.extend(quick_arg);
    let py = collect(local(Path::new(&python()), &py_args))?;
    rows.push(("1 host", mp, py));

    if is_root() {
        eprintln!("\n==== scale-out, three hosts: network namespaces, TCP, mpirun -n 4 ====");
        let hosts = Hosts::create()?;
        let mp = collect(hosts.mpirun_cmd(&root_args, 4, &bench, quick_arg))?;
        let py = collect(hosts.mpirun_cmd(&root_args, 4, Path::new(&python()), &py_args))?;
        drop(hosts);
        rows.push(("3 hosts", mp, py));
    } else {
        eprintln!("(three-host group skipped: making network namespaces needs root)");
    }

    let table = table(&rows);
    println!("\n{table}");
    if write {
        let md = format!(
            "# Scale-out benchmark: mp's MPI pool vs mpi4py.futures\n\n\
             Written by `cargo xtask bench-mpi` (also run by `cargo xtask bench`){}. Both sides \
             run in the same run, under the same `mpirun` settings: one host with 2 worker \
             ranks (`mpirun -n 3`, shared memory), and three hosts made of network \
             namespaces joined by veth links with one worker rank each (`mpirun -n 4`, TCP \
             only; see `cargo xtask test-mpi`). All namespaces share this machine's CPUs, so \
             the three-host speed-up is bounded by the machine, not by the network.\n\n\
             - map: `map` of 100 000 trivial tasks with Python's default chunk size \
             (`ceil(n / (4 * workers))`), seconds;\n\
             - chunk size 1: trivial tasks one per message, tasks per second;\n\
             - round trip: `submit` then `result`, one at a time, microseconds;\n\
             - speed-up: tasks that each keep a CPU busy for 20 ms, 8 per worker, against \
             running them one after the other (2 CPUs here: at most 2); the local column is \
             mp's process pool with as many workers, in the same run.\n\n\
             Figures from a machine shared with other work are indicative.\n\n{table}\n",
            if quick { " with --quick" } else { "" }
        );
        let path = root().join("docs/benchmarks-mpi.md");
        std::fs::write(&path, md)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
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

fn table(rows: &[(&str, Results, Results)]) -> String {
    let mut t = String::from(
        "| hosts | measure | mp (MPI pool) | mpi4py.futures | mp vs mpi4py |\n|---|---|---:|---:|---:|\n",
    );
    let get = |r: &Results, k: &str| r.get(k).copied().unwrap_or(f64::NAN);
    for (hosts, mp, py) in rows {
        let w = get(mp, "workers");
        let lines: [(&str, &str, bool, &str); 4] = [
            ("map 100k, s", "map_s", false, "{:.3}"),
            ("chunk size 1, tasks/s", "chunk1_per_s", true, "{:.0}"),
            ("round trip, µs", "roundtrip_us", false, "{:.0}"),
            ("speed-up (20 ms tasks)", "speedup", true, "{:.2}"),
        ];
        for (label, key, higher_better, _) in lines {
            let (a, b) = (get(mp, key), get(py, key));
            let ratio = if higher_better { a / b } else { b / a };
            let fmt = |v: f64| {
                if key == "speedup" || key == "map_s" {
                    format!("{v:.3}")
                } else {
                    format!("{v:.0}")
                }
            };
            t.push_str(&format!(
                "| {hosts} ({w} workers) | {label} | {} | {} | {ratio:.1}x {} |\n",
                fmt(a),
                fmt(b),
                if higher_better { "higher" } else { "faster" }
            ));
        }
        if let Some(l) = mp.get("local_speedup") {
            let s = get(mp, "speedup");
            t.push_str(&format!(
                "| {hosts} ({w} workers) | speed-up, mp's local process pool | {l:.3} | | MPI pool at {:.0}% of it |\n",
                100.0 * s / l
            ));
        }
    }
    t
}
