//! The synchronisation primitives of Python's `multiprocessing` (`Event`, `Semaphore`,
//! `Condition`, `Barrier`) used between processes, in the style of the documentation's
//! `Lock` example:
//!
//! ```python
//! from multiprocessing import Process, Event, Semaphore, Condition, Barrier, Value
//!
//! def worker(start, room, inside, barrier, i):
//!     start.wait()                  # Event: wait for the starting signal
//!     with room:                    # Semaphore(2): at most two inside at once
//!         with inside.get_lock():
//!             inside.value += 1
//!             assert inside.value <= 2
//!         time.sleep(0.01)
//!         with inside.get_lock():
//!             inside.value -= 1
//!     barrier.wait()                # Barrier(4): everybody meets here
//!
//! def producer(cond, ready):
//!     with cond:
//!         ready.value = 1
//!         cond.notify_all()
//! ...
//! ```
//!
//! Every primitive is passed to the children in their argument; guards release on drop.
//!
//! Run with `cargo run -p mp-core --example py_sync`.

use std::time::Duration;

use mp_core::{Barrier, Condition, Event, Process, Semaphore, Value};

type Args = (Event, Semaphore, Value<u32>, Barrier, u32);

fn worker((start, room, inside, barrier, i): Args) {
    start.wait();
    {
        let _unit = room.acquire();
        let now = {
            let mut n = inside.lock().expect("lock");
            *n += 1;
            *n
        };
        assert!(now <= 2, "the semaphore let {now} in");
        println!("worker {i} in the room ({now} inside)");
        std::thread::sleep(Duration::from_millis(10));
        *inside.lock().expect("lock") -= 1;
    } // the unit goes back to the semaphore here
    let index = barrier.wait().expect("barrier");
    println!("worker {i} passed the barrier (arrived {index})");
}

fn producer((cond, ready): (Condition, Value<u32>)) {
    std::thread::sleep(Duration::from_millis(20));
    let _guard = cond.acquire().expect("acquire");
    ready.set(1);
    cond.notify_all();
}

fn main() {
    mp_core::main();

    // Event + Semaphore + Barrier.
    let start = Event::new().expect("event");
    let room = Semaphore::new(2).expect("semaphore");
    let inside = Value::new(0u32).expect("value");
    let barrier = Barrier::new(4).expect("barrier");
    let mut workers = Vec::new();
    for i in 0..4 {
        let args = (
            start.clone(),
            room.clone(),
            inside.clone(),
            barrier.clone(),
            i,
        );
        let mut p = Process::new(worker, args);
        p.start().expect("start");
        workers.push(p);
    }
    println!("setting the start event");
    start.set();
    for p in &workers {
        p.join().expect("join");
    }
    assert_eq!(room.get_value(), 2);
    assert_eq!(inside.get(), 0);

    // Condition: wait until another process changes shared state.
    let cond = Condition::new().expect("condition");
    let ready = Value::new(0u32).expect("value");
    let mut p = Process::new(producer, (cond.clone(), ready.clone()));
    p.start().expect("start");
    let guard = cond.acquire().expect("acquire");
    let (guard, ok) = cond.wait_for_timeout(guard, Duration::from_secs(30), || ready.get() == 1);
    drop(guard);
    assert!(ok, "the producer never notified");
    println!("condition: the producer set ready = {}", ready.get());
    p.join().expect("join");
}
