//! Listener, Client and authentication behaviours (NET-* of the CPython checklist), over TCP
//! on 127.0.0.1 and the platform's local family (Unix socket paths and Linux abstract names;
//! named pipes on Windows), with real child processes.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{about, bounded, for_each_context};

use mp_core::listener::{Address, AuthenticationError, Client, Listener, ListenerError};
use mp_core::{wait, Connection, Process};

const SECS: Duration = Duration::from_secs(10);
const KEY: &[u8] = b"a secret key";

fn tcp() -> Address {
    "127.0.0.1:0".parse().unwrap()
}

fn families() -> Vec<Address> {
    let mut v = vec![tcp(), Address::unique_local()];
    if cfg!(target_os = "linux") {
        v.push(
            format!("\0mp-test-{}-{}", std::process::id(), rand_u32())
                .parse()
                .unwrap(),
        );
    }
    v
}

fn rand_u32() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    t.subsec_nanos() ^ (t.as_secs() as u32)
}

#[test]
fn net_01_second_bind_on_live_address_fails() {
    for family in families() {
        let l = Listener::bind(&family, None).unwrap();
        match Listener::bind(l.address(), None) {
            Err(ListenerError::Io(e)) => {
                assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{family}")
            }
            other => panic!("{family}: expected AddrInUse, got {other:?}"),
        }
    }
}

#[test]
fn net_02_exchange_then_accept_after_close_fails() {
    bounded(30, || {
        for family in families() {
            let mut l = Listener::bind(&family, Some(KEY)).unwrap();
            let addr = l.address().clone();
            let t = std::thread::spawn(move || {
                let c = Client::connect::<i32>(&addr, Some(KEY)).unwrap();
                c.send(&1729).unwrap();
                // Wait for the server's reply so the connection outlives the exchange.
                c.recv_timeout(SECS).unwrap()
            });
            let conn = l.accept::<i32>().unwrap();
            assert_eq!(conn.recv_timeout(SECS).unwrap(), 1729);
            conn.send(&1).unwrap();
            assert_eq!(t.join().unwrap(), 1);
            l.close();
            assert!(matches!(l.accept::<i32>(), Err(ListenerError::Closed)));
            if let Address::Unix(p) = &family {
                assert!(!p.exists(), "closing removes the socket file");
            }
        }
    });
}

#[test]
fn net_03_empty_key_is_a_key() {
    bounded(30, || {
        let l = Listener::bind(&tcp(), Some(b"")).unwrap();
        let addr = l.address().clone();
        let t = std::thread::spawn(move || {
            let c = Client::connect::<i32>(&addr, Some(b"")).unwrap();
            c.send(&1729).unwrap();
            // A client with a real key is refused by a listener whose key is empty.
            Client::connect::<i32>(&addr, Some(b"x")).unwrap_err()
        });
        // Handshakes run concurrently: `accept` reports them in the order they finish,
        // which for these two may be either.
        let (mut good, mut bad) = (0, 0);
        for _ in 0..2 {
            match l.accept::<i32>() {
                Ok(c) => {
                    assert_eq!(c.recv_timeout(SECS).unwrap(), 1729);
                    good += 1;
                }
                Err(ListenerError::Authentication(AuthenticationError::BadResponse)) => bad += 1,
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        assert_eq!((good, bad), (1, 1));
        assert!(matches!(
            t.join().unwrap(),
            ListenerError::Authentication(AuthenticationError::Rejected)
        ));
    });
}

#[cfg(target_os = "linux")]
#[test]
fn net_04_abstract_socket() {
    bounded(30, || {
        let addr: Address = format!("\0mp-abstract-{}", std::process::id())
            .parse()
            .unwrap();
        let l = Listener::bind(&addr, Some(KEY)).unwrap();
        let t = std::thread::spawn(move || {
            Client::connect::<String>(&addr, Some(KEY))
                .unwrap()
                .send(&"abstract".into())
                .unwrap();
        });
        assert_eq!(
            l.accept::<String>().unwrap().recv_timeout(SECS).unwrap(),
            "abstract"
        );
        t.join().unwrap();
    });
}

fn say_hello(arg: (Address, Vec<u8>)) {
    let c = Client::connect::<String>(&arg.0, Some(&arg.1)).unwrap();
    c.send(&"hello".to_string()).unwrap();
    // Wait for the server's bytes, then leave.
    assert!(c.poll(SECS).unwrap());
    assert_eq!(c.recv().unwrap(), "bye");
}

fn say_hello_and_leave(arg: (Address, Vec<u8>)) {
    let c = Client::connect::<String>(&arg.0, Some(&arg.1)).unwrap();
    c.send(&"hello".to_string()).unwrap();
}

#[test]
fn net_05_children_connect_and_send() {
    for_each_context(60, |ctx| {
        for family in families() {
            let l = Listener::bind(&family, Some(KEY)).unwrap();
            let mut p = ctx.process(say_hello, (l.address().clone(), KEY.to_vec()));
            p.start().unwrap();
            let conn = l.accept_timeout::<String>(SECS).unwrap();
            assert_eq!(conn.recv_timeout(SECS).unwrap(), "hello");
            conn.send(&"bye".to_string()).unwrap();
            p.join_timeout(SECS).unwrap();
            assert_eq!(p.exitcode(), Some(0));
        }
    });
}

/// `last_accepted`: the TCP peer of the last accept (a new one each time), nothing for a
/// local client (an unnamed Unix socket, a named pipe), nothing before the first accept.
#[test]
fn last_accepted_names_the_tcp_peer() {
    bounded(60, || {
        for family in families() {
            let l = Listener::bind(&family, Some(KEY)).unwrap();
            assert_eq!(l.last_accepted(), None);
            let mut peers = Vec::new();
            for _ in 0..2 {
                let address = l.address().clone();
                let t = std::thread::spawn(move || {
                    Client::connect::<String>(&address, Some(KEY)).unwrap()
                });
                let _conn = l.accept_timeout::<String>(SECS).unwrap();
                peers.push(l.last_accepted());
                drop(t.join().unwrap());
            }
            match &family {
                Address::Tcp(_) => {
                    let ports: Vec<u16> = peers
                        .iter()
                        .map(|p| match p {
                            Some(Address::Tcp(a)) if a.ip().is_loopback() => a.port(),
                            other => panic!("expected a loopback TCP peer, got {other:?}"),
                        })
                        .collect();
                    assert_ne!(ports[0], ports[1]);
                }
                _ => assert_eq!(peers, [None, None], "{family:?}"),
            }
        }
    });
}

#[test]
fn net_05_client_may_send_and_leave_before_accept() {
    bounded(30, || {
        for family in families() {
            let l = Listener::bind(&family, None).unwrap();
            let mut p = Process::new(say_hello_and_leave_noauth, l.address().clone());
            p.start().unwrap();
            p.join_timeout(SECS).unwrap();
            std::thread::sleep(Duration::from_millis(200));
            let conn = l.accept_timeout::<String>(SECS).unwrap();
            assert_eq!(conn.recv_timeout(SECS).unwrap(), "hello");
        }
    });
    let _ = say_hello_and_leave;
}

fn answer_on(c: Connection<String>) {
    let m = c.recv_timeout(SECS).unwrap();
    c.send(&format!("{m}!")).unwrap();
}

#[test]
fn net_12_accepted_connection_works_in_a_child() {
    // Python passes an accepted connection to a child like any pipe end; so do we (on
    // Windows a TCP one is a socket handle, duplicated into the child).
    for_each_context(60, |ctx| {
        for family in families() {
            let l = Listener::bind(&family, Some(KEY)).unwrap();
            let addr = l.address().clone();
            let t = std::thread::spawn(move || {
                let c = Client::connect::<String>(&addr, Some(KEY)).unwrap();
                c.send(&"hi".to_string()).unwrap();
                c.recv_timeout(SECS)
            });
            let conn = l.accept_timeout::<String>(SECS).unwrap();
            let mut p = ctx.process(answer_on, conn);
            p.start().unwrap();
            assert_eq!(t.join().unwrap().unwrap(), "hi!", "{family}");
            p.join_timeout(SECS).unwrap();
            assert_eq!(p.exitcode(), Some(0), "{family}");
        }
    });
}

fn say_hello_and_leave_noauth(addr: Address) {
    let c = Client::connect::<String>(&addr, None).unwrap();
    c.send(&"hello".to_string()).unwrap();
}

#[test]
fn net_06_invalid_family() {
    // The other platform's local family.
    let foreign: Address = if cfg!(windows) {
        "/tmp/mp-test.sock"
    } else {
        r"\\.\pipe\mp-test"
    }
    .parse()
    .unwrap();
    assert!(matches!(
        Listener::bind(&foreign, None),
        Err(ListenerError::InvalidFamily(_))
    ));
    assert!(matches!(
        Client::connect::<()>(&foreign, None),
        Err(ListenerError::InvalidFamily(_))
    ));
}

#[test]
fn net_07_no_implicit_timeout() {
    bounded(30, || {
        let l = Listener::bind(&tcp(), Some(KEY)).unwrap();
        let addr = l.address().clone();
        let t = std::thread::spawn(move || {
            let c = Client::connect::<i32>(&addr, Some(KEY)).unwrap();
            std::thread::sleep(Duration::from_millis(1200));
            c.send(&123).unwrap();
            c.recv().unwrap()
        });
        let conn = l.accept::<i32>().unwrap();
        assert_eq!(conn.recv().unwrap(), 123);
        conn.send(&456).unwrap();
        assert_eq!(t.join().unwrap(), 456);
    });
}

#[test]
fn net_09_wrong_key_fails_both_sides_and_listener_keeps_serving() {
    bounded(30, || {
        for family in families() {
            let l = Listener::bind(&family, Some(KEY)).unwrap();
            let addr = l.address().clone();
            let t = std::thread::spawn(move || {
                let wrong = Client::connect::<i32>(&addr, Some(b"wrong key"));
                let right = Client::connect::<i32>(&addr, Some(KEY)).unwrap();
                right.send(&7).unwrap();
                // A client that skips the handshake and leaves.
                drop(Client::connect::<i32>(&addr, None).unwrap());
                wrong.map(|_| ())
            });
            // Handshakes run concurrently: the three come back in the order they finish.
            let (mut bad, mut good, mut other) = (0, 0, 0);
            for _ in 0..3 {
                match l.accept::<i32>() {
                    Err(ListenerError::Authentication(AuthenticationError::BadResponse)) => {
                        bad += 1
                    }
                    Ok(c) => {
                        assert_eq!(c.recv_timeout(SECS).unwrap(), 7);
                        good += 1
                    }
                    Err(_) => other += 1,
                }
            }
            assert_eq!((bad, good, other), (1, 1, 1), "{family}");
            let wrong = t.join().unwrap();
            assert!(
                matches!(
                    wrong,
                    Err(ListenerError::Authentication(AuthenticationError::Rejected))
                ),
                "{wrong:?}"
            );
        }
    });
}

fn wrong_server(arg: (Address, Vec<u8>)) {
    // A fake listener with a different key: the client must refuse it.
    let l = Listener::bind(&arg.0, Some(&arg.1)).unwrap();
    let _ = l.accept::<i32>();
}

#[test]
fn net_08_client_checks_the_listener_too() {
    // The client's key differs from the listener's: whatever order the failure is noticed,
    // both sides get an AuthenticationError, and a message is never delivered.
    bounded(30, || {
        let l = Listener::bind(&tcp(), Some(b"server key")).unwrap();
        let addr = l.address().clone();
        let t = std::thread::spawn(move || Client::connect::<i32>(&addr, Some(b"client key")));
        assert!(matches!(
            l.accept::<i32>(),
            Err(ListenerError::Authentication(_))
        ));
        assert!(matches!(
            t.join().unwrap(),
            Err(ListenerError::Authentication(_))
        ));
    });
    let _ = wrong_server;
}

fn raw_tcp(l: &Listener) -> TcpStream {
    match l.address() {
        Address::Tcp(a) => TcpStream::connect(a).unwrap(),
        _ => unreachable!(),
    }
}

fn read_challenge(s: &mut TcpStream) {
    let mut header = [0u8; 8];
    s.read_exact(&mut header).unwrap();
    let mut body = vec![0u8; u64::from_le_bytes(header) as usize];
    s.read_exact(&mut body).unwrap();
}

#[test]
fn net_10_bad_handshake_input_is_bounded() {
    bounded(60, || {
        let mut l = Listener::bind(&tcp(), Some(KEY)).unwrap();
        l.set_handshake_timeout(Duration::from_millis(500));

        // Each bad client runs on its own thread; the listener's accept must return.
        fn bad_client(
            l: &Listener,
            act: impl FnOnce(TcpStream) + Send + 'static,
        ) -> std::thread::JoinHandle<()> {
            let s = raw_tcp(l);
            std::thread::spawn(move || act(s))
        }

        // An oversized length: refused at once, nothing allocated.
        let c = bad_client(&l, |mut s| {
            read_challenge(&mut s);
            s.write_all(&u64::MAX.to_le_bytes()).unwrap();
        });
        match l.accept::<i32>() {
            Err(ListenerError::Authentication(AuthenticationError::Protocol(m))) => {
                assert!(m.contains("exceeds"), "{m}")
            }
            other => panic!("expected a protocol error, got {other:?}"),
        }
        c.join().unwrap();

        // Garbage of a plausible length.
        let c = bad_client(&l, |mut s| {
            read_challenge(&mut s);
            s.write_all(&20u64.to_le_bytes()).unwrap();
            s.write_all(&[0xAB; 20]).unwrap();
        });
        assert!(matches!(
            l.accept::<i32>(),
            Err(ListenerError::Authentication(
                AuthenticationError::Protocol(_)
            ))
        ));
        c.join().unwrap();

        // Garbage instead of a frame header at all (a huge "length" made of text).
        let c = bad_client(&l, |mut s| {
            let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        });
        assert!(matches!(
            l.accept::<i32>(),
            Err(ListenerError::Authentication(
                AuthenticationError::Protocol(_)
            ))
        ));
        c.join().unwrap();

        // A truncated frame, then the client leaves.
        let c = bad_client(&l, |mut s| {
            read_challenge(&mut s);
            s.write_all(&85u64.to_le_bytes()).unwrap();
            s.write_all(&[1; 10]).unwrap();
        });
        assert!(matches!(
            l.accept::<i32>(),
            Err(ListenerError::Authentication(AuthenticationError::Closed))
        ));
        c.join().unwrap();

        // A client that connects and says nothing: the handshake times out.
        let s = raw_tcp(&l);
        about("silent client", Duration::from_millis(500), || {
            assert!(matches!(
                l.accept::<i32>(),
                Err(ListenerError::Authentication(AuthenticationError::Timeout))
            ))
        });
        drop(s);

        // A slow-drip client cannot stretch the handshake past its deadline.
        let c = bad_client(&l, |mut s| {
            read_challenge(&mut s);
            for _ in 0..20 {
                if s.write_all(&[0]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        about("slow-drip client", Duration::from_millis(500), || {
            assert!(matches!(
                l.accept::<i32>(),
                Err(ListenerError::Authentication(AuthenticationError::Timeout))
            ))
        });
        c.join().unwrap();

        // After all that, the listener still serves a real client.
        let addr = l.address().clone();
        let t = std::thread::spawn(move || {
            Client::connect::<i32>(&addr, Some(KEY))
                .unwrap()
                .send(&5)
                .unwrap()
        });
        assert_eq!(l.accept::<i32>().unwrap().recv_timeout(SECS).unwrap(), 5);
        t.join().unwrap();
    });
}

#[test]
fn accept_and_connect_timeouts() {
    bounded(30, || {
        for family in [tcp(), Address::unique_local()] {
            let l = Listener::bind(&family, Some(KEY)).unwrap();
            about("accept_timeout", Duration::from_millis(300), || {
                assert!(matches!(
                    l.accept_timeout::<i32>(Duration::from_millis(300)),
                    Err(ListenerError::Timeout)
                ))
            });
            // (A client facing a listener that never answers: see hostile_server_* tests.)
            let addr = l.address().clone();
            let a = addr.clone();
            let t = std::thread::spawn(move || {
                Client::connect::<i32>(&a, Some(KEY))
                    .unwrap()
                    .send(&3)
                    .unwrap()
            });
            let c = l.accept_timeout::<i32>(SECS).unwrap();
            assert_eq!(c.recv_timeout(SECS).unwrap(), 3);
            t.join().unwrap();
            // (A pipe name lives while any of its instances is open: a client would find
            // it busy, not absent.)
            drop(c);
            drop(l);
            // Nobody listening: a prompt error, not a hang.
            let t = Instant::now();
            assert!(Client::connect_timeout::<i32>(&addr, Some(KEY), SECS).is_err());
            assert!(t.elapsed() < Duration::from_secs(3), "{family}");
        }
        let gone = Address::unique_local();
        assert!(Client::connect::<i32>(&gone, Some(KEY)).is_err());
    });
}

fn feed(arg: (Address, u32)) {
    let c = Client::connect::<(u32, u32)>(&arg.0, Some(KEY)).unwrap();
    for i in 0..10 {
        c.send(&(arg.1, i)).unwrap();
        std::thread::sleep(Duration::from_millis(
            (i as u64 * 7 + arg.1 as u64 * 13) % 40,
        ));
    }
}

#[test]
fn net_11_wait_over_accepted_connections() {
    bounded(60, || {
        let l = Listener::bind(&tcp(), Some(KEY)).unwrap();
        let mut kids = Vec::new();
        let mut conns: Vec<Connection<(u32, u32)>> = Vec::new();
        for n in 0..4 {
            let mut p = Process::new(feed, (l.address().clone(), n));
            p.start().unwrap();
            kids.push(p);
            conns.push(l.accept_timeout(SECS).unwrap());
        }
        let mut got = Vec::new();
        while !conns.is_empty() {
            let refs: Vec<&dyn mp_core::Waitable> =
                conns.iter().map(|c| c as &dyn mp_core::Waitable).collect();
            let ready = wait(&refs, Some(SECS)).unwrap();
            assert!(!ready.is_empty());
            let mut gone = Vec::new();
            for i in ready {
                match conns[i].recv() {
                    Ok(v) => got.push(v),
                    Err(mp_core::ConnectionError::Eof) => gone.push(i),
                    Err(e) => panic!("{e}"),
                }
            }
            gone.sort_unstable();
            for i in gone.into_iter().rev() {
                conns.remove(i);
            }
        }
        got.sort_unstable();
        let want: Vec<(u32, u32)> = (0..4).flat_map(|n| (0..10).map(move |i| (n, i))).collect();
        assert_eq!(got, want);
        for p in kids {
            p.join().unwrap();
        }
    });
}

/// Connects, sends `arg.1` and stays until the listener has read it, against a listener
/// whose queue may be full: a refused or cut connect (what a tiny backlog does to the
/// clients beyond it) is tried again, for a minute.
fn connect_retrying_and_send_id(arg: (Address, u32)) {
    let give_up = Instant::now() + Duration::from_secs(60);
    let c = loop {
        match Client::connect_timeout::<u32>(&arg.0, Some(KEY), SECS) {
            Ok(c) => break c,
            Err(e) if Instant::now() < give_up => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("client {}: {e:?}", arg.1),
        }
    };
    c.send(&arg.1).unwrap();
    // Stay until the listener has read it.
    assert!(c.poll(Duration::from_secs(60)).unwrap());
}

/// `Listener(address, backlog=1)`: more clients than the backlog, started before any
/// accept, queue up (in the kernel's queue or in their connect) and are all served once the
/// listener accepts.
#[test]
fn backlog_small_still_serves_every_client() {
    bounded(300, || {
        for family in families() {
            let l = Listener::bind_with_backlog(&family, Some(KEY), 1).unwrap();
            let mut kids = Vec::new();
            for n in 0..5u32 {
                let mut p = Process::new(connect_retrying_and_send_id, (l.address().clone(), n));
                p.start().unwrap();
                kids.push(p);
            }
            let mut conns = Vec::new();
            let mut got = Vec::new();
            // A client whose handshake was cut short (the queue was full) tries again: the
            // listener reports the cut one as that client's failure and goes on.
            let mut cut = 0;
            while conns.len() < 5 {
                match l.accept_timeout::<u32>(Duration::from_secs(90)) {
                    Ok(c) => {
                        got.push(c.recv_timeout(SECS).unwrap());
                        conns.push(c);
                    }
                    Err(ListenerError::Authentication(e)) => {
                        cut += 1;
                        assert!(
                            cut <= 50,
                            "{family}: {cut} handshakes cut short, last {e:?}"
                        );
                    }
                    Err(e) => panic!("{family}: {e:?}"),
                }
            }
            got.sort_unstable();
            assert_eq!(got, vec![0, 1, 2, 3, 4], "{family}");
            for c in &conns {
                c.send(&0).unwrap();
            }
            for p in kids {
                p.join_timeout(Duration::from_secs(60)).unwrap();
                assert_eq!(p.exitcode(), Some(0), "{family}");
            }
        }
    });
}

/// A non-blocking connect to a Unix socket path: `true` if connected (queued), `false` if
/// the listener's queue is full (`EAGAIN`). The descriptor is kept open in `keep`.
#[cfg(target_os = "linux")]
fn unix_connect_nonblocking(path: &std::path::Path, keep: &mut Vec<std::os::fd::OwnedFd>) -> bool {
    use std::os::fd::FromRawFd;
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: plain socket calls on a fresh descriptor and a zeroed, filled-in sockaddr_un.
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0);
        assert!(fd >= 0);
        let owned = std::os::fd::OwnedFd::from_raw_fd(fd);
        let mut sa: libc::sockaddr_un = std::mem::zeroed();
        sa.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let bytes = path.as_os_str().as_bytes();
        assert!(bytes.len() < sa.sun_path.len());
        for (d, s) in sa.sun_path.iter_mut().zip(bytes) {
            *d = *s as libc::c_char;
        }
        let r = libc::connect(
            fd,
            (&sa as *const libc::sockaddr_un).cast(),
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        );
        if r == 0 {
            keep.push(owned);
            true
        } else {
            let e = std::io::Error::last_os_error();
            assert_eq!(e.raw_os_error(), Some(libc::EAGAIN), "{e}");
            false
        }
    }
}

/// The backlog is applied (Linux, Unix sockets, where a full queue refuses a non-blocking
/// connect at once): with backlog 1 only a couple of connections queue while nobody
/// accepts, with the default many more do, and accepting drains the queue so that new
/// clients get in again.
#[cfg(target_os = "linux")]
#[test]
fn backlog_bounds_the_queue_on_linux() {
    bounded(60, || {
        let count = |l: &Listener, keep: &mut Vec<std::os::fd::OwnedFd>| {
            let Address::Unix(path) = l.address() else {
                unreachable!()
            };
            (0..20)
                .take_while(|_| unix_connect_nonblocking(path, keep))
                .count()
        };
        let mut keep = Vec::new();
        let small = Listener::bind_with_backlog(&Address::unique_local(), None, 1).unwrap();
        let queued = count(&small, &mut keep);
        assert!((1..=3).contains(&queued), "backlog 1 queued {queued}");
        let default = Listener::bind(&Address::unique_local(), None).unwrap();
        assert_eq!(
            count(&default, &mut keep),
            20,
            "the default backlog is larger"
        );
        // Accepting takes the queued clients; then the queue has room again.
        for _ in 0..queued {
            small.accept_timeout::<u8>(SECS).unwrap();
        }
        let Address::Unix(path) = small.address() else {
            unreachable!()
        };
        assert!(unix_connect_nonblocking(path, &mut keep));
    });
}
