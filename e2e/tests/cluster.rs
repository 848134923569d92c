//! The whole cluster: the Kubernetes quick start of `docs/kubernetes.md` (the README's
//! Kubernetes section is the same commands), run command by command on a real single-node
//! Kubernetes (`../shared/cluster`, `e2e/src/kube_cluster.rs`) with the image built from
//! this workspace's binaries; then the "Draining a pool" and "Bucket claims" sections run
//! the same way, a provider pod is killed and health must come back, and `helm uninstall`
//! must keep the CRDs, the quickstart resources and the data.
//!
//! Runs only under `SUBLET_REQUIRE_CLUSTER=1` (set by `.ci/run`; it needs root and changes
//! iptables and sysctls while the node runs), else skips with one line. The node is wiped at
//! the end, also when the test fails, after printing what the cluster looked like.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use sublet_e2e::clients;
use sublet_e2e::kube_cluster::{self, Background, KubeCluster, QUICK_START};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The image `helm install` runs by default: the chart's `image.repository` and appVersion.
fn chart_image() -> String {
    let chart: Value = serde_yaml::from_str(
        &std::fs::read_to_string(root().join("charts/sublet/Chart.yaml")).unwrap(),
    )
    .unwrap();
    let values: Value = serde_yaml::from_str(
        &std::fs::read_to_string(root().join("charts/sublet/values.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        values["image"]["tag"], "",
        "the chart's tag follows appVersion"
    );
    format!(
        "{}:{}",
        values["image"]["repository"].as_str().unwrap(),
        chart["appVersion"].as_str().unwrap()
    )
}

/// Polls `check` every 500 ms until it gives `Some`, or fails naming `what` and the last
/// thing seen after `timeout`.
fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        match check() {
            Ok(value) => return value,
            Err(last) => assert!(
                start.elapsed() < timeout,
                "{what}: not within {timeout:?}; last seen: {last}"
            ),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Runs the quick start's shell lines as a user would, in the workspace root: the exported
/// variables carry over, `sudo` is dropped (the test runs as root), and the S3 port is a
/// free one instead of 9000 (the only changes).
struct Shell<'a> {
    cluster: &'a KubeCluster,
    vars: Vec<(String, String)>,
    port: u16,
}

impl Shell<'_> {
    fn line(&self, line: &str) -> String {
        let line = line
            .replace("127.0.0.1:9000", &format!("127.0.0.1:{}", self.port))
            .replace(" 9000:9000", &format!(" {}:9000", self.port));
        line.strip_prefix("sudo ").unwrap_or(&line).to_owned()
    }

    fn command(&self, script: &str) -> Command {
        let mut cmd = self.cluster.command("bash");
        cmd.arg("-c").arg(format!("set -o pipefail\n{script}"));
        for (var, value) in &self.vars {
            cmd.env(var, value);
        }
        cmd
    }

    /// Runs `line`; its output (the caller judges the status).
    fn run(&self, line: &str, timeout: Duration) -> clients::Output {
        clients::run(&mut self.command(&self.line(line)), timeout)
    }

    /// Runs `line` and fails the test unless it exits 0; its stdout.
    fn ok(&self, line: &str, timeout: Duration) -> String {
        let out = self.run(line, timeout);
        assert!(
            out.status.success(),
            "`{line}` failed ({}):\n{}\n{}",
            out.status,
            out.stdout,
            out.stderr
        );
        out.stdout
    }

    /// `export NAME=VALUE`: evaluated by bash, kept for the next lines.
    fn export(&mut self, line: &str) {
        let name = line
            .strip_prefix("export ")
            .and_then(|rest| rest.split_once('='))
            .map(|(name, _)| name.to_owned())
            .unwrap();
        let value = self.ok(
            &format!("{line}\nprintf %s \"${name}\""),
            Duration::from_secs(60),
        );
        assert!(!value.is_empty(), "`{line}` gave nothing");
        self.vars.push((name, value));
    }
}

/// `GET /admin/v1/plans/{plan}` of gateway `s3`, through the API server's service proxy.
fn plan_health(cluster: &KubeCluster, plan: &str) -> Result<Value, String> {
    admin_get(cluster, &format!("plans/{plan}"))
}

/// `GET /admin/v1/{path}` of gateway `s3`, through the API server's service proxy.
fn admin_get(cluster: &KubeCluster, path: &str) -> Result<Value, String> {
    let text = cluster.kubectl(&[
        "get",
        "--raw",
        &format!("/api/v1/namespaces/sublet/services/http:s3-admin:9001/proxy/admin/v1/{path}"),
    ])?;
    serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))
}

/// `sudo install -d -o 10001 -g 10001 DIR`: run as written, once DIR is known to be empty
/// (a provider would reuse what is there); the shards and identity a provider writes there
/// go with the node.
fn make_host_dir(shell: &Shell<'_>, command: &str, dir: &str) {
    let dir = PathBuf::from(dir);
    assert!(
        std::fs::read_dir(&dir).map_or(true, |mut d| d.next().is_none()),
        "{} is not empty: the provider would reuse what is there; remove it first",
        dir.display()
    );
    shell.cluster.remove_on_drop(dir);
    shell.ok(command, Duration::from_secs(10));
}

/// Whether gateway `s3` has settled: its StatefulSet rolled out (every replica of the
/// current revision and ready) and its `Ready` condition true.
fn gateway_settled(cluster: &KubeCluster) -> Result<(), String> {
    let sts = cluster.get_json(&["-n", "sublet", "statefulset", "s3"])?;
    let st = &sts["status"];
    let rolled = st["observedGeneration"] == sts["metadata"]["generation"]
        && st["currentRevision"] == st["updateRevision"]
        && st["readyReplicas"] == sts["spec"]["replicas"]
        && st["updatedReplicas"] == sts["spec"]["replicas"];
    let sgw = cluster.get_json(&["-n", "sublet", "sgw", "s3"])?;
    let ready = sgw["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    if rolled && ready {
        Ok(())
    } else {
        Err(format!("statefulset {st}; gateway {}", sgw["status"]))
    }
}

/// The port-forward `line` started anew, as a user does after the gateway rolled: once the
/// gateway has settled.
fn forward_again(shell: &Shell<'_>, line: &str, forward: &mut Option<(String, Background)>) {
    drop(forward.take());
    wait_for("gateway s3 settled", Duration::from_secs(180), || {
        gateway_settled(shell.cluster)
    });
    let line = shell.line(line);
    *forward = Some((
        line.clone(),
        Background::forward(shell.cluster, &line, shell.port),
    ));
}

/// Runs an S3 client `command` through the port-forward. A gateway that rolled since (every
/// config change rolls it) ends the port-forward, or the pod answering may still run the
/// previous config: then the port-forward is started again, as a user would, and the
/// command retried, for at most 2 minutes. Its stdout.
fn s3_through_forward(
    shell: &Shell<'_>,
    command: &str,
    forward: &mut Option<(String, Background)>,
) -> String {
    let start = Instant::now();
    loop {
        let out = shell.run(command, Duration::from_secs(60));
        if out.status.success() {
            return out.stdout;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "`{command}` failed ({}):\n{}\n{}",
            out.status,
            out.stdout,
            out.stderr
        );
        eprintln!(
            "`{command}` failed, again after a new port-forward: {}",
            out.stderr.trim()
        );
        let line = forward
            .as_ref()
            .map(|(line, _)| line.clone())
            .expect("a port-forward was started");
        std::thread::sleep(Duration::from_secs(2));
        forward_again(shell, &line, forward);
    }
}

/// What gateway `s3` stores on pool `pool`: shards (0 when it answers 404).
fn shards_on_pool(cluster: &KubeCluster, pool: &str) -> Result<u64, String> {
    match admin_get(cluster, &format!("pools/{pool}")) {
        Ok(usage) => usage["shards"]
            .as_u64()
            .ok_or_else(|| format!("no shards in {usage}")),
        Err(e) if e.contains("NotFound") || e.contains("404") => Ok(0),
        Err(e) => Err(e),
    }
}

/// `docs/kubernetes.md`'s "Draining a pool", command by command: a second pool `attic` and
/// plan on the node, an object stored with the plan (and, checked here, its shard on the
/// pool), the plan let onto `local`, the pool marked `drain: true` and followed to
/// `Drained`, taken out of the plan and deleted (its finalizer lets it go, its provider pods
/// go), and the object read back byte for byte with nothing of `attic` left.
fn draining_a_pool(shell: &Shell<'_>, forward: &mut Option<(String, Background)>) {
    let started = Instant::now();
    let cluster = shell.cluster;
    let docs = std::fs::read_to_string(root().join("docs/kubernetes.md")).unwrap();
    let commands = kube_cluster::section_commands(&docs, "## Draining a pool");
    assert_eq!(commands.len(), 14, "{commands:?}");
    let readme_md = std::fs::read_to_string(root().join("README.md")).unwrap();
    for command in &commands {
        let step = Instant::now();
        if let Some(dir) = command.strip_prefix("sudo install -d -o 10001 -g 10001 ") {
            make_host_dir(shell, command, dir);
        } else if command.contains(" port-forward ") {
            forward_again(shell, command, forward);
        } else if command.starts_with("aws ") {
            let out = s3_through_forward(shell, command, forward);
            if command.ends_with(" -") {
                assert!(
                    out == readme_md,
                    "the object read back differs from README.md"
                );
            }
        } else {
            if command.contains(" patch pp attic ") {
                // The drain has something to move: the object's shard is on the pool.
                wait_for(
                    "a shard on pool attic",
                    Duration::from_secs(120),
                    || match shards_on_pool(cluster, "attic")? {
                        0 => Err("no shard on pool attic before the drain".into()),
                        n => Ok(n),
                    },
                );
            }
            let timeout = if command.contains(" wait ") || command.contains(" delete ") {
                Duration::from_secs(240)
            } else {
                Duration::from_secs(60)
            };
            let out = shell.ok(command, timeout);
            if command.ends_with(" get pp attic") {
                assert!(out.contains("Drained"), "{out}");
                let pool = cluster.get_json(&["-n", "sublet", "pp", "attic"]).unwrap();
                assert_eq!(
                    pool["status"]["drain"]["shardsLeft"], 0,
                    "{}",
                    pool["status"]
                );
                wait_for(
                    "gateway s3 says it stores nothing on attic",
                    Duration::from_secs(60),
                    || match shards_on_pool(cluster, "attic")? {
                        0 => Ok(()),
                        n => Err(format!("{n} shards")),
                    },
                );
            }
            if command.contains(" delete pp attic") {
                // Gone, finalizer released; owner references take its provider pods.
                let left = cluster.kubectl(&["-n", "sublet", "get", "pp", "-o", "name"]);
                assert!(!left.unwrap().contains("attic"), "pool attic still there");
                wait_for(
                    "pool attic's provider pods gone",
                    Duration::from_secs(90),
                    || {
                        let pods = cluster.kubectl(&[
                            "-n",
                            "sublet",
                            "get",
                            "pods",
                            "-l",
                            "sublet.dev/pool=attic",
                            "-o",
                            "name",
                        ])?;
                        if pods.trim().is_empty() {
                            Ok(())
                        } else {
                            Err(pods)
                        }
                    },
                );
            }
        }
        eprintln!("{:>5.1}s {command}", step.elapsed().as_secs_f64());
    }
    // Read from `local` now: the plan's object counts whole there.
    let health = wait_for("plan attic's health", Duration::from_secs(60), || {
        plan_health(cluster, "attic")
    });
    assert_eq!(health["objects"], 1, "{health}");
    assert_eq!(health["shards"]["lost"], 0, "{health}");
    eprintln!(
        "{:>5.1}s pool attic drained and deleted, its object read back",
        started.elapsed().as_secs_f64()
    );
}

fn provider_pods(cluster: &KubeCluster) -> Vec<Value> {
    cluster
        .get_json(&[
            "-n",
            "sublet",
            "pods",
            "-l",
            "app.kubernetes.io/name=sublet-provider",
        ])
        .map(|list| list["items"].as_array().cloned().unwrap_or_default())
        .unwrap_or_default()
}

fn pod_ready(pod: &Value) -> bool {
    pod["metadata"]["deletionTimestamp"].is_null()
        && pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// Kills the provider pod and waits until the gateway reports every shard healthy again,
/// the pool's member is the new pod (same node id: its identity lives in the hostPath), and
/// whatever rebuild Job was due has finished.
fn provider_loss_is_repaired(cluster: &KubeCluster) {
    let before = plan_health(cluster, "standard").unwrap();
    let objects = before["objects"].as_u64().unwrap();
    let healthy = before["shards"]["healthy"].as_u64().unwrap();
    assert!(objects >= 1 && healthy >= objects, "{before}");
    let pool = cluster.get_json(&["-n", "sublet", "pp", "local"]).unwrap();
    let member = pool["status"]["members"][0].clone();
    let node_id = member["nodeId"].as_str().unwrap().to_owned();
    let old: Vec<String> = provider_pods(cluster)
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(old.len(), cluster.nodes().len(), "one provider per node");

    let killed = Instant::now();
    cluster
        .kubectl(&[
            "-n",
            "sublet",
            "delete",
            "pod",
            &old[0],
            "--grace-period=0",
            "--force",
            "--wait=false",
        ])
        .unwrap();
    let new_ip = wait_for("a new provider pod Ready", Duration::from_secs(120), || {
        let pods = provider_pods(cluster);
        pods.iter()
            .find(|p| {
                !old.contains(&p["metadata"]["name"].as_str().unwrap().to_owned()) && pod_ready(p)
            })
            .map(|p| p["status"]["podIP"].as_str().unwrap_or_default().to_owned())
            .ok_or_else(|| format!("{} provider pods", pods.len()))
    });
    let after = wait_for(
        "plan standard healthy again after the provider came back",
        Duration::from_secs(180),
        || {
            let h = plan_health(cluster, "standard")?;
            let s = &h["shards"];
            let whole = h["objects"] == objects
                && s["healthy"] == healthy
                && s["degraded"] == 0
                && s["atRisk"] == 0
                && s["lost"] == 0
                && h["repair"]["due"] == 0;
            if whole { Ok(h) } else { Err(h.to_string()) }
        },
    );
    // The operator sees the new pod as the pool's member: same provider, new address.
    wait_for(
        "pool local lists the new provider pod",
        Duration::from_secs(120),
        || {
            let pool = cluster.get_json(&["-n", "sublet", "pp", "local"])?;
            let m = &pool["status"]["members"];
            let fresh = m.as_array().is_some_and(|m| {
                m.iter().any(|m| {
                    m["nodeId"] == node_id.as_str()
                        && m["ready"] == true
                        && m["address"].as_str().is_some_and(|a| a.contains(&new_ip))
                })
            });
            if fresh { Ok(()) } else { Err(m.to_string()) }
        },
    );
    // A rebuild Job runs only when objects are due (past the grace period with shards
    // gone); whatever was started must have finished well.
    let jobs = cluster
        .get_json(&["-n", "sublet", "jobs", "-l", "sublet.dev/plan=standard"])
        .unwrap();
    for job in jobs["items"].as_array().unwrap() {
        assert!(
            job["status"]["failed"].as_u64().unwrap_or(0) == 0,
            "rebuild Job failed: {job}"
        );
    }
    eprintln!(
        "provider pod killed; healthy again after {:?}: {after}",
        killed.elapsed()
    );
}

/// The image of the claim's client: Debian's rclone, nothing of sublet. Named in full, as the
/// chart's image is: the kubelet looks an unqualified name up as `docker.io/...`, which an
/// archive imported under the short name does not match (`ErrImageNeverPull`).
const RCLONE_IMAGE: &str = "ghcr.io/sublet-dev/e2e-rclone:1";

/// `docs/kubernetes.md`'s "Bucket claims" commands (apply the example claim, wait until it
/// is Bound, list claims), then a Job whose pod takes the claim's Secret as its environment
/// writes and reads the bucket with rclone, a stock S3 client; a write to another bucket is
/// refused. Deleting the claim (Retain) lets it go and takes the Secret with it.
fn bucket_claim_serves_a_stock_client(shell: &Shell<'_>) {
    let started = Instant::now();
    let cluster = shell.cluster;
    let rclone = ["/usr/bin/rclone", "/usr/local/bin/rclone"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("rclone (apt install rclone; .ci/install-clients does)");
    cluster.build_image(RCLONE_IMAGE, &[rclone]);
    let docs = std::fs::read_to_string(root().join("docs/kubernetes.md")).unwrap();
    let commands = kube_cluster::section_commands(&docs, "## Bucket claims");
    assert_eq!(commands.len(), 3, "{commands:?}");
    for command in &commands {
        let out = shell.ok(command, Duration::from_secs(90));
        if command.ends_with("get bucketclaims") {
            assert!(out.contains("Bound") && out.contains("app-data-"), "{out}");
        }
    }
    let claim = cluster
        .get_json(&["-n", "sublet", "bucketclaim", "app-data"])
        .unwrap();
    let bucket = claim["status"]["bucketName"].as_str().unwrap().to_owned();
    let uid = claim["metadata"]["uid"].as_str().unwrap();
    assert_eq!(bucket, format!("app-data-{}", &uid[..8]));

    // rclone with nothing but the Secret's variables: `:s3:` takes the key from the
    // environment (env_auth), the endpoint and region from the claim's names.
    let script = r#"set -e
echo "hello from a claim" > /tmp/hello.txt
R="rclone --config /dev/null --s3-provider Other --s3-env-auth --s3-endpoint $AWS_ENDPOINT_URL --s3-region $AWS_REGION --s3-no-check-bucket"
$R copyto /tmp/hello.txt ":s3:$BUCKET_NAME/hello.txt"
$R cat ":s3:$BUCKET_NAME/hello.txt"
echo "listed: $($R lsf ":s3:$BUCKET_NAME")"
if $R copyto /tmp/hello.txt ":s3:photos/from-a-claim.txt" 2>/tmp/err; then echo "WROTE ELSEWHERE"; else echo "refused elsewhere"; fi
"#;
    let job = serde_json::json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "claim-client", "namespace": "sublet"},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": 120,
            "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "rclone",
                    "image": RCLONE_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["/bin/sh", "-c", script],
                    "envFrom": [{"secretRef": {"name": "app-data"}}],
                }],
            }},
        },
    });
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), job.to_string()).unwrap();
    cluster
        .kubectl(&["apply", "-f", file.path().to_str().unwrap()])
        .unwrap();
    let log = wait_for("the claim's client Job", Duration::from_secs(150), || {
        let job = cluster.get_json(&["-n", "sublet", "job", "claim-client"])?;
        let logs = || {
            cluster
                .kubectl(&["-n", "sublet", "logs", "job/claim-client"])
                .unwrap_or_else(|e| e)
        };
        if job["status"]["failed"].as_i64().unwrap_or(0) > 0 {
            panic!("the client Job failed:\n{}", logs());
        }
        if job["status"]["succeeded"].as_i64().unwrap_or(0) > 0 {
            return Ok(logs());
        }
        Err(format!("{}", job["status"]))
    });
    assert!(log.contains("hello from a claim"), "{log}");
    assert!(log.contains("listed: hello.txt"), "{log}");
    assert!(log.contains("refused elsewhere"), "{log}");

    // Retain: the claim goes (its finalizer ran), and its Secret with it.
    cluster
        .kubectl(&[
            "-n",
            "sublet",
            "delete",
            "bucketclaim",
            "app-data",
            "--wait=false",
        ])
        .unwrap();
    wait_for(
        "the claim to go",
        Duration::from_secs(90),
        || match cluster.kubectl(&[
            "-n",
            "sublet",
            "get",
            "bucketclaim,secret",
            "app-data",
            "-o",
            "name",
        ]) {
            Err(e) if e.contains("NotFound") || e.contains("not found") => {
                let left = cluster
                    .kubectl(&["-n", "sublet", "get", "secret", "-o", "name"])
                    .unwrap_or_default();
                if left.contains("secret/app-data") {
                    Err(format!("Secret still there: {left}"))
                } else {
                    Ok(())
                }
            }
            other => Err(format!("{other:?}")),
        },
    );
    eprintln!(
        "{:>5.1}s bucket claim bound, used by rclone and released",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn quick_start_on_a_real_cluster_survives_a_provider_loss_and_helm_uninstall() {
    let Some(cluster) = KubeCluster::start() else {
        return;
    };
    let started = Instant::now();
    let commands = kube_cluster::quick_start_commands();
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    assert_eq!(
        kube_cluster::section_commands(&readme, QUICK_START),
        commands,
        "the README's `{QUICK_START}` runs exactly the commands of docs/kubernetes.md's"
    );
    assert!(commands.len() >= 12, "{commands:?}");
    let readme_md = std::fs::read_to_string(root().join("README.md")).unwrap();
    let nodes = cluster.nodes().len();
    let mut shell = Shell {
        cluster: &cluster,
        vars: Vec::new(),
        port: sublet_e2e::free_addr().port(),
    };
    let mut forward: Option<(String, Background)> = None;
    let mut image_built = false;
    let mut uninstalled = false;
    for command in &commands {
        let step = Instant::now();
        if command.starts_with("docker ") || command.starts_with("sudo k3s ctr ") {
            // The one step done differently: no docker here, the same image from the
            // binaries cargo built (stripped), by ../shared/cluster/image.sh.
            if !image_built {
                let bins = [
                    sublet_e2e::workspace_binary("sublet", "sublet"),
                    sublet_e2e::workspace_binary("sublet-provider", "sublet-provider"),
                    sublet_e2e::workspace_binary("sublet-operator", "sublet-operator"),
                ];
                let bytes = cluster.build_image(&chart_image(), &bins);
                eprintln!("image {} built: {} MiB", chart_image(), bytes >> 20);
                image_built = true;
            }
            continue;
        }
        if let Some(dir) = command.strip_prefix("sudo install -d -o 10001 -g 10001 ") {
            make_host_dir(&shell, command, dir);
        } else if command.contains(" port-forward ") {
            let line = shell.line(command);
            forward = Some((
                line.clone(),
                Background::forward(shell.cluster, &line, shell.port),
            ));
        } else if command.starts_with("export ") {
            shell.export(command);
        } else if command.starts_with("helm uninstall ") {
            // While the operator runs: a second pool is drained and deleted.
            draining_a_pool(&shell, &mut forward);
            // A workload claims a bucket and uses it.
            bucket_claim_serves_a_stock_client(&shell);
            // Before the data is left alone: a provider is lost, health comes back.
            provider_loss_is_repaired(shell.cluster);
            shell.ok(command, Duration::from_secs(120));
            uninstalled = true;
        } else if command.contains(" --storage-class photos") && nodes < 3 {
            // The photos plan spreads 2+1 over nodes: on fewer than three the gateway
            // refuses the PUT, naming the rule, and stores nothing. One attempt: the CLI
            // retries a 503 four times, and once (CI, 2026-12-06) its last retry through
            // `kubectl port-forward` ended with a bare "503 Service Unavailable" although the
            // gateway had answered every attempt with the error document; the test judges
            // the gateway's answer, not the CLI's retries.
            let once = format!("AWS_MAX_ATTEMPTS=1 {command}");
            let out = shell.run(&once, Duration::from_secs(120));
            assert!(!out.status.success(), "{command} stored on {nodes} node(s)");
            assert!(
                out.stderr.contains("ServiceUnavailable")
                    && out.stderr.contains("plan photos needs 3 providers"),
                "{}",
                out.stderr
            );
        } else {
            let timeout = if command.contains(" wait ") {
                Duration::from_secs(240)
            } else {
                Duration::from_secs(120)
            };
            let out = shell.ok(command, timeout);
            if command.ends_with(" -") && command.contains(" s3 cp s3://") {
                assert!(
                    out == readme_md,
                    "the object read back differs from README.md"
                );
            }
            if command.ends_with(" get pp,sp,sgw") {
                for name in ["local", "standard", "photos", "s3"] {
                    assert!(out.contains(name), "{name} missing:\n{out}");
                }
            }
        }
        eprintln!("{:>5.1}s {command}", step.elapsed().as_secs_f64());
    }
    assert!(
        image_built && uninstalled,
        "the quick start builds the image and uninstalls"
    );
    // The gateway rolled when the provider came back (a new pod address is a new config):
    // forward the S3 port anew, as a user would.
    let (line, old) = forward
        .take()
        .expect("the quick start forwards the S3 port");
    drop(old);
    let _forward = Background::forward(&cluster, &line, shell.port);

    // Item 7 of issue 28: the aws CLI's `s3 cp` refuses a sublet plan as storage class
    // before sending anything; `s3api put-object --storage-class` (above) is the way.
    let refused = shell.run(
        "aws --endpoint-url http://127.0.0.1:9000 s3 cp --storage-class photos README.md s3://photos/refused.md",
        Duration::from_secs(60),
    );
    assert!(
        !refused.status.success() && refused.stderr.contains("Invalid choice"),
        "{}",
        refused.stderr
    );
    // The class reaches the gateway through s3api and names the plan of the object.
    shell.ok(
        "aws --endpoint-url http://127.0.0.1:9000 s3api put-object --bucket photos --key std.md --body README.md --storage-class standard",
        Duration::from_secs(60),
    );

    // After `helm uninstall`: the operator is gone; CRDs, quickstart resources and the data
    // stay, and the gateway still serves them.
    let crds = cluster.kubectl(&["get", "crd", "-o", "name"]).unwrap();
    for kind in [
        "providerpools",
        "storageplans",
        "storageschedules",
        "storagegateways",
    ] {
        assert!(crds.contains(&format!("{kind}.sublet.dev")), "{crds}");
    }
    let operator = cluster
        .kubectl(&["-n", "sublet", "get", "deployments", "-o", "name"])
        .unwrap();
    assert!(!operator.contains("sublet-operator"), "{operator}");
    let head = shell.ok(
        "aws --endpoint-url http://127.0.0.1:9000 s3api head-object --bucket photos --key std.md",
        Duration::from_secs(60),
    );
    assert!(head.contains("\"StorageClass\": \"standard\""), "{head}");
    let back = shell.ok(
        "aws --endpoint-url http://127.0.0.1:9000 s3 cp s3://photos/README.md -",
        Duration::from_secs(60),
    );
    assert!(
        back == readme_md,
        "README.md read back after helm uninstall differs"
    );
    eprintln!("whole-cluster test: {:?}", started.elapsed());
}
