//! A set of destinations that is cheap to copy out of when routing.
//!
//! Routing reads a binding key's destinations far more often than bindings change, so the
//! destinations live in a plain `Vec` that `route` can extend `out` from. Most keys have a
//! handful of destinations and a linear scan is the fastest membership test, but a key that
//! ten thousand queues share (one queue per consumer, all bound to `orders.#`) would make
//! every bind and every queue deletion a scan of ten thousand entries. Past a small size the
//! set therefore keeps a position index beside the vector.

use std::collections::HashMap;
use std::hash::Hash;

/// Sizes up to this are searched linearly; bigger sets keep a position index.
const INDEX_THRESHOLD: usize = 16;

/// The common case, one destination per binding key, is held inline so that emitting a
/// match reads no memory beyond the trie node or map entry that holds the set.
#[derive(Debug, Default)]
pub(crate) enum DestSet<D> {
    #[default]
    Empty,
    One(D),
    Few(Vec<D>),
    /// `index` gives the position of each item in `items`. It is boxed so that the
    /// rare large set does not make every set (and every trie node) bigger.
    Many {
        items: Vec<D>,
        #[expect(clippy::box_collection, reason = "keeps the common variants small")]
        index: Box<HashMap<D, usize>>,
    },
}

impl<D: Clone + Eq + Hash> DestSet<D> {
    pub(crate) fn as_slice(&self) -> &[D] {
        match self {
            DestSet::Empty => &[],
            DestSet::One(d) => std::slice::from_ref(d),
            DestSet::Few(items) | DestSet::Many { items, .. } => items,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        matches!(self, DestSet::Empty)
    }

    fn position(&self, dest: &D) -> Option<usize> {
        match self {
            DestSet::Many { index, .. } => index.get(dest).copied(),
            _ => self.as_slice().iter().position(|d| d == dest),
        }
    }

    pub(crate) fn contains(&self, dest: &D) -> bool {
        self.position(dest).is_some()
    }

    /// Adds `dest`; false if it was already present.
    pub(crate) fn insert(&mut self, dest: D) -> bool {
        if self.contains(&dest) {
            return false;
        }
        match self {
            DestSet::Empty => *self = DestSet::One(dest),
            DestSet::One(first) => *self = DestSet::Few(vec![first.clone(), dest]),
            DestSet::Few(items) => {
                items.push(dest);
                if items.len() > INDEX_THRESHOLD {
                    let items = std::mem::take(items);
                    let index = items
                        .iter()
                        .enumerate()
                        .map(|(i, d)| (d.clone(), i))
                        .collect();
                    *self = DestSet::Many {
                        items,
                        index: Box::new(index),
                    };
                }
            }
            DestSet::Many { items, index } => {
                index.insert(dest.clone(), items.len());
                items.push(dest);
            }
        }
        true
    }

    /// Removes `dest`; false if it was absent. Order is not preserved.
    pub(crate) fn remove(&mut self, dest: &D) -> bool {
        let Some(pos) = self.position(dest) else {
            return false;
        };
        match self {
            DestSet::Empty => {}
            DestSet::One(_) => *self = DestSet::Empty,
            DestSet::Few(items) => {
                items.swap_remove(pos);
                if items.len() == 1 {
                    if let Some(last) = items.pop() {
                        *self = DestSet::One(last);
                    }
                }
            }
            DestSet::Many { items, index } => {
                items.swap_remove(pos);
                index.remove(dest);
                if let Some(moved) = items.get(pos) {
                    index.insert(moved.clone(), pos);
                }
                if items.len() <= INDEX_THRESHOLD / 2 {
                    *self = DestSet::Few(std::mem::take(items));
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_set_behaves_as_a_set() {
        let mut s = DestSet::default();
        assert!(s.insert(1));
        assert!(s.insert(2));
        assert!(!s.insert(1));
        assert_eq!(s.as_slice().len(), 2);
        assert!(s.remove(&1));
        assert!(!s.remove(&1));
        assert_eq!(s.as_slice(), &[2]);
        assert!(s.remove(&2));
        assert!(s.is_empty());
    }

    #[test]
    fn large_set_keeps_its_index_consistent() {
        let mut s = DestSet::default();
        for i in 0..1000u32 {
            assert!(s.insert(i));
        }
        assert!(matches!(s, DestSet::Many { .. }));
        assert!(!s.insert(500));
        for i in (0..1000u32).step_by(3) {
            assert!(s.remove(&i), "{i}");
        }
        for i in 0..1000u32 {
            assert_eq!(s.contains(&i), i % 3 != 0, "{i}");
        }
        for i in 0..1000u32 {
            s.remove(&i);
        }
        assert!(s.is_empty());
        assert!(s.insert(7));
        assert!(matches!(s, DestSet::One(7)));
        assert_eq!(s.as_slice(), &[7]);
    }
}
