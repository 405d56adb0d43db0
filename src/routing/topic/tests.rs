use super::*;
use proptest::prelude::*;

/// (binding key, routing key, matches?) — every row agrees with RabbitMQ 3.10.8
/// (the rows below that the server was asked about are also in the recorded fixture).
const EDGE_CASES: &[(&str, &str, bool)] = &[
    // `#` alone matches everything, including the empty routing key.
    ("#", "", true),
    ("#", "a", true),
    ("#", "a.b.c", true),
    ("#", ".", true),
    ("#", "..", true),
    // `*` is exactly one word; the empty routing key has none.
    ("*", "", false),
    ("*", "a", true),
    ("*", "a.b", false),
    ("*", ".", false),
    // Empty words are words, and `*` matches them.
    ("*.*", ".", true),
    ("*.*", "a.", true),
    ("*.*", ".a", true),
    ("a.*.b", "a..b", true),
    ("*", "*", true),
    ("*", "#", true),
    // The empty binding key matches only the empty routing key.
    ("", "", true),
    ("", "a", false),
    ("", ".", false),
    // Literal words, including empty ones, compare bytewise.
    ("a", "a", true),
    ("a", "A", false),
    ("a", "a.", false),
    ("a..b", "a..b", true),
    ("a..b", "a.b", false),
    (".a", ".a", true),
    (".a", "a", false),
    ("a.", "a.", true),
    ("a.", "a", false),
    (".", ".", true),
    (".", "", false),
    ("..", "..", true),
    // `#` can match zero words at either end or in the middle.
    ("a.#", "a", true),
    ("a.#", "a.b", true),
    ("a.#", "a.b.c", true),
    ("a.#", "b.a", false),
    ("#.a", "a", true),
    ("#.a", "x.y.a", true),
    ("#.a", "a.x", false),
    ("a.#.b", "a.b", true),
    ("a.#.b", "a.x.b", true),
    ("a.#.b", "a.x.y.b", true),
    ("a.#.b", "a.b.b", true),
    ("a.#.b", "a.b.c", false),
    ("a.#.b", "b", false),
    // Several `#`, consecutive or not.
    ("#.#", "", true),
    ("#.#", "a.b", true),
    ("#.#.#", "a", true),
    ("a.#.#", "a", true),
    ("a.#.#.b", "a.b", true),
    ("#.a.#", "a", true),
    ("#.a.#", "x.a.y", true),
    ("#.a.#", "x.b.y", false),
    ("#..#", "a..b", true),
    ("#..#", "", false),
    ("#..#", ".", true),
    // `#` next to `*` still needs the `*` word.
    ("#.*", "", false),
    ("#.*", "a", true),
    ("*.#", "", false),
    ("*.#", "a", true),
    ("#.*.#", "", false),
    ("#.*.#", ".", true),
    ("*.*.#", "a", false),
    ("*.*.#", "a.b", true),
    ("a.#.*", "a", false),
    ("a.#.*", "a.b", true),
    // A `#` word followed by an empty word needs that empty word.
    ("#.", "", false),
    ("#.", "a.", true),
    (".#", "", false),
    (".#", ".a", true),
    // Wildcard characters inside a word are literal.
    ("a*", "a*", true),
    ("a*", "ab", false),
    ("a#", "a", false),
    ("#a", "a", false),
    ("*a.b", "xa.b", false),
    ("*a.b", "*a.b", true),
    // A routing key's `*`/`#` words are literal and only wildcards match them.
    ("a.*", "a.*", true),
    ("a.b", "a.*", false),
];

/// The recorded answers of RabbitMQ 3.10.8 to 43 binding keys × 26 routing keys.
fn recorded() -> Vec<(String, String, bool)> {
    serde_json::from_str(include_str!("../testdata/topic_rabbitmq_3_10_8.json"))
        .expect("fixture is valid JSON")
}

/// The obviously-correct exponential matcher the trie is checked against.
fn naive(pattern: &[&str], words: &[&str]) -> bool {
    match pattern.split_first() {
        None => words.is_empty(),
        Some((&"#", rest)) => (0..=words.len()).any(|skip| naive(rest, &words[skip..])),
        Some((p, rest)) => match words.split_first() {
            Some((w, more)) => (*p == "*" || p == w) && naive(rest, more),
            None => false,
        },
    }
}

fn naive_keys(binding: &str, routing: &str) -> bool {
    let p: Vec<&str> = split_words(binding).collect();
    let w: Vec<&str> = split_words(routing).collect();
    naive(&p, &w)
}

fn routed(trie: &TopicTrie<usize>, routing_key: &str) -> Vec<usize> {
    let mut out = Vec::new();
    trie.route(routing_key, &mut out);
    out.sort_unstable();
    out
}

#[test]
fn split_matches_rabbitmq() {
    let split = |k| split_words(k).collect::<Vec<_>>();
    let dots = ".".repeat(31);
    for key in ["", ".", "a", "a..b", ".a", "a.", "ab.cd.ef", "é.ü..", &dots] {
        let mut buf = [""; INLINE_WORDS];
        let n = split_inline(key, &mut buf).expect("fits");
        assert_eq!(&buf[..n], split(key), "{key:?}");
    }
    assert_eq!(split_inline(&".".repeat(32), &mut [""; INLINE_WORDS]), None);
    assert!(split("").is_empty());
    assert_eq!(split("."), ["", ""]);
    assert_eq!(split("a..b"), ["a", "", "b"]);
    assert_eq!(split(".a"), ["", "a"]);
    assert_eq!(split("a."), ["a", ""]);
}

#[test]
fn edge_case_table() {
    assert!(EDGE_CASES.len() >= 40);
    for &(binding, routing, expected) in EDGE_CASES {
        assert_eq!(
            naive_keys(binding, routing),
            expected,
            "naive {binding:?} {routing:?}"
        );
        assert_eq!(
            topic_matches(binding, routing),
            expected,
            "dp {binding:?} {routing:?}"
        );
        let mut trie = TopicTrie::new();
        trie.insert(binding, 7usize);
        let want: &[usize] = if expected { &[7] } else { &[] };
        assert_eq!(routed(&trie, routing), want, "trie {binding:?} {routing:?}");
    }
}

#[test]
fn edge_case_table_in_one_shared_trie() {
    let mut trie = TopicTrie::new();
    let bindings: Vec<&str> = EDGE_CASES.iter().map(|c| c.0).collect();
    for (i, b) in bindings.iter().enumerate() {
        trie.insert(b, i);
    }
    for &(_, routing, _) in EDGE_CASES {
        let want: Vec<usize> = (0..bindings.len())
            .filter(|&i| naive_keys(bindings[i], routing))
            .collect();
        assert_eq!(routed(&trie, routing), want, "{routing:?}");
    }
}

#[test]
fn agrees_with_recorded_rabbitmq() {
    let rows = recorded();
    assert_eq!(rows.len(), 43 * 26);
    let mut trie = TopicTrie::new();
    let mut ids: HashMap<&str, usize> = HashMap::new();
    for (b, _, _) in &rows {
        let next = ids.len();
        let id = *ids.entry(b.as_str()).or_insert(next);
        trie.insert(b, id);
    }
    for (b, r, expected) in &rows {
        assert_eq!(topic_matches(b, r), *expected, "dp {b:?} {r:?}");
        assert_eq!(
            routed(&trie, r).contains(&ids[b.as_str()]),
            *expected,
            "trie {b:?} {r:?}"
        );
    }
}

#[test]
fn a_destination_bound_by_several_matching_keys_is_routed_once() {
    let mut trie = TopicTrie::new();
    for key in ["#", "a.#", "*.b", "a.b", "#.#"] {
        assert!(trie.insert(key, "q"));
    }
    trie.insert("a.*", "r");
    let mut out = vec!["earlier"];
    trie.route("a.b", &mut out);
    out[1..].sort_unstable();
    assert_eq!(out, ["earlier", "q", "r"]);
    let mut visits = 0;
    trie.for_each_match("a.b", |_| visits += 1);
    assert_eq!(visits, 6);
}

#[test]
fn insert_remove_and_prune() {
    let mut trie = TopicTrie::new();
    assert!(trie.insert("a.b.c", 1));
    assert!(!trie.insert("a.b.c", 1));
    assert!(trie.insert("a.b.c", 2));
    assert!(trie.insert("a.#", 1));
    assert!(trie.insert("a.*.c", 1));
    assert!(trie.insert("", 3));
    assert_eq!(trie.len(), 5);
    assert!(trie.contains("a.b.c", &2));
    assert!(!trie.contains("a.b", &1));
    assert!(!trie.remove("a.b", &1));
    assert!(!trie.remove("a.b.c", &9));
    assert!(trie.remove("a.b.c", &1));
    assert!(!trie.contains("a.b.c", &1));
    assert_eq!(routed(&trie, "a.b.c"), [1, 2]);
    for (k, d) in [("a.b.c", 2), ("a.#", 1), ("a.*.c", 1), ("", 3)] {
        assert!(trie.remove(k, &d), "{k}");
    }
    assert!(trie.is_empty());
    assert_eq!(trie.node_count(), 1, "every node but the root is pruned");
    // Freed slots are reused.
    let slots = trie.nodes.len();
    trie.insert("x.y.z", 1);
    assert_eq!(trie.nodes.len(), slots);
    assert_eq!(routed(&trie, "x.y.z"), [1]);
}

#[test]
fn pruning_keeps_shared_prefixes() {
    let mut trie = TopicTrie::new();
    trie.insert("a.b", 1);
    trie.insert("a.b.c.d", 1);
    trie.insert("a.#.x", 1);
    let nodes = trie.node_count();
    trie.insert("a.b.c.e.f", 2);
    trie.remove("a.b.c.e.f", &2);
    assert_eq!(trie.node_count(), nodes);
    trie.remove("a.b.c.d", &1);
    assert_eq!(routed(&trie, "a.b"), [1]);
    assert_eq!(routed(&trie, "a.q.x"), [1]);
    assert_eq!(trie.node_count(), 5); // root, a, a.b, a.#, a.#.x
}

#[test]
fn many_children_switch_to_a_map_and_back() {
    let mut trie = TopicTrie::new();
    for i in 0..100 {
        trie.insert(&format!("k.{i}"), i);
    }
    for i in 0..100 {
        assert_eq!(routed(&trie, &format!("k.{i}")), [i]);
    }
    for i in 0..98 {
        assert!(trie.remove(&format!("k.{i}"), &i));
    }
    assert_eq!(routed(&trie, "k.99"), [99]);
    assert_eq!(routed(&trie, "k.98"), [98]);
    assert_eq!(routed(&trie, "k.97"), Vec::<usize>::new());
}

#[test]
fn bindings_lists_every_pair_by_key() {
    let mut trie = TopicTrie::new();
    for (k, d) in [("b.#", 1), ("a.*", 2), ("", 3), ("a.*", 4), ("a.x", 5)] {
        trie.insert(k, d);
    }
    let mut got = trie.bindings();
    got.sort();
    let want: Vec<(String, i32)> = [("", 3), ("a.*", 2), ("a.*", 4), ("a.x", 5), ("b.#", 1)]
        .iter()
        .map(|&(k, d)| (k.to_string(), d))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn many_hashes_against_the_longest_key_stay_fast() {
    // 256 empty words: the worst a 255-byte routing key can do.
    let key = ".".repeat(255);
    let mut trie = TopicTrie::new();
    for n in 1..=16 {
        trie.insert(&vec!["#"; n].join("."), n);
        trie.insert(&vec!["#"; n].join(".*."), 100 + n);
        trie.insert(&vec!["#"; n].join(".."), 200 + n);
    }
    trie.insert(&["#", "x", "#", "x", "#"].join("."), 999);
    let started = std::time::Instant::now();
    let got = routed(&trie, &key);
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    let want: Vec<usize> = trie
        .bindings()
        .iter()
        .filter(|(b, _)| topic_matches(b, &key))
        .map(|(_, d)| *d)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(got, want);
    assert_eq!(got.len(), 16 * 3);
}

#[test]
fn long_routing_keys_spill_past_the_inline_buffer() {
    let words: Vec<String> = (0..100).map(|i| format!("w{i}")).collect();
    let key = words.join(".");
    let mut trie = TopicTrie::new();
    trie.insert(&key, 1);
    trie.insert("w0.#.w99", 2);
    trie.insert("#.w50.#", 3);
    trie.insert(&format!("{key}.*"), 4);
    assert_eq!(routed(&trie, &key), [1, 2, 3]);
}

fn word() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["a", "b", "", "*", "#"])
}

fn key(max_words: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(word(), 0..=max_words).prop_map(|w| w.join("."))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn trie_agrees_with_naive_matcher(
        bindings in prop::collection::vec(key(6), 1..40),
        routing in prop::collection::vec(key(8), 1..20),
    ) {
        let mut trie = TopicTrie::new();
        for (i, b) in bindings.iter().enumerate() {
            trie.insert(b, i);
        }
        for r in &routing {
            let want: Vec<usize> = (0..bindings.len())
                .filter(|&i| naive_keys(&bindings[i], r))
                .collect();
            prop_assert_eq!(routed(&trie, r), want, "routing key {:?}", r);
            for b in &bindings {
                prop_assert_eq!(topic_matches(b, r), naive_keys(b, r));
            }
        }
    }

    #[test]
    fn removing_bindings_forgets_exactly_them(
        bindings in prop::collection::vec(key(5), 1..30),
        drop_mask in prop::collection::vec(any::<bool>(), 30),
        routing in prop::collection::vec(key(6), 1..10),
    ) {
        let mut trie = TopicTrie::new();
        for (i, b) in bindings.iter().enumerate() {
            trie.insert(b, i);
        }
        for (i, b) in bindings.iter().enumerate() {
            if drop_mask[i] {
                prop_assert!(trie.remove(b, &i));
            }
        }
        for r in &routing {
            let want: Vec<usize> = (0..bindings.len())
                .filter(|&i| !drop_mask[i] && naive_keys(&bindings[i], r))
                .collect();
            prop_assert_eq!(routed(&trie, r), want);
        }
        for (i, b) in bindings.iter().enumerate() {
            if !drop_mask[i] {
                prop_assert!(trie.remove(b, &i));
            }
        }
        prop_assert_eq!(trie.node_count(), 1);
    }
}
