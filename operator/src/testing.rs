//! Builders for test objects: a spec in YAML, a name, and the metadata the API server would
//! have set (namespace `storage`, a uid, generation 1).
#![allow(clippy::unwrap_used)]

use kube::api::ObjectMeta;
use sublet_crds::{
    BucketClaim, PoolMember, ProviderPool, StorageGateway, StoragePlan, StorageSchedule,
};

/// The namespace every test object lives in.
pub const NS: &str = "storage";

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(NS.into()),
        uid: Some(format!("uid-{name}")),
        generation: Some(1),
        ..ObjectMeta::default()
    }
}

/// A ProviderPool named `name` with the spec in `spec_yaml`.
pub fn pool(name: &str, spec_yaml: &str) -> ProviderPool {
    let mut pool = ProviderPool::new(name, serde_yaml::from_str(spec_yaml).unwrap());
    pool.metadata = meta(name);
    pool
}

/// A StoragePlan named `name` with the spec in `spec_yaml`.
pub fn plan(name: &str, spec_yaml: &str) -> StoragePlan {
    let mut plan = StoragePlan::new(name, serde_yaml::from_str(spec_yaml).unwrap());
    plan.metadata = meta(name);
    plan
}

/// A StorageSchedule named `name` with the spec in `spec_yaml`.
pub fn schedule(name: &str, spec_yaml: &str) -> StorageSchedule {
    let mut schedule = StorageSchedule::new(name, serde_yaml::from_str(spec_yaml).unwrap());
    schedule.metadata = meta(name);
    schedule
}

/// A StorageGateway named `name` with the spec in `spec_yaml`.
pub fn gateway(name: &str, spec_yaml: &str) -> StorageGateway {
    let mut gateway = StorageGateway::new(name, serde_yaml::from_str(spec_yaml).unwrap());
    gateway.metadata = meta(name);
    gateway
}

/// A BucketClaim named `name` with the spec in `spec_yaml`, with a uid as the API server
/// gives (generated bucket names and key ids come from its hex digits).
pub fn bucket_claim(name: &str, spec_yaml: &str) -> BucketClaim {
    let mut claim = BucketClaim::new(name, serde_yaml::from_str(spec_yaml).unwrap());
    claim.metadata = meta(name);
    claim.metadata.uid = Some("0f1e2d3c-4b5a-4678-9abc-def012345678".into());
    claim
}

/// A pool member as the pool controller reports it.
pub fn pool_member(
    name: &str,
    address: &str,
    node_id: &str,
    zone: &str,
    ready: bool,
) -> PoolMember {
    PoolMember {
        name: name.into(),
        address: address.into(),
        node_id: node_id.into(),
        zone: zone.into(),
        ready,
        ..PoolMember::default()
    }
}
