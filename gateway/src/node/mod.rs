//! The gateway node: the state every part of one gateway process shares — the metadata
//! store, the master key, the providers and their health, the plans and their rules in
//! force, the journal, and the buffer budgets — and the object engine over it: storing a
//! body as a new layout ([`write`]), streaming a version back ([`read`]), and freeing
//! shards once nothing reads them ([`retire`]).
//!
//! The S3 front end ([`crate::s3`]), the admin API and the background jobs
//! ([`crate::upkeep`]) all take a [`Node`]; the node knows none of them.

pub mod budget;
pub mod config;
pub mod cors;
pub mod health;
pub mod inflight;
pub mod read;
pub mod retire;
pub mod rules;
pub mod users;
pub mod write;

use std::collections::HashMap;
use std::sync::Arc;

use crate::datapath::codec::MasterKey;
use crate::datapath::fleet::Fleet;
use crate::datapath::layout::Scheme;
use crate::datapath::placement::{HealthBoard, Topology};
use crate::datapath::stripes::ShardBackend;
use crate::error::{Error, Result};
use crate::meta::MetadataStore;
use crate::node::health::RebuildPolicy;
use crate::node::rules::{AuditPolicy, PlanRules};

pub use health::now_ms;

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
    pub audit: AuditPolicy,
}

impl PolicySet {
    /// The plan named `name`.
    pub fn plan(&self, name: &str) -> Option<&Plan> {
        self.plans.iter().find(|p| p.name == name)
    }
}

/// How long a write in flight stays held in a shared store without being renewed; renewed
/// every [`WRITE_HOLD_RENEW`], so a gateway that dies lets its writes' shards become
/// garbage (subject to the minimum age) this long after its last renewal.
pub const WRITE_HOLD_MS: i64 = 5 * 60 * 1000;
/// How often a gateway on a shared store renews the holds of its writes in flight.
pub const WRITE_HOLD_RENEW: std::time::Duration = std::time::Duration::from_secs(30);

/// The gateway node: the state one gateway process shares between its S3 front end, its
/// admin API and its background jobs.
pub struct Node {
    meta: Arc<dyn MetadataStore>,
    master: Arc<MasterKey>,
    default_plan: String,
    /// The providers shards go to, and their health.
    fleet: Arc<Fleet>,
    /// Plans, placement and rebuild rules. Requests take a snapshot (an `Arc` clone under a
    /// read lock held for nanoseconds); a policy change swaps the whole set, so a request
    /// never sees a plan without its placement rule.
    policy: std::sync::RwLock<Arc<PolicySet>>,
    /// Marked at every policy swap, so background loops (audits) pick up new schedules.
    policy_changes: tokio::sync::watch::Sender<()>,
    /// Versions (by row id) a repair in this process is working on.
    repair_claims: Arc<std::sync::Mutex<std::collections::HashSet<i64>>>,
    /// Layouts lifecycle transitions replaced, with when (Unix ms): reads that started
    /// before the switch still stream from them (see [`retire::RETIRE_DELAY_MS`]).
    retired: Arc<std::sync::Mutex<Vec<(i64, crate::datapath::layout::Layout)>>>,
    /// Versions being streamed to clients, whose shards a removal must leave until the end.
    inflight: inflight::InFlight,
    /// Writes whose shards no committed metadata names yet: garbage collection keeps them.
    writes: inflight::Writes,
    /// The metadata journal, when the store is this gateway's own (see [`crate::meta::journal`]).
    journal: Option<Arc<crate::meta::journal::Journal>>,
    /// Segment buffers all writes in flight may hold together.
    upload_budget: budget::BufferBudget,
    /// The largest body one PUT or part may carry ([`write::MAX_UPLOAD_SIZE`]).
    max_upload: u64,
    /// Shards and decoded segments all reads in flight may hold together while decoding.
    read_budget: budget::BufferBudget,
    /// The metadata store alone is as safe a place for data as the providers (`sublet
    /// dev`, where everything is on one disk): plans may keep small objects in it.
    metadata_suffices: bool,
    /// Users and access keys made at runtime, and quotas.
    accounts: Arc<users::Accounts>,
    /// Buckets' CORS rules, as cross-origin requests read them.
    cors: cors::CorsCache,
    /// Whether requests may carry customers' encryption keys (SSE-C): only where they
    /// cannot cross a network in the clear — an S3 listener over TLS or on loopback.
    customer_keys_allowed: std::sync::atomic::AtomicBool,
}

impl Node {
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
        let fleet = Arc::new(Fleet::new(
            master.installation(),
            &providers,
            Arc::default(),
        ));
        let topology = Arc::new(Topology::flat(providers.iter().map(|p| p.node_id())));
        let accounts = Arc::new(users::Accounts::new(Arc::clone(&meta), Arc::clone(&master)));
        Ok(Self {
            accounts,
            cors: cors::CorsCache::default(),
            meta,
            master,
            default_plan,
            fleet,
            policy: std::sync::RwLock::new(Arc::new(PolicySet {
                plans,
                topology,
                rebuild: HashMap::new(),
                lifecycle: Vec::new(),
                audit: AuditPolicy::default(),
            })),
            policy_changes: tokio::sync::watch::channel(()).0,
            repair_claims: Arc::default(),
            retired: Arc::default(),
            inflight: inflight::InFlight::default(),
            writes: inflight::Writes::default(),
            journal: None,
            upload_budget: budget::BufferBudget::new(budget::UPLOAD_BUDGET_BYTES),
            max_upload: write::MAX_UPLOAD_SIZE,
            read_budget: budget::BufferBudget::new(budget::READ_BUDGET_BYTES),
            metadata_suffices: false,
            customer_keys_allowed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Lets requests carry customers' encryption keys (SSE-C): set when the S3 listener
    /// serves TLS or listens on loopback only, so keys never cross a network in the clear.
    pub fn allow_customer_keys(&self, allowed: bool) {
        self.customer_keys_allowed
            .store(allowed, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether requests may carry customers' encryption keys (SSE-C).
    pub fn customer_keys_allowed(&self) -> bool {
        self.customer_keys_allowed
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Lets plans keep small objects in the metadata store without a journal or shared
    /// database behind it: for a gateway whose providers share its disk (`sublet dev`).
    pub fn with_metadata_alone(mut self) -> Self {
        self.metadata_suffices = true;
        self
    }

    /// Refuses uploads (one PUT's or part's body) over `bytes` rather than S3's 5 GiB: for
    /// tests of the limit.
    pub fn with_max_upload(mut self, bytes: u64) -> Self {
        self.max_upload = bytes;
        self
    }

    /// Journals metadata changes in `journal` (which must be the one the store appends to).
    pub fn with_journal(mut self, journal: Option<Arc<crate::meta::journal::Journal>>) -> Self {
        self.journal = journal;
        self
    }

    /// The metadata journal, if this gateway keeps one.
    pub fn journal(&self) -> Option<&Arc<crate::meta::journal::Journal>> {
        self.journal.as_ref()
    }

    /// Users, runtime access keys and quotas.
    pub fn accounts(&self) -> &Arc<users::Accounts> {
        &self.accounts
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
        self.fleet = Arc::new(self.fleet.with_health(health));
        Ok(self)
    }

    /// Repairs and counts health of `plan`'s objects by `policy` (its schedule's rules).
    pub fn with_rebuild(mut self, policies: HashMap<String, RebuildPolicy>) -> Self {
        self.policy_mut().rebuild = policies;
        self
    }

    /// Audits providers by `policy` (the tightest of the schedules).
    pub fn with_audit(mut self, policy: AuditPolicy) -> Self {
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

    /// Changes each time [`Node::swap_policy`] switches the policies.
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
        self.fleet.backend(node)
    }

    /// Every shard backend by node id, as of now.
    pub fn providers(&self) -> Arc<HashMap<String, Arc<dyn ShardBackend>>> {
        self.fleet.providers()
    }

    /// Adds providers (a pool applied while running); ones already known are kept as they are.
    pub fn add_providers(&self, providers: Vec<Arc<dyn ShardBackend>>) {
        self.fleet.add_providers(providers);
    }

    /// What placement knows about provider health.
    pub fn health(&self) -> &Arc<HealthBoard> {
        self.fleet.health()
    }

    /// The providers and their health, for what runs below the node (the journal).
    pub fn fleet(&self) -> &Arc<Fleet> {
        &self.fleet
    }

    /// Writes in flight in this process (see [`inflight::Writes`]).
    pub fn writes(&self) -> &inflight::Writes {
        &self.writes
    }

    /// Starts a write in flight (see [`inflight::Writes`]). On a store other gateways share,
    /// it is held there too before this returns, so before any of its shards is stored:
    /// their garbage collection keeps its shards however long it takes, while
    /// `upkeep::audit::hold_writes_in_flight` renews the hold. A write that cannot be held
    /// does not start.
    pub async fn start_write(&self, write_id: &str) -> Result<inflight::WriteGuard> {
        let guard = self.writes.start(write_id);
        if self.meta.shared() {
            let (holder, ids) = (self.writes.holder().to_owned(), vec![write_id.to_owned()]);
            let until = crate::clock::now_ms().saturating_add(WRITE_HOLD_MS);
            self.meta(move |m| m.hold_writes(&holder, &ids, until))
                .await?;
        }
        Ok(guard)
    }

    /// This installation's tag, the start of its shard ids (see [`MasterKey::installation`]).
    pub fn installation(&self) -> &str {
        self.master.installation()
    }

    /// The metadata store, e.g. for usage gauges.
    pub fn metadata(&self) -> &Arc<dyn MetadataStore> {
        &self.meta
    }

    /// The plan named `name`, if configured now.
    pub fn plan(&self, name: &str) -> Option<Plan> {
        self.policy().plan(name).cloned()
    }

    /// A lookup of shard backends by node id, as of now.
    pub fn backend_for(
        &self,
    ) -> impl Fn(&str) -> Option<Arc<dyn ShardBackend>> + Send + Sync + 'static {
        let map = self.providers();
        move |node| map.get(node).cloned()
    }

    /// Runs a metadata call on the blocking pool (SQLite commits wait on disk).
    pub async fn meta<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn MetadataStore) -> crate::meta::Result<T> + Send + 'static,
    ) -> Result<T> {
        let meta = Arc::clone(&self.meta);
        tokio::task::spawn_blocking(move || f(meta.as_ref()))
            .await
            .map_err(|e| Error::internal(format!("metadata task failed: {e}")))?
            .map_err(Error::from)
    }

    /// Fails with NoSuchBucket unless the bucket exists.
    pub async fn require_bucket(&self, name: &str) -> Result<crate::meta::Bucket> {
        let owned = name.to_string();
        match self.meta(move |m| m.bucket(&owned)).await? {
            Some(b) => Ok(b),
            None => Err(crate::meta::MetaError::NoSuchBucket(name.to_string()).into()),
        }
    }
}
