//! The machine's state as a plain value ([`Image`]): what a replicated quorum queue's
//! snapshot holds (`rabbit_fifo`'s state at a release cursor). Taken between two
//! commands, it gives back a machine that takes the same decisions as the original
//! ([`Fifo::from_image`]); the messages are mapped on the way out and in, so the image
//! can carry them in their wire form.
//!
//! The settings ([`Config`]) are not in it: they come from the queue's arguments and
//! policy on each node.

use super::{ConsumerKey, ConsumerSpec, ConsumerState, Entry, Fifo, FifoMsg, MsgId};
use crate::queue::deadletter::Reason;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// A message in an image, with its marks and place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageEntry<W> {
    pub id: MsgId,
    pub msg: W,
    pub redelivered: bool,
    pub delivery_count: u32,
    pub expires_at: Option<u64>,
    pub pos: u64,
}

/// An attached consumer in an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConsumer {
    pub key: ConsumerKey,
    pub priority: i64,
    pub prefetch: u32,
    pub no_ack: bool,
    pub out: u32,
    pub credit: u32,
}

/// The whole state of a [`Fifo`] but its settings. Checked-out and held messages are in
/// id order, so two equal machines give equal images.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image<W> {
    pub ready: Vec<ImageEntry<W>>,
    pub checked_out: Vec<(ConsumerKey, ImageEntry<W>)>,
    pub consumers: Vec<ImageConsumer>,
    /// Held dead letters with their reason (0 rejected, 1 expired, 2 maxlen, 3 delivery
    /// limit).
    pub dlx_held: Vec<(ImageEntry<W>, u8)>,
    pub next_id: MsgId,
    pub next_pos: u64,
}

impl<W> Image<W> {
    /// The same image with each message mapped by `f` (to borrow them for encoding).
    pub fn map<'a, V>(&'a self, f: impl Fn(&'a W) -> V) -> Image<V> {
        let e = |e: &'a ImageEntry<W>| ImageEntry {
            id: e.id,
            msg: f(&e.msg),
            redelivered: e.redelivered,
            delivery_count: e.delivery_count,
            expires_at: e.expires_at,
            pos: e.pos,
        };
        Image {
            ready: self.ready.iter().map(e).collect(),
            checked_out: self.checked_out.iter().map(|(k, x)| (*k, e(x))).collect(),
            consumers: self.consumers.clone(),
            dlx_held: self.dlx_held.iter().map(|(x, r)| (e(x), *r)).collect(),
            next_id: self.next_id,
            next_pos: self.next_pos,
        }
    }
}

fn reason_code(r: Reason) -> u8 {
    match r {
        Reason::Rejected => 0,
        Reason::Expired => 1,
        Reason::Maxlen => 2,
        Reason::DeliveryLimit => 3,
    }
}

fn reason_of(c: u8) -> Reason {
    match c {
        0 => Reason::Rejected,
        1 => Reason::Expired,
        2 => Reason::Maxlen,
        _ => Reason::DeliveryLimit,
    }
}

fn out<M, W>(e: &Entry<M>, f: &impl Fn(&M) -> W) -> ImageEntry<W> {
    ImageEntry {
        id: e.id,
        msg: f(&e.msg),
        redelivered: e.redelivered,
        delivery_count: e.delivery_count,
        expires_at: e.expires_at,
        pos: e.pos,
    }
}

fn back<M, W>(e: ImageEntry<W>, f: &mut impl FnMut(W) -> M) -> Entry<M> {
    Entry {
        id: e.id,
        msg: f(e.msg),
        redelivered: e.redelivered,
        delivery_count: e.delivery_count,
        expires_at: e.expires_at,
        pos: e.pos,
    }
}

impl<M: FifoMsg> Fifo<M> {
    /// The state as an image, each message mapped by `f`.
    pub fn image<W>(&self, f: impl Fn(&M) -> W) -> Image<W> {
        let mut checked_out: Vec<(ConsumerKey, ImageEntry<W>)> = self
            .checked_out
            .values()
            .map(|(k, e)| (*k, out(e, &f)))
            .collect();
        checked_out.sort_unstable_by_key(|(_, e)| e.id);
        Image {
            ready: self.ready.values().map(|e| out(e, &f)).collect(),
            checked_out,
            consumers: self
                .consumers
                .iter()
                .map(|c| ImageConsumer {
                    key: c.key,
                    priority: c.spec.priority,
                    prefetch: c.spec.prefetch,
                    no_ack: c.spec.no_ack,
                    out: c.out,
                    credit: c.credit,
                })
                .collect(),
            dlx_held: self
                .dlx_held
                .values()
                .map(|(e, r)| (out(e, &f), reason_code(*r)))
                .collect(),
            next_id: self.next_id,
            next_pos: self.next_pos,
        }
    }

    /// A machine in the state of `img` under `config`, each message mapped by `f`.
    pub fn from_image<W>(config: super::Config, img: Image<W>, mut f: impl FnMut(W) -> M) -> Self {
        let mut fifo = Fifo::new(config);
        for e in img.ready {
            let e = back(e, &mut f);
            fifo.push_ready(e);
        }
        fifo.checked_out = img
            .checked_out
            .into_iter()
            .map(|(k, e)| (e.id, (k, back(e, &mut f))))
            .collect::<HashMap<_, _>>();
        fifo.consumers = img
            .consumers
            .into_iter()
            .map(|c| ConsumerState {
                key: c.key,
                spec: ConsumerSpec {
                    priority: c.priority,
                    prefetch: c.prefetch,
                    no_ack: c.no_ack,
                },
                out: c.out,
                credit: c.credit,
            })
            .collect();
        fifo.dlx_held = img
            .dlx_held
            .into_iter()
            .map(|(e, r)| (e.id, (back(e, &mut f), reason_of(r))))
            .collect::<BTreeMap<_, _>>();
        fifo.next_id = img.next_id;
        fifo.next_pos = img.next_pos;
        fifo
    }

    /// Messages checked out to the consumers `pick` chooses, in id order.
    pub fn checked_out_to(
        &self,
        pick: impl Fn(ConsumerKey) -> bool,
    ) -> Vec<(ConsumerKey, Entry<M>)> {
        let mut v: Vec<(ConsumerKey, Entry<M>)> = self
            .checked_out
            .values()
            .filter(|(k, _)| pick(*k))
            .cloned()
            .collect();
        v.sort_unstable_by_key(|(_, e)| e.id);
        v
    }
}
