//! The S3 API (via s3s) over the metadata store and the data plane.

mod bucket;
mod budget;
mod copy;
mod delete;
mod get;
pub mod inflight;
mod lifecycle;
mod list;
mod multipart;
mod put;
pub mod reencode;
pub mod snapshot;

pub use lifecycle::{
    LIFECYCLE_INTERVAL, PlanRules, Report as LifecycleReport, Rule as LifecycleRule,
    spawn_lifecycle,
};
pub use multipart::MIN_PART_SIZE;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use s3s::dto::*;
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use crate::codec::MasterKey;
use crate::dataplane::ShardBackend;
use crate::health::RebuildPolicy;
use crate::layout::Scheme;
use crate::meta::{MetaError, MetadataStore};
use crate::placement::{HealthBoard, Topology};

/// A storage plan (= S3 storage class): how new versions are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub name: String,
    pub scheme: Scheme,
    pub encrypt: bool,
    pub segment_size: u64,
    /// Acknowledged shards needed per segment before a version commits.
    pub write_quorum: usize,
    /// Objects of at most this many bytes are sealed into metadata, not striped (0: never).
    pub inline_up_to: u64,
}

impl Plan {
    /// The default plan of `sublet dev`: Reed–Solomon 4+2, 16 MiB segments, encrypted, objects
    /// up to 4 KiB kept in metadata.
    pub fn standard() -> Self {
        Plan {
            name: "standard".into(),
            scheme: Scheme::Erasure { data: 4, parity: 2 },
            encrypt: true,
            segment_size: 16 << 20,
            write_quorum: 6,
            inline_up_to: 4 << 10,
        }
    }
}

/// The plans and their rules, swapped as a whole when the policy API applies a change.
#[derive(Debug, Clone)]
pub struct PolicySet {
    /// Every plan new objects may be written with, the default first.
    pub plans: Vec<Plan>,
    /// Where providers sit and each plan's placement rule.
    pub topology: Arc<Topology>,
    /// Rebuild rules by plan name; plans without one use the defaults.
    pub rebuild: HashMap<String, RebuildPolicy>,
    /// The lifecycle rules of each plan's StorageSchedule.
    pub lifecycle: PlanRules,
    /// How often and how hard providers are audited: the tightest of the plans' schedules.
    pub audit: crate::audit::AuditPolicy,
}

impl PolicySet {
    fn plan(&self, name: &str) -> Option<&Plan> {
        self.plans.iter().find(|p| p.name == name)
    }
}

/// The S3 front end: one per gateway process.
pub struct Gateway {
    meta: Arc<dyn MetadataStore>,
    master: Arc<MasterKey>,
    default_plan: String,
    /// Shard backends by node id; providers of pools applied through the policy API join
    /// while the gateway runs (none ever leaves: old layouts may still name it).
    by_node: std::sync::RwLock<Arc<HashMap<String, Arc<dyn ShardBackend>>>>,
    /// Plans, placement and rebuild rules. Requests take a snapshot (an `Arc` clone under a
    /// read lock held for nanoseconds); a policy change swaps the whole set, so a request
    /// never sees a plan without its placement rule.
    policy: std::sync::RwLock<Arc<PolicySet>>,
    /// Marked at every policy swap, so background loops (audits) pick up new schedules.
    policy_changes: tokio::sync::watch::Sender<()>,
    /// Free space and recent failures of providers, for placement.
    health: Arc<HealthBoard>,
    /// Versions (by row id) a repair in this process is working on.
    repair_claims: Arc<std::sync::Mutex<std::collections::HashSet<i64>>>,
    /// Layouts lifecycle transitions replaced, with when (Unix ms): reads that started
    /// before the switch still stream from them (see [`lifecycle::RETIRE_DELAY_MS`]).
    retired: Arc<std::sync::Mutex<Vec<(i64, crate::layout::Layout)>>>,
    /// Versions being streamed to clients, whose shards a removal must leave until the end.
    inflight: inflight::InFlight,
    /// The metadata journal, when the store is this gateway's own (see [`crate::journal`]).
    journal: Option<Arc<crate::journal::Journal>>,
    /// Segment buffers all writes in flight may hold together.
    upload_budget: budget::BufferBudget,
    /// Shards and decoded segments all reads in flight may hold together while decoding.
    read_budget: budget::BufferBudget,
    /// The metadata store alone is as safe a place for data as the providers (`sublet
    /// dev`, where everything is on one disk): plans may keep small objects in it.
    metadata_suffices: bool,
}

impl Gateway {
    /// `plans` must be non-empty; the first one is the default.
    pub fn new(
        meta: Arc<dyn MetadataStore>,
        master: Arc<MasterKey>,
        plans: Vec<Plan>,
        providers: Vec<Arc<dyn ShardBackend>>,
    ) -> anyhow::Result<Self> {
        let Some(first) = plans.first() else {
            anyhow::bail!("the gateway needs at least one storage plan");
        };
        for p in &plans {
            if p.segment_size == 0 {
                anyhow::bail!("plan {}: segment size must be positive", p.name);
            }
        }
        let default_plan = first.name.clone();
        let by_node = std::sync::RwLock::new(Arc::new(
            providers
                .iter()
                .map(|p| (p.node_id().to_string(), Arc::clone(p)))
                .collect(),
        ));
        let topology = Arc::new(Topology::flat(providers.iter().map(|p| p.node_id())));
        Ok(Self {
            meta,
            master,
            default_plan,
            by_node,
            policy: std::sync::RwLock::new(Arc::new(PolicySet {
                plans,
                topology,
                rebuild: HashMap::new(),
                lifecycle: Vec::new(),
                audit: crate::audit::AuditPolicy::default(),
            })),
            policy_changes: tokio::sync::watch::channel(()).0,
            health: Arc::default(),
            repair_claims: Arc::default(),
            retired: Arc::default(),
            inflight: inflight::InFlight::default(),
            journal: None,
            upload_budget: budget::BufferBudget::default(),
            read_budget: budget::BufferBudget::default(),
            metadata_suffices: false,
        })
    }

    /// Lets plans keep small objects in the metadata store without a journal or shared
    /// database behind it: for a gateway whose providers share its disk (`sublet dev`).
    pub fn with_metadata_alone(mut self) -> Self {
        self.metadata_suffices = true;
        self
    }

    /// Journals metadata changes in `journal` (which must be the one the store appends to).
    pub fn with_journal(mut self, journal: Option<Arc<crate::journal::Journal>>) -> Self {
        self.journal = journal;
        self
    }

    /// The metadata journal, if this gateway keeps one.
    pub fn journal(&self) -> Option<&Arc<crate::journal::Journal>> {
        self.journal.as_ref()
    }

    /// The master key, which seals journal segments and wraps data keys.
    pub fn master_key(&self) -> &MasterKey {
        &self.master
    }

    /// Places new objects by `topology` (pools, zones, plan rules) and `health` instead of
    /// treating every provider alike. Every site must be one of the gateway's providers.
    pub fn with_placement(
        mut self,
        topology: Topology,
        health: Arc<HealthBoard>,
    ) -> anyhow::Result<Self> {
        for site in &topology.sites {
            if !self.providers().contains_key(&site.node_id) {
                anyhow::bail!("placement names provider {site}, which the gateway does not have");
            }
        }
        self.policy_mut().topology = Arc::new(topology);
        self.health = health;
        Ok(self)
    }

    /// Repairs and counts health of `plan`'s objects by `policy` (its schedule's rules).
    pub fn with_rebuild(mut self, policies: HashMap<String, RebuildPolicy>) -> Self {
        self.policy_mut().rebuild = policies;
        self
    }

    /// Audits providers by `policy` (the tightest of the schedules).
    pub fn with_audit(mut self, policy: crate::audit::AuditPolicy) -> Self {
        self.policy_mut().audit = policy;
        self
    }

    /// Applies each plan's schedule lifecycle `rules` (besides every bucket's own).
    pub fn with_lifecycle(mut self, rules: PlanRules) -> Self {
        self.policy_mut().lifecycle = rules;
        self
    }

    fn policy_mut(&mut self) -> &mut PolicySet {
        let lock = self
            .policy
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::make_mut(lock)
    }

    /// The plans and rules in force now.
    pub fn policy(&self) -> Arc<PolicySet> {
        Arc::clone(
            &self
                .policy
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Replaces the plans and their rules while the gateway runs (the policy API). The
    /// providers stay; every placement site must be one of them, and the default plan must
    /// stay. Versions already written keep their layouts.
    pub fn swap_policy(&self, next: PolicySet) -> anyhow::Result<()> {
        if next.plan(&self.default_plan).is_none() {
            anyhow::bail!(
                "the default plan {} must stay configured",
                self.default_plan
            );
        }
        for p in &next.plans {
            if p.segment_size == 0 {
                anyhow::bail!("plan {}: segment size must be positive", p.name);
            }
        }
        for site in &next.topology.sites {
            if !self.providers().contains_key(&site.node_id) {
                anyhow::bail!("placement names provider {site}, which the gateway does not have");
            }
        }
        *self
            .policy
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(next);
        self.policy_changes.send_replace(());
        Ok(())
    }

    /// Changes each time [`Gateway::swap_policy`] switches the policies.
    pub fn policy_changes(&self) -> tokio::sync::watch::Receiver<()> {
        self.policy_changes.subscribe()
    }

    /// The name of the plan PUTs without a storage class (in a bucket without its own) use.
    pub fn default_plan(&self) -> &str {
        &self.default_plan
    }

    /// The rebuild rules of `plan`.
    pub fn rebuild_policy(&self, plan: &str) -> RebuildPolicy {
        self.policy().rebuild.get(plan).cloned().unwrap_or_default()
    }

    /// Versions a repair in this process is working on, so concurrent passes (the loop, the
    /// admin API) split the queue instead of racing for the same versions.
    pub fn repair_claims(&self) -> &Arc<std::sync::Mutex<std::collections::HashSet<i64>>> {
        &self.repair_claims
    }

    /// Every plan new objects may be written with, the default first.
    pub fn plans(&self) -> Vec<Plan> {
        self.policy().plans.clone()
    }

    /// Where providers sit and each plan's placement rule.
    pub fn topology(&self) -> Arc<Topology> {
        Arc::clone(&self.policy().topology)
    }

    /// The shard backend of a provider, by node id.
    pub fn backend(&self, node: &str) -> Option<Arc<dyn ShardBackend>> {
        self.providers().get(node).cloned()
    }

    /// Every shard backend by node id, as of now.
    pub fn providers(&self) -> Arc<HashMap<String, Arc<dyn ShardBackend>>> {
        Arc::clone(
            &self
                .by_node
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Adds providers (a pool applied while running); ones already known are kept as they are.
    pub fn add_providers(&self, providers: Vec<Arc<dyn ShardBackend>>) {
        let mut by_node = self
            .by_node
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut next = (**by_node).clone();
        for p in providers {
            next.entry(p.node_id().to_string()).or_insert(p);
        }
        *by_node = Arc::new(next);
    }

    /// What placement knows about provider health.
    pub fn health(&self) -> &Arc<HealthBoard> {
        &self.health
    }

    /// The metadata store, e.g. for usage gauges.
    /// This installation's tag, the start of its shard ids (see [`MasterKey::installation`]).
    pub fn installation(&self) -> &str {
        self.master.installation()
    }

    pub fn metadata(&self) -> &Arc<dyn MetadataStore> {
        &self.meta
    }

    fn plan(&self, name: &str) -> Option<Plan> {
        self.policy().plan(name).cloned()
    }

    fn backend_for(
        &self,
    ) -> impl Fn(&str) -> Option<Arc<dyn ShardBackend>> + Send + Sync + 'static {
        let map = self.providers();
        move |node| map.get(node).cloned()
    }

    /// Runs a metadata call on the blocking pool (SQLite commits wait on disk).
    async fn meta<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn MetadataStore) -> crate::meta::Result<T> + Send + 'static,
    ) -> S3Result<T> {
        let meta = Arc::clone(&self.meta);
        tokio::task::spawn_blocking(move || f(meta.as_ref()))
            .await
            .map_err(|e| internal(format!("metadata task failed: {e}")))?
            .map_err(meta_err)
    }

    /// Fails with NoSuchBucket unless the bucket exists.
    async fn require_bucket(&self, name: &str) -> S3Result<crate::meta::Bucket> {
        let owned = name.to_string();
        match self.meta(move |m| m.bucket(&owned)).await? {
            Some(b) => Ok(b),
            None => Err(no_such_bucket(name)),
        }
    }
}

fn no_such_bucket(name: &str) -> S3Error {
    S3Error::with_message(
        S3ErrorCode::NoSuchBucket,
        format!("bucket {name} does not exist"),
    )
}

fn meta_err(e: MetaError) -> S3Error {
    match e {
        MetaError::BucketExists(b) => S3Error::with_message(
            S3ErrorCode::BucketAlreadyOwnedByYou,
            format!("bucket {b} already exists"),
        ),
        MetaError::NoSuchBucket(b) => no_such_bucket(&b),
        MetaError::BucketNotEmpty(b) => S3Error::with_message(
            S3ErrorCode::BucketNotEmpty,
            format!("bucket {b} is not empty"),
        ),
        MetaError::NoSuchUpload {
            bucket,
            key,
            upload_id,
        } => multipart::no_such_upload(&bucket, &key, &upload_id),
        MetaError::PartChanged {
            upload_id,
            part_number,
        } => S3Error::with_message(
            S3ErrorCode::InvalidPart,
            format!(
                "part {part_number} of upload {upload_id} was replaced while completing; list the parts and try again"
            ),
        ),
        MetaError::Store(m) => {
            tracing::error!(error = %m, "metadata store failed");
            S3Error::with_message(S3ErrorCode::InternalError, format!("metadata store: {m}"))
        }
    }
}

fn internal(msg: impl Into<String>) -> S3Error {
    S3Error::with_message(S3ErrorCode::InternalError, msg.into())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn timestamp(ms: i64) -> Timestamp {
    let ms = u64::try_from(ms).unwrap_or(0);
    Timestamp::from(UNIX_EPOCH + Duration::from_millis(ms))
}

fn etag(hex: &str) -> ETag {
    ETag::Strong(hex.to_string())
}

#[async_trait::async_trait]
impl S3 for Gateway {
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        self.do_create_bucket(req).await
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.do_delete_bucket(req).await
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.do_head_bucket(req).await
    }

    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        self.do_list_buckets(req).await
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.do_get_bucket_location(req).await
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        self.do_put_object(req).await
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        self.do_get_object(req).await
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        self.do_head_object(req).await
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.do_delete_object(req).await
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        self.do_delete_objects(req).await
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        self.do_list_objects(req).await
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.do_list_objects_v2(req).await
    }

    async fn put_bucket_versioning(
        &self,
        req: S3Request<PutBucketVersioningInput>,
    ) -> S3Result<S3Response<PutBucketVersioningOutput>> {
        self.do_put_bucket_versioning(req).await
    }

    async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        self.do_get_bucket_versioning(req).await
    }

    async fn put_bucket_lifecycle_configuration(
        &self,
        req: S3Request<PutBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<PutBucketLifecycleConfigurationOutput>> {
        self.do_put_bucket_lifecycle_configuration(req).await
    }

    async fn get_bucket_lifecycle_configuration(
        &self,
        req: S3Request<GetBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<GetBucketLifecycleConfigurationOutput>> {
        self.do_get_bucket_lifecycle_configuration(req).await
    }

    async fn delete_bucket_lifecycle(
        &self,
        req: S3Request<DeleteBucketLifecycleInput>,
    ) -> S3Result<S3Response<DeleteBucketLifecycleOutput>> {
        self.do_delete_bucket_lifecycle(req).await
    }

    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        self.do_list_object_versions(req).await
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        self.do_copy_object(req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.do_create_multipart_upload(req).await
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        self.do_upload_part(req).await
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        self.do_upload_part_copy(req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        self.do_complete_multipart_upload(req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.do_abort_multipart_upload(req).await
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        self.do_list_parts(req).await
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        self.do_list_multipart_uploads(req).await
    }
}
