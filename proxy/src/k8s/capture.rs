//! The traffic-capture rules `meshward init` writes, as `iptables-restore`
//! input (one atomic transaction per IP family). Pure: the caller reads the
//! current nat table (`iptables-save -t nat`) and runs the restore.
//!
//! Chains (all in the nat table, flushed and refilled on every run, so a
//! re-run replaces the rules instead of appending duplicates):
//! - `MESHWARD_INBOUND` (from PREROUTING): skipped ports return, every other
//!   TCP connection goes to `MESHWARD_IN_REDIRECT` (REDIRECT to the inbound port).
//! - `MESHWARD_OUTPUT` (from OUTPUT): the proxy's own uid, loopback, excluded
//!   CIDRs and ports return; every other TCP connection goes to
//!   `MESHWARD_REDIRECT` (REDIRECT to the outbound port).

use std::fmt::Write as _;

use ipnet::IpNet;

/// Chain for inbound connections (jumped to from PREROUTING).
pub const INBOUND: &str = "MESHWARD_INBOUND";
/// Chain that redirects to the inbound port.
pub const IN_REDIRECT: &str = "MESHWARD_IN_REDIRECT";
/// Chain for outbound connections (jumped to from OUTPUT).
pub const OUTPUT: &str = "MESHWARD_OUTPUT";
/// Chain that redirects to the outbound port.
pub const REDIRECT: &str = "MESHWARD_REDIRECT";

/// What to capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    /// The proxy's inbound listener port.
    pub inbound_port: u16,
    /// The proxy's transparent outbound listener port.
    pub outbound_port: u16,
    /// The uid the proxy runs as: its own connections are never captured.
    pub proxy_uid: u32,
    /// Inbound destination ports left alone (admin, health, user choices).
    pub skip_inbound_ports: Vec<u16>,
    /// Outbound destination ports left alone.
    pub skip_outbound_ports: Vec<u16>,
    /// Outbound destinations left alone (both families; each family uses its own).
    pub exclude_outbound_cidrs: Vec<IpNet>,
}

/// IPv4 (`iptables`) or IPv6 (`ip6tables`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The binary prefix: `iptables` or `ip6tables`.
    pub fn tool(self) -> &'static str {
        match self {
            Self::V4 => "iptables",
            Self::V6 => "ip6tables",
        }
    }

    fn loopback(self) -> &'static str {
        match self {
            Self::V4 => "127.0.0.0/8",
            Self::V6 => "::1/128",
        }
    }
}

/// The jump rules from the built-in chains; restore adds them only when
/// `iptables-save` does not already show them.
pub fn jumps() -> [(&'static str, String); 2] {
    [("PREROUTING", format!("-A PREROUTING -p tcp -j {INBOUND}")), ("OUTPUT", format!("-A OUTPUT -p tcp -j {OUTPUT}"))]
}

/// `iptables-restore --noflush` input for `family`. `current_nat` is the
/// output of `iptables-save -t nat` (empty when nothing is there yet): jump
/// rules already present are not added twice.
pub fn restore_input(cfg: &Capture, family: Family, current_nat: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# meshward capture rules ({}), for {}-restore --noflush", family.tool(), family.tool());
    s.push_str("*nat\n");
    for chain in [INBOUND, IN_REDIRECT, OUTPUT, REDIRECT] {
        let _ = writeln!(s, ":{chain} - [0:0]");
    }
    for chain in [INBOUND, IN_REDIRECT, OUTPUT, REDIRECT] {
        let _ = writeln!(s, "-F {chain}");
    }
    let _ = writeln!(s, "-A {IN_REDIRECT} -p tcp -j REDIRECT --to-ports {}", cfg.inbound_port);
    let _ = writeln!(s, "-A {REDIRECT} -p tcp -j REDIRECT --to-ports {}", cfg.outbound_port);

    // Inbound: the proxy's own ports and the skipped ones reach their listener directly.
    let mut skip_in: Vec<u16> =
        [cfg.inbound_port, cfg.outbound_port].into_iter().chain(cfg.skip_inbound_ports.iter().copied()).collect();
    skip_in.sort_unstable();
    skip_in.dedup();
    for port in skip_in {
        let _ = writeln!(s, "-A {INBOUND} -p tcp --dport {port} -j RETURN");
    }
    let _ = writeln!(s, "-A {INBOUND} -p tcp -j {IN_REDIRECT}");

    // Outbound: never the proxy itself (it would loop), never loopback.
    let _ = writeln!(s, "-A {OUTPUT} -m owner --uid-owner {} -j RETURN", cfg.proxy_uid);
    let _ = writeln!(s, "-A {OUTPUT} -o lo -j RETURN");
    let _ = writeln!(s, "-A {OUTPUT} -d {} -j RETURN", family.loopback());
    for net in &cfg.exclude_outbound_cidrs {
        let matches = matches!((family, net), (Family::V4, IpNet::V4(_)) | (Family::V6, IpNet::V6(_)));
        if matches {
            let _ = writeln!(s, "-A {OUTPUT} -d {net} -j RETURN");
        }
    }
    for port in &cfg.skip_outbound_ports {
        let _ = writeln!(s, "-A {OUTPUT} -p tcp --dport {port} -j RETURN");
    }
    let _ = writeln!(s, "-A {OUTPUT} -p tcp -j {REDIRECT}");

    let present: Vec<&str> = current_nat.lines().map(str::trim).collect();
    for (_, rule) in jumps() {
        if !present.contains(&rule.as_str()) {
            s.push_str(&rule);
            s.push('\n');
        }
    }
    s.push_str("COMMIT\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Capture {
        Capture {
            inbound_port: 15006,
            outbound_port: 15001,
            proxy_uid: 1337,
            skip_inbound_ports: vec![15000, 8081],
            skip_outbound_ports: vec![5432],
            exclude_outbound_cidrs: vec!["10.96.0.1/32".parse().expect("cidr"), "fd00::/8".parse().expect("cidr")],
        }
    }

    #[test]
    fn v4_rules_in_order() {
        let r = restore_input(&cfg(), Family::V4, "");
        let lines: Vec<&str> = r.lines().filter(|l| l.starts_with("-A")).collect();
        assert_eq!(
            lines,
            [
                "-A MESHWARD_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
                "-A MESHWARD_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
                "-A MESHWARD_INBOUND -p tcp --dport 8081 -j RETURN",
                "-A MESHWARD_INBOUND -p tcp --dport 15000 -j RETURN",
                "-A MESHWARD_INBOUND -p tcp --dport 15001 -j RETURN",
                "-A MESHWARD_INBOUND -p tcp --dport 15006 -j RETURN",
                "-A MESHWARD_INBOUND -p tcp -j MESHWARD_IN_REDIRECT",
                "-A MESHWARD_OUTPUT -m owner --uid-owner 1337 -j RETURN",
                "-A MESHWARD_OUTPUT -o lo -j RETURN",
                "-A MESHWARD_OUTPUT -d 127.0.0.0/8 -j RETURN",
                "-A MESHWARD_OUTPUT -d 10.96.0.1/32 -j RETURN",
                "-A MESHWARD_OUTPUT -p tcp --dport 5432 -j RETURN",
                "-A MESHWARD_OUTPUT -p tcp -j MESHWARD_REDIRECT",
                "-A PREROUTING -p tcp -j MESHWARD_INBOUND",
                "-A OUTPUT -p tcp -j MESHWARD_OUTPUT",
            ]
        );
        assert!(r.starts_with("# meshward") && r.ends_with("COMMIT\n"));
    }

    #[test]
    fn v6_uses_v6_cidrs_and_loopback() {
        let r = restore_input(&cfg(), Family::V6, "");
        assert!(r.contains("-d fd00::/8 -j RETURN") && r.contains("-d ::1/128 -j RETURN"), "{r}");
        assert!(!r.contains("10.96.0.1"), "{r}");
    }

    #[test]
    fn rerun_does_not_add_jumps_twice() {
        let first = restore_input(&cfg(), Family::V4, "");
        let saved = "*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -p tcp -j MESHWARD_INBOUND\n-A OUTPUT -p tcp -j MESHWARD_OUTPUT\nCOMMIT\n";
        let second = restore_input(&cfg(), Family::V4, saved);
        assert!(first.contains("-A PREROUTING"));
        assert!(
            !second.contains("-A PREROUTING") && !second.contains("-A OUTPUT -p tcp -j MESHWARD_OUTPUT"),
            "{second}"
        );
        assert!(second.contains("-F MESHWARD_OUTPUT"), "own chains are flushed first: {second}");
    }
}
