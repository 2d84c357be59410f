//! The mapping between a SCIM resource (JSON) and its Automerge document.
//!
//! Layout of a document (format 1):
//! ```text
//! { "v": 1, "type": "User", "id": "…", "created": "…", "modified": "…",
//!   "attrs": { …SCIM attributes as nested maps and lists…,
//!              "active": { "value": bool, "at": "…", "by": "region" },   // sticky flag
//!              "members": { "<member id>": { "value", "type", "display", "$ref" } } },
//!   "deleted": { "at": "…", "by": "region" } }                           // tombstone
//! ```
//! Why this shape (see DESIGN.md "Automerge facts"): a plain `active` scalar cannot be
//! disable-wins, so `active` is a fresh nested map written on every explicit change and read with
//! `get_all` (inactive if any concurrent value is false). Group members are a map keyed by member
//! id, so adding or removing one member is one small op whatever the group's size. Writes go
//! through [`write_attrs`], which writes only what differs, so a replayed whole resource (PUT)
//! records nothing and cannot resolve a concurrent conflict the wrong way.
//!
//! Everything here works on an in-memory document: no I/O.

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjId, ObjType, ReadDoc, ScalarValue, Value as AmValue, ROOT};
use serde_json::{Map, Number, Value};
use sha2::{Digest, Sha256};

use crate::scim::schema::{ResourceKind, ENTERPRISE_USER_SCHEMA};

/// Document format version, stored in every document as `v`.
pub const DOC_FORMAT: i64 = 1;

/// Errors reading or writing a document. Automerge errors here mean a bug or corrupt bytes.
#[derive(Debug, thiserror::Error)]
pub enum DocError {
    #[error("automerge: {0}")]
    Automerge(#[from] automerge::AutomergeError),
    #[error("document is malformed: {0}")]
    Malformed(String),
}

/// Who writes and when: the region (actor) and the wall-clock time of the write.
#[derive(Debug, Clone)]
pub struct Stamp {
    /// The region name, recorded in sticky flags and tombstones.
    pub region: String,
    /// RFC 3339 time of the write.
    pub at: String,
    /// Milliseconds since the epoch (the Automerge commit time).
    pub millis: i64,
}

/// Start a new document for a resource.
pub fn init(
    doc: &mut AutoCommit,
    kind: ResourceKind,
    id: &str,
    stamp: &Stamp,
) -> Result<(), DocError> {
    doc.put(ROOT, "v", DOC_FORMAT)?;
    doc.put(ROOT, "type", kind.name())?;
    doc.put(ROOT, "id", id)?;
    doc.put(ROOT, "created", stamp.at.as_str())?;
    doc.put_object(ROOT, "attrs", ObjType::Map)?;
    Ok(())
}

/// Is this document a tombstone?
pub fn is_deleted(doc: &AutoCommit) -> bool {
    matches!(doc.get(ROOT, "deleted"), Ok(Some(_)))
}

/// Mark the document deleted (a tombstone: the document stays so delete can win later).
pub fn mark_deleted(doc: &mut AutoCommit, stamp: &Stamp) -> Result<(), DocError> {
    let t = doc.put_object(ROOT, "deleted", ObjType::Map)?;
    doc.put(&t, "at", stamp.at.as_str())?;
    doc.put(&t, "by", stamp.region.as_str())?;
    doc.put(ROOT, "modified", stamp.at.as_str())?;
    Ok(())
}

/// Write the attributes of `new` (a SCIM resource in stored form: no `id`, `meta`, `schemas`)
/// over `old` (what the document holds now), writing only what differs. `explicit` lists
/// top-level attributes the request set explicitly: a sticky attribute among them is
/// re-asserted even when its value is unchanged. Returns whether anything was written.
pub fn write_attrs(
    doc: &mut AutoCommit,
    kind: ResourceKind,
    old: &Map<String, Value>,
    new: &Map<String, Value>,
    explicit: &[String],
    stamp: &Stamp,
) -> Result<bool, DocError> {
    let attrs = attrs_obj(doc)?;
    let mut changed = false;
    for key in old.keys() {
        if !new.contains_key(key) {
            doc.delete(&attrs, key.as_str())?;
            changed = true;
        }
    }
    for (key, value) in new {
        let old_value = old.get(key);
        if key == "active" {
            let reassert = explicit.iter().any(|e| e == "active");
            if old_value != Some(value) || reassert {
                let Some(b) = value.as_bool() else {
                    return Err(DocError::Malformed("active must be a boolean".into()));
                };
                write_sticky(doc, &attrs, "active", b, stamp)?;
                changed = true;
            }
            continue;
        }
        if kind == ResourceKind::Group && key == "members" {
            changed |= write_members(doc, &attrs, old_value, value)?;
            continue;
        }
        if old_value == Some(value) {
            continue;
        }
        match (old_value, value) {
            (Some(Value::Object(o)), Value::Object(n)) => {
                let obj = match doc.get(&attrs, key.as_str())? {
                    Some((AmValue::Object(ObjType::Map), id)) => id,
                    _ => doc.put_object(&attrs, key.as_str(), ObjType::Map)?,
                };
                write_map_diff(doc, &obj, o, n)?;
            }
            _ => put_json(doc, &attrs, key, value)?,
        }
        changed = true;
    }
    if changed {
        doc.put(ROOT, "modified", stamp.at.as_str())?;
    }
    Ok(changed)
}

/// The `attrs` map of a document.
fn attrs_obj(doc: &AutoCommit) -> Result<ObjId, DocError> {
    match doc.get(ROOT, "attrs")? {
        Some((AmValue::Object(ObjType::Map), id)) => Ok(id),
        _ => Err(DocError::Malformed("no attrs map".into())),
    }
}

/// Write a disable-wins flag as a fresh map, so every explicit write is a new op that concurrent
/// writes cannot silently overwrite.
fn write_sticky(
    doc: &mut AutoCommit,
    parent: &ObjId,
    key: &str,
    value: bool,
    stamp: &Stamp,
) -> Result<(), DocError> {
    let flag = doc.put_object(parent, key, ObjType::Map)?;
    doc.put(&flag, "value", value)?;
    doc.put(&flag, "at", stamp.at.as_str())?;
    doc.put(&flag, "by", stamp.region.as_str())?;
    Ok(())
}

/// Diff two JSON objects into an Automerge map, recursing into nested maps.
fn write_map_diff(
    doc: &mut AutoCommit,
    obj: &ObjId,
    old: &Map<String, Value>,
    new: &Map<String, Value>,
) -> Result<(), DocError> {
    for key in old.keys() {
        if !new.contains_key(key) {
            doc.delete(obj, key.as_str())?;
        }
    }
    for (key, value) in new {
        match (old.get(key), value) {
            (Some(o), n) if o == n => {}
            (Some(Value::Object(o)), Value::Object(n)) => {
                let child = match doc.get(obj, key.as_str())? {
                    Some((AmValue::Object(ObjType::Map), id)) => id,
                    _ => doc.put_object(obj, key.as_str(), ObjType::Map)?,
                };
                write_map_diff(doc, &child, o, n)?;
            }
            _ => put_json(doc, obj, key, value)?,
        }
    }
    Ok(())
}

/// Group members: one map entry per member id; only added, removed or changed members are written.
fn write_members(
    doc: &mut AutoCommit,
    attrs: &ObjId,
    old: Option<&Value>,
    new: &Value,
) -> Result<bool, DocError> {
    let members = match doc.get(attrs, "members")? {
        Some((AmValue::Object(ObjType::Map), id)) => id,
        _ => doc.put_object(attrs, "members", ObjType::Map)?,
    };
    let by_id = |v: Option<&Value>| -> std::collections::HashMap<String, Value> {
        v.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|m| Some((m.get("value")?.as_str()?.to_string(), m.clone())))
                    .collect()
            })
            .unwrap_or_default()
    };
    let old = by_id(old);
    let new = by_id(Some(new));
    let mut changed = false;
    for id in old.keys() {
        if !new.contains_key(id) {
            doc.delete(&members, id.as_str())?;
            changed = true;
        }
    }
    for (id, member) in &new {
        if old.get(id) != Some(member) {
            put_json(doc, &members, id, member)?;
            changed = true;
        }
    }
    Ok(changed)
}

/// Put a JSON value at `key` of a map, creating nested objects.
fn put_json(doc: &mut AutoCommit, obj: &ObjId, key: &str, value: &Value) -> Result<(), DocError> {
    match value {
        Value::Object(m) => {
            let child = doc.put_object(obj, key, ObjType::Map)?;
            for (k, v) in m {
                put_json(doc, &child, k, v)?;
            }
        }
        Value::Array(items) => {
            let child = doc.put_object(obj, key, ObjType::List)?;
            for (i, v) in items.iter().enumerate() {
                insert_json(doc, &child, i, v)?;
            }
        }
        scalar => {
            doc.put(obj, key, to_scalar(scalar))?;
        }
    }
    Ok(())
}

fn insert_json(
    doc: &mut AutoCommit,
    list: &ObjId,
    index: usize,
    value: &Value,
) -> Result<(), DocError> {
    match value {
        Value::Object(m) => {
            let child = doc.insert_object(list, index, ObjType::Map)?;
            for (k, v) in m {
                put_json(doc, &child, k, v)?;
            }
        }
        Value::Array(items) => {
            let child = doc.insert_object(list, index, ObjType::List)?;
            for (i, v) in items.iter().enumerate() {
                insert_json(doc, &child, i, v)?;
            }
        }
        scalar => {
            doc.insert(list, index, to_scalar(scalar))?;
        }
    }
    Ok(())
}

fn to_scalar(value: &Value) -> ScalarValue {
    match value {
        Value::Bool(b) => ScalarValue::Boolean(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                ScalarValue::Int(i)
            } else if let Some(u) = n.as_u64() {
                ScalarValue::Uint(u)
            } else {
                ScalarValue::F64(n.as_f64().unwrap_or(0.0))
            }
        }
        Value::String(s) => ScalarValue::Str(s.as_str().into()),
        _ => ScalarValue::Null,
    }
}

fn from_scalar(value: &ScalarValue) -> Value {
    match value {
        ScalarValue::Str(s) => Value::String(s.to_string()),
        ScalarValue::Boolean(b) => Value::Bool(*b),
        ScalarValue::Int(i) => Value::Number((*i).into()),
        ScalarValue::Uint(u) => Value::Number((*u).into()),
        ScalarValue::F64(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
        ScalarValue::Timestamp(t) => Value::Number((*t).into()),
        ScalarValue::Counter(c) => Value::Number(i64::from(c).into()),
        _ => Value::Null,
    }
}

/// Read any Automerge object as JSON, taking each key's deterministic winner.
fn read_json(doc: &AutoCommit, obj: &ObjId, ty: ObjType) -> Result<Value, DocError> {
    match ty {
        ObjType::Map | ObjType::Table => {
            let mut out = Map::new();
            for key in doc.keys(obj) {
                if let Some((v, id)) = doc.get(obj, key.as_str())? {
                    out.insert(key, read_value(doc, v, &id)?);
                }
            }
            Ok(Value::Object(out))
        }
        ObjType::List | ObjType::Text => {
            let mut out = Vec::new();
            for i in 0..doc.length(obj) {
                if let Some((v, id)) = doc.get(obj, i)? {
                    out.push(read_value(doc, v, &id)?);
                }
            }
            Ok(Value::Array(out))
        }
    }
}

fn read_value(doc: &AutoCommit, value: AmValue<'_>, id: &ObjId) -> Result<Value, DocError> {
    match value {
        AmValue::Object(ty) => read_json(doc, id, ty),
        AmValue::Scalar(s) => Ok(from_scalar(&s)),
    }
}

/// Read a disable-wins flag: false if any concurrent value is false.
fn read_sticky(doc: &AutoCommit, parent: &ObjId, key: &str) -> Result<Option<bool>, DocError> {
    let mut result = None;
    for (value, id) in doc.get_all(parent, key)? {
        let flag = match value {
            AmValue::Object(ObjType::Map) => match doc.get(&id, "value")? {
                Some((AmValue::Scalar(s), _)) => match s.as_ref() {
                    ScalarValue::Boolean(b) => Some(*b),
                    _ => None,
                },
                _ => None,
            },
            AmValue::Scalar(s) => match s.as_ref() {
                ScalarValue::Boolean(b) => Some(*b),
                _ => None,
            },
            _ => None,
        };
        if let Some(b) = flag {
            result = Some(result.unwrap_or(true) && b);
        }
    }
    Ok(result)
}

/// The stored attributes of a document (no `id`, `meta`, `schemas`): what [`write_attrs`] diffs
/// against and what validation works on.
pub fn read_attrs(doc: &AutoCommit, kind: ResourceKind) -> Result<Map<String, Value>, DocError> {
    let attrs = attrs_obj(doc)?;
    let mut out = Map::new();
    for key in doc.keys(&attrs) {
        if key == "active" {
            if let Some(b) = read_sticky(doc, &attrs, "active")? {
                out.insert(key, Value::Bool(b));
            }
            continue;
        }
        let Some((v, id)) = doc.get(&attrs, key.as_str())? else {
            continue;
        };
        let mut json = read_value(doc, v, &id)?;
        if kind == ResourceKind::Group && key == "members" {
            // A map keyed by member id, listed in id order (deterministic on every region).
            json = match json {
                Value::Object(m) => Value::Array(m.into_iter().map(|(_, v)| v).collect()),
                other => other,
            };
            if json.as_array().is_some_and(|a| a.is_empty()) {
                continue;
            }
        }
        out.insert(key, json);
    }
    Ok(out)
}

/// A root-level string field.
fn root_str(doc: &AutoCommit, key: &str) -> Result<Option<String>, DocError> {
    Ok(match doc.get(ROOT, key)? {
        Some((AmValue::Scalar(s), _)) => match s.as_ref() {
            ScalarValue::Str(s) => Some(s.to_string()),
            _ => None,
        },
        _ => None,
    })
}

/// The weak ETag of a document: a digest of its sorted Automerge heads, identical on every
/// region that holds the same changes.
pub fn version(doc: &mut AutoCommit) -> String {
    let mut heads = doc.get_heads();
    heads.sort();
    let mut h = Sha256::new();
    for head in &heads {
        h.update(head.0);
    }
    format!("W/\"{}\"", hex::encode(&h.finalize()[..16]))
}

/// The materialised SCIM view of a live document: `schemas`, `id`, the attributes and `meta`
/// (without `location`, which depends on the URL the client used, and without the computed
/// `groups` of a user). The same document yields the same bytes on every region.
pub fn materialize(doc: &mut AutoCommit, kind: ResourceKind) -> Result<Value, DocError> {
    let id = root_str(doc, "id")?.ok_or_else(|| DocError::Malformed("no id".into()))?;
    let created = root_str(doc, "created")?.unwrap_or_default();
    let modified = root_str(doc, "modified")?.unwrap_or_else(|| created.clone());
    let attrs = read_attrs(doc, kind)?;
    let mut schemas = vec![Value::String(kind.core_schema().id.to_string())];
    if kind == ResourceKind::User && attrs.contains_key(ENTERPRISE_USER_SCHEMA) {
        schemas.push(Value::String(ENTERPRISE_USER_SCHEMA.to_string()));
    }
    let mut out = Map::new();
    out.insert("schemas".into(), Value::Array(schemas));
    out.insert("id".into(), Value::String(id));
    for (k, v) in attrs {
        out.insert(k, v);
    }
    let mut meta = Map::new();
    meta.insert("resourceType".into(), Value::String(kind.name().into()));
    meta.insert("created".into(), Value::String(created));
    meta.insert("lastModified".into(), Value::String(modified));
    meta.insert("version".into(), Value::String(version(doc)));
    out.insert("meta".into(), Value::Object(meta));
    Ok(Value::Object(out))
}

/// The document's resource type, as recorded in it.
pub fn kind_of(doc: &AutoCommit) -> Result<ResourceKind, DocError> {
    match root_str(doc, "type")?.as_deref() {
        Some("User") => Ok(ResourceKind::User),
        Some("Group") => Ok(ResourceKind::Group),
        other => Err(DocError::Malformed(format!("unknown type {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stamp(region: &str) -> Stamp {
        Stamp {
            region: region.into(),
            at: "2026-01-01T00:00:00Z".into(),
            millis: 0,
        }
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn new_user(attrs: Value) -> AutoCommit {
        let mut doc = AutoCommit::new().with_actor(automerge::ActorId::from(b"a".as_slice()));
        init(&mut doc, ResourceKind::User, "id1", &stamp("a")).unwrap();
        let attrs = obj(attrs);
        let keys: Vec<String> = attrs.keys().cloned().collect();
        write_attrs(
            &mut doc,
            ResourceKind::User,
            &Map::new(),
            &attrs,
            &keys,
            &stamp("a"),
        )
        .unwrap();
        doc.commit();
        doc
    }

    #[test]
    fn attributes_round_trip_through_the_document() {
        let attrs = json!({"userName": "bob", "active": true, "name": {"givenName": "B"},
                           "emails": [{"value": "b@x", "primary": true}], "n": 3, "f": 1.5});
        let mut doc = new_user(attrs.clone());
        assert_eq!(
            Value::Object(read_attrs(&doc, ResourceKind::User).unwrap()),
            attrs
        );
        let view = materialize(&mut doc, ResourceKind::User).unwrap();
        assert_eq!(view["id"], json!("id1"));
        assert!(view["meta"]["version"]
            .as_str()
            .unwrap()
            .starts_with("W/\""));
    }

    #[test]
    fn writing_the_same_attributes_records_nothing() {
        let attrs = json!({"userName": "bob", "active": true, "emails": [{"value": "b@x"}]});
        let mut doc = new_user(attrs.clone());
        let before = doc.get_heads();
        let a = obj(attrs);
        let changed = write_attrs(&mut doc, ResourceKind::User, &a, &a, &[], &stamp("a")).unwrap();
        assert!(!changed);
        doc.commit();
        assert_eq!(doc.get_heads(), before);
    }

    #[test]
    fn an_explicit_deactivation_is_written_even_when_unchanged() {
        let mut doc = new_user(json!({"userName": "bob", "active": false}));
        let before = doc.get_heads();
        let a = obj(json!({"userName": "bob", "active": false}));
        assert!(write_attrs(
            &mut doc,
            ResourceKind::User,
            &a,
            &a,
            &["active".into()],
            &stamp("a")
        )
        .unwrap());
        doc.commit();
        assert_ne!(doc.get_heads(), before);
    }

    #[test]
    fn concurrent_reactivation_loses_to_deactivation() {
        let mut a = new_user(json!({"userName": "bob", "active": true}));
        let mut b = a
            .fork()
            .with_actor(automerge::ActorId::from(b"b".as_slice()));
        let cur = obj(json!({"userName": "bob", "active": true}));
        // b deactivates; a (busier: several writes) re-asserts active.
        let off = obj(json!({"userName": "bob", "active": false}));
        write_attrs(
            &mut b,
            ResourceKind::User,
            &cur,
            &off,
            &["active".into()],
            &stamp("b"),
        )
        .unwrap();
        b.commit();
        for _ in 0..3 {
            write_attrs(
                &mut a,
                ResourceKind::User,
                &cur,
                &cur,
                &["active".into()],
                &stamp("a"),
            )
            .unwrap();
            a.commit();
        }
        a.merge(&mut b).unwrap();
        b.merge(&mut a).unwrap();
        assert_eq!(
            read_attrs(&a, ResourceKind::User).unwrap()["active"],
            json!(false)
        );
        assert_eq!(
            materialize(&mut a, ResourceKind::User).unwrap(),
            materialize(&mut b, ResourceKind::User).unwrap()
        );
    }

    #[test]
    fn group_members_change_one_entry_at_a_time() {
        let mut doc = AutoCommit::new();
        init(&mut doc, ResourceKind::Group, "g", &stamp("a")).unwrap();
        let members: Vec<Value> = (0..100)
            .map(|i| json!({"value": format!("u{i:03}")}))
            .collect();
        let a = obj(json!({"displayName": "G", "members": members}));
        write_attrs(
            &mut doc,
            ResourceKind::Group,
            &Map::new(),
            &a,
            &[],
            &stamp("a"),
        )
        .unwrap();
        doc.commit();
        let mut more = a.clone();
        more["members"]
            .as_array_mut()
            .unwrap()
            .push(json!({"value": "u999"}));
        let heads = doc.get_heads();
        write_attrs(&mut doc, ResourceKind::Group, &a, &more, &[], &stamp("a")).unwrap();
        doc.commit();
        let change = doc.save_after(&heads);
        assert!(
            change.len() < 300,
            "one member add cost {} bytes",
            change.len()
        );
        assert_eq!(
            read_attrs(&doc, ResourceKind::Group).unwrap()["members"]
                .as_array()
                .unwrap()
                .len(),
            101
        );
    }

    #[test]
    fn tombstones_are_visible() {
        let mut doc = new_user(json!({"userName": "bob"}));
        assert!(!is_deleted(&doc));
        mark_deleted(&mut doc, &stamp("a")).unwrap();
        doc.commit();
        assert!(is_deleted(&doc));
    }
}
