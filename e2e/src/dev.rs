//! A real `sublet dev` process on a free loopback port with its state in a
//! directory the test owns; stopped when dropped.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::clients::run_ok;
use crate::{free_addr, workspace_binary};

/// How long `sublet dev` may take to start six providers and listen.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a `sublet user|key ...` command or an admin call may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a ctrl-c'd `sublet dev` may take to stop before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `sublet dev`.
pub struct SubletDev {
    child: Child,
    /// Its stderr, beside the state directory; shown when a test fails.
    log_path: PathBuf,
    /// The S3 listen address.
    pub addr: SocketAddr,
    /// Where `/metrics` and `/healthz` are served (`--admin-listen`): a free port of its
    /// own, so tests running side by side don't fight over the default 9001.
    pub admin_addr: SocketAddr,
    /// The state directory (`--dir`).
    pub dir: PathBuf,
    pub access_key: String,
    pub secret_key: String,
}

impl SubletDev {
    /// Starts `sublet dev --dir dir` on a free port and waits until it accepts connections.
    pub fn start(dir: &Path) -> Self {
        // A port found free may be taken by another test before `sublet dev` binds it: then
        // it exits, and it is started again on other ports.
        let mut attempt = 0;
        let (child, log_path, addr, admin_addr) = loop {
            attempt += 1;
            let (addr, admin_addr) = (free_addr(), free_addr());
            let (mut child, log_path) = Self::spawn(dir, addr, admin_addr);
            // Listening, and still running a moment later: not another test's listener on a
            // port `sublet dev` failed to bind.
            std::thread::sleep(Duration::from_millis(200));
            match child.try_wait().expect("poll sublet dev") {
                None => break (child, log_path, addr, admin_addr),
                Some(status) if attempt < 3 => {
                    eprintln!(
                        "sublet dev on {addr} exited ({status}); starting it on other ports\n{}",
                        log_tail(&log_path)
                    );
                }
                Some(status) => panic!(
                    "sublet dev on {addr} exited: {status}\n{}",
                    log_tail(&log_path)
                ),
            }
        };
        let (access_key, secret_key) = read_credentials(&dir.join("credentials"));
        SubletDev {
            child,
            log_path,
            addr,
            admin_addr,
            dir: dir.to_path_buf(),
            access_key,
            secret_key,
        }
    }

    /// Spawns `sublet dev` and waits until something listens on `addr`.
    fn spawn(dir: &Path, addr: SocketAddr, admin_addr: SocketAddr) -> (Child, PathBuf) {
        let log_path = dir.with_extension("log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap_or_else(|e| panic!("opening {}: {e}", log_path.display()));
        let mut child = Command::new(workspace_binary("sublet", "sublet"))
            .arg("dev")
            .arg("--dir")
            .arg(dir)
            .args(["--listen", &addr.to_string()])
            .args(["--admin-listen", &admin_addr.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // s3s logs every refused request at error level: keep that out
            // of the test output unless the test fails.
            .stderr(log)
            .spawn()
            .expect("spawn sublet dev");
        let start = Instant::now();
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            // Exited before listening: the caller sees it and tries other ports.
            if child.try_wait().expect("poll sublet dev").is_some() {
                return (child, log_path);
            }
            if start.elapsed() > START_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "sublet dev did not listen on {addr} within {START_TIMEOUT:?}\n{}",
                    log_tail(&log_path)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        (child, log_path)
    }

    /// The admin API's token, which `sublet dev` keeps in `admin.token` in its state
    /// directory.
    pub fn admin_token(&self) -> String {
        let path = self.dir.join("admin.token");
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
            .trim()
            .to_owned()
    }

    /// The process id, to read its memory figures in `/proc`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://host:port`, what clients take as endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The AWS config file `sublet dev` writes (single PUTs up to 5 GB).
    pub fn aws_config(&self) -> PathBuf {
        self.dir.join("aws-config")
    }

    /// A command for the client `program` holding this gateway's keys in the
    /// AWS environment variables and the AWS config file `sublet dev` wrote.
    pub fn client(&self, program: &str) -> Command {
        let mut cmd = crate::clients::command(program);
        cmd.env("AWS_ACCESS_KEY_ID", &self.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret_key)
            .env("AWS_CONFIG_FILE", self.aws_config())
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                self.dir.join("no-aws-credentials"),
            );
        cmd
    }

    /// `sublet ARGS` against its admin API (`--admin-url`, `--token`), not run yet.
    pub fn admin_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(workspace_binary("sublet", "sublet"));
        cmd.args(args)
            .args(["--admin-url", &format!("http://{}", self.admin_addr)])
            .args(["--token", &self.admin_token()]);
        cmd
    }

    /// Makes runtime user `user` (its display name the same) and one access key of it
    /// with `grants` (`bucket:rw`, ...) with `sublet user create` and `sublet key create`:
    /// (access key, secret key).
    pub fn user_with_key(&self, user: &str, grants: &[&str]) -> (String, String) {
        run_ok(
            &mut self.admin_command(&["user", "create", user, "--display-name", user]),
            ADMIN_TIMEOUT,
        );
        let mut args = vec!["key", "create", "--user", user];
        for g in grants {
            args.extend(["--grant", g]);
        }
        let out = run_ok(&mut self.admin_command(&args), ADMIN_TIMEOUT);
        (
            printed_field(&out, "access key:"),
            printed_field(&out, "secret key:"),
        )
    }

    /// The admin listener's `/metrics` text.
    pub fn metrics(&self) -> String {
        let mut s = TcpStream::connect_timeout(&self.admin_addr, Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.admin_addr));
        s.set_read_timeout(Some(ADMIN_TIMEOUT))
            .expect("read timeout");
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        )
        .unwrap_or_else(|e| panic!("GET /metrics: {e}"));
        let mut out = String::new();
        s.read_to_string(&mut out)
            .unwrap_or_else(|e| panic!("GET /metrics: {e}"));
        out
    }

    /// Stops it as ctrl-c does and returns how it exited.
    pub fn interrupt(mut self) -> std::process::ExitStatus {
        signal(&self.child, "-INT");
        self.wait_exit()
    }

    /// Kills it with SIGKILL: nothing gets a chance to flush.
    pub fn kill(mut self) {
        signal(&self.child, "-KILL");
        self.wait_exit();
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("poll sublet dev") {
                return status;
            }
            if start.elapsed() > STOP_TIMEOUT {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("sublet dev did not stop within {STOP_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for SubletDev {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", log_tail(&self.log_path));
        }
    }
}

/// The value after `label` on a line `sublet key create|rotate` printed (`access key:`,
/// `secret key:`); fails the test naming the label when there is none.
pub fn printed_field(out: &str, label: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label:?} in {out}"))
        .trim()
        .to_owned()
}

/// The last lines `sublet dev` logged, for a failure message.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(40)..].join("\n");
    format!("--- last lines of {} ---\n{tail}", path.display())
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {sig} {} failed", child.id());
}

/// Reads the `access_key=` / `secret_key=` lines `sublet dev` keeps in its state directory.
fn read_credentials(path: &Path) -> (String, String) {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let field = |name: &str| {
        text.lines()
            .filter_map(|l| l.split_once('='))
            .find(|(k, _)| k.trim() == name)
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| panic!("{} has no {name} line", path.display()))
    };
    (field("access_key"), field("secret_key"))
}
