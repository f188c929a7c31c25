//! A child that misbehaves on purpose on its pipe to the parent: messages nested deeply
//! enough to exhaust any stack, descriptors nobody announced, a frame whose body stalls,
//! a descriptor count that lies to smuggle a message, random bytes, lengths far beyond the
//! message. Whatever it does, the parent gets a typed error or the right data, holds none
//! of its descriptors, never waits past its deadline, never panics or dies (issue #12,
//! findings 6 to 9; docs/security.md).

mod common;

use std::time::Duration;

use common::{bounded, Rng};
use mp_core::{pipe, Connection, ConnectionError, DecodeError, OsHandle, Process, Reader};
use serde::{Deserialize, Serialize};

/// A recursive type: each `Node` is one byte on the wire, one stack frame chain to decode.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Nest {
    Leaf(u32),
    Node(Box<Nest>),
}

/// Sends a megabyte of nesting (512 Ki levels and more), then a plain value.
fn send_deep(conn: Connection<Nest>) {
    conn.send_bytes(&vec![1u8; 1 << 20]).unwrap();
    conn.send(&Nest::Leaf(5)).unwrap();
    let _ = conn.recv_bytes(); // stay until the parent is done
}

/// Finding 6: postcard has no depth limit, so this overflowed the parent's stack.
#[test]
fn a_deeply_nested_message_is_too_deep_not_a_stack_overflow() {
    bounded(60, || {
        let (a, b) = pipe::<Nest>().unwrap();
        let mut p = Process::new(send_deep, b);
        p.start().unwrap();
        match a.recv_timeout(Duration::from_secs(20)) {
            Err(ConnectionError::Decode(DecodeError::TooDeep { limit })) => {
                assert_eq!(limit, mp_core::codec::MAX_DECODE_DEPTH)
            }
            other => panic!("expected TooDeep, got {other:?}"),
        }
        // The message was consumed whole: the connection goes on.
        assert_eq!(
            a.recv_timeout(Duration::from_secs(20)).unwrap(),
            Nest::Leaf(5)
        );
        a.send_bytes(b"bye").unwrap();
        p.join().unwrap();
    });
}

/// Sends messages whose encodings lie about their lengths: a `Vec<u64>` of 2^60 elements, a
/// `String` of 2^40 bytes, a `Vec<()>` of 2^62 elements (ten bytes of message, 2^62 loop
/// turns), each in a frame of a few bytes; then a good one.
fn send_lying_lengths(conn: Connection<(Vec<u64>, String, Vec<()>)>) {
    let varint = |n: u64| postcard::to_stdvec(&n).unwrap();
    conn.send_bytes(&varint(1 << 60)).unwrap();
    let mut s = varint(0);
    s.extend(varint(1 << 40));
    conn.send_bytes(&s).unwrap();
    let mut z = varint(0);
    z.extend(varint(0));
    z.extend(varint(1 << 62));
    conn.send_bytes(&z).unwrap();
    conn.send(&(vec![1, 2], "ok".into(), vec![(); 3])).unwrap();
    let _ = conn.recv_bytes();
}

#[test]
fn lengths_beyond_the_message_are_decode_errors_without_allocation_or_spinning() {
    bounded(60, || {
        let (a, b) = pipe::<(Vec<u64>, String, Vec<()>)>().unwrap();
        let mut p = Process::new(send_lying_lengths, b);
        p.start().unwrap();
        let t = Duration::from_secs(20);
        assert!(matches!(
            a.recv_timeout(t),
            Err(ConnectionError::Decode(DecodeError::Invalid(_)))
        ));
        assert!(matches!(
            a.recv_timeout(t),
            Err(ConnectionError::Decode(DecodeError::Invalid(_)))
        ));
        assert!(matches!(
            a.recv_timeout(t),
            Err(ConnectionError::Decode(DecodeError::TooManyElements { .. }))
        ));
        assert_eq!(
            a.recv_timeout(t).unwrap(),
            (vec![1, 2], "ok".into(), vec![(); 3])
        );
        a.send_bytes(b"bye").unwrap();
        p.join().unwrap();
    });
}

/// Sends a 4 MiB message (more than any pipe or ring holds), checking the other end is
/// ready first; the parent stops this process in the middle of it. `typed`: sent with
/// `send` (a `Vec<u8>` value), else with `send_bytes`.
#[cfg(unix)]
fn send_big((conn, typed): (Connection<Vec<u8>>, bool)) {
    conn.send_bytes(b"ready").unwrap();
    let big: Vec<u8> = (0..4 << 20).map(|i| (i % 251) as u8).collect();
    if typed {
        conn.send(&big).unwrap();
    } else {
        conn.send_bytes(&big).unwrap();
    }
    let _ = conn.recv_bytes();
}

/// Finding 8: a frame whose header arrived and whose body stalls (its sender is stopped)
/// made `recv_timeout` wait until the sender went on or died. Now the timeout holds, the part
/// received is kept, and the next receive continues the frame: for bytes and for a typed
/// `Vec<u8>` (whose receive splits the length off inside the transport).
#[cfg(unix)]
#[test]
fn a_stalled_body_times_out_and_the_frame_continues_later() {
    bounded(120, || {
        for typed in [false, true] {
            let (a, b) = pipe::<Vec<u8>>().unwrap();
            let mut p = Process::new(send_big, (b, typed));
            p.start().unwrap();
            let pid = p.pid().unwrap() as libc::pid_t;
            assert_eq!(
                a.recv_bytes_timeout(Duration::from_secs(20)).unwrap(),
                b"ready"
            );
            // The header of the big frame is there: the child is inside its send.
            assert!(a.poll(Duration::from_secs(20)).unwrap());
            // SAFETY: stopping our own child.
            unsafe { libc::kill(pid, libc::SIGSTOP) };
            for _ in 0..3 {
                let short = Duration::from_millis(300);
                let got = if typed {
                    a.recv_timeout(short)
                } else {
                    a.recv_bytes_timeout(short)
                };
                assert!(matches!(got, Err(ConnectionError::Timeout)), "{got:?}");
            }
            // Part of a frame does not make the connection ready.
            assert!(mp_core::wait(&[&a], Some(Duration::from_millis(200)))
                .unwrap()
                .is_empty());
            // SAFETY: resuming it.
            unsafe { libc::kill(pid, libc::SIGCONT) };
            let long = Duration::from_secs(60);
            let big = if typed {
                a.recv_timeout(long).unwrap()
            } else {
                a.recv_bytes_timeout(long).unwrap()
            };
            assert_eq!(big.len(), 4 << 20);
            assert!(big.iter().enumerate().all(|(i, &x)| x == (i % 251) as u8));
            a.send_bytes(b"bye").unwrap();
            p.join().unwrap();
        }
    });
}

/// The structured type random bodies are decoded as.
type Records = Vec<(u32, String)>;

/// Sends `frames` as they are (random junk, mostly), then exits.
fn send_raw_frames(arg: (Connection<Records>, Vec<Vec<u8>>)) {
    for f in arg.1 {
        let _ = arg.0.send_bytes(&f);
    }
}

/// Random message bodies decoded as a structured type: a typed error or a value each
/// time, the connection usable throughout.
#[test]
fn random_message_bodies_are_decode_errors_or_values() {
    bounded(120, || {
        for seed in [1u64, 7, 42, 1234, 0xdead_beef] {
            let mut rng = Rng(seed);
            let frames: Vec<Vec<u8>> = (0..200)
                .map(|_| {
                    let n = (rng.next() % 64) as usize;
                    rng.bytes(n)
                })
                .collect();
            let (a, b) = pipe::<Records>().unwrap();
            let mut p = Process::new(send_raw_frames, (b, frames));
            p.start().unwrap();
            let mut got = 0;
            loop {
                match a.recv_timeout(Duration::from_secs(20)) {
                    Ok(_) | Err(ConnectionError::Decode(_)) => got += 1,
                    Err(ConnectionError::Eof) => break,
                    Err(e) => panic!("seed {seed}: unexpected {e:?}"),
                }
            }
            assert_eq!(got, 200, "seed {seed}");
            p.join().unwrap();
        }
    });
}

/// Raw ends of this platform's pipes: a connection, and the other end as a handle for a
/// child that writes whatever bytes it likes into it.
mod raw {
    use mp_core::{Connection, OsHandle};

    /// A connection over one end of a raw pair; the other end as a handle.
    #[cfg(unix)]
    pub fn pair<T>() -> (Connection<T>, OsHandle) {
        use std::os::fd::OwnedFd;
        let (x, y) = std::os::unix::net::UnixStream::pair().unwrap();
        (
            Connection::from_handle(OwnedFd::from(x)).unwrap(),
            OsHandle::from(OwnedFd::from(y)),
        )
    }

    /// A connection over one end of a raw pair; the other end as a handle.
    #[cfg(windows)]
    pub fn pair<T>() -> (Connection<T>, OsHandle) {
        let (x, y) = mp_windows::PipeChannel::pair().unwrap();
        (
            Connection::from_handle(x.into_handle()).unwrap(),
            OsHandle::from(y.into_handle()),
        )
    }

    /// The other end, in the child.
    #[cfg(unix)]
    pub struct End(std::fs::File);

    /// The other end, in the child.
    #[cfg(windows)]
    pub struct End(mp_windows::PipeChannel);

    impl End {
        #[cfg(unix)]
        pub fn open(h: OsHandle) -> Self {
            Self(std::fs::File::from(h.into_inner()))
        }

        #[cfg(windows)]
        pub fn open(h: OsHandle) -> Self {
            Self(mp_windows::PipeChannel::from_handle(h.into_inner()).unwrap())
        }

        /// Writes `bytes` as they are.
        pub fn write(&self, bytes: &[u8]) -> std::io::Result<()> {
            #[cfg(unix)]
            return std::io::Write::write_all(&mut &self.0, bytes);
            #[cfg(windows)]
            return self.0.write_raw(bytes);
        }
    }

    /// A frame without handles: its header, then `body`.
    pub fn frame(body: &[u8]) -> Vec<u8> {
        let mut v = (body.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }
}

/// After a frame whose prefix lied: `Corrupt`, then `Broken` for good; the value hidden
/// in the frame's body (any `u32`) is never delivered.
fn assert_broken_and_nothing_smuggled(conn: &Connection<u32>) {
    assert!(matches!(
        conn.recv_timeout(Duration::from_secs(20)),
        Err(ConnectionError::Corrupt(_))
    ));
    for _ in 0..5 {
        match conn.recv_timeout(Duration::from_millis(100)) {
            Ok(v) => panic!("delivered {v:#x} after a framing error"),
            Err(e) => assert!(matches!(e, ConnectionError::Broken), "{e:?}"),
        }
    }
}

/// Writes a header announcing 1000 bytes and 10 of them, then waits to be told to go on.
fn stall_then_finish(arg: (OsHandle, Reader<()>)) {
    let end = raw::End::open(arg.0);
    let body: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
    let f = raw::frame(&body);
    end.write(&f[..18]).unwrap();
    arg.1.recv_bytes().unwrap();
    end.write(&f[18..]).unwrap();
    end.write(&raw::frame(b"next")).unwrap();
    std::thread::sleep(Duration::from_secs(30));
}

/// Finding 8 on a raw pipe: a header and then nothing. `recv_bytes_timeout` returns
/// `Timeout` each time, loses nothing, and the frame completes when the rest comes.
#[test]
fn a_header_then_silence_times_out_without_losing_the_frame() {
    bounded(60, || {
        let (conn, theirs) = raw::pair::<()>();
        let (go_rx, go_tx) = mp_core::pipe_oneway::<()>().unwrap();
        let mut p = Process::new(stall_then_finish, (theirs, go_rx));
        p.start().unwrap();
        for _ in 0..3 {
            assert!(matches!(
                conn.recv_bytes_timeout(Duration::from_millis(300)),
                Err(ConnectionError::Timeout)
            ));
        }
        go_tx.send_bytes(b"go").unwrap();
        let body = conn.recv_bytes_timeout(Duration::from_secs(20)).unwrap();
        assert_eq!(body, (0..1000u32).map(|i| i as u8).collect::<Vec<u8>>());
        assert_eq!(
            conn.recv_bytes_timeout(Duration::from_secs(20)).unwrap(),
            b"next"
        );
        p.kill().unwrap();
        p.join().ok();
    });
}

/// Random bytes (not frames) written into the pipe, in pieces.
fn write_junk(arg: (OsHandle, u64)) {
    let end = raw::End::open(arg.0);
    let mut rng = Rng(arg.1);
    for _ in 0..64 {
        let n = (rng.next() % 300) as usize;
        let mut junk = rng.bytes(n);
        // Now and then a small header, so that some frames parse.
        if rng.next().is_multiple_of(3) && junk.len() >= 8 {
            junk[..8].copy_from_slice(&(rng.next() % 32).to_le_bytes());
        }
        if end.write(&junk).is_err() {
            return;
        }
    }
}

/// A child writing arbitrary bytes into its pipe end: every receive is a value, a typed
/// error, or a timeout; the parent never panics, and the first framing error is final.
#[test]
fn random_bytes_on_the_pipe_are_typed_errors() {
    bounded(120, || {
        for seed in [3u64, 99, 2024, 0x1234_5678, 0xfeed_f00d] {
            let (mut conn, theirs) = raw::pair::<Vec<String>>();
            conn.set_max_message_size(1 << 20);
            let mut p = Process::new(write_junk, (theirs, seed));
            p.start().unwrap();
            let mut broken = false;
            for _ in 0..200 {
                match conn.recv_timeout(Duration::from_millis(500)) {
                    Ok(_) | Err(ConnectionError::Decode(_)) => assert!(!broken),
                    Err(ConnectionError::Timeout) => {}
                    Err(ConnectionError::Eof) => break,
                    Err(
                        ConnectionError::TooLarge { .. }
                        | ConnectionError::Truncated { .. }
                        | ConnectionError::Corrupt(_),
                    ) => broken = true,
                    Err(ConnectionError::Broken) => {
                        assert!(broken);
                        break;
                    }
                    Err(e) => panic!("seed {seed}: unexpected {e:?}"),
                }
            }
            p.join().ok();
        }
    });
}

#[cfg(unix)]
mod unix {
    use std::io::Write;
    use std::os::fd::{AsRawFd, RawFd};
    use std::time::Duration;

    use super::bounded;
    use crate::common::{fds_to, send_with_fds};
    use mp_core::{Connection, ConnectionError, OsHandle, Process};

    /// A frame: header (with the handles flag and a count when `count` is given), body.
    fn frame(body: &[u8], count: Option<u32>) -> Vec<u8> {
        let mut h = body.len() as u64;
        if count.is_some() {
            h |= 1 << 63;
        }
        let mut v = h.to_le_bytes().to_vec();
        if let Some(c) = count {
            v.extend_from_slice(&c.to_le_bytes());
        }
        v.extend_from_slice(body);
        v
    }

    /// In a loop: 80 frames carrying 200 descriptors of `path` each that their headers do
    /// not announce; then a frame announcing 1 with 3 attached; then stays.
    fn stray_descriptors(arg: (OsHandle, String)) {
        let sock = arg.0.into_inner();
        let files: Vec<std::fs::File> = (0..200)
            .map(|_| std::fs::File::open(&arg.1).unwrap())
            .collect();
        let fds: Vec<RawFd> = files.iter().map(|f| f.as_raw_fd()).collect();
        let body = postcard::to_stdvec(&7u32).unwrap();
        for _ in 0..80 {
            send_with_fds(sock.as_raw_fd(), &frame(&body, None), &fds);
        }
        std::thread::sleep(Duration::from_secs(30));
    }

    fn too_many_descriptors(arg: (OsHandle, String)) {
        let sock = arg.0.into_inner();
        let files: Vec<std::fs::File> = (0..3)
            .map(|_| std::fs::File::open(&arg.1).unwrap())
            .collect();
        let fds: Vec<RawFd> = files.iter().map(|f| f.as_raw_fd()).collect();
        let body = postcard::to_stdvec(&0u32).unwrap(); // handle index 0
        send_with_fds(sock.as_raw_fd(), &frame(&body, Some(1)), &fds);
        // A well-formed value after it, which must not be read as if nothing happened.
        send_with_fds(sock.as_raw_fd(), &frame(&body, None), &[]);
        std::thread::sleep(Duration::from_secs(30));
    }

    fn scratch_file(tag: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("mp-hostile-{tag}-{}", std::process::id()));
        std::fs::write(&p, b"x").unwrap();
        p
    }

    /// Finding 7: the parent held every descriptor the child attached to frames that did not
    /// announce them (19 994 after 80 frames). Now the first such frame closes what came and
    /// breaks the connection; the parent ends up holding none.
    #[test]
    fn unannounced_descriptors_are_closed_and_break_the_connection() {
        bounded(60, || {
            let path = scratch_file("stray");
            let (conn, theirs) = super::raw::pair::<u32>();
            let mut p = Process::new(
                stray_descriptors,
                (theirs, path.to_string_lossy().into_owned()),
            );
            p.start().unwrap();
            let t = Duration::from_secs(20);
            assert!(
                matches!(conn.recv_timeout(t), Err(ConnectionError::Corrupt(_))),
                "the first stray descriptors break the connection"
            );
            for _ in 0..100 {
                assert!(matches!(conn.recv_timeout(t), Err(ConnectionError::Broken)));
            }
            assert_eq!(fds_to(&path), 0, "descriptors of the child left open");
            p.kill().unwrap();
            p.join().ok();
            std::fs::remove_file(path).unwrap();
        });
    }

    #[test]
    fn more_descriptors_than_announced_are_closed_and_break_the_connection() {
        bounded(60, || {
            let path = scratch_file("more");
            let (conn, theirs) = super::raw::pair::<OsHandle>();
            let mut p = Process::new(
                too_many_descriptors,
                (theirs, path.to_string_lossy().into_owned()),
            );
            p.start().unwrap();
            let t = Duration::from_secs(20);
            assert!(matches!(
                conn.recv_timeout(t),
                Err(ConnectionError::Corrupt(_))
            ));
            assert!(matches!(conn.recv_timeout(t), Err(ConnectionError::Broken)));
            assert_eq!(fds_to(&path), 0);
            p.kill().unwrap();
            p.join().ok();
            std::fs::remove_file(path).unwrap();
        });
    }

    /// Sends a legitimate message with a descriptor, for a receiver that does not want it.
    fn announced_descriptor(arg: (Connection<OsHandle>, String)) {
        let f = std::fs::File::open(&arg.1).unwrap();
        arg.0.send(&OsHandle::from(f)).unwrap();
        let _ = arg.0.recv_bytes();
    }

    /// A frame that announced its descriptors, received as plain bytes: they are closed at
    /// once, the connection goes on.
    #[test]
    fn announced_descriptors_of_a_plain_receive_are_closed() {
        bounded(60, || {
            let path = scratch_file("plain");
            let (a, b) =
                mp_core::connection::pipe_with::<OsHandle, mp_core::connection::Socket>().unwrap();
            let mut p = Process::new(
                announced_descriptor,
                (b, path.to_string_lossy().into_owned()),
            );
            p.start().unwrap();
            let bytes = a.recv_bytes_timeout(Duration::from_secs(20)).unwrap();
            assert!(!bytes.is_empty());
            assert_eq!(fds_to(&path), 0);
            a.send_bytes(b"bye").unwrap();
            p.join().unwrap();
            std::fs::remove_file(path).unwrap();
        });
    }

    /// Announces two descriptors, attaches none, and hides a whole frame carrying the value
    /// 0xBAD inside the body.
    fn smuggle(sock: OsHandle) {
        let sock = sock.into_inner();
        let smuggled = frame(&postcard::to_stdvec(&0xBADu32).unwrap(), None);
        let mut body = smuggled.clone();
        body.extend_from_slice(&smuggled);
        let mut raw = std::fs::File::from(sock);
        raw.write_all(&frame(&body, Some(2))).unwrap();
        raw.write_all(&frame(&postcard::to_stdvec(&1u32).unwrap(), None))
            .unwrap();
        std::thread::sleep(Duration::from_secs(30));
    }

    /// Finding 9: a count that did not match left the body in the stream, read next as
    /// frames of its own: the smuggled value was delivered. Now the connection breaks.
    #[test]
    fn a_lying_descriptor_count_breaks_the_connection_and_smuggles_nothing() {
        bounded(60, || {
            let (conn, theirs) = super::raw::pair::<u32>();
            let mut p = Process::new(smuggle, theirs);
            p.start().unwrap();
            super::assert_broken_and_nothing_smuggled(&conn);
            p.kill().unwrap();
            p.join().ok();
        });
    }

    /// Finds this process's boot channel (its only socket, for a spawned child with no
    /// other connections), writes a header announcing a 1 MiB report, gives the channel to a
    /// grandchild that keeps it open and silent, sends the grandchild's pid, and exits.
    fn stall_the_boot_channel(tell: mp_core::Writer<u32>) {
        // The one socket this child has besides `tell`.
        let mine = tell_fd(&tell);
        let boot = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .flatten()
            .filter_map(|e| {
                let fd: RawFd = e.file_name().to_string_lossy().parse().ok()?;
                let link = std::fs::read_link(e.path()).ok()?;
                (link.to_string_lossy().starts_with("socket:") && Some(fd) != mine).then_some(fd)
            })
            .next()
            .expect("a boot channel");
        let header = (1u64 << 20).to_le_bytes();
        // SAFETY: writing to a descriptor of this process.
        unsafe { libc::write(boot, header.as_ptr().cast(), 8) };
        // SAFETY: fork in a single-threaded moment of the child is not needed: the
        // grandchild only sleeps (async-signal-safe) and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: sleeping, then leaving without running any destructor.
            unsafe {
                libc::sleep(60);
                libc::_exit(0);
            }
        }
        tell.send(&(pid as u32)).unwrap();
    }

    fn tell_fd(w: &mp_core::Writer<u32>) -> Option<RawFd> {
        use mp_core::Waitable;
        w.wait_handle()
    }

    /// The parent reads an ended child's reports from its boot channel; a grandchild that
    /// kept the channel and a half-written report there held `join` for ever.
    #[test]
    fn a_stalled_report_does_not_hold_join() {
        bounded(60, || {
            let (rx, tx) =
                mp_core::connection::pipe_oneway_with::<u32, mp_core::connection::Socket>()
                    .unwrap();
            let ctx = mp_core::get_context(mp_core::StartMethod::Spawn).unwrap();
            let mut p = ctx.process(stall_the_boot_channel, tx);
            p.start().unwrap();
            let grandchild = rx.recv_timeout(Duration::from_secs(20)).unwrap();
            let joined = p.join();
            // SAFETY: killing the grandchild this test made.
            unsafe { libc::kill(grandchild as libc::pid_t, libc::SIGKILL) };
            joined.unwrap();
            assert_eq!(p.exitcode(), Some(0));
        });
    }
}

#[cfg(windows)]
mod windows {
    use std::os::windows::io::{AsRawHandle, OwnedHandle};
    use std::time::Duration;

    use super::bounded;
    use mp_core::{ConnectionError, OsHandle, Process};

    /// A frame: header (with the handles flag when `handles`), body.
    fn frame(body: &[u8], handles: bool) -> Vec<u8> {
        let mut h = body.len() as u64;
        if handles {
            h |= 1 << 63;
        }
        let mut v = h.to_le_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    /// A handle prefix naming the parent itself and a handle of the parent's (`value`),
    /// then a well-formed message.
    fn steal_a_handle(arg: (OsHandle, u32, u64)) {
        let pipe = super::raw::End::open(arg.0);
        let mut body = 1u32.to_le_bytes().to_vec();
        body.extend_from_slice(&arg.1.to_le_bytes());
        body.extend_from_slice(&arg.2.to_le_bytes());
        body.extend_from_slice(&postcard::to_stdvec(&0u32).unwrap());
        pipe.write(&frame(&body, true)).unwrap();
        pipe.write(&frame(&postcard::to_stdvec(&0u32).unwrap(), false))
            .unwrap();
        std::thread::sleep(Duration::from_secs(30));
    }

    /// Whether `h` is an open handle of this process.
    fn is_open(h: &OwnedHandle) -> bool {
        let mut flags = 0u32;
        // SAFETY: GetHandleInformation only inspects the handle table.
        unsafe {
            windows_sys::Win32::Foundation::GetHandleInformation(h.as_raw_handle(), &mut flags) != 0
        }
    }

    /// A hostile child named the parent as the sender of a handle and one of the parent's
    /// own handles as its value: the parent took it (`DUPLICATE_CLOSE_SOURCE`), closing its
    /// own handle. Now a message may only name handles this process exported: the
    /// connection breaks, the handle stays.
    #[test]
    fn a_handle_prefix_cannot_take_the_receivers_own_handles() {
        bounded(60, || {
            let file = std::fs::File::open(std::env::current_exe().unwrap()).unwrap();
            let mine = OwnedHandle::from(file);
            let value = mine.as_raw_handle() as usize as u64;
            let (conn, theirs) = super::raw::pair::<OsHandle>();
            let mut p = Process::new(steal_a_handle, (theirs, std::process::id(), value));
            p.start().unwrap();
            let t = Duration::from_secs(20);
            assert!(matches!(
                conn.recv_timeout(t),
                Err(ConnectionError::Corrupt(_))
            ));
            assert!(matches!(conn.recv_timeout(t), Err(ConnectionError::Broken)));
            assert!(is_open(&mine), "the parent's own handle was taken");
            p.kill().unwrap();
            p.join().ok();
        });
    }

    /// A handle prefix whose count is far beyond the body, and a message hidden inside.
    fn bad_prefix(h: OsHandle) {
        let pipe = super::raw::End::open(h);
        let mut body = 1_000_000u32.to_le_bytes().to_vec();
        body.extend_from_slice(&1u32.to_le_bytes());
        body.extend_from_slice(&frame(&postcard::to_stdvec(&0xBADu32).unwrap(), false));
        pipe.write(&frame(&body, true)).unwrap();
        pipe.write(&frame(&postcard::to_stdvec(&1u32).unwrap(), false))
            .unwrap();
        std::thread::sleep(Duration::from_secs(30));
    }

    /// Finding 9 on Windows: a malformed handle prefix breaks the connection; nothing
    /// after it is delivered as if all were well.
    #[test]
    fn a_malformed_handle_prefix_breaks_the_connection() {
        bounded(60, || {
            let (conn, theirs) = super::raw::pair::<u32>();
            let mut p = Process::new(bad_prefix, theirs);
            p.start().unwrap();
            super::assert_broken_and_nothing_smuggled(&conn);
            p.kill().unwrap();
            p.join().ok();
        });
    }
}
