//! Twin of "Synchronization between processes" in Python's `multiprocessing`
//! documentation:
//!
//! ```python
//! from multiprocessing import Process, Lock
//!
//! def f(l, i):
//!     l.acquire()
//!     try:
//!         print('hello world', i)
//!     finally:
//!         l.release()
//!
//! if __name__ == '__main__':
//!     lock = Lock()
//!
//!     for num in range(10):
//!         Process(target=f, args=(lock, num)).start()
//! ```
//!
//! The lock travels to each child inside its argument; `acquire` returns a guard that
//! releases the lock when dropped, so there is no `try`/`finally`.
//!
//! Run with `cargo run -p mp-core --example py_lock`.

use mp_core::{Lock, Process};

fn f((l, i): (Lock, u32)) {
    let _guard = l.acquire().expect("acquire");
    println!("hello world {i}");
} // released here

fn main() {
    mp_core::main();

    let lock = Lock::new().expect("lock");
    let mut children = Vec::new();
    for num in 0..10 {
        let mut p = Process::new(f, (lock.clone(), num));
        p.start().expect("start");
        children.push(p);
    }
    // Python joins non-daemon children at exit, and so does mp; joining here also checks
    // that each one succeeded.
    for p in &children {
        p.join().expect("join");
    }
    assert!(!lock.is_locked());
    println!("all 10 children done");
}
