//! The YAML the gateway runs from: a `sublet serve` file through the loader
//! (`sublet_crds::load_str`), or the policy API's overlay file layered over nothing
//! (`admin::policy::layer`, which re-reads every resource as YAML). A file the loader takes
//! must turn into the node's plans, endpoints, topology and rules without a panic, and must
//! read back the same after the round trip through YAML the policy API makes of it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sublet_crds::{ByteSize, Config, Duration, load_str};
use sublet_gateway::admin::policy::{Overlay, layer};
use sublet_gateway::node::config;

fn use_config(c: &Config) {
    if let Some(default) = c.plans.keys().next() {
        let _ = config::plans(c, default);
    }
    if let Ok(endpoints) = config::endpoints(c) {
        let _ = config::topology(c, &endpoints);
    }
    let _ = config::cloud_members(c);
    let _ = config::rebuild_policies(c);
    let _ = config::lifecycle_rules(c);
    let _ = config::audit_policy(c);
}

fuzz_target!(|text: &[u8]| {
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    if let Ok(c) = load_str("fuzz.yaml", text) {
        use_config(&c);
        let again = layer(&c, &Overlay::default(), "again")
            .unwrap_or_else(|e| panic!("a loaded file does not load again after YAML: {e}"));
        assert_eq!(again, c, "the YAML round trip changed the file");
    } else if let Ok(overlay) = serde_yaml::from_str::<Overlay>(text)
        && let Ok(c) = layer(&Config::default(), &overlay, "overlay")
    {
        use_config(&c);
    }
    // The human forms of sizes and durations: what they print parses back to the same.
    if let Ok(size) = ByteSize::parse(text) {
        let printed = ByteSize::from_bytes(size.bytes()).to_string();
        assert_eq!(
            ByteSize::parse(&printed).map(|s| s.bytes()).ok(),
            Some(size.bytes())
        );
    }
    if let Ok(d) = Duration::parse(text) {
        let printed = Duration::from_secs(d.as_secs()).to_string();
        assert_eq!(
            Duration::parse(&printed).map(|d| d.as_secs()).ok(),
            Some(d.as_secs())
        );
    }
});
