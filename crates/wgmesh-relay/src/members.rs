//! Where the relay learns which node keys may use it: the coordination
//! server, polled, or a file, re-read when it changes. Either way the
//! result is published on a watch channel the relay's loop follows.
//!
//! The server contract: `GET {server}/api/v1/relay/members` with
//! `Authorization: Bearer <relay token>` answers 200 with
//! `{"public_keys": ["<base64 key>", …]}`: every enrolled node of the
//! networks this relay serves. The file: one base64 key per line; blank
//! lines and lines starting with `#` are skipped.
//!
//! Until the first successful load the set is empty (everyone refused).
//! A failed load later keeps the last good set and is logged: a server
//! outage must not cut every relayed path.
//!
//! It does not own enforcement: [`wgmesh_proto::relay::RelayCore`] does.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::sync::watch;
use wgmesh_core::key::PublicKey;

/// The membership as last loaded.
pub type Members = Arc<HashSet<PublicKey>>;

/// How often a members file is looked at.
pub const FILE_POLL: Duration = Duration::from_millis(500);

/// The server's answer.
#[derive(Debug, serde::Deserialize)]
pub struct MembersResponse {
    pub public_keys: Vec<PublicKey>,
}

/// Parses a members file's text.
pub fn parse_members_file(text: &str) -> anyhow::Result<HashSet<PublicKey>> {
    let mut keys = HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key: PublicKey = line
            .parse()
            .with_context(|| format!("line {}: not a public key", n + 1))?;
        keys.insert(key);
    }
    Ok(keys)
}

/// Follows `path` until `tx` has no receivers: re-read every
/// [`FILE_POLL`], published when the content changed.
pub async fn follow_file(path: PathBuf, tx: watch::Sender<Members>) {
    let mut last: Option<String> = None;
    loop {
        match tokio::fs::read_to_string(&path).await {
            Ok(text) if last.as_deref() != Some(text.as_str()) => {
                match parse_members_file(&text) {
                    Ok(keys) => {
                        eprintln!(
                            "wgmesh relay: {} members from {}",
                            keys.len(),
                            path.display()
                        );
                        if tx.send(Arc::new(keys)).is_err() {
                            return;
                        }
                    }
                    Err(e) => eprintln!(
                        "wgmesh relay: {}: {e:#}; keeping the previous members",
                        path.display()
                    ),
                }
                last = Some(text);
            }
            Ok(_) => {}
            Err(e) => {
                if last.is_some() {
                    eprintln!(
                        "wgmesh relay: cannot read {}: {e}; keeping the previous members",
                        path.display()
                    );
                    last = None;
                }
            }
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(FILE_POLL).await;
    }
}

/// The coordination server as a membership source.
#[derive(Debug, Clone)]
pub struct ServerSource {
    http: reqwest::Client,
    url: reqwest::Url,
    token: zeroize::Zeroizing<String>,
}

impl ServerSource {
    /// `server` is the base URL (`https://host:port`); `ca_file` adds a
    /// private CA to the system's roots.
    pub fn new(server: &str, token: String, ca_file: Option<&Path>) -> anyhow::Result<Self> {
        let base =
            reqwest::Url::parse(server).with_context(|| format!("{server:?} is not a URL"))?;
        let url = base
            .join("/api/v1/relay/members")
            .context("building the members URL")?;
        let token = zeroize::Zeroizing::new(token.trim().to_owned());
        if token.is_empty() {
            bail!("the relay token is empty");
        }
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5));
        if let Some(path) = ca_file {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read the CA file {}", path.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("bad PEM in {}", path.display()))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(Self {
            http: builder.build().context("building the HTTP client")?,
            url,
            token,
        })
    }

    /// One fetch of the membership.
    pub async fn fetch(&self) -> anyhow::Result<HashSet<PublicKey>> {
        let resp = self
            .http
            .get(self.url.clone())
            .bearer_auth(self.token.as_str())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .with_context(|| format!("GET {}", self.url))?;
        let status = resp.status();
        if !status.is_success() {
            bail!("GET {}: {status}", self.url);
        }
        let body: MembersResponse = resp
            .json()
            .await
            .with_context(|| format!("GET {}: not the members JSON", self.url))?;
        Ok(body.public_keys.into_iter().collect())
    }

    /// Polls every `interval` until `tx` has no receivers; publishes
    /// when the set changed.
    pub async fn follow(self, interval: Duration, tx: watch::Sender<Members>) {
        let mut last: Option<HashSet<PublicKey>> = None;
        let mut failing = false;
        loop {
            match self.fetch().await {
                Ok(keys) => {
                    if failing {
                        eprintln!("wgmesh relay: members from the server again");
                        failing = false;
                    }
                    if last.as_ref() != Some(&keys) {
                        eprintln!("wgmesh relay: {} members from the server", keys.len());
                        if tx.send(Arc::new(keys.clone())).is_err() {
                            return;
                        }
                        last = Some(keys);
                    }
                }
                Err(e) => {
                    if !failing {
                        eprintln!("wgmesh relay: {e:#}; keeping the previous members");
                        failing = true;
                    }
                }
            }
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(interval).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_file_lines() {
        let k = wgmesh_core::key::PrivateKey::from_random([1; 32]).public_key();
        let text = format!("# relay members\n\n  {k}  \n{k}\n");
        let keys = parse_members_file(&text).unwrap();
        assert_eq!(keys.len(), 1);
        assert!(keys.contains(&k));
        let err = parse_members_file(&format!("{k}\nnot-a-key\n")).unwrap_err();
        assert!(format!("{err:#}").contains("line 2"), "{err:#}");
    }

    #[test]
    fn server_json() {
        let k = wgmesh_core::key::PrivateKey::from_random([1; 32]).public_key();
        let r: MembersResponse =
            serde_json::from_str(&format!(r#"{{"public_keys": ["{k}"]}}"#)).unwrap();
        assert_eq!(r.public_keys, vec![k]);
        assert!(serde_json::from_str::<MembersResponse>(r#"{"public_keys": ["x"]}"#).is_err());
    }
}
