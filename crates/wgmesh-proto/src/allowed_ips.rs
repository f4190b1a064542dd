//! Cryptokey routing's table: the peer for an address is the one whose
//! AllowedIPs hold the longest matching prefix (WireGuard paper §2).
//!
//! The same table answers both directions of cryptokey routing: outbound,
//! which peer a packet for a destination goes to; inbound, whether a
//! decrypted packet's source belongs to the peer it came from.
//!
//! Shape: one hash map per prefix length and family, and the list of lengths
//! in use, longest first. A lookup masks the address once per length in use
//! (in practice a handful: /32, /24, /0 …) and stops at the first hit, so it
//! costs a few hash probes however many entries there are. Prefixes are
//! stored with their host bits cleared, as the kernel and wireguard-go do
//! (`10.0.0.1/24` is `10.0.0.0/24`).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// A longest-prefix-match table from IPv4 and IPv6 prefixes to values
/// (peer ids, for [`crate::Device`]).
#[derive(Debug, Clone)]
pub struct AllowedIps<T> {
    v4: Family<u32, T>,
    v6: Family<u128, T>,
}

impl<T> Default for AllowedIps<T> {
    fn default() -> Self {
        Self {
            v4: Family::new(32),
            v6: Family::new(128),
        }
    }
}

/// One address family: `maps[len]` holds the prefixes of length `len`,
/// keyed by their masked network bits.
#[derive(Debug, Clone)]
struct Family<K, T> {
    maps: Vec<HashMap<K, T>>,
    /// The prefix lengths whose map is not empty, longest first.
    lens: Vec<u8>,
}

/// The integer form of one address family's addresses.
trait Bits: Copy + Eq + std::hash::Hash {
    const WIDTH: u8;
    fn mask(self, len: u8) -> Self;
}

impl Bits for u32 {
    const WIDTH: u8 = 32;
    fn mask(self, len: u8) -> Self {
        match len {
            0 => 0,
            l => self & (u32::MAX << (32 - u32::from(l))),
        }
    }
}

impl Bits for u128 {
    const WIDTH: u8 = 128;
    fn mask(self, len: u8) -> Self {
        match len {
            0 => 0,
            l => self & (u128::MAX << (128 - u32::from(l))),
        }
    }
}

impl<K: Bits, T> Family<K, T> {
    fn new(width: u8) -> Self {
        debug_assert_eq!(width, K::WIDTH);
        Self {
            maps: (0..=width).map(|_| HashMap::new()).collect(),
            lens: Vec::new(),
        }
    }

    fn insert(&mut self, addr: K, len: u8, value: T) -> Option<T> {
        let map = &mut self.maps[usize::from(len)];
        let was_empty = map.is_empty();
        let previous = map.insert(addr.mask(len), value);
        if was_empty {
            // Keep `lens` sorted longest first: that is the lookup order.
            let at = self.lens.partition_point(|&l| l > len);
            self.lens.insert(at, len);
        }
        previous
    }

    fn remove(&mut self, addr: K, len: u8) -> Option<T> {
        let map = &mut self.maps[usize::from(len)];
        let removed = map.remove(&addr.mask(len));
        if removed.is_some() && map.is_empty() {
            self.lens.retain(|&l| l != len);
        }
        removed
    }

    fn get(&self, addr: K, len: u8) -> Option<&T> {
        self.maps[usize::from(len)].get(&addr.mask(len))
    }

    fn lookup(&self, addr: K) -> Option<&T> {
        self.lens
            .iter()
            .find_map(|&len| self.maps[usize::from(len)].get(&addr.mask(len)))
    }

    fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        for map in &mut self.maps {
            map.retain(|_, v| keep(v));
        }
        let maps = &self.maps;
        self.lens.retain(|&l| !maps[usize::from(l)].is_empty());
    }

    fn iter(&self) -> impl Iterator<Item = (K, u8, &T)> {
        self.lens.iter().flat_map(move |&len| {
            self.maps[usize::from(len)]
                .iter()
                .map(move |(k, v)| (*k, len, v))
        })
    }

    fn len(&self) -> usize {
        self.lens
            .iter()
            .map(|&l| self.maps[usize::from(l)].len())
            .sum()
    }
}

impl<T> AllowedIps<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Routes `net` (host bits cleared) to `value`; returns the value it
    /// routed to before, if any. An existing prefix moves to the new value:
    /// in WireGuard an allowed IP belongs to one peer at a time.
    pub fn insert(&mut self, net: IpNet, value: T) -> Option<T> {
        match net {
            IpNet::V4(n) => self.v4.insert(n.addr().to_bits(), n.prefix_len(), value),
            IpNet::V6(n) => self.v6.insert(n.addr().to_bits(), n.prefix_len(), value),
        }
    }

    /// Removes exactly the prefix `net` (host bits ignored), not the prefixes
    /// inside or around it.
    pub fn remove(&mut self, net: IpNet) -> Option<T> {
        match net {
            IpNet::V4(n) => self.v4.remove(n.addr().to_bits(), n.prefix_len()),
            IpNet::V6(n) => self.v6.remove(n.addr().to_bits(), n.prefix_len()),
        }
    }

    /// The value routed to by exactly the prefix `net` (host bits ignored).
    pub fn get(&self, net: IpNet) -> Option<&T> {
        match net {
            IpNet::V4(n) => self.v4.get(n.addr().to_bits(), n.prefix_len()),
            IpNet::V6(n) => self.v6.get(n.addr().to_bits(), n.prefix_len()),
        }
    }

    /// The value of the longest prefix containing `addr`.
    ///
    /// An IPv4-mapped IPv6 address is looked up as IPv6, as in the kernel:
    /// the families are separate tables.
    pub fn lookup(&self, addr: IpAddr) -> Option<&T> {
        match addr {
            IpAddr::V4(a) => self.v4.lookup(a.to_bits()),
            IpAddr::V6(a) => self.v6.lookup(a.to_bits()),
        }
    }

    /// Keeps only the entries whose value passes `keep`.
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        self.v4.retain(&mut keep);
        self.v6.retain(&mut keep);
    }

    /// Every entry, IPv4 first, longest prefixes first; order within one
    /// length is unspecified.
    pub fn iter(&self) -> impl Iterator<Item = (IpNet, &T)> {
        let v4 = self.v4.iter().map(|(bits, len, v)| {
            let net = Ipv4Net::new(Ipv4Addr::from_bits(bits), len)
                .expect("invariant: stored lengths are <= 32");
            (IpNet::V4(net), v)
        });
        let v6 = self.v6.iter().map(|(bits, len, v)| {
            let net = Ipv6Net::new(Ipv6Addr::from_bits(bits), len)
                .expect("invariant: stored lengths are <= 128");
            (IpNet::V6(net), v)
        });
        v4.chain(v6)
    }

    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.v4.lens.is_empty() && self.v6.lens.is_empty()
    }
}

impl<T: PartialEq> AllowedIps<T> {
    /// Removes every prefix routed to `value` (a peer leaving).
    pub fn remove_value(&mut self, value: &T) {
        self.retain(|v| v != value);
    }

    /// The prefixes routed to `value`, in [`AllowedIps::iter`]'s order.
    /// This walks the whole table: it is for configuration reads, not for
    /// the packet path.
    pub fn iter_value<'a>(&'a self, value: &'a T) -> impl Iterator<Item = IpNet> + 'a {
        self.iter()
            .filter(move |(_, v)| *v == value)
            .map(|(n, _)| n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("test prefix")
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn longest_prefix_wins_in_both_families() {
        let mut t = AllowedIps::new();
        t.insert(net("0.0.0.0/0"), 'd');
        t.insert(net("10.0.0.0/8"), 'a');
        t.insert(net("10.1.0.0/16"), 'b');
        t.insert(net("10.1.2.3/32"), 'c');
        t.insert(net("::/0"), 'D');
        t.insert(net("fd00::/8"), 'A');
        t.insert(net("fd00:1::/32"), 'B');
        assert_eq!(t.lookup(ip("10.1.2.3")), Some(&'c'));
        assert_eq!(t.lookup(ip("10.1.2.4")), Some(&'b'));
        assert_eq!(t.lookup(ip("10.2.0.1")), Some(&'a'));
        assert_eq!(t.lookup(ip("192.0.2.1")), Some(&'d'));
        assert_eq!(t.lookup(ip("fd00:1::5")), Some(&'B'));
        assert_eq!(t.lookup(ip("fd01::5")), Some(&'A'));
        assert_eq!(t.lookup(ip("2001:db8::1")), Some(&'D'));
        // The families do not mix: a v4-mapped address is an IPv6 address.
        t.remove(net("::/0"));
        assert_eq!(t.lookup(ip("::ffff:10.1.2.3")), None);
        assert_eq!(t.len(), 6);
    }

    #[test]
    fn host_bits_are_cleared_and_inserting_moves_the_prefix() {
        let mut t = AllowedIps::new();
        assert_eq!(t.insert(net("10.0.0.1/24"), 1), None);
        assert_eq!(
            t.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            [net("10.0.0.0/24")]
        );
        // Same prefix, other spelling: it moves to the new value.
        assert_eq!(t.insert(net("10.0.0.7/24"), 2), Some(1));
        assert_eq!(t.lookup(ip("10.0.0.200")), Some(&2));
        assert_eq!(t.get(net("10.0.0.0/24")), Some(&2));
        assert_eq!(t.remove(net("10.0.0.9/24")), Some(2));
        assert!(t.is_empty());
        assert_eq!(t.lookup(ip("10.0.0.200")), None);
    }

    #[test]
    fn remove_value_and_iter_value() {
        let mut t = AllowedIps::new();
        t.insert(net("10.0.0.0/24"), 1);
        t.insert(net("10.0.1.0/24"), 2);
        t.insert(net("fd00::1/128"), 1);
        t.insert(net("0.0.0.0/0"), 2);
        let mut mine: Vec<_> = t.iter_value(&1).collect();
        mine.sort();
        assert_eq!(mine, [net("10.0.0.0/24"), net("fd00::1/128")]);
        t.remove_value(&1);
        assert_eq!(t.lookup(ip("10.0.0.5")), Some(&2), "falls back to /0");
        assert_eq!(t.lookup(ip("fd00::1")), None);
        assert_eq!(t.len(), 2);
        t.remove_value(&2);
        assert!(t.is_empty());
    }

    /// Brute force: the longest prefix among all entries containing the
    /// address, the last insertion winning for equal prefixes.
    fn reference_lookup(entries: &[(IpNet, u8)], addr: IpAddr) -> Option<u8> {
        entries
            .iter()
            .filter(|(n, _)| n.contains(&addr))
            .max_by_key(|(n, _)| n.prefix_len())
            .map(|(_, v)| *v)
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(IpNet, u8),
        Remove(IpNet),
        RemoveValue(u8),
    }

    /// Addresses from a small pool so that prefixes overlap and lookups hit.
    fn addr_strategy() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            (any::<u8>(), any::<u8>()).prop_map(|(a, b)| IpAddr::V4(Ipv4Addr::new(
                10,
                a % 4,
                b,
                b
            ))),
            any::<u32>().prop_map(|x| IpAddr::V4(Ipv4Addr::from_bits(x))),
            (any::<u16>(), any::<u16>()).prop_map(|(a, b)| {
                IpAddr::V6(Ipv6Addr::new(0xfd00, a % 4, 0, 0, 0, 0, b % 8, b))
            }),
            any::<u128>().prop_map(|x| IpAddr::V6(Ipv6Addr::from_bits(x))),
        ]
    }

    fn net_strategy() -> impl Strategy<Value = IpNet> {
        (addr_strategy(), any::<u8>()).prop_map(|(a, l)| match a {
            IpAddr::V4(a) => IpNet::V4(Ipv4Net::new(a, l % 33).expect("len <= 32").trunc()),
            IpAddr::V6(a) => IpNet::V6(Ipv6Net::new(a, l % 129).expect("len <= 128").trunc()),
        })
    }

    fn op_strategy() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (net_strategy(), 0u8..5).prop_map(|(n, v)| Op::Insert(n, v)),
            2 => net_strategy().prop_map(Op::Remove),
            1 => (0u8..5).prop_map(Op::RemoveValue),
        ]
    }

    proptest! {
        #[test]
        fn matches_brute_force(
            ops in proptest::collection::vec(op_strategy(), 0..60),
            probes in proptest::collection::vec(addr_strategy(), 1..40),
        ) {
            let mut table = AllowedIps::new();
            let mut reference: Vec<(IpNet, u8)> = Vec::new();
            for op in &ops {
                match *op {
                    Op::Insert(n, v) => {
                        let before = reference.iter().find(|(m, _)| *m == n).map(|(_, v)| *v);
                        prop_assert_eq!(table.insert(n, v), before);
                        reference.retain(|(m, _)| *m != n);
                        reference.push((n, v));
                    }
                    Op::Remove(n) => {
                        let before = reference.iter().find(|(m, _)| *m == n).map(|(_, v)| *v);
                        prop_assert_eq!(table.remove(n), before);
                        reference.retain(|(m, _)| *m != n);
                    }
                    Op::RemoveValue(v) => {
                        table.remove_value(&v);
                        reference.retain(|(_, w)| *w != v);
                    }
                }
            }
            prop_assert_eq!(table.len(), reference.len());
            for addr in probes.iter().copied().chain(reference.iter().map(|(n, _)| n.addr())) {
                prop_assert_eq!(table.lookup(addr).copied(), reference_lookup(&reference, addr), "{}", addr);
            }
            let mut got: Vec<(IpNet, u8)> = table.iter().map(|(n, v)| (n, *v)).collect();
            got.sort();
            reference.sort();
            prop_assert_eq!(got, reference);
        }
    }
}
