//! Snapshot manifests as `sublet recover` reads them from providers (`parse_manifest`):
//! untrusted bytes. No panic on any input; a manifest that parses reads back the same
//! after the JSON the gateway writes of it, and what recovery derives from it (its shard
//! id, the snapshot's length from its layout) is computed without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sublet_gateway::upkeep::snapshot::{Manifest, parse_manifest};

fuzz_target!(|bytes: &[u8]| {
    let Ok(manifest) = parse_manifest(bytes) else {
        return;
    };
    let json = serde_json::to_vec(&manifest).expect("a manifest serializes");
    let back: Manifest = parse_manifest(&json).expect("a written manifest parses");
    assert_eq!(back, manifest);
    let _ = manifest.shard_id();
    let _ = manifest.layout.plain_length();
    let _ = manifest.layout.shards().count();
});
