//! RLock, Semaphore and BoundedSemaphore behaviours (LOCK-02..09 of the CPython checklist)
//! across real processes.

mod common;

use std::time::Duration;

use common::{about, bounded, for_each_context, prompt};
use mp_core::{
    pipe_oneway, BoundedSemaphore, Lock, RLock, RLockError, Semaphore, SyncError, Writer,
};

#[test]
fn lock_02_rlock_recursion_and_release_errors() {
    let rlock = RLock::new().unwrap();
    for _ in 0..3 {
        rlock.acquire().unwrap().leak();
        assert!(rlock.is_locked());
    }
    assert_eq!(rlock.count(), 3);
    // Another thread is not the owner.
    let other = rlock.clone();
    let err = std::thread::spawn(move || other.release().unwrap_err())
        .join()
        .unwrap();
    assert!(matches!(err, SyncError::NotOwner));
    rlock.release().unwrap();
    assert!(rlock.is_locked());
    rlock.release().unwrap();
    assert!(rlock.is_locked());
    rlock.release().unwrap();
    assert!(!rlock.is_locked());
    assert!(matches!(
        rlock.release(),
        Err(SyncError::ReleasedTooManyTimes)
    ));
}

#[test]
fn lock_03_rlock_guards_and_blocking() {
    let rlock = RLock::new().unwrap();
    {
        let _a = rlock.acquire().unwrap();
        let _b = rlock.try_acquire().unwrap();
        assert_eq!(rlock.count(), 2);
    }
    assert!(!rlock.is_locked());
    bounded(10, move || {
        let _g = rlock.acquire().unwrap();
        let other = rlock.clone();
        std::thread::spawn(move || {
            prompt("try_acquire of an RLock held by another thread", || {
                assert!(matches!(other.try_acquire(), Err(RLockError::WouldBlock)))
            });
            about("acquire_timeout(100ms)", Duration::from_millis(100), || {
                assert!(matches!(
                    other.acquire_timeout(Duration::from_millis(100)),
                    Err(RLockError::Timeout)
                ))
            });
        })
        .join()
        .unwrap();
    });
}

/// Holds the lock twice, reports, and lets go once told to (a message or end of file on
/// `go`): it held it for 300 ms, which a loaded machine outlasted before the parent looked.
fn rlock_hold_and_report(arg: (RLock, Writer<(bool, u32)>, mp_core::Reader<()>)) {
    let (rlock, tx, go) = arg;
    let a = rlock.acquire().unwrap();
    let b = rlock.acquire().unwrap();
    tx.send(&(rlock.is_locked(), rlock.count())).unwrap();
    let _ = go.recv();
    drop(b);
    drop(a);
}

#[test]
fn lock_04_an_rlock_held_by_a_child_is_locked_everywhere() {
    for_each_context(30, |ctx| {
        let rlock = RLock::new().unwrap();
        let (rx, tx) = pipe_oneway::<(bool, u32)>().unwrap();
        let (go_rx, go_tx) = pipe_oneway::<()>().unwrap();
        let mut p = ctx.process(rlock_hold_and_report, (rlock.clone(), tx, go_rx));
        p.start().unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), (true, 2));
        assert!(rlock.is_locked());
        assert_eq!(rlock.count(), 0, "not ours");
        assert!(matches!(rlock.release(), Err(SyncError::NotOwner)));
        go_tx.send(&()).unwrap();
        let _g = rlock.acquire_timeout(Duration::from_secs(10)).unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
    });
}

#[test]
fn lock_05_debug_names_the_holder() {
    let rlock = RLock::new().unwrap();
    assert!(format!("{rlock:?}").contains("nobody"));
    let g = rlock.acquire().unwrap();
    let _g2 = rlock.acquire().unwrap();
    let text = format!("{rlock:?}");
    assert!(
        text.contains("this thread") && text.contains("count: 2"),
        "{text}"
    );
    let other = rlock.clone();
    let seen = std::thread::spawn(move || format!("{other:?}"))
        .join()
        .unwrap();
    assert!(
        seen.contains("another thread") && seen.contains("nonzero"),
        "{seen}"
    );
    drop(g);
    let lock = Lock::new().unwrap();
    let _l = lock.acquire().unwrap();
    assert!(format!("{lock:?}").contains("this process"));
}

fn rlock_die_holding(arg: (RLock, Writer<()>)) {
    let (rlock, tx) = arg;
    rlock.acquire().unwrap().leak();
    rlock.acquire().unwrap().leak();
    tx.send(&()).unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn lock_06_rlock_next_owner_is_told_when_the_holder_died() {
    for_each_context(30, |ctx| {
        let rlock = RLock::new().unwrap();
        let (rx, tx) = pipe_oneway::<()>().unwrap();
        let mut p = ctx.process(rlock_die_holding, (rlock.clone(), tx));
        p.start().unwrap();
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        p.kill().unwrap();
        let _ = p.join();
        match rlock.acquire_timeout(Duration::from_secs(5)) {
            Err(RLockError::OwnerDied(guard)) => {
                assert_eq!(rlock.count(), 1, "the dead owner's depth is not inherited");
                drop(guard)
            }
            other => panic!("expected OwnerDied, got {other:?}"),
        }
        assert!(!rlock.is_locked());
        drop(rlock.acquire().unwrap());
    });
}

#[test]
fn lock_07_semaphore_sequence_is_unbounded() {
    let sem = Semaphore::new(2).unwrap();
    assert_eq!(sem.get_value(), 2);
    sem.acquire().forget();
    assert_eq!(sem.get_value(), 1);
    sem.acquire().forget();
    assert_eq!(sem.get_value(), 0);
    assert!(sem.try_acquire().is_none());
    assert_eq!(sem.get_value(), 0);
    for expected in 1..=4 {
        sem.release().unwrap();
        assert_eq!(sem.get_value(), expected);
    }
}

fn take_one(arg: (Semaphore, BoundedSemaphore, Writer<(u32, u32)>)) {
    let (sem, bsem, tx) = arg;
    sem.acquire().forget();
    bsem.acquire().forget();
    tx.send(&(sem.get_value(), bsem.get_value())).unwrap();
}

#[test]
fn lock_07_08_acquired_in_a_child_released_in_the_parent() {
    for_each_context(30, |ctx| {
        let sem = Semaphore::new(1).unwrap();
        let bsem = BoundedSemaphore::new(1).unwrap();
        let (rx, tx) = pipe_oneway::<(u32, u32)>().unwrap();
        let mut p = ctx.process(take_one, (sem.clone(), bsem.clone(), tx));
        p.start().unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), (0, 0));
        p.join().unwrap();
        assert_eq!((sem.get_value(), bsem.get_value()), (0, 0));
        sem.release().unwrap();
        bsem.release().unwrap();
        assert_eq!((sem.get_value(), bsem.get_value()), (1, 1));
        assert!(matches!(
            bsem.release(),
            Err(SyncError::ReleasedTooManyTimes)
        ));
    });
}

#[test]
fn lock_08_bounded_semaphore_refuses_over_release() {
    let sem = BoundedSemaphore::new(2).unwrap();
    assert_eq!(sem.get_value(), 2);
    sem.acquire().forget();
    sem.acquire().forget();
    assert_eq!(sem.get_value(), 0);
    assert!(sem.try_acquire().is_none());
    sem.release().unwrap();
    sem.release().unwrap();
    assert_eq!(sem.get_value(), 2);
    assert!(matches!(
        sem.release(),
        Err(SyncError::ReleasedTooManyTimes)
    ));
    assert_eq!(sem.get_value(), 2);
    // Guards that give back within the bound are fine.
    drop(sem.acquire());
    assert_eq!(sem.get_value(), 2);
}

#[test]
fn lock_09_semaphore_timeouts() {
    bounded(10, || {
        let sem = Semaphore::new(0).unwrap();
        prompt("try_acquire on 0", || assert!(sem.try_acquire().is_none()));
        prompt("acquire_timeout(0) on 0", || {
            assert!(sem.acquire_timeout(Duration::ZERO).is_none())
        });
        about(
            "acquire_timeout(100ms) on 0",
            Duration::from_millis(100),
            || assert!(sem.acquire_timeout(Duration::from_millis(100)).is_none()),
        );
        let bsem = BoundedSemaphore::new(0).unwrap();
        about(
            "bounded acquire_timeout(100ms)",
            Duration::from_millis(100),
            || assert!(bsem.acquire_timeout(Duration::from_millis(100)).is_none()),
        );
    });
}

fn release_later(sem: Semaphore) {
    std::thread::sleep(Duration::from_millis(100));
    sem.release().unwrap();
}

#[test]
fn lock_09_a_waiter_is_woken_by_a_release_in_a_child() {
    for_each_context(30, |ctx| {
        let sem = Semaphore::new(0).unwrap();
        let mut p = ctx.process(release_later, sem.clone());
        p.start().unwrap();
        let unit = sem.acquire_timeout(Duration::from_secs(10));
        assert!(unit.is_some());
        unit.unwrap().forget();
        p.join().unwrap();
        assert_eq!(sem.get_value(), 0);
    });
}
