//! Clusters of `warren` child processes on loopback for the cluster tests: each node with
//! its own free ports and data directory, killed (`kill -9`) and its directory removed
//! when dropped.

use lapin::{Channel, Connection, ConnectionProperties};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::http::{eventually, Api};

/// A port free now for a child node, never the same twice in this process.
///
/// Taken below the kernel's ephemeral range (32768–60999 on Linux by default), where the
/// in-process brokers' port-0 listeners and every outgoing connection get theirs: a port
/// from `bind(0)` could be handed to one of those between this check and the child's own
/// bind ("Address already in use", seen in the full run). A process-wide counter (from
/// an offset by process id) keeps two nodes off one port; each is checked bindable.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let offset = std::process::id() % SPAN;
    for _ in 0..SPAN {
        let port = (LOW + (offset + NEXT.fetch_add(1, Relaxed)) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {LOW}..{}", LOW + SPAN);
}

/// One node: its name, ports, data directory and process while it runs.
pub struct Node {
    pub name: String,
    pub amqp: u16,
    pub mgmt: u16,
    pub cluster: u16,
    pub dir: PathBuf,
    pub child: Option<std::process::Child>,
}

impl Node {
    /// Node `n{i}` with free ports and a fresh data directory, not started.
    pub fn new(i: usize) -> Node {
        Node {
            name: format!("n{i}"),
            amqp: free_port(),
            mgmt: free_port(),
            cluster: free_port(),
            dir: super::temp_data_dir(),
            child: None,
        }
    }

    pub fn uri(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.amqp)
    }

    pub fn api(&self) -> Api {
        Api::new(SocketAddr::from(([127, 0, 0, 1], self.mgmt)))
    }

    /// Starts the node with `--cluster-nodes members`.
    pub fn start(&mut self, members: &str) {
        self.start_with(members, &[], None);
    }

    /// Starts the node with `--cluster-nodes members` and `extra` options; its log (at
    /// `error` unless `extra` sets `--log-level`) goes to the file `log` when given.
    pub fn start_with(&mut self, members: &str, extra: &[String], log: Option<&Path>) {
        self.start_full(members, extra, &[], log);
    }

    /// [`start_with`](Self::start_with) with extra environment (tuning knobs) too; the
    /// output (log lines, panics) is appended to `log` (stdout dropped, stderr inherited
    /// when None).
    pub fn start_full(
        &mut self,
        members: &str,
        extra: &[String],
        env: &[(&str, &str)],
        log: Option<&Path>,
    ) {
        let (stdout, stderr) = match log {
            Some(p) => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .expect("node log file");
                let g = f.try_clone().expect("node log file");
                (f.into(), g.into())
            }
            None => (std::process::Stdio::null(), std::process::Stdio::inherit()),
        };
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_warren"));
        cmd.envs(env.iter().copied())
            .stdout(stdout)
            .stderr(stderr)
            .args(["--node-name", &self.name])
            .args(["--port", &self.amqp.to_string()])
            .args(["--management-port", &self.mgmt.to_string()])
            .args(["--cluster-port", &self.cluster.to_string()])
            .args(["--cluster-nodes", members])
            .arg("--data-dir")
            .arg(&self.dir)
            .args(extra);
        if !extra.iter().any(|a| a == "--log-level") {
            cmd.args(["--log-level", "error"]);
        }
        self.child = Some(cmd.spawn().expect("spawn warren"));
    }

    /// `GET /api/cluster-status` (None while the node does not listen).
    pub async fn status(&self) -> Option<serde_json::Value> {
        tokio::net::TcpStream::connect(("127.0.0.1", self.mgmt))
            .await
            .ok()?;
        let r = self.api().get("/api/cluster-status").await;
        (r.status == 200).then(|| r.json())
    }

    /// SIGSTOP (the process stays, its sockets open, nothing answers): as a node that
    /// hangs or is cut off.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let ok = std::process::Command::new("kill")
                .args([sig, &c.id().to_string()])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "kill {sig} {}", self.name);
        }
    }

    /// kill -9.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.resume();
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A connection to `node` (retried while it starts) and a channel on it.
pub async fn channel(node: &Node) -> (Connection, Channel) {
    let conn = eventually(20, "an AMQP connection", || async {
        Connection::connect(&node.uri(), ConnectionProperties::default())
            .await
            .ok()
    })
    .await;
    let ch = conn.create_channel().await.unwrap();
    (conn, ch)
}

/// Publishes `bodies` persistent to `queue` on a channel in confirm mode and waits for
/// every confirm: all must be acks.
pub async fn publish_acked(ch: &Channel, queue: &str, bodies: impl Iterator<Item = String>) {
    let mut confirms = Vec::new();
    for b in bodies {
        let c = ch
            .basic_publish(
                "".into(),
                queue.into(),
                lapin::options::BasicPublishOptions::default(),
                b.as_bytes(),
                lapin::BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap();
        confirms.push(c);
    }
    for c in confirms {
        let c = tokio::time::timeout(std::time::Duration::from_secs(20), c)
            .await
            .expect("confirm in time")
            .unwrap();
        assert!(c.is_ack(), "confirm: {c:?}");
    }
}

/// The `--cluster-nodes` value naming `nodes`.
pub fn members(nodes: &[Node]) -> String {
    nodes
        .iter()
        .map(|n| format!("{}@127.0.0.1:{}", n.name, n.cluster))
        .collect::<Vec<_>>()
        .join(",")
}

/// Three nodes clustered on loopback, returned once every node names the same metadata
/// leader.
pub async fn three_nodes() -> Vec<Node> {
    let mut nodes: Vec<Node> = (1..=3).map(Node::new).collect();
    let members = members(&nodes);
    for n in &mut nodes {
        n.start(&members);
    }
    eventually(30, "a leader every node agrees on", || async {
        let mut leader = None;
        for n in &nodes {
            let l = n.status().await?["leader"].as_str()?.to_string();
            if leader.get_or_insert(l.clone()) != &l {
                return None;
            }
        }
        leader
    })
    .await;
    nodes
}

/// The queue as `node`'s management API reports it (None while it does not have it).
pub async fn queue(node: &Node, name: &str) -> Option<serde_json::Value> {
    let r = node.api().get(&format!("/api/queues/%2F/{name}")).await;
    (r.status == 200).then(|| r.json())
}
