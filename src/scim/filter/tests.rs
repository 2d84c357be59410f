use super::eval::compare_one;
use super::*;
use crate::scim::schema::{
    AttrDef, AttrType, Mutability, ResourceKind, Returned, Uniqueness, ENTERPRISE_USER_SCHEMA,
};
use proptest::prelude::*;
use serde_json::json;
use serde_json::{Map, Number};

const ENTERPRISE: &str = ENTERPRISE_USER_SCHEMA;

fn p(text: &str) -> Filter {
    parse(text, &FilterLimits::default()).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn parse_err(text: &str) -> String {
    match parse(text, &FilterLimits::default()) {
        Err(ScimError::InvalidFilter(detail)) => detail,
        other => panic!("{text}: expected InvalidFilter, got {other:?}"),
    }
}

fn path(text: &str) -> AttrPath {
    split_attr_path(text).unwrap()
}

fn cmp(p: &str, op: CompareOp, value: CompValue) -> Filter {
    Filter::Compare {
        path: path(p),
        op,
        value,
    }
}

fn s(text: &str) -> CompValue {
    CompValue::Str(text.to_string())
}

fn pr(p: &str) -> Filter {
    Filter::Present(path(p))
}

fn and(a: Filter, b: Filter) -> Filter {
    Filter::And(Box::new(a), Box::new(b))
}

fn or(a: Filter, b: Filter) -> Filter {
    Filter::Or(Box::new(a), Box::new(b))
}

fn user() -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE],
        "id": "2819c223-7f76-453a-919d-413861904646",
        "externalId": "Ext-1",
        "userName": "Bjensen@Example.com",
        "name": { "givenName": "Barbara", "familyName": "Jensen" },
        "displayName": "Babs Jensen",
        "title": "",
        "nickName": null,
        "active": true,
        "emails": [
            { "value": "bjensen@example.com", "type": "work", "primary": true },
            { "value": "babs@jensen.org", "type": "home" }
        ],
        "phoneNumbers": [],
        "meta": {
            "resourceType": "User",
            "created": "2010-01-23T04:56:22Z",
            "lastModified": "2011-05-13T04:42:34Z"
        },
        ENTERPRISE: {
            "employeeNumber": "701984",
            "manager": { "value": "26118915-6090-4610-87e4-49d8ca9f808d" }
        }
    })
}

fn m(text: &str) -> bool {
    matches(&p(text), &user(), ResourceKind::User)
}

// --- parsing -----------------------------------------------------------------------------

#[test]
fn parses_a_comparison_into_path_operator_and_value() {
    assert_eq!(
        p(r#"userName eq "bjensen""#),
        cmp("userName", CompareOp::Eq, s("bjensen"))
    );
    assert_eq!(p("title pr"), pr("title"));
    assert_eq!(
        p("name.familyName co \"O'Malley\""),
        cmp("name.familyName", CompareOp::Co, s("O'Malley"))
    );
}

#[test]
fn keywords_operators_and_literals_are_case_insensitive() {
    assert_eq!(
        p(r#"userName EQ "a""#),
        cmp("userName", CompareOp::Eq, s("a"))
    );
    assert_eq!(p("title PR"), pr("title"));
    assert_eq!(
        p("active Eq TRUE"),
        cmp("active", CompareOp::Eq, CompValue::Bool(true))
    );
    assert_eq!(
        p("active eq False"),
        cmp("active", CompareOp::Eq, CompValue::Bool(false))
    );
    assert_eq!(
        p("title eq NULL"),
        cmp("title", CompareOp::Eq, CompValue::Null)
    );
    assert_eq!(
        p("a pr AND b pr Or c pr"),
        or(and(pr("a"), pr("b")), pr("c"))
    );
    assert_eq!(p("NOT (a pr)"), Filter::Not(Box::new(pr("a"))));
    for (word, op) in [
        ("ne", CompareOp::Ne),
        ("co", CompareOp::Co),
        ("sw", CompareOp::Sw),
        ("ew", CompareOp::Ew),
        ("gt", CompareOp::Gt),
        ("ge", CompareOp::Ge),
        ("lt", CompareOp::Lt),
        ("le", CompareOp::Le),
    ] {
        assert_eq!(
            p(&format!("x {} 1", word.to_uppercase())),
            cmp("x", op, CompValue::Num(1.into()))
        );
    }
}

#[test]
fn and_binds_tighter_than_or() {
    assert_eq!(
        p("a pr or b pr and c pr"),
        or(pr("a"), and(pr("b"), pr("c")))
    );
    assert_eq!(
        p("a pr and b pr or c pr"),
        or(and(pr("a"), pr("b")), pr("c"))
    );
}

#[test]
fn chains_associate_to_the_left() {
    assert_eq!(
        p("a pr and b pr and c pr"),
        and(and(pr("a"), pr("b")), pr("c"))
    );
    assert_eq!(p("a pr or b pr or c pr"), or(or(pr("a"), pr("b")), pr("c")));
}

#[test]
fn parentheses_override_precedence() {
    assert_eq!(
        p("(a pr or b pr) and c pr"),
        and(or(pr("a"), pr("b")), pr("c"))
    );
    assert_eq!(p("  ( ( a pr ) )  "), pr("a"));
}

#[test]
fn not_requires_parentheses() {
    assert_eq!(
        p("not (a pr or b pr)"),
        Filter::Not(Box::new(or(pr("a"), pr("b"))))
    );
    assert_eq!(p("not(a pr)"), Filter::Not(Box::new(pr("a"))));
    let detail = parse_err("not a pr");
    assert!(
        detail.contains("'not' must be followed by a parenthesised filter"),
        "{detail}"
    );
    // An attribute that happens to be called `not` still works.
    assert_eq!(p("not pr"), pr("not"));
}

#[test]
fn urn_prefix_is_everything_before_the_last_colon() {
    let f = p(&format!("{ENTERPRISE}:employeeNumber eq \"1\""));
    assert_eq!(
        f,
        Filter::Compare {
            path: AttrPath {
                uri: Some(ENTERPRISE.into()),
                name: "employeeNumber".into(),
                sub: None
            },
            op: CompareOp::Eq,
            value: s("1"),
        }
    );
    let f = p(&format!("{ENTERPRISE}:manager.value eq \"x\""));
    let Filter::Compare { path, .. } = f else {
        panic!()
    };
    assert_eq!(path.uri.as_deref(), Some(ENTERPRISE));
    assert_eq!(
        (path.name.as_str(), path.sub.as_deref()),
        ("manager", Some("value"))
    );
    let core = path_of("urn:ietf:params:scim:schemas:core:2.0:User:name.familyName");
    assert_eq!(
        core.uri.as_deref(),
        Some("urn:ietf:params:scim:schemas:core:2.0:User")
    );
    assert_eq!(
        (core.name.as_str(), core.sub.as_deref()),
        ("name", Some("familyName"))
    );
}

fn path_of(text: &str) -> AttrPath {
    parse_attr_path(text).unwrap()
}

#[test]
fn value_paths_hold_an_inner_filter_over_sub_attributes() {
    let f = p(r#"emails[type eq "work" and value co "@example.com"]"#);
    assert_eq!(
        f,
        Filter::ValuePath {
            path: path("emails"),
            filter: Box::new(and(
                cmp("type", CompareOp::Eq, s("work")),
                cmp("value", CompareOp::Co, s("@example.com"))
            )),
        }
    );
    assert_eq!(
        p(r#"userType eq "Employee" and emails[type eq "work"] or members[value pr]"#).to_string(),
        r#"userType eq "Employee" and emails[type eq "work"] or members[value pr]"#
    );
}

#[test]
fn entra_value_path_with_sub_attribute_reads_as_a_conjunction() {
    assert_eq!(
        p(r#"emails[type eq "work"].value eq "a@x.com""#).to_string(),
        r#"emails[type eq "work" and value eq "a@x.com"]"#
    );
    let user = json!({"userName": "u", "emails": [
        {"type": "home", "value": "a@x.com"}, {"type": "work", "value": "b@x.com"}]});
    let f = p(r#"emails[type eq "work"].value eq "A@X.com""#);
    assert!(!matches(&f, &user, ResourceKind::User));
    let f = p(r#"emails[type eq "work"].value eq "B@X.com""#);
    assert!(matches(&f, &user, ResourceKind::User));
    assert!(parse_err(r#"emails[type eq "work"].value zz "x""#).contains("operator"));
}

#[test]
fn value_paths_cannot_nest_or_use_dotted_inner_paths() {
    assert!(parse_err(r#"emails[type[value eq "x"]]"#).contains("cannot be nested"));
    assert!(parse_err(r#"emails[type.x eq "work"]"#).contains("plain sub-attribute names"));
    assert!(parse_err(r#"name.givenName[value pr]"#).contains("not a sub-attribute"));
}

#[test]
fn string_literals_use_json_escapes() {
    assert_eq!(
        p(r#"x eq "a\"b\\c\u00e9\n""#),
        cmp("x", CompareOp::Eq, s("a\"b\\c\u{e9}\n"))
    );
    assert!(parse_err(r#"x eq "bad \q escape""#).contains("invalid string literal"));
    assert!(parse_err(r#"x eq "open"#).contains("unterminated string"));
}

#[test]
fn numbers_are_json_numbers() {
    assert_eq!(
        p("x gt 42"),
        cmp("x", CompareOp::Gt, CompValue::Num(42.into()))
    );
    assert_eq!(
        p("x gt -7"),
        cmp("x", CompareOp::Gt, CompValue::Num((-7).into()))
    );
    let f = p("x lt 1.5e3");
    assert_eq!(
        f,
        cmp(
            "x",
            CompareOp::Lt,
            CompValue::Num(Number::from_f64(1500.0).unwrap())
        )
    );
    assert!(parse_err("x eq 01").contains("invalid number '01'"));
    assert!(parse_err("x eq 1e999").contains("invalid number"));
}

#[test]
fn unbalanced_parentheses_are_invalid() {
    assert!(parse_err("(a pr").contains("missing ')'"));
    assert!(parse_err("a pr)").contains("unexpected text"));
    assert!(parse_err("emails[type pr").contains("missing ']'"));
    assert!(parse_err("()").contains("expected an attribute path"));
}

#[test]
fn unknown_operator_is_named_in_the_error() {
    let detail = parse_err(r#"userName like "x""#);
    assert!(
        detail.contains("unknown operator 'like' after 'userName'"),
        "{detail}"
    );
    assert!(parse_err("userName").contains("expected an operator"));
}

#[test]
fn missing_value_is_reported() {
    let detail = parse_err("userName eq");
    assert!(detail.contains("missing value after 'eq'"), "{detail}");
    let detail = parse_err("userName eq bjensen");
    assert!(
        detail.contains("strings must be in double quotes"),
        "{detail}"
    );
    assert!(detail.contains("'bjensen'"), "{detail}");
}

#[test]
fn trailing_garbage_is_reported_with_its_offset() {
    let detail = parse_err(r#"userName eq "a" garbage"#);
    assert!(detail.contains("'garbage' at offset 16"), "{detail}");
    assert!(parse_err("a pr and").contains("the end of the filter"));
    assert!(parse_err("a pr andb pr").contains("unexpected text"));
}

#[test]
fn malformed_attribute_paths_are_invalid_filters() {
    assert!(parse_err("1abc pr").contains("'1abc' is not an attribute name"));
    assert!(parse_err("foo:bar pr").contains("is not a URN"));
    assert!(parse_err("a.b.c pr").contains("at most one sub-attribute"));
    assert!(parse_err("   ").contains("empty filter"));
    assert!(parse_err("\"x\" eq a").contains("expected an attribute path"));
}

#[test]
fn too_long_filters_name_the_limit() {
    let limits = FilterLimits {
        max_len: 10,
        max_depth: 32,
    };
    let err = parse("userName eq \"bjensen\"", &limits).unwrap_err();
    assert!(
        matches!(&err, ScimError::InvalidFilter(d) if d.contains("max_len") && d.contains("10")),
        "{err}"
    );
}

#[test]
fn too_deep_filters_name_the_limit() {
    let limits = FilterLimits {
        max_len: 1 << 20,
        max_depth: 2,
    };
    assert!(parse("a pr and b pr and c pr", &limits).is_ok());
    assert!(parse("not (a pr and b pr)", &limits).is_ok());
    assert!(parse("((a pr))", &limits).is_ok());
    for text in [
        "a pr and b pr and c pr and d pr",
        "(((a pr)))",
        "not (((a pr)))",
        "x[(a pr and b pr)]",
    ] {
        let err = parse(text, &limits).unwrap_err();
        assert!(
            matches!(&err, ScimError::InvalidFilter(d) if d.contains("max_depth")),
            "{text}: {err}"
        );
    }
}

#[test]
fn hostile_nesting_fails_without_exhausting_the_stack() {
    let limits = FilterLimits {
        max_len: usize::MAX,
        max_depth: 32,
    };
    let text = "(".repeat(1_000_000);
    assert!(parse(&text, &limits).is_err());
    let text = "not (".repeat(200_000);
    assert!(parse(&text, &limits).is_err());
    let text = vec!["a pr"; 100_000].join(" and ");
    assert!(parse(&text, &limits).is_err());
}

#[test]
fn display_is_canonical() {
    let f = p(r#"USERNAME Eq "x\ty" AND (a PR OR NOT(b Gt 1.5)) and emails[TYPE eq true]"#);
    assert_eq!(
        f.to_string(),
        r#"USERNAME eq "x\ty" and (a pr or not (b gt 1.5)) and emails[TYPE eq true]"#
    );
    // A right-nested chain keeps its shape through parentheses.
    let right = and(pr("a"), and(pr("b"), pr("c")));
    assert_eq!(right.to_string(), "a pr and (b pr and c pr)");
    assert_eq!(p(&right.to_string()), right);
}

#[test]
fn parse_attr_path_errors_are_invalid_path() {
    assert!(matches!(
        parse_attr_path("a b"),
        Err(ScimError::InvalidPath(_))
    ));
    assert!(matches!(
        parse_attr_path(""),
        Err(ScimError::InvalidPath(_))
    ));
    assert_eq!(path_of("members.$ref").sub.as_deref(), Some("$ref"));
}

// --- evaluation --------------------------------------------------------------------------

#[test]
fn eq_on_case_insensitive_attributes_ignores_case() {
    assert!(m(r#"userName eq "bjensen@example.com""#));
    assert!(m(r#"USERNAME eq "BJENSEN@EXAMPLE.COM""#));
    assert!(!m(r#"userName eq "bjensen""#));
}

#[test]
fn id_and_external_id_are_case_exact() {
    assert!(m(r#"id eq "2819c223-7f76-453a-919d-413861904646""#));
    assert!(!m(r#"id eq "2819C223-7F76-453A-919D-413861904646""#));
    assert!(m(r#"externalId eq "Ext-1""#));
    assert!(!m(r#"externalId eq "ext-1""#));
    assert!(!m(r#"externalId sw "ext""#));
    assert!(m(r#"externalId sw "Ext""#));
}

#[test]
fn substring_operators_respect_case_exactness() {
    assert!(m(r#"userName co "JENSEN@""#));
    assert!(m(r#"userName sw "BJ""#));
    assert!(m(r#"userName ew ".COM""#));
    assert!(!m(r#"userName sw "jensen""#));
    assert!(!m(r#"userName ew "example""#));
    assert!(!m(r#"userName co "nobody""#));
}

#[test]
fn ordering_operators_compare_strings_case_insensitively() {
    assert!(m(r#"userName gt "BA""#));
    assert!(m(r#"userName ge "bjensen@example.com""#));
    assert!(m(r#"userName lt "C""#));
    assert!(m(r#"userName le "BJENSEN@EXAMPLE.COM""#));
    assert!(!m(r#"userName lt "b""#));
    assert!(!m(r#"userName gt "bz""#));
}

#[test]
fn ne_is_the_negation_of_eq_and_matches_absent_attributes() {
    assert!(m(r#"userName ne "someone""#));
    assert!(!m(r#"userName ne "BJENSEN@example.com""#));
    assert!(m(r#"nickName ne "x""#), "null counts as absent");
    assert!(m(r#"profileUrl ne "x""#), "absent");
    assert!(!m(r#"emails ne "babs@jensen.org""#), "one email is equal");
    assert!(
        !m(r#"noSuchAttribute ne "x""#),
        "unknown attributes never match"
    );
}

#[test]
fn eq_null_matches_absent_attributes() {
    assert!(m("nickName eq null"));
    assert!(m("profileUrl eq null"));
    assert!(!m("userName eq null"));
    assert!(m("userName ne null"));
    assert!(!m("userName gt null"));
}

#[test]
fn present_requires_a_non_empty_value() {
    assert!(m("userName pr"));
    assert!(m("name pr"));
    assert!(m("emails pr"));
    assert!(m("emails.type pr"));
    assert!(m("meta.lastModified pr"));
    assert!(!m("title pr"), "empty string");
    assert!(!m("nickName pr"), "null");
    assert!(!m("phoneNumbers pr"), "empty array");
    assert!(!m("profileUrl pr"), "absent");
    assert!(!m("emails.display pr"), "absent in every element");
    assert!(!m("noSuchAttribute pr"), "unknown");
    assert!(m("not (noSuchAttribute pr)"));
}

#[test]
fn booleans_compare_by_equality_only() {
    assert!(m("active eq true"));
    assert!(m("active eq TRUE"));
    assert!(!m("active eq false"));
    assert!(m("active ne false"));
    assert!(!m("active gt false"));
    assert!(
        !m(r#"active eq "true""#),
        "a string literal does not equal a boolean"
    );
}

#[test]
fn date_times_compare_as_instants() {
    assert!(m(r#"meta.lastModified gt "2011-05-13T04:42:33Z""#));
    assert!(!m(r#"meta.lastModified gt "2011-05-13T04:42:34Z""#));
    assert!(m(r#"meta.lastModified ge "2011-05-13T04:42:34Z""#));
    // The same instant written in another offset is equal, and ordering is chronological
    // rather than lexical.
    assert!(m(r#"meta.lastModified eq "2011-05-13T06:42:34+02:00""#));
    assert!(!m(r#"meta.lastModified lt "2011-05-13T05:00:00+00:30""#));
    assert!(m(r#"meta.lastModified lt "2011-05-13T06:00:00+01:00""#));
    assert!(m(r#"meta.created lt "2011-01-01T00:00:00.5Z""#));
    assert!(m(r#"meta.created sw "2010-01""#));
    // Unparsable literal: falls back to comparing text.
    assert!(m(r#"meta.created gt "2010""#));
    assert!(!m(r#"meta.created gt "2011""#));
}

#[test]
fn numbers_compare_numerically() {
    static COUNT: AttrDef = AttrDef {
        name: "count",
        ty: AttrType::Integer,
        multi_valued: false,
        description: "",
        required: false,
        case_exact: false,
        mutability: Mutability::ReadWrite,
        returned: Returned::Default,
        uniqueness: Uniqueness::None,
        canonical_values: &[],
        reference_types: &[],
        sub_attributes: &[],
    };
    let num = |n: f64| CompValue::Num(Number::from_f64(n).unwrap());
    assert!(compare_one(
        &json!(10),
        CompareOp::Gt,
        &CompValue::Num(9.into()),
        &COUNT
    ));
    assert!(compare_one(&json!(10), CompareOp::Eq, &num(10.0), &COUNT));
    assert!(compare_one(&json!(-3), CompareOp::Lt, &num(-2.5), &COUNT));
    assert!(compare_one(
        &json!(u64::MAX),
        CompareOp::Gt,
        &CompValue::Num(i64::MAX.into()),
        &COUNT
    ));
    assert!(!compare_one(
        &json!(10),
        CompareOp::Co,
        &CompValue::Num(1.into()),
        &COUNT
    ));
    assert!(!compare_one(
        &json!("10"),
        CompareOp::Eq,
        &CompValue::Num(10.into()),
        &COUNT
    ));
}

#[test]
fn multi_valued_attributes_match_when_any_value_matches() {
    assert!(m(r#"emails.value ew "@jensen.org""#));
    assert!(m(r#"emails.type eq "WORK""#));
    assert!(!m(r#"emails.type eq "other""#));
    // Without a sub-attribute, a complex multi-valued attribute compares its `value`.
    assert!(m(r#"emails co "babs@""#));
    assert!(m(r#"emails eq "BJENSEN@example.com""#));
    assert!(
        !m(r#"name eq "Barbara""#),
        "single-valued complex has no `value`"
    );
}

#[test]
fn value_path_requires_one_element_to_match_every_term() {
    assert!(m(r#"emails[type eq "work" and value co "example.com"]"#));
    assert!(!m(r#"emails[type eq "home" and value co "example.com"]"#));
    // The same terms outside a value path may match different elements.
    assert!(m(
        r#"emails.type eq "home" and emails.value co "example.com""#
    ));
    assert!(m(r#"emails[primary eq true]"#));
    assert!(m(r#"emails[not (primary pr)]"#));
    assert!(!m(r#"emails[nope pr]"#));
    assert!(!m(r#"userName[value pr]"#), "not complex");
    assert!(
        m(r#"name[givenName sw "barb"]"#),
        "single-valued complex works too"
    );
}

#[test]
fn extension_attributes_match_with_or_without_urn() {
    assert!(m(r#"employeeNumber eq "701984""#));
    assert!(m(&format!(r#"{ENTERPRISE}:employeeNumber eq "701984""#)));
    assert!(m(&format!(
        r#"{}:EMPLOYEENUMBER eq "701984""#,
        ENTERPRISE.to_lowercase()
    )));
    assert!(m(&format!(
        r#"{ENTERPRISE}:manager.value eq "26118915-6090-4610-87e4-49d8ca9f808d""#
    )));
    assert!(!m(&format!(
        r#"{ENTERPRISE}:manager.value eq "26118915-6090-4610-87E4-49D8CA9F808D""#
    )));
    assert!(m("manager pr"));
    assert!(!m("department pr"));
    assert!(!m(r#"urn:example:unknown:employeeNumber eq "701984""#));
    assert!(!matches(
        &p(r#"employeeNumber eq "701984""#),
        &json!({"userName": "x"}),
        ResourceKind::User
    ));
}

#[test]
fn core_urn_prefix_names_core_attributes() {
    assert!(m(
        r#"urn:ietf:params:scim:schemas:core:2.0:User:userName sw "bjensen""#
    ));
    assert!(m(
        r#"urn:ietf:params:scim:schemas:core:2.0:User:name.familyName eq "jensen""#
    ));
    assert!(!m(
        r#"urn:ietf:params:scim:schemas:core:2.0:Group:userName pr"#
    ));
}

#[test]
fn resource_attribute_names_match_case_insensitively() {
    let r = json!({ "USERNAME": "x", "Emails": [{ "VALUE": "a@b" }] });
    assert!(matches(&p(r#"userName eq "X""#), &r, ResourceKind::User));
    assert!(matches(
        &p(r#"emails.value eq "A@B""#),
        &r,
        ResourceKind::User
    ));
    assert!(matches(
        &p(r#"emails[value eq "a@b"]"#),
        &r,
        ResourceKind::User
    ));
}

#[test]
fn complex_filters_combine() {
    assert!(m(
        r#"userType eq "Employee" or (emails co "example.com" and not (active eq false))"#
    ));
    assert!(!m(
        r#"(userName sw "b" or displayName sw "b") and meta.lastModified lt "2000-01-01T00:00:00Z""#
    ));
    assert!(m(
        r#"(userName sw "x" or displayName sw "babs") and meta.lastModified gt "2000-01-01T00:00:00Z""#
    ));
}

#[test]
fn group_members_match_by_value_path() {
    let group = json!({
        "displayName": "Tour Guides",
        "members": [
            { "value": "2819c223-7f76-453a-919d-413861904646", "type": "User" },
            { "value": "902c246b-6245-4190-8e05-00816be7344a", "type": "User" }
        ]
    });
    let g = |text: &str| matches(&p(text), &group, ResourceKind::Group);
    assert!(g(
        r#"members[value eq "2819c223-7f76-453a-919d-413861904646"]"#
    ));
    assert!(!g(
        r#"members[value eq "2819C223-7F76-453A-919D-413861904646"]"#
    ));
    assert!(g(
        r#"members.value eq "902c246b-6245-4190-8e05-00816be7344a""#
    ));
    assert!(g(r#"displayName eq "tour guides""#));
    assert!(!g("userName pr"), "not a Group attribute");
}

#[test]
fn required_eq_collects_terms_every_match_must_satisfy() {
    let f = p(
        r#"userName eq "a" and (title pr or x eq "y") and emails[value eq "m"] and active eq true"#,
    );
    assert_eq!(
        required_eq(&f),
        vec![
            (path("userName"), "a".to_string()),
            (path("emails.value"), "m".to_string())
        ]
    );
    assert!(required_eq(&p(r#"userName eq "a" or userName eq "b""#)).is_empty());
    assert!(required_eq(&p(r#"not (userName eq "a")"#)).is_empty());
    assert!(required_eq(&p(r#"userName ne "a""#)).is_empty());
    assert_eq!(
        required_eq(&p(r#"externalId eq "E""#)),
        vec![(path("externalId"), "E".to_string())]
    );
}

// --- properties --------------------------------------------------------------------------

fn arb_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-zA-Z][a-zA-Z0-9_-]{0,6}",
        1 => "\\$[a-zA-Z][a-z0-9]{0,3}",
        // Keywords are valid attribute names too.
        1 => prop::sample::select(vec!["not", "and", "or", "pr", "eq", "true", "null"]).prop_map(String::from),
    ]
}

fn arb_path(simple: bool) -> BoxedStrategy<AttrPath> {
    if simple {
        return arb_name()
            .prop_map(|name| AttrPath {
                uri: None,
                name,
                sub: None,
            })
            .boxed();
    }
    (
        prop::option::of("urn:[a-z]{1,5}(:[a-zA-Z0-9.]{1,5}){0,3}"),
        arb_name(),
        prop::option::of(arb_name()),
    )
        .prop_map(|(uri, name, sub)| AttrPath { uri, name, sub })
        .boxed()
}

fn arb_value() -> impl Strategy<Value = CompValue> {
    prop_oneof![
        any::<String>().prop_map(CompValue::Str),
        any::<i64>().prop_map(|n| CompValue::Num(n.into())),
        any::<u64>().prop_map(|n| CompValue::Num(n.into())),
        any::<f64>()
            .prop_filter_map("finite", Number::from_f64)
            .prop_map(CompValue::Num),
        any::<bool>().prop_map(CompValue::Bool),
        Just(CompValue::Null),
    ]
}

fn arb_op() -> impl Strategy<Value = CompareOp> {
    use CompareOp::*;
    prop::sample::select(vec![Eq, Ne, Co, Sw, Ew, Gt, Ge, Lt, Le])
}

fn arb_leaf(simple: bool) -> BoxedStrategy<Filter> {
    prop_oneof![
        (arb_path(simple), arb_op(), arb_value()).prop_map(|(path, op, value)| Filter::Compare {
            path,
            op,
            value
        }),
        arb_path(simple).prop_map(Filter::Present),
    ]
    .boxed()
}

fn combine(leaf: BoxedStrategy<Filter>) -> BoxedStrategy<Filter> {
    leaf.prop_recursive(4, 24, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Filter::And(Box::new(a), Box::new(b))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Filter::Or(Box::new(a), Box::new(b))),
            inner.prop_map(|a| Filter::Not(Box::new(a))),
        ]
    })
    .boxed()
}

fn arb_filter() -> BoxedStrategy<Filter> {
    let value_path =
        (arb_path(true), combine(arb_leaf(true))).prop_map(|(path, f)| Filter::ValuePath {
            path,
            filter: Box::new(f),
        });
    combine(prop_oneof![3 => arb_leaf(false), 1 => value_path].boxed())
}

const ROOMY: FilterLimits = FilterLimits {
    max_len: usize::MAX,
    max_depth: 10_000,
};

proptest! {
    #[test]
    fn printing_then_parsing_gives_the_same_filter(f in arb_filter()) {
        let text = f.to_string();
        prop_assert_eq!(parse(&text, &ROOMY), Ok(f), "text: {}", text);
    }

    #[test]
    fn parsing_arbitrary_text_never_panics(text in any::<String>()) {
        let _ = parse(&text, &FilterLimits::default());
        let _ = parse_value_filter(&text, &FilterLimits::default());
        let _ = parse_attr_path(&text);
    }

    #[test]
    fn parsing_filter_like_text_never_panics_and_round_trips(
        text in r#"([a-zA-Z:.$]{1,6}|[ ()\[\]"\\]|eq|and|or|not|pr|-?[0-9.eE]{1,4}|\\u[0-9a-f]{0,4}|é){0,24}"#
    ) {
        if let Ok(f) = parse(&text, &ROOMY) {
            prop_assert_eq!(parse(&f.to_string(), &ROOMY), Ok(f));
        }
    }

    #[test]
    fn evaluation_agrees_with_a_reference_evaluator(
        resource in reference::arb_user(),
        f in reference::arb_user_filter(),
    ) {
        let text = f.to_string();
        prop_assert_eq!(
            matches(&f, &resource, ResourceKind::User),
            reference::eval(&f, &resource),
            "filter: {} resource: {}", text, resource
        );
    }
}

/// An independent, deliberately naive evaluator for a User subset whose schema facts are
/// written out by hand: `userName`, `displayName` (case-insensitive strings), `active`
/// (boolean) and `emails` (multi-valued complex; `value`, `type` case-insensitive strings,
/// `primary` boolean).
mod reference {
    use super::*;

    pub fn arb_user() -> impl Strategy<Value = Value> {
        let text = || prop::option::of("[aAbB]{0,3}");
        let email = (
            prop::option::of(prop::sample::select(vec!["work", "home", "WORK"])),
            text(),
            prop::option::of(any::<bool>()),
        )
            .prop_map(|(ty, value, primary)| {
                let mut e = Map::new();
                if let Some(t) = ty {
                    e.insert("type".into(), json!(t));
                }
                if let Some(v) = value {
                    e.insert("value".into(), json!(v));
                }
                if let Some(p) = primary {
                    e.insert("primary".into(), json!(p));
                }
                Value::Object(e)
            });
        (
            text(),
            text(),
            prop::option::of(any::<bool>()),
            prop::option::of(prop::collection::vec(email, 0..3)),
        )
            .prop_map(|(user_name, display_name, active, emails)| {
                let mut u = Map::new();
                if let Some(v) = user_name {
                    u.insert("userName".into(), json!(v));
                }
                if let Some(v) = display_name {
                    u.insert("displayName".into(), json!(v));
                }
                if let Some(v) = active {
                    u.insert("active".into(), json!(v));
                }
                if let Some(v) = emails {
                    u.insert("emails".into(), json!(v));
                }
                Value::Object(u)
            })
    }

    fn lit() -> impl Strategy<Value = CompValue> {
        prop_oneof![
            4 => "[aAbB]{0,2}".prop_map(CompValue::Str),
            1 => any::<bool>().prop_map(CompValue::Bool),
            1 => Just(CompValue::Null),
            1 => (0i64..3).prop_map(|n| CompValue::Num(n.into())),
        ]
    }

    fn names(choices: &[&'static str]) -> impl Strategy<Value = AttrPath> {
        prop::sample::select(choices.to_vec()).prop_map(|t| split_attr_path(t).unwrap())
    }

    fn leaf(paths: &[&'static str]) -> BoxedStrategy<Filter> {
        prop_oneof![
            4 => (names(paths), arb_op(), lit()).prop_map(|(path, op, value)| Filter::Compare { path, op, value }),
            1 => names(paths).prop_map(Filter::Present),
        ]
        .boxed()
    }

    pub fn arb_user_filter() -> BoxedStrategy<Filter> {
        let top = [
            "userName",
            "USERNAME",
            "displayName",
            "active",
            "emails",
            "emails.value",
            "emails.TYPE",
            "emails.primary",
            "title",
        ];
        let inner = ["value", "type", "Primary", "display"];
        let value_path = combine(leaf(&inner)).prop_map(|f| Filter::ValuePath {
            path: split_attr_path("emails").unwrap(),
            filter: Box::new(f),
        });
        combine(prop_oneof![3 => leaf(&top), 1 => value_path].boxed())
    }

    #[derive(Clone, Copy, PartialEq)]
    enum Kind {
        Text,
        Flag,
    }

    /// The values a (top-level) path reaches and their kind; `None` for unknown names.
    fn values(path: &AttrPath, user: &Value) -> Option<(Vec<Value>, Kind)> {
        let field = |v: &Value, k: &str| {
            v.get(k)
                .cloned()
                .into_iter()
                .filter(|x| !x.is_null())
                .collect::<Vec<_>>()
        };
        let emails: Vec<Value> = user
            .get("emails")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let of_emails = |k: &str| emails.iter().flat_map(|e| field(e, k)).collect::<Vec<_>>();
        let name = path.name.to_lowercase();
        let sub = path.sub.as_ref().map(|s| s.to_lowercase());
        Some(match (name.as_str(), sub.as_deref()) {
            ("username", None) => (field(user, "userName"), Kind::Text),
            ("displayname", None) => (field(user, "displayName"), Kind::Text),
            ("title", None) => (field(user, "title"), Kind::Text),
            ("active", None) => (field(user, "active"), Kind::Flag),
            ("emails", None | Some("value")) => (of_emails("value"), Kind::Text),
            ("emails", Some("type")) => (of_emails("type"), Kind::Text),
            ("emails", Some("primary")) => (of_emails("primary"), Kind::Flag),
            _ => return None,
        })
    }

    fn inner_values(path: &AttrPath, email: &Value) -> Option<(Vec<Value>, Kind)> {
        let field = |k: &str| {
            email
                .get(k)
                .cloned()
                .into_iter()
                .filter(|x| !x.is_null())
                .collect::<Vec<_>>()
        };
        Some(match path.name.to_lowercase().as_str() {
            "value" => (field("value"), Kind::Text),
            "type" => (field("type"), Kind::Text),
            "display" => (field("display"), Kind::Text),
            "primary" => (field("primary"), Kind::Flag),
            _ => return None,
        })
    }

    fn one(actual: &Value, op: CompareOp, lit: &CompValue, kind: Kind) -> bool {
        match (kind, actual, lit) {
            (Kind::Text, Value::String(a), CompValue::Str(l)) => {
                let (a, l) = (a.to_lowercase(), l.to_lowercase());
                match op {
                    CompareOp::Eq => a == l,
                    CompareOp::Ne => a != l,
                    CompareOp::Co => a.contains(&l),
                    CompareOp::Sw => a.starts_with(&l),
                    CompareOp::Ew => a.ends_with(&l),
                    CompareOp::Gt => a > l,
                    CompareOp::Ge => a >= l,
                    CompareOp::Lt => a < l,
                    CompareOp::Le => a <= l,
                }
            }
            (Kind::Flag, Value::Bool(a), CompValue::Bool(l)) => op == CompareOp::Eq && a == l,
            _ => false,
        }
    }

    fn check(found: Option<(Vec<Value>, Kind)>, f: &Filter) -> bool {
        let Some((vals, kind)) = found else {
            return false;
        };
        match f {
            Filter::Present(_) => vals.iter().any(|v| v != &json!("")),
            Filter::Compare {
                op,
                value: CompValue::Null,
                ..
            } => match op {
                CompareOp::Eq => vals.is_empty(),
                CompareOp::Ne => !vals.is_empty(),
                _ => false,
            },
            Filter::Compare {
                op: CompareOp::Ne,
                value,
                ..
            } => !vals.iter().any(|v| one(v, CompareOp::Eq, value, kind)),
            Filter::Compare { op, value, .. } => vals.iter().any(|v| one(v, *op, value, kind)),
            _ => unreachable!(),
        }
    }

    fn eval_inner(f: &Filter, email: &Value) -> bool {
        match f {
            Filter::And(a, b) => eval_inner(a, email) && eval_inner(b, email),
            Filter::Or(a, b) => eval_inner(a, email) || eval_inner(b, email),
            Filter::Not(a) => !eval_inner(a, email),
            Filter::Present(p) | Filter::Compare { path: p, .. } => {
                check(inner_values(p, email), f)
            }
            Filter::ValuePath { .. } => false,
        }
    }

    pub fn eval(f: &Filter, user: &Value) -> bool {
        match f {
            Filter::And(a, b) => eval(a, user) && eval(b, user),
            Filter::Or(a, b) => eval(a, user) || eval(b, user),
            Filter::Not(a) => !eval(a, user),
            // `pr` on a complex attribute asks for any non-empty sub-attribute.
            Filter::Present(p) if p.name.eq_ignore_ascii_case("emails") && p.sub.is_none() => user
                .get("emails")
                .and_then(Value::as_array)
                .is_some_and(|emails| {
                    emails
                        .iter()
                        .filter_map(Value::as_object)
                        .any(|e| e.values().any(|v| !v.is_null() && v != &json!("")))
                }),
            Filter::Present(p) | Filter::Compare { path: p, .. } => check(values(p, user), f),
            Filter::ValuePath { filter, .. } => user
                .get("emails")
                .and_then(Value::as_array)
                .is_some_and(|emails| emails.iter().any(|e| eval_inner(filter, e))),
        }
    }
}
