//! The behaviour suite of `mp-core`'s two flavors (processes, and threads with its
//! `threads` feature): every function is generic over [`mp_core::api::Flavor`] and bounded
//! in time, and [`processes_suite!`](crate::processes_suite) makes a `#[test]` of each.
//! Targets are `fn` items (generic ones too), as the process flavor needs.

use std::collections::BTreeSet;
use std::time::Duration;

use mp_core::api::{
    AsyncResultApi, Flavor, JoinableQueueApi, PoolApi, ProcessApi, QueueApi, RecvApi, SendApi,
};
use mp_core::{ConnectionError, GetError, Lock, PoolError, ProcessError, PutError, TaskError};

use crate::support::{about, bounded, prompt};

const SECS: u64 = 60;

fn noop(_: ()) {}

fn nap(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

fn boom(n: u32) {
    panic!("boom {n}");
}

/// A worker starts, runs, ends with exit code 0, and reports its state at each step.
pub fn process_lifecycle<B: Flavor>() {
    bounded(SECS, || {
        let mut p = B::process(noop, ());
        assert!(!p.is_alive());
        assert_eq!(p.exitcode(), None);
        assert_eq!(p.pid(), None);
        p.start().unwrap();
        assert!(p.name().is_some());
        assert!(p.pid().is_some());
        p.join().unwrap();
        assert!(!p.is_alive());
        assert_eq!(p.exitcode(), Some(0));
        // Joining again is harmless.
        p.join().unwrap();
        assert!(!p.daemon());
    });
}

/// `join_timeout` gives up in time; joining or starting in the wrong state is an error.
pub fn process_join_timeout_and_state_errors<B: Flavor>() {
    bounded(SECS, || {
        let p = B::process(nap, 10);
        assert!(matches!(p.join(), Err(ProcessError::NotStarted)));
        let mut p = B::process(nap, 400);
        p.start().unwrap();
        assert!(matches!(p.start(), Err(ProcessError::AlreadyStarted)));
        assert!(p.is_alive());
        let r = about("join_timeout", Duration::from_millis(50), || {
            p.join_timeout(Duration::from_millis(50))
        });
        assert!(matches!(r, Err(ProcessError::Timeout)), "{r:?}");
        prompt("join_timeout(0)", || {
            assert!(matches!(
                p.join_timeout(Duration::ZERO),
                Err(ProcessError::Timeout)
            ))
        });
        p.join_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(p.exitcode(), Some(0));
    });
}

/// A worker that panics ends with a failure exit code, not silently.
pub fn process_panic_is_reported<B: Flavor>() {
    bounded(SECS, || {
        let mut p = B::process(boom, 7);
        p.start().unwrap();
        match p.join() {
            Err(ProcessError::Panicked { panic, exitcode }) => {
                assert_eq!(exitcode, 1);
                assert_eq!(panic.message, "boom 7");
                assert!(
                    panic.location.contains("processes.rs"),
                    "{}",
                    panic.location
                );
                assert!(!panic.backtrace.is_empty());
            }
            other => panic!("expected a panic report, got {other:?}"),
        }
        assert_eq!(p.exitcode(), Some(1));
        assert!(!p.is_alive());
    });
}

/// A queue is FIFO, honours its bound, and its timeouts expire.
pub fn queue_fifo_bounds_and_timeouts<B: Flavor>() {
    bounded(SECS, || {
        let q = B::bounded_queue::<String>(2).unwrap();
        assert!(q.empty());
        assert!(!q.full());
        q.put("a".into()).unwrap();
        q.put_nowait("b".into()).unwrap();
        assert!(q.full());
        assert_eq!(q.qsize(), 2);
        match q.put_nowait("c".into()) {
            Err(e @ PutError::Full(_)) => assert_eq!(e.into_inner(), "c"),
            other => panic!("{other:?}"),
        }
        let r = about(
            "put_timeout on a full queue",
            Duration::from_millis(50),
            || q.put_timeout("c".into(), Duration::from_millis(50)),
        );
        assert!(matches!(r, Err(PutError::Full(_))));
        assert_eq!(q.get().unwrap(), "a");
        assert_eq!(q.get_timeout(Duration::from_secs(5)).unwrap(), "b");
        assert!(q.empty());
        assert!(matches!(q.get_nowait(), Err(GetError::Empty)));
        let r = about(
            "get_timeout on an empty queue",
            Duration::from_millis(50),
            || q.get_timeout(Duration::from_millis(50)),
        );
        assert!(matches!(r, Err(GetError::Empty)));
        // A closed handle refuses; a clone goes on.
        let mut closed = q.clone();
        closed.close();
        assert!(closed.is_closed());
        assert!(matches!(closed.put("x".into()), Err(PutError::Closed(_))));
        assert!(matches!(closed.get_nowait(), Err(GetError::Closed)));
        q.put("d".into()).unwrap();
        assert_eq!(q.get().unwrap(), "d");
    });
}

fn produce<B: Flavor>(arg: (B::Queue<(u32, u32)>, u32)) {
    let (q, who) = arg;
    for i in 0..100 {
        q.put((who, i)).unwrap();
    }
}

fn consume<B: Flavor>(arg: (B::Queue<(u32, u32)>, B::Writer<u64>)) {
    let (q, out) = arg;
    let mut sum = 0;
    for _ in 0..200 {
        sum += u64::from(q.get_timeout(Duration::from_secs(30)).unwrap().1);
    }
    out.send(&sum).unwrap();
}

/// Several producing workers and one consumer: every item arrives exactly once.
pub fn queue_producers_and_consumer_across_workers<B: Flavor>() {
    bounded(SECS, || {
        // Two producers and a consumer, all workers; the parent checks each producer's order.
        let q = B::queue::<(u32, u32)>().unwrap();
        let mut producers: Vec<_> = (0..2)
            .map(|who| B::process(produce::<B>, (q.clone(), who)))
            .collect();
        for p in &mut producers {
            p.start().unwrap();
        }
        for p in &producers {
            p.join().unwrap();
        }
        assert_eq!(q.qsize(), 200);
        let mut next = [0u32; 2];
        let mut seen = Vec::new();
        for _ in 0..200 {
            let (who, i) = q.get().unwrap();
            assert_eq!(i, next[who as usize], "items of one producer come in order");
            next[who as usize] += 1;
            seen.push((who, i));
        }
        assert!(q.empty());
        // Now hand them to a consumer worker.
        let (rx, tx) = B::pipe_oneway::<u64>().unwrap();
        let mut c = B::process(consume::<B>, (q.clone(), tx));
        c.start().unwrap();
        for item in seen {
            q.put(item).unwrap();
        }
        assert_eq!(rx.recv().unwrap(), 2 * (0..100u64).sum::<u64>());
        c.join().unwrap();
    });
}

fn put_squares<B: Flavor>(q: B::SimpleQueue<u64>) {
    for i in 0..10u64 {
        q.put(i * i).unwrap();
    }
}

/// A `SimpleQueue` carries items from a worker.
pub fn simple_queue_between_workers<B: Flavor>() {
    bounded(SECS, || {
        let q = B::simple_queue::<u64>().unwrap();
        let mut p = B::process(put_squares::<B>, q.clone());
        p.start().unwrap();
        let got: Vec<u64> = (0..10).map(|_| q.get().unwrap()).collect();
        assert_eq!(got, (0..10u64).map(|i| i * i).collect::<Vec<_>>());
        p.join().unwrap();
    });
}

fn work_and_mark_done<B: Flavor>(q: B::JoinableQueue<u32>) {
    for _ in 0..5 {
        let _ = q.get().unwrap();
        std::thread::sleep(Duration::from_millis(10));
        q.task_done().unwrap();
    }
}

/// `JoinableQueue::join` returns once every item is marked done.
pub fn joinable_queue_join_waits_for_task_done<B: Flavor>() {
    bounded(SECS, || {
        let q = B::joinable_queue::<u32>().unwrap();
        for i in 0..5 {
            q.put(i).unwrap();
        }
        assert_eq!(q.unfinished_tasks(), 5);
        assert!(q.join_timeout(Duration::ZERO).is_err());
        let mut p = B::process(work_and_mark_done::<B>, q.clone());
        p.start().unwrap();
        q.join().unwrap();
        assert_eq!(q.unfinished_tasks(), 0);
        assert!(q.task_done().is_err(), "more task_done than items");
        p.join().unwrap();
    });
}

fn shout<B: Flavor>(conn: B::Connection<String>) {
    loop {
        match conn.recv() {
            Ok(s) if s == "bye" => return,
            Ok(s) => conn.send(&s.to_uppercase()).unwrap(),
            Err(e) => panic!("{e}"),
        }
    }
}

/// A duplex pipe carries values to a worker and back.
pub fn pipe_round_trip_between_workers<B: Flavor>() {
    bounded(SECS, || {
        let (here, there) = B::pipe::<String>().unwrap();
        let mut p = B::process(shout::<B>, there);
        p.start().unwrap();
        for word in ["one", "two", "three"] {
            here.send(&word.to_string()).unwrap();
            assert!(here.poll(Duration::from_secs(30)).unwrap());
            assert_eq!(here.recv().unwrap(), word.to_uppercase());
        }
        assert!(!here.poll(Duration::ZERO).unwrap());
        assert!(matches!(
            here.recv_timeout(Duration::from_millis(20)),
            Err(ConnectionError::Timeout)
        ));
        here.send(&"bye".to_string()).unwrap();
        p.join().unwrap();
        // The worker's end is gone with it.
        assert!(matches!(here.recv(), Err(ConnectionError::Eof)));
    });
}

fn send_three<B: Flavor>(w: B::Writer<u32>) {
    for i in 1..=3 {
        w.send(&i).unwrap();
    }
}

/// A pipe reads end of stream once the worker holding the other end is done.
pub fn pipe_eof_when_the_peer_is_dropped<B: Flavor>() {
    bounded(SECS, || {
        let (r, w) = B::pipe_oneway::<u32>().unwrap();
        let mut p = B::process(send_three::<B>, w);
        p.start().unwrap();
        // The values sent before the end was dropped arrive, then end of file.
        for i in 1..=3 {
            assert_eq!(r.recv().unwrap(), i);
        }
        assert!(matches!(r.recv(), Err(ConnectionError::Eof)));
        assert!(r.poll(Duration::ZERO).unwrap(), "end of file is readable");
        p.join().unwrap();

        // Sending to a dropped peer is a broken pipe.
        let (a, b) = B::pipe::<u32>().unwrap();
        drop(b);
        assert!(matches!(a.send(&1), Err(ConnectionError::BrokenPipe)));
        assert!(matches!(a.recv(), Err(ConnectionError::Eof)));
    });
}

fn bytes_back<B: Flavor>(conn: B::Connection<u8>) {
    let m = conn.recv_bytes().unwrap();
    conn.send_bytes(&m.iter().rev().copied().collect::<Vec<_>>())
        .unwrap();
    conn.send_bytes(&[]).unwrap();
}

/// A one-way pipe, and raw byte messages, between workers.
pub fn pipe_oneway_and_bytes<B: Flavor>() {
    bounded(SECS, || {
        let (here, there) = B::pipe::<u8>().unwrap();
        let mut p = B::process(bytes_back::<B>, there);
        p.start().unwrap();
        here.send_bytes(b"abc").unwrap();
        assert_eq!(here.recv_bytes().unwrap(), b"cba");
        assert_eq!(here.recv_bytes().unwrap(), b"");
        p.join().unwrap();
        let mut here = here;
        here.close();
        assert!(matches!(here.recv(), Err(ConnectionError::Closed)));
    });
}

fn lock_probe<B: Flavor>(arg: (Lock, B::Writer<bool>)) {
    let (lock, out) = arg;
    out.send(&lock.try_acquire().is_ok()).unwrap();
    let got = lock.acquire_timeout(Duration::from_secs(30));
    out.send(&got.is_ok()).unwrap();
}

/// A `Lock` excludes a worker while held here.
pub fn lock_between_workers<B: Flavor>() {
    bounded(SECS, || {
        let lock = Lock::new().unwrap();
        let guard = lock.acquire().unwrap();
        let (r, w) = B::pipe_oneway::<bool>().unwrap();
        let mut p = B::process(lock_probe::<B>, (lock.clone(), w));
        p.start().unwrap();
        assert!(!r.recv().unwrap(), "the worker must not get a held lock");
        std::thread::sleep(Duration::from_millis(50));
        drop(guard);
        assert!(r.recv().unwrap(), "the worker gets it once released");
        p.join().unwrap();
        assert!(
            !lock.is_locked(),
            "the worker's guard was released when it ended"
        );
    });
}

fn square(x: u64) -> u64 {
    x * x
}

fn slow_inverse(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis((10 - x) * 5));
    x
}

fn mul(a: u64, b: u64) -> u64 {
    a * b
}

fn fails_on_3(x: u64) -> u64 {
    assert_ne!(x, 3, "three is not allowed");
    x
}

/// `map` and `imap` keep the order of the inputs; `imap_unordered` yields every result.
pub fn pool_map_imap_ordering<B: Flavor>() {
    bounded(SECS, || {
        let pool = B::pool(3).unwrap();
        assert_eq!(pool.processes(), 3);
        let want: Vec<u64> = (0..20).map(square).collect();
        assert_eq!(pool.map(square, 0..20).unwrap(), want);
        assert!(pool.map(square, Vec::<u64>::new()).unwrap().is_empty());
        // Later items finish first, yet imap keeps input order.
        let ordered: Vec<u64> = pool
            .imap(slow_inverse, 0..10)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(ordered, (0..10).collect::<Vec<_>>());
        let unordered: BTreeSet<u64> = pool
            .imap_unordered(slow_inverse, 0..10)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(unordered, (0..10).collect());
        assert_eq!(pool.starmap(mul, [(2, 3), (4, 5)]).unwrap(), [6, 20]);
        // imap reads its input lazily: an endless input works.
        let first: Vec<u64> = pool
            .imap(square, 0..)
            .unwrap()
            .take(5)
            .map(Result::unwrap)
            .collect();
        assert_eq!(first, [0, 1, 4, 9, 16]);
        pool.close();
        pool.join().unwrap();
    });
}

/// `apply` and `apply_async` run one task and give its result.
pub fn pool_apply_and_apply_async<B: Flavor>() {
    bounded(SECS, || {
        let pool = B::pool(2).unwrap();
        assert_eq!(pool.apply(square, 9).unwrap(), 81);
        let r = pool.apply_async(slow_inverse, 0).unwrap();
        assert!(!r.ready());
        assert_eq!(r.successful(), None);
        r.wait();
        assert!(r.ready());
        assert_eq!(r.successful(), Some(true));
        assert_eq!(r.get().unwrap(), 0);
        assert_eq!(r.get().unwrap(), 0, "get can be asked again, as in Python");
        assert_eq!(r.into_result().unwrap(), 0);
        let many = pool.map_async(square, [1, 2, 3]).unwrap();
        assert_eq!(
            many.get_timeout(Duration::from_secs(30)).unwrap(),
            [1, 4, 9]
        );
        pool.terminate();
        pool.join().unwrap();
    });
}

/// A task that panics fails alone, with its message; the others succeed.
pub fn pool_panicking_task_fails_only_itself<B: Flavor>() {
    bounded(SECS, || {
        let pool = B::pool(2).unwrap();
        match pool.map(fails_on_3, 0..6) {
            Err(TaskError::Panicked(p)) => {
                assert!(p.message.contains("three is not allowed"), "{}", p.message);
                assert!(p.location.contains("processes.rs"), "{}", p.location);
            }
            other => panic!("expected the task's panic, got {other:?}"),
        }
        let each = pool.map_results(fails_on_3, 0..6).unwrap();
        for (i, r) in each.iter().enumerate() {
            match (i, r) {
                (3, Err(TaskError::Panicked(_))) => {}
                (i, Ok(v)) => assert_eq!(*v, i as u64),
                other => panic!("{other:?}"),
            }
        }
        let r = pool.apply_async(fails_on_3, 3).unwrap();
        assert!(matches!(r.get(), Err(TaskError::Panicked(_))));
        assert_eq!(r.successful(), Some(false));
        // The pool goes on.
        assert_eq!(pool.apply(square, 4).unwrap(), 16);
    });
}

/// After `close`, new work is refused and `join` waits for the work in flight.
pub fn pool_close_join_and_closed_errors<B: Flavor>() {
    bounded(SECS, || {
        assert!(matches!(B::pool(0), Err(PoolError::InvalidArgument(_))));
        let pool = B::pool(2).unwrap();
        assert!(matches!(pool.join(), Err(PoolError::StillRunning)));
        let r = pool.apply_async(slow_inverse, 5).unwrap();
        pool.close();
        assert!(matches!(
            pool.apply_async(square, 1),
            Err(PoolError::Closed)
        ));
        assert!(matches!(pool.map(square, [1]), Err(TaskError::Closed)));
        pool.join().unwrap();
        assert_eq!(r.get().unwrap(), 5, "queued work finishes after close");
    });
}
