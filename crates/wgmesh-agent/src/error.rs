//! The agent's error type: what can go wrong with the state directory,
//! the control server, the engine and the host configuration.

use std::path::PathBuf;

/// Why the agent (or one of its parts) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// A file or directory of the state directory.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A state file that exists but cannot be read as what it should hold.
    #[error("{}: {reason}", path.display())]
    BadState { path: PathBuf, reason: String },
    /// Talking to the coordination server.
    #[error(transparent)]
    Client(#[from] crate::client::ClientError),
    /// The engine or the host configuration.
    #[error(transparent)]
    Dataplane(#[from] wgmesh_dataplane::DataplaneError),
    /// A command-line or configuration value.
    #[error("{0}")]
    Config(String),
    /// The status socket.
    #[error("status socket {}: {source}", path.display())]
    Status {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl AgentError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
