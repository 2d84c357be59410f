//! The cluster's certificates: one CA per cluster, one certificate per region, as PEM files.
//!
//! The CA is the only trust root of the replication transport ([`super::quic`]): a peer is a
//! member of the cluster exactly when its certificate is signed by the CA, and its region is the
//! one its certificate names. A region certificate names its region twice: as the DNS subject
//! alternative name `<region>.geoscim` (what TLS verifies, see [`server_name`]) and as the
//! common name (for humans reading it with `openssl x509`).
//!
//! # Files (in one directory)
//! - `ca.pem`: the CA certificate, the trust root every region needs.
//! - `ca.key`: the CA's private key, needed only to issue region certificates; keep it off the
//!   regions if you can.
//! - `<region>.pem`, `<region>.key`: a region's certificate and private key.
//! - `<region>.http.pem`, `<region>.http.key`: a local cluster's HTTPS listener certificate
//!   (`geoscim up`, [`Ca::issue_server`]); a region name has no `.`, so these never collide.
//!
//! Private keys are written with mode 0600. Keys are ECDSA P-256 (rcgen's default, with ring).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{pem::PemObject, CertificateDer};
use time::{Duration, OffsetDateTime};

/// The DNS suffix of the name a region certificate carries: `eu` is `eu.geoscim`.
pub const NAME_SUFFIX: &str = ".geoscim";
/// The common name of every cluster CA. Region certificates are issued by a CA rebuilt from this
/// name and the CA key, so it must never change (see [`Ca::from_pem`]).
const CA_COMMON_NAME: &str = "geoscim cluster CA";
/// The CA's lifetime. Long: replacing a CA means reissuing every region's certificate.
const CA_VALIDITY: Duration = Duration::days(3650);
/// A region certificate's lifetime.
const REGION_VALIDITY: Duration = Duration::days(3650);
/// Certificates are valid from a day before they were made, so clock skew between the machine
/// that made them and a region does not make a fresh certificate "not yet valid".
const BACKDATE: Duration = Duration::days(1);

/// Why certificates could not be made, read or written.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// Not a valid region name (1-63 of `a-z 0-9 - _`, see [`crate::ids::is_valid_name`]).
    #[error("invalid region name {0:?}: use 1-63 characters of a-z, 0-9, '-' and '_'")]
    InvalidRegion(String),
    /// rcgen refused to make a key or a certificate.
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file is not the PEM object it should be.
    #[error("{what} is not valid PEM: {detail}")]
    Pem { what: String, detail: String },
    /// A file would be overwritten (pass `force` to replace it).
    #[error("{0} exists (refusing to overwrite it)")]
    Exists(PathBuf),
    /// `ca.key` does not belong to `ca.pem`, or `ca.pem` is not a geoscim cluster CA.
    #[error("the CA key does not match the CA certificate (or it is not a geoscim cluster CA)")]
    CaMismatch,
}

/// The cluster CA: its certificate and the key that signs region certificates.
pub struct Ca {
    /// The CA certificate in PEM: the trust root handed to every region.
    cert_pem: String,
    /// The CA's signing key.
    key: KeyPair,
}

/// A region's identity: its name, certificate and private key (PEM), as the transport uses it.
#[derive(Clone)]
pub struct Identity {
    /// The region the certificate names.
    pub region: String,
    /// The region certificate (PEM), signed by the cluster CA.
    pub cert_pem: String,
    /// The region's private key (PKCS#8 PEM).
    pub key_pem: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the private key, not even in a debug log.
        f.debug_struct("Identity")
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

/// The TLS server name of a region: what its certificate carries and what a client verifies.
pub fn server_name(region: &str) -> String {
    format!("{region}{NAME_SUFFIX}")
}

/// The region a certificate DNS name stands for, if it is a region name (`eu.geoscim` → `eu`).
pub fn region_of_name(name: &str) -> Option<&str> {
    name.strip_suffix(NAME_SUFFIX)
        .filter(|r| crate::ids::is_valid_name(r))
}

/// The parameters of every cluster CA, but for the validity period. Issuing needs only the
/// name, the key-id method and the key usages of these, which is why a CA can be rebuilt from
/// its key alone (rcgen cannot parse a certificate without its x509-parser feature).
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "geoscim");
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn validity(params: &mut CertificateParams, lifetime: Duration) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + lifetime;
}

/// A fresh cluster CA (self-signed, CA=true, may sign only end-entity certificates).
pub fn generate_ca() -> Result<Ca, CertError> {
    let key = KeyPair::generate()?;
    let mut params = ca_params();
    validity(&mut params, CA_VALIDITY);
    let cert = params.self_signed(&key)?;
    Ok(Ca {
        cert_pem: cert.pem(),
        key,
    })
}

impl Ca {
    /// The CA certificate (PEM): the trust root every region needs.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key (PKCS#8 PEM). Needed only to issue certificates.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A CA from its certificate and key (as [`generate_ca`] made them). Refuses a key that
    /// does not belong to the certificate, or a certificate this code did not make: region
    /// certificates issued with it would not chain to `ca.pem`.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, CertError> {
        let der = parse_cert_pem(cert_pem, "the CA certificate")?;
        let key = KeyPair::from_pem(key_pem).map_err(|e| CertError::Pem {
            what: "the CA key".into(),
            detail: e.to_string(),
        })?;
        // Rebuild the CA from the key and compare subject and public key with the certificate.
        let rebuilt = ca_params().self_signed(&key)?;
        let theirs = webpki::anchor_from_trusted_cert(&der).map_err(|_| CertError::CaMismatch)?;
        let ours =
            webpki::anchor_from_trusted_cert(rebuilt.der()).map_err(|_| CertError::CaMismatch)?;
        if theirs.subject != ours.subject
            || theirs.subject_public_key_info != ours.subject_public_key_info
        {
            return Err(CertError::CaMismatch);
        }
        Ok(Ca {
            cert_pem: cert_pem.to_string(),
            key,
        })
    }

    /// A new certificate and key for `region`, signed by this CA, usable for both ends of a TLS
    /// connection (server and client authentication), naming the region as
    /// [`server_name`]`(region)` and as its common name.
    pub fn issue(&self, region: &str) -> Result<Identity, CertError> {
        if !crate::ids::is_valid_name(region) {
            return Err(CertError::InvalidRegion(region.to_string()));
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![server_name(region)])?;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "geoscim");
        params.distinguished_name.push(DnType::CommonName, region);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, REGION_VALIDITY);
        let issuer = Issuer::new(ca_params(), &self.key);
        let cert = params.signed_by(&key, &issuer)?;
        Ok(Identity {
            region: region.to_string(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

impl Ca {
    /// A server certificate for a region's HTTPS listener, signed by this CA (server
    /// authentication only), naming `names` (DNS names, wildcards allowed) and `ips`. For the
    /// local cluster of `geoscim up`; a public listener wants a certificate clients trust
    /// without being told (ACME or the organisation's CA).
    pub fn issue_server(
        &self,
        region: &str,
        names: &[String],
        ips: &[std::net::IpAddr],
    ) -> Result<Identity, CertError> {
        if !crate::ids::is_valid_name(region) {
            return Err(CertError::InvalidRegion(region.to_string()));
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.to_vec())?;
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| rcgen::SanType::IpAddress(*ip)));
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "geoscim");
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{region} HTTPS"));
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, REGION_VALIDITY);
        let issuer = Issuer::new(ca_params(), &self.key);
        let cert = params.signed_by(&key, &issuer)?;
        Ok(Identity {
            region: region.to_string(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// `dir/<region>.http.pem`: a local cluster's HTTPS listener certificate.
pub fn http_cert_path(dir: &Path, region: &str) -> PathBuf {
    dir.join(format!("{region}.http.pem"))
}

/// `dir/<region>.http.key`.
pub fn http_key_path(dir: &Path, region: &str) -> PathBuf {
    dir.join(format!("{region}.http.key"))
}

/// Does the server certificate `cert_pem` chain to the CA `ca_pem`, hold now, and name every
/// one of `ips` (what a client connecting by address checks)?
pub fn server_cert_fits(cert_pem: &str, ca_pem: &str, ips: &[std::net::IpAddr]) -> bool {
    let (Ok(cert), Ok(ca)) = (
        parse_cert_pem(cert_pem, "cert"),
        parse_cert_pem(ca_pem, "ca"),
    ) else {
        return false;
    };
    let mut roots = rustls::RootCertStore::empty();
    if roots.add(ca).is_err() {
        return false;
    }
    let Ok(verifier) = rustls::client::WebPkiServerVerifier::builder_with_provider(
        roots.into(),
        rustls::crypto::ring::default_provider().into(),
    )
    .build() else {
        return false;
    };
    use rustls::client::danger::ServerCertVerifier;
    ips.iter().all(|ip| {
        let name = rustls::pki_types::ServerName::IpAddress((*ip).into());
        verifier
            .verify_server_cert(&cert, &[], &name, &[], rustls::pki_types::UnixTime::now())
            .is_ok()
    })
}

/// Write a server identity to the two paths given (the key 0600), replacing what is there.
pub fn write_server_identity(
    identity: &Identity,
    cert: &Path,
    key: &Path,
) -> Result<(), CertError> {
    for dir in [cert.parent(), key.parent()].into_iter().flatten() {
        if !dir.as_os_str().is_empty() {
            create_dir(dir)?;
        }
    }
    write_file(cert, identity.cert_pem.as_bytes(), false)?;
    write_file(key, identity.key_pem.as_bytes(), true)
}

/// The first certificate in a PEM text, as DER.
pub(crate) fn parse_cert_pem(pem: &str, what: &str) -> Result<CertificateDer<'static>, CertError> {
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| CertError::Pem {
        what: what.to_string(),
        detail: e.to_string(),
    })
}

/// `dir/ca.pem`.
pub fn ca_cert_path(dir: &Path) -> PathBuf {
    dir.join("ca.pem")
}

/// `dir/ca.key`.
pub fn ca_key_path(dir: &Path) -> PathBuf {
    dir.join("ca.key")
}

/// `dir/<region>.pem`.
pub fn region_cert_path(dir: &Path, region: &str) -> PathBuf {
    dir.join(format!("{region}.pem"))
}

/// `dir/<region>.key`.
pub fn region_key_path(dir: &Path, region: &str) -> PathBuf {
    dir.join(format!("{region}.key"))
}

/// Write `ca.pem` and `ca.key` (0600) into `dir` (created if missing). Refuses to replace an
/// existing CA unless `force`: every region certificate depends on it.
pub fn write_ca(dir: &Path, ca: &Ca, force: bool) -> Result<(), CertError> {
    create_dir(dir)?;
    let (cert, key) = (ca_cert_path(dir), ca_key_path(dir));
    if !force {
        refuse_existing(&[&cert, &key])?;
    }
    write_file(&cert, ca.cert_pem.as_bytes(), false)?;
    write_file(&key, ca.key_pem().as_bytes(), true)
}

/// Read `ca.pem` and `ca.key` from `dir`.
pub fn load_ca(dir: &Path) -> Result<Ca, CertError> {
    Ca::from_pem(
        &read_file(&ca_cert_path(dir))?,
        &read_file(&ca_key_path(dir))?,
    )
}

/// Read `ca.pem` from `dir`: the trust root (all a region needs of the CA).
pub fn load_ca_cert(dir: &Path) -> Result<String, CertError> {
    let pem = read_file(&ca_cert_path(dir))?;
    parse_cert_pem(&pem, "ca.pem")?;
    Ok(pem)
}

/// Write `<region>.pem` and `<region>.key` (0600) into `dir` (created if missing). Refuses to
/// replace an existing certificate or key unless `force`.
pub fn write_identity(dir: &Path, identity: &Identity, force: bool) -> Result<(), CertError> {
    create_dir(dir)?;
    let cert = region_cert_path(dir, &identity.region);
    let key = region_key_path(dir, &identity.region);
    if !force {
        refuse_existing(&[&cert, &key])?;
    }
    write_file(&cert, identity.cert_pem.as_bytes(), false)?;
    write_file(&key, identity.key_pem.as_bytes(), true)
}

/// Read `<region>.pem` and `<region>.key` from `dir`. Checks that both parse; whether the
/// certificate names `region` and chains to the CA is checked by the peers that see it.
pub fn load_identity(dir: &Path, region: &str) -> Result<Identity, CertError> {
    if !crate::ids::is_valid_name(region) {
        return Err(CertError::InvalidRegion(region.to_string()));
    }
    let cert_path = region_cert_path(dir, region);
    let key_path = region_key_path(dir, region);
    let cert_pem = read_file(&cert_path)?;
    let key_pem = read_file(&key_path)?;
    parse_cert_pem(&cert_pem, &cert_path.display().to_string())?;
    KeyPair::from_pem(&key_pem).map_err(|e| CertError::Pem {
        what: key_path.display().to_string(),
        detail: e.to_string(),
    })?;
    Ok(Identity {
        region: region.to_string(),
        cert_pem,
        key_pem,
    })
}

fn create_dir(dir: &Path) -> Result<(), CertError> {
    std::fs::create_dir_all(dir).map_err(|source| CertError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

fn refuse_existing(paths: &[&Path]) -> Result<(), CertError> {
    match paths.iter().find(|p| p.exists()) {
        Some(p) => Err(CertError::Exists(p.to_path_buf())),
        None => Ok(()),
    }
}

fn read_file(path: &Path) -> Result<String, CertError> {
    std::fs::read_to_string(path).map_err(|source| CertError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Write a file; a `secret` one is created with mode 0600 (and forced to 0600 if it existed),
/// so a key is never readable by others, not even for a moment.
fn write_file(path: &Path, contents: &[u8], secret: bool) -> Result<(), CertError> {
    use std::io::Write;
    let io = |source| CertError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        // An existing file keeps its mode on open: tighten it before writing the key into it.
        if path.exists() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        }
    }
    let mut file = options.open(path).map_err(io)?;
    file.write_all(contents).map_err(io)?;
    file.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issued_certificate_names_its_region_and_chains_to_the_ca() {
        let ca = generate_ca().unwrap();
        let id = ca.issue("eu-west").unwrap();
        let der = parse_cert_pem(&id.cert_pem, "test").unwrap();
        let ee = webpki::EndEntityCert::try_from(&der).unwrap();
        let names: Vec<&str> = ee.valid_dns_names().collect();
        assert_eq!(names, ["eu-west.geoscim"]);
        assert_eq!(region_of_name(names[0]), Some("eu-west"));
        // Chains to the CA: rustls' verifier accepts it for client authentication.
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(parse_cert_pem(ca.cert_pem(), "ca").unwrap())
            .unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.into(),
            rustls::crypto::ring::default_provider().into(),
        )
        .build()
        .unwrap();
        verifier
            .verify_client_cert(&der, &[], rustls::pki_types::UnixTime::now())
            .unwrap();
    }

    #[test]
    fn a_server_certificate_names_its_addresses_and_chains_to_the_ca() {
        let ca = generate_ca().unwrap();
        let ip: std::net::IpAddr = "127.0.1.1".parse().unwrap();
        let id = ca
            .issue_server("eu", &["localhost".into(), "*.geoscim.test".into()], &[ip])
            .unwrap();
        assert!(server_cert_fits(&id.cert_pem, ca.cert_pem(), &[ip]));
        let other: std::net::IpAddr = "127.0.1.2".parse().unwrap();
        assert!(!server_cert_fits(&id.cert_pem, ca.cert_pem(), &[other]));
        assert!(!server_cert_fits(
            &id.cert_pem,
            generate_ca().unwrap().cert_pem(),
            &[ip]
        ));
        // It serves: the key fits the certificate.
        crate::tls::parse(
            id.cert_pem.as_bytes(),
            id.key_pem.as_bytes(),
            Path::new("c"),
            Path::new("k"),
        )
        .unwrap();
    }

    #[test]
    fn invalid_region_names_are_refused() {
        let ca = generate_ca().unwrap();
        for bad in ["", "EU", "eu.west", "a b", &"x".repeat(64)] {
            assert!(matches!(ca.issue(bad), Err(CertError::InvalidRegion(_))));
        }
        assert_eq!(region_of_name("eu.geoscim"), Some("eu"));
        assert_eq!(region_of_name("geoscim"), None);
        assert_eq!(region_of_name("a.b.geoscim"), None);
        assert_eq!(region_of_name("eu.example"), None);
    }

    #[test]
    fn certificates_round_trip_through_pem_files() {
        let dir = tempfile::tempdir().unwrap();
        let ca = generate_ca().unwrap();
        write_ca(dir.path(), &ca, false).unwrap();
        let id = ca.issue("us").unwrap();
        write_identity(dir.path(), &id, false).unwrap();

        let loaded_ca = load_ca(dir.path()).unwrap();
        assert_eq!(loaded_ca.cert_pem(), ca.cert_pem());
        assert_eq!(load_ca_cert(dir.path()).unwrap(), ca.cert_pem());
        let loaded = load_identity(dir.path(), "us").unwrap();
        assert_eq!(loaded.cert_pem, id.cert_pem);
        assert_eq!(loaded.key_pem, id.key_pem);

        // The reloaded CA issues certificates that chain to the original ca.pem.
        let again = loaded_ca.issue("ap").unwrap();
        let der = parse_cert_pem(&again.cert_pem, "ap").unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(parse_cert_pem(ca.cert_pem(), "ca").unwrap())
            .unwrap();
        rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.into(),
            rustls::crypto::ring::default_provider().into(),
        )
        .build()
        .unwrap()
        .verify_client_cert(&der, &[], rustls::pki_types::UnixTime::now())
        .unwrap();

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for key in [ca_key_path(dir.path()), region_key_path(dir.path(), "us")] {
                let mode = std::fs::metadata(&key).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "{}", key.display());
            }
        }
    }

    #[test]
    fn existing_files_are_not_overwritten_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let ca = generate_ca().unwrap();
        write_ca(dir.path(), &ca, false).unwrap();
        assert!(matches!(
            write_ca(dir.path(), &generate_ca().unwrap(), false),
            Err(CertError::Exists(_))
        ));
        let first = ca.issue("eu").unwrap();
        write_identity(dir.path(), &first, false).unwrap();
        let second = ca.issue("eu").unwrap();
        assert!(matches!(
            write_identity(dir.path(), &second, false),
            Err(CertError::Exists(_))
        ));
        assert_eq!(
            load_identity(dir.path(), "eu").unwrap().key_pem,
            first.key_pem
        );
        write_identity(dir.path(), &second, true).unwrap();
        assert_eq!(
            load_identity(dir.path(), "eu").unwrap().key_pem,
            second.key_pem
        );
    }

    #[test]
    fn a_ca_key_from_another_ca_is_refused() {
        let a = generate_ca().unwrap();
        let b = generate_ca().unwrap();
        assert!(matches!(
            Ca::from_pem(a.cert_pem(), &b.key_pem()),
            Err(CertError::CaMismatch)
        ));
        assert!(Ca::from_pem(a.cert_pem(), &a.key_pem()).is_ok());
        assert!(matches!(
            Ca::from_pem("not pem", &a.key_pem()),
            Err(CertError::Pem { .. })
        ));
    }
}
