//! `sublet serve` gateways over separate `sublet-provider` processes on loopback, for
//! fault-injection tests: any process can be killed (SIGKILL) and started again on the same
//! state, shard files are reachable on disk, the admin API answers JSON. Each provider sits
//! in a ProviderPool of its own (`p0`, `p1`, ...), so `GET /admin/v1/pools/pN` tells how many
//! shards the metadata places on provider N. One gateway keeps its metadata in SQLite;
//! several share a PostgreSQL database and the master key, as replicas behind one Service
//! do. Everything is killed when dropped.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;

use crate::bench::client::{BenchBody, Connection, Expect, Target};
use crate::bench::content::{Content, Verifier};
use crate::bench::sigv4::Signer;
use crate::workspace_binary;

/// Token the gateway presents to providers.
pub const TOKEN: &str = "fault-injection-token-0123456789";
/// The gateway's admin token (`SUBLET_ADMIN_TOKEN`), which the admin API's actions want.
pub const ADMIN_TOKEN: &str = "fault-injection-admin-token-0123";
/// The S3 keys of every cluster gateway.
pub const ACCESS_KEY: &str = "faults";
pub const SECRET_KEY: &str = "faults-secret-0123456789";
/// How long a daemon may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest an admin call may take (a repair pass of a test's objects is far quicker).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(120);

/// Suffix of shard files in a provider's `shards` directory.
pub const SHARD_SUFFIX: &str = ".shard";
/// Shard ids of metadata snapshots (manifests and the snapshot's own shards) start so.
pub const SNAPSHOT_PREFIX: &str = "sublet-meta-manifest-";
/// Shard ids of the gateway's metadata journal segments start with this.
pub const JOURNAL_PREFIX: &str = "sublet-meta-journal-";

/// One `sublet-provider` process and its state.
pub struct ProviderProcess {
    /// Its endpoint name and pool name, `pN`.
    pub name: String,
    pub dir: PathBuf,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    /// The Unix socket it also listens on (`--listen-unix`), when the gateways reach it so.
    pub socket: Option<PathBuf>,
    pub node_id: String,
    /// `--capacity` it starts with (`1Gi` unless changed before a [`ProviderProcess::start`]).
    pub capacity: String,
    /// More arguments it starts with, such as its hidden `--fault-*` switches.
    pub extra_args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

/// A provider handle that goes away takes its process with it, as [`GatewayProcess`]'s
/// does: a test that panics while starting a cluster (a later provider or a gateway that
/// did not come up) or that holds a provider outside its [`Cluster`] leaves no
/// `sublet-provider` running behind it.
impl Drop for ProviderProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

impl ProviderProcess {
    /// A provider with its state in `root/p{index}`, not started.
    pub fn new(root: &Path, index: usize) -> Self {
        let name = format!("p{index}");
        let dir = root.join(&name);
        std::fs::create_dir_all(&dir).expect("create provider directory");
        ProviderProcess {
            node_id: crate::provider_node_id(&dir).to_string(),
            log: root.join(format!("{name}.log")),
            capacity: "1Gi".into(),
            extra_args: Vec::new(),
            name,
            dir,
            grpc: free_addr(),
            http: free_addr(),
            socket: None,
            child: None,
        }
    }

    /// Starts it for the first time, on other ports should its own be taken meanwhile.
    fn first_start(&mut self) {
        for _ in 0..3 {
            if self.try_start().is_ok() {
                return;
            }
            (self.grpc, self.http) = (free_addr(), free_addr());
        }
        self.start();
    }

    /// Starts it on its data directory and addresses; returns once `/healthz` answers.
    pub fn start(&mut self) {
        if let Err(e) = self.try_start() {
            panic!("{e}");
        }
    }

    fn try_start(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "{} is running already", self.name);
        let log = append(&self.log);
        let mut command = Command::new(workspace_binary("sublet-provider", "sublet-provider"));
        if let Some(socket) = &self.socket {
            command.arg("--listen-unix").arg(socket);
        }
        let mut child = command
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["--listen", &self.grpc.to_string()])
            .args(["--http-listen", &self.http.to_string()])
            .args(["--capacity", &self.capacity, "--token", TOKEN])
            .args(&self.extra_args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn sublet-provider");
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("poll sublet-provider") {
                return Err(format!(
                    "provider {} exited on start: {status}\n{}",
                    self.name,
                    log_tail(&self.log)
                ));
            }
            if crate::http_get(self.http, "/healthz").is_ok_and(|(s, _)| s == 200) {
                self.child = Some(child);
                return Ok(());
            }
            if start.elapsed() > START_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "provider {} did not answer on {} within {START_TIMEOUT:?}\n{}",
                    self.name,
                    self.http,
                    log_tail(&self.log)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills it and starts it again on the same state with `args` added: how a test turns
    /// an honest provider into a liar (`--fault-*`) from then on.
    pub fn restart_with(&mut self, args: &[&str]) {
        self.kill();
        self.extra_args = args.iter().map(|a| a.to_string()).collect();
        self.start();
    }

    /// SIGKILL: the provider vanishes as a crashed machine does.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Its shard files, by shard id (temp files, snapshots and journal segments left out).
    pub fn shard_files(&self) -> Vec<(String, PathBuf)> {
        let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(self.dir.join("shards"))
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        let id = name.strip_suffix(SHARD_SUFFIX)?.to_string();
                        (!id.starts_with(SNAPSHOT_PREFIX) && !id.starts_with(JOURNAL_PREFIX))
                            .then(|| (id, e.path()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }
}

/// What [`Cluster::start_with`] starts.
pub struct ClusterSpec<'a> {
    /// Provider processes, each in a ProviderPool of its own (`p0`, `p1`, ...).
    pub providers: usize,
    /// `sublet serve` processes over those providers, sharing the master key. More than one
    /// needs `postgres`.
    pub gateways: usize,
    /// YAML documents added to every gateway's file: StoragePlans, StorageSchedules, more
    /// ProviderPools.
    pub policies: &'a str,
    pub default_plan: &'a str,
    /// The PostgreSQL URL every gateway keeps its metadata in; SQLite in the gateway's data
    /// directory when `None`.
    pub postgres: Option<String>,
    /// How the gateways reach the providers.
    pub transport: ProviderTransport,
}

impl<'a> ClusterSpec<'a> {
    /// One gateway on SQLite over `providers` providers reached over TLS, its file holding
    /// `policies` and a StorageGateway with `default_plan`.
    pub fn one_gateway(providers: usize, policies: &'a str, default_plan: &'a str) -> Self {
        ClusterSpec {
            providers,
            gateways: 1,
            policies,
            default_plan,
            postgres: None,
            transport: ProviderTransport::Tls,
        }
    }
}

/// How a [`Cluster`]'s gateways reach its providers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProviderTransport {
    /// gRPC over TLS on TCP, each provider's node id pinned.
    #[default]
    Tls,
    /// Every provider also on a Unix socket (`dir/pN.sock`), which the gateways dial
    /// (`unix:` endpoints: no TLS, the node id pinned by the socket's handshake).
    UnixSockets,
}

/// Gateways over `providers.len()` provider processes. It derefs to its first gateway, the
/// only one unless [`ClusterSpec::gateways`] asked for more.
pub struct Cluster {
    pub dir: PathBuf,
    pub providers: Vec<ProviderProcess>,
    pub gateways: Vec<GatewayProcess>,
    /// Runs the gateways' S3 calls (they hold handles to it); kept alive with them.
    _runtime: tokio::runtime::Runtime,
}

impl Cluster {
    /// Starts `providers` providers and a gateway whose file holds them, the StoragePlans and
    /// StorageSchedules in `policies` (YAML documents) and a StorageGateway with
    /// `default_plan`.
    pub fn start(dir: &Path, providers: usize, policies: &str, default_plan: &str) -> Self {
        Cluster::start_with(
            dir,
            &ClusterSpec::one_gateway(providers, policies, default_plan),
        )
    }

    /// Starts the providers, then the gateways one after the other: the first creates the
    /// master key the others read.
    pub fn start_with(dir: &Path, spec: &ClusterSpec<'_>) -> Self {
        assert!(
            spec.gateways == 1 || spec.postgres.is_some(),
            "{} gateways cannot share an SQLite file; give them a PostgreSQL URL",
            spec.gateways
        );
        let mut procs: Vec<ProviderProcess> = (0..spec.providers)
            .map(|i| ProviderProcess::new(dir, i))
            .collect();
        for p in &mut procs {
            if spec.transport == ProviderTransport::UnixSockets {
                p.socket = Some(dir.join(format!("{}.sock", p.name)));
            }
            p.first_start();
        }
        let mut pools = String::new();
        for p in &procs {
            let address = match &p.socket {
                Some(socket) => format!("unix:{}", socket.display()),
                None => p.grpc.to_string(),
            };
            pools.push_str(&format!(
                "apiVersion: sublet.dev/v1alpha1\nkind: ProviderPool\nmetadata: {{name: {name}}}\n\
                 spec:\n  class: owned\n  endpoints:\n    - {{name: {name}, address: \"{}\", nodeId: \"{}\", zone: z-{name}}}\n---\n",
                address,
                p.node_id,
                name = p.name,
            ));
        }
        pools.push_str(spec.policies.trim());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let master_key = dir.join("gateway").join("master.key");
        let gateways = (0..spec.gateways)
            .map(|i| {
                // The first gateway keeps the paths a lone gateway always had.
                let (suffix, data_dir) = match i {
                    0 => (String::new(), dir.join("gateway")),
                    _ => (format!("-g{i}"), dir.join(format!("gateway-g{i}"))),
                };
                let (s3, admin) = (free_addr(), free_addr());
                let mut yaml = pools.clone();
                yaml.push_str(&format!(
                    "\n---\napiVersion: sublet.dev/v1alpha1\nkind: StorageGateway\nmetadata: {{name: s3}}\n\
                     spec:\n  defaultPlan: {}\n  probeInterval: 2s\n  listen: \"{s3}\"\n  adminListen: \"{admin}\"\n  \
                     dataDir: \"{}\"\n  masterKeyFile: \"{}\"\n  providerToken: {TOKEN}\n  credentials:\n    \
                     - {{accessKey: {ACCESS_KEY}, secretKey: {SECRET_KEY}}}\n",
                    spec.default_plan,
                    data_dir.display(),
                    master_key.display(),
                ));
                let mut env = Vec::new();
                if let Some(url) = &spec.postgres {
                    yaml.push_str("  metadata: {postgres: {urlEnv: SUBLET_METADATA_URL}}\n");
                    env.push(("SUBLET_METADATA_URL".to_string(), url.clone()));
                }
                let config = dir.join(format!("sublet{suffix}.yaml"));
                std::fs::write(&config, yaml).expect("write the gateway config");
                GatewayProcess {
                    name: format!("g{i}"),
                    config,
                    s3,
                    admin,
                    env,
                    log: dir.join(format!("gateway{suffix}.log")),
                    child: None,
                    runtime: runtime.handle().clone(),
                }
            })
            .collect();
        let mut cluster = Cluster {
            dir: dir.to_path_buf(),
            providers: procs,
            gateways,
            _runtime: runtime,
        };
        for g in &mut cluster.gateways {
            g.start();
        }
        cluster
    }

    /// Starts the first gateway again.
    pub fn start_gateway(&mut self) {
        self.gateways[0].start();
    }

    /// SIGKILL to the first gateway.
    pub fn kill_gateway(&mut self) {
        self.gateways[0].kill();
    }

    /// The `sublet` binary, for `sublet recover` and friends.
    pub fn sublet(&self) -> Command {
        sublet_command()
    }

    /// The first gateway's SQLite metadata file.
    pub fn metadata_path(&self) -> PathBuf {
        self.dir.join("gateway").join("metadata.db")
    }

    /// The first gateway's metadata disk lost (kill the gateway first): its SQLite file and
    /// the file's WAL and shared memory removed.
    pub fn lose_metadata(&self) {
        let meta = self.metadata_path();
        for ext in ["db", "db-wal", "db-shm"] {
            let _ = std::fs::remove_file(meta.with_extension(ext));
        }
        assert!(!meta.exists(), "{} is still there", meta.display());
    }

    /// `sublet recover --config` for the first gateway (stopped): what it printed. Panics
    /// with its output when it fails or writes no metadata.
    pub fn recover(&self) -> String {
        let out = self
            .sublet()
            .arg("recover")
            .arg("--config")
            .arg(&self.config)
            .output()
            .expect("running sublet recover");
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "sublet recover failed: {said}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let meta = self.metadata_path();
        assert!(meta.exists(), "sublet recover wrote no {}", meta.display());
        said
    }

    /// Shards the metadata places on provider `index` (its pool holds only it).
    pub fn shards_on(&self, index: usize) -> u64 {
        self.gateways[0].pool_shards(&self.providers[index].name)
    }
}

impl std::ops::Deref for Cluster {
    type Target = GatewayProcess;

    fn deref(&self) -> &GatewayProcess {
        &self.gateways[0]
    }
}

impl std::ops::DerefMut for Cluster {
    fn deref_mut(&mut self) -> &mut GatewayProcess {
        &mut self.gateways[0]
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for g in &mut self.gateways {
            g.kill();
        }
        for p in &mut self.providers {
            p.kill();
        }
        if std::thread::panicking() {
            for g in &self.gateways {
                eprintln!("{}", g.log_tail());
            }
        }
    }
}

/// The `sublet` binary with none of the caller's gateway settings leaking in.
fn sublet_command() -> Command {
    let mut cmd = Command::new(workspace_binary("sublet", "sublet"));
    cmd.env("RUST_LOG", "sublet_gateway=info,warn")
        .env_remove("SUBLET_DATA_DIR")
        .env_remove("SUBLET_ADMIN_LISTEN")
        .env_remove("SUBLET_PROVIDER_TOKEN")
        .env_remove("SUBLET_ACCESS_KEY")
        .env_remove("SUBLET_SECRET_KEY")
        .env_remove("SUBLET_METADATA_URL")
        .stdin(Stdio::null());
    cmd
}

/// One `sublet serve` process of a [`Cluster`], and S3 and admin calls to it.
pub struct GatewayProcess {
    /// `g0`, `g1`, ...
    pub name: String,
    pub config: PathBuf,
    pub s3: SocketAddr,
    pub admin: SocketAddr,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    runtime: tokio::runtime::Handle,
}

/// A gateway handle that goes away takes its process with it, so no test leaves a
/// `sublet serve` running behind it (`hostile::market` did, on every run).
impl Drop for GatewayProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

impl GatewayProcess {
    /// A gateway on a config of the test's own, not started. The config must listen for S3
    /// on `s3` and for the admin API on `admin`, and take [`ACCESS_KEY`] and [`SECRET_KEY`];
    /// its log goes to `log`; S3 calls run on `runtime`.
    pub fn on_config(
        name: &str,
        config: PathBuf,
        s3: SocketAddr,
        admin: SocketAddr,
        log: PathBuf,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        GatewayProcess {
            name: name.to_owned(),
            config,
            s3,
            admin,
            env: Vec::new(),
            log,
            child: None,
            runtime,
        }
    }

    /// `sublet serve --config`; returns once S3 and the admin API answer.
    pub fn start(&mut self) {
        assert!(
            self.child.is_none(),
            "gateway {} is running already",
            self.name
        );
        let mut child = sublet_command()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .env("SUBLET_ADMIN_TOKEN", ADMIN_TOKEN)
            .stdout(append(&self.log))
            .stderr(append(&self.log))
            .spawn()
            .expect("spawn sublet serve");
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("poll sublet serve") {
                panic!(
                    "sublet serve ({}) exited before listening: {status}\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            if TcpStream::connect_timeout(&self.s3, Duration::from_millis(200)).is_ok()
                && crate::http_get(self.admin, "/healthz").is_ok_and(|(s, _)| s == 200)
            {
                break;
            }
            if start.elapsed() > START_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "sublet serve ({}) did not listen within {START_TIMEOUT:?}\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = Some(child);
    }

    /// SIGKILL: whatever it was doing stops mid-way.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The last lines it logged, for failure messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }

    /// Everything the gateway logged, across its restarts.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET path` on the admin listener; fails the test unless it answers 200 with JSON.
    pub fn admin_get(&self, path: &str) -> serde_json::Value {
        self.admin_call("GET", path)
    }

    /// `POST path` on the admin listener with the admin token; fails the test unless it
    /// answers 200 with JSON.
    pub fn admin_post(&self, path: &str) -> serde_json::Value {
        self.admin_call("POST", path)
    }

    fn admin_call(&self, method: &str, path: &str) -> serde_json::Value {
        let (status, body) = http_call(self.admin, method, path, Some(ADMIN_TOKEN), ADMIN_TIMEOUT)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.log_tail()));
        assert_eq!(status, 200, "{method} {path} answered {status}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{method} {path}: {e}: {body}"))
    }

    /// `PUT path` with `body` on the admin listener with the admin token: (status, body).
    pub fn admin_put(&self, path: &str, body: &str) -> (u16, String) {
        let mut stream = TcpStream::connect_timeout(&self.admin, Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("PUT {path}: {e}"));
        stream
            .set_read_timeout(Some(ADMIN_TIMEOUT))
            .expect("read timeout");
        write!(
            stream,
            "PUT {path} HTTP/1.0\r\nHost: {}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
             Content-Length: {}\r\n\r\n{body}",
            self.admin,
            body.len()
        )
        .unwrap_or_else(|e| panic!("PUT {path}: {e}"));
        crate::read_response(&mut stream).unwrap_or_else(|e| panic!("PUT {path}: {e}"))
    }

    /// Its `/metrics` text.
    pub fn metrics(&self) -> String {
        let (status, body) = http_call(self.admin, "GET", "/metrics", None, ADMIN_TIMEOUT)
            .unwrap_or_else(|e| panic!("GET /metrics: {e}"));
        assert_eq!(status, 200, "GET /metrics answered {status}");
        body
    }

    /// Shards the metadata places in ProviderPool `pool`.
    pub fn pool_shards(&self, pool: &str) -> u64 {
        self.admin_get(&format!("/admin/v1/pools/{pool}"))["shards"]
            .as_u64()
            .unwrap_or_else(|| panic!("pool {pool}: no shard count"))
    }

    fn target(&self, bucket: &str) -> Arc<Target> {
        let signer = Signer {
            access_key: ACCESS_KEY.into(),
            secret_key: SECRET_KEY.into(),
            region: "us-east-1".into(),
            service: "s3".into(),
        };
        Arc::new(
            Target::new(&format!("http://{}", self.s3), signer, bucket, false).expect("S3 target"),
        )
    }

    /// A signed request head (HTTP/1.1, `Connection: close`, unsigned payload of
    /// `content_length` bytes when given), for a test that writes or reads at its own pace.
    pub fn signed_head(
        &self,
        method: &str,
        bucket: &str,
        key: &str,
        query: &[(&str, &str)],
        content_length: Option<u64>,
    ) -> String {
        use crate::bench::sigv4::{self, AmzDate, Request, UNSIGNED_PAYLOAD};
        let target = self.target(bucket);
        let path = sigv4::encode_path(&format!("/{bucket}/{key}"));
        let query = sigv4::canonical_query(query);
        let date = AmzDate::now();
        let headers = [
            ("host", target.authority.as_str()),
            ("x-amz-date", date.timestamp.as_str()),
            ("x-amz-content-sha256", UNSIGNED_PAYLOAD),
        ];
        let authorization = target.signer.authorization(
            &Request {
                method,
                path: &path,
                query: &query,
                headers: &headers,
                payload_hash: UNSIGNED_PAYLOAD,
            },
            &date,
        );
        let target_uri = if query.is_empty() {
            path
        } else {
            format!("{path}?{query}")
        };
        let mut head = format!("{method} {target_uri} HTTP/1.1\r\n");
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(len) = content_length {
            head.push_str(&format!("content-length: {len}\r\n"));
        }
        head.push_str(&format!(
            "authorization: {authorization}\r\nconnection: close\r\n\r\n"
        ));
        head
    }

    /// A signed `GET /bucket/key` request head (HTTP/1.1, `Connection: close`), for a test
    /// that reads the answer at its own pace.
    pub fn signed_get(&self, bucket: &str, key: &str) -> String {
        self.signed_head("GET", bucket, key, &[], None)
    }

    /// A slow reader of `bucket/key`: the GET sent, the answer's head and first 64 KiB read,
    /// the rest left in the socket until [`SlowGet::finish`].
    pub fn slow_get(&self, bucket: &str, key: &str) -> SlowGet {
        use std::io::Read;
        let mut stream = TcpStream::connect(self.s3).expect("connecting to the gateway");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
        stream
            .write_all(self.signed_get(bucket, key).as_bytes())
            .expect("sending the GET");
        let mut received = vec![0u8; 64 << 10];
        stream
            .read_exact(&mut received)
            .expect("the answer's first 64 KiB");
        SlowGet { stream, received }
    }

    /// One signed S3 request; the answer's body when it succeeds, the error otherwise.
    pub fn request(
        &self,
        method: Method,
        bucket: &str,
        key: Option<&str>,
        query: &[(&str, &str)],
        body: BenchBody,
    ) -> Result<String, String> {
        let mut conn = Connection::new(self.target(bucket));
        self.runtime
            .block_on(conn.request(method.clone(), key, query, &[], body, Expect::Text))
            .map(|a| a.text)
            .map_err(|e| format!("{method} {bucket}/{}: {e}", key.unwrap_or("")))
    }

    /// [`request`](Self::request) with (signed) request headers.
    pub fn request_with(
        &self,
        method: Method,
        bucket: &str,
        key: Option<&str>,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
        body: BenchBody,
    ) -> Result<String, String> {
        let mut conn = Connection::new(self.target(bucket));
        self.runtime
            .block_on(conn.request(method.clone(), key, query, headers, body, Expect::Text))
            .map(|a| a.text)
            .map_err(|e| format!("{method} {bucket}/{}: {e}", key.unwrap_or("")))
    }

    /// Creates `bucket`.
    pub fn create_bucket(&self, bucket: &str) {
        let mut conn = Connection::new(self.target(bucket));
        self.runtime
            .block_on(conn.request(
                Method::PUT,
                None,
                &[],
                &[],
                BenchBody::empty(),
                Expect::Discard,
            ))
            .unwrap_or_else(|e| panic!("creating bucket {bucket}: {e}"));
    }

    /// Sets `bucket`'s lifecycle configuration (PutBucketLifecycleConfiguration) to `xml`.
    pub fn put_lifecycle(&self, bucket: &str, xml: &str) {
        use base64::Engine;
        use md5::Digest;
        let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(xml));
        let mut conn = Connection::new(self.target(bucket));
        self.runtime
            .block_on(conn.request(
                Method::PUT,
                None,
                &[("lifecycle", "")],
                &[("content-md5", &md5)],
                BenchBody::Bytes(Some(bytes::Bytes::from(xml.to_string()))),
                Expect::Discard,
            ))
            .unwrap_or_else(|e| panic!("PutBucketLifecycleConfiguration on {bucket}: {e}"));
    }

    /// PUTs `object`'s bytes under its key.
    pub fn put(&self, bucket: &str, object: &TestObject) {
        self.put_content(bucket, &object.key, object.content())
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// PUTs `content` under `key`; the error when it is not acknowledged.
    pub fn put_content(&self, bucket: &str, key: &str, content: Content) -> Result<(), String> {
        self.request(
            Method::PUT,
            bucket,
            Some(key),
            &[],
            BenchBody::generated(content, 0, content.len),
        )
        .map(|_| ())
    }

    /// GETs `object` and compares every byte with what was written.
    pub fn read_back(&self, bucket: &str, object: &TestObject) -> Result<(), String> {
        read_back(
            self.target(bucket),
            &self.runtime,
            &object.key,
            &[],
            object.content(),
        )
    }

    /// GETs `key` (with `query`, e.g. a `versionId`) and compares every byte with `content`.
    pub fn verify(
        &self,
        bucket: &str,
        key: &str,
        query: &[(&str, &str)],
        content: Content,
    ) -> Result<(), String> {
        read_back(self.target(bucket), &self.runtime, key, query, content)
    }

    /// Fails the test unless every object reads back byte for byte.
    pub fn assert_all_read_back(&self, bucket: &str, objects: &[TestObject]) {
        let failed: Vec<String> = objects
            .iter()
            .filter_map(|o| self.read_back(bucket, o).err())
            .collect();
        assert!(
            failed.is_empty(),
            "{} of {} objects did not read back intact through {}:\n{}\n{}",
            failed.len(),
            objects.len(),
            self.name,
            failed.join("\n"),
            self.log_tail()
        );
    }

    /// A reader for another thread: reads objects back while the test does something else.
    pub fn reader(&self, bucket: &str) -> Reader {
        Reader {
            target: self.target(bucket),
        }
    }
}

/// Reads objects back from another thread.
/// A GET begun by [`GatewayProcess::slow_get`], its answer not read to the end yet.
pub struct SlowGet {
    stream: TcpStream,
    received: Vec<u8>,
}

impl SlowGet {
    /// Reads the rest of the answer; panics unless it is a 200 carrying `object`'s bytes,
    /// all of them.
    pub fn finish(mut self, object: &TestObject) {
        use std::io::Read;
        let mut rest = Vec::new();
        let read = self.stream.read_to_end(&mut rest);
        self.received.extend_from_slice(&rest);
        let split = self
            .received
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("answer head");
        let head = String::from_utf8_lossy(&self.received[..split]).into_owned();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let body = &self.received[split + 4..];
        assert!(
            read.is_ok() && body.len() as u64 == object.len,
            "the GET ended after {} of {} bytes ({read:?})",
            body.len(),
            object.len
        );
        assert!(
            body == object.content().bytes().as_ref(),
            "the GET returned other bytes"
        );
    }
}

pub struct Reader {
    target: Arc<Target>,
}

impl Reader {
    /// GETs `object` and compares every byte with what was written.
    pub fn read_back(
        &self,
        runtime: &tokio::runtime::Runtime,
        object: &TestObject,
    ) -> Result<(), String> {
        read_back(
            Arc::clone(&self.target),
            runtime.handle(),
            &object.key,
            &[],
            object.content(),
        )
    }
}

fn read_back(
    target: Arc<Target>,
    runtime: &tokio::runtime::Handle,
    key: &str,
    query: &[(&str, &str)],
    content: Content,
) -> Result<(), String> {
    let mut conn = Connection::new(target);
    runtime
        .block_on(conn.request(
            Method::GET,
            Some(key),
            query,
            &[],
            BenchBody::empty(),
            Expect::Verify(Verifier::new(content)),
        ))
        .map(|_| ())
        .map_err(|e| format!("GET {key} {query:?}: {e}"))
}

/// An object a test writes: its key and length fix its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestObject {
    pub key: String,
    pub len: u64,
}

impl TestObject {
    pub fn content(&self) -> Content {
        Content::for_key(&self.key, self.len)
    }

    /// Segments of `segment_size` bytes it is cut into.
    pub fn segments(&self, segment_size: u64) -> u64 {
        self.len.div_ceil(segment_size).max(1)
    }
}

/// `count` objects named `prefix-NN` of lengths spread from a few KiB to `max_len`, some
/// not a whole number of segments.
pub fn test_objects(prefix: &str, count: usize, max_len: u64) -> Vec<TestObject> {
    (0..count as u64)
        .map(|i| TestObject {
            key: format!("{prefix}-{i:02}"),
            len: (max_len * (i + 1) / count as u64)
                .saturating_sub(i * 977)
                .max(3000),
        })
        .collect()
}

/// Polls `check` every 100 ms until it gives a value; fails the test naming `what` after
/// `timeout`, with the last state `check` described.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let start = Instant::now();
    loop {
        match check() {
            Ok(v) => return v,
            Err(state) if start.elapsed() > timeout => {
                panic!("{what} did not happen within {timeout:?}; last seen: {state}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// The sum of the samples of metric `name` in a Prometheus text whose labels contain every
/// one of `labels` (all its samples when `labels` is empty; 0 when none is exported).
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// A shard id's stripe (the id without its index and repair suffix) and index in it.
pub fn stripe_of(id: &str) -> (String, u64) {
    let base = match id.rsplit_once("-r") {
        Some((base, suffix)) if suffix.len() == 8 => base,
        _ => id,
    };
    let (stripe, index) = base
        .rsplit_once('.')
        .unwrap_or_else(|| panic!("shard id {id} has no index"));
    let index = index
        .parse()
        .unwrap_or_else(|_| panic!("shard id {id} has no numeric index"));
    (stripe.to_string(), index)
}

/// Flips every byte of a shard file's data region (after its self-describing header, per
/// the provider's layout: magic, version, id length, length, stored_at, hash, id, header
/// checksum), leaving the header and the outboard as they were: bit rot on disk.
pub fn corrupt_shard_file(path: &Path) {
    let mut bytes = std::fs::read(path)
        .unwrap_or_else(|e| panic!("reading shard file {}: {e}", path.display()));
    let id_len = u16::from_le_bytes([bytes[10], bytes[11]]) as usize;
    let length = bytes[12..20]
        .try_into()
        .map(u64::from_le_bytes)
        .unwrap_or_else(|_| panic!("shard file {} has no length", path.display()))
        as usize;
    let start = 8 + 2 + 2 + 8 + 8 + 32 + id_len + 32;
    for b in &mut bytes[start..start + length] {
        *b ^= 0x5a;
    }
    std::fs::write(path, bytes)
        .unwrap_or_else(|e| panic!("writing shard file {}: {e}", path.display()));
}

/// One HTTP/1.0 request with an empty body on loopback, with `token` as bearer token when
/// given; (status, body).
pub fn http_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(timeout))?;
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\n\r\n"
    )?;
    crate::read_response(&mut stream)
}

/// A loopback address with a port nothing listens on now and no other cluster of this
/// process was given: tests run side by side, and a port one of them frees may be handed
/// to another before the first binds it again (a provider restarted on its address).
fn free_addr() -> SocketAddr {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    loop {
        let addr = crate::free_addr();
        if !given.contains(&addr.port()) {
            given.push(addr.port());
            return addr;
        }
    }
}

/// The last 40 lines of a log file, for failure messages.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    format!(
        "--- last lines of {} ---\n{}",
        path.display(),
        lines[lines.len().saturating_sub(40)..].join("\n")
    )
}

fn append(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// Whether process `pid` still exists (a zombie counts: it was not waited for).
    fn alive(pid: u32) -> bool {
        Path::new(&format!("/proc/{pid}")).exists()
    }

    #[test]
    fn a_provider_handle_that_goes_away_takes_its_process_with_it() {
        let tmp = tempfile::tempdir().unwrap();
        let mut provider = ProviderProcess::new(tmp.path(), 0);
        provider.first_start();
        let pid = provider.child.as_ref().expect("started").id();
        assert!(
            alive(pid),
            "sublet-provider {pid} is not running after its start"
        );
        drop(provider);
        assert!(!alive(pid), "sublet-provider {pid} outlived its handle");
    }
}
