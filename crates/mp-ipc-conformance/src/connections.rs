//! The behaviour every transport must show once `mp-core` builds on it: typed connections
//! and queues between real child processes under every start method, `wait`, connections
//! inside messages, crashes. Generic over the transport; [`connection_suite!`] makes a
//! `#[test]` of each (`mp-core`'s tests run it for `socket` and, with the feature, `shm`).
//! Outer time bounds everywhere.
//!
//! [`connection_suite!`]: crate::connection_suite

use std::time::{Duration, Instant};

use crate::support::{about, hang_scale, prompt, LONG};

use mp_core::connection::{pipe_oneway_with, pipe_with, Transport};
use mp_core::{
    wait, Connection, ConnectionError, Context, GetError, JoinableQueue, PutError, Queue, Reader,
    SimpleQueue, Writer,
};

/// A receive's timeout in these tests: a bound for a hang (scaled as the tests' bounds
/// are, for slow builds such as the sanitizers'), never a measure of speed.
fn secs() -> Duration {
    Duration::from_secs(10 * hang_scale())
}

fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

fn echo_values(conn: Connection<(u32, String, Vec<u64>)>) {
    while let Ok(v) = conn.recv() {
        conn.send(&v).unwrap();
    }
}

fn echo_bytes(conn: Connection<()>) {
    while let Ok(b) = conn.recv_bytes() {
        conn.send_bytes(&b).unwrap();
    }
}

fn send_big(arg: (usize, Writer<()>)) {
    arg.1.send_bytes(&payload(arg.0)).unwrap();
}

fn hold_and_exit(conn: Connection<u8>) {
    drop(conn);
}

fn exit_holding(_conn: Connection<u8>) {
    std::thread::sleep(Duration::from_millis(300));
    // Exits without dropping the connection: only the system closes its handles, as after
    // a crash.
    std::process::exit(0);
}

fn send_sequence(tx: Writer<()>) {
    for m in ["hello", "", "a", "b", "", "bye", "", "lop"] {
        tx.send_bytes(m.as_bytes()).unwrap();
    }
}

/// Waits for its own event `go`, then sends `v`.
fn reply_when_told(arg: (u64, Writer<u64>, mp_core::Event)) {
    assert!(arg.2.wait_timeout(secs()));
    arg.1.send(&arg.0).unwrap();
}

fn poll_shared(rx: Reader<()>) {
    let _ = rx.poll(Duration::from_secs(5));
}

/// Sends a first small message, then a huge one forever: killed in the middle of it.
fn write_forever(tx: Writer<()>) {
    tx.send_bytes(b"first").unwrap();
    let big = vec![0xEEu8; 64 << 20];
    loop {
        tx.send_bytes(&big).unwrap();
    }
}

fn forward_conn(arg: (Connection<Connection<String>>, ())) {
    let inner = arg.0.recv().unwrap();
    let s = inner.recv().unwrap();
    inner.send(&s.to_uppercase()).unwrap();
}

/// Values and byte messages of every size go to a child and back.
pub fn round_trip<B: Transport>(ctx: Context) {
    let (a, b) = pipe_with::<_, B>().unwrap();
    let mut p = ctx.process(echo_values, b);
    p.start().unwrap();
    for i in 0..50u32 {
        let v = (i, "x".repeat(i as usize * 10), vec![i as u64; i as usize]);
        a.send(&v).unwrap();
        assert_eq!(a.recv_timeout(secs()).unwrap(), v);
    }
    drop(a);
    p.join().unwrap();

    let (a, b) = pipe_with::<(), B>().unwrap();
    let mut p = ctx.process(echo_bytes, b);
    p.start().unwrap();
    for n in [
        0usize,
        1,
        7,
        8,
        9,
        511,
        512,
        513,
        4096,
        65_536,
        300_000,
        1 << 20,
    ] {
        let m = payload(n);
        a.send_bytes(&m).unwrap();
        assert_eq!(a.recv_bytes_timeout(secs()).unwrap(), m, "{n} bytes");
    }
    drop(a);
    p.join().unwrap();
}

/// A 16 MiB message from a child arrives intact.
pub fn big_message<B: Transport>(ctx: Context) {
    let n = 16 << 20;
    let (rx, tx) = pipe_oneway_with::<(), B>().unwrap();
    let mut p = ctx.process(send_big, (n, tx));
    p.start().unwrap();
    let got = rx.recv_bytes_timeout(secs()).unwrap();
    assert_eq!(got, payload(n));
    p.join().unwrap();
}

/// A peer that has exited: poll ready, end of stream, broken pipe.
pub fn closed_peer<B: Transport>(ctx: Context) {
    let (a, b) = pipe_with::<u8, B>().unwrap();
    let mut p = ctx.process(hold_and_exit, b);
    p.start().unwrap();
    p.join().unwrap();
    // End of stream comes when the last copy of `b` closes. Under fork, a child forked
    // meanwhile by another test of the binary holds a copy until it exits (as in Python), so
    // the end is waited for, not expected at once.
    assert!(
        a.poll(LONG).unwrap(),
        "no end of stream after the peer exited"
    );
    assert!(matches!(a.recv(), Err(ConnectionError::Eof)));
    assert!(matches!(a.recv_bytes(), Err(ConnectionError::Eof)));
    assert!(matches!(a.send(&1), Err(ConnectionError::BrokenPipe)));
}

/// Messages keep their order and boundaries, empty ones included.
pub fn ordered_and_not_merged<B: Transport>(ctx: Context) {
    let (rx, tx) = pipe_oneway_with::<(), B>().unwrap();
    let mut p = ctx.process(send_sequence, tx);
    p.start().unwrap();
    let got: Vec<String> = (0..8)
        .map(|_| String::from_utf8(rx.recv_bytes_timeout(secs()).unwrap()).unwrap())
        .collect();
    assert_eq!(got, ["hello", "", "a", "b", "", "bye", "", "lop"]);
    p.join().unwrap();
    assert!(matches!(rx.recv_bytes(), Err(ConnectionError::Eof)));
}

/// A child polling a clone of the reading end takes nothing away.
pub fn polling_child_does_not_split<B: Transport>(ctx: Context) {
    let (rx, tx) = pipe_oneway_with::<(), B>().unwrap();
    let mut p = ctx.process(poll_shared, rx.try_clone().unwrap());
    p.start().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    tx.send_bytes(&[1u8; 1000]).unwrap();
    tx.send_bytes(&[2u8; 2000]).unwrap();
    p.join().unwrap();
    assert_eq!(rx.recv_bytes_timeout(secs()).unwrap(), vec![1u8; 1000]);
    assert_eq!(rx.recv_bytes_timeout(secs()).unwrap(), vec![2u8; 2000]);
}

/// `wait` reports ends in the order their messages arrive: three children each reply when
/// their own event is set, set one at a time in an order unlike their start order, and each
/// time `wait` over the ends still open reports exactly the one that was told (the others
/// cannot have a message yet), whatever the scheduling.
pub fn wait_mixed<B: Transport>(ctx: Context) {
    let mut readers = Vec::new();
    let mut procs = Vec::new();
    let mut events = Vec::new();
    for v in [300u64, 50, 150] {
        let (rx, tx) = pipe_oneway_with::<u64, B>().unwrap();
        let go = mp_core::Event::new().unwrap();
        let mut p = ctx.process(reply_when_told, (v, tx, go.clone()));
        p.start().unwrap();
        readers.push(rx);
        procs.push(p);
        events.push(go);
    }
    let mut order = Vec::new();
    let mut left: Vec<usize> = (0..3).collect();
    for told in [1usize, 2, 0] {
        events[told].set();
        let objs: Vec<&dyn mp_core::Waitable> = left
            .iter()
            .map(|&i| &readers[i] as &dyn mp_core::Waitable)
            .collect();
        let ready = wait(&objs, Some(secs())).unwrap();
        let ready: Vec<usize> = ready.iter().map(|&k| left[k]).collect();
        assert_eq!(ready, [told], "wait reported other ends than the one told");
        order.push(readers[told].recv_timeout(secs()).unwrap());
        left.retain(|&j| j != told);
    }
    assert_eq!(order, [50, 150, 300]);
    for p in &mut procs {
        p.join().unwrap();
    }
}

/// `wait` on a connection alone wakes when the process holding the peer end dies without
/// closing it, and the connection then reads EOF.
/// `wait` on an end wakes when the process holding the peer end dies with it open.
pub fn wait_sees_a_dead_peer<B: Transport>(ctx: Context) {
    let (a, b) = pipe_with::<u8, B>().unwrap();
    let mut p = ctx.process(exit_holding, b);
    p.start().unwrap();
    let t = Instant::now();
    let ready = wait(&[&a], Some(secs())).unwrap();
    assert_eq!(ready, vec![0], "wait timed out after {:?}", t.elapsed());
    assert!(matches!(a.recv(), Err(ConnectionError::Eof)));
    p.join().unwrap();
}

/// A connection sent inside a message works at the receiver.
pub fn connection_inside_a_message<B: Transport>(ctx: Context) {
    let (carrier_here, carrier_there) = pipe_with::<Connection<String>, B>().unwrap();
    let mut p = ctx.process(forward_conn, (carrier_there, ()));
    p.start().unwrap();
    let (mine, theirs) = pipe_with::<String, B>().unwrap();
    carrier_here.send(&theirs).unwrap();
    drop(theirs);
    mine.send(&"abc".to_string()).unwrap();
    assert_eq!(mine.recv_timeout(secs()).unwrap(), "ABC");
    p.join().unwrap();
    assert!(matches!(
        mine.recv_timeout(secs()),
        Err(ConnectionError::Eof)
    ));
}

/// A writer killed in the middle of large messages: whole messages, then end of stream or `Truncated`.
pub fn killed_writer<B: Transport>(ctx: Context) {
    let (rx, tx) = pipe_oneway_with::<(), B>().unwrap();
    let mut p = ctx.process(write_forever, tx);
    p.start().unwrap();
    assert_eq!(rx.recv_bytes_timeout(secs()).unwrap(), b"first");
    std::thread::sleep(Duration::from_millis(30));
    p.kill().unwrap();
    let _ = p.join();
    // Whole 64 MiB messages, then an error (never garbage, never a hang).
    let t = Instant::now();
    loop {
        match rx.recv_bytes_timeout(secs()) {
            Ok(m) => assert!(m.len() == 64 << 20 && m.iter().all(|&b| b == 0xEE)),
            Err(ConnectionError::Eof | ConnectionError::Truncated { .. }) => break,
            Err(e) => panic!("expected EOF or Truncated, got {e:?}"),
        }
        assert!(t.elapsed() < secs());
    }
}

/// `poll` and `recv_timeout`: immediate, timed, and consuming nothing.
pub fn poll_timing<B: Transport>() {
    let (a, b) = pipe_with::<u32, B>().unwrap();
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
    for _ in 0..3 {
        assert!(b.poll(Duration::ZERO).unwrap(), "polling consumes nothing");
    }
    assert_eq!(b.recv().unwrap(), 5);
}

/// `recv_bytes_into`, `BufferTooShort` with the whole message, and the size limit.
pub fn recv_into_and_limits<B: Transport>() {
    let (a, mut b) = pipe_with::<(), B>().unwrap();
    a.send_bytes(&payload(16)).unwrap();
    let mut buf = [0xAAu8; 40];
    assert_eq!(b.recv_bytes_into(&mut buf).unwrap(), 16);
    assert_eq!(&buf[..16], &payload(16)[..]);
    assert!(buf[16..].iter().all(|&x| x == 0xAA));
    a.send_bytes(&payload(110)).unwrap();
    match b.recv_bytes_into(&mut buf) {
        Err(ConnectionError::BufferTooShort { message, capacity }) => {
            assert_eq!(message, payload(110));
            assert_eq!(capacity, 40);
        }
        other => panic!("expected BufferTooShort, got {other:?}"),
    }
    // A big one (sent from another thread) straight into a big buffer.
    let t = std::thread::spawn(move || {
        a.send_bytes(&payload(3 << 20)).unwrap();
        a
    });
    let mut big = vec![0u8; 4 << 20];
    assert_eq!(b.recv_bytes_into(&mut big).unwrap(), 3 << 20);
    assert_eq!(&big[..3 << 20], &payload(3 << 20)[..]);
    let a = t.join().unwrap();
    // Over the limit: refused before allocation, then the end is broken.
    b.set_max_message_size(100);
    a.send_bytes(&payload(101)).unwrap();
    assert!(matches!(
        b.recv_bytes(),
        Err(ConnectionError::TooLarge { len: 101, max: 100 })
    ));
    assert!(matches!(b.recv_bytes(), Err(ConnectionError::Broken)));
}

/// A message that does not decode as the connection's type is a `Decode` error.
pub fn wrong_type_is_a_decode_error<B: Transport>() {
    let (a, b) = pipe_with::<String, B>().unwrap();
    a.send_bytes(&[0xFF, 0xFF, 0xFF]).unwrap();
    assert!(matches!(b.recv(), Err(ConnectionError::Decode(_))));
    a.send(&"still fine".to_string()).unwrap();
    assert_eq!(b.recv().unwrap(), "still fine");
}

/// Two threads stream messages of mixed sizes both ways at once.
pub fn threads_stream<B: Transport>() {
    // Many messages of mixed sizes between two threads, both directions at once.
    let (a, b) = pipe_with::<Vec<u8>, B>().unwrap();
    let t = std::thread::spawn(move || {
        for i in 0..2000usize {
            b.send(&payload(i * 37 % 70_000)).unwrap();
            assert_eq!(b.recv().unwrap(), payload(i % 100));
        }
    });
    for i in 0..2000usize {
        a.send(&payload(i % 100)).unwrap();
        assert_eq!(a.recv().unwrap(), payload(i * 37 % 70_000));
    }
    t.join().unwrap();
}

fn put_range(arg: (Queue<(u32, Vec<u8>)>, u32, u32)) {
    for i in arg.1..arg.2 {
        // Mostly small items, some too big for any ring: FIFO must hold across both.
        let n = if i % 97 == 0 {
            300_000
        } else {
            (i % 50) as usize
        };
        arg.0.put((i, payload(n))).unwrap();
    }
}

/// A queue over the transport is FIFO for small items and items too big for any ring.
pub fn queue_fifo_and_sizes<B: Transport>(ctx: Context) {
    let q = Queue::<(u32, Vec<u8>)>::with_transport::<B>(0).unwrap();
    let mut p = ctx.process(put_range, (q.clone(), 0, 3000));
    p.start().unwrap();
    for i in 0..3000u32 {
        let (j, v) = q.get_timeout(secs()).unwrap();
        assert_eq!(j, i);
        let n = if i % 97 == 0 {
            300_000
        } else {
            (i % 50) as usize
        };
        assert_eq!(v, payload(n));
    }
    p.join().unwrap();
    assert!(q.empty());
    assert!(matches!(q.get_nowait(), Err(GetError::Empty)));
}

fn consume_sum(arg: (Queue<Option<u64>>, Writer<u64>)) {
    let mut sum = 0;
    while let Some(v) = arg.0.get().unwrap() {
        sum += v;
    }
    arg.1.send(&sum).unwrap();
}

fn produce_n(arg: (Queue<Option<u64>>, u64, u64)) {
    for v in arg.1..arg.2 {
        arg.0.put(Some(v)).unwrap();
    }
}

/// Several producers and consumers: every item exactly once.
pub fn queue_many_to_many<B: Transport>(ctx: Context) {
    let q = Queue::<Option<u64>>::with_transport::<B>(0).unwrap();
    let (rx, tx) = pipe_oneway_with::<u64, B>().unwrap();
    let consumers: Vec<_> = (0..3)
        .map(|_| {
            let mut p = ctx.process(consume_sum, (q.clone(), tx.try_clone().unwrap()));
            p.start().unwrap();
            p
        })
        .collect();
    let producers: Vec<_> = (0..3u64)
        .map(|k| {
            let mut p = ctx.process(produce_n, (q.clone(), k * 20_000, (k + 1) * 20_000));
            p.start().unwrap();
            p
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    for _ in 0..3 {
        q.put(None).unwrap();
    }
    let total: u64 = (0..3).map(|_| rx.recv_timeout(secs()).unwrap()).sum();
    assert_eq!(total, (0..60_000u64).sum::<u64>());
    for p in consumers {
        p.join().unwrap();
    }
}

/// Bounded, joinable and simple queues over the transport.
pub fn queue_bounded_and_joinable<B: Transport>() {
    let q = Queue::<u32>::with_transport::<B>(2).unwrap();
    q.put(1).unwrap();
    q.put(2).unwrap();
    assert!(q.full());
    assert!(matches!(q.put_nowait(3), Err(PutError::Full(3))));
    about(
        "put_timeout on a full queue",
        Duration::from_millis(100),
        || assert!(q.put_timeout(3, Duration::from_millis(100)).is_err()),
    );
    assert_eq!(q.get().unwrap(), 1);
    q.put(3).unwrap();
    assert_eq!(q.qsize(), 2);
    let j = JoinableQueue::<u32>::with_transport::<B>(0).unwrap();
    j.put(1).unwrap();
    j.put(2).unwrap();
    assert!(j.join_timeout(Duration::ZERO).is_err());
    j.get().unwrap();
    j.get().unwrap();
    j.task_done().unwrap();
    j.task_done().unwrap();
    j.join().unwrap();
    let s = SimpleQueue::<String>::with_transport::<B>().unwrap();
    s.put("x".into()).unwrap();
    assert_eq!(s.get().unwrap(), "x");
}

fn die_mid_use(arg: (Queue<u32>, Writer<()>)) {
    let (q, tx) = arg;
    q.put(1).unwrap();
    tx.send(&()).unwrap();
    loop {
        q.put(2).unwrap();
        q.get().unwrap();
    }
}

/// A queue user killed mid-use leaves the queue usable.
pub fn queue_killed_user<B: Transport>(ctx: Context) {
    let q = Queue::<u32>::with_transport::<B>(0).unwrap();
    let (rx, tx) = pipe_oneway_with::<(), B>().unwrap();
    let mut p = ctx.process(die_mid_use, (q.clone(), tx));
    p.start().unwrap();
    rx.recv_timeout(secs()).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    p.kill().unwrap();
    let _ = p.join();
    q.put(3).unwrap();
    // The first get may have to take over a lock the victim held: a lock found held with
    // no recorded owner is taken over after 300 ms, so allow well beyond that.
    let mut seen = vec![q.get_timeout(Duration::from_secs(5)).unwrap()];
    while let Ok(v) = q.get_timeout(Duration::from_millis(500)) {
        seen.push(v);
    }
    assert_eq!(seen.last(), Some(&3), "{seen:?}");
    assert!(seen.iter().all(|v| [1, 2, 3].contains(v)), "{seen:?}");
}
