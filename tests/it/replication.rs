//! Regions replicate over QUIC: real `geoscim serve` processes on loopback with mutual TLS.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::harness::Region;

/// A cluster of regions described by config files in a temp dir.
struct Cluster {
    tmp: tempfile::TempDir,
    names: Vec<String>,
    token: (String, String),
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn certs(dir: &Path, regions: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_geoscim"))
        .args(["certs", "--out"])
        .arg(dir)
        .args(["--regions", &regions.join(",")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Cluster {
    /// Config files for `names`, all peers of each other, certificates from one CA.
    fn new(names: &[&str]) -> Cluster {
        Cluster::with(names, "")
    }

    /// Like [`Cluster::new`], with extra `[replication]` keys (TOML lines).
    fn with(names: &[&str], replication_keys: &str) -> Cluster {
        let tmp = tempfile::tempdir().unwrap();
        certs(&tmp.path().join("certs"), names);
        let ports: Vec<u16> = names.iter().map(|_| free_udp_port()).collect();
        for (i, name) in names.iter().enumerate() {
            let mut text = format!(
                "region = \"{name}\"\ndata_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
                 [replication]\nlisten = \"127.0.0.1:{}\"\ncerts_dir = \"{}\"\n{replication_keys}\n",
                tmp.path().join(name).display(),
                ports[i],
                tmp.path().join("certs").display()
            );
            for (j, peer) in names.iter().enumerate() {
                if i != j {
                    text += &format!(
                        "[[replication.peers]]\nregion = \"{peer}\"\naddr = \"127.0.0.1:{}\"\n",
                        ports[j]
                    );
                }
            }
            std::fs::write(tmp.path().join(format!("{name}.toml")), text).unwrap();
        }
        Cluster {
            tmp,
            names: names.iter().map(|s| s.to_string()).collect(),
            token: ("t1".into(), "cluster-test-token".into()),
        }
    }

    fn config(&self, name: &str) -> PathBuf {
        self.tmp.path().join(format!("{name}.toml"))
    }

    fn start(&self, name: &str) -> Region {
        let r = Region::start_config(
            self.config(name),
            self.tmp.path().join(name),
            vec![self.token.clone()],
        );
        r
    }

    fn start_all(&self) -> Vec<Region> {
        self.names.iter().map(|n| self.start(n)).collect()
    }
}

/// Poll `f` until it returns `Some`, for at most `secs` seconds.
async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn user_named(r: &Region, name: &str) -> Option<Value> {
    let (s, v) = r
        .req(
            Method::GET,
            &format!("/Users?filter=userName%20eq%20%22{name}%22"),
            None,
        )
        .await;
    (s == StatusCode::OK && v["totalResults"] == json!(1)).then(|| v["Resources"][0].clone())
}

#[tokio::test]
async fn a_write_in_one_region_is_read_in_the_others_with_the_same_version() {
    let cluster = Cluster::new(&["ra", "rb", "rc"]);
    let regions = cluster.start_all();
    let created = regions[0].create_user("everywhere@example.com").await;
    for r in &regions[1..] {
        let seen = eventually(20, "replication", || {
            user_named(r, "everywhere@example.com")
        })
        .await;
        assert_eq!(seen["id"], created["id"]);
        assert_eq!(seen["meta"]["version"], created["meta"]["version"]);
    }
    // A change in another region comes back, and every region serves identical JSON.
    let id = created["id"].as_str().unwrap();
    let (s, _) = regions[2]
        .req(
            Method::PATCH,
            &format!("/Users/{id}"),
            Some(json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "replace", "path": "active", "value": false}]
            })),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let mut views = Vec::new();
    for r in &regions {
        let v = eventually(20, "deactivation everywhere", || async {
            let (_, v) = r.req(Method::GET, &format!("/Users/{id}"), None).await;
            (v["active"] == json!(false)).then_some(v)
        })
        .await;
        let mut v = v;
        v["meta"].as_object_mut().unwrap().remove("location");
        views.push(v);
    }
    assert!(views.windows(2).all(|w| w[0] == w[1]), "{views:?}");
    // Per-peer replication state in /metrics and /health.
    let text = regions[0]
        .client
        .get(format!("{}/metrics", regions[0].url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("geoscim_replication_peer_connected{peer=\"rb\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("geoscim_replication_received_entries_total{peer="),
        "{text}"
    );
    let health: Value = regions[1]
        .client
        .get(format!("{}/health", regions[1].url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        health["replication"]["peers"].as_array().unwrap().len(),
        2,
        "{health}"
    );
}

#[tokio::test]
async fn a_killed_region_catches_up_and_a_new_empty_region_bootstraps() {
    let cluster = Cluster::new(&["ka", "kb", "kc"]);
    let a = cluster.start("ka");
    let mut b = cluster.start("kb");
    a.create_user("before@example.com").await;
    eventually(20, "first write in kb", || {
        user_named(&b, "before@example.com")
    })
    .await;
    b.kill9();
    for i in 0..20 {
        a.create_user(&format!("while-down-{i}@example.com")).await;
    }
    let b = b.restart();
    for i in 0..20 {
        let name = format!("while-down-{i}@example.com");
        eventually(30, "catch-up after restart", || user_named(&b, &name)).await;
    }
    // kc never ran: it starts empty and gets everything from its peers.
    let c = cluster.start("kc");
    eventually(30, "bootstrap of an empty region", || {
        user_named(&c, "while-down-19@example.com")
    })
    .await;
    let (_, list) = c.req(Method::GET, "/Users?count=0", None).await;
    assert_eq!(list["totalResults"], json!(21));
}

#[tokio::test]
async fn a_peer_with_a_foreign_certificate_is_refused() {
    let cluster = Cluster::new(&["fa", "fb"]);
    // Replace fb's certificate with one from another CA, in its own folder.
    let foreign = cluster.tmp.path().join("foreign");
    certs(&foreign, &["fb"]);
    let config = std::fs::read_to_string(cluster.config("fb")).unwrap();
    let config = config.replace(
        &cluster.tmp.path().join("certs").display().to_string(),
        &foreign.display().to_string(),
    );
    std::fs::write(cluster.config("fb"), config).unwrap();
    let a = cluster.start("fa");
    let b = cluster.start("fb");
    a.create_user("secret@example.com").await;
    b.create_user("intruder@example.com").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        user_named(&b, "secret@example.com").await.is_none(),
        "fa's data reached a foreign peer"
    );
    assert!(
        user_named(&a, "intruder@example.com").await.is_none(),
        "a foreign peer's data was accepted"
    );
    let health: Value = a
        .client
        .get(format!("{}/health", a.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let peers = health["replication"]["peers"].as_array().unwrap();
    assert!(
        peers.iter().all(|p| p["connected"] == json!(false)),
        "{health}"
    );
}

#[tokio::test]
async fn sync_mode_answers_503_without_a_quorum_and_keeps_the_write() {
    let cluster = Cluster::with(
        &["sa", "sb"],
        "mode = \"sync\"\nwrite_quorum = 2\nquorum_timeout_ms = 1000",
    );
    let a = cluster.start("sa");
    let mut b = cluster.start("sb");
    eventually(20, "peers connected", || async {
        let h: Value = a
            .client
            .get(format!("{}/health", a.url))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (h["replication"]["peers"][0]["connected"] == json!(true)).then_some(())
    })
    .await;
    let first = a.create_user("quorum-ok@example.com").await;
    assert!(
        user_named(&b, "quorum-ok@example.com").await.is_some(),
        "a sync 2xx must already be in the peer"
    );
    b.kill9();
    let started = Instant::now();
    let resp = a
        .send(a.token(), Method::POST, "/Users", Some(json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "no-quorum@example.com"
        })), &[])
        .await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().get("retry-after").is_some());
    assert!(started.elapsed() < Duration::from_secs(5));
    // The change stays here and replicates once the peer is back; the retry is idempotent.
    assert!(user_named(&a, "no-quorum@example.com").await.is_some());
    let b = b.restart();
    eventually(30, "the kept write reaches the peer", || {
        user_named(&b, "no-quorum@example.com")
    })
    .await;
    let (s, again) = a
        .req(Method::POST, "/Users", Some(json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "no-quorum@example.com"
        })))
        .await;
    assert_eq!(
        s,
        StatusCode::CREATED,
        "the retry of the 503'd POST: {again}"
    );
    let kept = user_named(&a, "no-quorum@example.com").await.unwrap();
    assert_eq!(again["id"], kept["id"]);
    assert_ne!(again["id"], first["id"]);
}

#[tokio::test]
async fn offboarding_waits_for_the_quorum_even_in_async_mode() {
    let cluster = Cluster::with(&["oa", "ob"], "write_quorum = 2\nquorum_timeout_ms = 1000");
    let a = cluster.start("oa");
    let mut b = cluster.start("ob");
    let user = a.create_user("leaver@example.com").await;
    let id = user["id"].as_str().unwrap().to_string();
    eventually(20, "user replicated", || {
        user_named(&b, "leaver@example.com")
    })
    .await;
    b.kill9();
    // An ordinary change answers at once in async mode...
    let (s, _) = a
        .req(
            Method::PATCH,
            &format!("/Users/{id}"),
            Some(json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "replace", "path": "displayName", "value": "Leaver"}]
            })),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    // ...a deactivation does not, without a second region to hold it.
    let (s, body) = a
        .req(
            Method::PATCH,
            &format!("/Users/{id}"),
            Some(json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "replace", "path": "active", "value": false}]
            })),
        )
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let b = b.restart();
    let seen = eventually(30, "the deactivation reaches the peer", || async {
        let u = user_named(&b, "leaver@example.com").await?;
        (u["active"] == json!(false)).then_some(u)
    })
    .await;
    assert_eq!(seen["active"], json!(false));
    let (s, _) = a
        .req(
            Method::PATCH,
            &format!("/Users/{id}"),
            Some(json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "replace", "path": "active", "value": false}]
            })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "with the peer back the retry succeeds");
}
