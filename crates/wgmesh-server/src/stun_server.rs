//! The server's STUN responder (RFC 8489 Binding): agents send a Binding
//! request from their WireGuard socket and learn the address their NAT
//! maps it to (their reflexive endpoint). RFC 3489 clients are answered
//! too (RFC 8489 §11), and requests with attributes we do not understand
//! get a 420 (§6.3.1.1): [`wgmesh_proto::stun::respond`]. Anything that
//! is not a well-formed Binding request is ignored, so the port cannot be
//! used to reflect traffic at a third party with amplification: a
//! response is never more than 2.7 times its request.

use std::sync::Arc;

use tokio::net::UdpSocket;

use crate::service::Service;

/// Answers Binding requests on `sock` until the task is dropped.
pub async fn serve(sock: UdpSocket, svc: Arc<Service>) {
    let mut buf = vec![0u8; 2048];
    loop {
        let (n, from) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                eprintln!("wgmesh server: STUN receive failed: {e}");
                continue;
            }
        };
        let Some(reply) = wgmesh_proto::stun::respond(&buf[..n], from) else {
            continue;
        };
        match sock.send_to(&reply.bytes, from).await {
            Ok(_) => svc.metrics.stun_answered(reply.kind, reply.rfc3489),
            Err(e) => eprintln!("wgmesh server: STUN reply to {from} failed: {e}"),
        }
    }
}
