//! `geoscim up`: the ready-made local cluster of `regions/local/` (three regions on loopback).
//!
//! Certificates are generated on first start into the cluster's `certs_dir` (never committed):
//! the cluster CA and each region's replication certificate, and for a region with
//! `[http.tls]` the HTTPS listener's certificate from the same CA (its listen address,
//! `localhost` and the DNS names as subject names), so one `ca.pem` is all a client needs to
//! trust (`curl --cacert`, printed at start);
//! one fresh bearer token for tenant `default` is accepted by every region (an IdP sees one
//! geo-routed service, so one token must work everywhere) and printed at each start, never
//! stored; likewise one fresh admin token for the admin API (`/admin/v1`, `geoscim conflicts`),
//! and one fresh OAuth client for tenant `default` (client credentials at `/oauth/token`), with
//! a signing key per region kept next to the certificates; and one fresh cursor key
//! (`scim.cursor_key`, unless a region file sets one), so cursor pages continue across regions.
//! Each region is a child `geoscim serve` process; Ctrl-C or SIGTERM stops them all with SIGTERM
//! and waits for them.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::config::Config;

/// Start every region of `dir` (one `*.toml` per region) and run until interrupted.
pub async fn up(dir: &Path) -> anyhow::Result<()> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    anyhow::ensure!(!files.is_empty(), "no region files in {}", dir.display());
    let mut configs = Vec::new();
    for f in &files {
        configs.push(Config::load(f, std::env::vars())?);
    }
    check_dns_tables(&configs)?;
    // Certificates first, one region at a time, so the regions never race to create the CA.
    for c in &configs {
        if let Some(r) = &c.replication {
            crate::replication::node::load_or_create_identity(&r.certs_dir, &c.region)
                .with_context(|| format!("certificates for region {}", c.region))?;
        }
    }
    let ca = https_identities(&configs)?;
    let token = crate::server::new_token_text();
    let tokens = format!(
        "[{{tenant=\"{}\", sha256=\"{}\"}}]",
        crate::server::DEFAULT_TENANT,
        crate::api::token_hash(&token)
    );
    let admin_token = crate::server::new_token_text();
    let admin_tokens = format!("[{{sha256=\"{}\"}}]", crate::api::token_hash(&admin_token));
    let oauth = LocalOAuth::new(&configs)?;
    // One cursor key for every region, fresh per start, so a cursor one region handed out
    // reads the next page in any other (DNS may move the IdP between pages).
    let cursor_key = hex::encode(rand::random::<[u8; 32]>());
    let exe = std::env::current_exe().context("cannot find the geoscim binary")?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, String)>();
    let mut children: Vec<(String, Child)> = Vec::new();
    for (file, c) in files.iter().zip(&configs) {
        let mut child = Command::new(&exe)
            .arg("serve")
            .arg("--config")
            .arg(file)
            .env("GEOSCIM_TOKENS", &tokens)
            .env("GEOSCIM_ADMIN_TOKENS", &admin_tokens)
            .envs(oauth.env(&c.region))
            .envs(
                c.scim
                    .cursor_key
                    .is_none()
                    .then_some(("GEOSCIM_SCIM__CURSOR_KEY", cursor_key.as_str())),
            )
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start region {}", c.region))?;
        let stdout = child.stdout.take().expect("piped");
        let (region, tx) = (c.region.clone(), tx.clone());
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = tx.send((region.clone(), line));
            }
        });
        children.push((c.region.clone(), child));
    }
    drop(tx);
    let mut urls = std::collections::BTreeMap::new();
    let stop = crate::server::shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            line = rx.recv() => {
                let Some((region, line)) = line else { break };
                println!("[{region}] {line}");
                if let Some(url) = line.strip_prefix("geoscim: http listening on ") {
                    urls.insert(region, format!("{url}/scim/v2"));
                    if urls.len() == configs.len() {
                        println!("geoscim: local cluster up ({} regions)", urls.len());
                        for (r, u) in &urls {
                            println!("geoscim: region {r}: {u}");
                        }
                        println!("geoscim: token for tenant default (all regions): {token}");
                        println!("geoscim: admin token (all regions): {admin_token}");
                        for line in oauth.lines(&urls, ca.as_deref()) {
                            println!("{line}");
                        }
                        for line in trust_lines(ca.as_deref(), &urls, &token) {
                            println!("{line}");
                        }
                        for line in dashboard_lines(&urls) {
                            println!("{line}");
                        }
                        for line in try_lines(&configs, &exe, &token, ca.as_deref()) {
                            println!("{line}");
                        }
                        println!("geoscim: Ctrl-C stops every region");
                    }
                }
            }
            _ = &mut stop => break,
        }
    }
    println!("geoscim: stopping {} regions", children.len());
    for (_, child) in &children {
        if let Some(pid) = child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
    for (region, mut child) in children {
        match tokio::time::timeout(std::time::Duration::from_secs(10), child.wait()).await {
            Ok(Ok(status)) => println!("geoscim: region {region} stopped ({status})"),
            _ => {
                let _ = child.kill().await;
                println!("geoscim: region {region} killed after 10 s");
            }
        }
    }
    Ok(())
}

/// The local cluster's OAuth: a signing key per region (`<region>.jwt.key` next to its
/// certificates, made on first start and kept, kid = the region name), every region trusting
/// all of them, and one fresh client for tenant `default` per start (never stored).
struct LocalOAuth {
    /// Key file per region.
    files: std::collections::BTreeMap<String, PathBuf>,
    /// `GEOSCIM_OAUTH__KEYS`: every region's public key.
    keys: String,
    client_id: String,
    client_secret: String,
}

impl LocalOAuth {
    fn new(configs: &[Config]) -> anyhow::Result<LocalOAuth> {
        let mut files = std::collections::BTreeMap::new();
        let mut keys = Vec::new();
        for c in configs {
            let dir = c
                .replication
                .as_ref()
                .map(|r| r.certs_dir.clone())
                .unwrap_or_else(|| c.data_dir.clone());
            let file = dir.join(format!("{}.jwt.key", c.region));
            let key = if file.exists() {
                crate::oauth::SigningKey::load(&file)?
            } else {
                let key = crate::oauth::SigningKey::generate()?;
                key.write(&file, false)?;
                key
            };
            keys.push(format!(
                "{{kid=\"{}\", x=\"{}\"}}",
                c.region,
                key.public_key_x()
            ));
            files.insert(c.region.clone(), file);
        }
        Ok(LocalOAuth {
            files,
            keys: format!("[{}]", keys.join(", ")),
            client_id: crate::oauth::new_client_id(),
            client_secret: crate::oauth::new_client_secret(),
        })
    }

    /// The `GEOSCIM_OAUTH__*` variables of one region.
    fn env(&self, region: &str) -> Vec<(String, String)> {
        let file = self.files.get(region).cloned().unwrap_or_default();
        vec![
            (
                "GEOSCIM_OAUTH__SIGNING_KEY".into(),
                format!("{{kid=\"{region}\", file=\"{}\"}}", file.display()),
            ),
            ("GEOSCIM_OAUTH__KEYS".into(), self.keys.clone()),
            (
                "GEOSCIM_OAUTH__CLIENTS".into(),
                format!(
                    "[{{client_id=\"{}\", tenant=\"{}\", secret_sha256=[\"{}\"]}}]",
                    self.client_id,
                    crate::server::DEFAULT_TENANT,
                    crate::oauth::secret_hash(&self.client_secret)
                ),
            ),
        ]
    }

    /// What `up` prints: the client and a curl line for a token from the first region.
    fn lines(
        &self,
        urls: &std::collections::BTreeMap<String, String>,
        ca: Option<&Path>,
    ) -> Vec<String> {
        let mut out = vec![format!(
            "geoscim: OAuth client for tenant {} (all regions): client_id {} client_secret {}",
            crate::server::DEFAULT_TENANT,
            self.client_id,
            self.client_secret
        )];
        if let Some(url) = urls.values().next() {
            let base = url.strip_suffix("/scim/v2").unwrap_or(url);
            let cacert = ca
                .map(|c| format!("--cacert {} ", c.display()))
                .unwrap_or_default();
            out.push(format!(
                "geoscim: try: curl -s {cacert}-u '{}:{}' -d grant_type=client_credentials \
                 {base}/oauth/token",
                self.client_id, self.client_secret
            ));
        }
        out
    }
}

/// Give every region with `[http.tls]` a listener certificate from its cluster CA when its
/// files are missing or no longer fit (another CA, another listen address); keep them
/// otherwise. Returns the CA file clients must trust, when a region serves HTTPS.
fn https_identities(configs: &[Config]) -> anyhow::Result<Option<PathBuf>> {
    use crate::replication::certs;
    let mut trust = None;
    for c in configs {
        let (Some(tls), Some(r)) = (&c.http.tls, &c.replication) else {
            continue;
        };
        let ca_pem = certs::load_ca_cert(&r.certs_dir)
            .with_context(|| format!("the cluster CA for region {}", c.region))?;
        let ips = listener_ips(c.http.listen.ip());
        let fits = match std::fs::read_to_string(&tls.cert) {
            Ok(pem) => tls.key.exists() && certs::server_cert_fits(&pem, &ca_pem, &ips),
            Err(_) => false,
        };
        if !fits {
            let mut names = vec!["localhost".to_string()];
            if let Some(d) = &c.dns {
                names.push(d.service_name());
                names.push(format!("*.{}", d.zone));
            }
            let ca = certs::load_ca(&r.certs_dir)
                .with_context(|| format!("the cluster CA key for region {}", c.region))?;
            let id = ca.issue_server(&c.region, &names, &ips)?;
            certs::write_server_identity(&id, &tls.cert, &tls.key)?;
            println!(
                "geoscim: wrote the HTTPS certificate of region {} ({}) from the cluster CA",
                c.region,
                tls.cert.display()
            );
        }
        trust = Some(certs::ca_cert_path(&r.certs_dir));
    }
    Ok(trust)
}

/// The addresses a listener's certificate names: its own (or loopback when it binds every
/// address), and 127.0.0.1 for `localhost` clients.
fn listener_ips(ip: std::net::IpAddr) -> Vec<std::net::IpAddr> {
    let loopback = std::net::IpAddr::from([127, 0, 0, 1]);
    let mut ips = vec![if ip.is_unspecified() { loopback } else { ip }];
    if !ips.contains(&loopback) {
        ips.push(loopback);
    }
    ips
}

/// How to trust the regions' HTTPS certificates: the cluster CA and a `curl` line.
fn trust_lines(
    ca: Option<&Path>,
    urls: &std::collections::BTreeMap<String, String>,
    token: &str,
) -> Vec<String> {
    let Some(ca) = ca else {
        return Vec::new();
    };
    let Some(first) = urls.values().find(|u| u.starts_with("https://")) else {
        return Vec::new();
    };
    vec![
        format!(
            "geoscim: HTTPS certificates are signed by the cluster CA {}: trust it (curl \
             --cacert, REQUESTS_CA_BUNDLE, SSL_CERT_FILE) or add it to your trust store",
            ca.display()
        ),
        format!(
            "geoscim: try: curl --cacert {} -H 'Authorization: Bearer {token}' {first}/Users",
            ca.display()
        ),
    ]
}

/// Every region's `[dns]` must carry the same zone and table (all but `listen`): responders
/// that disagree would send the same client to different regions.
fn check_dns_tables(configs: &[Config]) -> anyhow::Result<()> {
    let mut first: Option<(&str, crate::config::DnsConfig)> = None;
    for c in configs {
        let Some(d) = &c.dns else { continue };
        let mut shared = d.clone();
        shared.listen = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
        match &first {
            None => first = Some((&c.region, shared)),
            Some((region, other)) => anyhow::ensure!(
                *other == shared,
                "regions {region} and {} have different [dns] settings or tables (only \
                 dns.listen may differ): every responder must give the same answers",
                c.region
            ),
        }
    }
    Ok(())
}

/// Where each region's dashboard is, from the SCIM base URLs by region.
fn dashboard_lines(urls: &std::collections::BTreeMap<String, String>) -> Vec<String> {
    urls.iter()
        .map(|(r, u)| {
            let base = u.strip_suffix("/scim/v2").unwrap_or(u);
            format!(
                "geoscim: dashboard of region {r}: {base}/dashboard (sign in with the admin token)"
            )
        })
        .collect()
}

/// The `dig` and `idp-sim` lines to try the cluster's DNS with, when it has responders; with
/// `ca` (the regions serve HTTPS), idp-sim trusts it.
fn try_lines(configs: &[Config], exe: &Path, token: &str, ca: Option<&Path>) -> Vec<String> {
    let dns: Vec<&crate::config::DnsConfig> =
        configs.iter().filter_map(|c| c.dns.as_ref()).collect();
    let Some(first) = dns.first() else {
        return Vec::new();
    };
    let name = first.service_name();
    let servers: Vec<String> = dns.iter().map(|d| d.listen.to_string()).collect();
    let regions: Vec<String> = configs
        .iter()
        .map(|c| {
            let scheme = if c.http.tls.is_some() {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{}", c.http.listen)
        })
        .collect();
    let cacert = ca.map_or(String::new(), |ca| format!(" --cacert {}", ca.display()));
    let port = configs.first().map_or(8080, |c| c.http.listen.port());
    let (ip, dns_port) = (first.listen.ip(), first.listen.port());
    vec![
        format!("geoscim: dns for {name} on {}", servers.join(", ")),
        format!("geoscim: try: dig @{ip} -p {dns_port} {name} A +subnet=10.3.0.0/24"),
        format!(
            "geoscim: try: {} idp-sim --name {name} --dns {} --port {port}{cacert} --regions {} --token {token}",
            exe.display(),
            servers.join(","),
            regions.join(","),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_prints_each_regions_dashboard_url() {
        let urls = std::collections::BTreeMap::from([
            (
                "eu".to_string(),
                "http://127.0.1.1:8080/scim/v2".to_string(),
            ),
            (
                "us".to_string(),
                "http://127.0.1.2:8080/scim/v2".to_string(),
            ),
        ]);
        assert_eq!(
            dashboard_lines(&urls),
            [
                "geoscim: dashboard of region eu: http://127.0.1.1:8080/dashboard (sign in with \
                 the admin token)",
                "geoscim: dashboard of region us: http://127.0.1.2:8080/dashboard (sign in with \
                 the admin token)",
            ]
        );
    }

    fn local(region: &str) -> Config {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("regions/local");
        Config::load(&dir.join(format!("{region}.toml")), []).unwrap()
    }

    #[test]
    fn up_gives_every_region_a_kept_signing_key_and_one_client_they_all_accept() {
        let dir = tempfile::tempdir().unwrap();
        let configs: Vec<Config> = ["eu", "us"]
            .iter()
            .map(|r| {
                let mut c = local(r);
                c.replication.as_mut().unwrap().certs_dir = dir.path().to_path_buf();
                c
            })
            .collect();
        let oauth = LocalOAuth::new(&configs).unwrap();
        let setups: Vec<crate::oauth::OAuth> = ["eu", "us"]
            .iter()
            .map(|r| {
                let c = Config::load(
                    &Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("regions/local/{r}.toml")),
                    oauth.env(r),
                )
                .unwrap();
                crate::oauth::OAuth::load(c.oauth.as_ref().unwrap()).unwrap()
            })
            .collect();
        let request = crate::oauth::TokenRequest {
            client_id: oauth.client_id.clone(),
            client_secret: oauth.client_secret.clone(),
        };
        let token = setups[0].issue(&request, 1_000).unwrap().access_token;
        assert_eq!(setups[1].verify(&token, 1_001).unwrap().tenant, "default");
        // The keys are kept: a second start reads the same files.
        let again = LocalOAuth::new(&configs).unwrap();
        assert_eq!(again.keys, oauth.keys);
        assert_ne!(again.client_id, oauth.client_id, "a fresh client per start");
        let urls = std::collections::BTreeMap::from([(
            "eu".to_string(),
            "http://127.0.1.1:8080/scim/v2".to_string(),
        )]);
        let lines = oauth.lines(&urls, None);
        assert!(
            lines[1]
                .ends_with("-d grant_type=client_credentials http://127.0.1.1:8080/oauth/token"),
            "{lines:?}"
        );
        let lines = oauth.lines(&urls, Some(Path::new("certs/ca.pem")));
        assert!(
            lines[1].contains("curl -s --cacert certs/ca.pem -u "),
            "{lines:?}"
        );
    }

    #[test]
    fn up_refuses_region_files_whose_dns_tables_differ() {
        let mut configs = vec![local("eu"), local("us"), local("ap")];
        check_dns_tables(&configs).unwrap();
        configs[2].dns.as_mut().unwrap().regions[0].lat += 1.0;
        let err = check_dns_tables(&configs).unwrap_err().to_string();
        assert!(err.contains("eu") && err.contains("ap"), "{err}");
    }

    #[test]
    fn up_prints_a_dig_line_and_an_idp_sim_line() {
        let configs = vec![local("eu"), local("us"), local("ap")];
        let lines = try_lines(
            &configs,
            Path::new("geoscim"),
            "gs_t",
            Some(Path::new("build/local/certs/ca.pem")),
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains("dig @127.0.1.1 -p 5300 scim.geoscim.test A")),
            "{lines:?}"
        );
        let sim = lines.iter().find(|l| l.contains("idp-sim")).unwrap();
        for part in [
            "--dns 127.0.1.1:5300,127.0.1.2:5300,127.0.1.3:5300",
            "--port 8080 --cacert build/local/certs/ca.pem",
            "https://127.0.1.3:8080",
            "--token gs_t",
        ] {
            assert!(sim.contains(part), "{part} in {sim}");
        }
    }
}
