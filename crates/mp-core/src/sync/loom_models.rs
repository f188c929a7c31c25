//! Loom models of the sync protocols, run by `cargo xtask loom` (`--cfg loom`): the same
//! code as in production, over loom's atomics and its model of the futex, pids and deaths
//! (`sync/model.rs`). Each model explores every interleaving (up to a preemption bound) and
//! fails on a data race, a deadlock (a lost wake-up: nobody left to wake a sleeper) or a
//! broken assertion.

use loom::cell::UnsafeCell;
use loom::sync::atomic::AtomicBool;
use loom::sync::Arc;
use loom::thread;

use super::barrier::RawBarrier;
use super::event::RawEvent;
use super::lock::{Acquired, RawLock};
use super::model::{kill, set_pid, tick, Ordering};
use super::semaphore::RawSemaphore;
use super::Barrier;

/// Runs a model with at most `bound` preemptions per execution (LOOM_MAX_PREEMPTIONS
/// overrides it): every interleaving with that many forced switches is explored.
pub(crate) fn model_bounded(bound: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(bound);
    }
    b.check(f);
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    model_bounded(3, f)
}

/// Two processes take the lock in turn: the section it guards is never entered by both
/// (loom checks the accesses to the cell, with their memory ordering), and the releases
/// wake whoever sleeps on the contended word (no deadlock).
#[test]
fn lock_excludes_and_hands_over() {
    model(|| {
        let lock = Arc::new(RawLock::model());
        let data = Arc::new(UnsafeCell::new(0u32));
        let others: Vec<_> = (2..4)
            .map(|pid| {
                let (lock, data) = (lock.clone(), data.clone());
                thread::spawn(move || {
                    set_pid(pid);
                    assert_eq!(lock.lock(None), Acquired::Clean);
                    data.with_mut(|d| unsafe { *d += 1 });
                    lock.unlock().unwrap();
                })
            })
            .collect();
        for t in others {
            t.join().unwrap();
        }
        assert!(!lock.is_locked());
        assert_eq!(data.with(|d| unsafe { *d }), 2);
    });
}

/// The holder dies holding the lock (its thread stops without releasing). The waiter is
/// woken by the periodic check (modelled by a ticker), sees the owner dead, takes the lock
/// over and is told so; it never gets `Clean`, and nobody else holds the lock meanwhile.
#[test]
fn lock_is_taken_over_from_a_dead_owner() {
    model(|| {
        let lock = Arc::new(RawLock::model());
        let held = Arc::new(AtomicBool::new(false));
        let dying = {
            let (lock, held) = (lock.clone(), held.clone());
            thread::spawn(move || {
                set_pid(2);
                assert_eq!(lock.lock(None), Acquired::Clean);
                held.store(true, Ordering::SeqCst);
                // Dies here, holding it.
            })
        };
        let done = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (lock, held, done) = (lock.clone(), held.clone(), done.clone());
            thread::spawn(move || {
                set_pid(3);
                while !held.load(Ordering::SeqCst) {
                    thread::yield_now();
                }
                let how = lock.lock(None);
                done.store(true, Ordering::SeqCst);
                how
            })
        };
        dying.join().unwrap();
        kill(2);
        // The periodic wake-up, until the waiter has what it waited for.
        while !done.load(Ordering::SeqCst) {
            tick(lock.state_word());
            thread::yield_now();
        }
        assert_eq!(waiter.join().unwrap(), Acquired::OwnerDied);
        assert_eq!(lock.owner(), 3);
        lock.unlock().unwrap();
        assert!(!lock.is_locked());
    });
}

/// `set` wakes every waiter: none sleeps on after the flag is up (no lost wake-up).
#[test]
fn event_set_wakes_every_waiter() {
    model(|| {
        let ev = Arc::new(RawEvent::model());
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let ev = ev.clone();
                thread::spawn(move || assert!(ev.wait_until(None)))
            })
            .collect();
        ev.set();
        for w in waiters {
            w.join().unwrap();
        }
        assert!(ev.is_set());
    });
}

/// A set-clear-set sequence while a waiter sleeps: the waiter ends (it saw a set), never
/// sleeps through the last set.
#[test]
fn event_wait_survives_a_clear() {
    model(|| {
        let ev = Arc::new(RawEvent::model());
        let waiter = {
            let ev = ev.clone();
            thread::spawn(move || assert!(ev.wait_until(None)))
        };
        ev.set();
        ev.clear();
        ev.set();
        waiter.join().unwrap();
    });
}

/// Two releases for two sleepers, each release waking one: both sleepers get a unit (no
/// lost wake-up when releases and sleeps interleave), and no unit is taken twice.
#[test]
fn semaphore_release_wakes_a_sleeper_per_unit() {
    // Four threads: a bound of 2 keeps it to a minute.
    model_bounded(2, || {
        let sem = Arc::new(RawSemaphore::model(0));
        let takers: Vec<_> = (0..2)
            .map(|_| {
                let sem = sem.clone();
                thread::spawn(move || assert!(sem.take_until(None)))
            })
            .collect();
        let releaser = {
            let sem = sem.clone();
            thread::spawn(move || sem.release().unwrap())
        };
        sem.release().unwrap();
        releaser.join().unwrap();
        for t in takers {
            t.join().unwrap();
        }
        assert!(!sem.try_take(), "a unit was taken twice or made up");
    });
}

/// Two rounds of a barrier of two: each party passes each round exactly once, with the
/// indices 0 and 1 once per round, and nobody sleeps through the release (the last to arrive
/// wakes the others; the one who leaves last opens the next round).
#[test]
fn barrier_releases_every_party_every_round() {
    model_bounded(2, || {
        let b = Arc::new(RawBarrier::model(2));
        let other = {
            let b = b.clone();
            thread::spawn(move || {
                (0..2)
                    .map(|_| Barrier::wait_raw(&b, None, None).unwrap())
                    .collect::<Vec<_>>()
            })
        };
        let mine: Vec<u32> = (0..2)
            .map(|_| Barrier::wait_raw(&b, None, None).unwrap())
            .collect();
        let theirs = other.join().unwrap();
        for round in 0..2 {
            let mut got = [mine[round], theirs[round]];
            got.sort();
            assert_eq!(got, [0, 1], "round {round}: {mine:?} {theirs:?}");
        }
    });
}
