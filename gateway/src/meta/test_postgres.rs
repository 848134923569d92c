//! A throwaway PostgreSQL server for the store tests: `initdb` into a temporary directory and
//! `postgres` on a free loopback port, one per test process, a fresh database per test; a
//! second one, taking only TLS on TCP, for the TLS test.
//!
//! The binaries are looked up in `$SUBLET_POSTGRES_BIN`, on `PATH`, then in
//! `/usr/lib/postgresql/*/bin`. Without them the tests print why and pass, unless
//! `SUBLET_REQUIRE_POSTGRES=1` (CI sets it), where a server that cannot start fails them.
//! PostgreSQL refuses to run as root, so as root the server runs as the `postgres` (or
//! `nobody`) user. A watcher shell stops the server and removes its directory when the test
//! process is gone.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::PostgresStore;

struct Server {
    port: u16,
    /// Its directory: the Unix socket, and for a TLS server `ca.pem`.
    dir: PathBuf,
}

fn required() -> bool {
    std::env::var("SUBLET_REQUIRE_POSTGRES").is_ok_and(|v| v == "1")
}

fn bin_dir() -> Option<PathBuf> {
    let has = |d: &Path| d.join("initdb").is_file() && d.join("postgres").is_file();
    if let Ok(dir) = std::env::var("SUBLET_POSTGRES_BIN") {
        return Some(PathBuf::from(dir)).filter(|d| has(d));
    }
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            if has(&d) {
                return Some(d);
            }
        }
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
fn server_user() -> Option<(String, u32, u32)> {
    if output(Command::new("id").arg("-u"))? != "0" {
        return None;
    }
    for user in ["postgres", "nobody"] {
        let uid = output(Command::new("id").args(["-u", user]));
        let gid = output(Command::new("id").args(["-g", user]));
        if let (Some(uid), Some(gid)) = (uid, gid) {
            return Some((user.to_owned(), uid.parse().ok()?, gid.parse().ok()?));
        }
    }
    panic!(
        "running as root and there is neither a postgres nor a nobody user to run PostgreSQL as"
    );
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A CA and a certificate for 127.0.0.1 it signed, in `dir` (`ca.pem`, `server.crt`,
/// `server.key`), owned by the server's user; the server's `pg_hba.conf` refuses plain TCP.
fn write_tls_files(dir: &Path, owner: Option<(u32, u32)>) -> Result<Vec<String>, String> {
    let e = |e: rcgen::Error| e.to_string();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "sublet test CA");
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
    Ok(vec![
        "-c ssl=on".into(),
        format!("-c ssl_cert_file={}", q("server.crt")),
        format!("-c ssl_key_file={}", q("server.key")),
        format!("-c hba_file={}", q("pg_hba.conf")),
    ])
}

fn start(tls: bool) -> Result<Server, String> {
    let Some(bin) = bin_dir() else {
        return Err("no PostgreSQL binaries (initdb, postgres) in $SUBLET_POSTGRES_BIN, PATH or /usr/lib/postgresql/*/bin".into());
    };
    let user = server_user();
    // Kept on disk: the watcher removes it once this process is gone.
    let dir = tempfile::Builder::new()
        .prefix("sublet-pg-")
        .tempdir()
        .map_err(|e| e.to_string())?
        .keep();
    if let Some((_, uid, gid)) = &user {
        std::os::unix::fs::chown(&dir, Some(*uid), Some(*gid)).map_err(|e| e.to_string())?;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let data = dir.join("data");
    let tls_options = if tls {
        write_tls_files(&dir, user.as_ref().map(|(_, uid, gid)| (*uid, *gid)))?.join(" ")
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
    let as_user = |script: &str| {
        let mut cmd = match &user {
            Some((name, _, _)) => {
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
    };
    let status = as_user(&initdb)
        .status()
        .map_err(|e| format!("initdb: {e}"))?;
    if !status.success() {
        let log = std::fs::read_to_string(dir.join("initdb.log")).unwrap_or_default();
        return Err(format!("initdb failed: {log}"));
    }
    as_user(&serve)
        .spawn()
        .map_err(|e| format!("starting postgres: {e}"))?;
    let server = Server { port, dir };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match server.admin() {
            Ok(_) => return Ok(server),
            Err(e) if Instant::now() > deadline => {
                let log =
                    std::fs::read_to_string(server.dir.join("server.log")).unwrap_or_default();
                return Err(format!(
                    "postgres did not accept connections: {e}; log: {log}"
                ));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

impl Server {
    /// A plain connection over the Unix socket to the `postgres` database.
    fn admin(&self) -> Result<postgres::Client, postgres::Error> {
        postgres::Client::connect(
            &format!(
                "host={} port={} user=sublet dbname=postgres",
                self.dir.display(),
                self.port
            ),
            postgres::NoTls,
        )
    }

    /// A fresh database: its name.
    fn create_database(&self) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "t{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        self.admin()
            .unwrap()
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        name
    }
}

fn get_or_start(cell: &'static OnceLock<Option<Server>>, tls: bool) -> Option<&'static Server> {
    cell.get_or_init(|| match start(tls) {
        Ok(s) => Some(s),
        Err(e) if required() => panic!("SUBLET_REQUIRE_POSTGRES=1 but {e}"),
        Err(e) => {
            eprintln!("skipping the PostgreSQL store test: {e}");
            None
        }
    })
    .as_ref()
}

fn server() -> Option<&'static Server> {
    static SERVER: OnceLock<Option<Server>> = OnceLock::new();
    get_or_start(&SERVER, false)
}

/// A fresh database on a second server that takes only TLS over TCP, with a certificate for
/// 127.0.0.1 from a CA of its own: its URL (without `sslmode`) and the CA's PEM file, or
/// `None` (after saying why) without PostgreSQL.
pub fn tls_database() -> Option<(String, PathBuf)> {
    static SERVER: OnceLock<Option<Server>> = OnceLock::new();
    let server = get_or_start(&SERVER, true)?;
    let name = server.create_database();
    Some((
        format!("postgres://sublet@127.0.0.1:{}/{name}", server.port),
        server.dir.join("ca.pem"),
    ))
}

/// The URL of a fresh, empty database, or `None` (after saying why) without PostgreSQL.
pub fn database() -> Option<String> {
    let server = server()?;
    let name = server.create_database();
    Some(format!(
        "postgres://sublet@127.0.0.1:{}/{name}",
        server.port
    ))
}

/// A store on a fresh database.
pub fn store() -> Option<PostgresStore> {
    database().map(|url| PostgresStore::open(&url).unwrap())
}
