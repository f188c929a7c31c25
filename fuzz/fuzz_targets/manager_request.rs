//! A manager server's request decoder (and the built-in types' operation decoders) on
//! arbitrary frames: an error or a request, never a panic, an abort or a huge allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mp_core::fuzzing::manager_request(data);
});
