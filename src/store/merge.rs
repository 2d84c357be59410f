//! Changes from elsewhere: replicated log entries, documents from peer lookups, and what every
//! merge triggers (conflict records, userName collisions).

use super::*;

/// The meta prefix of quarantined replicated entries (`q\0` + log key → reason, 0, bytes).
const QUARANTINE: &[u8] = b"q\0";

/// The time of the latest change among a document's heads (milliseconds since the epoch, as
/// the writing region stamped it; 0 for a document without changes).
fn latest_change_time(doc: &mut AutoCommit) -> i64 {
    let heads = doc.get_heads();
    heads
        .iter()
        .filter_map(|h| doc.get_change_by_hash(h).map(|c| c.timestamp()))
        .max()
        .unwrap_or(0)
}

impl Store {
    /// Apply consecutive log entries of `origin` received from a peer: merge each change into
    /// its document and each membership write into its record, re-materialise the views and
    /// indexes, and log the entries under their origin, all in one synced batch, so an
    /// acknowledgement means the changes are durable here.
    ///
    /// Entries already held are skipped; an empty entry is a filler (logged, nothing applied);
    /// an entry this version cannot decode is logged (so the log stays contiguous) and counted.
    /// Changes whose Automerge dependencies have not arrived yet stay queued inside the saved
    /// document and take effect when the dependencies come. A change Automerge rejects is
    /// quarantined (kept in `meta`, counted, logged) and the rest goes on: one bad change must
    /// not stall its origin.
    pub fn apply_remote(
        &self,
        origin: &str,
        entries: &[(u64, Vec<u8>)],
    ) -> Result<ApplyReport, StoreError> {
        // A change that loads but then cannot be read (materialised, checked for conflicts)
        // fails its document's merge: the batch is staged again without that document's
        // changes, which are quarantined. Bounded: each round quarantines at least one entry.
        // One batch of an origin at a time: the replication runtime applies what different
        // peers sent concurrently, and two batches holding the same entries must not both find
        // them fresh (each would count their conflict records and stage their events).
        let origin_lock = self.apply_lock(origin);
        let _applying = origin_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut poisoned = BTreeSet::new();
        loop {
            match self.apply_remote_without(origin, entries, &poisoned) {
                Err(StoreError::Poisoned { seqs, reason }) if !seqs.is_subset(&poisoned) => {
                    tracing::warn!(
                        origin, seqs = ?seqs, error = %reason,
                        "replicated changes a document cannot take; quarantined, the rest goes on"
                    );
                    poisoned.extend(seqs);
                }
                other => return other,
            }
        }
    }

    /// The lock that serialises the applying of `origin`'s entries.
    fn apply_lock(&self, origin: &str) -> std::sync::Arc<Mutex<()>> {
        let mut locks = self.apply_locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(origin.to_string()).or_default().clone()
    }

    fn apply_remote_without(
        &self,
        origin: &str,
        entries: &[(u64, Vec<u8>)],
        poisoned: &BTreeSet<u64>,
    ) -> Result<ApplyReport, StoreError> {
        let mark = self.marks.hwm().get(origin).copied().unwrap_or(0);
        let fresh: Vec<&(u64, Vec<u8>)> = entries.iter().filter(|(seq, _)| *seq > mark).collect();
        let mut report = ApplyReport::default();
        let mut decoded: Vec<(u64, LogEntry)> = Vec::new();
        for (seq, bytes) in &fresh {
            if bytes.is_empty() {
                continue;
            }
            match LogEntry::decode(bytes) {
                Some(e) if crate::ids::is_valid_name(&e.tenant) => decoded.push((*seq, e)),
                _ => report.undecodable += 1,
            }
        }
        // Group the document changes by document, in order.
        let mut by_doc: std::collections::BTreeMap<Vec<u8>, Vec<usize>> = Default::default();
        for (i, (_, e)) in decoded.iter().enumerate() {
            if !e.change.is_empty() {
                by_doc
                    .entry(keys::resource(&e.tenant, e.kind, &e.id))
                    .or_default()
                    .push(i);
            }
        }
        // Lock every touched stripe once, in stripe order (no deadlock with other appliers or
        // local writes, which lock in the same order). A group that becomes live while its
        // records are already here needs every stripe (see `members`).
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        for (_, e) in &decoded {
            pairs.push((&e.tenant, &e.id));
            for w in &e.members {
                pairs.push((&e.tenant, w.group.as_deref().unwrap_or(&e.id)));
                pairs.push((&e.tenant, &w.member));
            }
        }
        let appears_with_records = || -> Result<bool, StoreError> {
            for (_, e) in &decoded {
                if e.kind == ResourceKind::Group
                    && !e.change.is_empty()
                    && self.get(&e.tenant, ResourceKind::Group, &e.id)?.is_none()
                    && self.group_has_records(&e.tenant, &e.id)?
                {
                    return Ok(true);
                }
            }
            Ok(false)
        };
        // Checked again under the locks: records of the group may commit meanwhile.
        let mut need_all = appears_with_records()?;
        let _guards = loop {
            if need_all {
                break self.lock_all();
            }
            let guards = self.lock_stripes(&pairs);
            if !appears_with_records()? {
                break guards;
            }
            drop(guards);
            need_all = true;
        };
        let mut batch = WriteBatch::default();
        let mut merge = Merge::default();
        let mut loaded = Vec::new();
        let mut quarantined: BTreeSet<u64> = BTreeSet::new();
        let mut tomb_marks = self.marks.hwm();
        if let Some((seq, _)) = fresh.last() {
            tomb_marks.insert(origin.to_string(), *seq);
        }
        let staged: Result<(), StoreError> = (|| {
            for (key, idx) in by_doc {
                let first = &decoded[idx[0]].1;
                if self.is_collected(&key)? {
                    // Every region saw the delete; what still arrives for it was concurrent
                    // with it or older, and the delete wins.
                    report.applied += idx.len();
                    continue;
                }
                let seqs: BTreeSet<u64> = idx.iter().map(|i| decoded[*i].0).collect();
                let mut doc = self.load_any(&key)?;
                let before = Before::of(&key, &mut doc)?;
                let mut good: Vec<&[u8]> = Vec::new();
                for i in idx {
                    let (seq, entry) = &decoded[i];
                    if poisoned.contains(seq) {
                        let why = "the document could not take it (see the log)";
                        self.stage_quarantine(&mut batch, origin, *seq, &fresh, why);
                        report.quarantined += 1;
                        continue;
                    }
                    match doc.load_incremental(&entry.change) {
                        Ok(_) => {
                            report.applied += 1;
                            good.push(&entry.change);
                        }
                        Err(e) => {
                            tracing::warn!(
                                origin, seq, tenant = %entry.tenant, id = %entry.id, error = %e,
                                "a replicated change was rejected; quarantined, the rest goes on"
                            );
                            self.stage_quarantine(&mut batch, origin, *seq, &fresh, &e.to_string());
                            report.quarantined += 1;
                            quarantined.insert(*seq);
                            // A failed load may leave the document half-updated: start again
                            // from the stored one and the good changes of this batch.
                            doc = self.load_stored(&key)?;
                            for change in &good {
                                doc.load_incremental(change)?;
                            }
                        }
                    }
                }
                let resource = (first.tenant.as_str(), first.kind, first.id.as_str());
                match self.stage_merged(&mut batch, resource, &mut doc, before, &mut merge) {
                    Ok(()) if merge.offboarded.is_empty() => {}
                    Ok(()) => {
                        // The offboarding is held wherever the last of these entries is.
                        let last = seqs.iter().max().copied().unwrap_or(0);
                        let at = latest_change_time(&mut doc);
                        self.stage_offboardings(
                            &mut batch,
                            &mut merge.offboarded,
                            origin,
                            last,
                            at,
                        )?;
                    }
                    Err(StoreError::Doc(e)) => {
                        // Nothing of this batch is written: staged again without these.
                        self.cache
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .pop(&key);
                        return Err(StoreError::Poisoned {
                            seqs,
                            reason: e.to_string(),
                        });
                    }
                    Err(e) => return Err(e),
                }
                if doc::is_deleted(&doc) {
                    self.stage_tomb(&mut batch, &key, &first.tenant, &first.id, &tomb_marks)?;
                }
                loaded.push((key, doc));
            }
            for (seq, entry) in &decoded {
                let dot = crate::conflict::membership::Dot {
                    region: origin.to_string(),
                    seq: *seq,
                };
                report.applied += self.stage_remote_members(
                    &mut batch,
                    &mut merge,
                    &entry.tenant,
                    &entry.id,
                    &entry.members,
                    &dot,
                    entry.at,
                    &entry.context,
                    &tomb_marks,
                )?;
                for json in &entry.records {
                    if let Ok(record) = serde_json::from_slice::<Conflict>(json) {
                        if record.tenant == entry.tenant
                            && self.stage_record(&mut batch, &record)?
                        {
                            merge.indexed.push(record.clone());
                        }
                    }
                }
            }
            self.stage_found(&mut batch, &mut merge)?;
            // The events of the writes these entries carry (what their writer meant), but not
            // of entries this region could not take.
            for (seq, entry) in &decoded {
                if !poisoned.contains(seq) && !quarantined.contains(seq) {
                    self.stage_event(&mut batch, origin, *seq, entry)?;
                }
            }
            Ok(())
        })();
        if let Err(e) = staged {
            self.write_fillers(&merge.local);
            return Err(e);
        }
        let seqs: Vec<u64> = fresh.iter().map(|(seq, _)| *seq).collect();
        for (seq, bytes) in &fresh {
            batch.put_cf(self.cf(CF_LOG), keys::log(origin, *seq), bytes);
        }
        self.commit_indexing(
            batch,
            &merge.local,
            Some((origin, &seqs)),
            merge.delta,
            &mut merge.indexed,
        )?;
        if origin == self.region {
            // Our own entries recovered from a peer (a log restored from an old backup): new
            // writes must continue after them.
            if let Some(last) = seqs.iter().max() {
                self.next_seq.fetch_max(last + 1, Ordering::AcqRel);
            }
        }
        report.conflicts = merge.indexed.len();
        for (key, doc) in loaded {
            self.cache_put(key, doc);
        }
        drop(_guards);
        self.settle_user_names(&merge.users)?;
        Ok(report)
    }

    /// Index the membership conflicts this batch's merges decided and log them as local
    /// entries (one per group), so every region gets the record even if it never sees the
    /// concurrent values (a later write may supersede both before they reach it).
    fn stage_found(&self, batch: &mut WriteBatch, merge: &mut Merge) -> Result<(), StoreError> {
        let found = std::mem::take(&mut merge.found);
        let mut by_group: std::collections::BTreeMap<(String, String), Vec<Vec<u8>>> =
            Default::default();
        for record in found {
            // Already staged by this batch (an entry it applies logs the same decision).
            let staged = merge.indexed.iter().any(|r| r.id == record.id);
            if staged || !self.stage_record(batch, &record)? {
                continue;
            }
            merge.indexed.push(record.clone());
            let json =
                serde_json::to_vec(&record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            by_group
                .entry((record.tenant.clone(), record.resource_id.clone()))
                .or_default()
                .push(json);
        }
        if !self.may_log() {
            // Indexed here; logged by another region that observes the same decision (or here
            // by a later merge). See `stage_merged`.
            return Ok(());
        }
        for ((tenant, group), records) in by_group {
            let seq = self.alloc_checked()?;
            merge.local.push(seq);
            self.put_log(
                batch,
                seq,
                &LogEntry {
                    tenant,
                    kind: ResourceKind::Group,
                    id: group,
                    records,
                    ..LogEntry::default()
                },
            )?;
        }
        Ok(())
    }

    /// Keep a rejected replicated entry (its bytes and why) in `meta`, for an operator.
    fn stage_quarantine(
        &self,
        batch: &mut WriteBatch,
        origin: &str,
        seq: u64,
        fresh: &[&(u64, Vec<u8>)],
        why: &str,
    ) {
        let Some((_, bytes)) = fresh.iter().find(|(s, _)| *s == seq) else {
            return;
        };
        let mut key = QUARANTINE.to_vec();
        key.extend_from_slice(&keys::log(origin, seq));
        let mut value = why.as_bytes().to_vec();
        value.push(0);
        value.extend_from_slice(bytes);
        batch.put_cf(self.cf(CF_META), key, value);
        self.quarantined.fetch_add(1, Ordering::Relaxed);
    }

    /// Replicated changes quarantined since this store was created (kept in `meta`).
    pub fn quarantined(&self) -> Result<Vec<(String, u64, String)>, StoreError> {
        let mut out = Vec::new();
        for key in self.prefix_keys(CF_META, QUARANTINE) {
            let key = key?;
            let rest = &key[QUARANTINE.len()..];
            let Some(sep) = rest.iter().position(|&b| b == 0) else {
                continue;
            };
            let origin = String::from_utf8_lossy(&rest[..sep]).into_owned();
            let seq = <[u8; 8]>::try_from(&rest[sep + 1..]).map_or(0, u64::from_be_bytes);
            let why = self
                .db
                .get_cf(self.cf(CF_META), &key)?
                .map(|v| {
                    let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
                    String::from_utf8_lossy(&v[..end]).into_owned()
                })
                .unwrap_or_default();
            out.push((origin, seq, why));
        }
        Ok(out)
    }

    /// The Automerge bytes of the document a peer asks for (see [`Lookup`]), if this region
    /// holds it (tombstones included: a delete must reach the asker too).
    pub fn export(&self, lookup: &Lookup) -> Result<Option<Vec<u8>>, StoreError> {
        let (tenant, kind, id) = match lookup {
            Lookup::Id { tenant, kind, id } => (tenant, *kind, id.clone()),
            Lookup::UserName { tenant, user_name } => {
                match self
                    .lookup(tenant, ResourceKind::User, "userName", user_name)?
                    .into_iter()
                    .next()
                {
                    Some(id) => (tenant, ResourceKind::User, id),
                    None => return Ok(None),
                }
            }
        };
        let key = keys::resource(tenant, kind, &id);
        let _g = lock(&self.id_locks[stripe((tenant.as_str(), id.as_str()))]);
        Ok(self
            .db
            .get_cf(self.cf(CF_DOCS), &key)?
            .filter(|b| b.as_slice() != COLLECTED))
    }

    /// Merge a document a peer sent (for `tenant`) into the local one and re-materialise it.
    /// Its changes reach the log later through normal replication (merging them again then is
    /// a no-op). Returns the resource's type and id.
    pub fn import(&self, tenant: &str, bytes: &[u8]) -> Result<(ResourceKind, String), StoreError> {
        let incoming = AutoCommit::load(bytes)?;
        let kind = doc::kind_of(&incoming)?;
        let id = doc::id_of(&incoming)?;
        let key = keys::resource(tenant, kind, &id);
        // A group that becomes live with records already here lists them: every stripe.
        let appears_with_records = || -> Result<bool, StoreError> {
            Ok(kind == ResourceKind::Group
                && self.get(tenant, kind, &id)?.is_none()
                && self.group_has_records(tenant, &id)?)
        };
        let mut need_all = appears_with_records()?;
        let _g = loop {
            if need_all {
                break self.lock_all();
            }
            let guards = self.lock_stripes(&[(tenant, id.as_str())]);
            if !appears_with_records()? {
                break guards;
            }
            drop(guards);
            need_all = true;
        };
        if self.is_collected(&key)? {
            return Ok((kind, id));
        }
        let mut doc = self.load_any(&key)?;
        let before = Before::of(&key, &mut doc)?;
        doc.load_incremental(bytes)?;
        let mut batch = WriteBatch::default();
        let mut merge = Merge::default();
        if let Err(e) = self.stage_merged(
            &mut batch,
            (tenant, kind, &id),
            &mut doc,
            before,
            &mut merge,
        ) {
            self.write_fillers(&merge.local);
            return Err(e);
        }
        self.commit_indexing(batch, &merge.local, None, merge.delta, &mut merge.indexed)?;
        self.cache_put(key, doc);
        drop(_g);
        self.settle_user_names(&merge.users)?;
        Ok((kind, id))
    }

    /// Stage a document that received changes from elsewhere (replication or a peer lookup):
    /// the whole document (queued changes included), and the view and index changes from what
    /// is stored now to what the merged document says (none while it is a tombstone or has
    /// no header yet because its creation has not arrived).
    ///
    /// Conflicts the merge shows ([`conflict::detect`]) that the document does not record yet
    /// are written into it as a local change (logged, so they replicate), and every record new
    /// to this region is indexed in `conflicts`.
    pub(super) fn stage_merged(
        &self,
        batch: &mut WriteBatch,
        (tenant, kind, id): (&str, ResourceKind, &str),
        doc: &mut AutoCommit,
        before: Before,
        merge: &mut Merge,
    ) -> Result<(), StoreError> {
        let key = keys::resource(tenant, kind, id);
        let live = doc::kind_of(doc).is_ok();
        if live {
            let resource = conflict::Resource {
                tenant,
                kind: kind.name(),
                id,
            };
            let found = conflict::detect(doc, resource).map_err(DocError::from)?;
            // Recording writes a local entry: not while this region may not write (its own log
            // may be behind what the cluster holds of it, and the sequence number it would take
            // could already be someone's). Another region, or a later merge here, records it.
            if !found.is_empty() && self.may_log() {
                let heads = doc.get_heads();
                if doc::record_conflicts(doc, &found)? {
                    doc.commit_stamped(&self.stamp());
                    let change = doc.save_after(&heads);
                    merge.local.push(self.stage_log(
                        batch,
                        (tenant, kind, id),
                        &change,
                        None,
                        0,
                    )?);
                }
            }
            for record in conflict::recorded(doc).map_err(DocError::from)? {
                if !before.recorded.contains(&record.id) && self.stage_record(batch, &record)? {
                    merge.indexed.push(record.clone());
                }
            }
        }
        let old_view = match self.db.get_pinned_cf(self.cf(CF_VIEWS), &key)? {
            Some(b) => Some(
                serde_json::from_slice::<Value>(&b)
                    .map_err(|e| StoreError::Corrupt(format!("view: {e}")))?,
            ),
            None => None,
        };
        let new_view = if doc::is_deleted(doc) || !live {
            None
        } else {
            Some(doc::materialize(doc, kind)?)
        };
        // Only a user whose userName the merge set or changed can now collide with another.
        let user_name = |v: Option<&Value>| {
            v.and_then(|v| v["userName"].as_str())
                .map(ids::normalize_case_insensitive)
        };
        if kind == ResourceKind::User {
            if let Some(name) = new_view.as_ref().and_then(|v| v["userName"].as_str()) {
                if user_name(old_view.as_ref()) != user_name(new_view.as_ref()) {
                    merge.users.push((tenant.to_string(), name.to_string()));
                }
            }
        }
        let delta = self.stage_doc(batch, &key, before.term, doc, None);
        xor_into(&mut merge.delta, &delta);
        if kind == ResourceKind::Group
            && doc::is_deleted(doc)
            && !self.group_deleted(merge, tenant, id)?
        {
            self.stage_group_deleted(batch, merge, tenant, id)?;
        }
        self.stage_view(
            batch,
            merge,
            tenant,
            kind,
            id,
            old_view.as_ref(),
            new_view.as_ref(),
        )
    }

    /// After a merge: a userName that two live users hold (see [`conflict::collision_survivor`])
    /// keeps its survivor; every loser is renamed, deactivated and the decision recorded on it.
    /// Every region that sees the collision writes the same, so their copies merge into one.
    pub(super) fn settle_user_names(&self, touched: &[(String, String)]) -> Result<(), StoreError> {
        if !self.may_log() {
            // Settling writes local changes; every region that sees the collision writes the
            // same ones, so the others settle it (and a later merge here does).
            return Ok(());
        }
        for (tenant, name) in touched {
            let holders = self.lookup(tenant, ResourceKind::User, "userName", name)?;
            if holders.len() < 2 {
                continue;
            }
            let mut claims = Vec::new();
            for holder in &holders {
                if let Some(doc) = self.document(tenant, ResourceKind::User, holder)? {
                    if doc::is_deleted(&doc) {
                        continue;
                    }
                    let (by, at) = conflict::creation(&doc)
                        .map_err(DocError::from)?
                        .unwrap_or_default();
                    claims.push(conflict::Claim {
                        id: holder.clone(),
                        created_at: at,
                        created_by: by,
                    });
                }
            }
            let Some(survivor) = conflict::collision_survivor(&claims).cloned() else {
                continue;
            };
            for loser in claims.iter().filter(|c| c.id != survivor.id) {
                let record = conflict::collision_record(tenant, name, &survivor, loser);
                let renamed = conflict::collision_name(name, &loser.id);
                tracing::warn!(
                    tenant, user_name = %name, survivor = %survivor.id, loser = %loser.id,
                    "two users held one userName; the loser is renamed and deactivated"
                );
                let result = self.update_recording(
                    tenant,
                    ResourceKind::User,
                    &loser.id,
                    None,
                    &|old| {
                        let mut new = old.clone();
                        new.insert("userName".into(), Value::String(renamed.clone()));
                        new.insert("active".into(), Value::Bool(false));
                        Ok((new, vec!["active".into(), "userName".into()]))
                    },
                    std::slice::from_ref(&record),
                    // A deactivation a downstream app must hear of, though no IdP asked.
                    Some(crate::events::Op::Patch),
                );
                match result {
                    Ok(_) | Err(StoreError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
}
