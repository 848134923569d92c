//! Pure rendering: custom resources in, Kubernetes objects out. Nothing here talks to the
//! API server, so every object the operator applies is unit-tested here.

pub mod config;
pub mod gateway;
pub mod job;
pub mod provider;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, PodSecurityContext, SeccompProfile, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::{Error, Result};

/// `app.kubernetes.io/name` of provider pods.
pub const APP_PROVIDER: &str = "sublet-provider";
/// `app.kubernetes.io/name` of gateway pods.
pub const APP_GATEWAY: &str = "sublet-gateway";
/// `app.kubernetes.io/name` of rebuild Jobs.
pub const APP_REPAIR: &str = "sublet-repair";
/// Label naming the ProviderPool a provider pod belongs to.
pub const LABEL_POOL: &str = "sublet.dev/pool";
/// Label naming the StorageGateway a gateway pod belongs to.
pub const LABEL_GATEWAY: &str = "sublet.dev/gateway";
/// Label naming the StoragePlan a rebuild Job repairs.
pub const LABEL_PLAN: &str = "sublet.dev/plan";
/// Label naming the StorageSchedule whose `maxConcurrentJobs` a rebuild Job counts against.
pub const LABEL_SCHEDULE: &str = "sublet.dev/schedule";
/// Pod template annotation holding the hash of the gateway config, so a new config rolls
/// the gateway pods.
pub const ANNOTATION_CONFIG_HASH: &str = "sublet.dev/config-hash";

/// The provider's gRPC port.
pub const PROVIDER_GRPC_PORT: i32 = 7480;
/// The provider's HTTP port for `/metrics` and `/healthz`.
pub const PROVIDER_HTTP_PORT: i32 = 7481;
/// The gateway's admin API port (`/healthz`, `/metrics`, `/admin/v1/...`).
pub const GATEWAY_ADMIN_PORT: i32 = 9001;

/// The Secret holding the token gateways present to in-cluster providers (key `token`), one
/// per namespace, created when missing.
pub const PROVIDER_TOKEN_SECRET: &str = "sublet-provider-token";

/// The user and group the image runs as (see the Dockerfile).
pub const SUBLET_UID: i64 = 10001;

/// The pod security context of every pod the operator makes: the image's user, Secrets and
/// claims readable and writable through its group (a Secret mounted 0400 belongs to root
/// otherwise, and the gateway could not read its master key), the runtime's default seccomp
/// profile: what the `restricted` Pod Security Standard asks of a pod.
pub fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_user: Some(SUBLET_UID),
        run_as_group: Some(SUBLET_UID),
        run_as_non_root: Some(true),
        fs_group: Some(SUBLET_UID),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

/// The security context of every container running sublet: non-root, no privileges, no
/// capabilities (the `restricted` Pod Security Standard); `read_only_root` when the program
/// writes nowhere but its volumes.
pub fn container_security(read_only_root: bool) -> SecurityContext {
    SecurityContext {
        run_as_user: Some(SUBLET_UID),
        run_as_group: Some(SUBLET_UID),
        run_as_non_root: Some(true),
        read_only_root_filesystem: Some(read_only_root),
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..SecurityContext::default()
    }
}

/// Images and other settings of the pods the operator runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Images {
    /// Image running `sublet-provider`.
    pub provider: String,
    /// Image running `sublet serve` and `sublet repair`.
    pub gateway: String,
}

impl Default for Images {
    fn default() -> Self {
        Images {
            provider: crate::default_image(),
            gateway: crate::default_image(),
        }
    }
}

/// The labels every object for `instance` carries; the first three also select its pods.
pub fn labels(app: &str, instance: &str, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut labels = selector(app, instance);
    labels.insert(
        "app.kubernetes.io/managed-by".into(),
        crate::FIELD_MANAGER.into(),
    );
    for (k, v) in extra {
        labels.insert((*k).into(), (*v).into());
    }
    labels
}

/// The labels selecting the pods of `instance`.
pub fn selector(app: &str, instance: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), app.into()),
        ("app.kubernetes.io/instance".into(), instance.into()),
    ])
}

/// The controller owner reference to `owner`, so `kubectl delete` of the custom resource
/// removes what was made for it; with `blockOwnerDeletion`, so a foreground deletion of the
/// owner waits for it (kube's `controller_owner_ref` leaves that unset). Setting it needs
/// `update` on the owner's `finalizers` subresource (operator/rbac.yaml grants it).
pub fn owner_ref<K: Resource<DynamicType = ()>>(owner: &K) -> Result<OwnerReference> {
    let mut reference = owner
        .controller_owner_ref(&())
        .ok_or_else(|| Error::MissingField {
            kind: kind_of::<K>(),
            name: owner.name_any(),
            field: "metadata.uid",
        })?;
    reference.block_owner_deletion = Some(true);
    Ok(reference)
}

/// The namespace of `obj`, which every sublet kind has.
pub fn namespace_of<K: Resource<DynamicType = ()>>(obj: &K) -> Result<String> {
    obj.namespace().ok_or_else(|| Error::MissingField {
        kind: kind_of::<K>(),
        name: obj.name_any(),
        field: "metadata.namespace",
    })
}

/// The static kind name of `K`, for errors.
pub fn kind_of<K: Resource<DynamicType = ()>>() -> &'static str {
    // Resource::kind returns a Cow borrowed from a static str for static types.
    match K::kind(&()) {
        std::borrow::Cow::Borrowed(kind) => kind,
        std::borrow::Cow::Owned(_) => "object",
    }
}

/// Metadata of an object named `name` owned by `owner` in the owner's namespace.
pub fn owned_meta<K: Resource<DynamicType = ()>>(
    owner: &K,
    name: String,
    labels: BTreeMap<String, String>,
) -> Result<ObjectMeta> {
    Ok(ObjectMeta {
        name: Some(name),
        namespace: Some(namespace_of(owner)?),
        labels: Some(labels),
        owner_references: Some(vec![owner_ref(owner)?]),
        ..ObjectMeta::default()
    })
}

/// Makes `text` a DNS-1123 label: lowercase, other characters replaced by '-', at most 63.
pub fn dns_label(text: &str) -> String {
    let mapped: String = text
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed: String = mapped.trim_matches('-').chars().take(63).collect();
    let trimmed = trimmed.trim_end_matches('-').to_owned();
    if trimmed.is_empty() {
        "x".to_owned()
    } else {
        trimmed
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn owner_references_are_controllers_blocking_deletion() {
        let pool = crate::testing::pool("home-lab", "class: owned\nendpoints: []");
        let reference = owner_ref(&pool).unwrap();
        assert_eq!(reference.kind, "ProviderPool");
        assert_eq!(reference.controller, Some(true));
        assert_eq!(reference.block_owner_deletion, Some(true));
    }

    #[test]
    fn dns_labels() {
        assert_eq!(dns_label("node1.example.com"), "node1-example-com");
        assert_eq!(dns_label("Worker_2"), "worker-2");
        assert_eq!(dns_label("--"), "x");
        assert_eq!(dns_label(&"a".repeat(70)).len(), 63);
    }
}
