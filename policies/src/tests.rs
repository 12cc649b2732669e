//! Tests of loading, diagnostics and evaluation order.

use crate::compile::{load_file, AuthorizationPolicy};
use crate::eval::{evaluate, Reason, RequestAttrs, RuleRef, Verdict, VerifiedJwt};

const GATEWAY: &str = "spiffe://cluster.local/ns/gateway/sa/api";
const BATCH: &str = "spiffe://cluster.local/ns/batch/sa/scorer";

fn load(yaml: &str) -> Vec<AuthorizationPolicy> {
    load_file("p.yaml", yaml)
        .unwrap_or_else(|d| panic!("{}", d.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")))
}

fn errors(yaml: &str) -> Vec<String> {
    match load_file("p.yaml", yaml) {
        Ok(_) => panic!("accepted:\n{yaml}"),
        Err(d) => d.iter().map(ToString::to_string).collect(),
    }
}

struct Req {
    method: &'static str,
    path: &'static str,
    peer: Option<&'static str>,
    ip: [u8; 4],
    headers: Vec<(&'static str, &'static str)>,
    jwt: Option<VerifiedJwt>,
}

impl Req {
    fn new(method: &'static str, path: &'static str, peer: Option<&'static str>) -> Self {
        Self { method, path, peer, ip: [10, 1, 2, 3], headers: Vec::new(), jwt: None }
    }

    fn eval(&self, p: &[AuthorizationPolicy]) -> crate::eval::Decision {
        let req = RequestAttrs {
            method: self.method,
            path: self.path,
            port: 8080,
            peer: self.peer,
            source_ip: self.ip.into(),
            headers: &self.headers,
            jwt: self.jwt.as_ref(),
        };
        evaluate(p, &req)
    }
}

const SET: &str = r#"
apiVersion: meshward.dev/v1
kind: AuthorizationPolicy
metadata: {name: infer-from-gateway, namespace: ml}
spec:
  action: ALLOW
  rules:
  - from: [{source: {principals: ["spiffe://cluster.local/ns/gateway/sa/*"]}}]
    to: [{operation: {methods: [POST], paths: ["/v2/models/{model}/infer"]}}]
  - to: [{operation: {methods: [GET], paths: ["/v2/health/*"]}}]
---
apiVersion: meshward.dev/v1
kind: AuthorizationPolicy
metadata: {name: no-admin-from-outside, namespace: ml}
spec:
  action: DENY
  rules:
  - from: [{source: {notNamespaces: [ml]}}]
    to: [{operation: {paths: ["/admin*", "/v2/repository*"]}}]
---
apiVersion: meshward.dev/v1
kind: AuthorizationPolicy
metadata: {name: audit-batch, namespace: ml}
spec:
  action: AUDIT
  rules:
  - from: [{source: {principals: ["spiffe://cluster.local/ns/batch/*"]}}]
"#;

#[test]
fn allow_deny_and_default_follow_istio_order() {
    let p = load(SET);
    assert_eq!(p.len(), 3);
    let d = Req::new("POST", "/v2/models/iris/infer", Some(GATEWAY)).eval(&p);
    assert_eq!(d.verdict, Verdict::Allow);
    assert_eq!(d.reason, Reason::Allowed(RuleRef { policy: "infer-from-gateway".into(), rule: 1 }));

    // Not from the gateway: no ALLOW rule matches.
    let d = Req::new("POST", "/v2/models/iris/infer", Some(BATCH)).eval(&p);
    assert_eq!((d.verdict, d.reason), (Verdict::Deny, Reason::NoAllowMatched));
    assert_eq!(d.audited, vec![RuleRef { policy: "audit-batch".into(), rule: 1 }]);

    // Health is open to anyone, including plaintext (no peer).
    let d = Req::new("GET", "/v2/health/ready", None).eval(&p);
    assert_eq!(d.reason, Reason::Allowed(RuleRef { policy: "infer-from-gateway".into(), rule: 2 }));

    // DENY wins over ALLOW; a peer without identity is "not in ml".
    let d = Req::new("GET", "/admin/reload", Some(GATEWAY)).eval(&p);
    assert_eq!(d.reason, Reason::Denied(RuleRef { policy: "no-admin-from-outside".into(), rule: 1 }));
    let d = Req::new("GET", "/admin/reload", Some("spiffe://cluster.local/ns/ml/sa/ops")).eval(&p);
    assert_eq!(d.reason, Reason::NoAllowMatched, "inside ml: not denied, but not allowed either");

    // No policies at all: allowed.
    assert_eq!(Req::new("GET", "/", None).eval(&[]).reason, Reason::NoAllowPolicies);
}

#[test]
fn dry_run_reports_what_it_would_do_without_enforcing() {
    let p = load(
        r#"
apiVersion: meshward.dev/v1
kind: AuthorizationPolicy
metadata: {name: deny-debug}
spec:
  action: DENY
  dryRun: true
  rules:
  - when: [{key: "request.headers[x-debug]", values: ["*"]}]
"#,
    );
    let mut r = Req::new("GET", "/v2/models/iris", Some(GATEWAY));
    let d = r.eval(&p);
    assert_eq!((d.verdict, d.dry_run), (Verdict::Allow, None));
    r.headers.push(("X-Debug", "1"));
    let d = r.eval(&p);
    assert_eq!(d.verdict, Verdict::Allow, "dry-run never enforces");
    assert_eq!(d.dry_run, Some((Verdict::Deny, Reason::Denied(RuleRef { policy: "deny-debug".into(), rule: 1 }))));
}

#[test]
fn jwt_claims_nested_and_lists_and_ip_conditions() {
    let p = load(
        r#"
apiVersion: meshward.dev/v1
kind: AuthorizationPolicy
metadata: {name: premium}
spec:
  rules:
  - from: [{source: {requestPrincipals: ["https://auth.example.com/*"]}}]
    when:
    - {key: "request.auth.claims[tier]", values: [premium, gold]}
    - {key: "request.auth.claims[org][roles]", values: [ml-*]}
    - {key: source.ip, notValues: ["192.168.0.0/16"]}
"#,
    );
    let mut r = Req::new("POST", "/v2/models/iris/infer", None);
    assert_eq!(r.eval(&p).verdict, Verdict::Deny, "no token");
    r.jwt = Some(VerifiedJwt {
        principal: "https://auth.example.com/user-7".into(),
        claims: serde_json::json!({"tier": "premium", "org": {"roles": ["viewer", "ml-engineer"]}}),
    });
    assert_eq!(r.eval(&p).verdict, Verdict::Allow);
    r.ip = [192, 168, 1, 1];
    assert_eq!(r.eval(&p).verdict, Verdict::Deny, "notValues on source.ip");
    r.ip = [10, 0, 0, 1];
    if let Some(j) = r.jwt.as_mut() {
        j.claims["tier"] = serde_json::json!("free");
    }
    assert_eq!(r.eval(&p).verdict, Verdict::Deny);
}

#[test]
fn diagnostics_point_at_the_bad_value() {
    let yaml =
        "apiVersion: meshward.dev/v1\nkind: AuthorizationPolicy\nmetadata: {name: a}\nspec:\n  action: ALLOW\n---\n\
apiVersion: meshward.dev/v1\nkind: AuthorizationPolicy\nmetadata: {name: b}\nspec:\n  action: alow\n";
    let e = errors(yaml);
    assert_eq!(e, vec!["p.yaml:11:11: policy 'b': unknown action \"alow\" (expected ALLOW, DENY or AUDIT)"]);

    let e =
        errors("apiVersion: meshward.dev/v1\nkind: AuthorizationPolicy\nmetadata: {name: a}\nspec:\n  ruless: []\n");
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("p.yaml:5:3: spec: unknown field `ruless`"), "{e:?}");

    let e = errors(
        "apiVersion: meshward.dev/v1\nkind: AuthorizationPolicy\nmetadata: {name: a}\nspec:\n  rules:\n  - to: [{operation: {paths: [\"/v2/*/infer\"], methods: [GET], notMethods: [get]}}]\n    from: [{source: {ipBlocks: [10.0.0.0/33]}}]\n    when: [{key: request.body, values: [x]}]\n",
    );
    let all = e.join("\n");
    assert!(all.contains("p.yaml:6:32: policy 'a', rule 1: paths: invalid pattern \"/v2/*/infer\""), "{all}");
    assert!(all.contains("methods and notMethods cancel out: this rule can never match"), "{all}");
    assert!(all.contains("\"10.0.0.0/33\" is not an IP address or CIDR block"), "{all}");
    assert!(all.contains("unknown condition key \"request.body\""), "{all}");

    let e = errors("apiVersion: meshward.dev/v1\nkind: AuthorizationPolicy\nmetadata: {name: a}\nspec: {action: DENY}\n---\napiVersion: v2\nkind: X\n");
    assert!(e[0].contains("DENY policy without rules never matches"), "{e:?}");
    assert_eq!(e[1], "p.yaml:6:13: unknown apiVersion \"v2\" (expected meshward.dev/v1)");

    let e = errors("apiVersion: meshward.dev/v1\nkind: Gateway\n");
    assert_eq!(e, vec!["p.yaml:2:7: unknown kind \"Gateway\" (expected one of AuthorizationPolicy, RequestAuthentication, RateLimitPolicy, AnomalyPolicy)"]);

    let e = errors("apiVersion: meshward.dev/v1\nkind: X\napiVersion: \r2\n");
    assert_eq!(e, vec!["p.yaml:3:13: bare CR line ending (expected LF or CRLF)"], "found by fuzzing");
    assert!(load_file(
        "p.yaml",
        "apiVersion: meshward.dev/v1\r\nkind: AuthorizationPolicy\r\nmetadata: {name: a}\r\nspec: {}\r\n"
    )
    .is_ok());

    let doc = "apiVersion: meshward.dev/v1\nkind: AuthorizationPolicy\nmetadata: {name: same}\nspec: {}\n";
    let e = errors(&format!("{doc}---\n{doc}"));
    assert_eq!(e, vec!["p.yaml:6:1: duplicate policy name \"same\" (first defined at p.yaml:1:1)"]);
}

#[test]
fn shipped_examples_pass_their_cases() {
    let examples = [
        ("inference-guard.yaml", include_str!("../examples/inference-guard.yaml")),
        ("ml-platform.yaml", include_str!("../examples/ml-platform.yaml")),
    ];
    let set = crate::compile::load_all(&examples).expect("examples are valid");
    assert_eq!(set.anomaly.len(), 1);
    for cases in [include_str!("../cases/ml-platform.yaml"), include_str!("../cases/inference-guard.yaml")] {
        let results = crate::cases::run_cases(&set, &crate::cases::parse_cases(cases).expect("cases parse"));
        let failed: Vec<_> = results.iter().filter(|r| !r.passed).collect();
        assert!(failed.is_empty(), "{failed:#?}");
    }
}
