//! A topic binding word as the trie stores it.
//!
//! Routing through a large trie is bound by memory latency: every literal-word edge the
//! walk tries means comparing the routing key's word with a stored one. Stored as a
//! `Box<str>`, that comparison first chases a pointer to a separate allocation, which in
//! a trie of 100 000 bindings is usually a cache miss. Nearly all real words (`orders`,
//! `eu-west-1`, `42`) are short, so they are kept inline in the edge itself, and only
//! long ones go to the heap.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};

/// Words up to this many bytes are stored inline (keeping the type 24 bytes long).
const INLINE: usize = 22;

#[derive(Clone)]
pub(crate) enum Word {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<[u8]>),
}

impl Word {
    pub(crate) fn new(word: &str) -> Word {
        let src = word.as_bytes();
        match u8::try_from(src.len()) {
            Ok(len) if src.len() <= INLINE => {
                let mut bytes = [0; INLINE];
                bytes[..src.len()].copy_from_slice(src);
                Word::Inline { len, bytes }
            }
            _ => Word::Heap(src.into()),
        }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            Word::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Word::Heap(b) => b,
        }
    }
}

/// Hashes exactly as `[u8]` does, as `Borrow<[u8]>` requires for map lookups by slice.
impl Hash for Word {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl PartialEq for Word {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Word {}

impl Borrow<[u8]> for Word {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl std::fmt::Debug for Word {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn short_words_are_inline_and_long_ones_are_not() {
        assert!(matches!(Word::new(""), Word::Inline { len: 0, .. }));
        assert!(matches!(
            Word::new(&"x".repeat(22)),
            Word::Inline { len: 22, .. }
        ));
        assert!(matches!(Word::new(&"x".repeat(23)), Word::Heap(_)));
        assert_eq!(std::mem::size_of::<Word>(), 24);
        for w in ["", "a", "é", &"y".repeat(22), &"z".repeat(300)] {
            assert_eq!(Word::new(w).as_bytes(), w.as_bytes());
        }
    }

    #[test]
    fn map_lookups_by_slice_find_both_forms() {
        let long = "l".repeat(40);
        let map: HashMap<Word, u32> = [(Word::new("short"), 1), (Word::new(&long), 2)].into();
        assert_eq!(map.get(b"short".as_slice()), Some(&1));
        assert_eq!(map.get(long.as_bytes()), Some(&2));
        assert_eq!(map.get(b"shorter".as_slice()), None);
        assert_ne!(Word::new("a"), Word::new("b"));
    }
}
