//! Operator changes to quorum queue membership (`rabbitmq-queues`' `add_member`,
//! `delete_member`, `grow`, `shrink`, `rebalance`), run on any node.
//!
//! A member change touches two groups: the queue's definition in the metadata group
//! (every node's idea of the members; a node starts or stops its member when it applies
//! it) and the queue's own Raft group (who votes). It goes: definition with old ∪ new
//! members (a new member starts and can take appends), then the queue group's voters
//! become the new set (new members first join as learners and catch up from the log),
//! then the definition with the new members (a removed member stops).

use crate::broker::Broker;
use crate::queue::Queue;
use crate::store::definitions::QuorumPlacement;
use std::collections::BTreeMap;
use std::sync::Arc;

fn queue(b: &Broker, vhost: &str, name: &str) -> Result<(Arc<Queue>, QuorumPlacement), String> {
    let q = b
        .vhost(vhost)
        .and_then(|v| v.queue(name))
        .ok_or_else(|| format!("queue '{name}' in vhost '{vhost}' not found"))?;
    let p = q.placement().ok_or_else(|| {
        format!("queue '{name}' in vhost '{vhost}' is not a quorum queue of a cluster")
    })?;
    Ok((q, p))
}

/// Every replicated quorum queue (vhost, queue, placement), in name order.
fn all(b: &Broker, vhost: Option<&str>) -> Vec<(String, Arc<Queue>, QuorumPlacement)> {
    let mut out = Vec::new();
    for v in b.vhosts() {
        if vhost.is_some_and(|want| want != v.name) {
            continue;
        }
        for q in v.queues() {
            if let Some(p) = q.placement() {
                out.push((v.name.clone(), q, p));
            }
        }
    }
    out.sort_by(|a, b| (&a.0, a.1.name()).cmp(&(&b.0, b.1.name())));
    out
}

/// Makes `members` the queue's members.
pub async fn set_members(
    b: &Arc<Broker>,
    vhost: &str,
    name: &str,
    members: Vec<String>,
) -> Result<(), String> {
    let meta = b
        .meta
        .get()
        .ok_or("this node runs without --cluster-nodes")?;
    let (q, old) = queue(b, vhost, name)?;
    let known: Vec<String> = meta.status().members.into_iter().map(|m| m.name).collect();
    if let Some(n) = members.iter().find(|n| !known.contains(n)) {
        return Err(format!("node '{n}' is not a cluster member"));
    }
    if members.is_empty() {
        return Err("a quorum queue needs a member".into());
    }
    let define = |members: Vec<String>| {
        crate::channel::replicate::queue(
            vhost,
            name,
            &q.config.arguments,
            None,
            Some(QuorumPlacement {
                group: old.group,
                members,
            }),
        )
    };
    let mut union = old.members.clone();
    union.extend(members.iter().filter(|m| !old.members.contains(m)).cloned());
    if union != old.members {
        meta.replicate(define(union.clone())).await?;
    }
    meta.change_group(old.group, union, members.clone()).await?;
    meta.replicate(define(members)).await
}

/// `add_member`: the queue gets a member on `node`.
pub async fn add_member(
    b: &Arc<Broker>,
    vhost: &str,
    name: &str,
    node: &str,
) -> Result<(), String> {
    let (_, p) = queue(b, vhost, name)?;
    if p.members.iter().any(|m| m == node) {
        return Err(format!(
            "node '{node}' is already a member of queue '{name}'"
        ));
    }
    let mut members = p.members;
    members.push(node.to_string());
    set_members(b, vhost, name, members).await
}

/// `delete_member`: the queue's member on `node` goes.
pub async fn delete_member(
    b: &Arc<Broker>,
    vhost: &str,
    name: &str,
    node: &str,
) -> Result<(), String> {
    let (_, p) = queue(b, vhost, name)?;
    if !p.members.iter().any(|m| m == node) {
        return Err(format!("node '{node}' is not a member of queue '{name}'"));
    }
    let members: Vec<String> = p.members.into_iter().filter(|m| m != node).collect();
    set_members(b, vhost, name, members).await
}

/// What `grow` / `shrink` did per queue: (vhost, queue, error if it failed).
pub type Outcome = Vec<(String, String, Option<String>)>;

/// `grow <node> all|even`: a member on `node` for every quorum queue without one (with
/// `even`, only those with an even number of members).
pub async fn grow(b: &Arc<Broker>, node: &str, even: bool, vhost: Option<&str>) -> Outcome {
    let mut out = Vec::new();
    for (v, q, p) in all(b, vhost) {
        if p.members.iter().any(|m| m == node) || (even && p.members.len() % 2 == 1) {
            continue;
        }
        let r = add_member(b, &v, q.name(), node).await.err();
        out.push((v, q.name().to_string(), r));
    }
    out
}

/// `shrink <node>`: every quorum queue loses its member on `node` (unless it is the
/// last one).
pub async fn shrink(b: &Arc<Broker>, node: &str, vhost: Option<&str>) -> Outcome {
    let mut out = Vec::new();
    for (v, q, p) in all(b, vhost) {
        if !p.members.iter().any(|m| m == node) || p.members.len() < 2 {
            continue;
        }
        let r = delete_member(b, &v, q.name(), node).await.err();
        out.push((v, q.name().to_string(), r));
    }
    out
}

/// `rebalance all`: leaders move from nodes that lead more than their share to members
/// that lead fewer (each move is an election the chosen member stands for). Returns how
/// many moves were asked for.
pub async fn rebalance(b: &Arc<Broker>, vhost: Option<&str>) -> Result<usize, String> {
    let meta = b
        .meta
        .get()
        .ok_or("this node runs without --cluster-nodes")?;
    let queues = all(b, vhost);
    let mut leads: BTreeMap<String, usize> = meta
        .status()
        .members
        .into_iter()
        .map(|m| (m.name, 0))
        .collect();
    let mut leaders = Vec::new();
    for (_, q, p) in &queues {
        let l = q.quorum_leader();
        if let Some(l) = &l {
            *leads.entry(l.clone()).or_default() += 1;
        }
        leaders.push((p.clone(), l));
    }
    let share = queues.len().div_ceil(leads.len().max(1));
    let mut moves = 0;
    for (p, leader) in leaders {
        let Some(leader) = leader else { continue };
        if leads.get(&leader).copied().unwrap_or(0) <= share {
            continue;
        }
        let Some(to) = p
            .members
            .iter()
            .filter(|m| **m != leader)
            .min_by_key(|m| leads.get(*m).copied().unwrap_or(0))
            .cloned()
        else {
            continue;
        };
        if leads.get(&to).copied().unwrap_or(0) + 1 > share {
            continue;
        }
        if meta.elect(p.group, to.clone()).await.is_ok() {
            moves += 1;
            *leads.entry(leader).or_default() -= 1;
            *leads.entry(to).or_default() += 1;
        }
    }
    Ok(moves)
}
