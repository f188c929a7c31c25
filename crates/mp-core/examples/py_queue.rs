//! Twin of "Exchanging objects between processes: Queues" in Python's `multiprocessing`
//! documentation:
//!
//! ```python
//! from multiprocessing import Process, Queue
//!
//! def f(q):
//!     q.put([42, None, 'hello'])
//!
//! if __name__ == '__main__':
//!     q = Queue()
//!     p = Process(target=f, args=(q,))
//!     p.start()
//!     print(q.get())    # prints "[42, None, 'hello']"
//!     p.join()
//! ```
//!
//! A queue is typed: a Python list of mixed objects becomes a `Vec` of an enum.
//!
//! Run with `cargo run -p mp-core --example py_queue`.

use std::fmt;

use mp_core::{Process, Queue};
use serde::{Deserialize, Serialize};

/// The Python objects this example sends.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
enum Obj {
    Int(i64),
    None,
    Str(String),
}

/// Prints like Python's `repr`.
impl fmt::Debug for Obj {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Obj::Int(i) => write!(f, "{i}"),
            Obj::None => write!(f, "None"),
            Obj::Str(s) => write!(f, "'{s}'"),
        }
    }
}

fn f(q: Queue<Vec<Obj>>) {
    q.put(vec![Obj::Int(42), Obj::None, Obj::Str("hello".into())])
        .expect("put");
}

fn main() {
    mp_core::main();

    let q = Queue::new().expect("queue");
    let mut p = Process::new(f, q.clone());
    p.start().expect("start");
    // No feeder thread: the item is in the queue when `put` returns, so joining the child
    // before reading its items cannot deadlock (a Python pitfall); we read first anyway.
    let item = q.get().expect("get");
    println!("{item:?}");
    p.join().expect("join");
    assert_eq!(format!("{item:?}"), "[42, None, 'hello']");
    assert!(q.empty());
}
