//! The backend contract's conformance kit on the Unix socket transport.
#![cfg(unix)]

mp_ipc_conformance::transport_suite!(mp_unix::UnixSocket);
