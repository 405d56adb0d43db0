//! Policies applied to a running queue (RabbitMQ's `process_args_policy`).

use super::args::{Overflow, QueueArgs};
use super::deadletter::Reason;
use super::{stream, Queue};
use std::sync::Arc;
use std::time::Instant;

impl Queue {
    /// Applies the queue's current policy (the best match in `policies`, merged with the
    /// best operator policy, looked up under
    /// the queue's lock so concurrent policy changes cannot leave a stale one applied), as
    /// RabbitMQ's `process_args_policy`: the settings change at once, a lower length limit
    /// drops (dead-letters) the head, and an x-expires idle timer restarts from now.
    /// Messages already queued keep the expiry they were given when enqueued, as in
    /// RabbitMQ, where a message's expiry is fixed at publish.
    pub fn apply_policy(self: &Arc<Self>, policies: &crate::policy::Policies) {
        let mut dropped = Vec::new();
        let mut expired = Vec::new();
        {
            let mut st = self.state.lock();
            if self.is_deleted() {
                return;
            }
            // The user policy merged with the operator policy (the lower cap wins).
            let e = policies.effective(&self.config.vhost, self.name(), "queues");
            if e.definition == st.policy {
                return;
            }
            st.policy = e.definition;
            st.eff = self.args.with_policy(st.policy.as_ref());
            if let Some(s) = self.stream() {
                // Retention from the policy wins over the arguments (see `with_policy`).
                if let Some(settings) = stream::settings_from_args(&st.eff) {
                    s.set_settings(settings);
                }
                return;
            }
            if st.eff.expires.is_some() {
                st.last_used = Instant::now();
                self.ensure_timer(&mut st);
            }
            if st.quorum.is_some() {
                let mut after = Default::default();
                self.q_apply_config(&mut st, &mut after);
                self.timer.notify_one();
                drop(st);
                self.q_finish(after);
                return;
            }
            self.timer.notify_one();
            while st.eff.overflow == Overflow::DropHead && Self::over_limit(&st) {
                match st.ready.pop_front() {
                    Some(m) => dropped.push(m),
                    None => break,
                }
            }
            st.ready.pop_expired(Instant::now(), &mut expired);
        }
        self.dead_letter(dropped, Reason::Maxlen);
        self.dead_letter(expired, Reason::Expired);
    }

    /// The effective dead-letter exchange and routing key, if there is a dead-letter
    /// exchange.
    pub(crate) fn dead_letter_target(&self) -> Option<(String, Option<String>)> {
        let st = self.state.lock();
        let x = st.eff.dead_letter_exchange.clone()?;
        Some((x, st.eff.dead_letter_routing_key.clone()))
    }

    /// The effective settings (declared arguments merged with the policy).
    pub fn effective_args(&self) -> QueueArgs {
        self.state.lock().eff.clone()
    }
}
