//! Durability: data and ETags survive kill -9 and restart.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::harness::Region;

#[tokio::test]
async fn acknowledged_writes_and_etags_survive_kill_9() {
    let region = Region::start();
    let mut ids = Vec::new();
    for i in 0..20 {
        let u = region.create_user(&format!("durable{i}@example.com")).await;
        ids.push((
            u["id"].as_str().unwrap().to_string(),
            u["meta"]["version"].clone(),
        ));
    }
    let (s, patched) = region
        .req(
            Method::PATCH,
            &format!("/Users/{}", ids[0].0),
            Some(json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "replace", "path": "active", "value": false}]
            })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{patched}");
    ids[0].1 = patched["meta"]["version"].clone();
    let (s, _) = region
        .req(Method::DELETE, &format!("/Users/{}", ids[1].0), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);

    let region = region.restart();
    region.wait_healthy().await;
    for (i, (id, version)) in ids.iter().enumerate() {
        let (s, v) = region.req(Method::GET, &format!("/Users/{id}"), None).await;
        if i == 1 {
            assert_eq!(s, StatusCode::NOT_FOUND, "deleted user came back: {v}");
            continue;
        }
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(
            &v["meta"]["version"], version,
            "ETag changed across restart"
        );
    }
    let (_, v) = region
        .req(Method::GET, &format!("/Users/{}", ids[0].0), None)
        .await;
    assert_eq!(v["active"], json!(false));
    // The userNames are still taken after the restart (the index came back with the data).
    let (s, _) = region
        .req(
            Method::POST,
            "/Users",
            Some(
                json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": "durable5@example.com", "active": true}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    // The tombstone keeps the deleted id: a new POST of that userName gets a new id.
    let reborn = region.create_user("durable1@example.com").await;
    assert_ne!(reborn["id"].as_str(), Some(ids[1].0.as_str()));
}
