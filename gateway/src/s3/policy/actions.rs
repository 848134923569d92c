//! Which IAM action each S3 operation is, and the actions a policy may name.

/// Every action a bucket policy may name (a pattern must match one of them).
pub const ACTIONS: &[&str] = &[
    "s3:AbortMultipartUpload",
    "s3:CreateBucket",
    "s3:DeleteBucket",
    "s3:DeleteBucketPolicy",
    "s3:DeleteObject",
    "s3:DeleteObjectTagging",
    "s3:DeleteObjectVersion",
    "s3:DeleteObjectVersionTagging",
    "s3:GetBucketLocation",
    "s3:GetBucketObjectLockConfiguration",
    "s3:GetBucketPolicy",
    "s3:GetBucketPolicyStatus",
    "s3:GetBucketPublicAccessBlock",
    "s3:GetBucketTagging",
    "s3:GetBucketVersioning",
    "s3:GetLifecycleConfiguration",
    "s3:GetObject",
    "s3:GetObjectAttributes",
    "s3:GetObjectLegalHold",
    "s3:GetObjectRetention",
    "s3:GetObjectTagging",
    "s3:GetObjectVersion",
    "s3:GetObjectVersionAttributes",
    "s3:GetObjectVersionTagging",
    "s3:ListAllMyBuckets",
    "s3:ListBucket",
    "s3:ListBucketMultipartUploads",
    "s3:ListBucketVersions",
    "s3:ListMultipartUploadParts",
    "s3:PutBucketObjectLockConfiguration",
    "s3:PutBucketPolicy",
    "s3:PutBucketPublicAccessBlock",
    "s3:PutBucketTagging",
    "s3:PutBucketVersioning",
    "s3:PutLifecycleConfiguration",
    "s3:PutObject",
    "s3:PutObjectLegalHold",
    "s3:PutObjectRetention",
    "s3:PutObjectTagging",
    "s3:PutObjectVersionTagging",
    "s3:BypassGovernanceRetention",
    "s3:GetBucketAcl",
    "s3:PutBucketAcl",
    "s3:GetObjectAcl",
    "s3:PutObjectAcl",
    "s3:GetObjectVersionAcl",
    "s3:PutObjectVersionAcl",
    "s3:GetBucketOwnershipControls",
    "s3:PutBucketOwnershipControls",
];

/// The IAM action of the S3 operation `operation` (s3s's name); `versioned`: the request
/// names a version (`versionId`), which S3 checks as the `*Version*` action.
pub fn action_of(operation: &str, versioned: bool) -> String {
    let action = match (operation, versioned) {
        ("GetObject" | "HeadObject", false) => "s3:GetObject",
        ("GetObject" | "HeadObject", true) => "s3:GetObjectVersion",
        ("GetObjectAttributes", false) => "s3:GetObjectAttributes",
        ("GetObjectAttributes", true) => "s3:GetObjectVersionAttributes",
        ("DeleteObject", false) => "s3:DeleteObject",
        ("DeleteObject", true) => "s3:DeleteObjectVersion",
        ("DeleteObjects", _) => "s3:DeleteObject",
        ("GetObjectTagging", false) => "s3:GetObjectTagging",
        ("GetObjectTagging", true) => "s3:GetObjectVersionTagging",
        ("PutObjectTagging", false) => "s3:PutObjectTagging",
        ("PutObjectTagging", true) => "s3:PutObjectVersionTagging",
        ("DeleteObjectTagging", false) => "s3:DeleteObjectTagging",
        ("DeleteObjectTagging", true) => "s3:DeleteObjectVersionTagging",
        (
            "PutObject"
            | "CopyObject"
            | "CreateMultipartUpload"
            | "UploadPart"
            | "UploadPartCopy"
            | "CompleteMultipartUpload",
            _,
        ) => "s3:PutObject",
        ("GetObjectAcl", true) => "s3:GetObjectVersionAcl",
        ("PutObjectAcl", true) => "s3:PutObjectVersionAcl",
        ("DeleteBucketOwnershipControls", _) => "s3:PutBucketOwnershipControls",
        ("AbortMultipartUpload", _) => "s3:AbortMultipartUpload",
        ("ListParts", _) => "s3:ListMultipartUploadParts",
        ("ListMultipartUploads", _) => "s3:ListBucketMultipartUploads",
        ("ListObjects" | "ListObjectsV2" | "HeadBucket", _) => "s3:ListBucket",
        ("ListObjectVersions", _) => "s3:ListBucketVersions",
        ("ListBuckets", _) => "s3:ListAllMyBuckets",
        ("GetBucketLifecycleConfiguration" | "GetBucketLifecycle", _) => {
            "s3:GetLifecycleConfiguration"
        }
        ("PutBucketLifecycleConfiguration" | "PutBucketLifecycle" | "DeleteBucketLifecycle", _) => {
            "s3:PutLifecycleConfiguration"
        }
        ("DeleteBucketTagging", _) => "s3:PutBucketTagging",
        ("GetObjectLockConfiguration", _) => "s3:GetBucketObjectLockConfiguration",
        ("PutObjectLockConfiguration", _) => "s3:PutBucketObjectLockConfiguration",
        ("GetPublicAccessBlock", _) => "s3:GetBucketPublicAccessBlock",
        ("PutPublicAccessBlock" | "DeletePublicAccessBlock", _) => "s3:PutBucketPublicAccessBlock",
        // The rest are named as S3 names them: s3:GetBucketPolicy, s3:PutObjectRetention, ...
        (other, _) => return format!("s3:{other}"),
    };
    action.to_owned()
}

/// Whether `operation` manages the bucket's policy or public access block: what the
/// bucket owner may always do, whatever the policy says (S3's owner override).
pub fn is_policy_management(operation: &str) -> bool {
    matches!(
        operation,
        "GetBucketPolicy"
            | "PutBucketPolicy"
            | "DeleteBucketPolicy"
            | "GetBucketPolicyStatus"
            | "GetPublicAccessBlock"
            | "PutPublicAccessBlock"
            | "DeletePublicAccessBlock"
    )
}

/// Whether the operation acts on one object (its resource is `arn:aws:s3:::bucket/key`)
/// rather than on the bucket.
pub fn is_object_operation(operation: &str) -> bool {
    matches!(
        operation,
        "GetObject"
            | "HeadObject"
            | "GetObjectAttributes"
            | "PutObject"
            | "CopyObject"
            | "DeleteObject"
            | "GetObjectTagging"
            | "PutObjectTagging"
            | "DeleteObjectTagging"
            | "CreateMultipartUpload"
            | "UploadPart"
            | "UploadPartCopy"
            | "CompleteMultipartUpload"
            | "AbortMultipartUpload"
            | "ListParts"
            | "GetObjectRetention"
            | "PutObjectRetention"
            | "GetObjectLegalHold"
            | "PutObjectLegalHold"
            | "RestoreObject"
            | "GetObjectAcl"
            | "PutObjectAcl"
    )
}

/// The ARN of a bucket, or of one of its objects.
pub fn resource_arn(bucket: &str, key: Option<&str>) -> String {
    match key {
        Some(key) => format!("arn:aws:s3:::{bucket}/{key}"),
        None => format!("arn:aws:s3:::{bucket}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mapped_action_is_one_a_policy_may_name() {
        for op in [
            "GetObject",
            "HeadObject",
            "PutObject",
            "CopyObject",
            "DeleteObject",
            "DeleteObjects",
            "ListObjectsV2",
            "ListObjectVersions",
            "HeadBucket",
            "GetBucketPolicy",
            "PutBucketPolicy",
            "DeleteBucketPolicy",
            "GetBucketPolicyStatus",
            "PutPublicAccessBlock",
            "DeleteBucketLifecycle",
            "GetObjectRetention",
            "PutObjectLegalHold",
            "GetBucketVersioning",
            "GetBucketLocation",
            "CreateBucket",
            "DeleteBucket",
            "ListMultipartUploads",
            "ListParts",
        ] {
            for versioned in [false, true] {
                let a = action_of(op, versioned);
                assert!(ACTIONS.contains(&a.as_str()), "{op} → {a}");
            }
        }
        assert_eq!(action_of("HeadObject", false), "s3:GetObject");
        assert_eq!(action_of("GetObject", true), "s3:GetObjectVersion");
        assert_eq!(action_of("UploadPart", false), "s3:PutObject");
    }
}
