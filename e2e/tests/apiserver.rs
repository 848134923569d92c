//! The CRDs, the examples, the Helm chart and the operator against a real kube-apiserver
//! (v1.28, envtest style: etcd and the API server, no pods run; `e2e/src/apiserver.rs`).
//! Skips with one line unless the binaries are there; `SUBLET_REQUIRE_APISERVER=1` (set by
//! `.ci/run`) makes a missing one fail instead.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sublet_e2e::apiserver::{self, ApiServer, OPERATOR_NAMESPACE, User};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn ok(result: Result<String, String>) -> String {
    result.unwrap_or_else(|e| panic!("{e}"))
}

/// Polls `check` every 200 ms until it gives `Some`, or fails naming `what` after `timeout`.
fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(start.elapsed() < timeout, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn install_crds(api: &ApiServer) {
    for file in yaml_files(&root().join("crds")) {
        ok(api.kubectl(&["apply", "--server-side", "-f", file.to_str().unwrap()]));
    }
    ok(api.kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd",
        "--all",
        "--timeout=60s",
    ]));
}

#[test]
fn crds_and_every_example_install_and_bad_sizes_are_refused() {
    let Some(api) = ApiServer::start() else {
        return;
    };
    install_crds(&api);
    let crds = ok(api.kubectl(&["get", "crd", "-o", "name"]));
    for kind in [
        "providerpools",
        "storageplans",
        "storageschedules",
        "storagegateways",
        "bucketclaims",
    ] {
        assert!(crds.contains(&format!("{kind}.sublet.dev")), "{crds}");
    }

    // Every example passes the server's own validation, then applies, each file in a
    // namespace of its own (standalone.yaml reuses names of the others).
    let mut files = yaml_files(&root().join("crds/examples"));
    files.extend(yaml_files(&root().join("charts/sublet/examples")));
    for (i, file) in files.iter().enumerate() {
        let ns = format!("example-{i}");
        ok(api.kubectl(&["create", "namespace", &ns]));
        let path = file.to_str().unwrap();
        ok(api.kubectl(&["apply", "-n", &ns, "--dry-run=server", "-f", path]));
        ok(api.kubectl(&["apply", "-n", &ns, "-f", path]));
    }

    // Sizes the operator's parser would refuse never get stored: each is refused at
    // admission, naming the field.
    let cases = [
        ("StoragePlan", "segmentSize: -5", "spec.segmentSize"),
        ("StoragePlan", "segmentSize: banana", "spec.segmentSize"),
        ("StoragePlan", "segmentSize: \"16 Mi\"", "spec.segmentSize"),
        (
            "StoragePlan",
            "segmentSize: 1Mi\n  inlineUpTo: 1.5Ki",
            "spec.inlineUpTo",
        ),
        (
            "ProviderPool",
            "capacity: lots",
            "spec.nodes.storage.capacity",
        ),
        (
            "StorageGateway",
            "storage: -1",
            "spec.metadata.sqlite.storage",
        ),
        (
            "StorageSchedule",
            "bandwidthLimit: fast",
            "spec.rebuild.bandwidthLimit",
        ),
    ];
    for (kind, field, path) in cases {
        let doc = bad_size_document(kind, field);
        let err = api
            .kubectl_stdin(&["apply", "-n", "default", "-f", "-"], Some(&doc))
            .expect_err(&format!("{kind} with {field} was stored:\n{doc}"));
        assert!(err.contains(path) && err.contains("Invalid value"), "{err}");
    }
    bucket_claims_are_checked_at_admission(&api);
}

fn claim_document(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: sublet.dev/v1alpha1\nkind: BucketClaim\nmetadata:\n  name: {name}\nspec:\n{spec}"
    )
}

/// Claims the operator could not bind are refused by the API server, naming the field, and
/// `kubectl get` shows the claim's printer columns.
fn bucket_claims_are_checked_at_admission(api: &ApiServer) {
    let apply = |doc: &str| api.kubectl_stdin(&["apply", "-n", "default", "-f", "-"], Some(doc));
    let refused = [
        (
            "  gateway: s3\n  bucketName: photos\n  generateBucketName: photos\n",
            "set bucketName (e.g. photos) or generateBucketName",
        ),
        (
            "  gateway: s3\n",
            "set bucketName (e.g. photos) or generateBucketName",
        ),
        (
            "  gateway: s3\n  bucketName: Bad_Bucket\n",
            "spec.bucketName",
        ),
        (
            "  gateway: s3\n  bucketName: photos\n  deletionPolicy: Recycle\n",
            "spec.deletionPolicy",
        ),
        (
            "  gateway: s3\n  generateBucketName: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n",
            "spec.generateBucketName",
        ),
    ];
    for (spec, says) in refused {
        let doc = claim_document("bad", spec);
        let err = apply(&doc).expect_err(&format!("stored:\n{doc}"));
        assert!(err.contains(says), "{says}: {err}");
    }
    ok(apply(&claim_document(
        "app",
        "  gateway: s3\n  bucketName: app-data\n  deletionPolicy: Delete\n",
    )));
    // Gateway and bucket are fixed once made: another name is another claim.
    for (spec, says) in [
        (
            "  gateway: s3\n  bucketName: other\n  deletionPolicy: Delete\n",
            "generateBucketName cannot change",
        ),
        (
            "  gateway: s3\n  generateBucketName: app-data\n  deletionPolicy: Delete\n",
            "generateBucketName cannot change",
        ),
        (
            "  gateway: other\n  bucketName: app-data\n  deletionPolicy: Delete\n",
            "gateway cannot change",
        ),
    ] {
        let err = apply(&claim_document("app", spec)).expect_err(spec);
        assert!(err.contains(says), "{says}: {err}");
    }
    // The deletion policy may change (e.g. to Retain while a Delete waits for objects).
    ok(apply(&claim_document(
        "app",
        "  gateway: s3\n  bucketName: app-data\n  deletionPolicy: Retain\n",
    )));
    let table = ok(api.kubectl(&["get", "bc", "app", "-n", "default"]));
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME", "GATEWAY", "BUCKET", "SECRET", "PHASE", "POLICY", "AGE"
        ],
        "{table}"
    );
    assert!(table.contains("Retain"), "{table}");
}

/// A document of `kind` that is valid but for the size `field`.
fn bad_size_document(kind: &str, field: &str) -> String {
    let spec = match kind {
        "StoragePlan" => format!("redundancy: {{replicas: 1}}\n  {field}"),
        "ProviderPool" => format!(
            "class: owned\n  nodes:\n    selector: {{matchLabels: {{a: b}}}}\n    storage:\n      hostPath: /x\n      {field}"
        ),
        "StorageGateway" => {
            format!("defaultPlan: p\n  metadata:\n    sqlite:\n      {field}")
        }
        "StorageSchedule" => format!("rebuild:\n    {field}"),
        _ => unreachable!(),
    };
    format!(
        "apiVersion: sublet.dev/v1alpha1\nkind: {kind}\nmetadata:\n  name: bad\nspec:\n  {spec}\n"
    )
}

/// A `sublet-operator` process running as the chart's service account.
struct Operator {
    child: Child,
    log: PathBuf,
}

impl Operator {
    fn start(api: &ApiServer, name: &str) -> Operator {
        let bin = sublet_e2e::workspace_binary("sublet-operator", "sublet-operator");
        let log = api.dir().join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin)
            .args(["--leader-elect", "--http-listen"])
            .arg(sublet_e2e::free_addr().to_string())
            .env("KUBECONFIG", api.kubeconfig(User::Operator))
            .env("POD_NAMESPACE", OPERATOR_NAMESPACE)
            .env("POD_NAME", name)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Operator { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then how long it took to exit (fails past `within`).
    fn terminate(&mut self, within: Duration) -> Duration {
        let start = Instant::now();
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exited = wait_for("the operator to exit after SIGTERM", within, || {
            self.child.try_wait().unwrap()
        });
        assert!(exited.success(), "{exited}: {}", self.log());
        start.elapsed()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Three external providers (nothing needs to listen), a 2+1 plan on them and a gateway.
const STORAGE: &str = r#"
apiVersion: sublet.dev/v1alpha1
kind: ProviderPool
metadata: {name: far}
spec:
  class: owned
  endpoints:
    - {name: a, address: "127.0.0.1:9", nodeId: "a98b24717d76886596f42853d6788de4", zone: a}
    - {name: b, address: "127.0.0.1:9", nodeId: "923534dad2d466ae65dd7072e068f256", zone: b}
    - {name: c, address: "127.0.0.1:9", nodeId: "d919cd8884683a738d8a789f0bf95b3b", zone: c}
---
apiVersion: sublet.dev/v1alpha1
kind: StoragePlan
metadata: {name: photos}
spec:
  redundancy: {erasure: {dataShards: 2, parityShards: 1}}
  segmentSize: 4Mi
  placement: {spreadBy: node, maxPerDomain: 1, pools: [{name: far}]}
---
apiVersion: sublet.dev/v1alpha1
kind: StorageGateway
metadata: {name: s3}
spec:
  defaultPlan: photos
  metadata: {sqlite: {storage: 1Gi}}
  service: {type: ClusterIP, port: 9000}
"#;

fn conditions_of(obj: &Value) -> Vec<Value> {
    obj["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn config_hash(api: &ApiServer) -> Option<String> {
    let sts = api.get_json(&["-n", "storage", "statefulset", "s3"]).ok()?;
    sts["spec"]["template"]["metadata"]["annotations"]["sublet.dev/config-hash"]
        .as_str()
        .map(str::to_owned)
}

fn lease_holder(api: &ApiServer) -> Option<String> {
    let lease = api
        .get_json(&["-n", OPERATOR_NAMESPACE, "lease", "sublet-operator"])
        .ok()?;
    lease["spec"]["holderIdentity"].as_str().map(str::to_owned)
}

#[test]
fn operator_runs_on_the_charts_rbac_and_its_objects_pass_admission() {
    let Some(api) = ApiServer::start() else {
        return;
    };
    // Built (when stale) before any clock starts.
    sublet_e2e::workspace_binary("sublet-operator", "sublet-operator");
    let Some(helm) = apiserver::helm() else {
        apiserver::APISERVER.skip("helm not found");
        return;
    };
    // The chart installs the CRDs, the ClusterRole and, with two replicas, the leader Role;
    // its bindings name the service account the operator's token authenticates as.
    let chart = root().join("charts/sublet");
    let out = Command::new(&helm)
        .args(["install", "sublet"])
        .arg(&chart)
        .args([
            "--namespace",
            OPERATOR_NAMESPACE,
            "--create-namespace",
            "--set",
            "replicaCount=2",
            "--kubeconfig",
        ])
        .arg(api.kubeconfig(User::Admin))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm install: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    ok(api.kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd",
        "--all",
        "--timeout=60s",
    ]));

    // Pods in this namespace must meet the `restricted` Pod Security Standard.
    ok(api.kubectl(&["create", "namespace", "storage"]));
    ok(api.kubectl(&[
        "label",
        "namespace",
        "storage",
        "pod-security.kubernetes.io/enforce=restricted",
    ]));
    // No controller-manager makes the default service account; dry-run pods need it.
    ok(api.kubectl(&["-n", "storage", "create", "serviceaccount", "default"]));
    ok(api.kubectl_stdin(&["apply", "-n", "storage", "-f", "-"], Some(STORAGE)));

    let mut first = Operator::start(&api, "operator-a");
    let start = Instant::now();
    while lease_holder(&api).as_deref() != Some("operator-a") {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "operator-a does not lead ({:?}):\n{}",
            api.kubectl(&["-n", OPERATOR_NAMESPACE, "get", "leases", "-o", "yaml"]),
            first.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let second = Operator::start(&api, "operator-b");

    let hash = wait_for("the gateway's StatefulSet", Duration::from_secs(60), || {
        config_hash(&api)
    });
    let gateway = wait_for("the gateway's status", Duration::from_secs(30), || {
        let gw = api
            .get_json(&["-n", "storage", "storagegateway", "s3"])
            .ok()?;
        (conditions_of(&gw).len() >= 2).then_some(gw)
    });
    let log = || format!("{}\n{}", first.log(), api.log_tail());

    // Conditions say which generation they describe.
    for (kind, name) in [
        ("storagegateway", "s3"),
        ("storageplan", "photos"),
        ("providerpool", "far"),
    ] {
        let obj = wait_for(
            &format!("{kind}/{name} status"),
            Duration::from_secs(30),
            || {
                let obj = api.get_json(&["-n", "storage", kind, name]).ok()?;
                (!conditions_of(&obj).is_empty()).then_some(obj)
            },
        );
        for condition in conditions_of(&obj) {
            assert_eq!(
                condition["observedGeneration"], obj["metadata"]["generation"],
                "{kind}/{name}: {condition}"
            );
        }
    }
    let _ = gateway;

    // Every child: a controller owner reference that blocks its owner's deletion, and only
    // the operator's field manager. The master key and the shared provider token have no
    // owner on purpose.
    let children = api
        .get_json(&[
            "-n",
            "storage",
            "statefulsets,services,configmaps,secrets",
            "-l",
            "app.kubernetes.io/managed-by=sublet-operator",
            "--show-managed-fields",
        ])
        .unwrap();
    let items = children["items"].as_array().unwrap();
    let names: Vec<String> = items
        .iter()
        .map(|o| format!("{}/{}", o["kind"], o["metadata"]["name"].as_str().unwrap()))
        .collect();
    for expected in [
        "\"StatefulSet\"/s3",
        "\"Service\"/s3",
        "\"Service\"/s3-admin",
        "\"ConfigMap\"/s3-config",
        "\"Secret\"/s3-credentials",
        "\"Secret\"/s3-admin",
        "\"Secret\"/s3-master-key",
        "\"Secret\"/sublet-provider-token",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    for obj in items {
        let name = obj["metadata"]["name"].as_str().unwrap();
        let what = format!("{} {name}", obj["kind"]);
        let managers: Vec<&str> = obj["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["manager"].as_str().unwrap_or("?"))
            .collect();
        assert!(
            managers.iter().all(|m| *m == "sublet-operator"),
            "{what}: field managers {managers:?}"
        );
        if ["s3-master-key", "sublet-provider-token"].contains(&name) {
            assert!(obj["metadata"]["ownerReferences"].is_null(), "{what}");
            continue;
        }
        let owners = obj["metadata"]["ownerReferences"].as_array().unwrap();
        assert_eq!(owners.len(), 1, "{what}");
        assert_eq!(owners[0]["kind"], "StorageGateway", "{what}");
        assert_eq!(owners[0]["controller"], true, "{what}");
        assert_eq!(owners[0]["blockOwnerDeletion"], true, "{what}");
    }

    // The gateway's pod passes the `restricted` Pod Security Standard (and can read its
    // 0400 master key: the volume belongs to the pod's group).
    let sts = api
        .get_json(&["-n", "storage", "statefulset", "s3"])
        .unwrap();
    let template = &sts["spec"]["template"];
    assert_eq!(template["spec"]["securityContext"]["fsGroup"], 10001);
    let mut spec = template["spec"].clone();
    // The StatefulSet's claim stands in as a volume of the same name.
    for claim in sts["spec"]["volumeClaimTemplates"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let volume = serde_json::json!({"name": claim["metadata"]["name"], "emptyDir": {}});
        spec["volumes"].as_array_mut().unwrap().push(volume);
    }
    let pod = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "s3-check", "labels": template["metadata"]["labels"]},
        "spec": spec,
    });
    ok(api.kubectl_stdin(
        &["create", "-n", "storage", "--dry-run=server", "-f", "-"],
        Some(&pod.to_string()),
    ));
    // The check has teeth: the same pod without its security contexts is refused.
    let mut bare = pod.clone();
    bare["spec"]["securityContext"] = Value::Null;
    bare["spec"]["containers"][0]["securityContext"] = Value::Null;
    let refused = api
        .kubectl_stdin(
            &["create", "-n", "storage", "--dry-run=server", "-f", "-"],
            Some(&bare.to_string()),
        )
        .expect_err("a pod without security contexts passed `restricted`");
    assert!(refused.contains("violates PodSecurity"), "{refused}");

    // A size the schema admits but no 64-bit count holds: reported on that plan alone, and
    // the other plans and the gateway go on being reconciled.
    let huge = "apiVersion: sublet.dev/v1alpha1\nkind: StoragePlan\nmetadata: {name: huge}\nspec:\n  redundancy: {replicas: 1}\n  segmentSize: 99999999Ei\n";
    ok(api.kubectl_stdin(&["apply", "-n", "storage", "-f", "-"], Some(huge)));
    let unreadable = wait_for(
        "Ready=False, reason Unreadable on the plan the operator cannot read",
        Duration::from_secs(30),
        || {
            let plan = api
                .get_json(&["-n", "storage", "storageplan", "huge"])
                .ok()?;
            conditions_of(&plan)
                .into_iter()
                .find(|c| c["type"] == "Ready" && c["reason"] == "Unreadable")
        },
    );
    let message = unreadable["message"].as_str().unwrap();
    assert!(message.contains("spec.segmentSize"), "{message}");
    assert!(message.contains("99999999Ei"), "{message}");
    // The gateway says it is left out of its config.
    wait_for(
        "the gateway's ConfigComplete naming the plan it cannot read",
        Duration::from_secs(30),
        || {
            let gw = api
                .get_json(&["-n", "storage", "storagegateway", "s3"])
                .ok()?;
            conditions_of(&gw).into_iter().find(|c| {
                c["type"] == "ConfigComplete"
                    && c["message"].as_str().is_some_and(|m| {
                        m.contains("StoragePlan/huge: the operator cannot read it")
                    })
            })
        },
    );

    // Claims: one naming no gateway says so in its status; one on gateway s3 gets the
    // finalizer that runs its deletion policy (the operator read the gateway's admin token;
    // no gateway pod runs here, so it binds no further). Both within the chart's RBAC.
    let claims = "apiVersion: sublet.dev/v1alpha1\nkind: BucketClaim\nmetadata: {name: lost}\nspec: {gateway: nowhere, bucketName: lost-data}\n---\napiVersion: sublet.dev/v1alpha1\nkind: BucketClaim\nmetadata: {name: app}\nspec: {gateway: s3, generateBucketName: app}\n";
    ok(api.kubectl_stdin(&["apply", "-n", "storage", "-f", "-"], Some(claims)));
    let lost = wait_for(
        "Bound=False, reason GatewayNotFound on a claim naming no gateway",
        Duration::from_secs(30),
        || {
            let claim = api
                .get_json(&["-n", "storage", "bucketclaim", "lost"])
                .ok()?;
            conditions_of(&claim)
                .into_iter()
                .find(|c| c["type"] == "Bound" && c["reason"] == "GatewayNotFound")
                .map(|c| (c, claim))
        },
    );
    assert_eq!(lost.1["status"]["phase"], "Pending");
    assert_eq!(
        lost.0["observedGeneration"],
        lost.1["metadata"]["generation"]
    );
    wait_for("the claim's finalizer", Duration::from_secs(30), || {
        let claim = api
            .get_json(&["-n", "storage", "bucketclaim", "app"])
            .ok()?;
        claim["metadata"]["finalizers"]
            .as_array()?
            .iter()
            .any(|f| f == "sublet.dev/bucket-claim")
            .then_some(())
    });

    // An edited plan rolls the gateway.
    ok(api.kubectl(&[
        "-n",
        "storage",
        "patch",
        "storageplan",
        "photos",
        "--type=merge",
        "-p",
        r#"{"spec":{"segmentSize":"8Mi"}}"#,
    ]));
    let rolled = wait_for(
        "a new config hash after the plan changed",
        Duration::from_secs(30),
        || config_hash(&api).filter(|h| *h != hash),
    );
    assert_ne!(rolled, hash);

    // Not one request of the operator was refused.
    let audit = api.audit();
    assert!(!audit.is_empty(), "no audit records");
    let refused: Vec<String> = audit
        .iter()
        .filter(|r| {
            r["responseStatus"]["code"]
                .as_u64()
                .is_some_and(|c| c == 403)
        })
        .map(|r| format!("{} {}", r["verb"], r["requestURI"]))
        .collect();
    assert!(refused.is_empty(), "refused: {refused:?}\n{}", log());
    // Its log goes to a file, not a terminal: no colour codes in it (issue 28).
    assert!(
        !first.log().contains('\u{1b}'),
        "colour codes in a log that is not a terminal:\n{}",
        first.log()
    );

    // A watch that keeps failing (its CRD is gone) does not keep the leader from stopping
    // on SIGTERM, and it hands the Lease over: the second replica leads within seconds, not
    // after the Lease runs out.
    ok(api.kubectl(&["delete", "crd", "storageschedules.sublet.dev"]));
    std::thread::sleep(Duration::from_secs(3));
    let stopped = first.terminate(Duration::from_secs(15));
    let start = Instant::now();
    wait_for("operator-b to lead", Duration::from_secs(8), || {
        (lease_holder(&api).as_deref() == Some("operator-b")).then_some(())
    });
    eprintln!(
        "leader stopped in {stopped:?}; second replica led {:?} later",
        start.elapsed()
    );
    drop(second);
}
