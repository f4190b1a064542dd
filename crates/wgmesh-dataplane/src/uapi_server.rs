//! The UAPI socket, `/var/run/wireguard/IFACE.sock`: where `wg(8)` finds a
//! userspace interface (https://www.wireguard.com/xplatform/).
//!
//! This module owns the socket file and the connections: it creates the
//! socket as wireguard-go does (directory 0755, socket 0700, so only root
//! talks to it), refuses to take over a socket that answers, removes a
//! stale one (nobody listening: ECONNREFUSED) and nothing else, serves each
//! connection on its own thread, and removes the socket when stopped. What
//! a request means is the [`UapiHandler`]'s business; this module only
//! frames bytes.

use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{
    DirBuilderExt as _, FileTypeExt as _, MetadataExt as _, PermissionsExt as _,
};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, UnixAddr, bind, listen, setsockopt, socket, sockopt,
};
use nix::sys::stat::{Mode, fchmod};
use nix::sys::time::{TimeVal, TimeValLike as _};
use wgmesh_proto::uapi::MAX_REQUEST_LEN;
use zeroize::{Zeroize as _, Zeroizing};

use crate::DataplaneError;

/// Where wg(8) looks for userspace interfaces.
pub const SOCKET_DIR: &str = "/var/run/wireguard";

/// errno for a request over [`MAX_REQUEST_LEN`] (a backstop: the parser
/// already refuses one that long).
const EMSGSIZE: i32 = 90;

/// How long the accept thread blocks before looking at its stop flag.
/// Stopping must not depend on the socket path still reaching the
/// listener (someone may have removed the file), so the thread wakes by
/// itself: SO_RCVTIMEO bounds accept(2) on Linux (socket(7)).
const ACCEPT_POLL: Duration = Duration::from_millis(100);

/// What the bytes read so far on a connection amount to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// Not a whole request yet.
    NeedMore,
    /// A whole request of `consumed` bytes, answered with `reply`.
    Reply { reply: String, consumed: usize },
    /// A request that cannot be framed: answer `reply` and close, since
    /// where the next request would start is unknown.
    Fail { reply: String },
}

/// Turns requests into replies (see `Interface`'s implementation).
pub trait UapiHandler: Send + Sync + 'static {
    fn handle(&self, buf: &[u8]) -> Handled;
    /// The reply to a request refused with (positive) `errno`.
    fn errno_reply(&self, errno: i32) -> String;
}

/// The path of `iface`'s socket in `dir`.
pub fn socket_path(dir: &Path, iface: &str) -> PathBuf {
    dir.join(format!("{iface}.sock"))
}

/// A listening UAPI socket and its accept thread.
#[derive(Debug)]
pub struct UapiServer {
    path: PathBuf,
    /// The socket file's inode, so that stopping never removes a socket
    /// someone else put at the same path since.
    ino: u64,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UapiServer {
    /// Creates `dir/iface.sock` and starts answering on it.
    pub fn start(
        dir: &Path,
        iface: &str,
        handler: Arc<dyn UapiHandler>,
    ) -> Result<Self, DataplaneError> {
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| DataplaneError::Io { path, source }
        };
        prepare_dir(dir)?;
        let path = socket_path(dir, iface);
        remove_if_stale(&path)?;
        let listener = bind_private(&path).map_err(io_err(&path))?;
        let ino = std::fs::metadata(&path).map_err(io_err(&path))?.ino();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name(format!("uapi-{iface}"))
                .spawn(move || accept_loop(&listener, &stop, &handler))
                .map_err(io_err(&path))?
        };
        Ok(Self {
            path,
            ino,
            stop,
            thread: Some(thread),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting and removes the socket file (if it is still ours).
    /// Connections being served end with the process or their client.
    /// Returns within about [`ACCEPT_POLL`], whether or not the socket
    /// file is still there.
    pub fn stop(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.stop.store(true, Ordering::Release);
        // The file first: from now on nobody finds the interface (and a
        // new one of the same name may come up at once, as `wg-quick up`
        // right after `down` does), without waiting for the accept
        // thread's next look at its stop flag.
        if std::fs::metadata(&self.path).is_ok_and(|m| m.ino() == self.ino) {
            let _ = std::fs::remove_file(&self.path);
        }
        let _ = thread.join();
    }
}

impl Drop for UapiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What connecting to a UAPI socket path says about it.
#[derive(Debug)]
pub enum Probe {
    /// Something accepts connections there: the interface is up.
    Answers,
    /// No such file.
    Absent,
    /// A socket file nobody listens on (ECONNREFUSED): left from a crash.
    Stale,
    /// Connecting failed otherwise (EACCES, ENOTSOCK, ...): unknown.
    Failed(io::Error),
}

/// Whether an interface is up, by connecting to its UAPI socket and
/// closing at once. A `get=1` would tell the same, but its reply carries
/// the private key (wireguard.com/xplatform): a probe should not pull it.
pub fn probe(path: &Path) -> Probe {
    match UnixStream::connect(path) {
        Ok(_) => Probe::Answers,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Probe::Absent,
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Probe::Stale,
        Err(e) => Probe::Failed(e),
    }
}

/// [`probe`] says [`Probe::Answers`].
pub fn is_up(path: &Path) -> bool {
    matches!(probe(path), Probe::Answers)
}

/// Creates the socket directory if need be, 0755 as wireguard-go's
/// `os.MkdirAll(socketDirectory, 0755)`, and refuses one that others could
/// plant a socket in: it must belong to root or to us and not be group- or
/// world-writable.
fn prepare_dir(dir: &Path) -> Result<(), DataplaneError> {
    let io_err = |source| DataplaneError::Io {
        path: dir.to_owned(),
        source,
    };
    if !dir.exists() {
        match std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
        {
            // mkdir(2) masks the mode with the umask: set it for real.
            Ok(()) => std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
                .map_err(io_err)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(e)),
        }
    }
    let meta = std::fs::metadata(dir).map_err(io_err)?;
    let why = if !meta.is_dir() {
        Some("not a directory".to_owned())
    } else if meta.uid() != 0 && meta.uid() != nix::unistd::geteuid().as_raw() {
        Some(format!("owned by uid {}, not root or us", meta.uid()))
    } else if meta.mode() & 0o022 != 0 {
        Some(format!(
            "mode {:o} lets others write to it",
            meta.mode() & 0o7777
        ))
    } else {
        None
    };
    match why {
        Some(why) => Err(DataplaneError::UnsafeDir {
            path: dir.to_owned(),
            why,
        }),
        None => Ok(()),
    }
}

/// Binds a listening socket at `path` that only its owner can connect to
/// (connect(2) on a Unix socket needs write permission on its file, unix(7)).
///
/// wireguard-go sets a process-wide umask of 077 around its bind, which
/// races every other thread creating files meanwhile. Instead: Linux gives
/// the socket file the mode of the socket's inode less the umask
/// (net/unix/af_unix.c, `unix_bind`), so an fchmod(2) of the socket to
/// 0700 before bind(2) makes the file 0700 from its first moment; the
/// chmod after is for a umask that took owner bits away.
fn bind_private(path: &Path) -> io::Result<UnixListener> {
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    fchmod(&fd, Mode::from_bits_truncate(0o700))?;
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &UnixAddr::new(path)?)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
    listen(&fd, Backlog::MAXCONN)?;
    // accept(2) gives up after ACCEPT_POLL so that `stop` never waits on it.
    let poll = TimeVal::microseconds(
        i64::try_from(ACCEPT_POLL.as_micros()).expect("ACCEPT_POLL is small"),
    );
    setsockopt(&fd, sockopt::ReceiveTimeout, &poll)?;
    Ok(UnixListener::from(fd))
}

/// A socket file that nobody listens on (ECONNREFUSED) is left from a
/// crash: remove it. One that answers belongs to a running interface, and
/// one we cannot tell about (EACCES, ...) may: refuse both.
fn remove_if_stale(path: &Path) -> Result<(), DataplaneError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(DataplaneError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    if !meta.file_type().is_socket() {
        return Err(DataplaneError::InUse {
            what: format!("{} exists and is not a socket", path.display()),
        });
    }
    match probe(path) {
        Probe::Answers => Err(DataplaneError::InUse {
            what: format!(
                "{} answers: the interface is served by another process",
                path.display()
            ),
        }),
        // Gone since we looked: nothing to remove.
        Probe::Absent => Ok(()),
        Probe::Stale => std::fs::remove_file(path).map_err(|source| DataplaneError::Io {
            path: path.to_owned(),
            source,
        }),
        Probe::Failed(e) => Err(DataplaneError::InUse {
            what: format!(
                "{} exists and connecting to it failed ({e}); not removing it",
                path.display()
            ),
        }),
    }
}

fn accept_loop(listener: &UnixListener, stop: &AtomicBool, handler: &Arc<dyn UapiHandler>) {
    while !stop.load(Ordering::Acquire) {
        let conn = match listener.accept() {
            // A connection does not inherit the listener's SO_RCVTIMEO.
            Ok((c, _)) => c,
            // ACCEPT_POLL passed without a connection.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => {
                eprintln!("uapi: accept: {e}");
                // EMFILE and friends: do not spin.
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let handler = Arc::clone(handler);
        let spawned = std::thread::Builder::new()
            .name("uapi-conn".into())
            .spawn(move || {
                if let Err(e) = serve(conn, handler.as_ref()) {
                    // A client that went away mid-reply is not news.
                    if e.kind() != io::ErrorKind::BrokenPipe {
                        eprintln!("uapi: connection: {e}");
                    }
                }
            });
        if let Err(e) = spawned {
            eprintln!("uapi: cannot start a connection thread: {e}");
        }
    }
}

/// Serves requests on one connection until the client closes it.
///
/// Requests and replies can hold keys (`private_key=` in a `set` and in
/// every `get` reply), so every buffer here is wiped when done with, and
/// grown by hand so that no reallocation leaves a copy behind.
fn serve(mut conn: UnixStream, handler: &dyn UapiHandler) -> io::Result<()> {
    let mut buf = Zeroizing::new(Vec::<u8>::new());
    let mut chunk = Zeroizing::new(vec![0u8; 64 << 10]);
    loop {
        // Answer every whole request already buffered.
        while !buf.is_empty() {
            match handler.handle(&buf) {
                Handled::NeedMore => break,
                Handled::Reply { reply, consumed } => {
                    let reply = Zeroizing::new(reply);
                    conn.write_all(reply.as_bytes())?;
                    let consumed = consumed.min(buf.len());
                    buf.copy_within(consumed.., 0);
                    let left = buf.len() - consumed;
                    buf[left..].zeroize();
                    buf.truncate(left);
                }
                Handled::Fail { reply } => {
                    conn.write_all(reply.as_bytes())?;
                    return Ok(());
                }
            }
        }
        if buf.len() > MAX_REQUEST_LEN {
            conn.write_all(handler.errno_reply(EMSGSIZE).as_bytes())?;
            return Ok(());
        }
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        if buf.capacity() - buf.len() < n {
            let mut bigger = Vec::with_capacity((buf.len() + n).max(2 * buf.capacity()));
            bigger.extend_from_slice(&buf);
            buf = Zeroizing::new(bigger);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Sends `request` to the UAPI socket at `path` and returns the reply, up
/// to and including its `errno=N` line and the empty line after it. For
/// waiting until an interface answers, and for tests.
pub fn request(path: &Path, request: &[u8], timeout: Duration) -> io::Result<String> {
    let deadline = Instant::now() + timeout;
    let mut conn = UnixStream::connect(path)?;
    conn.set_write_timeout(Some(timeout))?;
    conn.write_all(request)?;
    let mut reply = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no complete UAPI reply",
            ));
        }
        conn.set_read_timeout(Some(left))?;
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "UAPI connection closed after {:?}",
                    String::from_utf8_lossy(&reply)
                ),
            ));
        }
        reply.extend_from_slice(&chunk[..n]);
        if reply_complete(&reply) {
            return String::from_utf8(reply)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e));
        }
    }
}

/// A reply ends with its `errno=` line and an empty line.
fn reply_complete(reply: &[u8]) -> bool {
    if !reply.ends_with(b"\n\n") {
        return false;
    }
    let body = &reply[..reply.len() - 1];
    let last_line_start = body[..body.len() - 1]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    body[last_line_start..].starts_with(b"errno=")
}

/// The `errno=` value of a reply; `None` if it has none.
pub fn reply_errno(reply: &str) -> Option<i32> {
    reply
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("errno="))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers `ping\n` with `pong\nerrno=0\n\n`, refuses anything that
    /// does not start with `p`.
    #[derive(Debug)]
    struct Echo;

    impl UapiHandler for Echo {
        fn handle(&self, buf: &[u8]) -> Handled {
            if !buf.starts_with(b"p") {
                return Handled::Fail {
                    reply: self.errno_reply(22),
                };
            }
            match buf.iter().position(|&b| b == b'\n') {
                None => Handled::NeedMore,
                Some(i) => Handled::Reply {
                    reply: "pong\nerrno=0\n\n".into(),
                    consumed: i + 1,
                },
            }
        }
        fn errno_reply(&self, errno: i32) -> String {
            format!("errno={errno}\n\n")
        }
    }

    const T: Duration = Duration::from_secs(5);

    #[test]
    fn serves_replies_refuses_garbage_and_keeps_serving() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut server = UapiServer::start(dir.path(), "wgt0", Arc::new(Echo)).expect("start");
        let path = server.path().to_owned();
        assert_eq!(path, dir.path().join("wgt0.sock"));
        let mode = std::fs::metadata(&path)
            .expect("socket")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "only the owner may talk to it");

        let reply = request(&path, b"ping\n", T).expect("reply");
        assert_eq!(reply, "pong\nerrno=0\n\n");
        assert_eq!(reply_errno(&reply), Some(0));
        // A request split over two writes is still one request.
        let mut c = UnixStream::connect(&path).expect("connect");
        c.write_all(b"pi").expect("write");
        std::thread::sleep(Duration::from_millis(20));
        c.write_all(b"ng\nping\n").expect("write");
        c.set_read_timeout(Some(T)).expect("timeout");
        let mut got = Vec::new();
        let mut chunk = [0u8; 256];
        while got.len() < 2 * "pong\nerrno=0\n\n".len() {
            let n = c.read(&mut chunk).expect("read");
            assert_ne!(n, 0, "closed early");
            got.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(got, b"pong\nerrno=0\n\npong\nerrno=0\n\n");

        let reply = request(&path, b"garbage\n", T).expect("errno reply");
        assert_eq!(reply_errno(&reply), Some(22));
        // The server is still there for the next client.
        assert_eq!(
            reply_errno(&request(&path, b"ping\n", T).expect("reply")),
            Some(0)
        );

        server.stop();
        assert!(!path.exists(), "socket removed on stop");
    }

    #[test]
    fn refuses_a_live_socket_and_replaces_a_stale_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = UapiServer::start(dir.path(), "wgt1", Arc::new(Echo)).expect("start");
        let err = UapiServer::start(dir.path(), "wgt1", Arc::new(Echo)).expect_err("in use");
        assert!(matches!(err, DataplaneError::InUse { .. }), "{err}");
        drop(first);

        // A socket left by a crash: bound, then its listener gone.
        let path = socket_path(dir.path(), "wgt1");
        drop(UnixListener::bind(&path).expect("bind"));
        assert!(path.exists());
        let server = UapiServer::start(dir.path(), "wgt1", Arc::new(Echo)).expect("takes over");
        assert_eq!(
            reply_errno(&request(&path, b"ping\n", T).expect("reply")),
            Some(0)
        );
        drop(server);

        std::fs::write(&path, b"not a socket").expect("write");
        let err = UapiServer::start(dir.path(), "wgt1", Arc::new(Echo)).expect_err("a file");
        assert!(matches!(err, DataplaneError::InUse { .. }), "{err}");
        assert!(path.exists(), "a regular file is never removed");
    }

    /// The socket file removed from under a running server (an admin's
    /// `rm`, a racing cleanup): stopping still returns promptly.
    #[test]
    fn stop_returns_when_the_socket_file_is_gone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut server = UapiServer::start(dir.path(), "wgt2", Arc::new(Echo)).expect("start");
        std::fs::remove_file(server.path()).expect("rm");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            server.stop();
            let _ = tx.send(());
        });
        rx.recv_timeout(T).expect("stop returned");
    }

    /// Only ECONNREFUSED means stale. A socket file that refuses us
    /// otherwise (here a datagram socket: EPROTOTYPE) is left alone.
    #[test]
    fn only_a_refusing_socket_is_stale() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = socket_path(dir.path(), "wgt3");
        let _dgram = std::os::unix::net::UnixDatagram::bind(&path).expect("bind");
        assert!(matches!(probe(&path), Probe::Failed(_)));
        let err = UapiServer::start(dir.path(), "wgt3", Arc::new(Echo)).expect_err("unknown");
        assert!(matches!(err, DataplaneError::InUse { .. }), "{err}");
        assert!(path.exists(), "not removed");
        assert!(matches!(
            probe(&dir.path().join("none.sock")),
            Probe::Absent
        ));
    }

    #[test]
    fn the_directory_is_made_0755_and_must_be_ours_and_private() {
        let top = tempfile::tempdir().expect("tempdir");
        let dir = top.path().join("run").join("wireguard");
        let mut server = UapiServer::start(&dir, "wgt4", Arc::new(Echo)).expect("start");
        let mode = std::fs::metadata(&dir).expect("dir").permissions().mode();
        assert_eq!(mode & 0o7777, 0o755);
        assert!(is_up(server.path()));
        server.stop();
        assert!(!is_up(&socket_path(&dir, "wgt4")));

        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let err = UapiServer::start(&dir, "wgt4", Arc::new(Echo)).expect_err("world-writable");
        assert!(matches!(err, DataplaneError::UnsafeDir { .. }), "{err}");
        assert!(!socket_path(&dir, "wgt4").exists());
    }

    #[test]
    fn reply_framing() {
        assert!(reply_complete(b"errno=0\n\n"));
        assert!(reply_complete(b"private_key=00\nerrno=0\n\n"));
        assert!(!reply_complete(b"errno=0\n"));
        assert!(!reply_complete(b"public_key=ab\n\n"));
    }
}
