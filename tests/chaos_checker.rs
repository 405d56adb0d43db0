//! The fault-injection checker (`examples/cluster_chaos/check.rs`, used by
//! `bench/cluster_faults.sh`) on made-up histories: each verdict it must reach.

#[path = "../examples/cluster_chaos/check.rs"]
mod check;

use check::{check, Event};

fn p(id: &str, node: usize) -> Event {
    Event::Publish {
        id: id.into(),
        node,
    }
}
fn a(id: &str) -> Event {
    Event::Ack { id: id.into() }
}
fn d(id: &str, redelivered: bool) -> Event {
    Event::Deliver {
        id: id.into(),
        node: 2,
        redelivered,
    }
}

#[test]
fn a_clean_history_passes() {
    let r = check([
        p("a", 1),
        a("a"),
        d("a", false),
        p("b", 2),
        a("b"),
        d("b", false),
    ]);
    assert_eq!((r.published, r.confirmed, r.delivered), (2, 2, 2));
    assert_eq!((r.lost, r.phantom, r.duplicates), (0, 0, 0));
    assert!(r.ok());
}

#[test]
fn confirmed_but_never_delivered_is_lost() {
    let r = check([p("a", 1), a("a"), p("b", 3), a("b"), d("b", false)]);
    assert_eq!(r.lost, 1);
    assert_eq!(r.lost_sample, vec!["a".to_string()]);
    assert_eq!(r.lost_by_node.get(&1), Some(&1));
    assert!(!r.ok());
}

#[test]
fn unconfirmed_and_undelivered_is_not_lost() {
    let r = check([
        p("a", 1),
        Event::Unknown { id: "a".into() },
        p("b", 1),
        Event::Nack { id: "b".into() },
    ]);
    assert_eq!((r.published, r.confirmed, r.lost), (2, 0, 0));
    assert_eq!((r.unknown, r.nacked), (1, 1));
    assert!(r.ok());
}

#[test]
fn delivered_but_never_published_is_phantom() {
    let r = check([p("a", 1), a("a"), d("a", false), d("zz", false)]);
    assert_eq!(r.phantom, 1);
    assert_eq!(r.phantom_sample, vec!["zz".to_string()]);
    assert!(!r.ok());
}

#[test]
fn duplicates_are_classified() {
    let r = check([
        // Redelivered after a lost ack: allowed.
        p("a", 1),
        a("a"),
        d("a", false),
        d("a", true),
        // Publish retried after an unknown outcome, both copies enqueued: allowed.
        p("b", 1),
        Event::Unknown { id: "b".into() },
        p("b", 2),
        a("b"),
        d("b", false),
        d("b", false),
        // Neither: not allowed.
        p("c", 1),
        a("c"),
        d("c", false),
        d("c", false),
    ]);
    assert_eq!(r.duplicates, 3);
    assert_eq!(
        (r.dup_redelivered, r.dup_retried, r.dup_unexplained),
        (1, 1, 1)
    );
    assert_eq!((r.retried, r.attempts), (1, 4));
    assert_eq!(r.distinct_delivered, 3);
    assert!(!r.ok());
}

/// An unflagged delivery after a flagged one of the same message is unexplained: the
/// broker gave the message to someone else, redelivered, and then handed it out again as
/// new (a node catching up after a partition delivering what the log had given its
/// consumer before the leader took it back). RabbitMQ never does.
#[test]
fn an_unflagged_delivery_after_a_flagged_one_is_unexplained() {
    let r = check([p("a", 1), a("a"), d("a", true), d("a", false)]);
    assert_eq!(
        (r.duplicates, r.dup_redelivered, r.dup_unexplained),
        (1, 0, 1)
    );
    assert!(!r.ok());
    // In the other order it is a redelivery.
    let r = check([p("a", 1), a("a"), d("a", false), d("a", true)]);
    assert_eq!(
        (r.duplicates, r.dup_redelivered, r.dup_unexplained),
        (1, 1, 0)
    );
    assert!(r.ok());
}

#[test]
fn a_delivery_written_before_its_publish_still_counts() {
    let r = check([d("a", false), p("a", 1), a("a")]);
    assert_eq!((r.lost, r.phantom, r.distinct_delivered), (0, 0, 1));
    assert!(r.ok());
}

#[test]
fn delivered_unconfirmed_is_allowed_and_reported() {
    let r = check([p("a", 1), Event::Unknown { id: "a".into() }, d("a", false)]);
    assert_eq!((r.delivered_unconfirmed, r.lost), (1, 0));
    assert!(r.ok());
}

#[test]
fn history_lines_round_trip_and_torn_lines_are_skipped() {
    let evs = [
        p("p1-1", 1),
        a("p1-1"),
        Event::Nack { id: "x".into() },
        Event::Unknown { id: "y".into() },
        Event::Deliver {
            id: "p1-1".into(),
            node: 3,
            redelivered: true,
        },
    ];
    for e in &evs {
        assert_eq!(Event::parse(&e.line()).as_ref(), Some(e));
    }
    assert_eq!(Event::parse("D p1-1 3"), None);
    assert_eq!(Event::parse("Q x"), None);
    assert_eq!(Event::parse(""), None);
}

#[test]
fn report_json_has_the_counts() {
    let r = check([p("a", 1), a("a")]);
    let j = r.json();
    assert!(j.contains("\"lost\":1"), "{j}");
    assert!(j.contains("\"lost_by_node\":{\"n1\":1}"), "{j}");
    assert!(j.contains("\"ok\":false"), "{j}");
}
