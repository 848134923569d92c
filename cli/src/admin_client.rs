//! The admin API's client behind `sublet plan|schedule|pool|provider|bucket|status` (and
//! `user`/`key`, see `users.rs`). Each
//! command returns the text to print, so tests read exactly what a user sees.

use std::fmt::Write as _;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde::Deserialize as _;
use serde_json::Value;

use sublet_gateway::admin::policy::Kind;

/// The admin URL when neither `--admin-url` nor `SUBLET_ADMIN_URL` is set.
pub const DEFAULT_ADMIN_URL: &str = "http://127.0.0.1:9001";

/// How results are printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns.
    #[default]
    Table,
    Yaml,
    Json,
}

/// Where the gateway's admin API is and the token it wants.
#[derive(Clone, Debug)]
pub struct AdminClient {
    url: String,
    token: Option<String>,
}

impl AdminClient {
    pub fn new(url: &str, token: Option<String>) -> Self {
        AdminClient {
            url: url.trim_end_matches('/').to_owned(),
            token: token.filter(|t| !t.is_empty()),
        }
    }

    /// One request; the JSON answer, or an error with the gateway's message.
    pub(crate) async fn call(
        &self,
        method: http::Method,
        path: &str,
        body: Option<String>,
    ) -> anyhow::Result<Option<Value>> {
        let url = format!("{}{path}", self.url);
        let Some(token) = &self.token else {
            bail!(
                "no admin token: pass --token or set SUBLET_ADMIN_TOKEN (the gateway prints \
                 where it keeps it, by default admin.token in its data directory)"
            );
        };
        let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        let mut request = http::Request::builder()
            .method(method)
            .uri(&url)
            .header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        if body.is_some() {
            request = request.header(http::header::CONTENT_TYPE, "application/yaml");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
        let response = client
            .request(request)
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach the gateway admin API at {url}: {e}"))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("{url}: reading the answer: {e}"))?
            .to_bytes();
        let value: Option<Value> = serde_json::from_slice(&bytes).ok();
        if status.is_success() {
            return Ok(value);
        }
        let mut message = value
            .as_ref()
            .and_then(|v| v["error"].as_str())
            .map_or_else(
                || format!("{status}: {}", String::from_utf8_lossy(&bytes).trim()),
                str::to_owned,
            );
        if let Some(problems) = value.as_ref().and_then(|v| v["problems"].as_array()) {
            for p in problems {
                let _ = write!(message, "\n  {}", p.as_str().unwrap_or_default());
            }
        }
        if status == http::StatusCode::NOT_FOUND && !message.contains("does not exist") {
            message.push_str(" (is this gateway's admin API new enough?)");
        }
        bail!("{message}")
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self
            .call(http::Method::GET, path, None)
            .await?
            .unwrap_or_default())
    }
}

/// `sublet plan list`, `sublet schedule list`.
pub async fn list(client: &AdminClient, kind: Kind, output: Output) -> anyhow::Result<String> {
    let answer = client
        .get(&format!("/admin/v1/policy/{}", kind.segment()))
        .await?;
    let mut items = answer["items"].as_array().cloned().unwrap_or_default();
    if kind == Kind::ProviderPool {
        for item in &mut items {
            let name = text(&item["metadata"]["name"]);
            item["status"] = pool_status(client, &name).await;
        }
    }
    match output {
        Output::Table => Ok(resource_table(kind, &items)),
        _ => render(&Value::Array(items), output),
    }
}

/// `sublet plan get NAME`.
pub async fn get(
    client: &AdminClient,
    kind: Kind,
    name: &str,
    output: Output,
) -> anyhow::Result<String> {
    let mut item = client
        .get(&format!("/admin/v1/policy/{}/{name}", kind.segment()))
        .await?;
    if kind == Kind::ProviderPool {
        item["status"] = pool_status(client, name).await;
    }
    match output {
        Output::Table => {
            let mut out = resource_table(kind, std::slice::from_ref(&item));
            for reason in item["status"]["drain"]["blocked"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let _ = writeln!(out, "drain blocked: {}", text(reason));
            }
            Ok(out)
        }
        _ => render(&item, output),
    }
}

/// What the gateway stores on pool `name` and, while it drains, the drain's progress
/// (`GET /admin/v1/pools/{name}`); `null` when the gateway cannot tell.
async fn pool_status(client: &AdminClient, name: &str) -> Value {
    let mut usage = client
        .get(&format!("/admin/v1/pools/{name}"))
        .await
        .unwrap_or_default();
    if let Value::Object(fields) = &mut usage {
        fields.remove("pool");
    }
    usage
}

/// `sublet plan apply -f FILE`: every StoragePlan, StorageSchedule and ProviderPool document
/// of `text` (schedules before plans, as plans name them).
pub async fn apply(client: &AdminClient, text: &str, source: &str) -> anyhow::Result<String> {
    let mut docs = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = serde_yaml::Value::deserialize(doc)
            .with_context(|| format!("{source}: document {}", i + 1))?;
        if value.is_null() {
            continue;
        }
        let kind = value.get("kind").and_then(serde_yaml::Value::as_str);
        let name = value
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(serde_yaml::Value::as_str);
        let kind = match kind {
            Some("StoragePlan") => Kind::StoragePlan,
            Some("StorageSchedule") => Kind::StorageSchedule,
            Some("ProviderPool") => Kind::ProviderPool,
            Some(other) => bail!(
                "{source}: document {}: kind {other} is not managed through the admin API \
                 (StoragePlan, StorageSchedule or ProviderPool)",
                i + 1
            ),
            None => bail!("{source}: document {}: kind is missing", i + 1),
        };
        let Some(name) = name else {
            bail!("{source}: document {}: metadata.name is missing", i + 1);
        };
        docs.push((kind, name.to_owned(), value));
    }
    if docs.is_empty() {
        bail!("{source}: no resources to apply");
    }
    docs.sort_by_key(|(kind, _, _)| match kind {
        Kind::ProviderPool => 0,
        Kind::StorageSchedule => 1,
        Kind::StoragePlan => 2,
    });
    let mut out = String::new();
    for (kind, name, value) in docs {
        let path = format!("/admin/v1/policy/{}/{name}", kind.segment());
        let existed = client.get(&path).await.is_ok();
        client
            .call(
                http::Method::PUT,
                &path,
                Some(serde_yaml::to_string(&value)?),
            )
            .await
            .with_context(|| format!("{}/{name}", kind.name()))?;
        let verb = if existed { "configured" } else { "created" };
        let _ = writeln!(out, "{}/{name} {verb}", kind.name().to_lowercase());
    }
    Ok(out)
}

/// `sublet plan delete NAME`.
pub async fn delete(client: &AdminClient, kind: Kind, name: &str) -> anyhow::Result<String> {
    client
        .call(
            http::Method::DELETE,
            &format!("/admin/v1/policy/{}/{name}", kind.segment()),
            None,
        )
        .await?;
    Ok(format!("{}/{name} deleted\n", kind.name().to_lowercase()))
}

/// `sublet provider list`.
pub async fn providers(client: &AdminClient, output: Output) -> anyhow::Result<String> {
    let answer = client.get("/admin/v1/providers").await?;
    let items = answer["items"].as_array().cloned().unwrap_or_default();
    if output != Output::Table {
        return render(&Value::Array(items), output);
    }
    let now = sublet_gateway::clock::now_ms();
    let rows = items
        .iter()
        .map(|p| {
            vec![
                text(&p["nodeId"]),
                text(&p["pool"]),
                text(&p["zone"]),
                if p["up"].as_bool() == Some(true) {
                    "up".into()
                } else {
                    "down".into()
                },
                p["lastSeen"]
                    .as_i64()
                    .map_or_else(|| "never".into(), |t| ago(now - t)),
                p["freeBytes"]
                    .as_u64()
                    .map_or_else(|| "-".into(), human_bytes),
                p["score"]
                    .as_u64()
                    .map_or_else(|| "-".into(), |s| format!("{s}%")),
                text(&p["shards"]),
                p["bytes"].as_u64().map_or_else(|| "-".into(), human_bytes),
            ]
        })
        .collect();
    Ok(table(
        &[
            "NODE",
            "POOL",
            "ZONE",
            "STATUS",
            "LAST SEEN",
            "FREE",
            "SCORE",
            "SHARDS",
            "STORED",
        ],
        rows,
    ))
}

/// `sublet status`.
pub async fn status(client: &AdminClient, output: Output) -> anyhow::Result<String> {
    let answer = client.get("/admin/v1/status").await?;
    if output != Output::Table {
        return render(&answer, output);
    }
    let plans = answer["plans"].as_array().cloned().unwrap_or_default();
    let rows = plans
        .iter()
        .map(|p| {
            let h = &p["health"];
            let mut name = text(&p["name"]);
            if p["default"].as_bool() == Some(true) {
                name.push_str(" (default)");
            }
            vec![
                name,
                text(&p["redundancy"]),
                text(&h["objects"]),
                h["logicalBytes"]
                    .as_u64()
                    .map_or_else(|| "-".into(), human_bytes),
                text(&h["objectsByHealth"]["healthy"]),
                text(&h["objectsByHealth"]["degraded"]),
                text(&h["objectsByHealth"]["atRisk"]),
                text(&h["objectsByHealth"]["lost"]),
                text(&h["repair"]["due"]),
                text(&h["repair"]["waiting"]),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "PLAN",
            "REDUNDANCY",
            "OBJECTS",
            "SIZE",
            "HEALTHY",
            "DEGRADED",
            "AT RISK",
            "LOST",
            "REPAIR DUE",
            "WAITING",
        ],
        rows,
    );
    let _ = writeln!(
        out,
        "\nproviders: {} of {} up",
        text(&answer["providersUp"]),
        text(&answer["providers"])
    );
    Ok(out)
}

pub(crate) fn render(value: &Value, output: Output) -> anyhow::Result<String> {
    Ok(match output {
        Output::Json => format!("{}\n", serde_json::to_string_pretty(value)?),
        Output::Yaml | Output::Table => serde_yaml::to_string(value)?,
    })
}

pub(crate) fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn resource_table(kind: Kind, items: &[Value]) -> String {
    match kind {
        Kind::StoragePlan => table(
            &[
                "NAME",
                "REDUNDANCY",
                "SEGMENT",
                "ENCRYPTION",
                "SPREAD",
                "POOLS",
                "SCHEDULE",
            ],
            items
                .iter()
                .map(|p| {
                    let spec = &p["spec"];
                    let redundancy =
                        serde_json::from_value::<sublet_crds::StoragePlanSpec>(spec.clone())
                            .map_or_else(|_| "?".into(), |s| s.redundancy_label());
                    let placement = &spec["placement"];
                    let pools = placement["pools"]
                        .as_array()
                        .map(|ps| {
                            ps.iter()
                                .map(|p| text(&p["name"]))
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .filter(|s| !s.is_empty())
                        .unwrap_or_else(|| "any".into());
                    vec![
                        text(&p["metadata"]["name"]),
                        redundancy,
                        text(&spec["segmentSize"]),
                        text(&spec["encryption"]),
                        format!(
                            "{} max {}",
                            text(&placement["spreadBy"]),
                            text(&placement["maxPerDomain"])
                        ),
                        pools,
                        text(&spec["schedule"]),
                    ]
                })
                .collect(),
        ),
        Kind::StorageSchedule => table(
            &[
                "NAME",
                "MIN HEALTHY",
                "GRACE",
                "MAX JOBS",
                "WINDOW",
                "AUDIT",
                "LIFECYCLE RULES",
            ],
            items
                .iter()
                .map(|s| {
                    let spec = &s["spec"];
                    let rebuild = &spec["rebuild"];
                    let window = &rebuild["window"];
                    vec![
                        text(&s["metadata"]["name"]),
                        text(&rebuild["minHealthyShards"]),
                        text(&rebuild["gracePeriod"]),
                        text(&rebuild["maxConcurrentJobs"]),
                        if window.is_null() {
                            "any time".into()
                        } else {
                            format!("{}-{}", text(&window["start"]), text(&window["end"]))
                        },
                        text(&spec["audit"]["interval"]),
                        spec["lifecycle"].as_array().map_or(0, Vec::len).to_string(),
                    ]
                })
                .collect(),
        ),
        Kind::ProviderPool => table(
            &[
                "NAME",
                "CLASS",
                "OWNER",
                "ENDPOINTS",
                "BUCKETS",
                "SHARDS",
                "STORED",
                "DRAIN",
            ],
            items
                .iter()
                .map(|p| {
                    let spec = &p["spec"];
                    let status = &p["status"];
                    vec![
                        text(&p["metadata"]["name"]),
                        text(&spec["class"]),
                        text(&spec["owner"]),
                        spec["endpoints"].as_array().map_or(0, Vec::len).to_string(),
                        spec["buckets"].as_array().map_or(0, Vec::len).to_string(),
                        text(&status["shards"]),
                        status["bytes"]
                            .as_u64()
                            .map_or_else(|| "-".into(), human_bytes),
                        drain_cell(status),
                    ]
                })
                .collect(),
        ),
    }
}

/// The DRAIN column: `-` for a pool not draining, else its state and what is left, e.g.
/// `draining, 120 shards left` or `blocked (see below)`.
fn drain_cell(status: &Value) -> String {
    let drain = &status["drain"];
    let Some(state) = drain["state"].as_str() else {
        return "-".into();
    };
    let left = status["shards"].as_u64().unwrap_or(0);
    match state {
        "drained" => "drained".into(),
        "blocked" => format!("blocked, {left} shards left"),
        other => format!("{other}, {left} shards left"),
    }
}

/// `sublet bucket list`.
pub async fn buckets(client: &AdminClient, output: Output) -> anyhow::Result<String> {
    let answer = client.get("/admin/v1/buckets").await?;
    let items = answer["items"].as_array().cloned().unwrap_or_default();
    match output {
        Output::Table => Ok(bucket_table(&items)),
        _ => render(&Value::Array(items), output),
    }
}

/// `sublet bucket set-plan BUCKET PLAN` (or `--clear` with `plan` None).
pub async fn set_bucket_plan(
    client: &AdminClient,
    bucket: &str,
    plan: Option<&str>,
) -> anyhow::Result<String> {
    let body = serde_json::json!({ "defaultPlan": plan }).to_string();
    let answer = client
        .call(
            http::Method::PUT,
            &format!("/admin/v1/buckets/{bucket}"),
            Some(body),
        )
        .await?
        .unwrap_or_default();
    Ok(match plan {
        Some(plan) => format!("bucket {bucket}: new objects use plan {plan}\n"),
        None => format!(
            "bucket {bucket}: new objects use the gateway's default plan {}\n",
            text(&answer["effectivePlan"])
        ),
    })
}

fn bucket_table(items: &[Value]) -> String {
    table(
        &["NAME", "PLAN", "OWN PLAN", "VERSIONING"],
        items
            .iter()
            .map(|b| {
                vec![
                    text(&b["name"]),
                    text(&b["effectivePlan"]),
                    text(&b["defaultPlan"]),
                    text(&b["versioning"]),
                ]
            })
            .collect(),
    )
}

/// Columns padded to their widest cell, two spaces apart.
pub(crate) fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn ago(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["NAME", "SIZE"],
            vec![
                vec!["a".into(), "1".into()],
                vec!["longer-name".into(), "22".into()],
            ],
        );
        assert_eq!(t, "NAME         SIZE\na            1\nlonger-name  22\n");
    }

    #[test]
    fn pools_show_what_they_hold_and_how_a_drain_goes() {
        let pool = |name: &str, status: Value| {
            serde_json::json!({"metadata": {"name": name},
                "spec": {"class": "owned", "endpoints": [{}]}, "status": status})
        };
        let out = resource_table(
            Kind::ProviderPool,
            &[
                pool("home", serde_json::json!({"shards": 40, "bytes": 3 << 20})),
                pool(
                    "friends",
                    serde_json::json!({"shards": 12, "bytes": 1 << 20,
                        "drain": {"state": "draining", "plans": {"photos": 12}}}),
                ),
                pool(
                    "old",
                    serde_json::json!({"shards": 0, "bytes": 0, "drain": {"state": "drained"}}),
                ),
                pool("gone", Value::Null),
            ],
        );
        assert_eq!(
            out,
            "NAME     CLASS  OWNER  ENDPOINTS  BUCKETS  SHARDS  STORED   DRAIN\n\
             home     owned  -      1          0        40      3.0 MiB  -\n\
             friends  owned  -      1          0        12      1.0 MiB  draining, 12 shards left\n\
             old      owned  -      1          0        0       0 B      drained\n\
             gone     owned  -      1          0        -       -        -\n"
        );
    }

    #[test]
    fn sizes_and_ages_read_like_kubectl() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
        assert_eq!(ago(90_000), "1m ago");
        assert_eq!(ago(5_000), "5s ago");
    }
}
