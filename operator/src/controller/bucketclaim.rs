//! BucketClaims: a bucket on a StorageGateway, a gateway user owning it (the claim's quota),
//! a key allowed only that bucket, and a Secret in the claim's namespace holding the key and
//! endpoint under the names S3 clients read. A finalizer runs the deletion policy.
//!
//! Everything is derived from the claim's uid, so a pass that fails half-way (or whose
//! status write is lost) is simply run again: the user id, the access key id and a generated
//! bucket name are the same every time, and the gateway's creates are idempotent. The secret
//! key is chosen once, when the Secret is made, and the Secret is its record: later passes
//! read it back and make the gateway hold that key (never a new one).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use rand::Rng;
use rand::distr::Alphanumeric;
use sublet_crds::{
    BucketClaim, BucketClaimStatus, Condition, DeletionPolicy, StorageGateway, find_condition,
    set_condition,
};
use tracing::info;

use super::pool::WithGeneration;
use super::{Context, INVALID_RESYNC, RESYNC, create_if_missing, patch_status};
use crate::admin::{AdminAccess, BucketAnswer, BucketRemoval, ClaimUser, KeyAnswer};
use crate::render::gateway::{ADMIN_TOKEN_KEY, admin_token_secret_name, admin_url};
use crate::render::{labels, namespace_of, owned_meta};
use crate::{Error, Result};

/// Holds a deleted claim until its deletion policy has run on the gateway.
pub const FINALIZER: &str = "sublet.dev/bucket-claim";
/// The region in the Secret: the gateway accepts any; SDKs want one.
pub const REGION: &str = "us-east-1";
/// How soon a claim waiting on something outside it (a gateway starting, a bucket to be
/// emptied) is looked at again.
pub const WAIT: Duration = Duration::from_secs(15);
/// The `app.kubernetes.io/name` of the Secrets the operator writes for claims.
pub const APP_CLAIM: &str = "sublet-bucket-claim";

/// The keys of the claim's Secret, the names Rook's ObjectBucketClaim and the AWS SDKs use.
pub mod keys {
    pub const ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
    pub const SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";
    pub const ENDPOINT_URL: &str = "AWS_ENDPOINT_URL";
    pub const REGION: &str = "AWS_REGION";
    pub const BUCKET_NAME: &str = "BUCKET_NAME";
    pub const BUCKET_HOST: &str = "BUCKET_HOST";
    pub const BUCKET_PORT: &str = "BUCKET_PORT";
    pub const BUCKET_REGION: &str = "BUCKET_REGION";
}

/// The gateway user owning a claim's bucket: `bc-` and the claim's uid.
pub fn user_id(claim: &BucketClaim) -> Result<String> {
    Ok(format!("bc-{}", uid(claim)?))
}

/// The claim's access key id: `BC` and the uid's hex digits, upper case (34 characters).
pub fn access_key_id(claim: &BucketClaim) -> Result<String> {
    let hex: String = uid(claim)?
        .chars()
        .filter(char::is_ascii_hexdigit)
        .map(|c| c.to_ascii_uppercase())
        .collect();
    Ok(format!("BC{hex}"))
}

fn uid(claim: &BucketClaim) -> Result<&str> {
    claim
        .metadata
        .uid
        .as_deref()
        .ok_or_else(|| Error::MissingField {
            kind: "BucketClaim",
            name: claim.name_any(),
            field: "metadata.uid",
        })
}

/// The Secret handed to the claim's workloads, owned by the claim (it goes with it).
pub fn claim_secret(
    claim: &BucketClaim,
    gateway: &StorageGateway,
    bucket: &str,
    access_key: &str,
    secret_key: &str,
) -> Result<Secret> {
    let (host, port) = endpoint(gateway)?;
    let port = port.to_string();
    let data = BTreeMap::from([
        (keys::ACCESS_KEY_ID.into(), access_key.to_owned()),
        (keys::SECRET_ACCESS_KEY.into(), secret_key.to_owned()),
        (keys::ENDPOINT_URL.into(), format!("http://{host}:{port}")),
        (keys::REGION.into(), REGION.into()),
        (keys::BUCKET_NAME.into(), bucket.to_owned()),
        (keys::BUCKET_HOST.into(), host),
        (keys::BUCKET_PORT.into(), port),
        (keys::BUCKET_REGION.into(), REGION.into()),
    ]);
    let name = claim.name_any();
    Ok(Secret {
        metadata: owned_meta(claim, claim.secret(), labels(APP_CLAIM, &name, &[]))?,
        string_data: Some(data),
        type_: Some("Opaque".into()),
        ..Secret::default()
    })
}

/// The gateway's S3 Service inside the cluster: host and port.
fn endpoint(gateway: &StorageGateway) -> Result<(String, u16)> {
    let host = format!("{}.{}.svc", gateway.name_any(), namespace_of(gateway)?);
    Ok((host, gateway.spec.service.port))
}

/// What is wrong with the endpoint a claim's Secret names, when the gateway's S3 Service
/// answers elsewhere now (its port was changed). The operator never changes a Secret (it
/// may create and read them only), so the fix is the user's: deleting the Secret.
fn stale_endpoint(secret: &Secret, gateway: &StorageGateway) -> Result<Option<String>> {
    let (host, port) = endpoint(gateway)?;
    let url = format!("http://{host}:{port}");
    let written = secret_value(secret, keys::ENDPOINT_URL);
    if written.as_deref() == Some(url.as_str())
        && secret_value(secret, keys::BUCKET_PORT) == Some(port.to_string())
    {
        return Ok(None);
    }
    Ok(Some(format!(
        "Secret {} names endpoint {} but StorageGateway {}'s S3 Service is {url} now; the \
         operator never changes a Secret: delete it and the next pass writes it with the \
         endpoint (and a new key)",
        secret.name_any(),
        written.unwrap_or_else(|| "(none)".into()),
        gateway.name_any()
    )))
}

/// A key of a Secret read back from the API server, as text.
fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone()).ok()
}

fn owned_by(secret: &Secret, claim: &BucketClaim) -> bool {
    secret
        .owner_references()
        .iter()
        .any(|o| Some(&o.uid) == claim.metadata.uid.as_ref() && o.kind == "BucketClaim")
}

fn random_secret() -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(40)
        .map(char::from)
        .collect()
}

/// The gateway's admin API and token, or why the claim must wait.
async fn admin_access(
    ctx: &Context,
    gateway: &StorageGateway,
) -> Result<Result<AdminAccess, String>> {
    let ns = namespace_of(gateway)?;
    let name = admin_token_secret_name(gateway);
    let secret = Api::<Secret>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&name)
        .await
        .map_err(Error::kube("get", "Secret", name.clone()))?;
    let Some(token) = secret.and_then(|s| secret_value(&s, ADMIN_TOKEN_KEY)) else {
        return Ok(Err(format!(
            "StorageGateway {} has no admin token yet (Secret {name}); waiting for it to start",
            gateway.name_any()
        )));
    };
    Ok(Ok(AdminAccess {
        url: admin_url(gateway)?,
        token,
    }))
}

async fn find_gateway(ctx: &Context, claim: &BucketClaim) -> Result<Option<StorageGateway>> {
    let name = &claim.spec.gateway;
    Api::<StorageGateway>::namespaced(ctx.client.clone(), &namespace_of(claim)?)
        .get_opt(name)
        .await
        .map_err(Error::kube("get", "StorageGateway", name.clone()))
}

/// Replaces the claim's finalizers; the resourceVersion makes a concurrent change fail rather
/// than be overwritten.
async fn set_finalizers(claim: &BucketClaim, ctx: &Context, finalizers: Vec<String>) -> Result<()> {
    let name = claim.name_any();
    let mut metadata = serde_json::json!({ "finalizers": finalizers });
    if let Some(version) = &claim.metadata.resource_version {
        metadata["resourceVersion"] = serde_json::json!(version);
    }
    Api::<BucketClaim>::namespaced(ctx.client.clone(), &namespace_of(claim)?)
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "metadata": metadata })),
        )
        .await
        .map_err(Error::kube("update finalizers of", "BucketClaim", name))?;
    Ok(())
}

/// Sets phase and the `Bound` condition, writes status, and sends a Warning Event when a
/// problem is new.
async fn report(
    claim: &BucketClaim,
    ctx: &Context,
    mut status: BucketClaimStatus,
    phase: &str,
    bound: bool,
    reason: &str,
    message: String,
) -> Result<()> {
    let now = ctx.now_text();
    let new_problem = (!bound || reason != "Bound")
        && find_condition(&status.conditions, "Bound")
            .is_none_or(|c| c.reason != reason || c.message != message);
    status.phase = Some(phase.to_owned());
    set_condition(
        &mut status.conditions,
        Condition::new("Bound", bound, reason, message.clone()).with_generation(claim),
        &now,
    );
    patch_status(&ctx.client, claim, &status).await?;
    if new_problem {
        ctx.event(claim, EventType::Warning, reason, message, "Bind")
            .await;
    }
    Ok(())
}

/// A claim that cannot go on now: reports why (`phase`, `Bound=False` with `reason`, a Warning
/// Event when the problem is new) and looks at it again after `again`.
async fn not_bound(
    claim: &BucketClaim,
    ctx: &Context,
    status: BucketClaimStatus,
    phase: &str,
    reason: &str,
    message: String,
    again: Duration,
) -> Result<Action> {
    report(claim, ctx, status, phase, false, reason, message).await?;
    Ok(Action::requeue(again))
}

/// Reconciles one claim: bucket, user and key on the gateway, the Secret, status.
pub async fn reconcile(claim: Arc<BucketClaim>, ctx: Arc<Context>) -> Result<Action> {
    let ns = namespace_of(&*claim)?;
    let status = claim.status.clone().unwrap_or_default();
    if claim.metadata.deletion_timestamp.is_some() {
        return release(&claim, &ctx, status).await;
    }
    let problems = claim.spec.validate();
    if !problems.is_empty() {
        let message = problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        return not_bound(
            &claim,
            &ctx,
            status,
            "Failed",
            "Invalid",
            message,
            INVALID_RESYNC,
        )
        .await;
    }
    let Some(gateway) = find_gateway(&ctx, &claim).await? else {
        let message = format!(
            "there is no StorageGateway {} in namespace {ns}; a claim names a gateway of its \
             own namespace",
            claim.spec.gateway
        );
        return not_bound(
            &claim,
            &ctx,
            status,
            "Pending",
            "GatewayNotFound",
            message,
            RESYNC,
        )
        .await;
    };
    let admin = match admin_access(&ctx, &gateway).await? {
        Ok(admin) => admin,
        Err(message) => {
            return not_bound(
                &claim,
                &ctx,
                status,
                "Pending",
                "GatewayStarting",
                message,
                WAIT,
            )
            .await;
        }
    };
    // The finalizer goes on before anything exists on the gateway, so nothing is left behind.
    if !claim.finalizers().iter().any(|f| f == FINALIZER) {
        let mut finalizers = claim.finalizers().to_vec();
        finalizers.push(FINALIZER.to_owned());
        set_finalizers(&claim, &ctx, finalizers).await?;
    }
    let bucket = claim.bucket().ok_or_else(|| Error::MissingField {
        kind: "BucketClaim",
        name: claim.name_any(),
        field: "metadata.uid",
    })?;
    let user = user_id(&claim)?;
    let access_key = access_key_id(&claim)?;
    let quota = claim.spec.quota.clone().unwrap_or_default();
    ctx.admin
        .put_user(
            &admin,
            &ClaimUser {
                id: user.clone(),
                display_name: format!("BucketClaim {ns}/{}", claim.name_any()),
                max_bytes: quota.max_bytes.map(|b| b.bytes()),
                max_objects: quota.max_objects,
            },
        )
        .await?;
    if let BucketAnswer::Refused { reason, message } = ctx
        .admin
        .claim_bucket(&admin, &bucket, &user, claim.spec.plan.as_deref())
        .await?
    {
        let message = match reason {
            "BucketTaken" => format!(
                "{message}; the claim never takes over a bucket: pick another bucketName, or \
                 generateBucketName"
            ),
            _ => message,
        };
        return not_bound(&claim, &ctx, status, "Pending", reason, message, RESYNC).await;
    }

    let secret_name = claim.secret();
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), &ns);
    let existing = secrets.get_opt(&secret_name).await.map_err(Error::kube(
        "get",
        "Secret",
        secret_name.clone(),
    ))?;
    let secret_key = match &existing {
        Some(secret) if !owned_by(secret, &claim) => {
            let message = format!(
                "Secret {secret_name} exists and is not this claim's; the claim never \
                 overwrites it: delete it, or set spec.secretName"
            );
            return not_bound(
                &claim,
                &ctx,
                status,
                "Pending",
                "SecretTaken",
                message,
                RESYNC,
            )
            .await;
        }
        Some(secret) => match (
            secret_value(secret, keys::ACCESS_KEY_ID),
            secret_value(secret, keys::SECRET_ACCESS_KEY),
        ) {
            (Some(id), Some(key)) if id == access_key => key,
            _ => {
                let message = format!(
                    "Secret {secret_name} was edited: it no longer holds key {access_key}; \
                     delete it and the operator writes it again with a new secret"
                );
                return not_bound(
                    &claim,
                    &ctx,
                    status,
                    "Pending",
                    "SecretEdited",
                    message,
                    RESYNC,
                )
                .await;
            }
        },
        None => random_secret(),
    };
    // The Secret, once written, is the record of the secret key: make the gateway hold it.
    // A key of the same id with another secret is one whose Secret was deleted (or never
    // written): it is replaced, so the old secret stops working.
    if ctx
        .admin
        .put_key(&admin, &user, &access_key, &secret_key, &bucket)
        .await?
        == KeyAnswer::Differs
    {
        ctx.admin.delete_key(&admin, &access_key).await?;
        if ctx
            .admin
            .put_key(&admin, &user, &access_key, &secret_key, &bucket)
            .await?
            == KeyAnswer::Differs
        {
            return Err(Error::Admin {
                url: admin.url.clone(),
                message: format!("key {access_key} was deleted but is still there"),
            });
        }
    }
    if existing.is_none() {
        let secret = claim_secret(&claim, &gateway, &bucket, &access_key, &secret_key)?;
        if !create_if_missing(&ctx.client, &secret).await? {
            // Made by a pass running beside this one: the next pass reads it and agrees.
            return Ok(Action::requeue(WAIT));
        }
        info!(claim = %claim.name_any(), namespace = %ns, %bucket, "bucket claim bound");
    }
    let status = BucketClaimStatus {
        bucket_name: Some(bucket.clone()),
        secret_name: Some(secret_name.clone()),
        user_id: Some(user),
        access_key_id: Some(access_key),
        ..status
    };
    // Still bound (the key works), but a Secret naming an old port must be said.
    let stale = match &existing {
        Some(secret) => stale_endpoint(secret, &gateway)?,
        None => None,
    };
    let (reason, message) = match stale {
        Some(stale) => ("EndpointChanged", stale),
        None => (
            "Bound",
            format!(
                "bucket {bucket} on StorageGateway {}; key and endpoint in Secret {secret_name}",
                gateway.name_any()
            ),
        ),
    };
    report(&claim, &ctx, status, "Bound", true, reason, message).await?;
    Ok(Action::requeue(RESYNC))
}

/// A deleted claim: runs its deletion policy on the gateway, then lets it go (its Secret goes
/// with it, by owner reference).
async fn release(claim: &BucketClaim, ctx: &Context, status: BucketClaimStatus) -> Result<Action> {
    if !claim.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let done = || async {
        let finalizers = claim
            .finalizers()
            .iter()
            .filter(|f| *f != FINALIZER)
            .cloned()
            .collect();
        set_finalizers(claim, ctx, finalizers).await?;
        Ok::<_, Error>(Action::await_change())
    };
    // A gateway that is gone took its users and keys with it: nothing to undo.
    let Some(gateway) = find_gateway(ctx, claim).await? else {
        info!(claim = %claim.name_any(), "gateway gone; claim released");
        return done().await;
    };
    let admin = match admin_access(ctx, &gateway).await? {
        Ok(admin) => admin,
        Err(message) => {
            return not_bound(
                claim,
                ctx,
                status,
                "Deleting",
                "GatewayStarting",
                message,
                WAIT,
            )
            .await;
        }
    };
    let user = user_id(claim)?;
    let access_key = access_key_id(claim)?;
    let bucket = claim.bucket();
    if claim.spec.deletion_policy == DeletionPolicy::Delete
        && let Some(bucket) = &bucket
    {
        match ctx.admin.delete_bucket(&admin, bucket, &user).await? {
            BucketRemoval::Gone => {}
            // Never another user's: a bucket the claim never bound is left as it is.
            BucketRemoval::NotOwned(why) => {
                info!(claim = %claim.name_any(), %bucket, %why, "bucket left alone");
            }
            BucketRemoval::NotEmpty(why) => {
                let message = format!(
                    "deleting, but {why}; the key in Secret {} works until then (or set \
                     deletionPolicy: Retain to keep the bucket)",
                    claim.secret()
                );
                return not_bound(
                    claim,
                    ctx,
                    status,
                    "Deleting",
                    "BucketNotEmpty",
                    message,
                    WAIT,
                )
                .await;
            }
        }
    }
    ctx.admin.delete_key(&admin, &access_key).await?;
    // Kept while it owns a retained bucket: the bucket's quota and usage stay its.
    let user_gone = ctx.admin.delete_user(&admin, &user).await?;
    info!(
        claim = %claim.name_any(),
        policy = ?claim.spec.deletion_policy,
        user_kept = !user_gone,
        "claim released"
    );
    done().await
}
