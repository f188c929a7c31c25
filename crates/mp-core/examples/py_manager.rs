//! Twin of "Sharing state between processes: Server process" in Python's
//! `multiprocessing` documentation:
//!
//! ```python
//! from multiprocessing import Process, Manager
//!
//! def f(d, l):
//!     d[1] = '1'
//!     d['2'] = 2
//!     d[0.25] = None
//!     l.reverse()
//!
//! if __name__ == '__main__':
//!     with Manager() as manager:
//!         d = manager.dict()
//!         l = manager.list(range(10))
//!
//!         p = Process(target=f, args=(d, l))
//!         p.start()
//!         p.join()
//!
//!         print(d)
//!         print(l)
//! ```
//!
//! Proxies are typed: a dict with keys and values of mixed types becomes a
//! `DictProxy<Obj, Obj>` over an enum.
//!
//! Run with `cargo run -p mp-core --example py_manager`.

use std::fmt;

use mp_core::manager::{DictProxy, ListProxy, Manager};
use mp_core::Process;
use serde::{Deserialize, Serialize};

/// The Python objects this example stores.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
enum Obj {
    Int(i64),
    Float(f64),
    None,
    Str(String),
}

/// Prints like Python's `repr`.
impl fmt::Debug for Obj {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Obj::Int(i) => write!(f, "{i}"),
            Obj::Float(x) => write!(f, "{x}"),
            Obj::None => write!(f, "None"),
            Obj::Str(s) => write!(f, "'{s}'"),
        }
    }
}

fn f((d, l): (DictProxy<Obj, Obj>, ListProxy<i64>)) {
    d.set(&Obj::Int(1), &Obj::Str("1".into())).expect("d[1]");
    d.set(&Obj::Str("2".into()), &Obj::Int(2)).expect("d['2']");
    d.set(&Obj::Float(0.25), &Obj::None).expect("d[0.25]");
    l.reverse().expect("reverse");
}

fn main() {
    mp_core::main();

    // `with Manager() as manager:` — the server process stops when `manager` is dropped.
    let manager = Manager::start().expect("start the manager");
    let d = manager.dict::<Obj, Obj>().expect("dict");
    let l = manager.list(&(0..10).collect::<Vec<i64>>()).expect("list");

    let mut p = Process::new(f, (d.clone(), l.clone()));
    p.start().expect("start");
    p.join().expect("join");

    let items = d.items().expect("items");
    let shown: Vec<String> = items.iter().map(|(k, v)| format!("{k:?}: {v:?}")).collect();
    println!("{{{}}}", shown.join(", "));
    let list = l.to_vec().expect("list");
    println!("{list:?}");
    assert_eq!(list, [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]);
    assert_eq!(d.get(&Obj::Float(0.25)).expect("get"), Some(Obj::None));
    assert_eq!(d.len().expect("len"), 3);
}
