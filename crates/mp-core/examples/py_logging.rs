//! Twin of "Logging" in Python's `multiprocessing` documentation:
//!
//! ```python
//! >>> import multiprocessing, logging
//! >>> logger = multiprocessing.log_to_stderr()
//! >>> logger.setLevel(logging.INFO)
//! >>> logger.warning('doomed')
//! [WARNING/MainProcess] doomed
//! >>> m = multiprocessing.Manager()
//! [INFO/SyncManager-...] child process calling self.run()
//! [INFO/SyncManager-...] manager serving at '/.../listener-...'
//! >>> del m
//! [INFO/SyncManager-...] manager exiting with exitcode 0
//! ```
//!
//! mp's records go through the `log` facade; `log_to_stderr` prints them as Python does,
//! and spawned children inherit it. `forward_child_logs` goes further than the Python
//! example: the children's records (their own `log::info!` too) come back to this process,
//! which prints them with the child's name.
//!
//! Run with `cargo run -p mp-core --example py_logging`.

use mp_core::logging::{forward_child_logs, log_to_stderr, LevelFilter};
use mp_core::manager::Manager;
use mp_core::Process;

fn worker(i: u32) {
    log::info!("worker {i} says hello through log::info!");
    mp_core::logging::get_logger().warning(format!("worker {i} is done"));
}

fn main() {
    mp_core::main();

    let logger = log_to_stderr(None);
    logger.set_level(LevelFilter::Info);
    logger.warning("doomed");

    // The manager's server is a spawned child: it inherits log_to_stderr and prints its own
    // records.
    let m = Manager::start().expect("manager");
    drop(m);

    // From here on, children send their records to this process, which prints them.
    forward_child_logs(None);
    let mut p = Process::new(worker, 1);
    p.start().expect("start");
    p.join().expect("join");
    println!("done");
}
