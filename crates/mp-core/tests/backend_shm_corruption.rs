//! The shm backend against a hostile child that writes over the segments it shares with its
//! parent *while both run* (issue #12, findings 10 to 13): random and targeted values over
//! the ring headers (positions flipped backwards or past the ring, side-lock words naming
//! the parent, the parent's own threads, `0xFFFFFFFF`, pid 1, negative pids), the queue
//! header (its locks, ring words, spool offsets and counts, staging word) and spool, the
//! data areas, and `ftruncate` of every segment, in a loop, while the parent sends,
//! receives, puts and gets with timeouts. The parent must get typed errors or data, never
//! wait past its deadline, never panic, never die of a signal. The seeds are fixed, so a
//! failure reproduces.
//!
//! The child finds the segments by name in /proc/self/fd (Linux); on Windows it finds the
//! pipe sections by trying every handle value of the process as a section whose first bytes
//! are the ring segment's magic.
#![cfg(all(feature = "shm", any(target_os = "linux", windows)))]

mod common;

use std::time::{Duration, Instant};

use common::{bounded, Rng};
use mp_core::connection::{pipe_with, Shm};
use mp_core::{Connection, ConnectionError, Process};

const SEEDS: [u64; 6] = [1, 2, 3, 0x5eed, 0xdead_beef, 0x0123_4567_89ab_cdef];

/// The ring segment's layout (mp-shm `ring.rs`): two ring headers from byte 64, each a
/// writer line, a reader line and a flags line of 64 bytes; a line is `pos: u64, lock: u32,
/// busy: u32, tid: u32`; flags are `reader_armed, writer_armed, broken: u32`.
const RING_HDRS: usize = 64;
const RING_HDR: usize = 192;
const DATA_AT: usize = 4096;

/// Lock and thread words worth trying: the parent, its threads, the scribbler itself,
/// numbers that are no process, pid 1.
fn nasty_word(rng: &mut Rng, parent: u32, parent_threads: &[u32]) -> u32 {
    match rng.below(9) {
        0 => parent,
        1 => parent_threads[rng.below(parent_threads.len() as u64) as usize],
        2 => u32::MAX,
        3 => 1,
        4 => 0x8000_0000,
        5 => std::process::id(),
        6 => 0,
        7 => (4 << 20) + 7,
        _ => rng.next() as u32,
    }
}

/// One scribble over a ring segment of `len` bytes at `p`. Returns the 8-byte word it
/// changed and what was there, for a caller that puts it back (damage that comes and goes).
///
/// # Safety
/// `p` must be a live, writable mapping of `len` bytes.
unsafe fn scribble_ring(
    p: *mut u8,
    len: usize,
    rng: &mut Rng,
    parent: u32,
    threads: &[u32],
) -> (*mut u64, u64) {
    // SAFETY: every access is inside the mapping of the contract (offsets below `len`).
    unsafe {
        let ring = rng.below(2) as usize;
        let hdr = p.add(RING_HDRS + ring * RING_HDR);
        let line = hdr.add(64 * rng.below(3) as usize);
        let cap = ((len - DATA_AT) / 2) as u64;
        let pos = |at: *mut u8| std::ptr::read_volatile(at.cast::<u64>());
        let (wpos, rpos) = (pos(hdr), pos(hdr.add(64)));
        // The word to change, and its new value.
        let (at, new): (*mut u8, u64) = match rng.below(8) {
            // Positions: flipped backwards, past the ring, anywhere.
            0 => (hdr, rpos.wrapping_sub(1 + rng.below(64))),
            1 => (hdr, rpos.wrapping_add(cap + 1)),
            2 => (hdr.add(64), wpos.wrapping_add(1)),
            3 => (line, rng.next()),
            // A lock word and its thread (`lock, busy` at 8, `tid` at 16).
            4 => {
                let l = hdr.add(64 * rng.below(2) as usize);
                (l.add(8), u64::from(nasty_word(rng, parent, threads)))
            }
            5 => {
                let l = hdr.add(64 * rng.below(2) as usize);
                (l.add(16), u64::from(nasty_word(rng, parent, threads)))
            }
            // Busy and broken flags, armed flags.
            6 => (
                line.add(8 * rng.below(2) as usize),
                rng.below(3) << (32 * rng.below(2)),
            ),
            // The data: headers announcing anything.
            _ => {
                let at = (DATA_AT + rng.below((len - DATA_AT - 8) as u64) as usize) & !7;
                (p.add(at), rng.next() >> rng.below(64))
            }
        };
        let at = at.cast::<u64>();
        let old = std::ptr::read_volatile(at);
        std::ptr::write_volatile(at, new);
        (at, old)
    }
}

/// Sends frames on a clone of `conn` from a thread, until sending fails.
fn keep_sending(conn: &Connection<Vec<u8>>) {
    let sender = conn.try_clone().unwrap();
    std::thread::spawn(move || {
        let payload = vec![0x5a; 100];
        while sender.send_bytes(&payload).is_ok() {}
    });
}

/// Scribbles `rounds` times over the ring segments at `segs`; three times in four the
/// damage is undone a moment later, so that the parent's calls meet it coming and going.
fn scribble_loop(segs: &[(*mut u8, usize)], seed: u64, rounds: u32, parent: u32, threads: &[u32]) {
    let mut rng = Rng(seed);
    for _ in 0..rounds {
        for &(p, len) in segs {
            // SAFETY: a mapping of the caller's, alive until the process exits.
            let (at, old) = unsafe { scribble_ring(p, len, &mut rng, parent, threads) };
            if rng.below(4) != 0 {
                std::thread::sleep(Duration::from_micros(rng.below(300)));
                // SAFETY: as above.
                unsafe { std::ptr::write_volatile(at, old) };
            }
        }
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use super::*;
    use crate::common::{fds_to, send_with_fds};
    use mp_core::{GetError, Queue};
    use std::os::fd::RawFd;

    /// Whether segment sizes are sealed (Linux memfds; not under `posix-generic`).
    pub(super) fn sealed() -> bool {
        mp_unix::FLAVOUR == "linux"
    }

    /// The memfds of this process whose name contains `name`, with their sizes.
    pub(super) fn segments(name: &str) -> Vec<(RawFd, usize)> {
        let mut v = Vec::new();
        for e in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
            let Ok(link) = std::fs::read_link(e.path()) else {
                continue;
            };
            if !link.to_string_lossy().contains(name) {
                continue;
            }
            let Ok(fd) = e.file_name().to_string_lossy().parse::<RawFd>() else {
                continue;
            };
            // Whole pages only: an empty object (a spool) has nothing to map.
            if let Some(m) = std::fs::metadata(e.path()).ok().filter(|m| m.len() >= 4096) {
                v.push((fd, m.len() as usize));
            }
        }
        v
    }

    /// Maps `len` bytes of `fd`, shared and writable.
    pub(super) fn map(fd: RawFd, len: usize) -> *mut u8 {
        // SAFETY: mapping a descriptor this process holds.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        p.cast()
    }

    /// Tries to shrink the object of `fd`; true if the system let it.
    pub(super) fn shrink(fd: RawFd) -> bool {
        // SAFETY: ftruncate on a descriptor this process holds.
        unsafe { libc::ftruncate(fd, 0) == 0 }
    }

    /// The parent's pid and thread ids.
    pub(super) fn parent() -> (u32, Vec<u32>) {
        // SAFETY: no preconditions.
        let ppid = unsafe { libc::getppid() } as u32;
        let threads = std::fs::read_dir(format!("/proc/{ppid}/task"))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        (ppid, threads)
    }

    /// On the companion socket of its shm end, in a loop: doorbells carrying 200
    /// descriptors of `path` (`tagged` false), or descriptor batches announced properly but
    /// tagged for no frame (`tagged`).
    fn stray_companion_descriptors(arg: (super::RawEnd, String, bool)) {
        let ((handles, _), path, tagged) = arg;
        let mut handles: Vec<_> = handles
            .into_iter()
            .map(mp_core::OsHandle::into_inner)
            .collect();
        let companion = handles.remove(1);
        let files: Vec<std::fs::File> = (0..200)
            .map(|_| std::fs::File::open(&path).unwrap())
            .collect();
        let fds: Vec<RawFd> = files.iter().map(std::os::fd::AsRawFd::as_raw_fd).collect();
        let sock = std::os::fd::AsRawFd::as_raw_fd(&companion);
        for _ in 0..80u64 {
            let mut f = if !tagged {
                0u64.to_le_bytes().to_vec() // a doorbell, with descriptors
            } else {
                // A batch announced properly, tagged far past the ring.
                let mut f = ((9u64) | 1 << 63).to_le_bytes().to_vec();
                f.extend_from_slice(&200u32.to_le_bytes());
                f.push(b'H');
                f.extend_from_slice(&(1u64 << 50).to_le_bytes());
                f
            };
            f.shrink_to_fit();
            send_with_fds(sock, &f, &fds);
        }
        std::thread::sleep(Duration::from_secs(30));
    }

    /// Finding 7 on the shm backend: descriptors a peer sends on the companion socket
    /// without a frame to go with them are closed, and the channel breaks.
    #[test]
    fn stray_descriptors_on_the_companion_are_closed() {
        use mp_ipc::deadline::Deadline;
        use mp_ipc::{Channel, IpcError};
        bounded(60, || {
            for tagged in [false, true] {
                let path =
                    std::env::temp_dir().join(format!("mp-shm-stray-{}", std::process::id()));
                std::fs::write(&path, b"x").unwrap();
                let (a, b) = mp_shm::ShmChannel::pair(mp_shm::DEFAULT_RING).unwrap();
                let mut p = Process::new(
                    stray_companion_descriptors,
                    (
                        super::raw_end(&b),
                        path.to_string_lossy().into_owned(),
                        tagged,
                    ),
                );
                p.start().unwrap();
                drop(b);
                let mut buf = Vec::new();
                let mut corrupt = false;
                for _ in 0..100 {
                    match a.recv_frame_until(
                        &mut buf,
                        1024,
                        Deadline::after(Duration::from_millis(20)),
                    ) {
                        Err(IpcError::Corrupt(_)) => corrupt = true,
                        Err(IpcError::Timeout) => {}
                        other => panic!("unexpected {other:?}"),
                    }
                    assert!(fds_to(&path) <= 200, "descriptors pile up");
                }
                assert!(corrupt, "tagged: {tagged}");
                assert_eq!(fds_to(&path), 0, "descriptors of the child left open");
                p.kill().unwrap();
                p.join().ok();
                std::fs::remove_file(path).unwrap();
            }
        });
    }

    /// Finding 10: the child shrinks every segment it shares with the parent. The memfds are
    /// sealed, so it cannot: it reports how many shrinks the system allowed (must be none).
    /// Under `posix-generic` it can, and the parent must live on with typed errors.
    fn shrink_everything(arg: (Connection<Vec<u8>>, Queue<u32>, mp_core::Value<u64>)) {
        let mut allowed = 0u32;
        for name in ["mp-shm-pipe", "mp-shared"] {
            for (fd, _) in segments(name) {
                allowed += u32::from(shrink(fd));
            }
        }
        arg.0.send(&allowed.to_le_bytes().to_vec()).unwrap();
        let _ = arg.0.recv_bytes();
    }

    #[test]
    fn a_child_cannot_shrink_a_segment_under_its_parent() {
        bounded(60, || {
            let (a, b) = pipe_with::<Vec<u8>, Shm>().unwrap();
            let q = Queue::<u32>::with_transport::<Shm>(0).unwrap();
            let v = mp_core::Value::new(7u64).unwrap();
            q.put(1).unwrap();
            let mut p = Process::new(shrink_everything, (b, q.clone(), v.clone()));
            p.start().unwrap();
            let allowed = a.recv_timeout(Duration::from_secs(20));
            if !sealed() {
                // `posix-generic`: unsealed `shm_open` objects, shrunk. The parent lives on
                // (no SIGBUS) with typed errors; `Value::get` cannot fail and reads zeros.
                assert!(
                    matches!(allowed, Err(ConnectionError::Corrupt(_))),
                    "{allowed:?}"
                );
                assert!(matches!(
                    q.get_timeout(Duration::from_secs(5)),
                    Err(GetError::Corrupt(_))
                ));
                let _ = v.get();
                // Touching the shrunk ring once more must not kill this process (SIGBUS);
                // what it answers depends on how far the damage was seen (Corrupt, or
                // Broken after the failed receive), so only survival is checked here.
                let _ = a.send_bytes(b"bye");
                p.kill().unwrap();
                p.join().ok();
                return;
            }
            assert_eq!(
                allowed.unwrap(),
                0u32.to_le_bytes(),
                "a segment could be shrunk"
            );
            // Everything still works: no SIGBUS on the next access.
            assert_eq!(q.get_timeout(Duration::from_secs(5)).unwrap(), 1);
            assert_eq!(v.get(), 7);
            a.send_bytes(b"bye").unwrap();
            p.join().unwrap();
        });
    }

    /// Attacks the pipe segments for `rounds` scribbles (seed `seed`) while sending frames on
    /// its end from another thread; reports whether any segment could be shrunk, then exits.
    fn attack_pipe(arg: (Connection<Vec<u8>>, u64, u32)) {
        let (conn, seed, rounds) = arg;
        let (parent, threads) = parent();
        let segs: Vec<(RawFd, usize)> = segments("mp-shm-pipe");
        assert!(!segs.is_empty());
        // Sealed memfds refuse; elsewhere shrinking is `a_child_cannot_shrink_...`'s.
        for &(fd, _) in segs.iter().filter(|_| sealed()) {
            assert!(!shrink(fd), "a ring segment could be shrunk");
        }
        let maps: Vec<(*mut u8, usize)> =
            segs.iter().map(|&(fd, len)| (map(fd, len), len)).collect();
        super::keep_sending(&conn);
        scribble_loop(&maps, seed, rounds, parent, &threads);
        std::process::exit(0);
    }

    /// Finding 13 (pipes), with 11 and 12 inside it.
    #[test]
    fn a_child_scribbling_over_a_pipe_segment_while_both_run() {
        super::pipe_attacks(attack_pipe);
    }

    /// The queue header's layout (mp-core `queue/engine.rs`): the get side at 0 (lock words
    /// `state, owner, tid` at 0, 4, 8; ring head, spool head, released, generation from
    /// 16), the put side at 64 (lock at 64; ring tail, spool tail from 80, spool count at
    /// 96, staging word at 104, flush and move marks 112 to 135), common words at 192, the
    /// ring from 256.
    const LOCKS: [usize; 2] = [0, 64];
    const WORDS64: [usize; 11] = [16, 24, 32, 40, 80, 88, 104, 112, 120, 128, 96];

    /// One scribble over a queue segment (header, ring, staging area) or its spool.
    ///
    /// # Safety
    /// `p` must be a live, writable mapping of `len` bytes.
    unsafe fn scribble_queue(
        p: *mut u8,
        len: usize,
        spool: Option<RawFd>,
        rng: &mut Rng,
        parent: u32,
        threads: &[u32],
    ) {
        // SAFETY: every access is inside the mapping of the contract (offsets below `len`).
        unsafe {
            match rng.below(6) {
                0 | 1 => {
                    let l = p.add(LOCKS[rng.below(2) as usize]);
                    std::ptr::write_volatile(l.cast::<u32>(), rng.below(3) as u32);
                    std::ptr::write_volatile(
                        l.add(4).cast::<u32>(),
                        nasty_word(rng, parent, threads),
                    );
                    std::ptr::write_volatile(
                        l.add(8).cast::<u32>(),
                        nasty_word(rng, parent, threads),
                    );
                }
                2 | 3 => {
                    let at = WORDS64[rng.below(WORDS64.len() as u64) as usize];
                    let v = match rng.below(4) {
                        0 => u64::MAX - rng.below(16),
                        1 => std::ptr::read_volatile(p.add(at).cast::<u64>()).wrapping_sub(8),
                        2 => rng.below(1 << 20),
                        _ => rng.next(),
                    };
                    std::ptr::write_volatile(p.add(at).cast::<u64>(), v);
                }
                4 if len > 512 => {
                    let at = (256 + rng.below((len - 264) as u64) as usize) & !7;
                    std::ptr::write_volatile(p.add(at).cast::<u64>(), rng.next() >> rng.below(64));
                }
                _ => {
                    if let Some(fd) = spool {
                        let junk = rng.next().to_le_bytes();
                        let at = rng.below(1 << 16) as libc::off_t;
                        // Writing to / truncating a descriptor this process holds.
                        if rng.below(4) == 0 {
                            libc::ftruncate(fd, rng.below(64) as libc::off_t);
                        } else {
                            libc::pwrite(fd, junk.as_ptr().cast(), 8, at);
                        }
                    }
                }
            }
        }
    }

    fn attack_queue(arg: (Queue<Vec<u32>>, u64, u32)) {
        let (q, seed, rounds) = arg;
        let (parent, threads) = parent();
        let segs: Vec<(*mut u8, usize, RawFd)> = segments("mp-shared")
            .into_iter()
            .map(|(fd, len)| (map(fd, len), len, fd))
            .collect();
        let spool = segments("mp-spool").first().map(|s| s.0);
        assert!(!segs.is_empty());
        let q2 = q.clone();
        std::thread::spawn(move || {
            let mut i = 0u32;
            loop {
                let _ = q2.put(vec![i; (i % 50) as usize]);
                i = i.wrapping_add(1);
                if i.is_multiple_of(16) {
                    std::thread::sleep(Duration::from_micros(100));
                }
            }
        });
        let mut rng = Rng(seed);
        for i in 0..rounds {
            for &(p, len, fd) in &segs {
                // SAFETY: a mapping made above, alive until the process exits.
                unsafe { scribble_queue(p, len, spool, &mut rng, parent, &threads) };
                if i.is_multiple_of(64) && sealed() {
                    assert!(!shrink(fd), "a queue segment could be shrunk");
                }
            }
            if rng.below(4) == 0 {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        std::process::exit(0);
    }

    /// Finding 13 (queues), with 11 and 12 inside it: `get_timeout` and `put` on a queue whose
    /// header, ring, staging area and spool a live child scribbles over.
    #[test]
    fn a_child_scribbling_over_a_queue_while_both_run() {
        bounded(300, || {
            for seed in SEEDS {
                let q = Queue::<Vec<u32>>::with_transport::<Shm>(0).unwrap();
                let mut p = Process::new(attack_queue, (q.clone(), seed, 3000));
                p.start().unwrap();
                let (mut got, mut corrupt, mut last) = (0u32, 0u32, Instant::now());
                let mut round = 0u32;
                while p.is_alive() || round < 20 {
                    round += if p.is_alive() { 0 } else { 1 };
                    let t = Instant::now();
                    match q.get_timeout(Duration::from_millis(20)) {
                        Ok(_) => got += 1,
                        Err(GetError::Empty) => {}
                        Err(GetError::Corrupt(_) | GetError::Decode(_)) => corrupt += 1,
                        Err(GetError::Io(e)) => {
                            // The spool was truncated or scribbled under a read.
                            assert!(e.kind() != std::io::ErrorKind::Other, "seed {seed}: {e}");
                            corrupt += 1
                        }
                        Err(e) => panic!("seed {seed}: unexpected {e:?}"),
                    }
                    // Bounded: 20 ms asked; a few seconds is a hang on a loaded machine.
                    assert!(
                        t.elapsed() < Duration::from_secs(10),
                        "seed {seed}: get_timeout held {:?}",
                        t.elapsed()
                    );
                    match q.put(vec![1, 2, 3]) {
                        Ok(()) => {}
                        Err(mp_core::PutError::Corrupt(..) | mp_core::PutError::Io(..)) => {
                            corrupt += 1
                        }
                        Err(e) => panic!("seed {seed}: unexpected put error {e}"),
                    }
                    last = Instant::now();
                }
                let _ = last;
                p.join().ok();
                eprintln!("seed {seed}: {got} items, {corrupt} corruption errors");
            }
        });
    }
}

/// Runs `attack` in a child on the other end of a fresh shm pipe, once per seed, and
/// checks the parent's side of each.
fn pipe_attacks<F>(attack: F)
where
    F: Fn((Connection<Vec<u8>>, u64, u32)) + Copy + Send + 'static,
{
    bounded(300, move || {
        for seed in SEEDS {
            let (a, b) = pipe_with::<Vec<u8>, Shm>().unwrap();
            let mut p = Process::new(attack, (b, seed, 2000));
            p.start().unwrap();
            parent_side_of_a_pipe(a, &p, seed);
        }
    });
}

/// The parent's side of a pipe under attack: a thread sends on a clone of its end, this one
/// receives with timeouts, until the child is gone and the end says so. Every outcome is
/// data or a typed error, every call returns.
fn parent_side_of_a_pipe(a: Connection<Vec<u8>>, p: &Process, seed: u64) {
    let mut a = a;
    a.set_max_message_size(1 << 20);
    let sender = a.try_clone().unwrap();
    let send = std::thread::spawn(move || {
        let payload = vec![0xa5; 200];
        let mut sent = 0u32;
        loop {
            match sender.send_bytes(&payload) {
                Ok(()) => sent += 1,
                Err(ConnectionError::BrokenPipe | ConnectionError::Corrupt(_)) => return sent,
                Err(e) => panic!("seed {seed}: unexpected send error {e:?}"),
            }
        }
    });
    let (mut frames, mut errors) = (0u32, 0u32);
    loop {
        let t = Instant::now();
        let r = a.recv_bytes_timeout(Duration::from_millis(20));
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "seed {seed}: recv_bytes_timeout held {:?}",
            t.elapsed()
        );
        match r {
            Ok(_) => frames += 1,
            Err(ConnectionError::Timeout) => {}
            Err(
                ConnectionError::Corrupt(_)
                | ConnectionError::TooLarge { .. }
                | ConnectionError::Truncated { .. },
            ) => errors += 1,
            Err(ConnectionError::Eof | ConnectionError::Broken) => {
                if !p.is_alive() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("seed {seed}: unexpected receive error {e:?}"),
        }
    }
    let sent = send.join().unwrap();
    p.join().ok();
    eprintln!("seed {seed}: {frames} frames in, {sent} out, {errors} errors");
}

/// The child's end of a raw shm channel: its handles and description.
type RawEnd = (Vec<mp_core::OsHandle>, Vec<u8>);

fn raw_end(ch: &mp_shm::ShmChannel) -> RawEnd {
    let handles = ch
        .handles()
        .iter()
        .map(|&h| {
            #[cfg(unix)]
            let owned = {
                use std::os::fd::BorrowedFd;
                // SAFETY: the channel keeps the descriptor open for this call.
                unsafe { BorrowedFd::borrow_raw(h) }
                    .try_clone_to_owned()
                    .unwrap()
            };
            #[cfg(windows)]
            let owned = {
                use std::os::windows::io::BorrowedHandle;
                // SAFETY: the channel keeps the handle open for this call.
                unsafe { BorrowedHandle::borrow_raw(h) }
                    .try_clone_to_owned()
                    .unwrap()
            };
            mp_core::OsHandle::from(owned)
        })
        .collect();
    (handles, ch.describe())
}

/// Rebuilds the raw end, sends frames on it from a thread, and scribbles over every ring
/// segment it can find for `rounds` rounds; then exits.
fn attack_raw_channel(arg: (RawEnd, u64, u32)) {
    use mp_ipc::Channel;
    let ((handles, desc), seed, rounds) = arg;
    let ch = mp_shm::ShmChannel::from_parts(
        handles
            .into_iter()
            .map(mp_core::OsHandle::into_inner)
            .collect(),
        &desc,
    )
    .unwrap();
    std::thread::spawn(move || {
        let payload = vec![0x5a; 100];
        while ch.send_frame(&[&payload]).is_ok() {}
        // Kept open: the main thread finds and maps the segment by its descriptor, and a
        // close here would race with that (ThreadSanitizer reported it). The process exits
        // after the scribbling.
        std::mem::forget(ch);
    });
    scribble_rings(seed, rounds);
    std::process::exit(0);
}

/// Scribbles over the ring segments of this process.
fn scribble_rings(seed: u64, rounds: u32) {
    #[cfg(target_os = "linux")]
    let (parent, threads, segs) = {
        let (parent, threads) = linux::parent();
        let segs: Vec<(*mut u8, usize)> = linux::segments("mp-shm-pipe")
            .into_iter()
            .map(|(fd, len)| (linux::map(fd, len), len))
            .collect();
        (parent, threads, segs)
    };
    #[cfg(windows)]
    let (parent, threads, segs) = {
        let parent = mp_core::parent_process().map_or(0, |p| p.pid);
        (parent, vec![parent], windows::ring_sections())
    };
    assert!(!segs.is_empty());
    scribble_loop(&segs, seed, rounds, parent, &threads);
}

/// The same attack on the channel itself, below mp-core (whose connection stops reading
/// after the first framing error): the parent goes on receiving and sending through every
/// error for as long as the child scribbles, so each kind of damage meets the ring code
/// many times over.
#[test]
fn a_ring_keeps_answering_through_a_live_attack() {
    use mp_ipc::deadline::Deadline;
    use mp_ipc::{Channel, IpcError};
    bounded(300, || {
        for seed in SEEDS {
            let (a, b) = mp_shm::ShmChannel::pair(mp_shm::DEFAULT_RING).unwrap();
            let mut p = Process::new(attack_raw_channel, (raw_end(&b), seed, 3000));
            p.start().unwrap();
            drop(b);
            let a = std::sync::Arc::new(a);
            let a2 = a.clone();
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let stop2 = stop.clone();
            let sender = std::thread::spawn(move || {
                let mut outcomes = std::collections::BTreeMap::<String, u32>::new();
                while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                    let kind = match a2.send_frame(&[&[0xa5; 200]]) {
                        Ok(()) => "ok".to_string(),
                        Err(IpcError::BrokenPipe) => "broken pipe".into(),
                        Err(IpcError::Corrupt(_)) => "corrupt".into(),
                        Err(e) => panic!("seed {seed}: unexpected send error {e:?}"),
                    };
                    *outcomes.entry(kind).or_default() += 1;
                    if !a2.poll(Some(Duration::ZERO)).unwrap_or(true) {
                        std::thread::yield_now();
                    }
                }
                outcomes
            });
            let mut outcomes = std::collections::BTreeMap::<&str, u32>::new();
            let mut buf = Vec::new();
            let mut after_exit = 0;
            while after_exit < 50 {
                if !p.is_alive() {
                    after_exit += 1;
                }
                let t = Instant::now();
                let r = a.recv_frame_until(
                    &mut buf,
                    1 << 20,
                    Deadline::after(Duration::from_millis(10)),
                );
                assert!(
                    t.elapsed() < Duration::from_secs(10),
                    "seed {seed}: a receive held {:?}",
                    t.elapsed()
                );
                let kind = match r {
                    Ok(_) => "frame",
                    Err(IpcError::Timeout) => "timeout",
                    Err(IpcError::Corrupt(_)) => "corrupt",
                    Err(IpcError::Eof) => "eof",
                    Err(IpcError::Truncated { .. }) => "truncated",
                    Err(IpcError::FrameTooLarge { .. }) => "too large",
                    Err(e) => panic!("seed {seed}: unexpected receive error {e:?}"),
                };
                *outcomes.entry(kind).or_default() += 1;
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let sent = sender.join().unwrap();
            p.join().ok();
            eprintln!("seed {seed}: received {outcomes:?}, sent {sent:?}");
        }
    });
}

#[cfg(windows)]
mod windows {
    use super::*;
    use windows_sys::Win32::System::Memory::{
        MapViewOfFile, VirtualQuery, FILE_MAP_READ, FILE_MAP_WRITE, MEMORY_BASIC_INFORMATION,
    };

    /// Views of every section of this process that starts with the ring magic (handle
    /// values are small multiples of 4; anything that is not a section fails to map).
    pub(super) fn ring_sections() -> Vec<(*mut u8, usize)> {
        let mut v = Vec::new();
        for value in (4usize..=1 << 16).step_by(4) {
            // SAFETY: mapping a handle value of this process: the system refuses anything
            // that is not a section.
            let view = unsafe {
                MapViewOfFile(
                    value as windows_sys::Win32::Foundation::HANDLE,
                    FILE_MAP_READ | FILE_MAP_WRITE,
                    0,
                    0,
                    0,
                )
            };
            let p = view.Value.cast::<u8>();
            if p.is_null() {
                continue;
            }
            // SAFETY: a view of at least one page; its size asked of the system.
            unsafe {
                let mut info: MEMORY_BASIC_INFORMATION = std::mem::zeroed();
                VirtualQuery(p.cast(), &mut info, std::mem::size_of_val(&info));
                if info.RegionSize >= DATA_AT + 8192
                    && std::slice::from_raw_parts(p, 8) == b"mpshmv01"
                {
                    v.push((p, info.RegionSize));
                }
            }
        }
        v
    }

    fn attack_pipe(arg: (Connection<Vec<u8>>, u64, u32)) {
        let (conn, seed, rounds) = arg;
        let parent = mp_core::parent_process().map_or(0, |p| p.pid);
        let segs = ring_sections();
        assert!(!segs.is_empty());
        super::keep_sending(&conn);
        scribble_loop(&segs, seed, rounds, parent, &[parent]);
        std::process::exit(0);
    }

    /// Finding 13 on Windows (pipes; sections cannot be shrunk there).
    #[test]
    fn a_child_scribbling_over_a_pipe_section_while_both_run() {
        super::pipe_attacks(attack_pipe);
    }
}
