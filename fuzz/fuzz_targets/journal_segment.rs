//! Journal segments as recovery reads them back from providers (`open_segment`) and
//! replays them (`journal::apply`). By the first byte:
//! - even: the rest is a segment blob from a hostile provider (it cannot know the master
//!   key): it must be refused without a panic.
//! - odd: the rest, one JSON entry a line, is sealed with `seal_segment` as the gateway
//!   does; opened again it must give the entries that were sealed (decode(encode(x)) == x),
//!   under its own id and key only, and the entries are replayed twice (as recovery may,
//!   after a snapshot that already holds some) onto an in-memory store without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sublet_gateway::datapath::codec::MasterKey;
use sublet_gateway::meta::SqliteStore;
use sublet_gateway::meta::journal::{Entry, apply, open_segment, seal_segment};

const ID: &str = "sublet-meta-journal-0123456789abcdef-000001700000000-0000000001";

fuzz_target!(|input: &[u8]| {
    let Some((mode, rest)) = input.split_first() else {
        return;
    };
    let master = MasterKey::from_bytes(&[7; 32]);
    if mode & 1 == 0 {
        assert!(
            open_segment(&master, ID, rest).is_err(),
            "a forged segment opened"
        );
        return;
    }
    let lines: Vec<Vec<u8>> = rest
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    let Ok(blob) = seal_segment(&master, ID, &lines) else {
        return;
    };
    let Ok(entries) = open_segment(&master, ID, &blob) else {
        return;
    };
    assert!(
        open_segment(&master, "sublet-meta-journal-other", &blob).is_err(),
        "a segment opened under another id"
    );
    assert!(
        open_segment(&MasterKey::from_bytes(&[8; 32]), ID, &blob).is_err(),
        "a segment opened with another key"
    );
    // What the gateway writes of these entries opens to the same entries.
    let json: Vec<Vec<u8>> = entries
        .iter()
        .map(|e| serde_json::to_vec(e).expect("an entry serializes"))
        .collect();
    let again = seal_segment(&master, ID, &json).expect("sealing");
    let reopened: Vec<Entry> = open_segment(&master, ID, &again).expect("a sealed segment opens");
    assert_eq!(reopened, entries);
    let store = SqliteStore::open_in_memory().expect("in-memory store");
    for entry in entries.iter().chain(&entries) {
        let _ = apply(&store, entry);
    }
});
