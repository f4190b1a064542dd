//! IP forwarding for a hub: a hub forwards between nodes that cannot
//! reach each other directly, so its agent turns `net.ipv4.ip_forward`
//! and `net.ipv6.conf.all.forwarding` on, remembering what they were, and
//! puts them back when the node stops being a hub or the agent stops.
//! (The settings are per network namespace, through /proc/sys.)

use std::path::Path;

const KNOBS: [&str; 2] = [
    "/proc/sys/net/ipv4/ip_forward",
    "/proc/sys/net/ipv6/conf/all/forwarding",
];

/// The forwarding settings this agent changed, with their old values.
#[derive(Debug, Default)]
pub struct Forwarding {
    saved: Vec<(&'static str, String)>,
}

impl Forwarding {
    pub fn is_on(&self) -> bool {
        !self.saved.is_empty()
    }

    /// Turns forwarding on (once), saving the old values.
    pub fn enable(&mut self) {
        if self.is_on() {
            return;
        }
        for knob in KNOBS {
            let old = match std::fs::read_to_string(knob) {
                Ok(v) => v.trim().to_owned(),
                Err(e) => {
                    eprintln!("wgmesh: cannot read {knob}: {e}");
                    continue;
                }
            };
            if old == "1" {
                // Already on: nothing of ours to undo.
                self.saved.push((knob, old));
                continue;
            }
            eprintln!("[#] echo 1 > {knob}");
            match std::fs::write(Path::new(knob), "1\n") {
                Ok(()) => self.saved.push((knob, old)),
                Err(e) => eprintln!("wgmesh: cannot turn forwarding on ({knob}): {e}"),
            }
        }
    }

    /// Puts back the values saved by [`Forwarding::enable`].
    pub fn restore(&mut self) {
        for (knob, old) in self.saved.drain(..).rev() {
            if old == "1" {
                continue;
            }
            eprintln!("[#] echo {old} > {knob}");
            if let Err(e) = std::fs::write(Path::new(knob), format!("{old}\n")) {
                eprintln!("wgmesh: cannot restore {knob}: {e}");
            }
        }
    }
}

impl Drop for Forwarding {
    fn drop(&mut self) {
        self.restore();
    }
}
