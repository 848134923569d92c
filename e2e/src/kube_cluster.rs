//! A real single-node Kubernetes for the whole-cluster test (`e2e/tests/cluster.rs`):
//! `../shared/cluster/cluster.sh` starts etcd, the control plane, containerd, a kubelet,
//! kube-proxy, cluster DNS and a default StorageClass on this machine, as root (see its
//! README); `image.sh` there builds an image from this workspace's binaries and imports it.
//! Not to be confused with [`crate::cluster`], gateways over provider processes on loopback.
//!
//! The test runs only under `SUBLET_REQUIRE_CLUSTER=1` ([`crate::skip::CLUSTER`], set by
//! `.ci/run`): it changes iptables and sysctls while the node runs, so a plain `cargo test`
//! never starts it by surprise. Dropping the [`KubeCluster`] wipes the node (also when the
//! test fails, after printing what the cluster looked like and its components' logs).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{apiserver, clients};

/// How long one kubectl or helm call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// A running single-node cluster, wiped when dropped.
pub struct KubeCluster {
    scripts: PathBuf,
    /// `$CLUSTER_DIR`: the node's state, and its components' logs under `logs/`.
    pub dir: PathBuf,
    /// The admin kubeconfig `cluster.sh start` printed.
    pub kubeconfig: PathBuf,
    /// The kubectl and helm the test drives it with (`.ci/install-helm`'s).
    pub kubectl: PathBuf,
    pub helm: PathBuf,
    host_dirs: std::sync::Mutex<Vec<PathBuf>>,
}

/// How a bounded command ended; `Err` when it could not start or ran out of time.
pub struct Ran {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` for at most `timeout`, never panicking (Drop and diagnostics use it).
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Result<Ran, String> {
    let shown = format!("{cmd:?}");
    let out = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
    let err = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
    cmd.stdout(out.reopen().map_err(|e| e.to_string())?)
        .stderr(err.reopen().map_err(|e| e.to_string())?);
    let mut child = cmd.spawn().map_err(|e| format!("{shown}: {e}"))?;
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{shown} did not finish within {timeout:?}"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(format!("{shown}: {e}")),
        }
    };
    let read = |f: &tempfile::NamedTempFile| {
        String::from_utf8_lossy(&std::fs::read(f.path()).unwrap_or_default()).into_owned()
    };
    Ok(Ran {
        success: status.success(),
        stdout: read(&out),
        stderr: read(&err),
    })
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// `$CLUSTER_DIR` as `cluster.sh` computes it.
fn cluster_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CLUSTER_DIR") {
        return dir.into();
    }
    std::env::var_os("TMPDIR")
        .map_or_else(|| PathBuf::from("/tmp"), PathBuf::from)
        .join("k8s-cluster")
}

/// Bytes available to unprivileged users and the size of the filesystem holding `dir`
/// (`df`, as the kubelet's statfs sees it); `None` when `df` cannot tell.
pub fn disk_space(dir: &Path) -> Option<(u64, u64)> {
    let out = Command::new("df")
        .args(["--output=avail,size", "-B1"])
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut numbers = text
        .lines()
        .nth(1)?
        .split_whitespace()
        .map(|n| n.parse::<u64>().ok());
    Some((numbers.next()??, numbers.next()??))
}

/// Fails the test, naming the cause, when the node's disk is so full that the kubelet
/// taints the node with `DiskPressure` (below 2% free, `cluster.sh`'s eviction
/// threshold): no pod would be scheduled and every wait would time out unexplained.
/// Asks for 2% of the disk plus 3 GiB: the threshold, and room for the image, the pods'
/// volumes and the logs.
fn check_disk(dir: &Path) {
    // The directory is made by `cluster.sh start`: ask of the nearest one that exists.
    let dir = dir.ancestors().find(|d| d.is_dir()).unwrap_or(dir);
    let Some((avail, size)) = disk_space(dir) else {
        return;
    };
    let need = size / 50 + (3 << 30);
    assert!(
        avail >= need,
        "the disk holding {} has {} GiB free of {} GiB ({:.1}%): the kubelet taints the \
         node with DiskPressure below 2% and schedules no pod; free at least {} GiB \
         (old build directories, `cargo clean` in other checkouts) and rerun",
        dir.display(),
        avail >> 30,
        size >> 30,
        avail as f64 * 100.0 / size.max(1) as f64,
        (need - avail).div_ceil(1 << 30),
    );
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl KubeCluster {
    /// Starts a fresh node (wiping what an earlier run left) and returns once it is Ready;
    /// `None` after the SKIP line unless `SUBLET_REQUIRE_CLUSTER=1`. Under the variable
    /// anything missing fails the test, naming what to install.
    pub fn start() -> Option<KubeCluster> {
        if !crate::skip::CLUSTER.opted_in(
            "starts a real Kubernetes node as root with ../shared/cluster (iptables, sysctls, containerd)",
        ) {
            return None;
        }
        let scripts = workspace_root().join("../shared/cluster");
        assert!(
            scripts.join("cluster.sh").is_file() && scripts.join("image.sh").is_file(),
            "{} has no cluster.sh and image.sh (the shared single-node cluster)",
            scripts.display()
        );
        assert!(
            is_root(),
            "the single-node cluster needs root (containerd, kubelet, iptables)"
        );
        let kubectl = apiserver::kubectl(&[]).expect("kubectl not found: bash .ci/install-helm");
        let helm = apiserver::helm().expect("helm not found: bash .ci/install-helm");
        check_disk(&cluster_dir());
        let mut cluster = KubeCluster {
            scripts,
            dir: cluster_dir(),
            kubeconfig: PathBuf::new(),
            kubectl,
            helm,
            host_dirs: std::sync::Mutex::default(),
        };
        // A clean node: state an earlier run left (a release, volumes, images) goes first.
        if cluster.dir.exists() {
            let wiped = cluster.script(&["wipe"], Duration::from_secs(180));
            assert!(wiped.success, "cluster.sh wipe failed:\n{}", wiped.stderr);
        }
        let started = cluster.script(&["start"], Duration::from_secs(300));
        let line = started
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("KUBECONFIG="))
            .map(str::to_owned);
        let Some(kubeconfig) = line.filter(|_| started.success) else {
            let logs = cluster.component_logs();
            panic!(
                "cluster.sh start failed:\n{}\n{}\n{logs}",
                started.stdout, started.stderr
            );
        };
        cluster.kubeconfig = kubeconfig.into();
        Some(cluster)
    }

    /// `cluster.sh ARGS` with `$CLUSTER_DIR` set; fails the test only when it cannot run.
    fn script(&self, args: &[&str], timeout: Duration) -> Ran {
        let mut cmd = Command::new(self.scripts.join("cluster.sh"));
        cmd.args(args)
            .env("CLUSTER_DIR", &self.dir)
            .stdin(Stdio::null());
        run_bounded(&mut cmd, timeout).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `PATH` with helm and kubectl first, then the S3 clients (see [`clients::search_path`]).
    pub fn path(&self) -> std::ffi::OsString {
        let mut dirs = vec![
            self.kubectl
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
            self.helm
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
        ];
        dirs.extend(std::env::split_paths(&clients::search_path()));
        std::env::join_paths(dirs).expect("PATH entries without separators")
    }

    /// `program` with this cluster's kubeconfig and [`Self::path`], no AWS settings of the
    /// caller, in the workspace root (where the quick start's paths are relative to).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = clients::command(program);
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .env("PATH", self.path())
            .current_dir(workspace_root());
        cmd
    }

    /// `kubectl ARGS`: stdout, or the command with stderr and stdout as the error.
    pub fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        let mut cmd = Command::new(&self.kubectl);
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .args(args)
            .stdin(Stdio::null());
        let ran = run_bounded(&mut cmd, CALL_TIMEOUT)?;
        if ran.success {
            Ok(ran.stdout)
        } else {
            Err(format!(
                "kubectl {}: {}{}",
                args.join(" "),
                ran.stderr,
                ran.stdout
            ))
        }
    }

    /// `kubectl get ARGS -o json`, parsed.
    pub fn get_json(&self, args: &[&str]) -> Result<serde_json::Value, String> {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend(["-o", "json"]);
        let text = self.kubectl(&all)?;
        serde_json::from_str(&text).map_err(|e| format!("kubectl get {args:?}: {e}: {text}"))
    }

    /// Builds the image `reference` from `binaries` (copied and stripped first, so the
    /// dev-profile binaries make a small image) with `image.sh`, as user `sublet` (uid
    /// 10001, home `/var/lib/sublet`, like the Dockerfile's), and imports it into the node.
    /// Returns the archive's size in bytes.
    pub fn build_image(&self, reference: &str, binaries: &[PathBuf]) -> u64 {
        let dir = tempfile::Builder::new()
            .prefix("sublet-image-")
            .tempdir()
            .expect("temporary directory");
        let mut copies = Vec::new();
        for bin in binaries {
            let name = bin.file_name().expect("binary name");
            let copy = dir.path().join(name);
            std::fs::copy(bin, &copy).unwrap_or_else(|e| panic!("copy {}: {e}", bin.display()));
            let stripped = run_bounded(
                Command::new("strip").arg(&copy).stdin(Stdio::null()),
                Duration::from_secs(120),
            )
            .unwrap_or_else(|e| panic!("strip (binutils): {e}"));
            assert!(
                stripped.success,
                "strip {}: {}",
                copy.display(),
                stripped.stderr
            );
            copies.push(copy);
        }
        let archive = dir.path().join("sublet.tar");
        let mut cmd = Command::new(self.scripts.join("image.sh"));
        cmd.arg(reference)
            .arg(&archive)
            .args(&copies)
            .env("CLUSTER_DIR", &self.dir)
            .env("IMAGE_USER", "sublet")
            .env("IMAGE_HOME", "/var/lib/sublet")
            .stdin(Stdio::null());
        let built =
            run_bounded(&mut cmd, Duration::from_secs(300)).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            built.success,
            "image.sh {reference} failed:\n{}\n{}",
            built.stdout, built.stderr
        );
        std::fs::metadata(&archive).map_or(0, |m| m.len())
    }

    /// Removes `dir` on the host when the cluster is wiped (a hostPath the test made).
    pub fn remove_on_drop(&self, dir: PathBuf) {
        self.host_dirs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(dir);
    }

    /// The nodes' names.
    pub fn nodes(&self) -> Vec<String> {
        self.kubectl(&["get", "nodes", "-o", "name"])
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The last 40 lines of every component's log (`$CLUSTER_DIR/logs`).
    fn component_logs(&self) -> String {
        let mut text = String::new();
        let mut logs: Vec<PathBuf> = std::fs::read_dir(self.dir.join("logs"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        logs.sort();
        for log in logs {
            let body = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = body.lines().collect();
            text.push_str(&format!(
                "== {}\n{}\n",
                log.display(),
                lines[lines.len().saturating_sub(40)..].join("\n")
            ));
        }
        text
    }

    /// The few lines that usually name why a wait timed out: the node's conditions other
    /// than `Ready` that hold and its taints (a `DiskPressure` node schedules nothing), each
    /// pod that is not running with the reason its scheduler or kubelet gave, and the disk.
    pub fn summary(&self) -> String {
        let mut lines = Vec::new();
        match self.get_json(&["nodes"]) {
            Ok(nodes) => {
                for node in nodes["items"].as_array().into_iter().flatten() {
                    let name = node["metadata"]["name"].as_str().unwrap_or("?");
                    for c in node["status"]["conditions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                    {
                        let kind = c["type"].as_str().unwrap_or("?");
                        let holds = c["status"].as_str() == Some("True");
                        if holds != (kind == "Ready") {
                            lines.push(format!(
                                "node {name}: {kind}={} ({})",
                                c["status"].as_str().unwrap_or("?"),
                                c["message"].as_str().unwrap_or("")
                            ));
                        }
                    }
                    for t in node["spec"]["taints"].as_array().into_iter().flatten() {
                        lines.push(format!(
                            "node {name}: taint {}:{}",
                            t["key"].as_str().unwrap_or("?"),
                            t["effect"].as_str().unwrap_or("?")
                        ));
                    }
                }
            }
            Err(e) => lines.push(e),
        }
        if let Ok(pods) = self.get_json(&["pods", "-A"]) {
            for pod in pods["items"].as_array().into_iter().flatten() {
                let phase = pod["status"]["phase"].as_str().unwrap_or("?");
                if phase == "Running" || phase == "Succeeded" {
                    continue;
                }
                let mut why: Vec<String> = pod["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|c| c["status"].as_str() != Some("True"))
                    .filter_map(|c| c["message"].as_str().map(str::to_owned))
                    .collect();
                for s in pod["status"]["containerStatuses"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    if let Some(waiting) = s["state"]["waiting"].as_object() {
                        why.push(format!(
                            "{}: {} {}",
                            s["name"].as_str().unwrap_or("?"),
                            waiting.get("reason").and_then(|r| r.as_str()).unwrap_or(""),
                            waiting
                                .get("message")
                                .and_then(|r| r.as_str())
                                .unwrap_or("")
                        ));
                    }
                }
                lines.push(format!(
                    "pod {}/{}: {phase}: {}",
                    pod["metadata"]["namespace"].as_str().unwrap_or("?"),
                    pod["metadata"]["name"].as_str().unwrap_or("?"),
                    why.join("; ")
                ));
            }
        }
        if let Some((avail, size)) = disk_space(&self.dir) {
            lines.push(format!(
                "disk of {}: {} GiB free of {} GiB",
                self.dir.display(),
                avail >> 30,
                size >> 30
            ));
        }
        lines.join("\n")
    }

    /// What the cluster looks like: objects, descriptions, events, pod logs and component
    /// logs; printed, between two copies of [`Self::summary`], when the test fails.
    pub fn diagnostics(&self) -> String {
        let mut text = String::new();
        let mut show = |args: &[&str]| {
            let out = match self.kubectl(args) {
                Ok(out) => out,
                Err(err) => err,
            };
            text.push_str(&format!("== kubectl {}\n{out}\n", args.join(" ")));
        };
        show(&[
            "get",
            "nodes,pods,svc,pvc,pv,jobs,statefulsets,daemonsets,deployments",
            "-A",
            "-o",
            "wide",
        ]);
        show(&["get", "pp,sp,ss,sgw", "-A", "-o", "yaml"]);
        show(&["describe", "pods", "-A"]);
        show(&["get", "events", "-A", "--sort-by=.lastTimestamp"]);
        let pods = self
            .kubectl(&[
                "get",
                "pods",
                "-A",
                "-o",
                "jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name}{\"\\n\"}{end}",
            ])
            .unwrap_or_default();
        for pod in pods.lines() {
            if let Some((ns, name)) = pod.split_once('/')
                && !ns.starts_with("kube-")
            {
                show(&[
                    "logs",
                    "-n",
                    ns,
                    name,
                    "--all-containers",
                    "--prefix",
                    "--tail=60",
                ]);
            }
        }
        text.push_str(&self.component_logs());
        text
    }
}

impl Drop for KubeCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // First and again at the end, where a truncated log still shows it.
            let short = self.summary();
            eprintln!(
                "==== the cluster when the test failed ====\n== in short\n{short}\n{}",
                self.diagnostics()
            );
            eprintln!("==== in short ====\n{short}");
        }
        let mut cmd = Command::new(self.scripts.join("cluster.sh"));
        cmd.arg("wipe")
            .env("CLUSTER_DIR", &self.dir)
            .stdin(Stdio::null());
        match run_bounded(&mut cmd, Duration::from_secs(180)) {
            Ok(ran) if ran.success => {}
            Ok(ran) => eprintln!("cluster.sh wipe failed:\n{}{}", ran.stdout, ran.stderr),
            Err(e) => eprintln!("{e}"),
        }
        let dirs = std::mem::take(&mut *self.host_dirs.lock().unwrap_or_else(|e| e.into_inner()));
        for dir in &dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A background command, e.g. `kubectl port-forward`, killed (by process id) when dropped.
pub struct Background {
    child: Child,
    log: tempfile::NamedTempFile,
}

impl Background {
    /// Runs `line` with `bash -c 'exec LINE'` in the cluster's environment and waits until
    /// `127.0.0.1:port` accepts connections (at most 30 s).
    pub fn forward(cluster: &KubeCluster, line: &str, port: u16) -> Background {
        let log = tempfile::NamedTempFile::new().expect("log file");
        let mut cmd = cluster.command("bash");
        cmd.arg("-c")
            .arg(format!("exec {line}"))
            .stdout(log.reopen().expect("log file"))
            .stderr(log.reopen().expect("log file"));
        let child = cmd.spawn().unwrap_or_else(|e| panic!("{line}: {e}"));
        let mut bg = Background { child, log };
        let start = Instant::now();
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
            let exited = bg.child.try_wait().ok().flatten();
            assert!(
                exited.is_none() && start.elapsed() < Duration::from_secs(30),
                "`{line}` did not listen on {addr} ({exited:?}): {}",
                bg.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        bg
    }

    /// What it printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shell commands of a Markdown section (`heading` is its `## ` line): every line of
/// its ```` ```sh ```` blocks, backslash continuations joined, spaces collapsed.
pub fn section_commands(markdown: &str, heading: &str) -> Vec<String> {
    let Some(section) = markdown.split(&format!("\n{heading}\n")).nth(1) else {
        return Vec::new();
    };
    let section = section.split("\n## ").next().unwrap_or_default();
    let mut commands = Vec::new();
    let mut in_block = false;
    let mut pending = String::new();
    for line in section.lines() {
        if line.starts_with("```") {
            in_block = line == "```sh";
            continue;
        }
        if !in_block || line.trim().is_empty() {
            continue;
        }
        match line.trim_end().strip_suffix('\\') {
            Some(head) => pending.push_str(head),
            None => {
                pending.push_str(line.trim_end());
                commands.push(
                    std::mem::take(&mut pending)
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" "),
                );
            }
        }
    }
    commands
}

/// The Kubernetes quick start of `docs/kubernetes.md`, the commands
/// `e2e/tests/cluster.rs` runs in order (and `e2e/tests/chart.rs` checks against the chart).
pub fn quick_start_commands() -> Vec<String> {
    let text = std::fs::read_to_string(workspace_root().join("docs/kubernetes.md"))
        .expect("docs/kubernetes.md");
    section_commands(&text, QUICK_START)
}

/// The heading of the quick start in `docs/kubernetes.md` and of the README's section.
pub const QUICK_START: &str = "## Quick start on Kubernetes";

#[cfg(test)]
mod tests {
    #[test]
    fn section_commands_joins_continuations_and_skips_other_blocks() {
        let md = "# t\n\n## Quick start on Kubernetes\n\ntext\n\n```sh\nhelm install a \\\n  b   c\nkubectl get x\n```\n\n```text\nnot a command\n```\n\n## Next\n\n```sh\nlater\n```\n";
        assert_eq!(
            super::section_commands(md, super::QUICK_START),
            ["helm install a b c", "kubectl get x"]
        );
        assert!(super::section_commands(md, "## Missing").is_empty());
    }

    #[test]
    fn disk_space_reads_what_df_says_of_a_directory() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (avail, size) = super::disk_space(dir.path()).expect("df answers for a directory");
        assert!(size > 0 && avail <= size, "{avail} of {size}");
        assert_eq!(super::disk_space(&dir.path().join("missing")), None);
    }
}
