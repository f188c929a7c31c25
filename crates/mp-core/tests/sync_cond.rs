//! Condition and Event behaviours (COND-01..06, EVENT-01..02 of the CPython checklist) across
//! real processes. Counters shared between processes are Semaphores (`release` adds one,
//! `get_value` reads).

mod common;

use std::time::{Duration, Instant};

use common::{about, bounded, eventually, for_each_context, prompt, LONG};
use mp_core::{pipe_oneway, Condition, Context, Event, Process, Semaphore, Writer};

/// Python's `_TestCondition.f`: take the lock, say "sleeping", wait, say "woken".
fn cond_waiter(arg: (Condition, Semaphore, Semaphore, Option<u64>)) {
    let (cond, sleeping, woken, timeout) = arg;
    let guard = cond.acquire().unwrap();
    sleeping.release().unwrap();
    let guard = match timeout {
        Some(ms) => cond.wait_timeout(guard, Duration::from_millis(ms)).0,
        None => cond.wait(guard),
    };
    woken.release().unwrap();
    drop(guard);
}

struct Waiters {
    procs: Vec<Process>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// Starts `procs` waiting processes and `threads` waiting threads, and waits until all of
/// them sleep on the condition.
fn start_waiters(
    ctx: &Context,
    cond: &Condition,
    sleeping: &Semaphore,
    woken: &Semaphore,
    procs: usize,
    threads: usize,
    timeout: Option<u64>,
) -> Waiters {
    let mut w = Waiters {
        procs: Vec::new(),
        threads: Vec::new(),
    };
    for _ in 0..procs {
        let mut p = ctx.process(
            cond_waiter,
            (cond.clone(), sleeping.clone(), woken.clone(), timeout),
        );
        p.start().unwrap();
        w.procs.push(p);
    }
    for _ in 0..threads {
        let arg = (cond.clone(), sleeping.clone(), woken.clone(), timeout);
        w.threads.push(std::thread::spawn(move || cond_waiter(arg)));
    }
    for _ in 0..procs + threads {
        sleeping
            .acquire_timeout(Duration::from_secs(20))
            .expect("a waiter did not start")
            .forget();
    }
    // Every waiter said "sleeping" under the lock, before waiting; once we get the lock, all
    // of them are registered as waiting.
    drop(cond.acquire().unwrap());
    w
}

impl Waiters {
    fn join(self) {
        for p in self.procs {
            p.join().unwrap();
            assert_eq!(p.exitcode(), Some(0));
        }
        for t in self.threads {
            t.join().unwrap();
        }
    }
}

fn stays(woken: &Semaphore, n: u32) {
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(woken.get_value(), n, "woken count changed without a notify");
}

fn reaches(woken: &Semaphore, n: u32) {
    assert!(
        eventually(10, || woken.get_value() >= n),
        "only {} woken, expected {n}",
        woken.get_value()
    );
    stays(woken, n);
}

#[test]
fn cond_01_notify_wakes_one_at_a_time() {
    for_each_context(60, |ctx| {
        let cond = Condition::new().unwrap();
        let (sleeping, woken) = (Semaphore::new(0).unwrap(), Semaphore::new(0).unwrap());
        let w = start_waiters(&ctx, &cond, &sleeping, &woken, 1, 1, None);
        stays(&woken, 0);
        {
            let _g = cond.acquire().unwrap();
            assert_eq!(cond.notify(1), 1);
        }
        reaches(&woken, 1);
        {
            let _g = cond.acquire().unwrap();
            assert_eq!(cond.notify(1), 1);
        }
        reaches(&woken, 2);
        w.join();
        assert_eq!(cond.waiting(), 0);
    });
}

#[test]
fn cond_02_notify_all_and_timeouts() {
    for_each_context(60, |ctx| {
        let cond = Condition::new().unwrap();
        let (sleeping, woken) = (Semaphore::new(0).unwrap(), Semaphore::new(0).unwrap());
        // Six waiters with a timeout come back by themselves.
        let w = start_waiters(&ctx, &cond, &sleeping, &woken, 3, 3, Some(100));
        reaches(&woken, 6);
        w.join();
        assert_eq!(cond.waiting(), 0, "no sleepers left behind");
        // Six without a timeout wait for notify_all.
        let woken = Semaphore::new(0).unwrap();
        let w = start_waiters(&ctx, &cond, &sleeping, &woken, 3, 3, None);
        stays(&woken, 0);
        {
            let _g = cond.acquire().unwrap();
            assert_eq!(cond.notify_all(), 6);
        }
        reaches(&woken, 6);
        w.join();
        assert_eq!(cond.waiting(), 0);
    });
}

#[test]
fn cond_03_notify_n_wakes_exactly_n() {
    for_each_context(60, |ctx| {
        let cond = Condition::new().unwrap();
        let (sleeping, woken) = (Semaphore::new(0).unwrap(), Semaphore::new(0).unwrap());
        let w = start_waiters(&ctx, &cond, &sleeping, &woken, 3, 3, None);
        stays(&woken, 0);
        {
            let _g = cond.acquire().unwrap();
            cond.notify(2);
        }
        reaches(&woken, 2);
        {
            let _g = cond.acquire().unwrap();
            cond.notify(4);
        }
        reaches(&woken, 6);
        {
            let _g = cond.acquire().unwrap();
            assert_eq!(cond.notify(3), 0, "nobody waits");
        }
        stays(&woken, 6);
        w.join();
    });
}

fn notify_once(cond: Condition) {
    let _g = cond.acquire().unwrap();
    cond.notify(1);
}

#[test]
fn cond_04_timeouts_and_wait_result() {
    for_each_context(30, |ctx| {
        let cond = Condition::new().unwrap();
        let guard = cond.acquire().unwrap();
        let guard = prompt("wait_timeout(0)", || {
            let (g, timed_out) = cond.wait_timeout(guard, Duration::ZERO);
            assert!(timed_out);
            g
        });
        let guard = about("wait_timeout(100ms)", Duration::from_millis(100), || {
            let (g, timed_out) = cond.wait_timeout(guard, Duration::from_millis(100));
            assert!(timed_out);
            g
        });
        // A child acquires the condition (once we wait) and notifies.
        let mut p = ctx.process(notify_once, cond.clone());
        p.start().unwrap();
        let (guard, timed_out) = cond.wait_timeout(guard, Duration::from_secs(60));
        assert!(!timed_out, "notified, not timed out");
        drop(guard);
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
    });
}

/// Python's `_test_waitfor_f`; the state is `counter - 1` (so it starts at -1).
fn waitfor_child(arg: (Condition, Semaphore)) {
    let (cond, counter) = arg;
    let guard = cond.acquire().unwrap();
    counter.release().unwrap(); // state = 0
    cond.notify(1);
    let guard = cond.wait_for(guard, || counter.get_value() == 5);
    assert_eq!(counter.get_value(), 5);
    drop(guard);
}

#[test]
fn cond_05_wait_for() {
    for_each_context(30, |ctx| {
        let cond = Condition::new().unwrap();
        let counter = Semaphore::new(0).unwrap();
        let mut p = ctx.process(waitfor_child, (cond.clone(), counter.clone()));
        p.start().unwrap();
        {
            let guard = cond.acquire().unwrap();
            let (guard, ok) =
                cond.wait_for_timeout(guard, Duration::from_secs(20), || counter.get_value() == 1);
            assert!(ok);
            assert_eq!(counter.get_value(), 1);
            drop(guard);
        }
        for _ in 0..4 {
            std::thread::sleep(Duration::from_millis(10));
            let _g = cond.acquire().unwrap();
            counter.release().unwrap();
            cond.notify(1);
        }
        p.join_timeout(Duration::from_secs(20)).unwrap();
        assert_eq!(p.exitcode(), Some(0));
    });
}

fn waitfor_timeout_child(arg: (Condition, Semaphore, Semaphore, Writer<(bool, u64)>)) {
    let (cond, counter, started, tx) = arg;
    started.release().unwrap();
    let guard = cond.acquire().unwrap();
    let t = Instant::now();
    let (guard, ok) = cond.wait_for_timeout(guard, Duration::from_millis(100), || {
        counter.get_value() == 4
    });
    let took = t.elapsed().as_millis() as u64;
    drop(guard);
    tx.send(&(ok, took)).unwrap();
}

#[test]
fn cond_06_wait_for_timeout() {
    for_each_context(30, |ctx| {
        let cond = Condition::new().unwrap();
        let counter = Semaphore::new(0).unwrap();
        let started = Semaphore::new(0).unwrap();
        let (rx, tx) = pipe_oneway::<(bool, u64)>().unwrap();
        let mut p = ctx.process(
            waitfor_timeout_child,
            (cond.clone(), counter.clone(), started.clone(), tx),
        );
        p.start().unwrap();
        started
            .acquire_timeout(Duration::from_secs(20))
            .unwrap()
            .forget();
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(10));
            let _g = cond.acquire().unwrap();
            counter.release().unwrap();
            cond.notify(1);
        }
        let (ok, took) = rx.recv_timeout(Duration::from_secs(20)).unwrap();
        assert!(!ok, "the predicate never held");
        assert!(took >= 95, "returned after {took} ms, before the timeout");
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
    });
}

fn set_later(ev: Event) {
    std::thread::sleep(Duration::from_millis(100));
    ev.set();
}

#[test]
fn event_01_set_clear_wait() {
    for_each_context(30, |ctx| {
        let ev = Event::new().unwrap();
        assert!(!ev.is_set());
        prompt("wait(0) on a clear event", || {
            assert!(!ev.wait_timeout(Duration::ZERO))
        });
        about(
            "wait(100ms) on a clear event",
            Duration::from_millis(100),
            || assert!(!ev.wait_timeout(Duration::from_millis(100))),
        );
        assert!(format!("{ev:?}").contains("set: false"));
        ev.set();
        assert!(ev.is_set());
        prompt("wait() on a set event", || ev.wait());
        prompt("wait(LONG) on a set event", || {
            assert!(ev.wait_timeout(LONG))
        });
        assert!(format!("{ev:?}").contains("set: true"));
        ev.clear();
        assert!(!ev.is_set());
        let mut p = ctx.process(set_later, ev.clone());
        p.start().unwrap();
        bounded(20, {
            let ev = ev.clone();
            move || ev.wait()
        });
        assert!(ev.is_set());
        p.join().unwrap();
    });
}

fn check_and_clear(arg: (Event, Writer<(bool, bool)>)) {
    let (ev, tx) = arg;
    let was_set = ev.is_set();
    // Set before the child started: the wait answers true without using its long timeout
    // (a wrong wait would time out and answer false, or outlive the test's bound).
    let saw_it = ev.wait_timeout(LONG);
    ev.clear();
    tx.send(&(was_set, saw_it)).unwrap();
}

#[test]
fn event_02_seen_and_cleared_by_a_child() {
    for_each_context(30, |ctx| {
        let ev = Event::new().unwrap();
        ev.set();
        let (rx, tx) = pipe_oneway::<(bool, bool)>().unwrap();
        let mut p = ctx.process(check_and_clear, (ev.clone(), tx));
        p.start().unwrap();
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(20)).unwrap(),
            (true, true)
        );
        p.join().unwrap();
        assert!(!ev.is_set());
        prompt("wait(1ms)", || {
            assert!(!ev.wait_timeout(Duration::from_millis(1)))
        });
    });
}

/// Many wake-ups across processes without a lost one: a ping-pong of two events.
fn pong(arg: (Event, Event, u32)) {
    let (ping, pong, rounds) = arg;
    for _ in 0..rounds {
        ping.wait();
        ping.clear();
        pong.set();
    }
}

#[test]
fn event_ping_pong_loses_no_wakeup() {
    for_each_context(60, |ctx| {
        let (ping, pong_ev) = (Event::new().unwrap(), Event::new().unwrap());
        let mut p = ctx.process(pong, (ping.clone(), pong_ev.clone(), 2000));
        p.start().unwrap();
        for _ in 0..2000 {
            ping.set();
            assert!(pong_ev.wait_timeout(Duration::from_secs(10)));
            pong_ev.clear();
        }
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
    });
}

/// Waits holding the condition's recursive lock twice; reports the depth it holds after the
/// wait (through `depth`).
fn nested_waiter(arg: (Condition, Semaphore, mp_core::Value<u32>)) {
    let (cond, sleeping, depth) = arg;
    let outer = cond.acquire().unwrap();
    let inner = cond.acquire().unwrap();
    sleeping.release().unwrap();
    let inner = cond.wait(inner);
    depth.set(cond.lock().as_rlock().unwrap().count());
    drop((inner, outer));
}

/// Python's `Condition()` sits on an `RLock`, and `wait` releases every level the waiter
/// holds (the notifier can take the lock) and takes them all back.
#[test]
fn condition_default_lock_is_recursive_and_wait_releases_every_level() {
    for_each_context(30, |ctx: Context| {
        let cond = Condition::new().unwrap();
        assert!(cond.lock().is_recursive());
        let sleeping = Semaphore::new(0).unwrap();
        let depth_v = mp_core::Value::new(0u32).unwrap();
        let mut p = ctx.process(
            nested_waiter,
            (cond.clone(), sleeping.clone(), depth_v.clone()),
        );
        p.start().unwrap();
        sleeping
            .acquire_timeout(Duration::from_secs(20))
            .expect("the waiter did not start")
            .forget();
        // The waiter holds two levels; waiting released both, so we can take the lock.
        let g = cond
            .acquire_timeout(Duration::from_secs(20))
            .expect("wait released every level");
        drop(g);
        assert!(eventually(20, || cond.notify(1) == 1));
        p.join_timeout(Duration::from_secs(20)).unwrap();
        assert_eq!(depth_v.get(), 2);
    });
}

/// `Condition::with_lock` takes a plain `Lock` too (Python's `Condition(Lock())`).
#[test]
fn condition_with_a_plain_lock() {
    let lock = mp_core::Lock::new().unwrap();
    let cond = Condition::with_lock(lock.clone()).unwrap();
    let g = cond.acquire().unwrap();
    assert!(lock.is_locked());
    let (g, timed_out) = cond.wait_timeout(g, Duration::from_millis(10));
    assert!(timed_out && lock.is_locked());
    drop(g);
    assert!(!lock.is_locked());
}
