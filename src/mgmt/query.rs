//! The query parameters every GET of RabbitMQ's management API takes, applied to the JSON
//! a handler produced (RabbitMQ's `rabbit_mgmt_util` `columns`, `sort`, `sort_reverse`,
//! `page`, `page_size`, `name`, `use_regex`): a middleware, so the handlers stay unaware.
//!
//! As RabbitMQ 3.10.8 answers (observed with curl): `page` turns the listings of queues,
//! exchanges, vhosts, connections and channels into `{filtered_count, item_count, items,
//! page, page_count, page_size, total_count}` (page size 100 unless given, at most 500),
//! filtered by `name` (a case-insensitive substring, or a case-insensitive regular
//! expression with `use_regex=true`); a page or page size that is not an integer is 400
//! `Pagination parameters are invalid`, one out of bounds 400 `invalid_pagination_parameters`,
//! a page past the end 400 `page_out_of_range`. `sort` orders any listing by a dotted key,
//! `sort_reverse=true` reverses it, and `columns` keeps only the dotted keys named, in
//! listings and single objects alike. Other listings ignore `page`.

use super::{ApiError, ApiResult};
use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};
use std::cmp::Ordering;

/// Largest response body reshaped (bigger ones are returned as they are).
const MAX_BODY: usize = 256 << 20;
const MAX_PAGE_SIZE: i64 = 500;
/// Bound on a `name` regex's compiled size.
const REGEX_LIMIT: usize = 1 << 20;

/// The parameters of one request that change its answer.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Shape {
    columns: Option<Vec<String>>,
    sort: Option<String>,
    sort_reverse: bool,
    page: Option<String>,
    page_size: Option<String>,
    name: Option<String>,
    use_regex: bool,
}

/// Keeps an item by its name.
type NameFilter = Box<dyn Fn(&str) -> bool>;

/// Which page, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub page: usize,
    pub size: usize,
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Shape {
    pub fn parse(query: &str) -> Shape {
        let mut s = Shape::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = decode(v);
            match decode(k).as_str() {
                "columns" if !v.is_empty() => {
                    s.columns = Some(v.split(',').map(str::to_string).collect())
                }
                "sort" if !v.is_empty() => s.sort = Some(v),
                "sort_reverse" => s.sort_reverse = v == "true",
                "page" => s.page = Some(v),
                "page_size" => s.page_size = Some(v),
                "name" if !v.is_empty() => s.name = Some(v),
                "use_regex" => s.use_regex = v == "true",
                _ => {}
            }
        }
        s
    }

    pub fn is_plain(&self) -> bool {
        self.columns.is_none() && self.sort.is_none() && !self.sort_reverse && self.page.is_none()
    }

    /// The requested page, checked as RabbitMQ checks it (before the listing is read).
    pub fn page(&self) -> ApiResult<Option<Page>> {
        let Some(p) = &self.page else {
            return Ok(None);
        };
        let invalid = || ApiError {
            status: StatusCode::BAD_REQUEST,
            error: "bad_request",
            reason: "Pagination parameters are invalid".into(),
        };
        let page: i64 = p.trim().parse().map_err(|_| invalid())?;
        let size: Option<i64> = match &self.page_size {
            Some(s) => Some(s.trim().parse().map_err(|_| invalid())?),
            None => None,
        };
        let size_ok = size.is_none_or(|s| (1..=MAX_PAGE_SIZE).contains(&s));
        if page < 1 || !size_ok {
            let size = size.map_or("undefined".to_string(), |s| s.to_string());
            return Err(ApiError {
                status: StatusCode::BAD_REQUEST,
                error: "invalid_pagination_parameters",
                reason: format!(
                    "Invalid pagination parameters: page number {page}, page size {size}"
                ),
            });
        }
        Ok(Some(Page {
            page: usize::try_from(page).unwrap_or(usize::MAX),
            size: size.map_or(100, |s| s as usize),
        }))
    }

    fn name_filter(&self) -> Option<NameFilter> {
        let name = self.name.clone()?;
        if self.use_regex {
            let re = regex::RegexBuilder::new(&name)
                .case_insensitive(true)
                .size_limit(REGEX_LIMIT)
                .build()
                .ok();
            Some(Box::new(move |n| {
                re.as_ref().is_some_and(|r| r.is_match(n))
            }))
        } else {
            let needle = name.to_lowercase();
            Some(Box::new(move |n| n.to_lowercase().contains(&needle)))
        }
    }

    /// Applies sorting, the page and the columns to a handler's JSON.
    pub fn apply(&self, v: Value, page: Option<Page>) -> ApiResult<Value> {
        let items = match v {
            Value::Array(items) => items,
            Value::Object(o) => return Ok(Value::Object(self.columns_of(o))),
            other => return Ok(other),
        };
        let total = items.len();
        let mut items = match (page, self.name_filter()) {
            (Some(_), Some(keep)) => items
                .into_iter()
                .filter(|i| i.get("name").and_then(Value::as_str).is_some_and(&keep))
                .collect(),
            _ => items,
        };
        if let Some(key) = &self.sort {
            items.sort_by(|a, b| compare(lookup(a, key), lookup(b, key)));
        }
        if self.sort_reverse {
            items.reverse();
        }
        let shape = |items: Vec<Value>| -> Vec<Value> {
            items
                .into_iter()
                .map(|i| match i {
                    Value::Object(o) => Value::Object(self.columns_of(o)),
                    other => other,
                })
                .collect()
        };
        let Some(p) = page else {
            return Ok(Value::Array(shape(items)));
        };
        let filtered = items.len();
        let start = (p.page - 1).saturating_mul(p.size);
        if p.page > 1 && start >= filtered {
            return Err(ApiError {
                status: StatusCode::BAD_REQUEST,
                error: "page_out_of_range",
                reason: format!(
                    "Page out of range, page: {} page size: {}, len: {filtered}",
                    p.page, p.size
                ),
            });
        }
        let page_items: Vec<Value> = items.into_iter().skip(start).take(p.size).collect();
        Ok(serde_json::json!({
            "filtered_count": filtered,
            "item_count": page_items.len(),
            "items": shape(page_items),
            "page": p.page,
            "page_count": filtered.div_ceil(p.size),
            "page_size": p.size,
            "total_count": total,
        }))
    }

    fn columns_of(&self, o: Map<String, Value>) -> Map<String, Value> {
        match &self.columns {
            Some(cols) => keep(o, &cols.iter().map(|c| c.as_str()).collect::<Vec<_>>()),
            None => o,
        }
    }
}

/// Keeps the dotted `paths` of an object (`arguments.x` keeps `arguments` with only `x`).
fn keep(mut o: Map<String, Value>, paths: &[&str]) -> Map<String, Value> {
    let mut out = Map::new();
    for p in paths {
        let (head, rest) = match p.split_once('.') {
            Some((h, r)) => (h, Some(r)),
            None => (*p, None),
        };
        let Some(v) = o.get(head) else { continue };
        match (rest, v) {
            (None, _) => {
                out.insert(head.to_string(), v.clone());
            }
            (Some(rest), Value::Object(inner)) => {
                let sub = keep(inner.clone(), &[rest]);
                match out.get_mut(head) {
                    Some(Value::Object(existing)) => existing.extend(sub),
                    _ => {
                        out.insert(head.to_string(), Value::Object(sub));
                    }
                }
            }
            (Some(_), _) => {}
        }
    }
    o.clear();
    out
}

fn lookup<'a>(v: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted.split('.').try_fold(v, |v, k| v.get(k))
}

/// An order over JSON values: absent, null, booleans, numbers, strings, then the rest.
fn compare(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    fn rank(v: Option<&Value>) -> u8 {
        match v {
            None | Some(Value::Null) => 0,
            Some(Value::Bool(_)) => 1,
            Some(Value::Number(_)) => 2,
            Some(Value::String(_)) => 3,
            Some(_) => 4,
        }
    }
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => {
            let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
            x.partial_cmp(&y).unwrap_or(Ordering::Equal)
        }
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        _ => rank(a).cmp(&rank(b)),
    }
}

/// Listings RabbitMQ paginates: queues and exchanges (all or one vhost's), vhosts,
/// connections, channels.
fn paginated(path: &str) -> bool {
    let segs: Vec<&str> = path
        .trim_start_matches("/api/")
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    matches!(
        segs.as_slice(),
        ["queues" | "exchanges"]
            | ["queues" | "exchanges", _]
            | ["vhosts" | "connections" | "channels"]
    )
}

/// The middleware: GET requests with shaping parameters get their JSON reshaped.
pub async fn shape(req: Request, next: Next) -> Response {
    if req.method() != Method::GET {
        return next.run(req).await;
    }
    let shape = Shape::parse(req.uri().query().unwrap_or(""));
    if shape.is_plain() {
        return next.run(req).await;
    }
    let page = if paginated(req.uri().path()) {
        match shape.page() {
            Ok(p) => p,
            Err(e) => return e.into_response(),
        }
    } else {
        None
    };
    let resp = next.run(req).await;
    if resp.status() != StatusCode::OK {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let Ok(v) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, axum::body::Body::from(bytes));
    };
    match shape.apply(v, page) {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn queues() -> Value {
        json!([
            {"name": "Abc", "messages": 3, "arguments": {"x": 1, "y": 2}},
            {"name": "abd", "messages": 1, "arguments": {}},
            {"name": "xyz", "arguments": {}},
        ])
    }

    fn run(q: &str, v: Value) -> ApiResult<Value> {
        let s = Shape::parse(q);
        let page = s.page()?;
        s.apply(v, page)
    }

    #[test]
    fn pages_filter_and_count_as_rabbitmq() {
        let v = run("page=1&page_size=2&name=AB", queues()).unwrap();
        assert_eq!(v["filtered_count"], 2);
        assert_eq!(v["total_count"], 3);
        assert_eq!(v["page_count"], 1);
        assert_eq!(v["items"][1]["name"], "abd");
        let v = run("page=2&page_size=2", queues()).unwrap();
        assert_eq!(v["items"], json!([{"name": "xyz", "arguments": {}}]));
        assert_eq!(v["item_count"], 1);
        let v = run("page=1&name=%5Ea&use_regex=true", queues()).unwrap();
        assert_eq!(v["filtered_count"], 2, "case-insensitive regex");
        let v = run("page=1&name=(&use_regex=true", queues()).unwrap();
        assert_eq!(v["filtered_count"], 0, "an invalid regex matches nothing");
        let v = run("page=1", json!([])).unwrap();
        assert_eq!(v["page_count"], 0);
    }

    #[test]
    fn bad_pages_as_rabbitmq() {
        let err = |q: &str| run(q, queues()).unwrap_err();
        let e = err("page=abc");
        assert_eq!(
            (e.error, e.reason.as_str()),
            ("bad_request", "Pagination parameters are invalid")
        );
        let e = err("page=1&page_size=x");
        assert_eq!(e.error, "bad_request");
        let e = err("page=0");
        assert_eq!(
            e.reason,
            "Invalid pagination parameters: page number 0, page size undefined"
        );
        let e = err("page=1&page_size=501");
        assert_eq!(
            (e.error, e.reason.as_str()),
            (
                "invalid_pagination_parameters",
                "Invalid pagination parameters: page number 1, page size 501"
            )
        );
        let e = run("page=5", json!([])).unwrap_err();
        assert_eq!(
            (e.error, e.reason.as_str()),
            (
                "page_out_of_range",
                "Page out of range, page: 5 page size: 100, len: 0"
            )
        );
        assert!(run("page=99999999999999999999999", queues()).is_err());
    }

    #[test]
    fn columns_and_sort() {
        let v = run(
            "columns=name,messages,arguments.x&sort=name&sort_reverse=true",
            queues(),
        )
        .unwrap();
        assert_eq!(
            v,
            json!([
                {"name": "xyz", "arguments": {}},
                {"name": "abd", "messages": 1, "arguments": {}},
                {"name": "Abc", "messages": 3, "arguments": {"x": 1}},
            ])
        );
        let v = run("sort=messages", queues()).unwrap();
        let names: Vec<_> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].clone())
            .collect();
        assert_eq!(
            names,
            vec!["xyz", "abd", "Abc"],
            "absent first, then by number"
        );
        let v = run(
            "columns=rabbitmq_version",
            json!({"rabbitmq_version": "3.10.8", "node": "n"}),
        )
        .unwrap();
        assert_eq!(v, json!({"rabbitmq_version": "3.10.8"}));
        assert_eq!(decode("a%2Cb+c%ZZ%"), "a,b c%ZZ%");
    }
}
