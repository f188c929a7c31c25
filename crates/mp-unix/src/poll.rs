//! Waiting for descriptors to become readable, with deadlines that survive signal
//! interruptions (`EINTR` restarts the wait with the time that is left).

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use mp_ipc::deadline::Deadline;

/// Converts a remaining time into `poll`'s milliseconds, rounding up so a short positive
/// timeout never becomes a busy zero-wait loop.
#[cfg(not(mp_os = "linux"))]
fn to_millis(left: Option<Duration>) -> libc::c_int {
    match left {
        None => -1,
        Some(d) => {
            let ms = d.as_nanos().div_ceil(1_000_000);
            ms.min(libc::c_int::MAX as u128) as libc::c_int
        }
    }
}

/// Waits until any of `fds` is readable (data, end of stream or error), for at most
/// `timeout`. Returns the indices of the ready descriptors, empty on timeout.
/// There is no limit on the number of descriptors. The first
/// [`limit`](crate::spin::limit) (or the whole timeout, if shorter) polls without blocking.
pub fn poll_many(fds: &[RawFd], timeout: Option<Duration>) -> io::Result<Vec<usize>> {
    let deadline = Deadline::from_timeout(timeout);
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let spin = crate::spin::limit();
    let window = timeout.map_or(spin, |t| t.min(spin));
    if let Some(ready) = crate::spin::spin(window, || {
        let ready = poll_now(&mut pfds)?;
        Ok((!ready.is_empty()).then_some(ready))
    })? {
        return Ok(ready);
    }
    loop {
        let left = deadline.remaining();
        let rc = poll_for(&mut pfds, left);
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        let ready = ready_of(&pfds)?;
        if !ready.is_empty() || rc == 0 && left.is_some_and(|l| l.is_zero()) {
            return Ok(ready);
        }
        if deadline.expired() {
            return Ok(ready);
        }
    }
}

/// One `poll` for at most `left` (`None`: without limit). On Linux (not under
/// `posix-generic`) the timeout is kept to
/// the nanosecond (`ppoll`): a sub-millisecond wait stays one (callers that poll something
/// no descriptor reports, such as an MPI library, sleep in short steps); elsewhere it is
/// rounded up to whole milliseconds.
fn poll_for(pfds: &mut [libc::pollfd], left: Option<Duration>) -> libc::c_int {
    #[cfg(mp_os = "linux")]
    {
        let ts = left.map(|d| libc::timespec {
            tv_sec: d.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
            tv_nsec: d.subsec_nanos() as libc::c_long,
        });
        let tsp = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: pfds is a live array of pollfd of the given length; `tsp` is null or
        // points to a timespec that outlives the call; no signal mask is changed.
        unsafe {
            libc::ppoll(
                pfds.as_mut_ptr(),
                pfds.len() as libc::nfds_t,
                tsp,
                std::ptr::null(),
            )
        }
    }
    #[cfg(not(mp_os = "linux"))]
    {
        // SAFETY: pfds is a live array of pollfd of the given length.
        unsafe {
            libc::poll(
                pfds.as_mut_ptr(),
                pfds.len() as libc::nfds_t,
                to_millis(left),
            )
        }
    }
}

/// One `poll` that does not block: the indices of the descriptors ready now.
fn poll_now(pfds: &mut [libc::pollfd]) -> io::Result<Vec<usize>> {
    loop {
        // SAFETY: pfds is a live array of pollfd of the given length.
        let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 0) };
        if rc >= 0 {
            return ready_of(pfds);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// The indices of the descriptors `poll` marked; an invalid descriptor is `EBADF`.
fn ready_of(pfds: &[libc::pollfd]) -> io::Result<Vec<usize>> {
    if pfds.iter().any(|p| p.revents & libc::POLLNVAL != 0) {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    Ok(pfds
        .iter()
        .enumerate()
        .filter(|(_, p)| p.revents != 0)
        .map(|(i, _)| i)
        .collect())
}

/// Whether `fd` becomes readable within `timeout`.
pub fn poll_readable(fd: RawFd, timeout: Option<Duration>) -> io::Result<bool> {
    Ok(!poll_many(&[fd], timeout)?.is_empty())
}
