//! The sublet API: custom resource types, their validation and the standalone loader.
//!
//! The kinds (`ProviderPool`, `StoragePlan`, `StorageSchedule`, `StorageGateway`, and in
//! Kubernetes only `BucketClaim`) live in API group `sublet.dev`, version `v1alpha1`. The
//! same types are read from Kubernetes by the operator and, but for BucketClaims, from a
//! multi-document YAML file by a standalone gateway ([`load_file`]).
//!
//! ```no_run
//! let config = sublet_crds::load_file("sublet.yaml").unwrap_or_else(|errors| {
//!     // One line per problem: `sublet.yaml: document 2 (StoragePlan/photos): spec.segmentSize: ...`
//!     eprintln!("{errors}");
//!     std::process::exit(2);
//! });
//! let plan = &config.plans["family-photos"].spec;
//! assert_eq!(plan.redundancy_label(), "EC 4+2");
//! ```

pub mod bucketclaim;
pub mod condition;
pub mod crdgen;
pub mod duration;
pub mod error;
pub mod gateway;
pub mod loader;
pub mod offer;
pub mod plan;
pub mod pool;
pub mod schedule;
pub mod size;
pub mod validate;

pub use bucketclaim::{
    BucketClaim, BucketClaimSpec, BucketClaimStatus, BucketQuota, DeletionPolicy, is_bucket_name,
};
pub use condition::{Condition, ConditionStatus, find_condition, set_condition};
pub use duration::Duration;
pub use error::{Error, Result};
pub use gateway::{
    Access, BucketGrant, ClientLimits, GatewayCredential, GatewayTls, MetadataStore,
    PostgresMetadata, S3Addressing, SecretRef, ServiceSpec, ServiceType, SqliteMetadata,
    StorageGateway, StorageGatewaySpec, StorageGatewayStatus,
};
pub use gateway::{DEFAULT_METADATA_POOL_SIZE, DEFAULT_METADATA_POOL_WAIT_SECS};
pub use loader::{Config, LoadError, LoadErrors, load_file, load_str};
pub use offer::MarketOffer;
pub use plan::{
    Encryption, Erasure, Placement, PoolLimit, Redundancy, ShardCounts, SpreadBy, StoragePlan,
    StoragePlanSpec, StoragePlanStatus,
};
pub use pool::{
    BucketMember, DrainProgress, Endpoint, MarketPool, NodeSelector, NodeStorage, PoolClass,
    PoolMember, PoolNodes, ProviderPool, ProviderPoolSpec, ProviderPoolStatus, VolumeClaimTemplate,
};
pub use schedule::{
    Audit, LifecycleFilter, LifecycleRule, Rebuild, RebuildWindow, Scrub, StorageSchedule,
    StorageScheduleSpec, StorageScheduleStatus,
};
pub use size::ByteSize;
pub use validate::ValidationError;

/// The API group of every sublet kind.
pub const GROUP: &str = "sublet.dev";
/// The API version of every sublet kind.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` as written in manifests.
pub const API_VERSION: &str = "sublet.dev/v1alpha1";
