//! A data dir written by storage format 2 (members inside group documents; built by
//! `scripts/make-format2-fixture` with the format-2 release) opens with this build, migrates,
//! and answers what format 2 answered.

use std::path::Path;
use std::process::Command;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::harness::Region;

const TOKEN: &str = "format2-fixture-token";

/// Remove what legitimately differs between the two runs: the host in every `meta.location`
/// and `$ref` (another port), and `meta.version` (see the test for which versions must stay).
fn normalise(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, inner) in m.iter_mut() {
                if (k == "location" || k == "$ref") && inner.is_string() {
                    let s = inner.as_str().unwrap();
                    let path = s.split_once("/scim/v2").map_or(s, |(_, p)| p).to_string();
                    *inner = Value::String(path);
                } else {
                    normalise(inner);
                }
            }
            if let Some(meta) = m.get_mut("meta").and_then(Value::as_object_mut) {
                meta.remove("version");
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalise),
        _ => {}
    }
}

fn version(v: &Value) -> Option<&str> {
    v["meta"]["version"].as_str()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_format_2_data_dir_migrates_and_answers_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format2.tar.gz");
    let status = Command::new("tar")
        .arg("-C")
        .arg(tmp.path())
        .arg("-xzf")
        .arg(&fixture)
        .status()
        .expect("tar");
    assert!(status.success(), "cannot unpack {}", fixture.display());
    let expected: Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("expected.json")).unwrap()).unwrap();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("regions/single.toml");
    let region = Region::start_config(
        config,
        tmp.path().join("data"),
        vec![("t1".to_string(), TOKEN.to_string())],
    );
    region.wait_healthy().await;
    let ids = &expected["ids"];
    let id = |name: &str| ids[name].as_str().unwrap().to_string();
    let answers = expected["answers"].as_object().unwrap();
    assert!(answers.len() >= 10);
    for (path, answer) in answers {
        let (want_status, want) = (answer[0].as_u64().unwrap(), &answer[1]);
        let (status, got) = region.req(Method::GET, path, None).await;
        assert_eq!(status.as_u16() as u64, want_status, "{path}: {got}");
        let (mut got_n, mut want_n) = (got.clone(), want.clone());
        normalise(&mut got_n);
        normalise(&mut want_n);
        assert_eq!(
            got_n, want_n,
            "{path} answers differently after the migration"
        );
        // Versions cover what a body shows. A resource without computed parts (a user in no
        // group, a group without members) keeps its version; the others get one that also
        // covers their members or groups.
        if status == StatusCode::OK && got.get("schemas").is_some() {
            let computed = got.get("groups").is_some() || got.get("members").is_some();
            if !computed {
                assert_eq!(version(&got), version(want), "{path}");
            }
        }
    }
    // The migrated records are live records: a member change works and shows.
    let (eng, erin) = (id("eng"), id("erin"));
    let (s, g) = region
        .req(
            Method::PATCH,
            &format!("/Groups/{eng}"),
            Some(json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "remove", "path": format!("members[value eq \"{erin}\"]")}]
            })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{g}");
    let members: Vec<&str> = g["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["value"].as_str().unwrap())
        .collect();
    let (alice, bob) = (id("alice"), id("bob"));
    let mut want = vec![alice.as_str(), bob.as_str()];
    want.sort();
    assert_eq!(members, want, "{g}");
    let (_, u) = region
        .req(Method::GET, &format!("/Users/{erin}"), None)
        .await;
    assert!(u.get("groups").is_none(), "{u}");
    // And a restart reads the migrated folder as format 3 (no second migration).
    let region = region.restart();
    region.wait_healthy().await;
    let (s, g2) = region
        .req(Method::GET, &format!("/Groups/{eng}"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(g2["members"], g["members"]);
}
