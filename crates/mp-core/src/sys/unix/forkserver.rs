//! The fork server: a single-threaded process, spawned on first use, that forks children on
//! request.
//!
//! Parent and server talk over a private socket pair, so nothing else can send the server
//! requests (Python authenticates requests on a listening socket; here there is no socket
//! anyone could connect to). A request carries two descriptors: the child's boot channel and
//! a status channel. The server forks; the child boots from its channel exactly like a
//! spawned child; the server answers with the pid, and writes the exit code to the status
//! channel when it reaps the child. If the server dies, its children run on, and the next
//! request starts a new server.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;

use mp_ipc::Channel;

use super::os::exit_code;
use super::start::{spawn_child, Waiter};
use super::Chan;

struct Server {
    pid: u32,
    ctl: Chan,
    waiter: Waiter,
}

static SERVER: Mutex<Option<Server>> = Mutex::new(None);

/// The pid of the running fork server, if one has been started (for tests and diagnostics).
pub(crate) fn server_pid() -> Option<u32> {
    SERVER
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(|s| s.pid)
}

/// Asks the fork server (starting it if needed) for a child booting from `boot`.
pub(crate) fn start(boot: &Chan) -> io::Result<(u32, Waiter)> {
    let mut server = SERVER.lock().unwrap_or_else(|e| e.into_inner());
    let mut last_error = None;
    for _ in 0..2 {
        if server.is_none() {
            *server = Some(launch()?);
        }
        let s = server.as_ref().expect("server was just launched");
        let (status_r, status_w) = Chan::pair()?;
        match request(s, boot, &status_w) {
            Ok(pid) => return Ok((pid, Waiter::server(pid, status_r))),
            Err(e) => {
                // The server died: reap it and start another.
                if let Some(old) = server.take() {
                    let _ = old.waiter.wait(Some(std::time::Duration::from_millis(100)));
                }
                last_error = Some(e);
            }
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::other("fork server unavailable")))
}

fn launch() -> io::Result<Server> {
    let (ctl, ctl_child) = Chan::pair()?;
    let (pid, waiter) = spawn_child("forkserver", &ctl_child, true)?;
    Ok(Server { pid, ctl, waiter })
}

fn request(server: &Server, boot: &Chan, status: &Chan) -> io::Result<u32> {
    server
        .ctl
        .send_frame_with_handles(&[b"fork"], &[boot.as_raw_fd(), status.as_raw_fd()])
        .map_err(to_io)?;
    let mut buf = Vec::new();
    server.ctl.recv_frame(&mut buf, 16).map_err(to_io)?;
    match <[u8; 4]>::try_from(buf.as_slice()) {
        Ok(b) => Ok(u32::from_le_bytes(b)),
        Err(_) => Err(io::Error::other(String::from_utf8_lossy(&buf).into_owned())),
    }
}

fn to_io(e: mp_ipc::IpcError) -> io::Error {
    match e {
        mp_ipc::IpcError::Io(e) => e,
        other => io::Error::new(io::ErrorKind::BrokenPipe, other.to_string()),
    }
}

static SIGCHLD_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_sigchld(_: libc::c_int) {
    let fd = SIGCHLD_PIPE.load(Ordering::Relaxed);
    // SAFETY: write is async-signal-safe; a full pipe already means "reap".
    unsafe {
        libc::write(fd, b"c".as_ptr().cast(), 1);
    }
}

fn self_pipe() -> io::Result<[RawFd; 2]> {
    let (r, w) = mp_unix::cloexec::pipe(true)?;
    // The server keeps both ends for its whole life (and closes them in each child).
    Ok([r.into_raw_fd(), w.into_raw_fd()])
}

fn set_sigchld(handler: libc::sighandler_t) {
    // SAFETY: a zeroed sigaction with a valid handler is a valid argument.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler;
        sa.sa_flags = libc::SA_RESTART | libc::SA_NOCLDSTOP;
        libc::sigaction(libc::SIGCHLD, &sa, std::ptr::null_mut());
    }
}

/// The server's loop; runs in the server process and never returns.
pub(crate) fn serve(ctl: Chan) -> ! {
    crate::sys::prepare_child_runtime();
    let [wake_r, wake_w] = match self_pipe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("mp fork server: {e}");
            std::process::exit(1)
        }
    };
    SIGCHLD_PIPE.store(wake_w, Ordering::Relaxed);
    set_sigchld(on_sigchld as extern "C" fn(libc::c_int) as libc::sighandler_t);
    let mut children: HashMap<u32, Chan> = HashMap::new();
    loop {
        let ready = match mp_unix::poll::poll_many(&[ctl.as_raw_fd(), wake_r], None) {
            Ok(r) => r,
            Err(_) => std::process::exit(1),
        };
        if ready.contains(&1) {
            let mut sink = [0u8; 64];
            // SAFETY: draining a non-blocking pipe into a stack buffer.
            while unsafe { libc::read(wake_r, sink.as_mut_ptr().cast(), sink.len()) } > 0 {}
            reap(&mut children);
        }
        if !ready.contains(&0) {
            continue;
        }
        let mut buf = Vec::new();
        let mut fds = match ctl.recv_frame_with_handles(&mut buf, 64) {
            Ok(fds) if fds.len() == 2 => fds,
            Ok(_) => {
                let _ = ctl.send_frame(&[b"bad fork request"]);
                continue;
            }
            // The parent is gone: so is the server. Its children keep running.
            Err(_) => std::process::exit(0),
        };
        let status = Chan::from_fd(fds.pop().expect("two descriptors")).ok();
        let boot = fds.pop().expect("two descriptors");
        // The server is single-threaded; it takes the fork lock all the same, as every fork
        // of mp does, so that the child starts with it free.
        let fork_lock = mp_unix::cloexec::forking();
        // SAFETY: the server is single-threaded, so fork is safe here.
        let pid = unsafe { libc::fork() };
        let fork_error = (pid == -1).then(io::Error::last_os_error);
        drop(fork_lock);
        match pid {
            -1 => {
                let e = fork_error.unwrap_or_else(|| io::Error::other("fork failed"));
                let _ = ctl.send_frame(&[e.to_string().as_bytes()]);
            }
            0 => {
                set_sigchld(libc::SIG_DFL);
                // SAFETY: closing the server's own descriptors in the new child.
                unsafe {
                    libc::close(wake_r);
                    libc::close(wake_w);
                }
                drop(children);
                drop(status);
                drop(ctl);
                // Never unwind back into the server's loop: that would make a second server.
                let _ = std::panic::catch_unwind(move || match Chan::from_fd(boot) {
                    Ok(boot) => {
                        crate::process::child::run_spawned(boot, crate::StartMethod::ForkServer)
                    }
                    Err(_) => std::process::exit(1),
                });
                // SAFETY: ending a forked child whose setup panicked.
                unsafe { libc::_exit(super::start::FORK_SETUP_FAILED) }
            }
            pid => {
                drop(boot);
                if let Some(status) = status {
                    children.insert(pid as u32, status);
                }
                let _ = ctl.send_frame(&[&(pid as u32).to_le_bytes()]);
            }
        }
    }
}

fn reap(children: &mut HashMap<u32, Chan>) {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes into a live integer.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
        if let Some(chan) = children.remove(&(pid as u32)) {
            let _ = chan.send_frame(&[&exit_code(status).to_le_bytes()]);
        }
    }
}
