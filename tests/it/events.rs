//! SCIM events (RFC 9967 SETs) against real regions: a receiver in the test polls one region's
//! feed (RFC 8936) while writes happen at both regions, across a real partition (network
//! namespaces, as in `partition`) and a kill -9 and restart of the polled region, and checks
//! that every offboarding arrives exactly once, signed by the region's key; a second test has
//! a region push to a receiver here (RFC 8935) that refuses at first.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::harness::{eventually, health_json, metrics_text};
use crate::partition::{is_root, run, spawn_in, unavailable, Bridged};

const TOKEN: &str = "events-test-token";
const ISSUER: &str = "https://scim.events.test";
const DEACTIVATE: &str = "urn:ietf:params:scim:event:prov:deactivate";
const DELETE: &str = "urn:ietf:params:scim:event:prov:delete";
const CREATE: &str = "urn:ietf:params:scim:event:prov:create:notice";

fn wan_ip(i: usize) -> String {
    format!("10.219.0.{}", i + 1)
}

/// A signing key from `geoscim signing-key create`: (kid, file, x).
fn signing_key(dir: &Path, kid: &str) -> (String, String, String) {
    let file = dir.join(format!("{kid}.jwt.key"));
    let out = run(
        env!("CARGO_BIN_EXE_geoscim"),
        &[
            "signing-key",
            "create",
            "--kid",
            kid,
            "--out",
            file.to_str().unwrap(),
        ],
    )
    .unwrap();
    let x = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("x = \""))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or_else(|| panic!("no x in {out}"))
        .to_string();
    (kid.to_string(), file.display().to_string(), x)
}

/// `[oauth]` signing with `own` and trusting `keys`, and tenant t1's feed.
fn events_toml(
    own: &(String, String, String),
    keys: &[(String, String, String)],
    feed: &str,
) -> String {
    let mut t = format!(
        "[oauth]\nissuer = \"{ISSUER}\"\nsigning_key = {{kid = \"{}\", file = \"{}\"}}\n",
        own.0, own.1
    );
    for (kid, _, x) in keys {
        t += &format!("[[oauth.keys]]\nkid = \"{kid}\"\nx = \"{x}\"\n");
    }
    t + &format!("[tenants.t1.events]\naudience = \"https://rx.test\"\n{feed}\n")
}

/// The claims of a SET, after checking its header and its EdDSA signature against `keys`.
fn verified(set: &str, keys: &[(String, String, String)]) -> Value {
    use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
    let header = decode_header(set).unwrap();
    assert_eq!(header.typ.as_deref(), Some("secevent+jwt"));
    assert_eq!(header.alg, Algorithm::EdDSA);
    let kid = header.kid.unwrap();
    let (_, _, x) = keys.iter().find(|k| k.0 == kid).expect("a known kid");
    let key = DecodingKey::from_ed_components(x).unwrap();
    let mut v = Validation::new(Algorithm::EdDSA);
    v.set_audience(&["https://rx.test"]);
    v.set_issuer(&[ISSUER]);
    v.set_required_spec_claims(&["iss", "aud"]);
    v.validate_exp = false;
    decode::<Value>(set, &key, &v).unwrap().claims
}

/// A receiver that polls one region and acknowledges what it got in its next poll.
struct Receiver {
    client: reqwest::Client,
    keys: Vec<(String, String, String)>,
    /// Every SET received, by jti: how many times, and its claims.
    got: BTreeMap<String, (usize, Value)>,
    unacked: Vec<String>,
}

impl Receiver {
    /// Poll until the feed has nothing more (everything received is acknowledged).
    async fn drain(&mut self, url: &str) -> Result<(), String> {
        for _ in 0..100 {
            let body = json!({"ack": self.unacked, "returnImmediately": true, "maxEvents": 3});
            let r = self
                .client
                .post(format!("{url}/scim/v2/Events"))
                .bearer_auth(TOKEN)
                .json(&body)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if r.status() != StatusCode::OK {
                return Err(format!("poll answered {}", r.status()));
            }
            let v: Value = r.json().await.map_err(|e| e.to_string())?;
            let sets = v["sets"].as_object().cloned().unwrap_or_default();
            self.unacked = sets.keys().cloned().collect();
            for (jti, set) in &sets {
                let claims = verified(set.as_str().unwrap(), &self.keys);
                assert_eq!(&claims["jti"], jti);
                self.got.entry(jti.clone()).or_insert((0, claims)).0 += 1;
            }
            if sets.is_empty() {
                return Ok(());
            }
        }
        Err("the feed never ran dry".into())
    }

    /// Drain the feed again and again until `done` holds, for at most `secs` seconds.
    async fn drain_until(
        &mut self,
        url: &str,
        secs: u64,
        what: &str,
        done: impl Fn(&Receiver) -> bool,
    ) {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let result = self.drain(url).await;
            if result.is_ok() && done(self) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: not within {secs} s (last poll: {result:?}; got {:?})",
                self.got.keys()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The jtis of SETs about `uri` carrying event `event`.
    fn about(&self, uri: &str, event: &str) -> Vec<(String, usize)> {
        self.got
            .iter()
            .filter(|(_, (_, c))| c["sub_id"]["uri"] == uri && c["events"].get(event).is_some())
            .map(|(j, (n, _))| (j.clone(), *n))
            .collect()
    }
}

async fn write(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut r = client.request(method, url).bearer_auth(TOKEN);
    if let Some(b) = body {
        r = r
            .header("content-type", "application/scim+json")
            .body(b.to_string());
    }
    let r = r.send().await.unwrap();
    let s = r.status();
    (s, r.json().await.unwrap_or(Value::Null))
}

fn deactivation() -> Value {
    json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
           "Operations": [{"op": "replace", "path": "active", "value": false}]})
}

#[tokio::test]
async fn offboardings_arrive_exactly_once_at_a_polling_receiver_across_a_partition_and_a_restart() {
    if !is_root() {
        return unavailable("not running as root");
    }
    let names = ["ea", "eb"];
    let Some(mut wan) = Bridged::start(&names, 219, wan_ip) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("certs");
    crate::harness::certs(&certs, &["ea", "eb"]);
    let keys: Vec<_> = names.iter().map(|n| signing_key(tmp.path(), n)).collect();
    let mut configs = Vec::new();
    for (i, r) in names.iter().enumerate() {
        let peer = 1 - i;
        // Offboardings answer after the local commit here, so the writes made during the
        // partition are acknowledged ones.
        let text = format!(
            "region = \"{r}\"\ndata_dir = \"{}\"\n[http]\nlisten = \"{}:0\"\n\
             [replication]\nlisten = \"{}:7100\"\ncerts_dir = \"{}\"\noffboarding_quorum = false\n\
             [[replication.peers]]\nregion = \"{}\"\naddr = \"{}:7100\"\n{}",
            tmp.path().join(r).display(),
            wan.mgmt[i],
            wan_ip(i),
            certs.display(),
            names[peer],
            wan_ip(peer),
            events_toml(&keys[i], &keys, "delivery = \"poll\""),
        );
        let config = tmp.path().join(format!("{r}.toml"));
        std::fs::write(&config, text).unwrap();
        configs.push(config);
    }
    let mut urls = Vec::new();
    for (i, config) in configs.iter().enumerate() {
        let (child, url) = spawn_in(&wan.links[i].0, config, TOKEN, &[]);
        wan.net.children.push(child);
        urls.push(url);
    }
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let connected = |url: String| {
        let client = client.clone();
        async move {
            let h = health_json(&client, &url).await;
            (h["replication"]["peers"][0]["connected"] == json!(true)).then_some(())
        }
    };
    for url in &urls {
        eventually(60, "the regions connect", || connected(url.clone())).await;
    }
    let (ea, eb) = (urls[0].clone(), urls[1].clone());
    let user = |name: &str| {
        json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
               "userName": format!("{name}@example.com"), "active": true})
    };
    let mut ids = BTreeMap::new();
    for (name, at) in [("u1", &ea), ("u2", &ea), ("u3", &eb), ("u4", &eb)] {
        let (s, v) = write(
            &client,
            reqwest::Method::POST,
            format!("{at}/scim/v2/Users"),
            Some(user(name)),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        ids.insert(name, v["id"].as_str().unwrap().to_string());
    }
    let uri = |name: &str| format!("/Users/{}", ids[name]);
    let mut rx = Receiver {
        client: client.clone(),
        keys: keys.clone(),
        got: BTreeMap::new(),
        unacked: Vec::new(),
    };
    // ea's feed holds the creates made at eb too, once they are merged.
    rx.drain_until(&ea, 60, "four creates at ea's feed", |rx| rx.got.len() == 4)
        .await;
    for name in ["u1", "u2", "u3", "u4"] {
        assert_eq!(
            rx.about(&uri(name), CREATE).len(),
            1,
            "{name}: {:?}",
            rx.got
        );
    }

    // Partition: eb offboards u1 and deletes u4; ea offboards u2. All acknowledged.
    wan.set_link(1, false);
    let patch = |at: &str, name: &str| format!("{at}/scim/v2/Users/{}", ids[name]);
    let (s, v) = write(
        &client,
        reqwest::Method::PATCH,
        patch(&eb, "u1"),
        Some(deactivation()),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _) = write(&client, reqwest::Method::DELETE, patch(&eb, "u4"), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = write(
        &client,
        reqwest::Method::PATCH,
        patch(&ea, "u2"),
        Some(deactivation()),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // ea dies with its offboarding not yet polled; the feed must still have it after restart.
    wan.net.children[0].kill().unwrap();
    wan.net.children[0].wait().unwrap();
    let (child, ea) = spawn_in(&wan.links[0].0, &configs[0], TOKEN, &[]);
    wan.net.children.push(child);
    rx.drain(&ea).await.unwrap();
    assert_eq!(rx.about(&uri("u2"), DEACTIVATE).len(), 1, "{:?}", rx.got);
    assert!(rx.about(&uri("u1"), DEACTIVATE).is_empty(), "eb is cut off");

    // Heal: eb's offboardings are merged at ea and arrive there.
    wan.set_link(1, true);
    let (u1, u4) = (uri("u1"), uri("u4"));
    rx.drain_until(&ea, 90, "eb's offboardings at ea's feed", |rx| {
        !rx.about(&u1, DEACTIVATE).is_empty() && !rx.about(&u4, DELETE).is_empty()
    })
    .await;
    rx.drain(&ea).await.unwrap();
    // Exactly once each, from the region that took the write, and nothing ever twice.
    for (name, event, origin) in [
        ("u1", DEACTIVATE, "eb"),
        ("u4", DELETE, "eb"),
        ("u2", DEACTIVATE, "ea"),
    ] {
        let sets = rx.about(&uri(name), event);
        assert_eq!(sets.len(), 1, "{name} {event}: {sets:?}");
        assert_eq!(sets[0].1, 1, "{name} {event} delivered {} times", sets[0].1);
        assert!(sets[0].0.starts_with(&format!("{origin}.")), "{sets:?}");
    }
    assert!(rx.got.values().all(|(n, _)| *n == 1), "{:?}", rx.got);
    assert_eq!(
        rx.got.len(),
        7,
        "4 creates, 2 deactivations, 1 delete: {:?}",
        rx.got.keys()
    );
}

/// A receiver of pushed SETs (RFC 8935) on loopback that answers 503 to the first `refuse`
/// pushes, then 202; it keeps what it accepted, in order.
async fn push_receiver(refuse: usize) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use axum::routing::post;
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (g, s) = (got.clone(), seen.clone());
    let app = axum::Router::new().route(
        "/events",
        post(move |headers: axum::http::HeaderMap, body: String| {
            let (g, s) = (g.clone(), s.clone());
            async move {
                assert_eq!(headers["content-type"], "application/secevent+jwt");
                assert_eq!(headers["authorization"], "Bearer rx-secret");
                if s.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < refuse {
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                g.lock().unwrap().push(body);
                StatusCode::ACCEPTED
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_region_pushes_every_event_once_in_order_through_refusals_and_a_restart() {
    use crate::harness::Region;
    let (url, got) = push_receiver(3).await;
    let tmp = tempfile::tempdir().unwrap();
    let key = signing_key(tmp.path(), "pa");
    let auth = tmp.path().join("rx.auth");
    std::fs::write(&auth, "Bearer rx-secret\n").unwrap();
    let config = tmp.path().join("pa.toml");
    let text = format!(
        "region = \"pa\"\ndata_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
         [events]\npush_backoff_ms = 50\npush_backoff_max_ms = 400\n{}",
        tmp.path().join("pa").display(),
        events_toml(
            &key,
            std::slice::from_ref(&key),
            &format!(
                "delivery = \"push\"\npush_url = \"{url}\"\npush_authorization_file = \"{}\"",
                auth.display()
            )
        ),
    );
    std::fs::write(&config, text).unwrap();
    let tokens = vec![("t1".to_string(), TOKEN.to_string())];
    let mut region = Region::start_config(config.clone(), tmp.path().join("pa"), tokens.clone());
    region.wait_healthy().await;
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for i in 0..3 {
        let body = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                          "userName": format!("p{i}@example.com")});
        let (s, v) = write(
            &client,
            reqwest::Method::POST,
            format!("{}/scim/v2/Users", region.url),
            Some(body),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    let target = format!("{}/scim/v2/Users/{}", region.url, ids[0]);
    let (s, _) = write(
        &client,
        reqwest::Method::PATCH,
        target,
        Some(deactivation()),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    // Killed while the receiver still refuses (or just after): nothing may be lost.
    region.kill9();
    let region = region.restart();
    region.wait_healthy().await;
    let (s, _) = write(
        &client,
        reqwest::Method::DELETE,
        format!("{}/scim/v2/Users/{}", region.url, ids[1]),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let keys = vec![key];
    let jtis = eventually(60, "five SETs pushed", || {
        let got = got.clone();
        let keys = keys.clone();
        async move {
            let sets = got.lock().unwrap().clone();
            let jtis: Vec<String> = sets
                .iter()
                .map(|s| verified(s, &keys)["jti"].as_str().unwrap().to_string())
                .collect();
            (jtis.len() >= 5).then_some(jtis)
        }
    })
    .await;
    assert_eq!(
        jtis,
        ["pa.1", "pa.2", "pa.3", "pa.4", "pa.5"],
        "in order, each once"
    );
    let h = metrics_text(&client, &region.url).await;
    assert!(
        h.contains("geoscim_events_push_failures_total{tenant=\"t1\"} "),
        "{h}"
    );
}
