//! Group members in requests: which members a PATCH touches, which a filter names, and whether
//! an answer shows them. Pure.
//!
//! Members are records of their own in storage (one per group and member), so a request must
//! only read and write the members it names: a PATCH adding one member to a group of a million
//! loads one record, not a million. [`touched`] tells the store which records a PATCH can
//! change; the PATCH engine then runs unchanged on the group with just those members (their
//! presence decides every rule it applies: duplicates, removals that match nothing, value
//! filters), and only the differences are written.

use std::collections::BTreeSet;

use serde_json::Value;

use super::filter::{AttrPath, CompValue, CompareOp, Filter};
use super::patch::{PatchOp, PatchOpKind};
use super::schema::ResourceKind;

/// The members a request can change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Touch {
    /// Exactly these member ids (possibly none).
    Ids(BTreeSet<String>),
    /// Any member: a `replace` of the whole list, a removal of all members, a value filter on
    /// something else than `value`. Costs the group's size, as the request asks for.
    All,
}

impl Touch {
    fn add(&mut self, ids: impl IntoIterator<Item = String>) {
        if let Touch::Ids(set) = self {
            set.extend(ids);
        }
    }
}

/// Is `path` the Group `members` attribute (any case, with or without the core schema URN)?
pub fn is_members(path: &AttrPath) -> bool {
    path.name.eq_ignore_ascii_case("members")
        && path
            .uri
            .as_deref()
            .is_none_or(|u| u.eq_ignore_ascii_case(ResourceKind::Group.core_schema().id))
}

/// Is this key of a path-less PATCH value the `members` attribute?
fn is_members_key(key: &str) -> bool {
    let core = ResourceKind::Group.core_schema().id;
    key.eq_ignore_ascii_case("members")
        || key
            .strip_suffix(":members")
            .or_else(|| key.strip_suffix(":Members"))
            .is_some_and(|u| u.eq_ignore_ascii_case(core))
}

/// The member ids in a PATCH value: an array of member objects, or one object.
fn value_ids(value: Option<&Value>) -> Vec<String> {
    let items: Vec<&Value> = match value {
        Some(Value::Array(a)) => a.iter().collect(),
        Some(v @ Value::Object(_)) => vec![v],
        _ => Vec::new(),
    };
    items
        .into_iter()
        .filter_map(|m| {
            m.as_object()?
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("value"))
                .and_then(|(_, v)| v.as_str())
                .map(str::to_string)
        })
        .collect()
}

/// The ids a value filter selects when it only compares `value` for equality (`value eq "a"`,
/// possibly `or`-ed); `None` for any other filter.
pub fn filter_ids(filter: &Filter) -> Option<Vec<String>> {
    match filter {
        Filter::Compare {
            path,
            op: CompareOp::Eq,
            value: CompValue::Str(s),
        } if path.uri.is_none()
            && path.sub.is_none()
            && path.name.eq_ignore_ascii_case("value") =>
        {
            Some(vec![s.clone()])
        }
        Filter::Or(a, b) => {
            let mut ids = filter_ids(a)?;
            ids.extend(filter_ids(b)?);
            Some(ids)
        }
        _ => None,
    }
}

/// Which members a PATCH can change (see the module docs).
pub fn touched(ops: &[PatchOp]) -> Touch {
    let mut touch = Touch::Ids(BTreeSet::new());
    for op in ops {
        match &op.path {
            None => {
                let Some(obj) = op.value.as_ref().and_then(Value::as_object) else {
                    continue;
                };
                for (key, value) in obj {
                    if !is_members_key(key) {
                        continue;
                    }
                    match op.op {
                        PatchOpKind::Add => touch.add(value_ids(Some(value))),
                        _ => return Touch::All,
                    }
                }
            }
            Some(path) if is_members(&path.attr) => match (&path.filter, op.op) {
                (Some(f), _) => match filter_ids(f) {
                    Some(ids) => touch.add(ids),
                    None => return Touch::All,
                },
                // `members.display` without a filter: every member's display.
                (None, _) if path.attr.sub.is_some() => return Touch::All,
                (None, PatchOpKind::Add) => touch.add(value_ids(op.value.as_ref())),
                (None, PatchOpKind::Remove) => {
                    let ids = value_ids(op.value.as_ref());
                    if ids.is_empty() {
                        return Touch::All;
                    }
                    touch.add(ids);
                }
                (None, PatchOpKind::Replace) => return Touch::All,
            },
            Some(_) => {}
        }
    }
    touch
}

/// The member ids a PATCH removes by name (`remove` with a value list, or a `value eq` filter):
/// removed even where this region has not seen them added yet (the add may still be
/// replicating: the removal then wins over it, as a removal concurrent with an add does).
pub fn named_removals(ops: &[PatchOp]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for op in ops {
        let Some(path) = &op.path else {
            continue;
        };
        if op.op != PatchOpKind::Remove || !is_members(&path.attr) || path.attr.sub.is_some() {
            continue;
        }
        match (&path.filter, &path.sub_after_filter) {
            (Some(f), None) => out.extend(filter_ids(f).unwrap_or_default()),
            (None, _) => out.extend(value_ids(op.value.as_ref())),
            _ => {}
        }
    }
    out
}

/// Does an answer with this projection show `members`? Only then does it read them.
pub fn shown(attributes: &[AttrPath], excluded: &[AttrPath]) -> bool {
    let named = |paths: &[AttrPath]| paths.iter().any(is_members);
    let whole_group = |paths: &[AttrPath]| {
        paths.iter().any(|p| {
            p.sub.is_none()
                && p.uri.is_none()
                && p.name
                    .eq_ignore_ascii_case(ResourceKind::Group.core_schema().id)
        })
    };
    let excluded_members = excluded.iter().any(|p| is_members(p) && p.sub.is_none());
    if excluded_members {
        return false;
    }
    attributes.is_empty() || named(attributes) || whole_group(attributes)
}

/// What a Group filter asks of `members`: nothing, the presence of these ids (`members[value eq
/// "x"]`, `members.value eq "x"`, `members eq "x"`, anywhere in the filter), or something the
/// member records cannot answer without reading every member (`members.display co "x"`,
/// `members pr`), which is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterMembers {
    None,
    Ids(BTreeSet<String>),
    Unsupported,
}

/// Classify a Group filter's use of `members` (see [`FilterMembers`]).
pub fn filter_members(filter: &Filter) -> FilterMembers {
    let mut ids = BTreeSet::new();
    if walk(filter, &mut ids) {
        if ids.is_empty() {
            FilterMembers::None
        } else {
            FilterMembers::Ids(ids)
        }
    } else {
        FilterMembers::Unsupported
    }
}

/// Collect member ids compared for equality; false when members are used any other way.
fn walk(filter: &Filter, ids: &mut BTreeSet<String>) -> bool {
    match filter {
        Filter::Compare { path, op, value } if is_members(path) => {
            let by_value = path
                .sub
                .as_deref()
                .is_none_or(|s| s.eq_ignore_ascii_case("value"));
            match (op, value) {
                (CompareOp::Eq, CompValue::Str(s)) if by_value => {
                    ids.insert(s.clone());
                    true
                }
                _ => false,
            }
        }
        Filter::Present(path) => !is_members(path),
        Filter::Compare { .. } => true,
        Filter::And(a, b) | Filter::Or(a, b) => walk(a, ids) && walk(b, ids),
        Filter::Not(f) => walk(f, ids),
        Filter::ValuePath { path, filter } if is_members(path) => match filter_ids(filter) {
            Some(found) => {
                ids.extend(found);
                true
            }
            None => false,
        },
        Filter::ValuePath { .. } => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::filter::{parse, FilterLimits};
    use crate::scim::patch::parse_request;
    use serde_json::json;

    fn ops(v: Value) -> Vec<PatchOp> {
        parse_request(
            &json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": v}),
            1000,
            &FilterLimits::default(),
        )
        .unwrap()
    }

    fn ids(list: &[&str]) -> Touch {
        Touch::Ids(list.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn okta_and_entra_member_batches_touch_only_the_named_members() {
        let t = touched(&ops(json!([
            {"op": "add", "path": "members", "value": [{"value": "u1"}, {"value": "u2"}]},
            {"op": "Remove", "path": "members", "value": [{"value": "u3"}]},
            {"op": "remove", "path": "members[value eq \"u4\"]"},
            {"op": "replace", "path": "members[value eq \"u5\"].display", "value": "E"},
            {"op": "replace", "path": "displayName", "value": "G"},
            {"op": "add", "value": {"members": [{"value": "u6"}], "displayName": "H"}},
        ])));
        assert_eq!(t, ids(&["u1", "u2", "u3", "u4", "u5", "u6"]));
        assert_eq!(
            touched(&ops(
                json!([{"op": "replace", "path": "displayName", "value": "G"}])
            )),
            ids(&[])
        );
    }

    #[test]
    fn removals_by_name_are_listed() {
        let got = named_removals(&ops(json!([
            {"op": "Remove", "path": "members", "value": [{"value": "u3"}]},
            {"op": "remove", "path": "members[value eq \"u4\"]"},
            {"op": "remove", "path": "members[value eq \"u5\"].display"},
            {"op": "add", "path": "members", "value": [{"value": "u6"}]},
            {"op": "remove", "path": "members"},
        ])));
        assert_eq!(got, ["u3".to_string(), "u4".to_string()].into());
    }

    #[test]
    fn whole_list_operations_touch_every_member() {
        for body in [
            json!([{"op": "replace", "path": "members", "value": [{"value": "u1"}]}]),
            json!([{"op": "remove", "path": "members"}]),
            json!([{"op": "remove", "path": "members[type eq \"User\"]"}]),
            json!([{"op": "replace", "path": "members.display", "value": "x"}]),
            json!([{"op": "replace", "value": {"members": []}}]),
        ] {
            assert_eq!(touched(&ops(body.clone())), Touch::All, "{body}");
        }
    }

    #[test]
    fn answers_show_members_unless_projected_away() {
        let p = |s: &str| crate::scim::filter::parse_attr_path(s).unwrap();
        assert!(shown(&[], &[]));
        assert!(!shown(&[], &[p("members")]));
        assert!(shown(&[], &[p("members.display")]));
        assert!(!shown(&[p("displayName")], &[]));
        assert!(shown(&[p("members.value")], &[]));
    }

    #[test]
    fn filters_on_members_name_ids_or_are_refused() {
        let f = |s: &str| filter_members(&parse(s, &FilterLimits::default()).unwrap());
        assert_eq!(f("displayName eq \"x\""), FilterMembers::None);
        assert_eq!(
            f("members[value eq \"a\"] or members.value eq \"b\" and displayName sw \"x\""),
            FilterMembers::Ids(["a".to_string(), "b".to_string()].into())
        );
        assert_eq!(
            f("members eq \"c\""),
            FilterMembers::Ids(["c".to_string()].into())
        );
        assert_eq!(f("members.display co \"x\""), FilterMembers::Unsupported);
        assert_eq!(f("members pr"), FilterMembers::Unsupported);
        assert_eq!(f("members[display eq \"x\"]"), FilterMembers::Unsupported);
    }
}
