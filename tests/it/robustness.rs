//! Bad input never gets a 5xx: random bodies, filters, paths and PATCH operations against a live
//! region, bounded in count. Every answer is a 2xx/3xx or a SCIM error with a detail.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::harness::Region;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-zA-Z0-9 @.\\[\\]\"=:_-]{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("userName"),
            Just("emails"),
            Just("active"),
            Just("members"),
            Just("name"),
            Just("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"),
            Just("True")
        ]
        .prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("userName".to_string()),
                        Just("emails".to_string()),
                        Just("active".to_string()),
                        Just("schemas".to_string()),
                        Just("op".to_string()),
                        Just("path".to_string()),
                        Just("value".to_string()),
                        Just("Operations".to_string()),
                        Just("members".to_string()),
                        "[a-zA-Z.:\\[\\] ]{1,10}"
                    ],
                    inner
                ),
                0..5
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn check(status: StatusCode, body: &Value, what: &str) {
    assert!(!status.is_server_error(), "{what} -> {status}: {body}");
    if status.is_client_error() {
        assert!(
            body["detail"].as_str().is_some(),
            "{what} -> {status} without a SCIM detail: {body}"
        );
    }
}

#[tokio::test]
async fn random_requests_never_get_a_server_error() {
    let r = Region::start();
    let user = r.create_user("robust@example.com").await;
    let id = user["id"].as_str().unwrap().to_string();
    let (_, group) = r
        .req(Method::POST, "/Groups", Some(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "G"})))
        .await;
    let gid = group["id"].as_str().unwrap().to_string();

    // A fixed seed: the same 300 requests every run (a failure names the request).
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    );
    let mut cases: Vec<(Value, String, u8)> = Vec::new();
    let strategy = (json_value(), "[ -~]{0,40}".prop_map(|s: String| s), 0u8..6);
    for _ in 0..300 {
        cases.push(strategy.new_tree(&mut runner).unwrap().current());
    }
    let (mut ok, mut rejected) = (0, 0);
    for (body, text, which) in cases {
        let (method, path, body) = match which {
            0 => (Method::POST, "/Users".to_string(), Some(body)),
            1 => (Method::PUT, format!("/Users/{id}"), Some(body)),
            2 => (
                Method::PATCH,
                format!("/Users/{id}"),
                Some(json!({
                    "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                    "Operations": [{"op": "replace", "path": text, "value": body}]
                })),
            ),
            3 => (
                Method::PATCH,
                format!("/Groups/{gid}"),
                Some(json!({
                    "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                    "Operations": [{"op": "add", "path": text, "value": body}]
                })),
            ),
            4 => (
                Method::GET,
                format!(
                    "/Users?filter={}&sortBy={}",
                    urlencode(&text),
                    urlencode(&text)
                ),
                None,
            ),
            _ => (
                Method::POST,
                "/.search".to_string(),
                Some(json!({"filter": text, "attributes": body})),
            ),
        };
        let (status, answer) = r.req(method.clone(), &path, body.clone()).await;
        check(status, &answer, &format!("{method} {path} {body:?}"));
        if status.is_success() {
            ok += 1;
        } else {
            rejected += 1;
        }
    }
    println!("random requests: {ok} accepted, {rejected} rejected with a SCIM error");
    assert!(
        ok > 0 && rejected > 0,
        "the generator should produce both: {ok} / {rejected}"
    );
    // The resources are still there and readable.
    let (s, _) = r.req(Method::GET, &format!("/Users/{id}"), None).await;
    assert!(s == StatusCode::OK || s == StatusCode::NOT_FOUND);
    let (s, _) = r.req(Method::GET, &format!("/Groups/{gid}"), None).await;
    assert_eq!(s, StatusCode::OK);
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
