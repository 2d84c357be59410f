//! SCIM PATCH (RFC 7644 §3.5.2): parse a PatchOp request and apply it to a resource. Pure.
//!
//! # Semantics
//! - **Atomic**: ops apply to a copy; the resource is swapped only when every op succeeded and the
//!   result passes [`normalize_stored`] (so a PATCH can never leave what a POST would refuse, e.g.
//!   a User without `userName`).
//! - **Values** go through [`normalize_value`], the same type rules as POST/PUT: Entra's
//!   `"False"` strings become booleans, unknown sub-attributes are refused, `null`/`[]` unassign.
//! - **add** appends to multi-valued attributes (skipping exact duplicates; members are
//!   deduplicated by `value`), merges complex ones and sets simple ones. **replace** swaps the
//!   value wholesale (a multi-valued attribute gets exactly the new list), except that a complex
//!   single-valued attribute keeps the sub-attributes the value does not mention (§3.5.2.3).
//!   **remove** deletes the target; on a multi-valued attribute with a `value` list (Entra's
//!   `{"op":"Remove","path":"members","value":[{"value":"id"}]}`) only the listed values go.
//! - **Value filters** (`emails[type eq "work"].value`) act on every matching element. When add or
//!   replace matches nothing and the filter is a conjunction of `eq` terms, a new element is
//!   created from those terms (Entra relies on this to set a work email on a user that has none);
//!   any other filter matching nothing is `noTarget`. A remove that matches nothing succeeds:
//!   IdPs retry removals, and failing a retry would count against the app.
//! - **Mutability**: targeting a read-only attribute is `mutability`; an immutable one may be
//!   set while absent but never changed or removed. Setting `primary: true` on one value clears it
//!   on the others (RFC 7644 §3.5.2).
//! - **Cost**: member adds and removes use hash sets of member ids, so a 1,000-member PATCH on a
//!   10,000-member group is linear in the sizes, not their product.

mod apply;
#[cfg(test)]
mod tests;

pub use apply::apply;

use serde_json::{Map, Value};

use super::error::{ScimError, ScimResult};
use super::filter::FilterLimits;
use super::path::{parse_patch_path, PatchPath};
use super::schema::PATCH_OP_SCHEMA;

/// The three PATCH operations (names are accepted in any case: Entra sends `Replace`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchOpKind {
    Add,
    Remove,
    Replace,
}

impl PatchOpKind {
    fn name(self) -> &'static str {
        match self {
            PatchOpKind::Add => "add",
            PatchOpKind::Remove => "remove",
            PatchOpKind::Replace => "replace",
        }
    }
}

/// One operation of a PATCH request.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchOp {
    pub op: PatchOpKind,
    pub path: Option<PatchPath>,
    pub value: Option<Value>,
}

/// What applying a PATCH did, beyond the new resource JSON.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PatchOutcome {
    /// Top-level attributes (canonical names) that an op wrote explicitly, even when the value
    /// did not change: `active` is re-asserted on every explicit write (offboarding wins later).
    /// Extension attributes are URN-qualified (`urn:…:enterprise:2.0:User:department`). Each
    /// name appears once, in the order first targeted.
    pub explicit: Vec<String>,
}

/// Parse a PatchOp request body (`schemas`, `Operations`), at most `max_ops` operations.
///
/// Key names (`Operations`, `op`, `path`, `value`) and op names match case-insensitively.
/// A `path` that is empty or `null` counts as absent.
pub fn parse_request(
    body: &Value,
    max_ops: usize,
    limits: &FilterLimits,
) -> ScimResult<Vec<PatchOp>> {
    let Some(obj) = body.as_object() else {
        return Err(ScimError::InvalidSyntax(
            "a PATCH body must be a JSON object with 'schemas' and 'Operations'".into(),
        ));
    };
    let declares_patch_op = get_ci(obj, "schemas")
        .and_then(Value::as_array)
        .is_some_and(|s| {
            s.iter().any(|u| {
                u.as_str()
                    .is_some_and(|u| u.eq_ignore_ascii_case(PATCH_OP_SCHEMA))
            })
        });
    if !declares_patch_op {
        return Err(ScimError::InvalidValue(format!(
            "a PATCH body must declare \"schemas\": [\"{PATCH_OP_SCHEMA}\"]"
        )));
    }
    let Some(ops) = get_ci(obj, "Operations") else {
        return Err(ScimError::InvalidValue(
            "a PATCH body must have an 'Operations' array".into(),
        ));
    };
    let Some(ops) = ops.as_array() else {
        return Err(ScimError::InvalidSyntax(
            "'Operations' must be an array".into(),
        ));
    };
    if ops.is_empty() {
        return Err(ScimError::InvalidValue(
            "'Operations' is empty: a PATCH needs at least one operation".into(),
        ));
    }
    if ops.len() > max_ops {
        return Err(ScimError::TooMany(format!(
            "the PATCH has {} operations, more than the limit of {max_ops}",
            ops.len()
        )));
    }
    ops.iter()
        .enumerate()
        .map(|(i, op)| parse_op(op, limits).map_err(|e| prefix(e, &format!("operation {}", i + 1))))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

fn get_ci<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

fn parse_op(op: &Value, limits: &FilterLimits) -> ScimResult<PatchOp> {
    let Some(obj) = op.as_object() else {
        return Err(ScimError::InvalidSyntax(
            "an operation must be a JSON object".into(),
        ));
    };
    let kind = match get_ci(obj, "op") {
        Some(Value::String(s)) if s.eq_ignore_ascii_case("add") => PatchOpKind::Add,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("remove") => PatchOpKind::Remove,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("replace") => PatchOpKind::Replace,
        Some(other) => {
            return Err(ScimError::InvalidValue(format!(
                "'op' must be \"add\", \"remove\" or \"replace\", got {other}"
            )))
        }
        None => return Err(ScimError::InvalidValue("missing 'op'".into())),
    };
    let path = match get_ci(obj, "path") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => Some(parse_patch_path(s, limits).map_err(|e| match e {
            ScimError::InvalidPath(d) => ScimError::InvalidPath(d),
            other => ScimError::InvalidPath(format!("invalid path '{s}': {}", other.detail())),
        })?),
        Some(other) => {
            return Err(ScimError::InvalidPath(format!(
                "'path' must be a string, got {other}"
            )))
        }
    };
    let value = get_ci(obj, "value").cloned();
    match kind {
        PatchOpKind::Add | PatchOpKind::Replace if value.is_none() => Err(ScimError::InvalidValue(
            format!("'{}' needs a 'value'", kind.name()),
        )),
        PatchOpKind::Remove if path.is_none() => Err(ScimError::NoTarget(
            "'remove' needs a 'path' naming what to remove".into(),
        )),
        _ => Ok(PatchOp {
            op: kind,
            path,
            value,
        }),
    }
}

/// The same error with `what: ` in front of its detail.
fn prefix(e: ScimError, what: &str) -> ScimError {
    use ScimError::*;
    let d = |d: String| format!("{what}: {d}");
    match e {
        InvalidFilter(x) => InvalidFilter(d(x)),
        InvalidPath(x) => InvalidPath(d(x)),
        InvalidSyntax(x) => InvalidSyntax(d(x)),
        InvalidValue(x) => InvalidValue(d(x)),
        Mutability(x) => Mutability(d(x)),
        NoTarget(x) => NoTarget(d(x)),
        TooMany(x) => TooMany(d(x)),
        InvalidCursor(x) => InvalidCursor(d(x)),
        ExpiredCursor(x) => ExpiredCursor(d(x)),
        InvalidCount(x) => InvalidCount(d(x)),
        BadRequest(x) => BadRequest(d(x)),
        Unauthorized(x) => Unauthorized(d(x)),
        NotFound(x) => NotFound(d(x)),
        MethodNotAllowed(x) => MethodNotAllowed(d(x)),
        Uniqueness(x) => Uniqueness(d(x)),
        Conflict(x) => Conflict(d(x)),
        PreconditionFailed(x) => PreconditionFailed(d(x)),
        PayloadTooLarge(x) => PayloadTooLarge(d(x)),
        RequestTimeout(x) => RequestTimeout(d(x)),
        UnsupportedMediaType(x) => UnsupportedMediaType(d(x)),
        Unavailable(x) => Unavailable(d(x)),
        Internal(x) => Internal(d(x)),
    }
}
