//! Pipe and connection behaviours (CONN-* of the CPython checklist), with real child
//! processes under every start method, real socket pairs, and outer time bounds.

mod common;

use std::time::Duration;

use common::{about, bounded, for_each_context, prompt, LONG};

use mp_core::{pipe, pipe_oneway, wait, Connection, ConnectionError, Process, Reader, Writer};

const SECS: Duration = Duration::from_secs(10);

fn echo_values(conn: Connection<(i32, f64, Option<()>)>) {
    while let Ok(v) = conn.recv() {
        conn.send(&v).unwrap();
    }
}

fn echo_bytes(conn: Connection<()>) {
    while let Ok(b) = conn.recv_bytes() {
        conn.send_bytes(&b).unwrap();
    }
}

#[test]
fn conn_01_values_and_bytes_round_trip() {
    for_each_context(30, |ctx| {
        let (a, b) = pipe().unwrap();
        let mut p = ctx.process(echo_values, b);
        p.start().unwrap();
        a.send(&(1, 2.25, None)).unwrap();
        assert_eq!(a.recv_timeout(SECS).unwrap(), (1, 2.25, None));
        drop(a);
        p.join().unwrap();

        let (a, b) = pipe::<()>().unwrap();
        let mut p = ctx.process(echo_bytes, b);
        p.start().unwrap();
        for msg in [&b"abc"[..], b"", &[0u8, 255, 7]] {
            a.send_bytes(msg).unwrap();
            assert_eq!(a.recv_bytes_timeout(SECS).unwrap(), msg);
        }
        drop(a);
        p.join().unwrap();
    });
}

#[test]
fn conn_02_recv_bytes_into_and_buffer_too_short() {
    let (a, b) = pipe::<()>().unwrap();
    let payload: Vec<u8> = [1i32, 2, 3, 4]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    a.send_bytes(&payload).unwrap();
    let mut buf = [0xAAu8; 40];
    assert_eq!(b.recv_bytes_into(&mut buf).unwrap(), 16);
    assert_eq!(&buf[..16], &payload[..]);
    assert!(
        buf[16..].iter().all(|&x| x == 0xAA),
        "the rest of the buffer is untouched"
    );
    // At an offset.
    a.send_bytes(&payload).unwrap();
    let mut buf = [0u8; 40];
    assert_eq!(b.recv_bytes_into(&mut buf[12..]).unwrap(), 16);
    assert_eq!(&buf[12..28], &payload[..]);
    // Too short: the error owns the whole message.
    let long = vec![7u8; 110];
    a.send_bytes(&long).unwrap();
    let mut small = [0u8; 40];
    match b.recv_bytes_into(&mut small) {
        Err(ConnectionError::BufferTooShort { message, capacity }) => {
            assert_eq!(message, long);
            assert_eq!(capacity, 40);
        }
        other => panic!("expected BufferTooShort, got {other:?}"),
    }
    // And the connection goes on.
    a.send_bytes(b"next").unwrap();
    assert_eq!(b.recv_bytes().unwrap(), b"next");
}

#[test]
fn conn_03_poll_timing() {
    bounded(30, || {
        let (a, b) = pipe::<u32>().unwrap();
        prompt("poll(0)", || assert!(!b.poll(Duration::ZERO).unwrap()));
        about("poll(100ms)", Duration::from_millis(100), || {
            assert!(!b.poll(Duration::from_millis(100)).unwrap())
        });
        about("recv_timeout(100ms)", Duration::from_millis(100), || {
            assert!(matches!(
                b.recv_timeout(Duration::from_millis(100)),
                Err(ConnectionError::Timeout)
            ))
        });
        a.send(&5).unwrap();
        prompt("poll(LONG) with data", || assert!(b.poll(LONG).unwrap()));
        assert_eq!(b.recv().unwrap(), 5);
    });
}

fn send_big(arg: (usize, Writer<()>)) {
    let msg: Vec<u8> = (0..arg.0).map(|i| (i % 251) as u8).collect();
    arg.1.send_bytes(&msg).unwrap();
}

#[test]
fn conn_04_a_16_mib_message_arrives_intact() {
    for_each_context(60, |ctx| {
        let n = 16 << 20;
        let (rx, tx) = pipe_oneway::<()>().unwrap();
        let mut p = ctx.process(send_big, (n, tx));
        p.start().unwrap();
        let got = rx.recv_bytes_timeout(SECS).unwrap();
        assert_eq!(got.len(), n);
        assert!(got.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
        p.join().unwrap();
    });
}

fn hold_and_exit(conn: Connection<u8>) {
    drop(conn);
}

#[test]
fn conn_05_06_a_closed_peer_is_eof_not_a_hang() {
    for_each_context(30, |ctx| {
        let (a, b) = pipe::<u8>().unwrap();
        let mut p = ctx.process(hold_and_exit, b);
        p.start().unwrap();
        p.join().unwrap();
        // End of stream comes when the last copy of `b` closes. Under fork, a child that
        // another test of this binary forks meanwhile holds a copy until it exits (as in
        // Python), so the end is waited for, not expected at once.
        assert!(
            a.poll(LONG).unwrap(),
            "no end of stream after the peer exited"
        );
        assert!(matches!(a.recv(), Err(ConnectionError::Eof)));
        assert!(matches!(a.recv_bytes(), Err(ConnectionError::Eof)));
        assert!(matches!(a.send(&1), Err(ConnectionError::BrokenPipe)));
        assert!(!a.is_closed());
    });
    // A locally closed end.
    let (mut a, _b) = pipe::<u8>().unwrap();
    a.close();
    assert!(a.is_closed());
    assert!(matches!(a.send(&1), Err(ConnectionError::Closed)));
    assert!(matches!(a.recv(), Err(ConnectionError::Closed)));
    assert!(matches!(
        a.poll(Duration::ZERO),
        Err(ConnectionError::Closed)
    ));
    a.close();
}

#[test]
fn conn_07_one_way_pipes() {
    let (rx, tx) = pipe_oneway::<String>().unwrap();
    tx.send(&"one way".into()).unwrap();
    assert_eq!(rx.recv().unwrap(), "one way");
    // `rx.send` and `tx.recv` do not exist: misuse does not compile.
}

fn upper_echo(conn: Connection<String>) {
    while let Ok(s) = conn.recv() {
        conn.send(&s.to_uppercase()).unwrap();
    }
}

#[test]
fn conn_08_parent_closes_the_childs_end_at_once() {
    // The child's end is moved into the process and closed here right after start.
    for_each_context(30, |ctx| {
        let (a, b) = pipe::<String>().unwrap();
        let mut p = ctx.process(upper_echo, b);
        p.start().unwrap();
        a.send(&"hello".into()).unwrap();
        assert_eq!(a.recv_timeout(SECS).unwrap(), "HELLO");
        drop(a);
        p.join().unwrap();
    });
}

fn send_sequence(tx: Writer<()>) {
    for m in ["hello", "", "a", "b", "", "bye", "", "lop"] {
        tx.send_bytes(m.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn conn_12_empty_messages_are_messages() {
    let (a, b) = pipe::<()>().unwrap();
    a.send_bytes(b"").unwrap();
    for _ in 0..3 {
        assert!(b.poll(Duration::ZERO).unwrap(), "polling consumes nothing");
    }
    assert_eq!(b.recv_bytes().unwrap(), b"");
    for_each_context(30, |ctx| {
        let (rx, tx) = pipe_oneway::<()>().unwrap();
        let mut p = ctx.process(send_sequence, tx);
        p.start().unwrap();
        let got: Vec<String> = (0..8)
            .map(|_| String::from_utf8(rx.recv_bytes_timeout(SECS).unwrap()).unwrap())
            .collect();
        assert_eq!(got, ["hello", "", "a", "b", "", "bye", "", "lop"]);
        p.join().unwrap();
    });
}

fn poll_shared(rx: Reader<()>) {
    let _ = rx.poll(Duration::from_secs(5));
}

#[test]
fn conn_13_a_polling_child_does_not_split_messages() {
    for_each_context(30, |ctx| {
        let (rx, tx) = pipe_oneway::<()>().unwrap();
        let mut p = ctx.process(poll_shared, rx.try_clone().unwrap());
        p.start().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        tx.send_bytes(&[1u8; 1000]).unwrap();
        tx.send_bytes(&[2u8; 2000]).unwrap();
        p.join().unwrap();
        let m = rx.recv_bytes_timeout(SECS).unwrap();
        assert!(
            m == vec![1u8; 1000] || m == vec![2u8; 2000],
            "a whole message, got {} bytes",
            m.len()
        );
    });
}

#[test]
fn conn_14_messages_are_not_merged() {
    let (a, b) = pipe::<()>().unwrap();
    for m in [&b"a"[..], b"b", b"cd"] {
        a.send_bytes(m).unwrap();
    }
    for m in [&b"a"[..], b"b", b"cd"] {
        assert!(b.poll(Duration::from_secs(1)).unwrap());
        assert!(b.poll(Duration::ZERO).unwrap());
        assert_eq!(b.recv_bytes().unwrap(), m);
    }
    assert!(!b.poll(Duration::ZERO).unwrap());
}

fn reply_after(arg: (u64, Writer<u64>)) {
    std::thread::sleep(Duration::from_millis(arg.0));
    arg.1.send(&arg.0).unwrap();
}

/// Sends `arg.0` once told to (a message on `arg.1`): what is ready before that is decided by
/// the test, not by how long a sleep lasts on a loaded machine.
fn reply_when_told(arg: (u64, Reader<()>, Writer<u64>)) {
    arg.1.recv().unwrap();
    arg.2.send(&arg.0).unwrap();
}

#[test]
fn wait_over_connections_and_sentinels() {
    for_each_context(30, |ctx| {
        let (rx1, tx1) = pipe_oneway::<u64>().unwrap();
        let (rx2, tx2) = pipe_oneway::<u64>().unwrap();
        let (go_rx, go_tx) = pipe_oneway::<()>().unwrap();
        let mut p1 = ctx.process(reply_after, (50, tx1));
        let mut p2 = ctx.process(reply_when_told, (400, go_rx, tx2));
        p1.start().unwrap();
        p2.start().unwrap();
        let ready = wait(&[&rx1, &rx2], Some(SECS)).unwrap();
        assert_eq!(ready, vec![0]);
        assert_eq!(rx1.recv().unwrap(), 50);
        p1.join().unwrap();
        let s2 = p2.sentinel().unwrap();
        go_tx.send(&()).unwrap();
        let ready = wait(&[&s2, &rx2], Some(SECS)).unwrap();
        assert!(ready.contains(&1), "{ready:?}");
        // A writer gone is end of file: ready too.
        assert_eq!(
            wait(&[&rx1], Some(Duration::from_millis(20))).unwrap(),
            vec![0]
        );
        let (idle, _keep) = pipe::<u8>().unwrap();
        assert!(wait(&[&idle], Some(Duration::from_millis(20)))
            .unwrap()
            .is_empty());
        p2.join().unwrap();
        assert!(wait(&[&s2], Some(Duration::ZERO)).unwrap() == vec![0]);
    });
}

/// Connects to `address` from a child and writes one byte once told to (a message on
/// `arg.1`; it was a 300 ms sleep, which a loaded machine outlasted between the parent's
/// accept and its check that nothing had arrived yet).
fn tcp_write_when_told(arg: (std::net::SocketAddr, Reader<()>)) {
    let mut s = std::net::TcpStream::connect(arg.0).unwrap();
    arg.1.recv().unwrap();
    std::io::Write::write_all(&mut s, b"x").unwrap();
}

/// Python's `wait` takes sockets too: a listening socket is ready when a client waits to
/// be accepted, a stream when a read would not block (end of stream included), and they
/// mix with connections.
#[test]
fn wait_over_tcp_sockets() {
    for_each_context(30, |ctx| {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (idle, _keep) = pipe::<u8>().unwrap();
        let short = Some(Duration::from_millis(30));
        assert!(wait(&[&listener, &idle], short).unwrap().is_empty());
        let (go_rx, go_tx) = pipe_oneway::<()>().unwrap();
        let mut p = ctx.process(tcp_write_when_told, (listener.local_addr().unwrap(), go_rx));
        p.start().unwrap();
        assert_eq!(wait(&[&idle, &listener], Some(SECS)).unwrap(), vec![1]);
        let (stream, _) = listener.accept().unwrap();
        assert!(wait(&[&stream], short).unwrap().is_empty());
        go_tx.send(&()).unwrap();
        assert_eq!(wait(&[&idle, &stream], Some(SECS)).unwrap(), vec![1]);
        let mut byte = [0u8; 1];
        std::io::Read::read_exact(&mut &stream, &mut byte).unwrap();
        p.join().unwrap();
        // The child is gone and its socket closed: end of stream is ready too.
        assert_eq!(wait(&[&stream], Some(SECS)).unwrap(), vec![0]);
    });
}

#[test]
fn wait_is_not_limited_to_64_objects() {
    let pipes: Vec<_> = (0..200).map(|_| pipe::<u8>().unwrap()).collect();
    pipes[150].1.send(&1).unwrap();
    pipes[7].1.send(&1).unwrap();
    let ends: Vec<&dyn mp_core::Waitable> = pipes
        .iter()
        .map(|(a, _)| a as &dyn mp_core::Waitable)
        .collect();
    assert_eq!(
        wait(&ends, Some(Duration::from_secs(1))).unwrap(),
        vec![7, 150]
    );
    let mut closed = pipe::<u8>().unwrap().0;
    closed.close();
    assert!(matches!(
        wait(&[&closed], Some(Duration::ZERO)),
        Err(mp_core::WaitError::Closed(0))
    ));
}

#[test]
fn a_connection_serialized_outside_mp_is_refused() {
    let (a, _b) = pipe::<u8>().unwrap();
    assert!(
        postcard::to_stdvec(&a).is_err(),
        "a handle means nothing outside mp's transfer"
    );
    let _ = Process::new(hold_and_exit, a);
}

/// Receives a file handle and writes through it.
fn write_through_received_file(conn: Connection<mp_core::OsHandle>) {
    let mut file = std::fs::File::from(conn.recv().unwrap());
    std::io::Write::write_all(&mut file, b"foo").unwrap();
    conn.send_bytes(b"done").unwrap();
}

#[test]
fn conn_17_a_file_handle_travels_over_a_connection() {
    for_each_context(30, |ctx| {
        common::file_handle_round_trip(ctx, write_through_received_file, "plain")
    });
    // A message without the handle it needs is an error, not garbage.
    let (a, b) = pipe::<mp_core::OsHandle>().unwrap();
    a.send_bytes(&[0]).unwrap(); // index 0, but no handle attached
    assert!(matches!(b.recv(), Err(ConnectionError::Decode(_))));
}

/// Gets one end of a one-way pipe over a connection and uses it.
fn use_received_ends(conn: Connection<(mp_core::Writer<String>, mp_core::Reader<String>)>) {
    let (writer, reader) = conn.recv().unwrap();
    writer.send(&"all is well".to_string()).unwrap();
    let s = reader.recv().unwrap();
    writer.send(&s.repeat(2)).unwrap();
}

#[test]
fn conn_18_connections_travel_over_connections() {
    for_each_context(30, |ctx| {
        let (a, b) = pipe().unwrap();
        let mut p = ctx.process(use_received_ends, b);
        p.start().unwrap();
        let (from_child, to_parent) = mp_core::pipe_oneway::<String>().unwrap();
        let (from_parent, to_child) = mp_core::pipe_oneway::<String>().unwrap();
        a.send(&(to_parent, from_parent)).unwrap();
        assert_eq!(from_child.recv_timeout(SECS).unwrap(), "all is well");
        to_child.send(&"foobar".to_string()).unwrap();
        assert_eq!(from_child.recv_timeout(SECS).unwrap(), "foobarfoobar");
        p.join().unwrap();
    });
}

fn send_later(w: Writer<u8>) {
    std::thread::sleep(Duration::from_millis(100));
    w.send(&7).unwrap();
}

/// Python's `poll(None)`: waits without limit for a message, and for end of file.
#[test]
fn poll_forever_waits_for_a_message_and_for_eof() {
    for_each_context(30, |ctx| {
        let (r, w) = pipe_oneway::<u8>().unwrap();
        let mut p = ctx.process(send_later, w);
        p.start().unwrap();
        r.poll_forever().unwrap();
        assert_eq!(r.recv().unwrap(), 7);
        p.join().unwrap();
        // The writer is gone: poll_forever returns (end of file), recv says so.
        r.poll_forever().unwrap();
        assert!(matches!(r.recv(), Err(ConnectionError::Eof)));
    });
}
