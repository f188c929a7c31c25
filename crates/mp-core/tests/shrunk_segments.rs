//! A child that shrinks a segment it shares with its parent (`ftruncate`) must not kill the
//! parent with `SIGBUS` (issue #12): where the size cannot be sealed (named `SharedMemory`
//! on every Unix; every segment under the `posix-generic` flavour, and on macOS and
//! FreeBSD), the parent's next access completes on zero pages, the damage is observable,
//! and the APIs that return results fail with a typed error.
#![cfg(unix)]

mod common;

use common::bounded;
use mp_core::{Process, SharedMemory};

/// Opens the named segment and truncates it to nothing.
fn shrink_by_name(name: String) {
    let c = std::ffi::CString::new(format!("/{name}")).unwrap();
    // SAFETY: shm_open with a valid C string; ftruncate on the descriptor it returned.
    unsafe {
        let fd = libc::shm_open(c.as_ptr(), libc::O_RDWR, 0);
        assert!(fd >= 0, "{}", std::io::Error::last_os_error());
        assert_eq!(libc::ftruncate(fd, 0), 0);
        libc::close(fd);
    }
}

#[test]
fn a_named_segment_shrunk_by_a_child_is_damaged_not_fatal() {
    bounded(60, || {
        let shm = SharedMemory::create(3 * 4096).unwrap();
        shm.write_at(0, b"hello");
        shm.write_at(2 * 4096, b"world");
        let mut p = Process::new(shrink_by_name, shm.name().to_string());
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
        assert!(!shm.damaged(), "nothing touched the mapping yet");
        // Every page is past the object's end now: each access would be SIGBUS.
        let mut b = [1u8; 5];
        shm.read_at(0, &mut b);
        assert_eq!(b, [0; 5]);
        assert!(shm.damaged());
        shm.write_at(2 * 4096, b"again");
        shm.read_at(2 * 4096, &mut b);
        assert_eq!(
            &b, b"again",
            "the private pages keep what this process writes"
        );
        // Nothing of it reaches the object, which stays empty for everyone else.
        assert!(matches!(
            SharedMemory::open(shm.name()),
            Err(mp_core::SharedError::Mismatch(_))
        ));
        shm.unlink().unwrap();
    });
}

#[cfg(all(feature = "shm", target_os = "linux"))]
mod pipe {
    use super::*;
    use common::eventually;
    use mp_core::connection::{pipe_with, Shm};
    use mp_core::{Connection, ConnectionError};
    use std::time::Duration;

    /// The shm-pipe segments this process holds, by descriptor path, with their sizes.
    fn segments() -> Vec<(std::path::PathBuf, u64)> {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .flatten()
            .filter(|e| {
                std::fs::read_link(e.path())
                    .is_ok_and(|l| l.to_string_lossy().contains("mp-shm-pipe"))
            })
            .filter_map(|e| Some((e.path(), std::fs::metadata(e.path()).ok()?.len())))
            .collect()
    }

    /// Shrinks every ring segment it holds (its end of the pipe); exits with 3 if the
    /// system refused (sealed), else stays until killed.
    fn shrink_rings(end: Connection<Vec<u8>>) {
        let segs = segments();
        assert!(!segs.is_empty());
        for (path, _) in segs {
            let f = std::fs::OpenOptions::new().write(true).open(&path);
            // A sealed memfd refuses (EPERM); an unsealed object gives in.
            if f.and_then(|f| f.set_len(0)).is_err() {
                std::process::exit(3);
            }
        }
        std::thread::sleep(Duration::from_secs(60));
        drop(end);
    }

    #[test]
    fn a_ring_shrunk_by_the_child_is_a_typed_error() {
        bounded(60, || {
            let (a, b) = pipe_with::<Vec<u8>, Shm>().unwrap();
            a.send_bytes(b"before").unwrap();
            let mut p = Process::new(shrink_rings, b);
            p.start().unwrap();
            let shrunk = || {
                let segs = segments();
                !segs.is_empty() && segs.iter().all(|&(_, len)| len == 0)
            };
            assert!(eventually(30, || shrunk() || p.exitcode().is_some()));
            if p.exitcode() == Some(3) {
                // Sealed (Linux memfds): the attack fails, the segments keep their size.
                assert_eq!(mp_unix::FLAVOUR, "linux");
                assert!(segments().iter().all(|&(_, len)| len > 0));
                return;
            }
            assert_ne!(mp_unix::FLAVOUR, "linux", "a sealed segment was shrunk");
            match a.recv_bytes_timeout(Duration::from_millis(200)) {
                Err(ConnectionError::Corrupt(_)) => {}
                other => panic!("recv: expected Corrupt, got {other:?}"),
            }
            match a.send_bytes(b"after") {
                Err(ConnectionError::Corrupt(_)) => {}
                other => panic!("send: expected Corrupt, got {other:?}"),
            }
            p.kill().unwrap();
            p.join().ok();
        });
    }
}
