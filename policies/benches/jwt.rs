//! JWT verification with a cached key (target: <= 20 µs per request), for
//! RS256 (RSA-2048) and ES256 (P-256), and the whole authentication step
//! for a client that reuses its token (find the token, pick the rule, hit
//! the verified-token cache, check expiry).
//!
//! `cargo bench -p meshward-policies --features test-keys --bench jwt`

use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use meshward_policies::compile::load_all;
use meshward_policies::jwt::{authenticate, verify, KeySet, Keys, Outcome};
use meshward_policies::testkeys::{self, SigningKey};

const NOW: u64 = 1_800_000_000;

fn bench(c: &mut Criterion) {
    let (rsa, ec) = (SigningKey::rsa("r1"), SigningKey::ec("e1"));
    let jwks = testkeys::jwks(&[&rsa, &ec]);
    let yaml = "apiVersion: meshward.dev/v1\nkind: RequestAuthentication\nmetadata: {name: bench}\nspec:\n  jwtRules:\n  - issuer: https://auth.example.com\n    audiences: [inference]\n    jwksUri: https://auth.example.com/jwks\n";
    let set = load_all(&[("bench.yaml", yaml)]).expect("valid").authentication;
    let keys = Arc::new(KeySet::parse(jwks.as_bytes()).expect("jwks"));
    let claims = serde_json::json!({"iss": "https://auth.example.com", "sub": "user-7", "aud": "inference",
        "exp": NOW + 600, "tier": "premium", "groups": ["a", "b"]});
    let rule = &set[0].rules[0];
    for (name, key) in [("rs256", &rsa), ("es256", &ec)] {
        let token = key.sign(&claims);
        verify(rule, &keys, &token, NOW).expect("valid");
        c.bench_function(&format!("jwt_verify_{name}_cached_key"), |b| {
            b.iter(|| verify(black_box(rule), black_box(&keys), black_box(&token), NOW))
        });
    }
    // The peer in the same run: the bare RSA-2048 signature check of aws-lc,
    // the floor under any RS256 verification on this machine.
    {
        use aws_lc_rs::signature::{
            KeyPair as _, RsaPublicKeyComponents, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256,
        };
        let kp = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("key");
        let msg = rsa.sign(&claims).into_bytes();
        let mut sig = vec![0; kp.public_modulus_len()];
        kp.sign(&RSA_PKCS1_SHA256, &aws_lc_rs::rand::SystemRandom::new(), &msg, &mut sig).expect("sign");
        let public = RsaPublicKeyComponents::<Vec<u8>>::from(kp.public_key());
        c.bench_function("rsa2048_sha256_verify_aws_lc_only", |b| {
            b.iter(|| public.verify(&RSA_PKCS1_2048_8192_SHA256, black_box(&msg), black_box(&sig)))
        });
    }
    let bearer = format!("Bearer {}", rsa.sign(&claims));
    let headers: Vec<(&str, &str)> =
        vec![("content-type", "application/json"), ("authorization", bearer.as_str()), ("user-agent", "tritonclient")];
    let lookup = |_: &meshward_policies::jwt::JwtRule| Keys::Ready(Arc::clone(&keys));
    assert!(matches!(authenticate(&set, &headers, None, &lookup, NOW), Outcome::Verified { .. }));
    // A client reusing its token: the per-rule verified-token cache answers.
    c.bench_function("jwt_authenticate_rs256_reused_token", |b| {
        b.iter(|| authenticate(black_box(&set), black_box(&headers), None, &lookup, NOW))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
