//! ACLs and object ownership: Put/Get Bucket/Object Acl, Put/Get/Delete
//! BucketOwnershipControls, and the ACL a write asks for (`x-amz-acl`, `x-amz-grant-*`, an
//! AccessControlPolicy body), checked against the bucket's ownership setting and its
//! PublicAccessBlock before anything is stored. The model is `meta::acl`; what a grant
//! allows is decided in `s3/access.rs`.

use s3s::dto;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use super::Gateway;
use crate::meta::acl::{
    Acl, Canned, DEFAULT_OWNERSHIP, Grant, Grantee, MAX_GRANTS, Ownership, Permission,
};
use crate::meta::{Bucket, ObjectVersion};
use crate::node::users::DEFAULT_USER;
use crate::node::write::reported_version_id;

/// The grant headers and the permission each gives.
const GRANT_HEADERS: [(&str, Permission); 5] = [
    ("x-amz-grant-read", Permission::Read),
    ("x-amz-grant-write", Permission::Write),
    ("x-amz-grant-read-acp", Permission::ReadAcp),
    ("x-amz-grant-write-acp", Permission::WriteAcp),
    ("x-amz-grant-full-control", Permission::FullControl),
];

fn error(code: S3ErrorCode, message: impl Into<String>) -> S3Error {
    S3Error::with_message(code, message.into())
}

fn invalid(message: impl Into<String>) -> S3Error {
    error(S3ErrorCode::InvalidArgument, message)
}

/// What a request asks an ACL to be, before it is resolved against owners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Asked {
    /// Nothing asked: a new resource is `private`.
    Nothing,
    Canned(Canned),
    /// Grant headers or a body: exactly these grants.
    Grants(Vec<Grant>),
}

/// Parses one `x-amz-grant-*` header: comma-separated `id="…"`, `uri="…"` or
/// `emailAddress="…"` grantees.
pub fn grant_header(value: &str, permission: Permission, header: &str) -> S3Result<Vec<Grant>> {
    let mut grants = Vec::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((kind, who)) = part.split_once('=') else {
            return Err(invalid(format!(
                "{header}: grantee {part:?} is not of the form id=\"…\", uri=\"…\" or emailAddress=\"…\""
            )));
        };
        let who = who.trim().trim_matches('"');
        let grantee = grantee(kind.trim(), who, header)?;
        grants.push(Grant {
            grantee,
            permission,
        });
    }
    if grants.is_empty() {
        return Err(invalid(format!("{header} names no grantee")));
    }
    Ok(grants)
}

fn grantee(kind: &str, who: &str, whence: &str) -> S3Result<Grantee> {
    match kind.to_ascii_lowercase().as_str() {
        "id" if !who.is_empty() => Ok(Grantee::User(who.to_owned())),
        "uri" => Grantee::group(who).ok_or_else(|| {
            invalid(format!(
                "{whence}: {who:?} is not a group S3 knows (AllUsers, AuthenticatedUsers, LogDelivery)"
            ))
        }),
        "emailaddress" => Err(error(
            S3ErrorCode::UnresolvableGrantByEmailAddress,
            format!(
                "{whence}: grants by email address are not supported here; grant to the user's id instead"
            ),
        )),
        _ => Err(invalid(format!(
            "{whence}: grantee type {kind:?} is not id, uri or emailAddress"
        ))),
    }
}

/// What the headers of a write ask for: `x-amz-acl` (`canned`, as s3s read it, or the
/// form field of a POST) or the `x-amz-grant-*` headers, never both. `bucket`: canned
/// ACLs S3 takes on buckets only are accepted.
pub fn asked(canned: Option<&str>, headers: &http::HeaderMap, bucket: bool) -> S3Result<Asked> {
    let mut grants = Vec::new();
    let mut any_grant_header = false;
    for (name, permission) in GRANT_HEADERS {
        for value in headers.get_all(name) {
            any_grant_header = true;
            let value = value
                .to_str()
                .map_err(|_| invalid(format!("{name} is not ASCII text")))?;
            grants.extend(grant_header(value, permission, name)?);
        }
    }
    match canned {
        Some(_) if any_grant_header => Err(error(
            S3ErrorCode::InvalidRequest,
            "Specifying both Canned ACLs and Header Grants is not allowed",
        )),
        Some(text) => {
            let c = Canned::parse(text).ok_or_else(|| {
                invalid(format!(
                    "x-amz-acl {text:?} is not a canned ACL (private, public-read, public-read-write, \
                     authenticated-read, aws-exec-read, bucket-owner-read, bucket-owner-full-control{})",
                    if bucket { ", log-delivery-write" } else { "" }
                ))
            })?;
            if !bucket && c == Canned::LogDeliveryWrite {
                return Err(invalid(
                    "x-amz-acl log-delivery-write applies to buckets only",
                ));
            }
            Ok(Asked::Canned(c))
        }
        None if any_grant_header => {
            check_count(grants.len())?;
            Ok(Asked::Grants(grants))
        }
        None => Ok(Asked::Nothing),
    }
}

fn check_count(n: usize) -> S3Result<()> {
    if n > MAX_GRANTS {
        return Err(error(
            S3ErrorCode::MalformedACLError,
            format!("the ACL has {n} grants; at most {MAX_GRANTS} are allowed"),
        ));
    }
    Ok(())
}

/// The grants of an AccessControlPolicy body. Its Owner, if given, must be the current
/// owner: an ACL does not change owners.
pub fn from_policy(policy: dto::AccessControlPolicy, owner: &str) -> S3Result<Asked> {
    if let Some(id) = policy.owner.as_ref().and_then(|o| o.id.as_deref())
        && id != owner
    {
        return Err(error(
            S3ErrorCode::AccessDenied,
            format!(
                "the ACL names owner {id:?}, but the owner is {owner:?}; an ACL cannot change owners"
            ),
        ));
    }
    let list = policy.grants.unwrap_or_default();
    check_count(list.len())?;
    let mut grants = Vec::with_capacity(list.len());
    for (i, g) in list.into_iter().enumerate() {
        let whence = format!("AccessControlList Grant {}", i + 1);
        let malformed =
            |what: &str| error(S3ErrorCode::MalformedACLError, format!("{whence} {what}"));
        let Some(who) = g.grantee else {
            return Err(malformed("has no Grantee"));
        };
        let Some(permission) = g.permission else {
            return Err(malformed("has no Permission"));
        };
        let permission = Permission::parse(permission.as_str()).ok_or_else(|| {
            malformed(&format!(
                "has Permission {:?} (READ, WRITE, READ_ACP, WRITE_ACP or FULL_CONTROL)",
                permission.as_str()
            ))
        })?;
        let grantee = match who.type_.as_str() {
            dto::Type::CANONICAL_USER => grantee("id", who.id.as_deref().unwrap_or(""), &whence)?,
            dto::Type::GROUP => grantee("uri", who.uri.as_deref().unwrap_or(""), &whence)?,
            dto::Type::AMAZON_CUSTOMER_BY_EMAIL => grantee("emailAddress", "", &whence)?,
            other => return Err(malformed(&format!("has Grantee type {other:?}"))),
        };
        grants.push(Grant {
            grantee,
            permission,
        });
    }
    Ok(Asked::Grants(grants))
}

/// The ACL `asked` gives a resource owned by `owner` in a bucket of `bucket_owner`
/// (`object`: an object's ACL, else the bucket's).
pub fn resolve(asked: &Asked, owner: &str, bucket_owner: &str, object: bool) -> Acl {
    match asked {
        Asked::Nothing => Acl::private(owner),
        Asked::Canned(c) if object => c
            .object_acl(owner, bucket_owner)
            .unwrap_or_else(|| Acl::private(owner)),
        Asked::Canned(c) => c.bucket_acl(owner),
        Asked::Grants(grants) => Acl {
            owner: owner.to_owned(),
            grants: grants.clone(),
        },
    }
}

/// Refuses what a bucket's ownership and PublicAccessBlock do not let an ACL be.
pub fn check_allowed(
    acl: &Acl,
    asked: &Asked,
    ownership: Ownership,
    block_public_acls: bool,
    bucket: &str,
) -> S3Result<()> {
    if !ownership.acls_enabled() {
        let accepted = match asked {
            Asked::Nothing => true,
            Asked::Canned(c) => matches!(c, Canned::Private | Canned::BucketOwnerFullControl),
            Asked::Grants(_) => acl.is_owner_only(),
        };
        if !accepted {
            return Err(error(
                S3ErrorCode::AccessControlListNotSupported,
                format!(
                    "The bucket does not allow ACLs: bucket {bucket}'s object ownership is \
                     BucketOwnerEnforced (only private or bucket-owner-full-control are accepted)"
                ),
            ));
        }
    }
    if block_public_acls && acl.is_public() {
        return Err(error(
            S3ErrorCode::AccessDenied,
            format!(
                "the ACL grants to AllUsers or AuthenticatedUsers, and bucket {bucket}'s \
                 PublicAccessBlock sets BlockPublicAcls"
            ),
        ));
    }
    Ok(())
}

/// The owner of a bucket as a user id.
pub fn bucket_owner(bucket: &Bucket) -> &str {
    bucket.owner.as_deref().unwrap_or(DEFAULT_USER)
}

/// The ACL a version has: its own, or `private` of the bucket's owner; with ACLs disabled,
/// the bucket owner's full control whatever is stored.
pub fn version_acl(version: &ObjectVersion, bucket_owner: &str, ownership: Ownership) -> Acl {
    match &version.attrs.acl {
        Some(acl) if ownership.acls_enabled() => acl.clone(),
        _ => Acl::private(bucket_owner),
    }
}

impl Gateway {
    /// The user a request's key belongs to (`None`: unsigned).
    pub(super) fn requester(&self, credentials: Option<&s3s::auth::Credentials>) -> Option<String> {
        credentials.map(|c| {
            self.accounts()
                .lookup(&c.access_key)
                .map_or_else(|| DEFAULT_USER.to_owned(), |k| k.user)
        })
    }

    /// A bucket's ownership setting as stored (`None`: none set).
    pub(super) async fn stored_ownership(&self, bucket: &str) -> S3Result<Option<Ownership>> {
        let name = bucket.to_owned();
        let text = self.meta(move |m| m.bucket_ownership(&name)).await?;
        text.map(|t| {
            Ownership::parse(&t).ok_or_else(|| {
                crate::error::internal(format!(
                    "the stored object ownership of bucket {bucket} is {t:?}, not one this gateway knows"
                ))
            })
        })
        .transpose()
    }

    /// A bucket's ACL as stored (`None`: `private`).
    async fn stored_bucket_acl(&self, bucket: &Bucket) -> S3Result<Acl> {
        let name = bucket.name.clone();
        let text = self.meta(move |m| m.bucket_acl(&name)).await?;
        match text {
            Some(t) => serde_json::from_str(&t).map_err(|e| {
                crate::error::internal(format!(
                    "the stored ACL of bucket {} does not parse: {e}",
                    bucket.name
                ))
            }),
            None => Ok(Acl::private(bucket_owner(bucket))),
        }
    }

    /// Refuses grants to users this installation does not know (S3: `Invalid id`).
    fn check_grantees(&self, acl: &Acl) -> S3Result<()> {
        for g in &acl.grants {
            if let Grantee::User(id) = &g.grantee
                && self.accounts().display_name(id).is_none()
            {
                return Err(invalid(format!("Invalid id: no user {id:?} exists")));
            }
        }
        Ok(())
    }

    /// The ACL to keep with a new version written by `writer` into `bucket`, as asked by
    /// `canned` (`x-amz-acl` or the form field) and the grant headers; `None` when it is
    /// the default (`private`, owned by the bucket's owner). Refused as S3 refuses it.
    pub(super) async fn acl_for_new_object(
        &self,
        bucket: &Bucket,
        writer: Option<&str>,
        canned: Option<&str>,
        headers: &http::HeaderMap,
    ) -> S3Result<Option<Acl>> {
        let asked = asked(canned, headers, false)?;
        let ownership = self
            .stored_ownership(&bucket.name)
            .await?
            .unwrap_or(DEFAULT_OWNERSHIP);
        let bucket_owner = bucket_owner(bucket);
        // Unsigned writes (a public-read-write bucket) belong to the bucket's owner.
        let writer = writer.unwrap_or(bucket_owner);
        let canned = match asked {
            Asked::Canned(c) => Some(c),
            _ => None,
        };
        let owner = ownership.object_owner(writer, bucket_owner, canned);
        let acl = resolve(&asked, owner, bucket_owner, true);
        let block = self.stored_block(&bucket.name).await?.unwrap_or_default();
        check_allowed(
            &acl,
            &asked,
            ownership,
            block.block_public_acls,
            &bucket.name,
        )?;
        self.check_grantees(&acl)?;
        if !ownership.acls_enabled() || acl == Acl::private(bucket_owner) {
            return Ok(None);
        }
        Ok(Some(acl))
    }

    /// Sets the ACL asked at CreateBucket and its object ownership, on the bucket just made.
    pub(super) async fn apply_create_bucket_acl(
        &self,
        bucket: &Bucket,
        asked: &Asked,
        ownership: Option<Ownership>,
    ) -> S3Result<()> {
        let acl = resolve(asked, bucket_owner(bucket), bucket_owner(bucket), false);
        if let Some(o) = ownership {
            let name = bucket.name.clone();
            self.meta(move |m| m.set_bucket_ownership(&name, Some(o.as_str())))
                .await?;
        }
        if acl != Acl::private(bucket_owner(bucket)) {
            let (name, text) = (bucket.name.clone(), to_json(&acl)?);
            self.meta(move |m| m.set_bucket_acl(&name, Some(&text)))
                .await?;
        }
        self.bucket_access_changed(&bucket.name);
        Ok(())
    }

    /// Checks what CreateBucket asks of ACL and ownership before the bucket exists.
    pub(super) fn create_bucket_asks(
        &self,
        input: &dto::CreateBucketInput,
        headers: &http::HeaderMap,
        owner: &str,
    ) -> S3Result<(Asked, Option<Ownership>)> {
        let asked = asked(input.acl.as_ref().map(|a| a.as_str()), headers, true)?;
        let ownership = input
            .object_ownership
            .as_ref()
            .map(|o| {
                Ownership::parse(o.as_str()).ok_or_else(|| {
                    invalid(format!(
                        "x-amz-object-ownership {:?} is not BucketOwnerEnforced, BucketOwnerPreferred or ObjectWriter",
                        o.as_str()
                    ))
                })
            })
            .transpose()?;
        let acl = resolve(&asked, owner, owner, false);
        if ownership.is_some_and(|o| !o.acls_enabled()) && !acl.is_owner_only() {
            return Err(error(
                S3ErrorCode::InvalidBucketAclWithObjectOwnership,
                "Bucket cannot have ACLs set with ObjectOwnership's BucketOwnerEnforced setting",
            ));
        }
        self.check_grantees(&acl)?;
        Ok((asked, ownership))
    }

    /// S3's Owner and Grants of `acl`, with display names.
    fn acl_answer(&self, acl: &Acl) -> (dto::Owner, dto::Grants) {
        let name = |id: &str| {
            self.accounts()
                .display_name(id)
                .unwrap_or_else(|| id.to_owned())
        };
        let owner = dto::Owner {
            display_name: Some(name(&acl.owner)),
            id: Some(acl.owner.clone()),
        };
        let grants = acl
            .grants
            .iter()
            .map(|g| dto::Grant {
                grantee: Some(match &g.grantee {
                    Grantee::User(id) => dto::Grantee {
                        display_name: Some(name(id)),
                        email_address: None,
                        id: Some(id.clone()),
                        type_: dto::Type::from_static(dto::Type::CANONICAL_USER),
                        uri: None,
                    },
                    group => dto::Grantee {
                        display_name: None,
                        email_address: None,
                        id: None,
                        type_: dto::Type::from_static(dto::Type::GROUP),
                        uri: group.uri().map(str::to_owned),
                    },
                }),
                permission: Some(dto::Permission::from(g.permission.as_str().to_owned())),
            })
            .collect();
        (owner, grants)
    }

    pub(super) async fn do_get_bucket_acl(
        &self,
        req: S3Request<dto::GetBucketAclInput>,
    ) -> S3Result<S3Response<dto::GetBucketAclOutput>> {
        let bucket = self.require_bucket(&req.input.bucket).await?;
        let ownership = self
            .stored_ownership(&bucket.name)
            .await?
            .unwrap_or(DEFAULT_OWNERSHIP);
        let acl = if ownership.acls_enabled() {
            self.stored_bucket_acl(&bucket).await?
        } else {
            Acl::private(bucket_owner(&bucket))
        };
        let (owner, grants) = self.acl_answer(&acl);
        Ok(S3Response::new(dto::GetBucketAclOutput {
            grants: Some(grants),
            owner: Some(owner),
        }))
    }

    pub(super) async fn do_put_bucket_acl(
        &self,
        req: S3Request<dto::PutBucketAclInput>,
    ) -> S3Result<S3Response<dto::PutBucketAclOutput>> {
        let input = req.input;
        let bucket = self.require_bucket(&input.bucket).await?;
        let owner = bucket_owner(&bucket).to_owned();
        let asked = acl_request(
            input.acl.as_ref().map(|a| a.as_str()),
            input.access_control_policy,
            &req.headers,
            &owner,
            true,
        )?;
        let acl = resolve(&asked, &owner, &owner, false);
        let ownership = self
            .stored_ownership(&bucket.name)
            .await?
            .unwrap_or(DEFAULT_OWNERSHIP);
        let block = self.stored_block(&bucket.name).await?.unwrap_or_default();
        check_allowed(
            &acl,
            &asked,
            ownership,
            block.block_public_acls,
            &bucket.name,
        )?;
        self.check_grantees(&acl)?;
        let stored = (acl != Acl::private(&owner))
            .then(|| to_json(&acl))
            .transpose()?;
        let name = bucket.name.clone();
        self.meta(move |m| m.set_bucket_acl(&name, stored.as_deref()))
            .await?;
        self.bucket_access_changed(&bucket.name);
        tracing::info!(
            bucket = bucket.name,
            public = acl.is_public(),
            "bucket acl set"
        );
        Ok(S3Response::new(dto::PutBucketAclOutput {}))
    }

    pub(super) async fn do_get_object_acl(
        &self,
        req: S3Request<dto::GetObjectAclInput>,
    ) -> S3Result<S3Response<dto::GetObjectAclOutput>> {
        let input = req.input;
        let (bucket, version) = self
            .lookup(&input.bucket, &input.key, input.version_id.as_deref())
            .await?;
        let ownership = self
            .stored_ownership(&bucket.name)
            .await?
            .unwrap_or(DEFAULT_OWNERSHIP);
        let acl = version_acl(&version, bucket_owner(&bucket), ownership);
        let (owner, grants) = self.acl_answer(&acl);
        let mut out = S3Response::new(dto::GetObjectAclOutput {
            grants: Some(grants),
            owner: Some(owner),
            request_charged: None,
        });
        if let Some(id) = reported_version_id(&bucket, &version.version_id) {
            out.headers.insert(
                "x-amz-version-id",
                http::HeaderValue::from_str(&id)
                    .map_err(|e| crate::error::internal(e.to_string()))?,
            );
        }
        Ok(out)
    }

    pub(super) async fn do_put_object_acl(
        &self,
        req: S3Request<dto::PutObjectAclInput>,
    ) -> S3Result<S3Response<dto::PutObjectAclOutput>> {
        let input = req.input;
        let (bucket, version) = self
            .lookup(&input.bucket, &input.key, input.version_id.as_deref())
            .await?;
        let ownership = self
            .stored_ownership(&bucket.name)
            .await?
            .unwrap_or(DEFAULT_OWNERSHIP);
        let bucket_owner = bucket_owner(&bucket).to_owned();
        let owner = version_acl(&version, &bucket_owner, ownership).owner;
        let asked = acl_request(
            input.acl.as_ref().map(|a| a.as_str()),
            input.access_control_policy,
            &req.headers,
            &owner,
            false,
        )?;
        let acl = resolve(&asked, &owner, &bucket_owner, true);
        let block = self.stored_block(&bucket.name).await?.unwrap_or_default();
        check_allowed(
            &acl,
            &asked,
            ownership,
            block.block_public_acls,
            &bucket.name,
        )?;
        self.check_grantees(&acl)?;
        let stored =
            (ownership.acls_enabled() && acl != Acl::private(&bucket_owner)).then_some(acl);
        let (b, k, id) = (
            version.bucket.clone(),
            version.key.clone(),
            version.version_id.clone(),
        );
        let changed = self
            .meta(move |m| m.set_object_acl(&b, &k, &id, stored.as_ref()))
            .await?;
        if !changed {
            return Err(error(
                S3ErrorCode::NoSuchKey,
                format!(
                    "object {} in bucket {} was deleted or replaced while its ACL was set",
                    input.key, input.bucket
                ),
            ));
        }
        Ok(S3Response::new(dto::PutObjectAclOutput {
            request_charged: None,
        }))
    }

    pub(super) async fn do_put_bucket_ownership_controls(
        &self,
        req: S3Request<dto::PutBucketOwnershipControlsInput>,
    ) -> S3Result<S3Response<dto::PutBucketOwnershipControlsOutput>> {
        let input = req.input;
        let bucket = self.require_bucket(&input.bucket).await?;
        let rules = input.ownership_controls.rules;
        let [rule] = rules.as_slice() else {
            return Err(error(
                S3ErrorCode::MalformedXML,
                format!(
                    "OwnershipControls must hold exactly one Rule ({} given)",
                    rules.len()
                ),
            ));
        };
        let ownership = Ownership::parse(rule.object_ownership.as_str()).ok_or_else(|| {
            error(
                S3ErrorCode::MalformedXML,
                format!(
                    "ObjectOwnership {:?} is not BucketOwnerEnforced, BucketOwnerPreferred or ObjectWriter",
                    rule.object_ownership.as_str()
                ),
            )
        })?;
        if !ownership.acls_enabled() && !self.stored_bucket_acl(&bucket).await?.is_owner_only() {
            return Err(error(
                S3ErrorCode::InvalidBucketAclWithObjectOwnership,
                format!(
                    "bucket {}'s ACL grants to others than its owner; set it to private before BucketOwnerEnforced",
                    bucket.name
                ),
            ));
        }
        let name = bucket.name.clone();
        self.meta(move |m| m.set_bucket_ownership(&name, Some(ownership.as_str())))
            .await?;
        self.bucket_access_changed(&bucket.name);
        tracing::info!(
            bucket = bucket.name,
            ownership = ownership.as_str(),
            "object ownership set"
        );
        Ok(S3Response::new(dto::PutBucketOwnershipControlsOutput {}))
    }

    pub(super) async fn do_get_bucket_ownership_controls(
        &self,
        req: S3Request<dto::GetBucketOwnershipControlsInput>,
    ) -> S3Result<S3Response<dto::GetBucketOwnershipControlsOutput>> {
        let bucket = self.require_bucket(&req.input.bucket).await?;
        let Some(ownership) = self.stored_ownership(&bucket.name).await? else {
            return Err(error(
                S3ErrorCode::OwnershipControlsNotFoundError,
                format!(
                    "The bucket ownership controls were not found: bucket {} has none (ACLs work as under ObjectWriter)",
                    bucket.name
                ),
            ));
        };
        Ok(S3Response::new(dto::GetBucketOwnershipControlsOutput {
            ownership_controls: Some(dto::OwnershipControls {
                rules: vec![dto::OwnershipControlsRule {
                    object_ownership: dto::ObjectOwnership::from(ownership.as_str().to_owned()),
                }],
            }),
        }))
    }

    pub(super) async fn do_delete_bucket_ownership_controls(
        &self,
        req: S3Request<dto::DeleteBucketOwnershipControlsInput>,
    ) -> S3Result<S3Response<dto::DeleteBucketOwnershipControlsOutput>> {
        let name = req.input.bucket;
        let n = name.clone();
        self.meta(move |m| m.set_bucket_ownership(&n, None)).await?;
        self.bucket_access_changed(&name);
        Ok(S3Response::new(dto::DeleteBucketOwnershipControlsOutput {}))
    }
}

/// What a Put{Bucket,Object}Acl asks: a canned ACL, grant headers or a body, exactly one.
fn acl_request(
    canned: Option<&str>,
    body: Option<dto::AccessControlPolicy>,
    headers: &http::HeaderMap,
    owner: &str,
    bucket: bool,
) -> S3Result<Asked> {
    let from_headers = asked(canned, headers, bucket)?;
    match (body, from_headers) {
        (Some(_), Asked::Canned(_) | Asked::Grants(_)) => Err(error(
            S3ErrorCode::UnexpectedContent,
            "This request does not support content: give the ACL as a canned ACL, grant headers or a body, not several",
        )),
        (Some(policy), Asked::Nothing) => from_policy(policy, owner),
        (None, Asked::Nothing) => Err(error(
            S3ErrorCode::MissingSecurityHeader,
            "PutAcl needs x-amz-acl, x-amz-grant-* headers or an AccessControlPolicy body",
        )),
        (None, asked) => Ok(asked),
    }
}

fn to_json(acl: &Acl) -> S3Result<String> {
    serde_json::to_string(acl)
        .map_err(|e| crate::error::internal(format!("an ACL does not serialize: {e}")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn code(e: &S3Error) -> String {
        e.code().as_str().to_owned()
    }

    #[test]
    fn canned_acls_are_checked_and_exclusive_with_grant_headers() {
        let none = headers(&[]);
        assert_eq!(
            asked(Some("public-read"), &none, false).unwrap(),
            Asked::Canned(Canned::PublicRead)
        );
        let e = asked(Some("public"), &none, false).unwrap_err();
        assert_eq!(code(&e), "InvalidArgument");
        assert!(e.message().unwrap().contains("\"public\""), "{e:?}");
        assert_eq!(
            code(&asked(Some("log-delivery-write"), &none, false).unwrap_err()),
            "InvalidArgument"
        );
        assert!(asked(Some("log-delivery-write"), &none, true).is_ok());
        let grants = headers(&[("x-amz-grant-read", "id=\"bob\"")]);
        assert_eq!(
            code(&asked(Some("private"), &grants, false).unwrap_err()),
            "InvalidRequest"
        );
        assert_eq!(asked(None, &none, false).unwrap(), Asked::Nothing);
    }

    #[test]
    fn grant_headers_name_users_and_groups() {
        let h = headers(&[
            (
                "x-amz-grant-read",
                "uri=\"http://acs.amazonaws.com/groups/global/AllUsers\", id=\"bob\"",
            ),
            ("x-amz-grant-full-control", "id=carol"),
        ]);
        let Asked::Grants(g) = asked(None, &h, false).unwrap() else {
            panic!("grants expected");
        };
        assert_eq!(
            g,
            vec![
                Grant {
                    grantee: Grantee::AllUsers,
                    permission: Permission::Read
                },
                Grant {
                    grantee: Grantee::User("bob".into()),
                    permission: Permission::Read
                },
                Grant {
                    grantee: Grantee::User("carol".into()),
                    permission: Permission::FullControl
                },
            ]
        );
        for (value, expected) in [
            ("emailAddress=\"a@b.c\"", "UnresolvableGrantByEmailAddress"),
            ("uri=\"http://example.org/group\"", "InvalidArgument"),
            ("name=\"bob\"", "InvalidArgument"),
            ("bob", "InvalidArgument"),
            ("", "InvalidArgument"),
        ] {
            let e = asked(None, &headers(&[("x-amz-grant-write", value)]), true).unwrap_err();
            assert_eq!(code(&e), expected, "{value}");
        }
        let many = (0..=MAX_GRANTS)
            .map(|i| format!("id=\"u{i}\""))
            .collect::<Vec<_>>()
            .join(",");
        let e = asked(None, &headers(&[("x-amz-grant-read", &many)]), true).unwrap_err();
        assert_eq!(code(&e), "MalformedACLError");
    }

    #[test]
    fn bucket_owner_enforced_accepts_only_the_owners_full_control() {
        let owner_only = Asked::Canned(Canned::BucketOwnerFullControl);
        let acl = resolve(&owner_only, "alice", "alice", true);
        assert!(
            check_allowed(
                &acl,
                &owner_only,
                Ownership::BucketOwnerEnforced,
                false,
                "b"
            )
            .is_ok()
        );
        let public = Asked::Canned(Canned::PublicRead);
        let acl = resolve(&public, "alice", "alice", true);
        let e =
            check_allowed(&acl, &public, Ownership::BucketOwnerEnforced, false, "b").unwrap_err();
        assert_eq!(code(&e), "AccessControlListNotSupported");
        assert!(check_allowed(&acl, &public, Ownership::ObjectWriter, false, "b").is_ok());
        let e = check_allowed(&acl, &public, Ownership::ObjectWriter, true, "b").unwrap_err();
        assert_eq!(code(&e), "AccessDenied");
        let body = Asked::Grants(vec![Grant {
            grantee: Grantee::User("alice".into()),
            permission: Permission::FullControl,
        }]);
        let acl = resolve(&body, "alice", "alice", false);
        assert!(check_allowed(&acl, &body, Ownership::BucketOwnerEnforced, true, "b").is_ok());
    }

    #[test]
    fn an_acl_body_cannot_change_owners_or_grant_by_email() {
        let policy = |owner: &str, grantee: dto::Grantee| dto::AccessControlPolicy {
            owner: Some(dto::Owner {
                display_name: None,
                id: Some(owner.into()),
            }),
            grants: Some(vec![dto::Grant {
                grantee: Some(grantee),
                permission: Some(dto::Permission::from("READ".to_owned())),
            }]),
        };
        let user = |id: &str| dto::Grantee {
            display_name: None,
            email_address: None,
            id: Some(id.into()),
            type_: dto::Type::from_static(dto::Type::CANONICAL_USER),
            uri: None,
        };
        assert_eq!(
            from_policy(policy("alice", user("bob")), "alice").unwrap(),
            Asked::Grants(vec![Grant {
                grantee: Grantee::User("bob".into()),
                permission: Permission::Read
            }])
        );
        assert_eq!(
            code(&from_policy(policy("mallory", user("bob")), "alice").unwrap_err()),
            "AccessDenied"
        );
        let email = dto::Grantee {
            display_name: None,
            email_address: Some("bob@example.org".into()),
            id: None,
            type_: dto::Type::from_static(dto::Type::AMAZON_CUSTOMER_BY_EMAIL),
            uri: None,
        };
        assert_eq!(
            code(&from_policy(policy("alice", email), "alice").unwrap_err()),
            "UnresolvableGrantByEmailAddress"
        );
    }
}
