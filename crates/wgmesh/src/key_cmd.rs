//! `genkey`, `pubkey`, `genpsk`: the same text in and out as wg(8).

use std::io::{Read as _, Write as _};
use std::path::Path;

use anyhow::{Context as _, Result};
use wgmesh_core::key::{KEY_LEN, PresharedKey, PrivateKey};
use zeroize::{Zeroize as _, Zeroizing};

/// 32 bytes from the OS's CSPRNG.
pub fn random_key_bytes() -> Result<Zeroizing<[u8; KEY_LEN]>> {
    let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
    getrandom::fill(bytes.as_mut())
        .map_err(|e| anyhow::anyhow!("the OS random number generator failed: {e}"))?;
    Ok(bytes)
}

pub fn new_private_key() -> Result<PrivateKey> {
    Ok(PrivateKey::from_random(*random_key_bytes()?))
}

pub fn genkey(out: Option<&Path>, force: bool) -> Result<()> {
    let mut line = Zeroizing::new(new_private_key()?.to_base64());
    line.push('\n');
    match out {
        Some(path) => crate::secret_file::write(path, line.as_bytes(), 0o600, force),
        None => print_secret(&line),
    }
}

pub fn genpsk() -> Result<()> {
    let mut line = Zeroizing::new(PresharedKey::from_random(*random_key_bytes()?).to_base64());
    line.push('\n');
    print_secret(&line)
}

pub fn pubkey() -> Result<()> {
    let mut text = Zeroizing::new(String::new());
    std::io::stdin()
        .read_to_string(&mut text)
        .context("cannot read the private key from stdin")?;
    // wg(8) allows trailing whitespace (the newline of `echo`), nothing else.
    let key: PrivateKey = text
        .trim_end()
        .parse()
        .context("bad private key on stdin")?;
    text.zeroize();
    println!("{}", key.public_key());
    Ok(())
}

fn print_secret(line: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(line.as_bytes())
        .and_then(|()| out.flush())
        .context("cannot write to stdout")
}
