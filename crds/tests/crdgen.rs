//! The `crdgen` binary writes one manifest per kind and `--check` catches drift.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sublet-crdgen-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn crdgen(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_crdgen"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn writes_then_checks_then_reports_drift() {
    let dir = scratch_dir("drift");
    let dir_arg = dir.to_str().unwrap();

    let check = crdgen(&["--check", dir_arg]);
    assert!(!check.status.success(), "missing files must fail the check");

    assert!(crdgen(&[dir_arg]).status.success());
    let mut written: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    written.sort();
    assert_eq!(
        written,
        [
            "bucketclaims.sublet.dev.yaml",
            "providerpools.sublet.dev.yaml",
            "storagegateways.sublet.dev.yaml",
            "storageplans.sublet.dev.yaml",
            "storageschedules.sublet.dev.yaml",
        ]
    );
    assert!(crdgen(&["--check", dir_arg]).status.success());

    let edited = dir.join("storageplans.sublet.dev.yaml");
    let text = std::fs::read_to_string(&edited).unwrap();
    std::fs::write(&edited, format!("{text}# hand edit\n")).unwrap();
    let check = crdgen(&["--check", dir_arg]);
    assert!(!check.status.success());
    let stderr = String::from_utf8(check.stderr).unwrap();
    assert!(
        stderr.contains("storageplans.sublet.dev.yaml differs"),
        "{stderr}"
    );
    assert!(!stderr.contains("storagegateways"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unknown_flags_are_refused() {
    let out = crdgen(&["--chek"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("unknown flag --chek")
    );
}
