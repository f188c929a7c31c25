//! The backend contract's conformance kit on the named-pipe transport.
#![cfg(windows)]

mp_ipc_conformance::transport_suite!(mp_windows::NamedPipe);
