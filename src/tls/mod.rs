//! HTTPS for the SCIM/admin listener: rustls with the ring provider, TLS 1.2 and 1.3 only, ALPN
//! `h2` and `http/1.1`, and a certificate that can be replaced while the region runs.
//!
//! - this file: reading and checking a certificate chain and its key (`[http.tls]` files), the
//!   rustls server config, the [`Acceptor`] the server loop uses, the TLS metrics;
//! - [`reload`]: the [`reload::CertStore`] every handshake asks for the certificate (an `Arc`
//!   swapped on reload, so a connection keeps the certificate it started with and new
//!   handshakes get the new one) and the task that reloads it on SIGHUP and on file change;
//! - [`client`]: CA bundles for this process's own HTTPS clients (`--cacert`, `http.peer_ca`).
//!
//! The certificate is read once at start, where any problem is fatal and names the config key
//! and the path; after that a reload that fails is logged and counted and the certificate in
//! use stays.

pub mod client;
pub mod reload;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};

use crate::config::TlsConfig;

/// What is wrong with a certificate or key file. Each names the config key and the path.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read (missing, unreadable).
    #[error("{key}: cannot read {path}: {source}")]
    Read {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not PEM, or a PEM block in it is broken.
    #[error("{key}: {path}: invalid PEM: {detail}")]
    Pem {
        key: &'static str,
        path: PathBuf,
        detail: String,
    },
    /// The file holds no certificate (for `cert`) or no private key (for `key`).
    #[error("{key}: {path} holds no {what}")]
    Missing {
        key: &'static str,
        path: PathBuf,
        what: &'static str,
    },
    /// rustls cannot use the key, or it does not belong to the certificate.
    #[error("http.tls.key: {path} does not fit the certificate in {cert}: {detail}")]
    Mismatch {
        path: PathBuf,
        cert: PathBuf,
        detail: String,
    },
    /// The rustls configuration could not be built (unsupported protocol versions).
    #[error("cannot build the TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The crypto provider of every TLS endpoint of this process: ring, as the QUIC transport.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain and its key, ready to serve, with the fingerprint it is known by.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The chain and the signing key, as rustls hands them to handshakes.
    pub key: Arc<CertifiedKey>,
    /// Hex SHA-256 of the server's certificate (DER): what `openssl x509 -fingerprint -sha256`
    /// shows, logged on every load so an operator can tell which certificate is served.
    pub sha256: String,
    /// Digest of the two files' bytes this came from ([`reload::content_digest`]): the reload
    /// task compares the files with it.
    pub files: [u8; 32],
}

/// Parse a PEM certificate chain and a PEM private key and check that the key belongs to the
/// chain's first certificate. Pure: the paths only name the files in errors.
pub fn parse(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_path: &Path,
    key_path: &Path,
) -> Result<Loaded, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            key: "http.tls.cert",
            path: cert_path.to_path_buf(),
            detail: e.to_string(),
        })?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::Missing {
            key: "http.tls.cert",
            path: cert_path.to_path_buf(),
            what: "PEM certificate",
        });
    };
    let sha256 = hex::encode(Sha256::digest(leaf.as_ref()));
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::Missing {
            key: "http.tls.key",
            path: key_path.to_path_buf(),
            what: "PEM private key",
        },
        e => TlsError::Pem {
            key: "http.tls.key",
            path: key_path.to_path_buf(),
            detail: e.to_string(),
        },
    })?;
    let certified =
        CertifiedKey::from_der(chain, key, &provider()).map_err(|e| TlsError::Mismatch {
            path: key_path.to_path_buf(),
            cert: cert_path.to_path_buf(),
            detail: e.to_string(),
        })?;
    Ok(Loaded {
        key: Arc::new(certified),
        sha256,
        files: reload::content_digest(&Ok(cert_pem.to_vec()), &Ok(key_pem.to_vec())),
    })
}

/// Read and parse `[http.tls]`'s files.
pub fn load(cfg: &TlsConfig) -> Result<Loaded, TlsError> {
    let read = |key, path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            key,
            path: path.to_path_buf(),
            source,
        })
    };
    let cert = read("http.tls.cert", &cfg.cert)?;
    let key = read("http.tls.key", &cfg.key)?;
    parse(&cert, &key, &cfg.cert, &cfg.key)
}

/// The rustls server configuration: TLS 1.3 and 1.2 only, ALPN `h2` then `http/1.1`, no client
/// certificates, and the certificate from `certs` at every handshake.
pub fn server_config(certs: Arc<reload::CertStore>) -> Result<rustls::ServerConfig, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// What the server loop needs to accept TLS connections: the acceptor, the handshake time
/// limit, the metrics. Dropping it stops the reload task.
pub struct Acceptor {
    /// rustls over tokio, sharing the server config (and through it the [`reload::CertStore`]).
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// `http.tls.handshake_timeout_ms`.
    pub handshake_timeout: Duration,
    /// Handshake failures are counted here.
    pub metrics: TlsMetrics,
    /// The certificate store, to read what is served now.
    pub certs: Arc<reload::CertStore>,
    /// The reload task (SIGHUP, file changes), stopped with the acceptor.
    reloader: tokio::task::JoinHandle<()>,
}

impl Acceptor {
    /// Serve `initial` (read at start by [`load`]) and keep it fresh: reload on SIGHUP and when
    /// the files change (every `reload_interval_ms`). Must run inside the tokio runtime (the
    /// SIGHUP handler is installed here, before the listener is announced).
    pub fn start(
        cfg: &TlsConfig,
        initial: Loaded,
        metrics: TlsMetrics,
    ) -> Result<Acceptor, TlsError> {
        let certs = Arc::new(reload::CertStore::new(initial));
        let config = server_config(certs.clone())?;
        let sighup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|e| {
                tracing::error!(error = %e, "cannot install the SIGHUP handler: certificates reload on file change only");
                e
            })
            .ok();
        let reloader = tokio::spawn(reload::run(
            cfg.clone(),
            certs.clone(),
            metrics.clone(),
            sighup,
        ));
        Ok(Acceptor {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            handshake_timeout: Duration::from_millis(cfg.handshake_timeout_ms),
            metrics,
            certs,
            reloader,
        })
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.reloader.abort();
    }
}

/// Labels of a reload attempt.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `ok` or `error`.
    pub result: &'static str,
}

/// Labels of a failed handshake.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandshakeLabels {
    /// `timeout` (not finished within `http.tls.handshake_timeout_ms`) or `error` (not TLS, no
    /// common version or cipher, the client gave up or refused the certificate).
    pub reason: &'static str,
}

/// The listener's TLS metrics (registered with the API's, exported at `/metrics` whether or
/// not the listener speaks TLS, so dashboards need no special case).
#[derive(Clone, Default)]
pub struct TlsMetrics {
    /// Certificate reloads by result.
    pub reloads: Family<ReloadLabels, Counter>,
    /// 1 while the last reload failed (the certificate in use is older than the files): the
    /// alert to act on.
    pub reload_failing: Gauge,
    /// Handshakes that failed, by reason.
    pub handshake_failures: Family<HandshakeLabels, Counter>,
}

impl TlsMetrics {
    /// Register under the registry's prefix (`geoscim_tls_…`). Every label value starts at 0,
    /// so the series exist (and `rate()` works) before the first reload or failure.
    pub fn register(&self, registry: &mut Registry) {
        for result in ["ok", "error"] {
            let _ = self.reloads.get_or_create(&ReloadLabels { result });
        }
        for reason in ["timeout", "error"] {
            let _ = self
                .handshake_failures
                .get_or_create(&HandshakeLabels { reason });
        }
        registry.register(
            "tls_reloads",
            "Certificate reloads of the HTTPS listener by result (ok, error)",
            self.reloads.clone(),
        );
        registry.register(
            "tls_reload_failing",
            "1 while the last certificate reload failed and an older certificate is served",
            self.reload_failing.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes on the HTTPS listener that failed, by reason (timeout, error)",
            self.handshake_failures.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn p(s: &str) -> &Path {
        Path::new(s)
    }

    #[test]
    fn a_certificate_and_its_key_parse_and_are_known_by_their_fingerprint() {
        let (cert, key) = pair("localhost");
        let loaded = parse(cert.as_bytes(), key.as_bytes(), p("c.pem"), p("k.pem")).unwrap();
        let der = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
        assert_eq!(loaded.sha256, hex::encode(Sha256::digest(der.as_ref())));
        assert_eq!(loaded.key.cert.len(), 1);
        // One file holding both works too.
        let both = format!("{cert}{key}");
        parse(both.as_bytes(), both.as_bytes(), p("b.pem"), p("b.pem")).unwrap();
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_naming_both_files() {
        let (cert, _) = pair("a");
        let (_, other_key) = pair("b");
        let err = parse(
            cert.as_bytes(),
            other_key.as_bytes(),
            p("c.pem"),
            p("k.pem"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("http.tls.key") && err.contains("k.pem") && err.contains("c.pem"),
            "{err}"
        );
    }

    #[test]
    fn broken_or_empty_files_name_the_key_and_path() {
        let (cert, key) = pair("a");
        for (c, k, want) in [
            (
                "",
                key.as_str(),
                "http.tls.cert: c.pem holds no PEM certificate",
            ),
            (
                "not pem at all",
                key.as_str(),
                "http.tls.cert: c.pem holds no",
            ),
            (
                cert.as_str(),
                "",
                "http.tls.key: k.pem holds no PEM private key",
            ),
            (
                "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
                key.as_str(),
                "http.tls.cert: c.pem: invalid PEM",
            ),
        ] {
            let err = parse(c.as_bytes(), k.as_bytes(), p("c.pem"), p("k.pem"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{want} in {err}");
        }
        let cfg = TlsConfig {
            cert: "/nonexistent/c.pem".into(),
            key: "/nonexistent/k.pem".into(),
            reload_interval_ms: 0,
            handshake_timeout_ms: 1000,
        };
        let err = load(&cfg).unwrap_err().to_string();
        assert!(
            err.starts_with("http.tls.cert: cannot read /nonexistent/c.pem"),
            "{err}"
        );
    }

    #[test]
    fn the_server_offers_h2_then_http_1_1() {
        let (cert, key) = pair("a");
        let loaded = parse(cert.as_bytes(), key.as_bytes(), p("c"), p("k")).unwrap();
        let config = server_config(Arc::new(reload::CertStore::new(loaded))).unwrap();
        assert_eq!(
            config.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }
}
