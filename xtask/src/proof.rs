//! The mechanical checks: `sanitize` (AddressSanitizer, ThreadSanitizer), `miri`, `fuzz`
//! and `loom`. Each prints the commands it runs; each works on a fresh machine with what
//! `.ci/run` installs, or says exactly what is missing and why it skips.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{backend_features, cargo, parse_backends, root, run_cmd};

/// The host target: sanitizer flags must reach only the code that runs, never build scripts
/// or proc macros, and naming the target explicitly is how cargo keeps them apart.
const HOST: &str = "x86_64-unknown-linux-gnu";

/// The crates whose tests the sanitizers and Miri run (the others are Windows-only or tools).
const TESTED: &[&str] = &["mp-ipc", "mp-unix", "mp-shm", "mp-core"];

/// Where this target dir keeps its sanitized builds: beside the normal ones, so that a
/// sanitized build never invalidates the normal one.
fn target_dir(sub: &str) -> PathBuf {
    let base = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    base.join(sub)
}

/// Splits `[options] [-- args]`.
fn split_dashes(rest: &[String]) -> (Vec<String>, Vec<String>) {
    let options = rest.iter().take_while(|a| *a != "--").cloned().collect();
    let extra = rest
        .iter()
        .skip_while(|a| *a != "--")
        .skip(1)
        .cloned()
        .collect();
    (options, extra)
}

/// The option `name <value>` (repeatable, also `name=a,b`), removed from `options`.
fn take_values(options: &mut Vec<String>, name: &str) -> Result<Vec<String>> {
    let mut values = Vec::new();
    let mut kept = Vec::new();
    let mut it = options.drain(..);
    while let Some(a) = it.next() {
        if a == name {
            let v = it.next().with_context(|| format!("{name} needs a value"))?;
            values.extend(v.split(',').map(str::to_owned));
        } else if let Some(v) = a.strip_prefix(&format!("{name}=")) {
            values.extend(v.split(',').map(str::to_owned));
        } else {
            kept.push(a);
        }
    }
    drop(it);
    *options = kept;
    Ok(values)
}

// ---------------------------------------------------------------------------------------------
// Sanitizers.

/// A sysroot for Debian's rustc that adds the ThreadSanitizer runtime it does not ship.
///
/// ThreadSanitizer needs an instrumented std, so std is rebuilt with `-Zbuild-std`, which
/// needs std's source: the rustup toolchain here has none, Debian's Rust has it
/// (`rust-web-src`, as `test-windows` uses). Debian's rustc ships no sanitizer runtimes,
/// though, so the link of an instrumented binary looks for
/// `<sysroot>/lib/rustlib/<host>/lib/librustc-stable_rt.tsan.a` in vain. This builds a
/// sysroot of links: Debian's libraries and source, plus the runtime of the rustup
/// toolchain (compiler-rt of the same LLVM major version; `check_llvm` makes sure).
fn tsan_sysroot() -> Result<PathBuf> {
    let debian = Path::new("/usr/lib/rustlib");
    if !debian.join("src/rust/library/std").is_dir() || !Path::new("/usr/bin/rustc").exists() {
        bail!(
            "ThreadSanitizer needs Debian's Rust with its source: \
             apt-get install rustc-web cargo-web rust-web-src"
        );
    }
    let out = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .context("rustc --print sysroot")?;
    let rustup_sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let runtime = rustup_sysroot.join(format!("lib/rustlib/{HOST}/lib/librustc-stable_rt.tsan.a"));
    if !runtime.is_file() {
        bail!("no ThreadSanitizer runtime at {}", runtime.display());
    }
    check_llvm(&["rustc".into(), "/usr/bin/rustc".into()])?;
    let sysroot = target_dir("tsan-sysroot");
    let lib = sysroot.join(format!("lib/rustlib/{HOST}/lib"));
    let _ = std::fs::remove_dir_all(&sysroot);
    std::fs::create_dir_all(&lib)?;
    std::os::unix::fs::symlink(debian.join("src"), sysroot.join("lib/rustlib/src"))?;
    for entry in std::fs::read_dir(debian.join(format!("{HOST}/lib")))? {
        let entry = entry?;
        std::os::unix::fs::symlink(entry.path(), lib.join(entry.file_name()))?;
    }
    std::os::unix::fs::symlink(&runtime, lib.join("librustc-stable_rt.tsan.a"))?;
    Ok(sysroot)
}

/// Fails unless every compiler named uses the same LLVM major version.
fn check_llvm(compilers: &[String]) -> Result<()> {
    let mut seen: Vec<(String, String)> = Vec::new();
    for c in compilers {
        let out = Command::new(c)
            .arg("-vV")
            .output()
            .with_context(|| format!("{c} -vV"))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let major = text
            .lines()
            .find_map(|l| l.strip_prefix("LLVM version: "))
            .and_then(|v| v.split('.').next())
            .unwrap_or("?")
            .to_owned();
        seen.push((c.clone(), major));
    }
    if seen.windows(2).any(|w| w[0].1 != w[1].1) {
        bail!(
            "the compilers' LLVM versions differ ({seen:?}): the sanitizer runtime would not match"
        );
    }
    Ok(())
}

/// `cargo xtask sanitize [--sanitizer address|thread]... [--backend b]... [-- <test args>]`:
/// every backend and the `posix-generic` variant unless `--backend` names some.
pub fn sanitize(rest: &[String]) -> Result<()> {
    let (mut options, extra) = split_dashes(rest);
    let mut sanitizers = take_values(&mut options, "--sanitizer")?;
    if sanitizers.is_empty() {
        sanitizers = vec!["address".into(), "thread".into()];
    }
    let backends = parse_backends(&options, true)?;
    let mut failed = Vec::new();
    for s in &sanitizers {
        for b in &backends {
            eprintln!("\n==== {s} sanitizer, backend {b} ====");
            let reports = report_dir(s, b)?;
            let cmd = match s.as_str() {
                "address" => asan_command(b, &extra, &reports)?,
                "thread" => tsan_command(b, &extra, &reports)?,
                other => bail!("unknown sanitizer {other:?} (address, thread)"),
            };
            let ran = run_cmd(cmd);
            let found = print_reports(&reports)?;
            if ran.is_err() || found > 0 {
                failed.push(format!("{s}/{b} ({found} report files)"));
            }
        }
    }
    if !failed.is_empty() {
        bail!("sanitizer runs failed: {failed:?}");
    }
    Ok(())
}

/// An empty directory for the reports of one run: every process of the run (the test
/// binaries and each child they start, whose stderr a test may capture or discard) writes its
/// reports to `<dir>/report.<pid>` (the runtimes' `log_path`), so none is lost with a child's
/// output or hidden by a test that expects its child to fail.
fn report_dir(sanitizer: &str, backend: &str) -> Result<PathBuf> {
    let dir = target_dir("sanitizer-reports").join(format!("{sanitizer}-{backend}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Prints the report files a run left and returns how many there are.
fn print_reports(dir: &Path) -> Result<usize> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    for f in &files {
        eprintln!("\n==== sanitizer report {} ====", f.display());
        eprintln!("{}", std::fs::read_to_string(f).unwrap_or_default());
    }
    Ok(files.len())
}

/// The test command shared by both sanitizers: the tested crates' library and integration
/// tests (doctests are compiled by rustdoc without the flags), for the host target only.
fn sanitized_test(mut cmd: Command, backend: &str, extra: &[String]) -> Command {
    cmd.arg("test");
    for p in TESTED {
        cmd.args(["-p", p]);
    }
    cmd.args(backend_features(backend))
        .args(["--target", HOST, "--no-fail-fast"]);
    // Extra arguments that choose targets (`--test queue`, `--lib`) replace the default.
    if !extra
        .iter()
        .any(|a| a == "--lib" || a == "--test" || a == "--tests")
    {
        cmd.args(["--lib", "--tests"]);
    }
    cmd.args(extra);
    cmd
}

/// AddressSanitizer: the machine's toolchain, nightly flags unlocked with RUSTC_BOOTSTRAP
/// (std stays uninstrumented, which ASan tolerates: it intercepts malloc and free).
///
/// `detect_leaks=0`: children leave through `_exit`-like paths (a failed exec, a killed
/// worker, the boot code's exit after the target) with their allocations live by design, and
/// LeakSanitizer would fail every one of them; leaks are not what this run looks for.
/// `handle_segv=0`: tests crash workers on purpose (a write through a null pointer) and check
/// that they died of `SIGSEGV`; ASan would turn that death into its report and exit code.
/// `handle_sigbus=0`: the same for `SIGBUS`. mp-unix's guard of shrinkable mappings
/// (memory/watch.rs) hands a `SIGBUS` outside its mappings to the previous handler, and a
/// test (`a_sigbus_elsewhere_still_kills`) checks that the process then dies of it; with
/// ASan's handler installed first, that handler is ASan's, which reports the deliberate
/// fault and exits with 86 instead.
fn asan_env(cmd: &mut Command, reports: &Path) {
    cmd.env("RUSTC_BOOTSTRAP", "1")
        .env(
            "RUSTFLAGS",
            "-Zsanitizer=address -Cforce-frame-pointers=yes",
        )
        .env(
            "ASAN_OPTIONS",
            format!(
                "detect_leaks=0:handle_segv=0:handle_sigbus=0:abort_on_error=0:exitcode=86:\
                 log_path={}",
                reports.join("report").display()
            ),
        )
        .env("CARGO_TARGET_DIR", target_dir("asan"))
        // The tests' hang bounds (mp-ipc-conformance `bounded`), doubled for ASan's slowness.
        .env("MP_TEST_HANG_SCALE", "2");
}

fn asan_command(backend: &str, extra: &[String], reports: &Path) -> Result<Command> {
    // tests/examples.rs runs the examples: built here with the same flags, then found by it
    // (MP_EXAMPLES_PREBUILT) instead of being built again without them.
    let mut examples = cargo();
    examples.args(["build", "-p", "mp-core", "--examples", "--target", HOST]);
    examples.args(backend_features(backend));
    asan_env(&mut examples, reports);
    run_cmd(examples)?;
    let mut cmd = sanitized_test(cargo(), backend, extra);
    asan_env(&mut cmd, reports);
    cmd.env("MP_EXAMPLES_PREBUILT", "1");
    Ok(cmd)
}

/// ThreadSanitizer: Debian's rustc and cargo with `-Zbuild-std` over [`tsan_sysroot`].
///
/// `die_after_fork=0`: the fork start method forks the multi-threaded test harness, which
/// TSan refuses by default; the child only runs mp's fork path (no allocation before its own
/// threads start, see process/child.rs), which is what the fork tests check anyway.
fn tsan_command(backend: &str, extra: &[String], reports: &Path) -> Result<Command> {
    let sysroot = tsan_sysroot()?;
    let cargo_bin = if Path::new("/usr/bin/cargo").exists() {
        "/usr/bin/cargo"
    } else {
        bail!("ThreadSanitizer needs Debian's cargo: apt-get install cargo-web")
    };
    // The examples first, with the same flags, as for ASan: tests/examples.rs would build them
    // itself without `--target`, and the sanitizer flags would then reach build scripts too.
    let mut examples = Command::new(cargo_bin);
    examples.current_dir(root()).args([
        "build",
        "-Zbuild-std",
        "-p",
        "mp-core",
        "--examples",
        "--target",
        HOST,
    ]);
    examples.args(backend_features(backend));
    tsan_env(&mut examples, &sysroot, reports);
    run_cmd(examples)?;
    let mut cmd = Command::new(cargo_bin);
    // -Zbuild-std as a global option, before `test`: after the test arguments it would land
    // behind their `--` and reach the test harness instead of cargo.
    cmd.current_dir(root()).arg("-Zbuild-std");
    let mut cmd = sanitized_test(cmd, backend, extra);
    tsan_env(&mut cmd, &sysroot, reports);
    cmd.env("MP_EXAMPLES_PREBUILT", "1");
    Ok(cmd)
}

/// The environment of a ThreadSanitizer build or run (see [`tsan_command`]).
///
/// `handle_segv=0:handle_sigbus=0`: as for ASan (see [`asan_env`]), tests crash workers on
/// purpose and check the signal they died of; TSan's handler would report the deliberate
/// fault and exit with its own code instead.
fn tsan_env(cmd: &mut Command, sysroot: &Path, reports: &Path) {
    cmd.env("RUSTC", "/usr/bin/rustc")
        .env("RUSTDOC", "/usr/bin/rustdoc")
        .env("RUSTC_BOOTSTRAP", "1")
        .env(
            "RUSTFLAGS",
            format!("-Zsanitizer=thread --sysroot={}", sysroot.display()),
        )
        .env(
            "TSAN_OPTIONS",
            format!(
                "die_after_fork=0:halt_on_error=0:exitcode=66:handle_segv=0:handle_sigbus=0:\
                 suppressions={}:log_path={}",
                root().join("xtask/tsan.supp").display(),
                reports.join("report").display()
            ),
        )
        .env("CARGO_TARGET_DIR", target_dir("tsan"))
        // The tests' hang bounds (mp-ipc-conformance `bounded`), five times longer: a pool test
        // that takes 10 s per start method alone under TSan exceeded its 60 s among the others.
        .env("MP_TEST_HANG_SCALE", "5");
}

// ---------------------------------------------------------------------------------------------
// Fuzzing.

/// `cargo fuzz`, with the nightly flags it needs unlocked on the stable toolchain, building
/// into this target dir.
fn cargo_fuzz() -> Command {
    let mut cmd = cargo();
    cmd.arg("fuzz")
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_DIR", target_dir("fuzz"));
    cmd
}

/// Installs cargo-fuzz if this machine has none.
fn ensure_cargo_fuzz() -> Result<()> {
    let mut probe = cargo();
    probe.args(["fuzz", "--version"]);
    if probe.output().map(|o| o.status.success()).unwrap_or(false) {
        return Ok(());
    }
    let mut install = cargo();
    install.args(["install", "cargo-fuzz", "--locked"]);
    run_cmd(install).context("installing cargo-fuzz")
}

/// The fuzz targets, as `cargo fuzz list` gives them.
fn fuzz_targets() -> Result<Vec<String>> {
    let mut cmd = cargo_fuzz();
    cmd.arg("list");
    let out = cmd.output().context("cargo fuzz list")?;
    if !out.status.success() {
        bail!("cargo fuzz list: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// What libFuzzer's last status line says: (runs, coverage, features, corpus items).
fn fuzz_stats(log: &str) -> Option<(u64, u64, u64, String)> {
    let line = log
        .lines()
        .rev()
        .find(|l| l.starts_with('#') && l.contains("cov: "))?;
    let field = |name: &str| -> Option<String> {
        let rest = &line[line.find(name)? + name.len()..];
        Some(rest.split_whitespace().next()?.to_owned())
    };
    let runs = line[1..].split_whitespace().next()?.parse().ok()?;
    Some((
        runs,
        field("cov: ")?.parse().ok()?,
        field("ft: ")?.parse().ok()?,
        field("corp: ")?,
    ))
}

/// `cargo xtask fuzz [--seconds N] [target]...`: every target (or those named) for N seconds
/// each (default 60), over its committed seeds (`fuzz/seeds/<target>`) and the corpus it
/// grew before (`fuzz/corpus/<target>`, not committed). Prints runs and coverage per
/// target; a crash leaves its input in `fuzz/artifacts/<target>/` and fails the command.
pub fn fuzz(rest: &[String]) -> Result<()> {
    let mut options = rest.to_vec();
    let seconds: u64 = match take_values(&mut options, "--seconds")?.last() {
        Some(s) => s.parse().context("--seconds needs a number")?,
        None => 60,
    };
    ensure_cargo_fuzz()?;
    let all = fuzz_targets()?;
    let targets: Vec<String> = if options.is_empty() {
        all
    } else {
        for t in &options {
            if !all.contains(t) {
                bail!("no fuzz target {t:?} (there are: {all:?})");
            }
        }
        options
    };
    let fuzz_dir = root().join("fuzz");
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    for t in &targets {
        let corpus = fuzz_dir.join("corpus").join(t);
        std::fs::create_dir_all(&corpus)?;
        let seeds = fuzz_dir.join("seeds").join(t);
        std::fs::create_dir_all(&seeds)?;
        let mut cmd = cargo_fuzz();
        cmd.args(["run", "-O", "--debug-assertions", t])
            .arg(&corpus)
            .arg(&seeds)
            .args([
                "--",
                &format!("-max_total_time={seconds}"),
                "-timeout=10",
                "-rss_limit_mb=2048",
                "-max_len=65536",
                "-print_final_stats=1",
            ]);
        eprintln!("$ {}", crate::show(&cmd));
        let out = cmd
            .output()
            .with_context(|| format!("cargo fuzz run {t}"))?;
        let log = String::from_utf8_lossy(&out.stderr);
        let stats = fuzz_stats(&log);
        if !out.status.success() {
            eprintln!("{log}");
            failed.push(t.clone());
        }
        rows.push((t.clone(), out.status.success(), stats));
    }
    eprintln!("\n==== fuzz summary ({seconds} s each) ====");
    eprintln!(
        "  {:<22} {:>7} {:>12} {:>7} {:>7}  corpus",
        "target", "result", "runs", "cov", "ft"
    );
    for (t, ok, stats) in &rows {
        let (runs, cov, ft, corp) = stats
            .clone()
            .map(|(r, c, f, p)| (r.to_string(), c.to_string(), f.to_string(), p))
            .unwrap_or_default();
        let result = if *ok { "ok" } else { "CRASH" };
        eprintln!("  {t:<22} {result:>7} {runs:>12} {cov:>7} {ft:>7}  {corp}");
    }
    let passed = rows.len() - failed.len();
    // The closing line in the form CI reads.
    println!("fuzz: {passed} passed, {} failed", failed.len());
    if !failed.is_empty() {
        bail!("fuzz targets crashed: {failed:?} (inputs in fuzz/artifacts/)");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Loom.

/// `cargo xtask loom [-- <test args>]`: the loom models (mp-core's `sync/loom_models.rs`:
/// lock, event, barrier, semaphore; mp-shm's `heap.rs` `loom_models`: the ring), built
/// with `--cfg loom` in a target dir of their own, optimised (loom explores thousands of
/// interleavings). LOOM_MAX_PREEMPTIONS raises or lowers every model's bound.
pub fn loom(rest: &[String]) -> Result<()> {
    let (_, extra) = split_dashes(rest);
    let mut cmd = cargo();
    cmd.args([
        "test",
        "-p",
        "mp-core",
        "-p",
        "mp-shm",
        "--lib",
        "--release",
        "--",
        "loom_models",
    ])
    .args(&extra)
    .env("RUSTFLAGS", "--cfg loom")
    .env("CARGO_TARGET_DIR", target_dir("loom"));
    run_cmd(cmd)
}

// ---------------------------------------------------------------------------------------------
// Miri.

/// What `cargo xtask miri` runs: a package's unit tests and the filters that choose those
/// that stay in one process. mp-shm's and mp-core's other tests make segments with
/// `memfd_create` and `mmap` and talk over sockets, which Miri does not emulate; the
/// sanitizers cover them.
const MIRI_RUNS: &[(&str, &[&str])] = &[
    // Framing, limits, deadlines, spinning.
    ("mp-ipc", &[]),
    // The ring's checks of positions and lock words read from a segment, the ring protocol
    // itself over a heap segment (both ends in one process), and the shm_ring fuzz seeds.
    ("mp-shm", &["ring::", "heap::", "fuzzing::"]),
    // The bounded postcard decoder, function ids (offsets turned back into function
    // pointers), the handshake's tags and Python's handshake parser.
    ("mp-core", &["codec::", "fn_id::", "listener::"]),
    // The queue engine over a heap buffer (frame arithmetic, ring wrap-around, staging
    // area, spool offsets) and the handle outbox/inbox bookkeeping.
    ("mp-core", &["queue::engine::tests::heap::", "handles::"]),
];

/// `cargo xtask miri [-- <test args>]`: the one-process unit tests ([`MIRI_RUNS`]) under
/// Miri, with a nightly toolchain that has the `miri` component; without one it says so and
/// stops with an error naming what to install. Test arguments go to every run's test harness;
/// a filter among them replaces the default filters.
pub fn miri(rest: &[String]) -> Result<()> {
    let (_, extra) = split_dashes(rest);
    let mut probe = Command::new("cargo");
    probe.args(["+nightly", "miri", "--version"]);
    let ok = probe.output().map(|o| o.status.success()).unwrap_or(false);
    if !ok {
        bail!(
            "Miri is not installed: it needs a nightly toolchain with the miri and rust-src \
             components (rustup toolchain install nightly --component miri rust-src); \
             the sanitizers (cargo xtask sanitize) cover the same code meanwhile"
        );
    }
    let mut setup = Command::new("cargo");
    setup
        .current_dir(root())
        .args(["+nightly", "miri", "setup"])
        .env("CARGO_TARGET_DIR", target_dir("miri"));
    run_cmd(setup)?;
    let own_filters = extra.iter().any(|a| !a.starts_with('-'));
    let mut failed = Vec::new();
    for (package, filters) in MIRI_RUNS {
        let mut cmd = Command::new("cargo");
        cmd.current_dir(root())
            .args(["+nightly", "miri", "test", "-p", package, "--lib", "--"]);
        if !own_filters {
            cmd.args(*filters);
        }
        cmd.args(&extra)
            // Isolation off: the tests read the clock. Permissive provenance: fn_id turns an
            // address back into a function pointer with an `as` cast (exposed provenance, as
            // it must: the address comes from an offset), which Miri otherwise warns about.
            .env(
                "MIRIFLAGS",
                "-Zmiri-disable-isolation -Zmiri-permissive-provenance",
            )
            .env("CARGO_TARGET_DIR", target_dir("miri"));
        if run_cmd(cmd).is_err() {
            failed.push(*package);
        }
    }
    if !failed.is_empty() {
        bail!("Miri failed in {failed:?}");
    }
    Ok(())
}
