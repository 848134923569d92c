//! S3 access keys and what each may do: SigV4 secrets for s3s ([`S3Auth`]) and per-bucket
//! read/write grants checked before every operation ([`S3Access`]).
//!
//! A request needs a read grant for `Get*`, `Head*` and `List*` operations and a write grant
//! for everything else (put, delete, create/delete bucket, multipart, versioning). CopyObject
//! and UploadPartCopy also need a read grant on the source bucket. ListBuckets is open to
//! every key but lists only the buckets the key has a grant on.
//!
//! With a bucket's policy ([`super::access`], [`super::policy`]): an explicit deny of the
//! policy refuses whatever the grants allow; an allow of the policy admits what the grants
//! do not, unsigned requests included (anonymous access exists only that way).
//!
//! Some requests are refused before s3s sees them ([`refuse_unread`]), for what s3s would
//! do with them before any signature is checked: Signature Version 2 (no clock-skew bound,
//! so a captured request replays forever) and POST bodies of multipart types other than
//! browser forms (`s3/post.rs` serves those).

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context;
use s3s::S3Result;
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use sublet_crds::GatewayCredential;

use super::access::{self, Ask, BucketAccess, BucketFacts, Connection, DeleteCheck};
use super::policy::actions::action_of;
use crate::node::users::{Accounts, DEFAULT_USER};

/// What a key may do in one bucket (or `*`: every bucket).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub bucket: String,
    pub read: bool,
    pub write: bool,
}

impl Grant {
    /// Read and write on every bucket.
    pub fn full() -> Self {
        Grant {
            bucket: "*".into(),
            read: true,
            write: true,
        }
    }

    fn covers(&self, bucket: &str) -> bool {
        self.bucket == "*" || self.bucket == bucket
    }
}

/// The grants of one key; put into request extensions so ListBuckets can filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grants(pub Vec<Grant>);

/// What an operation needs on a bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    Read,
    Write,
}

impl Grants {
    /// Whether the key may do what `need` says in `bucket`.
    pub fn allows(&self, bucket: &str, need: Need) -> bool {
        self.0.iter().any(|g| {
            g.covers(bucket)
                && match need {
                    Need::Read => g.read,
                    Need::Write => g.write,
                }
        })
    }

    /// Whether the grants allow `need` on every bucket (a `*` grant: an operator's key).
    pub fn everywhere(&self, need: Need) -> bool {
        self.0.iter().any(|g| {
            g.bucket == "*"
                && match need {
                    Need::Read => g.read,
                    Need::Write => g.write,
                }
        })
    }

    /// Whether ListBuckets shows `bucket` to the key: any grant on it.
    pub fn sees(&self, bucket: &str) -> bool {
        self.0.iter().any(|g| g.covers(bucket))
    }
}

/// What an S3 operation (by s3s name) needs on its bucket.
pub fn need_of(operation: &str) -> Need {
    if operation.starts_with("Get")
        || operation.starts_with("Head")
        || operation.starts_with("List")
    {
        Need::Read
    } else {
        Need::Write
    }
}

/// The bucket of an `x-amz-copy-source` header (`bucket/key` or `/bucket/key`, URL-encoded).
fn copy_source_bucket(header: &str) -> Option<&str> {
    let path = header.strip_prefix('/').unwrap_or(header);
    let bucket = path.split('/').next()?;
    (!bucket.is_empty()).then_some(bucket)
}

/// The bucket, key and whether a version is named, of an `x-amz-copy-source` header
/// (`bucket/key[?versionId=v]`, URL-encoded).
fn copy_source(header: &str) -> Option<(String, String, bool)> {
    let bucket = copy_source_bucket(header)?;
    let path = header.strip_prefix('/').unwrap_or(header);
    let rest = path.get(bucket.len() + 1..)?;
    let (key, query) = rest.split_once('?').unwrap_or((rest, ""));
    let versioned = query.split('&').any(|p| p.starts_with("versionId="));
    Some((bucket.to_owned(), percent_decoded(key), versioned))
}

#[derive(Clone)]
struct Key {
    secret: String,
    grants: Grants,
    bypass_governance: bool,
}

/// Put into request extensions when the key may bypass GOVERNANCE object lock retention
/// (`bypassGovernance` on its credential); the request must still ask for it with
/// `x-amz-bypass-governance-retention: true`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GovernanceBypass;

/// Every access key the gateway accepts: the configuration file's, and those made at
/// runtime (the node's [`Accounts`], looked up in its in-memory view on every request).
#[derive(Clone, Default)]
pub struct KeyRing {
    keys: Arc<HashMap<String, Key>>,
    accounts: Option<Arc<Accounts>>,
    /// Bucket owners, policies and public access blocks; without them (tests of the keys
    /// alone) grants decide and unsigned requests are refused.
    buckets: Option<Arc<BucketAccess>>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.keys.keys().collect();
        names.sort();
        f.debug_struct("KeyRing").field("keys", &names).finish()
    }
}

impl KeyRing {
    /// One key with read and write on every bucket, allowed to bypass governance
    /// retention (what `sublet dev` uses).
    pub fn single(access_key: &str, secret_key: &str) -> Self {
        Self::new([(
            access_key.to_owned(),
            secret_key.to_owned(),
            Grants(vec![Grant::full()]),
        )])
        .with_governance_bypass([access_key])
    }

    /// Allows these keys to bypass GOVERNANCE object lock retention.
    pub fn with_governance_bypass<'a>(
        mut self,
        access_keys: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let keys = Arc::make_mut(&mut self.keys);
        for access in access_keys {
            if let Some(k) = keys.get_mut(access) {
                k.bypass_governance = true;
            }
        }
        self
    }

    /// Keys from (access key, secret key, grants).
    pub fn new(keys: impl IntoIterator<Item = (String, String, Grants)>) -> Self {
        KeyRing {
            keys: Arc::new(
                keys.into_iter()
                    .map(|(access, secret, grants)| {
                        let key = Key {
                            secret,
                            grants,
                            bypass_governance: false,
                        };
                        (access, key)
                    })
                    .collect(),
            ),
            accounts: None,
            buckets: None,
        }
    }

    /// Decides with the buckets' owners, policies and public access blocks too.
    pub fn with_bucket_access(mut self, buckets: Arc<BucketAccess>) -> Self {
        self.buckets = Some(buckets);
        self
    }

    /// The user `access_key` belongs to: its runtime user, or the default user for the
    /// configuration's keys.
    pub fn user_of(&self, access_key: &str) -> Option<String> {
        if self.keys.contains_key(access_key) {
            return Some(DEFAULT_USER.to_owned());
        }
        Some(self.accounts.as_ref()?.lookup(access_key)?.user)
    }

    /// Also accepts the runtime keys of `accounts`, which learns the configuration's key
    /// names (those the admin API may not make or change).
    pub fn with_accounts(mut self, accounts: Arc<Accounts>) -> Self {
        accounts.set_config_keys(self.keys.iter().map(|(access, k)| {
            let grants = k
                .grants
                .0
                .iter()
                .map(|g| {
                    crate::node::users::grant_text(&crate::meta::KeyGrant {
                        bucket: g.bucket.clone(),
                        read: g.read,
                        write: g.write,
                    })
                })
                .collect();
            (access.clone(), grants)
        }));
        self.accounts = Some(accounts);
        self
    }

    /// The keys of a StorageGateway spec, reading secrets from files and the environment.
    /// A credential without bucket grants may use every bucket.
    pub fn from_credentials(credentials: &[GatewayCredential]) -> anyhow::Result<Self> {
        let mut keys = Vec::with_capacity(credentials.len());
        for c in credentials {
            let secret = if let Some(path) = &c.secret_key_file {
                std::fs::read_to_string(path)
                    .with_context(|| {
                        format!("access key {}: reading secretKeyFile {path}", c.access_key)
                    })?
                    .trim()
                    .to_owned()
            } else if let Some(var) = &c.secret_key_env {
                std::env::var(var).with_context(|| {
                    format!(
                        "access key {}: environment variable {var} (secretKeyEnv) is not set",
                        c.access_key
                    )
                })?
            } else {
                c.secret_key.clone()
            };
            if secret.is_empty() {
                anyhow::bail!("access key {}: the secret key is empty", c.access_key);
            }
            let grants = if c.buckets.is_empty() {
                vec![Grant::full()]
            } else {
                c.buckets
                    .iter()
                    .map(|g| Grant {
                        bucket: g.bucket.clone(),
                        read: g.access.can_read(),
                        write: g.access.can_write(),
                    })
                    .collect()
            };
            keys.push((c.access_key.clone(), secret, Grants(grants)));
        }
        let bypass: Vec<&str> = credentials
            .iter()
            .filter(|c| c.bypass_governance)
            .map(|c| c.access_key.as_str())
            .collect();
        Ok(Self::new(keys).with_governance_bypass(bypass))
    }

    /// Whether `access_key` may bypass GOVERNANCE object lock retention.
    pub fn may_bypass_governance(&self, access_key: &str) -> bool {
        self.keys
            .get(access_key)
            .is_some_and(|k| k.bypass_governance)
    }

    /// The grants of `access_key`, if it is known (and, if made at runtime, active).
    pub fn grants(&self, access_key: &str) -> Option<Grants> {
        if let Some(k) = self.keys.get(access_key) {
            return Some(k.grants.clone());
        }
        let key = self.accounts.as_ref()?.lookup(access_key)?;
        Some(Grants(
            key.grants
                .into_iter()
                .map(|g| Grant {
                    bucket: g.bucket,
                    read: g.read,
                    write: g.write,
                })
                .collect(),
        ))
    }
}

#[async_trait::async_trait]
impl S3Auth for KeyRing {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        if let Some(key) = self.keys.get(access_key) {
            return Ok(SecretKey::from(key.secret.as_str()));
        }
        match self.accounts.as_ref().and_then(|a| a.lookup(access_key)) {
            Some(key) => Ok(SecretKey::from(key.secret)),
            None => Err(s3s::s3_error!(InvalidAccessKeyId)),
        }
    }
}

fn denied(message: String) -> s3s::S3Error {
    s3s::S3Error::with_message(s3s::S3ErrorCode::AccessDenied, message)
}

impl KeyRing {
    /// The ACL of the object a request names, when the decision may need it: the
    /// operation is one an object's ACL governs, ACLs count in the bucket, and the
    /// requester is not its owner (whose keys' grants decide). Read from the store only then.
    async fn object_acl_for(
        &self,
        facts: &BucketFacts,
        user: Option<&str>,
        bucket: &str,
        key: &str,
        operation: &str,
        uri: &http::Uri,
    ) -> S3Result<Option<crate::meta::acl::Acl>> {
        let on_object = access::acl_need(operation).is_some_and(|(_, object)| object);
        if !on_object || !facts.ownership().acls_enabled() || facts.owned_by(user) {
            return Ok(None);
        }
        let Some(buckets) = &self.buckets else {
            return Ok(None);
        };
        let version = access::query_param(uri, "versionId");
        buckets
            .object_acl(bucket, key, version.as_deref())
            .await
            .map_err(s3s::S3Error::from)
    }

    /// The ACL of a copy's source object (read as GetObject is).
    async fn source_acl(
        &self,
        facts: &BucketFacts,
        user: Option<&str>,
        bucket: &str,
        key: &str,
        headers: &http::HeaderMap,
    ) -> S3Result<Option<crate::meta::acl::Acl>> {
        if !facts.ownership().acls_enabled() || facts.owned_by(user) {
            return Ok(None);
        }
        let Some(buckets) = &self.buckets else {
            return Ok(None);
        };
        let version = headers
            .get("x-amz-copy-source")
            .and_then(|v| v.to_str().ok())
            .and_then(|h| h.split_once("?versionId="))
            .map(|(_, v)| percent_decoded(v));
        buckets
            .object_acl(bucket, key, version.as_deref())
            .await
            .map_err(s3s::S3Error::from)
    }

    /// The access facts of `bucket` (none known without [`KeyRing::with_bucket_access`]).
    async fn facts(&self, bucket: &str) -> S3Result<Arc<BucketFacts>> {
        match &self.buckets {
            Some(b) => b.facts(bucket).await.map_err(s3s::S3Error::from),
            None => Ok(Arc::new(BucketFacts::default())),
        }
    }
}

#[async_trait::async_trait]
impl S3Access for KeyRing {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let operation = cx.s3_op().name().to_owned();
        if let Some(slot) = cx.extensions_mut().get::<crate::metrics::OperationSlot>() {
            slot.set(&operation);
        }
        let access_key = cx.credentials().map(|c| c.access_key.clone());
        let (grants, user) = match &access_key {
            Some(key) => match (self.grants(key), self.user_of(key)) {
                (Some(g), Some(u)) => (Some(g), Some(u)),
                _ => {
                    tracing::info!(access_key = key, operation, "access denied: unknown key");
                    return Err(denied(format!("unknown access key {key}")));
                }
            },
            None => (None, None),
        };
        let Some(bucket) = cx.s3_path().get_bucket_name().map(str::to_owned) else {
            // Only ListBuckets works without a bucket, and it filters what it shows.
            if grants.is_none() {
                return Err(s3s::s3_error!(AccessDenied, "Signature is required"));
            }
            if let Some(grants) = grants {
                cx.extensions_mut().insert(grants);
            }
            return Ok(());
        };
        let key = cx.s3_path().get_object_key().map(str::to_owned);
        let connection = cx.extensions_mut().get::<Connection>().copied();
        let context = access::context(
            cx.headers(),
            cx.uri(),
            connection.as_ref(),
            user.as_deref(),
            crate::clock::now_ms(),
        );
        let need = need_of(&operation);
        let versioned = access::query_param(cx.uri(), "versionId").is_some();
        let facts = self.facts(&bucket).await?;
        let grants_allow = grants.as_ref().is_some_and(|g| g.allows(&bucket, need));
        let refuse = |message: String| {
            tracing::info!(?access_key, ?user, operation, reason = %message, "access denied");
            denied(message)
        };
        if operation == "DeleteObjects" {
            // Decided per key in the handler (S3 checks s3:DeleteObject on each); refused
            // here only when nothing could allow any.
            if !grants_allow
                && facts.policy.is_none()
                && !facts.acl_allows(user.as_deref(), &operation, None)
            {
                return Err(refuse(match &access_key {
                    Some(k) => {
                        format!("access key {k} may not write bucket {bucket} (DeleteObjects)")
                    }
                    None => "Signature is required".to_owned(),
                }));
            }
            cx.extensions_mut().insert(DeleteCheck {
                facts: Arc::clone(&facts),
                user: user.clone(),
                grants_allow,
                context: context.clone(),
            });
        } else {
            let action = action_of(&operation, versioned);
            let grant_refusal = access_key.as_ref().map(|k| {
                let what = match need {
                    Need::Read => "read",
                    Need::Write => "write",
                };
                format!("access key {k} may not {what} bucket {bucket} ({operation})")
            });
            let object_key = key
                .as_deref()
                .filter(|_| super::policy::actions::is_object_operation(&operation));
            let object_acl = match object_key {
                Some(k) if !grants_allow => {
                    self.object_acl_for(&facts, user.as_deref(), &bucket, k, &operation, cx.uri())
                        .await?
                }
                _ => None,
            };
            access::judge(
                &facts,
                &Ask {
                    user: user.as_deref(),
                    grants_allow,
                    grants_everywhere: grants.as_ref().is_some_and(|g| g.everywhere(need)),
                    bucket: &bucket,
                    key: object_key,
                    operation: &operation,
                    action: &action,
                    context: &context,
                    grant_refusal: grant_refusal.as_deref(),
                    object_acl: object_acl.as_ref(),
                },
            )
            .map_err(refuse)?;
        }
        let source = cx
            .headers()
            .get("x-amz-copy-source")
            .and_then(|v| v.to_str().ok())
            .and_then(copy_source);
        if let Some((source_bucket, source_key, source_versioned)) = source {
            let facts = self.facts(&source_bucket).await?;
            let action = action_of("GetObject", source_versioned);
            let grants_allow = grants
                .as_ref()
                .is_some_and(|g| g.allows(&source_bucket, Need::Read));
            let source_acl = if grants_allow {
                None
            } else {
                self.source_acl(
                    &facts,
                    user.as_deref(),
                    &source_bucket,
                    &source_key,
                    cx.headers(),
                )
                .await?
            };
            access::judge(
                &facts,
                &Ask {
                    user: user.as_deref(),
                    grants_allow,
                    grants_everywhere: false,
                    bucket: &source_bucket,
                    key: Some(&source_key),
                    operation: "GetObject",
                    action: &action,
                    context: &context,
                    grant_refusal: access_key
                        .as_ref()
                        .map(|k| format!("access key {k} may not read bucket {source_bucket} (the copy source)"))
                        .as_deref(),
                    object_acl: source_acl.as_ref(),
                },
            )
            .map_err(refuse)?;
        }
        if let Some(grants) = grants {
            cx.extensions_mut().insert(grants);
        }
        if access_key
            .as_deref()
            .is_some_and(|k| self.may_bypass_governance(k))
        {
            cx.extensions_mut().insert(GovernanceBypass);
        }
        Ok(())
    }
}

/// Why a request is refused before anything of its body is read, if it is: signed with
/// Signature Version 2 (an `Authorization: AWS key:signature` header, or `Signature` /
/// `AWSAccessKeyId` in the query), a POST of a multipart type other than
/// `multipart/form-data` (browser form uploads are served: `s3/post.rs`), or a call of the
/// S3 Control API (account-level settings: [`is_s3_control`]), which is not served.
pub fn refuse_unread<B>(req: &http::Request<B>) -> Option<s3s::S3Error> {
    let headers = req.headers();
    if is_s3_control(req) {
        return Some(s3s::S3Error::with_message(
            s3s::S3ErrorCode::NotImplemented,
            "the S3 Control API (account-level settings such as PublicAccessBlock) is not \
             implemented; set PublicAccessBlock on each bucket (PutPublicAccessBlock)",
        ));
    }
    let v2_header = headers
        .get_all(http::header::AUTHORIZATION)
        .iter()
        .any(|v| v.as_bytes().starts_with(b"AWS "));
    let v2_query = req.uri().query().is_some_and(|q| {
        q.split('&').any(|pair| {
            let name = percent_decoded(pair.split('=').next().unwrap_or(""));
            name == "Signature" || name == "AWSAccessKeyId"
        })
    });
    if v2_header || v2_query {
        return Some(s3s::S3Error::with_message(
            s3s::S3ErrorCode::InvalidRequest,
            "Signature Version 2 is not accepted (it has no clock-skew bound, so a captured \
             request could be replayed); sign requests with AWS4-HMAC-SHA256 (Signature Version 4)",
        ));
    }
    let other_multipart = req.method() == http::Method::POST
        && headers.get_all(http::header::CONTENT_TYPE).iter().any(|v| {
            let v = v.as_bytes().to_ascii_lowercase();
            v.starts_with(b"multipart/") && !v.starts_with(b"multipart/form-data")
        });
    if other_multipart {
        return Some(s3s::S3Error::with_message(
            s3s::S3ErrorCode::NotImplemented,
            "POST bodies of multipart types other than multipart/form-data are not served; \
             browser form uploads send multipart/form-data",
        ));
    }
    None
}

/// Whether `req` is a call of the S3 Control API (`aws s3control ...`): its paths start
/// with the API version `/v20180820/` and it names the account in `x-amz-account-id`. s3s
/// would take it for an object of a bucket `v20180820` and answer `NoSuchBucket`; a bucket
/// of that name is still reachable, as its requests carry no account header.
fn is_s3_control<B>(req: &http::Request<B>) -> bool {
    req.uri().path().starts_with("/v20180820/") && req.headers().contains_key("x-amz-account-id")
}

/// `text` with `%XX` escapes and `+` decoded (lossily), to compare query parameter names as
/// s3s will see them.
pub(super) fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn request(method: &str, uri: &str, headers: &[(&str, &str)]) -> http::Request<()> {
        let mut b = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn signature_version_2_is_refused_in_headers_and_queries() {
        for req in [
            request("GET", "/b/k", &[("authorization", "AWS AKID:c2lnbmF0dXJl")]),
            request(
                "PUT",
                "/b/k?AWSAccessKeyId=AKID&Expires=9999999999&Signature=abc%3D",
                &[],
            ),
            request("GET", "/b/k?Signature=abc", &[]),
            // Escaped names are the same names to s3s.
            request("GET", "/b/k?%53ignature=abc", &[]),
        ] {
            let e = refuse_unread(&req).unwrap_or_else(|| panic!("{req:?} was let through"));
            assert_eq!(*e.code(), s3s::S3ErrorCode::InvalidRequest);
            assert!(
                e.message()
                    .unwrap()
                    .contains("Signature Version 2 is not accepted"),
                "{e:?}"
            );
        }
        for req in [
            request(
                "GET",
                "/b/k?X-Amz-Signature=abc&X-Amz-Credential=x",
                &[("authorization", "AWS4-HMAC-SHA256 Credential=x")],
            ),
            request("GET", "/b/k?prefix=Signature", &[]),
            request("POST", "/b?delete", &[("content-type", "application/xml")]),
        ] {
            assert!(refuse_unread(&req).is_none(), "{req:?} was refused");
        }
    }

    #[test]
    fn only_form_data_posts_reach_s3s() {
        for content_type in ["multipart/mixed", "Multipart/Related; boundary=xyz"] {
            let req = request("POST", "/bucket", &[("content-type", content_type)]);
            let e = refuse_unread(&req).unwrap();
            assert_eq!(
                *e.code(),
                s3s::S3ErrorCode::NotImplemented,
                "{content_type}"
            );
        }
        for content_type in [
            "multipart/form-data; boundary=xyz",
            "Multipart/Form-Data;boundary=xyz",
        ] {
            let req = request("POST", "/bucket", &[("content-type", content_type)]);
            assert!(refuse_unread(&req).is_none(), "{content_type}");
        }
        // A PUT may carry any content type: it is the object's.
        let req = request("PUT", "/b/k", &[("content-type", "multipart/form-data")]);
        assert!(refuse_unread(&req).is_none());
    }

    #[test]
    fn s3_control_calls_are_not_implemented_and_a_bucket_named_like_them_is_served() {
        let account = [("x-amz-account-id", "000000000000")];
        for method in ["GET", "PUT", "DELETE"] {
            let req = request(
                method,
                "/v20180820/configuration/publicAccessBlock",
                &account,
            );
            let e = refuse_unread(&req).unwrap_or_else(|| panic!("{method} was let through"));
            assert_eq!(*e.code(), s3s::S3ErrorCode::NotImplemented, "{method}");
            assert!(e.message().unwrap().contains("PutPublicAccessBlock"));
        }
        let req = request("GET", "/v20180820/configuration/publicAccessBlock", &[]);
        assert!(refuse_unread(&req).is_none());
    }

    fn ring() -> KeyRing {
        let credentials: Vec<GatewayCredential> = serde_yaml::from_str(
            r#"
- {accessKey: admin, secretKey: admin-secret, bypassGovernance: true}
- accessKey: frame
  secretKey: frame-secret
  buckets: [{bucket: photos, access: read}]
- accessKey: backup
  secretKey: backup-secret
  buckets: [{bucket: backups, access: write}, {bucket: photos}]
- accessKey: auditor
  secretKey: auditor-secret
  buckets: [{bucket: "*", access: read}]
"#,
        )
        .unwrap();
        KeyRing::from_credentials(&credentials).unwrap()
    }

    #[test]
    fn operations_need_read_or_write() {
        for op in [
            "GetObject",
            "HeadObject",
            "ListObjectsV2",
            "HeadBucket",
            "GetBucketLocation",
            "ListParts",
            "GetObjectTagging",
            "GetBucketTagging",
        ] {
            assert_eq!(need_of(op), Need::Read, "{op}");
        }
        for op in [
            "PutObject",
            "DeleteObject",
            "DeleteObjects",
            "CreateBucket",
            "DeleteBucket",
            "UploadPart",
            "CompleteMultipartUpload",
            "CopyObject",
            "PutBucketVersioning",
            "PutObjectTagging",
            "DeleteObjectTagging",
            "PutBucketTagging",
            "DeleteBucketTagging",
        ] {
            assert_eq!(need_of(op), Need::Write, "{op}");
        }
    }

    /// Whether `key`'s grants allow `operation` on `bucket`, as the access check asks them
    /// (`S3Access::check`: `grants.allows(bucket, need_of(operation))`).
    fn may(r: &KeyRing, key: &str, operation: &str, bucket: &str) -> bool {
        r.grants(key)
            .is_some_and(|g| g.allows(bucket, need_of(operation)))
    }

    /// Whether `key`'s grants allow reading a copy's source named by `header`, as the
    /// access check asks them.
    fn may_read_source(r: &KeyRing, key: &str, header: &str) -> bool {
        let (bucket, _, _) = copy_source(header).unwrap();
        r.grants(key).is_some_and(|g| g.allows(&bucket, Need::Read))
    }

    #[test]
    fn keys_without_grants_may_do_everything() {
        let r = ring();
        assert!(may(&r, "admin", "PutObject", "anything"));
        assert!(may(&r, "admin", "DeleteBucket", "photos"));
        assert!(r.grants("nobody").is_none());
    }

    #[test]
    fn read_grants_refuse_writes() {
        let r = ring();
        assert!(may(&r, "frame", "GetObject", "photos"));
        assert!(!may(&r, "frame", "PutObject", "photos"));
        assert!(!may(&r, "frame", "GetObject", "backups"));
    }

    #[test]
    fn write_grants_refuse_reads() {
        let r = ring();
        assert!(may(&r, "backup", "PutObject", "backups"));
        assert!(!may(&r, "backup", "GetObject", "backups"));
        assert!(may(&r, "backup", "GetObject", "photos"));
        assert!(may(&r, "backup", "PutObject", "photos"));
    }

    #[test]
    fn wildcard_grants_cover_every_bucket() {
        let r = ring();
        assert!(may(&r, "auditor", "ListObjects", "whatever"));
        assert!(!may(&r, "auditor", "DeleteObject", "whatever"));
        assert!(r.grants("auditor").unwrap().sees("anything"));
    }

    #[test]
    fn copies_need_read_on_the_source() {
        let r = ring();
        assert!(may(&r, "backup", "CopyObject", "photos"));
        assert!(may_read_source(&r, "backup", "photos/a.jpg"));
        assert!(!may_read_source(&r, "backup", "/backups/db.tar"));
    }

    #[test]
    fn list_buckets_shows_granted_buckets_only() {
        let g = ring().grants("frame").unwrap();
        assert!(g.sees("photos") && !g.sees("backups"));
    }

    #[tokio::test]
    async fn runtime_keys_are_accepted_with_their_grants_until_disabled() {
        use crate::node::users::{KeyRequest, UserRequest};
        let meta: Arc<dyn crate::meta::MetadataStore> =
            Arc::new(crate::meta::SqliteStore::open_in_memory().unwrap());
        let master = Arc::new(crate::datapath::codec::MasterKey::from_bytes(&[3; 32]));
        let accounts = Arc::new(Accounts::new(meta, master));
        let r = ring().with_accounts(Arc::clone(&accounts));
        accounts
            .put_user("alice", &UserRequest::default(), 1)
            .unwrap();
        let (issued, _) = accounts
            .create_key(
                &KeyRequest {
                    user: "alice".into(),
                    grants: vec!["photos:r".into()],
                    ..KeyRequest::default()
                },
                1,
            )
            .unwrap();
        let access = issued.key.access_key;
        let secret = r.get_secret_key(&access).await.unwrap();
        assert_eq!(secret.expose(), issued.secret_key.unwrap());
        assert!(may(&r, &access, "GetObject", "photos"));
        assert!(!may(&r, &access, "PutObject", "photos"));
        // Configuration keys still work beside them.
        assert!(r.get_secret_key("admin").await.is_ok());
        accounts.set_key_active(&access, false).unwrap();
        assert!(r.get_secret_key(&access).await.is_err());
        assert!(r.grants(&access).is_none(), "a disabled key has no grants");
    }

    #[tokio::test]
    async fn unknown_keys_are_refused() {
        let r = ring();
        assert!(r.grants("nobody").is_none() && r.user_of("nobody").is_none());
        let e = r.get_secret_key("nobody").await.unwrap_err();
        assert_eq!(e.code(), &s3s::S3ErrorCode::InvalidAccessKeyId);
    }

    #[test]
    fn only_keys_given_bypass_governance_may_bypass_it() {
        let r = ring();
        assert!(r.may_bypass_governance("admin"));
        assert!(!r.may_bypass_governance("frame"));
        assert!(!r.may_bypass_governance("nobody"));
        // `sublet dev`'s one key may.
        assert!(KeyRing::single("dev", "dev-secret-key").may_bypass_governance("dev"));
    }

    #[test]
    fn secrets_from_files_and_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "from-a-file-0123\n").unwrap();
        let var = "SUBLET_GATEWAY_AUTH_TEST_SECRET";
        let credentials = vec![
            GatewayCredential {
                access_key: "filekey".into(),
                secret_key: String::new(),
                secret_key_file: Some(file.display().to_string()),
                secret_key_env: None,
                buckets: vec![],
                bypass_governance: false,
            },
            GatewayCredential {
                access_key: "envkey".into(),
                secret_key: String::new(),
                secret_key_file: None,
                secret_key_env: Some(var.into()),
                buckets: vec![],
                bypass_governance: false,
            },
        ];
        let err = KeyRing::from_credentials(&credentials).unwrap_err();
        assert_eq!(
            err.to_string(),
            "access key envkey: environment variable SUBLET_GATEWAY_AUTH_TEST_SECRET (secretKeyEnv) is not set"
        );
        // Cargo sets CARGO_PKG_NAME for the tests it runs.
        let mut set = credentials.clone();
        set[1].secret_key_env = Some("CARGO_PKG_NAME".into());
        let r = KeyRing::from_credentials(&set).unwrap();
        assert_eq!(r.keys["filekey"].secret, "from-a-file-0123");
        assert_eq!(r.keys["envkey"].secret, "sublet-gateway");
    }
}
