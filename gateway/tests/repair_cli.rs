//! `sublet repair --plan NAME --config FILE` against a gateway run by `sublet serve` from the
//! same YAML: through the admin API (`SUBLET_ADMIN_URL`, as the operator's Job runs it) and
//! on the gateway's state directly (standalone).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod in_process;

use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use http_body_util::BodyExt;
use s3s::service::S3Service;
use serde_json::Value;
use sublet_gateway::runtime::repair::{RepairCommand, run_command};
use sublet_provider::server::{self, ProviderConfig};

const TOKEN: &str = "repair-test-token-0123456789";

async fn call(svc: &S3Service, method: Method, uri: &str, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
    let (s, _, b) = in_process::call(svc, method, uri, &[], body).await;
    (s, b)
}

async fn get_json(url: &str) -> (StatusCode, Value) {
    let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let resp = client.get(url.parse().unwrap()).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repair_command_restores_redundancy_remotely_and_locally() {
    let tmp = tempfile::tempdir().unwrap();
    let mut providers = Vec::new();
    for i in 0..6 {
        let mut cfg = ProviderConfig::new(tmp.path().join(format!("provider-{i}")));
        cfg.token = Some(TOKEN.into());
        providers.push(Some(server::start(cfg).await.unwrap()));
    }
    let endpoints: String = providers
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let p = p.as_ref().unwrap();
            format!(
                "    - {{name: p{i}, address: \"{}\", nodeId: \"{}\", zone: z{i}}}\n",
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
kind: StorageSchedule
metadata: {{name: care}}
spec:
  rebuild: {{gracePeriod: 1s, bandwidthLimit: 100Mi}}
---
apiVersion: sublet.dev/v1alpha1
kind: StoragePlan
metadata: {{name: standard}}
spec:
  redundancy: {{erasure: {{dataShards: 2, parityShards: 1}}}}
  segmentSize: 64Ki
  schedule: care
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
    let config_path = tmp.path().join("sublet.yaml");
    std::fs::write(&config_path, &yaml).unwrap();
    let config = sublet_crds::load_file(&config_path).unwrap_or_else(|e| panic!("{e}"));
    let running = sublet_gateway::runtime::start(&config, &Default::default())
        .await
        .unwrap();
    let admin = format!("http://{}", running.admin_addr.unwrap());
    let svc = sublet_gateway::runtime::dev::service(Arc::clone(&running.gateway), None);
    assert_eq!(
        call(&svc, Method::PUT, "/bkt", vec![]).await.0,
        StatusCode::OK
    );
    let bodies: Vec<Vec<u8>> = (0..8)
        .map(|n| (0..150_000).map(|i| ((i * 13 + n) % 251) as u8).collect())
        .collect();
    for (n, body) in bodies.iter().enumerate() {
        let (s, _) = call(&svc, Method::PUT, &format!("/bkt/o{n}"), body.clone()).await;
        assert_eq!(s, StatusCode::OK);
    }
    let plan_url = format!("{admin}/admin/v1/plans/standard");
    let (s, pool) = get_json(&format!("{admin}/admin/v1/pools/home")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(pool["shards"], 8 * 3 * 3, "{pool}");
    assert_eq!(
        get_json(&format!("{admin}/admin/v1/pools/elsewhere"))
            .await
            .0,
        StatusCode::NOT_FOUND
    );

    let unknown = RepairCommand {
        plan: "nope".into(),
        ..RepairCommand::default()
    };
    let err = run_command(&unknown, &config, &Default::default())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("plan nope is not in the config"),
        "{err}"
    );

    for (round, remote) in [(0usize, true), (1, false)] {
        running.probe_now().await;
        providers[round].take().unwrap().shutdown().await;
        running.probe_now().await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let (_, h) = get_json(&plan_url).await;
        let due = h["repair"]["due"].as_u64().unwrap();
        assert!(due > 0, "round {round}: {h}");
        if remote {
            // Through the admin API without the token nothing is repaired.
            let anonymous = RepairCommand {
                plan: "standard".into(),
                admin_url: Some(admin.clone()),
                admin_token: Some("not-the-admin-token-0123".into()),
                ..RepairCommand::default()
            };
            let err = run_command(&anonymous, &config, &Default::default())
                .await
                .unwrap_err();
            assert!(
                format!("{err:#}").contains("401") && format!("{err:#}").contains("token is wrong"),
                "{err:#}"
            );
            let (_, h) = get_json(&plan_url).await;
            assert!(h["repair"]["due"].as_u64().unwrap() > 0, "{h}");
        }
        let cmd = RepairCommand {
            plan: "standard".into(),
            admin_url: remote.then(|| admin.clone()),
            admin_token: remote.then(|| running.admin_token.clone()),
            ..RepairCommand::default()
        };
        run_command(&cmd, &config, &Default::default())
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e:#}"));
        let (_, h) = get_json(&plan_url).await;
        assert_eq!(h["repair"]["due"], 0, "round {round}: {h}");
        assert_eq!(h["objectsByHealth"]["healthy"], 8, "round {round}: {h}");
        for (n, body) in bodies.iter().enumerate() {
            let (s, got) = call(&svc, Method::GET, &format!("/bkt/o{n}"), vec![]).await;
            assert_eq!(s, StatusCode::OK);
            assert!(got == *body, "o{n} after round {round}");
        }
    }
    running.shutdown().await;
    for p in providers.into_iter().flatten() {
        p.shutdown().await;
    }
}
