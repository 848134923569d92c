//! Object lock: Put/GetObjectLockConfiguration, Put/GetObjectRetention,
//! Put/GetObjectLegalHold, the lock headers of writes (PUT, copy, multipart) and reads
//! (GET, HEAD). The rules themselves are [`crate::meta::lock`]'s; removal is refused by
//! [`crate::node::Node::remove_version`].

use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use super::{Gateway, timestamp};
use crate::error::internal;
use crate::meta::ObjectVersion;
use crate::meta::lock::{
    BucketLock, DefaultRetention, LockMode, ObjectLock, Period, Retention, date,
};
use crate::node::now_ms;

fn invalid_request(message: impl Into<String>) -> S3Error {
    S3Error::with_message(S3ErrorCode::InvalidRequest, message.into())
}

fn invalid_argument(message: impl Into<String>) -> S3Error {
    S3Error::with_message(S3ErrorCode::InvalidArgument, message.into())
}

fn no_lock_on(bucket: &str) -> S3Error {
    invalid_request(format!(
        "Bucket is missing Object Lock Configuration: bucket {bucket} was not created with object lock enabled (x-amz-bucket-object-lock-enabled: true) nor given an object lock configuration"
    ))
}

/// Unix milliseconds of an S3 timestamp.
fn millis(t: &Timestamp) -> Option<i64> {
    let mut buf = Vec::new();
    t.format(TimestampFormat::EpochSeconds, &mut buf).ok()?;
    let text = String::from_utf8(buf).ok()?;
    let seconds: f64 = text.parse().ok()?;
    let ms = (seconds * 1000.0).round();
    (ms.is_finite() && ms.abs() < 1e15).then_some(ms as i64)
}

fn mode_of(value: &str, what: &str) -> S3Result<LockMode> {
    LockMode::parse(value).ok_or_else(|| {
        invalid_argument(format!(
            "{what} must be GOVERNANCE or COMPLIANCE, not {value:?}"
        ))
    })
}

fn legal_hold_of(value: &str, what: &str) -> S3Result<bool> {
    match value {
        ObjectLockLegalHoldStatus::ON => Ok(true),
        ObjectLockLegalHoldStatus::OFF => Ok(false),
        other => Err(invalid_argument(format!(
            "{what} must be ON or OFF, not {other:?}"
        ))),
    }
}

/// A retention asked for at `now`: both a mode and a date, the date in the future.
fn retention_of(
    mode: Option<&str>,
    until: Option<&Timestamp>,
    now: i64,
    mode_name: &str,
) -> S3Result<Option<Retention>> {
    match (mode, until) {
        (None, None) => Ok(None),
        (Some(_), None) | (None, Some(_)) => Err(invalid_argument(format!(
            "{mode_name} and the retain-until date must be given together"
        ))),
        (Some(mode), Some(until)) => {
            let mode = mode_of(mode, mode_name)?;
            let until = millis(until)
                .ok_or_else(|| invalid_argument("the retain-until date is not a valid date"))?;
            if until <= now {
                return Err(invalid_argument(format!(
                    "The retain until date must be in the future! ({} is not after {})",
                    date(until),
                    date(now)
                )));
            }
            Ok(Some(Retention { mode, until }))
        }
    }
}

/// The lock a write's headers ask for (`x-amz-object-lock-mode`,
/// `x-amz-object-lock-retain-until-date`, `x-amz-object-lock-legal-hold`).
pub(super) fn requested_lock(
    mode: Option<&ObjectLockMode>,
    until: Option<&Timestamp>,
    legal_hold: Option<&ObjectLockLegalHoldStatus>,
) -> S3Result<ObjectLock> {
    Ok(ObjectLock {
        retention: retention_of(
            mode.map(|m| m.as_str()),
            until,
            now_ms(),
            "x-amz-object-lock-mode",
        )?,
        legal_hold: legal_hold
            .map(|h| legal_hold_of(h.as_str(), "x-amz-object-lock-legal-hold"))
            .transpose()?
            .unwrap_or(false),
    })
}

/// What GET and HEAD answer of a version's lock: mode, retain-until date, legal hold.
pub(super) fn lock_headers(
    v: &ObjectVersion,
) -> (
    Option<ObjectLockMode>,
    Option<Timestamp>,
    Option<ObjectLockLegalHoldStatus>,
) {
    let lock = &v.attrs.lock;
    (
        lock.retention
            .map(|r| ObjectLockMode::from(r.mode.as_str().to_owned())),
        lock.retention.map(|r| timestamp(r.until)),
        lock.legal_hold
            .then(|| ObjectLockLegalHoldStatus::from_static(ObjectLockLegalHoldStatus::ON)),
    )
}

/// Whether a request may bypass GOVERNANCE retention: its key is allowed to
/// (`bypassGovernance`) and it asked with `x-amz-bypass-governance-retention: true`.
pub(super) fn bypasses_governance(extensions: &http::Extensions, asked: Option<bool>) -> bool {
    asked == Some(true)
        && extensions
            .get::<crate::s3::auth::GovernanceBypass>()
            .is_some()
}

impl Gateway {
    /// The bucket's object lock configuration; `None` when object lock is not enabled.
    pub(super) async fn bucket_lock(&self, bucket: &str) -> S3Result<Option<BucketLock>> {
        let b = bucket.to_owned();
        let Some(stored) = self.meta(move |m| m.bucket_lock(&b)).await? else {
            return Ok(None);
        };
        BucketLock::from_column(&stored).map(Some).map_err(|e| {
            internal(format!(
                "bucket {bucket}: stored object lock configuration: {e}"
            ))
        })
    }

    /// The lock a new version of `bucket` gets: what its write asked for, else the bucket's
    /// default retention. Asking for a lock in a bucket without object lock is refused.
    pub(super) async fn lock_for_new(
        &self,
        bucket: &str,
        requested: ObjectLock,
    ) -> S3Result<ObjectLock> {
        match self.bucket_lock(bucket).await? {
            Some(config) => Ok(config.lock_for_new(requested, now_ms())),
            None if requested.is_none() => Ok(requested),
            None => Err(no_lock_on(bucket)),
        }
    }

    /// Enables object lock on a new bucket (CreateBucket with
    /// `x-amz-bucket-object-lock-enabled: true`).
    pub(super) async fn enable_lock(&self, bucket: &str) -> S3Result<()> {
        let (b, config) = (bucket.to_owned(), BucketLock::default().to_column());
        self.meta(move |m| m.set_bucket_lock(&b, &config)).await?;
        Ok(())
    }

    /// The version a lock request names (the latest when no version id is given).
    async fn locked_version(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> S3Result<ObjectVersion> {
        if self.bucket_lock(bucket).await?.is_none() {
            self.require_bucket(bucket).await?;
            return Err(no_lock_on(bucket));
        }
        Ok(self.lookup(bucket, key, version_id).await?.1)
    }

    /// Changes a version's lock with `change` (which may refuse), retrying when another
    /// change got in between.
    async fn change_lock(
        &self,
        v: ObjectVersion,
        change: impl Fn(&ObjectLock) -> S3Result<ObjectLock>,
    ) -> S3Result<()> {
        let mut current = v;
        for _ in 0..8 {
            let expected = current.attrs.lock;
            let new = change(&expected)?;
            if new == expected {
                return Ok(());
            }
            let (b, k, id) = (
                current.bucket.clone(),
                current.key.clone(),
                current.version_id.clone(),
            );
            let changed = self
                .meta(move |m| m.set_version_lock(&b, &k, &id, &expected, &new))
                .await?;
            if changed {
                tracing::info!(bucket = %current.bucket, key = %current.key, version_id = %current.version_id, lock = ?new, "object lock changed");
                return Ok(());
            }
            current = self
                .lookup(&current.bucket, &current.key, Some(&current.version_id))
                .await?
                .1;
        }
        Err(S3Error::with_message(
            S3ErrorCode::OperationAborted,
            "the object's lock kept changing while this request changed it; try again",
        ))
    }

    pub(super) async fn do_put_object_lock_configuration(
        &self,
        req: S3Request<PutObjectLockConfigurationInput>,
    ) -> S3Result<S3Response<PutObjectLockConfigurationOutput>> {
        let input = req.input;
        let bucket = self.require_bucket(&input.bucket).await?;
        let config = input.object_lock_configuration.unwrap_or_default();
        if config.object_lock_enabled.as_ref().map(|e| e.as_str())
            != Some(ObjectLockEnabled::ENABLED)
        {
            return Err(S3Error::with_message(
                S3ErrorCode::MalformedXML,
                "ObjectLockEnabled must be Enabled (object lock cannot be turned off)",
            ));
        }
        let already = self.bucket_lock(&input.bucket).await?.is_some();
        if !already && bucket.versioning != crate::meta::Versioning::Enabled {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidBucketState,
                format!(
                    "Versioning must be 'Enabled' on the bucket to apply a Object Lock configuration (bucket {} is {})",
                    input.bucket,
                    bucket.versioning.as_str()
                ),
            ));
        }
        let default_retention = match config.rule.and_then(|r| r.default_retention) {
            None => None,
            Some(d) => {
                let mode = d.mode.as_ref().map(|m| m.as_str()).ok_or_else(|| {
                    S3Error::with_message(
                        S3ErrorCode::MalformedXML,
                        "DefaultRetention needs a Mode (GOVERNANCE or COMPLIANCE)",
                    )
                })?;
                let mode = mode_of(mode, "DefaultRetention Mode")?;
                let period = match (d.days, d.years) {
                    (Some(days), None) if days > 0 => Period::Days(days.unsigned_abs()),
                    (None, Some(years)) if years > 0 && years <= 100 => {
                        Period::Years(years.unsigned_abs())
                    }
                    (Some(_), Some(_)) | (None, None) => {
                        return Err(S3Error::with_message(
                            S3ErrorCode::MalformedXML,
                            "DefaultRetention needs exactly one of Days and Years",
                        ));
                    }
                    _ => {
                        return Err(invalid_argument(
                            "Default retention period must be a positive integer value (Years at most 100)",
                        ));
                    }
                };
                Some(DefaultRetention { mode, period })
            }
        };
        let stored = BucketLock { default_retention }.to_column();
        let name = input.bucket.clone();
        self.meta(move |m| m.set_bucket_lock(&name, &stored))
            .await?;
        tracing::info!(bucket = %input.bucket, default = ?default_retention, "object lock configuration set");
        Ok(S3Response::new(PutObjectLockConfigurationOutput::default()))
    }

    pub(super) async fn do_get_object_lock_configuration(
        &self,
        req: S3Request<GetObjectLockConfigurationInput>,
    ) -> S3Result<S3Response<GetObjectLockConfigurationOutput>> {
        let bucket = req.input.bucket;
        self.require_bucket(&bucket).await?;
        let Some(config) = self.bucket_lock(&bucket).await? else {
            return Err(S3Error::with_message(
                S3ErrorCode::ObjectLockConfigurationNotFoundError,
                format!("Object Lock configuration does not exist for bucket {bucket}"),
            ));
        };
        let rule = config.default_retention.map(|d| ObjectLockRule {
            default_retention: Some(s3s::dto::DefaultRetention {
                mode: Some(ObjectLockRetentionMode::from(d.mode.as_str().to_owned())),
                days: match d.period {
                    Period::Days(n) => i32::try_from(n).ok(),
                    Period::Years(_) => None,
                },
                years: match d.period {
                    Period::Years(n) => i32::try_from(n).ok(),
                    Period::Days(_) => None,
                },
            }),
        });
        Ok(S3Response::new(GetObjectLockConfigurationOutput {
            object_lock_configuration: Some(ObjectLockConfiguration {
                object_lock_enabled: Some(ObjectLockEnabled::from_static(
                    ObjectLockEnabled::ENABLED,
                )),
                rule,
            }),
        }))
    }

    pub(super) async fn do_put_object_retention(
        &self,
        req: S3Request<PutObjectRetentionInput>,
    ) -> S3Result<S3Response<PutObjectRetentionOutput>> {
        let bypass = bypasses_governance(&req.extensions, req.input.bypass_governance_retention);
        let input = req.input;
        let v = self
            .locked_version(&input.bucket, &input.key, input.version_id.as_deref())
            .await?;
        let retention = input.retention.unwrap_or_default();
        let now = now_ms();
        let new = retention_of(
            retention.mode.as_ref().map(|m| m.as_str()),
            retention.retain_until_date.as_ref(),
            now,
            "Retention Mode",
        )?;
        self.change_lock(v, |lock| {
            lock.check_retention_change(new, now_ms(), bypass)
                .map_err(|reason| {
                    S3Error::with_message(
                        S3ErrorCode::AccessDenied,
                        format!(
                            "the retention of version {} of {} cannot be shortened or removed: {reason}",
                            input.version_id.as_deref().unwrap_or("(latest)"),
                            input.key
                        ),
                    )
                })?;
            Ok(ObjectLock {
                retention: new,
                ..*lock
            })
        })
        .await?;
        Ok(S3Response::new(PutObjectRetentionOutput::default()))
    }

    pub(super) async fn do_get_object_retention(
        &self,
        req: S3Request<GetObjectRetentionInput>,
    ) -> S3Result<S3Response<GetObjectRetentionOutput>> {
        let input = req.input;
        let v = self
            .locked_version(&input.bucket, &input.key, input.version_id.as_deref())
            .await?;
        let Some(r) = v.attrs.lock.retention else {
            return Err(S3Error::with_message(
                S3ErrorCode::NoSuchObjectLockConfiguration,
                format!(
                    "The specified object does not have a ObjectLock configuration (version {} of {} has no retention)",
                    v.version_id, v.key
                ),
            ));
        };
        Ok(S3Response::new(GetObjectRetentionOutput {
            retention: Some(ObjectLockRetention {
                mode: Some(ObjectLockRetentionMode::from(r.mode.as_str().to_owned())),
                retain_until_date: Some(timestamp(r.until)),
            }),
        }))
    }

    pub(super) async fn do_put_object_legal_hold(
        &self,
        req: S3Request<PutObjectLegalHoldInput>,
    ) -> S3Result<S3Response<PutObjectLegalHoldOutput>> {
        let input = req.input;
        let v = self
            .locked_version(&input.bucket, &input.key, input.version_id.as_deref())
            .await?;
        let status = input.legal_hold.and_then(|h| h.status).ok_or_else(|| {
            S3Error::with_message(
                S3ErrorCode::MalformedXML,
                "LegalHold needs a Status (ON or OFF)",
            )
        })?;
        let on = legal_hold_of(status.as_str(), "LegalHold Status")?;
        self.change_lock(v, |lock| {
            Ok(ObjectLock {
                legal_hold: on,
                ..*lock
            })
        })
        .await?;
        Ok(S3Response::new(PutObjectLegalHoldOutput::default()))
    }

    pub(super) async fn do_get_object_legal_hold(
        &self,
        req: S3Request<GetObjectLegalHoldInput>,
    ) -> S3Result<S3Response<GetObjectLegalHoldOutput>> {
        let input = req.input;
        let v = self
            .locked_version(&input.bucket, &input.key, input.version_id.as_deref())
            .await?;
        let status = if v.attrs.lock.legal_hold {
            ObjectLockLegalHoldStatus::ON
        } else {
            ObjectLockLegalHoldStatus::OFF
        };
        Ok(S3Response::new(GetObjectLegalHoldOutput {
            legal_hold: Some(ObjectLockLegalHold {
                status: Some(ObjectLockLegalHoldStatus::from_static(status)),
            }),
        }))
    }
}

/// Refuses versioning changes a bucket with object lock cannot take (it stays Enabled).
pub(super) fn versioning_change_allowed(bucket: &str, locked: bool, enabled: bool) -> S3Result<()> {
    if locked && !enabled {
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidBucketState,
            format!(
                "An Object Lock configuration is present on bucket {bucket}, so its versioning cannot be suspended"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_retention_needs_mode_and_date_together_and_in_the_future() {
        let now = 1_700_000_000_000;
        let later = timestamp(now + 60_000);
        let earlier = timestamp(now - 1);
        assert!(retention_of(None, None, now, "m").unwrap().is_none());
        assert!(retention_of(Some("GOVERNANCE"), None, now, "m").is_err());
        assert!(retention_of(None, Some(&later), now, "m").is_err());
        let e = retention_of(Some("COMPLIANCE"), Some(&earlier), now, "m").unwrap_err();
        assert_eq!(e.code(), &S3ErrorCode::InvalidArgument);
        assert!(retention_of(Some("FOREVER"), Some(&later), now, "m").is_err());
        assert_eq!(
            retention_of(Some("COMPLIANCE"), Some(&later), now, "m").unwrap(),
            Some(Retention {
                mode: LockMode::Compliance,
                until: now + 60_000
            })
        );
    }

    #[test]
    fn governance_bypass_needs_the_permission_and_the_header() {
        let mut with_permission = http::Extensions::new();
        with_permission.insert(crate::s3::auth::GovernanceBypass);
        assert!(bypasses_governance(&with_permission, Some(true)));
        assert!(!bypasses_governance(&with_permission, None));
        assert!(!bypasses_governance(&with_permission, Some(false)));
        assert!(!bypasses_governance(&http::Extensions::new(), Some(true)));
    }

    #[test]
    fn a_locked_bucket_keeps_versioning_enabled() {
        assert!(versioning_change_allowed("b", true, false).is_err());
        assert!(versioning_change_allowed("b", true, true).is_ok());
        assert!(versioning_change_allowed("b", false, false).is_ok());
    }
}
