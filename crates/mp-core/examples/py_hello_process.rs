//! Twin of the first examples of Python's `multiprocessing` documentation, "The `Process`
//! class":
//!
//! ```python
//! from multiprocessing import Process
//! import os
//!
//! def info(title):
//!     print(title)
//!     print('module name:', __name__)
//!     print('parent process:', os.getppid())
//!     print('process id:', os.getpid())
//!
//! def f(name):
//!     info('function f')
//!     print('hello', name)
//!
//! if __name__ == '__main__':
//!     info('main line')
//!     p = Process(target=f, args=('bob',))
//!     p.start()
//!     p.join()
//! ```
//!
//! Run with `cargo run -p mp-core --example py_hello_process`.

use mp_core::{current_process, parent_process, Process};

fn info(title: &str) {
    println!("{title}");
    println!("module name: {}", module_path!());
    // `os.getppid()`: mp also knows its parent (`parent_process()`, `None` in the main
    // process); in a child the two agree.
    #[cfg(unix)]
    println!("parent process: {}", std::os::unix::process::parent_id());
    if let Some(parent) = parent_process() {
        println!("parent process (mp): {} ({})", parent.pid, parent.name);
    }
    println!("process id: {}", std::process::id());
}

/// The target: a `fn` item taking one serde argument (use a tuple or a struct for several).
fn f(name: String) {
    info("function f");
    // The child checks that it knows who started it.
    let parent = parent_process().expect("a child has a parent");
    #[cfg(unix)]
    assert_eq!(parent.pid, std::os::unix::process::parent_id());
    assert_ne!(parent.pid, std::process::id());
    assert_eq!(current_process().name, "Process-1");
    println!("hello {name}");
}

fn main() {
    // The counterpart of `if __name__ == '__main__':`: in a child this runs `f` and exits.
    mp_core::main();

    info("main line");
    let mut p = Process::new(f, "bob".to_string());
    p.start().expect("start the child");
    let pid = p.pid().expect("started");
    // `join` is an error if the child failed (a panic comes back with its backtrace).
    p.join().expect("the child succeeded");
    println!(
        "child {pid} exited with code {:?}",
        p.exitcode().expect("joined")
    );
}
