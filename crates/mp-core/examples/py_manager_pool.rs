//! Twin of "Using a pool of workers" in Python's `multiprocessing` documentation, with the
//! pool in a manager's server (`manager.Pool`, the pool of `SyncManager`) instead of in
//! this process:
//!
//! ```python
//! from multiprocessing import Manager, TimeoutError
//! import time
//! import os
//!
//! def f(x):
//!     return x*x
//!
//! if __name__ == '__main__':
//!     with Manager() as manager:
//!         # start 4 worker processes, children of the manager's server
//!         pool = manager.Pool(processes=4)
//!
//!         # print "[0, 1, 4,..., 81]"
//!         print(pool.map(f, range(10)))
//!
//!         # print same numbers in arbitrary order
//!         for i in pool.imap_unordered(f, range(10)):
//!             print(i)
//!
//!         # evaluate "f(20)" asynchronously
//!         res = pool.apply_async(f, (20,))
//!         print(res.get(timeout=1))             # prints "400"
//!
//!         # evaluate "os.getpid()" asynchronously: a worker of the server's pool
//!         res = pool.apply_async(os.getpid, ())
//!         print(res.get(timeout=1))
//!
//!         # make a single worker sleep for 10 seconds
//!         res = pool.apply_async(time.sleep, (10,))
//!         try:
//!             print(res.get(timeout=1))
//!         except TimeoutError:
//!             print("We lacked patience and got a multiprocessing.TimeoutError")
//!
//!         print("For the moment, the pool remains available for more work")
//!         pool.terminate()
//!
//!     # exiting the 'with'-block has stopped the manager, and its pool with it
//!     print("Now the manager and its pool are gone")
//! ```
//!
//! The server runs the functions this program names, so it must be this very executable:
//! `Manager::start` starts it so, and a client running another build is refused.
//!
//! Run with `cargo run -p mp-core --example py_manager_pool`.

use std::time::Duration;

use mp_core::manager::Manager;
use mp_core::TaskError;

fn f(x: u64) -> u64 {
    x * x
}

fn getpid(_: ()) -> u32 {
    std::process::id()
}

fn sleep(secs: u64) {
    std::thread::sleep(Duration::from_secs(secs));
}

fn main() {
    mp_core::main();
    // Python's examples wait one second; a loaded machine gets more here.
    let patient = Duration::from_secs(30);
    {
        // `with Manager() as manager:` — the server stops when `manager` is dropped.
        let manager = Manager::start().expect("start the manager");
        let server = manager.process().and_then(|p| p.pid()).expect("server pid");

        // start 4 worker processes, children of the manager's server
        let pool = manager.pool(4).expect("pool");

        // print "[0, 1, 4,..., 81]"
        println!("{:?}", pool.map(f, 0..10).expect("map"));

        // print same numbers in arbitrary order
        let mut unordered = Vec::new();
        for i in pool.imap_unordered(f, 0..10).expect("imap_unordered") {
            let i = i.expect("task");
            println!("{i}");
            unordered.push(i);
        }
        unordered.sort_unstable();
        assert_eq!(unordered, pool.map(f, 0..10).expect("map"));

        // evaluate "f(20)" asynchronously
        let res = pool.apply_async(f, 20).expect("apply_async");
        println!("{}", res.get_timeout(patient).expect("f(20)")); // prints "400"

        // evaluate "os.getpid()" asynchronously: a worker of the server's pool
        let res = pool.apply_async(getpid, ()).expect("apply_async");
        let pid = res.get_timeout(patient).expect("getpid");
        println!("{pid}");
        assert!(pid != std::process::id() && pid != server);

        // make a single worker sleep for 10 seconds
        let res = pool.apply_async(sleep, 10).expect("apply_async");
        match res.get_timeout(Duration::from_secs(1)) {
            Ok(()) => println!("()"),
            Err(TaskError::Timeout) => {
                println!("We lacked patience and got a TaskError::Timeout")
            }
            Err(e) => panic!("unexpected: {e}"),
        }

        println!("For the moment, the pool remains available for more work");
        assert_eq!(pool.apply(f, 3).expect("apply"), 9);
        pool.terminate().expect("terminate");
    } // the manager is dropped: its server stops, and its pool with it

    println!("Now the manager and its pool are gone");
}
