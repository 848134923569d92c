//! Object lock (S3's WORM protection): what a version's lock is, what a bucket's lock
//! configuration says, and the rules every path that could remove a version or change its
//! lock follows. Kept beside the records because the store carries the lock in each
//! version's attributes (so snapshots and the journal carry it too).

use serde::{Deserialize, Serialize};

/// S3's two retention modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum LockMode {
    /// Removable before its date only by a key allowed to bypass governance retention,
    /// with `x-amz-bypass-governance-retention: true`.
    Governance,
    /// Removable by nobody before its date; the date can only move later.
    Compliance,
}

impl LockMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::Governance => "GOVERNANCE",
            LockMode::Compliance => "COMPLIANCE",
        }
    }

    /// From S3's header or XML value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "GOVERNANCE" => Some(LockMode::Governance),
            "COMPLIANCE" => Some(LockMode::Compliance),
            _ => None,
        }
    }
}

/// A retention period on one version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    pub mode: LockMode,
    /// Unix milliseconds; the version is protected while `now < until`.
    pub until: i64,
}

/// The lock of one version: a retention period and a legal hold, independent of each other.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ObjectLock {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub legal_hold: bool,
}

/// Why a version cannot be removed (or its retention weakened) now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Locked {
    #[error("it is under a legal hold (remove the hold first)")]
    LegalHold,
    #[error(
        "it is under COMPLIANCE retention until {}; nobody can remove it or shorten that before then",
        date(*until)
    )]
    Compliance { until: i64 },
    #[error(
        "it is under GOVERNANCE retention until {}; only a key allowed to bypass governance retention can, with x-amz-bypass-governance-retention: true",
        date(*until)
    )]
    Governance { until: i64 },
}

/// A Unix-millisecond time as S3 writes dates (ISO 8601, UTC).
pub fn date(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| format!("{ms} ms since the epoch"))
}

impl ObjectLock {
    pub fn is_none(&self) -> bool {
        *self == ObjectLock::default()
    }

    /// The retention still running at `now`.
    pub fn active_retention(&self, now: i64) -> Option<Retention> {
        self.retention.filter(|r| now < r.until)
    }

    /// Whether the version may be removed for good at `now`; `bypass` = the caller may
    /// and asked to bypass governance retention.
    pub fn check_removal(&self, now: i64, bypass: bool) -> Result<(), Locked> {
        if self.legal_hold {
            return Err(Locked::LegalHold);
        }
        match self.active_retention(now) {
            Some(Retention {
                mode: LockMode::Compliance,
                until,
            }) => Err(Locked::Compliance { until }),
            Some(Retention {
                mode: LockMode::Governance,
                until,
            }) if !bypass => Err(Locked::Governance { until }),
            _ => Ok(()),
        }
    }

    /// Whether the retention may become `new` at `now`: extending (a later date, or
    /// GOVERNANCE becoming COMPLIANCE) is always allowed; shortening, removing or
    /// COMPLIANCE becoming GOVERNANCE only when the running retention is GOVERNANCE and
    /// `bypass`, never while COMPLIANCE runs.
    pub fn check_retention_change(
        &self,
        new: Option<Retention>,
        now: i64,
        bypass: bool,
    ) -> Result<(), Locked> {
        let Some(old) = self.active_retention(now) else {
            return Ok(());
        };
        let weakens = match new {
            None => true,
            Some(new) => {
                new.until < old.until
                    || (old.mode == LockMode::Compliance && new.mode == LockMode::Governance)
            }
        };
        if !weakens {
            return Ok(());
        }
        match old.mode {
            LockMode::Compliance => Err(Locked::Compliance { until: old.until }),
            LockMode::Governance if !bypass => Err(Locked::Governance { until: old.until }),
            LockMode::Governance => Ok(()),
        }
    }
}

/// How long a bucket's default retention runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Period {
    Days(u32),
    Years(u32),
}

impl Period {
    pub fn millis(self) -> i64 {
        const DAY_MS: i64 = 24 * 60 * 60 * 1000;
        match self {
            Period::Days(d) => i64::from(d) * DAY_MS,
            // S3 counts a year as 365 days.
            Period::Years(y) => i64::from(y) * 365 * DAY_MS,
        }
    }
}

/// The retention new versions of a bucket get when their write names none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DefaultRetention {
    pub mode: LockMode,
    pub period: Period,
}

/// A bucket's object lock configuration. Its presence means object lock is enabled on the
/// bucket, which cannot be undone (and keeps the bucket's versioning enabled).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BucketLock {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_retention: Option<DefaultRetention>,
}

impl BucketLock {
    /// As stored (JSON).
    pub fn to_column(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }

    /// From the stored JSON; unknown fields (of a newer gateway) are ignored.
    pub fn from_column(column: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(column)
    }

    /// The lock a new version written at `now` gets when its request asked for `requested`:
    /// the request's retention if it names one, otherwise the bucket's default.
    pub fn lock_for_new(&self, requested: ObjectLock, now: i64) -> ObjectLock {
        if requested.retention.is_some() {
            return requested;
        }
        ObjectLock {
            retention: self.default_retention.map(|d| Retention {
                mode: d.mode,
                until: now.saturating_add(d.period.millis()),
            }),
            ..requested
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000;

    fn lock(mode: LockMode, until: i64) -> ObjectLock {
        ObjectLock {
            retention: Some(Retention { mode, until }),
            legal_hold: false,
        }
    }

    #[test]
    fn compliance_blocks_removal_by_anyone_until_its_date() {
        let l = lock(LockMode::Compliance, NOW + 1);
        assert_eq!(
            l.check_removal(NOW, true),
            Err(Locked::Compliance { until: NOW + 1 })
        );
        assert_eq!(l.check_removal(NOW + 1, false), Ok(()));
    }

    #[test]
    fn governance_blocks_removal_unless_bypassed() {
        let l = lock(LockMode::Governance, NOW + 1);
        assert_eq!(
            l.check_removal(NOW, false),
            Err(Locked::Governance { until: NOW + 1 })
        );
        assert_eq!(l.check_removal(NOW, true), Ok(()));
    }

    #[test]
    fn a_legal_hold_blocks_removal_even_with_bypass_and_no_retention() {
        let l = ObjectLock {
            retention: None,
            legal_hold: true,
        };
        assert_eq!(l.check_removal(NOW, true), Err(Locked::LegalHold));
        assert_eq!(ObjectLock::default().check_removal(NOW, false), Ok(()));
    }

    #[test]
    fn retention_can_be_extended_not_shortened() {
        let c = lock(LockMode::Compliance, NOW + 10);
        let later = Some(Retention {
            mode: LockMode::Compliance,
            until: NOW + 20,
        });
        assert_eq!(c.check_retention_change(later, NOW, false), Ok(()));
        let earlier = Some(Retention {
            mode: LockMode::Compliance,
            until: NOW + 5,
        });
        assert!(c.check_retention_change(earlier, NOW, true).is_err());
        assert!(c.check_retention_change(None, NOW, true).is_err());
        let to_governance = Some(Retention {
            mode: LockMode::Governance,
            until: NOW + 20,
        });
        assert!(c.check_retention_change(to_governance, NOW, true).is_err());
        // Once its date passed, anything goes.
        assert_eq!(c.check_retention_change(None, NOW + 10, false), Ok(()));

        let g = lock(LockMode::Governance, NOW + 10);
        assert!(g.check_retention_change(earlier, NOW, false).is_err());
        assert_eq!(g.check_retention_change(earlier, NOW, true), Ok(()));
        assert_eq!(g.check_retention_change(None, NOW, true), Ok(()));
        let to_compliance = Some(Retention {
            mode: LockMode::Compliance,
            until: NOW + 10,
        });
        assert_eq!(g.check_retention_change(to_compliance, NOW, false), Ok(()));
    }

    #[test]
    fn the_bucket_default_applies_only_when_the_request_names_no_retention() {
        let b = BucketLock {
            default_retention: Some(DefaultRetention {
                mode: LockMode::Compliance,
                period: Period::Days(2),
            }),
        };
        let got = b.lock_for_new(ObjectLock::default(), NOW);
        assert_eq!(
            got.retention,
            Some(Retention {
                mode: LockMode::Compliance,
                until: NOW + 2 * 86_400_000
            })
        );
        let asked = lock(LockMode::Governance, NOW + 5);
        assert_eq!(b.lock_for_new(asked, NOW), asked);
        assert_eq!(Period::Years(1).millis(), 365 * 86_400_000);
        let stored = b.to_column();
        assert_eq!(BucketLock::from_column(&stored).unwrap(), b);
    }

    #[test]
    fn the_refusal_names_the_date() {
        let msg = Locked::Compliance { until: 0 }.to_string();
        assert!(msg.contains("1970-01-01T00:00:00.000Z"), "{msg}");
    }
}
