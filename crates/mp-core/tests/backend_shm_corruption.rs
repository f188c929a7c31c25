//! The shm backend against damage from another process: a child maps the very segment of a
//! pipe or queue it was given (found by name in /proc/self/fd) and scribbles over its
//! header. The parent must get a typed error: no panic, no hang, no unbounded allocation.
#![cfg(all(feature = "shm", target_os = "linux"))]

mod common;

use std::time::Duration;

use common::bounded;
use mp_core::connection::{pipe_oneway_with, Shm};
use mp_core::{ConnectionError, GetError, Process, Queue, Reader};

/// Maps every memfd of this process whose name contains `name` and overwrites
/// `from..to` with a pattern.
fn scribble(name: &str, from: usize, to: usize) -> usize {
    let mut hits = 0;
    for e in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(link) = std::fs::read_link(e.path()) else {
            continue;
        };
        if !link.to_string_lossy().contains(name) {
            continue;
        }
        let fd: i32 = e.file_name().to_string_lossy().parse().unwrap();
        let Ok(meta) = std::fs::metadata(e.path()) else {
            continue;
        };
        if meta.len() < to as u64 {
            continue;
        }
        // SAFETY: mapping a shared-memory object of ours, writing inside its first page.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            for i in from..to {
                *p.cast::<u8>().add(i) = (i * 37 + 11) as u8;
            }
            libc::munmap(p, 4096);
        }
        hits += 1;
    }
    hits
}

fn scribble_pipe(rx: Reader<()>) {
    // The ring headers: positions, locks and flags of both rings.
    assert!(scribble("mp-shm-pipe", 64, 64 + 2 * 192) > 0);
    drop(rx);
}

#[test]
fn a_scribbled_pipe_header_is_a_typed_error() {
    bounded(30, || {
        let (rx, tx) = pipe_oneway_with::<(), Shm>().unwrap();
        tx.send_bytes(b"hello").unwrap();
        let mut p = Process::new(scribble_pipe, rx.try_clone().unwrap());
        p.start().unwrap();
        p.join().unwrap();
        match rx.recv_bytes_timeout(Duration::from_secs(5)) {
            Err(ConnectionError::Io(e)) => {
                assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}")
            }
            other => panic!("expected an InvalidData error, got {other:?}"),
        }
        // Sending fails cleanly too (its positions are damaged as well), or succeeds; it
        // must not hang or crash.
        let _ = tx.send_bytes(b"x");
    });
}

fn scribble_queue(q: Queue<u32>) {
    // The queue header past its lock: counts, spool and ring positions.
    assert!(scribble("mp-shared", 8, 88) > 0);
    drop(q);
}

#[test]
fn a_scribbled_queue_header_is_a_typed_error() {
    bounded(30, || {
        let q = Queue::<u32>::with_backend::<Shm>(0).unwrap();
        q.put(7).unwrap();
        let mut p = Process::new(scribble_queue, q.clone());
        p.start().unwrap();
        p.join().unwrap();
        match q.get_timeout(Duration::from_secs(2)) {
            Err(GetError::Corrupt(_) | GetError::Io(_)) => {}
            other => panic!("expected a Corrupt error, got {other:?}"),
        }
    });
}
