//! A daemon a test starts and forgets: its output in a log file, killed when its handle is
//! dropped (on a panic too), so no test leaves it running behind it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// A daemon whose output goes to a log file; killed when dropped.
pub struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Spawns `cmd` with no input and its stdout and stderr in `log`.
    pub fn spawn(cmd: &mut Command, log: PathBuf) -> Self {
        let out = std::fs::File::create(&log)
            .unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
        let err = out
            .try_clone()
            .unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        Daemon { child, log }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last 30 lines it logged, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_daemon_handle_that_goes_away_takes_its_process_with_it() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let daemon = Daemon::spawn(
            Command::new("sleep").arg("600"),
            tmp.path().join("sleep.log"),
        );
        let proc_dir = std::path::Path::new("/proc").join(daemon.pid().to_string());
        assert!(proc_dir.exists(), "sleep is not running");
        drop(daemon);
        assert!(!proc_dir.exists(), "sleep outlived its handle");
    }
}
