//! `cargo xtask`: the project's automation.
//!
//! ```text
//! cargo xtask test-all-backends [--backend <b>]...   tests (all targets, then doctests) per backend
//! cargo xtask lint [--no-fmt] [--backend <b>]...     rustfmt --check, clippy -D warnings
//! cargo xtask test-windows [--backend b] [-- <args>]  mp-core's tests for Windows, under Wine
//! cargo xtask check-targets [--target t]...          cargo check for macOS, FreeBSD and Windows
//! cargo xtask bench [--quick] [--no-write] [--no-mpi] mp vs raw sockets vs Python -> docs/benchmarks.md, then bench-mpi
//! cargo xtask chaos [--minutes N] [--seed S]          workloads while processes are killed
//! cargo xtask bench-platform [--quick] [--no-write]  native vs posix-generic paths -> docs/benchmarks-platform.md
//! cargo xtask bench-mpi [--quick] [--repeat N]      MPI pool vs mpi4py.futures -> docs/benchmarks-mpi.md
//! cargo xtask test-mpi [--no-namespaces]             the MPI pool: 1 host (2-5 ranks), 3 namespace hosts
//! ```
//!
//! Every command it runs is printed first, prefixed with `$`.

mod bench;
mod bench_mpi;
mod bench_platform;
mod cross;
mod json;
mod proof;
mod test_mpi;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{bail, Context, Result};

/// Transport backends of mp-core, in the order they are tested. Each is a cargo feature of
/// mp-core of the same name; one that mp-core does not (yet) have is skipped, so adding a
/// backend here is one line.
const BACKENDS: &[&str] = &["socket", "shm", "threads"];

/// Extra test runs that are not backends: a name and the mp-core features it turns on. They
/// take `--backend <name>` like a backend and run after the backends.
///
/// `posix-generic` (Unix only): the shm backend (whose rings add the `shm_open` segment path
/// to what every backend uses) with mp-core's `posix-generic` feature, which forces the
/// portable POSIX code paths on Linux: `shm_open` segments, the temporary-file queue spool,
/// `kill(pid, 0)` liveness and no exit watch, no parent-death signal (the watchdog alone),
/// close-on-exec under the fork lock, the polling wait.
const VARIANTS: &[(&str, &[&str])] = &[("posix-generic", &["shm", "posix-generic"])];

/// Targets `check-targets` checks.
const CHECK_TARGETS: &[&str] = &[
    "aarch64-apple-darwin",
    "x86_64-apple-darwin",
    "x86_64-unknown-freebsd",
    "x86_64-pc-windows-gnu",
];

/// The target on which `check-targets` also checks the `posix-generic` paths, which exist
/// for Unixes other than Linux (the tests compile them for Linux already). Both feature sets
/// stay side by side in the target's directory, so neither check undoes the other.
const CHECK_GENERIC_ON: &str = "aarch64-apple-darwin";

/// The library crates `check-targets` checks (lib, tests, examples), all backends on.
const CHECK_PACKAGES: &[&str] = &["mp-ipc", "mp-unix", "mp-windows", "mp-shm", "mp-core"];

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  test-all-backends [--backend <b>]...  cargo test (all targets, then --doc) once per backend
  lint [--no-fmt] [--backend <b>]...    cargo fmt --check; cargo clippy --all-targets -D warnings
  test-windows [--backend <b>]... [-- <cargo test args>]
                                        mp-core's tests cross-compiled for Windows, run in Wine,
                                        once per backend
                                        (needs $MP_WINDOWS_ENV or ../shared/windows/env.sh)
  check-targets [--target <t>]...       cargo check (library, tests, examples; every backend;
                                        no warnings allowed) for aarch64-apple-darwin (also
                                        with posix-generic), x86_64-apple-darwin,
                                        x86_64-unknown-freebsd and x86_64-pc-windows-gnu,
                                        with Debian's Rust and
                                        -Zbuild-std (installs rustc-web, cargo-web,
                                        rust-web-src if missing)
  bench [--quick] [--no-write] [--no-mpi]
                                        benchmarks vs raw Unix sockets and Python's multiprocessing;
                                        writes docs/benchmarks.md and docs/benchmarks.svg; then
                                        the scale-out group (bench-mpi) unless --no-mpi
  chaos [--minutes <n>] [--seconds <n>] [--seed <s>] [--backend <b>]...
                                        pool, executor, queue, manager and lock workloads under
                                        every start method while random processes are killed,
                                        checking that nothing is lost, duplicated, torn or hung
                                        and nothing leaks; the time (default 1 minute) is shared
                                        by the process backends (socket, shm)
  sanitize [--sanitizer address|thread]... [--backend <b>]... [-- <cargo test args>]
                                        the tests of mp-ipc, mp-unix, mp-shm and mp-core under
                                        AddressSanitizer (this toolchain) and ThreadSanitizer
                                        (Debian's Rust, std rebuilt with -Zbuild-std)
  fuzz [--seconds <n>] [<target>]...    every fuzz target (fuzz/, cargo fuzz) for n seconds
                                        each (default 60) over its committed seeds; prints
                                        runs and coverage
  loom [-- <test args>]                 the loom models of the sync protocols (--cfg loom)
  miri [-- <test args>]                 the one-process unit tests under Miri (nightly + miri)
  bench-platform [--quick] [--no-write] [--rounds <n>]
                                        lock hand-off, event ping-pong and queue round trip with
                                        the native and the posix-generic code paths; writes
                                        docs/benchmarks-platform.md
  bench-mpi [--quick] [--no-write] [--repeat <n>]
                                        mp's MPI pool vs mpi4py.futures on 1 and 3 hosts
                                        (root for the 3 namespace hosts), n runs of each side
                                        taking turns (default 5, 1 with --quick), medians
                                        -> docs/benchmarks-mpi.md
  test-mpi [--no-namespaces]            the MPI pool's tests (crate mp-mpi): alone, under mpirun
                                        -n 1/2/3/5, and across three network namespaces (root);
                                        installs Open MPI first if it is missing
  backends                              lists the backends mp-core has

options:
  --backend <b>   only this backend (repeatable; also --backend=a,b); `posix-generic` is the
                  extra Unix run with the portable POSIX code paths forced";

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
        "test-all-backends" => test_all_backends(&parse_backends(rest, true)?),
        "lint" => {
            let fmt = !rest.iter().any(|a| a == "--no-fmt");
            let rest: Vec<String> = rest.iter().filter(|a| *a != "--no-fmt").cloned().collect();
            lint(fmt, &parse_backends(&rest, true)?)
        }
        "test-windows" => test_windows(rest),
        "check-targets" => check_targets(rest),
        "test-mpi" => test_mpi::run(rest),
        "bench-mpi" => bench_mpi::run(rest),
        "bench" => bench::run(rest),
        "chaos" => chaos(rest),
        "sanitize" => proof::sanitize(rest),
        "fuzz" => proof::fuzz(rest),
        "loom" => proof::loom(rest),
        "miri" => proof::miri(rest),
        "bench-platform" => bench_platform::run(rest),
        "backends" => {
            for b in available_backends(true)? {
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

/// The entries of [`BACKENDS`] that are features of mp-core, then the [`VARIANTS`] whose
/// features mp-core all has (on Unix only: they are Unix code paths).
fn available_backends(with_variants: bool) -> Result<Vec<&'static str>> {
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
    let has = |f: &str| features.contains(&f);
    let variants = VARIANTS
        .iter()
        .filter(|(_, needs)| with_variants && cfg!(unix) && needs.iter().all(|f| has(f)))
        .map(|(name, _)| *name);
    Ok(BACKENDS
        .iter()
        .copied()
        .filter(|b| has(b))
        .chain(variants)
        .collect())
}

/// `--backend a --backend b,c` → the chosen backends, checked against mp-core's features;
/// none given → all that exist (and the [`VARIANTS`] if `with_variants`).
fn parse_backends(args: &[String], with_variants: bool) -> Result<Vec<&'static str>> {
    let available = available_backends(with_variants)?;
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

/// The cargo arguments selecting one backend (or [variant](VARIANTS)) for the whole
/// workspace but mp-mpi (it needs an MPI library; `cargo xtask test-mpi` builds and tests
/// it). Features of other packages are named `package/feature`; `--no-default-features`
/// applies to every selected package, so crates depending on mp-core must leave its
/// defaults off themselves (mp-bench does).
fn backend_args(backend: &str) -> Vec<String> {
    let mut args: Vec<String> = vec!["--workspace".into(), "--exclude".into(), "mp-mpi".into()];
    args.extend(backend_features(backend));
    args
}

/// The feature arguments of [`backend_args`] alone, for commands that select packages with
/// `-p` (where `--workspace`/`--exclude` do not belong).
pub(crate) fn backend_features(backend: &str) -> Vec<String> {
    let features: Vec<String> = match VARIANTS.iter().find(|(name, _)| *name == backend) {
        Some((_, features)) => features.iter().map(|f| format!("mp-core/{f}")).collect(),
        None => vec![format!("mp-core/{backend}")],
    };
    vec![
        "--no-default-features".into(),
        "--features".into(),
        features.join(","),
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
    let backends = parse_backends(&options, false)?;
    // $MP_WINDOWS_ENV, when set, is the only candidate (so it can also point elsewhere).
    let candidates: Vec<PathBuf> = match std::env::var_os("MP_WINDOWS_ENV") {
        Some(p) => vec![PathBuf::from(p)],
        // The project's shared/ folder sits beside the checkout (as CI lays it out).
        None => vec![root().join("../shared/windows/env.sh")],
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
    // The environment script installs Wine, MinGW and the toolchain if missing and exports
    // the Wine prefix, the linker and the runner; the builds themselves are `cross::cargo`.
    let vars = sourced_env(env)?;
    cross::ensure_packages(cross::PACKAGES)?;
    // Doctests need the rustdoc that matches Debian's rustc, not the one the PATH offers (a
    // rustup toolchain of another version refuses the std it built).
    let rustdoc = Path::new("/usr/bin/rustdoc").exists();
    // One run per backend; each backend crate's own tests run with its backend. There is no
    // cargo inside Wine, so the examples are built first for tests/examples.rs. Every
    // backend runs even if an earlier one failed; the exit status says if any did.
    let mut failed = Vec::new();
    for b in &backends {
        eprintln!("\n==== backend {b} (Windows, Wine) ====");
        let features = [
            "--no-default-features".to_string(),
            "--features".into(),
            format!("mp-core/{b}"),
        ];
        let mut build = cross::cargo("build", WINDOWS, "windows")?;
        build
            .envs(vars.iter().map(|(k, v)| (k, v)))
            .args(["-q", "-p", "mp-core", "--examples"])
            .args(&features);
        let mut test = cross::cargo("test", WINDOWS, "windows")?;
        test.envs(vars.iter().map(|(k, v)| (k, v)))
            .env("MP_EXAMPLES_PREBUILT", "1")
            .args(["-p", "mp-core"]);
        match *b {
            "socket" => test.args(["-p", "mp-windows"]),
            "shm" => test.args(["-p", "mp-shm"]),
            _ => &mut test,
        };
        test.args(&features).args(&extra);
        if rustdoc {
            test.env("RUSTDOC", "/usr/bin/rustdoc");
        }
        if run_cmd(build).and_then(|()| run_cmd(test)).is_err() {
            failed.push(*b);
        }
    }
    if !failed.is_empty() {
        bail!("test-windows: failed: {}", failed.join(" "));
    }
    Ok(())
}

const WINDOWS: &str = "x86_64-pc-windows-gnu";

/// The variables a shell script sets or changes when sourced (run with bash; its output goes
/// to stderr).
fn sourced_env(script: &Path) -> Result<Vec<(String, String)>> {
    let mut cmd = Command::new("bash");
    cmd.args(["-c", r#"source "$1" >&2 && env -0"#, "xtask"])
        .arg(script)
        .stderr(std::process::Stdio::inherit());
    eprintln!("$ {}", show(&cmd));
    let out = cmd
        .output()
        .with_context(|| format!("could not source {}", script.display()))?;
    if !out.status.success() {
        bail!("sourcing {} failed: {}", script.display(), out.status);
    }
    Ok(out
        .stdout
        .split(|&b| b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok()?.split_once('='))
        .filter(|(k, v)| std::env::var(k).ok().as_deref() != Some(*v))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

/// `cargo check` of the library crates (library, tests, examples; every backend) for each
/// target, with Debian's toolchain building the target's std, each target in its own
/// target directory (`check-<target>`) so that a second run is incremental. A warning fails
/// the check like an error.
fn check_targets(rest: &[String]) -> Result<()> {
    let mut targets: Vec<String> = Vec::new();
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--target" => targets.push(it.next().context("--target needs a value")?.clone()),
            other => bail!("unknown option {other:?}\n\n{USAGE}"),
        }
    }
    if targets.is_empty() {
        targets = CHECK_TARGETS.iter().map(|t| t.to_string()).collect();
    }
    cross::ensure_packages(cross::PACKAGES)?;
    let started = Instant::now();
    let mut results = Vec::new();
    let runs = targets.iter().flat_map(|t| {
        let generic = (t == CHECK_GENERIC_ON).then_some((t, true));
        [(t, false)].into_iter().chain(generic)
    });
    for (t, generic) in runs {
        let name = if generic {
            format!("{t} (posix-generic)")
        } else {
            t.clone()
        };
        eprintln!("\n==== check {name} ====");
        let took = Instant::now();
        let mut cmd = cross::cargo("check", t, &format!("check-{t}"))?;
        for p in CHECK_PACKAGES {
            cmd.args(["-p", p]);
        }
        let features = if generic {
            "mp-core/shm,mp-core/threads,mp-core/posix-generic"
        } else {
            "mp-core/shm,mp-core/threads"
        };
        cmd.args(["--all-targets", "--features", features])
            .env("CARGO_TERM_COLOR", "never");
        results.push((name, run_without_warnings(cmd), took.elapsed()));
    }
    eprintln!("\n==== summary ({:.0?} total) ====", started.elapsed());
    let mut failed = 0;
    for (t, r, took) in &results {
        match r {
            Ok(()) => eprintln!("  {t:<40} ok      ({took:.0?})"),
            Err(e) => {
                failed += 1;
                eprintln!("  {t:<40} FAILED  ({took:.0?}): {e:#}");
            }
        }
    }
    if failed > 0 {
        bail!("{failed} target(s) failed");
    }
    Ok(())
}

/// Runs a cargo command, passing its output through, and fails if it fails or prints a
/// warning (cargo shows warnings of workspace crates only, so each is ours).
fn run_without_warnings(mut cmd: Command) -> Result<()> {
    use std::io::BufRead;
    let line = show(&cmd);
    eprintln!("$ {line}");
    let mut child = cmd
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("could not run {line}"))?;
    let mut warnings = 0;
    for l in std::io::BufReader::new(child.stderr.take().expect("piped")).lines() {
        let l = l?;
        if l.starts_with("warning") {
            warnings += 1;
        }
        eprintln!("{l}");
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("{line}: {status}");
    }
    if warnings > 0 {
        bail!("{warnings} warning line(s)");
    }
    Ok(())
}

/// `cargo xtask chaos`: runs the `mp-chaos` binary once per process backend (the threads
/// backend runs in one process, so there is nothing to kill), sharing the time between them.
/// One seed, printed, drives every run, so a failure's choices can be replayed with `--seed`.
fn chaos(rest: &[String]) -> Result<()> {
    let mut seconds = 60u64;
    let mut seed = None;
    let mut other = Vec::new();
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        let mut number = |name: &str| -> Result<u64> {
            it.next()
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("{name} needs a number"))
        };
        match a.as_str() {
            "--minutes" => seconds = number("--minutes")? * 60,
            "--seconds" => seconds = number("--seconds")?,
            "--seed" => seed = Some(number("--seed")?),
            _ => other.push(a.clone()),
        }
    }
    let backends: Vec<&str> = parse_backends(&other, false)?
        .into_iter()
        .filter(|b| *b != "threads")
        .collect();
    if backends.is_empty() {
        bail!("no process backend to run chaos on");
    }
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64 & ((1 << 53) - 1))
    });
    eprintln!("xtask chaos: seed {seed}; replay with: cargo xtask chaos --seed {seed}");
    let each = (seconds / backends.len() as u64).max(1);
    let mut failed = Vec::new();
    for b in &backends {
        eprintln!("\n==== chaos, backend {b} ({each} s) ====");
        let mut cmd = cargo();
        cmd.args([
            "run",
            "-p",
            "mp-chaos",
            "--no-default-features",
            "--features",
        ])
        .arg(format!("mp-core/{b}"))
        .args([
            "--",
            "--seconds",
            &each.to_string(),
            "--seed",
            &seed.to_string(),
        ]);
        if run_cmd(cmd).is_err() {
            failed.push(*b);
        }
    }
    if !failed.is_empty() {
        bail!("chaos failed on {failed:?} (seed {seed}: cargo xtask chaos --seed {seed} --backend {})", failed[0]);
    }
    Ok(())
}
