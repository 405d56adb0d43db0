//! When delayed messages are due: the `x-delay` header's rules and the schedule, a pure
//! structure (no clock, no I/O) that the delay store's timer drives.
//!
//! The schedule holds one small entry per pending message — due time, sequence number,
//! where its record lies on disk, which exchange — never the body, so millions of pending
//! messages cost tens of bytes each. Entries come out in (due time, sequence) order: exact
//! order by due time, and publish order among messages due in the same millisecond.

use amq_protocol::types::{AMQPValue, FieldTable};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// The plugin delays only up to an Erlang timer's limit, 2^32 - 1 ms (about 49.7 days);
/// longer delays are routed at once, as there.
pub const MAX_DELAY_MS: i64 = u32::MAX as i64;

/// The `x-delay` header's value in milliseconds, as the rabbitmq-delayed-message-exchange
/// plugin reads it: integer types as they are, floats and decimals truncated, strings
/// parsed as integers. `None` when the header is absent or unusable.
pub fn x_delay(headers: Option<&FieldTable>) -> Option<i64> {
    match headers?.inner().get("x-delay")? {
        AMQPValue::ShortShortInt(n) => Some(*n as i64),
        AMQPValue::ShortShortUInt(n) => Some(*n as i64),
        AMQPValue::ShortInt(n) => Some(*n as i64),
        AMQPValue::ShortUInt(n) => Some(*n as i64),
        AMQPValue::LongInt(n) => Some(*n as i64),
        AMQPValue::LongUInt(n) => Some(*n as i64),
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::Float(f) => Some(f.trunc() as i64),
        AMQPValue::Double(f) => Some(f.trunc() as i64),
        AMQPValue::DecimalValue(d) => {
            let scale = 10i64.checked_pow(d.scale as u32)?;
            Some(d.value as i64 / scale)
        }
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok()?.parse().ok(),
        AMQPValue::ShortString(s) => s.as_str().parse().ok(),
        _ => None,
    }
}

/// The delay to hold a message for: `Some` only for `0 < x-delay <= 2^32 - 1`; anything
/// else (absent, zero, negative, too long, not a number) is routed immediately.
pub fn delay_of(headers: Option<&FieldTable>) -> Option<u64> {
    x_delay(headers)
        .filter(|d| *d > 0 && *d <= MAX_DELAY_MS)
        .map(|d| d as u64)
}

/// The header a delayed message carries once routed: `x-delay` set to minus its delay
/// (the plugin's `swap_delay_header`, a signed 32-bit int there; a 64-bit one here
/// when it does not fit).
pub fn swapped_delay(delay: u64) -> AMQPValue {
    let neg = -(delay as i64);
    match i32::try_from(neg) {
        Ok(n) => AMQPValue::LongInt(n),
        Err(_) => AMQPValue::LongLongInt(neg),
    }
}

/// Where a pending message's record lies in the delay store's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Loc {
    pub segment: u32,
    pub offset: u32,
    pub len: u32,
}

/// One pending message: 32 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    /// Milliseconds since the Unix epoch.
    pub due: u64,
    /// Publish order (unique, increasing): ties between equal due times.
    pub seq: u64,
    pub loc: Loc,
    /// The exchange (an index into the store's table of (vhost, exchange) names).
    pub exchange: u32,
}

/// Pending messages ordered by due time.
#[derive(Debug, Default)]
pub struct Schedule {
    heap: BinaryHeap<Reverse<Entry>>,
}

impl Schedule {
    /// Adds an entry; true when it is now the first due (the timer must wake earlier).
    pub fn push(&mut self, e: Entry) -> bool {
        let earlier = self.next_due().is_none_or(|d| e.due < d);
        self.heap.push(Reverse(e));
        earlier
    }

    /// When the first pending message is due.
    pub fn next_due(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse(e)| e.due)
    }

    /// Takes up to `max` entries due at or before `now`, in order.
    pub fn pop_due(&mut self, now: u64, max: usize) -> Vec<Entry> {
        let mut out = Vec::new();
        while out.len() < max {
            match self.heap.peek() {
                Some(Reverse(e)) if e.due <= now => {
                    out.push(e.to_owned());
                    self.heap.pop();
                }
                _ => break,
            }
        }
        out
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::{DecimalValue, LongString};

    fn h(v: AMQPValue) -> FieldTable {
        let mut t = FieldTable::default();
        t.insert("x-delay".into(), v);
        t
    }

    fn entry(due: u64, seq: u64) -> Entry {
        Entry {
            due,
            seq,
            loc: Loc {
                segment: 0,
                offset: seq as u32,
                len: 1,
            },
            exchange: 0,
        }
    }

    #[test]
    fn x_delay_reads_every_type_the_plugin_does() {
        assert_eq!(delay_of(Some(&h(AMQPValue::LongInt(5000)))), Some(5000));
        assert_eq!(delay_of(Some(&h(AMQPValue::ShortShortUInt(7)))), Some(7));
        assert_eq!(delay_of(Some(&h(AMQPValue::LongLongInt(1)))), Some(1));
        assert_eq!(delay_of(Some(&h(AMQPValue::Double(2.9)))), Some(2));
        assert_eq!(
            delay_of(Some(&h(AMQPValue::DecimalValue(DecimalValue {
                scale: 2,
                value: 1234
            })))),
            Some(12)
        );
        assert_eq!(
            delay_of(Some(&h(AMQPValue::LongString(LongString::from("300"))))),
            Some(300)
        );
    }

    #[test]
    fn absent_zero_negative_too_long_or_garbage_is_immediate() {
        assert_eq!(delay_of(None), None);
        assert_eq!(delay_of(Some(&FieldTable::default())), None);
        for v in [
            AMQPValue::LongInt(0),
            AMQPValue::LongInt(-5000),
            AMQPValue::LongLongInt(MAX_DELAY_MS + 1),
            AMQPValue::LongString(LongString::from("soon")),
            AMQPValue::Boolean(true),
        ] {
            assert_eq!(delay_of(Some(&h(v.clone()))), None, "{v:?}");
        }
        assert_eq!(
            delay_of(Some(&h(AMQPValue::LongLongInt(MAX_DELAY_MS)))),
            Some(u32::MAX as u64)
        );
    }

    #[test]
    fn routed_messages_carry_minus_their_delay() {
        assert_eq!(swapped_delay(5000), AMQPValue::LongInt(-5000));
        assert_eq!(
            swapped_delay(u32::MAX as u64),
            AMQPValue::LongLongInt(-(u32::MAX as i64))
        );
        // The swapped header is never delayed again.
        assert_eq!(delay_of(Some(&h(swapped_delay(5000)))), None);
    }

    #[test]
    fn entries_come_out_by_due_time_then_publish_order() {
        let mut s = Schedule::default();
        assert!(s.push(entry(300, 1)));
        assert!(s.push(entry(100, 2)), "earlier: the timer must wake");
        assert!(!s.push(entry(100, 3)), "same time: no earlier wake-up");
        assert!(!s.push(entry(200, 4)));
        assert_eq!(s.next_due(), Some(100));
        assert!(s.pop_due(99, 10).is_empty());
        let got: Vec<u64> = s.pop_due(200, 10).iter().map(|e| e.seq).collect();
        assert_eq!(got, vec![2, 3, 4]);
        assert_eq!(s.len(), 1);
        assert_eq!(s.pop_due(1000, 0).len(), 0, "bounded by max");
        assert_eq!(s.pop_due(1000, 10)[0].seq, 1);
        assert!(s.is_empty() && s.next_due().is_none());
    }

    #[test]
    fn many_random_entries_come_out_sorted() {
        let mut s = Schedule::default();
        let mut x: u64 = 12345;
        for seq in 0..10_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            s.push(entry((x >> 40) % 5000, seq));
        }
        let mut last = (0, 0);
        let mut n = 0;
        for now in (0..=5000).step_by(250) {
            for e in s.pop_due(now, usize::MAX) {
                assert!(e.due <= now);
                assert!((e.due, e.seq) > last || n == 0);
                last = (e.due, e.seq);
                n += 1;
            }
        }
        assert_eq!(n, 10_000);
    }
}
