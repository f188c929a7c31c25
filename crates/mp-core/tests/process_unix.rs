//! Process behaviours that only exist on Unix (signals, fork, the fork server), run
//! with real children and outer time bounds.
#![cfg(unix)]

mod common;

use std::time::Duration;

use common::{bounded, exec_contexts, for_each_context, prompt, sleep_forever, sleep_ms};
use mp_core::{
    active_children, get_context, get_start_method, parent_process, pipe_oneway, set_start_method,
    Context, Process, ProcessError, StartMethod, Writer,
};

fn in_active(p: &Process) -> bool {
    active_children().iter().any(|c| Some(c.pid) == p.pid())
}

static USR1_SEEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Starts a grandchild, then sleeps.
fn parent_of_sleeper(arg: (bool, Writer<u32>)) {
    let (outlive, tx) = arg;
    let mut g = Process::new(grandchild, (outlive, tx)).with_outlive_parent(outlive);
    g.start().unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

/// Reports its pid once it has seen its parent alive (0 if it did not), then reports 1 when
/// it sees its parent die (only reachable with the opt-out). The parent of the test kills
/// the middle process only after the pid arrived, so the first check cannot race the kill.
fn grandchild(arg: (bool, Writer<u32>)) {
    let (_, tx) = arg;
    let parent = parent_process().unwrap();
    let seen_alive = parent.is_alive();
    tx.send(&if seen_alive { std::process::id() } else { 0 })
        .unwrap();
    if parent.join_timeout(Duration::from_secs(30)) {
        tx.send(&1).unwrap();
    }
}

fn pid_alive(pid: u32) -> bool {
    if !cfg!(target_os = "linux") {
        // No /proc: kill(0). The processes asked about are not our children, so once
        // orphaned they are reaped at once.
        // SAFETY: signal 0 only probes.
        return unsafe { libc::kill(pid as libc::pid_t, 0) } == 0;
    }
    // A zombie still answers kill(0); look at its state instead.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

#[test]
fn proc_06_children_die_with_their_parent() {
    for_each_context(60, |ctx| {
        let (rx, tx) = pipe_oneway::<u32>().unwrap();
        let mut p = ctx.process(parent_of_sleeper, (false, tx));
        p.start().unwrap();
        let grandchild = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_ne!(grandchild, 0, "the grandchild saw its parent alive");
        assert!(pid_alive(grandchild));
        p.kill().unwrap();
        let _ = p.join_timeout(Duration::from_secs(10));
        assert!(
            common::eventually(5, || !pid_alive(grandchild)),
            "grandchild {grandchild} outlived its parent"
        );
    });
}

#[test]
fn proc_06_opt_out_lets_a_child_see_its_parent_die() {
    for_each_context(60, |ctx| {
        let (rx, tx) = pipe_oneway::<u32>().unwrap();
        let mut p = ctx.process(parent_of_sleeper, (true, tx));
        p.start().unwrap();
        let grandchild = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_ne!(grandchild, 0, "the grandchild saw its parent alive");
        p.kill().unwrap();
        let _ = p.join_timeout(Duration::from_secs(10));
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(10)).unwrap(),
            1,
            "grandchild saw its parent die"
        );
        assert!(common::eventually(5, || !pid_alive(grandchild)));
    });
}

#[test]
fn proc_07_08_terminate_and_kill() {
    for_each_context(60, |ctx| {
        for (signal, code) in [("terminate", -15), ("kill", -9), ("interrupt", -2)] {
            let mut p = ctx.process(sleep_forever, ());
            p.start().unwrap();
            prompt("join_timeout(0)", || {
                assert!(matches!(
                    p.join_timeout(Duration::ZERO),
                    Err(ProcessError::Timeout)
                ))
            });
            assert!(p.is_alive());
            match signal {
                "terminate" => p.terminate().unwrap(),
                "kill" => p.kill().unwrap(),
                _ => p.interrupt().unwrap(),
            }
            let r = p.join_timeout(Duration::from_secs(5));
            assert!(
                matches!(r, Err(ProcessError::Failed { exitcode }) if exitcode == code),
                "{signal}: {r:?}"
            );
            assert_eq!(p.exitcode(), Some(code));
            assert!(!p.is_alive());
            assert!(!in_active(&p));
            // Harmless again, and the code stays.
            let _ = p.join();
            p.terminate().unwrap();
            assert_eq!(p.exitcode(), Some(code));
        }
    });
}

fn count_fds(tx: Writer<usize>) {
    // Every open descriptor below 4096 (portable: no /proc on macOS or FreeBSD).
    // SAFETY: F_GETFD only asks whether a descriptor number is open.
    let n = (0..4096)
        .filter(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0)
        .count();
    tx.send(&n).unwrap();
    std::thread::sleep(Duration::from_millis(300));
}

#[test]
fn proc_16_no_descriptor_inflation() {
    for ctx in exec_contexts() {
        bounded(30, move || {
            let mut counts = Vec::new();
            let mut ps = Vec::new();
            let mut rxs = Vec::new();
            for _ in 0..5 {
                let (rx, tx) = pipe_oneway::<usize>().unwrap();
                let mut p = ctx.process(count_fds, tx);
                p.start().unwrap();
                ps.push(p);
                rxs.push(rx);
            }
            for rx in &rxs {
                counts.push(rx.recv_timeout(Duration::from_secs(10)).unwrap());
            }
            for p in &ps {
                p.join().unwrap();
            }
            assert!(
                counts.windows(2).all(|w| w[0] == w[1]),
                "fd counts differ: {counts:?}"
            );
        });
    }
}

fn print_with_closed_stdio(_: ()) {
    // SAFETY: closing our own standard descriptors.
    unsafe {
        libc::close(1);
        libc::close(2);
    }
    println!("into the void");
    eprintln!("into the void");
}

#[test]
fn proc_18_closed_stdio_is_harmless() {
    for_each_context(30, |ctx| {
        let mut p = ctx.process(print_with_closed_stdio, ());
        p.start().unwrap();
        p.join().unwrap();
    });
}

extern "C" fn on_usr1(_: libc::c_int) {
    USR1_SEEN.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

/// Installs a SIGUSR1 handler without SA_RESTART, so blocking calls see EINTR.
pub fn install_usr1_handler() {
    // SAFETY: installing an async-signal-safe handler.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_usr1 as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
    }
}

#[test]
fn proc_25_signals_do_not_break_join() {
    install_usr1_handler();
    for_each_context(30, |ctx| {
        let mut p = ctx.process(sleep_ms, 500);
        p.start().unwrap();
        let pid = std::process::id();
        let pokes = std::thread::spawn(move || {
            for _ in 0..10 {
                std::thread::sleep(Duration::from_millis(20));
                // SAFETY: signalling ourselves; a handler is installed.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGUSR1) };
            }
        });
        p.join().unwrap();
        pokes.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
    });
    assert!(USR1_SEEN.load(std::sync::atomic::Ordering::SeqCst) > 0);
}

fn check_context_rules(tx: Writer<Vec<String>>) {
    let mut log = Vec::new();
    log.push(format!("{:?}", set_start_method(StartMethod::Spawn, false)));
    log.push(format!("{:?}", set_start_method(StartMethod::Fork, false)));
    log.push(format!("{:?}", set_start_method(StartMethod::Fork, true)));
    log.push(format!("{:?}", get_start_method()));
    tx.send(&log).unwrap();
}

#[test]
fn proc_29_contexts_and_the_default_method() {
    assert_eq!(mp_core::get_all_start_methods()[0], StartMethod::Spawn);
    assert_eq!(
        get_context(StartMethod::Fork).unwrap().start_method(),
        StartMethod::Fork
    );
    assert_eq!(
        Context::default_context().start_method(),
        StartMethod::Spawn
    );
    // Changing the global default is done in a child, to keep this test process untouched.
    let (rx, tx) = pipe_oneway::<Vec<String>>().unwrap();
    let mut p = get_context(StartMethod::Spawn)
        .unwrap()
        .process(check_context_rules, tx);
    p.start().unwrap();
    let log = bounded(30, move || {
        rx.recv_timeout(Duration::from_secs(10)).unwrap()
    });
    assert_eq!(
        log,
        vec!["Ok(())", "Err(AlreadySet(Spawn))", "Ok(())", "Fork"]
    );
    p.join().unwrap();
}

#[test]
fn proc_30_closures_need_fork() {
    let captured = String::from("captured");
    for ctx in exec_contexts() {
        let c = captured.clone();
        let mut p = Process::from_closure(move || drop(c)).with_context(ctx);
        assert!(matches!(p.start(), Err(ProcessError::NeedsFork(m)) if m == ctx.start_method()));
        assert!(!p.is_alive());
    }
    let (rx, tx) = pipe_oneway::<String>().unwrap();
    let mut p = Process::from_closure(move || tx.send(&captured).unwrap())
        .with_context(get_context(StartMethod::Fork).unwrap());
    p.start().unwrap();
    assert_eq!(
        bounded(30, move || rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap()),
        "captured"
    );
    p.join().unwrap();
}

#[test]
fn proc_19_a_killed_fork_server_is_replaced() {
    bounded(60, || {
        let ctx = get_context(StartMethod::ForkServer).unwrap();
        let mut first = ctx.process(sleep_ms, 500);
        first.start().unwrap();
        let server = mp_core::process::forkserver_pid().unwrap();
        // SAFETY: killing the fork server we started.
        unsafe { libc::kill(server as libc::pid_t, libc::SIGKILL) };
        first.join().unwrap();
        assert_eq!(first.exitcode(), Some(0));
        let mut second = ctx.process(sleep_ms, 1);
        second.start().unwrap();
        second.join().unwrap();
        assert_ne!(mp_core::process::forkserver_pid(), Some(server));
    });
}

/// A panic hook that holds the hook lock (std takes it for reading while a hook runs) for a
/// while, for panics of threads named "slow-panic"; others go to the previous hook.
fn install_slow_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name() == Some("slow-panic") {
                std::thread::sleep(Duration::from_secs(3));
            } else {
                previous(info);
            }
        }));
    });
}

fn triple(x: u64) -> u64 {
    3 * x
}

/// A pool worker forked while another thread of the parent is inside a panic hook (so the
/// hook lock is held at the moment of the fork) must still work: before the fix it called
/// `take_hook` first thing and waited for a lock nobody in the child would ever release.
#[test]
fn fork_while_another_thread_panics() {
    bounded(60, || {
        install_slow_panic_hook();
        let ctx = mp_core::get_context(mp_core::StartMethod::Fork).unwrap();
        // A first fork installs the process hook in this (parent) process.
        let mut first = ctx.process(sleep_ms, 1);
        first.start().unwrap();
        first.join_timeout(Duration::from_secs(20)).unwrap();
        let panicking = std::thread::Builder::new()
            .name("slow-panic".into())
            .spawn(|| panic!("on purpose, inside a slow hook"))
            .unwrap();
        std::thread::sleep(Duration::from_millis(300)); // now inside the hook
        let pool = mp_core::Pool::builder()
            .processes(1)
            .context(ctx)
            .build()
            .unwrap();
        assert_eq!(pool.apply(triple, 5).unwrap(), 15);
        // A plain forked process, too.
        let mut p = ctx.process(sleep_ms, 1);
        p.start().unwrap();
        p.join_timeout(Duration::from_secs(20)).unwrap();
        assert!(panicking.join().is_err());
        pool.close();
        pool.join().unwrap();
    });
}

/// The pid of the test process, which registered `note_exit_hook`.
static HOOK_OWNER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// An `atexit` hook of the test program: in any other process that runs it (a forked child
/// exiting through `exit`), it leaves a marker file named after that process.
extern "C" fn note_exit_hook() {
    let me = std::process::id();
    if me != HOOK_OWNER.load(std::sync::atomic::Ordering::SeqCst) {
        let _ = std::fs::write(hook_marker(me), b"ran");
    }
}

fn hook_marker(pid: u32) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("mp-test-atexit-{pid}"))
}

fn send_pid(tx: Writer<u32>) {
    tx.send(&std::process::id()).unwrap();
}

/// A forked child leaves without the exit hooks of the program it was forked from (Python's
/// forked children end with `os._exit`); a spawned child is a program of its own and runs
/// its own, which the test cannot register, so only fork and the fork server are checked.
#[test]
fn proc_forked_children_do_not_run_the_parents_exit_hooks() {
    bounded(60, || {
        if HOOK_OWNER.swap(std::process::id(), std::sync::atomic::Ordering::SeqCst) == 0 {
            // SAFETY: registering a plain function with no captured state.
            unsafe { libc::atexit(note_exit_hook) };
        }
        for method in [StartMethod::Fork, StartMethod::ForkServer] {
            let (rx, tx) = pipe_oneway::<u32>().unwrap();
            let mut p = get_context(method).unwrap().process(send_pid, tx);
            p.start().unwrap();
            let pid = rx.recv_timeout(Duration::from_secs(10)).unwrap();
            p.join().unwrap();
            assert!(
                !hook_marker(pid).exists(),
                "{method:?}: the child ran its parent's atexit hook"
            );
        }
    });
}

/// Starts a non-daemon grandchild that reports after a while, and returns at once.
fn leave_a_slow_grandchild(tx: Writer<u32>) {
    let mut g = Process::new(report_later, tx);
    g.start().unwrap();
}

fn report_later(tx: Writer<u32>) {
    std::thread::sleep(Duration::from_millis(200));
    tx.send(&7).unwrap();
}

/// A child's own children are joined before it exits, whatever the start method (for a
/// forked child, without the inherited exit hooks): once the child is joined, the
/// grandchild has finished.
#[test]
fn proc_a_child_joins_its_children_before_it_exits() {
    for_each_context(60, |ctx| {
        let (rx, tx) = pipe_oneway::<u32>().unwrap();
        let mut p = ctx.process(leave_a_slow_grandchild, tx);
        p.start().unwrap();
        p.join().unwrap();
        assert!(
            rx.poll(Duration::ZERO).unwrap(),
            "the child exited before its grandchild finished"
        );
        assert_eq!(rx.recv().unwrap(), 7);
    });
}

/// A forked closure may capture any buffer of its parent: the child counts as a holder of
/// every buffer its parent had until it exits. (Here rather than in `shared_vec.rs`: such a
/// child holds the buffers of every test of the binary running at the time.)
#[test]
fn svec_a_closure_in_a_forked_child_holds_every_buffer() {
    bounded(30, || {
        let v = mp_core::SharedVec::from_slice(&[1u8, 2]).unwrap();
        let (rx, tx) = pipe_oneway::<u8>().unwrap();
        let mut p = Process::from_closure(move || {
            let _ = rx.recv();
        })
        .with_context(get_context(StartMethod::Fork).unwrap());
        p.start().unwrap();
        assert!(!v.is_unique(), "the forked child maps the buffer too");
        tx.send(&0).unwrap();
        p.join().unwrap();
        assert!(v.is_unique());
    });
}
