//! A real Prometheus for tests: `promtool` to check and unit-test the chart's alert rules,
//! and a `prometheus` server on a free loopback port, its TSDB in a folder the test owns,
//! scraping the targets a test names. Debian's `prometheus` package carries both (tested
//! with 2.42); its service is never used: every test runs a server of its own.
//!
//! The binaries are taken from `$SUBLET_PROMETHEUS_BIN` (a folder) or `PATH`. Without them
//! the tests print one SKIP line and pass, or fail under `SUBLET_REQUIRE_PROMETHEUS=1`
//! (`.ci/run` sets it).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::bench::sigv4::uri_encode;
use crate::cluster::{http_call, wait_for};
use crate::free_addr;
use crate::skip::Need;

/// The variable that makes a missing Prometheus fail `e2e/tests/prometheus.rs`.
pub const PROMETHEUS: Need = Need {
    var: "SUBLET_REQUIRE_PROMETHEUS",
    install: "apt-get install prometheus",
};

/// How long the server may take to answer `/-/ready`.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest one API call may take (the tests' queries read seconds of samples).
const API_TIMEOUT: Duration = Duration::from_secs(10);

fn works(bin: &Path) -> bool {
    Command::new(bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `name` (`prometheus` or `promtool`) from `$SUBLET_PROMETHEUS_BIN` or `PATH`, if it runs.
pub fn binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::var_os("SUBLET_PROMETHEUS_BIN")
        .map(|dir| PathBuf::from(dir).join(name))
        .into_iter()
        .chain(std::env::split_paths(&path).map(|d| d.join(name)))
        .find(|p| p.is_file() && works(p))
}

/// A running `prometheus`, killed (by process id) when dropped.
pub struct Prometheus {
    child: Child,
    log_path: PathBuf,
    /// Where its web UI and HTTP API listen.
    pub addr: SocketAddr,
}

impl Prometheus {
    /// Starts `bin` on `config` (the text of a `prometheus.yml`, written into `dir`, where
    /// the files it names relative to itself must be) with its TSDB in `dir/data`, and
    /// waits until it is ready.
    pub fn start(bin: &Path, dir: &Path, config: &str) -> Self {
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config)
            .unwrap_or_else(|e| panic!("writing {}: {e}", config_path.display()));
        let log_path = dir.join("prometheus.log");
        // A port found free may be taken before prometheus binds it: then it exits, and it
        // is started again on another.
        for attempt in 1..=3 {
            let addr = free_addr();
            let log = std::fs::File::create(&log_path)
                .unwrap_or_else(|e| panic!("creating {}: {e}", log_path.display()));
            let child = Command::new(bin)
                .arg(format!("--config.file={}", config_path.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
            let mut prometheus = Prometheus {
                child,
                log_path: log_path.clone(),
                addr,
            };
            let ready = wait_for("prometheus answering /-/ready", START_TIMEOUT, || {
                if let Ok(Some(status)) = prometheus.child.try_wait() {
                    return Ok(Err(status));
                }
                match http_call(addr, "GET", "/-/ready", None, API_TIMEOUT) {
                    Ok((200, _)) => Ok(Ok(())),
                    other => Err(format!("{other:?}")),
                }
            });
            match ready {
                Ok(()) => return prometheus,
                Err(status) if attempt < 3 => {
                    eprintln!(
                        "prometheus on {addr} exited ({status}); starting it on another port\n{}",
                        prometheus.log_tail()
                    );
                }
                Err(status) => panic!(
                    "prometheus on {addr} exited: {status}\n{}",
                    prometheus.log_tail()
                ),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// `GET /api/v1/<path_and_query>` as JSON; the HTTP status with it, since the API
    /// answers a bad query with a 400 and a JSON error.
    pub fn api(&self, path_and_query: &str) -> (u16, Value) {
        let path = format!("/api/v1/{path_and_query}");
        let (status, body) = http_call(self.addr, "GET", &path, None, API_TIMEOUT)
            .unwrap_or_else(|e| panic!("GET {path} from prometheus: {e}"));
        let json = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET {path}: answer {status} is not JSON ({e}): {body}"));
        (status, json)
    }

    /// An instant query at the current time: the API's whole answer.
    pub fn query(&self, promql: &str) -> (u16, Value) {
        self.api(&format!("query?query={}", uri_encode(promql, false)))
    }

    /// An instant query that must succeed: its `data.result` list.
    pub fn query_ok(&self, promql: &str) -> Vec<Value> {
        let (status, answer) = self.query(promql);
        assert!(
            status == 200 && answer["status"] == "success",
            "`{promql}` failed ({status}): {answer}"
        );
        answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| panic!("`{promql}`: no result list in {answer}"))
    }

    /// The last lines the server logged, for a failure message.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "--- last lines of {} ---\n{}",
            self.log_path.display(),
            lines[lines.len().saturating_sub(30)..].join("\n")
        )
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
    }
}

/// The value of one sample of an instant vector (`[time, "value"]`).
pub fn sample_value(sample: &Value) -> Option<f64> {
    sample["value"][1].as_str()?.parse().ok()
}
