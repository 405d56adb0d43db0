//! Removing repeated destinations from one routing decision.
//!
//! RabbitMQ delivers a message to a queue at most once per publish even when several of
//! the queue's bindings match (its exchange types return duplicates and the channel
//! deduplicates). Most routes match zero or one destination, so this is written to cost
//! nothing in that case and a few comparisons in the common small case.

use std::collections::HashSet;
use std::hash::Hash;

/// Above this many candidates a hash set beats the quadratic scan.
const LINEAR_SCAN_LIMIT: usize = 16;

/// Removes repeats from `out[start..]`, keeping the first occurrence of each destination
/// and the order of first occurrences. Entries before `start` belong to the caller and
/// are left alone.
pub(crate) fn dedup_from<D: Eq + Hash>(out: &mut Vec<D>, start: usize) {
    let candidates = out.len().saturating_sub(start);
    if candidates < 2 {
        return;
    }
    if candidates <= LINEAR_SCAN_LIMIT {
        let mut kept = start;
        for read in start..out.len() {
            if !out[start..kept].contains(&out[read]) {
                out.swap(kept, read);
                kept += 1;
            }
        }
        out.truncate(kept);
        return;
    }
    let keep: Vec<bool> = {
        let mut seen = HashSet::with_capacity(candidates);
        out[start..].iter().map(|d| seen.insert(d)).collect()
    };
    let tail = out.split_off(start);
    out.extend(
        tail.into_iter()
            .zip(keep)
            .filter_map(|(d, keep)| keep.then_some(d)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_first_occurrences_in_order() {
        let mut v = vec![9, 1, 2, 1, 3, 2, 1];
        dedup_from(&mut v, 1);
        assert_eq!(v, vec![9, 1, 2, 3]);
    }

    #[test]
    fn leaves_the_callers_prefix_alone() {
        let mut v = vec![1, 1, 2, 2];
        dedup_from(&mut v, 2);
        assert_eq!(v, vec![1, 1, 2]);
    }

    #[test]
    fn large_inputs_take_the_hashing_path() {
        let mut v: Vec<u32> = (0..100).chain(0..100).chain(50..150).collect();
        dedup_from(&mut v, 0);
        assert_eq!(v, (0..150).collect::<Vec<_>>());
    }

    #[test]
    fn empty_and_single_are_untouched() {
        let mut v: Vec<u8> = vec![];
        dedup_from(&mut v, 0);
        assert!(v.is_empty());
        let mut v = vec![7];
        dedup_from(&mut v, 0);
        assert_eq!(v, vec![7]);
        dedup_from(&mut v, 5);
        assert_eq!(v, vec![7]);
    }
}
