//! Typed `Vec<u8>` messages take a fast path on both ends (no per-byte encoding or
//! decoding); the bytes on the wire are postcard's, so either end may use the general path.

use mp_core::connection::{pipe_with, Socket};
use mp_core::{pipe, Connection, ConnectionError};

/// How long a receive of a message already sent may take (a bound, not a measurement).
const WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Lengths around the varint boundaries and the read-ahead size.
const LENGTHS: &[usize] = &[0, 1, 127, 128, 16_383, 16_384, 65_536, (1 << 20) + 3];

/// Sends `v` on `tx` while another thread receives on `rx` (the message may be larger than
/// the socket buffer); returns `rx` and what it got.
fn exchange<A, B>(tx: &Connection<A>, rx: Connection<B>, v: &A) -> (Connection<B>, B)
where
    A: serde::Serialize + 'static,
    B: serde::de::DeserializeOwned + Send + 'static,
{
    let h = std::thread::spawn(move || {
        let got = rx.recv().unwrap();
        (rx, got)
    });
    tx.send(v).unwrap();
    h.join().unwrap()
}

fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + n) as u8).collect()
}

#[test]
fn byte_vectors_round_trip_on_every_backend() {
    let (a, mut b) = pipe::<Vec<u8>>().unwrap();
    let (c, mut d) = pipe_with::<Vec<u8>, Socket>().unwrap();
    for &n in LENGTHS {
        let v = payload(n);
        let got;
        (b, got) = exchange(&a, b, &v);
        assert_eq!(got, v, "length {n}, default backend");
        let got;
        (d, got) = exchange(&c, d, &v);
        assert_eq!(got, v, "length {n}, socket");
    }
}

#[cfg(unix)]
#[test]
fn the_fast_path_speaks_postcard_both_ways() {
    use std::os::unix::net::UnixStream;
    // A 1-tuple encodes exactly like its element: the general path on the other end.
    let (x, y) = UnixStream::pair().unwrap();
    let mut fast = Connection::<Vec<u8>>::from_handle(x.into()).unwrap();
    let mut general = Connection::<(Vec<u8>,)>::from_handle(y.into()).unwrap();
    for &n in &[0usize, 200, 70_000] {
        let v = payload(n);
        let got;
        (general, got) = exchange(&fast, general, &v);
        assert_eq!(got.0, v);
        let got;
        (fast, got) = exchange(&general, fast, &(v.clone(),));
        assert_eq!(got, v);
    }
}

/// The fast receive splits the length off in the transport (the bytes land in place); what
/// it accepts is what postcard accepts, on the default backend and on sockets.
#[test]
fn truncated_or_malformed_byte_vectors_are_decode_errors() {
    let ends = [
        pipe::<Vec<u8>>().unwrap(),
        pipe_with::<Vec<u8>, Socket>().unwrap(),
    ];
    for (tx, rx) in ends {
        // A length of 5 with 2 bytes behind it.
        tx.send_bytes(&[5, 1, 2]).unwrap();
        assert!(matches!(
            rx.recv_timeout(WAIT),
            Err(ConnectionError::Decode(_))
        ));
        // A varint that never ends.
        tx.send_bytes(&[0xff; 12]).unwrap();
        assert!(matches!(
            rx.recv_timeout(WAIT),
            Err(ConnectionError::Decode(_))
        ));
        // An empty frame has no length at all.
        tx.send_bytes(&[]).unwrap();
        assert!(matches!(
            rx.recv_timeout(WAIT),
            Err(ConnectionError::Decode(_))
        ));
        // Bytes after the vector are ignored, as postcard ignores them.
        tx.send_bytes(&[2, 7, 7, 99, 99]).unwrap();
        assert_eq!(rx.recv_timeout(WAIT).unwrap(), vec![7, 7]);
        // A length written longer than it needs to be (2 in two bytes).
        tx.send_bytes(&[0x82, 0x00, 1, 2]).unwrap();
        assert_eq!(rx.recv_timeout(WAIT).unwrap(), vec![1, 2]);
        // A length longer than any message at the start of a large frame.
        let mut lying = vec![0xff, 0xff, 0x7f];
        lying.extend(payload(70_000));
        tx.send_bytes(&lying).unwrap();
        assert!(matches!(
            rx.recv_timeout(WAIT),
            Err(ConnectionError::Decode(_))
        ));
        // The connection is still usable: a frame error of the content is not a framing
        // error.
        tx.send(&vec![9u8, 8]).unwrap();
        assert_eq!(rx.recv_timeout(WAIT).unwrap(), vec![9, 8]);
    }
}
