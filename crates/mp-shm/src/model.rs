//! What the ring protocol shares between its two ends: the atomics of the segment's headers
//! and, in the heap ring of one process (`heap.rs`), the doorbells and liveness flags.
//! Normally these are the real ones; built with `--cfg loom` (by `cargo xtask loom`) they
//! are loom's model of them, so the ring code of `ring.rs` runs unchanged under the model
//! checker (`heap.rs`, `loom_models`). State private to one end (its spin budget, a frame
//! kept in part) stays on the real types either way: only one thread touches it.
//!
//! Under loom the data area's bytes are plain memory, which loom does not see; the heap
//! ring pairs each byte with a loom cell that every copy in or out touches
//! ([`RingEnd::touch`](crate::ring::RingEnd::touch)), so a read of bytes not yet published
//! (a missing release, a wrong position) is reported as a data race.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU32, AtomicU64};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64};

#[cfg(all(any(test, feature = "fuzzing"), not(loom)))]
pub(crate) use std::sync::{atomic::AtomicBool, Condvar, Mutex};

#[cfg(all(any(test, feature = "fuzzing"), loom))]
pub(crate) use loom::sync::{atomic::AtomicBool, Condvar, Mutex};
