//! ProcessPoolExecutor behaviours (EXEC-* of the acceptance list), bounded in time.

mod common;

use std::collections::HashSet;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use mp_core::pool::{MapOptions, OnWorkerDeath, ProcessPoolExecutor, TaskFuture};
use mp_core::{Context, PoolError, TaskError};
use std::num::NonZeroUsize;

fn executor(ctx: Context, n: usize) -> ProcessPoolExecutor {
    ProcessPoolExecutor::builder()
        .max_workers(n)
        .context(ctx)
        .build()
        .unwrap()
}

fn pow(arg: (u64, u32)) -> u64 {
    arg.0.pow(arg.1)
}

fn sleep_then(arg: (u64, u64)) -> u64 {
    std::thread::sleep(Duration::from_millis(arg.1));
    arg.0
}

fn my_pid(_: u64) -> u32 {
    std::process::id()
}

/// EXEC-01: submit returns a future with the result.
#[test]
fn exec01_submit() {
    common::for_each_context(60, |ctx| {
        let ex = executor(ctx, 2);
        assert_eq!(ex.submit(pow, (2, 8)).unwrap().result().unwrap(), 256);
        assert_eq!(
            ex.submit(|(a, b): (u64, u64)| a * b, (2, 8))
                .unwrap()
                .result()
                .unwrap(),
            16
        );
    });
}

/// EXEC-02: map equals the serial result, with several chunk sizes; chunksize 0 refused.
#[test]
fn exec02_map() {
    common::for_each_context(60, |ctx| {
        let ex = executor(ctx, 2);
        let input: Vec<(u64, u32)> = (0..10).map(|i| (i, i as u32)).collect();
        let serial: Vec<u64> = input.iter().copied().map(pow).collect();
        let got: Vec<u64> = ex
            .map(pow, input.clone())
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(got, serial);
        let got: Vec<u64> = ex
            .map_chunked(pow, input, 3)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(got, serial);
        let input: Vec<(u64, u32)> = (0..40).map(|i| (i, 2)).collect();
        let serial: Vec<u64> = input.iter().copied().map(pow).collect();
        for cs in [6, 40, 50] {
            let got: Vec<u64> = ex
                .map_chunked(pow, input.clone(), cs)
                .unwrap()
                .map(Result::unwrap)
                .collect();
            assert_eq!(got, serial);
        }
        assert!(matches!(
            ex.map_chunked(pow, input, 0),
            Err(PoolError::InvalidArgument(_))
        ));
    });
}

fn divmod(arg: (u64, u64)) -> (u64, u64) {
    (arg.0 / arg.1, arg.0 % arg.1)
}

/// EXEC-03: map yields results, then the failing item's error.
#[test]
fn exec03_map_exception() {
    common::bounded(60, || {
        let ex = ProcessPoolExecutor::new(2).unwrap();
        let mut it = ex.map(divmod, [(1, 2), (1, 3), (1, 0), (1, 5)]).unwrap();
        assert_eq!(it.next().unwrap().unwrap(), (0, 1));
        assert_eq!(it.next().unwrap().unwrap(), (0, 1));
        let err = it.next().unwrap().unwrap_err();
        assert!(err.to_string().contains("divide by zero"), "{err}");
    });
}

/// EXEC-04: map with a timeout yields what is ready, then Timeout at about the deadline.
#[test]
fn exec04_map_timeout() {
    common::bounded(60, || {
        let ex = ProcessPoolExecutor::new(3).unwrap();
        let t = Instant::now();
        let mut it = ex
            .map(sleep_then, [(1, 0), (2, 0), (3, 3000)])
            .unwrap()
            .with_timeout(Duration::from_millis(1500));
        assert_eq!(it.next().unwrap().unwrap(), 1);
        assert_eq!(it.next().unwrap().unwrap(), 2);
        assert_eq!(it.next().unwrap(), Err(TaskError::Timeout));
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(1480) && took < Duration::from_millis(2800),
            "{took:?}"
        );
        assert!(it.next().is_none());
    });
}

/// EXEC-05: zero workers refused.
#[test]
fn exec05_max_workers() {
    assert!(matches!(
        ProcessPoolExecutor::new(0),
        Err(PoolError::InvalidArgument(_))
    ));
}

/// EXEC-06: more tasks than workers, shutdown straight away: no hang, all done.
#[test]
fn exec06_shutdown_race() {
    common::for_each_context(60, |ctx| {
        let ex = executor(ctx, 2);
        let it = ex.map(pow, (0..20).map(|i| (i, 2))).unwrap();
        ex.shutdown(true, false);
        assert_eq!(it.map(Result::unwrap).count(), 20);
    });
}

#[cfg(unix)]
fn kill_self(arg: (u64, i32)) -> u64 {
    if arg.1 != 0 {
        // SAFETY: signalling ourselves.
        unsafe { libc::kill(libc::getpid(), arg.1) };
        std::thread::sleep(Duration::from_secs(10));
    }
    std::thread::sleep(Duration::from_millis(100));
    arg.0
}

/// EXEC-07: a worker killed while running a task fails that future only; the others
/// complete and submit keeps working.
#[cfg(unix)]
#[test]
fn exec07_killed_child() {
    common::for_each_context(60, |ctx| {
        let ex = executor(ctx, 2);
        let futures: Vec<_> = (0..8)
            .map(|i| {
                let sig = if i == 2 { libc::SIGTERM } else { 0 };
                ex.submit(kill_self, (i, sig)).unwrap()
            })
            .collect();
        for (i, f) in futures.iter().enumerate() {
            if i == 2 {
                assert_eq!(f.result(), Err(TaskError::WorkerDied { exitcode: -15 }));
            } else {
                assert_eq!(f.result().unwrap(), i as u64);
            }
        }
        assert_eq!(ex.submit(pow, (3, 2)).unwrap().result().unwrap(), 9);
    });
}

fn exit_with(code: i32) -> u8 {
    std::process::exit(code)
}

/// EXEC-08: a worker exiting with 99 names the code; each failed future has its own error.
#[test]
fn exec08_exit_code_named() {
    common::for_each_context(60, |ctx| {
        let ex = executor(ctx, 2);
        let a = ex.submit(exit_with, 99).unwrap();
        let b = ex.submit(exit_with, 99).unwrap();
        let (ea, eb) = (a.result().unwrap_err(), b.result().unwrap_err());
        assert_eq!(ea, TaskError::WorkerDied { exitcode: 99 });
        assert_eq!(eb, TaskError::WorkerDied { exitcode: 99 });
        assert!(ea.to_string().contains("died") && ea.to_string().contains("99"));
    });
}

fn raises(_: ()) -> u8 {
    panic!("RuntimeError(123)")
}

/// EXEC-09: a panic comes back with message and backtrace.
#[test]
fn exec09_traceback() {
    common::bounded(60, || {
        let ex = ProcessPoolExecutor::new(1).unwrap();
        let err = ex.submit(raises, ()).unwrap().result().unwrap_err();
        let p = err.panic().unwrap();
        assert_eq!(p.message, "RuntimeError(123)");
        assert!(p.location.contains("executor.rs"));
        assert!(p.backtrace.contains("raises"), "{}", p.backtrace);
    });
}

/// EXEC-10: workers start on demand and are reused.
#[test]
fn exec10_saturation_and_reuse() {
    common::for_each_context(60, |ctx| {
        let ex = executor(ctx, 3);
        assert_eq!(ex.workers_started(), 0);
        for _ in 0..3 {
            ex.submit(pow, (2, 2)).unwrap().result().unwrap();
        }
        assert_eq!(ex.workers_started(), 1);
        let fs: Vec<_> = (0..45)
            .map(|i| ex.submit(sleep_then, (i, 20)).unwrap())
            .collect();
        for f in fs {
            f.result().unwrap();
        }
        assert_eq!(ex.workers_started(), 3);
    });
}

/// EXEC-11: max_tasks_per_child=3 with one worker: tasks 1-3 in one pid, task 4 in another;
/// never more than one worker process.
#[test]
fn exec11_max_tasks_per_child() {
    common::for_each_context(60, |ctx| {
        let ex = ProcessPoolExecutor::builder()
            .max_workers(1)
            .max_tasks_per_child(3)
            .context(ctx)
            .build()
            .unwrap();
        let mut pids = Vec::new();
        for i in 0..4 {
            pids.push(ex.submit(my_pid, i).unwrap().result().unwrap());
            assert!(ex.worker_pids().len() <= 1);
        }
        assert_eq!(pids[0], pids[1]);
        assert_eq!(pids[1], pids[2]);
        assert_ne!(pids[2], pids[3]);
    });
}

/// EXEC-12: recycling never stalls a backlog; early shutdown with max_tasks_per_child=1.
#[test]
fn exec12_recycling_backlog() {
    common::for_each_context(60, |ctx| {
        for (workers, per_child, tasks) in [(1, 2, 6), (2, 2, 8), (3, 1, 6)] {
            let ex = ProcessPoolExecutor::builder()
                .max_workers(workers)
                .max_tasks_per_child(per_child)
                .context(ctx)
                .build()
                .unwrap();
            let fs: Vec<_> = (0..tasks)
                .map(|i| ex.submit(pow, (i, 2)).unwrap())
                .collect();
            ex.shutdown(true, false);
            for (i, f) in fs.iter().enumerate() {
                assert_eq!(f.result().unwrap(), (i * i) as u64);
            }
        }
    });
}

/// EXEC-13: shutdown(wait=false) with queued work and max_tasks_per_child=1: the remaining
/// futures complete; dropping the executor resolves every future.
#[test]
fn exec13_shutdown_no_wait() {
    common::for_each_context(60, |ctx| {
        let ex = ProcessPoolExecutor::builder()
            .max_workers(1)
            .max_tasks_per_child(1)
            .context(ctx)
            .build()
            .unwrap();
        let fs: Vec<_> = (1..=2)
            .map(|i| ex.submit(sleep_then, (i, 50)).unwrap())
            .collect();
        ex.shutdown(false, false);
        assert_eq!(fs[0].result().unwrap(), 1);
        assert_eq!(fs[1].result().unwrap(), 2);
        let ex = executor(ctx, 1);
        let fs: Vec<_> = (0..3)
            .map(|i| ex.submit(sleep_then, (i, 50)).unwrap())
            .collect();
        drop(ex);
        assert!(fs.iter().all(|f| f.done()));
    });
}

fn bad_init(_: ()) {
    panic!("initializer failed");
}

/// EXEC-14/28: an initializer that panics breaks the executor: the future fails with
/// Broken, later submits are refused.
#[test]
fn exec28_failing_initializer() {
    common::for_each_context(60, |ctx| {
        let ex = ProcessPoolExecutor::builder()
            .max_workers(2)
            .initializer(bad_init, ())
            .context(ctx)
            .build()
            .unwrap();
        let err = ex.submit(pow, (1, 1)).unwrap().result().unwrap_err();
        assert!(
            matches!(&err, TaskError::Broken(m) if m.contains("initializer failed")),
            "{err:?}"
        );
        assert!(common::eventually(10, || matches!(
            ex.submit(pow, (1, 1)),
            Err(PoolError::Broken(_))
        )));
    });
}

static SEEN: AtomicUsize = AtomicUsize::new(0);
fn init_seen(v: usize) {
    SEEN.store(v, Ordering::SeqCst);
}
fn read_seen(_: ()) -> usize {
    SEEN.load(Ordering::SeqCst)
}

/// EXEC-28: the initializer runs before tasks.
#[test]
fn exec28_initializer() {
    common::for_each_context(60, |ctx| {
        let ex = ProcessPoolExecutor::builder()
            .max_workers(2)
            .initializer(init_seen, 7)
            .context(ctx)
            .build()
            .unwrap();
        assert_eq!(ex.submit(read_seen, ()).unwrap().result().unwrap(), 7);
    });
}

/// EXEC-15: terminate_workers stops blocked tasks; submit is refused afterwards; twice is
/// harmless, also before any worker started.
#[test]
fn exec15_terminate_workers() {
    common::for_each_context(60, |ctx| {
        let ex = executor(ctx, 2);
        ex.terminate_workers();
        let ex = executor(ctx, 2);
        let f = ex.submit(sleep_then, (1, 60_000)).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let t = Instant::now();
        ex.terminate_workers();
        assert!(t.elapsed() < Duration::from_secs(5));
        assert_eq!(f.result(), Err(TaskError::Terminated));
        assert!(ex.submit(pow, (1, 1)).is_err());
        ex.terminate_workers();
    });
}

/// EXEC-15: kill_workers, the same with SIGKILL.
#[test]
fn exec15_kill_workers() {
    common::for_each_context(60, |ctx| {
        let ex = executor(ctx, 2);
        ex.kill_workers();
        let ex = executor(ctx, 2);
        let f = ex.submit(sleep_then, (1, 60_000)).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let pids = ex.worker_pids();
        ex.kill_workers();
        assert_eq!(f.result(), Err(TaskError::Terminated));
        assert!(ex.submit(pow, (1, 1)).is_err());
        for pid in pids {
            assert!(!common::pid_alive(pid), "worker {pid} still alive");
        }
        ex.kill_workers();
    });
}

/// Ignores SIGTERM, says so by creating the file `arg.0`, then sleeps: only SIGKILL ends it
/// at once.
#[cfg(unix)]
fn sleep_ignoring_sigterm(arg: (String, u64)) {
    // SAFETY: changing this worker's disposition of SIGTERM.
    unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
    std::fs::write(&arg.0, b"").unwrap();
    std::thread::sleep(Duration::from_millis(arg.1));
}

/// EXEC-15: kill_workers ends a task that ignores SIGTERM at once (terminate_workers would
/// wait out its grace period before killing it).
#[cfg(unix)]
#[test]
fn exec15_kill_workers_ends_a_task_that_ignores_sigterm() {
    common::for_each_context(60, |ctx| {
        let ex = executor(ctx, 1);
        let marker = std::env::temp_dir().join(format!(
            "mp-exec15-{}-{:?}",
            std::process::id(),
            ctx.start_method()
        ));
        let _ = std::fs::remove_file(&marker);
        let path = marker.to_string_lossy().into_owned();
        let f = ex.submit(sleep_ignoring_sigterm, (path, 60_000)).unwrap();
        assert!(common::eventually(20, || marker.exists()));
        let t = Instant::now();
        ex.kill_workers();
        assert!(
            t.elapsed() < Duration::from_millis(1500),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(f.result(), Err(TaskError::Terminated));
        std::fs::remove_file(&marker).unwrap();
    });
}

struct Unencodable;
impl serde::Serialize for Unencodable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("no"))
    }
}
impl<'de> serde::Deserialize<'de> for Unencodable {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <()>::deserialize(d).map(|()| Unencodable)
    }
}

/// EXEC-16/19: encoding errors of the argument (at submit) and of the result (on the
/// future) fail only their own task; nothing hangs.
#[test]
fn exec16_encode_decode_errors() {
    common::bounded(60, || {
        let ex = ProcessPoolExecutor::new(2).unwrap();
        assert!(matches!(
            ex.submit(|_: Unencodable| 1u8, Unencodable),
            Err(PoolError::Encode(_))
        ));
        let err = ex
            .submit(|_: ()| Unencodable, ())
            .unwrap()
            .into_result()
            .err()
            .unwrap();
        assert!(matches!(err, TaskError::Encode(_)));
        assert_eq!(ex.submit(pow, (2, 2)).unwrap().result().unwrap(), 4);
    });
}

#[cfg(unix)]
fn segfault(_: ()) -> u8 {
    // SAFETY: not safe: this is the crash under test.
    unsafe { std::ptr::null_mut::<u64>().write_volatile(1) };
    0
}

/// EXEC-18: segfault, exit(1), panic while a task runs: each its own error.
#[cfg(unix)]
#[test]
fn exec18_crash_exit_error_during_task() {
    common::for_each_context(60, |ctx| {
        let ex = executor(ctx, 2);
        assert_eq!(
            ex.submit(segfault, ()).unwrap().result(),
            Err(TaskError::WorkerDied { exitcode: -11 })
        );
        assert_eq!(
            ex.submit(exit_with, 1).unwrap().result(),
            Err(TaskError::WorkerDied { exitcode: 1 })
        );
        assert!(matches!(
            ex.submit(raises, ()).unwrap().result(),
            Err(TaskError::Panicked(_))
        ));
        assert_eq!(ex.submit(pow, (5, 2)).unwrap().result().unwrap(), 25);
    });
}

fn big_then_die(v: Vec<u8>) -> usize {
    if v.len() > 10 {
        std::process::abort();
    }
    v.len()
}

/// EXEC-21/22: a crash during shutdown(wait) fails its future and shutdown returns; a
/// crash with a task larger than the pipe buffer does not deadlock; 100 quick submits.
#[test]
fn exec22_crash_big_data_and_shutdown() {
    common::for_each_context(60, |ctx| {
        let ex = executor(ctx, 2);
        let f = ex.submit(big_then_die, vec![7u8; 8 << 20]).unwrap();
        assert!(matches!(f.result(), Err(TaskError::WorkerDied { .. })));
        let fs: Vec<_> = (0..100).map(|i| ex.submit(pow, (i, 1)).unwrap()).collect();
        let crash = ex.submit(big_then_die, vec![1u8; 100]).unwrap();
        ex.shutdown(true, false);
        assert!(matches!(crash.result(), Err(TaskError::WorkerDied { .. })));
        for (i, f) in fs.iter().enumerate() {
            assert_eq!(f.result().unwrap(), i as u64);
        }
    });
}

/// EXEC-23: submit after shutdown is refused.
#[test]
fn exec23_submit_after_shutdown() {
    common::bounded(60, || {
        let ex = ProcessPoolExecutor::new(1).unwrap();
        ex.shutdown(true, false);
        assert!(matches!(ex.submit(pow, (1, 1)), Err(PoolError::Closed)));
    });
}

/// EXEC-24: dropping the executor waits for submitted work; 50 tasks then shutdown: all done.
#[test]
fn exec24_drop_waits() {
    common::bounded(60, || {
        let ex = ProcessPoolExecutor::new(2).unwrap();
        let f = ex.submit(sleep_then, (5, 300)).unwrap();
        drop(ex);
        assert_eq!(f.result_timeout(Duration::ZERO).unwrap(), 5);
        let ex = ProcessPoolExecutor::new(2).unwrap();
        let fs: Vec<_> = (0..50).map(|i| ex.submit(pow, (i, 1)).unwrap()).collect();
        ex.shutdown(true, false);
        assert!(fs.iter().all(|f| f.done()));
    });
}

/// EXEC-25: shutdown(cancel_futures): most queued futures are cancelled, the others are
/// done without error; cancel then shutdown returns quickly.
#[test]
fn exec25_cancel_futures() {
    common::for_each_context(60, |ctx| {
        let ex = executor(ctx, 5);
        let fs: Vec<_> = (0..50)
            .map(|i| ex.submit(sleep_then, (i, 100)).unwrap())
            .collect();
        // Once work has started (worker start-up is slow under Wine, so not a fixed sleep).
        assert!(common::eventually(20, || fs[0].running() || fs[0].done()));
        ex.shutdown(true, true);
        let cancelled = fs.iter().filter(|f| f.cancelled()).count();
        assert!(cancelled > 20, "{cancelled}");
        assert!(fs.iter().all(|f| f.done()));
        let ran = fs
            .iter()
            .filter(|f| !f.cancelled())
            .inspect(|f| {
                f.result().unwrap();
            })
            .count();
        assert!(ran >= 1);

        let ex = executor(ctx, 1);
        let f = ex.submit(sleep_then, (1, 10)).unwrap();
        let _ = f.cancel();
        let t = Instant::now();
        ex.shutdown(true, false);
        assert!(t.elapsed() < Duration::from_secs(5));
    });
}

/// EXEC-26: after shutdown the workers are gone and earlier results are all there.
#[test]
fn exec26_processes_end() {
    common::for_each_context(60, |ctx| {
        let ex = executor(ctx, 3);
        let it = ex.map(|x: i64| x.abs(), -5..5).unwrap();
        let pids: HashSet<u32> = ex.worker_pids().into_iter().collect();
        ex.shutdown(true, false);
        assert!(ex.worker_pids().is_empty());
        let v: Vec<i64> = it.map(Result::unwrap).collect();
        assert_eq!(v, [5, 4, 3, 2, 1, 0, 1, 2, 3, 4]);
        for pid in pids {
            assert!(!common::pid_alive(pid), "worker {pid} still alive");
        }
    });
}

/// EXEC-27: max_tasks_per_child=1, one task of three panics, shutdown(wait=false): no
/// crash, no hang, first result collected.
#[test]
fn exec27_shutdown_no_wait_with_error() {
    common::bounded(60, || {
        for workers in [2, 4] {
            let ex = ProcessPoolExecutor::builder()
                .max_workers(workers)
                .max_tasks_per_child(1)
                .build()
                .unwrap();
            let a = ex.submit(pow, (1, 1)).unwrap();
            let b = ex.submit(raises, ()).unwrap();
            let c = ex.submit(pow, (2, 1)).unwrap();
            ex.shutdown(false, false);
            assert_eq!(a.result().unwrap(), 1);
            assert!(b.result().is_err());
            assert_eq!(c.result().unwrap(), 2);
        }
    });
}

/// EXEC-29: future states: cancel on pending succeeds (twice), fails on running/finished;
/// result_timeout(0) on pending is Timeout; done callbacks run, also when added late.
#[test]
fn exec29_future_states() {
    common::bounded(60, || {
        let ex = ProcessPoolExecutor::new(1).unwrap();
        let running = ex.submit(sleep_then, (1, 500)).unwrap();
        assert!(common::eventually(5, || running.running()));
        let pending = ex.submit(sleep_then, (2, 10)).unwrap();
        let pending2 = ex.submit(sleep_then, (3, 10)).unwrap();
        assert_eq!(
            pending2.result_timeout(Duration::ZERO),
            Err(TaskError::Timeout)
        );
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        pending.add_done_callback(move |f| {
            assert!(f.cancelled());
            c.fetch_add(1, Ordering::SeqCst);
        });
        assert!(pending.cancel());
        assert!(pending.cancel());
        assert!(pending.cancelled() && pending.done());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(pending.result(), Err(TaskError::Cancelled));
        assert!(!running.cancel());
        assert_eq!(running.result().unwrap(), 1);
        assert_eq!(pending2.result().unwrap(), 3);
        assert!(!pending2.cancel());
        let c = calls.clone();
        pending2.add_done_callback(move |f| {
            assert_eq!(f.result().unwrap(), 3);
            c.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    });
}

struct Unpark(std::thread::Thread);
impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark()
    }
}

/// A minimal executor for the `.await` test: polls, parks until woken.
fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = TaskContext::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

/// Futures can be awaited from async code; the dispatcher wakes the waker.
#[test]
fn futures_await() {
    common::bounded(60, || {
        let ex = ProcessPoolExecutor::new(2).unwrap();
        let a = ex.submit(sleep_then, (20, 200)).unwrap();
        let b = ex.submit(pow, (2, 10)).unwrap();
        let sum = block_on(async move { a.await.unwrap() + b.await.unwrap() });
        assert_eq!(sum, 20 + 1024);
    });
}

/// The "break the whole pool" policy gives Python's BrokenProcessPool behaviour.
#[test]
fn break_pool_policy() {
    common::bounded(60, || {
        let ex = ProcessPoolExecutor::builder()
            .max_workers(1)
            .on_worker_death(OnWorkerDeath::BreakPool)
            .build()
            .unwrap();
        let a = ex.submit(exit_with, 3).unwrap();
        let b = ex.submit(pow, (2, 2)).unwrap();
        assert_eq!(a.result(), Err(TaskError::WorkerDied { exitcode: 3 }));
        assert!(matches!(b.result(), Err(TaskError::Broken(_))));
        assert!(matches!(ex.submit(pow, (1, 1)), Err(PoolError::Broken(_))));
    });
}

fn fail_after(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    panic!("failed on purpose")
}

/// EXEC-30: `wait` returns as soon as its condition holds (finished and cancelled futures
/// count as completed), with a timeout only the finished ones, and a duplicate once.
#[test]
fn exec30_wait() {
    use mp_core::pool::{wait, ReturnWhen};
    common::bounded(60, || {
        let ex = ProcessPoolExecutor::new(1).unwrap();
        // A long first task, so that the pool queues nothing behind a running one and
        // `pending` stays cancellable.
        let finished = ex.submit(sleep_then, (4, 300)).unwrap();
        assert!(finished.wait_timeout(Duration::from_secs(20)));
        let slow = ex.submit(sleep_then, (1, 3000)).unwrap();
        assert!(common::eventually(10, || slow.running()));
        let pending = ex.submit(pow, (3, 3)).unwrap();

        // Answered while `slow` still runs: had it waited for `slow`, both would be done.
        let r = wait([&finished, &slow], ReturnWhen::FirstCompleted, None);
        assert_eq!((r.done.len(), r.not_done.len()), (1, 1));
        assert!(std::ptr::eq(r.done[0], &finished) && std::ptr::eq(r.not_done[0], &slow));

        // Cancelled while waited on: that completes the wait (before `slow` does, or `slow`
        // would be among the done).
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(100));
                assert!(pending.cancel());
            });
            let r = wait([&slow, &pending], ReturnWhen::FirstCompleted, None);
            assert!(r.done.len() == 1 && std::ptr::eq(r.done[0], &pending));
        });

        let t = Instant::now();
        let r = wait(
            [&finished, &slow],
            ReturnWhen::AllCompleted,
            Some(Duration::from_millis(50)),
        );
        // The timeout ended the wait, not `slow`'s completion.
        assert!(t.elapsed() >= Duration::from_millis(50));
        assert_eq!((r.done.len(), r.not_done.len()), (1, 1));

        let r = wait(
            [&finished, &finished, &slow],
            ReturnWhen::FirstCompleted,
            None,
        );
        assert_eq!((r.done.len(), r.not_done.len()), (1, 1));

        let r = wait([&finished, &slow, &pending], ReturnWhen::AllCompleted, None);
        assert_eq!((r.done.len(), r.not_done.len()), (3, 0));
        assert_eq!(slow.result().unwrap(), 1);
        // The values were not taken by waiting.
        assert_eq!(finished.result().unwrap(), 4);
    });
}

/// EXEC-30: FIRST_EXCEPTION returns at the first failure with everything done so far, and
/// waits for all when nothing fails.
#[test]
fn exec30_wait_first_exception() {
    use mp_core::pool::{wait, ReturnWhen};
    common::bounded(60, || {
        let ex = ProcessPoolExecutor::new(2).unwrap();
        let quick = ex.submit(pow, (2, 3)).unwrap();
        assert!(quick.wait_timeout(Duration::from_secs(20)));
        let bad = ex.submit(fail_after, 100).unwrap();
        // Far longer than a failure takes to come back, even under a sanitizer (20 s seen
        // under ThreadSanitizer); killed at the end, not waited for.
        let long = ex.submit(sleep_then, (1, 60_000)).unwrap();
        let r = wait([&quick, &bad, &long], ReturnWhen::FirstException, None);
        // What happened, not how long it took: wait returned while the long task still ran.
        assert!(
            !long.done(),
            "wait returned only once the long task had ended"
        );
        assert_eq!(r.done.len(), 2);
        assert!(r.not_done.len() == 1 && std::ptr::eq(r.not_done[0], &long));
        assert!(matches!(bad.result(), Err(TaskError::Panicked(_))));

        let a = ex.submit(sleep_then, (5, 100)).unwrap();
        let b = ex.submit(sleep_then, (6, 300)).unwrap();
        let r = wait([&a, &b], ReturnWhen::FirstException, None);
        assert_eq!((r.done.len(), r.not_done.len()), (2, 0));
        assert_eq!(b.result().unwrap(), 6);
        ex.kill_workers(); // the long task
        assert_eq!(long.result(), Err(TaskError::Terminated));
        ex.shutdown(false, true);
    });
}

/// EXEC-30: as_completed yields each distinct future once, finished ones first, then in
/// completion order; on timeout it reports how many of how many are unfinished.
#[test]
fn exec30_as_completed() {
    use mp_core::pool::{as_completed, WaitTimeout};
    common::bounded(60, || {
        let ex = ProcessPoolExecutor::new(2).unwrap();
        let done1 = ex.submit(pow, (2, 1)).unwrap();
        let done2 = ex.submit(pow, (2, 2)).unwrap();
        assert!(done1.wait_timeout(Duration::from_secs(20)));
        assert!(done2.wait_timeout(Duration::from_secs(20)));
        let late = ex.submit(sleep_then, (7, 900)).unwrap();
        let early = ex.submit(sleep_then, (8, 200)).unwrap();

        let got: Vec<_> =
            as_completed([&late, &done1, &early, &done2], Some(Duration::ZERO)).collect();
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(std::ptr::eq(*got[0].as_ref().unwrap(), &done1));
        assert!(std::ptr::eq(*got[1].as_ref().unwrap(), &done2));
        let err = got[2].as_ref().unwrap_err();
        assert_eq!(
            *err,
            WaitTimeout {
                unfinished: 2,
                total: 4
            }
        );
        assert_eq!(err.to_string(), "2 (of 4) futures unfinished");

        let order: Vec<u64> = as_completed([&late, &early, &late, &done1], None)
            .map(|f| {
                let f = f.unwrap();
                if std::ptr::eq(f, &done1) {
                    0
                } else if std::ptr::eq(f, &early) {
                    8
                } else {
                    7
                }
            })
            .collect();
        assert_eq!(order, [0, 8, 7]);
        assert_eq!(late.result().unwrap(), 7);
    });
}

fn fails(_: ()) -> u64 {
    panic!("task failed on purpose")
}

/// Python's futures: `result()` as often as asked, `exception()`, a done callback that
/// receives the future, `into_result` for values that are not `Clone`.
#[test]
fn future_result_twice_exception_and_callback_with_the_future() {
    common::bounded(60, || {
        let ex = ProcessPoolExecutor::new(2).unwrap();
        let ok = ex.submit(pow, (3, 2)).unwrap();
        assert_eq!(ok.result().unwrap(), 9);
        assert_eq!(ok.result().unwrap(), 9);
        assert_eq!(ok.result_timeout(Duration::ZERO).unwrap(), 9);
        assert!(ok.exception().is_none());
        assert_eq!(ok.exception_timeout(Duration::ZERO), Ok(None));

        let bad = ex.submit(fails, ()).unwrap();
        let e = bad.exception().expect("the task failed");
        assert!(e.panic().unwrap().message.contains("on purpose"));
        assert_eq!(bad.result().unwrap_err(), e);
        assert_eq!(bad.result().unwrap_err(), e);

        let (tx, rx) = std::sync::mpsc::channel();
        let f = ex.submit(sleep_then, (7, 50)).unwrap();
        f.add_done_callback(move |done: &TaskFuture<u64>| {
            tx.send((done.done(), done.result(), done.exception()))
                .unwrap();
        });
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(30)).unwrap(),
            (true, Ok(7), None)
        );
        assert_eq!(f.into_result().unwrap(), 7);

        let slow = ex.submit(sleep_then, (1, 60_000)).unwrap();
        assert_eq!(
            slow.exception_timeout(Duration::ZERO),
            Err(TaskError::Timeout)
        );
        ex.kill_workers();
    });
}

/// Python 3.14's `map(..., buffersize=n)`: the input is read lazily, at most `n` tasks
/// ahead of the results consumed; without it, everything is submitted at once.
#[test]
fn executor_map_buffersize_reads_the_input_lazily() {
    common::bounded(60, || {
        let ex = ProcessPoolExecutor::new(2).unwrap();
        let read = Arc::new(AtomicUsize::new(0));
        let r = read.clone();
        let input = (0u64..).inspect(move |_| {
            r.fetch_add(1, Ordering::SeqCst);
        });
        let opts = MapOptions::new().buffersize(NonZeroUsize::new(3).unwrap());
        let mut it = ex.map_with(|x: u64| x + 1, input, opts).unwrap();
        assert!(read.load(Ordering::SeqCst) <= 3);
        for want in 1..=10 {
            assert_eq!(it.next().unwrap().unwrap(), want);
            // Consumed `want`; at most 3 more submitted ahead.
            assert!(read.load(Ordering::SeqCst) <= want as usize + 3);
        }
        drop(it);

        let read = Arc::new(AtomicUsize::new(0));
        let r = read.clone();
        let input = (0u64..20).inspect(move |_| {
            r.fetch_add(1, Ordering::SeqCst);
        });
        let it = ex.map(|x: u64| x * 2, input).unwrap();
        assert_eq!(
            read.load(Ordering::SeqCst),
            20,
            "eager: all submitted by map"
        );
        let v: Vec<u64> = it.map(Result::unwrap).collect();
        assert_eq!(v, (0..20).map(|x| x * 2).collect::<Vec<_>>());

        let chunked = MapOptions::new()
            .chunksize(NonZeroUsize::new(4).unwrap())
            .buffersize(NonZeroUsize::new(1).unwrap());
        let v: Vec<u64> = ex
            .map_with(|x: u64| x, 0..9u64, chunked)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(v, (0..9).collect::<Vec<_>>());
    });
}
