//! Trust for this process's own HTTPS clients (reqwest with rustls and ring): the system's
//! roots, plus the CA certificates of a PEM file when one is given (`--cacert` of `geoscim
//! conflicts` and `idp-sim`, `http.peer_ca` of a region's probes of other regions).

use std::path::{Path, PathBuf};

/// Why a CA file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{what}: cannot read {path}: {source}")]
    Read {
        what: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: {path} holds no usable PEM CA certificate ({detail})")]
    Pem {
        what: String,
        path: PathBuf,
        detail: String,
    },
}

/// The CA certificates of a PEM file (one or more). `what` names the option or key in errors.
pub fn read_ca_file(path: &Path, what: &str) -> Result<Vec<reqwest::Certificate>, CaError> {
    let pem = std::fs::read(path).map_err(|source| CaError::Read {
        what: what.to_string(),
        path: path.to_path_buf(),
        source,
    })?;
    let pem_error = |detail: String| CaError::Pem {
        what: what.to_string(),
        path: path.to_path_buf(),
        detail,
    };
    let certs =
        reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| pem_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_error("no CERTIFICATE block".into()));
    }
    Ok(certs)
}

/// A client builder that also trusts `roots` (on top of the system's roots).
pub fn trusting(
    mut builder: reqwest::ClientBuilder,
    roots: &[reqwest::Certificate],
) -> reqwest::ClientBuilder {
    for root in roots {
        builder = builder.add_root_certificate(root.clone());
    }
    builder
}

/// A client builder trusting the CA file `path` when given. Meant for a region's own clients,
/// built after the file was checked at start: a file gone since is logged and left out, so a
/// probe client is still built (it then trusts the system's roots only).
pub fn builder_with_peer_ca(peer_ca: Option<&Path>) -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder();
    match peer_ca.map(|p| read_ca_file(p, "http.peer_ca")) {
        None => builder,
        Some(Ok(roots)) => trusting(builder, &roots),
        Some(Err(e)) => {
            tracing::error!(error = %e, "HTTPS requests to other regions trust the system's roots only");
            builder
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_must_exist_and_hold_a_certificate_naming_the_option() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let err = read_ca_file(&missing, "--cacert").unwrap_err().to_string();
        assert!(
            err.starts_with("--cacert: cannot read") && err.contains("nope.pem"),
            "{err}"
        );

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate").unwrap();
        let err = read_ca_file(&empty, "http.peer_ca")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("http.peer_ca:"), "{err}");

        let ca = crate::replication::certs::generate_ca().unwrap();
        let good = dir.path().join("ca.pem");
        std::fs::write(&good, ca.cert_pem()).unwrap();
        assert_eq!(read_ca_file(&good, "--cacert").unwrap().len(), 1);
    }
}
