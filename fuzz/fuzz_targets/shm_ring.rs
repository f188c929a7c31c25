//! The shm ring's reader fed a segment the peer damaged: `mp_shm::fuzzing::shm_ring` sets up
//! a heap segment from the input (a few valid frames, then bytes written anywhere over the
//! headers and data; see its doc for the layout), receives with short deadlines, and may
//! send from another thread meanwhile. Every frame received must respect the reader's
//! limit; everything else must be a typed error (never an I/O error: nothing here makes a
//! system call), never a panic, an out-of-bounds access or a hang.
//!
//! The seeds in `fuzz/seeds/shm_ring` (reader on side 1, so ring 0 is read: its header at
//! 64, write position 64, read position 128, read lock 136, its thread 144, broken flag 200;
//! data from 4096):
//! - `two_frames`: frames of 48 and 160 bytes, two receives;
//! - `streamed_while_sending`: a 12800-byte frame streamed from a thread into a 4 KiB ring;
//! - `fast_path_writer_dead`: two frames read by `recv_frame_into`'s path, writer gone;
//! - `write_pos_far_ahead`, `length_beyond_stored`, `lock_word_no_pid`, `broken_flag`,
//!   `streamed_header_writer_dead`: one kind of damage each, over valid frames.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let out = mp_shm::fuzzing::shm_ring(data);
    if let Some(problem) = out.problem() {
        panic!("{problem}: {out:?}");
    }
});
