//! `wgmesh-go IFACE`: wgmesh as a drop-in for wireguard-go, so that
//! wg-quick(8) can drive it.
//!
//! Where the kernel has no WireGuard, wg-quick's `add_if` runs
//! `"${WG_QUICK_USERSPACE_IMPLEMENTATION:-wireguard-go}" IFACE`: one
//! program path, one argument. It expects the program to return once the
//! interface exists and its UAPI socket answers, and then configures it
//! itself: `wg setconf` (key, port, peers) over the socket, `ip address
//! add`, `ip link set mtu … up`, routes, DNS. So this mode does only what
//! wireguard-go does: create the TUN device, serve the UAPI socket with an
//! empty configuration, and stay up until the interface is deleted
//! (`wg-quick down` does `ip link delete`) or SIGTERM/SIGINT; it never
//! touches addresses or routes.
//!
//! The executable is the one `wgmesh` binary: invoked under the name
//! `wgmesh-go` (a symlink, see docs/engine.md) it takes wireguard-go's
//! command line, `wgmesh-go [-f|--foreground] IFACE`; `wgmesh wg go` is
//! the same under the main binary's name. Without `-f` it starts itself
//! again in the foreground, detached (as wireguard-go forks into the
//! background), waits until that process is up and exits 0. wireguard-go
//! hands the already-created TUN fd to its child; without unsafe code
//! (forbidden here) the child creates it, and the parent waits for it.

use std::ffi::OsString;
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use wgmesh_dataplane::netconf;
use wgmesh_dataplane::{Interface, InterfaceConfig};

use crate::wg_cmd::{self, Stop};

/// The program name under which `wgmesh` behaves as wireguard-go.
pub const PROGRAM: &str = "wgmesh-go";

/// wireguard-go's command line.
#[derive(Debug, Parser)]
#[command(
    name = PROGRAM,
    version,
    about = "wgmesh's userspace WireGuard in wireguard-go's place: creates the \
             interface, serves its UAPI socket, and stays up until the interface \
             is deleted (for WG_QUICK_USERSPACE_IMPLEMENTATION)"
)]
pub struct GoArgs {
    /// Stay in the foreground instead of starting in the background.
    #[arg(short = 'f', long)]
    pub foreground: bool,
    /// The interface to create (1 to 15 of a-z A-Z 0-9 _ = + . -).
    pub iface: String,
}

/// Whether this process was started as `wgmesh-go` (argv[0]'s file name).
pub fn invoked_as_go() -> bool {
    std::env::args_os()
        .next()
        .map(std::path::PathBuf::from)
        .is_some_and(|p| p.file_name().is_some_and(|n| n == PROGRAM))
}

/// `main` for a process started as `wgmesh-go`.
pub fn main() -> ExitCode {
    let args = GoArgs::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{PROGRAM}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `wgmesh-go [-f] IFACE` / `wgmesh wg go [-f] IFACE`.
pub fn run(args: &GoArgs) -> Result<()> {
    let iface = args.iface.as_str();
    wg_cmd::check_iface_name(iface)?;
    let sock = wg_cmd::uapi_path(iface);
    if wgmesh_dataplane::uapi_server::is_up(&sock) {
        bail!("{iface} is up already ({} answers)", sock.display());
    }
    if args.foreground {
        return serve(iface);
    }
    let child: Vec<OsString> = ["wg", "go", "--foreground", iface].map(Into::into).to_vec();
    wg_cmd::start_detached(iface, &child)
}

/// Creates the interface, serves it until it is deleted or a signal
/// comes, and removes its socket and PID file.
fn serve(iface: &str) -> Result<()> {
    let (tx, rx) = wg_cmd::stop_channel()?;
    if netconf::ip(&["link", "show", "dev", iface]).is_ok() {
        bail!("a network interface called {iface} exists already");
    }
    std::fs::create_dir_all(wg_cmd::RUN_DIR)
        .with_context(|| format!("cannot create {}", wg_cmd::RUN_DIR))?;
    let mut config = InterfaceConfig::new(iface);
    // wireguard-go's DefaultMTU; wg-quick sets the real one with `ip link`.
    config.mtu = wg_cmd::DEFAULT_MTU;
    // Down, as wireguard-go creates it: wg-quick's `ip link set mtu … up`.
    config.link_up = false;
    config.on_fatal = Some(wg_cmd::on_fatal(&tx));
    let interface = Interface::start(config)?;
    let pid = wg_cmd::pid_path(iface);
    netconf::write_atomic(&pid, &format!("{}\n", std::process::id()))?;
    eprintln!(
        "{PROGRAM}: {iface} is up (UDP port {}, pid {}); waiting for wg setconf",
        interface.listen_port(),
        std::process::id()
    );
    let why = rx
        .recv()
        .unwrap_or(Stop::Signal(signal_hook::consts::SIGTERM));
    let failed = match why {
        Stop::Signal(sig) => {
            eprintln!("{PROGRAM}: {iface}: signal {sig}, shutting down");
            None
        }
        Stop::Fatal(why) if interface.device_gone() => {
            eprintln!("{PROGRAM}: {iface}: the interface was deleted ({why}); shutting down");
            None
        }
        Stop::Fatal(why) => {
            eprintln!("{PROGRAM}: {iface}: {why}; shutting down");
            Some(why)
        }
    };
    interface.shutdown();
    let _ = std::fs::remove_file(&pid);
    eprintln!("{PROGRAM}: {iface} is down");
    match failed {
        Some(why) => bail!("{iface} failed: {why}"),
        None => Ok(()),
    }
}
