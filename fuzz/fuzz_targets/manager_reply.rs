//! A manager client's reply decoder on arbitrary frames: an error or a reply, never a
//! panic, an abort or a huge allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mp_core::fuzzing::manager_reply(data);
});
