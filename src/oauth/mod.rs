//! OAuth 2.0 client credentials (RFC 6749 §4.4): clients authenticate with an id and secret
//! and get a short-lived signed JWT access token, which every region of the cluster accepts as
//! a bearer token next to the static ones.
//!
//! Keys: each region signs with its own Ed25519 key (`oauth.signing_key`, a file only that
//! region holds) and trusts every key in `oauth.keys` (the same list in every region's file).
//! No signing secret is shared between regions, a region's config holds no secret at all, and
//! a key rotates by `kid` overlap (see the README, "OAuth 2.0 client credentials").
//!
//! - `clients`: client ids, secrets, their hashes and the constant-time check (pure);
//! - `request`: parsing the token request and the error answers (pure);
//! - `tokens`: claims, signing and verification (pure but for the crypto; time is a parameter);
//! - `keys`: generating, reading and writing Ed25519 key files.
//!
//! [`OAuth`] puts them together for the HTTP layer (`api::oauth`).

pub mod clients;
pub mod keys;
pub mod request;
pub mod tokens;

use crate::config::OAuthConfig;

pub use clients::{new_client_id, new_client_secret, secret_hash, Clients};
pub use keys::{KeyError, SigningKey};
pub use request::{OAuthError, TokenRequest};
pub use tokens::{Claims, TokenError};

/// Errors setting up a region's OAuth from its config.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The signing key file cannot be used.
    #[error("invalid config key `oauth.signing_key.file`: {0}")]
    Key(#[from] KeyError),
    /// The signing key is not the one `oauth.keys` lists under its kid: tokens this region
    /// signs would be refused everywhere.
    #[error(
        "invalid config key `oauth.signing_key`: the public key of {file} is not the one \
         oauth.keys lists for kid {kid:?} (its x is {x})"
    )]
    KeyMismatch {
        file: String,
        kid: String,
        x: String,
    },
}

/// A token just issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The compact JWT.
    pub access_token: String,
    /// Its lifetime in seconds (`expires_in`).
    pub expires_in: u64,
    /// The tenant it acts for.
    pub tenant: String,
}

/// What a verified access token acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The tenant.
    pub tenant: String,
    /// The client.
    pub client_id: String,
}

/// One region's token issuer and verifier.
pub struct OAuth {
    issuer: String,
    audience: String,
    lifetime_secs: u64,
    signer: tokens::Signer,
    verifier: tokens::Verifier,
    clients: Clients,
}

impl OAuth {
    /// Read the signing key file named by a validated config and set up.
    pub fn load(config: &OAuthConfig) -> Result<OAuth, SetupError> {
        let key = SigningKey::load(&config.signing_key.file)?;
        OAuth::new(config, &key)
    }

    /// Set up with this region's signing key (which `config.keys` must list under its kid).
    pub fn new(config: &OAuthConfig, key: &SigningKey) -> Result<OAuth, SetupError> {
        let kid = &config.signing_key.kid;
        let listed = config
            .keys
            .iter()
            .find(|k| &k.kid == kid)
            .and_then(|k| crate::config::decode_public_key(&k.x));
        if listed != Some(key.public_key()) {
            return Err(SetupError::KeyMismatch {
                file: config.signing_key.file.display().to_string(),
                kid: kid.clone(),
                x: key.public_key_x(),
            });
        }
        let trusted = config
            .keys
            .iter()
            .filter_map(|k| crate::config::decode_public_key(&k.x).map(|x| (k.kid.clone(), x)));
        Ok(OAuth {
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            lifetime_secs: config.token_lifetime_secs,
            signer: tokens::Signer::new(kid, key.pkcs8_der()),
            verifier: tokens::Verifier::new(
                trusted,
                &config.issuer,
                &config.audience,
                config.leeway_secs,
            ),
            clients: Clients::new(&config.clients),
        })
    }

    /// Authenticate the client of a token request and issue a token at `now` (Unix seconds).
    pub fn issue(&self, request: &TokenRequest, now: u64) -> Result<Issued, OAuthError> {
        let client = self
            .clients
            .authenticate(&request.client_id, &request.client_secret)
            .ok_or(OAuthError::InvalidClient(
                "unknown client or wrong client secret",
            ))?;
        let claims = tokens::claims(tokens::ClaimsInput {
            issuer: &self.issuer,
            audience: &self.audience,
            client_id: &client.id,
            tenant: &client.tenant,
            now,
            lifetime_secs: self.lifetime_secs,
            jti: uuid::Uuid::new_v4().to_string(),
        });
        let access_token = self.signer.sign(&claims).map_err(|e| {
            tracing::error!(error = %e, "signing an access token failed");
            OAuthError::ServerError("the token could not be signed")
        })?;
        Ok(Issued {
            access_token,
            expires_in: self.lifetime_secs,
            tenant: client.tenant.clone(),
        })
    }

    /// The tenant and client of a bearer JWT at `now`: signature, type, algorithm, key,
    /// issuer, audience and times are checked, and the client must still be configured for
    /// the token's tenant (removing a client revokes its tokens at once).
    pub fn verify(&self, token: &str, now: u64) -> Result<Verified, TokenError> {
        let claims = self.verifier.verify(token, now)?;
        match self.clients.get(&claims.sub) {
            Some(c) if c.tenant == claims.tenant && claims.client_id == claims.sub => {
                Ok(Verified {
                    tenant: claims.tenant,
                    client_id: claims.sub,
                })
            }
            _ => Err(TokenError::UnknownClient),
        }
    }

    /// The configured clients.
    pub fn clients(&self) -> &Clients {
        &self.clients
    }

    /// This region's signer (access tokens, and the SETs of `crate::events`).
    pub fn signer(&self) -> &tokens::Signer {
        &self.signer
    }

    /// The issuer every region's tokens name.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }
}

/// Does a bearer token look like a JWT (three base64url parts)? Static tokens never do.
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The current Unix time in seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ClientConfig, PublicKeyConfig, SigningKeyConfig};

    fn config(key: &SigningKey, secrets: &[&str]) -> OAuthConfig {
        OAuthConfig {
            issuer: "iss".into(),
            audience: "aud".into(),
            token_lifetime_secs: 60,
            leeway_secs: 0,
            signing_key: SigningKeyConfig {
                kid: "a-1".into(),
                file: "unused".into(),
            },
            keys: vec![PublicKeyConfig {
                kid: "a-1".into(),
                x: key.public_key_x(),
            }],
            clients: vec![ClientConfig {
                client_id: "c1".into(),
                tenant: "acme".into(),
                secret_sha256: secrets.iter().map(|s| secret_hash(s)).collect(),
            }],
        }
    }

    fn request(secret: &str) -> TokenRequest {
        TokenRequest {
            client_id: "c1".into(),
            client_secret: secret.into(),
        }
    }

    #[test]
    fn an_issued_token_verifies_for_its_tenant_until_it_expires() {
        let key = SigningKey::generate().unwrap();
        let oauth = OAuth::new(&config(&key, &["s1"]), &key).unwrap();
        let issued = oauth.issue(&request("s1"), 1_000).unwrap();
        assert_eq!((issued.expires_in, issued.tenant.as_str()), (60, "acme"));
        assert!(looks_like_jwt(&issued.access_token));
        let v = oauth.verify(&issued.access_token, 1_059).unwrap();
        assert_eq!((v.tenant.as_str(), v.client_id.as_str()), ("acme", "c1"));
        assert_eq!(
            oauth.verify(&issued.access_token, 1_060),
            Err(TokenError::Expired)
        );
        assert_eq!(
            oauth.issue(&request("s2"), 1_000).unwrap_err().code(),
            "invalid_client"
        );
    }

    #[test]
    fn another_region_with_the_same_key_list_accepts_the_token() {
        let (ka, kb) = (
            SigningKey::generate().unwrap(),
            SigningKey::generate().unwrap(),
        );
        let mut ca = config(&ka, &["s1"]);
        ca.keys.push(PublicKeyConfig {
            kid: "b-1".into(),
            x: kb.public_key_x(),
        });
        let mut cb = ca.clone();
        cb.signing_key.kid = "b-1".into();
        let (a, b) = (OAuth::new(&ca, &ka).unwrap(), OAuth::new(&cb, &kb).unwrap());
        let from_a = a.issue(&request("s1"), 1_000).unwrap().access_token;
        let from_b = b.issue(&request("s1"), 1_000).unwrap().access_token;
        assert!(b.verify(&from_a, 1_001).is_ok());
        assert!(a.verify(&from_b, 1_001).is_ok());
        // The key list without a's key: a's tokens are refused, b's still pass.
        cb.keys.retain(|k| k.kid == "b-1");
        let b = OAuth::new(&cb, &kb).unwrap();
        assert_eq!(b.verify(&from_a, 1_001), Err(TokenError::UnknownKey));
        assert!(b.verify(&from_b, 1_001).is_ok());
    }

    #[test]
    fn removing_a_client_revokes_its_tokens_and_a_removed_secret_gets_none() {
        let key = SigningKey::generate().unwrap();
        let both = OAuth::new(&config(&key, &["old", "new"]), &key).unwrap();
        let token = both.issue(&request("old"), 1_000).unwrap().access_token;
        assert!(both.issue(&request("new"), 1_000).is_ok());
        let rotated = OAuth::new(&config(&key, &["new"]), &key).unwrap();
        assert!(rotated.issue(&request("old"), 1_000).is_err());
        // A token issued with the old secret lives out its lifetime…
        assert!(rotated.verify(&token, 1_001).is_ok());
        // …unless the client itself goes.
        let mut none = config(&key, &["new"]);
        none.clients[0].client_id = "c2".into();
        let gone = OAuth::new(&none, &key).unwrap();
        assert_eq!(gone.verify(&token, 1_001), Err(TokenError::UnknownClient));
        // A client moved to another tenant does not carry old tokens along.
        let mut moved = config(&key, &["new"]);
        moved.clients[0].tenant = "other".into();
        let moved = OAuth::new(&moved, &key).unwrap();
        assert_eq!(moved.verify(&token, 1_001), Err(TokenError::UnknownClient));
    }

    #[test]
    fn a_signing_key_that_the_key_list_does_not_name_is_refused_at_setup() {
        let (key, other) = (
            SigningKey::generate().unwrap(),
            SigningKey::generate().unwrap(),
        );
        let err = OAuth::new(&config(&other, &["s"]), &key).err().unwrap();
        assert!(err.to_string().contains("oauth.signing_key"), "{err}");
        assert!(err.to_string().contains(&key.public_key_x()), "{err}");
    }

    #[test]
    fn static_tokens_do_not_look_like_jwts() {
        assert!(!looks_like_jwt(&crate::server::new_token_text()));
        assert!(!looks_like_jwt("a.b"));
        assert!(looks_like_jwt("a.b.c"));
        assert!(!looks_like_jwt("a.b.c d"));
    }
}
