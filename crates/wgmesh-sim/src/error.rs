//! What the simulation refuses to do when a test (or driver) asks for
//! something the topology cannot give. Datagrams that the network drops are
//! not errors: they are counted ([`crate::Counters`]) and traced.

use std::net::{Ipv4Addr, SocketAddr};

use ipnet::Ipv4Net;

use crate::net::{HostId, RouterId};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    #[error("address {0} is already in use on that segment")]
    AddressInUse(Ipv4Addr),
    #[error("no host {0:?} in this simulation")]
    UnknownHost(HostId),
    #[error("no router {0:?} in this simulation")]
    UnknownRouter(RouterId),
    #[error("port {port} is already bound on host {host:?}")]
    PortInUse { host: HostId, port: u16 },
    #[error("port {port} is not bound on host {host:?}")]
    NotBound { host: HostId, port: u16 },
    #[error("every port of host {0:?} is bound")]
    NoFreePort(HostId),
    #[error("the LAN {0} has no free address left")]
    LanFull(Ipv4Net),
    #[error("the LAN {0} is too small (it needs a router address and at least one host)")]
    LanTooSmall(Ipv4Net),
    #[error("{0}: the simulation carries IPv4 only")]
    Ipv6Unsupported(SocketAddr),
}
