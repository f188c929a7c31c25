//! `cargo xtask bench-platform`: what the portable POSIX code paths cost on this machine.
//!
//! Builds `mp-bench` twice, as `cargo xtask bench` does (release, shm feature) and with
//! mp-core's `posix-generic` feature on (in its own target directory, `<target>/posix-generic`,
//! so neither build undoes the other), runs the `platform` group of each in alternation
//! (lock hand-off, event ping-pong, queue round trip between two processes), and prints the
//! medians side by side; without `--no-write` it also writes `docs/benchmarks-platform.md`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};

use crate::bench::{collect, loadavg, sh, Results};
use crate::json::Json;
use crate::{cargo, metadata, root, run_cmd};

/// The two builds: implementation name (as mp-bench reports it), extra features, target
/// subdirectory (`None`: the workspace's own).
const BUILDS: &[(&str, &str, Option<&str>)] = &[
    ("native", "shm", None),
    ("posix-generic", "shm,posix-generic", Some("posix-generic")),
];

pub fn run(args: &[String]) -> Result<()> {
    let crate::bench::BenchOptions {
        quick,
        write,
        rounds,
    } = crate::bench::BenchOptions::parse(args, 3)?;
    let base = PathBuf::from(
        metadata()?
            .get("target_directory")
            .and_then(Json::as_str)
            .context("cargo metadata has no target_directory")?,
    );
    let mut bins = Vec::new();
    for (name, features, dir) in BUILDS {
        let target = dir.map_or_else(|| base.clone(), |d| base.join(d));
        let mut build = cargo();
        build
            .args([
                "build",
                "--release",
                "-p",
                "mp-bench",
                "--features",
                features,
            ])
            .env("CARGO_TARGET_DIR", &target);
        run_cmd(build)?;
        bins.push((*name, target.join("release/mp-bench")));
    }
    let mut results = Results::new();
    let load_before = loadavg();
    for round in 1..=rounds {
        for (name, bin) in &bins {
            eprintln!("-- round {round}/{rounds}: {name}");
            let mut cmd = Command::new(bin);
            cmd.args(["--only", "platform"]);
            if quick {
                cmd.arg("--quick");
            }
            collect(cmd, &mut results)?;
        }
    }
    let table = table(&results);
    println!("\n{table}");
    if write {
        let md = format!(
            "# What the portable POSIX paths cost\n\n\
             Written by `cargo xtask bench-platform` ({rounds} round(s){}). `native` is a normal \
             Linux build (futex wait/wake, memfd segments and spool); `posix-generic` is the same \
             benchmark built with mp-core's `posix-generic` feature, which forces the portable \
             code paths a Unix without Linux's, macOS's or FreeBSD's calls would take (a polling \
             wait instead of the futex, `shm_open` segments, a temporary-file queue spool). \
             macOS and FreeBSD use their own native calls (`os_sync_wait_on_address` or \
             `__ulock_wait`, `_umtx_op`), not these fallbacks. Medians; p10–p90 in brackets; \
             lower is better.\n\n\
             Machine: {} CPUs, `{}`, load average {load_before} before and {} after the run. \
             Figures from a loaded machine are indicative: compare the two columns of one run, \
             not runs with each other.\n\n{table}\n             Lock and event waits sleep at once, so every hand-off pays the wait's wake-up: the              futex's, or the generic poll's (it re-checks the word after 25 µs, 50 µs, ... up to              every 2 ms, plus the kernel's timer slack). Queue getters spin for up to 50 µs              before they sleep, so a round trip seldom reaches the wait and the two builds stay              close; the rest of the difference is the temporary-file spool.\n",
            if quick { ", quick" } else { "" },
            sh("nproc", &[]),
            sh("uname", &["-srm"]),
            loadavg(),
        );
        let path = root().join("docs/benchmarks-platform.md");
        std::fs::write(&path, md)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn micros(s: f64) -> String {
    format!("{:.1} µs", s * 1e6)
}

/// The Markdown table: one row per benchmark, one column per build, and their ratio.
fn table(results: &Results) -> String {
    let mut t = String::from("| benchmark | native | posix-generic | generic / native | what |\n");
    t.push_str("|---|---:|---:|---:|---|\n");
    let benches: std::collections::BTreeSet<&String> = results.keys().map(|(b, _)| b).collect();
    for bench in benches {
        let series = |imp: &str| results.get(&(bench.clone(), imp.to_owned()));
        let cell = |imp: &str| {
            series(imp).map_or_else(
                || "–".to_owned(),
                |s| {
                    format!(
                        "{} [{}–{}]",
                        micros(s.median()),
                        micros(s.quantile(0.1)),
                        micros(s.quantile(0.9))
                    )
                },
            )
        };
        let ratio = match (series("native"), series("posix-generic")) {
            (Some(n), Some(g)) => format!("{:.1}×", g.median() / n.median()),
            _ => "–".to_owned(),
        };
        let note = series("native")
            .or(series("posix-generic"))
            .map_or("", |s| &s.note);
        let _ = writeln!(
            t,
            "| `{bench}` | {} | {} | {ratio} | {note} |",
            cell("native"),
            cell("posix-generic"),
        );
    }
    t
}
