//! A function named across processes that run the same executable: the one mechanism behind
//! process targets, pool task functions and initializers, and barrier actions.
//!
//! A target is a `fn` item or a capture-free closure, so its type is zero-sized and fixes its
//! behaviour. For each such type the compiler makes one *trampoline* (a plain `fn`, generic
//! over the target's type). The sender names the trampoline by its offset from [`anchor`], a
//! function of this crate, plus the target's type name; a receiver running the very same
//! executable adds the offset to its own `anchor`, whatever address-space layout
//! randomisation did, and finds the same trampoline.
//!
//! Resolving is one checked step, [`FnId::resolve`] (or [`FnRef::resolve`] for an id read
//! in place from a frame):
//! - the id's *kind* (process target, pool task, pool initializer, barrier action: each a
//!   different trampoline signature) must be the one asked for, so an id made for one
//!   signature is never called through another;
//! - every trampoline takes the type name it was asked for as its first argument and checks
//!   it with [`check_type`] before it touches anything else.
//!
//! What this cannot check: that the sender runs the same executable. An offset from another
//! build points anywhere; processes started by mp are the same executable by construction.
//! Where an id comes from a process mp did not start (an MPI rank, a manager's client asking
//! the manager's pool to run a task), the receiver first compares [`fingerprint`]s: the
//! SHA-256 of each side's executable file.

use std::marker::PhantomData;

use serde::{Deserialize, Serialize};

/// A family of trampolines that share one signature.
pub(crate) trait FnKind: 'static {
    /// The trampolines' function-pointer type.
    type Ptr: Copy;
    /// Travels with the id and is checked on resolve.
    const TAG: u8;
    /// What the kind is, for error messages.
    const NAME: &'static str;
    /// The address of a trampoline.
    fn address(f: Self::Ptr) -> usize;
    /// The trampoline at `address`.
    ///
    /// # Safety
    /// `address` must be a function of type [`Self::Ptr`](FnKind::Ptr).
    unsafe fn at(address: usize) -> Self::Ptr;
}

/// Declares a [`FnKind`] for a function-pointer type.
macro_rules! fn_kind {
    ($(#[$doc:meta])* $name:ident, $tag:expr, $ptr:ty) => {
        $(#[$doc])*
        pub(crate) struct $name;

        impl $crate::fn_id::FnKind for $name {
            type Ptr = $ptr;
            const TAG: u8 = $tag;
            const NAME: &'static str = stringify!($name);
            fn address(f: $ptr) -> usize {
                f as usize
            }
            unsafe fn at(address: usize) -> $ptr {
                // The integer becomes a pointer through an `as` cast, which takes the
                // provenance exposed by the `as usize` of `address` (and of `anchor_address`),
                // never by transmuting the integer: a pointer transmuted from an integer has no
                // provenance and calling it is undefined behaviour (Miri reports it).
                let p = address as *const ();
                // SAFETY: per the contract, `address` is a function of this very type, and a
                // function pointer has the size and representation of a data pointer.
                unsafe { std::mem::transmute::<*const (), $ptr>(p) }
            }
        }
    };
}
pub(crate) use fn_kind;

/// SHA-256 of this process's executable file, computed once: two processes whose
/// fingerprints are equal run the same code, so a [`FnId`] made by one resolves in the other.
pub(crate) fn fingerprint() -> Result<[u8; 32], String> {
    use std::io::Read;
    static PRINT: std::sync::OnceLock<Result<[u8; 32], String>> = std::sync::OnceLock::new();
    PRINT
        .get_or_init(|| {
            use sha2::Digest;
            let path = std::env::current_exe().map_err(|e| e.to_string())?;
            let mut file = std::fs::File::open(&path).map_err(|e| e.to_string())?;
            let mut hash = sha2::Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = file.read(&mut buf).map_err(|e| e.to_string())?;
                if n == 0 {
                    break;
                }
                hash.update(&buf[..n]);
            }
            Ok(hash.finalize().into())
        })
        .clone()
}

/// The fixed point offsets are measured from.
#[inline(never)]
fn anchor() {}

fn anchor_address() -> usize {
    // Through `black_box`, so that the address is taken at run time, never folded.
    std::hint::black_box(anchor as fn()) as usize
}

/// An id that does not resolve in this process.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FnIdError {
    /// The id was made for another kind of function.
    #[error("a {found} function was sent where a {expected} function was expected")]
    WrongKind {
        /// The kind asked for.
        expected: &'static str,
        /// The tag the id carries.
        found: String,
    },
    /// The offset points outside this process's address space.
    #[error("the function offset {0} is out of range")]
    OutOfRange(i64),
}

/// The tags of the kinds in use (each declared beside its trampolines with [`fn_kind!`]).
pub(crate) const TAG_TARGET: u8 = 1;
pub(crate) const TAG_TASK: u8 = 2;
pub(crate) const TAG_INIT: u8 = 3;
pub(crate) const TAG_ACTION: u8 = 4;

fn kind_name(tag: u8) -> String {
    match tag {
        TAG_TARGET => "process target".into(),
        TAG_TASK => "pool task".into(),
        TAG_INIT => "pool initializer".into(),
        TAG_ACTION => "barrier action".into(),
        t => format!("unknown (tag {t})"),
    }
}

/// Checks the kind tag and computes the address of the trampoline in this process.
///
/// # Safety
/// The offset must have been made by [`FnId::new`] for kind `K` in a process running this
/// same executable.
unsafe fn resolve_parts<K: FnKind>(tag: u8, offset: i64) -> Result<K::Ptr, FnIdError> {
    if tag != K::TAG {
        return Err(FnIdError::WrongKind {
            expected: K::NAME,
            found: kind_name(tag),
        });
    }
    let address = (anchor_address() as i64)
        .checked_add(offset)
        .filter(|a| *a > 0)
        .ok_or(FnIdError::OutOfRange(offset))?;
    // SAFETY: per the contract, the address is a trampoline of kind `K` of this executable.
    Ok(unsafe { K::at(address as usize) })
}

/// A trampoline of kind `K` named across processes: its offset from the anchor and the type
/// name its trampoline checks. Serialized as `(tag, offset, type_name)`.
pub(crate) struct FnId<K> {
    offset: i64,
    type_name: String,
    kind: PhantomData<fn() -> K>,
}

impl<K> Clone for FnId<K> {
    fn clone(&self) -> Self {
        Self {
            offset: self.offset,
            type_name: self.type_name.clone(),
            kind: PhantomData,
        }
    }
}

impl<K> std::fmt::Debug for FnId<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnId")
            .field("offset", &self.offset)
            .field("type_name", &self.type_name)
            .finish()
    }
}

impl<K: FnKind> FnId<K> {
    /// The id of trampoline `f`, whose target's type is named `type_name` (what the
    /// trampoline will check).
    pub(crate) fn new(f: K::Ptr, type_name: &'static str) -> Self {
        Self {
            offset: K::address(f) as i64 - anchor_address() as i64,
            type_name: type_name.to_string(),
            kind: PhantomData,
        }
    }

    /// The type name the trampoline checks: pass it as the trampoline's first argument.
    pub(crate) fn type_name(&self) -> &str {
        &self.type_name
    }

    /// The trampoline in this process.
    ///
    /// # Safety
    /// `self` must come from [`FnId::new`] in a process running this same executable
    /// (deserialized ids: sent by such a process). The kind is checked here, the type name
    /// by the trampoline.
    pub(crate) unsafe fn resolve(&self) -> Result<K::Ptr, FnIdError> {
        // SAFETY: forwarded contract.
        unsafe { resolve_parts::<K>(K::TAG, self.offset) }
    }
}

impl<K: FnKind> Serialize for FnId<K> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (K::TAG, self.offset, self.type_name.as_str()).serialize(s)
    }
}

impl<'de, K: FnKind> Deserialize<'de> for FnId<K> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (tag, offset, type_name) = <(u8, i64, String)>::deserialize(d)?;
        if tag != K::TAG {
            return Err(serde::de::Error::custom(FnIdError::WrongKind {
                expected: K::NAME,
                found: kind_name(tag),
            }));
        }
        Ok(Self {
            offset,
            type_name,
            kind: PhantomData,
        })
    }
}

/// An id read in place from a frame (no allocation): the same wire form as [`FnId`].
pub(crate) struct FnRef<'a, K> {
    tag: u8,
    offset: i64,
    type_name: &'a str,
    kind: PhantomData<fn() -> K>,
}

impl<'a, K: FnKind> FnRef<'a, K> {
    /// Decodes an id from the front of `bytes`; returns it and the bytes after it.
    /// The bytes come from another process: decoded through [`crate::codec`].
    pub(crate) fn take_from(
        bytes: &'a [u8],
    ) -> Result<(Self, &'a [u8]), crate::error::DecodeError> {
        let ((tag, offset, type_name), rest) = crate::codec::take::<(u8, i64, &'a str)>(bytes)?;
        Ok((
            Self {
                tag,
                offset,
                type_name,
                kind: PhantomData,
            },
            rest,
        ))
    }

    /// The type name the trampoline checks.
    pub(crate) fn type_name(&self) -> &'a str {
        self.type_name
    }

    /// The trampoline in this process; see [`FnId::resolve`].
    ///
    /// # Safety
    /// As for [`FnId::resolve`].
    pub(crate) unsafe fn resolve(&self) -> Result<K::Ptr, FnIdError> {
        // SAFETY: forwarded contract.
        unsafe { resolve_parts::<K>(self.tag, self.offset) }
    }
}

/// The first thing every trampoline does: the type name it was reached with must be its own.
pub(crate) fn check_type(asked: &str, found: &'static str) -> Result<(), String> {
    if asked == found {
        Ok(())
    } else {
        Err(format!(
            "function mismatch: asked for {asked}, found {found}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn_kind!(
        /// A test kind.
        Probe,
        200,
        fn(&str, u32) -> Result<u32, String>
    );
    fn_kind!(
        /// Another test kind, same signature.
        Other,
        201,
        fn(&str, u32) -> Result<u32, String>
    );

    fn double(type_name: &str, x: u32) -> Result<u32, String> {
        check_type(type_name, "double")?;
        Ok(2 * x)
    }

    #[test]
    fn resolves_and_checks() {
        let id = FnId::<Probe>::new(double, "double");
        let bytes = postcard::to_stdvec(&id).unwrap();
        let back: FnId<Probe> = postcard::from_bytes(&bytes).unwrap();
        // SAFETY: made above, in this process.
        let f = unsafe { back.resolve() }.unwrap();
        assert_eq!(f(back.type_name(), 21), Ok(42));
        assert!(f("something else", 1).unwrap_err().contains("mismatch"));

        let (r, rest) = FnRef::<Probe>::take_from(&bytes).unwrap();
        assert!(rest.is_empty());
        // SAFETY: as above.
        let f = unsafe { r.resolve() }.unwrap();
        assert_eq!(f(r.type_name(), 1), Ok(2));

        // An id of another kind is refused, decoded owned or in place.
        assert!(postcard::from_bytes::<FnId<Other>>(&bytes).is_err());
        let (r, _) = FnRef::<Other>::take_from(&bytes).unwrap();
        // SAFETY: refused before any address is formed.
        let resolved = unsafe { r.resolve() };
        assert!(matches!(resolved, Err(FnIdError::WrongKind { .. })));
    }

    #[test]
    fn out_of_range_offset_is_refused() {
        let bytes = postcard::to_stdvec(&(Probe::TAG, i64::MIN, "x")).unwrap();
        let (r, _) = FnRef::<Probe>::take_from(&bytes).unwrap();
        // SAFETY: the offset is refused before any call.
        let resolved = unsafe { r.resolve() };
        assert!(matches!(resolved, Err(FnIdError::OutOfRange(_))));
    }
}
