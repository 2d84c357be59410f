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
    normalize_attr(def, value, Name::attr(name), Mode::Client)
}

/// Validate and canonicalise one element of a multi-valued attribute (or the value of a
/// single-valued one): the type rules of [`normalize_value`] without the list handling.
pub fn normalize_element(
    def: &'static AttrDef,
    value: &Value,
    name: &str,
) -> ScimResult<Option<Value>> {
    normalize_single(def, value, Name::attr(name), Mode::Client)
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
                        if let Some((attr, sub)) = resolve_extension_key(ext, k)? {
                            gather(&mut gathered, mode, Some(ext), attr, sub, v)?;
                        }
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
            normalize_attr(def, raw, Name::attr(def.name), mode)?
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
    name: Name<'_>,
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
        AttrType::Complex => match value {
            Value::Object(obj) => return normalize_complex(def, obj, name, mode),
            // Entra writes the enterprise `manager` as the bare manager id
            // (`"value": "26118915-6090-4610-87a4-49d0e2c8ef2d"`): read it as `{"value": id}`.
            Value::String(_) if !def.multi_valued && def.sub_attribute("value").is_some() => {
                let mut obj = Map::new();
                obj.insert("value".into(), value.clone());
                return normalize_complex(def, &obj, name, mode);
            }
            _ => return Err(wrong("a JSON object")),
        },
    };
    Ok(Some(v))
}

fn normalize_complex(
    def: &'static AttrDef,
    obj: &Map<String, Value>,
    name: Name<'_>,
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
        let sub_name = name.sub(sub.name);
        let v = if sub.mutability == Mutability::ReadOnly {
            (!raw.is_null()).then(|| (*raw).clone())
        } else if raw.is_array() {
            return Err(ScimError::InvalidValue(format!(
                "sub-attribute '{sub_name}' is single-valued but a list was given"
            )));
        } else {
            normalize_single(sub, raw, sub_name, mode)?
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

/// An attribute path for error messages, formatted only when an error is reported: validating
/// a 10,000-member group must not allocate a name per sub-attribute.
#[derive(Debug, Clone, Copy)]
struct Name<'a> {
    attr: &'a str,
    sub: Option<&'a str>,
}

impl<'a> Name<'a> {
    fn attr(attr: &'a str) -> Self {
        Name { attr, sub: None }
    }
    fn sub(self, sub: &'a str) -> Self {
        Name {
            attr: self.attr,
            sub: Some(sub),
        }
    }
}

impl std::fmt::Display for Name<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.sub {
            Some(sub) => write!(f, "{}.{sub}", self.attr),
            None => f.write_str(self.attr),
        }
    }
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

/// Resolve a key inside an extension object (`attr` or `attr.sub`). `Ok(None)` for a nested
/// `schemas` key, which some clients (scim2-tester) echo there and which carries nothing.
pub(crate) fn resolve_extension_key(
    ext: &'static Schema,
    key: &str,
) -> ScimResult<Option<(&'static AttrDef, Option<&'static AttrDef>)>> {
    if key.eq_ignore_ascii_case("schemas") {
        return Ok(None);
    }
    let (attr_name, sub_name) = match key.split_once('.') {
        Some((a, s)) => (a, Some(s)),
        None => (key, None),
    };
    let unknown = || {
        ScimError::InvalidValue(format!(
            "unknown attribute '{key}' in extension '{}'",
            ext.id
        ))
    };
    let attr = ext.attribute(attr_name).ok_or_else(unknown)?;
    let sub = match sub_name {
        Some(s) => Some(attr.sub_attribute(s).ok_or_else(unknown)?),
        None => None,
    };
    Ok(Some((attr, sub)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::schema::{ENTERPRISE_USER_SCHEMA, GROUP_SCHEMA, USER_SCHEMA};
    use proptest::prelude::*;
    use serde_json::json;

    fn user(body: Value) -> ScimResult<Value> {
        normalize(ResourceKind::User, &body)
    }

    #[test]
    fn canonicalises_names_and_orders_attributes() {
        let out = user(json!({
            "USERNAME": "bjensen",
            "Name": {"GIVENNAME": "Barbara", "familyname": "Jensen"},
            "schemas": [USER_SCHEMA],
            "externalid": "x1",
        }))
        .unwrap();
        assert_eq!(
            out,
            json!({
                "schemas": [USER_SCHEMA],
                "externalId": "x1",
                "userName": "bjensen",
                "name": {"familyName": "Jensen", "givenName": "Barbara"},
            })
        );
        let keys: Vec<&String> = out.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["schemas", "externalId", "userName", "name"]);
    }

    #[test]
    fn body_must_be_an_object() {
        for body in [json!([]), json!("x"), json!(null), json!(1)] {
            assert!(matches!(user(body), Err(ScimError::InvalidSyntax(_))));
        }
    }

    #[test]
    fn unknown_attributes_are_invalid_values_naming_them() {
        let err = user(json!({"userName": "a", "shoeSize": 42})).unwrap_err();
        assert!(
            matches!(&err, ScimError::InvalidValue(d) if d.contains("shoeSize")),
            "{err:?}"
        );
        let err = user(json!({"userName": "a", "name": {"nick": "x"}})).unwrap_err();
        assert!(
            matches!(&err, ScimError::InvalidValue(d) if d.contains("nick") && d.contains("name"))
        );
        let err = user(json!({"userName": "a", "department": "x"})).unwrap_err();
        assert!(matches!(&err, ScimError::InvalidValue(d) if d.contains(ENTERPRISE_USER_SCHEMA)));
        let err = normalize(
            ResourceKind::Group,
            &json!({"displayName": "g", "userName": "a"}),
        )
        .unwrap_err();
        assert!(matches!(err, ScimError::InvalidValue(_)));
    }

    #[test]
    fn schemas_must_be_known_urns() {
        let err = user(json!({"userName": "a", "schemas": ["urn:x:y"]})).unwrap_err();
        assert!(matches!(&err, ScimError::InvalidValue(d) if d.contains("urn:x:y")));
        assert!(user(json!({"userName": "a", "schemas": USER_SCHEMA})).is_err());
        assert!(user(json!({"userName": "a", "schemas": [1]})).is_err());
        assert!(normalize(
            ResourceKind::Group,
            &json!({"displayName": "g", "schemas": [USER_SCHEMA]})
        )
        .is_err());
        // Declaring the extension without using it is fine; it is not echoed back.
        let out = user(json!({"userName": "a", "schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA]}))
            .unwrap();
        assert_eq!(out["schemas"], json!([USER_SCHEMA]));
    }

    #[test]
    fn extension_attributes_live_under_their_urn() {
        let out = user(json!({
            "userName": "a",
            ENTERPRISE_USER_SCHEMA.to_uppercase(): {"EmployeeNumber": "7", "manager": {"value": "m1", "displayName": "Boss"}},
        }))
        .unwrap();
        assert_eq!(out["schemas"], json!([USER_SCHEMA, ENTERPRISE_USER_SCHEMA]));
        // manager.displayName is read-only: ignored.
        assert_eq!(
            out[ENTERPRISE_USER_SCHEMA],
            json!({"employeeNumber": "7", "manager": {"value": "m1"}})
        );
        // URN-qualified keys fold into the same place.
        let out = user(json!({
            "userName": "a",
            format!("{ENTERPRISE_USER_SCHEMA}:department"): "Sales",
            format!("{USER_SCHEMA}:displayName"): "A",
        }))
        .unwrap();
        assert_eq!(out[ENTERPRISE_USER_SCHEMA], json!({"department": "Sales"}));
        assert_eq!(out["displayName"], "A");
        let err = user(json!({"userName": "a", ENTERPRISE_USER_SCHEMA: "x"})).unwrap_err();
        assert!(matches!(err, ScimError::InvalidValue(_)));
        let err = user(json!({"userName": "a", ENTERPRISE_USER_SCHEMA: {"nope": 1}})).unwrap_err();
        assert!(matches!(&err, ScimError::InvalidValue(d) if d.contains("nope")));
    }

    #[test]
    fn dotted_keys_merge_into_complex_attributes() {
        let out =
            user(json!({"userName": "a", "name": {"givenName": "B"}, "name.familyName": "J"}))
                .unwrap();
        assert_eq!(out["name"], json!({"familyName": "J", "givenName": "B"}));
        assert!(user(json!({"userName": "a", "emails.value": "x@y"})).is_err());
    }

    #[test]
    fn booleans_accept_entra_strings() {
        for (given, want) in [
            (json!("True"), true),
            (json!("false"), false),
            (json!(true), true),
            (json!("FALSE"), false),
        ] {
            let out = user(json!({"userName": "a", "active": given})).unwrap();
            assert_eq!(out["active"], json!(want));
        }
        let err = user(json!({"userName": "a", "active": "yes"})).unwrap_err();
        assert!(matches!(&err, ScimError::InvalidValue(d) if d.contains("active")));
        let out = user(json!({"userName": "a", "emails": [{"value": "a@b", "primary": "True"}]}))
            .unwrap();
        assert_eq!(out["emails"][0]["primary"], true);
    }

    #[test]
    fn type_checks_name_the_attribute() {
        let cases = [
            json!({"userName": 5}),
            json!({"userName": "a", "displayName": ["x"]}),
            json!({"userName": "a", "name": "x"}),
            json!({"userName": "a", "emails": [{"value": 1}]}),
            json!({"userName": "a", "emails": [["x"]]}),
            json!({"userName": "a", "x509Certificates": [{"value": true}]}),
            json!({"userName": "a", "profileUrl": {}}),
        ];
        for body in cases {
            let err = user(body.clone()).unwrap_err();
            assert!(matches!(err, ScimError::InvalidValue(_)), "{body}: {err:?}");
        }
    }

    #[test]
    fn date_times_must_be_rfc3339() {
        let err = normalize_value(
            common_attributes()[2].sub_attribute("created").unwrap(),
            &json!("yesterday"),
            "meta.created",
        )
        .unwrap_err();
        assert!(matches!(&err, ScimError::InvalidValue(d) if d.contains("meta.created")));
        let ok = normalize_value(
            common_attributes()[2].sub_attribute("created").unwrap(),
            &json!("2024-05-01T10:00:00Z"),
            "meta.created",
        )
        .unwrap();
        assert_eq!(ok, Some(json!("2024-05-01T10:00:00Z")));
    }

    #[test]
    fn multi_valued_single_value_is_wrapped() {
        let out =
            user(json!({"userName": "a", "emails": {"value": "a@b", "type": "work"}})).unwrap();
        assert_eq!(out["emails"], json!([{"value": "a@b", "type": "work"}]));
    }

    #[test]
    fn nulls_and_empty_lists_are_unassigned() {
        let out = user(json!({
            "userName": "a", "displayName": null, "emails": [], "phoneNumbers": [null],
            "name": {"givenName": null}, "addresses": [{}], ENTERPRISE_USER_SCHEMA: {"department": null},
        }))
        .unwrap();
        assert_eq!(out, json!({"schemas": [USER_SCHEMA], "userName": "a"}));
    }

    #[test]
    fn read_only_attributes_are_ignored() {
        let out = user(json!({
            "userName": "a", "id": "client-chosen", "meta": {"version": "W/\"1\""},
            "groups": [{"value": "g1"}],
        }))
        .unwrap();
        assert_eq!(out, json!({"schemas": [USER_SCHEMA], "userName": "a"}));
    }

    #[test]
    fn write_only_password_is_kept() {
        let out = user(json!({"userName": "a", "password": "s3cret"})).unwrap();
        assert_eq!(out["password"], "s3cret");
    }

    #[test]
    fn required_attributes_must_be_present_and_non_empty() {
        let err = user(json!({"displayName": "x"})).unwrap_err();
        assert!(matches!(&err, ScimError::InvalidValue(d) if d.contains("userName")));
        assert!(user(json!({"userName": ""})).is_err());
        assert!(user(json!({"userName": null})).is_err());
        let err = normalize(ResourceKind::Group, &json!({"members": []})).unwrap_err();
        assert!(matches!(&err, ScimError::InvalidValue(d) if d.contains("displayName")));
        let err = normalize(
            ResourceKind::Group,
            &json!({"displayName": "g", "members": [{"display": "x"}]}),
        )
        .unwrap_err();
        assert!(matches!(&err, ScimError::InvalidValue(d) if d.contains("members.value")));
    }

    #[test]
    fn at_most_one_primary() {
        let err = user(json!({"userName": "a", "emails": [
            {"value": "a@b", "primary": true}, {"value": "c@d", "primary": "True"}
        ]}))
        .unwrap_err();
        assert!(
            matches!(&err, ScimError::InvalidValue(d) if d.contains("emails") && d.contains("primary"))
        );
        assert!(user(json!({"userName": "a", "emails": [
            {"value": "a@b", "primary": true}, {"value": "c@d", "primary": false}
        ]}))
        .is_ok());
    }

    #[test]
    fn group_members_keep_what_the_client_sent() {
        let out = normalize(
            ResourceKind::Group,
            &json!({"displayName": "g", "members": [{"value": "u1", "display": "Ann", "type": "User", "$ref": "https://h/Users/u1"}]}),
        )
        .unwrap();
        assert_eq!(out["schemas"], json!([GROUP_SCHEMA]));
        assert_eq!(
            out["members"][0],
            json!({"value": "u1", "$ref": "https://h/Users/u1", "display": "Ann", "type": "User"})
        );
    }

    #[test]
    fn entra_manager_string_is_the_manager_id() {
        let out =
            user(json!({"userName": "a", ENTERPRISE_USER_SCHEMA: {"manager": "m1"}})).unwrap();
        assert_eq!(
            out[ENTERPRISE_USER_SCHEMA]["manager"],
            json!({"value": "m1"})
        );
    }

    #[test]
    fn normalize_stored_keeps_server_state() {
        let stored = json!({
            "schemas": [USER_SCHEMA], "id": "i1", "userName": "a",
            "meta": {"resourceType": "User", "version": "W/\"3\""}, "groups": [{"value": "g1", "display": "G"}],
        });
        assert_eq!(
            normalize_stored(ResourceKind::User, &stored).unwrap(),
            stored
        );
    }

    #[test]
    fn replace_keeps_read_only_and_write_only_state() {
        let existing = json!({
            "schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA], "id": "i1", "userName": "a", "displayName": "Old",
            "password": "p", "meta": {"resourceType": "User"}, "groups": [{"value": "g1"}],
            ENTERPRISE_USER_SCHEMA: {"department": "D", "manager": {"value": "m1", "displayName": "Boss"}},
        });
        let incoming =
            user(json!({"userName": "b", ENTERPRISE_USER_SCHEMA: {"manager": {"value": "m2"}}}))
                .unwrap();
        let out = replace(ResourceKind::User, &existing, &incoming).unwrap();
        assert_eq!(
            out,
            json!({
                "schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA], "id": "i1", "meta": {"resourceType": "User"},
                "userName": "b", "password": "p", "groups": [{"value": "g1"}],
                ENTERPRISE_USER_SCHEMA: {"manager": {"value": "m2", "displayName": "Boss"}},
            })
        );
    }

    #[test]
    fn replace_allows_a_new_member_list() {
        let existing = json!({"schemas": [GROUP_SCHEMA], "id": "g", "displayName": "a", "members": [{"value": "u1"}]});
        let incoming = normalize(
            ResourceKind::Group,
            &json!({"displayName": "b", "members": [{"value": "u2"}]}),
        )
        .unwrap();
        // Replacing the whole member list is allowed: immutability is per member.
        let out = replace(ResourceKind::Group, &existing, &incoming).unwrap();
        assert_eq!(out["members"], json!([{"value": "u2"}]));
        assert_eq!(out["id"], "g");
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            "[a-zA-Z0-9 .:@$-]{0,12}".prop_map(Value::String),
            prop_oneof![
                Just("True"),
                Just("false"),
                Just("2024-01-02T03:04:05Z"),
                Just("")
            ]
            .prop_map(|s| json!(s)),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            let key = prop_oneof![
                Just("userName".to_string()),
                Just("USERNAME".to_string()),
                Just("name".to_string()),
                Just("givenName".to_string()),
                Just("emails".to_string()),
                Just("value".to_string()),
                Just("primary".to_string()),
                Just("type".to_string()),
                Just("active".to_string()),
                Just("displayName".to_string()),
                Just("members".to_string()),
                Just("id".to_string()),
                Just("meta".to_string()),
                Just("groups".to_string()),
                Just("schemas".to_string()),
                Just(ENTERPRISE_USER_SCHEMA.to_string()),
                Just("manager".to_string()),
                Just("name.givenName".to_string()),
                Just("password".to_string()),
                Just("x509Certificates".to_string()),
                Just(format!("{ENTERPRISE_USER_SCHEMA}:department")),
                "[a-z]{1,6}",
            ];
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((key, inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn normalize_is_idempotent_and_never_panics(body in arb_json(), group in any::<bool>()) {
            let kind = if group { ResourceKind::Group } else { ResourceKind::User };
            if let Ok(once) = normalize(kind, &body) {
                prop_assert_eq!(normalize(kind, &once), Ok(once.clone()));
                prop_assert_eq!(normalize_stored(kind, &once), Ok(once.clone()));
            }
        }

        #[test]
        fn normalize_of_plausible_users_is_idempotent(
            user_name in "[a-z]{0,4}",
            active in prop_oneof![Just(json!(true)), Just(json!("False")), Just(json!(null))],
            emails in prop::collection::vec(("[a-z@.]{0,5}", any::<Option<bool>>()), 0..4),
            dept in proptest::option::of("[A-Z]{0,3}"),
        ) {
            let emails: Vec<Value> = emails.into_iter().map(|(v, p)| json!({"VALUE": v, "primary": p})).collect();
            let body = json!({
                "userName": user_name, "active": active, "emails": emails,
                ENTERPRISE_USER_SCHEMA: {"department": dept},
            });
            if let Ok(once) = normalize(ResourceKind::User, &body) {
                prop_assert_eq!(normalize(ResourceKind::User, &once), Ok(once.clone()));
            }
        }
    }
}
