//! Twin of Python's idiom for sharing a lock with pool workers: the lock goes to each
//! worker's initializer (a `Lock` cannot travel inside a task's arguments in Python; in mp
//! it can, but the idiom works as it does there):
//!
//! ```python
//! from multiprocessing import Pool, Lock
//!
//! def init(l):
//!     global lock
//!     lock = l
//!
//! def f(i):
//!     with lock:
//!         print('hello world', i)
//!
//! if __name__ == '__main__':
//!     l = Lock()
//!     with Pool(initializer=init, initargs=(l,)) as pool:
//!         pool.map(f, range(10))
//! ```
//!
//! The "global" is a `OnceLock` in the worker process.
//!
//! Run with `cargo run -p mp-core --example py_pool_initializer`.

use std::sync::OnceLock;

use mp_core::{Lock, Pool};

static LOCK: OnceLock<Lock> = OnceLock::new();

fn init(l: Lock) {
    let _ = LOCK.set(l);
}

fn f(i: u32) {
    let lock = LOCK.get().expect("the initializer ran");
    let _guard = lock.acquire().expect("acquire");
    println!("hello world {i}");
}

fn main() {
    mp_core::main();

    let l = Lock::new().expect("lock");
    let pool = Pool::builder()
        .processes(4)
        .initializer(init, l.clone())
        .build()
        .expect("pool");
    pool.map(f, 0..10).expect("map");
    pool.close();
    pool.join().expect("join");
    assert!(!l.is_locked());
    println!("all 10 tasks done");
}
