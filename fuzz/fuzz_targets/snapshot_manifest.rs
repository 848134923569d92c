//! Snapshot manifests as the gateway reads them back from providers (`open_manifest`):
//! untrusted bytes. By the first byte:
//! - even: the rest is a blob from a hostile provider (it cannot know the master key): it
//!   must be refused without a panic, under any id.
//! - odd: the rest, if it is a manifest's JSON, is sealed as the gateway seals it
//!   (`seal_manifest`, for this installation): it opens again to the same manifest under its
//!   own id only, and what recovery derives from it (its shard id, the snapshot's length from
//!   its layout) is computed without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sublet_gateway::datapath::codec::MasterKey;
use sublet_gateway::upkeep::snapshot::{Manifest, manifest_id, open_manifest, seal_manifest};

fuzz_target!(|input: &[u8]| {
    let Some((mode, rest)) = input.split_first() else {
        return;
    };
    let master = MasterKey::from_bytes(&[7; 32]);
    let installation = master.installation().to_string();
    if mode & 1 == 0 {
        for id in [
            manifest_id(&installation, 1_700_000_000_000),
            manifest_id(&installation, i64::MAX),
        ] {
            assert!(
                open_manifest(&master, &id, rest).is_err(),
                "a forged manifest opened"
            );
        }
        return;
    }
    let Ok(mut manifest) = serde_json::from_slice::<Manifest>(rest) else {
        return;
    };
    manifest.installation = installation;
    let _ = manifest.layout.plain_length();
    let _ = manifest.layout.shards().count();
    let id = manifest.shard_id();
    let sealed = seal_manifest(&master, &manifest).expect("a manifest seals");
    let opened = open_manifest(&master, &id, &sealed).expect("a sealed manifest opens");
    assert_eq!(opened, manifest);
    let other = manifest_id(&manifest.installation, manifest.created.wrapping_add(1));
    assert!(
        open_manifest(&master, &other, &sealed).is_err(),
        "a manifest opened under another id"
    );
});
