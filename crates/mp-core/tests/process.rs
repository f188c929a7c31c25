//! Process behaviours (PROC-* of the CPython checklist), run under every start method that
//! applies, each with real child processes and an outer time bound.

mod common;

use std::time::Duration;

use common::{about, bounded, echo_back, for_each_context, prompt, sleep_forever, sleep_ms};

use mp_core::{
    active_children, current_process, get_start_method, parent_process, pipe, pipe_oneway, wait,
    Connection, Process, ProcessError, StartMethod, Writer,
};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Seen {
    args: (i32, i32, String, f64),
    name: String,
    pid: u32,
    authkey: Vec<u8>,
    parent: Option<(u32, String)>,
    daemon: bool,
    method: StartMethod,
}

fn report_self(arg: ((i32, i32, String, f64), Connection<Seen>)) {
    let (args, conn) = arg;
    let me = current_process();
    conn.send(&Seen {
        args,
        name: me.name,
        pid: me.pid,
        authkey: me.authkey,
        parent: parent_process().map(|p| (p.pid, p.name)),
        daemon: me.daemon,
        method: get_start_method(),
    })
    .unwrap();
    // Stay alive until the parent has looked at us.
    let _ = conn.recv_timeout(Duration::from_secs(10));
}

fn in_active(p: &Process) -> bool {
    active_children().iter().any(|c| Some(c.pid) == p.pid())
}

#[test]
fn proc_01_05_lifecycle_identity_and_parent() {
    for_each_context(30, |ctx| {
        let (here, there) = pipe::<Seen>().unwrap();
        let args = (1, 2, "hello".to_string(), 2.54);
        let mut p = ctx
            .process(report_self, (args.clone(), there))
            .with_name("SomeProcess");
        assert!(!p.is_alive());
        assert_eq!(p.exitcode(), None);
        assert!(!in_active(&p));
        p.start().unwrap();
        let seen = here.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(p.is_alive());
        assert_eq!(p.exitcode(), None);
        assert!(in_active(&p));
        assert_eq!(seen.args, args);
        assert_eq!(seen.name, "SomeProcess");
        assert_eq!(Some(seen.pid), p.pid());
        assert_ne!(seen.pid, std::process::id());
        assert_eq!(seen.authkey, current_process().authkey);
        assert_eq!(
            seen.parent,
            Some((std::process::id(), "MainProcess".to_string()))
        );
        assert!(!seen.daemon);
        assert_eq!(seen.method, ctx.start_method());
        here.send(&seen).unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
        assert!(!p.is_alive());
        assert!(!in_active(&p));
    });
}

#[test]
fn proc_02_current_process_and_default_names() {
    let me = current_process();
    assert_eq!(me.name, "MainProcess");
    assert_eq!(me.pid, std::process::id());
    assert!(!me.daemon);
    assert_eq!(me.authkey.len(), 32);
    assert!(parent_process().is_none());
    fn nothing(_: ()) {}
    let mut a = Process::new(nothing, ());
    let mut b = Process::new(nothing, ());
    a.start().unwrap();
    b.start().unwrap();
    let (na, nb) = (a.name().unwrap().to_string(), b.name().unwrap().to_string());
    let n = |s: &str| s.strip_prefix("Process-").unwrap().parse::<u32>().unwrap();
    assert!(n(&nb) > n(&na), "{na} then {nb}");
    a.join().unwrap();
    b.join().unwrap();
}

#[test]
fn proc_03_arguments_round_trip() {
    for_each_context(30, |ctx| {
        type Args = (u64, i8, String, Vec<u16>, (bool, char), Option<Vec<String>>);
        let value: Args = (
            u64::MAX,
            -5,
            "héllo".into(),
            vec![1, 2, 3],
            (true, 'λ'),
            Some(vec!["a".into(), String::new()]),
        );
        let (rx, tx) = pipe_oneway::<Args>().unwrap();
        let mut p = ctx.process(echo_back::<Args>, (value.clone(), tx));
        p.start().unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), value);
        p.join().unwrap();
    });
}

fn report_daemon(tx: Writer<bool>) {
    tx.send(&current_process().daemon).unwrap();
}

#[test]
fn proc_04_daemon_flag() {
    for_each_context(30, |ctx| {
        for flag in [None, Some(true), Some(false)] {
            let (rx, tx) = pipe_oneway::<bool>().unwrap();
            let mut p = ctx.process(report_daemon, tx);
            if let Some(d) = flag {
                p = p.with_daemon(d);
            }
            assert_eq!(p.daemon(), flag.unwrap_or(false));
            p.start().unwrap();
            assert_eq!(
                rx.recv_timeout(Duration::from_secs(10)).unwrap(),
                flag.unwrap_or(false)
            );
            p.join().unwrap();
        }
    });
}

#[test]
fn proc_10_cpu_count() {
    assert!(mp_core::cpu_count() >= 1);
}

/// PROC-12: each node sends its path, then starts and joins its children in turn.
fn tree_node(arg: (Vec<u8>, Writer<Vec<u8>>)) {
    let (path, tx) = arg;
    tx.send(&path).unwrap();
    if path.len() < 2 {
        for i in 0..2u8 {
            let mut next = path.clone();
            next.push(i);
            let mut p = Process::new(tree_node, (next, tx.try_clone().unwrap()));
            p.start().unwrap();
            p.join().unwrap();
        }
    }
}

#[test]
fn proc_12_recursion() {
    for_each_context(60, |ctx| {
        let (rx, tx) = pipe_oneway::<Vec<u8>>().unwrap();
        let mut p = ctx.process(tree_node, (vec![], tx));
        p.start().unwrap();
        p.join().unwrap();
        let got: Vec<Vec<u8>> = (0..7)
            .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        let want: Vec<Vec<u8>> = vec![
            vec![],
            vec![0],
            vec![0, 0],
            vec![0, 1],
            vec![1],
            vec![1, 0],
            vec![1, 1],
        ];
        assert_eq!(got, want);
    });
}

/// Returns once `go` is set (at most a minute).
fn wait_for_event(go: mp_core::Event) {
    assert!(go.wait_timeout(Duration::from_secs(60)));
}

#[test]
fn proc_13_sentinel() {
    for_each_context(30, |ctx| {
        // The child ends only when told: the sentinel is not ready before, whatever the
        // scheduling.
        let go = mp_core::Event::new().unwrap();
        let mut p = ctx.process(wait_for_event, go.clone());
        assert!(matches!(p.sentinel(), Err(ProcessError::NotStarted)));
        p.start().unwrap();
        let s = p.sentinel().unwrap();
        assert!(wait(&[&s], Some(Duration::ZERO)).unwrap().is_empty());
        go.set();
        assert_eq!(wait(&[&s], Some(Duration::from_secs(10))).unwrap(), vec![0]);
        p.join().unwrap();
    });
}

#[test]
fn proc_14_close() {
    for_each_context(30, |ctx| {
        let go = mp_core::Event::new().unwrap();
        let mut p = ctx.process(wait_for_event, go.clone());
        p.start().unwrap();
        assert!(matches!(p.close(), Err(ProcessError::StillRunning)));
        assert!(p.is_alive());
        go.set();
        p.join().unwrap();
        p.close().unwrap();
        assert!(!p.is_alive());
        assert!(matches!(p.join(), Err(ProcessError::Closed)));
        assert!(matches!(p.terminate(), Err(ProcessError::Closed)));
        p.close().unwrap();
    });
}

#[test]
fn proc_15_many_processes_and_instant_terminate() {
    for_each_context(120, |ctx| {
        let n = if ctx.start_method() == StartMethod::Spawn {
            10
        } else {
            30
        };
        let mut ps: Vec<Process> = (0..n).map(|_| ctx.process(sleep_ms, 10)).collect();
        for p in &mut ps {
            p.start().unwrap();
        }
        for p in &ps {
            p.join().unwrap();
            assert_eq!(p.exitcode(), Some(0));
        }
        let mut ps: Vec<Process> = (0..n).map(|_| ctx.process(sleep_ms, 60_000)).collect();
        for p in &mut ps {
            p.start().unwrap();
            p.terminate().unwrap();
        }
        for p in &ps {
            let _ = p.join_timeout(Duration::from_secs(10));
            assert_eq!(p.exitcode(), Some(-15));
        }
    });
}

#[inline(never)]
fn panicking_target(what: String) {
    panic!("{what}");
}

#[test]
fn proc_22_panic_reaches_parent_with_backtrace() {
    for_each_context(30, |ctx| {
        let mut p = ctx.process(panicking_target, "the sky is falling".to_string());
        p.start().unwrap();
        match p.join() {
            Err(ProcessError::Panicked { panic, exitcode }) => {
                assert_eq!(exitcode, 1);
                assert_eq!(panic.message, "the sky is falling");
                assert!(panic.location.contains("process.rs"), "{}", panic.location);
                assert!(
                    panic.backtrace.contains("panicking_target"),
                    "backtrace: {}",
                    panic.backtrace
                );
            }
            other => panic!("expected a panic report, got {other:?}"),
        }
        assert!(p.panic().is_some());
        assert_eq!(p.exitcode(), Some(1));
    });
}

/// A forked child reports its panic while another thread of the parent keeps panicking.
/// A panic hook holds std's backtrace lock while it prints or captures; a fork that copied
/// it locked left the child waiting for it for ever at its own first panic (a forked pool
/// worker under `cargo xtask sanitize`). Forks now wait for running hooks. (Fork: Unix.)
#[cfg(unix)]
#[test]
fn proc_22b_fork_beside_a_panicking_thread() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    bounded(120, || {
        let ctx = mp_core::get_context(StartMethod::Fork).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let panicker = std::thread::spawn(move || {
            let mut panics = 0u64;
            while !s.load(Ordering::Relaxed) {
                let _ = std::panic::catch_unwind(|| panic!("a panic beside the forks"));
                panics += 1;
            }
            panics
        });
        for i in 0..10 {
            let mut p = ctx.process(panicking_target, format!("child {i}"));
            p.start().unwrap();
            match p.join() {
                Err(ProcessError::Panicked { panic, .. }) => {
                    assert_eq!(panic.message, format!("child {i}"))
                }
                other => panic!("expected a panic report, got {other:?}"),
            }
        }
        stop.store(true, Ordering::Relaxed);
        assert!(panicker.join().unwrap() > 0, "the other thread panicked");
    });
}

fn exit_with(code: i32) {
    if code >= 0 {
        std::process::exit(code);
    }
}

#[test]
fn proc_23_exit_codes() {
    for_each_context(30, |ctx| {
        for code in [-1, 0, 8, 1, 255] {
            let mut p = ctx.process(exit_with, code);
            p.start().unwrap();
            let r = p.join();
            let want = code.max(0);
            assert_eq!(p.exitcode(), Some(want));
            match want {
                0 => r.unwrap(),
                c => assert!(
                    matches!(r, Err(ProcessError::Failed { exitcode }) if exitcode == c),
                    "{r:?}"
                ),
            }
        }
    });
}

#[test]
fn proc_24_state_errors() {
    fn nothing(_: ()) {}
    let mut p = Process::new(nothing, ());
    assert!(matches!(p.join(), Err(ProcessError::NotStarted)));
    assert!(matches!(p.terminate(), Err(ProcessError::NotStarted)));
    assert_eq!(p.pid(), None);
    p.start().unwrap();
    assert!(matches!(p.start(), Err(ProcessError::AlreadyStarted)));
    assert!(matches!(
        p.set_name("late"),
        Err(ProcessError::AlreadyStarted)
    ));
    p.join().unwrap();
    p.terminate().unwrap();
    assert_eq!(p.exitcode(), Some(0));
}

fn start_without_bootstrap(tx: Writer<String>) {
    std::env::set_var("MP_CORE_BOOT", "spawn:999");
    let mut p = Process::new(sleep_ms, 1);
    let r = p.start();
    tx.send(&format!("{r:?}")).unwrap();
}

#[test]
fn proc_27_a_child_whose_bootstrap_did_not_run_refuses_to_start_processes() {
    let (rx, tx) = pipe_oneway::<String>().unwrap();
    let mut p = Process::new(start_without_bootstrap, tx);
    p.start().unwrap();
    let r = bounded(30, move || {
        rx.recv_timeout(Duration::from_secs(10)).unwrap()
    });
    assert!(r.contains("BootstrapMissing"), "{r}");
    p.join().unwrap();
}

#[test]
fn proc_27_a_corrupt_boot_variable_fails_loudly() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env("MP_CORE_BOOT", "nonsense")
        .arg("--list")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stdout.is_empty(),
        "a failed boot must not run the program"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("mp:"));
}

fn hand_on(tx: Writer<u32>) {
    tx.send(&2).unwrap();
    let mut g = Process::new(echo_back::<u32>, (1, tx));
    g.start().unwrap();
    g.join().unwrap();
}

#[test]
fn proc_31_a_child_hands_its_pipe_to_a_grandchild() {
    for_each_context(30, |ctx| {
        let (rx, tx) = pipe_oneway::<u32>().unwrap();
        let mut p = ctx.process(hand_on, tx);
        p.start().unwrap();
        p.join().unwrap();
        let mut got = vec![
            rx.recv_timeout(Duration::from_secs(5)).unwrap(),
            rx.recv_timeout(Duration::from_secs(5)).unwrap(),
        ];
        got.sort();
        assert_eq!(got, vec![1, 2]);
    });
}

#[test]
fn join_timeout_waits_about_the_timeout() {
    for_each_context(30, |ctx| {
        let mut p = ctx.process(sleep_ms, 2_000);
        p.start().unwrap();
        about("join_timeout(200ms)", Duration::from_millis(200), || {
            assert!(matches!(
                p.join_timeout(Duration::from_millis(200)),
                Err(ProcessError::Timeout)
            ))
        });
        p.kill().unwrap();
        let _ = p.join();
    });
}

#[test]
fn proc_08_terminate_gives_minus_sigterm() {
    for_each_context(60, |ctx| {
        let mut p = ctx.process(sleep_forever, ());
        p.start().unwrap();
        prompt("join_timeout(0)", || {
            assert!(matches!(
                p.join_timeout(Duration::ZERO),
                Err(ProcessError::Timeout)
            ))
        });
        p.terminate().unwrap();
        let r = p.join_timeout(Duration::from_secs(5));
        assert!(
            matches!(r, Err(ProcessError::Failed { exitcode: -15 })),
            "{r:?}"
        );
        assert!(!in_active(&p));
        p.terminate().unwrap();
        assert_eq!(p.exitcode(), Some(-15));
    });
}

/// Starts a thread that would report after an hour, and returns at once. (It was 300 ms,
/// which the exit of a child under ThreadSanitizer outlasted.)
fn leave_a_thread_behind(tx: Writer<u32>) {
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(3600));
        let _ = tx.send(&1);
    });
}

#[test]
fn proc_17_threads_left_running_end_with_the_child() {
    // The documented rule: as when a Rust `main` returns, threads the target did not join
    // end with the process (Python would wait for its non-daemon threads).
    for_each_context(30, |ctx| {
        let (rx, tx) = pipe_oneway::<u32>().unwrap();
        let mut p = ctx.process(leave_a_thread_behind, tx);
        p.start().unwrap();
        p.join().unwrap();
        assert!(matches!(
            rx.recv_timeout(Duration::from_secs(2)),
            Err(mp_core::ConnectionError::Eof)
        ));
    });
}

/// PROC-21: a user type whose `run` method is the target (Python's Process subclass).
#[derive(Serialize, Deserialize)]
struct Upcaser {
    conn: Connection<Option<String>>,
}

impl Upcaser {
    fn run(self) {
        while let Ok(Some(s)) = self.conn.recv() {
            self.conn.send(&Some(s.to_uppercase())).unwrap();
        }
    }
}

#[test]
fn proc_21_a_method_as_the_target() {
    for_each_context(30, |ctx| {
        let (here, there) = pipe::<Option<String>>().unwrap();
        let mut p = ctx.process(Upcaser::run, Upcaser { conn: there });
        p.start().unwrap();
        for (word, upper) in [("hello", "HELLO"), ("world", "WORLD")] {
            here.send(&Some(word.into())).unwrap();
            assert_eq!(
                here.recv_timeout(Duration::from_secs(10))
                    .unwrap()
                    .as_deref(),
                Some(upper)
            );
        }
        here.send(&None).unwrap();
        p.join().unwrap();
    });
}

/// Says goodbye on its connection when dropped.
#[derive(Serialize, Deserialize)]
struct SaysGoodbye(Writer<String>);

impl Drop for SaysGoodbye {
    fn drop(&mut self) {
        let _ = self.0.send(&"goodbye".to_string());
    }
}

fn own_a_value(v: SaysGoodbye) {
    let _ = &v;
}

#[test]
fn proc_26_values_owned_by_the_target_are_dropped_on_normal_completion() {
    for_each_context(30, |ctx| {
        let (rx, tx) = pipe_oneway::<String>().unwrap();
        let mut p = ctx.process(own_a_value, SaysGoodbye(tx));
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), "goodbye");
    });
}

fn try_to_start_a_child(report: Writer<String>) {
    let mut p = Process::new(sleep_ms, 1);
    let outcome = match p.start() {
        Ok(()) => {
            let _ = p.join();
            "started".to_string()
        }
        Err(e) => format!("{e:?}"),
    };
    report.send(&outcome).unwrap();
}

/// As in Python, a daemon process may not start children (it would leave them behind when
/// it is terminated); a non-daemon one may.
#[test]
fn daemon_processes_cannot_have_children() {
    for_each_context(60, |ctx| {
        for (daemon, expect) in [(true, "DaemonCannotHaveChildren"), (false, "started")] {
            let (r, w) = pipe_oneway::<String>().unwrap();
            let mut p = ctx.process(try_to_start_a_child, w).with_daemon(daemon);
            p.start().unwrap();
            assert_eq!(r.recv_timeout(Duration::from_secs(30)).unwrap(), expect);
            p.join().unwrap();
        }
    });
    // Pool workers are daemons, as in Python.
    let pool = mp_core::Pool::new(1).unwrap();
    let (r, w) = pipe_oneway::<String>().unwrap();
    pool.apply(try_to_start_a_child, w).unwrap();
    assert_eq!(r.recv().unwrap(), "DaemonCannotHaveChildren");
}

fn report_start_method(w: Writer<Option<StartMethod>>) {
    w.send(&mp_core::get_start_method_if_set()).unwrap();
}

/// Python's `get_start_method(allow_none=True)`: a child has the method that started it.
#[test]
fn get_start_method_if_set_in_a_child() {
    for_each_context(60, |ctx| {
        let (r, w) = pipe_oneway::<Option<StartMethod>>().unwrap();
        let mut p = ctx.process(report_start_method, w);
        p.start().unwrap();
        assert_eq!(
            r.recv_timeout(Duration::from_secs(30)).unwrap(),
            Some(ctx.start_method())
        );
        p.join().unwrap();
    });
}
