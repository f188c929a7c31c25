//! The client's side of the authentication handshake against a listener that sends
//! arbitrary bytes: it must not accept a listener that cannot prove the key (its answer
//! would have to cover the client's fresh nonce), must end with an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let h = mp_core::fuzzing::handshake_client(data, b"fuzzing key");
    assert!(!h.accepted, "a listener without the key was accepted");
    assert!(h.written <= 4 * 256, "wrote {} bytes", h.written);
});
