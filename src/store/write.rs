//! Local writes: create, update (PUT/PATCH), delete, and the view and index changes they stage.

use std::collections::BTreeMap;

use super::*;
use crate::events::{Intent, Op};
use crate::scim::members::Touch;

/// Membership writes one log entry carries at most: a request that changes more (a PUT or a
/// `replace` of a large group) spreads them over several entries of one batch, so that no entry
/// outgrows a replication frame (about 50 bytes a write: half a megabyte an entry).
pub(super) const MAX_WRITES_PER_ENTRY: usize = 10_000;

impl Store {
    /// Create a resource from normalised attributes (no `schemas`, `id`, `meta`).
    ///
    /// Users get a deterministic id from (tenant, userName), so POSTs of one user that race in
    /// two regions meet on one document. A POST whose userName is taken is a `uniqueness`
    /// error, unless the tenant's policy answers replays idempotently and the existing user has
    /// exactly these attributes (then `Replay`). A group whose displayName is taken is a
    /// `uniqueness` error when the tenant keeps group names unique (the default).
    pub fn create(
        &self,
        tenant: &str,
        kind: ResourceKind,
        attrs: Map<String, Value>,
    ) -> Result<Created, StoreError> {
        self.check_writable()?;
        match kind {
            ResourceKind::Group => {
                let name = self
                    .unique_attr(tenant, kind)
                    .and_then(|attr| attrs.get(attr))
                    .and_then(Value::as_str)
                    .map(str::to_string);
                let _n = name
                    .as_deref()
                    .map(|n| self.name_lock(tenant, kind, &ids::normalize_case_insensitive(n)));
                if let Some(name) = &name {
                    if !self.lookup(tenant, kind, "displayName", name)?.is_empty() {
                        return Err(ScimError::Uniqueness(format!(
                            "displayName {name:?} is already taken"
                        ))
                        .into());
                    }
                }
                let id = ids::random_id();
                let members = members_by_id(attrs.get("members"));
                let mut locks = vec![(tenant, id.as_str())];
                locks.extend(members.keys().map(|m| (tenant, m.as_str())));
                let _g = self.lock_stripes(&locks);
                self.write_new(tenant, kind, &id, attrs).map(Created::New)
            }
            ResourceKind::User => {
                let user_name = attrs
                    .get("userName")
                    .and_then(Value::as_str)
                    .ok_or_else(|| ScimError::InvalidValue("userName is required".into()))?
                    .to_string();
                let _n = self.name_lock(tenant, kind, &ids::normalize_case_insensitive(&user_name));
                if let Some(existing) = self
                    .lookup(tenant, kind, "userName", &user_name)?
                    .into_iter()
                    .next()
                {
                    if self.policy(tenant).idempotent_create {
                        if let Some(stored) = self.get(tenant, kind, &existing)? {
                            if same_attrs(&stored.view, &attrs) {
                                return Ok(Created::Replay(stored));
                            }
                        }
                    }
                    return Err(ScimError::Uniqueness(format!(
                        "userName {user_name:?} is already taken"
                    ))
                    .into());
                }
                for n in 0..64 {
                    let id = ids::user_id_candidate(tenant, &user_name, n);
                    let _g = lock(&self.id_locks[stripe((tenant, &id))]);
                    let key = keys::resource(tenant, kind, &id);
                    if self.db.get_pinned_cf(self.cf(CF_DOCS), &key)?.is_some() {
                        continue; // held by a renamed user or a tombstone
                    }
                    return self.write_new(tenant, kind, &id, attrs).map(Created::New);
                }
                Err(StoreError::Corrupt(format!(
                    "no free id for userName {user_name:?}"
                )))
            }
        }
    }

    /// The write policy of `tenant`, by reference (`None`: the defaults).
    pub(super) fn policy_ref(&self, tenant: &str) -> Option<&TenantPolicy> {
        self.tenants.get(tenant)
    }

    /// The write policy of `tenant`.
    pub fn policy(&self, tenant: &str) -> TenantPolicy {
        self.tenants.get(tenant).cloned().unwrap_or_default()
    }

    /// The attribute whose value is unique in `tenant` for `kind`, under its policy.
    fn unique_attr(&self, tenant: &str, kind: ResourceKind) -> Option<&'static str> {
        match kind {
            ResourceKind::User => Some("userName"),
            ResourceKind::Group => self
                .policy(tenant)
                .unique_group_names
                .then_some("displayName"),
        }
    }

    /// The lock of one normalised unique name (taken before any id lock).
    fn name_lock(&self, tenant: &str, kind: ResourceKind, norm: &str) -> MutexGuard<'_, ()> {
        lock(&self.name_locks[stripe((tenant, kind.endpoint(), norm))])
    }

    /// Write a new resource (the caller holds its stripe and, for a group, its members'):
    /// the document, its view, and for a group its members' records, in one entry.
    pub(super) fn write_new(
        &self,
        tenant: &str,
        kind: ResourceKind,
        id: &str,
        mut attrs: Map<String, Value>,
    ) -> Result<Stored, StoreError> {
        let members = match kind {
            ResourceKind::Group => members_by_id(attrs.remove("members").as_ref()),
            ResourceKind::User => BTreeMap::new(),
        };
        let stamp = self.stamp();
        let mut doc = doc::create(kind, id, self.actor.clone(), &stamp)?;
        let explicit: Vec<String> = attrs.keys().cloned().collect();
        doc::write_attrs(
            &mut doc,
            kind,
            &Map::new(),
            &attrs,
            &explicit,
            &self.policy(tenant).sticky,
            &stamp,
        )?;
        doc.put_modified_and_commit(&stamp);
        let view = doc::materialize(&mut doc, kind)?;
        let sticky = &self.policy(tenant).sticky;
        let intent = Intent::of(
            Op::Create,
            kind,
            sticky,
            None,
            Some(&view),
            !members.is_empty(),
        );
        // A new document's only change is the whole document: store those bytes once (Automerge
        // loads a sequence of changes as well as a saved document).
        let change = doc.save_after(&[]);
        let key = keys::resource(tenant, kind, id);
        let mut batch = WriteBatch::default();
        let mut m = Merge::default();
        let changes: Vec<_> = members
            .iter()
            .map(|(member, value)| {
                (
                    id.to_string(),
                    member.clone(),
                    Some(members::member_attrs(value)),
                )
            })
            .collect();
        let seqs = self.alloc_entries(changes.len())?;
        let staged: Result<(), StoreError> = (|| {
            let delta = self.stage_doc(&mut batch, &key, [0; 32], &mut doc, Some(&change));
            xor_into(&mut m.delta, &delta);
            self.stage_view(&mut batch, &mut m, tenant, kind, id, None, Some(&view))?;
            let head = (tenant, kind, id, Some(id));
            let entries = (change.clone(), Some(intent));
            self.stage_entries(&mut batch, &mut m, head, entries, &changes, &seqs, &stamp)
        })();
        self.commit_staged(batch, &seqs, staged, m.delta)?;
        self.cache_put(key, doc);
        Ok(Stored::from_view(view))
    }

    /// Hand out the sequence numbers of a local write that changes `changes` memberships (see
    /// [`Store::stage_entries`]): all, or none (writes refused: they are given up).
    pub(super) fn alloc_entries(&self, changes: usize) -> Result<Vec<u64>, StoreError> {
        let n = changes.div_ceil(MAX_WRITES_PER_ENTRY).max(1);
        let mut seqs = Vec::with_capacity(n);
        for _ in 0..n {
            match self.alloc_checked() {
                Ok(seq) => seqs.push(seq),
                Err(e) => {
                    self.abandoned
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend(seqs);
                    return Err(e);
                }
            }
        }
        Ok(seqs)
    }

    /// Stage a local write's log entries: the document `change` (in the first) and the
    /// membership `changes`, at most [`MAX_WRITES_PER_ENTRY`] per entry, one of `seqs` each
    /// (from [`Store::alloc_entries`]), and what the write meant (in the last, so a region that
    /// applies the write has all of it when it makes the event). `head` is (tenant, kind, id,
    /// the group the changes are of when it is the entry's resource).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn stage_entries(
        &self,
        batch: &mut WriteBatch,
        m: &mut Merge,
        (tenant, kind, id, group): (&str, ResourceKind, &str, Option<&str>),
        (change, intent): (Vec<u8>, Option<Intent>),
        changes: &[(String, String, Option<Option<String>>)],
        seqs: &[u64],
        stamp: &Stamp,
    ) -> Result<(), StoreError> {
        let context = self.marks.hwm();
        let mut change = Some(change);
        let mut intent = intent;
        let mut chunks = changes.chunks(MAX_WRITES_PER_ENTRY);
        for (i, &seq) in seqs.iter().enumerate() {
            let chunk = chunks.next().unwrap_or(&[]);
            let writes =
                self.stage_member_changes(batch, m, tenant, group, chunk, seq, stamp, &context)?;
            self.put_log(
                batch,
                seq,
                &LogEntry {
                    tenant: tenant.into(),
                    kind,
                    id: id.into(),
                    change: change.take().unwrap_or_default(),
                    at: stamp.millis,
                    context: context.clone(),
                    members: writes,
                    records: Vec::new(),
                    intent: if i + 1 == seqs.len() {
                        intent.take()
                    } else {
                        None
                    },
                },
            )?;
        }
        Ok(())
    }

    /// Update a live resource: `f` maps its stored attributes to the new ones. Only what differs
    /// is written; a change that writes nothing answers the current resource without a write.
    /// A new userName taken by another user is a `uniqueness` error.
    pub fn update(
        &self,
        tenant: &str,
        kind: ResourceKind,
        id: &str,
        if_match: Option<&str>,
        f: &dyn Fn(&Map<String, Value>) -> UpdateResult,
    ) -> Result<Stored, StoreError> {
        self.update_as(Op::Patch, tenant, kind, id, if_match, f)
    }

    /// [`Store::update`] for a PUT: the same write, told apart in its event.
    pub fn replace(
        &self,
        tenant: &str,
        kind: ResourceKind,
        id: &str,
        if_match: Option<&str>,
        f: &dyn Fn(&Map<String, Value>) -> UpdateResult,
    ) -> Result<Stored, StoreError> {
        self.update_as(Op::Put, tenant, kind, id, if_match, f)
    }

    fn update_as(
        &self,
        op: Op,
        tenant: &str,
        kind: ResourceKind,
        id: &str,
        if_match: Option<&str>,
        f: &dyn Fn(&Map<String, Value>) -> UpdateResult,
    ) -> Result<Stored, StoreError> {
        self.check_writable()?;
        match kind {
            ResourceKind::User => {
                self.update_recording(tenant, kind, id, if_match, f, &[], Some(op))
            }
            ResourceKind::Group => {
                let none = BTreeSet::new();
                self.update_group_as(op, tenant, id, if_match, &Touch::All, &none, f, None)
            }
        }
    }

    /// Update a live group: `f` maps its attributes, with the members `touch` names (all of
    /// them for [`Touch::All`]), to the new ones. Only the group's document and the records of
    /// members whose state differs are written, in one entry: the cost follows what the
    /// request touches, not the group's size.
    pub fn update_group(
        &self,
        tenant: &str,
        id: &str,
        if_match: Option<&str>,
        touch: &Touch,
        f: &dyn Fn(&Map<String, Value>) -> UpdateResult,
    ) -> Result<Stored, StoreError> {
        self.update_group_removing(tenant, id, if_match, touch, &BTreeSet::new(), f)
    }

    /// [`Store::update_group`] that also writes a removal for each of `named` (members the
    /// request removed by id) this region holds no record of: its add may still be on its way
    /// from another region, and the removal must win over it.
    pub fn update_group_removing(
        &self,
        tenant: &str,
        id: &str,
        if_match: Option<&str>,
        touch: &Touch,
        named: &BTreeSet<String>,
        f: &dyn Fn(&Map<String, Value>) -> UpdateResult,
    ) -> Result<Stored, StoreError> {
        self.check_writable()?;
        self.update_group_as(Op::Patch, tenant, id, if_match, touch, named, f, None)
    }

    /// [`Store::update_group_removing`] holding the lock of the name `held` (a rename to a
    /// unique displayName: the name's lock is taken before any id lock, so the first pass
    /// learns the new name, lets go, and the second writes under both).
    #[allow(clippy::too_many_arguments)]
    fn update_group_as(
        &self,
        op: Op,
        tenant: &str,
        id: &str,
        if_match: Option<&str>,
        touch: &Touch,
        named: &BTreeSet<String>,
        f: &dyn Fn(&Map<String, Value>) -> UpdateResult,
        held: Option<(&str, u8)>,
    ) -> Result<Stored, StoreError> {
        let kind = ResourceKind::Group;
        let _guards = match touch {
            Touch::All => self.lock_all(),
            Touch::Ids(ids) => {
                let mut locks = vec![(tenant, id)];
                locks.extend(ids.iter().map(|m| (tenant, m.as_str())));
                self.lock_stripes(&locks)
            }
        };
        let key = keys::resource(tenant, kind, id);
        let mut doc = self.load_live(&key, id)?;
        if let Some(tag) = if_match {
            let current = members::combined_version(
                &doc::version(&mut doc),
                &self.member_digest(tenant, id)?,
            );
            if !etag_matches(tag, &current) {
                self.cache_put(key, doc);
                return Err(StoreError::PreconditionFailed { current });
            }
        }
        let old_attrs = doc::read_attrs(&doc, kind)?;
        let old_members = match touch {
            Touch::Ids(ids) => self.present_members(tenant, id, ids)?,
            Touch::All => self.all_present_members(tenant, id)?,
        };
        let mut full = old_attrs.clone();
        if !old_members.is_empty() {
            full.insert(
                "members".into(),
                Value::Array(old_members.values().cloned().collect()),
            );
        }
        let (mut new_attrs, explicit) = match f(&full) {
            Ok(v) => v,
            Err(e) => {
                self.cache_put(key, doc);
                return Err(e.into());
            }
        };
        let new_members = members_by_id(new_attrs.remove("members").as_ref());
        if let Touch::Ids(ids) = touch {
            if new_members
                .keys()
                .any(|m| !ids.contains(m) && !old_members.contains_key(m))
            {
                // The request named a member `touched` did not foresee: redo it holding
                // every stripe (correct whatever it touches).
                self.cache_put(key, doc);
                drop(_guards);
                return self.update_group_as(op, tenant, id, if_match, &Touch::All, named, f, held);
            }
        }
        if let Some(attr) = self.unique_attr(tenant, kind) {
            let norm = |a: &Map<String, Value>| {
                a.get(attr)
                    .and_then(Value::as_str)
                    .map(ids::normalize_case_insensitive)
            };
            if let Some(new_norm) =
                norm(&new_attrs).filter(|n| Some(n) != norm(&old_attrs).as_ref())
            {
                match held {
                    Some((name, _)) if name == new_norm => {
                        let taken = self.lookup(tenant, kind, attr, &new_norm)?;
                        if taken.iter().any(|other| other != id) {
                            self.cache_put(key, doc);
                            return Err(ScimError::Uniqueness(format!(
                                "{attr} {:?} is already taken",
                                new_attrs
                                    .get(attr)
                                    .and_then(Value::as_str)
                                    .unwrap_or_default()
                            ))
                            .into());
                        }
                    }
                    Some((_, passes)) if passes >= 4 => {
                        self.cache_put(key, doc);
                        return Err(ScimError::Unavailable(
                            "the group's name keeps changing under concurrent writes".into(),
                        )
                        .into());
                    }
                    _ => {
                        self.cache_put(key, doc);
                        drop(_guards);
                        let _n = self.name_lock(tenant, kind, &new_norm);
                        let passes = held.map_or(1, |(_, p)| p + 1);
                        let held = Some((new_norm.as_str(), passes));
                        return self
                            .update_group_as(op, tenant, id, if_match, touch, named, f, held);
                    }
                }
            }
        }
        let mut changes = Vec::new();
        let all: BTreeSet<&String> = old_members.keys().chain(new_members.keys()).collect();
        for member in all {
            match (old_members.get(member), new_members.get(member)) {
                (Some(_), None) => changes.push((id.to_string(), member.clone(), None)),
                (None, Some(n)) => changes.push((
                    id.to_string(),
                    member.clone(),
                    Some(members::member_attrs(n)),
                )),
                (Some(o), Some(n)) if o != n => changes.push((
                    id.to_string(),
                    member.clone(),
                    Some(members::member_attrs(n)),
                )),
                _ => {}
            }
        }
        for member in named {
            let unseen = !old_members.contains_key(member)
                && !new_members.contains_key(member)
                && crate::ids::is_plausible_id(member)
                && self
                    .member_record(&Merge::default(), &keys::membership(tenant, id, member))?
                    .values
                    .is_empty();
            if unseen && matches!(touch, Touch::Ids(ids) if ids.contains(member)) {
                changes.push((id.to_string(), member.clone(), None));
            }
        }
        let explicit: Vec<String> = explicit.into_iter().filter(|e| e != "members").collect();
        let stamp = self.stamp();
        let heads = doc.get_heads();
        let before = heads_term(&key, &mut doc);
        let old_view = doc::materialize(&mut doc, kind)?;
        let sticky = self.policy(tenant).sticky;
        let wrote = doc::write_attrs(
            &mut doc, kind, &old_attrs, &new_attrs, &explicit, &sticky, &stamp,
        )?;
        if !wrote && changes.is_empty() {
            self.cache_put(key, doc);
            return Ok(Stored::from_view(old_view));
        }
        let mut batch = WriteBatch::default();
        let mut m = Merge::default();
        let seqs = self.alloc_entries(changes.len())?;
        let mut view = old_view.clone();
        let staged: Result<(), StoreError> = (|| {
            let mut change = Vec::new();
            if wrote {
                doc.put_modified_and_commit(&stamp);
                view = doc::materialize(&mut doc, kind)?;
                change = doc.save_after(&heads);
                let delta = self.stage_doc(&mut batch, &key, before, &mut doc, None);
                xor_into(&mut m.delta, &delta);
                self.stage_view(
                    &mut batch,
                    &mut m,
                    tenant,
                    kind,
                    id,
                    Some(&old_view),
                    Some(&view),
                )?;
            }
            let intent = Intent::of(
                op,
                kind,
                &sticky,
                Some(&old_view),
                Some(&view),
                !changes.is_empty(),
            );
            let head = (tenant, kind, id, Some(id));
            let entries = (change, Some(intent));
            self.stage_entries(&mut batch, &mut m, head, entries, &changes, &seqs, &stamp)
        })();
        self.commit_staged(batch, &seqs, staged, m.delta)?;
        self.cache_put(key, doc);
        Ok(Stored::from_view(view))
    }

    /// [`Store::update`] that also stores conflict records in the document (and indexes them).
    /// `op` is the request the write answers (`None`: this region's own bookkeeping, which
    /// makes no event).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn update_recording(
        &self,
        tenant: &str,
        kind: ResourceKind,
        id: &str,
        if_match: Option<&str>,
        f: &dyn Fn(&Map<String, Value>) -> UpdateResult,
        records: &[Conflict],
        op: Option<Op>,
    ) -> Result<Stored, StoreError> {
        // A change of the unique name (a userName, or a group's displayName when the tenant keeps
        // them unique) must hold the new name's lock (always taken before the id lock), so the
        // first pass learns the new name and a second pass writes under both locks.
        let mut name_guard: Option<(String, MutexGuard<'_, ()>)> = None;
        for _ in 0..4 {
            let id_guard = lock(&self.id_locks[stripe((tenant, id))]);
            let key = keys::resource(tenant, kind, id);
            let mut doc = self.load_live(&key, id)?;
            if let Some(tag) = if_match {
                let current = self.served_version(tenant, kind, id, &doc::version(&mut doc))?;
                if !etag_matches(tag, &current) {
                    self.cache_put(key, doc);
                    return Err(StoreError::PreconditionFailed { current });
                }
            }
            let old = doc::read_attrs(&doc, kind)?;
            let (new, explicit) = match f(&old) {
                Ok(v) => v,
                Err(e) => {
                    self.cache_put(key, doc);
                    return Err(e.into());
                }
            };
            if let Some(attr) = self.unique_attr(tenant, kind) {
                let old_name = old
                    .get(attr)
                    .and_then(Value::as_str)
                    .map(ids::normalize_case_insensitive);
                let new_name = new
                    .get(attr)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let new_norm = ids::normalize_case_insensitive(&new_name);
                if !new_name.is_empty() && old_name.as_deref() != Some(new_norm.as_str()) {
                    if name_guard.as_ref().map(|(n, _)| n) != Some(&new_norm) {
                        self.cache_put(key, doc);
                        drop(id_guard);
                        drop(name_guard.take());
                        let g = self.name_lock(tenant, kind, &new_norm);
                        name_guard = Some((new_norm, g));
                        continue;
                    }
                    let taken = self
                        .lookup(tenant, kind, attr, &new_name)?
                        .into_iter()
                        .any(|other| other != id);
                    if taken {
                        self.cache_put(key, doc);
                        return Err(ScimError::Uniqueness(format!(
                            "{attr} {new_name:?} is already taken"
                        ))
                        .into());
                    }
                }
            }
            let stamp = self.stamp();
            let heads = doc.get_heads();
            let before = heads_term(&key, &mut doc);
            let old_view = doc::materialize(&mut doc, kind)?;
            let sticky = self.policy(tenant).sticky;
            let wrote = doc::write_attrs(&mut doc, kind, &old, &new, &explicit, &sticky, &stamp)?;
            if !(doc::record_conflicts(&mut doc, records)? || wrote) {
                self.cache_put(key, doc);
                return Ok(Stored::from_view(old_view));
            }
            doc.put_modified_and_commit(&stamp);
            let view = doc::materialize(&mut doc, kind)?;
            let change = doc.save_after(&heads);
            let mut batch = WriteBatch::default();
            let mut indexed = Vec::new();
            for record in records {
                if self.stage_record(&mut batch, record)? {
                    indexed.push(record.clone());
                }
            }
            let delta = self.stage_doc(&mut batch, &key, before, &mut doc, None);
            let mut m = Merge::default();
            self.stage_view(
                &mut batch,
                &mut m,
                tenant,
                kind,
                id,
                Some(&old_view),
                Some(&view),
            )?;
            let intent =
                op.map(|op| Intent::of(op, kind, &sticky, Some(&old_view), Some(&view), false));
            let resource = (tenant, kind, id);
            let seq = self.stage_log(&mut batch, resource, &change, intent, stamp.millis)?;
            let region = self.region.clone();
            self.stage_offboardings(&mut batch, &mut m.offboarded, &region, seq, stamp.millis)?;
            self.commit_indexing(batch, &[seq], None, delta, &mut indexed)?;
            self.cache_put(key, doc);
            return Ok(Stored::from_view(view));
        }
        Err(StoreError::Scim(ScimError::Unavailable(
            "the userName kept changing concurrently; retry".into(),
        )))
    }

    /// Delete a live resource, leaving a tombstone document. Deleting a user also removes it from
    /// every group it is in (in the same entry), so its memberships end removed everywhere and
    /// are collected like any removal; a deleted group's records stay, unlisted, until its
    /// tombstone is collected.
    pub fn delete(
        &self,
        tenant: &str,
        kind: ResourceKind,
        id: &str,
        if_match: Option<&str>,
    ) -> Result<(), StoreError> {
        self.check_writable()?;
        // A user's removals write records of its groups, so every group's stripe is held too:
        // learn the groups, lock them all in order, and check that none joined meanwhile.
        let mut groups: BTreeSet<String> = BTreeSet::new();
        let _guards = loop {
            let mut locks = vec![(tenant, id)];
            locks.extend(groups.iter().map(|g| (tenant, g.as_str())));
            let guards = self.lock_stripes(&locks);
            let now: BTreeSet<String> = match kind {
                ResourceKind::User => self.member_groups(tenant, id)?.into_iter().collect(),
                ResourceKind::Group => BTreeSet::new(),
            };
            if now.is_subset(&groups) {
                groups = now;
                break guards;
            }
            drop(guards);
            groups.extend(now);
        };
        let key = keys::resource(tenant, kind, id);
        let mut doc = self.load_live(&key, id)?;
        if let Some(tag) = if_match {
            let current = self.served_version(tenant, kind, id, &doc::version(&mut doc))?;
            if !etag_matches(tag, &current) {
                self.cache_put(key, doc);
                return Err(StoreError::PreconditionFailed { current });
            }
        }
        let stamp = self.stamp();
        let heads = doc.get_heads();
        let before = heads_term(&key, &mut doc);
        let old_view = doc::materialize(&mut doc, kind)?;
        doc::mark_deleted(&mut doc, &stamp)?;
        doc.commit_with(automerge::transaction::CommitOptions::default().with_time(stamp.millis));
        let change = doc.save_after(&heads);
        let mut batch = WriteBatch::default();
        let mut m = Merge::default();
        let removals: Vec<_> = groups
            .iter()
            .map(|g| (g.clone(), id.to_string(), None))
            .collect();
        let seqs = self.alloc_entries(removals.len())?;
        let staged: Result<(), StoreError> = (|| {
            let delta = self.stage_doc(&mut batch, &key, before, &mut doc, None);
            xor_into(&mut m.delta, &delta);
            if kind == ResourceKind::Group {
                self.stage_group_deleted(&mut batch, &mut m, tenant, id)?;
            }
            let sticky = &self.policy(tenant).sticky;
            let intent = Intent::of(Op::Delete, kind, sticky, Some(&old_view), None, false);
            let head = (tenant, kind, id, None);
            let entries = (change, Some(intent));
            self.stage_entries(&mut batch, &mut m, head, entries, &removals, &seqs, &stamp)?;
            self.stage_view(&mut batch, &mut m, tenant, kind, id, Some(&old_view), None)?;
            let last = *seqs.last().unwrap_or(&0);
            let region = self.region.clone();
            self.stage_offboardings(&mut batch, &mut m.offboarded, &region, last, stamp.millis)?;
            let mut marks = self.marks.hwm();
            marks.insert(self.region.clone(), *seqs.last().unwrap_or(&0));
            self.stage_tomb(&mut batch, &key, tenant, id, &marks)?;
            Ok(())
        })();
        self.commit_staged(batch, &seqs, staged, m.delta)?;
        self.cache_put(key, doc);
        Ok(())
    }

    /// Stage the view and index changes of a resource going from `old` to `new` (None = absent),
    /// the tenant's counts, and, when the resource appears or disappears, its listing as a
    /// member of groups (and, for a group that appears with records already here, its own
    /// members: the caller then holds every stripe; see [`Store::group_has_records`]).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn stage_view(
        &self,
        batch: &mut WriteBatch,
        m: &mut Merge,
        tenant: &str,
        kind: ResourceKind,
        id: &str,
        old: Option<&Value>,
        new: Option<&Value>,
    ) -> Result<(), StoreError> {
        let key = keys::resource(tenant, kind, id);
        let sticky = &self.policy(tenant).sticky;
        if let Some(action) = offboarding::transition(kind, sticky, old, new) {
            m.offboarded
                .push((tenant.to_string(), kind, id.to_string(), action));
        }
        match new {
            Some(view) => batch.put_cf(
                self.cf(CF_VIEWS),
                &key,
                serde_json::to_vec(view).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            ),
            None => batch.delete_cf(self.cf(CF_VIEWS), &key),
        }
        let index = self.cf(CF_INDEX);
        let old_entries: BTreeSet<_> = old.map(|v| index_entries(kind, v)).unwrap_or_default();
        let new_entries: BTreeSet<_> = new.map(|v| index_entries(kind, v)).unwrap_or_default();
        for (attr, value) in old_entries.difference(&new_entries) {
            batch.delete_cf(index, keys::index(tenant, kind, attr, value, id));
        }
        for (attr, value) in new_entries.difference(&old_entries) {
            batch.put_cf(index, keys::index(tenant, kind, attr, value, id), b"");
        }
        let appears = match (old.is_some(), new.is_some()) {
            (false, true) => true,
            (true, false) => false,
            _ => return Ok(()),
        };
        let step = if appears { 1i64 } else { -1 };
        let counts = self.cf(CF_COUNTS);
        batch.merge_cf(
            counts,
            keys::resource_count(tenant, kind),
            step.to_le_bytes(),
        );
        batch.merge_cf(
            counts,
            keys::bucket_count(tenant, kind, keys::bucket_of(id)),
            step.to_le_bytes(),
        );
        m.live.insert((tenant.to_string(), id.to_string()), appears);
        self.stage_member_liveness(batch, m, tenant, id, appears)?;
        if kind == ResourceKind::Group && appears && self.group_has_records(tenant, id)? {
            self.stage_group_live(batch, m, tenant, id)?;
        }
        Ok(())
    }
}

/// The members of a `members` value, by id (elements without an id are dropped: validation
/// refused them before).
pub(super) fn members_by_id(value: Option<&Value>) -> BTreeMap<String, Value> {
    value
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| Some((m.get("value")?.as_str()?.to_string(), m.clone())))
        .collect()
}
