//! The handle prefix parser (`mp_ipc::handle_prefix`), the bytes a Windows receiver reads
//! from its peer before it takes any handle: the input is a whole frame body. A parse may
//! succeed only with at most `MAX_HANDLES` values that fit the body, the payload being the
//! rest; re-encoding what it read gives back the prefix's bytes; a refusal is the typed
//! error the bytes deserve and leaves the body alone. Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mp_ipc::handle_prefix::{encode, parse, take, PrefixError, FIXED_LEN, MAX_HANDLES};

fuzz_target!(|data: &[u8]| {
    let mut body = data.to_vec();
    match parse(data) {
        Ok((p, len)) => {
            assert!(p.values.len() <= MAX_HANDLES, "more handles than allowed");
            assert_eq!(len, FIXED_LEN + 8 * p.values.len(), "length inconsistent");
            assert!(len <= data.len(), "prefix longer than the body");
            let count = u32::from_le_bytes(data[..4].try_into().unwrap()) as usize;
            assert_eq!(count, p.values.len(), "count not the one sent");
            assert_eq!(
                encode(p.pid, &p.values).unwrap(),
                &data[..len],
                "no round trip"
            );
            assert_eq!(take(&mut body).unwrap(), p);
            assert_eq!(body, &data[len..], "the payload is not the rest");
        }
        Err(e) => {
            match e {
                PrefixError::Short { len } => {
                    assert_eq!(len, data.len());
                    assert!(len < FIXED_LEN);
                }
                PrefixError::TooMany { count } => {
                    assert!(count > MAX_HANDLES as u64);
                    assert_eq!(
                        count,
                        u64::from(u32::from_le_bytes(data[..4].try_into().unwrap()))
                    );
                }
                PrefixError::Truncated { count, room } => {
                    assert!(count <= MAX_HANDLES && count > room);
                    assert_eq!(room, (data.len() - FIXED_LEN) / 8);
                }
            }
            assert!(take(&mut body).is_err());
            assert_eq!(body, data, "a refused prefix changed the body");
        }
    }
});
