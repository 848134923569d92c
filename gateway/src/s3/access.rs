//! What the access decision knows beyond the key: each bucket's owner, policy and
//! PublicAccessBlock ([`BucketAccess`], read from the metadata store and kept for
//! [`FRESH_FOR`]), the connection a request came on ([`Connection`]), and the condition
//! keys of a request ([`context`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::policy::{self, Decision, Facts, Policy, PublicAccessBlock, Refusal};
use crate::meta::acl::{Acl, DEFAULT_OWNERSHIP, Ownership, Permission, Requester};
use crate::node::Node;
use crate::node::users::DEFAULT_USER;

/// How long a bucket's access facts are used before they are read again: a policy changed
/// through another gateway sharing the database takes effect here within this (as keys do).
pub const FRESH_FOR: Duration = crate::node::users::REFRESH_INTERVAL;

/// Buckets whose facts are kept at once; past this the cache starts over.
const MAX_CACHED: usize = 4096;

/// The connection a request arrived on, put into its extensions by the listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Connection {
    pub peer: SocketAddr,
    pub tls: bool,
}

/// What decides access to one bucket besides the key's grants.
#[derive(Debug, Default)]
pub struct BucketFacts {
    /// The owning user; `None` when there is no such bucket.
    pub owner: Option<String>,
    pub policy: Option<Arc<Policy>>,
    /// The stored policy does not parse (it was written by another version, or damaged):
    /// everything is refused but the owner's policy management, which can replace it.
    pub policy_broken: bool,
    pub block: PublicAccessBlock,
    /// The bucket's ACL as stored (`None`: `private`, which grants nobody but the owner).
    pub acl: Option<Arc<Acl>>,
    /// The bucket's object ownership ([`DEFAULT_OWNERSHIP`] when none is set).
    pub ownership: Option<Ownership>,
}

/// Which ACL permission lets `operation` through, and whether it is the object's ACL
/// (else the bucket's) that must grant it: S3's mapping of ACL permissions to operations.
pub fn acl_need(operation: &str) -> Option<(Permission, bool)> {
    Some(match operation {
        "ListObjects"
        | "ListObjectsV2"
        | "ListObjectVersions"
        | "ListMultipartUploads"
        | "HeadBucket" => (Permission::Read, false),
        "PutObject"
        | "PostObject"
        | "CopyObject"
        | "DeleteObject"
        | "DeleteObjects"
        | "CreateMultipartUpload"
        | "UploadPart"
        | "UploadPartCopy"
        | "CompleteMultipartUpload"
        | "AbortMultipartUpload"
        | "ListParts" => (Permission::Write, false),
        "GetBucketAcl" => (Permission::ReadAcp, false),
        "PutBucketAcl" => (Permission::WriteAcp, false),
        "GetObject" | "HeadObject" => (Permission::Read, true),
        "GetObjectAcl" => (Permission::ReadAcp, true),
        "PutObjectAcl" => (Permission::WriteAcp, true),
        _ => return None,
    })
}

impl BucketFacts {
    /// The ownership setting in force.
    pub fn ownership(&self) -> Ownership {
        self.ownership.unwrap_or(DEFAULT_OWNERSHIP)
    }

    /// Whether an ACL lets `user` run `operation`: the bucket's ACL, or `object_acl` (the
    /// version's, `None`: private) for object reads and ACL changes. Nothing with ACLs
    /// disabled (BucketOwnerEnforced); grants to the bucket's owner do not count (its
    /// keys' grants decide what they may do); public grants count for nothing under
    /// IgnorePublicAcls.
    pub fn acl_allows(
        &self,
        user: Option<&str>,
        operation: &str,
        object_acl: Option<&Acl>,
    ) -> bool {
        let Some((needed, on_object)) = acl_need(operation) else {
            return false;
        };
        if !self.ownership().acls_enabled() || self.owned_by(user) {
            return false;
        }
        let acl = if on_object {
            object_acl
        } else {
            self.acl.as_deref()
        };
        let requester = user.map_or(Requester::Anonymous, Requester::User);
        acl.is_some_and(|a| a.allows(requester, needed, self.block.ignore_public_acls))
    }

    /// Whether `user` owns the bucket.
    pub fn owned_by(&self, user: Option<&str>) -> bool {
        user.is_some() && self.owner.as_deref() == user
    }

    /// What the bucket's policy says of `req`.
    pub fn decision(&self, req: &policy::Request<'_>) -> Decision {
        if self.policy_broken {
            return Decision::Deny;
        }
        self.policy
            .as_ref()
            .map_or(Decision::Silent, |p| p.evaluate(req))
    }

    /// A public policy under RestrictPublicBuckets: it allows only the owner.
    pub fn restricted_public(&self) -> bool {
        self.block.restrict_public_buckets && self.policy.as_ref().is_some_and(|p| p.is_public())
    }
}

/// The access facts of every bucket, read on demand and kept for [`FRESH_FOR`].
pub struct BucketAccess {
    node: Arc<Node>,
    cache: Mutex<HashMap<String, (Instant, Arc<BucketFacts>)>>,
}

impl std::fmt::Debug for BucketAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BucketAccess").finish_non_exhaustive()
    }
}

impl BucketAccess {
    pub fn new(node: Arc<Node>) -> Self {
        BucketAccess {
            node,
            cache: Mutex::default(),
        }
    }

    /// The facts of `bucket`, from the cache while fresh.
    pub async fn facts(&self, bucket: &str) -> crate::error::Result<Arc<BucketFacts>> {
        if let Some((at, facts)) = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(bucket)
            && at.elapsed() < FRESH_FOR
        {
            return Ok(Arc::clone(facts));
        }
        let name = bucket.to_owned();
        let (found, policy, block, acl, ownership) = self
            .node
            .meta(move |m| {
                let Some(b) = m.bucket(&name)? else {
                    return Ok((None, None, None, None, None));
                };
                Ok((
                    Some(b),
                    m.bucket_policy(&name)?,
                    m.public_access_block(&name)?,
                    m.bucket_acl(&name)?,
                    m.bucket_ownership(&name)?,
                ))
            })
            .await?;
        let mut facts = BucketFacts::default();
        if let Some(b) = found {
            facts.owner = Some(b.owner.unwrap_or_else(|| DEFAULT_USER.to_owned()));
        }
        if let Some(text) = policy {
            match Policy::parse(&text, bucket) {
                Ok(p) => facts.policy = Some(Arc::new(p)),
                Err(e) => {
                    tracing::warn!(bucket, error = %e, "the stored bucket policy does not parse; the bucket is closed to all but its owner's policy changes");
                    facts.policy_broken = true;
                }
            }
        }
        if let Some(text) = block {
            facts.block = serde_json::from_str(&text).unwrap_or_else(|e| {
                tracing::warn!(bucket, error = %e, "the stored PublicAccessBlock does not parse; every setting is taken as on");
                PublicAccessBlock {
                    block_public_acls: true,
                    ignore_public_acls: true,
                    block_public_policy: true,
                    restrict_public_buckets: true,
                }
            });
        }
        if let Some(text) = acl {
            match serde_json::from_str::<Acl>(&text) {
                Ok(a) => facts.acl = Some(Arc::new(a)),
                Err(e) => {
                    tracing::warn!(bucket, error = %e, "the stored bucket ACL does not parse; it grants nothing");
                }
            }
        }
        if let Some(text) = ownership {
            // Unknown to this gateway: taken as BucketOwnerEnforced, so ACLs grant nothing.
            facts.ownership =
                Some(Ownership::parse(&text).unwrap_or(Ownership::BucketOwnerEnforced));
        }
        let facts = Arc::new(facts);
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(bucket.to_owned(), (Instant::now(), Arc::clone(&facts)));
        Ok(facts)
    }

    /// The ACL of the version `version_id` (`None`: the latest) of `key`, for the access
    /// check of object reads and ACL changes; `None` when there is no such object or it
    /// has no ACL of its own.
    pub async fn object_acl(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> crate::error::Result<Option<Acl>> {
        let (b, k, v) = (
            bucket.to_owned(),
            key.to_owned(),
            version_id.map(str::to_owned),
        );
        let found = self
            .node
            .meta(move |m| m.version(&b, &k, v.as_deref()))
            .await?;
        Ok(found.filter(|v| !v.delete_marker).and_then(|v| v.attrs.acl))
    }

    /// Drops what is known of `bucket` (its policy, block or existence changed here).
    pub fn forget(&self, bucket: &str) {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(bucket);
    }
}

/// The question asked of one bucket: who, what, on which resource.
#[derive(Clone, Debug)]
pub struct Ask<'a> {
    /// `None`: an unsigned request.
    pub user: Option<&'a str>,
    /// The key's grants allow the operation's need on the bucket (false when unsigned).
    pub grants_allow: bool,
    /// The key's grants cover every bucket for that need (operators' keys).
    pub grants_everywhere: bool,
    pub bucket: &'a str,
    pub key: Option<&'a str>,
    pub operation: &'a str,
    pub action: &'a str,
    pub context: &'a policy::Context,
    /// What the key's grants lack, worded for the client (`access key K may not write
    /// bucket B (PutObject)`); `None` when unsigned.
    pub grant_refusal: Option<&'a str>,
    /// The object's ACL, for object reads and ACL changes (`None`: not read, or none).
    pub object_acl: Option<&'a Acl>,
}

/// Decides `ask` against the bucket's facts; the error names what refused it.
pub fn judge(facts: &BucketFacts, ask: &Ask<'_>) -> Result<(), String> {
    let owner = facts.owned_by(ask.user);
    let policy_management = policy::actions::is_policy_management(ask.operation);
    // Policies and public access blocks are the owner's to manage (or an operator's key
    // with a grant on every bucket); a grant on the bucket alone does not reach them.
    let grants_allow = ask.grants_allow && (!policy_management || owner || ask.grants_everywhere);
    let resource = policy::actions::resource_arn(ask.bucket, ask.key);
    let decision = facts.decision(&policy::Request {
        user: ask.user,
        action: ask.action,
        resource: &resource,
        context: ask.context,
    });
    let verdict = policy::decide(
        decision,
        Facts {
            grants_allow,
            owner,
            policy_management,
            restricted_public: facts.restricted_public(),
            acl_allows: !policy_management
                && facts.acl_allows(ask.user, ask.operation, ask.object_acl),
        },
    );
    let who = ask
        .user
        .map_or_else(|| "anonymous requests".to_owned(), |u| format!("user {u}"));
    match verdict {
        Ok(()) => Ok(()),
        Err(Refusal::DeniedByPolicy) if facts.policy_broken => Err(format!(
            "the stored policy of bucket {} does not parse; only its owner may replace or delete it",
            ask.bucket
        )),
        Err(Refusal::DeniedByPolicy) => Err(format!(
            "the policy of bucket {} denies {} on {resource} to {who}",
            ask.bucket, ask.action
        )),
        Err(Refusal::NotAllowed) if ask.user.is_none() => Err(format!(
            "Signature is required: neither the policy nor an ACL of bucket {} allows {} on {resource} to anonymous requests",
            ask.bucket, ask.action
        )),
        Err(Refusal::NotAllowed) if policy_management && ask.grants_allow => Err(format!(
            "only the owner of bucket {} manages its policy and public access block ({})",
            ask.bucket, ask.operation
        )),
        Err(Refusal::NotAllowed) => Err(match (ask.grant_refusal, &facts.policy) {
            (Some(grants), None) => grants.to_owned(),
            (Some(grants), Some(_)) => format!(
                "{grants}, and no statement of the bucket's policy allows {} on {resource} to {who}",
                ask.action
            ),
            (None, _) => format!("{who} may not {} on {resource}", ask.action),
        }),
    }
}

/// Put into the extensions of a DeleteObjects request: the bucket's facts and who asks,
/// for the per-key decision S3 makes (`s3:DeleteObject` on each key).
#[derive(Clone, Debug)]
pub struct DeleteCheck {
    pub facts: Arc<BucketFacts>,
    pub user: Option<String>,
    pub grants_allow: bool,
    pub context: policy::Context,
}

impl DeleteCheck {
    /// Whether `key` (`version_id`: one version of it) may be deleted.
    pub fn allows(&self, bucket: &str, key: &str, version_id: Option<&str>) -> Result<(), String> {
        let action = policy::actions::action_of("DeleteObject", version_id.is_some());
        judge(
            &self.facts,
            &Ask {
                user: self.user.as_deref(),
                grants_allow: self.grants_allow,
                grants_everywhere: false,
                bucket,
                key: Some(key),
                operation: "DeleteObject",
                action: &action,
                context: &self.context,
                grant_refusal: self
                    .user
                    .as_ref()
                    .map(|_| "the key may not write the bucket (DeleteObject)"),
                object_acl: None,
            },
        )
    }
}

/// The value of query parameter `name`, decoded.
pub fn query_param(uri: &http::Uri, name: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (super::auth::percent_decoded(k) == name).then(|| super::auth::percent_decoded(v))
    })
}

/// The condition keys of a request (see [`policy::condition::KEYS`]).
pub fn context(
    headers: &http::HeaderMap,
    uri: &http::Uri,
    connection: Option<&Connection>,
    user: Option<&str>,
    now_ms: i64,
) -> policy::Context {
    let mut cx = policy::Context::default();
    if let Some(c) = connection {
        cx.set("aws:SourceIp", c.peer.ip().to_canonical().to_string())
            .set("aws:SecureTransport", c.tls.to_string());
    }
    let secs = now_ms.div_euclid(1000);
    cx.set("aws:CurrentTime", secs.to_string())
        .set("aws:EpochTime", secs.to_string());
    match user {
        Some(u) => {
            cx.set("aws:username", u)
                .set("aws:userid", u)
                .set("aws:PrincipalType", "User");
        }
        None => {
            cx.set("aws:PrincipalType", "Anonymous");
        }
    }
    for (key, header) in [
        ("aws:UserAgent", "user-agent"),
        ("aws:Referer", "referer"),
        ("s3:x-amz-acl", "x-amz-acl"),
        (
            "s3:x-amz-server-side-encryption",
            "x-amz-server-side-encryption",
        ),
        ("s3:x-amz-copy-source", "x-amz-copy-source"),
    ] {
        if let Some(v) = headers.get(header).and_then(|v| v.to_str().ok()) {
            cx.set(key, v);
        }
    }
    for (key, param) in [
        ("s3:prefix", "prefix"),
        ("s3:delimiter", "delimiter"),
        ("s3:max-keys", "max-keys"),
        ("s3:VersionId", "versionId"),
    ] {
        if let Some(v) = query_param(uri, param) {
            cx.set(key, v);
        }
    }
    let presigned = query_param(uri, "X-Amz-Signature").is_some();
    if user.is_some() {
        cx.set("s3:signatureversion", "AWS4-HMAC-SHA256").set(
            "s3:authType",
            if presigned {
                "REST-QUERY-STRING"
            } else {
                "REST-HEADER"
            },
        );
    }
    cx
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn facts(owner: &str, policy: Option<&str>, block: PublicAccessBlock) -> BucketFacts {
        BucketFacts {
            owner: Some(owner.into()),
            policy: policy.map(|p| Arc::new(Policy::parse(p, "photos").unwrap())),
            policy_broken: false,
            block,
            ..Default::default()
        }
    }

    fn ask<'a>(
        user: Option<&'a str>,
        grants: bool,
        op: &'a str,
        action: &'a str,
        key: Option<&'a str>,
        cx: &'a policy::Context,
    ) -> Ask<'a> {
        Ask {
            user,
            grants_allow: grants,
            grants_everywhere: false,
            bucket: "photos",
            key,
            operation: op,
            action,
            context: cx,
            grant_refusal: user.map(|_| "access key K may not read bucket photos (GetObject)"),
            object_acl: None,
        }
    }

    const PUBLIC: &str = r#"{"Statement": [
        {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::photos/public/*"},
        {"Effect": "Deny", "Principal": "*", "Action": "s3:*", "Resource": ["arn:aws:s3:::photos", "arn:aws:s3:::photos/*"]
         , "Condition": {"StringEquals": {"aws:username": "mallory"}}}]}"#;

    #[test]
    fn anonymous_reads_only_what_the_policy_opens() {
        let cx = policy::Context::default();
        let f = facts("alice", Some(PUBLIC), PublicAccessBlock::default());
        assert!(
            judge(
                &f,
                &ask(
                    None,
                    false,
                    "GetObject",
                    "s3:GetObject",
                    Some("public/a.html"),
                    &cx
                )
            )
            .is_ok()
        );
        let e = judge(
            &f,
            &ask(
                None,
                false,
                "GetObject",
                "s3:GetObject",
                Some("private/a"),
                &cx,
            ),
        )
        .unwrap_err();
        assert!(
            e.starts_with("Signature is required: neither the policy nor an ACL of bucket photos allows s3:GetObject"),
            "{e}"
        );
        assert!(
            judge(
                &f,
                &ask(
                    None,
                    false,
                    "PutObject",
                    "s3:PutObject",
                    Some("public/a.html"),
                    &cx
                )
            )
            .is_err()
        );
        // No policy: nothing anonymous.
        let closed = facts("alice", None, PublicAccessBlock::default());
        assert!(
            judge(
                &closed,
                &ask(
                    None,
                    false,
                    "GetObject",
                    "s3:GetObject",
                    Some("public/a.html"),
                    &cx
                )
            )
            .is_err()
        );
        // RestrictPublicBuckets: the public policy no longer lets anyone but the owner in.
        let restricted = facts(
            "alice",
            Some(PUBLIC),
            PublicAccessBlock {
                restrict_public_buckets: true,
                ..Default::default()
            },
        );
        assert!(
            judge(
                &restricted,
                &ask(
                    None,
                    false,
                    "GetObject",
                    "s3:GetObject",
                    Some("public/a.html"),
                    &cx
                )
            )
            .is_err()
        );
        assert!(
            judge(
                &restricted,
                &ask(
                    Some("bob"),
                    false,
                    "GetObject",
                    "s3:GetObject",
                    Some("public/a.html"),
                    &cx
                )
            )
            .is_err()
        );
        assert!(
            judge(
                &restricted,
                &ask(
                    Some("alice"),
                    false,
                    "GetObject",
                    "s3:GetObject",
                    Some("public/a.html"),
                    &cx
                )
            )
            .is_ok()
        );
    }

    #[test]
    fn a_deny_beats_grants_but_not_the_owner_managing_the_policy() {
        let mut cx = policy::Context::default();
        cx.set("aws:username", "mallory");
        let f = facts("mallory", Some(PUBLIC), PublicAccessBlock::default());
        let e = judge(
            &f,
            &ask(
                Some("mallory"),
                true,
                "GetObject",
                "s3:GetObject",
                Some("a"),
                &cx,
            ),
        )
        .unwrap_err();
        assert_eq!(
            e,
            "the policy of bucket photos denies s3:GetObject on arn:aws:s3:::photos/a to user mallory"
        );
        assert!(
            judge(
                &f,
                &ask(
                    Some("mallory"),
                    true,
                    "DeleteBucketPolicy",
                    "s3:DeleteBucketPolicy",
                    None,
                    &cx
                )
            )
            .is_ok()
        );
        // A key with a write grant on the bucket that is not the owner's does not manage it.
        let f = facts("alice", None, PublicAccessBlock::default());
        let e = judge(
            &f,
            &ask(
                Some("bob"),
                true,
                "PutBucketPolicy",
                "s3:PutBucketPolicy",
                None,
                &cx,
            ),
        )
        .unwrap_err();
        assert!(
            e.starts_with("only the owner of bucket photos manages its policy"),
            "{e}"
        );
        let mut everywhere = ask(
            Some("admin"),
            true,
            "PutBucketPolicy",
            "s3:PutBucketPolicy",
            None,
            &cx,
        );
        everywhere.grants_everywhere = true;
        assert!(judge(&f, &everywhere).is_ok());
    }

    #[test]
    fn a_broken_stored_policy_closes_the_bucket_but_to_its_owner_fixing_it() {
        let cx = policy::Context::default();
        let f = BucketFacts {
            owner: Some("alice".into()),
            policy_broken: true,
            ..Default::default()
        };
        assert!(
            judge(
                &f,
                &ask(
                    Some("alice"),
                    true,
                    "GetObject",
                    "s3:GetObject",
                    Some("a"),
                    &cx
                )
            )
            .unwrap_err()
            .contains("does not parse")
        );
        assert!(
            judge(
                &f,
                &ask(
                    Some("alice"),
                    true,
                    "PutBucketPolicy",
                    "s3:PutBucketPolicy",
                    None,
                    &cx
                )
            )
            .is_ok()
        );
    }

    #[test]
    fn acl_grants_allow_beside_grants_but_not_past_a_deny_nor_for_the_owner() {
        use crate::meta::acl::Canned;
        let cx = policy::Context::default();
        let public_object = Canned::PublicRead.object_acl("alice", "alice").unwrap();
        let mut f = facts("alice", None, PublicAccessBlock::default());
        let get = |user, acl| {
            let mut a = ask(user, false, "GetObject", "s3:GetObject", Some("a.jpg"), &cx);
            a.object_acl = acl;
            a
        };
        // An object's public-read grant lets anonymous requests read it, not list or write.
        assert!(judge(&f, &get(None, Some(&public_object))).is_ok());
        assert!(judge(&f, &get(None, None)).is_err());
        let list = ask(None, false, "ListObjectsV2", "s3:ListBucket", None, &cx);
        assert!(judge(&f, &list).is_err());
        // The bucket's ACL decides listing and writing; READ_ACP does not give READ.
        f.acl = Some(Arc::new(Canned::PublicReadWrite.bucket_acl("alice")));
        assert!(judge(&f, &list).is_ok());
        let put = ask(None, false, "PutObject", "s3:PutObject", Some("b"), &cx);
        assert!(judge(&f, &put).is_ok());
        let acl_read = ask(
            Some("bob"),
            false,
            "GetBucketAcl",
            "s3:GetBucketAcl",
            None,
            &cx,
        );
        assert!(judge(&f, &acl_read).is_err());
        // The bucket ACL never reaches object reads (the object's ACL does).
        assert!(judge(&f, &get(Some("bob"), None)).is_err());
        // IgnorePublicAcls: nothing public counts.
        f.block.ignore_public_acls = true;
        assert!(judge(&f, &list).is_err());
        assert!(judge(&f, &get(None, Some(&public_object))).is_err());
        f.block.ignore_public_acls = false;
        // BucketOwnerEnforced: no ACL counts.
        f.ownership = Some(Ownership::BucketOwnerEnforced);
        assert!(judge(&f, &list).is_err());
        f.ownership = None;
        // A grant naming the owner does not widen what the owner's keys may do.
        let mut owner_only = facts("alice", None, PublicAccessBlock::default());
        owner_only.acl = Some(Arc::new(Canned::Private.bucket_acl("alice")));
        let alice_put = ask(
            Some("alice"),
            false,
            "PutObject",
            "s3:PutObject",
            Some("c"),
            &cx,
        );
        assert!(judge(&owner_only, &alice_put).is_err());
        // An explicit deny of the policy beats an ACL grant.
        let mut denied = facts("alice", Some(PUBLIC), PublicAccessBlock::default());
        denied.acl = Some(Arc::new(Canned::PublicReadWrite.bucket_acl("alice")));
        let mut mallory = policy::Context::default();
        mallory.set("aws:username", "mallory");
        let put = ask(
            Some("mallory"),
            false,
            "PutObject",
            "s3:PutObject",
            Some("d"),
            &mallory,
        );
        assert!(
            judge(&denied, &put).unwrap_err().contains("denies"),
            "an ACL grant let a denied request through"
        );
    }

    #[test]
    fn the_context_carries_connection_headers_and_listing_parameters() {
        let mut headers = http::HeaderMap::new();
        headers.insert("user-agent", "curl/8".parse().unwrap());
        headers.insert("x-amz-acl", "public-read".parse().unwrap());
        let uri: http::Uri = "/photos?list-type=2&prefix=album%2F2024%2F&max-keys=5"
            .parse()
            .unwrap();
        let conn = Connection {
            peer: "[::ffff:10.0.0.9]:5000".parse().unwrap(),
            tls: true,
        };
        let cx = context(&headers, &uri, Some(&conn), Some("bob"), 1_767_225_600_123);
        assert_eq!(cx.get("aws:SourceIp"), Some("10.0.0.9"));
        assert_eq!(cx.get("aws:SecureTransport"), Some("true"));
        assert_eq!(cx.get("s3:prefix"), Some("album/2024/"));
        assert_eq!(cx.get("s3:max-keys"), Some("5"));
        assert_eq!(cx.get("s3:x-amz-acl"), Some("public-read"));
        assert_eq!(cx.get("aws:UserAgent"), Some("curl/8"));
        assert_eq!(cx.get("aws:CurrentTime"), Some("1767225600"));
        assert_eq!(cx.get("aws:username"), Some("bob"));
        assert_eq!(cx.get("s3:authtype"), Some("REST-HEADER"));
        let anon = context(&http::HeaderMap::new(), &uri, None, None, 0);
        assert_eq!(anon.get("aws:SourceIp"), None);
        assert_eq!(anon.get("aws:principaltype"), Some("Anonymous"));
    }
}
