//! Talking to CPython itself (issue #16, item 7): mp's Python wire mode against the real
//! `multiprocessing.connection` of the `python3` on this machine (3.11: the legacy HMAC-MD5
//! handshake on its side), in both directions, with a right and a wrong key, over TCP and a
//! Unix socket. The Python 3.12+ digest negotiation is checked against a transcript in
//! `listener/python.rs`'s unit tests (no 3.12+ interpreter here).
//!
//! Unix only: the Windows run (under Wine) has no Python.
#![cfg(unix)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use mp_core::listener::python::{Client, Listener};
use mp_core::listener::Address;
use mp_core::{AuthenticationError, ListenerError};

fn script(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(name)
        .display()
        .to_string()
}

/// A Python process, killed if the test fails before it ends.
struct Py(Child);

impl Drop for Py {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts a Python echo server; returns it, its address and its output.
fn python_server(args: &[&str]) -> (Py, Address, BufReader<ChildStdout>) {
    let mut child = Command::new("python3")
        .arg(script("tests/python/echo_server.py"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 runs");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let address = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    (Py(child), address, out)
}

fn next_line(out: &mut BufReader<ChildStdout>) -> String {
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    line.trim().to_string()
}

/// A Rust client against Python's Listener: right key, then wrong key, then right again.
#[test]
fn rust_client_to_python_listener() {
    common::bounded(120, || {
        let (mut server, address, mut out) = python_server(&["tcp", "secret", "3"]);
        let conn = Client::connect_timeout(&address, Some(b"secret"), Duration::from_secs(30))
            .expect("the right key is accepted");
        conn.send_bytes(b"hello python").unwrap();
        assert_eq!(conn.recv_bytes().unwrap(), b"HELLO PYTHON");
        // A message larger than the socket buffers, in one piece.
        let big = vec![b'x'; 3 << 20];
        conn.send_bytes(&big).unwrap();
        assert_eq!(conn.recv_bytes().unwrap().len(), big.len());
        conn.send_bytes(b"len?").unwrap();
        assert_eq!(conn.recv_bytes().unwrap(), big.len().to_string().as_bytes());
        conn.send_bytes(b"").unwrap();
        assert_eq!(conn.recv_bytes().unwrap(), b"");
        drop(conn);
        assert_eq!(next_line(&mut out), "client done");

        match Client::connect_timeout(&address, Some(b"wrong"), Duration::from_secs(30)) {
            Err(ListenerError::Authentication(AuthenticationError::Rejected)) => {}
            other => panic!("expected a rejection, got {other:?}"),
        }
        assert!(next_line(&mut out).starts_with("refused"));

        let conn = Client::connect(&address, Some(b"secret")).unwrap();
        conn.send_bytes(b"again").unwrap();
        assert_eq!(conn.recv_bytes().unwrap(), b"AGAIN");
        drop(conn);
        assert_eq!(next_line(&mut out), "client done");
        assert!(server.0.wait().unwrap().success());
    });
}

/// The same over a Unix socket (Python's `AF_UNIX` family).
#[test]
fn rust_client_to_python_listener_over_a_unix_socket() {
    common::bounded(120, || {
        let path = std::env::temp_dir().join(format!("mp-pywire-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let (mut server, address, mut out) =
            python_server(&["unix", path.to_str().unwrap(), "k", "1"]);
        assert!(matches!(address, Address::Unix(_)));
        let conn = Client::connect(&address, Some(b"k")).unwrap();
        conn.send_bytes(b"over unix").unwrap();
        assert_eq!(conn.recv_bytes().unwrap(), b"OVER UNIX");
        drop(conn);
        assert_eq!(next_line(&mut out), "client done");
        assert!(server.0.wait().unwrap().success());
    });
}

/// Python's Client against a Rust Listener: right key, wrong key, and messages both ways.
#[test]
fn python_client_to_rust_listener() {
    common::bounded(120, || {
        let listener = Listener::bind(&"127.0.0.1:0".parse().unwrap(), Some(b"secret")).unwrap();
        let Address::Tcp(addr) = listener.address().clone() else {
            unreachable!()
        };
        let run_client = |key: &str| {
            Command::new("python3")
                .arg(script("examples/python/echo_client.py"))
                .arg(addr.to_string())
                .arg(key)
                .args(["one", "two"])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let client = run_client("secret");
        let conn = listener.accept().expect("the right key is accepted");
        for want in ["one", "two"] {
            let m = conn.recv_bytes().unwrap();
            assert_eq!(m, want.as_bytes());
            conn.send_bytes(&m.to_ascii_uppercase()).unwrap();
        }
        assert_eq!(conn.recv_bytes().unwrap(), b"bye");
        let out = client.wait_with_output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("python got 'ONE'") && text.contains("python got 'TWO'"),
            "{text}"
        );

        let client = run_client("wrong");
        match listener.accept() {
            Err(ListenerError::Authentication(AuthenticationError::BadResponse)) => {}
            other => panic!("expected a refused client, got {other:?}"),
        }
        let out = client.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(3));
        assert!(String::from_utf8_lossy(&out.stdout).contains("AUTHENTICATION FAILED"));
    });
}

/// A client that sends garbage instead of answering the challenge, or a huge length, is a
/// typed error, bounded in time and memory; the listener goes on.
#[test]
fn hostile_clients_are_refused() {
    use std::io::Write;
    common::bounded(60, || {
        let mut listener =
            Listener::bind(&"127.0.0.1:0".parse().unwrap(), Some(b"secret")).unwrap();
        listener.set_handshake_timeout(Duration::from_secs(2));
        let Address::Tcp(addr) = listener.address().clone() else {
            unreachable!()
        };
        // A 4 GiB announced answer: refused before allocation.
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        let t = std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            let _ = std::io::Read::read(&mut s, &mut buf);
            let _ = s.write_all(&[0x7f, 0xff, 0xff, 0xff]);
            std::thread::sleep(Duration::from_millis(200));
        });
        assert!(matches!(
            listener.accept(),
            Err(ListenerError::Authentication(
                AuthenticationError::Protocol(_)
            ))
        ));
        t.join().unwrap();
        // Silence: the handshake times out.
        let s = std::net::TcpStream::connect(addr).unwrap();
        assert!(matches!(
            listener.accept(),
            Err(ListenerError::Authentication(AuthenticationError::Timeout))
        ));
        drop(s);
        // And a good client still gets in.
        let t = std::thread::spawn(move || Client::connect(&Address::Tcp(addr), Some(b"secret")));
        listener.accept().unwrap();
        t.join().unwrap().unwrap();
    });
}
