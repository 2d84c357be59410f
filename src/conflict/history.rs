//! A resource's history: who changed which attribute, in which region, when, read from the
//! Automerge change history of its document. Pure: works on an in-memory document, no I/O.
//!
//! Every change names its actor (the store uses the region name) and carries the write time
//! (milliseconds since the epoch, from the store's commit stamp), so the history needs no record
//! of its own: it is the document. Which attributes a change touched comes from its operations:
//! each operation names the object it acts on by the id of the operation that created that
//! object, so walking the changes in causal order and remembering what every created object is
//! (the attribute map, a sticky flag of attribute K, a member entry, the tombstone…) tells the
//! attribute of every later operation.
//!
//! The layout read is [`super::layout`] (format 2): root keys `h` header, `c` creation record, `a`
//! attribute map (one key per attribute, extension attributes flat as `<URN>:<name>`; nested maps
//! for sticky flags such as `active` and for `members`, keyed by member id), `m` lastModified, `d`
//! tombstone, `x` conflict records. Changes by the shared genesis actor (the header every region
//! starts from) are not anyone's edit and are left out. Format 1 documents (no genesis: the
//! creating region writes `h`) read the same.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};

use automerge::legacy::{Key, ObjectId, OpId, OpType};
use automerge::{AutoCommit, Change};
use serde::{Deserialize, Serialize};

use super::layout::{ATTRS, CONFLICTS, CREATED, DELETED, GENESIS_ACTOR, HEADER, MEMBERS};
use super::{member_attribute, region_of, rfc3339_millis};

/// What a change did to the resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// The change created the resource (wrote its creation record or header).
    Create,
    /// The change wrote attributes of a live resource.
    Update,
    /// The change deleted the resource (wrote the tombstone).
    Delete,
    /// The change only recorded an automatic conflict resolution.
    ConflictRecord,
}

impl Action {
    /// The action's name as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::ConflictRecord => "conflict-record",
        }
    }
}

/// One change of a resource, as the admin API serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// When the writing region committed the change (RFC 3339, UTC, that region's clock).
    pub at: String,
    /// The region that wrote it (the change's actor).
    pub region: String,
    pub action: Action,
    /// The attributes the change wrote or removed, sorted: `displayName`, `active`,
    /// `urn:…:enterprise:2.0:User:department`, `members[value eq "<id>"]`.
    pub attributes: Vec<String>,
    /// The Automerge change hash (hex): the same change has the same hash in every region.
    pub change: String,
}

/// The history of a document: one entry per change, genesis excluded, in causal order (a change
/// comes after every change it depends on), oldest first; concurrent changes are ordered by time,
/// then region, then hash, so every region lists a merged document the same way.
pub fn history(doc: &mut AutoCommit) -> Vec<HistoryEntry> {
    let changes = causal_order(doc.get_changes(&[]));
    let mut objects: HashMap<OpId, Obj> = HashMap::new();
    let mut out = Vec::new();
    for change in &changes {
        let expanded = change.decode();
        let actor = expanded.actor_id.clone();
        let start = expanded.start_op.get();
        let mut touched = Touched::default();
        for (i, op) in expanded.operations.iter().enumerate() {
            let parent = match &op.obj {
                ObjectId::Root => Obj::Root,
                ObjectId::Id(id) => objects.get(id).cloned().unwrap_or(Obj::Other),
            };
            let key = match &op.key {
                Key::Map(k) => Some(k.as_str()),
                Key::Seq(_) => None,
            };
            if let Some(created) = touched.record(&parent, key, &op.action) {
                objects.insert(OpId::new(start + i as u64, &actor), created);
            }
        }
        if actor.to_bytes() == GENESIS_ACTOR {
            continue;
        }
        let action = if touched.delete {
            Action::Delete
        } else if touched.create {
            Action::Create
        } else if touched.attributes.is_empty() && touched.conflict {
            Action::ConflictRecord
        } else {
            Action::Update
        };
        out.push(HistoryEntry {
            at: rfc3339_millis(change.timestamp()),
            region: region_of(actor.to_bytes()),
            action,
            attributes: touched.attributes.into_iter().collect(),
            change: change.hash().to_string(),
        });
    }
    out
}

/// What an object of the document is, as far as history cares.
#[derive(Debug, Clone)]
enum Obj {
    Root,
    /// The attribute map `a`.
    Attrs,
    /// A nested object inside attribute K (a sticky flag such as `active`).
    Attr(String),
    /// The `members` map of a group.
    Members,
    /// A member entry (or an object inside one) of the member with this id.
    Member(String),
    /// The tombstone `d`, or anything inside it.
    Tombstone,
    /// The creation record `c`, or anything inside it.
    Creation,
    /// The conflict records `x`, or anything inside them.
    Conflicts,
    /// Anything else (lastModified, unknown keys of later formats).
    Other,
}

/// What one change touched so far.
#[derive(Default)]
struct Touched {
    attributes: BTreeSet<String>,
    create: bool,
    delete: bool,
    conflict: bool,
}

impl Touched {
    /// Note one operation on `parent` at `key`; returns what the operation creates, if it makes
    /// an object.
    fn record(&mut self, parent: &Obj, key: Option<&str>, action: &OpType) -> Option<Obj> {
        let makes = matches!(action, OpType::Make(_));
        let child = match parent {
            Obj::Root => match key {
                Some(HEADER) | Some(CREATED) => {
                    self.create = true;
                    Obj::Creation
                }
                Some(DELETED) => {
                    self.delete |= !matches!(action, OpType::Delete);
                    Obj::Tombstone
                }
                Some(CONFLICTS) => {
                    self.conflict = true;
                    Obj::Conflicts
                }
                Some(ATTRS) => Obj::Attrs,
                _ => Obj::Other,
            },
            Obj::Attrs => match key {
                // Making the members map is not a change of any member; its entries are.
                Some(MEMBERS) if makes => Obj::Members,
                Some(k) => {
                    self.attributes.insert(k.to_string());
                    Obj::Attr(k.to_string())
                }
                None => Obj::Other,
            },
            Obj::Attr(k) => {
                self.attributes.insert(k.clone());
                Obj::Attr(k.clone())
            }
            Obj::Members => match key {
                Some(id) => {
                    self.attributes.insert(member_attribute(id));
                    Obj::Member(id.to_string())
                }
                None => Obj::Other,
            },
            Obj::Member(id) => {
                self.attributes.insert(member_attribute(id));
                Obj::Member(id.clone())
            }
            Obj::Tombstone => {
                self.delete = true;
                Obj::Tombstone
            }
            Obj::Creation => {
                self.create = true;
                Obj::Creation
            }
            Obj::Conflicts => {
                self.conflict = true;
                Obj::Conflicts
            }
            Obj::Other => Obj::Other,
        };
        makes.then_some(child)
    }
}

/// Kahn's algorithm over the dependency graph: every change after its dependencies; among the
/// changes ready at once, the earliest (time, actor, hash) first.
fn causal_order(changes: Vec<Change>) -> Vec<Change> {
    let index: HashMap<_, usize> = changes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.hash(), i))
        .collect();
    let mut waiting = vec![0usize; changes.len()];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); changes.len()];
    for (i, c) in changes.iter().enumerate() {
        for dep in c.deps() {
            if let Some(&d) = index.get(dep) {
                waiting[i] += 1;
                dependents[d].push(i);
            }
        }
    }
    let order_key = |i: usize| {
        let c = &changes[i];
        Reverse((
            c.timestamp(),
            c.actor_id().to_bytes().to_vec(),
            c.hash().0,
            i,
        ))
    };
    let mut ready: BinaryHeap<_> = (0..changes.len())
        .filter(|&i| waiting[i] == 0)
        .map(order_key)
        .collect();
    let mut order = Vec::with_capacity(changes.len());
    while let Some(Reverse((_, _, _, i))) = ready.pop() {
        order.push(i);
        for &next in &dependents[i] {
            waiting[next] -= 1;
            if waiting[next] == 0 {
                ready.push(order_key(next));
            }
        }
    }
    let mut slots: Vec<Option<Change>> = changes.into_iter().map(Some).collect();
    order.into_iter().filter_map(|i| slots[i].take()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::{CommitOptions, Transactable};
    use automerge::{ActorId, ObjId, ObjType, ReadDoc, ROOT};

    fn actor(name: &str) -> ActorId {
        ActorId::from(name.as_bytes())
    }

    fn commit(doc: &mut AutoCommit, millis: i64) {
        doc.commit_with(CommitOptions::default().with_time(millis));
    }

    fn attrs(doc: &AutoCommit) -> ObjId {
        match doc.get(ROOT, "a").unwrap() {
            Some((_, id)) => id,
            None => panic!("no attribute map"),
        }
    }

    /// The shared genesis change (format 2, see `layout`): the header, the attribute map and
    /// the conflict map, by the genesis actor at time 0.
    fn genesis(kind: &str, id: &str) -> AutoCommit {
        let mut doc = AutoCommit::new().with_actor(ActorId::from(GENESIS_ACTOR));
        doc.put(
            ROOT,
            "h",
            format!("{{\"v\":2,\"type\":\"{kind}\",\"id\":\"{id}\"}}"),
        )
        .unwrap();
        doc.put_object(ROOT, "a", ObjType::Map).unwrap();
        doc.put_object(ROOT, "x", ObjType::Map).unwrap();
        commit(&mut doc, 0);
        doc
    }

    /// A region's copy of the genesis document.
    fn in_region(doc: &mut AutoCommit, region: &str) -> AutoCommit {
        doc.fork().with_actor(actor(region))
    }

    fn stamp(doc: &mut AutoCommit, obj: &ObjId, region: &str, at: &str) {
        doc.put(obj, "at", at).unwrap();
        doc.put(obj, "by", region).unwrap();
    }

    /// A create as the store writes it: creation record, attributes, the sticky `active` map.
    fn create_user(doc: &mut AutoCommit, region: &str, millis: i64) {
        doc.put(ROOT, "c", format!("{{\"at\":\"t\",\"by\":\"{region}\"}}"))
            .unwrap();
        let a = attrs(doc);
        doc.put(&a, "userName", "\"bjensen\"").unwrap();
        doc.put(&a, "displayName", "\"Babs\"").unwrap();
        doc.put(
            &a,
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
            "\"Sales\"",
        )
        .unwrap();
        let active = doc.put_object(&a, "active", ObjType::Map).unwrap();
        doc.put(&active, "value", true).unwrap();
        stamp(doc, &active, region, "t");
        doc.put(ROOT, "m", "t").unwrap();
        commit(doc, millis);
    }

    fn set_active(doc: &mut AutoCommit, region: &str, value: bool, millis: i64) {
        let a = attrs(doc);
        let active = doc.put_object(&a, "active", ObjType::Map).unwrap();
        doc.put(&active, "value", value).unwrap();
        stamp(doc, &active, region, "t");
        doc.put(ROOT, "m", "t").unwrap();
        commit(doc, millis);
    }

    fn delete(doc: &mut AutoCommit, region: &str, millis: i64) {
        let d = doc.put_object(ROOT, "d", ObjType::Map).unwrap();
        stamp(doc, &d, region, "t");
        doc.put(ROOT, "m", "t").unwrap();
        commit(doc, millis);
    }

    fn summary(doc: &mut AutoCommit) -> Vec<(String, &'static str, Vec<String>)> {
        history(doc)
            .into_iter()
            .map(|e| (e.region, e.action.as_str(), e.attributes))
            .collect()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn create_update_delete_name_the_region_the_attributes_and_the_time() {
        let mut g = genesis("User", "u1");
        let mut eu = in_region(&mut g, "eu");
        create_user(&mut eu, "eu", 1_700_000_000_123);
        let a = attrs(&eu);
        eu.put(&a, "displayName", "\"Barbara\"").unwrap();
        eu.delete(
            &a,
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
        )
        .unwrap();
        eu.put(ROOT, "m", "t2").unwrap();
        commit(&mut eu, 1_700_000_001_000);
        set_active(&mut eu, "eu", false, 1_700_000_002_000);
        delete(&mut eu, "eu", 1_700_000_003_000);

        let h = history(&mut eu);
        assert_eq!(h.len(), 4, "genesis is left out: {h:?}");
        assert_eq!(h[0].at, "2023-11-14T22:13:20.123Z");
        assert!(h.iter().all(|e| e.change.len() == 64));
        assert_eq!(
            summary(&mut eu),
            vec![
                (
                    "eu".to_string(),
                    "create",
                    strings(&[
                        "active",
                        "displayName",
                        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
                        "userName"
                    ])
                ),
                (
                    "eu".to_string(),
                    "update",
                    strings(&[
                        "displayName",
                        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"
                    ])
                ),
                ("eu".to_string(), "update", strings(&["active"])),
                ("eu".to_string(), "delete", vec![]),
            ]
        );
    }

    #[test]
    fn member_changes_are_named_by_member_path() {
        let mut g = genesis("Group", "g1");
        let mut us = in_region(&mut g, "us");
        us.put(ROOT, "c", "{\"at\":\"t\",\"by\":\"us\"}").unwrap();
        let a = attrs(&us);
        us.put(&a, "displayName", "\"Admins\"").unwrap();
        let members = us.put_object(&a, "members", ObjType::Map).unwrap();
        for id in ["u1", "u2"] {
            let m = us.put_object(&members, id, ObjType::Map).unwrap();
            us.put(&m, "on", true).unwrap();
            us.put(&m, "m", "{\"value\":\"x\"}").unwrap();
            stamp(&mut us, &m, "us", "t");
        }
        commit(&mut us, 10);
        // Removing u2 writes a fresh entry with on=false (remove-wins flag).
        let m = us.put_object(&members, "u2", ObjType::Map).unwrap();
        us.put(&m, "on", false).unwrap();
        stamp(&mut us, &m, "us", "t");
        commit(&mut us, 20);
        // Flipping a field inside an existing entry is a change of that member too.
        let (_, u1) = us.get(&members, "u1").unwrap().unwrap();
        us.put(&u1, "at", "t3").unwrap();
        commit(&mut us, 30);

        assert_eq!(
            summary(&mut us),
            vec![
                (
                    "us".to_string(),
                    "create",
                    strings(&[
                        "displayName",
                        "members[value eq \"u1\"]",
                        "members[value eq \"u2\"]"
                    ])
                ),
                (
                    "us".to_string(),
                    "update",
                    strings(&["members[value eq \"u2\"]"])
                ),
                (
                    "us".to_string(),
                    "update",
                    strings(&["members[value eq \"u1\"]"])
                ),
            ]
        );
    }

    #[test]
    fn merged_concurrent_changes_list_causally_then_by_time_with_each_region() {
        let mut g = genesis("User", "u1");
        let mut eu = in_region(&mut g, "eu");
        create_user(&mut eu, "eu", 1000);
        let mut us = eu.fork().with_actor(actor("us"));
        // Concurrent: us deactivates at t=3000, eu renames at t=2000.
        set_active(&mut us, "us", false, 3000);
        let a = attrs(&eu);
        eu.put(&a, "displayName", "\"B\"").unwrap();
        commit(&mut eu, 2000);
        eu.merge(&mut us).unwrap();
        us.merge(&mut eu).unwrap();
        // A region that saw both records the conflict: only `x` changes.
        let x = match eu.get(ROOT, "x").unwrap() {
            Some((_, id)) => id,
            None => panic!("no conflict map"),
        };
        eu.put(&x, "abc", "{\"rule\":\"sticky-deactivation\"}")
            .unwrap();
        commit(&mut eu, 4000);
        // us, having seen both, reactivates (a rehire) before the conflict record reaches it.
        set_active(&mut us, "us", true, 2500);
        us.merge(&mut eu).unwrap();

        let h = history(&mut us);
        let got: Vec<_> = h
            .iter()
            .map(|e| (e.region.as_str(), e.action.as_str(), e.attributes.join(",")))
            .collect();
        assert_eq!(
            got,
            vec![
                ("eu", "create", "active,displayName,urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department,userName".to_string()),
                ("eu", "update", "displayName".to_string()),
                ("us", "update", "active".to_string()),
                // Both of these depend on the merge; the earlier clock first.
                ("us", "update", "active".to_string()),
                ("eu", "conflict-record", String::new()),
            ]
        );
        // Every region lists a merged document the same way.
        eu.merge(&mut us).unwrap();
        assert_eq!(history(&mut eu), h);
    }

    #[test]
    fn format_1_documents_without_genesis_read_the_same() {
        // Format 1: the region writes the header and makes the attribute map itself.
        let mut doc = AutoCommit::new().with_actor(actor("ap"));
        doc.put(ROOT, "h", "{\"v\":1}").unwrap();
        let a = doc.put_object(ROOT, "a", ObjType::Map).unwrap();
        doc.put(&a, "userName", "\"x\"").unwrap();
        doc.put(ROOT, "m", "t").unwrap();
        commit(&mut doc, 5);
        doc.put(&a, "title", "\"T\"").unwrap();
        commit(&mut doc, 6);
        delete(&mut doc, "ap", 7);
        assert_eq!(
            summary(&mut doc),
            vec![
                ("ap".to_string(), "create", strings(&["userName"])),
                ("ap".to_string(), "update", strings(&["title"])),
                ("ap".to_string(), "delete", vec![]),
            ]
        );
    }

    #[test]
    fn entries_serialize_with_kebab_case_actions() {
        let e = HistoryEntry {
            at: "1970-01-01T00:00:00.000Z".into(),
            region: "eu".into(),
            action: Action::ConflictRecord,
            attributes: vec![],
            change: "00".into(),
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["action"], "conflict-record");
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
    }
}
