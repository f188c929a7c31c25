//! A pool in a manager's server (Python's `manager.Pool()`), with real server, worker and
//! client processes: mapping, a task's panic, a client running another executable refused,
//! the pool dying with its manager, and the pool's lifetime.

mod common;

use std::num::NonZeroUsize;
use std::time::Duration;

use common::{bounded, eventually, kill_pid, pid_alive, prompt, LONG};
use mp_core::manager::{Manager, ManagerError, PoolProxy};
use mp_core::{PoolError, Process, TaskError};

fn square(x: u64) -> u64 {
    x * x
}

fn whose(_: ()) -> u32 {
    std::process::id()
}

fn fussy(x: u32) -> u32 {
    if x == 3 {
        panic!("three is not welcome");
    }
    x
}

fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// A child process handed the pool proxy maps through the same server pool.
fn child_maps(pool: PoolProxy) {
    assert_eq!(pool.map(square, 1..=4u64).unwrap(), [1, 4, 9, 16]);
}

/// Generic pool code: a local pool, a thread pool, or a manager's.
fn squares_on<P: mp_core::api::PoolApi>(pool: &P) -> Vec<u64> {
    pool.map(square, 0..4u64).unwrap()
}

#[test]
fn manager_pool_runs_the_everyday_calls() {
    bounded(120, || {
        let m = Manager::start().unwrap();
        let pool = m.pool(2).unwrap();
        assert_eq!(pool.processes(), 2);
        assert_eq!(
            pool.map(square, 0..10u64).unwrap(),
            (0..10u64).map(|x| x * x).collect::<Vec<_>>()
        );
        assert_eq!(pool.apply(square, 12).unwrap(), 144);
        assert_eq!(
            pool.starmap(|a: u32, b: u32| a * b, [(2, 3), (4, 5)])
                .unwrap(),
            [6, 20]
        );
        let ordered: Vec<u64> = pool
            .imap(square, 0..20u64)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(ordered, (0..20u64).map(|x| x * x).collect::<Vec<_>>());
        let mut unordered: Vec<u64> = pool
            .imap_unordered(square, 0..20u64)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        unordered.sort();
        assert_eq!(unordered, ordered);
        let chunked = pool
            .chunksize(NonZeroUsize::new(7).unwrap())
            .map(square, 0..50u64)
            .unwrap();
        assert_eq!(chunked.len(), 50);
        let asynced = pool.map_async(square, [3u64, 4]).unwrap();
        let starred = pool
            .starmap_async(|a: u8, b: u8| a as u16 + b as u16, [(1, 2)])
            .unwrap();
        assert_eq!(asynced.get().unwrap(), [9, 16]);
        assert_eq!(starred.get().unwrap(), [3]);

        // Callbacks run in this process when the result comes back.
        let (tx, rx) = std::sync::mpsc::channel();
        let r = pool
            .apply_async_with(
                square,
                5u64,
                mp_core::pool::Callbacks::new().on_success(move |v| {
                    tx.send(*v).unwrap();
                }),
            )
            .unwrap();
        assert_eq!(r.get_timeout(LONG).unwrap(), 25);
        assert_eq!(rx.recv_timeout(LONG).unwrap(), 25);

        // The tasks ran in the server's workers: neither here nor in the server itself.
        let pids: Vec<u32> = (0..8).map(|_| pool.apply(whose, ()).unwrap()).collect();
        let server = m.process().unwrap().pid().unwrap();
        assert!(
            pids.iter()
                .all(|p| *p != std::process::id() && *p != server),
            "{pids:?}"
        );

        // Another process uses the same pool through a copy of the proxy.
        let mut p = Process::new(child_maps, pool.clone());
        p.start().unwrap();
        p.join_timeout(LONG).unwrap();

        // Every item's outcome, and code written once for any pool.
        let each = pool.map_results(fussy, 2..5).unwrap();
        assert!(each[1].is_err() && each[0] == Ok(2) && each[2] == Ok(4));
        assert_eq!(squares_on(&pool), [0, 1, 4, 9]);

        pool.close().unwrap();
        assert!(matches!(pool.apply(square, 1), Err(TaskError::Closed)));
        assert!(matches!(
            pool.map_async(square, [1u64]),
            Err(PoolError::Closed)
        ));
        prompt("join after close", || pool.join().unwrap());
    });
}

/// A forked child has a copy of the parent's proxy, taken while the parent waits for a
/// result: it submits and collects on its own.
#[cfg(unix)]
#[test]
fn a_forked_child_uses_its_parents_pool_proxy() {
    bounded(120, || {
        let m = Manager::start().unwrap();
        let pool = m.pool(2).unwrap();
        let slow = pool.apply_async(nap, 500).unwrap();
        let fork = mp_core::get_context(mp_core::StartMethod::Fork).unwrap();
        let mut p = Process::new(child_maps, pool.clone()).with_context(fork);
        p.start().unwrap();
        p.join_timeout(LONG).unwrap();
        assert_eq!(slow.get_timeout(LONG).unwrap(), 500);
        assert_eq!(pool.apply(square, 6).unwrap(), 36);
    });
}

#[test]
fn a_panicking_task_comes_back_as_its_task_error() {
    bounded(120, || {
        let m = Manager::start().unwrap();
        let pool = m.pool(2).unwrap();
        let err = pool.apply(fussy, 3).unwrap_err();
        let panic = err
            .panic()
            .unwrap_or_else(|| panic!("not a panic: {err:?}"));
        assert_eq!(panic.message, "three is not welcome");
        assert!(
            panic.location.contains("manager_pool.rs"),
            "{}",
            panic.location
        );
        // In a map, the first failure is the error; the pool goes on.
        let err = pool.map(fussy, 0..6).unwrap_err();
        assert_eq!(err.panic().unwrap().message, "three is not welcome");
        let each: Vec<_> = pool.imap(fussy, 2..5).unwrap().collect();
        assert_eq!(each[0], Ok(2));
        assert!(each[1].as_ref().unwrap_err().panic().is_some());
        assert_eq!(each[2], Ok(4));
        assert_eq!(pool.apply(fussy, 4).unwrap(), 4);
    });
}

#[test]
fn terminate_fails_what_is_outstanding() {
    bounded(120, || {
        let m = Manager::start().unwrap();
        let pool = m.pool(1).unwrap();
        let slow = pool.apply_async(nap, 60_000).unwrap();
        // The task is running before the pool is terminated.
        assert_eq!(pool.apply_async(nap, 0).map(|_| ()).ok(), Some(()));
        std::thread::sleep(Duration::from_millis(200));
        pool.terminate().unwrap();
        let got = prompt("a terminated task's result", || slow.get_timeout(LONG));
        assert!(
            matches!(
                got,
                Err(TaskError::Terminated | TaskError::WorkerDied { .. })
            ),
            "{got:?}"
        );
        prompt("join after terminate", || pool.join().unwrap());
        assert!(matches!(pool.apply(square, 1), Err(TaskError::Terminated)));
    });
}

#[test]
fn the_pool_dies_with_its_manager_and_says_so() {
    bounded(120, || {
        let m = Manager::start().unwrap();
        let pool = m.pool(1).unwrap();
        let worker = pool.apply(whose, ()).unwrap();
        let pending = pool.apply_async(nap, 60_000).unwrap();
        let server = m.process().unwrap().pid().unwrap();
        kill_pid(server);
        let got = prompt("the result of a task whose manager died", || {
            pending.get_timeout(LONG)
        });
        assert!(matches!(got, Err(TaskError::Manager(_))), "{got:?}");
        let again = prompt("a call on a dead manager's pool", || pool.apply(square, 2));
        assert!(matches!(again, Err(TaskError::Manager(_))), "{again:?}");
        let submitted = pool.map_async(square, [1u64, 2]);
        assert!(
            matches!(submitted, Err(PoolError::Manager(_))),
            "{submitted:?}"
        );
        assert!(matches!(pool.close(), Err(PoolError::Manager(_))));
        // The server's workers do not outlive it.
        assert!(
            eventually(60, || !pid_alive(worker)),
            "worker {worker} survived its manager"
        );
        drop(pool);
        drop(m);
    });
}

#[test]
fn the_server_frees_the_pool_with_its_last_proxy() {
    bounded(120, || {
        let m = Manager::start().unwrap();
        let pool = m.pool(1).unwrap();
        let copy = pool.clone();
        let worker = pool.apply(whose, ()).unwrap();
        assert_eq!(m.object_count().unwrap(), 1);
        drop(pool);
        assert_eq!(copy.apply(square, 3).unwrap(), 9, "the copy still holds it");
        drop(copy);
        // The collector thread that delivered the last result lets go of its reference as
        // it ends, just after the result arrived: the count reaches zero then.
        assert!(
            eventually(60, || m.object_count().unwrap() == 0),
            "the pool outlived its last proxy"
        );
        assert!(
            eventually(60, || !pid_alive(worker)),
            "the freed pool's worker lives on"
        );
    });
}

#[test]
fn bad_pool_arguments_are_typed_errors() {
    bounded(60, || {
        let m = Manager::start().unwrap();
        match m.pool(0) {
            Err(ManagerError::Remote(e)) => assert_eq!(e.kind, "ValueError", "{e}"),
            other => panic!("{other:?}"),
        }
        // Shareable objects cannot pass through the manager's connection.
        let lock = mp_core::Lock::new().unwrap();
        let pool = m.pool(1).unwrap();
        let r = pool.apply_async(|l: mp_core::Lock| l.is_locked(), lock);
        assert!(matches!(r, Err(PoolError::HandlesUnsupported(_))), "{r:?}");
        // A proxy can.
        let d = m.dict::<String, u32>().unwrap();
        let set = |d: mp_core::manager::DictProxy<String, u32>| d.set(&"k".into(), &7).is_ok();
        assert!(pool.apply(set, d.clone()).unwrap());
        assert_eq!(d.get(&"k".into()).unwrap(), Some(7));
    });
}

fn bulky(n: usize) -> Vec<u8> {
    vec![7; n]
}

#[test]
fn a_result_past_the_servers_limits_fails_its_task_only() {
    bounded(60, || {
        let limits = mp_core::manager::ServerLimits {
            max_message: 1 << 20,
            ..Default::default()
        };
        let m = Manager::builder::<mp_core::manager::Builtins>()
            .limits(limits)
            .start()
            .unwrap();
        let pool = m.pool(2).unwrap();
        // Outstanding while the oversized result comes back: unaffected by it.
        let slow = pool.apply_async(nap, 1500).unwrap();
        let err = pool.apply(bulky, 2 << 20).unwrap_err();
        assert!(
            matches!(&err, TaskError::Manager(m) if m.contains("MemoryError")),
            "{err:?}"
        );
        assert_eq!(slow.get_timeout(LONG).unwrap(), 1500);
        assert_eq!(pool.apply(bulky, 3).unwrap(), [7; 3]);
    });
}

/// A map larger than one submit request (16 MiB of task frames) goes in several.
#[test]
fn a_long_map_is_submitted_in_parts() {
    bounded(120, || {
        let m = Manager::start().unwrap();
        let pool = m.pool(2).unwrap();
        let items: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 512 << 10]).collect();
        let sums = pool
            .chunksize(NonZeroUsize::new(1).unwrap())
            .map(|v: Vec<u8>| v.iter().map(|b| *b as u64).sum::<u64>(), items)
            .unwrap();
        let want: Vec<u64> = (0..40u64).map(|i| i * (512 << 10)).collect();
        assert_eq!(sums, want);
    });
}

/// Run by [`another_executable_is_refused`] in a copy of this test binary that differs by a
/// few trailing bytes: same code, another executable file.
#[test]
#[ignore = "run by another_executable_is_refused, in a copy of this binary"]
fn other_executable_client() {
    let Ok(address) = std::env::var("MP_TEST_POOL_ADDRESS") else {
        return;
    };
    let address: mp_core::Address = address.parse().unwrap();
    let m = Manager::connect(&address, b"pool test key").unwrap();
    match m.pool(1) {
        Err(ManagerError::OtherExecutable(msg)) => println!("creation refused: {msg}"),
        other => panic!("creation not refused: {other:?}"),
    }
    let pool: PoolProxy = m.lookup("pool").unwrap().expect("published");
    match pool.map_async(square, [1u64, 2]) {
        Err(PoolError::Manager(ManagerError::OtherExecutable(_))) => {
            println!("submission refused")
        }
        other => panic!("submission not refused: {other:?}"),
    }
    match pool.apply(square, 2) {
        Err(TaskError::Manager(msg)) if msg.contains("another executable") => {
            println!("apply refused")
        }
        other => panic!("apply not refused: {other:?}"),
    }
    println!("OTHER EXECUTABLE REFUSED");
}

#[test]
fn another_executable_is_refused() {
    bounded(120, || {
        let m = Manager::builder::<mp_core::manager::Builtins>()
            .authkey(b"pool test key")
            .start()
            .unwrap();
        let pool = m.pool(1).unwrap();
        m.publish("pool", &pool).unwrap();

        // A copy of this binary with bytes appended: the same code, another fingerprint.
        let me = std::env::current_exe().unwrap();
        let copy = std::env::temp_dir().join(format!(
            "mp-other-exe-{}{}",
            std::process::id(),
            std::env::consts::EXE_SUFFIX
        ));
        std::fs::copy(&me, &copy).unwrap();
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&copy)
                .unwrap();
            f.write_all(b"another build").unwrap();
        }
        let run = || {
            std::process::Command::new(&copy)
                .args([
                    "--ignored",
                    "--exact",
                    "other_executable_client",
                    "--nocapture",
                ])
                .env("MP_TEST_POOL_ADDRESS", m.address().to_string())
                .stdin(std::process::Stdio::null())
                .output()
        };
        // A fork elsewhere in this process may briefly hold the copy open for writing.
        let mut out = run();
        for _ in 0..50 {
            match &out {
                Err(e) if e.raw_os_error() == Some(26) => {
                    std::thread::sleep(Duration::from_millis(100));
                    out = run();
                }
                _ => break,
            }
        }
        let _ = std::fs::remove_file(&copy);
        let out = out.unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("OTHER EXECUTABLE REFUSED"), "{text}");
        // The same executable is served as before.
        assert_eq!(pool.apply(square, 9).unwrap(), 81);
    });
}
