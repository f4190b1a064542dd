//! A stock WireGuard node in the lab: a wg-quick-alike on wireguard-go.
