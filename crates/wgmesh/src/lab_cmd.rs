//! `wgmesh lab up|exec|down|clean`: the lab for people, on top of wgmesh-lab.

use std::path::Path;
use std::process::{Command, ExitCode};

use anyhow::{Context as _, Result};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use wgmesh_lab::lab::{Detached, Role};
use wgmesh_lab::{Topology, state};

pub fn up(file: &Path) -> Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let topology = Topology::parse(&text).with_context(|| format!("{}", file.display()))?;
    let id = topology.id()?;
    if state::list()?.iter().any(|l| l.id == id.as_str()) {
        anyhow::bail!(
            "lab {:?} is up already; take it down first: wgmesh lab down {}",
            id.as_str(),
            id.as_str()
        );
    }
    // Recorded before it is built, so that `lab clean` sees it in use and a
    // crash half-way leaves a record that `lab down` can act on.
    state::save(&Detached::empty(&id))?;
    let lab = match topology.build() {
        Ok(lab) => lab,
        Err(e) => {
            // The half-built lab removed itself when dropped; so goes its record.
            let _ = state::down(&Detached::empty(&id));
            return Err(e.into());
        }
    };
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_header(["host", "role", "address", "namespace"]);
    for h in lab.hosts() {
        let role = match &h.role {
            Role::Public => "internet".to_string(),
            Role::Router { lan, nat, hairpin } => {
                format!("router: LAN {lan}, {nat:?} NAT, hairpin {hairpin:?}")
            }
            Role::Lan { router } => format!("behind {router}"),
        };
        table.add_row([h.name.clone(), role, h.addr.to_string(), h.ns().to_owned()]);
    }
    let id = id.as_str().to_owned();
    let detached = lab.detach();
    state::save(&detached)?;
    println!("lab {id:?} is up:\n{table}");
    println!("run a command in a host:  wgmesh lab exec HOST -- COMMAND…");
    println!("take it down:             wgmesh lab down {id}");
    Ok(())
}

pub fn exec(lab: Option<&str>, host: &str, command: &[String]) -> Result<ExitCode> {
    let lab = state::find(lab)?;
    let ns = lab
        .hosts
        .iter()
        .find(|(name, _)| name == host)
        .map(|(_, ns)| ns)
        .with_context(|| {
            let names: Vec<&str> = lab.hosts.iter().map(|(n, _)| n.as_str()).collect();
            format!(
                "lab {:?} has no host {host:?} (hosts: {})",
                lab.id,
                names.join(", ")
            )
        })?;
    let status = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(command)
        .status()
        .context("cannot run ip netns exec")?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}

pub fn down(lab: Option<&str>) -> Result<()> {
    let lab = state::find(lab)?;
    state::down(&lab)?;
    println!(
        "lab {:?} is down: {} namespaces removed",
        lab.id,
        lab.namespaces.len()
    );
    Ok(())
}

pub fn clean(all: bool) -> Result<()> {
    let removed = state::clean(all)?;
    if removed.is_empty() {
        println!("nothing to clean");
    }
    for ns in removed {
        println!("removed {ns}");
    }
    Ok(())
}
