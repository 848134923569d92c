//! Rot the provider was asked not to look for: a gateway reads the data shards of an
//! encrypted segment with `skip_hash_check` (AES-GCM's tag covers them), so a provider
//! whose disk rotted sends the rot instead of answering `DATA_LOSS`. The tag fails, the
//! recorded hashes name the shard, it is flagged for repair and read around, and the client
//! gets the bytes it wrote; scrubs and repair still check every shard they read.

use std::time::Duration;

use sublet_e2e::cluster::{
    Cluster, corrupt_shard_file, metric_sum, stripe_of, test_objects, wait_for,
};

const PLAN: &str = "sealed";
const BUCKET: &str = "sealed";
const SEGMENT: u64 = 64 << 10;
const WIDTH: u64 = 6;
const DATA_SHARDS: u64 = 4;
/// One more provider than the stripe is wide, so a flagged shard can move.
const PROVIDERS: usize = 7;

/// 4+2, encrypted (the default, said again: the test is about AES-GCM's tag), 64 KiB
/// segments, repairs start after 1 s.
fn policies() -> String {
    crate::fast_repair_plan(PLAN, &["encryption: aes-256-gcm"])
}

fn provider_metrics(c: &Cluster, i: usize) -> String {
    let (status, body) = sublet_e2e::cluster::http_call(
        c.providers[i].http,
        "GET",
        "/metrics",
        None,
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

#[test]
fn rot_in_a_data_shard_sent_unchecked_is_found_flagged_read_around_and_repaired() {
    let tmp = tempfile::tempdir().unwrap();
    let c = Cluster::start(tmp.path(), PROVIDERS, &policies(), PLAN);
    c.create_bucket(BUCKET);
    let objects = test_objects("sealed", 3, 200 << 10);
    for o in &objects {
        c.put(BUCKET, o);
    }
    let total: u64 = objects.iter().map(|o| o.segments(SEGMENT) * WIDTH).sum();
    let plan = || c.admin_get(&format!("/admin/v1/plans/{PLAN}"));
    let healthy = || plan()["shards"]["healthy"].as_u64().unwrap_or(0);
    assert_eq!(healthy(), total);

    // Rot in one data shard, on disk: the provider's header and outboard are intact, only
    // the bytes differ.
    let (holder, (id, path)) = (0..PROVIDERS)
        .flat_map(|i| {
            c.providers[i]
                .shard_files()
                .into_iter()
                .map(move |f| (i, f))
        })
        .find(|(_, (id, _))| stripe_of(id).1 < DATA_SHARDS)
        .expect("some provider holds a data shard");
    corrupt_shard_file(&path);
    let before = provider_metrics(&c, holder);

    c.assert_all_read_back(BUCKET, &objects);

    // The provider sent the rot as asked, without detecting it: what found it is the
    // gateway's tag, then its hashes.
    let after = provider_metrics(&c, holder);
    let unchecked = metric_sum(&after, "sublet_provider_unchecked_reads_total", &[])
        - metric_sum(&before, "sublet_provider_unchecked_reads_total", &[]);
    assert!(
        unchecked >= 1.0,
        "no read of {id} skipped the check:\n{after}"
    );
    assert_eq!(
        metric_sum(&after, "sublet_provider_corruptions_total", &[]),
        0.0,
        "the provider checked the rotten shard itself (the gateway did not ask it not to)"
    );
    assert_eq!(
        healthy(),
        total - 1,
        "the rotten shard {id} is not flagged: {}",
        plan()
    );
    assert!(
        c.log_text().contains(&id),
        "the gateway's log does not name {id}:\n{}",
        c.log_tail()
    );

    // A scrub reads every shard checked: the provider finds the rot itself.
    let report = c.admin_post("/admin/v1/scrub");
    assert_eq!(report["bad"], 1, "{report}");
    assert!(
        metric_sum(
            &provider_metrics(&c, holder),
            "sublet_provider_corruptions_total",
            &[]
        ) >= 1.0
    );

    wait_for("full health after repair", Duration::from_secs(60), || {
        c.admin_post(&format!(
            "/admin/v1/plans/{PLAN}/repair?limit=1000&bandwidthLimit={}",
            1u64 << 40
        ));
        let h = plan();
        if h["shards"]["healthy"] == total && h["repair"]["due"] == 0 {
            Ok(())
        } else {
            Err(h.to_string())
        }
    });
    c.assert_all_read_back(BUCKET, &objects);
}
