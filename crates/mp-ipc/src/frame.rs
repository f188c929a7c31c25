//! The frame header: an 8-byte little-endian body length written before every payload on a
//! stream transport. Its top bit says that OS handles travel with the frame; a 4-byte
//! handle count then follows the header.
//!
//! The receiver checks the announced length against its limit before reading the body, and
//! grows its buffer only as bytes actually arrive, so a corrupt header can never make it
//! allocate memory the peer did not send.

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 8;

/// The default limit on one incoming frame: 4 GiB. Configurable per connection.
pub const DEFAULT_MAX_FRAME: u64 = 4 << 30;

/// Largest single step by which a receive buffer grows while a body streams in.
pub const GROW_STEP: usize = 1 << 20;

/// The bit of the wire header that marks a frame carrying handles.
const HANDLES_FLAG: u64 = 1 << 63;

/// The length prefix of one frame.
///
/// ```
/// use mp_ipc::FrameHeader;
/// let h = FrameHeader::new(1234).with_handles();
/// let back = FrameHeader::decode(h.encode());
/// assert_eq!((back.len, back.has_handles), (1234, true));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Length of the body that follows, in bytes.
    pub len: u64,
    /// Whether OS handles travel with the frame (a 4-byte count follows the header).
    pub has_handles: bool,
}

impl FrameHeader {
    /// A header announcing `len` body bytes.
    pub fn new(len: usize) -> Self {
        Self {
            len: len as u64,
            has_handles: false,
        }
    }

    /// The same header, marked as carrying handles.
    pub fn with_handles(self) -> Self {
        Self {
            has_handles: true,
            ..self
        }
    }

    /// The header's wire form.
    pub fn encode(self) -> [u8; HEADER_LEN] {
        let flag = if self.has_handles { HANDLES_FLAG } else { 0 };
        (self.len | flag).to_le_bytes()
    }

    /// Reads a header from its wire form.
    pub fn decode(bytes: [u8; HEADER_LEN]) -> Self {
        let raw = u64::from_le_bytes(bytes);
        Self {
            len: raw & !HANDLES_FLAG,
            has_handles: raw & HANDLES_FLAG != 0,
        }
    }

    /// Checks the announced length against `max`.
    pub fn check(self, max: u64) -> Result<usize, crate::IpcError> {
        if self.len > max || usize::try_from(self.len).is_err() {
            return Err(crate::IpcError::FrameTooLarge { len: self.len, max });
        }
        Ok(self.len as usize)
    }
}

/// A whole frame for a caller's buffer (`Channel::recv_frame_into`): copied into `out` if it
/// fits, its length returned; otherwise handed back whole, so nothing is lost.
///
/// ```
/// let mut out = [0u8; 4];
/// assert_eq!(mp_ipc::frame::into_slice(b"abc".to_vec(), &mut out), Ok(3));
/// assert_eq!(mp_ipc::frame::into_slice(b"abcde".to_vec(), &mut out), Err(b"abcde".to_vec()));
/// ```
pub fn into_slice(frame: Vec<u8>, out: &mut [u8]) -> Result<usize, Vec<u8>> {
    let Some(dst) = out.get_mut(..frame.len()) else {
        return Err(frame);
    };
    dst.copy_from_slice(&frame);
    Ok(frame.len())
}

/// The most bytes [`Channel::recv_frame_split_until`](crate::Channel::recv_frame_split_until)
/// puts in front of the body.
pub const PREFIX_MAX: usize = 16;

/// Where a split receive puts the first bytes of a frame.
pub type Prefix = [u8; PREFIX_MAX];

/// How many of a frame's `len` bytes a split receive puts into the prefix: what
/// `prefix_len` asks for, within [`PREFIX_MAX`] and the frame.
pub fn prefix_bytes(len: u64, prefix_len: fn(u64) -> usize) -> usize {
    prefix_len(len)
        .min(PREFIX_MAX)
        .min(usize::try_from(len).unwrap_or(usize::MAX))
}

/// Splits a whole frame held in `frame` the way a split receive does: its first bytes go
/// into `prefix`, the rest moves down to the start of `frame`. Returns the prefix length.
///
/// ```
/// use mp_ipc::frame::{split_off_prefix, Prefix, PREFIX_MAX};
/// let mut frame = vec![3, b'a', b'b', b'c'];
/// let mut prefix: Prefix = [0; PREFIX_MAX];
/// let n = split_off_prefix(&mut frame, &mut prefix, |_| 1);
/// assert_eq!((&prefix[..n], &frame[..]), (&[3u8][..], &b"abc"[..]));
/// ```
pub fn split_off_prefix(
    frame: &mut Vec<u8>,
    prefix: &mut Prefix,
    prefix_len: fn(u64) -> usize,
) -> usize {
    let n = prefix_bytes(frame.len() as u64, prefix_len);
    prefix[..n].copy_from_slice(&frame[..n]);
    frame.drain(..n);
    n
}

/// How far to grow a buffer holding `have` of `want` bytes: to twice what has arrived, or
/// [`GROW_STEP`] beyond it while that is more, never past `want`; so allocation follows the
/// data actually received (at most about twice it), with few copies for a large body.
pub fn next_capacity(have: usize, want: usize) -> usize {
    want.min(have.saturating_add(GROW_STEP).max(have.saturating_mul(2)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_header_is_refused() {
        let h = FrameHeader::decode([0xff; HEADER_LEN]);
        assert!(matches!(
            h.check(DEFAULT_MAX_FRAME),
            Err(crate::IpcError::FrameTooLarge { .. })
        ));
        assert_eq!(FrameHeader::new(5).check(5).unwrap(), 5);
    }

    #[test]
    fn growth_is_bounded_by_what_arrived() {
        assert_eq!(next_capacity(0, 1 << 40), GROW_STEP);
        assert_eq!(next_capacity(10, 20), 20);
        assert_eq!(next_capacity(4 << 20, 1 << 40), 8 << 20);
    }
}
