//! The original destination of a connection redirected by iptables
//! (`SO_ORIGINAL_DST` for IPv4, `IP6T_SO_ORIGINAL_DST` for IPv6), read with
//! socket2 so no unsafe code is needed here.

use std::net::SocketAddr;

use socket2::SockRef;
use tokio::net::TcpStream;

/// The address the client originally connected to, if the connection was
/// redirected to us; `None` when it came straight to our listener.
pub fn original_dst(stream: &TcpStream) -> std::io::Result<Option<SocketAddr>> {
    let local = stream.local_addr()?;
    let sock = SockRef::from(stream);
    // An IPv4 client on a dual-stack [::] listener has an IPv4-mapped local
    // address; its NAT entry is IPv4, so it needs the IPv4 option.
    let is_v4 = match local.ip() {
        std::net::IpAddr::V4(_) => true,
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some(),
    };
    let raw = if is_v4 { sock.original_dst() } else { sock.original_dst_ipv6() };
    let addr = match raw {
        Ok(a) => a.as_socket(),
        // ENOENT / ENOPROTOOPT: no conntrack entry, i.e. not redirected.
        Err(e) if matches!(e.raw_os_error(), Some(2) | Some(92)) => None,
        Err(e) => return Err(e),
    };
    // Without a redirect, conntrack reports our own listen address.
    let unmapped = |a: SocketAddr| match a {
        SocketAddr::V6(v6) => v6.ip().to_ipv4_mapped().map_or(a, |ip| SocketAddr::new(ip.into(), v6.port())),
        v4 => v4,
    };
    Ok(addr.filter(|a| unmapped(*a) != unmapped(local)))
}
