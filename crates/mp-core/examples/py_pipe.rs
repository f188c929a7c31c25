//! Twin of "Exchanging objects between processes: Pipes" in Python's `multiprocessing`
//! documentation:
//!
//! ```python
//! from multiprocessing import Process, Pipe
//!
//! def f(conn):
//!     conn.send([42, None, 'hello'])
//!     conn.close()
//!
//! if __name__ == '__main__':
//!     parent_conn, child_conn = Pipe()
//!     p = Process(target=f, args=(child_conn,))
//!     p.start()
//!     print(parent_conn.recv())   # prints "[42, None, 'hello']"
//!     p.join()
//! ```
//!
//! followed by the `Connection` objects example (`send_bytes`, `recv_bytes`,
//! `recv_bytes_into` with an `array('i')`) and a `Pipe(duplex=False)`.
//!
//! Run with `cargo run -p mp-core --example py_pipe`.

use std::fmt;
use std::time::Duration;

use mp_core::{pipe, pipe_oneway, Connection, ConnectionError, Process, Writer};
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

fn f(mut conn: Connection<Vec<Obj>>) {
    conn.send(&vec![Obj::Int(42), Obj::None, Obj::Str("hello".into())])
        .expect("send");
    conn.close();
}

fn count_to(w: Writer<u32>) {
    for i in 1..=3 {
        w.send(&i).expect("send");
    }
}

fn main() {
    mp_core::main();

    // Pipe(): two duplex ends, typed by what they carry.
    let (parent_conn, child_conn) = pipe::<Vec<Obj>>().expect("pipe");
    let mut p = Process::new(f, child_conn); // the parent's copy of child_conn is closed
    p.start().expect("start");
    let got = parent_conn.recv().expect("recv");
    println!("{got:?}");
    p.join().expect("join");
    assert_eq!(format!("{got:?}"), "[42, None, 'hello']");
    // The child closed its end: reading again is end of file (Python's EOFError).
    assert!(matches!(parent_conn.recv(), Err(ConnectionError::Eof)));

    // The `Connection` objects example.
    let (a, b) = pipe::<Vec<Obj>>().expect("pipe");
    a.send(&vec![Obj::Int(1), Obj::Str("hello".into()), Obj::None])
        .expect("send");
    println!("{:?}", b.recv().expect("recv"));
    b.send_bytes(b"thank you").expect("send_bytes");
    let bytes = a.recv_bytes().expect("recv_bytes");
    println!("b{:?}", String::from_utf8_lossy(&bytes));
    // array('i', range(5)) sent as bytes, received into array('i', [0] * 10).
    let arr1: Vec<i32> = (0..5).collect();
    let raw: Vec<u8> = arr1.iter().flat_map(|x| x.to_ne_bytes()).collect();
    a.send_bytes(&raw).expect("send_bytes");
    let mut buf = [0u8; 10 * 4];
    let count = b.recv_bytes_into(&mut buf).expect("recv_bytes_into");
    assert_eq!(count, arr1.len() * std::mem::size_of::<i32>());
    let arr2: Vec<i32> = buf
        .chunks_exact(4)
        .map(|c| i32::from_ne_bytes(c.try_into().unwrap()))
        .collect();
    println!("received {count} bytes: {arr2:?}");
    assert_eq!(arr2, [0, 1, 2, 3, 4, 0, 0, 0, 0, 0]);
    // poll(timeout): nothing is waiting now.
    assert!(!b.poll(Duration::from_millis(10)).expect("poll"));

    // Pipe(duplex=False): a reader and a writer; sending on the reader does not compile.
    let (reader, writer) = pipe_oneway::<u32>().expect("pipe");
    let mut p = Process::new(count_to, writer);
    p.start().expect("start");
    let mut got = Vec::new();
    while let Ok(i) = reader.recv() {
        got.push(i);
    }
    p.join().expect("join");
    println!("one-way pipe carried {got:?}, then end of file");
    assert_eq!(got, [1, 2, 3]);
}
