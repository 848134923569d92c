//! A configuration (the file, layered with what the policy API applied) as the node's
//! objects: plans, provider endpoints and their sites, placement topology, and the rebuild,
//! audit and lifecycle rules of the plans' schedules.

use std::collections::{HashMap, HashSet};

use anyhow::{Context, bail};
use sublet_crds::{Config, Encryption, StoragePlanSpec};
use sublet_provider::identity::NodeId;

use super::Plan;
use super::health::RebuildPolicy;
use super::rules::AuditPolicy;
use crate::datapath::cloud::BucketTarget;
use crate::datapath::layout::Scheme;
use crate::datapath::placement::{PlacementRule, Site, Topology};

/// The plan a StoragePlan describes.
pub fn plan_from_spec(name: &str, spec: &StoragePlanSpec) -> anyhow::Result<Plan> {
    let small = |n: u32, field: &str| {
        u16::try_from(n).with_context(|| format!("plan {name}: {field} {n} is too large"))
    };
    let scheme = match (&spec.redundancy.erasure, spec.redundancy.replicas) {
        (Some(ec), _) => Scheme::Erasure {
            data: small(ec.data_shards, "dataShards")?,
            parity: small(ec.parity_shards, "parityShards")?,
        },
        (None, Some(copies)) => Scheme::Replicas {
            copies: small(copies, "replicas")?,
        },
        (None, None) => bail!("plan {name}: set erasure or replicas"),
    };
    Ok(Plan {
        name: name.to_owned(),
        scheme,
        encrypt: spec.encryption == Encryption::Aes256Gcm,
        segment_size: spec.segment_size.bytes(),
        write_quorum: usize::try_from(spec.write_quorum())?,
        inline_up_to: spec.inline_up_to(),
    })
}

/// Every plan of the file, the gateway's default plan first (the gateway treats the first
/// as its default).
pub fn plans(config: &Config, default_plan: &str) -> anyhow::Result<Vec<Plan>> {
    let mut plans = Vec::with_capacity(config.plans.len());
    for (name, plan) in &config.plans {
        plans.push(plan_from_spec(name, &plan.spec)?);
    }
    let Some(first) = plans.iter().position(|p| p.name == default_plan) else {
        bail!("the default plan {default_plan} is not in the file");
    };
    plans.swap(0, first);
    Ok(plans)
}

/// One provider to dial: where, which node id to pin, and where it sits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderEndpoint {
    pub name: String,
    pub address: String,
    pub node_id: NodeId,
    pub site: Site,
}

/// The providers of every ProviderPool endpoint. Endpoints must pin their node id: the
/// gateway refuses to talk to a provider it cannot authenticate.
pub fn endpoints(config: &Config) -> anyhow::Result<Vec<ProviderEndpoint>> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut problems = Vec::new();
    for (pool_name, pool) in &config.pools {
        if pool.spec.nodes.is_some() && pool.spec.endpoints.is_empty() {
            tracing::warn!(
                pool = pool_name,
                "pool has only in-cluster nodes, which sublet serve does not run; it gets no shards"
            );
        }
        let owner = pool.spec.owner.clone().unwrap_or_else(|| pool_name.clone());
        for e in &pool.spec.endpoints {
            let at = format!("ProviderPool {pool_name}: endpoint {}", e.name);
            let Some(id) = &e.node_id else {
                problems.push(format!(
                    "{at}: nodeId is missing; sublet serve pins every provider, so paste the id \
                     `sublet-provider --data-dir DIR --print-node-id` prints"
                ));
                continue;
            };
            let node_id: NodeId = match id.parse() {
                Ok(id) => id,
                Err(err) => {
                    problems.push(format!("{at}: nodeId: {err}"));
                    continue;
                }
            };
            if !seen.insert(node_id) {
                problems.push(format!(
                    "{at}: node id {node_id} is listed twice; each provider may appear once"
                ));
                continue;
            }
            out.push(ProviderEndpoint {
                name: e.name.clone(),
                address: e.address.clone(),
                node_id,
                site: Site {
                    node_id: node_id.to_string(),
                    pool: pool_name.clone(),
                    zone: e.zone.clone().unwrap_or_else(|| e.name.clone()),
                    owner: e.owner.clone().unwrap_or_else(|| owner.clone()),
                },
            });
        }
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    Ok(out)
}

/// The lifecycle rules of each plan's StorageSchedule.
pub fn lifecycle_rules(config: &Config) -> crate::node::rules::PlanRules {
    config
        .plans
        .iter()
        .filter_map(|(name, plan)| {
            let schedule = config.schedules.get(plan.spec.schedule.as_ref()?)?;
            let rules: Vec<_> = schedule
                .spec
                .lifecycle
                .iter()
                .map(crate::node::rules::Rule::from_schedule)
                .collect();
            (!rules.is_empty()).then(|| (name.clone(), rules))
        })
        .collect()
}

/// Where providers sit and every plan's placement rule.
pub fn topology(config: &Config, endpoints: &[ProviderEndpoint]) -> Topology {
    Topology {
        sites: endpoints
            .iter()
            .map(|e| e.site.clone())
            .chain(cloud_sites(config).into_iter().map(|(site, _)| site))
            .collect(),
        rules: config
            .plans
            .iter()
            .map(|(name, plan)| (name.clone(), PlacementRule::from_spec(&plan.spec)))
            .collect(),
        draining: draining_pools(config),
    }
}

/// The pools marked `drain: true`: no new shards go there and their shards are moved off.
pub fn draining_pools(config: &Config) -> std::collections::BTreeSet<String> {
    config
        .pools
        .iter()
        .filter(|(_, pool)| pool.spec.drain == Some(true))
        .map(|(name, _)| name.clone())
        .collect()
}

/// Where each bucket member of every pool sits, with its bucket (secret left empty).
pub(crate) fn cloud_sites(config: &Config) -> Vec<(Site, BucketTarget)> {
    let mut out = Vec::new();
    for (pool_name, pool) in &config.pools {
        let owner = pool.spec.owner.clone().unwrap_or_else(|| pool_name.clone());
        for b in &pool.spec.buckets {
            let target = BucketTarget {
                endpoint: b.endpoint.trim_end_matches('/').to_string(),
                bucket: b.bucket.clone(),
                prefix: b.prefix().to_string(),
                region: b.region().to_string(),
                access_key: b.access_key.clone(),
                secret_key: String::new(),
            };
            let site = Site {
                node_id: target.node_id(),
                pool: pool_name.clone(),
                zone: b.zone.clone().unwrap_or_else(|| b.name.clone()),
                owner: owner.clone(),
            };
            out.push((site, target));
        }
    }
    out
}

/// The bucket members of every pool with their secrets read from file or environment.
pub fn cloud_members(config: &Config) -> anyhow::Result<Vec<(Site, BucketTarget)>> {
    let mut problems = Vec::new();
    let mut out = Vec::new();
    let members = config
        .pools
        .iter()
        .flat_map(|(pool, p)| p.spec.buckets.iter().map(move |b| (pool.clone(), b)));
    for ((site, mut target), (pool, member)) in cloud_sites(config).into_iter().zip(members) {
        let at = format!("ProviderPool {pool}: bucket {}", member.name);
        let secret = match (&member.secret_key_file, &member.secret_key_env) {
            (Some(file), None) => std::fs::read_to_string(file)
                .map(|s| s.trim().to_string())
                .map_err(|e| format!("{at}: secretKeyFile {file}: {e}")),
            (None, Some(var)) => std::env::var(var)
                .map(|s| s.trim().to_string())
                .map_err(|_| format!("{at}: secretKeyEnv: environment variable {var} is not set")),
            (None, None) if member.secret_ref.is_some() => Err(format!(
                "{at}: secretRef is read by the operator in Kubernetes; outside it use secretKeyFile or secretKeyEnv"
            )),
            _ => Err(format!(
                "{at}: set exactly one of secretKeyFile or secretKeyEnv"
            )),
        };
        match secret {
            Ok(s) if s.is_empty() => problems.push(format!("{at}: the secret key is empty")),
            Ok(s) => {
                target.secret_key = s;
                out.push((site, target));
            }
            Err(e) => problems.push(e),
        }
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    Ok(out)
}

/// Rebuild rules of every plan: its schedule's, or the defaults when it names none.
pub fn rebuild_policies(config: &Config) -> HashMap<String, RebuildPolicy> {
    config
        .plans
        .iter()
        .map(|(name, plan)| {
            let policy = plan
                .spec
                .schedule
                .as_ref()
                .and_then(|s| config.schedules.get(s))
                .map(|s| RebuildPolicy::from_schedule(&s.spec.rebuild))
                .unwrap_or_default();
            (name.clone(), policy)
        })
        .collect()
}

/// How often and how hard providers are audited: the tightest schedule any plan names.
pub fn audit_policy(config: &Config) -> AuditPolicy {
    AuditPolicy::tightest(
        config
            .plans
            .values()
            .filter_map(|p| p.spec.schedule.as_ref())
            .filter_map(|s| config.schedules.get(s))
            .map(|s| &s.spec.audit),
    )
}
