//! What a phase measured: operations, bytes, errors and latencies, per worker while it
//! runs and merged into one [`Summary`] at the end.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Error messages kept per phase for the report; the rest are only counted.
const ERROR_SAMPLES: usize = 5;

/// One worker's record of a phase.
#[derive(Debug, Default, Clone)]
pub struct Recorder {
    /// Latencies of successful operations, in microseconds.
    latencies_us: Vec<u64>,
    pub bytes: u64,
    pub errors: u64,
    /// Operations whose body did not match what was written (counted in `errors` too).
    pub verify_failures: u64,
    pub error_samples: Vec<String>,
}

impl Recorder {
    pub fn success(&mut self, latency: Duration, bytes: u64) {
        self.latencies_us
            .push(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
        self.bytes += bytes;
    }

    pub fn failure(&mut self, message: String, verify: bool) {
        self.errors += 1;
        if verify {
            self.verify_failures += 1;
        }
        if self.error_samples.len() < ERROR_SAMPLES && !self.error_samples.contains(&message) {
            self.error_samples.push(message);
        }
    }

    pub fn merge(&mut self, other: Recorder) {
        self.latencies_us.extend(other.latencies_us);
        self.bytes += other.bytes;
        self.errors += other.errors;
        self.verify_failures += other.verify_failures;
        for m in other.error_samples {
            if self.error_samples.len() < ERROR_SAMPLES && !self.error_samples.contains(&m) {
                self.error_samples.push(m);
            }
        }
    }

    pub fn successes(&self) -> u64 {
        self.latencies_us.len() as u64
    }

    /// The phase's figures over `elapsed` of wall time.
    pub fn summary(mut self, phase: &str, elapsed: Duration) -> Summary {
        self.latencies_us.sort_unstable();
        let ops = self.latencies_us.len() as u64;
        let secs = elapsed.as_secs_f64().max(1e-9);
        let ms = |p: f64| percentile(&self.latencies_us, p).map(|us| us as f64 / 1000.0);
        Summary {
            phase: phase.to_string(),
            ops,
            errors: self.errors,
            verify_failures: self.verify_failures,
            bytes: self.bytes,
            seconds: elapsed.as_secs_f64(),
            ops_per_sec: ops as f64 / secs,
            mb_per_sec: self.bytes as f64 / 1e6 / secs,
            p50_ms: ms(50.0),
            p99_ms: ms(99.0),
            max_ms: self.latencies_us.last().map(|&us| us as f64 / 1000.0),
            error_samples: self.error_samples,
            note: None,
        }
    }
}

/// The `p`th percentile (0 < p <= 100) of sorted values, nearest-rank: the smallest value
/// that at least p% of the values are less than or equal to.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// A phase's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub phase: String,
    /// Successful operations.
    pub ops: u64,
    pub errors: u64,
    pub verify_failures: u64,
    /// Body bytes moved by successful operations.
    pub bytes: u64,
    pub seconds: f64,
    pub ops_per_sec: f64,
    /// 10^6 bytes per second.
    pub mb_per_sec: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub error_samples: Vec<String>,
    /// Anything else worth saying, e.g. keys listed per second.
    pub note: Option<String>,
}

impl Summary {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "phase": self.phase,
            "ops": self.ops,
            "errors": self.errors,
            "verify_failures": self.verify_failures,
            "bytes": self.bytes,
            "seconds": round3(self.seconds),
            "ops_per_sec": round3(self.ops_per_sec),
            "mb_per_sec": round3(self.mb_per_sec),
            "p50_ms": self.p50_ms.map(round3),
            "p99_ms": self.p99_ms.map(round3),
            "max_ms": self.max_ms.map(round3),
            "error_samples": self.error_samples,
            "note": self.note,
        })
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Running totals every worker bumps, for the progress line.
#[derive(Debug, Default)]
pub struct Progress {
    pub ops: AtomicU64,
    pub bytes: AtomicU64,
    pub errors: AtomicU64,
}

impl Progress {
    pub fn add(&self, ok: bool, bytes: u64) {
        if ok {
            self.ops.fetch_add(1, Ordering::Relaxed);
        } else {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// The results as a text table.
pub fn table(summaries: &[Summary]) -> String {
    let fmt_ms = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"));
    let mut out = format!(
        "{:<12} {:>8} {:>7} {:>10} {:>9} {:>9} {:>9} {:>8}\n",
        "phase", "ops", "errors", "ops/s", "MB/s", "p50 ms", "p99 ms", "secs"
    );
    for s in summaries {
        out.push_str(&format!(
            "{:<12} {:>8} {:>7} {:>10.1} {:>9.1} {:>9} {:>9} {:>8.1}",
            s.phase,
            s.ops,
            s.errors,
            s.ops_per_sec,
            s.mb_per_sec,
            fmt_ms(s.p50_ms),
            fmt_ms(s.p99_ms),
            s.seconds
        ));
        if let Some(note) = &s.note {
            out.push_str("  ");
            out.push_str(note);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&v, 0.1), Some(1));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[1, 2], 50.0), Some(1));
        assert_eq!(percentile(&[1, 2], 51.0), Some(2));
        assert_eq!(percentile(&[], 50.0), None);
        // One slow operation in ten shows at p99, not at p50.
        let mut v = vec![10; 9];
        v.push(1000);
        assert_eq!(percentile(&v, 50.0), Some(10));
        assert_eq!(percentile(&v, 99.0), Some(1000));
    }

    #[test]
    fn workers_merge_into_one_summary() {
        let mut a = Recorder::default();
        a.success(Duration::from_millis(2), 1_000_000);
        a.success(Duration::from_millis(4), 1_000_000);
        a.failure("500 InternalError".into(), false);
        let mut b = Recorder::default();
        b.success(Duration::from_millis(3), 1_000_000);
        b.failure("wrong bytes at offset 7".into(), true);
        b.failure("500 InternalError".into(), false);
        a.merge(b);
        let s = a.summary("get", Duration::from_secs(2));
        assert_eq!(s.ops, 3);
        assert_eq!(s.errors, 3);
        assert_eq!(s.verify_failures, 1);
        assert_eq!(s.bytes, 3_000_000);
        assert!((s.mb_per_sec - 1.5).abs() < 1e-9);
        assert!((s.ops_per_sec - 1.5).abs() < 1e-9);
        assert_eq!(s.p50_ms, Some(3.0));
        assert_eq!(s.p99_ms, Some(4.0));
        // The same message is sampled once.
        assert_eq!(
            s.error_samples,
            vec!["500 InternalError", "wrong bytes at offset 7"]
        );
        let json = s.to_json();
        assert_eq!(json["verify_failures"], 1);
        assert_eq!(json["p99_ms"], 4.0);
    }

    #[test]
    fn a_phase_without_successes_has_no_latency() {
        let mut r = Recorder::default();
        r.failure("connection refused".into(), false);
        let s = r.summary("put", Duration::from_secs(1));
        assert_eq!((s.ops, s.errors, s.p50_ms), (0, 1, None));
        assert!(table(&[s]).contains("put"));
    }
}
