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

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::error::{ScimError, ScimResult};
use super::filter::{self, AttrPath, CompValue, CompareOp, Filter, FilterLimits};
use super::path::{parse_patch_path, PatchPath};
use super::resource::{
    normalize_element, normalize_stored, normalize_value, resolve_extension_key, resolve_top_key,
    TopKey,
};
use super::schema::{
    resolve, AttrDef, AttrType, Mutability, ResourceKind, Schema, PATCH_OP_SCHEMA,
};

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

/// Apply `ops` in order to `resource` (SCIM JSON of type `kind`, as stored). Either all ops apply
/// or the resource is left untouched and the error says which op failed and why.
pub fn apply(
    resource: &mut Value,
    kind: ResourceKind,
    ops: &[PatchOp],
) -> ScimResult<PatchOutcome> {
    let Some(obj) = resource.as_object() else {
        return Err(ScimError::Internal(
            "the stored resource is not a JSON object".into(),
        ));
    };
    let mut work = obj.clone();
    let mut outcome = PatchOutcome::default();
    let mut member_index = None;
    for (i, op) in ops.iter().enumerate() {
        let mut ctx = Ctx {
            work: &mut work,
            kind,
            explicit: &mut outcome.explicit,
            member_index: &mut member_index,
        };
        ctx.apply_op(op)
            .map_err(|e| prefix(e, &format!("operation {} ({})", i + 1, op.op.name())))?;
    }
    let result = normalize_stored(kind, &Value::Object(work))
        .map_err(|e| prefix(e, "the patched resource would be invalid"))?;
    *resource = result;
    Ok(outcome)
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

// ---------------------------------------------------------------------------------------------
// Applying
// ---------------------------------------------------------------------------------------------

/// A resolved top-level attribute: where it lives and what it is.
#[derive(Debug, Clone, Copy)]
struct Target {
    /// The extension schema, when the attribute lives under its URN key.
    ext: Option<&'static Schema>,
    attr: &'static AttrDef,
}

impl Target {
    /// The name reported in [`PatchOutcome::explicit`] and in error messages.
    fn label(self) -> String {
        match self.ext {
            None => self.attr.name.to_string(),
            Some(s) => format!("{}:{}", s.id, self.attr.name),
        }
    }

    fn is_members_like(self) -> bool {
        // Elements identified by their `value` alone (group members): a required, immutable
        // `value` means two elements with the same id are the same member.
        self.attr.multi_valued
            && self
                .attr
                .sub_attribute("value")
                .is_some_and(|v| v.required && v.mutability == Mutability::Immutable)
    }
}

/// The state of one PATCH application.
struct Ctx<'a> {
    work: &'a mut Map<String, Value>,
    kind: ResourceKind,
    explicit: &'a mut Vec<String>,
    /// The member ids of a members-like attribute, kept across ops while only `add` touches
    /// it, so a PATCH of 1,000 single-member add ops does not rebuild it 1,000 times. Every
    /// other way of reaching the list (`list`, `set`, `unset`) drops it.
    member_index: &'a mut Option<MemberIndex>,
}

/// The ids of the elements of one members-like attribute.
struct MemberIndex {
    attr: &'static AttrDef,
    ids: HashSet<String>,
}

impl Ctx<'_> {
    fn apply_op(&mut self, op: &PatchOp) -> ScimResult<()> {
        let Some(path) = &op.path else {
            return match op.op {
                PatchOpKind::Remove => Err(ScimError::NoTarget(
                    "'remove' needs a 'path' naming what to remove".into(),
                )),
                _ => self.apply_without_path(op.op, op.value.as_ref().unwrap_or(&Value::Null)),
            };
        };
        if let Some(ext) = self.extension_container(path) {
            return self.apply_to_extension(op, ext);
        }
        let resolved = resolve(
            self.kind,
            path.attr.uri.as_deref(),
            &path.attr.name,
            path.attr.sub.as_deref(),
        )
        .ok_or_else(|| {
            ScimError::InvalidPath(format!(
                "'{}' names no attribute of a {}",
                show(&path.attr),
                self.kind.name()
            ))
        })?;
        let target = Target {
            ext: resolved.extension.then_some(resolved.schema),
            attr: resolved.attr,
        };
        self.note(target);
        let value = op.value.as_ref();
        match (&path.filter, resolved.sub) {
            (None, None) => match op.op {
                PatchOpKind::Add => self.add(target, value.unwrap_or(&Value::Null)),
                PatchOpKind::Replace => self.replace(target, value.unwrap_or(&Value::Null)),
                PatchOpKind::Remove => self.remove(target, value),
            },
            (None, Some(sub)) => match op.op {
                PatchOpKind::Remove => self.remove_sub(target, sub),
                kind => self.set_sub(target, sub, value.unwrap_or(&Value::Null), kind),
            },
            (Some(filter), _) => {
                let sub = match &path.sub_after_filter {
                    None => None,
                    Some(s) => Some(target.attr.sub_attribute(s).ok_or_else(|| {
                        ScimError::InvalidPath(format!(
                            "'{}' has no sub-attribute '{s}'",
                            target.label()
                        ))
                    })?),
                };
                self.filtered(op.op, target, filter, sub, value)
            }
        }
    }

    /// A path naming an extension schema itself (`urn:…:enterprise:2.0:User`), which the path
    /// parser reads as URI `urn:…:enterprise:2.0` and attribute `User`.
    fn extension_container(&self, path: &PatchPath) -> Option<&'static Schema> {
        if path.filter.is_some() || path.attr.sub.is_some() {
            return None;
        }
        let full = match &path.attr.uri {
            Some(uri) => format!("{uri}:{}", path.attr.name),
            None => path.attr.name.clone(),
        };
        self.kind.extension(&full)
    }

    fn apply_to_extension(&mut self, op: &PatchOp, ext: &'static Schema) -> ScimResult<()> {
        match op.op {
            PatchOpKind::Remove => {
                for def in ext.attributes {
                    let target = Target {
                        ext: Some(ext),
                        attr: def,
                    };
                    if self.get(target).is_some() {
                        self.note(target);
                        self.remove(target, None)?;
                    }
                }
                Ok(())
            }
            kind => {
                let mut wrapped = Map::new();
                wrapped.insert(ext.id.to_string(), op.value.clone().unwrap_or(Value::Null));
                self.apply_without_path(kind, &Value::Object(wrapped))
            }
        }
    }

    /// add/replace without a path: the value is an object of attributes (RFC 7644 §3.5.2.1),
    /// whose keys may be dotted (`name.givenName`), URN-qualified, extension URNs, or whole
    /// paths with a value filter (`emails[type eq "work"].value`), each applied as that path.
    fn apply_without_path(&mut self, kind: PatchOpKind, value: &Value) -> ScimResult<()> {
        let Some(obj) = value.as_object() else {
            return Err(ScimError::InvalidValue(format!(
                "without a 'path', the value of '{}' must be an object of attributes",
                kind.name()
            )));
        };
        for (key, v) in obj {
            match resolve_top_key(self.kind, key) {
                // A key that is a whole path with a value filter
                // (`"emails[type eq \"work\"].value": "x"`): apply it as that path.
                None if key.contains('[') => {
                    let path = parse_patch_path(key, &FilterLimits::default())?;
                    self.apply_op(&PatchOp {
                        op: kind,
                        path: Some(path),
                        value: Some(v.clone()),
                    })?;
                }
                None => {
                    return Err(ScimError::InvalidValue(format!(
                        "unknown attribute '{key}' for resource type {}",
                        self.kind.name()
                    )))
                }
                Some(TopKey::Schemas) => {}
                Some(TopKey::Extension(ext)) => match v {
                    Value::Null => {}
                    Value::Object(inner) => {
                        for (k, v) in inner {
                            let Some((attr, sub)) = resolve_extension_key(ext, k)? else {
                                continue;
                            };
                            self.write_key(
                                kind,
                                Target {
                                    ext: Some(ext),
                                    attr,
                                },
                                sub,
                                v,
                            )?;
                        }
                    }
                    _ => {
                        return Err(ScimError::InvalidValue(format!(
                            "extension '{}' must be an object of its attributes",
                            ext.id
                        )))
                    }
                },
                Some(TopKey::Attr {
                    extension,
                    attr,
                    sub,
                }) => self.write_key(
                    kind,
                    Target {
                        ext: extension,
                        attr,
                    },
                    sub,
                    v,
                )?,
            }
        }
        Ok(())
    }

    /// One key of a path-less add/replace value.
    fn write_key(
        &mut self,
        kind: PatchOpKind,
        target: Target,
        sub: Option<&'static AttrDef>,
        v: &Value,
    ) -> ScimResult<()> {
        // A client echoing server state it read (an unchanged `id` or `meta`) is not trying
        // to change it; anything else aimed at a read-only attribute is refused below.
        if target.attr.mutability == Mutability::ReadOnly
            && sub.is_none()
            && self.get(target) == Some(v)
        {
            return Ok(());
        }
        self.note(target);
        match sub {
            None if kind == PatchOpKind::Add => self.add(target, v),
            None => self.replace(target, v),
            Some(sub) => self.set_sub(target, sub, v, kind),
        }
    }

    fn note(&mut self, target: Target) {
        let label = target.label();
        if !self.explicit.contains(&label) {
            self.explicit.push(label);
        }
    }

    // --- access -------------------------------------------------------------------------------

    fn get(&self, t: Target) -> Option<&Value> {
        match t.ext {
            None => self.work.get(t.attr.name),
            Some(s) => self.work.get(s.id)?.as_object()?.get(t.attr.name),
        }
        .filter(|v| !v.is_null())
    }

    fn container(&mut self, ext: Option<&'static Schema>) -> &mut Map<String, Value> {
        let Some(s) = ext else {
            return self.work;
        };
        let slot = self
            .work
            .entry(s.id.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if !slot.is_object() {
            *slot = Value::Object(Map::new());
        }
        match slot {
            Value::Object(m) => m,
            _ => unreachable!("just made an object"),
        }
    }

    fn set(&mut self, t: Target, v: Value) {
        *self.member_index = None;
        self.container(t.ext).insert(t.attr.name.to_string(), v);
    }

    fn unset(&mut self, t: Target) {
        *self.member_index = None;
        self.container(t.ext).remove(t.attr.name);
    }

    /// The list of a multi-valued attribute, created empty when absent.
    fn list(&mut self, t: Target) -> &mut Vec<Value> {
        *self.member_index = None;
        let slot = self
            .container(t.ext)
            .entry(t.attr.name.to_string())
            .or_insert_with(|| Value::Array(Vec::new()));
        if !slot.is_array() {
            *slot = Value::Array(Vec::new());
        }
        match slot {
            Value::Array(a) => a,
            _ => unreachable!("just made an array"),
        }
    }

    // --- mutability ---------------------------------------------------------------------------

    fn check_write(&self, t: Target, new: Option<&Value>) -> ScimResult<()> {
        match t.attr.mutability {
            Mutability::ReadOnly => Err(ScimError::Mutability(format!(
                "attribute '{}' is read-only",
                t.label()
            ))),
            Mutability::Immutable => match self.get(t) {
                Some(current) if Some(current) != new => Err(ScimError::Mutability(format!(
                    "attribute '{}' is immutable: it can be set once but not changed or removed",
                    t.label()
                ))),
                _ => Ok(()),
            },
            Mutability::ReadWrite | Mutability::WriteOnly => Ok(()),
        }
    }

    fn check_sub_write(
        t: Target,
        sub: &AttrDef,
        current: Option<&Value>,
        new: Option<&Value>,
    ) -> ScimResult<()> {
        match sub.mutability {
            Mutability::ReadOnly => Err(ScimError::Mutability(format!(
                "sub-attribute '{}.{}' is read-only",
                t.label(),
                sub.name
            ))),
            Mutability::Immutable => match current {
                Some(c) if !c.is_null() && Some(c) != new => Err(ScimError::Mutability(format!(
                    "sub-attribute '{}.{}' is immutable: it can be set once but not changed or removed",
                    t.label(),
                    sub.name
                ))),
                _ => Ok(()),
            },
            Mutability::ReadWrite | Mutability::WriteOnly => Ok(()),
        }
    }

    // --- whole attributes ---------------------------------------------------------------------

    fn add(&mut self, t: Target, value: &Value) -> ScimResult<()> {
        if t.attr.mutability == Mutability::ReadOnly {
            return self.check_write(t, None);
        }
        let Some(new) = normalize_value(t.attr, value, &t.label())? else {
            return Ok(()); // adding "nothing" (null, []) changes nothing
        };
        if !t.attr.multi_valued {
            let merged = match (self.get(t), &new) {
                (Some(Value::Object(old)), Value::Object(add)) => {
                    let mut m = old.clone();
                    m.extend(add.iter().map(|(k, v)| (k.clone(), v.clone())));
                    Value::Object(m)
                }
                _ => new,
            };
            self.check_write(t, Some(&merged))?;
            self.set(t, merged);
            return Ok(());
        }
        self.check_write(t, None)?;
        let Value::Array(items) = new else {
            return Ok(());
        };
        let members_like = t.is_members_like();
        let index = self
            .member_index
            .take()
            .filter(|ix| std::ptr::eq(ix.attr, t.attr));
        let list = self.list(t);
        let start = list.len();
        if members_like {
            let mut seen = match index {
                Some(ix) => ix.ids,
                None => list
                    .iter()
                    .filter_map(member_id)
                    .map(str::to_string)
                    .collect(),
            };
            for item in items {
                match member_id(&item) {
                    Some(id) if !seen.insert(id.to_string()) => {}
                    _ => list.push(item),
                }
            }
            let touched: Vec<usize> = (start..list.len()).collect();
            settle_primary(list, &touched);
            *self.member_index = Some(MemberIndex {
                attr: t.attr,
                ids: seen,
            });
            return Ok(());
        }
        // Other lists are short (a user's emails): a linear duplicate check is fine.
        for item in items {
            if !list.contains(&item) {
                list.push(item);
            }
        }
        let touched: Vec<usize> = (start..list.len()).collect();
        settle_primary(list, &touched);
        Ok(())
    }

    fn replace(&mut self, t: Target, value: &Value) -> ScimResult<()> {
        if t.attr.mutability == Mutability::ReadOnly {
            return self.check_write(t, None);
        }
        let new = normalize_value(t.attr, value, &t.label())?;
        let Some(new) = new else {
            return self.remove(t, None);
        };
        let new = match (t.attr.multi_valued, self.get(t), new) {
            // RFC 7644 §3.5.2.3: sub-attributes the value does not mention are left unchanged.
            (false, Some(Value::Object(old)), Value::Object(add)) => {
                let mut m = old.clone();
                m.extend(add);
                Value::Object(m)
            }
            (_, _, new) => new,
        };
        self.check_write(t, Some(&new))?;
        self.set(t, new);
        Ok(())
    }

    fn remove(&mut self, t: Target, value: Option<&Value>) -> ScimResult<()> {
        if self.get(t).is_none() {
            return Ok(()); // already unassigned: removing again is idempotent
        }
        if t.attr.mutability != Mutability::ReadWrite && t.attr.mutability != Mutability::WriteOnly
        {
            return Err(ScimError::Mutability(format!(
                "attribute '{}' is {} and cannot be removed",
                t.label(),
                if t.attr.mutability == Mutability::ReadOnly {
                    "read-only"
                } else {
                    "immutable"
                }
            )));
        }
        let listed = value.filter(|v| !v.is_null() && t.attr.multi_valued);
        let Some(listed) = listed else {
            if t.attr.required && t.ext.is_none() {
                return Err(ScimError::InvalidValue(format!(
                    "attribute '{}' is required and cannot be removed",
                    t.label()
                )));
            }
            self.unset(t);
            return Ok(());
        };
        // Remove only the listed values (Entra's member removal), never the whole attribute.
        let items: &[Value] = match listed {
            Value::Array(a) => a,
            one => std::slice::from_ref(one),
        };
        if t.is_members_like() {
            let ids: HashSet<&str> = items
                .iter()
                .filter_map(|i| match i {
                    Value::String(s) => Some(s.as_str()),
                    Value::Object(o) => get_ci(o, "value").and_then(Value::as_str),
                    _ => None,
                })
                .collect();
            self.list(t)
                .retain(|m| !member_id(m).is_some_and(|id| ids.contains(id)));
        } else {
            let mut doomed = Vec::with_capacity(items.len());
            for item in items {
                if let Some(v) = normalize_element(t.attr, item, &t.label())? {
                    doomed.push(v);
                }
            }
            self.list(t).retain(|v| !doomed.contains(v));
        }
        Ok(())
    }

    // --- sub-attributes without a filter ------------------------------------------------------

    /// add/replace `attr.sub`: on a complex attribute, set the sub-attribute; on a multi-valued
    /// one, set it on every element (creating one element when there is none).
    fn set_sub(
        &mut self,
        t: Target,
        sub: &'static AttrDef,
        value: &Value,
        kind: PatchOpKind,
    ) -> ScimResult<()> {
        if t.attr.mutability == Mutability::ReadOnly {
            return self.check_write(t, None);
        }
        let label = format!("{}.{}", t.label(), sub.name);
        if value.is_array() {
            return Err(ScimError::InvalidValue(format!(
                "'{label}' is single-valued but a list was given"
            )));
        }
        let new = normalize_element(sub, value, &label)?;
        let Some(new) = new else {
            return match kind {
                PatchOpKind::Add => Ok(()),
                _ => self.remove_sub(t, sub),
            };
        };
        if t.attr.multi_valued {
            let list = self.list(t);
            if list.is_empty() {
                let mut m = Map::new();
                m.insert(sub.name.to_string(), new);
                list.push(Value::Object(m));
                return Ok(());
            }
            for el in list.iter() {
                Self::check_sub_write(t, sub, el.get(sub.name), Some(&new))?;
            }
            for el in list.iter_mut() {
                if let Value::Object(m) = el {
                    m.insert(sub.name.to_string(), new.clone());
                }
            }
            return Ok(());
        }
        Self::check_sub_write(
            t,
            sub,
            self.get(t).and_then(|o| o.get(sub.name)),
            Some(&new),
        )?;
        let mut obj = match self.get(t) {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        obj.insert(sub.name.to_string(), new);
        self.set(t, Value::Object(obj));
        Ok(())
    }

    fn remove_sub(&mut self, t: Target, sub: &'static AttrDef) -> ScimResult<()> {
        if t.attr.mutability == Mutability::ReadOnly {
            return self.check_write(t, None);
        }
        if t.attr.multi_valued {
            if self.get(t).is_none() {
                return Ok(());
            }
            let list = self.list(t);
            for el in list.iter() {
                Self::check_sub_write(t, sub, el.get(sub.name), None)?;
            }
            for el in list.iter_mut() {
                if let Value::Object(m) = el {
                    m.remove(sub.name);
                }
            }
            return Ok(());
        }
        let Some(Value::Object(obj)) = self.get(t) else {
            return Ok(());
        };
        Self::check_sub_write(t, sub, obj.get(sub.name), None)?;
        let mut obj = obj.clone();
        obj.remove(sub.name);
        self.set(t, Value::Object(obj));
        Ok(())
    }

    // --- value filters ------------------------------------------------------------------------

    fn filtered(
        &mut self,
        kind: PatchOpKind,
        t: Target,
        filter: &Filter,
        sub: Option<&'static AttrDef>,
        value: Option<&Value>,
    ) -> ScimResult<()> {
        if !t.attr.multi_valued || t.attr.ty != AttrType::Complex {
            return Err(ScimError::InvalidPath(format!(
                "a value filter needs a multi-valued complex attribute; '{}' is not one",
                t.label()
            )));
        }
        if t.attr.mutability == Mutability::ReadOnly {
            return self.check_write(t, None);
        }
        if let Some(sub) = sub {
            if sub.mutability == Mutability::ReadOnly {
                return Self::check_sub_write(t, sub, None, None);
            }
        }
        let label = match sub {
            Some(s) => format!("{}.{}", t.label(), s.name),
            None => t.label(),
        };
        let kind_ = self.kind;
        let hits = {
            let list = match self.get(t) {
                Some(Value::Array(a)) => a.as_slice(),
                _ => &[],
            };
            matching(kind_, t, filter, list)
        };

        if kind == PatchOpKind::Remove {
            let list = self.list(t);
            match sub {
                Some(sub) => {
                    for &i in &hits {
                        Self::check_sub_write(t, sub, list[i].get(sub.name), None)?;
                    }
                    for &i in &hits {
                        if let Value::Object(m) = &mut list[i] {
                            m.remove(sub.name);
                        }
                    }
                }
                None => {
                    let doomed: HashSet<usize> = hits.into_iter().collect();
                    let mut i = 0;
                    list.retain(|_| {
                        i += 1;
                        !doomed.contains(&(i - 1))
                    });
                }
            }
            return Ok(());
        }

        let value = value.unwrap_or(&Value::Null);
        // The new value: a sub-attribute value, or a whole element.
        let new = match sub {
            Some(s) => {
                if value.is_array() {
                    return Err(ScimError::InvalidValue(format!(
                        "'{label}' is single-valued but a list was given"
                    )));
                }
                normalize_element(s, value, &label)?
            }
            None => {
                if !value.is_object() {
                    return Err(ScimError::InvalidValue(format!(
                        "the value for '{label}[...]' must be an object of its sub-attributes"
                    )));
                }
                normalize_element(t.attr, value, &label)?
            }
        };

        if hits.is_empty() {
            let Some(template) = eq_template(t, filter) else {
                return Err(ScimError::NoTarget(format!(
                    "no value of '{}' matches the filter of the path",
                    t.label()
                )));
            };
            // Create the element the filter describes, with the value written into it.
            let mut el = template;
            match (sub, new) {
                (_, None) => return Ok(()),
                (Some(s), Some(v)) => {
                    el.insert(s.name.to_string(), v);
                }
                (None, Some(Value::Object(m))) => el.extend(m),
                (None, Some(_)) => {}
            }
            let Some(el) = normalize_element(t.attr, &Value::Object(el), &label)? else {
                return Ok(());
            };
            let list = self.list(t);
            list.push(el);
            let touched = [list.len() - 1];
            settle_primary(list, &touched);
            return Ok(());
        }

        let list = self.list(t);
        match sub {
            Some(s) => {
                for &i in &hits {
                    Self::check_sub_write(t, s, list[i].get(s.name), new.as_ref())?;
                }
                for &i in &hits {
                    if let Value::Object(m) = &mut list[i] {
                        match &new {
                            Some(v) => {
                                m.insert(s.name.to_string(), v.clone());
                            }
                            None => {
                                m.remove(s.name);
                            }
                        }
                    }
                }
            }
            None => {
                let new_obj = match &new {
                    Some(Value::Object(m)) => m.clone(),
                    _ => Map::new(),
                };
                for &i in &hits {
                    let old = list[i].as_object().cloned().unwrap_or_default();
                    let next = match kind {
                        // add merges into the matching element; replace swaps it whole.
                        PatchOpKind::Add => {
                            let mut m = old.clone();
                            m.extend(new_obj.iter().map(|(k, v)| (k.clone(), v.clone())));
                            m
                        }
                        _ => new_obj.clone(),
                    };
                    for s in t.attr.sub_attributes {
                        Self::check_sub_write(t, s, old.get(s.name), next.get(s.name))?;
                    }
                    list[i] = Value::Object(next);
                }
            }
        }
        settle_primary(list, &hits);
        Ok(())
    }
}

/// The id of a group member (its `value`).
fn member_id(v: &Value) -> Option<&str> {
    v.get("value").and_then(Value::as_str)
}

/// If any touched element is now primary, no untouched one may stay primary (RFC 7644 §3.5.2:
/// setting `primary` on one value unsets it on the others).
fn settle_primary(list: &mut [Value], touched: &[usize]) {
    let is_primary = |v: &Value| v.get("primary") == Some(&Value::Bool(true));
    if !touched.iter().any(|&i| list.get(i).is_some_and(is_primary)) {
        return;
    }
    let touched: HashSet<usize> = touched.iter().copied().collect();
    for (i, el) in list.iter_mut().enumerate() {
        if !touched.contains(&i) && is_primary(el) {
            if let Value::Object(m) = el {
                m.insert("primary".into(), Value::Bool(false));
            }
        }
    }
}

/// Indices of the elements of `list` (values of `t`) that match the value filter.
fn matching(kind: ResourceKind, t: Target, filter: &Filter, list: &[Value]) -> Vec<usize> {
    // Fast path for `sub eq "literal"` on a case-exact sub-attribute (`members[value eq "id"]`,
    // what IdPs send for member removal): a plain string comparison per element.
    if let Filter::Compare {
        path: AttrPath {
            uri: None,
            name,
            sub: None,
        },
        op: CompareOp::Eq,
        value: CompValue::Str(lit),
    } = filter
    {
        if let Some(sub) = t.attr.sub_attribute(name) {
            if sub.case_exact
                && matches!(
                    sub.ty,
                    AttrType::String | AttrType::Reference | AttrType::Binary
                )
            {
                return list
                    .iter()
                    .enumerate()
                    .filter(|(_, el)| {
                        el.get(sub.name).and_then(Value::as_str) == Some(lit.as_str())
                    })
                    .map(|(i, _)| i)
                    .collect();
            }
        }
    }
    // General case: evaluate `attr[filter]` against a resource holding just that element, so
    // the filter module's type and case-exactness rules apply unchanged.
    let wrapped = Filter::ValuePath {
        path: AttrPath {
            uri: t.ext.map(|s| s.id.to_string()),
            name: t.attr.name.to_string(),
            sub: None,
        },
        filter: Box::new(filter.clone()),
    };
    list.iter()
        .enumerate()
        .filter(|(_, el)| {
            let mut holder = Map::new();
            holder.insert(t.attr.name.to_string(), Value::Array(vec![(*el).clone()]));
            let resource = match t.ext {
                None => Value::Object(holder),
                Some(s) => {
                    let mut root = Map::new();
                    root.insert(s.id.to_string(), Value::Object(holder));
                    Value::Object(root)
                }
            };
            filter::matches(&wrapped, &resource, kind)
        })
        .map(|(i, _)| i)
        .collect()
}

/// The element a filter of `eq` terms joined by `and` describes (`type eq "work"` ->
/// `{"type": "work"}`), or `None` when the filter is anything else.
fn eq_template(t: Target, filter: &Filter) -> Option<Map<String, Value>> {
    fn walk(t: Target, f: &Filter, out: &mut Map<String, Value>) -> bool {
        match f {
            Filter::And(a, b) => walk(t, a, out) && walk(t, b, out),
            Filter::Compare {
                path,
                op: CompareOp::Eq,
                value,
            } => {
                if path.sub.is_some() {
                    return false;
                }
                if let Some(uri) = &path.uri {
                    let owner = t.ext.map_or("", |s| s.id);
                    if !uri.eq_ignore_ascii_case(owner) {
                        return false;
                    }
                }
                let Some(sub) = t.attr.sub_attribute(&path.name) else {
                    return false;
                };
                let v = match value {
                    CompValue::Str(s) => Value::String(s.clone()),
                    CompValue::Num(n) => Value::Number(n.clone()),
                    CompValue::Bool(b) => Value::Bool(*b),
                    CompValue::Null => return false,
                };
                out.insert(sub.name.to_string(), v);
                true
            }
            _ => false,
        }
    }
    let mut out = Map::new();
    walk(t, filter, &mut out).then_some(out)
}

fn show(p: &AttrPath) -> String {
    let mut s = String::new();
    if let Some(u) = &p.uri {
        s.push_str(u);
        s.push(':');
    }
    s.push_str(&p.name);
    if let Some(sub) = &p.sub {
        s.push('.');
        s.push_str(sub);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::resource::normalize;
    use crate::scim::schema::{ENTERPRISE_USER_SCHEMA as ENT, GROUP_SCHEMA, USER_SCHEMA};
    use proptest::prelude::*;
    use serde_json::json;

    fn body(ops: Value) -> Value {
        json!({"schemas": [PATCH_OP_SCHEMA], "Operations": ops})
    }

    fn parse(ops: Value) -> ScimResult<Vec<PatchOp>> {
        parse_request(&body(ops), 1000, &FilterLimits::default())
    }

    fn patch(
        kind: ResourceKind,
        resource: &Value,
        ops: Value,
    ) -> ScimResult<(Value, PatchOutcome)> {
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

    fn check_sequence(
        kind: ResourceKind,
        start: &Value,
        ops: Vec<Value>,
    ) -> Result<(), TestCaseError> {
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
}
