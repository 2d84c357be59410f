//! Sticky access attributes: attributes whose *restrictive* values win every concurrent write.
//!
//! `active` is always one (`false` is restrictive: offboarding wins). A tenant may name more
//! ([`StickySet`]): an attribute that gates access downstream, such as `userType` with
//! `"Terminated"`, or the enterprise `organization` some IdPs map employment status to. Each
//! sticky attribute follows the laws of `active`:
//!
//! 1. If any write of a restrictive value is concurrent with or after every other write it does
//!    not causally precede, the merged value is restrictive (when several concurrent
//!    restrictive writes differ, one chosen the same way on every region: [`winner`]).
//! 2. A write by a region that had already seen the restrictive value (a rehire) overwrites it.
//! 3. Re-asserting a restrictive value is a new write, never a no-op, so it also beats a
//!    concurrent reversal.
//!
//! Why the restrictive mark is stored in the document (`r` in the flag) and not decided when
//! reading: every region must materialise the same view from the same changes whatever its own
//! configuration says, including while a configuration change rolls through the cluster. The
//! region that accepted a write decides, once, whether that write restricts access; merging
//! and reading need no configuration at all.
//!
//! Layout: each write is a fresh map `{ "value", "r", "at", "by" }` under the attribute's key
//! in `a` (see [`super::layout`]), so every explicit write is a new op that concurrent writes
//! cannot silently overwrite, and all concurrent ones stay visible to `get_all`. `active` keeps
//! its original flag (a boolean `value`, no `r`: restrictive when `false`); other attributes
//! store their JSON text in `value`, as plain attributes do. Pure: no I/O.

use automerge::{AutoCommit, ObjId, ObjType, ReadDoc, ScalarValue, Value};
use serde_json::Value as Json;

use super::layout::{ACTIVE, AT, BY, VALUE};
use super::ConflictError;

/// The key of the restrictive mark inside a flag.
pub const RESTRICTIVE: &str = "r";

/// One sticky attribute of a tenant: its stored key and the values that restrict access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StickyRule {
    /// The attribute's stored (flattened) key: `userType`, or `<extension URN>:<attribute>`.
    pub key: String,
    /// The values that win (compared case-insensitively for strings when `case_exact` is off).
    pub restrictive: Vec<Json>,
    /// Whether string values compare case-sensitively (the attribute's `caseExact`).
    pub case_exact: bool,
}

/// The sticky attributes of a tenant besides `active`, which is always sticky.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StickySet {
    rules: Vec<StickyRule>,
}

impl StickySet {
    pub fn new(rules: Vec<StickyRule>) -> StickySet {
        StickySet { rules }
    }

    /// For a sticky attribute, whether writing `value` restricts access; `None` when `key` is
    /// an ordinary attribute.
    pub fn restrictive(&self, key: &str, value: &Json) -> Option<bool> {
        if key == ACTIVE {
            return Some(value == &Json::Bool(false));
        }
        let rule = self.rules.iter().find(|r| r.key == key)?;
        Some(
            rule.restrictive
                .iter()
                .any(|r| same(r, value, rule.case_exact)),
        )
    }

    /// The configured rules (without the built-in `active`).
    pub fn rules(&self) -> &[StickyRule] {
        &self.rules
    }

    /// Does this SCIM view (a user) hold a restrictive value: `active: false`, or a sticky
    /// attribute at one of its restrictive values? Such a write is an offboarding: it waits
    /// for the offboarding quorum and is tracked until every region has it.
    pub fn restricts(&self, view: &Json) -> bool {
        if view.get(ACTIVE) == Some(&Json::Bool(false)) {
            return true;
        }
        self.rules.iter().any(|rule| {
            let value = match rule.key.rsplit_once(':') {
                Some((urn, name)) if rule.key.starts_with("urn:") => {
                    view.get(urn).and_then(|ext| ext.get(name))
                }
                _ => view.get(&rule.key),
            };
            value.is_some_and(|v| self.restrictive(&rule.key, v) == Some(true))
        })
    }
}

/// The sticky attributes a tenant names, checked against the User schema: each must be a
/// single-valued, writable, simple attribute (core, or `<extension URN>:<name>`), not `id` or
/// `userName`, with restrictive values of its type. The error says which entry and why.
pub fn resolve(entries: &[(String, Vec<Json>)]) -> Result<StickySet, String> {
    use crate::scim::schema::{self, AttrType, ResourceKind};
    let mut rules = Vec::with_capacity(entries.len());
    for (i, (name, values)) in entries.iter().enumerate() {
        let (uri, attr) = match name.rsplit_once(':') {
            Some((uri, attr)) if name.starts_with("urn:") => (Some(uri), attr),
            _ => (None, name.as_str()),
        };
        let Some(r) = schema::resolve(ResourceKind::User, uri, attr, None) else {
            return Err(format!(
                "sticky[{i}].attribute {name:?} is not a User attribute (core name, or \
                 <extension URN>:<name>)"
            ));
        };
        let def = r.attr;
        if def.multi_valued || def.ty == AttrType::Complex || !def.is_writable() {
            return Err(format!(
                "sticky[{i}].attribute {name:?} must be single-valued, simple and writable"
            ));
        }
        if ["id", "userName", "active", "externalId"].contains(&def.name) {
            return Err(format!(
                "sticky[{i}].attribute {name:?} cannot be sticky (identity or built in)"
            ));
        }
        let fits = |v: &Json| match def.ty {
            AttrType::Boolean => v.is_boolean(),
            AttrType::Integer => v.is_i64() || v.is_u64(),
            AttrType::Decimal => v.is_number(),
            _ => v.is_string(),
        };
        if let Some(v) = values.iter().find(|v| !fits(v)) {
            return Err(format!(
                "sticky[{i}].restrictive: {v} is not a value of {name:?} ({:?})",
                def.ty
            ));
        }
        let key = if r.extension {
            format!("{}:{}", r.schema.id, def.name)
        } else {
            def.name.to_string()
        };
        rules.push(StickyRule {
            key,
            restrictive: values.clone(),
            case_exact: def.case_exact,
        });
    }
    Ok(StickySet::new(rules))
}

fn same(a: &Json, b: &Json, case_exact: bool) -> bool {
    match (a, b) {
        (Json::String(x), Json::String(y)) if !case_exact => x.eq_ignore_ascii_case(y),
        _ => a == b,
    }
}

/// One concurrent value of an attribute, as the sticky rule sees it.
#[derive(Debug, Clone)]
pub struct Flag {
    pub value: Json,
    pub restrictive: bool,
    /// The region and time written inside the flag (empty for a plain value).
    pub by: String,
    pub at: String,
    /// The op that wrote it.
    pub op: ObjId,
}

/// Every concurrent value of `key` in the attributes map `attrs`, if at least one is a flag
/// (a map); `None` for an ordinary attribute. Plain values next to flags (written by a region
/// that did not treat the attribute as sticky) count as non-restrictive.
pub fn flags(
    doc: &AutoCommit,
    attrs: &ObjId,
    key: &str,
) -> Result<Option<Vec<Flag>>, ConflictError> {
    let all = doc.get_all(attrs, key)?;
    if !all
        .iter()
        .any(|(v, _)| matches!(v, Value::Object(ObjType::Map)))
    {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(all.len());
    for (value, op) in all {
        match value {
            Value::Object(ObjType::Map) => {
                let Some(value) = flag_value(doc, &op)? else {
                    continue;
                };
                let restrictive = match doc.get(&op, RESTRICTIVE)? {
                    Some((Value::Scalar(s), _)) => matches!(s.as_ref(), ScalarValue::Boolean(true)),
                    // `active`'s flag: restrictive when false.
                    _ => value == Json::Bool(false),
                };
                let text = |k: &str| -> Result<String, ConflictError> {
                    Ok(match doc.get(&op, k)? {
                        Some((Value::Scalar(s), _)) => match s.as_ref() {
                            ScalarValue::Str(t) => t.to_string(),
                            _ => String::new(),
                        },
                        _ => String::new(),
                    })
                };
                out.push(Flag {
                    value,
                    restrictive,
                    by: text(BY)?,
                    at: text(AT)?,
                    op,
                });
            }
            Value::Scalar(s) => {
                if let ScalarValue::Str(t) = s.as_ref() {
                    if let Ok(value) = serde_json::from_str::<Json>(t) {
                        out.push(Flag {
                            value,
                            restrictive: false,
                            by: String::new(),
                            at: String::new(),
                            op,
                        });
                    }
                }
            }
            Value::Object(_) => {}
        }
    }
    Ok(Some(out))
}

/// The value inside a flag: a boolean (`active`) or JSON text.
fn flag_value(doc: &AutoCommit, flag: &ObjId) -> Result<Option<Json>, ConflictError> {
    Ok(match doc.get(flag, VALUE)? {
        Some((Value::Scalar(s), _)) => match s.as_ref() {
            ScalarValue::Boolean(b) => Some(Json::Bool(*b)),
            ScalarValue::Str(t) => serde_json::from_str(t).ok(),
            _ => None,
        },
        _ => None,
    })
}

/// The restrictive value that wins among concurrent ones: the greatest `(by, at)` stamp, then
/// the greater op, the same on every region. `None` when no concurrent value restricts.
///
/// The order is the one `active` has always used: conflict record ids hash the winning op, so
/// another order would give records already stored a second id.
pub fn winner(flags: &[Flag]) -> Option<&Flag> {
    flags
        .iter()
        .filter(|f| f.restrictive)
        .max_by(|a, b| (&a.by, &a.at, &a.op).cmp(&(&b.by, &b.at, &b.op)))
}

/// The merged value of a sticky attribute: the winning restrictive value if there is one, else
/// Automerge's own winner (the greatest op, last of `get_all`).
pub fn merged(flags: &[Flag]) -> Option<&Flag> {
    winner(flags).or_else(|| flags.iter().max_by(|a, b| a.op.cmp(&b.op)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set() -> StickySet {
        StickySet::new(vec![StickyRule {
            key: "userType".into(),
            restrictive: vec![json!("Terminated")],
            case_exact: false,
        }])
    }

    #[test]
    fn names_resolve_against_the_user_schema() {
        let set = resolve(&[
            ("usertype".into(), vec![json!("Terminated")]),
            (
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:organization".into(),
                vec![json!("Offboarded")],
            ),
        ])
        .unwrap();
        let keys: Vec<&str> = set.rules().iter().map(|r| r.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "userType",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:organization"
            ]
        );
        for (name, values, want) in [
            ("nickName2", vec![json!("x")], "not a User attribute"),
            ("emails", vec![json!("x")], "single-valued"),
            ("userName", vec![json!("x")], "cannot be sticky"),
            ("userType", vec![json!(true)], "not a value of"),
        ] {
            let e = resolve(&[(name.into(), values)]).unwrap_err();
            assert!(e.contains(want), "{name}: {e}");
        }
    }

    #[test]
    fn a_view_restricts_when_inactive_or_at_a_restrictive_sticky_value() {
        let ext = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
        let s = StickySet::new(vec![
            set().rules[0].clone(),
            StickyRule {
                key: format!("{ext}:organization"),
                restrictive: vec![json!("Offboarded")],
                case_exact: false,
            },
        ]);
        assert!(s.restricts(&json!({"active": false})));
        assert!(!s.restricts(&json!({"active": true, "userType": "Employee"})));
        assert!(s.restricts(&json!({"active": true, "userType": "TERMINATED"})));
        assert!(s.restricts(&json!({ext: {"organization": "offboarded"}})));
        assert!(!s.restricts(&json!({ext: {"organization": "Acme"}})));
        assert!(!StickySet::default().restricts(&json!({"userType": "Terminated"})));
    }

    #[test]
    fn active_is_always_sticky_and_false_restricts() {
        let s = StickySet::default();
        assert_eq!(s.restrictive("active", &json!(false)), Some(true));
        assert_eq!(s.restrictive("active", &json!(true)), Some(false));
        assert_eq!(s.restrictive("title", &json!("x")), None);
    }

    #[test]
    fn configured_values_restrict_case_insensitively_unless_case_exact() {
        let s = set();
        assert_eq!(s.restrictive("userType", &json!("terminated")), Some(true));
        assert_eq!(s.restrictive("userType", &json!("Employee")), Some(false));
        let exact = StickySet::new(vec![StickyRule {
            case_exact: true,
            ..set().rules[0].clone()
        }]);
        assert_eq!(
            exact.restrictive("userType", &json!("terminated")),
            Some(false)
        );
    }
}
