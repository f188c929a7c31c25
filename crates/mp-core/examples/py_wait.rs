//! Twin of the `multiprocessing.connection.wait` example in Python's documentation:
//!
//! ```python
//! from multiprocessing import Process, Pipe, current_process
//! from multiprocessing.connection import wait
//!
//! def foo(w):
//!     for i in range(10):
//!         w.send((i, current_process().name))
//!     w.close()
//!
//! if __name__ == '__main__':
//!     readers = []
//!
//!     for i in range(4):
//!         r, w = Pipe(duplex=False)
//!         readers.append(r)
//!         p = Process(target=foo, args=(w,))
//!         p.start()
//!         # We close the writable end of the pipe now to be sure that
//!         # p is the only process which owns a handle for it.  This
//!         # ensures that when p closes its handle for the writable end,
//!         # wait() will promptly report the readable end as being ready.
//!         w.close()
//!
//!     while readers:
//!         for r in wait(readers):
//!             try:
//!                 msg = r.recv()
//!             except EOFError:
//!                 readers.remove(r)
//!             else:
//!                 print(msg)
//! ```
//!
//! `wait` returns the indices of the ready objects. The writer's parent copy is closed by
//! `start` itself (it moved into the process argument), so there is no `w.close()` to forget.
//!
//! Run with `cargo run -p mp-core --example py_wait`.

use mp_core::{
    current_process, pipe_oneway, wait, ConnectionError, Process, Reader, Waitable, Writer,
};

fn foo(mut w: Writer<(u32, String)>) {
    for i in 0..10 {
        w.send(&(i, current_process().name)).expect("send");
    }
    w.close();
}

fn main() {
    mp_core::main();

    let mut readers: Vec<Reader<(u32, String)>> = Vec::new();
    let mut children = Vec::new();
    for _ in 0..4 {
        let (r, w) = pipe_oneway().expect("pipe");
        readers.push(r);
        let mut p = Process::new(foo, w);
        p.start().expect("start");
        children.push(p);
    }

    let mut received = 0;
    while !readers.is_empty() {
        let ready = {
            let objects: Vec<&dyn Waitable> = readers.iter().map(|r| r as &dyn Waitable).collect();
            wait(&objects, None).expect("wait")
        };
        // Remove from the back so the indices stay valid.
        for &i in ready.iter().rev() {
            match readers[i].recv() {
                Ok(msg) => {
                    println!("{msg:?}");
                    received += 1;
                }
                Err(ConnectionError::Eof) => {
                    readers.remove(i);
                }
                Err(e) => panic!("recv: {e}"),
            }
        }
    }
    for p in &children {
        p.join().expect("join");
    }
    println!("received {received} messages from 4 processes");
    assert_eq!(received, 40);
}
