//! The status socket: `STATE_DIR/status.sock` (mode 0600, in the 0700
//! state directory), where the running agent answers every connection
//! with one JSON [`Status`] and closes it; and [`query`], what
//! `wgmesh status` uses to read it.
//!
//! What a status holds is built by [`crate::run`] from its own view (map,
//! server connection) and the device's snapshot (endpoints in use,
//! handshakes, byte counts); rendering it for a person is the CLI's.

use std::io::Read as _;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt as _;
use wgmesh_core::control::EndpointReport;

use crate::AgentError;

/// What the agent reports about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// This node, once it has a map.
    pub node: Option<NodeStatus>,
    pub interface: String,
    pub listen_port: u16,
    /// The coordination server's URL.
    pub server: String,
    /// Whether the map stream is open now.
    pub connected: bool,
    /// Why the last attempt to reach the server failed, if it did.
    pub last_error: Option<String>,
    pub map_version: Option<u64>,
    /// What the agent last reported to the server.
    pub endpoints: EndpointReport,
    pub peers: Vec<PeerStatus>,
    /// Path finding (disco and the relay), for metrics.
    #[serde(default)]
    pub paths: PathSummary,
}

/// How the managed peers' traffic goes, and how finding paths went.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathSummary {
    pub direct: u64,
    pub relayed: u64,
    pub unreachable: u64,
    /// Disco pings sent (hole-punch attempts and heartbeats).
    pub pings_sent: u64,
    /// Times a peer's traffic went direct (from the relay or from nothing).
    pub direct_established: u64,
    /// For each peer that went direct: milliseconds from when the map
    /// gave it to when its direct path was confirmed.
    pub time_to_direct_ms: Vec<u64>,
    /// The relay in use, if any, and whether it registered this node.
    pub relay: Option<String>,
    pub relay_registered: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub name: String,
    pub network: String,
    pub public_key: String,
    pub address: IpNet,
    pub hub: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub name: String,
    pub public_key: String,
    pub address: IpAddr,
    /// `direct`, or `via NAME` (the hub's name, or its key if unknown).
    pub route: String,
    /// The endpoint WireGuard uses now (learned by roaming or from the map).
    pub endpoint: Option<SocketAddr>,
    /// Unix seconds of the last handshake.
    pub last_handshake: Option<u64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// Builds a fresh status for each connection.
pub type StatusFn = Arc<dyn Fn() -> Status + Send + Sync>;

/// Binds the socket at `path` (replacing a stale one no agent answers on)
/// and serves it until the task is dropped.
pub async fn serve(path: PathBuf, status: StatusFn) -> Result<(), AgentError> {
    let err = |error| AgentError::Status {
        path: path.clone(),
        error,
    };
    if let Ok(meta) = std::fs::symlink_metadata(&path) {
        if !meta.file_type().is_socket() {
            return Err(err(std::io::Error::other("exists and is not a socket")));
        }
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            return Err(err(std::io::Error::other(
                "another agent answers on it (same --state-dir?)",
            )));
        }
        std::fs::remove_file(&path).map_err(err)?;
    }
    let listener = tokio::net::UnixListener::bind(&path).map_err(err)?;
    // The directory is 0700 already; the socket itself as well, in case it is not.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    loop {
        let (mut conn, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("wgmesh: status socket: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let status = Arc::clone(&status);
        tokio::spawn(async move {
            let mut json = serde_json::to_vec(&status()).expect("invariant: a status serialises");
            json.push(b'\n');
            let _ = tokio::time::timeout(Duration::from_secs(5), conn.write_all(&json)).await;
        });
    }
}

/// Reads the running agent's status from the socket in `state_dir`.
pub fn query(state_dir: &Path) -> Result<Status, AgentError> {
    let path = state_dir.join(crate::state::STATUS_SOCKET);
    let err = |error| AgentError::Status {
        path: path.clone(),
        error,
    };
    let mut conn = std::os::unix::net::UnixStream::connect(&path).map_err(|e| {
        err(std::io::Error::new(
            e.kind(),
            format!("{e} (is `wgmesh up` running with this --state-dir?)"),
        ))
    })?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(err)?;
    let mut buf = Vec::new();
    conn.read_to_end(&mut buf).map_err(err)?;
    serde_json::from_slice(&buf).map_err(|e| err(std::io::Error::other(e.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    fn sample() -> Status {
        Status {
            node: Some(NodeStatus {
                name: "nyc".into(),
                network: "net".into(),
                public_key: "k".into(),
                address: "100.64.0.1/10".parse().unwrap(),
                hub: false,
            }),
            interface: "wgmesh0".into(),
            listen_port: 51820,
            server: "http://192.0.2.1:8080".into(),
            connected: true,
            last_error: None,
            map_version: Some(4),
            endpoints: EndpointReport::default(),
            peers: vec![PeerStatus {
                name: "lax".into(),
                public_key: "p".into(),
                address: "100.64.0.2".parse().unwrap(),
                route: "direct".into(),
                endpoint: Some("192.0.2.2:51820".parse().unwrap()),
                last_handshake: Some(1_700_000_000),
                rx_bytes: 1,
                tx_bytes: 2,
            }],
            paths: PathSummary::default(),
        }
    }

    #[tokio::test]
    async fn serves_json_on_a_0600_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(crate::state::STATUS_SOCKET);
        let server = tokio::spawn(serve(path.clone(), Arc::new(sample)));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !path.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "socket never appeared"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        let dirp = dir.path().to_owned();
        let got = tokio::task::spawn_blocking(move || query(&dirp))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, sample());
        server.abort();
        // A stale socket (nobody answers) is replaced.
        let _ = server.await;
        let again = tokio::spawn(serve(path.clone(), Arc::new(sample)));
        let dirp = dir.path().to_owned();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let d = dirp.clone();
            if tokio::task::spawn_blocking(move || query(&d))
                .await
                .unwrap()
                .is_ok()
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no answer after restart"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        again.abort();
    }
}
