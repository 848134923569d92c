//! A throwaway PostgreSQL server for tests: `initdb` into a temporary directory and
//! `postgres` on a free loopback port, one per test process, a fresh database per call; a
//! second one, taking only TLS on TCP with a certificate from a CA of its own, for stores
//! that reach their database over TLS. The e2e tests use it as `sublet_e2e::postgres`; the
//! gateway's store tests and the market's tests include this file as a module (it needs
//! nothing but std and rcgen).
//!
//! The binaries are looked up in `$SUBLET_POSTGRES_BIN`, on `PATH`, then in
//! `/usr/lib/postgresql/*/bin`. Without them a test prints why and passes, unless
//! `SUBLET_REQUIRE_POSTGRES=1` (CI sets it), where a server that cannot start fails it.
//! PostgreSQL refuses to run as root, so as root the server runs as the `postgres` (or
//! `nobody`) user. A watcher shell stops the server and removes its directory once the
//! test process is gone.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

struct Server {
    bin: PathBuf,
    /// Its directory: the server's log and, for a TLS server, `ca.pem`.
    dir: PathBuf,
    port: u16,
    user: Option<String>,
}

fn required() -> bool {
    std::env::var("SUBLET_REQUIRE_POSTGRES").is_ok_and(|v| v == "1")
}

fn bin_dir() -> Option<PathBuf> {
    let has = |d: &Path| {
        ["initdb", "postgres", "pg_isready", "createdb"]
            .iter()
            .all(|b| d.join(b).is_file())
    };
    // A directory may hold only some of them (e.g. symlinks to initdb and postgres in
    // /usr/local/bin): then the directory their targets live in is tried too.
    let mut candidates: Vec<PathBuf> = std::env::var_os("SUBLET_POSTGRES_BIN")
        .map(PathBuf::from)
        .into_iter()
        .chain(
            std::env::var_os("PATH")
                .iter()
                .flat_map(std::env::split_paths),
        )
        .collect();
    let resolved: Vec<PathBuf> = candidates
        .iter()
        .filter_map(|d| std::fs::canonicalize(d.join("initdb")).ok())
        .filter_map(|p| p.parent().map(Path::to_path_buf))
        .collect();
    candidates.extend(resolved);
    if let Some(d) = candidates.into_iter().find(|d| has(d)) {
        return Some(d);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|d| has(d))
        .collect();
    versions.sort();
    versions.pop()
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// As root: the user to run the server as, with its uid and gid.
fn server_user() -> Result<Option<(String, u32, u32)>, String> {
    if output(Command::new("id").arg("-u")).as_deref() != Some("0") {
        return Ok(None);
    }
    for user in ["postgres", "nobody"] {
        let uid = output(Command::new("id").args(["-u", user]));
        let gid = output(Command::new("id").args(["-g", user]));
        if let (Some(uid), Some(gid)) = (uid, gid) {
            let parse = |s: String| s.parse::<u32>().map_err(|e| format!("id of {user}: {e}"));
            return Ok(Some((user.to_owned(), parse(uid)?, parse(gid)?)));
        }
    }
    Err(
        "running as root and there is neither a postgres nor a nobody user to run PostgreSQL as"
            .into(),
    )
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl Server {
    /// `script` run by `sh`, as the server's user.
    fn shell(&self, script: &str) -> Command {
        as_user(self.user.as_deref(), script)
    }
}

fn as_user(user: Option<&str>, script: &str) -> Command {
    let mut cmd = match user {
        Some(name) => {
            let mut c = Command::new("runuser");
            c.args(["-u", name, "--", "sh", "-c", script]);
            c
        }
        None => {
            let mut c = Command::new("sh");
            c.args(["-c", script]);
            c
        }
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

/// A CA and a certificate for 127.0.0.1 it signed, in `dir` (`ca.pem`, `server.crt`,
/// `server.key`), owned by the server's user, and a `pg_hba.conf` refusing plain TCP; the
/// server options that use them.
fn write_tls_files(dir: &Path, owner: Option<(u32, u32)>) -> Result<String, String> {
    let e = |e: rcgen::Error| e.to_string();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "sublet e2e CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().map_err(e)?)
        .map_err(e)?;
    let key = rcgen::KeyPair::generate().map_err(e)?;
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .map_err(e)?
        .signed_by(&key, &ca)
        .map_err(e)?;
    let hba = "local all all trust\nhostssl all all 127.0.0.1/32 trust\n\
               hostnossl all all 127.0.0.1/32 reject\n";
    let files = [
        ("ca.pem", ca.pem()),
        ("server.crt", cert.pem()),
        ("server.key", key.serialize_pem()),
        ("pg_hba.conf", hba.to_owned()),
    ];
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid)).map_err(|e| e.to_string())?;
        }
    }
    // PostgreSQL refuses a key others may read.
    std::fs::set_permissions(
        dir.join("server.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .map_err(|e| e.to_string())?;
    let q = |name: &str| shell_quote(&dir.join(name).to_string_lossy());
    Ok(format!(
        "-c ssl=on -c ssl_cert_file={} -c ssl_key_file={} -c hba_file={}",
        q("server.crt"),
        q("server.key"),
        q("pg_hba.conf")
    ))
}

fn start(tls: bool) -> Result<Server, String> {
    let Some(bin) = bin_dir() else {
        return Err("no PostgreSQL binaries (initdb, postgres, pg_isready, createdb) in $SUBLET_POSTGRES_BIN, PATH or /usr/lib/postgresql/*/bin".into());
    };
    let user = server_user()?;
    // Kept on disk: the watcher removes it once this process is gone.
    let dir = tempfile::Builder::new()
        .prefix("sublet-e2e-pg-")
        .tempdir()
        .map_err(|e| e.to_string())?
        .keep();
    if let Some((_, uid, gid)) = &user {
        std::os::unix::fs::chown(&dir, Some(*uid), Some(*gid)).map_err(|e| e.to_string())?;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("finding a free port: {e}"))?
        .port();
    let data = dir.join("data");
    let tls_options = if tls {
        write_tls_files(&dir, user.as_ref().map(|(_, uid, gid)| (*uid, *gid)))?
    } else {
        String::new()
    };
    let q = |p: &Path| shell_quote(&p.to_string_lossy());
    let initdb = format!(
        "{} -D {} -U sublet --auth=trust -E UTF8 --locale=C >{} 2>&1",
        q(&bin.join("initdb")),
        q(&data),
        q(&dir.join("initdb.log"))
    );
    let serve = format!(
        "{postgres} -D {data} -k {dir} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off \
         -c max_connections=200 {tls_options} >{log} 2>&1 & pg=$!; \
         while [ -d /proc/{parent} ] && kill -0 $pg 2>/dev/null; do sleep 1; done; \
         kill -INT $pg 2>/dev/null; wait $pg; rm -rf {dir}",
        postgres = q(&bin.join("postgres")),
        data = q(&data),
        dir = q(&dir),
        log = q(&dir.join("server.log")),
        parent = std::process::id(),
    );
    let user_name = user.map(|(name, _, _)| name);
    let status = as_user(user_name.as_deref(), &initdb)
        .status()
        .map_err(|e| format!("initdb: {e}"))?;
    if !status.success() {
        let log = std::fs::read_to_string(dir.join("initdb.log")).unwrap_or_default();
        return Err(format!("initdb failed: {log}"));
    }
    as_user(user_name.as_deref(), &serve)
        .spawn()
        .map_err(|e| format!("starting postgres: {e}"))?;
    let server = Server {
        bin,
        dir: dir.clone(),
        port,
        user: user_name,
    };
    let ready = format!(
        "{} -q -h 127.0.0.1 -p {port} -U sublet -d postgres",
        q(&server.bin.join("pg_isready"))
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if server.shell(&ready).status().is_ok_and(|s| s.success()) {
            return Ok(server);
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
            return Err(format!("postgres did not accept connections; log: {log}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn get_or_start(cell: &'static OnceLock<Option<Server>>, tls: bool) -> Option<&'static Server> {
    cell.get_or_init(|| match start(tls) {
        Ok(s) => Some(s),
        Err(e) if required() => panic!("SUBLET_REQUIRE_POSTGRES=1 but {e}"),
        Err(e) => {
            eprintln!("skipping the test of several gateways on PostgreSQL: {e}");
            None
        }
    })
    .as_ref()
}

impl Server {
    /// A fresh, empty database: its name.
    fn create_database(&self) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "e2e{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let create = format!(
            "{} -h 127.0.0.1 -p {} -U sublet {name}",
            shell_quote(&self.bin.join("createdb").to_string_lossy()),
            self.port
        );
        let status = self
            .shell(&create)
            .status()
            .unwrap_or_else(|e| panic!("createdb {name}: {e}"));
        assert!(status.success(), "createdb {name} failed: {status}");
        name
    }
}

/// Runs `sql` on the database at `url` (one of this module's) with the server's `psql`,
/// panicking with psql's message when it fails.
pub fn execute(url: &str, sql: &str) {
    let psql = bin_dir()
        .map(|d| d.join("psql"))
        .unwrap_or_else(|| panic!("no PostgreSQL binaries for psql"));
    let out = Command::new(&psql)
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", psql.display()));
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The URL of a fresh, empty database, or `None` (after saying why) without PostgreSQL.
pub fn database() -> Option<String> {
    static SERVER: OnceLock<Option<Server>> = OnceLock::new();
    let server = get_or_start(&SERVER, false)?;
    let name = server.create_database();
    Some(format!(
        "postgres://sublet@127.0.0.1:{}/{name}",
        server.port
    ))
}

/// The URL of a fresh, empty database on a server that takes only TLS, asking for TLS and
/// naming the server's CA (`sslmode=verify-full&sslrootcert=...`), or `None` (after saying
/// why) without PostgreSQL.
pub fn tls_database() -> Option<String> {
    let (url, ca) = tls_server_database()?;
    Some(format!(
        "{url}?sslmode=verify-full&sslrootcert={}",
        ca.display()
    ))
}

/// [`tls_database`] as the URL without `sslmode` and the server's CA (a PEM file), for a
/// test that tries other modes too.
pub fn tls_server_database() -> Option<(String, PathBuf)> {
    static SERVER: OnceLock<Option<Server>> = OnceLock::new();
    let server = get_or_start(&SERVER, true)?;
    let name = server.create_database();
    Some((
        format!("postgres://sublet@127.0.0.1:{}/{name}", server.port),
        server.dir.join("ca.pem"),
    ))
}
