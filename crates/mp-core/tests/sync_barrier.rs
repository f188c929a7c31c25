//! Barrier behaviours (BAR-01..09 of the CPython checklist) across real processes: five
//! parties are four child processes plus the test itself, unless said otherwise. Counters
//! shared between processes are Semaphores (`release` adds one, `get_value` reads).

mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::{for_each_context, prompt};
use mp_core::{pipe_oneway, Barrier, Context, Lock, Process, Reader, Semaphore, Writer};

const N: u32 = 5;

fn start(ctx: &Context, procs: Vec<Process>) -> Vec<Process> {
    let _ = ctx;
    procs
        .into_iter()
        .map(|mut p| {
            p.start().unwrap();
            p
        })
        .collect()
}

fn join_all(procs: Vec<Process>) {
    for p in procs {
        p.join_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(p.exitcode(), Some(0), "a party failed: {:?}", p.panic());
    }
}

/// Python's `multipass`: nobody starts phase k+1 before everybody finished phase k.
fn multipass(arg: (Barrier, Semaphore, Semaphore, u32)) {
    let (barrier, c0, c1, rounds) = arg;
    let m = barrier.parties();
    assert_eq!(m, N);
    for i in 0..rounds {
        c0.release().unwrap();
        assert_eq!(c1.get_value(), i * m);
        barrier.wait().unwrap();
        c1.release().unwrap();
        assert_eq!(c0.get_value(), (i + 1) * m);
        barrier.wait().unwrap();
    }
}

#[test]
fn bar_01_lockstep_for_1_and_10_rounds() {
    for_each_context(60, |ctx| {
        for rounds in [1, 10] {
            let barrier = Barrier::new(N).unwrap();
            let (c0, c1) = (Semaphore::new(0).unwrap(), Semaphore::new(0).unwrap());
            let arg = (barrier.clone(), c0.clone(), c1.clone(), rounds);
            let procs = start(
                &ctx,
                (1..N)
                    .map(|_| ctx.process(multipass, arg.clone()))
                    .collect(),
            );
            multipass(arg);
            join_all(procs);
            assert_eq!(barrier.n_waiting(), 0);
            assert!(!barrier.broken());
            assert_eq!(barrier.parties(), N);
        }
    });
}

fn report_index(arg: (Barrier, Writer<u32>)) {
    let (barrier, tx) = arg;
    tx.send(&barrier.wait().unwrap()).unwrap();
}

#[test]
fn bar_02_wait_returns_distinct_indices() {
    for_each_context(60, |ctx| {
        let barrier = Barrier::new(N).unwrap();
        let (rx, tx) = pipe_oneway::<u32>().unwrap();
        let procs = start(
            &ctx,
            (1..N)
                .map(|_| ctx.process(report_index, (barrier.clone(), tx.try_clone().unwrap())))
                .collect(),
        );
        let mut indices = vec![barrier.wait().unwrap()];
        for _ in 1..N {
            indices.push(rx.recv_timeout(Duration::from_secs(20)).unwrap());
        }
        join_all(procs);
        indices.sort_unstable();
        assert_eq!(indices, (0..N).collect::<Vec<_>>());
    });
}

/// The action's shared state: set from the argument in every process before waiting.
static TRIPS: Mutex<Option<Semaphore>> = Mutex::new(None);

fn count_trip() {
    let trips = TRIPS.lock().unwrap();
    trips
        .as_ref()
        .expect("set before waiting")
        .release()
        .unwrap();
}

fn action_party(arg: (Barrier, Semaphore, u32)) {
    let (barrier, trips, rounds) = arg;
    *TRIPS.lock().unwrap() = Some(trips.clone());
    for round in 0..rounds {
        barrier.wait_timeout(Duration::from_secs(20)).unwrap();
        // The action of this trip ran before anybody was released.
        assert_eq!(trips.get_value(), 2 * round + 1);
        barrier.wait_timeout(Duration::from_secs(20)).unwrap();
        assert_eq!(trips.get_value(), 2 * round + 2);
    }
}

#[test]
fn bar_03_the_action_runs_once_per_trip_before_release() {
    for ctx in common::contexts() {
        common::bounded(60, move || bar_03_body(ctx));
    }
}

fn bar_03_body(ctx: Context) {
    {
        let trips = Semaphore::new(0).unwrap();
        let barrier = Barrier::with_action(N, count_trip).unwrap();
        let arg = (barrier.clone(), trips.clone(), 3);
        let procs = start(
            &ctx,
            (1..N)
                .map(|_| ctx.process(action_party, arg.clone()))
                .collect(),
        );
        action_party(arg);
        join_all(procs);
        assert_eq!(trips.get_value(), 6, "two trips per round, three rounds");
    }
}

const PASSED: u32 = 0;
const BROKEN: u32 = 1;
const ABORTED: u32 = 2;

fn abort_party(arg: (Barrier, Writer<u32>)) {
    let (barrier, tx) = arg;
    let outcome = match barrier.wait() {
        Ok(i) if i == N / 2 => {
            barrier.abort();
            ABORTED
        }
        Ok(_) => match barrier.wait() {
            Ok(_) => PASSED,
            Err(_) => BROKEN,
        },
        Err(_) => BROKEN,
    };
    tx.send(&outcome).unwrap();
}

fn outcomes(rx: &Reader<u32>, n: u32) -> Vec<u32> {
    let mut v: Vec<u32> = (0..n)
        .map(|_| rx.recv_timeout(Duration::from_secs(20)).unwrap())
        .collect();
    v.sort_unstable();
    v
}

#[test]
fn bar_04_abort_breaks_the_barrier_for_everybody() {
    for_each_context(60, |ctx| {
        let barrier = Barrier::new(N).unwrap();
        let (rx, tx) = pipe_oneway::<u32>().unwrap();
        let procs = start(
            &ctx,
            (0..N)
                .map(|_| ctx.process(abort_party, (barrier.clone(), tx.try_clone().unwrap())))
                .collect(),
        );
        assert_eq!(
            outcomes(&rx, N),
            vec![BROKEN, BROKEN, BROKEN, BROKEN, ABORTED]
        );
        join_all(procs);
        assert!(barrier.broken());
    });
}

fn reset_party(arg: (Barrier, Writer<u32>)) {
    let (barrier, tx) = arg;
    let i = barrier.wait().unwrap();
    if i == N / 2 {
        while barrier.n_waiting() < N - 1 {
            std::thread::sleep(Duration::from_millis(1));
        }
        barrier.reset();
    } else {
        let r = barrier.wait();
        tx.send(&if r.is_ok() { PASSED } else { BROKEN }).unwrap();
    }
    // The barrier is usable again.
    barrier.wait().unwrap();
    tx.send(&10).unwrap();
}

#[test]
fn bar_05_reset_breaks_the_waiters_then_works_again() {
    for_each_context(60, |ctx| {
        let barrier = Barrier::new(N).unwrap();
        let (rx, tx) = pipe_oneway::<u32>().unwrap();
        let procs = start(
            &ctx,
            (0..N)
                .map(|_| ctx.process(reset_party, (barrier.clone(), tx.try_clone().unwrap())))
                .collect(),
        );
        let all = outcomes(&rx, 2 * N - 1);
        assert_eq!(all.iter().filter(|&&o| o == BROKEN).count(), N as usize - 1);
        assert_eq!(all.iter().filter(|&&o| o == PASSED).count(), 0);
        assert_eq!(all.iter().filter(|&&o| o == 10).count(), N as usize);
        join_all(procs);
        assert!(!barrier.broken());
    });
}

fn abort_and_reset_party(arg: (Barrier, Barrier, Writer<u32>)) {
    let (barrier, barrier2, tx) = arg;
    let outcome = match barrier.wait() {
        Ok(i) if i == N / 2 => {
            barrier.abort();
            ABORTED
        }
        Ok(_) => match barrier.wait() {
            Ok(_) => PASSED,
            Err(_) => BROKEN,
        },
        Err(_) => BROKEN,
    };
    tx.send(&outcome).unwrap();
    if barrier2.wait().unwrap() == N / 2 {
        barrier.reset();
    }
    barrier2.wait().unwrap();
    barrier.wait().unwrap();
    tx.send(&10).unwrap();
}

#[test]
fn bar_05_abort_then_reset() {
    for_each_context(60, |ctx| {
        let (barrier, barrier2) = (Barrier::new(N).unwrap(), Barrier::new(N).unwrap());
        let (rx, tx) = pipe_oneway::<u32>().unwrap();
        let procs = start(
            &ctx,
            (0..N)
                .map(|_| {
                    let arg = (barrier.clone(), barrier2.clone(), tx.try_clone().unwrap());
                    ctx.process(abort_and_reset_party, arg)
                })
                .collect(),
        );
        let all = outcomes(&rx, 2 * N);
        assert_eq!(
            all,
            vec![BROKEN, BROKEN, BROKEN, BROKEN, ABORTED, 10, 10, 10, 10, 10]
        );
        join_all(procs);
        assert!(!barrier.broken());
    });
}

fn late_party(arg: (Barrier, bool, Writer<u32>)) {
    let (barrier, default_timeout, tx) = arg;
    // The first round gathers the parties with a generous explicit timeout (process starts
    // are slow under Wine or load); the second is the one under test.
    let i = barrier.wait_timeout(Duration::from_secs(30)).unwrap();
    if i == N / 2 {
        std::thread::sleep(Duration::from_secs(1));
    }
    let r = if default_timeout {
        barrier.wait()
    } else {
        barrier.wait_timeout(Duration::from_millis(500))
    };
    tx.send(&if r.is_ok() { PASSED } else { BROKEN }).unwrap();
}

fn timeout_case(ctx: &Context, barrier: Barrier, default_timeout: bool) {
    let (rx, tx) = pipe_oneway::<u32>().unwrap();
    let procs = start(
        ctx,
        (0..N)
            .map(|_| {
                let arg = (barrier.clone(), default_timeout, tx.try_clone().unwrap());
                ctx.process(late_party, arg)
            })
            .collect(),
    );
    assert_eq!(outcomes(&rx, N), vec![BROKEN; N as usize]);
    join_all(procs);
    assert!(barrier.broken());
}

#[test]
fn bar_06_a_timeout_breaks_the_barrier_for_everybody() {
    for_each_context(60, |ctx| {
        timeout_case(&ctx, Barrier::new(N).unwrap(), false);
    });
}

#[test]
fn bar_07_the_default_timeout() {
    for_each_context(60, |ctx| {
        let barrier = Barrier::with_timeout(N, Duration::from_millis(500)).unwrap();
        timeout_case(&ctx, barrier, true);
    });
}

fn thousand_party(arg: (Barrier, Lock, Writer<u32>, u32)) {
    let (barrier, lock, tx, passes) = arg;
    for i in 0..passes {
        barrier.wait().unwrap();
        let _g = lock.acquire().unwrap();
        tx.send(&i).unwrap();
    }
}

#[test]
fn bar_08_a_thousand_passes_in_order() {
    for ctx in common::contexts() {
        common::bounded(120, move || bar_08_body(ctx));
    }
}

fn bar_08_body(ctx: Context) {
    {
        let passes = 1000;
        let barrier = Barrier::new(N).unwrap();
        let lock = Lock::new().unwrap();
        let (rx, tx) = pipe_oneway::<u32>().unwrap();
        let procs = start(
            &ctx,
            (0..N)
                .map(|_| {
                    let arg = (
                        barrier.clone(),
                        lock.clone(),
                        tx.try_clone().unwrap(),
                        passes,
                    );
                    ctx.process(thousand_party, arg)
                })
                .collect(),
        );
        for i in 0..passes {
            for _ in 0..N {
                match rx.recv_timeout(Duration::from_secs(20)) {
                    Ok(got) => assert_eq!(got, i),
                    Err(e) => {
                        let states: Vec<_> = procs
                            .iter()
                            .map(|p| (p.is_alive(), p.exitcode(), p.panic()))
                            .collect();
                        panic!("pass {i}: {e:?}; parties: {states:?}; {barrier:?}");
                    }
                }
            }
        }
        join_all(procs);
    }
}

fn check_in_child(arg: (Barrier, Writer<u32>)) {
    let (barrier, tx) = arg;
    tx.send(&barrier.parties()).unwrap();
    barrier.reset();
}

#[test]
fn bar_09_single_party_broken_and_reset() {
    for_each_context(30, |ctx| {
        let one = Barrier::new(1).unwrap();
        for _ in 0..3 {
            prompt("Barrier(1).wait()", || assert_eq!(one.wait(), Ok(0)));
        }
        let b = Barrier::new(N).unwrap();
        b.abort();
        prompt("wait on a broken barrier", || assert!(b.wait().is_err()));
        assert!(b.broken());
        let (rx, tx) = pipe_oneway::<u32>().unwrap();
        let mut p = ctx.process(check_in_child, (b.clone(), tx));
        p.start().unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(20)).unwrap(), N);
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
        assert!(!b.broken(), "reset in the child");
        assert_eq!(b.n_waiting(), 0);
    });
}

#[test]
fn bar_action_panic_breaks_the_barrier() {
    fn boom() {
        panic!("action failed");
    }
    let b = Barrier::with_action(1, boom).unwrap();
    let r = std::panic::catch_unwind(|| b.wait());
    assert!(
        r.is_err(),
        "the panic reaches the party that ran the action"
    );
    assert!(b.broken());
}
