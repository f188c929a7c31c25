//! Runs every `py_*` example (the twins of the examples in Python's `multiprocessing`
//! documentation) and checks its exit status and a few lines of its output, so that the
//! examples cannot rot.
//!
//! The first test to get here builds all examples once with a nested
//! `cargo build --examples` into this test binary's own target directory and profile
//! (`cargo test` releases its build lock before it runs test binaries, so this does not
//! wait on the outer cargo), then each test runs its example binary directly, killing it
//! after two minutes. With `MP_EXAMPLES_PREBUILT` set, the examples are taken as built
//! already (`cargo xtask test-windows` does that: there is no cargo inside Wine).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long an example may run.
const TIMEOUT: Duration = Duration::from_secs(120);
/// How long the output may stay open after the example exited (its children inherit it).
const GRACE: Duration = Duration::from_secs(30);

/// `<target>/<profile dir>`, from this binary's `<target>/<profile dir>/deps/examples-<hash>`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("the test binary lives in <target>/<profile>/deps")
        .to_path_buf()
}

/// Builds the examples once; every test gets the same outcome.
fn examples_dir() -> &'static Path {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let dir = profile_dir();
        if std::env::var_os("MP_EXAMPLES_PREBUILT").is_some() {
            // Built beforehand by the caller (`cargo xtask test-windows`: no cargo under Wine).
            return Ok(dir.join("examples"));
        }
        let target = dir.parent().expect("<target>/<profile>");
        let profile = match dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => "dev".to_string(),
            Some(other) => other.to_string(),
            None => return Err(format!("odd profile directory {}", dir.display())),
        };
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_string());
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        let out = Command::new(cargo)
            .args(["build", "-q", "--examples", "--profile", &profile])
            .arg("--manifest-path")
            .arg(&manifest)
            .arg("--target-dir")
            .arg(target)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "cargo build --examples failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(dir.join("examples"))
    });
    match built {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

/// Reads a pipe to its end on a thread; the text arrives on the channel.
fn drain(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
    });
    rx
}

/// Runs example `name`, requires exit status 0 and each of `expected` in its stdout, and
/// returns the stdout.
fn run(name: &str, expected: &[&str]) -> String {
    run_with_stderr(name, expected, &[]).0
}

/// Like [`run`], also requiring each of `expected_err` in its stderr; returns both.
fn run_with_stderr(name: &str, expected: &[&str], expected_err: &[&str]) -> (String, String) {
    let exe = examples_dir().join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let mut child = Command::new(&exe)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()));
    let stdout = drain(child.stdout.take().expect("piped"));
    let stderr = drain(child.stderr.take().expect("piped"));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if started.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            let out = stdout.recv_timeout(GRACE).unwrap_or_default();
            let err = stderr.recv_timeout(GRACE).unwrap_or_default();
            panic!(
                "{name} did not finish within {TIMEOUT:?}; killed.\nstdout:\n{out}\nstderr:\n{err}"
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = stdout
        .recv_timeout(GRACE)
        .unwrap_or_else(|_| panic!("{name} exited, but something it started kept its stdout open"));
    let err = stderr.recv_timeout(GRACE).unwrap_or_default();
    assert!(
        status.success(),
        "{name} failed: {status}\nstdout:\n{out}\nstderr:\n{err}"
    );
    for line in expected {
        assert!(
            out.contains(line),
            "{name}: expected {line:?} in its output\nstdout:\n{out}\nstderr:\n{err}"
        );
    }
    for line in expected_err {
        assert!(
            err.contains(line),
            "{name}: expected {line:?} in its stderr\nstdout:\n{out}\nstderr:\n{err}"
        );
    }
    (out, err)
}

#[test]
fn py_hello_process() {
    let out = run(
        "py_hello_process",
        &["main line", "function f", "hello bob"],
    );
    // The child runs only its target, never `main`: "main line" appears once.
    assert_eq!(out.matches("main line").count(), 1, "{out}");
}

#[test]
fn py_contexts() {
    run(
        "py_contexts",
        &["default start method: spawn", "spawn: hello from", "done"],
    );
}

#[test]
fn py_queue() {
    run("py_queue", &["[42, None, 'hello']"]);
}

#[test]
fn py_pipe() {
    run(
        "py_pipe",
        &[
            "[42, None, 'hello']",
            "[1, 'hello', None]",
            "thank you",
            "[0, 1, 2, 3, 4, 0, 0, 0, 0, 0]",
            "one-way pipe carried [1, 2, 3]",
        ],
    );
}

#[test]
fn py_lock() {
    let out = run("py_lock", &["all 10 children done"]);
    for i in 0..10 {
        assert!(out.contains(&format!("hello world {i}\n")), "{out}");
    }
}

#[test]
fn py_shared_value() {
    run(
        "py_shared_value",
        &["3.1415927\n", "[0, -1, -2, -3, -4, -5, -6, -7, -8, -9]"],
    );
}

#[test]
fn py_manager() {
    run(
        "py_manager",
        &[
            "{1: '1', '2': 2, 0.25: None}",
            "[9, 8, 7, 6, 5, 4, 3, 2, 1, 0]",
        ],
    );
}

#[test]
fn py_pool() {
    run(
        "py_pool",
        &[
            "[1, 4, 9]",
            "[0, 1, 4, 9, 16, 25, 36, 49, 64, 81]",
            "400\n",
            "We lacked patience",
            "the pool remains available",
            "Now the pool is closed",
        ],
    );
}

#[test]
fn py_manager_pool() {
    run(
        "py_manager_pool",
        &[
            "[0, 1, 4, 9, 16, 25, 36, 49, 64, 81]",
            "400\n",
            "We lacked patience",
            "the pool remains available",
            "Now the manager and its pool are gone",
        ],
    );
}

#[test]
fn py_remote_manager() {
    run(
        "py_remote_manager",
        &[
            "manager serving on 127.0.0.1:",
            "wrong authkey was refused",
            "put 'hello'",
            "got 'hello'",
            "server stopped",
        ],
    );
}

#[test]
fn py_wait() {
    run(
        "py_wait",
        &[
            "(9, \"Process-1\")",
            "received 40 messages from 4 processes",
        ],
    );
}

#[test]
fn py_listener() {
    run(
        "py_listener",
        &[
            "connection accepted",
            "(2.25, None, \"junk\")",
            "[42, 1729, 0, 0, 0]",
            "wrong key refused",
        ],
    );
}

#[test]
fn py_workers() {
    run(
        "py_workers",
        &[
            "Unordered results:",
            "says that mul(19, 7) = 133",
            "says that plus(9, 8) = 17",
            "all 30 tasks done",
        ],
    );
}

#[test]
fn py_sync() {
    run(
        "py_sync",
        &[
            "setting the start event",
            "passed the barrier",
            "the producer set ready = 1",
        ],
    );
}

#[test]
fn py_shared_memory() {
    run(
        "py_shared_memory",
        &[
            "child sees [22, 33, 44, 55, 100]",
            "parent sees \"howdy\"",
            "list: [\"howdy\", \"hello\"]",
            "unlinked",
        ],
    );
}

#[test]
fn py_executor() {
    run(
        "py_executor",
        &[
            "112272535095293 is prime: true",
            "1099726899285419 is prime: false",
            "97 is prime: true",
        ],
    );
}

#[test]
fn py_logging() {
    let (_, err) = run_with_stderr(
        "py_logging",
        &["done"],
        &[
            "[WARN/MainProcess] doomed",
            "[INFO/SyncManager] child process calling its target",
            "[INFO/SyncManager] process exiting with exitcode 0",
            "[INFO/Process-2] worker 1 says hello through log::info!",
            "[WARN/Process-2] worker 1 is done",
        ],
    );
    // Below the level: not printed.
    assert!(!err.contains("DEBUG"), "{err}");
}

/// The interop pair: the Rust server `py_interop_server` and the plain Python client
/// `examples/python/echo_client.py` (CPython's own `multiprocessing.connection.Client`),
/// with the right key and a wrong one. Unix only: the Windows run has no Python.
#[cfg(unix)]
#[test]
fn py_interop_server_with_a_python_client() {
    use std::io::{BufRead, BufReader};
    let exe = examples_dir().join("py_interop_server");
    let mut server = Command::new(&exe)
        .arg("secret")
        .env("MP_INTEROP_CLIENTS", "2")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run the server");
    let mut out = BufReader::new(server.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let address = first
        .trim()
        .strip_prefix("listening on ")
        .expect(&first)
        .to_string();
    let client = |key: &str| {
        Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python/echo_client.py"))
            .args([address.as_str(), key, "hello", "world"])
            .output()
            .expect("python3 runs")
    };
    let good = client("secret");
    let text = String::from_utf8_lossy(&good.stdout);
    assert!(good.status.success(), "{text}");
    assert!(
        text.contains("python got 'HELLO'") && text.contains("python got 'WORLD'"),
        "{text}"
    );
    let bad = client("wrong");
    assert_eq!(bad.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&bad.stdout).contains("AUTHENTICATION FAILED"));
    let started = Instant::now();
    let status = loop {
        if let Some(s) = server.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > TIMEOUT {
            let _ = server.kill();
            panic!("the server did not stop after two clients");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    for line in [
        "client accepted",
        "rust got \"hello\"",
        "client said bye",
        "refused a client",
    ] {
        assert!(rest.contains(line), "{rest}");
    }
}

#[test]
fn py_pool_initializer() {
    let out = run("py_pool_initializer", &["all 10 tasks done"]);
    for i in 0..10 {
        assert!(out.contains(&format!("hello world {i}\n")), "{out}");
    }
}
