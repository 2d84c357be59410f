//! The geo-DNS responder with real clients on loopback (hickory-resolver and raw packets), and
//! idp-sim (the real binary) across a kill -9 of the region it is using.
//!
//! Regions get their own loopback addresses (127.X.Y.1, .2, .3 with X, Y random per test, so
//! parallel runs do not collide; Linux routes all of 127/8 to `lo`) and the same HTTP port, so
//! an A answer names a region exactly as in `geoscim up`.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use geoscim::dns::client;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::{Name, RecordType};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::harness::{eventually, eventually_ok, health_json, metrics_text};

const TOKEN: &str = "dns-test-token";

/// A loopback prefix `127.X.Y` for this test run.
pub(crate) fn loopback_net() -> String {
    let n: u32 = rand::random();
    format!("127.{}.{}", 10 + n % 200, 1 + (n >> 8) % 250)
}

/// A port free on `ip` now (the same number is then used on sibling addresses).
pub(crate) fn free_port(ip: &str) -> u16 {
    crate::harness::free_port_on(ip)
}

/// A region process started from its own config file.
pub(crate) struct Proc {
    child: Option<Child>,
    config: PathBuf,
    /// The printed HTTP base URL and DNS address.
    pub url: String,
    pub dns: Option<SocketAddr>,
}

impl Proc {
    pub(crate) fn start(config: PathBuf) -> Proc {
        let hash = hex::encode(Sha256::digest(TOKEN.as_bytes()));
        let mut child = Command::new(env!("CARGO_BIN_EXE_geoscim"))
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env(
                "GEOSCIM_TOKENS",
                format!("[{{tenant=\"t1\", sha256=\"{hash}\"}}]"),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn geoscim");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut dns = None;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("geoscim: dns listening on ") {
                    dns = rest.split_whitespace().next().and_then(|a| a.parse().ok());
                }
                if let Some(url) = line.strip_prefix("geoscim: http listening on ") {
                    let _ = tx.send((url.to_string(), dns));
                }
            }
        });
        let (url, dns) = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("region did not print its listeners within 60 s");
        Proc {
            child: Some(child),
            config,
            url,
            dns,
        }
    }

    pub(crate) fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub(crate) fn restart(&mut self) {
        self.kill9();
        let mut p = Proc::start(self.config.clone());
        self.child = p.child.take();
        self.url = p.url.clone();
        self.dns = p.dns;
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `[[dns.regions]]` for regions `eu`, `us`, `ap` on `net.1..3` (serving 10.1/16, 10.2/16,
/// 10.3/16), HTTP on `port`, each responder on `dns_port`.
fn dns_table(net: &str, port: u16, quic: Option<u16>, extra_eu_v6: usize) -> String {
    let mut t = String::new();
    for (i, (name, lat, lon)) in [("eu", 50.1, 8.7), ("us", 38.9, -77.4), ("ap", 1.35, 103.8)]
        .iter()
        .enumerate()
    {
        let n = i + 1;
        let mut addrs = vec![format!("\"{net}.{n}\""), format!("\"fd00::{n}\"")];
        if *name == "eu" {
            addrs.extend((0..extra_eu_v6).map(|k| format!("\"fd00::1:{k:x}\"")));
        }
        t += &format!(
            "[[dns.regions]]\nname = \"{name}\"\naddrs = [{}]\nlat = {lat}\nlon = {lon}\n\
             serves = [\"10.{n}.0.0/16\"]\nhealth_url = \"http://{net}.{n}:{port}/health\"\n\
             ns = \"{net}.{n}\"\n",
            addrs.join(", ")
        );
        if let Some(q) = quic {
            t += &format!("quic = \"{net}.{n}:{q}\"\n");
        }
    }
    t += "[[dns.tenants]]\ntenant = \"acme\"\nhome = \"us\"\n";
    t
}

fn dns_of(health: &Value) -> SocketAddr {
    health["dns"]["listen"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no dns.listen in /health: {health}"))
}

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

async fn ask(server: SocketAddr, q: &str, t: RecordType, subnet: Option<(&str, u8)>) -> Message {
    client::query(
        server,
        &name(q),
        t,
        subnet.map(|(a, p)| (a.parse().unwrap(), p)),
        Duration::from_secs(2),
    )
    .await
    .unwrap_or_else(|e| panic!("query {q} {t}: {e}"))
}

fn ips(m: &Message) -> Vec<String> {
    client::addresses(m)
        .0
        .iter()
        .map(|a| a.to_string())
        .collect()
}

fn ecs_of(m: &Message) -> Option<(IpAddr, u8, u8)> {
    match m.edns.as_ref()?.option(EdnsCode::Subnet)? {
        EdnsOption::Subnet(s) => Some((s.addr(), s.source_prefix(), s.scope_prefix())),
        _ => None,
    }
}

/// One region (`eu`) whose responder routes for a three-region table; `us` and `ap` are not
/// running, so once the prober has seen them fail they are not answered. Every region's
/// query answers come from eu's responder alone.
#[tokio::test]
async fn the_responder_answers_its_zone_refuses_the_rest_and_survives_garbage() {
    let net = loopback_net();
    let port = free_port(&format!("{net}.1"));
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("eu.toml");
    std::fs::write(
        &config,
        format!(
            "region = \"eu\"\ndata_dir = \"{}\"\n[http]\nlisten = \"{net}.1:{port}\"\n\
             [dns]\nlisten = \"{net}.1:0\"\nzone = \"geoscim.test\"\nfall_after = 1\n\
             rate_limit_qps = 20\nrate_limit_burst = 30\n{}",
            tmp.path().join("data").display(),
            dns_table(&net, port, None, 60),
        ),
    )
    .unwrap();
    let region = Proc::start(config);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let dns = dns_of(&health_json(&http, &region.url).await);
    assert_eq!(region.dns, Some(dns));

    // Once us and ap are seen down, every client is answered eu (nearest healthy).
    eventually_ok(20, "us and ap probed down", || async {
        let h = health_json(&http, &region.url).await;
        let up: Vec<bool> = h["dns"]["regions"]
            .as_array()
            .map(|a| a.iter().map(|r| r["up"] == true).collect())
            .unwrap_or_default();
        (up == [true, false, false])
            .then_some(())
            .ok_or(format!("{h}"))
    })
    .await;

    // hickory-resolver, the real client: A, SOA, NS.
    let resolver =
        geoscim::replication::discovery::resolver(&[dns], Duration::from_secs(2)).unwrap();
    let a = resolver
        .lookup(name("scim.geoscim.test."), RecordType::A)
        .await
        .unwrap();
    let got: Vec<String> = a.answers().iter().map(|r| r.data.to_string()).collect();
    assert_eq!(got, [format!("{net}.1")]);
    assert_eq!(a.answers()[0].ttl, 5);
    let soa = resolver.soa_lookup("geoscim.test.").await.unwrap();
    assert_eq!(soa.answers().len(), 1);
    let ns = resolver.ns_lookup("geoscim.test.").await.unwrap();
    assert_eq!(ns.answers().len(), 3);

    // ECS: a client in ap's network still gets eu while ap is down, with the scope echoed.
    let m = ask(
        dns,
        "scim.geoscim.test.",
        RecordType::A,
        Some(("10.3.7.0", 24)),
    )
    .await;
    assert_eq!(ips(&m), [format!("{net}.1")]);
    assert!(m.metadata.authoritative);
    assert_eq!(
        ecs_of(&m),
        Some(("10.3.7.0".parse().unwrap(), 24, 16)),
        "ECS echoed with the routing scope"
    );
    // Tenant name: home us is down, so the client's own routing (eu).
    let m = ask(dns, "acme.geoscim.test.", RecordType::A, None).await;
    assert_eq!(ips(&m), [format!("{net}.1")]);

    // NXDOMAIN with the SOA; REFUSED outside the zone (never an open resolver).
    let m = ask(dns, "nope.geoscim.test.", RecordType::A, None).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
    for q in ["example.com.", "com.", "geoscim.test.example.org."] {
        let m = ask(dns, q, RecordType::A, None).await;
        assert_eq!(m.metadata.response_code, ResponseCode::Refused, "{q}");
        assert!(m.answers.is_empty());
    }

    // A large answer: truncated over UDP without EDNS (512 bytes), complete over TCP.
    let mut plain = Message::new(7, MessageType::Query, OpCode::Query);
    plain.add_query(Query::query(name("scim.geoscim.test."), RecordType::AAAA));
    let bytes = plain.to_vec().unwrap();
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    udp.send_to(&bytes, dns).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), udp.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(n <= 512, "{n} bytes over UDP without EDNS");
    let truncated = Message::from_vec(&buf[..n]).unwrap();
    assert!(truncated.metadata.truncation, "TC must be set");
    let full = client::query_tcp(dns, &bytes).await.unwrap();
    assert!(!full.metadata.truncation);
    assert_eq!(full.answers.len(), 61);
    // client::query falls back to TCP by itself.
    let m = ask(dns, "scim.geoscim.test.", RecordType::AAAA, None).await;
    assert_eq!(m.answers.len(), 61);

    // Garbage, a truncated header, a question-less query with a bad count, a response: none
    // disturbs the next query; the undecodable query with a header gets FORMERR.
    for junk in [
        vec![0xffu8; 3],
        vec![0u8; 11],
        vec![0x12, 0x34, 0x01, 0x00, 0x00, 0x05, 0, 0, 0, 0, 0, 0, 0xc0],
        (0..300u32).map(|i| (i * 7919 % 251) as u8).collect(),
    ] {
        udp.send_to(&junk, dns).await.unwrap();
    }
    let formerr = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            let (n, _) = udp.recv_from(&mut buf).await.unwrap();
            if let Ok(m) = Message::from_vec(&buf[..n]) {
                if m.metadata.id == 0x1234 {
                    return m;
                }
            }
        }
    })
    .await
    .expect("a FORMERR for the undecodable query");
    assert_eq!(formerr.metadata.response_code, ResponseCode::FormErr);
    let m = ask(dns, "scim.geoscim.test.", RecordType::A, None).await;
    assert_eq!(ips(&m), [format!("{net}.1")]);

    // Rate limit per source: a flood from one address gets about its burst, and another
    // source is answered meanwhile.
    let flood = tokio::net::UdpSocket::bind(format!("{net}.77:0"))
        .await
        .unwrap();
    let q = client::query_message(9, &name("scim.geoscim.test."), RecordType::A, None)
        .to_vec()
        .unwrap();
    let started = Instant::now();
    for _ in 0..200 {
        flood.send_to(&q, dns).await.unwrap();
    }
    let mut answered = 0u32;
    while tokio::time::timeout(Duration::from_millis(300), flood.recv_from(&mut buf))
        .await
        .is_ok()
    {
        answered += 1;
    }
    let allowed = 30.0 + 20.0 * started.elapsed().as_secs_f64();
    assert!(
        answered >= 20 && f64::from(answered) <= allowed + 1.0,
        "{answered} of 200 answered (allowed about {allowed:.0})"
    );
    let m = ask(dns, "scim.geoscim.test.", RecordType::A, None).await;
    assert_eq!(ips(&m), [format!("{net}.1")]);

    // The view in /metrics.
    let text = metrics_text(&http, &region.url).await;
    for series in [
        "geoscim_dns_region_healthy{region=\"eu\"} 1",
        "geoscim_dns_region_healthy{region=\"us\"} 0",
        "geoscim_dns_answers_total{region=\"eu\",qtype=\"A\"}",
        "geoscim_dns_responses_total{rcode=\"REFUSED\"}",
        "geoscim_dns_rate_limited_total",
        "geoscim_dns_truncated_total 2",
        "geoscim_dns_health_flips_total{region=\"us\"} 1",
        "geoscim_dns_probe_duration_seconds_bucket",
    ] {
        assert!(text.contains(series), "{series} missing in:\n{text}");
    }
    assert!(text.ends_with("# EOF\n"));

    // idp-sim posing as an IdP in ap's network (ECS): answered eu while ap is down, and every
    // acknowledged write reads back.
    let out = Command::new(env!("CARGO_BIN_EXE_geoscim"))
        .args([
            "idp-sim",
            "--ecs",
            "10.3.0.0/24",
            "--dns",
            &dns.to_string(),
            "--port",
        ])
        .arg(port.to_string())
        .args([
            "--token",
            TOKEN,
            "--regions",
            &region.url,
            "--users",
            "6",
            "--groups",
            "1",
        ])
        .args(["--duration", "30", "--settle-secs", "10", "--json"])
        .stdin(Stdio::null())
        .output()
        .expect("run idp-sim");
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert!(out.status.success(), "{report}");
    assert_eq!(
        report["addresses"].as_object().unwrap().len(),
        1,
        "{report}"
    );
    assert!(
        report["addresses"][format!("{net}.1")].as_u64().unwrap() > 20,
        "{report}"
    );
    assert_eq!(report["acknowledged_missing"], 0);
}

/// Three regions in `sync` mode with their responders; idp-sim (the real binary) follows DNS
/// and the region it uses is killed with -9 while it provisions, then restarted. Nothing it
/// got a 2xx for may be missing or wrong anywhere, no acknowledged deactivation may read
/// active, and the outage must show in its report.
#[tokio::test]
async fn idp_sim_loses_nothing_acknowledged_across_a_kill_of_its_region() {
    let net = loopback_net();
    let port = free_port(&format!("{net}.1"));
    let (quic, dns_port) = (
        free_port(&format!("{net}.1")),
        free_port(&format!("{net}.1")),
    );
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("certs");
    crate::harness::certs(&certs, &["eu", "us", "ap"]);
    let names = ["eu", "us", "ap"];
    let mut regions = Vec::new();
    for (i, r) in names.iter().enumerate() {
        let n = i + 1;
        let mut text = format!(
            "region = \"{r}\"\ndata_dir = \"{}\"\n[http]\nlisten = \"{net}.{n}:{port}\"\n\
             [replication]\nlisten = \"{net}.{n}:{quic}\"\ncerts_dir = \"{}\"\nmode = \"sync\"\n",
            tmp.path().join(r).display(),
            certs.display()
        );
        for (j, p) in names.iter().enumerate().filter(|(j, _)| *j != i) {
            text += &format!(
                "[[replication.peers]]\nregion = \"{p}\"\naddr = \"{net}.{}:{quic}\"\n",
                j + 1
            );
        }
        text += &format!(
            "[dns]\nlisten = \"{net}.{n}:{dns_port}\"\nzone = \"geoscim.test\"\n{}",
            dns_table(&net, port, Some(quic), 0)
        );
        let config = tmp.path().join(format!("{r}.toml"));
        std::fs::write(&config, text).unwrap();
        regions.push(Proc::start(config));
    }
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for r in &regions {
        eventually(30, "every peer connected", || async {
            let h = health_json(&http, &r.url).await;
            let peers = h["replication"]["peers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            (peers.len() == 2 && peers.iter().all(|p| p["connected"] == true)).then_some(())
        })
        .await;
    }
    // Every region has the same table (only dns.listen differs).
    let mut digests = Vec::new();
    for r in &regions {
        digests.push(health_json(&http, &r.url).await["dns"]["table_digest"].clone());
    }
    assert!(digests[0].is_string(), "{digests:?}");
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "{digests:?}");
    // A client on 127.0.0.1 is in no network: the table's order, so eu first.
    let servers: Vec<String> = (1..=3).map(|n| format!("{net}.{n}:{dns_port}")).collect();
    let first = ask(
        servers[1].parse().unwrap(),
        "scim.geoscim.test.",
        RecordType::A,
        None,
    )
    .await;
    assert_eq!(ips(&first), [format!("{net}.1")]);

    let urls: Vec<String> = regions.iter().map(|r| r.url.clone()).collect();
    let sim = Command::new(env!("CARGO_BIN_EXE_geoscim"))
        .args([
            "idp-sim",
            "--name",
            "scim.geoscim.test",
            "--dns",
            &servers.join(","),
            "--port",
            &port.to_string(),
            "--token",
            TOKEN,
            "--regions",
            &urls.join(","),
            "--users",
            "90",
            "--concurrency",
            "3",
            "--pace-ms",
            "40",
            "--duration",
            "60",
            "--settle-secs",
            "60",
            "--json",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn idp-sim");

    // Kill eu once idp-sim has provisioned through it for a while.
    let posts = |text: &str| -> u64 {
        text.lines()
            .filter(|l| {
                l.starts_with("geoscim_http_requests_total")
                    && l.contains("method=\"POST\"")
                    && l.contains("status=\"201\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    let eu_url = regions[0].url.clone();
    eventually(60, "idp-sim writing through eu", || async {
        let text = http
            .get(format!("{eu_url}/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        (posts(&text) >= 15).then_some(())
    })
    .await;
    regions[0].kill9();
    let killed = Instant::now();
    // Its traffic moves to us (the nearest healthy region from eu's place is us).
    let us_url = regions[1].url.clone();
    eventually(30, "idp-sim writing through us", || async {
        let text = http
            .get(format!("{us_url}/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        (posts(&text) >= 3).then_some(())
    })
    .await;
    println!("idp-sim moved to us {:?} after the kill", killed.elapsed());
    regions[0].restart();

    let out = tokio::task::spawn_blocking(move || sim.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let report: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    println!("{report:#}");
    assert_eq!(report["acknowledged_missing"], 0, "{report}");
    assert_eq!(report["acknowledged_wrong"], 0, "{report}");
    assert_eq!(report["deactivated_active"], 0, "{report}");
    assert!(out.status.success(), "idp-sim failed: {report}");
    assert!(
        report["acknowledged_writes"].as_u64().unwrap() > 100,
        "{report}"
    );
    assert_eq!(report["regions_checked"].as_array().unwrap().len(), 3);
    assert!(report["failovers"].as_u64().unwrap() >= 1, "{report}");
    assert!(
        report["errors"]["connect"].as_u64().unwrap_or(0) >= 1,
        "{report}"
    );
    assert!(report["longest_gap_ms"].as_u64().unwrap() > 0, "{report}");
}

/// Two regions with no static peers: each finds the other in the SRV records its own
/// responder serves (`replication.peers_srv`), they connect, and a write replicates.
#[tokio::test]
async fn replication_peers_are_found_by_srv_records() {
    let net = loopback_net();
    let port = free_port(&format!("{net}.1"));
    let (quic, dns_port) = (
        free_port(&format!("{net}.1")),
        free_port(&format!("{net}.1")),
    );
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("certs");
    crate::harness::certs(&certs, &["eu", "us", "ap"]);
    let mut regions = Vec::new();
    for (i, r) in ["eu", "us"].iter().enumerate() {
        let n = i + 1;
        let text = format!(
            "region = \"{r}\"\ndata_dir = \"{}\"\n[http]\nlisten = \"{net}.{n}:{port}\"\n\
             [replication]\nlisten = \"{net}.{n}:{quic}\"\ncerts_dir = \"{}\"\n\
             peers_srv = \"_geoscim._udp.geoscim.test\"\n\
             peers_srv_servers = [\"{net}.{n}:{dns_port}\"]\npeers_srv_refresh_ms = 500\n\
             [dns]\nlisten = \"{net}.{n}:{dns_port}\"\nzone = \"geoscim.test\"\n{}",
            tmp.path().join(r).display(),
            certs.display(),
            dns_table(&net, port, Some(quic), 0)
        );
        let config = tmp.path().join(format!("{r}.toml"));
        std::fs::write(&config, text).unwrap();
        regions.push(Proc::start(config));
    }
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    for (r, peer) in [(&regions[0], "us"), (&regions[1], "eu")] {
        eventually(30, "the peer found by SRV connected", || async {
            let h = health_json(&http, &r.url).await;
            h["replication"]["peers"]
                .as_array()?
                .iter()
                .any(|p| p["peer"] == peer && p["connected"] == true)
                .then_some(())
        })
        .await;
    }
    let body = serde_json::json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                                  "userName": "srv@example.com"});
    let created = http
        .post(format!("{}/scim/v2/Users", regions[0].url))
        .bearer_auth(TOKEN)
        .header("content-type", "application/scim+json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let us = regions[1].url.clone();
    eventually(30, "the user replicated to us", || async {
        let r = http
            .get(format!("{us}/scim/v2/Users/{id}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .ok()?;
        r.status().is_success().then_some(())
    })
    .await;
}
