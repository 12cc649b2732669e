//! Authorization evaluation cost for a set of 100 rules (target: <= 1 µs per
//! request). Worst cases: the request matches only the last rule, or none.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use meshward_policies::compile::load_file;
use meshward_policies::eval::{evaluate, RequestAttrs, VerifiedJwt};

/// 10 ALLOW policies of 10 rules each, plus one DENY policy evaluated first.
fn hundred_rules() -> String {
    let mut yaml = String::from(
        "apiVersion: meshward.dev/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-admin}\nspec:\n  action: DENY\n  rules:\n  - to: [{operation: {paths: ['/admin*']}}]\n",
    );
    for p in 0..10 {
        yaml.push_str(&format!(
            "---\napiVersion: meshward.dev/v1\nkind: AuthorizationPolicy\nmetadata: {{name: team-{p}}}\nspec:\n  rules:\n"
        ));
        for r in 0..10 {
            yaml.push_str(&format!(
                "  - from: [{{source: {{principals: ['spiffe://cluster.local/ns/team-{p}/sa/svc-{r}*'], notIpBlocks: ['192.168.0.0/16']}}}}]\n    to: [{{operation: {{methods: [POST, GET], paths: ['/v2/models/model-{r}/infer', '/v2/models/{{m}}/versions/{r}/infer']}}}}]\n    when: [{{key: 'request.auth.claims[tier]', values: [premium, gold]}}, {{key: 'request.headers[x-tenant]', notValues: [blocked-*]}}]\n"
            ));
        }
    }
    yaml
}

fn bench(c: &mut Criterion) {
    let set = load_file("bench.yaml", &hundred_rules()).expect("valid set");
    assert_eq!(set.iter().map(|p| p.rules.len()).sum::<usize>(), 101);
    let headers: Vec<(&str, &str)> =
        vec![("x-tenant", "acme"), ("content-type", "application/json"), ("user-agent", "tritonclient")];
    let jwt = VerifiedJwt {
        principal: "https://auth.example.com/user-7".into(),
        claims: serde_json::json!({"tier": "premium", "sub": "user-7"}),
    };
    let last = RequestAttrs {
        method: "POST",
        path: "/v2/models/fraud/versions/9/infer",
        port: 8080,
        peer: Some("spiffe://cluster.local/ns/team-9/sa/svc-9-prod"),
        source_ip: [10, 1, 2, 3].into(),
        headers: &headers,
        jwt: Some(&jwt),
    };
    let none = RequestAttrs { peer: Some("spiffe://cluster.local/ns/other/sa/x"), ..last };
    assert_eq!(evaluate(&set, &last).verdict, meshward_policies::eval::Verdict::Allow);
    c.bench_function("authz_100_rules_last_matches", |b| b.iter(|| evaluate(black_box(&set), black_box(&last))));
    c.bench_function("authz_100_rules_none_matches", |b| b.iter(|| evaluate(black_box(&set), black_box(&none))));
}

criterion_group!(benches, bench);
criterion_main!(benches);
