//! Pools and executors whose workers are ranks of an MPI job (feature `mpi`): mpi4py's
//! `MPIPoolExecutor`, with `mp_core::pool`'s API.
//!
//! Two ways to get workers, as in `mpi4py.futures`:
//! - **world**: the program was started as `mpirun -n N ./app` (or `srun`). Before `main`,
//!   every rank but 0 becomes a worker server and never runs `main`, the same way a spawned
//!   child never does; rank 0 runs `main`, and its MPI pools use ranks `1..N`.
//! - **spawn**: the program runs alone (`./app`, `cargo run`, `mpirun -n 1 ./app`); the pool
//!   starts its workers with `MPI_Comm_spawn` (this executable again), as many as asked
//!   for, else `MP_MPI_MAX_WORKERS`, else the MPI universe size minus one (at least one).
//!
//! Every rank runs the same executable, so a task function travels as an
//! [`FnId`](crate::fn_id), exactly as to a local worker; a worker first checks that its
//! executable is byte-for-byte the client's (SHA-256 of the file), so that an offset is
//! never resolved in another build. Tasks travel in the local pool's frames (`worker.rs`),
//! as MPI messages with a tag of the pool's own, a frame in pieces of at most 32 KiB (see
//! `piece_bytes`); control messages (start a session, shut down) use tag [`CONTROL`].
//!
//! Shared objects (locks, queues, connections, OS handles) cannot reach a rank: it may be on
//! another host, where a handle means nothing. A task or initializer argument holding any is
//! refused with [`PoolError::HandlesUnsupported`] (nothing is sent; `map`, `imap` and the
//! executor's `map` report it as [`TaskError::Encode`]), never sent without them.
//!
//! MPI has no blocking wait that leaves the CPU alone, so both sides poll: they spin
//! (yielding) for up to `MP_MPI_SPIN_US` (default 100 µs) after the last message, then
//! poll every 20 µs until `MP_MPI_HOT_US` (default 2 ms) after it, then sleep with a
//! doubling back-off up to 1 ms (the dispatcher sleeps on its wake-up pipe, so a submission
//! wakes it at once).
//!
//! What survives what (Open MPI 4.1, no ULFM):
//! - a task that panics: its `TaskError::Panicked`, with the message; the rank goes on;
//! - a rank that dies, under `mpirun` (world mode) with the default settings: Open MPI ends
//!   the whole job and `mpirun` prints which rank died and how; the program does not hang;
//! - a spawned rank that dies (spawn mode): Open MPI ends the spawned group, the client goes
//!   on; the client notices the death (a rank on this host is watched by its pid) and fails
//!   the chunk that rank was running with [`TaskError::WorkerLost`]; the rest is retried on
//!   replacement ranks spawned anew. A rank on another host is not watched: see the guide;
//! - `mpirun --enable-recovery` (world mode): the job survives a rank's death; a dead rank
//!   on this host is noticed as above and its chunk fails, the pool goes on with the other
//!   ranks (a world rank cannot be replaced).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use mp_ipc::spin::SpinLimit;
use serde::{Deserialize, Serialize};

use super::entry::Init;
use super::launch::{Launcher, Link, Ready, Setup, Stop};
use super::worker::{self, InitArg, WorkerEnd};
use super::{PoolBuilder, PoolError, TaskError};
use crate::fn_id::FnId;
use crate::handles::SharedHandles;
use crate::{Connection, ProcessError};
use mp_ipc::handle::{OwnedHandle, RawHandle};

/// The tag of control messages (client to worker: [`Control`]).
const CONTROL: i32 = 1;
/// Pools take tags from here on, two apart (MPI guarantees tags up to 32767).
const FIRST_TAG: i32 = 100;

/// Where an MPI pool's workers come from; see the module docs.
///
/// ```no_run
/// use mp_core::pool::{MpiWorkers, Pool};
///
/// fn square(x: u64) -> u64 { x * x }
///
/// // Under `mpirun -n 4`: ranks 1..4; alone: three spawned ranks.
/// let pool = Pool::builder().mpi(MpiWorkers::Auto).build().unwrap();
/// assert_eq!(pool.map(square, 0..4).unwrap(), [0, 1, 4, 9]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MpiWorkers {
    /// The world's ranks if the program was started with more than one, else spawned ones.
    #[default]
    Auto,
    /// Ranks `1..N` of the world (an error if there are none).
    World,
    /// Ranks started with `MPI_Comm_spawn`.
    Spawn,
}

impl PoolBuilder {
    /// The workers are MPI ranks (see [`MpiWorkers`]). The pool's size defaults to every
    /// free world rank, or in spawn mode to `MP_MPI_MAX_WORKERS`, else the MPI universe size
    /// minus one; [`processes`](Self::processes) sets it. `max_tasks_per_child` is refused
    /// (a rank cannot be restarted), and the context is not used.
    pub fn mpi(mut self, workers: MpiWorkers) -> Self {
        self.launch = super::launch::Launch::Mpi(workers);
        self
    }
}

impl super::ExecutorBuilder {
    /// The workers are MPI ranks; see [`PoolBuilder::mpi`]. Ranks are taken when there is
    /// work for them.
    pub fn mpi(mut self, workers: MpiWorkers) -> Self {
        self.inner = self.inner.mpi(workers);
        self
    }
}

// -------------------------------------------------------------------------------------------
// Messages.

/// Client to worker, on [`CONTROL`].
#[derive(Serialize, Deserialize)]
enum Control {
    /// Serve a pool on `tag`, after checking the executable and running `init`.
    Start {
        tag: i32,
        fingerprint: [u8; 32],
        init: Option<(FnId<Init>, Vec<u8>)>,
    },
    /// Leave the serve loop and exit; finalize MPI first unless a rank of the job died
    /// (`MPI_Finalize` would wait for it, perhaps for ever).
    Shutdown { finalize: bool },
}

/// Worker to client, the first message on a session's tag.
#[derive(Serialize, Deserialize)]
struct Hello {
    pid: u32,
    host: String,
    /// The kernel's boot id: equal to ours means the same machine (pids are comparable).
    boot_id: String,
    /// Why the worker will not serve (another executable), if it will not.
    refused: Option<String>,
}

fn mpi_err(e: mp_mpi::Error) -> ProcessError {
    ProcessError::Io(std::io::Error::other(format!("MPI: {e}")))
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

// -------------------------------------------------------------------------------------------
// Frames in pieces.

/// The largest piece of a frame sent as one MPI message. A frame travels as pieces of at
/// most this size, each `[more][bytes]` (`more` is 1 if another piece follows); the pieces
/// of a frame follow each other (MPI keeps the order of messages between two ranks on one
/// tag). Under the eager limit of Open MPI's TCP transport (64 KiB with its header), every
/// piece is sent eagerly: a larger message goes by rendezvous, which over TCP stalled for
/// tens of milliseconds now and then (a `map` of 100 000 trivial tasks across the
/// namespace hosts took 20–150 ms with 50–90 KiB frames, 4–10 ms in pieces).
/// `MP_MPI_PIECE_BYTES` overrides it (at least 1 KiB).
fn piece_bytes() -> usize {
    static PIECE: OnceLock<usize> = OnceLock::new();
    *PIECE.get_or_init(|| {
        std::env::var("MP_MPI_PIECE_BYTES")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .map_or(32 * 1024, |n| n.max(1024))
    })
}

/// The pieces of `frame`, each with its `more` byte. Frames are cut between ranks of one
/// machine too: which transport Open MPI uses between two ranks is not known here (the
/// namespace hosts of `cargo xtask test-mpi` share a kernel but talk TCP); over shared
/// memory the pieces cost a little (a `map` of 100 000 trivial tasks: ~1.9 ms whole,
/// ~2.6 ms in pieces).
fn pieces(frame: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    let size = piece_bytes();
    let count = frame.len().div_ceil(size).max(1);
    (0..count).map(move |k| {
        let part = &frame[k.saturating_mul(size).min(frame.len())
            ..(k + 1).saturating_mul(size).min(frame.len())];
        let mut piece = Vec::with_capacity(1 + part.len());
        piece.push(u8::from(k + 1 < count));
        piece.extend_from_slice(part);
        piece
    })
}

/// Adds a received piece to `partial`; the whole frame once its last piece is in.
fn join_piece(partial: &mut Vec<u8>, piece: &[u8]) -> Option<Vec<u8>> {
    let (&more, bytes) = piece.split_first()?;
    partial.extend_from_slice(bytes);
    (more == 0).then(|| std::mem::take(partial))
}

// -------------------------------------------------------------------------------------------
// Waiting: spin, then back off.

/// How long both sides keep polling after the last message before they start to sleep.
static SPIN: SpinLimit = SpinLimit::new("MP_MPI_SPIN_US", Duration::from_micros(100));
/// The longest sleep between two polls.
const MAX_SLEEP: Duration = Duration::from_millis(1);
/// The sleep between two polls while a message is likely soon (within [`hot`] of the last).
const HOT_SLEEP: Duration = Duration::from_micros(20);

/// How long after the last message both sides poll every [`HOT_SLEEP`] before the sleeps
/// grow: `MP_MPI_HOT_US`, else 2 ms. The next message of a conversation (a task after a
/// result, a result after a short task) comes within it; a side that slept for longer would
/// be out of step with the other, each sleeping while the other answers.
fn hot() -> Duration {
    static HOT: OnceLock<Duration> = OnceLock::new();
    *HOT.get_or_init(|| {
        std::env::var("MP_MPI_HOT_US")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(Duration::from_millis(2), Duration::from_micros)
    })
}

/// A poll loop's pacing: yield while within the spin window, then sleep ever longer.
struct Backoff {
    since: Instant,
    sleep: Duration,
    /// The hot window of this wait ([`hot`], or none).
    hot: Duration,
}

impl Backoff {
    fn new() -> Self {
        Self {
            since: Instant::now(),
            sleep: Duration::ZERO,
            hot: hot(),
        }
    }

    /// A wait without the hot window: for a message that is not the next step of a
    /// conversation.
    fn cold() -> Self {
        Self {
            hot: Duration::ZERO,
            ..Self::new()
        }
    }

    /// Something happened: spin again.
    fn reset(&mut self) {
        self.since = Instant::now();
        self.sleep = Duration::ZERO;
    }

    /// How long to pause now (zero: just yield): nothing within the spin window, short
    /// sleeps within the hot window, then ever longer ones up to `max`.
    fn next(&mut self, max: Duration) -> Duration {
        let idle = self.since.elapsed();
        if idle < SPIN.get() {
            return Duration::ZERO;
        }
        if idle < self.hot {
            return HOT_SLEEP.min(max);
        }
        self.sleep = (self.sleep * 2).clamp(HOT_SLEEP, max);
        self.sleep
    }

    fn pause(&mut self, max: Duration) {
        match self.next(max) {
            Duration::ZERO => std::thread::yield_now(),
            d => std::thread::sleep(d),
        }
    }
}

// -------------------------------------------------------------------------------------------
// The worker side.

/// Called before `main` by the boot constructor: a rank of an MPI job other than the
/// client becomes a worker server here and never returns. Set `MP_MPI_SERVE=0` for a
/// program that uses MPI on its own terms (every rank then runs `main`, nothing is started).
pub(crate) fn boot_from_env() {
    if !mp_mpi::launched_by_mpi() || std::env::var_os("MP_MPI_SERVE").is_some_and(|v| v == "0") {
        return;
    }
    if let Err(e) = mp_mpi::init() {
        eprintln!("mp: cannot start MPI: {e}");
        std::process::exit(1);
    }
    match mp_mpi::parent() {
        Ok(Some(parent)) => serve_rank(parent),
        Ok(None) if mp_mpi::world().rank() > 0 => serve_rank(mp_mpi::world()),
        Ok(None) => client_started(),
        Err(e) => {
            eprintln!("mp: cannot ask MPI for a parent: {e}");
            std::process::exit(1);
        }
    }
}

/// A worker's end of a session: frames on `tag` from the client (rank 0 of `comm`'s other
/// side, or of the world).
struct RankEnd {
    comm: mp_mpi::Comm,
    tag: i32,
    /// Set when a shutdown arrived during the session: `Some(finalize)`.
    shutdown: std::cell::Cell<Option<bool>>,
    /// Whether the rank has answered since its last receive.
    answered: std::cell::Cell<bool>,
}

impl WorkerEnd for RankEnd {
    fn recv(&self) -> Option<(Vec<u8>, Vec<OwnedHandle>)> {
        // The hot window only after an answer, when the next task is likely soon. A rank
        // that keeps polling fast at the start of a session (or idle) is no help, and made
        // a spawn-mode test hang now and then: a rank of a spawned group died right after
        // the session started while the other rank polled every 20 µs, and the group
        // spawned to replace them never started (2 to 4 hangs in 20 runs of
        // `a_spawned_rank_that_dies...`, none in 14 with the workers' hot window off; how
        // Open MPI gets there was not found).
        let mut backoff = if self.answered.replace(false) {
            Backoff::new()
        } else {
            Backoff::cold()
        };
        let mut polls = 0u32;
        let mut partial = Vec::new();
        loop {
            match self.comm.try_recv(0, self.tag) {
                // An empty message ends the session.
                Ok(Some(piece)) if piece.is_empty() => return None,
                Ok(Some(piece)) => {
                    // No handles: they do not cross hosts (the pool refuses arguments
                    // holding any).
                    if let Some(frame) = join_piece(&mut partial, &piece) {
                        return Some((frame, Vec::new()));
                    }
                    backoff.reset();
                    continue;
                }
                Ok(None) => {}
                Err(_) => return None,
            }
            polls += 1;
            // Now and then (and only when idle), look for a shutdown.
            if polls.is_multiple_of(64) {
                if let Ok(Some(msg)) = self.comm.try_recv(0, CONTROL) {
                    if let Ok(Control::Shutdown { finalize }) = crate::codec::decode(&msg) {
                        self.shutdown.set(Some(finalize));
                        return None;
                    }
                }
            }
            backoff.pause(MAX_SLEEP);
        }
    }

    fn send(&self, frame: &[u8]) -> bool {
        self.answered.set(true);
        pieces(frame).all(|piece| self.comm.send(0, self.tag, &piece).is_ok())
    }
}

/// The serve loop of a worker rank: sessions, one at a time, until shut down.
fn serve_rank(comm: mp_mpi::Comm) -> ! {
    let mut backoff = Backoff::new();
    loop {
        let msg = match comm.try_recv(0, CONTROL) {
            Ok(Some(m)) => m,
            Ok(None) => {
                // Idle between pools: sleep longer (this only delays a pool's start).
                backoff.pause(Duration::from_millis(10));
                continue;
            }
            Err(e) => {
                eprintln!("mp: MPI worker rank {} lost its client: {e}", comm.rank());
                std::process::exit(1)
            }
        };
        backoff.reset();
        match crate::codec::decode::<Control>(&msg) {
            Ok(Control::Start {
                tag,
                fingerprint: theirs,
                init,
            }) => {
                let refused = match crate::fn_id::fingerprint() {
                    Ok(ours) if ours == theirs => None,
                    Ok(_) => Some(format!(
                        "rank {} on {} runs another build of the executable ({}); every \
                         rank must run the same file",
                        mp_mpi::world().rank(),
                        mp_mpi::processor_name().unwrap_or_default(),
                        std::env::current_exe().unwrap_or_default().display()
                    )),
                    Err(e) => Some(format!("cannot read the executable: {e}")),
                };
                let hello = Hello {
                    pid: std::process::id(),
                    host: mp_mpi::processor_name().unwrap_or_default(),
                    boot_id: boot_id(),
                    refused: refused.clone(),
                };
                let bytes = postcard::to_stdvec(&hello).unwrap_or_default();
                if comm.send(0, tag, &bytes).is_err() || refused.is_some() {
                    continue;
                }
                let end = RankEnd {
                    comm,
                    tag,
                    shutdown: std::cell::Cell::new(None),
                    answered: std::cell::Cell::new(false),
                };
                let init = init.map(|(entry, bytes)| InitArg {
                    entry,
                    bytes,
                    handles: SharedHandles::default(),
                });
                worker::serve(&end, init, None, None);
                if let Some(finalize) = end.shutdown.get() {
                    leave(comm, finalize)
                }
                // The session's last message: the client drops everything before it.
                let _ = comm.send(0, tag, &[]);
            }
            Ok(Control::Shutdown { finalize }) => leave(comm, finalize),
            // Not ours to understand: ignore it.
            Err(_) => {}
        }
    }
}

/// Ends a worker rank: frees the parent link, finalizes MPI, exits.
fn leave(comm: mp_mpi::Comm, finalize: bool) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    if finalize {
        comm.free();
        mp_mpi::finalize();
    }
    std::process::exit(0)
}

// -------------------------------------------------------------------------------------------
// The client side: which ranks are free, and what to do at exit.

/// What the client process knows of its ranks.
struct Client {
    /// World ranks not serving a pool now.
    free: Vec<i32>,
    /// Spawned ranks alive: (group, rank), to shut down at exit.
    spawned: Vec<(mp_mpi::Comm, i32)>,
    /// Spawned ranks not serving a pool now: the next spawn-mode pool takes them before it
    /// spawns more (spawning is slow, and Open MPI 4.1 sometimes fails a spawn made while
    /// an earlier group is ending).
    spawned_free: Vec<(mp_mpi::Comm, i32, Option<u32>)>,
    /// Ranks whose session was closed and whose last messages have not all arrived yet.
    draining: Vec<Drain>,
    /// World ranks that died (under `mpirun --enable-recovery`): never sent to again.
    dead: Vec<i32>,
    /// Spawned groups one of whose ranks died: Open MPI ends the whole group then, so
    /// every rank of it is lost at once (and never sent to again).
    lost_groups: Vec<mp_mpi::Comm>,
}

/// A rank between two sessions: the client drops its messages on the old session's tag
/// until the empty one that ends it. A rank may still be sending results of chunks it had
/// been given, and a large message is only delivered once it is received: unread, it would
/// block the rank (and the job's end) for ever.
struct Drain {
    comm: mp_mpi::Comm,
    rank: i32,
    tag: i32,
    spawned: bool,
    /// The pid to watch, if the rank is on this host.
    pid: Option<u32>,
}

/// How a rank comes back from a pool.
enum Back {
    /// It never started a session (it refused, or was never asked).
    Idle,
    /// Its session was closed: drain it.
    InSession(i32),
    /// It died.
    Dead,
}

static CLIENT: Mutex<Option<Client>> = Mutex::new(None);
static NEXT_TAG: AtomicI32 = AtomicI32::new(FIRST_TAG);

fn client() -> std::sync::MutexGuard<'static, Option<Client>> {
    CLIENT.lock().unwrap_or_else(|e| e.into_inner())
}

fn shutdown_msg(finalize: bool) -> Vec<u8> {
    postcard::to_stdvec(&Control::Shutdown { finalize }).unwrap_or_default()
}

impl Client {
    /// A rank is back from a pool.
    fn give_back(
        &mut self,
        comm: mp_mpi::Comm,
        rank: i32,
        spawned: bool,
        pid: Option<u32>,
        how: Back,
    ) {
        match how {
            Back::InSession(tag) => self.draining.push(Drain {
                comm,
                rank,
                tag,
                spawned,
                pid,
            }),
            Back::Idle => self.idle(comm, rank, spawned, pid),
            Back::Dead => self.forget(comm, rank, spawned),
        }
    }

    /// A rank out of any session is free for the next pool.
    fn idle(&mut self, comm: mp_mpi::Comm, rank: i32, spawned: bool, pid: Option<u32>) {
        if spawned {
            self.spawned_free.push((comm, rank, pid));
        } else {
            self.free.push(rank);
        }
    }

    /// A spawned rank gone: its group is freed with its last rank. A world rank that died
    /// is never free again.
    fn forget(&mut self, comm: mp_mpi::Comm, rank: i32, spawned: bool) {
        if spawned {
            self.spawned.retain(|x| *x != (comm, rank));
            self.spawned_free.retain(|x| (x.0, x.1) != (comm, rank));
            if !self.spawned.iter().any(|(g, _)| *g == comm) {
                comm.free();
                // MPI may give the handle to the next group spawned.
                self.lost_groups.retain(|g| *g != comm);
            }
        } else {
            self.dead.push(rank);
        }
    }

    /// Receives what the draining ranks sent; those whose session has ended are idle again.
    fn settle(&mut self) {
        let draining = std::mem::take(&mut self.draining);
        for d in draining {
            let outcome = loop {
                match d.comm.try_recv(d.rank, d.tag) {
                    Ok(Some(m)) if m.is_empty() => break Some(Back::Idle),
                    Ok(Some(_)) => continue,
                    Ok(None) if d.pid.is_some_and(|p| !crate::sys::pid_alive(p)) => {
                        break Some(Back::Dead)
                    }
                    Ok(None) => break None,
                    Err(_) => break Some(Back::Dead),
                }
            };
            match outcome {
                Some(how) => self.give_back(d.comm, d.rank, d.spawned, d.pid, how),
                None => self.draining.push(d),
            }
        }
    }
}

/// Rank 0 of a launched job (from the boot constructor), or a singleton's first MPI pool:
/// MPI is started; note the world's ranks and arrange the shutdown at exit.
fn client_started() {
    let mut c = client();
    if c.is_some() {
        return;
    }
    let world = mp_mpi::world();
    *c = Some(Client {
        free: (1..world.size()).rev().collect(),
        spawned: Vec::new(),
        spawned_free: Vec::new(),
        draining: Vec::new(),
        dead: Vec::new(),
        lost_groups: Vec::new(),
    });
    crate::sys::at_exit(shutdown_at_exit);
}

/// How long the client waits at exit for ranks still finishing a closed pool's work.
const EXIT_DRAIN: Duration = Duration::from_secs(60);

/// At exit of the client: every worker rank is told to leave, then MPI is finalized.
/// Ranks still running a closed pool's tasks are waited for a while; if they do not finish,
/// the job is aborted rather than left hanging in `MPI_Finalize`.
extern "C" fn shutdown_at_exit() {
    let Some(mut c) = client().take() else {
        return;
    };
    let deadline = Instant::now() + EXIT_DRAIN;
    let mut backoff = Backoff::new();
    loop {
        c.settle();
        if c.draining.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            eprintln!(
                "mp: {} MPI worker rank(s) still run tasks of a closed pool at exit; \
                 aborting the MPI job",
                c.draining.len()
            );
            mp_mpi::abort(1);
        }
        backoff.pause(MAX_SLEEP);
    }
    let world = mp_mpi::world();
    let finalize = c.dead.is_empty();
    for rank in (1..world.size()).filter(|r| !c.dead.contains(r)) {
        let _ = world.send(rank, CONTROL, &shutdown_msg(finalize));
    }
    for (comm, rank) in std::mem::take(&mut c.spawned) {
        let dead = c.lost_groups.contains(&comm)
            || c.spawned_free.iter().any(|(g, r, pid)| {
                (*g, *r) == (comm, rank) && pid.is_some_and(|p| !crate::sys::pid_alive(p))
            });
        if !dead {
            let _ = comm.send(rank, CONTROL, &shutdown_msg(true));
        }
        c.forget(comm, rank, true);
    }
    if !c.dead.is_empty() {
        // MPI_Finalize waits for every rank of the job, the dead ones too (Open MPI 4.1
        // sometimes for ever): the process ends without it, and the launcher is told so.
        eprintln!(
            "mp: MPI rank(s) {:?} died; ending without MPI_Finalize",
            c.dead
        );
        return;
    }
    mp_mpi::finalize();
}

/// Starts MPI in this process if needed, as a client.
fn ensure_client() -> Result<(), PoolError> {
    if !mp_mpi::is_initialized() {
        mp_mpi::init().map_err(|e| PoolError::Start(mpi_err(e)))?;
    }
    if mp_mpi::parent().ok().flatten().is_some() || mp_mpi::world().rank() != 0 {
        return Err(PoolError::InvalidArgument(
            "an MPI worker rank cannot start an MPI pool of its own".into(),
        ));
    }
    client_started();
    Ok(())
}

fn max_workers_default() -> usize {
    if let Some(n) = std::env::var("MP_MPI_MAX_WORKERS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
    {
        return n;
    }
    let world = mp_mpi::world().size().max(1) as usize;
    mp_mpi::universe_size()
        .map(|u| (u.max(0) as usize).saturating_sub(world))
        .filter(|n| *n > 0)
        .unwrap_or(1)
}

/// What `build` does with [`MpiWorkers`]: the launcher and the pool's size.
pub(crate) fn launcher(
    workers: MpiWorkers,
    processes: Option<usize>,
    max_tasks: Option<usize>,
) -> Result<(MpiLauncher, usize), PoolError> {
    if max_tasks.is_some() {
        return Err(PoolError::InvalidArgument(
            "max_tasks_per_child is not supported with MPI workers: a rank cannot be restarted"
                .into(),
        ));
    }
    ensure_client()?;
    let fingerprint = crate::fn_id::fingerprint()
        .map_err(|e| PoolError::Start(ProcessError::Io(std::io::Error::other(e))))?;
    let world_size = mp_mpi::world().size();
    let use_world = match workers {
        MpiWorkers::World => true,
        MpiWorkers::Spawn => false,
        MpiWorkers::Auto => world_size > 1,
    };
    let tag = NEXT_TAG.fetch_add(2, Ordering::Relaxed);
    if tag > 32_000 {
        return Err(PoolError::InvalidArgument(
            "too many MPI pools made in this process (MPI tags ran out)".into(),
        ));
    }
    let source = if use_world {
        let free = client().as_ref().map_or(0, |c| {
            c.free.len() + c.draining.iter().filter(|d| !d.spawned).count()
        });
        if free == 0 {
            return Err(PoolError::InvalidArgument(if world_size <= 1 {
                "no world ranks to use: start the program with mpirun -n N (N > 1), or use \
                 MpiWorkers::Spawn"
                    .into()
            } else {
                format!(
                    "all {} worker ranks of the MPI world serve other pools",
                    world_size - 1
                )
            }));
        }
        let n = processes.unwrap_or(free);
        if n > free {
            return Err(PoolError::InvalidArgument(format!(
                "{n} workers asked for, but only {free} world ranks are free"
            )));
        }
        Source::World
    } else {
        Source::Spawn
    };
    let n = match (&source, processes) {
        (_, Some(n)) => n,
        (Source::World, None) => client().as_ref().map_or(0, |c| {
            c.free.len() + c.draining.iter().filter(|d| !d.spawned).count()
        }),
        (Source::Spawn, None) => max_workers_default(),
    };
    Ok((
        MpiLauncher {
            source,
            tag,
            fingerprint,
            boot_id: boot_id(),
            wanted: n,
            last_liveness: Instant::now(),
        },
        n,
    ))
}

enum Source {
    World,
    /// Spawned ranks: free ones first, then new ones spawned together.
    Spawn,
}

/// Starts MPI-rank workers; see the module docs.
pub(crate) struct MpiLauncher {
    source: Source,
    tag: i32,
    fingerprint: [u8; 32],
    boot_id: String,
    /// Ranks this pool will still take (how many to spawn together when none is free).
    wanted: usize,
    last_liveness: Instant,
}

/// The client's end of one rank serving a pool.
pub(crate) struct RankLink {
    comm: mp_mpi::Comm,
    rank: i32,
    tag: i32,
    spawned: bool,
    hello: Hello,
    same_host: bool,
    open: bool,
    sending: VecDeque<mp_mpi::Sending>,
    /// The pieces received so far of a frame not yet whole.
    partial: Vec<u8>,
    released: bool,
}

/// How long a rank may take to answer a session start (it may be finishing a task of a
/// pool that was terminated, or still starting MPI).
const HELLO_TIMEOUT: Duration = Duration::from_secs(120);

impl MpiLauncher {
    fn take_rank(&mut self) -> Result<(mp_mpi::Comm, i32, bool), ProcessError> {
        match &mut self.source {
            Source::World => {
                // A rank still draining a closed pool's messages is free soon.
                let deadline = Instant::now() + HELLO_TIMEOUT;
                let mut backoff = Backoff::new();
                loop {
                    let mut guard = client();
                    let Some(c) = guard.as_mut() else {
                        break;
                    };
                    c.settle();
                    if let Some(rank) = c.free.pop() {
                        self.wanted = self.wanted.saturating_sub(1);
                        return Ok((mp_mpi::world(), rank, false));
                    }
                    if !c.draining.iter().any(|d| !d.spawned) || Instant::now() > deadline {
                        break;
                    }
                    drop(guard);
                    backoff.pause(MAX_SLEEP);
                }
                Err(ProcessError::Io(std::io::Error::other(
                    "no free world rank is left (a world rank that died cannot be replaced)",
                )))
            }
            Source::Spawn => {
                let deadline = Instant::now() + HELLO_TIMEOUT;
                let mut backoff = Backoff::new();
                loop {
                    let mut guard = client();
                    let Some(c) = guard.as_mut() else {
                        break;
                    };
                    c.settle();
                    // A free rank whose group Open MPI ended (another rank of it died) is
                    // gone too.
                    while let Some((comm, rank, pid)) = c.spawned_free.pop() {
                        if c.lost_groups.contains(&comm)
                            || pid.is_some_and(|p| !crate::sys::pid_alive(p))
                        {
                            c.forget(comm, rank, true);
                            continue;
                        }
                        self.wanted = self.wanted.saturating_sub(1);
                        return Ok((comm, rank, true));
                    }
                    if !c.draining.iter().any(|d| d.spawned) || Instant::now() > deadline {
                        break;
                    }
                    drop(guard);
                    backoff.pause(MAX_SLEEP);
                }
                let n = self.wanted.max(1);
                let exe = std::env::current_exe().map_err(ProcessError::Io)?;
                let comm = mp_mpi::spawn(&exe, &[], n as i32, true).map_err(mpi_err)?;
                let mut guard = client();
                let c = guard
                    .as_mut()
                    .ok_or_else(|| ProcessError::Io(std::io::Error::other("MPI was finalized")))?;
                for r in (0..comm.size()).rev() {
                    c.spawned.push((comm, r));
                    c.spawned_free.push((comm, r, None));
                }
                let (comm, rank, _) = c.spawned_free.pop().expect("just spawned");
                self.wanted = self.wanted.saturating_sub(1);
                Ok((comm, rank, true))
            }
        }
    }

    fn give_back(comm: mp_mpi::Comm, rank: i32, spawned: bool, pid: Option<u32>, how: Back) {
        if let Some(c) = client().as_mut() {
            c.give_back(comm, rank, spawned, pid, how);
            c.settle();
        }
    }
}

impl Launcher for MpiLauncher {
    type Link = RankLink;
    /// Ranks may be on other hosts: the pool refuses arguments holding handles.
    const CARRIES_HANDLES: bool = false;

    fn start(&mut self, setup: &Setup, _name: String) -> Result<RankLink, ProcessError> {
        let (comm, rank, spawned) = self.take_rank()?;
        let start = Control::Start {
            tag: self.tag,
            fingerprint: self.fingerprint,
            init: setup
                .init
                .as_ref()
                .map(|i| (i.entry.clone(), i.bytes.clone())),
        };
        let tag = self.tag;
        // A rank that did not answer may still start the session later: end it at once
        // and drain it; one that answered with a refusal never started it.
        let fail = |e: ProcessError, how: Back| {
            if let Back::InSession(_) = how {
                let _ = comm.send(rank, tag, &[]);
            }
            Self::give_back(comm, rank, spawned, None, how);
            e
        };
        let bytes = postcard::to_stdvec(&start)
            .map_err(|e| fail(ProcessError::Encode(e.to_string()), Back::Idle))?;
        comm.send(rank, CONTROL, &bytes)
            .map_err(|e| fail(mpi_err(e), Back::Dead))?;
        let deadline = Instant::now() + HELLO_TIMEOUT;
        let mut backoff = Backoff::new();
        let hello = loop {
            match comm.try_recv(rank, self.tag) {
                Ok(Some(m)) => break m,
                Ok(None) if Instant::now() < deadline => backoff.pause(MAX_SLEEP),
                Ok(None) => {
                    return Err(fail(
                        ProcessError::Io(std::io::Error::other(format!(
                            "MPI rank {rank} did not answer within {HELLO_TIMEOUT:?}"
                        ))),
                        Back::InSession(tag),
                    ))
                }
                Err(e) => return Err(fail(mpi_err(e), Back::Dead)),
            }
        };
        let hello: Hello = crate::codec::decode(&hello).map_err(|e| {
            fail(
                ProcessError::Io(std::io::Error::other(format!(
                    "MPI rank {rank} sent an undecodable greeting: {e}"
                ))),
                Back::Idle,
            )
        })?;
        if let Some(why) = &hello.refused {
            return Err(fail(
                ProcessError::Io(std::io::Error::other(why.clone())),
                Back::Idle,
            ));
        }
        let same_host = !hello.boot_id.is_empty() && hello.boot_id == self.boot_id;
        Ok(RankLink {
            comm,
            rank,
            tag: self.tag,
            spawned,
            hello,
            same_host,
            open: true,
            sending: VecDeque::new(),
            partial: Vec::new(),
            released: false,
        })
    }

    fn wait(&mut self, wake: &Connection<()>, links: &[&RankLink]) -> Result<Vec<Ready>, String> {
        let mut groups: Vec<mp_mpi::Comm> = Vec::new();
        for l in links {
            if !groups.contains(&l.comm) {
                groups.push(l.comm);
            }
        }
        let mut backoff = Backoff::new();
        loop {
            if matches!(wake.poll(Duration::ZERO), Ok(true)) {
                return Ok(vec![Ready::Wake]);
            }
            for g in &groups {
                if let Some(source) = g.probe_any(self.tag).map_err(|e| e.to_string())? {
                    match links
                        .iter()
                        .position(|l| l.comm == *g && l.rank == source && l.open)
                    {
                        Some(i) => return Ok(vec![Ready::Conn(i)]),
                        // A late answer of a link closed since: drop it.
                        None => {
                            let _ = g.try_recv(source, self.tag);
                            continue;
                        }
                    }
                }
            }
            if self.last_liveness.elapsed() >= Duration::from_millis(20) {
                self.last_liveness = Instant::now();
                let mut lost: Vec<mp_mpi::Comm> = Vec::new();
                for l in links {
                    if l.spawned && l.same_host && !crate::sys::pid_alive(l.hello.pid) {
                        lost.push(l.comm);
                    }
                }
                if !lost.is_empty() {
                    if let Some(c) = client().as_mut() {
                        c.lost_groups.extend(lost);
                    }
                }
                let dead: Vec<Ready> = links
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| !l.alive())
                    .map(|(i, _)| Ready::Sentinel(i))
                    .collect();
                if !dead.is_empty() {
                    return Ok(dead);
                }
            }
            match backoff.next(MAX_SLEEP) {
                Duration::ZERO => std::thread::yield_now(),
                d => {
                    if !crate::wait(&[wake], Some(d))
                        .map_err(|e| e.to_string())?
                        .is_empty()
                    {
                        return Ok(vec![Ready::Wake]);
                    }
                }
            }
        }
    }
}

impl RankLink {
    /// Whether the rank may be alive: one on this host is checked by its pid. Nothing is
    /// ever sent to a rank known dead: over TCP, Open MPI 4.1 may hang for ever connecting
    /// to it.
    fn alive(&self) -> bool {
        if self.spawned
            && client()
                .as_ref()
                .is_some_and(|c| c.lost_groups.contains(&self.comm))
        {
            return false;
        }
        !self.same_host || crate::sys::pid_alive(self.hello.pid)
    }

    fn prune(&mut self) {
        while let Some(s) = self.sending.front_mut() {
            match s.test() {
                Ok(true) => {
                    self.sending.pop_front();
                }
                Ok(false) => return,
                Err(_) => {
                    self.open = false;
                    return;
                }
            }
        }
    }
}

impl Link for RankLink {
    fn id(&self) -> u32 {
        self.hello.pid
    }

    fn is_open(&self) -> bool {
        self.open
    }

    fn send(&mut self, frame: &[u8], handles: &[RawHandle]) -> bool {
        // The pool refuses chunks holding handles (`CARRIES_HANDLES` is false).
        debug_assert!(handles.is_empty(), "handles on an MPI link");
        if !self.open || !self.alive() {
            self.open = false;
            return false;
        }
        self.prune();
        for piece in pieces(frame) {
            match self.comm.isend(self.rank, self.tag, piece) {
                Ok(s) => self.sending.push_back(s),
                Err(_) => {
                    self.open = false;
                    return false;
                }
            }
        }
        true
    }

    fn try_recv(&mut self) -> Option<Result<Vec<u8>, ()>> {
        if !self.open {
            return None;
        }
        loop {
            match self.comm.try_recv(self.rank, self.tag) {
                // An empty message (a rank's end of session) is handed on as it is.
                Ok(Some(piece)) if piece.is_empty() => return Some(Ok(piece)),
                Ok(Some(piece)) => match join_piece(&mut self.partial, &piece) {
                    Some(frame) => return Some(Ok(frame)),
                    // The rest of the frame is on its way (or here already).
                    None => continue,
                },
                Ok(None) => return None,
                Err(_) => {
                    self.open = false;
                    return Some(Err(()));
                }
            }
        }
    }

    fn close(&mut self) {
        if !self.open {
            return;
        }
        self.open = false;
        if self.alive() {
            // An empty frame ends the session; the rank finishes what it holds first.
            if let Ok(s) = self.comm.isend(self.rank, self.tag, Vec::new()) {
                self.sending.push_back(s);
            }
        }
    }

    fn started(&self) -> Option<u64> {
        None
    }

    fn stop(&mut self, _how: Stop) {
        // A rank is never killed: under mpirun that would end the whole job. Closing the
        // session is all; a task running now finishes and its result is dropped.
        self.close();
    }

    fn join(&mut self, _grace: Duration) -> bool {
        true
    }

    fn death(&mut self) -> TaskError {
        TaskError::WorkerLost(format!(
            "MPI rank {} (pid {} on {}) died",
            self.rank, self.hello.pid, self.hello.host
        ))
    }

    fn release(&mut self) {
        if self.released {
            return;
        }
        self.released = true;
        let dead = !self.alive();
        if dead {
            self.open = false;
        }
        self.close();
        let how = if dead {
            // Nothing will ever complete these sends; give their buffers up to MPI.
            self.sending.clear();
            Back::Dead
        } else {
            Back::InSession(self.tag)
        };
        let pid = self.same_host.then_some(self.hello.pid);
        MpiLauncher::give_back(self.comm, self.rank, self.spawned, pid, how);
    }
}

#[cfg(test)]
mod tests {
    use super::{join_piece, piece_bytes, pieces};

    #[test]
    fn frames_cut_into_pieces_come_back_whole() {
        let size = piece_bytes();
        for len in [1, 2, size - 1, size, size + 1, 3 * size, 3 * size + 7] {
            let frame: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let parts: Vec<Vec<u8>> = pieces(&frame).collect();
            assert_eq!(parts.len(), len.div_ceil(size), "{len} bytes");
            assert!(parts.iter().all(|p| p.len() <= size + 1));
            let mut partial = Vec::new();
            let (last, rest) = parts.split_last().unwrap();
            for p in rest {
                assert_eq!(join_piece(&mut partial, p), None);
            }
            assert_eq!(join_piece(&mut partial, last), Some(frame));
            assert!(partial.is_empty());
        }
        // An empty message is no piece.
        assert_eq!(join_piece(&mut Vec::new(), &[]), None);
    }
}
