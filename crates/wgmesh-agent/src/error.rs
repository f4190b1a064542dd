//! The agent's error type: what can go wrong with the state directory,
//! the control server, the engine and the host configuration.

use std::path::PathBuf;

/// Why the agent (or one of its parts) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// A file or directory of the state directory. (The IO error is in
    /// the message, not a `source`: shown once however it is printed.)
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
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
    /// The server refused this node for good: removed by an admin, its
    /// credential expired, or the setup key refused. Restarting as is
    /// cannot help (the binary exits with a code of its own for it).
    #[error("refused by the server: {0}")]
    Refused(String),
    /// The status socket.
    #[error("status socket {}: {error}", path.display())]
    Status {
        path: PathBuf,
        error: std::io::Error,
    },
}

impl AgentError {
    pub(crate) fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            error,
        }
    }
}
