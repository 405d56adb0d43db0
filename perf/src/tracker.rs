//! Which (producer, sequence) pairs arrived: one growable bitset per producer.
//! Each consumer keeps its own (no locks on the hot path); consumers of one queue
//! are OR-ed together at the end.

#[derive(Debug, Default, Clone)]
pub struct Bitset {
    words: Vec<u64>,
}

impl Bitset {
    /// Sets bit `i`; returns true when it was already set (a duplicate).
    pub fn set(&mut self, i: u32) -> bool {
        let (w, b) = ((i / 64) as usize, i % 64);
        if w >= self.words.len() {
            self.words.resize((w + 1).next_power_of_two(), 0);
        }
        let was = self.words[w] & (1 << b) != 0;
        self.words[w] |= 1 << b;
        was
    }

    pub fn or(&mut self, other: &Bitset) {
        if other.words.len() > self.words.len() {
            self.words.resize(other.words.len(), 0);
        }
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a |= b;
        }
    }

    /// Clears every bit set in `other`.
    pub fn remove_all(&mut self, other: &Bitset) {
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a &= !b;
        }
    }

    pub fn count(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Bits set in `self` but not in `other`.
    pub fn count_missing_from(&self, other: &Bitset) -> u64 {
        self.words
            .iter()
            .enumerate()
            .map(|(i, w)| u64::from((w & !other.words.get(i).copied().unwrap_or(0)).count_ones()))
            .sum()
    }
}

/// Per-producer bitsets of what one consumer (or one queue, once merged) received.
#[derive(Debug, Default, Clone)]
pub struct Received {
    pub by_producer: Vec<Bitset>,
    pub duplicates: u64,
    pub foreign: u64,
}

impl Received {
    pub fn record(&mut self, producer: u16, seq: u32, producers: u16) {
        if producer >= producers {
            self.foreign += 1;
            return;
        }
        let p = producer as usize;
        if p >= self.by_producer.len() {
            self.by_producer.resize(p + 1, Bitset::default());
        }
        if self.by_producer[p].set(seq) {
            self.duplicates += 1;
        }
    }

    pub fn merge(&mut self, other: &Received) {
        if other.by_producer.len() > self.by_producer.len() {
            self.by_producer
                .resize(other.by_producer.len(), Bitset::default());
        }
        for (a, b) in self.by_producer.iter_mut().zip(&other.by_producer) {
            a.or(b);
        }
        // Two consumers on one queue never see the same delivery twice unless redelivered.
        self.duplicates += other.duplicates;
        self.foreign += other.foreign;
    }

    pub fn distinct(&self) -> u64 {
        self.by_producer.iter().map(Bitset::count).sum()
    }

    /// Messages in `expected` (per producer) that are not here.
    pub fn lost(&self, expected: &[Bitset]) -> u64 {
        let empty = Bitset::default();
        expected
            .iter()
            .enumerate()
            .map(|(p, e)| e.count_missing_from(self.by_producer.get(p).unwrap_or(&empty)))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_and_duplicates() {
        let mut expected = Bitset::default();
        for i in 0..200 {
            expected.set(i);
        }
        let mut a = Received::default();
        let mut b = Received::default();
        for i in 0..100 {
            a.record(0, i, 1);
        }
        for i in 100..190 {
            b.record(0, i, 1);
        }
        b.record(0, 150, 1);
        b.record(7, 1, 1);
        a.merge(&b);
        assert_eq!(a.distinct(), 190);
        assert_eq!(a.duplicates, 1);
        assert_eq!(a.foreign, 1);
        assert_eq!(a.lost(&[expected]), 10);
    }
}
