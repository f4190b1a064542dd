//! The interface's one UDP socket: bound dual-stack, with large buffers and
//! the device's fwmark, and swappable when `listen_port` changes.
//!
//! One IPv6 socket on `[::]:port` with IPV6_V6ONLY off serves IPv4 and IPv6
//! peers alike (IPv4 peers appear as `::ffff:a.b.c.d`, RFC 4291 §2.5.5.2),
//! as wireguard-go's two sockets do between them. Addresses are handed to
//! the device in their canonical form (plain IPv4 for a mapped address), so
//! that `wg show` prints `192.0.2.1:51820` and roaming compares like with
//! like; and mapped back when sending. Where the host has no IPv6 at all,
//! the socket falls back to IPv4 only.
//!
//! Batching (Linux UDP GSO and GRO, udp(7) `UDP_SEGMENT` / `UDP_GRO`): a run
//! of equal-sized datagrams to one peer goes out in one `sendmsg`, cut by
//! the kernel (or the NIC) into datagrams of the segment size; and the
//! kernel hands back consecutive datagrams of one flow as one buffer with
//! their segment size, so one `recvmsg` can bring a whole burst. Both are
//! wire-invisible: peers see ordinary datagrams. Where the kernel refuses
//! GSO, the socket falls back to one `send_to` per datagram for good.

use std::io;
use std::io::{IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, SockaddrIn,
    SockaddrIn6, SockaddrStorage, bind, recvmsg, sendmsg, setsockopt, socket, sockopt,
};

/// Socket buffer size asked for: a burst of full-size datagrams must not be
/// dropped while a reader thread waits for the device lock.
pub const SOCKET_BUFFER: usize = 4 << 20;

/// The most datagrams one GSO send may carry: the kernel's
/// `UDP_MAX_SEGMENTS` was 64 before Linux 6.8 (128 since).
pub const GSO_MAX_SEGMENTS: usize = 64;

/// The most bytes one GSO send may carry: the UDP length field's limit,
/// less the UDP and IPv6 headers' worth of slack.
pub const GSO_MAX_BYTES: usize = 65_000;

/// Binds the WireGuard socket on `port` (0: any free port).
///
/// Buffers: SO_RCVBUFFORCE/SO_SNDBUFFORCE need CAP_NET_ADMIN, which an
/// engine creating a TUN device has; without it the plain options are
/// tried, which the kernel caps at net.core.[rw]mem_max.
pub fn bind_socket(port: u16, fwmark: u32) -> io::Result<UdpSocket> {
    let fd = match socket(
        AddressFamily::Inet6,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    ) {
        Ok(fd) => {
            setsockopt(&fd, sockopt::Ipv6V6Only, &false)?;
            let any = SockaddrIn6::from(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0));
            match bind(fd.as_raw_fd(), &any) {
                Ok(()) => fd,
                // No IPv6 on this host (disabled by sysctl): IPv4 only.
                Err(Errno::EADDRNOTAVAIL | Errno::EAFNOSUPPORT) => bind_v4(port)?,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Errno::EAFNOSUPPORT) => bind_v4(port)?,
        Err(e) => return Err(e.into()),
    };
    if setsockopt(&fd, sockopt::RcvBufForce, &SOCKET_BUFFER).is_err() {
        let _ = setsockopt(&fd, sockopt::RcvBuf, &SOCKET_BUFFER);
    }
    if setsockopt(&fd, sockopt::SndBufForce, &SOCKET_BUFFER).is_err() {
        let _ = setsockopt(&fd, sockopt::SndBuf, &SOCKET_BUFFER);
    }
    // Receive coalescing; without it (old kernels) every read is one
    // datagram, which `recv_batch` handles the same way.
    let _ = setsockopt(&fd, sockopt::UdpGroSegment, &true);
    let sock = UdpSocket::from(fd);
    // A new socket has no mark; setting SO_MARK at all needs CAP_NET_ADMIN,
    // so 0 is left alone, as wireguard-go does (conn/mark_unix.go).
    if fwmark != 0 {
        set_fwmark(&sock, fwmark)?;
    }
    Ok(sock)
}

fn bind_v4(port: u16) -> io::Result<std::os::fd::OwnedFd> {
    let fd = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let any = SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
    bind(fd.as_raw_fd(), &any)?;
    Ok(fd)
}

/// SO_MARK: the device's `fwmark`, which policy routing (wg-quick's
/// `not fwmark` rule) uses to keep the tunnel's own packets out of it.
/// 0 clears it. Needs CAP_NET_ADMIN (socket(7)), even for 0.
pub fn set_fwmark(sock: &UdpSocket, fwmark: u32) -> io::Result<()> {
    setsockopt(sock, sockopt::Mark, &fwmark).map_err(|e| {
        let e = io::Error::from(e);
        io::Error::new(
            e.kind(),
            format!("cannot set SO_MARK to {fwmark:#x} (needs CAP_NET_ADMIN): {e}"),
        )
    })
}

/// An IPv4-mapped IPv6 address as plain IPv4; anything else unchanged.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, v6.port())),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

/// The address to pass to `send_to` on `sock`: IPv4 mapped into IPv6 on a
/// dual-stack socket; `None` if the socket cannot reach it (an IPv6
/// destination on the IPv4-only fallback).
pub fn destination(sock_is_v6: bool, to: SocketAddr) -> Option<SocketAddr> {
    match (sock_is_v6, to) {
        (true, SocketAddr::V4(v4)) => Some(SocketAddr::V6(SocketAddrV6::new(
            v4.ip().to_ipv6_mapped(),
            v4.port(),
            0,
            0,
        ))),
        (false, SocketAddr::V6(v6)) => v6
            .ip()
            .to_ipv4_mapped()
            .map(|v4| SocketAddr::V4(SocketAddrV4::new(v4, v6.port()))),
        _ => Some(to),
    }
}

/// The current socket, replaced when the listen port changes.
///
/// Threads take the socket afresh for every packet (a read lock and an
/// `Arc` clone) instead of keeping it, so that a replaced socket closes,
/// and its port is free again, as soon as the one `recv` still blocked on
/// it returns (within the reader's timeout).
#[derive(Debug)]
pub struct SocketSlot {
    current: RwLock<Arc<BoundSocket>>,
}

/// A bound socket and what it is bound to.
#[derive(Debug)]
pub struct BoundSocket {
    pub sock: UdpSocket,
    pub port: u16,
    pub is_v6: bool,
    /// Cleared when the kernel refuses a GSO send: from then on, one
    /// datagram per `send_to`.
    gso: AtomicBool,
}

/// What [`BoundSocket::recv_batch`] read: `len` bytes from `from`, as
/// consecutive datagrams of `segment` bytes (the last may be shorter).
#[derive(Debug, Clone, Copy)]
pub struct Received {
    pub len: usize,
    pub segment: usize,
    pub from: SocketAddr,
}

impl BoundSocket {
    pub fn new(sock: UdpSocket) -> io::Result<Self> {
        let local = sock.local_addr()?;
        Ok(Self {
            sock,
            port: local.port(),
            is_v6: local.is_ipv6(),
            gso: AtomicBool::new(true),
        })
    }

    /// Sends `bytes`, consecutive datagrams of `segment` bytes each (the
    /// last may be shorter; at most [`GSO_MAX_SEGMENTS`] and
    /// [`GSO_MAX_BYTES`]), all to `to`, with one GSO `sendmsg`.
    pub fn send_segments(&self, bytes: &[u8], segment: usize, to: SocketAddr) -> io::Result<()> {
        if bytes.len() <= segment {
            return self.send_to(bytes, to).map(drop);
        }
        if self.gso.load(Ordering::Relaxed) {
            let seg =
                u16::try_from(segment).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
            match self.send_gso(bytes, seg, to) {
                Ok(()) => return Ok(()),
                // No GSO here (EIO from a device without checksum offload
                // and no software fallback, EINVAL/ENOPROTOOPT from an old
                // kernel): segment by hand, now and from now on.
                Err(Errno::EIO | Errno::EINVAL | Errno::ENOPROTOOPT | Errno::EOPNOTSUPP) => {
                    self.gso.store(false, Ordering::Relaxed);
                }
                Err(e) => return Err(e.into()),
            }
        }
        let mut first_error = None;
        for datagram in bytes.chunks(segment) {
            if let Err(e) = self.send_to(datagram, to) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn send_gso(&self, bytes: &[u8], segment: u16, to: SocketAddr) -> Result<(), Errno> {
        let dest = destination(self.is_v6, to).ok_or(Errno::EAFNOSUPPORT)?;
        let iov = [IoSlice::new(bytes)];
        let cmsg = [ControlMessage::UdpGsoSegments(&segment)];
        let fd = self.sock.as_raw_fd();
        let sent = match dest {
            SocketAddr::V4(v4) => sendmsg(
                fd,
                &iov,
                &cmsg,
                MsgFlags::empty(),
                Some(&SockaddrIn::from(v4)),
            )?,
            SocketAddr::V6(v6) => sendmsg(
                fd,
                &iov,
                &cmsg,
                MsgFlags::empty(),
                Some(&SockaddrIn6::from(v6)),
            )?,
        };
        if sent == bytes.len() {
            Ok(())
        } else {
            Err(Errno::EMSGSIZE)
        }
    }

    /// Receives into `buf` (64 KiB: a GRO read can fill it) one datagram
    /// or, with GRO, a run of them; `cmsg` is reusable space for the
    /// segment size ([`recv_cmsg_space`]). The address is the socket's
    /// (possibly mapped) form: pass it through [`canonical`].
    pub fn recv_batch(&self, buf: &mut [u8], cmsg: &mut [u8]) -> io::Result<Received> {
        let mut iov = [IoSliceMut::new(buf)];
        let msg = recvmsg::<SockaddrStorage>(
            self.sock.as_raw_fd(),
            &mut iov,
            Some(cmsg),
            MsgFlags::empty(),
        )?;
        let len = msg.bytes;
        let mut segment = len;
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::UdpGroSegments(size) = c {
                segment = usize::try_from(size).unwrap_or(len).max(1);
            }
        }
        let from = msg
            .address
            .as_ref()
            .and_then(storage_to_socket_addr)
            .ok_or_else(|| io::Error::other("datagram without a source address"))?;
        Ok(Received { len, segment, from })
    }

    /// Sends one datagram to `to` (a canonical address).
    pub fn send_to(&self, bytes: &[u8], to: SocketAddr) -> io::Result<usize> {
        let dest = destination(self.is_v6, to).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                "IPv6 destination on an IPv4-only socket",
            )
        })?;
        self.sock.send_to(bytes, dest)
    }
}

/// Control-message space for [`BoundSocket::recv_batch`]: one `UDP_GRO`
/// segment size.
pub fn recv_cmsg_space() -> Vec<u8> {
    // The kernel reports the segment size as a C int.
    nix::cmsg_space!(i32)
}

fn storage_to_socket_addr(s: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = s.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    s.as_sockaddr_in6()
        .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
}

impl SocketSlot {
    pub fn new(sock: BoundSocket) -> Self {
        Self {
            current: RwLock::new(Arc::new(sock)),
        }
    }

    pub fn get(&self) -> Arc<BoundSocket> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Puts `sock` in place; the old one closes when its last user lets go.
    pub fn replace(&self, sock: BoundSocket) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(sock);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn mapped_addresses_round_trip() {
        let v4: SocketAddr = "192.0.2.1:51820".parse().expect("addr");
        let mapped = destination(true, v4).expect("dual stack reaches v4");
        assert_eq!(mapped.to_string(), "[::ffff:192.0.2.1]:51820");
        assert_eq!(canonical(mapped), v4);
        let v6: SocketAddr = "[2001:db8::1]:51820".parse().expect("addr");
        assert_eq!(canonical(v6), v6);
        assert_eq!(destination(true, v6), Some(v6));
        assert_eq!(destination(false, v6), None);
        assert_eq!(destination(false, mapped), Some(v4));
    }

    /// One socket hears an IPv4 and an IPv6 sender on loopback, and the
    /// senders are seen as their plain addresses.
    #[test]
    fn dual_stack_socket_hears_v4_and_v6() {
        let sock = BoundSocket::new(bind_socket(0, 0).expect("bind")).expect("local addr");
        assert!(sock.is_v6, "this host has IPv6 on loopback");
        assert_ne!(sock.port, 0);
        sock.sock
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut buf = [0u8; 64];
        for (bind, to) in [("127.0.0.1:0", "127.0.0.1"), ("[::1]:0", "::1")] {
            let sender = UdpSocket::bind(bind).expect("sender");
            let to: std::net::IpAddr = to.parse().expect("ip");
            sender
                .send_to(b"hello", SocketAddr::new(to, sock.port))
                .expect("send");
            let (n, from) = sock.sock.recv_from(&mut buf).expect("recv");
            assert_eq!(&buf[..n], b"hello");
            let from = canonical(from);
            assert_eq!(from, sender.local_addr().expect("local"));
            // And back, through the mapping.
            sock.send_to(b"back", from).expect("reply");
            sender
                .set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let (n, _) = sender.recv_from(&mut buf).expect("reply arrives");
            assert_eq!(&buf[..n], b"back");
        }
    }

    /// A GSO send of a run of datagrams arrives as exactly those datagrams,
    /// whether the receiver gets them coalesced (GRO) or one by one; for
    /// IPv4 (mapped) and IPv6 alike.
    #[test]
    fn gso_runs_arrive_as_the_datagrams_sent() {
        let rx = BoundSocket::new(bind_socket(0, 0).expect("bind")).expect("local addr");
        rx.sock
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let tx = BoundSocket::new(bind_socket(0, 0).expect("bind")).expect("local addr");
        let mut buf = vec![0u8; 65536];
        let mut cmsg = recv_cmsg_space();
        for to in ["127.0.0.1", "::1"] {
            let to = SocketAddr::new(to.parse().expect("ip"), rx.port);
            // Five of 100 bytes and a shorter last one, each numbered.
            let sent: Vec<Vec<u8>> = (0u8..6)
                .map(|i| vec![i; if i == 5 { 40 } else { 100 }])
                .collect();
            tx.send_segments(&sent.concat(), 100, to).expect("send");
            let mut got: Vec<Vec<u8>> = Vec::new();
            while got.len() < sent.len() {
                let r = rx.recv_batch(&mut buf, &mut cmsg).expect("recv");
                assert_eq!(canonical(r.from).port(), tx.port);
                got.extend(buf[..r.len].chunks(r.segment).map(<[u8]>::to_vec));
            }
            assert_eq!(got, sent);
        }
    }

    /// Without CAP_NET_ADMIN: binding with fwmark 0 works (no SO_MARK is
    /// set), and a non-zero fwmark fails with an error saying SO_MARK.
    /// Run as an unprivileged user by `unprivileged_binds`.
    #[test]
    #[ignore = "run as nobody by unprivileged_binds"]
    fn unprivileged_binds_inner() {
        assert!(!nix::unistd::geteuid().is_root(), "run me unprivileged");
        let sock = bind_socket(0, 0).expect("fwmark 0 needs no privilege");
        assert_ne!(sock.local_addr().expect("addr").port(), 0);
        let err = bind_socket(0, 0x10).expect_err("SO_MARK needs CAP_NET_ADMIN");
        assert!(err.to_string().contains("SO_MARK"), "{err}");
    }

    #[test]
    fn unprivileged_binds() {
        use std::os::unix::process::CommandExt as _;
        let mut cmd = std::process::Command::new(std::env::current_exe().expect("test binary"));
        cmd.args([
            "--exact",
            "udp::tests::unprivileged_binds_inner",
            "--ignored",
            "--nocapture",
        ]);
        if nix::unistd::geteuid().is_root() {
            // nobody: the test binary under target/ is world-executable.
            // std drops the supplementary groups with the uid.
            cmd.uid(65534).gid(65534);
        }
        let out = cmd.output().expect("run the inner test");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("1 passed"),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn a_replaced_socket_closes_when_let_go() {
        let slot = SocketSlot::new(BoundSocket::new(bind_socket(0, 0).expect("bind")).expect("ok"));
        let old = slot.get();
        let old_port = old.port;
        slot.replace(BoundSocket::new(bind_socket(0, 0).expect("bind")).expect("ok"));
        assert_ne!(slot.get().port, old_port);
        drop(old);
        // The port is free again.
        bind_socket(old_port, 0).expect("the old port can be bound again");
    }
}
