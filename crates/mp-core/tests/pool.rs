//! Pool behaviours (POOL-* of the acceptance list), under every start method, each bounded
//! in time so that a hang fails.

mod common;

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mp_core::pool::{Callbacks, OnWorkerDeath};
use mp_core::{Context, Pool, PoolError, TaskError};

fn pool(ctx: Context, n: usize) -> Pool {
    Pool::builder().processes(n).context(ctx).build().unwrap()
}

fn sqr(x: i64) -> i64 {
    x * x
}

fn sqr_slow(arg: (i64, u64)) -> i64 {
    std::thread::sleep(Duration::from_millis(arg.1));
    arg.0 * arg.0
}

fn cs(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap()
}

/// POOL-01: apply returns f(x).
#[test]
fn pool01_apply() {
    common::for_each_context(60, |ctx| {
        let p = pool(ctx, 2);
        assert_eq!(p.apply(sqr, 5).unwrap(), 25);
        assert_eq!(p.apply(|x: i64| x * x, 3).unwrap(), 9);
    });
}

/// POOL-02: map, starmap and their async forms, with and without chunksize.
#[test]
fn pool02_map_starmap() {
    common::for_each_context(60, |ctx| {
        let p = pool(ctx, 4);
        let serial: Vec<i64> = (0..10).map(sqr).collect();
        assert_eq!(p.map(sqr, 0..10).unwrap(), serial);
        assert_eq!(p.map_async(sqr, 0..10).unwrap().get().unwrap(), serial);
        let serial: Vec<i64> = (0..100).map(sqr).collect();
        assert_eq!(p.chunksize(cs(20)).map(sqr, 0..100).unwrap(), serial);
        let pairs: Vec<(i64, i64)> = (0..10).zip((0..10).rev()).collect();
        let serial: Vec<i64> = pairs.iter().map(|(a, b)| a * b).collect();
        assert_eq!(
            p.starmap(|a: i64, b: i64| a * b, pairs.clone()).unwrap(),
            serial
        );
        assert_eq!(
            p.starmap_async(|a: i64, b: i64| a * b, pairs)
                .unwrap()
                .get()
                .unwrap(),
            serial
        );
        let pairs: Vec<(i64, i64)> = (0..100).zip((0..100).rev()).collect();
        let serial: Vec<i64> = pairs.iter().map(|(a, b)| a * b).collect();
        assert_eq!(
            p.chunksize(cs(20))
                .starmap(|a: i64, b: i64| a * b, pairs)
                .unwrap(),
            serial
        );
    });
}

fn parse(s: String) -> i64 {
    s.parse().expect("not a number")
}

/// POOL-03: map_async callbacks: success gets the whole list once, error the error once;
/// wait returns after the callback ran.
#[test]
fn pool03_map_async_callbacks() {
    common::for_each_context(60, |ctx| {
        let p = pool(ctx, 2);
        let ok = Arc::new(Mutex::new(Vec::new()));
        let errs = Arc::new(AtomicUsize::new(0));
        let (o, e) = (ok.clone(), errs.clone());
        let r = p
            .map_async_with(
                parse,
                vec!["1".to_string()],
                Callbacks::new()
                    .on_success(move |v: &Vec<i64>| o.lock().unwrap().push(v.clone()))
                    .on_error(move |_| {
                        e.fetch_add(1, Ordering::SeqCst);
                    }),
            )
            .unwrap();
        r.wait();
        assert_eq!(*ok.lock().unwrap(), vec![vec![1]]);
        assert_eq!(errs.load(Ordering::SeqCst), 0);

        let seen = Arc::new(Mutex::new(None));
        let s = seen.clone();
        let oks = Arc::new(AtomicUsize::new(0));
        let o = oks.clone();
        let r = p
            .map_async_with(
                parse,
                vec!["a".to_string()],
                Callbacks::new()
                    .on_success(move |_| {
                        o.fetch_add(1, Ordering::SeqCst);
                    })
                    .on_error(move |e: &TaskError| *s.lock().unwrap() = Some(e.clone())),
            )
            .unwrap();
        r.wait();
        assert_eq!(oks.load(Ordering::SeqCst), 0);
        let err = seen.lock().unwrap().clone().expect("error callback ran");
        assert!(err.to_string().contains("not a number"), "{err}");
        assert_eq!(r.successful(), Some(false));
    });
}

/// An argument whose serialization fails.
struct Unencodable;
impl serde::Serialize for Unencodable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("refuses to be encoded"))
    }
}
impl<'de> serde::Deserialize<'de> for Unencodable {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <()>::deserialize(d).map(|()| Unencodable)
    }
}

/// POOL-04: an argument that cannot be encoded is an error at once, no hang; the pool works.
#[test]
fn pool04_unencodable_argument() {
    common::for_each_context(60, |ctx| {
        let p = pool(ctx, 2);
        let err = p.map(|_: Unencodable| 1u8, vec![Unencodable]).unwrap_err();
        assert!(matches!(err, TaskError::Encode(_)), "{err:?}");
        assert!(matches!(
            p.apply_async(|_: Unencodable| 1u8, Unencodable),
            Err(PoolError::Encode(_))
        ));
        assert_eq!(p.apply(sqr, 4).unwrap(), 16);
    });
}

/// POOL-05: empty inputs.
#[test]
fn pool05_empty_inputs() {
    common::for_each_context(60, |ctx| {
        let p = pool(ctx, 2);
        assert!(p.map(sqr, Vec::new()).unwrap().is_empty());
        assert_eq!(p.imap(sqr, Vec::new()).unwrap().count(), 0);
        assert_eq!(p.imap_unordered(sqr, Vec::new()).unwrap().count(), 0);
        assert!(p
            .map_async(sqr, Vec::new())
            .unwrap()
            .get()
            .unwrap()
            .is_empty());
        let r = p.chunksize(cs(1)).map_async(sqr, Vec::new()).unwrap();
        let v = common::prompt("empty map_async", || r.get_timeout(common::LONG).unwrap());
        assert!(v.is_empty());
        assert!(p
            .starmap(|a: i64, b: i64| a + b, Vec::new())
            .unwrap()
            .is_empty());
    });
}

/// An input iterator that panics at position `at`.
fn failing_input(n: i64, at: i64) -> impl Iterator<Item = i64> {
    (0..n).inspect(move |&i| {
        if i == at {
            panic!("input fails at {at}");
        }
    })
}

/// POOL-06: a failing input iterator gives an error (from the parent, not a worker), and
/// the pool is not wedged.
#[test]
fn pool06_map_failing_input() {
    common::for_each_context(60, |ctx| {
        let p = pool(ctx, 2);
        for at in [0, 3] {
            for _ in 0..2 {
                let err = p.map(sqr, failing_input(10, at)).unwrap_err();
                assert!(
                    matches!(&err, TaskError::Input(m) if m.contains("input fails")),
                    "{err:?}"
                );
            }
        }
        assert_eq!(p.map(sqr, 0..3).unwrap(), [0, 1, 4]);
    });
}

/// POOL-07: apply_async of a 0.1 s task answers after about 0.1 s; get_timeout on a long
/// task times out after about 0.1 s; then terminate and join work.
#[test]
fn pool07_async_and_timeout() {
    common::for_each_context(60, |ctx| {
        let p = pool(ctx, 2);
        p.apply(sqr, 1).unwrap(); // workers up
        let r = p.apply_async(sqr_slow, (7, 100)).unwrap();
        let v = common::about("get", Duration::from_millis(100), || r.get().unwrap());
        assert_eq!(v, 49);
        let r = p.apply_async(sqr_slow, (7, 20_000)).unwrap();
        let e = common::about("get_timeout", Duration::from_millis(100), || {
            r.get_timeout(Duration::from_millis(100))
        });
        assert_eq!(e, Err(TaskError::Timeout));
        p.terminate();
        let t = Instant::now();
        p.join().unwrap();
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        assert_eq!(r.get(), Err(TaskError::Terminated));
    });
}

/// POOL-08: imap yields in input order and then ends.
#[test]
fn pool08_imap_order() {
    common::for_each_context(60, |ctx| {
        let p = pool(ctx, 3);
        let mut it = p.imap(sqr, 0..10).unwrap();
        for i in 0..10 {
            assert_eq!(it.next().unwrap().unwrap(), i * i);
        }
        assert!(it.next().is_none());
        let v: Vec<i64> = p
            .chunksize(cs(100))
            .imap(sqr, 0..1000)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(v, (0..1000).map(sqr).collect::<Vec<_>>());
    });
}

/// POOL-09: imap with a failing input: the complete chunks before the failure, in order,
/// then the error, then the end.
#[test]
fn pool09_imap_failing_input() {
    common::for_each_context(60, |ctx| {
        let p = pool(ctx, 2);
        for (chunk, at, expected) in [(1, 3, 3), (2, 7, 6), (4, 7, 4)] {
            let mut it = p
                .chunksize(cs(chunk))
                .imap(sqr, failing_input(10, at))
                .unwrap();
            for i in 0..expected {
                assert_eq!(it.next().unwrap().unwrap(), i * i, "chunk {chunk}, at {at}");
            }
            let err = it.next().unwrap().unwrap_err();
            assert!(matches!(err, TaskError::Input(_)), "{err:?}");
            assert!(it.next().is_none());
        }
    });
}

/// POOL-10: imap_unordered yields every result once; with a failing input, the values
/// before the error are valid and distinct.
#[test]
fn pool10_imap_unordered() {
    common::for_each_context(60, |ctx| {
        let p = pool(ctx, 3);
        let mut v: Vec<i64> = p
            .imap_unordered(sqr, 0..10)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        v.sort();
        assert_eq!(v, (0..10).map(sqr).collect::<Vec<_>>());
        let mut v: Vec<i64> = p
            .chunksize(cs(100))
            .imap_unordered(sqr, 0..1000)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        v.sort();
        assert_eq!(v, (0..1000).map(sqr).collect::<Vec<_>>());
        let mut seen = Vec::new();
        let mut failed = false;
        for r in p.imap_unordered(sqr, failing_input(10, 5)).unwrap() {
            match r {
                Ok(x) => seen.push(x),
                Err(e) => {
                    assert!(matches!(e, TaskError::Input(_)));
                    failed = true;
                }
            }
        }
        assert!(failed);
        seen.sort();
        assert_eq!(seen, (0..5).map(sqr).collect::<Vec<_>>());
    });
}

/// imap_unordered yields in completion order.
#[test]
fn imap_unordered_completion_order() {
    common::bounded(60, || {
        let p = Pool::new(2).unwrap();
        let v: Vec<i64> = p
            .imap_unordered(sqr_slow, vec![(1, 800), (2, 10), (3, 10)])
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(v.last(), Some(&1), "{v:?}");
    });
}

/// POOL-11: zero workers and a zero maxtasksperchild are refused; Pool(3) has 3 workers.
#[test]
fn pool11_make_pool() {
    common::bounded(60, || {
        assert!(matches!(Pool::new(0), Err(PoolError::InvalidArgument(_))));
        assert!(matches!(
            Pool::builder().processes(1).max_tasks_per_child(0).build(),
            Err(PoolError::InvalidArgument(_))
        ));
        let p = Pool::new(3).unwrap();
        assert_eq!(p.processes(), 3);
        assert_eq!(p.worker_pids().len(), 3);
        let default = Pool::builder().build().unwrap();
        assert_eq!(default.processes(), mp_core::cpu_count());
    });
}

/// POOL-12: terminate with a huge backlog of long tasks returns promptly.
#[test]
fn pool12_terminate_backlog() {
    common::for_each_context(60, |ctx| {
        let p = pool(ctx, 3);
        let r = p
            .chunksize(cs(1))
            .map_async(sqr_slow, (0..10_000).map(|i| (i, 120_000)))
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let t = Instant::now();
        p.terminate();
        p.join().unwrap();
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert_eq!(r.get(), Err(TaskError::Terminated));
    });
}

/// POOL-13: after close, new work is refused with a typed error; join on a running pool is
/// refused; dropping a pool terminates it.
#[test]
fn pool13_closed_pool() {
    common::for_each_context(60, |ctx| {
        let p = pool(ctx, 2);
        assert!(matches!(p.join(), Err(PoolError::StillRunning)));
        assert_eq!(p.map(sqr, 0..4).unwrap(), [0, 1, 4, 9]);
        p.close();
        assert!(matches!(p.apply_async(sqr, 1), Err(PoolError::Closed)));
        assert_eq!(p.map(sqr, 0..4), Err(TaskError::Closed));
        assert!(matches!(p.imap(sqr, 0..4), Err(PoolError::Closed)));
        p.join().unwrap();
        assert!(matches!(p.map_async(sqr, 0..4), Err(PoolError::Closed)));

        let p = pool(ctx, 2);
        let r = p.apply_async(sqr_slow, (1, 60_000)).unwrap();
        let t = Instant::now();
        drop(p);
        assert!(t.elapsed() < Duration::from_secs(5));
        assert_eq!(r.get(), Err(TaskError::Terminated));
    });
}

fn fails(x: i64) -> i64 {
    if x == 3 {
        panic!("RuntimeError({})", 123);
    }
    x
}

/// POOL-14: a panic comes back with message, location and the worker's backtrace; the other
/// items are unaffected.
#[test]
fn pool14_panic_traceback() {
    common::for_each_context(60, |ctx| {
        let p = pool(ctx, 2);
        let err = p.apply(fails, 3).unwrap_err();
        let panic = err.panic().expect("a panic");
        assert_eq!(panic.message, "RuntimeError(123)");
        assert!(panic.location.contains("pool.rs"), "{}", panic.location);
        assert!(panic.backtrace.contains("fails"), "{}", panic.backtrace);
        assert!(err.to_string().contains("RuntimeError(123)"));
        let all = p.map_results(fails, 0..6).unwrap();
        for (i, r) in all.iter().enumerate() {
            if i == 3 {
                assert!(r.as_ref().unwrap_err().panic().is_some());
            } else {
                assert_eq!(*r.as_ref().unwrap(), i as i64);
            }
        }
        assert!(matches!(p.map(fails, 0..6), Err(TaskError::Panicked(_))));
    });
}

fn big_failure(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(500 * x));
    panic!("{}", "x".repeat(1 << 20));
}

/// POOL-15: two tasks failing with 1 MiB messages: map fails, close + join complete, the
/// pool waited for both.
#[test]
fn pool15_no_failfast_large_errors() {
    common::for_each_context(60, |ctx| {
        let t = Instant::now();
        let p = pool(ctx, 2);
        let err = p.chunksize(cs(1)).map(big_failure, [1, 2]).unwrap_err();
        assert_eq!(err.panic().unwrap().message.len(), 1 << 20);
        p.close();
        p.join().unwrap();
        assert!(t.elapsed() > Duration::from_millis(900));
    });
}

fn key_error(_: ()) -> u8 {
    panic!("KeyError")
}

/// POOL-16: apply_async error callback gets the error, get returns it.
#[test]
fn pool16_error_callback() {
    common::for_each_context(60, |ctx| {
        let p = pool(ctx, 2);
        let seen = Arc::new(Mutex::new(None));
        let s = seen.clone();
        let r = p
            .apply_async_with(
                key_error,
                (),
                Callbacks::new()
                    .on_error(move |e: &TaskError| *s.lock().unwrap() = Some(e.clone())),
            )
            .unwrap();
        let err = r.get().unwrap_err();
        assert_eq!(err.panic().unwrap().message, "KeyError");
        assert_eq!(seen.lock().unwrap().clone(), Some(err));
    });
}

/// POOL-17: a result that cannot be encoded fails its task only; no worker is lost.
#[test]
fn pool17_unencodable_result() {
    common::for_each_context(60, |ctx| {
        let p = pool(ctx, 2);
        let pids = p.worker_pids();
        for _ in 0..20 {
            let seen = Arc::new(Mutex::new(None));
            let s = seen.clone();
            let r = p
                .apply_async_with(
                    |_: ()| Unencodable,
                    (),
                    Callbacks::new()
                        .on_error(move |e: &TaskError| *s.lock().unwrap() = Some(e.clone())),
                )
                .unwrap();
            let err = r.into_result().err().unwrap();
            assert!(
                matches!(&err, TaskError::Encode(m) if m.contains("Unencodable")),
                "{err:?}"
            );
            assert_eq!(seen.lock().unwrap().clone(), Some(err));
        }
        assert_eq!(p.worker_pids(), pids);
        assert_eq!(p.apply(sqr, 2).unwrap(), 4);
    });
}

fn my_pid(_: u32) -> u32 {
    std::process::id()
}

/// POOL-18: maxtasksperchild replaces workers; every result is correct.
#[test]
fn pool18_worker_lifetime() {
    common::for_each_context(60, |ctx| {
        let p = Pool::builder()
            .processes(3)
            .max_tasks_per_child(10)
            .context(ctx)
            .build()
            .unwrap();
        let original = p.worker_pids();
        assert_eq!(original.len(), 3);
        let results: Vec<_> = (0..100).map(|i| p.apply_async(sqr, i).unwrap()).collect();
        for (i, r) in results.into_iter().enumerate() {
            assert_eq!(r.get().unwrap(), (i * i) as i64);
        }
        let pids: std::collections::HashSet<u32> = p
            .chunksize(cs(1))
            .map(my_pid, 0..30)
            .unwrap()
            .into_iter()
            .collect();
        assert!(pids.len() >= 3, "{pids:?}");
        assert!(common::eventually(10, || {
            let now = p.worker_pids();
            now.len() == 3 && now.iter().all(|p| !original.contains(p))
        }));
    });
}

/// POOL-19: maxtasksperchild=1 with 6 slow tasks, closed at once: join returns, every
/// result is correct.
#[test]
fn pool19_lifetime_early_close() {
    common::for_each_context(60, |ctx| {
        let p = Pool::builder()
            .processes(3)
            .max_tasks_per_child(1)
            .context(ctx)
            .build()
            .unwrap();
        let results: Vec<_> = (0..6)
            .map(|i| p.apply_async(sqr_slow, (i, 300)).unwrap())
            .collect();
        p.close();
        p.join().unwrap();
        for (i, r) in results.into_iter().enumerate() {
            assert_eq!(r.get().unwrap(), (i * i) as i64);
        }
    });
}

static INITIALIZED: AtomicUsize = AtomicUsize::new(0);

fn init_counter(add: usize) {
    INITIALIZED.fetch_add(add, Ordering::SeqCst);
}

fn read_counter(_: ()) -> usize {
    INITIALIZED.load(Ordering::SeqCst)
}

fn bad_init(_: ()) {
    panic!("initializer refuses");
}

/// POOL-20: the initializer runs in each worker before any task; a panicking one breaks
/// the pool with a clear error instead of hanging.
#[test]
fn pool20_initializer() {
    common::for_each_context(60, pool20_body);
}

fn pool20_body(ctx: mp_core::Context) {
    {
        let p = Pool::builder()
            .processes(1)
            .initializer(init_counter, 1)
            .context(ctx)
            .build()
            .unwrap();
        assert_eq!(p.apply(read_counter, ()).unwrap(), 1);
        let p = Pool::builder()
            .processes(2)
            .initializer(bad_init, ())
            .context(ctx)
            .build()
            .unwrap();
        let err = p.apply(sqr, 2).unwrap_err();
        assert!(
            matches!(&err, TaskError::Broken(m) if m.contains("initializer refuses")),
            "{err:?}"
        );
        assert!(common::eventually(10, || matches!(
            p.apply_async(sqr, 1),
            Err(PoolError::Broken(_))
        )));
    }
}

/// POOL-21: a large pool works; dropping a live pool does not hang.
#[test]
fn pool21_large_pool() {
    common::bounded(120, || {
        let p = Pool::builder()
            .processes(50)
            .context(
                mp_core::get_context(mp_core::StartMethod::Fork)
                    .unwrap_or(Context::default_context()),
            )
            .build()
            .unwrap();
        let sum: i64 = p.map(sqr, 0..1000).unwrap().into_iter().sum();
        assert_eq!(sum, 332_833_500);
        let t = Instant::now();
        drop(p);
        assert!(t.elapsed() < Duration::from_secs(10));
    });
}

#[cfg(unix)]
fn kill_self_at(arg: (u64, u64, i32)) -> u64 {
    if arg.0 == arg.1 {
        // SAFETY: signalling ourselves.
        unsafe { libc::kill(libc::getpid(), arg.2) };
        std::thread::sleep(Duration::from_secs(10));
    }
    arg.0 * 2
}

#[cfg(unix)]
fn segfault_at(arg: (u64, u64)) -> u64 {
    if arg.0 == arg.1 {
        // SAFETY: not safe at all: this is the crash under test.
        unsafe { std::ptr::null_mut::<u64>().write_volatile(1) };
    }
    arg.0 * 2
}

fn abort_at(arg: (u64, u64)) -> u64 {
    if arg.0 == arg.1 {
        std::process::abort();
    }
    arg.0 * 2
}

fn exit_at(arg: (u64, u64)) -> u64 {
    if arg.0 == arg.1 {
        std::process::exit(99);
    }
    arg.0 * 2
}

fn check_one_died(results: &[Result<u64, TaskError>], at: usize, exitcode: i32) {
    for (i, r) in results.iter().enumerate() {
        if i == at {
            assert_eq!(r, &Err(TaskError::WorkerDied { exitcode }), "item {i}");
        } else {
            assert_eq!(r, &Ok(i as u64 * 2), "item {i}");
        }
    }
}

/// POOL-22: a task that SIGKILLs its own worker in the middle of a large map fails alone,
/// with -9; the worker is replaced and the pool stays usable.
#[cfg(unix)]
#[test]
fn pool22_sigkill_mid_map() {
    common::for_each_context(90, |ctx| {
        let p = pool(ctx, 3);
        let pids = p.worker_pids();
        let n = 2000u64;
        let r = p
            .chunksize(cs(1))
            .map_results(kill_self_at, (0..n).map(|i| (i, 1000, libc::SIGKILL)))
            .unwrap();
        check_one_died(&r, 1000, -9);
        let err = r[1000].clone().unwrap_err();
        assert!(err.to_string().contains("SIGKILL"), "{err}");
        // the whole-chunk default also fails only that chunk
        let r = p
            .map_results(segfault_at, (0..n).map(|i| (i, 777)))
            .unwrap();
        let bad: Vec<usize> = (0..n as usize).filter(|i| r[*i].is_err()).collect();
        let chunk = (n as usize).div_ceil(12);
        assert_eq!(bad.len(), chunk, "one chunk of {chunk} fails");
        assert!(bad.contains(&777));
        assert!(r
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| *e == TaskError::WorkerDied { exitcode: -11 }));
        assert_eq!(
            p.map(sqr, 0..10).unwrap(),
            (0..10).map(sqr).collect::<Vec<_>>()
        );
        assert!(common::eventually(10, || p.worker_pids().len() == 3));
        assert_ne!(p.worker_pids(), pids);
    });
}

/// A task that aborts its worker in the middle of a large map fails alone (SIGABRT on Unix).
#[test]
fn pool22_abort_mid_map() {
    common::for_each_context(90, |ctx| {
        let p = pool(ctx, 2);
        let r = p
            .chunksize(cs(1))
            .map_results(abort_at, (0..1500u64).map(|i| (i, 700)))
            .unwrap();
        #[cfg(unix)]
        check_one_died(&r, 700, -6);
        #[cfg(not(unix))]
        assert!(matches!(r[700], Err(TaskError::WorkerDied { .. })));
        let r = p
            .chunksize(cs(1))
            .map_results(exit_at, (0..50u64).map(|i| (i, 10)))
            .unwrap();
        check_one_died(&r, 10, 99);
        assert!(r[10]
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("exit code 99"));
    });
}

/// The opt-in "break the whole pool" policy.
#[test]
fn break_pool_on_worker_death() {
    common::bounded(60, || {
        let p = Pool::builder()
            .processes(2)
            .on_worker_death(OnWorkerDeath::BreakPool)
            .build()
            .unwrap();
        let r = p
            .chunksize(cs(1))
            .map_results(exit_at, (0..200u64).map(|i| (i, 5)))
            .unwrap();
        assert_eq!(r[5], Err(TaskError::WorkerDied { exitcode: 99 }));
        // Breaking the pool fails everything still pending (with the death, or Broken);
        // what the other worker finished before that is kept.
        assert!(r.iter().all(|x| matches!(
            x,
            Ok(_) | Err(TaskError::Broken(_)) | Err(TaskError::WorkerDied { exitcode: 99 })
        )));
        assert!(
            r.iter().filter(|x| x.is_err()).count() > 1,
            "pending tasks failed too"
        );
        // The dispatcher breaks the pool as it handles the death, which may come just after
        // the map's last result.
        assert!(common::eventually(10, || matches!(
            p.apply_async(sqr, 1),
            Err(PoolError::Broken(_))
        )));
    });
}

/// imap is lazy over an endless input, with bounded work in flight.
#[test]
fn imap_endless_input() {
    common::for_each_context(60, |ctx| {
        let p = pool(ctx, 2);
        let pulled = Arc::new(AtomicUsize::new(0));
        let counter = pulled.clone();
        let input = (0i64..).inspect(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        let first: Vec<i64> = p
            .imap(sqr, input)
            .unwrap()
            .take(100)
            .map(Result::unwrap)
            .collect();
        assert_eq!(first, (0..100).map(sqr).collect::<Vec<_>>());
        let pulled = pulled.load(Ordering::SeqCst);
        assert!(pulled < 100 + 10, "pulled {pulled}");
        let first: Vec<i64> = p
            .chunksize(cs(7))
            .imap_unordered(sqr, 0i64..)
            .unwrap()
            .take(50)
            .map(Result::unwrap)
            .collect();
        assert_eq!(first.len(), 50);
    });
}

/// A closure target that captures nothing just works.
#[test]
fn map_closure() {
    common::bounded(60, || {
        let pool = Pool::new(2).unwrap();
        let v = pool.map(|x: u64| x * x, 0..1000).unwrap();
        assert_eq!(v, (0..1000u64).map(|x| x * x).collect::<Vec<_>>());
    });
}

/// Python's `AsyncResult.get()` can be asked again; `into_result` moves the value out;
/// `starmap_async` takes callbacks like `map_async`.
#[test]
fn async_result_get_twice_and_starmap_async_callbacks() {
    common::bounded(60, || {
        let p = Pool::new(2).unwrap();
        let r = p.apply_async(sqr, 7).unwrap();
        assert_eq!(r.get().unwrap(), 49);
        assert_eq!(r.get().unwrap(), 49);
        assert_eq!(r.get_timeout(Duration::ZERO).unwrap(), 49);
        assert_eq!(r.into_result().unwrap(), 49);

        let m = p.map_async(sqr, vec![1, 2, 3]).unwrap();
        assert_eq!(m.get().unwrap(), [1, 4, 9]);
        assert_eq!(m.get().unwrap(), [1, 4, 9]);

        let got = Arc::new(Mutex::new(None));
        let g = got.clone();
        let r = p
            .starmap_async_with(
                |a: i64, b: i64| a * b,
                [(2, 3), (4, 5)],
                Callbacks::new()
                    .on_success(move |v: &Vec<i64>| *g.lock().unwrap() = Some(v.clone())),
            )
            .unwrap();
        assert_eq!(r.get().unwrap(), [6, 20]);
        // Callbacks have run by the time the result is ready.
        assert_eq!(got.lock().unwrap().clone(), Some(vec![6, 20]));

        let failed = Arc::new(Mutex::new(None));
        let f = failed.clone();
        let r = p
            .starmap_async_with(
                |a: i64, b: i64| -> i64 {
                    assert!(b != 0, "division by zero");
                    a / b
                },
                [(1, 1), (1, 0)],
                Callbacks::new()
                    .on_success(|_: &Vec<i64>| panic!("not a success"))
                    .on_error(move |e| *f.lock().unwrap() = Some(e.clone())),
            )
            .unwrap();
        let err = r.get().unwrap_err();
        assert!(err.panic().unwrap().message.contains("division by zero"));
        assert_eq!(failed.lock().unwrap().clone(), Some(err));
    });
}
