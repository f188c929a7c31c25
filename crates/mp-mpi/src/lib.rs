//! The MPI transport of mp: the few MPI operations a pool needs, safe and error-returning,
//! over the system's MPI library (through the `mpi` crate's bindings).
//!
//! This crate knows nothing of pools: it starts MPI, tells a process which part it plays in
//! an MPI job, sends and receives byte messages between ranks, and spawns ranks. mp-core's
//! feature `mpi` builds the pool and executor on it (`mp_core::pool`, module `mpi`).
//!
//! - [`init`] starts MPI once per process (`MPI_Init_thread`, asking for
//!   `MPI_THREAD_MULTIPLE`; with less, every call here is serialized by a lock), and makes
//!   errors return instead of aborting (`MPI_ERRORS_RETURN` on the world, self and every
//!   communicator made here). [`finalize`] ends it.
//! - [`launched_by_mpi`] reads the environment a launcher gives its ranks (`mpirun`,
//!   `mpiexec`, `srun`), before MPI is started.
//! - [`Comm`]: a communicator (the world, a spawned group, the parent group), with
//!   [`Comm::send`], [`Comm::isend`], [`Comm::try_recv`] and [`Comm::probe_any`]. Receives
//!   never block: MPI has no waiting primitive that does not spin a CPU, so callers poll
//!   with a back-off.
//! - [`spawn`]: `MPI_Comm_spawn` of this executable, from this process alone.
//!
//! ```no_run
//! // Under `mpirun -n 2`: rank 1 sends, rank 0 receives.
//! mp_mpi::init().unwrap();
//! let world = mp_mpi::world();
//! if world.rank() == 1 {
//!     world.send(0, 7, b"hello").unwrap();
//! } else {
//!     let msg = loop {
//!         if let Some(m) = world.try_recv(1, 7).unwrap() {
//!             break m;
//!         }
//!         std::thread::yield_now();
//!     };
//!     assert_eq!(msg, b"hello");
//! }
//! mp_mpi::finalize();
//! ```
#![warn(missing_docs)]

use std::ffi::{c_int, CString};
use std::mem::MaybeUninit;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, OnceLock};

use mpi::ffi;

/// An MPI call failed: which call, and MPI's own words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// The MPI function or the step that failed.
    pub call: &'static str,
    /// MPI's error code (`0` for errors found by this crate).
    pub code: i32,
    /// What went wrong.
    pub message: String,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} failed: {}", self.call, self.message)
    }
}

impl std::error::Error for Error {}

fn ours(call: &'static str, message: impl Into<String>) -> Error {
    Error {
        call,
        code: 0,
        message: message.into(),
    }
}

/// Turns an MPI return code into a `Result`, with MPI's description of the error.
fn check(call: &'static str, code: c_int) -> Result<(), Error> {
    if code == 0 {
        return Ok(());
    }
    let mut buf = vec![0u8; 512];
    let mut len: c_int = 0;
    // SAFETY: the buffer is at least MPI_MAX_ERROR_STRING (256 in Open MPI, 1024 in MPICH is
    // the largest known; 512 is the Open MPI limit twice over) bytes long.
    let message = if unsafe { ffi::MPI_Error_string(code, buf.as_mut_ptr().cast(), &mut len) } == 0
    {
        buf.truncate(len.max(0) as usize);
        String::from_utf8_lossy(&buf).into_owned()
    } else {
        format!("MPI error code {code}")
    };
    Err(Error {
        call,
        code,
        message,
    })
}

/// The MPI state of this process.
struct Env {
    /// Held around every MPI call when the library is not fully thread-safe.
    lock: Option<Mutex<()>>,
    /// The universe size attribute, if the launcher set one.
    universe: Option<i32>,
    /// Whether a launcher started this process (read before MPI started: a singleton's
    /// MPI puts launcher-like variables in the environment).
    launched: bool,
}

static ENV: OnceLock<Result<Env, Error>> = OnceLock::new();

/// Serializes MPI calls when the library needs it (below `MPI_THREAD_MULTIPLE`).
fn guard() -> Option<MutexGuard<'static, ()>> {
    match ENV.get() {
        Some(Ok(Env { lock: Some(l), .. })) => Some(l.lock().unwrap_or_else(|e| e.into_inner())),
        _ => None,
    }
}

/// Whether a launcher (`mpirun`, `mpiexec`, `srun --mpi=pmix`, ...) started this process as
/// a rank of an MPI job: read from the environment, before MPI is started.
///
/// ```
/// // A plain `cargo test` is no MPI job, unless run under mpirun.
/// let _ = mp_mpi::launched_by_mpi();
/// ```
pub fn launched_by_mpi() -> bool {
    [
        "OMPI_COMM_WORLD_SIZE",
        "PMIX_RANK",
        "PMI_RANK",
        "PMI_SIZE",
        "MPI_LOCALNRANKS",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some())
}

/// Starts MPI in this process, once; later calls return the first outcome. Without a
/// launcher, this process becomes an MPI job of one (a "singleton") that can spawn ranks.
pub fn init() -> Result<(), Error> {
    ENV.get_or_init(|| {
        let launched = launched_by_mpi();
        let mut provided: c_int = 0;
        let mut already: c_int = 0;
        // SAFETY: plain queries and the documented initialisation call, with valid pointers;
        // argc/argv may be null.
        unsafe {
            check("MPI_Initialized", ffi::MPI_Initialized(&mut already))?;
            if already == 0 {
                check(
                    "MPI_Init_thread",
                    ffi::MPI_Init_thread(
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                        ffi::RSMPI_THREAD_MULTIPLE,
                        &mut provided,
                    ),
                )?;
            } else {
                check("MPI_Query_thread", ffi::MPI_Query_thread(&mut provided))?;
            }
            if provided < ffi::RSMPI_THREAD_SERIALIZED {
                return Err(ours(
                    "MPI_Init_thread",
                    "the MPI library supports no multi-threaded use (MPI_THREAD_SERIALIZED at least is needed)",
                ));
            }
            check(
                "MPI_Comm_set_errhandler",
                ffi::MPI_Comm_set_errhandler(ffi::RSMPI_COMM_WORLD, ffi::RSMPI_ERRORS_RETURN),
            )?;
            check(
                "MPI_Comm_set_errhandler",
                ffi::MPI_Comm_set_errhandler(ffi::RSMPI_COMM_SELF, ffi::RSMPI_ERRORS_RETURN),
            )?;
        }
        // SAFETY: reading an immutable constant the MPI shim exports.
        let multiple = unsafe { ffi::RSMPI_THREAD_MULTIPLE };
        let lock = (provided < multiple).then(|| Mutex::new(()));
        Ok(Env {
            lock,
            universe: universe_attr(),
            launched,
        })
    })
    .as_ref()
    .map(|_| ())
    .map_err(Clone::clone)
}

fn initialized() -> Result<(), Error> {
    match ENV.get() {
        Some(Ok(_)) => Ok(()),
        Some(Err(e)) => Err(e.clone()),
        None => Err(ours("mp-mpi", "MPI is not initialized (call mp_mpi::init)")),
    }
}

fn universe_attr() -> Option<i32> {
    let mut value: *mut c_int = std::ptr::null_mut();
    let mut flag: c_int = 0;
    // SAFETY: MPI_UNIVERSE_SIZE is a predefined attribute of the world; MPI stores a pointer
    // to an int in `value` when `flag` is set.
    unsafe {
        if ffi::MPI_Comm_get_attr(
            ffi::RSMPI_COMM_WORLD,
            ffi::MPI_UNIVERSE_SIZE as c_int,
            (&mut value as *mut *mut c_int).cast(),
            &mut flag,
        ) != 0
            || flag == 0
            || value.is_null()
        {
            return None;
        }
        Some(*value)
    }
}

/// The universe size the launcher announced (`MPI_UNIVERSE_SIZE`): how many processes the
/// job may hold in all, for sizing a spawned pool. `None` before [`init`] or if unknown.
pub fn universe_size() -> Option<i32> {
    match ENV.get() {
        Some(Ok(env)) => env.universe,
        _ => None,
    }
}

/// Whether this process was started by a launcher (`mpirun`, `srun`, ...), as
/// [`launched_by_mpi`] said when MPI was started; `false` for a singleton and before
/// [`init`].
pub fn was_launched() -> bool {
    matches!(ENV.get(), Some(Ok(Env { launched: true, .. })))
}

/// Whether [`init`] succeeded in this process (and [`finalize`] has not run).
pub fn is_initialized() -> bool {
    let mut done: c_int = 0;
    // SAFETY: a query, callable at any time.
    let finalized = unsafe { ffi::MPI_Finalized(&mut done) } == 0 && done != 0;
    matches!(ENV.get(), Some(Ok(_))) && !finalized
}

/// Ends MPI in this process (`MPI_Finalize`); nothing happens if it was not started or is
/// already ended. Every communicator made here must be freed first.
pub fn finalize() {
    if !is_initialized() {
        return;
    }
    let _g = guard();
    // SAFETY: MPI is initialized and not finalized (checked above).
    unsafe {
        ffi::MPI_Finalize();
    }
}

/// Ends every process of the job (`MPI_Abort` on the world) with `code`.
pub fn abort(code: i32) -> ! {
    if is_initialized() {
        // SAFETY: MPI is initialized.
        unsafe {
            ffi::MPI_Abort(ffi::RSMPI_COMM_WORLD, code);
        }
    }
    std::process::exit(code)
}

/// This host's name as MPI reports it (`MPI_Get_processor_name`).
pub fn processor_name() -> Result<String, Error> {
    initialized()?;
    let mut buf = vec![0u8; 256];
    let mut len: c_int = 0;
    // SAFETY: MPI_MAX_PROCESSOR_NAME is 256 in Open MPI and 128 in MPICH.
    check("MPI_Get_processor_name", unsafe {
        ffi::MPI_Get_processor_name(buf.as_mut_ptr().cast(), &mut len)
    })?;
    buf.truncate(len.max(0) as usize);
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// A communicator: the world, or the group on the other side of a spawn.
///
/// For an intercommunicator (a spawned group, the parent), ranks name processes of the
/// *other* group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comm {
    raw: ffi::MPI_Comm,
    inter: bool,
}

// SAFETY: an MPI communicator handle is a plain identifier; MPI allows its use from any
// thread at MPI_THREAD_MULTIPLE, and calls are serialized by `guard` below that level.
unsafe impl Send for Comm {}
// SAFETY: as above.
unsafe impl Sync for Comm {}

/// `MPI_COMM_WORLD`: every rank the launcher started together with this one.
pub fn world() -> Comm {
    Comm {
        // SAFETY: reading a constant of the C library.
        raw: unsafe { ffi::RSMPI_COMM_WORLD },
        inter: false,
    }
}

/// The group that spawned this process (`MPI_Comm_get_parent`), if it was spawned.
pub fn parent() -> Result<Option<Comm>, Error> {
    initialized()?;
    let _g = guard();
    let mut raw = MaybeUninit::<ffi::MPI_Comm>::uninit();
    // SAFETY: a query writing one handle.
    check("MPI_Comm_get_parent", unsafe {
        ffi::MPI_Comm_get_parent(raw.as_mut_ptr())
    })?;
    // SAFETY: written by the successful call.
    let raw = unsafe { raw.assume_init() };
    // SAFETY: reading a constant.
    if raw == unsafe { ffi::RSMPI_COMM_NULL } {
        return Ok(None);
    }
    // SAFETY: a valid communicator.
    unsafe { ffi::MPI_Comm_set_errhandler(raw, ffi::RSMPI_ERRORS_RETURN) };
    Ok(Some(Comm { raw, inter: true }))
}

/// Spawns `n` processes running `exe` with `args` (`MPI_Comm_spawn` from this process
/// alone) and returns the intercommunicator to them: they are ranks `0..n` on its other
/// side. With `oversubscribe`, Open MPI may place more processes on a host than it has
/// slots (the info key `map_by` = `:OVERSUBSCRIBE`), as a singleton on a small machine
/// needs.
pub fn spawn(exe: &Path, args: &[String], n: i32, oversubscribe: bool) -> Result<Comm, Error> {
    initialized()?;
    if n < 1 {
        return Err(ours(
            "MPI_Comm_spawn",
            "at least one process must be spawned",
        ));
    }
    let exe = CString::new(exe.as_os_str().as_encoded_bytes())
        .map_err(|_| ours("MPI_Comm_spawn", "the executable path has a NUL byte"))?;
    let args: Vec<CString> = args
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| ours("MPI_Comm_spawn", "an argument has a NUL byte"))?;
    let mut argv: Vec<*mut std::ffi::c_char> = args
        .iter()
        .map(|a| a.as_ptr().cast_mut())
        .chain(std::iter::once(std::ptr::null_mut()))
        .collect();
    let _g = guard();
    // SAFETY: `info` is created, used, and freed here; every pointer passed lives across
    // the calls (exe, argv and its strings, the error code array of `n` ints).
    unsafe {
        let mut info = ffi::RSMPI_INFO_NULL;
        if oversubscribe {
            check("MPI_Info_create", ffi::MPI_Info_create(&mut info))?;
            let key = CString::new("map_by").expect("no NUL");
            let value = CString::new(":OVERSUBSCRIBE").expect("no NUL");
            ffi::MPI_Info_set(info, key.as_ptr(), value.as_ptr());
        }
        let mut raw = ffi::RSMPI_COMM_NULL;
        let mut codes = vec![0 as c_int; n as usize];
        let rc = ffi::MPI_Comm_spawn(
            exe.as_ptr(),
            argv.as_mut_ptr(),
            n,
            info,
            0,
            ffi::RSMPI_COMM_SELF,
            &mut raw,
            codes.as_mut_ptr(),
        );
        if oversubscribe {
            ffi::MPI_Info_free(&mut info);
        }
        check("MPI_Comm_spawn", rc)?;
        if let Some(code) = codes.iter().find(|c| **c != 0) {
            if raw != ffi::RSMPI_COMM_NULL {
                ffi::MPI_Comm_free(&mut raw);
            }
            return check("MPI_Comm_spawn (a process)", *code).map(|()| unreachable!());
        }
        ffi::MPI_Comm_set_errhandler(raw, ffi::RSMPI_ERRORS_RETURN);
        Ok(Comm { raw, inter: true })
    }
}

/// A send in progress ([`Comm::isend`]): owns its buffer until MPI is done with it.
#[derive(Debug)]
pub struct Sending {
    request: ffi::MPI_Request,
    buf: Vec<u8>,
}

// SAFETY: a request handle is a plain identifier (see `Comm`); the buffer is owned.
unsafe impl Send for Sending {}

impl Sending {
    /// Whether the send has completed (`MPI_Test`); an error if it failed.
    pub fn test(&mut self) -> Result<bool, Error> {
        let _g = guard();
        let mut flag: c_int = 0;
        // SAFETY: the request is live until it completes; MPI_Test sets it to null then, and
        // testing a null request reports completion again.
        check("MPI_Test", unsafe {
            ffi::MPI_Test(&mut self.request, &mut flag, ffi::RSMPI_STATUS_IGNORE)
        })?;
        Ok(flag != 0)
    }
}

impl Drop for Sending {
    fn drop(&mut self) {
        if matches!(self.test(), Ok(true)) {
            return;
        }
        // Still in flight (its receiver is gone or slow): let MPI finish it in the
        // background, and leave the buffer to it for ever (a bounded leak beats a
        // use-after-free or a hang).
        let _g = guard();
        // SAFETY: freeing an active send request is allowed; the buffer is leaked, so it
        // outlives the request.
        unsafe { ffi::MPI_Request_free(&mut self.request) };
        std::mem::forget(std::mem::take(&mut self.buf));
    }
}

fn count(call: &'static str, len: usize) -> Result<c_int, Error> {
    c_int::try_from(len).map_err(|_| {
        ours(
            call,
            format!("a message of {len} bytes is over MPI's limit of 2 GiB per message"),
        )
    })
}

impl Comm {
    /// This process's rank in the communicator (its local group, for an intercommunicator).
    pub fn rank(&self) -> i32 {
        let _g = guard();
        let mut r: c_int = -1;
        // SAFETY: a query on a valid communicator.
        unsafe { ffi::MPI_Comm_rank(self.raw, &mut r) };
        r
    }

    /// How many processes can be addressed: the communicator's size, or for an
    /// intercommunicator the size of the other group.
    pub fn size(&self) -> i32 {
        let _g = guard();
        let mut n: c_int = 0;
        // SAFETY: queries on a valid communicator.
        unsafe {
            if self.inter {
                ffi::MPI_Comm_remote_size(self.raw, &mut n);
            } else {
                ffi::MPI_Comm_size(self.raw, &mut n);
            }
        }
        n
    }

    /// Sends `bytes` to `rank` with `tag` (`MPI_Send`): returns once the buffer may be
    /// reused, which for a large message may mean once the receiver has started receiving.
    pub fn send(&self, rank: i32, tag: i32, bytes: &[u8]) -> Result<(), Error> {
        let n = count("MPI_Send", bytes.len())?;
        let _g = guard();
        // SAFETY: `bytes` is valid for `n` bytes for the duration of the call.
        check("MPI_Send", unsafe {
            ffi::MPI_Send(
                bytes.as_ptr().cast(),
                n,
                ffi::RSMPI_UINT8_T,
                rank,
                tag,
                self.raw,
            )
        })
    }

    /// Starts sending `bytes` to `rank` with `tag` (`MPI_Isend`) and returns at once.
    pub fn isend(&self, rank: i32, tag: i32, bytes: Vec<u8>) -> Result<Sending, Error> {
        let n = count("MPI_Isend", bytes.len())?;
        let _g = guard();
        let mut request = MaybeUninit::<ffi::MPI_Request>::uninit();
        // SAFETY: the buffer moves into the returned `Sending`, which keeps it alive until
        // the request completes (or leaks it); a Vec's heap buffer does not move with it.
        check("MPI_Isend", unsafe {
            ffi::MPI_Isend(
                bytes.as_ptr().cast(),
                n,
                ffi::RSMPI_UINT8_T,
                rank,
                tag,
                self.raw,
                request.as_mut_ptr(),
            )
        })?;
        Ok(Sending {
            // SAFETY: written by the successful call.
            request: unsafe { request.assume_init() },
            buf: bytes,
        })
    }

    /// Receives the next message from `rank` with `tag`, if one has arrived
    /// (`MPI_Improbe` + `MPI_Mrecv`); never waits for one.
    pub fn try_recv(&self, rank: i32, tag: i32) -> Result<Option<Vec<u8>>, Error> {
        let _g = guard();
        let mut flag: c_int = 0;
        let mut message = MaybeUninit::<ffi::MPI_Message>::uninit();
        let mut status = MaybeUninit::<ffi::MPI_Status>::uninit();
        // SAFETY: out-pointers to locals; a matched message is received below exactly once.
        unsafe {
            check(
                "MPI_Improbe",
                ffi::MPI_Improbe(
                    rank,
                    tag,
                    self.raw,
                    &mut flag,
                    message.as_mut_ptr(),
                    status.as_mut_ptr(),
                ),
            )?;
            if flag == 0 {
                return Ok(None);
            }
            let mut message = message.assume_init();
            let mut status = status.assume_init();
            let mut len: c_int = 0;
            check(
                "MPI_Get_count",
                ffi::MPI_Get_count(&status, ffi::RSMPI_UINT8_T, &mut len),
            )?;
            let len = usize::try_from(len)
                .map_err(|_| ours("MPI_Get_count", "a message of unknown length"))?;
            let mut buf = Vec::<u8>::with_capacity(len);
            check(
                "MPI_Mrecv",
                ffi::MPI_Mrecv(
                    buf.as_mut_ptr().cast(),
                    len as c_int,
                    ffi::RSMPI_UINT8_T,
                    &mut message,
                    &mut status,
                ),
            )?;
            // MPI wrote exactly `len` bytes (the matched message's size).
            buf.set_len(len);
            Ok(Some(buf))
        }
    }

    /// The rank of a process that has a message with `tag` waiting (`MPI_Iprobe` from any
    /// source), if any; the message stays where it is.
    pub fn probe_any(&self, tag: i32) -> Result<Option<i32>, Error> {
        let _g = guard();
        let mut flag: c_int = 0;
        let mut status = MaybeUninit::<ffi::MPI_Status>::uninit();
        // SAFETY: out-pointers to locals.
        unsafe {
            check(
                "MPI_Iprobe",
                ffi::MPI_Iprobe(
                    ffi::RSMPI_ANY_SOURCE,
                    tag,
                    self.raw,
                    &mut flag,
                    status.as_mut_ptr(),
                ),
            )?;
            if flag == 0 {
                return Ok(None);
            }
            Ok(Some(status.assume_init().MPI_SOURCE))
        }
    }

    /// Frees the communicator (`MPI_Comm_free`): local, it never waits for the other side.
    /// The world cannot be freed (nothing happens).
    pub fn free(self) {
        if self == world() {
            return;
        }
        let _g = guard();
        let mut raw = self.raw;
        // SAFETY: a communicator made by this crate, freed once (the caller gives it up).
        unsafe { ffi::MPI_Comm_free(&mut raw) };
    }

    /// Disconnects from the other side (`MPI_Comm_disconnect`): waits until every pending
    /// message is delivered and the other side disconnects too. Only for a peer known to be
    /// alive and disconnecting; [`free`](Self::free) otherwise.
    pub fn disconnect(self) -> Result<(), Error> {
        if self == world() {
            return Ok(());
        }
        let _g = guard();
        let mut raw = self.raw;
        // SAFETY: a communicator made by this crate, given up by the caller.
        check("MPI_Comm_disconnect", unsafe {
            ffi::MPI_Comm_disconnect(&mut raw)
        })
    }
}
