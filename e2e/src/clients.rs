//! The real S3 clients the tests drive (aws, python3 with boto3, s3cmd,
//! rclone, restic): finding them and running them with a deadline.

use std::ffi::OsString;
use std::io::{Read, Seek};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// What to do when a client is missing: a test skips without it (see [`crate::skip`]),
/// and one that calls [`require`] anyway fails naming this step.
pub const INSTALL_HINT: &str =
    "install the e2e clients with `bash .ci/install-clients` (CI runs it)";

/// The virtualenv `.ci/install-clients` falls back to where pip may not
/// install system-wide; keep in step with that script.
pub fn clients_venv() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("SUBLET_CLIENTS_VENV") {
        return Some(dir.into());
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/sublet/clients-venv"))
}

/// PATH for client programs: the clients' venv first (when there is one), then PATH.
pub fn search_path() -> OsString {
    let mut dirs: Vec<PathBuf> = clients_venv()
        .map(|v| v.join("bin"))
        .filter(|d| d.is_dir())
        .into_iter()
        .collect();
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    std::env::join_paths(dirs).expect("PATH entries without separators")
}

/// Why the S3 client `client` cannot run here, or `None` when it can: `aws`, `s3cmd`,
/// `rclone`, `restic` (each must answer its version) or `boto3` (python3 importing it).
/// Tests check this first and skip through [`crate::skip::clients_present`].
pub fn missing(client: &str) -> Option<String> {
    let (program, args): (&str, &[&str]) = match client {
        "boto3" => ("python3", &["-c", "import boto3"]),
        "restic" => ("restic", &["version"]),
        other => (other, &["--version"]),
    };
    let Some(path) = find(program) else {
        return Some(format!("{program} not found"));
    };
    let works = Command::new(path)
        .args(args)
        .env("PATH", search_path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if works {
        None
    } else if client == "boto3" {
        Some("python3 cannot import boto3".to_owned())
    } else {
        Some(format!(
            "{program} does not run (`{program} {}`)",
            args.join(" ")
        ))
    }
}

fn find(program: &str) -> Option<PathBuf> {
    let path = search_path();
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| is_executable(p))
}

/// Full path of `program`; fails the test, naming the install step, when it is missing.
pub fn require(program: &str) -> PathBuf {
    find(program).unwrap_or_else(|| panic!("`{program}` is not on PATH: {INSTALL_HINT}"))
}

fn is_executable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A command for the client `program` with none of the caller's AWS settings
/// (profile, session token, endpoint, CA bundle) leaking in.
pub fn command(program: &str) -> Command {
    let mut cmd = Command::new(require(program));
    cmd.env("PATH", search_path());
    for var in [
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_REGION",
        // rclone's AWS SDK fails to build any S3 remote when this is set
        // (LoadCustomCABundleError: unsupported transport).
        "AWS_CA_BUNDLE",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::null());
    cmd
}

/// How a client run ended.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` to the end or kills it after `timeout`; the caller judges the status.
pub fn run(cmd: &mut Command, timeout: Duration) -> Output {
    // Files, not pipes: a chatty client can't block on a full pipe while we poll.
    let mut out = tempfile::tempfile().expect("temp file for stdout");
    let mut err = tempfile::tempfile().expect("temp file for stderr");
    cmd.stdout(out.try_clone().expect("dup stdout file"))
        .stderr(err.try_clone().expect("dup stderr file"));
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {shown}: {e}"));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll client") {
            break status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{shown} did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                read_all(&mut out),
                read_all(&mut err)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: read_all(&mut out),
        stderr: read_all(&mut err),
    }
}

/// Runs `cmd` within `timeout` and returns its stdout; fails the test with the
/// command line and both outputs unless it exits 0.
pub fn run_ok(cmd: &mut Command, timeout: Duration) -> String {
    let shown = format!("{cmd:?}");
    let out = run(cmd, timeout);
    assert!(
        out.status.success(),
        "{shown} failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    out.stdout
}

fn read_all(file: &mut std::fs::File) -> String {
    let mut bytes = Vec::new();
    file.rewind().expect("rewind output file");
    file.read_to_end(&mut bytes).expect("read output file");
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    #[should_panic(
        expected = "`sublet-e2e-no-such-client` is not on PATH: install the e2e clients"
    )]
    fn a_missing_client_fails_the_test_and_names_the_install_step() {
        super::require("sublet-e2e-no-such-client");
    }
}
