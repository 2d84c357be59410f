//! Regions replicate over QUIC: real `geoscim serve` processes on loopback with mutual TLS.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::harness::{
    certs, eventually, health_json, user_named_in, user_named_query, Cluster, Region,
};

/// The user named `name` as `r` holds it (see [`user_named_query`]).
async fn user_named(r: &Region, name: &str) -> Option<Value> {
    let (s, v) = r.req(Method::GET, &user_named_query(name), None).await;
    user_named_in(s, &v, name)
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
        .patch_user(id, "replace", "active", json!(false))
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
    let text = regions[0].metrics().await;
    assert!(
        text.contains("geoscim_replication_peer_connected{peer=\"rb\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("geoscim_replication_received_entries_total{peer="),
        "{text}"
    );
    let health = health_json(&regions[1].client, &regions[1].url).await;
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
    // kc never ran: it starts empty and gets everything from its peers. (A filter by userName
    // could be answered by a peer lookup alone, so count the whole list.)
    let c = cluster.start("kc");
    eventually(30, "bootstrap of an empty region", || async {
        let (_, list) = c.req(Method::GET, "/Users?count=0", None).await;
        (list["totalResults"] == json!(21)).then_some(())
    })
    .await;
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
    // Wait until each side has tried (and failed) to connect after both writes, so absence
    // below means refused, not merely not yet sent.
    let failed = |r: &Region| {
        let (client, url) = (r.client.clone(), r.url.clone());
        async move {
            health_json(&client, &url).await["replication"]["failed_connections"]
                .as_u64()
                .unwrap_or(0)
        }
    };
    let (fa0, fb0) = (failed(&a).await, failed(&b).await);
    eventually(30, "connection attempts refused on both sides", || async {
        (failed(&a).await >= fa0 + 2 && failed(&b).await >= fb0 + 2).then_some(())
    })
    .await;
    assert!(
        user_named(&b, "secret@example.com").await.is_none(),
        "fa's data reached a foreign peer"
    );
    assert!(
        user_named(&a, "intruder@example.com").await.is_none(),
        "a foreign peer's data was accepted"
    );
    let health = health_json(&a.client, &a.url).await;
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
        let h = health_json(&a.client, &a.url).await;
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
    // The change stays here and replicates once the peer is back.
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
    // The retry of the 503'd POST finds the kept user: 409, never a second user.
    assert_eq!(
        s,
        StatusCode::CONFLICT,
        "the retry of the 503'd POST: {again}"
    );
    assert_eq!(again["scimType"], json!("uniqueness"));
    let kept = user_named(&a, "no-quorum@example.com").await.unwrap();
    assert_ne!(kept["id"], first["id"]);
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
        .patch_user(&id, "replace", "displayName", json!("Leaver"))
        .await;
    assert_eq!(s, StatusCode::OK);
    // ...a deactivation does not, without a second region to hold it.
    let (s, body) = a.patch_user(&id, "replace", "active", json!(false)).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let b = b.restart();
    let seen = eventually(30, "the deactivation reaches the peer", || async {
        let u = user_named(&b, "leaver@example.com").await?;
        (u["active"] == json!(false)).then_some(u)
    })
    .await;
    assert_eq!(seen["active"], json!(false));
    let (s, _) = a.patch_user(&id, "replace", "active", json!(false)).await;
    assert_eq!(s, StatusCode::OK, "with the peer back the retry succeeds");
}

/// Write from 8 tasks to region 0 (bounded: at most 2,000 writes or 3 s), kill -9 it after
/// `kill_after`, and return the userNames that got a 2xx.
async fn write_then_kill(
    cluster: &Cluster,
    prefix: &str,
    kill_after: Duration,
) -> (Vec<String>, Vec<Region>) {
    let mut a = cluster.start(&cluster.names[0]);
    let others: Vec<Region> = cluster.names[1..]
        .iter()
        .map(|n| cluster.start(n))
        .collect();
    for r in &others {
        let probe = format!("{prefix}-probe");
        if user_named(r, &probe).await.is_none() {
            a.create_user(&probe).await;
        }
        eventually(20, "cluster connected", || user_named(r, &probe)).await;
    }
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut tasks = Vec::new();
    for t in 0..8 {
        let (client, url, token, acked, prefix) = (
            a.client.clone(),
            format!("{}/Users", a.scim()),
            a.token().to_string(),
            acked.clone(),
            prefix.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            for i in 0..250 {
                if Instant::now() > deadline {
                    break;
                }
                let name = format!("{prefix}-{t}-{i}");
                let body = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": name});
                let sent = client.post(&url).bearer_auth(&token).header("content-type", "application/scim+json")
                    .body(body.to_string()).timeout(Duration::from_secs(5)).send().await;
                match sent {
                    Ok(r) if r.status().is_success() => acked.lock().unwrap().push(name),
                    Ok(_) => {}
                    Err(_) => break, // the region is gone
                }
            }
        }));
    }
    tokio::time::sleep(kill_after).await;
    a.kill9();
    for t in tasks {
        let _ = t.await;
    }
    let acked = acked.lock().unwrap().clone();
    (acked, others)
}

#[tokio::test]
async fn sync_mode_loses_no_acknowledged_write_when_the_writing_region_dies() {
    let cluster = Cluster::with(&["pa", "pb", "pc"], "mode = \"sync\"\nwrite_quorum = 2");
    let (acked, survivors) =
        write_then_kill(&cluster, "rpo-sync", Duration::from_millis(700)).await;
    assert!(
        acked.len() > 10,
        "too few writes acknowledged before the kill: {}",
        acked.len()
    );
    // Every acknowledged write is in the survivors (they exchange what either holds).
    for name in &acked {
        for r in &survivors {
            eventually(30, "acknowledged write in a survivor", || {
                user_named(r, name)
            })
            .await;
        }
    }
    println!("RPO sync: {} acknowledged writes, 0 lost", acked.len());
}

#[tokio::test]
async fn async_mode_reports_how_many_acknowledged_writes_were_lost() {
    let cluster = Cluster::new(&["qa", "qb"]);
    let (acked, survivors) =
        write_then_kill(&cluster, "rpo-async", Duration::from_millis(700)).await;
    // Count only once the survivor has seen the writer's connection close: nothing it sent can
    // still be in flight after that, so a slow machine does not inflate the figure.
    eventually(30, "the survivor sees qa disconnected", || async {
        (peer_health(&survivors[0], "qa").await["connected"] == json!(false)).then_some(())
    })
    .await;
    let mut lost = 0;
    for name in &acked {
        if user_named(&survivors[0], name).await.is_none() {
            lost += 1;
        }
    }
    // A figure, not an assertion: async mode acknowledges before any peer holds the write.
    println!(
        "RPO async: {} acknowledged writes, {lost} lost with the writing region",
        acked.len()
    );
}

#[tokio::test]
async fn a_region_that_lags_asks_its_peers_instead_of_answering_404() {
    // "na" sorts first, so it dials "nz" as soon as it starts.
    let cluster = Cluster::with(&["na", "nz"], "lookup_timeout_ms = 3000");
    let z = cluster.start("nz");
    let mut ids = Vec::new();
    for i in 0..30 {
        let u = z.create_user(&format!("lagging-{i}@example.com")).await;
        ids.push(u["id"].as_str().unwrap().to_string());
    }
    // A region that has none of them yet answers at once, and never 404.
    let a = cluster.start("na");
    for (i, id) in ids.iter().enumerate().rev() {
        let (s, v) = a.req(Method::GET, &format!("/Users/{id}"), None).await;
        assert_eq!(s, StatusCode::OK, "user {i} answered {s}: {v}");
    }
    assert!(user_named(&a, "lagging-0@example.com").await.is_some());
    // An id nobody has is still a 404, after asking.
    let (s, _) = a
        .req(
            Method::GET,
            "/Users/00000000-0000-0000-0000-000000000000",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// `/health`'s replication entry for `peer`, as `region` reports it.
async fn peer_health(region: &Region, peer: &str) -> Value {
    let health = health_json(&region.client, &region.url).await;
    health["replication"]["peers"]
        .as_array()
        .and_then(|peers| peers.iter().find(|p| p["peer"] == json!(peer)).cloned())
        .unwrap_or_else(|| panic!("no replication entry for {peer}: {health}"))
}

/// The value of the `/metrics` series `name{peer="<peer>"}`, as `region` reports it.
async fn peer_metric(region: &Region, name: &str, peer: &str) -> f64 {
    let text = region.metrics().await;
    let series = format!("{name}{{peer=\"{peer}\"}}");
    crate::harness::sample(&text, &series)
        .unwrap_or_else(|| panic!("no {series} in /metrics:\n{text}"))
}

#[tokio::test]
async fn bytes_on_the_wire_are_reported_per_peer_and_add_up_across_reconnections() {
    // "wa" sorts first, so it dials "wb" (and redials it after the restart).
    let cluster = Cluster::new(&["wa", "wb"]);
    let a = cluster.start("wa");
    let b = cluster.start("wb");
    for i in 0..20 {
        a.create_user(&format!("bytes-{i}@example.com")).await;
    }
    eventually(20, "replication to wb", || {
        user_named(&b, "bytes-19@example.com")
    })
    .await;
    let sent = peer_metric(&a, "geoscim_replication_bytes_sent_total", "wb").await;
    let received = peer_metric(&a, "geoscim_replication_bytes_received_total", "wb").await;
    // 20 users' changes went out; acknowledgements came back.
    assert!(sent > 2_000.0, "bytes sent to wb: {sent}");
    assert!(received > 0.0, "bytes received from wb: {received}");
    for (region, peer) in [(&a, "wb"), (&b, "wa")] {
        let h = peer_health(region, peer).await;
        assert!(h["bytes_sent"].as_u64().unwrap() > 0, "{h}");
        assert!(h["bytes_received"].as_u64().unwrap() > 0, "{h}");
    }
    // A new connection adds to the totals; the old connection's bytes are not forgotten.
    let b = b.restart();
    a.create_user("after-restart@example.com").await;
    eventually(30, "replication after wb restarted", || {
        user_named(&b, "after-restart@example.com")
    })
    .await;
    let h = peer_health(&a, "wb").await;
    assert!(
        h["bytes_sent"].as_f64().unwrap() > sent
            && h["bytes_received"].as_f64().unwrap() > received,
        "before the restart: sent {sent}, received {received}; now {h}"
    );
}

#[tokio::test]
async fn regions_holding_the_same_changes_report_matching_digests() {
    // Needs `Store::digest`: while it returns None no comparison happens and this fails.
    let cluster = Cluster::with(&["da", "db"], "digest_interval_ms = 200");
    let a = cluster.start("da");
    let b = cluster.start("db");
    for i in 0..5 {
        a.create_user(&format!("digest-{i}@example.com")).await;
    }
    b.create_user("digest-b@example.com").await;
    eventually(20, "replication both ways", || async {
        user_named(&b, "digest-4@example.com").await?;
        user_named(&a, "digest-b@example.com").await
    })
    .await;
    for (region, peer) in [(&a, "db"), (&b, "da")] {
        let h = eventually(20, "a digest comparison that matched", || async {
            let h = peer_health(region, peer).await;
            (h["digests_matched"].as_u64().unwrap_or(0) > 0).then_some(h)
        })
        .await;
        assert_eq!(h["diverged"], json!(false), "{h}");
        assert_eq!(h["divergences"], json!(0), "{h}");
        assert!(h["digests_compared"].as_u64().unwrap() >= 1, "{h}");
        let matched = peer_metric(region, "geoscim_replication_digests_matched_total", peer).await;
        assert!(matched > 0.0, "digests matched with {peer}: {matched}");
        assert_eq!(
            peer_metric(region, "geoscim_replication_diverged", peer).await,
            0.0
        );
        assert_eq!(
            peer_metric(region, "geoscim_replication_divergence_total", peer).await,
            0.0
        );
    }
}
