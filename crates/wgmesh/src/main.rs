//! `wgmesh`: the command line. It parses arguments, does the file IO and
//! randomness that wgmesh-core leaves to its caller, and prints results.
//! Everything with logic in it lives in the library crates.

mod admin_cmd;
mod agent_cmd;
mod conf_cmd;
mod config_file;
mod demo_cmd;
mod go_cmd;
mod key_cmd;
mod lab_cmd;
mod listen_flag;
mod plan_cmd;
mod relay_cmd;
mod secret_file;
mod server_cmd;
mod wg_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "wgmesh",
    version,
    about = "Self-hosted WireGuard mesh networking"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a new private key (like `wg genkey`).
    Genkey {
        /// Write the key to FILE (mode 0600) instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Replace FILE if it exists.
        #[arg(long, requires = "out")]
        force: bool,
    },
    /// Read a private key on stdin, print its public key (like `wg pubkey`).
    Pubkey,
    /// Print a new preshared key (like `wg genpsk`).
    Genpsk,
    /// Check and convert wg-quick files.
    #[command(subcommand)]
    Conf(ConfCommand),
    /// Plan a mesh from a mesh file and render every node's configuration.
    #[command(subcommand)]
    Plan(PlanCommand),
    /// The lab: network namespaces, NAT routers and links on this machine (root).
    #[command(subcommand)]
    Lab(LabCommand),
    /// A userspace WireGuard interface from a wg-quick file (root).
    #[command(subcommand)]
    Wg(WgCommand),
    /// Join a mesh and keep this node in it: the agent (root; foreground,
    /// until SIGTERM/SIGINT).
    Up(agent_cmd::UpArgs),
    /// What the running agent reports: the node, the server, every peer.
    Status(agent_cmd::StatusArgs),
    /// The coordination server: `wgmesh server init --database URL`, then
    /// `wgmesh server --listen ADDR:PORT --database URL --tls-cert F --tls-key F`.
    Server(server_cmd::ServerArgs),
    /// Administer a coordination server: networks, nodes, setup keys,
    /// policy, audit log (WGMESH_SERVER, WGMESH_TOKEN).
    Admin(admin_cmd::AdminArgs),
    /// The relay: forwards WireGuard packets between nodes that cannot
    /// reach each other directly (UDP and WebSocket/TLS), answers STUN.
    Relay(relay_cmd::RelayArgs),
    /// The seed mesh, live, in network namespaces (root): server, agents,
    /// NAT routers; `--check` to wait for it and exit 0 or 1.
    Demo(demo_cmd::DemoArgs),
}

#[derive(Debug, Subcommand)]
enum WgCommand {
    /// Bring up the interface FILE.conf describes, as wg-quick up does.
    Up {
        file: PathBuf,
        /// The interface name (default: FILE's name without .conf).
        #[arg(long)]
        name: Option<String>,
        /// Serve in this process until SIGTERM (for systemd) instead of
        /// starting in the background.
        #[arg(long)]
        foreground: bool,
    },
    /// Take the interface down: PreDown, routes, TUN device, PostDown.
    Down { iface: String },
    /// The running interface's counters: packets, handshakes, cookie
    /// replies, and dropped packets by reason.
    Stats {
        iface: String,
        /// One JSON object instead of `name value` lines.
        #[arg(long)]
        json: bool,
    },
    /// Create IFACE with an empty configuration and serve its UAPI socket
    /// until it is deleted, as wireguard-go does (what `wgmesh-go IFACE`
    /// runs; for wg-quick's WG_QUICK_USERSPACE_IMPLEMENTATION).
    Go(go_cmd::GoArgs),
}

#[derive(Debug, Subcommand)]
enum LabCommand {
    /// Build the topology in FILE.toml and leave it running.
    Up { file: PathBuf },
    /// Run a command inside a lab host.
    Exec {
        /// The lab (when several are up).
        #[arg(long)]
        lab: Option<String>,
        host: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Take a lab down: its processes, namespaces and record.
    Down { lab: Option<String> },
    /// Remove what crashed runs left behind (only the lab's own namespaces).
    Clean {
        /// Also take down labs that are still in use.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ConfCommand {
    /// Check a wg-quick file; every problem is reported with its line.
    Check { file: PathBuf },
    /// Print the part of a wg-quick file that `wg setconf` reads (like `wg-quick strip`).
    Strip { file: PathBuf },
}

#[derive(Debug, Subcommand)]
enum PlanCommand {
    /// Write DIR/<node>.conf and DIR/<node>.setup.sh for every node, and
    /// keys for the nodes that have none yet in DIR/keys/.
    Render {
        mesh: PathBuf,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Load each private key from /etc/wireguard/<node>.key in PostUp
        /// instead of writing it into the .conf file.
        #[arg(long)]
        key_files: bool,
    },
    /// Check that the mesh file is valid and routes, without writing anything.
    Check {
        mesh: PathBuf,
        /// Keep the addresses nodes got in an earlier render into DIR.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Print the plan: every node, its peers and its routes.
    Show {
        mesh: PathBuf,
        /// Keep the addresses nodes got in an earlier render into DIR.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
}

fn main() -> ExitCode {
    // Started as `wgmesh-go` (a symlink): wireguard-go's command line, for
    // wg-quick's WG_QUICK_USERSPACE_IMPLEMENTATION.
    if go_cmd::invoked_as_go() {
        return go_cmd::main();
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => {
            return demo_cmd::run(args).unwrap_or_else(|e| {
                eprintln!("wgmesh: {e:#}");
                ExitCode::FAILURE
            });
        }
        Command::Lab(LabCommand::Exec { lab, host, command }) => {
            // Exits with the command's own status.
            return lab_cmd::exec(lab.as_deref(), &host, &command).unwrap_or_else(|e| {
                eprintln!("wgmesh: {e:#}");
                ExitCode::FAILURE
            });
        }
        Command::Lab(LabCommand::Up { file }) => lab_cmd::up(&file),
        Command::Lab(LabCommand::Down { lab }) => lab_cmd::down(lab.as_deref()),
        Command::Lab(LabCommand::Clean { all }) => lab_cmd::clean(all),
        Command::Wg(WgCommand::Up {
            file,
            name,
            foreground,
        }) => wg_cmd::up(&file, name.as_deref(), foreground),
        Command::Wg(WgCommand::Down { iface }) => wg_cmd::down(&iface),
        Command::Wg(WgCommand::Stats { iface, json }) => wg_cmd::stats(&iface, json),
        Command::Wg(WgCommand::Go(args)) => go_cmd::run(&args),
        Command::Up(args) => agent_cmd::up(args),
        Command::Status(args) => agent_cmd::status(args),
        Command::Server(args) => server_cmd::run(args),
        Command::Admin(args) => admin_cmd::run(args),
        Command::Relay(args) => relay_cmd::run(args),
        Command::Genkey { out, force } => key_cmd::genkey(out.as_deref(), force),
        Command::Pubkey => key_cmd::pubkey(),
        Command::Genpsk => key_cmd::genpsk(),
        Command::Conf(ConfCommand::Check { file }) => conf_cmd::check(&file),
        Command::Conf(ConfCommand::Strip { file }) => conf_cmd::strip(&file),
        Command::Plan(PlanCommand::Render {
            mesh,
            out,
            key_files,
        }) => plan_cmd::render(&mesh, &out, key_files),
        Command::Plan(PlanCommand::Check { mesh, out }) => plan_cmd::check(&mesh, out.as_deref()),
        Command::Plan(PlanCommand::Show { mesh, out, format }) => {
            plan_cmd::show(&mesh, out.as_deref(), matches!(format, Format::Json))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wgmesh: {e:#}");
            Exit::of(&e).into()
        }
    }
}

/// The exit codes, documented in docs/agent.md ("Exit codes"). 2 is
/// clap's, for a usage error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    /// Any other error.
    Error = 1,
    /// The server refused this node: removed, expired, or no usable
    /// setup key. A unit's `RestartPreventExitStatus=` lists it.
    Refused = 3,
}

impl Exit {
    fn of(e: &anyhow::Error) -> Self {
        match e.downcast_ref::<wgmesh_agent::AgentError>() {
            Some(wgmesh_agent::AgentError::Refused(_)) => Self::Refused,
            _ => Self::Error,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e as u8)
    }
}
