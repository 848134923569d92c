//! `BucketClaim`: a workload's request for a bucket of its own, the way a PersistentVolumeClaim
//! asks for a volume. The operator makes the bucket on a StorageGateway, a user and an access
//! key allowed only that bucket, and a Secret in the claim's namespace with what S3 clients
//! read (`AWS_ACCESS_KEY_ID`, `BUCKET_NAME`, ...), as Rook's ObjectBucketClaim does.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::condition::Condition;
use crate::size::ByteSize;
use crate::validate::{Problems, ValidationError, is_dns_subdomain};

/// A bucket, a key allowed only that bucket and a Secret holding both, for the workloads of a
/// namespace.
// Each printcolumn repeats `type_`, which clippy mistakes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "sublet.dev",
    version = "v1alpha1",
    kind = "BucketClaim",
    doc = "A bucket with its own access key, handed to a namespace's workloads in a Secret.",
    namespaced,
    status = "BucketClaimStatus",
    shortname = "bc",
    derive = "PartialEq",
    printcolumn(name = "Gateway", type_ = "string", json_path = ".spec.gateway"),
    printcolumn(name = "Bucket", type_ = "string", json_path = ".status.bucketName"),
    printcolumn(name = "Secret", type_ = "string", json_path = ".status.secretName"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Policy", type_ = "string", json_path = ".spec.deletionPolicy"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.bucketName) != has(self.generateBucketName)",
        "message": "set bucketName (e.g. photos) or generateBucketName (e.g. photos, giving photos-1a2b3c4d), not both"
    },
    {
        "rule": "has(self.bucketName) == has(oldSelf.bucketName) && (!has(self.bucketName) || self.bucketName == oldSelf.bucketName) && (!has(self.generateBucketName) || self.generateBucketName == oldSelf.generateBucketName)",
        "message": "bucketName and generateBucketName cannot change: they name the bound bucket; make a new claim"
    },
    {
        "rule": "self.gateway == oldSelf.gateway",
        "message": "gateway cannot change; make a new claim"
    }
]))]
pub struct BucketClaimSpec {
    /// The StorageGateway serving the bucket, in the claim's namespace.
    #[schemars(length(min = 1, max = 63))]
    pub gateway: String,
    /// The StoragePlan of the bucket's new objects (its default plan; a request naming a
    /// storage class still gets that one); the gateway's default plan when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// The bucket's exact name: 3 to 63 of `a-z 0-9 . -`. A bucket of that name belonging to
    /// someone else is never taken over: the claim stays Pending with reason `BucketTaken`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 3, max = 63),
        regex(pattern = r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$")
    )]
    pub bucket_name: Option<String>,
    /// A prefix for a generated name, `<prefix>-<8 hex digits of the claim's uid>`, so claims
    /// in many namespaces never collide. Set this or `bucketName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 54), regex(pattern = r"^[a-z0-9][a-z0-9.-]*$"))]
    pub generate_bucket_name: Option<String>,
    /// What deleting the claim does to the bucket: `Retain` (default) keeps bucket and
    /// objects and removes only the key; `Delete` deletes the bucket and the key, and waits
    /// while the bucket still holds objects (S3 refuses to delete a bucket that does).
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// The Secret the operator writes in the claim's namespace; default the claim's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: Option<String>,
    /// Limits on what the bucket holds; none when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<BucketQuota>,
}

/// What deleting a claim does to its bucket.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum DeletionPolicy {
    /// Keep the bucket and its objects; only the claim's key goes.
    #[default]
    Retain,
    /// Delete the bucket (once empty) and the key.
    Delete,
}

/// Limits on a claimed bucket, enforced by the gateway as the quotas of the claim's user.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BucketQuota {
    /// Bytes the bucket may hold, e.g. `50Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<ByteSize>,
    /// Objects the bucket may hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_objects: Option<u64>,
}

/// What the operator made for a claim.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BucketClaimStatus {
    /// `Pending`, `Bound`, `Deleting` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// `Bound` and other conditions.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The bucket bound to the claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_name: Option<String>,
    /// The Secret holding the key and endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// The gateway user owning the bucket (its quotas are the claim's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The access key id in the Secret (never the secret key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
}

/// Longest `generateBucketName`: with `-` and 8 hex digits it makes 63.
pub const MAX_GENERATE_PREFIX: usize = 54;

impl BucketClaimSpec {
    /// Every problem with this spec, each with its field path and a fix.
    pub fn validate(&self) -> Vec<ValidationError> {
        let mut p = Problems::default();
        p.name("spec.gateway", &self.gateway);
        if let Some(plan) = &self.plan {
            p.name("spec.plan", plan);
        }
        match (&self.bucket_name, &self.generate_bucket_name) {
            (Some(_), Some(_)) => p.add(
                "spec.bucketName",
                "set bucketName or generateBucketName, not both",
            ),
            (None, None) => p.add(
                "spec.bucketName",
                "set bucketName (e.g. photos) or generateBucketName (e.g. photos)",
            ),
            (Some(name), None) => {
                if !is_bucket_name(name) {
                    p.add(
                        "spec.bucketName",
                        format!(
                            "{name:?} is not a bucket name; use 3 to 63 of a-z 0-9 . - starting \
                             and ending with a letter or digit (e.g. photos)"
                        ),
                    );
                }
            }
            (None, Some(prefix)) => {
                if prefix.is_empty()
                    || prefix.len() > MAX_GENERATE_PREFIX
                    || !is_bucket_name(&format!("{prefix}-00000000"))
                {
                    p.add(
                        "spec.generateBucketName",
                        format!(
                            "{prefix:?} is not a bucket name prefix; use 1 to \
                             {MAX_GENERATE_PREFIX} of a-z 0-9 . - starting with a letter or digit"
                        ),
                    );
                }
            }
        }
        if let Some(secret) = &self.secret_name
            && !is_dns_subdomain(secret)
        {
            p.add(
                "spec.secretName",
                format!(
                    "{secret:?} is not a Secret name; use lowercase letters, digits, '-' and '.'"
                ),
            );
        }
        if let Some(quota) = &self.quota {
            if quota.max_bytes.as_ref().is_some_and(|b| b.bytes() == 0) {
                p.add("spec.quota.maxBytes", "must be more than 0 (e.g. 50Gi)");
            }
            if quota.max_objects == Some(0) {
                p.add("spec.quota.maxObjects", "must be more than 0 (e.g. 100000)");
            }
        }
        p.0
    }
}

impl BucketClaim {
    /// The bucket this claim binds: `spec.bucketName`, or the prefix with 8 hex digits of the
    /// claim's uid (stable for the claim's life, so a retried create finds its own bucket).
    /// `None` when neither can be had (no uid yet).
    pub fn bucket(&self) -> Option<String> {
        if let Some(name) = &self.spec.bucket_name {
            return Some(name.clone());
        }
        let prefix = self.spec.generate_bucket_name.as_deref()?;
        let uid = self.metadata.uid.as_deref()?;
        let hex: String = uid
            .chars()
            .filter(char::is_ascii_hexdigit)
            .map(|c| c.to_ascii_lowercase())
            .take(8)
            .collect();
        (hex.len() == 8).then(|| format!("{prefix}-{hex}"))
    }

    /// The Secret the operator writes: `spec.secretName` or the claim's name.
    pub fn secret(&self) -> String {
        self.spec
            .secret_name
            .clone()
            .unwrap_or_else(|| self.metadata.name.clone().unwrap_or_default())
    }
}

/// S3's bucket name rule as sublet keeps it: 3 to 63 of `a-z 0-9 . -`, starting and ending
/// with a letter or digit.
pub fn is_bucket_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn claim(yaml: &str) -> BucketClaim {
        let mut c = BucketClaim::new("photos", serde_yaml::from_str(yaml).unwrap());
        c.metadata.uid = Some("1A2B3C4D-0000-4000-8000-000000000000".into());
        c
    }

    #[test]
    fn a_minimal_claim_is_valid_and_retains_by_default() {
        let c = claim("gateway: s3\nbucketName: photos\n");
        assert!(c.spec.validate().is_empty(), "{:?}", c.spec.validate());
        assert_eq!(c.spec.deletion_policy, DeletionPolicy::Retain);
        assert_eq!(c.bucket().as_deref(), Some("photos"));
        assert_eq!(c.secret(), "photos");
    }

    #[test]
    fn generated_names_come_from_the_uid() {
        let c = claim("gateway: s3\ngenerateBucketName: app-data\n");
        assert!(c.spec.validate().is_empty());
        assert_eq!(c.bucket().as_deref(), Some("app-data-1a2b3c4d"));
        let mut no_uid = c.clone();
        no_uid.metadata.uid = None;
        assert_eq!(no_uid.bucket(), None);
    }

    #[test]
    fn every_problem_is_named_with_its_field() {
        let c = claim(
            "gateway: S3\nbucketName: Bad_Bucket\ngenerateBucketName: x\nplan: Photos\n\
             secretName: 'no/slash'\nquota: {maxBytes: 0, maxObjects: 0}\ndeletionPolicy: Delete\n",
        );
        let fields: Vec<String> = c.spec.validate().into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "spec.gateway",
                "spec.plan",
                "spec.bucketName",
                "spec.secretName",
                "spec.quota.maxBytes",
                "spec.quota.maxObjects"
            ]
        );
        let none = claim("gateway: s3\n");
        assert_eq!(none.spec.validate()[0].field, "spec.bucketName");
        let bad_name = claim("gateway: s3\nbucketName: -photos\n");
        assert!(
            bad_name.spec.validate()[0]
                .message
                .contains("is not a bucket name"),
            "{:?}",
            bad_name.spec.validate()
        );
        let long = claim(&format!(
            "gateway: s3\ngenerateBucketName: {}\n",
            "a".repeat(55)
        ));
        assert_eq!(long.spec.validate()[0].field, "spec.generateBucketName");
    }

    #[test]
    fn unknown_deletion_policies_do_not_parse() {
        let err = serde_yaml::from_str::<BucketClaimSpec>(
            "gateway: s3\nbucketName: photos\ndeletionPolicy: Recycle\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("Recycle"), "{err}");
    }
}
