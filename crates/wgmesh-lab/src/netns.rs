//! One network namespace, removed on drop together with every process
//! still running in it.

use std::process::{Command, Output};

use crate::LabError;
use crate::command::{run, run_args};

/// A network namespace made with `ip netns add`.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates the namespace and brings its loopback up.
    pub fn add(name: &str) -> Result<Self, LabError> {
        run_args("ip", &["netns", "add", name])?;
        let ns = Self {
            name: name.to_owned(),
        };
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Takes charge of an existing namespace (for `lab down`).
    pub fn adopt(name: &str) -> Self {
        Self {
            name: name.to_owned(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip netns exec NAME PROGRAM`; add arguments and run it.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Runs `args` in the namespace; a non-zero exit is an error.
    pub fn exec<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Result<Output, LabError> {
        let (program, rest) = args
            .split_first()
            .ok_or_else(|| LabError::Topology("empty command".into()))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name])
            .arg(program)
            .args(rest);
        run(&mut cmd)
    }

    /// Runs `args` in the namespace and returns whatever happened.
    pub fn try_exec<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> std::io::Result<Output> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).args(args);
        cmd.output()
    }

    /// `ip -n NAME ARGS…`.
    pub fn ip(&self, args: &[&str]) -> Result<Output, LabError> {
        let mut cmd = Command::new("ip");
        cmd.args(["-n", &self.name]).args(args);
        run(&mut cmd)
    }

    /// PIDs of processes whose network namespace this is.
    pub fn pids(&self) -> Vec<i32> {
        Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Kills what still runs inside (by PID), then deletes the namespace.
    pub fn remove(self) -> Result<(), LabError> {
        let name = self.name.clone();
        std::mem::forget(self);
        remove_by_name(&name)
    }
}

/// Names of every network namespace on the machine.
pub fn list() -> Result<Vec<String>, LabError> {
    let out = run_args("ip", &["netns", "list"])?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// SIGKILLs every process in namespace `name`, by PID, then deletes it.
pub(crate) fn remove_by_name(name: &str) -> Result<(), LabError> {
    let ns = Netns {
        name: name.to_owned(),
    };
    let pids = ns.pids();
    std::mem::forget(ns);
    for pid in pids {
        // The lab only ever kills by PID, never by process name.
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .output();
    }
    match run_args("ip", &["netns", "del", name]) {
        Ok(_) => Ok(()),
        // Someone else (another clean-up) removed it first: it is gone either way.
        Err(_) if !list()?.iter().any(|n| n == name) => Ok(()),
        Err(e) => Err(e),
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = remove_by_name(&self.name) {
            eprintln!("lab cleanup: {e}");
        }
    }
}
