//! History that stops growing: log truncation, and snapshots for the regions that need what
//! was truncated.
//!
//! - **Floors.** Per origin, the lowest sequence the log still holds (`floor\0<origin>` in
//!   `meta`; absent: 1). [`Store::truncate_log`] raises them and drops the entries below with
//!   one range delete, so truncating costs the same whatever the history's length.
//! - **Snapshots.** A region whose marks are below a peer's floor (a new, empty region; one
//!   that stayed down too long; one restored from an old backup) cannot catch up entry by
//!   entry. The peer streams its current state instead ([`Store::snapshot`]): from one
//!   consistent RocksDB snapshot, the marks it stands for, then every document (Automerge saved
//!   bytes, collected tombstones included), every membership record and every conflict record.
//!   The receiver merges them ([`Store::apply_snapshot`]), then raises its marks to the
//!   snapshot's and its floors past the entries it never received
//!   ([`Store::finish_snapshot`]); normal replication continues from there.
//! - **Why merging is enough.** Documents and records are CRDTs: merging a state that covers
//!   more history than ours loses nothing of ours. The one exception is a record the sender
//!   already *collected* (every region had seen its removal): a receiver that is behind on
//!   every origin (its marks are covered by the snapshot's) takes the sender's memberships as
//!   they are instead of joining, so a stale add of its own (a restored backup) cannot survive a
//!   removal that everyone else has already forgotten.

use std::collections::BTreeMap;

use super::*;
use crate::conflict::membership::Record;

/// Snapshot item kinds (the wire carries them opaquely).
pub const ITEM_DOC: u8 = 1;
pub const ITEM_MEMBERSHIP: u8 = 2;
pub const ITEM_CONFLICT: u8 = 3;

/// One snapshot item: (kind, storage key, value).
pub type SnapshotItem = (u8, Vec<u8>, Vec<u8>);

impl Store {
    /// Per origin, the lowest sequence the log still holds (absent: 1).
    pub fn log_floor(&self) -> BTreeMap<String, u64> {
        self.floors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Raise the log floors to `floors` (only upwards, never above an origin's mark + 1) and
    /// drop the entries below. Returns the origins whose floor moved.
    pub fn truncate_log(&self, floors: &BTreeMap<String, u64>) -> Result<usize, StoreError> {
        let marks = self.marks.hwm();
        let mut current = self.floors.lock().unwrap_or_else(|p| p.into_inner());
        let mut batch = WriteBatch::default();
        let mut moved = Vec::new();
        for (origin, floor) in floors {
            let mark = marks.get(origin).copied().unwrap_or(0);
            let floor = (*floor).min(mark + 1);
            if floor <= current.get(origin).copied().unwrap_or(1) {
                continue;
            }
            batch.delete_range_cf(
                self.cf(CF_LOG),
                keys::log(origin, 0),
                keys::log(origin, floor),
            );
            batch.put_cf(
                self.cf(CF_META),
                log::floor_key(origin),
                floor.to_be_bytes(),
            );
            moved.push((origin.clone(), floor));
        }
        if moved.is_empty() {
            return Ok(0);
        }
        self.db.write_opt(batch, &self.write_opts)?;
        for (origin, floor) in &moved {
            current.insert(origin.clone(), *floor);
        }
        Ok(moved.len())
    }

    /// Stream this region's state from one consistent RocksDB snapshot: first `begin` with the
    /// marks it stands for, then `chunk` with items of about `chunk_bytes` each. Either callback
    /// returning false stops the stream (the receiver went away).
    pub fn snapshot(
        &self,
        chunk_bytes: usize,
        mut begin: impl FnMut(BTreeMap<String, u64>) -> bool,
        mut chunk: impl FnMut(Vec<SnapshotItem>) -> bool,
    ) -> Result<(), StoreError> {
        let snap = self.db.snapshot();
        let mut marks = BTreeMap::new();
        for r in snap.iterator_cf(
            self.cf(CF_META),
            IteratorMode::From(b"mark\0", Direction::Forward),
        ) {
            let (k, v) = r?;
            if !k.starts_with(b"mark\0") {
                break;
            }
            if let Ok(b) = <[u8; 8]>::try_from(&v[..]) {
                marks.insert(
                    String::from_utf8_lossy(&k[5..]).into_owned(),
                    u64::from_be_bytes(b),
                );
            }
        }
        if !begin(marks) {
            return Ok(());
        }
        let mut items = Vec::new();
        let mut bytes = 0usize;
        let sources: [(u8, &str, &[u8]); 3] = [
            (ITEM_DOC, CF_DOCS, b""),
            (ITEM_MEMBERSHIP, CF_MEMBERS, b""),
            (ITEM_CONFLICT, CF_CONFLICTS, keys::CONFLICT_BY_TIME),
        ];
        for (kind, cf, prefix) in sources {
            for r in snap.iterator_cf(self.cf(cf), IteratorMode::From(prefix, Direction::Forward)) {
                let (k, v) = r?;
                if !k.starts_with(prefix) {
                    break;
                }
                bytes += k.len() + v.len() + 8;
                items.push((kind, k.to_vec(), v.to_vec()));
                if bytes >= chunk_bytes || items.len() >= crate::replication::wire::MAX_ENTRIES {
                    if !chunk(std::mem::take(&mut items)) {
                        return Ok(());
                    }
                    bytes = 0;
                }
            }
        }
        if !items.is_empty() {
            chunk(items);
        }
        Ok(())
    }

    /// A snapshot standing for `marks` begins: returns whether this region's marks are covered
    /// by them (then its memberships are replaced by the snapshot's, see the module docs).
    pub fn begin_snapshot(&self, marks: &BTreeMap<String, u64>) -> Result<bool, StoreError> {
        let own = self.marks.hwm();
        let covered = own
            .iter()
            .all(|(origin, s)| marks.get(origin).copied().unwrap_or(0) >= *s);
        if covered {
            let _all = self.lock_all();
            self.clear_memberships()?;
        }
        Ok(covered)
    }

    /// Merge one chunk of a snapshot standing for `marks` (documents first, then records: the
    /// sender streams them in that order, so groups and members are live when their records
    /// arrive). Items this version cannot read are skipped and counted. Returns how many were
    /// merged.
    pub fn apply_snapshot(
        &self,
        items: &[SnapshotItem],
        marks: &BTreeMap<String, u64>,
    ) -> Result<(usize, usize), StoreError> {
        let _all = self.lock_all();
        let mut batch = WriteBatch::default();
        let mut merge = Merge::default();
        let mut loaded = Vec::new();
        let mut dropped_groups = Vec::new();
        let (mut merged, mut skipped) = (0usize, 0usize);
        let staged: Result<(), StoreError> = (|| {
            for (_, key, value) in items.iter().filter(|(k, _, _)| *k == ITEM_DOC) {
                let Some((tenant, rkind, id)) = split_resource_key(key) else {
                    skipped += 1;
                    continue;
                };
                if value.as_slice() == COLLECTED {
                    // Collected everywhere: the id stays reserved here too, and delete wins.
                    if !self.is_collected(key)? {
                        let old_view = self.get(tenant, rkind, id)?.map(|s| s.view);
                        batch.put_cf(self.cf(CF_DOCS), key, COLLECTED);
                        self.stage_view(
                            &mut batch,
                            &mut merge,
                            tenant,
                            rkind,
                            id,
                            old_view.as_ref(),
                            None,
                        )?;
                        if rkind == ResourceKind::Group {
                            dropped_groups.push((tenant.to_string(), id.to_string()));
                        }
                        merged += 1;
                    }
                    continue;
                }
                if self.is_collected(key)? {
                    continue;
                }
                let mut doc = self.load_any(key)?;
                let before = Before::of(key, &mut doc)?;
                if doc.load_incremental(value).is_err() {
                    skipped += 1;
                    loaded.push((key.clone(), self.load_stored(key)?));
                    continue;
                }
                self.stage_merged(
                    &mut batch,
                    (tenant, rkind, id),
                    &mut doc,
                    before,
                    &mut merge,
                )?;
                if doc::is_deleted(&doc) {
                    self.stage_tomb(&mut batch, key, tenant, id, marks)?;
                }
                loaded.push((key.clone(), doc));
                merged += 1;
            }
            for (kind, key, value) in items {
                match *kind {
                    ITEM_DOC => {}
                    ITEM_MEMBERSHIP => {
                        let (Some((tenant, group, member)), Ok(incoming)) =
                            (members::split_key(key), Record::decode(value))
                        else {
                            skipped += 1;
                            continue;
                        };
                        let gkey = keys::resource(tenant, ResourceKind::Group, group);
                        if self.is_collected(&gkey)? {
                            continue;
                        }
                        let old = self.member_record(&merge, key)?;
                        let new = old.join(&incoming);
                        if self.stage_membership(
                            &mut batch, &mut merge, tenant, group, member, new, marks,
                        )? {
                            merged += 1;
                        }
                    }
                    ITEM_CONFLICT => match serde_json::from_slice::<Conflict>(value) {
                        Ok(record) => {
                            if self.stage_record(&mut batch, &record)? {
                                merge.indexed.push(record.rule);
                                merged += 1;
                            }
                        }
                        Err(_) => skipped += 1,
                    },
                    _ => skipped += 1,
                }
            }
            // Decisions the sender's records show were recorded by whoever observed them.
            merge.found.clear();
            Ok(())
        })();
        if let Err(e) = staged {
            self.write_fillers(&merge.local);
            return Err(e);
        }
        self.commit(batch, &merge.local, None, merge.delta)?;
        self.count_indexed(&merge.indexed);
        for (key, doc) in loaded {
            self.cache_put(key, doc);
        }
        for (tenant, group) in dropped_groups {
            self.drop_group_memberships(&tenant, &group)?;
        }
        drop(_all);
        self.settle_user_names(&merge.users)?;
        Ok((merged, skipped))
    }

    /// Every chunk of a snapshot standing for `marks` is applied: raise the marks to them, and
    /// the floors past the entries this log never received (so it never offers what it lacks).
    /// This region's next sequence number moves past what the cluster holds of it.
    pub fn finish_snapshot(&self, marks: &BTreeMap<String, u64>) -> Result<(), StoreError> {
        let current = self.marks.hwm();
        let mut floors = self.floors.lock().unwrap_or_else(|p| p.into_inner());
        let mut batch = WriteBatch::default();
        let meta = self.cf(CF_META);
        let mut raised = BTreeMap::new();
        for (origin, mark) in marks {
            if current.get(origin).copied().unwrap_or(0) >= *mark {
                continue;
            }
            batch.merge_cf(meta, log::mark_key(origin), mark.to_be_bytes());
            batch.put_cf(meta, log::floor_key(origin), (mark + 1).to_be_bytes());
            batch.delete_range_cf(
                self.cf(CF_LOG),
                keys::log(origin, 0),
                keys::log(origin, mark + 1),
            );
            raised.insert(origin.clone(), *mark);
        }
        self.db.write_opt(batch, &self.write_opts)?;
        for (origin, mark) in &raised {
            floors.insert(origin.clone(), mark + 1);
        }
        self.marks.raise(&raised);
        if let Some(own) = raised.get(&self.region) {
            self.next_seq.fetch_max(own + 1, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Drop every membership record and what is derived from them (a snapshot that covers this
    /// region replaces them). The caller holds every stripe.
    fn clear_memberships(&self) -> Result<(), StoreError> {
        let m = Merge::default();
        let mut delta = [0u8; 32];
        let counts = self.cf(CF_COUNTS);
        for r in self
            .db
            .iterator_cf(counts, IteratorMode::From(b"r", Direction::Forward))
        {
            let (k, v) = r?;
            if !k.starts_with(b"r") {
                break;
            }
            let Some((tenant, group)) = std::str::from_utf8(&k[1..])
                .ok()
                .and_then(|t| t.split_once('\0'))
            else {
                continue;
            };
            if !self.group_deleted(&m, tenant, group)? {
                if let Ok(d) = <[u8; 32]>::try_from(&v[..]) {
                    xor_into(&mut delta, &d);
                }
            }
        }
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf(CF_MEMBERS), b"".as_slice(), [0xffu8; 8].as_slice());
        for prefix in [b"m", b"r", b"x"] {
            let mut end = prefix.to_vec();
            end.push(0xff);
            batch.delete_range_cf(counts, prefix.as_slice(), end.as_slice());
        }
        batch.delete_range_cf(self.cf(CF_META), b"mgc\0".as_slice(), b"mgc\x01".as_slice());
        for r in self.db.iterator_cf(self.cf(CF_INDEX), IteratorMode::Start) {
            let (k, _) = r?;
            if matches!(
                k.split(|b| *b == 0).nth(1),
                Some(b"~member") | Some(b"~listed")
            ) {
                batch.delete_cf(self.cf(CF_INDEX), &k);
            }
        }
        if delta != [0; 32] {
            batch.merge_cf(self.cf(CF_META), DIGEST_KEY, delta);
        }
        self.db.write_opt(batch, &self.write_opts)?;
        let mut digest = self.digest.lock().unwrap_or_else(|p| p.into_inner());
        xor_into(&mut digest, &delta);
        Ok(())
    }
}

/// (tenant, kind, id) of a `docs` key.
fn split_resource_key(key: &[u8]) -> Option<(&str, ResourceKind, &str)> {
    let text = std::str::from_utf8(key).ok()?;
    let mut parts = text.split('\0');
    let (tenant, kind, id) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some()
        || !crate::ids::is_valid_name(tenant)
        || !crate::ids::is_plausible_id(id)
    {
        return None;
    }
    let kind = match kind {
        "User" => ResourceKind::User,
        "Group" => ResourceKind::Group,
        _ => return None,
    };
    Some((tenant, kind, id))
}
