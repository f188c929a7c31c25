//! The kit on its own in-memory transport: the suite knows nothing of any backend.

mp_ipc_conformance::transport_suite!(mp_ipc_conformance::in_memory::InMemory, in_process);
