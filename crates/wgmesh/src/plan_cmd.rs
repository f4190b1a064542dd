//! `plan render`, `plan check`, `plan show`: the file side of the planner.
//! Keys are made here (the core takes randomness as input) and kept in
//! `DIR/keys/`, reused on every later render.

use std::collections::BTreeMap;
use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use anyhow::{Context as _, Result, bail};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use ipnet::IpNet;
use serde::Serialize;
use wgmesh_core::key::PrivateKey;
use wgmesh_core::plan::{self, MeshSpec, NodeKey, Plan, RenderOptions};
use zeroize::Zeroizing;

use crate::secret_file;

fn load_spec(mesh: &Path) -> Result<MeshSpec> {
    let text =
        fs::read_to_string(mesh).with_context(|| format!("cannot read {}", mesh.display()))?;
    MeshSpec::parse(&text).with_context(|| format!("{} is not a valid mesh file", mesh.display()))
}

/// Plans the mesh; with `dir`, nodes keep the addresses of the render there.
fn load_plan(mesh: &Path, dir: Option<&Path>) -> Result<Plan> {
    let spec = load_spec(mesh)?;
    let previous = dir
        .map(|d| previous_addresses(&spec, d))
        .unwrap_or_default();
    plan::compile(&spec, &previous).with_context(|| format!("cannot plan {}", mesh.display()))
}

/// The addresses nodes got in an earlier render into `dir`.
fn previous_addresses(spec: &MeshSpec, dir: &Path) -> BTreeMap<String, IpAddr> {
    spec.nodes
        .iter()
        .filter_map(|node| {
            let text = fs::read_to_string(dir.join(format!("{}.conf", node.name))).ok()?;
            Some((node.name.clone(), previous_address(&text)?))
        })
        .collect()
}

pub fn check(mesh: &Path, dir: Option<&Path>) -> Result<()> {
    let plan = load_plan(mesh, dir)?;
    println!(
        "{}: ok: mesh {:?}, {}, {} nodes, {} tunnels; every node reaches every other",
        mesh.display(),
        plan.name,
        plan.topology,
        plan.nodes.len(),
        plan.tunnels()
    );
    Ok(())
}

#[derive(Serialize)]
struct ShowJson<'a> {
    #[serde(flatten)]
    plan: &'a Plan,
    tunnels: usize,
    full_mesh_tunnels: usize,
}

pub fn show(mesh: &Path, dir: Option<&Path>, json: bool) -> Result<()> {
    let plan = load_plan(mesh, dir)?;
    if json {
        let out = ShowJson {
            plan: &plan,
            tunnels: plan.tunnels(),
            full_mesh_tunnels: plan.full_mesh_tunnels(),
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header([
        "node",
        "address",
        "endpoint",
        "peers",
        "routes via hub",
    ]);
    for n in &plan.nodes {
        let name = if n.is_hub {
            format!("{} (hub)", n.name)
        } else {
            n.name.clone()
        };
        let endpoint = n
            .endpoint
            .as_ref()
            .map_or_else(|| "behind NAT".to_string(), ToString::to_string);
        let peers: Vec<&str> = n.peers.iter().map(|p| p.node.as_str()).collect();
        let via: Vec<String> = n
            .peers
            .iter()
            .filter_map(|p| {
                let through = if !p.via.is_empty() {
                    p.via.join(", ")
                } else if p
                    .allowed_ips
                    .iter()
                    .any(|a| a.prefix_len() < a.max_prefix_len())
                {
                    let nets: Vec<String> = p.allowed_ips.iter().map(ToString::to_string).collect();
                    nets.join(", ")
                } else {
                    return None;
                };
                Some(format!("{through} via {}", p.node))
            })
            .collect();
        table.add_row([
            name,
            n.address.to_string(),
            endpoint,
            format!("{} ({})", peers.len(), peers.join(", ")),
            if via.is_empty() {
                "-".into()
            } else {
                via.join("; ")
            },
        ]);
    }
    println!(
        "mesh {:?}: {}, overlay {}",
        plan.name, plan.topology, plan.cidr
    );
    println!("{table}");
    println!(
        "tunnels: {} (a full mesh of {} nodes has N·(N−1)/2 = {})",
        plan.tunnels(),
        plan.nodes.len(),
        plan.full_mesh_tunnels()
    );
    Ok(())
}

/// The first `Address` of an earlier render, read leniently: a file with a
/// key placeholder does not parse, and its address must still stick.
fn previous_address(conf: &str) -> Option<IpAddr> {
    conf.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        if !key.trim().eq_ignore_ascii_case("address") {
            return None;
        }
        let first = value.split(',').next()?.trim();
        first
            .parse::<IpNet>()
            .map(|n| n.addr())
            .or_else(|_| first.parse::<IpAddr>())
            .ok()
    })
}

/// What happened to one output file.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Created,
    Updated,
    Unchanged,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Updated => "updated",
            Outcome::Unchanged => "unchanged",
        }
    }
}

/// Writes `contents` only if it differs, so an unchanged node's files keep
/// their bytes and their mtime. Always leaves the file at `mode`.
fn write_if_changed(path: &Path, contents: &str, mode: u32) -> Result<Outcome> {
    let old = match fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_file() => {
            bail!(
                "{} is not a regular file (a symlink?); refusing to write it",
                path.display()
            )
        }
        Ok(_) => Some(fs::read(path).with_context(|| format!("cannot read {}", path.display()))?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    if old.as_deref() == Some(contents.as_bytes()) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot chmod {}", path.display()))?;
        return Ok(Outcome::Unchanged);
    }
    secret_file::write(path, contents.as_bytes(), mode, true)?;
    Ok(if old.is_some() {
        Outcome::Updated
    } else {
        Outcome::Created
    })
}

/// The node's key: the mesh file's public key, else `keys/<node>.key`,
/// made now if missing.
fn node_key(
    keys_dir: &Path,
    name: &str,
    given: Option<wgmesh_core::key::PublicKey>,
) -> Result<(NodeKey, Option<Outcome>)> {
    let path = keys_dir.join(format!("{name}.key"));
    if let Some(public) = given {
        if fs::symlink_metadata(&path).is_ok() {
            eprintln!(
                "wgmesh: note: {} is left over from before {name} had a public_key in the \
                 mesh file; it is no longer used (delete it once {name} runs its own key)",
                path.display()
            );
        }
        return Ok((NodeKey::PublicOnly(public), None));
    }
    if let Some(text) = secret_file::read_private(&path)? {
        let key: PrivateKey = text
            .trim_end()
            .parse()
            .with_context(|| format!("{} does not hold a private key", path.display()))?;
        return Ok((NodeKey::Private(key), None));
    }
    let key = crate::key_cmd::new_private_key()?;
    let mut line = Zeroizing::new(String::with_capacity(64));
    line.push_str(&key.to_base64());
    line.push('\n');
    secret_file::write(&path, line.as_bytes(), 0o600, false)?;
    Ok((NodeKey::Private(key), Some(Outcome::Created)))
}

pub fn render(mesh: &Path, out: &Path, key_files: bool) -> Result<()> {
    let spec = load_spec(mesh)?;
    secret_file::ensure_own_dir(out)?;
    let previous = previous_addresses(&spec, out);
    let plan = plan::compile(&spec, &previous)
        .with_context(|| format!("cannot plan {}", mesh.display()))?;

    let keys_dir = out.join("keys");
    secret_file::private_dir(&keys_dir)?;
    let mut report: Vec<(String, Outcome)> = Vec::new();
    let ignore = "# Private keys never go into version control.\n*\n!.gitignore\n";
    report.push((
        "keys/.gitignore".into(),
        write_if_changed(&keys_dir.join(".gitignore"), ignore, 0o644)?,
    ));

    let mut keys = BTreeMap::new();
    for node in &spec.nodes {
        let (key, made) = node_key(&keys_dir, &node.name, node.public_key)?;
        if let Some(made) = made {
            report.push((format!("keys/{}.key", node.name), made));
        }
        keys.insert(node.name.clone(), key);
    }

    let options = RenderOptions { key_files };
    for node in &plan.nodes {
        let conf = plan.render_config(&node.name, &keys, options)?;
        let name = format!("{}.conf", node.name);
        report.push((
            name.clone(),
            write_if_changed(&out.join(&name), &conf, 0o600)?,
        ));
        let script = plan.render_setup_script(&node.name, &keys[&node.name], options)?;
        let name = format!("{}.setup.sh", node.name);
        report.push((
            name.clone(),
            write_if_changed(&out.join(&name), &script, 0o755)?,
        ));
    }

    println!(
        "mesh {:?} ({}, {} nodes, {} tunnels) rendered into {}",
        plan.name,
        plan.topology,
        plan.nodes.len(),
        plan.tunnels(),
        out.display()
    );
    for (file, outcome) in &report {
        if *outcome != Outcome::Unchanged || file.ends_with(".conf") {
            println!("  {:<24} {}", file, outcome.as_str());
        }
    }
    // A node removed from the mesh leaves its files behind: say so, delete nothing.
    if let Ok(entries) = fs::read_dir(out) {
        let mut stale: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|f| {
                f.strip_suffix(".conf")
                    .is_some_and(|n| plan.node(n).is_none())
            })
            .collect();
        stale.sort();
        for f in stale {
            println!("  {f:<24} stale: no such node in the mesh any more (left in place)");
        }
    }
    Ok(())
}
