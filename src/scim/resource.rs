//! Validation and normalisation of client-supplied resources (POST and PUT bodies). Pure.
//!
//! One set of type rules serves POST, PUT and PATCH: [`normalize_value`] checks and canonicalises
//! the value of one attribute, and PATCH calls it for every value it writes, so a PATCH can never
//! store what a POST would have refused.
//!
//! Leniencies, each for a real client:
//! - attribute and sub-attribute names match case-insensitively (RFC 7643 §2.1) and come out in
//!   their canonical case;
//! - booleans may arrive as the strings `"True"`/`"False"` (any case): Entra sends them;
//! - a multi-valued attribute given one bare value is treated as a one-element list;
//! - `null` and `[]` mean "unassigned" (RFC 7643 §2.5) and the attribute is removed;
//! - read-only attributes (`id`, `meta`, `groups`, `manager.displayName`) are ignored, as
//!   RFC 7644 §3.3 allows, because clients echo back what they read;
//! - a top-level key may be URN-qualified (`urn:…:enterprise:2.0:User:department`) or dotted
//!   (`name.givenName`, Entra with `aadOptscim062020`); both are folded into canonical form.

use serde_json::{Map, Value};

use super::error::{ScimError, ScimResult};
use super::schema::{common_attributes, AttrDef, AttrType, Mutability, ResourceKind, Schema};

/// Whether read-only attributes are client noise (dropped) or server state (kept verbatim).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A POST/PUT body: read-only attributes are ignored.
    Client,
    /// A stored resource (e.g. the result of a PATCH): read-only attributes are server-owned
    /// state (`id`, `meta`, `groups`) and pass through unchanged.
    Stored,
}

/// Validate a POST/PUT body and bring it to canonical form: canonical attribute names, extension
/// attributes under their URN, booleans from `"True"`/`"False"` strings, read-only attributes
/// (`id`, `meta`, `groups`) dropped, nulls and empty arrays removed, `schemas` set to the core URN
/// plus the extensions present. Unknown attributes and wrong types are `invalidValue`/`invalidSyntax`
/// errors naming the attribute; a missing required attribute is `invalidValue`.
pub fn normalize(kind: ResourceKind, body: &Value) -> ScimResult<Value> {
    normalize_in(kind, body, Mode::Client)
}

/// Like [`normalize`], but for a resource as stored: read-only attributes (`id`, `meta`,
/// `groups`) are kept as they are instead of being dropped. PATCH re-validates its result with
/// this, so an op sequence can never leave a resource that a POST would refuse.
pub fn normalize_stored(kind: ResourceKind, resource: &Value) -> ScimResult<Value> {
    normalize_in(kind, resource, Mode::Stored)
}

/// The resource a PUT produces: `incoming` (already normalised) replaces every writable attribute
/// of `existing`; read-only attributes keep their values; an immutable attribute that is present
/// in both with different values is a `mutability` error.
///
/// A write-only attribute (`password`) that `incoming` omits keeps its existing value: a client
/// can never read it back, so a read-modify-write PUT (Okta's profile update) cannot be asserting
/// that it should be cleared.
pub fn replace(kind: ResourceKind, existing: &Value, incoming: &Value) -> ScimResult<Value> {
    let Some(existing_obj) = existing.as_object() else {
        return Err(ScimError::Internal(
            "stored resource is not a JSON object".into(),
        ));
    };
    let Some(incoming_obj) = incoming.as_object() else {
        return Err(ScimError::InvalidSyntax(
            "the request body must be a JSON object".into(),
        ));
    };
    let mut out = incoming_obj.clone();
    for (schema, ext) in schema_containers(kind) {
        let old = container(existing_obj, schema, ext);
        let new = container(incoming_obj, schema, ext);
        let mut kept = Map::new();
        for def in schema_attrs(schema, ext) {
            let old_v = old.and_then(|o| o.get(def.name));
            let new_v = new.and_then(|o| o.get(def.name));
            match def.mutability {
                Mutability::ReadOnly => {
                    if let Some(v) = old_v {
                        kept.insert(def.name.to_string(), v.clone());
                    }
                }
                Mutability::Immutable => {
                    if let (Some(a), Some(b)) = (old_v, new_v) {
                        if a != b {
                            return Err(ScimError::Mutability(format!(
                                "attribute '{}' is immutable and cannot be changed by PUT",
                                def.name
                            )));
                        }
                    }
                }
                Mutability::WriteOnly => {
                    if let (Some(v), None) = (old_v, new_v) {
                        kept.insert(def.name.to_string(), v.clone());
                    }
                }
                Mutability::ReadWrite => {
                    // Read-only sub-attributes (manager.displayName) are server state too.
                    if let (Some(Value::Object(a)), Some(Value::Object(b))) = (old_v, new_v) {
                        let mut merged = b.clone();
                        let mut changed = false;
                        for sub in def
                            .sub_attributes
                            .iter()
                            .filter(|s| s.mutability == Mutability::ReadOnly)
                        {
                            if let Some(v) = a.get(sub.name) {
                                merged.insert(sub.name.to_string(), v.clone());
                                changed = true;
                            }
                        }
                        if changed {
                            kept.insert(def.name.to_string(), Value::Object(merged));
                        }
                    }
                }
            }
        }
        if kept.is_empty() {
            continue;
        }
        match ext {
            false => out.extend(kept),
            true => {
                let slot = out
                    .entry(schema.id.to_string())
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(m) = slot {
                    m.extend(kept);
                }
            }
        }
    }
    let mut out = Value::Object(out);
    // Re-canonicalise order and `schemas`; every value in `out` came from a normalised resource.
    out = normalize_stored(kind, &out)?;
    Ok(out)
}

/// Validate and canonicalise the value of one attribute (`def`), as POST, PUT and PATCH write
/// it. `name` is the attribute's path for error messages (e.g. `emails` or `name.givenName`).
///
/// Returns `None` when the value means "unassigned" (`null`, `[]`, `{}` or a complex value
/// whose every sub-attribute is unassigned or read-only). A multi-valued attribute given a
/// single value becomes a one-element list.
pub fn normalize_value(
    def: &'static AttrDef,
    value: &Value,
    name: &str,
) -> ScimResult<Option<Value>> {
    normalize_attr(def, value, name, Mode::Client)
}

/// Validate and canonicalise one element of a multi-valued attribute (or the value of a
/// single-valued one): the type rules of [`normalize_value`] without the list handling.
pub fn normalize_element(
    def: &'static AttrDef,
    value: &Value,
    name: &str,
) -> ScimResult<Option<Value>> {
    normalize_single(def, value, name, Mode::Client)
}

/// Is `s` a spelling of a boolean that real clients send (`true`, `"True"`, `"false"`...)?
pub fn coerce_bool(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// The `schemas` a resource of `kind` carries: the core URN, then every extension URN whose key
/// is present in `resource`, in the order the resource type declares them.
pub fn schemas_for(kind: ResourceKind, resource: &Map<String, Value>) -> Vec<Value> {
    let mut schemas = vec![Value::String(kind.core_schema().id.to_string())];
    for (ext, _) in kind.extensions() {
        if resource.contains_key(ext.id) {
            schemas.push(Value::String(ext.id.to_string()));
        }
    }
    schemas
}

/// A top-level key of a resource body, resolved against the resource type's schemas.
#[derive(Debug, Clone, Copy)]
pub enum TopKey {
    /// The `schemas` attribute itself.
    Schemas,
    /// An extension schema's container key (its URN): the value is an object of its attributes.
    Extension(&'static Schema),
    /// An attribute (possibly URN-qualified or dotted). `extension` is the schema when the
    /// attribute belongs to an extension.
    Attr {
        extension: Option<&'static Schema>,
        attr: &'static AttrDef,
        sub: Option<&'static AttrDef>,
    },
}

/// Resolve a top-level body key: `schemas`, an extension URN, `attr`, `attr.sub`,
/// `urn:…:attr` or `urn:…:attr.sub` (the URN being the core schema or an extension).
/// Bare names resolve to core and common attributes only: RFC 7643 §3.3 puts extension
/// attributes under their URN. `None` means the key names nothing.
pub fn resolve_top_key(kind: ResourceKind, key: &str) -> Option<TopKey> {
    if key.eq_ignore_ascii_case("schemas") {
        return Some(TopKey::Schemas);
    }
    if let Some(ext) = kind.extension(key) {
        return Some(TopKey::Extension(ext));
    }
    let core = kind.core_schema();
    let (extension, rest) = match strip_schema_prefix(core.id, key) {
        Some(rest) => (None, rest),
        None => match kind
            .extensions()
            .iter()
            .find_map(|(s, _)| strip_schema_prefix(s.id, key).map(|r| (*s, r)))
        {
            Some((s, rest)) => (Some(s), rest),
            None => (None, key),
        },
    };
    let (attr_name, sub_name) = match rest.split_once('.') {
        Some((a, s)) => (a, Some(s)),
        None => (rest, None),
    };
    let attr = match extension {
        Some(s) => s.attribute(attr_name)?,
        None => core
            .attribute(attr_name)
            .or_else(|| find(common_attributes(), attr_name))?,
    };
    let sub = match sub_name {
        Some(s) => Some(attr.sub_attribute(s)?),
        None => None,
    };
    Some(TopKey::Attr {
        extension,
        attr,
        sub,
    })
}

/// `urn:…:User:userName` -> `userName` when `urn:…:User` is `schema_id` (case-insensitive).
fn strip_schema_prefix<'k>(schema_id: &str, key: &'k str) -> Option<&'k str> {
    let head = key.get(..schema_id.len())?;
    if !head.eq_ignore_ascii_case(schema_id) {
        return None;
    }
    key[schema_id.len()..]
        .strip_prefix(':')
        .filter(|r| !r.is_empty())
}

fn find(attrs: &'static [AttrDef], name: &str) -> Option<&'static AttrDef> {
    attrs.iter().find(|a| a.name.eq_ignore_ascii_case(name))
}

/// The attribute containers of a resource type: the core schema (top level, with the common
/// attributes) and each extension (under its URN key).
fn schema_containers(kind: ResourceKind) -> Vec<(&'static Schema, bool)> {
    let mut v = vec![(kind.core_schema(), false)];
    v.extend(kind.extensions().iter().map(|(s, _)| (*s, true)));
    v
}

/// The attributes of one container: the common ones come first in the core container.
fn schema_attrs(schema: &'static Schema, ext: bool) -> impl Iterator<Item = &'static AttrDef> {
    let common: &'static [AttrDef] = if ext { &[] } else { common_attributes() };
    common.iter().chain(schema.attributes.iter())
}

fn container<'a>(
    obj: &'a Map<String, Value>,
    schema: &Schema,
    ext: bool,
) -> Option<&'a Map<String, Value>> {
    if ext {
        obj.get(schema.id).and_then(Value::as_object)
    } else {
        Some(obj)
    }
}

/// Raw (not yet validated) attribute values gathered from the body, per container, keyed by
/// definition. Collected first so that `name`, `NAME.givenName` and a URN-qualified key for the
/// same attribute fold into one value before validation.
#[derive(Default)]
struct Gathered {
    core: Vec<(&'static AttrDef, Value)>,
    ext: Vec<(&'static Schema, Vec<(&'static AttrDef, Value)>)>,
}

impl Gathered {
    fn list(&mut self, extension: Option<&'static Schema>) -> &mut Vec<(&'static AttrDef, Value)> {
        match extension {
            None => &mut self.core,
            Some(s) => {
                let i = match self.ext.iter().position(|(e, _)| std::ptr::eq(*e, s)) {
                    Some(i) => i,
                    None => {
                        self.ext.push((s, Vec::new()));
                        self.ext.len() - 1
                    }
                };
                &mut self.ext[i].1
            }
        }
    }

    /// Set `attr` (or `attr.sub`) to `value`; a later write of the same attribute wins, and a
    /// dotted write merges into the complex value.
    fn set(
        &mut self,
        extension: Option<&'static Schema>,
        attr: &'static AttrDef,
        sub: Option<&'static AttrDef>,
        value: Value,
    ) {
        let list = self.list(extension);
        let i = match list.iter().position(|(d, _)| std::ptr::eq(*d, attr)) {
            Some(i) => i,
            None => {
                list.push((attr, Value::Null));
                list.len() - 1
            }
        };
        let slot = &mut list[i].1;
        match sub {
            None => *slot = value,
            Some(sub) => {
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                if let Value::Object(m) = slot {
                    // Drop any differently-cased spelling so the dotted write wins.
                    m.retain(|k, _| !k.eq_ignore_ascii_case(sub.name));
                    m.insert(sub.name.to_string(), value);
                }
            }
        }
    }
}

fn normalize_in(kind: ResourceKind, body: &Value, mode: Mode) -> ScimResult<Value> {
    let Some(obj) = body.as_object() else {
        return Err(ScimError::InvalidSyntax(
            "the resource must be a JSON object".into(),
        ));
    };
    let mut gathered = Gathered::default();
    for (key, value) in obj {
        let Some(top) = resolve_top_key(kind, key) else {
            return Err(unknown_attribute(kind, key));
        };
        match top {
            TopKey::Schemas => check_schemas(kind, value)?,
            TopKey::Extension(ext) => match value {
                Value::Null => {}
                Value::Object(inner) => {
                    for (k, v) in inner {
                        let (attr_name, sub_name) = match k.split_once('.') {
                            Some((a, s)) => (a, Some(s)),
                            None => (k.as_str(), None),
                        };
                        let unknown = || {
                            ScimError::InvalidValue(format!(
                                "unknown attribute '{k}' in extension '{}'",
                                ext.id
                            ))
                        };
                        let attr = ext.attribute(attr_name).ok_or_else(unknown)?;
                        let sub = match sub_name {
                            Some(s) => Some(attr.sub_attribute(s).ok_or_else(unknown)?),
                            None => None,
                        };
                        gather(&mut gathered, mode, Some(ext), attr, sub, v)?;
                    }
                }
                _ => {
                    return Err(ScimError::InvalidValue(format!(
                        "extension '{}' must be a JSON object of its attributes",
                        ext.id
                    )))
                }
            },
            TopKey::Attr {
                extension,
                attr,
                sub,
            } => gather(&mut gathered, mode, extension, attr, sub, value)?,
        }
    }

    let mut out = Map::new();
    out.insert("schemas".into(), Value::Null); // placeholder keeps `schemas` first
    emit(
        &mut out,
        schema_attrs(kind.core_schema(), false),
        &gathered.core,
        mode,
    )?;
    for (ext, _) in kind.extensions() {
        let Some((_, list)) = gathered.ext.iter().find(|(e, _)| std::ptr::eq(*e, *ext)) else {
            continue;
        };
        let mut inner = Map::new();
        emit(&mut inner, ext.attributes.iter(), list, mode)?;
        if !inner.is_empty() {
            out.insert(ext.id.to_string(), Value::Object(inner));
        }
    }
    for def in kind.core_schema().attributes.iter().filter(|d| d.required) {
        if !out.contains_key(def.name) {
            return Err(ScimError::InvalidValue(format!(
                "required attribute '{}' is missing",
                def.name
            )));
        }
    }
    for (ext, _) in kind.extensions() {
        for def in ext.attributes.iter().filter(|d| d.required) {
            let present = out.get(ext.id).and_then(|e| e.get(def.name)).is_some();
            if !present {
                return Err(ScimError::InvalidValue(format!(
                    "required attribute '{}:{}' is missing",
                    ext.id, def.name
                )));
            }
        }
    }
    let schemas = schemas_for(kind, &out);
    out.insert("schemas".into(), Value::Array(schemas));
    Ok(Value::Object(out))
}

/// Record one body key. Read-only attributes are dropped (client mode) or kept verbatim.
fn gather(
    gathered: &mut Gathered,
    mode: Mode,
    extension: Option<&'static Schema>,
    attr: &'static AttrDef,
    sub: Option<&'static AttrDef>,
    value: &Value,
) -> ScimResult<()> {
    let read_only = attr.mutability == Mutability::ReadOnly
        || sub.is_some_and(|s| s.mutability == Mutability::ReadOnly);
    if read_only && mode == Mode::Client {
        return Ok(());
    }
    if sub.is_some() && attr.multi_valued {
        return Err(ScimError::InvalidValue(format!(
            "'{}' is multi-valued: write its values as a list, not through '{}.{}'",
            attr.name,
            attr.name,
            sub.map_or("", |s| s.name)
        )));
    }
    gathered.set(extension, attr, sub, value.clone());
    Ok(())
}

/// Validate the gathered values of one container into `out`, in definition order.
fn emit<'d>(
    out: &mut Map<String, Value>,
    defs: impl Iterator<Item = &'d AttrDef>,
    gathered: &[(&'static AttrDef, Value)],
    mode: Mode,
) -> ScimResult<()> {
    for def in defs {
        let Some((def, raw)) = gathered.iter().find(|(d, _)| std::ptr::eq(*d, def)) else {
            continue;
        };
        let value = if def.mutability == Mutability::ReadOnly {
            // Only reached in stored mode: server state passes through as it is.
            match raw {
                Value::Null => None,
                Value::Array(a) if a.is_empty() => None,
                v => Some(v.clone()),
            }
        } else {
            normalize_attr(def, raw, def.name, mode)?
        };
        if let Some(v) = value {
            out.insert(def.name.to_string(), v);
        }
    }
    Ok(())
}

fn check_schemas(kind: ResourceKind, value: &Value) -> ScimResult<()> {
    let Value::Array(items) = value else {
        return Err(ScimError::InvalidValue(
            "'schemas' must be an array of schema URNs".into(),
        ));
    };
    for item in items {
        let Some(urn) = item.as_str() else {
            return Err(ScimError::InvalidValue(
                "'schemas' must be an array of schema URNs".into(),
            ));
        };
        if !urn.eq_ignore_ascii_case(kind.core_schema().id) && kind.extension(urn).is_none() {
            return Err(ScimError::InvalidValue(format!(
                "schema '{urn}' is not supported for resource type {}",
                kind.name()
            )));
        }
    }
    Ok(())
}

fn unknown_attribute(kind: ResourceKind, key: &str) -> ScimError {
    let hint = kind
        .extensions()
        .iter()
        .find(|(s, _)| s.attribute(key.split('.').next().unwrap_or(key)).is_some())
        .map(|(s, _)| {
            format!(
                " (it belongs to extension '{}' and must be written under that key)",
                s.id
            )
        })
        .unwrap_or_default();
    ScimError::InvalidValue(format!(
        "unknown attribute '{key}' for resource type {}{hint}",
        kind.name()
    ))
}

fn normalize_attr(
    def: &'static AttrDef,
    value: &Value,
    name: Name<'_>,
    mode: Mode,
) -> ScimResult<Option<Value>> {
    if !def.multi_valued {
        if value.is_array() {
            return Err(ScimError::InvalidValue(format!(
                "attribute '{name}' is single-valued but a list was given"
            )));
        }
        let v = normalize_single(def, value, name, mode)?;
        if let (Some(Value::String(s)), true) = (&v, def.required) {
            if s.is_empty() {
                return Err(ScimError::InvalidValue(format!(
                    "required attribute '{name}' cannot be empty"
                )));
            }
        }
        return Ok(v);
    }
    let items: &[Value] = match value {
        Value::Null => return Ok(None),
        Value::Array(items) => items,
        single => std::slice::from_ref(single),
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        if item.is_array() {
            return Err(ScimError::InvalidValue(format!(
                "attribute '{name}' cannot hold nested lists"
            )));
        }
        if let Some(v) = normalize_single(def, item, name, mode)? {
            out.push(v);
        }
    }
    if out.is_empty() {
        return Ok(None);
    }
    if def.ty == AttrType::Complex {
        let primaries = out
            .iter()
            .filter(|v| v.get("primary") == Some(&Value::Bool(true)))
            .count();
        if primaries > 1 {
            return Err(ScimError::InvalidValue(format!(
                "attribute '{name}' has {primaries} values with \"primary\": true; at most one is allowed"
            )));
        }
    }
    Ok(Some(Value::Array(out)))
}

/// One value of `def`'s type (not a list). `None` for null and for empty complex values.
fn normalize_single(
    def: &'static AttrDef,
    value: &Value,
    name: &str,
    mode: Mode,
) -> ScimResult<Option<Value>> {
    if value.is_null() {
        return Ok(None);
    }
    let wrong = |expected: &str| {
        ScimError::InvalidValue(format!(
            "attribute '{name}' must be {expected}, got {}",
            kind_of(value)
        ))
    };
    let v = match def.ty {
        AttrType::String | AttrType::Reference | AttrType::Binary => match value {
            Value::String(_) => value.clone(),
            _ => return Err(wrong("a string")),
        },
        AttrType::Boolean => Value::Bool(coerce_bool(value).ok_or_else(|| wrong("a boolean"))?),
        AttrType::Integer => match value {
            Value::Number(n) if n.is_i64() || n.is_u64() => value.clone(),
            _ => return Err(wrong("an integer")),
        },
        AttrType::Decimal => match value {
            Value::Number(_) => value.clone(),
            _ => return Err(wrong("a number")),
        },
        AttrType::DateTime => match value {
            Value::String(s) => {
                time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                    .map_err(|_| {
                        ScimError::InvalidValue(format!(
                            "attribute '{name}' must be an RFC 3339 dateTime, got \"{s}\""
                        ))
                    })?;
                value.clone()
            }
            _ => return Err(wrong("an RFC 3339 dateTime string")),
        },
        AttrType::Complex => {
            let Value::Object(obj) = value else {
                return Err(wrong("a JSON object"));
            };
            return normalize_complex(def, obj, name, mode);
        }
    };
    Ok(Some(v))
}

fn normalize_complex(
    def: &'static AttrDef,
    obj: &Map<String, Value>,
    name: &str,
    mode: Mode,
) -> ScimResult<Option<Value>> {
    let mut gathered: Vec<(&'static AttrDef, &Value)> = Vec::new();
    for (k, v) in obj {
        let Some(sub) = def.sub_attribute(k) else {
            return Err(ScimError::InvalidValue(format!(
                "unknown sub-attribute '{k}' of '{name}'"
            )));
        };
        if sub.mutability == Mutability::ReadOnly && mode == Mode::Client {
            continue;
        }
        match gathered.iter_mut().find(|(d, _)| std::ptr::eq(*d, sub)) {
            Some(slot) => slot.1 = v,
            None => gathered.push((sub, v)),
        }
    }
    let mut out = Map::new();
    for sub in def.sub_attributes {
        let Some((_, raw)) = gathered.iter().find(|(d, _)| std::ptr::eq(*d, sub)) else {
            continue;
        };
        let sub_name = format!("{name}.{}", sub.name);
        let v = if sub.mutability == Mutability::ReadOnly {
            (!raw.is_null()).then(|| (*raw).clone())
        } else if raw.is_array() {
            return Err(ScimError::InvalidValue(format!(
                "sub-attribute '{sub_name}' is single-valued but a list was given"
            )));
        } else {
            normalize_single(sub, raw, &sub_name, mode)?
        };
        if let Some(v) = v {
            out.insert(sub.name.to_string(), v);
        }
    }
    if out.is_empty() {
        return Ok(None);
    }
    for sub in def.sub_attributes.iter().filter(|s| s.required) {
        match out.get(sub.name) {
            None => {
                return Err(ScimError::InvalidValue(format!(
                    "sub-attribute '{name}.{}' is required",
                    sub.name
                )))
            }
            Some(Value::String(s)) if s.is_empty() => {
                return Err(ScimError::InvalidValue(format!(
                    "sub-attribute '{name}.{}' cannot be empty",
                    sub.name
                )))
            }
            Some(_) => {}
        }
    }
    Ok(Some(Value::Object(out)))
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
