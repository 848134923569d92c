//! Providers that lie: one of seven `sublet-provider` processes is restarted with a hidden
//! `--fault-*` switch between two batches of writes. Whatever it does, every object written
//! before and after reads back byte for byte; what it lied about is flagged, costs it its
//! score or its placements, and is repaired onto the honest providers.

use std::time::{Duration, Instant};

use serde_json::Value;
use sublet_e2e::cluster::{Cluster, TestObject, metric_sum, test_objects, wait_for};

const PLAN: &str = "hostile";
const BUCKET: &str = "hostile";
const SEGMENT: u64 = 64 << 10;
/// Data plus parity shards of the plan.
const WIDTH: u64 = 6;
/// One more provider than the stripe is wide, so a liar's shards have somewhere to go.
const PROVIDERS: usize = 7;
/// The provider that is made to lie.
const LIAR: usize = 0;
const HEAL_TIMEOUT: Duration = Duration::from_secs(60);

/// 4+2 in 64 KiB segments, one shard per provider, a write commits with 5 shards of 6 (so
/// a liar refusing or failing a write does not fail it) and repairs start after 1s.
fn policies() -> String {
    crate::fast_repair_plan(PLAN, &["writeQuorum: 5"])
}

/// A cluster where provider [`LIAR`] was honest for `before` and lies (`fault`) since,
/// `after` included.
struct Scene {
    c: Cluster,
    before: Vec<TestObject>,
    after: Vec<TestObject>,
    /// Shards the liar held when it started lying.
    liar_shards_then: u64,
    _tmp: tempfile::TempDir,
}

impl Scene {
    fn start(fault: &str, capacity: Option<&str>) -> Scene {
        let tmp = tempfile::tempdir().unwrap();
        let mut c = Cluster::start(tmp.path(), PROVIDERS, &policies(), PLAN);
        c.create_bucket(BUCKET);
        let before = test_objects("before", 6, 320 << 10);
        for o in &before {
            c.put(BUCKET, o);
        }
        let liar_shards_then = c.shards_on(LIAR);
        assert!(liar_shards_then > 0, "the liar-to-be holds nothing");
        if let Some(capacity) = capacity {
            c.providers[LIAR].capacity = capacity.into();
        }
        c.providers[LIAR].restart_with(&[fault]);
        let after = test_objects("after", 6, 320 << 10);
        for o in &after {
            c.put(BUCKET, o);
        }
        Scene {
            c,
            before,
            after,
            liar_shards_then,
            _tmp: tmp,
        }
    }

    fn objects(&self) -> Vec<TestObject> {
        self.before.iter().chain(&self.after).cloned().collect()
    }

    fn total_shards(&self) -> u64 {
        self.objects()
            .iter()
            .map(|o| o.segments(SEGMENT) * WIDTH)
            .sum()
    }

    fn plan_health(&self) -> Value {
        self.c.admin_get(&format!("/admin/v1/plans/{PLAN}"))
    }

    /// Healthy shards as the gateway counts them (flagged and missing ones are not).
    fn healthy_shards(&self) -> u64 {
        self.plan_health()["shards"]["healthy"]
            .as_u64()
            .unwrap_or(0)
    }

    /// The healthy shard count once it has not moved for half a second (reads flag bad
    /// shards off their answer's path; bounded by `HEAL_TIMEOUT`).
    fn settled_healthy_shards(&self) -> u64 {
        let mut last = self.healthy_shards();
        wait_for("the healthy shard count to settle", HEAL_TIMEOUT, || {
            std::thread::sleep(Duration::from_millis(500));
            let now = self.healthy_shards();
            if now == last {
                return Ok(now);
            }
            let was = last;
            last = now;
            Err(format!("{was} then {now}"))
        })
    }

    /// Provider `i` in `GET /admin/v1/providers`.
    fn provider(&self, i: usize) -> Value {
        let all = self.c.admin_get("/admin/v1/providers");
        all["items"]
            .as_array()
            .and_then(|items| {
                items
                    .iter()
                    .find(|p| p["nodeId"] == self.c.providers[i].node_id.as_str())
            })
            .cloned()
            .unwrap_or_else(|| panic!("provider {i} is not listed: {all}"))
    }

    /// Asks for repair passes until every shard of every object is healthy.
    fn repair_until_healthy(&self) {
        let total = self.total_shards();
        wait_for("full health after repair", HEAL_TIMEOUT, || {
            self.c.admin_post(&format!(
                "/admin/v1/plans/{PLAN}/repair?limit=1000&bandwidthLimit={}",
                1u64 << 40
            ));
            let h = self.plan_health();
            let n = self.objects().len() as u64;
            if h["shards"]["healthy"] == total
                && h["objectsByHealth"]["healthy"] == n
                && h["repair"]["due"] == 0
                && h["repair"]["waiting"] == 0
            {
                Ok(())
            } else {
                Err(h.to_string())
            }
        });
    }

    /// Every honest provider's score is untouched (no audit failed, nothing flagged).
    fn assert_honest_providers_unscathed(&self) {
        for i in (0..PROVIDERS).filter(|&i| i != LIAR) {
            let p = self.provider(i);
            assert!(
                p["score"].is_null() || p["score"] == 100,
                "honest provider {i} lost score: {p}"
            );
        }
    }
}

#[test]
fn a_provider_returning_another_shards_bytes_is_read_around_flagged_and_repaired() {
    let s = Scene::start("--fault-swap-shards", None);
    // (A write racing the liar's restart may have left a shard missing: not a flag.)
    let healthy = s.healthy_shards();
    let held = s.c.shards_on(LIAR);

    s.c.assert_all_read_back(BUCKET, &s.objects());
    // The swapped shards failed their hash checks: flagged for repair, counted against it.
    // A read answers its client before its flags reach the metadata (they are written off
    // the read's path), so count them once the count stops moving.
    let flagged = healthy - s.settled_healthy_shards();
    assert!(flagged >= 3, "{flagged} swapped shards flagged");
    let liar = s.provider(LIAR);
    assert!(
        liar["score"].as_u64().is_some_and(|score| score < 100),
        "the liar keeps its score: {liar}"
    );
    assert_eq!(liar["up"], false, "the liar still gets new shards: {liar}");
    s.assert_honest_providers_unscathed();

    s.repair_until_healthy();
    // Every flagged shard was rebuilt elsewhere (the repair's own reads may find more of the
    // liar's swapped shards: those leave too).
    let left = s.c.shards_on(LIAR);
    assert!(
        left <= held - flagged,
        "{left} shards left on the liar, which held {held} with {flagged} flagged: the flagged shards were not rebuilt elsewhere"
    );
    s.c.assert_all_read_back(BUCKET, &s.objects());
}

#[test]
fn a_provider_that_accepts_writes_then_drops_them_is_caught_and_repaired() {
    let s = Scene::start("--fault-drop-writes", None);
    let total = s.total_shards();
    // The gateway believes the acknowledgements until it reads or audits.
    s.c.assert_all_read_back(BUCKET, &s.objects());
    let liar = s.provider(LIAR);
    assert!(
        liar["score"].as_u64().is_some_and(|score| score < 100),
        "reads found its shards gone and it keeps its score: {liar}"
    );
    assert!(s.healthy_shards() < total, "nothing was flagged");
    s.assert_honest_providers_unscathed();

    // Audits find the rest of what it dropped (parity shards no read needed); repairs put
    // it elsewhere, until an audit finds nothing missing. Repair comes first in each round:
    // shards a read already flagged are not audited again, so when reads found every
    // dropped shard (a loaded machine hedges reads onto the parity shards too) an audit
    // passes at once while the flagged shards still wait on the liar.
    wait_for("an audit without failures", HEAL_TIMEOUT, || {
        s.repair_until_healthy();
        let report = s.c.admin_post("/admin/v1/audit?samples=10000");
        if report["failed"] == 0 {
            return Ok(());
        }
        Err(report.to_string())
    });
    // Everything it holds now, it held before it started lying.
    let on_disk = s.c.providers[LIAR].shard_files().len() as u64;
    assert!(on_disk <= s.liar_shards_then, "{on_disk} shard files");
    assert!(
        s.c.shards_on(LIAR) <= s.liar_shards_then,
        "the metadata still places dropped shards on the liar"
    );
    s.c.assert_all_read_back(BUCKET, &s.objects());
}

#[test]
fn a_provider_answering_a_byte_a_second_does_not_hold_reads_up() {
    let s = Scene::start("--fault-slow-reads", None);
    let healthy = s.healthy_shards();
    // It holds a shard of most stripes; without hedging, a 16 KiB shard at a byte a second
    // would take hours.
    for o in s.objects() {
        let started = Instant::now();
        s.c.read_back(BUCKET, &o).unwrap_or_else(|e| panic!("{e}"));
        let took = started.elapsed();
        let bound = Duration::from_secs(3 * o.segments(SEGMENT) + 5);
        assert!(took < bound, "{} took {took:?} (bound {bound:?})", o.key);
    }
    // Slow is not wrong: nothing was flagged.
    assert_eq!(s.healthy_shards(), healthy);
    s.assert_honest_providers_unscathed();
}

#[test]
fn a_provider_overstating_its_free_space_gets_no_more_shards_once_it_refuses_one() {
    // Its capacity is below what it holds already: every write is refused, while it
    // reports a pebibyte free.
    let s = Scene::start("--fault-overstate-free", Some("64Ki"));
    let liar = s.provider(LIAR);
    assert_eq!(
        liar["freeBytes"], 0,
        "the free space it claims is believed after it refused a write: {liar}"
    );
    let failures = metric_sum(
        &s.c.metrics(),
        "sublet_gateway_shard_failures_total",
        &[
            &format!("provider=\"{}\"", s.c.providers[LIAR].node_id),
            "call=\"put\"",
        ],
    );
    assert!(failures >= 1.0, "no refused write was counted");
    s.c.assert_all_read_back(BUCKET, &s.objects());
    s.repair_until_healthy();
    assert_eq!(
        s.c.shards_on(LIAR),
        s.liar_shards_then,
        "it was given shards it cannot hold"
    );
    s.assert_honest_providers_unscathed();
    s.c.assert_all_read_back(BUCKET, &s.objects());
}

#[test]
fn a_provider_storing_junk_under_its_own_hash_holds_nothing_the_gateway_records() {
    let s = Scene::start("--fault-store-junk", None);
    // Its acknowledgements name the junk's hash: refused, so the writes commit without it.
    assert!(s.healthy_shards() < s.total_shards());
    assert!(
        s.c.shards_on(LIAR) <= s.liar_shards_then,
        "the metadata records junk on the liar"
    );
    s.c.assert_all_read_back(BUCKET, &s.objects());
    s.repair_until_healthy();
    s.assert_honest_providers_unscathed();
    s.c.assert_all_read_back(BUCKET, &s.objects());
}
