//! On a real cluster: install the CRDs, apply `crds/examples/` into a fresh namespace, run
//! the controllers in-process and wait for the gateway to serve. Needs a kubeconfig, nodes
//! labelled `sublet.dev/provider=true` and the sublet image; run with
//! `cargo test -p sublet-operator --test cluster -- --ignored`.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use sublet_crds::{ProviderPool, StorageGateway, StoragePlan, StorageSchedule};
use sublet_operator::FIELD_MANAGER;
use sublet_operator::admin::HttpAdmin;
use sublet_operator::controller::{self, Context, NetworkProbe};
use sublet_operator::metrics::Metrics;
use sublet_operator::render::Images;

fn yaml_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[tokio::test]
#[ignore = "needs a cluster"]
async fn examples_become_a_serving_gateway() {
    let client = Client::try_default().await.unwrap();
    let crds_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    let params = PatchParams::apply(FIELD_MANAGER).force();

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for file in yaml_files(&crds_dir) {
        let crd: CustomResourceDefinition =
            serde_yaml::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let name = crd.metadata.name.clone().unwrap();
        crds.patch(&name, &params, &Patch::Apply(&crd))
            .await
            .unwrap();
    }
    // The API server needs a moment before the new kinds are served.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let ns = format!("sublet-e2e-{}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut namespace = Namespace::default();
    namespace.metadata.name = Some(ns.clone());
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();

    for file in yaml_files(&crds_dir.join("examples")) {
        // standalone.yaml holds several documents for `sublet serve`, not for the cluster.
        if file.file_name().is_some_and(|n| n == "standalone.yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let doc: DynamicObject = serde_yaml::from_str(&text).unwrap();
        let kind = doc.types.as_ref().unwrap().kind.clone();
        let resource = match kind.as_str() {
            "ProviderPool" => ApiResource::erase::<ProviderPool>(&()),
            "StoragePlan" => ApiResource::erase::<StoragePlan>(&()),
            "StorageSchedule" => ApiResource::erase::<StorageSchedule>(&()),
            "StorageGateway" => ApiResource::erase::<StorageGateway>(&()),
            other => panic!("{}: unexpected kind {other}", file.display()),
        };
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &resource);
        let name = doc.metadata.name.clone().unwrap();
        api.patch(&name, &params, &Patch::Apply(&doc))
            .await
            .unwrap();
    }

    let ctx = Arc::new(Context::new(
        client.clone(),
        Images::default(),
        Metrics::new().unwrap(),
        Arc::new(HttpAdmin::default()),
        Arc::new(NetworkProbe::default()),
    ));
    let controllers = tokio::spawn(controller::run(ctx, Some(ns.clone())));

    let gateways: Api<StorageGateway> = Api::namespaced(client.clone(), &ns);
    let plans: Api<StoragePlan> = Api::namespaced(client.clone(), &ns);
    let deadline = Instant::now() + Duration::from_secs(300);
    let (served, last) = loop {
        let gateway = gateways.get("s3").await.unwrap();
        let status = gateway.status.clone().unwrap_or_default();
        let ready = sublet_crds::find_condition(&status.conditions, "Ready");
        if ready.is_some_and(|c| c.status == sublet_crds::ConditionStatus::True) {
            break (true, String::new());
        }
        if Instant::now() > deadline {
            break (false, format!("{:?}", status.conditions));
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    };
    let plan = plans.get("family-photos").await.unwrap();
    controllers.abort();
    namespaces
        .delete(&ns, &DeleteParams::default())
        .await
        .unwrap();
    assert!(served, "gateway s3 not ready after 5 minutes: {last}");
    let status = plan.status.unwrap();
    assert!(sublet_crds::find_condition(&status.conditions, "Ready").is_some());
    assert!(sublet_crds::find_condition(&status.conditions, "Feasible").is_some());
    assert_eq!(status.redundancy.as_deref(), Some("EC 4+2"));
}
