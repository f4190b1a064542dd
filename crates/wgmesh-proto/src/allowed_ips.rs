//! Cryptokey routing's table: the peer for an address is the one whose
//! AllowedIPs hold the longest matching prefix (WireGuard paper §2).
