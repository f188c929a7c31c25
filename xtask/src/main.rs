//! `cargo xtask`: the project's automation.
//!
//! ```text
//! cargo xtask test-all-backends [--backend <b>]...   tests (all targets, then doctests) per backend
//! cargo xtask lint [--no-fmt] [--backend <b>]...     rustfmt --check, clippy -D warnings
//! cargo xtask test-windows [--backend b] [-- <args>]  mp-core's tests for Windows, under Wine
//! cargo xtask bench [--quick] [--no-write]           mp vs raw sockets vs Python -> docs/benchmarks.md
//! cargo xtask bench-mpi [--quick] [--no-write]       MPI pool vs mpi4py.futures -> docs/benchmarks-mpi.md
//! cargo xtask test-mpi [--no-namespaces]             the MPI pool: 1 host (2-5 ranks), 3 namespace hosts
//! ```
//!
//! Every command it runs is printed first, prefixed with `$`.

mod bench;
mod bench_mpi;
mod json;
mod test_mpi;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{bail, Context, Result};

/// Transport backends of mp-core, in the order they are tested. Each is a cargo feature of
/// mp-core of the same name; one that mp-core does not (yet) have is skipped, so adding a
/// backend here is one line.
const BACKENDS: &[&str] = &["socket", "shm", "threads"];

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  test-all-backends [--backend <b>]...  cargo test (all targets, then --doc) once per backend
  lint [--no-fmt] [--backend <b>]...    cargo fmt --check; cargo clippy --all-targets -D warnings
  test-windows [--backend <b>]... [-- <cargo test args>]
                                        mp-core's tests cross-compiled for Windows, run in Wine,
                                        once per backend
                                        (needs $MP_WINDOWS_ENV or ../shared/windows/env.sh)
  bench [--quick] [--no-write]          benchmarks vs raw Unix sockets and Python's multiprocessing;
                                        writes docs/benchmarks.md and docs/benchmarks.svg
  bench-mpi [--quick] [--no-write]      mp's MPI pool vs mpi4py.futures on 1 and 3 hosts
                                        (root for the 3 namespace hosts) -> docs/benchmarks-mpi.md
  test-mpi [--no-namespaces]            the MPI pool's tests (crate mp-mpi): alone, under mpirun
                                        -n 1/2/3/5, and across three network namespaces (root);
                                        installs Open MPI first if it is missing
  backends                              lists the backends mp-core has

options:
  --backend <b>   only this backend (repeatable; also --backend=a,b)";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        println!("{USAGE}");
        return Ok(());
    };
    let rest = &args[1..];
    match cmd.as_str() {
        "test-all-backends" => test_all_backends(&parse_backends(rest)?),
        "lint" => {
            let fmt = !rest.iter().any(|a| a == "--no-fmt");
            let rest: Vec<String> = rest.iter().filter(|a| *a != "--no-fmt").cloned().collect();
            lint(fmt, &parse_backends(&rest)?)
        }
        "test-windows" => test_windows(rest),
        "test-mpi" => test_mpi::run(rest),
        "bench-mpi" => bench_mpi::run(rest),
        "bench" => bench::run(rest),
        "backends" => {
            for b in available_backends()? {
                println!("{b}");
            }
            Ok(())
        }
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown command {other:?}\n\n{USAGE}"),
    }
}

/// The workspace root (the parent of this crate's directory).
///
/// `cargo run` (and so `cargo xtask`) sets `CARGO_MANIFEST_DIR` for the run; it is read at
/// run time first, so an xtask binary built in another checkout sharing this target dir
/// still works on this one.
pub fn root() -> PathBuf {
    let manifest_dir =
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    Path::new(&manifest_dir)
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}

/// `cargo`, as chosen by the cargo that runs us.
pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root());
    c
}

/// Prints the command as a shell line.
pub fn show(cmd: &Command) -> String {
    let mut line = String::new();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            line.push_str(&format!("{}={} ", k.to_string_lossy(), v.to_string_lossy()));
        }
    }
    let program = cmd.get_program();
    if std::env::var_os("CARGO").as_deref() == Some(program) {
        line.push_str("cargo"); // the full toolchain path is noise
    } else {
        line.push_str(&program.to_string_lossy());
    }
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"$&|;<>()*?".contains(c)) {
            line.push_str(&format!(" '{}'", a.replace('\'', r"'\''")));
        } else {
            line.push(' ');
            line.push_str(&a);
        }
    }
    line
}

/// Runs a command with inherited stdio; an error if it fails.
pub fn run_cmd(mut cmd: Command) -> Result<()> {
    let line = show(&cmd);
    eprintln!("$ {line}");
    let status = cmd
        .status()
        .with_context(|| format!("could not run {line}"))?;
    if !status.success() {
        bail!("{line}: {status}");
    }
    Ok(())
}

/// The output of `cargo metadata --no-deps`.
pub fn metadata() -> Result<json::Json> {
    let mut cmd = cargo();
    cmd.args(["metadata", "--format-version", "1", "--no-deps"]);
    let out = cmd
        .output()
        .with_context(|| format!("could not run {}", show(&cmd)))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            show(&cmd),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    json::parse(std::str::from_utf8(&out.stdout)?).context("parsing cargo metadata")
}

/// The entries of [`BACKENDS`] that are features of mp-core.
fn available_backends() -> Result<Vec<&'static str>> {
    let meta = metadata()?;
    let packages = meta
        .get("packages")
        .and_then(|p| p.as_array())
        .context("cargo metadata has no packages")?;
    let core = packages
        .iter()
        .find(|p| p.get("name").and_then(|n| n.as_str()) == Some("mp-core"))
        .context("mp-core is not in the workspace")?;
    let features = core.get("features").map(|f| f.keys()).unwrap_or_default();
    Ok(BACKENDS
        .iter()
        .copied()
        .filter(|b| features.contains(b))
        .collect())
}

/// `--backend a --backend b,c` → the chosen backends, checked against mp-core's features;
/// none given → all that exist.
fn parse_backends(args: &[String]) -> Result<Vec<&'static str>> {
    let available = available_backends()?;
    let mut wanted: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--backend" {
            let v = it.next().context("--backend needs a value")?;
            wanted.extend(v.split(',').map(str::to_owned));
        } else if let Some(v) = a.strip_prefix("--backend=") {
            wanted.extend(v.split(',').map(str::to_owned));
        } else {
            bail!("unknown option {a:?}\n\n{USAGE}");
        }
    }
    if wanted.is_empty() {
        return Ok(available);
    }
    wanted
        .iter()
        .map(|w| {
            available.iter().copied().find(|b| b == w).with_context(|| {
                format!("backend {w:?} is not a feature of mp-core (it has: {available:?})")
            })
        })
        .collect()
}

/// The cargo arguments selecting one backend for the whole workspace. Features of other
/// packages are named `package/feature`; `--no-default-features` applies to every selected
/// package, so crates depending on mp-core must leave its defaults off themselves (mp-bench
/// does).
fn backend_args(backend: &str) -> Vec<String> {
    vec![
        "--workspace".into(),
        // Needs an MPI library; `cargo xtask test-mpi` builds and tests it.
        "--exclude".into(),
        "mp-mpi".into(),
        "--no-default-features".into(),
        "--features".into(),
        format!("mp-core/{backend}"),
    ]
}

fn test_all_backends(backends: &[&str]) -> Result<()> {
    if backends.is_empty() {
        bail!("no backend to test");
    }
    let started = Instant::now();
    let mut results = Vec::new();
    for backend in backends {
        eprintln!("\n==== backend {backend} ====");
        let t = Instant::now();
        // Unit, integration, example and bin targets; doctests separately, so a failure says
        // which half failed. Every run shares the workspace target dir, so the second
        // command and later backends reuse what the first built.
        let mut all = cargo();
        all.arg("test")
            .args(backend_args(backend))
            .args(["--all-targets", "--no-fail-fast"]);
        let r1 = run_cmd(all);
        let mut doc = cargo();
        doc.arg("test")
            .args(backend_args(backend))
            .args(["--doc", "--no-fail-fast"]);
        let r2 = run_cmd(doc);
        results.push((backend, r1, r2, t.elapsed()));
    }
    eprintln!("\n==== summary ({:.0?} total) ====", started.elapsed());
    let mut failed = 0;
    for (backend, r1, r2, took) in &results {
        let word = |r: &Result<()>| if r.is_ok() { "ok" } else { "FAILED" };
        eprintln!(
            "  {backend:<8} tests: {:<6}  doctests: {:<6}  ({took:.0?})",
            word(r1),
            word(r2)
        );
        failed += r1.is_err() as usize + r2.is_err() as usize;
    }
    if failed > 0 {
        bail!("{failed} test run(s) failed");
    }
    Ok(())
}

fn lint(fmt: bool, backends: &[&str]) -> Result<()> {
    if fmt {
        let mut cmd = cargo();
        cmd.args(["fmt", "--all", "--", "--check"]);
        run_cmd(cmd)?;
    }
    for backend in backends {
        let mut clippy = cargo();
        clippy.arg("clippy").args(backend_args(backend)).args([
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]);
        run_cmd(clippy)?;
    }
    // mp-mpi (and mp-core's feature mpi) only where an MPI library is installed.
    if Command::new("mpicc")
        .arg("--showme:version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let mut clippy = cargo();
        clippy.args([
            "clippy",
            "-p",
            "mp-mpi",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]);
        run_cmd(clippy)?;
    } else {
        eprintln!("xtask: clippy of mp-mpi skipped: no MPI library (mpicc) here");
    }
    Ok(())
}

fn test_windows(rest: &[String]) -> Result<()> {
    let extra: Vec<&String> = rest.iter().skip_while(|a| *a != "--").skip(1).collect();
    let options: Vec<String> = rest.iter().take_while(|a| *a != "--").cloned().collect();
    let backends = parse_backends(&options)?;
    // $MP_WINDOWS_ENV, when set, is the only candidate (so it can also point elsewhere).
    let candidates: Vec<PathBuf> = match std::env::var_os("MP_WINDOWS_ENV") {
        Some(p) => vec![PathBuf::from(p)],
        None => vec![
            PathBuf::from("/work/shared/windows/env.sh"),
            root().join("../shared/windows/env.sh"),
        ],
    };
    let Some(env) = candidates.iter().find(|p| p.is_file()) else {
        eprintln!("xtask: test-windows SKIPPED: no Windows cross environment found");
        eprintln!("  looked for $MP_WINDOWS_ENV and:");
        for c in &candidates {
            eprintln!("    {}", c.display());
        }
        eprintln!("  (the GitHub workflow runs the tests on a real Windows runner instead)");
        return Ok(());
    };
    let quoted_extra: String = extra
        .iter()
        .map(|a| format!(" '{}'", a.replace('\'', r"'\''")))
        .collect();
    // wcargo builds with Debian's rustc; its doctests need the matching rustdoc, not the one
    // the PATH offers (a rustup toolchain of another version refuses the std it built).
    // There is no cargo inside Wine, so the examples are built first for tests/examples.rs.
    // One run per backend; each backend crate's own tests run with its backend.
    // Every backend runs even if an earlier one failed; the exit status says if any did.
    let mut script = String::from(
        r#"source "$1" || exit 1; [ -x /usr/bin/rustdoc ] && export RUSTDOC=/usr/bin/rustdoc; failed="""#,
    );
    for b in &backends {
        let features = format!("--no-default-features --features mp-core/{b}");
        let own = match *b {
            "socket" => " -p mp-windows",
            "shm" => " -p mp-shm",
            _ => "",
        };
        script.push_str(&format!(
            "; echo '==== backend {b} (Windows, Wine) ====' \
             ; {{ wcargo build -q -p mp-core {features} --examples \
             && MP_EXAMPLES_PREBUILT=1 wcargo test -p mp-core{own} {features}{quoted_extra}; }} \
             || failed=\"$failed {b}\""
        ));
    }
    script.push_str(r#"; [ -z "$failed" ] || { echo "test-windows: failed:$failed"; exit 1; }"#);
    let mut cmd = Command::new("bash");
    cmd.current_dir(root())
        .args(["-c", &script, "xtask-test-windows"])
        .arg(env);
    run_cmd(cmd)
}
