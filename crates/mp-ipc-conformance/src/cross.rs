//! The cross-process part of the suite: the end goes to a real child process (this test
//! binary, run again for just this test) and the guarantees are checked across the
//! boundary, crashes included.

use std::time::Duration;

use mp_ipc::{Channel, IpcError, Transport};

use crate::{payload, recv, Here, LIMIT, SECS};

const SIZES: [usize; 9] = [0, 1, 8, 513, 4096, 65_536, 300_000, 0, 1 << 20];

/// The child of [`a_child_echoes_every_frame`]: echoes until end of stream.
fn echo<T: Transport>(end: T::End) {
    let mut buf = Vec::new();
    loop {
        match end.recv_frame(&mut buf, LIMIT) {
            Ok(()) => end.send_frame(&[&buf]).expect("echo"),
            Err(IpcError::Eof) => return,
            Err(e) => panic!("child: {e}"),
        }
    }
}

/// An end handed to a child works there: frames of every size go there and back, and the
/// child sees end of stream when the parent drops its end.
pub fn a_child_echoes_every_frame<T: Transport>(here: &Here) {
    if let Some(end) = here.child_end::<T>() {
        echo::<T>(end);
        return;
    }
    let (mine, theirs) = T::pair().expect("pair");
    let mut child = here.spawn::<T>(theirs);
    for n in SIZES {
        mine.send_frame(&[&payload(n)]).expect("send");
        assert_eq!(recv(&mine), payload(n), "{n} bytes there and back");
    }
    drop(mine);
    child.expect_success();
}

/// A child that exits without closing its end (the system closes it, as after a crash):
/// the parent reads what it sent, then end of stream, and sending is a broken pipe.
pub fn a_child_exiting_with_its_end_open_is_eof<T: Transport>(here: &Here) {
    if let Some(end) = here.child_end::<T>() {
        end.send_frame(&[b"bye"]).expect("send");
        std::process::exit(0);
    }
    let (mine, theirs) = T::pair().expect("pair");
    let mut child = here.spawn::<T>(theirs);
    assert_eq!(recv(&mine), b"bye");
    child.expect_success();
    assert!(
        mine.poll(Some(SECS)).expect("poll"),
        "poll at end of stream"
    );
    let mut buf = Vec::new();
    assert!(matches!(
        mine.recv_frame(&mut buf, LIMIT),
        Err(IpcError::Eof)
    ));
    assert!(matches!(
        mine.send_frame(&[b"anyone?"]),
        Err(IpcError::BrokenPipe)
    ));
}

/// A writer killed in the middle of large frames: the reader gets whole frames, then end of
/// stream or `Truncated`, never garbage and never a hang.
pub fn a_writer_killed_mid_frame_is_eof_or_truncated<T: Transport>(here: &Here) {
    const BIG: usize = 8 << 20;
    if let Some(end) = here.child_end::<T>() {
        end.send_frame(&[b"first"]).expect("send");
        let big = vec![0xEEu8; BIG];
        loop {
            if end.send_frame(&[&big]).is_err() {
                std::process::exit(0);
            }
        }
    }
    let (mine, theirs) = T::pair().expect("pair");
    let mut child = here.spawn::<T>(theirs);
    assert_eq!(recv(&mine), b"first");
    std::thread::sleep(Duration::from_millis(30));
    child.kill();
    let mut buf = Vec::new();
    for _ in 0..1000 {
        assert!(mine.poll(Some(SECS)).expect("poll"), "no end of stream");
        match mine.recv_frame(&mut buf, LIMIT) {
            Ok(()) => assert!(buf.len() == BIG && buf.iter().all(|&b| b == 0xEE)),
            Err(IpcError::Eof | IpcError::Truncated { .. }) => return,
            Err(e) => panic!("expected end of stream or Truncated, got {e:?}"),
        }
    }
    panic!("more whole frames than a killed writer can have sent");
}

/// Handles sent in a frame to a child arrive there: the child reads the file it was sent
/// and answers with its contents.
pub fn a_handle_reaches_a_child<T: Transport>(here: &Here) {
    if let Some(end) = here.child_end::<T>() {
        use std::io::{Read, Seek, SeekFrom};
        let mut buf = Vec::new();
        let mut handles = end
            .recv_frame_with_handles(&mut buf, LIMIT)
            .expect("recv with handles");
        assert_eq!(handles.len(), 1, "child: one handle");
        let mut file = std::fs::File::from(handles.remove(0));
        let mut text = String::new();
        file.seek(SeekFrom::Start(0)).expect("seek");
        file.read_to_string(&mut text).expect("read");
        end.send_frame(&[text.as_bytes()]).expect("answer");
        return;
    }
    if !T::CAPABILITIES.passes_handles {
        return;
    }
    use std::io::Write;
    let (mine, theirs) = T::pair().expect("pair");
    let mut child = here.spawn::<T>(theirs);
    let mut file = crate::temp_file();
    file.write_all(b"across processes").expect("write");
    let file = mp_ipc::handle::OwnedHandle::from(file);
    mine.send_frame_with_handles(&[b"file"], &[mp_ipc::handle::raw_of(&file)])
        .expect("send with a handle");
    assert_eq!(recv(&mine), b"across processes");
    child.expect_success();
}
