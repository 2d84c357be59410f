//! Group memberships: one record per (tenant, group, member) in the `members` column family
//! (the remove-wins register of [`crate::conflict::membership`]), and what the store derives
//! from them.
//!
//! # What is kept, and why
//! - `members`: the records, present or removed. The truth that replicates.
//! - `index` reverse entries (`~member`, member → group) for *present* records: a user's
//!   `groups` is one range read.
//! - `index` listed entries (`~listed`, group → member, value = the member's shown attributes)
//!   for present records whose group and member are both live resources here: a page of a
//!   group's members is one range read, whatever the group's size.
//! - `counts`: per group the number of listed members (`m`) and the XOR of their terms (`x`),
//!   which the group's ETag covers; per group (`r`) the XOR of its present records' terms,
//!   which the heads digest covers while the group is not deleted.
//!
//! # Liveness
//! Members that point at deleted users, and members of deleted groups, are never served. A
//! listed entry exists iff the record is present, the member's view exists and the group was
//! live when the entry was staged; a deleted group's entries stay until its tombstone is
//! collected, unreachable because the group itself answers 404. Views appear and disappear in
//! the same batches as documents ([`Store::stage_view`]), which calls the hooks here; records
//! change only in [`Store::stage_membership`]. Both need every lock of the pair they touch:
//! membership writes hold the group's and the member's stripes, a user's liveness change holds
//! the user's (and, for its delete, every group it is in); a group that becomes live with
//! records already here (they arrived before its creation) takes every stripe.
//!
//! # Records of deleted resources
//! - Deleting a user writes a removal of each membership the deleting region knows, in the
//!   same change, so those end removed everywhere (remove-wins outvotes a concurrent re-add of
//!   the same record) and are collected like every removal. An add written in another region
//!   that the deleting region had not seen is not covered: that record stays present, unlisted
//!   (its member has no view), and is not collected.
//! - A deleted group's records stay (not listed) until its tombstone is collected; then they go
//!   with it. Its records leave the heads digest when it is deleted, so collection changes no
//!   digest.
//!
//! # Collection of removed records
//! Each removed record waits in `meta` (`mgc\0` + record key) with the marks it was removed at
//! and, once every region holds that state, the sequence each region had handed out by then;
//! [`Store::collect_memberships`] drops it when [`membership::gc_step`] says so.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use super::*;
use crate::conflict::membership::{self, Dot, GcStep, Pending, Record, Report, Write};

/// The meta prefix of removed records waiting for collection.
const PENDING: &[u8] = b"mgc\0";

fn pending_key(record_key: &[u8]) -> Vec<u8> {
    let mut k = PENDING.to_vec();
    k.extend_from_slice(record_key);
    k
}

/// A member as a group lists it: `{"value": id, ...shown attributes}`.
pub fn member_json(id: &str, attrs: Option<&str>) -> Value {
    let mut m = Map::new();
    m.insert("value".into(), Value::String(id.to_string()));
    if let Some(Ok(Value::Object(extra))) = attrs.map(serde_json::from_str::<Value>) {
        for (k, v) in extra {
            if k != "value" {
                m.insert(k, v);
            }
        }
    }
    Value::Object(m)
}

/// The shown attributes of a member object (everything but `value`), as stored.
pub fn member_attrs(member: &Value) -> Option<String> {
    let obj = member.as_object()?;
    let rest: Map<String, Value> = obj
        .iter()
        .filter(|(k, _)| k.as_str() != "value")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    (!rest.is_empty()).then(|| Value::Object(rest).to_string())
}

/// A listed member's term in its group's ETag digest.
fn listed_term(tenant: &str, group: &str, member: &str, attrs: Option<&str>) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [tenant, group, member, attrs.unwrap_or("")] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    h.finalize().into()
}

/// A present record's term in the heads digest: its surviving values (not its context, which
/// may differ between regions once one of them collected and re-created the record), and
/// nothing for a removed record, so collecting it changes no digest.
fn record_term(key: &[u8], record: &Record) -> [u8; 32] {
    if !record.present() {
        return [0; 32];
    }
    let values = Record {
        values: record.values.clone(),
        seen: BTreeMap::new(),
    };
    let mut h = Sha256::new();
    h.update(b"membership\0");
    h.update(key);
    h.update(values.encode());
    h.finalize().into()
}

fn i64_bytes(n: i64) -> [u8; 8] {
    n.to_le_bytes()
}

/// The ETag of a resource whose body shows computed parts (a group's members, a user's
/// groups): the document's version combined with a digest of those parts. With nothing
/// computed (zero), the document's version itself.
pub fn combined_version(doc_version: &str, computed: &[u8; 32]) -> String {
    if computed == &[0; 32] {
        return doc_version.to_string();
    }
    let mut h = Sha256::new();
    h.update(doc_version.as_bytes());
    h.update(computed);
    format!("W/\"{}\"", hex::encode(&h.finalize()[..16]))
}

/// The digest of a user's `groups` (group ids and display names, in order) for its ETag.
pub fn groups_digest(groups: &[Value]) -> [u8; 32] {
    if groups.is_empty() {
        return [0; 32];
    }
    let mut h = Sha256::new();
    for g in groups {
        h.update(g["value"].as_str().unwrap_or_default().as_bytes());
        h.update([0]);
        h.update(g["display"].to_string().as_bytes());
        h.update([0]);
    }
    h.finalize().into()
}

impl Store {
    /// A membership record as the batch being staged sees it.
    pub(super) fn member_record(&self, m: &Merge, key: &[u8]) -> Result<Record, StoreError> {
        if let Some(r) = m.records.get(key) {
            return Ok(r.clone());
        }
        match self.db.get_pinned_cf(self.cf(CF_MEMBERS), key)? {
            Some(bytes) => Record::decode(&bytes)
                .map_err(|e| StoreError::Corrupt(format!("membership record: {e}"))),
            None => Ok(Record::default()),
        }
    }

    /// Is `id` a live user or group of `tenant`, as the batch being staged sees it?
    pub(super) fn is_live(&self, m: &Merge, tenant: &str, id: &str) -> Result<bool, StoreError> {
        if let Some(live) = m.live.get(&(tenant.to_string(), id.to_string())) {
            return Ok(*live);
        }
        let views = self.cf(CF_VIEWS);
        for kind in [ResourceKind::User, ResourceKind::Group] {
            if self
                .db
                .get_pinned_cf(views, keys::resource(tenant, kind, id))?
                .is_some()
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Is this group deleted (a tombstone, collected or not), as the batch sees it? Its
    /// records then no longer count in the heads digest.
    pub(super) fn group_deleted(
        &self,
        m: &Merge,
        tenant: &str,
        group: &str,
    ) -> Result<bool, StoreError> {
        if m.deleted.contains(&(tenant.to_string(), group.to_string())) {
            return Ok(true);
        }
        let key = keys::resource(tenant, ResourceKind::Group, group);
        if self
            .db
            .get_pinned_cf(self.cf(CF_META), tomb_key(&key))?
            .is_some()
        {
            return Ok(true);
        }
        self.is_collected(&key)
    }

    /// Stage a membership record's new state and everything derived from it. `gc_marks` are
    /// the marks at which the state takes effect here (for collection, when it is removed).
    /// Returns whether anything changed.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn stage_membership(
        &self,
        batch: &mut WriteBatch,
        m: &mut Merge,
        tenant: &str,
        group: &str,
        member: &str,
        new: Record,
        gc_marks: &BTreeMap<String, u64>,
    ) -> Result<bool, StoreError> {
        let key = keys::membership(tenant, group, member);
        let old = self.member_record(m, &key)?;
        if old == new {
            return Ok(false);
        }
        if new.values.is_empty() {
            // Nothing survives (a snapshot showed every value superseded or collected): the
            // record goes, as collection would drop it.
            batch.delete_cf(self.cf(CF_MEMBERS), &key);
        } else {
            batch.put_cf(self.cf(CF_MEMBERS), &key, new.encode());
        }
        let counts = self.cf(CF_COUNTS);
        if !self.group_deleted(m, tenant, group)? {
            let mut delta = record_term(&key, &old);
            xor_into(&mut delta, &record_term(&key, &new));
            if delta != [0; 32] {
                xor_into(&mut m.delta, &delta);
                batch.merge_cf(self.cf(CF_META), DIGEST_KEY, delta);
                batch.merge_cf(counts, keys::record_digest(tenant, group), delta);
            }
        }
        match (old.present(), new.present()) {
            (false, true) => batch.put_cf(
                self.cf(CF_INDEX),
                keys::member_of(tenant, member, group),
                b"",
            ),
            (true, false) => {
                batch.delete_cf(self.cf(CF_INDEX), keys::member_of(tenant, member, group))
            }
            _ => {}
        }
        let group_live = self.is_live(m, tenant, group)?;
        if group_live && self.is_live(m, tenant, member)? {
            let shown = |r: &Record| r.shown().map(|v| v.attrs.clone());
            self.stage_listed(batch, tenant, group, member, shown(&old), shown(&new));
        }
        let pk = pending_key(&key);
        // A removal migrated from format 2 (a `~am:` dot) is never collected: a later write's
        // context (its writer's marks) could not show it had seen that removal, and a region
        // that still held it would keep the member unlisted while this one listed it.
        let migrated = new.values.iter().any(|v| v.dot.region.starts_with("~am:"));
        if new.removed() && !migrated {
            let pending = Pending {
                marks: gc_marks.clone(),
                allocated: None,
            };
            batch.put_cf(self.cf(CF_META), pk, encode_pending(&pending));
        } else if old.removed() {
            batch.delete_cf(self.cf(CF_META), pk);
        }
        // Concurrent values the remove-wins rule decided, new to this region.
        let old_pairs: BTreeSet<(Dot, Dot)> = old
            .conflicts()
            .into_iter()
            .map(|(r, a)| (r.dot.clone(), a.dot.clone()))
            .collect();
        for (removal, add) in new.conflicts() {
            if !old_pairs.contains(&(removal.dot.clone(), add.dot.clone())) {
                m.found
                    .push(membership_conflict(tenant, group, member, removal, add));
            }
        }
        m.records.insert(key, new);
        Ok(true)
    }

    /// Stage a listed entry going from `old` to `new` (`None`: not listed; `Some(attrs)`:
    /// listed with these shown attributes), with its count and ETag term.
    fn stage_listed(
        &self,
        batch: &mut WriteBatch,
        tenant: &str,
        group: &str,
        member: &str,
        old: Option<Option<String>>,
        new: Option<Option<String>>,
    ) {
        if old == new {
            return;
        }
        let counts = self.cf(CF_COUNTS);
        let mut term = [0u8; 32];
        if let Some(attrs) = &old {
            xor_into(
                &mut term,
                &listed_term(tenant, group, member, attrs.as_deref()),
            );
        }
        match &new {
            Some(attrs) => {
                xor_into(
                    &mut term,
                    &listed_term(tenant, group, member, attrs.as_deref()),
                );
                batch.put_cf(
                    self.cf(CF_INDEX),
                    keys::listed(tenant, group, member),
                    attrs.as_deref().unwrap_or("").as_bytes(),
                );
            }
            None => batch.delete_cf(self.cf(CF_INDEX), keys::listed(tenant, group, member)),
        }
        let count = i64::from(new.is_some()) - i64::from(old.is_some());
        if count != 0 {
            batch.merge_cf(counts, keys::member_count(tenant, group), i64_bytes(count));
        }
        batch.merge_cf(counts, keys::member_digest(tenant, group), term);
    }

    /// A user or group became live (`true`) or stopped being live here: list (or unlist) it in
    /// the groups whose present records name it. Records this batch already staged were
    /// listed with the liveness the batch sees, so they are skipped. The caller holds the
    /// member's stripe (and, when it stops being live, every group's it is in).
    pub(super) fn stage_member_liveness(
        &self,
        batch: &mut WriteBatch,
        m: &mut Merge,
        tenant: &str,
        member: &str,
        live: bool,
    ) -> Result<(), StoreError> {
        let prefix = keys::member_of_prefix(tenant, member);
        let groups: Vec<String> = self
            .prefix_keys(CF_INDEX, &prefix)
            .map(|k| k.map(|k| String::from_utf8_lossy(keys::last_part(&k)).into_owned()))
            .collect::<Result<_, _>>()?;
        for group in groups {
            let key = keys::membership(tenant, &group, member);
            if m.records.contains_key(&key) || !self.is_live(m, tenant, &group)? {
                continue;
            }
            let record = self.member_record(m, &key)?;
            let Some(value) = record.shown() else {
                continue;
            };
            let attrs = value.attrs.clone();
            let (old, new) = if live {
                (None, Some(attrs))
            } else {
                (Some(attrs), None)
            };
            self.stage_listed(batch, tenant, &group, member, old, new);
        }
        Ok(())
    }

    /// A group became live here while records of it were already here (they arrived before its
    /// creation): list its present records whose members are live. The caller holds every
    /// stripe (see [`Store::group_has_records`]).
    pub(super) fn stage_group_live(
        &self,
        batch: &mut WriteBatch,
        m: &mut Merge,
        tenant: &str,
        group: &str,
    ) -> Result<(), StoreError> {
        let prefix = keys::membership_prefix(tenant, group);
        let mut found = Vec::new();
        for r in self.db.iterator_cf(
            self.cf(CF_MEMBERS),
            IteratorMode::From(&prefix, Direction::Forward),
        ) {
            let (k, v) = r?;
            if !k.starts_with(&prefix) {
                break;
            }
            let member = String::from_utf8_lossy(keys::last_part(&k)).into_owned();
            let record = Record::decode(&v)
                .map_err(|e| StoreError::Corrupt(format!("membership record: {e}")))?;
            found.push((k.to_vec(), member, record));
        }
        for (key, member, record) in found {
            if m.records.contains_key(&key) || !self.is_live(m, tenant, &member)? {
                continue;
            }
            if let Some(v) = record.shown() {
                self.stage_listed(batch, tenant, group, &member, None, Some(v.attrs.clone()));
            }
        }
        Ok(())
    }

    /// A group was deleted: its records leave the heads digest (they stay, unlisted, until its
    /// tombstone is collected). The caller holds the group's stripe.
    pub(super) fn stage_group_deleted(
        &self,
        batch: &mut WriteBatch,
        m: &mut Merge,
        tenant: &str,
        group: &str,
    ) -> Result<(), StoreError> {
        if !m.deleted.insert((tenant.to_string(), group.to_string())) {
            return Ok(());
        }
        let mut digest = [0u8; 32];
        if let Some(v) = self
            .db
            .get_pinned_cf(self.cf(CF_COUNTS), keys::record_digest(tenant, group))?
        {
            if v.len() == 32 {
                digest.copy_from_slice(&v);
            }
        }
        // Records this batch staged for the group already moved the digest key in the batch.
        for (key, record) in &m.records {
            if key.starts_with(&keys::membership_prefix(tenant, group)) {
                let old = match self.db.get_pinned_cf(self.cf(CF_MEMBERS), key)? {
                    Some(b) => Record::decode(&b)
                        .map_err(|e| StoreError::Corrupt(format!("membership record: {e}")))?,
                    None => Record::default(),
                };
                xor_into(&mut digest, &record_term(key, &old));
                xor_into(&mut digest, &record_term(key, record));
            }
        }
        if digest != [0; 32] {
            xor_into(&mut m.delta, &digest);
            batch.merge_cf(self.cf(CF_META), DIGEST_KEY, digest);
        }
        Ok(())
    }

    /// Does this group have membership records here (one seek)?
    pub(super) fn group_has_records(&self, tenant: &str, group: &str) -> Result<bool, StoreError> {
        let prefix = keys::membership_prefix(tenant, group);
        let first = self.prefix_keys(CF_MEMBERS, &prefix).next().transpose()?;
        Ok(first.is_some())
    }

    /// The groups with a present record of `member` (live or not), in group id order.
    pub fn member_groups(&self, tenant: &str, member: &str) -> Result<Vec<String>, StoreError> {
        let prefix = keys::member_of_prefix(tenant, member);
        self.prefix_keys(CF_INDEX, &prefix)
            .map(|k| k.map(|k| String::from_utf8_lossy(keys::last_part(&k)).into_owned()))
            .collect()
    }

    /// The present members among `ids` of a group, as JSON by id (what a PATCH sees).
    pub fn present_members(
        &self,
        tenant: &str,
        group: &str,
        ids: &BTreeSet<String>,
    ) -> Result<BTreeMap<String, Value>, StoreError> {
        let cf = self.cf(CF_MEMBERS);
        let keys: Vec<_> = ids
            .iter()
            .map(|id| (cf, keys::membership(tenant, group, id)))
            .collect();
        let mut out = BTreeMap::new();
        for (id, got) in ids.iter().zip(self.db.multi_get_cf(keys)) {
            if let Some(bytes) = got? {
                let record = Record::decode(&bytes)
                    .map_err(|e| StoreError::Corrupt(format!("membership record: {e}")))?;
                if let Some(v) = record.shown() {
                    out.insert(id.clone(), member_json(id, v.attrs.as_deref()));
                }
            }
        }
        Ok(out)
    }

    /// Every present member of a group (a PUT, or a PATCH that replaces the whole list).
    pub fn all_present_members(
        &self,
        tenant: &str,
        group: &str,
    ) -> Result<BTreeMap<String, Value>, StoreError> {
        let prefix = keys::membership_prefix(tenant, group);
        let mut out = BTreeMap::new();
        for r in self.db.iterator_cf(
            self.cf(CF_MEMBERS),
            IteratorMode::From(&prefix, Direction::Forward),
        ) {
            let (k, v) = r?;
            if !k.starts_with(&prefix) {
                break;
            }
            let record = Record::decode(&v)
                .map_err(|e| StoreError::Corrupt(format!("membership record: {e}")))?;
            if let Some(value) = record.shown() {
                let id = String::from_utf8_lossy(keys::last_part(&k)).into_owned();
                out.insert(id.clone(), member_json(&id, value.attrs.as_deref()));
            }
        }
        Ok(out)
    }

    /// Listed members of a group in member id order: at most `count`, after the member id
    /// `after` (the cursor of the previous page).
    pub fn member_page(
        &self,
        tenant: &str,
        group: &str,
        after: Option<&str>,
        count: usize,
    ) -> Result<Vec<Value>, StoreError> {
        let prefix = keys::listed_prefix(tenant, group);
        let start = match after {
            Some(a) => {
                let mut k = keys::listed(tenant, group, a);
                k.push(0);
                k
            }
            None => prefix.clone(),
        };
        let mut out = Vec::new();
        if count == 0 {
            return Ok(out);
        }
        for r in self.db.iterator_cf(
            self.cf(CF_INDEX),
            IteratorMode::From(&start, Direction::Forward),
        ) {
            let (k, v) = r?;
            if !k.starts_with(&prefix) {
                break;
            }
            let id = String::from_utf8_lossy(keys::last_part(&k)).into_owned();
            let attrs = (!v.is_empty()).then(|| String::from_utf8_lossy(&v).into_owned());
            out.push(member_json(&id, attrs.as_deref()));
            if out.len() >= count {
                break;
            }
        }
        Ok(out)
    }

    /// Is `member` listed in `group` (one point read), with its JSON?
    pub fn listed_member(
        &self,
        tenant: &str,
        group: &str,
        member: &str,
    ) -> Result<Option<Value>, StoreError> {
        Ok(self
            .db
            .get_pinned_cf(self.cf(CF_INDEX), keys::listed(tenant, group, member))?
            .map(|v| {
                let attrs = (!v.is_empty()).then(|| String::from_utf8_lossy(&v).into_owned());
                member_json(member, attrs.as_deref())
            }))
    }

    /// How many members a group lists (a maintained counter).
    pub fn member_total(&self, tenant: &str, group: &str) -> Result<u64, StoreError> {
        Ok(self.read_count(&keys::member_count(tenant, group))?.max(0) as u64)
    }

    /// The digest of a group's listed members (zero when it lists none): what its ETag covers
    /// beyond its document.
    pub fn member_digest(&self, tenant: &str, group: &str) -> Result<[u8; 32], StoreError> {
        let mut d = [0u8; 32];
        if let Some(v) = self
            .db
            .get_pinned_cf(self.cf(CF_COUNTS), keys::member_digest(tenant, group))?
        {
            if v.len() == 32 {
                d.copy_from_slice(&v);
            }
        }
        Ok(d)
    }

    /// The ETag of a resource as served: its document's version combined with what its body
    /// computes (a group's listed members, a user's groups).
    pub fn served_version(
        &self,
        tenant: &str,
        kind: ResourceKind,
        id: &str,
        doc_version: &str,
    ) -> Result<String, StoreError> {
        let computed = match kind {
            ResourceKind::Group => self.member_digest(tenant, id)?,
            ResourceKind::User => groups_digest(&self.groups_of(tenant, id, "")?),
        };
        Ok(combined_version(doc_version, &computed))
    }

    /// Stage the membership changes of a local write carried by log entry `seq`: each record
    /// gets a new value replacing everything it had seen, with this region's marks `context`
    /// as what the write saw. Returns the writes for the entry.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn stage_member_changes(
        &self,
        batch: &mut WriteBatch,
        m: &mut Merge,
        tenant: &str,
        group: Option<&str>,
        changes: &[(String, String, Option<Option<String>>)],
        seq: u64,
        stamp: &Stamp,
        context: &BTreeMap<String, u64>,
    ) -> Result<Vec<Write>, StoreError> {
        let mut marks = self.marks.hwm();
        marks.insert(self.region.clone(), seq);
        let mut writes = Vec::with_capacity(changes.len());
        let mut by_group: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (g, member, _) in changes {
            by_group
                .entry(g.as_str())
                .or_default()
                .push(member.as_str());
        }
        for (g, members) in &by_group {
            self.stage_member_history(batch, tenant, g, stamp.millis, &self.region, seq, members);
        }
        for (g, member, change) in changes {
            if !crate::ids::is_plausible_id(member) {
                return Err(StoreError::Scim(crate::scim::ScimError::InvalidValue(
                    format!("members.value {member:?} is not an id (1 to 128 bytes, no NUL)"),
                )));
            }
            let key = keys::membership(tenant, g, member);
            let old = self.member_record(m, &key)?;
            let dot = Dot {
                region: self.region.clone(),
                seq,
            };
            let (on, attrs) = match change {
                Some(attrs) => (true, attrs.clone()),
                None => (false, None),
            };
            let new = old.write_after(context, dot, on, attrs.clone(), stamp.millis);
            self.stage_membership(batch, m, tenant, g, member, new, &marks)?;
            writes.push(Write {
                group: (Some(g.as_str()) != group).then(|| g.clone()),
                member: member.clone(),
                on,
                attrs,
                seen: Write::beyond(&old.seen, context),
            });
        }
        Ok(writes)
    }

    /// Stage the membership writes of a replicated entry (`origin`, `seq`) on group `group`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn stage_remote_members(
        &self,
        batch: &mut WriteBatch,
        m: &mut Merge,
        tenant: &str,
        group: &str,
        writes: &[Write],
        dot: &Dot,
        at: i64,
        context: &BTreeMap<String, u64>,
        gc_marks: &BTreeMap<String, u64>,
    ) -> Result<usize, StoreError> {
        let mut applied = 0;
        let mut by_group: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for w in writes {
            by_group
                .entry(w.group.as_deref().unwrap_or(group))
                .or_default()
                .push(w.member.as_str());
        }
        for (g, members) in &by_group {
            if crate::ids::is_plausible_id(g) {
                self.stage_member_history(batch, tenant, g, at, &dot.region, dot.seq, members);
            }
        }
        for w in writes {
            let g = w.group.as_deref().unwrap_or(group);
            if !crate::ids::is_plausible_id(g) || !crate::ids::is_plausible_id(&w.member) {
                continue;
            }
            let gkey = keys::resource(tenant, ResourceKind::Group, g);
            if self.is_collected(&gkey)? {
                // The group is gone everywhere: a late change to its members loses.
                continue;
            }
            let key = keys::membership(tenant, g, &w.member);
            let old = self.member_record(m, &key)?;
            let new = old.join(&w.state(dot.clone(), at, context));
            if self.stage_membership(batch, m, tenant, g, &w.member, new, gc_marks)? {
                applied += 1;
            }
        }
        Ok(applied)
    }

    /// Collect removed records that no write can reach anymore (see the module docs and
    /// [`membership::gc_step`]): `own` are this region's marks, `own_allocated` its last
    /// handed-out sequence, `peers` the latest report of each other region and `cluster` every
    /// region's name. Returns how many records were dropped.
    pub fn collect_memberships(
        &self,
        own_allocated: u64,
        peers: &BTreeMap<String, Report>,
        cluster: &[String],
    ) -> Result<usize, StoreError> {
        let own = self.marks.hwm();
        let mut settle = Vec::new();
        let mut collect = Vec::new();
        for r in self.db.iterator_cf(
            self.cf(CF_META),
            IteratorMode::From(PENDING, Direction::Forward),
        ) {
            let (k, v) = r?;
            if !k.starts_with(PENDING) {
                break;
            }
            let Some(pending) = decode_pending(&v) else {
                return Err(StoreError::Corrupt("pending membership collection".into()));
            };
            match membership::gc_step(&pending, &self.region, &own, own_allocated, peers, cluster) {
                GcStep::Wait => {}
                GcStep::Settle(allocated) => settle.push((k.to_vec(), pending, allocated)),
                GcStep::Collect => collect.push((k.to_vec(), v.to_vec())),
            }
        }
        for (pk, pending, allocated) in settle {
            let record_key = &pk[PENDING.len()..];
            let Some((tenant, group, member)) = split_key(record_key) else {
                continue;
            };
            let _g = self.lock_stripes(&[(tenant, group), (tenant, member)]);
            // Only if the record did not change meanwhile (a change rewrites the pending key).
            if self.db.get_cf(self.cf(CF_META), &pk)?.as_deref()
                != Some(&encode_pending(&pending)[..])
            {
                continue;
            }
            let next = Pending {
                marks: pending.marks,
                allocated: Some(allocated),
            };
            let mut batch = WriteBatch::default();
            batch.put_cf(self.cf(CF_META), &pk, encode_pending(&next));
            self.db.write_opt(batch, &self.write_opts)?;
        }
        let mut collected = 0;
        for (pk, seen) in collect {
            let record_key = pk[PENDING.len()..].to_vec();
            let Some((tenant, group, member)) = split_key(&record_key) else {
                continue;
            };
            let _g = self.lock_stripes(&[(tenant, group), (tenant, member)]);
            if self.db.get_cf(self.cf(CF_META), &pk)?.as_deref() != Some(&seen[..]) {
                continue;
            }
            let m = Merge::default();
            if !self.member_record(&m, &record_key)?.removed() {
                continue;
            }
            let mut batch = WriteBatch::default();
            batch.delete_cf(self.cf(CF_META), &pk);
            batch.delete_cf(self.cf(CF_MEMBERS), &record_key);
            self.db.write_opt(batch, &self.write_opts)?;
            collected += 1;
        }
        Ok(collected)
    }

    /// Removed records waiting for collection (for tests and `/health`).
    pub fn pending_memberships(&self) -> Result<usize, StoreError> {
        Ok(self.prefix_keys(CF_META, PENDING).count())
    }

    /// Drop everything a collected group's memberships left: records, index entries, counts,
    /// pending collections. In chunks, so a group of a million does not make one huge batch.
    pub(super) fn drop_group_memberships(
        &self,
        tenant: &str,
        group: &str,
    ) -> Result<(), StoreError> {
        let prefix = keys::membership_prefix(tenant, group);
        loop {
            let mut batch = WriteBatch::default();
            let mut last = None;
            for r in self
                .db
                .iterator_cf(
                    self.cf(CF_MEMBERS),
                    IteratorMode::From(&prefix, Direction::Forward),
                )
                .take(10_000)
            {
                let (k, v) = r?;
                if !k.starts_with(&prefix) {
                    break;
                }
                let member = String::from_utf8_lossy(keys::last_part(&k)).into_owned();
                if Record::decode(&v).is_ok_and(|r| r.present()) {
                    batch.delete_cf(self.cf(CF_INDEX), keys::member_of(tenant, &member, group));
                }
                batch.delete_cf(self.cf(CF_INDEX), keys::listed(tenant, group, &member));
                batch.delete_cf(self.cf(CF_META), pending_key(&k));
                batch.delete_cf(self.cf(CF_MEMBERS), &k);
                last = Some(k.to_vec());
            }
            if last.is_none() {
                break;
            }
            self.db.write_opt(batch, &self.write_opts)?;
        }
        let mut batch = WriteBatch::default();
        let history = keys::member_history_prefix(tenant, group);
        let mut history_end = history.clone();
        history_end.push(0xff);
        batch.delete_range_cf(self.cf(CF_HISTORY), history, history_end);
        let counts = self.cf(CF_COUNTS);
        for k in [
            keys::history_count(tenant, group),
            keys::member_count(tenant, group),
            keys::member_digest(tenant, group),
            keys::record_digest(tenant, group),
        ] {
            batch.delete_cf(counts, k);
        }
        self.db.write_opt(batch, &self.write_opts)?;
        Ok(())
    }
}

/// One entry of a group's membership history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberHistory {
    /// The writing region's clock (ms since the epoch).
    pub at: i64,
    pub region: String,
    /// The write's identity, `seq@region` (the same in every region).
    pub write: String,
    /// The members it changed, as `members[value eq "…"]`, at most [`HISTORY_PATHS`].
    pub paths: Vec<String>,
    /// How many more it changed.
    pub more: usize,
}

/// How many member paths one history entry names (a batch of 1,000 says how many more).
const HISTORY_PATHS: usize = 100;

/// How far past `keep` a group's history may grow before its oldest entries are dropped in one
/// range deletion (an eighth, 1 to 64: 1,000 kept means 1,000 to 1,063 stored).
fn trim_slack(keep: usize) -> usize {
    (keep / 8).clamp(1, 64)
}

impl Store {
    /// Stage one history entry of a group's membership changes (one log entry's writes).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn stage_member_history(
        &self,
        batch: &mut WriteBatch,
        tenant: &str,
        group: &str,
        at: i64,
        origin: &str,
        seq: u64,
        members: &[&str],
    ) {
        if members.is_empty() || self.history_entries == 0 {
            return;
        }
        let paths: Vec<String> = members
            .iter()
            .take(HISTORY_PATHS)
            .map(|m| conflict::member_attribute(m))
            .collect();
        let value = serde_json::json!({
            "region": origin,
            "paths": paths,
            "more": members.len().saturating_sub(HISTORY_PATHS),
        });
        batch.put_cf(
            self.cf(CF_HISTORY),
            keys::member_history(tenant, group, at, origin, seq),
            value.to_string(),
        );
        // Bounded: past `history_entries` (plus some slack) the oldest go, in one range
        // deletion. Finding the oldest is a seek to the group's prefix, and a seek steps over
        // every deleted entry not yet compacted away: trimming one entry per write with a point
        // delete made each write of a group at its bound seek past hundreds of tombstones (a
        // 1M-member group's single add ran twice as slow as a fresh group's). One range
        // tombstone per `trim_slack` writes is skipped in one step.
        let count_key = keys::history_count(tenant, group);
        let existing = self.read_count(&count_key).unwrap_or(0).max(0) as usize;
        batch.merge_cf(self.cf(CF_COUNTS), &count_key, 1i64.to_le_bytes());
        let keep = self.history_entries;
        if existing + 1 < keep + trim_slack(keep) {
            return;
        }
        let prefix = keys::member_history_prefix(tenant, group);
        let drop = existing + 1 - keep;
        let mut seen = 0usize;
        let mut first_kept = None;
        for k in self.prefix_keys(CF_HISTORY, &prefix) {
            let Ok(k) = k else { return };
            if seen == drop {
                first_kept = Some(k);
                break;
            }
            seen += 1;
        }
        match first_kept {
            Some(k) => {
                batch.delete_range_cf(self.cf(CF_HISTORY), prefix.as_slice(), &*k);
                batch.merge_cf(
                    self.cf(CF_COUNTS),
                    &count_key,
                    (-(drop as i64)).to_le_bytes(),
                );
            }
            // Fewer entries than counted (writers racing on one group each counted one):
            // correct the count, drop nothing.
            None => batch.merge_cf(
                self.cf(CF_COUNTS),
                &count_key,
                (-((existing - seen) as i64)).to_le_bytes(),
            ),
        }
    }

    /// A group's membership history, oldest first: (time in ms, region, the write's
    /// `seq@region`, member paths, how many more members the entry changed).
    pub fn member_history(
        &self,
        tenant: &str,
        group: &str,
    ) -> Result<Vec<MemberHistory>, StoreError> {
        let prefix = keys::member_history_prefix(tenant, group);
        let mut out = Vec::new();
        for r in self.db.iterator_cf(
            self.cf(CF_HISTORY),
            IteratorMode::From(&prefix, Direction::Forward),
        ) {
            let (k, v) = r?;
            if !k.starts_with(&prefix) {
                break;
            }
            let at = k
                .get(prefix.len()..prefix.len() + 8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map_or(0, |b| u64::from_be_bytes(b) as i64);
            let Ok(entry) = serde_json::from_slice::<Value>(&v) else {
                continue;
            };
            let paths = entry["paths"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p.as_str().map(str::to_string))
                .collect();
            let region = entry["region"].as_str().unwrap_or_default().to_string();
            let seq = k
                .len()
                .checked_sub(8)
                .and_then(|i| <[u8; 8]>::try_from(&k[i..]).ok())
                .map_or(0, u64::from_be_bytes);
            out.push(MemberHistory {
                at,
                write: format!("{seq}@{region}"),
                region,
                paths,
                more: entry["more"].as_u64().unwrap_or(0) as usize,
            });
        }
        // Between trims up to `trim_slack` more are stored than are kept: show the newest.
        let extra = out.len().saturating_sub(self.history_entries);
        out.drain(..extra);
        Ok(out)
    }
}

/// (tenant, group, member) of a `members` key; `None` for anything else.
pub(super) fn split_key(key: &[u8]) -> Option<(&str, &str, &str)> {
    let text = std::str::from_utf8(key).ok()?;
    let mut parts = text.split('\0');
    let (t, g, m) = (parts.next()?, parts.next()?, parts.next()?);
    let valid = crate::ids::is_valid_name(t)
        && crate::ids::is_plausible_id(g)
        && crate::ids::is_plausible_id(m);
    (parts.next().is_none() && valid).then_some((t, g, m))
}

fn encode_pending(p: &Pending) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"marks": p.marks, "allocated": p.allocated}))
        .unwrap_or_default()
}

fn decode_pending(bytes: &[u8]) -> Option<Pending> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    let marks: BTreeMap<String, u64> = serde_json::from_value(v.get("marks")?.clone()).ok()?;
    let allocated: Option<BTreeMap<String, u64>> =
        serde_json::from_value(v.get("allocated").cloned().unwrap_or(Value::Null)).ok()?;
    Some(Pending { marks, allocated })
}

/// The conflict record of a removal that beat a concurrent add (the same on every region that
/// observes the pair).
fn membership_conflict(
    tenant: &str,
    group: &str,
    member: &str,
    removal: &membership::MemberValue,
    add: &membership::MemberValue,
) -> Conflict {
    let name = |d: &Dot| format!("{}@{}", d.seq, d.region);
    let res = conflict::Resource {
        tenant,
        kind: "Group",
        id: group,
    };
    let added = member_json(member, add.attrs.as_deref());
    conflict::membership_record(
        res,
        &conflict::member_attribute(member),
        (name(&removal.dot), &removal.dot.region, removal.at),
        (name(&add.dot), &add.dot.region, add.at, added),
    )
}
