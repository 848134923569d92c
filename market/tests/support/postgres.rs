//! A throwaway PostgreSQL server for the market's tests (as the gateway's store tests start
//! one): `initdb` into a temporary directory and `postgres` on a free loopback port, one per
//! test process, a fresh database per call of [`database`].
//!
//! The binaries are looked up in `$SUBLET_POSTGRES_BIN`, on `PATH`, then in
//! `/usr/lib/postgresql/*/bin`. Without them the tests print why and pass, unless
//! `SUBLET_REQUIRE_POSTGRES=1` (CI sets it), where a server that cannot start fails them.
//! As root the server runs as the `postgres` (or `nobody`) user. A watcher shell stops the
//! server and removes its directory when the test process is gone.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

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

fn start() -> Result<Server, String> {
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
    let q = |p: &Path| shell_quote(&p.to_string_lossy());
    let initdb = format!(
        "{} -D {} -U sublet --auth=trust -E UTF8 --locale=C >{} 2>&1",
        q(&bin.join("initdb")),
        q(&data),
        q(&dir.join("initdb.log"))
    );
    let serve = format!(
        "{postgres} -D {data} -k {dir} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off \
         -c max_connections=200 >{log} 2>&1 & pg=$!; \
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

fn server() -> Option<&'static Server> {
    static SERVER: OnceLock<Option<Server>> = OnceLock::new();
    SERVER
        .get_or_init(|| match start() {
            Ok(s) => Some(s),
            Err(e) if required() => panic!("SUBLET_REQUIRE_POSTGRES=1 but {e}"),
            Err(e) => {
                eprintln!("skipping the PostgreSQL variant of this test: {e}");
                None
            }
        })
        .as_ref()
}

/// The URL of a fresh, empty database, or `None` (after saying why) without PostgreSQL.
/// Runs on a plain thread: the synchronous client may not run on a tokio thread.
pub fn database() -> Option<String> {
    std::thread::spawn(|| {
        let server = server()?;
        let name = server.create_database();
        Some(format!(
            "postgres://sublet@127.0.0.1:{}/{name}",
            server.port
        ))
    })
    .join()
    .expect("starting PostgreSQL panicked")
}
