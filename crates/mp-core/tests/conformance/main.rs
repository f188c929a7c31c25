//! The conformance kit (crate `mp-ipc-conformance`) on mp-core: the behaviour suite of the
//! two flavors (processes always, threads with the `threads` feature), and the connection
//! suite on every transport this build has (socket always, shm with the feature) plus one
//! it does not know (the kit's in-memory transport, in-process tests only).

mp_ipc_conformance::processes_suite!(processes, mp_core::api::Processes);
#[cfg(feature = "threads")]
mp_ipc_conformance::processes_suite!(threads, mp_core::api::Threads);

mp_ipc_conformance::connection_suite!(socket, mp_core::connection::Socket);
#[cfg(feature = "shm")]
mp_ipc_conformance::connection_suite!(shm, mp_core::connection::Shm);
mp_ipc_conformance::connection_suite!(
    in_memory,
    mp_ipc_conformance::in_memory::InMemory,
    in_process
);
