//! Bearer tokens for the demo's simulated clients: one ES256 key generated
//! at run time (never written anywhere but the demo's temporary policy
//! directory, as a public JWKS), one signed JWT per client with `sub` = the
//! client's name, so the inbound sidecar's detector (client key `jwt`, the
//! verified `iss/sub`) tells the clients apart although they all arrive
//! through the one client-side sidecar with the same peer identity.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::json;

/// Issuer of the demo tokens.
pub const ISSUER: &str = "https://demo.meshward.local";
/// Audience of the demo tokens.
pub const AUDIENCE: &str = "ml-inference";
const KID: &str = "demo-1";

/// The demo's token issuer.
pub struct Issuer {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
}

impl Issuer {
    /// A fresh P-256 key.
    ///
    /// # Errors
    /// When the system random source or ring's key parsing fails.
    pub fn new() -> anyhow::Result<Issuer> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| anyhow::anyhow!("generating the demo's P-256 token key failed"))?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(|e| anyhow::anyhow!("loading the demo's P-256 token key failed: {e}"))?;
        Ok(Issuer { pair, rng })
    }

    /// The public key as a JWKS document.
    #[must_use]
    pub fn jwks(&self) -> String {
        // Uncompressed point: 0x04 || x || y.
        let point = self.pair.public_key().as_ref();
        json!({"keys": [{
            "kty": "EC", "use": "sig", "alg": "ES256", "crv": "P-256", "kid": KID,
            "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65]),
        }]})
        .to_string()
    }

    /// A `RequestAuthentication` policy trusting these tokens (inline JWKS).
    #[must_use]
    pub fn policy(&self) -> String {
        format!(
            "apiVersion: meshward.dev/v1\nkind: RequestAuthentication\nmetadata: {{name: demo-clients}}\nspec:\n  jwtRules:\n  - issuer: {ISSUER}\n    audiences: [{AUDIENCE}]\n    algorithms: [ES256]\n    jwks: '{}'\n",
            self.jwks()
        )
    }

    /// A token for `sub`, valid for an hour.
    ///
    /// # Errors
    /// When signing fails (ring's random source).
    pub fn token(&self, sub: &str) -> anyhow::Result<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": KID}).to_string();
        let claims = json!({"iss": ISSUER, "sub": sub, "aud": AUDIENCE, "iat": now, "exp": now + 3600}).to_string();
        let input = format!("{}.{}", B64.encode(header), B64.encode(claims));
        let sig = self
            .pair
            .sign(&self.rng, input.as_bytes())
            .map_err(|_| anyhow::anyhow!("signing the demo token for {sub:?} failed"))?;
        Ok(format!("{input}.{}", B64.encode(sig.as_ref())))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_the_subject_and_the_policy_parses() {
        let issuer = Issuer::new().unwrap();
        let token = issuer.token("svc-ledger-3").unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims: serde_json::Value = serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["sub"], "svc-ledger-3");
        assert_eq!(B64.decode(parts[2]).unwrap().len(), 64);
        let policy = issuer.policy();
        let set = meshward_policies::compile::load_all(&[("demo.yaml", policy.as_str())]).unwrap();
        assert_eq!(set.authentication.len(), 1);
    }
}
