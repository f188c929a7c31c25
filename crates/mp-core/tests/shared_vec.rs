//! SharedVec: buffers that reach other processes as a handle, read in place, written only by
//! their only holder, released by the last one (or by the death of the others).

mod common;

use std::time::Duration;

use common::{bounded, for_each_context};
use mp_core::{pipe, Connection, Context, Process, SharedBytes, SharedError, SharedVec};

/// Receives buffers and sends each back.
fn echo_buffers(conn: Connection<SharedVec<u64>>) {
    while let Ok(v) = conn.recv() {
        if conn.send(&v).is_err() {
            return;
        }
    }
}

/// A receiver that refuses any message above 64 bytes still receives a buffer of 8 MiB: what
/// travels is the handle, not the elements.
#[test]
fn svec_a_large_buffer_travels_as_a_handle_and_comes_back_to_the_same_mapping() {
    for_each_context(60, |ctx: Context| {
        let n = 1 << 20;
        let mut v = SharedVec::<u64>::zeroed(n).unwrap();
        for (i, x) in v.get_mut().unwrap().iter_mut().enumerate() {
            *x = i as u64 * 3;
        }
        let (mut here, there) = pipe::<SharedVec<u64>>().unwrap();
        here.set_max_message_size(64);
        let mut p = ctx.process(echo_buffers, there);
        p.start().unwrap();
        for _ in 0..3 {
            here.send(&v).unwrap();
            let back = here.recv_timeout(Duration::from_secs(10)).unwrap();
            assert_eq!(back.len(), n);
            assert_eq!(back[n - 1], (n as u64 - 1) * 3);
            // This process maps a segment once (on Unix, where a segment has an identity:
            // device and inode): the buffer came back to the same memory.
            if cfg!(unix) {
                assert_eq!(back.as_ptr(), v.as_ptr());
            }
            drop(back);
        }
        drop(here);
        p.join().unwrap();
        // Every other holder is gone (the child exited, no message is on its way).
        assert!(v.is_unique());
        assert!(v.get_mut().is_some());
    });
}

/// Takes a buffer, waits until it is the only holder, writes it in place, hands it back.
fn write_when_alone(conn: Connection<SharedVec<u64>>) {
    let mut v = conn.recv().unwrap();
    // The parent drops its handle after the send; until then this holder is not alone.
    let mut tries = 0;
    let slice = loop {
        if let Some(s) = v.get_mut() {
            break s;
        }
        tries += 1;
        assert!(tries < 10_000, "never became the only holder");
        std::thread::sleep(Duration::from_millis(1));
    };
    for x in slice.iter_mut() {
        *x += 1;
    }
    conn.send(&v).unwrap();
}

/// The hand-over: the parent fills a buffer and lets go of it, the child writes it in place
/// and hands it back, the parent reads the child's writes and owns it again. (The buffer is
/// made after the child starts: a forked child would hold the buffers its parent had.)
#[test]
fn svec_hand_over_for_writing_and_back() {
    for_each_context(60, |ctx: Context| {
        let (here, there) = pipe::<SharedVec<u64>>().unwrap();
        let mut p = ctx.process(write_when_alone, there);
        p.start().unwrap();
        let v = SharedVec::from_slice(&[10u64, 20, 30]).unwrap();
        here.send(&v).unwrap();
        drop(v);
        let mut back = here.recv_timeout(Duration::from_secs(20)).unwrap();
        assert_eq!(&back[..], &[11, 21, 31]);
        p.join().unwrap();
        back.push(41).unwrap();
        assert_eq!(&back[..], &[11, 21, 31, 41]);
    });
}

/// Reports whether it may write while the parent still holds the buffer, then again after
/// the parent said it let go.
fn report_uniqueness(arg: (Connection<SharedBytes>, Connection<bool>)) {
    let (buffers, conn) = arg;
    let mut v = buffers.recv().unwrap();
    conn.send(&v.get_mut().is_some()).unwrap();
    assert!(conn.recv().unwrap(), "the parent's go-ahead");
    conn.send(&v.get_mut().is_some()).unwrap();
    assert!(matches!(v.push(1), Ok(())));
    conn.send(&(v.len() == 5)).unwrap();
}

/// A buffer held by two processes is read-only on both sides until one lets go, and `push`
/// says why.
#[test]
fn svec_writes_wait_for_the_other_holders() {
    for_each_context(60, |ctx: Context| {
        let (buffers, buffers_there) = pipe::<SharedBytes>().unwrap();
        let (here, there) = pipe::<bool>().unwrap();
        let mut p = ctx.process(report_uniqueness, (buffers_there, there));
        p.start().unwrap();
        let mut v = SharedBytes::zeroed(4).unwrap();
        buffers.send(&v).unwrap();
        assert!(!here.recv_timeout(Duration::from_secs(10)).unwrap());
        assert!(v.get_mut().is_none());
        assert!(matches!(v.push(9), Err(SharedError::NotUnique)));
        drop(v);
        here.send(&true).unwrap();
        assert!(here.recv_timeout(Duration::from_secs(10)).unwrap());
        assert!(here.recv_timeout(Duration::from_secs(10)).unwrap());
        p.join().unwrap();
    });
}

/// Receives a buffer and ends without letting go of it (as a crash would).
/// (Whether it still counts while it exits is a race with its exit, so the test only looks
/// once it has been joined.)
fn take_and_vanish(conn: Connection<SharedVec<u32>>) {
    let v = conn.recv().unwrap();
    conn.send(&SharedVec::zeroed(0).unwrap()).unwrap();
    std::mem::forget(v);
}

/// A holder that died does not keep the buffer read-only.
#[test]
fn svec_a_dead_holder_does_not_count() {
    for_each_context(60, |ctx: Context| {
        let mut v = SharedVec::from_slice(&[1u32, 2, 3]).unwrap();
        let (here, there) = pipe::<SharedVec<u32>>().unwrap();
        let mut p = ctx.process(take_and_vanish, there);
        p.start().unwrap();
        here.send(&v).unwrap();
        let _ack = here.recv_timeout(Duration::from_secs(10)).unwrap();
        p.join().unwrap();
        assert!(v.is_unique(), "the dead child still counts");
        v.get_mut().unwrap()[0] = 7;
        assert_eq!(&v[..], &[7, 2, 3]);
    });
}

/// Clones and copies: a clone shares the memory, `make_mut` copies when shared.
#[test]
fn svec_clone_shares_and_make_mut_copies() {
    let mut v = SharedVec::from_slice(&[1i32, 2, 3]).unwrap();
    let w = v.clone();
    assert_eq!(v.as_ptr(), w.as_ptr());
    assert!(!v.is_unique());
    assert_eq!(v.holders(), 1, "one process, no message");
    v.make_mut().unwrap()[1] = 20;
    assert_ne!(v.as_ptr(), w.as_ptr());
    assert_eq!((&v[..], &w[..]), (&[1, 20, 3][..], &[1, 2, 3][..]));
    drop(w);
    v.truncate(1).unwrap();
    assert_eq!(&v[..], &[1]);
    assert_eq!(format!("{v:?}"), "[1]");
}

#[test]
fn svec_bytes_form_writes_and_grows() {
    use std::io::Write;
    let mut b = SharedBytes::with_capacity(2).unwrap();
    b.write_all(b"hello, ").unwrap();
    let who = "world";
    write!(b, "{who}").unwrap();
    assert_eq!(&b[..], b"hello, world");
    assert!(b.capacity() >= 12);
    let keep = b.clone();
    assert!(b.write_all(b"!").is_err(), "a shared buffer refuses writes");
    drop(keep);
    b.write_all(b"!").unwrap();
    assert_eq!(&b[..], b"hello, world!");
}

/// Serialized anywhere but inside a message or a process argument, a buffer refuses (its
/// handle would mean nothing there), and stays writable.
#[test]
fn svec_refuses_to_be_serialized_outside_mp() {
    let mut v = SharedVec::from_slice(&[1u8]).unwrap();
    assert!(postcard::to_stdvec(&v).is_err());
    assert!(
        v.get_mut().is_some(),
        "a failed encoding leaves no holder behind"
    );
}

fn hold_until_told(arg: (SharedVec<u16>, Connection<()>)) {
    let (v, conn) = arg;
    conn.send(&()).unwrap();
    let _ = conn.recv();
    drop(v);
}

/// Every process mapping the buffer counts, whatever the start method; a forked child
/// counts for the buffers in its argument although nothing was sent to it. (A closure
/// child counts for every buffer of its parent: see `process_unix.rs`, a test binary where
/// no other test checks buffers at the same time.)
#[test]
fn svec_every_start_method_counts_the_child() {
    for_each_context(60, |ctx: Context| {
        let v = SharedVec::from_slice(&[5u16; 8]).unwrap();
        let (here, there) = pipe::<()>().unwrap();
        let mut p = ctx.process(hold_until_told, (v.clone(), there));
        p.start().unwrap();
        here.recv_timeout(Duration::from_secs(10)).unwrap();
        // The argument's handle in this process was dropped by `start`; the child holds one.
        assert!(!v.is_unique());
        here.send(&()).unwrap();
        p.join().unwrap();
        assert!(v.is_unique());
    });
}

/// A buffer of one element type does not decode as another: the receiver gets a decoding
/// error, not a reinterpretation.
#[cfg(unix)]
#[test]
fn svec_wrong_element_type_is_a_decode_error() {
    use std::os::unix::net::UnixStream;
    let (x, y) = UnixStream::pair().unwrap();
    let tx = Connection::<SharedVec<u32>>::from_handle(x.into()).unwrap();
    let rx = Connection::<SharedVec<f32>>::from_handle(y.into()).unwrap();
    tx.send(&SharedVec::from_slice(&[1u32]).unwrap()).unwrap();
    match rx.recv() {
        Err(mp_core::ConnectionError::Decode(_)) => {}
        other => panic!("expected a decode error, got {other:?}"),
    }
}

/// The threads backend moves the buffer itself (`send` would move a clone: the same memory
/// too, but then two handles hold it).
#[cfg(feature = "threads")]
#[test]
fn svec_threads_backend_moves_the_buffer() {
    let v = SharedVec::from_slice(&[3u64; 1000]).unwrap();
    let ptr = v.as_ptr();
    let (a, b) = mp_core::dummy::pipe::<SharedVec<u64>>().unwrap();
    let t = std::thread::spawn(move || {
        let mut v = b.recv().unwrap();
        v.get_mut().unwrap()[0] = 4;
        v
    });
    a.send_owned(v).unwrap();
    let back = t.join().unwrap();
    assert_eq!(back.as_ptr(), ptr);
    assert_eq!(back[0], 4);
}

/// 64 MiB to a child and back, read in place on both sides.
#[test]
fn svec_64_mib_round_trip() {
    bounded(60, || {
        let n = 8 << 20;
        let mut v = SharedVec::<u64>::zeroed(n).unwrap();
        v.get_mut().unwrap()[n - 1] = 42;
        let (here, there) = pipe::<SharedVec<u64>>().unwrap();
        let mut p = Process::new(echo_buffers, there);
        p.start().unwrap();
        here.send(&v).unwrap();
        let back = here.recv_timeout(Duration::from_secs(20)).unwrap();
        assert_eq!(back[n - 1], 42);
        drop(here);
        p.join().unwrap();
    });
}
