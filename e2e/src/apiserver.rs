//! A real Kubernetes API server for tests, the arrangement controller-runtime calls envtest:
//! etcd and kube-apiserver v1.28 on loopback, no kubelet, no controller-manager, no
//! scheduler (see `../shared/envtest/README.md`). What it checks as a cluster would: CRD
//! installation and OpenAPI/CEL validation, server-side apply and field managers, RBAC,
//! `OwnerReferencesPermissionEnforcement`, PodSecurity admission, Leases and Events.
//!
//! The binaries come from `$KUBEBUILDER_ASSETS` (a folder holding `kube-apiserver`, `etcd`
//! and `kubectl`), else `kube-apiserver` is unpacked from `../shared/envtest/` and `etcd`
//! and `kubectl` are looked up on `PATH` (and kubectl in `.ci/install-helm`'s folder).
//! Without them [`ApiServer::start`] prints one SKIP line and returns `None`, or fails the
//! test under `SUBLET_REQUIRE_APISERVER=1`.
//!
//! Every request the API server answers for the users of [`User`] is written to an audit
//! log ([`ApiServer::audit`]), so a test can assert that none was refused.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::skip::Need;

/// The variable that makes a missing API server fail `e2e/tests/apiserver.rs`.
pub const APISERVER: Need = Need {
    var: "SUBLET_REQUIRE_APISERVER",
    install: "apt-get install etcd-server; bash .ci/install-helm",
};

/// The namespace the chart is installed in and the operator's service account lives in.
pub const OPERATOR_NAMESPACE: &str = "sublet";
/// The user the chart's ClusterRoleBinding and leader Role bind: its service account.
pub const OPERATOR_USER: &str = "system:serviceaccount:sublet:sublet-operator";

/// Who a kubeconfig authenticates as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum User {
    /// `system:masters`: anything goes.
    Admin,
    /// The operator's service account, with exactly the rights the chart's bindings give.
    Operator,
}

impl User {
    fn token(self) -> &'static str {
        match self {
            User::Admin => "admin-token-for-tests-only",
            User::Operator => "operator-token-for-tests-only",
        }
    }
}

/// A running etcd and kube-apiserver, stopped (by process id) when dropped.
pub struct ApiServer {
    dir: tempfile::TempDir,
    etcd: Child,
    apiserver: Child,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The kubectl the test drives it with.
    pub kubectl: PathBuf,
}

/// Where `.ci/install-helm` puts helm and kubectl.
pub fn tools_dir() -> PathBuf {
    match std::env::var_os("SUBLET_HELM_DIR") {
        Some(dir) => dir.into(),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/sublet/kubectl-layer"),
    }
}

fn works(bin: &Path, args: &[&str]) -> bool {
    Command::new(bin)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The first of `extra`, then `name` on `PATH`, that runs `bin ARGS` successfully.
fn find(name: &str, extra: &[PathBuf], args: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    extra
        .iter()
        .cloned()
        .chain(std::env::split_paths(&path).map(|d| d.join(name)))
        .find(|p| p.is_file() && works(p, args))
}

/// helm from `$SUBLET_HELM`, `.ci/install-helm`'s folder or `PATH`.
pub fn helm() -> Option<PathBuf> {
    let mut extra: Vec<PathBuf> = std::env::var_os("SUBLET_HELM")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    extra.push(tools_dir().join("bin/helm"));
    find("helm", &extra, &["version", "--short"])
}

/// kubectl: the first of `extra`, then `.ci/install-helm`'s folder, then `PATH`.
pub fn kubectl(extra: &[PathBuf]) -> Option<PathBuf> {
    let mut candidates = extra.to_vec();
    candidates.push(tools_dir().join("bin/kubectl"));
    find("kubectl", &candidates, &["version", "--client"])
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// kube-apiserver: `$KUBEBUILDER_ASSETS/kube-apiserver`, or unpacked once (per target
/// directory) from `../shared/envtest/kube-apiserver.xz`.
fn kube_apiserver(assets: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(dir) = assets {
        let bin = dir.join("kube-apiserver");
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(format!("{} not found", bin.display()))
        };
    }
    let packed = workspace_root().join("../shared/envtest/kube-apiserver.xz");
    if !packed.is_file() {
        return Err(format!(
            "kube-apiserver not found (no KUBEBUILDER_ASSETS, no {})",
            packed.display()
        ));
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let target = exe
        .ancestors()
        .nth(3)
        .map_or_else(std::env::temp_dir, Path::to_path_buf)
        .join("envtest");
    let bin = target.join("kube-apiserver");
    // Tests of one process unpack it once, one after the other.
    static UNPACK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _unpacking = UNPACK.lock().unwrap_or_else(|e| e.into_inner());
    let fresh = |bin: &Path| {
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        matches!((modified(bin), modified(&packed)), (Some(b), Some(p)) if b >= p)
    };
    if !fresh(&bin) {
        std::fs::create_dir_all(&target).map_err(|e| e.to_string())?;
        // Unpacked beside, then renamed: tests running side by side never see half a file.
        let partial = target.join(format!("kube-apiserver.{}", std::process::id()));
        let file = std::fs::File::create(&partial)
            .map_err(|e| format!("cannot unpack kube-apiserver: {}: {e}", partial.display()))?;
        let status = Command::new("xz")
            .arg("-dc")
            .arg(&packed)
            .stdout(file)
            .status()
            .map_err(|e| format!("xz: {e} (install xz-utils)"))?;
        if !status.success() {
            return Err(format!("xz -dc {} failed", packed.display()));
        }
        std::fs::set_permissions(
            &partial,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .map_err(|e| format!("cannot unpack kube-apiserver: {}: {e}", partial.display()))?;
        std::fs::rename(&partial, &bin)
            .map_err(|e| format!("cannot unpack kube-apiserver: {}: {e}", bin.display()))?;
    }
    Ok(bin)
}

struct Binaries {
    apiserver: PathBuf,
    etcd: PathBuf,
    kubectl: PathBuf,
}

fn binaries() -> Result<Binaries, String> {
    let assets = std::env::var_os("KUBEBUILDER_ASSETS").map(PathBuf::from);
    let apiserver = kube_apiserver(assets.as_deref())?;
    let in_assets = |name: &str| assets.iter().map(|d| d.join(name)).collect::<Vec<_>>();
    let etcd = find("etcd", &in_assets("etcd"), &["--version"])
        .ok_or("etcd not found (apt-get install etcd-server)")?;
    let kubectl =
        kubectl(&in_assets("kubectl")).ok_or("kubectl not found (bash .ci/install-helm)")?;
    Ok(Binaries {
        apiserver,
        etcd,
        kubectl,
    })
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// The CA, the serving certificate for 127.0.0.1 and the service-account key pair.
fn write_certificates(dir: &Path) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "sublet envtest CA");
    let ca =
        rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().expect("CA key"))
            .expect("CA certificate");
    let key = rcgen::KeyPair::generate().expect("server key");
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("server params")
        .signed_by(&key, &ca)
        .expect("server certificate");
    let sa = rcgen::KeyPair::generate().expect("service account key");
    write(&dir.join("ca.crt"), &ca.pem());
    write(&dir.join("apiserver.crt"), &cert.pem());
    write(&dir.join("apiserver.key"), &key.serialize_pem());
    write(&dir.join("sa.key"), &sa.serialize_pem());
    write(&dir.join("sa.pub"), &sa.public_key_pem());
}

fn spawn_logged(mut cmd: Command, log: &Path) -> Child {
    let out = std::fs::File::create(log).expect("log file");
    let err = out.try_clone().expect("log file");
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"))
}

fn free_port() -> u16 {
    crate::free_addr().port()
}

impl ApiServer {
    /// Starts etcd and the API server in a fresh temporary directory and waits until
    /// `/readyz` answers; `None` (after the SKIP line) when the binaries are missing.
    pub fn start() -> Option<ApiServer> {
        let bins = match binaries() {
            Ok(bins) => bins,
            Err(what) => {
                APISERVER.skip(&what);
                return None;
            }
        };
        let dir = tempfile::Builder::new()
            .prefix("sublet-envtest-")
            .tempdir()
            .expect("temporary directory");
        let d = dir.path();
        write_certificates(d);
        write(
            &d.join("tokens.csv"),
            &format!(
                "{},admin,admin,\"system:masters\"\n{},{OPERATOR_USER},operator-uid,\"system:serviceaccounts,system:serviceaccounts:{OPERATOR_NAMESPACE}\"\n",
                User::Admin.token(),
                User::Operator.token()
            ),
        );
        // Every request of the operator, with its answer's code, one JSON line each.
        write(
            &d.join("audit-policy.yaml"),
            &format!(
                "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n  - level: Metadata\n    users: [\"{OPERATOR_USER}\"]\n  - level: None\n"
            ),
        );
        let (client, peer, api) = (free_port(), free_port(), free_port());
        let mut etcd = Command::new(&bins.etcd);
        etcd.args(["--name", "default", "--data-dir"])
            .arg(d.join("etcd"))
            .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
            .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
            ))
            .arg(format!("--initial-cluster=default=http://127.0.0.1:{peer}"))
            // A test's data never needs to survive a crash; spare the shared disk.
            .arg("--unsafe-no-fsync");
        let etcd = spawn_logged(etcd, &d.join("etcd.log"));
        let mut apiserver = Command::new(&bins.apiserver);
        apiserver
            .current_dir(d)
            .arg(format!("--etcd-servers=http://127.0.0.1:{client}"))
            .args([
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                &format!("--secure-port={api}"),
                "--tls-cert-file=apiserver.crt",
                "--tls-private-key-file=apiserver.key",
                "--client-ca-file=ca.crt",
                "--token-auth-file=tokens.csv",
                "--service-account-key-file=sa.pub",
                "--service-account-signing-key-file=sa.key",
                "--service-account-issuer=https://kubernetes.default.svc",
                "--authorization-mode=RBAC",
                "--enable-admission-plugins=OwnerReferencesPermissionEnforcement",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--endpoint-reconciler-type=none",
                "--profiling=false",
                "--audit-policy-file=audit-policy.yaml",
                "--audit-log-path=audit.log",
                "--audit-log-format=json",
            ]);
        let apiserver = spawn_logged(apiserver, &d.join("apiserver.log"));
        let server = ApiServer {
            dir,
            etcd,
            apiserver,
            url: format!("https://127.0.0.1:{api}"),
            kubectl: bins.kubectl,
        };
        for user in [User::Admin, User::Operator] {
            write(&server.kubeconfig(user), &server.kubeconfig_text(user));
        }
        server.wait_ready(Duration::from_secs(90));
        Some(server)
    }

    fn wait_ready(&self, timeout: Duration) {
        let start = Instant::now();
        loop {
            let ready = self
                .kubectl(&["get", "--raw", "/readyz"])
                .is_ok_and(|out| out.trim() == "ok");
            if ready {
                // RBAC's bootstrap roles come with readiness; the default namespace too.
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "the API server was not ready within {timeout:?}; its log:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The last lines of the API server's and etcd's logs, for failure messages.
    pub fn log_tail(&self) -> String {
        let tail = |name: &str| {
            let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(30)..].join("\n")
        };
        format!(
            "== apiserver.log\n{}\n== etcd.log\n{}",
            tail("apiserver.log"),
            tail("etcd.log")
        )
    }

    /// The temporary directory holding certificates, logs and kubeconfigs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn kubeconfig_text(&self, user: User) -> String {
        let ca = self.dir.path().join("ca.crt");
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: envtest\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: u\n  user:\n    token: {}\ncontexts:\n- name: envtest\n  context: {{cluster: envtest, user: u, namespace: default}}\ncurrent-context: envtest\n",
            self.url,
            ca.display(),
            user.token()
        )
    }

    /// A kubeconfig file authenticating as `user`.
    pub fn kubeconfig(&self, user: User) -> PathBuf {
        self.dir.path().join(match user {
            User::Admin => "admin.kubeconfig",
            User::Operator => "operator.kubeconfig",
        })
    }

    /// `kubectl ARGS` as the admin; stdout, or stderr and stdout as the error.
    pub fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        self.kubectl_stdin(args, None)
    }

    /// `kubectl ARGS` as the admin with `stdin` fed in.
    pub fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
        let mut cmd = Command::new(&self.kubectl);
        cmd.arg("--kubeconfig")
            .arg(self.kubeconfig(User::Admin))
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| format!("run kubectl: {e}"))?;
        if let Some(text) = stdin
            && let Some(mut pipe) = child.stdin.take()
        {
            pipe.write_all(text.as_bytes())
                .map_err(|e| format!("kubectl stdin: {e}"))?;
        }
        let out: Output = child
            .wait_with_output()
            .map_err(|e| format!("kubectl: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(format!(
                "kubectl {}: {}{stdout}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
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

    /// Every audit record so far: one JSON object per request of [`OPERATOR_USER`].
    pub fn audit(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("audit.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        for child in [&mut self.apiserver, &mut self.etcd] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
