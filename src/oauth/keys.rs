//! Signing keys: Ed25519 key pairs in PKCS#8 PEM files (generated and parsed with rcgen and
//! ring, as the cluster's certificates are), and their public keys in the base64url form the
//! config lists (`x`, as in a JWK, RFC 8037).

use std::path::Path;

/// Errors making, reading or writing a signing key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// The file exists and would be overwritten.
    #[error("{0} exists; pass --force to replace it")]
    Exists(String),
    /// The file is not a PKCS#8 PEM private key, or not an Ed25519 one.
    #[error("{path}: not an Ed25519 private key in PKCS#8 PEM: {detail}")]
    Invalid { path: String, detail: String },
    /// Key generation failed.
    #[error("cannot generate an Ed25519 key: {0}")]
    Generate(String),
}

/// An Ed25519 key pair.
pub struct SigningKey {
    pair: rcgen::KeyPair,
    der: Vec<u8>,
}

impl SigningKey {
    /// A new random key pair.
    pub fn generate() -> Result<SigningKey, KeyError> {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
            .map_err(|e| KeyError::Generate(e.to_string()))?;
        Ok(SigningKey::from_pair(pair))
    }

    fn from_pair(pair: rcgen::KeyPair) -> SigningKey {
        let der = pair.serialize_der();
        SigningKey { pair, der }
    }

    /// The key in a PEM text (`origin` names it in errors).
    pub fn from_pem(pem: &str, origin: &str) -> Result<SigningKey, KeyError> {
        let invalid = |detail: String| KeyError::Invalid {
            path: origin.to_string(),
            detail,
        };
        let pair = rcgen::KeyPair::from_pem(pem).map_err(|e| invalid(e.to_string()))?;
        if pair.algorithm() != &rcgen::PKCS_ED25519 {
            return Err(invalid(format!("the key is {:?}", pair.algorithm())));
        }
        Ok(SigningKey::from_pair(pair))
    }

    /// Read a key file.
    pub fn load(path: &Path) -> Result<SigningKey, KeyError> {
        let pem = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.display().to_string(),
            source,
        })?;
        SigningKey::from_pem(&pem, &path.display().to_string())
    }

    /// Write the key to `path` as PKCS#8 PEM, mode 0600; an existing file only with `force`.
    pub fn write(&self, path: &Path, force: bool) -> Result<(), KeyError> {
        use std::io::Write;
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        if path.exists() && !force {
            return Err(KeyError::Exists(path.display().to_string()));
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        if path.exists() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        file.write_all(self.pair.serialize_pem().as_bytes())
            .map_err(io)?;
        file.sync_all().map_err(io)
    }

    /// The private key in PKCS#8 DER (what the JWT signer takes).
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.der
    }

    /// The 32-byte public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.pair
            .public_key_raw()
            .try_into()
            .expect("an Ed25519 public key is 32 bytes")
    }

    /// The public key as the config lists it: base64url without padding.
    pub fn public_key_x(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.public_key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_round_trips_through_its_file_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/eu.jwt.key");
        let key = SigningKey::generate().unwrap();
        key.write(&path, false).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let back = SigningKey::load(&path).unwrap();
        assert_eq!(back.public_key(), key.public_key());
        assert_eq!(
            crate::config::decode_public_key(&key.public_key_x()),
            Some(key.public_key())
        );
        // No silent overwrite.
        let other = SigningKey::generate().unwrap();
        assert!(matches!(
            other.write(&path, false),
            Err(KeyError::Exists(_))
        ));
        other.write(&path, true).unwrap();
        assert_eq!(
            SigningKey::load(&path).unwrap().public_key(),
            other.public_key()
        );
    }

    #[test]
    fn a_key_that_is_not_ed25519_is_refused_naming_the_file() {
        let p256 = rcgen::KeyPair::generate().unwrap().serialize_pem();
        let err = SigningKey::from_pem(&p256, "the.key")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("the.key") && err.contains("Ed25519"), "{err}");
        assert!(SigningKey::from_pem("garbage", "g").is_err());
    }
}
