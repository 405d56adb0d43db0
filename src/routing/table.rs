//! The bindings of one exchange, indexed for routing by that exchange's kind.

use std::collections::HashMap;
use std::hash::Hash;

use amq_protocol::types::FieldTable;

use super::dest_set::DestSet;
use super::hash_ring::{parse_weight, HashRing};
use super::headers::headers_match;
use super::identity::same_args;
use super::topic::TopicTrie;
use super::ExchangeKind;

/// All bindings whose source is one exchange, indexed for that exchange kind.
/// `D` is the destination handle (the broker uses an enum of queue/exchange handles).
///
/// A binding is identified, as in RabbitMQ, by (destination, routing key, arguments):
/// one queue may be bound with several keys, or with one key and different arguments.
/// Arguments compare as values, order-insensitively and type included (a long-int 1 and
/// a long-long-int 1 are different bindings, as RabbitMQ 3.10.8 confirms), except that a
/// NaN argument is the same binding as itself.
///
/// Layout: the master record maps destination → key → argument tables. Direct and topic
/// exchanges route on the key alone, so they additionally index each distinct
/// (key, destination) pair — a hash map of key → destinations, or a [`TopicTrie`] — and
/// routing never looks at arguments. Fanout routes to the master record's destinations;
/// headers tests each destination's argument tables.
#[derive(Debug)]
pub struct BindingTable<D> {
    kind: ExchangeKind,
    by_dest: HashMap<D, HashMap<Box<str>, Vec<Args>>>,
    /// Direct exchanges: binding key → destinations bound with it. Looked up once per
    /// publish, so hashed with foldhash (randomly seeded) instead of SipHash.
    direct: HashMap<Box<str>, DestSet<D>, foldhash::fast::RandomState>,
    /// Topic exchanges: the (binding key, destination) pairs.
    topic: TopicTrie<D>,
    /// Consistent-hash exchanges: each destination's buckets, weighted by binding key.
    ring: HashRing<D>,
    len: usize,
    /// Creation counter, so `bindings()` can list bindings in the order they were made.
    next_seq: u64,
}

#[derive(Debug)]
struct Args {
    table: FieldTable,
    seq: u64,
}

impl<D: Clone + Eq + Hash> BindingTable<D> {
    pub fn new(kind: ExchangeKind) -> Self {
        BindingTable {
            kind,
            by_dest: HashMap::new(),
            direct: HashMap::default(),
            topic: TopicTrie::new(),
            ring: HashRing::default(),
            len: 0,
            next_seq: 0,
        }
    }

    pub fn kind(&self) -> ExchangeKind {
        self.kind
    }

    /// Adds the binding (dest, routing_key, args); false if an identical binding existed.
    pub fn bind(&mut self, routing_key: &str, args: &FieldTable, dest: D) -> bool {
        let keys = self.by_dest.entry(dest.clone()).or_default();
        let tables = match keys.get_mut(routing_key) {
            Some(tables) => tables,
            None => keys.entry(routing_key.into()).or_default(),
        };
        if tables.iter().any(|a| same_args(&a.table, args)) {
            return false;
        }
        let first_with_key = tables.is_empty();
        tables.push(Args {
            table: args.clone(),
            seq: self.next_seq,
        });
        self.next_seq += 1;
        self.len += 1;
        if first_with_key {
            match self.kind {
                ExchangeKind::Direct => {
                    self.direct
                        .entry(routing_key.into())
                        .or_default()
                        .insert(dest);
                }
                ExchangeKind::Topic => {
                    self.topic.insert(routing_key, dest);
                }
                ExchangeKind::ConsistentHash => {
                    // The vhost refused keys that are not weights; ignored here if any.
                    self.ring.add(&dest, parse_weight(routing_key).unwrap_or(0));
                }
                ExchangeKind::Fanout | ExchangeKind::Headers | ExchangeKind::Random => {}
            }
        }
        true
    }

    /// Removes that exact binding; false if absent.
    pub fn unbind(&mut self, routing_key: &str, args: &FieldTable, dest: &D) -> bool {
        let Some(keys) = self.by_dest.get_mut(dest) else {
            return false;
        };
        let Some(tables) = keys.get_mut(routing_key) else {
            return false;
        };
        let Some(pos) = tables.iter().position(|a| same_args(&a.table, args)) else {
            return false;
        };
        tables.swap_remove(pos);
        self.len -= 1;
        // As the plugin: removing any binding of a destination removes its buckets.
        self.ring.remove(dest);
        if tables.is_empty() {
            keys.remove(routing_key);
            if keys.is_empty() {
                self.by_dest.remove(dest);
            }
            self.forget_pair(routing_key, dest);
        }
        true
    }

    pub fn contains(&self, routing_key: &str, args: &FieldTable, dest: &D) -> bool {
        self.by_dest
            .get(dest)
            .and_then(|keys| keys.get(routing_key))
            .is_some_and(|tables| tables.iter().any(|a| same_args(&a.table, args)))
    }

    /// Appends every destination that the message matches to `out`, each destination at
    /// most once per call. `headers` is the message's headers property; only the headers
    /// kind looks at it, and only direct and topic look at `routing_key`.
    pub fn route(&self, routing_key: &str, headers: Option<&FieldTable>, out: &mut Vec<D>) {
        match self.kind {
            ExchangeKind::Direct => {
                if let Some(dests) = self.direct.get(routing_key) {
                    out.extend_from_slice(dests.as_slice());
                }
            }
            ExchangeKind::Fanout => out.extend(self.by_dest.keys().cloned()),
            ExchangeKind::Topic => self.topic.route(routing_key, out),
            ExchangeKind::ConsistentHash => self.route_hashed(routing_key.as_bytes(), out),
            ExchangeKind::Random => {
                // rabbit_exchange_type_random: one destination, uniformly at random.
                let n = self.by_dest.len();
                if n > 0 {
                    let pick = rand::random_range(0..n);
                    out.extend(self.by_dest.keys().nth(pick).cloned());
                }
            }
            ExchangeKind::Headers => {
                for (dest, keys) in &self.by_dest {
                    let hit = keys
                        .values()
                        .flatten()
                        .any(|a| headers_match(&a.table, headers));
                    if hit {
                        out.push(dest.clone());
                    }
                }
            }
        }
    }

    /// Consistent-hash exchanges: the destination owning the bucket of `value` (the routing
    /// key, or the header or property named by the exchange's `hash-header` /
    /// `hash-property`).
    pub fn route_hashed(&self, value: &[u8], out: &mut Vec<D>) {
        out.extend(self.ring.pick(value).cloned());
    }

    /// Convenience form of [`route`](Self::route) that returns a fresh vector.
    pub fn route_to_vec(&self, routing_key: &str, headers: Option<&FieldTable>) -> Vec<D> {
        let mut out = Vec::new();
        self.route(routing_key, headers, &mut out);
        out
    }

    /// Removes every binding to `dest` (queue or exchange deleted); returns how many.
    pub fn remove_destination(&mut self, dest: &D) -> usize {
        let Some(keys) = self.by_dest.remove(dest) else {
            return 0;
        };
        self.ring.remove(dest);
        let mut removed = 0;
        for (key, tables) in keys {
            removed += tables.len();
            self.forget_pair(&key, dest);
        }
        self.len -= removed;
        removed
    }

    /// Every binding: (routing key, arguments, destination), in the order they were made.
    pub fn bindings(&self) -> Vec<(String, FieldTable, D)> {
        let mut all: Vec<(u64, String, FieldTable, D)> = Vec::with_capacity(self.len);
        for (dest, keys) in &self.by_dest {
            for (key, tables) in keys {
                for a in tables {
                    all.push((a.seq, key.to_string(), a.table.clone(), dest.clone()));
                }
            }
        }
        all.sort_unstable_by_key(|b| b.0);
        all.into_iter().map(|(_, k, a, d)| (k, a, d)).collect()
    }

    /// Every binding to `dest`: (routing key, arguments), in the order they were made.
    pub fn bindings_to(&self, dest: &D) -> Vec<(String, FieldTable)> {
        let Some(keys) = self.by_dest.get(dest) else {
            return Vec::new();
        };
        let mut all: Vec<(u64, String, FieldTable)> = keys
            .iter()
            .flat_map(|(key, tables)| {
                tables
                    .iter()
                    .map(|a| (a.seq, key.to_string(), a.table.clone()))
            })
            .collect();
        all.sort_unstable_by_key(|b| b.0);
        all.into_iter().map(|(_, k, a)| (k, a)).collect()
    }

    /// The distinct destinations bound to this exchange, in no particular order.
    pub fn destinations(&self) -> impl Iterator<Item = &D> {
        self.by_dest.keys()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn has_destination(&self, dest: &D) -> bool {
        self.by_dest.contains_key(dest)
    }

    /// The last binding of `dest` with `key` is gone: drop the pair from the route index.
    fn forget_pair(&mut self, key: &str, dest: &D) {
        match self.kind {
            ExchangeKind::Direct => {
                if let Some(dests) = self.direct.get_mut(key) {
                    dests.remove(dest);
                    if dests.is_empty() {
                        self.direct.remove(key);
                    }
                }
            }
            ExchangeKind::Topic => {
                self.topic.remove(key, dest);
            }
            ExchangeKind::Fanout
            | ExchangeKind::Headers
            | ExchangeKind::ConsistentHash
            | ExchangeKind::Random => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::{AMQPValue, LongString};

    fn args(pairs: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert((*k).into(), v.clone());
        }
        t
    }

    fn none() -> FieldTable {
        FieldTable::default()
    }

    fn s(v: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(v))
    }

    fn routed(
        t: &BindingTable<&'static str>,
        key: &str,
        headers: Option<&FieldTable>,
    ) -> Vec<&'static str> {
        let mut out = t.route_to_vec(key, headers);
        out.sort_unstable();
        out
    }

    #[test]
    fn binding_identity_is_dest_key_and_args() {
        for kind in ExchangeKind::ALL {
            let mut t = BindingTable::new(kind);
            let a1 = args(&[("a", AMQPValue::LongInt(1))]);
            let a1l = args(&[("a", AMQPValue::LongLongInt(1))]);
            assert!(t.bind("k", &none(), "q"));
            assert!(!t.bind("k", &none(), "q"));
            assert!(t.bind("k", &a1, "q"));
            assert!(
                t.bind("k", &a1l, "q"),
                "{kind}: arg types are part of identity"
            );
            assert!(t.bind("k2", &none(), "q"));
            assert!(t.bind("k", &none(), "r"));
            assert_eq!(t.len(), 5);
            assert!(t.contains("k", &a1, &"q"));
            assert!(!t.contains("k", &a1, &"r"));
            assert!(!t.unbind("k", &a1, &"r"));
            assert!(!t.unbind("nope", &none(), &"q"));
            assert!(t.unbind("k", &a1, &"q"));
            assert!(!t.unbind("k", &a1, &"q"));
            assert!(!t.contains("k", &a1, &"q"));
            assert_eq!(t.len(), 4);
            assert!(t.has_destination(&"q"));
            assert_eq!(t.remove_destination(&"q"), 3);
            assert!(!t.has_destination(&"q"));
            assert_eq!(t.remove_destination(&"q"), 0);
            assert_eq!(t.len(), 1);
            assert!(t.unbind("k", &none(), &"r"));
            assert!(t.is_empty());
            assert_eq!(t.destinations().count(), 0);
        }
    }

    #[test]
    fn nan_arguments_can_be_unbound() {
        let mut t = BindingTable::new(ExchangeKind::Direct);
        let nan = args(&[("f", AMQPValue::Double(f64::NAN))]);
        assert!(t.bind("k", &nan, 1));
        assert!(!t.bind("k", &nan, 1));
        assert!(t.unbind("k", &nan, &1));
        assert!(t.is_empty());
    }

    #[test]
    fn direct_routes_on_exact_key() {
        let mut t = BindingTable::new(ExchangeKind::Direct);
        t.bind("a", &none(), "q1");
        t.bind("a", &args(&[("x", s("y"))]), "q1");
        t.bind("a", &none(), "q2");
        t.bind("", &none(), "q3");
        t.bind("A", &none(), "q4");
        t.bind("a.#", &none(), "q5");
        assert_eq!(routed(&t, "a", None), ["q1", "q2"]);
        assert_eq!(routed(&t, "", None), ["q3"]);
        assert_eq!(routed(&t, "b", None), Vec::<&str>::new());
        assert_eq!(routed(&t, "a.b", None), Vec::<&str>::new());
        t.unbind("a", &none(), &"q1");
        assert_eq!(
            routed(&t, "a", None),
            ["q1", "q2"],
            "q1 still bound with other args"
        );
        t.unbind("a", &args(&[("x", s("y"))]), &"q1");
        assert_eq!(routed(&t, "a", None), ["q2"]);
    }

    #[test]
    fn fanout_ignores_key_and_headers() {
        let mut t = BindingTable::new(ExchangeKind::Fanout);
        t.bind("x", &none(), "q1");
        t.bind("y", &none(), "q1");
        t.bind("", &none(), "q2");
        let h = args(&[("a", s("b"))]);
        assert_eq!(routed(&t, "anything", Some(&h)), ["q1", "q2"]);
        t.remove_destination(&"q1");
        assert_eq!(routed(&t, "", None), ["q2"]);
    }

    #[test]
    fn topic_routes_each_destination_once() {
        let mut t = BindingTable::new(ExchangeKind::Topic);
        t.bind("a.*", &none(), "q1");
        t.bind("#", &none(), "q1");
        t.bind("a.b", &args(&[("x", s("y"))]), "q1");
        t.bind("a.b", &none(), "q1");
        t.bind("*.b", &none(), "q2");
        t.bind("c", &none(), "q3");
        assert_eq!(routed(&t, "a.b", None), ["q1", "q2"]);
        assert_eq!(routed(&t, "", None), ["q1"]);
        t.unbind("#", &none(), &"q1");
        t.unbind("a.*", &none(), &"q1");
        t.unbind("a.b", &none(), &"q1");
        assert_eq!(
            routed(&t, "a.b", None),
            ["q1", "q2"],
            "still bound a.b with args"
        );
        assert_eq!(routed(&t, "a.c", None), Vec::<&str>::new());
        assert_eq!(t.remove_destination(&"q1"), 1);
        assert_eq!(routed(&t, "a.b", None), ["q2"]);
    }

    #[test]
    fn headers_routes_on_arguments_once_per_destination() {
        let mut t = BindingTable::new(ExchangeKind::Headers);
        t.bind("", &args(&[("a", AMQPValue::LongInt(1))]), "q1");
        t.bind("other", &args(&[("b", AMQPValue::Void)]), "q1");
        t.bind(
            "",
            &args(&[
                ("x-match", s("any")),
                ("a", AMQPValue::LongInt(2)),
                ("b", AMQPValue::Void),
            ]),
            "q2",
        );
        t.bind("", &none(), "q3");
        let h = args(&[("a", AMQPValue::LongLongInt(1)), ("b", s("x"))]);
        assert_eq!(routed(&t, "ignored", Some(&h)), ["q1", "q2", "q3"]);
        assert_eq!(routed(&t, "", None), ["q3"]);
        let h = args(&[("a", AMQPValue::LongInt(2))]);
        assert_eq!(routed(&t, "", Some(&h)), ["q2", "q3"]);
    }

    #[test]
    fn route_appends_without_touching_earlier_entries() {
        let mut t = BindingTable::new(ExchangeKind::Topic);
        t.bind("#", &none(), "q");
        let mut out = vec!["q"];
        t.route("a", None, &mut out);
        assert_eq!(out, ["q", "q"]);
    }

    #[test]
    fn bindings_are_listed_in_creation_order() {
        let mut t = BindingTable::new(ExchangeKind::Direct);
        let a = args(&[("n", AMQPValue::LongInt(1))]);
        t.bind("z", &none(), "q2");
        t.bind("a", &a, "q1");
        t.bind("m", &none(), "q1");
        t.bind("a", &none(), "q1");
        t.unbind("m", &none(), &"q1");
        t.bind("b", &none(), "q3");
        let listed: Vec<(String, bool, &str)> = t
            .bindings()
            .into_iter()
            .map(|(k, args, d)| (k, args == a, d))
            .collect();
        assert_eq!(
            listed,
            [
                ("z".to_string(), false, "q2"),
                ("a".to_string(), true, "q1"),
                ("a".to_string(), false, "q1"),
                ("b".to_string(), false, "q3"),
            ]
        );
        let to_q1: Vec<String> = t.bindings_to(&"q1").into_iter().map(|(k, _)| k).collect();
        assert_eq!(to_q1, ["a", "a"]);
        assert!(t.bindings_to(&"nope").is_empty());
    }

    #[test]
    fn many_queues_on_one_key_bind_and_unbind_quickly() {
        let started = std::time::Instant::now();
        for kind in [ExchangeKind::Direct, ExchangeKind::Topic] {
            let mut t = BindingTable::new(kind);
            for q in 0..20_000u32 {
                assert!(t.bind("orders.#", &none(), q));
            }
            assert_eq!(t.route_to_vec("orders.#", None).len(), 20_000);
            for q in 0..20_000u32 {
                assert_eq!(t.remove_destination(&q), 1);
            }
            assert!(t.is_empty());
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }
}
