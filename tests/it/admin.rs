//! The admin API (`/admin/v1`) and `geoscim conflicts`, against a real region.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::harness::Region;

const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A region with tenant `t1` and the admin token [`ADMIN_TOKEN`].
fn region() -> Region {
    let admin = crate::harness::admin_tokens_toml(ADMIN_TOKEN);
    Region::start_with(&["t1"], &[("GEOSCIM_ADMIN_TOKENS", &admin)])
}

/// GET an admin path with an optional token: status, parsed body and content type.
async fn admin_get(r: &Region, path: &str, token: Option<&str>) -> (StatusCode, Value, String) {
    let mut b = r.client.get(format!("{}/admin/v1{path}", r.url));
    if let Some(t) = token {
        b = b.bearer_auth(t);
    }
    let resp = b.send().await.expect("request");
    let status = resp.status();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let text = resp.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body, ct)
}

fn assert_error(status: StatusCode, body: &Value, want: StatusCode, scim_type: Option<&str>) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["schemas"], json!([ERROR]), "{body}");
    assert_eq!(body["status"], json!(want.as_u16().to_string()), "{body}");
    if let Some(t) = scim_type {
        assert_eq!(body["scimType"], json!(t), "{body}");
    }
}

#[tokio::test]
async fn admin_api_accepts_only_admin_tokens_and_the_scim_api_refuses_them() {
    let r = region();
    let (s, body, ct) = admin_get(&r, "/conflicts", Some(ADMIN_TOKEN)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(ct.starts_with("application/json"), "{ct}");

    let (s, body, _) = admin_get(&r, "/conflicts", Some(r.token())).await;
    assert_error(s, &body, StatusCode::UNAUTHORIZED, None);
    let (s, body, _) = admin_get(&r, "/conflicts", None).await;
    assert_error(s, &body, StatusCode::UNAUTHORIZED, None);
    // Unknown admin paths do not tell an unauthenticated client what exists.
    let (s, body, _) = admin_get(&r, "/nothing-here", None).await;
    assert_error(s, &body, StatusCode::UNAUTHORIZED, None);
    let (s, body, _) = admin_get(&r, "/nothing-here", Some(ADMIN_TOKEN)).await;
    assert_error(s, &body, StatusCode::NOT_FOUND, None);

    // The admin token is no tenant's token.
    let (s, body) = r.req_as(ADMIN_TOKEN, Method::GET, "/Users", None).await;
    assert_error(s, &body, StatusCode::UNAUTHORIZED, None);
}

#[tokio::test]
async fn conflicts_page_is_empty_and_filters_are_validated() {
    let r = region();
    let (s, body, _) = admin_get(&r, "/conflicts", Some(ADMIN_TOKEN)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"totalResults": 0, "startIndex": 1, "itemsPerPage": 0, "Resources": []})
    );

    let ok = "/conflicts?tenant=t1&rule=sticky-deactivation&resource=u1\
              &since=2025-01-01T00:00:00Z&until=2026-01-01T00:00:00%2B02:00&startIndex=3&count=5000";
    let (s, body, _) = admin_get(&r, ok, Some(ADMIN_TOKEN)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["startIndex"], 3);
    assert_eq!(body["totalResults"], 0);

    let (s, body, _) = admin_get(&r, "/conflicts?rule=last-writer-wins", Some(ADMIN_TOKEN)).await;
    assert_error(s, &body, StatusCode::BAD_REQUEST, Some("invalidFilter"));
    assert!(
        body["detail"].as_str().unwrap().contains("delete-wins"),
        "{body}"
    );
    for bad in [
        "since=yesterday",
        "until=2025-13-01T00:00:00Z",
        "since=2025-01-01",
    ] {
        let (s, body, _) = admin_get(&r, &format!("/conflicts?{bad}"), Some(ADMIN_TOKEN)).await;
        assert_error(s, &body, StatusCode::BAD_REQUEST, Some("invalidFilter"));
    }
    let (s, body, _) = admin_get(&r, "/conflicts?count=many", Some(ADMIN_TOKEN)).await;
    assert_error(s, &body, StatusCode::BAD_REQUEST, None);
}

/// The history as (action, attributes) pairs, after checking every entry's region, time and
/// change: an Automerge change hash, or for a change of memberships only (members are records
/// of their own), the write's `seq@region`.
fn actions(body: &Value) -> Vec<(String, Vec<String>)> {
    body["history"]
        .as_array()
        .unwrap_or_else(|| panic!("no history: {body}"))
        .iter()
        .map(|e| {
            assert_eq!(e["region"], "local", "{e}");
            let at = e["at"].as_str().unwrap();
            assert!(at.starts_with("20") && at.ends_with('Z'), "{e}");
            let change = e["change"].as_str().unwrap();
            let dot = change
                .split_once('@')
                .is_some_and(|(seq, region)| seq.parse::<u64>().is_ok() && region == "local");
            assert!(change.len() == 64 || dot, "{e}");
            let attrs = e["attributes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_string())
                .collect();
            (e["action"].as_str().unwrap().to_string(), attrs)
        })
        .collect()
}

#[tokio::test]
async fn history_lists_create_update_and_delete_with_attributes_and_region() {
    let r = region();
    let user = r.create_user("bjensen").await;
    let id = user["id"].as_str().unwrap().to_string();
    let (s, v) = r
        .patch_user(&id, "replace", "displayName", json!("Babs"))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = r.req(Method::DELETE, &format!("/Users/{id}"), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");

    let (s, body, _) = admin_get(
        &r,
        &format!("/resources/Users/{id}/history?tenant=t1"),
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["resourceType"], "User");
    assert_eq!(body["id"], json!(id));
    assert_eq!(body["tenant"], "t1");
    let got = actions(&body);
    assert_eq!(got.len(), 3, "{body}");
    assert_eq!(got[0].0, "create");
    for a in ["userName", "active"] {
        assert!(got[0].1.iter().any(|x| x == a), "{a} not in {body}");
    }
    assert_eq!(
        got[1],
        ("update".to_string(), vec!["displayName".to_string()])
    );
    assert_eq!(got[2], ("delete".to_string(), vec![]));
    let times: Vec<&str> = body["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["at"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");

    // The type is case-insensitive, singular or plural.
    let (s, same, _) = admin_get(
        &r,
        &format!("/resources/user/{id}/history?tenant=t1"),
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(same, body);

    // tenant is required; another tenant, an unknown id or type is 404; tenant tokens get 401.
    let path = format!("/resources/Users/{id}/history");
    let (s, v, _) = admin_get(&r, &path, Some(ADMIN_TOKEN)).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, Some("invalidValue"));
    let (s, v, _) = admin_get(&r, &format!("{path}?tenant=t2"), Some(ADMIN_TOKEN)).await;
    assert_error(s, &v, StatusCode::NOT_FOUND, None);
    let (s, v, _) = admin_get(
        &r,
        "/resources/Users/nope/history?tenant=t1",
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_error(s, &v, StatusCode::NOT_FOUND, None);
    let (s, v, _) = admin_get(
        &r,
        &format!("/resources/Roles/{id}/history?tenant=t1"),
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_error(s, &v, StatusCode::NOT_FOUND, None);
    let (s, v, _) = admin_get(&r, &format!("{path}?tenant=t1"), Some(r.token())).await;
    assert_error(s, &v, StatusCode::UNAUTHORIZED, None);
}

#[tokio::test]
async fn group_history_names_members_by_member_path() {
    let r = region();
    let u1 = r.create_user("member-one").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let u2 = r.create_user("member-two").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, g) = r
        .req(
            Method::POST,
            "/Groups",
            Some(json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                "displayName": "Admins",
                "members": [{"value": u1}]
            })),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{g}");
    let gid = g["id"].as_str().unwrap().to_string();
    let (s, v) = r
        .req(
            Method::PATCH,
            &format!("/Groups/{gid}"),
            Some(json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [
                    {"op": "add", "path": "members", "value": [{"value": u2}]},
                    {"op": "remove", "path": format!("members[value eq \"{u1}\"]")}
                ]
            })),
        )
        .await;
    assert!(s.is_success(), "{v}");

    let (s, body, _) = admin_get(
        &r,
        &format!("/resources/groups/{gid}/history?tenant=t1"),
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["resourceType"], "Group");
    let got = actions(&body);
    assert_eq!(got.len(), 2, "{body}");
    assert_eq!(got[0].0, "create");
    assert!(got[0].1.contains(&"displayName".to_string()), "{body}");
    assert!(
        got[0].1.contains(&format!("members[value eq \"{u1}\"]")),
        "{body}"
    );
    let mut want = vec![
        format!("members[value eq \"{u1}\"]"),
        format!("members[value eq \"{u2}\"]"),
    ];
    want.sort();
    assert_eq!(got[1], ("update".to_string(), want), "{body}");
}

/// Run `geoscim conflicts` with these arguments: (success, stdout, stderr).
fn conflicts_cli(args: &[&str], env_token: Option<&str>) -> (bool, String, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_geoscim"));
    cmd.arg("conflicts")
        .args(args)
        .env_remove("GEOSCIM_ADMIN_TOKEN");
    if let Some(t) = env_token {
        cmd.env("GEOSCIM_ADMIN_TOKEN", t);
    }
    let out = cmd.output().expect("run geoscim conflicts");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn conflicts_command_prints_json_or_a_table_and_fails_on_a_tenant_token() {
    let r = region();
    let url = r.url.clone();
    let tenant_token = r.token().to_string();
    let (json_run, table_run, refused, bad_rule) = tokio::task::spawn_blocking(move || {
        (
            conflicts_cli(
                &[
                    "--url",
                    &url,
                    "--token",
                    ADMIN_TOKEN,
                    "--tenant",
                    "t1",
                    "--json",
                ],
                None,
            ),
            conflicts_cli(&["--url", &url, "--count", "10"], Some(ADMIN_TOKEN)),
            conflicts_cli(&["--url", &url, "--token", &tenant_token], None),
            conflicts_cli(&["--url", &url, "--rule", "nope"], Some(ADMIN_TOKEN)),
        )
    })
    .await
    .unwrap();

    let (ok, stdout, stderr) = json_run;
    assert!(ok, "stdout: {stdout}\nstderr: {stderr}");
    let page: Value = serde_json::from_str(&stdout).expect("JSON on stdout");
    assert_eq!(page["totalResults"], 0, "{page}");
    assert_eq!(page["Resources"], json!([]), "{page}");

    let (ok, stdout, stderr) = table_run;
    assert!(ok, "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(stdout, "no conflicts\n0 of 0 conflicts\n");

    let (ok, stdout, stderr) = refused;
    assert!(!ok, "a tenant token must not work: {stdout}");
    assert!(stderr.contains("401"), "{stderr}");

    let (ok, _, stderr) = bad_rule;
    assert!(!ok);
    assert!(stderr.contains("unknown rule"), "{stderr}");
}
