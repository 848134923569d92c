//! The Helm chart in `charts/sublet`: it follows the workspace version, ships exactly the
//! CRDs crdgen writes and the operator's RBAC, lints, renders manifests that pass offline
//! schema checks with every feature on, rejects bad values naming the field, renders a
//! quickstart the sublet-crds loader accepts, and its dashboards and alerts name only metrics
//! the binaries really export.
//!
//! helm (and the prometheus-operator schemas) come from `.ci/install-helm`. Without them
//! the tests that need them print one `SKIP` line and pass, except with
//! `SUBLET_REQUIRE_HELM=1` (`.ci/run` sets it), where they fail. The metrics check also
//! drives the AWS CLI (`SUBLET_REQUIRE_CLIENTS`, see `sublet_e2e::skip`).
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;
use sublet_e2e::clients::run_ok;
use sublet_e2e::daemon::Daemon;
use sublet_e2e::dev::SubletDev;
use sublet_e2e::skip;
use sublet_e2e::{files_under, free_addr, http_get, wait_http_ok, workspace_binary};
use sublet_provider::client::{ClientConfig, ProviderClient};
use sublet_provider::identity::NodeIdentity;

/// Every feature of the chart switched on.
const ALL_ON: &[&str] = &[
    "--set",
    "quickstart.enabled=true",
    "--set",
    "serviceMonitor.enabled=true",
    "--set",
    "dashboards.enabled=true",
];

/// Metrics the dashboards and alerts may use that no sublet binary exports, and who does.
const EXTERNAL_METRICS: &[(&str, &str)] = &[
    ("up", "Prometheus, for every scraped target"),
    (
        "kube_job_status_active",
        "kube-state-metrics (running rebuild Jobs)",
    ),
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn chart() -> PathBuf {
    root().join("charts/sublet")
}

/// Where `.ci/install-helm` puts helm and the npm packages.
fn tools_dir() -> PathBuf {
    match std::env::var_os("SUBLET_HELM_DIR") {
        Some(dir) => dir.into(),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/sublet/kubectl-layer"),
    }
}

/// Says in one line why a test cannot run here and lets it pass; fails it under
/// `SUBLET_REQUIRE_HELM=1` (`.ci/run` sets it), where the tools must be installed.
fn missing(what: &str) {
    skip::HELM.skip(&format!("{what} not found"));
}

/// helm from `$SUBLET_HELM`, `.ci/install-helm`'s directory, or PATH.
fn helm() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let candidates = std::env::var_os("SUBLET_HELM")
        .map(PathBuf::from)
        .into_iter()
        .chain([tools_dir().join("bin/helm")])
        .chain(std::env::split_paths(&path).map(|d| d.join("helm")));
    for candidate in candidates {
        let works = Command::new(&candidate)
            .args(["version", "--short"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if works {
            return Some(candidate);
        }
    }
    None
}

/// Runs helm with `args` in the chart's directory; stdout, or stderr as the error.
fn run_helm(helm: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(helm)
        .args(args)
        .current_dir(chart())
        .output()
        .expect("run helm");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!("{stderr}{stdout}"))
    }
}

/// `helm template sublet . --include-crds ARGS`, with the Prometheus Operator's API present.
fn template(helm: &Path, extra: &[&str]) -> Vec<Value> {
    let mut args = vec![
        "template",
        "sublet",
        ".",
        "--namespace",
        "storage",
        "--include-crds",
        "--api-versions",
        "monitoring.coreos.com/v1",
    ];
    args.extend_from_slice(extra);
    let text = run_helm(helm, &args).unwrap_or_else(|e| panic!("helm {args:?} failed:\n{e}"));
    documents(&text)
}

/// The non-empty documents of a multi-document YAML text, as JSON.
fn documents(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| {
            let value = <serde_yaml::Value as serde::Deserialize>::deserialize(doc).unwrap();
            serde_json::to_value(value).unwrap()
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn kind_name(doc: &Value) -> String {
    format!(
        "{}/{}",
        doc["kind"].as_str().unwrap_or("?"),
        doc["metadata"]["name"].as_str().unwrap_or("?")
    )
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// The workspace version from the root Cargo.toml's `[workspace.package]`.
fn workspace_version() -> String {
    let text = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let mut in_package = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_package = line == "[workspace.package]";
        } else if in_package && let Some(rest) = line.strip_prefix("version") {
            let value = rest.trim_start().trim_start_matches('=').trim();
            return value.trim_matches('"').to_string();
        }
    }
    panic!("no version in [workspace.package] of Cargo.toml");
}

#[test]
fn chart_version_and_app_version_follow_the_workspace() {
    let chart: Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart().join("Chart.yaml")).unwrap())
            .unwrap();
    let version = workspace_version();
    assert_eq!(
        chart["version"], version,
        "charts/sublet/Chart.yaml version must be the workspace version"
    );
    assert_eq!(
        chart["appVersion"], version,
        "charts/sublet/Chart.yaml appVersion must be the workspace version"
    );
}

#[test]
fn chart_ships_exactly_the_crds_crdgen_writes() {
    let yaml_names = |dir: &Path| -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".yaml"))
            .collect()
    };
    let generated = root().join("crds");
    let shipped = chart().join("crds");
    let names = yaml_names(&generated);
    assert!(names.len() >= 4, "crds/ holds {names:?}");
    assert_eq!(
        yaml_names(&shipped),
        names,
        "charts/sublet/crds must hold the same files as crds/: \
         cp crds/*.sublet.dev.yaml charts/sublet/crds/"
    );
    for name in &names {
        assert_eq!(
            std::fs::read_to_string(shipped.join(name)).unwrap(),
            std::fs::read_to_string(generated.join(name)).unwrap(),
            "charts/sublet/crds/{name} differs from crds/{name}: \
             cp crds/*.sublet.dev.yaml charts/sublet/crds/"
        );
    }
}

#[test]
fn chart_rbac_is_the_operators_least_privilege_role() {
    let operator = std::fs::read_to_string(root().join("operator/rbac.yaml")).unwrap();
    assert_eq!(
        std::fs::read_to_string(chart().join("files/operator-rbac.yaml")).unwrap(),
        operator,
        "charts/sublet/files/operator-rbac.yaml differs from operator/rbac.yaml: \
         cp operator/rbac.yaml charts/sublet/files/operator-rbac.yaml"
    );
    let Some(helm) = helm() else {
        return missing("helm");
    };
    let docs = template(&helm, &[]);
    let roles = of_kind(&docs, "ClusterRole");
    assert_eq!(roles.len(), 1, "one ClusterRole, got {}", roles.len());
    let expected: Value = serde_yaml::from_str(&operator).unwrap();
    assert_eq!(roles[0]["rules"], expected["rules"]);
    // Nothing else grants anything: no Role, no second binding.
    assert!(of_kind(&docs, "Role").is_empty());
    let bindings = of_kind(&docs, "ClusterRoleBinding");
    assert_eq!(bindings.len(), 1);
    assert_eq!(bindings[0]["roleRef"]["name"], roles[0]["metadata"]["name"]);
    assert_eq!(bindings[0]["subjects"][0]["kind"], "ServiceAccount");
    assert_eq!(bindings[0]["subjects"][0]["namespace"], "storage");

    // Several replicas elect a leader: a Role in the release namespace grants the Lease.
    let leader = std::fs::read_to_string(root().join("operator/leader-rbac.yaml")).unwrap();
    assert_eq!(
        std::fs::read_to_string(chart().join("files/operator-leader-rbac.yaml")).unwrap(),
        leader,
        "charts/sublet/files/operator-leader-rbac.yaml differs from operator/leader-rbac.yaml: \
         cp operator/leader-rbac.yaml charts/sublet/files/operator-leader-rbac.yaml"
    );
    let docs = template(&helm, &["--set", "replicaCount=2"]);
    let deployment = of_kind(&docs, "Deployment")[0];
    assert!(
        deployment["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .unwrap()
            .contains(&Value::from("--leader-elect"))
    );
    let roles = of_kind(&docs, "Role");
    assert_eq!(roles.len(), 1, "one Role, got {}", roles.len());
    let expected: Value = serde_yaml::from_str(&leader).unwrap();
    assert_eq!(roles[0]["rules"], expected["rules"]);
    assert_eq!(roles[0]["metadata"]["namespace"], "storage");
    let bindings = of_kind(&docs, "RoleBinding");
    assert_eq!(bindings.len(), 1);
    assert_eq!(bindings[0]["metadata"]["namespace"], "storage");
    assert_eq!(bindings[0]["roleRef"]["kind"], "Role");
    assert_eq!(bindings[0]["roleRef"]["name"], roles[0]["metadata"]["name"]);
    assert_eq!(bindings[0]["subjects"][0]["namespace"], "storage");
    validate_offline(&docs);
}

#[test]
fn chart_lints_strictly() {
    let Some(helm) = helm() else {
        return missing("helm");
    };
    for extra in [&[][..], ALL_ON] {
        let mut args = vec!["lint", "--strict", "."];
        args.extend_from_slice(extra);
        let out = run_helm(&helm, &args).unwrap_or_else(|e| panic!("helm {args:?}:\n{e}"));
        assert!(out.contains("0 chart(s) failed"), "{out}");
    }
}

#[test]
fn default_install_is_just_the_operator() {
    let Some(helm) = helm() else {
        return missing("helm");
    };
    let docs = template(&helm, &[]);
    let kinds: BTreeSet<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
            "Deployment",
            "Service",
            "ServiceAccount",
        ]),
    );
    validate_offline(&docs);

    let deployment = of_kind(&docs, "Deployment")[0];
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let version = workspace_version();
    assert_eq!(
        container["image"],
        format!("ghcr.io/sublet-dev/sublet:{version}")
    );
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        args.contains(&format!("--gateway-image=ghcr.io/sublet-dev/sublet:{version}").as_str())
    );
    assert!(
        !args.contains(&"--leader-elect"),
        "one replica needs no Lease"
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/healthz");

    // Without the Prometheus Operator's API nothing of it is rendered, even when asked for.
    let text = run_helm(
        &helm,
        &[
            "template",
            "sublet",
            ".",
            "--set",
            "serviceMonitor.enabled=true",
            "--set",
            "dashboards.enabled=true",
        ],
    )
    .unwrap();
    let docs = documents(&text);
    assert!(of_kind(&docs, "ServiceMonitor").is_empty());
    assert!(of_kind(&docs, "PrometheusRule").is_empty());
    assert_eq!(
        of_kind(&docs, "ConfigMap").len(),
        3,
        "dashboards need no API"
    );
}

#[test]
fn every_feature_renders_valid_manifests() {
    let Some(helm) = helm() else {
        return missing("helm");
    };
    let mut extra = ALL_ON.to_vec();
    extra.extend(["--set", "replicaCount=2", "--set", "watchNamespace=storage"]);
    let docs = template(&helm, &extra);
    validate_offline(&docs);

    let monitors = of_kind(&docs, "ServiceMonitor");
    let ports: BTreeMap<String, &Value> = monitors
        .iter()
        .map(|m| (kind_name(m), &m["spec"]["endpoints"][0]["port"]))
        .collect();
    assert_eq!(ports.len(), 3, "operator, gateways, providers: {ports:?}");
    // The ports the operator names on the Services it renders (operator/src/render).
    assert_eq!(ports["ServiceMonitor/sublet-operator-gateways"], "admin");
    assert_eq!(ports["ServiceMonitor/sublet-operator-providers"], "http");
    for m in &monitors {
        assert_eq!(m["spec"]["namespaceSelector"]["matchNames"][0], "storage");
    }
    let dashboards = of_kind(&docs, "ConfigMap");
    assert_eq!(dashboards.len(), 3);
    for d in &dashboards {
        assert_eq!(d["metadata"]["labels"]["grafana_dashboard"], "1");
    }
    assert_eq!(of_kind(&docs, "PrometheusRule").len(), 1);
    let deployment = of_kind(&docs, "Deployment")[0];
    let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(args.contains("--leader-elect"), "{args}");
    assert!(args.contains("--namespace=storage"), "{args}");
}

/// Checks every rendered object offline: Kubernetes kinds against the k8s-openapi types
/// (a field they drop is a field Kubernetes doesn't know), sublet kinds with the
/// sublet-crds loader, Prometheus Operator kinds against their CRD schemas (node).
fn validate_offline(docs: &[Value]) {
    let mut problems = Vec::new();
    let mut ours = String::new();
    let mut monitoring = Vec::new();
    for doc in docs {
        let api = doc["apiVersion"].as_str().unwrap_or_default();
        let kind = doc["kind"].as_str().unwrap_or_default();
        let result = match (api, kind) {
            ("v1", "ServiceAccount") => round_trip::<ServiceAccount>(doc),
            ("v1", "Service") => round_trip::<Service>(doc),
            ("v1", "ConfigMap") => round_trip::<ConfigMap>(doc),
            ("apps/v1", "Deployment") => round_trip::<Deployment>(doc),
            ("rbac.authorization.k8s.io/v1", "ClusterRole") => round_trip::<ClusterRole>(doc),
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                round_trip::<ClusterRoleBinding>(doc)
            }
            ("rbac.authorization.k8s.io/v1", "Role") => round_trip::<Role>(doc),
            ("rbac.authorization.k8s.io/v1", "RoleBinding") => round_trip::<RoleBinding>(doc),
            ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
                round_trip::<CustomResourceDefinition>(doc)
            }
            ("sublet.dev/v1alpha1", _) => {
                ours.push_str("---\n");
                ours.push_str(&serde_yaml::to_string(doc).unwrap());
                Ok(())
            }
            ("monitoring.coreos.com/v1", _) => {
                monitoring.push(doc.clone());
                Ok(())
            }
            _ => Err("no offline check for this kind: add one".to_string()),
        };
        if let Err(e) = result {
            problems.push(format!("{}: {e}", kind_name(doc)));
        }
    }
    if !ours.is_empty()
        && let Err(errors) = sublet_crds::load_str("rendered", &ours)
    {
        problems.push(format!(
            "the sublet-crds loader refuses the rendered resources:\n{errors}"
        ));
    }
    if !monitoring.is_empty() {
        validate_monitoring(&monitoring, &mut problems);
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Deserializes `doc` as `K` and back: a type error fails, a field `K` doesn't have is lost
/// on the way and named.
fn round_trip<K: serde::de::DeserializeOwned + serde::Serialize>(
    doc: &Value,
) -> Result<(), String> {
    let typed: K = serde_json::from_value(doc.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&typed).unwrap();
    let mut lost = Vec::new();
    compare(doc, &back, String::new(), &mut lost);
    if lost.is_empty() {
        Ok(())
    } else {
        Err(format!("not Kubernetes fields: {}", lost.join(", ")))
    }
}

fn compare(original: &Value, back: &Value, path: String, lost: &mut Vec<String>) {
    match (original, back) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                let here = format!("{path}.{key}");
                match b.get(key) {
                    Some(other) => compare(value, other, here, lost),
                    None if value.is_null() => {}
                    None => lost.push(here),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                compare(x, y, format!("{path}[{i}]"), lost);
            }
        }
        // `minimum: 0` comes back as 0.0 from an f64 field: the same number.
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => {}
        (a, b) if a == b => {}
        (a, b) => lost.push(format!("{path} ({a} read as {b})")),
    }
}

fn validate_monitoring(objects: &[Value], problems: &mut Vec<String>) {
    let models = tools_dir().join("node_modules/@kubernetes-models/prometheus-operator");
    let node_works = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !node_works || !models.join("package.json").exists() {
        return missing("node or @kubernetes-models/prometheus-operator");
    }
    let mut child = Command::new("node")
        .arg(root().join("e2e/scripts/validate_monitoring.mjs"))
        .arg(&models)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    serde_json::to_writer(child.stdin.take().unwrap(), objects).unwrap();
    let out = child.wait_with_output().unwrap();
    if !out.status.success() {
        problems.push(format!(
            "prometheus-operator schemas refuse the rendered objects:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
}

#[test]
fn quickstart_is_a_gateway_pool_and_plan_the_loader_accepts() {
    let Some(helm) = helm() else {
        return missing("helm");
    };
    let docs = template(&helm, &["--set", "quickstart.enabled=true"]);
    let ours: Vec<&Value> = docs
        .iter()
        .filter(|d| d["apiVersion"] == sublet_crds::API_VERSION)
        .collect();
    assert_eq!(ours.len(), 3, "{ours:?}");
    for doc in &ours {
        assert_eq!(
            doc["metadata"]["annotations"]["helm.sh/resource-policy"],
            "keep",
            "{} must survive helm uninstall",
            kind_name(doc)
        );
        assert_eq!(doc["metadata"]["namespace"], "storage");
    }
    let text: String = ours
        .iter()
        .map(|d| format!("---\n{}", serde_yaml::to_string(d).unwrap()))
        .collect();
    let config = sublet_crds::load_str("quickstart", &text).unwrap_or_else(|e| panic!("{e}"));
    let gateway = config.gateway().expect("one StorageGateway");
    let plan = &config.plans[&gateway.spec.default_plan];
    let pool = &config.pools["local"];
    assert_eq!(plan.spec.placement.pools[0].name, "local");
    let nodes = pool.spec.nodes.as_ref().expect("in-cluster nodes");
    assert_eq!(
        nodes.storage.host_path.as_deref(),
        Some("/var/lib/sublet"),
        "the node's disk"
    );

    // With three nodes the same quickstart erasure-codes; that loads too.
    let docs = template(
        &helm,
        &[
            "--set",
            "quickstart.enabled=true",
            "--set",
            "quickstart.plan.redundancy.replicas=null",
            "--set",
            "quickstart.plan.redundancy.erasure.dataShards=2",
            "--set",
            "quickstart.plan.redundancy.erasure.parityShards=1",
        ],
    );
    validate_offline(&docs);

    // With an existing PostgreSQL Secret the gateway runs several replicas on it.
    let docs = template(
        &helm,
        &[
            "--set",
            "quickstart.enabled=true",
            "--set",
            "quickstart.gateway.postgres.secretName=sublet-db",
        ],
    );
    validate_offline(&docs);
    let text: String = docs
        .iter()
        .filter(|d| d["apiVersion"] == sublet_crds::API_VERSION)
        .map(|d| format!("---\n{}", serde_yaml::to_string(d).unwrap()))
        .collect();
    let config = sublet_crds::load_str("quickstart", &text).unwrap_or_else(|e| panic!("{e}"));
    let gateway = config.gateway().expect("one StorageGateway");
    assert_eq!(gateway.spec.replicas, 2);
    assert!(gateway.spec.metadata.sqlite.is_none());
    let postgres = gateway.spec.metadata.postgres.as_ref().expect("postgres");
    assert_eq!(
        serde_json::to_value(postgres).unwrap()["secretRef"]["name"],
        "sublet-db"
    );
    // Its pool settings come through to the gateway's spec.
    assert_eq!(
        (postgres.pool_size(), postgres.pool_wait()),
        (16, std::time::Duration::from_secs(10))
    );
    assert_eq!(serde_json::to_value(postgres).unwrap()["poolWait"], "10s");

    // Issue 28, item 6: a cluster without a default StorageClass names one for the
    // gateway's metadata claim.
    let docs = template(
        &helm,
        &[
            "--set",
            "quickstart.enabled=true",
            "--set",
            "quickstart.gateway.storageClassName=local-path",
        ],
    );
    let gateway = of_kind(&docs, "StorageGateway");
    assert_eq!(
        gateway[0]["spec"]["metadata"]["sqlite"]["storageClassName"], "local-path",
        "{:?}",
        gateway
    );
}

#[test]
fn bad_values_fail_naming_the_field() {
    let Some(helm) = helm() else {
        return missing("helm");
    };
    let cases: &[(&[&str], &str)] = &[
        (
            &["--set", "quickstrat.enabled=true"],
            "'quickstrat' not allowed",
        ),
        (
            &["--set", "quickstart.pool.capacity=lots"],
            "/quickstart/pool/capacity",
        ),
        (
            &["--set", "quickstart.pool.hostPath=var/lib"],
            "/quickstart/pool/hostPath",
        ),
        (
            &["--set", "quickstart.plan.encryption=rot13"],
            "/quickstart/plan/encryption",
        ),
        (
            &["--set", "image.pullPolicy=Sometimes"],
            "/image/pullPolicy",
        ),
        (
            &["--set", "serviceMonitor.interval=often"],
            "/serviceMonitor/interval",
        ),
        (&["--set", "replicaCount=two"], "/replicaCount"),
    ];
    // Beyond the schema: a quickstart the operator would never see.
    let err = run_helm(
        &helm,
        &[
            "template",
            "sublet",
            ".",
            "--namespace",
            "default",
            "--set",
            "quickstart.enabled=true",
            "--set",
            "watchNamespace=storage",
        ],
    )
    .unwrap_err();
    assert!(
        err.contains("does not watch (watchNamespace=storage)"),
        "{err}"
    );
    for (args, expected) in cases {
        let mut all = vec!["template", "sublet", "."];
        all.extend_from_slice(args);
        match run_helm(&helm, &all) {
            Ok(_) => panic!("helm accepted {args:?}"),
            Err(e) => assert!(
                e.contains("values don't meet the specifications of the schema")
                    && e.contains(expected),
                "helm {args:?} should name {expected}:\n{e}"
            ),
        }
    }
}

/// The metric names a PromQL expression reads: identifiers that are not functions,
/// keywords, label names, label values, durations or Grafana variables.
fn metric_names(expr: &str, out: &mut BTreeSet<String>) {
    const KEYWORDS: &[&str] = &[
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
        "group",
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
        "nan",
    ];
    const LABEL_LISTS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    // Skips from an opening bracket to its match, over quoted strings inside.
    let skip_to = |i: &mut usize, open: char, close: char| {
        let mut depth = 0;
        while *i < chars.len() {
            let c = chars[*i];
            if c == '"' || c == '\'' || c == '`' {
                *i += 1;
                while *i < chars.len() && chars[*i] != c {
                    *i += if chars[*i] == '\\' { 2 } else { 1 };
                }
            } else if c == open {
                depth += 1;
            } else if c == close {
                depth -= 1;
                if depth == 0 {
                    *i += 1;
                    return;
                }
            }
            *i += 1;
        }
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == '{' {
            skip_to(&mut i, '{', '}');
        } else if c == '[' {
            skip_to(&mut i, '[', ']');
        } else if c == '$' {
            i += 1;
            if i < chars.len() && chars[i] == '{' {
                skip_to(&mut i, '{', '}');
            } else {
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
            }
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let ident: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            if LABEL_LISTS.contains(&ident.as_str()) {
                if chars.get(next) == Some(&'(') {
                    i = next;
                    skip_to(&mut i, '(', ')');
                }
            } else if chars.get(next) != Some(&'(') && !KEYWORDS.contains(&ident.as_str()) {
                out.insert(ident);
            }
        } else {
            i += 1;
        }
    }
}

#[test]
fn promql_metric_names_are_extracted() {
    let mut names = BTreeSet::new();
    metric_names(
        "histogram_quantile(0.99, sum by (le, op) (rate(sublet_gateway_request_duration_seconds_bucket{op=~\"Put.*\", x=\"a}\"}[$__rate_interval]))) / on(op) group_left ignoring(x) sublet_x:rate5m > 1e3 and count(up{job=\"p\"} == 0) or vector(0) * ${factor}",
        &mut names,
    );
    assert_eq!(
        names,
        BTreeSet::from([
            "sublet_gateway_request_duration_seconds_bucket".to_string(),
            "sublet_x:rate5m".to_string(),
            "up".to_string(),
        ])
    );
}

/// Every expression of the shipped dashboards (panels and variables), by dashboard file.
fn dashboard_exprs() -> Vec<(String, String)> {
    let mut exprs = Vec::new();
    let dir = chart().join("dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 3, "overview, providers, repair: {files:?}");
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let board: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut stack = vec![&board];
        while let Some(v) = stack.pop() {
            match v {
                Value::Object(map) => {
                    if let Some(Value::String(e)) = map.get("expr") {
                        exprs.push((name.clone(), e.clone()));
                    }
                    // Query variables: `label_values(metric, label)`.
                    if map.get("type") == Some(&Value::String("query".into()))
                        && let Some(Value::String(q)) = map.get("definition")
                    {
                        let q = q.trim();
                        let inner = q
                            .strip_prefix("label_values(")
                            .and_then(|r| r.rsplit_once(','))
                            .map_or(q, |(metric, _label)| metric);
                        exprs.push((name.clone(), inner.to_string()));
                    }
                    stack.extend(map.values());
                }
                Value::Array(items) => stack.extend(items),
                _ => {}
            }
        }
    }
    exprs
}

/// Names in the Prometheus text format, histogram series included (`_bucket`, `_sum`,
/// `_count`).
fn exported_names(text: &str, out: &mut BTreeSet<String>) {
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        out.insert(line[..end].to_string());
    }
}

/// What a real `sublet-provider` exports after puts, gets, a miss and audits.
async fn provider_metrics() -> String {
    let dir = tempfile::tempdir().unwrap();
    let binary = workspace_binary("sublet-provider", "sublet-provider");
    let id = sublet_e2e::provider_node_id(dir.path());
    let (grpc, http) = (free_addr(), free_addr());
    // Killed when dropped: an assertion failing below leaves no provider running.
    let provider = Daemon::spawn(
        Command::new(&binary)
            .arg("--data-dir")
            .arg(dir.path())
            .args([
                "--listen",
                &grpc.to_string(),
                "--http-listen",
                &http.to_string(),
            ])
            .args(["--capacity", "1Gi", "--token", "chart-test-token"]),
        dir.path().join("provider.log"),
    );
    wait_http_ok(http, "/healthz", Duration::from_secs(20));
    let client = ProviderClient::new(
        &grpc.to_string(),
        id,
        &ClientConfig {
            identity: Arc::new(NodeIdentity::generate()),
            token: Some("chart-test-token".into()),
        },
    )
    .unwrap();
    let data = Bytes::from(vec![3u8; 64 * 1024]);
    let put = client.put_shard("chart.0.0", data).await.unwrap();
    client.get_shard("chart.0.0", None).await.unwrap();
    assert!(client.get_shard("missing.0.0", None).await.is_err());
    client.audit("chart.0.0", 0, 1024, &put.hash).await.unwrap();
    assert!(
        client
            .audit("missing.0.0", 0, 1024, &put.hash)
            .await
            .is_err()
    );
    let (status, text) = http_get(http, "/metrics").unwrap();
    drop(provider);
    assert_eq!(status, 200);
    text
}

/// What a real `sublet dev` gateway exports after S3 traffic, including a read whose
/// shards are gone from every provider.
fn gateway_metrics() -> String {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("dev");
    let dev = SubletDev::start(&state);
    let endpoint = dev.endpoint();
    let file = dir.path().join("object");
    std::fs::write(&file, vec![5u8; 200_000]).unwrap();
    let aws = |args: &[&str]| {
        let mut cmd = dev.client("aws");
        cmd.args(["--endpoint-url", &endpoint]).args(args);
        cmd
    };
    let timeout = Duration::from_secs(60);
    run_ok(&mut aws(&["s3", "mb", "s3://metrics"]), timeout);
    run_ok(
        &mut aws(&["s3", "cp", file.to_str().unwrap(), "s3://metrics/kept"]),
        timeout,
    );
    run_ok(
        &mut aws(&[
            "s3",
            "cp",
            "s3://metrics/kept",
            dir.path().join("back").to_str().unwrap(),
        ]),
        timeout,
    );
    run_ok(&mut aws(&["s3", "ls", "s3://metrics"]), timeout);
    run_ok(
        &mut aws(&["s3", "cp", file.to_str().unwrap(), "s3://metrics/lost"]),
        timeout,
    );
    let shard_files = |dir: &Path| -> Vec<PathBuf> {
        files_under(dir)
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "shard"))
            .collect()
    };
    // A scrub reads every shard whole (an admin action: it wants the token).
    let token = dev.admin_token();
    let (status, body) = http_post(dev.admin_addr, &token, "/admin/v1/scrub").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"bad\":0"), "{body}");
    // One provider loses its disk: an audit finds its shards gone (audits, scores) and a
    // repair pass rebuilds them elsewhere (repair throughput).
    let first = shard_files(&state.join("providers").join("0"));
    assert!(!first.is_empty(), "provider 0 holds no shard");
    for shard in first {
        std::fs::remove_file(shard).unwrap();
    }
    let (status, body) = http_post(dev.admin_addr, &token, "/admin/v1/audit?samples=64").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"failed\":"), "{body}");
    let (status, body) =
        http_post(dev.admin_addr, &token, "/admin/v1/plans/standard/repair").unwrap();
    assert_eq!(status, 200, "{body}");
    // Another provider loses its disk and an audit queues its shards; then every other
    // shard goes too: the repair pass cannot read what it needs (repair failures), the
    // next read fails its shard calls and the objects count as lost.
    for shard in shard_files(&state.join("providers").join("1")) {
        std::fs::remove_file(shard).unwrap();
    }
    let (status, body) = http_post(dev.admin_addr, &token, "/admin/v1/audit?samples=64").unwrap();
    assert_eq!(status, 200, "{body}");
    let shards = shard_files(&state.join("providers"));
    assert!(
        !shards.is_empty(),
        "no shard files under {}",
        state.display()
    );
    for shard in shards {
        std::fs::remove_file(shard).unwrap();
    }
    let (status, body) =
        http_post(dev.admin_addr, &token, "/admin/v1/plans/standard/repair").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("\"failed\":0"), "{body}");
    // No retries: the read must fail, and aws would back off for a while first.
    let out = aws(&[
        "s3",
        "cp",
        "s3://metrics/lost",
        dir.path().join("lost").to_str().unwrap(),
    ])
    .env("AWS_MAX_ATTEMPTS", "1")
    .output()
    .unwrap();
    assert!(!out.status.success(), "a read without shards succeeded");
    let (status, text) = http_get(dev.admin_addr, "/metrics").unwrap();
    assert_eq!(status, 200);
    drop(dev);
    text
}

/// Plain HTTP/1.0 POST without a body on loopback with the admin `token`; returns (status,
/// body).
fn http_post(
    addr: std::net::SocketAddr,
    token: &str,
    path: &str,
) -> std::io::Result<(u16, String)> {
    sublet_e2e::cluster::http_call(addr, "POST", path, Some(token), Duration::from_secs(60))
}

/// What the operator's `/metrics` serves once each metric was touched. The binary needs a
/// Kubernetes API to start, so this uses its metrics registry directly.
fn operator_metrics() -> String {
    let m = sublet_operator::metrics::Metrics::new().unwrap();
    m.reconciles.with_label_values(&["StoragePlan"]).inc();
    m.failures.with_label_values(&["StoragePlan", "kube"]).inc();
    m.duration.with_label_values(&["StoragePlan"]).observe(0.1);
    m.repair_jobs
        .with_label_values(&["storage", "photos"])
        .inc();
    m.render()
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboards_and_alerts_name_only_exported_metrics() {
    let Some(helm) = helm() else {
        return missing("helm");
    };
    if !skip::clients_present(&["aws"]) {
        return;
    }
    let mut exprs = dashboard_exprs();
    let docs = template(&helm, ALL_ON);
    let rules = of_kind(&docs, "PrometheusRule");
    assert_eq!(rules.len(), 1);
    for group in rules[0]["spec"]["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            exprs.push((
                format!("alert {}", rule["alert"].as_str().unwrap()),
                rule["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    // The shipped dashboards are the ones rendered into the ConfigMaps.
    let shipped: usize = of_kind(&docs, "ConfigMap")
        .iter()
        .map(|c| c["data"].as_object().unwrap().len())
        .sum();
    assert_eq!(shipped, 3);

    let mut exported = BTreeSet::new();
    exported_names(&provider_metrics().await, &mut exported);
    exported_names(
        &tokio::task::spawn_blocking(gateway_metrics).await.unwrap(),
        &mut exported,
    );
    exported_names(&operator_metrics(), &mut exported);
    for component in ["sublet_gateway_", "sublet_provider_", "sublet_operator_"] {
        assert!(
            exported.iter().any(|n| n.starts_with(component)),
            "nothing named {component}* exported: {exported:?}"
        );
    }

    let mut used = BTreeSet::new();
    let mut unknown = Vec::new();
    for (source, expr) in &exprs {
        let mut names = BTreeSet::new();
        metric_names(expr, &mut names);
        assert!(!names.is_empty(), "{source}: no metric in `{expr}`");
        for name in names {
            let external = EXTERNAL_METRICS.iter().any(|(n, _)| *n == name);
            if !exported.contains(&name) && !external {
                unknown.push(format!("{source}: {name} (in `{expr}`)"));
            }
            used.insert(name);
        }
    }
    assert!(
        unknown.is_empty(),
        "metrics no binary exports:\n{}\nexported: {exported:?}",
        unknown.join("\n")
    );
    // The dashboards cover every component.
    for component in ["sublet_gateway_", "sublet_provider_", "sublet_operator_"] {
        assert!(
            used.iter().any(|n| n.starts_with(component)),
            "no dashboard or alert reads {component}*"
        );
    }
}

/// The shell lines of the Kubernetes quick start (`docs/kubernetes.md`, the README's
/// section is the same), backslash continuations joined.
fn readme_kubernetes_commands() -> Vec<String> {
    sublet_e2e::kube_cluster::quick_start_commands()
}

#[test]
fn readme_kubernetes_commands_are_the_ones_the_chart_renders() {
    let Some(helm) = helm() else {
        return missing("helm");
    };
    let commands = readme_kubernetes_commands();
    assert!(commands.len() >= 8, "{commands:?}");
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let values = std::fs::read_to_string(chart().join("values.yaml")).unwrap();
    let mut notes = String::new();
    let mut rendered = Vec::new();
    let mut applied = Vec::new();
    // helm first: their NOTES are what the other commands are checked against.
    for command in commands
        .iter()
        .filter(|c| c.starts_with("helm ") && !c.starts_with("helm uninstall "))
    {
        let mut args: Vec<&str> = command
            .split_whitespace()
            .skip(1)
            .filter(|a| *a != "--reuse-values" && *a != "--create-namespace")
            .collect();
        // An upgrade renders like an install with the values the install set.
        if args[0] == "upgrade" {
            args[0] = "install";
            args.extend(["--set", "quickstart.enabled=true"]);
        }
        assert_eq!(args[0], "install", "{command}");
        // Without a cluster: no Prometheus Operator API, so no ServiceMonitor renders.
        args.push("--dry-run=client");
        let out = Command::new(&helm)
            .args(&args)
            .current_dir(root())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "`{command}` fails: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (manifests, note) = stdout.split_once("\nNOTES:\n").expect("helm prints NOTES");
        notes.push_str(note);
        // The upgrade re-renders the same quickstart: the install's objects are the cluster's.
        if command.starts_with("helm install ") {
            rendered.extend(documents(
                manifests.split_once("\n---").map_or("", |(_, m)| m),
            ));
        }
    }
    for command in &commands {
        // Run (and their outcome checked) on a real cluster by e2e/tests/cluster.rs:
        // uninstalling, waiting, and the S3 calls beyond the first bucket.
        let on_a_cluster = command.starts_with("helm uninstall ")
            || command.starts_with("kubectl -n sublet wait ")
            || (command.starts_with("aws ") && !command.ends_with(" s3 mb s3://photos"));
        if command.starts_with("helm ") || on_a_cluster {
            continue;
        } else if command.starts_with("docker ") || command.starts_with("sudo k3s ctr ") {
            assert!(
                dockerfile.contains(command.as_str()),
                "the Dockerfile's header should show `{command}`"
            );
        } else if let Some(path) = command.strip_prefix("sudo install -d -o 10001 -g 10001 ") {
            assert!(
                dockerfile.contains("--uid 10001"),
                "the image's user is uid 10001"
            );
            assert!(
                values.contains(&format!("hostPath: {path}")),
                "quickstart hostPath is {path}"
            );
        } else if let Some((_, file)) = command.split_once(" apply -f ") {
            applied.push(std::fs::read_to_string(root().join(file)).unwrap());
        } else {
            assert!(
                notes.contains(command.as_str()),
                "`{command}` is not what `helm install` prints:\n{notes}"
            );
        }
    }
    // What the README applies fits the quickstart it installed.
    let mut text: String = rendered
        .iter()
        .filter(|d| d["apiVersion"] == sublet_crds::API_VERSION)
        .map(|d| format!("---\n{}", serde_yaml::to_string(d).unwrap()))
        .collect();
    assert!(!applied.is_empty(), "the README applies a plan");
    for doc in applied {
        text.push_str("---\n");
        text.push_str(&doc);
    }
    sublet_crds::load_str("README", &text).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn dashboards_are_importable_grafana_dashboards() {
    let mut uids = BTreeSet::new();
    for name in ["overview", "providers", "repair"] {
        let path = chart().join(format!("dashboards/{name}.json"));
        let board: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let uid = board["uid"].as_str().unwrap();
        assert!(
            uid.len() <= 40,
            "{name}: Grafana uids are at most 40 characters"
        );
        assert!(uids.insert(uid.to_string()), "{name}: uid {uid} used twice");
        assert!(board["title"].as_str().unwrap().starts_with("sublet / "));
        // The sidecar imports dashboards as they are: the data source must be a variable.
        let variables = board["templating"]["list"].as_array().unwrap();
        assert!(
            variables
                .iter()
                .any(|v| v["type"] == "datasource" && v["name"] == "datasource")
        );
        let mut ids = BTreeSet::new();
        for panel in board["panels"].as_array().unwrap() {
            let title = panel["title"].as_str().unwrap();
            assert!(
                ids.insert(panel["id"].as_u64().unwrap()),
                "{name}: panel id of {title} used twice"
            );
            for key in ["x", "y", "w", "h"] {
                assert!(
                    panel["gridPos"][key].is_u64(),
                    "{name}: {title} has no gridPos.{key}"
                );
            }
            if !["row", "text"].contains(&panel["type"].as_str().unwrap()) {
                assert_eq!(
                    panel["datasource"]["uid"], "${datasource}",
                    "{name}: {title}"
                );
                let targets = panel["targets"].as_array().unwrap();
                assert!(!targets.is_empty(), "{name}: {title} has no query");
                for t in targets {
                    assert_eq!(t["datasource"]["uid"], "${datasource}", "{name}: {title}");
                }
            }
        }
    }
}
