//! Connection behaviours that need Unix: hand-made frames on raw sockets, signals, and
//! descriptor validation.
#![cfg(unix)]

mod common;

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::for_each_context;
use mp_core::{pipe, Connection, ConnectionError};

const SECS: Duration = Duration::from_secs(10);

/// A Connection over a raw socket pair, with the other end as a plain stream to write
/// hand-made frames.
fn raw_pair<T>() -> (Connection<T>, UnixStream) {
    let (x, y) = UnixStream::pair().unwrap();
    (Connection::from_handle(OwnedFd::from(x)).unwrap(), y)
}

#[test]
fn conn_10_oversized_and_corrupt_frames_are_typed_errors() {
    // A header announcing 2^62 bytes: refused before anything is allocated.
    let (mut c, mut raw) = raw_pair::<u32>();
    raw.write_all(&(1u64 << 62).to_le_bytes()).unwrap();
    assert!(matches!(c.recv_bytes(), Err(ConnectionError::TooLarge { len, .. }) if len == 1 << 62));
    assert!(matches!(c.recv_bytes(), Err(ConnectionError::Broken)));
    // recv_bytes_max and a configured limit.
    let (c2, raw2) = raw_pair::<u32>();
    let (mut peer, _) = (
        Connection::<u32>::from_handle(OwnedFd::from(raw2)).unwrap(),
        (),
    );
    peer.send_bytes(&[0u8; 2048]).unwrap();
    assert!(matches!(
        c2.recv_bytes_max(1024),
        Err(ConnectionError::TooLarge {
            len: 2048,
            max: 1024
        })
    ));
    c.set_max_message_size(16);
    peer.close();
    // A frame cut short by the peer's exit.
    let (c3, mut raw3) = raw_pair::<u32>();
    raw3.write_all(&100u64.to_le_bytes()).unwrap();
    raw3.write_all(&[1, 2, 3]).unwrap();
    drop(raw3);
    assert!(matches!(
        c3.recv_bytes(),
        Err(ConnectionError::Truncated {
            got: 3,
            expected: 100
        })
    ));
    // Bytes that are not a valid value: consumed, and the connection stays usable.
    let (c4, mut raw4) = raw_pair::<String>();
    raw4.write_all(&2u64.to_le_bytes()).unwrap();
    raw4.write_all(&[5, b'a']).unwrap(); // a string of 5 bytes with only one present
    raw4.write_all(&3u64.to_le_bytes()).unwrap();
    raw4.write_all(&[2, b'o', b'k']).unwrap();
    assert!(matches!(c4.recv(), Err(ConnectionError::Decode(_))));
    assert_eq!(c4.recv().unwrap(), "ok");
}

extern "C" fn ignore_usr1(_: libc::c_int) {}

/// Receives a number and a huge message with SIGUSR1 arriving all the time, echoing both.
fn interrupted_echo(conn: Connection<u32>) {
    // SAFETY: installing a no-op handler without SA_RESTART, so that calls see EINTR.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = ignore_usr1 as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
    }
    conn.send(&0).unwrap(); // ready
    let n = conn.recv().unwrap();
    conn.send(&n).unwrap();
    let big = conn.recv_bytes().unwrap();
    conn.send_bytes(&big).unwrap();
}

#[test]
fn conn_15_signals_do_not_break_transfers() {
    for_each_context(60, |ctx| {
        let (a, b) = pipe::<u32>().unwrap();
        let mut p = ctx.process(interrupted_echo, b);
        p.start().unwrap();
        assert_eq!(a.recv_timeout(SECS).unwrap(), 0);
        let pid = p.pid().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let poker = std::thread::spawn(move || {
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                // SAFETY: signalling our child, which handles SIGUSR1.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGUSR1) };
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        std::thread::sleep(Duration::from_millis(30));
        a.send(&1234).unwrap();
        assert_eq!(a.recv_timeout(SECS).unwrap(), 1234);
        let big: Vec<u8> = (0..(16 << 20) + 1).map(|i| (i % 253) as u8).collect();
        a.send_bytes(&big).unwrap();
        assert_eq!(a.recv_bytes_timeout(SECS).unwrap(), big);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        poker.join().unwrap();
        p.join().unwrap();
    });
}

#[test]
fn conn_16_invalid_handles_are_refused() {
    let file = std::fs::File::open("/dev/null").unwrap();
    assert!(Connection::<u8>::from_handle(OwnedFd::from(file)).is_err());
    let (dgram, _) = std::os::unix::net::UnixDatagram::pair().unwrap();
    assert!(Connection::<u8>::from_handle(OwnedFd::from(dgram)).is_err());
}

/// Receives a file handle with its low descriptors all taken, so the received one gets a
/// high number, and writes through it.
fn write_through_received_file_crowded(conn: Connection<mp_core::OsHandle>) {
    let _crowd: Vec<std::fs::File> = (0..300)
        .map(|_| std::fs::File::open("/dev/null").unwrap())
        .collect();
    let handle = conn.recv().unwrap().into_inner();
    use std::os::fd::AsRawFd;
    assert!(handle.as_raw_fd() > 256);
    let mut file = std::fs::File::from(handle);
    file.write_all(b"foo").unwrap();
    conn.send_bytes(b"done").unwrap();
}

/// The portable part of CONN-17 is in connection.rs; here the received descriptor gets a
/// number above 256 (no `select` limit).
#[test]
fn conn_17_a_received_descriptor_may_have_a_high_number() {
    for_each_context(30, |ctx| {
        common::file_handle_round_trip(ctx, write_through_received_file_crowded, "crowded")
    });
}

/// `wait` over Unix domain sockets: a listener with a client to accept, a stream with
/// bytes to read.
#[test]
fn wait_over_unix_sockets() {
    use std::os::unix::net::{UnixListener, UnixStream};
    common::bounded(30, || {
        let path = std::env::temp_dir().join(format!("mp-wait-unix-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let short = Some(Duration::from_millis(20));
        assert!(mp_core::wait(&[&listener], short).unwrap().is_empty());
        let mut client = UnixStream::connect(&path).unwrap();
        assert_eq!(mp_core::wait(&[&listener], Some(SECS)).unwrap(), vec![0]);
        let (server, _) = listener.accept().unwrap();
        assert!(mp_core::wait(&[&server], short).unwrap().is_empty());
        client.write_all(b"x").unwrap();
        assert_eq!(mp_core::wait(&[&server], Some(SECS)).unwrap(), vec![0]);
        std::fs::remove_file(path).unwrap();
    });
}
