//! Helpers shared by wgmesh's integration tests: lab preconditions, and RAII
//! guards for a network namespace and a foreground wireguard-go in it.

// Each test crate that includes this module uses only some of it.
#![allow(dead_code)]

use std::env;
use std::fs::{self, File};
use std::io::ErrorKind;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Setting this to `1` turns a missing lab precondition into a skip.
pub const SKIP_ENV: &str = "WGMESH_SKIP_LAB";

/// Where wireguard-go puts its UAPI sockets; shared by all namespaces.
const WG_SOCKET_DIR: &str = "/var/run/wireguard";

/// Longest Linux interface name (IFNAMSIZ - 1).
const MAX_IFACE_LEN: usize = 15;

/// How long wireguard-go may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(10);
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Checks what a test needs: root and a working `ip netns` (if `needs_netns`),
/// and each of `tools` on PATH. Returns true if the test can run. If something
/// is missing it panics, or, with `WGMESH_SKIP_LAB=1`, prints a skip line and
/// returns false.
pub fn lab_ready(test: &str, needs_netns: bool, tools: &[&str]) -> bool {
    let mut missing = Vec::new();
    if needs_netns {
        if !is_root() {
            missing.push("root (effective uid 0)".to_owned());
        } else if !netns_works() {
            missing.push("a working `ip netns`".to_owned());
        }
    }
    for tool in tools {
        if !on_path(tool) {
            missing.push(format!("`{tool}` on PATH"));
        }
    }
    if missing.is_empty() {
        return true;
    }
    let missing = missing.join(", ");
    if skip_allowed() {
        println!("SKIP {test}: needs {missing} ({SKIP_ENV}=1)");
        return false;
    }
    panic!(
        "{test} needs {missing}. Run the tests as root on Linux with wireguard-go, \
         wireguard-tools and iproute2 installed (scripts/test.sh installs them), \
         or set {SKIP_ENV}=1 to skip this test."
    );
}

fn skip_allowed() -> bool {
    env::var_os(SKIP_ENV).is_some_and(|v| v == "1")
}

/// Whether the effective uid is 0, from /proc/self/status.
pub fn is_root() -> bool {
    let Ok(status) = fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|uids| uids.split_whitespace().nth(1))
        .is_some_and(|euid| euid == "0")
}

fn netns_works() -> bool {
    Command::new("ip")
        .args(["netns", "list"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether an executable file named `tool` is in a PATH directory.
pub fn on_path(tool: &str) -> bool {
    let Some(path) = env::var_os("PATH") else {
        return false;
    };
    env::split_paths(&path).any(|dir| {
        fs::metadata(dir.join(tool))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// A fresh (network namespace, interface) name pair, unique across this
/// process's threads (a counter) and across processes (the pid). Interface
/// names are machine-wide here because wireguard-go's socket directory is
/// shared by all namespaces.
pub fn unique_names() -> (String, String) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    let netns = format!("wgm-{pid}-{n}");
    let iface = format!("wgm{pid:x}n{n}");
    assert!(
        iface.len() <= MAX_IFACE_LEN,
        "interface name {iface:?} is longer than {MAX_IFACE_LEN} bytes"
    );
    (netns, iface)
}

/// Panics, showing the command's stderr and stdout, unless it succeeded.
pub fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({})\n--- stderr ---\n{}\n--- stdout ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout),
    );
}

/// A network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// `ip netns add NAME`; panics if that fails.
    pub fn add(name: &str) -> Netns {
        let out = Command::new("ip")
            .args(["netns", "add", name])
            .output()
            .expect("run `ip netns add`");
        assert_success(&format!("ip netns add {name}"), &out);
        Netns {
            name: name.to_owned(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip netns exec NAME PROGRAM`, to which the caller adds arguments.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Runs `wg ARGS` in the namespace and returns its output.
    pub fn wg(&self, args: &[&str]) -> Output {
        self.command("wg")
            .args(args)
            .output()
            .expect("run `ip netns exec ... wg`")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        match Command::new("ip")
            .args(["netns", "del", &self.name])
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "cleanup: ip netns del {} failed ({}): {}",
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => eprintln!("cleanup: ip netns del {}: {e}", self.name),
        }
    }
}

/// `wireguard-go -f IFACE` running in a namespace, as our child. On drop it
/// is killed by PID and reaped, and its UAPI socket is removed. It borrows
/// the namespace, so it is always dropped before the namespace is deleted.
#[derive(Debug)]
pub struct WireguardGo<'ns> {
    netns: &'ns Netns,
    iface: String,
    child: Child,
    log: PathBuf,
}

impl<'ns> WireguardGo<'ns> {
    /// Starts wireguard-go for `iface` in `netns`, logging to `log`, and
    /// waits until `wg show IFACE` works. Panics (after cleaning up) if it
    /// exits or is not up within the start timeout.
    pub fn start(netns: &'ns Netns, iface: &str, log: &Path) -> Self {
        assert!(
            iface.len() <= MAX_IFACE_LEN,
            "interface name {iface:?} is longer than {MAX_IFACE_LEN} bytes"
        );
        let log_file = File::create(log).expect("create the wireguard-go log file");
        let child = netns
            .command("wireguard-go")
            .args(["-f", iface])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("clone the log file handle"))
            .stderr(log_file)
            .spawn()
            .expect("spawn `ip netns exec ... wireguard-go -f`");
        // The guard exists from here on, so a panic below still cleans up.
        let mut dev = WireguardGo {
            netns,
            iface: iface.to_owned(),
            child,
            log: log.to_owned(),
        };
        dev.wait_until_up();
        dev
    }

    fn wait_until_up(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll wireguard-go") {
                panic!(
                    "wireguard-go -f {} exited early ({status}); its output:\n{}",
                    self.iface,
                    self.log_text()
                );
            }
            let out = self.netns.wg(&["show", &self.iface]);
            if out.status.success() {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "`wg show {}` still failing {START_TIMEOUT:?} after starting wireguard-go: \
                     {}\nwireguard-go output:\n{}",
                    self.iface,
                    String::from_utf8_lossy(&out.stderr).trim(),
                    self.log_text()
                );
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// What wireguard-go has printed so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_else(|e| format!("(cannot read log: {e})"))
    }

    fn socket_path(&self) -> PathBuf {
        Path::new(WG_SOCKET_DIR).join(format!("{}.sock", self.iface))
    }
}

impl Drop for WireguardGo<'_> {
    fn drop(&mut self) {
        // `ip netns exec` execs wireguard-go, so the child's PID is its PID.
        if let Err(e) = self.child.kill() {
            eprintln!("cleanup: kill wireguard-go ({}): {e}", self.child.id());
        }
        if let Err(e) = self.child.wait() {
            eprintln!("cleanup: wait for wireguard-go ({}): {e}", self.child.id());
        }
        // SIGKILL gives wireguard-go no chance to remove its socket.
        let sock = self.socket_path();
        if let Err(e) = fs::remove_file(&sock)
            && e.kind() != ErrorKind::NotFound
        {
            eprintln!("cleanup: remove {}: {e}", sock.display());
        }
    }
}

/// Writes `text` to `path` with mode 0600: a wg-quick file holds a private
/// key.
pub fn write_secret(path: &Path, text: &str) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    f.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Starts `wgmesh wg up CONF --name IFACE --foreground` in `host` under
/// `label` (with `env`, `NAME=value` pairs passed through env(1), so they
/// reach this wgmesh alone and not every test running in parallel), and
/// waits until its PID file says it is up; panics with the logs if it exits
/// first or takes longer than `timeout`.
pub fn wgmesh_wg_up(
    lab: &mut wgmesh_lab::Lab,
    host: &str,
    label: &str,
    conf: &Path,
    iface: &str,
    env: &[&str],
    timeout: Duration,
) {
    let conf = conf.to_string_lossy().into_owned();
    let mut args: Vec<&str> = Vec::new();
    if !env.is_empty() {
        args.push("env");
        args.extend_from_slice(env);
    }
    let wgmesh = env!("CARGO_BIN_EXE_wgmesh");
    args.extend_from_slice(&[wgmesh, "wg", "up", &conf, "--name", iface, "--foreground"]);
    lab.spawn(host, label, &args).expect("spawn wgmesh");
    let pid_file = PathBuf::from(format!("/run/wgmesh/{iface}.pid"));
    let deadline = Instant::now() + timeout;
    while !pid_file.exists() {
        let proc = lab
            .processes()
            .iter_mut()
            .find(|p| p.label() == label)
            .expect("spawned above");
        if let Some(status) = proc.exited() {
            panic!("wgmesh exited ({status}):\n{}", proc.log_text());
        }
        assert!(
            Instant::now() < deadline,
            "wgmesh not up after {timeout:?}:\n{}",
            lab.logs()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// A fresh PostgreSQL database on the server WGMESH_TEST_POSTGRES names
/// (scripts/test.sh starts one), dropped when this goes, also on panic.
/// A server in a lab namespace reaches it over the Unix socket, which
/// network namespaces do not separate.
pub struct PgDatabase {
    pub admin_url: String,
    pub name: String,
    pub url: String,
}

impl PgDatabase {
    pub fn create(test: &str) -> Option<Self> {
        let Ok(admin_url) = env::var("WGMESH_TEST_POSTGRES") else {
            if env::var("WGMESH_SKIP_POSTGRES").as_deref() == Ok("1") {
                eprintln!("{test}: skipped, WGMESH_SKIP_POSTGRES=1");
                return None;
            }
            panic!(
                "{test}: set WGMESH_TEST_POSTGRES (scripts/test.sh does), or WGMESH_SKIP_POSTGRES=1"
            );
        };
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "wgmesh_t{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        psql(&admin_url, &format!("CREATE DATABASE {name}"));
        let (base, query) = admin_url.split_once('?').unwrap_or((&admin_url, ""));
        let base = &base[..base.rfind('/').expect("a database in the URL")];
        let url = if query.is_empty() {
            format!("{base}/{name}")
        } else {
            format!("{base}/{name}?{query}")
        };
        Some(Self {
            admin_url,
            name,
            url,
        })
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        psql(
            &self.admin_url,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// Runs one SQL statement with psql; panics with its stderr if it fails.
pub fn psql(url: &str, sql: &str) {
    let out = Command::new("psql")
        .args(["-q", "-v", "ON_ERROR_STOP=1", url, "-c", sql])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A UDP socket bound to `bind` inside the network namespace `netns`: a
/// short-lived thread enters the namespace (setns(2) moves only the calling
/// thread) and binds it there; the socket stays in that namespace wherever
/// it is used from. An error if the bind fails (the port is taken).
pub fn udp_socket_in(
    netns: &str,
    bind: std::net::SocketAddr,
) -> std::io::Result<std::net::UdpSocket> {
    let path = format!("/var/run/netns/{netns}");
    thread::spawn(move || {
        let ns = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        std::net::UdpSocket::bind(bind)
    })
    .join()
    .expect("the socket thread")
}

/// Whether process `pid` still runs. A zombie does not count: a daemon
/// whose parent has gone is reaped by init, whenever init gets to it.
pub fn is_running(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, Some("Z" | "X") | None)
}

/// Polls until none of `pids` runs; how long that took, or `None` if one
/// still runs at `timeout`.
pub fn wait_until_gone(pids: &[u32], timeout: Duration) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if !pids.iter().any(|&p| is_running(p)) {
            return Some(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return None;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// `DIR/wgmesh-go`, a symlink to the wgmesh binary under test: started
/// under that name it behaves as wireguard-go (what
/// WG_QUICK_USERSPACE_IMPLEMENTATION names).
pub fn wgmesh_go_link(dir: &Path) -> PathBuf {
    let link = dir.join("wgmesh-go");
    if fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_wgmesh"), &link)
            .unwrap_or_else(|e| panic!("symlink {}: {e}", link.display()));
    }
    link
}

/// A `wgmesh server` process, killed by PID when dropped; its stderr
/// lines are kept for the test to read.
pub struct ServerProcess {
    pub child: Child,
    pub url: String,
    log: Arc<Mutex<Vec<String>>>,
}

#[allow(clippy::unwrap_used)] // test helper: a panic names the line that failed
impl ServerProcess {
    /// `wgmesh server` on a free loopback port, plain HTTP, no STUN or
    /// metrics listener (tests run many at once).
    pub fn start(database: &str) -> Self {
        Self::try_start(database).unwrap_or_else(|log| panic!("server did not start:\n{log}"))
    }

    /// Starts a server; `Err` with its output if it exits instead.
    pub fn try_start(database: &str) -> Result<Self, String> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wgmesh"))
            .args([
                "server",
                "--listen",
                "127.0.0.1:0",
                "--database",
                database,
                "--insecure-http",
                "--stun-listen",
                "off",
                "--metrics-listen",
                "off",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = log.clone();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("wgmesh server: listening on ") {
                    let _ = tx.send(addr.split(' ').next().unwrap().to_owned());
                }
                lines.lock().unwrap().push(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(url) = rx.recv_timeout(Duration::from_millis(50)) {
                return Ok(Self { child, url, log });
            }
            if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                // The reader thread ends with the pipe.
                let t = Instant::now();
                while t.elapsed() < Duration::from_secs(2) {
                    if rx.try_recv().is_err() && Arc::strong_count(&log) == 1 {
                        break;
                    }
                    thread::sleep(Duration::from_millis(10));
                }
                return Err(log.lock().unwrap().join("\n"));
            }
        }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `wgmesh server init`; the admin token it prints (its last line).
#[allow(clippy::unwrap_used)] // test helper: a panic names the line that failed
pub fn server_init(database: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_wgmesh"))
        .args(["server", "init", "--database", database])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_owned()
}
