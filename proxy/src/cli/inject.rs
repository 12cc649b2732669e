//! `meshward inject`: manual injection of a YAML stream (files, directories
//! or stdin), like `linkerd inject` / `istioctl kube-inject`. Every pod
//! template is injected by [`crate::k8s::inject`]; documents without a pod
//! (and pods that opt out) are written back byte for byte, comments included.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_yaml::Value;

use crate::k8s::annotations::SidecarMode;
use crate::k8s::inject::{inject_object, string_map, Outcome, Settings};

/// Arguments of `meshward inject`.
#[derive(Debug, clap::Args)]
pub struct InjectArgs {
    /// YAML files or directories (`*.yaml`, `*.yml`, `*.json`, recursively); `-` or none: standard input.
    pub paths: Vec<PathBuf>,
    /// Injection settings.
    #[command(flatten)]
    pub settings: SettingsArgs,
}

/// Injection settings shared by `meshward inject` and `meshward injector`.
#[derive(Debug, Clone, clap::Args)]
pub struct SettingsArgs {
    /// Image of the proxy and capture init containers.
    #[arg(long, default_value = concat!("meshward:", env!("CARGO_PKG_VERSION")))]
    pub image: String,
    /// imagePullPolicy of the added containers (default: the cluster's).
    #[arg(long)]
    pub image_pull_policy: Option<String>,
    /// uid and gid of the proxy; its own connections are not captured.
    #[arg(long, default_value_t = 1337)]
    pub proxy_uid: u32,
    /// Port of the proxy's inbound listener.
    #[arg(long, default_value_t = 15006)]
    pub inbound_port: u16,
    /// Port of the proxy's transparent outbound listener.
    #[arg(long, default_value_t = 15001)]
    pub outbound_port: u16,
    /// Port of the proxy's admin server (probes, metrics); never captured.
    #[arg(long, default_value_t = 15000)]
    pub admin_port: u16,
    /// Default sidecar mode: native (init container with restartPolicy Always, Kubernetes >= 1.29) or legacy.
    #[arg(long, value_enum, default_value = "native")]
    pub sidecar_mode: ModeArg,
    /// Secret with tls.crt, tls.key and ca.crt; `{sa}` is the pod's service account.
    #[arg(long, default_value = "meshward-identity-{sa}")]
    pub identity_secret: String,
    /// Dual-stack listeners and ip6tables rules (pods may override with meshward.dev/ipv6).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub ipv6: bool,
}

/// `--sidecar-mode` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ModeArg {
    /// Init container with `restartPolicy: Always`.
    Native,
    /// First app container with a postStart hook.
    Legacy,
}

impl SettingsArgs {
    /// The checked settings.
    pub fn settings(&self) -> anyhow::Result<Settings> {
        if let Some(p) = &self.image_pull_policy {
            anyhow::ensure!(
                matches!(p.as_str(), "Always" | "IfNotPresent" | "Never"),
                "--image-pull-policy \"{p}\" (expected Always, IfNotPresent or Never)"
            );
        }
        let ports = [self.inbound_port, self.outbound_port, self.admin_port];
        anyhow::ensure!(
            ports.iter().all(|p| *p > 0) && ports[0] != ports[1] && ports[1] != ports[2] && ports[0] != ports[2],
            "--inbound-port, --outbound-port and --admin-port must be distinct non-zero ports (got {ports:?})"
        );
        anyhow::ensure!(
            self.proxy_uid != 0,
            "--proxy-uid must not be 0 (the proxy's traffic would escape capture as root's)"
        );
        Ok(Settings {
            image: self.image.clone(),
            image_pull_policy: self.image_pull_policy.clone(),
            proxy_uid: self.proxy_uid,
            inbound_port: self.inbound_port,
            outbound_port: self.outbound_port,
            admin_port: self.admin_port,
            sidecar_mode: match self.sidecar_mode {
                ModeArg::Native => SidecarMode::Native,
                ModeArg::Legacy => SidecarMode::Legacy,
            },
            identity_secret: self.identity_secret.clone(),
            ipv6: self.ipv6,
            version: env!("CARGO_PKG_VERSION").into(),
        })
    }
}

/// Runs `meshward inject`: injected YAML on stdout, warnings and skips on stderr.
pub fn run(args: &InjectArgs) -> anyhow::Result<()> {
    let settings = args.settings.settings()?;
    let mut inputs: Vec<(String, String)> = Vec::new();
    if args.paths.is_empty() || args.paths.iter().any(|p| p.as_os_str() == "-") {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("reading standard input")?;
        inputs.push(("<stdin>".into(), text));
    }
    for path in args.paths.iter().filter(|p| p.as_os_str() != "-") {
        for file in yaml_files(path)? {
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            inputs.push((file.display().to_string(), text));
        }
    }
    let (out, notes) = inject_stream(&inputs, &settings)?;
    for note in notes {
        eprintln!("meshward inject: {note}");
    }
    std::io::stdout().lock().write_all(out.as_bytes()).context("writing standard output")?;
    Ok(())
}

/// Injects every document of `inputs` (name, text); returns the output
/// stream and the notes (warnings, skips) for standard error.
pub fn inject_stream(inputs: &[(String, String)], settings: &Settings) -> anyhow::Result<(String, Vec<String>)> {
    let mut docs: Vec<(String, usize, &str, Value)> = Vec::new();
    for (name, text) in inputs {
        for (i, chunk) in split_documents(text).into_iter().enumerate() {
            let value: Value =
                serde_yaml::from_str(chunk).with_context(|| format!("{name}: document {}: not YAML", i + 1))?;
            docs.push((name.clone(), i + 1, chunk, value));
        }
    }
    // Namespace objects in the stream give defaults to the pods in them.
    let namespaces: BTreeMap<String, BTreeMap<String, String>> = docs
        .iter()
        .filter(|(_, _, _, v)| v.get("kind").and_then(Value::as_str) == Some("Namespace"))
        .filter_map(|(_, _, _, v)| {
            let meta = v.get("metadata")?;
            Some((meta.get("name")?.as_str()?.to_owned(), string_map(meta.get("annotations"))))
        })
        .collect();
    let mut out = String::new();
    let mut notes = Vec::new();
    for (name, index, chunk, mut value) in docs {
        let before = value.clone();
        let report =
            inject_object(&mut value, &namespaces, settings).with_context(|| format!("{name}: document {index}"))?;
        for (pod, r) in &report.pods {
            notes.extend(r.warnings.iter().map(|w| format!("{name}: {pod}: warning: {w}")));
            if let Outcome::Skipped(skip) = r.outcome {
                notes.push(format!("{name}: {pod}: not injected: {}", skip.reason()));
            }
        }
        if !out.is_empty() {
            out.push_str("---\n");
        }
        if value == before {
            out.push_str(chunk.trim_end_matches('\n'));
            out.push('\n');
        } else {
            out.push_str(&serde_yaml::to_string(&value).context("writing YAML")?);
        }
    }
    Ok((out, notes))
}

/// Splits a YAML stream at `---` lines. Documents that are only comments or
/// blank lines are kept only when they are not empty.
fn split_documents(text: &str) -> Vec<&str> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end();
        if bare == "---" || bare.starts_with("--- ") {
            docs.push(&text[start..offset]);
            // `--- ` followed by content keeps the content.
            start = offset + if bare == "---" { line.len() } else { 4 };
        }
        offset += line.len();
    }
    docs.push(&text[start..]);
    docs.into_iter()
        .filter(|d| d.lines().any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#') && l.trim() != "..."))
        .collect()
}

/// `path` itself, or the YAML/JSON files under it, sorted.
fn yaml_files(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut out = Vec::new();
    let mut stack = vec![path.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let p = entry?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml" || e == "json") {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_documents_and_keeps_untouched_text() {
        let text = "# a service\napiVersion: v1\nkind: Service # keep me\nmetadata: {name: s}\n---\n---\n# only a comment\n--- {apiVersion: v1, kind: Pod, metadata: {name: p}, spec: {containers: [{name: a, image: a}]}}\n";
        assert_eq!(split_documents(text).len(), 2);
        let (out, notes) = inject_stream(&[("t".into(), text.into())], &Settings::default()).expect("inject");
        assert!(notes.is_empty(), "{notes:?}");
        assert!(out.starts_with("# a service\napiVersion: v1\nkind: Service # keep me\n"), "{out}");
        assert!(out.contains("meshward-proxy"), "{out}");
        let (again, _) = inject_stream(&[("t".into(), out.clone())], &Settings::default()).expect("inject");
        assert_eq!(again, out, "inject twice gives the same bytes");
    }
}
