//! The kube controllers: one per sublet kind, each an idempotent `reconcile` that renders
//! the desired objects (see [`crate::render`]), server-side applies them with
//! [`crate::FIELD_MANAGER`] and writes status through the status subresource.

pub mod bucketclaim;
pub mod gateway;
pub mod lenient;
pub mod plan;
pub mod pool;
#[cfg(test)]
mod scenarios;
pub mod schedule;

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sublet_crds::{BucketClaim, ProviderPool, StorageGateway, StoragePlan, StorageSchedule};
use tracing::{info, warn};

use crate::admin::AdminApi;
use crate::metrics::Metrics;
use crate::render::{Images, LABEL_POOL, kind_of};
use crate::{Error, FIELD_MANAGER, Result};

/// How often a healthy resource is looked at again without a change (provider health,
/// plan health and repair queues are polled).
pub const RESYNC: Duration = Duration::from_secs(60);
/// Shortest time between two fetches of a resource's outside figures; see
/// [`Context::poll_due`].
pub const POLL_INTERVAL: Duration = Duration::from_secs(30);
/// The same Event about the same object is not sent again within this long.
pub const EVENT_REPEAT: Duration = Duration::from_secs(600);
/// How long an invalid resource waits before it is looked at again without a change.
pub const INVALID_RESYNC: Duration = Duration::from_secs(300);
/// First retry after a failed reconcile; doubles per failure up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_secs(5);
/// Longest wait between retries of a failing reconcile.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// What a provider's `/metrics` says about its space.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProviderUsage {
    /// `sublet_provider_capacity_bytes`.
    pub capacity_bytes: u64,
    /// `sublet_provider_used_bytes`.
    pub used_bytes: u64,
}

/// Reads `sublet_provider_capacity_bytes` and `sublet_provider_used_bytes` from the
/// Prometheus text of a provider's `/metrics`; `None` when either is missing.
pub fn parse_provider_metrics(text: &str) -> Option<ProviderUsage> {
    let value = |name: &str| {
        text.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?;
            // `name 123` or `name{labels} 123`, not `name_total 4`.
            let rest = rest
                .strip_prefix(' ')
                .or_else(|| rest.split_once("} ").map(|(_, v)| v))?;
            let number: f64 = rest.split_whitespace().next()?.parse().ok()?;
            (number.is_finite() && number >= 0.0).then_some(number as u64)
        })
    };
    Some(ProviderUsage {
        capacity_bytes: value("sublet_provider_capacity_bytes")?,
        used_bytes: value("sublet_provider_used_bytes")?,
    })
}

/// How the operator looks at providers.
#[async_trait]
pub trait ProviderProbe: Send + Sync {
    /// True when a TCP connection to `address` (`https://host:port` or `host:port`) opens.
    async fn reachable(&self, address: &str) -> bool;
    /// Space figures from the provider metrics at `metrics_url`; `None` when unavailable.
    async fn usage(&self, metrics_url: &str) -> Option<ProviderUsage>;
}

/// Probes over the network with short timeouts.
pub struct NetworkProbe {
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Empty<bytes::Bytes>,
    >,
}

impl Default for NetworkProbe {
    fn default() -> Self {
        NetworkProbe {
            client: hyper_util::client::legacy::Client::builder(
                hyper_util::rt::TokioExecutor::new(),
            )
            .build_http(),
        }
    }
}

#[async_trait]
impl ProviderProbe for NetworkProbe {
    async fn reachable(&self, address: &str) -> bool {
        let host_port = address
            .strip_prefix("https://")
            .or_else(|| address.strip_prefix("http://"))
            .unwrap_or(address)
            .trim_end_matches('/');
        matches!(
            tokio::time::timeout(
                Duration::from_secs(3),
                tokio::net::TcpStream::connect(host_port)
            )
            .await,
            Ok(Ok(_))
        )
    }

    async fn usage(&self, metrics_url: &str) -> Option<ProviderUsage> {
        use http_body_util::BodyExt;
        let uri: http::Uri = metrics_url.parse().ok()?;
        let fetch = async {
            let response = self.client.get(uri).await.ok()?;
            if !response.status().is_success() {
                return None;
            }
            response
                .into_body()
                .collect()
                .await
                .ok()
                .map(|b| b.to_bytes())
        };
        let body = tokio::time::timeout(Duration::from_secs(3), fetch)
            .await
            .ok()??;
        parse_provider_metrics(&String::from_utf8_lossy(&body))
    }
}

/// Everything a reconcile needs besides the object.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Images of the pods the operator runs.
    pub images: Images,
    /// The operator's metrics.
    pub metrics: Metrics,
    /// The gateway admin API.
    pub admin: Arc<dyn AdminApi>,
    /// Reachability and space of providers.
    pub probe: Arc<dyn ProviderProbe>,
    /// Who publishes Events.
    pub reporter: Reporter,
    /// The clock (fixed in tests).
    pub now: Arc<dyn Fn() -> jiff::Timestamp + Send + Sync>,
    failures: Mutex<HashMap<String, u32>>,
    polled: Mutex<HashMap<String, jiff::Timestamp>>,
    announced: Mutex<HashMap<String, (String, jiff::Timestamp)>>,
}

impl Context {
    /// A context with the real clock.
    pub fn new(
        client: Client,
        images: Images,
        metrics: Metrics,
        admin: Arc<dyn AdminApi>,
        probe: Arc<dyn ProviderProbe>,
    ) -> Self {
        Context {
            client,
            images,
            metrics,
            admin,
            probe,
            reporter: Reporter {
                controller: FIELD_MANAGER.into(),
                instance: std::env::var("POD_NAME").ok(),
            },
            now: Arc::new(jiff::Timestamp::now),
            failures: Mutex::new(HashMap::new()),
            polled: Mutex::new(HashMap::new()),
            announced: Mutex::new(HashMap::new()),
        }
    }

    /// Replaces the clock; for tests.
    pub fn with_clock(mut self, now: impl Fn() -> jiff::Timestamp + Send + Sync + 'static) -> Self {
        self.now = Arc::new(now);
        self
    }

    /// Now in RFC 3339, for conditions and `lastSeen`.
    pub fn now_text(&self) -> String {
        (self.now)().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    }

    /// Publishes an Event about `obj`; a failure to publish is logged, never fatal.
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        note: String,
        action: &str,
    ) {
        self.event_on(obj.object_ref(&()), type_, reason, note, action)
            .await;
    }

    /// Publishes an Event about the object `reference` names.
    pub async fn event_on(
        &self,
        reference: k8s_openapi::api::core::v1::ObjectReference,
        type_: EventType,
        reason: &str,
        note: String,
        action: &str,
    ) {
        if self.announced_lately(&reference, reason, &note) {
            return;
        }
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note.chars().take(1000).collect()),
            action: action.into(),
            secondary: None,
        };
        if let Err(err) = recorder.publish(&event, &reference).await {
            let kind = reference.kind.unwrap_or_default();
            let name = reference.name.unwrap_or_default();
            warn!(%kind, %name, %err, "cannot publish event");
        }
    }

    /// Whether the same Event (object, reason and note) went out less than
    /// [`EVENT_REPEAT`] ago, and if not, notes that it goes out now. Two reconciles of one
    /// object can both start from a status read before the first one's write arrived; both
    /// would see a change worth an Event.
    fn announced_lately(
        &self,
        reference: &k8s_openapi::api::core::v1::ObjectReference,
        reason: &str,
        note: &str,
    ) -> bool {
        let now = (self.now)();
        let Ok(mut announced) = self.announced.lock() else {
            return false;
        };
        let key = format!(
            "{}/{}/{}/{}/{reason}",
            reference.kind.as_deref().unwrap_or_default(),
            reference.namespace.as_deref().unwrap_or_default(),
            reference.name.as_deref().unwrap_or_default(),
            reference.uid.as_deref().unwrap_or_default(),
        );
        if let Some((last_note, at)) = announced.get(&key)
            && last_note == note
            && now.as_second() - at.as_second() < EVENT_REPEAT.as_secs().cast_signed()
        {
            return true;
        }
        // Bounded: forget everything rather than grow without end.
        if announced.len() >= 10_000 {
            announced.clear();
        }
        announced.insert(key, (note.to_owned(), now));
        false
    }

    /// Whether `obj`'s outside figures (provider metrics and reachability, gateway health)
    /// should be fetched again, and if so, notes that they are. Every status write triggers
    /// a reconcile; fetching at most every [`POLL_INTERVAL`] lets that reconcile find
    /// nothing new, so status settles even while figures change under writes.
    pub fn poll_due<K: Resource<DynamicType = ()>>(&self, obj: &K) -> bool {
        let now = (self.now)();
        let Ok(mut polled) = self.polled.lock() else {
            return true;
        };
        let key = Self::key(obj);
        let due = polled.get(&key).is_none_or(|last| {
            now.as_second() - last.as_second() >= POLL_INTERVAL.as_secs().cast_signed()
        });
        if due {
            polled.insert(key, now);
        }
        due
    }

    fn key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
        Self::key_of(kind_of::<K>(), obj)
    }

    fn key_of<O: Resource>(kind: &str, obj: &O) -> String {
        format!(
            "{kind}/{}/{}",
            obj.namespace().unwrap_or_default(),
            obj.name_any()
        )
    }

    /// Forgets the failures of `obj` after a successful reconcile.
    fn succeeded<K: Resource<DynamicType = ()>>(&self, obj: &K) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(&Self::key(obj));
        }
    }

    /// Counts a failure of `obj` and returns how long to wait before the next try.
    pub fn backoff<K: Resource<DynamicType = ()>>(&self, obj: &K) -> Duration {
        self.backoff_of(kind_of::<K>(), obj)
    }

    /// [`Context::backoff`] for an object of `kind` read untyped.
    pub fn backoff_of<O: Resource>(&self, kind: &str, obj: &O) -> Duration {
        let n = match self.failures.lock() {
            Ok(mut failures) => {
                let n = failures.entry(Self::key_of(kind, obj)).or_insert(0);
                *n = n.saturating_add(1);
                *n
            }
            Err(_) => 1,
        };
        backoff_after(n)
    }
}

/// `1 shard`, `2 shards`: a count with its noun for people.
pub fn counted(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The wait after the `n`th consecutive failure: 5 s, 10 s, 20 s ... at most 5 minutes.
pub fn backoff_after(n: u32) -> Duration {
    let factor = 1u32 << n.saturating_sub(1).min(16);
    MIN_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF)
}

/// Server-side applies `obj` (with force: the operator owns these fields) and returns what
/// the API server holds afterwards.
pub async fn apply<K>(client: &Client, obj: &K) -> Result<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + Debug,
{
    let name = obj.name_any();
    let ns = obj.namespace().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), &ns);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(&name, &params, &Patch::Apply(obj))
        .await
        .map_err(Error::kube("apply", kind_of::<K>(), name))
}

/// Creates `obj` unless an object of that name exists; an existing one is left untouched.
/// Returns whether it was created.
pub async fn create_if_missing<K>(client: &Client, obj: &K) -> Result<bool>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + Debug,
{
    let name = obj.name_any();
    let ns = obj.namespace().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), &ns);
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    match api.create(&params, obj).await {
        Ok(_) => {
            info!(kind = kind_of::<K>(), %name, namespace = %ns, "created");
            Ok(true)
        }
        Err(kube::Error::Api(status)) if status.is_already_exists() => Ok(false),
        Err(err) => Err(Error::kube("create", kind_of::<K>(), name)(err)),
    }
}

/// Merge-patches the status subresource of `obj` with `status`.
pub async fn patch_status<K, S>(client: &Client, obj: &K, status: &S) -> Result<()>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug,
    S: Serialize,
{
    let name = obj.name_any();
    let api: Api<K> = Api::namespaced(client.clone(), &obj.namespace().unwrap_or_default());
    let patch = serde_json::json!({ "status": status });
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(Error::kube("update status of", kind_of::<K>(), name))?;
    Ok(())
}

/// Every object of kind `K` in `ns` the operator can read; see [`lenient::list_all`].
pub async fn list_all<K>(client: &Client, ns: &str) -> Result<Vec<K>>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + DeserializeOwned,
{
    lenient::list_all(client, ns).await
}

/// Runs `reconcile` with metrics and backoff bookkeeping.
pub async fn instrumented<K, F>(obj: Arc<K>, ctx: Arc<Context>, reconcile: F) -> Result<Action>
where
    K: Resource<DynamicType = ()>,
    F: Future<Output = Result<Action>>,
{
    let kind = kind_of::<K>();
    ctx.metrics.reconciles.with_label_values(&[kind]).inc();
    let timer = ctx
        .metrics
        .duration
        .with_label_values(&[kind])
        .start_timer();
    let result = reconcile.await;
    timer.observe_duration();
    if result.is_ok() {
        ctx.succeeded(&*obj);
    }
    result
}

/// The error policy of every controller: count the failure, log it, retry with backoff.
pub fn error_policy<K: Resource<DynamicType = ()>>(
    obj: Arc<DynamicObject>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    let kind = kind_of::<K>();
    ctx.metrics
        .failures
        .with_label_values(&[kind, error.metric_label()])
        .inc();
    let wait = ctx.backoff_of(kind, &*obj);
    warn!(kind, name = %obj.name_any(), %error, retry_in = ?wait, "reconcile failed");
    Action::requeue(wait)
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn log_result<Q: std::error::Error + 'static>(
    kind: &str,
    result: Result<(ObjectRef<DynamicObject>, Action), kube::runtime::controller::Error<Error, Q>>,
) {
    use kube::runtime::controller::Error as ControllerError;
    match result {
        Ok((obj, _)) => tracing::debug!(kind, name = %obj.name, "reconciled"),
        // error_policy has logged it with the retry delay.
        Err(ControllerError::ReconcilerFailed(..) | ControllerError::ObjectNotFound(_)) => {}
        // Watch failures (a CRD not installed, RBAC missing) stop reconciles: say so loudly,
        // with every cause (the outermost error is often an empty Status).
        Err(err) => warn!(kind, error = %causes(&err), "watch failed; retrying"),
    }
}

/// An error and its sources, `outer: inner: innermost`, empty messages skipped.
pub fn causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if !text.trim().is_empty() && !parts.iter().any(|p: &String| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    if parts.is_empty() {
        format!("{err:?}")
    } else {
        parts.join(": ")
    }
}

/// Maps any object of a namespace to every object of kind `K` in the same namespace held by
/// `store` (a change to a plan re-renders every gateway's config).
fn same_namespace<K, O>(
    store: kube::runtime::reflector::Store<DynamicObject>,
) -> impl Fn(O) -> Vec<ObjectRef<DynamicObject>> + Send + Sync + Clone + 'static
where
    K: Resource<DynamicType = ()>,
    O: Resource,
{
    move |other: O| {
        let ns = other.namespace();
        store
            .state()
            .iter()
            .filter(|k| k.namespace() == ns)
            .map(|k| ObjectRef::from_obj_with(&**k, lenient::resource::<K>()))
            .collect()
    }
}

/// Group and plural of every kind [`run`] lists and watches; keep in step with `run`. The
/// RBAC test checks the ClusterRole allows each.
pub fn watched() -> Vec<(String, String)> {
    fn kind<K: Resource<DynamicType = ()>>() -> (String, String) {
        (K::group(&()).into_owned(), K::plural(&()).into_owned())
    }
    vec![
        kind::<ProviderPool>(),
        kind::<StorageGateway>(),
        kind::<StoragePlan>(),
        kind::<StorageSchedule>(),
        kind::<BucketClaim>(),
        kind::<DaemonSet>(),
        kind::<StatefulSet>(),
        kind::<Deployment>(),
        kind::<Service>(),
        kind::<ConfigMap>(),
        kind::<Pod>(),
        kind::<Job>(),
    ]
}

/// Runs the five controllers until SIGTERM; `namespace` limits them to one namespace. The
/// custom resources are watched untyped ([`lenient`]): one that does not parse is reported
/// on itself, and the others are reconciled.
pub async fn run(ctx: Arc<Context>, namespace: Option<String>) {
    use lenient::{api as untyped, resource};
    let client = ctx.client.clone();
    let ns = namespace.as_deref();
    let managed = watcher::Config::default().labels("app.kubernetes.io/managed-by=sublet-operator");
    let all = watcher::Config::default;

    let pools = Controller::new_with(
        untyped::<ProviderPool>(&client, ns),
        all(),
        resource::<ProviderPool>(),
    )
    .owns(api::<DaemonSet>(&client, ns), managed.clone())
    .owns(api::<StatefulSet>(&client, ns), managed.clone())
    .owns(api::<Service>(&client, ns), managed.clone())
    .watches(
        api::<Pod>(&client, ns),
        all().labels("app.kubernetes.io/name=sublet-provider"),
        |pod: Pod| {
            let pool = pod.labels().get(LABEL_POOL)?.clone();
            let ns = pod.namespace()?;
            Some(ObjectRef::new_with(&pool, resource::<ProviderPool>()).within(&ns))
        },
    )
    .shutdown_on_signal()
    .run(
        |obj, ctx| lenient::reconcile(obj, ctx, pool::reconcile),
        error_policy::<ProviderPool>,
        ctx.clone(),
    )
    .for_each(|r| async move { log_result("ProviderPool", r) });

    let gateway_controller = Controller::new_with(
        untyped::<StorageGateway>(&client, ns),
        all(),
        resource::<StorageGateway>(),
    );
    let gateway_store = gateway_controller.store();
    let gateways = gateway_controller
        .owns(api::<StatefulSet>(&client, ns), managed.clone())
        .owns(api::<Deployment>(&client, ns), managed.clone())
        .owns(api::<ConfigMap>(&client, ns), managed.clone())
        .owns(api::<Service>(&client, ns), managed.clone())
        .watches_with(
            untyped::<StoragePlan>(&client, ns),
            resource::<StoragePlan>(),
            all(),
            same_namespace::<StorageGateway, DynamicObject>(gateway_store.clone()),
        )
        .watches_with(
            untyped::<StorageSchedule>(&client, ns),
            resource::<StorageSchedule>(),
            all(),
            same_namespace::<StorageGateway, DynamicObject>(gateway_store.clone()),
        )
        .watches_with(
            untyped::<ProviderPool>(&client, ns),
            resource::<ProviderPool>(),
            all(),
            same_namespace::<StorageGateway, DynamicObject>(gateway_store),
        )
        .shutdown_on_signal()
        .run(
            |obj, ctx| lenient::reconcile(obj, ctx, gateway::reconcile),
            error_policy::<StorageGateway>,
            ctx.clone(),
        )
        .for_each(|r| async move { log_result("StorageGateway", r) });

    let plan_controller = Controller::new_with(
        untyped::<StoragePlan>(&client, ns),
        all(),
        resource::<StoragePlan>(),
    );
    let plan_store = plan_controller.store();
    let plans = plan_controller
        .owns(
            api::<Job>(&client, ns),
            all().labels("app.kubernetes.io/name=sublet-repair"),
        )
        .watches_with(
            untyped::<StorageSchedule>(&client, ns),
            resource::<StorageSchedule>(),
            all(),
            same_namespace::<StoragePlan, DynamicObject>(plan_store.clone()),
        )
        .watches_with(
            untyped::<ProviderPool>(&client, ns),
            resource::<ProviderPool>(),
            all(),
            same_namespace::<StoragePlan, DynamicObject>(plan_store),
        )
        .shutdown_on_signal()
        .run(
            |obj, ctx| lenient::reconcile(obj, ctx, plan::reconcile),
            error_policy::<StoragePlan>,
            ctx.clone(),
        )
        .for_each(|r| async move { log_result("StoragePlan", r) });

    let schedule_controller = Controller::new_with(
        untyped::<StorageSchedule>(&client, ns),
        all(),
        resource::<StorageSchedule>(),
    );
    let schedule_store = schedule_controller.store();
    let schedules = schedule_controller
        .watches_with(
            untyped::<StoragePlan>(&client, ns),
            resource::<StoragePlan>(),
            all(),
            same_namespace::<StorageSchedule, DynamicObject>(schedule_store),
        )
        .shutdown_on_signal()
        .run(
            |obj, ctx| lenient::reconcile(obj, ctx, schedule::reconcile),
            error_policy::<StorageSchedule>,
            ctx.clone(),
        )
        .for_each(|r| async move { log_result("StorageSchedule", r) });

    // Claims are looked at again every minute (a deleted Secret comes back within it) and
    // when a gateway of their namespace changes (one starting binds its waiting claims).
    let claim_controller = Controller::new_with(
        untyped::<BucketClaim>(&client, ns),
        all(),
        resource::<BucketClaim>(),
    );
    let claim_store = claim_controller.store();
    let claims = claim_controller
        .watches_with(
            untyped::<StorageGateway>(&client, ns),
            resource::<StorageGateway>(),
            all(),
            same_namespace::<BucketClaim, DynamicObject>(claim_store),
        )
        .shutdown_on_signal()
        .run(
            |obj, ctx| lenient::reconcile(obj, ctx, bucketclaim::reconcile),
            error_policy::<BucketClaim>,
            ctx,
        )
        .for_each(|r| async move { log_result("BucketClaim", r) });

    tokio::join!(pools, gateways, plans, schedules, claims);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn provider_metrics_give_capacity_and_use() {
        let text = "# HELP sublet_provider_used_bytes Bytes stored\n# TYPE sublet_provider_used_bytes gauge\nsublet_provider_used_bytes 1048576\nsublet_provider_used_bytes_total 9\nsublet_provider_capacity_bytes{zone=\"a\"} 5.36870912e+09\n";
        assert_eq!(
            parse_provider_metrics(text),
            Some(ProviderUsage {
                capacity_bytes: 5 << 30,
                used_bytes: 1 << 20
            })
        );
        assert_eq!(
            parse_provider_metrics("sublet_provider_used_bytes 1\n"),
            None
        );
    }

    #[tokio::test]
    async fn network_probe_reads_a_provider_over_http() {
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(|| async {
                "sublet_provider_capacity_bytes 2048\nsublet_provider_used_bytes 1024\n"
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let probe = NetworkProbe::default();
        assert_eq!(
            probe.usage(&format!("http://{addr}/metrics")).await,
            Some(ProviderUsage {
                capacity_bytes: 2048,
                used_bytes: 1024
            })
        );
        assert_eq!(probe.usage(&format!("http://{addr}/nothing")).await, None);
        assert!(probe.reachable(&format!("https://{addr}")).await);
        server.abort();
        let _ = server.await;
        assert!(
            !probe.reachable(&format!("{addr}")).await,
            "nothing listens any more"
        );
    }

    #[test]
    fn bytes_for_people() {
        use super::pool::human_bytes;
        assert_eq!(human_bytes(0), "0");
        assert_eq!(human_bytes(1000), "1000");
        assert_eq!(human_bytes(512 << 20), "512Mi");
        assert_eq!(human_bytes(3 << 39), "1.5Ti");
        assert_eq!(human_bytes((4 << 30) + (1 << 20)), "4Gi", "rounds down");
        assert_eq!(human_bytes(u64::MAX), "16383.9Pi");
    }

    /// Issue 28: a failing watch logged `ApiError: : (Status { ... code: 0, message: "" })`.
    #[test]
    fn watch_errors_name_every_cause() {
        #[derive(Debug)]
        struct Empty(std::io::Error);
        impl std::fmt::Display for Empty {
            fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                Ok(())
            }
        }
        impl std::error::Error for Empty {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let err = Empty(std::io::Error::other("\"-5\" is not a size"));
        assert_eq!(causes(&err), "\"-5\" is not a size");
        let io = std::io::Error::other("connection refused");
        assert_eq!(causes(&io), "connection refused");
    }

    #[test]
    fn counts_read_as_english() {
        assert_eq!(counted(1, "shard", "shards"), "1 shard");
        assert_eq!(counted(0, "shard", "shards"), "0 shards");
        assert_eq!(counted(2, "rebuild Job", "rebuild Jobs"), "2 rebuild Jobs");
    }

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        assert_eq!(backoff_after(1), Duration::from_secs(5));
        assert_eq!(backoff_after(2), Duration::from_secs(10));
        assert_eq!(backoff_after(4), Duration::from_secs(40));
        assert_eq!(backoff_after(7), Duration::from_secs(300));
        assert_eq!(backoff_after(u32::MAX), Duration::from_secs(300));
    }
}
