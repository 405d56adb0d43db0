use super::*;
use proptest::prelude::*;

/// A test message: a name, a size and an optional expiration.
#[derive(Debug, Clone, PartialEq, Eq)]
struct M(u32, usize, Option<u64>);

impl FifoMsg for M {
    fn size(&self) -> usize {
        self.1
    }
    fn expiration_ms(&self) -> Option<u64> {
        self.2
    }
}

fn m(n: u32) -> M {
    M(n, 10, None)
}

fn enq(n: u32) -> Command<M> {
    Command::Enqueue {
        msg: m(n),
        enqueued_at: 0,
        redelivered: false,
        delivery_count: 0,
    }
}

fn spec(prefetch: u32) -> ConsumerSpec {
    ConsumerSpec {
        priority: 0,
        prefetch,
        no_ack: false,
    }
}

/// Applies at time 0 and returns the effects.
fn run(f: &mut Fifo<M>, cmd: Command<M>) -> Vec<Effect<M>> {
    let mut fx = Vec::new();
    f.apply(0, cmd, &mut fx);
    fx
}

/// (consumer, message name, delivery id) of every delivery in `fx`.
fn delivered(fx: &[Effect<M>]) -> Vec<(ConsumerKey, u32, MsgId)> {
    let mut out = Vec::new();
    for e in fx {
        if let Effect::Deliver { key, msgs } = e {
            out.extend(msgs.iter().map(|e| (*key, e.msg.0, e.id)));
        }
    }
    out
}

fn dead(fx: &[Effect<M>]) -> Vec<(Reason, u32, u32)> {
    let mut out = Vec::new();
    for e in fx {
        if let Effect::DeadLetter { reason, msgs, .. } = e {
            out.extend(msgs.iter().map(|e| (*reason, e.msg.0, e.delivery_count)));
        }
    }
    out
}

fn ready_names(f: &Fifo<M>) -> Vec<u32> {
    f.ready.values().map(|e| e.msg.0).collect()
}

#[test]
fn messages_go_to_a_consumer_in_order_up_to_its_prefetch() {
    let mut f = Fifo::new(Config::default());
    for n in 1..=5 {
        assert!(run(&mut f, enq(n)).is_empty());
    }
    let fx = run(
        &mut f,
        Command::Checkout {
            key: 1,
            spec: spec(3),
        },
    );
    let d = delivered(&fx);
    assert_eq!(d.iter().map(|d| d.1).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(f.ready_len(), 2);
    assert_eq!(f.checked_out_len(), 3);
    // Settling one frees one unit of credit: the next message goes.
    let fx = run(
        &mut f,
        Command::Settle {
            key: 1,
            ids: vec![d[0].2],
        },
    );
    assert_eq!(
        delivered(&fx).iter().map(|d| d.1).collect::<Vec<_>>(),
        vec![4]
    );
    assert!(fx.contains(&Effect::Release { msgs: vec![m(1)] }));
}

#[test]
fn consumers_of_equal_priority_take_turns_and_higher_priority_goes_first() {
    let mut f = Fifo::new(Config::default());
    run(
        &mut f,
        Command::Checkout {
            key: 1,
            spec: spec(0),
        },
    );
    run(
        &mut f,
        Command::Checkout {
            key: 2,
            spec: spec(0),
        },
    );
    let mut who = Vec::new();
    for n in 1..=4 {
        who.extend(delivered(&run(&mut f, enq(n))).iter().map(|d| d.0));
    }
    assert_eq!(who, vec![1, 2, 1, 2]);
    let high = ConsumerSpec {
        priority: 5,
        prefetch: 1,
        no_ack: false,
    };
    run(&mut f, Command::Checkout { key: 3, spec: high });
    // The high-priority consumer takes one (its prefetch), then the others again.
    let a = delivered(&run(&mut f, enq(5)));
    let b = delivered(&run(&mut f, enq(6)));
    assert_eq!((a[0].0, b[0].0), (3, 1));
}

#[test]
fn a_return_counts_and_goes_to_the_back_without_a_limit() {
    let mut f = Fifo::new(Config::default());
    run(&mut f, enq(1));
    run(&mut f, enq(2));
    let d = delivered(&run(
        &mut f,
        Command::Checkout {
            key: 1,
            spec: spec(1),
        },
    ));
    assert_eq!(d[0].1, 1);
    let fx = run(
        &mut f,
        Command::Return {
            key: 1,
            ids: vec![d[0].2],
            counted: true,
        },
    );
    // 2 is now ahead of the returned 1.
    let again = delivered(&fx);
    assert_eq!(again[0].1, 2);
    assert_eq!(ready_names(&f), vec![1]);
    let e = f.ready.values().next().unwrap();
    assert!(e.redelivered);
    assert_eq!(e.delivery_count, 1);
}

#[test]
fn with_a_delivery_limit_a_return_keeps_its_place_until_the_limit_is_passed() {
    let mut f = Fifo::new(Config {
        delivery_limit: Some(2),
        ..Config::default()
    });
    run(&mut f, enq(1));
    run(&mut f, enq(2));
    run(
        &mut f,
        Command::Checkout {
            key: 1,
            spec: spec(1),
        },
    );
    for round in 1..=3u32 {
        // The head (message 1) is out; return it.
        let id = f
            .checked_out
            .iter()
            .find(|(_, (_, e))| e.msg.0 == 1)
            .map(|(id, _)| *id)
            .unwrap();
        let fx = run(
            &mut f,
            Command::Return {
                key: 1,
                ids: vec![id],
                counted: true,
            },
        );
        if round < 3 {
            // Back in place: delivered again at once, ahead of 2.
            assert_eq!(delivered(&fx)[0].1, 1);
            assert!(dead(&fx).is_empty());
        } else {
            assert_eq!(dead(&fx), vec![(Reason::DeliveryLimit, 1, 3)]);
            assert_eq!(delivered(&fx)[0].1, 2);
        }
    }
}

#[test]
fn an_uncounted_return_changes_nothing_about_the_message() {
    let mut f = Fifo::new(Config::default());
    run(&mut f, enq(1));
    run(&mut f, enq(2));
    let d = delivered(&run(
        &mut f,
        Command::Checkout {
            key: 1,
            spec: spec(1),
        },
    ));
    run(
        &mut f,
        Command::Cancel {
            key: 1,
            dispatch: true,
        },
    );
    run(
        &mut f,
        Command::Return {
            key: 1,
            ids: vec![d[0].2],
            counted: false,
        },
    );
    assert_eq!(ready_names(&f), vec![1, 2]);
    let e = f.ready.values().next().unwrap();
    assert!(!e.redelivered);
    assert_eq!(e.delivery_count, 0);
}

#[test]
fn discard_dead_letters_with_reason_rejected() {
    let mut f = Fifo::new(Config::default());
    run(&mut f, enq(1));
    let d = delivered(&run(
        &mut f,
        Command::Checkout {
            key: 1,
            spec: spec(0),
        },
    ));
    let fx = run(
        &mut f,
        Command::Discard {
            key: 1,
            ids: vec![d[0].2],
        },
    );
    assert_eq!(dead(&fx), vec![(Reason::Rejected, 1, 0)]);
    assert_eq!(f.checked_out_len(), 0);
}

#[test]
fn at_least_once_holds_dead_letters_until_settled() {
    let mut f = Fifo::new(Config {
        at_least_once: true,
        ..Config::default()
    });
    run(&mut f, enq(1));
    let d = delivered(&run(
        &mut f,
        Command::Checkout {
            key: 1,
            spec: spec(0),
        },
    ));
    let fx = run(
        &mut f,
        Command::Discard {
            key: 1,
            ids: vec![d[0].2],
        },
    );
    assert!(matches!(fx[0], Effect::DeadLetter { held: true, .. }));
    assert_eq!(f.dlx_len(), 1);
    let fx = run(&mut f, Command::DlxRetry);
    assert_eq!(dead(&fx), vec![(Reason::Rejected, 1, 0)]);
    let fx = run(&mut f, Command::DlxSettle { ids: vec![d[0].2] });
    assert_eq!(fx, vec![Effect::Release { msgs: vec![m(1)] }]);
    assert_eq!(f.dlx_len(), 0);
}

#[test]
fn single_active_consumer_delivers_to_the_first_until_it_cancels() {
    let mut f = Fifo::new(Config {
        single_active_consumer: true,
        ..Config::default()
    });
    run(
        &mut f,
        Command::Checkout {
            key: 1,
            spec: spec(1),
        },
    );
    run(
        &mut f,
        Command::Checkout {
            key: 2,
            spec: spec(5),
        },
    );
    let a = delivered(&run(&mut f, enq(1)));
    // Consumer 1 has no credit left; 2 is not active, so 2 waits.
    let b = delivered(&run(&mut f, enq(2)));
    assert_eq!(a, vec![(1, 1, a[0].2)]);
    assert!(b.is_empty());
    // 1 goes (without dispatch), returns its message, then 2 takes both in order.
    run(
        &mut f,
        Command::Cancel {
            key: 1,
            dispatch: false,
        },
    );
    let fx = run(
        &mut f,
        Command::Return {
            key: 1,
            ids: vec![a[0].2],
            counted: true,
        },
    );
    let names: Vec<(ConsumerKey, u32)> = delivered(&fx).iter().map(|d| (d.0, d.1)).collect();
    assert_eq!(names, vec![(2, 2), (2, 1)]);
}

#[test]
fn length_limits_drop_the_head_or_reject_the_publish() {
    let mut f = Fifo::new(Config {
        max_length: Some(2),
        ..Config::default()
    });
    run(&mut f, enq(1));
    run(&mut f, enq(2));
    let fx = run(&mut f, enq(3));
    assert_eq!(dead(&fx), vec![(Reason::Maxlen, 1, 0)]);
    assert_eq!(ready_names(&f), vec![2, 3]);

    let mut f = Fifo::new(Config {
        max_length_bytes: Some(20),
        overflow: Overflow::RejectPublish,
        ..Config::default()
    });
    let mut fx = Vec::new();
    assert_eq!(f.apply(0, enq(1), &mut fx), Reply::Ok);
    assert_eq!(f.apply(0, enq(2), &mut fx), Reply::Ok);
    assert_eq!(f.apply(0, enq(3), &mut fx), Reply::Rejected);
    assert_eq!(ready_names(&f), vec![1, 2]);
}

#[test]
fn ttl_expires_the_head_on_tick_and_ttl_zero_goes_to_a_waiting_consumer() {
    let mut f = Fifo::new(Config {
        message_ttl: Some(100),
        ..Config::default()
    });
    let mut fx = Vec::new();
    f.apply(
        0,
        Command::Enqueue {
            msg: m(1),
            enqueued_at: 0,
            redelivered: false,
            delivery_count: 0,
        },
        &mut fx,
    );
    assert_eq!(f.next_expiry(), Some(100));
    f.apply(99, Command::Tick, &mut fx);
    assert!(dead(&fx).is_empty());
    f.apply(100, Command::Tick, &mut fx);
    assert_eq!(dead(&fx), vec![(Reason::Expired, 1, 0)]);

    // Per-message expiration 0: delivered if a consumer waits, else dropped.
    let mut f = Fifo::new(Config::default());
    let mut fx = Vec::new();
    let zero = |n| Command::Enqueue {
        msg: M(n, 1, Some(0)),
        enqueued_at: 50,
        redelivered: false,
        delivery_count: 0,
    };
    f.apply(50, zero(1), &mut fx);
    assert_eq!(dead(&fx), vec![(Reason::Expired, 1, 0)]);
    fx.clear();
    f.apply(
        50,
        Command::Checkout {
            key: 1,
            spec: spec(0),
        },
        &mut fx,
    );
    f.apply(50, zero(2), &mut fx);
    assert_eq!(delivered(&fx).len(), 1);
    assert!(dead(&fx).is_empty());
}

#[test]
fn no_ack_consumers_use_credit_topped_up_by_the_caller() {
    let mut f = Fifo::new(Config::default());
    let no_ack = ConsumerSpec {
        priority: 0,
        prefetch: 2,
        no_ack: true,
    };
    run(
        &mut f,
        Command::Checkout {
            key: 9,
            spec: no_ack,
        },
    );
    let mut fx = Vec::new();
    for n in 1..=3 {
        fx.extend(run(&mut f, enq(n)));
    }
    assert_eq!(delivered(&fx).len(), 2);
    assert_eq!(f.checked_out_len(), 0);
    assert!(f.out_of_credit(9));
    let fx = run(&mut f, Command::Credit { key: 9, credit: 2 });
    assert_eq!(
        delivered(&fx).iter().map(|d| d.1).collect::<Vec<_>>(),
        vec![3]
    );
    assert!(fx.contains(&Effect::Release { msgs: vec![m(3)] }));
}

#[test]
fn dequeue_checks_out_under_the_get_key_and_purge_keeps_checked_out_messages() {
    let mut f = Fifo::new(Config::default());
    run(&mut f, enq(1));
    run(&mut f, enq(2));
    run(&mut f, enq(3));
    let mut fx = Vec::new();
    let Reply::Dequeued(Some((e, left))) = f.apply(0, Command::Dequeue { no_ack: false }, &mut fx)
    else {
        panic!("nothing dequeued");
    };
    assert_eq!((e.msg.0, left), (1, 2));
    assert_eq!(f.checked_out_len(), 1);
    assert_eq!(f.apply(0, Command::Purge, &mut fx), Reply::Purged(2));
    assert_eq!(f.checked_out_len(), 1);
    // Returned after the purge: ready again.
    run(
        &mut f,
        Command::Return {
            key: GET_KEY,
            ids: vec![e.id],
            counted: true,
        },
    );
    assert_eq!(ready_names(&f), vec![1]);
}

#[test]
fn a_lower_limit_from_a_new_config_drops_the_head() {
    let mut f = Fifo::new(Config::default());
    for n in 1..=4 {
        run(&mut f, enq(n));
    }
    let fx = run(
        &mut f,
        Command::SetConfig(Config {
            max_length: Some(1),
            ..Config::default()
        }),
    );
    assert_eq!(dead(&fx).len(), 3);
    assert_eq!(ready_names(&f), vec![4]);
}

/// A random command over a small set of consumers and the ids the machine has handed out.
fn command() -> impl Strategy<Value = (u8, u8, u8, bool)> {
    (0u8..10, 0u8..4, 0u8..16, any::<bool>())
}

proptest! {
    /// Whatever the commands: every message is in exactly one place (ready, checked out,
    /// held) or was released / dead-lettered exactly once; no consumer holds more than its
    /// prefetch; replaying the same commands gives the same effects (determinism), also on
    /// a machine rebuilt from an image of the other at step `cut` (a snapshot).
    #[test]
    fn every_message_is_accounted_for_once(
        cmds in proptest::collection::vec(command(), 1..120),
        cut in 0usize..120,
        limit in proptest::option::of(0u64..3),
        at_least_once in any::<bool>(),
    ) {
        let config = Config {
            delivery_limit: limit,
            max_length: Some(20),
            at_least_once,
            ..Config::default()
        };
        let mut a = Fifo::new(config.clone());
        let mut b = Fifo::new(config);
        let mut enqueued = 0u32;
        let mut gone: HashMap<u32, u32> = HashMap::new();
        let mut delivered_ids: Vec<MsgId> = Vec::new();
        let mut epoch = [0u64; 4];
        for (i, (kind, who, pick, flag)) in cmds.into_iter().enumerate() {
            let now = i as u64;
            if i == cut {
                let img = b.image(M::clone);
                b = Fifo::from_image(b.config().clone(), img.clone(), |m| m);
                prop_assert_eq!(b.image(M::clone), img);
            }
            // A key is never reused after its consumer cancelled (as the driver's are not).
            let key = u64::from(who) + 1 + 10 * epoch[who as usize];
            if kind == 4 {
                epoch[who as usize] += 1;
            }
            let pick_id = |ids: &[MsgId]| ids.get(pick as usize % ids.len().max(1)).copied();
            let cmd = match kind {
                0..=2 => {
                    enqueued += 1;
                    Command::Enqueue { msg: M(enqueued, 1, None), enqueued_at: now, redelivered: false, delivery_count: 0 }
                }
                3 => Command::Checkout { key, spec: ConsumerSpec { priority: i64::from(who % 2), prefetch: u32::from(pick % 4), no_ack: false } },
                4 => Command::Cancel { key, dispatch: flag },
                // Mostly from the holder; otherwise from `key`, maybe not the holder (a
                // stale settlement, ignored).
                5..=7 => {
                    let id = pick_id(&delivered_ids);
                    let holder = id.and_then(|id| a.holder(id)).map(|(k, _)| k);
                    let key = if pick % 3 == 0 { key } else { holder.unwrap_or(key) };
                    let ids: Vec<MsgId> = id.into_iter().collect();
                    match kind {
                        5 => Command::Settle { key, ids },
                        6 => Command::Return { key, ids, counted: flag },
                        _ => Command::Discard { key, ids },
                    }
                }
                8 => Command::Dequeue { no_ack: flag },
                _ => {
                    let held: Vec<MsgId> = a.dlx_held.keys().copied().collect();
                    if flag { Command::DlxSettle { ids: pick_id(&held).into_iter().collect() } } else { Command::Purge }
                }
            };
            let mut fa = Vec::new();
            let mut fb = Vec::new();
            let ra = a.apply(now, cmd.clone(), &mut fa);
            let rb = b.apply(now, cmd, &mut fb);
            prop_assert_eq!(&ra, &rb);
            prop_assert_eq!(&fa, &fb);
            if let Reply::Dequeued(Some((e, _))) = &ra {
                if !flag { delivered_ids.push(e.id); }
            }
            for e in &fa {
                match e {
                    Effect::Deliver { msgs, .. } => delivered_ids.extend(msgs.iter().map(|e| e.id)),
                    Effect::Release { msgs } => for msg in msgs { *gone.entry(msg.0).or_default() += 1 },
                    Effect::DeadLetter { msgs, held: false, .. } => for e in msgs { *gone.entry(e.msg.0).or_default() += 1 },
                    Effect::DeadLetter { held: true, .. } => {}
                }
            }
            for c in &a.consumers {
                let out = a.checked_out.values().filter(|(k, _)| *k == c.key).count() as u32;
                prop_assert_eq!(out, c.out);
            }
            for (id, (k, _)) in &a.checked_out {
                prop_assert!(*k == GET_KEY || a.consumers.iter().all(|c| c.key != *k) || delivered_ids.contains(id));
            }
            let mut seen: HashMap<u32, u32> = gone.clone();
            for e in a.ready.values() { *seen.entry(e.msg.0).or_default() += 1 }
            for (_, e) in a.checked_out.values() { *seen.entry(e.msg.0).or_default() += 1 }
            for (e, _) in a.dlx_held.values() { *seen.entry(e.msg.0).or_default() += 1 }
            prop_assert_eq!(seen.len() as u32, enqueued);
            prop_assert!(seen.values().all(|n| *n == 1), "a message counted twice: {:?}", seen);
            prop_assert_eq!(a.ready_bytes(), a.ready.len());
            prop_assert_eq!(b.ready_bytes(), a.ready_bytes());
        }
        prop_assert_eq!(a.image(M::clone), b.image(M::clone));
    }
}

#[test]
fn down_returns_what_a_nodes_old_consumers_held_and_keeps_other_consumers() {
    use crate::queue::quorum::wire::consumer_key;
    let mut f = Fifo::new(Config::default());
    for n in 1..=4 {
        run(&mut f, enq(n));
    }
    let old = consumer_key(7, 1, 1);
    let new = consumer_key(7, 2, 2);
    let other = consumer_key(9, 1, 3);
    let d_old = delivered(&run(
        &mut f,
        Command::Checkout {
            key: old,
            spec: spec(2),
        },
    ));
    let d_other = delivered(&run(
        &mut f,
        Command::Checkout {
            key: other,
            spec: spec(1),
        },
    ));
    assert_eq!((d_old.len(), d_other.len()), (2, 1));
    run(
        &mut f,
        Command::Checkout {
            key: new,
            spec: spec(0),
        },
    );
    // The new incarnation took the fourth message; the old one's two come back to it,
    // marked redelivered, and the other node's consumer keeps its message.
    let fx = run(
        &mut f,
        Command::Down {
            node: 7,
            keep: Some(2),
        },
    );
    let d = delivered(&fx);
    assert_eq!(
        d.iter().map(|d| (d.0, d.1)).collect::<Vec<_>>(),
        [(new, 1), (new, 2)]
    );
    assert!(fx.iter().all(|e| match e {
        Effect::Deliver { msgs, .. } => msgs.iter().all(|m| m.redelivered),
        _ => true,
    }));
    assert_eq!(f.consumer_count(), 2);
    assert_eq!(f.checked_out_len(), 4);
    // The whole node down: everything its consumers held is ready again.
    run(
        &mut f,
        Command::Down {
            node: 7,
            keep: None,
        },
    );
    assert_eq!(f.consumer_count(), 1);
    assert_eq!(f.checked_out_len(), 1);
    assert_eq!(ready_names(&f), [1, 2, 4]);
}

/// A replicated get checks the head out to its owner (settled: it leaves at once), says
/// how many stay ready, answers nothing on an empty queue, and what an owner of a node
/// that goes down holds comes back redelivered.
#[test]
fn a_dequeue_for_an_owner_is_returned_when_its_node_goes_down() {
    use crate::queue::quorum::wire::consumer_key;
    let mut f = Fifo::new(Config::default());
    for n in 1..=3 {
        run(&mut f, enq(n));
    }
    let owner = consumer_key(5, 1, 0x8000_0001);
    let mut fx = Vec::new();
    let get = |key, settled| Command::DequeueFor { key, settled };
    let Reply::Dequeued(Some((e, left))) = f.apply(0, get(owner, false), &mut fx) else {
        panic!("nothing dequeued");
    };
    assert_eq!((e.msg.0, left, e.redelivered), (1, 2, false));
    assert_eq!(f.holder_keys().collect::<Vec<_>>(), [owner]);
    let Reply::Dequeued(Some((e2, left))) = f.apply(0, get(consumer_key(6, 1, 9), true), &mut fx)
    else {
        panic!("nothing dequeued");
    };
    assert_eq!((e2.msg.0, left), (2, 1));
    assert!(fx.contains(&Effect::Release { msgs: vec![m(2)] }));
    assert_eq!(f.checked_out_len(), 1, "a settled get holds nothing");
    // Another node down: the owner keeps it; its own node down: back, redelivered.
    run(
        &mut f,
        Command::Down {
            node: 6,
            keep: None,
        },
    );
    assert_eq!(f.checked_out_len(), 1);
    run(
        &mut f,
        Command::Down {
            node: 5,
            keep: Some(2),
        },
    );
    assert_eq!(f.checked_out_len(), 0);
    assert_eq!(ready_names(&f), [1, 3]);
    let Reply::Dequeued(Some((e, left))) = f.apply(0, get(owner, false), &mut fx) else {
        panic!("nothing dequeued");
    };
    assert_eq!((e.msg.0, left, e.redelivered), (1, 1, true));
    run(
        &mut f,
        Command::Settle {
            key: owner,
            ids: vec![e.id],
        },
    );
    assert!(matches!(
        f.apply(0, get(owner, true), &mut fx),
        Reply::Dequeued(Some(_))
    ));
    assert_eq!(f.apply(0, get(owner, true), &mut fx), Reply::Dequeued(None));
}

/// Settlements name their consumer: an ack, return or reject of a message checked out
/// to another consumer changes nothing (`rabbit_fifo` ignores them too).
#[test]
fn a_settlement_from_a_consumer_that_does_not_hold_the_message_is_ignored() {
    let mut f = Fifo::new(Config::default());
    run(&mut f, enq(1));
    run(&mut f, enq(2));
    let d1 = delivered(&run(
        &mut f,
        Command::Checkout {
            key: 1,
            spec: spec(1),
        },
    ));
    let d2 = delivered(&run(
        &mut f,
        Command::Checkout {
            key: 2,
            spec: spec(1),
        },
    ));
    assert_eq!((d1[0].1, d2[0].1), (1, 2));
    let held_by_2 = d2[0].2;
    for cmd in [
        Command::Settle {
            key: 1,
            ids: vec![held_by_2],
        },
        Command::Return {
            key: 1,
            ids: vec![held_by_2],
            counted: true,
        },
        Command::Discard {
            key: 1,
            ids: vec![held_by_2],
        },
        Command::Settle {
            key: GET_KEY,
            ids: vec![held_by_2],
        },
    ] {
        assert!(run(&mut f, cmd).is_empty());
        assert_eq!(f.holder(held_by_2).map(|(k, e)| (k, e.msg.0)), Some((2, 2)));
    }
    assert_eq!(f.checked_out_len(), 2);
    // The holder's own ack settles it.
    let fx = run(
        &mut f,
        Command::Settle {
            key: 2,
            ids: vec![held_by_2],
        },
    );
    assert!(fx.contains(&Effect::Release { msgs: vec![m(2)] }));
    assert_eq!(f.holder(held_by_2), None);
}

/// A consumer's node is declared down: its checkout goes to another consumer,
/// redelivered. The first consumer's late ack (its node answers again) does not settle
/// the message the second one now holds; the second one's ack does.
#[test]
fn a_late_ack_after_down_leaves_the_new_holder_alone() {
    use crate::queue::quorum::wire::consumer_key;
    let mut f = Fifo::new(Config::default());
    let away = consumer_key(7, 1, 1);
    let here = consumer_key(9, 1, 2);
    run(&mut f, enq(1));
    let d = delivered(&run(
        &mut f,
        Command::Checkout {
            key: away,
            spec: spec(5),
        },
    ));
    assert_eq!(d, vec![(away, 1, d[0].2)]);
    let id = d[0].2;
    run(
        &mut f,
        Command::Checkout {
            key: here,
            spec: spec(5),
        },
    );
    let fx = run(
        &mut f,
        Command::Down {
            node: 7,
            keep: None,
        },
    );
    assert_eq!(delivered(&fx), vec![(here, 1, id)]);
    assert!(f
        .holder(id)
        .is_some_and(|(k, e)| k == here && e.redelivered));
    // The stale ack and a stale requeue from the consumer that was taken out.
    assert!(run(
        &mut f,
        Command::Settle {
            key: away,
            ids: vec![id]
        }
    )
    .is_empty());
    assert!(run(
        &mut f,
        Command::Return {
            key: away,
            ids: vec![id],
            counted: true
        }
    )
    .is_empty());
    assert_eq!(
        f.holder(id).map(|(k, e)| (k, e.delivery_count)),
        Some((here, 0))
    );
    let fx = run(
        &mut f,
        Command::Settle {
            key: here,
            ids: vec![id],
        },
    );
    assert!(fx.contains(&Effect::Release { msgs: vec![m(1)] }));
    assert_eq!((f.checked_out_len(), f.ready_len()), (0, 0));
}
