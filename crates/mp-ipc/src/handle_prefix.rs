//! The handle prefix: how OS handles travel *inside* a frame's body, on a platform that has
//! no out-of-band channel for them (Windows, where a handle reaches another process as a
//! handle *value* valid in one process's handle table).
//!
//! ```text
//! count: u32 LE | pid: u32 LE | count x value: u64 LE | payload
//! ```
//!
//! `pid` is the process whose handle table the values belong to: the sender's, when the
//! receiver takes the values out of it (a connection), or the receiver's own, when the
//! sender duplicated them into it beforehand (a child's boot channel). Which of the two a
//! frame means is the channel's convention, never the peer's say.
//!
//! This module writes and reads the bytes only; taking the handles is the platform crate's.
//! The prefix comes from the peer and is checked, never trusted: [`parse`] refuses a count
//! beyond [`MAX_HANDLES`] or beyond the body with a typed [`PrefixError`], and never panics.
//!
//! ```
//! use mp_ipc::handle_prefix::{encode, take};
//! let mut body = encode(7, &[0x10, 0x24]).unwrap();
//! body.extend_from_slice(b"payload");
//! let prefix = take(&mut body).unwrap();
//! assert_eq!((prefix.pid, &prefix.values[..]), (7, &[0x10, 0x24][..]));
//! assert_eq!(body, b"payload");
//! ```

use crate::IpcError;

/// Most handles one frame may carry.
pub const MAX_HANDLES: usize = 4096;

/// Bytes of the fixed part of a prefix (count and pid).
pub const FIXED_LEN: usize = 8;

/// The longest prefix there is: the room a frame body may take beyond its payload.
pub const PREFIX_MAX: u64 = FIXED_LEN as u64 + 8 * MAX_HANDLES as u64;

/// A decoded handle prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlePrefix {
    /// The process whose handle table the values belong to.
    pub pid: u32,
    /// The handle values, in the order they were sent.
    pub values: Vec<u64>,
}

/// Why bytes are not a handle prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// Fewer than [`FIXED_LEN`] bytes: no room for the count and the pid.
    #[error("a message with handles is too short for their count ({len} bytes)")]
    Short {
        /// Bytes there were.
        len: usize,
    },
    /// More handles than [`MAX_HANDLES`] announced (or asked to be encoded).
    #[error("a message announces {count} handles, more than the {MAX_HANDLES} allowed")]
    TooMany {
        /// The count announced.
        count: u64,
    },
    /// The count announces more values than the body holds.
    #[error("a message announces {count} handles but has room for {room}")]
    Truncated {
        /// The count announced.
        count: usize,
        /// Whole values the body holds after the fixed part.
        room: usize,
    },
}

impl From<PrefixError> for IpcError {
    /// A malformed prefix means the peer broke the protocol.
    fn from(e: PrefixError) -> Self {
        IpcError::Corrupt(e.to_string())
    }
}

/// The bytes of a prefix carrying `values` of process `pid`. More than [`MAX_HANDLES`]
/// values is [`PrefixError::TooMany`].
pub fn encode(pid: u32, values: &[u64]) -> Result<Vec<u8>, PrefixError> {
    if values.len() > MAX_HANDLES {
        return Err(PrefixError::TooMany {
            count: values.len() as u64,
        });
    }
    let mut out = Vec::with_capacity(FIXED_LEN + 8 * values.len());
    // At most MAX_HANDLES: fits a u32.
    out.extend_from_slice(&(values.len() as u32).to_le_bytes());
    out.extend_from_slice(&pid.to_le_bytes());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    Ok(out)
}

/// Reads the prefix at the start of `body`: the prefix and its length in bytes (the
/// payload is `body[len..]`).
pub fn parse(body: &[u8]) -> Result<(HandlePrefix, usize), PrefixError> {
    let (Some(count), Some(pid)) = (read_u32(body, 0), read_u32(body, 4)) else {
        return Err(PrefixError::Short { len: body.len() });
    };
    let count = count as usize;
    if count > MAX_HANDLES {
        return Err(PrefixError::TooMany {
            count: count as u64,
        });
    }
    let rest = &body[FIXED_LEN..];
    let room = rest.len() / 8;
    if count > room {
        return Err(PrefixError::Truncated { count, room });
    }
    let values = rest[..8 * count]
        .chunks_exact(8)
        .map(|c| {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            u64::from_le_bytes(b)
        })
        .collect();
    Ok((HandlePrefix { pid, values }, FIXED_LEN + 8 * count))
}

/// Strips the prefix off the front of `body`, leaving the payload. On error `body` is left
/// as it was.
pub fn take(body: &mut Vec<u8>) -> Result<HandlePrefix, PrefixError> {
    let (prefix, len) = parse(body)?;
    body.drain(..len);
    Ok(prefix)
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    let mut w = [0u8; 4];
    w.copy_from_slice(s);
    Some(u32::from_le_bytes(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for n in [0usize, 1, 3, MAX_HANDLES] {
            let values: Vec<u64> = (0..n as u64).map(|i| i * 4 + u64::MAX / 3).collect();
            let mut body = encode(0xdead_beef, &values).unwrap();
            assert_eq!(body.len(), FIXED_LEN + 8 * n);
            body.extend_from_slice(b"tail");
            let (p, len) = parse(&body).unwrap();
            assert_eq!(len, FIXED_LEN + 8 * n);
            assert_eq!(p.pid, 0xdead_beef);
            assert_eq!(p.values, values);
            assert_eq!(take(&mut body).unwrap(), p);
            assert_eq!(body, b"tail");
        }
    }

    #[test]
    fn the_longest_prefix_is_prefix_max() {
        let values = vec![1u64; MAX_HANDLES];
        assert_eq!(encode(1, &values).unwrap().len() as u64, PREFIX_MAX);
        let values = vec![1u64; MAX_HANDLES + 1];
        assert_eq!(
            encode(1, &values),
            Err(PrefixError::TooMany {
                count: MAX_HANDLES as u64 + 1
            })
        );
    }

    #[test]
    fn malformed_prefixes_are_typed_errors() {
        for len in 0..FIXED_LEN {
            assert_eq!(parse(&[0u8; 8][..len]), Err(PrefixError::Short { len }));
        }
        let mut b = Vec::new();
        b.extend_from_slice(&u32::MAX.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        assert_eq!(
            parse(&b),
            Err(PrefixError::TooMany {
                count: u32::MAX as u64
            })
        );
        let mut b = Vec::new();
        b.extend_from_slice(&2u32.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&[0u8; 15]);
        assert_eq!(parse(&b), Err(PrefixError::Truncated { count: 2, room: 1 }));
        let before = b.clone();
        assert!(take(&mut b).is_err());
        assert_eq!(b, before, "a refused prefix leaves the body alone");
        let e: IpcError = PrefixError::Short { len: 3 }.into();
        assert!(matches!(e, IpcError::Corrupt(_)));
    }

    #[test]
    fn an_empty_prefix_is_just_the_fixed_part() {
        let (p, len) = parse(&[0, 0, 0, 0, 9, 0, 0, 0, 1, 2]).unwrap();
        assert_eq!((p.pid, p.values.len(), len), (9, 0, FIXED_LEN));
    }
}
