//! A throwaway PostgreSQL server for tests of several gateways on one database: `initdb` into
//! a temporary directory and `postgres` on a free loopback port, one per test process, a
//! fresh database per test.
//!
//! The binaries are looked up in `$SUBLET_POSTGRES_BIN`, on `PATH`, then in
//! `/usr/lib/postgresql/*/bin`, as the gateway's store tests do. Without them a test prints
//! why and passes, unless `SUBLET_REQUIRE_POSTGRES=1` (CI sets it), where a server that
//! cannot start fails it. PostgreSQL refuses to run as root, so as root the server runs as
//! the `postgres` (or `nobody`) user. A watcher shell stops the server and removes its
//! directory once the test process is gone.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

struct Server {
    bin: PathBuf,
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

fn start() -> Result<Server, String> {
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
    let port = crate::free_addr().port();
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

fn server() -> Option<&'static Server> {
    static SERVER: OnceLock<Option<Server>> = OnceLock::new();
    SERVER
        .get_or_init(|| match start() {
            Ok(s) => Some(s),
            Err(e) if required() => panic!("SUBLET_REQUIRE_POSTGRES=1 but {e}"),
            Err(e) => {
                eprintln!("skipping the test of several gateways on PostgreSQL: {e}");
                None
            }
        })
        .as_ref()
}

/// The URL of a fresh, empty database, or `None` (after saying why) without PostgreSQL.
pub fn database() -> Option<String> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let server = server()?;
    let name = format!(
        "e2e{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let create = format!(
        "{} -h 127.0.0.1 -p {} -U sublet {name}",
        shell_quote(&server.bin.join("createdb").to_string_lossy()),
        server.port
    );
    let status = server
        .shell(&create)
        .status()
        .unwrap_or_else(|e| panic!("createdb {name}: {e}"));
    assert!(status.success(), "createdb {name} failed: {status}");
    Some(format!(
        "postgres://sublet@127.0.0.1:{}/{name}",
        server.port
    ))
}
