//! JWT access tokens: the claims (pure, time is a parameter), signing with this region's key and
//! verification against every trusted key (jsonwebtoken does the JOSE work: header parsing,
//! base64url, the EdDSA signature, the `alg` allow-list, `iss` and `aud`).
//!
//! Tokens follow the JWT profile for OAuth 2.0 access tokens (RFC 9068): header `typ: at+jwt`
//! and a `kid` naming the signing key; claims `iss`, `aud`, `sub` and `client_id` (the client),
//! `iat`, `nbf`, `exp`, `jti`, and `tenant`. Only EdDSA (Ed25519) is accepted: no `none`, no
//! HMAC (a public key used as an HMAC secret is the classic confusion).
//!
//! `exp` and `nbf` are checked here against the `now` the caller passes (with the configured
//! leeway) rather than by the crate's own clock, so the rules are tested with any time; the
//! claims are decoded into integer fields, so a claim of the wrong JSON type is refused as
//! malformed instead of being skipped.

use std::collections::HashMap;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The `typ` of an access token's header (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";

/// The only signature algorithm issued and accepted.
pub const ALGORITHM: Algorithm = Algorithm::EdDSA;

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer: the cluster's `oauth.issuer`.
    pub iss: String,
    /// Audience: the cluster's `oauth.audience`.
    pub aud: String,
    /// Subject: the client id (a client credentials token acts for the client itself).
    pub sub: String,
    /// The client id again, as RFC 9068 asks.
    pub client_id: String,
    /// The tenant the token acts for.
    pub tenant: String,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Not before, Unix seconds (= `iat`).
    pub nbf: u64,
    /// Expires at, Unix seconds: not accepted at or after it (plus leeway).
    pub exp: u64,
    /// A unique id per token, for logs and audit.
    pub jti: String,
}

/// What the claims of a new token say; `now` is Unix seconds.
pub struct ClaimsInput<'a> {
    pub issuer: &'a str,
    pub audience: &'a str,
    pub client_id: &'a str,
    pub tenant: &'a str,
    pub now: u64,
    pub lifetime_secs: u64,
    pub jti: String,
}

/// The claims of a token issued at `now` for `lifetime_secs`.
pub fn claims(input: ClaimsInput<'_>) -> Claims {
    Claims {
        iss: input.issuer.to_string(),
        aud: input.audience.to_string(),
        sub: input.client_id.to_string(),
        client_id: input.client_id.to_string(),
        tenant: input.tenant.to_string(),
        iat: input.now,
        nbf: input.now,
        exp: input.now.saturating_add(input.lifetime_secs),
        jti: input.jti,
    }
}

/// Why a bearer JWT was refused. Each has a metrics label and a description safe to send in a
/// `WWW-Authenticate` header (RFC 6750 §3: no quotes, no backslashes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a JWT, or its header or claims do not parse or lack a required claim.
    #[error("the access token is malformed")]
    Malformed,
    /// A header `typ` other than `at+jwt` (another kind of JWT).
    #[error("the token is not an access token (typ must be at+jwt)")]
    WrongType,
    /// An `alg` other than EdDSA (`none`, HMAC, RSA…).
    #[error("the token's signature algorithm is not accepted")]
    WrongAlgorithm,
    /// No `kid`, or one no trusted key has.
    #[error("the token's signing key is not trusted")]
    UnknownKey,
    /// The signature does not verify with the key its `kid` names.
    #[error("the token's signature is invalid")]
    BadSignature,
    /// `iss` is not the cluster's issuer.
    #[error("the token was issued by another issuer")]
    WrongIssuer,
    /// `aud` is not the cluster's audience.
    #[error("the token is meant for another audience")]
    WrongAudience,
    /// At or after `exp` (plus leeway).
    #[error("the access token has expired")]
    Expired,
    /// Before `nbf` (minus leeway).
    #[error("the access token is not valid yet")]
    NotYetValid,
    /// The client (`sub`) is not configured (any more), or its tenant is not the token's.
    #[error("the token's client is not known for its tenant")]
    UnknownClient,
}

impl TokenError {
    /// Every variant, for metrics that start at zero.
    pub const ALL: [TokenError; 10] = [
        TokenError::Malformed,
        TokenError::WrongType,
        TokenError::WrongAlgorithm,
        TokenError::UnknownKey,
        TokenError::BadSignature,
        TokenError::WrongIssuer,
        TokenError::WrongAudience,
        TokenError::Expired,
        TokenError::NotYetValid,
        TokenError::UnknownClient,
    ];

    /// The metrics label.
    pub fn reason(self) -> &'static str {
        match self {
            TokenError::Malformed => "malformed",
            TokenError::WrongType => "wrong_type",
            TokenError::WrongAlgorithm => "wrong_algorithm",
            TokenError::UnknownKey => "unknown_key",
            TokenError::BadSignature => "bad_signature",
            TokenError::WrongIssuer => "wrong_issuer",
            TokenError::WrongAudience => "wrong_audience",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::UnknownClient => "unknown_client",
        }
    }
}

/// Signs access tokens with this region's key.
pub struct Signer {
    kid: String,
    key: EncodingKey,
}

impl Signer {
    /// A signer for the Ed25519 private key in PKCS#8 DER, named `kid`.
    pub fn new(kid: &str, pkcs8_der: &[u8]) -> Signer {
        Signer {
            kid: kid.to_string(),
            key: EncodingKey::from_ed_der(pkcs8_der),
        }
    }

    /// The compact JWT of these claims.
    pub fn sign(&self, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
        self.sign_typed(ACCESS_TOKEN_TYPE, claims)
    }

    /// The compact JWT of any claims, with header `typ` (a SET is `secevent+jwt`).
    pub fn sign_typed(
        &self,
        typ: &str,
        claims: &impl Serialize,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(ALGORITHM);
        header.typ = Some(typ.to_string());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key)
    }
}

/// Verifies access tokens against the trusted keys.
pub struct Verifier {
    keys: HashMap<String, DecodingKey>,
    validation: Validation,
    leeway_secs: u64,
}

impl Verifier {
    /// A verifier trusting `keys` (kid → Ed25519 public key) for `issuer` and `audience`.
    pub fn new(
        keys: impl IntoIterator<Item = (String, [u8; 32])>,
        issuer: &str,
        audience: &str,
        leeway_secs: u64,
    ) -> Verifier {
        let keys = keys
            .into_iter()
            .map(|(kid, x)| (kid, DecodingKey::from_ed_der(&x)))
            .collect();
        let mut validation = Validation::new(ALGORITHM);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        // Checked by `check_times` against the caller's clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        Verifier {
            keys,
            validation,
            leeway_secs,
        }
    }

    /// The claims of `token` if its header, signature, issuer, audience and times are right at
    /// `now` (Unix seconds). Whether its client still exists is the caller's check.
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        use jsonwebtoken::errors::ErrorKind;
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            // An `alg` the crate does not know at all (e.g. a misspelt one).
            ErrorKind::InvalidAlgorithmName => TokenError::WrongAlgorithm,
            _ => TokenError::Malformed,
        })?;
        if header.alg != ALGORITHM {
            return Err(TokenError::WrongAlgorithm);
        }
        if header.typ.as_deref() != Some(ACCESS_TOKEN_TYPE) {
            return Err(TokenError::WrongType);
        }
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| self.keys.get(kid))
            .ok_or(TokenError::UnknownKey)?;
        let data =
            jsonwebtoken::decode::<Claims>(token, key, &self.validation).map_err(|e| {
                match e.kind() {
                    ErrorKind::InvalidSignature => TokenError::BadSignature,
                    ErrorKind::InvalidAlgorithm => TokenError::WrongAlgorithm,
                    ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
                    ErrorKind::InvalidAudience => TokenError::WrongAudience,
                    ErrorKind::InvalidEddsaKey => TokenError::BadSignature,
                    _ => TokenError::Malformed,
                }
            })?;
        check_times(&data.claims, now, self.leeway_secs)?;
        Ok(data.claims)
    }
}

/// `nbf <= now < exp`, each bound widened by `leeway` (RFC 7519 §4.1.4-5).
pub fn check_times(claims: &Claims, now: u64, leeway: u64) -> Result<(), TokenError> {
    if now.saturating_add(leeway) < claims.nbf {
        return Err(TokenError::NotYetValid);
    }
    if now >= claims.exp.saturating_add(leeway) {
        return Err(TokenError::Expired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::keys::SigningKey;

    fn input(now: u64) -> ClaimsInput<'static> {
        ClaimsInput {
            issuer: "https://scim.example",
            audience: "scim",
            client_id: "c1",
            tenant: "acme",
            now,
            lifetime_secs: 3600,
            jti: "j1".into(),
        }
    }

    fn setup() -> (Signer, Verifier, SigningKey) {
        let key = SigningKey::generate().unwrap();
        let signer = Signer::new("k1", key.pkcs8_der());
        let verifier = Verifier::new(
            [("k1".to_string(), key.public_key())],
            "https://scim.example",
            "scim",
            30,
        );
        (signer, verifier, key)
    }

    #[test]
    fn claims_say_who_for_whom_and_how_long() {
        let c = claims(input(1_000));
        assert_eq!((c.iat, c.nbf, c.exp), (1_000, 1_000, 4_600));
        assert_eq!((c.sub.as_str(), c.client_id.as_str()), ("c1", "c1"));
        assert_eq!(c.tenant, "acme");
        assert_eq!(
            (c.iss.as_str(), c.aud.as_str()),
            ("https://scim.example", "scim")
        );
    }

    #[test]
    fn times_are_checked_against_the_given_clock_with_leeway() {
        let c = claims(input(1_000)); // valid [1000, 4600)
        assert_eq!(check_times(&c, 1_000, 0), Ok(()));
        assert_eq!(check_times(&c, 4_599, 0), Ok(()));
        assert_eq!(check_times(&c, 4_600, 0), Err(TokenError::Expired));
        assert_eq!(check_times(&c, 4_629, 30), Ok(()));
        assert_eq!(check_times(&c, 4_630, 30), Err(TokenError::Expired));
        assert_eq!(check_times(&c, 999, 0), Err(TokenError::NotYetValid));
        assert_eq!(check_times(&c, 970, 30), Ok(()));
        assert_eq!(check_times(&c, 969, 30), Err(TokenError::NotYetValid));
    }

    #[test]
    fn a_signed_token_verifies_and_round_trips_its_claims() {
        let (signer, verifier, _) = setup();
        let now = 1_700_000_000;
        let c = claims(input(now));
        let token = signer.sign(&c).unwrap();
        assert_eq!(verifier.verify(&token, now + 10), Ok(c));
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.kid.as_deref(), Some("k1"));
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(
            verifier.verify(&token, now + 3_630),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn tampering_anywhere_is_refused() {
        let (signer, verifier, _) = setup();
        let now = 1_700_000_000;
        let token = signer.sign(&claims(input(now))).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        // Another signature byte (in the middle: the last character carries unused bits).
        let mut sig: Vec<char> = parts[2].chars().collect();
        sig[10] = if sig[10] == 'A' { 'B' } else { 'A' };
        let sig: String = sig.into_iter().collect();
        let t = format!("{}.{}.{sig}", parts[0], parts[1]);
        assert_eq!(verifier.verify(&t, now), Err(TokenError::BadSignature));
        // Other claims under the old signature (another tenant).
        let other = signer
            .sign(&claims(ClaimsInput {
                tenant: "other",
                ..input(now)
            }))
            .unwrap();
        let other_payload = other.split('.').nth(1).unwrap();
        let t = format!("{}.{other_payload}.{}", parts[0], parts[2]);
        assert_eq!(verifier.verify(&t, now), Err(TokenError::BadSignature));
        // Garbage.
        for bad in ["", "a.b", "a.b.c", "....", "not a jwt"] {
            assert_eq!(
                verifier.verify(bad, now),
                Err(TokenError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn wrong_issuer_audience_key_type_and_algorithm_are_refused() {
        let (signer, verifier, key) = setup();
        let now = 1_700_000_000;
        let sign = |i: ClaimsInput<'_>| signer.sign(&claims(i)).unwrap();
        let t = sign(ClaimsInput {
            issuer: "https://evil.example",
            ..input(now)
        });
        assert_eq!(verifier.verify(&t, now), Err(TokenError::WrongIssuer));
        let t = sign(ClaimsInput {
            audience: "another-api",
            ..input(now)
        });
        assert_eq!(verifier.verify(&t, now), Err(TokenError::WrongAudience));
        // A key no region lists.
        let stranger = SigningKey::generate().unwrap();
        let t = Signer::new("k1", stranger.pkcs8_der())
            .sign(&claims(input(now)))
            .unwrap();
        assert_eq!(verifier.verify(&t, now), Err(TokenError::BadSignature));
        let t = Signer::new("k9", stranger.pkcs8_der())
            .sign(&claims(input(now)))
            .unwrap();
        assert_eq!(verifier.verify(&t, now), Err(TokenError::UnknownKey));
        // Another typ, signed with the right key.
        let mut header = Header::new(ALGORITHM);
        header.kid = Some("k1".into());
        header.typ = Some("JWT".into());
        let ek = EncodingKey::from_ed_der(key.pkcs8_der());
        let t = jsonwebtoken::encode(&header, &claims(input(now)), &ek).unwrap();
        assert_eq!(verifier.verify(&t, now), Err(TokenError::WrongType));
        // HS256 with the public key as the secret, and `none`.
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        header.typ = Some(ACCESS_TOKEN_TYPE.into());
        let hk = EncodingKey::from_secret(&key.public_key());
        let t = jsonwebtoken::encode(&header, &claims(input(now)), &hk).unwrap();
        assert_eq!(verifier.verify(&t, now), Err(TokenError::WrongAlgorithm));
        use base64::Engine;
        let b64 = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let payload = serde_json::to_string(&claims(input(now))).unwrap();
        let t = format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"at+jwt","kid":"k1"}"#),
            b64(&payload)
        );
        // The crate has no `none` algorithm at all: the header does not even parse.
        assert!(matches!(
            verifier.verify(&t, now),
            Err(TokenError::Malformed | TokenError::WrongAlgorithm)
        ));
    }

    #[test]
    fn a_claim_of_the_wrong_type_is_malformed_not_skipped() {
        let (_, verifier, key) = setup();
        let now = 1_700_000_000;
        let mut v = serde_json::to_value(claims(input(now))).unwrap();
        v["nbf"] = serde_json::json!("99999999999");
        let mut header = Header::new(ALGORITHM);
        header.kid = Some("k1".into());
        header.typ = Some(ACCESS_TOKEN_TYPE.into());
        let t =
            jsonwebtoken::encode(&header, &v, &EncodingKey::from_ed_der(key.pkcs8_der())).unwrap();
        assert_eq!(verifier.verify(&t, now), Err(TokenError::Malformed));
        v["nbf"] = serde_json::json!(now);
        v.as_object_mut().unwrap().remove("exp");
        let t =
            jsonwebtoken::encode(&header, &v, &EncodingKey::from_ed_der(key.pkcs8_der())).unwrap();
        assert_eq!(verifier.verify(&t, now), Err(TokenError::Malformed));
    }

    #[test]
    fn every_description_fits_in_a_www_authenticate_header() {
        for e in TokenError::ALL {
            let d = e.to_string();
            assert!(
                d.bytes()
                    .all(|b| matches!(b, 0x20..=0x21 | 0x23..=0x5B | 0x5D..=0x7E)),
                "{d}"
            );
        }
    }
}
