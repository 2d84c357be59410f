//! SCIM PATCH (RFC 7644 §3.5.2): parse a PatchOp request and apply it to a resource. Pure.

use serde_json::Value;

use super::error::ScimResult;
use super::filter::FilterLimits;
use super::path::PatchPath;
use super::schema::ResourceKind;

/// The three PATCH operations (names are accepted in any case: Entra sends `Replace`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchOpKind {
    Add,
    Remove,
    Replace,
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
    pub explicit: Vec<String>,
}

/// Parse a PatchOp request body (`schemas`, `Operations`), at most `max_ops` operations.
pub fn parse_request(
    body: &Value,
    max_ops: usize,
    limits: &FilterLimits,
) -> ScimResult<Vec<PatchOp>> {
    let _ = (body, max_ops, limits);
    todo!()
}

/// Apply `ops` in order to `resource` (SCIM JSON of type `kind`, as stored). Either all ops apply
/// or the resource is left untouched and the error says which op failed and why.
pub fn apply(
    resource: &mut Value,
    kind: ResourceKind,
    ops: &[PatchOp],
) -> ScimResult<PatchOutcome> {
    let _ = (resource, kind, ops);
    todo!()
}
