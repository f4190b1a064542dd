//! Names that never clash: between tests running in parallel in one
//! process, between processes, and with anything on the machine that is not
//! the lab's.

use std::sync::atomic::{AtomicU32, Ordering};

/// Every lab namespace starts with this; `wgmesh lab clean` removes exactly these.
pub const NETNS_PREFIX: &str = "wgl-";

/// A lab's short identity: it goes into namespace names and, because
/// wireguard-go's socket directory is shared by every namespace, into
/// interface names that must be unique machine-wide (15 bytes at most).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabId(String);

impl LabId {
    /// A fresh id for a test: the process id and a per-process counter, in hex.
    pub fn unique() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Self(format!("{:x}{n:x}", std::process::id()))
    }

    /// A chosen id (e.g. a topology's name for `wgmesh lab up`): lowercase
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

    /// The namespace of host `host` in this lab.
    pub fn netns(&self, host: &str) -> String {
        format!("{NETNS_PREFIX}{}-{host}", self.0)
    }

    /// A machine-wide unique interface name for the `n`th WireGuard interface.
    pub fn wg_iface(&self, n: usize) -> String {
        let name = format!("wg{}x{n}", self.0);
        assert!(
            name.len() <= 15,
            "lab ids are short enough for IFNAMSIZ: {name}"
        );
        name
    }
}
