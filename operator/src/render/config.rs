//! The gateway config: the standalone multi-document YAML that `sublet serve --config`
//! reads, rendered from the namespace's ProviderPools, StorageSchedules and StoragePlans.
//!
//! The standalone loader of sublet-crds is the judge: resources are rendered, loaded with
//! [`sublet_crds::load_str`], and those the loader rejects are left out (and reported) until
//! the rest loads. So the gateway only ever gets a file its own loader accepts, and a plan's
//! `Ready=False` message is the loader's message.

use std::collections::BTreeMap;

use kube::ResourceExt;
use sublet_crds::{
    Endpoint, ProviderPool, ProviderPoolSpec, StorageGateway, StoragePlan, StorageSchedule,
};

use crate::render::GATEWAY_ADMIN_PORT;
use crate::{Error, Result};

/// Where the config file is mounted in the gateway pod.
pub const CONFIG_DIR: &str = "/etc/sublet";
/// The config file's name in the ConfigMap and in [`CONFIG_DIR`].
pub const CONFIG_FILE: &str = "sublet.yaml";
/// Where the master key Secret is mounted in the gateway pod.
pub const KEYS_DIR: &str = "/etc/sublet-keys";
/// The master key's file name in its Secret and in [`KEYS_DIR`].
pub const MASTER_KEY_FILE: &str = "master.key";
/// The gateway's data directory (SQLite database, state) in the pod.
pub const GATEWAY_DATA_DIR: &str = "/var/lib/sublet";
/// Where the Secrets of market pools' `caSecretRef` are mounted in the gateway pod, each
/// pool's as `<pool>/ca.pem`.
pub const MARKET_CA_DIR: &str = "/etc/sublet-market-ca";

/// The file a gateway pod reads the market CA of pool `pool` from.
pub fn market_ca_file(pool: &str) -> String {
    format!("{MARKET_CA_DIR}/{pool}/ca.pem")
}

/// The custom resources of one namespace, as read from the API server.
#[derive(Clone, Copy, Debug, Default)]
pub struct Inventory<'a> {
    /// Every ProviderPool, with its status (in-cluster members come from there).
    pub pools: &'a [ProviderPool],
    /// Every StoragePlan.
    pub plans: &'a [StoragePlan],
    /// Every StorageSchedule.
    pub schedules: &'a [StorageSchedule],
}

/// A resource left out of the config and why.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Excluded {
    /// `ProviderPool`, `StoragePlan` or `StorageSchedule`.
    pub kind: String,
    /// The resource's name.
    pub name: String,
    /// The problem, `field: message`, ready for a `Ready=False` condition.
    pub reason: String,
}

/// What goes into the config and what was left out.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Selection {
    /// Pools in standalone form: in-cluster members listed as endpoints.
    pub pools: Vec<ProviderPool>,
    /// Schedules that load.
    pub schedules: Vec<StorageSchedule>,
    /// Plans that load.
    pub plans: Vec<StoragePlan>,
    /// Everything left out, sorted by kind and name.
    pub excluded: Vec<Excluded>,
}

impl Selection {
    /// Why `kind`/`name` was left out, if it was.
    pub fn reason(&self, kind: &str, name: &str) -> Option<&str> {
        self.excluded
            .iter()
            .find(|e| e.kind == kind && e.name == name)
            .map(|e| e.reason.as_str())
    }
}

/// A rendered gateway config.
#[derive(Clone, Debug, PartialEq)]
pub struct RenderedConfig {
    /// The multi-document YAML.
    pub yaml: String,
    /// A short hash of `yaml` for the pod template annotation.
    pub hash: String,
    /// Resources left out of the file.
    pub excluded: Vec<Excluded>,
    /// Environment variables the gateway pod needs from Secrets: (variable, Secret, key),
    /// e.g. the secret keys of bucket members given by `secretRef`.
    pub secret_env: Vec<(String, String, String)>,
    /// Market CAs the gateway pod needs from Secrets: (pool, Secret, key), each mounted at
    /// [`market_ca_file`] of its pool, which the config names as the pool's `caFile`.
    pub market_ca: Vec<(String, String, String)>,
}

/// The environment variable carrying the secret key of bucket member `member` of `pool`.
pub fn bucket_secret_env(pool: &str, member: &str) -> String {
    let name: String = format!("{pool}_{member}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("SUBLET_BUCKET_SECRET_{name}")
}

/// `pool` as a standalone gateway sees it: every in-cluster member the operator has an
/// address and a node id for listed as an endpoint with that node id pinned and its zone;
/// `nodes` only while there is none (providers pending, which `sublet serve` places
/// nothing on).
pub fn standalone_pool(pool: &ProviderPool) -> ProviderPool {
    let mut endpoints = pool.spec.endpoints.clone();
    if pool.spec.nodes.is_some()
        && let Some(status) = &pool.status
    {
        for member in &status.members {
            // A provider is listed once it printed its node id: an endpoint without one
            // would let any machine at that address pose as it.
            if member.address.is_empty()
                || member.node_id.is_empty()
                || endpoints.iter().any(|e| e.name == member.name)
            {
                continue;
            }
            endpoints.push(Endpoint {
                name: member.name.clone(),
                address: member.address.clone(),
                node_id: Some(member.node_id.clone()),
                zone: (!member.zone.is_empty()).then(|| member.zone.clone()),
                owner: None,
            });
        }
    }
    // Until one of its provider pods is identified an in-cluster pool keeps its `nodes`:
    // the loader accepts it and so the plans placing there, and the gateway runs (placing
    // nothing there yet) instead of waiting for every provider before it makes anything.
    let nodes = pool.spec.nodes.clone().filter(|_| endpoints.is_empty());
    ProviderPool::new(
        &pool.name_any(),
        ProviderPoolSpec {
            class: pool.spec.class,
            owner: pool.spec.owner.clone(),
            nodes,
            endpoints,
            // A secretRef becomes the environment variable the pod gets it in.
            buckets: pool
                .spec
                .buckets
                .iter()
                .map(|b| {
                    let mut b = b.clone();
                    if b.secret_ref.take().is_some() {
                        b.secret_key_env = Some(bucket_secret_env(&pool.name_any(), &b.name));
                    }
                    b
                })
                .collect(),
            // A deleted pool is held by its finalizer until the gateways moved its shards.
            drain: (pool.metadata.deletion_timestamp.is_some() || pool.spec.drain == Some(true))
                .then_some(true),
            // The provider pods publish the offer; the gateway has no use for it.
            offer: None,
            // The gateway contracts market providers itself; a caSecretRef becomes the file
            // the pod gets it in.
            market: pool.spec.market.clone().map(|mut m| {
                if m.ca_secret_ref.take().is_some() {
                    m.ca_file = Some(market_ca_file(&pool.name_any()));
                }
                m
            }),
        },
    )
}

fn standalone_plan(plan: &StoragePlan) -> StoragePlan {
    StoragePlan::new(&plan.name_any(), plan.spec.clone())
}

fn standalone_schedule(schedule: &StorageSchedule) -> StorageSchedule {
    StorageSchedule::new(&schedule.name_any(), schedule.spec.clone())
}

/// `gateway` as `sublet serve` runs it in a pod: listening on the Service port, data and
/// master key at the pod's paths. Keys and the provider token come from the environment
/// (Secrets), never from the ConfigMap, so `credentials` and `providerToken` are dropped.
pub fn standalone_gateway(gateway: &StorageGateway) -> StorageGateway {
    let mut spec = gateway.spec.clone();
    spec.listen = Some(format!("0.0.0.0:{}", spec.service.port));
    spec.admin_listen = Some(format!("0.0.0.0:{GATEWAY_ADMIN_PORT}"));
    spec.data_dir = Some(GATEWAY_DATA_DIR.into());
    spec.master_key_file = Some(format!("{KEYS_DIR}/{MASTER_KEY_FILE}"));
    spec.credentials.clear();
    spec.provider_token = None;
    StorageGateway::new(&gateway.name_any(), spec)
}

/// Chooses what goes into a config: every resource of `inventory` the standalone loader
/// accepts together with the others (and with `gateway`, when given, whose own problems
/// are returned as an error rather than excluding it).
pub fn select(
    inventory: Inventory<'_>,
    gateway: Option<&StorageGateway>,
) -> Result<Selection, String> {
    let pools: BTreeMap<String, ProviderPool> = inventory
        .pools
        .iter()
        .map(|p| (p.name_any(), standalone_pool(p)))
        .collect();
    let schedules: BTreeMap<String, StorageSchedule> = inventory
        .schedules
        .iter()
        .map(|s| (s.name_any(), standalone_schedule(s)))
        .collect();
    let plans: BTreeMap<String, StoragePlan> = inventory
        .plans
        .iter()
        .map(|p| (p.name_any(), standalone_plan(p)))
        .collect();
    let gateway = gateway.map(standalone_gateway);
    let mut excluded: BTreeMap<(String, String), String> = BTreeMap::new();
    loop {
        let keep =
            |kind: &str, name: &String| !excluded.contains_key(&(kind.to_owned(), name.clone()));
        let selection = Selection {
            pools: pools
                .iter()
                .filter(|(n, _)| keep("ProviderPool", n))
                .map(|(_, p)| p.clone())
                .collect(),
            schedules: schedules
                .iter()
                .filter(|(n, _)| keep("StorageSchedule", n))
                .map(|(_, s)| s.clone())
                .collect(),
            plans: plans
                .iter()
                .filter(|(n, _)| keep("StoragePlan", n))
                .map(|(_, p)| p.clone())
                .collect(),
            excluded: Vec::new(),
        };
        let yaml = to_yaml(&selection, gateway.as_ref())?;
        if yaml.is_empty() {
            return Ok(finish(selection, &excluded));
        }
        let errors = match sublet_crds::load_str(CONFIG_FILE, &yaml) {
            Ok(_) => return Ok(finish(selection, &excluded)),
            Err(errors) => errors.0,
        };
        let mut progressed = false;
        let mut gateway_problems = Vec::new();
        for error in errors {
            let reason = match &error.field {
                Some(field) => format!("{field}: {}", error.message),
                None => error.message.clone(),
            };
            match (error.kind.as_deref(), error.name.clone()) {
                (Some(kind @ ("ProviderPool" | "StoragePlan" | "StorageSchedule")), Some(name)) => {
                    let reason = rephrase(&reason, &excluded);
                    excluded.entry((kind.to_owned(), name)).or_insert(reason);
                    progressed = true;
                }
                _ => gateway_problems.push(reason),
            }
        }
        if !progressed {
            let problems: Vec<String> = gateway_problems
                .iter()
                .map(|r| rephrase(r, &excluded))
                .collect();
            return Err(problems.join("; "));
        }
    }
}

fn finish(mut selection: Selection, excluded: &BTreeMap<(String, String), String>) -> Selection {
    selection.excluded = excluded
        .iter()
        .map(|((kind, name), reason)| Excluded {
            kind: kind.clone(),
            name: name.clone(),
            reason: reason.clone(),
        })
        .collect();
    selection
}

/// The loader speaks of "this file"; in a cluster the resources are the namespace's, and a
/// reference to a resource that was left out should say why it was.
fn rephrase(reason: &str, excluded: &BTreeMap<(String, String), String>) -> String {
    for kind in ["ProviderPool", "StorageSchedule", "StoragePlan"] {
        let marker = format!("no {kind} named \"");
        let Some(start) = reason.find(&marker) else {
            continue;
        };
        let rest = &reason[start + marker.len()..];
        let Some(end) = rest.find('"') else {
            continue;
        };
        let name = &rest[..end];
        if let Some(why) = excluded.get(&(kind.to_owned(), name.to_owned())) {
            return format!(
                "{}{kind} \"{name}\" is left out of the config ({why})",
                &reason[..start]
            );
        }
    }
    reason.replace(" in this file (", " in this namespace (")
}

fn to_yaml(selection: &Selection, gateway: Option<&StorageGateway>) -> Result<String, String> {
    let mut docs = Vec::new();
    let mut push = |doc: Result<String, serde_yaml::Error>| -> Result<(), String> {
        docs.push(doc.map_err(|e| format!("cannot serialize the config: {e}"))?);
        Ok(())
    };
    for pool in &selection.pools {
        push(serde_yaml::to_string(pool))?;
    }
    for schedule in &selection.schedules {
        push(serde_yaml::to_string(schedule))?;
    }
    for plan in &selection.plans {
        push(serde_yaml::to_string(plan))?;
    }
    if let Some(gateway) = gateway {
        push(serde_yaml::to_string(gateway))?;
    }
    Ok(docs.join("---\n"))
}

/// Renders the config for `gateway` from `inventory`. Fails, naming the problem, when the
/// gateway itself would not load (e.g. its default plan is left out).
pub fn render_config(gateway: &StorageGateway, inventory: Inventory<'_>) -> Result<RenderedConfig> {
    let config_error = |message: String| Error::Config {
        gateway: gateway.name_any(),
        message,
    };
    let selection = select(inventory, Some(gateway)).map_err(config_error)?;
    let header = format!(
        "# Rendered by sublet-operator from the sublet resources of namespace {}; edits are overwritten.\n",
        gateway.namespace().unwrap_or_default()
    );
    let body = to_yaml(&selection, Some(&standalone_gateway(gateway))).map_err(config_error)?;
    let yaml = format!("{header}{body}");
    let hash = blake3::hash(yaml.as_bytes()).to_hex()[..16].to_owned();
    let secret_env = selection
        .pools
        .iter()
        .flat_map(|p| {
            let original = inventory
                .pools
                .iter()
                .find(|o| o.name_any() == p.name_any());
            original
                .into_iter()
                .flat_map(|o| o.spec.buckets.iter())
                .filter_map(|b| {
                    let r = b.secret_ref.as_ref()?;
                    Some((
                        bucket_secret_env(&p.name_any(), &b.name),
                        r.name.clone(),
                        r.key.clone().unwrap_or_else(|| "secretKey".into()),
                    ))
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let market_ca = selection
        .pools
        .iter()
        .filter_map(|p| {
            let original = inventory
                .pools
                .iter()
                .find(|o| o.name_any() == p.name_any())?;
            let market = original.spec.market.as_ref()?;
            let secret = market.ca_secret_ref.as_ref()?;
            Some((
                p.name_any(),
                secret.name.clone(),
                market.ca_key()?.to_owned(),
            ))
        })
        .collect();
    Ok(RenderedConfig {
        yaml,
        hash,
        excluded: selection.excluded,
        secret_env,
        market_ca,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::testing::{gateway, plan, pool, pool_member, schedule};

    fn inventory_fixture() -> (Vec<ProviderPool>, Vec<StoragePlan>, Vec<StorageSchedule>) {
        let mut home = pool(
            "home-lab",
            "class: owned\nowner: alice\nnodes: {selector: {matchLabels: {sublet.dev/provider: \"true\"}}, storage: {hostPath: /var/lib/sublet, capacity: 500Gi}}",
        );
        home.status = Some(sublet_crds::ProviderPoolStatus {
            members: vec![
                pool_member("node-a", "https://10.0.0.1:7480", "aa", "kitchen", true),
                pool_member("node-b", "https://10.0.0.2:7480", "bb", "attic", true),
                // Not scheduled yet: no address, so not in the config.
                pool_member("node-c", "", "", "", false),
                // An address but no node id printed yet: never an unpinned endpoint.
                pool_member("node-d", "https://10.0.0.4:7480", "", "cellar", false),
            ],
            ..Default::default()
        });
        let friends = pool(
            "friends",
            "class: owned\nowner: bob\nendpoints: [{name: bob-nas, address: \"https://bob-nas.example:7480\", nodeId: b3f1, zone: bob-home}]",
        );
        let plans = vec![
            plan(
                "photos",
                "redundancy: {erasure: {dataShards: 2, parityShards: 1}}\nplacement: {pools: [{name: home-lab, minShards: 2}, {name: friends}]}\nschedule: nightly",
            ),
            plan(
                "broken",
                "redundancy: {erasure: {dataShards: 4, parityShards: 0}}",
            ),
        ];
        let schedules = vec![schedule("nightly", "rebuild: {minHealthyShards: 2}")];
        (vec![home, friends], plans, schedules)
    }

    #[test]
    fn config_holds_valid_resources_and_loads() {
        let (pools, plans, schedules) = inventory_fixture();
        let inventory = Inventory {
            pools: &pools,
            plans: &plans,
            schedules: &schedules,
        };
        let gw = gateway(
            "s3",
            "defaultPlan: photos\ncredentials: [{accessKey: abc, secretKey: 0123456789}]\nproviderToken: secret-token\ns3: {domains: [s3.example.org], trustedProxies: [10.42.0.0/16]}",
        );
        let rendered = render_config(&gw, inventory).unwrap();
        let config = sublet_crds::load_str("rendered", &rendered.yaml).unwrap();
        assert_eq!(config.plans.keys().collect::<Vec<_>>(), ["photos"]);
        let home = &config.pools["home-lab"].spec;
        assert!(home.nodes.is_none());
        assert_eq!(
            home.endpoints,
            [
                Endpoint {
                    name: "node-a".into(),
                    address: "https://10.0.0.1:7480".into(),
                    node_id: Some("aa".into()),
                    zone: Some("kitchen".into()),
                    owner: None,
                },
                Endpoint {
                    name: "node-b".into(),
                    address: "https://10.0.0.2:7480".into(),
                    node_id: Some("bb".into()),
                    zone: Some("attic".into()),
                    owner: None,
                },
            ]
        );
        assert_eq!(
            config.pools["friends"].spec.endpoints[0].node_id.as_deref(),
            Some("b3f1")
        );
        let g = &config.gateways["s3"].spec;
        assert_eq!(g.listen.as_deref(), Some("0.0.0.0:9000"));
        // Virtual-host domains reach the gateway's file.
        assert_eq!(
            g.s3.as_ref().map(|s3| s3.domains.clone()),
            Some(vec!["s3.example.org".to_owned()])
        );
        // So do the TLS-terminating proxies trusted with X-Forwarded-Proto (SSE-C).
        assert_eq!(
            g.s3.as_ref().map(|s3| s3.trusted_proxies.clone()),
            Some(vec!["10.42.0.0/16".to_owned()])
        );
        assert_eq!(
            g.master_key_file.as_deref(),
            Some("/etc/sublet-keys/master.key")
        );
        // Secrets never land in a ConfigMap.
        assert!(g.credentials.is_empty() && g.provider_token.is_none());
        assert!(!rendered.yaml.contains("0123456789") && !rendered.yaml.contains("secret-token"));
        assert!(!rendered.yaml.contains("namespace: "), "{}", rendered.yaml);
        assert_eq!(
            rendered.excluded,
            [Excluded {
                kind: "StoragePlan".into(),
                name: "broken".into(),
                reason: "spec.redundancy.erasure.parityShards: must be at least 1; without parity use replicas: 1".into(),
            }]
        );
        assert_eq!(rendered.hash.len(), 16);
    }

    #[test]
    fn deleted_pool_is_drained() {
        let (mut pools, plans, schedules) = inventory_fixture();
        pools[1].metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-11-28T02:00:00Z".parse().unwrap(),
            ));
        let gw = gateway("s3", "defaultPlan: photos");
        let rendered = render_config(
            &gw,
            Inventory {
                pools: &pools,
                plans: &plans,
                schedules: &schedules,
            },
        )
        .unwrap();
        let config = sublet_crds::load_str("rendered", &rendered.yaml).unwrap();
        assert_eq!(config.pools["friends"].spec.drain, Some(true));
        assert_eq!(config.pools["home-lab"].spec.drain, None);
    }

    #[test]
    fn hash_follows_the_content() {
        let (mut pools, plans, schedules) = inventory_fixture();
        let gw = gateway("s3", "defaultPlan: photos");
        let hash = |pools: &[ProviderPool]| {
            render_config(
                &gw,
                Inventory {
                    pools,
                    plans: &plans,
                    schedules: &schedules,
                },
            )
            .unwrap()
            .hash
        };
        let first = hash(&pools);
        assert_eq!(first, hash(&pools), "rendering is deterministic");
        pools[0].status.as_mut().unwrap().members[1].address = "https://10.0.0.9:7480".into();
        assert_ne!(first, hash(&pools), "a moved provider changes the config");
    }

    #[test]
    fn references_to_left_out_resources_say_why() {
        let (pools, mut plans, _) = inventory_fixture();
        let schedules = vec![schedule("nightly", "rebuild: {maxConcurrentJobs: 0}")];
        plans.push(plan(
            "lonely",
            "redundancy: {replicas: 1}\nplacement: {pools: [{name: nowhere}]}",
        ));
        let selection = select(
            Inventory {
                pools: &pools,
                plans: &plans,
                schedules: &schedules,
            },
            None,
        )
        .unwrap();
        assert_eq!(
            selection.reason("StorageSchedule", "nightly"),
            Some("spec.rebuild.maxConcurrentJobs: must be at least 1 (got 0)")
        );
        assert_eq!(
            selection.reason("StoragePlan", "photos"),
            Some(
                "spec.schedule: StorageSchedule \"nightly\" is left out of the config (spec.rebuild.maxConcurrentJobs: must be at least 1 (got 0))"
            )
        );
        assert_eq!(
            selection.reason("StoragePlan", "lonely"),
            Some(
                "spec.placement.pools[0].name: no ProviderPool named \"nowhere\" in this namespace (known: friends, home-lab); add it or fix the name"
            )
        );
        assert!(selection.plans.is_empty());
        assert_eq!(selection.pools.len(), 2);
    }

    /// Issue 28: a pool whose providers were not ready yet was dropped from the config, its
    /// plans with it, and the gateway made nothing.
    #[test]
    fn pool_whose_providers_are_pending_stays_with_its_plans() {
        let mut home = pool(
            "home-lab",
            "class: owned\nnodes: {selector: {}, storage: {hostPath: /x, capacity: 1Gi}}",
        );
        home.status = Some(sublet_crds::ProviderPoolStatus {
            // Scheduled, but its node id not printed yet.
            members: vec![pool_member(
                "node-a",
                "https://10.0.0.1:7480",
                "",
                "a",
                false,
            )],
            ..Default::default()
        });
        let plans = vec![plan(
            "p",
            "redundancy: {replicas: 1}\nplacement: {pools: [{name: home-lab}]}",
        )];
        let gw = gateway("s3", "defaultPlan: p");
        let rendered = render_config(
            &gw,
            Inventory {
                pools: &[home],
                plans: &plans,
                schedules: &[],
            },
        )
        .unwrap();
        assert!(rendered.excluded.is_empty(), "{:?}", rendered.excluded);
        let config = sublet_crds::load_str("rendered", &rendered.yaml).unwrap();
        let home = &config.pools["home-lab"].spec;
        assert!(
            home.endpoints.is_empty(),
            "never an endpoint without its node id"
        );
        assert!(home.nodes.is_some(), "{}", rendered.yaml);
        assert_eq!(config.plans.keys().collect::<Vec<_>>(), ["p"]);
    }

    #[test]
    fn gateway_whose_default_plan_is_left_out_is_an_error() {
        let (pools, plans, schedules) = inventory_fixture();
        let gw = gateway("s3", "defaultPlan: broken");
        let err = render_config(
            &gw,
            Inventory {
                pools: &pools,
                plans: &plans,
                schedules: &schedules,
            },
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot render the config of StorageGateway/s3: spec.defaultPlan: StoragePlan \"broken\" is left out of the config (spec.redundancy.erasure.parityShards: must be at least 1; without parity use replicas: 1)"
        );
    }

    #[test]
    fn bucket_secrets_from_secrets_become_pod_environment() {
        let (mut pools, plans, schedules) = inventory_fixture();
        pools.push(pool(
            "cloud",
            "class: cloud\nbuckets:\n- {name: b2-eu, endpoint: \"https://s3.eu.example\", bucket: shards, accessKey: K, secretRef: {name: b2-keys}}",
        ));
        let gw = gateway("s3", "defaultPlan: photos");
        let out = render_config(
            &gw,
            Inventory {
                pools: &pools,
                plans: &plans,
                schedules: &schedules,
            },
        )
        .unwrap();
        assert!(
            out.excluded.iter().all(|e| e.kind != "ProviderPool"),
            "{:?}",
            out.excluded
        );
        assert!(!out.yaml.contains("secretRef"), "{}", out.yaml);
        assert!(
            out.yaml
                .contains("secretKeyEnv: SUBLET_BUCKET_SECRET_CLOUD_B2_EU"),
            "{}",
            out.yaml
        );
        assert_eq!(
            out.secret_env,
            [(
                "SUBLET_BUCKET_SECRET_CLOUD_B2_EU".to_string(),
                "b2-keys".to_string(),
                "secretKey".to_string()
            )]
        );
        let objects =
            crate::render::gateway::gateway_objects(&gw, &Default::default(), &out).unwrap();
        let json = match &objects.workload {
            crate::render::gateway::GatewayWorkload::StatefulSet(s) => serde_json::to_string(s),
            crate::render::gateway::GatewayWorkload::Deployment(d) => serde_json::to_string(d),
        }
        .unwrap();
        assert!(
            json.contains("SUBLET_BUCKET_SECRET_CLOUD_B2_EU") && json.contains("b2-keys"),
            "{json}"
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod examples {
    use super::*;
    use crate::testing::pool_member;

    /// Reads `crds/examples/` (one resource per file; `standalone.yaml` is for `sublet serve`).
    fn examples() -> (
        Vec<ProviderPool>,
        Vec<StoragePlan>,
        Vec<StorageSchedule>,
        Vec<StorageGateway>,
    ) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/examples");
        let (mut pools, mut plans, mut schedules, mut gateways) = (vec![], vec![], vec![], vec![]);
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for file in files {
            if file.file_name().is_some_and(|n| n == "standalone.yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap();
            let value: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
            let meta = |name: &str| kube::api::ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some("storage".into()),
                uid: Some(format!("uid-{name}")),
                ..Default::default()
            };
            let name = value["metadata"]["name"].as_str().unwrap().to_owned();
            match value["kind"].as_str().unwrap() {
                "ProviderPool" => {
                    let mut p: ProviderPool = serde_yaml::from_value(value).unwrap();
                    p.metadata = meta(&name);
                    pools.push(p);
                }
                "StoragePlan" => {
                    let mut p: StoragePlan = serde_yaml::from_value(value).unwrap();
                    p.metadata = meta(&name);
                    plans.push(p);
                }
                "StorageSchedule" => {
                    let mut s: StorageSchedule = serde_yaml::from_value(value).unwrap();
                    s.metadata = meta(&name);
                    schedules.push(s);
                }
                "StorageGateway" => {
                    let mut g: StorageGateway = serde_yaml::from_value(value).unwrap();
                    g.metadata = meta(&name);
                    gateways.push(g);
                }
                other => panic!("{}: unexpected kind {other}", file.display()),
            }
        }
        (pools, plans, schedules, gateways)
    }

    #[test]
    fn shipped_examples_render_into_a_config_the_gateway_loads() {
        let (mut pools, plans, schedules, gateways) = examples();
        assert_eq!(gateways.len(), 1);
        // What the pool controller reports once provider pods run on six labelled nodes.
        for pool in &mut pools {
            if pool.spec.nodes.is_some() {
                let name = pool.metadata.name.clone().unwrap();
                pool.status = Some(sublet_crds::ProviderPoolStatus {
                    members: (1..=6)
                        .map(|i| {
                            pool_member(
                                &format!("{name}-node-{i}"),
                                &format!("https://10.42.{i}.{}:7480", name.len()),
                                &format!("{i:032x}"),
                                &format!("zone-{i}"),
                                true,
                            )
                        })
                        .collect(),
                    ..Default::default()
                });
            }
        }
        let rendered = render_config(
            &gateways[0],
            Inventory {
                pools: &pools,
                plans: &plans,
                schedules: &schedules,
            },
        )
        .unwrap();
        assert_eq!(rendered.excluded, [], "{}", rendered.yaml);
        let config = sublet_crds::load_str("sublet.yaml", &rendered.yaml).unwrap();
        assert_eq!(config.plans.len(), plans.len());
        assert_eq!(config.pools.len(), pools.len());
        assert_eq!(config.pools["home-lab"].spec.endpoints.len(), 6);
        // The rented pool keeps its external endpoint next to its in-cluster members.
        assert_eq!(config.pools["rented"].spec.endpoints.len(), 7);
        assert_eq!(config.gateway().unwrap().spec.default_plan, "family-photos");
    }
}
