//! The bodies each sink format POSTs for a notification. Examples of every
//! shape are in `docs/alerts.md`.

use serde_json::{json, Map, Value};

use super::config::{AlertsConfig, Format};
use super::group::{IncidentData, Notification, Status};
use super::rfc3339;

/// `alertname` label of every Alertmanager alert.
pub const ALERT_NAME: &str = "MeshwardAnomaly";
/// Alertmanager's "not yet ended" time.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// The JSON body of `note` for a sink of `format` named `sink`.
pub fn render(note: &Notification, format: Format, sink: &str, cfg: &AlertsConfig) -> Vec<u8> {
    let v = match format {
        Format::Alertmanager => alertmanager(note, sink, &cfg.external_url),
        Format::AlertmanagerApi => alertmanager_api(note, cfg),
        Format::Standard => standard(note),
        Format::Slack => slack(note),
    };
    // Serializing a serde_json::Value into a Vec cannot fail.
    serde_json::to_vec(&v).unwrap_or_default()
}

fn labels(d: &IncidentData) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("alertname".into(), ALERT_NAME.into());
    m.insert("client".into(), d.client.clone().into());
    m.insert("policy".into(), d.policy.clone().into());
    m.insert("rule".into(), d.rule.to_string().into());
    m.insert("severity".into(), d.severity.as_str().into());
    m.insert("workload".into(), d.workload.clone().into());
    m
}

fn summary(d: &IncidentData) -> String {
    format!(
        "client {} flagged by policy {} rule {} on {}: {} request{}, action {}{}",
        d.client,
        d.policy,
        d.rule,
        d.workload,
        d.count,
        if d.count == 1 { "" } else { "s" },
        d.action,
        if d.dry_run { " (dry run)" } else { "" }
    )
}

fn annotations(d: &IncidentData) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("summary".into(), summary(d).into());
    m.insert("description".into(), d.reasons.join("; ").into());
    m.insert("score".into(), format!("{:.3}", d.score).into());
    m.insert("threshold".into(), format!("{:.3}", d.threshold).into());
    m.insert("band".into(), d.band.into());
    m.insert("action".into(), d.action.into());
    m.insert("count".into(), d.count.to_string().into());
    m.insert("dry_run".into(), d.dry_run.to_string().into());
    m.insert("request".into(), format!("{} {}", d.method, d.path).into());
    m.insert("peer_identity".into(), d.peer_identity.clone().unwrap_or_default().into());
    m.insert("jwt_subject".into(), d.jwt_subject.clone().unwrap_or_default().into());
    m.insert("sample_request_ids".into(), d.sample_request_ids.join(",").into());
    m.insert("incident_id".into(), d.incident_id.clone().into());
    m
}

/// Alertmanager webhook payload, version 4, with the incident as its one alert.
fn alertmanager(note: &Notification, sink: &str, external_url: &str) -> Value {
    let d = &note.incident;
    let labels = labels(d);
    let annotations = annotations(d);
    let mut group_labels = labels.clone();
    group_labels.remove("severity");
    let key: Vec<String> =
        group_labels.iter().map(|(k, v)| format!("{k}={}", serde_json::to_string(v).unwrap_or_default())).collect();
    let ends_at = match (note.status, d.ends_at) {
        (Status::Resolved, Some(t)) => rfc3339(t),
        _ => ZERO_TIME.to_string(),
    };
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{{}}}", key.join(",")),
        "truncatedAlerts": 0,
        "status": note.status.as_str(),
        "receiver": sink,
        "groupLabels": group_labels,
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": external_url,
        "alerts": [{
            "status": note.status.as_str(),
            "labels": labels,
            "annotations": annotations,
            "startsAt": rfc3339(d.starts_at),
            "endsAt": ends_at,
            "generatorURL": external_url,
            "fingerprint": d.fingerprint,
        }],
    })
}

/// `POST /api/v2/alerts` body: the incident as one postable alert. A firing
/// alert ends `resolve_after` past its last finding unless updated, which is
/// when meshward itself would resolve it, so Alertmanager never resolves an
/// incident early nor keeps it after meshward forgot it.
fn alertmanager_api(note: &Notification, cfg: &AlertsConfig) -> Value {
    let d = &note.incident;
    let ends_at = match (note.status, d.ends_at) {
        (Status::Resolved, Some(t)) => t,
        _ => d.last_seen.max(note.at) + cfg.resolve_after,
    };
    let mut alert = json!({
        "labels": labels(d),
        "annotations": annotations(d),
        "startsAt": rfc3339(d.starts_at),
        "endsAt": rfc3339(ends_at),
    });
    if !cfg.external_url.is_empty() {
        alert["generatorURL"] = cfg.external_url.clone().into();
    }
    json!([alert])
}

/// Standard Webhooks event: `{type, timestamp, data}`.
fn standard(note: &Notification) -> Value {
    let d = &note.incident;
    json!({
        "type": format!("meshward.incident.{}", note.status.as_str()),
        "timestamp": rfc3339(note.at),
        "data": {
            "status": note.status.as_str(),
            "incident_id": d.incident_id,
            "fingerprint": d.fingerprint,
            "workload": d.workload,
            "policy": d.policy,
            "rule": d.rule,
            "client": d.client,
            "severity": d.severity.as_str(),
            "action": d.action,
            "band": d.band,
            "score": d.score,
            "threshold": d.threshold,
            "reasons": d.reasons,
            "peer_identity": d.peer_identity,
            "jwt_subject": d.jwt_subject,
            "method": d.method,
            "path": d.path,
            "sample_request_ids": d.sample_request_ids,
            "count": d.count,
            "dry_run": d.dry_run,
            "starts_at": rfc3339(d.starts_at),
            "last_seen": rfc3339(d.last_seen),
            "ends_at": d.ends_at.map(rfc3339),
        },
    })
}

/// Slack incoming-webhook message: a `text` fallback plus Block Kit blocks.
/// Peer-chosen strings are escaped so they cannot form links or mentions.
fn slack(note: &Notification) -> Value {
    let d = &note.incident;
    let (icon, word) = match note.status {
        Status::Firing => (":rotating_light:", "FIRING"),
        Status::Resolved => (":white_check_mark:", "RESOLVED"),
    };
    let head = format!("[{word}] {} anomaly on {}", d.severity.as_str(), d.workload);
    let text = format!("{icon} [{word}] {}: {}", d.severity.as_str(), esc(&summary(d)));
    let field = |name: &str, value: &str| json!({"type": "mrkdwn", "text": format!("*{name}*\n{}", code(value))});
    let mut fields = vec![
        field("Client", &d.client),
        field("Policy / rule", &format!("{} / {}", d.policy, d.rule)),
        field("Action", &format!("{}{}", d.action, if d.dry_run { " (dry run)" } else { "" })),
        field("Score / threshold", &format!("{:.3} / {:.3} ({})", d.score, d.threshold, d.band)),
        field("Requests", &d.count.to_string()),
        field("Request", &format!("{} {}", d.method, d.path)),
    ];
    if let Some(p) = &d.peer_identity {
        fields.push(field("Peer identity", p));
    }
    if let Some(s) = &d.jwt_subject {
        fields.push(field("JWT subject", s));
    }
    let reasons = if d.reasons.is_empty() {
        "_no reasons given_".to_string()
    } else {
        d.reasons.iter().map(|r| format!("• {}", esc(r))).collect::<Vec<_>>().join("\n")
    };
    let context = format!(
        "incident {} · since {} · sample requests {}",
        code(&d.incident_id),
        rfc3339(d.starts_at),
        code(&d.sample_request_ids.join(", "))
    );
    json!({
        "text": text,
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": truncate(&head, 150)}},
            {"type": "section", "fields": fields},
            {"type": "section", "text": {"type": "mrkdwn", "text": truncate(&reasons, 2900)}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": truncate(&context, 2900)}]},
        ],
    })
}

/// Slack mrkdwn escaping of `&`, `<`, `>`.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// An escaped inline code span (backticks inside would end it).
fn code(s: &str) -> String {
    format!("`{}`", esc(&s.replace('`', "'")))
}

fn truncate(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars.saturating_sub(1)) {
        Some((i, _)) if s.chars().count() > max_chars => format!("{}…", &s[..i]),
        _ => s.to_string(),
    }
}
