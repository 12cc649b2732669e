//! `meshward certs`: a DEVELOPMENT-ONLY PKI (rcgen). It creates a CA and
//! issues SPIFFE workload certificates as PEM files, for local meshes, demos
//! and tests. Production meshes get certificates from cert-manager or SPIRE.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;

use crate::tls::SpiffeId;

/// Command-line arguments of `meshward certs`.
#[derive(Debug, clap::Subcommand)]
pub enum CertsCommand {
    /// Create a development CA: DIR/ca.crt and DIR/ca.key.
    Ca {
        /// Output directory (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Trust domain, used in the CA's name.
        #[arg(long, default_value = "cluster.local")]
        trust_domain: String,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
    /// Issue a workload certificate for a SPIFFE ID: DIR/NAME.crt and DIR/NAME.key.
    Issue {
        /// Directory holding ca.crt and ca.key.
        #[arg(long)]
        ca: PathBuf,
        /// SPIFFE ID, e.g. spiffe://cluster.local/ns/ml/sa/model.
        #[arg(long)]
        spiffe_id: String,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// File name stem.
        #[arg(long, default_value = "workload")]
        name: String,
        /// Validity in days.
        #[arg(long, default_value_t = 30)]
        days: u32,
        /// Issue an already expired certificate (for testing refusal).
        #[arg(long)]
        expired: bool,
        /// Extra DNS SANs (e.g. localhost for non-mesh TLS clients).
        #[arg(long)]
        dns: Vec<String>,
    },
}

/// A development CA in memory.
pub struct DevCa {
    key: KeyPair,
    cert: rcgen::Certificate,
}

/// A PEM certificate and key.
#[derive(Debug, Clone)]
pub struct Pem {
    /// Certificate (PEM).
    pub cert: String,
    /// Private key (PEM, PKCS#8).
    pub key: String,
}

/// How long an issued certificate is valid.
#[derive(Debug, Clone, Copy)]
pub enum Validity {
    /// From a minute ago for this long.
    For(Duration),
    /// Expired yesterday.
    Expired,
}

impl DevCa {
    /// Creates a new CA.
    pub fn new(trust_domain: &str, days: u32) -> anyhow::Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, format!("meshward development CA ({trust_domain})"));
        params.distinguished_name.push(DnType::OrganizationName, "meshward (development only)");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + time::Duration::days(i64::from(days));
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Self { key, cert })
    }

    /// Loads a CA written by [`DevCa::write`].
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let cert_pem =
            std::fs::read_to_string(dir.join("ca.crt")).with_context(|| format!("reading {}/ca.crt", dir.display()))?;
        let key_pem =
            std::fs::read_to_string(dir.join("ca.key")).with_context(|| format!("reading {}/ca.key", dir.display()))?;
        let key = KeyPair::from_pem(&key_pem).context("ca.key is not a usable private key")?;
        let params = CertificateParams::from_ca_cert_pem(&cert_pem).context("ca.crt is not a CA certificate")?;
        // Re-signing the same parameters with the same key gives an issuer
        // with the same name and key identifier, which is all a chain needs.
        let cert = params.self_signed(&key)?;
        Ok(Self { key, cert })
    }

    /// The CA certificate (the trust bundle).
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// Writes ca.crt and ca.key (mode 0600) into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        write_file(&dir.join("ca.crt"), &self.cert.pem(), false)?;
        write_file(&dir.join("ca.key"), &self.key.serialize_pem(), true)
    }

    /// Issues a workload certificate for `id` (serverAuth and clientAuth).
    pub fn issue(&self, id: &SpiffeId, validity: Validity, dns: &[String]) -> anyhow::Result<Pem> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::OrganizationName, "meshward (development only)");
        params.subject_alt_names = vec![SanType::URI(id.as_str().try_into()?)];
        for d in dns {
            params.subject_alt_names.push(SanType::DnsName(d.as_str().try_into()?));
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        match validity {
            Validity::For(d) => {
                params.not_before = now - time::Duration::minutes(1);
                params.not_after = now + time::Duration::seconds(i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2));
            }
            Validity::Expired => {
                params.not_before = now - time::Duration::days(2);
                params.not_after = now - time::Duration::days(1);
            }
        }
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok(Pem { cert: cert.pem(), key: key.serialize_pem() })
    }
}

fn write_file(path: &Path, contents: &str, private: bool) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    if private {
        opts.mode(0o600);
    }
    let mut f = opts.open(path).with_context(|| format!("writing {}", path.display()))?;
    f.write_all(contents.as_bytes())?;
    Ok(())
}

/// Writes `pem` as DIR/NAME.crt and DIR/NAME.key.
pub fn write_pem(dir: &Path, name: &str, pem: &Pem) -> anyhow::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let (c, k) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    write_file(&c, &pem.cert, false)?;
    write_file(&k, &pem.key, true)?;
    Ok((c, k))
}

/// Runs `meshward certs ...`.
pub fn run(cmd: CertsCommand) -> anyhow::Result<()> {
    eprintln!("meshward certs: DEVELOPMENT-ONLY PKI; use cert-manager or SPIRE in production");
    match cmd {
        CertsCommand::Ca { out, trust_domain, days } => {
            let ca = DevCa::new(&trust_domain, days)?;
            ca.write(&out)?;
            println!("{}", out.join("ca.crt").display());
        }
        CertsCommand::Issue { ca, spiffe_id, out, name, days, expired, dns } => {
            let id = SpiffeId::parse(&spiffe_id)?;
            let ca = DevCa::load(&ca)?;
            let validity =
                if expired { Validity::Expired } else { Validity::For(Duration::from_secs(u64::from(days) * 86_400)) };
            let pem = ca.issue(&id, validity, &dns)?;
            let (c, _) = write_pem(&out, &name, &pem)?;
            println!("{}", c.display());
        }
    }
    Ok(())
}
