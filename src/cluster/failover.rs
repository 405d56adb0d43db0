//! Fast failover when a leader's process is gone.
//!
//! Raft notices a dead leader by silence: a follower stands for election after the
//! election timeout (0.6–1.2 s here), and the other followers refuse it until their
//! leader lease (openraft 0.9: the election timeout's maximum since they last heard the
//! leader) has run out, so a `kill -9` costs a second or more. But a process that died
//! leaves its port closed: a connection to it is *refused* at once (a paused process or
//! a cut link never refuses; those still wait for the timeouts). When a liveness probe
//! is refused by the node that leads a group this node votes in, every surviving voter
//! stands at once (a candidate's own vote is no longer the dead leader's, so its lease
//! no longer refuses the others), then the first of them by id stands again (the term
//! after theirs), and the others in turn if no leader is known by then: the first whose
//! log is current wins. RabbitMQ fails over as fast, for the same reason: Erlang
//! distribution sees the connection close.

use super::{Member, Nid};
use openraft::{Raft, RaftTypeConfig};
use std::time::Duration;

/// How long the designated voter waits for the others to stand before it stands again
/// (the next one waits twice as long, and so on).
const STAND_AGAIN: Duration = Duration::from_millis(100);

/// This node's place among the voters that stand when `dead` (the leader) is gone: 0
/// stands again first. None when this node does not vote in the group or `dead` is not
/// a voter of it.
pub fn rank(voters: &[Nid], dead: Nid, me: Nid, alive: impl Fn(Nid) -> bool) -> Option<usize> {
    if !voters.contains(&dead) || !voters.contains(&me) {
        return None;
    }
    let mut standing: Vec<Nid> = voters
        .iter()
        .copied()
        .filter(|v| *v != dead && (*v == me || alive(*v)))
        .collect();
    standing.sort_unstable();
    standing.iter().position(|v| *v == me)
}

/// `dead` refused a connection: if it leads `raft`'s group, this node stands now and, by
/// its rank, again a little later while no leader is known.
pub fn leader_gone<C>(raft: &Raft<C>, dead: Nid, me: Nid, alive: impl Fn(Nid) -> bool)
where
    C: RaftTypeConfig<NodeId = Nid, Node = Member>,
{
    let m = raft.metrics().borrow().clone();
    if m.current_leader != Some(dead) {
        return;
    }
    let voters: Vec<Nid> = m.membership_config.membership().voter_ids().collect();
    let Some(rank) = rank(&voters, dead, me, alive) else {
        return;
    };
    let raft = raft.clone();
    tokio::spawn(async move {
        tracing::info!(
            leader = dead,
            rank,
            "the leader's process is gone: standing for election"
        );
        let _ = raft.trigger().elect().await;
        tokio::time::sleep(STAND_AGAIN * (rank as u32 + 1)).await;
        let leader = raft.metrics().borrow().current_leader;
        if leader.is_none() || leader == Some(dead) {
            let _ = raft.trigger().elect().await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survivors_stand_in_id_order() {
        let voters = [30, 10, 20];
        let all = |_| true;
        assert_eq!(rank(&voters, 30, 10, all), Some(0));
        assert_eq!(rank(&voters, 30, 20, all), Some(1));
        assert_eq!(rank(&voters, 10, 20, all), Some(0));
        // Not a voter, or the dead node is not one: nothing to do.
        assert_eq!(rank(&voters, 30, 40, all), None);
        assert_eq!(rank(&voters, 40, 10, all), None);
        // A voter that does not answer either is skipped: the next one goes first.
        assert_eq!(rank(&voters, 30, 20, |v| v != 10), Some(0));
    }
}
