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
mod tests;
