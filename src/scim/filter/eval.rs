//! Evaluating a filter against a resource in SCIM wire JSON, typed by the schema (the rules
//! are in the module docs of `super`).

use std::cmp::Ordering;

use serde_json::{Map, Number, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::{AttrPath, CompValue, CompareOp, Filter};
use crate::scim::schema::{self, AttrDef, AttrType, ResourceKind};

/// Where attribute paths are looked up: the resource itself, or one element of a multi-valued
/// complex attribute inside a value filter (`emails[type eq "work"]`).
#[derive(Clone, Copy)]
pub(super) enum Scope<'a> {
    Resource {
        kind: ResourceKind,
        root: &'a Value,
    },
    Element {
        attr: &'static AttrDef,
        element: &'a Value,
    },
}

/// The values an attribute path reaches, arrays flattened, with the definition they share.
struct Located<'a> {
    def: &'static AttrDef,
    values: Vec<&'a Value>,
}

pub(super) fn eval(filter: &Filter, scope: Scope<'_>) -> bool {
    match filter {
        Filter::And(a, b) => eval(a, scope) && eval(b, scope),
        Filter::Or(a, b) => eval(a, scope) || eval(b, scope),
        Filter::Not(a) => !eval(a, scope),
        Filter::Present(path) => {
            locate(scope, path).is_some_and(|l| l.values.into_iter().any(is_present))
        }
        Filter::Compare { path, op, value } => compare(scope, path, *op, value),
        Filter::ValuePath { path, filter } => value_path(scope, path, filter),
    }
}

/// Look up `name` in a JSON object: the exact key first, then case-insensitively, because
/// attribute names are case-insensitive (RFC 7643 §2.1) even though we store canonical case.
pub(crate) fn get_ci<'a>(value: &'a Value, name: &str) -> Option<&'a Value> {
    let obj: &Map<String, Value> = value.as_object()?;
    obj.get(name).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

/// One value, or the elements of an array.
fn flatten(value: &Value) -> Vec<&Value> {
    match value {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    }
}

/// RFC 7644 `pr`: present and not null, not an empty string, not empty array/object.
fn is_present(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(items) => items.iter().any(is_present),
        Value::Object(map) => map.values().any(is_present),
        Value::Bool(_) | Value::Number(_) => true,
    }
}

/// Resolve `path` in `scope` and collect the values it reaches; `None` for unknown attributes.
fn locate<'a>(scope: Scope<'a>, path: &AttrPath) -> Option<Located<'a>> {
    match scope {
        Scope::Resource { kind, root } => {
            let r = schema::resolve(kind, path.uri.as_deref(), &path.name, path.sub.as_deref())?;
            let container = if r.extension {
                get_ci(root, r.schema.id)
            } else {
                Some(root)
            };
            let top = container.and_then(|c| get_ci(c, r.attr.name));
            let values = match (top, r.sub) {
                (None, _) => Vec::new(),
                (Some(v), None) => flatten(v),
                (Some(v), Some(sub)) => flatten(v)
                    .into_iter()
                    .filter_map(|e| get_ci(e, sub.name))
                    .flat_map(flatten)
                    .collect(),
            };
            Some(Located {
                def: r.leaf(),
                values,
            })
        }
        Scope::Element { attr, element } => {
            if path.uri.is_some() || path.sub.is_some() {
                return None;
            }
            let def = attr
                .sub_attributes
                .iter()
                .find(|s| s.name.eq_ignore_ascii_case(&path.name))?;
            let values = get_ci(element, def.name).map(flatten).unwrap_or_default();
            Some(Located { def, values })
        }
    }
}

fn compare(scope: Scope<'_>, path: &AttrPath, op: CompareOp, literal: &CompValue) -> bool {
    let Some(mut located) = locate(scope, path) else {
        return false;
    };
    if located.def.ty == AttrType::Complex {
        // `emails co "@x"` means the `value` sub-attribute (RFC 7644 §3.4.2.2).
        let Some(value_def) = located
            .def
            .sub_attributes
            .iter()
            .find(|s| s.name == "value")
        else {
            return false;
        };
        located.values = located
            .values
            .into_iter()
            .filter_map(|e| get_ci(e, "value"))
            .flat_map(flatten)
            .collect();
        located.def = value_def;
    }
    let values: Vec<&Value> = located
        .values
        .into_iter()
        .filter(|v| !v.is_null())
        .collect();
    match (op, literal) {
        (CompareOp::Eq, CompValue::Null) => values.is_empty(),
        (CompareOp::Ne, CompValue::Null) => !values.is_empty(),
        (_, CompValue::Null) => false,
        (CompareOp::Ne, _) => !values
            .iter()
            .any(|v| compare_one(v, CompareOp::Eq, literal, located.def)),
        _ => values
            .iter()
            .any(|v| compare_one(v, op, literal, located.def)),
    }
}

/// Compare one (non-null) attribute value with a literal under the attribute's definition.
pub(super) fn compare_one(
    actual: &Value,
    op: CompareOp,
    literal: &CompValue,
    def: &AttrDef,
) -> bool {
    match (def.ty, literal, actual) {
        (AttrType::DateTime, CompValue::Str(lit), Value::String(act)) => {
            let substring_op = matches!(op, CompareOp::Co | CompareOp::Sw | CompareOp::Ew);
            match (parse_instant(act), parse_instant(lit)) {
                (Some(a), Some(b)) if !substring_op => ordering_matches(op, a.cmp(&b)),
                _ => compare_strings(act, lit, op, def.case_exact),
            }
        }
        (
            AttrType::String | AttrType::Reference | AttrType::Binary,
            CompValue::Str(lit),
            Value::String(act),
        ) => compare_strings(act, lit, op, def.case_exact),
        (AttrType::Boolean, CompValue::Bool(lit), Value::Bool(act)) => match op {
            CompareOp::Eq => act == lit,
            CompareOp::Ne => act != lit,
            _ => false,
        },
        (AttrType::Integer | AttrType::Decimal, CompValue::Num(lit), Value::Number(act)) => {
            compare_numbers(act, lit).is_some_and(|ord| ordering_matches(op, ord))
        }
        _ => false,
    }
}

/// An RFC 3339 timestamp, for chronological comparison of `dateTime` attributes.
pub(crate) fn parse_instant(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).ok()
}

/// Does `ord` (actual compared with literal) satisfy `op`? `co`/`sw`/`ew` have no ordering.
fn ordering_matches(op: CompareOp, ord: Ordering) -> bool {
    match op {
        CompareOp::Eq => ord == Ordering::Equal,
        CompareOp::Ne => ord != Ordering::Equal,
        CompareOp::Gt => ord == Ordering::Greater,
        CompareOp::Ge => ord != Ordering::Less,
        CompareOp::Lt => ord == Ordering::Less,
        CompareOp::Le => ord != Ordering::Greater,
        CompareOp::Co | CompareOp::Sw | CompareOp::Ew => false,
    }
}

/// String operators; `caseExact = false` compares Unicode lower-case forms.
fn compare_strings(actual: &str, literal: &str, op: CompareOp, case_exact: bool) -> bool {
    let (a, l) = if case_exact {
        (actual.to_string(), literal.to_string())
    } else {
        (actual.to_lowercase(), literal.to_lowercase())
    };
    match op {
        CompareOp::Co => a.contains(&l),
        CompareOp::Sw => a.starts_with(&l),
        CompareOp::Ew => a.ends_with(&l),
        _ => ordering_matches(op, a.cmp(&l)),
    }
}

/// Numeric ordering: exact for integers, `f64` otherwise.
pub(crate) fn compare_numbers(a: &Number, b: &Number) -> Option<Ordering> {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return Some(x.cmp(&y));
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return Some(x.cmp(&y));
    }
    a.as_f64()?.partial_cmp(&b.as_f64()?)
}

/// `attr[inner]`: some element of the complex attribute `attr` matches `inner`.
fn value_path(scope: Scope<'_>, path: &AttrPath, inner: &Filter) -> bool {
    let Scope::Resource { kind, root } = scope else {
        return false;
    };
    if path.sub.is_some() {
        return false;
    }
    let Some(r) = schema::resolve(kind, path.uri.as_deref(), &path.name, None) else {
        return false;
    };
    if r.attr.ty != AttrType::Complex {
        return false;
    }
    let container = if r.extension {
        get_ci(root, r.schema.id)
    } else {
        Some(root)
    };
    let Some(value) = container.and_then(|c| get_ci(c, r.attr.name)) else {
        return false;
    };
    flatten(value).into_iter().any(|element| {
        element.is_object()
            && eval(
                inner,
                Scope::Element {
                    attr: r.attr,
                    element,
                },
            )
    })
}
