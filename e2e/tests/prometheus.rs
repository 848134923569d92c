//! The chart's alerts and dashboards against a real Prometheus (Debian's `prometheus`
//! package: `prometheus` and `promtool`, see `sublet_e2e::prometheus`):
//!
//! - the PrometheusRule the chart renders passes `promtool check rules`, and
//!   `promtool test rules` runs `e2e/prometheus/alerts.test.yaml` on it: one group per
//!   alert, each firing on a sick synthetic series and quiet on a healthy one. Every
//!   shipped alert must have its group, and the unit tests must catch an alert that never
//!   fires and one that fires on healthy series (both checked by breaking the rules);
//! - a real Prometheus scrapes a running `sublet dev` and a `sublet-provider` process (as
//!   the chart's ServiceMonitors would: same jobs, same target labels) and evaluates the
//!   shipped rules; after S3 traffic, audits, repairs and a provider's failed audit, every
//!   query of every dashboard panel goes through its HTTP API and must answer `success`,
//!   with data unless listed in [`EXPECTED_EMPTY`], and with every label its legend shows.
//!
//! The rules are rendered with `helm template` (default values), never copied. Without
//! helm the tests skip as `e2e/tests/chart.rs` does (`SUBLET_REQUIRE_HELM`), without
//! Prometheus likewise (`SUBLET_REQUIRE_PROMETHEUS`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::Method;
use serde_json::{Value, json};
use sublet_e2e::apiserver::helm;
use sublet_e2e::bench::client::{BenchBody, Connection, Error as S3Error, Expect, Target};
use sublet_e2e::bench::sigv4::Signer;
use sublet_e2e::cluster::{http_call, wait_for};
use sublet_e2e::dev::SubletDev;
use sublet_e2e::prometheus::{PROMETHEUS, Prometheus, binary, sample_value};
use sublet_e2e::skip::HELM;
use sublet_e2e::{files_under, free_addr, wait_http_ok, workspace_binary};
use sublet_provider::client::{ClientConfig, ProviderClient};
use sublet_provider::identity::NodeIdentity;

/// Dashboard queries that answer no series in the scrape test, and why. Each must answer
/// `success`, and must really be empty: a query listed here that returns data means the
/// list is out of date.
const EXPECTED_EMPTY: &[(&str, &str, &str)] = &[
    (
        "repair.json",
        "Rebuild Jobs created by plan",
        "the operator needs a Kubernetes API server and does not run here",
    ),
    (
        "repair.json",
        "Running rebuild Jobs",
        "kube_job_status_active comes from kube-state-metrics, which does not run here",
    ),
    (
        "repair.json",
        "Reconciles by kind",
        "the operator does not run here",
    ),
    (
        "repair.json",
        "Reconcile failures by kind and error",
        "the operator does not run here",
    ),
    (
        "repair.json",
        "Reconcile duration p99",
        "the operator does not run here",
    ),
];

/// What the dashboards' Grafana variables are replaced with: a rate window that covers
/// the whole run at a 1 s scrape interval, and the pool label the test gives its provider
/// targets (as the providers' ServiceMonitor does from the Service's `sublet.dev/pool`).
const POOL: &str = "disks";
const VARIABLES: &[(&str, &str)] = &[("$__rate_interval", "1m"), ("$pool", POOL)];

/// The release namespace every target is given (the ServiceMonitors' `namespace` label).
const NAMESPACE: &str = "storage";
/// Token between the test and its provider process.
const PROVIDER_TOKEN: &str = "prometheus-test-provider-token";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// helm and the named Prometheus binaries, or `None` after the SKIP line (or a failure
/// under the `SUBLET_REQUIRE_*` variable of what is missing).
fn tools(names: &[&str]) -> Option<(PathBuf, Vec<PathBuf>)> {
    let Some(helm) = helm() else {
        HELM.skip("helm not found");
        return None;
    };
    let mut found = Vec::new();
    for name in names {
        match binary(name) {
            Some(bin) => found.push(bin),
            None => {
                PROMETHEUS.skip(&format!("{name} not found"));
                return None;
            }
        }
    }
    Some((helm, found))
}

/// The rule groups of the PrometheusRule the chart ships, rendered with its default
/// values (alerts on, with the dashboards), as a Prometheus rule file's content.
fn shipped_rules(helm: &Path) -> Value {
    let out = Command::new(helm)
        .args([
            "template",
            "sublet",
            ".",
            "--namespace",
            NAMESPACE,
            "--api-versions",
            "monitoring.coreos.com/v1",
            "--set",
            "dashboards.enabled=true",
            "--show-only",
            "templates/prometheusrule.yaml",
        ])
        .current_dir(root().join("charts/sublet"))
        .output()
        .expect("run helm");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "helm template failed:\n{}{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            let value = <serde_yaml::Value as serde::Deserialize>::deserialize(doc).unwrap();
            serde_json::to_value(value).unwrap()
        })
        .filter(|v| !v.is_null())
        .collect();
    assert_eq!(docs.len(), 1, "one PrometheusRule expected: {docs:?}");
    assert_eq!(docs[0]["kind"], "PrometheusRule");
    let groups = docs[0]["spec"]["groups"].clone();
    assert!(groups.is_array(), "no spec.groups in {}", docs[0]);
    json!({ "groups": groups })
}

/// The alert names of a rule file's content, in order.
fn alert_names(rules: &Value) -> Vec<String> {
    rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .filter_map(|r| r["alert"].as_str().map(str::to_owned))
        .collect()
}

/// Writes `rules` as `alerts.rules.yaml` beside a copy of the unit tests into `dir`.
fn write_rules_and_tests(dir: &Path, rules: &Value) -> PathBuf {
    std::fs::write(
        dir.join("alerts.rules.yaml"),
        serde_yaml::to_string(rules).unwrap(),
    )
    .unwrap();
    let tests = dir.join("alerts.test.yaml");
    std::fs::copy(root().join("e2e/prometheus/alerts.test.yaml"), &tests).unwrap();
    tests
}

/// Runs promtool with `args` in `dir`: (success, stdout and stderr).
fn promtool(bin: &Path, dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(bin)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn shipped_alerts_pass_promtool_check_and_their_unit_tests() {
    let Some((helm, bins)) = tools(&["promtool"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rules = shipped_rules(&helm);
    let alerts = alert_names(&rules);
    assert!(!alerts.is_empty(), "the chart ships no alert");
    write_rules_and_tests(dir.path(), &rules);

    let (ok, out) = promtool(
        &bins[0],
        dir.path(),
        &["check", "rules", "alerts.rules.yaml"],
    );
    assert!(ok, "promtool check rules:\n{out}");
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", alerts.len())),
        "{out}"
    );
    let (ok, out) = promtool(&bins[0], dir.path(), &["test", "rules", "alerts.test.yaml"]);
    assert!(ok, "promtool test rules:\n{out}");
    assert!(out.contains("SUCCESS"), "{out}");

    // One group per alert, named after it, with a quiet and a firing evaluation.
    let text = std::fs::read_to_string(root().join("e2e/prometheus/alerts.test.yaml")).unwrap();
    let tests: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let tests = serde_json::to_value(tests).unwrap();
    let mut covered = BTreeMap::new();
    for group in tests["tests"].as_array().unwrap() {
        let name = group["name"].as_str().unwrap();
        let evals = group["alert_rule_test"].as_array().unwrap();
        assert!(
            evals.iter().all(|e| e["alertname"] == name),
            "group {name} evaluates another alert: one group per alert"
        );
        let quiet = evals
            .iter()
            .any(|e| e["exp_alerts"].as_array().is_some_and(Vec::is_empty));
        let fires = evals
            .iter()
            .any(|e| e["exp_alerts"].as_array().is_some_and(|a| !a.is_empty()));
        assert!(quiet && fires, "group {name}: quiet {quiet}, fires {fires}");
        assert!(
            covered.insert(name.to_string(), ()).is_none(),
            "two groups for {name}"
        );
    }
    let covered: BTreeSet<String> = covered.into_keys().collect();
    let shipped: BTreeSet<String> = alerts.into_iter().collect();
    assert_eq!(
        covered, shipped,
        "e2e/prometheus/alerts.test.yaml must have one group per shipped alert"
    );
}

/// `expr` without its final threshold (`... > 0.05` → `...`), or `None` when it has none.
fn without_threshold(expr: &str) -> Option<String> {
    let expr = expr.trim();
    let number_start = expr
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '+' || c == '-'))
        .map_or(0, |i| i + 1);
    expr[number_start..].parse::<f64>().ok()?;
    let head = expr[..number_start].trim_end();
    let head = ["==", "!=", ">=", "<=", ">", "<"]
        .iter()
        .find_map(|op| head.strip_suffix(op))?;
    Some(head.trim_end().to_string())
}

#[test]
fn thresholds_are_found() {
    assert_eq!(
        without_threshold("sum by (a) (rate(x[5m])) > 0.05").as_deref(),
        Some("sum by (a) (rate(x[5m]))")
    );
    assert_eq!(without_threshold("up == 0").as_deref(), Some("up"));
    assert_eq!(
        without_threshold("x / (y > 0) < 1e-1").as_deref(),
        Some("x / (y > 0)")
    );
    assert_eq!(without_threshold("absent(up)"), None);
    assert_eq!(without_threshold("up == bool 0"), None);
}

/// The unit tests can fail: with every alert made unable to fire, and with every alert
/// firing on any series (thresholds and `for` dropped), promtool fails each alert's group.
#[test]
fn alert_unit_tests_catch_alerts_that_never_fire_or_fire_on_healthy_series() {
    let Some((helm, bins)) = tools(&["promtool"]) else {
        return;
    };
    let rules = shipped_rules(&helm);
    let alerts = alert_names(&rules);
    let mutate = |change: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut rules = rules.clone();
        for group in rules["groups"].as_array_mut().unwrap() {
            for rule in group["rules"].as_array_mut().unwrap() {
                change(rule.as_object_mut().unwrap());
            }
        }
        rules
    };
    let never = mutate(&|rule| {
        rule.insert("expr".into(), json!("vector(1) > 2"));
    });
    let always = mutate(&|rule| {
        let expr = rule["expr"].as_str().unwrap();
        let raw = without_threshold(expr).unwrap_or_else(|| {
            panic!(
                "alert {}: no final threshold in `{expr}`; teach this test another way to \
                 make it fire on healthy series",
                rule["alert"]
            )
        });
        rule.insert("expr".into(), json!(raw));
        rule.remove("for");
    });
    for (what, broken) in [("never fires", never), ("fires on anything", always)] {
        let dir = tempfile::tempdir().unwrap();
        write_rules_and_tests(dir.path(), &broken);
        let (ok, out) = promtool(&bins[0], dir.path(), &["test", "rules", "alerts.test.yaml"]);
        assert!(
            !ok,
            "promtool passed rules where every alert {what}:\n{out}"
        );
        for alert in &alerts {
            assert!(
                out.contains(&format!("alertname: {alert},")),
                "the unit tests of {alert} pass although it {what}:\n{out}"
            );
        }
    }
}

/// A `sublet-provider` process with its `/metrics` on `http`; killed when dropped.
struct ProviderProcess {
    child: Child,
    _dir: tempfile::TempDir,
    grpc: SocketAddr,
    http: SocketAddr,
    id: sublet_provider::identity::NodeId,
}

impl ProviderProcess {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let binary = workspace_binary("sublet-provider", "sublet-provider");
        let id = sublet_e2e::provider_node_id(dir.path());
        let (grpc, http) = (free_addr(), free_addr());
        let child = Command::new(&binary)
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--listen", &grpc.to_string()])
            .args(["--http-listen", &http.to_string()])
            .args(["--capacity", "1Gi", "--token", PROVIDER_TOKEN])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_http_ok(http, "/healthz", Duration::from_secs(20));
        ProviderProcess {
            child,
            _dir: dir,
            grpc,
            http,
            id,
        }
    }

    fn client(&self) -> ProviderClient {
        ProviderClient::new(
            &self.grpc.to_string(),
            self.id,
            &ClientConfig {
                identity: Arc::new(NodeIdentity::generate()),
                token: Some(PROVIDER_TOKEN.into()),
            },
        )
        .unwrap()
    }
}

impl Drop for ProviderProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `prometheus.yml` scraping like the chart's ServiceMonitors: job = the Service's
/// `app.kubernetes.io/name`, `namespace` and `pod` of the target, `gateway` or `pool` from
/// the Service's sublet.dev label. Provider `disks-provider-1` is a port nothing answers
/// on: a provider that is down.
fn scrape_config(gateway: SocketAddr, provider: SocketAddr, dead: SocketAddr) -> String {
    format!(
        r#"global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - alerts.rules.yaml
scrape_configs:
  - job_name: sublet-gateway
    static_configs:
      - targets: ["{gateway}"]
        labels: {{namespace: {NAMESPACE}, pod: dev-0, gateway: dev}}
  - job_name: sublet-provider
    static_configs:
      - targets: ["{provider}"]
        labels: {{namespace: {NAMESPACE}, pod: {POOL}-provider-0, pool: {POOL}}}
      - targets: ["{dead}"]
        labels: {{namespace: {NAMESPACE}, pod: {POOL}-provider-1, pool: {POOL}}}
"#
    )
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// How many targets [`scrape_config`] names.
const TARGETS: f64 = 3.0;

/// Waits until every target was scraped at or after `at` (unix seconds): their `up`
/// samples are all that recent.
fn wait_scraped_since(prometheus: &Prometheus, at: f64) {
    wait_for(
        &format!("every target scraped since {at}"),
        Duration::from_secs(20),
        || {
            let first = |promql: &str| {
                let result = prometheus.query_ok(promql);
                result.first().and_then(sample_value)
            };
            match (first("count(up)"), first("min(timestamp(up))")) {
                (Some(n), Some(t)) if n == TARGETS && t >= at => Ok(()),
                other => Err(format!("(targets, oldest last scrape): {other:?}")),
            }
        },
    );
}

/// An admin call on `sublet dev` that must answer 200; its JSON.
fn admin_post(dev: &SubletDev, path: &str) -> Value {
    let token = dev.admin_token();
    let (status, body) = http_call(
        dev.admin_addr,
        "POST",
        path,
        Some(&token),
        Duration::from_secs(60),
    )
    .unwrap();
    assert_eq!(status, 200, "POST {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("POST {path}: {e}: {body}"))
}

/// Removes the shard files of `sublet dev`'s providers `which` (all when `None`); how
/// many.
fn remove_shards(dev: &SubletDev, which: Option<&[usize]>) -> usize {
    let providers = dev.dir.join("providers");
    let dirs: Vec<PathBuf> = match which {
        Some(indexes) => indexes
            .iter()
            .map(|i| providers.join(i.to_string()))
            .collect(),
        None => vec![providers],
    };
    let mut removed = 0;
    for dir in dirs {
        for shard in files_under(&dir)
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "shard"))
        {
            std::fs::remove_file(shard).unwrap();
            removed += 1;
        }
    }
    removed
}

/// S3 traffic, a scrub, a provider's disk lost and repaired, a re-encode pass, and at last
/// every shard lost (audits queue them, a repair fails, a read fails its shard calls).
fn gateway_traffic(dev: &SubletDev, runtime: &tokio::runtime::Runtime) {
    let signer = Signer {
        access_key: dev.access_key.clone(),
        secret_key: dev.secret_key.clone(),
        region: "us-east-1".into(),
        service: "s3".into(),
    };
    let target = Arc::new(Target::new(&dev.endpoint(), signer, "metrics", false).unwrap());
    let mut s3 = Connection::new(target);
    let mut call = |method: Method, key: Option<&str>, query: &[(&str, &str)], body: BenchBody| {
        runtime.block_on(s3.request(method, key, query, &[], body, Expect::Text))
    };
    call(Method::PUT, None, &[], BenchBody::empty()).unwrap();
    for key in ["kept", "second"] {
        let body = BenchBody::Bytes(Some(Bytes::from(vec![5u8; 200_000])));
        call(Method::PUT, Some(key), &[], body).unwrap();
    }
    call(Method::GET, Some("kept"), &[], BenchBody::empty()).unwrap();
    call(Method::GET, None, &[("list-type", "2")], BenchBody::empty()).unwrap();
    match call(Method::GET, Some("absent"), &[], BenchBody::empty()) {
        Err(S3Error::Status { status, .. }) if status == 404 => {}
        other => panic!("GET of a missing key: {:?}", other.map(|a| a.status)),
    }
    let scrub = admin_post(dev, "/admin/v1/scrub");
    assert_eq!(scrub["bad"], 0, "{scrub}");

    // One provider loses its disk (it holds one shard of each object): an audit finds the
    // losses and a repair rebuilds them. No read first: a failed read would take the
    // provider out of placement for a minute, and with 4+2 on six providers the rebuilt
    // shards have nowhere else to go.
    assert!(remove_shards(dev, Some(&[0])) > 0, "no shard on provider 0");
    admin_post(dev, "/admin/v1/audit?samples=64");
    let repair = admin_post(dev, "/admin/v1/plans/standard/repair");
    assert!(repair["repaired"].as_u64() > Some(0), "{repair}");
    admin_post(dev, "/admin/v1/plans/standard/reencode");

    // Another provider loses its disk and an audit queues the losses; then every shard
    // goes: the repair cannot read what it needs, the objects count as lost and a read
    // fails its shard calls.
    assert!(remove_shards(dev, Some(&[1])) > 0, "no shard on provider 1");
    admin_post(dev, "/admin/v1/audit?samples=64");
    assert!(remove_shards(dev, None) > 0);
    let repair = admin_post(dev, "/admin/v1/plans/standard/repair");
    assert!(repair["failed"].as_u64() > Some(0), "{repair}");
    admin_post(dev, "/admin/v1/audit?samples=64");
    assert!(
        call(Method::GET, Some("kept"), &[], BenchBody::empty()).is_err(),
        "a read without shards succeeded"
    );
}

/// Puts, reads and audits on the provider process, and one audit of a shard it does not
/// hold (outcome `not_found`).
fn provider_traffic(provider: &ProviderProcess, runtime: &tokio::runtime::Runtime) {
    runtime.block_on(async {
        let client = provider.client();
        let put = client
            .put_shard("prom.0.0", Bytes::from(vec![3u8; 64 * 1024]))
            .await
            .unwrap();
        client.get_shard("prom.0.0", None).await.unwrap();
        client.audit("prom.0.0", 0, 1024, &put.hash).await.unwrap();
        assert!(client.audit("gone.0.0", 0, 1024, &put.hash).await.is_err());
    });
}

/// One query of a dashboard panel.
struct PanelQuery {
    dashboard: String,
    panel: String,
    expr: String,
    legend: String,
}

/// Every panel query of the shipped dashboards, rows' panels included.
fn panel_queries() -> Vec<PanelQuery> {
    let dir = root().join("charts/sublet/dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let dashboard = file.file_name().unwrap().to_string_lossy().into_owned();
        let board: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap())
            .unwrap_or_else(|e| panic!("{dashboard}: {e}"));
        let mut panels: Vec<&Value> = board["panels"].as_array().unwrap().iter().collect();
        while let Some(panel) = panels.pop() {
            if let Some(inner) = panel["panels"].as_array() {
                panels.extend(inner);
            }
            for target in panel["targets"].as_array().into_iter().flatten() {
                let Some(expr) = target["expr"].as_str() else {
                    continue;
                };
                out.push(PanelQuery {
                    dashboard: dashboard.clone(),
                    panel: panel["title"].as_str().unwrap_or("?").to_string(),
                    expr: expr.to_string(),
                    legend: target["legendFormat"].as_str().unwrap_or("").to_string(),
                });
            }
        }
    }
    out
}

/// `expr` with the Grafana variables of [`VARIABLES`] replaced; fails on any other.
fn with_variables(expr: &str) -> String {
    let mut out = expr.to_string();
    for (name, value) in VARIABLES {
        out = out.replace(name, value);
    }
    assert!(
        !out.contains('$'),
        "`{expr}` uses a Grafana variable this test does not know: add it to VARIABLES"
    );
    out
}

/// The label names a legend shows (`{{pod}} {{method}}` → pod, method).
fn legend_labels(legend: &str) -> Vec<String> {
    legend
        .split("{{")
        .skip(1)
        .filter_map(|part| part.split_once("}}"))
        .map(|(name, _)| name.trim().to_string())
        .collect()
}

#[test]
fn legend_labels_are_found() {
    assert_eq!(legend_labels("{{pod}} {{ method }} x"), ["pod", "method"]);
    assert!(legend_labels("down").is_empty());
}

#[test]
fn a_real_prometheus_scrapes_sublet_and_answers_every_dashboard_query() {
    let Some((helm, bins)) = tools(&["prometheus"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("alerts.rules.yaml"),
        serde_yaml::to_string(&shipped_rules(&helm)).unwrap(),
    )
    .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let provider = ProviderProcess::start();
    let dev = SubletDev::start(&dir.path().join("dev"));
    let prometheus = Prometheus::start(
        &bins[0],
        dir.path(),
        &scrape_config(dev.admin_addr, provider.http, free_addr()),
    );

    // Every target scraped once before any traffic, so the counters' first values are
    // what Prometheus saw first (as for a long-running provider).
    wait_scraped_since(&prometheus, unix_now());
    let up: BTreeMap<String, f64> = prometheus
        .query_ok("up")
        .iter()
        .map(|s| {
            (
                s["metric"]["pod"].as_str().unwrap_or("?").to_string(),
                sample_value(s).unwrap(),
            )
        })
        .collect();
    let expected_up = BTreeMap::from([
        ("dev-0".to_string(), 1.0),
        (format!("{POOL}-provider-0"), 1.0),
        (format!("{POOL}-provider-1"), 0.0),
    ]);
    assert_eq!(up, expected_up, "targets' up");

    provider_traffic(&provider, &runtime);
    gateway_traffic(&dev, &runtime);
    // The gateway reads plan usage and health from metadata at most every 5 s (its
    // REFRESH_EVERY): wait until Prometheus has both objects, and both lost.
    wait_for(
        "both objects stored and lost, as Prometheus sees them",
        Duration::from_secs(20),
        || {
            let sum = |promql: &str| {
                let result = prometheus.query_ok(promql);
                result.first().and_then(sample_value)
            };
            match (
                sum("sum(sublet_gateway_plan_objects)"),
                sum(r#"sum(sublet_gateway_plan_health_objects{class="lost"})"#),
            ) {
                (Some(objects), Some(lost)) if objects == 2.0 && lost == 2.0 => Ok(()),
                other => Err(format!("(objects, lost): {other:?}")),
            }
        },
    );
    // Two scrapes after the last change, so that rate() and increase() have two samples
    // of the newest series.
    wait_scraped_since(&prometheus, unix_now() + 2.0);

    // Grafana's pool variable: label_values(sublet_provider_capacity_bytes, pool).
    let (status, pools) = prometheus.api(&format!(
        "label/pool/values?match[]={}",
        sublet_e2e::bench::sigv4::uri_encode("sublet_provider_capacity_bytes", false)
    ));
    assert_eq!(status, 200, "{pools}");
    assert_eq!(pools["data"], json!([POOL]), "pool variable values");

    let queries = panel_queries();
    assert!(queries.len() > 30, "only {} panel queries", queries.len());
    let mut problems = Vec::new();
    let mut empty_panels = BTreeSet::new();
    let mut panels_with_data = BTreeSet::new();
    for q in &queries {
        let promql = with_variables(&q.expr);
        let (status, answer) = prometheus.query(&promql);
        let place = format!("{} / {}: `{promql}`", q.dashboard, q.panel);
        if status != 200 || answer["status"] != "success" {
            problems.push(format!("{place} failed ({status}): {answer}"));
            continue;
        }
        let result_type = &answer["data"]["resultType"];
        let Some(result) = answer["data"]["result"].as_array() else {
            problems.push(format!("{place}: no result list: {answer}"));
            continue;
        };
        if result_type != "vector" {
            problems.push(format!("{place}: a {result_type} instead of a vector"));
        }
        for series in result {
            if sample_value(series).is_none() {
                problems.push(format!("{place}: a sample without a value: {series}"));
            }
            for label in legend_labels(&q.legend) {
                if series["metric"].get(&label).is_none() {
                    problems.push(format!(
                        "{place}: legend `{}` shows {label}, which series {} lacks",
                        q.legend, series["metric"]
                    ));
                }
            }
        }
        let key = (q.dashboard.clone(), q.panel.clone());
        if result.is_empty() {
            empty_panels.insert(key);
        } else {
            panels_with_data.insert(key);
        }
    }
    // A panel whose queries all answer nothing.
    let empty: BTreeSet<(String, String)> = empty_panels
        .difference(&panels_with_data)
        .cloned()
        .collect();
    let expected: BTreeSet<(String, String)> = EXPECTED_EMPTY
        .iter()
        .map(|(d, p, _)| (d.to_string(), p.to_string()))
        .collect();
    for (dashboard, panel) in empty.difference(&expected) {
        problems.push(format!(
            "{dashboard} / {panel}: no data, although the run produced its metrics"
        ));
    }
    for (dashboard, panel) in expected.difference(&empty) {
        problems.push(format!(
            "{dashboard} / {panel} is listed in EXPECTED_EMPTY but has data now"
        ));
    }
    // Each query of a panel with data answers data too (a panel's second query may not
    // hide behind its first).
    for (dashboard, panel) in empty_panels.intersection(&panels_with_data) {
        problems.push(format!(
            "{dashboard} / {panel}: one of its queries answers nothing"
        ));
    }
    assert!(
        problems.is_empty(),
        "dashboard queries against a real Prometheus:\n{}",
        problems.join("\n")
    );

    // What the run did, as the panels show it.
    let value = |promql: &str| {
        let result = prometheus.query_ok(promql);
        assert_eq!(result.len(), 1, "`{promql}`: {result:?}");
        sample_value(&result[0]).unwrap()
    };
    assert_eq!(
        value(r#"count(up{job="sublet-provider"} == 0) or vector(0)"#),
        1.0
    );
    assert_eq!(
        value(r#"sum(up{job="sublet-provider", pool=~"disks"})"#),
        1.0
    );
    assert_eq!(
        value(r#"sum(max by (plan) (sublet_gateway_plan_objects))"#),
        2.0
    );

    // The shipped rules evaluate without error on the real series.
    let rules = wait_for("every rule evaluated", Duration::from_secs(20), || {
        let (_, answer) = prometheus.api("rules");
        let rules: Vec<Value> = answer["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        if rules.is_empty() || rules.iter().any(|r| r["health"] == "unknown") {
            Err(format!("{answer}"))
        } else {
            Ok(rules)
        }
    });
    for rule in &rules {
        assert_eq!(
            rule["health"], "ok",
            "rule {}: {}",
            rule["name"], rule["lastError"]
        );
    }
    // And alert on what happened: the dead provider (pending for its grace period), the
    // provider's first failed audit, the objects whose every shard is gone.
    let alert_state = |name: &str, state: &str, label: (&str, &str)| {
        wait_for(
            &format!("alert {name} {state}"),
            Duration::from_secs(20),
            || {
                let (_, answer) = prometheus.api("alerts");
                let alerts = answer["data"]["alerts"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let found = alerts.iter().any(|a| {
                    a["labels"]["alertname"] == name
                        && a["state"] == state
                        && a["labels"][label.0] == label.1
                });
                if found {
                    Ok(())
                } else {
                    Err(format!("{answer}"))
                }
            },
        );
    };
    alert_state(
        "SubletProviderDown",
        "pending",
        ("pod", &format!("{POOL}-provider-1")),
    );
    alert_state(
        "SubletAuditsFailing",
        "firing",
        ("pod", &format!("{POOL}-provider-0")),
    );
    alert_state("SubletObjectsLost", "firing", ("plan", "standard"));
    drop(dev);
}
