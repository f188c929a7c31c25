//! The listener's side of the authentication handshake against a client that sends
//! arbitrary bytes: it must refuse (the client cannot know the nonce, so cannot answer it
//! without the key), with an error, never a panic; and it writes a bounded amount.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let h = mp_core::fuzzing::handshake_listener(data, b"fuzzing key");
    assert!(!h.accepted, "a client without the key was accepted");
    assert!(h.written <= 4 * 256, "wrote {} bytes", h.written);
});
