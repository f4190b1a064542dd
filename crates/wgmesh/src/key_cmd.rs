//! `genkey`, `pubkey`, `genpsk`: the same text in and out as wg(8).

use std::io::{Read, Write as _};
use std::os::fd::AsFd as _;
use std::path::Path;

use anyhow::{Context as _, Result, bail};
use wgmesh_core::key::{KEY_B64_LEN, KEY_LEN, KeyError, PresharedKey, PrivateKey};
use zeroize::Zeroizing;

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
    let line = key_line(&new_private_key()?.to_base64());
    match out {
        Some(path) => crate::secret_file::write(path, line.as_bytes(), 0o600, force),
        None => print_secret(&line),
    }
}

pub fn genpsk() -> Result<()> {
    print_secret(&key_line(
        &PresharedKey::from_random(*random_key_bytes()?).to_base64(),
    ))
}

/// `key` and a newline, in a buffer sized for exactly that up front, so that
/// no reallocation leaves an unwiped copy of the key behind.
fn key_line(key: &str) -> Zeroizing<String> {
    let mut line = Zeroizing::new(String::with_capacity(KEY_B64_LEN + 1));
    line.push_str(key);
    line.push('\n');
    line
}

/// How much of stdin `pubkey` holds at once (the key and what follows it).
const STDIN_CHUNK: usize = 4096;

/// What `wg pubkey` lets follow the key: NUL and its `char_is_space` (tab,
/// newline, vertical tab, form feed, carriage return, space), nothing else.
fn wg_allows_after_key(b: u8) -> bool {
    matches!(b, 0 | b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ')
}

/// `wg pubkey`: the first 44 bytes of stdin are the key; anything after them
/// must be NUL or ASCII whitespace (also leading whitespace is refused).
pub fn pubkey() -> Result<()> {
    // Read the descriptor directly: std's stdin would keep a copy of the key
    // in its own buffer, which nobody wipes.
    let fd = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .context("cannot read the private key from stdin")?;
    let mut input = std::fs::File::from(fd);
    let mut buf = Zeroizing::new(vec![0u8; STDIN_CHUNK]);
    let read = read_full(&mut input, &mut buf)?;
    if read < KEY_B64_LEN {
        bail!("bad private key on stdin: a key is {KEY_B64_LEN} base64 characters");
    }
    let (text, tail) = buf.split_at_mut(KEY_B64_LEN);
    let (mut after, mut more) = (read - KEY_B64_LEN, read == STDIN_CHUNK);
    loop {
        if !tail[..after].iter().copied().all(wg_allows_after_key) {
            bail!("trailing characters found after the key on stdin");
        }
        if !more {
            break;
        }
        after = read_full(&mut input, tail)?;
        more = after == tail.len();
    }
    let key: PrivateKey = std::str::from_utf8(text)
        .map_err(|_| KeyError::Base64)
        .and_then(str::parse)
        .context("bad private key on stdin")?;
    println!("{}", key.public_key());
    Ok(())
}

/// Reads until `buf` is full or at end of input; returns how much it read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("cannot read the private key from stdin"),
        }
    }
    Ok(filled)
}

fn print_secret(line: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(line.as_bytes())
        .and_then(|()| out.flush())
        .context("cannot write to stdout")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_line_never_reallocates() {
        let key = PrivateKey::from_random([7; KEY_LEN]).to_base64();
        let line = key_line(&key);
        assert_eq!(line.len(), KEY_B64_LEN + 1);
        assert_eq!(
            line.capacity(),
            KEY_B64_LEN + 1,
            "allocated once, at its final size"
        );
        assert!(line.ends_with('\n'));
    }

    #[test]
    fn only_nul_and_ascii_whitespace_may_follow_a_key() {
        for b in [0, b'\t', b'\n', 0x0b, 0x0c, b'\r', b' '] {
            assert!(wg_allows_after_key(b), "{b:#x}");
        }
        for b in [b'x', b'=', 0x85, 0xa0, 0x1c, 0x7f] {
            assert!(!wg_allows_after_key(b), "{b:#x}");
        }
    }

    #[test]
    fn read_full_reads_across_short_reads() {
        let mut input = (&b"abc"[..]).chain(&b"defgh"[..]);
        let mut buf = [0u8; 6];
        assert_eq!(read_full(&mut input, &mut buf).expect("read"), 6);
        assert_eq!(&buf, b"abcdef");
        assert_eq!(read_full(&mut input, &mut buf).expect("read"), 2);
    }
}
