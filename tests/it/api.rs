//! The SCIM API of one region, over real HTTP.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::harness::Region;

const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

fn assert_scim_error(status: StatusCode, body: &Value, want: StatusCode, scim_type: Option<&str>) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["schemas"], json!([ERROR]), "{body}");
    assert_eq!(body["status"], json!(want.as_u16().to_string()), "{body}");
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{body}"
    );
    if let Some(t) = scim_type {
        assert_eq!(body["scimType"], json!(t), "{body}");
    }
}

fn full_user(user_name: &str) -> Value {
    json!({
        "schemas": [USER, ENTERPRISE],
        "userName": user_name,
        "externalId": format!("ext-{user_name}"),
        "name": {"givenName": "Barbara", "familyName": "Jensen"},
        "displayName": "Babs Jensen",
        "active": true,
        "emails": [
            {"value": format!("{user_name}@work.example.com"), "type": "work", "primary": true},
            {"value": format!("{user_name}@home.example.com"), "type": "home"}
        ],
        ENTERPRISE: {"employeeNumber": "701984", "department": "Tour Operations"}
    })
}

#[tokio::test]
async fn user_crud_round_trip_with_location_and_etag() {
    let r = Region::start();
    let resp = r
        .send(
            r.token(),
            Method::POST,
            "/Users",
            Some(full_user("bjensen")),
            &[],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/scim+json"));
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let etag = resp.headers()["etag"].to_str().unwrap().to_string();
    let created: Value = resp.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["meta"]["location"], json!(location));
    assert!(
        location.starts_with("http://127.0.0.1:")
            && location.ends_with(&format!("/scim/v2/Users/{id}"))
    );
    assert_eq!(created["meta"]["version"], json!(etag));
    assert!(etag.starts_with("W/\""));
    assert_eq!(created["meta"]["resourceType"], json!("User"));
    assert_eq!(created[ENTERPRISE]["employeeNumber"], json!("701984"));
    assert_eq!(created["schemas"], json!([USER, ENTERPRISE]));

    let (s, got) = r.req(Method::GET, &format!("/Users/{id}"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(got, created);

    // PUT replaces: attributes left out are removed, read-only ones are ignored.
    let mut replacement = full_user("bjensen");
    replacement["displayName"] = json!("Barbara J.");
    replacement.as_object_mut().unwrap().remove("emails");
    replacement["id"] = json!("ignored-id");
    replacement["meta"] = json!({"created": "1999-01-01T00:00:00Z"});
    let (s, put) = r
        .req(Method::PUT, &format!("/Users/{id}"), Some(replacement))
        .await;
    assert_eq!(s, StatusCode::OK, "{put}");
    assert_eq!(put["id"], json!(id));
    assert_eq!(put["displayName"], json!("Barbara J."));
    assert!(put.get("emails").is_none());
    assert_eq!(put["meta"]["created"], created["meta"]["created"]);
    assert_ne!(put["meta"]["version"], created["meta"]["version"]);

    // A PUT that changes nothing writes nothing: same version.
    let (s, again) = r
        .req(Method::PUT, &format!("/Users/{id}"), Some(put.clone()))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(again["meta"]["version"], put["meta"]["version"]);

    let (s, body) = r.req(Method::DELETE, &format!("/Users/{id}"), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(body, Value::Null);
    let (s, body) = r.req(Method::GET, &format!("/Users/{id}"), None).await;
    assert_scim_error(s, &body, StatusCode::NOT_FOUND, None);
    let (s, body) = r.req(Method::DELETE, &format!("/Users/{id}"), None).await;
    assert_scim_error(s, &body, StatusCode::NOT_FOUND, None);
}

#[tokio::test]
async fn a_second_post_of_a_taken_user_name_answers_409_unless_the_tenant_opts_into_replays() {
    // Tenant t1 has the default policy (RFC 7644 §3.3); t2 opted into idempotent replays.
    let r = Region::start_with(
        &["t1", "t2"],
        &[("GEOSCIM_TENANTS", "{t2 = {idempotent_create = true}}")],
    );
    let token = |tenant: &str| {
        let found = r.tokens.iter().find(|(t, _)| t == tenant);
        found.expect("a token of the tenant").1.clone()
    };
    let post = |tenant: &'static str, body: Value| {
        let token = token(tenant);
        let r = &r;
        async move { r.req_as(&token, Method::POST, "/Users", Some(body)).await }
    };
    let same = json!({"schemas": [USER], "userName": "replay@example.com", "active": true});
    let (s, first) = post("t1", same.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{first}");
    let (s, body) = post("t1", same.clone()).await;
    assert_scim_error(s, &body, StatusCode::CONFLICT, Some("uniqueness"));
    let (s, first2) = post("t2", same.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{first2}");
    for _ in 0..3 {
        let (s, again) = post("t2", same.clone()).await;
        assert_eq!(s, StatusCode::CREATED, "{again}");
        assert_eq!(again["id"], first2["id"]);
        assert_eq!(again["meta"]["version"], first2["meta"]["version"]);
    }
    // Same userName in another case, different payload: taken, for both policies.
    let other = json!({
        "schemas": [USER], "userName": "REPLAY@example.com", "displayName": "Someone else"
    });
    for tenant in ["t1", "t2"] {
        let (s, body) = post(tenant, other.clone()).await;
        assert_scim_error(s, &body, StatusCode::CONFLICT, Some("uniqueness"));
        let (_, list) = r
            .req_as(
                &token(tenant),
                Method::GET,
                "/Users?filter=userName%20eq%20%22replay%40example.com%22",
                None,
            )
            .await;
        assert_eq!(list["totalResults"], json!(1), "{tenant}: {list}");
    }
}

#[tokio::test]
async fn group_display_names_are_unique_in_a_tenant_and_a_filter_finds_the_one() {
    let r = Region::start();
    let group = |name: &str| json!({"schemas": [GROUP], "displayName": name});
    let (s, admins) = r.req(Method::POST, "/Groups", Some(group("Admins"))).await;
    assert_eq!(s, StatusCode::CREATED, "{admins}");
    let (s, body) = r.req(Method::POST, "/Groups", Some(group("ADMINS"))).await;
    assert_scim_error(s, &body, StatusCode::CONFLICT, Some("uniqueness"));
    let (s, ops) = r.req(Method::POST, "/Groups", Some(group("Ops"))).await;
    assert_eq!(s, StatusCode::CREATED, "{ops}");
    let (s, body) = r
        .req(
            Method::PATCH,
            &format!("/Groups/{}", ops["id"].as_str().unwrap()),
            Some(json!({"schemas": [PATCH],
                "Operations": [{"op": "replace", "path": "displayName", "value": "admins"}]})),
        )
        .await;
    assert_scim_error(s, &body, StatusCode::CONFLICT, Some("uniqueness"));
    let (_, list) = r
        .req(
            Method::GET,
            "/Groups?filter=displayName%20eq%20%22admins%22&excludedAttributes=members",
            None,
        )
        .await;
    assert_eq!(list["totalResults"], json!(1), "{list}");
    assert_eq!(list["Resources"][0]["id"], admins["id"]);
}

#[tokio::test]
async fn concurrent_posts_of_one_user_create_it_once_and_the_rest_answer_409() {
    let r = Region::start();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let client = r.client.clone();
        let url = format!("{}/Users", r.scim());
        let token = r.token().to_string();
        tasks.push(tokio::spawn(async move {
            let resp = client
                .post(url)
                .bearer_auth(token)
                .header("content-type", "application/scim+json")
                .body(json!({"schemas": [USER], "userName": "race@example.com"}).to_string())
                .send()
                .await
                .unwrap();
            (resp.status(), resp.json::<Value>().await.unwrap())
        }));
    }
    let mut created = Vec::new();
    for t in tasks {
        let (s, v) = t.await.unwrap();
        if s == StatusCode::CREATED {
            created.push(v["id"].clone());
        } else {
            assert_scim_error(s, &v, StatusCode::CONFLICT, Some("uniqueness"));
        }
    }
    assert_eq!(created.len(), 1, "{created:?}");
    let (_, list) = r
        .req(
            Method::GET,
            "/Users?filter=userName%20eq%20%22race%40example.com%22",
            None,
        )
        .await;
    assert_eq!(list["totalResults"], json!(1), "{list}");
    assert_eq!(list["Resources"][0]["id"], created[0]);
}

#[tokio::test]
async fn rename_keeps_id_and_frees_the_old_name() {
    let r = Region::start();
    let a = r.create_user("alice").await;
    let id = a["id"].as_str().unwrap();
    let (s, v) = r.req(Method::PATCH, &format!("/Users/{id}"), Some(json!({
        "schemas": [PATCH], "Operations": [{"op": "replace", "path": "userName", "value": "alice2"}]
    }))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["id"], json!(id));
    // The old name is free again and gets another id; the new one is taken.
    let b = r.create_user("alice").await;
    assert_ne!(b["id"], json!(id));
    let (s, body) = r.req(Method::PATCH, &format!("/Users/{}", b["id"].as_str().unwrap()), Some(json!({
        "schemas": [PATCH], "Operations": [{"op": "replace", "path": "userName", "value": "ALICE2"}]
    }))).await;
    assert_scim_error(s, &body, StatusCode::CONFLICT, Some("uniqueness"));
}

async fn get(r: &Region, q: &str) -> (StatusCode, Value) {
    r.req(Method::GET, &format!("/Users?{q}"), None).await
}

#[tokio::test]
async fn filters_sorting_paging_and_projection() {
    let r = Region::start();
    for (i, name) in ["carol", "alice", "bob", "dave", "erin"].iter().enumerate() {
        let (s, v) = r
            .req(
                Method::POST,
                "/Users",
                Some(json!({
                    "schemas": [USER], "userName": name, "displayName": format!("User {i}"),
                    "active": i % 2 == 0,
                    "emails": [{"value": format!("{name}@x.example"), "type": "work"}],
                })),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let names = |v: &Value| -> Vec<String> {
        v["Resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["userName"].as_str().unwrap_or("").to_string())
            .collect()
    };
    let (s, v) = get(&r, "filter=userName%20eq%20%22ALICE%22").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(names(&v), vec!["alice"]);
    let (_, v) = get(
        &r,
        "filter=userName%20sw%20%22b%22%20or%20userName%20ew%20%22n%22&sortBy=userName",
    )
    .await;
    assert_eq!(names(&v), vec!["bob", "erin"]);
    let (_, v) = get(
        &r,
        "filter=emails%5Btype%20eq%20%22work%22%20and%20value%20co%20%22dave%22%5D",
    )
    .await;
    assert_eq!(names(&v), vec!["dave"]);
    let (_, v) = get(&r, "filter=active%20eq%20true%20and%20not%20(userName%20eq%20%22carol%22)&sortBy=userName&sortOrder=descending").await;
    assert_eq!(names(&v), vec!["erin", "bob"]);
    let (_, v) = get(&r, "filter=userName%20eq%20%22nobody%22").await;
    assert_eq!(v["totalResults"], json!(0));
    assert_eq!(v["Resources"], json!([]));
    // Paging.
    let (_, v) = get(&r, "sortBy=userName&startIndex=2&count=2").await;
    assert_eq!(v["totalResults"], json!(5));
    assert_eq!(v["startIndex"], json!(2));
    assert_eq!(v["itemsPerPage"], json!(2));
    assert_eq!(names(&v), vec!["bob", "carol"]);
    let (_, v) = get(&r, "count=0").await;
    assert_eq!(v["totalResults"], json!(5));
    assert_eq!(v["Resources"], json!([]));
    // Projection.
    let (_, v) = get(
        &r,
        "filter=userName%20eq%20%22bob%22&attributes=displayName",
    )
    .await;
    let u = &v["Resources"][0];
    assert_eq!(u["displayName"], json!("User 2"));
    assert!(u.get("id").is_some(), "id is returned always");
    assert!(u.get("emails").is_none(), "{u}");
    let (_, v) = get(
        &r,
        "filter=userName%20eq%20%22bob%22&excludedAttributes=emails",
    )
    .await;
    assert!(v["Resources"][0].get("emails").is_none());
    assert_eq!(v["Resources"][0]["userName"], json!("bob"));
    // POST /.search, per type and at the root.
    let (s, v) = r
        .req(
            Method::POST,
            "/Users/.search",
            Some(json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
                "filter": "userName eq \"erin\"", "attributes": ["userName"]
            })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(names(&v), vec!["erin"]);
    let (s, v) = r
        .req(
            Method::POST,
            "/.search",
            Some(json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
                "filter": "userName eq \"erin\""
            })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["totalResults"], json!(1));
    // Bad filters are invalidFilter.
    for bad in [
        "userName%20eq",
        "userName%20zz%20%22a%22",
        "(userName%20eq%20%22a%22",
        "userName%20eq%20%22a%22%20garbage",
    ] {
        let (s, v) = get(&r, &format!("filter={bad}")).await;
        assert_scim_error(s, &v, StatusCode::BAD_REQUEST, Some("invalidFilter"));
    }
    let deep = format!("filter={}userName%20pr{}", "(".repeat(100), ")".repeat(100));
    let (s, v) = get(&r, &deep).await;
    assert_scim_error(s, &v, StatusCode::BAD_REQUEST, Some("invalidFilter"));
}

#[tokio::test]
async fn etags_give_304_and_412() {
    let r = Region::start();
    let u = r.create_user("etag@example.com").await;
    let id = u["id"].as_str().unwrap();
    let version = u["meta"]["version"].as_str().unwrap();
    let resp = r
        .send(
            r.token(),
            Method::GET,
            &format!("/Users/{id}"),
            None,
            &[("if-none-match", version)],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    let patch = json!({"schemas": [PATCH], "Operations": [{"op": "replace", "path": "displayName", "value": "x"}]});
    let resp = r
        .send(
            r.token(),
            Method::PATCH,
            &format!("/Users/{id}"),
            Some(patch.clone()),
            &[("if-match", "W/\"stale\"")],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::PRECONDITION_FAILED);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["schemas"], json!([ERROR]));
    let resp = r
        .send(
            r.token(),
            Method::PATCH,
            &format!("/Users/{id}"),
            Some(patch),
            &[("if-match", version)],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = r
        .send(
            r.token(),
            Method::DELETE,
            &format!("/Users/{id}"),
            None,
            &[("if-match", version)],
        )
        .await;
    assert_eq!(
        resp.status(),
        StatusCode::PRECONDITION_FAILED,
        "old version must not delete"
    );
}

#[tokio::test]
async fn bad_input_gets_scim_errors_and_changes_nothing() {
    let r = Region::start_with(&["t1"], &[("GEOSCIM_HTTP__MAX_BODY_BYTES", "4096")]);
    let u = r.create_user("errors@example.com").await;
    let id = u["id"].as_str().unwrap().to_string();
    // Malformed JSON.
    let resp = r
        .client
        .post(format!("{}/Users", r.scim()))
        .bearer_auth(r.token())
        .header("content-type", "application/scim+json")
        .body("{\"userName\": ")
        .send()
        .await
        .unwrap();
    let s = resp.status();
    let v: Value = resp.json().await.unwrap();
    assert_scim_error(s, &v, StatusCode::BAD_REQUEST, Some("invalidSyntax"));
    // Too large.
    let big = json!({"schemas": [USER], "userName": "big", "displayName": "x".repeat(10_000)});
    let (s, v) = r.req(Method::POST, "/Users", Some(big)).await;
    assert_scim_error(s, &v, StatusCode::PAYLOAD_TOO_LARGE, None);
    // Missing userName, wrong type.
    let (s, v) = r
        .req(
            Method::POST,
            "/Users",
            Some(json!({"schemas": [USER], "displayName": "x"})),
        )
        .await;
    assert_scim_error(s, &v, StatusCode::BAD_REQUEST, None);
    let (s, v) = r
        .req(
            Method::POST,
            "/Users",
            Some(json!({"schemas": [USER], "userName": "x", "active": "maybe"})),
        )
        .await;
    assert_scim_error(s, &v, StatusCode::BAD_REQUEST, None);
    // Bad PATCH path; a failing second op leaves the first unapplied.
    let (s, v) = r.req(Method::PATCH, &format!("/Users/{id}"), Some(json!({
        "schemas": [PATCH], "Operations": [{"op": "replace", "path": "emails[type eq", "value": "x"}]
    }))).await;
    assert_scim_error(s, &v, StatusCode::BAD_REQUEST, Some("invalidPath"));
    let (s, v) = r
        .req(
            Method::PATCH,
            &format!("/Users/{id}"),
            Some(json!({
                "schemas": [PATCH], "Operations": [
                    {"op": "replace", "path": "displayName", "value": "changed"},
                    {"op": "replace", "path": "id", "value": "nope"}
                ]
            })),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (_, after) = r.req(Method::GET, &format!("/Users/{id}"), None).await;
    assert!(
        after.get("displayName").is_none(),
        "half-applied PATCH: {after}"
    );
    assert_eq!(after["meta"]["version"], u["meta"]["version"]);
    // Unknown endpoint and method.
    let (s, v) = r.req(Method::GET, "/Nope", None).await;
    assert_scim_error(s, &v, StatusCode::NOT_FOUND, None);
    let (s, v) = r.req(Method::DELETE, "/Users", None).await;
    assert_scim_error(s, &v, StatusCode::METHOD_NOT_ALLOWED, None);
    for path in ["/ServiceProviderConfig", "/Schemas", "/ResourceTypes"] {
        let (s, v) = r.req(Method::POST, path, Some(json!({}))).await;
        assert_scim_error(s, &v, StatusCode::METHOD_NOT_ALLOWED, None);
    }
    // Bad paging parameter.
    let (s, v) = r.req(Method::GET, "/Users?startIndex=abc", None).await;
    assert_scim_error(s, &v, StatusCode::BAD_REQUEST, None);
}

#[tokio::test]
async fn tokens_are_required_and_tenants_are_isolated() {
    let r = Region::start_with(&["acme", "globex"], &[]);
    let acme = r.tokens[0].1.clone();
    let globex = r.tokens[1].1.clone();
    let resp = r
        .client
        .get(format!("{}/Users", r.scim()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let (s, v) = r.req_as("wrong", Method::GET, "/Users", None).await;
    assert_scim_error(s, &v, StatusCode::UNAUTHORIZED, None);

    let (s, a) = r
        .req_as(
            &acme,
            Method::POST,
            "/Users",
            Some(json!({"schemas": [USER], "userName": "shared@x.com"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let id = a["id"].as_str().unwrap();
    // The same userName is free in the other tenant (and gets its own id).
    let (s, g) = r
        .req_as(
            &globex,
            Method::POST,
            "/Users",
            Some(json!({"schemas": [USER], "userName": "shared@x.com", "displayName": "G"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{g}");
    assert_ne!(g["id"], a["id"]);
    // Globex cannot read, list, filter, patch or delete acme's user.
    let (s, _) = r
        .req_as(&globex, Method::GET, &format!("/Users/{id}"), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, list) = r.req_as(&globex, Method::GET, "/Users", None).await;
    assert_eq!(list["totalResults"], json!(1));
    assert_eq!(list["Resources"][0]["id"], g["id"]);
    let (_, list) = r
        .req_as(
            &globex,
            Method::GET,
            "/Users?filter=displayName%20pr%20or%20userName%20pr",
            None,
        )
        .await;
    assert_eq!(list["totalResults"], json!(1));
    let (s, _) = r.req_as(&globex, Method::PATCH, &format!("/Users/{id}"), Some(json!({
        "schemas": [PATCH], "Operations": [{"op": "replace", "path": "active", "value": false}]
    }))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = r
        .req_as(&globex, Method::DELETE, &format!("/Users/{id}"), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, still) = r
        .req_as(&acme, Method::GET, &format!("/Users/{id}"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(still, a);
}

#[tokio::test]
async fn groups_members_and_computed_user_groups() {
    let r = Region::start();
    let u1 = r.create_user("m1").await;
    let u2 = r.create_user("m2").await;
    let (id1, id2) = (u1["id"].as_str().unwrap(), u2["id"].as_str().unwrap());
    let (s, g) = r
        .req(
            Method::POST,
            "/Groups",
            Some(json!({
                "schemas": [GROUP], "displayName": "Engineering",
                "members": [{"value": id1, "type": "User"}]
            })),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{g}");
    let gid = g["id"].as_str().unwrap();
    let (s, g) = r.req(Method::PATCH, &format!("/Groups/{gid}"), Some(json!({
        "schemas": [PATCH], "Operations": [{"op": "Add", "path": "members", "value": [{"value": id2}]}]
    }))).await;
    assert_eq!(s, StatusCode::OK, "{g}");
    assert_eq!(g["members"].as_array().unwrap().len(), 2);
    let (_, user) = r.req(Method::GET, &format!("/Users/{id2}"), None).await;
    assert_eq!(user["groups"][0]["value"], json!(gid));
    assert_eq!(user["groups"][0]["display"], json!("Engineering"));
    // Entra reads groups without members; filters by displayName.
    let (_, list) = r
        .req(
            Method::GET,
            "/Groups?filter=displayName%20eq%20%22engineering%22&excludedAttributes=members",
            None,
        )
        .await;
    assert_eq!(list["totalResults"], json!(1));
    assert!(list["Resources"][0].get("members").is_none());
    // Entra removes listed members only.
    let (s, g) = r.req(Method::PATCH, &format!("/Groups/{gid}"), Some(json!({
        "schemas": [PATCH], "Operations": [{"op": "Remove", "path": "members", "value": [{"value": id1}]}]
    }))).await;
    assert_eq!(s, StatusCode::OK, "{g}");
    assert_eq!(g["members"].as_array().unwrap().len(), 1);
    assert_eq!(g["members"][0]["value"], json!(id2));
    let (_, user1) = r.req(Method::GET, &format!("/Users/{id1}"), None).await;
    assert!(user1.get("groups").is_none(), "{user1}");
    // A deleted member is never listed.
    r.req(Method::DELETE, &format!("/Users/{id2}"), None).await;
    let (_, g) = r.req(Method::GET, &format!("/Groups/{gid}"), None).await;
    assert!(g.get("members").is_none(), "{g}");
    // members[value eq ...] filter on groups.
    let (_, g2) = r
        .req(
            Method::POST,
            "/Groups",
            Some(json!({"schemas": [GROUP], "displayName": "Ops", "members": [{"value": id1}]})),
        )
        .await;
    let (_, list) = r
        .req(
            Method::GET,
            &format!("/Groups?filter=members%5Bvalue%20eq%20%22{id1}%22%5D"),
            None,
        )
        .await;
    assert_eq!(list["totalResults"], json!(1));
    assert_eq!(list["Resources"][0]["id"], g2["id"]);
}

#[tokio::test]
async fn entra_and_okta_shaped_requests() {
    let r = Region::start();
    // Entra: POST, lookups by filter, capitalised ops, string booleans, dotted keys.
    let (s, v) = r
        .req(
            Method::GET,
            "/Users?filter=userName%20eq%20%22entra%40contoso.com%22",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["totalResults"], json!(0));
    let (s, u) = r.req(Method::POST, "/Users", Some(json!({
        "schemas": [USER, ENTERPRISE], "externalId": "e-1", "userName": "entra@contoso.com", "active": true,
        "displayName": "Entra User", "emails": [{"primary": true, "type": "work", "value": "entra@contoso.com"}],
        "name": {"formatted": "Entra User", "familyName": "User", "givenName": "Entra"},
        ENTERPRISE: {"department": "Sales"}
    }))).await;
    assert_eq!(s, StatusCode::CREATED, "{u}");
    let id = u["id"].as_str().unwrap();
    let (_, v) = r
        .req(
            Method::GET,
            "/Users?filter=externalId%20eq%20%22e-1%22",
            None,
        )
        .await;
    assert_eq!(v["totalResults"], json!(1));
    let (s, v) = r.req(Method::PATCH, &format!("/Users/{id}"), Some(json!({
        "schemas": [PATCH], "Operations": [
            {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "new@contoso.com"},
            {"op": "Replace", "value": {"name.givenName": "Ent", "displayName": "Ent User"}},
            {"op": "Add", "path": format!("{ENTERPRISE}:department"), "value": "Marketing"}
        ]
    }))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["emails"][0]["value"], json!("new@contoso.com"));
    assert_eq!(v["name"]["givenName"], json!("Ent"));
    assert_eq!(v[ENTERPRISE]["department"], json!("Marketing"));
    let (_, v) = r
        .req(
            Method::GET,
            "/Users?filter=emails%20eq%20%22new%40contoso.com%22",
            None,
        )
        .await;
    assert_eq!(v["totalResults"], json!(1));
    let (s, v) = r.req(Method::PATCH, &format!("/Users/{id}"), Some(json!({
        "schemas": [PATCH], "Operations": [{"op": "Replace", "path": "active", "value": "False"}]
    }))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["active"], json!(false));
    let (s, _) = r.req(Method::DELETE, &format!("/Users/{id}"), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);

    // Okta: lookup with count=100, create, PUT profile update, deactivate without path.
    let (_, v) = r
        .req(
            Method::GET,
            "/Users?filter=userName%20eq%20%22okta%40example.com%22&startIndex=1&count=100",
            None,
        )
        .await;
    assert_eq!(v["totalResults"], json!(0));
    let (s, u) = r.req(Method::POST, "/Users", Some(json!({
        "schemas": [USER], "userName": "okta@example.com", "name": {"givenName": "Okta", "familyName": "User"},
        "emails": [{"primary": true, "value": "okta@example.com", "type": "work"}], "displayName": "Okta User",
        "locale": "en-US", "externalId": "00u1", "groups": [], "password": "S3cret!", "active": true
    }))).await;
    assert_eq!(s, StatusCode::CREATED, "{u}");
    assert!(u.get("password").is_none(), "password is never returned");
    let id = u["id"].as_str().unwrap();
    let mut put = u.clone();
    put["name"]["givenName"] = json!("Okta2");
    let (s, v) = r.req(Method::PUT, &format!("/Users/{id}"), Some(put)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["name"]["givenName"], json!("Okta2"));
    let (s, v) = r
        .req(
            Method::PATCH,
            &format!("/Users/{id}"),
            Some(json!({
                "schemas": [PATCH], "Operations": [{"op": "replace", "value": {"active": false}}]
            })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["active"], json!(false));
    assert_eq!(
        v["userName"],
        json!("okta@example.com"),
        "PATCH answers the full resource"
    );
}

#[tokio::test]
async fn discovery_documents_are_complete() {
    let r = Region::start();
    let (s, spc) = r.req(Method::GET, "/ServiceProviderConfig", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(spc["patch"]["supported"], json!(true));
    assert_eq!(spc["filter"]["maxResults"], json!(1000));
    let (_, schemas) = r.req(Method::GET, "/Schemas", None).await;
    let ids: Vec<&str> = schemas["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&USER) && ids.contains(&ENTERPRISE) && ids.contains(&GROUP),
        "{ids:?}"
    );
    let (s, user) = r.req(Method::GET, &format!("/Schemas/{USER}"), None).await;
    assert_eq!(s, StatusCode::OK);
    let user_name = user["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "userName")
        .unwrap();
    assert_eq!(user_name["uniqueness"], json!("server"));
    assert_eq!(user_name["caseExact"], json!(false));
    assert_eq!(user_name["required"], json!(true));
    let (s, rt) = r.req(Method::GET, "/ResourceTypes/User", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(rt["endpoint"], json!("/Users"));
    let (s, v) = r.req(Method::GET, "/Schemas/urn:nope", None).await;
    assert_scim_error(s, &v, StatusCode::NOT_FOUND, None);
}

#[tokio::test]
async fn health_and_metrics() {
    let r = Region::start();
    let resp = r
        .client
        .get(format!("{}/health", r.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let h: Value = resp.json().await.unwrap();
    assert_eq!(h["checks"]["storage"], json!("ok"));
    r.create_user("metrics@example.com").await;
    let text = r.metrics().await;
    assert!(text.contains("geoscim_http_requests_total{route=\"/scim/v2/Users\",method=\"POST\",status=\"201\"} 1"), "{text}");
    assert!(
        text.contains("geoscim_http_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(text.contains("geoscim_http_in_flight"), "{text}");
    assert!(text.contains("geoscim_http_shed_total"), "{text}");
}

#[tokio::test]
async fn overload_sheds_with_503_and_retry_after() {
    let r = Region::start_with(
        &["t1"],
        &[
            ("GEOSCIM_HTTP__MAX_IN_FLIGHT", "2"),
            ("GEOSCIM_HTTP__RETRY_AFTER_SECS", "3"),
        ],
    );
    let mut tasks = Vec::new();
    for i in 0..64 {
        let client = r.client.clone();
        let url = format!("{}/Users", r.scim());
        let token = r.token().to_string();
        tasks.push(tokio::spawn(async move {
            let resp = client
                .post(url)
                .bearer_auth(token)
                .header("content-type", "application/scim+json")
                .body(json!({"schemas": [USER], "userName": format!("load{i}")}).to_string())
                .send()
                .await
                .unwrap();
            let retry = resp
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            (resp.status(), retry)
        }));
    }
    let (mut created, mut shed) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            (StatusCode::CREATED, _) => created += 1,
            (StatusCode::SERVICE_UNAVAILABLE, retry) => {
                assert_eq!(retry.as_deref(), Some("3"));
                shed += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(shed > 0 && created > 0, "created {created}, shed {shed}");
    // Shed requests wrote nothing: exactly the created ones exist.
    let (_, list) = r.req(Method::GET, "/Users?count=0", None).await;
    assert_eq!(list["totalResults"], json!(created));
}

#[tokio::test]
async fn a_tenants_sticky_attribute_is_reasserted_when_restrictive_and_bad_names_stop_the_region() {
    let sticky = "{t1 = {sticky = [{attribute = \"userType\", restrictive = [\"Terminated\"]}, \
                  {attribute = \"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:organization\", \
                  restrictive = [\"Offboarded\"]}]}}";
    let r = Region::start_with(&["t1"], &[("GEOSCIM_TENANTS", sticky)]);
    let user = |user_type: &str, org: &str| {
        json!({"schemas": [USER, ENTERPRISE], "userName": "sticky@example.com",
               "userType": user_type, ENTERPRISE: {"organization": org}})
    };
    let (s, created) = r
        .req(Method::POST, "/Users", Some(user("Employee", "Acme")))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let path = format!("/Users/{}", created["id"].as_str().unwrap());
    // An unchanged, non-restrictive PUT writes nothing: same version.
    let (s, same) = r
        .req(Method::PUT, &path, Some(user("Employee", "Acme")))
        .await;
    assert_eq!(s, StatusCode::OK, "{same}");
    assert_eq!(same["meta"]["version"], created["meta"]["version"]);
    // Restrictive values, then the same PUT again: each is written (a new version), so a
    // concurrent reversal elsewhere cannot win against it.
    let mut versions = vec![created["meta"]["version"].clone()];
    for (user_type, org) in [
        ("Terminated", "Acme"),
        ("terminated", "Acme"),
        ("Employee", "Offboarded"),
        ("Employee", "Offboarded"),
    ] {
        let (s, v) = r.req(Method::PUT, &path, Some(user(user_type, org))).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["userType"], json!(user_type));
        assert!(
            !versions.contains(&v["meta"]["version"]),
            "{user_type}/{org}: not rewritten"
        );
        versions.push(v["meta"]["version"].clone());
    }
    // PATCH of the restrictive value: written even though unchanged.
    let (s, v) = r
        .req(
            Method::PATCH,
            &path,
            Some(json!({"schemas": [PATCH], "Operations": [{"op": "replace",
                "path": format!("{ENTERPRISE}:organization"), "value": "Offboarded"}]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(!versions.contains(&v["meta"]["version"]));

    // A name that is not a single-valued User attribute stops the region and names the entry.
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_geoscim"))
        .args(["serve", "--config"])
        .arg(r.config.clone())
        .env("GEOSCIM_DATA_DIR", dir.path())
        .env("GEOSCIM_HTTP__LISTEN", "127.0.0.1:0")
        .env(
            "GEOSCIM_TENANTS",
            "{t1 = {sticky = [{attribute = \"emails\", restrictive = [\"x\"]}]}}",
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tenants.t1.sticky[0].attribute") && err.contains("single-valued"),
        "{err}"
    );
}
