//! Topic exchange matching: binding keys with `*` and `#` wildcards, kept in a word trie.
//!
//! A routing key is a list of words separated by `.`. In a binding key `*` stands for
//! exactly one word and `#` for zero or more words. The rules below are RabbitMQ's
//! (rabbit_db_topic_exchange / the 3.x mnesia trie), checked against RabbitMQ 3.10.8:
//!
//! * The empty key is **zero** words, not one empty word. So binding `""` matches only
//!   routing key `""`, `#` matches `""`, but `*`, `#.*` and `*.#` do not.
//! * Any other key is split at every `.`, keeping empty words: `a..b` is `a`, `""`, `b`;
//!   `.a` is `""`, `a`; `a.` is `a`, `""`. An empty word is an ordinary word that `*`
//!   matches and that only an empty binding word matches literally.
//! * `*` and `#` are wildcards only as whole words: `a*` and `#a` are literal words. In a
//!   routing key they are always literal and match only the binding wildcards.
//!
//! The trie has one node per binding-key prefix, with literal-word children and separate
//! `*` and `#` children, so routing visits only the prefixes the routing key can reach,
//! whatever the number of bindings. A `#` can absorb any run of words, so a key with
//! several `#` could reach the same node at the same word position along many paths
//! (`#.#.#.#` against a 200-word key is C(203, 3) paths). The walk therefore treats a `#`
//! node as absorbing "all positions from `i` on" in one visit and remembers, for `#` nodes
//! that can be reached more than one way, the smallest position already absorbed; each
//! (node, position) pair is then visited at most once.

use std::collections::HashMap;
use std::hash::Hash;

use super::dedup::dedup_from;
use super::dest_set::DestSet;
use super::word::Word;

/// Marks an absent `*` or `#` child.
const NONE: u32 = u32::MAX;
const ROOT: u32 = 0;
/// Literal children are kept in a vector up to this many, then in a hash map.
const FEW_CHILDREN: usize = 8;
/// Routing keys with up to this many words are split without allocating.
const INLINE_WORDS: usize = 32;

/// Splits a topic key into words the way RabbitMQ does: `""` is no words at all,
/// anything else is split at every `.` with empty words kept.
pub fn split_words(key: &str) -> impl Iterator<Item = &str> {
    (!key.is_empty())
        .then(|| key.split('.'))
        .into_iter()
        .flatten()
}

/// Splits `key` into `buf` as [`split_words`] does, returning the word count, or `None`
/// if there are more words than `buf` holds. Routing splits every key, and for short
/// words a plain byte scan is several times faster than `str::split`.
fn split_inline<'k>(key: &'k str, buf: &mut [&'k str; INLINE_WORDS]) -> Option<usize> {
    if key.is_empty() {
        return Some(0);
    }
    let mut count = 0;
    let mut start = 0;
    for (i, &b) in key.as_bytes().iter().enumerate() {
        if b == b'.' {
            // `.` is ASCII, so both ends are character boundaries and `get` succeeds.
            *buf.get_mut(count)? = key.get(start..i)?;
            count += 1;
            start = i + 1;
        }
    }
    *buf.get_mut(count)? = key.get(start..)?;
    Some(count + 1)
}

/// Does `binding_key` match `routing_key`? A stand-alone check of one pair (for tests,
/// tracing, or management tools); routing many bindings should use [`TopicTrie`].
/// Runs in O(binding words × routing words), whatever the number of `#`.
pub fn topic_matches(binding_key: &str, routing_key: &str) -> bool {
    let pattern: Vec<&str> = split_words(binding_key).collect();
    let words: Vec<&str> = split_words(routing_key).collect();
    // next[j]: does pattern[i + 1..] match words[j..]? Built from the last pattern word back.
    let n = words.len();
    let mut next: Vec<bool> = (0..=n).map(|j| j == n).collect();
    let mut cur = vec![false; n + 1];
    for p in pattern.iter().rev() {
        for j in (0..=n).rev() {
            cur[j] = match *p {
                "#" => next[j] || (j < n && cur[j + 1]),
                "*" => j < n && next[j + 1],
                lit => j < n && words[j] == lit && next[j + 1],
            };
        }
        std::mem::swap(&mut next, &mut cur);
    }
    next[0]
}

/// A set of (binding key, destination) pairs that can say which destinations a routing
/// key reaches. Each pair is held once; the caller decides what a duplicate bind means.
#[derive(Debug)]
pub struct TopicTrie<D> {
    nodes: Vec<Node<D>>,
    /// Slots of pruned nodes, reused before the vector grows.
    free: Vec<u32>,
    pairs: usize,
}

#[derive(Debug)]
struct Node<D> {
    words: Children,
    star: u32,
    hash: u32,
    /// How many `#` edges lead from the root to this node, its own edge included. A `#`
    /// node with another `#` above it can be reached at several word positions, so only
    /// those need the walk's memo.
    hashes: u16,
    dests: DestSet<D>,
}

impl<D> Node<D> {
    fn new(hashes: u16) -> Self {
        Node {
            words: Children::default(),
            star: NONE,
            hash: NONE,
            hashes,
            dests: DestSet::default(),
        }
    }

    fn has_word_edges(&self) -> bool {
        self.star != NONE || !self.words.is_empty()
    }
}

/// What a binding word means to the trie.
#[derive(Clone, Copy)]
enum Edge<'a> {
    Word(&'a str),
    Star,
    Hash,
}

impl<'a> Edge<'a> {
    fn of(word: &'a str) -> Self {
        match word {
            "*" => Edge::Star,
            "#" => Edge::Hash,
            w => Edge::Word(w),
        }
    }
}

/// Literal-word children: a short vector while there are few (a scan of a few short
/// strings beats hashing), a hash map once there are many. The map is boxed so that the
/// many nodes with few children stay small, which matters because routing through a big
/// trie is bound by cache misses.
#[derive(Debug)]
enum Children {
    Few(Vec<(Word, u32)>),
    #[expect(clippy::box_collection, reason = "keeps trie nodes small")]
    Many(Box<HashMap<Word, u32, foldhash::fast::RandomState>>),
}

impl Default for Children {
    fn default() -> Self {
        Children::Few(Vec::new())
    }
}

impl Children {
    fn get(&self, word: &str) -> Option<u32> {
        let word = word.as_bytes();
        match self {
            Children::Few(v) => v
                .iter()
                .find(|(w, _)| w.as_bytes() == word)
                .map(|&(_, id)| id),
            Children::Many(m) => m.get(word).copied(),
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Children::Few(v) => v.is_empty(),
            Children::Many(m) => m.is_empty(),
        }
    }

    fn insert(&mut self, word: &str, id: u32) {
        match self {
            Children::Few(v) => {
                v.push((Word::new(word), id));
                if v.len() > FEW_CHILDREN {
                    *self = Children::Many(Box::new(std::mem::take(v).into_iter().collect()));
                }
            }
            Children::Many(m) => {
                m.insert(Word::new(word), id);
            }
        }
    }

    fn remove(&mut self, word: &str) {
        let word = word.as_bytes();
        match self {
            Children::Few(v) => {
                if let Some(pos) = v.iter().position(|(w, _)| w.as_bytes() == word) {
                    v.swap_remove(pos);
                }
            }
            Children::Many(m) => {
                m.remove(word);
                if m.len() <= FEW_CHILDREN / 2 {
                    *self = Children::Few(std::mem::take(&mut **m).into_iter().collect());
                }
            }
        }
    }

    fn iter(&self) -> Box<dyn Iterator<Item = (&[u8], u32)> + '_> {
        match self {
            Children::Few(v) => Box::new(v.iter().map(|(w, id)| (w.as_bytes(), *id))),
            Children::Many(m) => Box::new(m.iter().map(|(w, id)| (w.as_bytes(), *id))),
        }
    }
}

impl<D: Clone + Eq + Hash> Default for TopicTrie<D> {
    fn default() -> Self {
        Self::new()
    }
}

impl<D: Clone + Eq + Hash> TopicTrie<D> {
    pub fn new() -> Self {
        TopicTrie {
            nodes: vec![Node::new(0)],
            free: Vec::new(),
            pairs: 0,
        }
    }

    /// Number of (binding key, destination) pairs held.
    pub fn len(&self) -> usize {
        self.pairs
    }

    pub fn is_empty(&self) -> bool {
        self.pairs == 0
    }

    /// Number of live trie nodes, the root included; for tests and memory accounting.
    pub fn node_count(&self) -> usize {
        self.nodes.len() - self.free.len()
    }

    /// Adds the pair; false if it was already present.
    pub fn insert(&mut self, binding_key: &str, dest: D) -> bool {
        let mut at = ROOT;
        for word in split_words(binding_key) {
            at = self.child_or_insert(at, Edge::of(word));
        }
        let added = self.node_mut(at).dests.insert(dest);
        self.pairs += usize::from(added);
        added
    }

    /// Removes the pair, pruning nodes left with nothing below them; false if absent.
    pub fn remove(&mut self, binding_key: &str, dest: &D) -> bool {
        let mut path: Vec<(u32, Edge<'_>)> = Vec::new();
        let mut at = ROOT;
        for word in split_words(binding_key) {
            let edge = Edge::of(word);
            match self.child(at, edge) {
                Some(next) => {
                    path.push((at, edge));
                    at = next;
                }
                None => return false,
            }
        }
        if !self.node_mut(at).dests.remove(dest) {
            return false;
        }
        self.pairs -= 1;
        while let Some((parent, edge)) = path.pop() {
            let node = self.node(at);
            if !node.dests.is_empty() || node.has_word_edges() || node.hash != NONE {
                break;
            }
            self.unlink(parent, edge);
            self.release(at);
            at = parent;
        }
        true
    }

    pub fn contains(&self, binding_key: &str, dest: &D) -> bool {
        let mut at = ROOT;
        for word in split_words(binding_key) {
            match self.child(at, Edge::of(word)) {
                Some(next) => at = next,
                None => return false,
            }
        }
        self.node(at).dests.contains(dest)
    }

    /// Appends to `out` every destination bound with a key that matches `routing_key`,
    /// each once even if several of its binding keys match. Entries already in `out` are
    /// left alone (and not considered for deduplication).
    pub fn route(&self, routing_key: &str, out: &mut Vec<D>) {
        let start = out.len();
        let mut matched_nodes = 0usize;
        self.for_each_match_node(routing_key, |dests| {
            matched_nodes += 1;
            out.extend_from_slice(dests);
        });
        if matched_nodes > 1 {
            dedup_from(out, start);
        }
    }

    /// Calls `visit` once per (binding key, destination) pair whose key matches, so a
    /// destination bound with two matching keys is visited twice (as RabbitMQ's own
    /// match does; its caller deduplicates).
    pub fn for_each_match(&self, routing_key: &str, mut visit: impl FnMut(&D)) {
        self.for_each_match_node(routing_key, |dests| dests.iter().for_each(&mut visit));
    }

    /// Every pair, sorted by binding key (destinations of one key in no particular order).
    pub fn bindings(&self) -> Vec<(String, D)> {
        let mut out = Vec::with_capacity(self.pairs);
        let mut key = Vec::new();
        self.collect(ROOT, &mut key, &mut out);
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn collect<'a>(&'a self, at: u32, key: &mut Vec<&'a [u8]>, out: &mut Vec<(String, D)>) {
        let node = self.node(at);
        for d in node.dests.as_slice() {
            // Every word came from a `&str`, so this is never lossy.
            let text = String::from_utf8_lossy(&key.join(&b'.')).into_owned();
            out.push((text, d.clone()));
        }
        let wild: [(&[u8], u32); 2] = [(b"*", node.star), (b"#", node.hash)];
        let edges = node
            .words
            .iter()
            .chain(wild.into_iter().filter(|&(_, id)| id != NONE));
        for (word, child) in edges {
            key.push(word);
            self.collect(child, key, out);
            key.pop();
        }
    }

    /// Runs the matching walk, handing each matching node's destinations to `visit`
    /// (each node at most once).
    fn for_each_match_node<'a>(&'a self, routing_key: &str, visit: impl FnMut(&'a [D])) {
        let mut inline = [""; INLINE_WORDS];
        let spilled: Vec<&str>;
        let words = match split_inline(routing_key, &mut inline) {
            Some(count) => &inline[..count],
            None => {
                spilled = split_words(routing_key).collect();
                &spilled[..]
            }
        };
        let mut walk = Walk {
            trie: self,
            words,
            memo: None,
            visit,
        };
        walk.walk(ROOT, 0);
    }

    fn node(&self, id: u32) -> &Node<D> {
        &self.nodes[id as usize]
    }

    fn node_mut(&mut self, id: u32) -> &mut Node<D> {
        &mut self.nodes[id as usize]
    }

    fn child(&self, at: u32, edge: Edge<'_>) -> Option<u32> {
        let node = self.node(at);
        let id = match edge {
            Edge::Word(w) => return node.words.get(w),
            Edge::Star => node.star,
            Edge::Hash => node.hash,
        };
        (id != NONE).then_some(id)
    }

    fn child_or_insert(&mut self, at: u32, edge: Edge<'_>) -> u32 {
        if let Some(id) = self.child(at, edge) {
            return id;
        }
        let hashes = self
            .node(at)
            .hashes
            .saturating_add(u16::from(matches!(edge, Edge::Hash)));
        let id = self.allocate(hashes);
        let node = self.node_mut(at);
        match edge {
            Edge::Word(w) => node.words.insert(w, id),
            Edge::Star => node.star = id,
            Edge::Hash => node.hash = id,
        }
        id
    }

    fn unlink(&mut self, at: u32, edge: Edge<'_>) {
        let node = self.node_mut(at);
        match edge {
            Edge::Word(w) => node.words.remove(w),
            Edge::Star => node.star = NONE,
            Edge::Hash => node.hash = NONE,
        }
    }

    fn allocate(&mut self, hashes: u16) -> u32 {
        match self.free.pop() {
            Some(id) => {
                self.nodes[id as usize] = Node::new(hashes);
                id
            }
            None => {
                // Every node costs well over 64 bytes, so memory runs out long before the
                // 2^32 - 1 node ids do; saturating keeps this panic-free all the same.
                let id = u32::try_from(self.nodes.len()).unwrap_or(NONE - 1);
                self.nodes.push(Node::new(hashes));
                id
            }
        }
    }

    fn release(&mut self, id: u32) {
        self.nodes[id as usize] = Node::new(0);
        self.free.push(id);
    }
}

/// One routing walk over the trie.
struct Walk<'a, 'w, D, F> {
    trie: &'a TopicTrie<D>,
    words: &'w [&'w str],
    /// For `#` nodes reachable at several positions: the smallest word position from which
    /// the node has already absorbed words. Allocated only if such a node is reached.
    memo: Option<HashMap<u32, usize>>,
    visit: F,
}

impl<'a, D: Clone + Eq + Hash, F: FnMut(&'a [D])> Walk<'a, '_, D, F> {
    /// At node `id`, reached through literal or `*` edges, with `words[i..]` left.
    fn walk(&mut self, id: u32, i: usize) {
        let trie = self.trie;
        let node = trie.node(id);
        match self.words.get(i) {
            None => self.emit(node),
            Some(word) => {
                if let Some(child) = node.words.get(word) {
                    self.walk(child, i + 1);
                }
                if node.star != NONE {
                    self.walk(node.star, i + 1);
                }
            }
        }
        if node.hash != NONE {
            self.walk_hash(node.hash, i);
        }
    }

    /// At `#` node `id`, which may absorb any number of `words[from..]`: leave it by each
    /// word edge at every position from `from` on, and match here if it absorbs them all.
    fn walk_hash(&mut self, id: u32, from: usize) {
        let trie = self.trie;
        let node = trie.node(id);
        let n = self.words.len();
        let (upto, first_visit) = if node.hashes >= 2 {
            let memo = self.memo.get_or_insert_with(HashMap::new);
            match memo.insert(id, from) {
                None => (n, true),
                Some(done) if done <= from => {
                    memo.insert(id, done);
                    return;
                }
                Some(done) => (done, false),
            }
        } else {
            (n, true)
        };
        if node.has_word_edges() {
            for j in from..upto {
                if let Some(child) = node.words.get(self.words[j]) {
                    self.walk(child, j + 1);
                }
                if node.star != NONE {
                    self.walk(node.star, j + 1);
                }
            }
        }
        if first_visit {
            self.emit(node);
        }
        if node.hash != NONE {
            self.walk_hash(node.hash, from);
        }
    }

    fn emit(&mut self, node: &'a Node<D>) {
        if !node.dests.is_empty() {
            (self.visit)(node.dests.as_slice());
        }
    }
}

#[cfg(test)]
mod tests {
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
        serde_json::from_str(include_str!("testdata/topic_rabbitmq_3_10_8.json"))
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
}
