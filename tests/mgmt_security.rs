//! Management API security: every route of the router (read from `src/mgmt/mod.rs`, so a
//! new route is walked without editing this test) refuses requests without valid
//! credentials the way RabbitMQ 3.10.8's management plugin does, and changes nothing; only
//! `/metrics` answers. Then a generated set of query strings (pagination, sorting,
//! columns, name filters, malformed encodings) against every GET route: never a 5xx, and
//! RabbitMQ's pagination shapes and errors.
//!
//! RabbitMQ 3.10.8, observed with curl (README, "Management API security"): no
//! `Authorization` header → 401, empty body, `www-authenticate: Basic realm="RabbitMQ
//! Management"`; a wrong user or password, an empty `Basic Og==` or a `Bearer` token → 401
//! `{"error":"not_authorized","reason":"Login failed"}` with the same challenge; a header
//! that is not base64, has no `:`, or names another scheme → 400, empty body; an unknown
//! path → 404 and a wrong method → 405 before credentials are read (Warren: 404 too, but
//! 405 only after authentication); cookies are ignored (no
//! server-side session); `POST /api/login` (OAuth 2 tokens) → 401 `Login failed`.

use crate::common;

use common::http::{Api, Response};
use serde_json::{json, Value};

/// (what is wrong, the client, extra headers, RabbitMQ's status).
type Case = (&'static str, Api, Vec<(&'static str, &'static str)>, u16);

const ROUTER: &str = include_str!("../src/mgmt/mod.rs");
const METHODS: [&str; 4] = ["GET", "PUT", "POST", "DELETE"];

/// (path, methods) of every route in the management router, `/api` ones prefixed.
fn routes() -> Vec<(String, Vec<&'static str>)> {
    // The body of `fn name(` up to its closing brace at the start of a line.
    let body = |name: &str| {
        let f = &ROUTER[ROUTER.find(name).unwrap_or_else(|| panic!("{name}"))..];
        &f[..f.find("\n}\n").expect("the function's end")]
    };
    // `api_routes()` holds the API's routes; `router()` adds a few to it before nesting
    // it under /api, and the top-level ones after.
    let (api_head, top) = body("fn router(")
        .split_once(".nest(\"/api\", api)")
        .expect("the router nests /api");
    let mut out = Vec::new();
    for (prefix, text) in [
        ("/api", body("fn api_routes(")),
        ("/api", api_head),
        ("", top),
    ] {
        for chunk in text.split(".route(").skip(1) {
            let path = chunk
                .split('"')
                .nth(1)
                .expect("a quoted path after .route(");
            let end = [
                ".fallback(",
                ".merge(",
                ".with_state(",
                ".route_layer(",
                ".layer(",
            ]
            .iter()
            .filter_map(|m| chunk.find(m))
            .min()
            .unwrap_or(chunk.len());
            let body = &chunk[..end];
            let methods: Vec<&str> = [
                ("get(", "GET"),
                ("put(", "PUT"),
                ("post(", "POST"),
                ("delete(", "DELETE"),
            ]
            .iter()
            .filter(|(token, _)| body.contains(token))
            .map(|(_, m)| *m)
            .collect();
            assert!(!methods.is_empty(), "no method found for route {path}");
            out.push((format!("{prefix}{path}"), methods));
        }
    }
    out
}

/// A route's path with every parameter filled so that the object it names exists.
fn fill(path: &str, conn: &str) -> String {
    path.replace("{vhost}", "%2F")
        .replace("{node}", "warren@localhost")
        .replace("{name}/channels", &format!("{conn}/channels"))
        .replace("connections/{name}", &format!("connections/{conn}"))
        .replace("channels/{name}", &format!("channels/{conn}%20(1)"))
        .replace(
            "vhost-limits/%2F/{name}",
            "vhost-limits/%2F/max-connections",
        )
        .replace("{name}", "obj")
        .replace("{user}", "guest")
        .replace("{source}", "obj")
        .replace("{kind}", "q")
        .replace("{dest}", "obj")
        .replace("{props}", "~")
}

fn body_for(method: &str) -> Option<String> {
    (method == "PUT" || method == "POST").then(|| {
        json!({"type": "fanout", "durable": true, "password": "pwned", "tags": "administrator",
               "configure": ".*", "write": ".*", "read": ".*", "pattern": ".*",
               "definition": {"max-length": 1}, "value": 1, "routing_key": "obj",
               "payload": "x", "payload_encoding": "string", "properties": {},
               "count": 5, "ackmode": "ack_requeue_false", "encoding": "auto",
               "users": [{"name": "evil", "password": "x", "tags": "administrator"}]})
        .to_string()
    })
}

fn challenge(r: &Response) -> Option<&str> {
    r.header("www-authenticate")
}

/// Everything an unauthenticated request could change or read, as the administrator sees
/// it.
async fn state(api: &Api) -> Value {
    let mut defs = api.get_json("/api/definitions").await;
    if let Some(o) = defs.as_object_mut() {
        o.remove("rabbit_version");
    }
    let q = api.get_json("/api/queues/%2F/obj").await;
    json!({"definitions": defs, "messages": q["messages"], "connections": api.get_json("/api/connections").await.as_array().map(|a| a.len())})
}

async fn setup(api: &Api) {
    for (path, body) in [
        ("/api/queues/%2F/obj", json!({"durable": true})),
        ("/api/exchanges/%2F/obj", json!({"type": "direct"})),
        ("/api/users/obj", json!({"password": "obj", "tags": ""})),
        (
            "/api/policies/%2F/obj",
            json!({"pattern": "^obj$", "definition": {"max-length": 100}}),
        ),
        (
            "/api/vhost-limits/%2F/max-connections",
            json!({"value": 100}),
        ),
    ] {
        let r = api.put(path, body).await;
        assert!(
            r.status == 201 || r.status == 204,
            "PUT {path}: {}",
            r.status
        );
    }
    let r = api
        .post(
            "/api/bindings/%2F/e/obj/q/obj",
            json!({"routing_key": "obj"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = api
        .post(
            "/api/exchanges/%2F/amq.default/publish",
            json!({"routing_key": "obj", "payload": "secret", "payload_encoding": "string", "properties": {}}),
        )
        .await;
    assert_eq!(r.json()["routed"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_but_metrics_answers_without_credentials() {
    let b = common::start_broker().await;
    let api = Api::new(b.mgmt_addr.expect("management enabled"));
    setup(&api).await;
    // A live AMQP connection, so the connection and channel routes name a real one.
    let conn = lapin::Connection::connect(&b.uri(), lapin::ConnectionProperties::default())
        .await
        .expect("connect");
    let _ch = conn.create_channel().await.expect("channel");
    let conn_name = common::http::eventually(10, "the connection listed", || {
        let api = api.clone();
        async move {
            let v = api.get_json("/api/connections").await;
            v.as_array()?.first()?["name"]
                .as_str()
                .map(|s| s.replace(' ', "%20").replace('>', "%3E"))
        }
    })
    .await;
    let before = state(&api).await;

    let routes = routes();
    assert!(routes.len() > 50, "only {} routes found", routes.len());
    for needle in [
        "/api/overview",
        "/api/queues/{vhost}/{name}/get",
        "/api/definitions",
        "/metrics",
    ] {
        assert!(
            routes.iter().any(|(p, _)| p == needle),
            "route {needle} not found"
        );
    }

    // Each way of not being authenticated, and what RabbitMQ answers to it.
    let bad_header = |v: &'static str| vec![("Authorization", v)];
    let cases: Vec<Case> = vec![
        ("no credentials", api.anonymous(), vec![], 401),
        ("wrong password", api.as_user("guest", "nope"), vec![], 401),
        ("unknown user", api.as_user("nobody", "x"), vec![], 401),
        (
            "empty basic",
            api.anonymous(),
            bad_header("Basic Og=="),
            401,
        ),
        (
            "bearer token",
            api.anonymous(),
            bad_header("Bearer abc"),
            401,
        ),
        ("not base64", api.anonymous(), bad_header("Basic !!!"), 400),
        (
            "no colon",
            api.anonymous(),
            bad_header("Basic Z3Vlc3Q="),
            400,
        ),
        ("other scheme", api.anonymous(), bad_header("Digest x"), 400),
        (
            "session cookie only",
            api.anonymous(),
            vec![(
                "Cookie",
                "m=2258:Z3Vlc3Q6Z3Vlc3Q%253D; auth=Z3Vlc3Q6Z3Vlc3Q=",
            )],
            401,
        ),
    ];
    let mut walked = 0;
    for (path, methods) in &routes {
        let url = fill(path, &conn_name);
        for method in METHODS {
            for (case, client, headers, expect) in &cases {
                let r = client
                    .request(method, &url, body_for(method), headers)
                    .await;
                walked += 1;
                let what = format!("{case}: {method} {url} → {} {}", r.status, r.text());
                if path == "/metrics" {
                    let want = if method == "GET" { 200 } else { 405 };
                    assert_eq!(r.status, want, "{what}");
                    continue;
                }
                if !methods.contains(&method) {
                    // RabbitMQ refuses the method (405) before it reads credentials;
                    // Warren authenticates first (the router's layer wraps the whole
                    // route), so the answer is the refusal below or, for a request that
                    // would authenticate, 405: never the resource.
                    assert!(r.status == *expect || r.status == 405, "{what}");
                    continue;
                }
                if path == "/api/login" {
                    assert_eq!(r.status, 401, "{what}");
                    assert_eq!(
                        r.json(),
                        json!({"error": "not_authorized", "reason": "Login failed"})
                    );
                    continue;
                }
                assert_eq!(r.status, *expect, "{what}");
                match (*expect, *case) {
                    (400, _) => {
                        assert!(r.body.is_empty(), "{what}");
                        assert_eq!(challenge(&r), None, "{what}");
                    }
                    (_, "no credentials") | (_, "session cookie only") => {
                        assert!(r.body.is_empty(), "{what}");
                        assert_eq!(
                            challenge(&r),
                            Some("Basic realm=\"RabbitMQ Management\""),
                            "{what}"
                        );
                    }
                    _ => {
                        if method != "HEAD" {
                            assert_eq!(
                                r.json(),
                                json!({"error": "not_authorized", "reason": "Login failed"}),
                                "{what}"
                            );
                        }
                        assert_eq!(
                            challenge(&r),
                            Some("Basic realm=\"RabbitMQ Management\""),
                            "{what}"
                        );
                    }
                }
            }
        }
        // HEAD is GET without a body, authenticated the same way.
        if methods.contains(&"GET") && path != "/metrics" {
            let r = api.anonymous().request("HEAD", &url, None, &[]).await;
            assert_eq!(r.status, 401, "HEAD {url}");
        }
    }
    // A user without a management tag is refused everywhere (401 not_authorised, no
    // challenge: the credentials were right).
    for (path, methods) in &routes {
        if path == "/metrics" || path == "/api/login" {
            continue;
        }
        let url = fill(path, &conn_name);
        for method in methods {
            let r = api
                .as_user("obj", "obj")
                .request(method, &url, body_for(method), &[])
                .await;
            assert_eq!(r.status, 401, "tagless user: {method} {url}");
            assert_eq!(
                r.json(),
                json!({"error": "not_authorised", "reason": "Not management user"})
            );
        }
    }
    // Unknown paths: 404 without credentials, as RabbitMQ.
    for p in ["/api/nope", "/api/queues/%2F/obj/nope/deeper", "/metricsx"] {
        let r = api.anonymous().get(p).await;
        assert_eq!(r.status, 404, "{p}");
    }
    assert!(walked > 1500, "walked {walked}");
    // Nothing changed: the same definitions, the message still queued, no new user.
    let after = state(&api).await;
    assert_eq!(
        before, after,
        "an unauthenticated request changed something"
    );
    let r = api
        .post(
            "/api/queues/%2F/obj/get",
            json!({"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto"}),
        )
        .await;
    assert_eq!(r.json()[0]["payload"], "secret");
    drop(conn);
    b.shutdown().await;
}

/// A deterministic generator (splitmix64), so a failure names a reproducible case.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[(self.next() % from.len() as u64) as usize]
    }
}

const KEYS: &[&str] = &[
    "page",
    "page_size",
    "name",
    "use_regex",
    "sort",
    "sort_reverse",
    "columns",
    "disable_stats",
    "enable_queue_totals",
    "lengths_age",
    "lengths_incr",
    "msg_rates_age",
    "msg_rates_incr",
    "data_rates_age",
    "data_rates_incr",
    "if-unused",
    "if-empty",
    "pagination",
    "vhost",
    "",
    "%00",
    "page[]",
    "a%ZZ",
];

const VALUES: &[&str] = &[
    "",
    "0",
    "1",
    "-1",
    "2",
    "500",
    "501",
    "18446744073709551616",
    "99999999999999999999999999999",
    "1e9",
    "abc",
    "true",
    "false",
    "name",
    "messages",
    "name,messages,arguments.x-max-length",
    "message_stats.publish_details.rate",
    ".*",
    "(",
    "[a-",
    "^obj$",
    "(a+)+$",
    "%ZZ",
    "%",
    "%00",
    "%FF%FE",
    "%E2%98%83",
    "obj%20x",
    "a,b,,c,",
    "..",
    "__proto__",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_query_strings_never_answer_5xx() {
    let b = common::start_broker().await;
    let api = Api::new(b.mgmt_addr.expect("management enabled"));
    setup(&api).await;
    let gets: Vec<String> = routes()
        .into_iter()
        .filter(|(p, m)| m.contains(&"GET") && p.starts_with("/api/"))
        .map(|(p, _)| fill(&p, "none"))
        .collect();
    let long = "x".repeat(20_000);
    let mut g = Gen(0x5eed);
    let mut statuses = std::collections::BTreeMap::new();
    for i in 0..3000 {
        let path = &gets[i % gets.len()];
        let n = 1 + g.next() % 4;
        let mut q = String::new();
        for _ in 0..n {
            if !q.is_empty() {
                q.push(if g.next().is_multiple_of(10) {
                    ';'
                } else {
                    '&'
                });
            }
            q.push_str(g.pick(KEYS));
            match g.next() % 12 {
                0 => {}
                1 => {
                    q.push('=');
                    q.push_str(&long);
                }
                _ => {
                    q.push('=');
                    q.push_str(g.pick(VALUES));
                }
            }
        }
        let url = format!("{path}?{q}");
        let r = api.request("GET", &url, None, &[]).await;
        assert!(
            r.status < 500,
            "case {i}: GET {url} answered {} {}",
            r.status,
            r.text()
        );
        if r.status == 200 && !path.ends_with("/metrics") {
            let _ = r.json(); // a JSON body, not a torn one
        }
        *statuses.entry(r.status).or_insert(0u32) += 1;
    }
    // DELETE's own parameters, malformed.
    for q in [
        "if-unused=%ZZ",
        "if-empty=tru%e",
        "if-unused=true&if-unused=false",
    ] {
        let r = api
            .request("DELETE", &format!("/api/queues/%2F/nothere?{q}"), None, &[])
            .await;
        assert!(r.status < 500, "DELETE ?{q}: {}", r.status);
    }
    eprintln!("statuses over 3000 generated queries: {statuses:?}");
    assert!(
        statuses.get(&400).is_some_and(|n| *n > 0),
        "no malformed page seen"
    );
    // The shapes RabbitMQ 3.10.8 answers (src/mgmt/query.rs); the queues are obj and
    // aliveness-test (made by GET /api/aliveness-test above).
    let v = api
        .get_json("/api/queues?page=1&page_size=1&name=OB&columns=name,arguments.x")
        .await;
    assert_eq!(
        v,
        json!({"filtered_count": 1, "item_count": 1, "items": [{"name": "obj", "arguments": {}}],
               "page": 1, "page_count": 1, "page_size": 1, "total_count": 2})
    );
    let r = api.get("/api/queues?page=0").await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (400, json!("invalid_pagination_parameters"))
    );
    let r = api.get("/api/exchanges?page=9").await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (400, json!("page_out_of_range"))
    );
    let v = api
        .get_json("/api/users?page=1&columns=name&sort=name&sort_reverse=true")
        .await;
    assert_eq!(
        v,
        json!([{"name": "obj"}, {"name": "guest"}]),
        "users are not paginated"
    );
    // The broker still serves.
    assert_eq!(api.get("/api/overview").await.status, 200);
    b.shutdown().await;
}

/// A client that connects to the management port and sends nothing is closed after 5 s,
/// as RabbitMQ's cowboy does (`request_timeout`); before, it held its socket for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_management_sockets_are_closed() {
    use tokio::io::AsyncReadExt;
    let b = common::start_broker().await;
    let addr = b.mgmt_addr.expect("management enabled");
    let t0 = std::time::Instant::now();
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 64];
    let r = tokio::time::timeout(std::time::Duration::from_secs(20), silent.read(&mut buf))
        .await
        .expect("the broker closes a silent management socket within 20 s");
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    let waited = t0.elapsed();
    assert!(
        waited >= std::time::Duration::from_secs(4),
        "closed after {waited:?}"
    );
    // A client that talks is served as before.
    let api = Api::new(addr);
    assert_eq!(api.get("/api/overview").await.status, 200);
    b.shutdown().await;
}
