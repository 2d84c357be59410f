//! Conflict rules: how concurrent writes from different regions end, and the record of each
//! automatic decision. Pure: works on an in-memory Automerge document, no I/O.
//!
//! The rules live in the document layout ([`layout`]), so every region reaches the same state by
//! merging alone, in whatever order and however often changes arrive. Automerge merges are
//! commutative, associative and idempotent; each rule below adds its own law on top:
//!
//! - **Sticky deactivation** (`active` is a disable-wins flag: a fresh map per explicit write,
//!   read with `get_all`). Laws: (1) if any write of `false` is concurrent with or after every
//!   write of `true` it does not causally precede, the merged value is `false`; (2) a `true`
//!   written by a region that had already seen the `false` (a rehire) overwrites it: the value is
//!   `true`; (3) re-asserting `false` is a new write, never a no-op, so it also beats a concurrent
//!   reactivation.
//! - **Delete wins** (the tombstone `d` is a root key nothing ever removes). Laws: once any
//!   region's delete is merged the resource is deleted, whatever concurrent or older changes
//!   arrive later (no resurrection); a later POST creates a new resource under a new id.
//! - **One user per userName** (user ids are derived from tenant + lower-cased userName, and the
//!   header and attributes map come from one genesis change every region writes identically).
//!   Laws: concurrent creates of one userName, with the same or different payloads, end as one
//!   resource with one id; attributes merge one by one (a differing value is a concurrent scalar
//!   write, below).
//! - **Membership remove-wins** (each membership is a record of its own, a multi-value register
//!   with a causal context: [`membership`]). Laws: a removal concurrent with an add of the same
//!   member ends removed; an add by a region that saw the removal ends added; members pointing
//!   at deleted users are never listed (the store's job). Groups written by format 2 kept their
//!   members inside the document (`a.members`); [`detect`] still reads those.
//! - **Concurrent scalar writes**: Automerge's deterministic winner (the greater op id); the
//!   loser is recorded.
//!
//! [`detect`] reads a merged document and reports, per losing value, which rule decided what.
//! The record id is a hash of the resource, the attribute and the winning and losing ops, so
//! every region that observes the same merge derives the same record, and the cluster keeps one.

pub mod history;
pub mod layout;
pub mod membership;
#[cfg(test)]
mod membership_laws;
pub mod record;
pub mod sticky;

use automerge::{AutoCommit, ChangeHash, ObjId, ObjType, ReadDoc, ScalarValue, Value, ROOT};
use serde_json::{json, Value as Json};
use sha2::{Digest, Sha256};

use layout::*;
pub use record::{Candidate, Conflict, ConflictQuery, Rule};

/// Errors reading a document (a bug or corrupt bytes).
#[derive(Debug, thiserror::Error)]
pub enum ConflictError {
    #[error("automerge: {0}")]
    Automerge(#[from] automerge::AutomergeError),
}

/// The resource a document holds.
#[derive(Debug, Clone, Copy)]
pub struct Resource<'a> {
    pub tenant: &'a str,
    /// `User` or `Group`.
    pub kind: &'a str,
    pub id: &'a str,
}

/// The conflicts visible in a merged document: one record per losing value.
///
/// Only conflicts still visible in the merged state are found: a region that receives two
/// concurrent values together with a later write that superseded both sees none. Records are
/// therefore stored in the document itself (`x`) by the region that observed the merge, and
/// reach every region with it (see [`recorded`]).
pub fn detect(doc: &mut AutoCommit, res: Resource<'_>) -> Result<Vec<Conflict>, ConflictError> {
    let mut out = Vec::new();
    let mut changes = Changes::default();
    if doc.get(ROOT, DELETED)?.is_some() {
        delete_wins(doc, res, &mut changes, &mut out)?;
        return Ok(out);
    }
    let Some(attrs) = map_at(doc, &ROOT, ATTRS)? else {
        return Ok(out);
    };
    creates(doc, res, &attrs, &mut out)?;
    for key in doc.keys(&attrs).collect::<Vec<_>>() {
        if key == MEMBERS {
            members(doc, res, &attrs, &mut out)?;
        } else if let Some(flags) = sticky::flags(doc, &attrs, &key)? {
            sticky_records(doc, res, &key, flags, &mut changes, &mut out);
        } else {
            scalar(doc, res, &attrs, &key, &mut changes, &mut out)?;
        }
    }
    Ok(out)
}

/// The conflict records stored in a document (`x`), in id order.
pub fn recorded(doc: &AutoCommit) -> Result<Vec<Conflict>, ConflictError> {
    let Some(x) = map_at(doc, &ROOT, CONFLICTS)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for key in doc.keys(&x) {
        if let Some(text) = doc.get(&x, key.as_str())?.and_then(|(v, _)| text_of(&v)) {
            if let Ok(c) = serde_json::from_str::<Conflict>(&text) {
                out.push(c);
            }
        }
    }
    Ok(out)
}

/// The ids of the conflict records stored in a document.
pub fn recorded_ids(doc: &AutoCommit) -> Result<Vec<String>, ConflictError> {
    Ok(match map_at(doc, &ROOT, CONFLICTS)? {
        Some(x) => doc.keys(&x).collect(),
        None => Vec::new(),
    })
}

/// A live user claiming a userName, as the collision rule sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub id: String,
    /// When and where the user was created (its `c`).
    pub created_at: String,
    pub created_by: String,
}

/// Two live users with one userName: a rename in one region concurrent with a create or rename
/// of the same name in another (concurrent *creates* share an id and never collide).
///
/// Law: every region that sees the same claims picks the same survivor: the earliest created,
/// then the smaller id. Each other claim is a loser: the store renames it to
/// [`collision_name`], deactivates it and records [`collision_record`], and because every
/// region derives the same writes, their concurrent copies merge into one.
pub fn collision_survivor(claims: &[Claim]) -> Option<&Claim> {
    claims
        .iter()
        .min_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)))
}

/// The name a losing claim is renamed to: unique, recognisable, and derived only from the
/// name and the loser's id (so every region writes the same).
pub fn collision_name(user_name: &str, loser_id: &str) -> String {
    let short: String = loser_id.chars().filter(|c| *c != '-').take(8).collect();
    format!("{user_name}~conflict-{short}")
}

/// The record of one losing claim. Everything in it derives from the claims, so every region
/// that resolves the collision writes the same record (its time is the later creation).
pub fn collision_record(
    tenant: &str,
    user_name: &str,
    survivor: &Claim,
    loser: &Claim,
) -> Conflict {
    let res = Resource {
        tenant,
        kind: "User",
        id: &loser.id,
    };
    let renamed = collision_name(user_name, &loser.id);
    record(
        res,
        "userName",
        Rule::UsernameMerge,
        (
            survivor.id.clone(),
            cand(json!(user_name), &survivor.created_by, &survivor.created_at),
        ),
        (
            format!("{} as {user_name}", loser.id),
            cand(json!(user_name), &loser.created_by, &loser.created_at),
        ),
        json!({"userName": renamed, "active": false, "survivor": survivor.id}),
    )
}

/// Where and when a document was created (the earliest `c`), if it has been.
pub fn creation(doc: &AutoCommit) -> Result<Option<(String, String)>, ConflictError> {
    let mut best: Option<(String, String)> = None;
    for (value, _) in doc.get_all(ROOT, CREATED)? {
        let Some(c) = text_of(&value).and_then(|t| serde_json::from_str::<Json>(&t).ok()) else {
            continue;
        };
        let at = c[AT].as_str().unwrap_or_default().to_string();
        let by = c[BY].as_str().unwrap_or_default().to_string();
        if best
            .as_ref()
            .is_none_or(|(b_at, b_by)| (&at, &by) < (b_at, b_by))
        {
            best = Some((at, by));
        }
    }
    Ok(best.map(|(at, by)| (by, at)))
}

/// Concurrent creates of one user: one record per creation that is not the winning `c`.
fn creates(
    doc: &AutoCommit,
    res: Resource<'_>,
    attrs: &ObjId,
    out: &mut Vec<Conflict>,
) -> Result<(), ConflictError> {
    let all = doc.get_all(ROOT, CREATED)?;
    if all.len() < 2 {
        return Ok(());
    }
    let Some((_, win_id)) = doc.get(ROOT, CREATED)? else {
        return Ok(());
    };
    let user_name = doc
        .get(attrs, "userName")?
        .and_then(|(v, _)| text_of(&v))
        .and_then(|t| serde_json::from_str::<Json>(&t).ok())
        .unwrap_or(Json::Null);
    let stamp = |v: &Value<'_>| -> (String, String) {
        let parsed = text_of(v)
            .and_then(|t| serde_json::from_str::<Json>(&t).ok())
            .unwrap_or(Json::Null);
        let s = |k: &str| parsed[k].as_str().unwrap_or_default().to_string();
        (s(BY), s(AT))
    };
    let winner = all
        .iter()
        .find(|(_, id)| *id == win_id)
        .expect("winner is among all");
    let (w_region, w_at) = stamp(&winner.0);
    for (value, id) in all.iter().filter(|(_, id)| *id != win_id) {
        let (region, at) = stamp(value);
        out.push(record(
            res,
            "userName",
            Rule::UsernameMerge,
            (op_name(&win_id), cand(user_name.clone(), &w_region, &w_at)),
            (op_name(id), cand(user_name.clone(), &region, &at)),
            user_name.clone(),
        ));
    }
    Ok(())
}

/// A sticky attribute (`active`, or one a tenant configured): every concurrent value that lost
/// to the winning restrictive one is a sticky record; without a restrictive value, concurrent
/// values lose as plain scalars do.
fn sticky_records(
    doc: &mut AutoCommit,
    res: Resource<'_>,
    key: &str,
    mut flags: Vec<sticky::Flag>,
    changes: &mut Changes,
    out: &mut Vec<Conflict>,
) {
    if flags.len() < 2 {
        return;
    }
    for f in flags.iter_mut().filter(|f| f.by.is_empty()) {
        (f.by, f.at) = changes.origin(doc, &f.op);
    }
    let (rule, win) = match sticky::winner(&flags) {
        Some(w) => (Rule::StickyDeactivation, w),
        None => match sticky::merged(&flags) {
            Some(w) => (Rule::ConcurrentScalar, w),
            None => return,
        },
    };
    for lose in flags
        .iter()
        .filter(|f| f.op != win.op && f.value != win.value)
    {
        out.push(record(
            res,
            key,
            rule,
            (op_name(&win.op), cand(win.value.clone(), &win.by, &win.at)),
            (
                op_name(&lose.op),
                cand(lose.value.clone(), &lose.by, &lose.at),
            ),
            win.value.clone(),
        ));
    }
}

/// Remove-wins members: every concurrent add next to a removal of the same member is a record.
fn members(
    doc: &AutoCommit,
    res: Resource<'_>,
    attrs: &ObjId,
    out: &mut Vec<Conflict>,
) -> Result<(), ConflictError> {
    let Some(members) = map_at(doc, attrs, MEMBERS)? else {
        return Ok(());
    };
    for member in doc.keys(&members).collect::<Vec<_>>() {
        let all = doc.get_all(&members, member.as_str())?;
        if all.len() < 2 {
            continue;
        }
        let mut entries = Vec::new();
        for (value, id) in all {
            if !matches!(value, Value::Object(ObjType::Map)) {
                continue;
            }
            let on = bool_at(doc, &id, ON)?.unwrap_or(false);
            let value = if on {
                doc.get(&id, MEMBER)?
                    .and_then(|(v, _)| text_of(&v))
                    .and_then(|t| serde_json::from_str::<Json>(&t).ok())
                    .unwrap_or(Json::Null)
            } else {
                Json::Null
            };
            entries.push((on, value, stamp_at(doc, &id)?, id));
        }
        let Some(removal) = entries
            .iter()
            .filter(|e| !e.0)
            .max_by(|a, b| (&a.2, &a.3).cmp(&(&b.2, &b.3)))
        else {
            continue;
        };
        let attribute = member_attribute(&member);
        for add in entries.iter().filter(|e| e.0) {
            out.push(record(
                res,
                &attribute,
                Rule::MembershipRemoveWins,
                (
                    op_name(&removal.3),
                    cand(Json::Null, &removal.2 .0, &removal.2 .1),
                ),
                (op_name(&add.3), cand(add.1.clone(), &add.2 .0, &add.2 .1)),
                Json::Null,
            ));
        }
    }
    Ok(())
}

/// Any other attribute with several concurrent, different values: Automerge's winner stays.
fn scalar(
    doc: &mut AutoCommit,
    res: Resource<'_>,
    attrs: &ObjId,
    key: &str,
    changes: &mut Changes,
    out: &mut Vec<Conflict>,
) -> Result<(), ConflictError> {
    let json_of = |v: &Value<'_>| {
        text_of(v)
            .and_then(|t| serde_json::from_str::<Json>(&t).ok())
            .unwrap_or(Json::Null)
    };
    let all: Vec<(Json, ObjId)> = doc
        .get_all(attrs, key)?
        .into_iter()
        .map(|(v, id)| (json_of(&v), id))
        .collect();
    if all.len() < 2 {
        return Ok(());
    }
    let Some((win_value, win_id)) = doc.get(attrs, key)? else {
        return Ok(());
    };
    let winner = json_of(&win_value);
    let (w_region, w_at) = changes.origin(doc, &win_id);
    for (loser, id) in all.into_iter().filter(|(_, id)| *id != win_id) {
        if loser == winner {
            continue;
        }
        let (region, at) = changes.origin(doc, &id);
        out.push(record(
            res,
            key,
            Rule::ConcurrentScalar,
            (op_name(&win_id), cand(winner.clone(), &w_region, &w_at)),
            (op_name(&id), cand(loser, &region, &at)),
            winner.clone(),
        ));
    }
    Ok(())
}

/// A delete and the updates concurrent with it: one record per concurrent update.
fn delete_wins(
    doc: &mut AutoCommit,
    res: Resource<'_>,
    changes: &mut Changes,
    out: &mut Vec<Conflict>,
) -> Result<(), ConflictError> {
    let Some((_, del_id)) = doc.get(ROOT, DELETED)? else {
        return Ok(());
    };
    let (d_region, d_at) = stamp_at(doc, &del_id)?;
    let Some(del_change) = changes.change_of(doc, &del_id) else {
        return Ok(());
    };
    // The objects an update writes into: the attributes map and the members map.
    let attrs = map_at(doc, &ROOT, ATTRS)?;
    let members = match &attrs {
        Some(a) => map_at(doc, a, MEMBERS)?,
        None => None,
    };
    let targets: Vec<(u64, Vec<u8>)> = [attrs, members]
        .into_iter()
        .flatten()
        .filter_map(|o| match o {
            ObjId::Id(counter, actor, _) => Some((counter, actor.to_bytes().to_vec())),
            ObjId::Root => None,
        })
        .collect();
    // Changes not in the delete's history are concurrent with it or after it; those after it
    // descend from it. What remains is concurrent.
    let mut after = std::collections::HashSet::from([del_change]);
    for change in doc.get_changes(&[del_change]) {
        if change.deps().iter().any(|d| after.contains(d)) {
            after.insert(change.hash());
            continue;
        }
        let updates = change.decode().operations.iter().any(|op| match &op.obj {
            automerge::legacy::ObjectId::Id(o) => targets
                .iter()
                .any(|(c, a)| o.0 == *c && o.1.to_bytes() == a.as_slice()),
            automerge::legacy::ObjectId::Root => false,
        });
        if !updates {
            continue;
        }
        let region = region_of(change.actor_id().to_bytes());
        let at = rfc3339_millis(change.timestamp());
        out.push(record(
            res,
            "(resource)",
            Rule::DeleteWins,
            (op_name(&del_id), cand(Json::Null, &d_region, &d_at)),
            (
                hex::encode(change.hash().0),
                cand(json!("update"), &region, &at),
            ),
            Json::Null,
        ));
    }
    Ok(())
}

/// Build a record; its id hashes the resource, attribute, rule and both ops (stable names of
/// the winning and losing writes).
fn record(
    res: Resource<'_>,
    attribute: &str,
    rule: Rule,
    (win_op, winner): (String, Candidate),
    (lose_op, loser): (String, Candidate),
    outcome: Json,
) -> Conflict {
    let mut h = Sha256::new();
    for part in [
        res.tenant,
        res.kind,
        res.id,
        attribute,
        rule.as_str(),
        &win_op,
        &lose_op,
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let at = winner.at.clone().max(loser.at.clone());
    Conflict {
        id: hex::encode(&h.finalize()[..16]),
        tenant: res.tenant.to_string(),
        resource_type: res.kind.to_string(),
        resource_id: res.id.to_string(),
        attribute: attribute.to_string(),
        rule,
        values: vec![winner, loser],
        outcome,
        at,
    }
}

/// The record of a member removal that beat a concurrent add of the same member, from the two
/// values of a membership record ([`membership`]): `(op name, region, time)` of the removal and
/// of the add with the member as it would have been listed. Every region that observes the
/// pair derives the same record.
pub fn membership_record(
    res: Resource<'_>,
    attribute: &str,
    (removal_op, removal_region, removal_at): (String, &str, i64),
    (add_op, add_region, add_at, added): (String, &str, i64, Json),
) -> Conflict {
    record(
        res,
        attribute,
        Rule::MembershipRemoveWins,
        (
            removal_op,
            cand(Json::Null, removal_region, &rfc3339_millis(removal_at)),
        ),
        (add_op, cand(added, add_region, &rfc3339_millis(add_at))),
        Json::Null,
    )
}

fn cand(value: Json, region: &str, at: &str) -> Candidate {
    Candidate {
        value,
        region: region.to_string(),
        at: at.to_string(),
    }
}

/// A stable name for an op: `counter@actor-hex`.
fn op_name(id: &ObjId) -> String {
    match id {
        ObjId::Root => "root".into(),
        ObjId::Id(counter, actor, _) => format!("{counter}@{}", actor.to_hex_string()),
    }
}

fn map_at(doc: &AutoCommit, parent: &ObjId, key: &str) -> Result<Option<ObjId>, ConflictError> {
    Ok(match doc.get(parent, key)? {
        Some((Value::Object(ObjType::Map), id)) => Some(id),
        _ => None,
    })
}

fn text_of(value: &Value<'_>) -> Option<String> {
    match value {
        Value::Scalar(s) => match s.as_ref() {
            ScalarValue::Str(s) => Some(s.to_string()),
            _ => None,
        },
        _ => None,
    }
}

fn bool_at(doc: &AutoCommit, obj: &ObjId, key: &str) -> Result<Option<bool>, ConflictError> {
    Ok(match doc.get(obj, key)? {
        Some((Value::Scalar(s), _)) => match s.as_ref() {
            ScalarValue::Boolean(b) => Some(*b),
            _ => None,
        },
        _ => None,
    })
}

/// The `(by, at)` written inside a flag, member entry or tombstone.
fn stamp_at(doc: &AutoCommit, obj: &ObjId) -> Result<(String, String), ConflictError> {
    let s = |k: &str| -> Result<String, ConflictError> {
        Ok(doc
            .get(obj, k)?
            .and_then(|(v, _)| text_of(&v))
            .unwrap_or_default())
    };
    Ok((s(BY)?, s(AT)?))
}

/// Milliseconds since the epoch (what the store writes as a change's time) as RFC 3339 UTC
/// with milliseconds.
pub fn rfc3339_millis(millis: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// The SCIM path of one member, as PATCH, conflict records and histories write it.
pub fn member_attribute(id: &str) -> String {
    format!(
        "members[value eq \"{}\"]",
        id.replace('\\', "\\\\").replace('"', "\\\"")
    )
}

/// The region that wrote a change, from its actor's bytes: the store's actors are region
/// names (UTF-8), anything else shows as hex.
pub fn region_of(actor: &[u8]) -> String {
    match std::str::from_utf8(actor) {
        Ok(s) => s.to_string(),
        Err(_) => hex::encode(actor),
    }
}

/// The document's changes, indexed on first use (only documents with a conflict pay for it).
#[derive(Default)]
struct Changes {
    index: Option<Vec<ChangeOps>>,
}

/// A change's actor, op range (start, max), time and hash.
type ChangeOps = (Vec<u8>, u64, u64, i64, ChangeHash);

impl Changes {
    fn load(&mut self, doc: &mut AutoCommit) -> &[ChangeOps] {
        self.index.get_or_insert_with(|| {
            doc.get_changes(&[])
                .iter()
                .map(|c| {
                    (
                        c.actor_id().to_bytes().to_vec(),
                        c.start_op().get(),
                        c.max_op(),
                        c.timestamp(),
                        c.hash(),
                    )
                })
                .collect()
        })
    }

    fn find(&mut self, doc: &mut AutoCommit, op: &ObjId) -> Option<(Vec<u8>, i64, ChangeHash)> {
        let ObjId::Id(counter, actor, _) = op else {
            return None;
        };
        self.load(doc)
            .iter()
            .find(|(a, start, max, _, _)| {
                a.as_slice() == actor.to_bytes() && *start <= *counter && *counter <= *max
            })
            .map(|(a, _, _, t, h)| (a.clone(), *t, *h))
    }

    /// The region and time of the change holding `op`.
    fn origin(&mut self, doc: &mut AutoCommit, op: &ObjId) -> (String, String) {
        match self.find(doc, op) {
            Some((actor, ms, _)) => (region_of(&actor), rfc3339_millis(ms)),
            None => (String::new(), String::new()),
        }
    }

    fn change_of(&mut self, doc: &mut AutoCommit, op: &ObjId) -> Option<ChangeHash> {
        self.find(doc, op).map(|(_, _, h)| h)
    }
}
