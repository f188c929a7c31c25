//! The shared-memory ring-buffer backend of `mp` (planned; see the project's issue list).
//!
//! It will move frames through ring buffers in a named shared-memory segment, blocking with a
//! short adaptive spin followed by a process-shared futex (Linux) or named event (Windows),
//! and implement [`mp_ipc::Channel`] so that `mp-core`'s pipes and queues can use it. Nothing
//! is implemented yet: the crate exists so the workspace shows where the backend goes.

/// The name under which this backend reports itself.
///
/// ```
/// assert_eq!(mp_shm::BACKEND_NAME, "shm");
/// ```
pub const BACKEND_NAME: &str = "shm";
