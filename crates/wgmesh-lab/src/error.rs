use std::path::PathBuf;

/// What went wrong while building or driving the lab.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LabError {
    /// A command (ip, nft, tc, …) exited non-zero.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    /// A command could not be started at all.
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The lab needs root and network namespaces.
    #[error("the lab needs root and network namespaces: {0}")]
    Unavailable(String),
    /// A topology that cannot be built as described.
    #[error("bad topology: {0}")]
    Topology(String),
    /// A condition polled for did not come true before its deadline.
    #[error("timed out: {0}")]
    Timeout(String),
}
