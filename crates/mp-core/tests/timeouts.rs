//! Every timeout of the public API saturates: `Duration::MAX` means "for ever", never a
//! panic or a wrapped short wait (issue #12, finding 3 and its class). Each `_timeout` method
//! (and each `Option<Duration>` wait) is given `Duration::MAX` on an object that is ready,
//! and must return its ready result at once, whatever the platform.

mod common;

use std::time::Duration;

use common::bounded;
use mp_core::listener::{Address, Client, Listener};
use mp_core::manager::{Manager, QueueProxy};
use mp_core::pool::{as_completed, wait as wait_futures, ProcessPoolExecutor, ReturnWhen};
use mp_core::{
    pipe, wait, Barrier, BoundedSemaphore, Condition, Event, JoinableQueue, Lock, Pool, Process,
    Queue, RLock, Semaphore, SimpleQueue,
};

const MAX: Duration = Duration::MAX;

fn nothing(_: ()) {}

fn double(x: u64) -> u64 {
    x * 2
}

#[test]
fn connections_and_wait() {
    bounded(60, || {
        let (a, b) = pipe::<u8>().unwrap();
        b.send(&1).unwrap();
        assert!(a.poll(MAX).unwrap());
        assert_eq!(wait(&[&a], Some(MAX)).unwrap(), vec![0]);
        assert_eq!(a.recv_timeout(MAX).unwrap(), 1);
        b.send_bytes(b"xy").unwrap();
        assert_eq!(a.recv_bytes_timeout(MAX).unwrap(), b"xy");
    });
}

#[test]
fn processes() {
    bounded(60, || {
        let mut p = Process::new(nothing, ());
        p.start().unwrap();
        p.join_timeout(MAX).unwrap();
        assert_eq!(p.exitcode(), Some(0));
        // Joining again, already finished.
        p.join_timeout(MAX).unwrap();
    });
}

#[test]
fn queues() {
    bounded(60, || {
        let q = Queue::<u8>::new().unwrap();
        q.put_timeout(1, MAX).unwrap();
        assert_eq!(q.get_timeout(MAX).unwrap(), 1);
        let s = SimpleQueue::<u8>::new().unwrap();
        s.put(2).unwrap();
        assert_eq!(s.get_timeout(MAX).unwrap(), 2);
        let j = JoinableQueue::<u8>::new().unwrap();
        j.put_timeout(3, MAX).unwrap();
        assert_eq!(j.get_timeout(MAX).unwrap(), 3);
        j.task_done().unwrap();
        j.join_timeout(MAX).unwrap();
    });
}

#[test]
fn sync_primitives() {
    bounded(60, || {
        let lock = Lock::new().unwrap();
        drop(lock.acquire_timeout(MAX).unwrap());
        let rlock = RLock::new().unwrap();
        let g1 = rlock.acquire_timeout(MAX).unwrap();
        let g2 = rlock.acquire_timeout(MAX).unwrap();
        drop((g2, g1));
        let sem = Semaphore::new(1).unwrap();
        assert!(sem.acquire_timeout(MAX).is_some());
        let bsem = BoundedSemaphore::new(1).unwrap();
        assert!(bsem.acquire_timeout(MAX).is_some());
        let event = Event::new().unwrap();
        event.set();
        assert!(event.wait_timeout(MAX));
        let cond = Condition::new().unwrap();
        let guard = cond.acquire_timeout(MAX).unwrap();
        let (guard, ok) = cond.wait_for_timeout(guard, MAX, || true);
        assert!(ok);
        drop(guard);
        let barrier = Barrier::new(1).unwrap();
        assert_eq!(barrier.wait_timeout(MAX), Ok(0));
        let barrier = Barrier::with_timeout(1, MAX).unwrap();
        assert_eq!(barrier.wait(), Ok(0));
    });
}

#[test]
fn pools_and_futures() {
    bounded(120, || {
        let pool = Pool::new(1).unwrap();
        let r = pool.apply_async(double, 2).unwrap();
        assert!(r.wait_timeout(MAX));
        assert_eq!(r.get_timeout(MAX).unwrap(), 4);
        let mut it = pool.imap(double, vec![1u64, 2]).unwrap();
        assert_eq!(it.next_timeout_for(MAX).unwrap().unwrap(), 2);
        assert_eq!(it.next_timeout_for(MAX).unwrap().unwrap(), 4);
        drop(it);
        drop(pool);

        let ex = ProcessPoolExecutor::new(1).unwrap();
        let f = ex.submit(double, 3).unwrap();
        assert!(f.wait_timeout(MAX));
        assert_eq!(f.result_timeout(MAX).unwrap(), 6);
        let done = wait_futures([&f], ReturnWhen::AllCompleted, Some(MAX));
        assert_eq!(done.done.len(), 1);
        assert_eq!(as_completed([&f], Some(MAX)).count(), 1);
        let mapped: Vec<u64> = ex
            .map(double, vec![1u64, 2])
            .unwrap()
            .with_timeout(MAX)
            .map(Result::unwrap)
            .collect();
        assert_eq!(mapped, vec![2, 4]);
    });
}

#[test]
fn listener_and_client() {
    bounded(60, || {
        let mut l = Listener::bind(&"127.0.0.1:0".parse().unwrap(), Some(b"k")).unwrap();
        l.set_handshake_timeout(MAX);
        let addr = l.address().clone();
        let t = std::thread::spawn(move || {
            let c = Client::connect_timeout::<u8>(&addr, Some(b"k"), MAX).unwrap();
            c.send(&9).unwrap();
        });
        let c = l.accept_timeout::<u8>(MAX).unwrap();
        assert_eq!(c.recv_timeout(MAX).unwrap(), 9);
        t.join().unwrap();
        let local = Listener::bind(&Address::unique_local(), None).unwrap();
        let addr = local.address().clone();
        let t = std::thread::spawn(move || Client::connect_timeout::<u8>(&addr, None, MAX));
        drop(local.accept_timeout::<u8>(MAX).unwrap());
        assert!(t.join().unwrap().is_ok());
    });
}

#[test]
fn manager_proxies() {
    bounded(120, || {
        let m = Manager::start().unwrap();
        let key = mp_core::current_process().authkey;
        let again = Manager::connect_timeout(m.address(), &key, MAX).unwrap();
        let q: QueueProxy<u8> = again.queue(1).unwrap();
        q.put_timeout(&1, MAX).unwrap();
        assert_eq!(q.get_timeout(MAX).unwrap(), 1);
        q.put(&2).unwrap();
        q.get().unwrap();
        q.task_done().unwrap();
        q.task_done().unwrap();
        let lock = m.lock().unwrap();
        assert!(lock.acquire_timeout(MAX).unwrap());
        lock.release().unwrap();
        let sem = m.semaphore(1).unwrap();
        assert!(sem.acquire_timeout(MAX).unwrap());
        let ev = m.event().unwrap();
        ev.set().unwrap();
        assert!(ev.wait(Some(MAX)).unwrap());
        let cond = m.condition().unwrap();
        cond.acquire().unwrap();
        assert!(cond.wait_for(|| true, Some(MAX)).unwrap());
        cond.release().unwrap();
        let barrier = m.barrier(1).unwrap();
        assert_eq!(barrier.wait(Some(MAX)).unwrap(), 0);
    });
}

#[cfg(feature = "threads")]
#[test]
fn dummy_module() {
    use mp_core::dummy;
    bounded(60, || {
        let (a, b) = dummy::pipe::<u8>().unwrap();
        b.send(&1).unwrap();
        assert!(a.poll(MAX).unwrap());
        assert_eq!(a.recv_timeout(MAX).unwrap(), 1);
        b.send_bytes(b"z").unwrap();
        assert_eq!(a.recv_bytes_timeout(MAX).unwrap(), b"z");
        let q = dummy::Queue::<u8>::new().unwrap();
        q.put_timeout(1, MAX).unwrap();
        assert_eq!(q.get_timeout(MAX).unwrap(), 1);
        let j = dummy::JoinableQueue::<u8>::new().unwrap();
        j.put_timeout(1, MAX).unwrap();
        assert_eq!(j.get_timeout(MAX).unwrap(), 1);
        j.task_done().unwrap();
        j.join_timeout(MAX).unwrap();
        let pool = dummy::Pool::new(1).unwrap();
        let r = pool.apply_async(double, 5).unwrap();
        assert!(r.wait_timeout(MAX));
        assert_eq!(r.get_timeout(MAX).unwrap(), 10);
        let mut p = dummy::Process::new(nothing, ());
        p.start().unwrap();
        p.join_timeout(MAX).unwrap();
    });
}
