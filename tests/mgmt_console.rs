//! The web console in headless Chromium (through chromedriver's WebDriver API): log in, see
//! a queue appear after it is declared, see the message-rate chart move while messages are
//! published, and save a screenshot to `target/artifacts/console.png`.

use crate::common;

use base64::Engine;
use common::http::{eventually, Api};
use lapin::{options::*, types::FieldTable, BasicProperties, Connection, ConnectionProperties};
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Kills chromedriver (and with it the browser) when the test ends, pass or fail.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Session {
    wd: Api,
    id: String,
}

impl Session {
    async fn cmd(&self, method: &str, path: &str, body: Value) -> Value {
        let body = (method == "POST").then(|| body.to_string());
        let r = self
            .wd
            .request(method, &format!("/session/{}{path}", self.id), body, &[])
            .await;
        let v = r.json();
        assert_eq!(r.status, 200, "WebDriver {method} {path}: {v}");
        v["value"].clone()
    }

    async fn js(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
        .await
    }

    async fn element(&self, css: &str) -> String {
        let v = self
            .cmd(
                "POST",
                "/element",
                json!({"using": "css selector", "value": css}),
            )
            .await;
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("element {css}: {v}"))
            .to_string()
    }

    async fn type_into(&self, css: &str, text: &str) {
        let e = self.element(css).await;
        self.cmd(
            "POST",
            &format!("/element/{e}/value"),
            json!({"text": text}),
        )
        .await;
    }

    async fn click(&self, css: &str) {
        let e = self.element(css).await;
        self.cmd("POST", &format!("/element/{e}/click"), json!({}))
            .await;
    }

    /// Polls a JavaScript condition until it is true.
    async fn wait_js(&self, secs: u64, what: &str, script: &str) {
        eventually(secs, what, || async {
            (self.js(script).await == json!(true)).then_some(())
        })
        .await;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_shows_queues_and_live_rates() {
    for tool in [CHROMIUM, CHROMEDRIVER] {
        if !std::path::Path::new(tool).exists() {
            println!("SKIPPED: {tool} not found (apt-get install chromium chromium-driver)");
            return;
        }
    }
    let b = common::start_broker().await;
    let mgmt = b.mgmt_addr.unwrap();

    let port = free_port();
    let _driver = Driver(
        Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts"),
    );
    let wd = Api::new(([127, 0, 0, 1], port).into()).anonymous();
    eventually(20, "chromedriver ready", || async {
        let s = tokio::net::TcpStream::connect(wd.addr).await.ok()?;
        drop(s);
        (wd.get("/status").await.json()["value"]["ready"] == json!(true)).then_some(())
    })
    .await;
    let caps = json!({"capabilities": {"alwaysMatch": {
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1360,1000"]
        }
    }}});
    let r = wd.post("/session", caps).await;
    assert_eq!(r.status, 200, "new session: {}", r.text());
    let id = r.json()["value"]["sessionId"].as_str().unwrap().to_string();
    let s = Session { wd: wd.clone(), id };

    // Log in.
    s.cmd("POST", "/url", json!({"url": format!("http://{mgmt}/")}))
        .await;
    s.type_into("#username", "guest").await;
    s.type_into("#password", "guest").await;
    s.click("#login-button").await;
    s.wait_js(
        10,
        "logged in",
        "return document.querySelector('#tabs').hidden === false",
    )
    .await;

    // A queue declared by a client appears in the queues table.
    let conn = Connection::connect(&b.uri(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    for q in ["console-orders", "console-work"] {
        ch.queue_declare(
            q.into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    s.js("location.hash = '#queues'; return true").await;
    s.wait_js(
        10,
        "queue listed",
        "return !!document.querySelector('#q-table') && document.querySelector('#q-table').innerText.includes('console-orders')",
    )
    .await;

    // Publish for a while (a consumer drains one queue, the other fills up) and watch the
    // overview's rate chart move.
    s.js("location.hash = '#overview'; return true").await;
    let cch = conn.create_channel().await.unwrap();
    let consumer = cch
        .basic_consume(
            "console-work".into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let publisher = {
        let ch = ch.clone();
        tokio::spawn(async move {
            for round in 0..200u32 {
                for i in 0..(20 + (round % 7) * 5) {
                    let q = if i % 3 == 0 {
                        "console-orders"
                    } else {
                        "console-work"
                    };
                    let _ = ch
                        .basic_publish(
                            "".into(),
                            q.into(),
                            BasicPublishOptions::default(),
                            b"hello",
                            BasicProperties::default(),
                        )
                        .await;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    s.wait_js(
        20,
        "rate chart moved",
        "const w = window.warren; return w.state.samples.filter(x => x.publish > 0).length >= 6 \
         && Number(document.querySelector('#rates-chart').dataset.max) > 1 \
         && w.lastQueued.ready > 0",
    )
    .await;
    let total = s
        .js("return document.querySelector('#total-queues').innerText")
        .await;
    assert_eq!(total, json!("2"));

    let png = s.cmd("GET", "/screenshot", json!(null)).await;
    let png = base64::engine::general_purpose::STANDARD
        .decode(png.as_str().unwrap())
        .unwrap();
    assert_eq!(&png[1..4], b"PNG");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("console.png"), &png).unwrap();
    println!("screenshot: {}", dir.join("console.png").display());

    publisher.abort();
    drop(consumer);
    let _ = s.cmd("DELETE", "", json!(null)).await;
    let _ = conn.close(200, "bye".into()).await;
    b.shutdown().await;
}
