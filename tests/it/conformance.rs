//! Conformance: the `scim2-tester` suite (via `scim2-cli`) against a live region over HTTPS
//! (certificate verified: `SSL_CERT_FILE` names the test's CA); every check must be SUCCESS. `scripts/test` installs the pinned tool into `build/venv`; set `GEOSCIM_SCIM2`
//! to use another copy.

use std::path::PathBuf;
use std::process::Command;

use crate::harness::Region;

fn scim2_bin() -> PathBuf {
    if let Ok(p) = std::env::var("GEOSCIM_SCIM2") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("build/venv/bin/scim2")
}

#[tokio::test]
async fn scim2_tester_reports_every_check_success() {
    let bin = scim2_bin();
    assert!(
        bin.exists(),
        "{} is missing: run ./scripts/bootstrap (or ./scripts/test) to install the pinned scim2-cli",
        bin.display()
    );
    // A CA and a certificate for 127.0.0.1, as an operator would give the region.
    let pki = tempfile::tempdir().unwrap();
    let ca = geoscim::replication::certs::generate_ca().unwrap();
    let id = ca
        .issue_server(
            "conformance",
            &["localhost".into()],
            &["127.0.0.1".parse().unwrap()],
        )
        .unwrap();
    let (ca_file, cert, key) = (
        pki.path().join("ca.pem"),
        pki.path().join("server.pem"),
        pki.path().join("server.key"),
    );
    std::fs::write(&ca_file, ca.cert_pem()).unwrap();
    std::fs::write(&cert, &id.cert_pem).unwrap();
    std::fs::write(&key, &id.key_pem).unwrap();
    let mut region = Region::start_with(
        &["t1"],
        &[
            ("GEOSCIM_HTTP__TLS__CERT", cert.to_str().unwrap()),
            ("GEOSCIM_HTTP__TLS__KEY", key.to_str().unwrap()),
        ],
    );
    region.client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.cert_pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    region.wait_healthy().await;
    let scim = region.scim();
    assert!(scim.starts_with("https://"), "{scim}");
    let token = region.token().to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(bin)
            // httpx (scim2-cli's client) verifies against this file instead of the system's.
            .env("SSL_CERT_FILE", &ca_file)
            .args([
                "--url",
                &scim,
                "--header",
                &format!("Authorization: Bearer {token}"),
                "test",
            ])
            .output()
            .expect("run scim2")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // One `STATUS name` line per check, each followed by indented detail lines.
    let checks: Vec<&str> = stdout
        .lines()
        .filter(|l| {
            !l.is_empty() && !l.starts_with(char::is_whitespace) && !l.starts_with("Performing")
        })
        .collect();
    let failed: Vec<&&str> = checks
        .iter()
        .filter(|l| !l.starts_with("SUCCESS "))
        .collect();
    println!(
        "scim2 test: {} checks, {} not SUCCESS",
        checks.len(),
        failed.len()
    );
    assert!(checks.len() > 50, "too few checks ran:\n{stdout}\n{stderr}");
    assert!(
        failed.is_empty(),
        "checks not SUCCESS: {failed:?}\n--- full output:\n{stdout}\n--- stderr:\n{stderr}"
    );
    assert!(
        out.status.success(),
        "scim2 exited with {:?}\n{stderr}",
        out.status
    );
}
