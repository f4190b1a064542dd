//! Labs that outlive the command that made them (`wgmesh lab up`), and the
//! clean-up of labs whose maker is gone (`wgmesh lab down`, `wgmesh lab clean`).
//!
//! A detached lab is recorded in `/run/wgmesh-lab/<id>.json`: its
//! namespaces, its hosts, and the PIDs of the processes it left running.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::lab::Detached;
use crate::names::{LabId, parse_netns};
use crate::{LabError, netns};

/// Where detached labs are recorded (tmpfs: a reboot forgets them, as it
/// forgets their namespaces).
pub const STATE_DIR: &str = "/run/wgmesh-lab";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LabError + '_ {
    move |source| LabError::Io {
        path: path.to_owned(),
        source,
    }
}

fn state_path(id: &str) -> PathBuf {
    Path::new(STATE_DIR).join(format!("{id}.json"))
}

/// Records a detached lab.
pub fn save(lab: &Detached) -> Result<PathBuf, LabError> {
    let dir = Path::new(STATE_DIR);
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let path = state_path(&lab.id);
    let json = serde_json::to_string_pretty(lab).expect("the lab state serializes");
    std::fs::write(&path, json).map_err(io(&path))?;
    Ok(path)
}

/// Every recorded lab.
pub fn list() -> Result<Vec<Detached>, LabError> {
    let dir = Path::new(STATE_DIR);
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(dir)(e)),
    };
    let mut labs = Vec::new();
    for entry in entries {
        let path = entry.map_err(io(dir))?.path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).map_err(io(&path))?;
            let lab = serde_json::from_str(&text).map_err(|e| {
                LabError::Topology(format!("{}: not a lab record: {e}", path.display()))
            })?;
            labs.push(lab);
        }
    }
    labs.sort_by(|a: &Detached, b| a.id.cmp(&b.id));
    Ok(labs)
}

/// The recorded lab `id`, or the only one when `id` is `None`.
pub fn find(id: Option<&str>) -> Result<Detached, LabError> {
    let labs = list()?;
    match id {
        Some(id) => labs
            .into_iter()
            .find(|l| l.id == id)
            .ok_or_else(|| LabError::Topology(format!("no lab {id:?} is up (see {STATE_DIR})"))),
        None => match <[Detached; 1]>::try_from(labs) {
            Ok([lab]) => Ok(lab),
            Err(labs) if labs.is_empty() => Err(LabError::Topology(
                "no lab is up (wgmesh lab up FILE.toml)".into(),
            )),
            Err(labs) => Err(LabError::Topology(format!(
                "several labs are up ({}); name one with --lab",
                labs.iter()
                    .map(|l| l.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        },
    }
}

fn kill(pid: u32) {
    // By PID only; a process that has ended already is fine.
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .output();
}

/// Takes a detached lab down: its processes (by PID), its namespaces (and
/// whatever still runs in them), its record and its logs.
pub fn down(lab: &Detached) -> Result<(), LabError> {
    for &(pid, started) in &lab.pids {
        // Only if the PID still names the process the lab recorded.
        if crate::process::start_time(pid) == Some(started) {
            kill(pid);
        }
    }
    // Every namespace of the lab, also those a half-finished `lab up` made
    // before it could record them.
    let prefix = LabId::named(&lab.id).map(|id| id.netns(""));
    for ns in netns::list()? {
        if lab.namespaces.contains(&ns) || prefix.as_ref().is_some_and(|p| ns.starts_with(p)) {
            netns::remove_by_name(&ns)?;
        }
    }
    let path = state_path(&lab.id);
    if path.exists() {
        std::fs::remove_file(&path).map_err(io(&path))?;
    }
    let _ = std::fs::remove_dir_all(&lab.log_dir);
    Ok(())
}

/// Removes what crashed runs left behind, and only that: namespaces of test
/// labs whose process is gone, and of named labs with no record (a `lab up`
/// that died half-way). With `all`, every lab namespace and every recorded
/// lab goes. Returns the namespaces removed.
pub fn clean(all: bool) -> Result<Vec<String>, LabError> {
    let recorded = list()?;
    let mut removed = Vec::new();
    if all {
        for lab in &recorded {
            down(lab)?;
            removed.extend(lab.namespaces.iter().cloned());
        }
    }
    for ns in netns::list()? {
        let Some((id, _host)) = parse_netns(&ns) else {
            continue;
        };
        if !all && in_use(&id, &recorded) {
            continue;
        }
        netns::remove_by_name(&ns)?;
        removed.push(ns);
    }
    removed.sort();
    removed.dedup();
    Ok(removed)
}

fn in_use(id: &LabId, recorded: &[Detached]) -> bool {
    match id.creator_pid() {
        Some(pid) => Path::new(&format!("/proc/{pid}")).exists(),
        None => recorded.iter().any(|l| l.id == id.as_str()),
    }
}
