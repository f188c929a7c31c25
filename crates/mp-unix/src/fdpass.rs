//! Descriptors that travel with a frame (`SCM_RIGHTS`).
//!
//! A frame with descriptors has the handles flag set in its header, a 4-byte descriptor count
//! after it, and the descriptors attached to that prefix. Every receive is a `recvmsg` with
//! room for the most descriptors one message may carry, so none is ever lost; the receiver
//! gets them close-on-exec. The kernel ends a receive right after the bytes descriptors came
//! with, which is how the receiver ties descriptors to the prefix that announces them: a
//! count that does not match, descriptors with a frame that announced none, or a receive
//! whose control buffer overflowed (`MSG_CTRUNC`) closes what arrived and breaks the
//! channel ([`IpcError::Corrupt`]).

use std::io;
use std::os::fd::{OwnedFd, RawFd};

use mp_ipc::IpcError;

/// Most descriptors one frame may carry (the kernel's `SCM_MAX_FD`).
pub const MAX_FDS: usize = 253;

fn cmsg_space(n: usize) -> usize {
    // SAFETY: CMSG_SPACE is a pure size computation.
    unsafe { libc::CMSG_SPACE(std::mem::size_of_val(&[0 as RawFd; 1]) as u32 * n as u32) as usize }
}

/// Sends the start of `bytes` with `fds` attached, returning how many bytes went.
pub(crate) fn send_with_rights(fd: RawFd, bytes: &[u8], fds: &[RawFd]) -> Result<usize, IpcError> {
    if fds.len() > MAX_FDS {
        return Err(IpcError::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("at most {MAX_FDS} handles can travel with one message"),
        )));
    }
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    let space = cmsg_space(fds.len());
    let mut control = vec![0u64; space.div_ceil(8)];
    // SAFETY: a zeroed msghdr is valid; every pointer set below outlives the sendmsg call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
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
    loop {
        // SAFETY: msg describes live buffers.
        let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EPIPE) | Some(libc::ECONNRESET) => return Err(IpcError::BrokenPipe),
            _ => return Err(IpcError::Io(err)),
        }
    }
}

/// Receives up to `buf.len()` bytes and whatever descriptors come with them. With `flags`
/// `MSG_DONTWAIT` it fails with `WouldBlock` instead of waiting. If the kernel had more
/// control data than fit (`MSG_CTRUNC`: descriptors were dropped), the descriptors that did
/// arrive are closed and the error is [`IpcError::Corrupt`]: the bytes are gone with them.
pub(crate) fn recv_with_rights(
    fd: RawFd,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
    flags: libc::c_int,
) -> Result<usize, IpcError> {
    // Room for MAX_FDS descriptors, aligned for cmsghdr. Left uninitialised: the kernel
    // writes what it returns and sets msg_controllen to match.
    let mut control = std::mem::MaybeUninit::<[u64; 130]>::uninit();
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: as above; every pointer outlives recvmsg.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of::<[u64; 130]>() as _;
    let first = fds.len();
    let blocking = flags & libc::MSG_DONTWAIT == 0;
    let n = crate::cloexec::receive(fd, blocking, |cloexec| {
        // SAFETY: msg describes live buffers.
        let n = unsafe { libc::recvmsg(fd, &mut msg, cloexec | flags) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel filled msg_control; walk it with the CMSG macros.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                    let bytes = (*cmsg).cmsg_len as usize - (data as usize - cmsg as usize);
                    for i in 0..bytes / std::mem::size_of::<RawFd>() {
                        fds.push(crate::cloexec::received(std::ptr::read_unaligned(
                            data.add(i),
                        )));
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        Ok(n as usize)
    })
    .map_err(IpcError::Io)?;
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        fds.truncate(first);
        return Err(IpcError::Corrupt(
            "more handles arrived than one message may carry, or this process may open".into(),
        ));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;

    use mp_ipc::{Channel, FrameHeader};

    use crate::channel::send_all;
    use crate::UnixChannel;

    #[test]
    fn a_descriptor_travels_with_a_frame_between_plain_ones() {
        let (a, b) = UnixChannel::pair().unwrap();
        let path = std::env::temp_dir().join(format!("mp-unix-fdpass-{}", std::process::id()));
        let f = std::fs::File::create(&path).unwrap();
        a.send_frame(&[b"before"]).unwrap();
        a.send_frame_with_handles(&[b"file"], &[f.as_raw_fd()])
            .unwrap();
        a.send_frame(&[b"after"]).unwrap();
        let mut buf = Vec::new();
        assert!(b
            .recv_frame_with_handles(&mut buf, 1024)
            .unwrap()
            .is_empty());
        assert_eq!(buf, b"before");
        let fds = b.recv_frame_with_handles(&mut buf, 1024).unwrap();
        assert_eq!((buf.as_slice(), fds.len()), (&b"file"[..], 1));
        b.recv_frame(&mut buf, 1024).unwrap();
        assert_eq!(buf, b"after");
        // SAFETY: F_GETFD on a descriptor we own.
        let flags = unsafe { libc::fcntl(fds[0].as_raw_fd(), libc::F_GETFD) };
        assert!(
            flags & libc::FD_CLOEXEC != 0,
            "a received descriptor leaks into exec"
        );
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
    fn a_frame_announcing_missing_descriptors_is_an_error() {
        let (a, b) = UnixChannel::pair().unwrap();
        let header = FrameHeader::new(0).with_handles().encode();
        send_all(a.as_raw_fd(), &[&header, &3u32.to_le_bytes()]).unwrap();
        let mut buf = Vec::new();
        assert!(b.recv_frame_with_handles(&mut buf, 1024).is_err());
    }
}
