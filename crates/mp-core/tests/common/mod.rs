//! Shared helpers of the integration tests: the start methods to run each behaviour under,
//! and an outer bound so that a hang fails the test instead of stalling the run.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use mp_core::{Context, Writer};
use serde::de::DeserializeOwned;
use serde::Serialize;

// Written once, in the conformance kit, whose mp-core-level suites use them too.
#[allow(unused_imports)]
pub use mp_ipc_conformance::support::{
    about, bounded, contexts, for_each_context, prompt, LONG, PROMPT,
};

/// The methods that re-execute or fork from a clean server (not plain fork).
pub fn exec_contexts() -> Vec<Context> {
    contexts()
        .into_iter()
        .filter(|c| c.start_method() != mp_core::StartMethod::Fork)
        .collect()
}

/// Polls `cond` every 10 ms for up to `secs` seconds.
pub fn eventually(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

/// A target that sleeps for the given number of milliseconds.
pub fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// A target that sleeps for a minute (to be terminated).
pub fn sleep_forever(_: ()) {
    std::thread::sleep(Duration::from_secs(60));
}

/// A target that sends its value back.
pub fn echo_back<T: Serialize + DeserializeOwned>(arg: (T, Writer<T>)) {
    arg.1.send(&arg.0).unwrap();
}

/// Whether a process with this pid exists (a reaped child does not).
#[cfg(unix)]
pub fn pid_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only probes.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

/// Whether a process with this pid still runs.
#[cfg(windows)]
pub fn pid_alive(pid: u32) -> bool {
    use windows_sys::Win32::Foundation::{CloseHandle, WAIT_TIMEOUT};
    use windows_sys::Win32::System::Threading::{
        OpenProcess, WaitForSingleObject, PROCESS_SYNCHRONIZE,
    };
    // SAFETY: a process handle opened, waited on with a zero timeout and closed here.
    unsafe {
        let h = OpenProcess(PROCESS_SYNCHRONIZE, 0, pid);
        if h.is_null() {
            return false;
        }
        let alive = WaitForSingleObject(h, 0) == WAIT_TIMEOUT;
        CloseHandle(h);
        alive
    }
}

/// Kills a process by pid (test clean-up after a hang).
#[cfg(unix)]
pub fn kill_pid(pid: u32) {
    // SAFETY: signalling a child of ours.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
}

/// Kills a process by pid (test clean-up after a hang).
#[cfg(windows)]
pub fn kill_pid(pid: u32) {
    let _ = std::process::Command::new("taskkill")
        .args(["/F", "/PID", &pid.to_string()])
        .output();
}

/// CONN-17's parent side: sends the handle of a fresh file to a child running `child`,
/// which must write "foo" through it and answer "done"; then checks the file.
pub fn file_handle_round_trip<F>(ctx: Context, child: F, tag: &str)
where
    F: Fn(mp_core::Connection<mp_core::OsHandle>) + Copy + Send + 'static,
{
    let path = std::env::temp_dir().join(format!(
        "mp-conn17-{tag}-{}-{:?}",
        std::process::id(),
        ctx.start_method()
    ));
    let file = std::fs::File::create(&path).unwrap();
    let (a, b) = mp_core::pipe::<mp_core::OsHandle>().unwrap();
    let mut p = ctx.process(child, b);
    p.start().unwrap();
    a.send(&mp_core::OsHandle::from(file)).unwrap();
    assert_eq!(
        a.recv_bytes_timeout(Duration::from_secs(10)).unwrap(),
        b"done"
    );
    p.join().unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "foo");
    std::fs::remove_file(path).unwrap();
}

/// Writes `bytes` on socket `sock` with `fds` attached (`SCM_RIGHTS`), as one `sendmsg`:
/// for children that send what they like, announced or not.
#[cfg(unix)]
pub fn send_with_fds(sock: std::os::fd::RawFd, bytes: &[u8], fds: &[std::os::fd::RawFd]) {
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: CMSG_SPACE is a size computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of_val(fds) as u32) } as usize;
    let mut control = vec![0u64; space.div_ceil(8)];
    // SAFETY: a zeroed msghdr, then pointers into live buffers; the control buffer holds one
    // header and the descriptors.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if !fds.is_empty() {
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = space as _;
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of_val(fds) as u32) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr(),
                libc::CMSG_DATA(c).cast::<std::os::fd::RawFd>(),
                fds.len(),
            );
        }
        assert_eq!(
            libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL),
            bytes.len() as isize
        );
    }
}

/// How many descriptors of this process refer to the file at `path` (same device and
/// inode; every Unix: the descriptors are listed in `/dev/fd`).
#[cfg(unix)]
pub fn fds_to(path: &std::path::Path) -> usize {
    use std::os::unix::fs::MetadataExt;
    let want = std::fs::metadata(path).unwrap();
    let fds: Vec<i32> = std::fs::read_dir("/dev/fd")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    fds.into_iter()
        .filter(|&fd| {
            // SAFETY: fstat fills a zeroed structure; a descriptor closed meanwhile (the one
            // read_dir used) is an error, not undefined behaviour.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: as above.
            (unsafe { libc::fstat(fd, &mut st) } == 0)
                && st.st_dev as u64 == want.dev()
                && st.st_ino as u64 == want.ino()
        })
        .count()
}

/// A tiny reproducible generator (xorshift) for the junk and the damage hostile children
/// make: a seed list makes every failure reproduce.
pub struct Rng(pub u64);

impl Rng {
    /// The next number.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}
