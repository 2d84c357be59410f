//! RFC 9865 cursor pagination against a real region: walks that survive writes between pages,
//! walking back, `.search` with cursors, and the 400s of bad cursors.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::harness::{eventually, eventually_ok, Region};

/// One page: its ids, its body.
async fn page(r: &Region, path: &str) -> (Vec<String>, Value) {
    let (s, v) = r.req(Method::GET, path, None).await;
    assert_eq!(s, StatusCode::OK, "{path}: {v}");
    (ids(&v), v)
}

fn ids(v: &Value) -> Vec<String> {
    v["Resources"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

fn enc(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

fn scim_type(v: &Value) -> &str {
    v["scimType"].as_str().unwrap_or_default()
}

/// Every id of the tenant's users, by index paging in one page.
async fn all_user_ids(r: &Region) -> BTreeSet<String> {
    let (ids, v) = page(r, "/Users?count=1000&attributes=id").await;
    assert!(v["totalResults"].as_u64().unwrap() < 1000);
    ids.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cursor_walk_sees_every_user_that_lived_throughout_exactly_once_despite_writes() {
    let r = Arc::new(Region::start());
    r.wait_healthy().await;
    let mut stable = BTreeSet::new();
    for i in 0..45 {
        let u = r.create_user(&format!("stable-{i:02}")).await;
        stable.insert(u["id"].as_str().unwrap().to_string());
    }
    // Writes between pages: a task creates users and deletes the ones it made before, while
    // the walk goes on.
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicUsize::new(0));
    let churn = {
        let (r, stop, writes) = (r.clone(), stop.clone(), writes.clone());
        tokio::spawn(async move {
            let mut made: Vec<String> = Vec::new();
            for j in 0..2_000 {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                let u = r.create_user(&format!("churn-{j:04}")).await;
                made.push(u["id"].as_str().unwrap().to_string());
                if made.len() > 3 {
                    let old = made.remove(0);
                    let (s, _) = r.req(Method::DELETE, &format!("/Users/{old}"), None).await;
                    assert_eq!(s, StatusCode::NO_CONTENT);
                }
                writes.fetch_add(1, Ordering::AcqRel);
            }
        })
    };
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut cursors = Vec::new();
    let (mut ids, mut body) = page(&r, "/Users?cursor&count=7").await;
    assert!(body["previousCursor"].is_null(), "the first page has none");
    for _ in 0..200 {
        assert!(body.get("startIndex").is_none(), "no startIndex: {body}");
        assert!(ids.len() <= 7);
        assert!(body["totalResults"].as_u64().is_some());
        for id in &ids {
            *seen.entry(id.clone()).or_default() += 1;
        }
        let Some(next) = body["nextCursor"].as_str().map(str::to_string) else {
            break;
        };
        cursors.push(next.clone());
        // Let writes land between this page and the next.
        let before = writes.load(Ordering::Acquire);
        eventually(20, "a write between pages", || {
            let w = writes.clone();
            async move { (w.load(Ordering::Acquire) > before).then_some(()) }
        })
        .await;
        (ids, body) = page(&r, &format!("/Users?cursor={}&count=7", enc(&next))).await;
    }
    assert!(body["nextCursor"].is_null(), "the walk ended");
    stop.store(true, Ordering::Release);
    churn.await.unwrap();
    assert!(
        writes.load(Ordering::Acquire) >= cursors.len(),
        "writes happened during the walk"
    );
    let repeated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "repeated: {repeated:?}");
    let missed: Vec<_> = stable.iter().filter(|id| !seen.contains_key(*id)).collect();
    assert!(missed.is_empty(), "missed: {missed:?}");

    // Walk back from the last page: with the writes over, the pages before it and the last
    // page hold exactly the tenant's users, each once, in id order. (A fresh walk to the end:
    // the last page of the walk above may be empty if what lay after it was deleted.)
    let (mut ids, mut body) = page(&r, "/Users?cursor&count=7").await;
    for _ in 0..200 {
        let Some(next) = body["nextCursor"].as_str().map(str::to_string) else {
            break;
        };
        (ids, body) = page(&r, &format!("/Users?cursor={}&count=7", enc(&next))).await;
    }
    let last_ids = ids.clone();
    let mut back: Vec<String> = Vec::new();
    let mut prev = body["previousCursor"].as_str().map(str::to_string);
    for _ in 0..200 {
        let Some(p) = prev else { break };
        let (ids, b) = page(&r, &format!("/Users?cursor={}&count=7", enc(&p))).await;
        assert!(
            b["nextCursor"].is_string(),
            "a page walked back to has a next: {b}"
        );
        back.splice(0..0, ids);
        prev = b["previousCursor"].as_str().map(str::to_string);
    }
    back.extend(last_ids);
    let mut sorted = back.clone();
    sorted.sort();
    assert_eq!(back, sorted, "pages walk back in id order");
    assert_eq!(
        back.into_iter().collect::<BTreeSet<_>>(),
        all_user_ids(&r).await,
        "walking back sees every user once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_cursors_answer_400_with_their_scim_type() {
    let r = Region::start_with(&["t1", "t2"], &[("GEOSCIM_SCIM__CURSOR_TIMEOUT_SECS", "2")]);
    r.wait_healthy().await;
    for i in 0..3 {
        r.create_user(&format!("user-{i}")).await;
    }
    let (s, spc) = r.req(Method::GET, "/ServiceProviderConfig", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(spc["pagination"]["cursor"], true);
    assert_eq!(spc["pagination"]["index"], true);
    assert_eq!(spc["pagination"]["defaultPaginationMethod"], "index");
    assert_eq!(spc["pagination"]["cursorTimeout"], 2);
    assert_eq!(
        spc["pagination"]["maxPageSize"],
        spc["filter"]["maxResults"]
    );

    let (_, first) = page(&r, "/Users?cursor=&count=1").await;
    let next = first["nextCursor"].as_str().unwrap().to_string();
    let get = |path: String| {
        let r = &r;
        async move { r.req(Method::GET, &path, None).await }
    };
    // A changed character, garbage, and a cursor of another query.
    let mut tampered: Vec<char> = next.chars().collect();
    let mid = tampered.len() / 2;
    tampered[mid] = if tampered[mid] == 'A' { 'B' } else { 'A' };
    let tampered: String = tampered.into_iter().collect();
    for path in [
        format!("/Users?cursor={}&count=1", enc(&tampered)),
        "/Users?cursor=not-a-cursor&count=1".to_string(),
        format!(
            "/Users?cursor={}&count=1&filter={}",
            enc(&next),
            enc("userName sw \"user\"")
        ),
        format!("/Groups?cursor={}&count=1", enc(&next)),
    ] {
        let (s, v) = get(path.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path}: {v}");
        assert_eq!(scim_type(&v), "invalidCursor", "{path}: {v}");
    }
    // Another tenant's token cannot follow this tenant's cursor.
    let (s, v) = r
        .req_as(
            &r.tokens[1].1,
            Method::GET,
            &format!("/Users?cursor={}&count=1", enc(&next)),
            None,
        )
        .await;
    assert_eq!(
        (s, scim_type(&v)),
        (StatusCode::BAD_REQUEST, "invalidCursor")
    );
    // One paging method per request, no sort, a positive count.
    let (s, _) = get("/Users?cursor&startIndex=2".into()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, v) = get("/Users?cursor&sortBy=userName".into()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["detail"].as_str().unwrap().contains("sortBy"), "{v}");
    let (s, v) = get("/Users?cursor&count=0".into()).await;
    assert_eq!(
        (s, scim_type(&v)),
        (StatusCode::BAD_REQUEST, "invalidCount")
    );
    // Index paging is as it was.
    let (s, v) = get("/Users?startIndex=2&count=1".into()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (v["startIndex"].as_u64(), v["totalResults"].as_u64()),
        (Some(2), Some(3))
    );

    // The cursor works until the timeout has passed, then it is expired.
    let issued = Instant::now();
    let (s, v) = get(format!("/Users?cursor={}&count=1", enc(&next))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    eventually_ok(15, "the cursor to expire", || {
        let path = format!("/Users?cursor={}&count=1", enc(&next));
        let r = &r;
        async move {
            let (s, v) = r.req(Method::GET, &path, None).await;
            match (s, scim_type(&v)) {
                (StatusCode::BAD_REQUEST, "expiredCursor") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    assert!(
        issued.elapsed() >= Duration::from_secs(1),
        "not before its time"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn search_pages_by_cursor_over_users_and_groups() {
    let r = Region::start();
    r.wait_healthy().await;
    let mut everyone = BTreeSet::new();
    for name in ["ann", "abe", "bob", "amy"] {
        everyone.insert(
            r.create_user(name).await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    for name in ["Admins", "Sales", "Ops"] {
        let (s, g) = r
            .req(
                Method::POST,
                "/Groups",
                Some(json!({
                    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                    "displayName": name
                })),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{g}");
        everyone.insert(g["id"].as_str().unwrap().to_string());
    }
    // The root `.search` walks Users, then Groups, three at a time.
    let search = |body: Value, path: &'static str| {
        let r = &r;
        async move {
            let (s, v) = r.req(Method::POST, path, Some(body)).await;
            assert_eq!(s, StatusCode::OK, "{v}");
            v
        }
    };
    let request = |cursor: &str, filter: Option<&str>| {
        let mut b = json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
            "cursor": cursor, "count": 3, "attributes": ["id"]
        });
        if let Some(f) = filter {
            b["filter"] = json!(f);
        }
        b
    };
    let mut seen = Vec::new();
    let mut v = search(request("", None), "/.search").await;
    for _ in 0..10 {
        assert_eq!(v["totalResults"], 7);
        seen.extend(ids(&v));
        let Some(next) = v["nextCursor"].as_str() else {
            break;
        };
        v = search(request(next, None), "/.search").await;
    }
    assert_eq!(seen.len(), 7, "{seen:?}");
    assert_eq!(seen.into_iter().collect::<BTreeSet<_>>(), everyone);

    // A filter that only a scan can answer: pages without totalResults, in id order.
    let f = "userName sw \"a\"";
    let mut names = Vec::new();
    let mut v = search(request("", Some(f)), "/Users/.search").await;
    for _ in 0..10 {
        assert!(v.get("totalResults").is_none(), "{v}");
        seen_names(&r, &v, &mut names).await;
        let Some(next) = v["nextCursor"].as_str().map(str::to_string) else {
            break;
        };
        let (s, e) = r
            .req(Method::POST, "/Users/.search", Some(request(&next, None)))
            .await;
        assert_eq!(
            (s, scim_type(&e)),
            (StatusCode::BAD_REQUEST, "invalidCursor")
        );
        v = search(request(&next, Some(f)), "/Users/.search").await;
    }
    names.sort();
    assert_eq!(names, ["abe", "amy", "ann"]);
}

/// The userNames of a page's users (read by id: the page was asked for ids only).
async fn seen_names(r: &Region, v: &Value, names: &mut Vec<String>) {
    for id in ids(v) {
        let (s, u) = r.req(Method::GET, &format!("/Users/{id}"), None).await;
        assert_eq!(s, StatusCode::OK);
        names.push(u["userName"].as_str().unwrap().to_string());
    }
}
