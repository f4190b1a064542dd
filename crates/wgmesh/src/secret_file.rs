//! Files that may hold secrets: written whole or not at all, mode set from
//! the first byte, never through a symlink, never replacing a file silently.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

/// Writes `contents` to `path` with `mode`: into a new file beside it
/// (O_EXCL, so never through a planted symlink), then renamed into place,
/// so readers see the old file or the new one and never half of one.
/// Refuses to replace an existing file unless `overwrite`.
pub fn write(path: &Path, contents: &[u8], mode: u32, overwrite: bool) -> Result<()> {
    let exists = fs::symlink_metadata(path).is_ok();
    if exists && !overwrite {
        bail!("{} exists; not replacing it (use --force)", path.display());
    }
    let tmp = temp_path(path);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        // The umask may have narrowed `mode`; make it exactly what was asked.
        file.set_permissions(fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot chmod {}", tmp.display()))?;
        file.write_all(contents)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        if overwrite {
            // rename(2) replaces a symlink itself, never the file it points to.
            fs::rename(&tmp, path)
        } else {
            // link(2) fails if `path` appeared meanwhile: no clobbering race.
            fs::hard_link(&tmp, path).and_then(|()| fs::remove_file(&tmp))
        }
        .with_context(|| format!("cannot write {}", path.display()))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// The uid this process runs as (the owner of its /proc entry).
fn my_uid() -> Result<u32> {
    Ok(fs::metadata("/proc/self")
        .context("cannot read /proc/self")?
        .uid())
}

/// Makes `path` a directory that only we can use: created 0700 if missing;
/// if it exists it must be a real directory owned by us (not a symlink, not
/// someone else's, which in /tmp anybody could have made first).
pub fn private_dir(path: &Path) -> Result<()> {
    ensure_own_dir(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot chmod 700 {}", path.display()))
}

/// Creates `path` if missing; if it exists, checks it is our own directory.
pub fn ensure_own_dir(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(path).with_context(|| format!("cannot create {}", path.display()))
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        Ok(m) if !m.file_type().is_dir() => {
            bail!(
                "{} is not a directory (a symlink?); refusing to use it",
                path.display()
            )
        }
        Ok(m) if m.uid() != my_uid()? => bail!(
            "{} belongs to uid {}, not to us; refusing to write keys into it",
            path.display(),
            m.uid()
        ),
        Ok(_) => Ok(()),
    }
}

/// Reads a file that must be a regular file of ours, not readable by others.
pub fn read_private(path: &Path) -> Result<Option<zeroize::Zeroizing<String>>> {
    let meta = match fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        Ok(m) => m,
    };
    if !meta.file_type().is_file() {
        bail!(
            "{} is not a regular file; refusing to read a key from it",
            path.display()
        );
    }
    if meta.uid() != my_uid()? {
        bail!(
            "{} belongs to uid {}, not to us",
            path.display(),
            meta.uid()
        );
    }
    if meta.mode() & 0o077 != 0 {
        bail!(
            "{} is readable by others (mode {:o}); chmod 600 it",
            path.display(),
            meta.mode() & 0o777
        );
    }
    let text =
        fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Some(zeroize::Zeroizing::new(text)))
}
