//! A process started inside a lab host, with its output in a log file.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::LabError;

/// A child process; killed by its PID and reaped on drop.
#[derive(Debug)]
pub struct LabProcess {
    label: String,
    child: Child,
    log: PathBuf,
}

impl LabProcess {
    /// Starts `cmd` with stdout and stderr going to `log`.
    pub fn spawn(label: &str, mut cmd: Command, log: &Path) -> Result<Self, LabError> {
        let io = |source| LabError::Io {
            path: log.to_owned(),
            source,
        };
        let file = File::create(log).map_err(io)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().map_err(io)?)
            .stderr(file)
            .spawn()
            .map_err(|source| LabError::Spawn {
                command: label.to_owned(),
                source,
            })?;
        Ok(Self {
            label: label.to_owned(),
            child,
            log: log.to_owned(),
        })
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// What the process has printed so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|e| format!("(no log: {e})"))
    }

    /// `None` while running, else how it ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Ends the process now (SIGKILL by PID) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM (by PID) and waits for the process to end, up to `timeout`;
    /// then SIGKILL.
    pub fn terminate(&mut self, timeout: std::time::Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .output();
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        self.kill();
        None
    }
}

impl LabProcess {
    /// Lets the process outlive this handle (for a detached lab, which
    /// records the PID for `wgmesh lab down`).
    pub fn leave_running(self) {
        let _ = std::mem::ManuallyDrop::new(self);
    }
}

impl Drop for LabProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A process's start time (clock ticks since boot, /proc/PID/stat field
/// 22): with the PID, it names one process even after PIDs are reused.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields resume after its ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}
