//! The mapping between a SCIM resource (JSON) and its Automerge document.
//!
//! The layout (document format 2) is described in [`crate::conflict::layout`], next to the rules it
//! encodes.
//!
//! Why this shape (it follows from how Automerge merges and what its ops cost):
//! - Each attribute is one Automerge value holding its JSON text, so concurrent writes merge per
//!   attribute: a deterministic winner per attribute, every concurrent value visible through
//!   `get_all` for the conflict rules. Nested maps and lists per attribute would merge nothing
//!   useful (concurrent list inserts duplicate emails) and cost several Automerge ops per value;
//!   Automerge 0.12 spends ~10 µs per op, the largest part of a write.
//! - A plain `active` scalar cannot be disable-wins, so `active` is a fresh nested map written on
//!   every explicit change and read with `get_all` (inactive if any concurrent value is false).
//! - Group members are not in the document: each membership is a record of its own
//!   (`store::members`), so a group's document stays small whatever its size. Documents written
//!   by format 2 still hold a members map (`a.members`); it is read only to migrate it
//!   ([`legacy_members`]).
//! - Writes go through [`write_attrs`], which writes only what differs, so a replayed whole
//!   resource (PUT) records nothing and cannot resolve a concurrent conflict the wrong way.
//!
//! Everything here works on an in-memory document: no I/O.

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjId, ObjType, ReadDoc, ScalarValue, Value as AmValue, ROOT};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::scim::schema::{ResourceKind, ENTERPRISE_USER_SCHEMA};

pub use crate::conflict::layout::DOC_FORMAT;
use crate::conflict::layout::*;
use crate::conflict::sticky::{self, StickySet};
use crate::conflict::Conflict;

/// Errors reading or writing a document. Automerge errors here mean a bug or corrupt bytes.
#[derive(Debug, thiserror::Error)]
pub enum DocError {
    #[error("automerge: {0}")]
    Automerge(#[from] automerge::AutomergeError),
    #[error("document is malformed: {0}")]
    Malformed(String),
}

impl From<crate::conflict::ConflictError> for DocError {
    fn from(e: crate::conflict::ConflictError) -> Self {
        match e {
            crate::conflict::ConflictError::Automerge(e) => DocError::Automerge(e),
        }
    }
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

/// The genesis of a resource's document: its header and empty attributes map, written by
/// [`GENESIS_ACTOR`] at time 0, so every region that creates this id writes the very same change
/// and concurrent creates share one attributes map (see [`crate::conflict::layout`]).
pub fn genesis(kind: ResourceKind, id: &str) -> Result<AutoCommit, DocError> {
    let mut doc = AutoCommit::new().with_actor(automerge::ActorId::from(GENESIS_ACTOR));
    let header = json!({"v": DOC_FORMAT, "type": kind.name(), "id": id});
    doc.put(ROOT, HEADER, header.to_string())?;
    doc.put_object(ROOT, ATTRS, ObjType::Map)?;
    // Every container a region might otherwise create on its first write is made here: two
    // regions creating the same map concurrently would make two maps, and one would vanish
    // with everything written into it (a conflict record).
    doc.put_object(ROOT, CONFLICTS, ObjType::Map)?;
    doc.commit_with(automerge::transaction::CommitOptions::default().with_time(0));
    Ok(doc)
}

/// Start a new document for a resource, created by `actor` (the region) at `stamp`.
pub fn create(
    kind: ResourceKind,
    id: &str,
    actor: automerge::ActorId,
    stamp: &Stamp,
) -> Result<AutoCommit, DocError> {
    let mut doc = genesis(kind, id)?.with_actor(actor);
    let created = json!({"at": stamp.at, "by": stamp.region});
    doc.put(ROOT, CREATED, created.to_string())?;
    Ok(doc)
}

/// Store conflict records in the document (`x`), those it does not hold yet. Returns whether
/// anything was written. Records travel with the document, so every region gets them.
pub fn record_conflicts(doc: &mut AutoCommit, records: &[Conflict]) -> Result<bool, DocError> {
    if records.is_empty() {
        return Ok(false);
    }
    let x = match doc.get(ROOT, CONFLICTS)? {
        Some((AmValue::Object(ObjType::Map), id)) => id,
        _ => return Err(DocError::Malformed("no conflict records map".into())),
    };
    let mut wrote = false;
    for r in records {
        if doc.get(&x, r.id.as_str())?.is_none() {
            let text = serde_json::to_string(r).map_err(|e| DocError::Malformed(e.to_string()))?;
            doc.put(&x, r.id.as_str(), text)?;
            wrote = true;
        }
    }
    Ok(wrote)
}

/// Is this document a tombstone?
pub fn is_deleted(doc: &AutoCommit) -> bool {
    matches!(doc.get(ROOT, DELETED), Ok(Some(_)))
}

/// Mark the document deleted (a tombstone: the document stays so delete can win later).
pub fn mark_deleted(doc: &mut AutoCommit, stamp: &Stamp) -> Result<(), DocError> {
    let t = doc.put_object(ROOT, DELETED, ObjType::Map)?;
    doc.put(&t, "at", stamp.at.as_str())?;
    doc.put(&t, "by", stamp.region.as_str())?;
    doc.put(ROOT, MODIFIED, stamp.at.as_str())?;
    Ok(())
}

/// Flatten stored attributes into document keys: extension objects become one key per
/// extension attribute (`<URN>:<name>`), so they merge per attribute too.
fn flatten(attrs: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in attrs {
        match v {
            Value::Object(inner) if k.starts_with("urn:") => {
                for (ik, iv) in inner {
                    out.insert(format!("{k}:{ik}"), iv.clone());
                }
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out
}

/// Write the attributes of `new` (a SCIM resource in stored form: no `id`, `meta`, `schemas`)
/// over `old` (what the document holds now), writing only what differs. `explicit` lists
/// attributes the request set explicitly (top-level names, or `<URN>:<name>` for extension
/// attributes): a sticky attribute among them is re-asserted even when its value is
/// unchanged. `sticky` names the tenant's sticky attributes besides `active`, each written as
/// a flag that records whether its value restricts access. Returns whether anything was
/// written.
pub fn write_attrs(
    doc: &mut AutoCommit,
    kind: ResourceKind,
    old: &Map<String, Value>,
    new: &Map<String, Value>,
    explicit: &[String],
    sticky: &StickySet,
    stamp: &Stamp,
) -> Result<bool, DocError> {
    let attrs = attrs_obj(doc)?;
    let (mut old, mut new) = (flatten(old), flatten(new));
    if kind == ResourceKind::Group {
        // Members are records of their own (`store::members`), never document attributes.
        old.remove(MEMBERS);
        new.remove(MEMBERS);
    }
    let mut changed = false;
    for key in old.keys() {
        if new.contains_key(key) {
            continue;
        }
        doc.delete(&attrs, key.as_str())?;
        changed = true;
    }
    for (key, value) in &new {
        let old_value = old.get(key);
        if let Some(restrictive) = sticky.restrictive(key, value) {
            let reassert = explicit.iter().any(|e| e == key);
            if old_value != Some(value) || reassert {
                write_sticky(doc, &attrs, key, value, restrictive, stamp)?;
                changed = true;
            }
        } else if old_value != Some(value) {
            doc.put(&attrs, key.as_str(), value.to_string())?;
            changed = true;
        }
    }
    if changed {
        doc.put(ROOT, MODIFIED, stamp.at.as_str())?;
    }
    Ok(changed)
}

/// The attributes map of a document.
fn attrs_obj(doc: &AutoCommit) -> Result<ObjId, DocError> {
    match doc.get(ROOT, ATTRS)? {
        Some((AmValue::Object(ObjType::Map), id)) => Ok(id),
        _ => Err(DocError::Malformed("no attributes map".into())),
    }
}

/// Write a sticky attribute as a fresh flag map, so every explicit write is a new op that
/// concurrent writes cannot silently overwrite (see [`crate::conflict::sticky`]). `active`
/// keeps its original flag: a boolean value, restrictive when false.
fn write_sticky(
    doc: &mut AutoCommit,
    parent: &ObjId,
    key: &str,
    value: &Value,
    restrictive: bool,
    stamp: &Stamp,
) -> Result<(), DocError> {
    let flag = doc.put_object(parent, key, ObjType::Map)?;
    if key == ACTIVE {
        let Some(b) = value.as_bool() else {
            return Err(DocError::Malformed("active must be a boolean".into()));
        };
        doc.put(&flag, VALUE, b)?;
    } else {
        doc.put(&flag, VALUE, value.to_string())?;
        doc.put(&flag, sticky::RESTRICTIVE, restrictive)?;
    }
    doc.put(&flag, AT, stamp.at.as_str())?;
    doc.put(&flag, BY, stamp.region.as_str())?;
    Ok(())
}

/// The members map of a format-2 group document as membership records (see
/// [`crate::conflict::membership`]), by member id: what the migration to format 3 writes, and
/// what a format-2 change that still arrives turns into.
///
/// Each surviving entry of a member becomes a value whose dot is its Automerge op id, under the
/// region `~am:<actor>` (a counter space of its own); the record's context is, per actor, the
/// highest op of that actor that ever wrote the member's key in this document's history. Op
/// counters of one actor only grow and every op depends on that actor's earlier ones, so the
/// context is exact, and two regions that migrated documents at different points of the same
/// history get records whose join is what the merged document would have said.
pub fn legacy_members(
    doc: &mut AutoCommit,
) -> Result<Vec<(String, crate::conflict::membership::Record)>, DocError> {
    use crate::conflict::membership::{Dot, MemberValue, Record};
    use automerge::legacy::{Key, ObjectId};
    let attrs = attrs_obj(doc)?;
    let members = match doc.get(&attrs, MEMBERS)? {
        Some((AmValue::Object(ObjType::Map), id)) => id,
        _ => return Ok(Vec::new()),
    };
    let ObjId::Id(m_counter, m_actor, _) = &members else {
        return Ok(Vec::new());
    };
    let (m_counter, m_actor) = (*m_counter, m_actor.clone());
    let region = |actor: &[u8]| format!("~am:{}", crate::conflict::region_of(actor));
    let mut seen: std::collections::HashMap<String, std::collections::BTreeMap<String, u64>> =
        Default::default();
    for change in doc.get_changes(&[]) {
        let expanded = change.decode();
        let start = expanded.start_op.get();
        let actor = region(expanded.actor_id.to_bytes());
        for (i, op) in expanded.operations.iter().enumerate() {
            let ObjectId::Id(obj) = &op.obj else {
                continue;
            };
            if obj.0 != m_counter || obj.1 != m_actor {
                continue;
            }
            if let Key::Map(key) = &op.key {
                let mark = seen
                    .entry(key.to_string())
                    .or_default()
                    .entry(actor.clone())
                    .or_insert(0);
                *mark = (*mark).max(start + i as u64);
            }
        }
    }
    let mut out = Vec::new();
    for id in doc.keys(&members).collect::<Vec<_>>() {
        let mut values = Vec::new();
        for (value, entry) in doc.get_all(&members, id.as_str())? {
            let (AmValue::Object(ObjType::Map), ObjId::Id(counter, actor, _)) = (&value, &entry)
            else {
                continue;
            };
            let on = matches!(
                doc.get(&entry, ON)?,
                Some((AmValue::Scalar(s), _)) if matches!(s.as_ref(), ScalarValue::Boolean(true))
            );
            let attrs = match doc.get(&entry, MEMBER)?.and_then(|(v, _)| as_text(&v)) {
                Some(text) if on => crate::store::members::member_attrs(&parse_json(&text)?),
                _ => None,
            };
            let at = doc
                .get(&entry, AT)?
                .and_then(|(v, _)| as_text(&v))
                .and_then(|t| {
                    time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .map_or(0, |t| (t.unix_timestamp_nanos() / 1_000_000) as i64);
            values.push(MemberValue {
                dot: Dot {
                    region: region(actor.to_bytes()),
                    seq: *counter,
                },
                on,
                attrs,
                at,
            });
        }
        if values.is_empty() {
            continue;
        }
        values.sort_by(|a, b| a.dot.cmp(&b.dot));
        let mut context = seen.remove(&id).unwrap_or_default();
        for v in &values {
            let mark = context.entry(v.dot.region.clone()).or_insert(0);
            *mark = (*mark).max(v.dot.seq);
        }
        out.push((
            id,
            Record {
                values,
                seen: context,
            },
        ));
    }
    Ok(out)
}

/// A string scalar's text.
fn as_text(value: &AmValue<'_>) -> Option<String> {
    match value {
        AmValue::Scalar(s) => match s.as_ref() {
            ScalarValue::Str(s) => Some(s.to_string()),
            _ => None,
        },
        _ => None,
    }
}

/// Parse the JSON text of a stored value.
fn parse_json(text: &str) -> Result<Value, DocError> {
    serde_json::from_str(text).map_err(|e| DocError::Malformed(format!("stored value: {e}")))
}

/// The stored attributes of a document (no `id`, `meta`, `schemas`): what [`write_attrs`] diffs
/// against and what validation works on. Extension attributes are regrouped under their URN.
pub fn read_attrs(doc: &AutoCommit, kind: ResourceKind) -> Result<Map<String, Value>, DocError> {
    let attrs = attrs_obj(doc)?;
    let mut out = Map::new();
    for key in doc.keys(&attrs) {
        if kind == ResourceKind::Group && key == MEMBERS {
            // A format-2 document's members map: migrated into records, never read as an
            // attribute.
            continue;
        }
        let value = match sticky::flags(doc, &attrs, &key)? {
            // A sticky attribute (whatever this region's configuration says: the writer
            // decided): the winning restrictive value, else the latest.
            Some(flags) => match sticky::merged(&flags) {
                Some(f) => f.value.clone(),
                None => continue,
            },
            None => {
                let Some((value, _)) = doc.get(&attrs, key.as_str())? else {
                    continue;
                };
                let Some(text) = as_text(&value) else {
                    continue;
                };
                parse_json(&text)?
            }
        };
        match key.rsplit_once(':').filter(|_| key.starts_with("urn:")) {
            Some((urn, name)) => {
                let ext = out
                    .entry(urn.to_string())
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(m) = ext {
                    m.insert(name.to_string(), value);
                }
            }
            None => {
                out.insert(key, value);
            }
        }
    }
    Ok(out)
}

/// The document header (`v`, `type`, `id`, `created`).
fn header(doc: &AutoCommit) -> Result<Map<String, Value>, DocError> {
    let text = match doc.get(ROOT, HEADER)? {
        Some((v, _)) => as_text(&v),
        None => None,
    }
    .ok_or_else(|| DocError::Malformed("no header".into()))?;
    match parse_json(&text)? {
        Value::Object(m) if m.get("v") == Some(&json!(DOC_FORMAT)) => Ok(m),
        other => Err(DocError::Malformed(format!("unknown header {other}"))),
    }
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
    let header = header(doc)?;
    let text = |k: &str| {
        header
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    // Concurrent creates (one per region) each wrote `c`: the earliest is the creation.
    let created = doc
        .get_all(ROOT, CREATED)?
        .iter()
        .filter_map(|(v, _)| as_text(v))
        .filter_map(|t| serde_json::from_str::<Value>(&t).ok())
        .filter_map(|c| c.get("at").and_then(Value::as_str).map(str::to_string))
        .min()
        .unwrap_or_default();
    let modified = match doc.get(ROOT, MODIFIED)? {
        Some((v, _)) => as_text(&v),
        None => None,
    }
    .unwrap_or_else(|| created.clone());
    let attrs = read_attrs(doc, kind)?;
    let mut schemas = vec![Value::String(kind.core_schema().id.to_string())];
    if kind == ResourceKind::User && attrs.contains_key(ENTERPRISE_USER_SCHEMA) {
        schemas.push(Value::String(ENTERPRISE_USER_SCHEMA.to_string()));
    }
    let mut out = Map::new();
    out.insert("schemas".into(), Value::Array(schemas));
    out.insert("id".into(), Value::String(text("id")));
    out.extend(attrs);
    let mut meta = Map::new();
    meta.insert("resourceType".into(), Value::String(kind.name().into()));
    meta.insert("created".into(), Value::String(created));
    meta.insert("lastModified".into(), Value::String(modified));
    meta.insert("version".into(), Value::String(version(doc)));
    out.insert("meta".into(), Value::Object(meta));
    Ok(Value::Object(out))
}

/// The document's resource id, as recorded in its header.
pub fn id_of(doc: &AutoCommit) -> Result<String, DocError> {
    header(doc)?
        .get("id")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| DocError::Malformed("no id in header".into()))
}

/// The document's resource type, as recorded in its header.
pub fn kind_of(doc: &AutoCommit) -> Result<ResourceKind, DocError> {
    match header(doc)?.get("type").and_then(Value::as_str) {
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
        let mut doc = create(
            ResourceKind::User,
            "id1",
            automerge::ActorId::from(b"a".as_slice()),
            &stamp("a"),
        )
        .unwrap();
        let attrs = obj(attrs);
        let keys: Vec<String> = attrs.keys().cloned().collect();
        write_attrs(
            &mut doc,
            ResourceKind::User,
            &Map::new(),
            &attrs,
            &keys,
            &StickySet::default(),
            &stamp("a"),
        )
        .unwrap();
        doc.commit();
        doc
    }

    #[test]
    fn attributes_round_trip_through_the_document() {
        let attrs = json!({"userName": "bob", "active": true, "name": {"givenName": "B"},
                           "emails": [{"value": "b@x", "primary": true}], "n": 3, "f": 1.5,
                           ENTERPRISE_USER_SCHEMA: {"department": "D", "manager": {"value": "m"}}});
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
        let changed = write_attrs(
            &mut doc,
            ResourceKind::User,
            &a,
            &a,
            &[],
            &StickySet::default(),
            &stamp("a"),
        )
        .unwrap();
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
            &StickySet::default(),
            &stamp("a"),
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
            &StickySet::default(),
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
                &StickySet::default(),
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

    /// A format-2 member entry `{on, m, at, by}`, as that format wrote it.
    fn legacy_entry(doc: &mut AutoCommit, id: &str, member: Option<Value>, at: &str, by: &str) {
        let attrs = attrs_obj(doc).unwrap();
        let members = match doc.get(&attrs, MEMBERS).unwrap() {
            Some((AmValue::Object(ObjType::Map), m)) => m,
            _ => doc.put_object(&attrs, MEMBERS, ObjType::Map).unwrap(),
        };
        let e = doc.put_object(&members, id, ObjType::Map).unwrap();
        doc.put(&e, ON, member.is_some()).unwrap();
        if let Some(m) = member {
            doc.put(&e, MEMBER, m.to_string()).unwrap();
        }
        doc.put(&e, AT, at).unwrap();
        doc.put(&e, BY, by).unwrap();
        doc.commit();
    }

    #[test]
    fn format_2_members_become_records_that_join_like_the_merged_document() {
        let mut a = create(ResourceKind::Group, "id1", actor("eu"), &stamp("eu")).unwrap();
        write(
            &mut a,
            ResourceKind::Group,
            json!({"displayName": "G"}),
            "eu",
        );
        legacy_entry(
            &mut a,
            "m1",
            Some(json!({"value": "m1", "display": "M"})),
            "2026-01-01T00:00:01Z",
            "eu",
        );
        legacy_entry(
            &mut a,
            "m2",
            Some(json!({"value": "m2"})),
            "2026-01-01T00:00:02Z",
            "eu",
        );
        let mut b = a.fork().with_actor(actor("us"));
        // Concurrently: eu removes m1, us re-adds it with a new display; us removes m2 and
        // then adds it back (seen by itself).
        legacy_entry(&mut a, "m1", None, "2026-01-01T00:00:03Z", "eu");
        legacy_entry(
            &mut b,
            "m1",
            Some(json!({"value": "m1", "display": "N"})),
            "2026-01-01T00:00:03Z",
            "us",
        );
        legacy_entry(&mut b, "m2", None, "2026-01-01T00:00:04Z", "us");
        legacy_entry(
            &mut b,
            "m2",
            Some(json!({"value": "m2"})),
            "2026-01-01T00:00:05Z",
            "us",
        );
        let (ra, rb) = (
            legacy_members(&mut a).unwrap(),
            legacy_members(&mut b).unwrap(),
        );
        let mut merged = a.clone();
        merged.merge(&mut b).unwrap();
        let rm = legacy_members(&mut merged).unwrap();
        // Records migrated apart join into what the merged document migrates to.
        for (id, record) in &rm {
            let find = |rs: &[(String, crate::conflict::membership::Record)]| {
                rs.iter()
                    .find(|(i, _)| i == id)
                    .map(|(_, r)| r.clone())
                    .unwrap_or_default()
            };
            assert_eq!(&find(&ra).join(&find(&rb)), record, "{id}");
        }
        let present: Vec<&str> = rm
            .iter()
            .filter(|(_, r)| r.present())
            .map(|(id, _)| id.as_str())
            .collect();
        assert_eq!(present, ["m2"]);
        let m1 = &rm.iter().find(|(i, _)| i == "m1").unwrap().1;
        assert_eq!(m1.conflicts().len(), 1);
        // Group attributes never include the legacy map.
        assert!(!read_attrs(&merged, ResourceKind::Group)
            .unwrap()
            .contains_key("members"));
    }

    #[test]
    fn extension_attributes_merge_one_by_one() {
        let base = json!({"userName": "bob", ENTERPRISE_USER_SCHEMA: {"department": "D", "costCenter": "1"}});
        let mut a = new_user(base.clone());
        let mut b = a
            .fork()
            .with_actor(automerge::ActorId::from(b"b".as_slice()));
        let cur = obj(base);
        let mut a_new = cur.clone();
        a_new[ENTERPRISE_USER_SCHEMA]["department"] = json!("D2");
        let mut b_new = cur.clone();
        b_new[ENTERPRISE_USER_SCHEMA]["costCenter"] = json!("2");
        write_attrs(
            &mut a,
            ResourceKind::User,
            &cur,
            &a_new,
            &[],
            &StickySet::default(),
            &stamp("a"),
        )
        .unwrap();
        write_attrs(
            &mut b,
            ResourceKind::User,
            &cur,
            &b_new,
            &[],
            &StickySet::default(),
            &stamp("b"),
        )
        .unwrap();
        a.commit();
        b.commit();
        a.merge(&mut b).unwrap();
        let merged = read_attrs(&a, ResourceKind::User).unwrap();
        assert_eq!(
            merged[ENTERPRISE_USER_SCHEMA],
            json!({"costCenter": "2", "department": "D2"})
        );
    }

    fn actor(name: &str) -> automerge::ActorId {
        automerge::ActorId::from(name.as_bytes())
    }

    fn write(doc: &mut AutoCommit, kind: ResourceKind, attrs: Value, region: &str) {
        let old = read_attrs(doc, kind).unwrap();
        let new = obj(attrs);
        let explicit: Vec<String> = new.keys().cloned().collect();
        write_attrs(
            doc,
            kind,
            &old,
            &new,
            &explicit,
            &StickySet::default(),
            &stamp(region),
        )
        .unwrap();
        doc.commit();
    }

    fn detect(doc: &mut AutoCommit, kind: &str) -> Vec<crate::conflict::Conflict> {
        let res = crate::conflict::Resource {
            tenant: "t",
            kind,
            id: "id1",
        };
        crate::conflict::detect(doc, res).unwrap()
    }

    #[test]
    fn concurrent_creates_of_one_id_are_one_resource_with_merged_attributes() {
        let mut a = create(ResourceKind::User, "id1", actor("eu"), &stamp("eu")).unwrap();
        let mut b = create(ResourceKind::User, "id1", actor("us"), &stamp("us")).unwrap();
        write(
            &mut a,
            ResourceKind::User,
            json!({"userName": "bob", "title": "A"}),
            "eu",
        );
        write(
            &mut b,
            ResourceKind::User,
            json!({"userName": "bob", "displayName": "B"}),
            "us",
        );
        a.merge(&mut b).unwrap();
        b.merge(&mut a).unwrap();
        let view = materialize(&mut a, ResourceKind::User).unwrap();
        assert_eq!(view, materialize(&mut b, ResourceKind::User).unwrap());
        assert_eq!(view["userName"], json!("bob"));
        assert_eq!(view["title"], json!("A"));
        assert_eq!(view["displayName"], json!("B"));
        let rules: Vec<_> = detect(&mut a, "User").iter().map(|c| c.rule).collect();
        assert_eq!(rules, [crate::conflict::Rule::UsernameMerge]);
    }

    #[test]
    fn a_delete_beats_a_concurrent_update_and_is_recorded_once_per_update() {
        let mut a = new_user(json!({"userName": "bob", "title": "x"}));
        let mut b = a.fork().with_actor(actor("us"));
        mark_deleted(&mut a, &stamp("a")).unwrap();
        a.commit();
        write(
            &mut b,
            ResourceKind::User,
            json!({"userName": "bob", "title": "y"}),
            "us",
        );
        b.merge(&mut a).unwrap();
        a.merge(&mut b).unwrap();
        assert!(is_deleted(&a) && is_deleted(&b));
        let (ca, cb) = (detect(&mut a, "User"), detect(&mut b, "User"));
        assert_eq!(ca, cb);
        assert_eq!(ca.len(), 1);
        assert_eq!(ca[0].rule, crate::conflict::Rule::DeleteWins);
        assert_eq!(ca[0].values[1].region, "us");
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
