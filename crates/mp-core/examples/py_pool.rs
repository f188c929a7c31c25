//! Twin of "Using a pool of workers" (and the first example, "Introduction") in Python's
//! `multiprocessing` documentation:
//!
//! ```python
//! from multiprocessing import Pool, TimeoutError
//! import time
//! import os
//!
//! def f(x):
//!     return x*x
//!
//! if __name__ == '__main__':
//!     # start 4 worker processes
//!     with Pool(processes=4) as pool:
//!
//!         # print "[0, 1, 4,..., 81]"
//!         print(pool.map(f, range(10)))
//!
//!         # print same numbers in arbitrary order
//!         for i in pool.imap_unordered(f, range(10)):
//!             print(i)
//!
//!         # evaluate "f(20)" asynchronously
//!         res = pool.apply_async(f, (20,))      # runs in *only* one process
//!         print(res.get(timeout=1))             # prints "400"
//!
//!         # evaluate "os.getpid()" asynchronously
//!         res = pool.apply_async(os.getpid, ()) # runs in *only* one process
//!         print(res.get(timeout=1))             # prints the PID of that process
//!
//!         # launching multiple evaluations asynchronously *may* use more processes
//!         multiple_results = [pool.apply_async(os.getpid, ()) for i in range(4)]
//!         print([res.get(timeout=1) for res in multiple_results])
//!
//!         # make a single worker sleep for 10 seconds
//!         res = pool.apply_async(time.sleep, (10,))
//!         try:
//!             print(res.get(timeout=1))
//!         except TimeoutError:
//!             print("We lacked patience and got a multiprocessing.TimeoutError")
//!
//!         print("For the moment, the pool remains available for more work")
//!
//!     # exiting the 'with'-block has stopped the pool
//!     print("Now the pool is closed and no longer available")
//! ```
//!
//! Run with `cargo run -p mp-core --example py_pool`.

use std::time::{Duration, Instant};

use mp_core::{Pool, TaskError};

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
    let second = Duration::from_secs(1);

    // Introduction: `with Pool(5) as p: print(p.map(f, [1, 2, 3]))`
    {
        let p = Pool::new(5).expect("pool");
        println!("{:?}", p.map(f, [1, 2, 3]).expect("map"));
    }

    let stopped;
    {
        // start 4 worker processes; dropping the pool stops it, like leaving `with`.
        let pool = Pool::new(4).expect("pool");

        // print "[0, 1, 4,..., 81]"
        println!("{:?}", pool.map(f, 0..10).expect("map"));

        // print same numbers in arbitrary order (imap reads its input lazily)
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
        println!("{}", res.get_timeout(second).expect("f(20)")); // prints "400"

        // evaluate "os.getpid()" asynchronously
        let res = pool.apply_async(getpid, ()).expect("apply_async");
        let pid = res.get_timeout(second).expect("getpid");
        println!("{pid}"); // prints the PID of that process
        assert!(pool.worker_pids().contains(&pid));

        // launching multiple evaluations asynchronously *may* use more processes
        let multiple_results: Vec<_> = (0..4)
            .map(|_| pool.apply_async(getpid, ()).expect("apply_async"))
            .collect();
        let pids: Vec<u32> = multiple_results
            .iter()
            .map(|r| r.get_timeout(second).expect("getpid"))
            .collect();
        println!("{pids:?}");

        // make a single worker sleep for 10 seconds
        let res = pool.apply_async(sleep, 10).expect("apply_async");
        match res.get_timeout(second) {
            Ok(()) => println!("()"),
            Err(TaskError::Timeout) => {
                println!("We lacked patience and got a TaskError::Timeout")
            }
            Err(e) => panic!("unexpected: {e}"),
        }

        println!("For the moment, the pool remains available for more work");
        assert_eq!(pool.apply(f, 3).expect("apply"), 9);
        stopped = Instant::now();
    } // the pool is dropped: terminated, the sleeping worker included

    // exiting the block has stopped the pool, without waiting for the sleeper
    println!("Now the pool is closed and no longer available");
    assert!(stopped.elapsed() < Duration::from_secs(9));
}
