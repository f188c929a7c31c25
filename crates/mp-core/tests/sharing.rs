//! Shared objects go wherever Python lets them go: inside a pool's initializer argument, a
//! task's argument, and a queue item (issue #16, item 1), under every start method, with
//! real worker processes. Each test checks that the object on the other side is the *same*
//! object (a lock held here is held there, a value written there is read here).

mod common;

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use mp_core::pool::ProcessPoolExecutor;
use mp_core::{
    pipe, pipe_oneway, Array, Barrier, Condition, Connection, Event, GetError, Lock, Pool, Process,
    Queue, RLock, Reader, Semaphore, SharedMemory, TaskError, Value, Writer,
};
use serde::{Deserialize, Serialize};

/// Everything a worker's initializer can receive, in one argument.
#[derive(Serialize, Deserialize)]
struct Kit {
    lock: Lock,
    rlock: RLock,
    sem: Semaphore,
    event: Event,
    cond: Condition,
    barrier: Barrier,
    counter: Value<u64>,
    array: Array<i32>,
    queue: Queue<String>,
    shm: SharedMemory,
    conn: Writer<u32>,
}

static KIT: OnceLock<Mutex<Kit>> = OnceLock::new();

fn init_kit(kit: Kit) {
    assert!(KIT.set(Mutex::new(kit)).is_ok(), "initializer ran twice");
}

/// What a task sees of the kit its worker's initializer received.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Seen {
    lock_free: bool,
    rlock_free: bool,
    sem_value: u32,
    event_set: bool,
    array0: i32,
    shm_byte: u8,
}

fn look(_: ()) -> Seen {
    let kit = KIT.get().expect("the initializer ran").lock().unwrap();
    let mut b = [0u8];
    kit.shm.read_at(0, &mut b);
    let seen = Seen {
        lock_free: kit.lock.try_acquire().is_ok(),
        rlock_free: kit.rlock.try_acquire().is_ok(),
        sem_value: kit.sem.get_value(),
        event_set: kit.event.is_set(),
        array0: kit.array.get(0).unwrap(),
        shm_byte: b[0],
    };
    *kit.counter.lock().unwrap() += 1;
    kit.queue.put("hello from a worker".into()).unwrap();
    kit.conn.send(&7).unwrap();
    kit.cond.notify_all();
    seen
}

fn kit() -> (Kit, Reader<u32>, SharedMemory) {
    let (reader, writer) = pipe_oneway::<u32>().unwrap();
    let shm = SharedMemory::create(16).unwrap();
    shm.write_at(0, &[42]);
    let kit = Kit {
        lock: Lock::new().unwrap(),
        rlock: RLock::new().unwrap(),
        sem: Semaphore::new(3).unwrap(),
        event: Event::new().unwrap(),
        cond: Condition::new().unwrap(),
        barrier: Barrier::new(1).unwrap(),
        counter: Value::new(0).unwrap(),
        array: Array::from_slice(&[5, 6, 7]).unwrap(),
        queue: Queue::new().unwrap(),
        shm: SharedMemory::open(shm.name()).unwrap(),
        conn: writer,
    };
    (kit, reader, shm)
}

/// Python's `Pool(initializer=init, initargs=(lock, ...))`: every kind of shared object
/// reaches every worker's initializer, and is the same object there.
#[test]
fn pool_initializer_receives_shared_objects() {
    common::for_each_context(90, |ctx| {
        let (kit, conn, _shm) = kit();
        let lock = kit.lock.clone();
        let rlock = kit.rlock.clone();
        let sem = kit.sem.clone();
        let event = kit.event.clone();
        let counter = kit.counter.clone();
        let array = kit.array.clone();
        let queue = kit.queue.clone();
        let pool = Pool::builder()
            .processes(2)
            .context(ctx)
            .initializer(init_kit, kit)
            .build()
            .unwrap();

        // Held here: held there.
        let held = lock.acquire().unwrap();
        let rheld = rlock.acquire().unwrap();
        let unit = sem.acquire();
        array.set(0, 99);
        let seen = pool.apply(look, ()).unwrap();
        assert_eq!(
            seen,
            Seen {
                lock_free: false,
                rlock_free: false,
                sem_value: 2,
                event_set: false,
                array0: 99,
                shm_byte: 42,
            }
        );
        drop((held, rheld, unit));
        event.set();
        let seen = pool.apply(look, ()).unwrap();
        assert!(seen.lock_free && seen.rlock_free && seen.event_set);
        assert_eq!(seen.sem_value, 3);

        assert_eq!(counter.get(), 2);
        for _ in 0..2 {
            assert_eq!(
                queue.get_timeout(Duration::from_secs(20)).unwrap(),
                "hello from a worker"
            );
            assert_eq!(conn.recv_timeout(Duration::from_secs(20)).unwrap(), 7);
        }
        pool.close();
        pool.join().unwrap();
    });
}

/// A replacement worker (after `max_tasks_per_child`) gets the initializer's objects too.
#[test]
fn pool_initializer_objects_reach_replacement_workers() {
    common::for_each_context(90, |ctx| {
        let inits = Value::new(0u64).unwrap();
        let tasks = Value::new(0u64).unwrap();
        let pool = Pool::builder()
            .processes(1)
            .max_tasks_per_child(1)
            .context(ctx)
            .initializer(init_counters, (inits.clone(), tasks.clone()))
            .build()
            .unwrap();
        for _ in 0..3 {
            pool.apply(bump_counter, ()).unwrap();
        }
        // Each task ran in a fresh worker whose initializer had the same two values.
        assert_eq!(tasks.get(), 3);
        assert!(inits.get() >= 3, "{}", inits.get());
    });
}

static COUNTER: OnceLock<Value<u64>> = OnceLock::new();

fn init_counters(v: (Value<u64>, Value<u64>)) {
    *v.0.lock().unwrap() += 1;
    let _ = COUNTER.set(v.1);
}

fn bump_counter(_: ()) {
    *COUNTER.get().unwrap().lock().unwrap() += 1;
}

fn try_lock(lock: Lock) -> bool {
    lock.try_acquire().is_ok()
}

fn add_to(arg: (Value<i64>, i64)) -> i64 {
    let mut v = arg.0.lock().unwrap();
    *v += arg.1;
    *v
}

fn put_back(arg: (Queue<u32>, u32)) {
    arg.0.put(arg.1 * 2).unwrap();
}

fn answer_on(conn: Connection<String>) -> usize {
    let got = conn.recv().unwrap();
    conn.send(&got.to_uppercase()).unwrap();
    got.len()
}

/// A task's argument may hold shared objects: `apply`, `map` (several per chunk), `imap`,
/// `starmap` and the executor all carry them.
#[test]
fn task_arguments_carry_shared_objects() {
    common::for_each_context(90, |ctx| {
        let pool = Pool::builder().processes(2).context(ctx).build().unwrap();
        let lock = Lock::new().unwrap();
        let held = lock.acquire().unwrap();
        assert!(!pool.apply(try_lock, lock.clone()).unwrap());
        drop(held);
        assert!(pool.apply(try_lock, lock.clone()).unwrap());

        let total = Value::new(0i64).unwrap();
        let items: Vec<_> = (1..=20).map(|i| (total.clone(), i)).collect();
        let r = pool
            .chunksize(std::num::NonZeroUsize::new(4).unwrap())
            .map(add_to, items)
            .unwrap();
        assert_eq!(r.len(), 20);
        assert_eq!(total.get(), 210);

        let q = Queue::<u32>::new().unwrap();
        let n: Vec<_> = pool
            .imap(put_back, (0..5).map(|i| (q.clone(), i)))
            .unwrap()
            .collect();
        assert!(n.iter().all(Result::is_ok));
        let mut got: Vec<u32> = (0..5)
            .map(|_| q.get_timeout(Duration::from_secs(20)).unwrap())
            .collect();
        got.sort();
        assert_eq!(got, [0, 2, 4, 6, 8]);

        let sums = pool
            .starmap(
                |v: Value<i64>, k: i64| {
                    *v.lock().unwrap() -= k;
                    k
                },
                [(total.clone(), 10), (total.clone(), 100)],
            )
            .unwrap();
        assert_eq!(sums, [10, 100]);
        assert_eq!(total.get(), 100);

        let (here, there) = pipe::<String>().unwrap();
        let pending = pool.apply_async(answer_on, there).unwrap();
        here.send(&"ping".to_string()).unwrap();
        assert_eq!(here.recv_timeout(Duration::from_secs(20)).unwrap(), "PING");
        assert_eq!(pending.get().unwrap(), 4);

        let ex = ProcessPoolExecutor::builder()
            .max_workers(1)
            .context(ctx)
            .build()
            .unwrap();
        let event = Event::new().unwrap();
        let f = ex
            .submit(
                |e: Event| e.wait_timeout(Duration::from_secs(20)),
                event.clone(),
            )
            .unwrap();
        event.set();
        assert!(f.result().unwrap());
    });
}

/// A shared object cannot come back as a task's result: the error says why.
#[test]
fn task_result_with_a_handle_is_refused_with_the_reason() {
    let pool = Pool::new(1).unwrap();
    let err = pool.apply(|_: ()| Lock::new().unwrap(), ()).unwrap_err();
    let TaskError::Encode(msg) = err else {
        panic!("expected an encoding error, got {err:?}")
    };
    assert!(msg.contains("can travel only"), "{msg}");
    // The worker is fine afterwards.
    assert_eq!(pool.apply(|x: u8| x + 1, 1).unwrap(), 2);
}

/// What a child does with the objects it takes out of a queue.
#[derive(Debug, Serialize, Deserialize)]
enum Shared {
    Lock(Lock),
    Value(Value<u32>),
    Conn(Box<Connection<String>>),
    Queue(Queue<String>),
    Sem(Semaphore),
}

fn consume_shared(arg: (Queue<Shared>, Queue<String>)) {
    let (inbox, report) = arg;
    for _ in 0..5 {
        let line = match inbox.get_timeout(Duration::from_secs(30)).unwrap() {
            Shared::Lock(l) => format!("lock free: {}", l.try_acquire().is_ok()),
            Shared::Value(v) => {
                v.set(v.get() + 1);
                "value bumped".to_string()
            }
            Shared::Conn(c) => {
                c.send(&"over the queued connection".to_string()).unwrap();
                "conn used".to_string()
            }
            Shared::Queue(q) => {
                q.put("through the queued queue".into()).unwrap();
                "queue used".to_string()
            }
            Shared::Sem(s) => {
                s.release().unwrap();
                "sem released".to_string()
            }
        };
        report.put(line).unwrap();
    }
}

/// A queue item may hold shared objects (Python: only a connection, through its resource
/// sharer; a lock raises): the taker gets the same objects.
#[test]
fn queue_items_carry_shared_objects() {
    common::for_each_context(90, |ctx| {
        let inbox = Queue::<Shared>::new().unwrap();
        let report = Queue::<String>::new().unwrap();
        let mut child =
            Process::new(consume_shared, (inbox.clone(), report.clone())).with_context(ctx);
        child.start().unwrap();
        let next = || report.get_timeout(Duration::from_secs(30)).unwrap();

        let lock = Lock::new().unwrap();
        let held = lock.acquire().unwrap();
        inbox.put(Shared::Lock(lock.clone())).unwrap();
        assert_eq!(next(), "lock free: false");
        drop(held);

        let v = Value::new(41u32).unwrap();
        inbox.put(Shared::Value(v.clone())).unwrap();
        assert_eq!(next(), "value bumped");
        assert_eq!(v.get(), 42);

        let (here, there) = pipe::<String>().unwrap();
        inbox.put(Shared::Conn(Box::new(there))).unwrap();
        assert_eq!(next(), "conn used");
        assert_eq!(
            here.recv_timeout(Duration::from_secs(20)).unwrap(),
            "over the queued connection"
        );

        let q = Queue::<String>::new().unwrap();
        inbox.put(Shared::Queue(q.clone())).unwrap();
        assert_eq!(next(), "queue used");
        assert_eq!(
            q.get_timeout(Duration::from_secs(20)).unwrap(),
            "through the queued queue"
        );

        let sem = Semaphore::new(0).unwrap();
        inbox.put(Shared::Sem(sem.clone())).unwrap();
        assert_eq!(next(), "sem released");
        assert_eq!(sem.get_value(), 1);

        child.join_timeout(Duration::from_secs(30)).unwrap();
    });
}

fn put_lock_and_exit(q: Queue<Lock>) {
    q.put(Lock::new().unwrap()).unwrap();
}

/// The process that put an item with handles must still be running when the item is
/// taken; if it is gone, `get` says so (and the queue goes on).
#[test]
fn queue_item_from_a_process_that_ended_is_a_clear_error() {
    common::for_each_context(60, |ctx| {
        let q = Queue::<Lock>::new().unwrap();
        let mut child = Process::new(put_lock_and_exit, q.clone()).with_context(ctx);
        child.start().unwrap();
        child.join_timeout(Duration::from_secs(30)).unwrap();
        match q.get_timeout(Duration::from_secs(10)) {
            Err(GetError::Handles(why)) => assert!(why.contains("ended"), "{why}"),
            other => panic!("expected GetError::Handles, got {other:?}"),
        }
        // The queue still works.
        q.put(Lock::new().unwrap()).unwrap();
        assert!(q.get().unwrap().try_acquire().is_ok());
    });
}

/// An item that was not queued (full queue) withdraws the duplicates it exported: nothing
/// leaks however many times it is refused.
#[cfg(target_os = "linux")]
#[test]
fn refused_queue_item_leaks_no_descriptor() {
    let open_fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    let q = Queue::<Lock>::bounded(1).unwrap();
    q.put(Lock::new().unwrap()).unwrap();
    let lock = Lock::new().unwrap();
    let before = open_fds();
    for _ in 0..50 {
        let back = q.put_nowait(lock.clone()).unwrap_err().into_inner();
        drop(back);
    }
    // Other tests of this binary open and close descriptors meanwhile; a leak per refusal
    // would show as 50 or more.
    let after = open_fds();
    assert!(
        after < before + 25,
        "{} descriptors more after 50 refusals",
        after.saturating_sub(before)
    );
    // The queued one is taken in this same process, through the same server.
    assert!(q.get().unwrap().try_acquire().is_ok());
}

/// An item's handles are handed over once: taken in this very process, they work.
#[test]
fn queue_item_with_handles_in_the_same_process() {
    let q = Queue::<(Value<u8>, Event)>::new().unwrap();
    let v = Value::new(1u8).unwrap();
    let e = Event::new().unwrap();
    q.put((v.clone(), e.clone())).unwrap();
    let (v2, e2) = q.get().unwrap();
    v2.set(9);
    e2.set();
    assert_eq!(v.get(), 9);
    assert!(e.is_set());
}
