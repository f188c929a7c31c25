//! The shm backend against damage from another process: a child maps the very segment of a
//! pipe or queue it was given (found by name in /proc/self/fd on Linux; on Windows, for
//! pipes, by trying every handle value of the process as a section whose first bytes are the
//! pipe segment's magic) and scribbles over its header. The parent must get a typed error:
//! no panic, no hang, no unbounded allocation.
#![cfg(all(feature = "shm", any(target_os = "linux", windows)))]

mod common;

use std::time::Duration;

use common::bounded;
use mp_core::connection::{pipe_oneway_with, Shm};
use mp_core::{ConnectionError, Process, Reader};
#[cfg(target_os = "linux")]
use mp_core::{GetError, Queue};

#[cfg(target_os = "linux")]
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

/// Maps every section of this process that starts with `magic` (handle values are small
/// multiples of 4; anything that is not a section fails to map) and overwrites `from..to`
/// with a pattern.
#[cfg(windows)]
fn scribble_sections(magic: &[u8; 8], from: usize, to: usize) -> usize {
    use windows_sys::Win32::System::Memory::{
        MapViewOfFile, UnmapViewOfFile, FILE_MAP_READ, FILE_MAP_WRITE,
    };
    let mut hits = 0;
    for value in (4usize..=1 << 16).step_by(4) {
        // SAFETY: mapping a handle value of this process: the system refuses anything that
        // is not a section of at least one page.
        let view = unsafe {
            MapViewOfFile(
                value as windows_sys::Win32::Foundation::HANDLE,
                FILE_MAP_READ | FILE_MAP_WRITE,
                0,
                0,
                4096,
            )
        };
        let p = view.Value.cast::<u8>();
        if p.is_null() {
            continue;
        }
        // SAFETY: a view of one page, written inside it, then unmapped.
        unsafe {
            if std::slice::from_raw_parts(p, 8) == magic {
                for i in from..to {
                    *p.add(i) = (i * 37 + 11) as u8;
                }
                hits += 1;
            }
            UnmapViewOfFile(view);
        }
    }
    hits
}

fn scribble_pipe(rx: Reader<()>) {
    // The ring headers: positions, locks and flags of both rings.
    #[cfg(target_os = "linux")]
    assert!(scribble("mp-shm-pipe", 64, 64 + 2 * 192) > 0);
    #[cfg(windows)]
    assert!(scribble_sections(b"mpshmv01", 64, 64 + 2 * 192) > 0);
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

#[cfg(target_os = "linux")]
fn scribble_queue(q: Queue<u32>) {
    // The queue header past its lock: counts, spool and ring positions.
    assert!(scribble("mp-shared", 8, 88) > 0);
    drop(q);
}

#[cfg(target_os = "linux")]
#[test]
fn a_scribbled_queue_header_is_a_typed_error() {
    bounded(30, || {
        let q = Queue::<u32>::with_transport::<Shm>(0).unwrap();
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
