//! Tests that need a program from outside the workspace (the real S3 clients, helm) skip
//! on a machine without it, with one line on stderr naming the test, what is missing and
//! the variable that turns the skip into a failure:
//!
//! ```text
//! SKIP restic_backs_up_checks_and_restores_a_tree: restic not found; set SUBLET_REQUIRE_CLIENTS=1 to fail instead (install: bash .ci/install-clients)
//! ```
//!
//! With that variable set to `1` (`.ci/run` sets them all) the same test fails instead, so
//! CI cannot pass by skipping. PostgreSQL (`SUBLET_REQUIRE_POSTGRES`, [`crate::postgres`]),
//! the Kubernetes API server (`SUBLET_REQUIRE_APISERVER`, [`crate::apiserver::APISERVER`]),
//! Prometheus (`SUBLET_REQUIRE_PROMETHEUS`, [`crate::prometheus::PROMETHEUS`]) and the
//! browser (`SUBLET_REQUIRE_BROWSER`, `market/tests/console.rs`) work the same way.

/// The variable that makes a missing S3 client fail the tests driving it.
pub const CLIENTS: Need = Need {
    var: "SUBLET_REQUIRE_CLIENTS",
    install: "bash .ci/install-clients",
};

/// The variable that makes a missing helm (or the chart checks' node schemas) fail the
/// tests of `e2e/tests/chart.rs`.
pub const HELM: Need = Need {
    var: "SUBLET_REQUIRE_HELM",
    install: "bash .ci/install-helm",
};

/// The variable that runs `e2e/tests/cluster.rs`, the whole-cluster test: it starts a real
/// Kubernetes node as root (iptables, sysctls, containerd), so a plain `cargo test` never
/// starts it by surprise; `.ci/run` sets it.
pub const CLUSTER: Need = Need {
    var: "SUBLET_REQUIRE_CLUSTER",
    install: "run as root; ../shared/cluster/cluster.sh deps; bash .ci/install-helm; bash .ci/install-clients",
};

/// The variable that makes missing Chromium, node or playwright-core (`e2e/console`) fail
/// the browser tests (`e2e/tests/browser.rs`).
pub const BROWSER: Need = Need {
    var: "SUBLET_REQUIRE_BROWSER",
    install: "bash .ci/install-browser",
};

/// A kind of outside tool: the variable that requires it and what installs it.
#[derive(Clone, Copy, Debug)]
pub struct Need {
    pub var: &'static str,
    pub install: &'static str,
}

impl Need {
    /// Whether `VAR=1` is set: a missing tool then fails the test.
    pub fn required(&self) -> bool {
        std::env::var(self.var).is_ok_and(|v| v == "1")
    }

    /// The test cannot run because `what` is missing: prints the one SKIP line and returns,
    /// or fails the test when the variable is set.
    pub fn skip(&self, what: &str) {
        let test = current_test();
        let install = self.install;
        let var = self.var;
        if self.required() {
            panic!("{test}: {what}, and {var}=1 requires it (install: {install})");
        }
        // Straight to the process's stderr, not through `eprintln!`, which the test harness
        // captures and hides for a passing test: a skip must show in a plain `cargo test`.
        let line =
            format!("SKIP {test}: {what}; set {var}=1 to fail instead (install: {install})\n");
        let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
    }
}

impl Need {
    /// For tests that run only when asked to (see [`CLUSTER`]): `true` when the variable is
    /// `1`; otherwise prints one SKIP line naming why the test waits to be asked and returns
    /// `false`, and the test returns at once.
    pub fn opted_in(&self, why: &str) -> bool {
        if self.required() {
            return true;
        }
        let (test, var) = (current_test(), self.var);
        let line = format!("SKIP {test}: {why}; set {var}=1 to run it\n");
        let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
        false
    }
}

/// The running test's name: libtest names each test's thread after it.
fn current_test() -> String {
    match std::thread::current().name() {
        Some(name) if name != "main" => name.rsplit("::").next().unwrap_or(name).to_owned(),
        _ => "test".to_owned(),
    }
}

/// `true` when every one of the S3 `clients` is installed (see
/// [`crate::clients::missing`]); otherwise prints the SKIP line (or fails the test under
/// `SUBLET_REQUIRE_CLIENTS=1`) and returns `false`, and the test returns at once.
pub fn clients_present(clients: &[&str]) -> bool {
    match clients.iter().find_map(|c| crate::clients::missing(c)) {
        None => true,
        Some(what) => {
            CLIENTS.skip(&what);
            false
        }
    }
}
