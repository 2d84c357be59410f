//! `[oauth]`: OAuth 2.0 client credentials (RFC 6749 §4.4) at `POST /oauth/token`, and the
//! signed JWT access tokens it issues, which every region of the cluster accepts.
//!
//! Each region signs with its own Ed25519 key (`signing_key`, a PKCS#8 PEM file that never
//! leaves the region) and trusts every public key listed in `keys` (the same list in every
//! region's file), so a token from any region works at every region, and no secret is shared.
//! Clients (`[[oauth.clients]]`) are per tenant and keep only SHA-256 hashes of their secrets,
//! at most two at once so a secret can rotate without an outage.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// The `[oauth]` table.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthConfig {
    /// `iss` of issued tokens, and the only issuer accepted. One value for the whole cluster
    /// (a token from one region must pass at another), e.g. the geo-routed public URL.
    #[serde(default = "default_issuer")]
    pub issuer: String,
    /// `aud` of issued tokens, and the only audience accepted: keeps tokens minted for another
    /// service (with other keys that happen to be trusted) out of this one.
    #[serde(default = "default_audience")]
    pub audience: String,
    /// How long an access token is valid, seconds (`expires_in`). Short: a token cannot be
    /// revoked before it expires, except by removing its client.
    #[serde(default = "default_token_lifetime_secs")]
    pub token_lifetime_secs: u64,
    /// Clock skew tolerated between regions when checking `exp` and `nbf`, seconds.
    #[serde(default = "default_leeway_secs")]
    pub leeway_secs: u64,
    /// This region's signing key.
    pub signing_key: SigningKeyConfig,
    /// Every public key a region of the cluster signs with (this region's included), by `kid`.
    /// During a key rotation the old and the new key are both listed.
    #[serde(default)]
    pub keys: Vec<PublicKeyConfig>,
    /// The OAuth clients (one IdP connection each), per tenant.
    #[serde(default)]
    pub clients: Vec<ClientConfig>,
}

/// `[oauth.signing_key]`: the Ed25519 key this region signs access tokens with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SigningKeyConfig {
    /// The key id written in each token's header; `keys` must list it with the file's public key.
    pub kid: String,
    /// PKCS#8 PEM file of the private key (`geoscim signing-key create`), mode 0600. Relative
    /// paths are relative to the working directory.
    pub file: PathBuf,
}

/// `[[oauth.keys]]`: one trusted public key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PublicKeyConfig {
    /// The key id tokens name in their header.
    pub kid: String,
    /// The Ed25519 public key, base64url without padding (the `x` of its JWK, RFC 8037).
    pub x: String,
}

/// `[[oauth.clients]]`: one OAuth client of a tenant.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// The client id (`geoscim client create` makes one); the `sub` of its tokens.
    pub client_id: String,
    /// The tenant its tokens act for.
    pub tenant: String,
    /// Hex SHA-256 of each accepted secret: one, or two while a secret rotates.
    pub secret_sha256: Vec<String>,
}

/// Most secrets one client accepts at once: the current one and the next.
pub const MAX_SECRETS_PER_CLIENT: usize = 2;

fn default_issuer() -> String {
    "geoscim".into()
}
fn default_audience() -> String {
    "geoscim".into()
}
fn default_token_lifetime_secs() -> u64 {
    3600
}
fn default_leeway_secs() -> u64 {
    30
}

/// A key id: 1-64 characters of A-Z, a-z, 0-9, '.', '_' and '-'.
pub fn is_valid_kid(kid: &str) -> bool {
    (1..=64).contains(&kid.len())
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A client id: 1-128 URL-unreserved characters (RFC 3986 §2.3), so it needs no encoding in a
/// form body or inside HTTP Basic.
pub fn is_valid_client_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'~'))
}

/// The 32 bytes of an Ed25519 public key in base64url without padding, if `x` is one.
pub fn decode_public_key(x: &str) -> Option<[u8; 32]> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(x)
        .ok()?;
    bytes.try_into().ok()
}

/// A string printable as a claim and a log field: 1-512 visible ASCII characters.
fn is_claim_text(s: &str) -> bool {
    (1..=512).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic())
}

impl OAuthConfig {
    /// Check every key; errors name the key at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, rule: String| Err(ConfigError::Invalid { key, rule });
        if !is_claim_text(&self.issuer) {
            return invalid(
                "oauth.issuer",
                "must be 1-512 visible ASCII characters (a URL or a name)".into(),
            );
        }
        if !is_claim_text(&self.audience) {
            return invalid(
                "oauth.audience",
                "must be 1-512 visible ASCII characters (a URL or a name)".into(),
            );
        }
        if !(1..=86_400).contains(&self.token_lifetime_secs) {
            return invalid(
                "oauth.token_lifetime_secs",
                "must be between 1 and 86400 (one day)".into(),
            );
        }
        if self.leeway_secs > 300 {
            return invalid("oauth.leeway_secs", "must be between 0 and 300".into());
        }
        if !is_valid_kid(&self.signing_key.kid) {
            return invalid(
                "oauth.signing_key.kid",
                "must be 1-64 characters of A-Z, a-z, 0-9, '.', '_' and '-'".into(),
            );
        }
        if self.signing_key.file.as_os_str().is_empty() {
            return invalid("oauth.signing_key.file", "must not be empty".into());
        }
        let mut kids = std::collections::BTreeSet::new();
        for key in &self.keys {
            if !is_valid_kid(&key.kid) {
                return invalid(
                    "oauth.keys.kid",
                    format!(
                        "{:?}: must be 1-64 characters of A-Z, a-z, 0-9, '.', '_' and '-'",
                        key.kid
                    ),
                );
            }
            if !kids.insert(key.kid.as_str()) {
                return invalid("oauth.keys.kid", format!("{:?} is listed twice", key.kid));
            }
            if decode_public_key(&key.x).is_none() {
                return invalid(
                    "oauth.keys.x",
                    format!(
                        "key {:?}: must be an Ed25519 public key (32 bytes, base64url without \
                         padding)",
                        key.kid
                    ),
                );
            }
        }
        if !kids.contains(self.signing_key.kid.as_str()) {
            return invalid(
                "oauth.signing_key.kid",
                format!(
                    "{:?} is not in oauth.keys: list this region's public key there too (every \
                     region's file lists every key)",
                    self.signing_key.kid
                ),
            );
        }
        let mut ids = std::collections::BTreeSet::new();
        for client in &self.clients {
            if !is_valid_client_id(&client.client_id) {
                return invalid(
                    "oauth.clients.client_id",
                    "must be 1-128 characters of A-Z, a-z, 0-9, '.', '_', '-' and '~'".into(),
                );
            }
            if !ids.insert(client.client_id.as_str()) {
                return invalid(
                    "oauth.clients.client_id",
                    format!("{:?} is listed twice", client.client_id),
                );
            }
            if !crate::ids::is_valid_name(&client.tenant) {
                return invalid(
                    "oauth.clients.tenant",
                    "must be 1-63 characters of a-z, 0-9, '-' and '_'".into(),
                );
            }
            let n = client.secret_sha256.len();
            if !(1..=MAX_SECRETS_PER_CLIENT).contains(&n) {
                return invalid(
                    "oauth.clients.secret_sha256",
                    format!(
                        "client {:?}: must list 1 or {MAX_SECRETS_PER_CLIENT} secret hashes \
                         (two while a secret rotates), not {n}",
                        client.client_id
                    ),
                );
            }
            if !client
                .secret_sha256
                .iter()
                .all(|h| super::validate::is_sha256_hex(h))
            {
                return invalid(
                    "oauth.clients.secret_sha256",
                    format!(
                        "client {:?}: each must be 64 hex digits (a SHA-256)",
                        client.client_id
                    ),
                );
            }
            if n == 2 && client.secret_sha256[0].eq_ignore_ascii_case(&client.secret_sha256[1]) {
                return invalid(
                    "oauth.clients.secret_sha256",
                    format!("client {:?}: the two hashes are equal", client.client_id),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

    fn config(oauth: &str) -> Result<Config, String> {
        Config::from_toml(
            &format!("region = \"a\"\ndata_dir = \"d\"\n{oauth}"),
            "t",
            Vec::new(),
        )
        .map_err(|e| e.to_string())
    }

    fn base() -> String {
        format!(
            "[oauth]\nsigning_key = {{kid = \"a-1\", file = \"k.pem\"}}\n\
             [[oauth.keys]]\nkid = \"a-1\"\nx = \"{X}\"\n"
        )
    }

    #[test]
    fn defaults_fill_everything_but_the_signing_key() {
        let c = config(&base()).unwrap();
        let o = c.oauth.unwrap();
        assert_eq!(o.token_lifetime_secs, 3600);
        assert_eq!(o.leeway_secs, 30);
        assert_eq!(
            (o.issuer.as_str(), o.audience.as_str()),
            ("geoscim", "geoscim")
        );
        assert!(o.clients.is_empty());
        let err = config("[oauth]\n").unwrap_err();
        assert!(err.contains("signing_key"), "{err}");
    }

    #[test]
    fn every_rule_names_its_key() {
        let client = |hashes: &str| {
            format!(
                "[[oauth.clients]]\nclient_id = \"c1\"\ntenant = \"t\"\nsecret_sha256 = [{hashes}]\n"
            )
        };
        let h = |c: char| format!("\"{}\"", c.to_string().repeat(64));
        let cases = [
            (
                base().replace("[oauth]\n", "[oauth]\ntoken_lifetime_secs = 0\n"),
                "oauth.token_lifetime_secs",
            ),
            (
                base().replace("[oauth]\n", "[oauth]\ntoken_lifetime_secs = 86401\n"),
                "oauth.token_lifetime_secs",
            ),
            (
                base().replace("[oauth]\n", "[oauth]\nleeway_secs = 301\n"),
                "oauth.leeway_secs",
            ),
            (
                base().replace("[oauth]\n", "[oauth]\nissuer = \"a b\"\n"),
                "oauth.issuer",
            ),
            (
                base().replace("[oauth]\n", "[oauth]\naudience = \"\"\n"),
                "oauth.audience",
            ),
            (
                base().replace("kid = \"a-1\"\nx", "kid = \"b\"\nx"),
                "oauth.signing_key.kid",
            ),
            (base().replace(X, "short"), "oauth.keys.x"),
            (
                format!("{}[[oauth.keys]]\nkid = \"a-1\"\nx = \"{X}\"\n", base()),
                "oauth.keys.kid",
            ),
            (base() + &client(""), "oauth.clients.secret_sha256"),
            (
                base() + &client(&format!("{}, {}, {}", h('a'), h('b'), h('c'))),
                "oauth.clients.secret_sha256",
            ),
            (
                base() + &client(&format!("{}, {}", h('a'), h('A'))),
                "oauth.clients.secret_sha256",
            ),
            (base() + &client("\"abc\""), "oauth.clients.secret_sha256"),
            (
                base() + &client(&h('a')).replace("\"t\"", "\"T T\""),
                "oauth.clients.tenant",
            ),
            (
                base() + &client(&h('a')).replace("\"c1\"", "\"c 1\""),
                "oauth.clients.client_id",
            ),
            (
                base() + &client(&h('a')) + &client(&h('b')),
                "oauth.clients.client_id",
            ),
        ];
        for (text, key) in cases {
            let err = config(&text).unwrap_err();
            assert!(err.contains(&format!("`{key}`")), "{key}: {err}\n{text}");
        }
        let ok = base() + &client(&format!("{}, {}", h('a'), h('b')));
        assert_eq!(config(&ok).unwrap().oauth.unwrap().clients.len(), 1);
    }

    #[test]
    fn clients_come_from_the_environment_too() {
        let c = Config::from_toml(
            &format!("region = \"a\"\ndata_dir = \"d\"\n{}", base()),
            "t",
            vec![(
                "GEOSCIM_OAUTH__CLIENTS".to_string(),
                format!(
                    "[{{client_id=\"c\", tenant=\"t\", secret_sha256=[\"{}\"]}}]",
                    "a".repeat(64)
                ),
            )],
        )
        .unwrap();
        assert_eq!(c.oauth.unwrap().clients[0].client_id, "c");
    }
}
