//! Debian's real `rabbitmqadmin` (shipped with the rabbitmq-server package) against Warren's
//! management API: declare, list, publish, get, bind, purge, export/import, close, delete.

use crate::common;

use common::http::eventually;
use std::process::Command;

fn admin_path() -> Option<&'static str> {
    let p = "/usr/bin/rabbitmqadmin";
    std::path::Path::new(p).exists().then_some(p)
}

/// Runs rabbitmqadmin against `port`; returns stdout, panicking with stderr on failure.
fn admin(port: u16, args: &[&str]) -> String {
    let out = Command::new(admin_path().unwrap())
        .args([
            "-H",
            "127.0.0.1",
            "-P",
            &port.to_string(),
            "-u",
            "guest",
            "-p",
            "guest",
        ])
        .args(args)
        .output()
        .expect("rabbitmqadmin runs");
    assert!(
        out.status.success(),
        "rabbitmqadmin {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// rabbitmqadmin is blocking; run it off the runtime's worker threads.
async fn run(port: u16, args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        admin(port, &a)
    })
    .await
    .unwrap()
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmqadmin_drives_warren() {
    if admin_path().is_none() {
        println!("SKIPPED: /usr/bin/rabbitmqadmin not found (apt-get install rabbitmq-server)");
        return;
    }
    let b = common::start_broker().await;
    let port = b.mgmt_addr.unwrap().port();

    let o = json(&run(port, &["-f", "raw_json", "show", "overview"]).await);
    assert_eq!(o[0]["rabbitmq_version"], "3.10.8");
    run(port, &["declare", "queue", "name=jobs", "durable=true"]).await;
    run(port, &["declare", "exchange", "name=events", "type=topic"]).await;
    run(
        port,
        &[
            "declare",
            "binding",
            "source=events",
            "destination=jobs",
            "routing_key=job.*",
        ],
    )
    .await;
    for i in 0..3 {
        let payload = format!("payload=hello-{i}");
        run(
            port,
            &[
                "publish",
                "exchange=events",
                "routing_key=job.new",
                &payload,
            ],
        )
        .await;
    }
    let queues = json(
        &run(
            port,
            &[
                "-f", "raw_json", "list", "queues", "name", "messages", "durable",
            ],
        )
        .await,
    );
    let jobs = queues
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "jobs")
        .expect("jobs listed");
    assert_eq!(jobs["messages"], 3);
    assert_eq!(jobs["durable"], true);
    // The default table format too.
    let table = run(port, &["list", "queues", "name", "messages"]).await;
    assert!(
        table
            .lines()
            .any(|l| l.contains("| jobs") && l.contains("| 3")),
        "{table}"
    );
    let bindings = json(&run(port, &["-f", "raw_json", "list", "bindings"]).await);
    assert!(bindings
        .as_array()
        .unwrap()
        .iter()
        .any(|b| b["source"] == "events" && b["routing_key"] == "job.*"));
    let exchanges = run(port, &["-f", "tsv", "list", "exchanges", "name", "type"]).await;
    assert!(
        exchanges.lines().any(|l| l == "events\ttopic"),
        "{exchanges}"
    );

    let got = json(
        &run(
            port,
            &[
                "-f",
                "raw_json",
                "get",
                "queue=jobs",
                "ackmode=ack_requeue_false",
                "count=1",
            ],
        )
        .await,
    );
    assert_eq!(got[0]["payload"], "hello-0");
    assert_eq!(got[0]["routing_key"], "job.new");
    assert_eq!(got[0]["message_count"], 2);

    let file = common::temp_data_dir().with_extension("defs.json");
    let file_s = file.to_string_lossy().to_string();
    run(port, &["export", &file_s]).await;
    let defs = json(&std::fs::read_to_string(&file).unwrap());
    assert!(defs["queues"]
        .as_array()
        .unwrap()
        .iter()
        .any(|q| q["name"] == "jobs"));

    run(port, &["purge", "queue", "name=jobs"]).await;
    let q = json(
        &run(
            port,
            &["-f", "raw_json", "list", "queues", "name", "messages"],
        )
        .await,
    );
    assert_eq!(q[0]["messages"], 0);

    // A client connection shows up, and close connection ends it.
    let conn = lapin::Connection::connect(&b.uri(), lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let conns = json(
        &run(
            port,
            &["-f", "raw_json", "list", "connections", "name", "user"],
        )
        .await,
    );
    assert_eq!(conns[0]["user"], "guest");
    let name = conns[0]["name"].as_str().unwrap().to_string();
    run(port, &["close", "connection", &format!("name={name}")]).await;
    eventually(5, "connection closed", || async {
        (!conn.status().connected()).then_some(())
    })
    .await;

    run(port, &["delete", "queue", "name=jobs"]).await;
    run(port, &["delete", "exchange", "name=events"]).await;
    let q = json(&run(port, &["-f", "raw_json", "list", "queues"]).await);
    assert_eq!(q, serde_json::json!([]));
    // Import brings them back.
    run(port, &["import", &file_s]).await;
    let q = json(&run(port, &["-f", "raw_json", "list", "queues", "name"]).await);
    assert_eq!(q[0]["name"], "jobs");
    let _ = std::fs::remove_file(&file);
    b.shutdown().await;
}
