//! Shared state between processes: shared-memory segments and the values that live in them.

pub(crate) mod segment;

pub(crate) use segment::Segment;
