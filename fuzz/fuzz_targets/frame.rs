//! The frame decoder of the Unix socket channel and its limit: the first two bytes choose
//! the receiver's limit and whether it expects descriptors, the rest is what the peer sent
//! before closing. Every frame read must respect the limit and come out of the bytes sent;
//! the reading must end in an error (end of stream at the latest), never a panic or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mp_ipc::frame::HEADER_LEN;
use mp_ipc::Channel;
use mp_unix::UnixChannel;

fuzz_target!(|data: &[u8]| {
    let Some((&[a, b], stream)) = data.split_first_chunk::<2>() else {
        return;
    };
    let with_handles = a & 0x80 != 0;
    let max = u64::from(u16::from_le_bytes([a & 0x7f, b]));
    let (rx, tx) = UnixChannel::pair().expect("socket pair");
    drop(tx);
    rx.unread(stream);
    let mut buf = Vec::new();
    let mut consumed = 0usize;
    loop {
        let r = if with_handles {
            rx.recv_frame_with_handles(&mut buf, max).map(|fds| fds.len())
        } else {
            rx.recv_frame(&mut buf, max).map(|()| 0)
        };
        match r {
            Ok(fds) => {
                assert_eq!(fds, 0, "no descriptor was sent");
                assert!(buf.len() as u64 <= max, "a frame over the limit");
                consumed += HEADER_LEN + buf.len();
                assert!(consumed <= stream.len(), "more bytes read than sent");
            }
            Err(_) => break,
        }
    }
});
