//! The view's shared strings (URLs, caller IPs, flow-control keys, labels, queue names…): up to
//! 22 bytes are kept inline, longer ones on the heap.
//!
//! Most distinct values of a high-cardinality field are short — an IPv4 caller IP is at most 15
//! bytes — and a `Box<str>` of one cost a 32-byte allocation beside its 16-byte pointer. Inline
//! they cost the pointer's room plus 8: ~25 B less per distinct value (issue 13's memory curve,
//! where 65,536 caller IPs were most of the view's cost at 100,000 entries).

use std::{
    borrow::Borrow,
    hash::{Hash, Hasher},
    ops::Deref,
};

const INLINE: usize = 22;

/// A string, inline when it is short. Built only from a `&str` ([`From`]): its representation
/// is private, so an inline one always holds a whole string's bytes.
pub struct Text(Repr);

enum Repr {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<str>),
}

impl Text {
    /// Read at every symbol lookup, comparison and rehash of the view's tables: not validated
    /// again (it was a `&str` when it came in).
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Inline { len, bytes } => {
                let bytes = &bytes[..usize::from(*len).min(INLINE)];
                // SAFETY: `From<&str>` is the only constructor, and it copies all of a `&str`
                // of at most INLINE bytes, `len` of them: whole UTF-8.
                unsafe { std::str::from_utf8_unchecked(bytes) }
            }
            Repr::Heap(s) => s,
        }
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Text {
        if s.len() <= INLINE {
            let mut bytes = [0; INLINE];
            bytes[..s.len()].copy_from_slice(s.as_bytes());
            Text(Repr::Inline {
                len: s.len() as u8,
                bytes,
            })
        } else {
            Text(Repr::Heap(s.into()))
        }
    }
}

impl Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Text {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

/// As `str` hashes, so a lookup by `&str` finds it (`Borrow`'s contract).
impl Hash for Text {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Text {}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn keeps_every_string_as_it_was_and_hashes_it_as_str() {
        assert_eq!(std::mem::size_of::<Text>(), 24);
        let h = hashbrown::DefaultHashBuilder::default();
        let long = "x".repeat(INLINE + 1);
        let exact = "é".repeat(INLINE / 2);
        for s in ["", "10.20.3.4", "ünïcødé", exact.as_str(), long.as_str()] {
            let t = Text::from(s);
            assert_eq!(t.as_str(), s);
            assert_eq!(&*t, s);
            assert_eq!(h.hash_one(&t), h.hash_one(s), "{s}");
            assert_eq!(t, Text::from(s));
        }
        assert!(matches!(Text::from("10.20.3.4").0, Repr::Inline { .. }));
        assert!(matches!(Text::from(exact.as_str()).0, Repr::Inline { .. }));
        assert!(matches!(Text::from(long.as_str()).0, Repr::Heap(_)));
    }
}
