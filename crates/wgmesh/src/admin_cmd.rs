//! `wgmesh admin …`: every admin action of the REST API, from the shell.
//! Each prints a table, or the API's JSON with `--json`.
//!
//! The server URL comes from `--server` or WGMESH_SERVER, the admin token
//! from `--token-file` or WGMESH_TOKEN (never a flag: argv is visible to
//! every user in `ps`).

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use comfy_table::Table;
use serde::Serialize;
use serde::de::DeserializeOwned;
use wgmesh_agent::client::Client;
use wgmesh_core::control::{
    AuditPage, CreateNetwork, CreateRelay, CreateSetupKey, NetworkInfo, NodeInfo, RelayCreated,
    RelayInfo, SetupKeyCreated, SetupKeyInfo, Topology, UpdateNode,
};
use wgmesh_core::key::PublicKey;
use wgmesh_core::netmap::policy::Policy;

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// The server's URL (or WGMESH_SERVER).
    #[arg(long, env = "WGMESH_SERVER", value_name = "URL")]
    server: String,
    /// A file holding the admin token (else WGMESH_TOKEN).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// A CA certificate (PEM) to trust for the server's certificate (or
    /// WGMESH_CA_FILE); before or after the subcommand.
    #[arg(long, env = "WGMESH_CA_FILE", global = true, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    #[command(subcommand)]
    Networks(NetworksCmd),
    #[command(subcommand)]
    Nodes(NodesCmd),
    #[command(subcommand, name = "setup-keys")]
    SetupKeys(SetupKeysCmd),
    #[command(subcommand)]
    Policy(PolicyCmd),
    #[command(subcommand)]
    Audit(AuditCmd),
    #[command(subcommand)]
    Tokens(TokensCmd),
    #[command(subcommand)]
    Relays(RelaysCmd),
}

#[derive(Debug, Subcommand)]
enum NetworksCmd {
    List,
    Show {
        name: String,
    },
    Create {
        name: String,
        #[arg(long, value_name = "CIDR")]
        overlay: ipnet::IpNet,
        #[arg(long, value_enum, default_value = "full-mesh")]
        topology: TopologyArg,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum TopologyArg {
    FullMesh,
    HubAndSpoke,
}

#[derive(Debug, Subcommand)]
enum NodesCmd {
    List {
        #[arg(long)]
        network: Option<String>,
    },
    Show {
        id: i64,
    },
    /// Change a node's hub role or groups.
    Set {
        id: i64,
        #[arg(long)]
        hub: Option<bool>,
        /// Comma-separated; replaces the node's groups.
        #[arg(long, value_delimiter = ',')]
        groups: Option<Vec<String>>,
        /// Reach the other non-hub nodes only through the hub.
        #[arg(long)]
        via_hub: Option<bool>,
    },
    /// Remove a node: every peer drops it at once.
    Remove {
        id: i64,
    },
}

#[derive(Debug, Subcommand)]
enum SetupKeysCmd {
    List,
    /// Create a setup key; the secret is printed once, as the last line.
    Create {
        /// The network (default: the only one).
        #[arg(long)]
        network: Option<String>,
        #[arg(long)]
        reusable: bool,
        #[arg(long, value_name = "SECS")]
        expires_in: Option<i64>,
        #[arg(long, value_name = "N")]
        usage_limit: Option<i64>,
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// Nodes enrolled with it become hubs.
        #[arg(long)]
        hub: bool,
        /// Nodes enrolled with it reach the other non-hub nodes only
        /// through the hub.
        #[arg(long)]
        via_hub: bool,
    },
    Revoke {
        id: i64,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCmd {
    /// Print the policy as TOML (JSON with --json).
    Show {
        #[arg(long)]
        network: Option<String>,
    },
    /// Replace the policy with FILE (TOML, see docs/server.md).
    Set {
        file: PathBuf,
        #[arg(long)]
        network: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCmd {
    /// The oldest entries, or those after ID with --after; says on stderr
    /// when more follow (--json: the page, with `truncated` and
    /// `next_after`).
    Tail {
        #[arg(long, default_value_t = 0)]
        after: i64,
        /// 1 to 1000.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
}

#[derive(Debug, Subcommand)]
enum TokensCmd {
    /// Create another admin token; printed once, as the last line.
    Create { name: String },
}

#[derive(Debug, Subcommand)]
enum RelaysCmd {
    List,
    /// Register a relay (every network's nodes may use it); its token is
    /// printed once, as the last line: give it to `wgmesh relay
    /// --token-file`.
    Create {
        name: String,
        /// The relay's public key (`wgmesh relay pubkey --state-dir DIR`).
        #[arg(long, value_name = "KEY")]
        public_key: PublicKey,
        /// Where nodes reach the relay over UDP.
        #[arg(long, value_name = "ADDR:PORT")]
        udp: std::net::SocketAddr,
        /// WebSocket URL for networks that block UDP, e.g.
        /// wss://relay.example/relay.
        #[arg(long, value_name = "URL")]
        ws_url: Option<String>,
    },
    /// Remove a relay: its token stops working, every map drops it.
    Delete {
        id: i64,
    },
}

struct Ctx {
    client: Client,
    token: String,
    json: bool,
}

impl Ctx {
    async fn get<T: DeserializeOwned>(&self, route: &str) -> anyhow::Result<T> {
        Ok(self.client.get(route, &self.token).await?)
    }

    fn print<T: Serialize>(&self, value: &T, table: impl FnOnce() -> Table) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(value).expect("invariant: API types serialise")
            );
        } else {
            println!("{}", table());
        }
    }

    /// `name`, or the only network there is.
    async fn network(&self, name: Option<String>) -> anyhow::Result<String> {
        if let Some(n) = name {
            return Ok(n);
        }
        let nets: Vec<NetworkInfo> = self.get("api/v1/networks").await?;
        match nets.as_slice() {
            [one] => Ok(one.name.clone()),
            [] => bail!("the server has no network yet: `wgmesh admin networks create`"),
            _ => bail!("the server has several networks: name one with --network"),
        }
    }
}

fn table(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> Table {
    let mut t = Table::new();
    t.load_preset(comfy_table::presets::NOTHING);
    t.set_header(header.to_vec());
    for r in rows {
        t.add_row(r);
    }
    t
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn node_rows(nodes: &[NodeInfo]) -> Table {
    table(
        &[
            "ID", "NAME", "NETWORK", "ADDRESS", "HUB", "GROUPS", "ONLINE", "ENDPOINT",
        ],
        nodes.iter().map(|n| {
            vec![
                n.id.to_string(),
                n.name.clone(),
                n.network.clone(),
                n.address.to_string(),
                n.hub.to_string(),
                n.groups.join(","),
                n.online.to_string(),
                opt(n.endpoints.reflexive.or(n.endpoints.local.first().copied())),
            ]
        }),
    )
}

fn key_rows(keys: &[SetupKeyInfo]) -> Table {
    table(
        &[
            "ID", "PREFIX", "NETWORK", "REUSABLE", "USED", "LIMIT", "EXPIRES", "GROUPS", "REVOKED",
        ],
        keys.iter().map(|k| {
            vec![
                k.id.to_string(),
                k.prefix.clone(),
                k.network.clone(),
                k.reusable.to_string(),
                k.used.to_string(),
                opt(k.usage_limit),
                opt(k.expires_at),
                k.groups.join(","),
                k.revoked.to_string(),
            ]
        }),
    )
}

fn relay_rows(relays: &[RelayInfo]) -> Table {
    table(
        &["ID", "NAME", "PUBLIC KEY", "UDP", "WEBSOCKET"],
        relays.iter().map(|r| {
            vec![
                r.id.to_string(),
                r.name.clone(),
                r.public_key.to_string(),
                r.udp.to_string(),
                opt(r.ws_url.as_deref()),
            ]
        }),
    )
}

fn network_rows(nets: &[NetworkInfo]) -> Table {
    table(
        &["NAME", "OVERLAY", "TOPOLOGY", "NODES"],
        nets.iter().map(|n| {
            vec![
                n.name.clone(),
                n.overlay.to_string(),
                format!("{:?}", n.topology),
                n.nodes.to_string(),
            ]
        }),
    )
}

pub fn run(args: AdminArgs) -> anyhow::Result<()> {
    let token = match &args.token_file {
        Some(f) => std::fs::read_to_string(f)
            .with_context(|| format!("reading the admin token from {}", f.display()))?,
        None => std::env::var("WGMESH_TOKEN")
            .context("no admin token: set WGMESH_TOKEN or pass --token-file FILE")?,
    };
    let client = Client::new(&args.server, args.ca_file.as_deref())?;
    let ctx = Ctx {
        client,
        token: token.trim().to_owned(),
        json: args.json,
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(dispatch(&ctx, args.command))
}

async fn dispatch(ctx: &Ctx, command: AdminCommand) -> anyhow::Result<()> {
    let c = &ctx.client;
    let t = ctx.token.as_str();
    match command {
        AdminCommand::Networks(NetworksCmd::List) => {
            let v: Vec<NetworkInfo> = ctx.get("api/v1/networks").await?;
            ctx.print(&v, || network_rows(&v));
        }
        AdminCommand::Networks(NetworksCmd::Show { name }) => {
            let v: NetworkInfo = ctx.get(&format!("api/v1/networks/{name}")).await?;
            ctx.print(&v, || network_rows(std::slice::from_ref(&v)));
        }
        AdminCommand::Networks(NetworksCmd::Create {
            name,
            overlay,
            topology,
        }) => {
            let body = CreateNetwork {
                name,
                overlay,
                topology: match topology {
                    TopologyArg::FullMesh => Topology::FullMesh,
                    TopologyArg::HubAndSpoke => Topology::HubAndSpoke,
                },
            };
            let v: NetworkInfo = c.post("api/v1/networks", t, &body).await?;
            ctx.print(&v, || network_rows(std::slice::from_ref(&v)));
        }
        AdminCommand::Nodes(NodesCmd::List { network }) => {
            let route = match network {
                Some(n) => format!("api/v1/nodes?network={n}"),
                None => "api/v1/nodes".to_owned(),
            };
            let v: Vec<NodeInfo> = ctx.get(&route).await?;
            ctx.print(&v, || node_rows(&v));
        }
        AdminCommand::Nodes(NodesCmd::Show { id }) => {
            let v: NodeInfo = ctx.get(&format!("api/v1/nodes/{id}")).await?;
            ctx.print(&v, || node_rows(std::slice::from_ref(&v)));
        }
        AdminCommand::Nodes(NodesCmd::Set {
            id,
            hub,
            groups,
            via_hub,
        }) => {
            let body = UpdateNode {
                hub,
                groups,
                via_hub,
            };
            let v: NodeInfo = c.patch(&format!("api/v1/nodes/{id}"), t, &body).await?;
            ctx.print(&v, || node_rows(std::slice::from_ref(&v)));
        }
        AdminCommand::Nodes(NodesCmd::Remove { id }) => {
            let v: NodeInfo = c.delete(&format!("api/v1/nodes/{id}"), t).await?;
            ctx.print(&v, || node_rows(std::slice::from_ref(&v)));
        }
        AdminCommand::SetupKeys(SetupKeysCmd::List) => {
            let v: Vec<SetupKeyInfo> = ctx.get("api/v1/setup-keys").await?;
            ctx.print(&v, || key_rows(&v));
        }
        AdminCommand::SetupKeys(SetupKeysCmd::Create {
            network,
            reusable,
            expires_in,
            usage_limit,
            groups,
            hub,
            via_hub,
        }) => {
            let body = CreateSetupKey {
                network: ctx.network(network).await?,
                reusable,
                expires_in,
                usage_limit,
                groups,
                hub,
                via_hub,
            };
            let v: SetupKeyCreated = c.post("api/v1/setup-keys", t, &body).await?;
            if ctx.json {
                ctx.print(&v, Table::new);
            } else {
                println!("{}", key_rows(std::slice::from_ref(&v.info)));
                println!("the setup key follows; it is shown only this once:");
                println!("{}", v.key);
            }
        }
        AdminCommand::SetupKeys(SetupKeysCmd::Revoke { id }) => {
            let v: SetupKeyInfo = c.delete(&format!("api/v1/setup-keys/{id}"), t).await?;
            ctx.print(&v, || key_rows(std::slice::from_ref(&v)));
        }
        AdminCommand::Policy(PolicyCmd::Show { network }) => {
            let net = ctx.network(network).await?;
            let v: Policy = ctx.get(&format!("api/v1/networks/{net}/policy")).await?;
            if ctx.json {
                ctx.print(&v, Table::new);
            } else {
                print!("{}", v.to_toml());
            }
        }
        AdminCommand::Policy(PolicyCmd::Set { file, network }) => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let policy = Policy::from_toml(&text)
                .with_context(|| format!("{} is not a valid policy", file.display()))?;
            let net = ctx.network(network).await?;
            let v: Policy = c
                .put(&format!("api/v1/networks/{net}/policy"), t, &policy)
                .await?;
            if ctx.json {
                ctx.print(&v, Table::new);
            } else {
                println!(
                    "policy of {net} replaced: {} rule(s), default {:?}",
                    v.rules.len(),
                    v.default
                );
            }
        }
        AdminCommand::Audit(AuditCmd::Tail { after, limit }) => {
            let v: AuditPage = ctx
                .get(&format!("api/v1/audit?after={after}&limit={limit}"))
                .await?;
            if v.truncated {
                // On stderr, so that stdout stays the page (or its JSON).
                eprintln!(
                    "more entries follow: wgmesh admin audit tail --after {}",
                    v.next_after
                );
            }
            ctx.print(&v, || {
                table(
                    &["ID", "AT (ms)", "ACTOR", "ACTION", "TARGET"],
                    v.entries.iter().map(|e| {
                        vec![
                            e.id.to_string(),
                            e.at.to_string(),
                            e.actor.clone(),
                            e.action.clone(),
                            e.target.clone(),
                        ]
                    }),
                )
            });
        }
        AdminCommand::Relays(RelaysCmd::List) => {
            let v: Vec<RelayInfo> = ctx.get("api/v1/relays").await?;
            ctx.print(&v, || relay_rows(&v));
        }
        AdminCommand::Relays(RelaysCmd::Create {
            name,
            public_key,
            udp,
            ws_url,
        }) => {
            let body = CreateRelay {
                name,
                public_key,
                udp,
                ws_url,
            };
            let v: RelayCreated = c.post("api/v1/relays", t, &body).await?;
            if ctx.json {
                ctx.print(&v, Table::new);
            } else {
                println!("{}", relay_rows(std::slice::from_ref(&v.info)));
                println!("the relay token follows; it is shown only this once:");
                println!("{}", v.token);
            }
        }
        AdminCommand::Relays(RelaysCmd::Delete { id }) => {
            let v: RelayInfo = c.delete(&format!("api/v1/relays/{id}"), t).await?;
            ctx.print(&v, || relay_rows(std::slice::from_ref(&v)));
        }
        AdminCommand::Tokens(TokensCmd::Create { name }) => {
            let v: serde_json::Value = c
                .post(
                    "api/v1/admin-tokens",
                    t,
                    &serde_json::json!({ "name": name }),
                )
                .await?;
            if ctx.json {
                ctx.print(&v, Table::new);
            } else {
                println!("admin token {name:?} created; it is shown only this once:");
                println!("{}", v["token"].as_str().unwrap_or_default());
            }
        }
    }
    Ok(())
}
