//! Writes the CRD manifests into the crate directory (or the directory given), or with
//! `--check` exits non-zero listing the files that differ from a fresh generation.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut check = false;
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--check" => check = true,
            "-h" | "--help" => {
                println!(
                    "usage: crdgen [--check] [DIR]\n\nwrites <plural>.sublet.dev.yaml into DIR (default: the crds crate)"
                );
                return ExitCode::SUCCESS;
            }
            other if other.starts_with('-') => {
                eprintln!("crdgen: unknown flag {other}; use --check or --help");
                return ExitCode::from(2);
            }
            other => dir = PathBuf::from(other),
        }
    }
    let manifests = match sublet_crds::crdgen::manifests() {
        Ok(manifests) => manifests,
        Err(err) => {
            eprintln!("crdgen: cannot render the CRDs: {err}");
            return ExitCode::FAILURE;
        }
    };
    let mut stale = Vec::new();
    for manifest in manifests {
        let path = dir.join(&manifest.file_name);
        if check {
            if std::fs::read_to_string(&path).ok().as_deref() != Some(manifest.yaml.as_str()) {
                stale.push(path);
            }
        } else if let Err(err) = std::fs::write(&path, &manifest.yaml) {
            eprintln!("crdgen: cannot write {}: {err}", path.display());
            return ExitCode::FAILURE;
        } else {
            println!("wrote {}", path.display());
        }
    }
    if stale.is_empty() {
        return ExitCode::SUCCESS;
    }
    for path in &stale {
        eprintln!("crdgen: {} differs from the generated CRD", path.display());
    }
    eprintln!("run `cargo run -p sublet-crds --bin crdgen` and commit the result");
    ExitCode::FAILURE
}
