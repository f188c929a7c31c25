//! Lock behaviours (LOCK-* of the CPython checklist) across real processes.

mod common;

use std::time::Duration;

use common::{about, bounded, for_each_context, prompt};
use mp_core::{pipe_oneway, Lock, LockError, SyncError, Writer};

#[test]
fn lock_01_03_acquire_release_and_guards() {
    let lock = Lock::new().unwrap();
    assert!(!lock.is_locked());
    let guard = lock.acquire().unwrap();
    assert!(lock.is_locked());
    assert!(matches!(lock.try_acquire(), Err(LockError::WouldBlock)));
    drop(guard);
    assert!(!lock.is_locked());
    assert!(matches!(
        lock.release(),
        Err(SyncError::ReleasedTooManyTimes)
    ));
    // Not owner-checked: a leaked guard is released by another thread.
    lock.acquire().unwrap().leak();
    let other = lock.clone();
    std::thread::spawn(move || other.release().unwrap())
        .join()
        .unwrap();
    assert!(!lock.is_locked());
    bounded(10, move || {
        let _g = lock.acquire().unwrap();
        prompt("try_acquire on a held lock", || {
            assert!(lock.try_acquire().is_err())
        });
        about("acquire_timeout(100ms)", Duration::from_millis(100), || {
            assert!(matches!(
                lock.acquire_timeout(Duration::from_millis(100)),
                Err(LockError::Timeout)
            ))
        });
    });
}

fn hold_and_report(arg: (Lock, Writer<bool>)) {
    let (lock, tx) = arg;
    let guard = lock.acquire().unwrap();
    tx.send(&lock.is_locked()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(guard);
}

#[test]
fn lock_04_a_lock_held_by_a_child_is_locked_everywhere() {
    for_each_context(30, |ctx| {
        let lock = Lock::new().unwrap();
        let (rx, tx) = pipe_oneway::<bool>().unwrap();
        let mut p = ctx.process(hold_and_report, (lock.clone(), tx));
        p.start().unwrap();
        assert!(rx.recv_timeout(Duration::from_secs(10)).unwrap());
        assert!(lock.is_locked());
        let _g = lock.acquire_timeout(Duration::from_secs(10)).unwrap();
        p.join().unwrap();
    });
}

fn die_holding(arg: (Lock, Writer<()>)) {
    let (lock, tx) = arg;
    lock.acquire().unwrap().leak();
    tx.send(&()).unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn lock_06_the_next_owner_is_told_when_the_holder_died() {
    for_each_context(30, |ctx| {
        let lock = Lock::new().unwrap();
        let (rx, tx) = pipe_oneway::<()>().unwrap();
        let mut p = ctx.process(die_holding, (lock.clone(), tx));
        p.start().unwrap();
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        p.kill().unwrap();
        let _ = p.join();
        match lock.acquire_timeout(Duration::from_secs(5)) {
            Err(LockError::OwnerDied(guard)) => drop(guard),
            other => panic!("expected OwnerDied, got {other:?}"),
        }
        // Recovered: the lock works normally again.
        drop(lock.acquire().unwrap());
        assert!(!lock.is_locked());
    });
}
