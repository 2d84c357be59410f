use super::*;
use crate::scim::resource::{normalize, normalize_stored};
use crate::scim::schema::{ResourceKind, ENTERPRISE_USER_SCHEMA as ENT, GROUP_SCHEMA, USER_SCHEMA};
use proptest::prelude::*;
use serde_json::json;

fn body(ops: Value) -> Value {
    json!({"schemas": [PATCH_OP_SCHEMA], "Operations": ops})
}

fn parse(ops: Value) -> ScimResult<Vec<PatchOp>> {
    parse_request(&body(ops), 1000, &FilterLimits::default())
}

fn patch(kind: ResourceKind, resource: &Value, ops: Value) -> ScimResult<(Value, PatchOutcome)> {
    let ops = parse(ops)?;
    let mut r = resource.clone();
    let outcome = apply(&mut r, kind, &ops)?;
    Ok((r, outcome))
}

fn patch_user(resource: &Value, ops: Value) -> ScimResult<Value> {
    patch(ResourceKind::User, resource, ops).map(|(r, _)| r)
}

/// A stored user: normalised, plus the server-owned `id` and `meta`.
fn stored(kind: ResourceKind, body: Value) -> Value {
    let mut r = normalize(kind, &body).unwrap();
    r["id"] = json!("id-1");
    r["meta"] = json!({"resourceType": kind.name(), "version": "W/\"1\""});
    normalize_stored(kind, &r).unwrap()
}

fn user() -> Value {
    stored(
        ResourceKind::User,
        json!({
            "userName": "bjensen", "active": true, "displayName": "Babs",
            "name": {"givenName": "Barbara", "familyName": "Jensen"},
            "emails": [{"value": "b@work", "type": "work", "primary": true}, {"value": "b@home", "type": "home"}],
        }),
    )
}

fn group(members: impl IntoIterator<Item = String>) -> Value {
    let members: Vec<Value> = members.into_iter().map(|m| json!({"value": m})).collect();
    stored(
        ResourceKind::Group,
        json!({"displayName": "G", "members": members}),
    )
}

fn err_kind(r: ScimResult<impl std::fmt::Debug>) -> (&'static str, String) {
    let e = r.unwrap_err();
    (e.scim_type().unwrap_or("none"), e.detail().to_string())
}

// --- parsing -------------------------------------------------------------------------------

#[test]
fn request_must_declare_the_patch_op_schema() {
    let r = parse_request(
        &json!({"Operations": [{"op": "add", "path": "title", "value": "x"}]}),
        10,
        &FilterLimits::default(),
    );
    assert_eq!(err_kind(r).0, "invalidValue");
    let r = parse_request(&json!([]), 10, &FilterLimits::default());
    assert_eq!(err_kind(r).0, "invalidSyntax");
}

#[test]
fn operations_key_and_op_names_are_case_insensitive() {
    let ops = parse_request(
        &json!({"SCHEMAS": [PATCH_OP_SCHEMA.to_lowercase()], "operations": [
            {"OP": "Replace", "Path": "active", "Value": "False"},
            {"op": "ADD", "value": {"title": "x"}},
            {"op": "remove", "path": "title"},
        ]}),
        10,
        &FilterLimits::default(),
    )
    .unwrap();
    assert_eq!(
        ops.iter().map(|o| o.op).collect::<Vec<_>>(),
        [PatchOpKind::Replace, PatchOpKind::Add, PatchOpKind::Remove]
    );
    assert_eq!(ops[0].path.as_ref().unwrap().attr.name, "active");
    assert_eq!(ops[0].value, Some(json!("False")));
}

#[test]
fn operation_count_is_bounded() {
    assert_eq!(err_kind(parse(json!([]))).0, "invalidValue");
    let many: Vec<Value> = (0..3)
        .map(|_| json!({"op": "add", "path": "title", "value": "x"}))
        .collect();
    let r = parse_request(&body(json!(many)), 2, &FilterLimits::default());
    let (t, d) = err_kind(r);
    assert_eq!(t, "tooMany");
    assert!(d.contains('2'));
}

#[test]
fn malformed_operations_are_refused_with_their_position() {
    let (t, d) = err_kind(parse(
        json!([{"op": "add", "path": "title", "value": 1}, {"op": "move", "path": "x"}]),
    ));
    assert_eq!(t, "invalidValue");
    assert!(d.contains("operation 2"), "{d}");
    assert_eq!(
        err_kind(parse(json!([{"op": "add", "path": "title"}]))).0,
        "invalidValue"
    );
    assert_eq!(
        err_kind(parse(json!([{"op": "replace"}]))).0,
        "invalidValue"
    );
    assert_eq!(err_kind(parse(json!([{"op": "remove"}]))).0, "noTarget");
    assert_eq!(
        err_kind(parse(json!([{"op": "remove", "path": "emails[type eq"}]))).0,
        "invalidPath"
    );
    assert_eq!(
        err_kind(parse(json!([{"op": "remove", "path": 5}]))).0,
        "invalidPath"
    );
    assert_eq!(err_kind(parse(json!(["x"]))).0, "invalidSyntax");
    assert_eq!(err_kind(parse(json!({"op": "add"}))).0, "invalidSyntax");
}

// --- Entra and Okta request shapes -----------------------------------------------------------

#[test]
fn entra_replace_active_with_a_string_boolean() {
    let (r, outcome) = patch(
        ResourceKind::User,
        &user(),
        json!([{"op": "Replace", "path": "active", "value": "False"}]),
    )
    .unwrap();
    assert_eq!(r["active"], false);
    assert_eq!(outcome.explicit, ["active"]);
}

#[test]
fn okta_deactivation_without_a_path() {
    let (r, outcome) = patch(
        ResourceKind::User,
        &user(),
        json!([{"op": "replace", "value": {"active": false}}]),
    )
    .unwrap();
    assert_eq!(r["active"], false);
    assert_eq!(r["userName"], "bjensen");
    assert_eq!(outcome.explicit, ["active"]);
}

#[test]
fn entra_dotted_keys_in_a_path_less_replace() {
    let r = patch_user(
        &user(),
        json!([{"op": "replace", "value": {
            "displayName": "B J", "name.givenName": "Barb", "name.familyName": "J",
            "emails[type eq \"work\"].value": "new@work", "active": "True",
        }}]),
    )
    .unwrap();
    assert_eq!(r["name"], json!({"familyName": "J", "givenName": "Barb"}));
    assert_eq!(r["displayName"], "B J");
    assert_eq!(r["emails"][0]["value"], "new@work");
    assert_eq!(r["active"], true);
}

#[test]
fn entra_adds_a_work_email_through_a_filter_that_matches_nothing() {
    let u = stored(ResourceKind::User, json!({"userName": "a"}));
    let r = patch_user(
        &u,
        json!([
            {"op": "Add", "path": "emails[type eq \"work\"].value", "value": "a@work"},
            {"op": "Add", "path": "addresses[type eq \"work\"].streetAddress", "value": "1 Main St"},
            {"op": "Add", "path": "phoneNumbers[type eq \"mobile\"].value", "value": "+1 555"},
        ]),
    )
    .unwrap();
    assert_eq!(r["emails"], json!([{"value": "a@work", "type": "work"}]));
    assert_eq!(
        r["addresses"],
        json!([{"streetAddress": "1 Main St", "type": "work"}])
    );
    assert_eq!(
        r["phoneNumbers"],
        json!([{"value": "+1 555", "type": "mobile"}])
    );
    // The same op again updates the element it created.
    let r = patch_user(
        &r,
        json!([{"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "b@work"}]),
    )
    .unwrap();
    assert_eq!(r["emails"], json!([{"value": "b@work", "type": "work"}]));
}

#[test]
fn entra_enterprise_attributes_and_manager_id() {
    let dept = format!("{ENT}:department");
    let manager = format!("{ENT}:manager");
    let (r, outcome) = patch(
        ResourceKind::User,
        &user(),
        json!([
            {"op": "Add", "path": dept, "value": "Sales"},
            {"op": "Replace", "path": manager, "value": "mgr-1"},
        ]),
    )
    .unwrap();
    assert_eq!(
        r[ENT],
        json!({"department": "Sales", "manager": {"value": "mgr-1"}})
    );
    assert_eq!(r["schemas"], json!([USER_SCHEMA, ENT]));
    assert_eq!(outcome.explicit, [dept.clone(), manager.clone()]);
    let r = patch_user(
        &r,
        json!([{"op": "Remove", "path": manager}, {"op": "Remove", "path": dept}]),
    )
    .unwrap();
    assert!(r.get(ENT).is_none());
    assert_eq!(r["schemas"], json!([USER_SCHEMA]));
}

#[test]
fn entra_group_member_add_and_remove_by_value_list() {
    let g = group(["u1".to_string(), "u2".to_string(), "u3".to_string()]);
    let (r, outcome) = patch(
        ResourceKind::Group,
        &g,
        json!([
            {"op": "Add", "path": "members", "value": [{"value": "u4"}, {"value": "u1"}]},
            {"op": "Remove", "path": "members", "value": [{"value": "u2"}, {"value": "nobody"}]},
        ]),
    )
    .unwrap();
    assert_eq!(
        r["members"],
        json!([{"value": "u1"}, {"value": "u3"}, {"value": "u4"}])
    );
    assert_eq!(outcome.explicit, ["members"]);
    // A remove with a value list never clears the whole list.
    let r = patch(
        ResourceKind::Group,
        &r,
        json!([{"op": "Remove", "path": "members", "value": [{"value": "zzz"}]}]),
    )
    .unwrap()
    .0;
    assert_eq!(r["members"].as_array().unwrap().len(), 3);
}

#[test]
fn okta_group_member_ops() {
    let g = group(["u1".to_string(), "u2".to_string()]);
    let r = patch(
        ResourceKind::Group,
        &g,
        json!([
            {"op": "add", "path": "members", "value": [{"value": "u3", "display": "Ann"}]},
            {"op": "remove", "path": "members[value eq \"u1\"]"},
            {"op": "replace", "path": "displayName", "value": "Renamed"},
        ]),
    )
    .unwrap()
    .0;
    assert_eq!(
        r["members"],
        json!([{"value": "u2"}, {"value": "u3", "display": "Ann"}])
    );
    assert_eq!(r["displayName"], "Renamed");
    assert_eq!(r["id"], "id-1");
    assert_eq!(r["schemas"], json!([GROUP_SCHEMA]));
}

#[test]
fn replacing_members_sets_exactly_the_new_list() {
    let g = group(["u1".to_string(), "u2".to_string()]);
    let r = patch(
        ResourceKind::Group,
        &g,
        json!([{"op": "replace", "path": "members", "value": [{"value": "u9"}]}]),
    )
    .unwrap()
    .0;
    assert_eq!(r["members"], json!([{"value": "u9"}]));
    let r = patch(
        ResourceKind::Group,
        &g,
        json!([{"op": "replace", "path": "members", "value": []}]),
    )
    .unwrap()
    .0;
    assert!(r.get("members").is_none());
}

#[test]
fn member_ids_are_immutable() {
    let g = group(["u1".to_string()]);
    let (t, d) = err_kind(patch(
        ResourceKind::Group,
        &g,
        json!([{"op": "replace", "path": "members[value eq \"u1\"].value", "value": "u2"}]),
    ));
    assert_eq!(t, "mutability");
    assert!(d.contains("members.value"), "{d}");
    // Setting an absent immutable sub-attribute is fine.
    let r = patch(
        ResourceKind::Group,
        &g,
        json!([{"op": "add", "path": "members[value eq \"u1\"].display", "value": "Ann"}]),
    )
    .unwrap()
    .0;
    assert_eq!(r["members"], json!([{"value": "u1", "display": "Ann"}]));
}

#[test]
fn thousand_member_adds_to_a_ten_thousand_member_group_is_fast() {
    let g = group((0..10_000).map(|i| format!("user-{i}")));
    // user-9000..user-10998, even numbers: 500 members already, 500 new.
    let adds: Vec<Value> = (4_500..5_500)
        .map(|i| json!({"value": format!("user-{}", i * 2)}))
        .collect();
    let started = std::time::Instant::now();
    let r = patch(
        ResourceKind::Group,
        &g,
        json!([{"op": "add", "path": "members", "value": adds}]),
    )
    .unwrap()
    .0;
    assert_eq!(r["members"].as_array().unwrap().len(), 10_500);
    let removes: Vec<Value> = (0..1_000)
        .map(|i| json!({"op": "remove", "path": format!("members[value eq \"user-{i}\"]")}))
        .collect();
    let r = patch(ResourceKind::Group, &r, json!(removes)).unwrap().0;
    assert_eq!(r["members"].as_array().unwrap().len(), 9_500);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_thousand_single_member_add_ops_share_one_index() {
    let g = group((0..10_000).map(|i| format!("user-{i}")));
    let ops: Vec<Value> = (9_500..10_500)
        .map(|i| json!({"op": "add", "path": "members", "value": [{"value": format!("user-{i}")}]}))
        .collect();
    let started = std::time::Instant::now();
    let r = patch(ResourceKind::Group, &g, json!(ops)).unwrap().0;
    assert_eq!(r["members"].as_array().unwrap().len(), 10_500);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // An index carried across ops stays exact when other ops touch the list in between.
    let r = patch(
        ResourceKind::Group,
        &group(["a".to_string()]),
        json!([
            {"op": "add", "path": "members", "value": [{"value": "b"}]},
            {"op": "remove", "path": "members[value eq \"b\"]"},
            {"op": "add", "path": "members", "value": [{"value": "b"}]},
            {"op": "replace", "path": "members", "value": [{"value": "c"}]},
            {"op": "add", "path": "members", "value": [{"value": "a"}, {"value": "c"}]},
        ]),
    )
    .unwrap()
    .0;
    assert_eq!(r["members"], json!([{"value": "c"}, {"value": "a"}]));
}

// --- RFC 7644 §3.5.2 semantics --------------------------------------------------------------

#[test]
fn add_appends_to_multi_valued_skipping_exact_duplicates() {
    let r = patch_user(
        &user(),
        json!([{"op": "add", "path": "emails", "value": [{"value": "b@home", "type": "home"}, {"value": "x@y", "type": "other"}]}]),
    )
    .unwrap();
    let emails = r["emails"].as_array().unwrap();
    assert_eq!(emails.len(), 3);
    assert_eq!(emails[2], json!({"value": "x@y", "type": "other"}));
}

#[test]
fn add_without_path_merges_attributes() {
    let r = patch_user(
        &user(),
        json!([{"op": "add", "value": {
            "name": {"middleName": "M"}, "title": "Dr", "emails": [{"value": "n@x"}],
            ENT: {"employeeNumber": "42"},
        }}]),
    )
    .unwrap();
    assert_eq!(
        r["name"],
        json!({"familyName": "Jensen", "givenName": "Barbara", "middleName": "M"})
    );
    assert_eq!(r["title"], "Dr");
    assert_eq!(r["emails"].as_array().unwrap().len(), 3);
    assert_eq!(r[ENT]["employeeNumber"], "42");
}

#[test]
fn replace_without_path_replaces_lists_wholesale() {
    let r = patch_user(
        &user(),
        json!([{"op": "replace", "value": {"emails": [{"value": "only@x"}]}}]),
    )
    .unwrap();
    assert_eq!(r["emails"], json!([{"value": "only@x"}]));
}

#[test]
fn replace_complex_keeps_unmentioned_sub_attributes() {
    let r = patch_user(
        &user(),
        json!([{"op": "replace", "path": "name", "value": {"givenName": "B"}}]),
    )
    .unwrap();
    assert_eq!(r["name"], json!({"familyName": "Jensen", "givenName": "B"}));
    let r = patch_user(
        &user(),
        json!([{"op": "replace", "path": "name.familyName", "value": "K"}]),
    )
    .unwrap();
    assert_eq!(r["name"]["familyName"], "K");
}

#[test]
fn replace_with_filter_replaces_matching_elements() {
    let r = patch_user(&user(), json!([{"op": "replace", "path": "emails[type eq \"home\"]", "value": {"value": "h2@x", "type": "home"}}])).unwrap();
    assert_eq!(r["emails"][1], json!({"value": "h2@x", "type": "home"}));
    let r = patch_user(
        &user(),
        json!([{"op": "replace", "path": "emails[value sw \"b@\"].display", "value": "mail"}]),
    )
    .unwrap();
    assert!(r["emails"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["display"] == "mail"));
}

#[test]
fn replace_with_a_filter_matching_nothing_is_no_target_unless_it_describes_an_element() {
    let (t, _) = err_kind(patch_user(
        &user(),
        json!([{"op": "replace", "path": "emails[value co \"zzz\"].type", "value": "other"}]),
    ));
    assert_eq!(t, "noTarget");
    let r = patch_user(&user(), json!([{"op": "replace", "path": "emails[type eq \"other\" and value eq \"o@x\"].display", "value": "O"}])).unwrap();
    assert_eq!(
        r["emails"][2],
        json!({"value": "o@x", "display": "O", "type": "other"})
    );
}

#[test]
fn remove_paths() {
    let r = patch_user(
        &user(),
        json!([{"op": "remove", "path": "emails[type eq \"home\"]"}]),
    )
    .unwrap();
    assert_eq!(r["emails"].as_array().unwrap().len(), 1);
    let r = patch_user(
        &user(),
        json!([{"op": "remove", "path": "emails[type eq \"work\"].primary"}]),
    )
    .unwrap();
    assert!(r["emails"][0].get("primary").is_none());
    let r = patch_user(&user(), json!([{"op": "remove", "path": "name.givenName"}])).unwrap();
    assert_eq!(r["name"], json!({"familyName": "Jensen"}));
    let r = patch_user(
        &user(),
        json!([{"op": "remove", "path": "emails"}, {"op": "remove", "path": "name"}]),
    )
    .unwrap();
    assert!(r.get("emails").is_none() && r.get("name").is_none());
    // Removing what is not there (again) succeeds: IdPs retry.
    let r2 = patch_user(&r, json!([{"op": "remove", "path": "emails[type eq \"home\"]"}, {"op": "remove", "path": "title"}])).unwrap();
    assert_eq!(r, r2);
}

#[test]
fn required_attributes_cannot_be_removed() {
    let (t, d) = err_kind(patch_user(
        &user(),
        json!([{"op": "remove", "path": "userName"}]),
    ));
    assert_eq!(t, "invalidValue");
    assert!(d.contains("userName"));
    let (t, _) = err_kind(patch_user(
        &user(),
        json!([{"op": "replace", "path": "userName", "value": ""}]),
    ));
    assert_eq!(t, "invalidValue");
    let (t, _) = err_kind(patch(
        ResourceKind::Group,
        &group([]),
        json!([{"op": "replace", "value": {"displayName": null}}]),
    ));
    assert_eq!(t, "invalidValue");
}

#[test]
fn read_only_attributes_cannot_be_targeted() {
    for path in [
        "id",
        "meta",
        "groups",
        "meta.version",
        "groups[value eq \"g\"]",
    ] {
        let (t, d) = err_kind(patch_user(
            &user(),
            json!([{"op": "replace", "path": path, "value": "x"}]),
        ));
        assert_eq!(t, "mutability", "{path}: {d}");
    }
    let (t, _) = err_kind(patch_user(&user(), json!([{"op": "remove", "path": "id"}])));
    assert_eq!(t, "mutability");
    let (t, _) = err_kind(patch_user(
        &user(),
        json!([{"op": "replace", "path": format!("{ENT}:manager.displayName"), "value": "x"}]),
    ));
    assert_eq!(t, "mutability");
    // Echoing an unchanged id in a path-less replace is harmless.
    let r = patch_user(
        &user(),
        json!([{"op": "replace", "value": {"id": "id-1", "title": "T"}}]),
    )
    .unwrap();
    assert_eq!(r["title"], "T");
    let (t, _) = err_kind(patch_user(
        &user(),
        json!([{"op": "replace", "value": {"id": "other"}}]),
    ));
    assert_eq!(t, "mutability");
}

#[test]
fn unknown_paths_and_bad_values_are_refused() {
    assert_eq!(
        err_kind(patch_user(
            &user(),
            json!([{"op": "add", "path": "shoeSize", "value": 1}])
        ))
        .0,
        "invalidPath"
    );
    assert_eq!(
        err_kind(patch_user(
            &user(),
            json!([{"op": "add", "path": "name.nick", "value": "x"}])
        ))
        .0,
        "invalidPath"
    );
    assert_eq!(
        err_kind(patch_user(
            &user(),
            json!([{"op": "add", "path": "title[value eq \"x\"]", "value": "x"}])
        ))
        .0,
        "invalidPath"
    );
    assert_eq!(
        err_kind(patch_user(
            &user(),
            json!([{"op": "add", "path": "emails[type eq \"x\"].nope", "value": "x"}])
        ))
        .0,
        "invalidPath"
    );
    assert_eq!(
        err_kind(patch_user(
            &user(),
            json!([{"op": "add", "value": {"shoeSize": 1}}])
        ))
        .0,
        "invalidValue"
    );
    assert_eq!(
        err_kind(patch_user(&user(), json!([{"op": "add", "value": "x"}]))).0,
        "invalidValue"
    );
    let (t, d) = err_kind(patch_user(
        &user(),
        json!([{"op": "replace", "path": "active", "value": "maybe"}]),
    ));
    assert_eq!(t, "invalidValue");
    assert!(d.contains("active"), "{d}");
}

#[test]
fn setting_primary_unsets_the_others() {
    let r = patch_user(
        &user(),
        json!([{"op": "replace", "path": "emails[type eq \"home\"].primary", "value": true}]),
    )
    .unwrap();
    assert_eq!(r["emails"][0]["primary"], false);
    assert_eq!(r["emails"][1]["primary"], true);
    let r = patch_user(
        &user(),
        json!([{"op": "add", "path": "emails", "value": {"value": "n@x", "primary": "True"}}]),
    )
    .unwrap();
    assert_eq!(r["emails"][0]["primary"], false);
    assert_eq!(r["emails"][2]["primary"], true);
}

#[test]
fn extension_container_paths() {
    let r = patch_user(
        &user(),
        json!([{"op": "add", "path": ENT, "value": {"department": "D", "costCenter": "C"}}]),
    )
    .unwrap();
    assert_eq!(r[ENT], json!({"costCenter": "C", "department": "D"}));
    let r = patch_user(&r, json!([{"op": "remove", "path": ENT}])).unwrap();
    assert!(r.get(ENT).is_none());
    let r = patch_user(
        &user(),
        json!([{"op": "add", "value": {format!("{ENT}:division"): "Dv"}}]),
    )
    .unwrap();
    assert_eq!(r[ENT]["division"], "Dv");
}

#[test]
fn a_failing_op_leaves_the_resource_untouched() {
    let before = user();
    let mut r = before.clone();
    let ops = parse(json!([
        {"op": "replace", "path": "displayName", "value": "changed"},
        {"op": "remove", "path": "emails"},
        {"op": "replace", "path": "id", "value": "hijack"},
    ]))
    .unwrap();
    let err = apply(&mut r, ResourceKind::User, &ops).unwrap_err();
    assert_eq!(err.scim_type(), Some("mutability"));
    assert!(err.detail().contains("operation 3"), "{}", err.detail());
    assert_eq!(r, before);
    // A result that fails validation at the end is also all-or-nothing.
    let ops = parse(json!([{"op": "replace", "path": "title", "value": "T"}, {"op": "remove", "path": "userName"}])).unwrap();
    assert!(apply(&mut r, ResourceKind::User, &ops).is_err());
    assert_eq!(r, before);
}

#[test]
fn explicit_lists_each_target_once() {
    let (_, o) = patch(
        ResourceKind::User,
        &user(),
        json!([
            {"op": "replace", "path": "active", "value": true},
            {"op": "replace", "value": {"active": true, "name.givenName": "X"}},
            {"op": "remove", "path": "title"},
        ]),
    )
    .unwrap();
    assert_eq!(o.explicit, ["active", "name", "title"]);
}

#[test]
fn password_is_writable() {
    let r = patch_user(
        &user(),
        json!([{"op": "replace", "path": "password", "value": "n3w"}]),
    )
    .unwrap();
    assert_eq!(r["password"], "n3w");
}

// --- properties ------------------------------------------------------------------------------

fn arb_user_op() -> impl Strategy<Value = Value> {
    let op = prop_oneof![
        Just("add"),
        Just("replace"),
        Just("remove"),
        Just("Replace"),
        Just("Add")
    ];
    let path = prop_oneof![
        Just(Value::Null),
        Just(json!("active")),
        Just(json!("displayName")),
        Just(json!("title")),
        Just(json!("userName")),
        Just(json!("name")),
        Just(json!("name.givenName")),
        Just(json!("emails")),
        Just(json!("emails.display")),
        Just(json!("emails[type eq \"work\"].value")),
        Just(json!("emails[type eq \"home\"]")),
        Just(json!("emails[value eq \"a@x\"].primary")),
        Just(json!("emails[value co \"@\" or type pr]")),
        Just(json!("phoneNumbers[type eq \"mobile\"].value")),
        Just(json!(format!("{ENT}:department"))),
        Just(json!(format!("{ENT}:manager"))),
        Just(json!(ENT)),
        Just(json!("id")),
        Just(json!("groups")),
        Just(json!("x509Certificates")),
    ];
    let value = prop_oneof![
        Just(json!("x")),
        Just(json!("a@x")),
        Just(json!("False")),
        Just(json!(true)),
        Just(Value::Null),
        Just(json!(7)),
        Just(json!([])),
        Just(json!({"givenName": "G"})),
        Just(json!({"value": "a@x", "type": "work", "primary": true})),
        Just(json!([{"value": "b@x", "primary": "True"}, {"value": "c@x", "type": "home"}])),
        Just(json!({"active": false, "name.familyName": "F", "title": null})),
        Just(json!({"department": "D", "manager": "m"})),
        Just(json!({"emails": [{"value": "d@x", "primary": true}], ENT: {"division": "V"}})),
        Just(json!({"userName": "renamed"})),
    ];
    (op, path, proptest::option::of(value)).prop_map(|(op, path, value)| {
        let mut o = Map::new();
        o.insert("op".into(), json!(op));
        if !path.is_null() {
            o.insert("path".into(), path);
        }
        if let Some(v) = value {
            o.insert("value".into(), v);
        }
        Value::Object(o)
    })
}

fn arb_group_op() -> impl Strategy<Value = Value> {
    let op = prop_oneof![Just("add"), Just("replace"), Just("remove")];
    let path = prop_oneof![
        Just(Value::Null),
        Just(json!("members")),
        Just(json!("displayName")),
        Just(json!("members[value eq \"u1\"]")),
        Just(json!("members[value eq \"u2\"].display")),
        Just(json!("members[type eq \"User\"]")),
    ];
    let value = prop_oneof![
        Just(json!([{"value": "u1"}, {"value": "u2", "display": "B"}])),
        Just(json!({"value": "u3", "type": "User"})),
        Just(json!([{"value": "u1"}])),
        Just(json!("Name")),
        Just(json!({"displayName": "G2", "members": [{"value": "u4"}]})),
        Just(json!({"display": "D"})),
        Just(Value::Null),
    ];
    (op, path, proptest::option::of(value)).prop_map(|(op, path, value)| {
        let mut o = Map::new();
        o.insert("op".into(), json!(op));
        if !path.is_null() {
            o.insert("path".into(), path);
        }
        if let Some(v) = value {
            o.insert("value".into(), v);
        }
        Value::Object(o)
    })
}

fn check_sequence(kind: ResourceKind, start: &Value, ops: Vec<Value>) -> Result<(), TestCaseError> {
    let mut r = start.clone();
    for op in ops {
        let Ok(parsed) = parse(json!([op])) else {
            continue;
        };
        let before = r.clone();
        match apply(&mut r, kind, &parsed) {
            Ok(_) => {
                prop_assert_eq!(normalize_stored(kind, &r), Ok(r.clone()));
                // Without the server-owned attributes, it is also a valid POST body.
                let mut body = r.clone();
                if let Some(o) = body.as_object_mut() {
                    o.remove("id");
                    o.remove("meta");
                }
                prop_assert!(normalize(kind, &body).is_ok());
            }
            Err(_) => prop_assert_eq!(&r, &before),
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn random_user_patches_never_panic_and_stay_valid(ops in prop::collection::vec(arb_user_op(), 1..8)) {
        check_sequence(ResourceKind::User, &user(), ops)?;
    }

    #[test]
    fn random_group_patches_never_panic_and_stay_valid(ops in prop::collection::vec(arb_group_op(), 1..8)) {
        check_sequence(ResourceKind::Group, &group(["u1".to_string(), "u9".to_string()]), ops)?;
    }

    #[test]
    fn arbitrary_patch_bodies_never_panic(
        op in prop_oneof![Just("add"), Just("replace"), Just("remove"), Just("bogus")],
        path in "[a-zA-Z\\[\\]\". :=0-9]{0,24}",
        value in prop_oneof![Just(Value::Null), Just(json!("x")), Just(json!({"a": 1})), Just(json!([1, "2"]))],
    ) {
        if let Ok(ops) = parse(json!([{"op": op, "path": path, "value": value}])) {
            let mut r = user();
            let _ = apply(&mut r, ResourceKind::User, &ops);
        }
    }
}
