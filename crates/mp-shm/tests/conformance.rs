//! The backend contract's conformance kit on the shared-memory ring transport.

mp_ipc_conformance::transport_suite!(mp_shm::Shm);
