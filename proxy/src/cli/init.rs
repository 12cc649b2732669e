//! `meshward init`: writes the traffic-capture rules (iptables nat, IPv4 and
//! IPv6) in the current network namespace, as the capture init container of
//! an injected pod does. The rules come from [`crate::k8s::capture`]; this
//! file only runs `iptables-save`/`iptables-restore`. Also `meshward
//! wait-ready`, the postStart hook of legacy (non-native) sidecars.

use std::io::{Read as _, Write as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::k8s::annotations;
use crate::k8s::capture::{restore_input, Capture, Family};

/// Arguments of `meshward init`.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// The proxy's inbound listener port (inbound TCP is redirected there).
    #[arg(long, default_value_t = 15006)]
    pub inbound_port: u16,
    /// The proxy's transparent outbound listener port (outbound TCP is redirected there).
    #[arg(long, default_value_t = 15001)]
    pub outbound_port: u16,
    /// The proxy's uid: its own connections are never captured.
    #[arg(long, default_value_t = 1337)]
    pub proxy_uid: u32,
    /// Comma-separated inbound ports left alone (e.g. the admin port 15000).
    #[arg(long, default_value = "15000")]
    pub skip_inbound_ports: String,
    /// Comma-separated outbound destination ports left alone.
    #[arg(long, default_value = "")]
    pub skip_outbound_ports: String,
    /// Comma-separated outbound destination CIDRs left alone.
    #[arg(long, default_value = "")]
    pub exclude_outbound_cidrs: String,
    /// Write ip6tables rules too.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub ipv6: bool,
    /// Print the exact iptables-restore input instead of applying it.
    #[arg(long)]
    pub dry_run: bool,
}

impl InitArgs {
    fn capture(&self) -> anyhow::Result<Capture> {
        let ports = |flag: &str, v: &str| annotations::ports(v).map_err(|e| anyhow::anyhow!("--{flag} \"{v}\" {e}"));
        anyhow::ensure!(
            self.inbound_port != 0 && self.outbound_port != 0 && self.inbound_port != self.outbound_port,
            "--inbound-port and --outbound-port must be distinct non-zero ports"
        );
        anyhow::ensure!(self.proxy_uid != 0, "--proxy-uid must not be 0 (root's traffic would never be captured)");
        Ok(Capture {
            inbound_port: self.inbound_port,
            outbound_port: self.outbound_port,
            proxy_uid: self.proxy_uid,
            skip_inbound_ports: ports("skip-inbound-ports", &self.skip_inbound_ports)?,
            skip_outbound_ports: ports("skip-outbound-ports", &self.skip_outbound_ports)?,
            exclude_outbound_cidrs: annotations::cidrs(&self.exclude_outbound_cidrs)
                .map_err(|e| anyhow::anyhow!("--exclude-outbound-cidrs \"{}\" {e}", self.exclude_outbound_cidrs))?,
        })
    }
}

/// Runs `meshward init`.
pub fn run(args: &InitArgs) -> anyhow::Result<()> {
    let cfg = args.capture()?;
    let families: &[Family] = if args.ipv6 { &[Family::V4, Family::V6] } else { &[Family::V4] };
    if args.dry_run {
        for family in families {
            print!("{}", restore_input(&cfg, *family, ""));
        }
        return Ok(());
    }
    if !has_net_admin() {
        bail!(
            "CAP_NET_ADMIN is missing: the capture init container needs capabilities NET_ADMIN and NET_RAW \
             (and runAsUser 0); use --dry-run to print the rules without applying them"
        );
    }
    for family in families {
        let current = tool(&format!("{}-save", family.tool()), &["-t", "nat"], None)?;
        let input = restore_input(&cfg, *family, &current);
        tool(&format!("{}-restore", family.tool()), &["--noflush"], Some(&input))?;
        print!("{input}");
    }
    Ok(())
}

/// Whether the effective capability set has CAP_NET_ADMIN (bit 12).
fn has_net_admin() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 12) != 0)
}

/// Runs `name args` with `stdin`; its stdout, or an error quoting its stderr.
fn tool(name: &str, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
    let mut child = match Command::new(name)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("`{name}` was not found: the image needs the iptables package (iptables-restore, ip6tables-restore)")
        }
        Err(e) => return Err(e).with_context(|| format!("starting {name}")),
    };
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).with_context(|| format!("writing to {name}"))?;
    }
    let out = child.wait_with_output().with_context(|| format!("waiting for {name}"))?;
    if !out.status.success() {
        bail!("{name} {} failed ({}): {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Arguments of `meshward wait-ready`.
#[derive(Debug, clap::Args)]
pub struct WaitReadyArgs {
    /// The proxy's admin address.
    #[arg(long, default_value = "127.0.0.1:15000")]
    pub admin: std::net::SocketAddr,
    /// Give up after this long (e.g. 120s).
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// Polls `GET /ready` until it answers 200 or the timeout passes.
pub fn wait_ready(args: &WaitReadyArgs) -> anyhow::Result<()> {
    let deadline = Instant::now() + args.timeout;
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        match ready_once(args.admin) {
            Ok(true) => return Ok(()),
            Ok(false) => last = "not ready (503)".into(),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("the proxy at {} was not ready after {:?}: {last}", args.admin, args.timeout)
}

fn ready_once(admin: std::net::SocketAddr) -> std::io::Result<bool> {
    let mut s = std::net::TcpStream::connect_timeout(&admin, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(1)))?;
    s.write_all(format!("GET /ready HTTP/1.1\r\nhost: {admin}\r\nconnection: close\r\n\r\n").as_bytes())?;
    let mut head = [0u8; 16];
    let n = s.read(&mut head)?;
    Ok(head[..n].starts_with(b"HTTP/1.1 200"))
}
