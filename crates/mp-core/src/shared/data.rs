//! What may live in shared memory: the [`SharedData`] marker trait.

/// Plain data that may be placed in shared memory and read back in another process.
///
/// # Safety
///
/// Implement it only for types that are
/// - valid for **every** bit pattern, the all-zero one included (memory starts zeroed, and
///   another process may write any bytes, even a torn half-update if it died mid-write);
/// - free of pointers, references and handles (they mean nothing in another process), and of
///   `Drop` (`Copy` already guarantees that);
/// - laid out the same way in every process, which holds for one binary and `#[repr(C)]`
///   (or primitive) types.
///
/// Provided for the integer and floating-point types, [`ShortStr`], `()` and arrays of
/// `SharedData`. Not for `bool` or `char`: not every bit pattern is one (use `u8` and `u32`,
/// or [`ShortStr`] for text). A `#[repr(C)]` struct whose fields are all `SharedData` may
/// implement it:
///
/// ```
/// #[derive(Clone, Copy, Debug, PartialEq)]
/// #[repr(C)]
/// struct Point { x: i32, y: f64 }
/// // SAFETY: repr(C), every field is SharedData, so every bit pattern is a Point.
/// unsafe impl mp_core::SharedData for Point {}
///
/// let p = mp_core::Value::new(Point { x: 3, y: 2.0 }).unwrap();
/// p.lock().unwrap().x *= 2;
/// assert_eq!(p.get(), Point { x: 6, y: 2.0 });
/// ```
pub unsafe trait SharedData: Copy + Send + Sync + 'static {}

macro_rules! plain {
    ($($t:ty),*) => { $(
        // SAFETY: a primitive number: every bit pattern is a value.
        unsafe impl SharedData for $t {}
    )* };
}
plain!(
    u8,
    u16,
    u32,
    u64,
    u128,
    usize,
    i8,
    i16,
    i32,
    i64,
    i128,
    isize,
    f32,
    f64,
    ()
);

// SAFETY: an array of SharedData is SharedData (no padding between elements).
unsafe impl<T: SharedData, const N: usize> SharedData for [T; N] {}

/// Text of at most `N` bytes (`N` ≤ 255) stored inline: a length byte and `N` bytes, no
/// padding. Python's `ShareableList` keeps `str` and `bytes` items the same way, in a
/// fixed-size slot.
///
/// ```
/// use mp_core::ShortStr;
/// let s = ShortStr::<8>::new("howdy").unwrap();
/// assert_eq!(s.as_str(), Some("howdy"));
/// assert!(ShortStr::<8>::new("far too many").is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct ShortStr<const N: usize> {
    len: u8,
    bytes: [u8; N],
}

// SAFETY: repr(C) of u8 and [u8; N]: align 1, no padding, every bit pattern valid (a length
// beyond N or bytes that are not UTF-8 are detected when read).
unsafe impl<const N: usize> SharedData for ShortStr<N> {}

impl<const N: usize> ShortStr<N> {
    const FITS: () = assert!(N <= 255, "ShortStr holds at most 255 bytes");

    /// `s`, if it has at most `N` bytes of UTF-8.
    pub fn new(s: &str) -> Result<Self, super::SharedError> {
        Self::from_bytes(s.as_bytes())
    }

    /// Raw bytes (Python's `bytes` items), if at most `N`.
    pub fn from_bytes(b: &[u8]) -> Result<Self, super::SharedError> {
        #[allow(clippy::let_unit_value)]
        let () = Self::FITS;
        if b.len() > N {
            return Err(super::SharedError::TooLong {
                len: b.len(),
                max: N,
            });
        }
        let mut bytes = [0u8; N];
        bytes[..b.len()].copy_from_slice(b);
        Ok(Self {
            len: b.len() as u8,
            bytes,
        })
    }

    /// The bytes held (clamped to `N`, whatever another process wrote).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..(self.len as usize).min(N)]
    }

    /// The text, or `None` if the bytes are not UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(self.as_bytes()).ok()
    }
}

impl<const N: usize> Default for ShortStr<N> {
    fn default() -> Self {
        Self {
            len: 0,
            bytes: [0; N],
        }
    }
}

impl<const N: usize> std::fmt::Debug for ShortStr<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.as_str() {
            Some(s) => s.fmt(f),
            None => self.as_bytes().fmt(f),
        }
    }
}
