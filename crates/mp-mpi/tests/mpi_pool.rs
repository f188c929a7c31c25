//! The pool and the executor on MPI ranks. Run by `cargo xtask test-mpi`:
//! - alone (`cargo test -p mp-mpi`, one thread): every pool spawns its ranks
//!   (`MPI_Comm_spawn`);
//! - under `mpirun -n N` (2 to 5 ranks, one test thread): rank 0 runs these tests, the other
//!   ranks serve as workers;
//! - under `mpirun` across three network namespaces (TCP only): as above, and
//!   `workers_ran_on_every_host` checks where each worker ran (`MP_MPI_EXPECT_HOSTS`).
//!
//! The failure tests start `mpirun` themselves (`*_child` tests are run only that way).
//!
//! Pools here use the world's ranks when there are any, so the tests must run one at a
//! time (`--test-threads=1`); run concurrently, a second pool finds no free rank and says so.

use std::collections::BTreeSet;
use std::num::NonZeroUsize;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mp_core::pool::{
    as_completed, wait, MpiWorkers, Pool, PoolError, ProcessPoolExecutor, ReturnWhen, TaskError,
};

/// Ranks to spawn when running alone.
const SPAWNED: usize = 2;

fn in_world() -> bool {
    mp_mpi::launched_by_mpi()
        && std::env::var("OMPI_COMM_WORLD_SIZE").map_or(true, |n| n.as_str() != "1")
}

fn pool() -> Pool {
    let b = Pool::builder().mpi(MpiWorkers::Auto);
    let b = if in_world() { b } else { b.processes(SPAWNED) };
    b.build().expect("an MPI pool")
}

fn square(x: u64) -> u64 {
    x * x
}

fn boom(x: u64) -> u64 {
    if x % 7 == 3 {
        panic!("no {x} today");
    }
    x + 1
}

#[test]
fn map_starmap_apply_in_order() {
    let pool = pool();
    assert!(pool.processes() >= 1);
    assert_eq!(
        pool.map(square, 0..100u64).unwrap(),
        (0..100u64).map(|x| x * x).collect::<Vec<_>>()
    );
    // Chunking: many chunk sizes give the same answer.
    for size in [1, 3, 64, 1000] {
        let v = pool
            .chunksize(NonZeroUsize::new(size).unwrap())
            .map(square, 0..257u64)
            .unwrap();
        assert_eq!(v, (0..257u64).map(|x| x * x).collect::<Vec<_>>());
    }
    assert_eq!(
        pool.starmap(
            |a: u64, b: String| format!("{b}{a}"),
            [(1, "a".to_string()), (2, "b".into())]
        )
        .unwrap(),
        ["a1", "b2"]
    );
    assert_eq!(pool.apply(square, 12).unwrap(), 144);
    let pending: Vec<_> = (0..20u64)
        .map(|x| pool.apply_async(square, x).unwrap())
        .collect();
    let got: Vec<u64> = pending.iter().map(|r| r.get().unwrap()).collect();
    assert_eq!(got, (0..20u64).map(|x| x * x).collect::<Vec<_>>());
    pool.close();
    pool.join().unwrap();
}

#[test]
fn imap_and_imap_unordered() {
    let pool = pool();
    let ordered: Vec<u64> = pool
        .imap(square, 0..50u64)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(ordered, (0..50u64).map(|x| x * x).collect::<Vec<_>>());
    let mut unordered: Vec<u64> = pool
        .chunksize(NonZeroUsize::new(4).unwrap())
        .imap_unordered(square, 0..50u64)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    unordered.sort_unstable();
    assert_eq!(unordered, ordered);
}

#[test]
fn a_panic_is_that_tasks_error_with_its_message() {
    let pool = pool();
    let results = pool
        .chunksize(NonZeroUsize::MIN)
        .map_results(boom, 0..30u64)
        .unwrap();
    for (x, r) in (0..30u64).zip(results) {
        if x % 7 == 3 {
            let err = r.unwrap_err();
            let p = err.panic().expect("a panic");
            assert_eq!(p.message, format!("no {x} today"));
            assert!(p.location.contains("mpi_pool.rs"), "{}", p.location);
        } else {
            assert_eq!(r.unwrap(), x + 1);
        }
    }
    // The ranks are still there.
    assert_eq!(pool.apply(square, 3).unwrap(), 9);
}

static PREFIX: AtomicU64 = AtomicU64::new(0);

fn set_prefix(p: u64) {
    PREFIX.store(p, Ordering::SeqCst);
}

fn with_prefix(x: u64) -> u64 {
    PREFIX.load(Ordering::SeqCst) * 1000 + x
}

#[test]
fn the_initializer_runs_in_every_worker() {
    let b = Pool::builder()
        .mpi(MpiWorkers::Auto)
        .initializer(set_prefix, 7u64);
    let pool = if in_world() { b } else { b.processes(SPAWNED) }
        .build()
        .unwrap();
    let v = pool
        .chunksize(NonZeroUsize::MIN)
        .map(with_prefix, 0..40u64)
        .unwrap();
    assert_eq!(v, (0..40u64).map(|x| 7000 + x).collect::<Vec<_>>());
}

#[test]
fn max_tasks_per_child_is_refused() {
    let err = Pool::builder()
        .mpi(MpiWorkers::Auto)
        .max_tasks_per_child(3)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("max_tasks_per_child"), "{err}");
}

fn keep_lock(_: mp_core::Lock) {}

fn lock_is_free(lock: mp_core::Lock) -> bool {
    lock.try_acquire().is_ok()
}

/// Shared objects (here a lock, whose segment travels as a handle) cannot reach ranks that
/// may be on other hosts: the pool says so with a typed error instead of dropping them, and
/// goes on working.
#[test]
fn arguments_holding_handles_are_refused() {
    let lock = mp_core::Lock::new().unwrap();
    let b = Pool::builder()
        .mpi(MpiWorkers::Auto)
        .initializer(keep_lock, lock.clone());
    let err = if in_world() { b } else { b.processes(SPAWNED) }
        .build()
        .unwrap_err();
    assert!(matches!(err, PoolError::HandlesUnsupported(_)), "{err}");

    let pool = pool();
    let err = pool.apply_async(lock_is_free, lock.clone()).unwrap_err();
    assert!(matches!(err, PoolError::HandlesUnsupported(_)), "{err}");
    let err = pool
        .map(lock_is_free, [lock.clone(), lock.clone()])
        .unwrap_err();
    assert!(
        matches!(&err, TaskError::Encode(m) if m.contains("cannot reach")),
        "{err}"
    );
    let first = pool.imap(lock_is_free, [lock.clone()]).unwrap().next();
    assert!(
        matches!(&first, Some(Err(TaskError::Encode(m))) if m.contains("cannot reach")),
        "{first:?}"
    );
    assert_eq!(pool.apply(square, 9).unwrap(), 81);
    pool.close();
    pool.join().unwrap();

    let ex = if in_world() {
        ProcessPoolExecutor::builder()
    } else {
        ProcessPoolExecutor::builder().max_workers(SPAWNED)
    }
    .mpi(MpiWorkers::Auto)
    .build()
    .unwrap();
    let err = ex.submit(lock_is_free, lock).map(|_| ()).unwrap_err();
    assert!(matches!(err, PoolError::HandlesUnsupported(_)), "{err}");
    assert_eq!(ex.submit(square, 5).unwrap().result().unwrap(), 25);
}

fn slow_square(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(20 * (x % 3)));
    x * x
}

#[test]
fn executor_futures_wait_and_as_completed() {
    let b = ProcessPoolExecutor::builder().mpi(MpiWorkers::Auto);
    let ex = if in_world() {
        b
    } else {
        b.max_workers(SPAWNED)
    }
    .build()
    .unwrap();
    let futures: Vec<_> = (0..12u64)
        .map(|x| ex.submit(slow_square, x).unwrap())
        .collect();
    let done = wait(&futures, ReturnWhen::AllCompleted, None);
    assert_eq!(done.done.len(), 12);
    let mut seen: Vec<u64> = as_completed(&futures, None)
        .map(|f| f.unwrap().result().unwrap())
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..12u64).map(|x| x * x).collect::<Vec<_>>());
    let mapped: Vec<u64> = ex
        .map(square, 0..10u64)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(mapped, (0..10u64).map(|x| x * x).collect::<Vec<_>>());
    let failed = ex.submit(boom, 3).unwrap();
    assert_eq!(
        failed.result().unwrap_err().panic().unwrap().message,
        "no 3 today"
    );
    ex.shutdown(true, false);
}

#[test]
fn a_future_can_be_awaited() {
    let b = ProcessPoolExecutor::builder().mpi(MpiWorkers::Auto);
    let ex = if in_world() { b } else { b.max_workers(1) }
        .build()
        .unwrap();
    let f = ex.submit(square, 9).unwrap();
    assert_eq!(block_on(f), Ok(81));
}

/// A minimal executor for one future: polls, parks the thread until woken.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park_timeout(Duration::from_millis(100));
    }
}

/// The network namespace this process runs in (`ip netns identify`), or "" if none.
fn my_namespace(_: ()) -> (u32, String) {
    std::thread::sleep(Duration::from_millis(30));
    let out = Command::new("ip")
        .args(["netns", "identify", &std::process::id().to_string()])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    (std::process::id(), out)
}

#[test]
fn workers_ran_on_every_host() {
    let pool = pool();
    let n = pool.processes();
    let places = pool
        .chunksize(NonZeroUsize::MIN)
        .map(my_namespace, vec![(); 8 * n])
        .unwrap();
    let pids: BTreeSet<u32> = places.iter().map(|(p, _)| *p).collect();
    assert!(
        !pids.contains(&std::process::id()),
        "a task ran in the client"
    );
    let hosts: BTreeSet<String> = places.into_iter().map(|(_, ns)| ns).collect();
    eprintln!(
        "workers ran on {} processes, in namespaces {hosts:?}",
        pids.len()
    );
    if let Ok(expected) = std::env::var("MP_MPI_EXPECT_HOSTS") {
        let expected: BTreeSet<String> = expected.split(',').map(str::to_owned).collect();
        assert_eq!(hosts, expected, "the namespaces the workers ran in");
    }
}

#[test]
fn a_second_pool_after_the_first_reuses_the_ranks() {
    for round in 0..3u64 {
        let pool = pool();
        assert_eq!(pool.apply(square, round).unwrap(), round * round);
        drop(pool);
    }
}

// ---------------------------------------------------------------------------------------------
// Failure: a rank that dies.

fn die(_: ()) {
    // SAFETY: sends a signal to this very process.
    unsafe { libc_kill_self() }
}

unsafe fn libc_kill_self() {
    extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }
    // SAFETY: kill(2) on our own pid.
    unsafe { kill(std::process::id() as i32, 9) };
}

#[test]
fn a_spawned_rank_that_dies_fails_its_task_and_the_pool_goes_on() {
    let _ = pool(); // starts MPI, leaves two spawned ranks free
    if mp_mpi::was_launched() {
        // Under mpirun, any rank's death ends the whole job, spawned ranks' too: the
        // world-mode tests below (which start their own mpirun) cover that.
        return;
    }
    let pool = Pool::builder()
        .mpi(MpiWorkers::Spawn)
        .processes(2)
        .build()
        .unwrap();
    let err = pool.apply(die, ()).unwrap_err();
    assert!(matches!(err, TaskError::WorkerLost(_)), "{err:?}");
    // Open MPI ends the rank's spawned group (and in this process's run other groups may
    // follow it): each lost rank fails only what it held, with WorkerLost, and the pool
    // spawns new ranks and goes on.
    let mut attempts = 0;
    loop {
        attempts += 1;
        let results = pool.map_results(square, 0..10u64).unwrap();
        for r in &results {
            assert!(matches!(r, Ok(_) | Err(TaskError::WorkerLost(_))), "{r:?}");
        }
        if results.iter().all(Result::is_ok) {
            let v: Vec<u64> = results.into_iter().map(Result::unwrap).collect();
            assert_eq!(v, (0..10u64).map(|x| x * x).collect::<Vec<_>>());
            break;
        }
        assert!(attempts < 5, "the pool did not recover from the lost ranks");
    }
}

/// `mpirun` with the arguments the test command gave (`MP_MPI_MPIRUN_ARGS`, e.g. the
/// permission to run as root), running this test binary's test `name` on `ranks` ranks.
fn mpirun(extra: &[&str], ranks: u32, name: &str) -> (bool, String) {
    let mut cmd = Command::new("mpirun");
    // This process may be an MPI singleton already (earlier tests): what MPI put in its
    // environment would make the new job think it belongs to this one.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if ["OMPI_", "PMIX_", "OPAL_", "ORTE_"]
            .iter()
            .any(|p| k.starts_with(p))
        {
            cmd.env_remove(&*k);
        }
    }
    if let Ok(args) = std::env::var("MP_MPI_MPIRUN_ARGS") {
        cmd.args(args.split_whitespace());
    }
    cmd.args(extra)
        .args(["--oversubscribe", "-n", &ranks.to_string()])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            name,
            "--ignored",
            "--test-threads=1",
            "--nocapture",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("mpirun");
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            return (status.success(), text);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "mpirun did not end within 180 s: the job hangs; its output:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether this run starts `mpirun` jobs of its own: `cargo xtask test-mpi` asks for it
/// (`MP_MPI_FAILURE_TESTS=1`) in the run without a launcher (a job cannot start another).
fn failure_tests_wanted() -> bool {
    let wanted = std::env::var_os("MP_MPI_FAILURE_TESTS").is_some_and(|v| v == "1");
    if !wanted {
        eprintln!("skipped: set MP_MPI_FAILURE_TESTS=1 (cargo xtask test-mpi does) to run it");
    }
    wanted
}

#[test]
#[ignore = "run by world_rank_death_ends_the_job under mpirun"]
fn world_rank_death_child() {
    let pool = Pool::builder().mpi(MpiWorkers::World).build().unwrap();
    // The client may notice the death first (the rank is on this host) and get its error;
    // then Open MPI ends the job, whatever the client does next.
    let r = pool.apply(die, ());
    println!("the client got {r:?}");
    std::thread::sleep(Duration::from_secs(60));
    println!("THE JOB WENT ON");
}

#[test]
fn world_rank_death_ends_the_job() {
    if !failure_tests_wanted() {
        return;
    }
    let (ok, out) = mpirun(&[], 3, "world_rank_death_child");
    assert!(!ok, "the job should have failed:\n{out}");
    assert!(
        out.contains("exited on signal 9"),
        "mpirun's message:\n{out}"
    );
    assert!(!out.contains("THE JOB WENT ON"), "{out}");
}

#[test]
#[ignore = "run by world_rank_death_with_recovery under mpirun --enable-recovery"]
fn world_rank_death_recovery_child() {
    let pool = Pool::builder().mpi(MpiWorkers::World).build().unwrap();
    assert_eq!(pool.processes(), 2);
    let err = pool.apply(die, ()).unwrap_err();
    assert!(matches!(err, TaskError::WorkerLost(_)), "{err:?}");
    assert!(err.to_string().contains("died"), "{err}");
    // The other rank takes all the work.
    assert_eq!(
        pool.map(square, 0..10u64).unwrap(),
        (0..10u64).map(|x| x * x).collect::<Vec<_>>()
    );
    println!("RECOVERED: {err}");
}

#[test]
fn world_rank_death_with_recovery() {
    if !failure_tests_wanted() {
        return;
    }
    let (_, out) = mpirun(&["--enable-recovery"], 3, "world_rank_death_recovery_child");
    assert!(
        out.contains("RECOVERED: the worker running the task was lost"),
        "{out}"
    );
    assert!(out.contains("test result: ok. 1 passed"), "{out}");
}
