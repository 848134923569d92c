//! `sublet-bench` against a real `sublet dev`, with sizes small enough to take seconds:
//! every phase completes without errors, and a server answering with other bytes than
//! were written is caught. No timing is asserted.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

use sublet_e2e::dev::SubletDev;

fn bench(dev: &SubletDev, json: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sublet-bench"))
        .args(["--endpoint", &dev.endpoint()])
        .args(["--access-key", &dev.access_key])
        .args(["--secret-key", &dev.secret_key])
        .args([
            "--bucket", "bench", "--prefix", "smoke/", "--quiet", "-c", "3",
        ])
        .arg("--json")
        .arg(json)
        .args(args)
        .output()
        .expect("run sublet-bench")
}

fn read_phases(json: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(json).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    doc["phases"].as_array().unwrap().clone()
}

#[test]
fn every_phase_runs_clean_against_sublet_dev_and_wrong_bytes_are_caught() {
    let tmp = tempfile::tempdir().unwrap();
    let dev = SubletDev::start(&tmp.path().join("state"));
    let json = tmp.path().join("results.json");

    let out = bench(
        &dev,
        &json,
        &[
            "--objects=5",
            "--size=300Ki",
            "--small-objects=12",
            "--multipart-size=11Mi",
            "--part-size=5Mi",
            "--mixed-ops=10",
            "--list-keys=25",
            "--list-passes=2",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let phases = read_phases(&json);
    for p in &phases {
        assert_eq!(p["errors"], 0, "{p}");
        assert!(p["ops"].as_u64().unwrap() > 0, "{p}");
    }
    let names: Vec<&str> = phases
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "put",
            "get",
            "small-put",
            "small-get",
            "mp-put",
            "mp-get",
            "mixed",
            "list-fill",
            "list"
        ]
    );
    let by_name = |n: &str| phases.iter().find(|p| p["phase"] == n).unwrap().clone();
    assert_eq!(by_name("get")["bytes"], 5 * 300 * 1024);
    assert_eq!(by_name("mp-get")["bytes"], 11 << 20);
    assert_eq!(by_name("mp-get")["ops"], 3);
    // Two passes over 25 keys, one page each.
    assert_eq!(by_name("list")["ops"], 2);
    assert!(stdout.contains("small-get"), "{stdout}");

    // Reading the same keys as if they had been written 1 byte longer: the server
    // answers with what it holds, which is not what this run expects.
    let out = bench(
        &dev,
        &json,
        &["--phases=get", "--objects=5", "--size=307201"],
    );
    assert_eq!(out.status.code(), Some(3), "{:?}", out);
    let get = &read_phases(&json)[0];
    assert_eq!(get["ops"], 0, "{get}");
    assert_eq!(get["verify_failures"], 5, "{get}");
}
