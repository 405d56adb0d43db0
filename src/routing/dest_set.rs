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

#[derive(Debug)]
pub(crate) struct DestSet<D> {
    items: Vec<D>,
    /// Position of each item in `items`, present only when `items` is large.
    index: Option<HashMap<D, usize>>,
}

impl<D> Default for DestSet<D> {
    fn default() -> Self {
        DestSet {
            items: Vec::new(),
            index: None,
        }
    }
}

impl<D: Clone + Eq + Hash> DestSet<D> {
    pub(crate) fn as_slice(&self) -> &[D] {
        &self.items
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn position(&self, dest: &D) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(dest).copied(),
            None => self.items.iter().position(|d| d == dest),
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
        if let Some(index) = &mut self.index {
            index.insert(dest.clone(), self.items.len());
        }
        self.items.push(dest);
        if self.index.is_none() && self.items.len() > INDEX_THRESHOLD {
            self.index = Some(
                self.items
                    .iter()
                    .enumerate()
                    .map(|(i, d)| (d.clone(), i))
                    .collect(),
            );
        }
        true
    }

    /// Removes `dest`; false if it was absent. Order is not preserved.
    pub(crate) fn remove(&mut self, dest: &D) -> bool {
        let Some(pos) = self.position(dest) else {
            return false;
        };
        self.items.swap_remove(pos);
        if let Some(index) = &mut self.index {
            index.remove(dest);
            if let Some(moved) = self.items.get(pos) {
                index.insert(moved.clone(), pos);
            }
            if self.items.len() <= INDEX_THRESHOLD / 2 {
                self.index = None;
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
        assert!(s.index.is_none());
        assert!(s.insert(7));
        assert_eq!(s.as_slice(), &[7]);
    }
}
