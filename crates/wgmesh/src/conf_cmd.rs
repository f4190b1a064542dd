//! `conf check` and `conf strip`.

use std::path::Path;

use anyhow::{Context as _, Result, bail};
use wgmesh_core::wgquick::{self, Config, Table};

fn load(file: &Path) -> Result<Config> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    wgquick::parse(&text).map_err(|e| {
        let lines: Vec<String> = e
            .errors
            .iter()
            .map(|l| format!("{}:{}", file.display(), l))
            .collect();
        anyhow::anyhow!("{} is not valid:\n{}", file.display(), lines.join("\n"))
    })
}

pub fn check(file: &Path) -> Result<()> {
    let config = load(file)?;
    if let Some(Table::Name(name)) = &config.interface.table
        && !known_table(name)
    {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let line = interface_key_line(&text, "table").unwrap_or(0);
        bail!(
            "{} is not valid:\n{}:line {line}: Table {name:?} is no routing table ip(8) knows \
             here (main, local, default, or a name in {})",
            file.display(),
            file.display(),
            RT_TABLES.join(", ")
        );
    }
    if config.interface.private_key.is_none()
        && !config
            .interface
            .post_up
            .iter()
            .any(|h| h.contains("private-key"))
    {
        bail!(
            "{}: [Interface] has no PrivateKey (and no PostUp that sets one)",
            file.display()
        );
    }
    println!("{}: ok, {} peers", file.display(), config.peers.len());
    Ok(())
}

pub fn strip(file: &Path) -> Result<()> {
    print!("{}", wgquick::render_stripped(&load(file)?));
    Ok(())
}

/// Where ip(8) looks up table names (`rtnl_rttable_a2n` in iproute2's
/// lib/rt_names.c), each also with a `.d` directory of `*.conf` files;
/// newer iproute2 keeps its defaults under /usr/share.
const RT_TABLES: [&str; 2] = ["/etc/iproute2/rt_tables", "/usr/share/iproute2/rt_tables"];

/// Whether `ip route … table NAME` takes `name` on this machine, as
/// `wgmesh wg up` and wg-quick will ask it to: the three names iproute2
/// knows without a file, or one its files list (`NUMBER NAME` lines).
fn known_table(name: &str) -> bool {
    if ["main", "local", "default"].contains(&name) {
        return true;
    }
    let mut files: Vec<std::path::PathBuf> = Vec::new();
    for base in RT_TABLES {
        files.push(base.into());
        if let Ok(dir) = std::fs::read_dir(format!("{base}.d")) {
            files.extend(
                dir.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "conf")),
            );
        }
    }
    files.iter().any(|f| {
        std::fs::read_to_string(f).is_ok_and(|text| {
            text.lines().any(|l| {
                let l = l.split('#').next().unwrap_or_default();
                let mut words = l.split_whitespace();
                words.next().is_some_and(|id| id.parse::<u32>().is_ok())
                    && words.next() == Some(name)
            })
        })
    })
}

/// The 1-based line of the last `key` in `[Interface]` (the one in force),
/// read as the parser reads keys: case-insensitive, `#` starts a comment.
fn interface_key_line(text: &str, key: &str) -> Option<usize> {
    let mut in_interface = false;
    let mut found = None;
    for (i, raw) in text.lines().enumerate() {
        let content = raw.split('#').next().unwrap_or_default().trim();
        if content.starts_with('[') {
            in_interface = content.eq_ignore_ascii_case("[Interface]");
        } else if in_interface
            && content
                .split_once('=')
                .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case(key))
        {
            found = Some(i + 1);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_line_is_the_last_in_interface() {
        let text = "[Interface]\nTable = a\n# Table = b\ntable=c # x\n[Peer]\nTable = d\n";
        assert_eq!(interface_key_line(text, "table"), Some(4));
        assert_eq!(interface_key_line("[Peer]\nTable = 1\n", "table"), None);
    }

    #[test]
    fn builtin_tables_need_no_file() {
        for name in ["main", "local", "default"] {
            assert!(known_table(name), "{name}");
        }
        assert!(!known_table("wgmesh_no_such_table"));
    }
}
