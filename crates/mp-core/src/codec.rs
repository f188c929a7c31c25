//! Decoding what another process sent: postcard, with limits a hostile sender cannot get
//! past.
//!
//! Postcard checks every length against the bytes left, so a lying length prefix cannot make
//! the receiver allocate more than the message holds (serde caps its pre-allocation at
//! 1 MiB whatever the hint). Two things it does not bound, this module does:
//!
//! - **Nesting.** A recursive type (`enum E { Leaf, Node(Box<E>) }`) decodes by recursion, one
//!   stack frame chain per level: 512 Ki levels fit in a 512 KiB message and overflow any
//!   thread's stack, which aborts the process. Every compound value (option, sequence, tuple,
//!   struct, map, enum, newtype) counts one level; past [`MAX_DECODE_DEPTH`] decoding stops
//!   with [`DecodeError::TooDeep`].
//! - **Elements that take no bytes.** A `Vec<()>` announcing 2^60 elements is ten bytes of
//!   message and 2^60 loop turns. Every element of a variable-length sequence or map that
//!   is not zero-sized takes at least one byte, so more elements than bytes (plus
//!   [`MAX_EMPTY_ELEMENTS`]) is [`DecodeError::TooManyElements`].
//!
//! The limits are enforced by a wrapper around postcard's deserializer that forwards every
//! call, counting on the way; scalar calls pass straight through, so a small message decodes
//! at postcard's own pace. Every decode of bytes that came from another process (messages,
//! queue items, pool tasks and results, manager requests and replies, the boot message, a
//! child's report) goes through [`decode`] or [`take`].

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, Visitor};
use serde::Deserialize;

use crate::error::DecodeError;

/// How deeply compound values may nest in a decoded message. A level costs a few hundred
/// bytes of stack in a release build and up to a few KiB in a debug build, so this stays far
/// below what the smallest thread stack mp decodes on (2 MiB) can take.
pub const MAX_DECODE_DEPTH: usize = 256;

/// How many zero-sized elements (`()`, unit structs, `PhantomData`) the sequences and maps
/// of one message may hold beyond one element per byte.
pub const MAX_EMPTY_ELEMENTS: usize = 1 << 20;

/// Decodes a whole `T` from `bytes` (trailing bytes are ignored, as postcard does).
pub(crate) fn decode<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, DecodeError> {
    let mut de = postcard::Deserializer::from_bytes(bytes);
    run(&mut de, bytes.len())
}

/// Decodes a `T` from the start of `bytes`, returning it and the bytes after it.
pub(crate) fn take<'de, T: Deserialize<'de>>(
    bytes: &'de [u8],
) -> Result<(T, &'de [u8]), DecodeError> {
    let mut de = postcard::Deserializer::from_bytes(bytes);
    let value = run(&mut de, bytes.len())?;
    Ok((value, de.finalize().map_err(DecodeError::Invalid)?))
}

/// Decodes one `T` through [`Limited`], for a message of `len` bytes.
#[inline]
fn run<'de, T: Deserialize<'de>>(
    de: &mut postcard::Deserializer<'de, postcard::de_flavors::Slice<'de>>,
    len: usize,
) -> Result<T, DecodeError> {
    let limits = Limits {
        depth: Cell::new(0),
        elements: Cell::new(0),
        max_elements: len.saturating_add(MAX_EMPTY_ELEMENTS),
        tripped: Cell::new(None),
    };
    // The refusal is looked for only on the error path (a decode that succeeds costs
    // nothing more); `refuse` is called right before its error is returned, so no decode
    // runs between the two.
    T::deserialize(Limited {
        de,
        limits: &limits,
    })
    .map_err(|e| {
        limits
            .tripped
            .take()
            .or_else(|| REFUSED.with(|r| r.take()).map(DecodeError::Refused))
            .unwrap_or(DecodeError::Invalid(e))
    })
}

thread_local! {
    /// Why a value refused the bytes it was being decoded from (see [`refuse`]).
    static REFUSED: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// The error a `Deserialize` impl of this crate returns when the bytes are well formed but
/// name something it cannot be (a proxy of another type than asked for): postcard's own
/// error keeps no message, so the reason is kept here and becomes
/// [`DecodeError::Refused`]. Call it last, right before returning its error (nothing that
/// decodes may run in between).
pub(crate) fn refuse<E: de::Error>(why: String) -> E {
    let e = E::custom(&why);
    REFUSED.with(|r| *r.borrow_mut() = Some(why));
    e
}

/// The counters of one decode.
struct Limits {
    depth: Cell<usize>,
    elements: Cell<usize>,
    max_elements: usize,
    /// Which limit stopped the decode (postcard's own error type cannot carry it).
    tripped: Cell<Option<DecodeError>>,
}

impl Limits {
    #[cold]
    fn trip<E: de::Error>(&self, why: DecodeError) -> E {
        let e = E::custom(&why);
        self.tripped.set(Some(why));
        e
    }

    /// Enters one level of nesting; the guard leaves it.
    #[inline]
    fn enter<E: de::Error>(&self) -> Result<Level<'_>, E> {
        let d = self.depth.get() + 1;
        if d > MAX_DECODE_DEPTH {
            return Err(self.trip(DecodeError::TooDeep {
                limit: MAX_DECODE_DEPTH,
            }));
        }
        self.depth.set(d);
        Ok(Level(self))
    }

    /// Counts `k` elements of a variable-length sequence or map.
    #[inline]
    fn elements<E: de::Error>(&self, k: usize) -> Result<(), E> {
        let n = self.elements.get().saturating_add(k);
        if n > self.max_elements {
            return Err(self.trip(DecodeError::TooManyElements {
                limit: self.max_elements,
            }));
        }
        self.elements.set(n);
        Ok(())
    }
}

struct Level<'a>(&'a Limits);

impl Drop for Level<'_> {
    fn drop(&mut self) {
        self.0.depth.set(self.0.depth.get() - 1);
    }
}

/// A deserializer that counts nesting on its way to `de`.
struct Limited<'a, D> {
    de: D,
    limits: &'a Limits,
}

/// A visitor whose nested deserializers and accessors are [`Limited`] too. `COUNTED`: the
/// elements it is given are those of a variable-length sequence or map.
struct Wrap<'a, V, const COUNTED: bool> {
    inner: V,
    limits: &'a Limits,
}

/// Scalars cannot nest: straight through, unwrapped.
macro_rules! scalar {
    ($($m:ident),*) => {$(
        #[inline]
        fn $m<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
            self.de.$m(visitor)
        }
    )*};
}

impl<'a, D> Limited<'a, D> {
    #[inline]
    fn wrap<V, const COUNTED: bool>(&self, inner: V) -> Wrap<'a, V, COUNTED> {
        Wrap {
            inner,
            limits: self.limits,
        }
    }
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Limited<'_, D> {
    type Error = D::Error;

    scalar!(
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_i128,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_u128,
        deserialize_f32,
        deserialize_f64,
        deserialize_char,
        deserialize_str,
        deserialize_string,
        deserialize_bytes,
        deserialize_byte_buf,
        deserialize_unit,
        deserialize_identifier
    );

    #[inline]
    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        let _l = self.limits.enter()?;
        let v = self.wrap::<_, false>(visitor);
        self.de.deserialize_any(v)
    }

    #[inline]
    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        let _l = self.limits.enter()?;
        let v = self.wrap::<_, false>(visitor);
        self.de.deserialize_ignored_any(v)
    }

    #[inline]
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        let _l = self.limits.enter()?;
        let v = self.wrap::<_, false>(visitor);
        self.de.deserialize_option(v)
    }

    #[inline]
    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.de.deserialize_unit_struct(name, visitor)
    }

    #[inline]
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let _l = self.limits.enter()?;
        let v = self.wrap::<_, false>(visitor);
        self.de.deserialize_newtype_struct(name, v)
    }

    #[inline]
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        let _l = self.limits.enter()?;
        let v = self.wrap::<_, true>(visitor);
        self.de.deserialize_seq(v)
    }

    #[inline]
    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let _l = self.limits.enter()?;
        let v = self.wrap::<_, false>(visitor);
        self.de.deserialize_tuple(len, v)
    }

    #[inline]
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let _l = self.limits.enter()?;
        let v = self.wrap::<_, false>(visitor);
        self.de.deserialize_tuple_struct(name, len, v)
    }

    #[inline]
    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        let _l = self.limits.enter()?;
        let v = self.wrap::<_, true>(visitor);
        self.de.deserialize_map(v)
    }

    #[inline]
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let _l = self.limits.enter()?;
        let v = self.wrap::<_, false>(visitor);
        self.de.deserialize_struct(name, fields, v)
    }

    #[inline]
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let _l = self.limits.enter()?;
        let v = self.wrap::<_, false>(visitor);
        self.de.deserialize_enum(name, variants, v)
    }

    fn is_human_readable(&self) -> bool {
        self.de.is_human_readable()
    }
}

/// Forwards scalar visits unchanged.
macro_rules! visit {
    ($($m:ident($t:ty)),*) => {$(
        #[inline]
        fn $m<E: de::Error>(self, v: $t) -> Result<Self::Value, E> {
            self.inner.$m(v)
        }
    )*};
}

impl<'de, V: Visitor<'de>, const COUNTED: bool> Visitor<'de> for Wrap<'_, V, COUNTED> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    visit!(
        visit_bool(bool),
        visit_i8(i8),
        visit_i16(i16),
        visit_i32(i32),
        visit_i64(i64),
        visit_i128(i128),
        visit_u8(u8),
        visit_u16(u16),
        visit_u32(u32),
        visit_u64(u64),
        visit_u128(u128),
        visit_f32(f32),
        visit_f64(f64),
        visit_char(char),
        visit_str(&str),
        visit_borrowed_str(&'de str),
        visit_string(String),
        visit_bytes(&[u8]),
        visit_borrowed_bytes(&'de [u8]),
        visit_byte_buf(Vec<u8>)
    );

    #[inline]
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_none()
    }

    #[inline]
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_unit()
    }

    #[inline]
    fn visit_some<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        self.inner.visit_some(Limited {
            de,
            limits: self.limits,
        })
    }

    #[inline]
    fn visit_newtype_struct<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        self.inner.visit_newtype_struct(Limited {
            de,
            limits: self.limits,
        })
    }

    #[inline]
    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        let seq = Access::<_, COUNTED>::new(seq, self.limits, A::size_hint)?;
        self.inner.visit_seq(seq)
    }

    #[inline]
    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let map = Access::<_, COUNTED>::new(map, self.limits, A::size_hint)?;
        self.inner.visit_map(map)
    }

    #[inline]
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_enum(Access::<_, false> {
            inner: data,
            limits: self.limits,
            each: false,
        })
    }
}

/// A seed whose deserializer is [`Limited`].
struct Seed<'a, S> {
    inner: S,
    limits: &'a Limits,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<'_, S> {
    type Value = S::Value;

    #[inline]
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        self.inner.deserialize(Limited {
            de,
            limits: self.limits,
        })
    }
}

/// A sequence, map, enum or variant accessor that hands out [`Limited`] deserializers,
/// counting elements when `COUNTED`: all at once when the sequence's length is known to fit
/// the bytes left (postcard's size hint), else one by one (`each`).
struct Access<'a, A, const COUNTED: bool> {
    inner: A,
    limits: &'a Limits,
    each: bool,
}

impl<'a, A, const COUNTED: bool> Access<'a, A, COUNTED> {
    #[inline]
    fn new<E: de::Error>(
        inner: A,
        limits: &'a Limits,
        hint: impl Fn(&A) -> Option<usize>,
    ) -> Result<Self, E> {
        let mut each = false;
        if COUNTED {
            match hint(&inner) {
                Some(n) => limits.elements(n)?,
                None => each = true,
            }
        }
        Ok(Self {
            inner,
            limits,
            each,
        })
    }

    #[inline]
    fn seed<S>(&self, inner: S) -> Seed<'a, S> {
        Seed {
            inner,
            limits: self.limits,
        }
    }

    #[inline]
    fn count<E: de::Error>(&self) -> Result<(), E> {
        if COUNTED && self.each {
            self.limits.elements(1)?;
        }
        Ok(())
    }
}

impl<'de, A: de::SeqAccess<'de>, const C: bool> de::SeqAccess<'de> for Access<'_, A, C> {
    type Error = A::Error;

    #[inline]
    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, Self::Error> {
        self.count()?;
        let seed = self.seed(seed);
        self.inner.next_element_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, A: de::MapAccess<'de>, const C: bool> de::MapAccess<'de> for Access<'_, A, C> {
    type Error = A::Error;

    #[inline]
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        self.count()?;
        let seed = self.seed(seed);
        self.inner.next_key_seed(seed)
    }

    #[inline]
    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        let seed = self.seed(seed);
        self.inner.next_value_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'a, 'de, A: de::EnumAccess<'de>> de::EnumAccess<'de> for Access<'a, A, false> {
    type Error = A::Error;
    type Variant = Access<'a, A::Variant, false>;

    #[inline]
    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self::Variant), Self::Error> {
        let limits = self.limits;
        let (v, variant) = self.inner.variant_seed(Seed {
            inner: seed,
            limits,
        })?;
        Ok((
            v,
            Access {
                inner: variant,
                limits,
                each: false,
            },
        ))
    }
}

impl<'de, A: de::VariantAccess<'de>> de::VariantAccess<'de> for Access<'_, A, false> {
    type Error = A::Error;

    #[inline]
    fn unit_variant(self) -> Result<(), Self::Error> {
        self.inner.unit_variant()
    }

    #[inline]
    fn newtype_variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<S::Value, Self::Error> {
        let seed = self.seed(seed);
        self.inner.newtype_variant_seed(seed)
    }

    #[inline]
    fn tuple_variant<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let _l = self.limits.enter()?;
        self.inner.tuple_variant(
            len,
            Wrap::<_, false> {
                inner: visitor,
                limits: self.limits,
            },
        )
    }

    #[inline]
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let _l = self.limits.enter()?;
        self.inner.struct_variant(
            fields,
            Wrap::<_, false> {
                inner: visitor,
                limits: self.limits,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    enum Nest {
        Leaf(u32),
        Node(Box<Nest>),
    }

    /// `levels` levels of `Node` around a leaf, as bytes (variant 1 is one byte).
    fn nested(levels: usize) -> Vec<u8> {
        let mut b = vec![1u8; levels];
        b.extend_from_slice(&postcard::to_stdvec(&Nest::Leaf(7)).unwrap());
        b
    }

    #[test]
    fn nesting_up_to_the_limit_decodes() {
        // Each Node is an enum level plus a newtype-variant level: half the limit fits.
        let v: Nest = decode(&nested(MAX_DECODE_DEPTH / 2 - 1)).unwrap();
        let mut depth = 0;
        let mut at = &v;
        while let Nest::Node(n) = at {
            depth += 1;
            at = n;
        }
        assert_eq!((depth, at), (MAX_DECODE_DEPTH / 2 - 1, &Nest::Leaf(7)));
    }

    #[test]
    fn deeper_nesting_is_too_deep_not_a_stack_overflow() {
        // A megabyte of levels: without the limit this overflows the test thread's stack.
        let e = decode::<Nest>(&nested(1 << 20)).unwrap_err();
        assert_eq!(
            e,
            DecodeError::TooDeep {
                limit: MAX_DECODE_DEPTH
            }
        );
        let e = decode::<Nest>(&nested(MAX_DECODE_DEPTH)).unwrap_err();
        assert!(matches!(e, DecodeError::TooDeep { .. }), "{e:?}");
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "2^20 empty elements decoded before the limit: minutes in Miri"
    )]
    fn zero_sized_elements_beyond_the_bytes_are_refused() {
        // A `Vec<()>` announcing 2^60 elements: ten bytes, 2^60 loop turns.
        let bytes = postcard::to_stdvec(&(1u64 << 60)).unwrap();
        let e = decode::<Vec<()>>(&bytes).unwrap_err();
        assert!(matches!(e, DecodeError::TooManyElements { .. }), "{e:?}");
        // Nested, each inner length fitting the bytes left: the product is what counts.
        let mut nested = postcard::to_stdvec(&1000u32).unwrap();
        for _ in 0..1000 {
            nested.extend_from_slice(&postcard::to_stdvec(&10_000u32).unwrap());
        }
        let e = decode::<Vec<Vec<()>>>(&nested).unwrap_err();
        assert!(matches!(e, DecodeError::TooManyElements { .. }), "{e:?}");
        // A moderate number of them is fine.
        let ok = postcard::to_stdvec(&vec![(); 1000]).unwrap();
        assert_eq!(decode::<Vec<()>>(&ok).unwrap().len(), 1000);
    }

    #[test]
    fn ordinary_values_round_trip_and_errors_stay_postcard_errors() {
        use std::collections::BTreeMap;
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        struct S {
            a: Option<Vec<(u8, String)>>,
            b: BTreeMap<u16, Vec<u64>>,
            c: Result<(), char>,
            d: std::marker::PhantomData<u8>,
        }
        let s = S {
            a: Some(vec![(1, "x".into()), (2, String::new())]),
            b: [(3, vec![4, 5]), (6, vec![])].into_iter().collect(),
            c: Err('z'),
            d: std::marker::PhantomData,
        };
        let bytes = postcard::to_stdvec(&(&s, 99u8)).unwrap();
        let (back, rest): (S, _) = take(&bytes).unwrap();
        assert_eq!((back, rest), (s, &[99u8][..]));
        assert_eq!(
            decode::<String>(&[5, b'a']).unwrap_err(),
            DecodeError::Invalid(postcard::Error::DeserializeUnexpectedEnd)
        );
        // A length prefix far beyond the message allocates nothing and fails.
        let huge = postcard::to_stdvec(&(u64::MAX >> 8)).unwrap();
        assert!(matches!(
            decode::<Vec<u64>>(&huge),
            Err(DecodeError::Invalid(_))
        ));
    }
}
