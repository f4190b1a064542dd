//! Third-party tools that tests hold wgmesh's output against, so that "it
//! speaks the format" is checked by someone else's parser: Prometheus'
//! `promtool check metrics` (Debian's prometheus package) and the RFC 3489
//! STUN client `stun` (Debian's stun-client package, stund 0.97).
//!
//! A missing tool is an error that names the package (scripts/test.sh
//! installs both), never a skip.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::LabError;

fn spawn_error(tool: &str, package: &str, source: std::io::Error) -> LabError {
    let command = if source.kind() == std::io::ErrorKind::NotFound {
        format!("{tool} (not on PATH: install Debian's {package} package; scripts/test.sh does)")
    } else {
        tool.to_owned()
    };
    LabError::Spawn { command, source }
}

/// `promtool check metrics` on `text` (the exposition format, on stdin).
/// Any finding is an error, lint included: promtool prints them (on
/// stdout or stderr, by version) and exits non-zero for some kinds only.
/// Returns what promtool printed (nothing, when it passes).
pub fn promtool_check_metrics(text: &str) -> Result<String, LabError> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| spawn_error("promtool", "prometheus", e))?;
    let mut stdin = child
        .stdin
        .take()
        .expect("invariant: stdin was piped above");
    let wrote = stdin.write_all(text.as_bytes());
    drop(stdin);
    let out = child
        .wait_with_output()
        .map_err(|e| spawn_error("promtool", "prometheus", e))?;
    wrote.map_err(|e| spawn_error("promtool", "prometheus", e))?;
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && printed.trim().is_empty() {
        Ok(printed)
    } else {
        Err(LabError::Command {
            command: "promtool check metrics".into(),
            status: out.status.to_string(),
            stderr: printed.trim().to_owned(),
        })
    }
}

/// What the `stun` client reported for one Binding test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StunClientResult {
    /// The UDP port the client sent from ("Opened port N").
    pub local_port: u16,
    /// The address the server told it ("MappedAddress = ADDR:PORT").
    pub mapped: SocketAddr,
}

/// Runs `stun SERVER 1 -v`: RFC 3489 test I alone, a Binding request
/// without the magic cookie (and with CHANGE-REQUEST asking no change),
/// and parses what the client printed. The client retries for a while
/// when nothing answers; it is killed (by its PID) at `timeout`.
pub fn stun_client_binding(
    server: SocketAddr,
    timeout: Duration,
) -> Result<StunClientResult, LabError> {
    let command = format!("stun {server} 1 -v");
    let mut child = Command::new("stun")
        .args([&server.to_string(), "1", "-v"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| spawn_error("stun", "stun-client", e))?;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(LabError::Timeout(format!(
                    "{command}: no answer within {timeout:?}"
                )));
            }
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| spawn_error("stun", "stun-client", e))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let failed = |why: &str| LabError::Command {
        command: command.clone(),
        status: format!("{} ({why})", out.status),
        stderr: text.clone(),
    };
    let local_port = text
        .lines()
        .find_map(|l| l.strip_prefix("Opened port "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| failed("no \"Opened port\" line"))?;
    let mapped = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("MappedAddress = "))
        .and_then(|a| a.trim().parse().ok())
        .ok_or_else(|| failed("no \"MappedAddress\" line: no Binding response"))?;
    Ok(StunClientResult { local_port, mapped })
}
