//! Transports, chosen per object by type: the ones this build has, which one is the
//! default, and the table that recognises an end arriving from another process.
//!
//! This is the one place that names backend crates, each on one line behind its cargo
//! feature: everything else reaches a transport through `mp_ipc`'s traits
//! ([`Transport`](mp_ipc::Transport), [`Endpoint`](mp_ipc::Endpoint)) and its type-erased
//! dispatch ([`mp_ipc::dispatch`]).

use std::time::Duration;

use mp_ipc::dispatch::TransportEntry;

/// A transport, as a type: [`Socket`], [`Shm`] with the `shm` feature, or any type
/// implementing [`mp_ipc::Transport`]. [`DefaultTransport`] is what [`pipe`](crate::pipe) and
/// the queues use.
pub use mp_ipc::Transport;

/// The socket backend: Unix domain socket pairs on Unix (`mp_unix::UnixSocket`), named
/// pipes on Windows (`mp_windows::NamedPipe`).
pub type Socket = crate::sys::SocketTransport;

/// The shared-memory backend (crate `mp-shm`): pipes are two single-producer
/// single-consumer byte rings plus a companion socket for liveness and sleeping; queues are
/// a multi-producer multi-consumer frame ring that overflows into the spool file. On
/// Windows the companion is a named pipe and the doorbells are event objects (see
/// `mp-shm`).
#[cfg(feature = "shm")]
#[cfg_attr(docsrs, doc(cfg(feature = "shm")))]
pub use mp_shm::Shm;

/// The backend of [`pipe`](crate::pipe), [`Queue::new`](crate::Queue::new) and friends:
/// [`Shm`] when the `shm` feature is on, else [`Socket`].
#[cfg(feature = "shm")]
pub type DefaultTransport = Shm;
/// The backend of [`pipe`](crate::pipe), [`Queue::new`](crate::Queue::new) and friends:
/// [`Shm`] when the `shm` feature is on, else [`Socket`].
#[cfg(not(feature = "shm"))]
pub type DefaultTransport = Socket;

/// Every transport whose ends this build can adopt from another process, by name. An end of
/// a transport missing here can still be used within its process (`pipe_with`), but not
/// sent to another one.
pub(crate) const TRANSPORTS: &[TransportEntry] = &[
    TransportEntry::of::<Socket>(),
    #[cfg(feature = "shm")]
    TransportEntry::of::<Shm>(),
];

/// The longest a socket-backend receive or [`wait`](crate::wait) keeps asking without
/// blocking before it sleeps (process-wide; 20 µs unless `MP_SPIN_US` says otherwise).
/// Windows channels do not spin: zero there.
///
/// ```
/// use std::time::Duration;
/// mp_core::connection::set_socket_spin_limit(Duration::ZERO); // sleep at once
/// assert_eq!(mp_core::connection::socket_spin_limit(), Duration::ZERO);
/// ```
pub fn socket_spin_limit() -> Duration {
    crate::sys::socket_spin_limit()
}

/// Sets [`socket_spin_limit`] for this process (zero: sleep at once; no effect on
/// Windows). Children read `MP_SPIN_US` from their environment instead.
pub fn set_socket_spin_limit(limit: Duration) {
    crate::sys::set_socket_spin_limit(limit)
}

/// The longest an shm waiter spins before it sleeps (process-wide; see `mp_shm`).
#[cfg(feature = "shm")]
pub fn shm_spin_limit() -> Duration {
    mp_shm::spin_limit()
}

/// Sets [`shm_spin_limit`] for this process (zero: sleep at once). Children read
/// `MP_SHM_SPIN_US` from their environment instead.
#[cfg(feature = "shm")]
pub fn set_shm_spin_limit(limit: Duration) {
    mp_shm::set_spin_limit(limit)
}
