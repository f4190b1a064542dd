//! What can go wrong in the IO shell, typed so that callers can tell a busy
//! port from a missing TUN driver.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// An error of the IO shell.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataplaneError {
    /// Reading, writing or creating a file or socket file.
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    /// Creating the TUN device (no /dev/net/tun, no CAP_NET_ADMIN, name taken).
    #[error("cannot create TUN device {name}: {source}")]
    Tun { name: String, source: io::Error },
    /// Binding the UDP socket.
    #[error("cannot bind UDP port {port}: {source}")]
    Bind { port: u16, source: io::Error },
    /// Something else already serves this interface.
    #[error("{what}")]
    InUse { what: String },
    /// The UAPI socket directory is not safe to put a socket in.
    #[error("{}: refusing to use it: {why}", path.display())]
    UnsafeDir { path: PathBuf, why: String },
    /// An external command (`ip`, a hook) failed.
    #[error("`{command}` failed: {detail}")]
    Command { command: String, detail: String },
    /// The protocol state refused a configuration.
    #[error("the device refused the configuration: {0}")]
    Device(#[from] wgmesh_proto::device::DeviceError),
    /// Sending a datagram from the interface's socket failed.
    #[error("cannot send to {to}: {source}")]
    Send { to: SocketAddr, source: io::Error },
    /// A thread could not be started.
    #[error("cannot start a thread: {0}")]
    Thread(io::Error),
}

impl DataplaneError {
    /// The errno a UAPI `set` reports for this error (wireguard-go's
    /// choices in ipc/uapi_unix.go: EADDRINUSE for a port it cannot bind,
    /// EINVAL for a refused value, EIO otherwise).
    pub fn errno(&self) -> i32 {
        const EIO: i32 = 5;
        const EINVAL: i32 = 22;
        const EADDRINUSE: i32 = 98;
        match self {
            DataplaneError::Bind { .. } => EADDRINUSE,
            DataplaneError::Device(_) => EINVAL,
            _ => EIO,
        }
    }
}
