//! Names that never clash: between tests running in parallel in one
//! process, between processes, and with anything on the machine that is not
//! the lab's.
//!
//! A lab namespace is `wgl-<lab id>.<host>`. A test's lab id is
//! `<pid>-<n>` (hex), so `wgmesh lab clean` can tell a crashed run's
//! leftovers (its process is gone) from a lab still in use; a lab brought up
//! by `wgmesh lab up` has its topology's name as id (no `-`).

use std::sync::atomic::{AtomicU32, Ordering};

/// Every lab namespace starts with this; `wgmesh lab clean` removes only these.
pub const NETNS_PREFIX: &str = "wgl-";

/// A lab's short identity: it goes into namespace names and, because
/// wireguard-go's socket directory is shared by every namespace, into
/// interface names that must be unique machine-wide (15 bytes at most).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabId(String);

impl LabId {
    /// A fresh id for a test: this process's id and a per-process counter.
    pub fn unique() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Self(format!("{:x}-{:x}", std::process::id(), n % 0x100))
    }

    /// A chosen id (a topology's name, for `wgmesh lab up`): lowercase
    /// letters and digits, at most 8.
    pub fn named(name: &str) -> Option<Self> {
        let ok = !name.is_empty()
            && name.len() <= 8
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        ok.then(|| Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The process that made a test's lab; `None` for a named lab.
    pub fn creator_pid(&self) -> Option<u32> {
        let (pid, _) = self.0.split_once('-')?;
        u32::from_str_radix(pid, 16).ok()
    }

    /// The namespace of host `host` in this lab.
    pub fn netns(&self, host: &str) -> String {
        format!("{NETNS_PREFIX}{}.{host}", self.0)
    }

    /// A machine-wide unique interface name for the `n`th WireGuard
    /// interface of this lab.
    pub fn wg_iface(&self, n: usize) -> String {
        let name = format!("wg{}x{n:x}", self.0);
        assert!(
            name.len() <= 15,
            "lab ids are short enough for IFNAMSIZ: {name}"
        );
        name
    }
}

/// The lab id and host of a lab namespace name; `None` for any other name.
pub fn parse_netns(name: &str) -> Option<(LabId, &str)> {
    let rest = name.strip_prefix(NETNS_PREFIX)?;
    let (id, host) = rest.split_once('.')?;
    Some((LabId(id.to_owned()), host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let id = LabId::unique();
        assert_eq!(id.creator_pid(), Some(std::process::id()));
        let ns = id.netns("my-host");
        let (back, host) = parse_netns(&ns).expect("a lab name");
        assert_eq!((back, host), (id.clone(), "my-host"));
        assert!(id.wg_iface(255).len() <= 15);
        let named = LabId::named("seed").expect("valid");
        assert_eq!(named.creator_pid(), None);
        assert_eq!(parse_netns("wgm-123"), None);
        assert_eq!(LabId::named("Seed"), None);
        assert_eq!(LabId::named("a-b"), None);
    }
}
