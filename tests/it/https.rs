//! HTTPS on the listener with real clients: reqwest (rustls) provisioning through it, a client
//! of another CA refused, plain HTTP refused, the TLS versions and ALPN a rustls client and
//! openssl's `s_client` get, HTTP/2 from curl, a stalled handshake cut off, and certificate
//! reloads (SIGHUP, file change, broken files) seen from new and already open connections.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use geoscim::replication::certs::{self, Ca, Identity};
use reqwest::{Method, StatusCode};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use sha2::{Digest, Sha256};

use crate::harness::Region;

/// A CA and the files a region serves, in a temp dir.
struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = certs::generate_ca().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).unwrap();
        Pki { dir, ca }
    }

    fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn cert_path(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    fn key_path(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }

    /// A fresh server certificate for 127.0.0.1 / localhost.
    fn mint(&self) -> Identity {
        self.ca
            .issue_server(
                "https",
                &["localhost".into()],
                &["127.0.0.1".parse().unwrap()],
            )
            .unwrap()
    }

    /// Put `id` where the region reads it: the key first, then the certificate, each by rename,
    /// so a poll never sees half a file (a poll between the two sees a mismatch and retries).
    fn install(&self, id: &Identity) {
        for (path, text) in [
            (self.key_path(), &id.key_pem),
            (self.cert_path(), &id.cert_pem),
        ] {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
        }
    }

    /// A region serving `first`, reading the files every `reload_ms` (0: SIGHUP only).
    fn start(&self, first: &Identity, reload_ms: u64, extra: &[(&str, &str)]) -> Region {
        self.install(first);
        let (cert, key) = (self.cert_path(), self.key_path());
        let reload = reload_ms.to_string();
        let mut env = vec![
            ("GEOSCIM_HTTP__TLS__CERT", cert.to_str().unwrap()),
            ("GEOSCIM_HTTP__TLS__KEY", key.to_str().unwrap()),
            ("GEOSCIM_HTTP__TLS__RELOAD_INTERVAL_MS", reload.as_str()),
        ];
        env.extend_from_slice(extra);
        let mut region = Region::start_with(&["t1"], &env);
        region.client = trusting(self.ca.cert_pem());
        region
    }
}

/// A reqwest client that trusts `ca_pem`.
fn trusting(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap()
}

fn addr(region: &Region) -> String {
    region
        .url
        .strip_prefix("https://")
        .unwrap_or_else(|| panic!("the region announced {} instead of https://", region.url))
        .to_string()
}

fn fingerprint(pem: &str) -> String {
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    hex::encode(Sha256::digest(der.as_ref()))
}

/// A rustls client config trusting `ca_pem`, limited to `versions`, offering `alpn`.
fn client_config(
    ca_pem: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A finished TLS handshake with the region at `addr`.
fn connect(addr: &str, config: Arc<rustls::ClientConfig>) -> Result<Tls, String> {
    let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let name = ServerName::IpAddress("127.0.0.1".parse::<std::net::IpAddr>().unwrap().into());
    let conn = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .map_err(|e| e.to_string())?;
    }
    Ok(tls)
}

/// The fingerprint of the certificate the peer presented.
fn served(tls: &Tls) -> String {
    let chain = tls.conn.peer_certificates().expect("a certificate");
    hex::encode(Sha256::digest(chain[0].as_ref()))
}

/// One `GET /health` on an open HTTP/1.1 connection (kept alive): the status code.
fn get_health(tls: &mut Tls) -> u16 {
    tls.write_all(b"GET /health HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .unwrap();
    tls.flush().unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert!(head.len() < 16 * 1024, "an endless header");
        tls.read_exact(&mut byte)
            .expect("the connection stays open");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .expect("a content-length");
    let mut body = vec![0u8; length];
    tls.read_exact(&mut body).unwrap();
    head[9..12].parse().unwrap()
}

/// What a new connection is served, once it is `want` (bounded).
fn wait_served(addr: &str, ca_pem: &str, want: &str, what: &str) {
    let config = client_config(ca_pem, rustls::ALL_VERSIONS, &[b"http/1.1"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(tls) = connect(addr, config.clone()) {
            last = served(&tls);
            if last == want {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what}: new connections still get {last}, not {want}");
}

/// The value of one sample of the region's `/metrics` (0 when absent).
async fn metric(region: &Region, series: &str) -> f64 {
    crate::harness::sample(&region.metrics().await, series).unwrap_or(0.0)
}

async fn wait_metric(region: &Region, sample: &str, at_least: f64) {
    crate::harness::eventually(20, sample, || async {
        (metric(region, sample).await >= at_least).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_client_trusting_the_ca_provisions_over_https_and_others_are_refused() {
    let pki = Pki::new();
    let region = pki.start(&pki.mint(), 0, &[]);
    region.wait_healthy().await;
    let user = region.create_user("tls-alice@example.com").await;
    let id = user["id"].as_str().unwrap();
    let (status, got) = region.req(Method::GET, &format!("/Users/{id}"), None).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(got["userName"], "tls-alice@example.com");
    assert!(
        got["meta"]["location"]
            .as_str()
            .unwrap()
            .starts_with("https://"),
        "{got}"
    );

    // A client that trusts another CA (and the system's roots) refuses the certificate.
    let stranger = trusting(Pki::new().ca.cert_pem());
    let err = stranger
        .get(format!("{}/health", region.url))
        .send()
        .await
        .expect_err("a certificate of an unknown CA must be refused");
    assert!(err.is_connect(), "{err:?}");

    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/health", addr(&region)))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");
    wait_metric(
        &region,
        "geoscim_tls_handshake_failures_total{reason=\"error\"}",
        2.0,
    )
    .await;
}

#[test]
fn tls_1_2_and_1_3_with_alpn_h2_are_spoken_and_older_versions_refused() {
    let pki = Pki::new();
    let region = pki.start(&pki.mint(), 0, &[]);
    let addr = addr(&region);
    let ca = pki.ca.cert_pem();
    for (version, want) in [
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let mut tls = connect(&addr, client_config(ca, &[version], &[b"http/1.1"])).unwrap();
        assert_eq!(tls.conn.protocol_version(), Some(want));
        assert_eq!(tls.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
        assert_eq!(get_health(&mut tls), 200);
    }
    let tls = connect(
        &addr,
        client_config(ca, rustls::ALL_VERSIONS, &[b"h2", b"http/1.1"]),
    )
    .unwrap();
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"h2"[..]));

    // Another TLS stack: openssl offers TLS 1.1 (and 1.0) only if allowed to (SECLEVEL=0), and
    // the region refuses them; the same command with TLS 1.2 succeeds, so the refusal is the
    // server's.
    let s_client = |version: &str| {
        Command::new("openssl")
            .args(["s_client", "-connect", &addr, version])
            .args(["-cipher", "DEFAULT@SECLEVEL=0", "-CAfile"])
            .arg(pki.ca_path())
            .arg("-verify_return_error")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("openssl is missing: run ./scripts/bootstrap")
    };
    let ok = s_client("-tls1_2");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    for old in ["-tls1_1", "-tls1"] {
        let out = s_client(old);
        assert!(
            !out.status.success(),
            "{old} was accepted: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    // HTTP/2 over TLS from curl (ALPN h2), through to the API.
    let out = Command::new("curl")
        .args([
            "-sS",
            "--http2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
        ])
        .arg("--cacert")
        .arg(pki.ca_path())
        .arg(format!("{}/health", region.url))
        .output()
        .expect("curl is missing: run ./scripts/bootstrap");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "2 200",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_stalled_handshake_is_cut_off_and_frees_its_connection_slot() {
    let pki = Pki::new();
    let region = pki.start(
        &pki.mint(),
        0,
        &[
            ("GEOSCIM_HTTP__TLS__HANDSHAKE_TIMEOUT_MS", "500"),
            ("GEOSCIM_HTTP__MAX_CONNECTIONS", "2"),
            ("GEOSCIM_HTTP__MAX_IN_FLIGHT", "1"),
        ],
    );
    let addr = addr(&region);
    // Two clients that connect and never say hello take both slots...
    let mut idle: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    let started = Instant::now();
    // ...and are closed once the handshake time is up (read sees EOF or a reset).
    for s in &mut idle {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 64];
        let closed = match s.read(&mut buf) {
            Ok(0) | Err(_) => true,
            Ok(_) => false,
        };
        assert!(closed, "a silent client got an answer");
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(8),
        "closed after {took:?}"
    );
    // The slots are free again: a real client gets through.
    region.wait_healthy().await;
    wait_metric(
        &region,
        "geoscim_tls_handshake_failures_total{reason=\"timeout\"}",
        2.0,
    )
    .await;
}

#[tokio::test]
async fn sighup_swaps_the_certificate_for_new_handshakes_and_open_connections_keep_working() {
    let pki = Pki::new();
    let (first, second) = (pki.mint(), pki.mint());
    // No polling: only the signal can reload.
    let region = pki.start(&first, 0, &[]);
    region.wait_healthy().await;
    let (addr, ca) = (addr(&region), pki.ca.cert_pem().to_string());
    let config = client_config(&ca, rustls::ALL_VERSIONS, &[b"http/1.1"]);
    let mut open = connect(&addr, config.clone()).unwrap();
    assert_eq!(served(&open), fingerprint(&first.cert_pem));
    assert_eq!(get_health(&mut open), 200);

    pki.install(&second);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(region.pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let want = fingerprint(&second.cert_pem);
    let (a, c) = (addr.clone(), ca.clone());
    tokio::task::spawn_blocking(move || wait_served(&a, &c, &want, "after SIGHUP"))
        .await
        .unwrap();
    // The connection opened before keeps its certificate and keeps serving.
    let open = tokio::task::spawn_blocking(move || {
        assert_eq!(get_health(&mut open), 200);
        assert_eq!(get_health(&mut open), 200);
        open
    })
    .await
    .unwrap();
    assert_eq!(served(&open), fingerprint(&first.cert_pem));
    assert_eq!(
        metric(&region, "geoscim_tls_reloads_total{result=\"ok\"}").await,
        1.0
    );
    // The region is still the same process, serving.
    let (status, _) = region.req(Method::GET, "/Users", None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_changed_file_is_picked_up_and_a_broken_one_keeps_the_certificate_in_use() {
    let pki = Pki::new();
    let (first, second, third) = (pki.mint(), pki.mint(), pki.mint());
    let region = pki.start(&first, 200, &[]);
    region.wait_healthy().await;
    let (addr, ca) = (addr(&region), pki.ca.cert_pem().to_string());
    let served_now = |want: String, what: &'static str| {
        let (a, c) = (addr.clone(), ca.clone());
        tokio::task::spawn_blocking(move || wait_served(&a, &c, &want, what))
    };

    // Renewal in place: picked up by the poll, no signal.
    pki.install(&second);
    served_now(fingerprint(&second.cert_pem), "after a file change")
        .await
        .unwrap();
    wait_metric(&region, "geoscim_tls_reloads_total{result=\"ok\"}", 1.0).await;

    // A broken certificate file: refused, counted, flagged; the second stays.
    let errors = metric(&region, "geoscim_tls_reloads_total{result=\"error\"}").await;
    std::fs::write(pki.cert_path(), "-----BEGIN CERTIFICATE-----\nbroken\n").unwrap();
    wait_metric(
        &region,
        "geoscim_tls_reloads_total{result=\"error\"}",
        errors + 1.0,
    )
    .await;
    assert_eq!(metric(&region, "geoscim_tls_reload_failing").await, 1.0);
    served_now(fingerprint(&second.cert_pem), "after a broken file")
        .await
        .unwrap();

    // A certificate whose key is another's: refused as well.
    let errors = metric(&region, "geoscim_tls_reloads_total{result=\"error\"}").await;
    std::fs::write(pki.cert_path(), &third.cert_pem).unwrap();
    wait_metric(
        &region,
        "geoscim_tls_reloads_total{result=\"error\"}",
        errors + 1.0,
    )
    .await;
    served_now(fingerprint(&second.cert_pem), "after a key mismatch")
        .await
        .unwrap();

    // Its key arrives: served, and the flag clears.
    pki.install(&third);
    served_now(fingerprint(&third.cert_pem), "after the key arrived")
        .await
        .unwrap();
    crate::harness::eventually(20, "reload_failing back to 0", || async {
        (metric(&region, "geoscim_tls_reload_failing").await == 0.0).then_some(())
    })
    .await;
}

#[test]
fn a_missing_certificate_file_stops_the_start_naming_the_key_and_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.pem");
    let out = Command::new(env!("CARGO_BIN_EXE_geoscim"))
        .args(["serve", "--config"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("regions/single.toml"))
        .env("GEOSCIM_DATA_DIR", dir.path().join("data"))
        .env("GEOSCIM_HTTP__LISTEN", "127.0.0.1:0")
        .env("GEOSCIM_HTTP__TLS__CERT", &missing)
        .env("GEOSCIM_HTTP__TLS__KEY", &missing)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("http.tls.cert") && stderr.contains(missing.to_str().unwrap()),
        "{stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("listening"),
        "it must not start"
    );
}

#[test]
fn plain_http_warns_at_start_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_geoscim"))
        .args(["serve", "--config"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("regions/single.toml"))
        .env("GEOSCIM_DATA_DIR", dir.path().join("data"))
        .env("GEOSCIM_HTTP__LISTEN", "127.0.0.1:0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("WARN") && line.contains("[http.tls]") {
                let _ = tx.send(line);
            }
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(60));
    let _ = child.kill();
    let _ = child.wait();
    let line = line.expect("no WARN line naming [http.tls]");
    assert!(line.contains("plain HTTP"), "{line}");
}

/// `geoscim up` on the ready-made region files (moved to a loopback net and ports of this
/// test): every region serves HTTPS with a certificate from the cluster CA, the printed lines
/// say how to trust it, the regions' DNS probes of each other's `/health` pass over HTTPS, and
/// the printed idp-sim line (with `--cacert`) provisions and reads back through it.
#[tokio::test]
async fn up_serves_https_from_the_cluster_ca_and_its_idp_sim_line_works() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let net = crate::dns::loopback_net();
    let ip1 = format!("{net}.1");
    let (http, quic, dns) = (
        crate::dns::free_port(&ip1),
        crate::dns::free_port(&ip1),
        crate::dns::free_port(&ip1),
    );
    let build = tmp.path().join("build");
    let regions = tmp.path().join("regions");
    std::fs::create_dir_all(&regions).unwrap();
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("regions/local");
    for r in ["eu", "us", "ap"] {
        let text = std::fs::read_to_string(local.join(format!("{r}.toml")))
            .unwrap()
            .replace("127.0.1.", &format!("{net}."))
            .replace(":8080", &format!(":{http}"))
            .replace(":7100", &format!(":{quic}"))
            .replace(":5300", &format!(":{dns}"))
            .replace("build/local", build.to_str().unwrap());
        std::fs::write(regions.join(format!("{r}.toml")), text).unwrap();
    }
    let mut up = Up(Command::new(env!("CARGO_BIN_EXE_geoscim"))
        .arg("up")
        .arg("--regions")
        .arg(&regions)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap());
    let stdout = up.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !lines
        .iter()
        .any(|l: &String| l.contains("Ctrl-C stops every region"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => panic!("geoscim up did not come up:\n{}", lines.join("\n")),
        }
    }
    let all = lines.join("\n");
    let ca = build.join("certs/ca.pem");
    assert!(
        all.contains(&format!("region eu: https://{ip1}:{http}/scim/v2")),
        "{all}"
    );
    assert!(
        all.contains(&format!("curl --cacert {}", ca.display())),
        "{all}"
    );
    let sim_line = lines
        .iter()
        .find(|l| l.contains(" idp-sim "))
        .expect("an idp-sim line");
    assert!(
        sim_line.contains(&format!("--cacert {}", ca.display())),
        "{sim_line}"
    );
    let token = lines
        .iter()
        .find_map(|l| l.strip_prefix("geoscim: token for tenant default (all regions): "))
        .unwrap()
        .to_string();

    // The regions probe each other's /health over HTTPS (http.peer_ca): all up in eu's view.
    let client = trusting(&std::fs::read_to_string(&ca).unwrap());
    let base = format!("https://{ip1}:{http}");
    crate::harness::eventually(60, "eu's DNS view of three healthy regions", || async {
        let h = crate::harness::health_json(&client, &base).await;
        let regions = h["dns"]["regions"].as_array()?;
        (regions.len() == 3 && regions.iter().all(|r| r["up"] == true)).then_some(())
    })
    .await;

    // The printed idp-sim line, smaller, through DNS and HTTPS.
    let args: Vec<String> = sim_line
        .split_once(" idp-sim ")
        .unwrap()
        .1
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let sim = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_geoscim"))
            .arg("idp-sim")
            .args(&args)
            .args(["--users", "6", "--groups", "1", "--duration", "30"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();

    // `up` gives every region one cursor key: a cursor from eu reads the next page in us.
    let scim = |ip: &str| format!("https://{ip}:{http}/scim/v2");
    for i in 0..3 {
        let body = serde_json::json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": format!("cursor-{i}@example.com"),
        });
        let r = client
            .post(format!("{}/Users", scim(&ip1)))
            .bearer_auth(&token)
            .header("content-type", "application/scim+json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::CREATED);
    }
    let get = |url: String| {
        let (client, token) = (client.clone(), token.clone());
        async move {
            let r = client.get(url).bearer_auth(&token).send().await.unwrap();
            (r.status(), r.json::<serde_json::Value>().await.unwrap())
        }
    };
    let (s, first) = get(format!("{}/Users?cursor&count=2", scim(&ip1))).await;
    assert_eq!(s, reqwest::StatusCode::OK, "{first}");
    let next = first["nextCursor"]
        .as_str()
        .expect("a next cursor")
        .to_string();
    let (s, second) = get(format!(
        "{}/Users?cursor={next}&count=2",
        scim(&format!("{net}.2"))
    ))
    .await;
    assert_eq!(
        s,
        reqwest::StatusCode::OK,
        "us refused eu's cursor: {second}"
    );
    drop(up);
    assert!(
        sim.status.success(),
        "idp-sim failed:\n{}\n{}",
        String::from_utf8_lossy(&sim.stdout),
        String::from_utf8_lossy(&sim.stderr)
    );
    assert!(token.starts_with("gs_"));
}

/// `geoscim up`, stopped as Ctrl-C would (SIGTERM: it stops its regions and waits for them)
/// however the test ends.
struct Up(std::process::Child);

impl Drop for Up {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.0.wait();
    }
}
