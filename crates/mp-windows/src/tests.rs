//! Unit tests of the named-pipe channel, handle passing, polling and shared memory (run under
//! Wine here).

use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};
use std::time::{Duration, Instant};

use mp_ipc::{Channel, IpcError};
use windows_sys::Win32::System::Threading::{CreateEventW, GetCurrentProcess, SetEvent};

use crate::handle::{recv_with_handles, send_with_handles};
use crate::PipeChannel;

fn recv(c: &PipeChannel) -> Result<Vec<u8>, IpcError> {
    let mut buf = Vec::new();
    c.recv_frame(&mut buf, 1 << 30).map(|()| buf)
}

fn event() -> OwnedHandle {
    // SAFETY: an unnamed manual-reset event, owned below.
    unsafe { OwnedHandle::from_raw_handle(CreateEventW(std::ptr::null(), 1, 0, std::ptr::null())) }
}

#[test]
fn frames_keep_their_boundaries() {
    let (a, b) = PipeChannel::pair().unwrap();
    assert_eq!(a.pair_id(), b.pair_id());
    assert_ne!(a.pair_id(), 0);
    for m in [&b"hello"[..], b"", b"a", b"bc", b""] {
        a.send_frame(&[m]).unwrap();
    }
    a.send_frame(&[b"x", b"", b"yz"]).unwrap();
    for m in [&b"hello"[..], b"", b"a", b"bc", b"", b"xyz"] {
        assert_eq!(recv(&b).unwrap(), m);
    }
    b.send_frame(&[b"back"]).unwrap();
    assert_eq!(recv(&a).unwrap(), b"back");
}

#[test]
fn pairs_are_distinct() {
    let (a, _b) = PipeChannel::pair().unwrap();
    let (c, _d) = PipeChannel::pair().unwrap();
    assert_ne!(a.pair_id(), c.pair_id());
}

#[test]
fn end_of_stream_truncation_and_broken_pipe() {
    let (a, b) = PipeChannel::pair().unwrap();
    a.send_frame(&[b"last"]).unwrap();
    drop(a);
    assert_eq!(recv(&b).unwrap(), b"last");
    assert!(matches!(recv(&b), Err(IpcError::Eof)));
    assert!(
        b.poll(Some(Duration::ZERO)).unwrap(),
        "end of stream is ready"
    );
    assert!(matches!(b.send_frame(&[b"x"]), Err(IpcError::BrokenPipe)));

    let (a, b) = PipeChannel::pair().unwrap();
    a.write_all(&100u64.to_le_bytes()).unwrap();
    a.write_all(&[1, 2, 3]).unwrap();
    drop(a);
    assert!(matches!(
        recv(&b),
        Err(IpcError::Truncated {
            got: 3,
            expected: 100
        })
    ));

    let (a, b) = PipeChannel::pair().unwrap();
    a.write_all(&[1, 2, 3]).unwrap();
    drop(a);
    assert!(matches!(
        recv(&b),
        Err(IpcError::Truncated {
            got: 3,
            expected: 8
        })
    ));
}

#[test]
fn oversized_headers_are_refused_before_allocating() {
    let (a, b) = PipeChannel::pair().unwrap();
    a.write_all(&(1u64 << 62).to_le_bytes()).unwrap();
    let mut buf = Vec::new();
    assert!(matches!(
        b.recv_frame(&mut buf, 1 << 20),
        Err(IpcError::FrameTooLarge { len, .. }) if len == 1 << 62
    ));
    assert!(buf.capacity() < 1 << 20);
}

#[test]
fn poll_waits_and_does_not_consume() {
    let (a, b) = PipeChannel::pair().unwrap();
    let t = Instant::now();
    assert!(!b.poll(Some(Duration::from_millis(50))).unwrap());
    assert!(t.elapsed() >= Duration::from_millis(45));
    assert!(!b.poll(Some(Duration::ZERO)).unwrap());
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        a.send_frame(&[b"ping"]).unwrap();
        a
    });
    assert!(b.poll(Some(Duration::from_secs(5))).unwrap());
    assert!(b.poll(None).unwrap());
    assert_eq!(recv(&b).unwrap(), b"ping");
    drop(writer.join().unwrap());
}

#[test]
fn a_blocked_reader_does_not_block_a_writer_on_the_same_pipe() {
    let (a, b) = PipeChannel::pair().unwrap();
    let a2 = a.try_clone().unwrap();
    assert_eq!(a2.pair_id(), a.pair_id());
    let reader = std::thread::spawn(move || recv(&a2).unwrap());
    std::thread::sleep(Duration::from_millis(50));
    // The reader thread blocks in a read on the same file object; this write must not wait.
    a.send_frame(&[b"to b"]).unwrap();
    assert_eq!(recv(&b).unwrap(), b"to b");
    b.send_frame(&[b"to a"]).unwrap();
    assert_eq!(reader.join().unwrap(), b"to a");
}

#[test]
fn a_large_frame_arrives_intact() {
    let (a, b) = PipeChannel::pair().unwrap();
    let big: Vec<u8> = (0..(16 << 20) + 7).map(|i| (i % 251) as u8).collect();
    let expected = big.clone();
    let writer = std::thread::spawn(move || a.send_frame(&[&big[..10], &big[10..]]).unwrap());
    assert_eq!(recv(&b).unwrap(), expected);
    writer.join().unwrap();
}

#[test]
fn handles_travel_with_a_frame() {
    let (a, b) = PipeChannel::pair().unwrap();
    let (x, y) = PipeChannel::pair().unwrap();
    // SAFETY: the pseudo handle of this process.
    let me = unsafe { GetCurrentProcess() };
    send_with_handles(&a, Some(me), b"payload", &[y.as_raw_handle()]).unwrap();
    drop(y);
    let mut buf = Vec::new();
    let mut handles = recv_with_handles(&b, &mut buf, 1024).unwrap();
    assert_eq!(buf, b"payload");
    assert_eq!(handles.len(), 1);
    let y2 = PipeChannel::from_handle(handles.pop().unwrap()).unwrap();
    x.send_frame(&[b"through the copy"]).unwrap();
    assert_eq!(recv(&y2).unwrap(), b"through the copy");

    // No handles: no target needed. Handles without a target: an error, nothing sent.
    send_with_handles(&a, None, b"plain", &[]).unwrap();
    assert!(recv_with_handles(&b, &mut buf, 1024).unwrap().is_empty());
    assert_eq!(buf, b"plain");
    assert!(send_with_handles(&a, None, b"x", &[x.as_raw_handle()]).is_err());
    assert!(!b.poll(Some(Duration::ZERO)).unwrap());
}

#[test]
fn malformed_handle_prefixes_are_errors() {
    let (a, b) = PipeChannel::pair().unwrap();
    let mut buf = Vec::new();
    a.send_frame(&[b"abc"]).unwrap();
    assert!(recv_with_handles(&b, &mut buf, 1024).is_err());
    a.send_frame(&[&u64::MAX.to_le_bytes()]).unwrap();
    assert!(recv_with_handles(&b, &mut buf, 1024).is_err());
    a.send_frame(&[&2u64.to_le_bytes(), &0u64.to_le_bytes()])
        .unwrap();
    assert!(recv_with_handles(&b, &mut buf, 1024).is_err());
    // A value that is no open handle here.
    a.send_frame(&[&1u64.to_le_bytes(), &0x7ff0u64.to_le_bytes()])
        .unwrap();
    assert!(recv_with_handles(&b, &mut buf, 1024).is_err());
}

#[test]
fn handles_travel_on_a_connection_whoever_receives() {
    let (a, b) = PipeChannel::pair().unwrap();
    let (x, y) = PipeChannel::pair().unwrap();
    a.send_frame_with_handles(&[b"pay", b"load"], &[y.as_raw_handle()])
        .unwrap();
    // The sender may close its own handle at once: the frame holds a private duplicate.
    drop(y);
    let mut buf = Vec::new();
    let mut handles = b.recv_frame_with_handles(&mut buf, 1024).unwrap();
    assert_eq!((buf.as_slice(), handles.len()), (&b"payload"[..], 1));
    let y2 = PipeChannel::from_handle(handles.pop().unwrap()).unwrap();
    x.send_frame(&[b"through the copy"]).unwrap();
    assert_eq!(recv(&y2).unwrap(), b"through the copy");
    // A plain receive of a frame with handles closes them and keeps the stream in step.
    let (x3, y3) = PipeChannel::pair().unwrap();
    a.send_frame_with_handles(&[b"dropped"], &[y3.as_raw_handle()])
        .unwrap();
    drop(y3);
    a.send_frame(&[b"next"]).unwrap();
    assert_eq!(recv(&b).unwrap(), b"dropped");
    assert_eq!(recv(&b).unwrap(), b"next");
    assert!(matches!(x3.send_frame(&[b"x"]), Err(IpcError::BrokenPipe)));
}

#[test]
fn bad_handle_frames_are_corrupt_and_break_the_connection() {
    use mp_ipc::FrameHeader;
    let mut buf = Vec::new();
    let me = std::process::id();
    let frames: [Vec<u8>; 3] = [
        vec![1, 2, 3],                                      // too short for the count
        [5000u32.to_le_bytes(), me.to_le_bytes()].concat(), // too many handles
        [1u32.to_le_bytes(), me.to_le_bytes(), [0xf0, 0x7f, 0, 0]].concat(), // short value
    ];
    // A peer that breaks the protocol breaks the connection (`IpcError::Corrupt`: it can no
    // longer be read from), whatever it sends afterwards.
    for body in &frames {
        let (a, b) = PipeChannel::pair().unwrap();
        a.write_all(&FrameHeader::new(body.len()).with_handles().encode())
            .unwrap();
        a.write_all(body).unwrap();
        a.send_frame(&[b"after"]).unwrap();
        let e = b.recv_frame_with_handles(&mut buf, 1024).unwrap_err();
        assert!(matches!(e, IpcError::Corrupt(_)), "{e:?}");
        let e = recv(&b).unwrap_err();
        assert!(matches!(e, IpcError::Corrupt(_)), "{e:?}");
    }
    let (a, b) = PipeChannel::pair().unwrap();
    // A value that names no handle of the sender.
    let body = [1u32.to_le_bytes(), me.to_le_bytes()].concat();
    a.write_all(&FrameHeader::new(body.len() + 8).with_handles().encode())
        .unwrap();
    a.write_all(&body).unwrap();
    a.write_all(&0x7ff0u64.to_le_bytes()).unwrap();
    assert!(b.recv_frame_with_handles(&mut buf, 1024).is_err());
    // A payload over the receiver's limit, however large the prefix may be.
    let (a, b) = PipeChannel::pair().unwrap();
    let (_x, y) = PipeChannel::pair().unwrap();
    a.send_frame_with_handles(&[&[7u8; 100]], &[y.as_raw_handle()])
        .unwrap();
    assert!(matches!(
        b.recv_frame_with_handles(&mut buf, 99),
        Err(IpcError::FrameTooLarge { len: 100, max: 99 })
    ));
}

#[test]
fn only_pipes_make_channels() {
    assert!(PipeChannel::from_handle(event()).is_err());
}

#[test]
fn poll_many_sees_pipes_and_waitable_objects_beyond_64() {
    let pipes: Vec<_> = (0..100).map(|_| PipeChannel::pair().unwrap()).collect();
    let ev = event();
    let mut handles: Vec<_> = pipes.iter().map(|(a, _)| a.as_raw_handle()).collect();
    handles.push(ev.as_raw_handle());
    assert!(
        crate::poll::poll_many(&handles, Some(Duration::from_millis(20)))
            .unwrap()
            .is_empty()
    );
    pipes[70].1.send_frame(&[b"x"]).unwrap();
    pipes[3].1.send_frame(&[b""]).unwrap();
    assert_eq!(
        crate::poll::poll_many(&handles, Some(Duration::from_secs(1))).unwrap(),
        vec![3, 70]
    );
    // SAFETY: signalling our own event.
    unsafe { SetEvent(ev.as_raw_handle()) };
    assert_eq!(
        crate::poll::poll_many(&handles, Some(Duration::ZERO)).unwrap(),
        vec![3, 70, 100]
    );
    // Only waitable objects: the kernel waits.
    assert_eq!(
        crate::poll::poll_many(&[ev.as_raw_handle()], None).unwrap(),
        vec![0]
    );
}

#[test]
fn shared_memory_views_see_each_others_writes() {
    use crate::memory;
    let section = memory::create(10).unwrap();
    // Sizes are whole pages; never less than asked for.
    let size = memory::size(&section).unwrap();
    assert!(size >= 10 && size % 4096 == 0, "{size}");
    let a = memory::map(&section, 10).unwrap();
    // A view through another handle to the same section, as a child would make.
    let other = crate::handle::duplicate_local(section.as_raw_handle()).unwrap();
    let b = memory::map(&other, size).unwrap();
    // SAFETY: both views are live and at least 10 bytes long; zero-filled at creation.
    unsafe {
        assert_eq!(*b.as_ptr().add(9), 0);
        *a.as_ptr().add(9) = 42;
        assert_eq!(*b.as_ptr().add(9), 42);
    }
    drop((a, b));
    // A view beyond the section is refused.
    assert!(memory::map(&section, size + 4096).is_err());
}

#[test]
fn tcp_sockets_are_channels_too() {
    use std::net::{TcpListener, TcpStream};
    use std::os::windows::io::IntoRawSocket;
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (b, _) = l.accept().unwrap();
    // SAFETY: the sockets' ownership moves into the handles.
    let a = unsafe { OwnedHandle::from_raw_handle(a.into_raw_socket() as _) };
    // SAFETY: as above.
    let b = unsafe { OwnedHandle::from_raw_handle(b.into_raw_socket() as _) };
    let a = PipeChannel::from_handle(a).unwrap();
    let b = PipeChannel::from_handle(b).unwrap();
    assert!(a.is_socket() && b.is_socket());
    assert!(!b.poll(Some(Duration::ZERO)).unwrap());
    a.send_frame(&[b"over tcp"]).unwrap();
    assert!(b.poll(Some(Duration::from_secs(5))).unwrap());
    assert_eq!(recv(&b).unwrap(), b"over tcp");
    // A clone (WSADuplicateSocket) and a plain duplicate (DuplicateHandle, as a handle
    // travels to a child) both work.
    let c = b.try_clone().unwrap();
    a.send_frame(&[b"to the clone"]).unwrap();
    assert_eq!(recv(&c).unwrap(), b"to the clone");
    let d = PipeChannel::from_handle(crate::handle::duplicate_local(b.as_raw_handle()).unwrap())
        .unwrap();
    assert!(d.is_socket());
    assert!(!d.poll(Some(Duration::from_millis(50))).unwrap());
    a.send_frame(&[b"to the duplicate"]).unwrap();
    assert!(d.poll(Some(Duration::from_secs(5))).unwrap());
    assert_eq!(recv(&d).unwrap(), b"to the duplicate");
    drop((b, c, d));
    assert!(
        a.poll(Some(Duration::from_secs(5))).unwrap(),
        "end of stream is ready"
    );
    assert!(matches!(recv(&a), Err(IpcError::Eof)));
}

#[test]
fn a_pipe_whose_peer_is_gone_is_still_a_pipe() {
    let (a, b) = PipeChannel::pair().unwrap();
    drop(a);
    let c = PipeChannel::from_handle(crate::handle::duplicate_local(b.as_raw_handle()).unwrap())
        .unwrap();
    assert!(!c.is_socket());
    assert!(c.poll(Some(Duration::ZERO)).unwrap());
    assert!(matches!(recv(&c), Err(IpcError::Eof)));
}
