//! The checker of `bench/cluster_faults.sh`: reads a client history (one event per line,
//! written by `cluster_chaos run`) and proves what happened to every message id.
//!
//! A pure function of the history, so it is unit-tested on made-up histories
//! (`tests/chaos_checker.rs`) and can be re-run on a saved one (`cluster_chaos check FILE`).

use std::collections::{BTreeMap, HashMap, HashSet};

/// One line of the history. `node` is the 1-based index of the node the client was
/// connected to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A publish attempt of `id` was written (attempt 1, 2, … for retries of one id).
    Publish { id: String, node: usize },
    /// The broker confirmed (basic.ack) one attempt of `id`.
    Ack { id: String },
    /// The broker refused (basic.nack) one attempt of `id`.
    Nack { id: String },
    /// The outcome of one attempt is unknown (connection lost or confirm timed out).
    Unknown { id: String },
    /// A consumer received `id` (then acknowledged it, if its connection still allowed).
    Deliver {
        id: String,
        node: usize,
        redelivered: bool,
    },
}

impl Event {
    /// One history line: `P id node`, `A id`, `N id`, `U id`, `D id node redelivered(0|1)`.
    pub fn line(&self) -> String {
        match self {
            Event::Publish { id, node } => format!("P {id} {node}"),
            Event::Ack { id } => format!("A {id}"),
            Event::Nack { id } => format!("N {id}"),
            Event::Unknown { id } => format!("U {id}"),
            Event::Deliver {
                id,
                node,
                redelivered,
            } => format!("D {id} {node} {}", u8::from(*redelivered)),
        }
    }

    /// Parses [`Event::line`]'s format; `None` for anything else (a torn last line).
    pub fn parse(l: &str) -> Option<Event> {
        let mut w = l.split_ascii_whitespace();
        let kind = w.next()?;
        let id = w.next()?.to_string();
        let ev = match kind {
            "P" => Event::Publish {
                id,
                node: w.next()?.parse().ok()?,
            },
            "A" => Event::Ack { id },
            "N" => Event::Nack { id },
            "U" => Event::Unknown { id },
            "D" => Event::Deliver {
                id,
                node: w.next()?.parse().ok()?,
                redelivered: w.next()? == "1",
            },
            _ => return None,
        };
        Some(ev)
    }
}

/// What the checker proves. Ids, not events, unless the name says otherwise.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Distinct ids with at least one publish attempt.
    pub published: u64,
    /// Publish attempts (events).
    pub attempts: u64,
    /// Ids published more than once (retried after a nack or an unknown outcome).
    pub retried: u64,
    /// Ids with at least one basic.ack.
    pub confirmed: u64,
    /// basic.nack events.
    pub nacked: u64,
    /// Attempts whose outcome was never known.
    pub unknown: u64,
    /// Delivery events.
    pub delivered: u64,
    /// Distinct ids delivered.
    pub distinct_delivered: u64,
    /// Ids delivered that were published but never confirmed (allowed).
    pub delivered_unconfirmed: u64,
    /// Confirmed but never delivered: the broker broke its promise.
    pub lost: u64,
    /// Delivered but never published.
    pub phantom: u64,
    /// Deliveries beyond an id's first.
    pub duplicates: u64,
    /// Of those, deliveries flagged redelivered.
    pub dup_redelivered: u64,
    /// Of those, not flagged but of an id whose publish was retried.
    pub dup_retried: u64,
    /// Of those, neither: a duplicate the broker had no excuse for.
    pub dup_unexplained: u64,
    /// Lost ids by the node their confirmed attempt went through (index → count).
    pub lost_by_node: BTreeMap<usize, u64>,
    /// Deliveries by the node the consumer was connected to.
    pub delivered_by_node: BTreeMap<usize, u64>,
    /// Up to ten lost ids, for the logs.
    pub lost_sample: Vec<String>,
    /// Up to ten phantom ids.
    pub phantom_sample: Vec<String>,
}

impl Report {
    /// Lost, phantom or unexplained duplicates.
    pub fn ok(&self) -> bool {
        self.lost == 0 && self.phantom == 0 && self.dup_unexplained == 0
    }

    /// One JSON object (no dependency on serde in the example: hand-written).
    pub fn json(&self) -> String {
        let map = |m: &BTreeMap<usize, u64>| {
            let v: Vec<String> = m.iter().map(|(k, v)| format!("\"n{k}\":{v}")).collect();
            format!("{{{}}}", v.join(","))
        };
        let list = |l: &[String]| {
            let v: Vec<String> = l.iter().map(|s| format!("\"{s}\"")).collect();
            format!("[{}]", v.join(","))
        };
        format!(
            "{{\"published\":{},\"attempts\":{},\"retried\":{},\"confirmed\":{},\"nacked\":{},\
             \"unknown\":{},\"delivered\":{},\"distinct_delivered\":{},\"delivered_unconfirmed\":{},\
             \"lost\":{},\"phantom\":{},\"duplicates\":{},\"dup_redelivered\":{},\"dup_retried\":{},\
             \"dup_unexplained\":{},\"lost_by_node\":{},\"delivered_by_node\":{},\"lost_sample\":{},\
             \"phantom_sample\":{},\"ok\":{}}}",
            self.published,
            self.attempts,
            self.retried,
            self.confirmed,
            self.nacked,
            self.unknown,
            self.delivered,
            self.distinct_delivered,
            self.delivered_unconfirmed,
            self.lost,
            self.phantom,
            self.duplicates,
            self.dup_redelivered,
            self.dup_retried,
            self.dup_unexplained,
            map(&self.lost_by_node),
            map(&self.delivered_by_node),
            list(&self.lost_sample),
            list(&self.phantom_sample),
            self.ok()
        )
    }
}

#[derive(Default)]
struct Msg {
    attempts: u32,
    /// Node of the latest attempt, and of the attempt that was acked.
    last_node: usize,
    acked_node: Option<usize>,
    deliveries: u32,
}

/// Checks a history. Events may come in any order between ids (publishers and consumers
/// run concurrently and a delivery can be written before its confirm); within the
/// checker only sets and counts matter.
pub fn check(events: impl IntoIterator<Item = Event>) -> Report {
    let mut r = Report::default();
    let mut msgs: HashMap<String, Msg> = HashMap::new();
    let mut delivered_only: HashMap<String, u32> = HashMap::new();
    let mut deliveries: Vec<(String, bool)> = Vec::new();
    for ev in events {
        match ev {
            Event::Publish { id, node } => {
                r.attempts += 1;
                let m = msgs.entry(id).or_default();
                m.attempts += 1;
                m.last_node = node;
            }
            Event::Ack { id } => {
                let m = msgs.entry(id).or_default();
                if m.acked_node.is_none() {
                    m.acked_node = Some(m.last_node);
                }
            }
            Event::Nack { .. } => r.nacked += 1,
            Event::Unknown { .. } => r.unknown += 1,
            Event::Deliver {
                id,
                node,
                redelivered,
            } => {
                r.delivered += 1;
                *r.delivered_by_node.entry(node).or_default() += 1;
                deliveries.push((id, redelivered));
            }
        }
    }
    // Deliveries after the publishes are known, so a delivery written before its
    // publish event (consumer and publisher threads racing to the history) still counts.
    let mut seen: HashSet<String> = HashSet::new();
    for (id, redelivered) in deliveries {
        let first = seen.insert(id.clone());
        let attempts = match msgs.get_mut(&id) {
            Some(m) if m.attempts > 0 => {
                m.deliveries += 1;
                m.attempts
            }
            _ => {
                *delivered_only.entry(id).or_default() += 1;
                continue;
            }
        };
        if !first {
            r.duplicates += 1;
            if redelivered {
                r.dup_redelivered += 1;
            } else if attempts > 1 {
                r.dup_retried += 1;
            } else {
                r.dup_unexplained += 1;
            }
        }
    }
    r.phantom = delivered_only.len() as u64;
    let mut phantoms: Vec<&String> = delivered_only.keys().collect();
    phantoms.sort();
    r.phantom_sample = phantoms.into_iter().take(10).cloned().collect();
    let mut lost: Vec<(&String, usize)> = Vec::new();
    for (id, m) in &msgs {
        if m.attempts == 0 {
            // An ack for an id never published: the client's bug, counted as phantom.
            r.phantom += 1;
            continue;
        }
        r.published += 1;
        if m.attempts > 1 {
            r.retried += 1;
        }
        if m.deliveries > 0 {
            r.distinct_delivered += 1;
        }
        match m.acked_node {
            Some(node) => {
                r.confirmed += 1;
                if m.deliveries == 0 {
                    lost.push((id, node));
                }
            }
            None if m.deliveries > 0 => r.delivered_unconfirmed += 1,
            None => {}
        }
    }
    r.distinct_delivered += delivered_only.len() as u64;
    r.lost = lost.len() as u64;
    lost.sort();
    for (_, node) in &lost {
        *r.lost_by_node.entry(*node).or_default() += 1;
    }
    r.lost_sample = lost.iter().take(10).map(|(id, _)| (*id).clone()).collect();
    r
}
