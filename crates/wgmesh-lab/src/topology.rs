//! Lab topologies described in TOML, for `wgmesh lab up FILE.toml`; tests
//! build the same things in code through [`Lab`]'s methods.
//!
//! ```toml
//! [lab]
//! name = "seed"                 # lowercase letters and digits, at most 8
//!
//! [[router]]
//! name = "home"
//! wan = "198.51.100.10"         # a TEST-NET address on the internet
//! lan = "10.1.0.0/24"           # the router takes .1
//! nat = "port-restricted"       # full-cone, address-restricted, port-restricted, symmetric, udp-blocked
//! hairpin = "off"               # or "on"
//!
//! [[host]]
//! name = "nyc"
//! address = "203.0.113.10"      # on the internet
//!
//! [[host]]
//! name = "lab"
//! behind = "home"               # on home's LAN, behind its NAT
//! # Optional impairment of the host's uplink, each way (a router's: its WAN):
//! link = { latency_ms = 20, jitter_ms = 5, loss_percent = 1.5, rate_mbit = 50 }
//! ```

use std::net::Ipv4Addr;
use std::time::Duration;

use ipnet::Ipv4Net;
use serde::Deserialize;

use crate::names::LabId;
use crate::nat::{Hairpin, NatKind};
use crate::{Lab, LabError};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    pub lab: LabSection,
    #[serde(default, rename = "router")]
    pub routers: Vec<RouterSpec>,
    #[serde(default, rename = "host")]
    pub hosts: Vec<HostSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabSection {
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterSpec {
    pub name: String,
    pub wan: Ipv4Addr,
    pub lan: Ipv4Net,
    pub nat: NatKind,
    #[serde(default)]
    pub hairpin: Hairpin,
    #[serde(default)]
    pub link: LinkSpec,
}

/// Impairment of a host's uplink, each way.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    pub latency_ms: Option<u64>,
    pub jitter_ms: Option<u64>,
    pub loss_percent: Option<f64>,
    pub rate_mbit: Option<f64>,
}

impl LinkSpec {
    fn apply(&self, lab: &mut Lab, host: &str) -> Result<(), LabError> {
        if self.latency_ms.is_some() || self.jitter_ms.is_some() {
            lab.set_latency(
                host,
                Duration::from_millis(self.latency_ms.unwrap_or(0)),
                Duration::from_millis(self.jitter_ms.unwrap_or(0)),
            )?;
        }
        if let Some(loss) = self.loss_percent {
            lab.set_loss(host, loss)?;
        }
        if let Some(mbit) = self.rate_mbit {
            if !mbit.is_finite() || mbit <= 0.0 {
                return Err(LabError::Topology(format!(
                    "{host}: rate_mbit must be positive"
                )));
            }
            lab.set_rate(host, (mbit * 1e6) as u64)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    pub name: String,
    /// A public address on the internet segment.
    pub address: Option<Ipv4Addr>,
    /// The router whose LAN the host sits on.
    pub behind: Option<String>,
    #[serde(default)]
    pub link: LinkSpec,
}

impl Topology {
    pub fn parse(text: &str) -> Result<Self, LabError> {
        let t: Topology = toml::from_str(text).map_err(|e| LabError::Topology(e.to_string()))?;
        t.id()?;
        for h in &t.hosts {
            match (&h.address, &h.behind) {
                (Some(_), None) | (None, Some(_)) => {}
                _ => {
                    return Err(LabError::Topology(format!(
                        "host {:?}: give exactly one of `address` (public) or `behind` (a router)",
                        h.name
                    )));
                }
            }
        }
        Ok(t)
    }

    /// The lab id this topology runs under (its name).
    pub fn id(&self) -> Result<LabId, LabError> {
        LabId::named(&self.lab.name).ok_or_else(|| {
            LabError::Topology(format!(
                "lab.name {:?}: use 1 to 8 lowercase letters or digits",
                self.lab.name
            ))
        })
    }

    /// Builds everything into `lab`: routers first, then hosts.
    pub fn build_into(&self, lab: &mut Lab) -> Result<(), LabError> {
        for r in &self.routers {
            lab.add_router(&r.name, r.wan, r.lan, r.nat, r.hairpin)?;
        }
        for h in &self.hosts {
            match (&h.address, &h.behind) {
                (Some(addr), _) => lab.add_public_host(&h.name, *addr)?,
                (None, Some(router)) => lab.add_lan_host(&h.name, router)?,
                (None, None) => unreachable!("checked in parse"),
            };
        }
        // Impairment last, once every link exists (and before any traffic:
        // putting a delay element in briefly takes the link down).
        for r in &self.routers {
            r.link.apply(lab, &r.name)?;
        }
        for h in &self.hosts {
            h.link.apply(lab, &h.name)?;
        }
        Ok(())
    }

    /// A new lab, under this topology's name, with everything built.
    pub fn build(&self) -> Result<Lab, LabError> {
        let mut lab = Lab::with_id(self.id()?)?;
        self.build_into(&mut lab)?;
        Ok(lab)
    }
}
