//! Short-circuit reads between real processes: `sublet serve` over `sublet-provider`
//! processes on Unix sockets reads the data shards of encrypted segments from the files the
//! providers hand it (`SCM_RIGHTS`), not over gRPC. What it reads so is only what AES-GCM's
//! tag covers, so a file that rotted on disk, a provider handing another shard's file, and
//! one that stalls after answering all still give the client the bytes it wrote: the tag
//! fails, the recorded hashes name the shard, it is flagged and read around over checked
//! gRPC, or the read is hedged onto another provider. A provider with
//! `--short-circuit-reads false` is read over gRPC.

use std::time::{Duration, Instant};

use serde_json::Value;
use sublet_e2e::cluster::{
    Cluster, ClusterSpec, ProviderTransport, TestObject, corrupt_shard_file, metric_sum, stripe_of,
    test_objects, wait_for,
};

const PLAN: &str = "local";
const BUCKET: &str = "local";
const SEGMENT: u64 = 64 << 10;
const WIDTH: u64 = 6;
const DATA_SHARDS: u64 = 4;
/// One more provider than the stripe is wide, so a flagged shard can move.
const PROVIDERS: usize = 7;
/// The provider made to lie.
const LIAR: usize = 0;
const SHORT_CIRCUIT: &str = "sublet_provider_short_circuit_reads_total";
const UNCHECKED: &str = "sublet_provider_unchecked_reads_total";

/// 4+2, encrypted (the default, said again: short-circuit reads are for what the tag
/// covers), 64 KiB segments, writes commit with 5 shards of 6, repairs start after 1 s.
fn policies() -> String {
    crate::fast_repair_plan(PLAN, &["encryption: aes-256-gcm", "writeQuorum: 5"])
}

/// [`PROVIDERS`] providers, each reached over its Unix socket only, under one gateway.
fn over_unix_sockets(dir: &std::path::Path) -> Cluster {
    let policies = policies();
    let c = Cluster::start_with(
        dir,
        &ClusterSpec {
            transport: ProviderTransport::UnixSockets,
            ..ClusterSpec::one_gateway(PROVIDERS, &policies, PLAN)
        },
    );
    c.create_bucket(BUCKET);
    c
}

/// Reads every object back until provider `n` has handed over at least one file, for up to
/// a minute. A provider's first short-circuit connection (a node-key handshake) can take
/// longer than the read's hedge (800 ms) on a loaded machine: the read is then answered by
/// another provider and the request to `n` dropped before it handed a file (CI saw it once).
fn read_back_until_short_circuited(c: &Cluster, n: usize, objects: &[TestObject], why: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        c.assert_all_read_back(BUCKET, objects);
        if metric_sum(&provider_metrics(c, n), SHORT_CIRCUIT, &[]) >= 1.0 {
            return;
        }
        assert!(Instant::now() < deadline, "{why}");
    }
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

/// Metric `name` summed over every provider.
fn all_providers(c: &Cluster, name: &str) -> f64 {
    (0..c.providers.len())
        .map(|i| metric_sum(&provider_metrics(c, i), name, &[]))
        .sum()
}

fn total_shards(objects: &[TestObject]) -> u64 {
    objects.iter().map(|o| o.segments(SEGMENT) * WIDTH).sum()
}

fn plan(c: &Cluster) -> Value {
    c.admin_get(&format!("/admin/v1/plans/{PLAN}"))
}

fn healthy(c: &Cluster) -> u64 {
    plan(c)["shards"]["healthy"].as_u64().unwrap_or(0)
}

/// The healthy shard count once it has not moved for half a second (flags are written
/// off the read's path).
fn settled_healthy(c: &Cluster) -> u64 {
    let mut last = healthy(c);
    wait_for(
        "the healthy shard count to settle",
        Duration::from_secs(30),
        || {
            std::thread::sleep(Duration::from_millis(500));
            let now = healthy(c);
            if now == last {
                return Ok(now);
            }
            let was = last;
            last = now;
            Err(format!("{was} then {now}"))
        },
    )
}

/// Provider `i` in `GET /admin/v1/providers`.
fn provider(c: &Cluster, i: usize) -> Value {
    let all = c.admin_get("/admin/v1/providers");
    all["items"]
        .as_array()
        .and_then(|items| {
            items
                .iter()
                .find(|p| p["nodeId"] == c.providers[i].node_id.as_str())
        })
        .cloned()
        .unwrap_or_else(|| panic!("provider {i} is not listed: {all}"))
}

/// Repair passes until every shard of `objects` is healthy and no repair is due.
fn repair_until_healthy(c: &Cluster, objects: &[TestObject]) {
    let total = total_shards(objects);
    wait_for("full health after repair", Duration::from_secs(60), || {
        c.admin_post(&format!(
            "/admin/v1/plans/{PLAN}/repair?limit=1000&bandwidthLimit={}",
            1u64 << 40
        ));
        let h = plan(c);
        if h["shards"]["healthy"] == total && h["repair"]["due"] == 0 {
            Ok(())
        } else {
            Err(h.to_string())
        }
    });
}

#[test]
fn short_circuit_gets_carry_the_data_shards_of_encrypted_objects_and_read_back_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let c = over_unix_sockets(tmp.path());
    let objects = test_objects("sc", 5, 300 << 10);
    for o in &objects {
        c.put(BUCKET, o);
    }
    let (sc_before, unchecked_before) = (
        all_providers(&c, SHORT_CIRCUIT),
        all_providers(&c, UNCHECKED),
    );
    c.assert_all_read_back(BUCKET, &objects);
    let short_circuited = all_providers(&c, SHORT_CIRCUIT) - sc_before;
    let unchecked = all_providers(&c, UNCHECKED) - unchecked_before;
    // Every data shard of every segment is a whole shard the tag covers: each one read
    // went by a file handed over, none by an unchecked gRPC stream.
    let data_shards: u64 = objects
        .iter()
        .map(|o| o.segments(SEGMENT) * DATA_SHARDS)
        .sum();
    assert!(
        short_circuited >= data_shards as f64,
        "{short_circuited} short-circuit reads for {data_shards} data shards read"
    );
    assert_eq!(
        unchecked, 0.0,
        "{unchecked} whole-shard reads went over gRPC unchecked instead of short-circuit"
    );
    // Nothing was wrong, nothing was flagged.
    assert_eq!(healthy(&c), total_shards(&objects), "{}", plan(&c));
}

#[test]
fn rot_in_a_data_shard_read_by_short_circuit_is_found_flagged_read_around_and_repaired() {
    let tmp = tempfile::tempdir().unwrap();
    let c = over_unix_sockets(tmp.path());
    let objects = test_objects("rot", 3, 200 << 10);
    for o in &objects {
        c.put(BUCKET, o);
    }
    let total = total_shards(&objects);
    assert_eq!(healthy(&c), total);

    // Rot in one data shard's file: header and outboard intact, only the bytes differ. The
    // provider's checks of the file (index, header, length) all pass, so it hands it over.
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

    let after = provider_metrics(&c, holder);
    let delta = |name| metric_sum(&after, name, &[]) - metric_sum(&before, name, &[]);
    assert!(
        delta(SHORT_CIRCUIT) >= 1.0,
        "provider {holder} handed over no file: the rotten shard {id} was not read by short-circuit\n{after}"
    );
    assert_eq!(
        delta(UNCHECKED),
        0.0,
        "provider {holder} streamed a shard unchecked over gRPC"
    );
    assert_eq!(
        metric_sum(&after, "sublet_provider_corruptions_total", &[]),
        0.0,
        "the provider found the rot itself: the gateway's tag and hashes were not what caught it"
    );
    // The tag failed, the recorded hashes named the shard: flagged and logged by name.
    assert_eq!(
        settled_healthy(&c),
        total - 1,
        "the rotten shard {id} is not flagged (or more are): {}",
        plan(&c)
    );
    // Named by its recorded hash right after the tag failed (not found later by trying
    // other combinations of shards, which also flags but costs a read per combination).
    assert!(
        c.log_text()
            .lines()
            .any(|l| l.contains(&id) && l.contains("shard failed its hash check")),
        "the gateway's log does not name {id} as failing its hash check:\n{}",
        c.log_tail()
    );

    repair_until_healthy(&c, &objects);
    assert!(
        !c.providers[holder]
            .shard_files()
            .iter()
            .any(|(held, _)| *held == id),
        "the rotten shard {id} is still on provider {holder} after repair"
    );
    c.assert_all_read_back(BUCKET, &objects);
}

#[test]
fn a_provider_handing_another_shards_file_is_read_around_flagged_and_repaired() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = over_unix_sockets(tmp.path());
    let objects = test_objects("swap", 6, 320 << 10);
    for o in &objects {
        c.put(BUCKET, o);
    }
    assert!(c.shards_on(LIAR) > 0, "the liar-to-be holds nothing");
    let total = total_shards(&objects);
    assert_eq!(healthy(&c), total);
    // Of the same lengths, mostly: the swapped file passes the length check and only the
    // tag, then the recorded hash, can tell.
    c.providers[LIAR].restart_with(&["--fault-swap-shards"]);

    read_back_until_short_circuited(
        &c,
        LIAR,
        &objects,
        "the liar handed over no file: its lie was not told on the short-circuit path",
    );
    let flagged = total - settled_healthy(&c);
    assert!(flagged >= 1, "no swapped shard was flagged: {}", plan(&c));
    let liar = provider(&c, LIAR);
    assert!(
        liar["score"].as_u64().is_some_and(|score| score < 100),
        "the liar keeps its score: {liar}"
    );
    for i in (0..PROVIDERS).filter(|&i| i != LIAR) {
        let p = provider(&c, i);
        assert!(
            p["score"].is_null() || p["score"] == 100,
            "honest provider {i} lost score: {p}"
        );
    }
    repair_until_healthy(&c, &objects);
    c.assert_all_read_back(BUCKET, &objects);
}

#[test]
fn a_provider_stalling_on_the_short_circuit_path_does_not_hold_reads_up() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = over_unix_sockets(tmp.path());
    let objects = test_objects("stall", 6, 320 << 10);
    for o in &objects {
        c.put(BUCKET, o);
    }
    assert!(c.shards_on(LIAR) > 0, "the staller holds nothing");
    c.providers[LIAR].restart_with(&["--fault-slow-reads"]);
    let total = total_shards(&objects);
    for o in &objects {
        let started = Instant::now();
        c.read_back(BUCKET, o).unwrap_or_else(|e| panic!("{e}"));
        let took = started.elapsed();
        // Without hedging each segment would wait out the short-circuit answer's 10 s bound
        // (or the stalled stream's): hedges answer within a second or so.
        let bound = Duration::from_secs(3 * o.segments(SEGMENT) + 5);
        assert!(took < bound, "{} took {took:?} (bound {bound:?})", o.key);
    }
    assert!(
        metric_sum(&provider_metrics(&c, LIAR), SHORT_CIRCUIT, &[]) >= 1.0,
        "the staller was never asked for a file: the stall was not on the short-circuit path"
    );
    // Slow is not wrong: nothing was flagged.
    assert_eq!(settled_healthy(&c), total, "{}", plan(&c));
}

#[test]
fn providers_with_short_circuit_reads_off_are_read_over_grpc() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = over_unix_sockets(tmp.path());
    for p in &mut c.providers {
        p.restart_with(&["--short-circuit-reads", "false"]);
    }
    let objects = test_objects("off", 5, 300 << 10);
    for o in &objects {
        c.put(BUCKET, o);
    }
    c.assert_all_read_back(BUCKET, &objects);
    // Read twice: the second time the gateway knows the providers refuse the mode.
    c.assert_all_read_back(BUCKET, &objects);
    assert_eq!(
        all_providers(&c, SHORT_CIRCUIT),
        0.0,
        "a provider with short-circuit reads off handed over a file"
    );
    // Still the same reads: the data shards, whole and unchecked, over gRPC.
    let data_shards: u64 = objects
        .iter()
        .map(|o| o.segments(SEGMENT) * DATA_SHARDS)
        .sum();
    let unchecked = all_providers(&c, UNCHECKED);
    assert!(
        unchecked >= 2.0 * data_shards as f64,
        "{unchecked} unchecked gRPC reads for twice {data_shards} data shards"
    );
    assert_eq!(healthy(&c), total_shards(&objects), "{}", plan(&c));
}

#[test]
fn a_restarted_provider_is_read_by_short_circuit_again_without_a_failed_read() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = over_unix_sockets(tmp.path());
    let objects = test_objects("again", 5, 300 << 10);
    for o in &objects {
        c.put(BUCKET, o);
    }
    // The gateway keeps the connections of these reads for the next ones.
    c.assert_all_read_back(BUCKET, &objects);
    assert!(metric_sum(&provider_metrics(&c, LIAR), SHORT_CIRCUIT, &[]) >= 1.0);
    // The provider restarts (an upgrade, say): the connections the gateway kept are dead.
    c.providers[LIAR].restart_with(&[]);
    read_back_until_short_circuited(
        &c,
        LIAR,
        &objects,
        "the restarted provider was not read by short-circuit again",
    );
    let failures = metric_sum(
        &c.metrics(),
        "sublet_gateway_shard_failures_total",
        &[
            &format!("provider=\"{}\"", c.providers[LIAR].node_id),
            "call=\"get\"",
        ],
    );
    assert_eq!(
        failures, 0.0,
        "reads of the restarted provider failed on connections kept from before its restart"
    );
    assert_eq!(healthy(&c), total_shards(&objects), "{}", plan(&c));
}
