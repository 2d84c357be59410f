//! The `[http.tls]` table: HTTPS on the SCIM/admin listener, and `http.peer_ca`, the extra trust
//! roots of this region's own HTTPS requests to other regions.
//!
//! Without `[http.tls]` the listener speaks plain HTTP: for a region behind a load balancer
//! that terminates TLS (the region says so at start). With it, the certificate and key files are
//! read at start (a missing or bad file stops the start, naming the key and the path) and again
//! on SIGHUP and whenever their content changes (polled every `reload_interval_ms`); a reload
//! that fails keeps the certificate in use. Rules here are checked without touching the files:
//! `validate()` is pure, the files are the listener's business (`crate::tls`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `[http.tls]`: the listener's certificate and how it is kept fresh.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the certificate chain, the server's certificate first, then the
    /// intermediates (the CA's root is not needed).
    pub cert: PathBuf,
    /// PEM file of the private key (PKCS#8, PKCS#1 RSA or SEC1 EC); may be the same file as
    /// `cert`.
    pub key: PathBuf,
    /// How often the two files are read to notice a new certificate (renewal tools such as
    /// certbot or cert-manager replace them in place), milliseconds. 0: only on SIGHUP.
    #[serde(default = "default_reload_interval_ms")]
    pub reload_interval_ms: u64,
    /// A TLS handshake must finish within this long after the connection is accepted, or the
    /// connection is closed: a client that stalls mid-handshake holds its connection slot no
    /// longer (`http.header_read_timeout_ms` starts after it).
    #[serde(default = "default_handshake_timeout_ms")]
    pub handshake_timeout_ms: u64,
}

fn default_reload_interval_ms() -> u64 {
    10_000
}
fn default_handshake_timeout_ms() -> u64 {
    10_000
}

impl TlsConfig {
    /// Check the rules of `[http.tls]` (pure: the files are read when the listener starts).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, rule: &str| {
            Err(ConfigError::Invalid {
                key,
                rule: rule.to_string(),
            })
        };
        if self.cert.as_os_str().is_empty() {
            return invalid("http.tls.cert", "must name a PEM certificate file");
        }
        if self.key.as_os_str().is_empty() {
            return invalid("http.tls.key", "must name a PEM private key file");
        }
        if self.reload_interval_ms != 0 && !(100..=86_400_000).contains(&self.reload_interval_ms) {
            return invalid(
                "http.tls.reload_interval_ms",
                "must be 0 (reload on SIGHUP only) or between 100 and 86400000 (ms)",
            );
        }
        if !(100..=600_000).contains(&self.handshake_timeout_ms) {
            return invalid(
                "http.tls.handshake_timeout_ms",
                "must be between 100 and 600000 (ms)",
            );
        }
        Ok(())
    }
}

/// Check `http.peer_ca` (pure).
pub fn validate_peer_ca(peer_ca: Option<&std::path::Path>) -> Result<(), ConfigError> {
    match peer_ca {
        Some(p) if p.as_os_str().is_empty() => Err(ConfigError::Invalid {
            key: "http.peer_ca",
            rule: "must name a PEM file of CA certificates (or be left out)".into(),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const BASE: &str = "region = \"a\"\ndata_dir = \"d\"\n";

    #[test]
    fn no_tls_table_means_plain_http() {
        let c = Config::from_toml(BASE, "t", []).unwrap();
        assert!(c.http.tls.is_none());
        assert!(c.http.peer_ca.is_none());
    }

    #[test]
    fn tls_keys_come_from_the_file_or_the_environment_with_defaults() {
        let c = Config::from_toml(
            &format!("{BASE}[http.tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n"),
            "t",
            [],
        )
        .unwrap();
        let tls = c.http.tls.unwrap();
        assert_eq!(tls.cert, std::path::PathBuf::from("c.pem"));
        assert_eq!(tls.reload_interval_ms, 10_000);
        assert_eq!(tls.handshake_timeout_ms, 10_000);

        let c = Config::from_toml(
            BASE,
            "t",
            [
                ("GEOSCIM_HTTP__TLS__CERT", "/etc/x/c.pem"),
                ("GEOSCIM_HTTP__TLS__KEY", "/etc/x/k.pem"),
                ("GEOSCIM_HTTP__TLS__RELOAD_INTERVAL_MS", "0"),
                ("GEOSCIM_HTTP__PEER_CA", "/etc/x/ca.pem"),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string())),
        )
        .unwrap();
        let tls = c.http.tls.unwrap();
        assert_eq!(tls.key, std::path::PathBuf::from("/etc/x/k.pem"));
        assert_eq!(tls.reload_interval_ms, 0);
        assert_eq!(
            c.http.peer_ca,
            Some(std::path::PathBuf::from("/etc/x/ca.pem"))
        );
    }

    #[test]
    fn tls_rules_name_the_key() {
        for (extra, key) in [
            ("cert = \"\"\nkey = \"k\"", "http.tls.cert"),
            ("cert = \"c\"\nkey = \"\"", "http.tls.key"),
            (
                "cert = \"c\"\nkey = \"k\"\nreload_interval_ms = 5",
                "http.tls.reload_interval_ms",
            ),
            (
                "cert = \"c\"\nkey = \"k\"\nhandshake_timeout_ms = 0",
                "http.tls.handshake_timeout_ms",
            ),
            ("cert = \"c\"", "key"),
            ("cert = \"c\"\nkey = \"k\"\ncerts = \"x\"", "certs"),
        ] {
            let err = Config::from_toml(&format!("{BASE}[http.tls]\n{extra}\n"), "t", [])
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{key} in {err}");
        }
        let err = Config::from_toml(&format!("{BASE}[http]\npeer_ca = \"\"\n"), "t", [])
            .unwrap_err()
            .to_string();
        assert!(err.contains("http.peer_ca"), "{err}");
    }
}
