//! A queue's timer task: message TTL, queue expiry (`x-expires`) and the retry of held
//! at-least-once dead letters, one small task per queue that needs one.

use super::deadletter::Reason;
use super::Queue;
use super::State;
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Queue {
    /// Starts the timer task if it is not running (needs a tokio runtime; queues made
    /// outside one, in unit tests, simply expire lazily).
    pub(super) fn ensure_timer(self: &Arc<Self>, st: &mut State) {
        if st.timer_running || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        st.timer_running = true;
        let weak = Arc::downgrade(self);
        let notify = self.timer.clone();
        tokio::spawn(async move {
            loop {
                let notified = notify.notified();
                let next = {
                    let Some(q) = weak.upgrade() else { return };
                    if q.is_deleted() {
                        return;
                    }
                    q.on_timer()
                };
                match next {
                    Some(t) => {
                        tokio::select! {
                            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(t)) => {}
                            _ = notified => {}
                        }
                    }
                    None => notified.await,
                }
            }
        });
    }

    /// Expires due head messages and an unused queue; returns the next deadline.
    fn on_timer(self: &Arc<Self>) -> Option<Instant> {
        self.timer_runs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let now = Instant::now();
        let mut dead = Vec::new();
        let quorum_next = if self.is_quorum() {
            self.q_on_timer(now)
        } else {
            None
        };
        let (next, expire_queue) = {
            let mut st = self.state.lock();
            st.ready.pop_expired(now, &mut dead);
            let mut next = st.ready.next_expiry().into_iter().chain(quorum_next).min();
            let mut expire_queue = false;
            if let Some(ms) = st.eff.expires {
                if st.consumers.is_empty() {
                    let due = st.last_used + Duration::from_millis(ms);
                    if due <= now {
                        expire_queue = true;
                    } else {
                        next = Some(next.map_or(due, |n| n.min(due)));
                    }
                }
            }
            st.timer_deadline = next;
            (next, expire_queue)
        };
        self.dead_letter(dead, Reason::Expired);
        if expire_queue {
            if let Some(v) = self.vhost.upgrade() {
                tracing::debug!(queue = %self.name(), "queue expired (x-expires)");
                v.remove_queue(self);
            }
            return None;
        }
        next
    }
}
