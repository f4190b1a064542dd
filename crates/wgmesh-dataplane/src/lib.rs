//! wgmesh-dataplane: the IO shell around wgmesh-proto's sans-IO WireGuard
//! device: the TUN device, the UDP socket, the UAPI socket, the event loop.
