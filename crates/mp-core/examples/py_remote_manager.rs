//! Twin of "Using a remote manager" in Python's `multiprocessing` documentation. There,
//! three programs run on different hosts:
//!
//! ```python
//! # the server
//! from multiprocessing.managers import BaseManager
//! from queue import Queue
//! queue = Queue()
//! class QueueManager(BaseManager): pass
//! QueueManager.register('get_queue', callable=lambda:queue)
//! m = QueueManager(address=('', 50000), authkey=b'abracadabra')
//! s = m.get_server()
//! s.serve_forever()
//!
//! # one client puts
//! from multiprocessing.managers import BaseManager
//! class QueueManager(BaseManager): pass
//! QueueManager.register('get_queue')
//! m = QueueManager(address=('foo.bar.org', 50000), authkey=b'abracadabra')
//! m.connect()
//! queue = m.get_queue()
//! queue.put('hello')
//!
//! # another client gets
//! ...
//! queue = m.get_queue()
//! queue.get()    # 'hello'
//! ```
//!
//! Here they are three processes talking TCP over 127.0.0.1 (port 0: any free port). The
//! server is a [`Server`] serving forever; the queue is created in it and *published* under
//! the name `get_queue` (the counterpart of `register('get_queue', callable=...)`); each
//! client knows only the address, the key and that name. See also `remote_manager.rs` for
//! a command-line version that really runs on two hosts.
//!
//! Run with `cargo run -p mp-core --example py_remote_manager`.

use mp_core::listener::Address;
use mp_core::manager::{Builtins, Manager, QueueProxy, Server};
use mp_core::{Process, Writer};

const AUTHKEY: &[u8] = b"abracadabra";

/// The server host: bind, say where, serve until a client asks for shutdown.
fn server((address, report): (Address, Writer<Address>)) {
    let s = Server::bind::<Builtins>(&address, AUTHKEY).expect("bind");
    report.send(s.address()).expect("report the address");
    drop(report);
    s.serve_forever().expect("serve");
}

/// The first client: `queue = m.get_queue(); queue.put('hello')`.
fn putter(address: Address) {
    let m = Manager::connect(&address, AUTHKEY).expect("connect");
    let queue: QueueProxy<String> = m.lookup("get_queue").expect("lookup").expect("published");
    queue.put(&"hello".to_string()).expect("put");
    println!("putter {}: put 'hello'", std::process::id());
}

/// The second client: `queue.get()`.
fn getter(address: Address) {
    let m = Manager::connect(&address, AUTHKEY).expect("connect");
    let queue: QueueProxy<String> = m.lookup("get_queue").expect("lookup").expect("published");
    let item = queue.get().expect("get");
    println!("getter {}: got '{item}'", std::process::id());
    assert_eq!(item, "hello");
}

fn main() {
    mp_core::main();

    // The server host. Bind 0.0.0.0 to be reached from other hosts (and tunnel the traffic:
    // it is authenticated, not encrypted).
    let (rx, tx) = mp_core::pipe_oneway::<Address>().expect("pipe");
    let mut srv = Process::new(server, ("127.0.0.1:0".parse().expect("address"), tx));
    srv.start().expect("start the server");
    let address = rx.recv().expect("the server's address");
    println!("manager serving on {address}");

    // Set up the shared queue in the server, under a name.
    let mut admin = Manager::connect(&address, AUTHKEY).expect("connect");
    let queue = admin.queue::<String>(0).expect("queue");
    admin.publish("get_queue", &queue).expect("publish");
    drop(queue); // the server keeps a published object alive

    // A wrong key is refused (Python's AuthenticationError).
    let refused = Manager::connect(&address, b"wrong key").expect_err("wrong key");
    assert!(refused.is_authentication());
    println!("a client with the wrong authkey was refused: {refused}");

    // Targets are fn items (zero-sized), so each client gets its own `Process::new`.
    let mut first = Process::new(putter, address.clone());
    first.start().expect("start the putter");
    first.join().expect("the putter succeeded");
    let mut second = Process::new(getter, address.clone());
    second.start().expect("start the getter");
    second.join().expect("the getter succeeded");

    // Stop the server (Python's server runs until killed).
    admin.shutdown().expect("shutdown");
    srv.join().expect("the server exited cleanly");
    println!("server stopped");
}
