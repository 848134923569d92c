//! Put/Get/DeleteBucketLifecycleConfiguration: a bucket's lifecycle rules in S3's form
//! (storage class = plan name), checked and stored as the engine's
//! ([`crate::node::rules::Rule`]); [`crate::upkeep::lifecycle`] applies them.

use s3s::dto;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use super::Gateway;
use crate::error::internal;
use crate::node::rules::Rule;

fn not_implemented(what: &str) -> S3Error {
    S3Error::with_message(
        S3ErrorCode::NotImplemented,
        format!(
            "lifecycle rules with {what} are not supported; use Days and a Filter (Prefix, Tag, \
             object size or an And of them)"
        ),
    )
}

fn invalid(message: String) -> S3Error {
    S3Error::with_message(S3ErrorCode::InvalidArgument, message)
}

fn days(value: Option<i32>, field: &str, id: &str) -> S3Result<Option<u32>> {
    match value {
        None => Ok(None),
        Some(d) if d >= 1 => Ok(Some(d.unsigned_abs())),
        Some(d) => Err(invalid(format!(
            "rule {id}: {field} must be a positive number of days, not {d}"
        ))),
    }
}

/// The S3 rules of a PutBucketLifecycleConfiguration as the engine's, refusing what sublet
/// cannot honour; `plan_exists` says whether a transition's storage class names a plan.
/// (Also the `s3_xml` fuzz target's entry.)
pub fn rules_from_s3(
    rules: Vec<dto::LifecycleRule>,
    plan_exists: impl Fn(&str) -> bool,
) -> S3Result<Vec<Rule>> {
    if rules.is_empty() {
        return Err(S3Error::with_message(
            S3ErrorCode::MalformedXML,
            "a lifecycle configuration needs at least one rule",
        ));
    }
    let mut out: Vec<Rule> = Vec::with_capacity(rules.len());
    for (i, r) in rules.into_iter().enumerate() {
        let id = r.id.clone().unwrap_or_else(|| format!("rule-{}", i + 1));
        if out.iter().any(|o| o.id == id) {
            return Err(invalid(format!("rule id {id} is used twice")));
        }
        let enabled = match r.status.as_str() {
            dto::ExpirationStatus::ENABLED => true,
            dto::ExpirationStatus::DISABLED => false,
            other => {
                return Err(invalid(format!(
                    "rule {id}: Status must be Enabled or Disabled, not {other:?}"
                )));
            }
        };
        let mut rule = Rule {
            id: id.clone(),
            enabled,
            prefix: r.prefix.clone().unwrap_or_default(),
            ..Rule::default()
        };
        if let Some(f) = r.filter {
            apply_filter(&mut rule, f)?;
        }
        if let Some(e) = &r.expiration {
            if e.date.is_some() {
                return Err(not_implemented("an expiration Date"));
            }
            rule.expiration_days = days(e.days, "Expiration Days", &id)?;
            rule.expired_object_delete_marker = e.expired_object_delete_marker == Some(true);
            if rule.expired_object_delete_marker && !rule.tags.is_empty() {
                return Err(invalid(format!(
                    "rule {id}: ExpiredObjectDeleteMarker cannot be combined with a tag filter \
                     (delete markers have no tags)"
                )));
            }
        }
        if let Some(n) = &r.noncurrent_version_expiration {
            if n.newer_noncurrent_versions.is_some() {
                return Err(not_implemented("NewerNoncurrentVersions"));
            }
            rule.noncurrent_days = days(
                n.noncurrent_days,
                "NoncurrentVersionExpiration NoncurrentDays",
                &id,
            )?;
        }
        if let Some(a) = &r.abort_incomplete_multipart_upload {
            rule.abort_incomplete_days = days(
                a.days_after_initiation,
                "AbortIncompleteMultipartUpload DaysAfterInitiation",
                &id,
            )?;
            if rule.abort_incomplete_days.is_some() && rule.filters_objects() {
                return Err(invalid(format!(
                    "rule {id}: AbortIncompleteMultipartUpload cannot be combined with a tag or \
                     object size filter (uploads in progress have neither)"
                )));
            }
        }
        if r.noncurrent_version_transitions
            .as_ref()
            .is_some_and(|t| !t.is_empty())
        {
            return Err(not_implemented("NoncurrentVersionTransitions"));
        }
        let transitions = r.transitions.unwrap_or_default();
        if transitions.len() > 1 {
            return Err(not_implemented("more than one Transition per rule"));
        }
        if let Some(t) = transitions.into_iter().next() {
            if t.date.is_some() {
                return Err(not_implemented("a transition Date"));
            }
            let after = days(t.days, "Transition Days", &id)?
                .ok_or_else(|| invalid(format!("rule {id}: a Transition needs Days")))?;
            let class = t
                .storage_class
                .as_ref()
                .map(|c| c.as_str().to_string())
                .ok_or_else(|| invalid(format!("rule {id}: a Transition needs a StorageClass")))?;
            if !plan_exists(&class) {
                return Err(S3Error::with_message(
                    S3ErrorCode::InvalidStorageClass,
                    format!(
                        "rule {id}: no storage plan named {class:?} (storage classes are plan names)"
                    ),
                ));
            }
            rule.transition = Some((after, class));
        }
        if rule.expiration_days.is_none()
            && !rule.expired_object_delete_marker
            && rule.noncurrent_days.is_none()
            && rule.abort_incomplete_days.is_none()
            && rule.transition.is_none()
        {
            return Err(invalid(format!("rule {id} has no action")));
        }
        out.push(rule);
    }
    Ok(out)
}

/// Puts a rule's `<Filter>` into `rule`: one of Prefix, Tag, ObjectSizeGreaterThan,
/// ObjectSizeLessThan, or an And of several of them.
fn apply_filter(rule: &mut Rule, f: dto::LifecycleRuleFilter) -> S3Result<()> {
    let id = rule.id.clone();
    let given = [
        f.prefix.is_some(),
        f.tag.is_some(),
        f.object_size_greater_than.is_some(),
        f.object_size_less_than.is_some(),
        f.and.is_some(),
    ]
    .into_iter()
    .filter(|g| *g)
    .count();
    if given > 1 {
        return Err(S3Error::with_message(
            S3ErrorCode::MalformedXML,
            format!(
                "rule {id}: a Filter holds one of Prefix, Tag, ObjectSizeGreaterThan and \
                 ObjectSizeLessThan; combine several in an And"
            ),
        ));
    }
    let mut tags = Vec::new();
    let (mut greater, mut less) = (f.object_size_greater_than, f.object_size_less_than);
    if let Some(p) = f.prefix {
        rule.prefix = p;
    }
    if let Some(t) = f.tag {
        tags.push(t);
    }
    if let Some(and) = f.and {
        if let Some(p) = and.prefix {
            rule.prefix = p;
        }
        tags.extend(and.tags.unwrap_or_default());
        greater = greater.or(and.object_size_greater_than);
        less = less.or(and.object_size_less_than);
    }
    let pairs = tags
        .into_iter()
        .map(|t| match t.key {
            Some(k) => Ok((k, t.value.unwrap_or_default())),
            None => Err(S3Error::with_message(
                S3ErrorCode::InvalidTag,
                format!("rule {id}: a filter Tag has no Key"),
            )),
        })
        .collect::<S3Result<Vec<_>>>()?;
    rule.tags = super::tagging::checked_tags(pairs, super::tagging::MAX_OBJECT_TAGS)?;
    let bytes = |value: i64, field: &str| {
        u64::try_from(value).map_err(|_| {
            invalid(format!(
                "rule {id}: {field} must be a number of bytes of 0 or more, not {value}"
            ))
        })
    };
    rule.size_greater_than = greater
        .map(|v| bytes(v, "ObjectSizeGreaterThan"))
        .transpose()?;
    rule.size_less_than = less.map(|v| bytes(v, "ObjectSizeLessThan")).transpose()?;
    if let (Some(min), Some(max)) = (rule.size_greater_than, rule.size_less_than)
        && max <= min.saturating_add(1)
    {
        return Err(invalid(format!(
            "rule {id}: ObjectSizeLessThan ({max}) must exceed ObjectSizeGreaterThan ({min}) \
             by more than one, or no object is selected"
        )));
    }
    Ok(())
}

/// A rule's filter in S3's form: a lone condition as itself, several in an And.
fn filter_of(r: &Rule) -> dto::LifecycleRuleFilter {
    let conditions = usize::from(!r.prefix.is_empty())
        + r.tags.len()
        + usize::from(r.size_greater_than.is_some())
        + usize::from(r.size_less_than.is_some());
    let greater = r.size_greater_than.and_then(|v| i64::try_from(v).ok());
    let less = r.size_less_than.and_then(|v| i64::try_from(v).ok());
    if conditions > 1 {
        return dto::LifecycleRuleFilter {
            and: Some(dto::LifecycleRuleAndOperator {
                prefix: (!r.prefix.is_empty()).then(|| r.prefix.clone()),
                tags: (!r.tags.is_empty()).then(|| super::tagging::tag_set(&r.tags)),
                object_size_greater_than: greater,
                object_size_less_than: less,
            }),
            ..Default::default()
        };
    }
    if let Some((k, v)) = r.tags.iter().next() {
        return dto::LifecycleRuleFilter {
            tag: Some(dto::Tag {
                key: Some(k.clone()),
                value: Some(v.clone()),
            }),
            ..Default::default()
        };
    }
    dto::LifecycleRuleFilter {
        object_size_greater_than: greater,
        object_size_less_than: less,
        // A rule on every key answers an empty Prefix, as S3 does.
        prefix: (greater.is_none() && less.is_none()).then(|| r.prefix.clone()),
        ..Default::default()
    }
}

impl Gateway {
    pub(super) async fn do_put_bucket_lifecycle_configuration(
        &self,
        req: S3Request<dto::PutBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<dto::PutBucketLifecycleConfigurationOutput>> {
        let input = req.input;
        self.require_bucket(&input.bucket).await?;
        let rules = input
            .lifecycle_configuration
            .map(|c| c.rules)
            .unwrap_or_default();
        let rules = rules_from_s3(rules, |class| self.plan(class).is_some())?;
        let json = serde_json::to_string(&rules).map_err(|e| internal(e.to_string()))?;
        let bucket = input.bucket.clone();
        self.meta(move |m| m.set_lifecycle(&bucket, Some(&json)))
            .await?;
        tracing::info!(bucket = %input.bucket, rules = rules.len(), "lifecycle configuration set");
        Ok(S3Response::new(
            dto::PutBucketLifecycleConfigurationOutput::default(),
        ))
    }

    pub(super) async fn do_get_bucket_lifecycle_configuration(
        &self,
        req: S3Request<dto::GetBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<dto::GetBucketLifecycleConfigurationOutput>> {
        let bucket = req.input.bucket;
        self.require_bucket(&bucket).await?;
        let Some(rules) = self.bucket_rules(&bucket).await? else {
            return Err(S3Error::with_message(
                S3ErrorCode::NoSuchLifecycleConfiguration,
                format!("bucket {bucket} has no lifecycle configuration"),
            ));
        };
        let rules = rules
            .into_iter()
            .map(|r| dto::LifecycleRule {
                filter: Some(filter_of(&r)),
                id: Some(r.id),
                status: dto::ExpirationStatus::from_static(if r.enabled {
                    dto::ExpirationStatus::ENABLED
                } else {
                    dto::ExpirationStatus::DISABLED
                }),
                expiration: (r.expiration_days.is_some() || r.expired_object_delete_marker).then(
                    || dto::LifecycleExpiration {
                        days: r.expiration_days.and_then(|d| i32::try_from(d).ok()),
                        expired_object_delete_marker: r
                            .expired_object_delete_marker
                            .then_some(true),
                        date: None,
                    },
                ),
                noncurrent_version_expiration: r.noncurrent_days.map(|d| {
                    dto::NoncurrentVersionExpiration {
                        noncurrent_days: i32::try_from(d).ok(),
                        newer_noncurrent_versions: None,
                    }
                }),
                abort_incomplete_multipart_upload: r.abort_incomplete_days.map(|d| {
                    dto::AbortIncompleteMultipartUpload {
                        days_after_initiation: i32::try_from(d).ok(),
                    }
                }),
                transitions: r.transition.map(|(d, plan)| {
                    vec![dto::Transition {
                        days: i32::try_from(d).ok(),
                        storage_class: Some(dto::TransitionStorageClass::from(plan)),
                        date: None,
                    }]
                }),
                noncurrent_version_transitions: None,
                prefix: None,
            })
            .collect();
        Ok(S3Response::new(
            dto::GetBucketLifecycleConfigurationOutput {
                rules: Some(rules),
                ..Default::default()
            },
        ))
    }

    pub(super) async fn do_delete_bucket_lifecycle(
        &self,
        req: S3Request<dto::DeleteBucketLifecycleInput>,
    ) -> S3Result<S3Response<dto::DeleteBucketLifecycleOutput>> {
        let bucket = req.input.bucket;
        self.require_bucket(&bucket).await?;
        self.meta(move |m| m.set_lifecycle(&bucket, None)).await?;
        Ok(S3Response::new(dto::DeleteBucketLifecycleOutput::default()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn tag(k: &str, v: &str) -> dto::Tag {
        dto::Tag {
            key: Some(k.into()),
            value: Some(v.into()),
        }
    }

    fn expiring(filter: dto::LifecycleRuleFilter) -> dto::LifecycleRule {
        dto::LifecycleRule {
            id: Some("r".into()),
            status: dto::ExpirationStatus::from_static(dto::ExpirationStatus::ENABLED),
            filter: Some(filter),
            expiration: Some(dto::LifecycleExpiration {
                days: Some(7),
                ..Default::default()
            }),
            abort_incomplete_multipart_upload: None,
            noncurrent_version_expiration: None,
            noncurrent_version_transitions: None,
            prefix: None,
            transitions: None,
        }
    }

    fn parse(filter: dto::LifecycleRuleFilter) -> S3Result<Rule> {
        rules_from_s3(vec![expiring(filter)], |_| true).map(|mut r| r.remove(0))
    }

    #[test]
    fn tag_size_and_and_filters_are_kept_and_answered_as_given() {
        let by_tag = parse(dto::LifecycleRuleFilter {
            tag: Some(tag("class", "temp")),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(by_tag.tags["class"], "temp");
        assert_eq!(filter_of(&by_tag).tag, Some(tag("class", "temp")));

        let all = dto::LifecycleRuleFilter {
            and: Some(dto::LifecycleRuleAndOperator {
                prefix: Some("logs/".into()),
                tags: Some(vec![tag("a", "1"), tag("b", "2")]),
                object_size_greater_than: Some(100),
                object_size_less_than: Some(1000),
            }),
            ..Default::default()
        };
        let rule = parse(all.clone()).unwrap();
        assert_eq!(rule.prefix, "logs/");
        assert_eq!(rule.tags.len(), 2);
        assert_eq!(
            (rule.size_greater_than, rule.size_less_than),
            (Some(100), Some(1000))
        );
        assert_eq!(filter_of(&rule), all, "an And is answered as an And");
        // What is stored survives its JSON round trip.
        let json = serde_json::to_string(&rule).unwrap();
        assert_eq!(serde_json::from_str::<Rule>(&json).unwrap(), rule);

        let by_size = parse(dto::LifecycleRuleFilter {
            object_size_greater_than: Some(0),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(by_size.size_greater_than, Some(0));
        let answered = filter_of(&by_size);
        assert_eq!(
            (answered.object_size_greater_than, answered.prefix),
            (Some(0), None)
        );
        // A plain prefix rule still answers a plain Prefix.
        let by_prefix = parse(dto::LifecycleRuleFilter {
            prefix: Some("tmp/".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(filter_of(&by_prefix).prefix.as_deref(), Some("tmp/"));
        assert!(filter_of(&by_prefix).and.is_none());
    }

    #[test]
    fn bad_filters_are_refused_naming_the_problem() {
        let message = |f| parse(f).unwrap_err().message().unwrap().to_owned();
        let two = message(dto::LifecycleRuleFilter {
            prefix: Some("a/".into()),
            tag: Some(tag("k", "v")),
            ..Default::default()
        });
        assert!(two.contains("combine several in an And"), "{two}");
        let negative = message(dto::LifecycleRuleFilter {
            object_size_less_than: Some(-1),
            ..Default::default()
        });
        assert!(negative.contains("ObjectSizeLessThan"), "{negative}");
        let empty_range = message(dto::LifecycleRuleFilter {
            and: Some(dto::LifecycleRuleAndOperator {
                object_size_greater_than: Some(10),
                object_size_less_than: Some(11),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert!(empty_range.contains("must exceed"), "{empty_range}");
        let reserved = parse(dto::LifecycleRuleFilter {
            tag: Some(tag("aws:foo", "v")),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(*reserved.code(), S3ErrorCode::InvalidTag);

        let mut abort = expiring(dto::LifecycleRuleFilter {
            tag: Some(tag("k", "v")),
            ..Default::default()
        });
        abort.expiration = None;
        abort.abort_incomplete_multipart_upload = Some(dto::AbortIncompleteMultipartUpload {
            days_after_initiation: Some(1),
        });
        let e = rules_from_s3(vec![abort], |_| true).unwrap_err();
        assert!(
            e.message().unwrap().contains("uploads in progress"),
            "{e:?}"
        );
        let mut markers = expiring(dto::LifecycleRuleFilter {
            tag: Some(tag("k", "v")),
            ..Default::default()
        });
        markers.expiration = Some(dto::LifecycleExpiration {
            expired_object_delete_marker: Some(true),
            ..Default::default()
        });
        let e = rules_from_s3(vec![markers], |_| true).unwrap_err();
        assert!(
            e.message().unwrap().contains("delete markers have no tags"),
            "{e:?}"
        );
    }
}
