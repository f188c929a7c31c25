//! The suite: one function per guarantee of the contract, generic over the transport.
//! [`transport_suite!`](crate::transport_suite) makes one `#[test]` of each.

use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use mp_ipc::dispatch::AnyEnd;
use mp_ipc::handle::{raw_of, OwnedHandle};
use mp_ipc::{Channel, Endpoint, IpcError, Transport};

use crate::{payload, recv, Here, LIMIT, SECS};

/// Frames of every size keep their boundaries and their order, empty ones included, and a
/// frame sent in parts arrives as their concatenation.
pub fn frames_keep_boundaries_and_order<T: Transport>(_: &Here) {
    let (a, b) = T::pair().expect("pair");
    let sizes = [
        0usize,
        1,
        7,
        8,
        9,
        0,
        511,
        512,
        513,
        4095,
        4096,
        4097,
        65_536,
        300_000,
        0,
        1 << 20,
    ];
    // All queued before any is read (as far as the transport buffers), then read back.
    let writer = thread::spawn(move || {
        for n in sizes {
            a.send_frame(&[&payload(n)]).expect("send");
        }
        a.send_frame(&[b"he", b"", b"llo", b" ", b"world"])
            .expect("send in parts");
        a
    });
    for n in sizes {
        assert_eq!(recv(&b), payload(n), "frame of {n} bytes");
    }
    assert_eq!(recv(&b), b"hello world");
    let _a = writer.join().expect("writer");
}

/// A 16 MiB frame, sent from another thread, arrives whole.
pub fn a_16_mib_frame_arrives_whole<T: Transport>(_: &Here) {
    let (a, b) = T::pair().expect("pair");
    let n = 16 << 20;
    let writer = thread::spawn(move || a.send_frame(&[&payload(n)]).map(|()| a));
    assert_eq!(recv(&b), payload(n));
    writer.join().expect("writer").expect("send");
}

/// A dropped peer: the frames it sent first, then end of stream, which `poll` reports as
/// ready; sending to it is a broken pipe.
pub fn a_dropped_peer_is_eof_after_its_frames<T: Transport>(_: &Here) {
    let (a, b) = T::pair().expect("pair");
    a.send_frame(&[b"last words"]).expect("send");
    drop(a);
    assert_eq!(recv(&b), b"last words");
    assert!(b.poll(Some(SECS)).expect("poll"), "poll at end of stream");
    let mut buf = Vec::new();
    assert!(matches!(b.recv_frame(&mut buf, LIMIT), Err(IpcError::Eof)));
    assert!(matches!(b.recv_frame(&mut buf, LIMIT), Err(IpcError::Eof)));
    assert!(matches!(b.send_frame(&[b"x"]), Err(IpcError::BrokenPipe)));
}

/// A reader blocked in `recv_frame` wakes with end of stream when the peer is dropped.
pub fn a_blocked_reader_wakes_when_the_peer_goes<T: Transport>(_: &Here) {
    let (a, b) = T::pair().expect("pair");
    let (done_tx, done_rx) = mpsc::channel();
    let reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let got = b.recv_frame(&mut buf, LIMIT);
        let _ = done_tx.send(matches!(got, Err(IpcError::Eof)));
    });
    thread::sleep(Duration::from_millis(50));
    drop(a);
    let eof = done_rx
        .recv_timeout(SECS)
        .expect("the blocked reader never woke");
    assert!(eof, "the blocked reader woke without end of stream");
    reader.join().expect("reader");
}

/// `poll`: zero just looks, a timeout expires without a frame, a frame makes it ready, and
/// polling consumes nothing.
pub fn poll_looks_waits_and_consumes_nothing<T: Transport>(_: &Here) {
    let (a, b) = T::pair().expect("pair");
    assert!(!b.poll(Some(Duration::ZERO)).expect("poll(0)"));
    assert!(!b.poll(Some(Duration::from_millis(50))).expect("poll(50ms)"));
    a.send_frame(&[b"x"]).expect("send");
    assert!(b.poll(Some(SECS)).expect("poll with a frame"));
    for _ in 0..3 {
        assert!(b.poll(Some(Duration::ZERO)).expect("poll again"));
    }
    assert_eq!(recv(&b), b"x");
    assert!(!b.poll(Some(Duration::ZERO)).expect("poll after recv"));
}

/// A frame longer than the receiver's limit is refused with `FrameTooLarge`, naming the
/// announced length and the limit.
pub fn an_oversized_frame_is_refused<T: Transport>(_: &Here) {
    let (a, b) = T::pair().expect("pair");
    a.send_frame(&[&payload(101)]).expect("send");
    let mut buf = Vec::new();
    match b.recv_frame(&mut buf, 100) {
        Err(IpcError::FrameTooLarge { len: 101, max: 100 }) => {}
        other => panic!("expected FrameTooLarge {{ 101, 100 }}, got {other:?}"),
    }
    assert!(
        buf.capacity() < 101 || buf.is_empty(),
        "nothing of the refused frame is handed out"
    );
}

/// `recv_frame_into`: a frame that fits lands in the buffer, one that does not comes back
/// whole, and nothing is lost either way.
pub fn recv_frame_into_fits_or_returns_the_frame<T: Transport>(_: &Here) {
    let (a, b) = T::pair().expect("pair");
    a.send_frame(&[&payload(16)]).expect("send");
    a.send_frame(&[&payload(110)]).expect("send");
    a.send_frame(&[b"after"]).expect("send");
    let mut out = [0xAAu8; 40];
    assert_eq!(b.recv_frame_into(&mut out, LIMIT).expect("into"), Ok(16));
    assert_eq!(&out[..16], &payload(16)[..]);
    assert!(out[16..].iter().all(|&x| x == 0xAA));
    assert_eq!(
        b.recv_frame_into(&mut out, LIMIT).expect("into"),
        Err(payload(110))
    );
    assert_eq!(recv(&b), b"after");
}

/// `recv_frame_split_until`: the first bytes of each frame (as many as the caller's
/// function of the frame length asks, within the prefix and the frame) go into the
/// prefix, the rest into the body; small and large frames, frames with handles, a frame
/// shorter than the prefix asked for, and plain receives in between all stay in step.
pub fn a_split_receive_puts_the_prefix_apart<T: Transport>(_: &Here) {
    use mp_ipc::deadline::Deadline;
    use mp_ipc::frame::{Prefix, PREFIX_MAX};
    let (a, b) = T::pair().expect("pair");
    let sizes = [0usize, 1, 2, 3, 100, 70_000, 3 << 20];
    let t = thread::spawn(move || {
        for n in sizes {
            a.send_frame(&[&payload(n)]).expect("send");
        }
        a.send_frame(&[b"plain"]).expect("send");
        if T::CAPABILITIES.passes_handles {
            let file = OwnedHandle::from(crate::temp_file());
            a.send_frame_with_handles(&[b"xyz with a file"], &[raw_of(&file)])
                .expect("send with a handle");
        }
        a
    });
    for n in sizes {
        let mut prefix: Prefix = [0xAA; PREFIX_MAX];
        let mut body = vec![1, 2, 3];
        let deadline = Deadline::after(SECS);
        let (k, handles) = b
            .recv_frame_split_until(&mut prefix, |_| 3, &mut body, LIMIT, deadline)
            .expect("split receive");
        let whole = payload(n);
        assert_eq!(k, n.min(3), "frame of {n}");
        assert_eq!(&prefix[..k], &whole[..k]);
        assert!(
            prefix[k..].iter().all(|&x| x == 0xAA),
            "nothing past the prefix"
        );
        assert_eq!(body, &whole[k..], "frame of {n}");
        assert!(handles.is_empty());
    }
    assert_eq!(recv(&b), b"plain");
    if T::CAPABILITIES.passes_handles {
        let mut prefix: Prefix = [0; PREFIX_MAX];
        let mut body = Vec::new();
        let (k, handles) = b
            .recv_frame_split_until(&mut prefix, |_| 4, &mut body, LIMIT, Deadline::after(SECS))
            .expect("split receive with a handle");
        assert_eq!(
            (&prefix[..k], &body[..]),
            (&b"xyz "[..], &b"with a file"[..])
        );
        assert_eq!(handles.len(), 1);
    }
    drop(t.join().expect("sender"));
}

/// Both ends stream frames of mixed sizes at each other from two threads at once.
pub fn two_threads_stream_both_ways<T: Transport>(_: &Here) {
    let (a, b) = T::pair().expect("pair");
    let t = thread::spawn(move || {
        for i in 0..2000usize {
            b.send_frame(&[&payload(i * 37 % 70_000)]).expect("send");
            assert_eq!(recv(&b), payload(i % 100));
        }
    });
    for i in 0..2000usize {
        a.send_frame(&[&payload(i % 100)]).expect("send");
        assert_eq!(recv(&a), payload(i * 37 % 70_000));
    }
    t.join().expect("peer thread");
}

/// A clone sends and receives on the same stream, in turn with the original; the peer sees
/// end of stream only once every clone is gone. (Clones used by two senders *at once* may
/// interleave large frames on a stream transport: the contract leaves serializing
/// concurrent writers to the caller, as Python's `Pipe` does.)
pub fn clones_share_the_stream_and_keep_the_peer_open<T: Transport>(_: &Here) {
    let (a, b) = T::pair().expect("pair");
    let a2 = a.try_clone().expect("try_clone");
    let n = 200_000;
    let writer = thread::spawn(move || {
        for i in 0..20u8 {
            let end = if i % 2 == 0 { &a } else { &a2 };
            end.send_frame(&[&vec![i; n]]).expect("send");
        }
        (a, a2)
    });
    for i in 0..20u8 {
        assert_eq!(recv(&b), vec![i; n], "frame {i} from alternating clones");
    }
    let (a, last) = writer.join().expect("writer");
    drop(a);
    assert!(
        !b.poll(Some(Duration::from_millis(50))).expect("poll"),
        "end of stream while a clone is alive"
    );
    last.send_frame(&[b"still here"])
        .expect("send on the clone");
    assert_eq!(recv(&b), b"still here");
    let b2 = b.try_clone().expect("clone the reader");
    drop(b);
    last.send_frame(&[b"to the reader's clone"]).expect("send");
    assert_eq!(recv(&b2), b"to the reader's clone");
    drop(last);
    let mut buf = Vec::new();
    assert!(b2.poll(Some(SECS)).expect("poll"));
    assert!(matches!(b2.recv_frame(&mut buf, LIMIT), Err(IpcError::Eof)));
}

/// OS handles sent with a frame arrive as the receiver's own copies of the same objects
/// (a file here); a transport that cannot pass them refuses with `Unsupported` and stays
/// usable.
pub fn handles_travel_with_frames<T: Transport>(_: &Here) {
    let (a, b) = T::pair().expect("pair");
    let mut file = crate::temp_file();
    file.write_all(b"carried by a frame").expect("write");
    let handle = OwnedHandle::from(file);
    let sent = a.send_frame_with_handles(&[b"with a file"], &[raw_of(&handle)]);
    if !T::CAPABILITIES.passes_handles {
        match sent {
            Err(IpcError::Io(e)) if e.kind() == std::io::ErrorKind::Unsupported => {}
            other => panic!("expected Unsupported, got {other:?}"),
        }
        a.send_frame(&[b"still usable"]).expect("send");
        assert_eq!(recv(&b), b"still usable");
        return;
    }
    sent.expect("send with a handle");
    drop(handle);
    assert!(b.poll(Some(SECS)).expect("poll"));
    let mut buf = Vec::new();
    let mut got = b
        .recv_frame_with_handles(&mut buf, LIMIT)
        .expect("recv with handles");
    assert_eq!(buf, b"with a file");
    assert_eq!(got.len(), 1, "one handle sent, one received");
    let mut file = std::fs::File::from(got.remove(0));
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).expect("seek");
    file.read_to_string(&mut text).expect("read");
    assert_eq!(text, "carried by a frame");
    // A plain frame after one with handles: no handles.
    a.send_frame(&[b"plain"]).expect("send");
    assert!(b.poll(Some(SECS)).expect("poll"));
    let none = b
        .recv_frame_with_handles(&mut buf, LIMIT)
        .expect("recv plain");
    assert_eq!((buf.as_slice(), none.len()), (&b"plain"[..], 0));
}

/// An end rebuilt from copies of its handles and its exported state (what another process
/// does) carries on where the original stopped, bytes it had read ahead included; an
/// in-process transport exports no handles.
pub fn an_exported_end_is_adopted_where_it_stopped<T: Transport>(_: &Here) {
    let (a, b) = T::pair().expect("pair");
    if !T::CAPABILITIES.crosses_processes {
        assert!(Endpoint::handles(&b).is_empty());
        return;
    }
    for i in 0..5u8 {
        a.send_frame(&[&[i; 10]]).expect("send");
    }
    // Reading one may read the others ahead into b's own buffer.
    assert_eq!(recv(&b), [0u8; 10]);
    let copies: Vec<OwnedHandle> = Endpoint::handles(&b)
        .into_iter()
        .map(crate::duplicate)
        .collect();
    let state = Endpoint::export(&b);
    drop(b);
    let b = T::End::adopt(copies, &state).expect("adopt");
    for i in 1..5u8 {
        assert_eq!(recv(&b), [i; 10]);
    }
    b.send_frame(&[b"from the adopted end"]).expect("send");
    assert_eq!(recv(&a), b"from the adopted end");
    drop(a);
    let mut buf = Vec::new();
    assert!(matches!(b.recv_frame(&mut buf, LIMIT), Err(IpcError::Eof)));
}

/// `adopt` on nonsense (no handles, too many, a damaged state) is an error, not a panic.
pub fn adopt_refuses_nonsense<T: Transport>(_: &Here) {
    assert!(T::End::adopt(Vec::new(), b"").is_err());
    assert!(T::End::adopt(Vec::new(), &[0xFF; 64]).is_err());
    if !T::CAPABILITIES.crosses_processes {
        return;
    }
    let (_a, b) = T::pair().expect("pair");
    let mut copies: Vec<OwnedHandle> = Endpoint::handles(&b)
        .into_iter()
        .map(crate::duplicate)
        .collect();
    let extra = crate::duplicate(raw_of(&copies[0]));
    copies.push(extra);
    assert!(
        T::End::adopt(copies, &Endpoint::export(&b)).is_err(),
        "one handle too many"
    );
}

/// The end's name and capabilities are what the transport says, through the type-erased
/// dispatch too.
pub fn the_dispatch_reports_the_transport<T: Transport>(_: &Here) {
    let (a, b) = mp_ipc::dispatch::pair::<T>().expect("pair");
    assert_eq!(a.transport(), T::NAME);
    assert_eq!(b.capabilities(), T::CAPABILITIES);
    assert_eq!(
        AnyEnd::wait_handle(&*a).is_some(),
        T::CAPABILITIES.os_waitable
    );
    let c = a.try_clone_any().expect("clone");
    c.send_frame(&[b"via a clone"]).expect("send");
    assert!(b.poll(Some(SECS)).expect("poll"));
    let mut buf = Vec::new();
    b.recv_frame(&mut buf, LIMIT).expect("recv");
    assert_eq!(buf, b"via a clone");
}

/// The wait handle of an OS-waitable end becomes readable when a frame arrives (after
/// `confirm_ready` said it was not ready and so re-armed it); on Unix, checked with `poll`.
pub fn the_wait_handle_becomes_ready_with_a_frame<T: Transport>(_: &Here) {
    let (a, b) = T::pair().expect("pair");
    let Some(h) = Endpoint::wait_handle(&b) else {
        assert!(!T::CAPABILITIES.os_waitable);
        return;
    };
    assert_ne!(
        Endpoint::confirm_ready(&b),
        Some(true),
        "ready with nothing sent"
    );
    a.send_frame(&[b"ring"]).expect("send");
    assert!(
        crate::sys::wait_readable(h, SECS),
        "the wait handle never became ready"
    );
    assert_ne!(Endpoint::confirm_ready(&b), Some(false), "a frame is there");
    assert_eq!(recv(&b), b"ring");
}
