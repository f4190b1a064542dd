//! `/etc/wgmesh/<role>.toml`: the file every long-running role (server,
//! relay, agent) reads its settings from. Keys are the flags' names with
//! `-` spelled `_` (`--metrics-listen` is `metrics_listen`). Precedence:
//! a flag, then its `WGMESH_<FLAG>` variable (both clap's), then the file,
//! then the built-in default; each role merges with `Option::or`.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The directory of the default files; `WGMESH_CONFIG_DIR` replaces it
/// (for tests, and hosts that keep configuration elsewhere).
pub const DEFAULT_DIR: &str = "/etc/wgmesh";
pub const DIR_ENV: &str = "WGMESH_CONFIG_DIR";

/// The default file of `role`: `$WGMESH_CONFIG_DIR/<role>.toml`, else
/// `/etc/wgmesh/<role>.toml`.
pub fn default_path(role: &str) -> PathBuf {
    let dir = std::env::var_os(DIR_ENV).unwrap_or_else(|| DEFAULT_DIR.into());
    Path::new(&dir).join(format!("{role}.toml"))
}

/// The file's settings: `explicit` (from `--config`) must exist; the
/// default file is read only if it does, else every key is unset.
/// An unknown key or a wrongly typed value is an error naming the file,
/// the line and the key (T is `#[serde(deny_unknown_fields)]`).
pub fn load<T: DeserializeOwned + Default>(role: &str, explicit: Option<&Path>) -> Result<T> {
    let path = match explicit {
        Some(p) => p.to_owned(),
        None => {
            let p = default_path(role);
            if !p.exists() {
                return Ok(T::default());
            }
            p
        }
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    parse(&path, &text)
}

/// `text` as T; errors start with `path` (toml's own message gives the
/// line, the column and the key).
pub fn parse<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T> {
    toml::from_str(text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// The effective settings as the file would spell them (what
/// `--print-config` prints).
pub fn render<T: Serialize>(settings: &T) -> Result<String> {
    toml::to_string(settings).context("the configuration as TOML")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, serde::Deserialize, Serialize)]
    #[serde(deny_unknown_fields)]
    struct Demo {
        listen: Option<String>,
        port: Option<u16>,
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let e = parse::<Demo>(Path::new("/x/server.toml"), "listen = \"a\"\nlisen = 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/x/server.toml: "), "{e}");
        assert!(e.contains("line 2"), "{e}");
        assert!(e.contains("lisen"), "{e}");
    }

    #[test]
    fn wrong_type_is_refused() {
        let e = parse::<Demo>(Path::new("f.toml"), "port = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1") && e.contains("port"), "{e}");
    }

    #[test]
    fn render_skips_unset_keys() {
        let d = Demo {
            listen: Some("0.0.0.0:1".into()),
            port: None,
        };
        assert_eq!(render(&d).unwrap(), "listen = \"0.0.0.0:1\"\n");
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        assert!(load::<Demo>("server", Some(Path::new("/nonexistent/x.toml"))).is_err());
    }
}
