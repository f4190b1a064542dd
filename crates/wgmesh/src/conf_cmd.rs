//! `conf check` and `conf strip`.

use std::path::Path;

use anyhow::{Context as _, Result, bail};
use wgmesh_core::wgquick::{self, Config};

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
