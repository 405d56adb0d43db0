//! The broker's side of the metadata state machine: a committed [`MetaCmd`] applied to
//! this node's registries with the same calls as an AMQP method or a management request.

use super::handle::{BoxFut, MetaCmd};
use super::state_machine::Apply;
use crate::broker::{definitions, Broker};
use crate::store::definitions::Definitions;
use std::sync::{Arc, Weak};

/// Applies commands to a broker (held weakly: the broker owns the cluster node).
pub struct BrokerApply(pub Weak<Broker>);

impl Apply for BrokerApply {
    fn apply(&self, cmd: MetaCmd) -> BoxFut<Result<(), String>> {
        let Some(b) = self.0.upgrade() else {
            return Box::pin(async { Ok(()) });
        };
        match cmd {
            MetaCmd::Http { method, path, body } => {
                Box::pin(async move { crate::mgmt::apply(b, &method, &path, body).await })
            }
            MetaCmd::Import(d) => {
                let placed: Vec<(String, String)> = d
                    .queues
                    .iter()
                    .filter(|q| q.quorum.is_some())
                    .map(|q| (q.vhost.clone(), q.name.clone()))
                    .collect();
                let r = apply_now(&b, MetaCmd::Import(d));
                Box::pin(async move {
                    start_groups(&b, placed).await;
                    r
                })
            }
            other => {
                let r = apply_now(&b, other);
                Box::pin(async move { r })
            }
        }
    }

    fn persist(&self) -> std::io::Result<()> {
        match self.0.upgrade() {
            Some(b) => crate::store::definitions::save_now(&*b),
            None => Ok(()),
        }
    }

    fn export(&self) -> Definitions {
        match self.0.upgrade() {
            Some(b) => definitions::snapshot(&b),
            None => Definitions::default(),
        }
    }

    fn install(&self, d: &Definitions) {
        let Some(b) = self.0.upgrade() else { return };
        for e in definitions::import(&b, d) {
            tracing::warn!(error = %e, "snapshot: not imported");
        }
        reconcile(&b, d);
    }

    fn merge(&self, d: &Definitions) {
        if let Some(b) = self.0.upgrade() {
            for e in definitions::import(&b, d) {
                tracing::warn!(error = %e, "snapshot: not imported");
            }
        }
    }
}

fn apply_now(b: &Arc<Broker>, cmd: MetaCmd) -> Result<(), String> {
    let vhost = |name: &str| b.vhost(name).ok_or_else(|| format!("no vhost '{name}'"));
    match cmd {
        MetaCmd::Import(d) => {
            let errors = definitions::import(b, &d);
            if errors.is_empty() {
                Ok(())
            } else {
                Err(errors.join("; "))
            }
        }
        MetaCmd::DeleteExchange { vhost: v, name } => vhost(&v)?
            .delete_exchange(&name, false)
            .map_err(|e| e.text.to_string()),
        MetaCmd::DeleteQueue { vhost: v, name } => {
            let vh = vhost(&v)?;
            // A proxy goes without asking its home: the home applies the same entry.
            if let Some(q) = vh.queue(&name).filter(|q| q.is_remote()) {
                vh.remove_queue(&q);
                return Ok(());
            }
            vh.delete_queue(&name, false, false, 0)
                .map(|_| ())
                .map_err(|e| e.text.to_string())
        }
        MetaCmd::Unbind(bd) => {
            let vh = vhost(&bd.vhost)?;
            let args = crate::store::definitions::json_to_table(&bd.arguments);
            if bd.destination_type == "exchange" {
                vh.unbind_exchange(&bd.destination, &bd.source, &bd.routing_key, &args)
            } else {
                vh.unbind_queue(&bd.destination, &bd.source, &bd.routing_key, &args, 0)
            }
            .map_err(|e| e.text.to_string())
        }
        MetaCmd::Stream { defs, placement } => {
            if let Some(d) = defs {
                let errors = definitions::import(b, &d);
                if !errors.is_empty() {
                    return Err(errors.join("; "));
                }
            }
            let q = vhost(&placement.vhost)?
                .queue(&placement.name)
                .ok_or_else(|| format!("no stream '{}'", placement.name))?;
            if let Some(r) = b.streams.get() {
                r.place(q, placement);
            }
            Ok(())
        }
        MetaCmd::Http { .. } => Err("management request applied elsewhere".into()),
    }
}

/// Starts this node's members of the groups of these quorum queues (those it is a
/// member of; the others stay definitions here), and stops those it is no longer a
/// member of.
pub async fn start_groups(b: &Arc<Broker>, queues: Vec<(String, String)>) {
    let Some(meta) = b.meta.get() else { return };
    let me = meta.status().node;
    for (vhost, name) in queues {
        let Some(q) = b.vhost(&vhost).and_then(|v| v.queue(&name)) else {
            continue;
        };
        let Some(p) = q.placement() else { continue };
        match (p.members.contains(&me), q.group().is_some()) {
            (true, false) => {
                if let Some(g) = meta.start_group(p, q.replica()).await {
                    q.set_group(Some(g));
                }
            }
            (false, true) => q.set_group(None),
            _ => {}
        }
    }
}

/// At start: every replicated quorum queue restored from the definitions.
pub async fn start_all_groups(b: &Arc<Broker>) {
    let mut placed = Vec::new();
    for v in b.vhosts() {
        for q in v.queues() {
            if q.is_replicated() {
                placed.push((v.name.clone(), q.name().to_string()));
            }
        }
    }
    start_groups(b, placed).await;
}

/// After a snapshot from the leader: durable exchanges and queues this node has but the
/// snapshot does not are deleted (they were deleted while this node was away).
fn reconcile(b: &Arc<Broker>, d: &Definitions) {
    for vhost in b.vhosts() {
        for x in vhost.exchanges() {
            let builtin = x.name.is_empty() || x.name.starts_with("amq.");
            let kept = d
                .exchanges
                .iter()
                .any(|e| e.vhost == vhost.name && *e.name == *x.name);
            if x.durable && !builtin && !kept {
                let _ = vhost.delete_exchange(&x.name, false);
            }
        }
        for q in vhost.queues() {
            let replicated = q.config.durable && q.config.exclusive_owner.is_none();
            let kept = d
                .queues
                .iter()
                .any(|e| e.vhost == vhost.name && e.name == q.name());
            if replicated && !kept {
                vhost.remove_queue(&q);
            }
        }
    }
}
