//! Handles inside queue items (Unix): a per-process handle server, as Python's
//! `multiprocessing.resource_sharer`.
//!
//! A queue item is bytes in a spool file, with no channel beside it to carry descriptors.
//! When an item holding handles is put, each handle is duplicated into a *batch* kept by
//! this process's handle server, under a random 128-bit key; the item carries tickets
//! (server address, key, index). A process that takes the item connects to the server,
//! presents the key and receives the whole batch with `SCM_RIGHTS`, once: the batch is then
//! gone from the server. The server is a thread, started on first use, listening on an
//! abstract Unix socket on Linux (a socket file in a private `0700` directory elsewhere,
//! removed at exit). The key is the capability: the address is not secret, the key is only
//! in the item; on Linux the server also refuses clients of another user.
//!
//! Limits: the process that put the item must still be running when the item is taken
//! (its server holds the handles); an item never taken keeps its batch until that process
//! exits; one item carries at most [`mp_unix::fdpass::MAX_FDS`] handles.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use mp_ipc::Channel;
use serde::{Deserialize, Serialize};

/// How long a taker waits for the server's answer.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the server waits for a client's key before it moves on.
const KEY_TIMEOUT: Duration = Duration::from_secs(2);

type Key = [u8; 16];

/// What a handle in a queue item serializes to.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Ticket {
    /// The server's address: an abstract name (Linux) or a socket path.
    server: Vec<u8>,
    key: Key,
    index: u32,
}

/// This process's handle server.
struct Server {
    /// The process that started it: a forked child inherits the state, not the thread.
    pid: u32,
    address: Vec<u8>,
    batches: HashMap<Key, Vec<OwnedFd>>,
}

static SERVER: Mutex<Option<Server>> = Mutex::new(None);

fn state() -> MutexGuard<'static, Option<Server>> {
    SERVER.lock().unwrap_or_else(|e| e.into_inner())
}

/// The server's lock, held across a fork so that no other thread holds it then.
pub(crate) struct ForkGuard(#[allow(dead_code)] MutexGuard<'static, Option<Server>>);

/// Takes the server's lock for a fork (see [`ForkGuard`]).
pub(crate) fn handoff_lock_for_fork() -> ForkGuard {
    ForkGuard(state())
}

/// A duplicate of `raw`, owned by the caller (close-on-exec).
pub(crate) fn duplicate_handle(raw: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: the caller names a descriptor that is open for the duration of this call (it
    // belongs to an object being serialized).
    unsafe { BorrowedFd::borrow_raw(raw) }.try_clone_to_owned()
}

/// The running server of this process, started if needed.
fn running(st: &mut Option<Server>) -> io::Result<&mut Server> {
    let me = std::process::id();
    if st.as_ref().is_some_and(|s| s.pid != me) {
        // Inherited through fork: the thread did not come along, and the batches are the
        // parent's business (dropping them closes this process's copies).
        *st = None;
    }
    if st.is_none() {
        let (listener, address) = bind()?;
        std::thread::Builder::new()
            .name("mp-handoff".into())
            .spawn(move || serve(listener))?;
        *st = Some(Server {
            pid: me,
            address,
            batches: HashMap::new(),
        });
    }
    Ok(st.as_mut().expect("just set"))
}

fn random_key() -> Key {
    let mut k = [0u8; 16];
    getrandom::fill(&mut k).expect("the OS random source failed");
    k
}

#[cfg(target_os = "linux")]
fn bind() -> io::Result<(UnixListener, Vec<u8>)> {
    use std::os::linux::net::SocketAddrExt;
    let k = random_key();
    let name = format!(
        "mp-handoff-{}-{:016x}",
        std::process::id(),
        u64::from_le_bytes(k[..8].try_into().unwrap())
    );
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    Ok((UnixListener::bind_addr(&addr)?, name.into_bytes()))
}

#[cfg(target_os = "linux")]
fn connect(address: &[u8]) -> io::Result<UnixStream> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(address)?;
    UnixStream::connect_addr(&addr)
}

#[cfg(not(target_os = "linux"))]
fn bind() -> io::Result<(UnixListener, Vec<u8>)> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::DirBuilderExt;
    let k = random_key();
    let dir = std::env::temp_dir().join(format!(
        "mp-handoff-{}-{:016x}",
        std::process::id(),
        u64::from_le_bytes(k[..8].try_into().unwrap())
    ));
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    let path = dir.join("s");
    let listener = UnixListener::bind(&path)?;
    *SOCKET_DIR.lock().unwrap_or_else(|e| e.into_inner()) = Some((std::process::id(), dir));
    static HOOKED: std::sync::Once = std::sync::Once::new();
    HOOKED.call_once(|| super::at_exit(remove_socket_dir));
    Ok((listener, path.as_os_str().as_bytes().to_vec()))
}

/// The private directory of this process's server socket, removed at exit.
#[cfg(not(target_os = "linux"))]
static SOCKET_DIR: Mutex<Option<(u32, std::path::PathBuf)>> = Mutex::new(None);

#[cfg(not(target_os = "linux"))]
extern "C" fn remove_socket_dir() {
    if let Ok(dir) = SOCKET_DIR.try_lock() {
        if let Some((pid, path)) = dir.as_ref() {
            if *pid == std::process::id() {
                let _ = std::fs::remove_dir_all(path);
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn connect(address: &[u8]) -> io::Result<UnixStream> {
    use std::os::unix::ffi::OsStrExt;
    UnixStream::connect(std::ffi::OsStr::from_bytes(address))
}

/// Whether the client runs as our user (Linux: `SO_PEERCRED`; elsewhere the socket's
/// private directory already sees to it).
#[cfg(target_os = "linux")]
fn same_user(stream: &UnixStream) -> bool {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    // SAFETY: geteuid has no preconditions.
    rc == 0 && cred.uid == unsafe { libc::geteuid() }
}

#[cfg(not(target_os = "linux"))]
fn same_user(_stream: &UnixStream) -> bool {
    true
}

/// The server thread: answers one client at a time, each bounded by [`KEY_TIMEOUT`].
fn serve(listener: UnixListener) {
    for stream in listener.incoming() {
        match stream {
            Ok(s) => {
                let _ = answer(s);
            }
            // Out of descriptors, most likely: let the process recover some.
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Reads a key and sends its batch (`[0]` with the handles), or `[1]` if there is none.
fn answer(stream: UnixStream) -> io::Result<()> {
    if !same_user(&stream) {
        return Ok(());
    }
    let chan = mp_unix::UnixChannel::from_fd(stream.into())?;
    if !chan.poll(Some(KEY_TIMEOUT)).map_err(io::Error::other)? {
        return Ok(());
    }
    let mut buf = Vec::new();
    chan.recv_frame(&mut buf, 16).map_err(io::Error::other)?;
    let Ok(key) = Key::try_from(buf.as_slice()) else {
        return Ok(());
    };
    let batch = {
        let mut st = state();
        st.as_mut()
            .filter(|s| s.pid == std::process::id())
            .and_then(|s| s.batches.remove(&key))
    };
    match batch {
        Some(fds) => {
            let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
            chan.send_frame_with_handles(&[&[0]], &raw)
        }
        None => chan.send_frame(&[&[1]]),
    }
    .map_err(io::Error::other)
}

/// Fetches batch `key` from the server at `address`.
fn fetch(address: &[u8], key: &Key) -> io::Result<Vec<OwnedFd>> {
    let stream = connect(address).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("the process that put the item has ended, or dropped its handles ({e})"),
        )
    })?;
    let chan = mp_unix::UnixChannel::from_fd(stream.into())?;
    chan.send_frame(&[key]).map_err(io::Error::other)?;
    if !chan.poll(Some(FETCH_TIMEOUT)).map_err(io::Error::other)? {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the process that put the item did not hand its handles over",
        ));
    }
    let mut buf = Vec::new();
    let fds = chan
        .recv_frame_with_handles(&mut buf, 16)
        .map_err(io::Error::other)?;
    match buf.first() {
        Some(0) => Ok(fds),
        _ => Err(io::Error::new(
            io::ErrorKind::NotFound,
            "the item's handles were already taken, or withdrawn by the process that put it",
        )),
    }
}

/// The handles one item exports while it is encoded.
pub(crate) struct Exporter {
    batch: Option<(Key, Vec<u8>)>,
    count: u32,
}

impl Exporter {
    pub(crate) fn new() -> Self {
        Self {
            batch: None,
            count: 0,
        }
    }

    /// Keeps a duplicate of `raw` for the taker of the item; returns its ticket.
    pub(crate) fn export(&mut self, raw: RawFd) -> io::Result<Ticket> {
        if self.count as usize >= mp_unix::fdpass::MAX_FDS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a queue item can carry at most {} handles",
                    mp_unix::fdpass::MAX_FDS
                ),
            ));
        }
        let dup = duplicate_handle(raw)?;
        let mut st = state();
        let server = running(&mut st)?;
        let (key, address) = match &self.batch {
            Some(b) => b.clone(),
            None => {
                let key = random_key();
                self.batch = Some((key, server.address.clone()));
                (key, server.address.clone())
            }
        };
        server.batches.entry(key).or_default().push(dup);
        let index = self.count;
        self.count += 1;
        Ok(Ticket {
            server: address,
            key,
            index,
        })
    }

    /// The item was not queued: its duplicates are closed.
    pub(crate) fn withdraw(self) {
        if let Some((key, _)) = self.batch {
            let removed = state().as_mut().and_then(|s| s.batches.remove(&key));
            drop(removed);
        }
    }
}

/// The handles of one item being decoded, fetched once per batch.
pub(crate) struct Importer {
    fetched: Vec<(Key, Vec<Option<OwnedFd>>)>,
}

impl Importer {
    pub(crate) fn new() -> Self {
        Self {
            fetched: Vec::new(),
        }
    }

    /// The handle `ticket` stands for.
    pub(crate) fn import(&mut self, ticket: &Ticket) -> io::Result<OwnedFd> {
        let at = match self.fetched.iter().position(|(k, _)| *k == ticket.key) {
            Some(at) => at,
            None => {
                let fds = fetch(&ticket.server, &ticket.key)?;
                self.fetched
                    .push((ticket.key, fds.into_iter().map(Some).collect()));
                self.fetched.len() - 1
            }
        };
        self.fetched[at]
            .1
            .get_mut(ticket.index as usize)
            .and_then(Option::take)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "handle {} of the item is missing or taken twice",
                        ticket.index
                    ),
                )
            })
    }
}
