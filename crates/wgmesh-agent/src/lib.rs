//! wgmesh-agent: the node daemon (`wgmesh up`).
//!
//! It owns the node's side of the control plane and drives the engine:
//! - [`state`]: the state directory (private key, credential, cached map);
//! - [`client`] and [`sse`]: the control API over HTTPS (enrolment, the
//!   map and its server-sent-event stream, endpoint reports), with public
//!   JSON helpers the admin CLI reuses;
//! - [`apply`]: network map → the minimal WireGuard `set`; [`update`]:
//!   which map a stream message leads to;
//! - [`run`]: the daemon's loop: enrol, bring the interface up, follow
//!   the map stream, report endpoints, reconnect, tear down on a signal;
//! - [`paths`]: disco and the relay over the engine's socket: which path
//!   each peer's traffic takes;
//! - [`status`]: the status socket and `wgmesh status`.
//!
//! It owns no WireGuard protocol logic (wgmesh-proto's), no packet IO
//! (wgmesh-dataplane's) and no map compilation (the server's, through
//! wgmesh-core).

pub mod apply;
mod backoff;
pub mod client;
pub mod endpoints;
mod error;
mod forwarding;
pub mod paths;
pub mod run;
pub mod sse;
pub mod state;
pub mod status;
pub mod update;

pub use error::AgentError;
pub use run::{UpConfig, up};
