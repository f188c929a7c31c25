//! A Rust server for a Python client: `mp_core::listener::python::Listener` speaks the wire
//! protocol and authkey handshake of Python's `multiprocessing.connection`, so the plain
//! Python client in `examples/python/echo_client.py` talks to it:
//!
//! ```python
//! from multiprocessing.connection import Client
//! with Client(("127.0.0.1", port), authkey=b"secret") as conn:
//!     conn.send_bytes(b"hello")
//!     print(conn.recv_bytes())      # b'HELLO'
//! ```
//!
//! Run the server, then the client with the address it prints:
//!
//! ```text
//! cargo run -p mp-core --example py_interop_server -- secret
//! python3 crates/mp-core/examples/python/echo_client.py 127.0.0.1:PORT secret hello world
//! ```
//!
//! The server answers each message in upper case until the client says `bye`, then waits
//! for the next client; it stops after `MP_INTEROP_CLIENTS` clients (default: for ever).
//! A client with the wrong key is turned away (and the server goes on).

use std::time::Duration;

use mp_core::listener::python::Listener;
use mp_core::ListenerError;

fn main() {
    mp_core::main();
    let key = std::env::args().nth(1).unwrap_or_else(|| "secret".into());
    let clients: usize = std::env::var("MP_INTEROP_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(usize::MAX);
    let listener =
        Listener::bind(&"127.0.0.1:0".parse().unwrap(), Some(key.as_bytes())).expect("bind");
    println!("listening on {}", listener.address());
    for _ in 0..clients {
        let conn = match listener.accept_timeout(Duration::from_secs(60)) {
            Ok(c) => c,
            Err(ListenerError::Authentication(e)) => {
                println!("refused a client: {e}");
                continue;
            }
            Err(e) => panic!("accept: {e}"),
        };
        println!("client accepted");
        loop {
            let message = conn.recv_bytes().expect("recv_bytes");
            if message == b"bye" {
                println!("client said bye");
                break;
            }
            println!("rust got {:?}", String::from_utf8_lossy(&message));
            conn.send_bytes(&message.to_ascii_uppercase())
                .expect("send_bytes");
        }
    }
}
