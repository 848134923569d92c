//! Reconcilers against a mock API server (`tower-test`): each scenario answers the requests
//! a reconcile makes, in order, and asserts what was asked.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use sublet_crds::ProviderPoolStatus;
use tokio::task::JoinHandle;

use super::Context;
use crate::Result;
use crate::admin::{
    AdminAccess, AdminApi, BucketAnswer, BucketRemoval, ClaimUser, KeyAnswer, PlanHealth,
    PoolDrain, PoolUsage, RepairQueue,
};
use crate::metrics::Metrics;
use crate::render::Images;
use crate::testing::{NS, bucket_claim, gateway, plan, pool, pool_member, schedule};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// The health every plan reports, the shards every pool holds, and what was asked.
#[derive(Default)]
struct MockAdmin {
    health: PlanHealth,
    pool_shards: u64,
    /// What every gateway says of a draining pool.
    drain: Option<PoolDrain>,
    asked: Mutex<Vec<(String, String)>>,
    /// Users, buckets and keys, as a gateway keeps them for BucketClaims.
    accounts: Mutex<FakeAccounts>,
}

/// A gateway's users, buckets and keys, with its rules: a bucket is never another user's,
/// a key of a given id exists once, a user with a bucket or key is kept.
#[derive(Default, Debug)]
struct FakeAccounts {
    users: std::collections::BTreeMap<String, crate::admin::ClaimUser>,
    /// Bucket → (owner, objects, default plan).
    buckets: std::collections::BTreeMap<String, (String, u64, Option<String>)>,
    /// Access key → (user, secret, bucket granted).
    keys: std::collections::BTreeMap<String, (String, String, String)>,
    /// Every token the operator presented.
    tokens: Vec<String>,
    keys_deleted: u32,
}

#[async_trait::async_trait]
impl AdminApi for MockAdmin {
    async fn plan_health(&self, admin_url: &str, plan: &str) -> Result<PlanHealth> {
        self.asked
            .lock()
            .unwrap()
            .push((admin_url.to_owned(), plan.to_owned()));
        Ok(PlanHealth {
            plan: plan.to_owned(),
            ..self.health.clone()
        })
    }

    async fn pool_usage(&self, admin_url: &str, pool: &str) -> Result<PoolUsage> {
        self.asked
            .lock()
            .unwrap()
            .push((admin_url.to_owned(), pool.to_owned()));
        Ok(PoolUsage {
            pool: pool.to_owned(),
            shards: self.pool_shards,
            bytes: self.pool_shards << 20,
            drain: self.drain.clone(),
        })
    }

    /// As the gateway's `PUT /admin/v1/users/{id}` does with the body `HttpAdmin` sends: a
    /// field left out keeps what the user has, `null` removes it.
    async fn put_user(&self, admin: &AdminAccess, user: &ClaimUser) -> Result<()> {
        let mut a = self.accounts.lock().unwrap();
        a.tokens.push(admin.token.clone());
        let body = serde_json::to_value(user).unwrap();
        let mut stored = a.users.get(&user.id).cloned().unwrap_or_else(|| ClaimUser {
            id: user.id.clone(),
            ..ClaimUser::default()
        });
        stored.display_name = user.display_name.clone();
        for (field, quota) in [
            ("maxBytes", &mut stored.max_bytes),
            ("maxObjects", &mut stored.max_objects),
        ] {
            if let Some(value) = body.get(field) {
                *quota = value.as_u64();
            }
        }
        a.users.insert(user.id.clone(), stored);
        Ok(())
    }

    async fn claim_bucket(
        &self,
        admin: &AdminAccess,
        bucket: &str,
        owner: &str,
        plan: Option<&str>,
    ) -> Result<BucketAnswer> {
        let mut a = self.accounts.lock().unwrap();
        a.tokens.push(admin.token.clone());
        assert!(
            a.users.contains_key(owner),
            "bucket for unknown user {owner}"
        );
        match a.buckets.get(bucket) {
            Some((o, _, _)) if o != owner => Ok(BucketAnswer::Refused {
                reason: "BucketTaken",
                message: format!("bucket {bucket} exists and belongs to user {o}"),
            }),
            Some(_) => Ok(BucketAnswer::Bound),
            None => {
                a.buckets.insert(
                    bucket.to_owned(),
                    (owner.to_owned(), 0, plan.map(str::to_owned)),
                );
                Ok(BucketAnswer::Bound)
            }
        }
    }

    async fn put_key(
        &self,
        admin: &AdminAccess,
        user: &str,
        access_key: &str,
        secret_key: &str,
        bucket: &str,
    ) -> Result<KeyAnswer> {
        let mut a = self.accounts.lock().unwrap();
        a.tokens.push(admin.token.clone());
        let wanted = (user.to_owned(), secret_key.to_owned(), bucket.to_owned());
        match a.keys.get(access_key) {
            Some(existing) if *existing == wanted => Ok(KeyAnswer::Ready),
            Some(_) => Ok(KeyAnswer::Differs),
            None => {
                a.keys.insert(access_key.to_owned(), wanted);
                Ok(KeyAnswer::Ready)
            }
        }
    }

    async fn delete_key(&self, _: &AdminAccess, access_key: &str) -> Result<()> {
        let mut a = self.accounts.lock().unwrap();
        if a.keys.remove(access_key).is_some() {
            a.keys_deleted += 1;
        }
        Ok(())
    }

    async fn delete_bucket(
        &self,
        _: &AdminAccess,
        bucket: &str,
        owner: &str,
    ) -> Result<BucketRemoval> {
        let mut a = self.accounts.lock().unwrap();
        match a.buckets.get(bucket) {
            None => Ok(BucketRemoval::Gone),
            Some((o, _, _)) if o != owner => Ok(BucketRemoval::NotOwned(format!(
                "bucket {bucket} belongs to user {o}"
            ))),
            Some((_, objects, _)) if *objects > 0 => Ok(BucketRemoval::NotEmpty(format!(
                "bucket {bucket} is not empty"
            ))),
            Some(_) => {
                a.buckets.remove(bucket);
                Ok(BucketRemoval::Gone)
            }
        }
    }

    async fn delete_user(&self, _: &AdminAccess, id: &str) -> Result<bool> {
        let mut a = self.accounts.lock().unwrap();
        let busy =
            a.buckets.values().any(|(o, _, _)| o == id) || a.keys.values().any(|(u, _, _)| u == id);
        if busy {
            return Ok(false);
        }
        a.users.remove(id);
        Ok(true)
    }
}

/// Every endpoint answers (a Unix socket must not be asked); every provider reports 5 GiB capacity with 1 GiB used.
struct AlwaysReachable;

#[async_trait::async_trait]
impl super::ProviderProbe for AlwaysReachable {
    async fn reachable(&self, address: &str) -> bool {
        assert!(
            !address.starts_with("unix:"),
            "the operator probed a Unix socket it cannot reach: {address}"
        );
        true
    }

    async fn usage(&self, metrics_url: &str) -> Option<super::ProviderUsage> {
        assert_eq!(metrics_url, "http://10.42.0.7:7481/metrics");
        Some(super::ProviderUsage {
            capacity_bytes: 5 << 30,
            used_bytes: 1 << 30,
        })
    }
}

fn context(admin: Arc<MockAdmin>) -> (Arc<Context>, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let ctx = Context::new(
        client,
        Images::default(),
        Metrics::new().unwrap(),
        admin,
        Arc::new(AlwaysReachable),
    )
    // 02:00 UTC: inside the nightly window of the test schedule.
    .with_clock(|| "2026-11-28T02:00:00Z".parse().unwrap());
    (Arc::new(ctx), handle)
}

/// One request as the mock server saw it.
struct Seen {
    method: Method,
    path: String,
    query: String,
    body: Value,
    send: tower_test::mock::SendResponse<Response<Body>>,
}

impl Seen {
    fn reply(self, status: StatusCode, body: &Value) {
        self.send.send_response(
            Response::builder()
                .status(status)
                .body(Body::from(serde_json::to_vec(body).unwrap()))
                .unwrap(),
        );
    }

    fn ok(self, body: &Value) {
        self.reply(StatusCode::OK, body);
    }

    /// Answers with what was sent, as an apply or create does.
    fn echo(self) {
        let body = self.body.clone();
        self.reply(StatusCode::CREATED, &body);
    }

    fn already_exists(self) {
        let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "reason": "AlreadyExists", "code": 409, "message": "already exists"});
        self.reply(StatusCode::CONFLICT, &body);
    }

    fn not_found(self) {
        let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "reason": "NotFound", "code": 404, "message": "not found"});
        self.reply(StatusCode::NOT_FOUND, &body);
    }

    fn assert_apply(&self, path: &str) {
        assert_eq!((&self.method, self.path.as_str()), (&Method::PATCH, path));
        assert!(
            self.query.contains("fieldManager=sublet-operator"),
            "{}",
            self.query
        );
        assert!(self.query.contains("force=true"), "{}", self.query);
    }
}

fn decode(text: &str) -> String {
    text.replace("%2F", "/")
        .replace("%3D", "=")
        .replace("%2C", ",")
}

async fn next(handle: &mut Handle) -> Seen {
    let (request, send) =
        tokio::time::timeout(std::time::Duration::from_secs(5), handle.next_request())
            .await
            .expect("the reconcile stopped calling the API server")
            .expect("service dropped");
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = decode(request.uri().query().unwrap_or_default());
    // Every request a reconcile makes must be allowed by the operator's ClusterRole, or in
    // its own namespace (`storage` here) by its leader election Role.
    let role = crate::rbac::cluster_role().unwrap();
    let (group, resource, verb) =
        crate::rbac::request_attributes(method.as_str(), &path, &query).unwrap();
    let own_namespace = path.contains("/namespaces/storage/");
    let leader = crate::rbac::leader_role().unwrap();
    assert!(
        crate::rbac::allows(&role, &group, &resource, &verb)
            || (own_namespace
                && crate::rbac::rules_allow(leader.rules.as_deref(), &group, &resource, &verb)),
        "operator/rbac.yaml does not allow {verb} on {group}/{resource} ({method} {path})"
    );
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    // Setting blockOwnerDeletion needs update on the owner's finalizers.
    for owner in body["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if owner["blockOwnerDeletion"] == true {
            let plural = format!("{}s", owner["kind"].as_str().unwrap().to_lowercase());
            assert!(
                crate::rbac::allows(
                    &role,
                    "sublet.dev",
                    &format!("{plural}/finalizers"),
                    "update"
                ),
                "operator/rbac.yaml does not allow update on {plural}/finalizers"
            );
        }
    }
    Seen {
        method,
        path,
        query,
        body,
        send,
    }
}

async fn expect(handle: &mut Handle, method: Method, path: &str) -> Seen {
    let seen = next(handle).await;
    assert_eq!(
        (&seen.method, seen.path.as_str()),
        (&method, path),
        "query {}, body {}",
        seen.query,
        seen.body
    );
    seen
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": format!("{kind}List"), "metadata": {"resourceVersion": "1"}, "items": items})
}

const SUBLET: &str = "/apis/sublet.dev/v1alpha1/namespaces/storage";
const CORE: &str = "/api/v1/namespaces/storage";

/// Runs the reconcile and the scenario side by side; the scenario must see every request.
async fn run<T: Send + 'static>(
    reconcile: impl Future<Output = Result<kube::runtime::controller::Action>>,
    scenario: JoinHandle<T>,
) -> T {
    run_then(super::RESYNC, reconcile, scenario).await
}

/// As [`run`], for a reconcile that must look again after `again`.
async fn run_then<T: Send + 'static>(
    again: std::time::Duration,
    reconcile: impl Future<Output = Result<kube::runtime::controller::Action>>,
    scenario: JoinHandle<T>,
) -> T {
    let action = tokio::time::timeout(std::time::Duration::from_secs(10), reconcile)
        .await
        .expect("reconcile timed out")
        .unwrap();
    assert_eq!(action, kube::runtime::controller::Action::requeue(again));
    scenario.await.unwrap()
}

fn provider_pod(
    name: &str,
    node: &str,
    ip: Option<&str>,
    ready: bool,
    node_id: Option<&str>,
) -> Value {
    let mut status = json!({
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
    });
    if let Some(ip) = ip {
        status["podIP"] = json!(ip);
    }
    if let Some(id) = node_id {
        status["initContainerStatuses"] = json!([{
            "name": "identity", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "message": format!("{id}\n")}}
        }]);
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": {"sublet.dev/pool": "home-lab"}},
        "spec": {"nodeName": node, "containers": [{"name": "provider"}]},
        "status": status,
    })
}

#[tokio::test]
async fn new_pool_gets_its_daemon_set_service_and_members() {
    let (ctx, mut api) = context(Arc::new(MockAdmin::default()));
    let home = pool(
        "home-lab",
        "class: owned\nowner: alice\nnodes: {selector: {matchLabels: {sublet.dev/provider: \"true\"}}, storage: {hostPath: /var/lib/sublet, capacity: 500Gi}}",
    );
    let echo_pool = serde_json::to_value(&home).unwrap();
    let node_id = "0123456789abcdef0123456789abcdef";
    let scenario = tokio::spawn(async move {
        let finalizer = expect(
            &mut api,
            Method::PATCH,
            &format!("{SUBLET}/providerpools/home-lab"),
        )
        .await;
        assert_eq!(
            finalizer.body,
            json!({"metadata": {"finalizers": ["sublet.dev/drain"]}})
        );
        finalizer.ok(&echo_pool);

        let token = expect(&mut api, Method::POST, &format!("{CORE}/secrets")).await;
        assert_eq!(token.body["metadata"]["name"], "sublet-provider-token");
        token.already_exists();

        let service = next(&mut api).await;
        service.assert_apply(&format!("{CORE}/services/home-lab-provider"));
        assert_eq!(service.body["kind"], "Service");
        assert_eq!(service.body["spec"]["clusterIP"], "None");
        service.echo();

        let ds = next(&mut api).await;
        ds.assert_apply("/apis/apps/v1/namespaces/storage/daemonsets/home-lab-provider");
        assert_eq!(ds.body["kind"], "DaemonSet");
        assert_eq!(
            ds.body["metadata"]["ownerReferences"][0]["uid"],
            "uid-home-lab"
        );
        assert_eq!(
            ds.body["spec"]["template"]["spec"]["volumes"][0]["hostPath"]["path"],
            "/var/lib/sublet"
        );
        ds.echo();

        let pods = expect(&mut api, Method::GET, &format!("{CORE}/pods")).await;
        assert!(
            pods.query.contains("labelSelector=app.kubernetes.io/name=sublet-provider,app.kubernetes.io/instance=home-lab"),
            "{}",
            pods.query
        );
        pods.ok(&list(
            "Pod",
            vec![
                provider_pod(
                    "home-lab-provider-a",
                    "node-a",
                    Some("10.42.0.7"),
                    true,
                    Some(node_id),
                ),
                provider_pod("home-lab-provider-b", "Node.B", None, false, None),
            ],
        ));
        let node = expect(&mut api, Method::GET, "/api/v1/nodes/node-a").await;
        node.ok(&json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "node-a", "labels": {"topology.kubernetes.io/zone": "kitchen"}}}));
        expect(&mut api, Method::GET, "/api/v1/nodes/Node.B")
            .await
            .not_found();

        let status = expect(
            &mut api,
            Method::PATCH,
            &format!("{SUBLET}/providerpools/home-lab/status"),
        )
        .await;
        let body = status.body.clone();
        status.ok(&echo_pool);
        body
    });
    let body = run(
        Box::pin(super::pool::reconcile(Arc::new(home), ctx)),
        scenario,
    )
    .await;
    let status: ProviderPoolStatus = serde_json::from_value(body["status"].clone()).unwrap();
    let mut ready = pool_member("node-a", "https://10.42.0.7:7480", node_id, "kitchen", true);
    // What the provider's /metrics said, not the spec.
    ready.capacity_bytes = 5 << 30;
    ready.used_bytes = 1 << 30;
    ready.last_seen = Some("2026-11-28T02:00:00Z".into());
    let mut pending = pool_member("node-b", "", "", "Node.B", false);
    pending.capacity_bytes = 500 << 30;
    assert_eq!(status.members, [ready, pending]);
    assert_eq!(status.ready_members.as_deref(), Some("1/2"));
    assert_eq!(status.capacity.as_deref(), Some("4Gi/5Gi"));
    let cond = sublet_crds::find_condition(&status.conditions, "Ready").unwrap();
    assert_eq!(cond.status, sublet_crds::ConditionStatus::True);
    assert_eq!(cond.message, "1 of 2 providers ready");
    assert_eq!(
        cond.last_transition_time.as_deref(),
        Some("2026-11-28T02:00:00Z")
    );
}

/// Issue 28, bug 3: a pool whose only provider pod is not ready says which pod, with a
/// command that names the namespace.
#[tokio::test]
async fn a_pool_with_no_ready_provider_names_the_pods_that_are_not() {
    let (ctx, mut api) = context(Arc::new(MockAdmin::default()));
    let mut home = pool(
        "home-lab",
        "class: owned\nnodes: {selector: {}, storage: {hostPath: /var/lib/sublet, capacity: 1Gi}}",
    );
    home.metadata.finalizers = Some(vec!["sublet.dev/drain".into()]);
    let echo_pool = serde_json::to_value(&home).unwrap();
    let scenario = tokio::spawn(async move {
        expect(&mut api, Method::POST, &format!("{CORE}/secrets"))
            .await
            .already_exists();
        next(&mut api).await.echo();
        next(&mut api).await.echo();
        expect(&mut api, Method::GET, &format!("{CORE}/pods"))
            .await
            .ok(&list(
                "Pod",
                vec![provider_pod(
                    "home-lab-provider-x",
                    "node-a",
                    Some("10.42.0.9"),
                    false,
                    None,
                )],
            ));
        expect(&mut api, Method::GET, "/api/v1/nodes/node-a")
            .await
            .not_found();
        let status = expect(
            &mut api,
            Method::PATCH,
            &format!("{SUBLET}/providerpools/home-lab/status"),
        )
        .await;
        let body = status.body.clone();
        status.ok(&echo_pool);
        body
    });
    let body = run(
        Box::pin(super::pool::reconcile(Arc::new(home), ctx)),
        scenario,
    )
    .await;
    let status: ProviderPoolStatus = serde_json::from_value(body["status"].clone()).unwrap();
    let cond = sublet_crds::find_condition(&status.conditions, "Ready").unwrap();
    assert_eq!(cond.status, sublet_crds::ConditionStatus::False);
    assert_eq!(cond.reason, "NoProviderReady");
    assert_eq!(
        cond.message,
        "its one provider is not ready; pods not ready: home-lab-provider-x \
         (kubectl describe pods -n storage home-lab-provider-x)"
    );
}

fn friends_pool() -> sublet_crds::ProviderPool {
    let mut friends = pool(
        "friends",
        "class: owned\nowner: bob\nendpoints: [{name: bob-nas, address: \"https://bob-nas.example:7480\", nodeId: b3f1, zone: bob-home}, {name: carol-pi, address: \"carol-pi.example:7480\"}, {name: dave-box, address: \"dave.example:7480\"}]",
    );
    friends.status = Some(ProviderPoolStatus {
        members: vec![
            pool_member(
                "bob-nas",
                "https://bob-nas.example:7480",
                "b3f1",
                "bob-home",
                true,
            ),
            pool_member("carol-pi", "carol-pi.example:7480", "", "carol-home", true),
            pool_member("dave-box", "dave.example:7480", "", "dave-home", true),
        ],
        ..Default::default()
    });
    friends
}

#[tokio::test]
async fn gateway_gets_config_secrets_services_workload_and_status() {
    let (ctx, mut api) = context(Arc::new(MockAdmin::default()));
    let gw = gateway("s3", "defaultPlan: photos\ncredentialsSecret: sublet-s3");
    let echo_gw = serde_json::to_value(&gw).unwrap();
    let plans = vec![
        serde_json::to_value(plan("photos", "redundancy: {erasure: {dataShards: 2, parityShards: 1}}\nplacement: {pools: [{name: friends}]}")).unwrap(),
        serde_json::to_value(plan("broken", "redundancy: {replicas: 0}")).unwrap(),
    ];
    let pools = vec![serde_json::to_value(friends_pool()).unwrap()];
    let scenario = tokio::spawn(async move {
        let token = expect(&mut api, Method::POST, &format!("{CORE}/secrets")).await;
        assert_eq!(token.body["metadata"]["name"], "sublet-provider-token");
        token.echo();
        let master = expect(&mut api, Method::POST, &format!("{CORE}/secrets")).await;
        assert_eq!(master.body["metadata"]["name"], "s3-master-key");
        assert!(master.body["metadata"].get("ownerReferences").is_none());
        master.echo();
        let event = expect(
            &mut api,
            Method::POST,
            "/apis/events.k8s.io/v1/namespaces/storage/events",
        )
        .await;
        assert_eq!(event.body["reason"], "MasterKeyCreated");
        assert_eq!(event.body["regarding"]["name"], "s3");
        event.echo();
        // The credentials exist: they are kept, and nothing else touches that Secret.
        let creds = expect(&mut api, Method::POST, &format!("{CORE}/secrets")).await;
        assert_eq!(creds.body["metadata"]["name"], "sublet-s3");
        creds.already_exists();
        // The admin token is made once, owned by the gateway.
        let admin_token = expect(&mut api, Method::POST, &format!("{CORE}/secrets")).await;
        assert_eq!(admin_token.body["metadata"]["name"], "s3-admin");
        assert_eq!(
            admin_token.body["metadata"]["ownerReferences"][0]["name"],
            "s3"
        );
        let admin_token_text = admin_token.body["stringData"]["token"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(admin_token_text.len(), 40);
        admin_token.echo();
        // The pools, plans and schedules are read after the keys exist.
        expect(&mut api, Method::GET, &format!("{SUBLET}/providerpools"))
            .await
            .ok(&list("ProviderPool", pools));
        expect(&mut api, Method::GET, &format!("{SUBLET}/storageplans"))
            .await
            .ok(&list("StoragePlan", plans));
        expect(&mut api, Method::GET, &format!("{SUBLET}/storageschedules"))
            .await
            .ok(&list("StorageSchedule", vec![]));

        let cm = next(&mut api).await;
        cm.assert_apply(&format!("{CORE}/configmaps/s3-config"));
        let yaml = cm.body["data"]["sublet.yaml"].as_str().unwrap().to_owned();
        cm.echo();
        let service = next(&mut api).await;
        service.assert_apply(&format!("{CORE}/services/s3"));
        assert_eq!(service.body["spec"]["ports"][0]["port"], 9000);
        service.echo();
        let admin = next(&mut api).await;
        admin.assert_apply(&format!("{CORE}/services/s3-admin"));
        admin.echo();
        let sts = next(&mut api).await;
        sts.assert_apply("/apis/apps/v1/namespaces/storage/statefulsets/s3");
        let hash =
            sts.body["spec"]["template"]["metadata"]["annotations"]["sublet.dev/config-hash"]
                .clone();
        // The gateway reads its admin token from that Secret, never from the ConfigMap.
        let env = sts.body["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap();
        let admin_env = env
            .iter()
            .find(|e| e["name"] == "SUBLET_ADMIN_TOKEN")
            .unwrap();
        assert_eq!(
            admin_env["valueFrom"]["secretKeyRef"],
            json!({"name": "s3-admin", "key": "token", "optional": false})
        );
        assert!(!yaml.contains(&admin_token_text));
        let mut answer = sts.body.clone();
        answer["status"] = json!({"replicas": 1, "readyReplicas": 1,
            "currentRevision": "s3-1", "updateRevision": "s3-1"});
        sts.ok(&answer);

        let status = expect(
            &mut api,
            Method::PATCH,
            &format!("{SUBLET}/storagegateways/s3/status"),
        )
        .await;
        let body = status.body.clone();
        status.ok(&echo_gw);
        (yaml, hash, body)
    });
    let (yaml, hash, body) = run(
        Box::pin(super::gateway::reconcile(Arc::new(gw), ctx)),
        scenario,
    )
    .await;

    let config = sublet_crds::load_str("sublet.yaml", &yaml).unwrap();
    assert_eq!(config.plans.keys().collect::<Vec<_>>(), ["photos"]);
    assert_eq!(config.pools["friends"].spec.endpoints.len(), 3);
    assert_eq!(
        hash,
        json!(blake3::hash(yaml.as_bytes()).to_hex()[..16].to_owned())
    );

    let status = &body["status"];
    assert_eq!(status["readyReplicas"], 1);
    assert_eq!(status["endpoint"], "http://s3.storage.svc:9000");
    let conditions = status["conditions"].as_array().unwrap();
    assert_eq!(conditions[0]["type"], "Ready");
    assert_eq!(conditions[0]["status"], "True");
    assert_eq!(conditions[1]["type"], "ConfigComplete");
    assert_eq!(conditions[1]["status"], "False");
    assert_eq!(
        conditions[1]["message"],
        "left out of the config: StoragePlan/broken: spec.redundancy.replicas: must be at least 1 (got 0)"
    );
}

#[tokio::test]
async fn gateway_whose_default_plan_is_invalid_keeps_its_workload_and_says_why() {
    let (ctx, mut api) = context(Arc::new(MockAdmin::default()));
    let gw = gateway("s3", "defaultPlan: broken");
    let echo_gw = serde_json::to_value(&gw).unwrap();
    let plans = vec![serde_json::to_value(plan("broken", "redundancy: {replicas: 0}")).unwrap()];
    let scenario = tokio::spawn(async move {
        // The keys are made whatever the config: there is a master key to back up.
        let mut made = Vec::new();
        for _ in 0..4 {
            let secret = expect(&mut api, Method::POST, &format!("{CORE}/secrets")).await;
            made.push(secret.body["metadata"]["name"].as_str().unwrap().to_owned());
            secret.already_exists();
        }
        assert_eq!(
            made,
            [
                "sublet-provider-token",
                "s3-master-key",
                "s3-credentials",
                "s3-admin"
            ]
        );
        expect(&mut api, Method::GET, &format!("{SUBLET}/providerpools"))
            .await
            .ok(&list("ProviderPool", vec![]));
        expect(&mut api, Method::GET, &format!("{SUBLET}/storageplans"))
            .await
            .ok(&list("StoragePlan", plans));
        expect(&mut api, Method::GET, &format!("{SUBLET}/storageschedules"))
            .await
            .ok(&list("StorageSchedule", vec![]));
        // No ConfigMap or workload is touched: straight to status.
        let status = expect(
            &mut api,
            Method::PATCH,
            &format!("{SUBLET}/storagegateways/s3/status"),
        )
        .await;
        let body = status.body.clone();
        status.ok(&echo_gw);
        let event = expect(
            &mut api,
            Method::POST,
            "/apis/events.k8s.io/v1/namespaces/storage/events",
        )
        .await;
        assert_eq!(event.body["type"], "Warning");
        assert_eq!(event.body["reason"], "ConfigInvalid");
        event.echo();
        body
    });
    let action = super::gateway::reconcile(Arc::new(gw), ctx).await.unwrap();
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(super::INVALID_RESYNC)
    );
    let body = scenario.await.unwrap();
    let ready = &body["status"]["conditions"][0];
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "ConfigInvalid");
    assert_eq!(
        ready["message"],
        "spec.defaultPlan: StoragePlan \"broken\" is left out of the config (spec.redundancy.replicas: must be at least 1 (got 0))"
    );
}

#[tokio::test]
async fn invalid_plan_gets_ready_false_and_an_event() {
    let (ctx, mut api) = context(Arc::new(MockAdmin::default()));
    let bad = plan(
        "photos",
        "redundancy: {erasure: {dataShards: 4, parityShards: 0}}",
    );
    let echo = serde_json::to_value(&bad).unwrap();
    let plans = vec![echo.clone()];
    let scenario = tokio::spawn(async move {
        let inventory = async |api: &mut Handle, plans: Vec<Value>| {
            expect(api, Method::GET, &format!("{SUBLET}/providerpools"))
                .await
                .ok(&list("ProviderPool", vec![]));
            expect(api, Method::GET, &format!("{SUBLET}/storageplans"))
                .await
                .ok(&list("StoragePlan", plans));
            expect(api, Method::GET, &format!("{SUBLET}/storageschedules"))
                .await
                .ok(&list("StorageSchedule", vec![]));
        };
        inventory(&mut api, plans.clone()).await;
        let event = expect(
            &mut api,
            Method::POST,
            "/apis/events.k8s.io/v1/namespaces/storage/events",
        )
        .await;
        assert_eq!(event.body["type"], "Warning");
        assert_eq!(event.body["reason"], "Invalid");
        assert_eq!(
            event.body["note"],
            "spec.redundancy.erasure.parityShards: must be at least 1; without parity use replicas: 1"
        );
        event.echo();
        // Invalid plans get no health and no Jobs: no gateway lookup, straight to status.
        let status = expect(
            &mut api,
            Method::PATCH,
            &format!("{SUBLET}/storageplans/photos/status"),
        )
        .await;
        let body = status.body.clone();
        status.ok(&echo);
        // A second reconcile from the same (stale) object sends no second Event.
        inventory(&mut api, plans).await;
        expect(
            &mut api,
            Method::PATCH,
            &format!("{SUBLET}/storageplans/photos/status"),
        )
        .await
        .ok(&echo);
        body
    });
    let twice = async move {
        super::plan::reconcile(Arc::new(bad.clone()), ctx.clone()).await?;
        super::plan::reconcile(Arc::new(bad), ctx).await
    };
    let body = run(Box::pin(twice), scenario).await;
    let conditions = &body["status"]["conditions"];
    assert_eq!(conditions[0]["type"], "Ready");
    assert_eq!(conditions[0]["status"], "False");
    assert_eq!(conditions[0]["reason"], "Invalid");
    assert_eq!(conditions[1]["type"], "Feasible");
    assert_eq!(body["status"]["redundancy"], "EC 4+0");
}

#[tokio::test]
async fn due_repairs_start_jobs_up_to_max_concurrent_jobs() {
    let admin = Arc::new(MockAdmin {
        health: PlanHealth {
            objects: 5000,
            logical_bytes: 1 << 30,
            stored_bytes: 3 << 29,
            shards: sublet_crds::ShardCounts {
                healthy: 14_000,
                degraded: 900,
                at_risk: 100,
                lost: 0,
            },
            // Enough for three Jobs, but one of the two slots is taken.
            repair: RepairQueue {
                due: 2500,
                at_risk: 0,
                waiting: 10,
            },
            ..PlanHealth::default()
        },
        ..MockAdmin::default()
    });
    let (ctx, mut api) = context(admin.clone());
    let photos = plan(
        "photos",
        "redundancy: {erasure: {dataShards: 2, parityShards: 1}}\nplacement: {pools: [{name: friends}]}\nschedule: nightly",
    );
    let echo = serde_json::to_value(&photos).unwrap();
    let plans = vec![echo.clone()];
    let schedules = vec![serde_json::to_value(schedule(
        "nightly",
        "rebuild: {minHealthyShards: 3, maxConcurrentJobs: 2, bandwidthLimit: 50Mi, window: {start: \"01:00\", end: \"06:00\"}}",
    ))
    .unwrap()];
    let pools = vec![serde_json::to_value(friends_pool()).unwrap()];
    let gateways = vec![serde_json::to_value(gateway("s3", "defaultPlan: photos")).unwrap()];
    let again = (
        plans.clone(),
        schedules.clone(),
        pools.clone(),
        gateways.clone(),
    );
    let scenario = tokio::spawn(async move {
        expect(&mut api, Method::GET, &format!("{SUBLET}/providerpools"))
            .await
            .ok(&list("ProviderPool", pools));
        expect(&mut api, Method::GET, &format!("{SUBLET}/storageplans"))
            .await
            .ok(&list("StoragePlan", plans));
        expect(&mut api, Method::GET, &format!("{SUBLET}/storageschedules"))
            .await
            .ok(&list("StorageSchedule", schedules));
        expect(&mut api, Method::GET, &format!("{SUBLET}/storagegateways"))
            .await
            .ok(&list("StorageGateway", gateways));
        let jobs = expect(
            &mut api,
            Method::GET,
            "/apis/batch/v1/namespaces/storage/jobs",
        )
        .await;
        assert!(
            jobs.query
                .contains("labelSelector=sublet.dev/schedule=nightly"),
            "{}",
            jobs.query
        );
        jobs.ok(&list(
            "Job",
            vec![json!({"apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": "archive-repair-x1", "namespace": NS,
                    "labels": {"sublet.dev/plan": "archive", "sublet.dev/schedule": "nightly"}},
                "status": {"active": 1}})],
        ));
        let job = expect(
            &mut api,
            Method::POST,
            "/apis/batch/v1/namespaces/storage/jobs",
        )
        .await;
        assert_eq!(job.body["metadata"]["generateName"], "photos-repair-");
        assert_eq!(
            job.body["spec"]["template"]["spec"]["containers"][0]["args"],
            json!([
                "repair",
                "--plan",
                "photos",
                "--config",
                "/etc/sublet/sublet.yaml"
            ])
        );
        let mut created = job.body.clone();
        created["metadata"]["name"] = json!("photos-repair-abcde");
        job.reply(StatusCode::CREATED, &created);
        let event = expect(
            &mut api,
            Method::POST,
            "/apis/events.k8s.io/v1/namespaces/storage/events",
        )
        .await;
        assert_eq!(event.body["reason"], "RepairStarted");
        event.echo();
        // Only one Job: the second would exceed maxConcurrentJobs.
        let status = expect(
            &mut api,
            Method::PATCH,
            &format!("{SUBLET}/storageplans/photos/status"),
        )
        .await;
        let body = status.body.clone();
        status.ok(&echo);
        (body, api)
    });
    let (body, mut api) = run(
        Box::pin(super::plan::reconcile(
            Arc::new(photos.clone()),
            ctx.clone(),
        )),
        scenario,
    )
    .await;
    assert_eq!(
        *admin.asked.lock().unwrap(),
        [(
            "http://s3-admin.storage.svc:9001".to_owned(),
            "photos".to_owned()
        )]
    );
    let status: sublet_crds::StoragePlanStatus =
        serde_json::from_value(body["status"].clone()).unwrap();
    assert_eq!(status.objects, 5000);
    assert_eq!(status.healthy_percent.as_deref(), Some("93.3%"));
    let find = |t| sublet_crds::find_condition(&status.conditions, t).unwrap();
    assert_eq!(find("Ready").status, sublet_crds::ConditionStatus::True);
    assert_eq!(find("Feasible").status, sublet_crds::ConditionStatus::True);
    assert_eq!(find("Degraded").status, sublet_crds::ConditionStatus::True);
    assert_eq!(
        find("Repairing").message,
        "started 1 rebuild Job for 2500 objects due for repair"
    );
    // Counted by namespace and plan (issue 28: the namespace label was missing).
    let metrics = ctx.metrics.render();
    assert!(
        metrics
            .contains("sublet_operator_repair_jobs_total{namespace=\"storage\",plan=\"photos\"} 1"),
        "{metrics}"
    );

    // The status write triggers the next reconcile at once: it must neither poll the gateway
    // nor start another Job, and must write the same status, so the loop ends there.
    let mut written = photos;
    written.status = Some(status.clone());
    let echo = serde_json::to_value(&written).unwrap();
    let (plans, schedules, pools, gateways) = again;
    let scenario = tokio::spawn(async move {
        expect(&mut api, Method::GET, &format!("{SUBLET}/providerpools"))
            .await
            .ok(&list("ProviderPool", pools));
        expect(&mut api, Method::GET, &format!("{SUBLET}/storageplans"))
            .await
            .ok(&list("StoragePlan", plans));
        expect(&mut api, Method::GET, &format!("{SUBLET}/storageschedules"))
            .await
            .ok(&list("StorageSchedule", schedules));
        expect(&mut api, Method::GET, &format!("{SUBLET}/storagegateways"))
            .await
            .ok(&list("StorageGateway", gateways));
        let patch = expect(
            &mut api,
            Method::PATCH,
            &format!("{SUBLET}/storageplans/photos/status"),
        )
        .await;
        let body = patch.body.clone();
        patch.ok(&echo);
        body
    });
    let second = run(
        Box::pin(super::plan::reconcile(Arc::new(written), ctx)),
        scenario,
    )
    .await;
    assert_eq!(second["status"], body["status"]);
    assert_eq!(admin.asked.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn last_seen_moves_in_steps_so_status_settles() {
    let (ctx, _api) = context(Arc::new(MockAdmin::default()));
    let seen = |ready, before| super::pool::last_seen(ready, before, &ctx);
    // The clock says 02:00:00.
    assert_eq!(seen(true, None).as_deref(), Some("2026-11-28T02:00:00Z"));
    assert_eq!(
        seen(true, Some("2026-11-28T01:58:00Z")).as_deref(),
        Some("2026-11-28T01:58:00Z"),
        "two minutes ago is recent enough"
    );
    assert_eq!(
        seen(true, Some("2026-11-28T01:50:00Z")).as_deref(),
        Some("2026-11-28T02:00:00Z")
    );
    assert_eq!(
        seen(false, Some("2026-11-28T01:00:00Z")).as_deref(),
        Some("2026-11-28T01:00:00Z"),
        "a member that is down keeps when it was last seen"
    );
    assert_eq!(seen(false, None), None);
}

fn deleted_pool() -> sublet_crds::ProviderPool {
    let mut p = pool(
        "home-lab",
        "class: owned\nnodes: {selector: {}, storage: {hostPath: /x, capacity: 1Gi}}",
    );
    p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2026-11-28T01:59:00Z".parse().unwrap(),
    ));
    p.metadata.finalizers = Some(vec!["example.com/other".into(), "sublet.dev/drain".into()]);
    p.metadata.resource_version = Some("42".into());
    p
}

#[tokio::test]
async fn deleting_a_pool_with_shards_is_held_by_its_finalizer() {
    let admin = Arc::new(MockAdmin {
        pool_shards: 120,
        ..MockAdmin::default()
    });
    let (ctx, mut api) = context(admin.clone());
    let home = deleted_pool();
    let echo = serde_json::to_value(&home).unwrap();
    let gateways = vec![serde_json::to_value(gateway("s3", "defaultPlan: photos")).unwrap()];
    let scenario = tokio::spawn(async move {
        expect(&mut api, Method::GET, &format!("{SUBLET}/storagegateways"))
            .await
            .ok(&list("StorageGateway", gateways));
        // No finalizer change, no workload change: only the reason in status and an Event.
        let status = expect(
            &mut api,
            Method::PATCH,
            &format!("{SUBLET}/providerpools/home-lab/status"),
        )
        .await;
        let body = status.body.clone();
        status.ok(&echo);
        let event = expect(
            &mut api,
            Method::POST,
            "/apis/events.k8s.io/v1/namespaces/storage/events",
        )
        .await;
        assert_eq!(event.body["reason"], "Draining");
        event.echo();
        body
    });
    // Shards are moving: looked at again within seconds, so the finalizer goes soon after.
    let body = run_then(
        super::pool::DRAIN_POLL,
        Box::pin(super::pool::reconcile(Arc::new(home), ctx)),
        scenario,
    )
    .await;
    assert_eq!(
        *admin.asked.lock().unwrap(),
        [(
            "http://s3-admin.storage.svc:9001".to_owned(),
            "home-lab".to_owned()
        )]
    );
    let ready = &body["status"]["conditions"][0];
    assert_eq!(ready["reason"], "Draining");
    assert_eq!(
        ready["message"],
        "deleting: StorageGateway s3 stores 120 shards (120Mi) here; repair moves the shards to other pools before the providers go (remove finalizer sublet.dev/drain to delete now and lose them)"
    );
}

#[tokio::test]
async fn a_deleted_pool_whose_drain_is_blocked_says_which_plan_holds_it() {
    let admin = Arc::new(MockAdmin {
        pool_shards: 12,
        drain: Some(PoolDrain {
            state: "blocked".into(),
            blocked: vec!["plan photos needs 2 shards of every stripe in pool home-lab".into()],
            ..PoolDrain::default()
        }),
        ..MockAdmin::default()
    });
    let (ctx, mut api) = context(admin);
    let home = deleted_pool();
    let echo = serde_json::to_value(&home).unwrap();
    let gateways = vec![serde_json::to_value(gateway("s3", "defaultPlan: photos")).unwrap()];
    let scenario = tokio::spawn(async move {
        expect(&mut api, Method::GET, &format!("{SUBLET}/storagegateways"))
            .await
            .ok(&list("StorageGateway", gateways));
        let status = expect(
            &mut api,
            Method::PATCH,
            &format!("{SUBLET}/providerpools/home-lab/status"),
        )
        .await;
        let body = status.body.clone();
        status.ok(&echo);
        let event = expect(
            &mut api,
            Method::POST,
            "/apis/events.k8s.io/v1/namespaces/storage/events",
        )
        .await;
        assert_eq!(event.body["reason"], "DrainBlocked");
        assert_eq!(event.body["type"], "Warning");
        event.echo();
        body
    });
    let body = run(
        Box::pin(super::pool::reconcile(Arc::new(home), ctx)),
        scenario,
    )
    .await;
    let ready = &body["status"]["conditions"][0];
    assert_eq!(ready["reason"], "DrainBlocked");
    assert_eq!(
        ready["message"],
        "deleting, but the drain is blocked: StorageGateway s3: plan photos needs 2 shards of every stripe in pool home-lab; change those plans, or remove finalizer sublet.dev/drain to delete now and lose the shards"
    );
    assert_eq!(body["status"]["drain"]["state"], "Blocked");
    assert_eq!(body["status"]["conditions"][1]["reason"], "Blocked");
}

#[tokio::test]
async fn drained_pool_releases_its_finalizer_and_keeps_the_others() {
    let (ctx, mut api) = context(Arc::new(MockAdmin::default()));
    let home = deleted_pool();
    let echo = serde_json::to_value(&home).unwrap();
    let gateways = vec![serde_json::to_value(gateway("s3", "defaultPlan: photos")).unwrap()];
    let scenario = tokio::spawn(async move {
        expect(&mut api, Method::GET, &format!("{SUBLET}/storagegateways"))
            .await
            .ok(&list("StorageGateway", gateways));
        let patch = expect(
            &mut api,
            Method::PATCH,
            &format!("{SUBLET}/providerpools/home-lab"),
        )
        .await;
        assert_eq!(
            patch.body,
            json!({"metadata": {"finalizers": ["example.com/other"], "resourceVersion": "42"}})
        );
        patch.ok(&echo);
    });
    let action = super::pool::reconcile(Arc::new(home), ctx).await.unwrap();
    assert_eq!(action, kube::runtime::controller::Action::await_change());
    scenario.await.unwrap();
}

/// Reconciles pool `friends` of `spec` (its finalizer already there) and answers the status
/// written.
async fn reconcile_endpoint_pool(spec: &str) -> Value {
    let (ctx, mut api) = context(Arc::new(MockAdmin::default()));
    let mut friends = pool("friends", spec);
    friends.metadata.finalizers = Some(vec!["sublet.dev/drain".into()]);
    let echo = serde_json::to_value(&friends).unwrap();
    let scenario = tokio::spawn(async move {
        let status = expect(
            &mut api,
            Method::PATCH,
            &format!("{SUBLET}/providerpools/friends/status"),
        )
        .await;
        let body = status.body.clone();
        status.ok(&echo);
        body
    });
    let body = run(
        Box::pin(super::pool::reconcile(Arc::new(friends), ctx)),
        scenario,
    )
    .await;
    body["status"].clone()
}

#[tokio::test]
async fn a_unix_socket_endpoint_is_not_probed_and_the_pool_says_so() {
    let status = reconcile_endpoint_pool(
        "class: owned\nendpoints: [{name: nas, address: \"nas.example:7480\", nodeId: abc}, {name: disk1, address: \"unix:/run/sublet/disk1.sock\", nodeId: def}]",
    )
    .await;
    let disk = &status["members"][0];
    assert_eq!(disk["name"], "disk1");
    assert_eq!(disk["address"], "unix:/run/sublet/disk1.sock");
    assert_eq!(disk["ready"], true, "counted ready: placement may use it");
    assert!(
        disk.get("lastSeen").is_none(),
        "the operator never saw it: {disk}"
    );
    assert_eq!(status["members"][1]["lastSeen"], "2026-11-28T02:00:00Z");
    assert_eq!(status["readyMembers"], "2/2");
    let ready = &status["conditions"][0];
    assert_eq!(
        (&ready["type"], &ready["status"]),
        (&json!("Ready"), &json!("True"))
    );
    assert_eq!(
        ready["message"],
        "2 of 2 providers ready (1 on a Unix socket, not probed)"
    );
    let probed = &status["conditions"][1];
    assert_eq!(
        (&probed["type"], &probed["status"], &probed["reason"]),
        (&json!("Probed"), &json!("False"), &json!("UnixSockets"))
    );
    assert!(
        probed["message"].as_str().unwrap().starts_with(
            "not probed by the operator: disk1 (a unix: endpoint is a socket on the gateway's node"
        ),
        "{probed}"
    );

    // Endpoints all over TCP: every one probed, and no `Probed` condition.
    let status = reconcile_endpoint_pool(
        "class: owned\nendpoints: [{name: nas, address: \"nas.example:7480\"}]",
    )
    .await;
    assert_eq!(
        status["conditions"].as_array().unwrap().len(),
        1,
        "{status}"
    );
    assert_eq!(status["conditions"][0]["message"], "1 of 1 providers ready");
}

/// Reconciles pool `friends`, marked `drain: true`, with one gateway answering `admin`;
/// expects an Event when `event` names its reason, and answers the status written. The pool
/// must be looked at again after `again`.
async fn reconcile_draining_pool(
    admin: MockAdmin,
    event: Option<&'static str>,
    again: std::time::Duration,
) -> Value {
    let (ctx, mut api) = context(Arc::new(admin));
    let mut friends = pool(
        "friends",
        "class: owned\ndrain: true\nendpoints: [{name: nas, address: \"nas:7480\", nodeId: abc}]",
    );
    friends.metadata.finalizers = Some(vec!["sublet.dev/drain".into()]);
    let echo = serde_json::to_value(&friends).unwrap();
    let gateways = vec![serde_json::to_value(gateway("s3", "defaultPlan: photos")).unwrap()];
    let scenario = tokio::spawn(async move {
        expect(&mut api, Method::GET, &format!("{SUBLET}/storagegateways"))
            .await
            .ok(&list("StorageGateway", gateways));
        if let Some(reason) = event {
            let seen = expect(
                &mut api,
                Method::POST,
                "/apis/events.k8s.io/v1/namespaces/storage/events",
            )
            .await;
            assert_eq!(seen.body["reason"], reason);
            assert_eq!(seen.body["type"], "Warning");
            seen.echo();
        }
        let status = expect(
            &mut api,
            Method::PATCH,
            &format!("{SUBLET}/providerpools/friends/status"),
        )
        .await;
        let body = status.body.clone();
        status.ok(&echo);
        body
    });
    let body = run_then(
        again,
        Box::pin(super::pool::reconcile(Arc::new(friends), ctx)),
        scenario,
    )
    .await;
    body["status"].clone()
}

#[tokio::test]
async fn a_draining_pool_shows_what_is_left_and_when_it_is_drained() {
    let status = reconcile_draining_pool(
        MockAdmin {
            pool_shards: 120,
            drain: Some(PoolDrain {
                state: "draining".into(),
                ..PoolDrain::default()
            }),
            ..MockAdmin::default()
        },
        None,
        super::pool::DRAIN_POLL,
    )
    .await;
    assert_eq!(
        status["drain"],
        json!({"state": "Draining", "shardsLeft": 120, "bytesLeft": 120u64 << 20})
    );
    let draining = &status["conditions"][1];
    assert_eq!(draining["type"], "Draining");
    assert_eq!(draining["status"], "True");
    assert_eq!(draining["reason"], "Draining");
    assert_eq!(draining["observedGeneration"], 1);
    assert_eq!(
        draining["message"],
        "StorageGateway s3 stores 120 shards (120Mi) here; the gateways move the shards to the pools the plans allow"
    );
    // Ready still says how the providers are: a draining pool keeps serving reads.
    assert_eq!(status["conditions"][0]["type"], "Ready");
    assert_eq!(status["conditions"][0]["status"], "True");

    let status = reconcile_draining_pool(
        MockAdmin {
            drain: Some(PoolDrain {
                state: "drained".into(),
                ..PoolDrain::default()
            }),
            ..MockAdmin::default()
        },
        None,
        super::RESYNC,
    )
    .await;
    assert_eq!(
        status["drain"],
        json!({"state": "Drained", "shardsLeft": 0, "bytesLeft": 0})
    );
    assert_eq!(status["conditions"][1]["status"], "False");
    assert_eq!(status["conditions"][1]["reason"], "Drained");
}

#[tokio::test]
async fn a_drain_no_plan_can_take_is_blocked_naming_the_plan() {
    let why = "plan photos places 6 shards per stripe, but the 5 providers of the pools it allows outside draining pools can hold 5 (at most 1 per node); add providers to another pool the plan allows, or lower its redundancy";
    let status = reconcile_draining_pool(
        MockAdmin {
            pool_shards: 12,
            drain: Some(PoolDrain {
                state: "blocked".into(),
                blocked: vec![why.into()],
                plans: [("photos".to_owned(), 12)].into(),
            }),
            ..MockAdmin::default()
        },
        Some("DrainBlocked"),
        super::RESYNC,
    )
    .await;
    assert_eq!(status["drain"]["state"], "Blocked");
    let blocked = &status["conditions"][1];
    assert_eq!(
        (&blocked["type"], &blocked["status"], &blocked["reason"]),
        (&json!("Draining"), &json!("False"), &json!("Blocked"))
    );
    assert_eq!(
        blocked["message"],
        format!("12 shards cannot move: StorageGateway s3: {why}")
    );
}

#[tokio::test]
async fn lease_is_created_when_missing_and_left_to_a_live_holder() {
    let (ctx, mut api) = context(Arc::new(MockAdmin::default()));
    let lock = crate::leader::LeaseLock::new(
        ctx.client.clone(),
        NS,
        "sublet-operator",
        "me",
        std::time::Duration::from_secs(15),
    );
    const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/storage/leases";
    let scenario =
        tokio::spawn(async move {
            expect(&mut api, Method::GET, &format!("{LEASES}/sublet-operator"))
                .await
                .not_found();
            let create = expect(&mut api, Method::POST, LEASES).await;
            assert_eq!(create.body["spec"]["holderIdentity"], "me");
            assert_eq!(create.body["spec"]["leaseDurationSeconds"], 15);
            create.echo();
            // Another replica renewed a moment ago: nothing is written.
            let now = jiff::Timestamp::now()
                .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
                .to_string();
            expect(&mut api, Method::GET, &format!("{LEASES}/sublet-operator")).await.ok(&json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "sublet-operator", "namespace": NS, "resourceVersion": "7"},
            "spec": {"holderIdentity": "other", "leaseDurationSeconds": 15, "renewTime": now}
        }));
        });
    assert!(lock.try_acquire().await.unwrap());
    assert!(!lock.try_acquire().await.unwrap());
    scenario.await.unwrap();
}

/// Reconciles gateway `s3` once over `plans` with every Secret already there; returns the
/// config applied and the hash on the pod template.
async fn reconcile_gateway_with(plans: Vec<Value>) -> (String, Value) {
    let (yaml, hash, _) = reconcile_gateway_with_pods(plans, vec![]).await;
    (yaml, hash)
}

/// A gateway reconciled with `plans` in its namespace, its StatefulSet not ready yet and
/// `pods` as its pods: the config, its hash and the status written.
async fn reconcile_gateway_with_pods(
    plans: Vec<Value>,
    pods: Vec<Value>,
) -> (String, Value, Value) {
    let pools = vec![serde_json::to_value(friends_pool()).unwrap()];
    let (yaml, hash, status, _) = reconcile_gateway_in(pools, plans, pods).await;
    (yaml, hash, status)
}

/// A gateway reconciled with `pools` and `plans` in its namespace, its StatefulSet not
/// ready yet and `pods` as its pods: the config, its hash, the status written and the pod
/// spec of the StatefulSet.
async fn reconcile_gateway_in(
    pools: Vec<Value>,
    plans: Vec<Value>,
    pods: Vec<Value>,
) -> (String, Value, Value, Value) {
    let (ctx, mut api) = context(Arc::new(MockAdmin::default()));
    let gw = gateway("s3", "defaultPlan: photos");
    let echo_gw = serde_json::to_value(&gw).unwrap();
    let scenario = tokio::spawn(async move {
        for _ in 0..4 {
            expect(&mut api, Method::POST, &format!("{CORE}/secrets"))
                .await
                .already_exists();
        }
        expect(&mut api, Method::GET, &format!("{SUBLET}/providerpools"))
            .await
            .ok(&list("ProviderPool", pools));
        expect(&mut api, Method::GET, &format!("{SUBLET}/storageplans"))
            .await
            .ok(&list("StoragePlan", plans));
        expect(&mut api, Method::GET, &format!("{SUBLET}/storageschedules"))
            .await
            .ok(&list("StorageSchedule", vec![]));
        let cm = next(&mut api).await;
        cm.assert_apply(&format!("{CORE}/configmaps/s3-config"));
        let yaml = cm.body["data"]["sublet.yaml"].as_str().unwrap().to_owned();
        cm.echo();
        next(&mut api).await.echo();
        next(&mut api).await.echo();
        let sts = next(&mut api).await;
        sts.assert_apply("/apis/apps/v1/namespaces/storage/statefulsets/s3");
        let hash =
            sts.body["spec"]["template"]["metadata"]["annotations"]["sublet.dev/config-hash"]
                .clone();
        let pod = sts.body["spec"]["template"]["spec"].clone();
        sts.echo();
        // Not ready: its pods say why.
        let listed = expect(&mut api, Method::GET, &format!("{CORE}/pods")).await;
        assert!(
            listed.query.contains("app.kubernetes.io/instance=s3"),
            "{}",
            listed.query
        );
        listed.ok(&list("Pod", pods));
        let status = expect(
            &mut api,
            Method::PATCH,
            &format!("{SUBLET}/storagegateways/s3/status"),
        )
        .await;
        let body = status.body.clone();
        status.ok(&echo_gw);
        (yaml, hash, body, pod)
    });
    run(
        Box::pin(super::gateway::reconcile(Arc::new(gw), ctx)),
        scenario,
    )
    .await
}

/// Issue 28: a PostgreSQL secretRef naming a missing Secret was never reported.
#[tokio::test]
async fn gateway_names_why_its_pods_do_not_start() {
    let photos = serde_json::to_value(plan(
        "photos",
        "redundancy: {erasure: {dataShards: 2, parityShards: 1}}\nplacement: {pools: [{name: friends}]}",
    ))
    .unwrap();
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "s3-0", "namespace": NS},
        "spec": {"containers": [{"name": "gateway"}]},
        "status": {"containerStatuses": [{
            "name": "gateway", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "CreateContainerConfigError", "message": "secret \"db\" not found"}}
        }]},
    });
    let (_, _, body) = reconcile_gateway_with_pods(vec![photos], vec![pod]).await;
    let ready = &body["status"]["conditions"][0];
    assert_eq!(ready["type"], "Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(
        ready["message"],
        "0 of 1 replicas ready; s3-0: CreateContainerConfigError: secret \"db\" not found"
    );
}

#[tokio::test]
async fn changed_plan_rerenders_the_config_and_rolls_the_gateway() {
    let photos = |segment: &str| {
        serde_json::to_value(plan(
            "photos",
            &format!("redundancy: {{erasure: {{dataShards: 2, parityShards: 1}}}}\nsegmentSize: {segment}\nplacement: {{pools: [{{name: friends}}]}}"),
        ))
        .unwrap()
    };
    let (before, hash_before) = reconcile_gateway_with(vec![photos("16Mi")]).await;
    let (again, hash_again) = reconcile_gateway_with(vec![photos("16Mi")]).await;
    let (after, hash_after) = reconcile_gateway_with(vec![photos("4Mi")]).await;
    assert_eq!(
        (&before, &hash_before),
        (&again, &hash_again),
        "same resources, same config"
    );
    assert_ne!(hash_before, hash_after, "the pods roll");
    let plan = |yaml: &str| {
        sublet_crds::load_str("sublet.yaml", yaml).unwrap().plans["photos"]
            .spec
            .segment_size
            .to_string()
    };
    assert_eq!(
        (plan(&before), plan(&after)),
        ("16Mi".to_owned(), "4Mi".to_owned())
    );
}

#[tokio::test]
async fn schedule_reports_queued_and_running_repairs_of_its_plans() {
    let admin = Arc::new(MockAdmin {
        health: PlanHealth {
            repair: RepairQueue {
                due: 7,
                at_risk: 0,
                waiting: 5,
            },
            ..PlanHealth::default()
        },
        ..MockAdmin::default()
    });
    let (ctx, mut api) = context(admin.clone());
    let nightly = schedule("nightly", "rebuild: {maxConcurrentJobs: 2}");
    let echo = serde_json::to_value(&nightly).unwrap();
    let schedules = vec![echo.clone()];
    let plans = vec![
        serde_json::to_value(plan(
            "photos",
            "redundancy: {replicas: 1}\nschedule: nightly",
        ))
        .unwrap(),
        // Another schedule's plan is not counted.
        serde_json::to_value(plan("other", "redundancy: {replicas: 1}")).unwrap(),
    ];
    let pools = vec![serde_json::to_value(friends_pool()).unwrap()];
    let gateways = vec![serde_json::to_value(gateway("s3", "defaultPlan: photos")).unwrap()];
    let scenario = tokio::spawn(async move {
        expect(&mut api, Method::GET, &format!("{SUBLET}/providerpools"))
            .await
            .ok(&list("ProviderPool", pools));
        expect(&mut api, Method::GET, &format!("{SUBLET}/storageplans"))
            .await
            .ok(&list("StoragePlan", plans));
        expect(&mut api, Method::GET, &format!("{SUBLET}/storageschedules"))
            .await
            .ok(&list("StorageSchedule", schedules));
        let jobs = expect(
            &mut api,
            Method::GET,
            "/apis/batch/v1/namespaces/storage/jobs",
        )
        .await;
        assert!(
            jobs.query
                .contains("labelSelector=sublet.dev/schedule=nightly"),
            "{}",
            jobs.query
        );
        jobs.ok(&list(
            "Job",
            vec![
                json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "a"}, "status": {"active": 1}}),
                json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "b"}, "status": {"succeeded": 1}}),
            ],
        ));
        expect(&mut api, Method::GET, &format!("{SUBLET}/storagegateways"))
            .await
            .ok(&list("StorageGateway", gateways));
        let status = expect(
            &mut api,
            Method::PATCH,
            &format!("{SUBLET}/storageschedules/nightly/status"),
        )
        .await;
        let body = status.body.clone();
        status.ok(&echo);
        body
    });
    let body = run(
        Box::pin(super::schedule::reconcile(Arc::new(nightly), ctx)),
        scenario,
    )
    .await;
    assert_eq!(body["status"]["runningRepairs"], 1);
    assert_eq!(body["status"]["queuedRepairs"], 12);
    assert_eq!(body["status"]["conditions"][0]["status"], "True");
    assert_eq!(
        *admin.asked.lock().unwrap(),
        [(
            "http://s3-admin.storage.svc:9001".to_owned(),
            "photos".to_owned()
        )]
    );
}

#[tokio::test]
async fn finished_repair_jobs_are_reported_once() {
    // Nothing is due any more: the finished Jobs are reported and no new one starts.
    let (ctx, mut api) = context(Arc::new(MockAdmin::default()));
    let photos = plan(
        "photos",
        "redundancy: {erasure: {dataShards: 2, parityShards: 1}}\nplacement: {pools: [{name: friends}]}\nschedule: nightly",
    );
    let echo = serde_json::to_value(&photos).unwrap();
    let plans = vec![echo.clone()];
    let schedules = vec![serde_json::to_value(schedule("nightly", "{}")).unwrap()];
    let pools = vec![serde_json::to_value(friends_pool()).unwrap()];
    let gateways = vec![serde_json::to_value(gateway("s3", "defaultPlan: photos")).unwrap()];
    let job = |name: &str, condition: &str, reported: bool| {
        let mut job = json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": NS,
                "labels": {"sublet.dev/plan": "photos", "sublet.dev/schedule": "nightly"}},
            "status": {"conditions": [{"type": condition, "status": "True"}]}});
        if reported {
            job["metadata"]["annotations"] = json!({"sublet.dev/reported": "succeeded"});
        }
        job
    };
    let jobs = vec![
        job("photos-repair-done", "Complete", false),
        job("photos-repair-old", "Complete", true),
        job("photos-repair-bad", "Failed", false),
    ];
    let scenario = tokio::spawn(async move {
        expect(&mut api, Method::GET, &format!("{SUBLET}/providerpools"))
            .await
            .ok(&list("ProviderPool", pools));
        expect(&mut api, Method::GET, &format!("{SUBLET}/storageplans"))
            .await
            .ok(&list("StoragePlan", plans));
        expect(&mut api, Method::GET, &format!("{SUBLET}/storageschedules"))
            .await
            .ok(&list("StorageSchedule", schedules));
        expect(&mut api, Method::GET, &format!("{SUBLET}/storagegateways"))
            .await
            .ok(&list("StorageGateway", gateways));
        expect(
            &mut api,
            Method::GET,
            "/apis/batch/v1/namespaces/storage/jobs",
        )
        .await
        .ok(&list("Job", jobs));
        let mut reported = Vec::new();
        for (name, reason, outcome) in [
            ("photos-repair-done", "RepairSucceeded", "succeeded"),
            ("photos-repair-bad", "RepairFailed", "failed"),
        ] {
            let event = expect(
                &mut api,
                Method::POST,
                "/apis/events.k8s.io/v1/namespaces/storage/events",
            )
            .await;
            assert_eq!(event.body["reason"], reason);
            assert_eq!(event.body["regarding"]["name"], "photos");
            event.echo();
            let patch = expect(
                &mut api,
                Method::PATCH,
                &format!("/apis/batch/v1/namespaces/storage/jobs/{name}"),
            )
            .await;
            assert_eq!(
                patch.body,
                json!({"metadata": {"annotations": {"sublet.dev/reported": outcome}}})
            );
            patch.ok(&json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}}));
            reported.push(name);
        }
        let status = expect(
            &mut api,
            Method::PATCH,
            &format!("{SUBLET}/storageplans/photos/status"),
        )
        .await;
        let body = status.body.clone();
        status.ok(&echo);
        (body, reported)
    });
    let (body, reported) = run(
        Box::pin(super::plan::reconcile(Arc::new(photos), ctx)),
        scenario,
    )
    .await;
    assert_eq!(reported, ["photos-repair-done", "photos-repair-bad"]);
    let status: sublet_crds::StoragePlanStatus =
        serde_json::from_value(body["status"].clone()).unwrap();
    let last = sublet_crds::find_condition(&status.conditions, "LastRepairSucceeded").unwrap();
    assert_eq!(last.status, sublet_crds::ConditionStatus::False);
    assert_eq!(last.message, "Job photos-repair-bad");
    let repairing = sublet_crds::find_condition(&status.conditions, "Repairing").unwrap();
    assert_eq!(
        (repairing.status, repairing.reason.as_str()),
        (sublet_crds::ConditionStatus::False, "Idle")
    );
}

#[tokio::test]
async fn claim_pool_gets_a_stateful_set_sized_by_the_matching_nodes() {
    let (ctx, mut api) = context(Arc::new(MockAdmin::default()));
    let mut rented = pool(
        "rented",
        "class: rented\nnodes: {selector: {matchLabels: {sublet.dev/pool: rented}}, storage: {volumeClaimTemplate: {storageClassName: fast, size: 200Gi}}}",
    );
    rented.metadata.finalizers = Some(vec!["sublet.dev/drain".into()]);
    let echo = serde_json::to_value(&rented).unwrap();
    let node = |name: &str| json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}});
    let scenario = tokio::spawn(async move {
        // The finalizer is there already: no metadata patch.
        expect(&mut api, Method::POST, &format!("{CORE}/secrets"))
            .await
            .already_exists();
        let nodes = expect(&mut api, Method::GET, "/api/v1/nodes").await;
        assert!(
            nodes.query.contains("labelSelector=sublet.dev/pool=rented"),
            "{}",
            nodes.query
        );
        nodes.ok(&list("Node", vec![node("r1"), node("r2"), node("r3")]));
        next(&mut api).await.echo(); // the headless Service
        let sts = next(&mut api).await;
        sts.assert_apply("/apis/apps/v1/namespaces/storage/statefulsets/rented-provider");
        assert_eq!(sts.body["spec"]["replicas"], 3);
        assert_eq!(
            sts.body["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"],
            "fast"
        );
        sts.echo();
        expect(&mut api, Method::GET, &format!("{CORE}/pods"))
            .await
            .ok(&list("Pod", vec![]));
        let status = expect(
            &mut api,
            Method::PATCH,
            &format!("{SUBLET}/providerpools/rented/status"),
        )
        .await;
        let body = status.body.clone();
        status.ok(&echo);
        body
    });
    let body = run(
        Box::pin(super::pool::reconcile(Arc::new(rented), ctx)),
        scenario,
    )
    .await;
    let ready = &body["status"]["conditions"][0];
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "NoProviders");
    assert_eq!(body["status"]["readyMembers"], "0/0");
}

// BucketClaims.

const CLAIMS: &str = "/apis/sublet.dev/v1alpha1/namespaces/storage/bucketclaims";

/// Runs one claim reconcile beside its scenario and returns the action it ended with.
async fn run_claim<T: Send + 'static>(
    reconcile: impl Future<Output = Result<kube::runtime::controller::Action>>,
    scenario: JoinHandle<T>,
) -> (kube::runtime::controller::Action, T) {
    let action = tokio::time::timeout(std::time::Duration::from_secs(10), reconcile)
        .await
        .expect("reconcile timed out")
        .unwrap();
    (action, scenario.await.unwrap())
}

fn admin_token_secret() -> Value {
    let secret = k8s_openapi::api::core::v1::Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("s3-admin".into()),
            namespace: Some(NS.into()),
            ..Default::default()
        },
        data: Some(std::collections::BTreeMap::from([(
            "token".into(),
            k8s_openapi::ByteString(b"admin-token-of-s3".to_vec()),
        )])),
        ..Default::default()
    };
    serde_json::to_value(secret).unwrap()
}

/// What the API server holds of a Secret created with `created` (a create's body):
/// `stringData` is stored as `data`.
fn stored_secret(created: &Value) -> Value {
    let mut secret: k8s_openapi::api::core::v1::Secret =
        serde_json::from_value(created.clone()).unwrap();
    let data = secret
        .string_data
        .take()
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, k8s_openapi::ByteString(v.into_bytes())))
        .collect();
    secret.data = Some(data);
    serde_json::to_value(secret).unwrap()
}

/// The gateway and its admin token are read first, every pass.
async fn gateway_and_token(api: &mut Handle) {
    let gw = gateway("s3", "defaultPlan: photos\nservice: {port: 9000}");
    expect(api, Method::GET, &format!("{SUBLET}/storagegateways/s3"))
        .await
        .ok(&serde_json::to_value(&gw).unwrap());
    expect(api, Method::GET, &format!("{CORE}/secrets/s3-admin"))
        .await
        .ok(&admin_token_secret());
}

#[tokio::test]
async fn claim_gets_bucket_user_key_and_secret_and_a_second_pass_changes_nothing() {
    let admin = Arc::new(MockAdmin::default());
    let (ctx, mut api) = context(admin.clone());
    let claim = bucket_claim(
        "app",
        "gateway: s3\ngenerateBucketName: app-data\nplan: photos\ndeletionPolicy: Delete\n\
         quota: {maxBytes: 1Gi}",
    );
    let echo = serde_json::to_value(&claim).unwrap();
    let scenario = tokio::spawn(async move {
        gateway_and_token(&mut api).await;
        let fin = expect(&mut api, Method::PATCH, &format!("{CLAIMS}/app")).await;
        assert_eq!(
            fin.body,
            json!({"metadata": {"finalizers": ["sublet.dev/bucket-claim"]}})
        );
        fin.ok(&echo);
        expect(&mut api, Method::GET, &format!("{CORE}/secrets/app"))
            .await
            .not_found();
        let secret = expect(&mut api, Method::POST, &format!("{CORE}/secrets")).await;
        let created = secret.body.clone();
        secret.echo();
        let status = expect(&mut api, Method::PATCH, &format!("{CLAIMS}/app/status")).await;
        let status_body = status.body.clone();
        status.ok(&echo);
        (api, created, status_body)
    });
    let (action, (mut api, secret, status)) = run_claim(
        Box::pin(super::bucketclaim::reconcile(
            Arc::new(claim.clone()),
            ctx.clone(),
        )),
        scenario,
    )
    .await;
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(super::RESYNC)
    );

    // The Secret: owned by the claim, every name apps read, the key the gateway holds.
    assert_eq!(
        secret["metadata"]["ownerReferences"][0]["kind"],
        "BucketClaim"
    );
    assert_eq!(secret["metadata"]["ownerReferences"][0]["name"], "app");
    let data = &secret["stringData"];
    let access = data["AWS_ACCESS_KEY_ID"].as_str().unwrap().to_owned();
    let secret_key = data["AWS_SECRET_ACCESS_KEY"].as_str().unwrap().to_owned();
    assert_eq!(access, "BC0F1E2D3C4B5A46789ABCDEF012345678");
    assert_eq!(secret_key.len(), 40);
    assert_eq!(data["BUCKET_NAME"], "app-data-0f1e2d3c");
    assert_eq!(data["BUCKET_HOST"], "s3.storage.svc");
    assert_eq!(data["BUCKET_PORT"], "9000");
    assert_eq!(data["AWS_ENDPOINT_URL"], "http://s3.storage.svc:9000");
    assert_eq!(data["AWS_REGION"], "us-east-1");
    assert_eq!(data["BUCKET_REGION"], "us-east-1");
    {
        let a = admin.accounts.lock().unwrap();
        let user = "bc-0f1e2d3c-4b5a-4678-9abc-def012345678";
        assert_eq!(a.users[user].max_bytes, Some(1 << 30));
        assert_eq!(a.users[user].display_name, "BucketClaim storage/app");
        assert_eq!(
            a.buckets["app-data-0f1e2d3c"],
            (user.to_owned(), 0, Some("photos".to_owned()))
        );
        assert_eq!(
            a.keys[&access],
            (
                user.to_owned(),
                secret_key.clone(),
                "app-data-0f1e2d3c".to_owned()
            )
        );
        assert!(a.tokens.iter().all(|t| t == "admin-token-of-s3"));
    }
    assert_eq!(status["status"]["phase"], "Bound");
    assert_eq!(status["status"]["bucketName"], "app-data-0f1e2d3c");
    assert_eq!(status["status"]["secretName"], "app");
    assert_eq!(status["status"]["accessKeyId"], access.as_str());
    let bound = &status["status"]["conditions"][0];
    assert_eq!(
        (&bound["type"], &bound["status"]),
        (&json!("Bound"), &json!("True"))
    );
    assert_eq!(bound["observedGeneration"], 1);

    // Second pass, finalizer and Secret in place: the key stays the one in the Secret.
    let mut bound_claim = claim.clone();
    bound_claim.metadata.finalizers = Some(vec!["sublet.dev/bucket-claim".into()]);
    bound_claim.status = serde_json::from_value(status["status"].clone()).unwrap();
    let echo = serde_json::to_value(&bound_claim).unwrap();
    let stored = stored_secret(&secret);
    let scenario = tokio::spawn(async move {
        gateway_and_token(&mut api).await;
        expect(&mut api, Method::GET, &format!("{CORE}/secrets/app"))
            .await
            .ok(&stored);
        let status = expect(&mut api, Method::PATCH, &format!("{CLAIMS}/app/status")).await;
        let body = status.body.clone();
        status.ok(&echo);
        body
    });
    let (action, again) = run_claim(
        Box::pin(super::bucketclaim::reconcile(Arc::new(bound_claim), ctx)),
        scenario,
    )
    .await;
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(super::RESYNC)
    );
    assert_eq!(again, status, "the second pass writes the same status");
    let a = admin.accounts.lock().unwrap();
    assert_eq!(a.keys.len(), 1);
    assert_eq!(a.keys_deleted, 0, "no key was re-rolled");
    assert_eq!(a.keys[&access].1, secret_key);
}

/// One pass over a claim whose finalizer and Secret are in place; the status it wrote.
async fn pass_over_bound_claim(
    ctx: Arc<Context>,
    api: Handle,
    claim: sublet_crds::BucketClaim,
    secret: Value,
) -> (Handle, Value) {
    let echo = serde_json::to_value(&claim).unwrap();
    let mut api = api;
    let scenario = tokio::spawn(async move {
        gateway_and_token(&mut api).await;
        expect(&mut api, Method::GET, &format!("{CORE}/secrets/app"))
            .await
            .ok(&secret);
        let status = expect(&mut api, Method::PATCH, &format!("{CLAIMS}/app/status")).await;
        let body = status.body.clone();
        status.ok(&echo);
        (api, body)
    });
    let (action, seen) = run_claim(
        Box::pin(super::bucketclaim::reconcile(Arc::new(claim), ctx)),
        scenario,
    )
    .await;
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(super::RESYNC)
    );
    seen
}

#[tokio::test]
async fn a_claims_quota_follows_its_spec_when_lowered_raised_or_removed() {
    let admin = Arc::new(MockAdmin::default());
    let (ctx, api) = context(admin.clone());
    let spec = |quota: &str| format!("gateway: s3\nbucketName: app-data\n{quota}");
    let mut claim = bucket_claim("app", &spec("quota: {maxBytes: 1Gi, maxObjects: 100}"));
    claim.metadata.finalizers = Some(vec!["sublet.dev/bucket-claim".into()]);
    let user = super::bucketclaim::user_id(&claim).unwrap();
    let access = super::bucketclaim::access_key_id(&claim).unwrap();
    let gw = gateway("s3", "defaultPlan: photos\nservice: {port: 9000}");
    let secret = stored_secret(
        &serde_json::to_value(
            super::bucketclaim::claim_secret(
                &claim,
                &gw,
                "app-data",
                &access,
                "s".repeat(40).as_str(),
            )
            .unwrap(),
        )
        .unwrap(),
    );
    admin.accounts.lock().unwrap().keys.insert(
        access.clone(),
        (user.clone(), "s".repeat(40), "app-data".into()),
    );
    let quota = |admin: &MockAdmin| {
        let a = admin.accounts.lock().unwrap();
        (a.users[&user].max_bytes, a.users[&user].max_objects)
    };
    let (api, _) = pass_over_bound_claim(ctx.clone(), api, claim.clone(), secret.clone()).await;
    assert_eq!(quota(&admin), (Some(1 << 30), Some(100)));

    // Lowered, then raised: the gateway user's quota follows.
    claim.spec = bucket_claim("app", &spec("quota: {maxBytes: 10Mi}")).spec;
    let (api, _) = pass_over_bound_claim(ctx.clone(), api, claim.clone(), secret.clone()).await;
    assert_eq!(quota(&admin), (Some(10 << 20), None));
    claim.spec = bucket_claim("app", &spec("quota: {maxBytes: 5Gi, maxObjects: 7}")).spec;
    let (api, _) = pass_over_bound_claim(ctx.clone(), api, claim.clone(), secret.clone()).await;
    assert_eq!(quota(&admin), (Some(5 << 30), Some(7)));

    // Removed: lifted (the call says `null`, not nothing, so the gateway drops the limit).
    claim.spec = bucket_claim("app", &spec("")).spec;
    let (_, status) = pass_over_bound_claim(ctx, api, claim, secret).await;
    assert_eq!(quota(&admin), (None, None));
    assert_eq!(status["status"]["phase"], "Bound");
    assert_eq!(admin.accounts.lock().unwrap().keys_deleted, 0);
}

#[tokio::test]
async fn a_claim_whose_secret_names_an_old_port_says_so_and_leaves_the_secret_alone() {
    let admin = Arc::new(MockAdmin::default());
    let (ctx, mut api) = context(admin.clone());
    let mut claim = bucket_claim("app", "gateway: s3\nbucketName: app-data");
    claim.metadata.finalizers = Some(vec!["sublet.dev/bucket-claim".into()]);
    let access = super::bucketclaim::access_key_id(&claim).unwrap();
    let user = super::bucketclaim::user_id(&claim).unwrap();
    admin
        .accounts
        .lock()
        .unwrap()
        .keys
        .insert(access.clone(), (user, "s".repeat(40), "app-data".into()));
    // Written while the Service listened on 8000; the gateway says 9000 now.
    let old = gateway("s3", "defaultPlan: photos\nservice: {port: 8000}");
    let secret = stored_secret(
        &serde_json::to_value(
            super::bucketclaim::claim_secret(&claim, &old, "app-data", &access, &"s".repeat(40))
                .unwrap(),
        )
        .unwrap(),
    );
    let echo = serde_json::to_value(&claim).unwrap();
    let scenario = tokio::spawn(async move {
        gateway_and_token(&mut api).await;
        expect(&mut api, Method::GET, &format!("{CORE}/secrets/app"))
            .await
            .ok(&secret);
        // No write to the Secret: the status, then the Event.
        let status = expect(&mut api, Method::PATCH, &format!("{CLAIMS}/app/status")).await;
        let body = status.body.clone();
        status.ok(&echo);
        let event = expect(
            &mut api,
            Method::POST,
            "/apis/events.k8s.io/v1/namespaces/storage/events",
        )
        .await;
        assert_eq!(event.body["reason"], "EndpointChanged");
        assert_eq!(event.body["type"], "Warning");
        event.echo();
        body
    });
    let (_, status) = run_claim(
        Box::pin(super::bucketclaim::reconcile(Arc::new(claim), ctx)),
        scenario,
    )
    .await;
    assert_eq!(status["status"]["phase"], "Bound");
    let bound = &status["status"]["conditions"][0];
    assert_eq!(bound["status"], "True");
    assert_eq!(bound["reason"], "EndpointChanged");
    let message = bound["message"].as_str().unwrap();
    assert!(
        message.contains("http://s3.storage.svc:8000")
            && message.contains("http://s3.storage.svc:9000")
            && message.contains("delete it"),
        "{message}"
    );
}

#[tokio::test]
async fn a_claim_whose_secret_is_gone_gets_a_new_key_and_the_old_secret_stops_working() {
    let admin = Arc::new(MockAdmin::default());
    let mut claim = bucket_claim("app", "gateway: s3\nbucketName: app-data");
    claim.metadata.finalizers = Some(vec!["sublet.dev/bucket-claim".into()]);
    let access = super::bucketclaim::access_key_id(&claim).unwrap();
    let user = super::bucketclaim::user_id(&claim).unwrap();
    {
        let mut a = admin.accounts.lock().unwrap();
        a.keys.insert(
            access.clone(),
            (user.clone(), "the-old-secret".into(), "app-data".into()),
        );
    }
    let (ctx, mut api) = context(admin.clone());
    let echo = serde_json::to_value(&claim).unwrap();
    let scenario = tokio::spawn(async move {
        gateway_and_token(&mut api).await;
        expect(&mut api, Method::GET, &format!("{CORE}/secrets/app"))
            .await
            .not_found();
        let secret = expect(&mut api, Method::POST, &format!("{CORE}/secrets")).await;
        let created = secret.body.clone();
        secret.echo();
        expect(&mut api, Method::PATCH, &format!("{CLAIMS}/app/status"))
            .await
            .ok(&echo);
        created
    });
    let (_, secret) = run_claim(
        Box::pin(super::bucketclaim::reconcile(Arc::new(claim), ctx)),
        scenario,
    )
    .await;
    let new_secret = secret["stringData"]["AWS_SECRET_ACCESS_KEY"]
        .as_str()
        .unwrap();
    let a = admin.accounts.lock().unwrap();
    assert_eq!(a.keys_deleted, 1);
    assert_eq!(a.keys[&access].1, new_secret);
    assert_ne!(new_secret, "the-old-secret");
}

#[tokio::test]
async fn a_claim_for_another_users_bucket_waits_and_never_takes_it() {
    let admin = Arc::new(MockAdmin::default());
    admin
        .accounts
        .lock()
        .unwrap()
        .buckets
        .insert("photos".into(), ("alice".into(), 12, None));
    let (ctx, mut api) = context(admin.clone());
    let mut claim = bucket_claim("grab", "gateway: s3\nbucketName: photos");
    claim.metadata.finalizers = Some(vec!["sublet.dev/bucket-claim".into()]);
    let echo = serde_json::to_value(&claim).unwrap();
    let scenario = tokio::spawn(async move {
        gateway_and_token(&mut api).await;
        let status = expect(&mut api, Method::PATCH, &format!("{CLAIMS}/grab/status")).await;
        let body = status.body.clone();
        status.ok(&echo);
        let event = expect(
            &mut api,
            Method::POST,
            "/apis/events.k8s.io/v1/namespaces/storage/events",
        )
        .await;
        assert_eq!(event.body["reason"], "BucketTaken");
        assert_eq!(event.body["type"], "Warning");
        event.echo();
        body
    });
    let (action, status) = run_claim(
        Box::pin(super::bucketclaim::reconcile(Arc::new(claim), ctx)),
        scenario,
    )
    .await;
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(super::RESYNC)
    );
    assert_eq!(status["status"]["phase"], "Pending");
    let c = &status["status"]["conditions"][0];
    assert_eq!(
        (&c["status"], &c["reason"]),
        (&json!("False"), &json!("BucketTaken"))
    );
    let message = c["message"].as_str().unwrap();
    assert!(message.contains("belongs to user alice"), "{message}");
    assert!(message.contains("never takes over"), "{message}");
    let a = admin.accounts.lock().unwrap();
    assert_eq!(a.buckets["photos"], ("alice".to_owned(), 12, None));
    assert!(a.keys.is_empty(), "no key to someone else's bucket");
}

/// A deleted claim that bound `bucket` (holding `objects`) with `policy`.
fn deleted_claim(admin: &MockAdmin, policy: &str, objects: u64) -> sublet_crds::BucketClaim {
    let mut claim = bucket_claim(
        "app",
        &format!("gateway: s3\nbucketName: app-data\ndeletionPolicy: {policy}"),
    );
    claim.metadata.finalizers = Some(vec!["sublet.dev/bucket-claim".into()]);
    claim.metadata.resource_version = Some("42".into());
    claim.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2026-11-28T01:00:00Z".parse().unwrap(),
    ));
    claim.status = Some(sublet_crds::BucketClaimStatus {
        phase: Some("Bound".into()),
        bucket_name: Some("app-data".into()),
        ..Default::default()
    });
    let user = super::bucketclaim::user_id(&claim).unwrap();
    let access = super::bucketclaim::access_key_id(&claim).unwrap();
    let mut a = admin.accounts.lock().unwrap();
    a.users.insert(user.clone(), ClaimUser::default());
    a.buckets
        .insert("app-data".into(), (user.clone(), objects, None));
    a.keys
        .insert(access, (user, "s".repeat(40), "app-data".into()));
    drop(a);
    claim
}

async fn finalizer_removed(api: &mut Handle) {
    let fin = expect(api, Method::PATCH, &format!("{CLAIMS}/app")).await;
    assert_eq!(
        fin.body,
        json!({"metadata": {"finalizers": [], "resourceVersion": "42"}})
    );
    fin.ok(
        &json!({"apiVersion": "sublet.dev/v1alpha1", "kind": "BucketClaim",
        "metadata": {"name": "app", "namespace": NS},
        "spec": {"gateway": "s3", "bucketName": "app-data"}}),
    );
}

#[tokio::test]
async fn deleting_a_delete_claim_waits_for_its_bucket_to_be_empty_then_deletes_it() {
    let admin = Arc::new(MockAdmin::default());
    let claim = deleted_claim(&admin, "Delete", 3);
    let (ctx, mut api) = context(admin.clone());
    let echo = serde_json::to_value(&claim).unwrap();
    let scenario = tokio::spawn(async move {
        gateway_and_token(&mut api).await;
        let status = expect(&mut api, Method::PATCH, &format!("{CLAIMS}/app/status")).await;
        let body = status.body.clone();
        status.ok(&echo);
        expect(
            &mut api,
            Method::POST,
            "/apis/events.k8s.io/v1/namespaces/storage/events",
        )
        .await
        .echo();
        (api, body)
    });
    let (action, (mut api, status)) = run_claim(
        Box::pin(super::bucketclaim::reconcile(
            Arc::new(claim.clone()),
            ctx.clone(),
        )),
        scenario,
    )
    .await;
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(super::bucketclaim::WAIT)
    );
    assert_eq!(status["status"]["phase"], "Deleting");
    let c = &status["status"]["conditions"][0];
    assert_eq!(c["reason"], "BucketNotEmpty");
    assert!(
        c["message"]
            .as_str()
            .unwrap()
            .contains("Secret app works until then"),
        "{c}"
    );
    {
        let a = admin.accounts.lock().unwrap();
        assert!(a.buckets.contains_key("app-data"));
        assert_eq!(
            a.keys.len(),
            1,
            "the key stays so the bucket can be emptied"
        );
    }

    // Emptied: bucket, key and user go, then the finalizer.
    admin
        .accounts
        .lock()
        .unwrap()
        .buckets
        .get_mut("app-data")
        .unwrap()
        .1 = 0;
    let scenario = tokio::spawn(async move {
        gateway_and_token(&mut api).await;
        finalizer_removed(&mut api).await;
    });
    let (action, ()) = run_claim(
        Box::pin(super::bucketclaim::reconcile(Arc::new(claim), ctx)),
        scenario,
    )
    .await;
    assert_eq!(action, kube::runtime::controller::Action::await_change());
    let a = admin.accounts.lock().unwrap();
    assert!(
        a.buckets.is_empty() && a.keys.is_empty() && a.users.is_empty(),
        "{a:?}"
    );
}

#[tokio::test]
async fn deleting_a_retain_claim_keeps_bucket_objects_and_owner_and_removes_the_key() {
    let admin = Arc::new(MockAdmin::default());
    let claim = deleted_claim(&admin, "Retain", 3);
    let (ctx, mut api) = context(admin.clone());
    let scenario = tokio::spawn(async move {
        gateway_and_token(&mut api).await;
        finalizer_removed(&mut api).await;
    });
    let (action, ()) = run_claim(
        Box::pin(super::bucketclaim::reconcile(Arc::new(claim), ctx)),
        scenario,
    )
    .await;
    assert_eq!(action, kube::runtime::controller::Action::await_change());
    let a = admin.accounts.lock().unwrap();
    assert!(a.keys.is_empty());
    assert_eq!(a.buckets["app-data"].1, 3, "objects kept");
    assert_eq!(a.users.len(), 1, "the bucket's owner stays");
}

#[tokio::test]
async fn a_lending_pool_mounts_its_markets_ca_into_provider_pods() {
    let (ctx, mut api) = context(Arc::new(MockAdmin::default()));
    let lent = pool(
        "home-lab",
        "class: owned\nowner: alice\nnodes: {selector: {matchLabels: {sublet.dev/provider: \"true\"}}, storage: {hostPath: /var/lib/sublet, capacity: 500Gi}}\noffer: {marketUrl: \"https://market.example:7490\", marketCaSecretRef: {name: market-ca}, pricePerGibMonth: 4000, region: eu-west, promisedUptime: \"99.5%\"}",
    );
    let echo_pool = serde_json::to_value(&lent).unwrap();
    let scenario = tokio::spawn(async move {
        expect(
            &mut api,
            Method::PATCH,
            &format!("{SUBLET}/providerpools/home-lab"),
        )
        .await
        .ok(&echo_pool);
        expect(&mut api, Method::POST, &format!("{CORE}/secrets"))
            .await
            .already_exists();
        let service = next(&mut api).await;
        service.assert_apply(&format!("{CORE}/services/home-lab-provider"));
        service.echo();

        let ds = next(&mut api).await;
        ds.assert_apply("/apis/apps/v1/namespaces/storage/daemonsets/home-lab-provider");
        let pod = ds.body["spec"]["template"]["spec"].clone();
        ds.echo();
        expect(&mut api, Method::GET, &format!("{CORE}/pods"))
            .await
            .ok(&list("Pod", vec![]));
        expect(
            &mut api,
            Method::PATCH,
            &format!("{SUBLET}/providerpools/home-lab/status"),
        )
        .await
        .ok(&echo_pool);
        pod
    });
    let pod = run(
        Box::pin(super::pool::reconcile(Arc::new(lent), ctx)),
        scenario,
    )
    .await;
    // The Secret's `ca.crt` (the default key) is mounted read-only into the provider ...
    assert_eq!(pod["volumes"][1]["secret"]["secretName"], "market-ca");
    assert_eq!(
        pod["volumes"][1]["secret"]["items"],
        json!([{"key": "ca.crt", "path": "ca.pem"}])
    );
    let provider = &pod["containers"][0];
    assert_eq!(
        provider["volumeMounts"][1],
        json!({"name": "market-ca", "mountPath": "/etc/sublet/market-ca", "readOnly": true})
    );
    // ... and the offer it publishes trusts that file for the market's HTTPS.
    let offer = provider["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "SUBLET_PROVIDER_OFFER")
        .unwrap()["value"]
        .as_str()
        .unwrap()
        .to_owned();
    let offer: Value = serde_json::from_str(&offer).unwrap();
    assert_eq!(offer["marketCaFile"], "/etc/sublet/market-ca/ca.pem");
    assert!(offer.get("marketCaSecretRef").is_none(), "{offer}");
}

#[tokio::test]
async fn a_gateway_mounts_the_ca_its_market_pool_names_by_secret() {
    let rented = serde_json::to_value(pool(
        "rented",
        "class: rented\nmarket: {url: \"https://market.example:7490\", caSecretRef: {name: market-ca}, providers: 2, reserve: 10Gi}",
    ))
    .unwrap();
    let photos = serde_json::to_value(plan(
        "photos",
        "redundancy: {replicas: 2}\nplacement: {pools: [{name: rented}]}",
    ))
    .unwrap();
    let (yaml, _, _, pod) = reconcile_gateway_in(vec![rented], vec![photos], vec![]).await;
    // The config the gateway loads trusts the mounted file for the market's HTTPS ...
    let config = sublet_crds::load_str("sublet.yaml", &yaml).unwrap();
    let market = config.pools["rented"].spec.market.clone().unwrap();
    assert_eq!(
        market.ca_file.as_deref(),
        Some("/etc/sublet-market-ca/rented/ca.pem")
    );
    assert!(!yaml.contains("caSecretRef"), "{yaml}");
    // ... where the Secret's `ca.crt` (the default key) is mounted read-only.
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "market-ca")
        .cloned()
        .unwrap();
    assert_eq!(
        volume["projected"]["sources"][0]["secret"],
        json!({"name": "market-ca", "items": [{"key": "ca.crt", "path": "rented/ca.pem"}], "optional": false})
    );
    let mounts = pod["containers"][0]["volumeMounts"].as_array().unwrap();
    assert!(
        mounts.contains(
            &json!({"name": "market-ca", "mountPath": "/etc/sublet-market-ca", "readOnly": true})
        ),
        "{mounts:?}"
    );
}
