//! `warren-ctl` speaks RabbitMQ's management API: the exact requests it makes (checked
//! against a recording stub here), and, when `WARREN_CTL_RABBITMQ_URL` points at a
//! RabbitMQ with the management plugin (or a Warren with its HTTP API), a round trip of
//! every command against it.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use warren::ctl::http::Endpoint;
use warren::ctl::{run, Command};

/// One recorded request: "METHOD path", authorization header, body.
type Recorded = Arc<Mutex<Vec<(String, String, String)>>>;

/// A stub that answers every request with `200` and a canned JSON body per path, and
/// records what it got. Serves `n` requests, then stops.
fn stub(n: usize) -> (String, Recorded) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let seen: Recorded = Arc::default();
    let rec = seen.clone();
    std::thread::spawn(move || {
        for _ in 0..n {
            let Ok((mut s, _)) = l.accept() else { return };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let (head, body) = loop {
                let k = s.read(&mut chunk).unwrap_or(0);
                if k == 0 {
                    break (String::new(), String::new());
                }
                buf.extend_from_slice(&chunk[..k]);
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    while buf.len() < end + 4 + len {
                        let k = s.read(&mut chunk).unwrap_or(0);
                        if k == 0 {
                            break;
                        }
                        buf.extend_from_slice(&chunk[..k]);
                    }
                    let body = String::from_utf8_lossy(&buf[end + 4..]).into_owned();
                    break (head, body);
                }
            };
            let line = head.lines().next().unwrap_or("").to_string();
            let req = line
                .rsplit_once(' ')
                .map(|(a, _)| a.to_string())
                .unwrap_or_default();
            let auth = head
                .lines()
                .find_map(|l| l.strip_prefix("Authorization: "))
                .unwrap_or("")
                .to_string();
            let reply = match req.as_str() {
                "GET /api/users" => r#"[{"name":"guest","tags":["administrator"]}]"#,
                "GET /api/users/bob" => {
                    r#"{"name":"bob","password_hash":"abc","hashing_algorithm":"rabbit_password_hashing_sha256","tags":[]}"#
                }
                "GET /api/vhosts" => r#"[{"name":"/"},{"name":"team"}]"#,
                "GET /api/vhosts/team/permissions" => {
                    r#"[{"user":"bob","vhost":"team","configure":"^c","write":".*","read":""}]"#
                }
                "GET /api/definitions" => r#"{"users":[]}"#,
                _ => "",
            };
            rec.lock().unwrap().push((req, auth, body));
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{}",
                reply.len(),
                reply
            );
        }
    });
    (format!("http://{addr}"), seen)
}

fn exec(ep: &Endpoint, cmd: Command) -> String {
    let mut out = Vec::new();
    run(ep, &cmd, &mut out).unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    String::from_utf8(out).unwrap()
}

#[test]
fn requests_match_rabbitmq_management_api() {
    let (url, seen) = stub(12);
    let ep = Endpoint::parse(&url, "admin", "s3cret").unwrap();
    assert_eq!(exec(&ep, Command::ListUsers), "guest\t[administrator]\n");
    exec(
        &ep,
        Command::AddUser {
            name: "bob".into(),
            password: "pw".into(),
            tags: "monitoring".into(),
        },
    );
    exec(
        &ep,
        Command::SetUserTags {
            name: "bob".into(),
            tags: vec!["management".into()],
        },
    );
    exec(
        &ep,
        Command::AddVhost {
            name: "team".into(),
            default_queue_type: None,
        },
    );
    assert_eq!(exec(&ep, Command::ListVhosts), "/\nteam\n");
    exec(
        &ep,
        Command::SetPermissions {
            vhost: "team".into(),
            user: "bob".into(),
            configure: "^c".into(),
            write: ".*".into(),
            read: "".into(),
        },
    );
    assert_eq!(
        exec(
            &ep,
            Command::ListPermissions {
                vhost: "team".into()
            }
        ),
        "bob\t^c\t.*\t\n"
    );
    exec(
        &ep,
        Command::ClearPermissions {
            vhost: "/".into(),
            user: "bob".into(),
        },
    );
    exec(
        &ep,
        Command::DeleteVhost {
            name: "team".into(),
        },
    );
    exec(&ep, Command::DeleteUser { name: "bob".into() });
    assert_eq!(
        exec(&ep, Command::ExportDefinitions { file: "-".into() }),
        "{\"users\":[]}\n"
    );
    let seen = seen.lock().unwrap();
    let reqs: Vec<&str> = seen.iter().map(|(r, _, _)| r.as_str()).collect();
    assert_eq!(
        reqs,
        [
            "GET /api/users",
            "PUT /api/users/bob",
            "GET /api/users/bob",
            "PUT /api/users/bob",
            "PUT /api/vhosts/team",
            "GET /api/vhosts",
            "PUT /api/permissions/team/bob",
            "GET /api/vhosts/team/permissions",
            "DELETE /api/permissions/%2F/bob",
            "DELETE /api/vhosts/team",
            "DELETE /api/users/bob",
            "GET /api/definitions",
        ]
    );
    // Basic auth: base64("admin:s3cret").
    assert!(seen.iter().all(|(_, a, _)| a == "Basic YWRtaW46czNjcmV0"));
    let body = |i: usize| -> serde_json::Value { serde_json::from_str(&seen[i].2).unwrap() };
    assert_eq!(
        body(1),
        serde_json::json!({"password": "pw", "tags": "monitoring"})
    );
    assert_eq!(
        body(3),
        serde_json::json!({"password_hash": "abc", "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": "management"})
    );
    assert_eq!(
        body(6),
        serde_json::json!({"configure": "^c", "write": ".*", "read": ""})
    );
}

/// Against a live management API (RabbitMQ 3.10 with rabbitmq_management, or Warren with
/// its HTTP API): `WARREN_CTL_RABBITMQ_URL=http://127.0.0.1:15672`.
#[test]
fn round_trip_against_live_management_api() {
    let Ok(url) = std::env::var("WARREN_CTL_RABBITMQ_URL") else {
        eprintln!("WARREN_CTL_RABBITMQ_URL not set: skipping the live round trip");
        return;
    };
    live_round_trip(&url);
}

/// The same round trip against Warren's own management API, in-process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_against_warren() {
    let broker = common::start_broker().await;
    let url = format!("http://{}", broker.mgmt_addr.expect("management API"));
    tokio::task::spawn_blocking(move || live_round_trip(&url))
        .await
        .expect("round trip");
    broker.shutdown().await;
}

fn live_round_trip(url: &str) {
    let ep = Endpoint::parse(url, "guest", "guest").unwrap();
    let user = format!("ctl-test-{}", std::process::id());
    let vhost = format!("ctl-vhost-{}", std::process::id());
    exec(
        &ep,
        Command::AddUser {
            name: user.clone(),
            password: "pw".into(),
            tags: "monitoring".into(),
        },
    );
    assert!(exec(&ep, Command::ListUsers).contains(&format!("{user}\t[monitoring]")));
    exec(
        &ep,
        Command::SetUserTags {
            name: user.clone(),
            tags: vec!["management".into(), "policymaker".into()],
        },
    );
    assert!(exec(&ep, Command::ListUsers).contains(&format!("{user}\t[management,policymaker]")));
    exec(
        &ep,
        Command::AddVhost {
            name: vhost.clone(),
            default_queue_type: None,
        },
    );
    assert!(exec(&ep, Command::ListVhosts).lines().any(|l| l == vhost));
    exec(
        &ep,
        Command::SetPermissions {
            vhost: vhost.clone(),
            user: user.clone(),
            configure: "^c".into(),
            write: ".*".into(),
            read: "".into(),
        },
    );
    assert!(exec(
        &ep,
        Command::ListPermissions {
            vhost: vhost.clone()
        }
    )
    .contains(&format!("{user}\t^c\t.*\t\n")));
    exec(
        &ep,
        Command::SetVhostLimits {
            vhost: vhost.clone(),
            limits: r#"{"max-queues": 5}"#.into(),
        },
    );
    let defs = exec(&ep, Command::ExportDefinitions { file: "-".into() });
    let d: serde_json::Value = serde_json::from_str(&defs).unwrap();
    assert!(d["users"]
        .as_array()
        .unwrap()
        .iter()
        .any(|u| u["name"] == user.as_str()));
    // Import: the exported document goes back unchanged.
    let path = std::env::temp_dir().join(format!("ctl-defs-{}.json", std::process::id()));
    std::fs::write(&path, &defs).unwrap();
    exec(
        &ep,
        Command::ImportDefinitions {
            file: path.to_string_lossy().into_owned(),
        },
    );
    exec(
        &ep,
        Command::ClearPermissions {
            vhost: vhost.clone(),
            user: user.clone(),
        },
    );
    assert!(!exec(
        &ep,
        Command::ListPermissions {
            vhost: vhost.clone()
        }
    )
    .contains(&user));
    exec(
        &ep,
        Command::DeleteVhost {
            name: vhost.clone(),
        },
    );
    exec(&ep, Command::DeleteUser { name: user.clone() });
    assert!(!exec(&ep, Command::ListUsers).contains(&user));
    let mut out = Vec::new();
    let e = run(&ep, &Command::DeleteUser { name: user }, &mut out).unwrap_err();
    assert!(e.to_string().starts_with("404"), "{e}");
}
