//! The shipped examples and CRD manifests stay loadable, valid and in sync with the types.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use sublet_crds::{Config, load_file, load_str};

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// Every cluster example (all but standalone.yaml) as one multi-document text.
fn cluster_examples() -> (Vec<PathBuf>, String) {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(examples_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.extension().is_some_and(|e| e == "yaml")
                && path.file_name().is_some_and(|n| n != "standalone.yaml")
        })
        .collect();
    paths.sort();
    let text = paths
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect::<Vec<_>>()
        .join("---\n");
    (paths, text)
}

#[test]
fn cluster_examples_load_together() {
    let (paths, text) = cluster_examples();
    assert_eq!(paths.len(), 9, "{paths:?}");
    let config: Config = load_str("examples", &text).unwrap_or_else(|e| panic!("{e}"));
    let names = |keys: Vec<&String>| keys.into_iter().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(config.pools.keys().collect()),
        ["friends", "home-lab", "rented"]
    );
    assert_eq!(
        names(config.plans.keys().collect()),
        ["archive", "configs", "family-photos", "scratch"]
    );
    assert_eq!(names(config.schedules.keys().collect()), ["nightly-care"]);
    assert_eq!(names(config.gateways.keys().collect()), ["s3"]);

    let label = |name: &str| config.plans[name].spec.redundancy_label();
    assert_eq!(label("family-photos"), "EC 4+2");
    assert_eq!(label("scratch"), "EC 2+1");
    assert_eq!(label("configs"), "3 replicas");
    assert_eq!(label("archive"), "EC 10+4");
    let photos = &config.plans["family-photos"].spec;
    assert_eq!(photos.stripe_width(), 6);
    assert_eq!(photos.data_shards(), 4);
    assert_eq!(photos.segment_size.bytes(), 16 << 20);
    assert_eq!(photos.placement.pools[0].min_shards, Some(4));
    assert_eq!(photos.placement.pools[2].max_shards, Some(2));
    assert_eq!(
        config.pools["home-lab"].spec.class,
        sublet_crds::PoolClass::Owned
    );
    assert_eq!(
        config.pools["rented"].spec.class,
        sublet_crds::PoolClass::Rented
    );
    let care = &config.schedules["nightly-care"].spec;
    assert_eq!(care.rebuild.grace_period.as_std().as_secs(), 900);
    assert_eq!(care.scrub.interval.as_secs(), 720 * 3600);
    assert_eq!(config.gateway().unwrap().spec.default_plan, "family-photos");
}

#[test]
fn each_cluster_example_validates_on_its_own() {
    for path in cluster_examples().0 {
        let text = std::fs::read_to_string(&path).unwrap();
        let value: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let problems = match value["kind"].as_str().unwrap() {
            "ProviderPool" => serde_yaml::from_value::<sublet_crds::ProviderPool>(value)
                .unwrap()
                .spec
                .validate(),
            "StoragePlan" => serde_yaml::from_value::<sublet_crds::StoragePlan>(value)
                .unwrap()
                .spec
                .validate(),
            "StorageSchedule" => serde_yaml::from_value::<sublet_crds::StorageSchedule>(value)
                .unwrap()
                .spec
                .validate(),
            "StorageGateway" => serde_yaml::from_value::<sublet_crds::StorageGateway>(value)
                .unwrap()
                .spec
                .validate(),
            other => panic!("unexpected kind {other} in {}", path.display()),
        };
        assert!(problems.is_empty(), "{}: {problems:?}", path.display());
    }
}

#[test]
fn standalone_example_loads() {
    let config =
        load_file(examples_dir().join("standalone.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let gateway = config.gateway().unwrap();
    assert_eq!(gateway.spec.listen.as_deref(), Some("127.0.0.1:9000"));
    assert_eq!(gateway.spec.admin_listen.as_deref(), Some("127.0.0.1:9001"));
    assert_eq!(gateway.spec.credentials.len(), 4);
    assert_eq!(
        gateway.spec.credentials[1].buckets[0].access,
        sublet_crds::Access::Read
    );
    assert_eq!(
        gateway.spec.credentials[2].secret_key_env.as_deref(),
        Some("SUBLET_AUDITOR_SECRET")
    );
    assert_eq!(gateway.spec.credentials[2].buckets[0].bucket, "*");
    let pinned = config.pools["local"].spec.endpoints.iter();
    assert!(pinned.into_iter().all(|e| e.node_id.is_some()));
    assert_eq!(config.plans["default"].spec.redundancy_label(), "EC 4+2");
    assert_eq!(config.pools["local"].spec.endpoints.len(), 5);
}

#[test]
fn committed_crds_match_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifests = sublet_crds::crdgen::manifests().unwrap();
    assert_eq!(manifests.len(), 5);
    for manifest in manifests {
        let path = dir.join(&manifest.file_name);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == manifest.yaml,
            "{} is stale; run `cargo run -p sublet-crds --bin crdgen` and commit it",
            path.display()
        );
    }
}

#[test]
fn crds_carry_short_names_status_and_columns() {
    for (crd, short, column) in [
        (sublet_crds::crdgen::crds()[0].clone(), "pp", ".spec.class"),
        (
            sublet_crds::crdgen::crds()[1].clone(),
            "sp",
            ".status.redundancy",
        ),
        (
            sublet_crds::crdgen::crds()[2].clone(),
            "ss",
            ".spec.rebuild.gracePeriod",
        ),
        (
            sublet_crds::crdgen::crds()[3].clone(),
            "sgw",
            ".spec.defaultPlan",
        ),
    ] {
        assert_eq!(crd.spec.group, "sublet.dev");
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.short_names, Some(vec![short.to_owned()]));
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(version.subresources.as_ref().unwrap().status.is_some());
        let columns = version.additional_printer_columns.as_ref().unwrap();
        assert!(
            columns.iter().any(|c| c.json_path == column),
            "{short}: {columns:?}"
        );
    }
}
