//! OAuth clients and their secrets (pure).
//!
//! A secret is 256 random bits, so a plain SHA-256 of it is enough to store: a slow password
//! hash (argon2, bcrypt) defends low-entropy human passwords against guessing, and there is
//! nothing to guess in 2^256. Only hashes are in the config; a secret is shown once, when
//! created. A client accepts up to two secrets at once, so the IdP can be moved to a new secret
//! before the old one is removed. Hashes are compared in constant time, all of them every time.

use std::collections::HashMap;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::ClientConfig;

/// Prefix of generated client ids.
pub const CLIENT_ID_PREFIX: &str = "gsc_";
/// Prefix of generated client secrets (so a leaked one is recognisable in a scan).
pub const CLIENT_SECRET_PREFIX: &str = "gss_";

/// A new client id: 128 random bits, URL-safe (needs no encoding in a form or in Basic).
pub fn new_client_id() -> String {
    random_text(CLIENT_ID_PREFIX, rand::random::<[u8; 16]>().as_slice())
}

/// A new client secret: 256 random bits, URL-safe.
pub fn new_client_secret() -> String {
    random_text(CLIENT_SECRET_PREFIX, rand::random::<[u8; 32]>().as_slice())
}

fn random_text(prefix: &str, bytes: &[u8]) -> String {
    use base64::Engine;
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The lower-case hex SHA-256 of a secret: the form the config keeps.
pub fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// One configured client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// Its id (the `sub` and `client_id` of its tokens).
    pub id: String,
    /// The tenant its tokens act for.
    pub tenant: String,
    /// SHA-256 of each accepted secret (one or two).
    hashes: Vec<[u8; 32]>,
}

/// The clients of every tenant, by client id.
#[derive(Debug, Clone, Default)]
pub struct Clients {
    by_id: HashMap<String, Client>,
}

impl Clients {
    /// The clients of a validated config (a hash that is not hex is skipped: validation
    /// refuses it before this runs).
    pub fn new(config: &[ClientConfig]) -> Clients {
        let by_id = config
            .iter()
            .map(|c| {
                let hashes = c
                    .secret_sha256
                    .iter()
                    .filter_map(|h| hex::decode(h).ok()?.try_into().ok())
                    .collect();
                let client = Client {
                    id: c.client_id.clone(),
                    tenant: c.tenant.clone(),
                    hashes,
                };
                (c.client_id.clone(), client)
            })
            .collect();
        Clients { by_id }
    }

    /// The client with this id.
    pub fn get(&self, id: &str) -> Option<&Client> {
        self.by_id.get(id)
    }

    /// The client whose id is `id` and one of whose secrets is `secret`. The secret's hash is
    /// computed and compared with every accepted hash in constant time, whether or not the id
    /// exists, so the answer's timing tells nothing about the secret.
    pub fn authenticate(&self, id: &str, secret: &str) -> Option<&Client> {
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let client = self.by_id.get(id);
        let hashes = client.map(|c| c.hashes.as_slice()).unwrap_or(&[]);
        let matched = hashes
            .iter()
            .fold(subtle::Choice::from(0), |acc, h| acc | h.ct_eq(&digest));
        if bool::from(matched) {
            client
        } else {
            None
        }
    }

    /// Is any client configured for `tenant`?
    pub fn has_tenant(&self, tenant: &str) -> bool {
        self.by_id.values().any(|c| c.tenant == tenant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clients(hashes: &[&str]) -> Clients {
        Clients::new(&[ClientConfig {
            client_id: "c1".into(),
            tenant: "acme".into(),
            secret_sha256: hashes.iter().map(|h| h.to_string()).collect(),
        }])
    }

    #[test]
    fn generated_ids_and_secrets_are_distinct_url_safe_and_carry_their_entropy() {
        let (a, b) = (new_client_secret(), new_client_secret());
        assert_ne!(a, b);
        assert!(a.starts_with(CLIENT_SECRET_PREFIX));
        // 32 bytes in base64url without padding: 43 characters.
        assert_eq!(a.len(), CLIENT_SECRET_PREFIX.len() + 43);
        let id = new_client_id();
        assert_eq!(id.len(), CLIENT_ID_PREFIX.len() + 22);
        assert!(crate::config::is_valid_client_id(&id), "{id}");
        assert!(crate::config::is_valid_client_id(&a), "{a}");
    }

    #[test]
    fn the_right_secret_authenticates_and_nothing_else_does() {
        let secret = new_client_secret();
        let c = clients(&[&secret_hash(&secret)]);
        assert_eq!(
            c.authenticate("c1", &secret).map(|c| c.tenant.as_str()),
            Some("acme")
        );
        assert!(c.authenticate("c1", "wrong").is_none());
        assert!(c.authenticate("c1", "").is_none());
        assert!(c.authenticate("c2", &secret).is_none(), "another client id");
        assert!(c.authenticate("c1", &format!("{secret} ")).is_none());
    }

    #[test]
    fn upper_case_hashes_in_the_config_work_too() {
        let secret = "s";
        let c = clients(&[&secret_hash(secret).to_ascii_uppercase()]);
        assert!(c.authenticate("c1", secret).is_some());
    }

    #[test]
    fn a_secret_rotates_through_two_accepted_hashes() {
        let (old, new) = (new_client_secret(), new_client_secret());
        // Before: only the old secret.
        let before = clients(&[&secret_hash(&old)]);
        assert!(before.authenticate("c1", &old).is_some());
        assert!(before.authenticate("c1", &new).is_none());
        // During: both, in either order.
        for during in [
            clients(&[&secret_hash(&old), &secret_hash(&new)]),
            clients(&[&secret_hash(&new), &secret_hash(&old)]),
        ] {
            assert!(during.authenticate("c1", &old).is_some());
            assert!(during.authenticate("c1", &new).is_some());
        }
        // After: the old one is removed and refused.
        let after = clients(&[&secret_hash(&new)]);
        assert!(after.authenticate("c1", &old).is_none());
        assert!(after.authenticate("c1", &new).is_some());
        assert!(after.has_tenant("acme") && !after.has_tenant("other"));
    }
}
