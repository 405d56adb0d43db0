//! RabbitMQ's published Grafana dashboards (RabbitMQ-Overview, RabbitMQ-Quorum-Queues-Raft)
//! work against Warren's `/metrics`: every series they query (tests/data/dashboard_metrics.txt,
//! derived from the dashboards' JSON) exists with the labels they use, and the exposition
//! passes `promtool check metrics` (Debian's `prometheus` package; SKIPPED when missing).

use crate::common;

use common::http::Api;
use lapin::{options::*, types::FieldTable, BasicProperties, Connection, ConnectionProperties};
use std::collections::HashMap;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

/// Samples of an exposition: metric name → label sets (name → value).
fn parse(text: &str) -> HashMap<String, Vec<HashMap<String, String>>> {
    let mut out: HashMap<String, Vec<HashMap<String, String>>> = HashMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, _value) = line.rsplit_once(' ').expect("name and value");
        let (name, labels) = match series.split_once('{') {
            None => (series, HashMap::new()),
            Some((n, rest)) => {
                let body = rest.strip_suffix('}').expect("closing brace");
                let mut m = HashMap::new();
                // Label values here never hold `",` (test names only).
                for pair in body.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once("=\"").expect("label=\"value\"");
                    m.insert(k.to_string(), v.trim_end_matches('"').to_string());
                }
                (n, m)
            }
        };
        out.entry(name.to_string()).or_default().push(labels);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_series_the_dashboards_query_exists_with_their_labels() {
    let broker = common::start_broker().await;
    // A quorum queue (the Raft dashboard's series are per quorum queue) with traffic.
    let conn = Connection::connect(&broker.uri(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        lapin::types::AMQPValue::LongString("quorum".into()),
    );
    ch.queue_declare(
        "qq".into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .unwrap();
    let c = ch
        .basic_publish(
            "".into(),
            "qq".into(),
            BasicPublishOptions::default(),
            &[7u8; 500],
            BasicProperties::default(),
        )
        .await
        .unwrap();
    common::within(T, c).await.unwrap();
    assert!(ch
        .basic_get("qq".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .is_some());
    assert!(ch
        .basic_get("qq".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .is_none());

    let api = Api::new(broker.mgmt_addr.unwrap()).anonymous();
    let r = common::within(T, api.get("/metrics")).await;
    assert_eq!(r.status, 200);
    let text = r.text();
    let samples = parse(&text);

    let wanted = include_str!("data/dashboard_metrics.txt");
    let mut missing = Vec::new();
    let mut checked = 0;
    for line in wanted
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let mut parts = line.split_whitespace();
        let name = parts.next().unwrap();
        checked += 1;
        let Some(sets) = samples.get(name) else {
            missing.push(format!("{name}: no sample"));
            continue;
        };
        for label in parts {
            let ok = match label.split_once('=') {
                Some((k, v)) => sets.iter().any(|s| s.get(k).map(String::as_str) == Some(v)),
                None => sets.iter().any(|s| s.contains_key(label)),
            };
            if !ok {
                missing.push(format!("{name}: no sample with {label}"));
            }
        }
    }
    assert!(checked > 40, "the list was read ({checked} series)");
    assert!(missing.is_empty(), "{missing:#?}\n{text}");

    // What the traffic above must show.
    let value = |name: &str, pick: &dyn Fn(&HashMap<String, String>) -> bool| -> f64 {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| {
                let (series, v) = l.rsplit_once(' ')?;
                let n = series.split('{').next()?;
                if n != name {
                    return None;
                }
                let labels = parse(l).remove(n)?.pop()?;
                pick(&labels).then(|| v.parse().ok())?
            })
            .unwrap_or_else(|| panic!("{name} in\n{text}"))
    };
    let any = |_: &HashMap<String, String>| true;
    assert_eq!(value("rabbitmq_global_messages_get_empty_total", &any), 1.0);
    assert_eq!(value("rabbitmq_global_messages_confirmed_total", &any), 1.0);
    assert_eq!(value("rabbitmq_global_messages_routed_total", &any), 1.0);
    assert_eq!(value("rabbitmq_queues_created_total", &any), 1.0);
    assert_eq!(
        value("rabbitmq_message_size_bytes_bucket", &|l| l["le"]
            == "100.0"),
        0.0
    );
    assert_eq!(
        value("rabbitmq_message_size_bytes_bucket", &|l| l["le"]
            == "1000.0"),
        1.0
    );
    assert_eq!(value("rabbitmq_message_size_bytes_sum", &any), 500.0);
    // Enqueue, dequeue: the quorum queue applied commands.
    let index = value("rabbitmq_raft_last_written_index", &|l| l["queue"] == "qq");
    assert!(index >= 2.0, "{index}");
    assert_eq!(
        value("rabbitmq_identity_info", &|l| l["rabbitmq_endpoint"]
            == "metrics"),
        1.0
    );

    // promtool's own check of the exposition format.
    match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Err(_) => {
            println!("SKIPPED promtool check: promtool not installed (Debian package prometheus)")
        }
        Ok(mut child) => {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "promtool check metrics: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let _ = conn.close(200, "bye".into()).await;
    broker.shutdown().await;
}
