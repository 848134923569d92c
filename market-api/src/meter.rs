//! One side's usage meter for its market contracts. A demander's gateway and a provider
//! each keep one: stored bytes are sampled and integrated over time, egress and audits are
//! counted, all per receipt period (counted from the contract's acceptance), and the meter
//! says which periods are over and not yet reported. Both sides use the same rounding
//! ([`crate::receipts::gib_hours`]) so equal usage gives receipts that agree.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::receipts::{GIB, UsageReceipt, period_containing};

/// How long after a period ends its receipt waits (on both sides), at most: reads and
/// audits still in flight at the end are counted in the period they were stamped with. A
/// quarter of the period when that is shorter.
pub const REPORT_GRACE_SECS: i64 = 30;

/// Usage per contract, saved as JSON between runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Meter {
    contracts: BTreeMap<String, ContractMeter>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct ContractMeter {
    accepted_at: i64,
    period_secs: i64,
    term_ends: i64,
    /// The last sample: when, and the bytes held since.
    last: Option<(i64, u64)>,
    /// Period start → what was used in it.
    periods: BTreeMap<i64, Usage>,
    /// Periods ending at or before this were reported.
    reported_through: i64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Usage {
    /// Byte-seconds, as a decimal string (it outgrows u64 past ~7 PiB-days).
    #[serde(with = "decimal")]
    byte_secs: u128,
    egress_bytes: u64,
    audits_passed: u32,
    audits_failed: u32,
    /// Shards found bad outside audits (the demander's side only).
    #[serde(default)]
    shards_failed: u32,
}

mod decimal {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl ContractMeter {
    fn period_of(&self, t: i64) -> (i64, i64) {
        let (start, end) = period_containing(self.accepted_at, self.period_secs, t);
        (start, end.min(self.term_ends))
    }

    /// The usage record of the period holding `t`, unless `t` is outside the term or in a
    /// period already reported.
    fn at(&mut self, t: i64) -> Option<&mut Usage> {
        if t < self.accepted_at || t >= self.term_ends {
            return None;
        }
        let (start, end) = self.period_of(t);
        if end <= self.reported_through {
            return None;
        }
        Some(self.periods.entry(start).or_default())
    }
}

impl Meter {
    /// Reads a saved meter; a missing file is an empty meter.
    pub fn load(path: &Path) -> std::io::Result<Self> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} is not a usage meter: {e}", path.display()),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e),
        }
    }

    /// Reads a saved meter for a daemon starting up: an unreadable file is moved aside (to
    /// `<name>.unreadable`) with a warning and metering starts afresh, so a damaged file
    /// costs at most the usage it held (the receipts of those periods then disagree and
    /// are flagged) rather than keeping the daemon down.
    pub fn load_or_start_afresh(path: &Path) -> Self {
        match Self::load(path) {
            Ok(meter) => meter,
            Err(e) => {
                let aside = path.with_extension("unreadable");
                let moved = std::fs::rename(path, &aside).is_ok();
                tracing::warn!(
                    path = %path.display(),
                    error = %e,
                    moved_to = %if moved { aside.display().to_string() } else { "(not moved)".into() },
                    "usage meter unreadable; metering starts afresh"
                );
                Self::default()
            }
        }
    }

    /// Saves the meter (write to a temp file, then rename).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec(self).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(&tmp, path)
    }

    /// Starts (or keeps) metering a contract accepted at `accepted_at`.
    pub fn track(&mut self, contract: &str, accepted_at: i64, period_secs: i64, term_days: u32) {
        let term_ends = accepted_at.saturating_add(i64::from(term_days) * 86_400);
        self.contracts
            .entry(contract.to_owned())
            .or_insert_with(|| ContractMeter {
                accepted_at,
                period_secs: period_secs.max(1),
                term_ends,
                last: None,
                periods: BTreeMap::new(),
                reported_through: accepted_at,
            });
    }

    /// Stops metering every contract not in `active` (ended contracts take no receipts).
    pub fn retain(&mut self, active: &[&str]) {
        self.contracts.retain(|id, _| active.contains(&id.as_str()));
    }

    pub fn is_tracked(&self, contract: &str) -> bool {
        self.contracts.contains_key(contract)
    }

    /// Records that `bytes` are stored under `contract` at `now`; the bytes of the previous
    /// sample count as held from then until now, split at period boundaries.
    pub fn sample(&mut self, contract: &str, now: i64, bytes: u64) {
        let Some(m) = self.contracts.get_mut(contract) else {
            return;
        };
        if let Some((mut t, held)) = m.last {
            let end = now.min(m.term_ends);
            while t < end {
                let (_, period_end) = m.period_of(t);
                let upto = period_end.min(end);
                if held > 0
                    && let Some(u) = m.at(t)
                {
                    u.byte_secs += u128::from(held) * (upto - t) as u128;
                }
                t = upto;
            }
        }
        if m.last.is_none_or(|(t, _)| now >= t) {
            m.last = Some((now.max(m.accepted_at), bytes));
        }
    }

    pub fn add_egress(&mut self, contract: &str, now: i64, bytes: u64) {
        if let Some(u) = self.contracts.get_mut(contract).and_then(|m| m.at(now)) {
            u.egress_bytes = u.egress_bytes.saturating_add(bytes);
        }
    }

    pub fn add_audit(&mut self, contract: &str, now: i64, passed: bool) {
        if let Some(u) = self.contracts.get_mut(contract).and_then(|m| m.at(now)) {
            if passed {
                u.audits_passed = u.audits_passed.saturating_add(1);
            } else {
                u.audits_failed = u.audits_failed.saturating_add(1);
            }
        }
    }

    /// Counts a shard of `contract`'s provider found bad outside an audit at `now`: a read
    /// or a write acknowledgement that failed its hash, a shard gone, a scrub's find.
    pub fn add_failed_shard(&mut self, contract: &str, now: i64) {
        if let Some(u) = self.contracts.get_mut(contract).and_then(|m| m.at(now)) {
            u.shards_failed = u.shards_failed.saturating_add(1);
        }
    }

    /// Receipts of the periods that are over (sampled up to `grace` seconds past their end,
    /// or a quarter of the period if that is less) and not reported, oldest first. A period
    /// with no usage at all has no receipt.
    pub fn due(&self, grace: i64) -> Vec<(String, UsageReceipt)> {
        let mut out = Vec::new();
        for (id, m) in &self.contracts {
            let Some((sampled_to, _)) = m.last else {
                continue;
            };
            for (&start, u) in &m.periods {
                let (_, end) = m.period_of(start);
                let wait = grace.min(m.period_secs / 4).max(0);
                if end.saturating_add(wait) > sampled_to || end <= m.reported_through {
                    continue;
                }
                let receipt = UsageReceipt {
                    period_start: start,
                    period_end: end,
                    gib_hours: u64::try_from(u.byte_secs / (u128::from(GIB) * 3600))
                        .unwrap_or(u64::MAX),
                    egress_bytes: u.egress_bytes,
                    audits_passed: u.audits_passed,
                    audits_failed: u.audits_failed,
                    shards_failed: u.shards_failed,
                };
                let empty = u.byte_secs == 0
                    && u.egress_bytes == 0
                    && u.audits_passed == 0
                    && u.audits_failed == 0
                    && u.shards_failed == 0;
                if !empty {
                    out.push((id.clone(), receipt));
                }
            }
        }
        out
    }

    /// Marks every period of `contract` ending by `period_end` as reported.
    pub fn reported(&mut self, contract: &str, period_end: i64) {
        if let Some(m) = self.contracts.get_mut(contract) {
            m.reported_through = m.reported_through.max(period_end);
            let through = m.reported_through;
            let ends: Vec<i64> = m.periods.keys().copied().collect();
            for start in ends {
                if m.period_of(start).1 <= through {
                    m.periods.remove(&start);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn stored_bytes_are_integrated_per_period() {
        let mut m = Meter::default();
        m.track("c", 1000, 3600, 30);
        m.sample("c", 1000, 2 * GIB);
        assert!(m.due(0).is_empty(), "nothing is over yet");
        // Half an hour at 2 GiB, then 1.5 hours at 4 GiB across the boundary at 4600.
        m.sample("c", 2800, 4 * GIB);
        m.sample("c", 8000, 4 * GIB);
        let due = m.due(0);
        assert_eq!(due.len(), 1);
        let (id, r) = &due[0];
        assert_eq!(id, "c");
        assert_eq!((r.period_start, r.period_end), (1000, 4600));
        // 2 GiB × 0.5 h + 4 GiB × 0.5 h = 3 GiB-hours.
        assert_eq!(r.gib_hours, 3);
        m.reported("c", 4600);
        assert!(m.due(0).is_empty());
        m.sample("c", 8300, 0);
        let due = m.due(0);
        assert_eq!(due[0].1.period_start, 4600);
        assert_eq!(due[0].1.gib_hours, 4);
    }

    #[test]
    fn egress_and_audits_count_in_the_period_they_happen() {
        let mut m = Meter::default();
        m.track("c", 0, 10, 1);
        m.add_egress("c", 3, 100);
        m.add_audit("c", 4, true);
        m.add_audit("c", 12, false);
        m.add_egress("c", -5, 7); // before acceptance: not billed
        m.sample("c", 25, 0);
        m.sample("c", 25, 0);
        let due = m.due(0);
        assert_eq!(due.len(), 2);
        assert_eq!(
            (
                due[0].1.egress_bytes,
                due[0].1.audits_passed,
                due[0].1.audits_failed
            ),
            (100, 1, 0)
        );
        assert_eq!((due[1].1.period_start, due[1].1.audits_failed), (10, 1));
        m.reported("c", 20);
        // A reported period takes no more usage.
        m.add_egress("c", 5, 1);
        assert!(m.due(0).is_empty());
    }

    #[test]
    fn shards_found_bad_count_in_their_period_and_alone_make_a_receipt() {
        let mut m = Meter::default();
        m.track("c", 0, 10, 1);
        m.add_failed_shard("c", 3);
        m.add_failed_shard("c", 4);
        m.add_failed_shard("c", 12);
        m.add_failed_shard("other", 3); // not tracked: not counted anywhere
        m.sample("c", 25, 0);
        let due = m.due(0);
        assert_eq!(
            due.iter()
                .map(|(_, r)| (r.period_start, r.shards_failed, r.audits_failed))
                .collect::<Vec<_>>(),
            vec![(0, 2, 0), (10, 1, 0)],
            "nothing but bad shards is still a period to report"
        );
        // A meter saved before the count existed still loads.
        let old = r#"{"contracts":{"c":{"accepted_at":0,"period_secs":10,"term_ends":86400,"last":[5,0],"periods":{"0":{"byte_secs":"0","egress_bytes":1,"audits_passed":0,"audits_failed":0}},"reported_through":0}}}"#;
        let m: Meter = serde_json::from_str(old).unwrap();
        assert!(m.is_tracked("c"));
    }

    #[test]
    fn the_last_period_ends_with_the_term_and_the_meter_survives_a_save() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meter.json");
        let mut m = Meter::default();
        m.track("c", 0, 50_000, 1);
        m.sample("c", 0, GIB);
        m.sample("c", 200_000, GIB);
        m.save(&path).unwrap();
        let m = Meter::load(&path).unwrap();
        let due = m.due(0);
        assert_eq!(
            due.iter()
                .map(|(_, r)| (r.period_start, r.period_end))
                .collect::<Vec<_>>(),
            vec![(0, 50_000), (50_000, 86_400)]
        );
        assert_eq!(due[1].1.gib_hours, 36_400 / 3600);
        assert_eq!(
            Meter::load(&dir.path().join("none.json")).unwrap(),
            Meter::default()
        );
        std::fs::write(&path, b"{").unwrap();
        assert!(Meter::load(&path).is_err());
    }

    #[test]
    fn an_unreadable_meter_is_moved_aside_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("market-meter.json");
        std::fs::write(&path, b"{ not json").unwrap();
        assert_eq!(Meter::load_or_start_afresh(&path), Meter::default());
        assert!(!path.exists());
        assert!(dir.path().join("market-meter.unreadable").exists());
    }

    #[test]
    fn ended_contracts_are_dropped() {
        let mut m = Meter::default();
        m.track("a", 0, 10, 1);
        m.track("b", 0, 10, 1);
        m.retain(&["b"]);
        assert!(!m.is_tracked("a"));
        assert!(m.is_tracked("b"));
    }
}
