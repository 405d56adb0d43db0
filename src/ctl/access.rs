//! `warren-ctl` commands for the access rules, as `rabbitmqctl`'s:
//!
//! | command | request |
//! |---|---|
//! | `list_topic_permissions [-p VHOST]` | `GET /api/vhosts/VHOST/topic-permissions` |
//! | `set_topic_permissions [-p VHOST] USER EXCHANGE WRITE READ` | `PUT /api/topic-permissions/VHOST/USER` |
//! | `clear_topic_permissions [-p VHOST] USER [EXCHANGE]` | `DELETE /api/topic-permissions/VHOST/USER[/EXCHANGE]` |
//! | `set_user_limits USER JSON` | `PUT /api/user-limits/USER/max-connections` and `.../max-channels` |
//! | `clear_user_limits USER LIMIT\|all` | `DELETE /api/user-limits/USER/LIMIT` |
//! | `list_user_limits [--user USER]` | `GET /api/user-limits[/USER]` |
//! | `set_operator_policy [-p VHOST] NAME PATTERN JSON [--priority N] [--apply-to queues]` | `PUT /api/operator-policies/VHOST/NAME` |
//! | `clear_operator_policy [-p VHOST] NAME` | `DELETE /api/operator-policies/VHOST/NAME` |
//! | `list_operator_policies [-p VHOST]` | `GET /api/operator-policies/VHOST` |

use super::http::{segment, Endpoint};
use super::{get_json, send_json, Command, CtlError};
use serde_json::{json, Value};
use std::io::Write;

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

pub(super) fn run(ep: &Endpoint, cmd: &Command, out: &mut dyn Write) -> Result<(), CtlError> {
    match cmd {
        Command::ListTopicPermissions { vhost } => {
            let path = format!("/api/vhosts/{}/topic-permissions", segment(vhost));
            for p in get_json(ep, &path)?.as_array().into_iter().flatten() {
                writeln!(
                    out,
                    "{}\t{}\t{}\t{}",
                    s(&p["user"]),
                    s(&p["exchange"]),
                    s(&p["write"]),
                    s(&p["read"])
                )?;
            }
        }
        Command::SetTopicPermissions {
            vhost,
            user,
            exchange,
            write,
            read,
        } => send_json(
            ep,
            "PUT",
            &format!(
                "/api/topic-permissions/{}/{}",
                segment(vhost),
                segment(user)
            ),
            &json!({"exchange": exchange, "write": write, "read": read}),
        )?,
        Command::ClearTopicPermissions {
            vhost,
            user,
            exchange,
        } => {
            let mut path = format!(
                "/api/topic-permissions/{}/{}",
                segment(vhost),
                segment(user)
            );
            if let Some(x) = exchange {
                path = format!("{path}/{}", segment(x));
            }
            ep.request("DELETE", &path, None)?;
        }
        Command::SetUserLimits { user, limits } => {
            let Value::Object(m) = serde_json::from_str(limits)? else {
                return Err(CtlError::Usage("limits must be a JSON object".into()));
            };
            for (k, val) in m {
                let path = format!("/api/user-limits/{}/{}", segment(user), segment(&k));
                send_json(ep, "PUT", &path, &json!({ "value": val }))?;
            }
        }
        Command::ClearUserLimits { user, limit } => {
            let names: Vec<&str> = if limit == "all" {
                vec!["max-connections", "max-channels"]
            } else {
                vec![limit.as_str()]
            };
            for n in names {
                let path = format!("/api/user-limits/{}/{}", segment(user), segment(n));
                ep.request("DELETE", &path, None)?;
            }
        }
        Command::ListUserLimits { user } => {
            let path = match user {
                Some(u) => format!("/api/user-limits/{}", segment(u)),
                None => "/api/user-limits".to_string(),
            };
            for l in get_json(ep, &path)?.as_array().into_iter().flatten() {
                writeln!(out, "{}\t{}", s(&l["user"]), l["value"])?;
            }
        }
        Command::SetOperatorPolicy {
            vhost,
            name,
            pattern,
            definition,
            priority,
            apply_to,
        } => {
            let definition: Value = serde_json::from_str(definition)?;
            send_json(
                ep,
                "PUT",
                &format!(
                    "/api/operator-policies/{}/{}",
                    segment(vhost),
                    segment(name)
                ),
                &json!({"pattern": pattern, "definition": definition,
                        "priority": priority, "apply-to": apply_to}),
            )?
        }
        Command::ClearOperatorPolicy { vhost, name } => {
            ep.request(
                "DELETE",
                &format!(
                    "/api/operator-policies/{}/{}",
                    segment(vhost),
                    segment(name)
                ),
                None,
            )?;
        }
        Command::ListOperatorPolicies { vhost } => {
            let path = format!("/api/operator-policies/{}", segment(vhost));
            for p in get_json(ep, &path)?.as_array().into_iter().flatten() {
                writeln!(
                    out,
                    "{}\t{}\t{}\t{}\t{}",
                    s(&p["name"]),
                    s(&p["pattern"]),
                    s(&p["apply-to"]),
                    p["definition"],
                    p["priority"]
                )?;
            }
        }
        _ => return Err(CtlError::Usage("not an access-rule command".into())),
    }
    Ok(())
}
