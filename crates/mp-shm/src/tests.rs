//! Behaviour of [`ShmChannel`] that holds on every platform (the platform modules test
//! their own parts).

use std::time::Duration;

use mp_ipc::{Channel, IpcError};

use crate::ring::MIN_RING;
use crate::ShmChannel;

#[test]
fn frames_of_every_size_cross_the_ring() {
    let (a, b) = ShmChannel::pair(MIN_RING).unwrap();
    let t = std::thread::spawn(move || {
        for n in [0usize, 1, 7, 8, 100, 4088, 4089, 4096, 10_000, 1 << 20] {
            let v: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
            a.send_frame(&[&v[..n / 2], &v[n / 2..]]).unwrap();
        }
        a
    });
    for n in [0usize, 1, 7, 8, 100, 4088, 4089, 4096, 10_000, 1 << 20] {
        let mut buf = Vec::new();
        b.recv_frame(&mut buf, u64::MAX).unwrap();
        assert_eq!(buf.len(), n);
        assert!(buf.iter().enumerate().all(|(i, &x)| x == (i % 251) as u8));
    }
    let a = t.join().unwrap();
    assert!(!b.poll(Some(Duration::ZERO)).unwrap());
    drop(a);
    assert!(b.poll(Some(Duration::ZERO)).unwrap());
    let mut buf = Vec::new();
    assert!(matches!(b.recv_frame(&mut buf, 10), Err(IpcError::Eof)));
    assert!(matches!(b.send_frame(&[b"x"]), Err(IpcError::BrokenPipe)));
}
