//! Sending descriptors along with a frame (`SCM_RIGHTS`).
//!
//! The descriptors travel with the frame header; the receiver gets them close-on-exec. A
//! frame that announces descriptors but arrives without them is an error, never garbage.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use mp_ipc::frame::{FrameHeader, HEADER_LEN};
use mp_ipc::IpcError;

use crate::channel::{recv_body, send_all};
use crate::UnixChannel;

/// Most descriptors one frame may carry (the kernel's `SCM_MAX_FD`).
pub const MAX_FDS: usize = 253;

fn cmsg_space(n: usize) -> usize {
    // SAFETY: CMSG_SPACE is a pure size computation.
    unsafe { libc::CMSG_SPACE((n * std::mem::size_of::<RawFd>()) as u32) as usize }
}

/// Sends `payload` as one frame with `fds` attached.
pub fn send_with_fds(ch: &UnixChannel, payload: &[u8], fds: &[RawFd]) -> Result<(), IpcError> {
    if fds.len() > MAX_FDS {
        return Err(IpcError::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("at most {MAX_FDS} handles can travel with one message"),
        )));
    }
    let mut header = [0u8; HEADER_LEN + 4];
    header[..HEADER_LEN].copy_from_slice(&FrameHeader::new(payload.len()).encode());
    header[HEADER_LEN..].copy_from_slice(&(fds.len() as u32).to_le_bytes());
    let mut iov = libc::iovec {
        iov_base: header.as_mut_ptr().cast(),
        iov_len: header.len(),
    };
    let space = cmsg_space(fds.len().max(1));
    let mut control = vec![0u8; space];
    // SAFETY: a zeroed msghdr is valid; every pointer set below outlives the sendmsg call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: control holds CMSG_SPACE(fds) bytes, enough for one header and the fds.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of_val(fds) as u32) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr(),
                libc::CMSG_DATA(cmsg).cast::<RawFd>(),
                fds.len(),
            );
        }
    }
    loop {
        // SAFETY: msg describes live buffers.
        let n = unsafe { libc::sendmsg(ch.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if n < 0 {
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EPIPE) | Some(libc::ECONNRESET) => return Err(IpcError::BrokenPipe),
                _ => return Err(IpcError::Io(err)),
            }
        }
        let n = n as usize;
        // The descriptors went with the first byte; the rest is plain stream data.
        send_all(ch.as_raw_fd(), &[&header[n..], payload])?;
        return Ok(());
    }
}

/// Receives one frame sent by [`send_with_fds`], with its descriptors.
pub fn recv_with_fds(
    ch: &UnixChannel,
    buf: &mut Vec<u8>,
    max_len: u64,
) -> Result<Vec<OwnedFd>, IpcError> {
    let mut header = [0u8; HEADER_LEN + 4];
    let mut control = vec![0u8; cmsg_space(MAX_FDS)];
    let mut iov = libc::iovec {
        iov_base: header.as_mut_ptr().cast(),
        iov_len: header.len(),
    };
    // SAFETY: as above; every pointer outlives recvmsg.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control.len() as _;
    let n = loop {
        // SAFETY: msg describes live buffers.
        let n = unsafe { libc::recvmsg(ch.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(IpcError::Io(err));
        }
    };
    let mut fds = Vec::new();
    // SAFETY: the kernel filled msg_control; walk it with the CMSG macros.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                let bytes = (*cmsg).cmsg_len as usize - (data as usize - cmsg as usize);
                for i in 0..bytes / std::mem::size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if n == 0 {
        return Err(IpcError::Eof);
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(IpcError::Io(io::Error::other(
            "handles were truncated in transit",
        )));
    }
    let mut got = n;
    while got < header.len() {
        // SAFETY: reading into the unfilled tail of the header array.
        let r = unsafe {
            libc::recv(
                ch.as_raw_fd(),
                header.as_mut_ptr().add(got).cast(),
                header.len() - got,
                0,
            )
        };
        if r < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(IpcError::Io(err));
        }
        if r == 0 {
            return Err(IpcError::Truncated {
                got: got as u64,
                expected: header.len() as u64,
            });
        }
        got += r as usize;
    }
    let mut len_bytes = [0u8; HEADER_LEN];
    len_bytes.copy_from_slice(&header[..HEADER_LEN]);
    let want = FrameHeader::decode(len_bytes).check(max_len)?;
    let announced = u32::from_le_bytes([header[8], header[9], header[10], header[11]]) as usize;
    if announced != fds.len() {
        return Err(IpcError::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "message announced {announced} handles but carried {}",
                fds.len()
            ),
        )));
    }
    recv_body(ch, buf, want)?;
    Ok(fds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};

    #[test]
    fn a_descriptor_travels_with_a_frame() {
        let (a, b) = UnixChannel::pair().unwrap();
        let path = std::env::temp_dir().join(format!("mp-unix-fdpass-{}", std::process::id()));
        let f = std::fs::File::create(&path).unwrap();
        send_with_fds(&a, b"file", &[f.as_raw_fd()]).unwrap();
        let mut buf = Vec::new();
        let fds = recv_with_fds(&b, &mut buf, 1024).unwrap();
        assert_eq!(buf, b"file");
        assert_eq!(fds.len(), 1);
        let mut received = std::fs::File::from(fds.into_iter().next().unwrap());
        received.write_all(b"foo").unwrap();
        let mut back = String::new();
        let mut f2 = std::fs::File::open(&path).unwrap();
        f2.rewind().unwrap();
        f2.read_to_string(&mut back).unwrap();
        assert_eq!(back, "foo");
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn a_frame_without_its_announced_descriptors_is_an_error() {
        let (a, b) = UnixChannel::pair().unwrap();
        // A plain frame carries a header whose descriptor count field is the body's first bytes.
        let mut header = FrameHeader::new(0).encode().to_vec();
        header.extend_from_slice(&3u32.to_le_bytes());
        send_all(a.as_raw_fd(), &[&header]).unwrap();
        let mut buf = Vec::new();
        assert!(recv_with_fds(&b, &mut buf, 1024).is_err());
    }
}
