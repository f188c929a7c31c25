//! Twin of "Contexts and start methods" in Python's `multiprocessing` documentation:
//!
//! ```python
//! import multiprocessing as mp
//!
//! def foo(q):
//!     q.put('hello')
//!
//! if __name__ == '__main__':
//!     mp.set_start_method('spawn')
//!     q = mp.Queue()
//!     p = mp.Process(target=foo, args=(q,))
//!     p.start()
//!     print(q.get())
//!     p.join()
//! ```
//!
//! and its `get_context` variant, here run once for every start method of the platform.
//!
//! Run with `cargo run -p mp-core --example py_contexts`.

use mp_core::{
    get_all_start_methods, get_context, get_start_method, set_start_method, Process, Queue,
    StartMethod,
};

fn foo(q: Queue<String>) {
    q.put(format!("hello from {}", mp_core::current_process().name))
        .expect("put");
}

fn main() {
    mp_core::main();

    // `mp.set_start_method('spawn')`: the default for every process without a context. As in
    // Python, changing it again to another method needs `force`.
    set_start_method(StartMethod::Spawn, false).expect("set the start method");
    println!("default start method: {}", get_start_method().name());
    let q = Queue::new().expect("queue");
    let mut p = Process::new(foo, q.clone());
    p.start().expect("start");
    println!("{}", q.get().expect("get"));
    p.join().expect("join");

    // `ctx = mp.get_context(method)`: a start method for some processes only.
    let methods = get_all_start_methods();
    println!(
        "available start methods: {:?}",
        methods.iter().map(|m| m.name()).collect::<Vec<_>>()
    );
    for method in methods {
        let ctx = get_context(method).expect("an available method");
        let q = Queue::new().expect("queue");
        let mut p = ctx.process(foo, q.clone());
        p.start().expect("start");
        println!("{}: {}", ctx.start_method().name(), q.get().expect("get"));
        p.join().expect("join");
    }

    // Only under fork can a target capture its environment (Python's fork passes
    // everything implicitly; here that is `Process::from_closure`).
    #[cfg(unix)]
    {
        let greeting = String::from("hello from a closure");
        let q = Queue::<String>::new().expect("queue");
        let q2 = q.clone();
        let mut p = Process::from_closure(move || q2.put(greeting).expect("put"))
            .with_context(get_context(StartMethod::Fork).expect("fork on Unix"));
        p.start().expect("start");
        println!("fork: {}", q.get().expect("get"));
        p.join().expect("join");
    }

    // A method this platform lacks is an error, not a crash.
    if let Err(e) = get_context(StartMethod::ForkServer) {
        println!("no fork server here: {e}");
    }
    println!("done");
}
