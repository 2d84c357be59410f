//! Regions in this test process, through the library (`geoscim::server`), not the binary:
//! every socket is bound on 127.0.0.1:0 first, so each region's config can name the others'
//! real addresses (replication peers, DNS health URLs) before any of them starts. Replication
//! is real QUIC with mutual TLS under one cluster CA; DNS is the real responder.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use geoscim::config::Config;
use geoscim::replication::certs;
use geoscim::server::{self, DnsSockets, Listeners, ServerError};
use hickory_proto::rr::{Name, RecordType};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use crate::harness::{eventually, eventually_ok, SCIM_JSON};

const TOKEN: &str = "in-process-test-token";

/// What was bound for one region, before its config exists.
struct Bound {
    name: &'static str,
    /// The address DNS answers for it (documentation range: only compared, never dialled).
    answer: IpAddr,
    http: SocketAddr,
    quic: SocketAddr,
    dns: SocketAddr,
    listeners: Listeners,
}

async fn bind_on_port_0(name: &'static str, answer: &str) -> Bound {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let http = tokio::net::TcpListener::bind(any).await.unwrap();
    let quic = std::net::UdpSocket::bind(any).unwrap();
    let dns = DnsSockets::bind(any).await.unwrap();
    Bound {
        name,
        answer: answer.parse().unwrap(),
        http: http.local_addr().unwrap(),
        quic: quic.local_addr().unwrap(),
        dns: dns.udp.local_addr().unwrap(),
        listeners: Listeners {
            http,
            quic: Some(quic),
            dns: Some(dns),
        },
    }
}

/// Region `me`'s file: the bound addresses as its listen keys, every other region as a
/// replication peer, and the same DNS table (each region serving 10.N.0.0/16) in every file.
fn config_text(me: usize, all: &[Bound], dir: &Path) -> String {
    let b = &all[me];
    let mut t = format!(
        "region = \"{}\"\ndata_dir = \"{}\"\n\
         [[tokens]]\ntenant = \"t1\"\nsha256 = \"{}\"\n\
         [http]\nlisten = \"{}\"\n\
         [replication]\nlisten = \"{}\"\ncerts_dir = \"{}\"\n",
        b.name,
        dir.join(b.name).display(),
        hex::encode(Sha256::digest(TOKEN.as_bytes())),
        b.http,
        b.quic,
        dir.join("certs").display(),
    );
    for peer in all.iter().filter(|p| p.name != b.name) {
        t += &format!(
            "[[replication.peers]]\nregion = \"{}\"\naddr = \"{}\"\n",
            peer.name, peer.quic
        );
    }
    t += &format!("[dns]\nlisten = \"{}\"\nzone = \"geoscim.test\"\n", b.dns);
    for (n, r) in all.iter().enumerate() {
        t += &format!(
            "[[dns.regions]]\nname = \"{}\"\naddrs = [\"{}\"]\nlat = {}\nlon = 0.0\n\
             serves = [\"10.{}.0.0/16\"]\nhealth_url = \"http://{}/health\"\n",
            r.name,
            r.answer,
            10 * n,
            n + 1,
            r.http
        );
    }
    t
}

async fn get(client: &reqwest::Client, url: &str) -> (StatusCode, Value) {
    match client.get(url).bearer_auth(TOKEN).send().await {
        Ok(r) => {
            let status = r.status();
            (status, r.json().await.unwrap_or(Value::Null))
        }
        Err(e) => panic!("GET {url}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_regions_in_one_process_on_port_0_replicate_over_quic_and_stop() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = certs::generate_ca().unwrap();
    certs::write_ca(&tmp.path().join("certs"), &ca, false).unwrap();
    let mut bound = Vec::new();
    for (name, answer) in [
        ("ap", "192.0.2.1"),
        ("eu", "192.0.2.2"),
        ("us", "192.0.2.3"),
    ] {
        let identity = ca.issue(name).unwrap();
        certs::write_identity(&tmp.path().join("certs"), &identity, false).unwrap();
        bound.push(bind_on_port_0(name, answer).await);
    }
    let texts: Vec<String> = (0..bound.len())
        .map(|i| config_text(i, &bound, tmp.path()))
        .collect();

    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut urls = Vec::new();
    let mut serving = Vec::new();
    for (i, (b, text)) in bound.into_iter().zip(&texts).enumerate() {
        let file = tmp.path().join(format!("{}.toml", b.name));
        std::fs::write(&file, text).unwrap();
        // No environment overrides: this process's GEOSCIM_* variables are not this region's.
        let config = Config::load(&file, Vec::new()).unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        // The first region in two steps (what `geoscim serve` does, to print the addresses),
        // the others in one: `run`.
        let task = if i == 0 {
            let running = server::start(config, b.listeners).await.unwrap();
            assert_eq!(running.addrs.http, b.http);
            assert_eq!(running.addrs.quic, Some(b.quic));
            assert_eq!(running.addrs.dns, Some(b.dns));
            assert!(running.new_token.is_none(), "a token is configured");
            assert_eq!(running.url(), format!("http://{}", b.http));
            tokio::spawn(running.serve(shutdown))
        } else {
            tokio::spawn(server::run(config, b.listeners, shutdown))
        };
        urls.push(format!("http://{}", b.http));
        serving.push((b.name, b.dns, b.answer, stop, task));
    }

    // Every region reaches both others over QUIC (mutual TLS under the one CA).
    for url in &urls {
        eventually_ok(30, "every peer connected", || async {
            let h = crate::harness::health_json(&client, url).await;
            let peers = h["replication"]["peers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let connected = peers
                .iter()
                .filter(|p| p["connected"] == json!(true))
                .count();
            (connected == 2)
                .then_some(())
                .ok_or(format!("{url}: {peers:?}"))
        })
        .await;
    }

    // A user created in ap is read by id in eu and us, with the same version.
    let created: Value = {
        let r = client
            .post(format!("{}/scim/v2/Users", urls[0]))
            .bearer_auth(TOKEN)
            .header("content-type", SCIM_JSON)
            .body(
                json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                       "userName": "in-process@example.com"})
                .to_string(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json().await.unwrap()
    };
    let id = created["id"].as_str().unwrap();
    for url in &urls[1..] {
        let seen = eventually(30, "the user read by id in another region", || async {
            let (s, v) = get(&client, &format!("{url}/scim/v2/Users/{id}")).await;
            (s == StatusCode::OK).then_some(v)
        })
        .await;
        assert_eq!(seen["userName"], created["userName"], "{url}");
        assert_eq!(seen["meta"]["version"], created["meta"]["version"], "{url}");
        // Held by the region itself (ap's log entry applied), not only fetched from ap by a
        // lookup before a 404.
        eventually_ok(30, "ap's entry applied", || async {
            let h = crate::harness::health_json(&client, url).await;
            let hwm = &h["replication"]["hwm"]["ap"];
            (hwm.as_u64() >= Some(1))
                .then_some(())
                .ok_or(format!("{url}: {hwm}"))
        })
        .await;
    }

    // Each responder serves on its given sockets: a client in 10.2/16 (eu's network) is sent
    // to eu first, by every region alike.
    let service = Name::from_ascii("scim.geoscim.test.").unwrap();
    let eu_answer = serving[1].2;
    for (name, dns, ..) in &serving {
        let m = geoscim::dns::client::query(
            *dns,
            &service,
            RecordType::A,
            Some(("10.2.0.0".parse().unwrap(), 24)),
            Duration::from_secs(2),
        )
        .await
        .unwrap_or_else(|e| panic!("{name}'s responder at {dns}: {e}"));
        let (addrs, _) = geoscim::dns::client::addresses(&m);
        assert_eq!(addrs.first(), Some(&eu_answer), "{name}: {m:?}");
    }

    // Shutdown: each future resolves, and each region's `serve` / `run` returns Ok.
    for (name, _, _, stop, task) in serving {
        stop.send(()).unwrap();
        let done = tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .unwrap_or_else(|_| panic!("{name} did not stop within 30 s"));
        done.unwrap().unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    for url in &urls {
        assert!(client.get(format!("{url}/health")).send().await.is_err());
    }
}

#[tokio::test]
async fn listeners_name_the_key_and_address_they_cannot_bind_and_must_match_the_config() {
    let tmp = tempfile::tempdir().unwrap();
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let text = format!(
        "region = \"eu\"\ndata_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
         [replication]\nlisten = \"{addr}\"\ncerts_dir = \"{}\"\nwrite_quorum = 1\n",
        tmp.path().join("data").display(),
        tmp.path().join("certs").display()
    );
    let config = Config::from_toml(&text, "eu.toml", Vec::new()).unwrap();
    let err = Listeners::bind(&config)
        .await
        .err()
        .expect("the port is taken");
    assert!(matches!(
        err,
        ServerError::Bind {
            key: "replication.listen",
            ..
        }
    ));
    assert!(
        err.to_string()
            .starts_with(&format!("cannot bind replication.listen {addr}: ")),
        "{err}"
    );

    // [replication] without its socket is refused before anything opens.
    let listeners = Listeners {
        http: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        quic: None,
        dns: None,
    };
    let err = server::start(config, listeners)
        .await
        .err()
        .expect("no socket");
    assert!(matches!(err, ServerError::Listeners(_)), "{err}");
    assert!(err.to_string().contains("[replication]"), "{err}");
    assert!(
        !tmp.path().join("data").exists(),
        "the store was not opened"
    );
}
