//! Twin of the "Listeners and Clients" example in Python's `multiprocessing` documentation:
//!
//! ```python
//! # the server
//! from multiprocessing.connection import Listener
//! from array import array
//!
//! address = ('localhost', 6000)     # family is deduced to be 'AF_INET'
//!
//! with Listener(address, authkey=b'secret password') as listener:
//!     with listener.accept() as conn:
//!         print('connection accepted from', listener.last_accepted)
//!
//!         conn.send([2.25, None, 'junk', float])
//!
//!         conn.send_bytes(b'hello')
//!
//!         conn.send_bytes(array('i', [42, 1729]))
//!
//! # the client
//! from multiprocessing.connection import Client
//! from array import array
//!
//! address = ('localhost', 6000)
//!
//! with Client(address, authkey=b'secret password') as conn:
//!     print(conn.recv())                  # => [2.25, None, 'junk', float]
//!
//!     print(conn.recv_bytes())            # => 'hello'
//!
//!     arr = array('i', [0, 0, 0, 0, 0])
//!     print(conn.recv_bytes_into(arr))    # => 8
//!     print(arr)                          # => array('i', [42, 1729, 0, 0, 0])
//! ```
//!
//! Here the client is a child process, port 0 picks a free port, and the message is a
//! typed tuple (Python sends the type `float` itself; a Rust message carries data only).
//! `listener.last_accepted` does not exist in mp.
//!
//! Run with `cargo run -p mp-core --example py_listener`.

use mp_core::listener::{Address, Client, Listener, ListenerError};
use mp_core::Process;

type Message = (f64, Option<()>, String);

const AUTHKEY: &[u8] = b"secret password";

fn client(address: Address) {
    let conn = Client::connect::<Message>(&address, Some(AUTHKEY)).expect("connect");
    println!("{:?}", conn.recv().expect("recv")); // => (2.25, None, "junk")
    let hello = conn.recv_bytes().expect("recv_bytes");
    println!("{:?}", String::from_utf8_lossy(&hello)); // => "hello"
    let mut arr = [0u8; 5 * 4];
    let n = conn.recv_bytes_into(&mut arr).expect("recv_bytes_into");
    println!("{n}"); // => 8
    let ints: Vec<i32> = arr
        .chunks_exact(4)
        .map(|c| i32::from_ne_bytes(c.try_into().unwrap()))
        .collect();
    println!("{ints:?}"); // => [42, 1729, 0, 0, 0]
    assert_eq!(ints, [42, 1729, 0, 0, 0]);
}

fn main() {
    mp_core::main();

    let address: Address = "127.0.0.1:0".parse().expect("address");
    let listener = Listener::bind(&address, Some(AUTHKEY)).expect("bind");
    let address = listener.address().clone();
    println!("listening on {address}");

    let mut p = Process::new(client, address.clone());
    p.start().expect("start the client");
    let conn = listener.accept::<Message>().expect("accept");
    println!("connection accepted");
    conn.send(&(2.25, None, "junk".to_string())).expect("send");
    conn.send_bytes(b"hello").expect("send_bytes");
    let arr: Vec<u8> = [42i32, 1729].iter().flat_map(|x| x.to_ne_bytes()).collect();
    conn.send_bytes(&arr).expect("send_bytes");
    p.join().expect("the client succeeded");

    // A client with the wrong key is refused; the listener keeps serving.
    let wrong = std::thread::spawn(move || Client::connect::<Message>(&address, Some(b"wrong")));
    let accepted = listener.accept::<Message>();
    assert!(matches!(accepted, Err(ListenerError::Authentication(_))));
    let refused = wrong.join().unwrap().expect_err("wrong key");
    println!("wrong key refused: {refused}");
}
