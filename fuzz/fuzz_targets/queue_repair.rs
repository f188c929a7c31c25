//! The queue engine over damage (`mp_core::fuzzing::queue_repair`): a real queue runs the
//! puts, gets, `qsize`, `task_done` and dead-holder repairs the input picks, between writes
//! of chosen values over its shared header, ring, staging area and spool. Undamaged, every
//! get must return the oldest item intact; damaged, anything but a panic, a hang or a bad
//! memory access is acceptable.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = mp_core::fuzzing::queue_repair(data);
});
