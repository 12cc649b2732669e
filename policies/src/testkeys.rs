//! Signing keys and tokens minted at run time, for tests, benches and the
//! end-to-end suite (feature `test-keys`). Nothing here is used to verify:
//! verification lives in [`crate::jwt`]. No key is ever written to the repo.

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

/// A private key with its public JWK.
pub struct SigningKey {
    /// Key id written in the JWK and in token headers.
    pub kid: String,
    /// The algorithm tokens are signed with.
    pub alg: Algorithm,
    encoding: EncodingKey,
    jwk: serde_json::Value,
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl SigningKey {
    /// A fresh RSA-2048 key for RS256.
    pub fn rsa(kid: &str) -> SigningKey {
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("rsa key generation");
        let der = pair.as_der().expect("pkcs8 encoding");
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(der.as_ref())
        );
        let encoding = EncodingKey::from_rsa_pem(pem.as_bytes()).expect("rsa pem");
        let public = aws_lc_rs::signature::RsaPublicKeyComponents::<Vec<u8>>::from(pair.public_key());
        let jwk = serde_json::json!({
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
            "n": b64url(&public.n), "e": b64url(&public.e),
        });
        SigningKey { kid: kid.to_owned(), alg: Algorithm::RS256, encoding, jwk }
    }

    /// A fresh P-256 key for ES256.
    pub fn ec(kid: &str) -> SigningKey {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .expect("ec key generation");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).expect("ec pkcs8");
        // Uncompressed point: 0x04 || x || y.
        let point = pair.public_key().as_ref();
        let jwk = serde_json::json!({
            "kty": "EC", "use": "sig", "alg": "ES256", "crv": "P-256", "kid": kid,
            "x": b64url(&point[1..33]), "y": b64url(&point[33..65]),
        });
        SigningKey {
            kid: kid.to_owned(),
            alg: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk,
        }
    }

    /// An HMAC secret for HS256 (its JWK holds the secret).
    pub fn hmac(kid: &str, secret: &[u8]) -> SigningKey {
        let jwk = serde_json::json!({"kty": "oct", "alg": "HS256", "kid": kid, "k": b64url(secret)});
        SigningKey { kid: kid.to_owned(), alg: Algorithm::HS256, encoding: EncodingKey::from_secret(secret), jwk }
    }

    /// The public JWK.
    pub fn jwk(&self) -> &serde_json::Value {
        &self.jwk
    }

    /// A token over `claims` with this key's `kid` and `alg`.
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        self.sign_with(&header, claims)
    }

    /// A token over `claims` with a header of the caller's choosing.
    pub fn sign_with(&self, header: &Header, claims: &serde_json::Value) -> String {
        jsonwebtoken::encode(header, claims, &self.encoding).expect("signing")
    }
}

/// A JWKS document holding `keys`.
pub fn jwks(keys: &[&SigningKey]) -> String {
    serde_json::json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

/// An unsigned token (`alg: none`): must always be refused.
pub fn unsigned(claims: &serde_json::Value) -> String {
    let header = b64url(br#"{"alg":"none","typ":"JWT"}"#);
    format!("{header}.{}.", b64url(claims.to_string().as_bytes()))
}

/// A token signed with HMAC-SHA256 using `secret` (e.g. an RSA public key's
/// bytes, for the HS/RS confusion attack).
pub fn hs256_with_secret(kid: &str, secret: &[u8], claims: &serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret)).expect("signing")
}
