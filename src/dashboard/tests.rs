//! Handler tests of the dashboard and the admin API's live views, on a real store in a temp dir
//! (`app(state).oneshot(request)`, no socket): sign-in and its refusals, the page, sign-out
//! with and without the CSRF token, and every JSON and SSE endpoint the page reads.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, StatusCode};
use serde_json::{json, Map, Value};
use tower::ServiceExt;

use crate::api::{app, token_hash, AppState};
use crate::config::Config;
use crate::scim::schema::ResourceKind;
use crate::store::{Created, Store, StoreOptions};

const ADMIN: &str = "dashboard-admin-token";
const TENANT: &str = "tenant-token";

fn store(dir: &std::path::Path, region: &str) -> Store {
    Store::open(
        dir,
        StoreOptions {
            region: region.into(),
            sync_writes: false,
            doc_cache_size: 10,
            io_statistics: false,
            history_entries: 100,
            tenants: Default::default(),
        },
    )
    .unwrap()
}

fn state(dir: &std::path::Path) -> Arc<AppState> {
    let config = Config::from_toml(
        &format!(
            "region = \"h\"\ndata_dir = \"{}\"\nadmin_tokens = [{{sha256 = \"{}\"}}]\n",
            dir.display(),
            token_hash(ADMIN)
        ),
        "test",
        Vec::new(),
    )
    .unwrap();
    let tokens = HashMap::from([(token_hash(TENANT), "t".to_string())]);
    Arc::new(AppState::new(Arc::new(store(dir, "h")), config, tokens))
}

async fn send(
    state: &Arc<AppState>,
    r: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, String) {
    let response = app(state.clone()).oneshot(r).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 22).await.unwrap();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

fn get(uri: &str, cookie: Option<&str>) -> Request<Body> {
    let mut b = Request::builder()
        .uri(uri)
        .header(header::HOST, "region.test");
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    b.body(Body::empty()).unwrap()
}

fn login_request(token: &str, origin: Option<&str>) -> Request<Body> {
    let mut b = Request::builder()
        .method("POST")
        .uri("/dashboard/login")
        .header(header::HOST, "region.test")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(o) = origin {
        b = b.header(header::ORIGIN, o);
    }
    let body: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("token", token)
        .finish();
    b.body(Body::from(body)).unwrap()
}

/// Sign in with the admin token; the `Cookie` header value to send from then on.
async fn sign_in(state: &Arc<AppState>) -> String {
    let (status, headers, _) = send(state, login_request(ADMIN, Some("http://region.test"))).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/dashboard");
    let cookie = headers[header::SET_COOKIE].to_str().unwrap().to_string();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(cookie.contains(attr), "{cookie} lacks {attr}");
    }
    cookie.split(';').next().unwrap().to_string()
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[tokio::test]
async fn without_a_session_the_page_is_the_sign_in_form_and_the_api_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path());
    let (status, headers, body) = send(&state, get("/dashboard", None)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("name=\"token\""), "{body}");
    assert!(
        !body.contains("app.js"),
        "the app is not served before sign-in"
    );
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    assert!(headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .contains("script-src 'self'"));
    for uri in [
        "/admin/v1/cluster",
        "/admin/v1/offboardings/pending",
        "/admin/v1/conflicts/stream",
        "/admin/v1/samples",
        "/dashboard/session",
    ] {
        let (status, _, _) = send(&state, get(uri, None)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
    }
}

#[tokio::test]
async fn tenant_tokens_and_forged_cookies_never_sign_in() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path());
    for token in [TENANT, "", "not-a-token"] {
        let (status, headers, body) = send(&state, login_request(token, None)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}");
        assert!(headers.get(header::SET_COOKIE).is_none());
        assert!(body.contains("not an admin token"), "{body}");
    }
    // A tenant token as a bearer token is refused by the admin API too.
    let r = Request::builder()
        .uri("/admin/v1/cluster")
        .header(header::AUTHORIZATION, format!("Bearer {TENANT}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&state, r).await.0, StatusCode::UNAUTHORIZED);
    let real = sign_in(&state).await;
    let forged = [
        "geoscim_session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_string(),
        format!("{real}x"),
        real.replace("geoscim_session", "other"),
    ];
    for cookie in &forged {
        let (status, _, _) = send(&state, get("/admin/v1/cluster", Some(cookie))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{cookie}");
        let (_, _, body) = send(&state, get("/dashboard", Some(cookie))).await;
        assert!(body.contains("name=\"token\""), "{cookie} got past sign-in");
    }
    // A sign-in posted from another site's page is refused.
    let (status, headers, _) =
        send(&state, login_request(ADMIN, Some("http://evil.example"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(headers.get(header::SET_COOKIE).is_none());
}

#[tokio::test]
async fn a_session_sees_the_page_and_sign_out_needs_the_csrf_token() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path());
    let cookie = sign_in(&state).await;
    let (status, _, page) = send(&state, get("/dashboard", Some(&cookie))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("/dashboard/app.js"));
    assert!(!page.contains(ADMIN), "the page never holds the token");
    let (status, _, body) = send(&state, get("/dashboard/session", Some(&cookie))).await;
    assert_eq!(status, StatusCode::OK);
    let csrf = json_of(&body)["csrf"].as_str().unwrap().to_string();
    let (status, headers, js) = send(&state, get("/dashboard/app.js", None)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/javascript");
    assert!(js.contains("EventSource"));
    let logout = |token: Option<&str>| {
        let mut b = Request::builder()
            .method("POST")
            .uri("/dashboard/logout")
            .header(header::HOST, "region.test")
            .header(header::COOKIE, &cookie)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        let body = match token {
            Some(t) => format!("csrf={t}"),
            None => String::new(),
        };
        b = b.header(header::ORIGIN, "http://region.test");
        b.body(Body::from(body)).unwrap()
    };
    assert_eq!(send(&state, logout(None)).await.0, StatusCode::FORBIDDEN);
    assert_eq!(
        send(&state, logout(Some("guess"))).await.0,
        StatusCode::FORBIDDEN
    );
    let (status, _, _) = send(&state, get("/admin/v1/cluster", Some(&cookie))).await;
    assert_eq!(status, StatusCode::OK, "a refused sign-out ends nothing");
    let (status, headers, _) = send(&state, logout(Some(&csrf))).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let (status, _, _) = send(&state, get("/admin/v1/cluster", Some(&cookie))).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the session ended at once"
    );
}

#[tokio::test]
async fn the_cluster_view_shows_this_region_healthy_with_version_and_uptime() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path());
    let cookie = sign_in(&state).await;
    let (status, _, body) = send(&state, get("/admin/v1/cluster", Some(&cookie))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v = json_of(&body);
    assert_eq!(v["region"], "h");
    let me = &v["regions"][0];
    assert_eq!(me["name"], "h");
    assert_eq!(me["self"], true);
    assert_eq!(me["health"], "healthy");
    assert_eq!(me["version"], env!("CARGO_PKG_VERSION"));
    assert!(me["uptimeSecs"].is_u64());
    // The same view with an admin bearer token (scripts), and /health carries version/uptime.
    let r = Request::builder()
        .uri("/admin/v1/cluster")
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&state, r).await.0, StatusCode::OK);
    let (_, _, health) = send(&state, get("/health", None)).await;
    assert_eq!(json_of(&health)["version"], env!("CARGO_PKG_VERSION"));
}

fn attrs(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn create(store: &Store, name: &str) -> String {
    match store
        .create(
            "t",
            ResourceKind::User,
            attrs(json!({"userName": name, "active": true})),
        )
        .unwrap()
    {
        Created::New(s) | Created::Replay(s) => s.view["id"].as_str().unwrap().to_string(),
    }
}

fn deactivate(store: &Store, id: &str) {
    store
        .update("t", ResourceKind::User, id, None, &|old| {
            let mut new = old.clone();
            new.insert("active".into(), json!(false));
            Ok((new, vec!["active".into()]))
        })
        .unwrap();
}

#[tokio::test]
async fn a_deactivation_is_pending_until_the_peer_reports_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path());
    let cookie = sign_in(&state).await;
    let id = create(&state.store, "leaver");
    deactivate(&state.store, &id);
    let pending = || async {
        let (status, _, body) =
            send(&state, get("/admin/v1/offboardings/pending", Some(&cookie))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        json_of(&body)
    };
    // No peer: nobody lacks it.
    assert_eq!(pending().await["totalResults"], 0);
    // A peer that reported marks below the deactivation lacks it.
    let mark = state.store.log_hwm()["h"];
    let status = Arc::new(std::sync::Mutex::new(
        json!({"peers": [{"peer": "us", "has": {"h": mark - 1}}]}),
    ));
    assert!(state.replication.set(status.clone()).is_ok());
    let v = pending().await;
    assert_eq!(v["totalResults"], 1, "{v}");
    let p = &v["Resources"][0];
    assert_eq!(p["id"], json!(id));
    assert_eq!(p["action"], "deactivate");
    assert_eq!(p["origin"], "h");
    assert_eq!(p["missing"], json!(["us"]));
    assert!(p["ageMs"].as_i64().unwrap() >= 0);
    // Once the peer reports the position, it is no longer pending.
    *status.lock().unwrap() = json!({"peers": [{"peer": "us", "has": {"h": mark}}]});
    assert_eq!(pending().await["totalResults"], 0);
    let (status, _, body) = send(
        &state,
        get("/admin/v1/offboardings/pending?count=x", Some(&cookie)),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn the_resource_view_finds_by_user_name_and_serves_json_with_its_etag() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path());
    let cookie = sign_in(&state).await;
    let id = create(&state.store, "Alice@Example.com");
    let (status, _, body) = send(
        &state,
        get(
            "/admin/v1/resources/Users?tenant=t&q=alice@example.com",
            Some(&cookie),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v = json_of(&body);
    assert_eq!(v["totalResults"], 1);
    assert_eq!(v["Resources"][0]["id"], json!(id));
    let (_, _, body) = send(
        &state,
        get(
            &format!("/admin/v1/resources/Users?tenant=t&q={id}"),
            Some(&cookie),
        ),
    )
    .await;
    assert_eq!(json_of(&body)["totalResults"], 1, "by id too");
    let (status, _, body) = send(
        &state,
        get(
            &format!("/admin/v1/resources/Users/{id}?tenant=t"),
            Some(&cookie),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v = json_of(&body);
    assert_eq!(v["resource"]["userName"], "Alice@Example.com");
    assert!(v["etag"].as_str().unwrap().starts_with("W/\""), "{v}");
    assert_eq!(v["etag"], v["resource"]["meta"]["version"]);
    for (uri, want) in [
        (
            "/admin/v1/resources/Users/nope?tenant=t",
            StatusCode::NOT_FOUND,
        ),
        ("/admin/v1/resources/Users/x", StatusCode::BAD_REQUEST),
        (
            "/admin/v1/resources/Roles?tenant=t&q=a",
            StatusCode::NOT_FOUND,
        ),
        (
            "/admin/v1/resources/Users?tenant=t",
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (status, _, body) = send(&state, get(uri, Some(&cookie))).await;
        assert_eq!(status, want, "{uri}: {body}");
        assert!(body.contains("\"detail\""), "a SCIM error body: {body}");
    }
}

#[tokio::test]
async fn samples_are_served_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path());
    let cookie = sign_in(&state).await;
    let totals = |n| crate::dashboard::samples::Totals {
        requests: n,
        ..Default::default()
    };
    state.dashboard.samples.record(1_000, totals(0), 0, 0.0);
    state.dashboard.samples.record(11_000, totals(50), 2, 0.5);
    let (status, _, body) = send(&state, get("/admin/v1/samples", Some(&cookie))).await;
    assert_eq!(status, StatusCode::OK);
    let v = json_of(&body);
    assert_eq!(v["intervalSecs"], 10);
    assert_eq!(v["samples"][0]["requestsPerSec"], 5.0);
    assert_eq!(v["samples"][0]["lagChanges"], 2);
}

/// Two stores that create the same userName concurrently: merging b's entries into the
/// region's store indexes a `username-merge` record, which the open stream sends at once.
#[tokio::test]
async fn the_conflict_stream_sends_records_as_they_are_indexed_and_filters_them() {
    use futures_util::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let state = state(dir.path());
    let other = store(other_dir.path(), "b");
    let cookie = sign_in(&state).await;
    let open = |query: &str| {
        let r = get(&format!("/admin/v1/conflicts/stream{query}"), Some(&cookie));
        app(state.clone()).oneshot(r)
    };
    let response = open("").await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    let filtered = open("?rule=delete-wins").await.unwrap();
    let bad = open("?rule=nope").await.unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    create(&state.store, "same");
    let theirs = create(&other, "same");
    for (origin, _) in other.log_hwm() {
        let entries = other.log_read(&origin, 1, 1000, usize::MAX).unwrap();
        state.store.apply_remote(&origin, &entries).unwrap();
    }
    let mut body = response.into_body().into_data_stream();
    let mut text = String::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !text.contains("event: conflict") {
        assert!(std::time::Instant::now() < deadline, "no event: {text:?}");
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(5), body.next())
            .await
            .expect("an event within 5 s")
            .expect("the stream stays open")
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let data = text
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .expect("a data line");
    let record = json_of(data);
    assert_eq!(record["rule"], "username-merge");
    assert_eq!(record["resourceId"], json!(theirs));
    // The filtered stream (delete-wins only) sent nothing but keep-alives.
    let mut filtered = filtered.into_body().into_data_stream();
    let nothing =
        tokio::time::timeout(std::time::Duration::from_millis(600), filtered.next()).await;
    assert!(
        nothing.is_err(),
        "a filtered-out record was sent: {nothing:?}"
    );
}

#[tokio::test]
async fn streams_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_toml(
        &format!(
            "region = \"h\"\ndata_dir = \"{}\"\nadmin_tokens = [{{sha256 = \"{}\"}}]\n\
             [dashboard]\nmax_streams = 1\n",
            dir.path().display(),
            token_hash(ADMIN)
        ),
        "test",
        Vec::new(),
    )
    .unwrap();
    let state = Arc::new(AppState::new(
        Arc::new(store(dir.path(), "h")),
        config,
        HashMap::new(),
    ));
    let bearer = || {
        Request::builder()
            .uri("/admin/v1/conflicts/stream")
            .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
            .body(Body::empty())
            .unwrap()
    };
    let first = app(state.clone()).oneshot(bearer()).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let second = app(state.clone()).oneshot(bearer()).await.unwrap();
    assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE);
    drop(first);
    let third = app(state.clone()).oneshot(bearer()).await.unwrap();
    assert_eq!(third.status(), StatusCode::OK, "the slot came back");
}
