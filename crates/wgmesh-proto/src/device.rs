//! A whole WireGuard interface's protocol state: our key, the peers, their
//! sessions, and the routing between them and the network.
