//! Queue behaviours (QUEUE-* of the CPython checklist) across real processes, under every
//! start method, each bounded so a hang fails.

mod common;

use std::time::Duration;

use common::{about, bounded, for_each_context, prompt};
use mp_core::{GetError, JoinableQueue, PutError, Queue, QueueError, SimpleQueue};

const SECS: Duration = Duration::from_secs(10);

fn take_six(q: Queue<u32>) {
    for _ in 0..6 {
        q.get_timeout(SECS).unwrap();
    }
}

#[test]
fn queue_01_03_bounded_put_full_and_shared_capacity() {
    for_each_context(30, |ctx| {
        let q = Queue::<u32>::bounded(6).unwrap();
        assert!(q.empty() && !q.full());
        q.put(1).unwrap();
        q.put_timeout(2, SECS).unwrap();
        q.put_nowait(3).unwrap();
        for i in 4..=6 {
            q.put(i).unwrap();
        }
        assert!(!q.empty() && q.full());
        prompt("put_nowait on a full queue", || {
            assert!(matches!(q.put_nowait(7), Err(PutError::Full(7))))
        });
        about(
            "put_timeout(100ms) on a full queue",
            Duration::from_millis(100),
            || {
                assert!(matches!(
                    q.put_timeout(7, Duration::from_millis(100)),
                    Err(PutError::Full(7))
                ))
            },
        );
        let mut p = ctx.process(take_six, q.clone());
        p.start().unwrap();
        p.join().unwrap();
        assert!(q.empty() && !q.full());
    });
}

fn put_range(arg: (Queue<u32>, u32, u32)) {
    for i in arg.1..arg.2 {
        arg.0.put(i).unwrap();
    }
}

#[test]
fn queue_04_05_fifo_get_forms_and_empty_timing() {
    for_each_context(30, |ctx| {
        let q = Queue::<u32>::new().unwrap();
        let mut p = ctx.process(put_range, (q.clone(), 2, 6));
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(q.get().unwrap(), 2);
        assert_eq!(q.get_timeout(SECS).unwrap(), 3);
        assert_eq!(q.get_timeout(Duration::from_secs(1)).unwrap(), 4);
        assert_eq!(q.get_nowait().unwrap(), 5);
        assert!(q.empty());
        prompt("get_nowait on empty", || {
            assert!(matches!(q.get_nowait(), Err(GetError::Empty)))
        });
        about(
            "get_timeout(100ms) on empty",
            Duration::from_millis(100),
            || {
                assert!(matches!(
                    q.get_timeout(Duration::from_millis(100)),
                    Err(GetError::Empty)
                ))
            },
        );
    });
}

#[test]
fn queue_06_items_put_right_before_exit_arrive_and_joining_first_cannot_deadlock() {
    for_each_context(60, |ctx| {
        let q = Queue::<u32>::new().unwrap();
        for i in 0..10 {
            q.put(i).unwrap();
        }
        // The child puts 10..19 (and a lot more data than any pipe holds) and returns at once;
        // the parent joins it before reading anything.
        let mut p = ctx.process(put_range, (q.clone(), 10, 20));
        p.start().unwrap();
        p.join().unwrap();
        let mut big = ctx.process(put_big, (q.clone(), 16));
        big.start().unwrap();
        big.join().unwrap();
        let got: Vec<u32> = (0..20).map(|_| q.get_timeout(SECS).unwrap()).collect();
        assert_eq!(got, (0..20).collect::<Vec<_>>());
        for _ in 0..16 {
            assert_eq!(q.get_timeout(SECS).unwrap(), 1_000_000);
        }
        assert!(matches!(q.get_nowait(), Err(GetError::Empty)));
    });
}

/// Puts `n` items of 1 MiB each (as a marker value followed by padding in a second queue...):
/// here, n copies of a large number, each in its own 1 MiB frame via a Vec.
fn put_big(arg: (Queue<u32>, u32)) {
    let (q, n) = arg;
    let bulk = Queue::<Vec<u8>>::new().unwrap();
    for _ in 0..n {
        bulk.put(vec![7u8; 1 << 20]).unwrap();
        q.put(1_000_000).unwrap();
    }
}

#[test]
fn queue_07_qsize_follows_puts_and_gets() {
    let q = Queue::<u8>::new().unwrap();
    assert_eq!(q.qsize(), 0);
    q.put(1).unwrap();
    assert_eq!(q.qsize(), 1);
    q.put(2).unwrap();
    assert_eq!(q.qsize(), 2);
    q.get().unwrap();
    assert_eq!(q.qsize(), 1);
    q.get().unwrap();
    assert_eq!(q.qsize(), 0);
}

fn worker(q: JoinableQueue<Option<u32>>) {
    while let Ok(Some(_)) = q.get_timeout(SECS) {
        std::thread::sleep(Duration::from_millis(20));
        q.task_done().unwrap();
    }
    q.task_done().unwrap();
}

#[test]
fn queue_08_joinable_queue_task_done_and_join() {
    for_each_context(60, |ctx| {
        let q = JoinableQueue::<Option<u32>>::new().unwrap();
        let mut workers: Vec<_> = (0..4).map(|_| ctx.process(worker, q.clone())).collect();
        for w in &mut workers {
            w.start().unwrap();
        }
        for i in 0..10 {
            q.put(Some(i)).unwrap();
        }
        q.join_timeout(Duration::from_secs(20)).unwrap();
        assert_eq!(q.unfinished_tasks(), 0);
        for _ in &workers {
            q.put(None).unwrap();
        }
        for w in &workers {
            w.join().unwrap();
        }
        q.join_timeout(SECS).unwrap();
        assert!(matches!(
            q.task_done(),
            Err(QueueError::TaskDoneTooManyTimes)
        ));
    });
}

/// A value whose serialization fails.
#[derive(Debug)]
struct Unencodable;

impl serde::Serialize for Unencodable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("cannot be encoded"))
    }
}

impl<'de> serde::Deserialize<'de> for Unencodable {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Ok(Unencodable)
    }
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum Item {
    Good(bool),
    Bad(Unencodable),
}

#[test]
fn queue_09_an_unencodable_item_fails_alone_and_uses_no_capacity() {
    let q = Queue::<Item>::bounded(1).unwrap();
    assert!(matches!(
        q.put(Item::Bad(Unencodable)),
        Err(PutError::Encode(Item::Bad(_), _))
    ));
    q.put(Item::Good(true)).unwrap();
    assert_eq!(q.qsize(), 1);
    assert!(matches!(q.get().unwrap(), Item::Good(true)));
    assert!(q.empty());
}

#[test]
fn queue_10_a_closed_handle_refuses_put_and_get() {
    let mut q = Queue::<u8>::new().unwrap();
    let other = q.clone();
    q.put(1).unwrap();
    q.close();
    assert!(matches!(q.put(2), Err(PutError::Closed(2))));
    assert!(matches!(q.get(), Err(GetError::Closed)));
    assert_eq!(other.get().unwrap(), 1, "other handles keep working");
    let mut j = JoinableQueue::<u8>::new().unwrap();
    j.close();
    assert!(matches!(j.put(1), Err(PutError::Closed(1))));
    assert!(matches!(j.task_done(), Err(QueueError::Closed)));
}

fn report_empty(q: SimpleQueue<bool>) {
    q.put(q.empty()).unwrap();
    q.put(q.empty()).unwrap();
}

#[test]
fn queue_14_simple_queue() {
    for_each_context(30, |ctx| {
        let q = SimpleQueue::<bool>::new().unwrap();
        assert!(q.empty());
        let mut p = ctx.process(report_empty, q.clone());
        p.start().unwrap();
        p.join().unwrap();
        assert!(!q.empty());
        assert!(q.get().unwrap());
        assert!(!q.get().unwrap());
        assert!(q.empty());
    });
}

fn produce(arg: (Queue<(u32, Vec<u32>)>, u32, u32)) {
    let (q, id, n) = arg;
    for i in 0..n {
        // Items of varying sizes, so frames of different producers would tear if mixed.
        q.put((id, vec![i; (i as usize * 37) % 3000])).unwrap();
    }
}

#[test]
fn many_producers_that_exit_at_once_lose_nothing_and_keep_boundaries() {
    for_each_context(120, |ctx| {
        let q = Queue::<(u32, Vec<u32>)>::new().unwrap();
        let (producers, per) = (6, 300);
        let mut ps: Vec<_> = (0..producers)
            .map(|id| ctx.process(produce, (q.clone(), id, per)))
            .collect();
        for p in &mut ps {
            p.start().unwrap();
        }
        let mut next = vec![0u32; producers as usize];
        for _ in 0..producers * per {
            let (id, v) = q.get_timeout(SECS).unwrap();
            let i = next[id as usize];
            assert_eq!(
                v,
                vec![i; (i as usize * 37) % 3000],
                "producer {id} item {i}"
            );
            next[id as usize] += 1;
        }
        for p in &ps {
            p.join().unwrap();
        }
        assert!(q.empty());
    });
}

fn consume_sum(arg: (Queue<Option<u64>>, mp_core::Writer<u64>)) {
    let (q, out) = arg;
    let mut sum = 0;
    while let Some(v) = q.get_timeout(SECS).unwrap() {
        sum += v;
    }
    out.send(&sum).unwrap();
}

#[test]
fn several_consumers_share_the_items_exactly_once() {
    for_each_context(60, |ctx| {
        let q = Queue::<Option<u64>>::new().unwrap();
        let mut readers = Vec::new();
        let mut ps = Vec::new();
        for _ in 0..3 {
            let (rx, tx) = mp_core::pipe_oneway::<u64>().unwrap();
            let mut p = ctx.process(consume_sum, (q.clone(), tx));
            p.start().unwrap();
            readers.push(rx);
            ps.push(p);
        }
        for v in 1..=3000u64 {
            q.put(Some(v)).unwrap();
        }
        for _ in 0..3 {
            q.put(None).unwrap();
        }
        let total: u64 = readers.iter().map(|r| r.recv_timeout(SECS).unwrap()).sum();
        assert_eq!(total, 3000 * 3001 / 2);
        for p in &ps {
            p.join().unwrap();
        }
    });
}

fn echo_big(arg: (Queue<Vec<u8>>, Queue<Vec<u8>>)) {
    // The parent builds and encodes 64 MiB first: on a loaded machine (or under a sanitizer)
    // that takes longer than SECS, so the wait is long; the test's bound catches a hang.
    let v = arg.0.get().unwrap();
    arg.1.put(v).unwrap();
}

#[test]
fn a_64_mib_item_goes_through_intact() {
    bounded(300, || {
        let (to, from) = (
            Queue::<Vec<u8>>::new().unwrap(),
            Queue::<Vec<u8>>::new().unwrap(),
        );
        let mut p = mp_core::Process::new(echo_big, (to.clone(), from.clone()));
        p.start().unwrap();
        let item: Vec<u8> = (0..64usize << 20).map(|i| (i % 241) as u8).collect();
        to.put(item.clone()).unwrap();
        // Bounded by the test's bound alone (which scales for sanitizer builds): the
        // transfer is what takes the time here.
        assert_eq!(from.get().unwrap(), item);
        p.join().unwrap();
    });
}

fn die_mid_use(arg: (Queue<u32>, mp_core::Writer<()>)) {
    let (q, tx) = arg;
    q.put(1).unwrap();
    tx.send(&()).unwrap();
    loop {
        q.put(2).unwrap();
        q.get().unwrap();
    }
}

#[test]
fn a_process_killed_while_using_the_queue_does_not_break_it() {
    for_each_context(60, |ctx| {
        let q = Queue::<u32>::new().unwrap();
        let (rx, tx) = mp_core::pipe_oneway::<()>().unwrap();
        let mut p = ctx.process(die_mid_use, (q.clone(), tx));
        p.start().unwrap();
        rx.recv_timeout(SECS).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        p.kill().unwrap();
        let _ = p.join();
        // Whatever state it died in, the queue still works and holds whole items.
        q.put(3).unwrap();
        // The first get may have to take over a lock the dead process held (after 300 ms
        // without an owner), so it gets a long timeout; the rest are there already.
        let mut seen = vec![q.get_timeout(SECS).unwrap()];
        while let Ok(v) = q.get_timeout(Duration::from_millis(200)) {
            seen.push(v);
        }
        assert_eq!(seen.last(), Some(&3), "{seen:?}");
        assert!(seen.iter().all(|v| [1, 2, 3].contains(v)), "{seen:?}");
    });
}

/// A consumer that blocks in `get` on an empty queue until it is shut down, then checks
/// that every operation says so from this process too.
fn blocked_getter_sees_shutdown(arg: (JoinableQueue<u32>, mp_core::Writer<String>)) {
    let (q, report) = arg;
    let got = q.get_timeout(SECS);
    let after = (
        matches!(q.put(1), Err(PutError::ShutDown(1))),
        matches!(q.put_nowait(1), Err(PutError::ShutDown(1))),
        matches!(q.get_nowait(), Err(GetError::ShutDown)),
    );
    report.send(&format!("{got:?} {after:?}")).unwrap();
}

/// QUEUE-11: shutting down an empty queue wakes a getter blocked in another process with
/// ShutDown; afterwards put and get fail with ShutDown everywhere; size stays 0; a joiner
/// returns.
#[test]
fn queue_11_shutdown_empty() {
    for_each_context(30, |ctx| {
        let q = JoinableQueue::<u32>::new().unwrap();
        let (rx, tx) = mp_core::pipe_oneway::<String>().unwrap();
        let mut p = ctx.process(blocked_getter_sees_shutdown, (q.clone(), tx));
        p.start().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(q.shutdown(false).unwrap(), 0);
        let said = rx.recv_timeout(SECS).unwrap();
        assert_eq!(said, "Err(ShutDown) (true, true, true)");
        p.join().unwrap();
        assert!(q.is_shut_down());
        assert_eq!(q.qsize(), 0);
        assert!(matches!(q.put_nowait(3), Err(PutError::ShutDown(3))));
        assert!(matches!(q.get_timeout(SECS), Err(GetError::ShutDown)));
        prompt("join after shutdown", || q.join().unwrap());
    });
}

fn take_one(arg: (JoinableQueue<u32>, mp_core::Writer<u32>)) {
    let v = arg.0.get_timeout(SECS).unwrap();
    arg.1.send(&v).unwrap();
    assert!(matches!(arg.0.get_nowait(), Err(GetError::ShutDown)));
}

/// QUEUE-12: a graceful shutdown keeps what is queued: size 1, another process can still
/// take it; then put and get fail; a joiner waits for the outstanding task_done.
#[test]
fn queue_12_shutdown_nonempty() {
    for_each_context(30, |ctx| {
        let q = JoinableQueue::<u32>::new().unwrap();
        q.put(7).unwrap();
        q.shutdown(false).unwrap();
        assert_eq!(q.qsize(), 1);
        let (rx, tx) = mp_core::pipe_oneway::<u32>().unwrap();
        let mut p = ctx.process(take_one, (q.clone(), tx));
        p.start().unwrap();
        assert_eq!(rx.recv_timeout(SECS).unwrap(), 7);
        p.join().unwrap();
        assert!(matches!(q.put(8), Err(PutError::ShutDown(8))));
        assert!(matches!(q.get_nowait(), Err(GetError::ShutDown)));
        // The item was taken, not yet marked done: a joiner waits for it.
        assert!(matches!(
            q.join_timeout(Duration::from_millis(200)),
            Err(QueueError::Timeout)
        ));
        q.task_done().unwrap();
        prompt("join once done", || q.join().unwrap());
    });
}

/// QUEUE-13: an immediate shutdown discards what is queued (size 0); joiners are released,
/// except for an item already taken and not yet done; a further task_done is an error.
#[test]
fn queue_13_shutdown_immediate() {
    bounded(30, || {
        let q = JoinableQueue::<u32>::new().unwrap();
        for i in 0..4 {
            q.put(i).unwrap();
        }
        assert_eq!(q.get().unwrap(), 0); // taken, not done
        let joiner = {
            let q = q.clone();
            std::thread::spawn(move || q.join_timeout(SECS))
        };
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(q.shutdown(true).unwrap(), 3);
        assert_eq!(q.qsize(), 0);
        assert!(matches!(q.get_nowait(), Err(GetError::ShutDown)));
        assert!(matches!(q.put(9), Err(PutError::ShutDown(9))));
        std::thread::sleep(Duration::from_millis(100));
        assert!(!joiner.is_finished(), "the joiner waits for the taken item");
        q.task_done().unwrap();
        joiner.join().unwrap().unwrap();
        assert!(matches!(
            q.task_done(),
            Err(QueueError::TaskDoneTooManyTimes)
        ));

        // A plain queue too, with a getter blocked in a thread.
        let q = Queue::<u32>::new().unwrap();
        let getter = {
            let q = q.clone();
            std::thread::spawn(move || q.get_timeout(SECS))
        };
        std::thread::sleep(Duration::from_millis(100));
        q.shutdown(true).unwrap();
        assert!(matches!(getter.join().unwrap(), Err(GetError::ShutDown)));
        // A putter blocked on a full bounded queue wakes too.
        let q = Queue::<u32>::bounded(1).unwrap();
        q.put(1).unwrap();
        let putter = {
            let q = q.clone();
            std::thread::spawn(move || q.put_timeout(2, SECS))
        };
        std::thread::sleep(Duration::from_millis(100));
        q.shutdown(false).unwrap();
        assert!(matches!(putter.join().unwrap(), Err(PutError::ShutDown(2))));
        assert_eq!(q.get().unwrap(), 1);

        let s = SimpleQueue::<u32>::new().unwrap();
        s.put(1).unwrap();
        assert_eq!(s.shutdown(true).unwrap(), 1);
        assert!(s.empty());
    });
}
