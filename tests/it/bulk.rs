//! `POST /Bulk` (RFC 7644 §3.7) against a real region: bulkId references, failOnErrors, the
//! limits, and per-operation errors.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::harness::Region;

const BULK: &str = "urn:ietf:params:scim:api:messages:2.0:BulkRequest";
const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";

fn bulk(ops: Value) -> Value {
    json!({"schemas": [BULK], "Operations": ops})
}

fn user(bulk_id: &str, name: &str) -> Value {
    json!({"method": "POST", "path": "/Users", "bulkId": bulk_id,
           "data": {"schemas": [USER], "userName": name}})
}

fn statuses(v: &Value) -> Vec<String> {
    v["Operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["status"].as_str().unwrap().to_string())
        .collect()
}

async fn post_bulk(r: &Region, body: Value) -> Value {
    let (s, v) = r.req(Method::POST, "/Bulk", Some(body)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v["schemas"],
        json!(["urn:ietf:params:scim:api:messages:2.0:BulkResponse"])
    );
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bulk_creates_a_user_and_a_group_that_references_it_by_bulk_id() {
    let r = Region::start();
    r.wait_healthy().await;
    let v = post_bulk(
        &r,
        bulk(json!([
            user("u", "bulk-ann"),
            {"method": "POST", "path": "/Groups", "bulkId": "g",
             "data": {"schemas": [GROUP], "displayName": "Bulk team",
                      "members": [{"value": "bulkId:u"}]}},
            {"method": "PATCH", "path": "/Users/bulkId:u",
             "data": {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                      "Operations": [{"op": "replace", "path": "displayName", "value": "Ann"}]}},
        ])),
    )
    .await;
    assert_eq!(statuses(&v), ["201", "201", "200"], "{v}");
    let ops = v["Operations"].as_array().unwrap();
    assert_eq!(ops[0]["bulkId"], "u");
    assert_eq!(ops[0]["method"], "POST");
    assert!(ops[0]["version"].as_str().unwrap().starts_with("W/"));
    let user_loc = ops[0]["location"].as_str().unwrap();
    let group_loc = ops[1]["location"].as_str().unwrap();
    let user_id = user_loc.rsplit('/').next().unwrap();
    let group_id = group_loc.rsplit('/').next().unwrap();
    assert!(user_loc.ends_with(&format!("/scim/v2/Users/{user_id}")));

    // Both read back by id, linked both ways.
    let (s, u) = r.req(Method::GET, &format!("/Users/{user_id}"), None).await;
    assert_eq!(s, StatusCode::OK, "{u}");
    assert_eq!(
        (u["userName"].as_str(), u["displayName"].as_str()),
        (Some("bulk-ann"), Some("Ann"))
    );
    assert_eq!(u["groups"][0]["value"], group_id);
    let (s, g) = r
        .req(Method::GET, &format!("/Groups/{group_id}"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{g}");
    assert_eq!(g["members"].as_array().map(Vec::len), Some(1), "{g}");
    assert_eq!(g["members"][0]["value"], user_id);

    // `version` acts as If-Match: a stale one is 412 for that operation alone; DELETE answers
    // 204 with the location of what it deleted.
    let v = post_bulk(
        &r,
        bulk(json!([
            {"method": "PUT", "path": format!("/Users/{user_id}"), "version": "W/\"stale\"",
             "data": {"schemas": [USER], "userName": "bulk-ann"}},
            {"method": "DELETE", "path": format!("/Groups/{group_id}")},
        ])),
    )
    .await;
    assert_eq!(statuses(&v), ["412", "204"], "{v}");
    assert_eq!(v["Operations"][0]["response"]["status"], "412");
    assert_eq!(v["Operations"][1]["location"], group_loc);
    let (s, _) = r
        .req(Method::GET, &format!("/Groups/{group_id}"), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_on_errors_stops_after_that_many_failures() {
    let r = Region::start();
    r.wait_healthy().await;
    r.create_user("taken").await;
    let mut body = bulk(json!([user("a", "taken"), user("b", "never-made"),]));
    body["failOnErrors"] = json!(1);
    let v = post_bulk(&r, body).await;
    assert_eq!(
        statuses(&v),
        ["409"],
        "the second operation did not run: {v}"
    );
    assert_eq!(v["Operations"][0]["response"]["scimType"], "uniqueness");
    let (_, found) = r
        .req(
            Method::GET,
            "/Users?filter=userName%20eq%20%22never-made%22",
            None,
        )
        .await;
    assert_eq!(found["totalResults"], 0);
    // Without failOnErrors every operation runs.
    let v = post_bulk(&r, bulk(json!([user("a", "taken"), user("b", "made")]))).await;
    assert_eq!(statuses(&v), ["409", "201"], "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn too_many_operations_or_too_large_a_payload_is_413_and_the_limits_are_advertised() {
    let r = Region::start_with(
        &["t1"],
        &[
            ("GEOSCIM_SCIM__BULK_MAX_OPERATIONS", "2"),
            ("GEOSCIM_SCIM__BULK_MAX_PAYLOAD_BYTES", "2048"),
        ],
    );
    r.wait_healthy().await;
    let (_, spc) = r.req(Method::GET, "/ServiceProviderConfig", None).await;
    assert_eq!(
        spc["bulk"],
        json!({"supported": true, "maxOperations": 2, "maxPayloadSize": 2048})
    );
    let (s, v) = r
        .req(
            Method::POST,
            "/Bulk",
            Some(bulk(json!([
                user("a", "a"),
                user("b", "b"),
                user("c", "c")
            ]))),
        )
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert_eq!(v["status"], "413");
    assert!(
        v["detail"].as_str().unwrap().contains("maxOperations"),
        "{v}"
    );
    let big = "x".repeat(3000);
    let (s, v) = r
        .req(Method::POST, "/Bulk", Some(bulk(json!([user("a", &big)]))))
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("maxPayloadSize"),
        "{v}"
    );
    // Nothing of either ran.
    let (_, all) = r.req(Method::GET, "/Users", None).await;
    assert_eq!(all["totalResults"], 0);
    // Bulk is behind the same authentication as every SCIM endpoint.
    let (s, _) = r
        .req_as("wrong-token", Method::POST, "/Bulk", Some(bulk(json!([]))))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_operation_gets_a_scim_error_in_its_own_entry_and_the_rest_run() {
    let r = Region::start();
    r.wait_healthy().await;
    let v = post_bulk(
        &r,
        bulk(json!([
            {"method": "GET", "path": "/Users"},
            {"method": "POST", "path": "/Widgets", "bulkId": "w", "data": {}},
            {"method": "POST", "path": "/Users", "bulkId": "bad",
             "data": {"schemas": [USER], "userName": "x", "noSuchAttribute": 1}},
            {"method": "POST", "path": "/Groups", "bulkId": "g",
             "data": {"schemas": [GROUP], "displayName": "G", "members": [{"value": "bulkId:bad"}]}},
            {"method": "DELETE", "path": "/Users/bulkId:nobody"},
            {"method": "DELETE", "path": "/Users/no-such-id"},
            {"method": "PATCH", "path": "/Users/x", "data": {"Operations": "nope"}},
            "not even an object",
            user("ok", "fine"),
        ])),
    )
    .await;
    assert_eq!(
        statuses(&v),
        ["400", "400", "400", "409", "409", "404", "400", "400", "201"],
        "{v}"
    );
    for op in v["Operations"].as_array().unwrap().iter().take(8) {
        assert_eq!(
            op["response"]["schemas"],
            json!(["urn:ietf:params:scim:api:messages:2.0:Error"]),
            "{op}"
        );
        assert!(
            op["response"]["detail"]
                .as_str()
                .is_some_and(|d| !d.is_empty()),
            "{op}"
        );
    }
    assert!(v["Operations"][3]["response"]["detail"]
        .as_str()
        .unwrap()
        .contains("bulkId:bad"));
    // A body that is not a BulkRequest at all is one 400 for the request.
    let (s, e) = r
        .req(Method::POST, "/Bulk", Some(json!({"Operations": []})))
        .await;
    assert_eq!(
        (s, e["scimType"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalidValue"))
    );
}
