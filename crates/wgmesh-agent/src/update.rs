//! Following the control stream: which map a [`MapUpdate`] leads to.
//!
//! A `Full` replaces the map. A `Delta` applies to the map at its
//! `from_version` ([`NetworkMap::apply`]); when the agent's map is at
//! another version (a message was lost, or the agent has no map yet) the
//! full map must be fetched, and the delta is applied on top of it if it
//! follows it. Pure; fetching is [`crate::run`]'s.

use wgmesh_core::netmap::{MapDelta, MapUpdate, NetworkMap};

/// What an update leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// The map to install.
    Map(NetworkMap),
    /// The delta does not follow the current map: fetch the full map and
    /// pass it to [`after_refetch`].
    Refetch(MapDelta),
}

pub fn next_map(current: Option<&NetworkMap>, update: MapUpdate) -> Next {
    match update {
        MapUpdate::Full(map) => Next::Map(map),
        MapUpdate::Delta(delta) => match current {
            None => Next::Refetch(delta),
            Some(cur) => {
                let mut map = cur.clone();
                match map.apply(&delta) {
                    Ok(()) => Next::Map(map),
                    Err(_) => Next::Refetch(delta),
                }
            }
        },
    }
}

/// The fetched map, with `delta` applied if it follows it (else the
/// fetched map is newer or the delta is stale: the fetched map stands).
pub fn after_refetch(mut fetched: NetworkMap, delta: &MapDelta) -> NetworkMap {
    if fetched.version == delta.from_version {
        // Cannot fail: the versions were just compared.
        let _ = fetched.apply(delta);
    }
    fetched
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::tests::{key, map, peer};

    fn delta(from: u64, upsert: &[u8], remove: &[u8]) -> MapDelta {
        MapDelta {
            from_version: from,
            version: from + 1,
            upsert: upsert.iter().map(|&i| peer(i)).collect(),
            remove: remove.iter().map(|&i| key(i)).collect(),
        }
    }

    #[test]
    fn full_replaces_whatever_was_there() {
        let m = map(7, &[1]);
        assert_eq!(
            next_map(Some(&map(9, &[2, 3])), MapUpdate::Full(m.clone())),
            Next::Map(m.clone())
        );
        assert_eq!(next_map(None, MapUpdate::Full(m.clone())), Next::Map(m));
    }

    #[test]
    fn a_delta_that_follows_is_applied() {
        let cur = map(3, &[1, 2]);
        let Next::Map(m) = next_map(Some(&cur), MapUpdate::Delta(delta(3, &[4], &[1]))) else {
            panic!("applies");
        };
        assert_eq!(m, map(4, &[2, 4]));
    }

    #[test]
    fn a_gap_or_no_map_asks_for_the_full_map() {
        let d = delta(5, &[4], &[]);
        assert_eq!(
            next_map(Some(&map(3, &[1])), MapUpdate::Delta(d.clone())),
            Next::Refetch(d.clone())
        );
        assert_eq!(
            next_map(None, MapUpdate::Delta(d.clone())),
            Next::Refetch(d)
        );
    }

    #[test]
    fn refetched_map_takes_the_delta_only_if_it_follows() {
        let d = delta(5, &[4], &[1]);
        assert_eq!(after_refetch(map(5, &[1, 2]), &d), map(6, &[2, 4]));
        // Newer than the delta: it already holds the change.
        assert_eq!(after_refetch(map(8, &[1, 2]), &d), map(8, &[1, 2]));
    }
}
