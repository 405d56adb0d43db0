//! The consistent-hash exchange's ring (`x-consistent-hash`, RabbitMQ's
//! `rabbitmq_consistent_hash_exchange`).
//!
//! As in the plugin, each destination owns a run of consecutive buckets, as many as the
//! weight in its binding key, in the order the destinations were bound; a message goes to
//! the owner of the bucket that jump consistent hashing (Lamping and Veach) picks for the
//! hash of its routing key, of one header or of one property. A destination bound twice
//! keeps the buckets of its first binding; removing any of its bindings removes its
//! buckets and moves the later runs down, as the plugin does.
//!
//! The hash function differs from the plugin's (`erlang:phash2` feeding `rand`'s
//! `exs1024`), so a given key may land on another queue than in RabbitMQ; what clients can
//! rely on is the same: one value always reaches the same destination while the bindings
//! stay, and each destination's share follows its weight. Runs are kept as
//! (destination, weight) pairs, so memory grows with the bindings, not with the weights.

/// Why a binding key is refused as a weight: RabbitMQ's texts.
pub fn parse_weight(key: &str) -> Result<u64, String> {
    // Erlang's list_to_integer: optional sign, decimal digits, nothing else.
    let digits = key.strip_prefix(['+', '-']).unwrap_or(key);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("The binding key must be an integer: <<\"{key}\">>"));
    }
    if key.starts_with('-') || digits.bytes().all(|b| b == b'0') {
        return Err("The binding key must be greater than 0".into());
    }
    // Weights past u32 would never be spread over in practice; saturate instead of failing.
    Ok(digits
        .parse::<u64>()
        .unwrap_or(u64::MAX)
        .min(u32::MAX as u64))
}

/// Destinations in binding order, each with its number of buckets.
#[derive(Debug)]
pub struct HashRing<D> {
    runs: Vec<(D, u64)>,
    buckets: u64,
}

impl<D> Default for HashRing<D> {
    fn default() -> Self {
        HashRing {
            runs: Vec::new(),
            buckets: 0,
        }
    }
}

impl<D: PartialEq + Clone> HashRing<D> {
    /// A binding to `dest` with this weight; ignored when `dest` already has buckets.
    pub fn add(&mut self, dest: &D, weight: u64) {
        if weight == 0 || self.runs.iter().any(|(d, _)| d == dest) {
            return;
        }
        self.runs.push((dest.clone(), weight));
        self.buckets += weight;
    }

    /// A binding of `dest` is gone: its buckets go, later runs move down.
    pub fn remove(&mut self, dest: &D) {
        if let Some(pos) = self.runs.iter().position(|(d, _)| d == dest) {
            let (_, w) = self.runs.remove(pos);
            self.buckets -= w;
        }
    }

    pub fn buckets(&self) -> u64 {
        self.buckets
    }

    /// The destination for a message whose hashed value is `value`.
    pub fn pick(&self, value: &[u8]) -> Option<&D> {
        if self.buckets == 0 {
            return None;
        }
        let mut bucket = jump(hash64(value), self.buckets);
        for (d, w) in &self.runs {
            if bucket < *w {
                return Some(d);
            }
            bucket -= w;
        }
        None
    }
}

/// FNV-1a over the bytes, then a 64-bit finaliser (SplitMix64) so that keys differing in
/// their last byte spread over the whole range. Fixed, so placement survives restarts.
pub fn hash64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Jump consistent hash: a bucket in `0..buckets` for `key`; growing `buckets` by one
/// moves only the keys that land in the new bucket.
pub fn jump(mut key: u64, buckets: u64) -> u64 {
    let (mut b, mut j): (i64, i64) = (-1, 0);
    let n = buckets.min(i64::MAX as u64) as i64;
    while j < n {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = (((b + 1) as f64) * ((1u64 << 31) as f64 / (((key >> 33) + 1) as f64))) as i64;
    }
    b.max(0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_parse_as_erlang_integers_greater_than_zero() {
        assert_eq!(parse_weight("1"), Ok(1));
        assert_eq!(parse_weight("+20"), Ok(20));
        assert_eq!(parse_weight("007"), Ok(7));
        assert_eq!(
            parse_weight("abc"),
            Err("The binding key must be an integer: <<\"abc\">>".into())
        );
        for bad in ["", " 1", "1.5", "+", "1e3"] {
            assert!(
                parse_weight(bad).unwrap_err().contains("integer"),
                "{bad:?}"
            );
        }
        for zero in ["0", "-1", "-0", "000"] {
            assert_eq!(
                parse_weight(zero),
                Err("The binding key must be greater than 0".into()),
                "{zero:?}"
            );
        }
        assert_eq!(parse_weight("99999999999999999999999"), Ok(u32::MAX as u64));
    }

    #[test]
    fn jump_stays_in_range_and_moves_few_keys_when_growing() {
        let mut moved = 0;
        for k in 0..10_000u64 {
            let key = hash64(&k.to_be_bytes());
            let a = jump(key, 10);
            let b = jump(key, 11);
            assert!(a < 10 && b < 11);
            if a != b {
                assert_eq!(b, 10, "a key only ever moves to the new bucket");
                moved += 1;
            }
        }
        // About 1/11 of the keys move.
        assert!((600..1300).contains(&moved), "{moved}");
        assert_eq!(jump(42, 1), 0);
    }

    #[test]
    fn same_value_same_destination_and_shares_follow_weights() {
        let mut r = HashRing::default();
        r.add(&"a", 1);
        r.add(&"b", 3);
        r.add(&"a", 5); // a second binding of a: ignored
        assert_eq!(r.buckets(), 4);
        let mut counts = [0u32; 2];
        for i in 0..20_000 {
            let key = format!("key-{i}");
            let d = *r.pick(key.as_bytes()).unwrap();
            assert_eq!(*r.pick(key.as_bytes()).unwrap(), d);
            counts[(d == "b") as usize] += 1;
        }
        // Expected 5000 / 15000.
        assert!((4400..5600).contains(&counts[0]), "{counts:?}");
        r.remove(&"a");
        assert_eq!(r.buckets(), 3);
        assert_eq!(r.pick(b"x"), Some(&"b"));
        r.remove(&"b");
        assert_eq!(r.pick(b"x"), None);
    }
}
