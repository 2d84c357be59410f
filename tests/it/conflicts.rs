//! The conflict rules end to end (offboarding wins, concurrent attribute writes, membership
//! remove-wins): real region processes, a real network partition, and the conflict log read
//! back through the admin API of every region.
//!
//! Three regions `a`, `b`, `c`, each in its own network namespace, replicate over a "wan": a
//! bridge in a fourth namespace with one veth per region. The partition cuts `b`'s veth: `b` is
//! alone, `a` and `c` still see each other. `c` stays with `a` on purpose: offboarding
//! (deactivations and deletes) waits for `replication.write_quorum` (2 by default) in every
//! mode, so with `c` on its side `a` acknowledges them during the partition exactly as a real
//! majority side would, while `b` (the minority) only ever makes changes that answer without a
//! quorum (reactivations, updates, creates, member adds). Every scenario runs on its own users
//! and groups during one partition, so the namespaces are set up once.
//!
//! Needs root and `ip netns` like [`crate::partition`]: skipped elsewhere, except under CI.
//! The Entra and Okta request shapes are also checked on one region, without a partition.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::harness::{eventually_ok, health_json, Region};
use crate::partition::{spawn_in, Bridged};

const TOKEN: &str = "conflicts-test-token";
const ADMIN_TOKEN: &str = "conflicts-admin-token-0123456789";
const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
/// The QUIC port of each region, on its wan address.
const QUIC_PORT: u16 = 7100;
/// How long convergence after healing may take.
const HEAL_SECS: u64 = 60;

/// Entra's deactivation: a capitalised op and the boolean as a string.
fn entra_deactivation() -> Value {
    json!({"schemas": [PATCH_OP],
           "Operations": [{"op": "Replace", "path": "active", "value": "False"}]})
}

/// Okta's deactivation: a replace without a path.
fn okta_deactivation() -> Value {
    json!({"schemas": [PATCH_OP], "Operations": [{"op": "replace", "value": {"active": false}}]})
}

fn patch_op(op: &str, path: &str, value: Value) -> Value {
    json!({"schemas": [PATCH_OP], "Operations": [{"op": op, "path": path, "value": value}]})
}

/// A region in a namespace, reached over its management veth.
struct Node {
    name: &'static str,
    url: String,
    client: reqwest::Client,
}

/// A SCIM answer: status, parsed body (Null when empty), ETag header.
struct Answer {
    status: StatusCode,
    body: Value,
    etag: Option<String>,
}

impl Node {
    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        let mut b = self
            .client
            .request(method, format!("{}/scim/v2{path}", self.url))
            .bearer_auth(TOKEN)
            .header("content-type", "application/scim+json");
        if let Some(body) = body {
            b = b.body(body.to_string());
        }
        let r = b
            .send()
            .await
            .unwrap_or_else(|e| panic!("request to {}: {e}", self.name));
        let status = r.status();
        let etag = r
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = r.text().await.unwrap_or_default();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Answer { status, body, etag }
    }

    /// Send and expect `want`; the body.
    async fn ok(&self, want: StatusCode, method: Method, path: &str, body: Option<Value>) -> Value {
        let a = self.send(method.clone(), path, body).await;
        assert_eq!(
            a.status, want,
            "{method} {path} in region {}: {}",
            self.name, a.body
        );
        a.body
    }

    async fn post(&self, kind: &str, body: Value) -> Value {
        self.ok(
            StatusCode::CREATED,
            Method::POST,
            &format!("/{kind}"),
            Some(body),
        )
        .await
    }

    async fn patch(&self, kind: &str, id: &str, body: Value) -> Value {
        self.ok(
            StatusCode::OK,
            Method::PATCH,
            &format!("/{kind}/{id}"),
            Some(body),
        )
        .await
    }

    /// A resource as every region should serve it: without what names the answering region
    /// (`meta.location`, the `$ref` of a user's computed `groups`), with its ETag.
    async fn get(&self, path: &str) -> Result<(Value, String), String> {
        let a = self.send(Method::GET, path, None).await;
        if a.status != StatusCode::OK {
            return Err(format!("{path} in {}: {} {}", self.name, a.status, a.body));
        }
        let mut v = a.body;
        if let Some(meta) = v["meta"].as_object_mut() {
            meta.remove("location");
        }
        if let Some(groups) = v.get_mut("groups").and_then(Value::as_array_mut) {
            for g in groups {
                g.as_object_mut().map(|g| g.remove("$ref"));
            }
        }
        let etag = a
            .etag
            .ok_or_else(|| format!("{path} in {}: no ETag", self.name))?;
        Ok((v, etag))
    }

    /// The users with this userName that this region holds: a `co` filter matched exactly
    /// here, since an `eq` filter that finds nothing asks the peers (and would hide a user
    /// that never replicated).
    async fn users_named(&self, name: &str) -> Vec<Value> {
        let body = self
            .ok(
                StatusCode::OK,
                Method::GET,
                &format!("/Users?count=1000&filter=userName%20co%20%22{name}%22"),
                None,
            )
            .await;
        let all = body["Resources"].as_array().cloned().unwrap_or_default();
        all.into_iter()
            .filter(|u| {
                u["userName"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
            })
            .collect()
    }

    /// `GET /admin/v1/conflicts?<query>`: the records.
    async fn conflicts(&self, query: &str) -> Vec<Value> {
        let r = self
            .client
            .get(format!("{}/admin/v1/conflicts?{query}", self.url))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap_or_else(|e| panic!("admin request to {}: {e}", self.name));
        let status = r.status();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(status, StatusCode::OK, "conflicts in {}: {body}", self.name);
        let list = body["Resources"].as_array().cloned().unwrap_or_default();
        assert_eq!(
            body["totalResults"],
            json!(list.len()),
            "one page holds them all: {body}"
        );
        list
    }

    /// The records of one rule about one resource.
    async fn records(&self, rule: &str, resource: &str) -> Vec<Value> {
        self.conflicts(&format!(
            "tenant=t1&rule={rule}&resource={resource}&count=1000"
        ))
        .await
    }

    /// `geoscim_conflicts_total{rule="<rule>"}` in `/metrics` (None when absent).
    async fn conflict_counter(&self, rule: &str) -> Option<u64> {
        let text = self
            .client
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let prefix = format!("geoscim_conflicts_total{{rule=\"{rule}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|n| n.trim().parse().ok())
    }

    /// `/health` (Null when it cannot be read).
    async fn health(&self) -> Value {
        health_json(&self.client, &self.url).await
    }

    async fn all_peers_connected(&self, peers: usize) -> bool {
        self.health().await["replication"]["peers"]
            .as_array()
            .is_some_and(|p| p.len() == peers && p.iter().all(|p| p["connected"] == json!(true)))
    }
}

/// The resource at `path` where every region serves identical JSON with the same ETag.
async fn same_everywhere(nodes: &[Node], path: &str) -> Result<Value, String> {
    let (first, etag) = nodes[0].get(path).await?;
    for n in &nodes[1..] {
        let (v, e) = n.get(path).await?;
        if (&v, &e) != (&first, &etag) {
            return Err(format!(
                "{path}: {} has {etag} {first}, {} has {e} {v}",
                nodes[0].name, n.name
            ));
        }
    }
    Ok(first)
}

/// Regions in namespaces on one bridged wan; dropping it (its [`Netns`]) stops the processes
/// and removes everything.
struct Wan {
    net: Bridged,
    nodes: Vec<Node>,
    _tmp: tempfile::TempDir,
}

impl Wan {
    /// `None` when namespaces are unavailable (outside CI only; see [`unavailable`]).
    fn start(names: &[&'static str]) -> Option<Wan> {
        let mut wan = Bridged::start(names, 215, wan_ip)?;

        let tmp = tempfile::tempdir().unwrap();
        let certs = tmp.path().join("certs");
        crate::harness::certs(&certs, names);
        let admin = crate::harness::admin_tokens_toml(ADMIN_TOKEN);
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let mut nodes = Vec::new();
        for (i, r) in names.iter().enumerate() {
            let mut text = format!(
                "region = \"{r}\"\ndata_dir = \"{}\"\n[http]\nlisten = \"{}:0\"\n\
                 [replication]\nlisten = \"{}:{QUIC_PORT}\"\ncerts_dir = \"{}\"\n",
                tmp.path().join(r).display(),
                wan.mgmt[i],
                wan_ip(i),
                certs.display(),
            );
            for (j, peer) in names.iter().enumerate().filter(|(j, _)| *j != i) {
                text += &format!(
                    "[[replication.peers]]\nregion = \"{peer}\"\naddr = \"{}:{QUIC_PORT}\"\n",
                    wan_ip(j)
                );
            }
            let config = tmp.path().join(format!("{r}.toml"));
            std::fs::write(&config, text).unwrap();
            let (child, url) = spawn_in(
                &wan.links[i].0,
                &config,
                TOKEN,
                &[("GEOSCIM_ADMIN_TOKENS", &admin)],
            );
            wan.net.children.push(child);
            nodes.push(Node {
                name: r,
                url,
                client: client.clone(),
            });
        }
        Some(Wan {
            net: wan,
            nodes,
            _tmp: tmp,
        })
    }

    /// Take region `i`'s wan link down (`up: false`) or up again, at both ends.
    fn set_link(&self, i: usize, up: bool) {
        self.net.set_link(i, up);
    }
}

fn wan_ip(i: usize) -> String {
    format!("10.216.0.{}", i + 1)
}

fn user_body(user_name: &str, display: &str) -> Value {
    json!({"schemas": [USER], "userName": user_name, "displayName": display, "active": true})
}

fn id_of(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id: {v}"))
        .to_string()
}

/// The regions named in a record's values, in order.
fn regions_of(record: &Value) -> Vec<String> {
    record["values"]
        .as_array()
        .unwrap_or_else(|| panic!("no values: {record}"))
        .iter()
        .map(|v| v["region"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Every region holds exactly `want` records of `rule` about `resource`, with the same ids;
/// the records (as the first region serves them).
async fn records_everywhere(
    nodes: &[Node],
    rule: &str,
    resource: &str,
    want: usize,
) -> Result<Vec<Value>, String> {
    let first = nodes[0].records(rule, resource).await;
    let ids = |l: &[Value]| -> BTreeSet<String> {
        l.iter()
            .map(|r| r["id"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    for n in nodes {
        let l = n.records(rule, resource).await;
        if l.len() != want || ids(&l) != ids(&first) {
            return Err(format!(
                "{rule} about {resource}: {} holds {} (want {want}): {l:?}; {} holds {first:?}",
                n.name,
                l.len(),
                nodes[0].name
            ));
        }
    }
    for r in &first {
        assert_eq!(r["rule"], json!(rule), "{r}");
        assert_eq!(r["tenant"], json!("t1"), "{r}");
        assert_eq!(r["resourceId"], json!(resource), "{r}");
        assert!(r["at"].as_str().is_some_and(|t| t.starts_with("20")), "{r}");
    }
    Ok(first)
}

/// During one partition (held until the connections to `b` time out, so healing goes through
/// reconnection and catch-up), on distinct resources:
/// 1. `a` deactivates (Entra PATCH, Okta PATCH, Okta PUT) while `b` reactivates: inactive
///    everywhere, one `sticky-deactivation` record each;
/// 2. after healing, `b` reactivates one of them (a rehire): active everywhere, no new record;
/// 3. `a` deletes while `b` updates: 404 everywhere, one `delete-wins` record; a later POST of
///    the userName creates a new user under a new id;
/// 4. the same POST to `a` and `b`, and a POST with another displayName: one user per userName
///    with the same id everywhere, a `username-merge` record each, and a `concurrent-scalar`
///    record for the differing displayName;
/// 5. `a` removes a member while `b` re-adds it (a new `display`), and `a` adds then removes a
///    member while `b` adds it: both absent everywhere, two `membership-remove-wins` records.
///
/// Every resource ends with identical JSON and ETag in every region, and every region's conflict
/// log holds exactly these nine records under the same ids, counted by rule in its `/metrics`.
#[tokio::test]
async fn concurrent_writes_on_both_sides_of_a_real_partition_resolve_by_the_rules() {
    let started = Instant::now();
    let Some(wan) = Wan::start(&["a", "b", "c"]) else {
        return;
    };
    let nodes = &wan.nodes;
    let (a, b) = (&nodes[0], &nodes[1]);
    eventually_ok(30, "all regions connected over the wan", || async {
        for n in nodes {
            if !n.all_peers_connected(2).await {
                return Err(format!("{} is not connected to both peers", n.name));
            }
        }
        Ok(())
    })
    .await;

    // Before the partition, everywhere: three users to deactivate (one per IdP shape), one to
    // delete, three members and a group holding two of them.
    let mut ids = Vec::new();
    for name in [
        "sticky-entra@example.com",
        "sticky-okta@example.com",
        "sticky-put@example.com",
        "deleted@example.com",
        "member-1@example.com",
        "member-2@example.com",
        "member-3@example.com",
    ] {
        ids.push(id_of(&a.post("Users", user_body(name, "Before")).await));
    }
    let [u_entra, u_okta, u_put, u_del, m1, m2, m3] = <[String; 7]>::try_from(ids).unwrap();
    let group = a
        .post(
            "Groups",
            json!({"schemas": [GROUP], "displayName": "least-privilege",
                   "members": [{"value": m1}, {"value": m3}]}),
        )
        .await;
    let g = id_of(&group);
    for path in [
        format!("/Users/{u_entra}"),
        format!("/Users/{u_okta}"),
        format!("/Users/{u_put}"),
        format!("/Users/{u_del}"),
        format!("/Users/{m2}"),
        format!("/Groups/{g}"),
    ] {
        eventually_ok(20, "replication before the partition", || async {
            let v = same_everywhere(nodes, &path).await?;
            if path.starts_with("/Groups") && v["members"].as_array().map(Vec::len) != Some(2) {
                return Err(format!("group without both members yet: {v}"));
            }
            Ok(v)
        })
        .await;
    }
    println!("set up in {:?}", started.elapsed());

    // The partition: b alone; a and c together.
    wan.set_link(1, false);
    let cut = Instant::now();
    // Side a (with c: offboarding reaches its quorum).
    let v = a.patch("Users", &u_entra, entra_deactivation()).await;
    assert_eq!(v["active"], json!(false), "{v}");
    let v = a.patch("Users", &u_okta, okta_deactivation()).await;
    assert_eq!(v["active"], json!(false), "{v}");
    let (mut whole, _) = a.get(&format!("/Users/{u_put}")).await.unwrap();
    whole.as_object_mut().unwrap().remove("meta");
    whole["active"] = json!(false);
    let v = a
        .ok(
            StatusCode::OK,
            Method::PUT,
            &format!("/Users/{u_put}"),
            Some(whole),
        )
        .await;
    assert_eq!(v["active"], json!(false), "{v}");
    a.ok(
        StatusCode::NO_CONTENT,
        Method::DELETE,
        &format!("/Users/{u_del}"),
        None,
    )
    .await;
    let same_a = a
        .post("Users", user_body("same@example.com", "Same Payload"))
        .await;
    let diff_a = a
        .post("Users", user_body("diff@example.com", "Diff In A"))
        .await;
    let member = |m: &str| format!("members[value eq \"{m}\"]");
    a.patch("Groups", &g, patch_op("remove", &member(&m1), Value::Null))
        .await;
    a.patch(
        "Groups",
        &g,
        patch_op("add", "members", json!([{"value": m2}])),
    )
    .await;
    a.patch("Groups", &g, patch_op("remove", &member(&m2), Value::Null))
        .await;
    // Side b: reactivations (explicit writes of `true`), an update of the deleted user, the
    // same creates, and adds of the members a removed.
    for u in [&u_entra, &u_okta, &u_put] {
        let v = b
            .patch("Users", u, patch_op("replace", "active", json!(true)))
            .await;
        assert_eq!(v["active"], json!(true), "{v}");
    }
    b.patch(
        "Users",
        &u_del,
        patch_op("replace", "displayName", json!("Updated In B")),
    )
    .await;
    let same_b = b
        .post("Users", user_body("same@example.com", "Same Payload"))
        .await;
    let diff_b = b
        .post("Users", user_body("diff@example.com", "Diff In B"))
        .await;
    // A new `display` for m1 rewrites m1's membership entry: an add, concurrent with a's removal.
    b.patch(
        "Groups",
        &g,
        patch_op(
            "add",
            &format!("{}.display", member(&m1)),
            json!("Member One"),
        ),
    )
    .await;
    b.patch(
        "Groups",
        &g,
        patch_op("add", "members", json!([{"value": m2}])),
    )
    .await;
    // The partition held: each side sees only its own writes.
    let (in_b, _) = b.get(&format!("/Users/{u_entra}")).await.unwrap();
    assert_eq!(
        in_b["active"],
        json!(true),
        "a's deactivation crossed the cut"
    );
    b.get(&format!("/Users/{u_del}"))
        .await
        .expect("a's delete crossed the cut");
    let (g_in_a, _) = a.get(&format!("/Groups/{g}")).await.unwrap();
    assert_eq!(g_in_a["members"], json!([{"value": m3}]), "{g_in_a}");
    let (g_in_b, _) = b.get(&format!("/Groups/{g}")).await.unwrap();
    assert_eq!(
        g_in_b["members"].as_array().map(Vec::len),
        Some(3),
        "{g_in_b}"
    );
    // One identity per userName: both sides derived the same ids on their own.
    assert_eq!(same_a["id"], same_b["id"]);
    assert_eq!(diff_a["id"], diff_b["id"]);
    let (same, diff) = (id_of(&same_a), id_of(&diff_a));
    // Hold the partition until the connections to b are declared dead (the QUIC idle timeout),
    // so that healing goes through reconnection and catch-up, not through retransmission on a
    // connection that survived the cut.
    eventually_ok(40, "the connections to b to time out", || async {
        // b has lost both peers; a and c have lost b only.
        for (n, want_down) in [(a, 1), (b, 2), (&nodes[2], 1)] {
            let h = n.health().await;
            let list = h["replication"]["peers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let down = list
                .iter()
                .filter(|p| p["connected"] == json!(false))
                .count();
            if list.len() != 2 || down != want_down {
                return Err(format!("{}: {h}", n.name));
            }
        }
        Ok(())
    })
    .await;
    println!("partition held for {:?}", cut.elapsed());

    // Heal.
    wan.set_link(1, true);
    let healed = Instant::now();

    // The conflict log first (records are written into the documents after the merge, which
    // changes their versions): the same records in every region, and nothing else.
    let sticky_ids = {
        let mut out = Vec::new();
        for u in [&u_entra, &u_okta, &u_put] {
            let recs = eventually_ok(HEAL_SECS, "one sticky-deactivation record", || {
                records_everywhere(nodes, "sticky-deactivation", u, 1)
            })
            .await;
            let r = &recs[0];
            assert_eq!(r["attribute"], json!("active"), "{r}");
            assert_eq!(r["outcome"], json!(false), "{r}");
            assert_eq!(r["values"][0]["value"], json!(false), "{r}");
            assert_eq!(r["values"][1]["value"], json!(true), "{r}");
            assert_eq!(regions_of(r), ["a", "b"], "{r}");
            out.push(r["id"].clone());
        }
        out
    };
    let recs = eventually_ok(HEAL_SECS, "one delete-wins record", || {
        records_everywhere(nodes, "delete-wins", &u_del, 1)
    })
    .await;
    assert_eq!(regions_of(&recs[0]), ["a", "b"], "{}", recs[0]);
    for u in [&same, &diff] {
        let recs = eventually_ok(HEAL_SECS, "one username-merge record", || {
            records_everywhere(nodes, "username-merge", u, 1)
        })
        .await;
        let r = &recs[0];
        assert_eq!(r["attribute"], json!("userName"), "{r}");
        let mut regions = regions_of(r);
        regions.sort();
        assert_eq!(regions, ["a", "b"], "{r}");
    }
    let recs = eventually_ok(HEAL_SECS, "one concurrent-scalar record", || {
        records_everywhere(nodes, "concurrent-scalar", &diff, 1)
    })
    .await;
    let scalar = recs[0].clone();
    assert_eq!(scalar["attribute"], json!("displayName"), "{scalar}");
    let mut shown: Vec<Value> = scalar["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["value"].clone())
        .collect();
    assert_eq!(
        scalar["outcome"], shown[0],
        "the winner comes first: {scalar}"
    );
    shown.sort_by_key(|v| v.to_string());
    assert_eq!(shown, [json!("Diff In A"), json!("Diff In B")], "{scalar}");
    let recs = eventually_ok(HEAL_SECS, "two membership-remove-wins records", || {
        records_everywhere(nodes, "membership-remove-wins", &g, 2)
    })
    .await;
    let mut attributes: Vec<String> = recs
        .iter()
        .map(|r| {
            assert_eq!(r["outcome"], Value::Null, "{r}");
            assert_eq!(r["values"][0]["value"], Value::Null, "{r}");
            assert_eq!(regions_of(r), ["a", "b"], "{r}");
            r["attribute"].as_str().unwrap().to_string()
        })
        .collect();
    attributes.sort();
    let mut want = vec![member(&m1), member(&m2)];
    want.sort();
    assert_eq!(attributes, want);
    // Nothing else was recorded: no concurrent-scalar for identical creates, no record for
    // concurrent but equal values.
    let all = eventually_ok(HEAL_SECS, "the whole conflict log everywhere", || async {
        let first = nodes[0].conflicts("tenant=t1&count=1000").await;
        for n in &nodes[1..] {
            let l = n.conflicts("tenant=t1&count=1000").await;
            if l != first {
                return Err(format!("{} holds {l:?}, a holds {first:?}", n.name));
            }
        }
        Ok(first)
    })
    .await;
    assert_eq!(
        all.len(),
        9,
        "3 sticky, 1 delete, 2 merges, 1 scalar, 2 members: {all:#?}"
    );
    println!(
        "conflict log converged {:?} after healing",
        healed.elapsed()
    );

    // The resources: identical JSON and ETag in every region.
    // 1. Offboarding wins, whatever the IdP's request shape.
    for u in [&u_entra, &u_okta, &u_put] {
        let v = eventually_ok(HEAL_SECS, "the deactivation everywhere", || async {
            let v = same_everywhere(nodes, &format!("/Users/{u}")).await?;
            (v["active"] == json!(false))
                .then_some(v.clone())
                .ok_or(format!("active everywhere: {v}"))
        })
        .await;
        assert_eq!(v["active"], json!(false));
    }
    // 3. Delete wins.
    for n in nodes {
        let r = n.send(Method::GET, &format!("/Users/{u_del}"), None).await;
        assert_eq!(
            r.status,
            StatusCode::NOT_FOUND,
            "{} resurrected: {}",
            n.name,
            r.body
        );
    }
    // 4. One user per userName, with one of the concurrent displayNames.
    for (name, id) in [("same@example.com", &same), ("diff@example.com", &diff)] {
        let v = eventually_ok(HEAL_SECS, "one user per userName", || async {
            for n in nodes {
                let found = n.users_named(name).await;
                if found.len() != 1 || found[0]["id"] != json!(id) {
                    return Err(format!("{name} in {}: {found:?}", n.name));
                }
            }
            same_everywhere(nodes, &format!("/Users/{id}")).await
        })
        .await;
        if name.starts_with("same") {
            assert_eq!(v["displayName"], json!("Same Payload"), "{v}");
        } else {
            assert_eq!(v["displayName"], scalar["outcome"], "{v}");
        }
    }
    // 5. Removal wins over a concurrent add: only the untouched member is left.
    let v = same_everywhere(nodes, &format!("/Groups/{g}"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v["members"], json!([{"value": m3}]), "{v}");
    for m in [&m1, &m2] {
        let (u, _) = a.get(&format!("/Users/{m}")).await.unwrap();
        assert!(u.get("groups").is_none(), "{m} still in the group: {u}");
    }
    println!("everything converged {:?} after healing", healed.elapsed());

    // 2. A rehire: b, having seen the deactivation, reactivates; no new record.
    let v = b
        .patch(
            "Users",
            &u_entra,
            patch_op("replace", "active", json!(true)),
        )
        .await;
    assert_eq!(v["active"], json!(true), "{v}");
    eventually_ok(HEAL_SECS, "the rehire everywhere", || async {
        let v = same_everywhere(nodes, &format!("/Users/{u_entra}")).await?;
        (v["active"] == json!(true))
            .then_some(())
            .ok_or(format!("inactive: {v}"))
    })
    .await;
    let recs = records_everywhere(nodes, "sticky-deactivation", &u_entra, 1)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(recs[0]["id"], sticky_ids[0]);

    // 3'. After a delete, a POST of the same userName creates a new user under a new id.
    let again = b
        .post("Users", user_body("deleted@example.com", "Rehired"))
        .await;
    let new_id = id_of(&again);
    assert_ne!(new_id, u_del);
    eventually_ok(HEAL_SECS, "the new user everywhere", || async {
        for n in nodes {
            let found = n.users_named("deleted@example.com").await;
            if found.len() != 1 || found[0]["id"] != json!(new_id) {
                return Err(format!("{}: {found:?}", n.name));
            }
        }
        Ok(())
    })
    .await;
    for n in nodes {
        let r = n.send(Method::GET, &format!("/Users/{u_del}"), None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{}: {}", n.name, r.body);
    }
    let total = a.conflicts("tenant=t1&count=1000").await.len();
    assert_eq!(total, 9, "the rehire and the new user recorded nothing");
    // Every region counts each record once, whether it observed the merge or received it.
    let counts = [
        ("sticky-deactivation", 3),
        ("delete-wins", 1),
        ("username-merge", 2),
        ("concurrent-scalar", 1),
        ("membership-remove-wins", 2),
    ];
    eventually_ok(10, "conflict counters in /metrics", || async {
        for n in nodes {
            for (rule, want) in counts {
                let got = n.conflict_counter(rule).await;
                if got != Some(want) {
                    return Err(format!("{} counts {got:?} {rule}, want {want}", n.name));
                }
            }
        }
        Ok(())
    })
    .await;
    println!("test took {:?}", started.elapsed());
}

/// PATCH or PUT on one region: the new ETag (checked against the body's `meta.version`) and
/// the body.
async fn write(r: &Region, method: Method, id: &str, body: Value) -> (String, Value) {
    let resp = r
        .send(
            r.token(),
            method.clone(),
            &format!("/Users/{id}"),
            Some(body),
            &[],
        )
        .await;
    let status = resp.status();
    let etag = resp
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    assert_eq!(status, StatusCode::OK, "{method}: {body}");
    let etag = etag.unwrap_or_else(|| panic!("{method} answered no ETag"));
    assert_eq!(body["meta"]["version"], json!(etag), "{body}");
    (etag, body)
}

/// Entra's and Okta's deactivation shapes take the sticky path: on a user that is already
/// inactive, each is still a new write (a new ETag), unlike a PUT that changes nothing.
#[tokio::test]
async fn entra_and_okta_deactivations_are_new_writes_even_when_already_inactive() {
    let r = Region::start();
    let user = r.create_user("reassert@example.com").await;
    let id = id_of(&user);
    let mut etag = user["meta"]["version"].as_str().unwrap().to_string();
    let mut whole = user.clone();
    whole.as_object_mut().unwrap().remove("meta");
    whole["active"] = json!(false);
    let requests = [
        ("Entra PATCH", Method::PATCH, entra_deactivation()),
        ("Entra PATCH again", Method::PATCH, entra_deactivation()),
        (
            "Okta PATCH without a path",
            Method::PATCH,
            okta_deactivation(),
        ),
        ("Okta PUT of the whole user", Method::PUT, whole.clone()),
        ("Okta PUT again", Method::PUT, whole),
    ];
    for (what, method, body) in requests {
        let (next, v) = write(&r, method, &id, body).await;
        assert_eq!(v["active"], json!(false), "{what}: {v}");
        assert_ne!(next, etag, "{what} on an inactive user wrote nothing");
        etag = next;
    }
    // The contrast: a PUT that changes nothing and deactivates nothing writes nothing.
    let other = r.create_user("unchanged@example.com").await;
    let mut same = other.clone();
    same.as_object_mut().unwrap().remove("meta");
    let (next, _) = write(&r, Method::PUT, &id_of(&other), same).await;
    assert_eq!(json!(next), other["meta"]["version"]);
    // The last deactivation is what a GET serves.
    let resp = r
        .send(r.token(), Method::GET, &format!("/Users/{id}"), None, &[])
        .await;
    assert_eq!(
        resp.headers().get("etag").and_then(|v| v.to_str().ok()),
        Some(etag.as_str())
    );
}
