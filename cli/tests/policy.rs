//! Policy management: plans and schedules applied, used, kept across restarts and deleted
//! through the admin API and the `sublet` CLI, behind the admin token.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../gateway/tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::path::Path;

use sublet_provider::server::{self, ProviderConfig, RunningProvider};
use support::{Client, Reply, http_exchange};

const TOKEN: &str = "policy-test-provider-token";
const ADMIN_TOKEN: &str = "policy-test-admin-token-0123";

/// An admin API request with an optional bearer token.
async fn admin(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Reply {
    let auth = token.map_or_else(String::new, |t| format!("authorization: Bearer {t}\r\n"));
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n{auth}\
         content-length: {}\r\n\r\n",
        body.len()
    );
    http_exchange(addr, head.as_bytes(), body.as_bytes()).await
}

fn json(r: &Reply) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.text()))
}

async fn start_provider(dir: &Path) -> RunningProvider {
    let mut cfg = ProviderConfig::new(dir);
    cfg.token = Some(TOKEN.into());
    server::start(cfg).await.unwrap()
}

/// Runs the `sublet` binary against `addr`; (success, stdout, stderr).
async fn sublet(addr: SocketAddr, token: &str, args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sublet"))
        .args(args)
        .env("SUBLET_ADMIN_URL", format!("http://{addr}"))
        .env("SUBLET_ADMIN_TOKEN", token)
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const COLD: &str = r#"apiVersion: sublet.dev/v1alpha1
kind: StoragePlan
metadata: {name: cold}
spec:
  redundancy: {replicas: 2}
  segmentSize: 64Ki
  encryption: none
  schedule: nightly
---
apiVersion: sublet.dev/v1alpha1
kind: StorageSchedule
metadata: {name: nightly}
spec:
  rebuild: {minHealthyShards: 2, gracePeriod: 5m}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plans_are_applied_used_kept_and_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    let mut providers = Vec::new();
    for i in 0..3 {
        providers.push(start_provider(&tmp.path().join(format!("provider-{i}"))).await);
    }
    let endpoints: String = providers
        .iter()
        .enumerate()
        .map(|(i, p)| {
            format!(
                "    - {{name: p{i}, address: \"{}\", nodeId: \"{}\"}}\n",
                p.grpc_addr, p.node_id
            )
        })
        .collect();
    let yaml = format!(
        r#"apiVersion: sublet.dev/v1alpha1
kind: ProviderPool
metadata: {{name: home}}
spec:
  class: owned
  endpoints:
{endpoints}---
apiVersion: sublet.dev/v1alpha1
kind: StoragePlan
metadata: {{name: standard}}
spec:
  redundancy: {{erasure: {{dataShards: 2, parityShards: 1}}}}
  segmentSize: 64Ki
---
apiVersion: sublet.dev/v1alpha1
kind: StorageGateway
metadata: {{name: s3}}
spec:
  defaultPlan: standard
  listen: "127.0.0.1:0"
  adminListen: "127.0.0.1:0"
  dataDir: "{}"
  providerToken: {TOKEN}
  credentials:
    - {{accessKey: admin, secretKey: admin-secret-0123456789}}
"#,
        tmp.path().join("gateway").display(),
    );
    let config = sublet_crds::load_str("sublet.yaml", &yaml).unwrap_or_else(|e| panic!("{e}"));
    let overrides = sublet_gateway::runtime::Overrides {
        admin_token: Some(ADMIN_TOKEN.into()),
        ..Default::default()
    };
    let running = sublet_gateway::runtime::start(&config, &overrides)
        .await
        .unwrap();
    let a = running.admin_addr.unwrap();
    let s3 = Client {
        addr: running.s3_addr,
        access_key: "admin".into(),
        secret_key: "admin-secret-0123456789".into(),
    };

    // Without the token (or with a wrong one) the policy API answers 401 with a JSON error;
    // the operator's health endpoint stays open.
    let r = admin(a, "GET", "/admin/v1/policy/plans", None, "").await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(json(&r)["error"].as_str().unwrap().contains("Bearer"));
    let r = admin(
        a,
        "PUT",
        "/admin/v1/policy/plans/x",
        Some("wrong-token-123456789"),
        "{}",
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(
        admin(a, "GET", "/admin/v1/plans/standard", None, "")
            .await
            .status,
        200
    );
    let (ok, _, err) = sublet(a, "wrong-token-123456789", &["plan", "list"]).await;
    assert!(!ok && err.contains("the admin token is wrong"), "{err}");

    // The actions (and the lost list, which names objects) want the same token; pool usage,
    // counts like plan health, stays open.
    for (method, path) in [
        ("POST", "/admin/v1/plans/standard/repair"),
        ("POST", "/admin/v1/plans/standard/reencode"),
        ("POST", "/admin/v1/audit?samples=1"),
        ("POST", "/admin/v1/scrub"),
        ("POST", "/admin/v1/gc?minAgeSeconds=0"),
        ("POST", "/admin/v1/snapshot"),
        ("POST", "/admin/v1/lifecycle"),
        ("GET", "/admin/v1/plans/standard/lost"),
    ] {
        let r = admin(a, method, path, None, "").await;
        assert_eq!(r.status, 401, "{method} {path}: {}", r.text());
        assert!(
            json(&r)["error"]
                .as_str()
                .unwrap()
                .contains("needs the admin token"),
            "{method} {path}: {}",
            r.text()
        );
        let r = admin(a, method, path, Some("wrong-token-123456789"), "").await;
        assert_eq!(r.status, 401, "{method} {path}: {}", r.text());
        assert_eq!(json(&r)["error"], "the admin token is wrong");
    }
    let r = admin(
        a,
        "POST",
        "/admin/v1/audit?samples=1",
        Some(ADMIN_TOKEN),
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(json(&r)["providers"], 3, "{}", r.text());
    let r = admin(
        a,
        "GET",
        "/admin/v1/plans/standard/lost",
        Some(ADMIN_TOKEN),
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        admin(a, "GET", "/admin/v1/pools/home", None, "")
            .await
            .status,
        200
    );

    // A plan that does not validate is refused with every problem and its field path.
    let r = admin(
        a,
        "PUT",
        "/admin/v1/policy/plans/bad",
        Some(ADMIN_TOKEN),
        "spec:\n  redundancy: {erasure: {dataShards: 4, parityShards: 0}}\n  schedule: nope\n",
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text());
    let problems = json(&r)["problems"].to_string();
    assert!(
        problems
            .contains("StoragePlan/bad: spec.redundancy.erasure.parityShards: must be at least 1"),
        "{problems}"
    );
    let r = admin(
        a,
        "PUT",
        "/admin/v1/policy/plans/bad",
        Some(ADMIN_TOKEN),
        r#"{"spec": {"redundancy": {"replicas": 2}, "schedule": "nope"}}"#,
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(
        json(&r)["problems"]
            .to_string()
            .contains("StoragePlan/bad: spec.schedule: no StorageSchedule named \\\"nope\\\""),
        "{}",
        r.text()
    );
    let r = admin(
        a,
        "PUT",
        "/admin/v1/policy/plans/other",
        Some(ADMIN_TOKEN),
        "kind: StoragePlan\nmetadata: {name: cold}\n",
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("metadata.name"), "{}", r.text());
    let r = admin(
        a,
        "PUT",
        "/admin/v1/policy/pools/home",
        Some(ADMIN_TOKEN),
        "spec: {class: owned}",
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("a pool needs providers"), "{}", r.text());

    // Bad input to the CLI: one clear line, non-zero exit, nothing sent.
    let gw = tmp.path().join("gateway.yaml");
    std::fs::write(&gw, "kind: StorageGateway\nmetadata: {name: s3}\n").unwrap();
    let (ok, out, err) = sublet(
        a,
        ADMIN_TOKEN,
        &["plan", "apply", "-f", gw.to_str().unwrap()],
    )
    .await;
    assert!(!ok && out.is_empty());
    assert!(
        err.contains("document 1: kind StorageGateway is not managed through the admin API"),
        "{err}"
    );
    let (ok, _, err) = sublet(
        a,
        ADMIN_TOKEN,
        &["plan", "apply", "-f", "/nonexistent.yaml"],
    )
    .await;
    assert!(
        !ok && err.starts_with("error: /nonexistent.yaml: "),
        "{err}"
    );
    let (ok, _, err) = sublet(a, "", &["status"]).await;
    assert!(!ok && err.contains("no admin token"), "{err}");
    let (ok, _, err) = sublet(a, ADMIN_TOKEN, &["plan", "get", "nope"]).await;
    assert!(!ok);
    assert_eq!(err, "error: StoragePlan nope does not exist\n");

    // Applied with the CLI, a plan is usable as a storage class right away.
    let file = tmp.path().join("cold.yaml");
    std::fs::write(&file, COLD).unwrap();
    let (ok, out, err) = sublet(
        a,
        ADMIN_TOKEN,
        &["plan", "apply", "-f", file.to_str().unwrap()],
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "storageschedule/nightly created\nstorageplan/cold created\n"
    );
    assert_eq!(s3.send("PUT", "/photos", &[], b"").await.status, 200);
    let r = s3
        .send(
            "PUT",
            "/photos/old.txt",
            &[("x-amz-storage-class", "cold")],
            b"kept cold",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let (ok, out, err) = sublet(a, ADMIN_TOKEN, &["plan", "list"]).await;
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("NAME      REDUNDANCY  SEGMENT"),
        "{out}"
    );
    assert!(lines[1].starts_with("cold      2 replicas  64Ki"), "{out}");
    assert!(lines[1].ends_with("nightly"), "{out}");
    assert!(lines[2].starts_with("standard  EC 2+1"), "{out}");
    let (ok, out, _) = sublet(a, ADMIN_TOKEN, &["plan", "get", "cold", "-o", "json"]).await;
    assert!(ok);
    let cold: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(cold["spec"]["redundancy"]["replicas"], 2);
    let (ok, out, _) = sublet(
        a,
        ADMIN_TOKEN,
        &["schedule", "get", "nightly", "-o", "yaml"],
    )
    .await;
    assert!(ok && out.contains("minHealthyShards: 2"), "{out}");
    let (ok, again, _) = sublet(
        a,
        ADMIN_TOKEN,
        &["plan", "apply", "-f", file.to_str().unwrap()],
    )
    .await;
    assert!(ok);
    assert_eq!(
        again,
        "storageschedule/nightly configured\nstorageplan/cold configured\n"
    );

    // A bucket's default plan: new objects without a storage class (or with STANDARD) use it.
    let (ok, out, err) = sublet(a, ADMIN_TOKEN, &["bucket", "set-plan", "photos", "cold"]).await;
    assert!(ok, "{err}");
    assert_eq!(out, "bucket photos: new objects use plan cold\n");
    let (ok, _, err) = sublet(a, ADMIN_TOKEN, &["bucket", "set-plan", "photos", "nope"]).await;
    assert!(
        !ok && err.contains("there is no plan nope; known plans: cold, standard"),
        "{err}"
    );
    let (ok, _, err) = sublet(a, ADMIN_TOKEN, &["bucket", "set-plan", "nobucket", "cold"]).await;
    assert!(!ok && err.contains("there is no bucket nobucket"), "{err}");
    let r = admin(
        a,
        "PUT",
        "/admin/v1/buckets/photos",
        Some(ADMIN_TOKEN),
        "{\"plan\": 1}",
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = admin(
        a,
        "PUT",
        "/admin/v1/buckets/photos",
        None,
        "{\"defaultPlan\": null}",
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.text());
    for (key, class) in [("new.txt", None), ("std.txt", Some("STANDARD"))] {
        let headers: Vec<(&str, &str)> = class
            .map(|c| ("x-amz-storage-class", c))
            .into_iter()
            .collect();
        let r = s3
            .send("PUT", &format!("/photos/{key}"), &headers, b"by default")
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let r = s3
            .send(
                "GET",
                &format!("/photos?list-type=2&prefix={key}"),
                &[],
                b"",
            )
            .await;
        assert!(
            r.text().contains("<StorageClass>cold</StorageClass>"),
            "{key}: {}",
            r.text()
        );
        assert_eq!(
            s3.send("DELETE", &format!("/photos/{key}"), &[], b"")
                .await
                .status,
            204
        );
    }
    let (ok, out, err) = sublet(a, ADMIN_TOKEN, &["bucket", "list"]).await;
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "NAME    PLAN  OWN PLAN  VERSIONING\nphotos  cold  cold      unversioned\n"
    );

    // In use: the plan by an object, the schedule by the plan, the default plan always.
    let (ok, _, err) = sublet(a, ADMIN_TOKEN, &["plan", "delete", "cold"]).await;
    assert!(!ok, "deleting a plan in use succeeded");
    assert!(err.contains("plan cold is in use"), "{err}");
    assert!(
        err.contains("bucket photos uses it as its default plan"),
        "{err}"
    );
    let (ok, out, clear_err) =
        sublet(a, ADMIN_TOKEN, &["bucket", "set-plan", "photos", "--clear"]).await;
    assert!(ok, "{clear_err}");
    assert_eq!(
        out,
        "bucket photos: new objects use the gateway's default plan standard\n"
    );
    assert!(
        err.contains("bucket photos: 1 version(s), e.g. old.txt"),
        "{err}"
    );
    let (ok, _, err) = sublet(a, ADMIN_TOKEN, &["schedule", "delete", "nightly"]).await;
    assert!(!ok);
    assert!(err.contains("StorageSchedule nightly is in use"), "{err}");
    assert!(err.contains("StoragePlan/cold: spec.schedule"), "{err}");
    let r = admin(
        a,
        "DELETE",
        "/admin/v1/policy/plans/standard",
        Some(ADMIN_TOKEN),
        "",
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("default plan"), "{}", r.text());

    // Providers and status.
    running.probe_now().await;
    let (ok, out, err) = sublet(a, ADMIN_TOKEN, &["provider", "list"]).await;
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 4, "{out}");
    assert!(
        out.lines()
            .skip(1)
            .all(|l| l.contains(" home ") && l.contains(" up ")),
        "{out}"
    );
    let (ok, out, err) = sublet(a, ADMIN_TOKEN, &["status"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("standard (default)"), "{out}");
    assert!(out.contains("providers: 3 of 3 up"), "{out}");
    let cold_row = out.lines().find(|l| l.starts_with("cold ")).unwrap();
    assert!(cold_row.split_whitespace().nth(3) == Some("1"), "{out}");

    // After a restart from the same file the applied plan is still there and readable.
    running.shutdown().await;
    let running = sublet_gateway::runtime::start(&config, &overrides)
        .await
        .unwrap();
    let a = running.admin_addr.unwrap();
    let s3 = Client {
        addr: running.s3_addr,
        ..s3
    };
    let r = admin(
        a,
        "GET",
        "/admin/v1/policy/plans/cold",
        Some(ADMIN_TOKEN),
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = s3.send("GET", "/photos/old.txt", &[], b"").await;
    assert_eq!((r.status, r.text().as_str()), (200, "kept cold"));

    // Once nothing uses them, plan and schedule go, and stay gone after a restart.
    assert_eq!(
        s3.send("DELETE", "/photos/old.txt", &[], b"").await.status,
        204
    );
    let (ok, out, err) = sublet(a, ADMIN_TOKEN, &["plan", "delete", "cold"]).await;
    assert!(ok, "{err}");
    assert_eq!(out, "storageplan/cold deleted\n");
    let (ok, _, err) = sublet(a, ADMIN_TOKEN, &["schedule", "delete", "nightly"]).await;
    assert!(ok, "{err}");
    let r = s3
        .send(
            "PUT",
            "/photos/new.txt",
            &[("x-amz-storage-class", "cold")],
            b"x",
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    running.shutdown().await;
    let read_only = sublet_gateway::runtime::Overrides {
        read_only_policies: true,
        ..overrides
    };
    let running = sublet_gateway::runtime::start(&config, &read_only)
        .await
        .unwrap();
    let a = running.admin_addr.unwrap();
    let r = admin(
        a,
        "GET",
        "/admin/v1/policy/plans/cold",
        Some(ADMIN_TOKEN),
        "",
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text());
    // Rendered by the operator: the API points at kubectl instead of writing.
    let (ok, _, err) = sublet(
        a,
        ADMIN_TOKEN,
        &["plan", "apply", "-f", file.to_str().unwrap()],
    )
    .await;
    assert!(!ok);
    assert!(err.contains("kubectl apply"), "{err}");
    running.shutdown().await;
}

#[tokio::test]
async fn a_generated_admin_token_is_kept_in_the_data_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let first = sublet_gateway::admin::policy::admin_token(None, tmp.path()).unwrap();
    assert!(first.len() >= 32);
    assert_eq!(
        sublet_gateway::admin::policy::admin_token(None, tmp.path()).unwrap(),
        first
    );
    let err = sublet_gateway::admin::policy::admin_token(Some("short"), tmp.path()).unwrap_err();
    assert!(err.to_string().contains("at least 16 characters"), "{err}");
}

/// Audits performed so far, from the gateway's metrics.
fn audits_done(running: &sublet_gateway::runtime::Running) -> u64 {
    running
        .metrics
        .render()
        .lines()
        .filter(|l| l.starts_with("sublet_gateway_audits_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_changed_audit_interval_applies_without_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let mut providers = Vec::new();
    for i in 0..3 {
        providers.push(start_provider(&tmp.path().join(format!("provider-{i}"))).await);
    }
    let endpoints: String = providers
        .iter()
        .enumerate()
        .map(|(i, p)| {
            format!(
                "    - {{name: p{i}, address: \"{}\", nodeId: \"{}\"}}\n",
                p.grpc_addr, p.node_id
            )
        })
        .collect();
    let yaml = format!(
        r#"apiVersion: sublet.dev/v1alpha1
kind: ProviderPool
metadata: {{name: home}}
spec:
  class: owned
  endpoints:
{endpoints}---
apiVersion: sublet.dev/v1alpha1
kind: StoragePlan
metadata: {{name: standard}}
spec:
  redundancy: {{erasure: {{dataShards: 2, parityShards: 1}}}}
  segmentSize: 64Ki
  schedule: care
---
apiVersion: sublet.dev/v1alpha1
kind: StorageSchedule
metadata: {{name: care}}
spec:
  audit: {{interval: 1h, samplesPerProvider: 4}}
---
apiVersion: sublet.dev/v1alpha1
kind: StorageGateway
metadata: {{name: s3}}
spec:
  defaultPlan: standard
  listen: "127.0.0.1:0"
  adminListen: "127.0.0.1:0"
  dataDir: "{}"
  providerToken: {TOKEN}
  credentials:
    - {{accessKey: admin, secretKey: admin-secret-0123456789}}
"#,
        tmp.path().join("gateway").display(),
    );
    let config = sublet_crds::load_str("sublet.yaml", &yaml).unwrap_or_else(|e| panic!("{e}"));
    let overrides = sublet_gateway::runtime::Overrides {
        admin_token: Some(ADMIN_TOKEN.into()),
        ..Default::default()
    };
    let running = sublet_gateway::runtime::start(&config, &overrides)
        .await
        .unwrap();
    let a = running.admin_addr.unwrap();
    let s3 = Client {
        addr: running.s3_addr,
        access_key: "admin".into(),
        secret_key: "admin-secret-0123456789".into(),
    };
    assert_eq!(s3.send("PUT", "/bkt", &[], b"").await.status, 200);
    let r = s3.send("PUT", "/bkt/audited", &[], &[7u8; 100_000]).await;
    assert_eq!(r.status, 200, "{}", r.text());

    // Hourly: nothing is audited in the first seconds.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(audits_done(&running), 0);

    // Every second from now on, without a restart.
    let r = admin(
        a,
        "PUT",
        "/admin/v1/policy/schedules/care",
        Some(ADMIN_TOKEN),
        "spec:\n  audit: {interval: 1s, samplesPerProvider: 4}\n",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let started = std::time::Instant::now();
    while audits_done(&running) < 6 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "only {} audits within 20 s of the change",
            audits_done(&running)
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // And back to hourly: the audits stop.
    let r = admin(
        a,
        "PUT",
        "/admin/v1/policy/schedules/care",
        Some(ADMIN_TOKEN),
        "spec:\n  audit: {interval: 1h, samplesPerProvider: 4}\n",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let settled = audits_done(&running);
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(audits_done(&running), settled, "audits go on every second");

    running.shutdown().await;
    for p in providers {
        p.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pools_are_applied_and_deleted_while_the_gateway_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let home: Vec<RunningProvider> = vec![
        start_provider(&tmp.path().join("h0")).await,
        start_provider(&tmp.path().join("h1")).await,
    ];
    let endpoints: String = home
        .iter()
        .enumerate()
        .map(|(i, p)| {
            format!(
                "    - {{name: h{i}, address: \"{}\", nodeId: \"{}\"}}\n",
                p.grpc_addr, p.node_id
            )
        })
        .collect();
    let yaml = format!(
        r#"apiVersion: sublet.dev/v1alpha1
kind: ProviderPool
metadata: {{name: home}}
spec:
  class: owned
  endpoints:
{endpoints}---
apiVersion: sublet.dev/v1alpha1
kind: StoragePlan
metadata: {{name: standard}}
spec:
  redundancy: {{replicas: 2}}
  segmentSize: 64Ki
  placement: {{pools: [{{name: home}}]}}
---
apiVersion: sublet.dev/v1alpha1
kind: StorageGateway
metadata: {{name: s3}}
spec:
  defaultPlan: standard
  listen: "127.0.0.1:0"
  adminListen: "127.0.0.1:0"
  dataDir: "{}"
  providerToken: {TOKEN}
  credentials:
    - {{accessKey: admin, secretKey: admin-secret-0123456789}}
"#,
        tmp.path().join("gateway").display(),
    );
    let config = sublet_crds::load_str("sublet.yaml", &yaml).unwrap_or_else(|e| panic!("{e}"));
    let overrides = sublet_gateway::runtime::Overrides {
        admin_token: Some(ADMIN_TOKEN.into()),
        ..Default::default()
    };
    let running = sublet_gateway::runtime::start(&config, &overrides)
        .await
        .unwrap();
    let a = running.admin_addr.unwrap();
    let s3 = Client {
        addr: running.s3_addr,
        access_key: "admin".into(),
        secret_key: "admin-secret-0123456789".into(),
    };

    // A new machine joins: its pool is applied while the gateway runs.
    let extra = start_provider(&tmp.path().join("x0")).await;
    let pool = format!(
        "spec:\n  class: owned\n  endpoints:\n    - {{name: x0, address: \"{}\", nodeId: \"{}\", zone: attic}}\n",
        extra.grpc_addr, extra.node_id
    );
    let r = admin(
        a,
        "PUT",
        "/admin/v1/policy/pools/extra",
        Some(ADMIN_TOKEN),
        &pool,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let listed = json(&admin(a, "GET", "/admin/v1/providers", Some(ADMIN_TOKEN), "").await);
    assert!(
        listed.to_string().contains(&extra.node_id.to_string()),
        "the new provider is listed: {listed}"
    );
    // A plan placing on it stores there, and reads back.
    let r = admin(
        a,
        "PUT",
        "/admin/v1/policy/plans/attic",
        Some(ADMIN_TOKEN),
        "spec:\n  redundancy: {replicas: 1}\n  segmentSize: 64Ki\n  placement: {pools: [{name: extra, minShards: 1}]}\n",
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(s3.send("PUT", "/boxes", &[], b"").await.status, 200);
    let body: Vec<u8> = (0..100_000).map(|i| (i % 251) as u8).collect();
    let r = s3
        .send(
            "PUT",
            "/boxes/boxed",
            &[("x-amz-storage-class", "attic")],
            &body,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let usage = json(&admin(a, "GET", "/admin/v1/pools/extra", None, "").await);
    assert_eq!(usage["shards"], 2, "{usage}");
    let r = s3.send("GET", "/boxes/boxed", &[], b"").await;
    assert!(r.status == 200 && r.body == body, "{}", r.status);

    // Pools of market contracts or cloud buckets are dialled at start only.
    let r = admin(
        a,
        "PUT",
        "/admin/v1/policy/pools/rented",
        Some(ADMIN_TOKEN),
        "spec:\n  class: rented\n  market: {url: \"http://127.0.0.1:9\", insecureHttp: true, providers: 1, reserve: 1Gi}\n",
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("restart"), "{}", r.text());

    // While a plan places on it, or its provider holds shards, the pool stays.
    let r = admin(
        a,
        "DELETE",
        "/admin/v1/policy/pools/extra",
        Some(ADMIN_TOKEN),
        "",
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(
        admin(
            a,
            "DELETE",
            "/admin/v1/policy/plans/attic",
            Some(ADMIN_TOKEN),
            ""
        )
        .await
        .status,
        409,
        "the plan still holds an object"
    );
    assert_eq!(
        s3.send("DELETE", "/boxes/boxed", &[], b"").await.status,
        204
    );
    let r = admin(
        a,
        "DELETE",
        "/admin/v1/policy/plans/attic",
        Some(ADMIN_TOKEN),
        "",
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let r = admin(
        a,
        "DELETE",
        "/admin/v1/policy/pools/extra",
        Some(ADMIN_TOKEN),
        "",
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let r = admin(
        a,
        "GET",
        "/admin/v1/policy/pools/extra",
        Some(ADMIN_TOKEN),
        "",
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text());
    running.shutdown().await;
    for p in home.into_iter().chain([extra]) {
        p.shutdown().await;
    }
}
