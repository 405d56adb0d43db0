//! `warren-ctl`: users, vhosts, permissions, limits and definitions of a running broker,
//! through the management HTTP API paths RabbitMQ uses (so the same tool works against
//! RabbitMQ with its management plugin):
//!
//! | command | request |
//! |---|---|
//! | `list_users` | `GET /api/users` |
//! | `add_user NAME PASS [--tags t1,t2]` | `PUT /api/users/NAME` |
//! | `set_user_tags NAME [TAG...]` | `GET` then `PUT /api/users/NAME` (password hash kept) |
//! | `delete_user NAME` | `DELETE /api/users/NAME` |
//! | `list_vhosts` / `add_vhost NAME` / `delete_vhost NAME` | `GET /api/vhosts`, `PUT`/`DELETE /api/vhosts/NAME` |
//! | `list_permissions [-p VHOST]` | `GET /api/permissions` (filtered) |
//! | `set_permissions [-p VHOST] USER CONF WRITE READ` | `PUT /api/permissions/VHOST/USER` |
//! | `clear_permissions [-p VHOST] USER` | `DELETE /api/permissions/VHOST/USER` |
//! | `set_vhost_limits [-p VHOST] JSON` | `PUT /api/vhost-limits/VHOST/max-connections` and `.../max-queues` |
//! | `export_definitions FILE` / `import_definitions FILE` | `GET` / `POST /api/definitions` (`-` is stdout / stdin) |
//! | `add_vhost NAME --default-queue-type TYPE` | `PUT /api/vhosts/NAME` with `default_queue_type` |
//!
//! and the access rules of [`access`]: topic permissions, user limits, operator policies.
//! | `cluster_status` | `GET /api/cluster-status` (Warren's; disk nodes, running nodes, leader) |
//! | `join_cluster NODE` | `POST /api/cluster/join` (Warren's): the node at `--url` joins NODE's cluster |
//! | `forget_cluster_node NODE` | `DELETE /api/cluster/nodes/NODE` (Warren's) |

mod access;
pub mod http;

use http::{segment, Endpoint, HttpError};
use serde_json::{json, Value};
use std::io::Write;

/// A `warren-ctl` subcommand (names as `rabbitmqctl`'s).
#[derive(Debug, Clone, clap::Subcommand)]
#[command(rename_all = "snake_case")]
pub enum Command {
    /// List users and their tags.
    ListUsers,
    /// Add a user (or replace its password and tags).
    AddUser {
        name: String,
        password: String,
        /// Comma-separated tags (administrator, monitoring, management, policymaker).
        #[arg(long, default_value = "")]
        tags: String,
    },
    /// Replace a user's tags.
    SetUserTags { name: String, tags: Vec<String> },
    /// Delete a user.
    DeleteUser { name: String },
    /// List virtual hosts.
    ListVhosts,
    /// Create a virtual host.
    AddVhost {
        name: String,
        /// Queue type for queues declared without x-queue-type (classic, quorum, stream).
        #[arg(long = "default-queue-type")]
        default_queue_type: Option<String>,
    },
    /// Delete a virtual host (its connections are closed, its queues deleted).
    DeleteVhost { name: String },
    /// List permissions in a vhost.
    ListPermissions {
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
    },
    /// Set a user's configure / write / read patterns in a vhost.
    SetPermissions {
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
        user: String,
        configure: String,
        write: String,
        read: String,
    },
    /// Remove a user's permissions in a vhost.
    ClearPermissions {
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
        user: String,
    },
    /// Set vhost limits, e.g. '{"max-connections": 10, "max-queues": 100}' (-1 = no limit).
    SetVhostLimits {
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
        limits: String,
    },
    /// List topic permissions in a vhost.
    ListTopicPermissions {
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
    },
    /// Set a user's topic permissions (write / read patterns on routing keys) on an exchange.
    SetTopicPermissions {
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
        user: String,
        exchange: String,
        write: String,
        read: String,
    },
    /// Remove a user's topic permissions in a vhost (on one exchange, or all).
    ClearTopicPermissions {
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
        user: String,
        exchange: Option<String>,
    },
    /// Set user limits, e.g. '{"max-connections": 10, "max-channels": 20}' (-1 = no limit).
    SetUserLimits { user: String, limits: String },
    /// Remove one user limit (max-connections, max-channels) or all ("all").
    ClearUserLimits { user: String, limit: String },
    /// List user limits (of one user, or all).
    ListUserLimits {
        #[arg(long)]
        user: Option<String>,
    },
    /// Set an operator policy: NAME PATTERN DEFINITION-JSON.
    SetOperatorPolicy {
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
        name: String,
        pattern: String,
        definition: String,
        #[arg(long, default_value_t = 0)]
        priority: i64,
        #[arg(long = "apply-to", default_value = "queues")]
        apply_to: String,
    },
    /// Remove an operator policy.
    ClearOperatorPolicy {
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
        name: String,
    },
    /// List operator policies in a vhost.
    ListOperatorPolicies {
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
    },
    /// Write the definitions JSON to FILE ('-' for stdout).
    ExportDefinitions { file: String },
    /// Import a definitions JSON file ('-' for stdin), e.g. one exported from RabbitMQ.
    ImportDefinitions { file: String },
    /// Show the cluster: its nodes, which are running, the metadata leader.
    ClusterStatus,
    /// Make the node at --url join the cluster of NODE (name@host:cluster-port).
    JoinCluster { node: String },
    /// Remove NODE (a node name) from the cluster's membership.
    ForgetClusterNode { node: String },
    /// Add a member of quorum queue QUEUE on NODE (rabbitmq-queues add_member).
    AddMember {
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
        queue: String,
        node: String,
    },
    /// Remove quorum queue QUEUE's member on NODE (rabbitmq-queues delete_member).
    DeleteMember {
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
        queue: String,
        node: String,
    },
    /// Add a member on NODE to every quorum queue (`all`) or to those with an even
    /// number of members (`even`).
    Grow {
        node: String,
        strategy: String,
        #[arg(short = 'p', long = "vhost")]
        vhost: Option<String>,
    },
    /// Remove every quorum queue's member on NODE.
    Shrink {
        node: String,
        #[arg(short = 'p', long = "vhost")]
        vhost: Option<String>,
    },
    /// Move quorum queue leaders so that nodes lead about as many each (`all` or `quorum`).
    Rebalance {
        kind: String,
        #[arg(short = 'p', long = "vhost")]
        vhost: Option<String>,
    },
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Usage(String),
}

fn get_json(ep: &Endpoint, path: &str) -> Result<Value, CtlError> {
    let r = ep.request("GET", path, None)?;
    Ok(serde_json::from_slice(&r.body)?)
}

fn send_json(ep: &Endpoint, method: &str, path: &str, body: &Value) -> Result<(), CtlError> {
    ep.request(method, path, Some(body.to_string().as_bytes()))?;
    Ok(())
}

fn tags_of(v: &Value) -> String {
    match v {
        Value::Array(a) => a
            .iter()
            .filter_map(|t| t.as_str())
            .collect::<Vec<_>>()
            .join(","),
        Value::String(s) => s.clone(),
        _ => String::new(),
    }
}

/// Runs one command, writing its tab-separated output (as `rabbitmqctl -q`) to `out`.
pub fn run(ep: &Endpoint, cmd: &Command, out: &mut dyn Write) -> Result<(), CtlError> {
    match cmd {
        Command::ListUsers => {
            for u in get_json(ep, "/api/users")?.as_array().into_iter().flatten() {
                writeln!(
                    out,
                    "{}\t[{}]",
                    u["name"].as_str().unwrap_or(""),
                    tags_of(&u["tags"])
                )?;
            }
        }
        Command::AddUser {
            name,
            password,
            tags,
        } => send_json(
            ep,
            "PUT",
            &format!("/api/users/{}", segment(name)),
            &json!({"password": password, "tags": tags}),
        )?,
        Command::SetUserTags { name, tags } => {
            let path = format!("/api/users/{}", segment(name));
            let u = get_json(ep, &path)?;
            let mut body = json!({
                "password_hash": u["password_hash"],
                "tags": tags.join(","),
            });
            if let Some(alg) = u.get("hashing_algorithm") {
                body["hashing_algorithm"] = alg.clone();
            }
            send_json(ep, "PUT", &path, &body)?
        }
        Command::DeleteUser { name } => {
            ep.request("DELETE", &format!("/api/users/{}", segment(name)), None)?;
        }
        Command::ListVhosts => {
            for v in get_json(ep, "/api/vhosts")?
                .as_array()
                .into_iter()
                .flatten()
            {
                writeln!(out, "{}", v["name"].as_str().unwrap_or(""))?;
            }
        }
        Command::AddVhost {
            name,
            default_queue_type,
        } => {
            let mut body = json!({});
            if let Some(t) = default_queue_type {
                body["default_queue_type"] = json!(t);
            }
            send_json(ep, "PUT", &format!("/api/vhosts/{}", segment(name)), &body)?
        }
        Command::DeleteVhost { name } => {
            ep.request("DELETE", &format!("/api/vhosts/{}", segment(name)), None)?;
        }
        Command::ListPermissions { vhost } => {
            let path = format!("/api/vhosts/{}/permissions", segment(vhost));
            for p in get_json(ep, &path)?.as_array().into_iter().flatten() {
                writeln!(
                    out,
                    "{}\t{}\t{}\t{}",
                    p["user"].as_str().unwrap_or(""),
                    p["configure"].as_str().unwrap_or(""),
                    p["write"].as_str().unwrap_or(""),
                    p["read"].as_str().unwrap_or("")
                )?;
            }
        }
        Command::SetPermissions {
            vhost,
            user,
            configure,
            write,
            read,
        } => send_json(
            ep,
            "PUT",
            &format!("/api/permissions/{}/{}", segment(vhost), segment(user)),
            &json!({"configure": configure, "write": write, "read": read}),
        )?,
        Command::ClearPermissions { vhost, user } => {
            ep.request(
                "DELETE",
                &format!("/api/permissions/{}/{}", segment(vhost), segment(user)),
                None,
            )?;
        }
        Command::SetVhostLimits { vhost, limits } => {
            let v: Value = serde_json::from_str(limits)?;
            let Value::Object(m) = v else {
                return Err(CtlError::Usage("limits must be a JSON object".into()));
            };
            for (k, val) in m {
                let path = format!("/api/vhost-limits/{}/{}", segment(vhost), segment(&k));
                send_json(ep, "PUT", &path, &json!({ "value": val }))?;
            }
        }
        Command::ListTopicPermissions { .. }
        | Command::SetTopicPermissions { .. }
        | Command::ClearTopicPermissions { .. }
        | Command::SetUserLimits { .. }
        | Command::ClearUserLimits { .. }
        | Command::ListUserLimits { .. }
        | Command::SetOperatorPolicy { .. }
        | Command::ClearOperatorPolicy { .. }
        | Command::ListOperatorPolicies { .. } => access::run(ep, cmd, out)?,
        Command::ExportDefinitions { file } => {
            let r = ep.request("GET", "/api/definitions", None)?;
            if file == "-" {
                out.write_all(&r.body)?;
                writeln!(out)?;
            } else {
                crate::store::definitions::write_atomically(std::path::Path::new(file), &r.body)?;
            }
        }
        Command::ImportDefinitions { file } => {
            let body = if file == "-" {
                let mut v = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut v)?;
                v
            } else {
                std::fs::read(file)?
            };
            // Validate locally first: a clear error instead of the server's.
            let _: Value = serde_json::from_slice(&body)?;
            ep.request("POST", "/api/definitions", Some(&body))?;
        }
        Command::ClusterStatus => cluster_status(&get_json(ep, "/api/cluster-status")?, out)?,
        Command::JoinCluster { node } => {
            send_json(ep, "POST", "/api/cluster/join", &json!({ "node": node }))?
        }
        Command::ForgetClusterNode { node } => {
            let path = format!("/api/cluster/nodes/{}", segment(node));
            ep.request("DELETE", &path, None)?;
        }
        Command::AddMember { vhost, queue, node } => {
            let path = format!(
                "/api/quorum-queues/{}/{}/members",
                segment(vhost),
                segment(queue)
            );
            send_json(ep, "POST", &path, &json!({ "node": node }))?
        }
        Command::DeleteMember { vhost, queue, node } => {
            let path = format!(
                "/api/quorum-queues/{}/{}/members/{}",
                segment(vhost),
                segment(queue),
                segment(node)
            );
            ep.request("DELETE", &path, None)?;
        }
        Command::Grow {
            node,
            strategy,
            vhost,
        } => {
            let body = json!({ "node": node, "strategy": strategy, "vhost": vhost });
            members_outcome(&post_json(ep, "/api/quorum-queues/grow", &body)?, out)?
        }
        Command::Shrink { node, vhost } => {
            let body = json!({ "node": node, "vhost": vhost });
            members_outcome(&post_json(ep, "/api/quorum-queues/shrink", &body)?, out)?
        }
        Command::Rebalance { kind, vhost } => {
            if kind != "all" && kind != "quorum" {
                return Err(CtlError::Usage(format!("rebalance {kind}: all or quorum")));
            }
            let r = post_json(
                ep,
                "/api/quorum-queues/rebalance",
                &json!({ "vhost": vhost }),
            )?;
            writeln!(out, "Leaders moved: {}", r["leaders_moved"])?;
        }
    }
    Ok(())
}

fn post_json(ep: &Endpoint, path: &str, body: &Value) -> Result<Value, CtlError> {
    let r = ep.request("POST", path, Some(body.to_string().as_bytes()))?;
    Ok(serde_json::from_slice(&r.body)?)
}

/// `grow` / `shrink`: one line per queue, as rabbitmq-queues prints them.
fn members_outcome(v: &Value, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "vhost\tname\tresult")?;
    for q in v.as_array().into_iter().flatten() {
        let s = |k: &str| q[k].as_str().unwrap_or("").to_string();
        writeln!(out, "{}\t{}\t{}", s("vhost"), s("name"), s("result"))?;
    }
    Ok(())
}

/// `rabbitmqctl cluster_status`'s sections, from `GET /api/cluster-status`.
fn cluster_status(s: &Value, out: &mut dyn Write) -> std::io::Result<()> {
    let node = s["node"].as_str().unwrap_or("");
    let members: Vec<&Value> = s["members"].as_array().into_iter().flatten().collect();
    let name = |m: &&Value| m["name"].as_str().unwrap_or("").to_string();
    writeln!(out, "Cluster status of node {node} ...")?;
    writeln!(out, "Basics\n\nCluster name: warren\n")?;
    writeln!(out, "Disk Nodes\n")?;
    for m in &members {
        writeln!(out, "{}", name(m))?;
    }
    writeln!(out, "\nRunning Nodes\n")?;
    for m in members.iter().filter(|m| m["running"] == true) {
        writeln!(out, "{}", name(m))?;
    }
    writeln!(out, "\nMetadata Store Leader\n")?;
    writeln!(out, "{}", s["leader"].as_str().unwrap_or("(none)"))?;
    writeln!(
        out,
        "\nRaft term: {}, applied index: {}",
        s["term"], s["applied"]
    )
}
